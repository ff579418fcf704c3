#!/usr/bin/env bash
# Runs the cluster-mode tests (tests/cluster.rs): starts the project's services and the
# topology of deploy/cluster/cluster.sh (3 RabbitMQ, 3 etcd, 3 PostgreSQL under Patroni, all
# on loopback), then the ignored cluster tests one at a time. Needs a quiet machine: under
# heavy load Patroni loses its synchronous standbys (docs/cluster.md).
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
cargo test --test cluster "$@" -- --ignored --test-threads 1
