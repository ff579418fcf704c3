#!/usr/bin/env bash
# Runs the end-to-end benchmark (issue 5): starts the project's local PostgreSQL+TimescaleDB
# cluster (services.sh up), builds the release binaries (soilmon and soilmon-bench), then
# soilmon-bench (what `soilmon bench` runs), which starts its own mosquitto on a free loopback
# port, a fresh database soilmon_bench_<time> (dropped at the end) and target/release/soilmon
# under test, and prints a table; the JSON goes to target/bench/bench.json.
#
#   deploy/local/bench.sh [soilmon-bench options, e.g. --messages 20000; see --help there]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
cargo build --release
exec target/release/soilmon-bench "$@"
