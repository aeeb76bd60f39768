"""``dassl.engine.build``: ``TRAINER_REGISTRY`` and ``build_trainer``."""
from . import TRAINER_REGISTRY, build_trainer

__all__ = ["TRAINER_REGISTRY", "build_trainer"]
