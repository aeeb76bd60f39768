"""File helpers. Every result file is written atomically: a temp file in the same folder, fsync,
then ``os.replace`` -- a crash or a failing serializer never leaves a partial file at the target path.
``write_json``/``read_json``/``mkdir_if_missing``/``listdir_nohidden``/``check_isfile`` keep Dassl's names.

Temp files are named ``.<name>.<host>-<pid>.<random>.tmp`` (``host`` = 8 hex digits of the host name).
A writer killed before ``os.replace`` leaves one behind; the next write of the same file (and
:func:`remove_stale_temps`, called on ``--resume``) removes those of dead processes on this host, and
those of other hosts or of the older ``.<name>.<random>.tmp`` naming once older than a day.
A write that fails for lack of space or permission raises :class:`WriteError` (an ``OSError``): one
line naming the file, its folder and, for a full disk, the bytes needed and free.
"""
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time

from engine.utils.logger import get_logger
from engine.utils.write_errors import WriteError, as_write_error
from engine.utils.write_guard import check_writes


def _file_mode():
    """Mode of a newly created file under the current umask (mkstemp would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

__all__ = [
    "WriteError",
    "os_error_line",
    "remove_stale_temps",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "atomic_save_npz",
    "read_json",
    "write_json",
    "mkdir_if_missing",
    "listdir_nohidden",
    "check_isfile",
]


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents) if it does not exist."""
    if dirname:
        os.makedirs(dirname, exist_ok=True)


#: temp files of other hosts (or of the old naming) older than this are stale.
STALE_AFTER_S = 24 * 3600
_TEMP_RE = re.compile(r"^\.(?P<base>.+?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


def _host_tag():
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def os_error_line(err, path, doing="writing"):
    """One line for any ``OSError`` met ``doing`` ``path``: :func:`as_write_error`'s line for a full disk
    or a permission problem, a named line for a file in the way of a folder, else the system's reason."""
    converted = as_write_error(err, path)
    if converted is not None:
        return str(converted)
    path = os.path.abspath(os.fspath(path))
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = path
        while not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
            blocker = os.path.dirname(blocker)
        while os.path.isdir(blocker) and blocker != path:  # the deepest existing part that is no folder
            nxt = os.path.join(blocker, os.path.relpath(path, blocker).split(os.sep)[0])
            if not os.path.lexists(nxt):
                break
            blocker = nxt
        return (f"cannot create {path}: {blocker} is a file, not a folder; choose another output folder "
                "(--output-dir) or move the file away")
    other = f" ({err.filename})" if err.filename and err.filename != path else ""
    return f"{err.strerror or err} {doing} {path}{other}"


def _is_stale(match, full_path, host, now):
    pid = match.group("pid")
    if pid is not None and match.group("host") == host:
        pid = int(pid)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, owned by another user
            return False
        return False
    try:
        return now - os.stat(full_path).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_temps(folder, name=None):
    """Remove temp files left in ``folder`` by killed writers (of ``name`` only, when given); returns them.

    Live writers' temp files (this host, process alive) are never touched; see the module docstring.
    """
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    host, now, removed = _host_tag(), time.time(), []
    for entry in entries:
        m = _TEMP_RE.match(entry)
        if not m or (name is not None and m.group("base") != name):
            continue
        full = os.path.join(folder, entry)
        if _is_stale(m, full, host, now):
            with contextlib.suppress(FileNotFoundError):
                os.remove(full)
                removed.append(full)
                get_logger().warning(f"Removed {full}, a temporary file left by an interrupted write")
    return removed


@contextlib.contextmanager
def atomic_open(path, mode="wb", encoding=None, size_hint=None):
    """Yield a temp file next to ``path``; on clean exit it replaces ``path``, on error it is removed.

    Stale temp files of ``path`` (killed writers) are removed first. The write guards
    (``engine.utils.write_guard``) are asked before the temp file is made and before it replaces ``path``.
    A full disk or a permission error becomes :class:`WriteError` (``size_hint``: the bytes to be written,
    quoted in the message).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    check_writes(path)  # a run whose output folder was taken over writes nothing more (write_guard)
    try:
        mkdir_if_missing(folder)
        remove_stale_temps(folder, os.path.basename(path))
        prefix = f".{os.path.basename(path)}.{_host_tag()}-{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        check_writes(path)  # again: the run may have been paused while it wrote
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        converted = as_write_error(err, path, size_hint)
        if converted is not None and converted is not err:
            raise converted from None
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_open(path, "wb", size_hint=len(data)) as f:
        f.write(data)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj):
    """Write ``obj`` as JSON (Dassl style: indent 4) to ``path`` atomically."""
    text = json.dumps(obj, indent=4, separators=(",", ": "))
    atomic_write_text(path, text)


def write_json(obj, fpath):
    """Dassl signature ``write_json(obj, fpath)``; atomic."""
    atomic_write_json(fpath, obj)


def read_json(fpath):
    """Read a JSON file; a missing or malformed file raises a one-line error naming it."""
    if not os.path.isfile(fpath):
        raise FileNotFoundError(f"JSON file not found: {fpath}")
    with open(fpath, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Malformed JSON in {fpath}: {e}") from None


def atomic_torch_save(obj, path):
    """``torch.save(obj)`` to ``path`` atomically (serialized in memory first, so that a full disk
    fails with the exact size needed and torch's zip writer never sees a failing file)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path, **arrays):
    """``numpy.savez`` to ``path`` atomically (no pickled objects: load with ``allow_pickle=False``)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def listdir_nohidden(path, sort=False):
    """List non-hidden entries of ``path`` (sorted if ``sort``)."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def check_isfile(fpath):
    """True if ``fpath`` is a file; otherwise warn (Dassl behaviour) and return False."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        get_logger().warning(f'No file found at "{fpath}"')
    return isfile
