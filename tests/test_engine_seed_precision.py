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


def test_precision_table():
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    assert resolve_precision("fp32", "cpu") == Precision("fp32", f32, None, False)
    assert resolve_precision("fp32", "cuda") == Precision("fp32", f32, None, False)
    assert resolve_precision("bf16", "cpu") == Precision("bf16", bf16, None, False)
    assert resolve_precision("fp16", "cuda") == Precision("fp16", f16, None, False)
    assert resolve_precision("amp", torch.device("cuda")) == Precision("amp", f32, f16, True)
    assert resolve_precision("amp", torch.device("cpu")) == Precision("amp", f32, bf16, False)
    with pytest.raises(ValueError, match="fp32, fp16, bf16, amp"):
        resolve_precision("fp8", "cpu")


def test_fp16_on_cpu_falls_back_with_warning(capsys):
    assert resolve_precision("fp16", "cpu") == Precision("fp32", torch.float32, None, False)
    assert "WARNING: PREC fp16 is not supported on cpu; falling back to fp32" in capsys.readouterr().out


def test_autocast_and_scaler_on_cpu():
    amp = resolve_precision("amp", "cpu")
    a = torch.randn(4, 4)
    with autocast_context(amp, "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context(resolve_precision("fp32", "cpu"), "cpu"):
        assert (a @ a).dtype == torch.float32
    assert make_grad_scaler(amp, "cpu") is None
    scaler = make_grad_scaler(Precision("amp", torch.float32, torch.float16, True), "cpu")
    assert isinstance(scaler, torch.amp.GradScaler)


def test_trainer_reads_prec_from_its_cfg_node(tmp_path):
    from test_engine_toy import ToyLinear, build_toy, toy_cfg

    class ToyCoOp(ToyLinear):
        CFG_NODE = "COOP"

    assert ToyLinear.prec_name(toy_cfg(tmp_path)) == "fp32"  # no node -> fp32
    cfg = toy_cfg(tmp_path, "TRAINER.COOP.PREC", "amp", "OPTIM.MAX_EPOCH", "1")
    assert ToyCoOp.prec_name(cfg) == "amp"
    build_toy(cfg)  # seeds + logger
    trainer = ToyCoOp(cfg)
    assert trainer.precision == Precision("amp", torch.float32, torch.bfloat16, False)
    assert trainer.scaler is None
    with trainer.autocast():
        assert trainer.model(torch.randn(2, 12)).dtype == torch.bfloat16
    trainer.train()  # trains under bf16 autocast on CPU
    cfg16 = toy_cfg(tmp_path / "f16", "TRAINER.COOP.PREC", "fp16")
    assert ToyCoOp(cfg16).precision.name == "fp32"
