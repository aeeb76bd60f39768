"""Log parsing: result blocks in both Dassl formats, end signals, train vs eval completion."""
import os

import pytest

from engine.runs.logparse import parse_lines, read_run_result, run_status, scan_metric
from fixtures_repro import log_lines, result_block, write_log


def test_result_block_ours_format_values():
    s = parse_lines(log_lines(93.4, kind="eval"))
    (block,) = s.blocks
    assert block.metrics == {"total": 2465.0, "correct": 2302.0, "accuracy": 93.4, "error": 6.6, "macro_f1": 92.9}


def test_result_block_old_dassl_two_decimals():
    s = parse_lines(result_block(71.25, fmt="dassl_old"))
    assert s.blocks[0].accuracy == 71.25
    assert s.final_result("eval").metrics["error"] == 28.75


def test_train_log_takes_block_after_end_signal_not_val_blocks():
    lines = log_lines(81.3, kind="train", val_accs=(50.0, 60.0))
    s = parse_lines(lines)
    assert [b.accuracy for b in s.blocks] == [50.0, 60.0, 81.3]
    assert s.final_result("train").accuracy == 81.3


def test_train_log_without_end_signal_is_unfinished():
    lines = [ln for ln in log_lines(81.3, kind="train", val_accs=(50.0,)) if ln != "Finish training"]
    s = parse_lines(lines)
    assert s.final_result("train") is None
    assert s.final_result("eval").accuracy == 81.3  # as an eval log the last block counts


def test_finished_training_signal_of_maple_forks():
    s = parse_lines(log_lines(77.77, kind="train", fmt="dassl_old"))
    assert "Finished training" in log_lines(1.0, fmt="dassl_old")
    assert s.final_result("train").accuracy == 77.77


def test_end_signal_then_crash_before_test_is_unfinished():
    s = parse_lines(["epoch [5/5] loss 1.0", "Finish training", "Deploy the last-epoch model"])
    assert s.final_result("train") is None


def test_appended_rerun_last_block_wins(tmp_path):
    d = tmp_path / "run"
    write_log(str(d), 60.0, kind="eval")
    with open(d / "log.txt", "a") as f:
        f.write("\n".join(log_lines(65.5, kind="eval")) + "\n")
    block, path = read_run_result(str(d), "eval")
    assert block.accuracy == 65.5 and path.endswith("log.txt")


def test_dassl_timestamped_rerun_log_is_newer(tmp_path):
    d = str(tmp_path / "run")
    write_log(d, 60.0)
    write_log(d, 62.0, name="log.txt-2024-01-02-10-00-00")
    write_log(d, 61.0, name="log.txt-2024-01-01-10-00-00")
    block, path = read_run_result(d, "train")
    assert block.accuracy == 62.0 and path.endswith("2024-01-02-10-00-00")


def test_run_status(tmp_path):
    assert run_status(str(tmp_path / "nope"), "train") == "absent"
    os.makedirs(tmp_path / "half")
    (tmp_path / "half" / "log.txt").write_text("epoch [1/5] batch [1/4]\n")
    assert run_status(str(tmp_path / "half"), "train") == "partial"
    write_log(str(tmp_path / "done"), 50.0)
    assert run_status(str(tmp_path / "done"), "train") == "finished"


@pytest.mark.parametrize("signals,expected", [(("Finish training", "Finished training"), 70.0),
                                              (("=> result",), 70.0)])
def test_scan_metric_last_match_after_signal(signals, expected):
    lines = ["* accuracy: 10.0%", "Finish training", "=> result", "* accuracy: 55.5%",
             "=> result", "* accuracy: 70.0%"]
    assert scan_metric(lines, "accuracy", signals) == expected
    assert scan_metric(lines[:1], "accuracy", signals) is None
