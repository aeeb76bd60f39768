"""Evaluator numbers and result block; the project logger (format, log.txt, append on re-run)."""
import logging

import pytest
import torch

from engine.config import get_cfg_default
from engine.evaluator import Classification, build_evaluator, macro_f1_score
from engine.utils.logger import get_logger, setup_logger


def own_handlers(kind=logging.Handler):
    """The project's own handlers of type ``kind`` (pytest >= 9.1 attaches its own to our logger)."""
    return [h for h in get_logger().handlers if getattr(h, "_harness_owned", False) and isinstance(h, kind)]


def one_hot_logits(pred, n_classes):
    return torch.nn.functional.one_hot(torch.as_tensor(pred), n_classes).float()


def cfg_with(tmp_path=None, **test_kw):
    cfg = get_cfg_default()
    for k, v in test_kw.items():
        setattr(cfg.TEST, k, v)
    if tmp_path is not None:
        cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def test_accuracy_and_macro_f1_by_hand(capsys):
    y_true = [0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0, 2]
    # per class F1 = 2TP / (2TP + FP + FN): c0 = 2/4, c1 = 4/5, c2 = 4/5 -> macro 0.7
    assert macro_f1_score(y_true, y_pred) == pytest.approx(0.7)
    ev = Classification(cfg_with())
    ev.process(one_hot_logits(y_pred[:4], 3), torch.tensor(y_true[:4]))  # two batches
    ev.process(one_hot_logits(y_pred[4:], 3), torch.tensor(y_true[4:]))
    res = ev.evaluate()
    assert list(res) == ["accuracy", "error_rate", "macro_f1"]
    assert res["accuracy"] == pytest.approx(500 / 7)
    assert res["error_rate"] == pytest.approx(100 - 500 / 7)
    assert res["macro_f1"] == pytest.approx(70.0)
    out = capsys.readouterr().out.splitlines()
    assert out[-6:] == ["=> result", "* total: 7", "* correct: 5", "* accuracy: 71.4%", "* error: 28.6%",
                        "* macro_f1: 70.0%"]


def test_macro_f1_only_over_labels_present_in_y_true():
    # label 1 is predicted but never true: excluded from the average (sklearn labels=np.unique(y_true))
    assert macro_f1_score([0, 0], [0, 1]) == pytest.approx(2 / 3)
    assert macro_f1_score([0, 1], [1, 0]) == 0.0
    assert macro_f1_score([], []) == 0.0


def test_result_block_thousands_separators(capsys):
    ev = Classification(cfg_with())
    gt = torch.zeros(2465, dtype=torch.long)
    pred = torch.zeros(2465, dtype=torch.long)
    pred[2302:] = 1
    ev.process(one_hot_logits(pred, 2), gt)
    ev.evaluate()
    lines = capsys.readouterr().out.splitlines()
    assert lines[-6:-1] == ["=> result", "* total: 2,465", "* correct: 2,302", "* accuracy: 93.4%", "* error: 6.6%"]
    assert lines[-1] == f"* macro_f1: {100 * (2 * 2302 / (2 * 2302 + 163)) / 1:.1f}%"


def test_per_class_result_and_cmat(tmp_path, capsys):
    ev = build_evaluator(cfg_with(tmp_path, PER_CLASS_RESULT=True, COMPUTE_CMAT=True),
                         lab2cname={0: "cat", 1: "dog"})
    ev.process(one_hot_logits([0, 1, 1, 1], 2), torch.tensor([0, 0, 1, 1]))
    res = ev.evaluate()
    assert res["perclass_accuracy"] == pytest.approx(75.0)
    out = capsys.readouterr().out
    assert "Loading evaluator: Classification" in out
    assert "* class: 0 (cat)\ttotal: 2\tcorrect: 1\tacc: 50.0%" in out
    assert "* average: 75.0%" in out
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=True)
    assert torch.allclose(cmat, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))


def test_logger_format_file_and_append(tmp_path, capsys):
    logger = setup_logger(str(tmp_path))
    assert logger is get_logger() and logger.name == "harness"
    logger.info("plain line")
    logger.warning("careful")
    assert capsys.readouterr().out == "plain line\nWARNING: careful\n"
    assert (tmp_path / "log.txt").read_text() == "plain line\nWARNING: careful\n"
    setup_logger(str(tmp_path))  # a re-run appends after a separator
    get_logger().info("second run")
    text = (tmp_path / "log.txt").read_text()
    assert text.startswith("plain line\nWARNING: careful\n")
    assert text.splitlines()[-2].startswith("==================== new run ")
    assert text.endswith("second run\n")
    custom = tmp_path / "custom.log"
    setup_logger(str(custom))
    get_logger().info("to custom")
    assert custom.read_text() == "to custom\n"
    setup_logger(None)
    get_logger().info("console only")
    assert "console only" not in custom.read_text()
    assert not own_handlers(logging.FileHandler)
    assert len(own_handlers()) == 1  # the stdout handler only


def test_setup_logger_keeps_foreign_handlers(tmp_path):
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    collector = Collect(level=logging.INFO)
    get_logger().addHandler(collector)
    try:
        setup_logger(str(tmp_path))
        get_logger().info("hello")
        assert seen == ["hello"]
        assert len(own_handlers(logging.FileHandler)) == 1
        assert collector in get_logger().handlers
        setup_logger(None)
        assert not own_handlers(logging.FileHandler) and collector in get_logger().handlers
    finally:
        get_logger().removeHandler(collector)
