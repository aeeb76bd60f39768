"""Engine utilities (logger, atomic IO, seeding, env info, meters, device); Dassl ``dassl.utils`` names.

Names are resolved lazily (PEP 562) so that torch-free tools (``engine.runs``, ``repro``, the scripts) can use
the logger and the atomic writers without paying for ``import torch``.
"""
import importlib

_EXPORTS = {
    "select_device": "device",
    "collect_env_info": "env",
    "atomic_open": "io",
    "atomic_save_npz": "io",
    "atomic_torch_save": "io",
    "atomic_write_bytes": "io",
    "atomic_write_json": "io",
    "atomic_write_text": "io",
    "check_isfile": "io",
    "listdir_nohidden": "io",
    "mkdir_if_missing": "io",
    "read_json": "io",
    "write_json": "io",
    "get_logger": "logger",
    "setup_logger": "logger",
    "AverageMeter": "meters",
    "MetricMeter": "meters",
    "set_random_seed": "seed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.utils' has no attribute {name!r}")
    return getattr(importlib.import_module(f"engine.utils.{_EXPORTS[name]}"), name)
