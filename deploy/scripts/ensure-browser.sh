#!/usr/bin/env bash
# Ensure what the browser tests (crates/api/tests/browser/) need:
#   chromium    – Debian's package (/usr/bin/chromium), run headless
#   playwright  – the Python driver from pip, used with executable_path="/usr/bin/chromium".
#                 Never `playwright install`: it downloads its own browser, which fails offline.
# Idempotent and silent when both are installed. Same conventions as ensure-tools.sh.
set -euo pipefail

log() { printf 'ensure-browser: %s\n' "$*" >&2; }
die() { printf 'ensure-browser: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root (or sudo) to run: $*"
    fi
}

if [[ ! -x /usr/bin/chromium ]]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install chromium manually"
    log "installing chromium via apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found"
if ! python3 -c 'import playwright.sync_api' >/dev/null 2>&1; then
    log "installing playwright (driver only) for $(command -v python3)"
    export PIP_ROOT_USER_ACTION=ignore
    python3 -m pip install --quiet --disable-pip-version-check playwright 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages playwright
    python3 -c 'import playwright.sync_api' >/dev/null 2>&1 || die "playwright is still not importable by $(command -v python3)"
fi
