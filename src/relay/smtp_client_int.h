/*
 * smtp_client_int.h - what the files of the SMTP client engine share
 * (smtp_client.h is its public face):
 *
 *   smtp_client.c        the engine's core: the FIFO of expected
 *                        replies, timeouts, the end of a connection, the
 *                        loop and the public functions;
 *   smtp_client_reply.c  the reply reader (RFC 5321 4.2, RFC 2034);
 *   smtp_client_ehlo.c   greeting, EHLO/HELO and the capabilities,
 *                        STARTTLS (RFC 3207);
 *   smtp_client_auth.c   AUTH PLAIN and LOGIN (RFC 4954, 4616);
 *   smtp_client_tx.c     one transaction: local checks, MAIL, RCPT,
 *                        DATA, the content, and the recipients' results.
 *
 * Every command written pushes the stage of its reply on a FIFO (expect[]);
 * every complete reply read pops one and goes to the handler of that
 * stage. Replies are matched to commands only by counting, never by code
 * or text (RFC 2920 3.1).
 */
#ifndef TERN_SMTP_CLIENT_INT_H
#define TERN_SMTP_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* after relay/smtp_client.h (not included here: no include cycle) */

struct envelope;
struct evbuffer;

#define EXPECT_MAX (SMTP_CLIENT_RCPTS_MAX + 4)  /* RSET MAIL RCPT.. DATA */
#define ENVID_MAX 100        /* RFC 3461 4.4 */
#define ORCPT_MAX 500        /* RFC 3461 4.2 */
#define CMD_MAX 2048         /* one command line we build */
#define BODY_STAGE 8192      /* encoded content staged before evbuffer_add */
#define AUTH_MAX 255         /* user name, password: RFC 4616 2 */

enum client_state {
	CS_NEW,        /* smtp_client_start() not called yet */
	CS_GREETING,   /* waiting for the greeting */
	CS_HELLO,      /* EHLO or HELO sent */
	CS_AUTH,       /* AUTH exchange running (RFC 4954) */
	CS_TLS,        /* STARTTLS sent, or the handshake runs (RFC 3207) */
	CS_READY,      /* greeted (and authenticated if asked) */
	CS_CLOSED,
};

enum rcpt_state {
	R_PENDING,     /* to be sent or answered */
	R_ACCEPTED,    /* 2xx to RCPT; the outcome waits for DATA and "." */
	R_DONE,        /* result final */
};

enum tx_phase {
	TX_QUEUED,     /* handed in, not started */
	TX_CMDS,       /* MAIL/RCPT/DATA going out and being answered */
	TX_BODY,       /* 354 received: content going out */
	TX_DOT,        /* "." sent, waiting for the reply */
};

struct tx {
	bool active;
	enum tx_phase phase;
	const struct envelope *env;
	const char *body;
	size_t bodylen;
	smtp_client_cb cb;
	void *cb_arg;
	size_t n;
	struct smtp_client_rcpt_result *res;
	uint8_t *rst;              /* enum rcpt_state per result */
	size_t *live;              /* results whose RCPT goes out */
	size_t nlive;
	size_t rcpt_sent, rcpt_answered, naccepted;
	bool mail_sent, mail_answered, mail_ok, data_sent;
	bool body_nobody;          /* 354 with no recipient: "." alone */
	bool param_8bit, param_utf8;
	/* content encoder */
	size_t off;
	bool bol, pending_cr;
};

/* A reply being read, line by line. */
struct reply_rd {
	unsigned nlines;
	unsigned code;
	size_t tlen;
	char first_enh[16];
	struct smtp_client_reply r;
	unsigned caps;             /* EHLO keywords, kept if the reply is 2xx */
	uint64_t size_max;
};

struct smtp_client {
	char id[17];
	const struct smtp_client_params *params;
	struct smtp_client_timeouts to;
	size_t output_high;
	struct evbuffer *in;
	struct evbuffer *out;
	const struct smtp_client_io *io;
	void *io_arg;

	enum client_state state;
	bool tls;                  /* the handshake succeeded */
	bool handshake;            /* io->starttls() called, not done yet */
	unsigned caps;
	uint64_t size_max;
	bool need_rset;            /* a transaction was left open */
	bool want_quit, quit_sent;
	bool in_process;
	bool closing;
	unsigned timeout_set;      /* last value given to io->set_timeout */

	uint8_t expect[EXPECT_MAX];  /* enum smtp_client_stage, FIFO */
	size_t ex_head, ex_len;

	struct reply_rd rd;
	bool handling;             /* a reply to `handled` is being handled */
	enum smtp_client_stage handled;
	unsigned rd_caps;          /* EHLO keywords of the reply handled now */
	uint64_t rd_size_max;
	struct smtp_client_reply last;
	struct tx tx;
	enum {
		AUTH_NONE,
		AUTH_PLAIN_SENT,     /* "AUTH PLAIN <ir>": 235 next */
		AUTH_LOGIN_USER,     /* "AUTH LOGIN": 334, send the user */
		AUTH_LOGIN_PASS,     /* user sent: 334, send the password */
		AUTH_LOGIN_DONE,     /* password sent: 235 next */
	} auth_step;
	const char *auth_mech;
};

/* An ASCII digit (never the locale's idea of one). */
static inline bool
smtp_client_is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* ---- smtp_client.c ---- */

/* The engine's own reply (code 0 unless a server code applies). */
void smtp_client_set_reply(struct smtp_client_reply *r, unsigned code,
    const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Expect a reply of stage st (FIFO), and the oldest one expected. */
void smtp_client_expect_push(struct smtp_client *c, enum smtp_client_stage st);
enum smtp_client_stage smtp_client_expect_head(const struct smtp_client *c);
/* What we wait for now, for timeouts and diagnostics. */
enum smtp_client_stage smtp_client_current_stage(const struct smtp_client *c);
/* Write a command line (without CRLF) whose reply is of stage st. */
void smtp_client_cmd_write(struct smtp_client *c, enum smtp_client_stage st,
    const char *line, size_t len);
/*
 * The connection is over: every open recipient is TEMPFAIL (with the
 * server's reply if one caused this, else the engine's diagnosis), the
 * transaction's callback runs, then io->close(). c stays valid: the caller
 * frees it later.
 */
void smtp_client_fail(struct smtp_client *c, enum smtp_client_error err,
    const struct smtp_client_reply *why);
/* RFC 5321 3.8: a 421 ends the connection; true if r was one. */
bool smtp_client_is_421(struct smtp_client *c,
    const struct smtp_client_reply *r);
/* A reply that makes no sense after what: the connection ends. */
void smtp_client_protocol_error(struct smtp_client *c,
    const struct smtp_client_reply *r, const char *what);

/* ---- smtp_client_reply.c ---- */

/* Read a whole reply (EHLO keywords too if ehlo): -1 protocol error (the
 * connection failed), 0 need more, 1 complete in c->rd.r and c->last. */
int smtp_client_reply_read(struct smtp_client *c, bool ehlo);

/* ---- smtp_client_ehlo.c ---- */

/* One EHLO keyword line into rd's capabilities. */
void smtp_client_ehlo_line(struct reply_rd *rd, const char *p, size_t n);
/* Write EHLO (esmtp) or HELO. */
void smtp_client_ehlo_write(struct smtp_client *c, bool esmtp);
void smtp_client_ehlo_on_greeting(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_ehlo_on_ehlo(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_ehlo_on_helo(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_ehlo_on_starttls(struct smtp_client *c,
    const struct smtp_client_reply *r);

/* ---- smtp_client_auth.c ---- */

/* Start AUTH (RFC 4954 4), after EHLO and TLS if any. */
void smtp_client_auth_start(struct smtp_client *c);
/* AUTH impossible for a reason of ours: temporary failure, QUIT. */
void smtp_client_auth_refuse(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void smtp_client_auth_on_reply(struct smtp_client *c,
    const struct smtp_client_reply *r);

/* ---- smtp_client_tx.c ---- */

/* Write what the running transaction allows; true if anything was
 * written or the state changed. */
bool smtp_client_tx_step(struct smtp_client *c);
/* Give the caller the results and forget the transaction (cleared first,
 * so the callback may start the next one). */
void smtp_client_tx_done(struct smtp_client *c, enum smtp_client_error err);
void smtp_client_tx_clear(struct tx *t);
/* Decide recipient i from a reply: 2xx DELIVERED, 4xx TEMP, 5xx PERM. */
void smtp_client_tx_rcpt_final(struct tx *t, size_t i,
    enum smtp_client_stage st, const struct smtp_client_reply *r);
/* Every recipient still open gets r (its class, but never better than
 * TEMPFAIL unless final says so). */
void smtp_client_tx_rcpt_open(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r, bool final);
/* Accepted recipients get the reply to DATA or to ".". */
void smtp_client_tx_rcpt_accepted(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r);
void smtp_client_tx_on_rset(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_tx_on_mail(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_tx_on_rcpt(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_tx_on_data(struct smtp_client *c,
    const struct smtp_client_reply *r);
void smtp_client_tx_on_dot(struct smtp_client *c,
    const struct smtp_client_reply *r);

#endif
