#!/usr/bin/env bash
# What one statement of alert events costs the database, by how `outbox` stores them.
#
# Reads the alert payloads a peer-bench drain left in soilmon's schema (run the peer bench
# with soilmon first; the schema stays until the next run) and, in scratch tables shaped like
# `outbox`, times ROUNDS interleaved rounds of:
#
#   default   INSERT … p::jsonb, fanned_out_at left to its default (schema 20-26: the
#             default function runs once per row)
#   once      INSERT … p::jsonb, fanned_out_at = (SELECT outbox_fanned_out_default())
#   json      INSERT … p::json with fanned_out_at once (schema 27)
#   out-jsonb / out-json   COPY (SELECT payload …) TO '/dev/null' (FORMAT binary): what the
#             publisher's read costs the server for the same rows
#   scan-jsonb / scan-json   every row's payload->>'incident_id' compared (how the alert events
#             of an incident were found before schema 27 gave them a column)
#
#   deploy/bench/outbox-payload.sh [--db D] [--schema S] [--rounds N] [--help]   (benchpeers, soilmon_peer, 3)
#
# Needs the services up (deploy/local/services.sh). The scratch tables are dropped at the end.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
schema=soilmon_peer rounds=3 db=benchpeers
while [ $# -gt 0 ]; do
	case $1 in
		--schema) schema=$2; shift 2;;
		--rounds) rounds=$2; shift 2;;
		--db) db=$2; shift 2;;
		*) echo "unknown option $1" >&2; exit 2;;
	esac
done
cd "$(dirname "$0")/../.."
export PGHOST=/var/tmp/soilmon-local/pg/sock PGPORT=55432 PGUSER=postgres
{
	echo "\\set ON_ERROR_STOP on"
	echo "SET search_path = $schema, public;"
	echo "CREATE TEMP TABLE src AS SELECT event_id, topic, payload::text AS p FROM outbox WHERE kind = 'alert';"
	echo "SELECT count(*) AS alert_events, round(avg(length(p))) AS avg_payload_chars FROM src;"
	for t in jsonb json; do
		echo "CREATE TEMP TABLE x_$t (id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,
		      kind text NOT NULL, topic text NOT NULL, payload $t NOT NULL,
		      created_at timestamptz NOT NULL DEFAULT now(),
		      fanned_out_at timestamptz DEFAULT outbox_fanned_out_default());"
	done
	echo "\\echo -"
	echo "\\timing on"
	for r in $(seq 1 "$rounds"); do
		echo "\\echo -"
		echo "TRUNCATE x_jsonb, x_json;"
		echo "\\echo round $r default"
		echo "INSERT INTO x_jsonb (event_id, kind, topic, payload) SELECT event_id, 'alert', topic, p::jsonb FROM src;"
		echo "\\echo -"
		echo "TRUNCATE x_jsonb;"
		echo "\\echo round $r once"
		echo "INSERT INTO x_jsonb (event_id, kind, topic, payload, fanned_out_at) SELECT event_id, 'alert', topic, p::jsonb, (SELECT outbox_fanned_out_default()) FROM src;"
		echo "\\echo round $r json"
		echo "INSERT INTO x_json (event_id, kind, topic, payload, fanned_out_at) SELECT event_id, 'alert', topic, p::json, (SELECT outbox_fanned_out_default()) FROM src;"
		echo "\\echo round $r out-jsonb"
		echo "COPY (SELECT payload FROM x_jsonb) TO '/dev/null' WITH (FORMAT binary);"
		echo "\\echo round $r out-json"
		echo "COPY (SELECT payload FROM x_json) TO '/dev/null' WITH (FORMAT binary);"
		echo "\\echo round $r scan-jsonb"
		echo "SELECT count(*) FROM x_jsonb WHERE payload->>'incident_id' = 'none';"
		echo "\\echo round $r scan-json"
		echo "SELECT count(*) FROM x_json WHERE payload->>'incident_id' = 'none';"
	done
} | psql -X -q -d "$db" 2>&1 | awk '/^round|^-$/ {what = $0; next} /^Time:/ {if (what != "-" && what != "") print what ": " $2 " ms"; next} {print}'
