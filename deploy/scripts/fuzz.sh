#!/usr/bin/env bash
# `just fuzz`: schemathesis (PyPI) over every operation of the served OpenAPI document,
# authenticated as a seeded user, with the checks not_a_server_error, status_code_conformance,
# content_type_conformance, response_schema_conformance and negative_data_rejection. Runs the
# release API on its own database and port; a fixed seed keeps CI reproducible (FUZZ_SEED to vary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { printf 'fuzz: %s\n' "$*" >&2; }
if ! command -v schemathesis >/dev/null 2>&1; then
    log "installing schemathesis"
    export PIP_ROOT_USER_ACTION=ignore
    python3 -m pip install --quiet --disable-pip-version-check schemathesis 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages schemathesis
    PATH="$PATH:$(python3 -m site --user-base)/bin"
fi

admin_url=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export DATABASE_URL="${admin_url%/*}/taskshop_fuzz"
export APP_ENV=development API_ADDR=127.0.0.1:18282 REDIS_PREFIX="fuzz:$$" RATE_LIMIT_ENABLED=false \
    BCRYPT_COST=4 METRICS_ADDR= RUST_LOG=${RUST_LOG:-error}
# FUZZ_PROFILE=debug reuses the debug binary `just test` already built (CI); default: release.
if [[ ${FUZZ_PROFILE:-release} == debug ]]; then
    cargo build --quiet --bin api
    api=target/debug/api
else
    cargo build --release --quiet --bin api
    api=target/release/api
fi
psql "$admin_url" -qc "DROP DATABASE IF EXISTS taskshop_fuzz" -c "CREATE DATABASE taskshop_fuzz" >/dev/null
"$api" migrate >/dev/null
"$api" seed >/dev/null
"$api" serve &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; psql "$admin_url" -qc "DROP DATABASE IF EXISTS taskshop_fuzz" >/dev/null 2>&1 || true' EXIT
base="http://$API_ADDR"
for _ in $(seq 100); do curl -fsS "$base/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(curl -fsS "$base/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"alice@example.com","password":"demo-password-123"}' |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
timeout 180 schemathesis run "$base/openapi.json" -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
    --max-examples "${FUZZ_EXAMPLES:-15}" --seed "${FUZZ_SEED:-20261202}" --workers 2 --no-color "$@"
