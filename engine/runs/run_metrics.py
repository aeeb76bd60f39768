"""``OUTPUT_DIR/metrics.json``: the final test result of a run, machine-readable, next to ``log.txt``.

Written atomically (``engine.utils.io``) by every evaluation on the *test* split (the end of a
training run, an ``--eval-only`` run, zero-shot CLIP); the last test of a run wins, as the last
result block of ``log.txt`` does. Contents (``METRICS_VERSION`` 1)::

    {"version": 1, "mode": "train" | "eval", "split": "test",
     "accuracy": 93.41, "error_rate": 6.59, "macro_f1": 92.8,   # percent, unrounded
     "total": 2465, "correct": 2302,
     "epoch": 5,                 # checkpoint epoch evaluated (None: zero-shot, nothing loaded)
     "config_hash": "<12 hex>",  # the run_record.json hash of this run's settings (engine.runs.record)
     "seed": 1, "trainer": "CoMMA", "dataset": "Caltech101", "num_shots": 16,
     "subsample_classes": "base", "backbone": "ViT-B/16", "random_init": false,
     "weights": "official",      # or "random", or "<file name> sha256:<16 hex>" (MODEL.BACKBONE.PATH)
     "prec": "fp16",             # the precision that ran (the trainer's, not only the config's PREC)
     "precision": {"prec": "fp16", "param_dtype": "float16", "autocast_dtype": null,
                   "grad_scaler": false, "device": "cuda"},   # engine.precision.precision_record
     "code_version": "0.1.0+src.<12 hex>",  # engine.__version__ + digest of the Python sources
     "git_commit": "<40 hex>" | null,
     "wall_time_s": 812.4,       # training run: training + final test of this session; eval run: the test
     "eval_time_s": 21.0, "images_per_s": 117.4,   # test images / test seconds
     "train_images_per_s": 96.1 | null,            # images trained this session / training seconds
     "written": "2026-01-01T12:00:00",
     # with TEST.PER_CLASS_RESULT True: one entry per test class, label order
     "per_class": [{"label": 0, "classname": "cat", "total": 50, "correct": 47, "accuracy": 94.0}, ...],
     # with TEST.COMPUTE_CMAT True: counts, row = true label, column = predicted label
     "confusion_matrix": {"rows": "true label", "columns": "predicted label", "counts": [[47, 3], ...]}}

:func:`read_metrics` is torch-free (``tools/collect_results.py`` reads it first, ``log.txt`` second).
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import time

from engine.precision import precision_record

METRICS_FILE = "metrics.json"
METRICS_VERSION = 1
REQUIRED_KEYS = ("accuracy", "macro_f1", "epoch", "config_hash", "seed", "code_version", "wall_time_s",
                 "images_per_s", "mode")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SOURCE_DIRS = ("engine", "trainers", "datasets")


@functools.lru_cache(maxsize=None)
def code_version(repo_root: str = _REPO_ROOT) -> str:
    """``<engine.__version__>+src.<12 hex>``: SHA-256 over the sorted relative paths and bytes of
    ``train.py`` and every ``*.py`` under ``engine/``, ``trainers/``, ``datasets/`` (works without git)."""
    from engine import __version__

    h = hashlib.sha256()
    files = [os.path.join(repo_root, "train.py")]
    for top in _SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(repo_root, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        h.update(os.path.relpath(path, repo_root).replace(os.sep, "/").encode() + b"\0" + data + b"\0")
    return f"{__version__}+src.{h.hexdigest()[:12]}"


def git_commit(repo_root: str = _REPO_ROOT):
    """The checked-out commit read from ``.git`` (no subprocess), or None."""
    git = os.path.join(repo_root, ".git")
    try:
        with open(os.path.join(git, "HEAD"), "r", encoding="utf-8") as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        path = os.path.join(git, ref)
        if os.path.isfile(path):
            with open(path, "r", encoding="utf-8") as f:
                return f.read().strip() or None
        with open(os.path.join(git, "packed-refs"), "r", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def _config_hash(cfg, mode: str, output_dir: str):
    """The ``run_record.json`` hash of this run (the entry of ``mode``, else the other one) when its
    recorded config equals ``cfg``; else the hash of ``cfg``'s own settings (a run without a record)."""
    from engine.runs import record

    ours = {k: v for k, v in record.effective_settings(cfg, None).items() if not k.startswith("--")}
    data = record.read_record(output_dir)
    for m in (mode, "eval" if mode == "train" else "train"):
        entry = data.get(m)
        if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
            continue
        recorded = {k: v for k, v in entry["settings"].items() if not k.startswith("--")}
        if recorded == ours:
            return entry.get("hash"), m
    return record.settings_hash(record.effective_settings(cfg, None)), mode


def weights_label(cfg) -> str:
    """What the backbone's weights were: ``random``, ``official`` (the release of ``MODEL.BACKBONE.NAME``,
    OpenAI's or an OpenCLIP pretrained tag) or ``<file name> sha256:<16 hex>`` (``MODEL.BACKBONE.PATH``)."""
    from engine.runs.identity import file_digest

    bb = cfg.MODEL.BACKBONE
    if bb.RANDOM_INIT:
        return "random"
    if bb.PATH:
        return f"{os.path.basename(bb.PATH)} {file_digest(bb.PATH)}"
    return "official"


def collect_metrics(trainer, results: dict, eval_seconds: float) -> dict:
    """The ``metrics.json`` dict of a finished test of ``trainer`` (a ``SimpleTrainer``)."""
    cfg = trainer.cfg
    trained = getattr(trainer, "time_start", None) is not None
    mode = "train" if trained else "eval"
    config_hash, mode = _config_hash(cfg, mode, cfg.OUTPUT_DIR)
    now = time.time()
    total = len(getattr(trainer.test_loader, "dataset", None) or [])
    acc = float(results.get("accuracy", 0.0))
    epoch = getattr(trainer, "loaded_epoch", None)
    if epoch is None and trained:
        epoch = int(trainer.max_epoch)
    train_ips, wall = None, eval_seconds
    if trained:
        wall = now - trainer.time_start
        train_s = wall - eval_seconds
        epochs_run = max(int(trainer.max_epoch) - int(getattr(trainer, "start_epoch", 0)), 0)
        images = epochs_run * int(getattr(trainer, "num_batches", 0)) * int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        if epochs_run and images and train_s > 0:
            train_ips = images / train_s
    node = cfg.TRAINER.get(getattr(trainer, "CFG_NODE", None) or "", None)
    precision = getattr(trainer, "precision", None)
    ran = precision_record(precision, trainer.device) if precision is not None else None
    return {
        "version": METRICS_VERSION, "mode": mode, "split": "test",
        "accuracy": acc, "error_rate": float(results.get("error_rate", 100.0 - acc)),
        "macro_f1": float(results["macro_f1"]) if "macro_f1" in results else None,
        "total": total, "correct": int(round(acc * total / 100.0)),
        "epoch": int(epoch) if epoch is not None else None,
        "config_hash": config_hash, "seed": int(cfg.SEED),
        "trainer": cfg.TRAINER.NAME, "dataset": cfg.DATASET.NAME, "num_shots": int(cfg.DATASET.NUM_SHOTS),
        "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES, "backbone": cfg.MODEL.BACKBONE.NAME,
        "random_init": bool(cfg.MODEL.BACKBONE.RANDOM_INIT), "weights": weights_label(cfg),
        "prec": ran["prec"] if ran else (node.PREC if node is not None and "PREC" in node else None),
        "precision": ran,
        "code_version": code_version(), "git_commit": git_commit(),
        "wall_time_s": round(wall, 3), "eval_time_s": round(eval_seconds, 3),
        "images_per_s": round(total / eval_seconds, 2) if eval_seconds > 0 and total else None,
        "train_images_per_s": round(train_ips, 2) if train_ips else None,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _per_class_fields(trainer) -> dict:
    """``per_class`` / ``confusion_matrix`` entries when the evaluator computed them."""
    evaluator = getattr(trainer, "evaluator", None)
    out = {}
    if getattr(evaluator, "per_class", None) is not None:
        out["per_class"] = [dict(c, accuracy=round(float(c["accuracy"]), 4)) for c in evaluator.per_class]
    if getattr(evaluator, "confusion", None) is not None:
        out["confusion_matrix"] = {"rows": "true label", "columns": "predicted label", "counts": evaluator.confusion}
    return out


def write_run_metrics(trainer, results: dict, eval_seconds: float):
    """Write ``OUTPUT_DIR/metrics.json`` atomically for a test-split evaluation; returns the path
    (None without an ``OUTPUT_DIR``)."""
    from engine.utils.io import atomic_write_text

    if not trainer.cfg.OUTPUT_DIR:
        return None
    path = os.path.join(trainer.cfg.OUTPUT_DIR, METRICS_FILE)
    data = collect_metrics(trainer, results, eval_seconds)
    data.update(_per_class_fields(trainer))
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def read_metrics(run_dir: str, kind: str | None = None):
    """The ``metrics.json`` of ``run_dir`` as a dict, or None when absent, unreadable, incomplete,
    stale (its ``config_hash`` is not the current ``run_record.json`` hash of its mode) or, for a
    ``train`` folder (``kind``), written by an evaluation instead of the end of training."""
    path = os.path.join(run_dir, METRICS_FILE)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
        return None
    if not isinstance(data["accuracy"], (int, float)) or isinstance(data["accuracy"], bool):
        return None
    if kind == "train" and data["mode"] != "train":
        return None
    try:
        with open(os.path.join(run_dir, "run_record.json"), "r", encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        rec = {}
    except (OSError, ValueError):
        return None  # a damaged record: which settings wrote metrics.json is unknown; the log decides
    entry = rec.get(data["mode"]) if isinstance(rec, dict) else None
    if isinstance(entry, dict) and entry.get("hash") and entry["hash"] != data["config_hash"]:
        return None  # the folder was re-run with other settings since: the log decides
    return data
