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
this repository (before/after comparisons with one tool). Prints a table per phase; ``--json``
writes ``{environment, opts, rows}`` atomically. Bad input: one ``error: ...`` line, exit status 2;
a method that fails while measured is reported in its row and the exit status is 1.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from types import SimpleNamespace

TOOL = os.path.abspath(__file__)
REPO_ROOT = os.path.dirname(os.path.dirname(TOOL))
EXIT_USAGE = 2
EXIT_FAILED = 1


def default_methods():
    """Every declared method's trainer name, in table order (``repro.methods.METHODS``)."""
    from repro.methods import METHODS

    return tuple(spec.trainer for spec in METHODS.values())


PHASES = ("train", "eval")
#: ``KEY=VALUE`` pieces of a method spec are separated by ``:`` followed by an upper-case dotted key
SPEC_SEPARATOR = re.compile(r":(?=[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)+=)")


# ------------------------------------------------------------------------------ command line
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


def git_state(root):
    """``(commit, dirty)`` of the checkout at ``root``; ``(None, None)`` without git."""
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


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


# ------------------------------------------------------------------------------ methods and configs
class Variant(SimpleNamespace):
    """One measured configuration: ``arg`` (the spec as given), ``spec`` (MethodSpec), ``opts`` (its own)."""

    @property
    def name(self):
        extra = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(self.opts[::2], self.opts[1::2]))
        return f"{self.spec.trainer} {extra}".strip()


def parse_method_spec(text):
    """``NAME[:KEY=VALUE[:KEY=VALUE ...]]`` -> ``(NAME, [KEY, VALUE, ...])``."""
    from engine.utils.cli import CONFIG_KEY

    name, _, rest = text.partition(":")
    opts = []
    for piece in SPEC_SEPARATOR.split(rest) if rest else []:
        key, eq, value = piece.partition("=")
        if not eq or not CONFIG_KEY.match(key):
            raise ValueError(f"--methods {text!r}: expected NAME[:KEY=VALUE...] with an upper-case dotted KEY, "
                             f"got {piece!r}")
        opts += [key, value]
    return name, opts


def resolve_methods(names):
    """Variants in the given order (duplicates dropped); ``all`` = every declared method."""
    from repro.methods import get_method

    if [n.lower() for n in names] == ["all"]:
        names = default_methods()
    variants = []
    for text in names:
        name, opts = parse_method_spec(text)
        variant = Variant(arg=text, spec=get_method(name), opts=opts)
        if all((v.spec, v.opts) != (variant.spec, variant.opts) for v in variants):
            variants.append(variant)
    return variants


def method_cfg(variant, args, opts, code_root):
    """Frozen config: defaults -> trainer nodes -> base-to-novel YAML -> flags -> opts -> the variant's opts."""
    from engine.config import setup_cfg
    from engine.trainer import TRAINER_REGISTRY
    from trainers.config import extend_cfg

    spec = variant.spec
    config_file = os.path.join(code_root, "configs", "trainers", spec.config_dir, spec.b2n_cfg + ".yaml")
    cls = TRAINER_REGISTRY.get(spec.trainer)
    extra = ["MODEL.BACKBONE.RANDOM_INIT", "True", "USE_CUDA", str(args.device != "cpu"), "SEED", str(args.seed)]
    if args.batch_size is not None:
        extra += ["DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch_size)]
    if args.eval_batch_size is not None:
        extra += ["DATALOADER.TEST.BATCH_SIZE", str(args.eval_batch_size)]
    if args.prec is not None and cls.CFG_NODE:
        extra += [f"TRAINER.{cls.CFG_NODE}.PREC", args.prec]
    ns = SimpleNamespace(config_file=config_file, trainer=spec.trainer, backbone=args.backbone,
                         opts=extra + list(opts) + list(variant.opts))
    return setup_cfg(ns, extend=extend_cfg), cls, os.path.relpath(config_file, code_root)


def dataless_trainer(cls, cfg, classnames):
    """The trainer of ``cfg`` for ``classnames`` without a dataset, through the Python API
    (``engine.api.from_config``); a ``--code-root`` checkout that predates the API gets the same
    class-names-only data loader here."""
    try:
        from engine.api import from_config
    except ImportError:
        return _legacy_dataless_trainer_class(cls, classnames)(cfg)
    return from_config(cfg, classnames, verbose=True).trainer


def _legacy_dataless_trainer_class(cls, classnames):
    """``cls`` with ``build_data_loader`` replaced (checkouts without ``engine.api``)."""

    def build_data_loader(self):
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
        self.dm = None
        self.num_classes = len(classnames)
        self.num_source_domains = 1
        self.lab2cname = dict(enumerate(classnames))
        self.classnames = list(classnames)

    return type(cls.__name__, (cls,), {"build_data_loader": build_data_loader})


# ------------------------------------------------------------------------------ measuring helpers
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, steps, warmup, before_each=None):
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times; return the per-call seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if before_each is not None:
            before_each()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class TextPasses:
    """Forward hooks on every ``PromptedTextEncoder`` of a model, recording ``(rows, length)`` per call.

    ``length`` and ``rows`` come from the encoder's ``last_shape`` (positions actually run) when the
    measured code has it; else from the input embeddings ``[rows, context_length, D]`` ("inferred").
    """

    def __init__(self, model):
        from engine.backbone import PromptedTextEncoder

        self.calls = []
        self.handles = [m.register_forward_hook(self._hook, with_kwargs=True)
                        for m in model.modules() if isinstance(m, PromptedTextEncoder)]

    def _hook(self, module, args, kwargs, output):
        shape = getattr(module, "last_shape", None)
        if shape is not None:
            self.calls.append((int(shape[0]), int(shape[1]), "last_shape"))
        else:
            emb = args[0] if args else kwargs["embeddings"]
            self.calls.append((int(emb.shape[0]), int(emb.shape[1]), "inferred"))

    def clear(self):
        self.calls = []

    def summary(self, prefix):
        """``{prefix}_text_passes/_rows/_len/_tokens`` of the calls since ``clear`` (None when there were none)."""
        calls = self.calls
        rows = sum(c[0] for c in calls)
        return {f"{prefix}_text_passes": len(calls), f"{prefix}_text_rows": rows if calls else None,
                f"{prefix}_text_len": max(c[1] for c in calls) if calls else None,
                f"{prefix}_text_tokens": sum(c[0] * c[1] for c in calls) if calls else None,
                f"{prefix}_text_len_source": calls[-1][2] if calls else None}

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _rss_mib():
    """Current resident set size of this process (Linux ``/proc/self/statm``), MiB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_rss_peak():
    """Reset this process's RSS high-water mark to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib():
    """``VmHWM`` (peak RSS since the process started or the last reset), MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class PhaseMemory:
    """Peak memory of one phase: ``start()`` then ``result(prefix)`` -> ``{prefix}_mem_base_mib``, ``_peak_mem_mib``."""

    def __init__(self, device):
        self.device = device
        self.kind = None

    def start(self):
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda_max_memory_allocated"
        else:
            self.base = _rss_mib()
            self.kind = "cpu_peak_rss_since_phase_start" if _reset_rss_peak() else "cpu_process_max_rss"

    def result(self, prefix):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "cpu_peak_rss_since_phase_start":
            peak = _rss_peak_mib()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {f"{prefix}_mem_base_mib": self.base, f"{prefix}_peak_mem_mib": peak, "mem_kind": self.kind}


# ------------------------------------------------------------------------------ one method
def build_trainer(variant, args, opts, code_root, classnames, logger):
    """``(trainer, cfg, row)``: the dataless trainer and the row's common fields (build time included)."""
    import torch

    from engine.utils.seed import set_random_seed

    cfg, cls, config = method_cfg(variant, args, opts, code_root)
    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    set_random_seed(args.seed)
    logger.info(f"[benchmark] {variant.name}: building ({config}, {cfg.MODEL.BACKBONE.NAME}, C={len(classnames)})")
    _sync(device)
    start = time.perf_counter()
    trainer = dataless_trainer(cls, cfg, classnames)
    if hasattr(trainer.model, "kd_targets"):  # CoMMA: frozen-CLIP hidden states, computed once per class set
        trainer.model.kd_targets()
    _sync(device)
    build_s = time.perf_counter() - start
    gc.collect()
    mem_after_build = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mib()
    row = {"method": variant.spec.trainer, "variant": variant.name, "variant_opts": list(variant.opts),
           "label": args.label, "config": config, "backbone": cfg.MODEL.BACKBONE.NAME, "classes": len(classnames),
           "classnames": args.classnames or "class i", "prec": trainer.precision.name, "device": device.type,
           "batch": cfg.DATALOADER.TRAIN_X.BATCH_SIZE, "eval_batch": cfg.DATALOADER.TEST.BATCH_SIZE,
           "test_size": args.test_size, "trainable": sum(p.numel() for _, p in trainer.trainable_parameters()),
           "build_s": build_s, "mem_after_build_mib": mem_after_build}
    return trainer, cfg, device, row


def train_phase(trainer, cfg, device, args, passes, gen, logger, name):
    """``forward_backward`` timings and the text work of one step (None fields when nothing is trained)."""
    import torch

    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    out = {"train_step_ms_mean": None, "train_step_ms_p50": None, **passes.summary("train")}
    if not any(trainer._optims[n] is not None for n in trainer.get_model_names()):
        logger.info(f"[benchmark] {name}: nothing to train (no optimiser), training step skipped")
        return out
    size = tuple(cfg.INPUT.SIZE)
    data = {"img": torch.randn(batch, 3, *size, generator=gen),
            "label": torch.randint(0, trainer.num_classes, (batch,), generator=gen)}
    logger.info(f"[benchmark] {name}: {args.warmup} + {args.steps} training steps (batch {batch})")
    trainer.set_model_mode("train")
    times = _timed(lambda: trainer.forward_backward(data), device, args.steps, args.warmup, passes.clear)
    out.update(passes.summary("train"))  # the last timed step's text passes
    out["train_step_ms_mean"] = 1000 * statistics.fmean(times)
    out["train_step_ms_p50"] = 1000 * statistics.median(times)
    return out


def eval_phase(trainer, cfg, device, args, passes, gen, logger, name):
    """Text features once (``before_evaluation``), image throughput, and the whole-test-set estimates."""
    import torch

    eval_bs = cfg.DATALOADER.TEST.BATCH_SIZE
    images = torch.randn(eval_bs, 3, *tuple(cfg.INPUT.SIZE), generator=gen).to(trainer.device)
    logger.info(f"[benchmark] {name}: text features once, then {args.warmup} + {args.eval_batches} "
                f"evaluation batches (batch {eval_bs})")
    trainer.set_model_mode("eval")
    with torch.no_grad():
        passes.clear()
        _sync(device)
        start = time.perf_counter()
        trainer.before_evaluation()
        _sync(device)
        text_s = time.perf_counter() - start
        once = passes.summary("eval")
        try:
            times = _timed(lambda: trainer.model_inference(images), device, args.eval_batches, args.warmup,
                           passes.clear)
        finally:
            trainer.after_evaluation()
        per_batch = passes.summary("eval")
    throughput = eval_bs * len(times) / sum(times)
    images_s = args.test_size / throughput
    out = {"eval_text_s": text_s, "eval_img_s": throughput, "eval_set_s": images_s, "eval_set_recompute_s": None}
    if once["eval_text_passes"]:  # a class-text cache (computed once per evaluation)
        out.update(once, eval_text_scope="once")
        out["eval_set_s"] = text_s + images_s
        out["eval_set_recompute_s"] = math.ceil(args.test_size / eval_bs) * text_s + images_s
    elif per_batch["eval_text_passes"]:  # text depends on the image (CoCoOp): inside every batch
        out.update(per_batch, eval_text_scope="per_batch")
    else:  # fixed text features computed at build (VPT, zero-shot CLIP)
        out.update(once, eval_text_scope="build")
    return out


def measure(variant, phases, args, opts, code_root, classnames, logger):
    """Build one variant's trainer and run ``phases`` in this process; returns its row."""
    import torch

    trainer, cfg, device, row = build_trainer(variant, args, opts, code_root, classnames, logger)
    passes = TextPasses(trainer.model)
    gen = torch.Generator().manual_seed(args.seed)
    phase_fn = {"train": train_phase, "eval": eval_phase}
    try:
        for phase in phases:
            memory = PhaseMemory(device)
            memory.start()
            row.update(phase_fn[phase](trainer, cfg, device, args, passes, gen, logger, variant.name))
            row.update(memory.result(phase))
            row[f"{phase}_pid"] = os.getpid()
    finally:
        passes.remove()
    source = row.get("train_text_len_source") or row.get("eval_text_len_source")
    row["text_len_source"] = source
    for phase in PHASES:
        row.pop(f"{phase}_text_len_source", None)
    return row


# ------------------------------------------------------------------------------ running the variants
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


def environment(args, code_root, phases, isolate):
    """Machine, software and run description stored next to the rows."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    commit, dirty = git_state(code_root)
    use_gpu = torch.cuda.is_available() and args.device != "cpu"
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if use_gpu else None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "code_root": code_root, "code_commit": commit, "code_dirty": dirty, "label": args.label,
            "device": args.device, "phases": list(phases), "isolate": isolate, "classes": args.classes,
            "classnames": args.classnames or "class i", "steps": args.steps, "warmup": args.warmup,
            "eval_batches": args.eval_batches, "test_size": args.test_size}


# ------------------------------------------------------------------------------ output
def with_code_state(rows, code_root):
    """Rows with ``code_root``/``code_commit``/``code_dirty`` (a child's row keeps what it imported)."""
    commit, dirty = git_state(code_root)
    for row in rows:
        for key, value in (("code_root", code_root), ("code_commit", commit), ("code_dirty", dirty)):
            row.setdefault(key, value)
    return rows


def write_json(args, opts, code_root, phases, isolate, rows, complete):
    """``--json``: ``{environment, opts, rows}`` written atomically; ``environment.complete`` False while running."""
    if not args.json:
        return
    from engine.utils.io import atomic_write_json

    env = environment(args, code_root, phases, isolate)
    env["complete"] = complete
    atomic_write_json(args.json, {"environment": env, "opts": list(opts), "rows": with_code_state(rows, code_root)})


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _text_cell(row, prefix):
    rows, length = row.get(f"{prefix}_text_rows"), row.get(f"{prefix}_text_len")
    if rows is None:
        return "-"
    mark = "*" if row.get("text_len_source") == "inferred" else ""
    return f"{rows:,} x {length}{mark} = {row[f'{prefix}_text_tokens']:,}"


def format_tables(rows, phases):
    """One ``tabulate`` pipe table per phase (``-`` where a value does not apply; ``*`` = inferred length)."""
    from tabulate import tabulate

    labelled = any(r.get("label") for r in rows)
    head = ["method"] + (["label"] if labelled else []) + ["prec"]
    tables = []

    def lead(r):
        return [r.get("variant", r.get("method"))] + ([r.get("label", "")] if labelled else []) + [_fmt(r.get("prec"))]

    def failed(r, phase):
        errors = r.get("errors") or {}
        return next((v for k, v in errors.items() if phase in k.split("+")), None)

    if "train" in phases:
        body = []
        for r in rows:
            err = failed(r, "train")
            trained = r.get("train_step_ms_mean") is not None
            body.append(lead(r) + ([f"failed: {err}"] + [""] * 7 if err else [
                _fmt(r.get("batch")) if trained else "-", _fmt(r.get("trainable")), _fmt(r.get("build_s"), 2),
                _fmt(r.get("train_step_ms_mean")), _fmt(r.get("train_step_ms_p50")), _text_cell(r, "train"),
                _fmt(r.get("train_peak_mem_mib"), 0), _fmt(r.get("train_mem_base_mib"), 0)]))
        tables.append(tabulate(body, headers=head + [
            "batch", "trainable params", "build (s)", "train step mean (ms)", "train step p50 (ms)",
            "text rows x len = tokens", "train peak mem (MiB)", "mem at start (MiB)"],
            tablefmt="pipe", disable_numparse=True))
    if "eval" in phases:
        body = []
        for r in rows:
            err = failed(r, "eval")
            body.append(lead(r) + ([f"failed: {err}"] + [""] * 7 if err else [
                _fmt(r.get("eval_batch")), _fmt(r.get("eval_text_s"), 2), _fmt(r.get("eval_img_s")),
                _text_cell(r, "eval") + (" /batch" if r.get("eval_text_scope") == "per_batch" else ""),
                _fmt(r.get("eval_set_s")), _fmt(r.get("eval_set_recompute_s")),
                _fmt(r.get("eval_peak_mem_mib"), 0), _fmt(r.get("eval_mem_base_mib"), 0)]))
        n = next((r["test_size"] for r in rows if r.get("test_size")), "N")
        tables.append(tabulate(body, headers=head + [
            "eval batch", "text once (s)", "eval (img/s)", "text rows x len = tokens", f"{n} images (s)",
            f"{n} images, text per batch (s)", "eval peak mem (MiB)", "mem at start (MiB)"],
            tablefmt="pipe", disable_numparse=True))
    if any(r.get("text_len_source") == "inferred" for r in rows):
        tables.append("* length inferred from the input shape (code without PromptedTextEncoder.last_shape): "
                      "every context position")
    return "\n\n".join(tables)


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


if __name__ == "__main__":
    sys.exit(main())
