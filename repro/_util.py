"""Shared helpers for ``repro``: the project logger and atomic writes.

Kept free of torch: the reproduction CLIs (scripts, sweep, collect_results, parse_test_res) must
not pay ``import torch`` (~2 s) per call; ``engine.utils.io``/``logger`` import no torch.
"""
from __future__ import annotations

import json


def get_log():
    """THE project logger (``engine.utils.logger.get_logger``), imported lazily."""
    from engine.utils.logger import get_logger

    return get_logger()


def atomic_write_json(path: str, obj) -> None:
    """The sweep state file: ``engine.utils.io`` atomic write (temp file + fsync + ``os.replace``)."""
    from engine.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
