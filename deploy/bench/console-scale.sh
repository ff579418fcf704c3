#!/usr/bin/env bash
# Read paths of the web console and the public page at city scale (issue 13's scale figures).
#
# In a scratch database of the project's local cluster (deploy/local/services.sh must be
# running) it registers P points (`soilmon points import`), writes R readings (R/8 samples of
# 8 metals from 50 stations over 10 years, plus one point x metal with a daily sample for 10
# years), I incidents (a few thousand open, the rest cleared) and I alert events straight
# into soilmon's tables with SQL, starts `soilmon run` (release build) on a private HTTP port
# and no broker traffic, and times K requests of each read path with a keep-alive client:
#
#   map      GET /console/data/map                      every point, tier and open incidents
#   feed     GET /console/data/feed?limit=100           the incident feed page
#   series   GET /console/data/points/{id}/series?metal=Cd   ten years of daily samples
#   latest   GET /console/data/points/{id}/latest       a map popup
#   public   GET /public                                the public disclosure page
#
# It prints p50, p99 and max per path (milliseconds), then streams the public CSV and GeoJSON
# downloads and prints soilmon's peak RSS before and after them (VmHWM): the downloads stream,
# so it should not grow with the number of points. The generated data bypasses the archive
# (the scratch database does not `verify`); it is dropped at the end unless --keep-db.
#
#   deploy/bench/console-scale.sh [--points P] [--readings R] [--incidents I] [--requests K]
#                                 [--keep-db] [--help]
#
#   --points P      monitoring points (default 5000)
#   --readings R    readings (default 1000000)
#   --incidents I   incidents and alert events (default 100000)
#   --requests K    requests per path (default 200; the first 10 warm up and are not counted)
#   --keep-db       do not drop the scratch database (its name is printed)
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
P=5000 R=1000000 I=100000 K=200 KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --points) P=$2; shift ;;
    --readings) R=$2; shift ;;
    --incidents) I=$2; shift ;;
    --requests) K=$2; shift ;;
    --keep-db) KEEP=1 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in "$P" "$R" "$I" "$K"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done
((P >= 100 && P <= 100000)) || { echo "--points must be 100-100000" >&2; exit 2; }
((R >= 8000 && R <= 20000000)) || { echo "--readings must be 8000-20000000" >&2; exit 2; }
((I >= 100 && I <= 2000000)) || { echo "--incidents must be 100-2000000" >&2; exit 2; }
((K >= 20 && K <= 5000)) || { echo "--requests must be 20-5000" >&2; exit 2; }

cd "$(dirname "$0")/../.."
root=$PWD
bin=$root/target/release/soilmon
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
eval "$(bash deploy/local/services.sh env)"
db=soilmon_scale_$(date +%s)
admin="$SOILMON_TEST_PG dbname=postgres"
url="$SOILMON_TEST_PG dbname=$db"
work=$(mktemp -d /tmp/soilmon-scale.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    if ((KEEP)); then echo "kept database $db"; else
        psql "$admin" -XAtq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
psql "$admin" -XAtq -c "CREATE DATABASE $db"

export SOILMON__DATABASE__URL="$url" SOILMON__HTTP__TOKENS_FILE=$work/tokens
export SOILMON__MQTT__CLIENT_ID=scale-$db SOILMON__ALERTS__CLIENT_ID=scale-pub-$db
export SOILMON__DELIVER__SECRETS_FILE=$work/secrets
# One identity sends every request: the per-identity rate limit is not what is measured.
export SOILMON__HTTP__RATE_LIMIT_PER_MINUTE=1000000
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SOILMON__HTTP__ADDR=127.0.0.1:$port SOILMON__LOG__FORMAT=json
"$bin" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; exit 1; }

# Points: four counties, every type, farmland and development land.
python3 - "$P" >"$work/points.csv" <<'PY'
import sys
n = int(sys.argv[1])
counties = ["441702", "441704", "441721", "441781"]
uses = ["paddy", "dry_land", "vegetable", "orchard", "development_first", "development_second"]
print("point_id,name,county_code,lon,lat,point_type,land_use,ph")
for i in range(n):
    c = counties[i % 4]
    t = ["basic", "basic", "basic", "risk", "background"][i % 5]
    k = {"basic": "B", "risk": "R", "background": "G"}[t]
    print(f"{c}-{k}-{i:05d},scale point {i},{c},{111.3 + (i % 100) * 0.008:.5f},"
          f"{21.6 + (i // 100 % 100) * 0.008:.5f},{t},{uses[i % 6]},{5.0 + (i % 30) / 10:.1f}")
PY
"$bin" points import "$work/points.csv" >"$work/import.log" 2>&1 ||
    { cat "$work/import.log" >&2; exit 1; }
series_point=$(sed -n 2p "$work/points.csv" | cut -d, -f1)

t0=$SECONDS
psql "$url" -XAtq -v ON_ERROR_STOP=1 -v readings="$R" -v incidents="$I" \
    -v series_point="$series_point" <<'SQL'
SET client_min_messages = warning;
INSERT INTO sources (source, source_id) SELECT 'station', 'st' || lpad(g::text, 3, '0')
FROM generate_series(1, 50) g;
INSERT INTO units (spelling) VALUES ('mg/kg') ON CONFLICT DO NOTHING;
INSERT INTO judgement_bases (land_use, standard_id, standard_version, threshold_column,
                             screening_mgkg, screening_source, ph_band, ph_assumed)
SELECT 'dry_land', 'GB 15618-2018', '2018', 'other', 10 * m, 'Table 1', '5.5<pH<=6.5', false
FROM generate_series(1, 9) m;
-- R/8 samples spread over the points and ten years, 8 metals each.
CREATE TEMP TABLE np AS SELECT count(*)::int AS n FROM points;
INSERT INTO samples (sampled_at, received_at, source_key, point_key, part, msg_id, ph, method,
                     content_sha256)
SELECT t, t, 1 + g % 50, 1 + g % (SELECT n FROM np), 0, 'm' || g, 6.0, 'XRF',
       sha256(g::text::bytea)
FROM generate_series(1, :readings / 8) g,
     LATERAL (SELECT now() - interval '3650 days' * (1 - g::float8 / (:readings / 8)) AS t) x;
-- Ten years of daily samples of the series point.
INSERT INTO samples (sampled_at, received_at, source_key, point_key, part, msg_id, ph, method,
                     content_sha256)
SELECT now() - interval '1 day' * d, now() - interval '1 day' * d, 1, p.point_key, 0,
       'daily' || d, 6.0, 'XRF', sha256(('daily' || d)::bytea)
FROM generate_series(1, 3650) d, points p WHERE p.point_id = :'series_point';
INSERT INTO readings (sampled_at, sample_key, value_mgkg, value_orig, point_key, unit_orig,
                      metal, basis_key, level, detected)
SELECT s.sampled_at, s.sample_key, v, v, s.point_key, 1, m, m,
       CASE WHEN v > 10 * m * 1.9 THEN 2 WHEN v > 10 * m THEN 1 ELSE 0 END, true
FROM samples s, unnest('{1,2,3,4,6,7,8,9}'::smallint[]) m,
     LATERAL (SELECT round((10 * m * (0.3 + random() * 1.0))::numeric, 3)::float8 AS v) x;
-- Incidents: one open per point x metal for the first pairs, the rest cleared.
INSERT INTO incidents (incident_id, point_id, metal, county_code, state, level,
                       opened_sampled_at, updated_sampled_at, cleared_sampled_at)
SELECT gen_random_uuid(), p.point_id, (ARRAY['Pb','Hg','Cd','Cr','As','Cu','Zn','Ni'])[1 + g % 8],
       p.county_code, CASE WHEN g <= 2000 THEN 'open' ELSE 'cleared' END,
       CASE WHEN g % 7 = 0 THEN 'intervention' ELSE 'screening' END, t, t,
       CASE WHEN g <= 2000 THEN NULL ELSE t + interval '30 days' END
FROM generate_series(1, :incidents) g
JOIN points p ON p.point_key = 1 + (g / 8) % (SELECT n FROM np),
     LATERAL (SELECT now() - interval '3650 days' * (1 - g::float8 / :incidents) AS t) x;
-- One alert event per incident, shaped like the pipeline's (the feed reads these).
INSERT INTO outbox (event_id, kind, topic, payload, incident_id, created_at, fanned_out_at)
SELECT gen_random_uuid(), 'alert',
       'soil/v1/alerts/' || i.county_code || '/' || i.point_id || '/' || i.metal,
       jsonb_build_object('state', 'opened', 'level', i.level, 'metal', i.metal,
           'point_id', i.point_id, 'county_code', i.county_code, 'incident_id', i.incident_id,
           'sampled_at', i.opened_sampled_at, 'value_mgkg', 42.0, 'screening_mgkg', 30.0,
           'standard', 'GB 15618-2018', 'source', 'station', 'station_id', 'st001'),
       i.incident_id, i.opened_sampled_at, now()
FROM incidents i ORDER BY i.opened_sampled_at;
-- Seed events count as published long ago: out of the publisher's queue.
DELETE FROM outbox_pending;
VACUUM ANALYZE;
SQL
echo "data: $P points, $(psql "$url" -XAtc 'SELECT count(*) FROM readings') readings," \
    "$(psql "$url" -XAtc 'SELECT count(*) FROM incidents') incidents, written in $((SECONDS - t0)) s"

token=$("$bin" tokens add scale-admin --role admin | sed -n 's/^token: //p')
[ -n "$token" ] || { echo "no token printed by soilmon tokens add" >&2; exit 1; }
"$bin" run >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$work/run.log" >&2; exit 1; }
    sleep 0.1
done
# The first tier snapshot refresh runs at start; wait for it (it logs nothing at info).
for _ in $(seq 1 600); do
    n=$(psql "$url" -XAtc "SELECT count(*) FROM point_soil_tiers_snapshot")
    ((n > 0)) && break
    sleep 0.5
done

hwm() { awk '/VmHWM/ {print $2 / 1024}' "/proc/$pid/status"; }
python3 - "$port" "$token" "$K" "$series_point" "$pid" <<'PY'
import http.client, sys, time
port, token, k, point, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
paths = {
    "map": "/console/data/map",
    "feed": "/console/data/feed?limit=100",
    "series": f"/console/data/points/{point}/series?metal=Cd",
    "latest": f"/console/data/points/{point}/latest",
    "public": "/public",
}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
headers = {"Authorization": f"Bearer {token}"}
print(f"{'path':8} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}")
for name, path in paths.items():
    times, size = [], 0
    for i in range(k + 10):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        dt = (time.perf_counter() - t) * 1e3
        if r.status != 200:
            sys.exit(f"{path}: HTTP {r.status}: {body[:300]!r}")
        if i >= 10:
            times.append(dt)
            size = len(body)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"{name:8} {len(times):5} {p(0.5):8.1f} {p(0.99):8.1f} {times[-1]:8.1f} {size:9}")
PY
before=$(hwm)
for f in csv geojson xlsx; do
    curl -fsS -o /dev/null -w "public points.$f: %{size_download} bytes in %{time_total} s\n" \
        "http://127.0.0.1:$port/public/city/points.$f"
done
echo "soilmon peak RSS (VmHWM): ${before} MiB before the downloads, $(hwm) MiB after"
