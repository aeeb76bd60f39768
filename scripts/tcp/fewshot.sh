#!/usr/bin/env bash
# TCP: train on all classes with SHOTS images per class (CoOp's few-shot protocol), then test.
# usage: bash scripts/tcp/fewshot.sh DATASET SEED SHOTS [KEY VALUE ...]   (SHOTS: 1, 2, 4, 8, 16)
# Output: $OUTPUT_ROOT/fewshot/DATASET/shots_SHOTS/<trainer>/<cfg>/seedSEED. Env: DATA (default ./data),
# OUTPUT_ROOT (default output), CFG. Finished runs are skipped, half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp fewshot "$@"
