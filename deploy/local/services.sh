#!/usr/bin/env bash
# deploy/local/services.sh: project-owned PostgreSQL 15 + TimescaleDB and
# Mosquitto for local development, tests and CI on a Debian 12 (bookworm)
# machine, as root, with nothing done by hand.
#
#   deploy/local/services.sh [up]     install what is missing, start both (idempotent; alias: start)
#   deploy/local/services.sh down     stop both cleanly (alias: stop)
#   deploy/local/services.sh status   print both states (exit 0 only if both run)
#   deploy/local/services.sh env      print the `export` lines the project consumes
#   eval "$(deploy/local/services.sh env)"
#
# Environment:
#   SOILMON_LOCAL_DIR   state dir (default /var/tmp/soilmon-local); every parent
#                       must be traversable by the postgres and mosquitto users
#   SOILMON_PG_PORT     PostgreSQL TCP port on 127.0.0.1 (default 55432)
#   SOILMON_MQTT_PORT   Mosquitto port on 127.0.0.1 (default 18830)
#   SOILMON_DEBIAN_MIRROR  override the Debian mirror URI used to fetch the
#                       TimescaleDB source (default: the one apt is configured with)
#
# Layout of $SOILMON_LOCAL_DIR:
#   pg/data  pg/sock  pg/log     the cluster (owned by postgres)
#   mosquitto/                   rendered config, persistence db, pid, log (owned by mosquitto)
#   apt/                         private apt state used only to fetch the trixie source
#   build/                       TimescaleDB source + cmake build dir (reruns reinstall from it)
#
# What `up` does, in order:
#   1. dpkg -s every needed Debian package; apt-get update + install only if one is missing.
#   2. If TimescaleDB is not installed into PostgreSQL 15 (loader .so, versioned .so
#      and control file), build it from Debian 13 (trixie)'s source package
#      `timescaledb` (2.19.x, Apache-only: Debian strips the TSL code). The deb-src
#      line uses the mirror URI of the machine's own apt config and a PRIVATE apt
#      state/cache dir, so the system's package lists are untouched. apt verifies the
#      trixie InRelease with /usr/share/keyrings/debian-archive-keyring.gpg (trixie's
#      Release is signed by the bookworm AND trixie archive keys, so bookworm's keyring
#      verifies it) and every downloaded file against the signed Sources index.
#   3. initdb (as postgres) if needed, write soilmon.conf, start the cluster, create
#      database `soilmon`.
#   4. Render mosquitto.conf from deploy/local/mosquitto.conf and start mosquitto -d.
#
# ---------------------------------------------------------------------------
# A THROWAWAY CLUSTER FOR ONE TEST (what Rust tests do for the outage test),
# as root, after `services.sh up` has installed TimescaleDB:
#
#   B=/usr/lib/postgresql/15/bin
#   D=$(mktemp -d /tmp/pgt.XXXXXX)           # short path: socket path max 107 bytes
#   chown postgres:postgres "$D"             # initdb refuses to run as root
#   runuser -u postgres -- $B/initdb -D "$D/data" -A trust -U postgres -E UTF8 \
#       --locale=C.UTF-8 --no-sync >/dev/null
#   runuser -u postgres -- $B/pg_ctl -D "$D/data" -l "$D/log" -w -t 60 \
#       -o "-c listen_addresses='' -k $D -p 5433 -c shared_preload_libraries=timescaledb \
#           -c timescaledb.telemetry_level=off -c max_connections=50" start
#   psql "host=$D port=5433 user=postgres dbname=postgres" -c 'CREATE EXTENSION timescaledb'
#   runuser -u postgres -- $B/pg_ctl -D "$D/data" -m immediate -w stop   # the outage
#   runuser -u postgres -- $B/pg_ctl -D "$D/data" -l "$D/log" -w -t 60 -o "...same..." start
#   runuser -u postgres -- $B/pg_ctl -D "$D/data" -m immediate -w stop   # cleanup
#   rm -rf "$D"
#
# Notes for that recipe (all measured here):
# - With listen_addresses='' there is no TCP port, so the -p number only names the
#   socket file ($D/.s.PGSQL.5433) and cannot collide; DSN: host=$D port=5433.
# - initdb --no-sync ~0.9 s; start ~0.15 s; start after `-m immediate` (crash
#   recovery) ~0.8 s; committed rows survive it.
# - pg_ctl runs the -o string through /bin/sh: from Rust pass "-o" and the whole
#   option string as ONE argument; the '' around the empty listen_addresses matter.
# - Add `-c timescaledb.max_background_workers=0` if the test wants no scheduler.
# - $D is 0700 postgres: root (the tests) can still use the socket; other users
#   cannot. Every parent of $D must be traversable by postgres (/tmp is).
# - A per-test mosquitto as root: config with `user root`, `listener <free port>
#   127.0.0.1`, `allow_anonymous true`, `persistence_location $D` (or chown $D to
#   mosquitto, as this script does); ready when the port accepts.
# ---------------------------------------------------------------------------
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly MOSQ_TEMPLATE="$SCRIPT_DIR/mosquitto.conf"

DIR="${SOILMON_LOCAL_DIR:-/var/tmp/soilmon-local}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR="${DIR%/}"
readonly DIR
readonly PG_PORT="${SOILMON_PG_PORT:-55432}"
readonly MQTT_PORT="${SOILMON_MQTT_PORT:-18830}"

readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly PG_CONFIG="$PG_BIN/pg_config"
readonly PG_DIR="$DIR/pg"
readonly PG_DATA="$PG_DIR/data"
readonly PG_SOCK="$PG_DIR/sock"
readonly PG_LOG="$PG_DIR/log"
readonly MQ_DIR="$DIR/mosquitto"
readonly MQ_CONF="$MQ_DIR/mosquitto.conf"
readonly MQ_PID="$MQ_DIR/mosquitto.pid"
readonly MQ_LOG="$MQ_DIR/mosquitto.log"
readonly DBNAME=soilmon
readonly TS_SUITE=trixie          # Debian 13 carries timescaledb 2.19.x
readonly TS_SRCPKG=timescaledb

# Debian packages `up` needs (installed only if missing).
readonly PACKAGES=(
	postgresql-15 postgresql-client-15 postgresql-server-dev-15
	mosquitto mosquitto-clients
	cmake gcc make libc6-dev libssl-dev dpkg-dev xz-utils   # also build jemalloc (the allocator crate)
	debian-archive-keyring gpgv util-linux procps
	openssl                     # tests/security.rs makes a throwaway CA with the CLI
	chromium chromium-driver    # tests/console.rs drives the web console over WebDriver
	fonts-wqy-microhei          # CJK glyphs for the console's screenshots
	python3-aiosmtpd            # tests/email.rs: a real SMTP server on loopback (tests/common/smtp_sink.py)
)

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs initdb/pg_ctl via runuser)"
}

# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

# 0 if 127.0.0.1:$1 accepts a TCP connection.
port_open() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

as_postgres() { runuser -u postgres -- "$@"; }

psql_admin() {
	"$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"
}

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
ensure_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	log "installing missing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "$DIR"
	{ apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } >"$DIR/apt-install.log" 2>&1 \
		|| { tail -n 30 "$DIR/apt-install.log" >&2; die "apt-get install failed; log: $DIR/apt-install.log"; }
}

# ---------------------------------------------------------------------------
# 2. TimescaleDB from Debian trixie's source package
# ---------------------------------------------------------------------------
timescaledb_installed() {
	local libdir sharedir control ver
	libdir=$("$PG_CONFIG" --pkglibdir)
	sharedir=$("$PG_CONFIG" --sharedir)
	control="$sharedir/extension/timescaledb.control"
	[[ -f $control && -f $libdir/timescaledb.so ]] || return 1
	ver=$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$control")
	[[ -n $ver && -f $libdir/timescaledb-$ver.so && -f $sharedir/extension/timescaledb--$ver.sql ]]
}

# Print the URI of the Debian mirror apt is configured with for this release
# (deb822 *.sources first, then one-line sources.list format).
debian_mirror_uri() {
	if [[ -n ${SOILMON_DEBIAN_MIRROR:-} ]]; then
		echo "$SOILMON_DEBIAN_MIRROR"
		return
	fi
	local codename f uri=""
	# shellcheck source=/dev/null
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	shopt -s nullglob
	for f in /etc/apt/sources.list.d/*.sources; do
		uri=$(awk -v want="$codename" '
			BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; enabled = "yes"
				for (i = 1; i <= NF; i++) {
					line = $i
					if (line ~ /^[ \t]*#/) continue
					if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line);   types = line }
					if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line);    uris = line }
					if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line);  suites = line }
					if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
				}
				if (enabled == "no" || types !~ /(^|[ \t])deb(-src)?([ \t]|$)/) next
				n = split(suites, s, /[ \t]+/)
				for (j = 1; j <= n; j++) if (s[j] == want) { split(uris, u, /[ \t]+/); print u[1]; exit }
			}' "$f")
		[[ -n $uri ]] && break
	done
	if [[ -z $uri ]]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -f $f ]] || continue
			uri=$(awk -v want="$codename" '
				/^[ \t]*deb(-src)?[ \t]/ {
					line = $0
					sub(/^[ \t]*deb(-src)?[ \t]+/, "", line)
					if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
					split(line, w, /[ \t]+/)
					if (w[2] == want) { print w[1]; exit }
				}' "$f")
			[[ -n $uri ]] && break
		done
	fi
	shopt -u nullglob
	[[ -n $uri ]] || die "could not find the Debian mirror for '$codename' in /etc/apt/sources.list{,.d}; set SOILMON_DEBIAN_MIRROR"
	echo "${uri%/}"
}

# apt-get with a private state/cache/sources so the system's lists stay untouched.
private_apt() {
	local a="$DIR/apt"
	apt-get \
		-o Dir::State="$a/state" \
		-o Dir::State::status=/var/lib/dpkg/status \
		-o Dir::Cache="$a/cache" \
		-o Dir::Etc::SourceList="$a/sources.list" \
		-o Dir::Etc::SourceParts=/dev/null \
		-o Acquire::Languages=none \
		"$@"
}

fetch_timescaledb_source() {
	local a="$DIR/apt" mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg out
	mirror=$(debian_mirror_uri)
	[[ -f $keyring ]] || die "$keyring missing (package debian-archive-keyring)"
	mkdir -p "$a/state/lists/partial" "$a/cache/archives/partial"
	echo "deb-src [signed-by=$keyring] $mirror $TS_SUITE main" >"$a/sources.list"
	log "fetching the $TS_SRCPKG source package from $TS_SUITE (private apt state in $a)"
	# A bad or missing signature makes apt-get update fail ("is not signed", exit
	# 100) or, in some cases, only warn and ignore the index. Either way we never
	# fall back to unverified sources ([trusted=yes] is not an option). Trixie's
	# InRelease is signed by the bookworm archive key (in every bookworm keyring)
	# and the trixie keys (bookworm's debian-archive-keyring >= 2023.3+deb12u2);
	# if verification fails, upgrade the keyring from bookworm once and retry.
	local rc attempt sigfail
	for attempt in 1 2; do
		rc=0
		out=$(private_apt update 2>&1) || rc=$?
		sigfail=0
		grep -Eq 'NO_PUBKEY|EXPKEYSIG|REVKEYSIG|BADSIG|not signed|GPG error|could not be verified' <<<"$out" && sigfail=1
		((sigfail == 0 && rc == 0)) && break
		printf '%s\n' "$out" >&2
		if ((sigfail == 1 && attempt == 1)); then
			log "$TS_SUITE Release not verifiable with $keyring: upgrading debian-archive-keyring from the system's sources and retrying"
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debian-archive-keyring; } >>"$DIR/apt-install.log" 2>&1 \
				|| die "could not upgrade debian-archive-keyring; log: $DIR/apt-install.log"
			continue
		fi
		((sigfail == 1)) && die "the $TS_SUITE Release file could not be verified with $keyring (debian-archive-keyring $(dpkg-query -W -f='${Version}' debian-archive-keyring 2>/dev/null)). Refusing unverified sources."
		die "private apt-get update for $TS_SUITE failed (exit $rc, see above)"
	done
	rm -rf "$DIR/build/src.new"
	mkdir -p "$DIR/build/src.new"
	# The download dir must be writable by apt's sandbox user, or apt warns and
	# downloads as root.
	if id _apt >/dev/null 2>&1; then chown _apt "$DIR/build/src.new"; fi
	(cd "$DIR/build/src.new" && private_apt -qq source --download-only "$TS_SRCPKG/$TS_SUITE" >/dev/null) \
		|| die "apt-get source $TS_SRCPKG/$TS_SUITE failed"
	chown -R root "$DIR/build/src.new"
	local dscs=("$DIR/build/src.new/${TS_SRCPKG}"_*.dsc) dsc
	dsc=${dscs[0]}
	[[ -f $dsc ]] || die "apt-get source left no .dsc in $DIR/build/src.new"
	# apt has already checked every file's hash against the signed Sources index,
	# so dpkg-source needs no keyring for the .dsc signature (--no-check is what
	# `apt-get source` itself passes).
	(cd "$DIR/build/src.new" && dpkg-source -q --no-check -x "$(basename "$dsc")" tree >/dev/null) \
		|| die "dpkg-source -x $dsc failed"
	rm -rf "$DIR/build/src"
	mv "$DIR/build/src.new" "$DIR/build/src"
}

ensure_timescaledb() {
	if timescaledb_installed; then
		return 0
	fi
	local tree="$DIR/build/src/tree" t0=$SECONDS
	mkdir -p "$DIR/build"
	if [[ -f $tree/build/.soilmon-built ]]; then
		log "TimescaleDB missing from PostgreSQL 15: reinstalling from the cached build in $tree/build"
	else
		log "TimescaleDB missing from PostgreSQL 15: building it from Debian $TS_SUITE's source package"
		fetch_timescaledb_source
		# Same options as Debian's own build (debian/rules), Apache-only since the
		# TSL code is not in the +dfsg source. Telemetry is compiled in (so the
		# timescaledb.telemetry_level GUC exists) but off by default.
		(cd "$tree" && BUILD_FORCE_REMOVE=true ./bootstrap \
			-DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
			-DSEND_TELEMETRY_DEFAULT=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DPG_CONFIG="$PG_CONFIG" >"$DIR/build/bootstrap.log" 2>&1) \
			|| { tail -n 30 "$DIR/build/bootstrap.log" >&2; die "TimescaleDB bootstrap (cmake) failed; log: $DIR/build/bootstrap.log"; }
		make -C "$tree/build" -j"$(nproc)" >"$DIR/build/make.log" 2>&1 \
			|| { tail -n 30 "$DIR/build/make.log" >&2; die "TimescaleDB build failed; log: $DIR/build/make.log"; }
		touch "$tree/build/.soilmon-built"
	fi
	make -C "$tree/build" -j"$(nproc)" install >"$DIR/build/install.log" 2>&1 \
		|| { tail -n 30 "$DIR/build/install.log" >&2; die "TimescaleDB install failed; log: $DIR/build/install.log"; }
	timescaledb_installed || die "TimescaleDB still not found in $("$PG_CONFIG" --pkglibdir) after install"
	log "TimescaleDB installed into PostgreSQL 15 in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# 3. PostgreSQL cluster
# ---------------------------------------------------------------------------

# soilmon.conf, included from postgresql.conf. A change restarts the cluster.
pg_settings() {
	cat <<EOF
# Written by deploy/local/services.sh on every \`up\`; edit the script, not this file.
listen_addresses = '127.0.0.1'          # loopback only
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 300                   # parallel tests each hold a pool
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off       # no network here, and no phoning home

# Background workers: kept ON (a per-test throwaway cluster may instead use
# timescaledb.max_background_workers = 0) so this cluster behaves like production:
# jobs and policies run (even the Apache build has one, the job-history retention
# job). TimescaleDB starts one scheduler per database that has the extension, and
# a connected scheduler would make "CREATE DATABASE x TEMPLATE tpl" fail with
# "source database is being accessed by other users" (timescale/timescaledb #4048).
# TimescaleDB 2.19's loader intercepts CREATE DATABASE ... TEMPLATE and restarts
# the template's scheduler first, so plain cloning works (measured: 20 of 20,
# ~0.2 s each), but a restarted scheduler can reconnect in between. The race-free
# way, for a harness that migrates a template once and clones it per test:
#   ALTER DATABASE tpl WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;
#   SELECT pg_terminate_backend(pid) FROM pg_stat_activity
#    WHERE datname = 'tpl' AND backend_type LIKE 'TimescaleDB Background Worker%';
# The launcher never starts a scheduler for a template or a database that does
# not allow connections. Clones get their own scheduler: drop them with
# DROP DATABASE ... WITH (FORCE) (TimescaleDB also stops it on DROP DATABASE).
# Each database with the extension needs a scheduler slot plus one per running
# job; 16 (the default) ran out with ~15 test databases, hence 64.
timescaledb.max_background_workers = 64
max_worker_processes = 80               # >= ts workers + parallel workers + launcher
max_parallel_workers = 8

# Durability stays honest: the service acks MQTT only after COMMIT.
fsync = on
synchronous_commit = on
full_page_writes = on

timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = on
log_directory = '$PG_LOG'
log_filename = 'postgresql-%a.log'      # one file per weekday, overwritten weekly
log_truncate_on_rotation = on
log_rotation_age = 1d
log_rotation_size = 0
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# PID of our postmaster if it is running, else nothing (exit 1). A pid file whose
# pid is dead or belongs to another process (pid reuse after a machine reuse) is
# not "running": the postmaster chdirs into its data dir, so check /proc/PID/cwd.
pg_pid() {
	local pid
	[[ -f $PG_DATA/postmaster.pid ]] || return 1
	pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	if [[ $(id -u) -eq 0 ]]; then
		[[ $(readlink -f "/proc/$pid/cwd" 2>/dev/null) == "$(readlink -f "$PG_DATA")" ]] || return 1
	else
		[[ -d /proc/$pid ]] || return 1   # non-root `status`: cannot read another user's cwd
	fi
	echo "$pid"
}

pg_wait_ready() {
	local i
	for ((i = 0; i < 120; i++)); do
		if "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres; then
			return 0
		fi
		sleep 0.5
	done
	tail -n 30 "$PG_LOG/startup.log" >&2 || true
	die "PostgreSQL did not become ready on $PG_SOCK port $PG_PORT"
}

pg_start() {
	if port_open "$PG_PORT"; then
		die "127.0.0.1:$PG_PORT is already in use by another process; set SOILMON_PG_PORT"
	fi
	# Stale lock files (crash, SIGKILL, machine reused): postgres refuses to start
	# if the recorded pid now belongs to an unrelated postgres-owned process.
	if [[ -e $PG_DATA/postmaster.pid ]]; then
		log "removing stale $PG_DATA/postmaster.pid"
		rm -f "$PG_DATA/postmaster.pid"
	fi
	rm -f "$PG_SOCK/.s.PGSQL.$PG_PORT" "$PG_SOCK/.s.PGSQL.$PG_PORT.lock"
	log "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT and $PG_SOCK"
	as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG/startup.log" -w -t 120 start >/dev/null 9>&- \
		|| { tail -n 30 "$PG_LOG/startup.log" >&2; die "pg_ctl start failed; logs in $PG_LOG"; }
}

ensure_postgres() {
	install -d -m 0755 -o postgres -g postgres "$PG_DIR" "$PG_SOCK" "$PG_LOG"
	as_postgres test -w "$PG_DIR" \
		|| die "user postgres cannot write $PG_DIR: every parent of $DIR must be traversable (o+x)"

	if [[ ! -f $PG_DATA/PG_VERSION ]]; then
		if [[ -d $PG_DATA ]] && [[ -n $(ls -A "$PG_DATA") ]]; then
			die "$PG_DATA exists, is not empty and holds no cluster; remove it by hand"
		fi
		log "initdb $PG_DATA"
		install -d -m 0700 -o postgres -g postgres "$PG_DATA"
		# -A trust: local dev/test only, loopback + a unix socket in our own dir.
		as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 \
			--locale=C.UTF-8 >"$PG_LOG/initdb.log" 2>&1 \
			|| { cat "$PG_LOG/initdb.log" >&2; die "initdb failed"; }
	fi
	local major
	major=$(<"$PG_DATA/PG_VERSION")
	[[ $major == 15 ]] || die "$PG_DATA holds a PostgreSQL $major cluster, expected 15"

	grep -q "^include_if_exists = 'soilmon.conf'" "$PG_DATA/postgresql.conf" \
		|| printf "\n# soilmon local settings\ninclude_if_exists = 'soilmon.conf'\n" >>"$PG_DATA/postgresql.conf"
	local new changed=0
	new=$(pg_settings)
	if [[ ! -f $PG_DATA/soilmon.conf ]] || [[ $new != "$(<"$PG_DATA/soilmon.conf")" ]]; then
		printf '%s\n' "$new" >"$PG_DATA/soilmon.conf"
		chown postgres:postgres "$PG_DATA/soilmon.conf"
		changed=1
	fi

	if pid=$(pg_pid); then
		if ((changed)); then
			log "PostgreSQL settings changed: restarting (pid $pid)"
			as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG/startup.log" -m fast -w -t 120 restart >/dev/null 9>&- \
				|| { tail -n 30 "$PG_LOG/startup.log" >&2; die "pg_ctl restart failed"; }
		fi
	else
		pg_start
	fi
	pg_wait_ready

	if [[ -z $(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'") ]]; then
		log "creating database $DBNAME"
		psql_admin -d postgres -qc "CREATE DATABASE $DBNAME" >/dev/null
	fi
}

pg_stop() {
	local pid
	if pid=$(pg_pid); then
		log "stopping PostgreSQL (pid $pid)"
		as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 120 stop >/dev/null
	else
		log "PostgreSQL not running"
	fi
}

# ---------------------------------------------------------------------------
# 4. Mosquitto
# ---------------------------------------------------------------------------

# PID of our broker if running: the pid file's process must be a mosquitto
# started with our config file.
mq_pid() {
	local pid
	[[ -f $MQ_PID ]] || return 1
	pid=$(head -n1 "$MQ_PID" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] && tr "\0" " " 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$MQ_CONF" || return 1
	echo "$pid"
}

mq_stop() {
	local pid i
	if pid=$(mq_pid); then
		log "stopping Mosquitto (pid $pid)"
		kill -TERM "$pid"   # SIGTERM: mosquitto writes its persistence file, then exits
		for ((i = 0; i < 100; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		[[ ! -d /proc/$pid ]] || die "Mosquitto (pid $pid) did not exit after SIGTERM"
	else
		log "Mosquitto not running"
	fi
	rm -f "$MQ_PID"
}

ensure_mosquitto() {
	[[ -f $MOSQ_TEMPLATE ]] || die "template $MOSQ_TEMPLATE missing"
	install -d -m 0755 -o mosquitto -g mosquitto "$MQ_DIR"
	local new changed=0 pid i
	new=$(sed -e "s|@MQTT_PORT@|$MQTT_PORT|g" -e "s|@STATE_DIR@|$MQ_DIR|g" "$MOSQ_TEMPLATE")
	if [[ ! -f $MQ_CONF ]] || [[ $new != "$(<"$MQ_CONF")" ]]; then
		printf '%s\n' "$new" >"$MQ_CONF"
		changed=1
	fi
	# Files a previous run (or a root-run broker) left behind must stay writable
	# after mosquitto drops to its own user.
	chown -R mosquitto:mosquitto "$MQ_DIR"

	if pid=$(mq_pid); then
		if ((changed)); then
			log "Mosquitto config changed: restarting"
			mq_stop
		elif port_open "$MQTT_PORT"; then
			return 0
		else
			log "Mosquitto (pid $pid) runs but 127.0.0.1:$MQTT_PORT is closed: restarting"
			mq_stop
		fi
	elif [[ -e $MQ_PID ]]; then
		log "removing stale $MQ_PID"
		rm -f "$MQ_PID"
	fi

	if port_open "$MQTT_PORT"; then
		die "127.0.0.1:$MQTT_PORT is already in use by another process; set SOILMON_MQTT_PORT"
	fi
	log "starting Mosquitto on 127.0.0.1:$MQTT_PORT"
	mosquitto -d -c "$MQ_CONF" >"$MQ_DIR/startup.log" 2>&1 9>&- \
		|| { cat "$MQ_DIR/startup.log" >&2; tail -n 20 "$MQ_LOG" >&2 || true; die "mosquitto failed to start"; }
	for ((i = 0; i < 100; i++)); do
		port_open "$MQTT_PORT" && return 0
		sleep 0.1
	done
	tail -n 20 "$MQ_LOG" >&2 || true
	die "Mosquitto did not accept connections on 127.0.0.1:$MQTT_PORT"
}

# ---------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------
# Serialise concurrent runs (tests and CI may call `up` in parallel). Every
# daemon started while the lock is held is spawned with `9>&-`, or it would
# inherit the lock fd and hold the lock for its whole life.
with_lock() {
	install -d -m 0755 "$DIR"
	exec 9>"$DIR/.lock"
	flock -w 900 9 || die "another services.sh holds $DIR/.lock"
}

cmd_env() {
	cat <<EOF
export SOILMON__DATABASE__URL="host=$PG_SOCK port=$PG_PORT user=postgres dbname=$DBNAME"
export SOILMON__MQTT__HOST=127.0.0.1
export SOILMON__MQTT__PORT=$MQTT_PORT
export SOILMON_TEST_PG="host=$PG_SOCK port=$PG_PORT user=postgres"
export SOILMON_PG_BIN=$PG_BIN
EOF
}

cmd_up() {
	need_root
	local t0=$SECONDS
	with_lock
	ensure_packages
	ensure_timescaledb
	ensure_postgres
	ensure_mosquitto
	log "up in $((SECONDS - t0)) s"
	cat <<EOF
PostgreSQL 15 + TimescaleDB: host=$PG_SOCK port=$PG_PORT user=postgres dbname=$DBNAME
                             (also 127.0.0.1:$PG_PORT, trust auth; logs in $PG_LOG)
Mosquitto:                   127.0.0.1:$MQTT_PORT, anonymous (log $MQ_LOG)
Environment:                 eval "\$($0 env)"
EOF
}

cmd_down() {
	need_root
	if [[ ! -d $DIR ]]; then
		log "nothing to stop ($DIR does not exist)"
		return 0
	fi
	with_lock
	pg_stop
	mq_stop
}

cmd_status() {
	local rc=0 pid ver
	if pid=$(pg_pid) && "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PG_PORT"; then
		ver=$(psql_admin -d postgres -tAc "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'" 2>/dev/null || true)
		echo "postgresql: running (pid $pid) host=$PG_SOCK port=$PG_PORT; timescaledb available: ${ver:-NO}"
	else
		echo "postgresql: stopped ($PG_DATA)"
		rc=3
	fi
	if pid=$(mq_pid) && port_open "$MQTT_PORT"; then
		echo "mosquitto:  running (pid $pid) 127.0.0.1:$MQTT_PORT"
	else
		echo "mosquitto:  stopped ($MQ_CONF)"
		rc=3
	fi
	return "$rc"
}

main() {
	local cmd="${1:-up}"
	case "$cmd" in
	up | start) cmd_up ;;
	down | stop) cmd_down ;;
	status) cmd_status ;;
	env) cmd_env ;;
	-h | --help | help) usage ;;
	*)
		echo "usage: $0 [up|down|status|env|--help]" >&2
		exit 2
		;;
	esac
}

main "$@"
