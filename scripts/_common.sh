# Shared by scripts/<method>/*.sh: strict mode, repo root as working directory, one python entry.
# DATA (dataset root, default ./data in the repo), OUTPUT_ROOT (default output), CFG (config name
# override), XD_SOURCE (xd source, default imagenet) are read by repro/job.py.
set -euo pipefail
_REPRO_CALLER_PWD="$PWD"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# relative DATA / OUTPUT_ROOT given by the caller mean relative to where the caller stands
if [[ -n "${DATA:-}" && "${DATA}" != /* ]]; then export DATA="${_REPRO_CALLER_PWD}/${DATA}"; fi
if [[ -n "${OUTPUT_ROOT:-}" && "${OUTPUT_ROOT}" != /* ]]; then export OUTPUT_ROOT="${_REPRO_CALLER_PWD}/${OUTPUT_ROOT}"; fi
if [[ -n "${CONFIG_ROOT:-}" && "${CONFIG_ROOT}" != /* ]]; then export CONFIG_ROOT="${_REPRO_CALLER_PWD}/${CONFIG_ROOT}"; fi
cd "$REPO_ROOT"

# repro_job METHOD KIND ARGS... : skip if finished, resume if half-finished, else run train.py
repro_job() {
    export REPRO_SCRIPT="scripts/$(basename "$(dirname "${BASH_SOURCE[1]}")")/$(basename "${BASH_SOURCE[1]}")"
    exec "${PYTHON:-$(command -v python || command -v python3)}" -m repro.job "$@"
}
