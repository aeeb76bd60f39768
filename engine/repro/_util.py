"""Shared helpers for ``engine.repro``: the project logger and atomic writes.

Kept free of torch: ``engine.utils`` imports torch at package import (~2 s), which the
reproduction CLIs (scripts, sweep, collect_results, parse_test_res) must not pay per call.
"""
from __future__ import annotations

import json
import os
import tempfile


def get_log():
    """THE project logger (``engine.utils.logger.get_logger``), imported lazily."""
    from engine.utils.logger import get_logger

    return get_logger()


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder + fsync + ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
