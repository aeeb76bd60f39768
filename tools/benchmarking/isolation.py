"""Running the variants: in this process, or one child process of ``tools/benchmark.py`` per (method, phase)
(``--isolate``), so that each phase's peak memory is its own; rows merged, failures recorded per phase."""
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections import deque

from . import EXIT_USAGE, TOOL
from .measure import measure


def child_command(variant, phase, args, opts, code_root, out_path):
    """The command that measures one (variant, phase) in a fresh process of this tool."""
    cmd = [sys.executable, TOOL, "--methods", variant.arg, "--phase", phase, "--isolate", "off",
           "--backbone", args.backbone, "--classes", str(args.classes), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--eval-batches", str(args.eval_batches), "--test-size", str(args.test_size),
           "--device", args.device, "--seed", str(args.seed), "--code-root", code_root, "--child-out", out_path]
    for flag, value in (("--classnames", args.classnames), ("--batch-size", args.batch_size),
                        ("--eval-batch-size", args.eval_batch_size), ("--prec", args.prec), ("--label", args.label)):
        if value not in (None, ""):
            cmd += [flag, str(value)]
    return cmd + ["--"] + list(opts)


def run_child(cmd):
    """Run ``cmd``, relaying its stderr live; ``(returncode, last stderr lines)``."""
    tail = deque(maxlen=20)
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stderr:
            if not line.startswith("error: "):  # a child's one-line error is re-raised by the parent
                sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
    sys.stderr.flush()
    return proc.returncode, list(tail)


def measure_isolated(variant, phases, args, opts, code_root, logger):
    """One child process per phase; the rows merged into one (a failed phase -> ``errors``)."""
    row = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        for phase in phases:
            out_path = os.path.join(tmp, f"{phase}.json")
            logger.info(f"[benchmark] {variant.name}: {phase} phase in a child process")
            rc, tail = run_child(child_command(variant, phase, args, opts, code_root, out_path))
            if rc == EXIT_USAGE and tail and tail[-1].startswith("error: "):
                raise ValueError(tail[-1][len("error: "):])
            if rc == 0 and os.path.isfile(out_path):
                with open(out_path, encoding="utf-8") as f:
                    child = json.load(f)
                for key, value in child.items():  # common fields from the first phase, phase fields from each
                    if key.startswith(f"{phase}_") or row.get(key) is None:
                        row[key] = value
            else:
                lines = [t for t in tail if t.strip()]
                row.setdefault("errors", {})[phase] = f"exit status {rc}: {lines[-1] if lines else ''}".strip()
    row.setdefault("method", variant.spec.trainer)
    row.setdefault("variant", variant.name)
    return row


def run_all(variants, phases, args, opts, code_root, classnames, isolate, logger, on_row=None):
    """A row per variant: measured in this process, or one child process per phase under ``isolate``.

    ``on_row(rows)`` is called after each variant (the partial ``--json``, kept if a later one is killed).
    """
    import torch

    rows = []
    for variant in variants:
        todo = [p for p in phases if not (p == "train" and variant.spec.zero_shot)]
        if isolate:
            row = measure_isolated(variant, todo, args, opts, code_root, logger)
        else:
            try:
                row = measure(variant, todo, args, opts, code_root, classnames, logger)
            except RuntimeError as e:  # e.g. out of memory: recorded, the other methods still run
                if args.child_out:
                    raise
                logger.error(f"[benchmark] {variant.name}: {type(e).__name__}: {e}")
                row = {"method": variant.spec.trainer, "variant": variant.name,
                       "errors": {"+".join(todo): f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}}
        row["isolated"] = isolate
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows
