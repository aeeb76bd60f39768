"""Print the papers' tables from an output tree (ours, MaPLe's or COMMA's layout).

    python tools/collect_results.py OUTPUT_ROOT [--format md|csv|json] [--compare docs/paper_numbers.json]
        [--plot DIR] [--seeds 1 2 3] [--datasets all|NAME ...] [--out FILE]

Reads every run folder's metrics.json (written by train.py at the end of each test; unrounded
accuracy) and falls back to its log.txt (the last result block; a training run counts only once it
printed a result after "Finish training"/"Finished training"), groups runs by
protocol/method/dataset/seed and prints base-to-novel (Base/Novel/HM per dataset, mean ± population
std over seeds, plus the Average row = HM of the averaged base and novel), cross-dataset (source +
targets + average), domain generalisation (source + 4 targets + average) and few-shot (accuracy vs
shots per dataset and averaged). Missing runs show as "—" with a count.
Rows say what their numbers are: random backbone weights, and epochs/shots when they differ within a
table; with --compare, an average over fewer datasets than the paper's is labelled and gets no Δ, and
every difference from the published protocol (backbone, weights, shots, epochs, seeds, datasets,
precision) is named in the row labels, the captions, the JSON and the figures; --published-only adds
rows of published methods without runs. --per-class adds per-class accuracy tables.
Statistics and layouts: repro/report/tables.py, repro/report/collect.py, docs/REPRODUCE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from engine.utils.io import atomic_write_text  # noqa: E402
from repro.report import per_class  # noqa: E402
from repro.report.collect import scan  # noqa: E402
from repro.report.tables import RENDERERS, build_tables  # noqa: E402


def load_paper_numbers(path: str) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read --compare file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--compare file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--compare file {path} must hold a JSON object keyed by protocol")
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Print the papers' result tables (base-to-novel, cross-dataset, domain generalisation, "
                    "few-shot) from the run folders under an output root (metrics.json, else log.txt): "
                    "mean ± std over seeds, missing runs counted, "
                    "rows marked when their runs used random weights or differ in epochs or shots.",
        epilog="example: python tools/collect_results.py output --compare docs/paper_numbers.json --plot output/plots")
    p.add_argument("root", help="output root holding base2new/ and xd/ run folders (e.g. output)")
    p.add_argument("--format", choices=sorted(RENDERERS), default="md",
                   help="md (Markdown tables, default), csv (one row per number) or json")
    p.add_argument("--compare", default=None, metavar="JSON",
                   help="published numbers to print beside ours, with the difference (docs/paper_numbers.json)")
    p.add_argument("--published-only", action="store_true",
                   help="with --compare: also list published methods that have no runs here")
    p.add_argument("--per-class", action="store_true",
                   help="also print per-class accuracy (runs trained or tested with TEST.PER_CLASS_RESULT True)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="also write PNG figures into this folder (tables, and per dataset and method the "
                        "training loss and accuracy against epochs, seeds overlaid)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds every cell should have; others count as missing (default: all seen)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="datasets every table should have: all (the papers' lists) or names (default: all seen)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the table to this file")
    args = p.parse_args(argv)
    try:
        paper = load_paper_numbers(args.compare) if args.compare else None
        runs, unfinished = scan(args.root)
    except (ValueError, FileNotFoundError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    tables = build_tables(runs, seeds=args.seeds, datasets=args.datasets)
    text = RENDERERS[args.format](tables, paper, published_only=args.published_only)
    if args.per_class:
        classes = per_class.build(runs, seeds=args.seeds)
        if args.format == "json":  # one JSON object: the tables plus "per_class"
            text = json.dumps(dict(json.loads(text), **json.loads(per_class.render_json(classes))), indent=2,
                              ensure_ascii=False) + "\n"
        else:
            text += per_class.RENDERERS[args.format](classes)
    sys.stdout.write(text)
    if unfinished:
        print(f"\n{len(unfinished)} run folder(s) without a final result (unfinished or failed), not counted.",
              file=sys.stderr)
    if args.out:
        atomic_write_text(args.out, text)
    if args.plot:
        from repro.report.curves import write_curves
        from repro.report.plots import write_plots
        for path in write_plots(tables, args.plot, paper) + write_curves(args.root, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
