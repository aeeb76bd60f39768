"""``DatasetWrapper``, the skip-aware collate and ``build_data_loader`` (Dassl's contract).

Batches are dicts: ``img`` (float tensor), ``label`` (long), ``domain`` (long), ``impath`` (list[str]),
``index`` (long); ``img`` is a list of K tensors when ``DATALOADER.K_TRANSFORMS`` K > 1 (train only) and
``img0`` (un-augmented) is added when ``DATALOADER.RETURN_IMG0``. With ``DATALOADER.SKIP_BAD_IMAGES`` an unreadable image is logged (path + running
count) and dropped from its batch by ``collate_skip_bad``; otherwise it raises with its path.

Augmentation randomness does not depend on ``DATALOADER.NUM_WORKERS``: each pass over a loader draws
one pass seed from the main process's torch RNG (the samplers below yield ``(index, pass_seed)``), and
every sample is transformed under Python ``random``, NumPy and torch CPU RNGs seeded from
``(pass_seed, index)``, restored afterwards. The same seed therefore gives the same augmented images
with 0, 2 or 8 workers (Dassl's stream, where each worker's RNG is seeded from a base seed plus its
worker id, is not reproduced; nor is its draw order). Hence ``NUM_WORKERS`` is capped to the CPUs this
process may use (``os.sched_getaffinity``), logged once per (requested, available) pair: more workers
than CPUs only slow loading down, and torch would warn about them at every epoch.
"""
import contextlib
import hashlib
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.dataloader import default_collate

from engine.utils.logger import get_logger

from .image_check import BadImageError, read_image
from .transforms import build_no_transform

_CAPS_LOGGED = set()  # (requested, available) worker counts already explained in this process


def available_cpus():
    """CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where it is missing)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def loader_workers(requested):
    """``DATALOADER.NUM_WORKERS`` capped to :func:`available_cpus`; the first cap of each kind is logged."""
    requested = max(0, int(requested))
    cpus = available_cpus()
    if requested <= cpus:
        return requested
    if (requested, cpus) not in _CAPS_LOGGED:
        _CAPS_LOGGED.add((requested, cpus))
        get_logger().info(f"Using {cpus} data loader workers instead of DATALOADER.NUM_WORKERS {requested}: "
                          f"this process may use {cpus} CPUs (results do not depend on the worker count; "
                          f"set DATALOADER.NUM_WORKERS {cpus} to skip this message)")
    return cpus


def sample_seed(pass_seed, index):
    """64-bit seed of one sample's augmentation: a hash of ``(pass_seed, index)`` (below 2**63)."""
    digest = hashlib.blake2b(f"{int(pass_seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


@contextlib.contextmanager
def seeded_rngs(seed):
    """Run the block with Python ``random``, NumPy and torch (CPU) seeded from ``seed``; restore them after."""
    cpu = torch.default_generator  # CPU only: torch.manual_seed would also reseed every CUDA generator
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), cpu.get_state()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    cpu.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        cpu.set_state(torch_state)


def _draw_pass_seed():
    """One int64 from the main process's global torch RNG (seeded by ``SEED``)."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


def _with_pass_seed(indices):
    """``(index, pass_seed)`` for each index; the pass seed is drawn after the first index, i.e. after
    ``RandomSampler`` drew its permutation seed, whoever drew that (``distributed_sampler`` does it for
    every rank before iterating), so the RNG is used in the same order in every kind of run."""
    first = next(indices, None)
    if first is None:
        return
    pass_seed = _draw_pass_seed()
    yield first, pass_seed
    for index in indices:
        yield index, pass_seed


class SeededRandomSampler(RandomSampler):
    """``RandomSampler`` whose items are ``(index, pass_seed)``: one pass seed drawn per pass."""

    def __iter__(self):
        return _with_pass_seed(iter(super().__iter__()))


class SeededSequentialSampler(SequentialSampler):
    """``SequentialSampler`` whose items are ``(index, pass_seed)``: one pass seed drawn per pass."""

    def __iter__(self):
        return _with_pass_seed(iter(super().__iter__()))


SAMPLERS = {"RandomSampler": SeededRandomSampler, "SequentialSampler": SeededSequentialSampler}


class DatasetWrapper(Dataset):
    """Map-style dataset over ``[Datum]`` returning Dassl's batch dict items."""

    def __init__(self, cfg, data_source, transform=None, skip_bad=False, is_train=False):
        self.data_source = data_source
        self.transform = transform
        self.skip_bad = skip_bad
        self.num_skipped = 0  # per process (each loader worker keeps its own count)
        self.k_tfm = max(1, int(cfg.DATALOADER.K_TRANSFORMS)) if is_train else 1  # Dassl: train only
        self.return_img0 = bool(cfg.DATALOADER.RETURN_IMG0)
        self.to_tensor = build_no_transform(cfg)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, key):
        """``key``: an index, or ``(index, pass_seed)`` from the samplers above (seeded augmentation)."""
        idx, pass_seed = key if isinstance(key, tuple) else (key, None)
        rngs = seeded_rngs(sample_seed(pass_seed, idx)) if pass_seed is not None else contextlib.nullcontext()
        with rngs:
            return self._load(idx)

    def _load(self, idx):
        item = self.data_source[idx]
        try:
            img = read_image(item.impath)
        except BadImageError as e:
            if not self.skip_bad:
                raise
            self.num_skipped += 1
            get_logger().warning(f"skipped unreadable image ({self.num_skipped} so far): {e}")
            return None
        out = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        if self.transform is None:
            out["img"] = self.to_tensor(img)
        elif self.k_tfm > 1:
            out["img"] = [self.transform(img) for _ in range(self.k_tfm)]  # DATALOADER.K_TRANSFORMS
        else:
            out["img"] = self.transform(img)
        if self.return_img0:
            out["img0"] = self.to_tensor(img)  # DATALOADER.RETURN_IMG0: un-augmented image
        return out


def collate_skip_bad(batch):
    """Default collate after dropping skipped (``None``) items; error if the whole batch was unreadable."""
    kept = [b for b in batch if b is not None]
    if not kept:
        raise BadImageError(f"all {len(batch)} images of a batch are unreadable (DATALOADER.SKIP_BAD_IMAGES)")
    return default_collate(kept)


def build_data_loader(cfg, data_source, batch_size, sampler_type, transform, is_train):
    """``DataLoader`` with Dassl semantics: ``drop_last = is_train and len(data) >= batch_size``."""
    if sampler_type not in SAMPLERS:
        raise ValueError(f"sampler {sampler_type!r} is not supported; expected one of {list(SAMPLERS)}")
    wrapper = DatasetWrapper(cfg, data_source, transform, skip_bad=bool(cfg.DATALOADER.SKIP_BAD_IMAGES),
                             is_train=is_train)
    use_cuda = bool(cfg.USE_CUDA) and torch.cuda.is_available()
    loader = DataLoader(
        wrapper,
        batch_size=batch_size,
        sampler=SAMPLERS[sampler_type](wrapper),
        num_workers=loader_workers(cfg.DATALOADER.NUM_WORKERS),
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=use_cuda,
        collate_fn=collate_skip_bad,
    )
    if len(loader) == 0:
        raise ValueError(f"empty data loader ({len(data_source)} items, batch size {batch_size})")
    return loader
