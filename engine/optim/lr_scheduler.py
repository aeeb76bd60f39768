"""Per-epoch LR schedule as a closed-form function of the epoch index (replaces Dassl's scheduler classes).

``scheduled_lr(base_lr, epoch, optim_cfg)`` is the LR used during 0-based epoch ``epoch`` (= the number
of ``step()`` calls so far). It reproduces Dassl 0.6.3 + torch's chainable schedulers exactly:

* warmup (``WARMUP_EPOCH`` W > 0): epochs ``e < W`` use ``WARMUP_CONS_LR`` (constant) or
  ``WARMUP_MIN_LR`` at e = 0 and ``base * e / W`` after (linear); epoch W uses ``base``.
* after warmup the main schedule runs on counter ``s = e - W`` (``WARMUP_RECOUNT`` True) or ``s = e``
  starting from ``base`` at ``s0 = W`` (False; torch's chained update then rescales the curve):
  - cosine (``T = MAX_EPOCH``, eta_min 0): ``base * (1 + cos(pi s / T)) / (1 + cos(pi s0 / T))``;
  - single_step (step ``STEPSIZE[-1]``, or ``MAX_EPOCH`` if <= 0): ``base * GAMMA ** (s//step - s0//step)``;
  - multi_step (milestones ``STEPSIZE``): ``base * GAMMA ** #{m : s0 < m <= s}``.

With LR 0.0035, 5 epochs, 1 constant warm-up epoch: 1e-5, 3.5e-3, 3.1658e-3, 2.2908e-3, 1.2092e-3.
:class:`EpochLRScheduler` applies it to an optimizer; its state is two plain values, so resuming is exact.
"""
import math

__all__ = ["scheduled_lr", "EpochLRScheduler", "build_lr_scheduler", "AVAILABLE_LR_SCHEDULERS"]

AVAILABLE_LR_SCHEDULERS = ("single_step", "multi_step", "cosine")


def _main_schedule_factor(s0, s, optim_cfg):
    """LR multiplier of the main schedule at counter ``s``, relative to its value at counter ``s0``."""
    name = optim_cfg.LR_SCHEDULER
    gamma = optim_cfg.GAMMA
    if name == "cosine":
        t_max = float(optim_cfg.MAX_EPOCH)
        denom = 1.0 + math.cos(math.pi * s0 / t_max)
        if denom <= 1e-12:
            return 0.0
        return (1.0 + math.cos(math.pi * s / t_max)) / denom
    stepsize = optim_cfg.STEPSIZE
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        return gamma ** (s // stepsize - s0 // stepsize)
    if name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise ValueError(f"OPTIM.STEPSIZE must be a list for multi_step, got {stepsize!r}")
        count = sum(1 for m in stepsize if s0 < m <= s)
        count += sum(1 for m in stepsize if m == 0)  # torch applies a milestone 0 at construction
        return gamma**count
    raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {', '.join(AVAILABLE_LR_SCHEDULERS)}; got {name!r}")


def scheduled_lr(base_lr, epoch, optim_cfg):
    """LR during 0-based epoch ``epoch`` for a param group whose initial LR is ``base_lr``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup > 0:
        if epoch < warmup:
            if optim_cfg.WARMUP_TYPE == "constant":
                return optim_cfg.WARMUP_CONS_LR
            if optim_cfg.WARMUP_TYPE == "linear":
                return optim_cfg.WARMUP_MIN_LR if epoch == 0 else base_lr * epoch / warmup
            raise ValueError(f"OPTIM.WARMUP_TYPE must be constant or linear; got {optim_cfg.WARMUP_TYPE!r}")
        if optim_cfg.WARMUP_RECOUNT:
            s0, s = 0, epoch - warmup
        else:
            s0, s = warmup, epoch
        return base_lr * _main_schedule_factor(s0, s, optim_cfg)
    return base_lr * _main_schedule_factor(0, epoch, optim_cfg)


class EpochLRScheduler:
    """Sets every param group's LR to ``scheduled_lr(initial_lr, last_epoch)``; ``step()`` once per epoch.

    ``state_dict()`` holds only ``last_epoch`` (int) and ``base_lrs`` (floats).
    """

    def __init__(self, optimizer, optim_cfg, last_epoch=0):
        self.optimizer = optimizer
        self.optim_cfg = optim_cfg
        _main_schedule_factor(0, 0, optim_cfg)  # validates the scheduler name early
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._last_lr = []
        self._apply()

    def lr_at(self, epoch):
        """LRs of all param groups during 0-based epoch ``epoch``."""
        return [scheduled_lr(base, epoch, self.optim_cfg) for base in self.base_lrs]

    def _apply(self):
        lrs = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def step(self):
        """Advance one epoch."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": int(self.last_epoch), "base_lrs": [float(b) for b in self.base_lrs]}

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict) or "last_epoch" not in state_dict:
            raise ValueError(
                "scheduler state must be a dict with 'last_epoch' (a legacy Dassl scheduler state cannot be resumed)"
            )
        self.last_epoch = int(state_dict["last_epoch"])
        base_lrs = state_dict.get("base_lrs")
        if base_lrs is not None:
            if len(base_lrs) != len(self.optimizer.param_groups):
                raise ValueError(
                    f"scheduler state has {len(base_lrs)} param groups, the optimizer has "
                    f"{len(self.optimizer.param_groups)}"
                )
            self.base_lrs = [float(b) for b in base_lrs]
        self._apply()


def build_lr_scheduler(optimizer, optim_cfg):
    """Dassl signature: the per-epoch scheduler for ``optimizer`` described by ``optim_cfg``."""
    return EpochLRScheduler(optimizer, optim_cfg)
