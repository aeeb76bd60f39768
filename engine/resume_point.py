"""The state of a run stopped by a signal mid-way: ``OUTPUT_DIR/<model name>/interrupted.pth.tar``.

Written by the trainer at a safe point (the end of a batch, or between epochs) when SIGINT/SIGTERM
asks it to stop (``engine.utils.signals``). It holds what ``model.pth.tar-<N>`` holds (learned tensors,
optimizer, scheduler, scaler, RNG state at the stop) plus ``epoch`` = completed epochs, ``batch`` =
batches done in the next epoch, and ``epoch_rng_state`` = the RNG state at the start of that epoch
(from which the epoch's batch order and augmentation seed are drawn again). ``--resume`` takes it when
it is newer than the newest epoch checkpoint: it replays the epoch's loader up to ``batch`` without
training on those batches, restores the RNG state of the stop and goes on, so the result equals an
uninterrupted run's. Same checksum as every checkpoint; written atomically; never named by the
``checkpoint`` pointer (``--eval-only`` and ``--load-epoch`` never see it); removed once training ends.
"""
import contextlib
import os

from engine.checkpoint import CHECKSUM_KEY, CheckpointError, check_weights_only_safe, checkpoint_digest, load_checkpoint
from engine.utils.io import atomic_torch_save
from engine.utils.logger import get_logger

__all__ = ["INTERRUPTED_FILE", "save_resume_point", "load_resume_point", "remove_resume_point"]

INTERRUPTED_FILE = "interrupted.pth.tar"


def save_resume_point(directory, states):
    """Write ``directory/<name>/interrupted.pth.tar`` for each ``name -> state`` of ``states``."""
    for name, state in states.items():
        state = dict(state)
        check_weights_only_safe(state)
        state[CHECKSUM_KEY] = checkpoint_digest(state)
        path = os.path.join(directory, name, INTERRUPTED_FILE)
        atomic_torch_save(state, path)
        get_logger().info(f"State to resume from saved to {path}")


def load_resume_point(directory, names, after):
    """``{name: checkpoint}`` of the resume point in ``directory`` when every model has one, all at the
    same ``(epoch, batch)`` and later than ``(after, 0)``; else None (a damaged one is skipped with a
    warning: the epoch checkpoints are used instead)."""
    paths = {name: os.path.join(directory, name, INTERRUPTED_FILE) for name in names}
    if not names or not all(os.path.isfile(p) for p in paths.values()):
        return None
    try:
        ckpts = {name: load_checkpoint(p) for name, p in paths.items()}
    except CheckpointError as e:
        get_logger().warning(f"Skipping the resume point: {e}")
        return None
    points = {(int(c.get("epoch", -1)), int(c.get("batch", 0))) for c in ckpts.values()}
    if len(points) != 1:
        get_logger().warning(f"Skipping the resume points in {directory}: they are at different positions {points}")
        return None
    epoch, batch = points.pop()
    return ckpts if (epoch, batch) > (after, 0) else None


def remove_resume_point(directory, names):
    """Delete the resume point files (training went past them)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name, INTERRUPTED_FILE))
