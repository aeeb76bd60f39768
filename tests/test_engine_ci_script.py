"""``scripts/test.sh`` (what ``.ci/run`` calls): pass-through of pytest's status, "no tests" is a failure;
random order with a printed seed; ``scripts/install.sh`` installs with the lock; ``.ci/run``'s steps."""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_TEST_SEED"}
    env.update(HARNESS_SKIP_INSTALL="1", **(env_extra or {}))
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


def test_ci_run_checks_random_order_without_shared_and_newest_versions():
    text = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    steps = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    first = next(i for i, ln in enumerate(steps) if "bash scripts/" in ln and not ln.startswith("step "))
    # the README's command, first, over the whole suite (slow tests included) in a fresh random order
    assert steps[first] == "HARNESS_TEST_SEED=random bash scripts/test.sh"
    random_step = next(ln for ln in steps if "HARNESS_TEST_SEED=random" in ln and "test_latest" in ln)
    assert 'cd "$work/main"' in random_step and "-p no:cacheprovider" in random_step
    assert "bash scripts/test_latest.sh" in random_step and '-m "not slow"' in random_step
    assert "git ls-files -co --exclude-standard" in text and '[ ! -e "$work/shared" ]' in text
    for script in (".ci/run", "scripts/test.sh", "scripts/install.sh", "scripts/test_latest.sh"):
        proc = subprocess.run(["bash", "-n", os.path.join(REPO, script)], capture_output=True, text=True)
        assert proc.returncode == 0, script + proc.stderr


def test_ci_run_lints_with_ruff_after_the_tests(tmp_path):
    text = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    steps = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    tests_step = next(i for i, step in enumerate(steps) if step.endswith("bash scripts/test.sh"))
    assert steps.index('"$PYTHON" -m ruff check .') > tests_step
    assert os.path.isfile(os.path.join(REPO, "ruff.toml"))
    if subprocess.run(["python", "-m", "ruff", "--version"], capture_output=True).returncode != 0:
        pytest.skip("ruff is not installed (bash scripts/install.sh)")
    # the project's config: an unused import (pyflakes) and a line over 120 characters fail, 120 pass
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n" + "x = '" + "a" * 114 + "'\n" + "y = '" + "b" * 115 + "'\n")
    proc = subprocess.run(["python", "-m", "ruff", "check", "--config", os.path.join(REPO, "ruff.toml"),
                           "--output-format", "concise", "--no-cache", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    found = sorted(re.findall(r"bad\.py:(\d+):\d+: (\w+)", proc.stdout))
    assert found == [("1", "F401"), ("3", "E501")], proc.stdout


def _test_order(proc):
    return [ln.split(" ")[0] for ln in proc.stdout.splitlines() if ln.startswith("tests/") and "PASSED" in ln]


@pytest.mark.slow
def test_random_order_prints_its_seed_and_replays():
    pytest.importorskip("pytest_randomly")
    target = ["tests/test_engine_registry.py", "-vv", "-p", "no:cacheprovider"]
    file_order = _test_order(run_script(*target))
    assert len(file_order) >= 5
    first = run_script(*target, env_extra={"HARNESS_TEST_SEED": "5"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[0] == \
        "test order: random, seed 5 (replay: HARNESS_TEST_SEED=5 bash scripts/test.sh)"
    assert sorted(_test_order(first)) == sorted(file_order) and _test_order(first) != file_order
    assert _test_order(run_script(*target, env_extra={"HARNESS_TEST_SEED": "5"})) == _test_order(first)
    fresh = run_script(*target, env_extra={"HARNESS_TEST_SEED": "random"})
    assert re.match(r"test order: random, seed \d+ \(replay", fresh.stdout.splitlines()[0])


def test_bad_test_seed_is_one_line_error():
    proc = run_script("tests/test_engine_registry.py", env_extra={"HARNESS_TEST_SEED": "soon"})
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: HARNESS_TEST_SEED must be 'random' or a non-negative integer, got 'soon'"


FAKE_PYTHON = """#!/usr/bin/env bash
# records every call; answers the version query with $FAKE_PY_VERSION; 'import torch' fails when FAKE_NO_TORCH=1
echo "$*" >> "$FAKE_CALLS"
case "$*" in
  *"import torch, torchvision"*) [ "${FAKE_NO_TORCH:-0}" = 1 ] && exit 1 ;;
  *"sys.version_info"*) echo "$FAKE_PY_VERSION" ;;
esac
exit 0
"""


def _install_calls(tmp_path, **env_extra):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    lock_py = re.search(r"^# python (\S+)$", open(os.path.join(REPO, "requirements-lock.txt")).read(), re.M).group(1)
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_SKIP_INSTALL", "HARNESS_NO_LOCK")}
    env.update(PYTHON=str(fake), FAKE_CALLS=str(calls), FAKE_PY_VERSION=lock_py)
    env.update(env_extra)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "install.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pip = [ln for ln in calls.read_text().splitlines() if ln.startswith("-m pip install")]
    return pip, proc.stderr


def test_install_uses_the_lock_and_keeps_an_existing_torch(tmp_path):
    pip, err = _install_calls(tmp_path)
    assert len(pip) == 2 and err == ""  # torch present: not touched
    assert all("-c requirements-lock.txt" in ln for ln in pip)
    assert pip[1].endswith("-c requirements-lock.txt --no-build-isolation -r requirements.txt")
    (tmp_path / "a").mkdir()
    pip, _ = _install_calls(tmp_path / "a", FAKE_NO_TORCH="1")
    assert pip[0].endswith("install -q --disable-pip-version-check --root-user-action=ignore "
                           "torch==2.14.1 torchvision==0.29.1")


def test_install_without_lock_for_newest_versions_or_another_python(tmp_path):
    pip, err = _install_calls(tmp_path, HARNESS_NO_LOCK="1")
    assert len(pip) == 2 and not any("-c " in ln for ln in pip) and err == ""
    (tmp_path / "b").mkdir()
    pip, err = _install_calls(tmp_path / "b", FAKE_PY_VERSION="3.99")
    assert not any("-c " in ln for ln in pip)
    assert "this is Python 3.99, so the newest versions requirements.txt allows are installed instead" in err


def test_lock_pins_every_requirement_within_its_range():
    from packaging.requirements import Requirement

    pins = {}
    for line in open(os.path.join(REPO, "requirements-lock.txt"), encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    reqs = [Requirement(ln.split("#", 1)[0].strip()) for ln in open(os.path.join(REPO, "requirements.txt"))
            if ln.split("#", 1)[0].strip()]
    names = {re.sub(r"[-_.]+", "-", r.name).lower() for r in reqs}
    assert {"pytest", "pytest-randomly", "numpy", "yacs", "openai-clip"} <= names
    for req in reqs:
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in ("torch", "torchvision"):
            assert key not in pins  # install.sh keeps an existing torch
            continue
        assert key in pins, f"{req.name} is not pinned in requirements-lock.txt"
        assert req.specifier.contains(pins[key], prereleases=True), f"{req.name}=={pins[key]} outside {req.specifier}"
