"""``set_random_seed(seed)`` (Dassl): seeds Python ``random``, NumPy and torch (CPU and every CUDA device).

``SEED`` / ``--seed``: any value >= 0 seeds, 0 included (Dassl ignored ``--seed 0``). Nothing else in
the engine draws from Python's ``random`` between this call and the dataset's few-shot sampling.
"""
import random

import numpy as np
import torch

__all__ = ["set_random_seed"]


def set_random_seed(seed):
    """Seed ``random``, ``numpy.random`` and ``torch`` (+ all CUDA devices) with ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
