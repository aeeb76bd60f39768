"""Training curves per dataset and method: loss and accuracy against epochs, seeds overlaid (PNG).

For every training run folder under an output root (layouts of ``repro.report.collect.classify``;
runs whose log has no iteration lines, e.g. zero-shot, have no curves), one figure per (protocol,
dataset, method, config, shots), named
``curves_<protocol>_<dataset>_<trainer>_<cfg>_<K>shots.png`` (layout: :func:`write_curves`):

* one panel per loss term: the iteration lines of ``log.txt`` (``epoch [e/E] batch [b/B] ... loss v (avg) ...``)
  at x = e - 1 + b / B, y = the epoch's running average (what TensorBoard's ``train/<name>`` holds);
  every loss term the log prints (``loss``, ``loss_kd``, ...) on its own axis; meters named ``acc*``
  (training accuracy) go to the accuracy panel. A resumed run's repeated lines replace the earlier ones.
* accuracy (%): ``val/accuracy`` and ``test/accuracy`` of the run's TensorBoard events
  (``OUTPUT_DIR/tensorboard``; steps converted to epochs), or, without events (or the
  tensorboard package), the log's result blocks (a ``*val*`` block at the epoch of the lines before
  it, the final ``*test*`` block at the last epoch); for base-to-novel also the novel accuracy of the
  matching ``test_new`` run, at the epoch it loaded.
"""
from __future__ import annotations

import os
import re

from repro.report.collect import classify
from engine.runs.logparse import log_files, parse_lines, read_run_result, run_facts
from engine.runs.record import read_record
from engine.runs.run_metrics import read_metrics
from repro.methods import DATASET_TITLES
from repro.report.plots import _plt, _safe, _save

_ITER = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] (.*)$")
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_METER = re.compile(r"(\w+) (" + _NUM + r") \((" + _NUM + r")\)")
_NOT_LOSS = ("time", "data")
_EVAL = re.compile(r"^Evaluate on the \*(\w+)\* set$")


def _lines(run_dir: str) -> list:
    out = []
    for path in log_files(run_dir):
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            out.extend(ln.rstrip("\n") for ln in f)
    return out


def loss_curves(lines) -> dict:
    """``{loss name: [(epoch, running average), ...]}`` from Dassl iteration lines, sorted by epoch."""
    curves: dict = {}
    for line in lines:
        m = _ITER.match(line.strip())
        if not m:
            continue
        e, b, nb = int(m.group(1)), int(m.group(3)), int(m.group(4))
        x = e - 1 + b / max(nb, 1)
        for name, _, avg in _METER.findall(m.group(5)):
            if name not in _NOT_LOSS:
                curves.setdefault(name, {})[x] = float(avg)
    return {k: sorted(v.items()) for k, v in curves.items()}


def log_accuracy(lines) -> dict:
    """``{"val": [(epoch, acc)], "test": [(epoch, acc)]}`` from the log's result blocks; the epoch is
    the one of the last iteration line before the block."""
    summary = parse_lines(lines)
    by_line = {b.line: b for b in summary.blocks}
    out: dict = {}
    epoch, split = 0, None
    for i, raw in enumerate(lines):
        line = raw.strip()
        m = _ITER.match(line)
        if m:
            epoch = int(m.group(1))
            continue
        m = _EVAL.match(line)
        if m:
            split = m.group(1)
            continue
        block = by_line.get(i)
        if block is not None and split and block.accuracy is not None:
            out.setdefault(split, {})[epoch] = block.accuracy
            split = None
    return {k: sorted(v.items()) for k, v in out.items()}


def event_accuracy(tb_dir: str) -> dict:
    """``{"val": [(epoch, acc)], "test": [...]}`` from TensorBoard events; ``{}`` without events or
    without the tensorboard package. Steps are training steps done (``train/epoch`` gives the steps
    per epoch); events of older runs without ``train/epoch`` were stepped by 0-based epoch."""
    if not os.path.isdir(tb_dir):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    per_epoch = None
    if "train/epoch" in tags:
        pairs = [(e.step, e.value) for e in acc.Scalars("train/epoch") if e.value > 0]
        if pairs:
            per_epoch = pairs[-1][0] / pairs[-1][1]

    def epoch_of(step):
        return step + 1 if per_epoch is None else round(step / per_epoch, 3)

    out = {}
    for tag in tags:
        split, _, name = tag.partition("/")
        if name == "accuracy" and split in ("val", "test"):
            points = {epoch_of(e.step): e.value for e in acc.Scalars(tag)}  # later writes of an epoch win
            out[split] = sorted(points.items())
    return out


def split_meters(curves: dict) -> tuple:
    """``(loss terms, accuracy meters)`` of :func:`loss_curves`: meters named ``acc*`` (the training
    accuracy CoOp-style trainers print) are accuracies in %, never drawn on a loss axis."""
    accs = {k: v for k, v in curves.items() if k.startswith("acc")}
    return {k: v for k, v in curves.items() if k not in accs}, accs


def max_epoch(lines):
    """``E`` of the log's ``epoch [e/E]`` lines (None without them)."""
    for line in reversed(lines):
        m = _ITER.match(line.strip())
        if m:
            return int(m.group(2))
    return None


def run_caveats(run_dirs) -> str:
    """What the runs' ``metrics.json`` / ``run_record.json`` say about how they ran (backbone, random
    weights), for the figure title; '' when they do not say."""
    backbones, random_w = set(), False
    for d in run_dirs:
        m = read_metrics(d) or {}
        settings = (read_record(d).get("train") or {}).get("settings") or {}
        bb = m.get("backbone") or settings.get("MODEL.BACKBONE.NAME")
        if bb:
            backbones.add(bb)
        random_w |= bool(m.get("random_init") or settings.get("MODEL.BACKBONE.RANDOM_INIT"))
    parts = sorted(backbones) + (["RANDOM WEIGHTS (accuracies meaningless)"] if random_w else [])
    return "; ".join(parts)


def find_runs(root: str) -> dict:
    """``{(protocol, dataset, trainer, cfg, shots): {seed: {"dir", "novel": (epoch, acc) | None}}}`` for
    every training run under ``root`` (finished or not)."""
    groups: dict = {}
    novel: dict = {}
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        if not log_files(dirpath):
            continue
        info = classify(os.path.relpath(dirpath, root).replace(os.sep, "/").split("/"))
        if info is None:
            continue
        protocol, role, trainer, cfg, shots, dataset, seed, kind, folder = info
        key = (protocol, dataset, trainer, cfg, shots)
        if kind == "train":
            groups.setdefault(key, {}).setdefault(seed, {"dir": dirpath, "novel": None})
        elif folder == "test_new":
            block, path = read_run_result(dirpath, "eval")
            if block is not None:
                novel[(key, seed)] = (run_facts(path, block.line).epochs, block.accuracy)
    for (key, seed), point in novel.items():
        if seed in groups.get(key, {}):
            groups[key][seed]["novel"] = point
    return groups


SEED_STYLES = ("-", "--", ":", "-.")
SEED_MARKERS = ("o", "s", "^", "D", "v", "P")


def _seed_style(i: int) -> dict:
    """Colour, line style and marker of the i-th seed: distinguishable in colour and in grey."""
    return {"color": f"C{i % 10}", "linestyle": SEED_STYLES[i % len(SEED_STYLES)],
            "marker": SEED_MARKERS[i % len(SEED_MARKERS)]}


def write_curves(root: str, out_dir: str) -> list:
    """Write one PNG per training group under ``root`` into ``out_dir``; returns the file paths.

    Panels: one per loss term (its own y axis: a small term such as CoMMA's ``loss_kd`` stays
    readable beside the total), then accuracy (%): training accuracy when the log prints it, val
    (line), test (filled marker) and novel (open triangle) per seed. Seeds differ in colour, line
    style and marker; the x axis spans 0 to the run's epochs (short runs get markers on every
    point; the seeds' test and novel points sit side by side at their epoch); the title names the
    backbone, random weights, shots and seeds."""
    groups = find_runs(root)
    if not groups:
        return []
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for key in sorted(groups):
        path = _group_figure(plt, key, groups[key], out_dir)
        if path:
            paths.append(path)
    return paths


def _group_figure(plt, key, seeds: dict, out_dir: str):
    protocol, dataset, trainer, cfg, shots = key
    data = {}
    for seed in sorted(seeds):
        run = seeds[seed]
        lines = _lines(run["dir"])
        losses, train_acc = split_meters(loss_curves(lines))
        if not losses:
            continue  # runs without iteration lines (zero-shot) have no curves
        evals = event_accuracy(os.path.join(run["dir"], "tensorboard")) or log_accuracy(lines)
        data[seed] = {"losses": losses, "train_acc": train_acc, "evals": evals, "novel": run["novel"],
                      "epochs": max_epoch(lines), "dir": run["dir"]}
    if not data:
        return None
    terms = sorted({n for d in data.values() for n in d["losses"]}, key=lambda n: (n != "loss", n))
    epochs = max([d["epochs"] or 1 for d in data.values()])
    short = epochs <= 3
    panels = len(terms) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.9), squeeze=False)
    axes = list(axes.flat)
    acc_ax = axes[-1]
    acc_values = []
    n_seeds = len(data)
    for i, seed in enumerate(sorted(data)):
        st = _seed_style(i)
        d = data[seed]
        nudge = 0.015 * max(epochs, 1) * (i - (n_seeds - 1) / 2)  # seeds' end points side by side, not on top
        for ax, term in zip(axes, terms):
            if term in d["losses"]:
                xs, ys = zip(*d["losses"][term])
                ax.plot(xs, ys, color=st["color"], linestyle=st["linestyle"], linewidth=1.4,
                        marker=st["marker"] if short or len(xs) < 12 else None, markersize=4,
                        markevery=None if short else max(1, len(xs) // 8), label=f"seed {seed}")
        for name, points in d["train_acc"].items():
            xs, ys = zip(*points)
            acc_values += ys
            acc_ax.plot(xs, ys, color=st["color"], linestyle=st["linestyle"], linewidth=0.9, alpha=0.6,
                        label=f"seed {seed} train {name}")
        base = "base " if protocol == "base2new" else ""
        if d["evals"].get("val"):
            xs, ys = zip(*d["evals"]["val"])
            acc_values += ys
            acc_ax.plot(xs, ys, color=st["color"], linestyle=st["linestyle"], marker=st["marker"], markersize=4,
                        label=f"seed {seed} {base}val")
        if d["evals"].get("test"):
            xs, ys = zip(*d["evals"]["test"])
            acc_values += ys
            acc_ax.plot([x + nudge for x in xs], ys, color=st["color"], linestyle="none", marker=st["marker"],
                        markersize=8,
                        markeredgecolor="black", label=f"seed {seed} {base}test {ys[-1]:.1f}")
        if d["novel"] is not None and d["novel"][0] is not None:
            acc_values.append(d["novel"][1])
            acc_ax.plot([d["novel"][0] + nudge], [d["novel"][1]], color=st["color"], linestyle="none", marker="^",
                        markersize=9, markerfacecolor="none", markeredgewidth=1.6,
                        label=f"seed {seed} novel {d['novel'][1]:.1f}")
    margin = max(0.05 * epochs, 0.1)
    for ax, term in zip(axes, terms):
        ax.set_title("total loss" if term == "loss" else f"loss term {term}", fontsize=9)
        ax.set_ylabel(f"{term} (epoch running average)", fontsize=8)
    for ax in axes:
        ax.set_xlim(-margin if ax is acc_ax else 0, epochs + margin)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        if short:
            ax.set_xticks([x / 4 for x in range(0, 4 * epochs + 1)] if epochs <= 1 else range(0, epochs + 1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5)
    acc_ax.set_title("accuracy", fontsize=9)
    acc_ax.set_ylabel("accuracy (%)", fontsize=8)
    if acc_values:
        lo, hi = min(acc_values), max(acc_values)
        pad = max(2.0, 0.1 * (hi - lo))
        acc_ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    caveats = "; ".join(x for x in [run_caveats([d["dir"] for d in data.values()]), f"{shots} shots",
                                    f"{epochs} ep", f"{len(data)} seed{'s' if len(data) != 1 else ''}"] if x)
    fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)} ({protocol}): {trainer} {cfg}\n({caveats})", fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir, _safe(f"curves_{protocol}_{dataset}_{trainer}_{cfg}_{shots}shots") + ".png")
    _save(fig, path)
    plt.close(fig)
    return path
