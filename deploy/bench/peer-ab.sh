#!/usr/bin/env bash
# Interleaved soilmon-only peer-bench runs of two builds: base, new, base, new, ...
#
#   deploy/bench/peer-ab.sh BASE_PROJECT NEW_PROJECT [PAIRS] [N]
#
# Each PROJECT is a directory holding target/release/soilmon and deploy/bench/peer-view.sql
# (a checkout with its release build). Runs ../shared/peer-bench/run.sh N (default 200,000)
# with BENCH_ONLY=soilmon and BENCH_POLL=1 on the project's cluster, dropping the previous
# run's schema first (outside the timing), with soilmon's per-batch log on; prints for each
# run the harness's seconds (rounded up to its 1 s poll) and the drain split of
# deploy/bench/drain-split.py. Needs the services up and the peer bench's Python packages.
set -euo pipefail
base=$1 new=$2 pairs=${3:-3} n=${4:-200000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
eval "$(bash "$root/deploy/local/services.sh" env)"
export PGHOST=/var/tmp/soilmon-local/pg/sock PGPORT=55432 PGUSER=postgres BENCH_POLL=1 BENCH_ONLY=soilmon
export BENCH_DSN=postgresql://postgres@127.0.0.1:55432/benchpeers
export RUST_LOG=info,soilmon::telemetry=debug
bench=$root/../shared/peer-bench
for i in $(seq 1 "$pairs"); do
	for side in base new; do
		project=$base
		[ "$side" = new ] && project=$new
		psql -X -q -d benchpeers -c "DROP SCHEMA IF EXISTS soilmon_peer CASCADE" >/dev/null 2>&1 || true
		out=$(SOILMON_PROJECT=$project bash "$bench/run.sh" "$n" 2>&1)
		logs=$(echo "$out" | sed -n 's/.*logs: \(results\/[^ ]*-logs\).*/\1/p' | tail -1)
		secs=$(echo "$out" | awk '$1 == "soilmon" && $2 ~ /^[0-9.]+$/ {print $2}' | tail -1)
		split=$(python3 "$here/drain-split.py" "$bench/$logs/soilmon.log" | tr '\n' ' ' | tr -s ' ')
		echo "$side $i harness_s=$secs $split"
	done
done
