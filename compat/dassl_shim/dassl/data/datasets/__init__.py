"""``dassl.data.datasets``: the engine's dataset registry, ``Datum`` at Dassl's module path, ``DatasetBase``."""
from engine.data.registry import DATASET_REGISTRY, build_dataset

from ... import missing_name
from .base_dataset import DatasetBase, Datum

__all__ = ["DATASET_REGISTRY", "build_dataset", "Datum", "DatasetBase"]


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_name(f"dassl.data.datasets.{name}")
