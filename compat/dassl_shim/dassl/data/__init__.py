"""``dassl.data``: ``DataManager`` (the engine's) and ``DatasetWrapper`` with Dassl's argument order."""
from engine.data import DataManager
from engine.data.loader import DatasetWrapper as _EngineDatasetWrapper

from .. import missing_name

__all__ = ["DataManager", "DatasetWrapper"]


class DatasetWrapper(_EngineDatasetWrapper):
    """Dassl's ``DatasetWrapper(cfg, data_source, transform=None, is_train=False)``: items are Dassl's
    batch dicts (``img``, ``label``, ``domain``, ``impath``, ``index``)."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        super().__init__(cfg, data_source, transform=transform, skip_bad=False, is_train=is_train)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_name(f"dassl.data.{name}")
