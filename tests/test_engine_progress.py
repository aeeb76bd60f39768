"""Evaluation progress without a terminal: one log line at each 10% of a long loop, none for short ones."""
import re

from engine.trainer import _progress


def test_logged_progress_marks_every_tenth(capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    items = list(_progress(list(range(40)), "test (test)"))
    assert items == list(range(40))  # every item passes through, in order
    lines = [m for m in capsys.readouterr().out.splitlines() if m.startswith("test (test):")]
    assert [int(re.match(r"test \(test\): (\d+)/40 batches", m).group(1)) for m in lines] == [4, 8, 12, 16, 20,
                                                                                              24, 28, 32, 36]


def test_short_loops_and_training_log_nothing(capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert list(_progress(list(range(19)), "test (test)")) == list(range(19))
    assert list(_progress(list(range(100)), "epoch 1/5", log_without_tty=False)) == list(range(100))
    assert "batches (" not in capsys.readouterr().out
