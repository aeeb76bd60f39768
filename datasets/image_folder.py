"""``ImageFolder``: a custom dataset without writing a class.

``DATASET.ROOT`` IS the dataset folder: ``<ROOT>/<class>/*.{jpg,jpeg,png,bmp,gif,tif,tiff,webp}``.
Labels = index of the sorted class-folder names; class name = folder name (trainers turn ``_`` into
spaces). If ``<ROOT>/split.json`` exists (CoOp split schema, paths relative to ROOT) it is used as is;
otherwise a deterministic split is made per class: the sorted files shuffled with
``random.Random(SPLIT_SEED)``, ``round(0.5 n)`` train, ``round(0.2 n)`` val, the rest test (at least 4
images per class); a ``split.json`` listing an image in two splits is refused, repeats within a split
are dropped with a warning (``distinct_images``). Few-shot caches go to ``<ROOT>/split_fewshot/`` (that
folder is never a class).
"""
import os

from engine.data import DATASET_REGISTRY, DatasetBase
from engine.data.fewshot import load_or_create_fewshot
from engine.data.folders import resolve_root
from engine.data.sampling import subsample_classes
from engine.data.splits import IMAGE_EXTENSIONS, distinct_images, read_and_split_data, read_split

SPLIT_NAME = "split.json"
RESERVED = ("split_fewshot",)


@DATASET_REGISTRY.register()
class ImageFolder(DatasetBase):
    def __init__(self, cfg):
        self.dataset_dir = resolve_root(cfg)
        self.image_dir = self.dataset_dir
        split_path = os.path.join(self.dataset_dir, SPLIT_NAME)
        if os.path.isfile(split_path):
            train, val, test = distinct_images(split_path, *read_split(split_path, self.image_dir))
        else:
            train, val, test = read_and_split_data(self.image_dir, ignored=RESERVED, extensions=IMAGE_EXTENSIONS)
        train, val = load_or_create_fewshot(
            self.dataset_dir, self.image_dir, train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)
