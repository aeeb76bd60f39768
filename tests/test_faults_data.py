"""Fault injection: silent wrong data from splits and caches.

CSV/ImageFolder splits on distinct images (duplicates dropped with a warning, or refused when they
would leak across splits or carry two labels), few-shot caches that know what they were sampled from
(rebuilt with a warning when the data changed; old caches without that record judged by content),
a damaged ``run_record.json`` (an error naming it, never a silent "old run"), decode errors of CSV
and YAML files naming the file.
"""
import json
import os
import shutil

import pytest

import train
from engine.data import build_dataset
from engine.data.base_dataset import DatasetError
from engine.data.fewshot import IDENTITY_KEY, fewshot_cache_path
from engine.runs.record import RunRecordError, read_record
from engine.utils.seed import set_random_seed
from tests.fixtures_data import make_cfg, make_image_folder, write_image
from tests.fixtures_faults import TINY_BACKBONE
from tests.test_data_legacy_fewshot import dassl_module, write_pickle  # noqa: F401  (a fixture and a helper)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _csv(root, rows, name="data.csv"):
    path = root / name
    path.write_text("path,label,classname\n" + "".join(f"{p},{y},{c}\n" for p, y, c in rows))
    return str(path)


def _images(root, classes=("a", "b", "c", "d"), n=10):
    rows = []
    for y, c in enumerate(classes):
        for i in range(n):
            rel = f"imgs/{c}_{i}.png"
            write_image(str(root / rel), (y * 40 % 256, i * 20 % 256, 7))
            rows.append((rel, y, c))
    return rows


def _build(cfg_root, name, seed=1, **opts):
    set_random_seed(seed)
    return build_dataset(make_cfg(cfg_root, name, SEED=seed, **opts))


# ------------------------------------------------------------------ distinct images
def test_csv_listing_every_row_twice_splits_distinct_images(tmp_path, capsys):
    """The silent failure: every row twice put the same images in train and test, and twice in the 4-shot set."""
    rows = _images(tmp_path)
    once = build_dataset(make_cfg("", "CSV", DATASET__CSV_FILE=_csv(tmp_path, rows, "once.csv")))
    path = _csv(tmp_path, rows + rows)
    capsys.readouterr()
    ds = _build("", "CSV", DATASET__CSV_FILE=path, DATASET__NUM_SHOTS=4)
    assert f"{path}: 40 rows repeat an image listed earlier (first: line 42, imgs/a_0.png, as line 2); " \
           "each image is used once" in capsys.readouterr().out
    full = build_dataset(make_cfg("", "CSV", DATASET__CSV_FILE=path))
    assert [d.impath for d in full.test] == [d.impath for d in once.test]  # the same split as without repeats
    parts = [{d.impath for d in part} for part in (full.train_x, full.val, full.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    shots = [d.impath for d in ds.train_x]
    assert len(shots) == len(set(shots)) == 16


@pytest.mark.parametrize("clash", ["split", "label"])
def test_csv_image_in_two_splits_or_with_two_labels_is_refused(tmp_path, clash):
    rows = _images(tmp_path, n=2)
    path = tmp_path / "data.csv"
    lines = ["path,label,classname,split"] + [f"{p},{y},{c},train" for p, y, c in rows] + ["imgs/a_0.png,0,a,test"]
    if clash == "label":
        lines[-1] = "imgs/a_0.png,1,b,train"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        build_dataset(make_cfg("", "CSV", DATASET__CSV_FILE=str(path)))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:10: image imgs/a_0.png ")
    assert ("is in split test here and in train on line 2; an image must be in one split" in msg if clash == "split"
            else "has label 1 here and 0 on line 2; an image has one label" in msg)


def test_image_folder_split_json_with_a_leak_is_refused_repeats_dropped(tmp_path, capsys):
    make_image_folder(tmp_path, classes=("cat", "dog"), n=3)
    train_rows = [["cat/cat_0000.png", 0, "cat"], ["dog/dog_0000.png", 1, "dog"]]
    split = {"train": train_rows + train_rows[:1], "val": [], "test": [["cat/cat_0001.png", 0, "cat"],
                                                                      ["dog/dog_0001.png", 1, "dog"]]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    ds = build_dataset(make_cfg(tmp_path, "ImageFolder"))
    assert len(ds.train_x) == 2
    assert "1 entries repeat an image listed earlier in the same split (first: " in capsys.readouterr().out
    split["test"].append(["dog/./dog_0000.png", 1, "dog"])  # the same file, spelt differently
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError, match=r"split.json: image .*dog_0000.png is in both train and test; an image "
                                           r"must be in one split"):
        build_dataset(make_cfg(tmp_path, "ImageFolder"))


# ------------------------------------------------------------------ few-shot caches know their data
def test_second_csv_in_the_same_folder_does_not_reuse_the_first_ones_cache(tmp_path, capsys):
    """The silent failure: a 1-class CSV trained on the first CSV's 4 classes (the cache is keyed by K and S)."""
    rows = _images(tmp_path)
    four = _build("", "CSV", DATASET__CSV_FILE=_csv(tmp_path, rows, "four.csv"), DATASET__NUM_SHOTS=4)
    assert four.classnames == ["a", "b", "c", "d"]
    cache = fewshot_cache_path(str(tmp_path), 4, 1)
    assert json.load(open(cache))[IDENTITY_KEY]["classes"] == ["a", "b", "c", "d"]
    capsys.readouterr()
    one = _build("", "CSV", DATASET__CSV_FILE=_csv(tmp_path, rows[:10], "one.csv"), DATASET__NUM_SHOTS=4)
    out = capsys.readouterr().out
    assert one.classnames == ["a"] and {d.label for d in one.train_x} == {0} and len(one.train_x) == 4
    assert (f"The few-shot cache {cache} was made from other data than this run's (classes [a, b, c, d] (4) then, "
            "[a] (1) now); making it again from the current data") in out
    again = _build("", "CSV", DATASET__CSV_FILE=str(tmp_path / "four.csv"), DATASET__NUM_SHOTS=4)
    assert [d.impath for d in again.train_x] == [d.impath for d in four.train_x]  # same seed: same subset again


@pytest.mark.parametrize("new_class", ["zebra", "aardvark"])  # sorts last / first
def test_class_folder_added_after_the_cache_is_used(tmp_path, capsys, new_class):
    """The silent failure: the added class was left out of the model while its images stayed in the test
    set (logits (15, 3), labels 0..3), or, sorting first, failed without saying the cache is stale."""
    make_image_folder(tmp_path, classes=("cat", "dog", "fox"), n=5)
    _build(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=1)
    make_image_folder(tmp_path, classes=(new_class,), n=5)
    capsys.readouterr()
    ds = _build(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=1)
    assert "was made from other data than this run's (classes [" in capsys.readouterr().out
    assert ds.num_classes == 4 and {d.label for d in ds.train_x} == {0, 1, 2, 3}
    assert {d.label for d in ds.test} == {0, 1, 2, 3} and len(ds.train_x) == 4


def test_old_cache_without_a_dataset_record_is_judged_by_its_content(tmp_path, capsys):
    """Caches written before the record (ours, or imported from official pickles) still load when they fit."""
    make_image_folder(tmp_path, classes=("cat", "dog", "fox"), n=5)
    first = _build(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=2)
    cache = fewshot_cache_path(str(tmp_path), 2, 1)
    data = json.load(open(cache))
    del data[IDENTITY_KEY]
    with open(cache, "w") as f:
        json.dump(data, f)
    capsys.readouterr()
    set_random_seed(5)  # another RNG state: the subset can only come from the cache
    again = build_dataset(make_cfg(tmp_path, "ImageFolder", SEED=1, DATASET__NUM_SHOTS=2))
    assert [d.impath for d in again.train_x] == [d.impath for d in first.train_x]
    assert "made from other data" not in capsys.readouterr().out and IDENTITY_KEY not in json.load(open(cache))
    shutil.rmtree(tmp_path / "fox")  # the cache names images that are gone
    ds = _build(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=2)
    out = capsys.readouterr().out
    assert "(its train item fox/" in out and "is not in the current train set); making it again" in out
    assert ds.classnames == ["cat", "dog"] and json.load(open(cache))[IDENTITY_KEY]["classes"] == ["cat", "dog"]


def test_official_pickle_is_reimported_when_the_json_is_stale(tmp_path, capsys, dassl_module):  # noqa: F811
    """A stale JSON next to an official ``shot_K-seed_S.pkl``: the pickle decides (and is validated)."""
    LegacyDatum = lambda impath, label, classname: dassl_module(impath, label, 0, classname)  # noqa: E731
    make_image_folder(tmp_path, classes=("cat", "dog"), n=5)
    full = build_dataset(make_cfg(tmp_path, "ImageFolder"))
    picked = [full.train_x[0], full.train_x[-1]]
    write_pickle(fewshot_cache_path(str(tmp_path), 1, 1)[:-5] + ".pkl",
                 {"train": [LegacyDatum(d.impath, d.label, d.classname) for d in picked],
                  "val": [LegacyDatum(d.impath, d.label, d.classname) for d in full.val[:1] + full.val[-1:]]})
    cache = fewshot_cache_path(str(tmp_path), 1, 1)
    with open(cache, "w") as f:
        json.dump({"train": [["cat/cat_0000.png", 0, "cat"]], "val": [["cat/cat_0001.png", 0, "cat"]],
                   IDENTITY_KEY: {"classes": ["cat"], "images": {"train": 3, "val": 1}, "digest": "0"}}, f)
    ds = _build(tmp_path, "ImageFolder", DATASET__NUM_SHOTS=1)
    assert [d.impath for d in ds.train_x] == [d.impath for d in picked]
    out = capsys.readouterr().out
    assert "made from other data" in out and "Imported the official few-shot file" in out


# ------------------------------------------------------------------ damaged run record
COOP = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml",
        "--dataset-config-file", "configs/datasets/shapes.yaml", "--seed", "1", *TINY_BACKBONE,
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "1", "TRAINER.COOP.N_CTX", "2"]


@pytest.mark.parametrize("damage", ["truncated", "not-an-object", "binary"])
def test_damaged_run_record_is_an_error_naming_it(tmp_path, capsys, damage):
    """The silent failure: a truncated record read as "from before records" turned the settings check off."""
    from tests.fixtures_data import make_shapes

    make_shapes(tmp_path / "data", classes=("circle", "square"), counts={"train": 2, "val": 1, "test": 1}, size=32)
    out = tmp_path / "out"
    out.mkdir()
    record = out / "run_record.json"
    record.write_bytes({"truncated": b'{"version": 1, "train": {"hash": "0123', "not-an-object": b"[1, 2]",
                        "binary": b"\xff\xfe\x00garbage"}[damage])
    with pytest.raises(RunRecordError) as e:
        read_record(str(out))
    assert str(e.value).startswith(f"the run record {record} is damaged (") and "\n" not in str(e.value)
    args = ["--root", str(tmp_path / "data"), "--output-dir", str(out), *COOP, "OPTIM.MAX_EPOCH", "3"]
    # the sweep's check: the job is refused with the line naming the file, never taken as "no record"
    from repro.plan import Job
    from repro.runner import settings_problem

    job = Job(id="j", protocol="p", kind="k", method="CoOp", trainer="CoOp", cfg="c", dataset="shapes", seed=1,
              output_dir=str(out), args=args, log_kind="train")
    problem = settings_problem(job, "finished", "hint", REPO)
    assert problem.startswith(f"cannot compare the settings of {out} with the requested ones: the run record "
                              f"{record} is damaged")
    # train.py into that folder: one line naming the file; the record is left for the user to judge
    capsys.readouterr()
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: the run record {record} is damaged (")
    assert "restore it, or delete it" in err and not (out / "prompt_learner").exists()


# ------------------------------------------------------------------ decode errors name the file
def test_binary_yaml_and_utf16_csv_are_one_line_naming_the_file(tmp_path, capsys):
    binary = tmp_path / "method.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01binary\x00")
    u16 = tmp_path / "data.csv"
    u16.write_text("path,label,classname\nimgs/a_0.png,0,a\n", encoding="utf-16")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label,classname\nimgs/caf\xe9.png,0,a\n".encode("latin-1"))
    base = ["--root", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--trainer", "CoOp"]
    cases = [
        (["--config-file", str(binary), *TINY_BACKBONE],
         f"error: config file {binary} is not UTF-8 text (byte 0xff at offset 0; a binary file?); "
         "save it as UTF-8 YAML"),
        (["--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml", *TINY_BACKBONE, "DATASET.NAME", "CSV",
          "DATASET.CSV_FILE",
          str(u16)], f"error: {u16} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
        (["--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml", *TINY_BACKBONE, "DATASET.NAME", "CSV",
          "DATASET.CSV_FILE",
          str(latin)], f"error: {latin} is not UTF-8 text (byte 0xe9 at offset 29); save it as UTF-8"),
    ]
    for extra, line in cases:
        capsys.readouterr()
        assert train.main(base + extra) == 2
        assert capsys.readouterr().err == line + "\n"
    # a UTF-8 byte-order mark (spreadsheet exports) is fine
    rows = _images(tmp_path, classes=("a", "b"), n=4)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + open(_csv(tmp_path, rows), "rb").read())
    assert build_dataset(make_cfg("", "CSV", DATASET__CSV_FILE=str(bom))).classnames == ["a", "b"]
