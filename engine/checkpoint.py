"""Checkpoints in Dassl's layout, weights-only loadable and written atomically.

``OUTPUT_DIR/<model_name>/model.pth.tar-<N>`` (N = 1-based epoch) plus a text ``checkpoint`` file with
the latest file name; ``model-best.pth.tar`` for ``TEST.FINAL_MODEL best_val``. The dict holds
``state_dict, epoch, optimizer, scheduler, val_result`` (+ ``rng_state`` written by the trainer so
that ``--resume`` is bit-exact) and only tensors, numbers, strings, None, lists, tuples and dicts,
so ``torch.load(weights_only=True)`` reads it.
"""
import os
from collections import OrderedDict

import torch

from engine.utils.io import atomic_torch_save, atomic_write_text
from engine.utils.logger import get_logger

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint_path",
    "resume_from_dir",
    "strip_module_prefix",
    "check_weights_only_safe",
    "POINTER_FILE",
    "BEST_FILE",
]

POINTER_FILE = "checkpoint"
BEST_FILE = "model-best.pth.tar"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; one-line message naming the file."""


_SAFE_SCALARS = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def check_weights_only_safe(obj, where="checkpoint"):
    """Raise TypeError naming the first entry that ``torch.load(weights_only=True)`` could not read."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SAFE_SCALARS):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_weights_only_safe(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; checkpoints take plain keys only")
            check_weights_only_safe(value, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__name__}; checkpoints take only tensors, numbers, "
        "strings, None, lists and dicts"
    )


def strip_module_prefix(state_dict):
    """Drop a leading ``module.`` (DataParallel) from every key."""
    out = OrderedDict()
    for k, v in state_dict.items():
        out[k[7:] if k.startswith("module.") else k] = v
    return out


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write ``state`` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` atomically; returns the path.

    Also rewrites the ``checkpoint`` pointer file; ``is_best`` additionally writes ``model-best.pth.tar``.
    """
    os.makedirs(save_dir, exist_ok=True)
    if remove_module_from_keys and "state_dict" in state:
        state = dict(state)
        state["state_dict"] = strip_module_prefix(state["state_dict"])
    check_weights_only_safe(state)
    if not model_name:
        model_name = f"model.pth.tar-{state['epoch']}"
    fpath = os.path.join(save_dir, model_name)
    atomic_torch_save(state, fpath)
    get_logger().info(f"Checkpoint saved to {fpath}")
    atomic_write_text(os.path.join(save_dir, POINTER_FILE), model_name + "\n")
    if is_best:
        best = os.path.join(save_dir, BEST_FILE)
        atomic_torch_save(state, best)
        get_logger().info(f'Best checkpoint saved to "{best}"')
    return fpath


def load_checkpoint(fpath, map_location="cpu"):
    """``torch.load(fpath, weights_only=True)`` with one-line errors for a missing or legacy file."""
    if not fpath or not os.path.isfile(fpath):
        raise FileNotFoundError(f'Checkpoint file not found: "{fpath}"')
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception as e:
        if isinstance(e, (OSError, MemoryError)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f'Cannot load "{fpath}" as a weights-only checkpoint ({first}); '
            "a legacy Dassl checkpoint must be converted with tools/convert_checkpoint.py first"
        ) from None


def latest_checkpoint_path(fdir):
    """Path named by ``fdir/checkpoint``, or None if the pointer file does not exist."""
    pointer = os.path.join(fdir, POINTER_FILE)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, "r", encoding="utf-8") as f:
        name = f.readline().strip()
    if not name:
        raise ValueError(f"Checkpoint pointer file is empty: {pointer}")
    return os.path.join(fdir, name)


def resume_from_dir(fdir, model, optimizer=None, scheduler=None):
    """Restore model/optimizer/scheduler from the latest checkpoint in ``fdir``; returns the start epoch.

    The start epoch is the saved (1-based) epoch, i.e. the 0-based index of the next epoch to run.
    """
    fpath = latest_checkpoint_path(fdir)
    if fpath is None:
        raise FileNotFoundError(f'No "{POINTER_FILE}" pointer file in {fdir}')
    logger = get_logger()
    logger.info(f'Loading checkpoint from "{fpath}"')
    ckpt = load_checkpoint(fpath)
    model.load_state_dict(ckpt["state_dict"])
    logger.info("Loaded model weights")
    if optimizer is not None and ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
        logger.info("Loaded optimizer")
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
        logger.info("Loaded scheduler")
    start_epoch = int(ckpt["epoch"])
    logger.info(f"Previous epoch: {start_epoch}")
    return start_epoch
