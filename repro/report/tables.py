"""Aggregate runs into the papers' tables and render them as Markdown, CSV or JSON.

Statistics (documented in docs/REPRODUCE.md):
* a cell is the mean over seeds and the **population** std (``numpy.std``, ddof 0, as
  ``parse_test_res.py`` prints it); ``missing`` counts expected seeds without a finished run;
* base-to-novel HM of a dataset = ``2 B N / (B + N)`` of the mean base and mean novel accuracy;
* the Average row averages the per-dataset means over the expected datasets and takes the HM of
  those averages (as the papers do); it is "—" when a dataset has no result at all;
* xd / dg Average = mean over the target columns (the source column is not averaged);
* ``--compare``: a published average is shown next to ours, and the difference only when ours
  covers the same datasets (all 11, the 10 xd targets, the 4 dg targets); never mixes seeds.
A cell without any run is ``None`` in JSON and "— (k missing)" in text: never 0.
The few-shot table (accuracy vs shots) is built and rendered by ``repro.report.fewshot_table``.

Tables say what their numbers are (``flags`` of each table, from each run's log): rows of runs built
with random backbone weights are labelled ``(random weights)``; when the runs of one table differ in
epochs or shots, every row says its own (``(1 ep)``, ``(4 shots)``); a caveat block under the heading
says why. With ``--compare``, an average over fewer datasets/targets than the paper's says so and
shows no difference. CSV rows carry the same words in a ``flags`` column.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np

from repro.report import fewshot_table, protocol
from repro.methods import (BASE2NEW_DATASETS, DATASET_TITLES, DG_TARGETS, TABLE_ORDER,
                                  XD_SOURCE, XD_TARGETS, get_method)

DASH = "—"


@dataclass
class Stat:
    """Mean and population std over the seeds that ran; ``values`` maps seed -> accuracy."""

    values: dict = field(default_factory=dict)
    expected: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def missing(self) -> int:
        return max(self.expected - self.n, 0)

    @property
    def mean(self):
        return float(np.mean(list(self.values.values()))) if self.values else None

    @property
    def std(self):
        return float(np.std(list(self.values.values()))) if self.values else None

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "missing": self.missing,
                "seeds": {str(k): v for k, v in sorted(self.values.items())}}


def hm(a, b):
    """Harmonic mean ``2ab/(a+b)``; None when either is None (0 when both are 0)."""
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def _row_name(trainer: str, cfg: str, shots: int, split: bool) -> str:
    if not split:
        return trainer
    return f"{trainer} [{cfg}{'' if shots == 16 else f', {shots} shots'}]"


def _method_rank(name: str):
    try:
        return (TABLE_ORDER.index(get_method(name.split(" [")[0]).key), name)
    except (KeyError, ValueError):
        return (len(TABLE_ORDER), name)


def _order_datasets(names, paper):
    known = [d for d in paper if d in names]
    return known + sorted(d for d in names if d not in paper)


def _row_keys(runs):
    """Map (trainer, cfg, shots) -> row name; a trainer gets one row per cfg only when it ran
    two configs on the same dataset (otherwise CoOp's ImageNet-specific config shares the row)."""
    per = {}
    for r in runs:
        per.setdefault((r.trainer, r.dataset, r.role), set()).add((r.cfg, r.shots))
    split = {t for (t, _, _), cfgs in per.items() if len(cfgs) > 1}
    return {(r.trainer, r.cfg, r.shots): _row_name(r.trainer, r.cfg, r.shots, r.trainer in split) for r in runs}


def _flags(counted, names, methods) -> dict:
    """How the runs counted in one table ran: random weights, epochs and shots, per row and overall."""
    rows = {m: {"runs": 0, "random_weight_runs": 0, "epochs": set(), "shots": set(), "backbones": set(),
                "weights": set(), "precs": set()} for m in methods}
    unrecorded = 0
    for r in counted:
        f = rows[names[(r.trainer, r.cfg, r.shots)]]
        f["runs"] += 1
        f["random_weight_runs"] += bool(getattr(r, "random_weights", False))
        if getattr(r, "epochs", None) is not None:
            f["epochs"].add(r.epochs)
        f["shots"].add(r.shots)
        for key, attr in (("backbones", "backbone"), ("weights", "weights"), ("precs", "prec")):
            if getattr(r, attr, None) is not None:
                f[key].add(getattr(r, attr))
        if getattr(r, "backbone", None) is None:
            unrecorded += 1
    epochs, shots = {}, {}
    for r in counted:
        if getattr(r, "epochs", None) is not None:
            epochs[r.epochs] = epochs.get(r.epochs, 0) + 1
        shots[r.shots] = shots.get(r.shots, 0) + 1
    return {"runs": len(counted), "random_weight_runs": sum(f["random_weight_runs"] for f in rows.values()),
            "unrecorded_runs": unrecorded,
            "epochs": {str(k): v for k, v in sorted(epochs.items())},
            "shots": {str(k): v for k, v in sorted(shots.items())},
            "methods": {m: dict(f, epochs=sorted(f["epochs"]), shots=sorted(f["shots"]),
                                backbones=sorted(f["backbones"]), weights=sorted(f["weights"]),
                                precs=sorted(f["precs"])) for m, f in rows.items()}}


def build_tables(runs, seeds=None, datasets=None) -> dict:
    """Aggregate :class:`repro.report.collect.Run` s into ``{"base2new": ..., "xd": ..., "dg": ...,
    "fewshot": ...}`` (only the protocols with runs).

    ``seeds``: expected seeds (default: every seed seen in that protocol). ``datasets``: expected
    base-to-novel datasets / xd targets (``["all"]`` = the papers' lists; default: those seen).
    """
    out = {}
    for proto in ("base2new", "xd", "dg", "fewshot"):
        pruns = [r for r in runs if r.protocol == proto]
        if not pruns or (proto == "dg" and not any(r.role == "target" for r in pruns)):
            continue  # the xd source run alone does not make a dg table
        exp_seeds = sorted(set(seeds) if seeds else {r.seed for r in pruns})
        if proto == "fewshot":
            out[proto] = fewshot_table.build_fewshot(pruns, exp_seeds, datasets, Stat, _method_rank, _flags)
            continue
        names = _row_keys(pruns)
        methods = sorted(set(names.values()), key=_method_rank)
        if proto == "base2new":
            out[proto] = _base2new(pruns, names, methods, exp_seeds, datasets)
        else:
            out[proto] = _transfer(proto, pruns, names, methods, exp_seeds, datasets)
    return out


def _expected(datasets, seen, paper):
    if datasets and list(datasets) == ["all"]:
        return list(paper)
    if datasets:
        return list(datasets)
    return _order_datasets(seen, paper)


def _base2new(runs, names, methods, seeds, datasets):
    ds_list = _expected(datasets, {r.dataset for r in runs}, BASE2NEW_DATASETS)
    cells = {m: {d: {"base": Stat(expected=len(seeds)), "novel": Stat(expected=len(seeds))} for d in ds_list}
             for m in methods}
    counted = [r for r in runs if r.seed in seeds and r.dataset in ds_list]
    for r in counted:
        cells[names[(r.trainer, r.cfg, r.shots)]][r.dataset][r.role].values[r.seed] = r.accuracy
    table = {"seeds": seeds, "datasets": ds_list, "methods": {}, "flags": _flags(counted, names, methods)}
    for m in methods:
        per = {}
        for d in ds_list:
            b, n = cells[m][d]["base"], cells[m][d]["novel"]
            per[d] = {"base": b, "novel": n, "hm": hm(b.mean, n.mean)}
        bases = [per[d]["base"].mean for d in ds_list]
        novels = [per[d]["novel"].mean for d in ds_list]
        avg = {"base": None, "novel": None, "hm": None,
               "datasets_missing": {"base": sum(v is None for v in bases), "novel": sum(v is None for v in novels)},
               "runs_missing": sum(per[d][k].missing for d in ds_list for k in ("base", "novel"))}
        if ds_list and all(v is not None for v in bases):
            avg["base"] = float(np.mean(bases))
        if ds_list and all(v is not None for v in novels):
            avg["novel"] = float(np.mean(novels))
        avg["hm"] = hm(avg["base"], avg["novel"])
        table["methods"][m] = {"datasets": per, "average": avg}
    return table


def _transfer(proto, runs, names, methods, seeds, datasets):
    paper_targets = XD_TARGETS if proto == "xd" else DG_TARGETS
    sources = sorted({r.dataset for r in runs if r.role == "source"}) or [XD_SOURCE]
    seen_targets = {r.dataset for r in runs if r.role == "target"}
    if proto == "xd":
        targets = _expected(datasets, seen_targets, paper_targets)
        targets = [t for t in targets if t not in sources]
    else:  # dg targets: the four ImageNet variants with --datasets all, else those seen
        all_dg = datasets and list(datasets) == ["all"]
        targets = list(DG_TARGETS) if all_dg else _order_datasets(seen_targets, DG_TARGETS)
    source = sources[0]
    table = {"seeds": seeds, "source": source, "targets": targets, "methods": {}}
    for m in methods:
        cols = {"source": Stat(expected=len(seeds))}
        cols.update({t: Stat(expected=len(seeds)) for t in targets})
        table["methods"][m] = {"cells": cols}
    counted = []
    for r in runs:
        if r.seed not in seeds:
            continue
        cols = table["methods"][names[(r.trainer, r.cfg, r.shots)]]["cells"]
        if r.role == "source" and r.dataset == source:
            cols["source"].values[r.seed] = r.accuracy
            counted.append(r)
        elif r.role == "target" and r.dataset in cols:
            cols[r.dataset].values[r.seed] = r.accuracy
            counted.append(r)
    table["flags"] = _flags(counted, names, methods)
    for m in methods:
        cols = table["methods"][m]["cells"]
        means = [cols[t].mean for t in targets]
        complete = bool(targets) and all(v is not None for v in means)
        table["methods"][m]["average"] = float(np.mean(means)) if complete else None
        table["methods"][m]["targets_missing"] = sum(v is None for v in means)
    return table


# --------------------------------------------------------------------------- rendering

def row_notes(t: dict, m: str) -> list:
    """What row ``m`` of table ``t`` must say about its runs: random weights; its epochs and shots
    when they differ within the table (shots only when the row name does not already say them)."""
    flags = t.get("flags") or {}
    f = flags.get("methods", {}).get(m)
    if not f or not f["runs"]:
        return []
    notes = []
    k, n = f["random_weight_runs"], f["runs"]
    if k:
        notes.append("random weights" if k == n else f"random weights in {k} of {n} runs")
    if len(flags.get("epochs", {})) > 1 and f["epochs"]:
        notes.append("/".join(map(str, f["epochs"])) + " ep")
    if len(flags.get("shots", {})) > 1 and f["shots"] and "shots" not in m:
        notes.append("/".join(map(str, f["shots"])) + " shots")
    differs = (t.get("protocol_mismatches") or {}).get("rows", {}).get(m)
    if differs:
        notes.append("≠ paper: " + ", ".join(differs))
    return notes


def row_label(t: dict, m: str) -> str:
    notes = row_notes(t, m)
    return f"{m} ({'; '.join(notes)})" if notes else m


def _counts(d: dict, unit: str) -> str:
    return ", ".join(f"{_plural(int(k), unit)} ({_plural(v, 'run')})" for k, v in d.items())


def caveat_lines(t: dict) -> list:
    """Sentences for the caveat block under a table's heading (empty when there is nothing to say)."""
    flags = t.get("flags") or {}
    lines = []
    k, n = flags.get("random_weight_runs", 0), flags.get("runs", 0)
    if k:
        who = f"all {n} runs" if k == n else f"{k} of {n} runs"
        lines.append(f"Random weights: {who} in this table used a randomly initialised CLIP backbone "
                     "(MODEL.BACKBONE.RANDOM_INIT True; the log says RANDOM WEIGHTS), so these accuracies say "
                     "nothing about the methods; rows marked (random weights).")
    if len(flags.get("epochs", {})) > 1:
        lines.append(f"Epochs differ within this table: {_counts(flags['epochs'], 'epoch')}; each row says "
                     "its own; compare only rows with equal epochs.")
    if len(flags.get("shots", {})) > 1:
        lines.append(f"Shots differ within this table: {_counts(flags['shots'], 'shot')}; each row says "
                     "its own; compare only rows with equal shots.")
    return lines


def with_protocol(tables: dict, paper) -> dict:
    """``tables`` with each table's ``protocol_mismatches`` (``repro.report.protocol``) when
    ``paper`` is given (shallow copies; the input is not changed)."""
    return {proto: dict(t, protocol_mismatches=protocol.all_mismatches(proto, t, paper))
            for proto, t in tables.items()}


def compare_lines(proto: str, t: dict, paper) -> list:
    """The ``--compare`` caption sentences of a table: coverage, protocol mismatches, unrecorded runs."""
    if paper is None:
        return []
    lines = [compare_note(proto, t, paper), protocol.caption(proto, t, paper), protocol.unknown_note(t)]
    return [x for x in lines if x]


def compare_note(proto: str, t: dict, paper) -> str | None:
    """With ``--compare``: a sentence when our average covers fewer datasets/targets than the paper's."""
    if paper is None or proto not in ("base2new", "xd", "dg"):
        return None
    if proto == "base2new":
        full, ours, what = BASE2NEW_DATASETS, t["datasets"], "datasets"
    else:
        full, ours, what = (XD_TARGETS if proto == "xd" else DG_TARGETS), t["targets"], "targets"
    if set(full) <= set(ours):
        return None
    covered = ", ".join(DATASET_TITLES.get(d, d) for d in ours) or "none"
    return (f"The published averages are over the paper's {len(full)} {what}; ours covers "
            f"{len(ours)} ({covered}), so the published numbers are shown for reference only and Δ is left out.")


def _quote(lines) -> str:
    return "".join(f"> {line}\n>\n" for line in lines).rstrip(">\n") + "\n" if lines else ""


def fmt_stat(s: Stat) -> str:
    if s.mean is None:
        return f"{DASH} ({s.missing} missing)"
    text = f"{s.mean:.2f} ± {s.std:.2f}"
    return text + (f" ({s.missing} missing)" if s.missing else "")


def fmt_num(v) -> str:
    return DASH if v is None else f"{v:.2f}"


def _paper(paper, proto, method, dataset=None):
    """Published entry for a row (method name or alias), or None."""
    if not paper or proto not in paper:
        return None
    block = paper[proto].get("average" if dataset is None else "per_dataset", {})
    if dataset is not None:
        block = block.get(dataset, {})
    base_name = method.split(" [")[0]
    for key, entry in block.items():
        if key.startswith("_"):
            continue
        names = {key.lower(), str(entry.get("paper_name", "")).lower()}
        try:
            names.add(get_method(key).trainer.lower())
        except KeyError:
            pass
        if base_name.lower() in names:
            return entry
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _diff(ours, theirs):
    if ours is None or theirs is None:
        return DASH
    return f"{ours - theirs:+.2f}"


def _md_table(headers, rows) -> str:
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _b2n_rows(proto_table, paper, dataset, published_only=False):
    rows = []
    for m, data in proto_table["methods"].items():
        if dataset is None:
            a = data["average"]
            miss = a["datasets_missing"]
            cells = [fmt_num(a["base"]) if a["base"] is not None
                     else f"{DASH} ({_plural(miss['base'], 'dataset')} missing)",
                     fmt_num(a["novel"]) if a["novel"] is not None
                     else f"{DASH} ({_plural(miss['novel'], 'dataset')} missing)",
                     fmt_num(a["hm"])]
            # a published average is compared only with an average over the same datasets
            comparable = set(BASE2NEW_DATASETS) <= set(proto_table["datasets"])
            vals = (a["base"], a["novel"], a["hm"]) if comparable else (None, None, None)
        else:
            c = data["datasets"][dataset]
            cells = [fmt_stat(c["base"]), fmt_stat(c["novel"]), fmt_num(c["hm"])]
            vals = (c["base"].mean, c["novel"].mean, c["hm"])
        row = [row_label(proto_table, m)] + cells
        if paper is not None:
            p = _paper(paper, "base2new", m, dataset)
            for key, v in zip(("base", "novel", "hm"), vals):
                pv = p.get(key) if p else None
                row += [fmt_num(pv), _diff(v, pv)]
        rows.append(row)
    if paper is not None and dataset is None and published_only:  # published rows of methods we did not run
        ours = {m.split(" [")[0].lower() for m in proto_table["methods"]}
        for key, entry in paper.get("base2new", {}).get("average", {}).items():
            if key.startswith("_"):
                continue
            aliases = {key.lower(), str(entry.get("paper_name", "")).lower()}
            try:
                aliases.add(get_method(key).trainer.lower())
            except KeyError:
                pass
            if aliases & ours:
                continue
            row = [f"{entry.get('paper_name', key)} (published only)", "n/a", "n/a", "n/a"]
            for k in ("base", "novel", "hm"):
                row += [fmt_num(entry.get(k)), DASH]
            rows.append(row)
    return rows


def _b2n_headers(paper):
    h = ["Method", "Base", "Novel", "HM"]
    if paper is not None:
        h += ["Base (paper)", "Δ Base", "Novel (paper)", "Δ Novel", "HM (paper)", "Δ HM"]
    return h


def _transfer_rows(proto, t, paper):
    rows = []
    for m, data in t["methods"].items():
        cells = data["cells"]
        avg = data["average"]
        row = [row_label(t, m), fmt_stat(cells["source"])] + [fmt_stat(cells[x]) for x in t["targets"]]
        if avg is not None:
            row.append(fmt_num(avg))
        else:
            row.append(f"{DASH} ({_plural(data['targets_missing'], 'target')} missing)" if t["targets"]
                       else f"{DASH} (no targets)")
        if paper is not None:
            p = _paper(paper, proto, m)
            pv = p.get("value") if p else None
            full = set(XD_TARGETS if proto == "xd" else DG_TARGETS) <= set(t["targets"])
            row += [fmt_num(pv), _diff(avg if full else None, pv)]
        rows.append(row)
    return rows


def render_markdown(tables: dict, paper=None, published_only: bool = False) -> str:
    """Markdown tables; with ``paper`` the published numbers, Δ and every protocol mismatch (row
    labels, captions); ``published_only``: also rows of published methods we did not run."""
    tables = with_protocol(tables, paper)
    out = []
    if "base2new" in tables:
        t = tables["base2new"]
        out.append(f"## Base-to-novel generalization (mean ± population std over seeds "
                   f"{', '.join(map(str, t['seeds']))}; HM of the means)\n")
        if caveat_lines(t):
            out.append(_quote(caveat_lines(t)))
        out.append(f"### Average over {_plural(len(t['datasets']), 'dataset')}\n")
        notes = compare_lines("base2new", t, paper)
        if notes:
            out.append(_quote(notes))
        out.append(_md_table(_b2n_headers(paper), _b2n_rows(t, paper, None, published_only)) + "\n")
        for d in t["datasets"]:
            out.append(f"### {DATASET_TITLES.get(d, d)}\n")
            out.append(_md_table(_b2n_headers(paper), _b2n_rows(t, paper, d)) + "\n")
    for proto, title in (("xd", "Cross-dataset transfer"), ("dg", "Domain generalization")):
        if proto not in tables:
            continue
        t = tables[proto]
        out.append(f"## {title} (source {DATASET_TITLES.get(t['source'], t['source'])}; mean ± population std "
                   f"over seeds {', '.join(map(str, t['seeds']))}; Average over targets)\n")
        extra = caveat_lines(t) + compare_lines(proto, t, paper)
        if extra:
            out.append(_quote(extra))
        headers = ["Method", DATASET_TITLES.get(t["source"], t["source"]) + " (source)"] + \
                  [DATASET_TITLES.get(x, x) for x in t["targets"]] + ["Average"]
        if paper is not None:
            headers += ["Average (paper)", "Δ Average"]
        out.append(_md_table(headers, _transfer_rows(proto, t, paper)) + "\n")
    if "fewshot" in tables:
        t = tables["fewshot"]
        out.append(fewshot_table.markdown(t, fmt_stat, fmt_num, _md_table, row_label, _quote,
                                          caveat_lines(t) + compare_lines("fewshot", t, paper)))
    if not out:
        return "No finished runs found.\n"
    return "\n".join(out)


def to_json(tables: dict, paper=None) -> dict:
    """Plain JSON-able structure (Stat -> dict; None for missing values); with ``paper`` each table
    has ``protocol_mismatches`` (``{"table": [...], "rows": {row: [...]}}``)."""
    tables = with_protocol(tables, paper)
    def conv(x):
        if isinstance(x, Stat):
            return x.to_json()
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        return x
    data = conv(tables)
    for proto, t in data.items():
        t["caveats"] = caveat_lines(t) + compare_lines(proto, t, paper)
    if paper is not None:
        for proto, t in data.items():
            for m in t["methods"]:
                p = _paper(paper, proto, m)
                if p is not None:
                    t["methods"][m]["paper"] = {k: v for k, v in p.items()}
    return data


def render_json(tables: dict, paper=None, published_only: bool = False) -> str:
    return json.dumps(to_json(tables, paper), indent=2, ensure_ascii=False) + "\n"


def render_csv(tables: dict, paper=None, published_only: bool = False) -> str:
    """Long format: protocol,method,dataset,metric,mean,std,n,missing,paper,diff,flags (dataset 'average');
    ``flags``: the row's notes (random weights, epochs, shots) and, on average rows, the compare note."""
    tables = with_protocol(tables, paper)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["protocol", "method", "dataset", "metric", "mean", "std", "n", "missing", "paper", "diff", "flags"])

    class _Writer:  # appends the row's flags column
        table, method, note, lines = None, None, None, []

        def writerow(self, row):
            notes = row_notes(self.table, self.method)
            if row[2] == "average" and self.lines:
                notes = notes + self.lines
            out.writerow(list(row) + ["; ".join(notes)])

    w = _Writer()

    def num(v):
        return "" if v is None else f"{v:.4f}"

    if "base2new" in tables:
        t = tables["base2new"]
        w.table, w.note, w.lines = t, compare_note("base2new", t, paper), compare_lines("base2new", t, paper)
        for m, data in t["methods"].items():
            w.method = m
            for d in t["datasets"]:
                c = data["datasets"][d]
                for key in ("base", "novel"):
                    s = c[key]
                    w.writerow(["base2new", m, d, key, num(s.mean), num(s.std), s.n, s.missing, "", ""])
                w.writerow(["base2new", m, d, "hm", num(c["hm"]), "", "", "", "", ""])
            a = data["average"]
            p = _paper(paper, "base2new", m) if paper is not None else None
            for key in ("base", "novel", "hm"):
                pv = p.get(key) if p else None
                miss = a["datasets_missing"].get(key, "") if key != "hm" else ""
                w.writerow(["base2new", m, "average", key, num(a[key]), "", "", miss, num(pv),
                            "" if a[key] is None or pv is None or w.note else f"{a[key] - pv:+.4f}"])
    for proto in ("xd", "dg"):
        if proto not in tables:
            continue
        t = tables[proto]
        w.table, w.note, w.lines = t, compare_note(proto, t, paper), compare_lines(proto, t, paper)
        for m, data in t["methods"].items():
            w.method = m
            for col in ["source"] + t["targets"]:
                s = data["cells"][col]
                name = t["source"] if col == "source" else col
                w.writerow([proto, m, name, "source" if col == "source" else "target", num(s.mean), num(s.std),
                            s.n, s.missing, "", ""])
            p = _paper(paper, proto, m) if paper is not None else None
            pv = p.get("value") if p else None
            avg = data["average"]
            w.writerow([proto, m, "average", "target_average", num(avg), "", "", data["targets_missing"], num(pv),
                        "" if avg is None or pv is None or w.note else f"{avg - pv:+.4f}"])
    if "fewshot" in tables:
        w.table, w.note, w.lines = tables["fewshot"], None, []
        for m, row in fewshot_table.csv_rows(tables["fewshot"], num):
            w.method = m
            w.writerow(row)
    return buf.getvalue()


RENDERERS = {"md": render_markdown, "csv": render_csv, "json": render_json}
