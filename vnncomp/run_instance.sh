#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
set -euo pipefail
[ "$1" = "v1" ] || { echo "expected version string v1, got '$1'" >&2; exit 1; }
exec "$(dirname "$0")/../.venv/bin/nnverify" vnncomp run "$2" "$3" "$4" "$5" "$6"
