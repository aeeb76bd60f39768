"""``DATASET_REGISTRY`` and ``build_dataset(cfg)`` (Dassl's registry contract).

Dataset classes register under their Python class name (``DATASET.NAME``). ``build_dataset`` first imports
the dataset packages (``DATASET_PACKAGES``: the top-level ``datasets`` and the ``demo``) by name, as plugins,
so every dataset module has registered itself; the engine has no static import of either.
"""
import importlib

from engine.registry import Registry
from engine.utils.logger import get_logger

DATASET_REGISTRY = Registry("DATASET")

#: packages whose import registers dataset classes (each imports its modules itself)
DATASET_PACKAGES = ("datasets", "demo")


def import_dataset_packages():
    """Import every package of ``DATASET_PACKAGES`` so that all dataset classes are registered."""
    for package in DATASET_PACKAGES:
        importlib.import_module(package)


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
