/*
 * auth.h - password verification for the SMTP server's AUTH, behind
 * smtp_auth_ops (smtp_session.h), in the smtp process.
 *
 * Hashes come from passwd_file (config.h, read at load). crypt_r() is
 * slow on purpose (yescrypt, SHA-512 crypt), so it runs in worker threads
 * and the answer comes back to the event loop through an eventfd; the
 * loop never waits for a hash. A user that does not exist (or a locked
 * account) still costs one hash computation with the same parameters as
 * a real one, and hashes are compared in constant time, so neither
 * timing nor replies tell whether a user exists.
 *
 * Failures are counted per client (peer_key.h: IPv4 address, IPv6
 * network of client_ipv6_prefix bits) in a fixed-size table, so peers
 * cannot make it grow: each failure is answered after
 * auth_failure_delay, doubled for every earlier failure within
 * auth_throttle_time (up to 16 times, and at most half of
 * timeout_command), on a timer; the
 * auth_max_failures-th is SMTP_AUTH_LOCKED, and the address is then
 * refused (throttled()) for auth_throttle_time.
 *
 * An attempt counts as a failure from the moment it is queued and is
 * given back only when it succeeds: a client that gives up (or resets
 * the connection) before the answer has still failed once. A cancelled
 * job that no worker has taken leaves the queue at once, so it costs no
 * hash. At most AUTH_PENDING_MAX verifications wait or run at a time,
 * AUTH_PENDING_PER_ADDR of them for one address; beyond that start()
 * answers SMTP_AUTH_TEMPFAIL (454 4.7.0, RFC 4954 6) without hashing.
 */
#ifndef TERN_AUTH_H
#define TERN_AUTH_H

#include "smtpd/smtp_session.h"

struct auth;
struct config;
struct event_base;

#define AUTH_THREADS 2           /* hash workers */
#define AUTH_TABLE_BUCKETS 1024  /* per-address failure table ... */
#define AUTH_TABLE_WAYS 4        /* ... 4096 addresses, LRU per bucket */
#define AUTH_PENDING_MAX 64      /* verifications queued or hashing */
#define AUTH_PENDING_PER_ADDR 4  /* ... of them for one address (key) */

/* The verifier for cfg's passwd_file on base; starts the workers.
 * cfg must outlive it. Never NULL (aborts on failure). */
struct auth *auth_new(struct event_base *base, const struct config *cfg);

/* Stop the workers and free. Every verification must have completed
 * or been cancelled. Sets *a to NULL. */
void auth_free(struct auth **a);

/* smtp_auth_ops over a struct auth (its ctx). */
extern const struct smtp_auth_ops auth_ops;

#endif
