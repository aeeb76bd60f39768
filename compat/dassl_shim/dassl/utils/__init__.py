"""``dassl.utils``: the engine's utilities under Dassl's names, the tee ``setup_logger`` and the safe
``load_checkpoint`` / ``load_pretrained_weights``."""
from engine.registry import Registry
from engine.utils.env import collect_env_info
from engine.utils.io import check_isfile, listdir_nohidden, mkdir_if_missing, read_json, write_json
from engine.utils.meters import AverageMeter, MetricMeter
from engine.utils.seed import set_random_seed

from .. import missing_name
from .logger import setup_logger
from .torchtools import count_num_param, load_checkpoint, load_pretrained_weights

__all__ = ["setup_logger", "set_random_seed", "collect_env_info", "mkdir_if_missing", "listdir_nohidden",
           "read_json", "write_json", "check_isfile", "load_checkpoint", "load_pretrained_weights",
           "count_num_param", "Registry", "AverageMeter", "MetricMeter"]


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_name(f"dassl.utils.{name}")
