#!/usr/bin/env bash
# What each index on `readings` costs a COPY of the same rows: the readings of a drained
# schema (a soilmon-only peer-bench run leaves `soilmon_peer`) are written once, in
# sample-key order (the order batches store them), to a binary file on the server, then
# copied back into a fresh hypertable shaped like `readings` (same columns, checks and chunk
# interval) carrying one index variant at a time, ROUNDS times, the variants' order turned
# every round. Prints each COPY's seconds and each variant's median.
#
#   deploy/bench/readings-index-cost.sh [SCHEMA] [ROUNDS]
#
# Variants: `current` (point_key, metal, sampled_at DESC), the one index schema 10 keeps;
# `sample_key` (sample_key), one a design reaching readings through `samples` would need;
# `none`. Needs the services up (deploy/local/services.sh) and the database `benchpeers`
# (the peer bench's); runs as the cluster's superuser, since COPY writes a server-side file.
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0;; esac
schema=${1:-soilmon_peer} rounds=${2:-3}
export PGHOST=${PGHOST:-/var/tmp/soilmon-local/pg/sock} PGPORT=${PGPORT:-55432} PGUSER=${PGUSER:-postgres}
db=benchpeers file=/tmp/soilmon-readings-index-cost.bin
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
interval=$(q -Atc "SELECT time_interval FROM timescaledb_information.dimensions
                   WHERE hypertable_schema = '$schema' AND hypertable_name = 'readings'")
[ -n "$interval" ] || { echo "no readings hypertable in schema $schema" >&2; exit 2; }
rows=$(q -Atc "SELECT count(*) FROM $schema.readings")
q -c "COPY (SELECT * FROM $schema.readings ORDER BY sample_key) TO '$file' (FORMAT binary)"
results=$(mktemp)
trap 'rm -f "$file" "$results"; q -c "DROP TABLE IF EXISTS public.readings_index_cost" >/dev/null 2>&1 || true' EXIT
echo "rows=$rows chunk_interval=$interval"
index_of() {
	case $1 in
	current) echo "CREATE INDEX ON public.readings_index_cost (point_key, metal, sampled_at DESC)" ;;
	sample_key) echo "CREATE INDEX ON public.readings_index_cost (sample_key)" ;;
	none) echo "SELECT 1" ;;
	esac
}
for r in $(seq 1 "$rounds"); do
	order="current sample_key none"
	[ $((r % 2)) -eq 0 ] && order="none sample_key current"
	for v in $order; do
		q -c "DROP TABLE IF EXISTS public.readings_index_cost" \
		  -c "CREATE TABLE public.readings_index_cost (LIKE $schema.readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)" \
		  -c "SELECT create_hypertable('public.readings_index_cost', 'sampled_at', chunk_time_interval => INTERVAL '$interval', create_default_indexes => false)" \
		  -c "$(index_of "$v")" -c "CHECKPOINT" >/dev/null
		start=$EPOCHREALTIME
		q -c "COPY public.readings_index_cost FROM '$file' (FORMAT binary)" >/dev/null
		secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
		echo "round $r $v copy_s=$secs" | tee -a "$results"
	done
done
python3 - "$results" <<'PY'
import re, statistics, sys
by = {}
for line in open(sys.argv[1]):
    f = line.split()
    by.setdefault(f[2], []).append(float(re.search(r"copy_s=([0-9.]+)", line).group(1)))
for v, xs in by.items():
    print(f"median {v}: copy_s={statistics.median(xs):.2f} runs={len(xs)}")
PY
