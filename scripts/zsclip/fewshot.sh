#!/usr/bin/env bash
# Zero-shot CLIP: evaluate zero-shot CLIP on all classes (nothing is trained: SHOTS is accepted for symmetry and the run goes to shots_0).
# usage: bash scripts/zsclip/fewshot.sh DATASET SEED SHOTS [KEY VALUE ...]   (SHOTS: 1, 2, 4, 8, 16)
# Output: $OUTPUT_ROOT/fewshot/DATASET/shots_SHOTS/<trainer>/<cfg>/seedSEED. Env: DATA (default ./data),
# OUTPUT_ROOT (default output), CFG. Finished runs are skipped, half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job zsclip fewshot "$@"
