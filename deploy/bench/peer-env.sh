# Sourced by the scripts here that run ../shared/peer-bench on the project's cluster
# (peer-ab.sh, peer-full.sh, cluster-config-ab.sh); `root` must be the project's root.
# Sets the environment the harness reads (the project's services, its PostgreSQL as the
# bench database, the 1 s completion poll, soilmon's per-batch log line for
# drain-split.py), `bench` (the harness's folder), and:
#
#   fresh_soilmon_schema   drops soilmon's schema of an earlier run, outside the harness's
#                          clock, and prints how many seconds that took
eval "$(bash "$root/deploy/local/services.sh" env)"
export PGHOST=/var/tmp/soilmon-local/pg/sock PGPORT=55432 PGUSER=postgres BENCH_POLL=1
export BENCH_DSN=postgresql://postgres@127.0.0.1:55432/benchpeers
export RUST_LOG=info,soilmon::telemetry=debug
bench=$root/../shared/peer-bench

fresh_soilmon_schema() {
	local start=$EPOCHREALTIME
	psql -X -q -d benchpeers -c "DROP SCHEMA IF EXISTS soilmon_peer CASCADE" >/dev/null 2>&1 || true
	awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }'
}
