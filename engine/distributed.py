"""torch.distributed helpers: process info and row sharding of the class prompts.

A run started with ``torchrun --nproc_per_node N train.py ...`` has N processes ("ranks"). Besides
splitting each image batch across ranks, the text encoder's rows (the class prompts: C sequences,
or B*C for CoCoOp) are split across ranks while training: inside :func:`shard_text_rows`, every
rank encodes only its contiguous block of rows (:func:`row_range`) and :func:`gather_rows` returns
all rows to every rank, with gradient. The backward of the gather sums the incoming gradients of
all ranks (``all_reduce``) and keeps the rank's own rows, so that after the data-parallel gradient
average every parameter receives exactly the gradient of the one-process loss.
Outside a distributed run (or with one process) everything here is a no-op.

Process group (:func:`init_from_env` / :func:`distributed_session`): started by ``torchrun``
(``WORLD_SIZE`` > 1 in the environment), backend ``nccl`` on CUDA (device ``cuda:LOCAL_RANK``) and
``gloo`` on CPU, timeout ``HARNESS_DIST_TIMEOUT`` seconds (default 10800: rank 0 evaluates alone
while the other ranks wait at a barrier).

Gradients (:func:`average_gradients`): after backward, the gradients of the trainable tensors are
all-reduced (SUM) and divided by the number of ranks before the optimiser step, which is
DistributedDataParallel's arithmetic done explicitly. Explicit, not DDP, because the losses come
from ``model.compute_loss`` (not ``forward``), the trainable tensors are a few small prompts (one
bucket) next to a large frozen CLIP that DDP would register and verify, and a trainer may call
backward several times before one step. With the rank's contiguous slice of each global batch (or
the whole batch on every rank when it does not divide), this average equals the one-process gradient.
"""
import contextlib
import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "is_main_process", "row_range", "text_row_shard",
           "shard_text_rows", "gather_rows", "env_world_size", "local_rank", "init_from_env",
           "distributed_session", "barrier", "main_process_first", "broadcast_int", "sync_torch_rng",
           "broadcast_parameters", "average_gradients", "average_summary", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S"]

TIMEOUT_ENV = "HARNESS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 10800.0
_BUCKET_BYTES = 25 * 1024 * 1024

_SHARD_TEXT = False


def is_distributed() -> bool:
    """True in a torch.distributed run with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or a plain one-process run): the process that logs, evaluates and writes files."""
    return rank() == 0


def row_range(total: int, shard: int, shards: int):
    """Contiguous, balanced ``[start, end)`` of ``total`` rows for ``shard`` of ``shards`` (the first
    ``total % shards`` shards get one row more)."""
    base, extra = divmod(int(total), int(shards))
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def text_row_shard():
    """``(rank, world_size)`` while :func:`shard_text_rows` is active in a distributed run, else ``None``."""
    if _SHARD_TEXT and is_distributed():
        return rank(), world_size()
    return None


@contextlib.contextmanager
def shard_text_rows(enabled: bool = True):
    """Within this context (the training forward), text encoders split their rows across ranks."""
    global _SHARD_TEXT
    previous = _SHARD_TEXT
    _SHARD_TEXT = bool(enabled)
    try:
        yield
    finally:
        _SHARD_TEXT = previous


class _GatherRows(torch.autograd.Function):
    """All ranks' row blocks concatenated along dim 0; backward: summed gradient, own rows."""

    @staticmethod
    def forward(ctx, local, total):
        shards, me = world_size(), rank()
        bounds = [row_range(total, r, shards) for r in range(shards)]
        longest = max(end - start for start, end in bounds)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        blocks = [torch.empty_like(padded) for _ in range(shards)]
        dist.all_gather(blocks, padded.contiguous())
        ctx.bounds, ctx.me = bounds, me
        return torch.cat([block[: end - start] for block, (start, end) in zip(blocks, bounds)], dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, end = ctx.bounds[ctx.me]
        return grad[start:end], None


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's ``local`` rows (rank r holds ``row_range(total, r, N)``) into ``[total, ...]``.

    Differentiable: the gradient flowing back to ``local`` is the sum over ranks of the gradients
    of their copies of the gathered tensor (rows of this rank only).
    """
    if not is_distributed():
        return local
    return _GatherRows.apply(local, int(total))


# ---------------------------------------------------------------------------------- process group
def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when absent)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {value!r}") from None


def local_rank() -> int:
    """``LOCAL_RANK`` as set by ``torchrun`` (0 when absent): this process's GPU index on its node."""
    value = os.environ.get("LOCAL_RANK", "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable LOCAL_RANK must be an integer, got {value!r}") from None


def _timeout():
    value = os.environ.get(TIMEOUT_ENV, "")
    if not value:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"environment variable {TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return datetime.timedelta(seconds=seconds)


def init_from_env(use_cuda: bool) -> bool:
    """Join the process group described by torchrun's environment; True iff this call created it.

    No-op (False) for a one-process run (``WORLD_SIZE`` absent or 1) or when a group already exists.
    ``use_cuda`` (``cfg.USE_CUDA``) and CUDA available -> ``nccl`` on ``cuda:LOCAL_RANK``; else ``gloo``.
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    cuda = bool(use_cuda) and torch.cuda.is_available()
    if cuda:
        device = local_rank()
        if device >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {device} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                             "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=_timeout())
    return True


@contextlib.contextmanager
def distributed_session(use_cuda: bool):
    """:func:`init_from_env` on entry; on a normal exit wait for every rank, then destroy the group
    (only a group this session created)."""
    created = init_from_env(use_cuda)
    try:
        yield created
        if created:
            barrier()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier():
    """Wait for every rank (no-op outside a distributed run)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. writes a cache file), the other ranks after it (and read it)."""
    if is_distributed() and not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_distributed() and is_main_process():
            barrier()


def _comm_device():
    """Where collective tensors live: the current CUDA device for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_int(value: int, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (``value`` unchanged outside a distributed run)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src)
    return int(t.item())


def sync_torch_rng(src: int = 0):
    """Every rank adopts rank ``src``'s global torch CPU RNG state (no-op outside a distributed run)."""
    if not is_distributed():
        return
    state = torch.get_rng_state()
    buffer = state.to(_comm_device())
    dist.broadcast(buffer, src)
    if rank() != src:
        torch.set_rng_state(buffer.cpu())


@torch.no_grad()
def broadcast_parameters(params, src: int = 0):
    """Overwrite ``params`` (tensors) on every rank with rank ``src``'s values."""
    if not is_distributed():
        return
    for p in params:
        data = p.data if p.data.device.type == _comm_device().type else p.data.to(_comm_device())
        dist.broadcast(data, src)
        if data is not p.data:
            p.data.copy_(data)


@torch.no_grad()
def average_gradients(params):
    """``grad <- sum over ranks(grad) / N`` for every tensor in ``params`` (DDP's gradient average).

    Reduced in fp32 buckets (fp16/bf16 gradients are upcast for the sum). A tensor without a
    gradient on some ranks counts as zero there; one without a gradient on every rank keeps
    ``grad None`` (the optimiser skips it, as in a one-process run).
    """
    if not is_distributed():
        return
    params = [p for p in params if p is not None]
    if not params:
        return
    n = world_size()
    device = _comm_device()
    has = torch.tensor([0 if p.grad is None else 1 for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    used = [p for p, k in zip(params, has.tolist()) if k > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets, current, size = [], [], 0
    for p in used:
        current.append(p)
        size += p.numel() * 4
        if size >= _BUCKET_BYTES:
            buckets.append(current)
            current, size = [], 0
    if current:
        buckets.append(current)
    for bucket in buckets:
        flat = torch.cat([p.grad.detach().reshape(-1).to(device=device, dtype=torch.float32) for p in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(n)
        offset = 0
        for p in bucket:
            k = p.numel()
            p.grad.copy_(flat[offset: offset + k].view_as(p.grad))
            offset += k


def average_summary(summary: dict, weight: float) -> dict:
    """Every rank's ``{name: float}`` loss summary averaged with weights ``weight`` (the local batch
    size), so that a distributed run logs the one-process run's values (keys must match on all ranks)."""
    if not is_distributed() or not summary:
        return summary
    keys = list(summary)  # same code on every rank -> same order (kept for the log line)
    values = [float(summary[k].item() if torch.is_tensor(summary[k]) else summary[k]) for k in keys]
    t = torch.tensor([v * float(weight) for v in values] + [float(weight)], dtype=torch.float64,
                     device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    total = t[-1].item()
    return {k: t[i].item() / total for i, k in enumerate(keys)}
