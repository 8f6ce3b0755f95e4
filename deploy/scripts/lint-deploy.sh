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

step "compose: docker-compose.yml against the compose specification (vendored compose-spec schema)"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

step "github: .github/workflows/ci.yml against the GitHub workflow schema (vendored)"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml

step "prometheus: config, alert rules, rule unit tests"
promtool check config deploy/observability/prometheus.yml >/dev/null
promtool check rules deploy/observability/alerts.yml
promtool test rules deploy/observability/alerts.test.yml

step "grafana: dashboards are JSON with unique panel ids"
python3 - deploy/observability/grafana/dashboards/*.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    d = json.load(open(path))
    ids = [p["id"] for p in d["panels"]]
    assert d.get("uid") and len(ids) == len(set(ids)), f"{path}: no uid or duplicate panel ids"
    assert all(t.get("expr") for p in d["panels"] for t in p.get("targets", [])), f"{path}: empty query"
PY

step "kubernetes: kubectl kustomize builds both overlays; kubernetes-validate --strict accepts every object"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in dev prod; do
    kubectl kustomize "deploy/k8s/overlays/$overlay" >"$rendered/$overlay.yaml"
done
kubernetes-validate --strict --quiet "$rendered/dev.yaml" "$rendered/prod.yaml" deploy/k8s/base/secret.template.yaml

step "cross-check against the code: env names, ports, health paths, grace periods, metric names"
python3 deploy/scripts/check-deploy.py --k8s dev="$rendered/dev.yaml" --k8s prod="$rendered/prod.yaml"
