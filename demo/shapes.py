"""The generated demo datasets ``Shapes`` and ``ShapeSketches``: 10 classes of drawn shapes, made on first use.

``Shapes`` (``<DATASET.ROOT>/shapes``): filled shapes, the style the project's tiny CLIP is pretrained on.
Per class 24 train + 8 val + 16 test = 48 images (480 in all). Image ``i`` of class ``c`` is drawn
with ``random.Random(1_000_003 * (c + 1) + i)``.

``ShapeSketches`` (``<DATASET.ROOT>/shape_sketches``): the same ten classes drawn as outlines only, a
style the tiny CLIP never sees in pretraining (the demo's domain gap, as ImageNet-Sketch is for
CLIP). Per class 24 train + 8 val + 100 test = 132 images (1,320 in all; 500 test images per
base/novel half, so one image is 0.2 points). Image ``i`` of class ``c`` is drawn with
``random.Random(f"shape-sketches/{c}/{i}")``.

Both: CoOp layout (``images/<class>/<class>_<iii>.png``, 224x224 RGB, and ``split_zhou_<Name>.json``),
base = circle..hexagon, new = pentagon..crescent. Generation is deterministic (the global ``random``
stream is untouched), atomic (written to a temp folder, then renamed) and idempotent; two processes
racing both end with the same complete folder.
"""
import dataclasses
import os
import random
import shutil
import tempfile

from engine.data import DATASET_REGISTRY
from engine.data.base_dataset import DatasetError
from engine.data.split_dataset import SplitDataset
from engine.data.splits import dump_json_text
from engine.utils.logger import get_logger

from demo.shapes_draw import SHAPE_NAMES, draw_shape, draw_sketch

IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class GeneratedShapes:
    """How one generated dataset is laid out and drawn: ``draw(class_name, rng, size)`` and
    ``seed(class_index, image_index)`` (the argument of the image's ``random.Random``)."""

    name: str
    folder: str
    split_file: str
    counts: dict
    draw: object
    seed: object


SHAPES = GeneratedShapes("Shapes", "shapes", "split_zhou_Shapes.json", {"train": 24, "val": 8, "test": 16},
                         draw_shape, lambda c, i: 1_000_003 * (c + 1) + i)
SKETCHES = GeneratedShapes("ShapeSketches", "shape_sketches", "split_zhou_ShapeSketches.json",
                           {"train": 24, "val": 8, "test": 100}, draw_sketch, lambda c, i: f"shape-sketches/{c}/{i}")


def _write_tree(spec, dataset_dir, classes, counts, size):
    split = {k: [] for k in counts}
    n_total = sum(counts.values())
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(dataset_dir, "images", name))
        for i in range(n_total):
            rel = f"{name}/{name}_{i:03d}.png"
            spec.draw(name, random.Random(spec.seed(label, i)), size).save(
                os.path.join(dataset_dir, "images", rel), format="PNG", compress_level=1)
            key = "train" if i < counts["train"] else "val" if i < counts["train"] + counts["val"] else "test"
            split[key].append([rel, label, name])
    with open(os.path.join(dataset_dir, spec.split_file), "w", encoding="utf-8") as f:
        f.write(dump_json_text(split))


def ensure_generated(spec, root, classes=SHAPE_NAMES, counts=None, size=IMAGE_SIZE):
    """Generate ``<root>/<spec.folder>`` unless complete; returns the dataset folder. Safe to call concurrently."""
    counts = dict(spec.counts if counts is None else counts)
    dataset_dir = os.path.join(root, spec.folder)
    if os.path.isfile(os.path.join(dataset_dir, spec.split_file)):
        return dataset_dir
    if os.path.exists(dataset_dir):
        raise DatasetError(f"{dataset_dir} exists but has no {spec.split_file}: delete the folder to regenerate "
                           f"{spec.name}")
    os.makedirs(root, exist_ok=True)
    log = get_logger()
    log.info(f"Generating the {spec.name} demo dataset in {dataset_dir} ({len(classes)} classes, {counts})")
    tmp = tempfile.mkdtemp(prefix=f".{spec.folder}-tmp-", dir=root)
    try:
        _write_tree(spec, tmp, classes, counts, size)
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            if not os.path.isfile(os.path.join(dataset_dir, spec.split_file)):
                raise
            log.info(f"{spec.name} was generated concurrently by another process: using {dataset_dir}")
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_dir


def ensure_shapes(root, classes=SHAPE_NAMES, counts=None, size=IMAGE_SIZE):
    """``<root>/shapes`` (generated unless complete); see ``ensure_generated``."""
    return ensure_generated(SHAPES, root, classes, counts, size)


def ensure_shape_sketches(root, classes=SHAPE_NAMES, counts=None, size=IMAGE_SIZE):
    """``<root>/shape_sketches`` (generated unless complete); see ``ensure_generated``."""
    return ensure_generated(SKETCHES, root, classes, counts, size)


class _GeneratedDataset(SplitDataset):
    spec = SHAPES
    image_subdir = "images"

    def __init__(self, cfg):
        if not cfg.DATASET.ROOT:
            raise DatasetError(f"DATASET.ROOT is empty: pass --root <folder where {self.spec.name} is generated>")
        ensure_generated(self.spec, os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)))
        super().__init__(cfg)


@DATASET_REGISTRY.register()
class Shapes(_GeneratedDataset):
    spec = SHAPES
    folder = SHAPES.folder
    split_file = SHAPES.split_file


@DATASET_REGISTRY.register()
class ShapeSketches(_GeneratedDataset):
    spec = SKETCHES
    folder = SKETCHES.folder
    split_file = SKETCHES.split_file
