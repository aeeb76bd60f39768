"""ImageNetV2 (test-only): ``imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/``; label =
folder number, class name = that line of ``classnames.txt`` (§2.7)."""
import os

from engine.data import DATASET_REGISTRY, DatasetBase

from ._imagenet_common import TestOnlyMixin, dataset_folder, list_class_folders, read_classnames


@DATASET_REGISTRY.register()
class ImageNetV2(TestOnlyMixin, DatasetBase):
    folder = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"

    def __init__(self, cfg):
        self.dataset_dir = dataset_folder(cfg, self.folder, "ImageNetV2")
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir)
        self.warn_ignored(cfg, "ImageNetV2")
        names = list(read_classnames(os.path.join(self.dataset_dir, "classnames.txt")).values())
        labels = range(len(names))
        data = list_class_folders(self.image_dir, [str(y) for y in labels], labels, names)
        super().__init__(train_x=data, test=data)
