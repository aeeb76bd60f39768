"""``SplitDataset``: the common flow of the CoOp benchmark datasets (split file, few-shot cache, base/new subsampling).

1. ``<ROOT>/<folder>`` must exist; images live in ``<folder>/<image_subdir>``.
2. Read ``<folder>/<split_file>`` (paths relative to the image folder, or to the dataset folder when
   ``prefix_is_dataset_dir``). If missing, the run stops with an error naming the file and where to get
   it, unless ``DATASET.ALLOW_GENERATED_SPLIT`` is True: then ``generate_split()`` builds it from the
   raw annotations like CoOp (deterministic, private RNG; NOT the published split, logged as such)
   and it is saved atomically.
3. Few-shot subsets (``DATASET.NUM_SHOTS``, cached per ``SEED``), then the base/new split
   (``DATASET.SUBSAMPLE_CLASSES``).
"""
import os

from engine.utils.logger import get_logger

from .base_dataset import DatasetBase, DatasetError
from .fewshot import load_or_create_fewshot
from .folders import require_dir, resolve_root
from .sampling import subsample_classes
from .splits import missing_split_message, read_split, save_split

COOP_SPLIT_HINT = ("download it from the links in CoOp's DATASETS.md "
                   "(https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md) into that folder")


class SplitDataset(DatasetBase):
    folder = ""  # dataset folder under DATASET.ROOT
    image_subdir = ""  # image folder inside the dataset folder
    split_file = ""  # split_zhou_<Name>.json
    prefix_is_dataset_dir = False  # StanfordCars: split paths are relative to the dataset folder
    raw_files_hint = ""  # what generate_split() needs, for the error message

    def __init__(self, cfg):
        root = resolve_root(cfg)
        self.dataset_dir = require_dir(
            os.path.join(root, self.folder), f"{type(self).__name__} dataset folder",
            f"expected <DATASET.ROOT>/{self.folder}; see docs/DATASETS.md")
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir)
        self.split_path = os.path.join(self.dataset_dir, self.split_file)
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        prefix = self.dataset_dir if self.prefix_is_dataset_dir else self.image_dir
        self.allow_generated_split = bool(cfg.DATASET.get("ALLOW_GENERATED_SPLIT", False))
        train, val, test = self.load_split(prefix)
        train, val = load_or_create_fewshot(
            self.dataset_dir, prefix, train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    def load_split(self, prefix):
        """Read the split file, or generate + save it, or raise a one-line error."""
        if os.path.isfile(self.split_path):
            return read_split(self.split_path, prefix)
        if type(self).generate_split is SplitDataset.generate_split:
            raise DatasetError(f"split file not found: {self.split_path}; {COOP_SPLIT_HINT}")
        if not getattr(self, "allow_generated_split", False):
            raise DatasetError(missing_split_message(self.split_path, COOP_SPLIT_HINT))
        try:
            train, val, test = self.generate_split()
        except DatasetError as e:
            raise DatasetError(
                f"split file not found: {self.split_path} and it cannot be generated ({e}); "
                f"{COOP_SPLIT_HINT}, or provide {self.raw_files_hint}") from None
        get_logger().warning(f"Split file {self.split_path} not found: generated it from {self.raw_files_hint} "
                             f"(DATASET.ALLOW_GENERATED_SPLIT True); this is NOT the published CoOp split")
        save_split(train, val, test, self.split_path, prefix)
        return train, val, test

    def generate_split(self):
        """Build ``(train, val, test)`` from raw files; the default cannot (no raw source)."""
        raise NotImplementedError
