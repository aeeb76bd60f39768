#!/usr/bin/env bash
# Quick start (offline, CPU; target under 10 minutes on 2 cores, see docs/DEMO.md): install, generate the demo dataset,
# pretrain a tiny CLIP on drawn filled shapes (once; cached), then base-to-novel on ShapeSketches (the same ten
# shapes drawn as outlines, a style the tiny CLIP never saw), seed 1 unless --seeds, 16 shots: zero-shot CLIP,
# CoOp, MaPLe and CoMMA with their official configs, and the Base / Novel / HM table.
# Changed for the tiny CLIP (printed when it runs): INPUT.SIZE (32, 32) (its image size); INPUT.RRCROP_SCALE
# (0.5, 1.0) (official 0.08-1: at 32 px many such crops lose the shape); MaPLe/CoMMA PROMPT_DEPTH 4 (its 4
# blocks, official 9) and OPTIM.MAX_EPOCH 20 (official 5 = 100 steps here); PREC fp32 (official fp16, which runs
# the same fp16 arithmetic on a CPU as on a GPU, but slowly on CPUs without fp16 units). Everything else:
# official configs.
# usage: bash scripts/quickstart.sh [--dataset shape_sketches|shapes] [--no-pretrain] [--seeds "1 2 3"]
#   --dataset NAME  shape_sketches (default: a domain gap, as ImageNet-Sketch is for CLIP) or shapes (the
#                   pretraining's own style: no gap, zero-shot is already hard to beat)
#   --no-pretrain   random weights instead (the 3-block ViT-Tiny/16 test architecture, PROMPT_DEPTH 3):
#                   checks the pipeline end to end; the accuracies are then meaningless.
#   --seeds LIST    seeds of the four methods (default "1"); the table shows mean ± std over them.
# Env: DATA (default ./data), OUTPUT_ROOT (default output/quickstart), CLIP_CACHE_DIR (where the tiny
# CLIP is cached, default ~/.cache/clip), HARNESS_SKIP_INSTALL=1 (skip the install step).
# Re-running skips finished work (data, pretraining and every finished run). See docs/DEMO.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
PRETRAIN=1
SEEDS="1"
DATASET=shape_sketches
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-pretrain) PRETRAIN=0 ;;
        --dataset)
            [[ $# -ge 2 && ( "$2" == shape_sketches || "$2" == shapes ) ]] || { echo "error: --dataset expects shape_sketches or shapes, got '${2:-}'" >&2; exit 2; }
            DATASET="$2"; shift ;;
        --seeds)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+( [0-9]+)*$ ]] || { echo "error: --seeds expects a list like \"1 2 3\", got '${2:-}'" >&2; exit 2; }
            SEEDS="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (expected --dataset NAME, --no-pretrain or --seeds LIST)" >&2; exit 2 ;;
    esac
    shift
done

T_ALL=$SECONDS
STAGES=()
stage() {  # stage NAME COMMAND...: run, print and record the elapsed time
    local name="$1" t0=$SECONDS
    shift
    echo
    echo "==> [$name] $*"
    "$@"
    local dt=$((SECONDS - t0))
    STAGES+=("$(printf '%-22s %4d s' "$name" "$dt")")
    echo "==> [$name] done in ${dt} s"
}

if [[ "${HARNESS_SKIP_INSTALL:-0}" == "1" ]]; then
    echo "==> [install] skipped (HARNESS_SKIP_INSTALL=1)"
else
    stage install bash scripts/install.sh
fi
export DATA="${DATA:-./data}"
stage data "$PYTHON" -c "import sys; from demo.shapes import ensure_$DATASET as ensure; print('dataset:', ensure(sys.argv[1]))" "$DATA"

if [[ "$PRETRAIN" == "1" ]]; then
    pretrain_out=$(mktemp)
    stage pretraining bash -c 'set -o pipefail; "$1" tools/pretrain_tiny_clip.py | tee "$2"' _ "$PYTHON" "$pretrain_out"
    WEIGHTS=$(tail -n 1 "$pretrain_out")
    rm -f "$pretrain_out"
    TAG="tiny-clip-$(basename "$WEIGHTS" .pt | sed 's/^tiny-clip-shapes-//')"
    BACKBONE=(MODEL.BACKBONE.NAME TinyCLIP-Shapes MODEL.BACKBONE.PATH "$WEIGHTS" INPUT.SIZE "(32, 32)" INPUT.RRCROP_SCALE "(0.5, 1.0)")
    DEPTH=4
else
    TAG="random-vit-tiny"
    BACKBONE=(MODEL.BACKBONE.NAME ViT-Tiny/16 MODEL.BACKBONE.RANDOM_INIT True INPUT.SIZE "(32, 32)" INPUT.RRCROP_SCALE "(0.5, 1.0)")
    DEPTH=3
    echo
    echo "=================================================================================="
    echo "--no-pretrain: RANDOM backbone weights (ViT-Tiny/16). This checks the pipeline end"
    echo "to end, but the accuracies below are meaningless (about chance)."
    echo "=================================================================================="
fi
export OUTPUT_ROOT="${OUTPUT_ROOT:-output/quickstart}/$TAG"
echo
echo "Backbone overrides: ${BACKBONE[*]}"
echo "Changed from the official configs, for a 32 px CLIP with $DEPTH blocks and 80 training images:"
echo "  INPUT.RRCROP_SCALE (0.5, 1.0)  official (0.08, 1.0): at 32 px many such crops lose the shape"
echo "  MaPLe/CoMMA PROMPT_DEPTH $DEPTH     official 9 (the tiny CLIP has $DEPTH blocks)"
echo "  MaPLe/CoMMA OPTIM.MAX_EPOCH 20   official 5 (= 100 steps at batch 4 on 80 images)"
echo "  PREC fp32                      official fp16 (runs fp16 on a CPU too, but slowly without fp16 units)"
echo "Everything else (CoOp's 200 epochs, learning rates, batch sizes, flips): official configs."

run_method() {  # run_method SCRIPT_DIR OPTS...: per seed, train on base (+ test base), then test novel
    local dir="$1" seed
    shift
    for seed in $SEEDS; do
        bash "scripts/$dir/base2new_train.sh" "$DATASET" "$seed" "${BACKBONE[@]}" "$@"
        bash "scripts/$dir/base2new_test.sh" "$DATASET" "$seed" "${BACKBONE[@]}" "$@"
    done
}
stage "zero-shot CLIP" run_method zsclip TRAINER.ZSCLIP.PREC fp32
stage CoOp run_method coop TRAINER.COOP.PREC fp32
stage MaPLe run_method maple TRAINER.MAPLE.PREC fp32 TRAINER.MAPLE.PROMPT_DEPTH "$DEPTH" OPTIM.MAX_EPOCH 20
stage CoMMA run_method comma TRAINER.COMMA.PREC fp32 TRAINER.COMMA.PROMPT_DEPTH "$DEPTH" OPTIM.MAX_EPOCH 20

echo
echo "Base-to-novel on $DATASET (5 base + 5 novel classes), 16 shots, seeds $SEEDS, backbone $TAG:"
"$PYTHON" tools/collect_results.py "$OUTPUT_ROOT" --datasets "$DATASET" --seeds $SEEDS
echo
echo "Time per stage:"
printf '  %s\n' "${STAGES[@]}"
printf '  %-22s %4d s\n' "total" "$((SECONDS - T_ALL))"
echo
echo "Outputs: $OUTPUT_ROOT/base2new/{train_base,test_new}/$DATASET/shots_16/<method>/<config>/seed<N>/log.txt"
if [[ "$PRETRAIN" == "1" ]]; then
    echo "Tiny CLIP weights: $WEIGHTS (recipe and metrics: ${WEIGHTS%.pt}.json)"
fi
echo "What the numbers show: docs/DEMO.md"
