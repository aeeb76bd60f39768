"""Run records (``engine.runs.record``): train.py records its settings; the scripts and the sweep
skip a finished folder only when the requested settings equal the recorded ones, and refuse with one
line naming the differing keys otherwise."""
import json
import os
import subprocess
import sys

import pytest

from engine.runs import record
from repro.plan import Context, make_job
from fixtures_repro import make_config_root, read_calls, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COMMA.PREC", "fp32", "TRAINER.COMMA.PROMPT_DEPTH", "2",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.TEST.BATCH_SIZE", "40",
        "DATASET.NUM_SHOTS", "2"]
CFG = "vit_b16_c2_ep5_batch4_2ctx"


def test_settings_hash_diff_and_one_line_message(tmp_path):
    a = {"OPTIM.LR": 0.0035, "OPTIM.MAX_EPOCH": 5, "INPUT.SIZE": [224, 224]}
    b = dict(a, **{"OPTIM.MAX_EPOCH": 2, "NEW.KEY": True})
    assert record.settings_hash(a) == record.settings_hash(dict(reversed(list(a.items()))))
    assert record.settings_hash(a) != record.settings_hash(b)
    assert record.diff_settings(a, b) == [("NEW.KEY", "<unset>", True), ("OPTIM.MAX_EPOCH", 5, 2)]
    msg = record.mismatch_message("out/x", record.diff_settings(a, b), "finished", "Do this.")
    assert "\n" not in msg
    assert msg == ("out/x holds a finished run with other settings (NEW.KEY <unset> -> true; "
                   "OPTIM.MAX_EPOCH 5 -> 2; recorded -> requested). Do this.")
    many = {f"K.{i}": i for i in range(7)}
    assert "and 3 more keys" in record.mismatch_message("o", record.diff_settings({}, many), "finished", "")
    record.write_record(str(tmp_path), "train", a, {"seed": 1})
    record.write_record(str(tmp_path), "eval", b, {"seed": 1})
    data = json.loads((tmp_path / record.RECORD_FILE).read_text())
    assert data["version"] == 1 and data["train"]["settings"] == a and data["eval"]["settings"] == b
    assert data["train"]["hash"] == record.settings_hash(a) and data["train"]["args"] == {"seed": 1}
    assert record.read_record(str(tmp_path / "absent")) == {}


def test_requested_settings_follow_the_merge_order_and_ignore_paths(tmp_path):
    base = ["--root", "/data/a", "--output-dir", str(tmp_path / "o1"), "--seed", "1", "--trainer", "CoMMA",
            "--config-file", f"configs/trainers/CoMMA/{CFG}.yaml",
            "--dataset-config-file", "configs/datasets/shapes.yaml", "OPTIM.MAX_EPOCH", "3"]
    s = record.requested_settings(base, REPO)
    assert s["OPTIM.MAX_EPOCH"] == 3 and s["TRAINER.NAME"] == "CoMMA" and s["SEED"] == 1
    assert s["DATASET.NAME"] == "Shapes" and s["--eval-only"] is False
    for key in record.IGNORED_KEYS:
        assert key not in s
    moved = list(base)
    moved[1], moved[3] = "/elsewhere/data", str(tmp_path / "o2")
    assert record.settings_hash(record.requested_settings(moved + ["DATALOADER.NUM_WORKERS", "7"], REPO)) == \
        record.settings_hash(s)
    lr = record.requested_settings(base + ["OPTIM.LR", "0.5"], REPO)
    assert [k for k, _, _ in record.diff_settings(s, lr)] == ["OPTIM.LR"]


def _script(tmp_path, rel, *args, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    env.update(DATA=str(tmp_path / "data"), OUTPUT_ROOT=str(tmp_path / "out"), **env_extra)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", rel), *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=600)


@pytest.mark.slow
def test_rerun_with_other_settings_is_one_line_error_not_the_old_result(tmp_path):
    script = "comma/base2new_train.sh"
    r = _script(tmp_path, script, "shapes", "1", *TINY)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "out/base2new/train_base/shapes/shots_2/CoMMA" / CFG / "seed1"
    rec = json.loads((run / record.RECORD_FILE).read_text())
    assert rec["train"]["settings"]["OPTIM.MAX_EPOCH"] == 1 and "eval" not in rec
    assert rec["train"]["args"]["opts"] == ["TRAINER.COMMA.PREC", "fp16", "DATASET.NUM_SHOTS", "2",
                                            "DATASET.SUBSAMPLE_CLASSES", "base"] + TINY
    log_size = (run / "log.txt").stat().st_size
    # same settings (the worker count does not change results): skipped
    r = _script(tmp_path, script, "shapes", "1", *TINY, "DATALOADER.NUM_WORKERS", "1")
    assert r.returncode == 0 and "(finished); skipping." in r.stdout, r.stdout + r.stderr
    for extra, shown in ((["OPTIM.MAX_EPOCH", "2"], "OPTIM.MAX_EPOCH 1 -> 2"),
                         (["OPTIM.LR", "0.5"], "OPTIM.LR 0.0035 -> 0.5")):
        r = _script(tmp_path, script, "shapes", "1", *TINY, *extra)
        assert r.returncode == 2
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ERROR: {run} holds a finished run with other settings")
        assert shown in lines[0] and "OUTPUT_ROOT" in lines[0] and "skipping" not in r.stdout
    assert (run / "log.txt").stat().st_size == log_size  # nothing ran, nothing appended
    # the sweep refuses it too: the job fails with the same line, its test job is blocked
    sweep = [sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--protocol", "base2new", "--methods", "CoMMA",
             "--datasets", "shapes", "--seeds", "1", "--output-root", str(tmp_path / "out"),
             "--data", str(tmp_path / "data")]
    opts = [*TINY, "OPTIM.LR", "0.5"]
    r = subprocess.run(sweep + ["--dry-run"] + opts, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0 and "OPTIM.LR 0.0035 -> 0.5" in r.stdout, r.stdout + r.stderr
    assert "2 jobs: 0 finished, 1 pending, 0 blocked, 1 differs" in r.stdout
    r = subprocess.run(sweep + opts, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 1
    assert "1 run with other settings" in r.stdout and "OPTIM.LR 0.0035 -> 0.5" in r.stdout
    assert "1 failed, 1 blocked" in r.stdout
    assert (run / "log.txt").stat().st_size == log_size


def test_half_finished_run_with_other_settings_is_not_resumed(tmp_path):
    croot = make_config_root(str(tmp_path / "cfgroot"))
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  opts=["OPTIM.MAX_EPOCH", "5"], config_root=croot)
    job = make_job(ctx, "vpt", "base2new_train", "dtd", 3)
    os.makedirs(job.output_dir)
    with open(os.path.join(job.output_dir, "log.txt"), "w") as f:
        f.write("epoch [1/5] batch [1/4] loss 1.0 (1.0)\n")
    record.write_record(job.output_dir, "train", record.requested_settings(job.args, REPO), {})
    env = stub_env(str(tmp_path), CONFIG_ROOT=croot, OUTPUT_ROOT=str(tmp_path / "out"), DATA=str(tmp_path / "data"))
    cmd = ["bash", os.path.join(REPO, "scripts", "vpt", "base2new_train.sh"), "dtd", "3"]
    r = subprocess.run(cmd + ["OPTIM.MAX_EPOCH", "2"], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 2 and "holds a half-finished run" in r.stdout and "OPTIM.MAX_EPOCH 5 -> 2" in r.stdout
    assert not read_calls(str(tmp_path))
    r = subprocess.run(cmd + ["OPTIM.MAX_EPOCH", "5"], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0 and "resuming" in r.stdout, r.stdout + r.stderr
    assert read_calls(str(tmp_path)) == [job.output_dir]


@pytest.mark.parametrize("status", ["finished", "partial"])
def test_folder_without_record_keeps_the_old_behaviour(tmp_path, status):
    from repro.runner import settings_problem

    croot = make_config_root(str(tmp_path / "cfgroot"))
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  config_root=croot)
    job = make_job(ctx, "coop", "base2new_train", "dtd", 1)
    assert settings_problem(job, status, "hint", REPO) is None  # runs that predate records
    assert settings_problem(job, "missing", "hint", REPO) is None


def test_keys_added_to_the_config_after_a_run_count_only_when_set_away_from_their_default():
    recorded = {"OPTIM.LR": 0.1, "OLD.REMOVED": 1}
    defaults = {"OPTIM.LR": 0.0035, "NEW.KEY": False}
    assert record.diff_settings(recorded, {"OPTIM.LR": 0.1, "NEW.KEY": False}, defaults) == []
    assert record.diff_settings(recorded, {"OPTIM.LR": 0.1, "NEW.KEY": True}, defaults) == [
        ("NEW.KEY", "<unset>", True)]
    assert record.diff_settings(recorded, {"OPTIM.LR": 0.5, "NEW.KEY": False}, defaults) == [
        ("OPTIM.LR", 0.1, 0.5)]
    defaults = record.default_settings(REPO)
    assert defaults["OPTIM.MAX_EPOCH"] == 10 and "TRAINER.COMMA.N_CTX" in defaults
