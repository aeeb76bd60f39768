"""``setup_cfg(args)``: build the frozen run config in Dassl's merge order, with one-line errors.

Order (later wins): defaults -> ``extend(cfg)`` (trainer nodes) -> ``--dataset-config-file`` ->
``--config-file`` -> CLI flags (``--root --output-dir --resume --seed --source-domains
--target-domains --transforms --trainer --backbone --head``) -> trailing ``KEY VALUE`` opts -> freeze.

Values follow yacs rules (strings go through ``literal_eval``; list and tuple are interchangeable) plus
two safe coercions: an int where the default is a float (``OPTIM.LR 1``), and a bare number/bool where
the default is a string (``DATASET.NAME 101`` -> ``"101"``). An unknown key, a type mismatch, a malformed
YAML file, a missing file, an odd-length opts list or an invalid choice raise :class:`ConfigError`.
"""
import difflib
import os

import yaml
from yacs.config import CfgNode as CN

from engine.config.defaults import get_cfg_default
from engine.precision import PREC_NAMES, check_prec

__all__ = ["ConfigError", "setup_cfg", "merge_from_file", "merge_from_list", "apply_cli_flags", "CHOICES"]

# Keys whose value must be one of a fixed set (checked after all merges, before freeze).
CHOICES = {
    "OPTIM.NAME": ("sgd", "adam", "adamw", "amsgrad", "rmsprop", "radam"),
    "OPTIM.LR_SCHEDULER": ("single_step", "multi_step", "cosine"),
    "OPTIM.WARMUP_TYPE": ("constant", "linear"),
    "TEST.FINAL_MODEL": ("last_step", "best_val"),
    "TEST.SPLIT": ("test", "val"),
    "DATASET.SUBSAMPLE_CLASSES": ("all", "base", "new"),
    "MODEL.TEXT_ENCODER.MEMORY_PLAN": ("auto", "on", "off"),
}
PREC_CHOICES = PREC_NAMES  # kept name; the list lives in engine.precision
# Keys that take either type: Dassl's bool, or an OpenCLIP pretrained tag (engine.backbone.open_clip_backbone).
MIXED_TYPES = {"MODEL.BACKBONE.PRETRAINED": (bool, str)}


class ConfigError(ValueError):
    """A bad config key, value or file; the message is one line naming it."""


def _all_keys(node, prefix=""):
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CN):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_error(cfg, full_key, source):
    close = difflib.get_close_matches(full_key, _all_keys(cfg), n=1, cutoff=0.6)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return ConfigError(f"unknown config key {full_key}{source}{hint}")


def _coerce(value, default, full_key, raw, source):
    """Return ``value`` converted to the type of ``default`` or raise ConfigError.

    As yacs: ``None`` may replace any value (e.g. ``MODEL.INIT_WEIGHTS: null`` in a YAML).
    """
    if default is None or value is None or type(value) is type(default):
        return value
    if isinstance(value, MIXED_TYPES.get(full_key, ())):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and isinstance(raw, (str, int, float)) and not isinstance(value, (list, tuple, dict)):
        if value is not None:
            return str(raw)
    expected = type(default).__name__
    raise ConfigError(
        f"bad value for {full_key}{source}: expected {expected} like the default {default!r}, got {raw!r}"
    )


def _decode(raw):
    if isinstance(raw, dict):
        return raw
    return CN._decode_cfg_value(raw)


def _merge_dict(cfg, node, data, prefix, source):
    for key, raw in data.items():
        full_key = f"{prefix}{key}"
        if not isinstance(key, str) or key not in node:
            raise _unknown_key_error(cfg, full_key, source)
        default = node[key]
        if isinstance(default, CN):
            if not isinstance(raw, dict):
                raise ConfigError(f"{full_key}{source} is a group of keys; expected a mapping, got {raw!r}")
            _merge_dict(cfg, default, raw, full_key + ".", source)
            continue
        if isinstance(raw, dict):
            raise ConfigError(f"bad value for {full_key}{source}: expected a single value, got a mapping")
        node[key] = _coerce(_decode(raw), default, full_key, raw, source)


def merge_from_file(cfg, path):
    """Merge a YAML file into ``cfg`` (unknown keys and bad types raise ConfigError naming the file)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"malformed YAML in {path}: {detail}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start}; a binary file?); save it as UTF-8 YAML") from None
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path} ({e.strerror or e})") from None
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping of keys, got {type(data).__name__}")
    _merge_dict(cfg, cfg, data, "", f" (in {path})")
    return cfg


def merge_from_list(cfg, opts):
    """Merge trailing ``KEY VALUE`` pairs (``DATASET.NUM_SHOTS 16 ...``) into ``cfg``."""
    opts = list(opts or [])
    if len(opts) % 2 != 0:
        raise ConfigError(f"trailing opts must be KEY VALUE pairs; {opts[-1]!r} has no value")
    for full_key, raw in zip(opts[0::2], opts[1::2]):
        node = cfg
        parts = full_key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, CN) or part not in node:
                raise _unknown_key_error(cfg, full_key, " (in the command-line opts)")
            if i < len(parts) - 1:
                node = node[part]
        default = node[parts[-1]]
        if isinstance(default, CN):
            example = f"{full_key}.{next(iter(default), 'X')}"
            raise ConfigError(f"{full_key} is a group of keys; set one of its keys, e.g. {example}")
        node[parts[-1]] = _coerce(_decode(raw), default, full_key, raw, " (in the command-line opts)")
    return cfg


def apply_cli_flags(cfg, args):
    """Copy Dassl's CLI flags into ``cfg`` (``reset_cfg``); ``--seed 0`` counts, unlike Dassl."""

    def get(name):
        return getattr(args, name, None)

    if get("root"):
        cfg.DATASET.ROOT = get("root")
    if get("output_dir"):
        cfg.OUTPUT_DIR = get("output_dir")
    if get("resume"):
        cfg.RESUME = get("resume")
    if get("seed") is not None:
        cfg.SEED = int(get("seed"))
    if get("source_domains"):
        cfg.DATASET.SOURCE_DOMAINS = list(get("source_domains"))
    if get("target_domains"):
        cfg.DATASET.TARGET_DOMAINS = list(get("target_domains"))
    if get("transforms"):
        cfg.INPUT.TRANSFORMS = list(get("transforms"))
    if get("trainer"):
        cfg.TRAINER.NAME = get("trainer")
    if get("backbone"):
        cfg.MODEL.BACKBONE.NAME = get("backbone")
    if get("head"):
        cfg.MODEL.HEAD.NAME = get("head")
    if get("wandb"):
        cfg.TRAIN.WANDB_PROJECT = get("wandb")
    return cfg


def _lookup(cfg, full_key):
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


def validate_cfg(cfg):
    """Check the fixed-choice keys, every ``TRAINER.<NODE>.PREC`` and ``OPTIM.MAX_EPOCH`` (at least 1: the
    LR schedule divides by it, and 0 epochs would "train" nothing); raise ConfigError on a bad value."""
    epochs = cfg.OPTIM.MAX_EPOCH
    if isinstance(epochs, int) and epochs < 1:
        raise ConfigError(f"bad value for OPTIM.MAX_EPOCH: {epochs}; expected at least 1 (the number of training "
                          "epochs; to evaluate without training use --eval-only)")
    for full_key, choices in CHOICES.items():
        value = _lookup(cfg, full_key)
        if value not in choices:
            raise ConfigError(f"bad value for {full_key}: {value!r}; expected one of {', '.join(choices)}")
    for node_name, node in cfg.TRAINER.items():
        if isinstance(node, CN) and "PREC" in node:
            try:
                check_prec(node.PREC, f"TRAINER.{node_name}.PREC")
            except ValueError as err:
                raise ConfigError(str(err)) from None
    return cfg


def setup_cfg(args, extend=None):
    """Build and freeze the config from ``args`` (an argparse Namespace; missing attributes count as unset)."""
    cfg = get_cfg_default()
    if extend is not None:
        extend(cfg)
    dataset_cfg = getattr(args, "dataset_config_file", None)
    if dataset_cfg:
        merge_from_file(cfg, dataset_cfg)
    method_cfg = getattr(args, "config_file", None)
    if method_cfg:
        merge_from_file(cfg, method_cfg)
    apply_cli_flags(cfg, args)
    merge_from_list(cfg, getattr(args, "opts", None))
    validate_cfg(cfg)
    cfg.freeze()
    return cfg
