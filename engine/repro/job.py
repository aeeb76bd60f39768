"""Entry point of ``scripts/<method>/*.sh``: plan and run one protocol job, skipping finished runs
(only when their recorded settings equal the requested ones; otherwise one ``ERROR`` line, exit 2).

Usage (what the scripts call, from the repository root)::

    python -m engine.repro.job METHOD base2new_train DATASET SEED [KEY VALUE ...]
    python -m engine.repro.job METHOD base2new_test  DATASET SEED [KEY VALUE ...]
    python -m engine.repro.job METHOD xd_train [DATASET] SEED [KEY VALUE ...]   (DATASET default: imagenet)
    python -m engine.repro.job METHOD xd_test  DATASET SEED [KEY VALUE ...]

Environment: ``DATA`` (dataset root, default ``./data``), ``OUTPUT_ROOT`` (default ``output``),
``CFG`` (config name override), ``XD_SOURCE`` (xd source dataset, default ``imagenet``),
``CONFIG_ROOT`` (folder holding ``configs/``, default the repo), ``SWEEP_TRAIN_PY`` /
``SWEEP_PYTHON`` (replace ``train.py`` / the interpreter).
"""
from __future__ import annotations

import os
import sys

from engine.repro.methods import XD_SOURCE
from engine.repro.plan import KINDS, Context, PlanError, make_job
from engine.repro.runner import run_single

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USAGE = ("usage: python -m engine.repro.job METHOD {base2new_train,base2new_test,xd_train,xd_test} "
         "[DATASET] SEED [KEY VALUE ...]")


def parse_argv(argv):
    """``(method, kind, dataset, seed, opts)`` from the script arguments; ``PlanError`` on bad input."""
    if len(argv) < 3:
        raise PlanError(USAGE)
    method, kind, rest = argv[0], argv[1], list(argv[2:])
    if kind not in KINDS:
        raise PlanError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "xd_train" and rest and rest[0].lstrip("-").isdigit():
        dataset = os.environ.get("XD_SOURCE") or XD_SOURCE
    else:
        if not rest:
            raise PlanError(f"{kind} needs DATASET SEED; {USAGE}")
        dataset = rest.pop(0)
    if not rest:
        raise PlanError(f"{kind} needs a SEED after the dataset; {USAGE}")
    seed_text = rest.pop(0)
    try:
        seed = int(seed_text)
    except ValueError:
        raise PlanError(f"SEED must be an integer, got {seed_text!r}") from None
    return method, kind, dataset, seed, rest


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        method, kind, dataset, seed, opts = parse_argv(argv)
        out_root = os.environ.get("OUTPUT_ROOT") or "output"
        data_root = os.environ.get("DATA") or "./data"
        if os.path.realpath(os.getcwd()) != os.path.realpath(REPO_ROOT):
            # train.py runs in the repo root; keep relative paths meaning the same thing
            out_root, data_root = os.path.abspath(out_root), os.path.abspath(data_root)
        ctx = Context(repo_root=REPO_ROOT, output_root=out_root, data_root=data_root, opts=opts,
                      source=os.environ.get("XD_SOURCE") or XD_SOURCE,
                      cfg_override=os.environ.get("CFG") or None,
                      config_root=os.path.abspath(os.environ["CONFIG_ROOT"]) if os.environ.get("CONFIG_ROOT") else None)
        job = make_job(ctx, method, kind, dataset, seed)
    except (PlanError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 2
    try:
        return run_single(job, repo_root=REPO_ROOT, emit=lambda msg: print(msg, flush=True))
    except KeyboardInterrupt:
        print(f"Interrupted; re-run the same command to resume {job.output_dir}.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
