#!/usr/bin/env bash
# Ensure PostgreSQL and Redis answer at DATABASE_URL / REDIS_URL.
#
# Local targets (127.0.0.1 / localhost / ::1) are installed via apt and started
# when they do not answer; remote targets must already be up. Finally the
# database named in DATABASE_URL is created when it does not exist.
#
# Meant for developer machines and CI runners (fresh Debian with only the Rust
# toolchain). Runs as root, or uses sudo when available. Idempotent and quiet:
# when everything already runs it prints a single "ok" line.
set -euo pipefail

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/app}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

LOG_NAME=ensure-services
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

is_local_host() {
    case "$1" in
        127.0.0.1 | localhost | ::1 | '') return 0 ;;
        *) return 1 ;;
    esac
}

# Percent-decode a URL component (passwords may contain %40 etc.).
urldecode() {
    printf '%b' "${1//%/\\x}"
}

# parse_url URL DEFAULT_PORT -> sets U_SCHEME U_USER U_PASS U_HOST U_PORT U_PATH
parse_url() {
    local url="$1" rest auth hostport
    U_SCHEME="${url%%://*}"
    rest="${url#*://}"
    U_PATH=""
    if [[ $rest == */* ]]; then
        U_PATH="${rest#*/}"
        rest="${rest%%/*}"
    fi
    U_PATH="${U_PATH%%\?*}"
    rest="${rest%%\?*}"
    U_USER="" U_PASS=""
    if [[ $rest == *@* ]]; then
        auth="${rest%@*}"
        hostport="${rest##*@}"
        if [[ $auth == *:* ]]; then
            U_USER="$(urldecode "${auth%%:*}")"
            U_PASS="$(urldecode "${auth#*:}")"
        else
            U_USER="$(urldecode "$auth")"
        fi
    else
        hostport="$rest"
    fi
    if [[ $hostport == \[* ]]; then # [::1]:5432
        U_HOST="${hostport#\[}"
        U_HOST="${U_HOST%%\]*}"
        U_PORT="${hostport##*\]}"
        U_PORT="${U_PORT#:}"
    elif [[ $hostport == *:* ]]; then
        U_HOST="${hostport%%:*}"
        U_PORT="${hostport##*:}"
    else
        U_HOST="$hostport"
        U_PORT=""
    fi
    [[ -n $U_HOST ]] || U_HOST=127.0.0.1
    [[ -n $U_PORT ]] || U_PORT="$2"
}

# Plain TCP connect probe (no tools needed).
tcp_open() {
    # shellcheck disable=SC2016 # $1/$2 expand in the child bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_until SECONDS CMD... : poll CMD every 0.5 s.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# --------------------------------------------------------------- postgres ---

parse_url "$DATABASE_URL" 5432
case "$U_SCHEME" in postgres | postgresql) ;; *) die "DATABASE_URL must be postgres://… (got scheme '$U_SCHEME')" ;; esac
PG_HOST="$U_HOST" PG_PORT="$U_PORT" PG_USER="${U_USER:-postgres}" PG_PASS="$U_PASS"
PG_DB="$(urldecode "${U_PATH:-postgres}")"
[[ -n $PG_DB ]] || PG_DB=postgres
export PGCONNECT_TIMEOUT=5
if [[ -n $PG_PASS ]]; then export PGPASSWORD="$PG_PASS"; fi

pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_psql() {
    psql -X -w -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"
}

ensure_pg_client() {
    command -v psql >/dev/null 2>&1 && command -v createdb >/dev/null 2>&1 && return 0
    apt_install postgresql-client
}

pg_server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# "VERSION NAME" of the local cluster to use: the one configured for PG_PORT,
# else the newest version's "main" cluster (created if missing).
pg_cluster() {
    local found ver
    found="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')"
    if [[ -n $found ]]; then
        echo "$found"
        return
    fi
    # shellcheck disable=SC2012 # version directory names are plain numbers
    ver="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    if [[ -d /etc/postgresql ]] && [[ -n "$(ls -A /etc/postgresql)" ]]; then
        # shellcheck disable=SC2012
        ver="$(ls /etc/postgresql | sort -V | tail -1)"
    fi
    if [[ ! -d /etc/postgresql/$ver/main ]]; then
        log "creating PostgreSQL $ver cluster 'main' on port $PG_PORT"
        as_root pg_createcluster --port "$PG_PORT" "$ver" main >/dev/null
    fi
    echo "$ver main"
}

start_local_postgres() {
    pg_server_installed || apt_install postgresql postgresql-contrib
    local ver name rc=0
    read -r ver name <<<"$(pg_cluster)"
    log "starting PostgreSQL cluster $ver/$name"
    # Exit code 2 = "already running"; readiness is checked below either way.
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || rc=$?
    if [[ $rc -ne 0 && $rc -ne 2 ]]; then
        log "pg_ctlcluster start exited with $rc (see /var/log/postgresql/postgresql-$ver-$name.log)"
    fi
    wait_until 30 pg_ready ||
        die "PostgreSQL did not become ready at $PG_HOST:$PG_PORT within 30 s (cluster $ver/$name; check its port and log)"
}

# Fresh Debian clusters use scram/md5 on TCP; dev/CI needs password-less TCP.
ensure_local_trust() {
    local out
    if out="$(pg_psql -d postgres -tAc 'select 1' 2>&1)"; then return 0; fi
    if ! grep -qiE 'password|authentication failed' <<<"$out"; then
        die "cannot connect to PostgreSQL at $PG_HOST:$PG_PORT as $PG_USER: ${out//$'\n'/ }"
    fi
    local ver name hba marker='# added by deploy/scripts/ensure-services.sh (local dev/CI only)'
    read -r ver name <<<"$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')"
    [[ -n ${ver:-} ]] || die "password required at $PG_HOST:$PG_PORT and no local cluster on that port to configure: $out"
    hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    log "WARNING: enabling password-less 'trust' auth for TCP from 127.0.0.1/::1 in $hba (local dev/CI machines only!)"
    if ! as_root grep -qF "$marker" "$hba"; then
        as_root sed -i "1i $marker\\nhost all all 127.0.0.1/32 trust\\nhost all all ::1/128 trust" "$hba"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
    wait_until 10 pg_psql -d postgres -tAc 'select 1' >/dev/null 2>&1 ||
        die "still cannot connect to PostgreSQL at $PG_HOST:$PG_PORT as $PG_USER after editing $hba"
}

ensure_database() {
    local exists lit="${PG_DB//\'/\'\'}"
    exists="$(pg_psql -d postgres -tAc "select 1 from pg_database where datname='$lit'" 2>&1)" ||
        die "cannot query PostgreSQL at $PG_HOST:$PG_PORT as $PG_USER: ${exists//$'\n'/ }"
    if [[ $exists != 1 ]]; then
        log "creating database $PG_DB"
        createdb -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -- "$PG_DB" ||
            die "could not create database $PG_DB at $PG_HOST:$PG_PORT as $PG_USER"
    fi
}

if ! pg_ready; then
    if is_local_host "$PG_HOST"; then
        start_local_postgres
    else
        die "PostgreSQL at $PG_HOST:$PG_PORT (DATABASE_URL) does not answer; it is remote, so start it yourself"
    fi
fi
ensure_pg_client
if is_local_host "$PG_HOST"; then ensure_local_trust; fi
ensure_database

# ------------------------------------------------------------------ redis ---

parse_url "$REDIS_URL" 6379
case "$U_SCHEME" in redis | rediss) ;; *) die "REDIS_URL must be redis://… (got scheme '$U_SCHEME')" ;; esac
RD_SCHEME="$U_SCHEME" RD_HOST="$U_HOST" RD_PORT="$U_PORT" RD_USER="$U_USER" RD_PASS="$U_PASS"

redis_ready() {
    local reply
    if [[ $RD_SCHEME == rediss ]]; then
        # TLS: only check the port is open.
        tcp_open "$RD_HOST" "$RD_PORT"
        return
    fi
    if command -v redis-cli >/dev/null 2>&1; then
        local args=(-h "$RD_HOST" -p "$RD_PORT")
        if [[ -n $RD_USER && -n $RD_PASS ]]; then args+=(--user "$RD_USER"); fi
        local envs=()
        if [[ -n $RD_PASS ]]; then envs+=("REDISCLI_AUTH=$RD_PASS"); fi
        reply="$(env "${envs[@]}" timeout 5 redis-cli "${args[@]}" ping 2>/dev/null)" || return 1
    else
        # shellcheck disable=SC2016 # $1/$2/$line expand in the child bash
        reply="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && read -r line <&3 && printf "%s" "$line"' _ "$RD_HOST" "$RD_PORT" 2>/dev/null)" || return 1
    fi
    # A NOAUTH error still means "a Redis answers here".
    [[ $reply == *PONG* || $reply == *NOAUTH* ]]
}

start_local_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
        # The package may have started its own service on the default port.
        if redis_ready; then return 0; fi
    fi
    local dir logdir
    if [[ $EUID -eq 0 ]]; then
        dir=/var/lib/redis logdir=/var/log/redis
    else
        dir="$REPO_ROOT/var/redis" logdir="$REPO_ROOT/var/redis"
    fi
    mkdir -p "$dir" "$logdir"
    log "starting redis-server on 127.0.0.1:$RD_PORT (data dir $dir, log $logdir/ci.log)"
    # Persistence off; own dbfilename so a stale dump.rdb in $dir is never loaded.
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$RD_PORT" \
        --save "" --appendonly no --dir "$dir" --dbfilename "ci-$RD_PORT.rdb" \
        --logfile "$logdir/ci.log" >/dev/null
    wait_until 15 redis_ready ||
        die "redis-server did not answer on 127.0.0.1:$RD_PORT within 15 s (see $logdir/ci.log)"
}

if ! redis_ready; then
    if is_local_host "$RD_HOST"; then
        start_local_redis
    else
        die "Redis at $RD_HOST:$RD_PORT (REDIS_URL) does not answer; it is remote, so start it yourself"
    fi
fi

echo "postgres ok at $PG_HOST:$PG_PORT/$PG_DB, redis ok at $RD_HOST:$RD_PORT"
