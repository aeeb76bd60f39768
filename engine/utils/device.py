"""Device selection: ``USE_CUDA`` and CUDA available -> ``cuda`` (``cuda:LOCAL_RANK`` in a ``torchrun``
run, one GPU per process), else ``cpu``. No DataParallel: several GPUs means ``torchrun`` (docs/DEVICES.md)."""
import torch

__all__ = ["select_device"]


def select_device(cfg):
    """``torch.device("cuda")`` (or ``cuda:LOCAL_RANK`` in a distributed run) iff ``cfg.USE_CUDA`` and CUDA
    is available, else CPU."""
    if cfg.USE_CUDA and torch.cuda.is_available():
        from engine.distributed import is_distributed, local_rank

        if is_distributed():
            return torch.device("cuda", local_rank())
        return torch.device("cuda")
    return torch.device("cpu")
