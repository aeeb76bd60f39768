"""Per-class accuracy tables (``tools/collect_results.py --per-class``) from the ``per_class`` entry of
each run's ``metrics.json`` (written with ``TEST.PER_CLASS_RESULT True``).

One table per (protocol, role, method, dataset): a row per class in label order, the mean ±
population std over the seeds that have it (as the main tables), and the number of seeds. Runs
without per-class results are left out; when none has them the output says how to get them.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np

from repro.methods import DATASET_TITLES

HINT = ("No per-class results: run with TEST.PER_CLASS_RESULT True (and TEST.COMPUTE_CMAT True for the "
        "confusion matrix in metrics.json).\n")


def build(runs, seeds=None) -> dict:
    """``{(protocol, role, trainer, dataset): {classname: {seed: accuracy}}}`` (classes in label order)."""
    out = {}
    for r in runs:
        if not getattr(r, "per_class", None) or (seeds and r.seed not in seeds):
            continue
        cell = out.setdefault((r.protocol, r.role, r.trainer, r.dataset), {})
        for name, acc in r.per_class:
            cell.setdefault(name, {})[r.seed] = acc
    return dict(sorted(out.items()))


def _stats(values: dict):
    v = list(values.values())
    return float(np.mean(v)), float(np.std(v)), len(v)


def render_markdown(data: dict) -> str:
    from tabulate import tabulate

    if not data:
        return "\n" + HINT
    out = ["\n## Per-class accuracy (mean ± population std over seeds)\n"]
    for (proto, role, trainer, ds), classes in data.items():
        out.append(f"### {trainer}, {DATASET_TITLES.get(ds, ds)} ({proto}, {role})\n")
        rows = []
        for name, values in classes.items():
            mean, std, n = _stats(values)
            rows.append([name, f"{mean:.2f} ± {std:.2f}", str(n)])
        out.append(tabulate(rows, headers=["Class", "Accuracy", "Seeds"], tablefmt="github",
                            disable_numparse=True) + "\n")
    return "\n".join(out)


def render_csv(data: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["protocol", "role", "method", "dataset", "class", "mean", "std", "n"])
    for (proto, role, trainer, ds), classes in data.items():
        for name, values in classes.items():
            mean, std, n = _stats(values)
            w.writerow([proto, role, trainer, ds, name, f"{mean:.4f}", f"{std:.4f}", n])
    return "\n" + buf.getvalue() if data else "\n" + HINT


def render_json(data: dict) -> str:
    rows = []
    for (proto, role, trainer, ds), classes in data.items():
        for name, values in classes.items():
            mean, std, n = _stats(values)
            rows.append({"protocol": proto, "role": role, "method": trainer, "dataset": ds, "class": name,
                         "mean": mean, "std": std, "n": n, "seeds": {str(k): v for k, v in sorted(values.items())}})
    return json.dumps({"per_class": rows}, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"md": render_markdown, "csv": render_csv, "json": render_json}
