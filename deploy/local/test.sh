#!/usr/bin/env bash
# Runs the whole test suite against real services: starts (installing if needed) the
# project's PostgreSQL+TimescaleDB cluster and Mosquitto, installs the web console's browser
# libraries, starts the cluster-mode topology (deploy/cluster/cluster.sh: 3 RabbitMQ, 3 etcd,
# 3 PostgreSQL under Patroni, loopback only) for tests/cluster.rs, then `cargo test`, and
# stops the cluster topology again whatever the outcome. Integration tests start their own
# per-test mosquitto and database on loopback. SOILMON_TEST_CLUSTER=0 skips the cluster
# topology (tests/cluster.rs then fails, naming what to run).
#
#   deploy/local/test.sh [extra cargo test arguments]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
bash deploy/local/assets.sh   # the web console's browser libraries (web/node_modules)
eval "$(bash deploy/local/services.sh env)"
if [[ ${SOILMON_TEST_CLUSTER:-1} != 0 ]]; then
	trap 'bash deploy/cluster/cluster.sh down' EXIT
	bash deploy/cluster/cluster.sh up
	eval "$(bash deploy/cluster/cluster.sh env)"
	# Only the SOILMON_CLUSTER_* variables are for the tests; no soilmon override leaks in.
	unset SOILMON__DATABASE__URL
fi
cargo test --all-targets "$@"
