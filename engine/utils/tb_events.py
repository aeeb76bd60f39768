"""One TensorBoard event stream per run folder: the scalars of earlier sessions (a run stopped and
resumed, a re-run into the same folder) are copied into the new session's event file, then the old
files are removed.

``keep_until`` (the step a resumed run continues from, in the run's step unit) drops the old
scalars written after it: the resumed session writes those steps again. TensorBoard itself would
show both copies of a step from two files; one file keeps one value per step.
"""
from __future__ import annotations

import glob
import os

EVENT_GLOB = "events.out.tfevents.*"


def existing_event_files(log_dir: str) -> list:
    """The event files directly in ``log_dir``, oldest first."""
    return sorted(glob.glob(os.path.join(glob.escape(log_dir), EVENT_GLOB)), key=os.path.getmtime)


def _scalars(path: str):
    """``(tag, step, value, wall_time)`` of every scalar in the event file ``path`` (unreadable tail ignored)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    try:
        for event in EventFileLoader(path).Load():
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    yield v.tag, event.step, float(v.simple_value), event.wall_time
                elif v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "scalars":
                    yield v.tag, event.step, float(tensor_util.make_ndarray(v.tensor)), event.wall_time
    except Exception:  # a file cut off mid-record by a kill: keep what was read
        return


def carry_over(old_files, writer, keep_until=None) -> int:
    """Write the scalars of ``old_files`` (steps <= ``keep_until``, all when None) into ``writer``
    with their original wall times, flush, and delete ``old_files``; returns the number copied."""
    count = 0
    for path in old_files:
        for tag, step, value, wall in _scalars(path):
            if keep_until is None or step <= keep_until:
                writer.add_scalar(tag, value, step, walltime=wall)
                count += 1
    writer.flush()
    for path in old_files:
        try:
            os.unlink(path)
        except OSError:
            pass
    return count
