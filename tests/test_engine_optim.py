"""Optimizers with Dassl defaults and the closed-form per-epoch LR schedule (golden values, torch parity)."""
import math
import warnings

import pytest
import torch
import torch.nn as nn

from engine.config import get_cfg_default
from engine.optim import EpochLRScheduler, build_lr_scheduler, build_optimizer, scheduled_lr


def optim_cfg(**kw):
    cfg = get_cfg_default().OPTIM
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def per_epoch_lrs(cfg, n_epochs):
    """Drive a real optimizer like the trainer: read the LR during each epoch, step after its last batch."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.LR)
    sched = build_lr_scheduler(opt, cfg)
    lrs = []
    for _ in range(n_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


def test_golden_maple_comma_schedule():
    cfg = optim_cfg(NAME="sgd", LR=0.0035, MAX_EPOCH=5, LR_SCHEDULER="cosine", WARMUP_EPOCH=1,
                    WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)
    lrs = per_epoch_lrs(cfg, 5)
    assert [f"{lr:.4e}" for lr in lrs] == ["1.0000e-05", "3.5000e-03", "3.1658e-03", "2.2908e-03", "1.2092e-03"]
    # closed form of compat note 1.6: base * (1 + cos(pi * (e - 2) / MAX)) / 2 for 1-based e >= 2
    for e in range(2, 6):
        assert lrs[e - 1] == pytest.approx(0.0035 * (1 + math.cos(math.pi * (e - 2) / 5)) / 2, rel=1e-12)
    # linear warm-up gives the same values when WARMUP_EPOCH = 1
    cfg.WARMUP_TYPE = "linear"
    assert per_epoch_lrs(cfg, 5) == pytest.approx(lrs, rel=1e-12)


def test_golden_cocoop_schedule():
    cfg = optim_cfg(NAME="sgd", LR=0.002, MAX_EPOCH=10, LR_SCHEDULER="cosine", WARMUP_EPOCH=1,
                    WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)
    got = [f"{lr:.4e}" for lr in per_epoch_lrs(cfg, 10)]
    assert got[:5] == ["1.0000e-05", "2.0000e-03", "1.9511e-03", "1.8090e-03", "1.5878e-03"]
    assert got[9] == "1.9098e-04"


class DasslLikeWarmup:
    """Test reference: Dassl 0.6.3's warm-up wrapper logic driving torch's own (chainable) schedulers."""

    def __init__(self, opt, successor, warmup_epoch, warm_lr):
        self.opt, self.successor, self.warmup_epoch, self.warm_lr = opt, successor, warmup_epoch, warm_lr
        self.last_epoch = 0
        self._set([warm_lr(0, b) for b in successor.base_lrs])

    def _set(self, lrs):
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr

    def step(self):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            return
        self.last_epoch += 1
        if self.last_epoch >= self.warmup_epoch:
            self._set(self.successor.get_last_lr())
        else:
            self._set([self.warm_lr(self.last_epoch, b) for b in self.successor.base_lrs])


def reference_lrs(cfg, n_epochs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.LR)
    if cfg.LR_SCHEDULER == "cosine":
        succ = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(cfg.MAX_EPOCH))
    elif cfg.LR_SCHEDULER == "single_step":
        step = cfg.STEPSIZE[-1] if isinstance(cfg.STEPSIZE, (list, tuple)) else cfg.STEPSIZE
        succ = torch.optim.lr_scheduler.StepLR(opt, step_size=step if step > 0 else cfg.MAX_EPOCH, gamma=cfg.GAMMA)
    else:
        succ = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.STEPSIZE), gamma=cfg.GAMMA)
    sched = succ
    if cfg.WARMUP_EPOCH > 0:
        if not cfg.WARMUP_RECOUNT:
            succ.last_epoch = cfg.WARMUP_EPOCH
        if cfg.WARMUP_TYPE == "constant":
            def warm(e, base):
                return cfg.WARMUP_CONS_LR
        else:
            def warm(e, base):
                return cfg.WARMUP_MIN_LR if e == 0 else base * e / cfg.WARMUP_EPOCH
        sched = DasslLikeWarmup(opt, succ, cfg.WARMUP_EPOCH, warm)
    lrs = []
    for _ in range(n_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


@pytest.mark.parametrize("scheduler,stepsize", [("cosine", (-1,)), ("single_step", (3,)), ("single_step", (-1,)),
                                                ("multi_step", (2, 5, 6))])
@pytest.mark.parametrize("warmup", [-1, 1, 2])
@pytest.mark.parametrize("warmup_type", ["constant", "linear"])
@pytest.mark.parametrize("recount", [True, False])
def test_closed_form_matches_torch_chainable_schedulers(scheduler, stepsize, warmup, warmup_type, recount):
    cfg = optim_cfg(LR=0.01, MAX_EPOCH=8, LR_SCHEDULER=scheduler, STEPSIZE=stepsize, GAMMA=0.5,
                    WARMUP_EPOCH=warmup, WARMUP_TYPE=warmup_type, WARMUP_RECOUNT=recount,
                    WARMUP_CONS_LR=2e-5, WARMUP_MIN_LR=3e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference_lrs(cfg, 9)
    assert per_epoch_lrs(cfg, 9) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_recount_false_differs_from_recount_true():
    kw = dict(LR=0.0035, MAX_EPOCH=5, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant")
    on = per_epoch_lrs(optim_cfg(WARMUP_RECOUNT=True, **kw), 5)
    off = per_epoch_lrs(optim_cfg(WARMUP_RECOUNT=False, **kw), 5)
    assert on[:2] == off[:2]
    # recount off: the cosine counter continues from the warm-up epoch (torch rescales the chained curve)
    expected = [0.0035 * (1 + math.cos(math.pi * e / 5)) / (1 + math.cos(math.pi / 5)) for e in (2, 3, 4)]
    assert off[2:] == pytest.approx(expected, rel=1e-12)
    assert off[2] != pytest.approx(on[2])


def test_scheduler_state_is_plain_and_resume_exact():
    cfg = optim_cfg(LR=0.0035, MAX_EPOCH=5, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant")
    opt_a = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.LR)
    a = EpochLRScheduler(opt_a, cfg)
    for _ in range(2):
        a.step()
    state = a.state_dict()
    assert state == {"last_epoch": 2, "base_lrs": [0.0035]}
    assert all(type(v) in (int, list) for v in state.values())
    opt_b = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.LR)
    b = EpochLRScheduler(opt_b, cfg)
    b.load_state_dict(state)
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"] == b.get_last_lr()[0]
    for _ in range(2):
        a.step()
        b.step()
        assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="last_epoch"):
        b.load_state_dict({"successor": object()})


def test_scheduled_lr_validation():
    with pytest.raises(ValueError, match="LR_SCHEDULER"):
        scheduled_lr(0.1, 0, optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(ValueError, match="list"):
        scheduled_lr(0.1, 1, optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=3))


def test_build_optimizer_dassl_defaults():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    sgd = build_optimizer(model, optim_cfg(NAME="sgd", LR=0.002))
    g = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (g["lr"], g["momentum"], g["weight_decay"], g["dampening"], g["nesterov"]) == (0.002, 0.9, 5e-4, 0, False)
    adam = build_optimizer(model, optim_cfg())
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.0003
    assert adam.param_groups[0]["betas"] == (0.9, 0.999) and not adam.param_groups[0]["amsgrad"]
    assert build_optimizer(model, optim_cfg(NAME="amsgrad")).param_groups[0]["amsgrad"]
    assert isinstance(build_optimizer(model, optim_cfg(NAME="adamw")), torch.optim.AdamW)
    rms = build_optimizer(model, optim_cfg(NAME="rmsprop"))
    assert isinstance(rms, torch.optim.RMSprop) and rms.param_groups[0]["alpha"] == 0.99
    params = [p for p in model.parameters()]
    assert len(build_optimizer(params, optim_cfg(NAME="sgd")).param_groups[0]["params"]) == 4
    with pytest.raises(ValueError, match="OPTIM.NAME"):
        build_optimizer(model, optim_cfg(NAME="lion"))


def test_staged_lr_groups():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 3))
    opt = build_optimizer(model, optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",)))
    base, new = opt.param_groups
    assert base["lr"] == pytest.approx(0.01) and new["lr"] == 0.1
    assert {id(p) for p in new["params"]} == {id(p) for p in model.head.parameters()}
    with pytest.raises(ValueError, match="unknown children"):
        build_optimizer(model, optim_cfg(NAME="sgd", STAGED_LR=True, NEW_LAYERS=("neck",)))
    sched = build_lr_scheduler(opt, optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(1,), GAMMA=0.5))
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.05])
