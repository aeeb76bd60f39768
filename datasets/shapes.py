"""``Shapes`` demo dataset: 10 classes of drawn shapes, generated on first use.

Layout (CoOp style) under ``<DATASET.ROOT>/shapes``: ``images/<class>/<class>_<iii>.png`` (224x224 RGB)
and ``split_zhou_Shapes.json``. Per class 24 train + 8 val + 16 test = 48 images (480 in all), enough
for 16-shot base-to-novel (base = circle..hexagon, new = pentagon..crescent). Generation is
deterministic (image ``i`` of class ``c`` is drawn with ``random.Random(1_000_003 * (c + 1) + i)``;
the global ``random`` stream is untouched), atomic (written to a temp folder, then renamed) and
idempotent; two processes racing both end with the same complete folder.
"""
import os
import random
import shutil
import tempfile

from engine.data import DATASET_REGISTRY
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import dump_json_text
from engine.utils.logger import get_logger

from ._shapes_draw import SHAPE_NAMES, draw_shape

FOLDER = "shapes"
SPLIT_FILE = "split_zhou_Shapes.json"
COUNTS = {"train": 24, "val": 8, "test": 16}
IMAGE_SIZE = 224


def _write_tree(dataset_dir, classes, counts, size):
    split = {k: [] for k in counts}
    n_total = sum(counts.values())
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(dataset_dir, "images", name))
        for i in range(n_total):
            rel = f"{name}/{name}_{i:03d}.png"
            draw_shape(name, random.Random(1_000_003 * (label + 1) + i), size).save(
                os.path.join(dataset_dir, "images", rel), format="PNG", compress_level=1)
            key = "train" if i < counts["train"] else "val" if i < counts["train"] + counts["val"] else "test"
            split[key].append([rel, label, name])
    with open(os.path.join(dataset_dir, SPLIT_FILE), "w", encoding="utf-8") as f:
        f.write(dump_json_text(split))


def ensure_shapes(root, classes=SHAPE_NAMES, counts=None, size=IMAGE_SIZE):
    """Generate ``<root>/shapes`` unless complete; returns the dataset folder. Safe to call concurrently."""
    counts = dict(COUNTS if counts is None else counts)
    dataset_dir = os.path.join(root, FOLDER)
    if os.path.isfile(os.path.join(dataset_dir, SPLIT_FILE)):
        return dataset_dir
    if os.path.exists(dataset_dir):
        raise DatasetError(f"{dataset_dir} exists but has no {SPLIT_FILE}: delete the folder to regenerate Shapes")
    os.makedirs(root, exist_ok=True)
    log = get_logger()
    log.info(f"Generating the Shapes demo dataset in {dataset_dir} ({len(classes)} classes, {counts})")
    tmp = tempfile.mkdtemp(prefix=".shapes-tmp-", dir=root)
    try:
        _write_tree(tmp, classes, counts, size)
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            if not os.path.isfile(os.path.join(dataset_dir, SPLIT_FILE)):
                raise
            log.info(f"Shapes was generated concurrently by another process: using {dataset_dir}")
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_dir


@DATASET_REGISTRY.register()
class Shapes(SplitDataset):
    folder = FOLDER
    image_subdir = "images"
    split_file = SPLIT_FILE

    def __init__(self, cfg):
        if not cfg.DATASET.ROOT:
            raise DatasetError("DATASET.ROOT is empty: pass --root <folder where Shapes is generated>")
        ensure_shapes(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)))
        super().__init__(cfg)
