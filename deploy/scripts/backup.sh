#!/usr/bin/env bash
# `just backup [FILE]`: a consistent logical backup of the database in DATABASE_URL, in pg_dump's
# custom format (compressed, restorable selectively and in parallel by pg_restore).
# Default FILE: var/backups/<db>-<UTC timestamp>.dump. Prints the file's path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash deploy/scripts/ensure-tools.sh backup >/dev/null
: "${DATABASE_URL:?set DATABASE_URL}"
db=${DATABASE_URL##*/}
db=${db%%\?*}
file=${1:-var/backups/$db-$(date -u +%Y%m%dT%H%M%SZ).dump}
mkdir -p "$(dirname "$file")"
# One snapshot (pg_dump runs in a single repeatable-read transaction): no need to stop the API.
pg_dump --format=custom --compress=6 --no-owner --no-privileges --file="$file.partial" "$DATABASE_URL"
mv "$file.partial" "$file"
# A dump pg_restore cannot list is no backup.
pg_restore --list "$file" >/dev/null
printf '%s\n' "$file"
