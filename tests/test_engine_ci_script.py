"""``scripts/test.sh`` (what ``.ci/run`` calls): pass-through of pytest's status, "no tests" is a failure."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args):
    env = dict(os.environ, HARNESS_SKIP_INSTALL="1")
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "test.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_no_tests_collected_fails():
    proc = run_script("tests/test_engine_registry.py", "-k", "no_test_has_this_name")
    assert proc.returncode == 1
    assert "error: pytest collected no tests" in proc.stderr


def test_passing_selection_exits_0():
    proc = run_script("tests/test_engine_registry.py", "-k", "empty_registry_message")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_ci_run_calls_the_test_script():
    text = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "bash scripts/test.sh" in text
    assert os.access(os.path.join(REPO, ".ci", "run"), os.X_OK)
