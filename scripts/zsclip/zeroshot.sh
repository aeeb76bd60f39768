#!/usr/bin/env bash
# Zero-shot CLIP on any dataset (all classes, test split), CoOp's zeroshot.sh.
# usage: bash scripts/zsclip/zeroshot.sh DATASET CFG [KEY VALUE ...]   (CFG: a CoOp config, e.g. vit_b16)
# Output: $OUTPUT_ROOT/ZeroshotCLIP/CFG/DATASET. Add DATASET.SUBSAMPLE_CLASSES base|new for base/novel.
# Env: DATA (default ./data), OUTPUT_ROOT (default output). A finished run is skipped. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job zsclip zeroshot "$@"
