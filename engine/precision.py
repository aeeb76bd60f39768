"""Numeric precision of a trainer (``TRAINER.<NODE>.PREC``): fp32, fp16, bf16 or amp.

Torch is imported inside the functions, so the torch-free config checks share ``PREC_NAMES`` and
:func:`check_prec`.

``resolve_precision(prec, device) -> Precision(name, param_dtype, autocast_dtype, use_scaler)``; each
value means the same on every device (CUDA, CPU, any other), as in the official code, and nothing falls
back to another precision:

| PREC | weights (CLIP's matmuls) | autocast | GradScaler |
| --- | --- | --- | --- |
| fp32 | fp32 | none | no |
| fp16 | fp16 | none | no |
| bf16 | bf16 | none | no |
| amp  | fp32 | fp16 | yes |

fp16 and amp compute in fp16 on a CPU too (PyTorch runs fp16 matmuls, convolutions, attention and
LayerNorm there, forward and backward); on CPUs without fp16 units that is several times slower than
fp32, which one log line says (``PREC fp32`` is the fast choice there).

``learned_dtype(backbone_dtype, upstream_numerics)`` is the dtype of a learned tensor that the
official code creates in CLIP's dtype (``TRAINER.<NODE>.UPSTREAM_NUMERICS``): fp16 when the key is
on and the backbone is fp16 (the official pure-fp16 SGD, no master copy), fp32 otherwise.
"""
import contextlib
from typing import Any, NamedTuple, Optional

__all__ = ["Precision", "resolve_precision", "autocast_context", "make_grad_scaler", "learned_dtype", "PREC_NAMES",
           "check_prec", "precision_record", "no_autocast"]

#: every accepted ``PREC`` value; the only list of precision names (config checks, trainers, tools)
PREC_NAMES = ("fp32", "fp16", "bf16", "amp")


def check_prec(value, key="PREC"):
    """Return ``value`` if it is a precision name, else raise a one-line ``ValueError`` naming ``key``.

    Torch-free (used by the config validation as well as by the trainers).
    """
    if value not in PREC_NAMES:
        raise ValueError(f"bad value for {key}: {value!r}; expected one of {', '.join(PREC_NAMES)}")
    return value


class Precision(NamedTuple):
    """Resolved precision: ``name`` (effective), ``param_dtype``, ``autocast_dtype`` (or None), ``use_scaler``."""

    name: str
    param_dtype: Any  # torch.dtype
    autocast_dtype: Optional[Any]
    use_scaler: bool


def _device_type(device):
    import torch

    return torch.device(device).type


def resolve_precision(prec, device):
    """Map a ``PREC`` string and a device to a :class:`Precision` (see the module table)."""
    import torch

    from engine.utils.logger import get_logger

    check_prec(prec)
    dev = _device_type(device)
    if prec in ("fp16", "amp") and dev == "cpu":
        get_logger().info(f"PREC {prec} on cpu: fp16 arithmetic as on CUDA; slow on CPUs without fp16 units "
                          f"(PREC fp32 is faster there)")
    return {
        "fp32": Precision("fp32", torch.float32, None, False),
        "fp16": Precision("fp16", torch.float16, None, False),
        "bf16": Precision("bf16", torch.bfloat16, None, False),
        "amp": Precision("amp", torch.float32, torch.float16, True),
    }[prec]


def precision_record(precision, device):
    """What a run computes in, as plain JSON values (``metrics.json`` and ``run_record.json``)::

        {"prec": "amp", "param_dtype": "float32", "autocast_dtype": "float16", "grad_scaler": true,
         "device": "cpu"}
    """

    def name(dtype):
        return None if dtype is None else str(dtype).replace("torch.", "")

    return {"prec": precision.name, "param_dtype": name(precision.param_dtype),
            "autocast_dtype": name(precision.autocast_dtype), "grad_scaler": bool(precision.use_scaler),
            "device": _device_type(device)}


def autocast_context(precision, device):
    """``torch.autocast`` for amp, a no-op context otherwise."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=_device_type(device), dtype=precision.autocast_dtype)


def no_autocast(device):
    """A context in which ``torch.autocast`` is off for ``device``'s type: what runs inside computes in
    its inputs' dtype (fp32 logits under ``amp``, as under every other precision)."""
    import torch

    return torch.autocast(device_type=_device_type(device), enabled=False)


def make_grad_scaler(precision, device):
    """A ``torch.amp.GradScaler`` for ``device`` when the precision needs one (amp, on every device), else None."""
    if not precision.use_scaler:
        return None
    import torch

    return torch.amp.GradScaler(_device_type(device))


def learned_dtype(backbone_dtype, upstream_numerics):
    """fp16 if ``upstream_numerics`` and the backbone is fp16 (the official code's fp16 parameters), else fp32."""
    import torch

    return torch.float16 if upstream_numerics and backbone_dtype == torch.float16 else torch.float32
