#!/usr/bin/env bash
# Runs the end-to-end benchmark (issue 5): starts the project's local PostgreSQL+TimescaleDB
# cluster (services.sh up), builds the release binary, then `soilmon bench`, which starts its
# own mosquitto on a free loopback port and a fresh database soilmon_bench_<time> (dropped at
# the end), and prints a table; the JSON goes to target/bench/bench.json.
#
#   deploy/local/bench.sh [soilmon bench options, e.g. --messages 20000]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
cargo build --release
exec target/release/soilmon bench "$@"
