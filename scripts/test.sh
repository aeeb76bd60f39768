#!/usr/bin/env bash
# Install the requirements (idempotent, quiet; scripts/install.sh) and run the whole test suite on CPU.
# Usage: bash scripts/test.sh                 -> python -m pytest -q tests
#        bash scripts/test.sh tests/test_x.py  -> python -m pytest -q tests/test_x.py (args replace "tests")
# Test order: file order by default. HARNESS_TEST_SEED=random shuffles it (pytest-randomly) with a fresh
# seed, printed first; HARNESS_TEST_SEED=N replays the order of seed N.
# HARNESS_SKIP_INSTALL=1 skips the install step. pytest's "no tests collected" (exit 5) is a failure.
# The behaviour tests pretrain the demo's tiny CLIP (a few minutes) once into HARNESS_TINY_CLIP_CACHE
# (default output/tiny-clip-cache; content-addressed by recipe, so later runs reuse it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

bash scripts/install.sh
export HARNESS_TINY_CLIP_CACHE="${HARNESS_TINY_CLIP_CACHE:-$PWD/output/tiny-clip-cache}"

ORDER=(-p no:randomly)
seed="${HARNESS_TEST_SEED:-}"
if [ -n "$seed" ]; then
    if ! "$PYTHON" -c "import pytest_randomly" >/dev/null 2>&1; then
        echo "error: HARNESS_TEST_SEED needs pytest-randomly; run bash scripts/install.sh" >&2
        exit 1
    fi
    if [ "$seed" = "random" ]; then
        seed="$(( (RANDOM << 15) | RANDOM ))"
    elif ! [[ "$seed" =~ ^[0-9]+$ ]]; then
        echo "error: HARNESS_TEST_SEED must be 'random' or a non-negative integer, got '$seed'" >&2
        exit 1
    fi
    echo "test order: random, seed $seed (replay: HARNESS_TEST_SEED=$seed bash scripts/test.sh)"
    ORDER=(-p randomly "--randomly-seed=$seed")
fi

set +e
if [ "$#" -eq 0 ]; then
    set -- tests
fi
"$PYTHON" -m pytest -q "${ORDER[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
