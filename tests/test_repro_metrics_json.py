"""Every run writes ``metrics.json`` next to ``log.txt`` (train and --eval-only runs, real train.py on
Shapes with the tiny random backbone); ``collect_results`` reads it first, falls back to ``log.txt``
when it is absent, and ignores a stale one (folder re-run with other settings)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from repro.report.collect import scan
from engine.runs.run_metrics import METRICS_FILE, REQUIRED_KEYS, code_version, read_metrics
from fixtures_repro import write_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.PREC", "fp32", "DATALOADER.NUM_WORKERS", "0",
        "DATASET.NUM_SHOTS", "2", "TRAINER.COOP.N_CTX", "4"]
COLLECT = os.path.join(REPO, "tools", "collect_results.py")


def _train_py(*args):
    r = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], capture_output=True, text=True,
                       cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 1-epoch CoOp training run (base classes) and an --eval-only run of its checkpoint (novel)."""
    root = tmp_path_factory.mktemp("metrics")
    common = ["--root", str(root / "data"), "--seed", "2", "--trainer", "CoOp",
              "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml",
              "--dataset-config-file", "configs/datasets/shapes.yaml"]
    train = root / "out/base2new/train_base/shapes/shots_2/CoOp/vit_b16_ep50/seed2"
    test = root / "out/base2new/test_new/shapes/shots_2/CoOp/vit_b16_ep50/seed2"
    _train_py(*common, "--output-dir", str(train), *TINY, "DATASET.SUBSAMPLE_CLASSES", "base")
    _train_py(*common, "--output-dir", str(test), "--model-dir", str(train), "--load-epoch", "1", "--eval-only",
              *TINY, "DATASET.SUBSAMPLE_CLASSES", "new")
    return root, train, test


def _log_accuracy(run_dir):
    return float(re.findall(r"^\* accuracy: ([\d.]+)%$", (run_dir / "log.txt").read_text(), flags=re.M)[-1])


@pytest.mark.slow
def test_metrics_json_after_train_and_eval_runs(runs):
    _, train, test = runs
    for run_dir, mode in ((train, "train"), (test, "eval")):
        m = json.loads((run_dir / METRICS_FILE).read_text())
        assert set(REQUIRED_KEYS) <= set(m) and m["mode"] == mode
        for key in ("error_rate", "total", "correct", "train_images_per_s", "eval_time_s", "git_commit"):
            assert key in m
        assert abs(m["accuracy"] - _log_accuracy(run_dir)) <= 0.05 + 1e-9  # the log rounds to 1 decimal
        assert m["correct"] == round(m["accuracy"] * m["total"] / 100) and m["total"] == 5 * 16  # 5 classes
        rec = json.loads((run_dir / "run_record.json").read_text())
        assert m["config_hash"] == rec[mode]["hash"]
        assert m["epoch"] == 1 and m["seed"] == 2 and m["random_init"] is True and m["prec"] == "fp32"
        assert m["precision"] == rec[mode]["precision"] == {"prec": "fp32", "param_dtype": "float32",
                                                            "autocast_dtype": None, "grad_scaler": False,
                                                            "device": "cpu"}
        assert m["code_version"] == code_version() and m["code_version"].startswith("0.1.0+src.")
        assert m["wall_time_s"] >= m["eval_time_s"] > 0 and m["images_per_s"] > 0
        assert 0 <= m["macro_f1"] <= 100
        assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]  # written atomically
    assert json.loads((train / METRICS_FILE).read_text())["train_images_per_s"] > 0
    assert json.loads((test / METRICS_FILE).read_text())["subsample_classes"] == "new"


@pytest.mark.slow
def test_metrics_and_record_state_the_precision_that_ran(tmp_path):
    """``prec`` is what ran, not only the config's ``PREC``: VPT with ``PREC fp16`` and
    ``UPSTREAM_NUMERICS True`` runs fp32 (as the official vpt.py); the config still says fp16."""
    out = tmp_path / "vpt"
    _train_py("--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "VPT", "--eval-only",
              "--config-file", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
              "--dataset-config-file", "configs/datasets/shapes.yaml", "--output-dir", str(out),
              "MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
              "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "TRAINER.VPT.PROMPT_DEPTH_VISION", "1",
              "TRAINER.VPT.PREC", "fp16", "TRAINER.VPT.UPSTREAM_NUMERICS", "True")
    m = json.loads((out / METRICS_FILE).read_text())
    rec = json.loads((out / "run_record.json").read_text())["eval"]
    assert rec["settings"]["TRAINER.VPT.PREC"] == "fp16"
    assert m["prec"] == "fp32" and m["precision"] == rec["precision"] == {
        "prec": "fp32", "param_dtype": "float32", "autocast_dtype": None, "grad_scaler": False, "device": "cpu"}


def test_collect_prefers_metrics_json_then_falls_back_to_the_log(runs, tmp_path):
    # works on a copy: the module-scoped runs stay as train.py wrote them for the other tests
    shared_root, shared_train, shared_test = runs
    out = tmp_path / "out"
    shutil.copytree(shared_root / "out", out)
    train, test = (out / d.relative_to(shared_root / "out") for d in (shared_train, shared_test))
    exact = {d: json.loads((d / METRICS_FILE).read_text())["accuracy"] for d in (train, test)}
    # make log.txt disagree: collect still reports metrics.json
    for d in (train, test):
        text = (d / "log.txt").read_text()
        (d / "log.txt").write_text(re.sub(r"^\* accuracy: [\d.]+%$", "* accuracy: 12.3%", text, flags=re.M))
    r = subprocess.run([sys.executable, COLLECT, str(out), "--format", "json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cell = json.loads(r.stdout)["base2new"]["methods"]["CoOp"]["datasets"]["shapes"]
    assert cell["base"]["seeds"] == {"2": exact[train]} and cell["novel"]["seeds"] == {"2": exact[test]}
    found, _ = scan(str(out))
    assert {r.source for r in found} == {METRICS_FILE}
    # without metrics.json: the log's (disagreeing) value
    (test / METRICS_FILE).unlink()
    r = subprocess.run([sys.executable, COLLECT, str(out), "--format", "json"], capture_output=True, text=True)
    cell = json.loads(r.stdout)["base2new"]["methods"]["CoOp"]["datasets"]["shapes"]
    assert cell["novel"]["seeds"] == {"2": 12.3} and cell["base"]["seeds"] == {"2": exact[train]}
    for shared, copy in ((shared_train, train), (shared_test, test)):  # the shared runs are untouched
        assert abs(_log_accuracy(shared) - exact[copy]) <= 0.05 + 1e-9


def test_stale_incomplete_or_eval_metrics_are_ignored(tmp_path):
    run = tmp_path / "base2new/train_base/dtd/shots_16/CoMMA/cfg/seed1"
    write_log(str(run), 70.0)
    good = {k: 1 for k in REQUIRED_KEYS}
    good.update(accuracy=81.25, mode="train", config_hash="aaaaaaaaaaaa", epoch=5)
    (run / METRICS_FILE).write_text(json.dumps(good))
    (run / "run_record.json").write_text(json.dumps({"version": 1, "train": {"hash": "aaaaaaaaaaaa"}}))
    assert read_metrics(str(run), "train")["accuracy"] == 81.25
    assert scan(str(tmp_path))[0][0].accuracy == 81.25
    # the folder was re-run with other settings since: the record's hash moved on, the log decides
    (run / "run_record.json").write_text(json.dumps({"version": 1, "train": {"hash": "bbbbbbbbbbbb"}}))
    assert read_metrics(str(run), "train") is None
    assert scan(str(tmp_path))[0][0].accuracy == 70.0
    (run / "run_record.json").unlink()
    # a training folder needs the end-of-training test, not an evaluation run into it
    (run / METRICS_FILE).write_text(json.dumps(dict(good, mode="eval")))
    assert read_metrics(str(run), "train") is None and read_metrics(str(run), "eval") is not None
    # missing keys or a broken file: ignored
    (run / METRICS_FILE).write_text(json.dumps({"accuracy": 99.0}))
    assert read_metrics(str(run)) is None
    (run / METRICS_FILE).write_text("{not json")
    assert read_metrics(str(run)) is None and scan(str(tmp_path))[0][0].accuracy == 70.0
