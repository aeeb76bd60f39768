#!/usr/bin/env bash
# PromptSRC: train on the base classes (16 shots, 20 epochs, GPA), then test on base.
# usage: bash scripts/promptsrc/base2new_train.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job promptsrc base2new_train "$@"
