"""What a run's result depends on beyond its config values: the data it read and the weights it loaded.

:func:`identity_settings` returns extra entries for a run's settings (``engine.runs.record``), so that
a run folder is reused (skipped, resumed, reported) only for the same data and the same weights:

- ``identity.dataset.root`` / ``identity.dataset.fingerprint`` / ``identity.dataset.files`` for the
  datasets whose data is wherever the user points (``DATASET.NAME`` ``ImageFolder``: the real path of
  ``DATASET.ROOT`` and the SHA-256 of its sorted ``relative path<TAB>size`` lines of image files and
  ``split.json``, ``split_fewshot/`` excluded; ``CSV``: the real path of ``DATASET.CSV_FILE`` and
  the SHA-256 of its bytes). The built-in benchmark datasets are identified by ``DATASET.NAME`` and
  their published split files, already part of the settings.
- ``identity.weights`` for a backbone loaded from a file (``MODEL.BACKBONE.PATH``): ``sha256:<16
  hex>`` of the file's bytes. Official CLIP names are verified against the SHA-256 in their URL when
  loaded, so ``MODEL.BACKBONE.NAME`` identifies them; random weights are identified by
  ``MODEL.BACKBONE.RANDOM_INIT`` and ``SEED``.

A missing folder or file gives ``"<missing>"`` values (the run itself then fails with its own error).
Torch-free; digests are cached per process by (real path, size, modification time).
"""
from __future__ import annotations

import functools
import hashlib
import os

#: files of an ImageFolder dataset that make up its data (engine.data.splits.IMAGE_EXTENSIONS)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_FILE = "split.json"
EXCLUDED_DIRS = ("split_fewshot",)  # caches the runs write into the dataset folder
MISSING = "<missing>"
PREFIX = "identity."


def _stat_key(path: str):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str) -> str:
    """``sha256:<first 16 hex>`` of the bytes of ``path`` (``<missing>`` when it is not a file)."""
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.isfile(real):
        return MISSING
    return "sha256:" + _file_sha256(real, *_stat_key(real))[:16]


def folder_fingerprint(root: str) -> tuple:
    """``(sha256:<16 hex>, number of files)`` of the image files (and ``split.json``) under ``root``:
    sorted ``relative path<TAB>size`` lines, ``split_fewshot/`` skipped."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if name.lower().endswith(IMAGE_EXTENSIONS) or rel == SPLIT_FILE:
                try:
                    size = os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    continue
                lines.append(f"{rel.replace(os.sep, '/')}\t{size}")
    lines.sort()
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]
    return "sha256:" + digest, len(lines)


def _dataset_identity(cfg) -> dict:
    name = cfg.DATASET.NAME
    root = os.path.expanduser(cfg.DATASET.ROOT or "")
    if name == "ImageFolder":
        real = os.path.realpath(root) if root else ""
        if not real or not os.path.isdir(real):
            return {"root": real or MISSING, "fingerprint": MISSING, "files": 0}
        fingerprint, count = folder_fingerprint(real)
        return {"root": real, "fingerprint": fingerprint, "files": count}
    if name == "CSV":
        path = os.path.expanduser(cfg.DATASET.CSV_FILE or "")
        if path and not os.path.isabs(path) and root:
            path = os.path.join(root, path)
        real = os.path.realpath(path) if path else ""
        return {"root": real or MISSING, "fingerprint": file_digest(real) if real else MISSING}
    return {}


def identity_settings(cfg) -> dict:
    """``{"identity.dataset.root": ..., "identity.dataset.fingerprint": ..., "identity.weights": ...}``
    (only the entries that apply to ``cfg``; see the module docstring)."""
    out = {f"{PREFIX}dataset.{k}": v for k, v in _dataset_identity(cfg).items()}
    bb = cfg.MODEL.BACKBONE
    if bb.PATH and not bb.RANDOM_INIT:
        out[f"{PREFIX}weights"] = file_digest(bb.PATH)
    return out
