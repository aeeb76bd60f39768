#!/usr/bin/env bash
# PromptSRC: load the last epoch of the base2new_train run (the GPA prompts), test on the novel classes.
# usage: bash scripts/promptsrc/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. Finished runs are skipped,
# half-finished ones resume. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job promptsrc base2new_test "$@"
