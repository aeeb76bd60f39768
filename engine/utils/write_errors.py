"""Write errors: a full disk, an exceeded quota, a denied permission or a read-only file system while
writing a file becomes one :class:`WriteError` line naming the file, its folder and, for a full disk, the
bytes needed and free (:func:`as_write_error`). Used by the atomic writers (``engine.utils.io``) and by the
logger's ``log.txt`` handler (``engine.utils.logger``); imports nothing of the project.
"""
import errno
import os

__all__ = ["WriteError", "as_write_error", "format_bytes"]


class WriteError(OSError):
    """A file could not be written: no space left, quota exceeded, permission denied or a read-only
    file system. ``str(err)`` is one line naming the file and its folder; ``errno`` is kept."""

    def __str__(self):
        return str(self.args[0]) if self.args else "cannot write a file"


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def format_bytes(n):
    """``1,234 bytes`` below 1 MiB, else ``12.3 MiB`` / ``1.2 GiB``."""
    if n < 1 << 20:
        return f"{int(n):,} bytes"
    if n < 1 << 30:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / (1 << 30):.1f} GiB"


def _free_bytes(folder):
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None


def as_write_error(err, path, needed=None):
    """``WriteError`` (one line) for a no-space / permission ``OSError`` raised writing ``path``; else None."""
    if isinstance(err, WriteError):
        return err
    if not isinstance(err, OSError) or err.errno not in _NO_SPACE | _NO_PERMISSION:
        return None
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if err.errno in _NO_SPACE:
        free = _free_bytes(folder)
        parts = [f"needed {format_bytes(needed)}" if needed is not None else "",
                 f"{format_bytes(free)} free" if free is not None else ""]
        detail = ", ".join(p for p in parts if p)
        what = "disk quota exceeded" if err.errno != errno.ENOSPC else "no space left on the device"
        msg = (f"{what} writing {path} (folder {folder}{': ' + detail if detail else ''}); free some space or "
               "choose another output folder, then re-run (--resume continues from the last complete checkpoint)")
    else:
        what = "read-only file system" if err.errno == errno.EROFS else "permission denied"
        msg = (f"{what} writing {path} (folder {folder}); fix the folder's permissions or choose another "
               "output folder (--output-dir)")
    out = WriteError(msg)
    out.errno, out.filename = err.errno, path
    return out
