"""Resolve ``DATASET.ROOT`` and dataset folders with one-line errors naming the path."""
import os

from .base_dataset import DatasetError


def resolve_root(cfg):
    """``abspath(expanduser(DATASET.ROOT))``; error when empty or missing."""
    root = cfg.DATASET.ROOT
    if not root:
        raise DatasetError("DATASET.ROOT is empty: pass --root <folder that holds the dataset folders>")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DatasetError(f"dataset root not found: {root} (DATASET.ROOT / --root)")
    return root


def require_dir(path, what, hint=""):
    """Return ``path`` if it is a folder, else raise ``DatasetError`` naming it."""
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def require_file(path, what, hint=""):
    """Return ``path`` if it is a file, else raise ``DatasetError`` naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path
