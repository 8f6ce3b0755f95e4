#!/usr/bin/env bash
# `just restore FILE [DB]`: restores a `just backup` file into a NEW database DB (default:
# <database of DATABASE_URL>_restored_<UTC yyyymmdd_hhmmss>, lower case) on the server of DATABASE_URL, in one
# transaction (all or nothing), and prints the new database's URL. It never writes into an
# existing database: point DATABASE_URL at the restored one (or rename it) once it is checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash deploy/scripts/ensure-tools.sh backup >/dev/null
: "${DATABASE_URL:?set DATABASE_URL}"
file=${1:?usage: restore.sh FILE [DB]}
[[ -r $file ]] || { echo "restore: cannot read $file" >&2; exit 1; }
base=${DATABASE_URL%/*}
src_db=${DATABASE_URL##*/}
query=""
if [[ $src_db == *\?* ]]; then query="?${src_db#*\?}"; src_db=${src_db%%\?*}; fi
db=${2:-${src_db}_restored_$(date -u +%Y%m%d_%H%M%S)}
[[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "restore: bad database name $db" >&2; exit 1; }
admin_url="$base/postgres$query"
target_url="$base/$db$query"
exists=$(psql -X -w -qtA "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
[[ -z $exists ]] || { echo "restore: database $db exists; restore only into a fresh one" >&2; exit 1; }
psql -X -w -q "$admin_url" -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\""
if ! pg_restore --no-owner --no-privileges --exit-on-error --single-transaction --dbname="$target_url" "$file"; then
    psql -X -w -q "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\"" || true
    echo "restore: pg_restore failed; $db dropped" >&2
    exit 1
fi
psql -X -w -q "$target_url" -c "ANALYZE" >/dev/null
printf '%s\n' "$target_url"
