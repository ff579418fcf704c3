#!/usr/bin/env bash
# deploy/cluster/smoke.sh: prove the topology that `cluster.sh up` started
# (as root; same SOILMON_CLUSTER_DIR / SOILMON_CLUSTER_PORT_BASE as cluster.sh).
#
#   1. MQTT -> quorum queue -> AMQP: 100 MQTT QoS1 messages published to one
#      node's MQTT listener, consumed over AMQP from another node; every one
#      exactly once.
#   2. The quorum queue's leader node SIGKILLed: 100 messages published (and
#      queued) before the kill, 100 more after it through a surviving node;
#      all 200 consumed from the third node, none missing, none twice.
#   3. The Patroni primary (patroni + its postmaster) SIGKILLed while a writer
#      inserts one row per transaction through the multi-host URL
#      (target_session_attrs=read-write): the time from the kill to the first
#      committed write on the new primary, the row committed before the kill is
#      there, and every write whose COMMIT was acknowledged is there.
#   4. `cluster.sh up` brings the killed nodes back (they rejoin as follower /
#      replica); the time it took.
#
# Every loop is bounded in count and time. The figures are printed at the end
# and written to $SOILMON_CLUSTER_DIR/smoke/figures.txt.
#
#   deploy/cluster/smoke.sh            run everything
#   deploy/cluster/smoke.sh --help
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
	exit 0
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster.sh
source "$HERE/cluster.sh"
need_root

S="$DIR/smoke"
mkdir -p "$S"
RUN="smoke-$(date +%s)-$$"
FIG="$S/figures.txt"
: >"$FIG"
fig() { printf '%s\n' "$*" | tee -a "$FIG"; }
step() { printf '\n[smoke] == %s ==\n' "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

cmd_status >/dev/null 2>&1 || die "the cluster is not fully up: run deploy/cluster/cluster.sh up first (status: deploy/cluster/cluster.sh status)"

RMQ_PASS=$(secret rabbitmq)
amqp_url() { echo "amqp://$RMQ_USER_NAME:$RMQ_PASS@127.0.0.1:$(rmq_amqp_port "$1")/%2F"; }
URL=$(db_url)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
cat >"$S/consume.py" <<'PYEOF'
# Consume run `run`'s messages seq lo..hi from `queue`, ack each, report JSON.
# Bounded: stops `grace` s after the last expected message arrived (to catch
# copies received twice), or at `timeout` s.
import json, sys, time, pika
url, queue, run, lo, hi, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
grace = 3.0
p = pika.URLParameters(url)
p.socket_timeout = 5
p.blocked_connection_timeout = 10
conn = pika.BlockingConnection(p)
ch = conn.channel()
ch.basic_qos(prefetch_count=50)
counts, other, redelivered, keys = {}, 0, 0, set()
start = time.monotonic()
deadline, done_at = start + timeout, None
for method, props, body in ch.consume(queue, inactivity_timeout=0.5):
    t = time.monotonic()
    if method is not None:
        try:
            m = json.loads(body)
        except ValueError:
            m = {}
        if m.get("run") == run:
            counts[m["seq"]] = counts.get(m["seq"], 0) + 1
            keys.add(method.routing_key)
            redelivered += 1 if method.redelivered else 0
        else:
            other += 1
        ch.basic_ack(method.delivery_tag)
        if done_at is None and all(s in counts for s in range(lo, hi + 1)):
            done_at = t
    if (done_at is not None and t - done_at >= grace) or t >= deadline:
        break
ch.cancel()
conn.close()
want = set(range(lo, hi + 1))
print(json.dumps({
    "expected": len(want),
    "received": sum(counts.values()),
    "unique": len(set(counts) & want),
    "twice": sum(c - 1 for c in counts.values() if c > 1),
    "missing": sorted(want - set(counts))[:20],
    "missing_count": len(want - set(counts)),
    "redelivered_flag": redelivered,
    "other_messages": other,
    "routing_keys": sorted(keys),
    "seconds_to_all": round(done_at - start, 2) if done_at else None,
}))
PYEOF

purge_queue() {
	"$PY" - "$(amqp_url "$1")" "$READINGS_QUEUE" <<'PYEOF'
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
n = c.channel().queue_purge(sys.argv[2]).method.message_count
c.close()
print(n)
PYEOF
}

# publish node lo hi station: MQTT QoS1, one connection, one message a line.
publish() {
	local node=$1 lo=$2 hi=$3 station=$4 t0 rc=0
	t0=$(now)
	seq "$lo" "$hi" | awk -v run="$RUN" -v st="$station" '{ printf "{\"run\":\"%s\",\"station\":\"%s\",\"seq\":%d}\n", run, st, $1 }' \
		| timeout 120 mosquitto_pub -h 127.0.0.1 -p "$(rmq_mqtt_port "$node")" -u "$RMQ_USER_NAME" -P "$RMQ_PASS" \
			-i "$RUN-pub-$lo" -q 1 -V mqttv311 -t "soil/v1/stations/$station/readings" -l || rc=$?
	((rc == 0)) || die "mosquitto_pub to $(rmq_node "$node") exited $rc"
	log "published seq $lo..$hi to $(rmq_node "$node") MQTT 127.0.0.1:$(rmq_mqtt_port "$node") in $(secs "$t0" "$(now)") s"
}

consume() { # node lo hi -> JSON line
	"$PY" "$S/consume.py" "$(amqp_url "$1")" "$READINGS_QUEUE" "$RUN" "$2" "$3" 90
}

jget() { "$PY" -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(v if not isinstance(v,list) else ",".join(map(str,v)))' "$1" "$2"; }

queue_leader() { # ask node $1; prints e.g. rabbit2@localhost
	rctl "$1" -q --timeout 10 list_queues name leader --formatter json 2>/dev/null \
		| "$PY" -c 'import json,sys; print(next((q["leader"] for q in json.load(sys.stdin) if q["name"] == sys.argv[1]), ""))' "$READINGS_QUEUE"
}

check_exact() { # json label
	local j=$1 label=$2
	fig "$label: expected $(jget "$j" expected), received $(jget "$j" received), unique $(jget "$j" unique), received twice $(jget "$j" twice), missing $(jget "$j" missing_count), redelivered-flag $(jget "$j" redelivered_flag), routing key $(jget "$j" routing_keys), all in $(jget "$j" seconds_to_all) s"
	[[ $(jget "$j" missing_count) == 0 && $(jget "$j" twice) == 0 ]] || FAIL=1
}
FAIL=0

# ---------------------------------------------------------------------------
# 1. MQTT on one node -> AMQP from another
# ---------------------------------------------------------------------------
step "1. 100 MQTT QoS1 messages to rabbit1's MQTT listener, consumed over AMQP from rabbit2"
log "purged $(purge_queue 1) old messages from $READINGS_QUEUE"
publish 1 1 100 ST-SMOKE-1
J=$(consume 2 1 100)
check_exact "$J" "mqtt->amqp (rabbit1 MQTT -> rabbit2 AMQP)"

# ---------------------------------------------------------------------------
# 2. The quorum queue leader SIGKILLed
# ---------------------------------------------------------------------------
step "2. SIGKILL the quorum queue leader"
L=$(queue_leader 1)
[[ $L =~ ^rabbit([1-3])@localhost$ ]] || die "could not read the leader of $READINGS_QUEUE (got '$L')"
LI=${BASH_REMATCH[1]}
others=()
for ((i = 1; i <= N; i++)); do ((i == LI)) || others+=("$i"); done
P=${others[0]} C=${others[1]}
log "leader $L; publishing through $(rmq_node "$P"), consuming from $(rmq_node "$C")"
publish "$P" 101 200 ST-SMOKE-2           # queued, not consumed yet
LPID=$(rmq_pid "$LI") || die "no pid for $L"
t_kill=$(now)
kill -KILL "$LPID"
wait_gone "$LPID" 10 || die "$L (pid $LPID) still alive after SIGKILL"
log "SIGKILLed $L (pid $LPID)"
newL=""
for ((k = 0; k < 120; k++)); do
	newL=$(queue_leader "$P" || true)
	[[ -n $newL && $newL != "$L" ]] && break
	sleep 0.5
done
[[ -n $newL && $newL != "$L" ]] || die "no new leader for $READINGS_QUEUE within 60 s"
t_leader=$(now)
publish "$P" 201 300 ST-SMOKE-2           # after the kill
t_pub=$(now)
J=$(consume "$C" 101 300)
fig "quorum queue leader kill: old leader $L, new leader $newL (seen $(secs "$t_kill" "$t_leader") s after the kill, polled every 0.5 s); 100 published after the kill accepted by $(secs "$t_leader" "$t_pub") s later"
check_exact "$J" "across the leader kill (100 queued before + 100 published after, consumed from $(rmq_node "$C"))"

# ---------------------------------------------------------------------------
# 3. The Patroni primary SIGKILLed
# ---------------------------------------------------------------------------
step "3. SIGKILL the Patroni primary (patroni and postmaster)"
psql_url() { timeout "${PSQL_TIMEOUT:-10}" "$PG_BIN/psql" "$URL" -X -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_url -c "CREATE TABLE IF NOT EXISTS smoke_failover (id bigint PRIMARY KEY, run text NOT NULL, note text NOT NULL, port int NOT NULL DEFAULT inet_server_port(), at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null
psql_url -c "INSERT INTO smoke_failover (id, run, note) VALUES ((extract(epoch from clock_timestamp()) * 1e6)::bigint, '$RUN', 'before-kill')" >/dev/null \
	|| die "could not commit the row before the kill"
PL=$(leader_index) || die "no Patroni primary"
PPORT=$(pg_port "$PL")
log "primary pg$PL (127.0.0.1:$PPORT); a committed row 'before-kill' is in"

# The writer: one INSERT per psql call (its own connection, so a failover is
# seen as connection errors, then as a connection to the new primary). An
# id goes to acked.txt only when psql reports the COMMIT succeeded. Bounded:
# 600 attempts or 150 s; stops 20 commits after the first commit on another port.
: >"$S/acked.txt"
: >"$S/writer.log"
(
	set +e
	start=$(date +%s)
	after=0
	for ((n = 1; n <= 600; n++)); do
		(($(date +%s) - start > 150)) && break
		id=$((n + 1000000 * $$))
		out=$(PSQL_TIMEOUT=5 psql_url -c "INSERT INTO smoke_failover (id, run, note) VALUES ($id, '$RUN', 'writer') RETURNING port" 2>>"$S/writer.log")
		if [[ $? -eq 0 && $out =~ ^[0-9]+$ ]]; then
			echo "$id $(date +%s.%N) $out" >>"$S/acked.txt"
			[[ $out != "$PPORT" ]] && ((after++))
			((after >= 20)) && break
		else
			echo "$(date +%s.%N) fail" >>"$S/writer.log"
			sleep 0.1
		fi
	done
) 9>&- &
WRITER=$!
sleep 3                                   # some commits on the old primary first
PATPID=$(patroni_pid "$PL") || die "no patroni pid for pg$PL"
PMPID=$(postmaster_pid "$PL") || die "no postmaster pid for pg$PL"
t_pgkill=$(now)
kill -KILL "$PATPID" "$PMPID"
log "SIGKILLed pg$PL: patroni $PATPID, postmaster $PMPID"
for ((k = 0; k < 200; k++)); do
	[[ -d /proc/$WRITER ]] || break
	sleep 1
done
if [[ -d /proc/$WRITER ]]; then kill "$WRITER" 2>/dev/null || true; fi
wait "$WRITER" 2>/dev/null || true

first_new=$(awk -v p="$PPORT" -v t="$t_pgkill" '$2 > t && $3 != p { print $2, $3; exit }' "$S/acked.txt")
[[ -n $first_new ]] || { FAIL=1; die "no write committed on a new primary (writer log $S/writer.log)"; }
t_first=${first_new% *}
NEWPORT=${first_new#* }
acked_before=$(awk -v t="$t_pgkill" '$2 <= t' "$S/acked.txt" | wc -l)
acked_total=$(wc -l <"$S/acked.txt")
failed=$(grep -c ' fail$' "$S/writer.log" || true)
ids=$(awk '{print $1}' "$S/acked.txt" | paste -sd, -)
present=$(psql_url -c "SELECT count(*) FROM smoke_failover WHERE run = '$RUN' AND note = 'writer' AND id IN ($ids)")
before_row=$(psql_url -c "SELECT count(*) FROM smoke_failover WHERE run = '$RUN' AND note = 'before-kill'")
newprim=$(psql_url -c "SELECT inet_server_port()")
fig "patroni primary kill: pg$PL (127.0.0.1:$PPORT) SIGKILLed; first commit on the new primary (127.0.0.1:$NEWPORT) $(secs "$t_pgkill" "$t_first") s after the kill (writer: one psql connection per INSERT, 0.1 s pause after a failure, $failed failed attempts)"
fig "acknowledged commits: $acked_total ($acked_before before the kill), present on the new primary: $present; row committed before the kill present: $before_row"
((present == acked_total && before_row == 1 && newprim == NEWPORT)) || FAIL=1
patronictl -c "$PGC_DIR/pg1/patroni.yml" list 2>/dev/null | tee -a "$FIG" || true

# ---------------------------------------------------------------------------
# 4. Bring the killed nodes back
# ---------------------------------------------------------------------------
step "4. cluster.sh up: the killed RabbitMQ node and PostgreSQL node rejoin"
t_up=$(now)
"$HERE/cluster.sh" up >"$S/up-after.log" 2>&1 || { tail -n 30 "$S/up-after.log" >&2; FAIL=1; }
fig "cluster.sh up after the kills: $(secs "$t_up" "$(now)") s; $(grep -c ': running\|: primary\|: replica' "$S/up-after.log" || true) of 9 nodes running"
fig "$(grep '^queue soilmon.readings ' "$S/up-after.log" || true)"
fig "killed pg$PL now: $(role_of "$PL")"

printf '\n[smoke] figures (%s):\n' "$FIG" >&2
cat "$FIG" >&2
if ((FAIL)); then
	echo "[smoke] FAILED" >&2
	exit 1
fi
echo "[smoke] OK" >&2
