#!/usr/bin/env bash
# Quick start: install, then COMMA base-to-novel on the Shapes demo dataset with the official config
# (vit_b16_c2_ep5_batch4_2ctx): train on the 5 base classes (16 shots, 5 epochs), test on base and
# on the 5 novel classes, print Base / Novel / HM. Uses the real ViT-B/16 weights when they are in
# the CLIP cache (~/.cache/clip or $CLIP_CACHE_DIR) or downloadable; otherwise says so and runs with
# random weights (a smoke run: the numbers are then meaningless).
# Env: DATA (default ./data), OUTPUT_ROOT (default output/quickstart). Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
bash scripts/install.sh
export DATA="${DATA:-./data}" OUTPUT_ROOT="${OUTPUT_ROOT:-output/quickstart}"

EXTRA=()
CHECK='
import sys
from engine.backbone.weights import BackboneWeightsNotFound, locate_weights
try:
    print(locate_weights("ViT-B/16"))
except BackboneWeightsNotFound as err:
    sys.exit(str(err))
'
if WEIGHTS_MSG=$("$PYTHON" -c "$CHECK" 2>&1); then
    echo "Using the real CLIP ViT-B/16 weights: $WEIGHTS_MSG"
else
    echo "=================================================================================="
    echo "No CLIP ViT-B/16 weights found or downloadable:"
    echo "  ${WEIGHTS_MSG##*$'\n'}"
    echo "Running with RANDOM weights instead: this checks the pipeline end to end, but the"
    echo "accuracies below are meaningless. Put ViT-B-16.pt in ~/.cache/clip to get real numbers."
    echo "=================================================================================="
    EXTRA=(MODEL.BACKBONE.RANDOM_INIT True)
fi

bash scripts/comma/base2new_train.sh shapes 1 "${EXTRA[@]}"
bash scripts/comma/base2new_test.sh shapes 1 "${EXTRA[@]}"
"$PYTHON" tools/collect_results.py "$OUTPUT_ROOT" --datasets shapes
