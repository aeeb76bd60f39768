"""``dassl.utils.setup_logger``: the engine logger's ``log.txt`` plus Dassl's stdout tee.

Dassl replaces ``sys.stdout`` so that every ``print`` also lands in ``log.txt``. Here printed text is
collected per line and handed to the engine logger (console + ``OUTPUT_DIR/log.txt``), whose console
handler is pinned to the original stdout: each printed line appears once on the console and once in
``log.txt``. Differences from Dassl: an existing ``log.txt`` is appended to (after a separator line)
instead of starting ``log.txt-<timestamp>``; stderr is not teed.
"""
import io
import sys

from engine.utils.logger import get_logger, pin_console
from engine.utils.logger import setup_logger as _engine_setup_logger

from .. import _harness

__all__ = ["setup_logger", "StdoutTee"]


class StdoutTee(io.TextIOBase):
    """A ``sys.stdout`` replacement: complete lines go to the engine logger, a partial line waits for its end."""

    def __init__(self, original):
        self.original = original
        self._pending = ""

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            text = str(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            get_logger().info(line)
        return len(text)

    def flush(self):
        self.original.flush()

    def close_tee(self):
        """Emit a pending partial line and give ``sys.stdout`` back."""
        if self._pending:
            get_logger().info(self._pending)
            self._pending = ""
        if sys.stdout is self:
            sys.stdout = self.original

    @property
    def encoding(self):
        return getattr(self.original, "encoding", "utf-8")

    def isatty(self):
        return False

    def fileno(self):
        return self.original.fileno()


def setup_logger(output=None):
    """Dassl's ``setup_logger(output)``: ``output`` is a folder (``log.txt`` in it) or a ``.txt``/``.log`` file.

    Under the runner its hook first opens the run (lock, run record); then the engine logger writes
    ``log.txt`` and ``print`` is teed into it. ``None`` does nothing, as in Dassl.
    """
    if output is None:
        return
    _harness.call("setup_logger", output)
    _engine_setup_logger(output)
    if isinstance(sys.stdout, StdoutTee):
        original = sys.stdout.original
    else:
        original = sys.stdout
        sys.stdout = StdoutTee(original)
    pin_console(original)
    _harness.call("stdout_teed", output)
