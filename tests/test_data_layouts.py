"""Each dataset class loads a synthetic tree written in its exact CoOp layout (fixtures_data.py):
class names normalised as in §2.3, expected split sizes, correct path prefixes, and a generated split
file that round-trips (second load reads it back and gives identical items)."""
import json
import os
import random

import pytest

from engine.data import DatasetBase, build_dataset
from tests.fixtures_data import LAYOUTS, make_cfg

SPLIT_DATASETS = [n for n, (_, _, split) in LAYOUTS.items() if split]


def _build(root, name, **opts):
    return build_dataset(make_cfg(root, name, **opts))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dataset_loads_its_layout(tmp_path, name):
    make, folder, _ = LAYOUTS[name]
    expected = make(str(tmp_path))
    ds = _build(tmp_path, name)
    assert isinstance(ds, DatasetBase)
    assert ds.classnames == expected["classnames"]
    assert ds.num_classes == len(expected["classnames"])
    sizes = (len(ds.train_x), len(ds.val or []), len(ds.test))
    assert sizes == expected["sizes"]
    dataset_dir = os.path.join(str(tmp_path), folder)
    assert ds.dataset_dir == dataset_dir
    for item in ds.train_x + ds.test + list(ds.val or []):
        assert os.path.isfile(item.impath), item.impath
        assert item.impath.startswith(dataset_dir + os.sep)
        assert ds.lab2cname[item.label] == item.classname


@pytest.mark.parametrize("name", SPLIT_DATASETS)
def test_generated_split_file_round_trips(tmp_path, name):
    make, folder, split_name = LAYOUTS[name]
    make(str(tmp_path))
    state = random.getstate()
    first = _build(tmp_path, name)
    assert random.getstate() == state, "split generation must not consume the global random stream"
    split_path = os.path.join(str(tmp_path), folder, split_name)
    with open(split_path) as f:
        data = json.load(f)
    assert sorted(data) == ["test", "train", "val"]
    prefix_dir = os.path.join(str(tmp_path), folder) if name == "StanfordCars" else os.path.dirname(
        os.path.commonpath([d.impath for d in first.train_x]) + os.sep)
    for rel, label, cname in data["train"]:
        assert not rel.startswith("/") and "\\" not in rel
        assert isinstance(label, int) and isinstance(cname, str)
    if name == "StanfordCars":
        assert data["train"][0][0].startswith("cars_train/")
    second = _build(tmp_path, name)
    assert second.train_x == first.train_x and second.val == first.val and second.test == first.test
    assert all(d.impath.startswith(prefix_dir) for d in second.train_x)


def test_split_generation_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        LAYOUTS["DescribableTextures"][0](str(r))
        _build(r, "DescribableTextures")
    ja = (a / "dtd" / "split_zhou_DescribableTextures.json").read_text()
    jb = (b / "dtd" / "split_zhou_DescribableTextures.json").read_text()
    assert ja == jb


def test_pets_uses_annotation_labels_and_lowercased_breed(tmp_path):
    LAYOUTS["OxfordPets"][0](str(tmp_path))
    ds = _build(tmp_path, "OxfordPets")
    item = next(d for d in ds.test if os.path.basename(d.impath).startswith("Abyssinian_"))
    assert (item.label, item.classname) == (0, "abyssinian")


def test_imagenet_lists_sorted_and_val_is_test(tmp_path):
    LAYOUTS["ImageNet"][0](str(tmp_path))
    ds = _build(tmp_path, "ImageNet")
    paths = [d.impath for d in ds.train_x]
    assert paths == sorted(paths)
    assert ds.val is ds.test or ds.val == ds.test
    assert [d.label for d in ds.train_x[:4]] == [0, 0, 0, 0]
    assert not os.path.exists(os.path.join(str(tmp_path), "imagenet", "preprocessed.pkl"))


def test_imagenet_fewshot_cache_holds_only_train(tmp_path):
    LAYOUTS["ImageNet"][0](str(tmp_path))
    random.seed(3)
    ds = _build(tmp_path, "ImageNet", DATASET__NUM_SHOTS=2, SEED=3)
    assert len(ds.train_x) == 8 and len(ds.test) == 8
    with open(tmp_path / "imagenet" / "split_fewshot" / "shot_2-seed_3.json") as f:
        cache = json.load(f)
    assert list(cache) == ["train", "dataset"] and list(cache["dataset"]["images"]) == ["train"]
    assert cache["train"][0][0].startswith("train/n01440764/")


def test_imagenet_variants_ignore_fewshot_and_subsample(tmp_path):
    LAYOUTS["ImageNetR"][0](str(tmp_path))
    ds = _build(tmp_path, "ImageNetR", DATASET__NUM_SHOTS=1, DATASET__SUBSAMPLE_CLASSES="base")
    assert ds.classnames == ["goldfish", "tiger shark"]
    assert len(ds.train_x) == len(ds.test) == 4 and ds.val is None
    assert not os.path.exists(tmp_path / "imagenet-rendition" / "split_fewshot")


def test_dataset_name_lookup_is_case_insensitive(tmp_path):
    LAYOUTS["EuroSAT"][0](str(tmp_path))
    assert type(_build(tmp_path, "eurosat")).__name__ == "EuroSAT"
    with pytest.raises(KeyError, match="EuroSAT"):
        _build(tmp_path, "EuroSet")
