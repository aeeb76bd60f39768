"""parse_test_res.py: the ecosystem's CLI and output lines on synthetic run folders."""
import math
import os
import subprocess
import sys

from fixtures_repro import log_lines, write_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "parse_test_res.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_train_folder_both_end_signals_and_output_lines(tmp_path):
    d = tmp_path / "caltech"
    write_log(str(d / "seed1"), 93.4)                       # ours: "Finish training", 1 decimal
    write_log(str(d / "seed2"), 92.15, fmt="dassl_old")     # MaPLe/COMMA: "Finished training", 2 decimals
    write_log(str(d / "seed3"), 50.0, kind="eval")          # no end signal: skipped silently without --test-log
    (d / "notes.txt").write_text("stray file")              # ignored (the original asserted)
    r = run(d)
    assert r.returncode == 0, r.stderr
    values = [93.4, 92.15]
    mean, std = sum(values) / 2, math.sqrt(sum((v - sum(values) / 2) ** 2 for v in values) / 2)
    assert r.stdout.splitlines() == [
        f"Parsing files in {d}",
        f"file: {d}/seed1/log.txt. accuracy: 93.40%. ",
        f"file: {d}/seed2/log.txt. accuracy: 92.15%. ",
        "===",
        f"Summary of directory: {d}",
        f"* accuracy: {mean:.2f}% +- {std:.2f}%",
        "===",
    ]


def test_test_log_last_match_wins_and_ci95(tmp_path):
    d = tmp_path / "new"
    for s, acc in ((1, 70.0), (2, 74.0), (3, 78.0)):
        write_log(str(d / f"seed{s}"), acc, kind="eval")
    with open(d / "seed3" / "log.txt", "a") as f:  # a rerun appended: the last block wins
        f.write("\n".join(log_lines(75.0, kind="eval")) + "\n")
    r = run(d, "--test-log")
    assert r.returncode == 0, r.stderr
    assert f"file: {d}/seed3/log.txt. accuracy: 75.00%. " in r.stdout
    values = [70.0, 74.0, 75.0]
    m = sum(values) / 3
    std = math.sqrt(sum((v - m) ** 2 for v in values) / 3)
    assert f"* accuracy: {m:.2f}% +- {std:.2f}%" in r.stdout
    r = run(d, "--test-log", "--ci95")
    assert f"* accuracy: {m:.2f}% +- {1.96 * std / math.sqrt(3):.2f}%" in r.stdout


def test_keyword_macro_f1(tmp_path):
    d = tmp_path / "x"
    write_log(str(d / "seed1"), 80.0, kind="eval")
    r = run(d, "--test-log", "--keyword", "macro_f1")
    assert f"file: {d}/seed1/log.txt. macro_f1: 79.50%. " in r.stdout
    assert "* macro_f1: 79.50% +- 0.00%" in r.stdout


def test_nothing_found(tmp_path):
    d = tmp_path / "empty"
    write_log(str(d / "seed1"), 80.0, kind="eval")  # no end signal and no --test-log
    r = run(d)
    assert r.returncode == 1 and r.stderr.strip() == f"Nothing found in {d}"


def test_multi_exp(tmp_path):
    for exp, accs in (("a", (60.0, 62.0)), ("b", (70.0, 70.0))):
        for s, acc in enumerate(accs, 1):
            write_log(str(tmp_path / "root" / exp / f"seed{s}"), acc, kind="eval")
    r = run(tmp_path / "root", "--multi-exp", "--test-log")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2:] == ["Average performance", "* accuracy: 65.50%"]
    assert lines.count("===") == 4
