"""Custom datasets without a class: ImageFolder (folder per class, optional split.json) and CSV."""
import json
import random

import pytest

from engine.data import DataManager, build_dataset
from engine.data.base_dataset import DatasetError
from engine.utils.seed import set_random_seed
from tests.fixtures_data import make_cfg, make_csv, make_image_folder


def test_image_folder_deterministic_split(tmp_path):
    make_image_folder(tmp_path)
    state = random.getstate()
    ds = build_dataset(make_cfg(tmp_path, "ImageFolder"))
    assert random.getstate() == state
    assert ds.classnames == ["cat", "dog", "red_fox"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (6, 3, 6)  # round(2.5)=2, round(1.0)=1 per class
    assert all(p.impath.endswith(".png") for p in ds.train_x + ds.val + ds.test)
    again = build_dataset(make_cfg(tmp_path, "ImageFolder"))
    assert again.train_x == ds.train_x and again.test == ds.test
    assert not (tmp_path / "split.json").exists()


def test_image_folder_fewshot_cache_is_not_a_class(tmp_path):
    make_image_folder(tmp_path)
    set_random_seed(2)
    ds = build_dataset(make_cfg(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=1, SEED=2))
    assert (tmp_path / "split_fewshot" / "shot_1-seed_2.json").is_file()
    again = build_dataset(make_cfg(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=1, SEED=2))
    assert again.classnames == ["cat", "dog", "red_fox"] and again.train_x == ds.train_x


def test_image_folder_split_json(tmp_path):
    make_image_folder(tmp_path, classes=("cat", "dog"), n=2)
    split = {"train": [["cat/cat_0000.png", 0, "cat"], ["dog/dog_0000.png", 1, "dog"]],
             "val": [], "test": [["cat/cat_0001.png", 0, "cat"], ["dog/dog_0001.png", 1, "dog"]]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    dm = DataManager(make_cfg(tmp_path, "ImageFolder", DATALOADER__TRAIN_X__BATCH_SIZE=2))
    assert [d.impath for d in dm.dataset.test] == [str(tmp_path / "cat" / "cat_0001.png"),
                                                    str(tmp_path / "dog" / "dog_0001.png")]
    assert dm.val_loader is None


def test_image_folder_too_few_images(tmp_path):
    make_image_folder(tmp_path, classes=("cat", "dog"), n=3)
    with pytest.raises(DatasetError, match=r"has 3 images: too few .* at least 4"):
        build_dataset(make_cfg(tmp_path, "ImageFolder"))


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_split_column(tmp_path, header):
    path = make_csv(tmp_path, with_split=True, header=header)
    ds = build_dataset(make_cfg("", "CSV", DATASET__CSV_FILE=path))
    assert ds.classnames == ["cat", "dog"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (6, 2, 2)
    assert ds.train_x[0].impath == str(tmp_path / "imgs" / "cat_0.png")


def test_csv_relative_to_root_and_auto_split(tmp_path):
    make_csv(tmp_path)
    dm = DataManager(make_cfg(tmp_path, "CSV", DATASET__CSV_FILE="data.csv", DATALOADER__TRAIN_X__BATCH_SIZE=2))
    assert (len(dm.dataset.train_x), len(dm.dataset.val), len(dm.dataset.test)) == (4, 2, 4)
    assert next(iter(dm.train_loader_x))["img"].shape[0] == 2


def test_csv_errors(tmp_path):
    with pytest.raises(DatasetError, match="DATASET.CSV_FILE"):
        build_dataset(make_cfg(tmp_path, "CSV"))
    with pytest.raises(DatasetError, match=str(tmp_path / "missing.csv")):
        build_dataset(make_cfg(tmp_path, "CSV", DATASET__CSV_FILE="missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,classname\na.png,0,cat\nb.png,one,dog\n")
    with pytest.raises(DatasetError, match=r"bad.csv:3: label 'one' is not an integer"):
        build_dataset(make_cfg(tmp_path, "CSV", DATASET__CSV_FILE=str(bad)))
    bad.write_text("a.png,0,cat\nb.png,0,dog\nc.png,1,dog\nd.png,1,dog\n" * 2)
    with pytest.raises(DatasetError, match=r"bad.csv:2: label 0 / class name 'dog' disagree"):
        build_dataset(make_cfg(tmp_path, "CSV", DATASET__CSV_FILE=str(bad)))
    bad.write_text("a.png,0,cat,train\nb.png,0,cat,holdout\n")
    with pytest.raises(DatasetError, match="'holdout'"):
        build_dataset(make_cfg(tmp_path, "CSV", DATASET__CSV_FILE=str(bad)))
