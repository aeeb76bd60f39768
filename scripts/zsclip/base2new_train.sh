#!/usr/bin/env bash
# ZeroshotCLIP: evaluate zero-shot CLIP on the base classes (no training).
# usage: bash scripts/zsclip/base2new_train.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job zsclip base2new_train "$@"
