# Shared by the ensure-*.sh scripts (sourced, not run): logging, root, apt and pip.
# The sourcing script sets LOG_NAME first (the prefix of its messages).

log() { printf '%s: %s\n' "${LOG_NAME:-deploy}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${LOG_NAME:-deploy}" "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, else through sudo
# (non-interactive when there is no terminal, so CI never hangs on a prompt).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Debian packages, quietly; the package lists are refreshed once per script run.
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* manually"
    log "installing $* via apt"
    if [[ $APT_UPDATED -eq 0 ]]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python packages: a plain install, or a user install where Debian's Python refuses one (PEP 668).
pip_install() {
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    export PIP_ROOT_USER_ACTION=ignore
    log "installing $* via pip"
    python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$@"
}
