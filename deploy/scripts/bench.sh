#!/usr/bin/env bash
# HTTP benchmarks of the release `api` binary with wrk, against loopback only.
#
#   bash deploy/scripts/bench.sh [SECTION...]      (normally via `just bench [SECTION...]`)
#
# Sections (default: all, in this order): auth jobs tasks cache
#   auth  /health/live, /v1/users/me, login throughput vs the bcrypt ceiling, health under logins
#   jobs  audit jobs/s of one and of two `worker` processes (JOBS_N synthetic jobs each), then
#         signup p50/p99 without and with a worker running (API restarted at SIGNUP_BCRYPT_COST
#         for that part, then restarted as before). Jobs/s = jobs / (last row's recorded_at -
#         worker start); "first row after" is the start-up share of that. The synthetic rows have
#         request_id 'bench', so no other audit row is counted. With JOBS_N > ~8,000 a worker's
#         first fetch may fail (apalis-redis 1.0 promotes all due jobs at once) and that queue's
#         worker restarts after 1 s: the run warns, and "first row after" includes the restart.
#   tasks GET /v1/tasks at one million rows, as seed7@seed.example.com (~1,000 tasks of its own),
#         at TASKS_CONNS: /health/live (the baseline at that concurrency), the first page of every
#         sort, a deep page (the URL after following next_cursor 25 times, limit 20, status
#         todo,in_progress, sort due_at), the filters q, category_id, priority+status and
#         due_before, then POST /v1/tasks and PATCH of one task (status todo <-> done). Runs
#         against its own database `taskshop_bench_tasks`, which is kept between runs: created,
#         migrated, and seeded (`api seed --users 1000 --tasks 1000000`, ~45 s) only while it
#         holds fewer than 1,000,000 tasks; the tasks the create run adds are deleted again. The
#         API is restarted on that database for the section, then on `taskshop_bench` again.
#         Summary: the max p99 over the list scenarios, and list req/s as % of /health/live.
#   cache GET /v1/users (admin) served from the cache (X-Cache: hit), the same with the API
#         restarted at CACHE_ENABLED=false, then a read-mostly mix on the cached API: every
#         CACHE_WRITE_EVERY-th request renames one user (PATCH /v1/users/{id}), which invalidates
#         the users namespace; the wrk script counts X-Cache hit/miss of the GETs. Users: the
#         admin bench-admin@example.com (`api create-admin`) and CACHE_USERS seed accounts
#         (`api seed --users N`). The bench's Redis cache keys are deleted first.
#
# Expects target/release/api and target/release/worker to be built, PostgreSQL at 127.0.0.1:5432
# (trust auth) and Redis at 127.0.0.1:6379 (`just bench` takes care of all three). Every run drops
# and recreates the database `taskshop_bench` (section tasks keeps its own, see above), starts
# `api serve` on 127.0.0.1:18080 and stops it (and any worker it started) on exit. Redis keys are
# under the prefix `bench`; the jobs section deletes `bench:jobs:*` before each measurement, and
# refuses to run if some other process consumes that queue. Each wrk run is bounded by DURATION
# (TASKS_DURATION in section tasks). Results are printed as a Markdown block and appended to
# var/bench/results-<timestamp>.md; the logs of the last run are var/bench/last-api.log (every
# api serve of the run, appended) and var/bench/last-worker.log.
#
# Knobs (environment):
#   DURATION=10s     length of every wrk run
#   CONNS=64         connections of the plain runs      THREADS=2      wrk threads
#   LOGIN_CONNS=64   connections of the login runs      PROBE_CONNS=4  connections of the
#                                                                      health probe during logins
#   LOGIN_DURATION=10s  length of the login throughput run. The hasher runs at most one bcrypt
#                    hash per core and queues the rest, so logins complete one after another at
#                    ~cores / hash time from the first second on (req/s is steady even in short
#                    runs). Latency is mostly queue wait, ~LOGIN_CONNS x hash time / cores (~8 s at
#                    cost 12 on 2 cores) once the queue is full: p50/p99 of a 10 s run include the
#                    ramp up to that.
#   WRK_TIMEOUT=30s  wrk request timeout (wrk drops slower responses from the latency stats)
#   WARMUP=2s        unmeasured wrk run before each measured one (0 = none): without it the
#                    DB pool opens its connections during the measurement and p99 is ~1 s
#   BCRYPT_COST=12   bcrypt cost of the API under test
#   BENCH_DB_POOL=16 DATABASE_POOL_SIZE of the API under test (own name: .env must not leak in)
#   BENCH_RATE_LIMIT=false  RATE_LIMIT_ENABLED of the API under test: every scenario comes from
#                    one IP and one account, so the per-IP/per-user limits would answer 429s
#   JOBS_N=20000     synthetic audit jobs per worker measurement (`worker bench-enqueue --audit N`)
#   JOBS_TIMEOUT=120 seconds one worker measurement may take before it is cut short
#   WORKER_CONCURRENCY=32  jobs in flight per queue and worker process
#   SIGNUP_CONNS=16  connections of the signup runs       SIGNUP_DURATION=$DURATION  their length
#   SIGNUP_BCRYPT_COST=4  bcrypt cost of the API during the signup runs (so bcrypt does not drown
#                    the difference the worker makes)
#   TASKS_CONNS=32   connections of the tasks runs      TASKS_DURATION=5s  their length
#   TASKS_WARMUP=0   warm-up of each tasks run after the first, which gets WARMUP (that opens
#                    the DB pool; the data is in shared buffers after the vacuum); keeps the
#                    section at ~90 s once seeded
#   CACHE_USERS=50   seed accounts for the cached user list (20 per page: 3 pages)
#   CACHE_WRITE_EVERY=20  the mix's share of writes: 1 request in N is a PATCH (20 = 5%)
#
# Adding a section: write `section_<name>() { ... }` that calls `wrk_run` (and `note` for extra
# summary lines), then add <name> to SECTIONS below. `health_baseline` gives the /health/live
# figures of this run (measured once) for ratios.
set -Eeuo pipefail
# set -e alone exits silently; say which command failed (-E: also inside functions).
trap 'printf "bench: error: exit status %s at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

SECTIONS=(auth jobs tasks cache)

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
LOGIN_CONNS="${LOGIN_CONNS:-64}"
LOGIN_DURATION="${LOGIN_DURATION:-10s}"
PROBE_CONNS="${PROBE_CONNS:-4}"
WRK_TIMEOUT="${WRK_TIMEOUT:-30s}"
WARMUP="${WARMUP:-2s}"
JOBS_N="${JOBS_N:-20000}"
JOBS_TIMEOUT="${JOBS_TIMEOUT:-120}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-32}"
SIGNUP_CONNS="${SIGNUP_CONNS:-16}"
SIGNUP_DURATION="${SIGNUP_DURATION:-$DURATION}"
SIGNUP_BCRYPT_COST="${SIGNUP_BCRYPT_COST:-4}"
TASKS_CONNS="${TASKS_CONNS:-32}"
TASKS_DURATION="${TASKS_DURATION:-5s}"
TASKS_WARMUP="${TASKS_WARMUP:-0}"
CACHE_USERS="${CACHE_USERS:-50}"
CACHE_WRITE_EVERY="${CACHE_WRITE_EVERY:-20}"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
BENCH_DB=taskshop_bench
# The tasks section's database: a million seeded tasks, kept between runs (seeding takes ~45 s).
TASKS_DB=taskshop_bench_tasks
TASKS_SEED_USERS=1000
TASKS_SEED_ROWS=1000000
TASKS_EMAIL="seed7@seed.example.com"
SEED_PASSWORD="demo-password-123"
API_BIN="$REPO_ROOT/target/release/api"
WORKER_BIN="$REPO_ROOT/target/release/worker"
BASE_URL="http://127.0.0.1:18080"

BENCH_EMAIL="bench@example.com"
BENCH_PASSWORD="bench-password-1"
ADMIN_EMAIL="bench-admin@example.com"
ADMIN_PASSWORD="bench-password-1"

export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$BENCH_DB"
export REDIS_URL="redis://127.0.0.1:6379"
export REDIS_PREFIX=bench
export APP_ENV=development
export API_ADDR="127.0.0.1:18080"
export BCRYPT_COST="${BCRYPT_COST:-12}"
export RUST_LOG=warn
export LOG_FORMAT=json
export DATABASE_POOL_SIZE="${BENCH_DB_POOL:-16}"
export RATE_LIMIT_ENABLED="${BENCH_RATE_LIMIT:-false}"

log() { printf 'bench: %s\n' "$*" >&2; }
warn() { printf 'bench: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- state ---

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")"
API_PID=""
API_STARTS=0
API_PEAK_RSS=0 # max VmHWM (MB) of the api serve processes stopped so far
BG_PIDS=()
WORKER_PIDS=()
RUN_STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p var/bench
API_LOG="$REPO_ROOT/var/bench/last-api.log"
WORKER_LOG="$REPO_ROOT/var/bench/last-worker.log"

# Results of wrk runs, keyed by run name; ORDER keeps the table order.
declare -A RPS=() P50=() P99=() REQS=() NON2XX=() SOCKERR=()
ORDER=()
# Extra summary lines ("label: value"), in order.
NOTES=()
WARNINGS=()

# stop_pid PID SECONDS: SIGTERM, up to SECONDS for the process to exit, then SIGKILL. Returns
# the exit status (143/137 if it died of the signal).
stop_pid() {
    local pid="$1" i rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${WORKER_PIDS[@]}"; do
        stop_pid "$pid" 10 || true
    done
    stop_api || true
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
    if [[ " ${RUN_SECTIONS[*]} " == *" jobs "* ]]; then
        [[ -x $WORKER_BIN ]] || die "$WORKER_BIN not found; run: cargo build --release --bin api --bin worker"
        command -v redis-cli >/dev/null 2>&1 || die "redis-cli is required (section jobs)"
    fi
    if [[ " ${RUN_SECTIONS[*]} " == *" cache "* ]]; then
        command -v redis-cli >/dev/null 2>&1 || die "redis-cli is required (section cache)"
    fi
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
    if ((API_STARTS++ == 0)); then : >"$API_LOG"; fi
    printf '=== api serve, BCRYPT_COST=%s, %s\n' "$BCRYPT_COST" "$(date -u +%FT%TZ)" >>"$API_LOG"
    "$API_BIN" serve >>"$API_LOG" 2>&1 &
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

# stop_api: stops api serve (SIGTERM, ≤ 10 s, then SIGKILL) and keeps its peak RSS.
stop_api() {
    [[ -n $API_PID ]] || return 0
    if kill -0 "$API_PID" 2>/dev/null; then
        API_PEAK_RSS="$(awk -v a="$API_PEAK_RSS" -v b="$(peak_rss_mb)" 'BEGIN { print ((b + 0 > a + 0) ? b : a) }')"
    fi
    stop_pid "$API_PID" 10 || true
    API_PID=""
}

api_threads() { awk '/^Threads:/ { print $2 }' "/proc/$API_PID/status" 2>/dev/null || echo "?"; }

# cpu_ticks PID: CPU time (clock ticks, user + system) the process has used so far.
cpu_ticks() {
    local stat
    stat="$(<"/proc/$1/stat")"
    stat="${stat##*) }" # drop "pid (comm) "; fields now start at field 3
    awk '{ print $12 + $13 }' <<<"$stat"
}
api_cpu_ticks() { cpu_ticks "$API_PID"; }
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# Waits (≤ 60 s) until the API is idle: requests in flight when wrk stops are not cancelled, so
# the logins still queued for the hasher (up to LOGIN_CONNS, i.e. ~LOGIN_CONNS x hash time / cores)
# are all hashed, and their after-commit job pushes made, after their client has gone; that would
# skew the next measurement (and race the jobs section's queue clean-up).
wait_idle() {
    local prev now start=$SECONDS deadline=$((SECONDS + 60))
    prev="$(api_cpu_ticks)"
    while ((SECONDS < deadline)); do
        sleep 0.5
        now="$(api_cpu_ticks)"
        # < 5 ticks (~50 ms of CPU) per 0.5 s counts as idle.
        if ((now - prev < 5)); then
            if ((SECONDS - start > 2)); then log "api idle after ~$((SECONDS - start)) s"; fi
            return 0
        fi
        prev="$now"
    done
    warn "api still busy after 60 s; measuring anyway"
}

peak_rss_mb() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$API_PID/status"
}

# --------------------------------------------------------------- worker ---

# pg_q SQL: one query against the bench database, unaligned, fields separated by a space.
pg_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -w -X -q -d "$BENCH_DB" -tA -F ' ' -c "$1"; }

# now_s: wall clock in seconds with a fraction (the same clock as PostgreSQL's now()).
now_s() { date +%s.%N; }

# worker_cmd ARGS…: the worker binary with the bench environment (DATABASE_URL, REDIS_URL,
# REDIS_PREFIX, APP_ENV, RUST_LOG and LOG_FORMAT are exported above). SMTP_URL is set empty so a
# .env cannot point it at a real server: e-mails become .eml files under $WORK/mail.
# WORKER_METRICS_ADDR=off: two workers on one host would both bind the default metrics port.
# start_workers repeats the command inline: a backgrounded function is a subshell whose pid ($!)
# SIGTERM would kill, orphaning the worker.
worker_cmd() {
    env MAIL_DIR="$WORK/mail" SMTP_URL="" WORKER_METRICS_ADDR=off WORKER_CONCURRENCY="$WORKER_CONCURRENCY" "$WORKER_BIN" "$@"
}

# start_workers K: starts K worker processes back to back (WORKER_PIDS; log: WORKER_LOG).
WORKER_LOG_MARK=0
start_workers() {
    local i
    WORKER_LOG_MARK="$(wc -l <"$WORKER_LOG" 2>/dev/null || echo 0)"
    for ((i = 0; i < $1; i++)); do
        printf '=== worker, WORKER_CONCURRENCY=%s, %s\n' "$WORKER_CONCURRENCY" "$(date -u +%FT%TZ)" >>"$WORKER_LOG"
        env MAIL_DIR="$WORK/mail" SMTP_URL="" WORKER_METRICS_ADDR=off WORKER_CONCURRENCY="$WORKER_CONCURRENCY" \
            "$WORKER_BIN" run >>"$WORKER_LOG" 2>&1 &
        WORKER_PIDS+=($!)
    done
}

# check_workers: dies if a worker started by this script has exited.
check_workers() {
    local pid
    for pid in "${WORKER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && continue
        tail -n 20 "$WORKER_LOG" >&2 || true
        die "worker $pid exited unexpectedly (log: $WORKER_LOG)"
    done
}

# stop_workers: SIGTERM to every worker (a graceful stop drains in-flight jobs and exits 0).
stop_workers() {
    local pid rc
    local t0="$SECONDS"
    for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${WORKER_PIDS[@]}"; do
        rc=0
        stop_pid "$pid" 30 || rc=$?
        ((rc == 0)) || add_warning "worker $pid exited with status $rc after SIGTERM (expected 0; log: $WORKER_LOG)"
    done
    if ((SECONDS - t0 > 2)); then log "workers stopped after ~$((SECONDS - t0)) s"; fi
    WORKER_PIDS=()
    # Worker errors (a failed fetch stops that queue's worker for 1 s before apalis restarts it).
    local errors first
    errors="$(tail -n "+$((WORKER_LOG_MARK + 1))" "$WORKER_LOG" | grep -c '"level":"ERROR"' || true)"
    if ((errors > 0)); then
        first="$(tail -n "+$((WORKER_LOG_MARK + 1))" "$WORKER_LOG" | grep -m1 '"level":"ERROR"' |
            sed -e 's/.*"message":"\([^"]*\)".*/\1/' -e 's/ script: [0-9a-f]*.*//' | cut -c1-200)"
        if [[ $first == *"too many results to unpack"* ]]; then
            # Known: apalis' fetch script moves all due scheduled ids at once and fails beyond
            # ~8,000; the worker's chunked promotion (jobs::maintenance) may not have run yet.
            first+=" — apalis fetch saw > ~8,000 due scheduled jobs before the chunked promotion ran; that queue's worker restarted after 1 s"
        fi
        add_warning "${WORKER_RUN:-worker run}: $errors error(s) in the worker log (first: $first; $WORKER_LOG)"
    fi
}

# clean_queues: deletes every job key of the bench prefix (queues, job data, idempotency keys,
# worker registrations), so a measurement starts from an empty queue.
clean_queues() {
    redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_PREFIX:jobs:*" |
        xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
}

# Rows written for `worker bench-enqueue` jobs (request_id "bench"); other audit rows (the auth
# section's logins, signups) do not count.
bench_rows() { pg_q "select count(*) from audit_log where request_id = 'bench'"; }

# bench_enqueue N: pushes N synthetic audit jobs.
bench_enqueue() {
    local out
    out="$(worker_cmd bench-enqueue --audit "$1" 2>"$WORK/enqueue.log")" || {
        cat "$WORK/enqueue.log" >&2
        die "worker bench-enqueue failed"
    }
    [[ $out == "$1" ]] || die "worker bench-enqueue --audit $1 printed '$out'"
}

# wait_worker_ready: enqueues one synthetic job and waits (≤ 30 s) until a worker has written it.
wait_worker_ready() {
    local before deadline=$((SECONDS + 30))
    before="$(bench_rows)"
    bench_enqueue 1
    until (($(bench_rows) > before)); do
        check_workers
        ((SECONDS < deadline)) || die "the worker did not process a job within 30 s (log: $WORKER_LOG)"
        sleep 0.1
    done
}

# audit_drain K: with an empty queue and no worker, enqueues JOBS_N synthetic audit jobs, starts
# K workers together and polls audit_log until all JOBS_N rows are there (≤ JOBS_TIMEOUT).
# Sets DRAIN_DONE (rows), DRAIN_TOTAL (s from worker start to the last row), DRAIN_BOOT (s from
# worker start to the first row), DRAIN_RATE (DONE / TOTAL), DRAIN_STEADY (jobs/s from the first
# row to the last) and DRAIN_CPU (CPU seconds of each worker, "a + b").
audit_drain() {
    local k="$1" before target count start t0 deadline first last pid
    ((${#WORKER_PIDS[@]} == 0)) || die "audit_drain: a bench worker is still running"
    # The API must not push jobs (e.g. of logins still queued from the auth section) while the
    # queue keys are deleted: a task id could outlive its payload and wedge the worker.
    wait_idle
    clean_queues
    t0="$(now_s)"
    bench_enqueue "$JOBS_N"
    log "enqueued $JOBS_N audit jobs in $(awk -v a="$t0" -v b="$(now_s)" 'BEGIN { printf "%.2f", b - a }') s"
    # Nobody else may consume the queue: rows must not appear, nor jobs leave the queue (pushes
    # land in the scheduled set; a worker promotes them to the active list), before ours start.
    before="$(bench_rows)"
    sleep 0.5
    local queued
    queued=$(($(redis-cli -u "$REDIS_URL" zcard "$REDIS_PREFIX:jobs:audit:scheduled") +
        $(redis-cli -u "$REDIS_URL" llen "$REDIS_PREFIX:jobs:audit:active")))
    [[ "$(bench_rows)" == "$before" && $queued == "$JOBS_N" ]] ||
        die "audit jobs are consumed without a bench worker ($queued of $JOBS_N still queued): another worker with REDIS_PREFIX=$REDIS_PREFIX is running; stop it first"
    target=$((before + JOBS_N))
    start="$(now_s)"
    start_workers "$k"
    deadline=$((SECONDS + JOBS_TIMEOUT))
    while :; do
        count="$(bench_rows)"
        ((count < target)) || break
        check_workers
        if ((SECONDS >= deadline)); then
            add_warning "audit drain with $k worker(s): only $((count - before)) of $JOBS_N jobs done after ${JOBS_TIMEOUT} s (figures cover those)"
            break
        fi
        sleep 0.1
    done
    read -r first last < <(pg_q "select extract(epoch from min(recorded_at)), extract(epoch from max(recorded_at))
        from audit_log where request_id = 'bench' and recorded_at >= to_timestamp($start)")
    DRAIN_CPU=""
    for pid in "${WORKER_PIDS[@]}"; do
        DRAIN_CPU+="${DRAIN_CPU:+ + }$(awk -v t="$(cpu_ticks "$pid")" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz }')"
    done
    WORKER_RUN="audit drain, $k worker(s)" stop_workers
    DRAIN_DONE=$((count - before))
    if ((DRAIN_DONE == 0)) || [[ -z $first ]]; then
        DRAIN_TOTAL="n/a" DRAIN_BOOT="n/a" DRAIN_RATE=0 DRAIN_STEADY=0
        return
    fi
    DRAIN_TOTAL="$(awk -v s="$start" -v l="$last" 'BEGIN { printf "%.2f", l - s }')"
    DRAIN_BOOT="$(awk -v s="$start" -v f="$first" 'BEGIN { printf "%.2f", f - s }')"
    DRAIN_RATE="$(awk -v n="$DRAIN_DONE" -v t="$DRAIN_TOTAL" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')"
    DRAIN_STEADY="$(awk -v n="$DRAIN_DONE" -v f="$first" -v l="$last" 'BEGIN { printf "%.0f", (l > f ? (n - 1) / (l - f) : 0) }')"
    log "$(printf 'audit drain, %s worker(s): %s jobs in %s s = %s jobs/s (first row after %s s; %s jobs/s after it; worker CPU %s s)' \
        "$k" "$DRAIN_DONE" "$DRAIN_TOTAL" "$DRAIN_RATE" "$DRAIN_BOOT" "$DRAIN_STEADY" "$DRAIN_CPU")"
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
        if [[ -n $API_PID ]] && ! kill -0 "$API_PID" 2>/dev/null; then
            tail -n 20 "$API_LOG" >&2 || true
            die "wrk run '$name' failed: api serve (pid $API_PID) has exited (log: $API_LOG)"
        fi
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
        local msg="$name: only ${REQS[$name]} responses for $conns connections in $dur: queueing start-up dominates, figures are not steady-state (run longer)"
        # RAMP_OK=1: expected (the login runs: req/s is steady, latency is the queue ramp).
        if [[ -n ${RAMP_OK:-} ]]; then log "note: $msg"; else add_warning "$msg"; fi
    fi
}

# dur_s DURATION: wrk duration ("10s", "2m", "1h", "30") -> seconds.
dur_s() {
    awk -v d="$1" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
        print n * ((u == "m") ? 60 : (u == "h") ? 3600 : 1) }'
}

# wrk_run NAME URL [extra wrk args]: waits for the API to be idle, warms up for WARMUP (same
# args, discarded), waits again, runs wrk and records the results. `WARMUP=0 wrk_run …` skips
# the warm-up.
wrk_run() {
    wait_idle
    if [[ -n $WARMUP && $WARMUP != 0 ]]; then
        wrk_exec "$1 (warm-up)" "${@:2}" -d "$WARMUP" || true
        wait_idle
    fi
    wrk_exec "$@" || true # wrk_parse shows wrk's output if it failed
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

    # c. login: bcrypt-bound (the hasher runs one hash per core and queues the rest).
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
    # No warm-up: the run is bcrypt-bound from its first request, and the DB pool opens the few
    # connections that one-hash-per-core needs within the first hash. Fewer responses than
    # connections are expected (RAMP_OK): req/s is steady, p50/p99 are the queue's ramp.
    # The API's CPU time over the run tells whether it got the cores (on a shared machine it may
    # not, and then the ceiling is out of reach).
    local c0 cores
    wait_idle
    c0="$(api_cpu_ticks)"
    WARMUP=0 RAMP_OK=1 wrk_run "$login_name" "$BASE_URL/v1/auth/login" -c "$LOGIN_CONNS" -d "$LOGIN_DURATION" -s "$lua"
    cores="$(awk -v t="$(($(api_cpu_ticks) - c0))" -v hz="$CLK_TCK" -v s="$(dur_s "$LOGIN_DURATION")" \
        'BEGIN { printf "%.2f", t / hz / s }')"
    ms="$BCRYPT_MS"
    ceiling="$(awk -v n="$(nproc)" -v ms="$ms" 'BEGIN { printf "%.1f", n / (ms / 1000) }')"
    note "login vs bcrypt ceiling" "$(if [[ ${NON2XX[$login_name]} != 0 ]]; then echo "n/a (non-2xx responses)"; else pct "${RPS[$login_name]}" "$ceiling"; fi) (${RPS[$login_name]} of $ceiling req/s = $(nproc) cores / ${ms} ms per hash at cost $BCRYPT_COST; the api used $cores of $(nproc) cores)"

    # d. /health/live latency while LOGIN_CONNS logins queue for the hasher (one hash per core).
    wait_idle
    bg_name="POST /v1/auth/login (c=$LOGIN_CONNS) during probe"
    probe_name="GET /health/live (c=$PROBE_CONNS) during logins"
    wrk_exec "$bg_name" "$BASE_URL/v1/auth/login" -c "$LOGIN_CONNS" -s "$lua" &
    BG_PIDS+=($!)
    wrk_exec "$probe_name" "$BASE_URL/health/live" -c "$PROBE_CONNS" -t 1 || true
    wait "${BG_PIDS[-1]}" || true
    unset 'BG_PIDS[-1]'
    wrk_parse "$probe_name"
    RAMP_OK=1 wrk_parse "$bg_name"
    note "health p99 under $LOGIN_CONNS concurrent logins" \
        "${P99[$probe_name]} ms (p50 ${P50[$probe_name]} ms; idle at c=$CONNS: p99 ${P99[$HEALTH]} ms)"
}

# lua_signup FILE: a wrk script POSTing signups with an e-mail unique per request: a random tag
# per wrk thread (each thread has its own Lua state and reads its own kernel UUID) plus a counter.
lua_signup() {
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local tag, n = nil, 0
function init(args)
    local f = io.open("/proc/sys/kernel/random/uuid", "r")
    if f then
        tag = f:read("*l"):gsub("-", ""):sub(1, 16)
        f:close()
    else
        math.randomseed(os.time() + math.floor(os.clock() * 1e6))
        tag = string.format("%x%08x", os.time(), math.random(0, 0x7fffffff))
    end
end
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, string.format(
        '{"email":"s%s-%d@bench.example.com","password":"$BENCH_PASSWORD","name":"Bench"}', tag, n))
end
EOF
}

section_jobs() {
    # 1 and 2: audit jobs/s of one, then two worker processes (the API is idle meanwhile).
    audit_drain 1
    local one="$DRAIN_RATE"
    note "audit jobs/s (1 worker)" \
        "$DRAIN_RATE ($DRAIN_DONE jobs in $DRAIN_TOTAL s from worker start; first row after $DRAIN_BOOT s, $DRAIN_STEADY jobs/s from then on; worker CPU $DRAIN_CPU s; WORKER_CONCURRENCY=$WORKER_CONCURRENCY)"
    audit_drain 2
    note "audit jobs/s (2 workers)" \
        "$DRAIN_RATE total, $(awk -v r="$DRAIN_RATE" 'BEGIN { printf "%.0f", r / 2 }') per process, $(pct "$DRAIN_RATE" "$one") of 1 worker ($DRAIN_DONE jobs in $DRAIN_TOTAL s; first row after $DRAIN_BOOT s, $DRAIN_STEADY jobs/s from then on; worker CPU $DRAIN_CPU s)"

    # 3: signup latency without and with a worker consuming, on an API restarted at
    # SIGNUP_BCRYPT_COST. Both runs enqueue (outbox row in the transaction + after-commit push to
    # Redis); the second also has the worker draining the queue (Redis, PostgreSQL, CPU).
    local saved_cost="$BCRYPT_COST" lua="$WORK/signup.lua" without with t0 users rows name
    lua_signup "$lua"
    stop_api
    export BCRYPT_COST="$SIGNUP_BCRYPT_COST"
    start_api
    without="POST /v1/auth/signup (c=$SIGNUP_CONNS, cost $SIGNUP_BCRYPT_COST, no worker)"
    with="POST /v1/auth/signup (c=$SIGNUP_CONNS, cost $SIGNUP_BCRYPT_COST, 1 worker)"
    wrk_run "$without" "$BASE_URL/v1/auth/signup" -c "$SIGNUP_CONNS" -d "$SIGNUP_DURATION" -s "$lua"
    # The backlog of the first run must not be worked off during the second.
    wait_idle
    clean_queues
    t0="$(now_s)"
    start_workers 1
    wait_worker_ready
    wrk_run "$with" "$BASE_URL/v1/auth/signup" -c "$SIGNUP_CONNS" -d "$SIGNUP_DURATION" -s "$lua"
    # Did the worker keep up? Signups since it started vs their audit rows, right after the run.
    read -r users rows < <(pg_q "select (select count(*) from users where created_at >= to_timestamp($t0)),
        (select count(*) from audit_log where event_type = 'signup' and occurred_at >= to_timestamp($t0))")
    check_workers
    WORKER_RUN="signup with worker" stop_workers
    local status
    for name in "$without" "$with"; do
        if [[ ${NON2XX[$name]} != 0 ]]; then
            status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
                -d "{\"email\":\"probe-$RANDOM$RANDOM@bench.example.com\",\"password\":\"$BENCH_PASSWORD\",\"name\":\"Bench\"}" \
                "$BASE_URL/v1/auth/signup" || true)"
            add_warning "$name: non-2xx responses (409 = e-mail collisions in the wrk script, 429 = rate limited); one more signup now answers HTTP $status"
            break
        fi
    done
    note "signup p50/p99 without worker" "${P50[$without]} / ${P99[$without]} ms (${RPS[$without]} req/s)"
    note "signup p50/p99 with worker" "${P50[$with]} / ${P99[$with]} ms (${RPS[$with]} req/s); difference $(
        awk -v a="${P50[$without]}" -v b="${P50[$with]}" -v c="${P99[$without]}" -v d="${P99[$with]}" \
            'BEGIN { printf "p50 %+.2f ms, p99 %+.2f ms", b - a, d - c }'
    ); worker had written $rows of $users signup audit rows when the run ended"

    # Restore the API the other sections expect.
    stop_api
    export BCRYPT_COST="$saved_cost"
    start_api
}

# ------------------------------------------------------- tasks and cache ---

# login EMAIL PASSWORD: prints the access token (dies unless the login answers 200).
login() {
    local status
    status="$(curl -sS -o "$WORK/login-as.json" -w '%{http_code}' --max-time 30 \
        -H 'Content-Type: application/json' \
        -d "$(printf '{"email":"%s","password":"%s"}' "$1" "$2")" "$BASE_URL/v1/auth/login")"
    [[ $status == 200 ]] || {
        cat "$WORK/login-as.json" >&2 || true
        die "login of $1 returned HTTP $status, expected 200"
    }
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <"$WORK/login-as.json"
}

# get_ok URL TOKEN: GET into $WORK/get.json (headers in $WORK/get.headers); dies unless 200.
get_ok() {
    local status
    status="$(curl -sS -D "$WORK/get.headers" -o "$WORK/get.json" -w '%{http_code}' --max-time 30 \
        -H "Authorization: Bearer $2" "$1")"
    [[ $status == 200 ]] || {
        cat "$WORK/get.json" >&2 || true
        die "GET $1 returned HTTP $status, expected 200"
    }
}

# json_py EXPR: evaluates the Python expression EXPR with `d` = the JSON of $WORK/get.json.
json_py() { python3 -c "import json, sys, urllib.parse; d = json.load(sys.stdin); print($1)" <"$WORK/get.json"; }

# x_cache: the X-Cache header of the last get_ok ("" if none).
x_cache() { awk -F': *' 'tolower($1) == "x-cache" { sub(/\r$/, "", $2); print $2 }' "$WORK/get.headers"; }

# tasks_db_prepare: creates TASKS_DB if missing, migrates it, and seeds it unless it already has
# TASKS_SEED_ROWS tasks. Sets TASKS_SEED (a summary line).
tasks_db_prepare() {
    local pg=(-h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -w) url n t0
    url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$TASKS_DB"
    if [[ -z "$(psql "${pg[@]}" -X -q -d postgres -tAc "select 1 from pg_database where datname = '$TASKS_DB'")" ]]; then
        log "creating database $TASKS_DB (kept between runs)"
        createdb "${pg[@]}" "$TASKS_DB"
    fi
    DATABASE_URL="$url" "$API_BIN" migrate >"$WORK/migrate-tasks.log" 2>&1 || {
        cat "$WORK/migrate-tasks.log" >&2
        die "api migrate of $TASKS_DB failed"
    }
    n="$(BENCH_DB="$TASKS_DB" pg_q 'select count(*) from tasks')"
    if ((n >= TASKS_SEED_ROWS)); then
        log "$TASKS_DB has $n tasks: not seeding"
        TASKS_SEED="$n tasks in $TASKS_DB (kept from an earlier run, not seeded)"
        return
    fi
    log "$TASKS_DB has $n tasks: seeding $TASKS_SEED_USERS users / $TASKS_SEED_ROWS tasks (~45 s)"
    t0=$SECONDS
    DATABASE_URL="$url" RUST_LOG=info "$API_BIN" seed --users "$TASKS_SEED_USERS" --tasks "$TASKS_SEED_ROWS" \
        >"$WORK/seed-tasks.log" 2>&1 || {
        tail -n 20 "$WORK/seed-tasks.log" >&2
        die "api seed of $TASKS_DB failed"
    }
    grep -q 'bulk seed done' "$WORK/seed-tasks.log" || warn "api seed did not log 'bulk seed done'"
    n="$(BENCH_DB="$TASKS_DB" pg_q 'select count(*) from tasks')"
    ((n >= TASKS_SEED_ROWS)) || die "after seeding, $TASKS_DB has only $n tasks"
    log "seeded $TASKS_DB in $((SECONDS - t0)) s ($n tasks)"
    TASKS_SEED="$n tasks in $TASKS_DB (seeded in this run: $((SECONDS - t0)) s)"
}

# tasks_cleanup: deletes the tasks the create scenario added (title 'bench task', TASKS_EMAIL's),
# so the seeded data set stays the same from run to run, then vacuums: autovacuum would not run
# for so few rows, and their dead index entries sit right at the start of TASKS_EMAIL's
# -created_at range (newest first), so every later default-sort page would step over them
# (~50k after three runs made that page 15x slower: 3.2 ms instead of 0.2 ms).
tasks_cleanup() {
    local n
    n="$(BENCH_DB="$TASKS_DB" pg_q "with d as (delete from tasks where title = 'bench task' and user_id in
        (select id from users where email = '$TASKS_EMAIL') returning 1) select count(*) from d")"
    if ((n > 0)); then log "deleted $n tasks made by the create scenario"; fi
    BENCH_DB="$TASKS_DB" pg_q 'vacuum (analyze) tasks, task_categories'
}

section_tasks() {
    local saved_url="$DATABASE_URL" saved_db="$BENCH_DB" token auth health lua url name cursor cat_id
    local s due task_id i p99max=0 p99name="" rpsmin="" rpsname="" list=() n_items
    tasks_db_prepare
    stop_api
    export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$TASKS_DB"
    BENCH_DB="$TASKS_DB"
    start_api
    tasks_cleanup
    token="$(login "$TASKS_EMAIL" "$SEED_PASSWORD")"
    [[ -n $token ]] || die "login of $TASKS_EMAIL returned no access_token"
    auth="Authorization: Bearer $token"

    # tasks_run NAME URL [wrk args]: one measurement at TASKS_CONNS for TASKS_DURATION; the first
    # warms up for WARMUP (the DB pool opens its connections), the others for TASKS_WARMUP.
    local warm="$WARMUP"
    tasks_run() {
        WARMUP="$warm" wrk_run "$1" "$2" -c "$TASKS_CONNS" -d "$TASKS_DURATION" -H "$auth" "${@:3}"
        warm="$TASKS_WARMUP"
    }
    # list_run NAME URL: a list scenario (must answer 200 with items first).
    list_run() {
        get_ok "$2" "$token"
        n_items="$(json_py 'len(d["items"])')"
        ((n_items > 0)) || add_warning "$1: the page is empty (measuring anyway)"
        tasks_run "$1" "$2"
        list+=("$1")
    }

    # The baseline at the same concurrency, right before the lists (no DB: no warm-up needed).
    if [[ $TASKS_CONNS == "$CONNS" ]]; then
        health_baseline
        health="$HEALTH"
    else
        health="GET /health/live (c=$TASKS_CONNS)"
        WARMUP=0 wrk_run "$health" "$BASE_URL/health/live" -c "$TASKS_CONNS" -d "$TASKS_DURATION"
    fi

    # First pages, every sort.
    list_run "GET /v1/tasks (first page, -created_at = default)" "$BASE_URL/v1/tasks"
    local default_name="${list[-1]}"
    for s in created_at due_at -due_at priority -priority; do
        list_run "GET /v1/tasks?sort=$s (first page)" "$BASE_URL/v1/tasks?sort=$s"
    done

    # Deep page: follow next_cursor 25 times (rows ~501-520), then measure that exact URL.
    url="$BASE_URL/v1/tasks?status=todo,in_progress&sort=due_at&limit=20"
    cursor=""
    for ((i = 1; i <= 25; i++)); do
        get_ok "$url${cursor:+&cursor=$cursor}" "$token"
        cursor="$(json_py 'urllib.parse.quote(d["next_cursor"] or "", safe="")')"
        [[ -n $cursor ]] || die "deep page: no next_cursor on page $i of $url"
    done
    list_run "GET /v1/tasks?status=todo,in_progress&sort=due_at, page 26 (cursor)" "$url&cursor=$cursor"

    # Filters.
    get_ok "$BASE_URL/v1/categories" "$token"
    cat_id="$(json_py 'd["items"][0]["id"]')"
    due="$(date -u -d '+7 days' +%Y-%m-%dT%H:%M:%SZ)"
    list_run "GET /v1/tasks?q=report" "$BASE_URL/v1/tasks?q=report"
    list_run "GET /v1/tasks?category_id=<own>" "$BASE_URL/v1/tasks?category_id=$cat_id"
    list_run "GET /v1/tasks?priority=high&status=todo" "$BASE_URL/v1/tasks?priority=high&status=todo"
    list_run "GET /v1/tasks?due_before=<now+7d>" "$BASE_URL/v1/tasks?due_before=$due"

    # Writes: create, then updates of one existing task (its oldest), alternating todo/done.
    lua="$WORK/task-create.lua"
    lua_post "$lua" '{"title":"bench task","priority":"high"}'
    tasks_run "POST /v1/tasks" "$BASE_URL/v1/tasks" -s "$lua"
    get_ok "$BASE_URL/v1/tasks?sort=created_at&limit=1" "$token"
    task_id="$(json_py 'd["items"][0]["id"]')"
    lua="$WORK/task-update.lua"
    cat >"$lua" <<'LUA'
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local bodies = { '{"status":"done"}', '{"status":"todo"}' }
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, bodies[n % 2 + 1])
end
LUA
    tasks_run "PATCH /v1/tasks/{id} (one task, todo<->done)" "$BASE_URL/v1/tasks/$task_id" -s "$lua"
    wait_idle
    tasks_cleanup

    for name in "${list[@]}"; do
        if awk -v a="${P99[$name]}" -v b="$p99max" 'BEGIN { exit !(a + 0 > b + 0) }'; then
            p99max="${P99[$name]}" p99name="$name"
        fi
        if [[ -z $rpsmin ]] || awk -v a="${RPS[$name]}" -v b="$rpsmin" 'BEGIN { exit !(a + 0 < b + 0) }'; then
            rpsmin="${RPS[$name]}" rpsname="$name"
        fi
    done
    note "tasks data" "$TASKS_SEED; as $TASKS_EMAIL; c=$TASKS_CONNS, $TASKS_DURATION per scenario (warm-up: $WARMUP before the first, then $TASKS_WARMUP)"
    note "tasks list p99, max over ${#list[@]} list scenarios" "$p99max ms ($p99name; aim < 20 ms)"
    note "tasks list req/s vs /health/live (c=$TASKS_CONNS, ${RPS[$health]} req/s)" \
        "default first page ${RPS[$default_name]} = $(pct "${RPS[$default_name]}" "${RPS[$health]}"); min $rpsmin = $(pct "$rpsmin" "${RPS[$health]}") ($rpsname); aim ≥ 25%"

    # Restore the API the other sections expect.
    stop_api
    export DATABASE_URL="$saved_url"
    BENCH_DB="$saved_db"
    start_api
}

# lua_cache_mix FILE PATH_OF_USER: ~1/CACHE_WRITE_EVERY of the requests rename one user (PATCH,
# alternating names), the rest GET /v1/users; counts X-Cache hit/miss/absent over all threads.
lua_cache_mix() {
    cat >"$1" <<EOF
local every, path = $CACHE_WRITE_EVERY, "$2"
local n, get_headers, patch_headers = 0, {}, {}
hits, misses, other = 0, 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
    for k, v in pairs(wrk.headers) do get_headers[k] = v; patch_headers[k] = v end
    patch_headers["Content-Type"] = "application/json"
end
function request()
    n = n + 1
    if n % every == 0 then
        local name = ((n / every) % 2 == 0) and "Bench Rename A" or "Bench Rename B"
        return wrk.format("PATCH", path, patch_headers, '{"name":"' .. name .. '"}')
    end
    return wrk.format("GET", "/v1/users", get_headers, nil)
end
function response(status, headers, body)
    local c = headers["x-cache"] or headers["X-Cache"]
    if c == "hit" then hits = hits + 1 elseif c == "miss" then misses = misses + 1 else other = other + 1 end
end
function done(summary, latency, requests)
    local h, m, o = 0, 0, 0
    for _, t in ipairs(threads) do h = h + t:get("hits"); m = m + t:get("misses"); o = o + t:get("other") end
    io.write(string.format("cache-mix: hits=%d misses=%d other=%d\n", h, m, o))
end
EOF
}

section_cache() {
    local token auth cached uncached mix lua target hits misses other me="GET /v1/users/me (auth)" extra=""
    # Users for the list (one shared bcrypt hash: seed{i}@seed.example.com), and the admin.
    "$API_BIN" seed --users "$CACHE_USERS" --tasks 1 >"$WORK/seed-cache.log" 2>&1 || {
        tail -n 20 "$WORK/seed-cache.log" >&2
        die "api seed --users $CACHE_USERS failed"
    }
    "$API_BIN" create-admin --email "$ADMIN_EMAIL" --password "$ADMIN_PASSWORD" >"$WORK/admin.log" 2>&1 || {
        cat "$WORK/admin.log" >&2
        die "api create-admin failed"
    }
    # Seeded rows were inserted behind the API's back: start from an empty cache.
    redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_PREFIX:cache:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
    token="$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"
    [[ -n $token ]] || die "login of $ADMIN_EMAIL returned no access_token"
    auth="Authorization: Bearer $token"
    get_ok "$BASE_URL/v1/users" "$token"
    [[ "$(json_py 'len(d["items"]) == 20 and bool(d["next_cursor"])')" == True ]] ||
        die "GET /v1/users: expected 20 users and a next page, got $(json_py 'len(d["items"])') users"
    get_ok "$BASE_URL/v1/users" "$token"
    [[ "$(x_cache)" == hit ]] || die "GET /v1/users: second read answered X-Cache '$(x_cache)', expected hit (CACHE_ENABLED?)"
    target="$(pg_q "select id from users where email = 'seed1@seed.example.com' and deleted_at is null")"
    [[ -n $target ]] || die "seed1@seed.example.com not found"

    health_baseline
    cached="GET /v1/users (admin, cached: hit)"
    wrk_run "$cached" "$BASE_URL/v1/users" -H "$auth"
    get_ok "$BASE_URL/v1/users" "$token"
    [[ "$(x_cache)" == hit ]] || add_warning "$cached: X-Cache '$(x_cache)' right after the run (expected hit)"

    stop_api
    CACHE_ENABLED=false start_api
    uncached="GET /v1/users (admin, CACHE_ENABLED=false)"
    get_ok "$BASE_URL/v1/users" "$token"
    [[ "$(x_cache)" == miss ]] || die "GET /v1/users with CACHE_ENABLED=false answered X-Cache '$(x_cache)'"
    wrk_run "$uncached" "$BASE_URL/v1/users" -H "$auth"
    stop_api
    CACHE_ENABLED=true start_api

    if [[ -n ${RPS[$me]:-} ]]; then extra="; $me: $(pct "${RPS[$me]}" "${RPS[$HEALTH]}"), the ceiling of any authenticated route"; fi
    note "cached user list vs /health/live" "$(pct "${RPS[$cached]}" "${RPS[$HEALTH]}") (${RPS[$cached]} of ${RPS[$HEALTH]} req/s; aim ≥ 50%$extra)"
    note "cached vs uncached user list" "$(awk -v a="${RPS[$cached]}" -v b="${RPS[$uncached]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }') (${RPS[$cached]} / ${RPS[$uncached]} req/s; aim ≥ 3×)"

    # Read-mostly mix against the cached API: every CACHE_WRITE_EVERY-th request renames seed1.
    lua="$WORK/cache-mix.lua"
    lua_cache_mix "$lua" "/v1/users/$target"
    mix="GET /v1/users + $(awk -v e="$CACHE_WRITE_EVERY" 'BEGIN { printf "%g", 100 / e }')% PATCH /v1/users/{id} (cached)"
    wrk_run "$mix" "$BASE_URL/v1/users" -H "$auth" -s "$lua"
    read -r hits misses other < <(awk -F'[= ]' '/^cache-mix:/ { print $3, $5, $7 }' "$WORK/$(safe_name "$mix").out") ||
        die "$mix: the wrk script printed no cache counts ($WORK/$(safe_name "$mix").out)"
    # Each PATCH bumps the namespace's generation, so the next GET misses: with one miss per
    # write the hit rate is at most 1 - PATCHes / GETs.
    note "cache hit rate, ${mix%% (cached)}" "$(pct "$hits" "$((hits + misses))") of GETs ($hits hit, $misses miss; $other responses without X-Cache = PATCHes; one miss per write would give $(pct "$((hits + misses - other))" "$((hits + misses))"); aim ≥ 95%)"
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
stop_api
note "peak RSS" "$API_PEAK_RSS MB (max VmHWM of the api serve processes of this run)"
report
