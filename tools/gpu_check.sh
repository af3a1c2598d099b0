#!/usr/bin/env bash
# One-command GPU check (needs a CUDA GPU; refuses with exit status 2 without one): the CUDA tests and the 672
# backbone and detector benchmarks (batch 1 and 8, fp32 and bf16, eager / --capture cudagraph / compile), every
# result (JSON + Markdown) in one folder, within 8 minutes. See rgtp_apps/benchmark/gpu_check.py or --help.
#
#   tools/gpu_check.sh                      # results in output/gpu_check/
#   tools/gpu_check.sh --out DIR --quick    # batch 1, fp32 only
#   tools/gpu_check.sh --dry-run            # list the steps (works anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" -m rgtp_apps.benchmark.gpu_check --python "$PY" "$@"
