"""Kill -9 (and SIGINT/SIGTERM) at seeded moments, then resume: the final checkpoint tensors and the
accuracy equal an uninterrupted run's, bit for bit (fp32, CPU), for CoMMA, MaPLe and CoOp.

Each method runs one chain of ``train.py`` subprocesses into one folder, each re-running the same
command after the previous one died (``tests/fixtures_faults.py`` injects the fault):
SIGKILL during a seeded step of epoch 2 -> SIGKILL inside the write of checkpoint 2 -> SIGKILL between
epochs 2 and 3 -> SIGTERM (CoOp: SIGINT) at a seeded step of epoch 3 (a clean stop, state saved) ->
SIGKILL during the final test -> a clean finish. 3 epochs of 3 batches on 12 Shapes images.
"""
import os
import random
import re
import signal
import subprocess
import sys

import pytest
import torch

from engine.checkpoint import checkpoint_digest
from tests.fixtures_data import make_shapes
from tests.fixtures_faults import SELF as FAULTS, TINY_BACKBONE

pytestmark = pytest.mark.slow  # subprocess runs (seconds each); CI's second pass skips them (-m 'not slow')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, BATCHES = 3, 3
METHODS = {  # trainer: (config, model folder, opts), fp32 so that CPU runs are deterministic
    "CoMMA": ("configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner",
              ["TRAINER.COMMA.PROMPT_DEPTH", "3", "TRAINER.COMMA.PREC", "fp32"]),
    "MaPLe": ("configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner",
              ["TRAINER.MAPLE.PROMPT_DEPTH", "3", "TRAINER.MAPLE.PREC", "fp32"]),
    "CoOp": ("configs/trainers/CoOp/vit_b16_ctxv1.yaml", "prompt_learner", ["TRAINER.COOP.PREC", "fp32"]),
}
SEEDS = {"CoMMA": 1, "MaPLe": 2, "CoOp": 3}
RESULT = re.compile(r"^\* accuracy: ([\d.]+)%$", re.M)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    make_shapes(root, classes=("circle", "square", "triangle"), counts={"train": 4, "val": 1, "test": 3}, size=32)
    return root


def _cmd(trainer, data_root, out, fault):
    config, _, opts = METHODS[trainer]
    return [sys.executable, FAULTS, fault, "--", "--root", str(data_root), "--seed", "1", "--trainer", trainer,
            "--output-dir", str(out), "--config-file", config, "--dataset-config-file", "configs/datasets/shapes.yaml",
            *TINY_BACKBONE, "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE",
            "4", "OPTIM.MAX_EPOCH", str(EPOCHS), "TRAIN.CHECKPOINT_FREQ", "1", *opts]


def _run(trainer, data_root, out, fault="none"):
    env = dict(os.environ)
    env.pop("HARNESS_TRACEBACK", None)
    return subprocess.run(_cmd(trainer, data_root, out, fault), cwd=REPO, capture_output=True, text=True, env=env)


def _final(out, trainer):
    folder = out / METHODS[trainer][1]
    ckpt = torch.load(folder / f"model.pth.tar-{EPOCHS}", map_location="cpu", weights_only=True)
    accs = RESULT.findall((out / "log.txt").read_text())
    return ckpt, accs[-1] if accs else None


@pytest.fixture(scope="module")
def references(tmp_path_factory, data_root):
    """One uninterrupted run per method (computed on first use, shared by the module)."""
    cache = {}

    def get(trainer):
        if trainer not in cache:
            out = tmp_path_factory.mktemp(f"ref_{trainer}")
            proc = _run(trainer, data_root, out)
            assert proc.returncode == 0, proc.stderr
            cache[trainer] = _final(out, trainer)
        return cache[trainer]
    return get


@pytest.mark.parametrize("trainer", list(METHODS))
def test_killed_and_stopped_at_seeded_moments_then_resumed_equals_uninterrupted(trainer, data_root, references,
                                                                               tmp_path):
    ref_ckpt, ref_acc = references(trainer)
    rng = random.Random(SEEDS[trainer])
    stop = "SIGINT" if trainer == "CoOp" else "SIGTERM"
    chain = [
        (f"kill:step:{rng.randint(BATCHES + 1, 2 * BATCHES)}", -9),  # during epoch 2 (steps count from 1)
        ("kill:ckpt:1", -9),     # resumed from checkpoint 1: killed inside the write of checkpoint 2
        ("kill:epoch:3", -9),    # killed between epochs 2 and 3, checkpoint 2 complete
        (f"signal:{stop}:{rng.randint(1, BATCHES)}", 128 + getattr(signal, stop)),  # clean stop in epoch 3
        ("kill:test:1", -9),     # killed during the final test
        ("none", 0),
    ]
    out = tmp_path / "run"
    folder = out / METHODS[trainer][1]
    for fault, expected in chain:
        proc = _run(trainer, data_root, out, fault)
        assert proc.returncode == expected, f"{fault}: {proc.stderr[-2000:]}"
        if fault == "kill:ckpt:1":
            temps = [p for p in os.listdir(folder) if p.endswith(".tmp")]
            assert len(temps) == 1 and "model.pth.tar-2" not in os.listdir(folder)  # the previous file only
        if fault.startswith("signal"):
            err = proc.stderr.strip().splitlines()
            assert len(err) == 1 and "Traceback" not in proc.stderr
            assert err[0].startswith(f"error: interrupted by {stop} at ")
            assert f"re-run the same command to continue exactly where it stopped (or add --resume {out})" in err[0]
            assert err[0] in (out / "log.txt").read_text()  # the error line is in log.txt too
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp") or p == "interrupted.pth.tar"]
    ckpt, acc = _final(out, trainer)
    assert acc == ref_acc and acc is not None
    assert ckpt["state_dict"].keys() == ref_ckpt["state_dict"].keys()
    for key, value in ref_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    # optimizer, scheduler, torch and NumPy RNG states too. Python's ``random`` differs for a reason outside
    # resuming: it is drawn only by the few-shot sampling, which the reference (the first run on this
    # dataset) did and whose cache every later run reads instead.
    for k in ref_ckpt:
        a, b = dict(ref_ckpt[k]) if k == "rng_state" else ref_ckpt[k], dict(ckpt[k]) if k == "rng_state" else ckpt[k]
        if k == "rng_state":
            a.pop("python"), b.pop("python")
        if k != "checksum_sha256":
            assert checkpoint_digest({k: a}) == checkpoint_digest({k: b}), k


def test_stop_before_training_and_during_eval_is_one_line(data_root, tmp_path):
    """SIGTERM outside the training loop stops at once (nothing to save) with one line and exit 143."""
    env = dict(os.environ)
    env.pop("HARNESS_TRACEBACK", None)
    script = ("import os, signal, sys; sys.path.insert(0, os.getcwd()); import train; "
              "from engine import trainer as t; "
              "t.SimpleTrainer.build_data_loader = lambda self: os.kill(os.getpid(), signal.SIGTERM); "
              "sys.exit(train.main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", script] + _cmd("CoOp", data_root, tmp_path / "o", "none")[4:]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 143 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: interrupted by SIGTERM; re-run the same command to continue from the "
                                   f"last complete checkpoint in {tmp_path / 'o'} (if any)")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(env, HARNESS_TRACEBACK="1"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "Interrupted" in proc.stderr
