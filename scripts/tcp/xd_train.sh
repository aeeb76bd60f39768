#!/usr/bin/env bash
# TCP: train on ImageNet (all classes, 16 shots, cross-dataset config) for xd and dg.
# usage: bash scripts/tcp/xd_train.sh [DATASET] SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp xd_train "$@"
