# Task runner: https://just.systems  (`pip install rust-just` or `cargo install just`)
# `just` lists the recipes. Values from .env are loaded; the defaults below make
# every recipe work without a .env.

set dotenv-load := true
set shell := ["bash", "-euo", "pipefail", "-c"]

export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app")
export REDIS_URL := env_var_or_default("REDIS_URL", "redis://127.0.0.1:6379")
export APP_ENV := env_var_or_default("APP_ENV", "development")

# Admin connection the test harness uses to create per-test databases.
export TEST_DATABASE_URL := env_var_or_default("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
export TEST_REDIS_URL := env_var_or_default("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# List the recipes
default:
    @just --list

# Make sure PostgreSQL and Redis answer (installs/starts them locally if needed)
services:
    bash deploy/scripts/ensure-services.sh

# Install helper tools for tests and benchmarks (wrk, aiosmtpd; chromium + playwright for the browser tests)
tools:
    bash deploy/scripts/ensure-tools.sh
    bash deploy/scripts/ensure-browser.sh

# Build the release binaries
build:
    cargo build --release --bin api --bin worker

# Apply database migrations
migrate: services
    cargo run --release --bin api -- migrate

# Apply migrations and load seed data
seed: migrate
    cargo run --release --bin api -- seed

# Development: sign a payment event for ORDER and send it to the running API (see `api webhook --help`)
webhook ORDER TYPE="payment.succeeded":
    cargo run --release --quiet --bin api -- webhook --order {{ORDER}} --type {{TYPE}}

# Build, migrate, seed, then run the API and the worker together (Ctrl-C stops both)
run: services build
    #!/usr/bin/env bash
    set -euo pipefail
    target/release/api migrate
    target/release/api seed
    target/release/api serve &
    api_pid=$!
    target/release/worker &
    worker_pid=$!
    stop() {
        kill -TERM "$api_pid" "$worker_pid" 2>/dev/null || true
        # Give both 20 s to shut down gracefully, then kill what is left.
        for _ in $(seq 40); do
            kill -0 "$api_pid" 2>/dev/null || kill -0 "$worker_pid" 2>/dev/null || return 0
            sleep 0.5
        done
        kill -KILL "$api_pid" "$worker_pid" 2>/dev/null || true
    }
    trap 'stop; wait; exit 130' INT
    trap 'stop; wait; exit 143' TERM
    code=0
    wait -n "$api_pid" "$worker_pid" || code=$?
    echo "run: a process exited with status $code; stopping the other" >&2
    stop
    wait || true
    exit "$code"

# Run the test suite (extra args go to cargo test, e.g. `just test -p api login`)
[positional-arguments]
test *ARGS: services tools
    #!/usr/bin/env bash
    set -euo pipefail
    # The tests connect through TEST_DATABASE_URL / TEST_REDIS_URL: make sure
    # those servers answer too when they are not the ones `services` checked.
    if [[ ${TEST_DATABASE_URL%/*} != "${DATABASE_URL%/*}" || $TEST_REDIS_URL != "$REDIS_URL" ]]; then
        DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" bash deploy/scripts/ensure-services.sh
    fi
    export RUST_LOG="${RUST_LOG:-warn}"
    cargo test --workspace "$@"

# Run the HTTP benchmarks against release binaries (`just bench tasks`: one section; `--quick`: 1 s runs)
[positional-arguments]
bench *ARGS: services tools build
    python3 deploy/bench/bench.py "$@"

# Check formatting and lints (CI-strict)
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just deny
    just lint-deploy

# Offline checks of the deployment files (seconds): Dockerfile, compose, Kubernetes, CI workflow,
# alert rules and their unit tests, dashboard, and the cross-check against the code (README "Operations")
lint-deploy:
    bash deploy/scripts/lint-deploy.sh

# schemathesis over every operation of the OpenAPI document (bounded: ~3 min at most); extra args go to schemathesis
fuzz *ARGS: services
    bash deploy/scripts/fuzz.sh {{ARGS}}

# The reproducible part of `just fuzz` that CI runs: the examples, fuzzing and stateful phases
# (fixed seed) on the debug binary `just test` built; schemathesis' coverage phase is left out
# (it varies between runs even with a fixed seed)
fuzz-ci: services
    FUZZ_PROFILE=debug bash deploy/scripts/fuzz.sh --phases examples,fuzzing,stateful

# Licenses, banned crates (OpenSSL, libpq, a second TLS stack) and sources (deny.toml).
# Advisories need the RustSec database, which this machine cannot fetch: CI's workflow runs them.
deny:
    bash deploy/scripts/ensure-tools.sh deny
    cargo deny --log-level error check licenses bans sources

# Line coverage of the whole workspace, integration tests included (instrumented build in target/llvm-cov-target)
coverage *ARGS: services
    #!/usr/bin/env bash
    set -euo pipefail
    bash deploy/scripts/ensure-tools.sh coverage
    export LLVM_COV=llvm-cov-22 LLVM_PROFDATA=llvm-profdata-22 RUST_LOG="${RUST_LOG:-warn}"
    cargo llvm-cov --workspace --summary-only "$@"

# Back up the database of DATABASE_URL (pg_dump custom format) to FILE (default var/backups/<db>-<time>.dump)
backup FILE="":
    bash deploy/scripts/backup.sh {{FILE}}

# Restore a backup FILE into a new database DB (default <db>_restored_<time>); prints its URL
restore FILE DB="":
    bash deploy/scripts/restore.sh {{FILE}} {{DB}}

# Round trip: seed a throw-away database, back it up, restore it fresh, compare rows/checksums/schema (≤ 5 min)
backup-test: services
    cargo build --quiet --bin api
    timeout 300 bash deploy/scripts/backup-test.sh

# Zero-downtime restarts: two APIs behind HAProxy under wrk load, SIGTERM-restarted in turn → 0 failed requests (≤ 2 min)
rolling-restart-test: services
    cargo build --quiet --bin api
    timeout 120 bash deploy/scripts/rolling-restart-test.sh

# A local OpenID provider on http://localhost:9400 to try "Sign in with …" (npm oauth2-mock-server; see README)
oidc-mock:
    cd crates/testkit/dev && { test -d node_modules || npm install --no-audit --no-fund --silent; } && node oidc-mock.mjs

# Format the code
fmt:
    cargo fmt --all
