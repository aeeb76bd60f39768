"""Optimizers and the closed-form per-epoch LR schedule (Dassl ``dassl.optim`` names)."""
from engine.optim.lr_scheduler import AVAILABLE_LR_SCHEDULERS, EpochLRScheduler, build_lr_scheduler, scheduled_lr
from engine.optim.optimizer import AVAILABLE_OPTIMIZERS, build_optimizer

__all__ = [
    "AVAILABLE_LR_SCHEDULERS",
    "AVAILABLE_OPTIMIZERS",
    "EpochLRScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "scheduled_lr",
]
