"""The project logger (``logging.getLogger("harness")``) and ``setup_logger`` (Dassl ``setup_logger``).

INFO records print as the bare message; WARNING and above are prefixed with their level name
(``WARNING: ...``). Before :func:`setup_logger` runs, the logger prints to stdout only. After it,
every record also goes to ``OUTPUT_DIR/log.txt`` (or to ``output`` itself when it ends in .txt/.log).
Unlike Dassl, an existing log file is appended to, after a separator line, so that a resumed or re-run
job keeps one ``log.txt`` (parsers read its last result block).
In a ``torchrun`` run only rank 0 logs INFO and writes ``log.txt``; the other ranks print only
WARNING and above, prefixed ``[rank r]``.
A ``log.txt`` that cannot be written (full disk, quota, permissions) stops the run at the record that
failed with one ``WriteError`` line naming the file (``engine.utils.write_errors``), never a logging traceback
per record; the console keeps logging. :func:`write_to_log_file` adds a line (e.g. ``train.py``'s
``error: ...``) to ``log.txt`` only.
"""
import logging
import os
import sys
import time

from engine.utils.write_errors import as_write_error
from engine.utils.write_guard import check_writes

LOGGER_NAME = "harness"
SEPARATOR_MARK = "=" * 20 + " new run "

__all__ = ["get_logger", "setup_logger", "LOGGER_NAME", "log_file_path", "write_to_log_file", "pin_console"]


def _rank():
    """This process's torch.distributed rank (0 without a process group)."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to log
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


class _Formatter(logging.Formatter):
    """``%(message)s`` for INFO and below, ``LEVEL: message`` for WARNING and above (``[rank r]`` first
    on ranks other than 0)."""

    def format(self, record):
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname}: {text}"
        r = _rank()
        return f"[rank {r}] {text}" if r else text


def _main_rank_or_warning(record):
    """Handler filter: everything on rank 0, WARNING and above on the other ranks."""
    return record.levelno >= logging.WARNING or _rank() == 0


class _StdoutHandler(logging.StreamHandler):
    """Stream handler that writes to whatever ``sys.stdout`` is at emit time (pytest capture safe)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # logging.StreamHandler assigns it in __init__
        pass


class _LogFileHandler(logging.FileHandler):
    """Appending ``log.txt`` handler. The first record it cannot write raises ``WriteError`` (one line)
    at the logging call and turns the handler off; later records go to the console only."""

    failed = False

    def emit(self, record):
        if not self.failed and _may_write(self.baseFilename):
            super().emit(record)

    def handleError(self, record):
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            return super().handleError(record)
        self.failed = True
        converted = as_write_error(err, self.baseFilename, len(self.format(record)) + 1)
        with _suppress():
            self.close()
        if converted is not None:
            raise converted from None
        raise OSError(err.errno, f"cannot write the log file {self.baseFilename}: {err.strerror or err}") from None

    def close(self):
        with _suppress():
            super().close()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def _may_write(path):
    """False once a write guard (``engine.utils.write_guard``: the run lost its output folder) objects."""
    try:
        check_writes(path)
    except Exception:  # noqa: BLE001 - the guard's line is raised at the run's next safe point instead
        return False
    return True


def write_to_log_file(line):
    """Append ``line`` to the ``log.txt`` of the project logger (not the console); silently skipped
    when there is none or it cannot be written."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, _LogFileHandler) and not handler.failed and _may_write(handler.baseFilename):
            with _suppress():
                handler.acquire()
                try:
                    stream = handler.stream if handler.stream is not None else handler._open()
                    handler.stream = stream
                    stream.write(line + "\n")
                    stream.flush()
                finally:
                    handler.release()


def _own(handler):
    handler._harness_owned = True  # setup_logger replaces only the handlers it made
    return handler


def _make_stdout_handler():
    handler = _own(_StdoutHandler())
    handler.setFormatter(_Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(_main_rank_or_warning)
    return handler


def get_logger():
    """Return THE project logger; prints INFO to stdout even before ``setup_logger``."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_harness_owned", False) for h in logger.handlers):
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(_make_stdout_handler())
    return logger


def log_to_stderr():
    """Send the project logger's console output to stderr (CLI tools whose stdout is data, e.g. JSON)."""
    logger = get_logger()
    for handler in [h for h in logger.handlers if getattr(h, "_harness_owned", False)]:
        logger.removeHandler(handler)
    handler = _own(logging.StreamHandler(sys.stderr))
    handler.setFormatter(_Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(_main_rank_or_warning)
    logger.addHandler(handler)
    return logger


def pin_console(stream):
    """Send the project logger's console output to ``stream`` itself, whatever ``sys.stdout`` later
    becomes (e.g. the real stdout while ``sys.stdout`` is a tee into this logger). ``setup_logger``
    undoes it."""
    logger = get_logger()
    for handler in [h for h in logger.handlers if isinstance(h, _StdoutHandler) or getattr(h, "_pinned", False)]:
        logger.removeHandler(handler)
    handler = _own(logging.StreamHandler(stream))
    handler._pinned = True
    handler.setFormatter(_Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(_main_rank_or_warning)
    logger.addHandler(handler)
    return logger


def log_file_path(output):
    """Dassl rule: ``output`` itself if it ends in .txt/.log, else ``output/log.txt``."""
    if output.endswith(".txt") or output.endswith(".log"):
        return output
    return os.path.join(output, "log.txt")


def setup_logger(output=None):
    """(Re)attach the stdout handler and, if ``output`` is given (and this is rank 0), an appending
    log-file handler.

    Calling it again replaces (and closes) the handlers it attached before; handlers added by others
    (e.g. a test's collector) are kept. Returns the logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_harness_owned", False):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(_make_stdout_handler())
    if output and _rank() == 0:
        fpath = log_file_path(output)
        os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
        if os.path.isfile(fpath) and os.path.getsize(fpath) > 0:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            try:
                with open(fpath, "a", encoding="utf-8") as f:
                    f.write(f"\n{SEPARATOR_MARK}{stamp} " + "=" * 20 + "\n")
            except OSError as err:
                raise (as_write_error(err, fpath) or err) from None
        file_handler = _own(_LogFileHandler(fpath, mode="a", encoding="utf-8"))
        file_handler.setFormatter(_Formatter("%(message)s"))
        file_handler.setLevel(logging.INFO)
        logger.addHandler(file_handler)
    return logger
