#!/usr/bin/env bash
# TCP: load the last epoch of the base2new_train run, test on the novel classes.
# usage: bash scripts/tcp/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp base2new_test "$@"
