"""``tools/sweep.py --protocol released --weights DIR`` and ``scripts/<method>/reproduce.sh``: a tiny MaPLe
run's checkpoint, copied into the MaPLe/COMMA release layout (``<DIR>/<dataset>/base/seed<N>/
MultiModalPromptLearner/model.pth.tar-<E>``), is evaluated on base and novel classes and the table
printed; bad input is one line and a non-zero exit."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from repro.released import dataset_of, discover
from repro.plan import PlanError
from fixtures_repro import make_config_root, read_calls, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "2",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"]
CFG = "vit_b16_c2_ep5_batch4_2ctx"


def _layout(weights, dataset, seed, ckpt_dir):
    dst = weights / dataset / "base" / f"seed{seed}" / "MultiModalPromptLearner"
    dst.mkdir(parents=True)
    for name in os.listdir(ckpt_dir):
        shutil.copy(os.path.join(ckpt_dir, name), dst / name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch MaPLe run on the Shapes base classes and its checkpoint in the release layout."""
    root = tmp_path_factory.mktemp("released")
    run = root / "train"
    r = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--root", str(root / "data"), "--seed", "1",
                        "--trainer", "MaPLe", "--config-file", f"configs/trainers/MaPLe/{CFG}.yaml",
                        "--dataset-config-file", "configs/datasets/shapes.yaml", "--output-dir", str(run), *TINY,
                        "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _layout(root / "weights", "Shapes", 1, run / "MultiModalPromptLearner")  # the release's title spelling
    return root, run


@pytest.mark.slow
def test_released_protocol_evaluates_the_layout_and_prints_the_table(trained):
    root, run = trained
    out = root / "out"
    r = subprocess.run([sys.executable, SWEEP, "--protocol", "released", "--methods", "MaPLe", "--weights",
                        str(root / "weights"), "--output-root", str(out), "--data", str(root / "data"), *TINY],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Sweep: 2 jobs" in r.stdout
    runs = {s: out / "released/base2new" / f"test_{s}" / "shapes/shots_16/MaPLe" / CFG / "seed1"
            for s in ("base", "new")}
    acc = {s: json.loads((d / "metrics.json").read_text()) for s, d in runs.items()}
    assert acc["base"]["epoch"] == 1 and acc["base"]["mode"] == "eval"
    assert acc["base"]["subsample_classes"] == "base" and acc["new"]["subsample_classes"] == "new"
    # the released checkpoint on the base classes gives the training run's own final test result
    assert acc["base"]["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    assert "Released weights:" in r.stdout and "### Shapes" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("| MaPLe") and "± 0.00" in line)
    assert f"{acc['base']['accuracy']:.2f} ± 0.00" in row and f"{acc['new']['accuracy']:.2f} ± 0.00" in row
    # the per-method script with the official argument order reads one dataset's folder
    env = dict(os.environ, OUTPUT_ROOT=str(root / "out_script"), DATA=str(root / "data"))
    env.pop("SWEEP_TRAIN_PY", None)
    s = subprocess.run(["bash", os.path.join(REPO, "scripts/maple/reproduce_maple.sh"), "shapes", "1",
                        str(root / "weights" / "Shapes"), *TINY], capture_output=True, text=True, env=env, timeout=900)
    assert s.returncode == 0, s.stdout[-2000:] + s.stderr[-2000:]
    for sub, d in runs.items():
        mine = root / "out_script" / os.path.relpath(d, out) / "metrics.json"
        assert json.loads(mine.read_text())["accuracy"] == acc[sub]["accuracy"]


def test_discover_layouts(tmp_path):
    w = tmp_path / "w"
    for ds, seeds in (("Caltech101", (1, 2, 3)), ("Flowers102", (1,)), ("imagenet", (2,))):
        for s in seeds:
            (w / ds / "base" / f"seed{s}" / "MultiModalPromptLearner").mkdir(parents=True)
    (w / "README.txt").write_text("not a dataset")
    (w / "notes").mkdir()
    assert dataset_of("Flowers102") == "oxford_flowers" and dataset_of("ImageNet-Sketch") == "imagenet_sketch"
    assert discover(str(w)) == [("imagenet", 2), ("caltech101", 1), ("caltech101", 2), ("caltech101", 3),
                                ("oxford_flowers", 1)]
    assert discover(str(w), ["caltech101"], [1, 2]) == [("caltech101", 1), ("caltech101", 2)]
    with pytest.raises(PlanError, match=r"no weights for dtd \(found: caltech101, oxford_flowers, imagenet"):
        discover(str(w), ["dtd"])
    # one dataset's folder itself (what reproduce_maple.sh takes) needs the dataset named
    assert discover(str(w / "Caltech101"), ["caltech101"]) == [("caltech101", 1), ("caltech101", 2), ("caltech101", 3)]
    with pytest.raises(PlanError, match="name that dataset with --datasets"):
        discover(str(w / "Caltech101"))


def _sweep(tmp_path, *args, env=None):
    croot = make_config_root(str(tmp_path / "cfgroot"))
    return subprocess.run([sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
                           "--data", str(tmp_path / "data"), "--protocol", "released", *args],
                          capture_output=True, text=True, cwd=REPO, env=env or stub_env(str(tmp_path)))


def test_bad_weights_input_is_one_line(tmp_path):
    r = _sweep(tmp_path, "--methods", "MaPLe", "--weights", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"ERROR: released weights folder not found: {tmp_path / 'missing'}")
    wrong = tmp_path / "wrong"
    (wrong / "caltech101" / "seed1").mkdir(parents=True)  # no base/ level
    r = _sweep(tmp_path, "--methods", "MaPLe", "--weights", str(wrong))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "holds no released weights: expected <weights>/<dataset>/base/seed<N>/" in r.stderr
    r = _sweep(tmp_path, "--methods", "MaPLe")
    assert r.returncode == 2 and "needs --weights DIR" in r.stderr
    (wrong / "dtd" / "base" / "seed1").mkdir(parents=True)
    r = _sweep(tmp_path, "--methods", "ZeroshotCLIP", "--weights", str(wrong))
    assert r.returncode == 2 and "has no learned weights" in r.stderr
    # right layout, wrong epoch: the job fails with one line, nothing runs
    (wrong / "dtd" / "base" / "seed1" / "MultiModalPromptLearner").mkdir()
    (wrong / "dtd" / "base" / "seed1" / "MultiModalPromptLearner" / "model.pth.tar-2").write_text("x")
    r = _sweep(tmp_path, "--methods", "MaPLe", "--weights", str(wrong))
    assert r.returncode == 1 and "FAILED released/base2new/test_base/dtd" in r.stdout
    assert "no checkpoint model.pth.tar-5 under" in r.stdout and not read_calls(str(tmp_path))
    script = os.path.join(REPO, "scripts", "maple", "reproduce.sh")
    s = subprocess.run(["bash", script, "dtd", "1", str(tmp_path / "missing")], capture_output=True, text=True,
                       env=dict(os.environ, OUTPUT_ROOT=str(tmp_path / "o")))
    assert s.returncode == 2 and s.stderr.startswith("ERROR: weights folder not found:") and s.stderr.count("\n") == 1
