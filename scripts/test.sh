#!/usr/bin/env bash
# Install the requirements (idempotent, quiet) and run the whole test suite on CPU.
# Usage: bash scripts/test.sh                 -> python -m pytest -q tests
#        bash scripts/test.sh tests/test_x.py  -> python -m pytest -q tests/test_x.py (args replace "tests")
# HARNESS_SKIP_INSTALL=1 skips the install step. pytest's "no tests collected" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

bash scripts/install.sh

set +e
if [ "$#" -eq 0 ]; then
    set -- tests
fi
"$PYTHON" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
