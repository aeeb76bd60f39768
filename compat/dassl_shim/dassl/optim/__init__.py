"""``dassl.optim``: the engine's optimiser builder and closed-form epoch LR schedule (Dassl signatures).

``build_optimizer(model, optim_cfg, param_groups=None)`` also takes the 0.5.0 fork's two-argument call.
"""
from engine.optim import build_lr_scheduler, build_optimizer

__all__ = ["build_optimizer", "build_lr_scheduler"]
