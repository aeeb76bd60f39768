#!/usr/bin/env bash
# CoOp's few-shot script under its official name and argument order (seeds 1, 2, 3).
# usage: bash scripts/coop/main.sh DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]
#   e.g. bash scripts/coop/main.sh caltech101 vit_b16_ep50 end 16 1 False
# Output: $OUTPUT_ROOT/DATASET/CoOp/CFG_SHOTSshots/nctxNCTX_cscCSC_ctpCTP/seedN (the CoOp layout).
# Env: DATA (default ./data), OUTPUT_ROOT (default output). Finished runs are skipped, half-finished
# ones resume (the official script skips any existing folder). See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job coop coop_main "$@"
