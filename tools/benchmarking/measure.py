"""One method in this process: its dataless trainer (``engine.api.from_config``: class names, no dataset,
seeded random CLIP weights), then the training phase (``forward_backward`` on a random batch) and the
evaluation phase (text features once, image throughput, whole-test-set estimates); one row of results."""
import gc
import math
import os
import statistics
import time

from . import PHASES
from .memory import PhaseMemory, rss_mib
from .text_work import TextPasses
from .timing import sync, timed
from .variants import method_cfg


def build_trainer(variant, args, opts, code_root, classnames, logger):
    """``(trainer, cfg, row)``: the dataless trainer and the row's common fields (build time included)."""
    import torch

    from engine.api import from_config
    from engine.utils.seed import set_random_seed

    cfg, _, config = method_cfg(variant, args, opts, code_root)
    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    set_random_seed(args.seed)
    logger.info(f"[benchmark] {variant.name}: building ({config}, {cfg.MODEL.BACKBONE.NAME}, C={len(classnames)})")
    sync(device)
    start = time.perf_counter()
    trainer = from_config(cfg, classnames, verbose=True).trainer  # the class names, no dataset
    if hasattr(trainer.model, "kd_targets"):  # CoMMA: frozen-CLIP hidden states, computed once per class set
        trainer.model.kd_targets()
    sync(device)
    build_s = time.perf_counter() - start
    gc.collect()
    mem_after_build = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib()
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
    times = timed(lambda: trainer.forward_backward(data), device, args.steps, args.warmup, passes.clear)
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
        sync(device)
        start = time.perf_counter()
        trainer.before_evaluation()
        sync(device)
        text_s = time.perf_counter() - start
        once = passes.summary("eval")
        try:
            times = timed(lambda: trainer.model_inference(images), device, args.eval_batches, args.warmup,
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
