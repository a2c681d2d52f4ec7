#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs nvp-nerfstudio with its test tools into it.
# Usage: source scripts/install.sh   (sets VENV)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${NVP_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CUDA build of torch also runs on a CPU; torchvision must match it for nerfstudio.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".[test]"
