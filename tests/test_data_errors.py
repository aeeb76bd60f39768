"""Every bad-input case of issue 3 item 7 gives one clear error naming the path/value."""
import json

import pytest

from engine.data import DataManager, build_dataset
from engine.data.base_dataset import DatasetError
from engine.data.image_check import BadImageError
from tests.fixtures_data import LAYOUTS, make_cfg, write_image


def _one_line(exc):
    assert "\n" not in str(exc.value), str(exc.value)
    return str(exc.value)


def test_empty_root(tmp_path):
    with pytest.raises(DatasetError, match="DATASET.ROOT is empty") as e:
        build_dataset(make_cfg("", "DescribableTextures"))
    _one_line(e)


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=f"dataset root not found: {missing}") as e:
        build_dataset(make_cfg(missing, "OxfordPets"))
    _one_line(e)


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "oxford_pets")) as e:
        build_dataset(make_cfg(tmp_path, "OxfordPets"))
    _one_line(e)


def test_missing_split_without_raw_files_names_both(tmp_path):
    (tmp_path / "ucf101").mkdir()
    with pytest.raises(DatasetError) as e:
        build_dataset(make_cfg(tmp_path, "UCF101"))
    msg = _one_line(e)
    assert str(tmp_path / "ucf101" / "split_zhou_UCF101.json") in msg
    assert str(tmp_path / "ucf101" / "ucfTrainTestlist" / "classInd.txt") in msg
    assert "DATASETS.md" in msg


def test_missing_fgvc_lists(tmp_path):
    (tmp_path / "fgvc_aircraft").mkdir()
    with pytest.raises(DatasetError, match="variants.txt") as e:
        build_dataset(make_cfg(tmp_path, "FGVCAircraft"))
    _one_line(e)


def test_missing_imagenet_classnames(tmp_path):
    (tmp_path / "imagenet" / "images" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="classnames.txt") as e:
        build_dataset(make_cfg(tmp_path, "ImageNet"))
    _one_line(e)


def test_malformed_split_file(tmp_path):
    (tmp_path / "dtd").mkdir()
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text(json.dumps({"train": [["a.jpg", "zero", "x"]], "val": [], "test": []}))
    with pytest.raises(DatasetError, match="non-integer label") as e:
        build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    assert str(path) in _one_line(e)
    path.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(DatasetError, match="missing key 'test'"):
        build_dataset(make_cfg(tmp_path, "DescribableTextures"))


def _split(tmp_path, rows):
    (tmp_path / "dtd").mkdir(exist_ok=True)
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(
        json.dumps({"train": rows, "val": [], "test": rows}))


def test_label_classname_disagreement(tmp_path):
    _split(tmp_path, [["a/1.jpg", 0, "a"], ["b/1.jpg", 1, "b"], ["a/2.jpg", 0, "banded"]])
    with pytest.raises(DatasetError, match="label 0 has two class names, 'a' and 'banded'") as e:
        build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    _one_line(e)
    _split(tmp_path, [["a/1.jpg", 0, "a"], ["b/1.jpg", 1, "a"]])
    with pytest.raises(DatasetError, match="class name 'a' has two labels"):
        build_dataset(make_cfg(tmp_path, "DescribableTextures"))


def test_empty_class_in_split(tmp_path):
    _split(tmp_path, [["a/1.jpg", 0, "a"], ["c/1.jpg", 2, "c"]])
    with pytest.raises(DatasetError, match=r"empty class\(es\): label\(s\) \[1\]") as e:
        build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    _one_line(e)


def test_empty_class_folder(tmp_path):
    LAYOUTS["EuroSAT"][0](str(tmp_path))
    (tmp_path / "eurosat" / "2750" / "Highway").mkdir()
    with pytest.raises(DatasetError, match=str(tmp_path / "eurosat" / "2750" / "Highway")) as e:
        build_dataset(make_cfg(tmp_path, "EuroSAT"))
    _one_line(e)


def test_missing_images_counted_before_training(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))
    build_dataset(make_cfg(tmp_path, "DescribableTextures"))  # writes the split
    removed = sorted((tmp_path / "dtd" / "images" / "blotchy").iterdir())
    for p in removed:
        p.unlink()
    with pytest.raises(DatasetError, match=r"5 of 15 image files are missing, first: ") as e:
        DataManager(make_cfg(tmp_path, "DescribableTextures"))
    msg = _one_line(e)
    assert msg.count(str(tmp_path / "dtd" / "images" / "blotchy")) == 3


def _corrupt_tree(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))
    build_dataset(make_cfg(tmp_path, "DescribableTextures"))
    with open(tmp_path / "dtd" / "split_zhou_DescribableTextures.json") as f:
        split = json.load(f)
    bad = tmp_path / "dtd" / "images" / split["test"][0][0]
    bad.write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    return str(bad)


def test_corrupt_image_fails_with_its_path(tmp_path):
    bad = _corrupt_tree(tmp_path)
    dm = DataManager(make_cfg(tmp_path, "DescribableTextures", DATALOADER__TEST__BATCH_SIZE=4,
                              DATALOADER__CHECK_IMAGES="exists"))  # the loader's own error (no pre-check)
    with pytest.raises(BadImageError, match=f"cannot read image {bad}"):
        list(dm.test_loader)


def test_corrupt_image_skipped_and_counted(tmp_path, capsys):
    bad = _corrupt_tree(tmp_path)
    cfg = make_cfg(tmp_path, "DescribableTextures", DATALOADER__TEST__BATCH_SIZE=4,
                   DATALOADER__SKIP_BAD_IMAGES=True)
    dm = DataManager(cfg)
    batches = list(dm.test_loader)
    assert sum(len(b["impath"]) for b in batches) == 5
    assert len(batches[0]["label"]) == 3 and batches[0]["img"].shape[0] == 3
    assert bad not in [p for b in batches for p in b["impath"]]
    out = capsys.readouterr().out
    assert f"WARNING: skipped unreadable image (1 so far): cannot read image {bad}" in out


def test_unknown_sampler(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))
    with pytest.raises(ValueError, match="RandomDomainSampler"):
        DataManager(make_cfg(tmp_path, "DescribableTextures", DATALOADER__TRAIN_X__SAMPLER="RandomDomainSampler"))


def test_unknown_transform(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))
    with pytest.raises(ValueError, match="cutout"):
        DataManager(make_cfg(tmp_path, "DescribableTextures", INPUT__TRANSFORMS=["cutout"]))


def test_fgvc_unknown_variant(tmp_path):
    LAYOUTS["FGVCAircraft"][0](str(tmp_path))
    with open(tmp_path / "fgvc_aircraft" / "images_variant_val.txt", "a") as f:
        f.write("999 Boeing 999\n")
    write_image(str(tmp_path / "fgvc_aircraft" / "images" / "999.jpg"))
    with pytest.raises(DatasetError, match="'Boeing 999'.*variants.txt"):
        build_dataset(make_cfg(tmp_path, "FGVCAircraft"))


def test_mat_files_need_scipy_clear_error(tmp_path, monkeypatch):
    LAYOUTS["OxfordFlowers"][0](str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)
    with pytest.raises(DatasetError, match=r"imagelabels.mat needs scipy \(pip install scipy\)") as e:
        build_dataset(make_cfg(tmp_path, "OxfordFlowers"))
    _one_line(e)
