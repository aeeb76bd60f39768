"""End to end on Shapes with the real train.py and the tiny random backbone: the CoMMA scripts
produce the MaPLe output tree and skip finished runs; a sweep completes CoMMA + MaPLe base-to-novel
for 2 seeds; collect_results prints exactly the accuracies in the logs. About 8 train.py runs."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(REPO, p)) for p in
            ("train.py", "trainers/comma.py", "trainers/maple.py", "datasets/shapes.py",
             "configs/datasets/shapes.yaml")),
    reason="engine, trainers or Shapes dataset not present yet")

TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COMMA.PREC", "fp32", "TRAINER.MAPLE.PREC", "fp32",
        "TRAINER.COMMA.PROMPT_DEPTH", "2", "TRAINER.MAPLE.PROMPT_DEPTH", "2",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.TEST.BATCH_SIZE", "40"]
CFG = "vit_b16_c2_ep5_batch4_2ctx"


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    env.update(DATA=str(tmp_path / "data"), OUTPUT_ROOT=str(tmp_path / "out"))
    return env


def _last_accuracy(log_path):
    values = re.findall(r"^\* accuracy: ([\d.]+)%$", open(log_path).read(), flags=re.M)
    assert values, f"no accuracy in {log_path}"
    return float(values[-1])


@pytest.mark.slow
def test_scripts_sweep_and_collect_on_shapes(tmp_path):
    env = _env(tmp_path)
    out = tmp_path / "out"
    script = os.path.join(REPO, "scripts", "comma", "base2new_train.sh")
    r = subprocess.run(["bash", script, "shapes", "1", *TINY], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    train_dir = out / "base2new/train_base/shapes/shots_16/CoMMA" / CFG / "seed1"
    assert (train_dir / "MultiModalPromptLearner" / "model.pth.tar-1").is_file()
    log_size = (train_dir / "log.txt").stat().st_size
    r = subprocess.run(["bash", script, "shapes", "1", *TINY], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "skipping" in r.stdout
    assert (train_dir / "log.txt").stat().st_size == log_size  # nothing ran, nothing appended
    test_script = os.path.join(REPO, "scripts", "comma", "base2new_test.sh")
    r = subprocess.run(["bash", test_script, "shapes", "1", *TINY], env=env, capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    test_log = out / "base2new/test_new/shapes/shots_16/CoMMA" / CFG / "seed1" / "log.txt"
    assert "(epoch = 1)" in test_log.read_text()

    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--protocol", "base2new",
                        "--methods", "CoMMA", "MaPLe", "--datasets", "shapes", "--seeds", "1", "2",
                        "--output-root", str(out), "--data", str(tmp_path / "data"), *TINY],
                       env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "8 jobs, 2 finished already, 6 to run" in r.stdout

    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out),
                        "--format", "json"], capture_output=True, text=True, check=True)
    table = json.loads(r.stdout)["base2new"]
    assert sorted(table["methods"]) == ["CoMMA", "MaPLe"]
    for trainer in ("CoMMA", "MaPLe"):
        cell = table["methods"][trainer]["datasets"]["shapes"]
        for role, folder in (("base", "train_base"), ("novel", "test_new")):
            runs = {str(s): out / "base2new" / folder / "shapes/shots_16" / trainer / CFG / f"seed{s}" for s in (1, 2)}
            # metrics.json holds the unrounded accuracy the log prints with one decimal
            expected = {s: json.loads((d / "metrics.json").read_text())["accuracy"] for s, d in runs.items()}
            assert cell[role]["seeds"] == expected
            for s, d in runs.items():
                assert abs(expected[s] - _last_accuracy(d / "log.txt")) <= 0.05 + 1e-9
            assert cell[role]["missing"] == 0
            assert cell[role]["mean"] == pytest.approx(sum(expected.values()) / 2)
    md = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out)],
                        capture_output=True, text=True, check=True).stdout
    assert "### Shapes" in md and "missing" not in md
