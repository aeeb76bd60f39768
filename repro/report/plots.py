"""PNG figures of the base-to-novel and few-shot tables (matplotlib, Agg backend, no display needed).

* ``base_vs_novel_<method>.png``: one point per dataset (x = mean base, y = mean novel accuracy),
  the average as a star, and the line base = novel;
* ``hm_per_dataset.png``: grouped bars, HM per dataset (and the Average) for every method;
* ``fewshot_accuracy.png``: CoOp's figure, one panel per dataset plus the Average, accuracy (mean over
  seeds) vs shots per class for every method, shots on an evenly spaced axis (0 = zero-shot CLIP,
  drawn as a star).
Cells without a value are left out of the figure (never drawn as 0).
"""
from __future__ import annotations

import os
import re

from repro.methods import DATASET_TITLES


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")


def write_plots(tables: dict, out_dir: str, paper=None) -> list:
    """Write the figures for ``tables["base2new"]`` and ``tables["fewshot"]`` into ``out_dir``;
    returns the file paths. With ``paper`` (``--compare``) the titles name the protocol mismatches."""
    paths = _base2new_plots(tables.get("base2new"), out_dir)
    if tables.get("fewshot"):
        paths.append(_fewshot_plot(tables["fewshot"], out_dir))
    return paths


def _save(fig, path: str) -> str:
    """Write ``fig`` as PNG through ``engine.utils.io`` (temp file + rename)."""
    import io

    from engine.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _fewshot_plot(t: dict, out_dir: str) -> str:
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    shots = list(t["shots"])
    pos = {k: i for i, k in enumerate(shots)}
    panels = [("average", "Average")] + [(d, DATASET_TITLES.get(d, d)) for d in t["datasets"]]
    ncol = min(4, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, (d, title) in zip(axes.flat, panels):
        for m, data in t["methods"].items():
            pts = []
            for k in shots:
                if d == "average":
                    v = data["average"][str(k)]
                else:
                    v = data["datasets"][d][str(k)].mean
                if v is not None:
                    pts.append((pos[k], v))
            if not pts:
                continue
            if len(pts) == 1 and shots[pts[0][0]] == 0:
                ax.scatter([pts[0][0]], [pts[0][1]], marker="*", s=120, color="black", label=m)
            else:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=m)
        ax.set_xticks(range(len(shots)))
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("shots per class", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Few-shot classification (mean over seeds)", fontsize=10)
    fig.tight_layout()
    path = _save(fig, os.path.join(out_dir, "fewshot_accuracy.png"))
    plt.close(fig)
    return path


def _base2new_plots(t, out_dir: str) -> list:
    if not t:
        return []
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for m, data in t["methods"].items():
        pts = [(d, c["base"].mean, c["novel"].mean) for d, c in data["datasets"].items()
               if c["base"].mean is not None and c["novel"].mean is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=30)
        for d, b, n in pts:
            ax.annotate(DATASET_TITLES.get(d, d), (b, n), fontsize=7, xytext=(3, 3), textcoords="offset points")
        avg = data["average"]
        if avg["base"] is not None and avg["novel"] is not None:
            ax.scatter([avg["base"]], [avg["novel"]], marker="*", s=160, color="red", label="Average")
            ax.legend(loc="lower right")
        lo = min(min(p[1], p[2]) for p in pts) - 5
        hi = max(max(p[1], p[2]) for p in pts) + 5
        ax.plot([lo, hi], [lo, hi], "--", color="gray", linewidth=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("Base accuracy (%)")
        ax.set_ylabel("Novel accuracy (%)")
        ax.set_title(f"{m}: base vs novel (mean over seeds)")
        fig.tight_layout()
        path = os.path.join(out_dir, f"base_vs_novel_{_safe(m)}.png")
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    methods = list(t["methods"])
    cols = list(t["datasets"]) + ["average"]
    if methods:
        width = 0.8 / len(methods)
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cols) + 2), 4.5))
        for i, m in enumerate(methods):
            data = t["methods"][m]
            xs, ys = [], []
            for j, d in enumerate(cols):
                v = data["average"]["hm"] if d == "average" else data["datasets"][d]["hm"]
                if v is not None:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(v)
            ax.bar(xs, ys, width=width, label=m)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([("Average" if d == "average" else DATASET_TITLES.get(d, d)) for d in cols],
                           rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("HM (%)")
        ax.set_title("Base-to-novel harmonic mean per dataset")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "hm_per_dataset.png")
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths
