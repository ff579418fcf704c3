#!/usr/bin/env bash
# Runs the whole test suite against real services: starts (installing if needed) the
# project's PostgreSQL+TimescaleDB cluster and Mosquitto, installs the web console's browser
# libraries, then `cargo test`. Integration tests start their own per-test mosquitto and
# database on loopback. The cluster-mode tests are separate: deploy/cluster/test.sh.
#
#   deploy/local/test.sh [extra cargo test arguments]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
bash deploy/local/assets.sh   # the web console's browser libraries (web/node_modules)
eval "$(bash deploy/local/services.sh env)"
cargo test --all-targets "$@"
