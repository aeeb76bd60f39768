"""ImageNet: ``imagenet/images/{train,val}/<wnid>/`` + required ``classnames.txt`` (§2.1, §2.7).

Val is used as test (and as val); the few-shot cache holds only ``train``. Image order: folders and
files are listed sorted, so few-shot picks are reproducible across machines -- unless the official
code's ``preprocessed.pkl`` (its unsorted listing, frozen) is in the dataset folder: it is then
imported once through the restricted unpickler (``engine.data.legacy_fewshot``) into
``preprocessed.json`` and that order is used, so the few-shot picks equal the official run's for
every seed. ``preprocessed.json`` (ours) is read when present.
"""
import json
import os

from engine.data import DATASET_REGISTRY, DatasetBase
from engine.data.fewshot import load_or_create_fewshot
from engine.data.legacy_fewshot import import_dassl_pickle, known_paths, rows_as_datums
from engine.data.sampling import subsample_classes
from engine.data.splits import load_json_file, rows_to_items
from engine.utils.io import atomic_write_text
from engine.utils.logger import get_logger

from ._imagenet_common import dataset_folder, read_classnames, read_wnid_folders

PREPROCESSED_JSON = "preprocessed.json"
PREPROCESSED_PKL = "preprocessed.pkl"


def read_preprocessed(dataset_dir, image_dir, listing):
    """``(train, test)`` in the official order when ``preprocessed.{json,pkl}`` exists, else ``listing()``.

    ``listing()`` returns the sorted ``(train, test)``; the pickle's items must be among them.
    """
    log = get_logger()
    json_path = os.path.join(dataset_dir, PREPROCESSED_JSON)
    pkl_path = os.path.join(dataset_dir, PREPROCESSED_PKL)
    if os.path.isfile(json_path):
        log.info(f"Reading the official image order from {json_path}")
        data = load_json_file(json_path, "ImageNet preprocessed file")
        if not isinstance(data, dict) or any(k not in data for k in ("train", "test")):
            raise ValueError(f"{json_path} must be a JSON object with keys ['train', 'test']; "
                             "delete it to list the folders")
        return (rows_to_items(data["train"], image_dir, json_path, "train"),
                rows_to_items(data["test"], image_dir, json_path, "test"))
    train, test = listing()
    if not os.path.isfile(pkl_path):
        return train, test
    rows = import_dassl_pickle(pkl_path, ("train", "test"),
                               {"train": known_paths(train, image_dir), "test": known_paths(test, image_dir)})
    try:
        atomic_write_text(json_path, json.dumps(rows, separators=(",", ":")))
        log.info(f"Imported the official image order of {pkl_path} into {json_path}")
    except OSError as e:
        log.warning(f"could not write {json_path} ({e}); using the imported order for this run only")
    return rows_as_datums(rows["train"], image_dir), rows_as_datums(rows["test"], image_dir)


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    folder = "imagenet"

    def __init__(self, cfg):
        self.dataset_dir = dataset_folder(cfg, self.folder, "ImageNet")
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"))

        def listing():
            return (read_wnid_folders(os.path.join(self.image_dir, "train"), classnames),
                    read_wnid_folders(os.path.join(self.image_dir, "val"), classnames))

        train, test = read_preprocessed(self.dataset_dir, self.image_dir, listing)
        self.full_train, self.full_test = train, test
        train, _ = load_or_create_fewshot(
            self.dataset_dir, self.image_dir, train, None, cfg.DATASET.NUM_SHOTS, cfg.SEED, with_val=False)
        train, test = subsample_classes(train, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=test, test=test)
