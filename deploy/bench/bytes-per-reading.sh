#!/usr/bin/env bash
# Bytes per reading and COPY cost of soilmon's storage shapes (issue 12, lean storage).
#
# In a scratch database of the project's local cluster (deploy/local/services.sh, which must be
# running; loopback socket only) it loads the same N synthetic station messages x 8 readings
# (realistic ids and values, GB 15618 judgements, 64-hex hashes, payloads as the peer bench
# sends them) into:
#   peer7    the 7-column hypertable of the peer bench (one unique index), its COPY limit
#   current  soilmon's schema 9 (src/store/migrations/000[1-9]*.sql, in order, as
#            store/migrate.rs applies them): readings, messages, archive
#   lean     the same data converted by migration 10, src/store/migrations/0010_lean_storage.sql
#            (readings, samples, archive; dimensions), which is checked to keep every reading's
#            provenance (readings_full EXCEPT the old rows, both ways, must be empty)
# then, after VACUUM ANALYZE, prints per relation and per shape: heap, toast, indexes and total
# bytes (hypertable_detailed_size / hypertable_size for hypertables, pg_total_relation_size for
# the others) and bytes per reading; times a binary \copy from a file into a fresh, empty copy
# of each readings shape (and of each per-message table), medians of R interleaved rounds; and
# times the read paths (latest per point x metal, a point's series, the API's point readings,
# a verify-style lookup per message). The scratch database is dropped at the end.
#
#   deploy/bench/bytes-per-reading.sh [-n N] [--rounds R] [--lab-samples K] [--method-depth]
#                                     [--keep-db] [--help]
#
#   -n N             station messages (default 20000; 8 readings each)
#   --rounds R       COPY rounds per shape (default 3; the median is printed)
#   --lab-samples K  also store K lab samples x 8 readings in batches of 100, with one method
#                    for Hg/As and another for the rest (exercises the migration's lab path)
#   --method-depth   station payloads carry "method" and "depth_cm" (the peer bench's do not)
#   --keep-db        do not drop the scratch database (its name is printed)
#
# Everything runs niced (the client and the server backends: renice 10); every statement has a
# 10-minute timeout. Nothing outside the scratch database is touched, except that migration 3
# creates the cluster-wide role soilmon_service if it does not exist yet.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
N=20000 ROUNDS=3 LAB=0 METHOD_DEPTH=0 KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --messages) N=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --lab-samples) LAB=$2; shift ;;
    --method-depth) METHOD_DEPTH=1 ;;
    --keep-db) KEEP=1 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in "$N" "$ROUNDS" "$LAB"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done
((N >= 100 && N <= 2000000)) || { echo "-n must be between 100 and 2000000" >&2; exit 2; }
((ROUNDS >= 1 && ROUNDS <= 9)) || { echo "--rounds must be between 1 and 9" >&2; exit 2; }

cd "$(dirname "$0")/../.."
root=$PWD
migration=$root/src/store/migrations/0010_lean_storage.sql
[ -f "$migration" ] || { echo "missing $migration" >&2; exit 1; }
eval "$(bash deploy/local/services.sh env)"
bash deploy/local/services.sh status >/dev/null \
    || { echo "the local cluster is not running: bash deploy/local/services.sh up" >&2; exit 1; }

db=soilmon_bpr_$$
dir=$(mktemp -d /var/tmp/soilmon-bpr.XXXXXX)
export PGOPTIONS="-c statement_timeout=600s -c client_min_messages=warning"
# Every session renices its own backend first (the server does the work, not psql).
cat >"$dir/nice.sql" <<'SQL'
SELECT pg_backend_pid() AS bpid \gset
\setenv BPID :bpid
\! renice -n 10 -p "$BPID" >/dev/null
SQL
psql_() { timeout 900 nice -n 10 psql "$SOILMON_TEST_PG dbname=$1" -X -q -v ON_ERROR_STOP=1 -f "$dir/nice.sql" "${@:2}"; }
q() { psql_ "$db" "$@"; }
qs() { psql_ "$db" "$@" -f -; }   # SQL from standard input
cleanup() {
    if ((KEEP)); then
        echo "kept database $db"
    else
        psql_ postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
t_start=$SECONDS
say() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - t_start)); }

R=$(((N + LAB) * 8))
echo "scratch database $db: $N station messages + $LAB lab samples = $R readings"
psql_ postgres -c "CREATE DATABASE $db" >/dev/null

# ------------------------------------------------------------------ current schema
say "migrations 1-9 as the service applies them"
q -c "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())" >/dev/null
for f in src/store/migrations/*.sql; do
    base=$(basename "$f" .sql)
    v=$((10#${base%%_*})) name=${base#*_}
    ((v <= 9)) || continue
    q -1 -f "$f" -c "INSERT INTO schema_migrations (version, name) VALUES ($v, '$name')" >/dev/null
    echo "  applied $base"
done
license=$(q -Atc "SELECT current_setting('timescaledb.license')")
echo "  timescaledb.license = $license"
if [ "$license" = timescale ]; then
    # What store/migrate.rs adds on the community build.
    q -c "ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'point_id, metal')" \
      -c "SELECT add_compression_policy('readings', INTERVAL '365 days', if_not_exists => true)" >/dev/null
fi

# ------------------------------------------------------------------ synthetic data
say "generating the workload in schema gen"
qs -v n="$N" -v lab="$LAB" -v md="$METHOD_DEPTH" >/dev/null <<'SQL'
SELECT setseed(0.20261128);
CREATE SCHEMA gen;
-- GB 15618-2018 for dry land ("other" column; Ni and Zn "all"), by pH band 1..4.
CREATE TABLE gen.metals (ord int, metal text, col text, s float8[], s_src text, i float8[], i_src text);
INSERT INTO gen.metals VALUES
 (1, 'Pb', 'other', '{70,90,120,170}', 'Table 1, Pb other', '{400,500,700,1000}', 'Table 3, Pb'),
 (2, 'Hg', 'other', '{1.3,1.8,2.4,3.4}', 'Table 1, Hg other', '{2.0,2.5,4.0,6.0}', 'Table 3, Hg'),
 (3, 'Cd', 'other', '{0.3,0.3,0.3,0.6}', 'Table 1, Cd other', '{1.5,2.0,3.0,4.0}', 'Table 3, Cd'),
 (4, 'Cr', 'other', '{150,150,200,250}', 'Table 1, Cr other', '{800,850,1000,1300}', 'Table 3, Cr'),
 (5, 'As', 'other', '{40,40,30,25}', 'Table 1, As other', '{200,150,120,100}', 'Table 3, As'),
 (6, 'Cu', 'other', '{50,50,100,100}', 'Table 1, Cu other', NULL, NULL),
 (7, 'Zn', 'all', '{200,200,250,300}', 'Table 1, Zn all', NULL, NULL),
 (8, 'Ni', 'all', '{60,70,100,190}', 'Table 1, Ni all', NULL, NULL);
-- 500 points as the peer bench registers them, each served by one of 50 stations.
CREATE TABLE gen.points AS
SELECT i, (ARRAY['441702','441704','441721','441781'])[i % 4 + 1] || '-'
          || CASE WHEN i % 5 = 0 THEN 'R' ELSE 'B' END || '-' || lpad((i + 1)::text, 4, '0') AS point_id,
       'st' || lpad((i % 50 + 1)::text, 2, '0') AS station
FROM generate_series(0, 499) i;
INSERT INTO points (point_id, name, county_code, lon, lat, point_type, land_use, ph)
SELECT point_id, 'bench ' || (i + 1), split_part(point_id, '-', 1), 111.5 + (i % 50) * 0.01,
       21.8 + (i / 50) * 0.01, CASE WHEN i % 5 = 0 THEN 'risk' ELSE 'basic' END, 'dry_land', 6.0
FROM gen.points ORDER BY i;

-- Station messages: a year of samples, arriving in random sampling order (a drained backlog).
CREATE TABLE gen.msgs AS
WITH m AS (
    SELECT i, floor(random() * 500)::int AS pi,
           timestamptz '2026-11-28 12:00+08' - (floor(random() * 365 * 86400)) * interval '1 s' AS sampled_at,
           round((4.8 + random() * 3.6)::numeric, 1)::float8 AS ph
    FROM generate_series(1, :n) i)
SELECT m.i, p.station, p.point_id, m.sampled_at, m.ph,
       p.station || '-' || (extract(epoch FROM m.sampled_at) * 1000)::bigint || '-'
           || lpad((row_number() OVER (PARTITION BY p.station ORDER BY m.i))::text, 6, '0') AS msg_id,
       timestamptz '2026-12-01 08:00Z' + m.i * interval '5 ms' AS received_at,
       CASE WHEN m.ph <= 5.5 THEN 1 WHEN m.ph <= 6.5 THEN 2 WHEN m.ph <= 7.5 THEN 3 ELSE 4 END AS band
FROM m JOIN gen.points p ON p.i = m.pi;
-- Lab samples (optional): batches of 100, sampled over two years, uploaded later.
CREATE TABLE gen.lab AS
WITH s AS (
    SELECT k, floor(random() * 500)::int AS pi,
           timestamptz '2026-06-30 10:00+08' - (floor(random() * 730 * 86400)) * interval '1 s' AS sampled_at,
           round((4.8 + random() * 3.6)::numeric, 1)::float8 AS ph
    FROM generate_series(1, :lab) k)
SELECT s.k, 'LAB-2026-' || lpad(((s.k - 1) / 100 + 1)::text, 4, '0') AS batch_id,
       'S2026' || lpad(s.k::text, 6, '0') AS sample_id, p.point_id, s.sampled_at, s.ph,
       timestamptz '2026-12-01 09:00Z' + ((s.k - 1) / 100) * interval '1 min' AS received_at,
       CASE WHEN s.ph <= 5.5 THEN 1 WHEN s.ph <= 6.5 THEN 2 WHEN s.ph <= 7.5 THEN 3 ELSE 4 END AS band
FROM s JOIN gen.points p ON p.i = s.pi;
-- Readings: lognormal around the screening value (about 5 % exceed), judged.
CREATE TABLE gen.rd AS
WITH x AS (
    SELECT 'station' AS source, g.station AS source_id, g.msg_id, g.point_id, g.sampled_at,
           g.received_at, g.ph, g.band, m.*, g.i AS arrival,
           CASE WHEN :md = 1 THEN 'XRF' END AS method,
           CASE WHEN :md = 1 THEN 0.0::float8 END AS depth_top_cm,
           CASE WHEN :md = 1 THEN 20.0::float8 END AS depth_bottom_cm
    FROM gen.msgs g CROSS JOIN gen.metals m
    UNION ALL
    SELECT 'lab', l.batch_id, l.sample_id, l.point_id, l.sampled_at, l.received_at, l.ph, l.band,
           m.*, :n + l.k, CASE WHEN m.metal IN ('Hg', 'As') THEN 'HJ 680-2013 AFS'
                               ELSE 'HJ 803-2016 ICP-MS' END, 0.0, 20.0
    FROM gen.lab l CROSS JOIN gen.metals m),
v AS (
    SELECT x.*, x.s[x.band] AS scr, x.i[x.band] AS itv,
           round((x.s[x.band] * exp(-0.8224 + 0.5 * sqrt(-2 * ln(1 - random()))
                 * cos(2 * pi() * random())))::numeric, 3)::float8 AS value
    FROM x)
SELECT v.*, CASE WHEN v.itv IS NOT NULL AND v.value > v.itv THEN 'intervention'
                 WHEN v.value > v.scr THEN 'screening' ELSE 'none' END AS level,
       (ARRAY['pH<=5.5', '5.5<pH<=6.5', '6.5<pH<=7.5', 'pH>7.5'])[v.band] AS ph_band
FROM v;
-- Payloads as the peer bench sends them (compact JSON), and lab files as CSV.
CREATE TABLE gen.payloads AS
SELECT g.i, g.station, g.msg_id,
       convert_to('{"msg_id":"' || g.msg_id || '","point_id":"' || g.point_id || '","sampled_at":"'
           || to_char(g.sampled_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD"T"HH24:MI:SS') || '+08:00","ph":'
           || g.ph || CASE WHEN :md = 1 THEN ',"depth_cm":[0,20],"method":"XRF"' ELSE '' END
           || ',"readings":[' || string_agg('{"metal":"' || r.metal || '","value":' || r.value
                                            || ',"unit":"mg/kg"}', ',' ORDER BY r.ord) || ']}', 'UTF8') AS raw
FROM gen.msgs g JOIN gen.rd r ON r.source = 'station' AND r.msg_id = g.msg_id AND r.source_id = g.station
GROUP BY g.i, g.station, g.msg_id, g.point_id, g.sampled_at, g.ph;
CREATE TABLE gen.labfiles AS
SELECT source_id AS batch_id, min(received_at) AS received_at,
       convert_to('batch_id,sample_id,point_id,sampled_at,ph,metal,value,unit,method' || E'\n'
           || string_agg(concat_ws(',', source_id, msg_id, point_id, sampled_at, ph, metal, value, 'mg/kg', method),
                         E'\n' ORDER BY msg_id, ord), 'UTF8') AS raw
FROM gen.rd WHERE source = 'lab' GROUP BY source_id;
SQL

say "loading the current shape (readings, messages, archive) and peer7"
qs >/dev/null <<'SQL'
INSERT INTO messages (station_id, msg_id, content_sha256, point_id, sampled_at, topic, received_at, stored_at)
SELECT g.station, g.msg_id, encode(sha256(p.raw), 'hex'), g.point_id, g.sampled_at,
       'soil/v1/stations/' || g.station || '/readings', g.received_at, g.received_at + interval '20 ms'
FROM gen.msgs g JOIN gen.payloads p ON p.i = g.i ORDER BY g.i;
INSERT INTO readings (sampled_at, point_id, metal, source, source_id, msg_id, value_mgkg, value_orig,
    unit_orig, detected, level, screening_mgkg, intervention_mgkg, standard_id, standard_version,
    threshold_column, screening_source, intervention_source, land_use, ph, ph_band, ph_assumed,
    method, depth_top_cm, depth_bottom_cm, received_at)
SELECT sampled_at, point_id, metal, source, source_id, msg_id, value, value, 'mg/kg', true, level,
       scr, itv, 'GB 15618-2018', '2018', col, s_src, itv_src, 'dry_land', ph, ph_band, false,
       method, depth_top_cm, depth_bottom_cm, received_at
FROM (SELECT *, i_src AS itv_src FROM gen.rd) r ORDER BY arrival, ord;
-- The archive: one entry per message (then per lab batch), chained.
INSERT INTO archive (seq, kind, ref, raw, raw_sha256, readings_digest, prev_hash, entry_hash, created_at)
SELECT seq, kind, ref, raw, encode(sha256(raw), 'hex'), encode(sha256(convert_to('d' || seq, 'UTF8')), 'hex'),
       coalesce(lag(h) OVER (ORDER BY seq), repeat('0', 64)), h, at
FROM (SELECT row_number() OVER (ORDER BY o) AS seq, kind, ref, raw, at,
             encode(sha256(convert_to('e' || o, 'UTF8')), 'hex') AS h
      FROM (SELECT g.i AS o, 'station_message' AS kind, g.station || '/' || g.msg_id AS ref, p.raw,
                   g.received_at + interval '20 ms' AS at
            FROM gen.msgs g JOIN gen.payloads p ON p.i = g.i
            UNION ALL
            SELECT 100000000 + row_number() OVER (ORDER BY batch_id), 'lab_batch', batch_id, raw,
                   received_at + interval '1 s'
            FROM gen.labfiles) e) c;
UPDATE archive_head SET seq = a.seq, hash = a.entry_hash
FROM (SELECT seq, entry_hash FROM archive ORDER BY seq DESC LIMIT 1) a WHERE id;

-- The peer bench's table (common.py table_ddl) with the same station readings.
CREATE TABLE peer7_readings (
    sampled_at  timestamptz      NOT NULL,
    station_id  text             NOT NULL,
    msg_id      text             NOT NULL,
    point_id    text             NOT NULL,
    metal       text             NOT NULL,
    value_mg_kg double precision NOT NULL,
    exceeds     boolean          NOT NULL);
CREATE UNIQUE INDEX peer7_readings_key ON peer7_readings (station_id, msg_id, metal, sampled_at);
SELECT create_hypertable('peer7_readings', 'sampled_at');
INSERT INTO peer7_readings
SELECT sampled_at, source_id, msg_id, point_id, metal, value, level <> 'none'
FROM gen.rd WHERE source = 'station' ORDER BY arrival, ord;
SQL
q -c "VACUUM ANALYZE" >/dev/null

# ------------------------------------------------------------------ measuring helpers
qs >/dev/null <<'SQL'
CREATE TABLE gen.results (shape text, relation text, role text, n bigint, heap bigint, toast bigint,
                          idx bigint, total bigint, hypertable_size bigint, ord serial);
CREATE TABLE gen.times (shape text, what text, round int, ms float8, rows bigint);
CREATE FUNCTION gen.measure(p_shape text, p_rel text, p_role text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    rel regclass := p_rel::regclass;
    h bigint; t bigint; i bigint; tot bigint; hs bigint; cnt bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', rel) INTO cnt;
    IF EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE format('%I.%I', hypertable_schema, hypertable_name)::regclass = rel) THEN
        SELECT table_bytes, toast_bytes, index_bytes, total_bytes INTO h, t, i, tot
        FROM hypertable_detailed_size(rel);
        hs := hypertable_size(rel);
    ELSE
        h := pg_relation_size(rel, 'main') + pg_relation_size(rel, 'fsm') + pg_relation_size(rel, 'vm');
        t := coalesce((SELECT pg_total_relation_size(reltoastrelid) FROM pg_class
                       WHERE oid = rel AND reltoastrelid <> 0), 0);
        i := pg_indexes_size(rel);
        tot := pg_total_relation_size(rel);
    END IF;
    INSERT INTO gen.results (shape, relation, role, n, heap, toast, idx, total, hypertable_size)
    VALUES (p_shape, p_rel, p_role, cnt, coalesce(h, 0), coalesce(t, 0), coalesce(i, 0), coalesce(tot, 0), hs);
END $$;
CREATE TABLE gen.index_sizes (shape text, index_name text, bytes bigint, ord serial);
CREATE FUNCTION gen.measure_indexes(p_shape text, p_rel text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE ix record; hyper boolean;
BEGIN
    hyper := EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                     WHERE format('%I.%I', hypertable_schema, hypertable_name)::regclass = p_rel::regclass);
    FOR ix IN SELECT indexrelid::regclass AS i FROM pg_index WHERE indrelid = p_rel::regclass ORDER BY 1 LOOP
        INSERT INTO gen.index_sizes (shape, index_name, bytes)
        VALUES (p_shape, p_rel || ': ' || ix.i::text,
                CASE WHEN hyper THEN hypertable_index_size(ix.i) ELSE pg_relation_size(ix.i) END);
    END LOOP;
END $$;
-- Median of `reps` runs of a query, in ms (results discarded).
CREATE FUNCTION gen.time_query(q text, reps int DEFAULT 3) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; ms float8[] := '{}';
BEGIN
    FOR k IN 1..reps LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        ms := ms || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(ms) x);
END $$;
SQL

say "sizes of the current shape and peer7"
qs >/dev/null <<'SQL'
SELECT gen.measure('peer7', 'peer7_readings', 'readings');
SELECT gen.measure('current', 'readings', 'readings');
SELECT gen.measure('current', 'messages', 'per-message');
SELECT gen.measure('current', 'archive', 'archive');
SELECT gen.measure('current', 'points', 'dimension');
SELECT gen.measure_indexes('peer7', 'peer7_readings');
SELECT gen.measure_indexes('current', 'readings');
SELECT gen.measure_indexes('current', 'messages');
SELECT gen.measure_indexes('current', 'archive');
SQL

say "read paths on the current shape"
qs >/dev/null <<'SQL'
-- A verify-style lookup per station message (store/archive/verify.rs), n random messages.
CREATE FUNCTION gen.verify_current(n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE rec record; c bigint := 0; k bigint;
BEGIN
    FOR rec IN SELECT station_id, msg_id FROM messages ORDER BY hashtext(msg_id) LIMIT n LOOP
        SELECT count(*) INTO k FROM (
            SELECT msg_id, metal, sampled_at, point_id, value_mgkg, value_orig, unit_orig, detected,
                   level, ph, screening_mgkg, intervention_mgkg, standard_id
            FROM readings WHERE source = 'station' AND source_id = rec.station_id AND msg_id = rec.msg_id) x;
        c := c + k;
    END LOOP;
    RETURN c;
END $$;
INSERT INTO gen.times (shape, what, ms) VALUES
 ('current', 'latest per point x metal (LATERAL, 500 x 8)', gen.time_query($q$
    SELECT p.point_id, m.metal, l.* FROM points p CROSS JOIN gen.metals m CROSS JOIN LATERAL (
        SELECT sampled_at, value_mgkg, level, screening_mgkg, standard_id, source_id, msg_id FROM readings r
        WHERE r.point_id = p.point_id AND r.metal = m.metal ORDER BY sampled_at DESC LIMIT 1) l $q$)),
 ('current', 'point_soil_tiers view (DISTINCT ON)', gen.time_query('SELECT * FROM point_soil_tiers')),
 ('current', 'series: one point x metal, all time, full provenance', gen.time_query($q$
    SELECT * FROM readings WHERE point_id = '441702-R-0001' AND metal = 'Cd' ORDER BY sampled_at $q$)),
 ('current', 'API point readings (queries.rs), limit 500', gen.time_query($q$
    SELECT sampled_at, metal, value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
           intervention_mgkg, standard_id, ph, ph_band, ph_assumed, source, source_id, msg_id
    FROM readings WHERE point_id = '441702-R-0001' ORDER BY sampled_at DESC, metal LIMIT 500 $q$)),
 ('current', 'verify lookups, 2000 messages', gen.time_query('SELECT gen.verify_current(2000)'));
SQL

# Binary files and empty templates for the COPY rounds.
q -c "CREATE TABLE gen.tpl_current_readings (LIKE readings INCLUDING ALL)" \
  -c "CREATE TABLE gen.tpl_messages (LIKE messages INCLUDING ALL)" >/dev/null
q -c "\\copy (SELECT sampled_at, station_id, msg_id, point_id, metal, value_mg_kg, exceeds FROM peer7_readings) TO '$dir/peer7.bin' WITH (FORMAT binary)" \
  -c "\\copy (SELECT * FROM readings ORDER BY received_at, source_id, msg_id, metal) TO '$dir/current.bin' WITH (FORMAT binary)" \
  -c "\\copy (SELECT * FROM messages ORDER BY received_at) TO '$dir/messages.bin' WITH (FORMAT binary)"
# Provenance before the migration, to compare with after.
q -c "CREATE TABLE gen.old_readings AS SELECT * FROM readings" >/dev/null

# ------------------------------------------------------------------ migration 10
say "migration 10 (one transaction)"
t0=$(date +%s%N)
q -1 -f "$migration" -c "INSERT INTO schema_migrations (version, name) VALUES (10, 'lean_storage')" >/dev/null
echo "  applied in $((($(date +%s%N) - t0) / 1000000)) ms"
cols="sampled_at, point_id, metal, source, source_id, msg_id, value_mgkg, value_orig, unit_orig,
  detected, level, screening_mgkg, intervention_mgkg, standard_id, standard_version,
  threshold_column, screening_source, intervention_source, land_use, ph, ph_band, ph_assumed,
  method, depth_top_cm, depth_bottom_cm, received_at"
diff=$(q -Atc "SELECT (SELECT count(*) FROM (SELECT $cols FROM readings_full EXCEPT ALL SELECT $cols FROM gen.old_readings) a)
                  || ' ' || (SELECT count(*) FROM (SELECT $cols FROM gen.old_readings EXCEPT ALL SELECT $cols FROM readings_full) b)")
echo "  provenance check (rows only after / only before): $diff"
[ "$diff" = "0 0" ] || { echo "  PROVENANCE CHANGED by the migration" >&2; exit 1; }
q -c "DROP TABLE gen.old_readings" -c "VACUUM ANALYZE" >/dev/null

say "sizes of the lean shape"
qs >/dev/null <<'SQL'
SELECT gen.measure('lean', 'readings', 'readings');
SELECT gen.measure('lean', 'samples', 'per-message');
SELECT gen.measure('lean', 'archive', 'archive');
SELECT gen.measure('lean', r, 'dimension')
FROM unnest(ARRAY['points', 'sources', 'judgement_bases', 'units', 'metals', 'levels', 'legacy_payloads']) r;
SELECT gen.measure_indexes('lean', 'readings');
SELECT gen.measure_indexes('lean', 'samples');
SELECT gen.measure_indexes('lean', 'archive');
-- The variant that keeps a unique key on readings (see the design doc).
CREATE UNIQUE INDEX readings_sample_metal_time ON readings (sample_key, metal, sampled_at);
SELECT gen.measure('lean+uk', 'readings', 'readings');
SELECT gen.measure_indexes('lean+uk', 'readings');
DROP INDEX readings_sample_metal_time;
SQL

say "read paths on the lean shape"
qs >/dev/null <<'SQL'
CREATE FUNCTION gen.verify_lean(n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE rec record; c bigint := 0; k bigint;
BEGIN
    FOR rec IN SELECT so.source_id, s.msg_id FROM samples s JOIN sources so USING (source_key)
               WHERE so.source = 'station' ORDER BY hashtext(s.msg_id) LIMIT n LOOP
        SELECT count(*) INTO k FROM (
            SELECT s.msg_id, m.symbol, r.sampled_at, p.point_id, r.value_mgkg, r.value_orig,
                   u.spelling, r.detected, l.name, s.ph, b.screening_mgkg, b.intervention_mgkg,
                   b.standard_id
            FROM sources so
            JOIN samples s ON s.source_key = so.source_key
            JOIN readings r ON r.point_key = s.point_key AND r.metal = ANY ('{1,2,3,4,5,6,7,8,9}'::smallint[])
                           AND r.sampled_at = s.sampled_at AND r.sample_key = s.sample_key
            JOIN points p ON p.point_key = r.point_key
            JOIN metals m ON m.metal = r.metal
            JOIN units u ON u.unit = r.unit_orig
            JOIN levels l ON l.level = r.level
            JOIN judgement_bases b ON b.basis_key = r.basis_key
            WHERE so.source = 'station' AND so.source_id = rec.source_id AND s.msg_id = rec.msg_id) x;
        c := c + k;
    END LOOP;
    RETURN c;
END $$;
-- The same with the dimensions resolved in the service (metals, levels, units, bases: small,
-- append-only maps it holds in memory): readings and samples only.
CREATE FUNCTION gen.verify_lean_slim(n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE rec record; c bigint := 0; k bigint;
BEGIN
    FOR rec IN SELECT so.source_id, s.msg_id FROM samples s JOIN sources so USING (source_key)
               WHERE so.source = 'station' ORDER BY hashtext(s.msg_id) LIMIT n LOOP
        SELECT count(*) INTO k FROM (
            SELECT s.msg_id, r.metal, r.sampled_at, r.point_key, r.value_mgkg, r.value_orig,
                   r.unit_orig, r.detected, r.level, s.ph, r.basis_key
            FROM sources so
            JOIN samples s ON s.source_key = so.source_key
            JOIN readings r ON r.point_key = s.point_key AND r.metal = ANY ('{1,2,3,4,5,6,7,8,9}'::smallint[])
                           AND r.sampled_at = s.sampled_at AND r.sample_key = s.sample_key
            WHERE so.source = 'station' AND so.source_id = rec.source_id AND s.msg_id = rec.msg_id) x;
        c := c + k;
    END LOOP;
    RETURN c;
END $$;
INSERT INTO gen.times (shape, what, ms) VALUES
 ('lean slim', 'series: one point x metal, all time, full provenance', gen.time_query($q$
    SELECT r.sampled_at, r.value_mgkg, r.value_orig, r.unit_orig, r.detected, r.level, r.basis_key,
           s.ph, s.method, s.depth_top_cm, s.depth_bottom_cm, s.received_at, so.source, so.source_id, s.msg_id
    FROM readings r JOIN samples s ON s.sample_key = r.sample_key JOIN sources so ON so.source_key = s.source_key
    WHERE r.point_key = (SELECT point_key FROM points WHERE point_id = '441702-R-0001') AND r.metal = 3
    ORDER BY r.sampled_at $q$)),
 ('lean slim', 'API point readings (queries.rs), limit 500', gen.time_query($q$
    SELECT r.sampled_at, r.metal, r.value_mgkg, r.value_orig, r.unit_orig, r.detected, r.level, r.basis_key,
           s.ph, so.source, so.source_id, s.msg_id
    FROM readings r JOIN samples s ON s.sample_key = r.sample_key JOIN sources so ON so.source_key = s.source_key
    WHERE r.point_key = (SELECT point_key FROM points WHERE point_id = '441702-R-0001')
    ORDER BY r.sampled_at DESC, r.metal LIMIT 500 $q$)),
 ('lean slim', 'verify lookups, 2000 messages', gen.time_query('SELECT gen.verify_lean_slim(2000)'));
INSERT INTO gen.times (shape, what, ms) VALUES
 ('lean', 'latest per point x metal (LATERAL, 500 x 8)', gen.time_query($q$
    SELECT p.point_id, m.symbol, l.sampled_at, l.value_mgkg, lv.name, b.screening_mgkg, b.standard_id,
           so.source_id, s.msg_id
    FROM points p CROSS JOIN metals m CROSS JOIN LATERAL (
        SELECT r.sampled_at, r.value_mgkg, r.level, r.basis_key, r.sample_key FROM readings r
        WHERE r.point_key = p.point_key AND r.metal = m.metal ORDER BY r.sampled_at DESC LIMIT 1) l
    JOIN levels lv ON lv.level = l.level
    JOIN judgement_bases b ON b.basis_key = l.basis_key
    JOIN samples s ON s.sample_key = l.sample_key
    JOIN sources so ON so.source_key = s.source_key
    WHERE m.metal <> 5 $q$)),
 ('lean', 'point_soil_tiers view (DISTINCT ON)', gen.time_query('SELECT * FROM point_soil_tiers')),
 ('lean', 'series: one point x metal, all time, full provenance', gen.time_query($q$
    SELECT * FROM readings_full WHERE point_id = '441702-R-0001' AND metal = 'Cd' ORDER BY sampled_at $q$)),
 ('lean', 'API point readings (queries.rs), limit 500', gen.time_query($q$
    SELECT sampled_at, metal, value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
           intervention_mgkg, standard_id, ph, ph_band, ph_assumed, source, source_id, msg_id
    FROM readings_full WHERE point_id = '441702-R-0001' ORDER BY sampled_at DESC, metal LIMIT 500 $q$)),
 ('lean', 'verify lookups, 2000 messages', gen.time_query('SELECT gen.verify_lean(2000)'));
SQL

q -c "CREATE TABLE gen.tpl_lean_readings (LIKE readings INCLUDING ALL)" \
  -c "CREATE TABLE gen.tpl_samples (LIKE samples INCLUDING ALL)" >/dev/null
q -c "\\copy (SELECT * FROM readings ORDER BY sample_key, metal) TO '$dir/lean.bin' WITH (FORMAT binary)" \
  -c "\\copy (SELECT sampled_at, received_at, stored_at, source_key, point_key, part, msg_id, ph, depth_top_cm, depth_bottom_cm, method, content_sha256 FROM samples ORDER BY sample_key) TO '$dir/samples.bin' WITH (FORMAT binary)"

# ------------------------------------------------------------------ COPY rounds
say "binary \\copy into fresh tables, $ROUNDS interleaved rounds"
make_target() { # shape -> DDL of an empty target named bench_t
    case $1 in
    peer7) echo "CREATE TABLE bench_t (sampled_at timestamptz NOT NULL, station_id text NOT NULL,
                   msg_id text NOT NULL, point_id text NOT NULL, metal text NOT NULL,
                   value_mg_kg double precision NOT NULL, exceeds boolean NOT NULL);
                 CREATE UNIQUE INDEX bench_t_key ON bench_t (station_id, msg_id, metal, sampled_at);
                 SELECT create_hypertable('bench_t', 'sampled_at');" ;;
    current) echo "CREATE TABLE bench_t (LIKE gen.tpl_current_readings INCLUDING ALL);
                   SELECT create_hypertable('bench_t', by_range('sampled_at', INTERVAL '90 days'));" ;;
    lean) echo "CREATE TABLE bench_t (LIKE gen.tpl_lean_readings INCLUDING ALL);
                SELECT create_hypertable('bench_t', by_range('sampled_at', INTERVAL '90 days'));" ;;
    lean+uk) echo "CREATE TABLE bench_t (LIKE gen.tpl_lean_readings INCLUDING ALL);
                   CREATE UNIQUE INDEX bench_t_key ON bench_t (sample_key, metal, sampled_at);
                   SELECT create_hypertable('bench_t', by_range('sampled_at', INTERVAL '90 days'));" ;;
    messages) echo "CREATE TABLE bench_t (LIKE gen.tpl_messages INCLUDING ALL);" ;;
    samples) echo "CREATE TABLE bench_t (LIKE gen.tpl_samples INCLUDING ALL);" ;;
    esac
}
copy_spec() { # shape -> file and column list
    case $1 in
    peer7) echo "$dir/peer7.bin|" ;;
    current) echo "$dir/current.bin|" ;;
    lean | lean+uk) echo "$dir/lean.bin|" ;;
    messages) echo "$dir/messages.bin|" ;;
    samples) echo "$dir/samples.bin|(sampled_at, received_at, stored_at, source_key, point_key, part, msg_id, ph, depth_top_cm, depth_bottom_cm, method, content_sha256)" ;;
    esac
}
for ((round = 1; round <= ROUNDS; round++)); do
    for shape in peer7 current lean lean+uk messages samples; do
        q -c "DROP TABLE IF EXISTS bench_t" -c "$(make_target "$shape")" -c "CHECKPOINT" >/dev/null
        spec=$(copy_spec "$shape")
        file=${spec%%|*} cl=${spec#*|}
        out=$(q -c '\timing on' -c "\\copy bench_t $cl FROM '$file' WITH (FORMAT binary)")
        ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | tail -n1)
        rows=$(q -Atc "SELECT count(*) FROM bench_t")
        q -c "INSERT INTO gen.times VALUES ('$shape', 'copy', $round, $ms, $rows)" >/dev/null
        # Sizes as written row by row in arrival order (the indexes maintained incrementally, as
        # the service writes them), next to the sizes above (the migration builds its index in bulk).
        ((round == 1)) && q -c "SELECT gen.measure('$shape', 'bench_t', 'as copied')" >/dev/null
        printf '  round %d %-9s %9.1f ms  %8d rows\n' "$round" "$shape" "$ms" "$rows"
    done
done
q -c "DROP TABLE IF EXISTS bench_t" >/dev/null

# ------------------------------------------------------------------ report
say "report"
R=$(q -Atc "SELECT count(*) FROM readings")
stn=$(q -Atc "SELECT count(*) FROM peer7_readings")
qs -v readings="$R" -v stn="$stn" <<'SQL'
\pset footer off
\echo
\echo Sizes after VACUUM ANALYZE (bytes; B/rdg = total / readings of the shape)
SELECT shape, relation, role, n AS rows, heap, toast, idx AS indexes, total,
       hypertable_size AS "hypertable_size()",
       round(total::numeric / CASE WHEN shape = 'peer7' THEN :stn ELSE :readings END, 1) AS "B/rdg"
FROM gen.results WHERE role <> 'as copied' ORDER BY ord;
\echo
\echo The same readings as written by one binary COPY in arrival order into an empty table (round 1):
\echo indexes maintained row by row, as the service writes them
SELECT shape, n AS rows, heap, idx AS indexes, total,
       round(total::numeric / n, 1) AS "B/row", round(idx::numeric / n, 1) AS "index B/row"
FROM gen.results WHERE role = 'as copied' ORDER BY ord;
\echo
\echo Per shape: readings only, and readings + per-message + archive (what issue 12 counts)
SELECT shape,
       round(sum(total) FILTER (WHERE role = 'readings')::numeric
             / CASE WHEN shape = 'peer7' THEN :stn ELSE :readings END, 1) AS "readings B/rdg",
       round(sum(idx) FILTER (WHERE role = 'readings')::numeric
             / CASE WHEN shape = 'peer7' THEN :stn ELSE :readings END, 1) AS "of which indexes",
       round(sum(total) FILTER (WHERE role = 'per-message')::numeric / :readings, 1) AS "per-message B/rdg",
       round(sum(total) FILTER (WHERE role = 'archive')::numeric / :readings, 1) AS "archive B/rdg",
       round(sum(total) FILTER (WHERE role IN ('readings', 'per-message', 'archive'))::numeric
             / CASE WHEN shape = 'peer7' THEN :stn ELSE :readings END, 1) AS "total B/rdg",
       round(sum(total) FILTER (WHERE role IN ('readings', 'per-message', 'archive'))::numeric
             / CASE WHEN shape = 'peer7' THEN :stn ELSE :readings END
             / (SELECT total::numeric / :stn FROM gen.results WHERE shape = 'peer7' AND role = 'readings'), 2) AS "x peer7",
       pg_size_pretty(sum(total) FILTER (WHERE role = 'dimension')) AS "dimensions (fixed)"
FROM gen.results WHERE shape <> 'lean+uk' AND role <> 'as copied' GROUP BY shape
UNION ALL
SELECT 'lean+uk', round(total::numeric / :readings, 1), round(idx::numeric / :readings, 1), NULL, NULL,
       NULL, NULL, NULL FROM gen.results WHERE shape = 'lean+uk' AND role <> 'as copied'
ORDER BY 1 DESC;
\echo
\echo Binary copy (psql copy from a file, FORMAT binary) into an empty table of each shape, median of the rounds
SELECT shape, max(rows) AS rows, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS "median ms",
       round(min(ms)::numeric, 1) AS "min ms", round(max(ms)::numeric, 1) AS "max ms",
       round(max(rows) / (percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) / 1000))::bigint AS "rows/s"
FROM gen.times WHERE what = 'copy' GROUP BY shape
ORDER BY array_position(ARRAY['peer7','current','lean','lean+uk','messages','samples'], shape);
\echo
\echo Read paths (median of 3, ms)
SELECT what, round(max(ms) FILTER (WHERE shape = 'current')::numeric, 1) AS current,
       round(max(ms) FILTER (WHERE shape = 'lean')::numeric, 1) AS "lean, full view",
       round(max(ms) FILTER (WHERE shape = 'lean slim')::numeric, 1) AS "lean, slim"
FROM gen.times WHERE what <> 'copy' GROUP BY what ORDER BY what;
\echo
\echo Indexes, per relation (bytes per reading of the shape; hypertable_index_size for hypertables)
SELECT shape, index_name, round(bytes::numeric / :readings, 1) AS "B/rdg", pg_size_pretty(bytes) AS size
FROM gen.index_sizes ORDER BY ord;
SQL
echo
echo "done in $((SECONDS - t_start)) s"
