#!/usr/bin/env bash
# The demo: installs and starts what is missing (TimescaleDB, Mosquitto), builds soilmon,
# loads the demo registry (44 points across the four counties), runs the service, lets a
# simulated station network publish for DEMO_SECONDS (default 30) with some exceedances
# and some deliberately bad messages, shows what a Yangchun (441781) bureau received, and
# summarises the database. The service is stopped at the end (SIGTERM).
#
#   deploy/local/demo.sh            DEMO_SECONDS=60 DEMO_RATE=50 deploy/local/demo.sh
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
command -v cargo >/dev/null || { echo "cargo is required (the Rust toolchain)" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/soilmon
RUN_DIR=$(mktemp -d /tmp/soilmon-demo.XXXXXX)
$BIN migrate
$BIN points import config/points/demo.csv

$BIN run >"$RUN_DIR/soilmon.log" 2>&1 &
SOILMON_PID=$!
mosquitto_sub -h 127.0.0.1 -p "$SOILMON__MQTT__PORT" -q 1 -v -t 'soil/v1/alerts/441781/#' >"$RUN_DIR/bureau-441781.txt" &
SUB_PID=$!
cleanup() { kill "$SUB_PID" 2>/dev/null || true; kill -TERM "$SOILMON_PID" 2>/dev/null || true; wait "$SOILMON_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  grep -q "ready: subscribed" "$RUN_DIR/soilmon.log" && break
  kill -0 "$SOILMON_PID" 2>/dev/null || { cat "$RUN_DIR/soilmon.log"; exit 1; }
  sleep 0.2
done

echo "== simulating the station network for ${DEMO_SECONDS:-30} s"
$BIN simulate --duration "${DEMO_SECONDS:-30}" --rate "${DEMO_RATE:-20}" \
  --exceed-share 0.1 --bad-share 0.02 --show-rejects --seed "$(date +%s)"
sleep 3

psql_q() { psql "$SOILMON__DATABASE__URL" -X -q -c "$1"; }
echo "== readings by judgement (all runs)"
psql_q "SELECT level, count(*) FROM readings_full GROUP BY level ORDER BY level"
echo "== refused messages by reason"
psql_q "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
echo "== open incidents by county and level"
psql_q "SELECT county_code, level, count(*) FROM incidents WHERE state = 'open' GROUP BY 1, 2 ORDER BY 1, 2"
echo "== outbox (alerts and reject replies)"
psql_q "SELECT kind, count(*) AS events, count(published_at) AS published FROM outbox GROUP BY kind"
echo "== what the Yangchun bureau (soil/v1/alerts/441781/#) received in this run: $(wc -l <"$RUN_DIR/bureau-441781.txt") alerts; the first three:"
head -n 3 "$RUN_DIR/bureau-441781.txt"
echo "== soil screening tiers (farmland, soil only)"
$BIN tiers | head -n 12
echo "== service log: $RUN_DIR/soilmon.log"
