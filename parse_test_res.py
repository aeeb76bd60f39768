"""Summarise the runs of one directory, with the CLI and output lines of CoOp/MaPLe's parse_test_res.py.

    python parse_test_res.py DIR [--test-log] [--ci95] [--multi-exp] [--keyword accuracy]

Each non-hidden sub-folder of DIR (sorted) is one run holding ``log.txt``. Values are read after
the end signal: ``=> result`` with ``--test-log``, otherwise ``Finish training`` or ``Finished
training`` (both accepted: Dassl and the MaPLe/COMMA forks differ); after it every
``* <keyword>: X%`` overwrites the value, so the last match wins. Output per run:
``file: <path>. accuracy: 93.40%. ``, then ``===``, ``Summary of directory: DIR``,
``* accuracy: AVG% +- STD%`` (``numpy.std``, population; ``--ci95``: 1.96·std/√n) and ``===``.
``--multi-exp`` treats each sub-folder of DIR as one experiment directory and ends with
``Average performance``. Differences from CoOp's original script: stray files
are ignored instead of failing an assert, and nothing is written into the results tree.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from engine.runs.logparse import END_SIGNALS, RESULT_HEADER, scan_metric  # noqa: E402


class NothingFound(RuntimeError):
    pass


def _subdirs(directory: str) -> list:
    return [d for d in sorted(os.listdir(directory))
            if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))]


def spread(values, ci95: bool) -> float:
    """Population std, or the 95% confidence half-width ``1.96 * std / sqrt(n)``."""
    std = float(np.std(values))
    return 1.96 * std / np.sqrt(len(values)) if ci95 else std


def parse_directory(directory: str, keyword: str, test_log: bool, ci95: bool, out=print) -> dict:
    """Print the per-run lines and the summary of ``directory``; returns ``{keyword: mean}``."""
    signals = (RESULT_HEADER,) if test_log else END_SIGNALS
    out(f"Parsing files in {directory}")
    found = []
    for sub in _subdirs(directory):
        fpath = os.path.join(directory, sub, "log.txt")
        if not os.path.isfile(fpath):
            continue
        with open(fpath, "r", encoding="utf-8", errors="replace") as f:
            value = scan_metric(f, keyword, signals)
        if value is not None:
            found.append((fpath, value))
    if not found:
        raise NothingFound(f"Nothing found in {directory}")
    for fpath, value in found:
        out(f"file: {fpath}. {keyword}: {value:.2f}%. ")
    values = [v for _, v in found]
    avg = float(np.mean(values))
    out("===")
    out(f"Summary of directory: {directory}")
    out(f"* {keyword}: {avg:.2f}% +- {spread(values, ci95):.2f}%")
    out("===")
    return {keyword: avg}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Summarise Dassl run logs (mean and std over runs).")
    p.add_argument("directory", help="path to the directory holding one folder per run")
    p.add_argument("--ci95", action="store_true", help="print the 95%% confidence interval instead of the std")
    p.add_argument("--test-log", action="store_true", help="parse after '=> result' (evaluation logs)")
    p.add_argument("--multi-exp", action="store_true", help="each sub-folder of DIR is one experiment")
    p.add_argument("--keyword", default="accuracy", help="which '* <keyword>: X%%' value to read")
    args = p.parse_args(argv)
    if not os.path.isdir(args.directory):
        print(f"ERROR: directory not found: {args.directory}", file=sys.stderr)
        return 2
    try:
        if args.multi_exp:
            per_exp = []
            for sub in _subdirs(args.directory):
                per_exp.append(parse_directory(os.path.join(args.directory, sub), args.keyword,
                                               args.test_log, args.ci95))
            if not per_exp:
                raise NothingFound(f"Nothing found in {args.directory}")
            print("Average performance")
            print(f"* {args.keyword}: {np.mean([r[args.keyword] for r in per_exp]):.2f}%")
        else:
            parse_directory(args.directory, args.keyword, args.test_log, args.ci95)
    except NothingFound as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
