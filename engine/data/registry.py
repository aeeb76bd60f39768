"""``DATASET_REGISTRY`` and ``build_dataset(cfg)`` (Dassl's registry contract).

Dataset classes register under their Python class name (``DATASET.NAME``). ``build_dataset`` first imports
the dataset packages (``DATASET_PACKAGES``: the top-level ``datasets`` and the ``demo``) by name, as plugins,
so every dataset module has registered itself; the engine has no static import of either.
"""
import importlib
import importlib.util
import os
import sys

from engine.registry import Registry
from engine.utils.logger import get_logger

DATASET_REGISTRY = Registry("DATASET")

#: packages whose import registers dataset classes (each imports its modules itself)
DATASET_PACKAGES = ("datasets", "demo")
#: the name ``pip install -e .`` gives the repo's ``datasets`` folder (``datasets`` stays Hugging Face's)
INSTALLED_DATASETS = "harness_datasets"
_REPO_DATASETS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "datasets")


def datasets_package_name() -> str:
    """``datasets`` when that name is the repo's folder in this process (the repo on ``sys.path``, as
    for ``train.py`` and the scripts), else ``harness_datasets`` (the installed name). Decided without
    importing a foreign ``datasets`` package."""
    if INSTALLED_DATASETS in sys.modules:
        return INSTALLED_DATASETS
    module = sys.modules.get("datasets")
    origin = getattr(module, "__file__", None) if module is not None else None
    if module is None:
        try:
            spec = importlib.util.find_spec("datasets")
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    if origin and os.path.dirname(os.path.realpath(origin)) == os.path.realpath(_REPO_DATASETS):
        return "datasets"
    return INSTALLED_DATASETS


def import_dataset_packages():
    """Import every package of ``DATASET_PACKAGES`` so that all dataset classes are registered (the
    repo's ``datasets`` under :func:`datasets_package_name`)."""
    for package in DATASET_PACKAGES:
        importlib.import_module(datasets_package_name() if package == "datasets" else package)


def build_dataset(cfg):
    """Instantiate ``DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)``; logs ``Loading dataset: NAME``."""
    import_dataset_packages()
    name = cfg.DATASET.NAME
    if not name:
        raise ValueError("DATASET.NAME is empty; pass --dataset-config-file configs/datasets/<name>.yaml")
    cls = DATASET_REGISTRY.get(name)
    if cfg.VERBOSE:
        get_logger().info(f"Loading dataset: {cls.__name__}")
    return cls(cfg)
