#!/usr/bin/env bash
# Shows the TimescaleDB chunk lock the writer's copy rule is built on (store/chunks.rs).
# In a scratch database of the local cluster (services.sh up): one session inserts a row
# that creates a new chunk and keeps its transaction open for 4 s; meanwhile a second
# session copies a row into an existing chunk (it does not wait), then a row that needs
# another new chunk (it waits, and gives up after its 2 s lock_timeout), and the lock it
# waited for is printed from pg_locks. The database is dropped.
#
#   deploy/bench/chunk-lock.sh
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up >/dev/null
eval "$(bash deploy/local/services.sh env)"
db=soilmon_chunklock_$$
psql_() { psql "$SOILMON_TEST_PG dbname=$1" -X -q -v ON_ERROR_STOP=1 "${@:2}"; }
cleanup() { psql_ postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql_ postgres -c "CREATE DATABASE $db"
psql_ "$db" >/dev/null <<'SQL'
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE h (t timestamptz NOT NULL, v int);
SELECT create_hypertable('h', by_range('t', INTERVAL '90 days'));
INSERT INTO h VALUES ('2003-01-01', 0);
SQL

psql_ "$db" -c "BEGIN" -c "INSERT INTO h VALUES ('2015-01-01', 1)" -c "SELECT pg_sleep(4)" \
    -c "COMMIT" >/dev/null &
holder=$!
sleep 0.5
elapsed() { python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.2f} s')" "$1"; }

start=$(date +%s.%N)
psql_ "$db" -c "SET lock_timeout = '2s'" -c "COPY h FROM PROGRAM 'echo 2003-01-02,2' (FORMAT csv)"
echo "row into an existing chunk, while another transaction creates one: done in $(elapsed "$start")"

(sleep 1; psql_ "$db" -At -c "SELECT 'waiting for: ' || mode || ' on ' || relation::regclass
    FROM pg_locks WHERE NOT granted AND relation IS NOT NULL") &
start=$(date +%s.%N)
if psql_ "$db" -c "SET lock_timeout = '2s'" \
    -c "COPY h FROM PROGRAM 'echo 2019-01-02,3' (FORMAT csv)" 2>/dev/null; then
    echo "row into another new chunk: done in $(elapsed "$start") (no wait)"
else
    echo "row into another new chunk: lock timeout after $(elapsed "$start")"
fi
wait "$holder"
