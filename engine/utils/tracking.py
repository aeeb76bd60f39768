"""Run tracking: Dassl's TensorBoard scalars and opt-in Weights & Biases.

:func:`open_tracker` returns a :class:`Tracker` whose ``add_scalar(tag, value, step)`` is what the
trainer's ``write_scalar`` calls (Dassl's tags: ``train/loss``, ``train/<loss term>``, ``train/lr`` (the LR
that step used), ``train/epoch``, ``test/accuracy``, ``val/accuracy``, ...). One step unit for every
tag of a run: optimisation steps (training batches) done, counted across resumes; 0 in an
``--eval-only`` run. The final test also writes the flattened config as TensorBoard hparams.

* TensorBoard: events in ``OUTPUT_DIR/tensorboard`` through ``torch.utils.tensorboard.SummaryWriter``.
  Without the ``tensorboard`` package the run says so once (a warning) and goes on without events.
* Weights & Biases: on when ``TRAIN.WANDB_PROJECT`` (``train.py --wandb PROJECT``) is not empty. The
  run is named after ``OUTPUT_DIR`` and stores its files there; ``WANDB_MODE`` defaults to
  ``offline`` (``wandb sync`` uploads later; set ``WANDB_MODE=online`` to stream). A missing
  ``wandb`` package is a one-line :class:`TrackingError` (a ``ValueError``) raised by
  :func:`check_tracking` before anything runs.

Only the main process of a distributed run tracks; the others get a tracker that does nothing.
Every tracker still open at interpreter exit is closed (events flushed).

Errors: an ``OSError`` of the TensorBoard writer (a full disk at start or mid-run, also one raised in
its background thread, whose traceback is not printed) is raised at the next ``add_scalar``/``close``
as one ``engine.utils.io.WriteError`` line naming the folder, and the writer is dropped. A write guard
(``engine.utils.write_guard``: the run lost its output folder) stops every TensorBoard write, and
``close`` then drops the writer without flushing into the folder.
"""
from __future__ import annotations

import atexit
import os
import threading
import weakref

from engine.utils.io import WriteError, os_error_line
from engine.utils.logger import get_logger
from engine.utils.tb_events import carry_over, existing_event_files
from engine.utils.write_guard import check_writes

TB_FOLDER = "tensorboard"
_warned_no_tensorboard = False
_open = weakref.WeakSet()


class TrackingError(ValueError):
    """Tracking was asked for but cannot work (e.g. ``--wandb`` without the wandb package)."""


def wandb_project(cfg) -> str:
    """``cfg.TRAIN.WANDB_PROJECT`` ('' when the key or the config is absent)."""
    train = getattr(cfg, "TRAIN", None) if cfg is not None else None
    return str(train.get("WANDB_PROJECT", "") or "") if train is not None else ""


def _import_wandb(project: str):
    try:
        import wandb
    except ImportError:
        raise TrackingError(f"TRAIN.WANDB_PROJECT (--wandb) is {project!r} but the wandb package is not "
                            "installed; pip install wandb, or run without --wandb") from None
    return wandb


def check_tracking(cfg) -> None:
    """Fail early (one line) when W&B is requested and the ``wandb`` package cannot be imported."""
    project = wandb_project(cfg)
    if project:
        _import_wandb(project)


def _quiet_writer_threads() -> None:
    """Print no traceback for an exception of TensorBoard's writer thread: the tracker raises it in the
    main thread (one line) at its next write or close. Installed once; other threads keep the hook."""
    previous = threading.excepthook
    if getattr(previous, "_harness_tb_quiet", False):
        return

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    hook._harness_tb_quiet = True
    threading.excepthook = hook


def _tb_error(err, log_dir: str) -> Exception:
    """One line for an error of the TensorBoard writer on ``log_dir``."""
    if isinstance(err, OSError):
        out = WriteError(os_error_line(err, err.filename or os.path.join(log_dir, "events.out.tfevents.*")))
        out.errno = err.errno
        return out
    return WriteError(f"the TensorBoard writer failed on {log_dir} ({type(err).__name__}: {err})")


def _summary_writer(log_dir: str):
    """A ``SummaryWriter`` on ``log_dir``, or None (warned once) without the tensorboard package."""
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned_no_tensorboard:
            _warned_no_tensorboard = True
            get_logger().warning("the tensorboard package is not installed: no TensorBoard events are "
                                 "written (pip install tensorboard)")
        return None
    _quiet_writer_threads()
    try:
        return SummaryWriter(log_dir=log_dir)
    except OSError as err:
        raise _tb_error(err, log_dir) from None


class Tracker:
    """Forwards scalars to a TensorBoard writer and/or a W&B run (either may be None)."""

    def __init__(self, tb_writer=None, wandb_run=None):
        self.tb = tb_writer
        self.wandb = wandb_run
        self._wandb_axes = set()
        if self.enabled:
            _open.add(self)

    @property
    def enabled(self) -> bool:
        return self.tb is not None or self.wandb is not None

    def add_scalar(self, tag: str, value, step=None) -> None:
        """Record ``value`` (a number or a one-element tensor) under ``tag`` at ``step``."""
        if not self.enabled:
            return
        value = float(value)
        if self.tb is not None:
            self._tb_call(lambda tb: tb.add_scalar(tag, value, step))
        if self.wandb is not None:
            # one x axis per prefix (all in the run's step unit: training steps done)
            prefix = tag.split("/", 1)[0]
            axis = f"{prefix}/step"
            if prefix not in self._wandb_axes:
                self._wandb_axes.add(prefix)
                self.wandb.define_metric(axis, hidden=True)
                self.wandb.define_metric(f"{prefix}/*", step_metric=axis)
            self.wandb.log({tag: value} if step is None else {tag: value, axis: step})

    def add_hparams(self, cfg, metrics: dict) -> None:
        """The run's config (flattened keys; lists as text) as TensorBoard hparams with ``metrics``,
        written into the run's own event file (``SummaryWriter.add_hparams`` would open another)."""
        if self.tb is None or cfg is None:
            return
        from torch.utils.tensorboard.summary import hparams

        params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _flat_config(cfg).items()}
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

        def write(tb):
            for summary in hparams(params, values):
                tb.file_writer.add_summary(summary)
            tb.flush()

        self._tb_call(write)

    def _tb_call(self, call) -> None:
        """``call(writer)`` after the write guards; on any error the writer is dropped (not flushed) and
        the error raised: the guard's own line, or the writer's error as one line."""
        log_dir = getattr(self.tb, "log_dir", "") or ""
        try:
            check_writes(log_dir or None)
        except Exception:
            self._drop_tb()
            raise
        try:
            call(self.tb)
        except Exception as err:  # noqa: BLE001 - the writer's errors become the run's one line
            self._drop_tb()
            raise _tb_error(err, log_dir) from None

    def _drop_tb(self) -> None:
        self.tb = None
        if not self.enabled:
            _open.discard(self)

    def flush(self) -> None:
        if self.tb is not None:
            self._tb_call(lambda tb: tb.flush())

    def close(self) -> None:
        """Flush and close both back ends (idempotent). A TensorBoard writer that may no longer write
        (write guard) is dropped without flushing."""
        run, self.wandb = self.wandb, None
        try:
            if self.tb is not None:
                self._tb_call(lambda tb: tb.close())
        finally:
            self.tb = None
            _open.discard(self)
            if run is not None:
                run.finish()


def _flat_config(cfg) -> dict:
    from engine.runs.record import flatten_cfg

    return flatten_cfg(cfg) if cfg is not None else {}


def open_tracker(cfg, log_dir: str, is_main: bool | None = None, keep_until: int | None = None) -> Tracker:
    """The tracker of one run: TensorBoard events under ``log_dir`` and, when
    ``TRAIN.WANDB_PROJECT`` is set, a W&B run in ``cfg.OUTPUT_DIR`` (offline unless ``WANDB_MODE``
    says otherwise). ``is_main`` defaults to :func:`engine.distributed.is_main_process`.
    Event files already in ``log_dir`` are merged into the new one (steps <= ``keep_until``;
    ``engine.utils.tb_events``), so a resumed run has one event stream."""
    if is_main is None:
        from engine.distributed import is_main_process

        is_main = is_main_process()
    if not is_main:
        return Tracker()
    try:
        check_writes(log_dir)
        os.makedirs(log_dir, exist_ok=True)
    except OSError as err:
        raise _tb_error(err, log_dir) from None
    old_events = existing_event_files(log_dir)
    tb = _summary_writer(log_dir)
    if tb is not None and old_events:
        carry_over(old_events, tb, keep_until)
    run = None
    project = wandb_project(cfg)
    if project:
        wandb = _import_wandb(project)
        out_dir = str(getattr(cfg, "OUTPUT_DIR", "") or os.path.dirname(os.path.abspath(log_dir)))
        run = wandb.init(project=project, dir=out_dir, name="/".join(os.path.normpath(out_dir).split(os.sep)[-6:]),
                         config=_flat_config(cfg), mode=os.environ.get("WANDB_MODE") or "offline")
        get_logger().info(f"Weights & Biases run {run.name!r} (project {project}, "
                          f"mode {os.environ.get('WANDB_MODE') or 'offline'}) in {out_dir}")
    return Tracker(tb, run)


@atexit.register
def _close_all() -> None:
    for tracker in list(_open):
        try:
            tracker.close()
        except Exception:  # noqa: BLE001 - never fail the interpreter exit on a tracker
            pass
