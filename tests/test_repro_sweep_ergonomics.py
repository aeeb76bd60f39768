"""Sweep ergonomics: --opts-for gives one method's jobs their own opts, --status alone finds the plan
of the last sweep on disk, one vocabulary for job states, [k/N] progress lines with an ETA, and the
paper table printed when the sweep ends."""
import os
import re
import subprocess
import sys

from repro.plan import Context, build_plan
from repro.runner import Progress
from fixtures_repro import make_config_root, read_calls, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")


def _sweep(tmp_path, croot, *args, env=None):
    cmd = [sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or stub_env(str(tmp_path)), cwd=REPO,
                          timeout=600)


def test_opts_for_one_method(tmp_path):
    croot = make_config_root(str(tmp_path / "cfg"))
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  opts=["OPTIM.MAX_EPOCH", "3"], config_root=croot, opts_for={"coop": ["OPTIM.MAX_EPOCH", "7"]})
    jobs = {(j.trainer, j.kind): j for j in build_plan(ctx, ["base2new"], ["CoOp", "CoMMA"], ["dtd"], [1])}
    coop_train, coop_test = jobs[("CoOp", "base2new_train")], jobs[("CoOp", "base2new_test")]
    assert coop_train.args[-4:] == ["OPTIM.MAX_EPOCH", "3", "OPTIM.MAX_EPOCH", "7"] and coop_test.load_epoch == 7
    assert jobs[("CoMMA", "base2new_train")].args[-2:] == ["OPTIM.MAX_EPOCH", "3"]
    assert jobs[("CoMMA", "base2new_test")].load_epoch == 3
    r = _sweep(tmp_path, croot, "--protocol", "base2new", "--methods", "CoOp", "CoMMA", "--datasets", "dtd",
               "--seeds", "1", "--opts-for", "CoOp", "OPTIM.MAX_EPOCH", "7", "--dry-run", "--", "OPTIM.MAX_EPOCH", "3")
    assert r.returncode == 0, r.stderr
    coop_line = [ln for ln in r.stdout.splitlines() if "--trainer CoOp" in ln and "--eval-only" not in ln][0]
    assert coop_line.endswith("OPTIM.MAX_EPOCH 3 OPTIM.MAX_EPOCH 7")
    r = _sweep(tmp_path, croot, "--protocol", "base2new", "--methods", "CoOp", "--opts-for", "Nope", "A.B", "1",
               "--dry-run")
    assert r.returncode == 2 and r.stderr.startswith("ERROR: --opts-for:")


def test_status_alone_progress_vocabulary_and_final_table(tmp_path):
    croot = make_config_root(str(tmp_path / "cfg"))
    plan = ["--protocol", "base2new", "--methods", "CoMMA", "--datasets", "dtd", "--seeds", "1", "2"]
    r = _sweep(tmp_path, croot, *plan)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    starts = [ln for ln in lines if " START " in ln]
    assert [ln.split()[0] for ln in starts] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    done = [ln for ln in lines if " DONE " in ln]
    assert len(done) == 4 and re.search(r", ETA \d+:\d\d:\d\d for 3 more$", done[0]), done[0]
    assert "## Base-to-novel generalization" in r.stdout and "| CoMMA" in r.stdout  # the table at the end
    assert len(read_calls(str(tmp_path))) == 4
    # --status without the plan options: the saved plan, finished, in the words --dry-run uses
    r = subprocess.run([sys.executable, SWEEP, "--output-root", str(tmp_path / "out"), "--status"],
                       capture_output=True, text=True, env=stub_env(str(tmp_path)), cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sweep_plan.json" in r.stdout and r.stdout.strip().endswith("4 jobs: 4 finished")
    r = _sweep(tmp_path, croot, *plan, "--dry-run")
    assert "4 jobs: 4 finished, 0 pending, 0 blocked" in r.stdout


def test_progress_eta():
    p = Progress(4, slots=2)
    assert p.started() == "[1/4]" and p.started() == "[2/4]"
    assert p.eta() == ""
    p.ended(60.0)
    assert p.eta() == ", ETA 0:01:30 for 3 more"  # 60 s a job, 3 left, 2 at a time
