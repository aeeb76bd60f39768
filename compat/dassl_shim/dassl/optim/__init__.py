"""``dassl.optim``: the engine's optimiser builder and closed-form epoch LR schedule (Dassl signatures).

``build_optimizer(model, optim_cfg, param_groups=None)`` also takes the 0.5.0 fork's two-argument call,
and gives the Adam family (adam, amsgrad, adamw, radam) the ``eps`` of ``OPTIM.ADAM_EPS`` (this
package's key; default 1e-8, Dassl's and torch's).
"""
from engine.optim import build_lr_scheduler
from engine.optim import build_optimizer as _engine_build_optimizer
from engine.utils.logger import get_logger

__all__ = ["build_optimizer", "build_lr_scheduler"]

#: the optimisers that take ``eps`` from ``OPTIM.ADAM_EPS``
ADAM_FAMILY = ("adam", "amsgrad", "adamw", "radam")
#: Dassl's (torch's) Adam eps
DASSL_ADAM_EPS = 1e-8


def build_optimizer(model, optim_cfg, param_groups=None):
    """Dassl's ``build_optimizer``: the engine's, with ``eps = OPTIM.ADAM_EPS`` for the Adam family."""
    optimizer = _engine_build_optimizer(model, optim_cfg, param_groups)
    eps = optim_cfg.get("ADAM_EPS", None)
    if eps is not None and optim_cfg.NAME in ADAM_FAMILY:
        optimizer.defaults["eps"] = float(eps)
        for group in optimizer.param_groups:
            group["eps"] = float(eps)
        if float(eps) != DASSL_ADAM_EPS:
            get_logger().info(f"OPTIM.ADAM_EPS {float(eps):g}: {optim_cfg.NAME} eps instead of Dassl's "
                              f"{DASSL_ADAM_EPS:g}")
    return optimizer
