"""Seeding (0 included) and precision resolution."""
import random

import numpy as np
import pytest
import torch

from engine.precision import Precision, autocast_context, make_grad_scaler, resolve_precision
from engine.utils import set_random_seed


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_set_random_seed_seeds_python_numpy_torch(seed):
    set_random_seed(seed)
    got = draws()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    assert got == draws()


def test_seed_zero_differs_from_unseeded_and_other_seeds():
    set_random_seed(0)
    zero = draws()
    set_random_seed(1)
    assert draws() != zero
    set_random_seed(0)
    assert draws() == zero
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError):
            set_random_seed(bad)


def test_precision_table_is_the_same_on_every_device():
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    expected = {"fp32": Precision("fp32", f32, None, False), "fp16": Precision("fp16", f16, None, False),
                "bf16": Precision("bf16", bf16, None, False), "amp": Precision("amp", f32, f16, True)}
    for device in ("cpu", "cuda", torch.device("cpu"), torch.device("cuda"), "mps"):
        for prec, want in expected.items():
            assert resolve_precision(prec, device) == want, (prec, device)
    with pytest.raises(ValueError, match="fp32, fp16, bf16, amp"):
        resolve_precision("fp8", "cpu")


def test_fp16_on_cpu_runs_fp16_and_logs_one_line(capsys):
    for prec in ("fp16", "amp"):
        resolve_precision(prec, "cpu")
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if "slow on CPUs without fp16 units" in line]
        assert len(lines) == 1 and f"PREC {prec} on cpu: fp16 arithmetic as on CUDA" in lines[0], out
        assert "WARNING" not in out and "fall" not in out
    for prec, device in (("fp32", "cpu"), ("bf16", "cpu"), ("fp16", "cuda"), ("amp", "cuda")):
        resolve_precision(prec, device)
        assert "slow" not in capsys.readouterr().out


def test_autocast_and_scaler_on_cpu():
    amp = resolve_precision("amp", "cpu")
    a = torch.randn(4, 4)
    with autocast_context(amp, "cpu"):
        assert (a @ a).dtype == torch.float16
    with autocast_context(resolve_precision("fp32", "cpu"), "cpu"):
        assert (a @ a).dtype == torch.float32
    for prec in ("fp32", "fp16", "bf16"):
        assert make_grad_scaler(resolve_precision(prec, "cpu"), "cpu") is None
    scaler = make_grad_scaler(amp, "cpu")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    # the scaler scales the loss, unscales before the step and skips a step with an inf gradient
    w = torch.nn.Parameter(torch.ones(3))
    optim = torch.optim.SGD([w], lr=0.5)
    scaler.scale((w * 2).sum()).backward()
    assert torch.equal(w.grad, torch.full((3,), 2 * scaler.get_scale()))
    scaler.step(optim)
    scaler.update()
    assert torch.equal(w.detach(), torch.zeros(3))  # 1 - 0.5 * 2: the unscaled gradient
    w.grad = torch.tensor([float("inf"), 0.0, 0.0])
    before = scaler.get_scale()
    scaler.step(optim)
    scaler.update()
    assert torch.equal(w.detach(), torch.zeros(3)) and scaler.get_scale() == before / 2


def test_trainer_reads_prec_from_its_cfg_node(tmp_path):
    from test_engine_toy import ToyLinear, build_toy, toy_cfg

    class ToyCoOp(ToyLinear):
        CFG_NODE = "COOP"

    assert ToyLinear.prec_name(toy_cfg(tmp_path)) == "fp32"  # no node -> fp32
    cfg = toy_cfg(tmp_path, "TRAINER.COOP.PREC", "amp", "OPTIM.MAX_EPOCH", "1")
    assert ToyCoOp.prec_name(cfg) == "amp"
    build_toy(cfg)  # seeds + logger
    trainer = ToyCoOp(cfg)
    assert trainer.precision == Precision("amp", torch.float32, torch.float16, True)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    with trainer.autocast():
        assert trainer.model(torch.randn(2, 12)).dtype == torch.float16
    trainer.train()  # trains under fp16 autocast with a GradScaler on CPU, as on CUDA
    cfg16 = toy_cfg(tmp_path / "f16", "TRAINER.COOP.PREC", "fp16")
    assert ToyCoOp(cfg16).precision == Precision("fp16", torch.float16, None, False)


def test_precision_record_is_plain_json():
    from engine.precision import precision_record

    assert precision_record(resolve_precision("amp", "cpu"), torch.device("cpu")) == {
        "prec": "amp", "param_dtype": "float32", "autocast_dtype": "float16", "grad_scaler": True, "device": "cpu"}
    assert precision_record(resolve_precision("fp16", "cuda"), "cuda:1") == {
        "prec": "fp16", "param_dtype": "float16", "autocast_dtype": None, "grad_scaler": False, "device": "cuda"}
