#!/usr/bin/env bash
# Interleaved soilmon-only peer-bench runs of two builds, the order turned round every other
# pair: base new, new base, base new, ...
#
#   deploy/bench/peer-ab.sh BASE_PROJECT NEW_PROJECT [PAIRS] [N]
#
# The order turns so that a drift of the machine's speed during the runs (seen within
# minutes here) or anything that favours one place in a pair cancels between two pairs
# instead of favouring one build: use an even number of pairs. At the end it prints each
# side's medians.
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
case "${1:-}" in -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0;; esac
base=$1 new=$2 pairs=${3:-3} n=${4:-200000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/peer-env.sh"
export BENCH_ONLY=soilmon
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for i in $(seq 1 "$pairs"); do
	order="base new"
	[ $((i % 2)) -eq 0 ] && order="new base"
	for side in $order; do
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
		echo "$(date -u +%H:%M) $side $i drop_s=$drop $res $split" | tee -a "$summary"
	done
done
# Medians per side of the harness's seconds, the drain and the finishes' sum.
python3 - "$summary" <<'PY'
import re, statistics, sys
runs = {"base": [], "new": []}
for line in open(sys.argv[1]):
    f = line.split()
    get = lambda pat: float(re.search(pat, line).group(1))
    runs[f[1]].append((get(r"harness_s=([0-9.]+)"), get(r"drain_s=([0-9.]+)"),
                       get(r"finish_ms sum ([0-9.]+) s")))
for side, rs in runs.items():
    if rs:
        h, d, fin = (statistics.median(x) for x in zip(*rs))
        print(f"median {side}: harness_s={h:.2f} drain_s={d:.2f} finish_sum_s={fin:.2f} runs={len(rs)}")
PY
