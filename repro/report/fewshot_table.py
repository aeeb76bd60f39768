"""CoOp's few-shot table: accuracy (all classes) vs shots K, per dataset and averaged over datasets.

* a cell (method, dataset, K) is the mean ± population std over seeds (``tables.Stat``);
* the Average row of a method at K is the mean over the expected datasets of the per-dataset means,
  ``None`` ("—") when a dataset has no result at that K;
* zero-shot CLIP runs (K = 0 folders) form the ``0`` column (one evaluation stands for every K);
* a method's row is split by config only when it ran two configs at the same (dataset, K): CoOp's
  per-K configs (50/100/200 epochs) share one row.
Table dict: ``{"seeds", "datasets", "shots": [K...], "methods": {row: {"datasets": {d: {"K": Stat}},
"average": {"K": float|None}}}, "flags"}`` (K keys are strings, for JSON).
"""
from __future__ import annotations

import numpy as np

from repro.methods import BASE2NEW_DATASETS, DATASET_TITLES


def _row_keys(runs):
    per = {}
    for r in runs:
        per.setdefault((r.trainer, r.dataset, r.shots), set()).add(r.cfg)
    split = {t for (t, _, _), cfgs in per.items() if len(cfgs) > 1}
    return {(r.trainer, r.cfg, r.shots): (f"{r.trainer} [{r.cfg}]" if r.trainer in split else r.trainer)
            for r in runs}


def build_fewshot(runs, seeds, datasets, stat_cls, rank, flags_fn) -> dict:
    """Aggregate the ``fewshot`` runs (``seeds``: expected seeds; ``datasets``: ``["all"]``, names or None
    = those seen). ``stat_cls``/``rank``/``flags_fn``: ``tables.Stat``, the method order key and
    ``tables._flags`` (passed in to keep one definition)."""
    names = _row_keys(runs)
    methods = sorted(set(names.values()), key=rank)
    seen = {r.dataset for r in runs}
    if datasets and list(datasets) == ["all"]:
        ds_list = list(BASE2NEW_DATASETS)
    elif datasets:
        ds_list = list(datasets)
    else:
        ds_list = [d for d in BASE2NEW_DATASETS if d in seen] + sorted(d for d in seen if d not in BASE2NEW_DATASETS)
    shots = sorted({r.shots for r in runs})
    keys = [str(k) for k in shots]
    cells = {m: {d: {k: stat_cls(expected=len(seeds)) for k in keys} for d in ds_list} for m in methods}
    counted = [r for r in runs if r.seed in seeds and r.dataset in ds_list]
    for r in counted:
        cells[names[(r.trainer, r.cfg, r.shots)]][r.dataset][str(r.shots)].values[r.seed] = r.accuracy
    flags = flags_fn(counted, names, methods)
    flags["shots"] = {}  # shots differ by design in this table: no caveat
    for f in flags["methods"].values():
        f["shots"] = []
    table = {"seeds": seeds, "datasets": ds_list, "shots": shots, "methods": {}, "flags": flags}
    for m in methods:
        avg = {}
        for k in keys:
            means = [cells[m][d][k].mean for d in ds_list]
            avg[k] = float(np.mean(means)) if ds_list and all(v is not None for v in means) else None
        table["methods"][m] = {"datasets": cells[m], "average": avg}
    return table


def _has_runs(t, m, k) -> bool:
    return any(t["methods"][m]["datasets"][d][k].n for d in t["datasets"])


def markdown(t: dict, fmt_stat, fmt_num, md_table, row_label, quote, caveats) -> str:
    """``## Few-shot ...`` with an Average table and one table per dataset (columns = K)."""
    keys = [str(k) for k in t["shots"]]
    headers = ["Method"] + [("0 (zero-shot)" if k == "0" else f"{k} shot" + ("" if k == "1" else "s")) for k in keys]
    out = [f"## Few-shot classification (all classes; accuracy vs shots per class; mean ± population std "
           f"over seeds {', '.join(map(str, t['seeds']))})\n"]
    if caveats:
        out.append(quote(caveats))
    rows = []
    for m, data in t["methods"].items():
        rows.append([row_label(t, m)] + [fmt_num(data["average"][k]) if _has_runs(t, m, k) else "" for k in keys])
    out.append(f"### Average over {len(t['datasets'])} dataset{'' if len(t['datasets']) == 1 else 's'}\n")
    out.append(md_table(headers, rows) + "\n")
    for d in t["datasets"]:
        out.append(f"### {DATASET_TITLES.get(d, d)}\n")
        rows = [[row_label(t, m)] + [fmt_stat(data["datasets"][d][k]) if _has_runs(t, m, k) else "" for k in keys]
                for m, data in t["methods"].items()]
        out.append(md_table(headers, rows) + "\n")
    return "\n".join(out)


def csv_rows(t: dict, num):
    """``fewshot,<method>,<dataset|average>,shots_<K>,mean,std,n,missing,,`` rows (K with runs only)."""
    keys = [str(k) for k in t["shots"]]
    for m, data in t["methods"].items():
        for d in t["datasets"]:
            for k in keys:
                if _has_runs(t, m, k):
                    s = data["datasets"][d][k]
                    yield m, ["fewshot", m, d, f"shots_{k}", num(s.mean), num(s.std), s.n, s.missing, "", ""]
        for k in keys:
            if _has_runs(t, m, k):
                yield m, ["fewshot", m, "average", f"shots_{k}", num(data["average"][k]), "", "", "", "", ""]
