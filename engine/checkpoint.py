"""Checkpoints in Dassl's layout, weights-only loadable, checksummed and written atomically.

``OUTPUT_DIR/<model_name>/model.pth.tar-<N>`` (N = 1-based epoch) plus a text ``checkpoint`` file with
the latest file name; ``model-best.pth.tar`` for ``TEST.FINAL_MODEL best_val``. The dict holds
``state_dict, epoch, optimizer, scheduler, val_result`` (+ ``rng_state`` written by the trainer so
that ``--resume`` is bit-exact) and only tensors, numbers, strings, None, lists, tuples and dicts,
so ``torch.load(weights_only=True)`` reads it.

Integrity: ``save_checkpoint`` adds ``checksum_sha256``, a SHA-256 over every entry (tensors by
dtype, shape and bytes; dict keys in sorted order; see :func:`checkpoint_digest`). ``load_checkpoint``
checks the size, the zip directory, the required ``state_dict`` and the checksum (files without one,
older ones and the official repos', still load) and raises a one-line :class:`CheckpointError` naming
the file. :func:`latest_checkpoint_path` returns the newest *complete* checkpoint: when the one named
by the pointer file is damaged it warns and falls back to ``model.pth.tar-<N-1>``, ``<N-2>``, ...,
and stops with one line when none is usable. It also removes temp files left by killed writers.
The file format and its checks live in ``engine.checkpoint_format`` (re-exported here).
"""
import os

from engine.checkpoint_format import (BEST_FILE, CHECKSUM_KEY, EPOCH_FILE_RE, POINTER_FILE, RECOVER_HINT,
                                      CheckpointError, check_weights_only_safe, checkpoint_digest,
                                      checkpoint_file_problem, load_error_detail, strip_module_prefix,
                                      torch_load_quiet, verify_checkpoint)
from engine.legacy_checkpoint import load_official_or_native
from engine.utils.io import atomic_torch_save, atomic_write_text, remove_stale_temps
from engine.utils.logger import get_logger

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint_path",
    "resume_from_dir",
    "strip_module_prefix",
    "check_weights_only_safe",
    "checkpoint_digest",
    "verify_checkpoint",
    "checkpoint_file_problem",
    "CHECKSUM_KEY",
    "POINTER_FILE",
    "BEST_FILE",
]


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Write ``state`` (+ its ``checksum_sha256``) to ``save_dir/<model_name or model.pth.tar-<epoch>>``
    atomically; returns the path.

    Also rewrites the ``checkpoint`` pointer file; ``is_best`` additionally writes ``model-best.pth.tar``.
    """
    os.makedirs(save_dir, exist_ok=True)
    state = dict(state)
    if remove_module_from_keys and "state_dict" in state:
        state["state_dict"] = strip_module_prefix(state["state_dict"])
    check_weights_only_safe(state)
    state[CHECKSUM_KEY] = checkpoint_digest(state)
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
    """``torch.load(fpath, weights_only=True)``, verified (:func:`verify_checkpoint`); one-line errors
    (``FileNotFoundError`` / ``CheckpointError``) naming the file."""
    if not fpath or not os.path.isfile(fpath):
        raise FileNotFoundError(f'Checkpoint file not found: "{fpath}"')
    problem = checkpoint_file_problem(fpath)
    if problem:
        raise CheckpointError(f'Cannot load checkpoint "{fpath}": {problem}; {RECOVER_HINT}')
    try:
        ckpt = torch_load_quiet(fpath, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:
        refused, detail = load_error_detail(e)
        if refused:
            raise CheckpointError(
                f'Cannot load "{fpath}" as a weights-only checkpoint: it needs code outside the allowed '
                f"tensor types ({detail}); nothing in it was run. A legacy Dassl checkpoint must be converted "
                "with tools/convert_checkpoint.py first"
            ) from None
        raise CheckpointError(f'Cannot load checkpoint "{fpath}": damaged or not a PyTorch checkpoint '
                              f"({detail}); {RECOVER_HINT}") from None
    return verify_checkpoint(ckpt, fpath)


def _epoch_files(fdir):
    """``{N: path}`` of the ``model.pth.tar-<N>`` files in ``fdir``."""
    out = {}
    for name in os.listdir(fdir):
        m = EPOCH_FILE_RE.match(name)
        if m:
            out[int(m.group(1))] = os.path.join(fdir, name)
    return out


def _read_pointer(pointer):
    try:
        with open(pointer, "r", encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _usable(fpath):
    """None when ``fpath`` loads as a complete checkpoint (ours or an official one), else why not."""
    if not os.path.isfile(fpath):
        return "file not found"
    try:
        load_official_or_native(fpath, quiet=True)
    except (CheckpointError, ValueError) as e:
        msg = str(e)
        for prefix in (f'Cannot load checkpoint "{fpath}": ', f'"{fpath}" ', f"{fpath}: "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        return msg.replace(f"; {RECOVER_HINT}", "")
    return None


def latest_checkpoint_path(fdir):
    """Newest complete checkpoint in ``fdir``, or None when ``fdir/checkpoint`` does not exist.

    Starts from the file the pointer names; if it is missing or damaged, warns and tries the earlier
    ``model.pth.tar-<N>`` files, newest first. ``CheckpointError`` (one line) when none is usable.
    Stale temp files of killed writers in ``fdir`` are removed.
    """
    pointer = os.path.join(fdir, POINTER_FILE)
    if not os.path.isfile(pointer):
        return None
    remove_stale_temps(fdir)
    name = _read_pointer(pointer)
    epochs = _epoch_files(fdir)
    m = EPOCH_FILE_RE.match(name)
    if m:
        candidates = [os.path.join(fdir, name)] + [epochs[n] for n in sorted(epochs, reverse=True)
                                                   if n < int(m.group(1))]
    elif name:
        candidates = [os.path.join(fdir, name)] + [epochs[n] for n in sorted(epochs, reverse=True)]
    else:
        get_logger().warning(f"Checkpoint pointer file {pointer} is empty or unreadable; "
                             "looking for the newest complete model.pth.tar-<N>")
        candidates = [epochs[n] for n in sorted(epochs, reverse=True)]
    logger = get_logger()
    problems = []
    for path in candidates:
        problem = _usable(path)
        if problem is None:
            if problems:
                logger.warning(f'Using "{path}" instead of the unusable newer checkpoint(s) '
                               f"{', '.join(n for n, _ in problems)}")
            return path
        logger.warning(f"Skipping unusable checkpoint {path}: {problem}")
        problems.append((os.path.basename(path), problem))
    if not problems:
        raise CheckpointError(f"{pointer} names no checkpoint file and {fdir} holds no model.pth.tar-<N>; "
                              f"delete {pointer} to train from scratch")
    names = ", ".join(n for n, _ in problems)
    raise CheckpointError(f"no complete checkpoint in {fdir} (unusable: {names}; first: {problems[0][1]}); "
                          "delete the folder to train from scratch")


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
