"""``tools/prepare_data.py`` (verify, imagenet-val, imagenet-classnames) and ``DATASET.ALLOW_GENERATED_SPLIT``.

Synthetic trees in the real CoOp layouts: their counts differ from the published ones, so ``verify``
must flag them (exit 1) and pass with ``--expect`` set to the counts we control; a missing split file,
a missing or corrupt image each fail their check; nothing is generated or written by ``verify``.
``imagenet-val`` sorts a flat val folder from a devkit ground truth + ``meta.mat`` and from
``LOC_val_solution.csv``, is a no-op on re-run, and moves nothing on bad input. ``imagenet-classnames``
writes ``<wnid> <name>`` lines in sorted-wnid order.
"""
import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from engine.data import build_dataset
from engine.data.base_dataset import DatasetError
from engine.utils.logger import setup_logger
from tests.fixtures_data import SHARED, WNIDS, make_cfg, make_imagenet, make_oxford_pets, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "prepare_data.py")
CLIP_NAMES = os.path.join(SHARED, "data", "imagenet", "classnames_clip.txt")


def _tool():
    spec = importlib.util.spec_from_file_location("prepare_data_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(capsys):
    """``run(*args)``: the tool's ``main`` in this process (a fresh process costs seconds), with its
    stdout/stderr and exit status; the logger is restored afterwards (the tool logs to stderr)."""
    tool = _tool()

    def run(*args):
        code = tool.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)

    yield run
    setup_logger()


def one_error_line(res):
    lines = res.stderr.strip().splitlines()
    return res.returncode == 2 and len(lines) >= 1 and lines[-1].startswith("error: ") and lines[-1]


def line(report, name):
    return next(ln for ln in report.splitlines() if ln.strip().startswith(name))


@pytest.fixture
def pets_root(tmp_path):
    make_oxford_pets(str(tmp_path))
    build_dataset(make_cfg(tmp_path, "OxfordPets"))  # writes the (generated) split file
    return tmp_path


def test_missing_split_stops_unless_allowed(tmp_path, capsys):
    make_oxford_pets(str(tmp_path))
    split = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    with pytest.raises(DatasetError) as err:
        build_dataset(make_cfg(tmp_path, "OxfordPets", DATASET__ALLOW_GENERATED_SPLIT=False))
    assert "\n" not in str(err.value) and str(split) in str(err.value)
    assert "DATASET.ALLOW_GENERATED_SPLIT True" in str(err.value) and not split.exists()
    build_dataset(make_cfg(tmp_path, "OxfordPets", DATASET__ALLOW_GENERATED_SPLIT=True))
    assert split.exists() and "NOT the published CoOp split" in capsys.readouterr().out


def test_verify_flags_counts_that_differ_from_published(pets_root, run):
    res = run("verify", "OxfordPets", "--root", pets_root)
    assert res.returncode == 1, res.stderr
    assert "FAIL" in line(res.stdout, "classes") and "3 (published 37)" in line(res.stdout, "classes")
    assert "12 (published 2,944)" in line(res.stdout, "train")
    assert "3 (published 736)" in line(res.stdout, "val") and "6 (published 3,669)" in line(res.stdout, "test")
    assert " ok " in line(res.stdout, "folder tree") and " ok " in line(res.stdout, "split file")
    assert res.stdout.strip().splitlines()[-1] == "result: FAIL (4 checks)"
    assert len(res.stdout.strip().splitlines()) <= 20  # one screen


def test_verify_passes_with_expected_counts(pets_root):
    """The real command line (a fresh process): exit 0 and the report on stdout."""
    res = subprocess.run([sys.executable, TOOL, "verify", "OxfordPets", "--root", str(pets_root), "--expect",
                          "3", "12", "3", "6"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "result: ok"
    assert "0 of 21" in line(res.stdout, "missing images") and "0 of 21 (opened)" in line(res.stdout, "unreadable")
    assert not (pets_root / "oxford_pets" / "split_fewshot").exists()  # verify samples nothing


def test_verify_missing_split_is_not_generated(tmp_path, run):
    make_oxford_pets(str(tmp_path))
    res = run("verify", "OxfordPets", "--root", tmp_path, "--expect", 3, 12, 3, 6)
    assert res.returncode == 1
    assert "FAIL" in line(res.stdout, "split file") and "split_zhou_OxfordPets.json" in line(res.stdout, "split file")
    assert "skip" in line(res.stdout, "classes")
    assert not (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").exists()


def test_verify_missing_folder(tmp_path, run):
    res = run("verify", "DescribableTextures", "--root", tmp_path)
    assert res.returncode == 1 and "missing folder" in line(res.stdout, "folder tree")


def test_verify_missing_and_unreadable_images(pets_root, run):
    images = pets_root / "oxford_pets" / "images"
    os.remove(images / "Abyssinian_1.jpg")
    (images / "great_pyrenees_2.jpg").write_bytes(b"not an image at all")
    res = run("verify", "OxfordPets", "--root", pets_root, "--expect", 3, 12, 3, 6)
    assert res.returncode == 1
    assert "FAIL" in line(res.stdout, "missing images") and "Abyssinian_1.jpg" in line(res.stdout, "missing images")
    assert "FAIL" in line(res.stdout, "unreadable images") and "great_pyrenees_2.jpg" in line(res.stdout, "unreadable")
    assert res.stdout.strip().splitlines()[-1] == "result: FAIL (2 checks)"


def test_verify_imagenet_layout_and_bad_name(tmp_path, run):
    make_imagenet(str(tmp_path), n_train=4, n_val=2)
    res = run("verify", "ImageNet", "--root", tmp_path)
    assert res.returncode == 1 and "16 (published 1,281,167)" in line(res.stdout, "train")
    assert "skip" in line(res.stdout, "val")
    res = run("verify", "ImageNet", "--root", tmp_path, "--expect", 4, 16, -1, 8)
    assert res.returncode == 0, res.stdout
    assert one_error_line(run("verify", "NoSuchDataset", "--root", tmp_path))


# ------------------------------------------------------------------------------------------ imagenet-val
def flat_val(root, wnids_per_image):
    val = os.path.join(str(root), "imagenet", "images", "val")
    for i in range(1, len(wnids_per_image) + 1):
        write_image(os.path.join(val, f"ILSVRC2012_val_{i:08d}.JPEG"), (i, i, i))
    return val


def write_meta(path, wnids):
    from scipy.io import savemat

    synsets = np.zeros((len(wnids) + 1, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for i, wnid in enumerate(wnids):
        synsets[i, 0] = (i + 1, wnid, f"class {i}")
    synsets[len(wnids), 0] = (len(wnids) + 1, "n99999999", "a non-leaf synset")
    savemat(path, {"synsets": synsets})


def sorted_tree(val):
    return sorted(os.path.relpath(os.path.join(d, f), val) for d, _, files in os.walk(val) for f in files)


def test_imagenet_val_from_devkit(tmp_path, run):
    wnids = [w for w, _ in WNIDS]
    per_image = [wnids[2], wnids[0], wnids[3], wnids[0], wnids[1]]
    val = flat_val(tmp_path, per_image)
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{wnids.index(w) + 1}\n" for w in per_image))
    write_meta(str(devkit / "meta.mat"), wnids)
    res = run("imagenet-val", "--root", tmp_path, "--labels", devkit / "ILSVRC2012_validation_ground_truth.txt")
    assert res.returncode == 0, res.stderr
    assert "moved 5 images; 0 were already sorted; 4 wnid folders" in res.stdout
    assert sorted_tree(val) == sorted(f"{w}/ILSVRC2012_val_{i:08d}.JPEG" for i, w in enumerate(per_image, 1))
    res = run("imagenet-val", "--root", tmp_path, "--labels", devkit / "ILSVRC2012_validation_ground_truth.txt")
    assert res.returncode == 0 and "moved 0 images; 5 were already sorted" in res.stdout


def test_imagenet_val_from_loc_csv_and_bad_input(tmp_path, run):
    wnids = [w for w, _ in WNIDS]
    per_image = [wnids[1], wnids[1], wnids[3]]
    val = flat_val(tmp_path, per_image)
    csv_path = tmp_path / "LOC_val_solution.csv"
    rows = [f"ILSVRC2012_val_{i:08d},{w} 1 2 3 4 {w} 5 6 7 8" for i, w in enumerate(per_image, 1)]
    csv_path.write_text("ImageId,PredictionString\n" + "\n".join(rows[:2]) + "\n")  # image 3 has no label
    before = sorted_tree(val)
    res = run("imagenet-val", "--root", tmp_path, "--labels", csv_path)
    err = one_error_line(res)
    assert err and "ILSVRC2012_val_00000003.JPEG" in err and "nothing was moved" in err
    assert sorted_tree(val) == before
    missing = one_error_line(run("imagenet-val", "--root", tmp_path, "--labels", tmp_path / "nope.csv"))
    assert missing and "labels file not found" in missing and "nope.csv" in missing and sorted_tree(val) == before
    csv_path.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    res = run("imagenet-val", "--root", tmp_path, "--labels", csv_path)
    assert res.returncode == 0, res.stderr
    assert sorted_tree(val) == sorted(f"{w}/ILSVRC2012_val_{i:08d}.JPEG" for i, w in enumerate(per_image, 1))


# ---------------------------------------------------------------------------------- imagenet-classnames
def test_imagenet_classnames_from_a_names_file(tmp_path, run):
    make_imagenet(str(tmp_path), n_train=1, n_val=1)
    target = tmp_path / "imagenet" / "classnames.txt"
    expected = target.read_text()
    os.remove(target)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{n}\n" for _, n in WNIDS))
    res = run("imagenet-classnames", "--root", tmp_path, "--clip-names", names)
    assert res.returncode == 0, res.stderr
    assert target.read_text() == expected and "written (4 classes)" in res.stdout
    assert "up to date" in run("imagenet-classnames", "--root", tmp_path, "--clip-names", names).stdout
    names.write_text("tench\ngoldfish\n")
    err = one_error_line(run("imagenet-classnames", "--root", tmp_path, "--clip-names", names))
    assert err and "2 names but images/train has 4 wnid folders" in err and target.read_text() == expected
    build_dataset(make_cfg(tmp_path, "ImageNet"))  # the dataset reads the written file


def test_imagenet_classnames_from_the_clip_list(tmp_path):
    if not os.path.isfile(CLIP_NAMES):
        pytest.skip("../shared/data/imagenet/classnames_clip.txt is absent")
    from engine.data.imagenet_prep import write_classnames

    train = tmp_path / "imagenet" / "images" / "train"
    for i in range(1000):
        (train / f"n{i:08d}").mkdir(parents=True)
    path, n, status = write_classnames(str(tmp_path), CLIP_NAMES)
    lines = open(path).read().splitlines()
    assert n == 1000 and status == "written" and lines[0] == "n00000000 tench" and lines[-1].startswith("n00000999 ")


def test_imagenet_classnames_without_a_list_names_the_source(tmp_path, monkeypatch):
    from engine.data import imagenet_prep

    make_imagenet(str(tmp_path), n_train=1, n_val=1)
    monkeypatch.setattr(imagenet_prep, "default_clip_names", lambda: None)
    with pytest.raises(DatasetError, match="pass --clip-names FILE"):
        imagenet_prep.write_classnames(str(tmp_path), force=True)
