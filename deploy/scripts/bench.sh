#!/usr/bin/env bash
# HTTP benchmarks of the release `api` binary with wrk, against loopback only.
#
#   bash deploy/scripts/bench.sh [SECTION...]      (normally via `just bench [SECTION...]`)
#
# Sections (default: all): auth
#
# Expects target/release/api (and worker) to be built, PostgreSQL at 127.0.0.1:5432 (trust auth)
# and Redis at 127.0.0.1:6379 (`just bench` takes care of all three). Every run drops and
# recreates the database `taskshop_bench`, starts `api serve` on 127.0.0.1:18080 and stops it on
# exit. Each wrk run is bounded by DURATION. Results are printed as a Markdown block and appended
# to var/bench/results-<timestamp>.md; the API's log of the last run is var/bench/last-api.log.
#
# Knobs (environment):
#   DURATION=10s     length of every wrk run
#   CONNS=64         connections of the plain runs      THREADS=2      wrk threads
#   LOGIN_CONNS=64   connections of the login runs      PROBE_CONNS=4  connections of the
#                                                                      health probe during logins
#   LOGIN_DURATION=20s  length of the login throughput run. bcrypt runs unbounded on tokio's
#                    blocking pool, so LOGIN_CONNS hashes share the cores and all finish together
#                    after ~LOGIN_CONNS x hash time / cores (~8 s at cost 12 on 2 cores): shorter
#                    runs complete (almost) nothing.
#   WRK_TIMEOUT=30s  wrk request timeout (wrk drops slower responses from the latency stats)
#   WARMUP=2s        unmeasured wrk run before each measured one (0 = none): without it the
#                    DB pool opens its connections during the measurement and p99 is ~1 s
#   BCRYPT_COST=12   bcrypt cost of the API under test
#   BENCH_DB_POOL=32 DATABASE_POOL_SIZE of the API under test (own name: .env must not leak in)
#
# Adding a section: write `section_<name>() { ... }` that calls `wrk_run` (and `note` for extra
# summary lines), then add <name> to SECTIONS below. `health_baseline` gives the /health/live
# figures of this run (measured once) for ratios.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

SECTIONS=(auth)

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
LOGIN_CONNS="${LOGIN_CONNS:-64}"
LOGIN_DURATION="${LOGIN_DURATION:-20s}"
PROBE_CONNS="${PROBE_CONNS:-4}"
WRK_TIMEOUT="${WRK_TIMEOUT:-30s}"
WARMUP="${WARMUP:-2s}"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
BENCH_DB=taskshop_bench
API_BIN="$REPO_ROOT/target/release/api"
BASE_URL="http://127.0.0.1:18080"

BENCH_EMAIL="bench@example.com"
BENCH_PASSWORD="bench-password-1"

export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$BENCH_DB"
export REDIS_URL="redis://127.0.0.1:6379"
export REDIS_PREFIX=bench
export APP_ENV=development
export API_ADDR="127.0.0.1:18080"
export BCRYPT_COST="${BCRYPT_COST:-12}"
export RUST_LOG=warn
export LOG_FORMAT=json
export DATABASE_POOL_SIZE="${BENCH_DB_POOL:-32}"

log() { printf 'bench: %s\n' "$*" >&2; }
warn() { printf 'bench: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- state ---

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")"
API_PID=""
BG_PIDS=()
RUN_STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p var/bench
API_LOG="$REPO_ROOT/var/bench/last-api.log"

# Results of wrk runs, keyed by run name; ORDER keeps the table order.
declare -A RPS=() P50=() P99=() REQS=() NON2XX=() SOCKERR=()
ORDER=()
# Extra summary lines ("label: value"), in order.
NOTES=()
WARNINGS=()

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n $API_PID ]] && kill -0 "$API_PID" 2>/dev/null; then
        kill -TERM "$API_PID" 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "$API_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$API_PID" 2>/dev/null || true
        wait "$API_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools ---

ensure_tools() {
    if ! command -v wrk >/dev/null 2>&1; then
        log "installing wrk via apt"
        local sudo=()
        if [[ $EUID -ne 0 ]]; then sudo=(sudo -n); fi
        "${sudo[@]}" apt-get install -y -qq wrk >/dev/null ||
            { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq wrk >/dev/null; } ||
            die "could not install wrk"
    fi
    local t
    for t in curl python3 psql dropdb createdb; do
        command -v "$t" >/dev/null 2>&1 || die "$t is required"
    done
    [[ -x $API_BIN ]] || die "$API_BIN not found; run: cargo build --release --bin api --bin worker"
}

# ------------------------------------------------------------------ api ---

reset_db() {
    local pg=(-h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -w)
    psql "${pg[@]}" -X -q -d postgres -tAc 'select 1' >/dev/null ||
        die "PostgreSQL does not answer at $PG_HOST:$PG_PORT as $PG_USER"
    log "recreating database $BENCH_DB"
    PGOPTIONS='-c client_min_messages=warning' dropdb "${pg[@]}" --if-exists --force "$BENCH_DB"
    createdb "${pg[@]}" "$BENCH_DB"
}

api_live() { curl -sf -o /dev/null --max-time 2 "$BASE_URL/health/live"; }

# Migrates the bench database and starts `api serve` in the background (API_PID).
start_api() {
    if api_live; then
        die "something already answers on $BASE_URL; stop it first"
    fi
    "$API_BIN" migrate >"$WORK/migrate.log" 2>&1 || {
        cat "$WORK/migrate.log" >&2
        die "api migrate failed"
    }
    "$API_BIN" serve >"$API_LOG" 2>&1 &
    API_PID=$!
    local deadline=$((SECONDS + 30))
    until api_live; do
        if ! kill -0 "$API_PID" 2>/dev/null; then
            tail -n 20 "$API_LOG" >&2 || true
            die "api serve exited during start-up (log: $API_LOG)"
        fi
        ((SECONDS < deadline)) || {
            tail -n 20 "$API_LOG" >&2 || true
            die "api did not answer $BASE_URL/health/live within 30 s (log: $API_LOG)"
        }
        sleep 0.2
    done
    log "api serve up (pid $API_PID, workers: $(api_threads) threads, BCRYPT_COST=$BCRYPT_COST)"
}

api_threads() { awk '/^Threads:/ { print $2 }' "/proc/$API_PID/status" 2>/dev/null || echo "?"; }

# CPU time (clock ticks) the API has used so far.
api_cpu_ticks() {
    local stat
    stat="$(<"/proc/$API_PID/stat")"
    stat="${stat##*) }" # drop "pid (comm) "; fields now start at field 3
    awk '{ print $12 + $13 }' <<<"$stat"
}

# Waits (≤ 60 s) until the API is idle: blocking-pool work (bcrypt) of requests whose client has
# gone keeps running after wrk stops, and would skew the next measurement.
wait_idle() {
    local prev now deadline=$((SECONDS + 60))
    prev="$(api_cpu_ticks)"
    while ((SECONDS < deadline)); do
        sleep 0.5
        now="$(api_cpu_ticks)"
        # < 5 ticks (~50 ms of CPU) per 0.5 s counts as idle.
        if ((now - prev < 5)); then return 0; fi
        prev="$now"
    done
    warn "api still busy after 60 s; measuring anyway"
}

peak_rss_mb() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$API_PID/status"
}

# ------------------------------------------------------------------ wrk ---

safe_name() { printf '%s' "${1//[^A-Za-z0-9_.-]/_}"; }

# wrk_exec NAME URL [extra wrk args]: runs wrk (output in $WORK/<NAME>.out) without parsing, so
# it can run in the background (`wrk_exec … &`, then `wait` and `wrk_parse NAME`). Extra args
# come after the defaults, so e.g. `-c 4 -t 1` overrides them.
wrk_exec() {
    local name="$1" url="$2"
    shift 2
    wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --timeout "$WRK_TIMEOUT" --latency "$@" "$url" \
        >"$WORK/$(safe_name "$name").out" 2>&1
}

# wrk latency ("850.00us", "1.20ms", "2.50s", "1.00m") -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        if (f < 0) { print "?"; exit }
        x = n * f
        printf (x < 10 ? "%.2f" : (x < 100 ? "%.1f" : "%.0f")), x
    }'
}

# wrk_parse NAME: reads $WORK/<NAME>.out into RPS/P50/P99/REQS/NON2XX/SOCKERR and ORDER.
wrk_parse() {
    local name="$1" out
    out="$WORK/$(safe_name "$name").out"
    if ! grep -q '^Requests/sec:' "$out"; then
        cat "$out" >&2
        die "wrk run '$name' failed"
    fi
    RPS[$name]="$(awk '/^Requests\/sec:/ { printf "%.1f", $2 }' "$out")"
    P50[$name]="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
    P99[$name]="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
    REQS[$name]="$(awk '/ requests in / { print $1 }' "$out")"
    NON2XX[$name]="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    NON2XX[$name]="${NON2XX[$name]:-0}"
    SOCKERR[$name]="$(awk -F'[ ,]+' '/Socket errors:/ { print $4 + $6 + $8 + $10 }' "$out")"
    SOCKERR[$name]="${SOCKERR[$name]:-0}"
    ORDER+=("$name")
    log "$(printf '%-34s %10s req/s  p50 %8s ms  p99 %8s ms  (%s requests)' \
        "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${REQS[$name]}")"
    if [[ ${NON2XX[$name]} != 0 ]]; then
        add_warning "$name: ${NON2XX[$name]} non-2xx/3xx responses (see $API_LOG)"
    fi
    if [[ ${SOCKERR[$name]} != 0 ]]; then
        add_warning "$name: socket errors: $(grep 'Socket errors:' "$out" | sed 's/^ *Socket errors: //')"
    fi
    local conns dur
    conns="$(awk '/ threads and .* connections/ { print $4 }' "$out")"
    dur="$(awk '/^Running .* test @/ { print $2 }' "$out")"
    if [[ ${REQS[$name]:-0} == 0 ]]; then
        add_warning "$name: no request completed within $dur (latency figures are meaningless)"
    elif ((REQS[$name] < ${conns:-0})); then
        add_warning "$name: only ${REQS[$name]} responses for $conns connections in $dur: queueing start-up dominates, figures are not steady-state (run longer)"
    fi
}

# wrk_run NAME URL [extra wrk args]: waits for the API to be idle, warms up for WARMUP (same
# args, discarded), waits again, runs wrk and records the results. `WARMUP=0 wrk_run …` skips
# the warm-up.
wrk_run() {
    wait_idle
    if [[ -n $WARMUP && $WARMUP != 0 ]]; then
        wrk_exec "$1 (warm-up)" "${@:2}" -d "$WARMUP"
        wait_idle
    fi
    wrk_exec "$@"
    wrk_parse "$1"
}

# lua_post FILE JSON: a wrk script sending POST JSON.
lua_post() {
    local body="$2"
    body="${body//\\/\\\\}"
    body="${body//\"/\\\"}"
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = "$body"
wrk.headers["Content-Type"] = "application/json"
EOF
}

add_warning() {
    WARNINGS+=("$*")
    warn "$*"
}

# note LABEL VALUE: an extra line of the summary.
note() { NOTES+=("$1: $2"); }

# pct A B: A as a percentage of B.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "n/a" }'; }

# health_baseline: GET /health/live at CONNS connections, once per invocation (the framework ceiling).
HEALTH="GET /health/live"
health_baseline() {
    [[ -n ${RPS[$HEALTH]:-} ]] || wrk_run "$HEALTH" "$BASE_URL/health/live"
}

# ------------------------------------------------------------- sections ---

signup_bench_user() {
    local body status
    body="$(printf '{"email":"%s","password":"%s","name":"Bench"}' "$BENCH_EMAIL" "$BENCH_PASSWORD")"
    status="$(curl -sS -o "$WORK/signup.json" -w '%{http_code}' --max-time 30 \
        -H 'Content-Type: application/json' -d "$body" "$BASE_URL/v1/auth/signup")"
    [[ $status == 201 ]] || {
        cat "$WORK/signup.json" >&2 || true
        die "signup returned HTTP $status, expected 201"
    }
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <"$WORK/signup.json"
}

section_auth() {
    local token ms ceiling login_body lua login_name bg_name probe_name status
    token="$(signup_bench_user)"
    [[ -n $token ]] || die "signup returned no access_token"

    # a. framework ceiling; b. authenticated read.
    health_baseline
    local me="GET /v1/users/me (auth)"
    wrk_run "$me" "$BASE_URL/v1/users/me" -H "Authorization: Bearer $token"
    note "me/health ratio" "$(pct "${RPS[$me]}" "${RPS[$HEALTH]}")"

    # c. login: bcrypt-bound.
    login_body="$(printf '{"email":"%s","password":"%s"}' "$BENCH_EMAIL" "$BENCH_PASSWORD")"
    lua="$WORK/login.lua"
    lua_post "$lua" "$login_body"
    status="$(curl -sS -o "$WORK/login.json" -w '%{http_code}' --max-time 30 \
        -H 'Content-Type: application/json' -d "$login_body" "$BASE_URL/v1/auth/login")"
    [[ $status == 200 ]] || {
        cat "$WORK/login.json" >&2 || true
        die "login of the bench user returned HTTP $status, expected 200"
    }
    login_name="POST /v1/auth/login (c=$LOGIN_CONNS)"
    # No warm-up: it would only leave LOGIN_CONNS hashes in flight to wait for.
    WARMUP=0 wrk_run "$login_name" "$BASE_URL/v1/auth/login" -c "$LOGIN_CONNS" -d "$LOGIN_DURATION" -s "$lua"
    ms="$BCRYPT_MS"
    ceiling="$(awk -v n="$(nproc)" -v ms="$ms" 'BEGIN { printf "%.1f", n / (ms / 1000) }')"
    note "login vs bcrypt ceiling" "$(pct "${RPS[$login_name]}" "$ceiling") (${RPS[$login_name]} of $ceiling req/s = $(nproc) cores / ${ms} ms per hash at cost $BCRYPT_COST)"

    # d. /health/live latency while LOGIN_CONNS logins hash at once.
    wait_idle
    bg_name="POST /v1/auth/login (c=$LOGIN_CONNS) during probe"
    probe_name="GET /health/live (c=$PROBE_CONNS) during logins"
    wrk_exec "$bg_name" "$BASE_URL/v1/auth/login" -c "$LOGIN_CONNS" -s "$lua" &
    BG_PIDS+=($!)
    wrk_exec "$probe_name" "$BASE_URL/health/live" -c "$PROBE_CONNS" -t 1
    wait "${BG_PIDS[-1]}" || true
    unset 'BG_PIDS[-1]'
    wrk_parse "$probe_name"
    wrk_parse "$bg_name"
    note "health p99 under $LOGIN_CONNS concurrent logins" \
        "${P99[$probe_name]} ms (p50 ${P50[$probe_name]} ms; idle at c=$CONNS: p99 ${P99[$HEALTH]} ms)"
}

# --------------------------------------------------------------- report ---

# report: prints the summary block and appends it to var/bench/results-<timestamp>.md.
report() {
    local block name line rev file
    rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then rev+="-dirty"; fi
    block="$(
        printf '## bench %s @ %s\n\n' "$RUN_STAMP" "$rev"
        printf 'sections: %s; DURATION=%s CONNS=%s THREADS=%s LOGIN_CONNS=%s LOGIN_DURATION=%s BCRYPT_COST=%s DATABASE_POOL_SIZE=%s; %s cores\n\n' \
            "${RUN_SECTIONS[*]}" "$DURATION" "$CONNS" "$THREADS" "$LOGIN_CONNS" "$LOGIN_DURATION" "$BCRYPT_COST" \
            "$DATABASE_POOL_SIZE" "$(nproc)"
        printf '| scenario | req/s | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|\n'
        for name in "${ORDER[@]}"; do
            printf '| %s | %s | %s | %s |\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}"
        done
        printf '\n'
        for line in "${NOTES[@]}"; do printf -- '- %s\n' "$line"; done
        for line in "${WARNINGS[@]}"; do printf -- '- WARNING: %s\n' "$line"; done
    )"
    printf '\n%s\n' "$block"
    file="var/bench/results-$RUN_STAMP.md"
    printf '%s\n\n' "$block" >>"$file"
    log "results appended to $file"
}

# ----------------------------------------------------------------- main ---

RUN_SECTIONS=()
if [[ $# -eq 0 || ${1:-} == all ]]; then
    RUN_SECTIONS=("${SECTIONS[@]}")
else
    for s in "$@"; do
        [[ " ${SECTIONS[*]} " == *" $s "* ]] || die "unknown section '$s' (known: ${SECTIONS[*]}, all)"
        RUN_SECTIONS+=("$s")
    done
fi

ensure_tools
reset_db
BCRYPT_MS="$("$API_BIN" bcrypt-timing)" || die "api bcrypt-timing failed"
log "bcrypt: ${BCRYPT_MS} ms per hash at cost $BCRYPT_COST"
start_api
for s in "${RUN_SECTIONS[@]}"; do
    log "section $s"
    "section_$s"
done
note "peak RSS" "$(peak_rss_mb) MB (VmHWM of api serve)"
report
