# lib.sh - shared by bench/smtp-source.sh and bench/relay.sh (sourced).
#
# The caller sets MESSAGES, SIZE, SESSIONS, STALL, SMTP_SOURCE,
# SMTP_SOURCE_OPTS, SYSTEMS, TERN, POSTFIX, POSTCONF and PY, then sources
# this file and calls bench_setup PREFIX. It may define stop_extra (run by
# the clean-up after tern and Postfix are stopped) to stop what else it
# started.
# shellcheck shell=sh disable=SC2317,SC2034 # functions run from the trap; variables the callers read

die() { echo "bench: $*" >&2; exit 1; }
has() { case " $SYSTEMS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- clean-up
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

# A plain child of this script (smtp-sink, dnsmasq): stop it and reap it.
stop_child() {
	[ -n "$1" ] || return 0
	stop_pids "$1" || :
	wait "$1" 2>/dev/null || :
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

stop_extra() { :; }

cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$SRC_PID" ]; then stop_pids "$SRC_PID" || :; fi
	stop_tern
	stop_postfix
	stop_extra
	if [ "${KEEP:-0}" = 1 ]; then
		echo "bench: kept $DIR" >&2
	else
		rm -rf "$DIR"
	fi
	exit "$rc"
}

# bench_setup PREFIX: the temporary directory /tmp/PREFIX.XXXXXX (DIR), the
# state the clean-up reads, and the traps that run it.
bench_setup() {
	DIR=$(mktemp -d "/tmp/$1.XXXXXX")
	# tern's workers, Postfix's daemons, dnsmasq and smtp-sink drop
	# privileges: they must be able to traverse the temporary directory.
	chmod 755 "$DIR"
	TERN_PID=""
	TERN_BAD=""
	SRC_PID=""
	PFX_STARTED=""
	PFX_CONF=$DIR/postfix/etc
	PFX_QUEUE=$DIR/postfix/queue
	RESULTS=""
	FAILED=""
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }

# free_port ADDR [udp]: a TCP port free on ADDR (and UDP too with "udp").
free_port() {
	"$PY" - "$1" "${2:-}" <<'EOF'
import socket, sys
addr, udp = sys.argv[1], sys.argv[2] == "udp"
for _ in range(100):
    t = socket.socket()
    t.bind((addr, 0))
    port = t.getsockname()[1]
    if udp:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((addr, port))
        except OSError:
            t.close()
            continue
        u.close()
    t.close()
    print(port)
    sys.exit(0)
sys.exit(1)
EOF
}

# wait_smtp ADDR PORT: until an SMTP server greets there; say QUIT politely
# so that the probe leaves no error in the server's log.
wait_smtp() {
	"$PY" - "$1" "$2" <<'EOF'
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), 2) as s:
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

# CPU time (in clock ticks) used so far by process $1 and its children,
# living or already reaped: utime+stime+cutime+cstime of /proc/PID/stat.
# tern's workers and all of Postfix's daemons are children of one process.
cpu_ticks() {
	for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
		sed 's/.*) //' "/proc/$p/stat" 2>/dev/null || :
	done | awk '{ t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- a run
# send_and_wait NAME PORT RCPT COUNT: smtp-source sends to RCPT via
# 127.0.0.1:PORT; then the command COUNT (messages arrived so far) is polled
# until it says MESSAGES, or until nothing new has arrived for STALL
# seconds. Sets t0 (start), t1 (smtp-source done), t2 (end) and n (arrived).
send_and_wait() {
	name=$1 port=$2 rcpt=$3 count=$4
	t0=$(now)
	src_rc=0
	# shellcheck disable=SC2086
	"$SMTP_SOURCE" $SMTP_SOURCE_OPTS -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" \
		-M client.bench.test -f sender@bench.test -t "$rcpt" \
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
		n=$($count)
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
}

# check_arrived NAME LOG COUNT WHERE EXTRA: after send_and_wait, notes in
# FAILED the messages missing or, a second later, arrived more than once;
# WHERE says how a message arrives ("delivered"), EXTRA is the printf
# format that reports %d messages too many.
check_arrived() {
	if [ "$n" -lt "$MESSAGES" ]; then
		echo "bench: $1: only $n of $MESSAGES messages $4" \
			"(nothing new for ${STALL}s); last log lines:" >&2
		tail -n 20 "$2" >&2 || :
		FAILED="$FAILED; $1: $((MESSAGES - n)) of $MESSAGES messages missing"
	else
		# Not timed: a second later, nothing more may have arrived.
		sleep 1
		extra=$(($($3) - MESSAGES))
		if [ "$extra" -gt 0 ]; then
			# shellcheck disable=SC2059
			echo "bench: $1: $(printf "$5" "$extra")" >&2
			FAILED="$FAILED; $1: $extra duplicate deliveries"
		fi
	fi
}

# result_table COLUMN...: RESULTS (a line a system, fields as the columns)
# as a table, then the ratio of tern's and Postfix's msg/s (5th field). A
# COLUMN is NAME:WIDTH:CONVERSION, e.g. "msg/s:8:.0f" prints "%8.0f".
result_table() {
	printf '%s' "$RESULTS" | awk -v spec="$*" '
	BEGIN {
		n = split(spec, s, " ")
		for (i = 1; i <= n; i++) {
			split(s[i], f, ":")
			w[i] = f[2]
			c[i] = f[3]
			printf "%s%" w[i] "s", (i > 1 ? " " : ""), f[1]
		}
		printf "\n"
	}
	{
		for (i = 1; i <= n; i++)
			printf "%s%" w[i] c[i], (i > 1 ? " " : ""), $i
		printf "\n"
		r[$1] = $5
	}
	END {
		if (r["tern"] > 0 && r["postfix"] > 0)
			printf "ratio tern/postfix: %.2f\n", r["tern"] / r["postfix"]
		else
			print "ratio tern/postfix: n/a"
	}'
}

# ---------------------------------------------------------------- tern
# start_tern CONF PORT: tern serve in the background (TERN_PID), logging to
# $DIR/tern/tern.log, until it greets on 127.0.0.1:PORT.
start_tern() {
	"$TERN" serve -c "$1" >"$DIR/tern/tern.log" 2>&1 &
	TERN_PID=$!
	if ! wait_smtp 127.0.0.1 "$2"; then
		tail -n 20 "$DIR/tern/tern.log" >&2
		die "tern did not start listening on 127.0.0.1:$2"
	fi
}

# end_tern: stop tern, noting in FAILED when it did not stop cleanly.
end_tern() {
	stop_tern
	[ -z "$TERN_BAD" ] || FAILED="$FAILED; tern: did not stop cleanly on SIGTERM"
}

# tern_problems PATTERN LOG: problems tern logged are worth knowing even
# when every message arrived.
tern_problems() {
	if grep -Eq "$1" "$2"; then
		echo "bench: tern logged problems ($(grep -Ec "$1" "$2") lines; first 10):" >&2
		grep -E "$1" "$2" | head -n 10 | cut -c1-300 >&2
	fi
}

# ---------------------------------------------------------------- Postfix
# postfix_instance PORT DESCRIPTION: a private instance with its own config,
# queue and data directories; the system instance (if any) is neither read
# nor touched: `postfix -c DIR` run by root needs no
# alternate_config_directories entry in the default main.cf (only the
# set-gid postdrop/postqueue would). main.cf is written from scratch
# (Debian's "No configuration" install has none), its settings common to
# both benchmarks followed by the caller's (on standard input); master.cf
# is the packaged one with smtpd moved to 127.0.0.1:PORT and chroot turned
# off (a chroot would need copies of /etc files in our queue dir).
postfix_instance() {
	# data_directory is left for Postfix to create: postfix must own it.
	mkdir -p "$PFX_CONF" "$PFX_QUEUE"
	master_cf=/etc/postfix/master.cf
	[ -r "$master_cf" ] || master_cf=/usr/share/postfix/master.cf.dist
	cp "$master_cf" "$PFX_CONF/master.cf"
	{
		cat <<-EOF
		# Private Postfix instance for bench/$(basename "$0"): $2
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
		alias_maps =
		alias_database =
		smtpd_recipient_restrictions = permit_mynetworks, reject
		smtpd_relay_restrictions = permit_mynetworks, reject
		message_size_limit = 10485760
		default_process_limit = 100
		smtpd_client_connection_count_limit = 100
		maillog_file = $DIR/postfix/postfix.log
		maillog_file_prefixes = /var, /dev/stdout, $DIR/postfix/
		EOF
		cat
	} >"$PFX_CONF/main.cf"
	"$POSTCONF" -c "$PFX_CONF" -M -X smtp/inet
	"$POSTCONF" -c "$PFX_CONF" -M "127.0.0.1:$1/inet=127.0.0.1:$1 inet n - n - - smtpd"
	"$POSTCONF" -c "$PFX_CONF" -F '*/*/chroot = n'
}

# start_postfix PORT: check and start the instance, until it greets on
# 127.0.0.1:PORT.
start_postfix() {
	"$POSTFIX" -c "$PFX_CONF" check >"$DIR/postfix/check.out" 2>&1 ||
		{ cat "$DIR/postfix/check.out" >&2; die "postfix check failed"; }
	PFX_STARTED=1
	"$POSTFIX" -c "$PFX_CONF" start >"$DIR/postfix/start.out" 2>&1 ||
		{ cat "$DIR/postfix/start.out" "$DIR/postfix/postfix.log" >&2; die "postfix start failed"; }
	if ! wait_smtp 127.0.0.1 "$1"; then
		tail -n 20 "$DIR/postfix/postfix.log" >&2 || :
		die "Postfix did not start listening on 127.0.0.1:$1"
	fi
}

# postfix_master: the PID of the running instance's master.
postfix_master() { tr -dc 0-9 <"$PFX_QUEUE/pid/master.pid"; }

# postfix_problems PATTERN LOG. (A VM's "file system clock is N seconds
# ahead" warning is harmless.)
postfix_problems() {
	if grep -E "$1" "$2" | grep -Evq 'clock is .* ahead|resetting file time'; then
		echo "bench: Postfix logged problems (first 10 lines):" >&2
		grep -E "$1" "$2" | head -n 10 >&2
	fi
}
