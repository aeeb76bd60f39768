"""Safe loading of checkpoints written by the official Dassl-based repos (CoOp, CoCoOp, MaPLe, COMMA).

Official files are ``torch.save`` pickles of ``{state_dict, epoch, optimizer, scheduler, val_result}``
whose ``scheduler`` entry holds *pickled objects* (Dassl's warm-up scheduler state embeds the torch
``CosineAnnealingLR`` successor, which embeds the ``SGD`` optimizer). Plain ``weights_only=True``
refuses them. We never unpickle real classes and never turn ``weights_only`` off: the load runs in
``torch.serialization.safe_globals`` with an explicit allow-list that maps each known optimizer /
scheduler class name (torch and ``dassl.*``) to an inert stand-in (:class:`LegacyObject`, which only
stores its pickled state) and ``collections.defaultdict`` to a plain ``dict`` builder. A file that
needs any other class stops with a one-line error naming it and pointing to
``tools/convert_checkpoint.py ... --trust``, which stubs *every* class (still running none of them).

A file that cannot be read at all (empty, truncated, damaged, not a PyTorch file) or whose stored
``checksum_sha256`` does not match (our files, ``engine.checkpoint_format``) raises a one-line
``CheckpointError`` naming it; nothing in it is executed.

Public API: :func:`load_official_or_native` (used by ``trainers.base.PromptTrainer.load_model``),
:func:`safe_load`, :func:`unsafe_globals`.
"""
import os

import torch

from engine.checkpoint_format import (CHECKSUM_KEY, RECOVER_HINT, CheckpointError, checkpoint_file_problem,
                                      load_error_detail, torch_load_quiet, verify_checkpoint)
from engine.utils.logger import get_logger

logger = get_logger()

#: class names found in Dassl/CoOp/MaPLe/COMMA checkpoints (inside the pickled scheduler/optimizer).
ALLOWED_CLASS_NAMES = (
    "torch.optim.sgd.SGD",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.MultiStepLR",
    "torch.optim.lr_scheduler.ExponentialLR",
    "torch.optim.lr_scheduler.LambdaLR",
    "torch.optim.lr_scheduler._LRScheduler",
    "torch.optim.lr_scheduler.LRScheduler",
    "dassl.optim.lr_scheduler._BaseWarmupScheduler",
    "dassl.optim.lr_scheduler.ConstantWarmupScheduler",
    "dassl.optim.lr_scheduler.LinearWarmupScheduler",
    "dassl.optim.radam.RAdam",
    "dassl.optim.radam.PlainRAdam",
    "dassl.optim.radam.AdamW",
)

CONVERT_HINT = "if you trust the file, convert it first: python tools/convert_checkpoint.py {path} OUT --trust"


class LegacyObject:
    """Inert stand-in for a pickled object: keeps constructor args and state, runs no code of the original."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        inst = object.__new__(cls)
        inst.args, inst.state = args, None
        return inst

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<legacy {self.qualified_name}>"


def _standin(qualified_name):
    name = "Legacy_" + qualified_name.replace(".", "_")
    return type(name, (LegacyObject,), {"qualified_name": qualified_name})


def _plain_dict(default_factory=None, *args):
    """Stand-in for ``collections.defaultdict``: the items are restored, the factory is dropped."""
    return dict(*args)


#: harmless builtins that appear as ``defaultdict`` factories; mapped to themselves.
PLAIN_BUILTINS = {"builtins.dict": dict, "builtins.list": list, "builtins.set": set}
#: names with a dedicated stand-in (never stubbed).
SPECIAL_NAMES = ("collections.defaultdict", *PLAIN_BUILTINS)


def _safe_globals_for(names):
    entries = [(_plain_dict, "collections.defaultdict")]
    entries += [(obj, name) for name, obj in PLAIN_BUILTINS.items()]
    entries += [(_standin(name), name) for name in names if name not in SPECIAL_NAMES]
    return entries


def unsafe_globals(path):
    """Fully qualified names of the globals in ``path`` that ``weights_only`` does not allow by default."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as err:  # not a zip checkpoint (or corrupt): let torch.load give its own error
        logger.debug(f"could not scan {path} for globals: {err}")
        return []


def safe_load(path, trust=False):
    """``torch.load(path, weights_only=True)`` with the legacy allow-list (see module docstring).

    ``trust=True`` stands in inert stubs for every class the file names (no code of theirs runs).
    Raises ``ValueError`` (one line) naming a class outside the allow-list.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    problem = checkpoint_file_problem(path)
    if problem:
        raise CheckpointError(f'Cannot load checkpoint "{path}": {problem}; {RECOVER_HINT}')
    needed = unsafe_globals(path)
    unknown = [name for name in needed if name not in ALLOWED_CLASS_NAMES and name not in SPECIAL_NAMES]
    if unknown and not trust:
        raise ValueError(f"{path}: needs class {unknown[0]} which is not on the safe-load allow-list; "
                         + CONVERT_HINT.format(path=path))
    names = set(ALLOWED_CLASS_NAMES) | (set(needed) if trust else set())
    try:
        with torch.serialization.safe_globals(_safe_globals_for(sorted(names))):
            return torch_load_quiet(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # refused globals; EOFError / zip reader errors of a damaged or foreign file
        refused, detail = load_error_detail(err)
        if refused:
            raise ValueError(f"{path}: cannot be loaded safely ({detail}); nothing in it was run; "
                             + CONVERT_HINT.format(path=path)) from None
        raise CheckpointError(f'Cannot load checkpoint "{path}": damaged or not a PyTorch checkpoint '
                              f"({detail}); {RECOVER_HINT}") from None


def _contains_legacy(obj):
    if isinstance(obj, LegacyObject):
        return True
    if isinstance(obj, dict):
        return any(_contains_legacy(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains_legacy(v) for v in obj)
    return False


def normalize_checkpoint(checkpoint, path):
    """Return a plain checkpoint dict: ``state_dict`` (tensors only), ``epoch``, ``optimizer``,
    ``scheduler`` (``None`` where the file held pickled objects), ``val_result``, ``format``."""
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, checkpoint = checkpoint, {}  # a bare state dict
    else:
        raise ValueError(f"{path}: expected a checkpoint dict with a 'state_dict' entry, "
                         f"got {type(checkpoint).__name__}")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: 'state_dict' must be a dict of tensors, got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entry {bad[0]!r} is not a tensor")
    legacy = any(_contains_legacy(checkpoint.get(k)) for k in ("epoch", "optimizer", "scheduler", "val_result"))
    epoch = checkpoint.get("epoch")
    out = {
        "state_dict": {k: v.detach() for k, v in state_dict.items()},
        "epoch": epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        "optimizer": None if _contains_legacy(checkpoint.get("optimizer")) else checkpoint.get("optimizer"),
        "scheduler": None if _contains_legacy(checkpoint.get("scheduler")) else checkpoint.get("scheduler"),
        "val_result": None if _contains_legacy(checkpoint.get("val_result")) else checkpoint.get("val_result"),
        "format": "official" if legacy else "native",
    }
    return out


def load_official_or_native(path, trust=False, quiet=False):
    """Load our checkpoint or an official CoOp/CoCoOp/MaPLe/COMMA one, safely (see module docstring).

    Returns a dict with at least ``state_dict`` (name -> tensor, keys as in the file) and ``epoch``.
    Key mapping (official MaPLe/COMMA whole-model keys, CoOp prompt-learner keys) is the model's job
    (``PromptCLIP.load_legacy_state_dict``). A stored checksum is verified; ``quiet`` skips the log line.
    """
    raw = safe_load(path, trust=trust)
    if isinstance(raw, dict) and CHECKSUM_KEY in raw:
        verify_checkpoint(raw, path)
    checkpoint = normalize_checkpoint(raw, path)
    if checkpoint["format"] == "official" and not quiet:
        logger.info(f"{path}: official Dassl checkpoint "
                    "(pickled scheduler/optimizer objects replaced by inert stand-ins)")
    return checkpoint
