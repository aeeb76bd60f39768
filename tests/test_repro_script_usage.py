"""The scripts' usage lines name the script that was called (and its arguments), not the module behind it."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "REPRO_SCRIPT"})


def test_script_usage_names_the_script():
    r = _run(["bash", "scripts/coop/base2new_train.sh"])
    assert r.returncode == 2
    assert r.stderr.strip() == "ERROR: usage: bash scripts/coop/base2new_train.sh DATASET SEED [KEY VALUE ...]"
    r = _run(["bash", "scripts/comma/fewshot.sh", "shapes", "1"])
    assert r.stderr.strip() == ("ERROR: fewshot needs a SHOTS; usage: bash scripts/comma/fewshot.sh "
                                "DATASET SEED SHOTS [KEY VALUE ...]")
    r = _run([sys.executable, "-m", "repro.job", "coop", "xd_test"])
    assert r.stderr.strip() == "ERROR: usage: python -m repro.job METHOD xd_test DATASET SEED [KEY VALUE ...]"
    for path in ("scripts/_common.sh", "repro/job.py"):
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            assert "engine.repro" not in f.read()


def test_eval_only_missing_epoch_is_one_line_before_the_model_is_built(tmp_path):
    run = tmp_path / "run"
    for epoch in (2, 5):
        (run / "prompt_learner").mkdir(parents=True, exist_ok=True)
        (run / "prompt_learner" / f"model.pth.tar-{epoch}").write_bytes(b"not read")
    cmd = [sys.executable, "train.py", "--root", str(tmp_path / "data"), "--trainer", "CoOp", "--eval-only",
           "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "--dataset-config-file",
           "configs/datasets/shapes.yaml", "--output-dir", str(tmp_path / "out"), "--model-dir", str(run),
           "--load-epoch", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--load-epoch 3: no " in r.stderr and "the epochs saved there are 2, 5" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing built, nothing written (the data root does not even exist)
