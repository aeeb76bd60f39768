"""Speed and cost of each method with its official base-to-novel config, without a dataset on disk.

    python tools/benchmark.py [--methods CoMMA MaPLe CoOp CoCoOp IVLP VPT ZeroshotCLIP | all]
        [--backbone ViT-B/16] [--classes 100] [--batch-size N] [--eval-batch-size N] [--steps 10]
        [--warmup 2] [--device auto|cpu|cuda] [--prec fp32|fp16|bf16|amp] [--json OUT.json] [KEY VALUE ...]

Per method (config from ``engine.repro.methods``: the base-to-novel file under ``configs/trainers``),
with seeded random CLIP weights (``MODEL.BACKBONE.RANDOM_INIT True``; speed does not depend on the
values) and ``--classes`` classes named ``"class 0" ...``, it measures:

* ``trainable``: trainable parameters, from the trainer's own ``trainable_parameters()`` (the number
  the build logs as ``Trainable parameters: N``);
* ``build_s``: one-time build cost, i.e. the trainer's ``build_model`` (CLIP load + cast + method
  build + optimiser) plus, for methods with a knowledge-distillation target (CoMMA), computing it;
* ``train_step_ms`` mean / p50: ``forward_backward`` (forward, loss, backward, optimiser step) on a
  batch of random images and labels, over ``--steps`` steps after ``--warmup`` untimed ones;
* ``eval_img_s``: evaluation throughput (``model_inference`` under ``no_grad`` after the trainer's
  ``before_evaluation``, i.e. with the class text features cached as ``test()`` does);
* ``peak_mem_mib``: CUDA ``max_memory_allocated`` over the method's build+train+eval; on CPU the
  process's maximum RSS (``getrusage``), a process-wide high-water mark: approximate, and it never
  decreases from one method to the next in the same run.

The trainer is the registered class itself, built through its normal ``__init__`` (precision, device,
``build_model``, evaluator); only ``build_data_loader`` is replaced so that it sets the class names
instead of reading a dataset. Trailing ``KEY VALUE`` opts (from the first upper-case dotted key, or
after ``--``) override every method's config. Prints a table; ``--json`` writes the rows atomically.
Bad input -> one ``error: ...`` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import resource
import statistics
import sys
import time
from types import SimpleNamespace

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from engine.utils.cli import split_argv  # noqa: E402

EXIT_USAGE = 2
DEFAULT_METHODS = ("CoMMA", "MaPLe", "CoOp", "CoCoOp", "IVLP", "VPT", "ZeroshotCLIP")

COLUMNS = (
    ("method", "method"), ("config", "config"), ("prec", "prec"), ("batch", "batch"),
    ("trainable", "trainable params"), ("build_s", "build (s)"), ("train_step_ms_mean", "train step mean (ms)"),
    ("train_step_ms_p50", "train step p50 (ms)"), ("eval_img_s", "eval (img/s)"), ("peak_mem_mib", "peak mem (MiB)"),
)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="method names, or all")
    p.add_argument("--backbone", default="ViT-B/16", help="MODEL.BACKBONE.NAME (default ViT-B/16)")
    p.add_argument("--classes", type=int, default=100, help="number of classes C (default 100)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size for every method (default: each config's DATALOADER.TRAIN_X.BATCH_SIZE)")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="evaluation batch size (default: each config's DATALOADER.TEST.BATCH_SIZE)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--prec", choices=("fp32", "fp16", "bf16", "amp"), default=None,
                   help="TRAINER.<NODE>.PREC for every method (default: each config's)")
    p.add_argument("--json", default="", help="also write the rows and the environment to this JSON file")
    p.add_argument("--seed", type=int, default=1, help="seed for the random weights and inputs (default 1)")
    return p


def check_args(args, opts):
    """One-line ``ValueError`` for a bad count or an odd opts list."""
    for name in ("classes", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
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


def resolve_methods(names):
    """Method specs (``engine.repro.methods``) in the given order; ``all`` = the seven methods."""
    from engine.repro.methods import get_method

    if [n.lower() for n in names] == ["all"]:
        names = DEFAULT_METHODS
    specs = []
    for name in names:
        spec = get_method(name)
        if spec not in specs:
            specs.append(spec)
    return specs


def method_cfg(spec, args, opts):
    """Frozen config: defaults -> trainer nodes -> the method's base-to-novel YAML -> flags -> opts."""
    from engine.config import setup_cfg
    from engine.trainer import TRAINER_REGISTRY
    from trainers.config import extend_cfg

    config_file = os.path.join(REPO_ROOT, "configs", "trainers", spec.config_dir, spec.b2n_cfg + ".yaml")
    cls = TRAINER_REGISTRY.get(spec.trainer)
    extra = ["MODEL.BACKBONE.RANDOM_INIT", "True", "USE_CUDA", str(args.device != "cpu"),
             "SEED", str(args.seed)]
    if args.batch_size is not None:
        extra += ["DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch_size)]
    if args.eval_batch_size is not None:
        extra += ["DATALOADER.TEST.BATCH_SIZE", str(args.eval_batch_size)]
    if args.prec is not None and cls.CFG_NODE:
        extra += [f"TRAINER.{cls.CFG_NODE}.PREC", args.prec]
    ns = SimpleNamespace(config_file=config_file, trainer=spec.trainer, backbone=args.backbone,
                         opts=extra + list(opts))
    return setup_cfg(ns, extend=extend_cfg), cls, config_file


def dataless_trainer_class(cls, classnames):
    """``cls`` with ``build_data_loader`` replaced: sets the class names and no loaders (no dataset read)."""

    def build_data_loader(self):
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
        self.dm = None
        self.num_classes = len(classnames)
        self.num_source_domains = 1
        self.lab2cname = dict(enumerate(classnames))
        self.classnames = list(classnames)

    return type(cls.__name__, (cls,), {"build_data_loader": build_data_loader})


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, steps, warmup):
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times; return the per-step seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_mem_mib(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def benchmark_method(spec, args, opts, logger):
    """Build one method's trainer without data and measure it; returns the row (a dict)."""
    import torch

    from engine.utils.seed import set_random_seed

    cfg, cls, config_file = method_cfg(spec, args, opts)
    classnames = [f"class {i}" for i in range(args.classes)]
    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    set_random_seed(args.seed)
    logger.info(f"[benchmark] {spec.trainer}: building ({os.path.relpath(config_file, REPO_ROOT)}, "
                f"{cfg.MODEL.BACKBONE.NAME}, C={args.classes})")
    _sync(device)
    start = time.perf_counter()
    trainer = dataless_trainer_class(cls, classnames)(cfg)
    model = trainer.model
    if hasattr(model, "kd_targets"):  # CoMMA: frozen-CLIP hidden states, computed once per class set
        model.kd_targets()
    _sync(device)
    build_s = time.perf_counter() - start

    trainable = sum(p.numel() for _, p in trainer.trainable_parameters())
    size = tuple(cfg.INPUT.SIZE)
    gen = torch.Generator().manual_seed(args.seed)
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    train_batch = {"img": torch.randn(batch, 3, *size, generator=gen),
                   "label": torch.randint(0, args.classes, (batch,), generator=gen)}
    row = {"method": spec.trainer, "config": os.path.relpath(config_file, REPO_ROOT), "backbone": cfg.MODEL.BACKBONE.NAME,
           "classes": args.classes, "prec": trainer.precision.name, "device": device.type, "batch": batch,
           "eval_batch": cfg.DATALOADER.TEST.BATCH_SIZE, "trainable": trainable, "build_s": build_s,
           "train_step_ms_mean": None, "train_step_ms_p50": None}

    if trainer.get_model_names() and any(trainer._optims[n] is not None for n in trainer.get_model_names()):
        logger.info(f"[benchmark] {spec.trainer}: {args.warmup} + {args.steps} training steps (batch {batch})")
        trainer.set_model_mode("train")
        times = _timed(lambda: trainer.forward_backward(train_batch), device, args.steps, args.warmup)
        row["train_step_ms_mean"] = 1000 * statistics.fmean(times)
        row["train_step_ms_p50"] = 1000 * statistics.median(times)
    else:
        logger.info(f"[benchmark] {spec.trainer}: nothing to train (no optimiser), training step skipped")

    eval_bs = cfg.DATALOADER.TEST.BATCH_SIZE
    images = torch.randn(eval_bs, 3, *size, generator=gen)
    logger.info(f"[benchmark] {spec.trainer}: {args.warmup} + {args.steps} evaluation batches (batch {eval_bs})")
    trainer.set_model_mode("eval")
    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        trainer.before_evaluation()
        _sync(device)
        row["eval_text_cache_s"] = time.perf_counter() - start
        try:
            times = _timed(lambda: trainer.model_inference(images.to(trainer.device)), device, args.steps, args.warmup)
        finally:
            trainer.after_evaluation()
    row["eval_img_s"] = eval_bs * len(times) / sum(times)
    row["peak_mem_mib"] = _peak_mem_mib(device)
    row["peak_mem_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "process_max_rss_approx"
    return row


def run_all(specs, args, opts, logger):
    """``benchmark_method`` for each spec, freeing the previous trainer before the next is built."""
    import torch

    rows = []
    for spec in specs:
        rows.append(benchmark_method(spec, args, opts, logger))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def environment(args):
    """Machine and software description stored next to the rows."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    env = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(),
           "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "steps": args.steps, "warmup": args.warmup,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else None}
    return env


def format_table(rows):
    """The rows as a ``tabulate`` pipe table (``-`` where a measurement does not apply)."""
    from tabulate import tabulate

    def fmt(key, value):
        if value is None:
            return "-"
        if key == "trainable":
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:.2f}" if key == "build_s" else f"{value:.1f}"
        return value

    def cell(row, key):
        if key == "batch" and row.get("train_step_ms_mean") is None:
            return "-"  # the training batch size does not apply to a method with nothing to train
        return fmt(key, row.get(key))

    body = [[cell(r, k) for k, _ in COLUMNS] for r in rows]
    return tabulate(body, headers=[h for _, h in COLUMNS], tablefmt="pipe", disable_numparse=True)


def main(argv=None):
    flags, opts = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(flags)

    from engine.utils.logger import log_to_stderr

    logger = log_to_stderr()
    try:
        check_args(args, opts)
        for package in ("datasets", "trainers"):  # registrations, as train.py
            importlib.import_module(package)
        specs = resolve_methods(args.methods)
        rows = run_all(specs, args, opts, logger)
    except (KeyError, ValueError, FileNotFoundError) as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(rows))
    if args.json:
        from engine.utils.io import atomic_write_json

        atomic_write_json(args.json, {"environment": environment(args), "opts": list(opts), "rows": rows})
        logger.info(f"[benchmark] wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
