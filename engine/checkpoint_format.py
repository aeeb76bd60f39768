"""The checkpoint file format and its checks, below both checkpoint readers (``engine.checkpoint`` for ours,
``engine.legacy_checkpoint`` for the official repos'); imports nothing of the project but ``write_errors``.

A checkpoint is a ``torch.save`` dict of ``state_dict, epoch, optimizer, scheduler, val_result`` holding only
tensors, numbers, strings, None, lists, tuples and dicts (:func:`check_weights_only_safe`), so that
``torch.load(weights_only=True)`` reads it, plus ``checksum_sha256`` (``CHECKSUM_KEY``): a SHA-256 over
every other entry (tensors by dtype, shape and bytes; dict keys in sorted order; :func:`checkpoint_digest`).
Files: ``model.pth.tar-<N>`` (``EPOCH_FILE_RE``), ``model-best.pth.tar`` (``BEST_FILE``) and the text
pointer file ``checkpoint`` (``POINTER_FILE``) naming the latest. A file that cannot be used raises a
one-line :class:`CheckpointError` naming it.
"""
import hashlib
import os
import re
import struct
import warnings
import zipfile
from collections import OrderedDict

import torch

from engine.utils.write_errors import format_bytes

__all__ = [
    "CheckpointError",
    "CHECKSUM_KEY",
    "POINTER_FILE",
    "BEST_FILE",
    "EPOCH_FILE_RE",
    "RECOVER_HINT",
    "check_weights_only_safe",
    "strip_module_prefix",
    "checkpoint_digest",
    "verify_checkpoint",
    "checkpoint_file_problem",
    "load_error_detail",
    "torch_load_quiet",
]

POINTER_FILE = "checkpoint"
BEST_FILE = "model-best.pth.tar"
CHECKSUM_KEY = "checksum_sha256"
EPOCH_FILE_RE = re.compile(r"^model\.pth\.tar-(\d+)$")
RECOVER_HINT = ("delete it to resume from an earlier checkpoint, or re-run the training that wrote it")


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


def _digest_update(h, obj):
    """Feed ``obj`` to ``h`` in a canonical order (type tags, sorted dict keys, tensor dtype/shape/bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(obj.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for key in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _digest_update(h, key)
            _digest_update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + b"%d" % len(obj))
        for item in obj:
            _digest_update(h, item)
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    else:
        h.update(b"S" + type(obj).__name__.encode() + b":" + repr(obj).encode())


def checkpoint_digest(state):
    """SHA-256 (hex) of a checkpoint dict, every entry but ``checksum_sha256`` (stable across saves/loads)."""
    h = hashlib.sha256()
    _digest_update(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def verify_checkpoint(ckpt, fpath):
    """Check a loaded checkpoint: a dict whose ``state_dict`` is a dict of tensors, and the stored
    checksum (when there is one). Raises ``CheckpointError`` naming ``fpath``; returns ``ckpt``."""
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        keys = sorted(map(str, ckpt))[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f'"{fpath}" is not a checkpoint of this harness or of the official code: no '
                              f"'state_dict' entry (found {keys})")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or any(not isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"\"{fpath}\": 'state_dict' must be a dict of tensors")
    stored = ckpt.get(CHECKSUM_KEY)
    if stored is not None and stored != checkpoint_digest(ckpt):
        raise CheckpointError(f'"{fpath}" is damaged: its contents do not match the checksum stored in it '
                              f"(the file changed after it was written); {RECOVER_HINT}")
    return ckpt


def checkpoint_file_problem(fpath):
    """Cheap structural check before unpickling: None when ``fpath`` looks complete, else what is wrong
    (missing, empty, a zip archive without its directory, i.e. truncated)."""
    if not os.path.isfile(fpath):
        return "file not found"
    size = os.path.getsize(fpath)
    if size == 0:
        return "empty file (0 bytes): an interrupted write or a full disk"
    with open(fpath, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(fpath):
        return f"truncated ({format_bytes(size)}, the zip directory at its end is missing): an interrupted write"
    return None


_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")


def load_error_detail(err):
    """``(refused, detail)`` for an exception of ``torch.load``: ``refused`` is True when the file names a
    class or function outside the weights-only allow-list (a legacy or malicious pickle); ``detail`` is
    the informative line of torch's message (never its advice to turn ``weights_only`` off)."""
    text = str(err)
    refused = "GLOBAL" in text or "Unsupported global" in text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    detail = useful[0] if useful else (lines[0] if lines else "")
    if not useful and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
    return refused, f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def torch_load_quiet(fpath, **kwargs):
    """``torch.load`` with its warnings (e.g. about the pickle protocol of a foreign file) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(fpath, **kwargs)
