#!/usr/bin/env bash
# Official PromptSRC name and arguments: few-shot runs of DATASET with SHOTS shots for seeds 1 2 3
# (SEEDS overrides), each through scripts/promptsrc/fewshot.sh (config vit_b16_c2_ep50_batch4_4+4ctx_few_shot).
# usage: bash scripts/promptsrc/few_shot.sh DATASET SHOTS [KEY VALUE ...]
# StanfordCars, Flowers102, FGVCAircraft, DTD, EuroSAT: the official setting adds
#   TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: bash scripts/promptsrc/few_shot.sh DATASET SHOTS [KEY VALUE ...]" >&2
    exit 2
fi
DATASET="$1"; SHOTS="$2"; shift 2
for SEED in ${SEEDS:-1 2 3}; do
    bash "$(dirname "${BASH_SOURCE[0]}")/fewshot.sh" "$DATASET" "$SEED" "$SHOTS" "$@"
done
