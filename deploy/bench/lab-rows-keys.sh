#!/usr/bin/env bash
# What lab_rows' keys cost a 100,000-row COPY (the measurement behind schema version 7).
# In a scratch database of the local cluster (services.sh up), binary-COPYs the same 100,000
# lab rows into tables shaped like lab_rows with, in turn:
#   v6       primary key (batch_id, sample_id, metal), index (sample_id, metal), foreign key
#   no-fk    the same without the foreign key
#   v7       primary key (sample_id, metal, batch_id) and the per-statement batch check
#   no-keys  no index, no check (the floor)
# three times each, and prints the server-side time of each COPY. The database is dropped.
#
#   deploy/bench/lab-rows-keys.sh [rounds]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
rounds=${1:-3}
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh up >/dev/null
eval "$(bash deploy/local/services.sh env)"
db=soilmon_labkeys_$$
dir=$(mktemp -d /var/tmp/soilmon-labkeys.XXXXXX)
chmod 777 "$dir"
psql_() { psql "$SOILMON_TEST_PG dbname=$1" -X -q -v ON_ERROR_STOP=1 "${@:2}"; }
cleanup() { psql_ postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
psql_ postgres -c "CREATE DATABASE $db"

# 100,000 rows as a lab batch has them: 12,500 samples × 8 metals, one batch id.
psql_ "$db" <<SQL
CREATE TABLE lab_batches (batch_id text PRIMARY KEY);
INSERT INTO lab_batches VALUES ('B1');
CREATE TABLE src AS
SELECT 'B1'::text AS batch_id, g AS line, 'S-' || lpad((g / 8)::text, 7, '0') AS sample_id,
       '441781-T-' || lpad((g % 300)::text, 4, '0') AS point_id,
       now() - g * interval '1 min' AS sampled_at, now() AS analysed_at,
       0.0::float8 AS depth_top_cm, 20.0::float8 AS depth_bottom_cm, 6.5::float8 AS ph,
       (ARRAY['Pb','Hg','Cd','Cr','As','Cu','Zn','Ni'])[g % 8 + 1] AS metal,
       random() * 100 AS value_orig, 'mg/kg'::text AS unit_orig, random() * 100 AS value_mgkg,
       true AS detected, 0.05::float8 AS mdl_mgkg, 'ICP-MS'::text AS method,
       'sample'::text AS qc_type, NULL::text AS qc_ref, 'none'::text AS level
FROM generate_series(0, 99999) g;
COPY src TO '$dir/rows.bin' WITH (FORMAT binary);
CREATE FUNCTION lab_rows_have_batch() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT batch_id FROM new_rows) n
               WHERE NOT EXISTS (SELECT 1 FROM lab_batches b WHERE b.batch_id = n.batch_id)) THEN
        RAISE EXCEPTION 'no batch' USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END \$\$;
SQL

columns="batch_id text NOT NULL, line integer NOT NULL, sample_id text NOT NULL, point_id text,
  sampled_at timestamptz, analysed_at timestamptz, depth_top_cm double precision,
  depth_bottom_cm double precision, ph double precision, metal text NOT NULL,
  value_orig double precision NOT NULL, unit_orig text NOT NULL,
  value_mgkg double precision NOT NULL, detected boolean NOT NULL, mdl_mgkg double precision,
  method text, qc_type text NOT NULL, qc_ref text, level text"
shape() {
    case $1 in
    v6) echo "CREATE TABLE t ($columns, PRIMARY KEY (batch_id, sample_id, metal),
              FOREIGN KEY (batch_id) REFERENCES lab_batches);
              CREATE INDEX ON t (sample_id, metal);" ;;
    no-fk) echo "CREATE TABLE t ($columns, PRIMARY KEY (batch_id, sample_id, metal));
              CREATE INDEX ON t (sample_id, metal);" ;;
    v7) echo "CREATE TABLE t ($columns, PRIMARY KEY (sample_id, metal, batch_id));
              CREATE TRIGGER t_have_batch AFTER INSERT ON t REFERENCING NEW TABLE AS new_rows
              FOR EACH STATEMENT EXECUTE FUNCTION lab_rows_have_batch();" ;;
    no-keys) echo "CREATE TABLE t ($columns);" ;;
    esac
}
for round in $(seq "$rounds"); do
    for s in v6 no-fk v7 no-keys; do
        ms=$(psql_ "$db" <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
SET client_min_messages = warning;
DROP TABLE IF EXISTS t;
$(shape "$s")
CHECKPOINT;
\timing on
COPY t FROM '$dir/rows.bin' WITH (FORMAT binary);
SQL
)
        printf 'round %s  %-8s %8.1f ms\n' "$round" "$s" "$ms"
    done
done
