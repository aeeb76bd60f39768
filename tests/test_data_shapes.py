"""The Shapes demo dataset: deterministic bytes, exact counts, CoOp layout, atomic/idempotent generation,
global ``random`` untouched, and 16-shot base-to-novel works."""
import hashlib
import json
import multiprocessing as mp
import os
import random

from engine.data import build_dataset
from engine.utils.seed import set_random_seed
from tests.fixtures_data import make_cfg


def _digest(folder):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(folder)):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, folder).encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _ensure(root):
    from datasets.shapes import ensure_shapes
    ensure_shapes(root)


def test_shapes_deterministic_counts_and_layout(tmp_path):
    from datasets.shapes import SHAPE_NAMES, ensure_shapes
    state = random.getstate()
    a = ensure_shapes(str(tmp_path / "a"))
    b = ensure_shapes(str(tmp_path / "b"))
    assert random.getstate() == state
    assert _digest(a) == _digest(b)
    assert sorted(os.listdir(a)) == ["images", "split_zhou_Shapes.json"]
    with open(os.path.join(a, "split_zhou_Shapes.json")) as f:
        split = json.load(f)
    assert {k: len(v) for k, v in split.items()} == {"train": 240, "val": 80, "test": 160}
    assert sorted(os.listdir(os.path.join(a, "images"))) == sorted(SHAPE_NAMES) and len(SHAPE_NAMES) == 10
    from PIL import Image
    with Image.open(os.path.join(a, "images", split["test"][0][0])) as im:
        assert im.size == (224, 224) and im.mode == "RGB"
    before = os.stat(os.path.join(a, "split_zhou_Shapes.json")).st_mtime_ns
    assert ensure_shapes(str(tmp_path / "a")) == a  # idempotent: nothing rewritten
    assert os.stat(os.path.join(a, "split_zhou_Shapes.json")).st_mtime_ns == before


def test_shapes_two_processes_race(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ensure, args=(str(tmp_path),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no temp folders left
    with open(tmp_path / "shapes" / "split_zhou_Shapes.json") as f:
        assert len(json.load(f)["test"]) == 160


def test_shapes_base_to_novel_16_shot(tmp_path):
    sizes = {}
    for sub in ("base", "new"):
        set_random_seed(1)
        ds = build_dataset(make_cfg(tmp_path / "data", "Shapes", SEED=1, DATASET__NUM_SHOTS=16,
                                    DATASET__SUBSAMPLE_CLASSES=sub))
        sizes[sub] = (ds.num_classes, len(ds.train_x), len(ds.val), len(ds.test), ds.classnames)
    assert sizes["base"] == (5, 80, 20, 80, ["circle", "square", "triangle", "star", "hexagon"])
    assert sizes["new"] == (5, 80, 20, 80, ["pentagon", "heart", "cross", "diamond", "crescent"])
    assert (tmp_path / "data" / "shapes" / "split_fewshot" / "shot_16-seed_1.json").is_file()


def test_small_shapes_for_fast_tests(tmp_path):
    from tests.fixtures_data import make_shapes
    d = make_shapes(tmp_path, classes=["circle", "star", "heart"], counts={"train": 3, "val": 1, "test": 2}, size=32)
    ds = build_dataset(make_cfg(tmp_path, "Shapes"))
    assert ds.dataset_dir == d and ds.classnames == ["circle", "star", "heart"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (9, 3, 6)
    from PIL import Image
    with Image.open(ds.test[0].impath) as im:
        assert im.size == (32, 32)


def test_shape_sketches_deterministic_layout_and_outlines(tmp_path):
    from PIL import Image

    from datasets.shapes import SHAPE_NAMES, ensure_shape_sketches
    counts = {"train": 2, "val": 1, "test": 2}
    state = random.getstate()
    a = ensure_shape_sketches(str(tmp_path / "a"), counts=counts, size=96)
    b = ensure_shape_sketches(str(tmp_path / "b"), counts=counts, size=96)
    assert random.getstate() == state
    assert _digest(a) == _digest(b)
    assert os.path.basename(a) == "shape_sketches"
    assert sorted(os.listdir(a)) == ["images", "split_zhou_ShapeSketches.json"]
    with open(os.path.join(a, "split_zhou_ShapeSketches.json")) as f:
        split = json.load(f)
    assert {k: len(v) for k, v in split.items()} == {"train": 20, "val": 10, "test": 20}
    assert sorted(os.listdir(os.path.join(a, "images"))) == sorted(SHAPE_NAMES)
    for rel, label, name in split["train"]:
        if name != "circle":
            continue
        with Image.open(os.path.join(a, "images", rel)) as im:
            colours = sorted(im.getcolors(), reverse=True)
        assert len(colours) == 2  # background and outline only


def test_outline_is_the_band_of_the_filled_shape_within_the_stroke():
    from PIL import Image, ImageChops

    from datasets._shapes_draw import draw_shape_with_attributes, outline
    image, attrs = draw_shape_with_attributes("square", random.Random(5), 224)
    sketch = outline(image, attrs, stroke=5 / 224)
    bg = Image.new("RGB", image.size, attrs.background)
    filled = ImageChops.difference(image, bg).convert("L").point(lambda v: 255 if v else 0)
    ring = ImageChops.difference(sketch, bg).convert("L").point(lambda v: 255 if v else 0)
    assert ImageChops.subtract(ring, filled).getbbox() is None  # the outline lies inside the filled shape
    n_filled = sum(1 for v in filled.tobytes() if v)
    n_ring = sum(1 for v in ring.tobytes() if v)
    side = n_filled ** 0.5  # the square's side (rotated by at most 12 degrees)
    # a band 5 px wide along a square of side s covers s^2 - (s - 10)^2 pixels (give or take the edge pixels)
    expected = n_filled - (side - 10) ** 2
    assert abs(n_ring - expected) <= 0.06 * expected, (n_ring, expected)
    cx, cy = int(attrs.x * 224), int(attrs.y * 224)
    assert sketch.getpixel((cx, cy)) == attrs.background and image.getpixel((cx, cy)) == attrs.foreground


def test_shape_sketches_base_to_novel_16_shot(tmp_path):
    from datasets.shapes import ensure_shape_sketches
    ensure_shape_sketches(str(tmp_path / "data"), counts={"train": 16, "val": 4, "test": 3}, size=32)
    sizes = {}
    for sub in ("base", "new"):
        set_random_seed(1)
        ds = build_dataset(make_cfg(tmp_path / "data", "ShapeSketches", SEED=1, DATASET__NUM_SHOTS=16,
                                    DATASET__SUBSAMPLE_CLASSES=sub))
        sizes[sub] = (ds.num_classes, len(ds.train_x), len(ds.val), len(ds.test), ds.classnames)
    assert sizes["base"] == (5, 80, 20, 15, ["circle", "square", "triangle", "star", "hexagon"])
    assert sizes["new"] == (5, 80, 20, 15, ["pentagon", "heart", "cross", "diamond", "crescent"])
