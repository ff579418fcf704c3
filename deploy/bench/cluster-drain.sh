#!/usr/bin/env bash
# deploy/bench/cluster-drain.sh: cluster mode's throughput and failover, in one run, next to
# single mode and the database's COPY limit (issue 16). Run as root on the topology of
# deploy/cluster/cluster.sh, after `eval "$(deploy/cluster/cluster.sh env)"` and
# `cargo build --release` (it runs target/release/soilmon and soilmon-bench):
#
#   1. single   `soilmon bench --skip-latency --skip-lab` with the database on the Patroni
#               cluster: the COPY limit (binary COPY on the primary, synchronous standby) and
#               the Mosquitto drain (one collector, its persistent session) of N messages
#   2. drain K  for each K of --collectors: N messages (soilmon simulate, 8 stations over the
#               demo points, through rabbit1's MQTT listener) queued in a fresh quorum queue,
#               then K collectors started at once and timed until every message is stored;
#               the queue must end with nothing ready and nothing unacked
#   3. failover one collector under a steady stream (--rate msg/s for 90 s, through a node
#               that is not the queue's leader); the Patroni primary SIGKILLed after 15 s,
#               the quorum queue's leader node 25 s later: for each, the time from the kill
#               until a message published right after it is stored (for the primary also
#               when a new leader held the key and when it had a synchronous standby, from
#               Patroni's REST API). Then every message
#               must be stored once and acked; `cluster.sh up` brings the killed nodes back.
#
#   deploy/bench/cluster-drain.sh [--messages N] [--collectors "1 2 3"] [--rate R]
#                                 [--skip-single] [--skip-failover] [--json-out FILE]
#   deploy/bench/cluster-drain.sh --help
#
# Defaults: --messages 20000, --collectors "1 2 3", --rate 200, --json-out
# target/bench/cluster-drain.json. Every wait is bounded (a phase gives up after
# 120 s + N/100 s); every database and queue it makes is dropped at the end of its phase.
# Prints a table and writes the JSON. Figures on a shared machine vary: note `uptime`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO
N=20000
COLLECTORS="1 2 3"
RATE=200
SKIP_SINGLE=0
SKIP_FAILOVER=0
JSON_OUT="$REPO/target/bench/cluster-drain.json"
BIN="$REPO/target/release"
POINTS="$REPO/config/points/demo.csv"
PSQL="${SOILMON_PG_BIN:-/usr/lib/postgresql/15/bin}/psql"

usage() { sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
log() { printf '[cluster-drain] %s\n' "$*" >&2; }
die() { printf '[cluster-drain] ERROR: %s\n' "$*" >&2; exit 1; }

while (($#)); do
	case "$1" in
	--messages) N=$2; shift 2 ;;
	--collectors) COLLECTORS=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--skip-single) SKIP_SINGLE=1; shift ;;
	--skip-failover) SKIP_FAILOVER=1; shift ;;
	--json-out) JSON_OUT=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
[[ $N =~ ^[0-9]+$ ]] && ((N >= 100 && N <= 1000000)) || die "--messages must be 100..1000000"
[[ $RATE =~ ^[0-9]+$ ]] && ((RATE >= 10 && RATE <= 5000)) || die "--rate must be 10..5000"
for v in SOILMON_CLUSTER_DATABASE_URL SOILMON_CLUSTER_AMQP_URLS SOILMON_CLUSTER_MQTT_USER \
	SOILMON_CLUSTER_MQTT_PASSWORD SOILMON_CLUSTER_RABBITMQ_API SOILMON_CLUSTER_RABBITMQ_ADMIN_USER \
	SOILMON_CLUSTER_RABBITMQ_ADMIN_PASSWORD; do
	[[ -n ${!v:-} ]] || die "$v is not set: eval \"\$(deploy/cluster/cluster.sh env)\" first"
done
[[ -x $BIN/soilmon && -x $BIN/soilmon-bench ]] || die "build first: cargo build --release"
readonly LIMIT=$((120 + N / 100))
IFS=, read -r -a APIS <<<"$SOILMON_CLUSTER_RABBITMQ_API"
IFS=, read -r -a MQTT_URLS <<<"$SOILMON_CLUSTER_MQTT_URLS"
readonly MQTT1="${MQTT_URLS[0]##*:}" MQTT2="${MQTT_URLS[1]##*:}"
WORK="$(mktemp -d)"
readonly WORK
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }
db_url() { echo "${SOILMON_CLUSTER_DATABASE_URL/\/soilmon\?//$1?}"; }
sql() { "$PSQL" -X -qtA -d "$1" -c "$2"; }
api() { curl -sf -u "$SOILMON_CLUSTER_RABBITMQ_ADMIN_USER:$SOILMON_CLUSTER_RABBITMQ_ADMIN_PASSWORD" "$@"; }
# ready unacked of queue $1, from the first API node that answers (one may be killed)
queue_counts() {
	local a j
	for a in "${APIS[@]}"; do
		j=$(api --max-time 5 "$a/api/queues/%2F/$1" 2>/dev/null) || continue
		python3 -c 'import json,sys; q=json.loads(sys.argv[1]); print(q.get("messages_ready", -1), q.get("messages_unacknowledged", -1))' "$j"
		return 0
	done
	echo "? ?"
}
stored() { sql "$1" "SELECT count(*) FROM samples" 2>/dev/null || echo -1; }

# The scenario environment of tag $1: its database, queue names and topic prefix.
scenario_env() {
	local t=$1
	printf '%s\n' "SOILMON__DATABASE__URL=$(db_url "$t")" "SOILMON__INGEST__SOURCE=amqp" \
		"SOILMON__AMQP__URLS=$SOILMON_CLUSTER_AMQP_URLS" "SOILMON__AMQP__QUEUE=soilmon.$t.readings" \
		"SOILMON__AMQP__DEAD_LETTER_QUEUE=soilmon.$t.dead" "SOILMON__AMQP__DEAD_LETTER_EXCHANGE=soilmon.$t.dlx" \
		"SOILMON__MQTT__TOPIC_PREFIX=$t/soil/v1" "SOILMON__HTTP__ADDR=127.0.0.1:0" \
		"SOILMON__LOG__FORMAT=text"
}
sm() { # tag args...: soilmon with the scenario environment
	local t=$1 envs=()
	shift
	mapfile -t envs < <(scenario_env "$t")
	env "${envs[@]}" "$BIN/soilmon" --config "$REPO/config/default.toml" "$@"
}
setup_scenario() {
	local t=$1
	sql "$(db_url postgres)" "CREATE DATABASE $t" >/dev/null
	sm "$t" migrate >/dev/null
	sm "$t" points import "$POINTS" >/dev/null
	sm "$t" broker setup >/dev/null
}
drop_scenario() { # the database, and over AMQP (the API administrator has no vhost rights) the
	# queues, with Debian's python3 (python3-pika, installed by cluster.sh)
	local t=$1
	sql "$(db_url postgres)" "DROP DATABASE IF EXISTS $t WITH (FORCE)" >/dev/null 2>&1 || true
	/usr/bin/python3 - "${SOILMON_CLUSTER_AMQP_URLS%%,*}" "$t" <<'PY' || log "queues of $t not deleted"
import sys, pika
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = conn.channel()
t = sys.argv[2]
for q in ("soilmon.%s.readings" % t, "soilmon.%s.dead" % t):
    ch.queue_delete(q)
ch.exchange_delete("soilmon.%s.dlx" % t)
conn.close()
PY
}
# simulate through MQTT listener port $2: tag $1, count $3, rate $4
publish() {
	local t=$1 port=$2 count=$3 rate=$4
	SOILMON__MQTT__HOST=127.0.0.1 SOILMON__MQTT__PORT=$port SOILMON__MQTT__USERNAME="$SOILMON_CLUSTER_MQTT_USER" \
		SOILMON__MQTT__PASSWORD="$SOILMON_CLUSTER_MQTT_PASSWORD" SOILMON__MQTT__TOPIC_PREFIX="$t/soil/v1" \
		"$BIN/soilmon" --config "$REPO/config/default.toml" simulate --points "$POINTS" --stations 8 \
		--count "$count" --rate "$rate" --seed 7
}
start_collector() { # tag name -> pid in PIDS (env execs soilmon: $! is soilmon itself)
	local t=$1 name=$2 envs=()
	mapfile -t envs < <(scenario_env "$t")
	env "${envs[@]}" SOILMON__MQTT__CLIENT_ID="$name" SOILMON__ALERTS__CLIENT_ID="$name-pub" \
		"$BIN/soilmon" --config "$REPO/config/default.toml" run >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
}
stop_collectors() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}
wait_for() { # description seconds command...: poll every 0.2 s until the command succeeds
	local what=$1 secs=$2 t0
	shift 2
	t0=$SECONDS
	until "$@"; do
		((SECONDS - t0 < secs)) || die "$what: not within ${secs}s"
		sleep 0.2
	done
}
count_is() { [[ $(stored "$1") == "$2" ]]; }
count_above() { (($(stored "$1") > $2)); }
queue_is() { [[ $(queue_counts "$1") == "$2" ]]; }

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
record() { echo "$1" >>"$RESULTS"; log "result: $1"; }

phase_single() {
	log "single: soilmon bench (COPY limit, Mosquitto drain) of $N messages, database on the Patroni primary"
	local kv
	kv=$(python3 - "$SOILMON_CLUSTER_DATABASE_URL" <<'PY'
import sys, urllib.parse as u
url = sys.argv[1]
rest = url.split("://", 1)[1]
cred, rest = rest.split("@", 1)
user, pw = cred.split(":", 1)
hosts, rest = rest.split("/", 1)
q = dict(u.parse_qsl(rest.split("?", 1)[1]))
h = [x.rsplit(":", 1) for x in hosts.split(",")]
print("host=%s port=%s user=%s password=%s target_session_attrs=%s connect_timeout=%s" % (
    ",".join(a for a, _ in h), ",".join(b for _, b in h), u.unquote(user), u.unquote(pw),
    q.get("target_session_attrs", "read-write"), q.get("connect_timeout", "3")))
PY
)
	(cd "$REPO" && SOILMON__DATABASE__URL="$kv" "$BIN/soilmon-bench" --config config/default.toml \
		--messages "$N" --skip-latency --skip-lab --json-out "$WORK/single.json" >"$WORK/single.out" 2>&1) \
		|| { tail -n 30 "$WORK/single.out" >&2; die "soilmon bench failed"; }
	python3 - "$WORK/single.json" >>"$RESULTS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"phase": "single", "bench": d}))
PY
}

phase_drain() {
	local k=$1 t t0 secs i readings
	t="cd$(date +%s)k$k"
	log "drain: $N messages queued, then $k collector(s)"
	setup_scenario "$t"
	publish "$t" "$MQTT1" "$N" 5000 >"$WORK/$t.sim" 2>&1 || { tail "$WORK/$t.sim" >&2; die "simulate failed"; }
	wait_for "queue holds $N" "$LIMIT" queue_is "soilmon.$t.readings" "$N 0"
	t0=$(now)
	for ((i = 1; i <= k; i++)); do start_collector "$t" "$t-c$i"; done
	wait_for "$N stored" "$LIMIT" count_is "$(db_url "$t")" "$N"
	secs=$(since "$t0")
	wait_for "queue empty (acked)" 60 queue_is "soilmon.$t.readings" "0 0"
	stop_collectors
	readings=$(sql "$(db_url "$t")" "SELECT count(*) FROM readings")
	record "{\"phase\": \"drain\", \"collectors\": $k, \"messages\": $N, \"readings\": $readings, \"seconds\": $secs}"
	drop_scenario "$t"
}

# Publishes one message (msg_id $2) QoS1 through MQTT port $3 under tag $1; waits for PUBACK.
marker() {
	local t=$1 id=$2 port=$3 point
	point=$(awk -F, 'NR == 2 {print $1}' "$POINTS")
	mosquitto_pub -h 127.0.0.1 -p "$port" -u "$SOILMON_CLUSTER_MQTT_USER" -P "$SOILMON_CLUSTER_MQTT_PASSWORD" \
		-q 1 -i "marker-$id" -t "$t/soil/v1/stations/mk01/readings" \
		-m "{\"msg_id\":\"$id\",\"point_id\":\"$point\",\"sampled_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"readings\":[{\"metal\":\"Cd\",\"value\":0.1,\"unit\":\"mg/kg\"}]}"
}
marker_stored() { [[ -n $(sql "$1" "SELECT 1 FROM samples WHERE msg_id = '$2'" 2>/dev/null) ]]; }

# Kills $2 (cluster.sh kill argument) under tag $1, publishes a marker through MQTT port $3
# right after, and records the time from the kill until the marker is stored.
# Watches Patroni's REST API (every node's, base+7008..7010) after the primary $1 was killed,
# for at most $2 s, and prints what a slow failover is made of as JSON: seconds from the start
# until a new leader held the leader key, and until it also had a streaming synchronous
# standby (strict synchronous mode: no commit is acknowledged before that).
patroni_watch() {
	python3 - "$1" "$2" "${SOILMON_CLUSTER_PORT_BASE:-21000}" <<'PY'
import json, sys, time, urllib.request
killed, limit, base = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
t0, seen = time.monotonic(), {}
while time.monotonic() - t0 < limit and "sync_standby_s" not in seen:
    for port in range(base + 7008, base + 7011):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/cluster", timeout=1) as r:
                members = json.load(r)["members"]
        except Exception:
            continue
        leader = next((m["name"] for m in members if m.get("role") == "leader"), None)
        if leader and leader != killed:
            at = round(time.monotonic() - t0, 2)
            seen.setdefault("new_leader", leader)
            seen.setdefault("leader_s", at)
            if any(m.get("role") == "sync_standby" and m.get("state") in ("streaming", "running")
                   and m.get("lag", 0) in (0, None) for m in members):
                seen.setdefault("sync_standby_s", at)
        break
    time.sleep(0.25)
print(json.dumps(seen))
PY
}

kill_and_time() {
	local t=$1 what=$2 port=$3 phase=$4 t0 killed secs id watch="" extra=""
	id="after-$phase"
	killed=$(bash "$REPO/deploy/cluster/cluster.sh" kill "$what")
	t0=$(now)
	if [[ $what == pg-primary ]]; then
		patroni_watch "$killed" "$LIMIT" >"$WORK/$phase.patroni" &
		watch=$!
	fi
	# A station resends what was not acknowledged: while the queue has no leader the node may
	# close the connection instead of answering.
	until marker "$t" "$id" "$port" >/dev/null 2>&1; do
		(($(printf '%.0f' "$(since "$t0")") < LIMIT)) || die "$phase: the marker was not accepted through port $port"
		sleep 0.5
	done
	wait_for "$phase: a message published after the kill stored" "$LIMIT" marker_stored "$(db_url "$t")" "$id"
	secs=$(since "$t0")
	if [[ -n $watch ]]; then
		wait "$watch" || true
		extra=$(cat "$WORK/$phase.patroni" 2>/dev/null || true)
		[[ $extra == \{* ]] || extra='{}'
		log "$phase: Patroni after the kill: $extra"
		extra=", \"patroni\": $extra"
	fi
	record "{\"phase\": \"$phase\", \"killed\": \"$killed\", \"kill_to_stored_s\": $secs$extra}"
	log "$phase: $killed killed, a message published right after it stored $secs s later"
}

phase_failover() {
	local t leader n pub total=$((RATE * 90)) via
	t="cf$(date +%s)"
	log "failover: $RATE msg/s for 90 s, one collector; Patroni primary killed at 15 s, the queue leader 25 s after that recovered"
	setup_scenario "$t"
	start_collector "$t" "$t-c1"
	leader=$(bash "$REPO/deploy/cluster/cluster.sh" queue-leader "soilmon.$t.readings")
	n=${leader#rabbit}
	n=${n%%@*}
	# The stream and the markers go through a node that is not the queue's leader.
	via=${MQTT_URLS[$((n % ${#MQTT_URLS[@]}))]##*:}
	publish "$t" "$via" "$total" "$RATE" >"$WORK/$t.sim" 2>&1 &
	pub=$!
	sleep 15
	kill_and_time "$t" pg-primary "$via" pg-primary
	sleep 25
	kill_and_time "$t" "rabbit$n" "$via" queue-leader
	# The stream is background load: a connection the kill closed ends it early.
	wait "$pub" || log "the stream ended early: $(tail -n 1 "$WORK/$t.sim")"
	wait_for "queue empty (every message stored and acked)" "$LIMIT" queue_is "soilmon.$t.readings" "0 0"
	stop_collectors
	log "failover: the queue is empty (every message stored and acked); cluster.sh up brings the killed nodes back"
	bash "$REPO/deploy/cluster/cluster.sh" up >/dev/null 2>&1 || die "cluster.sh up failed after the kills"
	drop_scenario "$t"
}

((SKIP_SINGLE)) || phase_single
for k in $COLLECTORS; do phase_drain "$k"; done
((SKIP_FAILOVER)) || phase_failover

mkdir -p "$(dirname "$JSON_OUT")"
python3 - "$RESULTS" "$JSON_OUT" "$N" "$(uptime)" "$(git -C "$REPO" rev-parse --short HEAD)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, uptime, commit = int(sys.argv[3]), sys.argv[4], sys.argv[5]
out = {"messages": n, "uptime_at_end": uptime.strip(), "commit": commit, "phases": rows}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print("%-44s %14s %14s" % ("phase", "readings/s", "messages/s"))
for r in rows:
    if r["phase"] == "single":
        b = r["bench"]
        def pick(*path):
            o = b
            for p in path:
                o = o.get(p) if isinstance(o, dict) else None
            return o
        copy = pick("copy_limit", "per_second")
        drain = pick("drain", "readings", "per_second")
        dm = pick("drain", "messages_per_second")
        print("%-44s %14s %14s" % ("COPY limit (Patroni primary, sync standby)", "%.0f" % copy if copy else "?", "-"))
        print("%-44s %14s %14s" % ("single mode: Mosquitto, 1 collector", "%.0f" % drain if drain else "?", "%.0f" % dm if dm else "?"))
    elif r["phase"] == "drain":
        s = r["seconds"]
        print("%-44s %14.0f %14.0f" % ("cluster: RabbitMQ, %d collector(s)" % r["collectors"], r["readings"] / s, r["messages"] / s))
for r in rows:
    if r["phase"] in ("pg-primary", "queue-leader"):
        print("%s: %s SIGKILLed, a message published right after it stored %.1f s later" % (r["phase"], r["killed"], r["kill_to_stored_s"]))
print("uptime: " + uptime.strip())
print("JSON: " + sys.argv[2])
PY
