"""PNG figures of the base-to-novel and few-shot tables (matplotlib, Agg backend, no display needed).

* ``base_vs_novel_<method>.png``: one point per dataset (x = mean base, y = mean novel accuracy,
  labelled with both), the average as a star, and the line base = novel;
* ``base_vs_novel_all.png``: every method in one figure (a colour each; datasets as small marks,
  the average as a large star whose legend entry gives base / novel / HM);
* ``hm_per_dataset.png``: grouped bars, HM per dataset (and the Average) for every method, each bar
  labelled with its value;
* ``fewshot_accuracy.png``: CoOp's figure, one panel per dataset plus the Average, accuracy (mean over
  seeds) vs shots per class for every method, shots on an evenly spaced axis (0 = zero-shot CLIP,
  drawn as a star).
Cells without a value are left out of the figure (never drawn as 0). Every title carries the
caveats of its table (:func:`caveat_text`: backbone, random weights, shots, epochs, seeds and, with
``--compare``, "not the published protocol").
"""
from __future__ import annotations

import os
import re

from repro.methods import DATASET_TITLES
from repro.report import protocol


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def caveat_text(t: dict, paper=None, proto: str = "base2new") -> str:
    """What a figure's title must say about the runs of table ``t``: backbone(s), random weights,
    shots, epochs, seeds and, with ``paper`` (``--compare``), the protocol mismatches
    (``repro.report.protocol``); '' when there is nothing to say."""
    flags = t.get("flags") or {}
    rows = flags.get("methods", {}).values()
    parts = []
    backbones = sorted({b for f in rows for b in f.get("backbones", [])})
    if backbones:
        parts.append("/".join(backbones))
    k, n = flags.get("random_weight_runs", 0), flags.get("runs", 0)
    if k:
        parts.append("RANDOM WEIGHTS" if k == n else f"random weights in {k} of {n} runs")
    shots = sorted({int(x) for x in flags.get("shots", {})})
    if shots:
        parts.append("/".join(map(str, shots)) + " shots")
    epochs = sorted({int(x) for x in flags.get("epochs", {})})
    if epochs:
        parts.append("/".join(map(str, epochs)) + " ep")
    seeds = t.get("seeds") or []
    if seeds:
        parts.append(f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}")
    if paper is not None:
        if protocol.all_mismatches(proto, t, paper)["rows"] or protocol.table_mismatches(proto, t, paper):
            parts.append("not the published protocol")
    return "; ".join(parts)


def _title(ax_or_fig, text: str, caveats: str, **kw):
    """Set a title with the caveats on a second, smaller line."""
    full = text + (f"\n({caveats})" if caveats else "")
    if hasattr(ax_or_fig, "suptitle"):
        ax_or_fig.suptitle(full, **kw)
    else:
        ax_or_fig.set_title(full, **kw)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")


def write_plots(tables: dict, out_dir: str, paper=None) -> list:
    """Write the figures for ``tables["base2new"]`` and ``tables["fewshot"]`` into ``out_dir``;
    returns the file paths. With ``paper`` (``--compare``) the titles name the protocol mismatches."""
    paths = _base2new_plots(tables.get("base2new"), out_dir, paper)
    if tables.get("fewshot"):
        paths.append(_fewshot_plot(tables["fewshot"], out_dir, paper))
    return paths


def _save(fig, path: str) -> str:
    """Write ``fig`` as PNG through ``engine.utils.io`` (temp file + rename)."""
    import io

    from engine.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _fewshot_plot(t: dict, out_dir: str, paper=None) -> str:
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
    _title(fig, "Few-shot classification (mean over seeds)", caveat_text(t, paper, "fewshot"), fontsize=10)
    fig.tight_layout()
    path = _save(fig, os.path.join(out_dir, "fewshot_accuracy.png"))
    plt.close(fig)
    return path


def _base2new_plots(t, out_dir: str, paper=None) -> list:
    if not t:
        return []
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    caveats = caveat_text(t, paper)
    paths = []
    for m, data in t["methods"].items():
        pts = _b2n_points(data)
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 5.2))
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=30)
        for d, b, n in pts:
            ax.annotate(f"{DATASET_TITLES.get(d, d)} ({b:.1f}, {n:.1f})", (b, n), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        avg = data["average"]
        if avg["base"] is not None and avg["novel"] is not None:
            ax.scatter([avg["base"]], [avg["novel"]], marker="*", s=160, color="red",
                       label=f"Average ({avg['base']:.1f}, {avg['novel']:.1f})")
            ax.legend(loc="lower right", fontsize=8)
        _diagonal(ax, [(p[1], p[2]) for p in pts])
        ax.set_xlabel("Base accuracy (%)")
        ax.set_ylabel("Novel accuracy (%)")
        _title(ax, f"{m}: base vs novel (mean over seeds)", caveats, fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"base_vs_novel_{_safe(m)}.png")
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    path = _base_vs_novel_all(t, out_dir, caveats)
    if path:
        paths.append(path)
    methods = list(t["methods"])
    cols = list(t["datasets"]) + ["average"]
    if methods:
        width = 0.8 / len(methods)
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cols) * max(1, len(methods) / 2) + 2), 4.8))
        top = 0.0
        for i, m in enumerate(methods):
            data = t["methods"][m]
            xs, ys = [], []
            for j, d in enumerate(cols):
                v = data["average"]["hm"] if d == "average" else data["datasets"][d]["hm"]
                if v is not None:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(v)
            bars = ax.bar(xs, ys, width=width, label=m)
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in ys], fontsize=7, padding=2)
            top = max([top] + ys)
        ax.set_ylim(0, min(100.0, top * 1.15 + 1))
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([("Average" if d == "average" else DATASET_TITLES.get(d, d)) for d in cols],
                           rotation=35 if len(cols) > 4 else 0, ha="right" if len(cols) > 4 else "center",
                           fontsize=8)
        ax.set_ylabel("HM of base and novel accuracy (%)")
        _title(ax, "Base-to-novel harmonic mean per dataset", caveats, fontsize=9)
        ax.legend(fontsize=8, ncol=min(len(methods), 4))
        fig.tight_layout()
        path = os.path.join(out_dir, "hm_per_dataset.png")
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _b2n_points(data) -> list:
    return [(d, c["base"].mean, c["novel"].mean) for d, c in data["datasets"].items()
            if c["base"].mean is not None and c["novel"].mean is not None]


def _diagonal(ax, xy) -> None:
    """Square axes around the points (5 points of margin, within 0-100) and the line base = novel."""
    lo = max(0.0, min(min(x, y) for x, y in xy) - 5)
    hi = min(100.0, max(max(x, y) for x, y in xy) + 5)
    ax.plot([lo, hi], [lo, hi], "--", color="gray", linewidth=0.8, label="base = novel")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.grid(alpha=0.3)


def _base_vs_novel_all(t, out_dir: str, caveats: str):
    """``base_vs_novel_all.png``: every method in one figure, one colour each; small markers per
    dataset, a large star (labelled with its values) for the method's average."""
    plt = _plt()
    methods = [(m, data, _b2n_points(data)) for m, data in t["methods"].items()]
    methods = [x for x in methods if x[2]]
    if not methods:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 6))
    xy = []
    markers = "osD^vP"
    for i, (m, data, pts) in enumerate(methods):
        colour = f"C{i % 10}"
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=22, color=colour, alpha=0.45,
                   marker=markers[i % len(markers)])
        xy += [(p[1], p[2]) for p in pts]
        avg = data["average"]
        if avg["base"] is not None and avg["novel"] is not None:
            ax.scatter([avg["base"]], [avg["novel"]], marker="*", s=220, color=colour, edgecolor="black",
                       linewidth=0.6, label=f"{m}: {avg['base']:.1f} / {avg['novel']:.1f} (HM {avg['hm']:.1f})")
            xy.append((avg["base"], avg["novel"]))
        else:
            ax.scatter([], [], color=colour, marker=markers[i % len(markers)], label=f"{m} (no average)")
    _diagonal(ax, xy)
    ax.set_xlabel("Base accuracy (%)")
    ax.set_ylabel("Novel accuracy (%)")
    ax.legend(fontsize=7, loc="lower right", title="average base / novel; small marks: datasets",
              title_fontsize=7)
    _title(ax, f"Base vs novel, all methods ({len(t['datasets'])} dataset{'s' if len(t['datasets']) != 1 else ''})",
           caveats, fontsize=9)
    fig.tight_layout()
    path = _save(fig, os.path.join(out_dir, "base_vs_novel_all.png"))
    plt.close(fig)
    return path
