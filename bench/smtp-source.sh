#!/bin/sh
# smtp-source.sh - tern vs Postfix, side by side, in one run.
#
# Postfix's load generator smtp-source(1) sends MESSAGES messages of SIZE
# bytes over SESSIONS parallel SMTP sessions, first into tern, then into a
# private Postfix instance configured the same way (one local domain,
# Maildir delivery, default durability). A run is timed from the start of
# smtp-source until the last message is DELIVERED, i.e. until the Maildir's
# new/ holds MESSAGES files; accepting the messages is not enough.
# Prints seconds and messages per second for each, then the ratio.
#
#   make bench                                  (as root; docs/performance.md)
#   MESSAGES=1000 SIZE=4096 SESSIONS=20 sh bench/smtp-source.sh
#
# Other knobs: TERN=path/to/tern; SMTP_SOURCE_OPTS, extra smtp-source flags
# (e.g. "-d": all of a session's messages over one connection); STALL,
# seconds without a new delivery before a run is declared failed (60);
# SYSTEMS="tern postfix" (the default; name one to run only that side);
# KEEP=1 keeps the temporary directory (configs, logs, spools, Maildirs).
#
# Talks only to 127.0.0.1. Stops exactly the processes it started, by PID,
# and removes its temporary directory, also on failure or interrupt.
# Exit status: 0 when every message reached its Maildir exactly once and
# tern stopped cleanly; 1 otherwise.
# shellcheck disable=SC2317 # functions run from the trap and as "bench_$sys"
set -eu

MESSAGES=${MESSAGES:-10000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-20}
STALL=${STALL:-60}
SMTP_SOURCE_OPTS=${SMTP_SOURCE_OPTS:-}
SYSTEMS=${SYSTEMS:-tern postfix}
TOP=$(cd "$(dirname "$0")/.." && pwd)
TERN=${TERN:-$TOP/build/tern}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
POSTFIX=${POSTFIX:-/usr/sbin/postfix}
POSTCONF=${POSTCONF:-/usr/sbin/postconf}
PY=/usr/bin/python3

die() { echo "bench: $*" >&2; exit 1; }
has() { case " $SYSTEMS " in *" $1 "*) return 0 ;; esac; return 1; }

for n in "$MESSAGES" "$SIZE" "$SESSIONS" "$STALL"; do
	case $n in '' | *[!0-9]*) die "MESSAGES, SIZE, SESSIONS, STALL must be integers" ;; esac
done
for sys in $SYSTEMS; do
	case $sys in tern | postfix) ;; *) die "SYSTEMS: unknown system '$sys'" ;; esac
done
[ -x "$SMTP_SOURCE" ] || die "$SMTP_SOURCE missing: apt-get install postfix (make deps)"
[ -x "$PY" ] || die "$PY missing (make deps)"
if has postfix; then
	[ "$(id -u)" = 0 ] || die "run as root: the private Postfix instance needs it (make bench)"
	[ -x "$POSTFIX" ] || die "$POSTFIX missing: apt-get install postfix (make deps)"
fi
if has tern; then
	if [ ! -x "$TERN" ]; then
		make -C "$TOP" build/tern >/dev/null || die "cannot build $TERN"
	fi
	if [ "$(id -u)" = 0 ]; then
		if ! getent passwd tern >/dev/null || ! getent passwd tern-smtp >/dev/null; then
			die "users tern and tern-smtp missing: run 'make deps' as root"
		fi
	fi
fi

# ---------------------------------------------------------------- clean-up
DIR=$(mktemp -d /tmp/tern-bench.XXXXXX)
# tern's workers drop to tern/tern-smtp, Postfix's to postfix/nobody: they
# must be able to traverse the temporary directory.
chmod 755 "$DIR"
TERN_PID=""
TERN_BAD=""
SRC_PID=""
PFX_STARTED=""
PFX_CONF=$DIR/postfix/etc
PFX_QUEUE=$DIR/postfix/queue

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Send SIGTERM to the given PIDs, wait up to 10 s, then SIGKILL survivors.
# Returns 1 when SIGKILL was needed.
stop_pids() {
	for p in "$@"; do
		if alive "$p"; then kill -TERM "$p" 2>/dev/null || :; fi
	done
	i=0
	while [ "$i" -lt 100 ]; do
		any=""
		for p in "$@"; do
			if alive "$p"; then any=1; fi
		done
		[ -z "$any" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	for p in "$@"; do
		if alive "$p"; then kill -KILL "$p" 2>/dev/null || :; fi
	done
	return 1
}

# tern's parent is asked to stop (it stops its workers; that is checked too).
# The workers' PIDs are noted first so that none can outlive the benchmark.
stop_tern() {
	[ -n "$TERN_PID" ] || return 0
	kids=$(ps -o pid= --ppid "$TERN_PID" 2>/dev/null || :)
	if ! stop_pids "$TERN_PID"; then
		echo "bench: tern (pid $TERN_PID) ignored SIGTERM for 10 s: killed" >&2
		TERN_BAD=1
	fi
	wait "$TERN_PID" 2>/dev/null || :
	# shellcheck disable=SC2086
	if ! stop_pids $kids; then
		echo "bench: tern workers ($kids) outlived their parent: killed" >&2
		TERN_BAD=1
	fi
	TERN_PID=""
}

# "postfix stop" stops only the instance of our config directory, and
# returns before its master has gone: wait for that master, by the PID in
# our own queue directory, and kill it (and its children) if it lingers.
stop_postfix() {
	[ -n "$PFX_STARTED" ] || return 0
	pid=""
	if [ -r "$PFX_QUEUE/pid/master.pid" ]; then
		pid=$(tr -dc 0-9 <"$PFX_QUEUE/pid/master.pid")
	fi
	"$POSTFIX" -c "$PFX_CONF" stop >/dev/null 2>&1 || :
	if [ -n "$pid" ]; then
		kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || :)
		# shellcheck disable=SC2086
		stop_pids "$pid" $kids || :
	fi
	PFX_STARTED=""
}

cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$SRC_PID" ]; then stop_pids "$SRC_PID" || :; fi
	stop_tern
	stop_postfix
	if [ "${KEEP:-0}" = 1 ]; then
		echo "bench: kept $DIR" >&2
	else
		rm -rf "$DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }

free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until an SMTP server greets on 127.0.0.1:$1; say QUIT politely so
# that the probe leaves no error in the server's log.
wait_smtp() {
	"$PY" - "$1" <<'EOF'
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2) as s:
            f = s.makefile("rb")
            if f.readline().startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                f.readline()
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

count_files() { # files in a Maildir new/ (0 while it does not exist yet)
	if [ -d "$1" ]; then
		find "$1" -mindepth 1 -maxdepth 1 -type f | wc -l
	else
		echo 0
	fi
}

# CPU time (in clock ticks) used so far by process $1 and its children,
# living or already reaped: utime+stime+cutime+cstime of /proc/PID/stat.
# tern's workers and all of Postfix's daemons are children of one process.
cpu_ticks() {
	for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
		sed 's/.*) //' "/proc/$p/stat" 2>/dev/null || :
	done | awk '{ t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}
HZ=$(getconf CLK_TCK)

RESULTS=""
FAILED=""

# run NAME PORT NEWDIR LOG PID: send, then poll NEWDIR until it holds
# MESSAGES files, or until nothing new has arrived for STALL seconds. PID is
# the server's top process, for its CPU time.
run() {
	name=$1 port=$2 newdir=$3 log=$4 spid=$5
	echo "bench: $name: $MESSAGES messages x $SIZE bytes, $SESSIONS sessions -> 127.0.0.1:$port" >&2
	c0=$(cpu_ticks "$spid")
	t0=$(now)
	src_rc=0
	# shellcheck disable=SC2086
	"$SMTP_SOURCE" $SMTP_SOURCE_OPTS -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" \
		-M client.bench.test -f sender@bench.test -t user@bench.test \
		"127.0.0.1:$port" >"$DIR/$name.smtp-source.out" 2>&1 &
	# In the background, so that a signal reaches our trap at once.
	SRC_PID=$!
	wait "$SRC_PID" || src_rc=$?
	SRC_PID=""
	t1=$(now)
	if [ "$src_rc" != 0 ]; then
		echo "bench: $name: smtp-source failed (exit $src_rc):" >&2
		tail -n 5 "$DIR/$name.smtp-source.out" >&2
	fi
	last=-1
	last_t=$(date +%s)
	while :; do
		n=$(count_files "$newdir")
		[ "$n" -ge "$MESSAGES" ] && break
		if [ "$n" != "$last" ]; then
			last=$n
			last_t=$(date +%s)
		elif [ $(($(date +%s) - last_t)) -ge "$STALL" ]; then
			break
		fi
		sleep 0.05
	done
	t2=$(now)
	c1=$(cpu_ticks "$spid")
	if [ "$n" -lt "$MESSAGES" ]; then
		echo "bench: $name: only $n of $MESSAGES messages delivered" \
			"(nothing new for ${STALL}s); last log lines:" >&2
		tail -n 20 "$log" >&2 || :
		FAILED="$FAILED; $name: $((MESSAGES - n)) of $MESSAGES messages missing"
	else
		# Not timed: a second later, nothing more may have arrived.
		sleep 1
		extra=$(($(count_files "$newdir") - MESSAGES))
		if [ "$extra" -gt 0 ]; then
			echo "bench: $name: $extra messages delivered more than once" >&2
			FAILED="$FAILED; $name: $extra duplicate deliveries"
		fi
	fi
	RESULTS="$RESULTS$(awk -v n="$name" -v m="$n" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
		-v cpu="$(((c1 - c0) * 100 / HZ))" 'BEGIN {
		s = t2 - t0
		printf "%s %d %.2f %.2f %.1f %.2f", n, m, t1 - t0, s, (s > 0 ? m / s : 0), cpu / 100 }')
"
}

# ---------------------------------------------------------------- tern
bench_tern() {
	port=$(free_port)
	mkdir -p "$DIR/tern"
	# user_smtp/user_queue apply only when started as root.
	cat >"$DIR/tern/tern.conf" <<-EOF
	hostname bench.test
	listen 127.0.0.1:$port
	spool $DIR/tern/spool
	relay_networks 127.0.0.0/8
	max_connections 200
	max_connections_per_ip 100
	max_message_size 10M
	user_smtp tern-smtp
	user_queue tern
	domain bench.test {
	    mailbox user postmaster
	    maildir $DIR/tern/mail/%d/%u
	}
	EOF
	"$TERN" check-config -c "$DIR/tern/tern.conf" >/dev/null ||
		die "tern rejects the benchmark configuration"
	"$TERN" serve -c "$DIR/tern/tern.conf" >"$DIR/tern/tern.log" 2>&1 &
	TERN_PID=$!
	if ! wait_smtp "$port"; then
		tail -n 20 "$DIR/tern/tern.log" >&2
		die "tern did not start listening on 127.0.0.1:$port"
	fi
	run tern "$port" "$DIR/tern/mail/bench.test/user/new" "$DIR/tern/tern.log" "$TERN_PID"
	stop_tern
	[ -z "$TERN_BAD" ] || FAILED="$FAILED; tern: did not stop cleanly on SIGTERM"
	# Problems tern logged are worth knowing even when every message arrived.
	pat=' (warn|error): |^\[(warn|err)\]|reason=error|fatal|panic|Sanitizer|Assertion'
	if grep -Eq "$pat" "$DIR/tern/tern.log"; then
		echo "bench: tern logged problems ($(grep -Ec "$pat" "$DIR/tern/tern.log") lines; first 10):" >&2
		grep -E "$pat" "$DIR/tern/tern.log" | head -n 10 | cut -c1-300 >&2
	fi
}

# ---------------------------------------------------------------- Postfix
# A private instance with its own config, queue and data directories; the
# system instance (if any) is neither read nor touched: `postfix -c DIR`
# run by root needs no alternate_config_directories entry in the default
# main.cf (only the set-gid postdrop/postqueue would). main.cf is written
# from scratch (Debian's "No configuration" install has none); master.cf is
# the packaged one with smtpd moved to a free loopback port and chroot
# turned off (a chroot would need copies of /etc files in our queue dir).
# Delivery is by virtual(8) to a Maildir (trailing slash in vmailbox) as
# user nobody: local(8) Maildir delivery would need a real user's home.
bench_postfix() {
	port=$(free_port)
	vuid=$(id -u nobody)
	vgid=$(id -g nobody)
	# data_directory is left for Postfix to create: postfix must own it.
	mkdir -p "$PFX_CONF" "$PFX_QUEUE" "$DIR/postfix/mail"
	chown "$vuid:$vgid" "$DIR/postfix/mail"
	master_cf=/etc/postfix/master.cf
	[ -r "$master_cf" ] || master_cf=/usr/share/postfix/master.cf.dist
	cp "$master_cf" "$PFX_CONF/master.cf"
	printf '%s\n' 'user@bench.test bench.test/user/' \
		'postmaster@bench.test bench.test/postmaster/' >"$PFX_CONF/vmailbox"
	cat >"$PFX_CONF/main.cf" <<-EOF
	# Private Postfix instance for bench/smtp-source.sh: one virtual domain
	# delivered to Maildir, default durability (nothing about fsync changed).
	compatibility_level = 3.6
	queue_directory = $PFX_QUEUE
	data_directory = $DIR/postfix/data
	myhostname = postfix.bench.test
	mydomain = bench.test
	myorigin = bench.test
	inet_interfaces = 127.0.0.1
	inet_protocols = ipv4
	mydestination =
	mynetworks = 127.0.0.0/8
	relayhost =
	alias_maps =
	alias_database =
	smtpd_recipient_restrictions = permit_mynetworks, reject
	smtpd_relay_restrictions = permit_mynetworks, reject
	message_size_limit = 10485760
	default_process_limit = 100
	smtpd_client_connection_count_limit = 100
	virtual_mailbox_domains = bench.test
	virtual_mailbox_base = $DIR/postfix/mail
	virtual_mailbox_maps = texthash:$PFX_CONF/vmailbox
	virtual_uid_maps = static:$vuid
	virtual_gid_maps = static:$vgid
	maillog_file = $DIR/postfix/postfix.log
	maillog_file_prefixes = /var, /dev/stdout, $DIR/postfix/
	EOF
	"$POSTCONF" -c "$PFX_CONF" -M -X smtp/inet
	"$POSTCONF" -c "$PFX_CONF" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd"
	"$POSTCONF" -c "$PFX_CONF" -F '*/*/chroot = n'

	"$POSTFIX" -c "$PFX_CONF" check >"$DIR/postfix/check.out" 2>&1 ||
		{ cat "$DIR/postfix/check.out" >&2; die "postfix check failed"; }
	PFX_STARTED=1
	"$POSTFIX" -c "$PFX_CONF" start >"$DIR/postfix/start.out" 2>&1 ||
		{ cat "$DIR/postfix/start.out" "$DIR/postfix/postfix.log" >&2; die "postfix start failed"; }
	if ! wait_smtp "$port"; then
		tail -n 20 "$DIR/postfix/postfix.log" >&2 || :
		die "Postfix did not start listening on 127.0.0.1:$port"
	fi
	run postfix "$port" "$DIR/postfix/mail/bench.test/user/new" "$DIR/postfix/postfix.log" \
		"$(tr -dc 0-9 <"$PFX_QUEUE/pid/master.pid")"
	stop_postfix
	# (A VM's "file system clock is N seconds ahead" warning is harmless.)
	pat='warning|error|fatal|panic'
	if grep -E "$pat" "$DIR/postfix/postfix.log" |
		grep -Evq 'clock is .* ahead|resetting file time'; then
		echo "bench: Postfix logged problems (first 10 lines):" >&2
		grep -E "$pat" "$DIR/postfix/postfix.log" | head -n 10 >&2
	fi
}

for sys in $SYSTEMS; do
	"bench_$sys"
done

# ---------------------------------------------------------------- report
echo
echo "smtp-source: $MESSAGES messages of $SIZE bytes, $SESSIONS parallel sessions${SMTP_SOURCE_OPTS:+, options $SMTP_SOURCE_OPTS}"
echo "seconds: from the start of smtp-source until every message is in the Maildir"
echo "accept-s: until smtp-source had its last 250"
echo "cpu-s: CPU time of the server's processes (user + system) during the run"
printf '%s' "$RESULTS" | awk '
	BEGIN { printf "%-8s %9s %9s %9s %8s %7s\n", "system", "messages", "accept-s", "seconds", "msg/s", "cpu-s" }
	{ printf "%-8s %9d %9.2f %9.2f %8.0f %7.2f\n", $1, $2, $3, $4, $5, $6; r[$1] = $5 }
	END {
		if (r["tern"] > 0 && r["postfix"] > 0)
			printf "ratio tern/postfix: %.2f\n", r["tern"] / r["postfix"]
		else
			print "ratio tern/postfix: n/a"
	}'

if [ -n "$FAILED" ]; then
	echo "bench: FAILED:${FAILED#;}" >&2
	exit 1
fi
exit 0
