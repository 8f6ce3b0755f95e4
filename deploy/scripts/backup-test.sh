#!/usr/bin/env bash
# `just backup-test`: a seeded database → `backup.sh` → `restore.sh` into a fresh database →
# the same tables, the same row counts and the same checksum of every row, the same schema.
# Uses throw-away databases on the server of TEST_DATABASE_URL; bounded (timeout in the recipe).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash deploy/scripts/ensure-tools.sh backup >/dev/null
admin=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
src=backup_test_src_$$
dst=backup_test_dst_$$
work=$(mktemp -d)
cleanup() {
    psql -X -w -q "$admin" -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
psql -X -w -q "$admin" -v ON_ERROR_STOP=1 -c "CREATE DATABASE $src"

echo "backup-test: migrate and seed $src"
# The recipe builds it first, outside the time bound.
api=${CARGO_TARGET_DIR:-target}/debug/api
[[ -x $api ]] || cargo build --quiet --bin api
export DATABASE_URL="$base/$src" APP_ENV=development BCRYPT_COST=4 LOG_FORMAT=json RUST_LOG=warn
export REDIS_URL=${TEST_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379}} REDIS_PREFIX="backup-test-$$"
"$api" migrate
"$api" seed --users 20 --tasks 500

echo "backup-test: backup and restore"
file=$(bash deploy/scripts/backup.sh "$work/src.dump")
restored=$(DATABASE_URL="$base/$src" bash deploy/scripts/restore.sh "$file" "$dst")

# Per table: row count and an md5 over every row's text, in a fixed order.
fingerprint() {
    local url=$1 t
    for t in $(psql -X -w -qtA "$url" -c "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"); do
        psql -X -w -qtA "$url" -c "SELECT '$t', count(*), md5(coalesce(string_agg(r::text, E'\n' ORDER BY r::text), '')) FROM $t r"
    done
}
fingerprint "$base/$src" >"$work/src.txt"
fingerprint "$restored" >"$work/dst.txt"
pg_dump --schema-only --no-owner --no-privileges "$base/$src" | grep -Ev '^(--|\\(un)?restrict )' >"$work/src.sql"
pg_dump --schema-only --no-owner --no-privileges "$restored" | grep -Ev '^(--|\\(un)?restrict )' >"$work/dst.sql"

tables=$(wc -l <"$work/src.txt")
rows=$(awk -F'|' '{ n += $2 } END { print n }' "$work/src.txt")
[[ $tables -ge 10 && $rows -ge 500 ]] || { echo "backup-test: the seed wrote too little ($tables tables, $rows rows)" >&2; cat "$work/src.txt" >&2; exit 1; }
if ! diff -u "$work/src.txt" "$work/dst.txt"; then echo "backup-test: FAILED: rows differ" >&2; exit 1; fi
if ! diff -u "$work/src.sql" "$work/dst.sql" >&2; then echo "backup-test: FAILED: schema differs" >&2; exit 1; fi
echo "backup-test: ok — $tables tables, $rows rows, identical counts, checksums and schema after restore ($(du -h "$file" | cut -f1) dump)"
