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
