#!/usr/bin/env bash
# `just lint-deploy`: every offline check of the deployment files. Needs no network, no Docker
# engine and no cluster; the tools are installed by `ensure-tools.sh deploy` when missing.
# What each check proves (and what it cannot) is in README.md, "Operations".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash deploy/scripts/ensure-tools.sh deploy

step() { printf '==> %s\n' "$*"; }

step "hadolint deploy/Dockerfile"
hadolint --failure-threshold warning deploy/Dockerfile
