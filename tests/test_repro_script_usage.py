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
