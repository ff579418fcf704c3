#!/usr/bin/env bash
# Runs only the cluster-mode tests (tests/cluster.rs): starts the project's services and the
# topology of deploy/cluster/cluster.sh (3 RabbitMQ, 3 etcd, 3 PostgreSQL under Patroni, all
# on loopback), runs them, and leaves the topology running for a rerun (`cluster.sh down`
# stops it). deploy/local/test.sh runs them with the whole suite.
#
#   deploy/cluster/test.sh [extra cargo test arguments]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
bash deploy/cluster/cluster.sh up
eval "$(bash deploy/cluster/cluster.sh env)"
# Only the SOILMON_CLUSTER_* variables are for the tests; no soilmon override leaks in.
unset SOILMON__DATABASE__URL
cargo test --test cluster "$@"
