#!/usr/bin/env bash
# Install this harness's dependencies into the current Python (idempotent, quiet).
# torch/torchvision are installed at the tested versions only when torch is missing; an existing
# torch (e.g. a CUDA build matching your driver) is kept. HARNESS_SKIP_INSTALL=1 skips everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
[ "${HARNESS_SKIP_INSTALL:-0}" = "1" ] && exit 0
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore)
if ! "$PYTHON" -c "import torch, torchvision" >/dev/null 2>&1; then
    "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
fi
# setuptools first: openai-clip is an sdist built with the environment's setuptools (<81 keeps
# pkg_resources, which clip imports at run time; >=70.1 builds wheels without the `wheel` package).
"${PIP[@]}" "setuptools>=70.1,<81"
"${PIP[@]}" --no-build-isolation -r requirements.txt
