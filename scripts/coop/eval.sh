#!/usr/bin/env bash
# CoOp's cross-dataset evaluation under its official name: load the ImageNet model of
# main.sh imagenet CFG end 16 16 False (seeds 1, 2, 3) and test it on DATASET (all classes).
# usage: bash scripts/coop/eval.sh DATASET CFG [KEY VALUE ...]
# Output: $OUTPUT_ROOT/evaluation/CoOp/CFG_16shots/nctx16_cscFalse_ctpend/DATASET/seedN; the epoch
# loaded is CFG's OPTIM.MAX_EPOCH (the official script always asks for 50). See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job coop coop_eval "$@"
