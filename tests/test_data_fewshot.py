"""Few-shot subsets equal Dassl's (golden OxfordPets selections), the JSON cache, and the base/new rule
on every real CoOp split file in ../shared (skipped when absent)."""
import json
import math
import os
import pickle
import random

import pytest

from engine.data import Datum, build_dataset
from engine.data.base_dataset import DatasetError
from engine.data.sampling import generate_fewshot_dataset, subsample_classes
from engine.utils.seed import set_random_seed
from tests.fixtures_data import COOP_SPLITS, GOLDEN_PETS, LAYOUTS, make_cfg

REAL = {  # DATASET.NAME -> (folder, #classes, base, new)
    "OxfordPets": ("oxford_pets", 37, 19, 18),
    "EuroSAT": ("eurosat", 10, 5, 5),
    "DescribableTextures": ("dtd", 47, 24, 23),
    "Caltech101": ("caltech-101", 100, 50, 50),
    "UCF101": ("ucf101", 101, 51, 50),
    "OxfordFlowers": ("oxford_flowers", 102, 51, 51),
    "StanfordCars": ("stanford_cars", 196, 98, 98),
}


def _real_tree(tmp_path, name):
    """A dataset folder holding only a symlink to the real split file (images are never read here)."""
    src = os.path.join(COOP_SPLITS, f"split_zhou_{name}.json")
    if not os.path.isfile(src):
        pytest.skip(f"{src} not available")
    folder = REAL[name][0]
    os.makedirs(tmp_path / folder, exist_ok=True)
    os.symlink(src, tmp_path / folder / f"split_zhou_{name}.json")
    return src


def _build_seeded(root, name, seed, **opts):
    cfg = make_cfg(root, name, SEED=seed, **opts)
    set_random_seed(seed)
    return build_dataset(cfg)


@pytest.fixture(scope="module")
def golden():
    if not os.path.isfile(GOLDEN_PETS):
        pytest.skip("golden few-shot file not available")
    with open(GOLDEN_PETS) as f:
        return json.load(f)["OxfordPets"]


@pytest.mark.parametrize("key", [f"shot_{k}-seed_{s}" for k in (1, 16) for s in (1, 2, 3)])
def test_pets_fewshot_matches_golden(tmp_path, golden, key):
    _real_tree(tmp_path, "OxfordPets")
    k, s = int(key.split("-")[0][5:]), int(key.split("_")[-1])
    ds = _build_seeded(tmp_path, "OxfordPets", s, DATASET__NUM_SHOTS=k)
    cache_path = tmp_path / "oxford_pets" / "split_fewshot" / f"{key}.json"
    with open(cache_path) as f:
        cache = json.load(f)
    assert [r[0] for r in cache["train"]] == golden["shots"][key]["train"]
    assert [r[0] for r in cache["val"]] == golden["shots"][key]["val"]
    prefix = str(tmp_path / "oxford_pets" / "images") + os.sep
    assert [d.impath for d in ds.train_x] == [prefix + p for p in golden["shots"][key]["train"]]


def test_pets_sizes_and_base_new_classnames_match_golden(tmp_path, golden):
    _real_tree(tmp_path, "OxfordPets")
    full = build_dataset(make_cfg(tmp_path, "OxfordPets"))
    assert {"train": len(full.train_x), "val": len(full.val), "test": len(full.test)} == golden["sizes"]
    assert full.num_classes == golden["num_classes"]
    base = build_dataset(make_cfg(tmp_path, "OxfordPets", DATASET__SUBSAMPLE_CLASSES="base"))
    new = build_dataset(make_cfg(tmp_path, "OxfordPets", DATASET__SUBSAMPLE_CLASSES="new"))
    assert base.classnames == golden["base_classnames"] and new.classnames == golden["new_classnames"]


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_split_base_new_counts(tmp_path, name):
    src = _real_tree(tmp_path, name)
    _, n, n_base, n_new = REAL[name]
    with open(src) as f:
        raw = json.load(f)
    full = _build_seeded(tmp_path, name, 1, DATASET__NUM_SHOTS=16)
    assert full.num_classes == n and len(full.train_x) <= 16 * n and len(full.val) == min(16, 4) * n
    counts = {}
    for sub in ("base", "new"):
        ds = _build_seeded(tmp_path, name, 1, DATASET__NUM_SHOTS=16, DATASET__SUBSAMPLE_CLASSES=sub)
        counts[sub] = ds
        assert sorted({d.label for d in ds.test}) == list(range(ds.num_classes))
    assert (counts["base"].num_classes, counts["new"].num_classes) == (n_base, n_new)
    assert len(counts["base"].test) + len(counts["new"].test) == len(raw["test"])
    assert counts["base"].classnames + counts["new"].classnames == full.classnames
    # path prefix: StanfordCars relative to the dataset folder, the others to the image folder
    first = full.test[0].impath
    if name == "StanfordCars":
        assert first == str(tmp_path / "stanford_cars" / raw["test"][0][0])
    else:
        assert first.endswith(os.sep + raw["test"][0][0]) and os.sep + "stanford_cars" not in first


def test_real_classname_normalisation_matches_released_files():
    """EuroSAT NEW_CNAMES, Caltech101 renames and the UCF101 CamelCase rule reproduce the released names."""
    from datasets.caltech101 import NEW_CNAMES as CAL
    from datasets.eurosat import NEW_CNAMES as EURO
    from datasets.ucf101 import rename_action
    checks = {"EuroSAT": lambda folder: EURO[folder], "Caltech101": lambda folder: CAL.get(folder, folder)}
    for name, rule in checks.items():
        path = os.path.join(COOP_SPLITS, f"split_zhou_{name}.json")
        if not os.path.isfile(path):
            pytest.skip(f"{path} not available")
        with open(path) as f:
            rows = json.load(f)["train"]
        assert all(rule(r[0].split("/")[0]) == r[2] for r in rows), name
    path = os.path.join(COOP_SPLITS, "split_zhou_UCF101.json")
    with open(path) as f:
        rows = json.load(f)["train"]
    for rel, _, cname in rows:
        action = cname.replace("_", "")  # classInd name (video files may differ in case: HandStand)
        assert rename_action(action) == cname == rel.split("/")[0]
        assert os.path.basename(rel).split("_")[1].lower() == action.lower()


def test_fewshot_rule_is_per_label_random_sample_in_first_appearance_order():
    items = [Datum(f"/x/{i}.jpg", label=y, classname=str(y)) for i, y in enumerate([2, 0, 2, 1, 0, 2, 1, 0, 2])]
    random.seed(5)
    got = generate_fewshot_dataset(items, num_shots=2)
    random.seed(5)
    by_label = {2: [items[i] for i in (0, 2, 5, 8)], 0: [items[i] for i in (1, 4, 7)], 1: [items[i] for i in (3, 6)]}
    expected = []
    for y in (2, 0, 1):
        expected += random.sample(by_label[y], 2)
    assert got == expected
    assert generate_fewshot_dataset(items, num_shots=-1) is items


def test_subsample_classes_rule():
    src = [Datum(f"/x/{y}.jpg", label=y, classname=f"c{y}") for y in (4, 0, 2, 1, 3)]
    test = [Datum(f"/t/{y}.jpg", label=y, classname=f"c{y}") for y in range(5)]
    base_train, base_test = subsample_classes(src, test, subsample="base")
    new_train, new_test = subsample_classes(src, test, subsample="new")
    assert sorted((d.label, d.classname) for d in base_test) == [(0, "c0"), (1, "c1"), (2, "c2")]
    assert sorted((d.label, d.classname) for d in new_test) == [(0, "c3"), (1, "c4")]
    assert math.ceil(5 / 2) == len(base_test)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        subsample_classes(src, subsample="half")


def _dtd(tmp_path):
    LAYOUTS["DescribableTextures"][0](str(tmp_path))


def test_cache_hit_draws_no_random_numbers_and_wins_over_seed(tmp_path):
    _dtd(tmp_path)
    first = _build_seeded(tmp_path, "DescribableTextures", 1, DATASET__NUM_SHOTS=1)
    random.seed(99)
    state = random.getstate()
    again = build_dataset(make_cfg(tmp_path, "DescribableTextures", SEED=1, DATASET__NUM_SHOTS=1))
    assert random.getstate() == state
    assert again.train_x == first.train_x and again.val == first.val


def test_seed_minus_one_names_the_cache(tmp_path):
    _dtd(tmp_path)
    build_dataset(make_cfg(tmp_path, "DescribableTextures", SEED=-1, DATASET__NUM_SHOTS=2))
    assert (tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_-1.json").is_file()


class _Bomb:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_legacy_pickle_with_code_is_refused_not_run(tmp_path):
    """A legacy pickle naming any global but Dassl's Datum is refused (engine.data.legacy_fewshot)."""
    _dtd(tmp_path)
    marker = tmp_path / "unpickled.txt"
    os.makedirs(tmp_path / "dtd" / "split_fewshot")
    with open(tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.pkl", "wb") as f:
        pickle.dump({"train": _Bomb(str(marker)), "val": []}, f)
    with pytest.raises(ValueError, match=r"forbidden global (io|builtins)\.open"):
        _build_seeded(tmp_path, "DescribableTextures", 1, DATASET__NUM_SHOTS=1)
    assert not marker.exists()
    assert not (tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.json").exists()


def test_corrupt_cache_is_a_clear_error(tmp_path):
    _dtd(tmp_path)
    os.makedirs(tmp_path / "dtd" / "split_fewshot")
    bad = tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="shot_1-seed_1.json"):
        _build_seeded(tmp_path, "DescribableTextures", 1, DATASET__NUM_SHOTS=1)
