#!/usr/bin/env bash
# TCP: train on the base classes (16 shots), then test on base.
# usage: bash scripts/tcp/base2new_train.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp base2new_train "$@"
