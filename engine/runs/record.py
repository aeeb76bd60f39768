"""Run records: what a run was run with, so that a re-run with other settings never reuses its result.

``train.py`` writes ``OUTPUT_DIR/run_record.json`` (atomically) when a run starts::

    {"version": 1,
     "train": {"hash": "<12 hex>", "settings": {"OPTIM.MAX_EPOCH": 5, ..., "--load-epoch": null},
               "args": {"root": ..., "opts": [...], ...}},   # train.py's parsed arguments
     "eval":  {...}}                      # the same for an --eval-only run into that folder

Once the trainer is built, the entry also gets ``"precision"``: what the run computes in
(``engine.precision.precision_record``: ``prec``, ``param_dtype``, ``autocast_dtype``, ``grad_scaler``,
``device``); it is not part of ``settings`` or the hash.

``settings`` is the effective config (defaults -> YAMLs -> flags -> opts, flattened to dotted keys)
plus the evaluation flags ``--eval-only``, ``--model-dir`` (real path) and ``--load-epoch``, plus the
run's identity beyond config values (``identity.*``: the data of an ImageFolder/CSV dataset and the
digest of a weights file, :mod:`engine.runs.identity`), minus :data:`IGNORED_KEYS` (paths and logging
that do not change results). ``hash``
is the SHA-256 of its canonical JSON. The scripts and the sweep (``repro.runner``) compute the
settings of the requested run the same way and skip a finished run (or resume a half-finished one)
only when they equal the recorded ones; otherwise :func:`mismatch_message` is the one-line error.
"""
from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import importlib.util
import json
import os

from engine.runs.identity import PREFIX as IDENTITY_PREFIX
from engine.runs.identity import identity_settings

RECORD_FILE = "run_record.json"
RECORD_VERSION = 1
#: keys that never change a result: where files are, logging, the resume folder, the loader's worker
#: count (augmentation randomness does not depend on it, engine.data.loader).
IGNORED_KEYS = ("OUTPUT_DIR", "DATASET.ROOT", "RESUME", "TRAIN.PRINT_FREQ", "DATALOADER.NUM_WORKERS",
                "TRAIN.WANDB_PROJECT")
_MAX_SHOWN = 4


class RunRecordError(ValueError):
    """``run_record.json`` exists but cannot be read as a record (truncated, not JSON, not an object):
    one line naming the file; never taken for a run that predates records."""


class RunSettingsMismatch(ValueError):
    """A finished or half-finished run folder was run with other settings than the requested ones."""


def _plain(value):
    """JSON-comparable form of a config value (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten_cfg(cfg, prefix: str = "") -> dict:
    """``{"A.B.C": value}`` for every leaf of a yacs CfgNode (or nested dict)."""
    out = {}
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_cfg(value, full + "."))
        else:
            out[full] = _plain(value)
    return out


def run_mode(args) -> str:
    """``eval`` for an ``--eval-only`` run, else ``train`` (the record holds one entry per mode)."""
    return "eval" if getattr(args, "eval_only", False) else "train"


def effective_settings(cfg, args) -> dict:
    """The settings a run is compared by: flattened ``cfg`` minus :data:`IGNORED_KEYS`, plus the
    evaluation flags of ``args`` (``--model-dir`` as a real path)."""
    settings = {k: v for k, v in flatten_cfg(cfg).items() if k not in IGNORED_KEYS}
    model_dir = getattr(args, "model_dir", "") or ""
    settings.update({
        "--eval-only": bool(getattr(args, "eval_only", False)),
        "--model-dir": os.path.realpath(model_dir) if model_dir else "",
        "--load-epoch": getattr(args, "load_epoch", None),
    })
    settings.update(identity_settings(cfg))
    return json.loads(json.dumps(settings, sort_keys=True))


def settings_hash(settings: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of ``settings``."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def has_checkpoints(output_dir: str) -> bool:
    """Whether ``output_dir/<model name>/`` holds an epoch checkpoint or a resume point to continue from."""
    base = glob.escape(output_dir)
    return bool(glob.glob(os.path.join(base, "*", "model.pth.tar-*"))
                or glob.glob(os.path.join(base, "*", "interrupted.pth.tar")))


def read_record(output_dir: str) -> dict:
    """The record of ``output_dir``; ``{}`` when there is none (runs that predate records).

    A record that exists but cannot be read (truncated, not JSON, not an object, unreadable file) is a
    :class:`RunRecordError` naming it."""
    path = os.path.join(output_dir, RECORD_FILE)
    remedy = ("it says which settings that folder was run with: restore it, or delete it (the folder then "
              "counts as a run from before records, its settings unchecked) or delete the whole folder to run again")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RunRecordError(f"cannot read the run record {path} ({e.strerror or e}); {remedy}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise RunRecordError(f"the run record {path} is damaged ({type(e).__name__}: {e}); {remedy}") from None
    if not isinstance(data, dict):
        raise RunRecordError(f"the run record {path} is damaged (a JSON {type(data).__name__}, not an object); "
                             f"{remedy}")
    return data


def write_record(output_dir: str, mode: str, settings: dict, args: dict) -> dict:
    """Store ``settings`` (and ``train.py``'s parsed arguments) as the ``mode`` entry of the record, atomically."""
    from engine.utils.io import atomic_write_text

    data = read_record(output_dir)
    data["version"] = RECORD_VERSION
    data[mode] = {"hash": settings_hash(settings), "settings": settings, "args": dict(args)}
    if settings.get("--model-dir"):  # where the model dir is from this folder: a moved output root still matches
        data[mode]["relative"] = {"--model-dir": os.path.relpath(settings["--model-dir"], os.path.realpath(output_dir))}
    os.makedirs(output_dir, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    atomic_write_text(os.path.join(output_dir, RECORD_FILE), text)
    return data


def relocated_settings(entry: dict, output_dir: str) -> dict:
    """The recorded settings of ``entry`` with ``--model-dir`` where it is now when the output root was
    moved: the same path relative to ``output_dir`` as when recorded (``entry["relative"]``; for records
    without it, relative to the absolute ``--output-dir`` they were run with). Other entries unchanged."""
    settings = dict(entry.get("settings") or {})
    recorded = settings.get("--model-dir")
    if not isinstance(recorded, str) or not recorded:
        return settings
    rel = (entry.get("relative") or {}).get("--model-dir") if isinstance(entry.get("relative"), dict) else None
    if not isinstance(rel, str):
        old_out = (entry.get("args") or {}).get("output_dir") if isinstance(entry.get("args"), dict) else None
        if not isinstance(old_out, str) or not os.path.isabs(old_out) or not os.path.isabs(recorded):
            return settings
        rel = os.path.relpath(recorded, os.path.normpath(old_out))
    settings["--model-dir"] = os.path.normpath(os.path.join(os.path.realpath(output_dir), rel))
    return settings


def write_precision(output_dir: str, mode: str, precision: dict) -> dict:
    """Add ``precision`` (what the built trainer computes in) to the ``mode`` entry, atomically; a
    record without that entry is left as it is."""
    from engine.utils.io import atomic_write_text

    data = read_record(output_dir)
    if not isinstance(data.get(mode), dict):
        return data
    data[mode]["precision"] = dict(precision)
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    atomic_write_text(os.path.join(output_dir, RECORD_FILE), text)
    return data


def diff_settings(recorded: dict, requested: dict, defaults: dict | None = None) -> list:
    """``[(key, recorded value, requested value)]`` for every key whose value differs (sorted by key);
    a key missing on one side counts as ``"<unset>"``.

    With ``defaults`` (the settings of an all-default config), keys the record does not have because
    they were added to the config after that run count only when the request sets them to something
    other than their default (a new key's default keeps the old behaviour), and keys the config no
    longer has are not compared (they cannot be requested)."""
    missing = "<unset>"
    keys = sorted(set(recorded) | set(requested))
    out = []
    for k in keys:
        a, b = recorded.get(k, missing), requested.get(k, missing)
        if a == b:
            continue
        if a is missing and k.startswith(IDENTITY_PREFIX):
            continue
        if defaults is not None and (b is missing or (a is missing and b == defaults.get(k, missing))):
            continue
        out.append((k, a, b))
    return out


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if len(text) <= 40:
        return text
    return "..." + text[-37:] if text.startswith(os.sep) else text[:37] + "..."  # a path: keep its end


def mismatch_message(output_dir: str, diffs: list, status: str, hint: str) -> str:
    """One line: the folder, its status, the differing keys (recorded -> requested) and what to do."""
    shown = "; ".join(f"{k} {_short(a)} -> {_short(b)}" for k, a, b in diffs[:_MAX_SHOWN])
    more = f"; and {len(diffs) - _MAX_SHOWN} more keys" if len(diffs) > _MAX_SHOWN else ""
    return (f"{output_dir} holds a {status} run with other settings ({shown}{more}; recorded -> requested). "
            f"{hint}")


# --- the requested run's settings, computed as train.py computes them ---------------------------

@functools.lru_cache(maxsize=None)
def _load_module(name: str, path: str):
    """Import the file ``path`` as a private module ``name`` (once per process)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_parser(repo_root: str) -> argparse.ArgumentParser:
    return _load_module("_harness_train_cli", os.path.join(repo_root, "train.py")).build_parser()


def requested_settings(train_args, repo_root: str) -> dict:
    """Settings of ``python train.py <train_args>`` run in ``repo_root``, without running it.

    Uses ``train.py``'s parser and ``engine.config.setup_cfg`` with the trainer nodes of
    ``trainers/config.py`` (loaded by path: importing the ``trainers`` package would import torch).
    Raises the config's one-line errors (``ConfigError``) on a bad request.
    """
    from engine.config import setup_cfg

    args = _train_parser(repo_root).parse_args(list(train_args))
    for name in ("config_file", "dataset_config_file"):
        path = getattr(args, name)
        if path and not os.path.isabs(path):
            setattr(args, name, os.path.join(repo_root, path))
    if args.model_dir and not os.path.isabs(args.model_dir):
        args.model_dir = os.path.join(repo_root, args.model_dir)
    return effective_settings(setup_cfg(args, extend=_extend(repo_root)), args)


def _extend(repo_root: str):
    return _load_module("_harness_trainer_config", os.path.join(repo_root, "trainers", "config.py")).extend_cfg


def default_settings(repo_root: str) -> dict:
    """Settings of an all-default config (defaults + trainer nodes), for :func:`diff_settings`."""
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    _extend(repo_root)(cfg)
    return effective_settings(cfg, argparse.Namespace())


def _foreign_mismatch(output_dir: str, train_args: list, entry: dict, status: str, hint: str) -> str | None:
    """A ``train.py --dassl-repo REPO [...] -- ARGS`` run: its config is built by the repo's own code, so
    the record's repo, the repo's arguments and the clip weights are compared instead of the settings."""
    split = train_args.index("--") if "--" in train_args else len(train_args)
    ours, theirs = train_args[:split], train_args[split + 1:]
    repo = ours[ours.index("--dassl-repo") + 1] if ours.index("--dassl-repo") + 1 < len(ours) else ""
    weights = ours[ours.index("--clip-weights") + 1] if "--clip-weights" in ours[:-1] else ""
    recorded = entry.get("args") if isinstance(entry.get("args"), dict) else {}
    diffs = []
    for key, old, new in (("--dassl-repo", recorded.get("dassl_repo"), os.path.realpath(repo) if repo else ""),
                          ("repo arguments", recorded.get("repo_argv"), theirs),
                          ("--clip-weights", recorded.get("clip_weights") or "",
                           os.path.abspath(weights) if weights else "")):
        if old != new:
            diffs.append((key, old, new))
    return mismatch_message(output_dir, diffs, status, hint) if diffs else None


def check_settings(output_dir: str, train_args, repo_root: str, status: str, hint: str) -> str | None:
    """``None`` when ``output_dir`` has no record for this mode (a run that predates records) or its
    recorded settings equal the requested ones; else the one-line :func:`mismatch_message`."""
    args_mode = "eval" if "--eval-only" in list(train_args) else "train"
    entry = read_record(output_dir).get(args_mode)
    if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
        return None
    if "--dassl-repo" in list(train_args):
        return _foreign_mismatch(output_dir, list(train_args), entry, status, hint)
    requested = requested_settings(train_args, repo_root)
    if entry.get("hash") == settings_hash(requested):
        return None
    recorded = entry["settings"]
    if requested.get("--model-dir") != recorded.get("--model-dir"):
        moved = relocated_settings(entry, output_dir)  # the output root was moved with its runs
        if moved.get("--model-dir") == requested.get("--model-dir"):
            recorded = moved
    diffs = diff_settings(recorded, requested, default_settings(repo_root))
    if not diffs:
        return None
    return mismatch_message(output_dir, diffs, status, hint)
