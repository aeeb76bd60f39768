"""Config: ``get_cfg_default()`` (Dassl keys + ours) and ``setup_cfg(args, extend=...)``."""
from engine.config.defaults import get_cfg_default
from engine.config.setup import (
    ConfigError,
    apply_cli_flags,
    merge_from_file,
    merge_from_list,
    setup_cfg,
    validate_cfg,
)

__all__ = [
    "ConfigError",
    "apply_cli_flags",
    "get_cfg_default",
    "merge_from_file",
    "merge_from_list",
    "setup_cfg",
    "validate_cfg",
]
