#!/usr/bin/env bash
# deploy/cluster/cluster.sh: the whole soilmon cluster topology on ONE machine,
# loopback only, for development and the cluster tests (issue 16), as root on
# Debian 12 (bookworm):
#
#   3 RabbitMQ 3.10 nodes (rabbit1..3@localhost) in one cluster, MQTT plugin on,
#     a durable quorum queue bound to amq.topic for the station readings
#   3 etcd 3.4 members
#   3 PostgreSQL 15 + TimescaleDB nodes under Patroni 3.0 (etcd3 DCS),
#     synchronous replication in strict mode
#
#   deploy/cluster/cluster.sh up       install what is missing, start what is not
#                                      running, one node at a time (idempotent)
#   deploy/cluster/cluster.sh down     stop everything this script started
#   deploy/cluster/cluster.sh status   print every node's state (exit 0 only if all run)
#   deploy/cluster/cluster.sh env      print the `export` lines (multi-host libpq URL,
#                                      AMQP and MQTT URLs); eval "$(cluster.sh env)"
#   deploy/cluster/cluster.sh queue-leader Q   print the leader node of quorum queue Q
#   deploy/cluster/cluster.sh kill rabbitN     SIGKILL RabbitMQ node N (tests; `up` restarts)
#   deploy/cluster/cluster.sh kill pg-primary  SIGKILL the Patroni primary (patroni and
#                                     postmaster; tests; `up` brings it back as a replica)
#   deploy/cluster/cluster.sh --help
#
# Environment:
#   SOILMON_CLUSTER_DIR        state dir (default /var/tmp/soilmon-cluster); every
#                              parent must be traversable by postgres, etcd, rabbitmq
#   SOILMON_CLUSTER_PORT_BASE  port base (default 21000; every port is base + offset,
#                              all below 32768, all on 127.0.0.1):
#                                epmd (private)        base+369          21369
#                                RabbitMQ dist         base+572..574     21572-21574
#                                rabbitmqctl dist      base+590..599     21590-21599
#                                AMQP 0-9-1            base+672..674     21672-21674
#                                MQTT 3.1.1            base+883..885     21883-21885
#                                RabbitMQ HTTP API     base+1672..1674   22672-22674
#                                AMQPS (TLS)           base+2672..2674   23672-23674
#                                MQTTS (TLS)           base+2883..2885   23883-23885
#                                HTTP API over TLS     base+3672..3674   24672-24674
#                                etcd client / peer    base+1379..1384   22379/80, 22381/82, 22383/84
#                                PostgreSQL            base+5432..5434   26432-26434
#                                Patroni REST API      base+7008..7010   28008-28010
#   SOILMON_CLUSTER_NICE       niceness of every node (default 0)
#   SOILMON_CLUSTER_STOP_SYSTEM_SERVICES=1
#                              also stop and disable Debian's own rabbitmq-server,
#                              etcd and patroni services when they run already
#                              (they are always stopped and disabled right after
#                              this script installs their package)
#
# TimescaleDB: built and installed into PostgreSQL 15 by deploy/local/services.sh
# (`services.sh up`; it has no install-only subcommand). `up` checks that it is
# installed and stops with that instruction if not.
#
# Layout of $SOILMON_CLUSTER_DIR:
#   secrets/            generated passwords (0600): rabbitmq, rabbitmq-admin,
#                       postgres, replicator
#   tls/                a throwaway CA (ca.crt; ca.key 0600), the nodes' certificate
#                       for 127.0.0.1/localhost (server.crt, server.key readable by
#                       rabbitmq) and a client certificate (client.crt, client.key),
#                       made with the openssl CLI like the Mosquitto TLS tests' CA
#                       (tests/common/secure.rs), valid 30 days, made anew by `up`
#                       when less than 2 days are left
#   rabbitmq/home/      HOME of the nodes and of rabbitmqctl: the shared .erlang.cookie
#   rabbitmq/rabbitN/   rabbitmq.conf, enabled_plugins, mnesia/, log/, pid
#   etcd/eN/            data/, log, pid
#   pg/pgN/             patroni.yml, data/ (PGDATA), sock/, patroni.log, pid
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly REPO_DIR="${SCRIPT_DIR%/deploy/cluster}"

DIR="${SOILMON_CLUSTER_DIR:-/var/tmp/soilmon-cluster}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR="${DIR%/}"
readonly DIR
readonly BASE="${SOILMON_CLUSTER_PORT_BASE:-21000}"
[[ $BASE =~ ^[0-9]+$ ]] && ((BASE >= 1024 && BASE + 7010 < 32768)) \
	|| { echo "[cluster] ERROR: SOILMON_CLUSTER_PORT_BASE=$BASE must keep every port in 1024..32767 (base <= 25757)" >&2; exit 2; }

readonly N=3
readonly EPMD_PORT=$((BASE + 369))
readonly CTL_DIST_MIN=$((BASE + 590)) CTL_DIST_MAX=$((BASE + 599))
rmq_dist_port() { echo $((BASE + 571 + $1)); }
rmq_amqp_port() { echo $((BASE + 671 + $1)); }
rmq_mqtt_port() { echo $((BASE + 882 + $1)); }
rmq_api_port() { echo $((BASE + 1671 + $1)); }
rmq_amqps_port() { echo $((BASE + 2671 + $1)); }
rmq_mqtts_port() { echo $((BASE + 2882 + $1)); }
rmq_api_tls_port() { echo $((BASE + 3671 + $1)); }
etcd_client_port() { echo $((BASE + 1377 + 2 * $1)); }
etcd_peer_port() { echo $((BASE + 1378 + 2 * $1)); }
pg_port() { echo $((BASE + 5431 + $1)); }
rest_port() { echo $((BASE + 7007 + $1)); }

readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly PY=/usr/bin/python3          # Debian's python: python3-pika lives there, not in a pyenv
readonly RMQ_SBIN=/usr/lib/rabbitmq/bin
readonly RMQ_USER_NAME=soilmon
# Administrator of the HTTP API: `soilmon broker sync` manages the station and bureau users
# with it (docs/security.md). No vhost permissions: it cannot publish or consume.
readonly RMQ_ADMIN_NAME=soilmon-admin
readonly VHOST=/
readonly DBNAME=soilmon
readonly SCOPE=soilmon
# Broker topology (the Rust side's `soilmon broker setup` will own this later).
readonly READINGS_QUEUE=soilmon.readings
readonly READINGS_KEY='soil.v1.stations.*.readings'   # MQTT soil/v1/stations/+/readings
readonly DLX=soilmon.dlx
readonly DEAD_QUEUE=soilmon.readings.dead
readonly DELIVERY_LIMIT=5

readonly PACKAGES=(
	rabbitmq-server
	etcd-server etcd-client
	patroni python3-etcd python3-psycopg2   # patroni's etcd3 DCS imports python-etcd's exceptions
	python3-pika                            # queue declaration here, consumers in smoke.sh
	postgresql-15 postgresql-client-15
	mosquitto-clients                       # mosquitto_pub for smoke.sh
	util-linux procps iproute2 curl
	openssl                                 # the TLS listeners' throwaway CA
)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, and nodes run as postgres/etcd/rabbitmq)"
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

pkg_installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

# pid from a pid file if that process is alive and its command line contains $2.
live_pid() {
	local f=$1 want=$2 pid
	[[ -f $f ]] || return 1
	pid=$(head -n1 "$f" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$want" || return 1
	echo "$pid"
}

wait_gone() { # pid seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[[ -d /proc/$1 ]] || return 0
		sleep 0.1
	done
	return 1
}

# Start a daemon detached, as user $1, at niceness $SOILMON_CLUSTER_NICE
# (default 0: the nodes must not starve behind builds; heartbeats and leases
# time out under starvation), with fds 9 (the lock) closed; stdout/stderr to
# $2; its pid to $3. setsid/nice/setpriv all exec (no fork), so $! is the
# daemon itself.
spawn() {
	local user=$1 logf=$2 pidf=$3
	shift 3
	setsid nice -n "${SOILMON_CLUSTER_NICE:-0}" setpriv --reuid="$user" --regid="$user" --init-groups -- "$@" \
		>>"$logf" 2>&1 </dev/null 9>&- &
	echo $! >"$pidf"
}

secret() {
	local f="$DIR/secrets/$1"
	if [[ ! -s $f ]]; then
		install -d -m 0700 "$DIR/secrets"
		(umask 077 && od -An -tx1 -N12 /dev/urandom | tr -d ' \n' >"$f")   # no SIGPIPE under pipefail
	fi
	cat "$f"
}

with_lock() {
	install -d -m 0755 "$DIR"
	exec 9>"$DIR/.lock"
	flock -w 900 9 || die "another cluster.sh holds $DIR/.lock"
}

# ---------------------------------------------------------------------------
# 1. Debian packages (and the services they start on install)
# ---------------------------------------------------------------------------

# Debian's rabbitmq-server package starts rabbit@<host> on install with
# listeners on every interface (AMQP 5672, dist 25672, epmd 4369). Before it
# is installed, a loopback-only /etc/rabbitmq config is put in place (kept by
# --force-confold), and service starts are refused by a temporary policy-rc.d.
preseed_rabbitmq_loopback() {
	install -d -m 0755 /etc/rabbitmq
	if [[ ! -e /etc/rabbitmq/rabbitmq-env.conf ]]; then
		cat >/etc/rabbitmq/rabbitmq-env.conf <<'EOF'
# Written by soilmon deploy/cluster/cluster.sh before installing rabbitmq-server:
# the system node (unused by soilmon, disabled) must never listen beyond loopback.
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
	fi
	if [[ ! -e /etc/rabbitmq/rabbitmq.conf ]]; then
		echo 'listeners.tcp.local = 127.0.0.1:5672' >/etc/rabbitmq/rabbitmq.conf
	fi
}

# Stop and disable a Debian system service (systemd or sysv-rc).
stop_disable_service() {
	local s=$1
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now "$s" >/dev/null 2>&1 || true
	else
		if [[ -x /etc/init.d/$s ]]; then
			/etc/init.d/"$s" stop >/dev/null 2>&1 || true
		fi
		update-rc.d "$s" disable >/dev/null 2>&1 || true
	fi
}

system_service_running() {
	case "$1" in
	rabbitmq-server) pgrep -u rabbitmq -f 'beam.smp.*-s rabbit boot' >/dev/null && ! pgrep -u rabbitmq -f "beam.smp.*$DIR" >/dev/null ;;
	etcd) pgrep -u etcd -x etcd >/dev/null && ! pgrep -u etcd -f "etcd.*--data-dir $DIR" >/dev/null ;;
	patroni) pgrep -f '/usr/bin/patroni /etc/patroni' >/dev/null ;;
	esac
}

ensure_packages() {
	local missing=() p policy_made=0 rc=0
	for p in "${PACKAGES[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} > 0)); then
		log "installing missing Debian packages: ${missing[*]}"
		pkg_installed rabbitmq-server || preseed_rabbitmq_loopback
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			printf '#!/bin/sh\n# temporary, soilmon cluster.sh: no service starts during install\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 0755 /usr/sbin/policy-rc.d
			policy_made=1
		fi
		mkdir -p "$DIR"
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			-o Dpkg::Options::=--force-confold "${missing[@]}"; } >"$DIR/apt-install.log" 2>&1 || rc=$?
		((policy_made)) && rm -f /usr/sbin/policy-rc.d
		((rc == 0)) || { tail -n 30 "$DIR/apt-install.log" >&2; die "apt-get install failed; log: $DIR/apt-install.log"; }
		# What we installed must not run as a system service: the project runs its own nodes.
		for p in "${missing[@]}"; do
			case "$p" in
			rabbitmq-server) stop_disable_service rabbitmq-server ;;
			etcd-server) stop_disable_service etcd ;;
			patroni) stop_disable_service patroni ;;
			esac
		done
	fi
	local s
	for s in rabbitmq-server etcd patroni; do
		if system_service_running "$s"; then
			if [[ ${SOILMON_CLUSTER_STOP_SYSTEM_SERVICES:-0} == 1 ]]; then
				log "stopping and disabling the system service $s"
				stop_disable_service "$s"
			else
				log "note: the system service $s runs (not started by this script; left alone, our nodes use other ports and a private epmd; SOILMON_CLUSTER_STOP_SYSTEM_SERVICES=1 stops it)"
			fi
		fi
	done
}

# Same test as deploy/local/services.sh: loader, versioned library, control and SQL file.
ensure_timescaledb() {
	local libdir sharedir control ver
	libdir=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
	sharedir=$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo /usr/share/postgresql/15)
	control="$sharedir/extension/timescaledb.control"
	if [[ -f $control && -f $libdir/timescaledb.so ]]; then
		ver=$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$control")
		[[ -n $ver && -f $libdir/timescaledb-$ver.so && -f $sharedir/extension/timescaledb--$ver.sql ]] && return 0
	fi
	die "TimescaleDB is not installed into PostgreSQL 15. Run 'deploy/local/services.sh up' once (it builds and installs it; 'services.sh down' afterwards if you do not need the local services), then retry."
}

# ---------------------------------------------------------------------------
# 2. RabbitMQ
# ---------------------------------------------------------------------------
readonly RMQ_DIR="$DIR/rabbitmq"
readonly TLS_DIR="$DIR/tls"

# The TLS listeners' certificates: a throwaway CA, made the way the Mosquitto TLS tests
# make theirs (tests/common/secure.rs: EC P-256, openssl CLI), a server certificate naming
# 127.0.0.1 and localhost for every node, and a client certificate. Kept across `up`s;
# made anew (all of them) when the CA or a certificate expires within 2 days. A running
# node reads new files for new connections (Erlang's PEM cache is cleared every 2 min).
ensure_tls() {
	local f ok=1
	for f in ca.crt server.crt client.crt; do
		openssl x509 -checkend $((2 * 86400)) -noout -in "$TLS_DIR/$f" >/dev/null 2>&1 || ok=0
	done
	if ((ok)) && [[ -s $TLS_DIR/server.key && -s $TLS_DIR/client.key ]]; then
		return 0
	fi
	log "making the TLS listeners' throwaway CA and certificates in $TLS_DIR"
	install -d -m 0750 -o root -g rabbitmq "$TLS_DIR"
	local t ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
	t=$(mktemp -d "$TLS_DIR/.new.XXXXXX")
	(
		cd "$t"
		umask 077
		openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 30 \
			-subj "/CN=soilmon cluster test CA" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
		openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost
		printf '%s\n' subjectAltName=IP:127.0.0.1,DNS:localhost basicConstraints=CA:FALSE \
			keyUsage=digitalSignature extendedKeyUsage=serverAuth >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out server.crt -days 30 -extfile server.ext
		openssl req "${ec[@]}" -keyout client.key -out client.csr -subj "/CN=soilmon collector"
		printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature \
			extendedKeyUsage=clientAuth >client.ext
		openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out client.crt -days 30 -extfile client.ext
	) >"$t/openssl.log" 2>&1 || { cat "$t/openssl.log" >&2; rm -rf "$t"; die "openssl failed"; }
	chmod 0644 "$t"/ca.crt "$t"/server.crt "$t"/client.crt
	chown root:rabbitmq "$t/server.key"
	chmod 0640 "$t/server.key"
	for f in ca.crt ca.key server.crt server.key client.crt client.key; do
		mv -f "$t/$f" "$TLS_DIR/$f"
	done
	rm -rf "$t"
}
readonly RMQ_HOME="$RMQ_DIR/home"
readonly ERL_LOOPBACK='-kernel inet_dist_use_interface {127,0,0,1}'

rmq_node() { echo "rabbit$1@localhost"; }

# The environment every rabbitmq-server / rabbitmqctl call of node $1 gets.
# RABBITMQ_CONF_ENV_FILE points at our own (empty) file so /etc/rabbitmq's
# rabbitmq-env.conf (system node: NODENAME, ports) is never read.
rmq_env() {
	local i=$1 d="$RMQ_DIR/rabbit$1"
	printf '%s\n' \
		"HOME=$RMQ_HOME" \
		"RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf" \
		"RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf" \
		"RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config" \
		"RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins" \
		"RABBITMQ_MNESIA_BASE=$d/mnesia" \
		"RABBITMQ_LOG_BASE=$d/log" \
		"RABBITMQ_PID_FILE=$d/pid" \
		"RABBITMQ_NODENAME=$(rmq_node "$i")" \
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
		"RABBITMQ_NODE_PORT=$(rmq_amqp_port "$i")" \
		"RABBITMQ_DIST_PORT=$(rmq_dist_port "$i")" \
		"RABBITMQ_CTL_DIST_PORT_MIN=$CTL_DIST_MIN" \
		"RABBITMQ_CTL_DIST_PORT_MAX=$CTL_DIST_MAX" \
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=$ERL_LOOPBACK" \
		"RABBITMQ_CTL_ERL_ARGS=$ERL_LOOPBACK" \
		"ERL_EPMD_PORT=$EPMD_PORT" \
		"ERL_EPMD_ADDRESS=127.0.0.1"
}

# rabbitmqctl (or another CLI, $RMQ_CLI) against node $1, as rabbitmq.
rctl() {
	local i=$1 cli=${RMQ_CLI:-rabbitmqctl} envs=()
	shift
	mapfile -t envs < <(rmq_env "$i")
	setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 "${envs[@]}" \
		"$RMQ_SBIN/$cli" -n "$(rmq_node "$i")" "$@" 9>&-
}

# The node name is not on beam's command line (rabbit reads RABBITMQ_NODENAME
# at boot): check the environment of the pid file's process.
rmq_pid() {
	local pid
	pid=$(live_pid "$RMQ_DIR/rabbit$1/pid" beam.smp) || return 1
	tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(rmq_node "$1")" || return 1
	echo "$pid"
}
epmd_pid() { pgrep -u rabbitmq -f "epmd -port $EPMD_PORT" | head -n1; }

rmq_prepare() {
	local i=$1 d="$RMQ_DIR/rabbit$1"
	install -d -m 0750 -o rabbitmq -g rabbitmq "$RMQ_DIR" "$RMQ_HOME" "$d" "$d/mnesia" "$d/log"
	if [[ ! -s $RMQ_HOME/.erlang.cookie ]]; then
		(umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$RMQ_HOME/.erlang.cookie")
	fi
	chown rabbitmq:rabbitmq "$RMQ_HOME/.erlang.cookie"
	chmod 0400 "$RMQ_HOME/.erlang.cookie"
	: >"$d/rabbitmq-env.conf"
	# The consistent-hash exchange shards the readings by station (amqp.shards, docs/cluster.md);
	# the management plugin is the HTTP API `soilmon broker sync` manages identities through.
	echo '[rabbitmq_mqtt,rabbitmq_consistent_hash_exchange,rabbitmq_management].' >"$d/enabled_plugins"
	cat >"$d/rabbitmq.conf" <<EOF
# Written by deploy/cluster/cluster.sh on every \`up\`; edit the script, not this file.
# AMQP listener: RABBITMQ_NODE_IP_ADDRESS/RABBITMQ_NODE_PORT (127.0.0.1:$(rmq_amqp_port "$i")).
mqtt.listeners.tcp.1 = 127.0.0.1:$(rmq_mqtt_port "$i")
# TLS listeners (docs/cluster.md, "TLS"): AMQPS for the collectors, MQTTS for stations and
# bureaus, the HTTP API over https; the plain ones above stay for the tests that use them.
# A client certificate is verified when one is presented (verify_peer), not required.
listeners.ssl.1 = 127.0.0.1:$(rmq_amqps_port "$i")
mqtt.listeners.ssl.1 = 127.0.0.1:$(rmq_mqtts_port "$i")
ssl_options.cacertfile = $TLS_DIR/ca.crt
ssl_options.certfile = $TLS_DIR/server.crt
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
management.ssl.ip = 127.0.0.1
management.ssl.port = $(rmq_api_tls_port "$i")
management.ssl.cacertfile = $TLS_DIR/ca.crt
management.ssl.certfile = $TLS_DIR/server.crt
management.ssl.keyfile = $TLS_DIR/server.key
mqtt.allow_anonymous = false
mqtt.vhost = $VHOST
mqtt.exchange = amq.topic
management.tcp.ip = 127.0.0.1
management.tcp.port = $(rmq_api_port "$i")
cluster_partition_handling = pause_minority
log.console = false
log.file.level = info
EOF
	chown -R rabbitmq:rabbitmq "$d"
}

ensure_epmd() {
	[[ -n $(epmd_pid) ]] && return 0
	port_open "$EPMD_PORT" && die "127.0.0.1:$EPMD_PORT (epmd) is in use by another process; set SOILMON_CLUSTER_PORT_BASE"
	log "starting a private epmd on 127.0.0.1:$EPMD_PORT"
	install -d -m 0750 -o rabbitmq -g rabbitmq "$RMQ_DIR"
	setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- env ERL_EPMD_ADDRESS=127.0.0.1 \
		epmd -port "$EPMD_PORT" -daemon 9>&-
	local k
	for ((k = 0; k < 50; k++)); do port_open "$EPMD_PORT" && return 0; sleep 0.1; done
	die "epmd did not start on 127.0.0.1:$EPMD_PORT"
}

rmq_start() {
	local i=$1 d="$RMQ_DIR/rabbit$1" envs=() p
	for p in "$(rmq_amqp_port "$i")" "$(rmq_mqtt_port "$i")" "$(rmq_dist_port "$i")" "$(rmq_api_port "$i")" \
		"$(rmq_amqps_port "$i")" "$(rmq_mqtts_port "$i")" "$(rmq_api_tls_port "$i")"; do
		port_open "$p" && die "127.0.0.1:$p is in use by another process; set SOILMON_CLUSTER_PORT_BASE"
	done
	mapfile -t envs < <(rmq_env "$i")
	log "starting RabbitMQ $(rmq_node "$i") (AMQP $(rmq_amqp_port "$i"), MQTT $(rmq_mqtt_port "$i"), AMQPS $(rmq_amqps_port "$i"), MQTTS $(rmq_mqtts_port "$i"), dist $(rmq_dist_port "$i"))"
	rm -f "$d/pid"
	spawn rabbitmq "$d/log/startup.log" "$d/launcher.pid" \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 "${envs[@]}" "$RMQ_SBIN/rabbitmq-server"
}

# Wait (bounded) until node $1's app runs.
rmq_wait() {
	local i=$1 t=${2:-180} k
	for ((k = 0; k < t * 2; k++)); do
		if [[ -f $RMQ_DIR/rabbit$i/pid ]] && rctl "$i" -q --timeout 10 await_startup >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$RMQ_DIR/rabbit$i/log/startup.log" >&2 || true
	die "$(rmq_node "$i") did not finish booting in ${t}s; logs in $RMQ_DIR/rabbit$i/log"
}

rmq_in_cluster() { # i: 0 if rabbit1 is among node i's cluster members
	rctl "$1" -q cluster_status --formatter json 2>/dev/null \
		| "$PY" -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if sys.argv[1] in d.get("disk_nodes",[]) else 1)' "$(rmq_node 1)"
}

# Users, queue, exchange, bindings (idempotent). Declaring an existing queue
# with different arguments fails with PRECONDITION_FAILED: that is reported,
# never papered over.
rmq_topology() {
	local pass
	pass=$(secret rabbitmq)
	if ! rctl 1 -q list_users | awk '{print $1}' | grep -qx "$RMQ_USER_NAME"; then
		log "creating RabbitMQ user $RMQ_USER_NAME"
		rctl 1 -q add_user "$RMQ_USER_NAME" "$pass" >/dev/null
	fi
	rctl 1 -q set_permissions -p "$VHOST" "$RMQ_USER_NAME" '.*' '.*' '.*' >/dev/null
	if ! rctl 1 -q list_users | awk '{print $1}' | grep -qx "$RMQ_ADMIN_NAME"; then
		log "creating RabbitMQ user $RMQ_ADMIN_NAME (HTTP API administrator)"
		rctl 1 -q add_user "$RMQ_ADMIN_NAME" "$(secret rabbitmq-admin)" >/dev/null
	fi
	rctl 1 -q set_user_tags "$RMQ_ADMIN_NAME" administrator >/dev/null
	rctl 1 -q delete_user guest >/dev/null 2>&1 || true
	rctl 1 -q set_cluster_name soilmon >/dev/null
	SOILMON_AMQP_URL="amqp://$RMQ_USER_NAME:$pass@127.0.0.1:$(rmq_amqp_port 1)/%2F" "$PY" - \
		"$READINGS_QUEUE" "$READINGS_KEY" "$DLX" "$DEAD_QUEUE" "$DELIVERY_LIMIT" <<'PYEOF'
import os, sys, pika
queue, key, dlx, dead, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
conn = pika.BlockingConnection(pika.URLParameters(os.environ["SOILMON_AMQP_URL"] + "?connection_attempts=5&retry_delay=1"))
ch = conn.channel()
ch.exchange_declare(dlx, exchange_type="topic", durable=True)
ch.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
ch.queue_bind(dead, dlx, routing_key="#")
ch.queue_declare(queue, durable=True, arguments={
    "x-queue-type": "quorum",
    "x-delivery-limit": limit,              # redelivered more often than this: dead-lettered
    "x-dead-letter-exchange": dlx,
    "x-dead-letter-strategy": "at-least-once",  # quorum queues only; needs reject-publish
    "x-overflow": "reject-publish",
})
ch.queue_bind(queue, "amq.topic", routing_key=key)
conn.close()
PYEOF
}

ensure_rabbitmq() {
	local i
	ensure_epmd
	ensure_tls
	for ((i = 1; i <= N; i++)); do
		rmq_prepare "$i"
		if rmq_pid "$i" >/dev/null; then
			port_open "$(rmq_amqps_port "$i")" \
				|| log "note: $(rmq_node "$i") runs without its TLS listeners (started by an older cluster.sh): \`cluster.sh down; cluster.sh up\` restarts it with them"
			continue
		fi
		rmq_start "$i"
		# A node that was clustered before may wait for its peers' tables
		# (Mnesia): only a fresh node is waited for before the next starts.
		if [[ -f $RMQ_DIR/rabbit$i/joined ]]; then
			sleep 3
		else
			rmq_wait "$i"
		fi
	done
	for ((i = 1; i <= N; i++)); do rmq_wait "$i"; done
	for ((i = 2; i <= N; i++)); do
		if ! rmq_in_cluster "$i"; then
			log "joining $(rmq_node "$i") to $(rmq_node 1)"
			rctl "$i" -q stop_app >/dev/null
			rctl "$i" -q join_cluster "$(rmq_node 1)" >/dev/null
			rctl "$i" -q start_app >/dev/null
			rmq_wait "$i"
		fi
		touch "$RMQ_DIR/rabbit$i/joined"
	done
	touch "$RMQ_DIR/rabbit1/joined"
	rmq_topology
}

rmq_stop() {
	local i=$1 pid
	if pid=$(rmq_pid "$i"); then
		log "stopping RabbitMQ $(rmq_node "$i") (pid $pid)"
		rctl "$i" -q stop "$RMQ_DIR/rabbit$i/pid" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		wait_gone "$pid" 60 || { log "$(rmq_node "$i") did not stop: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
	fi
	rm -f "$RMQ_DIR/rabbit$i/pid"
}

# ---------------------------------------------------------------------------
# 3. etcd
# ---------------------------------------------------------------------------
readonly ETCD_DIR="$DIR/etcd"

etcd_initial_cluster() {
	local i s=""
	for ((i = 1; i <= N; i++)); do s+="${s:+,}e$i=http://127.0.0.1:$(etcd_peer_port "$i")"; done
	echo "$s"
}
etcd_endpoints() {
	local i s=""
	for ((i = 1; i <= N; i++)); do s+="${s:+,}http://127.0.0.1:$(etcd_client_port "$i")"; done
	echo "$s"
}
etcd_pid() { live_pid "$ETCD_DIR/e$1/pid" "--data-dir $ETCD_DIR/e$1/data"; }

etcd_start() {
	local i=$1 d="$ETCD_DIR/e$1" c p state=new
	c=$(etcd_client_port "$i")
	p=$(etcd_peer_port "$i")
	port_open "$c" && die "127.0.0.1:$c (etcd client) is in use; set SOILMON_CLUSTER_PORT_BASE"
	port_open "$p" && die "127.0.0.1:$p (etcd peer) is in use; set SOILMON_CLUSTER_PORT_BASE"
	install -d -m 0750 -o etcd -g etcd "$ETCD_DIR" "$d"
	[[ -d $d/data/member ]] && state=existing
	log "starting etcd e$i (client $c, peer $p)"
	spawn etcd "$d/log" "$d/pid" etcd --name "e$i" --data-dir "$d/data" \
		--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
		--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
		--initial-cluster "$(etcd_initial_cluster)" --initial-cluster-token soilmon-cluster \
		--initial-cluster-state "$state" --heartbeat-interval 500 --election-timeout 5000 \
		--logger zap --log-outputs stderr
}

ensure_etcd() {
	local i k
	for ((i = 1; i <= N; i++)); do
		etcd_pid "$i" >/dev/null || { etcd_start "$i"; sleep 1; }
	done
	for ((k = 0; k < 60; k++)); do
		ETCDCTL_API=3 etcdctl --endpoints "$(etcd_endpoints)" --command-timeout=2s endpoint health >/dev/null 2>&1 && return 0
		sleep 1
	done
	die "etcd is not healthy after 60 s; logs in $ETCD_DIR/e*/log"
}

etcd_stop() {
	local i=$1 pid
	if pid=$(etcd_pid "$i"); then
		log "stopping etcd e$i (pid $pid)"
		kill -TERM "$pid"
		wait_gone "$pid" 30 || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$ETCD_DIR/e$i/pid"
}

# ---------------------------------------------------------------------------
# 4. PostgreSQL 15 + TimescaleDB under Patroni
# ---------------------------------------------------------------------------
readonly PGC_DIR="$DIR/pg"

patroni_conf() {
	local i=$1 d="$PGC_DIR/pg$1" hosts="" k
	for ((k = 1; k <= N; k++)); do hosts+="${hosts:+,}127.0.0.1:$(etcd_client_port "$k")"; done
	cat <<EOF
# Written by deploy/cluster/cluster.sh on every \`up\`; edit the script, not this file.
scope: $SCOPE
namespace: /soilmon/
name: pg$i
restapi:
  listen: 127.0.0.1:$(rest_port "$i")
  connect_address: 127.0.0.1:$(rest_port "$i")
etcd3:
  hosts: $hosts
log:
  level: INFO
bootstrap:
  # Written into the DCS once, when the cluster is first bootstrapped; later
  # changes go through \`patronictl edit-config\`.
  dcs:
    # Generous timings, chosen to survive CPU starvation (a 2-core machine
    # building Rust beside the cluster): a primary that cannot renew its
    # leader key within retry_timeout demotes itself, so short timings turn
    # a busy machine into failovers. A dead primary is replaced within ttl
    # plus one loop (docs/cluster.md, "Patroni timings").
    ttl: 30                # leader key lease
    loop_wait: 5
    retry_timeout: 10      # ttl >= loop_wait + 2 * retry_timeout
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true   # no sync standby -> writes wait, never ack on one node
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        # A SIGKILLed primary comes back through crash recovery (its end-of-recovery
        # checkpoint removes old WAL) and then pg_rewind, which rewinds to the last
        # checkpoint both servers share and replays from that checkpoint's redo point.
        # When that point was older than the crash checkpoint's, the segment was gone on
        # both nodes and the node waited forever ("requested WAL segment ... has already
        # been removed"; seen once in the failover test, 2026-12-07). Keep the last 2 GB.
        wal_keep_size: 2GB
        max_connections: 100
        synchronous_commit: "on"
        shared_preload_libraries: timescaledb
        timescaledb.telemetry_level: "off"
        timescaledb.max_background_workers: 4
        max_worker_processes: 16
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
postgresql:
  listen: 127.0.0.1:$(pg_port "$i")
  connect_address: 127.0.0.1:$(pg_port "$i")
  use_unix_socket: true
  data_dir: $d/data
  bin_dir: $PG_BIN
  pgpass: $d/pgpass
  authentication:
    superuser:
      username: postgres
      password: $(secret postgres)
    replication:
      username: replicator
      password: $(secret replicator)
  parameters:
    unix_socket_directories: '$d/sock'
    shared_preload_libraries: timescaledb
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
}

patroni_pid() { live_pid "$PGC_DIR/pg$1/pid" "$PGC_DIR/pg$1/patroni.yml"; }
postmaster_pid() { live_pid "$PGC_DIR/pg$1/data/postmaster.pid" "$PGC_DIR/pg$1/data"; }
rest() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(rest_port "$1")/$2" 2>/dev/null || true; }
role_of() { # primary | replica | down
	if [[ $(rest "$1" primary) == 200 ]]; then echo primary
	elif [[ $(rest "$1" replica) == 200 ]]; then echo replica
	else echo down; fi
}

pg_prepare() {
	local i=$1 d="$PGC_DIR/pg$1"
	install -d -m 0755 "$PGC_DIR"
	install -d -m 0700 -o postgres -g postgres "$d" "$d/sock"
	(umask 077 && patroni_conf "$i" >"$d/patroni.yml.new")
	mv "$d/patroni.yml.new" "$d/patroni.yml"
	chown postgres:postgres "$d/patroni.yml"
}

patroni_start() {
	local i=$1 d="$PGC_DIR/pg$1" p
	for p in "$(pg_port "$i")" "$(rest_port "$i")"; do
		port_open "$p" && die "127.0.0.1:$p is in use by another process; set SOILMON_CLUSTER_PORT_BASE"
	done
	log "starting Patroni pg$i (PostgreSQL $(pg_port "$i"), REST $(rest_port "$i"))"
	spawn postgres "$d/patroni.log" "$d/pid" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 \
		HOME=/var/lib/postgresql /usr/bin/patroni "$d/patroni.yml"
}

wait_role() { # i seconds role...
	local i=$1 t=$2 k r
	shift 2
	for ((k = 0; k < t; k++)); do
		r=$(role_of "$i")
		for want in "$@"; do [[ $r == "$want" ]] && return 0; done
		sleep 1
	done
	tail -n 20 "$PGC_DIR/pg$i/patroni.log" >&2 || true
	die "pg$i is not ${*} after ${t}s (now: $r); log $PGC_DIR/pg$i/patroni.log"
}

leader_index() {
	local i
	for ((i = 1; i <= N; i++)); do [[ $(role_of "$i") == primary ]] && { echo "$i"; return 0; }; done
	return 1
}

psql_leader() {
	local l
	l=$(leader_index) || die "no Patroni primary"
	"$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$PGC_DIR/pg$l/sock" -p "$(pg_port "$l")" -U postgres "$@"
}

ensure_patroni() {
	local i any_leader
	for ((i = 1; i <= N; i++)); do
		pg_prepare "$i"
		if patroni_pid "$i" >/dev/null; then
			continue
		fi
		if postmaster_pid "$i" >/dev/null; then
			log "pg$i: a postgres runs without its patroni (killed?): patroni takes it over"
		fi
		patroni_start "$i"
		# The first node bootstraps (initdb) or a running leader exists; later
		# nodes clone with pg_basebackup. One at a time.
		wait_role "$i" 180 primary replica
	done
	any_leader=0
	for ((i = 0; i < 60; i++)); do leader_index >/dev/null && { any_leader=1; break; }; sleep 1; done
	((any_leader)) || die "no Patroni primary after 60 s"
	# Strict synchronous mode: writes wait until a sync standby confirms.
	local k sync=""
	for ((k = 0; k < 60; k++)); do
		sync=$(psql_leader -d postgres -tAc "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'" 2>/dev/null || true)
		[[ $sync =~ ^[1-9] ]] && break
		sleep 1
	done
	[[ $sync =~ ^[1-9] ]] || die "no synchronous standby after 60 s (strict mode would block every write)"
	if [[ -z $(psql_leader -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'") ]]; then
		log "creating database $DBNAME"
		psql_leader -d postgres -qc "CREATE DATABASE $DBNAME" >/dev/null
	fi
	psql_leader -d "$DBNAME" -qc 'CREATE EXTENSION IF NOT EXISTS timescaledb' >/dev/null 2>&1 \
		|| psql_leader -d "$DBNAME" -qc 'CREATE EXTENSION IF NOT EXISTS timescaledb' >/dev/null
}

patroni_stop() {
	local i=$1 pid pm
	pm=$(postmaster_pid "$i" || true)
	if pid=$(patroni_pid "$i"); then
		log "stopping Patroni pg$i (pid $pid; it stops its postgres)"
		kill -TERM "$pid"
		wait_gone "$pid" 90 || { log "pg$i patroni did not stop: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
	fi
	rm -f "$PGC_DIR/pg$i/pid"
	# A postgres whose patroni was killed is still ours: stop it too.
	if pm=$(postmaster_pid "$i"); then
		log "stopping orphaned postgres pg$i (pid $pm)"
		setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/pg_ctl" -D "$PGC_DIR/pg$i/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
			|| kill -QUIT "$pm" 2>/dev/null || true
		wait_gone "$pm" 30 || true
	fi
}

# ---------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------
db_url() {
	local i hosts=""
	for ((i = 1; i <= N; i++)); do hosts+="${hosts:+,}127.0.0.1:$(pg_port "$i")"; done
	echo "postgresql://postgres:$(secret postgres)@$hosts/$DBNAME?target_session_attrs=read-write&connect_timeout=3"
}

cmd_env() {
	local i amqp="" mqtt="" api="" amqps="" mqtts="" apis="" pass
	pass=$(secret rabbitmq)
	for ((i = 1; i <= N; i++)); do
		amqp+="${amqp:+,}amqp://$RMQ_USER_NAME:$pass@127.0.0.1:$(rmq_amqp_port "$i")/%2F"
		mqtt+="${mqtt:+,}mqtt://127.0.0.1:$(rmq_mqtt_port "$i")"
		api+="${api:+,}http://127.0.0.1:$(rmq_api_port "$i")"
		amqps+="${amqps:+,}amqps://$RMQ_USER_NAME:$pass@127.0.0.1:$(rmq_amqps_port "$i")/%2F"
		mqtts+="${mqtts:+,}mqtts://127.0.0.1:$(rmq_mqtts_port "$i")"
		apis+="${apis:+,}https://127.0.0.1:$(rmq_api_tls_port "$i")"
	done
	cat <<EOF
export SOILMON_CLUSTER_DATABASE_URL="$(db_url)"
export SOILMON__DATABASE__URL="\$SOILMON_CLUSTER_DATABASE_URL"
export SOILMON_CLUSTER_AMQP_URLS="$amqp"
export SOILMON_CLUSTER_MQTT_URLS="$mqtt"
export SOILMON_CLUSTER_MQTT_USER="$RMQ_USER_NAME"
export SOILMON_CLUSTER_MQTT_PASSWORD="$pass"
export SOILMON_CLUSTER_READINGS_QUEUE="$READINGS_QUEUE"
export SOILMON_CLUSTER_RABBITMQ_API="$api"
export SOILMON_CLUSTER_RABBITMQ_ADMIN_USER="$RMQ_ADMIN_NAME"
export SOILMON_CLUSTER_RABBITMQ_ADMIN_PASSWORD="$(secret rabbitmq-admin)"
export SOILMON_CLUSTER_AMQPS_URLS="$amqps"
export SOILMON_CLUSTER_MQTTS_URLS="$mqtts"
export SOILMON_CLUSTER_RABBITMQ_API_TLS="$apis"
export SOILMON_CLUSTER_TLS_CA="$TLS_DIR/ca.crt"
export SOILMON_CLUSTER_TLS_CLIENT_CERT="$TLS_DIR/client.crt"
export SOILMON_CLUSTER_TLS_CLIENT_KEY="$TLS_DIR/client.key"
export SOILMON_CLUSTER_ETCD="$(etcd_endpoints)"
export SOILMON_PG_BIN=$PG_BIN
EOF
}

cmd_up() {
	need_root
	local t0=$SECONDS
	with_lock
	ensure_packages
	ensure_timescaledb
	ensure_rabbitmq
	ensure_etcd
	ensure_patroni
	log "up in $((SECONDS - t0)) s"
	cmd_status || true
	echo "Environment: eval \"\$($0 env)\""
}

cmd_down() {
	need_root
	if [[ ! -d $DIR ]]; then
		log "nothing to stop ($DIR does not exist)"
		return 0
	fi
	with_lock
	local i l
	# Replicas first, the primary last: no failover churn on the way down.
	l=$(leader_index || true)
	for ((i = N; i >= 1; i--)); do [[ $i == "$l" ]] || patroni_stop "$i"; done
	[[ -n $l ]] && patroni_stop "$l"
	for ((i = N; i >= 1; i--)); do etcd_stop "$i"; done
	# rabbit1 last: it is started first by `up` and then needs to wait for no peer.
	for ((i = N; i >= 1; i--)); do rmq_stop "$i"; done
	local e
	if e=$(epmd_pid) && [[ -n $e ]]; then
		log "stopping the private epmd (pid $e)"
		setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || kill -TERM "$e" 2>/dev/null || true
		wait_gone "$e" 10 || kill -KILL "$e" 2>/dev/null || true
	fi
}

cmd_status() {
	local rc=0 i pid r
	for ((i = 1; i <= N; i++)); do
		if pid=$(rmq_pid "$i") && port_open "$(rmq_amqp_port "$i")" && port_open "$(rmq_mqtt_port "$i")"; then
			if port_open "$(rmq_amqps_port "$i")" && port_open "$(rmq_mqtts_port "$i")"; then
				echo "rabbitmq $(rmq_node "$i"): running (pid $pid) AMQP 127.0.0.1:$(rmq_amqp_port "$i") MQTT 127.0.0.1:$(rmq_mqtt_port "$i") AMQPS 127.0.0.1:$(rmq_amqps_port "$i") MQTTS 127.0.0.1:$(rmq_mqtts_port "$i")"
			else
				echo "rabbitmq $(rmq_node "$i"): running (pid $pid) WITHOUT its TLS listeners (AMQPS $(rmq_amqps_port "$i"), MQTTS $(rmq_mqtts_port "$i")): cluster.sh down; cluster.sh up"
				rc=3
			fi
		else
			echo "rabbitmq $(rmq_node "$i"): stopped"
			rc=3
		fi
	done
	for ((i = 1; i <= N; i++)); do
		if pid=$(rmq_pid "$i"); then
			rctl "$i" -q --timeout 10 list_queues name type leader members messages --formatter json 2>/dev/null \
				| "$PY" -c 'import json,sys
for q in json.load(sys.stdin):
    print("queue %(name)s (%(type)s): leader %(leader)s, members %(members)s, %(messages)s messages" % q)' || true
			break
		fi
	done
	for ((i = 1; i <= N; i++)); do
		if pid=$(etcd_pid "$i"); then
			echo "etcd e$i: running (pid $pid) client 127.0.0.1:$(etcd_client_port "$i") peer 127.0.0.1:$(etcd_peer_port "$i")"
		else
			echo "etcd e$i: stopped"
			rc=3
		fi
	done
	for ((i = 1; i <= N; i++)); do
		r=$(role_of "$i")
		if pid=$(patroni_pid "$i") && [[ $r != down ]]; then
			echo "patroni pg$i: $r (patroni pid $pid, postgres pid $(postmaster_pid "$i" || echo '?')) 127.0.0.1:$(pg_port "$i") REST 127.0.0.1:$(rest_port "$i")"
		else
			echo "patroni pg$i: stopped or not ready"
			rc=3
		fi
	done
	if [[ -f $PGC_DIR/pg1/patroni.yml ]] && patroni_pid 1 >/dev/null || patroni_pid 2 >/dev/null || patroni_pid 3 >/dev/null; then
		patronictl -c "$PGC_DIR/pg1/patroni.yml" list 2>/dev/null || true
	fi
	return "$rc"
}

# Prints the leader node (rabbitN@localhost) of quorum queue $1, asking each
# running node in turn.
cmd_queue_leader() {
	local q=${1:?queue name} i l
	for ((i = 1; i <= N; i++)); do
		rmq_pid "$i" >/dev/null || continue
		l=$(rctl "$i" -q --timeout 10 list_queues name leader --formatter json 2>/dev/null \
			| "$PY" -c 'import json,sys; print(next((q["leader"] for q in json.load(sys.stdin) if q["name"] == sys.argv[1]), ""))' "$q") || continue
		[[ -n $l ]] && { echo "$l"; return 0; }
	done
	die "no running node knows a leader of queue $q"
}

# SIGKILLs one node for the failure tests: rabbitN (its beam), or pg-primary
# (the Patroni primary's patroni and postmaster, as smoke.sh does); prints
# what it killed. `up` brings it back.
cmd_kill() {
	local what=${1:?rabbitN or pg-primary} pid l pat pm
	case "$what" in
	rabbit[1-9])
		pid=$(rmq_pid "${what#rabbit}") || die "$what is not running"
		kill -KILL "$pid"
		echo "$(rmq_node "${what#rabbit}")"
		;;
	pg-primary)
		l=$(leader_index) || die "no Patroni primary"
		pat=$(patroni_pid "$l") || die "no patroni pid for pg$l"
		pm=$(postmaster_pid "$l") || die "no postmaster pid for pg$l"
		kill -KILL "$pat" "$pm"
		echo "pg$l"
		;;
	*) die "kill: rabbitN or pg-primary, not '$what'" ;;
	esac
}

main() {
	local cmd="${1:-}"
	case "$cmd" in
	up | start) cmd_up ;;
	down | stop) cmd_down ;;
	status) cmd_status ;;
	env) cmd_env ;;
	queue-leader) cmd_queue_leader "${2:-}" ;;
	kill) cmd_kill "${2:-}" ;;
	-h | --help | help) usage ;;
	*)
		echo "usage: $0 up|down|status|env|queue-leader QUEUE|kill rabbitN|pg-primary|--help" >&2
		exit 2
		;;
	esac
}

# smoke.sh sources this file for its helpers (ports, rctl, leader_index, ...).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
