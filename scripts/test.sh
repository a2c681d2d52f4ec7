#!/usr/bin/env bash
# Installs everything into .venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
