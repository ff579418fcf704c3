#!/usr/bin/env bash
# Interleaved soilmon-only peer-bench runs of two builds: base, new, base, new, ...
#
#   deploy/bench/peer-ab.sh BASE_PROJECT NEW_PROJECT [PAIRS] [N]
#
# Each PROJECT is a directory holding target/release/soilmon and deploy/bench/peer-view.sql
# (a checkout with its release build). Runs ../shared/peer-bench/run.sh N (default 200,000)
# with BENCH_ONLY=soilmon and BENCH_POLL=1 on the project's cluster, dropping the previous
# run's schema first (outside the timing; `drop_s` is how long that took), with soilmon's
# per-batch log on; prints for each run the harness's seconds (rounded up to its 1 s poll),
# soilmon's peak RSS (MB), whether the harness verified the rows, and the drain split of
# deploy/bench/drain-split.py. BASE_ENV and NEW_ENV, if set, are extra environment
# assignments for one side ("SOILMON__INGEST__BATCH_MAX=1000 _RJEM_MALLOC_CONF=…"), so one
# build can be compared with itself under two settings. Needs the services up and the peer
# bench's Python packages.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
base=$1 new=$2 pairs=${3:-3} n=${4:-200000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/peer-env.sh"
export BENCH_ONLY=soilmon
for i in $(seq 1 "$pairs"); do
	for side in base new; do
		project=$base extra=${BASE_ENV:-}
		[ "$side" = new ] && project=$new extra=${NEW_ENV:-}
		drop=$(fresh_soilmon_schema)
		# $extra is split on spaces on purpose: one word per assignment
		# shellcheck disable=SC2086
		out=$(env $extra SOILMON_PROJECT="$project" bash "$bench/run.sh" "$n" 2>&1)
		logs=$(echo "$out" | sed -n 's/.*logs: \(results\/[^ ]*-logs\).*/\1/p' | tail -1)
		res=$(echo "$out" | grep '^{"name": "soilmon"' | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print("harness_s=%s rss_mb=%s verified=%s" % (d["seconds"], d["peak_rss_mb"], d["verify"]["ok"]))')
		split=$(python3 "$here/drain-split.py" "$bench/$logs/soilmon.log" | tr '\n' ' ' | tr -s ' ')
		echo "$(date -u +%H:%M) $side $i drop_s=$drop $res $split"
	done
done
