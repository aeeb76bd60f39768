"""``tools/dataset_summary.py`` writes the same few-shot cache as the trainer's path (seed, then
``DataManager``), prints the summary JSON, and fails with one ``error:`` line on bad input."""
import json
import os
import subprocess
import sys

import pytest

from engine.data import DataManager
from engine.utils.seed import set_random_seed
from tests.fixtures_data import LAYOUTS, make_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "dataset_summary.py")


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_tool_matches_trainer_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        LAYOUTS["OxfordPets"][0](str(r))
    res = _run("--root", str(a), "--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--seed", "2",
               "--list", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
               "DATASET.ALLOW_GENERATED_SPLIT", "True")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["dataset"] == "OxfordPets" and out["classnames"] == ["abyssinian", "american_bulldog"]
    assert out["sizes"] == {"train_x": 4, "val": 2, "test": 4} and out["missing_images"] == 0
    assert "Creating a 2-shot dataset" in res.stderr
    # the trainer's path: seed, then DataManager (which builds the dataset first)
    cfg = make_cfg(b, "OxfordPets", SEED=2, DATASET__NUM_SHOTS=2, DATASET__SUBSAMPLE_CLASSES="base")
    set_random_seed(2)
    dm = DataManager(cfg)
    cache = os.path.join("oxford_pets", "split_fewshot", "shot_2-seed_2.json")
    assert (a / cache).read_text() == (b / cache).read_text()
    assert [os.path.relpath(p, a) for p in out["train_x"]] == [os.path.relpath(d.impath, b) for d in dm.dataset.train_x]
    assert [os.path.relpath(p, a) for p in out["val"]] == [os.path.relpath(d.impath, b) for d in dm.dataset.val]


@pytest.mark.slow
def test_tool_matches_train_py(tmp_path):
    """The real entry point: ``train.py --no-train`` with the tiny random backbone writes the same cache."""
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        LAYOUTS["DescribableTextures"][0](str(r))
    opts = ["DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "DATASET.ALLOW_GENERATED_SPLIT", "True"]
    res = _run("--root", str(a), "--dataset-config-file", "configs/datasets/dtd.yaml", "--seed", "3", *opts)
    assert res.returncode == 0, res.stderr
    train = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--root", str(b), "--dataset-config-file",
         "configs/datasets/dtd.yaml", "--trainer", "ZeroshotCLIP", "--seed", "3", "--no-train",
         "--output-dir", str(tmp_path / "out"), "MODEL.BACKBONE.NAME", "ViT-Tiny/16",
         "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)", *opts],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    cache = os.path.join("dtd", "split_fewshot", "shot_2-seed_3.json")
    assert (a / cache).read_text() == (b / cache).read_text()
    split = os.path.join("dtd", "split_zhou_DescribableTextures.json")
    assert (a / split).read_text() == (b / split).read_text()


def test_tool_bad_input(tmp_path):
    res = _run("--root", str(tmp_path / "missing"), "--dataset-config-file", "configs/datasets/dtd.yaml")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: dataset root not found: {tmp_path / 'missing'} (DATASET.ROOT / --root)")
