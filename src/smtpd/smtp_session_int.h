/*
 * smtp_session_int.h - what the files of the SMTP session engine share
 * (smtp_session.h is the engine's public face; only the engine's files
 * include this one, after it). The session and transaction records, and the core's
 * helpers the command files call:
 *
 *   smtp_session.c   core: replies, deadlines, transaction reset, queue
 *                    waits, the verb table and simple verbs, input
 *   smtp_params.c    MAIL and RCPT with their ESMTP parameters
 *   smtp_auth_cmd.c  AUTH (RFC 4954): the exchange, not the verifier
 *   smtp_data.c      DATA and BDAT: content filters, the queue transaction
 *   smtp_headers.c   RFC 5322 header checks of the message content
 */
#ifndef TERN_SMTP_SESSION_INT_H
#define TERN_SMTP_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mail/envelope.h"
#include "mail/sasl.h"
#include "mail/smtp_addr.h"

/* from smtp_session.h, which the engine's .c files include first (the
 * public header does not know this one, so no include cycle) */
struct config;
struct config_listener;
struct config_passwd;
struct evbuffer;
struct queue_client_ops;
struct smtp_auth_ops;
struct smtp_domain_check_ops;
struct smtp_session_client;
struct smtp_session_io;

#define ENVID_MAX 100            /* RFC 3461 4.4 */
#define ORCPT_MAX 500            /* RFC 3461 4.2 */
#define HELO_MAX 255
#define HDR_CAPTURE_MAX (64 * 1024) /* header held back for From: checks */

enum session_state {
	STATE_NEW,       /* greeting sent, no HELO/EHLO yet */
	STATE_READY,     /* HELO/EHLO done, no transaction */
	STATE_MAIL,      /* MAIL accepted */
	STATE_DATA,      /* reading DATA content */
	STATE_BDAT,      /* reading a BDAT chunk */
	STATE_AUTH,      /* reading an AUTH response line (RFC 4954 4) */
	STATE_TLS,       /* 220 to STARTTLS sent: the handshake runs */
	STATE_WAIT,      /* waiting for the queue */
	STATE_CLOSED,
};

enum data_line_state { DL_BOL, DL_DOT, DL_DOT_CR, DL_TEXT };

/* Why a message's content is refused; checked at its end. */
enum body_error {
	BODY_OK,
	BODY_TOO_BIG,
	BODY_LINE_TOO_LONG,
	BODY_BARE_NEWLINE,
	BODY_LEADING_WSP,   /* the first line is a continuation line */
};

struct transaction {
	struct envelope env;
	unsigned rcpt_attempts;  /* RCPT commands seen (valid or not) */
	unsigned rcpt_accepted;  /* RCPT commands answered 250, duplicates too */
	void *qtxn;              /* queue transaction, NULL if none */
	char queue_id[QUEUE_ID_LEN + 1];
	bool bdat;               /* content comes by BDAT */
	bool bdat_last;          /* the current chunk is the last */
	bool bdat_failed;        /* a chunk failed: consume but refuse */
	uint64_t chunk_left;     /* BDAT octets still to read */
	uint64_t chunk_size;
	/* content filters */
	enum data_line_state dl;
	bool prev_crlf;          /* last line ended with CR LF */
	bool pending_cr;         /* body: a CR not yet known to be followed by LF */
	bool last_nl_bare;       /* body: the last line ending was bare */
	size_t line_len;
	/* RFC 5321 6.3: the Received: fields of the header section, counted
	 * as the content passes (tern's own, prepended, is not among them) */
	bool in_body;            /* the header section has ended */
	unsigned nreceived;
	char line_head[16];      /* the first octets of the current line */
	uint64_t size;           /* octets stored */
	enum body_error body_error;
	const char *fail_reply;  /* queue failure reply, if any */
	char fail_buf[256];
	/* authenticated sessions: the header is captured in s->hdr first */
	bool hdr_phase;          /* content still goes to s->hdr */
	bool from_error;         /* From: refused: from_buf is the reply */
	char from_buf[600];
};

/* Where an AUTH exchange stands (STATE_AUTH). */
enum auth_step {
	AUTH_STEP_NONE,
	AUTH_STEP_PLAIN,         /* waiting for the PLAIN message */
	AUTH_STEP_LOGIN_USER,    /* waiting for the LOGIN user name */
	AUTH_STEP_LOGIN_PASS,    /* waiting for the LOGIN password */
};

struct smtp_session {
	char id[17];
	const struct config *cfg;
	const struct smtp_session_client *client;
	struct evbuffer *in;
	struct evbuffer *out;
	struct evbuffer *stage;        /* content waiting for a queue write */
	const struct smtp_session_io *io;
	void *io_arg;
	const struct queue_client_ops *qops;
	void *qctx;

	enum session_state state;
	bool esmtp;
	char helo[HELO_MAX + 1];
	unsigned nerrors;
	unsigned njunk;                /* commands that moved no mail */
	unsigned nmessages;
	/* when the greeting phase (STATE_NEW) ends, mono ms: timeout_greeting
	 * from the connection's start (the handshake of implicit TLS
	 * included), or from the end of a STARTTLS handshake */
	int64_t greeting_at;
	/* the data deadline (mono ms) while message data flows: timeout_data
	 * that arriving octets extend at min_data_rate (deadline_credit) */
	bool data_budget;              /* data_deadline is running */
	int64_t data_deadline;
	int64_t data_last_input;       /* when the last data octets came */
	/* the queue is behind and the session stopped taking data: the
	 * budget's clock stands still at data_held_at (tern's pause is not
	 * the client's slowness) until data flows again */
	bool data_held;
	int64_t data_held_at;
	bool in_process;               /* re-entrancy guard */
	bool skipping_line;            /* discarding an over-long command line */
	bool last_cmd_crlf;            /* the last command ended with CRLF */
	const struct smtp_domain_check_ops *dcheck;
	void *dcheck_ctx;
	void *dcheck_handle;           /* a check in progress */
	/* the recipient waiting for that check */
	char pend_addr[SMTP_ADDR_PATH_MAX + 1];
	char pend_orcpt[ORCPT_MAX + 1];
	bool pend_has_orcpt;
	unsigned pend_notify;
	bool closing;
	struct transaction tx;

	const struct config_listener *listener;
	/* set by the transport after a TLS handshake (smtp_session_tls_started()) */
	bool tls_active;
	bool tls_offer;                /* STARTTLS may be offered */
	char tls_desc[128];            /* "TLSv1.3:CIPHER" once active */
	const struct smtp_auth_ops *aops;
	void *actx;
	void *auth_handle;             /* a verification in progress */
	enum auth_step auth_step;
	const char *auth_mech;         /* "PLAIN" or "LOGIN", for the log */
	char auth_try[SASL_FIELD_MAX + 1]; /* user name being verified */
	const struct config_passwd *auth_user; /* NULL until AUTH succeeds */
	bool skipping_auth_line;       /* discarding an over-long response */
	struct evbuffer *hdr;          /* captured header (hdr_phase) */
};

/* ---- smtp_session.c: the core ---- */

/* Append one reply line (CRLF added); 4xx/5xx count against max_errors,
 * except 421 and 452 4.5.3. */
void smtp_session_reply_raw(struct smtp_session *s, const char *line);
void smtp_session_reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* End the session: cancel what runs, abort the transaction, ask the
 * transport to close once the replies are out. */
void smtp_session_close(struct smtp_session *s);
/* Drop the transaction (aborting its queue side) and start a new one. */
void smtp_session_tx_reset(struct smtp_session *s);
/* Wait for the queue, a resolver or the verifier: no deadline runs. */
void smtp_session_wait(struct smtp_session *s);
/* Their answer came: go on in state st (and with the input, unless the
 * session is already processing it). */
void smtp_session_resume(struct smtp_session *s, enum session_state st);
/* Message data flows (DATA, or a BDAT transaction). */
bool smtp_session_in_content(const struct smtp_session *s);
/* Arm the deadline for what the session waits for now. */
void smtp_session_deadline_arm(struct smtp_session *s);
/* n octets of message data arrived: extend the data budget. */
void smtp_session_deadline_credit(struct smtp_session *s, size_t n);
/* The session stopped taking message data because the queue is behind:
 * the data budget stops (no deadline runs) and keeps what is left of it
 * for when data flows again (smtp_session_process()). */
void smtp_session_deadline_hold(struct smtp_session *s);
/* Count a command that moves no mail; false if the session ended. */
bool smtp_session_junk_ok(struct smtp_session *s);
/* 503 before HELO/EHLO; false then. */
bool smtp_session_need_helo(struct smtp_session *s);
/* 501 "Syntax: verb" if there are arguments; false then. */
bool smtp_session_no_args(struct smtp_session *s, size_t len,
    const char *verb);

/* ---- the verbs' handlers (args: the text after the verb and a space) ---- */

void smtp_params_do_mail(struct smtp_session *s, const char *args,
    size_t len);
void smtp_params_do_rcpt(struct smtp_session *s, const char *args,
    size_t len);
void smtp_auth_cmd_do_auth(struct smtp_session *s, const char *args,
    size_t len);
void smtp_data_do_data(struct smtp_session *s, const char *args,
    size_t len);
void smtp_data_do_bdat(struct smtp_session *s, const char *args,
    size_t len);

/* ---- smtp_auth_cmd.c ---- */

/* AUTH exists here: a verifier, users, and a listener that offers it. */
bool smtp_auth_cmd_enabled(const struct smtp_session *s);
/* ... and may be used now (TLS, or auth_plaintext). */
bool smtp_auth_cmd_usable(const struct smtp_session *s);
/* The client's address is locked out (too many AUTH failures): 421,
 * close, true. */
bool smtp_auth_cmd_refuse_throttled(struct smtp_session *s);
/* STATE_AUTH: read one response line; 1 if one was handled, 0 if more
 * input is needed. */
int smtp_auth_cmd_read_line(struct smtp_session *s);

/* ---- smtp_data.c ---- */

/* STATE_DATA / STATE_BDAT: consume message data as far as the input
 * goes. true when the message or chunk ended (its reply given or
 * awaited), false when more input is needed or the queue is behind. */
bool smtp_data_input(struct smtp_session *s);

/* ---- smtp_headers.c ---- */

/* The captured header of a submitted message is complete (or overflowed
 * HDR_CAPTURE_MAX): check it, add Date:/Message-ID:, stage it. */
void smtp_headers_finish(struct smtp_session *s, bool overflow);

#endif
