#!/usr/bin/env bash
# Times the soil tier view of schema 18 (a DISTINCT ON over every reading, and a walk back to
# a lab result per point x metal) against the view in force (schema 28: index probes per
# point x metal), and the snapshot's refresh, on a database that holds data: a kept bench
# database (`soilmon-bench --keep-db ...`) or console-scale.sh's. Both views are read three
# times each, interleaved, with JIT on and off; then the two are compared row by row, and the
# refresh function is called three times. The old view is created in a transaction that is
# rolled back: nothing is left behind.
#
#   deploy/bench/tier-view.sh DATABASE
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help || $# -ne 1 ]]; then
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
	[[ $# -eq 1 ]] && exit 0 || exit 2
fi
db=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
eval "$(bash "$root/deploy/local/services.sh" env)"
export PGHOST=/var/tmp/soilmon-local/pg/sock PGPORT=55432 PGUSER=postgres
# The schema-18 view, renamed, from its migration.
old=$(awk '/^CREATE OR REPLACE VIEW point_soil_tiers AS/{on=1} on{print} on&&/^GROUP BY p.point_id;/{exit}' \
	"$root/src/store/migrations/0018_plots.sql" |
	sed 's/^CREATE OR REPLACE VIEW point_soil_tiers AS/CREATE VIEW point_soil_tiers_v18 AS/')
# Each query is announced by an \echo line ("> label"); psql's timing line follows it.
{
	echo "BEGIN;"
	echo "$old"
	echo "\\pset tuples_only on"
	echo "\\timing on"
	echo "\\echo '> readings stored'"
	echo "SELECT count(*) FROM readings;"
	for jit in on off; do
		echo "SET jit = $jit;"
		for _ in 1 2 3; do
			echo "\\echo '> schema 18 view, jit $jit'"
			echo "SELECT count(*) FROM point_soil_tiers_v18;"
			echo "\\echo '> schema 28 view, jit $jit'"
			echo "SELECT count(*) FROM point_soil_tiers;"
		done
	done
	echo "\\echo '> rows that differ between the two views'"
	echo "SELECT count(*) FROM ((SELECT * FROM point_soil_tiers_v18 EXCEPT SELECT * FROM point_soil_tiers) UNION ALL (SELECT * FROM point_soil_tiers EXCEPT SELECT * FROM point_soil_tiers_v18)) d;"
	echo "ROLLBACK;"
	for _ in 1 2 3; do
		echo "\\echo '> refresh_point_soil_tiers (schema 28)'"
		echo "SELECT refresh_point_soil_tiers(make_interval(secs => 0));"
	done
} | psql -X -q -d "$db" | awk '
	/^> / { label = substr($0, 3); next }
	/^Time: / && label != "" { printf "%-40s %10s ms   %s\n", label, $2, value; label = ""; next }
	NF { value = $1 }
'
