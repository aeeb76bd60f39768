"""Write guards: a run that no longer owns its output folder writes nothing more into it.

A guard is a callable ``guard(path)`` that raises (one line) when writing ``path`` is no longer allowed
(``path`` None: "may this run go on writing at all?"), else returns. ``train.py`` installs one for its
``OUTPUT_DIR`` while it holds ``OUTPUT_DIR/.run.lock`` (``engine.runs.locks.Lock.write_guard``): once
another run has taken the lock over (this one was paused past the lock timeout), every write through
``engine.utils.io`` and ``log.txt``, the TensorBoard tracker and the trainer's safe points (after every
batch and epoch) raise that line instead.
"""
__all__ = ["add_guard", "remove_guard", "check_writes"]

_guards = []


def add_guard(guard):
    """Install ``guard`` (see the module docstring); returns it."""
    _guards.append(guard)
    return guard


def remove_guard(guard):
    """Uninstall ``guard`` (a no-op when it is not installed)."""
    if guard in _guards:
        _guards.remove(guard)


def check_writes(path=None):
    """Run every installed guard on ``path`` (None: the run as a whole); the first to object raises."""
    for guard in list(_guards):
        guard(path)
