"""Shared ImageNet helpers: ``classnames.txt`` parsing and SORTED folder listings (§2.7).

Folders and the file names inside them are sorted, so the listing (and thus the few-shot picks) is the
same on every machine. (CoOp listed files unsorted and froze the order in ``preprocessed.pkl``;
``datasets/imagenet.py`` imports that file safely when present and then uses its order.)
"""
import os
from collections import OrderedDict

from engine.data import Datum
from engine.data.base_dataset import DatasetError
from engine.data.folders import require_dir, require_file, resolve_root
from engine.data.splits import listdir_sorted, read_text_lines
from engine.utils.logger import get_logger

CLASSNAMES_HINT = ("classnames.txt: one '<wnid> <class name>' line per class; copy it from the CoOp repo's "
                   "imagenet notes")


def read_classnames(path):
    """``OrderedDict wnid -> class name`` from ``<wnid> <name with spaces>`` lines."""
    require_file(path, "classnames.txt", CLASSNAMES_HINT)
    out = OrderedDict()
    for line in read_text_lines(path):
        parts = line.split(" ", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise DatasetError(f"{path}: malformed line {line!r}; expected '<wnid> <class name>'")
        out[parts[0]] = parts[1].strip()
    return out


def dataset_folder(cfg, folder, name):
    """``<ROOT>/<folder>`` or a one-line error naming it."""
    return require_dir(os.path.join(resolve_root(cfg), folder), f"{name} dataset folder",
                       f"expected <DATASET.ROOT>/{folder}; see docs/DATASETS.md")


def list_class_folders(image_dir, folders, labels, classnames):
    """``[Datum]`` for every image of ``image_dir/<folder>`` with the given label and class name, sorted."""
    items = []
    for folder, label, cname in zip(folders, labels, classnames):
        class_dir = os.path.join(image_dir, folder)
        names = listdir_sorted(class_dir, files_only=True)
        if not names:
            raise DatasetError(f"empty class folder: {class_dir}")
        items += [Datum(os.path.join(class_dir, n), label, 0, cname) for n in names]
    return items


def read_wnid_folders(image_dir, classnames):
    """Sorted wnid folders of ``image_dir`` (label = sorted index, name from ``classnames``)."""
    folders = listdir_sorted(require_dir(image_dir, "image folder"), dirs_only=True)
    unknown = [f for f in folders if f not in classnames]
    if unknown:
        raise DatasetError(f"{image_dir}: folder(s) {unknown[:3]} are not in classnames.txt")
    return list_class_folders(image_dir, folders, range(len(folders)), [classnames[f] for f in folders])


class TestOnlyMixin:
    """The four ImageNet variants: ``train_x = test = all images``, no val, no few-shot, no base/new."""

    @staticmethod
    def warn_ignored(cfg, name):
        if cfg.DATASET.NUM_SHOTS >= 1 or cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            get_logger().info(f"{name} is test-only: DATASET.NUM_SHOTS and DATASET.SUBSAMPLE_CLASSES are ignored")
