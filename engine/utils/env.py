"""``collect_env_info()``: the ``** System info **`` block of the train.py banner (fast; no subprocesses)."""
import platform
import sys

__all__ = ["collect_env_info"]


def _version(dist_name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist_name)
    except PackageNotFoundError:
        return "not installed"


def collect_env_info():
    """Return a multi-line string: Python, OS, torch/CUDA/cuDNN and the key package versions."""
    import torch

    lines = [
        f"Python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"OS: {platform.platform()}",
        f"PyTorch: {torch.__version__}",
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"CUDA version: {torch.version.cuda}")
        lines.append(f"cuDNN version: {torch.backends.cudnn.version()}")
        for i in range(torch.cuda.device_count()):
            lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)}")
    lines.append(f"CPU threads: {torch.get_num_threads()}")
    for name in ("torchvision", "numpy", "pillow", "yacs", "tqdm", "openai-clip"):
        lines.append(f"{name}: {_version(name)}")
    return "\n".join(lines)
