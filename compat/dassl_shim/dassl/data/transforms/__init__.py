"""``dassl.data.transforms``: the engine's ``build_transform(cfg, is_train=True, choices=None)``."""
from engine.data.transforms import build_transform

__all__ = ["build_transform"]
