#!/usr/bin/env bash
# Create .venv from nothing with the install recipe of the architecture document:
#  1. torch and torchvision from the registry (>=2.14 / >=0.29 steers pip past the machine's local 2.13 wheel);
#  2. detectron2's Python code from the sal-detectron2 wheel (upstream detectron2 repackaged, Apache-2.0),
#     its runtime needs, and removal of the wheel's stray top-level `tools` package;
#  3. this project, editable, with the dev extras.
# Idempotent: a finished environment is marked by .venv/.rgtp-ready and is reused.
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ -f "$VENV/.rgtp-ready" ] && [ "$VENV/.rgtp-ready" -nt setup.py ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet "torch>=2.14" "torchvision>=0.29"
PURELIB=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c 'import detectron2' 2>/dev/null; then
  $PIP install --quiet --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --target "$PURELIB" --upgrade sal-detectron2==0.7.2
  rm -rf "$PURELIB/tools"
fi
$PIP install --quiet fvcore iopath pycocotools omegaconf hydra-core yacs tabulate cloudpickle termcolor \
  tqdm matplotlib Pillow "setuptools<81" "numpy<2" tensorboard
$PIP install --quiet -e ".[dev]"
rm -rf "$PURELIB/tools"
touch "$VENV/.rgtp-ready"
