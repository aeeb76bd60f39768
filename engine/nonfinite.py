"""The one-line message of a non-finite training loss (``TrainerBase.detect_anomaly``).

It names the epoch and batch, the loss and its terms (``trainer.loss_terms``, the trainer's loss
summary of the batch, when set), and what to try: a lower ``OPTIM.LR``, ``TRAINER.<METHOD>.PREC
fp32`` when the run is in half precision, checking the input images.
"""
import math

__all__ = ["nonfinite_loss_message"]


def _fmt(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if not math.isfinite(value) else f"{value:.4g}"


def nonfinite_loss_message(trainer, loss):
    """``non-finite loss (nan) at epoch E, batch B (loss nan, loss_kd 0.05); try ...`` (1-based)."""
    epoch = getattr(trainer, "epoch", 0) + 1
    batch = getattr(trainer, "batch_idx", 0) + 1
    where = f"epoch {epoch}, batch {batch}"
    values = loss.detach().float().reshape(-1).cpu().tolist()
    value = _fmt(values[0]) if len(values) == 1 else "[" + ", ".join(_fmt(v) for v in values[:4]) + "]"
    terms = getattr(trainer, "loss_terms", None)
    if isinstance(terms, dict) and terms:
        detail = ", ".join(f"{k} {_fmt(v)}" for k, v in terms.items())
    else:
        detail = f"loss {value}"
    hints = []
    cfg = getattr(trainer, "cfg", None)
    if cfg is not None:
        hints.append(f"a lower OPTIM.LR (now {cfg.OPTIM.LR:g})")
        node = getattr(trainer, "CFG_NODE", None)
        prec = getattr(getattr(trainer, "precision", None), "name", None)
        if node and prec and prec != "fp32":
            hints.append(f"TRAINER.{node}.PREC fp32 (now {prec})")
    hints.append("checking the input images")
    return f"non-finite loss ({value}) at {where} ({detail}); try " + ", ".join(hints)
