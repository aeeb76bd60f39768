#!/usr/bin/env bash
# Drift check: a fresh virtual environment with the NEWEST versions requirements.txt allows (no lock),
# then the test suite there in random order. What a user who ignores requirements-lock.txt gets;
# .ci/run runs it so that a new release that breaks the suite shows up in CI first.
# Usage: bash scripts/test_latest.sh [pytest args]   (default: tests)
# Env: PYTHON (interpreter the venv is made from), HARNESS_LATEST_VENV (venv folder; default a temporary
#      one, removed afterwards), HARNESS_TEST_SEED (default random).
# torch/torchvision: installed at the tested versions (scripts/install.sh), as on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BASE_PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -n "${HARNESS_LATEST_VENV:-}" ]; then
    VENV="$HARNESS_LATEST_VENV"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    VENV="$tmp/venv"
fi
start=$SECONDS
"$BASE_PYTHON" -m venv "$VENV"
PYTHON="$VENV/bin/python" HARNESS_NO_LOCK=1 bash scripts/install.sh
echo "newest allowed versions installed in $((SECONDS - start)) s; differences from requirements-lock.txt:"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import re

def canon(n):
    return re.sub(r"[-_.]+", "-", n).lower()

diff = []
for line in open("requirements-lock.txt", encoding="utf-8"):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name, pinned = line.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = "absent"
    if have != pinned:
        diff.append(f"{name} {have} (lock {pinned})")
print("  " + (", ".join(diff) if diff else "none"))
PY
if [ "$#" -eq 0 ]; then
    set -- -p no:cacheprovider tests
fi
PYTHON="$VENV/bin/python" HARNESS_SKIP_INSTALL=1 HARNESS_TEST_SEED="${HARNESS_TEST_SEED:-random}" \
    bash scripts/test.sh "$@"
