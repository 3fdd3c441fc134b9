#!/bin/sh
# deps.sh - install the Debian packages tern builds, tests and benchmarks
# with, when they are missing. Every tool a test runs is here (strace for
# the durability and socket-mode tests, mount for the small-filesystem
# test, util-linux for setpriv/runuser/unshare): in CI a test that skips
# for want of one fails (tests/run.py --strict). As root it installs them (and creates the
# unprivileged system users tern drops to); otherwise it lists what is
# missing and fails.
set -eu

PACKAGES="gcc make pkg-config libc6-dev libevent-dev libcmocka-dev libcrypt-dev
python3 python3-aiosmtpd python3-dnspython swaks dnsmasq-base postfix
libunbound-dev libidn2-dev libssl-dev openssl ca-certificates libio-socket-ssl-perl
iproute2 procps strace mount util-linux clang libclang-rt-14-dev zlib1g-dev"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing Debian packages:$missing" >&2
		echo "deps: run 'make deps' as root, or: apt-get install$missing" >&2
		exit 1
	fi
	echo "deps: installing$missing"
	# Postfix asks a debconf question; answer it (we never use the system instance).
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null || apt-get update
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

# The users tern drops to when started as root (config: user_smtp, user_queue).
if [ "$(id -u)" = 0 ]; then
	for u in tern tern-smtp tern-relay; do
		if ! getent passwd "$u" >/dev/null; then
			useradd --system --no-create-home --home-dir /nonexistent \
			    --shell /usr/sbin/nologin "$u"
		fi
	done
fi
exit 0
