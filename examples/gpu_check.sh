#!/usr/bin/env bash
# One-shot GPU validation (issue 18) on a bare GPU machine with no registry: installs the wheels carried
# in .whl/ (megatron-core, liger-kernel, cut-cross-entropy) and the project offline, runs every
# gpu-marked test and the loss, scoring and training benchmarks within 8 minutes, and writes
# gpu_check.json, gpu_check.md and steps.log to OUT_DIR. Exit 0: all passed; 1: a step failed;
# 2: no CUDA device (it stops at the first GPU step). Options: spice/bench/gpu.py (--dry-run, --budget).
#   usage: examples/gpu_check.sh OUT_DIR [--wheels DIR] [--skip-install] [--budget SECONDS] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m spice.bench.gpu "$@"
