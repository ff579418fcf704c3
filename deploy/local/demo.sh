#!/usr/bin/env bash
# The demo: installs and starts what is missing (TimescaleDB, Mosquitto), builds soilmon,
# loads the demo registry (44 points across the four counties, plus the action plan's annex
# sites), runs the service, lets a simulated station network publish for DEMO_SECONDS
# (default 30) with some exceedances and some deliberately bad messages, uploads a lab batch
# with crop samples, an old sample, a late one and a development-land plot's exceedance, and
# an enterprise's self-monitoring batch, shows what a Yangchun (441781) bureau received (a
# late exceedance and an overdue point among it), the farmland categories, the plot
# candidates and the coverage, summarises the database, and prints the web console's URL
# with tokens to sign in with. The service is stopped at the end (SIGTERM) unless DEMO_KEEP=1.
#
#   deploy/local/demo.sh            DEMO_SECONDS=60 DEMO_RATE=50 deploy/local/demo.sh
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
bash deploy/local/assets.sh   # the web console's browser libraries (web/node_modules)
eval "$(bash deploy/local/services.sh env)"
command -v cargo >/dev/null || { echo "cargo is required (the Rust toolchain)" >&2; exit 1; }
# SOILMON_DEMO_BIN: run an already built binary instead of building the release one.
if [ -n "${SOILMON_DEMO_BIN:-}" ]; then
  BIN=$SOILMON_DEMO_BIN
else
  cargo build --release --quiet
  BIN=target/release/soilmon
fi
RUN_DIR=$(mktemp -d /tmp/soilmon-demo.XXXXXX)
$BIN migrate
$BIN points import config/points/demo.csv
# The action plan's annex: the grain county's paddy (Yangchun), the vegetable county
# (Yangxi), the three tailings ponds and two landfills under key supervision, a drinking-water
# source area. Not simulated: their samples come from the lab batch below.
$BIN points import config/points/annex.csv
# Demo development land: two plots (地块) with three points; and the annex's tailings ponds
# and landfills as key supervised enterprises (their credit codes are made up, marked demo).
$BIN points import config/points/demo-plots.csv
$BIN plots import config/plots/demo.csv --by demo
$BIN enterprises import config/enterprises/demo.csv
# Check for overdue points every 5 s (default 60 s) so the demo shows one quickly.
export SOILMON__NETWORK__OVERDUE_CHECK_SECS=5
# Console sign-in tokens for this run (the tokens file lives in the run's temp dir, outside
# the repository): a Yangchun (441781) bureau, a lab and an administrator.
export SOILMON__HTTP__TOKENS_FILE="$RUN_DIR/tokens"
BUREAU_TOKEN=$($BIN tokens add demo-yangchun --role bureau --county 441781 | sed -n 's/^token: //p')
LAB_TOKEN=$($BIN tokens add demo-lab --role lab | sed -n 's/^token: //p')
echo "$LAB_TOKEN" >"$RUN_DIR/lab-token"
ADMIN_TOKEN=$($BIN tokens add demo-admin --role admin | sed -n 's/^token: //p')
# The Renda lead-zinc tailings pond's own token (named by its demo credit code).
$BIN tokens add 91441781MA0DEM0T2K --role enterprise | sed -n 's/^token: //p' >"$RUN_DIR/enterprise-token"
CONSOLE_URL="http://${SOILMON__HTTP__ADDR:-127.0.0.1:8480}/console"
print_console() {
  echo "== web console: $CONSOLE_URL   (public page: ${CONSOLE_URL%/console}/public)"
  echo "   sign in as the Yangchun bureau with: $BUREAU_TOKEN"
  echo "   lab: $LAB_TOKEN   admin: $ADMIN_TOKEN"
}

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

print_console
echo "== simulating the station network for ${DEMO_SECONDS:-30} s"
$BIN simulate --duration "${DEMO_SECONDS:-30}" --rate "${DEMO_RATE:-20}" \
  --exceed-share 0.1 --bad-share 0.02 --show-rejects --seed "$(date +%s)"
sleep 3

echo "== a field XRF screening of the Digang landfill point now (Cd 0.1, clean) ..."
mosquitto_pub -h 127.0.0.1 -p "$SOILMON__MQTT__PORT" -q 1 -t soil/v1/stations/demo-xrf/readings -m \
  "{\"msg_id\": \"demo-xrf-$(date +%s)\", \"point_id\": \"441781-R-0104\", \"sampled_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"method\": \"XRF\", \"readings\": [{\"metal\": \"Cd\", \"value\": 0.1, \"unit\": \"mg/kg\"}]}"
sleep 2
echo "== ... then the lab batch: crops on the grain and vegetable county points, a 2024 sample at a tailings pond (now overdue), and the lab Cd of the landfill point sampled 2026-11-15 (late)"
$BIN upload config/lab/demo-network-batch.csv --server "http://${SOILMON__HTTP__ADDR:-127.0.0.1:8480}" --token-file "$RUN_DIR/lab-token" || true
echo "== ... and the Renda tailings pond's own yearly self-monitoring batch (published on the public page)"
$BIN upload config/lab/demo-enterprise-batch.csv --server "http://${SOILMON__HTTP__ADDR:-127.0.0.1:8480}" --token-file "$RUN_DIR/enterprise-token" || true
sleep 7

psql_q() { psql "$SOILMON__DATABASE__URL" -X -q -c "$1"; }
echo "== readings by judgement (all runs)"
psql_q "SELECT level, count(*) FROM readings_full GROUP BY level ORDER BY level"
echo "== refused messages by reason"
psql_q "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
echo "== open incidents by county and level"
psql_q "SELECT county_code, level, count(*) FROM incidents WHERE state = 'open' GROUP BY 1, 2 ORDER BY 1, 2"
echo "== outbox (alerts and reject replies)"
psql_q "SELECT kind, count(*) AS events, count(*) FILTER (WHERE q.id IS NULL) AS published FROM outbox o LEFT JOIN outbox_pending q ON q.id = o.id GROUP BY kind"
echo "== what the Yangchun bureau (soil/v1/alerts/441781/#) received in this run: $(wc -l <"$RUN_DIR/bureau-441781.txt") alerts; the first three:"
head -n 3 "$RUN_DIR/bureau-441781.txt"
echo "== late exceedances and overdue events the Yangchun bureau received"
grep -E '"state": ?"(late_exceedance|overdue|overdue_cleared)"' "$RUN_DIR/bureau-441781.txt" | cut -c1-400 || echo "(none)"
echo "== soil screening tiers (farmland, soil only)"
$BIN tiers | head -n 12
echo "== farmland categories (soil tier x crop co-monitoring), Yangchun and Yangxi"
$BIN categories --county 441781,441721 | grep -E "farmland categories|^441781\t[0-9]|^441721\t[0-9]|-B-0101|-R-010" || true
echo "== development-land plots and the land bureau's candidate list (proposals; statuses change only by hand)"
$BIN plots list
$BIN plots candidates
echo "== points overdue now"
$BIN overdue | head -n 8
echo "== coverage per county"
$BIN coverage | tail -n 5
echo "== service log: $RUN_DIR/soilmon.log"
print_console
if [[ ${DEMO_KEEP:-0} == 1 ]]; then
  echo "== DEMO_KEEP=1: the service keeps running for the console; Ctrl-C stops it"
  wait "$SOILMON_PID" || true
else
  echo "   (the service stops now; run with DEMO_KEEP=1 to keep the console open)"
fi
