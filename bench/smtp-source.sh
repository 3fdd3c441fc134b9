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

. "$TOP/bench/lib.sh"

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

bench_setup tern-bench

count_files() { # files in a Maildir new/ (0 while it does not exist yet)
	if [ -d "$1" ]; then
		find "$1" -mindepth 1 -maxdepth 1 -type f | wc -l
	else
		echo 0
	fi
}

# run NAME PORT NEWDIR LOG PID: send, then poll NEWDIR until it holds
# MESSAGES files, or until nothing new has arrived for STALL seconds. PID is
# the server's top process, for its CPU time.
run() {
	name=$1 port=$2 newdir=$3 log=$4 spid=$5
	echo "bench: $name: $MESSAGES messages x $SIZE bytes, $SESSIONS sessions -> 127.0.0.1:$port" >&2
	c0=$(cpu_ticks "$spid")
	send_and_wait "$name" "$port" user@bench.test delivered
	c1=$(cpu_ticks "$spid")
	check_arrived "$name" "$log" delivered delivered "%d messages delivered more than once"
	RESULTS="$RESULTS$(awk -v n="$name" -v m="$n" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
		-v cpu="$(((c1 - c0) * 100 / HZ))" 'BEGIN {
		s = t2 - t0
		printf "%s %d %.2f %.2f %.1f %.2f", n, m, t1 - t0, s, (s > 0 ? m / s : 0), cpu / 100 }')
"
}
delivered() { count_files "$newdir"; }

# ---------------------------------------------------------------- tern
bench_tern() {
	port=$(free_port 127.0.0.1)
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
	start_tern "$DIR/tern/tern.conf" "$port"
	run tern "$port" "$DIR/tern/mail/bench.test/user/new" "$DIR/tern/tern.log" "$TERN_PID"
	end_tern
	tern_problems ' (warn|error): |^\[(warn|err)\]|reason=error|fatal|panic|Sanitizer|Assertion' \
		"$DIR/tern/tern.log"
}

# ---------------------------------------------------------------- Postfix
# A private instance (bench/lib.sh) delivering by virtual(8) to a Maildir
# (trailing slash in vmailbox) as user nobody: local(8) Maildir delivery
# would need a real user's home.
bench_postfix() {
	port=$(free_port 127.0.0.1)
	vuid=$(id -u nobody)
	vgid=$(id -g nobody)
	mkdir -p "$PFX_CONF" "$DIR/postfix/mail"
	chown "$vuid:$vgid" "$DIR/postfix/mail"
	printf '%s\n' 'user@bench.test bench.test/user/' \
		'postmaster@bench.test bench.test/postmaster/' >"$PFX_CONF/vmailbox"
	postfix_instance "$port" "one virtual domain delivered to Maildir, default durability (nothing about fsync changed)." <<-EOF
	relayhost =
	virtual_mailbox_domains = bench.test
	virtual_mailbox_base = $DIR/postfix/mail
	virtual_mailbox_maps = texthash:$PFX_CONF/vmailbox
	virtual_uid_maps = static:$vuid
	virtual_gid_maps = static:$vgid
	EOF
	start_postfix "$port"
	run postfix "$port" "$DIR/postfix/mail/bench.test/user/new" "$DIR/postfix/postfix.log" \
		"$(postfix_master)"
	stop_postfix
	postfix_problems 'warning|error|fatal|panic' "$DIR/postfix/postfix.log"
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
result_table system:-8:s messages:9:d accept-s:9:.2f seconds:9:.2f msg/s:8:.0f cpu-s:7:.2f

if [ -n "$FAILED" ]; then
	echo "bench: FAILED:${FAILED#;}" >&2
	exit 1
fi
exit 0
