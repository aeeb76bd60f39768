"""Device selection: ``USE_CUDA`` and CUDA available -> ``cuda``, else ``cpu`` (no DataParallel)."""
import torch

__all__ = ["select_device"]


def select_device(cfg):
    """Return ``torch.device("cuda")`` iff ``cfg.USE_CUDA`` and CUDA is available, else CPU."""
    if cfg.USE_CUDA and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
