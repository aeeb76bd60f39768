"""TensorBoard events of a real (tiny) run read back: Dassl's tags, written at the log lines only, with
the values the log prints; the tracker without the tensorboard package warns once and goes on; W&B
is off by default, offline when asked, and a one-line error without its package."""
import os
import re
import sys

import pytest

import train
from engine.utils import tracking
from tests.fixtures_data import make_shapes

TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
        "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "2", "TRAINER.COMMA.PROMPT_DEPTH", "2",
        "TRAINER.COMMA.PREC", "fp32", "DATALOADER.TEST.BATCH_SIZE", "8"]


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _run(tmp_path, *extra):
    make_shapes(tmp_path / "data", classes=("circle", "square"), counts={"train": 4, "val": 1, "test": 3}, size=32)
    out = tmp_path / "out"
    rc = train.main(["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "CoMMA", "--output-dir", str(out),
                     "--dataset-config-file", "configs/datasets/shapes.yaml",
                     "--config-file", "configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml", *extra, *TINY])
    return rc, out


def test_run_writes_dassl_tags_at_log_lines_with_logged_values(tmp_path):
    pytest.importorskip("tensorboard")
    rc, out = _run(tmp_path)
    assert rc == 0
    ev = _events(out / "tensorboard")
    # 2 classes x 4 shots = 8 images, batch 2 -> 4 batches per epoch, a log line every 2 batches
    steps = [2, 4, 6, 8]  # training steps done (one step unit per run)
    for tag in ("train/loss", "train/loss_kd", "train/lr"):
        assert [s for s, _ in ev[tag]] == steps, tag
    log = (out / "log.txt").read_text()
    lines = re.findall(r"^epoch \[\d/2\] batch \[\d/4\] .*$", log, flags=re.M)
    assert len(lines) == 4
    for (step, loss), (_, kd), (_, lr), line in zip(ev["train/loss"], ev["train/loss_kd"], ev["train/lr"], lines):
        logged = dict(re.findall(r"(loss(?:_kd)?) [-\d.]+ \(([-\d.]+)\)", line))  # running average, 4 decimals
        assert loss == pytest.approx(float(logged["loss"]), abs=5e-5)
        assert kd == pytest.approx(float(logged["loss_kd"]), abs=5e-5)
        assert lr == pytest.approx(float(re.search(r"lr ([\d.e+-]+)", line).group(1)), rel=1e-4)
    final = float(re.findall(r"^\* accuracy: ([\d.]+)%$", log, flags=re.M)[-1])
    assert [s for s, _ in ev["test/accuracy"]] == [8]  # the steps done when it was tested
    assert ev["test/accuracy"][0][1] == pytest.approx(final, abs=0.05)
    assert {"test/error_rate", "test/macro_f1"} <= set(ev)
    assert not (out / "wandb").exists()  # W&B is opt-in


def test_missing_tensorboard_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails like a missing package
    monkeypatch.setattr(tracking, "_warned_no_tensorboard", False)
    first = tracking.open_tracker(None, str(tmp_path / "a"), is_main=True)
    second = tracking.open_tracker(None, str(tmp_path / "b"), is_main=True)
    assert not first.enabled and not second.enabled
    first.add_scalar("train/loss", 1.0, 0)  # a no-op, not an error
    out = capsys.readouterr().out
    assert out.count("WARNING: the tensorboard package is not installed") == 1


def test_other_ranks_track_nothing(tmp_path):
    t = tracking.open_tracker(None, str(tmp_path / "tb"), is_main=False)
    assert not t.enabled and not (tmp_path / "tb").exists()


def test_wandb_requested_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    rc, out = _run(tmp_path, "--wandb", "comma-runs")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("error: TRAIN.WANDB_PROJECT (--wandb) is 'comma-runs' but the wandb package is not "
                          "installed; pip install wandb")
    assert not (out / "log.txt").exists()  # failed before anything ran


def test_wandb_offline_run_records_the_scalars(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    cfg.TRAIN.WANDB_PROJECT = "harness-test"
    t = tracking.open_tracker(cfg, os.path.join(cfg.OUTPUT_DIR, "tensorboard"), is_main=True)
    try:
        assert t.wandb.settings.mode == "offline" or t.wandb.offline
        t.add_scalar("train/loss", 0.5, 3)
        t.add_scalar("test/accuracy", 75.0, 1)
        summary = dict(t.wandb.summary)
    finally:
        t.close()
    assert summary["train/loss"] == 0.5 and summary["test/accuracy"] == 75.0
    assert summary["train/step"] == 3 and summary["test/step"] == 1
    runs = [d for d in os.listdir(tmp_path / "run" / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1 and wandb.run is None
