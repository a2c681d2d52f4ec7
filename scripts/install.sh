#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs nvp-nerfstudio with its test tools into it.
# Usage: source scripts/install.sh   (sets VENV)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${NVP_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    # torch's CUDA build makes the environment about 8 GiB: say so now rather than fail midway in pip.
    free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1024 / 1024 ))
    if [ "$free_gib" -lt 9 ]; then
        echo "error: ${free_gib} GiB free on this disk; the virtual environment needs about 9 GiB: free some space and run again" >&2
        exit 1
    fi
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CUDA build of torch also runs on a CPU; torchvision must match it for nerfstudio.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".[test]"
