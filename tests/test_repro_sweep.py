"""Sweep planning, skip/resume, failure handling, interruption, GPU slots, and the per-method scripts,
all driven by a stub train.py (SWEEP_TRAIN_PY) that writes Dassl-format logs and checkpoints."""
import json
import os
import subprocess
import sys

import pytest

from repro.methods import BASE2NEW_DATASETS, DG_TARGETS, XD_TARGETS
from repro.plan import Context, PlanError, build_plan, make_job, resolve_max_epoch
from fixtures_repro import make_config_root, read_calls, stub_accuracy, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")


@pytest.fixture
def croot(tmp_path):
    return make_config_root(str(tmp_path / "cfgroot"))


def ctx_for(tmp_path, croot, opts=()):
    return Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                   opts=list(opts), config_root=croot)


def sweep(tmp_path, croot, *args, env=None):
    cmd = [sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or stub_env(str(tmp_path)), cwd=REPO)


def test_plan_all_protocols_count_and_order(tmp_path, croot):
    jobs = build_plan(ctx_for(tmp_path, croot), ["all"], ["CoMMA", "MaPLe"], ["all"], [1, 2, 3])
    per = 2 * len(BASE2NEW_DATASETS) + 1 + len(XD_TARGETS) + len(DG_TARGETS)
    assert per == 37 and len(jobs) == 2 * 3 * per
    assert len({j.id for j in jobs}) == len(jobs)
    assert jobs[0].id == "base2new/train_base/imagenet/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed1"
    assert jobs[1].id == "base2new/test_new/imagenet/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed1"
    assert jobs[1].deps == (jobs[0].id,)
    # protocol -> method -> seed -> dataset
    keys = [(j.protocol, j.trainer, j.seed) for j in jobs]
    rank = {"base2new": 0, "xd": 1, "dg": 2, "CoMMA": 0, "MaPLe": 1}
    assert keys == sorted(keys, key=lambda k: (rank[k[0]], rank[k[1]], k[2]))
    b2n = [j for j in jobs if j.protocol == "base2new" and j.trainer == "CoMMA" and j.seed == 1]
    assert [j.dataset for j in b2n[::2]] == list(BASE2NEW_DATASETS)
    xd = [j for j in jobs if j.protocol == "xd" and j.trainer == "MaPLe" and j.seed == 2]
    assert xd[0].kind == "xd_train" and xd[0].id == \
        "xd/train/imagenet/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/seed2"
    assert [j.dataset for j in xd[1:]] == list(XD_TARGETS) and all(j.deps == (xd[0].id,) for j in xd[1:])
    dg = [j for j in jobs if j.protocol == "dg" and j.trainer == "MaPLe" and j.seed == 2]
    assert [j.dataset for j in dg] == list(DG_TARGETS)  # the shared xd training job is not repeated
    assert all(j.deps == (xd[0].id,) for j in dg)
    assert {j.load_epoch for j in jobs if j.kind == "base2new_test"} == {5}
    assert {j.load_epoch for j in jobs if j.kind == "xd_test"} == {2}
    # dg alone still plans its training job first
    dg_only = build_plan(ctx_for(tmp_path, croot), ["dg"], ["CoMMA"], ["all"], [1])
    assert [j.kind for j in dg_only] == ["xd_train"] + ["xd_test"] * 4


def test_job_arguments_and_load_epoch_from_opts(tmp_path, croot):
    ctx = ctx_for(tmp_path, croot, opts=["OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", "ViT-Tiny/16"])
    train = make_job(ctx, "maple", "base2new_train", "dtd", 2)
    test = make_job(ctx, "maple", "base2new_test", "dtd", 2)
    assert train.args[-8:] == ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
                               "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", "ViT-Tiny/16"]
    assert "--eval-only" not in train.args and train.log_kind == "train"
    i = test.args.index("--load-epoch")
    assert test.args[i + 1] == "1" and test.load_epoch == 1
    assert test.args[test.args.index("--model-dir") + 1] == train.output_dir
    assert "--eval-only" in test.args and "new" in test.args
    zs = make_job(ctx_for(tmp_path, croot), "ZeroshotCLIP", "base2new_train", "dtd", 1)
    assert "--eval-only" in zs.args and "--model-dir" not in zs.args and zs.log_kind == "eval"
    assert zs.args[zs.args.index("--config-file") + 1].endswith("configs/trainers/CoOp/vit_b16.yaml")
    coop_in = make_job(ctx_for(tmp_path, croot), "coop", "base2new_train", "imagenet", 1)
    assert coop_in.cfg == "vit_b16_ep50_ctxv1"
    with pytest.raises(PlanError, match="odd number"):
        make_job(ctx_for(tmp_path, croot, opts=["OPTIM.MAX_EPOCH"]), "maple", "base2new_train", "dtd", 1)


def test_resolve_max_epoch(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("OPTIM:\n  MAX_EPOCH: 7\n")
    assert resolve_max_epoch(str(f), []) == 7
    assert resolve_max_epoch(str(f), ["OPTIM.MAX_EPOCH", "3"]) == 3
    f.write_text("OPTIM:\n  LR: 0.1\n")
    assert resolve_max_epoch(str(f), []) == 10  # Dassl default
    with pytest.raises(PlanError, match="cannot read config file"):
        resolve_max_epoch(str(tmp_path / "missing.yaml"), [])


def test_unknown_method_and_protocol_are_one_line_errors(tmp_path, croot):
    r = sweep(tmp_path, croot, "--dry-run", "--methods", "CoMA")
    assert r.returncode == 2 and r.stderr.strip().startswith("ERROR: unknown method 'CoMA'; expected one of:")
    r = sweep(tmp_path, croot, "--dry-run", "--protocol", "fewshoot")
    assert r.returncode == 2 and "unknown protocol 'fewshoot'" in r.stderr


def test_dry_run_lists_statuses(tmp_path, croot):
    r = sweep(tmp_path, croot, "--dry-run", "--protocol", "base2new", "--methods", "CoMMA",
              "--datasets", "dtd", "eurosat", "--seeds", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "4 jobs: 0 finished, 4 pending, 0 blocked"
    first = "base2new/train_base/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed1"
    assert lines[0] == f"# commands run in {REPO}"
    assert lines[1].split() == ["1", "pending", first]
    assert lines[2].split()[2:8] == ["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "CoMMA"]
    assert not read_calls(str(tmp_path))


def test_sweep_runs_skips_and_table_matches(tmp_path, croot):
    args = ["--protocol", "all", "--methods", "CoMMA", "--datasets", "dtd", "eurosat", "--dg-targets", "imagenet_r",
            "--seeds", "1", "2", "OPTIM.MAX_EPOCH", "1"]
    r = sweep(tmp_path, croot, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = read_calls(str(tmp_path))
    assert len(calls) == 2 * (4 + 1 + 2 + 1)  # per seed: 4 base2new, xd train, 2 xd targets, 1 dg target
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())
    assert {v["status"] for v in state["jobs"].values()} == {"finished"}
    # second run: everything finished, nothing runs
    r2 = sweep(tmp_path, croot, *args)
    assert r2.returncode == 0 and "16 finished already, 0 to run" in r2.stdout
    assert len(read_calls(str(tmp_path))) == len(calls)
    d = sweep(tmp_path, croot, "--dry-run", *args)
    assert d.stdout.splitlines()[-1] == "16 jobs: 16 finished, 0 pending, 0 blocked"
    # the collected table equals what the stub wrote
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(tmp_path / "out"),
                          "--format", "json"], capture_output=True, text=True, check=True).stdout
    t = json.loads(out)
    cell = t["base2new"]["methods"]["CoMMA"]["datasets"]["eurosat"]
    assert cell["base"]["seeds"] == {"1": stub_accuracy("eurosat", 1, "base"), "2": stub_accuracy("eurosat", 2, "base")}
    assert cell["novel"]["seeds"]["2"] == stub_accuracy("eurosat", 2, "new")
    assert t["dg"]["methods"]["CoMMA"]["cells"]["imagenet_r"]["seeds"]["1"] == stub_accuracy("imagenet_r", 1, "all")


def test_failure_is_recorded_dependents_blocked_others_continue(tmp_path, croot):
    env = stub_env(str(tmp_path), STUB_FAIL="train_base/dtd/")
    args = ["--protocol", "base2new", "--methods", "MaPLe", "--datasets", "dtd", "eurosat", "--seeds", "1"]
    r = sweep(tmp_path, croot, *args, env=env)
    assert r.returncode == 1
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    tr = "base2new/train_base/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed1"
    te = "base2new/test_new/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed1"
    assert state[tr]["status"] == "failed" and state[tr]["rc"] == 3
    assert "stub failure" in state[tr]["error"]
    assert "stub failure" in (tmp_path / "out" / tr / "stderr.txt").read_text()
    assert state[te]["status"] == "blocked"
    assert state[te.replace("dtd", "eurosat")]["status"] == "finished"
    assert "1 failed, 1 blocked" in r.stdout
    d = sweep(tmp_path, croot, "--dry-run", *args, env=env)
    assert d.stdout.splitlines()[-1] == "4 jobs: 2 finished, 1 pending, 1 blocked"
    # the failure goes away: a re-run retries it and runs the blocked test
    r = sweep(tmp_path, croot, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c for c in read_calls(str(tmp_path)) if "/dtd/" in c][-2:] == [str(tmp_path / "out" / tr),
                                                                            str(tmp_path / "out" / te)]


def test_interrupted_sweep_resumes(tmp_path, croot):
    """The stub SIGKILLs the sweep while the 2nd train job runs; a re-run finishes the rest, resuming it."""
    marker = str(tmp_path / "killed")
    victim = "train_base/eurosat/"
    env = stub_env(str(tmp_path), STUB_KILL_PARENT_ON=victim, STUB_KILL_MARKER=marker)
    args = ["--protocol", "base2new", "--methods", "CoMMA", "--datasets", "dtd", "eurosat", "caltech101",
            "--seeds", "1"]
    r = sweep(tmp_path, croot, *args, env=env)
    assert r.returncode == -9 and os.path.exists(marker)
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    assert sorted(v["status"] for v in state.values()) == ["finished", "finished", "running"]
    d = sweep(tmp_path, croot, "--dry-run", *args, env=env)
    assert "pending  base2new/train_base/eurosat" in d.stdout
    assert "[resume; last attempt was cut off (sweep killed)]" in d.stdout
    assert (tmp_path / "out" / ".sweep.lock").exists()  # left by the killed sweep: stale, taken over
    r = sweep(tmp_path, croot, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    from engine.runs.locks import Lock
    assert Lock(str(tmp_path / "out" / ".sweep.lock")).holder() is None  # released (a "free" generation)
    calls = read_calls(str(tmp_path))
    assert len(calls) == 7 and sum(victim in c for c in calls) == 2
    assert len(set(calls)) == 6
    log = next((tmp_path / "out").glob("base2new/train_base/eurosat/**/seed1")) / "log.txt"
    assert "RESUMED" in log.read_text()


def test_live_sweep_lock_refuses_second_sweep(tmp_path, croot):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".sweep.lock").write_text(str(os.getpid()))  # this (live) process holds it
    r = sweep(tmp_path, croot, "--protocol", "base2new", "--methods", "CoMMA", "--datasets", "dtd", "--seeds", "1")
    assert r.returncode == 2 and f"another sweep (pid {os.getpid()}) is running" in r.stderr
    assert not read_calls(str(tmp_path))


def test_gpu_slots_set_cuda_visible_devices(tmp_path, croot):
    args = ["--protocol", "base2new", "--methods", "CoMMA", "--datasets", "dtd", "eurosat", "caltech101",
            "--seeds", "1", "--gpus", "3,5"]
    r = sweep(tmp_path, croot, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    gpus = [v["gpu"] for v in state.values()]
    assert set(gpus) <= {"3", "5"} and len(gpus) == 6


def _script(tmp_path, croot, rel, *args, **env_extra):
    env = stub_env(str(tmp_path), CONFIG_ROOT=croot, OUTPUT_ROOT=str(tmp_path / "out"),
                   DATA=str(tmp_path / "data"), **env_extra)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", rel), *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))


def test_scripts_tree_skip_and_load_epoch(tmp_path, croot):
    r = _script(tmp_path, croot, "comma/base2new_train.sh", "dtd", "1", "OPTIM.MAX_EPOCH", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    train_dir = tmp_path / "out/base2new/train_base/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed1"
    assert (train_dir / "log.txt").is_file() and (train_dir / "prompt_learner" / "model.pth.tar-1").is_file()
    r = _script(tmp_path, croot, "comma/base2new_train.sh", "dtd", "1", "OPTIM.MAX_EPOCH", "1")
    assert r.returncode == 0 and "skipping" in r.stdout and len(read_calls(str(tmp_path))) == 1
    # without the opts override the test would load epoch 5, which does not exist: clear error, no run
    r = _script(tmp_path, croot, "comma/base2new_test_comma.sh", "dtd", "1")
    assert r.returncode == 2 and "no checkpoint model.pth.tar-5" in r.stdout
    r = _script(tmp_path, croot, "comma/base2new_test.sh", "dtd", "1", "OPTIM.MAX_EPOCH", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    test_log = tmp_path / "out/base2new/test_new/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed1/log.txt"
    assert "(epoch = 1)" in test_log.read_text()
    # xd: SEED-only form trains on imagenet; test needs the training run
    r = _script(tmp_path, croot, "maple/xd_test.sh", "dtd", "1")
    assert r.returncode == 2 and "not finished" in r.stdout
    r = _script(tmp_path, croot, "maple/xd_train_maple.sh", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out/xd/train/imagenet/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/seed1/"
            "prompt_learner/model.pth.tar-2").is_file()
    r = _script(tmp_path, croot, "maple/xd_test.sh", "imagenet_a", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out/xd/test/imagenet_a/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/seed1/"
            "log.txt").is_file()
    # zero-shot: eval-only, no model dir, no dependency
    r = _script(tmp_path, croot, "zsclip/base2new_test.sh", "dtd", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--eval-only" in r.stdout and "--model-dir" not in r.stdout


def test_script_resumes_half_finished_run(tmp_path, croot):
    run = tmp_path / "out/base2new/train_base/dtd/shots_16/VPT/vit_b16_c2_ep5_batch4_4/seed3"
    run.mkdir(parents=True)
    (run / "log.txt").write_text("epoch [1/5] batch [1/4] loss 1.0 (1.0)\n")
    r = _script(tmp_path, croot, "vpt/base2new_train_vpt.sh", "dtd", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exists without a final result; resuming" in r.stdout
    text = (run / "log.txt").read_text()
    assert text.startswith("epoch [1/5]") and "RESUMED" in text and "Finish training" in text
    assert read_calls(str(tmp_path)) == [str(run)]


def test_comma_alias_accepts_official_cuda_argument(tmp_path, croot):
    r = _script(tmp_path, croot, "comma/base2new_train_comma.sh", "dtd", "2", "0", "OPTIM.MAX_EPOCH", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "out/base2new/train_base/dtd/shots_16/CoMMA/vit_b16_c2_ep5_batch4_2ctx/seed2"
    assert (run / "prompt_learner" / "model.pth.tar-1").is_file()


def test_script_usage_errors(tmp_path, croot):
    r = _script(tmp_path, croot, "coop/base2new_train.sh", "dtd")
    assert r.returncode == 2 and "needs a SEED" in r.stderr
    r = _script(tmp_path, croot, "coop/base2new_train.sh", "dtd", "one")
    assert r.returncode == 2 and "SEED must be an integer" in r.stderr
    r = _script(tmp_path, croot, "coop/base2new_train.sh", "dtd", "1", "OPTIM.MAX_EPOCH")
    assert r.returncode == 2 and "KEY VALUE pairs" in r.stderr
    assert not read_calls(str(tmp_path))
