"""ImageNet: ``imagenet/images/{train,val}/<wnid>/`` + required ``classnames.txt`` (§2.1, §2.7).

Val is used as test (and as val). Folders and files are listed sorted, so few-shot picks are
reproducible across machines; the few-shot cache holds only ``train``. ``preprocessed.pkl`` is never
read nor written.
"""
import os

from engine.data import DATASET_REGISTRY, DatasetBase
from engine.data.fewshot import load_or_create_fewshot
from engine.data.sampling import subsample_classes
from engine.utils.logger import get_logger

from ._imagenet_common import dataset_folder, read_classnames, read_wnid_folders


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    folder = "imagenet"

    def __init__(self, cfg):
        self.dataset_dir = dataset_folder(cfg, self.folder, "ImageNet")
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        legacy = os.path.join(self.dataset_dir, "preprocessed.pkl")
        if os.path.exists(legacy):
            get_logger().info(f"Ignoring {legacy} (never unpickled); listing the folders sorted instead")
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"))
        train = read_wnid_folders(os.path.join(self.image_dir, "train"), classnames)
        test = read_wnid_folders(os.path.join(self.image_dir, "val"), classnames)
        train, _ = load_or_create_fewshot(
            self.dataset_dir, self.image_dir, train, None, cfg.DATASET.NUM_SHOTS, cfg.SEED, with_val=False)
        train, test = subsample_classes(train, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=test, test=test)
