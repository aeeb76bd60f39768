"""tools/freeze_requirements.py: the lock holds the installed closure of requirements.txt, torch's own
dependencies excluded, and --check tells a stale lock from a current one."""
import importlib.metadata as md
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "freeze_requirements.py")


def _pins(text):
    return dict(ln.split("==") for ln in text.splitlines() if ln and not ln.startswith("#"))


def test_lock_is_the_installed_closure_without_torch(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# comment\ntorch>=2.4  # kept as installed\npytest\n")
    lock = tmp_path / "lock.txt"
    proc = subprocess.run([sys.executable, TOOL, "--requirements", str(reqs), "--output", str(lock)],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"wrote {lock}"
    text = lock.read_text()
    assert f"# python {sys.version_info[0]}.{sys.version_info[1]}" in text.splitlines()
    pins = _pins(text)
    assert pins["pytest"] == md.version("pytest") and pins["pluggy"] == md.version("pluggy")
    assert "torch" not in pins and "sympy" not in pins and "filelock" not in pins  # torch's own deps
    assert list(pins) == sorted(pins, key=str.lower)
    check = [sys.executable, TOOL, "--requirements", str(reqs), "--output", str(lock), "--check"]
    assert subprocess.run(check, capture_output=True, text=True).returncode == 0
    lock.write_text(text.replace(f"pytest=={pins['pytest']}", "pytest==0.0.1"))
    proc = subprocess.run(check, capture_output=True, text=True)
    assert proc.returncode == 1 and "differs from the installed versions" in proc.stdout


def test_missing_package_is_one_line_error(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("no-such-package-for-this-test\n")
    proc = subprocess.run([sys.executable, TOOL, "--requirements", str(reqs), "--output", str(tmp_path / "l")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith(
        "error: no-such-package-for-this-test (needed by requirements.txt) is not installed in")
