#!/bin/sh
# relay.sh - end-to-end relay throughput, tern vs Postfix, in one run.
#
#   smtp-source --> MTA on 127.0.0.1:PORT --> smtp-sink on 127.0.0.2:PORT
#
# Postfix's load generator smtp-source(1) sends MESSAGES messages of SIZE
# bytes over SESSIONS parallel SMTP sessions, all to user@relay.test, a
# foreign domain, from a relay client (127.0.0.1 is in both MTAs' relay
# networks). Each MTA queues them durably and relays them to Postfix's test
# server smtp-sink(1), which throws them away and counts them (-c). A run is
# timed from the start of smtp-source until the sink has received MESSAGES
# messages; accepting them is not enough. First tern, then a private Postfix
# instance (relayhost = [127.0.0.2]:PORT, default durability, default
# destination concurrency). Prints seconds and messages per second for each,
# then the ratio.
#
# Route to the sink. Postfix needs no DNS (relayhost with brackets). tern
# gets the equivalent route: with ROUTE=smarthost a per-domain smarthost
# (`route relay.test { smarthost [127.0.0.2]:PORT }`, no DNS either; tern
# since ceae817), with ROUTE=mx an MX
# lookup answered by a private dnsmasq on a free 127.0.0.1 port
# (relay.test MX 10 mx.relay.test, mx.relay.test A 127.0.0.2, TTL 3600 so
# that tern's resolver cache answers after the first query), with tern's
# `resolver` pointing at it, `allow_loopback_mx yes` and `relay_port PORT`.
# ROUTE=auto (the default) uses the smarthost when this tern binary accepts
# that configuration, the MX lookup otherwise. The report says which.
#
#   make bench            (as root: runs bench/smtp-source.sh, then this; docs/performance.md)
#   MESSAGES=1000 SIZE=4096 SESSIONS=20 sh bench/relay.sh
#
# Other knobs: TERN=path/to/tern; SMTP_SOURCE_OPTS, extra smtp-source flags
# (e.g. "-d": all of a session's messages over one connection);
# RELAY_CONCURRENCY, tern's max_relay_connections_per_domain (20 by default,
# Postfix's default_destination_concurrency_limit); STALL, seconds without
# a new message at the sink before a run is declared failed (60);
# SYSTEMS="tern postfix" (the default; name one to run only that side);
# ROUTE=auto|smarthost|mx; KEEP=1 keeps the temporary directory (configs,
# logs, spools).
#
# Talks only to 127.0.0.1 and 127.0.0.2. Stops exactly the processes it
# started, by PID, and removes its temporary directory, also on failure or
# interrupt. Exit status: 0 when the sink received every message exactly
# once (by count) on each side and tern stopped cleanly; 1 otherwise.
# shellcheck disable=SC2317 # functions run from the trap and as "bench_$sys"
set -eu

MESSAGES=${MESSAGES:-10000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-20}
STALL=${STALL:-60}
RELAY_CONCURRENCY=${RELAY_CONCURRENCY:-20}
SMTP_SOURCE_OPTS=${SMTP_SOURCE_OPTS:-}
SYSTEMS=${SYSTEMS:-tern postfix}
ROUTE=${ROUTE:-auto}
TOP=$(cd "$(dirname "$0")/.." && pwd)
TERN=${TERN:-$TOP/build/tern}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
DNSMASQ=${DNSMASQ:-/usr/sbin/dnsmasq}
POSTFIX=${POSTFIX:-/usr/sbin/postfix}
POSTCONF=${POSTCONF:-/usr/sbin/postconf}
PY=/usr/bin/python3
SINK_IP=127.0.0.2
DEST=relay.test

. "$TOP/bench/lib.sh"

for n in "$MESSAGES" "$SIZE" "$SESSIONS" "$STALL" "$RELAY_CONCURRENCY"; do
	case $n in '' | *[!0-9]*) die "MESSAGES, SIZE, SESSIONS, STALL, RELAY_CONCURRENCY must be integers" ;; esac
done
for sys in $SYSTEMS; do
	case $sys in tern | postfix) ;; *) die "SYSTEMS: unknown system '$sys'" ;; esac
done
case $ROUTE in auto | smarthost | mx) ;; *) die "ROUTE: auto, smarthost or mx" ;; esac
# Root: smtp-sink drops to nobody, Postfix's instance and tern's workers
# change users, and the same is what `make bench` runs as.
[ "$(id -u)" = 0 ] || die "run as root (make bench)"
[ -x "$SMTP_SOURCE" ] || die "$SMTP_SOURCE missing: apt-get install postfix (make deps)"
[ -x "$SMTP_SINK" ] || die "$SMTP_SINK missing: apt-get install postfix (make deps)"
[ -x "$PY" ] || die "$PY missing (make deps)"
has postfix && { [ -x "$POSTFIX" ] || die "$POSTFIX missing: apt-get install postfix (make deps)"; }
if has tern; then
	if [ ! -x "$TERN" ]; then
		make -C "$TOP" build/tern >/dev/null || die "cannot build $TERN"
	fi
	for u in tern tern-smtp tern-relay; do
		getent passwd "$u" >/dev/null || die "user $u missing: run 'make deps' as root"
	done
fi

bench_setup tern-bench-relay
SINK_PID=""
DNS_PID=""
stop_extra() {
	stop_child "$SINK_PID"
	stop_child "$DNS_PID"
}

# ---------------------------------------------------------------- helpers
# Messages the sink has received so far: the last "mesg=N" of its -c
# counter line "sess=N quit=N mesg=N", which it rewrites (CR-separated) at
# every "." it receives and every session's end. sink_sessions: "sess=N",
# the connections it has seen end.
sink_field() {
	tail -c 200 "$2" 2>/dev/null | tr '\r' '\n' |
		sed -n "s/.*$1=\([0-9][0-9]*\).*/\1/p" | tail -n 1 | grep . || echo 0
}
sink_count() { sink_field mesg "$1"; }
sink_sessions() { sink_field sess "$1"; }

# "PID USER+SYSTEM SYSTEM" ticks for each living child of process $1.
child_ticks() {
	for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk -v p="$p" '{ print p, $12 + $13, $13 }'
	done
}

# tern_split BEFORE AFTER LOG: CPU seconds per tern worker between two
# child_ticks snapshots, named by the role tern logs with its PID.
tern_split() {
	printf '%s\n' "$2" | while read -r p t st; do
		[ -n "$p" ] || continue
		b=$(printf '%s\n' "$1" | awk -v p="$p" '$1 == p { print $2 }')
		bs=$(printf '%s\n' "$1" | awk -v p="$p" '$1 == p { print $3 }')
		role=$(grep -o -m 1 "tern\[[a-z]* $p\]" "$3" | sed 's/tern\[\([a-z]*\) .*/\1/')
		awk -v r="${role:-pid$p}" -v d="$((t - ${b:-0}))" -v ds="$((st - ${bs:-0}))" \
			-v hz="$HZ" 'BEGIN { printf "%s %.2fs (system %.2fs) ", r, d / hz, ds / hz }'
	done
}

# start_sink NAME: a fresh smtp-sink on SINK_IP:SINK_PORT counting into
# $DIR/NAME.sink (the counter is per process, so one sink per system).
start_sink() {
	SINK_PORT=$(free_port "$SINK_IP") || die "no free port on $SINK_IP"
	SINK_OUT=$DIR/$1.sink
	# -u: it refuses to run as root; -m: accept far more than either MTA
	# opens, so the sink never queues connections in the kernel.
	"$SMTP_SINK" -c -u nobody -m 1000 "$SINK_IP:$SINK_PORT" 1024 \
		>"$SINK_OUT" 2>"$DIR/$1.sink.err" </dev/null &
	SINK_PID=$!
	if ! wait_smtp "$SINK_IP" "$SINK_PORT"; then
		cat "$DIR/$1.sink.err" >&2
		die "smtp-sink did not start listening on $SINK_IP:$SINK_PORT"
	fi
}

# run NAME PORT LOG PID: send to 127.0.0.1:PORT, then poll the sink's
# counter until it reaches MESSAGES, or until nothing new has arrived for
# STALL seconds. PID is the MTA's top process, for its CPU time.
run() {
	name=$1 port=$2 log=$3 spid=$4
	echo "bench: $name: $MESSAGES messages x $SIZE bytes, $SESSIONS sessions -> 127.0.0.1:$port -> $SINK_IP:$SINK_PORT" >&2
	base=$(sink_count "$SINK_OUT")
	sess0=$(sink_sessions "$SINK_OUT")
	c0=$(cpu_ticks "$spid")
	s0=$(cpu_ticks "$SINK_PID")
	k0=$(child_ticks "$spid")
	send_and_wait "$name" "$port" "user@$DEST" arrived
	c1=$(cpu_ticks "$spid")
	s1=$(cpu_ticks "$SINK_PID")
	if [ "$name" = tern ]; then
		TERN_SPLIT=$(tern_split "$k0" "$(child_ticks "$spid")" "$log")
		echo "bench: tern CPU by worker: $TERN_SPLIT" >&2
	fi
	check_arrived "$name" "$log" arrived "reached the sink" \
		"the sink received %d messages more than were sent"
	# Connections the MTA opened to the sink: those that have ended, plus
	# those still open (cached for reuse), counted by the kernel.
	open_now=$(ss -Htn state established "( dport = :$SINK_PORT )" 2>/dev/null | wc -l)
	conns=$(($(sink_sessions "$SINK_OUT") - sess0 + open_now))
	RESULTS="$RESULTS$(awk -v n="$name" -v m="$n" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
		-v cpu="$(((c1 - c0) * 100 / HZ))" -v scpu="$(((s1 - s0) * 100 / HZ))" \
		-v conns="$conns" 'BEGIN {
		s = t2 - t0
		printf "%s %d %.2f %.2f %.1f %.2f %.2f %d", n, m, t1 - t0, s, (s > 0 ? m / s : 0),
			cpu / 100, scpu / 100, conns }')
"
}

arrived() { echo $(($(sink_count "$SINK_OUT") - base)); }

# ---------------------------------------------------------------- tern
# tern_conf FILE PORT ROUTE_LINES: the benchmark configuration.
tern_conf() {
	cat >"$1" <<-EOF
	hostname bench.test
	listen 127.0.0.1:$2
	spool $DIR/tern/spool
	relay_networks 127.0.0.0/8
	max_connections 200
	max_connections_per_ip 100
	max_message_size 10M
	max_relay_connections 100
	max_relay_connections_per_domain $RELAY_CONCURRENCY
	user_smtp tern-smtp
	user_queue tern
	user_relay tern-relay
	$3
	EOF
}

start_dnsmasq() {
	dport=$(free_port 127.0.0.1 udp) || die "no free port for dnsmasq"
	# As root dnsmasq drops to nobody after binding. --local-ttl: tern's
	# libunbound cache may keep the answers, as a real resolver's would.
	"$DNSMASQ" -k --conf-file=/dev/null --port="$dport" --listen-address=127.0.0.1 \
		--bind-interfaces --no-resolv --no-hosts --local=/test/ \
		--pid-file="$DIR/dnsmasq.pid" --local-ttl=3600 \
		--mx-host="$DEST,mx.$DEST,10" --host-record="mx.$DEST,$SINK_IP" \
		>"$DIR/dnsmasq.log" 2>&1 </dev/null &
	DNS_PID=$!
	sleep 0.2
	alive "$DNS_PID" || { cat "$DIR/dnsmasq.log" >&2; die "dnsmasq did not start"; }
}

ROUTE_USED=""
bench_tern() {
	port=$(free_port 127.0.0.1)
	mkdir -p "$DIR/tern"
	start_sink tern
	conf=$DIR/tern/tern.conf
	if [ "$ROUTE" != mx ]; then
		tern_conf "$conf" "$port" "$(printf '%s\n' "route $DEST {" \
			"    smarthost [$SINK_IP]:$SINK_PORT" "}")"
		if "$TERN" check-config -c "$conf" >"$DIR/tern/check-smarthost.out" 2>&1; then
			ROUTE_USED="smarthost [$SINK_IP]:$SINK_PORT"
		elif [ "$ROUTE" = smarthost ]; then
			cat "$DIR/tern/check-smarthost.out" >&2
			die "this tern does not accept a smarthost route (ROUTE=smarthost)"
		fi
	fi
	if [ -z "$ROUTE_USED" ]; then
		start_dnsmasq
		tern_conf "$conf" "$port" "$(printf '%s\n' "resolver 127.0.0.1:$dport" \
			"allow_loopback_mx yes" "relay_port $SINK_PORT")"
		"$TERN" check-config -c "$conf" >/dev/null ||
			die "tern rejects the benchmark configuration"
		ROUTE_USED="MX lookup via dnsmasq 127.0.0.1:$dport ($DEST MX 10 mx.$DEST = $SINK_IP), relay_port $SINK_PORT"
	fi
	echo "bench: tern route to $DEST: $ROUTE_USED" >&2
	# The real lookup, as the relay will do it: proves the route (and that
	# dnsmasq answers) before the clock starts.
	i=0
	until "$TERN" route "user@$DEST" -c "$conf" >"$DIR/tern/route.out" 2>&1; do
		i=$((i + 1))
		[ "$i" -lt 50 ] || { cat "$DIR/tern/route.out" >&2; die "tern route user@$DEST fails"; }
		sleep 0.2
	done
	start_tern "$conf" "$port"
	i=0
	until grep -q 'relay event=ready' "$DIR/tern/tern.log"; do
		i=$((i + 1))
		[ "$i" -lt 100 ] || { tail -n 20 "$DIR/tern/tern.log" >&2; die "tern's relay never logged event=ready"; }
		sleep 0.1
	done
	run tern "$port" "$DIR/tern/tern.log" "$TERN_PID"
	end_tern
	stop_child "$SINK_PID"
	SINK_PID=""
	stop_child "$DNS_PID"
	DNS_PID=""
	log=$DIR/tern/tern.log
	# Every relay attempt is one line with its state: anything but
	# delivered (a deferral, a retry) is worth knowing even when every
	# message arrived in the end.
	TERN_STATES=$(grep -o '^.*relay id=.* state=[a-z]*' "$log" | sed 's/.* state=//' |
		sort | uniq -c | awk '{ printf "%s%s=%s", sep, $2, $1; sep = " " }')
	echo "bench: tern relay attempts by state: ${TERN_STATES:-none}" >&2
	# The sink only counts; tern's log names each message relayed.
	twice=$(grep ' relay id=.* state=delivered' "$log" |
		sed 's/.* relay id=\([^ ]*\) rcpt=\([^ ]*\) .*/\1 \2/' | sort | uniq -d | wc -l)
	if [ "$twice" -gt 0 ]; then
		echo "bench: tern: $twice recipients logged as delivered more than once" >&2
		FAILED="$FAILED; tern: $twice recipients relayed twice (log)"
	fi
	tern_problems ' (warn|error): |^\[(warn|err)\]|reason=error|state=(deferred|failed|temporary|permanent)|fatal|panic|Sanitizer|Assertion' \
		"$log"
}

# ---------------------------------------------------------------- Postfix
# A private instance (bench/lib.sh): nothing is delivered locally, every
# recipient is relayed to relayhost = [SINK_IP]:SINK_PORT (brackets: no MX
# lookup).
bench_postfix() {
	port=$(free_port 127.0.0.1)
	start_sink postfix
	postfix_instance "$port" "relays everything from 127.0.0.0/8 to the sink; default durability and concurrency." <<-EOF
	local_recipient_maps =
	relayhost = [$SINK_IP]:$SINK_PORT
	EOF
	start_postfix "$port"
	run postfix "$port" "$DIR/postfix/postfix.log" "$(postfix_master)"
	stop_postfix
	stop_child "$SINK_PID"
	SINK_PID=""
	log=$DIR/postfix/postfix.log
	PFX_STATES=$(grep -o ' status=[a-z]*' "$log" | sed 's/.*=//' | sort | uniq -c |
		awk '{ printf "%s%s=%s", sep, $2, $1; sep = " " }')
	echo "bench: Postfix deliveries by status: ${PFX_STATES:-none}" >&2
	postfix_problems 'warning|error|fatal|panic|status=(deferred|bounced)' "$log"
}

TERN_STATES=""
TERN_SPLIT=""
PFX_STATES=""
for sys in $SYSTEMS; do
	"bench_$sys"
done

# ---------------------------------------------------------------- report
echo
echo "relay: smtp-source -> MTA -> smtp-sink, $MESSAGES messages of $SIZE bytes, $SESSIONS parallel sessions${SMTP_SOURCE_OPTS:+, options $SMTP_SOURCE_OPTS}"
has tern && echo "tern route: $ROUTE_USED; max_relay_connections_per_domain $RELAY_CONCURRENCY"
has tern && echo "tern CPU by worker: $TERN_SPLIT"
has postfix && echo "postfix route: relayhost [$SINK_IP] (default_destination_concurrency_limit 20)"
echo "seconds: from the start of smtp-source until the sink has received every message"
echo "accept-s: until smtp-source had its last 250"
echo "cpu-s: CPU time of the MTA's processes (user + system) during the run; sink-s: the sink's"
echo "conns: SMTP connections the MTA opened to the sink (fewer: more reuse)"
result_table system:-8:s messages:9:d accept-s:9:.2f seconds:9:.2f msg/s:8:.0f \
	cpu-s:7:.2f sink-s:7:.2f conns:6:d

if [ -n "$FAILED" ]; then
	echo "bench: FAILED:${FAILED#;}" >&2
	exit 1
fi
exit 0
