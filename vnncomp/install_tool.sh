#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1  (installs nnverify into .venv)
set -euo pipefail
cd "$(dirname "$0")/.." && make install
