"""collect_results on synthetic output trees: exact statistics, missing runs, layouts, formats, plots."""
import csv
import io
import json
import math
import os
import subprocess
import sys

import pytest

from repro.report.collect import classify, scan
from repro.methods import BASE2NEW_DATASETS
from repro.report.tables import build_tables, render_csv, render_markdown
from fixtures_repro import write_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECT = os.path.join(REPO, "tools", "collect_results.py")
PAPER = os.path.join(REPO, "docs", "paper_numbers.json")

BASE = {1: 80.0, 2: 82.0, 3: 81.0}
NOVEL = {1: 70.0, 2: 72.0, 3: 74.0}


def pstd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def md_row(md, section, method):
    """Cells of ``method``'s row in the Markdown table under heading ``section``."""
    part = md.split(f"### {section}\n", 1)[1].split("###", 1)[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == method:
            return cells
    raise AssertionError(f"no row {method} under {section}")


def ours_b2n(root, ds, trainer, seed, base, novel, cfg="vit_b16_c2_ep5_batch4_2ctx"):
    if base is not None:
        write_log(f"{root}/base2new/train_base/{ds}/shots_16/{trainer}/{cfg}/seed{seed}", base)
    if novel is not None:
        write_log(f"{root}/base2new/test_new/{ds}/shots_16/{trainer}/{cfg}/seed{seed}", novel, kind="eval")


def comma_b2n(root, ds, seed, base, novel, cfg="vit_b16_c2_ep5_batch4_2ctx"):
    """Official COMMA layout (dataset after CFG), official Dassl log format."""
    write_log(f"{root}/base2new/train_base/shots_16/COMMA/{cfg}/{ds}/seed{seed}", base, fmt="dassl_old")
    write_log(f"{root}/base2new/test_new/shots_16/COMMA/{cfg}/{ds}/seed{seed}", novel, kind="eval",
              fmt="dassl_old")


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "output")
    for s in (1, 2, 3):
        ours_b2n(root, "caltech101", "MaPLe", s, BASE[s], NOVEL[s])
        ours_b2n(root, "dtd", "MaPLe", s, BASE[s] - 20, NOVEL[s] - 30)
        comma_b2n(root, "caltech101", s, BASE[s] + 1.25, NOVEL[s] + 2.5)
    comma_b2n(root, "dtd", 1, 61.0, 45.0)  # seeds 2, 3 of CoMMA dtd missing
    # an unfinished training run (crashed): must not count
    os.makedirs(f"{root}/base2new/train_base/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed2")
    with open(f"{root}/base2new/train_base/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed2/log.txt", "w") as f:
        f.write("epoch [3/5] batch [1/20] loss 1.0\n")
    return root


def test_classify_layouts():
    assert classify("base2new/train_base/dtd/shots_16/MaPLe/cfg/seed2".split("/"))[:8] == \
        ("base2new", "base", "MaPLe", "cfg", 16, "dtd", 2, "train")
    assert classify("base2new/test_new/shots_16/COMMA/cfg/dtd/seed1".split("/"))[:8] == \
        ("base2new", "novel", "CoMMA", "cfg", 16, "dtd", 1, "eval")
    assert classify("imagenet/MaPLe/cfg_16shots/seed3".split("/"))[:8] == \
        ("xd", "source", "MaPLe", "cfg", 16, "imagenet", 3, "train")
    assert classify("evaluation/MaPLe/cfg_16shots/imagenet_r/seed1".split("/"))[:3] == ("dg", "target", "MaPLe")
    assert classify("xd/test/dtd/CoMMA/cfg_16shots/seed1".split("/"))[:3] == ("xd", "target", "CoMMA")
    assert classify("base2new/train_base/dtd/shots_16/ZeroshotCLIP/vit_b16/seed1".split("/"))[7] == "eval"
    # CoOp's main.sh few-shot tree is the few-shot protocol; non-run folders are not protocol runs
    assert classify("dtd/CoOp/rn50_16shots/nctx16_cscFalse_ctpend/seed1".split("/"))[:8] == \
        ("fewshot", "all", "CoOp", "rn50", 16, "dtd", 1, "train")
    assert classify("dtd/CoOp/rn50_4shots/nctx4_cscTrue_ctpmiddle/seed2".split("/"))[3] == \
        "rn50 nctx4_cscTrue_ctpmiddle"
    assert classify("evaluation/CoOp/vit_b16_ep50_16shots/nctx16_cscFalse_ctpend/dtd/seed3".split("/"))[:8] == \
        ("xd", "target", "CoOp", "vit_b16_ep50", 16, "dtd", 3, "eval")
    assert classify("fewshot/dtd/shots_0/ZeroshotCLIP/vit_b16/seed1".split("/"))[:8] == \
        ("fewshot", "all", "ZeroshotCLIP", "vit_b16", 0, "dtd", 1, "eval")
    assert classify("base2new/train_base/dtd/shots_16/MaPLe/cfg".split("/")) is None


def test_exact_statistics_both_formats(tree):
    runs, unfinished = scan(tree)
    assert len(unfinished) == 1 and unfinished[0].endswith("CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed2")
    t = build_tables(runs)["base2new"]
    assert t["seeds"] == [1, 2, 3] and t["datasets"] == ["caltech101", "dtd"]
    cal = t["methods"]["MaPLe"]["datasets"]["caltech101"]
    assert cal["base"].mean == pytest.approx(81.0, abs=1e-12)
    assert cal["base"].std == pytest.approx(pstd(list(BASE.values())), abs=1e-12)
    assert cal["novel"].std == pytest.approx(pstd(list(NOVEL.values())), abs=1e-12)
    assert cal["hm"] == pytest.approx(2 * 81.0 * 72.0 / (81.0 + 72.0), abs=1e-12)
    # official COMMA layout + 2-decimal logs + "Finished training", trainer folder COMMA -> CoMMA
    cc = t["methods"]["CoMMA"]["datasets"]["caltech101"]
    assert cc["base"].values == {1: 81.25, 2: 83.25, 3: 82.25}
    assert cc["novel"].mean == pytest.approx(74.5, abs=1e-12)
    # Average row = HM of the averaged base and novel (not the mean of per-dataset HMs)
    avg = t["methods"]["MaPLe"]["average"]
    ab, an = (81.0 + 61.0) / 2, (72.0 + 42.0) / 2
    assert avg["base"] == pytest.approx(ab) and avg["novel"] == pytest.approx(an)
    assert avg["hm"] == pytest.approx(2 * ab * an / (ab + an))
    per_ds_hm_mean = (cal["hm"] + t["methods"]["MaPLe"]["datasets"]["dtd"]["hm"]) / 2
    assert abs(avg["hm"] - per_ds_hm_mean) > 0.01


def test_missing_runs_are_dashes_with_counts(tree, tmp_path):
    runs, _ = scan(tree)
    root = tree
    ours_b2n(root, "eurosat", "MaPLe", 1, 90.0, None)  # only seed 1 base of MaPLe on EuroSAT
    runs, _ = scan(root)
    t = build_tables(runs)
    md = render_markdown(t)
    comma_dtd = t["base2new"]["methods"]["CoMMA"]["datasets"]["dtd"]
    assert comma_dtd["base"].n == 1 and comma_dtd["base"].missing == 2
    assert md_row(md, "DTD", "CoMMA") == ["CoMMA", "61.00 ± 0.00 (2 missing)", "45.00 ± 0.00 (2 missing)",
                                          f"{2 * 61 * 45 / 106:.2f}"]
    # CoMMA never ran EuroSAT: dashes with 3 missing, HM dash, average dash with a dataset count
    assert md_row(md, "EuroSAT", "CoMMA") == ["CoMMA", "— (3 missing)", "— (3 missing)", "—"]
    assert md_row(md, "EuroSAT", "MaPLe") == ["MaPLe", "90.00 ± 0.00 (2 missing)", "— (3 missing)", "—"]
    assert md_row(md, "Average over 3 datasets", "CoMMA") == ["CoMMA", "— (1 dataset missing)",
                                                              "— (1 dataset missing)", "—"]
    assert md_row(md, "Average over 3 datasets", "MaPLe")[1:] == [f"{(81 + 61 + 90) / 3:.2f}",
                                                                  "— (1 dataset missing)", "—"]
    avg = t["base2new"]["methods"]["CoMMA"]["average"]
    assert avg["base"] is None and avg["hm"] is None and avg["datasets_missing"]["base"] == 1


def test_expected_seeds_and_datasets_override(tree):
    runs, _ = scan(tree)
    t = build_tables(runs, seeds=[1, 2, 3, 4], datasets=["all"])["base2new"]
    assert t["datasets"] == list(BASE2NEW_DATASETS)
    cal = t["methods"]["MaPLe"]["datasets"]["caltech101"]["base"]
    assert cal.n == 3 and cal.missing == 1
    assert t["methods"]["MaPLe"]["datasets"]["imagenet"]["base"].missing == 4
    assert t["methods"]["MaPLe"]["average"]["datasets_missing"]["base"] == 9


def test_xd_and_dg_tables_official_layout(tmp_path):
    root = str(tmp_path)
    for s, acc in ((1, 70.0), (2, 71.0)):
        write_log(f"{root}/imagenet/MaPLe/x_cross_datasets_16shots/seed{s}", acc, fmt="dassl_old")
        write_log(f"{root}/evaluation/MaPLe/x_cross_datasets_16shots/caltech101/seed{s}", 90.0 + s, kind="eval")
        write_log(f"{root}/evaluation/MaPLe/x_cross_datasets_16shots/dtd/seed{s}", 40.0 + s, kind="eval")
        write_log(f"{root}/evaluation/MaPLe/x_cross_datasets_16shots/imagenet_a/seed{s}", 50.0, kind="eval")
    write_log(f"{root}/xd/train/imagenet/CoMMA/y_16shots/seed1", 72.0)
    write_log(f"{root}/xd/test/dtd/CoMMA/y_16shots/seed1", 44.0, kind="eval")
    runs, _ = scan(root)
    t = build_tables(runs)
    xd, dg = t["xd"], t["dg"]
    assert xd["targets"] == ["caltech101", "dtd"] and dg["targets"] == ["imagenet_a"]
    m = xd["methods"]["MaPLe"]
    assert m["cells"]["source"].mean == pytest.approx(70.5) and m["cells"]["source"].std == pytest.approx(0.5)
    assert m["average"] == pytest.approx(((91 + 92) / 2 + (41 + 42) / 2) / 2)
    assert dg["methods"]["MaPLe"]["cells"]["source"].mean == pytest.approx(70.5)
    assert dg["methods"]["MaPLe"]["average"] == pytest.approx(50.0)
    c = xd["methods"]["CoMMA"]
    assert c["average"] is None and c["targets_missing"] == 1
    assert c["cells"]["caltech101"].missing == 2  # seeds 1, 2 expected (seen in the protocol)
    md = render_markdown(t)
    assert "— (1 target missing)" in md and "ImageNet (source)" in md


def test_xd_source_alone_makes_no_dg_table(tmp_path):
    root = str(tmp_path)
    write_log(f"{root}/xd/train/imagenet/CoMMA/y_16shots/seed1", 72.0)
    runs, _ = scan(root)
    t = build_tables(runs)
    assert set(t) == {"xd"} and t["xd"]["targets"] == []
    assert "| CoMMA    | 72.00 ± 0.00        | — (no targets) |" in render_markdown(t)


def _eleven(root, trainer, base, novel):
    for ds in BASE2NEW_DATASETS:
        ours_b2n(root, ds, trainer, 1, base, novel)


def test_compare_adds_published_numbers_and_difference(tmp_path):
    root = str(tmp_path / "o")
    _eleven(root, "CoMMA", 83.0, 75.0)
    _eleven(root, "MaPLe", 80.0, 70.0)
    out = subprocess.run([sys.executable, COLLECT, root, "--compare", PAPER], capture_output=True, text=True,
                         check=True).stdout
    avg_table = out.split("### ImageNet")[0]
    hm = 2 * 83 * 75 / 158
    row = [ln for ln in avg_table.splitlines() if ln.startswith("| CoMMA")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["CoMMA", "83.00", "75.00", f"{hm:.2f}", "82.42", "+0.58", "75.87", "-0.87", "79.04",
                     f"{hm - 79.04:+.2f}"]
    assert "published only" not in avg_table  # rows of methods without runs: only on request
    asked = subprocess.run([sys.executable, COLLECT, root, "--compare", PAPER, "--published-only"],
                           capture_output=True, text=True, check=True).stdout.split("### ImageNet")[0]
    assert "KgCoOp (published only)" in asked and "80.73" in asked
    csv_out = subprocess.run([sys.executable, COLLECT, root, "--compare", PAPER, "--format", "csv"],
                             capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(csv_out)))
    r = [x for x in rows if x["method"] == "MaPLe" and x["dataset"] == "average" and x["metric"] == "base"][0]
    assert float(r["mean"]) == 80.0 and float(r["paper"]) == 82.28 and float(r["diff"]) == pytest.approx(-2.28)


def test_json_and_csv_formats(tree):
    out = subprocess.run([sys.executable, COLLECT, tree, "--format", "json"], capture_output=True, text=True,
                         check=True).stdout
    data = json.loads(out)
    dtd = data["base2new"]["methods"]["CoMMA"]["datasets"]["dtd"]
    assert dtd["base"] == {"mean": 61.0, "std": 0.0, "n": 1, "missing": 2, "seeds": {"1": 61.0}}
    runs, _ = scan(tree)
    rows = list(csv.DictReader(io.StringIO(render_csv(build_tables(runs)))))
    r = [x for x in rows if x["method"] == "MaPLe" and x["dataset"] == "caltech101" and x["metric"] == "novel"][0]
    assert float(r["mean"]) == 72.0 and int(r["n"]) == 3 and int(r["missing"]) == 0
    assert float(r["std"]) == pytest.approx(pstd([70, 72, 74]), abs=1e-4)


def test_plots_written_and_non_empty(tree, tmp_path):
    plots = tmp_path / "plots"
    subprocess.run([sys.executable, COLLECT, tree, "--plot", str(plots)], capture_output=True, text=True, check=True)
    names = sorted(os.listdir(plots))
    assert names == ["base_vs_novel_CoMMA.png", "base_vs_novel_MaPLe.png", "base_vs_novel_all.png",
                     "hm_per_dataset.png"]
    for n in names:
        data = (plots / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_missing_root_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, COLLECT, str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("ERROR: output root not found")
