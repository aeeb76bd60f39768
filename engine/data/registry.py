"""``DATASET_REGISTRY`` and ``build_dataset(cfg)`` (Dassl's registry contract).

Dataset classes register under their Python class name (``DATASET.NAME``). ``build_dataset`` imports the
top-level ``datasets`` package first so every dataset module has registered itself.
"""
import importlib

from engine.registry import Registry
from engine.utils.logger import get_logger

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    """Instantiate ``DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)``; logs ``Loading dataset: NAME``."""
    importlib.import_module("datasets")
    name = cfg.DATASET.NAME
    if not name:
        raise ValueError("DATASET.NAME is empty; pass --dataset-config-file configs/datasets/<name>.yaml")
    cls = DATASET_REGISTRY.get(name)
    if cfg.VERBOSE:
        get_logger().info(f"Loading dataset: {cls.__name__}")
    return cls(cfg)
