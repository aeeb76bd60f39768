"""Speed, text-encoder work and memory of each method with its official base-to-novel config, without a dataset.

    python tools/benchmark.py [--methods SPEC [SPEC ...] | all] [--backbone ViT-B/16] [--classes 100]
        [--classnames FILE] [--phase train|eval|both] [--batch-size N] [--eval-batch-size N]
        [--steps 10] [--warmup 2] [--eval-batches 2] [--test-size 1000] [--device auto|cpu|cuda]
        [--prec fp32|fp16|bf16|amp] [--isolate auto|on|off] [--code-root DIR] [--label TEXT]
        [--json OUT.json] [KEY VALUE ...]

A method SPEC is a method name (``repro.methods``) optionally followed by config opts for
that method only: ``NAME[:KEY=VALUE[:KEY=VALUE ...]]``, e.g. ``CoMMA:TRAINER.COMMA.KD_TOKENS=real``;
the same method may appear several times with different opts. The trainer is the registered class,
built by the Python API (``engine.api.from_config``: its normal ``__init__``, class names instead of
a dataset) on seeded random CLIP weights (``MODEL.BACKBONE.RANDOM_INIT``) with ``--classes`` C class
names (the first C lines of ``--classnames``, else ``"class i"``). Per method and phase it measures:

* train: ``forward_backward`` on a random batch (``--steps`` timed after ``--warmup``);
* eval: the trainer's ``before_evaluation`` once (``eval_text_s``: class text features), then
  ``model_inference`` throughput over ``--eval-batches`` batches, and, computed from these measured
  parts for a ``--test-size`` N test set of batches of B: ``eval_set_s = eval_text_s + N / throughput``
  and ``eval_set_recompute_s = ceil(N / B) * eval_text_s + N / throughput`` (text recomputed per batch);
* text-encoder work per train step / eval text pass: rows, positions per row and their product,
  from ``PromptedTextEncoder.last_shape`` when the code has it, else inferred from the input shape;
* peak memory per phase: CUDA ``max_memory_allocated`` (reset per phase); CPU the peak RSS since the
  phase started (Linux ``clear_refs`` reset), in a child process per (method, phase) under ``--isolate``.

``--code-root DIR`` imports ``engine``/``trainers`` and reads ``configs`` from another checkout of
this repository (before/after comparisons with one tool); it must have the Python API (``engine/api.py``).
Prints a table per phase; ``--json`` writes ``{environment, opts, rows}`` atomically. Bad input: one
``error: ...`` line, exit status 2; a method that fails while measured is reported in its row and the exit
status is 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import EXIT_FAILED, EXIT_USAGE, PHASES, REPO_ROOT
from .isolation import run_all
from .output import format_tables, with_code_state, write_json
from .variants import method_cfg, resolve_methods


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.replace("``", ""),  # the console shows no reST markup
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["all"],
                   help="method specs NAME[:KEY=VALUE...], or all (default: every declared method)")
    p.add_argument("--backbone", default="ViT-B/16", help="MODEL.BACKBONE.NAME (default ViT-B/16)")
    p.add_argument("--classes", type=int, default=100, help="number of classes C (default 100)")
    p.add_argument("--classnames", default="", help="file with one class name a line; the first C are used")
    p.add_argument("--phase", choices=("train", "eval", "both"), default="both")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size for every method (default: each config's DATALOADER.TRAIN_X.BATCH_SIZE)")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="evaluation batch size (default: each config's DATALOADER.TEST.BATCH_SIZE)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps/batches before timing (default 2)")
    p.add_argument("--eval-batches", type=int, default=2, help="timed evaluation batches (default 2)")
    p.add_argument("--test-size", type=int, default=1000, help="test-set size N for eval_set_s (default 1000)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--prec", choices=("fp32", "fp16", "bf16", "amp"), default=None,
                   help="TRAINER.<NODE>.PREC for every method (default: each config's)")
    p.add_argument("--isolate", choices=("auto", "on", "off"), default="auto",
                   help="one child process per (method, phase); auto = on for CPU runs of more than one")
    p.add_argument("--code-root", default=REPO_ROOT, help="checkout whose engine/trainers/configs are measured")
    p.add_argument("--label", default="", help="free text stored in every row (e.g. before, after)")
    p.add_argument("--json", default="", help="also write the rows and the environment to this JSON file")
    p.add_argument("--seed", type=int, default=1, help="seed for the random weights and inputs (default 1)")
    p.add_argument("--child-out", default="", help=argparse.SUPPRESS)  # internal: one isolated measurement
    return p


def prescan_code_root(argv):
    """``--code-root`` from the raw argv (before ``engine`` can be imported), validated; default this repo."""
    root = REPO_ROOT
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        if tok == "--code-root" and i + 1 < len(argv):
            root = argv[i + 1]
        elif tok.startswith("--code-root="):
            root = tok.split("=", 1)[1]
    root = os.path.realpath(root)
    for package in ("engine", "trainers"):
        if not os.path.isfile(os.path.join(root, package, "__init__.py")):
            raise ValueError(f"--code-root {root}: no {package}/__init__.py (expected a checkout of this repository)")
    if not os.path.isfile(os.path.join(root, "engine", "api.py")):
        raise ValueError(f"--code-root {root}: no engine/api.py (checkouts older than the Python API are not "
                         "supported)")
    return root


def import_code_root(root):
    """Put ``root`` first on ``sys.path`` (so ``engine``, ``trainers``, ``datasets`` come from it) and check."""
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != root]
    sys.path.insert(0, root)
    engine = importlib.import_module("engine")
    found = os.path.dirname(os.path.dirname(os.path.realpath(engine.__file__)))
    if found != root:
        raise ValueError(f"--code-root {root}: engine was already imported from {found}")
    return found


def check_args(args, opts):
    """One-line ``ValueError`` for a bad count, an odd opts list or an unavailable device."""
    for name in ("classes", "steps", "eval_batches", "test_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if len(opts) % 2:
        raise ValueError(f"config opts must be KEY VALUE pairs, got an odd list: {opts}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but CUDA is not available")


def read_classnames(path, count):
    """The first ``count`` names of ``path`` (one a line, blank lines skipped), or ``class i`` without a file."""
    if not path:
        return [f"class {i}" for i in range(count)]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--classnames: no file at {path}")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) < count:
        raise ValueError(f"--classnames {path}: {len(names)} class names, fewer than --classes {count}")
    return names[:count]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code_root = import_code_root(prescan_code_root(argv))
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    from engine.utils.cli import split_argv
    from engine.utils.logger import log_to_stderr

    flags, opts = split_argv(argv)
    args = build_parser().parse_args(flags)
    logger = log_to_stderr()
    phases = PHASES if args.phase == "both" else (args.phase,)
    try:
        check_args(args, opts)
        classnames = read_classnames(args.classnames, args.classes)
        variants = resolve_methods(args.methods)
        import torch

        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        for package in ("datasets", "trainers"):  # registrations, as train.py
            importlib.import_module(package)
        for variant in variants:  # every config (and variant opt) checked before anything is measured
            method_cfg(variant, args, opts, code_root)
        if args.child_out and len(variants) != 1:
            raise ValueError("--child-out measures exactly one method")
        isolate = {"on": True, "off": False}.get(args.isolate, args.device == "cpu" and len(variants) * len(phases) > 1)
        isolate = isolate and not args.child_out
        rows = run_all(variants, phases, args, opts, code_root, classnames, isolate, logger,
                       on_row=None if args.child_out else lambda done: write_json(args, opts, code_root, phases,
                                                                                   isolate, done, False))
    except (KeyError, ValueError, FileNotFoundError) as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE

    if args.child_out:
        from engine.utils.io import atomic_write_json

        atomic_write_json(args.child_out, with_code_state(rows, code_root)[0])
        return 0
    print(format_tables(rows, phases))
    if args.json:
        write_json(args, opts, code_root, phases, isolate, rows, True)
        logger.info(f"[benchmark] wrote {args.json}")
    failures = [(r.get("variant"), phase, msg) for r in rows for phase, msg in (r.get("errors") or {}).items()]
    for name, phase, msg in failures:
        logger.error(f"[benchmark] {name} ({phase}) failed: {msg}")
    return EXIT_FAILED if failures else 0
