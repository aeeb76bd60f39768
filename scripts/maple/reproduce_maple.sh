#!/usr/bin/env bash
# Alias with the official repo's name for scripts/maple/reproduce.sh (same arguments: DATASET SEED WEIGHTS_DIR).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/reproduce.sh" "$@"
