#!/usr/bin/env bash
# Alias with the official COMMA repo's name for scripts/comma/base2new_train.sh (same arguments).
# The official scripts take an optional 3rd argument CUDA (DATASET SEED CUDA); a GPU id there is
# honoured as CUDA_VISIBLE_DEVICES instead of being read as an opt.
set -euo pipefail
if [[ $# -ge 3 && "$3" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    export CUDA_VISIBLE_DEVICES="$3"
    set -- "$1" "$2" "${@:4}"
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/base2new_train.sh" "$@"
