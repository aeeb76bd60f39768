#!/usr/bin/env bash
# TCP: evaluate released weights on the base and the novel classes (official reproduce_*.sh).
# usage: bash scripts/tcp/reproduce.sh DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
# Loads WEIGHTS_DIR/base/seedSEED (or WEIGHTS_DIR/DATASET/base/seedSEED) at the config's last epoch;
# output: $OUTPUT_ROOT/released/base2new/test_{base,new}/DATASET/shots_16/<trainer>/<cfg>/seedSEED.
# Env: DATA (default ./data), OUTPUT_ROOT (default output), CFG. See docs/REPRODUCE.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../_common.sh"
repro_job tcp reproduce "$@"
