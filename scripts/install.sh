#!/usr/bin/env bash
# Install this harness's dependencies into the current Python (idempotent, quiet), at the versions CI
# tested: requirements.txt's ranges constrained by requirements-lock.txt (pip install -c).
# torch/torchvision are installed at the tested versions only when torch is missing; an existing
# torch (e.g. a CUDA build matching your driver) is kept.
# Env: PYTHON (interpreter, default python), HARNESS_SKIP_INSTALL=1 (skip everything),
#      HARNESS_NO_LOCK=1 (newest versions requirements.txt allows, no lock: what scripts/test_latest.sh does).
# The lock is for the Python version in its "# python X.Y" line; another Python installs without it (says so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
[ "${HARNESS_SKIP_INSTALL:-0}" = "1" ] && exit 0
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore)
LOCK=requirements-lock.txt
CONSTRAINTS=()
if [ "${HARNESS_NO_LOCK:-0}" != "1" ]; then
    lock_py="$(sed -n 's/^# python \([0-9.]*\)$/\1/p' "$LOCK")"
    py="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$lock_py" = "$py" ]; then
        CONSTRAINTS=(-c "$LOCK")
    else
        echo "note: $LOCK pins the versions tested with Python $lock_py; this is Python $py," \
             "so the newest versions requirements.txt allows are installed instead" >&2
    fi
fi
if ! "$PYTHON" -c "import torch, torchvision" >/dev/null 2>&1; then
    "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
fi
# setuptools first: openai-clip is an sdist built with the environment's setuptools (<81 keeps
# pkg_resources, which clip imports at run time; >=70.1 builds wheels without the `wheel` package).
"${PIP[@]}" ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} "setuptools>=70.1,<81"
"${PIP[@]}" ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} --no-build-isolation -r requirements.txt
