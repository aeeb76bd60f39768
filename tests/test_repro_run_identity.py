"""Run identity (``engine.runs.identity``): a run folder holds the result of one dataset and one
weights file. Two different ImageFolder datasets sent to one output root: the second is never
reported finished (train.py, the scripts, ``tools/sweep.py --dry-run`` and the sweep); ``NAME=CONFIG``
files it under its own name."""
import json
import os
import subprocess
import sys

import pytest

from engine.config import get_cfg_default
from engine.runs import identity, record
from repro.plan import PlanError, split_dataset
from tests.fixtures_data import make_image_folder, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "2",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8",
        "DATASET.NUM_SHOTS", "2", "DATALOADER.CHECK_IMAGES", "exists"]
CFG = "vit_b16_ctxv1"


def _cfg(name, root, **kw):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = name, str(root)
    for k, v in kw.items():
        setattr(cfg.DATASET, k, v)
    return cfg


def test_imagefolder_identity_follows_the_files_not_the_caches(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_image_folder(a)
    make_image_folder(b, classes=("cat", "dog", "owl"))
    ida, idb = identity.identity_settings(_cfg("ImageFolder", a)), identity.identity_settings(_cfg("ImageFolder", b))
    assert ida["identity.dataset.root"] == os.path.realpath(a) and ida["identity.dataset.files"] == 15
    assert ida["identity.dataset.fingerprint"] != idb["identity.dataset.fingerprint"]
    (a / "split_fewshot").mkdir()
    (a / "split_fewshot" / "shot_2-seed_1.json").write_text("{}")  # a run's cache: not the data
    assert identity.identity_settings(_cfg("ImageFolder", a)) == ida
    write_image(str(a / "cat" / "extra.png"))
    assert identity.identity_settings(_cfg("ImageFolder", a))["identity.dataset.files"] == 16
    # built-in datasets: the name is the identity (no extra keys); a weights file adds its digest
    assert identity.identity_settings(_cfg("Caltech101", a)) == {}
    cfg = _cfg("Caltech101", a)
    w = tmp_path / "w.pt"
    w.write_bytes(b"x" * 10)
    cfg.MODEL.BACKBONE.PATH = str(w)
    d1 = identity.identity_settings(cfg)["identity.weights"]
    w.write_bytes(b"y" * 11)
    assert d1.startswith("sha256:") and identity.identity_settings(cfg)["identity.weights"] != d1


def test_csv_identity_and_old_records(tmp_path):
    (tmp_path / "d.csv").write_text("a.png,0,cat\n")
    before = identity.identity_settings(_cfg("CSV", tmp_path, CSV_FILE="d.csv"))
    (tmp_path / "d.csv").write_text("a.png,1,cat\n")
    after = identity.identity_settings(_cfg("CSV", tmp_path, CSV_FILE="d.csv"))
    assert before["identity.dataset.fingerprint"] != after["identity.dataset.fingerprint"]
    # a record written before identities were recorded is compared on its config keys only
    old = {"OPTIM.LR": 0.1}
    assert record.diff_settings(old, dict(old, **after), {}) == []
    assert [k for k, _, _ in record.diff_settings(dict(old, **before), dict(old, **after), {})] == \
        ["identity.dataset.fingerprint"]


def test_dataset_name_syntax():
    assert split_dataset("caltech101") == ("caltech101", "caltech101")
    assert split_dataset("flowers=image_folder") == ("flowers", "image_folder")
    for bad in ("a/b=image_folder", "x=", "=image_folder"):
        with pytest.raises(PlanError, match="NAME=CONFIG"):
            split_dataset(bad)


def _env(data, out):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    env.update(DATA=str(data), OUTPUT_ROOT=str(out), HARNESS_TINY_CLIP_CACHE="")
    return env


@pytest.mark.slow
def test_second_imagefolder_dataset_is_never_reported_finished(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    make_image_folder(a)
    make_image_folder(b, classes=("ant", "bee", "cow"))
    script = ["bash", os.path.join(REPO, "scripts", "coop", "base2new_train.sh")]
    r = subprocess.run(script + ["image_folder", "1", *TINY], capture_output=True, text=True, env=_env(a, out),
                       cwd=str(tmp_path), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = out / "base2new/train_base/image_folder/shots_2/CoOp" / CFG / "seed1"
    rec = json.loads((run / record.RECORD_FILE).read_text())["train"]["settings"]
    assert rec["identity.dataset.root"] == os.path.realpath(a)
    log_size = (run / "log.txt").stat().st_size

    # the scripts: one ERROR line naming the dataset identity, nothing run, never "skipping"
    r = subprocess.run(script + ["image_folder", "1", *TINY], capture_output=True, text=True, env=_env(b, out),
                       cwd=str(tmp_path), timeout=600)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert lines[0].startswith(f"ERROR: {run} holds a finished run with other settings (identity.dataset.")
    assert "skipping" not in r.stdout
    # train.py directly into that folder: refused in one line, before anything is written
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--root", str(b), "--seed", "1", "--trainer", "CoOp",
           "--config-file", f"configs/trainers/CoOp/{CFG}.yaml",
           "--dataset-config-file", "configs/datasets/image_folder.yaml", "--output-dir", str(run),
           "TRAINER.COOP.PREC", "fp16", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "identity.dataset." in err[0], r.stdout + r.stderr
    assert err[0].startswith(f"error: {run} holds a finished run with other settings")
    assert (run / "log.txt").stat().st_size == log_size
    # ... while the same dataset is accepted (train.py re-runs, the scripts skip)
    same = list(cmd)
    same[same.index("--root") + 1] = str(a)
    r = subprocess.run(same[:2] + ["--no-train"] + same[2:], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    log_size = (run / "log.txt").stat().st_size

    # the sweep's --dry-run and the sweep: "differs", failed, never finished or skipped
    sweep = [sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--protocol", "base2new", "--methods", "CoOp",
             "--datasets", "image_folder", "--seeds", "1", "--output-root", str(out), "--data", str(b)]
    r = subprocess.run(sweep + ["--dry-run", *TINY], capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0 and "2 jobs: 0 finished, 1 pending, 0 blocked, 1 differs" in r.stdout, r.stdout + r.stderr
    assert "identity.dataset." in r.stdout
    r = subprocess.run(sweep + TINY, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 1 and "0 skipped (finished)" in r.stdout and "1 failed, 1 blocked" in r.stdout, r.stdout
    assert (run / "log.txt").stat().st_size == log_size
    # named: NAME=CONFIG files the second dataset under its own folder, planned as pending
    named = list(sweep)
    named[named.index("image_folder")] = "zoo=image_folder"
    r = subprocess.run(named + ["--dry-run", *TINY], capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert "2 jobs: 0 finished, 2 pending" in r.stdout and "base2new/train_base/zoo/shots_2/CoOp" in r.stdout, r.stdout
