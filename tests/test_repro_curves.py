"""Training curves: loss points parsed from Dassl iteration lines (resumed epochs replaced), accuracy
from TensorBoard events or the log's result blocks, one PNG per dataset and method with the seeds
overlaid, written by collect_results --plot."""
import os
import subprocess
import sys

import pytest

from repro.report.curves import event_accuracy, find_runs, log_accuracy, loss_curves, write_curves
from fixtures_repro import result_block

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECT = os.path.join(REPO, "tools", "collect_results.py")
CFG = "vit_b16_c2_ep5_batch4_2ctx"


def _it(e, b, loss, kd=None, E=2, B=4):
    kd_part = f" loss_kd {kd / 2:.4f} ({kd:.4f})" if kd is not None else ""
    return (f"epoch [{e}/{E}] batch [{b}/{B}] time 0.100 (0.120) data 0.001 (0.002) loss {loss * 2:.4f} "
            f"({loss:.4f}){kd_part} lr 2.0000e-03 eta 0:00:01")


def _train_log(seed, val=None):
    lines = ["** Arguments **", _it(1, 2, 2.0, 0.5), _it(1, 4, 1.5, 0.4)]
    if val is not None:
        lines += ["Evaluate on the *val* set"] + result_block(val)
    lines += [_it(2, 2, 1.2, 0.3), _it(2, 4, 1.0 + seed / 10, 0.2)]
    if val is not None:
        lines += ["Evaluate on the *val* set"] + result_block(val + 5)
    lines += ["Checkpoint saved to x/model.pth.tar-2", "Finish training", "Deploy the last-epoch model",
              "Evaluate on the *test* set"] + result_block(60.0 + seed)
    return lines


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_loss_and_log_accuracy_parsing():
    lines = _train_log(1, val=50.0)
    # a resumed run repeats epoch 2 after a separator: the later lines win
    lines += ["==================== new run", _it(2, 2, 1.1, 0.25)]
    curves = loss_curves(lines)
    assert curves["loss"] == [(0.5, 2.0), (1.0, 1.5), (1.5, 1.1), (2.0, 1.1)]
    assert curves["loss_kd"] == [(0.5, 0.5), (1.0, 0.4), (1.5, 0.25), (2.0, 0.2)]
    assert set(curves) == {"loss", "loss_kd"}  # time/data meters are not losses
    acc = log_accuracy(lines)
    assert acc == {"val": [(1, 50.0), (2, 55.0)], "test": [(2, 61.0)]}


def test_event_accuracy_reads_tensorboard_steps_as_epochs(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for epoch, v in enumerate([40.0, 45.5, 47.25]):
        w.add_scalar("val/accuracy", v, epoch)
    w.add_scalar("test/accuracy", 50.0, 2)
    w.add_scalar("train/loss", 1.0, 7)
    w.close()
    assert event_accuracy(str(tmp_path / "tb")) == {"val": [(1, 40.0), (2, 45.5), (3, 47.25)], "test": [(3, 50.0)]}
    assert event_accuracy(str(tmp_path / "none")) == {}


def test_one_png_per_dataset_and_method_with_seeds_overlaid(tmp_path):
    root = tmp_path / "out"
    for seed in (1, 2):
        _write(str(root / f"base2new/train_base/dtd/shots_16/CoMMA/{CFG}/seed{seed}/log.txt"), _train_log(seed))
        _write(str(root / f"base2new/test_new/dtd/shots_16/CoMMA/{CFG}/seed{seed}/log.txt"),
               ["Loading weights to prompt_learner from x (epoch = 2)", "Evaluate on the *test* set"]
               + result_block(55.0 + seed))
    _write(str(root / f"base2new/train_base/eurosat/shots_16/MaPLe/{CFG}/seed1/log.txt"), _train_log(1, val=30.0))
    # zero-shot runs and logs without iteration lines have no training curve
    _write(str(root / "base2new/train_base/dtd/shots_16/ZeroshotCLIP/vit_b16/seed1/log.txt"),
           ["Evaluate on the *test* set"] + result_block(40.0))
    groups = find_runs(str(root))
    key = ("base2new", "dtd", "CoMMA", CFG, 16)
    assert sorted(groups[key]) == [1, 2] and groups[key][2]["novel"] == (2, 57.0)
    paths = write_curves(str(root), str(tmp_path / "plots"))
    assert sorted(os.path.basename(p) for p in paths) == [
        f"curves_base2new_dtd_CoMMA_{CFG}_16shots.png", f"curves_base2new_eurosat_MaPLe_{CFG}_16shots.png"]
    for p in paths:
        data = open(p, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    r = subprocess.run([sys.executable, COLLECT, str(root), "--plot", str(tmp_path / "p2")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"curves_base2new_dtd_CoMMA_{CFG}_16shots.png" in r.stderr
    assert sorted(n for n in os.listdir(tmp_path / "p2") if n.startswith("curves_")) == \
        sorted(os.path.basename(p) for p in paths)
