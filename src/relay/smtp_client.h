/*
 * smtp_client.h - the SMTP client protocol engine (RFC 5321 and the
 * extensions tern uses when relaying), one instance per outbound
 * connection. It is smtp_session's mirror image.
 *
 * The engine is pure protocol: it reads the server's replies from an input
 * evbuffer and appends commands and message content to an output evbuffer.
 * It owns no socket, timer, file or DNS query: the delivery process
 * connects, wires the buffers to a bufferevent, arms the timer the engine
 * asks for, and tells the engine about end of file. Unit tests and the
 * fuzzer drive it with plain evbuffers and scripted replies.
 *
 * Life of a connection:
 *
 *   c = smtp_client_new(...); smtp_client_start(c);     (TCP is up)
 *   smtp_client_send(c, env, idx, n, body, len, cb, arg);
 *   smtp_client_process(c);
 *       ... cb(arg, result) ... (from process/timeout/eof, never from send)
 *   smtp_client_send(...) again to reuse the connection, or
 *   smtp_client_quit(c); smtp_client_process(c);
 *       ... io->close(arg, why) ... then smtp_client_free(&c) outside it.
 *
 * A transaction may be handed in before the greeting has arrived: it runs
 * as soon as EHLO/HELO is done. At most one transaction at a time.
 *
 * Decisions (see smtp_client.c for the RFC sections):
 * - EHLO, and HELO only when EHLO gets a 5xx (RFC 5321 4.1.4, 3.2).
 *   A greeting other than 2xx, a refused HELO, a 4xx to EHLO, and any
 *   malformed reply end the connection; the transaction's recipients are
 *   then temporary failures with result->error saying why, so the caller
 *   moves on to the next MX (RFC 5321 5.1) or retries later. A 5xx
 *   greeting is reported the same way (error GREETING, code 554): the
 *   caller decides whether it was the last MX and the failure is final.
 * - 8-bit content: a body with any octet >= 0x80 goes only to a peer that
 *   offers 8BITMIME (or SMTPUTF8, whose servers must accept 8-bit, RFC 6531
 *   3.1), with BODY=8BITMIME. To any other peer it FAILS permanently with
 *   5.6.3: tern does not convert to quoted-printable (RFC 6152 3 allows
 *   "convert or bounce"; converting would break DKIM signatures, and
 *   sending 8-bit anyway as Postfix does breaks the RFC). A message marked
 *   BODY=8BITMIME whose octets are all 7-bit is sent without BODY= to such
 *   a peer.
 * - SMTPUTF8 is needed when an envelope address of the transaction is not
 *   ASCII, or the message was received with SMTPUTF8 and its header has an
 *   octet >= 0x80. Needed and offered: the MAIL parameter is sent; needed
 *   and not offered: permanent 5.6.7 (RFC 6531 3.4, 3.5). Not needed: not
 *   sent (RFC 6531 3.4 SHOULD NOT).
 * - SIZE: a message larger than the peer's limit fails permanently with
 *   5.3.4 before MAIL (RFC 1870).
 * - DSN parameters (RET, ENVID, NOTIFY, ORCPT) only when the peer offers
 *   DSN, passed through as received (RFC 3461 5.2.1); ORCPT is added for an
 *   ASCII recipient that arrived without one (5.2.1(d) MAY). With a peer
 *   without DSN, result->peer_dsn is false: the caller owes the "relayed"
 *   DSN of RFC 3461 5.2.2(b).
 * - AUTH (RFC 4954), only when the caller gives credentials (the relay
 *   does so only on a connection to its route's smarthost): after EHLO,
 *   before any transaction, with PLAIN (RFC 4616, initial response) when
 *   offered, else LOGIN (two 334 challenges). 235 goes on; a 5xx (535
 *   bad credentials) fails the transaction's open recipients PERMANENTLY
 *   with the server's reply, stage AUTH; a 4xx, a peer without AUTH PLAIN
 *   or LOGIN (4.7.0), or HELO instead of EHLO, fails them temporarily.
 *   Either way the connection ends (QUIT) with error AUTH. The password
 *   is never logged.
 * - STARTTLS (RFC 3207) after EHLO when params.tls asks for it and the
 *   peer offers it: "STARTTLS", 220, then io->starttls() and, once the
 *   transport calls smtp_client_tls_done(), EHLO again with every
 *   capability forgotten (RFC 3207 4.2). With SMTP_CLIENT_TLS_MAY a peer
 *   without STARTTLS, or a refusal of it, leaves the connection in clear
 *   text; with SMTP_CLIENT_TLS_MUST either ends the connection with error
 *   TLS (4.7.10), and so does any failed handshake: the caller moves on
 *   to the next server. AUTH waits for TLS unless params.auth_plaintext.
 * - CHUNKING is recognised but not used: DATA with dot-stuffing is always
 *   used.
 * - The content is sent with every line ending made CRLF (a bare CR or LF
 *   becomes CRLF), dot-stuffed (RFC 5321 4.5.2), ended by CRLF "." CRLF;
 *   so tern never emits an SMTP smuggling sequence whatever is stored.
 */
#ifndef TERN_SMTP_CLIENT_H
#define TERN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct envelope;
struct evbuffer;
struct smtp_client;

/* Longest reply line accepted, CRLF included. RFC 5321 4.5.3.1.5 says 512;
 * the slack is for real servers' long EHLO lines. Longer is a protocol
 * error. */
#define SMTP_CLIENT_LINE_MAX 2048
/* Most lines in one reply (a long EHLO list is about 20). */
#define SMTP_CLIENT_REPLY_LINES_MAX 64
/* Reply text kept per result, NUL included. */
#define SMTP_CLIENT_TEXT_MAX 512
/* Most recipients in one transaction (RFC 5321 4.5.3.1.8 asks servers for
 * at least 100; a server refusing more says 452 and those are retried). */
#define SMTP_CLIENT_RCPTS_MAX 1000
/* Default output high-water mark: commands and content are written while
 * the output buffer holds less; the caller calls smtp_client_process()
 * again when it has drained. */
#define SMTP_CLIENT_OUTPUT_HIGH (64 * 1024)

/* EHLO keywords understood (smtp_client_caps()). */
enum smtp_client_cap {
	SMTP_CLIENT_CAP_ESMTP = 1 << 0,       /* EHLO was accepted */
	SMTP_CLIENT_CAP_PIPELINING = 1 << 1,  /* RFC 2920 */
	SMTP_CLIENT_CAP_SIZE = 1 << 2,        /* RFC 1870 */
	SMTP_CLIENT_CAP_8BITMIME = 1 << 3,    /* RFC 6152 */
	SMTP_CLIENT_CAP_SMTPUTF8 = 1 << 4,    /* RFC 6531 */
	SMTP_CLIENT_CAP_DSN = 1 << 5,         /* RFC 3461 */
	SMTP_CLIENT_CAP_CHUNKING = 1 << 6,    /* RFC 3030 */
	SMTP_CLIENT_CAP_STARTTLS = 1 << 7,    /* RFC 3207 */
	SMTP_CLIENT_CAP_ENHANCEDSTATUSCODES = 1 << 8, /* RFC 2034 */
	SMTP_CLIENT_CAP_AUTH_PLAIN = 1 << 9,  /* RFC 4954 AUTH, RFC 4616 */
	SMTP_CLIENT_CAP_AUTH_LOGIN = 1 << 10, /* RFC 4954 AUTH, LOGIN */
};

/* Where a result came from: the command whose reply decided it, or what
 * the engine was doing when the connection failed. */
enum smtp_client_stage {
	SMTP_CLIENT_STAGE_LOCAL,     /* decided here, no command sent */
	SMTP_CLIENT_STAGE_GREETING,
	SMTP_CLIENT_STAGE_EHLO,
	SMTP_CLIENT_STAGE_HELO,
	SMTP_CLIENT_STAGE_RSET,
	SMTP_CLIENT_STAGE_MAIL,
	SMTP_CLIENT_STAGE_RCPT,
	SMTP_CLIENT_STAGE_DATA,      /* reply to DATA */
	SMTP_CLIENT_STAGE_BODY,      /* while sending the content */
	SMTP_CLIENT_STAGE_DOT,       /* reply to the final "." */
	SMTP_CLIENT_STAGE_QUIT,
	SMTP_CLIENT_STAGE_AUTH,      /* AUTH and its challenges (RFC 4954) */
	SMTP_CLIENT_STAGE_STARTTLS,  /* STARTTLS and the handshake (RFC 3207) */
};

/* Connection-level outcome. NONE: the connection is still usable. */
enum smtp_client_error {
	SMTP_CLIENT_ERR_NONE,
	SMTP_CLIENT_ERR_GREETING,  /* non-2xx or malformed greeting: next MX */
	SMTP_CLIENT_ERR_HELO,      /* EHLO 4xx, or EHLO 5xx and HELO refused */
	SMTP_CLIENT_ERR_PROTOCOL,  /* malformed, over-long or unexpected reply */
	SMTP_CLIENT_ERR_SHUTDOWN,  /* the server said 421 (RFC 5321 3.8) */
	SMTP_CLIENT_ERR_TIMEOUT,   /* a 4.5.3.2 timeout fired */
	SMTP_CLIENT_ERR_LOST,      /* connection closed or broken */
	SMTP_CLIENT_ERR_AUTH,      /* AUTH refused or impossible: the
	                            * recipients are decided (stage AUTH) */
	SMTP_CLIENT_ERR_TLS,       /* TLS required but not offered or
	                            * refused, or the handshake failed */
};

enum smtp_client_status {
	SMTP_CLIENT_DELIVERED,     /* 2xx to the final "." */
	SMTP_CLIENT_TEMPFAIL,      /* retry later (or at the next MX) */
	SMTP_CLIENT_PERMFAIL,      /* final: bounce */
};

/* A server reply, or the engine's own diagnosis (code 0). */
struct smtp_client_reply {
	unsigned code;            /* 200..599, or 0 when no reply applies */
	/* RFC 3463 "class.subject.detail": the server's, else derived
	 * ("4.0.0"/"5.0.0"), else the engine's own for local decisions;
	 * "" for a 3yz reply (RFC 3463 has no class 3; such a reply never
	 * decides a recipient). */
	char enhanced[16];
	/* Text of every line (without codes and the enhanced code), joined
	 * with one space, printable ASCII only ('?' for other octets), cut at
	 * SMTP_CLIENT_TEXT_MAX - 1 octets. */
	char text[SMTP_CLIENT_TEXT_MAX];
};

struct smtp_client_rcpt_result {
	size_t rcpt;                   /* index into env->rcpts */
	enum smtp_client_status status;
	enum smtp_client_stage stage;  /* which reply decided */
	struct smtp_client_reply reply;
};

struct smtp_client_result {
	/* NONE if the connection can carry another transaction. Otherwise
	 * every recipient not already decided by its own reply is TEMPFAIL. */
	enum smtp_client_error error;
	bool peer_dsn;       /* the peer offered DSN (see RFC 3461 5.2.2) */
	const struct smtp_client_rcpt_result *rcpts;  /* in rcpt_idx order */
	size_t nrcpts;
};

/* Called once per transaction. res and everything it points to live only
 * during the call. The callback may call smtp_client_send() or
 * smtp_client_quit(); it must not free the client. */
typedef void (*smtp_client_cb)(void *arg, const struct smtp_client_result *res);

/* RFC 5321 4.5.3.2 timeouts in seconds; 0 picks the default shown. */
struct smtp_client_timeouts {
	unsigned greeting;    /* 300: initial 220 (4.5.3.2.1) */
	unsigned helo;        /* 300: EHLO/HELO (not in 4.5.3.2; as MAIL) */
	unsigned mail;        /* 300: 4.5.3.2.2 */
	unsigned rcpt;        /* 300: 4.5.3.2.3 */
	unsigned data_init;   /* 120: 354 to DATA (4.5.3.2.4) */
	unsigned data_block;  /* 180: each block of content (4.5.3.2.5) */
	unsigned data_done;   /* 600: reply to "." (4.5.3.2.6) */
	unsigned rset;        /* 120: not in 4.5.3.2 */
	unsigned quit;        /* 60: not in 4.5.3.2; nothing depends on it */
};

/* STARTTLS policy of a connection. */
enum smtp_client_tls {
	SMTP_CLIENT_TLS_NO,     /* never */
	SMTP_CLIENT_TLS_MAY,    /* when offered; clear text otherwise */
	SMTP_CLIENT_TLS_MUST,   /* TLS or no transaction at all */
};

struct smtp_client_params {
	const char *helo_name;     /* our name for EHLO/HELO; required */
	const char *peer;          /* for log lines, e.g. "mx.example[192.0.2.1]" */
	struct smtp_client_timeouts timeouts;
	size_t output_high;        /* 0: SMTP_CLIENT_OUTPUT_HIGH */
	/* AUTH credentials (both or neither; at most 255 octets each, RFC
	 * 4616 2), or NULL: never authenticate. */
	const char *auth_user;
	const char *auth_password;
	/* SMTP_CLIENT_TLS_NO unless the transport has io->starttls. */
	enum smtp_client_tls tls;
	bool auth_plaintext;       /* AUTH allowed without TLS */
};

/* What the engine asks of the transport. */
struct smtp_client_io {
	/* (Re)start the input timer with this many seconds from now; 0 stops
	 * it. Called whenever the engine starts waiting for something new
	 * and whenever it made progress; when it fires, call
	 * smtp_client_timeout(). */
	void (*set_timeout)(void *arg, unsigned seconds);
	/* The engine is done: flush the output, close the connection, and
	 * free the client outside the engine's calls. why is NONE after a
	 * QUIT; smtp_client_last_reply() has the reply that ended it. */
	void (*close)(void *arg, enum smtp_client_error why);
	/* The server said 220 to STARTTLS: discard any input buffered in
	 * clear text and start the TLS handshake; report its end with
	 * smtp_client_tls_done() (never from inside this call). Until then
	 * the engine touches neither buffer. NULL: no TLS here. */
	void (*starttls)(void *arg);
};

/*
 * Create a client. in/out are the connection's buffers (not owned);
 * params' strings, io and io_arg must outlive the client.
 */
struct smtp_client *smtp_client_new(const struct smtp_client_params *params,
    struct evbuffer *in, struct evbuffer *out, const struct smtp_client_io *io,
    void *io_arg);

/* The connection is up: wait for the greeting. */
void smtp_client_start(struct smtp_client *c);

/*
 * Queue one transaction: the message body (bodylen octets, CRLF lines as
 * spooled; any line ending is normalised anyway) for the recipients
 * env->rcpts[rcpt_idx[0..n-1]]. env and body must stay valid and unchanged
 * until cb has been called; rcpt_idx is copied. The body is copied to the
 * output in pieces of about output_high octets.
 *
 * Returns 0 when accepted: cb will be called exactly once, from
 * smtp_client_process(), smtp_client_timeout() or smtp_client_eof(), never
 * from here, so call smtp_client_process() next. Returns -1 (and never
 * calls cb) if a transaction is already running, the client is closing or
 * quitting, n is 0 or above SMTP_CLIENT_RCPTS_MAX, or an index is out of
 * range.
 */
int smtp_client_send(struct smtp_client *c, const struct envelope *env,
    const size_t *rcpt_idx, size_t n, const char *body, size_t bodylen,
    smtp_client_cb cb, void *arg);

/* End the connection politely: QUIT once no transaction is running, wait
 * for the 221 (bounded by timeouts.quit), then io->close(NONE). Call
 * smtp_client_process() next. */
void smtp_client_quit(struct smtp_client *c);

/* Make progress: read replies, write commands and content. Call on every
 * read event, when the output has drained below the caller's low-water
 * mark, and after smtp_client_send()/smtp_client_quit(). */
void smtp_client_process(struct smtp_client *c);

/*
 * The handshake that io->starttls() began is over. error NULL: success,
 * and in/out are the buffers of the protected connection from now on;
 * otherwise the connection ends with error TLS (text: why, for the log
 * and the recipients' reason).
 */
void smtp_client_tls_done(struct smtp_client *c, struct evbuffer *in,
    struct evbuffer *out, const char *error);

/* true once TLS is up. */
bool smtp_client_tls_active(const struct smtp_client *c);

/* The timer asked for by io->set_timeout() fired. */
void smtp_client_timeout(struct smtp_client *c);

/* The connection was closed by the peer or failed. Input still buffered is
 * read first (a last "421" is honoured). */
void smtp_client_eof(struct smtp_client *c);

/* The EHLO keywords seen (enum smtp_client_cap bits; 0 before EHLO). With
 * SIZE, *size_max_r gets the peer's limit (0: none announced). */
unsigned smtp_client_caps(const struct smtp_client *c, uint64_t *size_max_r);

/* true once EHLO/HELO is done and no transaction runs: send() will start
 * at once. */
bool smtp_client_idle(const struct smtp_client *c);

/* true once the engine asked to close. */
bool smtp_client_closing(const struct smtp_client *c);

/* The last complete reply read, or the engine's diagnosis (code 0) of
 * what ended the connection: for logging why it ended when no transaction
 * was running. */
const struct smtp_client_reply *smtp_client_last_reply(const struct smtp_client *c);

/* The client's log identifier. */
const char *smtp_client_id(const struct smtp_client *c);

/* Free. A transaction still running is dropped without its callback.
 * Never from inside a callback of this client. Sets *c to NULL. */
void smtp_client_free(struct smtp_client **c);

#endif
