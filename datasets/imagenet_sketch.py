"""ImageNetSketch (test-only): ``imagenet-sketch/images/<wnid>/`` (1000 sorted folders) + ``classnames.txt``."""
import os

from engine.data import DATASET_REGISTRY, DatasetBase

from ._imagenet_common import TestOnlyMixin, dataset_folder, read_classnames, read_wnid_folders


@DATASET_REGISTRY.register()
class ImageNetSketch(TestOnlyMixin, DatasetBase):
    folder = "imagenet-sketch"
    image_subdir = "images"

    def __init__(self, cfg):
        self.dataset_dir = dataset_folder(cfg, self.folder, type(self).__name__)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir)
        self.warn_ignored(cfg, type(self).__name__)
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"))
        data = read_wnid_folders(self.image_dir, classnames)
        super().__init__(train_x=data, test=data)
