"""Training curves per dataset and method: loss and accuracy against epochs, seeds overlaid (PNG).

For every training run folder under an output root (layouts of ``repro.report.collect.classify``;
runs whose log has no iteration lines, e.g. zero-shot, have no curves), one figure per (protocol,
dataset, method, config, shots), named
``curves_<protocol>_<dataset>_<trainer>_<cfg>_<K>shots.png``, with two panels:

* loss: the iteration lines of ``log.txt`` (``epoch [e/E] batch [b/B] ... loss v (avg) ...``) at
  x = e - 1 + b / B, y = the epoch's running average (what TensorBoard's ``train/<name>`` holds); every
  loss term the log prints (``loss``, ``loss_kd``, ...), the total solid, the terms dashed. A resumed
  run's repeated lines replace the earlier ones.
* accuracy (%): ``val/accuracy`` and ``test/accuracy`` of the run's TensorBoard events
  (``OUTPUT_DIR/tensorboard``; step = 0-based epoch, drawn at step + 1), or, without events (or the
  tensorboard package), the log's result blocks (a ``*val*`` block at the epoch of the lines before
  it, the final ``*test*`` block at the last epoch); for base-to-novel also the novel accuracy of the
  matching ``test_new`` run, at the epoch it loaded.
"""
from __future__ import annotations

import os
import re

from repro.report.collect import classify
from engine.runs.logparse import log_files, parse_lines, read_run_result, run_facts
from repro.methods import DATASET_TITLES
from repro.report.plots import _plt, _safe

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
    """``{"val": [(epoch, acc)], "test": [...]}`` from TensorBoard events (``<split>/accuracy`` at
    step = 0-based epoch); ``{}`` without events or without the tensorboard package."""
    if not os.path.isdir(tb_dir):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        split, _, name = tag.partition("/")
        if name == "accuracy" and split in ("val", "test"):
            points = {e.step + 1: e.value for e in acc.Scalars(tag)}  # later writes of an epoch win
            out[split] = sorted(points.items())
    return out


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


def write_curves(root: str, out_dir: str) -> list:
    """Write one PNG per training group under ``root`` into ``out_dir``; returns the file paths."""
    groups = find_runs(root)
    if not groups:
        return []
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for key in sorted(groups):
        protocol, dataset, trainer, cfg, shots = key
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
        drawn = False  # a figure needs a loss curve: runs without iteration lines are not drawn
        for i, seed in enumerate(sorted(groups[key])):
            run = groups[key][seed]
            colour = f"C{i % 10}"
            lines = _lines(run["dir"])
            losses = loss_curves(lines)
            for name in sorted(losses, key=lambda n: (n != "loss", n)):
                xs, ys = zip(*losses[name])
                ax_loss.plot(xs, ys, color=colour, linestyle="-" if name == "loss" else "--",
                             label=f"seed {seed} {name}")
                drawn = True
            if not losses:
                continue
            accs = event_accuracy(os.path.join(run["dir"], "tensorboard")) or log_accuracy(lines)
            for split, marker in (("val", "."), ("test", "o")):
                if accs.get(split):
                    xs, ys = zip(*accs[split])
                    style = "-" if split == "val" and len(xs) > 1 else "none"
                    ax_acc.plot(xs, ys, color=colour, linestyle=style, marker=marker,
                                label=f"seed {seed} {'base ' if protocol == 'base2new' else ''}{split}")
            if run["novel"] is not None and run["novel"][0] is not None:
                ax_acc.plot([run["novel"][0]], [run["novel"][1]], color=colour, linestyle="none", marker="^",
                            label=f"seed {seed} novel")
        if not drawn:
            plt.close(fig)
            continue
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss (epoch running average)")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        for ax in (ax_loss, ax_acc):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)} ({protocol}): {trainer} {cfg}, {shots} shots")
        fig.tight_layout()
        path = os.path.join(out_dir, _safe(f"curves_{protocol}_{dataset}_{trainer}_{cfg}_{shots}shots") + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
