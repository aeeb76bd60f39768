"""Data pipeline: ``Datum``, ``DatasetBase``, ``DATASET_REGISTRY``, ``build_dataset``, ``DataManager``.

See docs/ARCHITECTURE.md and docs/DATASETS.md. Dataset classes live in the top-level ``datasets``
package and register on import (``build_dataset`` imports it).
"""
from .base_dataset import DatasetBase, DatasetError
from .data_manager import DataManager
from .datum import Datum
from .registry import DATASET_REGISTRY, build_dataset

__all__ = ["Datum", "DatasetBase", "DatasetError", "DATASET_REGISTRY", "build_dataset", "DataManager"]
