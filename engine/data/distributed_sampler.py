"""Each rank's share of the one-process run's global batches (``torchrun`` runs).

:class:`GlobalBatchShard` wraps the train loader's batch sampler: every rank draws the same global
batches in the same order as a one-process run, and keeps its contiguous block of each (rank r of N
takes ``row_range(B, r, N)``, i.e. items ``[r*B/N, (r+1)*B/N)``). A batch whose size does not divide
by N (``DATALOADER.TRAIN_X.BATCH_SIZE`` 1 for CoCoOp, or a short last batch) is taken whole by every
rank; only the text rows are then sharded. Either way the averaged gradient is the one-process one.

Randomness: at the start of each pass every rank adopts rank 0's global torch RNG state, so the
draws made from it during the pass (the shuffling permutation's seed, the loader's per-pass
augmentation seed) are rank 0's on every rank, even after rank 0 alone evaluated (which draws from
it) or in an unseeded run; rank 0's RNG advances exactly as a one-process run's.
"""
from torch.utils.data import DataLoader

from engine.distributed import is_distributed, rank, row_range, sync_torch_rng, world_size
from engine.utils.logger import get_logger

__all__ = ["GlobalBatchShard", "distribute_train_loader"]


class GlobalBatchShard:
    """Batch sampler yielding shard ``shard`` of ``shards`` of every batch of ``batch_sampler``."""

    def __init__(self, batch_sampler, shard, shards):
        if not 0 <= int(shard) < int(shards):
            raise ValueError(f"shard {shard} is not in [0, {shards})")
        self.batch_sampler = batch_sampler
        self.shard, self.shards = int(shard), int(shards)

    def __len__(self):
        return len(self.batch_sampler)

    def local(self, batch):
        """This shard's part of the global ``batch`` (list of indices): its block, or all of it."""
        batch = list(batch)
        if len(batch) % self.shards:
            return batch
        start, end = row_range(len(batch), self.shard, self.shards)
        return batch[start:end]

    def __iter__(self):
        sync_torch_rng()  # rank 0's draws on every rank (permutation, augmentation seed)
        for batch in self.batch_sampler:
            yield self.local(batch)


def distribute_train_loader(loader):
    """``loader`` unchanged outside a distributed run; else the same loader over :class:`GlobalBatchShard`."""
    if not is_distributed():
        return loader
    shards = world_size()
    batch_size = loader.batch_size
    if batch_size is not None and batch_size % shards:
        get_logger().info(f"Training batch size {batch_size} does not divide by {shards} processes: every process "
                          "takes the whole batch; the class prompts are still split across processes")
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_sampler=GlobalBatchShard(loader.batch_sampler, rank(), shards),
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers > 0 else None,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        in_order=getattr(loader, "in_order", True),
    )
