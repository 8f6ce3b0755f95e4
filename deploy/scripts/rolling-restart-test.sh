#!/usr/bin/env bash
# `just rolling-restart-test`: zero-downtime restarts, proved with a real load balancer.
# Two `api serve` processes behind HAProxy (Debian package), which health-checks /health/ready
# every 200 ms; wrk keeps a steady load on GET /v1/products (Postgres + Redis cache) through it
# while each instance in turn gets SIGTERM, exits, is started again and taken back into rotation.
# Passes only with zero socket errors (connect/read/write/timeout) and zero non-2xx responses.
# What makes it work: on SIGTERM /health/ready answers 503 at once while the listener keeps
# serving for SHUTDOWN_DELAY, so HAProxy takes the instance out before it stops accepting.
# Bounded: ~40 s (timeout in the recipe). Needs the debug api binary (`just` builds it first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash deploy/scripts/ensure-tools.sh haproxy >/dev/null
admin=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
db=rolling_restart_$$
work=$(mktemp -d)
pids=()
cleanup() {
    exec 2>/dev/null # no "Killed" job notices for the processes stopped here
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -X -w -q "$admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    if [[ ${keep_logs:-0} -eq 0 ]]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT
fail() { keep_logs=1; echo "rolling-restart-test: FAILED: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
lb=$(free_port); a=$(free_port); b=$(free_port); stats=$(free_port)

# The recipe builds it first, outside the time bound.
api=$(realpath "${CARGO_TARGET_DIR:-target}")/debug/api
[[ -x $api ]] || cargo build --quiet --bin api
psql -X -w -q "$admin" -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
export DATABASE_URL="$base/$db" APP_ENV=development BCRYPT_COST=4 LOG_FORMAT=json RUST_LOG=warn
export REDIS_URL=${TEST_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379}} REDIS_PREFIX="rolling-$$"
export RATE_LIMIT_ENABLED=false SHUTDOWN_DELAY=${SHUTDOWN_DELAY:-2s} API_WORKERS=2
"$api" migrate >/dev/null
"$api" seed >/dev/null

declare -A pid_of
start_api() { # name port
    API_ADDR=127.0.0.1:$2 "$api" serve >>"$work/$1.log" 2>&1 &
    pid_of[$1]=$!
    pids+=("$!")
}
wait_http() { # url expected-status seconds
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) == "$2" ]] && return 0
        sleep 0.05
    done
    return 1
}
server_state() { # name → UP / DOWN / …  (HAProxy's stats CSV, field 18)
    curl -s "http://127.0.0.1:$stats/stats;csv" | awk -F, -v s="$1" '$1 == "api" && $2 == s { print $18 }'
}
wait_state() { # name state seconds
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        [[ $(server_state "$1") == "$2"* ]] && return 0
        sleep 0.05
    done
    return 1
}

start_api a "$a"
start_api b "$b"
wait_http "http://127.0.0.1:$a/health/ready" 200 30 || fail "instance a did not become ready"
wait_http "http://127.0.0.1:$b/health/ready" 200 30 || fail "instance b did not become ready"

cat >"$work/haproxy.cfg" <<CFG
global
    maxconn 1000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    # No retries and no redispatch: a request sent to a closing instance must fail visibly.
    retries 0
frontend lb
    bind 127.0.0.1:$lb
    default_backend api
frontend stats
    bind 127.0.0.1:$stats
    stats enable
    stats uri /stats
backend api
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
    server a 127.0.0.1:$a check
    server b 127.0.0.1:$b check
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=("$!")
wait_state a UP 10 && wait_state b UP 10 || fail "HAProxy did not see both instances up"
wait_http "http://127.0.0.1:$lb/v1/products" 200 5 || fail "no 200 through HAProxy"

duration=24
wrk -t2 -c16 -d${duration}s --timeout 5s "http://127.0.0.1:$lb/v1/products" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
sleep 3

restart() { # name port
    local t0=$SECONDS
    kill -TERM "${pid_of[$1]}"
    wait_state "$1" DOWN 5 || fail "HAProxy did not take $1 out after SIGTERM"
    local status=0
    wait "${pid_of[$1]}" || status=$?
    [[ $status -eq 0 ]] || fail "instance $1 exited with $status after SIGTERM"
    start_api "$1" "$2"
    wait_state "$1" UP 30 || fail "$1 did not come back into rotation"
    echo "rolling-restart-test: $1 restarted (SIGTERM → exit 0 → back in rotation) in $((SECONDS - t0)) s"
}
restart a "$a"
sleep 2
restart b "$b"
wait "$wrk_pid" || fail "wrk failed: $(cat "$work/wrk.txt")"

requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
if grep -qE 'Socket errors|Non-2xx' "$work/wrk.txt"; then
    cat "$work/wrk.txt" >&2
    fail "requests failed during the restarts"
fi
[[ ${requests:-0} -gt 1000 ]] || { cat "$work/wrk.txt" >&2; fail "too little load ($requests requests)"; }
echo "rolling-restart-test: ok — $requests requests over ${duration} s through HAProxy while both instances restarted: 0 socket errors, 0 non-2xx (SHUTDOWN_DELAY=$SHUTDOWN_DELAY)"
