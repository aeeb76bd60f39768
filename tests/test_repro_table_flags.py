"""Tables say what their numbers are: random weights (from the backbone loader's log line), epochs
and shots that differ within one table, and --compare averages over fewer datasets than the paper's."""
import csv
import io
import json
import os
import subprocess
import sys

from repro.report.collect import scan
from engine.runs.logparse import RANDOM_WEIGHTS_MARK, run_facts
from repro.report.tables import build_tables, render_csv, render_markdown
from fixtures_repro import log_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECT = os.path.join(REPO, "tools", "collect_results.py")
PAPER = os.path.join(REPO, "docs", "paper_numbers.json")
RANDOM_LINE = (f"WARNING: {RANDOM_WEIGHTS_MARK} ViT-Tiny/16 built with random weights "
               "(MODEL.BACKBONE.RANDOM_INIT True, seed 1); every accuracy of this run is meaningless")


def _write(run_dir, lines):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "log.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _train_log(acc, epochs, random=False):
    lines = [f"epoch [{epochs}/{epochs}] batch [1/1] loss 1.0 (1.0)"] + log_lines(acc, "train")
    lines = [ln.replace("model.pth.tar-5", f"model.pth.tar-{epochs}") for ln in lines]
    return ([RANDOM_LINE] if random else []) + lines


def _eval_log(acc, epochs, random=False):
    return ([RANDOM_LINE] if random else []) + [f'Loading weights to prompt_learner from "x" (epoch = {epochs})'] + \
        log_lines(acc, "eval")


def _b2n(root, trainer, seed, epochs, random=False, shots=16, ds="shapes"):
    _write(f"{root}/base2new/train_base/{ds}/shots_{shots}/{trainer}/cfg/seed{seed}", _train_log(80, epochs, random))
    _write(f"{root}/base2new/test_new/{ds}/shots_{shots}/{trainer}/cfg/seed{seed}", _eval_log(70, epochs, random))


def _row(md, method_label):
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == method_label:
            return cells
    raise AssertionError(f"no row {method_label!r} in\n{md}")


def test_run_facts_read_only_the_run_that_printed_the_result(tmp_path):
    path = tmp_path / "log.txt"
    first = _train_log(50, 1, random=True)
    second = ["", "==================== new run 2026-01-01 00:00:00 ===================="] + _train_log(60, 3)
    path.write_text("\n".join(first + second) + "\n")
    lines = path.read_text().splitlines()
    result_lines = [i for i, ln in enumerate(lines) if ln == "=> result"]
    facts = run_facts(str(path), result_lines[-1])
    assert facts.random_weights is False and facts.epochs == 3
    facts = run_facts(str(path), result_lines[0])
    assert facts.random_weights is True and facts.epochs == 1


def test_random_weight_rows_are_marked_in_every_format(tmp_path):
    root = str(tmp_path / "out")
    for s in (1, 2):
        _b2n(root, "CoMMA", s, 5, random=True)
        _b2n(root, "MaPLe", s, 5)
    runs, _ = scan(root)
    assert sorted((r.trainer, r.role, r.random_weights, r.epochs) for r in runs if r.seed == 1) == [
        ("CoMMA", "base", True, 5), ("CoMMA", "novel", True, 5), ("MaPLe", "base", False, 5),
        ("MaPLe", "novel", False, 5)]
    tables = build_tables(runs)
    md = render_markdown(tables)
    assert "> Random weights: 4 of 8 runs in this table used a randomly initialised CLIP backbone" in md
    assert _row(md, "CoMMA (random weights)")[1:4] == ["80.00", "70.00", f"{2 * 80 * 70 / 150:.2f}"]
    assert _row(md, "MaPLe")[1] == "80.00"  # real weights, same epochs: no note
    assert "Epochs differ" not in md and "Shots differ" not in md
    rows = list(csv.DictReader(io.StringIO(render_csv(tables))))
    assert {r["flags"] for r in rows if r["method"] == "CoMMA"} == {"random weights"}
    assert {r["flags"] for r in rows if r["method"] == "MaPLe"} == {""}
    data = json.loads(subprocess.run([sys.executable, COLLECT, root, "--format", "json"], capture_output=True,
                                     text=True, check=True).stdout)["base2new"]
    assert data["flags"]["methods"]["CoMMA"]["random_weight_runs"] == 4
    assert data["flags"]["methods"]["MaPLe"]["random_weight_runs"] == 0
    assert data["caveats"][0].startswith("Random weights: 4 of 8 runs")
    assert sorted(data["methods"]) == ["CoMMA", "MaPLe"]  # row keys unchanged


def test_differing_epochs_and_shots_within_one_table_are_said(tmp_path):
    root = str(tmp_path / "out")
    _b2n(root, "CoMMA", 1, 5)
    _b2n(root, "CoMMA", 2, 1)  # a 1-epoch smoke run mixed with a 5-epoch run
    _b2n(root, "MaPLe", 1, 5, shots=4)
    md = render_markdown(build_tables(scan(root)[0]))
    assert "> Epochs differ within this table: 1 epoch (2 runs), 5 epochs (4 runs);" in md
    assert "> Shots differ within this table: 4 shots (2 runs), 16 shots (4 runs);" in md
    assert _row(md, "CoMMA (1/5 ep; 16 shots)")
    assert _row(md, "MaPLe (5 ep; 4 shots)")
    # one setting throughout: nothing to say
    same = str(tmp_path / "same")
    _b2n(same, "CoMMA", 1, 5)
    _b2n(same, "MaPLe", 1, 5)
    md = render_markdown(build_tables(scan(same)[0]))
    assert ">" not in md and _row(md, "CoMMA") and _row(md, "MaPLe")


def test_compare_with_fewer_datasets_than_the_paper_says_so(tmp_path):
    root = str(tmp_path / "out")
    _b2n(root, "CoMMA", 1, 5)
    out = subprocess.run([sys.executable, COLLECT, root, "--compare", PAPER], capture_output=True, text=True,
                         check=True).stdout
    avg = out.split("### Average over 1 dataset\n", 1)[1].split("###", 1)[0]
    assert ("> The published averages are over the paper's 11 datasets; ours covers 1 (Shapes), so the "
            "published numbers are shown for reference only and Δ is left out.") in avg
    assert _row(avg, "CoMMA")[4:] == ["82.42", "—", "75.87", "—", "79.04", "—"]
    rows = list(csv.DictReader(io.StringIO(subprocess.run(
        [sys.executable, COLLECT, root, "--compare", PAPER, "--format", "csv"], capture_output=True, text=True,
        check=True).stdout)))
    average = [r for r in rows if r["dataset"] == "average"]
    assert average and all("paper's 11 datasets; ours covers 1" in r["flags"] for r in average)
    assert all(r["diff"] == "" for r in average)
    no_compare = subprocess.run([sys.executable, COLLECT, root], capture_output=True, text=True, check=True).stdout
    assert "published" not in no_compare
