"""tools/sweep.py through submitit: --launcher submitit-local runs the plan's waves as local processes
(failed jobs resubmitted on re-run, blocked tests after a failed training), --status reports each job,
--emit-commands writes the plan's commands; --launcher slurm writes the job arrays (options,
afterany dependencies) through fake sbatch/srun/sacct commands and records their ids; the real
train.py with the tiny backbone runs a 4-job plan to its paper table."""
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from repro.launchers import _expand_array, parse_minutes, parse_sbatch, waves
from repro.plan import Context, build_plan
from fixtures_repro import make_config_root, read_calls, stub_env

pytest.importorskip("submitit")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")
CFG = "vit_b16_c2_ep5_batch4_2ctx"
PLAN = ["--protocol", "base2new", "--methods", "CoMMA", "--datasets", "caltech101", "--seeds", "1", "2"]


def _ids(dataset="caltech101", trainer="CoMMA"):
    return [f"base2new/{folder}/{dataset}/shots_16/{trainer}/{CFG}/seed{s}"
            for s in (1, 2) for folder in ("train_base", "test_new")]


def _sweep(tmp_path, croot, *args, env):
    cmd = [sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *PLAN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)


def _status(stdout):
    """``{job id: (status, note)}`` from --status lines."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1] != "jobs:":
            jid, _, note = parts[2].partition("  [")
            out[jid.strip()] = (parts[1], note.rstrip("]"))
    return out


@pytest.fixture
def croot(tmp_path):
    return make_config_root(str(tmp_path / "cfgroot"))


def test_option_parsing_and_waves(tmp_path, croot):
    assert [parse_minutes(t) for t in ("90", "1:30:00", "45:30", "2-00:00:00", "0:00:10")] == [90, 90, 46, 2880, 1]
    assert parse_sbatch(["qos=high", "--exclusive", "cpus-per-task=8"]) == \
        {"qos": "high", "exclusive": True, "cpus-per-task": "8"}
    with pytest.raises(ValueError, match="--sbatch '=x' is not KEY=VALUE"):
        parse_sbatch(["=x"])
    with pytest.raises(ValueError, match="--time 'soon'"):
        parse_minutes("soon")
    assert _expand_array("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"] and _expand_array("12_3") == ["12_3"]
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  config_root=croot)
    jobs = build_plan(ctx, ["base2new", "xd"], ["CoMMA"], ["caltech101", "dtd"], [1])
    w = waves(jobs)
    assert [len(x) for x in w] == [3, 4]  # 2 base2new + 1 xd training jobs, then their 4 tests
    assert all(j.deps == () for j in w[0]) and all(j.deps for j in w[1])


def test_submitit_local_failure_resubmit_status_and_commands(tmp_path, croot):
    bad = f"train_base/caltech101/shots_16/CoMMA/{CFG}/seed2"
    r = _sweep(tmp_path, croot, "--launcher", "submitit-local", "--gpus-per-job", "0", "--array-parallelism", "2",
               env=stub_env(str(tmp_path), STUB_FAIL=bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Sweep done: 2 finished, 1 failed, 1 blocked." in r.stdout
    train1, test1, train2, test2 = _ids()
    calls = read_calls(str(tmp_path))  # the two trainings (one wave, in parallel), then test 1
    assert sorted(calls[:2]) == sorted(str(tmp_path / "out" / j) for j in (train1, train2))
    assert calls[2:] == [str(tmp_path / "out" / test1)]
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    assert state[train1]["launcher"] == "submitit-local" and state[train1]["scheduler_id"].isdigit()
    assert state[train2]["status"] == "failed"
    assert state[train2]["error"] == f"RuntimeError: stub failure for {tmp_path / 'out' / train2}"
    assert state[test2]["status"] == "blocked" and "scheduler_id" not in state[test2]

    r = _sweep(tmp_path, croot, "--status", env=stub_env(str(tmp_path)))
    st = _status(r.stdout)
    assert r.returncode == 1 and {k: v[0] for k, v in st.items()} == \
        {train1: "finished", test1: "finished", train2: "failed", test2: "blocked"}
    assert "stub failure" in st[train2][1]
    assert r.stdout.strip().endswith("4 jobs: 2 finished, 1 failed, 1 blocked")

    calls_before = len(read_calls(str(tmp_path)))
    r = _sweep(tmp_path, croot, "--launcher", "submitit-local", "--gpus-per-job", "0", env=stub_env(str(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 jobs, 2 finished, 0 queued or running, 2 to submit." in r.stdout
    assert read_calls(str(tmp_path))[calls_before:] == [str(tmp_path / "out" / train2), str(tmp_path / "out" / test2)]
    r = _sweep(tmp_path, croot, "--status", env=stub_env(str(tmp_path)))
    assert r.returncode == 0 and {v[0] for v in _status(r.stdout).values()} == {"finished"}
    r = _sweep(tmp_path, croot, "--launcher", "submitit-local", env=stub_env(str(tmp_path)))
    assert r.returncode == 0 and "0 to submit" in r.stdout  # nothing left: nothing submitted

    env = stub_env(str(tmp_path))
    r = _sweep(tmp_path, croot, "--emit-commands", str(tmp_path / "cmds.sh"), env=env)
    assert r.returncode == 0 and "wrote 4 commands" in r.stdout
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  config_root=croot)
    jobs = build_plan(ctx, ["base2new"], ["CoMMA"], ["caltech101"], [1, 2])
    text = (tmp_path / "cmds.sh").read_text()
    assert "# wave 1: 2 job(s)" in text and "# wave 2: 2 job(s)" in text  # dependencies kept as waves
    lines = [ln for ln in text.splitlines() if ln.startswith("cd ")]
    by_id = {j.id: j for j in jobs}
    order = (train1, train2, test1, test2)
    assert [ln.split("  # ")[0] for ln in lines] == \
        [f"cd {shlex.quote(REPO)} && " + by_id[j].command_line(sys.executable, env["SWEEP_TRAIN_PY"]) for j in order]
    assert lines[2].endswith(f"  # needs: {train1}") and lines[3].endswith(f"  # needs: {train2}")
    outs = [shlex.split(ln)[shlex.split(ln).index("--output-dir") + 1] for ln in lines]
    assert outs == [str(tmp_path / "out" / j) for j in order]
    assert not os.path.exists(tmp_path / "out" / ".submitit" / "%j")  # no stray template folder


FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/bash
echo "$@" > "$FAKE_SLURM/sacct_args"
cat "$FAKE_SLURM/sacct_out"
"""


def _fake_slurm(tmp_path):
    d = tmp_path / "fakebin"
    d.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/bash\nexit 0\n")):
        (d / name).write_text(text)
        (d / name).chmod((d / name).stat().st_mode | stat.S_IEXEC)
    (tmp_path / "slurm").mkdir()
    return stub_env(str(tmp_path), PATH=f"{d}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM=str(tmp_path / "slurm"))


def _finish(tmp_path, croot, job_id, env):
    """Run one job's stub train.py as SLURM would have (writes its log and checkpoint)."""
    lines = subprocess.run([sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
                            "--data", str(tmp_path / "data"), *PLAN, "--emit-commands", str(tmp_path / "c.sh")],
                           capture_output=True, text=True, env=env, check=True)
    for line in (tmp_path / "c.sh").read_text().splitlines():
        if f"/{job_id} " in line + " ":
            subprocess.run(["bash", "-c", line], env=env, check=True, capture_output=True)
            return
    raise AssertionError(f"{job_id} not in the commands {lines.stdout}")


def test_slurm_arrays_dependencies_state_and_status(tmp_path, croot):
    env = _fake_slurm(tmp_path)
    slurm = tmp_path / "slurm"
    opts = ["--launcher", "slurm", "--partition", "gpu", "--account", "lab", "--time", "2:00:00",
            "--gpus-per-job", "1", "--array-parallelism", "2", "--sbatch", "qos=high", "--setup", "source env.sh"]
    r = _sweep(tmp_path, croot, *opts, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Submitted 2 job(s) as SLURM array 1001" in r.stdout and "as SLURM array 1002 after 1001" in r.stdout
    first, second = (slurm / "sbatch_1001.sh").read_text(), (slurm / "sbatch_1002.sh").read_text()
    for flag in ("--array=0-1%2", "--partition=gpu", "--account=lab", "--time=120", "--gpus-per-node=1",
                 "--qos=high", "--job-name=harness-sweep"):
        assert f"#SBATCH {flag}\n" in first and f"#SBATCH {flag}\n" in second, flag
    assert "source env.sh\n" in first and "--dependency" not in first
    assert "#SBATCH --dependency=afterany:1001\n" in second
    train1, test1, train2, test2 = _ids()
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    assert {j: state[j]["scheduler_id"] for j in (train1, train2, test1, test2)} == \
        {train1: "1001_0", train2: "1001_1", test1: "1002_0", test2: "1002_1"}
    assert all(state[j]["launcher"] == "slurm" and state[j]["status"] == "submitted" for j in state)
    # each array task runs the stored job through repro.launchers --run-job
    spec_dir = tmp_path / "out" / ".submitit" / "jobs"
    assert len(list(spec_dir.glob("*.json"))) == 4

    # the scheduler says: training 1 ran and finished, training 2 runs, the tests wait
    _finish(tmp_path, croot, train1, env)
    (slurm / "sacct_out").write_text("1001_0|COMPLETED\n1001_1|RUNNING\n1002_[0-1%2]|PENDING\n")
    r = _sweep(tmp_path, croot, "--status", env=env)
    st = _status(r.stdout)
    assert {k: v[0] for k, v in st.items()} == {train1: "finished", train2: "running", test1: "queued", test2: "queued"}
    assert st[train2][1] == "slurm 1001_1" and "1001_1" in (slurm / "sacct_args").read_text()
    assert r.stdout.strip().endswith("4 jobs: 1 finished, 1 running, 2 queued")
    # a re-run now submits nothing: queued and running jobs are not submitted twice
    r = _sweep(tmp_path, croot, *opts, env=env)
    assert r.returncode == 0 and "1 finished, 3 queued or running, 0 to submit" in r.stdout
    assert not (slurm / "sbatch_1003.sh").exists()

    # training 2 fails, its test is cancelled; test 1 finishes
    _finish(tmp_path, croot, test1, env)
    (slurm / "sacct_out").write_text("1001_1|FAILED\n1002_0|COMPLETED\n1002_1|CANCELLED by 0\n")
    st = _status(_sweep(tmp_path, croot, "--status", env=env).stdout)
    assert {k: v[0] for k, v in st.items()} == {train1: "finished", test1: "finished", train2: "failed",
                                                test2: "failed"}
    assert st[train2][1] == "slurm 1001_1 FAILED" and st[test2][1] == "slurm 1002_1 CANCELLED"
    r = _sweep(tmp_path, croot, *opts, env=env)  # resubmits the failed two, the test after its training
    assert r.returncode == 0 and "2 finished, 0 queued or running, 2 to submit" in r.stdout
    assert "--dependency" not in (slurm / "sbatch_1003.sh").read_text()
    assert "#SBATCH --dependency=afterany:1003\n" in (slurm / "sbatch_1004.sh").read_text()
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    assert state[train2]["scheduler_id"] == "1003" and state[test2]["scheduler_id"] == "1004"
    assert state[train2]["attempts"] == 2 and state[train1]["attempts"] == 1


TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.PREC", "fp32", "DATALOADER.NUM_WORKERS", "0",
        "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "40",
        "TRAIN.PRINT_FREQ", "1"]


@pytest.mark.skipif(not os.path.exists(os.path.join(REPO, "configs", "datasets", "shapes.yaml")),
                    reason="Shapes dataset config not present")
@pytest.mark.slow
def test_real_tiny_plan_runs_to_the_paper_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    out = tmp_path / "out"
    plan = [sys.executable, SWEEP, "--protocol", "base2new", "--methods", "CoOp", "--datasets", "shapes",
            "--seeds", "1", "2", "--output-root", str(out), "--data", str(tmp_path / "data")]
    launch = ["--launcher", "submitit-local", "--gpus-per-job", "0", "--array-parallelism", "2"]
    r = subprocess.run(plan + launch + TINY, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Sweep done: 4 finished, 0 failed, 0 blocked." in r.stdout
    r = subprocess.run(plan + ["--status"] + TINY, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("4 jobs: 4 finished")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out),
                        "--format", "json", "--plot", str(tmp_path / "plots")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cell = json.loads(r.stdout)["base2new"]["methods"]["CoOp"]["datasets"]["shapes"]
    assert cell["base"]["missing"] == 0 and cell["novel"]["missing"] == 0
    assert sorted(cell["base"]["seeds"]) == sorted(cell["novel"]["seeds"]) == ["1", "2"]
    assert cell["hm"] is not None
    train = out / "base2new/train_base/shapes/shots_2/CoOp/vit_b16_ctxv1"
    assert all(len(list((train / f"seed{s}" / "tensorboard").glob("events.out.tfevents.*"))) == 1 for s in (1, 2))
    assert (tmp_path / "plots" / "curves_base2new_shapes_CoOp_vit_b16_ctxv1_2shots.png").is_file()
