"""``DatasetWrapper``, the skip-aware collate and ``build_data_loader`` (compat note §1.9).

Batches are dicts: ``img`` (float tensor), ``label`` (long), ``domain`` (long), ``impath`` (list[str]),
``index`` (long); ``img`` is a list of K tensors when ``DATALOADER.K_TRANSFORMS`` K > 1 (train only) and
``img0`` (un-augmented) is added when ``DATALOADER.RETURN_IMG0``. With ``DATALOADER.SKIP_BAD_IMAGES`` an unreadable image is logged (path + running
count) and dropped from its batch by ``collate_skip_bad``; otherwise it raises with its path.
"""
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.dataloader import default_collate

from engine.utils.logger import get_logger

from .image_check import BadImageError, read_image
from .transforms import build_no_transform

SAMPLERS = {"RandomSampler": RandomSampler, "SequentialSampler": SequentialSampler}


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

    def __getitem__(self, idx):
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
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=use_cuda,
        collate_fn=collate_skip_bad,
    )
    if len(loader) == 0:
        raise ValueError(f"empty data loader ({len(data_source)} items, batch size {batch_size})")
    return loader
