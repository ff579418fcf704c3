#!/usr/bin/env bash
# Interleaved alert-latency runs of two soilmon binaries with the collector's per-batch log
# on, each split by drain-split.py, the order turned round every other pair: base new, new
# base, base new, ... (so that the machine's drift cancels between two pairs: use an even
# number of pairs).
#
#   deploy/bench/latency-split-ab.sh BASE_SOILMON NEW_SOILMON [PAIRS] [OUT_DIR]
#
# Each run is `soilmon-bench --skip-limits --skip-drain --skip-lab --keep-db --soilmon-env
# RUST_LOG=info,soilmon::telemetry=debug` (this checkout's release build of the bench)
# against one binary; drain-split.py then splits its kept log (per batch: stage, copy, wait,
# finish, the oldest message's age at commit; per publishing round: its start up to the rows
# read, publish, PUBACKs), and the kept database and log are removed. Writes
# {base,new}-N.json and .split to OUT_DIR (default target/bench/latency-split-ab) and prints
# per run the alert p50 / p99, a batch's stage and copy phases, the publishing round's start
# and the oldest message's age at commit (each median / p99), and at the end each side's
# medians of the runs' figures. The log costs CPU: compare runs of this script
# with each other, not with latency-ab.sh. Needs the services up.
set -euo pipefail
case "${1:-}" in -h|--help|"") awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; [ -n "${1:-}" ]; exit;; esac
base=$(realpath "$1") new=$(realpath "$2") pairs=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${4:-$root/target/bench/latency-split-ab}
mkdir -p "$out"
eval "$(bash "$root/deploy/local/services.sh" env)"
export PGHOST=/var/tmp/soilmon-local/pg/sock PGPORT=55432 PGUSER=postgres
cd "$root"
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for i in $(seq 1 "$pairs"); do
	order="base new"
	[ $((i % 2)) -eq 0 ] && order="new base"
	for side in $order; do
		bin=$base
		[ "$side" = new ] && bin=$new
		"$root/target/release/soilmon-bench" --skip-limits --skip-drain --skip-lab --keep-db \
			--soilmon-bin "$bin" --soilmon-env RUST_LOG=info,soilmon::telemetry=debug \
			--json-out "$out/$side-$i.json" >"$out/$side-$i.out" 2>&1
		db=$(sed -n 's/^bench: kept database \([^;]*\);.*/\1/p' "$out/$side-$i.out")
		dir=$(sed -n 's/^bench: kept database [^;]*; logs in \(.*\)$/\1/p' "$out/$side-$i.out")
		python3 deploy/bench/drain-split.py "$dir"/soilmon-*-latency.log >"$out/$side-$i.split"
		psql -XAtqc "DROP DATABASE $db WITH (FORCE)" postgres
		rm -rf "$dir"
		python3 - "$side" "$i" "$out/$side-$i.json" "$out/$side-$i.split" <<'PY'
import json, re, sys
side, i, path, split = sys.argv[1:]
l = json.load(open(path))["latency"]
def med_p99(phase):
    line = next(ln for ln in open(split) if phase in ln)
    m = re.search(r"median\s+([\d.]+) ms.*p99\s+([\d.]+) ms", line)
    return f"{m.group(1)} / {m.group(2)} ms"
print(f"{side} {i}: alert p50 {l['p50_ms']:.1f} ms, p99 {l['p99_ms']:.1f} ms; "
      f"stage {med_p99('stage_ms')}; copy {med_p99('copy_ms')}; "
      f"round start {med_p99('select_ms')}; oldest at commit {med_p99('oldest_ms')}")
PY
	done
done | tee "$summary"
python3 - "$summary" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    side = line.split()[0]
    runs.setdefault(side, []).append(line)
for side in ("base", "new"):
    lines = runs.get(side, [])
    if not lines:
        continue
    def med(label):
        pattern = re.escape(label) + r" ([\d.]+)"
        return statistics.median(float(re.search(pattern, ln).group(1)) for ln in lines)
    p50, p99, stage, copy, start = (med(k) for k in ("p50", "p99", "stage", "copy", "round start"))
    print(f"median {side}: alert p50 {p50:.1f} ms, p99 {p99:.1f} ms; stage {stage:.2f} ms; "
          f"copy {copy:.2f} ms; round start {start:.2f} ms; runs={len(lines)}")
PY
