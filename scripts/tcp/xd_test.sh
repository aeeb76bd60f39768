#!/usr/bin/env bash
# TCP: evaluate the ImageNet-trained model on a cross-dataset or domain-generalisation target.
# usage: bash scripts/tcp/xd_test.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp xd_test "$@"
