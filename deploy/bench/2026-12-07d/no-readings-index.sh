#!/usr/bin/env bash
# Experiment only: soilmon with the readings index dropped right after `migrate`, meant as a
# bound of what a cheaper index could save in the drain. It is not one: the incident step
# reads from that index (docs/performance.md, twelfth session). Used as a project's
# target/release/soilmon for deploy/bench/peer-ab.sh, SOILMON_REAL the real binary.
real=${SOILMON_REAL:?the real soilmon binary}
if [ "${1:-}" = migrate ]; then
	"$real" "$@" || exit
	psql "$SOILMON__DATABASE__URL" -X -q -c "DROP INDEX readings_point_metal_time" >&2 || exit
	exit 0
fi
exec "$real" "$@"
