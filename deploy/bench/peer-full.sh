#!/usr/bin/env bash
# Full peer-bench runs (the COPY limit, the Python peer and soilmon in one run each), with
# soilmon's schema from an earlier run dropped before the run starts, and a summary.
#
#   deploy/bench/peer-full.sh [RUNS] [N]
#
# The harness gives every other consumer a fresh table before it starts the clock; soilmon's
# peer script drops and recreates its own schema after the clock has started. With the
# previous run's 1.6 M readings still there, that DROP SCHEMA is timed as part of soilmon's
# drain (0.2–6.7 s on this machine kind: longer when autovacuum is working on the old
# tables), so this script drops the schema first, outside the timing: the run then measures
# what a fresh table measures for the other consumers.
# Prints one line per run (seconds of each consumer, soilmon's ratios and peak RSS, and its
# drain from its own log: start to last commit, deploy/bench/drain-split.py) and the
# medians; the harness's JSON stays in ../shared/peer-bench/results/. Needs a release build,
# the services up and the peer bench's Python packages.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
runs=${1:-3} n=${2:-200000}
cd "$(dirname "$0")/../.."
root=$PWD
. deploy/bench/peer-env.sh
export BENCH_ONLY=limit_copy,peer_python,soilmon
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for i in $(seq 1 "$runs"); do
	fresh_soilmon_schema >/dev/null
	out=$(SOILMON_PROJECT=$root bash "$bench/run.sh" "$n" 2>&1)
	json=$(echo "$out" | sed -n 's/^results: \(results\/[^ ]*\.json\).*/\1/p' | tail -1)
	drain=$(python3 deploy/bench/drain-split.py "$bench/${json%.json}-logs/soilmon.log" | sed -n 's/^drain_s=\([0-9.]*\).*/\1/p' || true)
	python3 - "$bench/$json" "$i" "${drain:-?}" >>"$summary" <<'PY'
import json, sys
runs = {r["name"]: r for r in json.load(open(sys.argv[1]))["results"]}
copy, py, s = (runs[k]["seconds"] for k in ("limit_copy", "peer_python", "soilmon"))
ok = runs["soilmon"]["verify"]["ok"]
print(f"{sys.argv[2]} {copy:.2f} {py:.2f} {s:.2f} {copy / s:.3f} {py / s:.2f} {runs['soilmon']['peak_rss_mb']} {sys.argv[3]} {ok} {sys.argv[1].rsplit('/', 1)[-1]}")
PY
	tail -1 "$summary"
done
python3 - "$summary" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda k: statistics.median(float(r[k]) for r in rows)
print("run copy_s python_s soilmon_s x_copy x_python rss_mb drain_s verified json")
for r in rows:
    print(" ".join(r))
print(f"median copy_s={med(1):.2f} python_s={med(2):.2f} soilmon_s={med(3):.2f} "
      f"x_copy={med(4):.3f} x_python={med(5):.2f} rss_mb={med(6):.1f}")
PY
