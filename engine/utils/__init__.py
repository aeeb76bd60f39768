"""Engine utilities (logger, atomic IO, seeding, env info, meters, device); Dassl ``dassl.utils`` names."""
from engine.utils.device import select_device
from engine.utils.env import collect_env_info
from engine.utils.io import (
    atomic_open,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_isfile,
    listdir_nohidden,
    mkdir_if_missing,
    read_json,
    write_json,
)
from engine.utils.logger import get_logger, setup_logger
from engine.utils.meters import AverageMeter, MetricMeter
from engine.utils.seed import set_random_seed
