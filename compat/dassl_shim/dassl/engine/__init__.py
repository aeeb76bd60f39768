"""``dassl.engine``: the engine's trainer registry, Dassl's trainer classes, ``build_trainer``."""
from engine.trainer import TRAINER_REGISTRY
from engine.utils.logger import get_logger

from .. import _harness, missing_name
from .trainer import SimpleTrainer, TrainerBase, TrainerX

__all__ = ["TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX"]


def build_trainer(cfg):
    """``TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)``; under the runner its hooks see the config
    (run record, weights redirection) and the built trainer."""
    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    _harness.call("build_trainer", cfg, cls)
    if cfg.VERBOSE:
        get_logger().info(f"Loading trainer: {cfg.TRAINER.NAME}")
    trainer = cls(cfg)
    _harness.call("trainer_built", trainer)
    return trainer


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_name(f"dassl.engine.{name}")
