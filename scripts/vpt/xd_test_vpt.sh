#!/usr/bin/env bash
# Alias with the official repo's name for scripts/vpt/xd_test.sh (same arguments).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/xd_test.sh" "$@"
