"""Find every run under an output root and read its final accuracy.

Recognised layouts (relative to anywhere under the root; ours and the official repos'):

* ours / MaPLe / CoOp: ``base2new/{train_base,test_base,test_new}/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>``
* COMMA: ``base2new/{train_base,test_base,test_new}/shots_<K>/<trainer>/<cfg>/<dataset>/seed<N>``
* ours xd/dg: ``xd/train/<source>/<trainer>/<cfg>_<K>shots/seed<N>``,
  ``xd/test/<target>/<trainer>/<cfg>_<K>shots/seed<N>``
* official xd/dg: ``<source>/<trainer>/<cfg>_<K>shots/seed<N>`` (training) and
  ``evaluation/<trainer>/<cfg>_<K>shots/<target>/seed<N>``
* ours few-shot: ``fewshot/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>`` (K = 0: zero-shot CLIP)
* CoOp ``main.sh`` few-shot: ``<dataset>/<trainer>/<cfg>_<K>shots/nctx<n>_csc<c>_ctp<p>/seed<N>`` and its
  ``eval.sh`` cross-dataset evaluation ``evaluation/<trainer>/<cfg>_<K>shots/nctx<n>_csc<c>_ctp<p>/<target>/seed<N>``

Roles: ``base`` (train_base, else test_base), ``novel`` (test_new), ``source`` (xd training run's
own test), ``target`` (xd/dg evaluation; dg when the target is an ImageNet variant), ``all``
(few-shot). The result of a folder is read from its ``metrics.json`` first
(``engine.runs.run_metrics.read_metrics``: unrounded accuracy, the epoch evaluated, random weights),
else from ``log.txt``: a training folder counts only with a result block after its end signal;
zero-shot ``train_base`` folders and all evaluation folders need only a result block; what the log
says about how the run ran (``engine.runs.logparse.run_facts``: random backbone weights, epochs) is
kept, so that the tables can say what their numbers are. ``Run.source`` names the file read.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from repro._util import get_log
from engine.runs.logparse import log_files, read_run_result, run_facts
from engine.runs.record import read_record
from engine.runs.run_metrics import METRICS_FILE, read_metrics
from repro.methods import DG_TARGETS, canonical_trainer, get_method

_SEED = re.compile(r"^seed(-?\d+)$")
_SHOTS_DIR = re.compile(r"^shots_(\d+)$")
_CFG_SHOTS = re.compile(r"^(.+)_(\d+)shots$")
_COOP_TAG = re.compile(r"^nctx\d+_csc\w+_ctp\w+$")
_COOP_DEFAULT_TAG = "nctx16_cscFalse_ctpend"


@dataclass
class Run:
    """One finished run: protocol (base2new/xd/dg), role, method row key, dataset, seed, accuracy (%),
    and from its log: ``random_weights`` (built with MODEL.BACKBONE.RANDOM_INIT) and ``epochs`` (or None)."""

    protocol: str
    role: str
    trainer: str
    cfg: str
    shots: int
    dataset: str
    seed: int
    accuracy: float
    log_path: str
    random_weights: bool = False
    epochs: int | None = None
    source: str = "log.txt"
    backbone: str | None = None   # MODEL.BACKBONE.NAME (metrics.json, else run_record.json)
    weights: str | None = None    # random / official / "<file> sha256:..." (metrics.json, else run_record.json)
    prec: str | None = None       # the precision metrics.json says ran, else the recorded TRAINER.<NODE>.PREC
    per_class: tuple | None = None  # ((classname, accuracy), ...) with TEST.PER_CLASS_RESULT


def _is_zero_shot(trainer: str) -> bool:
    try:
        return get_method(trainer).zero_shot
    except KeyError:
        return False


def classify(parts):
    """Map a run folder's path components to ``(protocol, role, trainer, cfg, shots, dataset, seed, kind)``
    or None when the folder is not a protocol run."""
    if not parts:
        return None
    m = _SEED.match(parts[-1])
    if not m:
        return None
    seed = int(m.group(1))
    found = _classify_fewshot(parts, seed)
    if found is not None:
        return found
    for i in range(len(parts) - 1):
        if parts[i] == "base2new" and parts[i + 1] in ("train_base", "test_base", "test_new"):
            rest = parts[i + 2:-1]
            if len(rest) != 4:
                continue
            if _SHOTS_DIR.match(rest[1]):
                dataset, shots, trainer, cfg = rest[0], rest[1], rest[2], rest[3]
            elif _SHOTS_DIR.match(rest[0]):
                shots, trainer, cfg, dataset = rest
            else:
                continue
            trainer = canonical_trainer(trainer)
            role = "novel" if parts[i + 1] == "test_new" else "base"
            kind = "train" if parts[i + 1] == "train_base" and not _is_zero_shot(trainer) else "eval"
            return ("base2new", role, trainer, cfg, int(_SHOTS_DIR.match(shots).group(1)), dataset, seed, kind,
                    parts[i + 1])
        if parts[i] == "xd" and parts[i + 1] in ("train", "test") and len(parts) - i == 6:
            dataset, trainer, cfg_shots = parts[i + 2], parts[i + 3], parts[i + 4]
            cm = _CFG_SHOTS.match(cfg_shots)
            if not cm:
                continue
            return _xd(parts[i + 1] == "train", trainer, cm, dataset, seed)
        if parts[i] == "evaluation" and len(parts) - i == 6 and _COOP_TAG.match(parts[i + 3]):
            trainer, cfg_shots, tag, dataset = parts[i + 1], parts[i + 2], parts[i + 3], parts[i + 4]
            cm = _CFG_SHOTS.match(cfg_shots)
            if cm:
                return _xd(False, trainer, cm, dataset, seed, _coop_cfg(cm.group(1), tag))
        if parts[i] == "evaluation" and len(parts) - i == 5:
            trainer, cfg_shots, dataset = parts[i + 1], parts[i + 2], parts[i + 3]
            cm = _CFG_SHOTS.match(cfg_shots)
            if cm:
                return _xd(False, trainer, cm, dataset, seed)
    if len(parts) >= 4 and "base2new" not in parts and "evaluation" not in parts and "xd" not in parts:
        cm = _CFG_SHOTS.match(parts[-2])
        if cm:
            return _xd(True, parts[-3], cm, parts[-4], seed)
    return None


def _coop_cfg(cfg: str, tag: str) -> str:
    """CoOp main.sh/eval.sh runs: the config name, plus the context settings when not CoOp's defaults."""
    return cfg if tag == _COOP_DEFAULT_TAG else f"{cfg} {tag}"


def _classify_fewshot(parts, seed):
    """Few-shot layouts (ours and CoOp's main.sh), or None."""
    for i in range(len(parts) - 1):
        if parts[i] == "fewshot" and len(parts) - i == 6 and _SHOTS_DIR.match(parts[i + 2]):
            dataset, shots, trainer, cfg = parts[i + 1], parts[i + 2], parts[i + 3], parts[i + 4]
            trainer = canonical_trainer(trainer)
            kind = "eval" if _is_zero_shot(trainer) else "train"
            return ("fewshot", "all", trainer, cfg, int(_SHOTS_DIR.match(shots).group(1)), dataset, seed, kind,
                    "fewshot")
    if len(parts) >= 5 and "evaluation" not in parts and "base2new" not in parts and _COOP_TAG.match(parts[-2]):
        cm = _CFG_SHOTS.match(parts[-3])
        if cm:
            trainer = canonical_trainer(parts[-4])
            return ("fewshot", "all", trainer, _coop_cfg(cm.group(1), parts[-2]), int(cm.group(2)), parts[-5],
                    seed, "train", "coop_main")
    return None


def _xd(is_train, trainer, cfg_match, dataset, seed, cfg=None):
    trainer = canonical_trainer(trainer)
    cfg, shots = cfg or cfg_match.group(1), int(cfg_match.group(2))
    if is_train:
        kind = "eval" if _is_zero_shot(trainer) else "train"
        return ("xd", "source", trainer, cfg, shots, dataset, seed, kind, "xd_train")
    protocol = "dg" if dataset in DG_TARGETS else "xd"
    return (protocol, "target", trainer, cfg, shots, dataset, seed, "eval", "xd_test")


def scan(root: str):
    """``(runs, unfinished)``: finished :class:`Run` s under ``root`` (sorted walk; a duplicate of the
    same protocol/role/method/cfg/dataset/seed keeps the ``train_base`` copy, else the first) and the
    folders that look like runs but hold no final result."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"output root not found: {root}")
    found, unfinished = {}, []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if not log_files(dirpath) and METRICS_FILE not in filenames:
            continue
        parts = os.path.relpath(dirpath, root).replace(os.sep, "/").split("/")
        info = classify(parts)
        if info is None:
            continue
        protocol, role, trainer, cfg, shots, dataset, seed, kind, folder = info
        run = read_run(dirpath, kind, (protocol, role, trainer, cfg, shots, dataset, seed))
        if run is None:
            unfinished.append(dirpath)
            continue
        key = (protocol, role, trainer, cfg, shots, dataset, seed)
        if key in found:
            prev_folder = found[key][1]
            if folder == "train_base" and prev_folder != "train_base":
                found[key] = (run, folder)
            else:
                get_log().warning(f"duplicate run ignored: {dirpath} (same as {found[key][0].log_path})")
            continue
        found[key] = (run, folder)
        # the xd source run also serves the dg table
        if protocol == "xd" and role == "source":
            found[("dg",) + key[1:]] = (dataclasses.replace(run, protocol="dg"), folder)
    return [v[0] for v in found.values()], unfinished


def read_run(run_dir: str, kind: str, key: tuple):
    """The :class:`Run` of one folder (``key`` = protocol, role, trainer, cfg, shots, dataset, seed):
    from ``metrics.json`` when it is there and current, else from the logs; None when unfinished."""
    metrics = read_metrics(run_dir, kind)
    recorded = _recorded(run_dir, kind, key[2])
    if metrics is not None:
        per_class = metrics.get("per_class")
        if isinstance(per_class, list):
            per_class = tuple((str(c.get("classname") or c.get("label")), float(c["accuracy"]))
                              for c in per_class if isinstance(c, dict) and "accuracy" in c)
        else:
            per_class = None
        return Run(*key, float(metrics["accuracy"]), os.path.join(run_dir, METRICS_FILE),
                   bool(metrics.get("random_init", False)), metrics.get("epoch"), METRICS_FILE,
                   metrics.get("backbone") or recorded.get("backbone"),
                   metrics.get("weights") or recorded.get("weights"),
                   metrics.get("prec") or recorded.get("prec"), per_class)
    block, path = read_run_result(run_dir, kind)
    if block is None:
        return None
    facts = run_facts(path, block.line)
    return Run(*key, block.accuracy, path, facts.random_weights, facts.epochs, os.path.basename(path),
               recorded.get("backbone"), "random" if facts.random_weights else recorded.get("weights"),
               recorded.get("prec"))


def _recorded(run_dir: str, kind: str, trainer: str) -> dict:
    """Backbone, weights and requested precision from ``run_record.json`` (``{}`` without one)."""
    entry = read_record(run_dir).get("eval" if kind == "eval" else "train") or {}
    settings = entry.get("settings") if isinstance(entry, dict) else None
    if not isinstance(settings, dict):
        return {}
    out = {"backbone": settings.get("MODEL.BACKBONE.NAME") or None}
    if settings.get("MODEL.BACKBONE.RANDOM_INIT"):
        out["weights"] = "random"
    elif settings.get("MODEL.BACKBONE.PATH"):
        name = os.path.basename(settings["MODEL.BACKBONE.PATH"])
        out["weights"] = f"{name} {settings.get('identity.weights', '')}".strip()
    else:
        out["weights"] = "official"
    try:
        node = get_method(trainer).node or None
    except KeyError:
        node = None
    precs = [v for k, v in settings.items() if k.startswith("TRAINER.") and k.endswith(".PREC")
             and (node is None or k == f"TRAINER.{node}.PREC")]
    out["prec"] = precs[0] if len(precs) == 1 else None
    return out
