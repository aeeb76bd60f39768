"""File helpers. Every result file is written atomically: a temp file in the same folder, fsync,
then ``os.replace`` -- a crash or a failing serializer never leaves a partial file at the target path.
``write_json``/``read_json``/``mkdir_if_missing``/``listdir_nohidden``/``check_isfile`` keep Dassl's names.
"""
import contextlib
import io
import json
import os
import tempfile

from engine.utils.logger import get_logger


def _file_mode():
    """Mode of a newly created file under the current umask (mkstemp would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

__all__ = [
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


@contextlib.contextmanager
def atomic_open(path, mode="wb", encoding=None):
    """Yield a temp file next to ``path``; on clean exit it replaces ``path``, on error it is removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    mkdir_if_missing(folder)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


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
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


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
