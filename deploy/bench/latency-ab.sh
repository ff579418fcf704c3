#!/usr/bin/env bash
# Interleaved alert-latency and lab-upload runs of two soilmon binaries, the order turned
# round every other pair: base new, new base, base new, ... (the machine's drift then cancels
# between two pairs: use an even number of pairs).
#
#   deploy/bench/latency-ab.sh BASE_SOILMON NEW_SOILMON [PAIRS] [OUT_DIR]
#
# Each run is `soilmon-bench --skip-limits --skip-drain --latency-seconds 30` (this checkout's
# release build of the bench, a fresh database and broker per run) against one binary; its
# JSON and the latency timeline (`--latency-timeline`, see latency-timeline.py) are written to
# OUT_DIR (default target/bench/latency-ab) as {base,new}-N.json / .csv. Prints per run the
# alert latency p50 / p99 / max, the lab upload's seconds and the server's split, then the
# medians per side. Needs the services up (deploy/local/services.sh up).
set -euo pipefail
case "${1:-}" in -h|--help|"") awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; [ -n "${1:-}" ]; exit;; esac
base=$(realpath "$1") new=$(realpath "$2") pairs=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${4:-$root/target/bench/latency-ab}
mkdir -p "$out"
eval "$(bash "$root/deploy/local/services.sh" env)"
cd "$root"
for i in $(seq 1 "$pairs"); do
	order="base new"
	[ $((i % 2)) -eq 0 ] && order="new base"
	for side in $order; do
		bin=$base
		[ "$side" = new ] && bin=$new
		"$root/target/release/soilmon-bench" --skip-limits --skip-drain --latency-seconds 30 \
			--soilmon-bin "$bin" --latency-timeline "$out/$side-$i.csv" \
			--json-out "$out/$side-$i.json" >"$out/$side-$i.out" 2>&1
		python3 - "$side" "$i" "$out/$side-$i.json" <<'PY'
import json, sys
side, i, path = sys.argv[1:]
d = json.load(open(path))
l, b = d["latency"], d["lab"]
print(f"{side} {i}: alert p50 {l['p50_ms']:.1f} ms, p99 {l['p99_ms']:.1f} ms, max {l['max_ms']:.1f} ms; "
      f"lab {b['rows']['seconds']:.2f} s (check {b['server_check_ms']} ms, COPY {b['copy_ms']} ms, "
      f"readings {b['readings_ms']} ms); soilmon CPU {l['resources']['cpu_seconds']:.1f} s")
PY
	done
done
python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
for side in ("base", "new"):
    runs = [json.load(open(f"{out}/{side}-{i}.json")) for i in range(1, pairs + 1)]
    med = lambda f: statistics.median(f(r) for r in runs)
    print(f"{side} medians: alert p50 {med(lambda r: r['latency']['p50_ms']):.1f} ms, "
          f"p99 {med(lambda r: r['latency']['p99_ms']):.1f} ms; "
          f"lab {med(lambda r: r['lab']['rows']['seconds']):.2f} s; "
          f"soilmon CPU (latency) {med(lambda r: r['latency']['resources']['cpu_seconds']):.1f} s")
PY
