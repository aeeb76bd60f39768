"""Faults during a run, through ``train.main``: a non-finite loss, ``log.txt`` on a full disk, error lines
copied to ``log.txt``, and the edge values of ``DATASET.NUM_SHOTS`` said out loud."""
import errno
import logging
import math
import os

import pytest

import engine.utils.logger as logger_mod
import train
from engine.data.fewshot import load_or_create_fewshot
from engine.data.datum import Datum
from engine.utils.io import WriteError
from tests.fixtures_data import make_shapes
from tests.fixtures_faults import TINY_BACKBONE

COMMA = ["--trainer", "CoMMA", "--config-file", "configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml",
         "--dataset-config-file", "configs/datasets/shapes.yaml", "--seed", "1", *TINY_BACKBONE,
         "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
         "TRAINER.COMMA.PROMPT_DEPTH", "3", "OPTIM.MAX_EPOCH", "2"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_data")
    make_shapes(root, classes=("circle", "square"), counts={"train": 3, "val": 1, "test": 2}, size=32)
    return root


def test_non_finite_loss_is_one_line_with_terms_and_advice(data_root, tmp_path, monkeypatch, capsys):
    from trainers.comma import CoMMACLIP

    original = CoMMACLIP.compute_loss
    calls = {"n": 0}

    def poisoned(self, image, label):
        loss, summary = original(self, image, label)
        calls["n"] += 1
        if calls["n"] < 3:
            return loss, summary
        return loss * math.nan, dict(summary, loss=math.nan)

    monkeypatch.setattr(CoMMACLIP, "compute_loss", poisoned)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = train.main(["--root", str(data_root), "--output-dir", str(out), *COMMA])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    line = err.strip()
    assert line.startswith("error: non-finite loss (nan) at epoch 2, batch 1 (loss nan, loss_kd ")
    assert "try a lower OPTIM.LR (now 0.0035), TRAINER.COMMA.PREC fp32 (now fp16), checking the input images" in line
    assert line in (out / "log.txt").read_text().splitlines()  # error lines go to log.txt as well
    assert not (out / "MultiModalPromptLearner" / "model.pth.tar-2").exists()


def test_error_after_logger_is_in_log_txt(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    rc = train.main(["--root", str(data_root), "--output-dir", str(out), "--eval-only", "--model-dir",
                     str(tmp_path / "missing"), *COMMA])
    err = capsys.readouterr().err
    assert rc == 2 and err == f'error: Model directory not found: "{tmp_path / "missing"}"\n'
    assert (out / "log.txt").read_text().splitlines()[-1] == err.strip()


class _FullDiskStream:
    """A log file stream whose writes fail with ENOSPC after ``left`` bytes."""

    def __init__(self, real, left):
        self.real, self.left = real, left

    def write(self, text):
        if len(text) > self.left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(text)
        return self.real.write(text)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_log_txt_on_a_full_disk_stops_the_run_in_one_line(data_root, tmp_path, monkeypatch, capsys):
    real_open = logger_mod._LogFileHandler._open

    def failing_open(self):
        return _FullDiskStream(real_open(self), 4000)

    monkeypatch.setattr(logger_mod._LogFileHandler, "_open", failing_open)
    monkeypatch.setattr(logger_mod._LogFileHandler, "__init__",
                        lambda self, *a, **k: logging.FileHandler.__init__(self, *a, **dict(k, delay=True)))
    out = tmp_path / "out"
    capsys.readouterr()
    rc = train.main(["--root", str(data_root), "--output-dir", str(out), *COMMA])
    captured = capsys.readouterr()
    assert rc == 2
    assert "Logging error" not in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: no space left on the device writing {out / 'log.txt'} (folder {out}")
    assert "Checkpoint saved" not in captured.out  # stopped at the first record that could not be written


def test_log_handler_fails_once_then_goes_quiet(tmp_path, capsys):
    log = logger_mod.setup_logger(str(tmp_path))
    handler = next(h for h in log.handlers if isinstance(h, logger_mod._LogFileHandler))
    handler.stream = _FullDiskStream(handler.stream, 0)
    with pytest.raises(WriteError, match="no space left on the device writing .*log.txt"):
        log.info("first")
    log.info("second")  # console only, no traceback
    logger_mod.write_to_log_file("error: x")  # skipped silently
    captured = capsys.readouterr()
    assert "second" in captured.out and "Logging error" not in captured.err
    logger_mod.setup_logger(None)


def _items(counts):
    return [Datum(impath=f"/x/{label}_{i}.jpg", label=label, classname=f"c{label}")
            for label, n in enumerate(counts) for i in range(n)]


def _shots_lines(capsys):
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("DATASET.NUM_SHOTS")]


@pytest.mark.parametrize("shots", [0, -1])
def test_num_shots_zero_says_all_data(tmp_path, capsys, shots):
    train_items = _items([5, 7])
    got, _ = load_or_create_fewshot(str(tmp_path), "/x", train_items, [], shots, 1)
    assert got == train_items
    assert _shots_lines(capsys) == [f"DATASET.NUM_SHOTS {shots}: no few-shot subset, training on all 12 training "
                                    "images"]


def test_more_shots_than_exist_says_so(tmp_path, capsys):
    got, _ = load_or_create_fewshot(str(tmp_path), "/x", _items([24, 100, 30]), _items([2, 2, 2]), 100, 1)
    assert len(got) == 24 + 100 + 30  # Dassl's rule: every image of a short class
    assert _shots_lines(capsys) == ["DATASET.NUM_SHOTS 100: 2 of 3 classes have fewer training images (fewest: "
                                    "24); those use all their images, so the subset has 154 images, not 300"]
    load_or_create_fewshot(str(tmp_path), "/x", _items([24, 100, 30]), _items([2, 2, 2]), 100, 1)  # from the cache
    assert len(_shots_lines(capsys)) == 1
    load_or_create_fewshot(str(tmp_path), "/x", _items([24, 100, 30]), _items([2, 2, 2]), 16, 1)
    assert _shots_lines(capsys) == []  # nothing to say
