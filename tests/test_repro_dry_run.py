"""``tools/sweep.py --dry-run`` prints every job's train.py command line; pasted, it is exactly what the
sweep runs. Every job carries its method's official precision (VPT fp32) and, with
``--upstream-numerics``, ``UPSTREAM_NUMERICS True``; both reach the effective config of the run."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from engine.runs import record
from repro.methods import METHODS
from repro.plan import Context, build_plan, cfg_node, make_job
from fixtures_repro import make_config_root, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")

# wraps the stub train.py: appends [interpreter, script, *args] to $ARGV_LOG, then runs the stub
RECORDER = """
import json, os, runpy, sys
with open(os.environ["ARGV_LOG"], "a") as f:
    f.write(json.dumps([sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]) + "\\n")
stub = os.environ["INNER_STUB"]
sys.argv[0] = stub
runpy.run_path(stub, run_name="__main__")
"""


@pytest.fixture
def croot(tmp_path):
    return make_config_root(str(tmp_path / "cfgroot"))


def _env(tmp_path):
    env = stub_env(str(tmp_path))
    rec = tmp_path / "recorder.py"
    rec.write_text(RECORDER)
    env.update(INNER_STUB=env["SWEEP_TRAIN_PY"], SWEEP_TRAIN_PY=str(rec), ARGV_LOG=str(tmp_path / "argv.jsonl"))
    return env


def _sweep(tmp_path, croot, *args, env):
    cmd = [sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)


def _printed_commands(stdout):
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith("       ")]


def test_dry_run_commands_equal_what_the_sweep_runs(tmp_path, croot):
    env = _env(tmp_path)
    args = ["--protocol", "base2new", "xd", "--methods", "VPT", "CoMMA", "--datasets", "dtd", "--seeds", "1",
            "--", "OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", "(32, 32)"]
    d = _sweep(tmp_path, croot, "--dry-run", *args, env=env)
    assert d.returncode == 0, d.stderr
    printed = _printed_commands(d.stdout)
    assert len(printed) == 2 * (2 + 2)  # per method: b2n train+test, xd train + dtd target
    assert d.stdout.splitlines()[0] == f"# commands run in {REPO}"
    assert not (tmp_path / "argv.jsonl").exists()  # a dry run runs nothing
    r = _sweep(tmp_path, croot, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ran = [json.loads(x) for x in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert ran == printed  # same argument lists, same order (one job at a time)
    assert ["INPUT.SIZE", "(32, 32)"] == printed[0][-2:]  # a value with a space survives the quoting
    vpt = [c for c in printed if c[c.index("--trainer") + 1] == "VPT"]
    assert vpt and all(c[c.index("TRAINER.VPT.PREC") + 1] == "fp32" for c in vpt)


def test_every_method_passes_its_official_precision(tmp_path, croot):
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  config_root=croot)
    jobs = build_plan(ctx, ["all", "fewshot"], ["all"], ["dtd"], [1], shots=[1])
    assert {j.method for j in jobs} == {k for k in METHODS}
    for job in jobs:
        spec = METHODS[job.method]
        key = f"TRAINER.{cfg_node(spec)}.PREC"
        assert job.args.count(key) == 1 and job.args[job.args.index(key) + 1] == spec.prec
        assert not any("UPSTREAM_NUMERICS" in a for a in job.args)
    assert METHODS["vpt"].prec == "fp32"
    # the key exists in the trainer's config node and reaches the effective settings; the user's
    # opts still win (yacs: last wins)
    ctx.config_root = None
    vpt = make_job(ctx, "vpt", "base2new_train", "shapes", 1)
    assert record.requested_settings(vpt.args, REPO)["TRAINER.VPT.PREC"] == "fp32"
    ctx.opts = ["TRAINER.VPT.PREC", "fp16"]
    assert record.requested_settings(make_job(ctx, "vpt", "base2new_train", "shapes", 1).args,
                                     REPO)["TRAINER.VPT.PREC"] == "fp16"


def test_upstream_numerics_flag(tmp_path, croot):
    env = _env(tmp_path)
    d = _sweep(tmp_path, croot, "--dry-run", "--upstream-numerics", "--protocol", "base2new", "--methods", "MaPLe",
               "--datasets", "dtd", "--seeds", "2", env=env)
    assert d.returncode == 0, d.stderr
    printed = _printed_commands(d.stdout)
    assert len(printed) == 2
    for cmd in printed:
        i = cmd.index("TRAINER.MAPLE.UPSTREAM_NUMERICS")
        assert cmd[i + 1] == "True" and cmd[cmd.index("TRAINER.MAPLE.PREC") + 1] == "fp16"
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "o"), data_root=str(tmp_path / "d"),
                  upstream_numerics=True)
    job = make_job(ctx, "comma", "base2new_train", "shapes", 1)
    assert record.requested_settings(job.args, REPO)["TRAINER.COMMA.UPSTREAM_NUMERICS"] is True
