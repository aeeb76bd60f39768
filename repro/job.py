"""Entry point of ``scripts/<method>/*.sh``: plan and run protocol jobs, skipping finished runs
(only when their recorded settings equal the requested ones; otherwise one ``ERROR`` line, exit 2).

Usage (what the scripts call, from the repository root)::

    python -m repro.job METHOD base2new_train DATASET SEED [KEY VALUE ...]   (DATASET: CONFIG or NAME=CONFIG)
    python -m repro.job METHOD base2new_test  DATASET SEED [KEY VALUE ...]
    python -m repro.job METHOD xd_train [DATASET] SEED [KEY VALUE ...]   (DATASET default: imagenet)
    python -m repro.job METHOD xd_test  DATASET SEED [KEY VALUE ...]
    python -m repro.job METHOD fewshot  DATASET SEED SHOTS [KEY VALUE ...]   (all classes, K shots)
    python -m repro.job METHOD reproduce DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
                                  (released weights: test base, then novel; repro.released)
    python -m repro.job coop coop_main DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]   (seeds 1 2 3)
    python -m repro.job coop coop_eval DATASET CFG [KEY VALUE ...]                      (seeds 1 2 3)
    python -m repro.job zsclip zeroshot DATASET CFG [KEY VALUE ...]

A call with several jobs runs them in order and returns the first non-zero exit code (the others still run).
Environment: ``DATA`` (dataset root, default ``./data``), ``OUTPUT_ROOT`` (default ``output``),
``CFG`` (config name override), ``XD_SOURCE`` (xd source dataset, default ``imagenet``),
``CONFIG_ROOT`` (folder holding ``configs/``, default the repo), ``SWEEP_TRAIN_PY`` /
``SWEEP_PYTHON`` (replace ``train.py`` / the interpreter).
"""
from __future__ import annotations

import os
import sys

from repro.methods import XD_SOURCE
from repro.plan import Context, PlanError, make_job
from repro.runner import run_single

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = ("usage: python -m repro.job METHOD {base2new_train,base2new_test,xd_train,xd_test} "
         "[DATASET] SEED [KEY VALUE ...] | METHOD fewshot DATASET SEED SHOTS | METHOD reproduce DATASET SEED "
         "WEIGHTS_DIR | coop coop_main DATASET CFG CTP NCTX SHOTS CSC | coop coop_eval DATASET CFG | "
         "zsclip zeroshot DATASET CFG")
#: positional arguments after METHOD KIND, per kind (``xd_train``'s DATASET is optional)
SIGNATURES = {"base2new_train": ("DATASET", "SEED"), "base2new_test": ("DATASET", "SEED"),
              "xd_train": ("DATASET", "SEED"), "xd_test": ("DATASET", "SEED"),
              "fewshot": ("DATASET", "SEED", "SHOTS"), "reproduce": ("DATASET", "SEED", "WEIGHTS_DIR"),
              "coop_main": ("DATASET", "CFG", "CTP", "NCTX", "SHOTS", "CSC"), "coop_eval": ("DATASET", "CFG"),
              "zeroshot": ("DATASET", "CFG")}
SEEDS = (1, 2, 3)  # CoOp's main.sh / eval.sh loop over these


def usage(kind: str) -> str:
    """The usage line of one job kind: the calling script's (``REPRO_SCRIPT``, set by scripts/_common.sh)
    when run from a script, else ``python -m repro.job``'s."""
    script = os.environ.get("REPRO_SCRIPT")
    args = " ".join(SIGNATURES[kind])
    if script:
        return f"usage: bash {script} {args} [KEY VALUE ...]"
    return f"usage: python -m repro.job METHOD {kind} {args} [KEY VALUE ...]"


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PlanError(f"{name} must be an integer, got {text!r}") from None


def parse_argv(argv):
    """``(method, kind, values, opts)``: ``values`` maps the kind's positional names (:data:`SIGNATURES`)
    to their strings; ``PlanError`` on bad input."""
    if len(argv) == 2 and argv[1] in SIGNATURES:
        raise PlanError(usage(argv[1]))
    if len(argv) < 3:
        raise PlanError(USAGE)
    method, kind, rest = argv[0], argv[1], list(argv[2:])
    if kind not in SIGNATURES:
        raise PlanError(f"unknown job kind {kind!r}; expected one of {', '.join(SIGNATURES)}")
    names = list(SIGNATURES[kind])
    values = {}
    if kind == "xd_train" and rest and rest[0].lstrip("-").isdigit():
        values["DATASET"] = os.environ.get("XD_SOURCE") or XD_SOURCE
        names.pop(0)
    for name in names:
        if not rest:
            raise PlanError(f"{kind} needs a {name}; {usage(kind)}")
        values[name] = rest.pop(0)
    for name in ("SEED", "SHOTS", "NCTX"):
        if name in values:
            _int(name, values[name])
    return method, kind, values, rest


def plan_jobs(ctx: Context, method: str, kind: str, v: dict) -> list:
    """The jobs of one script call."""
    ds = v["DATASET"]
    if kind == "fewshot":
        return [make_job(ctx, method, "fewshot", ds, int(v["SEED"]), shots=int(v["SHOTS"]))]
    if kind == "reproduce":
        ctx.weights = os.path.abspath(v["WEIGHTS_DIR"])
        if not os.path.isdir(ctx.weights):
            raise PlanError(f"weights folder not found: {v['WEIGHTS_DIR']} (expected WEIGHTS_DIR/base/seed<N>/"
                            "<model name>/model.pth.tar-<epoch>, the MaPLe/COMMA release layout)")
        return [make_job(ctx, method, k, ds, int(v["SEED"])) for k in ("released_base", "released_new")]
    if kind in ("coop_main", "coop_eval", "zeroshot"):
        ctx.cfg_override = v["CFG"]
    if kind == "coop_main":
        params = {"ctp": v["CTP"], "nctx": int(v["NCTX"]), "csc": v["CSC"]}
        return [make_job(ctx, method, kind, ds, s, shots=int(v["SHOTS"]), params=params) for s in SEEDS]
    if kind == "coop_eval":
        return [make_job(ctx, method, kind, ds, s, shots=16) for s in SEEDS]
    if kind == "zeroshot":
        return [make_job(ctx, method, kind, ds, None)]
    return [make_job(ctx, method, kind, ds, int(v["SEED"]))]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        method, kind, values, opts = parse_argv(argv)
        out_root = os.environ.get("OUTPUT_ROOT") or "output"
        data_root = os.environ.get("DATA") or "./data"
        if os.path.realpath(os.getcwd()) != os.path.realpath(REPO_ROOT):
            # train.py runs in the repo root; keep relative paths meaning the same thing
            out_root, data_root = os.path.abspath(out_root), os.path.abspath(data_root)
        ctx = Context(repo_root=REPO_ROOT, output_root=out_root, data_root=data_root, opts=opts,
                      source=os.environ.get("XD_SOURCE") or XD_SOURCE,
                      cfg_override=os.environ.get("CFG") or None,
                      config_root=os.path.abspath(os.environ["CONFIG_ROOT"]) if os.environ.get("CONFIG_ROOT") else None)
        jobs = plan_jobs(ctx, method, kind, values)
    except (PlanError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 2
    rc = 0
    for job in jobs:
        try:
            code = run_single(job, repo_root=REPO_ROOT, emit=lambda msg: print(msg, flush=True))
        except KeyboardInterrupt:
            print(f"Interrupted; re-run the same command to resume {job.output_dir}.", file=sys.stderr)
            return 130
        rc = rc or code
    return rc


if __name__ == "__main__":
    sys.exit(main())
