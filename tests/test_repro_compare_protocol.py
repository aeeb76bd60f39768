"""collect_results --compare names every difference from the published protocol (backbone, weights,
shots, epochs, seeds, datasets, precision that ran) in the row labels, the caption, CSV and JSON;
--per-class prints the per-class accuracy of metrics.json."""
import csv
import io
import json
import os
import subprocess
import sys

from engine.runs.run_metrics import METRICS_FILE, REQUIRED_KEYS
from tests.fixtures_repro import write_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECT = os.path.join(REPO, "tools", "collect_results.py")
PAPER = os.path.join(REPO, "docs", "paper_numbers.json")


def _run(root, role, acc, seed, per_class=None, **extra):
    sub = {"base": "train_base", "novel": "test_new"}[role]
    d = os.path.join(root, "base2new", sub, "shapes", "shots_8", "CoOp", "vit_b16_ctxv1", f"seed{seed}")
    write_log(d, acc, "train" if role == "base" else "eval")
    m = {k: 1 for k in REQUIRED_KEYS}
    m.update(accuracy=acc, mode="train" if role == "base" else "eval", config_hash="a" * 12, epoch=1, seed=seed,
             backbone="ViT-Tiny/16", random_init=False, weights="tiny_clip.pt sha256:0123456789abcdef",
             prec="fp32", **extra)
    if per_class:
        m["per_class"] = [{"label": i, "classname": n, "total": 10, "correct": int(a / 10), "accuracy": a}
                          for i, (n, a) in enumerate(per_class)]
    with open(os.path.join(d, METRICS_FILE), "w") as f:
        json.dump(m, f)


def _collect(root, *args):
    r = subprocess.run([sys.executable, COLLECT, root, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_protocol_mismatch_is_named(tmp_path):
    root = str(tmp_path)
    for seed, (b, n) in ((1, (60.0, 40.0)), (2, (70.0, 50.0))):
        _run(root, "base", b, seed, per_class=[("circle", b + 10), ("square", b - 10)])
        _run(root, "novel", n, seed)
    plain = _collect(root)
    assert "paper" not in plain  # without --compare nothing is compared
    md = _collect(root, "--compare", PAPER)
    row = [ln for ln in md.split("### Shapes")[0].splitlines() if ln.startswith("| CoOp")][0]
    for phrase in ("≠ paper: backbone ViT-Tiny/16 (paper ViT-B/16)",
                   "weights tiny_clip.pt sha256:0123456789abcdef (paper official)",
                   "8 shots (paper 16)", "1 ep (paper 200)", "fp32 (paper fp16)"):
        assert phrase in row, (phrase, row)
    caption = md.split("| Method")[0]
    assert "Not the published protocol" in caption and "2 seeds (paper 3)" in caption
    assert "0 of the paper's 11 datasets" in caption and "CoOp: backbone ViT-Tiny/16" in caption
    data = json.loads(_collect(root, "--compare", PAPER, "--format", "json"))["base2new"]
    assert data["protocol_mismatches"]["table"] == ["2 seeds (paper 3)", "0 of the paper's 11 datasets"]
    assert data["protocol_mismatches"]["rows"]["CoOp"][0] == "backbone ViT-Tiny/16 (paper ViT-B/16)"
    assert any("Not the published protocol" in c for c in data["caveats"])
    rows = list(csv.DictReader(io.StringIO(_collect(root, "--compare", PAPER, "--format", "csv"))))
    avg = [r for r in rows if r["dataset"] == "average" and r["metric"] == "base"][0]
    assert "8 shots (paper 16)" in avg["flags"] and "Not the published protocol" in avg["flags"]


def test_per_class_table(tmp_path):
    root = str(tmp_path)
    _run(root, "base", 60.0, 1, per_class=[("circle", 70.0), ("square", 50.0)])
    _run(root, "base", 70.0, 2, per_class=[("circle", 80.0), ("square", 60.0)])
    _run(root, "novel", 40.0, 1)
    md = _collect(root, "--per-class")
    part = md.split("## Per-class accuracy")[1]
    assert "### CoOp, Shapes (base2new, base)" in part
    assert "| circle  | 75.00 ± 5.00 | 2       |" in part and "| square  | 55.00 ± 5.00 | 2       |" in part
    data = json.loads(_collect(root, "--per-class", "--format", "json"))
    assert "base2new" in data and [r["mean"] for r in data["per_class"]] == [75.0, 55.0]
    assert "No per-class results" in _collect(os.path.join(root, "base2new", "test_new"), "--per-class")
