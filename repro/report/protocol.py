"""Where our runs differ from the published protocol that ``--compare`` numbers were measured with.

The published protocol (``_protocol`` of the ``--compare`` file, else :data:`PUBLISHED`): backbone
ViT-B/16 with its official (OpenAI) weights, 16 shots, 3 seeds, every dataset of the paper's table,
and per method the epochs of its official config (``OPTIM.MAX_EPOCH`` of the base-to-novel / xd
config in ``configs/trainers``) and its official precision (``MethodSpec.prec``).

:func:`row_mismatches` lists, for one table row, each property whose runs differ (backbone, weights,
shots, epochs, precision actually run); :func:`table_mismatches` the table-wide ones (seeds,
datasets); a property a run did not record (older logs) is counted in :func:`unknown_note`, never
guessed. The renderers put the row list into the row label (``≠ paper: ...``), all of it into the
caption and the JSON (``protocol_mismatches``), and the figures into their titles.
"""
from __future__ import annotations

import functools
import os

from repro.methods import BASE2NEW_DATASETS, DG_TARGETS, XD_TARGETS, get_method
from repro.plan import PlanError, resolve_config_dir, resolve_max_epoch

PUBLISHED = {"backbone": "ViT-B/16", "weights": "official", "shots": 16, "seeds": 3}
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def published(paper) -> dict:
    """The published protocol: :data:`PUBLISHED` updated with the ``_protocol`` entry of ``paper``."""
    out = dict(PUBLISHED)
    if isinstance(paper, dict) and isinstance(paper.get("_protocol"), dict):
        out.update({k: v for k, v in paper["_protocol"].items() if not k.startswith("_")})
    return out


@functools.lru_cache(maxsize=None)
def official_epochs(method: str, proto: str):
    """``OPTIM.MAX_EPOCH`` of ``method``'s official config for ``proto`` (None when unknown)."""
    try:
        spec = get_method(method)
    except KeyError:
        return None
    if spec.zero_shot:
        return None
    cfg = spec.b2n_cfg if proto == "base2new" else spec.xd_cfg
    path = os.path.join(resolve_config_dir(_REPO, spec.config_dir), f"{cfg}.yaml")
    try:
        return resolve_max_epoch(path, [])
    except PlanError:
        return None


def official_prec(method: str):
    try:
        spec = get_method(method)
    except KeyError:
        return None
    return None if spec.zero_shot else spec.prec


def _fmt(values) -> str:
    return "/".join(str(v) for v in sorted(values, key=str))


def row_mismatches(proto: str, row: str, f: dict, paper) -> list:
    """Short phrases for row ``row`` (flags ``f`` of ``tables._flags``) that differ from the protocol."""
    if not f or not f.get("runs"):
        return []
    p = published(paper)
    method = row.split(" [")[0]
    out = []
    backbones = set(f.get("backbones", [])) - {None}
    if backbones and backbones != {p["backbone"]}:
        out.append(f"backbone {_fmt(backbones)} (paper {p['backbone']})")
    weights = set(f.get("weights", [])) - {None}
    if weights and weights != {p["weights"]}:
        out.append(f"weights {_fmt(weights)} (paper {p['weights']})")
    if proto != "fewshot" and f.get("shots") and set(f["shots"]) != {p["shots"]}:
        out.append(f"{_fmt(f['shots'])} shots (paper {p['shots']})")
    ep = official_epochs(method, "base2new" if proto == "base2new" else "xd") if proto != "fewshot" else None
    if ep is not None and f.get("epochs") and set(f["epochs"]) != {ep}:
        out.append(f"{_fmt(f['epochs'])} ep (paper {ep})")
    prec = official_prec(method)
    precs = set(f.get("precs", [])) - {None}
    if prec is not None and precs and precs != {prec}:
        out.append(f"{_fmt(precs)} (paper {prec})")
    return out


def table_mismatches(proto: str, t: dict, paper) -> list:
    """Table-wide differences: the number of seeds and the datasets/targets covered."""
    p = published(paper)
    out = []
    if len(t.get("seeds", [])) != p["seeds"]:
        out.append(f"{len(t['seeds'])} seed{'' if len(t['seeds']) == 1 else 's'} (paper {p['seeds']})")
    full = {"base2new": BASE2NEW_DATASETS, "fewshot": BASE2NEW_DATASETS, "xd": XD_TARGETS, "dg": DG_TARGETS}[proto]
    ours = t.get("datasets") if proto in ("base2new", "fewshot") else t.get("targets")
    missing = [d for d in full if d not in (ours or [])]
    if missing:
        what = "datasets" if proto in ("base2new", "fewshot") else "targets"
        out.append(f"{len(set(full) & set(ours or []))} of the paper's {len(full)} {what}")
    return out


def unknown_note(t: dict) -> str | None:
    """A sentence when some runs did not record their backbone or precision (so they cannot be checked)."""
    flags = t.get("flags") or {}
    k = flags.get("unrecorded_runs", 0)
    if not k:
        return None
    return (f"{k} of {flags.get('runs', 0)} runs do not record their backbone, weights or precision (no "
            "metrics.json or run_record.json); they are not checked against the published protocol.")


def all_mismatches(proto: str, t: dict, paper) -> dict:
    """``{"table": [...], "rows": {row: [...]}}`` for the JSON and the figures (empty without ``paper``)."""
    if paper is None:
        return {"table": [], "rows": {}}
    rows = {m: row_mismatches(proto, m, (t.get("flags") or {}).get("methods", {}).get(m), paper)
            for m in t.get("methods", {})}
    return {"table": table_mismatches(proto, t, paper), "rows": {m: v for m, v in rows.items() if v}}


def caption(proto: str, t: dict, paper) -> str | None:
    """One caption sentence naming every mismatch with the published protocol (None when none)."""
    if paper is None:
        return None
    mm = all_mismatches(proto, t, paper)
    parts = list(mm["table"]) + [f"{m}: {', '.join(v)}" for m, v in mm["rows"].items()]
    if not parts:
        return None
    p = published(paper)
    return (f"Not the published protocol ({p['backbone']}, {p['weights']} weights, {p['shots']} shots, "
            f"{p['seeds']} seeds, the paper's datasets, official epochs and precision): " + "; ".join(parts)
            + ". The published numbers are for reference; a Δ compares different protocols.")
