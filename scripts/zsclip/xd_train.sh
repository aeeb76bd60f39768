#!/usr/bin/env bash
# ZeroshotCLIP: evaluate zero-shot CLIP on the xd source (ImageNet, all classes).
# usage: bash scripts/zsclip/xd_train.sh [DATASET] SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job zsclip xd_train "$@"
