#!/usr/bin/env bash
# Ensure what the browser tests (crates/api/tests/browser/) need:
#   chromium    – Debian's package (/usr/bin/chromium), run headless
#   playwright  – the Python driver from pip, used with executable_path="/usr/bin/chromium".
#                 Never `playwright install`: it downloads its own browser, which fails offline.
# Idempotent and silent when both are installed. Same conventions as ensure-tools.sh.
set -euo pipefail

LOG_NAME=ensure-browser
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ! -x /usr/bin/chromium ]]; then
    apt_install chromium
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found"
if ! python3 -c 'import playwright.sync_api' >/dev/null 2>&1; then
    pip_install playwright # the driver only
    python3 -c 'import playwright.sync_api' >/dev/null 2>&1 || die "playwright is still not importable by $(command -v python3)"
fi
