"""Clean stops on SIGINT / SIGTERM (Ctrl-C, ``kill``, SLURM, ``docker stop``).

Contract: :func:`install` (``train.py``) replaces the default handlers. Inside :func:`deferred` (the
training loop) the first signal only records a stop request: the trainer finishes the current batch,
saves its state and raises :class:`Interrupted` (``engine.trainer``); the same signal again stops at
once (a different one, e.g. the SIGTERM of a supervisor after a terminal's SIGINT, does not).
Outside it (building the data and model, the final test, ``--eval-only``) a signal raises
:class:`Interrupted` at once. ``train.py`` turns it into one line and exit status ``128 + signum``
(130 for SIGINT, 143 for SIGTERM). :class:`Interrupted` derives from ``KeyboardInterrupt`` so that
``except Exception`` blocks never swallow it.
"""
import contextlib
import signal
import threading

from engine.utils.logger import get_logger

__all__ = ["Interrupted", "install", "uninstall", "deferred", "stop_requested", "clear", "signal_name",
           "exit_code", "die_with_parent", "die_with_launcher", "under_torchrun"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)
_state = {"signum": None, "depth": 0, "previous": None}


def signal_name(signum):
    """``SIGTERM`` for 15, ``SIGINT`` for 2, ``signal N`` otherwise."""
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return f"signal {signum}"


def exit_code(signum):
    """Shell convention for a run ended by ``signum``: 128 + signum (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal. ``signum``; ``where`` (e.g. ``epoch 2/5, batch 3/10``) and
    ``saved`` (the folder holding the state to resume from) when the trainer stopped at a safe point."""

    def __init__(self, signum, where="", saved=""):
        super().__init__(signal_name(signum))
        self.signum, self.where, self.saved = signum, where, saved


def _handler(signum, frame):
    pending = _state["signum"]
    if _state["depth"] > 0 and pending != signum:
        if pending is None:
            _state["signum"] = signum
            get_logger().warning(f"{signal_name(signum)} received: stopping after the current batch and saving "
                                 "the state to resume from (send it again to stop at once)")
        return  # a different second signal (a supervisor's SIGTERM after a terminal's SIGINT): keep going
    _state["signum"] = pending or signum
    raise Interrupted(signum)


def install():
    """Handle SIGINT and SIGTERM as described above (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if _state["previous"] is None:
        _state["previous"] = {s: signal.getsignal(s) for s in _HANDLED}
    for s in _HANDLED:
        signal.signal(s, _handler)
    _state["signum"] = None


def uninstall():
    """Restore the handlers that :func:`install` replaced."""
    previous = _state["previous"]
    if previous and threading.current_thread() is threading.main_thread():
        for s, h in previous.items():
            signal.signal(s, h)
    _state["previous"] = None
    _state["signum"] = None


@contextlib.contextmanager
def deferred():
    """Within the block, a first signal only sets :func:`stop_requested`."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1


def stop_requested():
    """The signal number of a pending stop request, else None."""
    return _state["signum"] if _state["depth"] > 0 else None


def clear():
    """Forget a pending stop request."""
    _state["signum"] = None


PARENT_ENV = "HARNESS_PARENT_PID"


def _parent_death_signal():
    """Ask Linux for SIGTERM when this process's parent dies (``prctl(PR_SET_PDEATHSIG)``); False elsewhere."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent():
    """Under a supervisor that sets ``HARNESS_PARENT_PID`` (the sweep): ask Linux to send this process
    SIGTERM when its parent process dies (``prctl(PR_SET_PDEATHSIG)``; a clean stop with the state saved),
    and stop at once when the supervisor is already gone. Elsewhere (no variable, not Linux): nothing."""
    import os

    parent = os.environ.pop(PARENT_ENV, "")  # not inherited by processes this one starts
    if not parent.isdigit() or not _parent_death_signal():
        return False
    if os.getppid() != int(parent):  # started through a wrapper, or the supervisor died before prctl took effect
        try:
            os.kill(int(parent), 0)
        except ProcessLookupError:
            raise Interrupted(signal.SIGTERM, "start-up (its supervisor is gone)") from None
        except OSError:
            pass
    return True


def under_torchrun():
    """True in a rank started by ``torchrun`` (its elastic agent sets ``TORCHELASTIC_RUN_ID``), or any
    launcher that sets ``WORLD_SIZE`` > 1 and ``LOCAL_RANK``."""
    import os

    world = os.environ.get("WORLD_SIZE", "")
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or (world.isdigit() and int(world) > 1
                                                          and "LOCAL_RANK" in os.environ)


def die_with_launcher():
    """In a ``torchrun`` rank: SIGTERM when the launcher (this process's parent) dies, as the sweep's
    children do (:func:`die_with_parent`), so that killing ``torchrun`` never leaves ranks training on
    as orphans; stop at once when the launcher is already gone. Elsewhere: nothing."""
    import os

    if not under_torchrun():
        return False
    parent = os.getppid()
    if not _parent_death_signal():
        return False
    if os.getppid() != parent:  # the launcher died between the two calls
        raise Interrupted(signal.SIGTERM, "start-up (its torchrun launcher is gone)")
    return True
