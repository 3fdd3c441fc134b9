/*
 * smtp_session.h - the SMTP server protocol engine (RFC 5321 and the
 * extensions tern offers), one instance per client connection.
 *
 * The engine is pure protocol: it reads octets from an input evbuffer,
 * appends replies to an output evbuffer, and hands messages to the queue
 * through queue_client.h. It owns no socket, timer or file, so the server
 * (smtp_server.c) wires it to the network and unit tests or fuzzers drive
 * it with plain evbuffers and a fake queue.
 */
#ifndef TERN_SMTP_SESSION_H
#define TERN_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct config_listener;
struct evbuffer;
struct queue_client_ops;
struct smtp_session;

/* Longest command line accepted, CRLF included. RFC 5321 4.5.3.1.4 sets
 * 512; extensions raise it for MAIL and RCPT (RFC 3461 section 5 requires
 * at least 1036 with DSN), so those two get SMTP_SESSION_PARAM_LINE_MAX. */
#define SMTP_SESSION_LINE_MAX 512
#define SMTP_SESSION_PARAM_LINE_MAX 2048
/* Replies queued but unread by the client beyond this pause input (a client
 * that pipelines without reading cannot make us buffer without bound). */
#define SMTP_SESSION_OUTPUT_MAX (64 * 1024)
/* Longest AUTH response line, CRLF included (RFC 4954 4 calls 12288
 * octets sufficient for deployed mechanisms). */
#define SMTP_SESSION_AUTH_LINE_MAX 12288

struct smtp_session_client {
	const char *addr;     /* peer IP as text */
	unsigned port;
	bool relay_ok;        /* peer is in relay_networks */
	bool local;           /* local submission (submit_socket), addr "local" */
	unsigned long uid;    /* if local: the peer's uid (SO_PEERCRED) */
	/* the listener that accepted the connection (its policy: AUTH, who
	 * may relay); NULL: config_default_listener() */
	const struct config_listener *listener;
};

/* What the session asks of the transport. */
struct smtp_session_io {
	/* Arm the input deadline ms milliseconds from now, replacing the
	 * one before; 0 disarms it (the session waits for the queue, a
	 * resolver or a verifier, not for the client). Input does not
	 * extend it: the session arms a new one for each command line, and
	 * during message data as octets arrive (min_data_rate). When it
	 * passes, call smtp_session_timeout(). */
	void (*set_deadline)(void *arg, unsigned ms);
	/* Close the connection once the output is flushed; the session is
	 * done and must be freed by the transport outside its callbacks. */
	void (*close)(void *arg);
	/* The session went on after a queue answer (it may have written
	 * replies, or be idle waiting for input). May be NULL. */
	void (*progress)(void *arg);
	/* The client asked for STARTTLS and was told 220: flush that reply,
	 * discard every octet of input already received (RFC 3207 5, the
	 * CVE-2011-0411 class), start the server side of the handshake, and
	 * report its success with smtp_session_tls_started() or its failure
	 * by closing. Until then the session touches neither buffer. May be
	 * NULL when the transport has no TLS. */
	void (*starttls)(void *arg);
};

/*
 * Optional check of a foreign recipient domain at RCPT (RFC 7505 3: a null
 * MX domain is refused at once with 556 5.1.10; the engine can also refuse
 * a domain the checker reports as nonexistent, 550 5.1.2). Anything else,
 * including a temporary failure or a slow resolver, lets the recipient
 * through to the queue's retries.
 */
enum smtp_domain_verdict {
	SMTP_DOMAIN_OK,
	SMTP_DOMAIN_NULL_MX,
	SMTP_DOMAIN_NXDOMAIN,
};
typedef void (*smtp_domain_cb)(void *arg, enum smtp_domain_verdict v);
struct smtp_domain_check_ops {
	/* Returns a handle; cb runs later from the loop, never inside. */
	void *(*start)(void *ctx, const char *domain, smtp_domain_cb cb, void *arg);
	void (*cancel)(void *ctx, void *handle);
};

/*
 * Password verification for AUTH (RFC 4954), done outside the engine
 * (auth.h: worker threads, per-address failure throttling). start()
 * copies what it needs (the caller wipes its copy of the password at
 * once) and returns a handle; cb runs later from the event loop, never
 * inside start(), and after a failure only once the failure delay has
 * passed. After cancel() no callback runs.
 */
enum smtp_auth_verdict {
	SMTP_AUTH_OK,         /* 235 */
	SMTP_AUTH_FAILED,     /* 535 5.7.8 */
	SMTP_AUTH_LOCKED,     /* too many failures from this address: 421 */
	SMTP_AUTH_TEMPFAIL,   /* 454 4.7.0 */
};
typedef void (*smtp_auth_cb)(void *arg, enum smtp_auth_verdict v);
struct smtp_auth_ops {
	void *(*start)(void *ctx, const char *client_addr, const char *user,
	    size_t ulen, const char *pass, size_t plen, smtp_auth_cb cb,
	    void *arg);
	void (*cancel)(void *ctx, void *handle);
	/* true while client_addr is refused after too many failures */
	bool (*throttled)(void *ctx, const char *client_addr);
};

/*
 * Create a session, when the connection is accepted: its greeting phase
 * (timeout_greeting until HELO/EHLO) starts now, so an implicit-TLS
 * handshake before smtp_session_start() counts against it. in/out are
 * the connection's buffers (not owned). cfg, client strings and ops must
 * outlive the session.
 */
struct smtp_session *smtp_session_new(const struct config *cfg,
    const struct smtp_session_client *client, struct evbuffer *in,
    struct evbuffer *out, const struct smtp_session_io *io, void *io_arg,
    const struct queue_client_ops *queue, void *queue_ctx);

/* Check foreign domains at RCPT with ops (ctx passed back). */
void smtp_session_set_domain_check(struct smtp_session *s,
    const struct smtp_domain_check_ops *ops, void *ctx);

/* Verify AUTH credentials with ops (ctx passed back). Without it, or
 * without passwd_file, or on a listener with `auth no`, AUTH is not
 * offered. Set before smtp_session_start(). */
void smtp_session_set_auth(struct smtp_session *s,
    const struct smtp_auth_ops *ops, void *ctx);

/* Offer STARTTLS (RFC 3207) in EHLO: the transport has a certificate and
 * the listener says `tls starttls`. Set before smtp_session_start(). */
void smtp_session_set_starttls(struct smtp_session *s, bool offer);

/*
 * The TLS handshake succeeded: in/out are the buffers of the protected
 * connection from now on, desc says "VERSION:CIPHER" (tls_describe()).
 * After STARTTLS the session forgets everything it learnt before (RFC
 * 3207 4.2: HELO name, AUTH, transaction) and waits for EHLO; with
 * implicit TLS (RFC 8314) call it before smtp_session_start().
 */
void smtp_session_tls_started(struct smtp_session *s, struct evbuffer *in,
    struct evbuffer *out, const char *desc);

/* Send the greeting (or 421 if the client's address is throttled). */
void smtp_session_start(struct smtp_session *s);

/* Consume what input allows: call on every read event and whenever output
 * drained or the queue is no longer congested. */
void smtp_session_process(struct smtp_session *s);

/* The input deadline passed: 421 4.4.2 and close (RFC 5321 4.5.3.2). */
void smtp_session_timeout(struct smtp_session *s);

/* The server is shutting down: 421 4.3.2 and close. */
void smtp_session_shutdown(struct smtp_session *s);

/* true once the session asked to close; it reads nothing further. */
bool smtp_session_closing(const struct smtp_session *s);

/* true while the session waits for the queue (a reply is still due). */
bool smtp_session_waiting(const struct smtp_session *s);

/* The session's log identifier. */
const char *smtp_session_id(const struct smtp_session *s);

/* Abort any queue transaction and free. Sets *s to NULL. */
void smtp_session_free(struct smtp_session **s);

#endif
