"""Official few-shot pickles (``shot_K-seed_S.pkl``, ImageNet's ``preprocessed.pkl``) imported safely.

The pickles are written by a test-local class registered under Dassl's module path
(``dassl.data.datasets.base_dataset.Datum``), with the absolute paths of another machine. Proves: the
import gives exactly the pickled subsets (mapped to this root), writes the JSON, logs it and draws no
random numbers; ImageNet's official image order is used for sampling; a malicious pickle
(``os.system`` / ``eval`` via ``__reduce__``) is refused with one line naming the file and the global,
without running (no side-effect file) and without writing anything; items outside the split are
refused; ``tools/convert_fewshot.py`` converts whole folders and exits 1 on a refused file.
"""
import json
import os
import pickle
import random
import subprocess
import sys
import types

import pytest

from engine.data import build_dataset
from engine.data.base_dataset import DatasetError
from engine.data.legacy_fewshot import DasslDatumUnpickler, ForbiddenGlobal, read_dassl_pickle
from engine.data.sampling import generate_fewshot_dataset
from engine.utils.logger import setup_logger
from engine.utils.seed import set_random_seed
from tests.fixtures_data import make_cfg, make_imagenet, make_oxford_pets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_ROOT = "/old/machine/DATA"
DASSL_MODULE = "dassl.data.datasets.base_dataset"


class DasslDatum:
    """Dassl's Datum as the official code pickles it (plain attributes, no slots)."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname


@pytest.fixture
def dassl_module(monkeypatch):
    """Register ``dassl.data.datasets.base_dataset.Datum`` (test-local) so pickle can name it."""
    parts = DASSL_MODULE.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    module = sys.modules[DASSL_MODULE]
    DasslDatum.__module__, DasslDatum.__qualname__, DasslDatum.__name__ = DASSL_MODULE, "Datum", "Datum"
    module.Datum = DasslDatum
    return DasslDatum


def write_pickle(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def official(items, image_dir, old_image_dir):
    """Our Datum list -> Dassl Datum list with the writer's absolute paths."""
    prefix = os.path.join(image_dir, "")
    return [DasslDatum(os.path.join(old_image_dir, d.impath[len(prefix):]), d.label, 0, d.classname) for d in items]


def pets(root, **opts):
    return build_dataset(make_cfg(root, "OxfordPets", **opts))


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_shot_pickle_is_imported_exactly(tmp_path, dassl_module, capsys):
    make_oxford_pets(str(tmp_path))
    full = pets(tmp_path)  # generates the split (synthetic tree), no shots
    image_dir = os.path.join(str(tmp_path), "oxford_pets", "images")
    old = f"{OLD_ROOT}/oxford_pets/images"
    train_pick = [d for d in full.train_x if d.impath.endswith(("_2.jpg", "_4.jpg"))]
    val_pick = full.val[:2]
    pkl = tmp_path / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    write_pickle(str(pkl), {"train": official(train_pick, image_dir, old), "val": official(val_pick, image_dir, old)})
    before = random.getstate()
    ds = pets(tmp_path, DATASET__NUM_SHOTS=2, SEED=1)
    assert random.getstate() == before  # importing draws no random numbers (like Dassl reading its pickle)
    assert ds.train_x == train_pick and ds.val == val_pick
    out = capsys.readouterr().out
    assert f"Imported the official few-shot file {pkl}" in out
    data = json.loads(pkl.with_suffix(".json").read_text())
    assert data["train"] == [[os.path.relpath(d.impath, image_dir), d.label, d.classname] for d in train_pick]
    # the JSON is used from now on
    assert pets(tmp_path, DATASET__NUM_SHOTS=2, SEED=1).train_x == train_pick
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out


@pytest.mark.parametrize("func,global_name", [(os.system, f"{os.system.__module__}.system"), (eval, "builtins.eval")])
def test_malicious_pickle_is_refused_without_running(tmp_path, dassl_module, func, global_name):
    make_oxford_pets(str(tmp_path))
    full = pets(tmp_path)
    side = tmp_path / "PWNED"
    payload = f"touch {side}" if func is os.system else f"open({str(side)!r}, 'w').close()"
    pkl = tmp_path / "oxford_pets" / "split_fewshot" / "shot_1-seed_1.pkl"
    image_dir = os.path.join(str(tmp_path), "oxford_pets", "images")
    write_pickle(str(pkl), {"train": [Evil(func, payload)], "val": official(full.val[:1], image_dir, "/x")})
    with pytest.raises(DatasetError) as err:
        pets(tmp_path, DATASET__NUM_SHOTS=1, SEED=1)
    message = str(err.value)
    assert "\n" not in message and str(pkl) in message and f"forbidden global {global_name}" in message
    assert not side.exists()  # never ran
    assert not pkl.with_suffix(".json").exists()  # nothing written


def test_unpickler_admits_only_datum_and_containers():
    import io

    unpickler = DasslDatumUnpickler(io.BytesIO(b""))
    for module, name in [("os", "system"), ("builtins", "getattr"), ("builtins", "__import__"),
                         ("copyreg", "_reconstructor"), ("subprocess", "Popen"), ("dassl.data.datasets", "Datum")]:
        with pytest.raises(ForbiddenGlobal, match=f"{module}.{name}"):
            unpickler.find_class(module, name)
    assert unpickler.find_class("builtins", "set") is set


def test_items_outside_the_split_are_refused(tmp_path, dassl_module):
    make_oxford_pets(str(tmp_path))
    full = pets(tmp_path)
    image_dir = os.path.join(str(tmp_path), "oxford_pets", "images")
    items = official(full.train_x[:1], image_dir, "/old/images")
    items.append(DasslDatum("/old/images/not_in_split_1.jpg", 0, 0, "abyssinian"))
    pkl = tmp_path / "oxford_pets" / "split_fewshot" / "shot_1-seed_2.pkl"
    write_pickle(str(pkl), {"train": items, "val": official(full.val[:1], image_dir, "/old/images")})
    with pytest.raises(DatasetError, match="not_in_split_1.jpg is not an image of the current split"):
        pets(tmp_path, DATASET__NUM_SHOTS=1, SEED=2)
    assert not pkl.with_suffix(".json").exists()
    wrong_label = official(full.train_x[:1], image_dir, "/old/images")
    wrong_label[0]._label += 1
    write_pickle(str(pkl), {"train": wrong_label, "val": official(full.val[:1], image_dir, "/old/images")})
    with pytest.raises(DatasetError, match="the current split says"):
        pets(tmp_path, DATASET__NUM_SHOTS=1, SEED=2)


def test_corrupt_or_wrong_layout_pickles_are_one_line_errors(tmp_path, dassl_module):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x05not a pickle")
    with pytest.raises(DatasetError, match="not a readable Dassl pickle"):
        read_dassl_pickle(str(bad))
    write_pickle(str(bad), [1, 2])
    with pytest.raises(DatasetError, match="expected a dict of Datum lists"):
        read_dassl_pickle(str(bad))
    write_pickle(str(bad), {"train": [{"_impath": "x"}]})
    with pytest.raises(DatasetError, match=r"train\[0\] is not a Dassl Datum"):
        read_dassl_pickle(str(bad))


def test_imagenet_preprocessed_order_drives_sampling(tmp_path, dassl_module, capsys):
    make_imagenet(str(tmp_path), n_train=4, n_val=2)
    cfg = make_cfg(tmp_path, "ImageNet")
    full = build_dataset(cfg)
    image_dir = os.path.join(str(tmp_path), "imagenet", "images")
    old = f"{OLD_ROOT}/imagenet/images"
    # the official listing: folders sorted, files in directory order (here: reversed)
    by_label = {}
    for d in full.train_x:
        by_label.setdefault(d.label, []).append(d)
    official_train = [d for y in sorted(by_label) for d in reversed(by_label[y])]
    write_pickle(os.path.join(str(tmp_path), "imagenet", "preprocessed.pkl"),
                 {"train": official(official_train, image_dir, old), "test": official(full.test, image_dir, old)})
    set_random_seed(1)
    ds = build_dataset(make_cfg(tmp_path, "ImageNet", DATASET__NUM_SHOTS=2, SEED=1))
    set_random_seed(1)
    assert ds.train_x == generate_fewshot_dataset(official_train, num_shots=2)  # Dassl's picks on its order
    assert os.path.isfile(os.path.join(str(tmp_path), "imagenet", "preprocessed.json"))
    assert "Imported the official image order" in capsys.readouterr().out
    assert build_dataset(make_cfg(tmp_path, "ImageNet")).train_x == official_train  # read back from the JSON


def test_imagenet_shot_pickle_holds_train_only(tmp_path, dassl_module):
    make_imagenet(str(tmp_path), n_train=4, n_val=2)
    full = build_dataset(make_cfg(tmp_path, "ImageNet"))
    image_dir = os.path.join(str(tmp_path), "imagenet", "images")
    pick = full.train_x[::4]
    write_pickle(os.path.join(str(tmp_path), "imagenet", "split_fewshot", "shot_1-seed_3.pkl"),
                 {"train": official(pick, image_dir, "/o/imagenet/images")})
    ds = build_dataset(make_cfg(tmp_path, "ImageNet", DATASET__NUM_SHOTS=1, SEED=3))
    assert ds.train_x == pick and ds.test == full.test


def _load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_fewshot_tool",
                                                  os.path.join(REPO, "tools", "convert_fewshot.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_tool_whole_folder(tmp_path, dassl_module, capsys):
    make_oxford_pets(str(tmp_path))
    full = pets(tmp_path)
    image_dir = os.path.join(str(tmp_path), "oxford_pets", "images")
    folder = tmp_path / "oxford_pets" / "split_fewshot"
    write_pickle(str(folder / "shot_1-seed_1.pkl"),
                 {"train": official(full.train_x[:3], image_dir, "/o"), "val": official(full.val[:1], image_dir, "/o")})
    side = tmp_path / "PWNED"
    write_pickle(str(folder / "shot_1-seed_2.pkl"), {"train": [Evil(os.system, f"touch {side}")], "val": []})
    cmd = [sys.executable, os.path.join(REPO, "tools", "convert_fewshot.py"), "OxfordPets", "--root", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1, res.stderr
    assert f"shot_1-seed_1.pkl -> {folder / 'shot_1-seed_1.json'}: imported" in res.stdout
    refused = [ln for ln in res.stdout.splitlines() if "refused" in ln]
    assert len(refused) == 1 and "shot_1-seed_2.pkl" in refused[0] and "forbidden global" in refused[0]
    assert not side.exists() and not (folder / "shot_1-seed_2.json").exists()
    data = json.loads((folder / "shot_1-seed_1.json").read_text())
    assert [row[0] for row in data["train"]] == [os.path.relpath(d.impath, image_dir) for d in full.train_x[:3]]
    os.remove(folder / "shot_1-seed_2.pkl")
    tool = _load_tool()  # the same main() in this process (a fresh process costs seconds)
    try:
        assert tool.main(["OxfordPets", "--root", str(tmp_path)]) == 0
        assert "exists" in capsys.readouterr().out
        assert tool.main(["NoSuchSet", "--root", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "NoSuchSet" in err[-1]
    finally:
        setup_logger()  # the tool sent the logger to this test's stderr
