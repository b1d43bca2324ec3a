#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB  (no analysis; non-zero skips)
set -euo pipefail
[ "$1" = "v1" ] || { echo "expected version string v1, got '$1'" >&2; exit 1; }
exec "$(dirname "$0")/../.venv/bin/nnverify" vnncomp prepare "$2" "$3" "$4"
