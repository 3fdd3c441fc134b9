/*
 * smtp_session.c - the SMTP server protocol engine (see smtp_session.h).
 *
 * Shape: commands[] is a table of verbs and handlers (OpenSMTPD, Postfix).
 * Input is consumed by smtp_session_process(), which loops until it needs
 * more octets, waits for the queue (an asynchronous begin or commit), or
 * has queued SMTP_SESSION_OUTPUT_MAX octets of replies the client has not
 * read. Message content passes through two layers:
 *
 *   DATA: data_feed() finds line starts, removes dot-stuffing and
 *         recognises end-of-data (only CR LF "." CR LF, RFC 5321 4.1.1.4);
 *   BDAT: octets are taken as counted (RFC 3030), no dot processing;
 *   both then go through body_put(), which applies the bare CR / bare LF
 *   policy, checks line lengths and the size limit, and stages the CRLF
 *   normalised octets for the queue.
 *
 * So a message can only end where a standards-conforming receiver would
 * end it, and what tern stores (and later relays) always has CRLF lines:
 * no SMTP smuggling sequence (CVE-2023-51764 class) survives either way.
 *
 * AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN: the engine decodes the
 * exchange (sasl.h) and hands the credentials to smtp_auth_ops, which
 * verifies them off the event loop and delays failures. The listener's
 * policy (config_listener) decides who may send to local and foreign
 * domains. For an authenticated session the message header is held back
 * until its end (at most HDR_CAPTURE_MAX octets) so that its From: can be
 * checked against the user's addresses and Date:/Message-ID: added when
 * missing (RFC 6409 8.3, 8.6) before anything reaches the queue. With
 * the From: check, a larger header, or one with control characters
 * (other than TAB), is refused: it cannot be checked whole. A header that
 * starts with a continuation line is refused in any case.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>

#include "conf/config.h"
#include "mail/envelope.h"
#include "conf/local_lookup.h"
#include "lib/log.h"
#include "smtpd/queue_client.h"
#include "mail/sasl.h"
#include "mail/smtp_addr.h"
#include "smtpd/smtp_session.h"
#include "lib/util.h"

#define BODY_LINE_MAX 998        /* RFC 5322 2.1.1, RFC 5321 4.5.3.1.6 */
#define STAGE_FLUSH (64 * 1024)  /* octets staged before a queue write */
#define ENVID_MAX 100            /* RFC 3461 4.4 */
#define ORCPT_MAX 500            /* RFC 3461 4.2 */
#define HELO_MAX 255
#define HDR_CAPTURE_MAX (64 * 1024) /* header held back for From: checks */
#define FROM_ADDRS_MAX 64        /* addresses in one From: field */

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
	unsigned nmessages;
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

static unsigned session_counter;

static void session_process_input(struct smtp_session *s);
static void tx_reset(struct smtp_session *s);

/* ------------------------------------------------------------------ */
/* replies */

static void
reply_raw(struct smtp_session *s, const char *line)
{
	evbuffer_add(s->out, line, strlen(line));
	evbuffer_add(s->out, "\r\n", 2);
	/* Errors count against max_errors, except 421 (we are closing
	 * anyway) and 452 4.5.3: a client with many recipients is told to
	 * send the rest later (RFC 5321 4.5.3.1.10), not punished. */
	if ((line[0] == '4' || line[0] == '5') && strncmp(line, "421", 3) != 0 &&
	    strncmp(line, "452 4.5.3", 9) != 0)
		s->nerrors++;
}

static void reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reply(struct smtp_session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	reply_raw(s, line);
}

static void
session_close(struct smtp_session *s)
{
	if (s->closing)
		return;
	s->closing = true;
	s->state = STATE_CLOSED;
	if (s->dcheck_handle != NULL) {
		s->dcheck->cancel(s->dcheck_ctx, s->dcheck_handle);
		s->dcheck_handle = NULL;
	}
	if (s->auth_handle != NULL) {
		s->aops->cancel(s->actx, s->auth_handle);
		s->auth_handle = NULL;
	}
	tx_reset(s);
	s->io->close(s->io_arg);
}

static void
set_timeout_for_state(struct smtp_session *s)
{
	if (s->state == STATE_DATA || s->state == STATE_BDAT)
		s->io->set_timeout(s->io_arg, s->cfg->timeout_data);
	else if (s->state == STATE_NEW)
		s->io->set_timeout(s->io_arg, s->cfg->timeout_greeting);
	else
		s->io->set_timeout(s->io_arg, s->cfg->timeout_command);
}

/* ------------------------------------------------------------------ */
/* transactions */

static void
tx_reset(struct smtp_session *s)
{
	struct transaction *t = &s->tx;

	if (t->qtxn != NULL)
		s->qops->abort(s->qctx, t->qtxn);
	envelope_clear(&t->env);
	memset(t, 0, sizeof(*t));
	envelope_init(&t->env);
	evbuffer_drain(s->stage, evbuffer_get_length(s->stage));
	evbuffer_drain(s->hdr, evbuffer_get_length(s->hdr));
}

static void
stage_flush(struct smtp_session *s)
{
	size_t n = evbuffer_get_length(s->stage);

	if (n == 0)
		return;
	if (s->tx.qtxn != NULL && s->tx.body_error == BODY_OK)
		s->qops->write(s->qctx, s->tx.qtxn, evbuffer_pullup(s->stage, -1), n);
	evbuffer_drain(s->stage, n);
}

static void hdr_finish(struct smtp_session *s, bool overflow);

/* Normalised content out: to the header capture while it lasts, else
 * to the stage for the queue. */
static void
body_out(struct smtp_session *s, const char *p, size_t n)
{
	if (!s->tx.hdr_phase) {
		evbuffer_add(s->stage, p, n);
		return;
	}
	evbuffer_add(s->hdr, p, n);
	if (evbuffer_get_length(s->hdr) > HDR_CAPTURE_MAX)
		hdr_finish(s, true);
}

/*
 * Body filter: octets of content (after dot handling for DATA). Applies the
 * bare CR / LF policy, counts line length and size, stages CRLF output.
 * RFC 5321 2.3.8: CR and LF only as the CRLF pair in content.
 */
static void
body_newline(struct smtp_session *s, bool bare)
{
	struct transaction *t = &s->tx;
	bool empty_line = t->line_len == 0;

	if (bare && s->cfg->bare_newline == CONFIG_BARE_NEWLINE_REJECT &&
	    t->body_error == BODY_OK)
		t->body_error = BODY_BARE_NEWLINE;
	t->line_len = 0;
	t->last_nl_bare = bare;
	t->size += 2;
	if (t->size > s->cfg->max_message_size && t->body_error == BODY_OK)
		t->body_error = BODY_TOO_BIG;
	if (t->body_error == BODY_OK)
		body_out(s, "\r\n", 2);
	/* RFC 5322 2.1: the first empty line ends the header. */
	if (empty_line && t->hdr_phase)
		hdr_finish(s, false);
}

static void
body_put(struct smtp_session *s, const char *p, size_t n)
{
	struct transaction *t = &s->tx;
	size_t i = 0;

	while (i < n) {
		if (t->pending_cr) {
			t->pending_cr = false;
			if (p[i] == '\n') {
				body_newline(s, false);
				i++;
				continue;
			}
			body_newline(s, true);   /* bare CR */
		}
		/* longest span without CR or LF */
		size_t j = i;
		while (j < n && p[j] != '\r' && p[j] != '\n')
			j++;
		if (j > i) {
			size_t span = j - i;
			/* RFC 5322 2.2.3: a line starting with WSP continues
			 * the field before it, which would be tern's own
			 * Received: (RFC 5321 4.4) prepended to the message. */
			if (t->size == 0 && (p[i] == ' ' || p[i] == '\t') &&
			    t->body_error == BODY_OK)
				t->body_error = BODY_LEADING_WSP;
			t->line_len += span;
			t->size += span;
			if (t->line_len > BODY_LINE_MAX && t->body_error == BODY_OK)
				t->body_error = BODY_LINE_TOO_LONG;
			if (t->size > s->cfg->max_message_size &&
			    t->body_error == BODY_OK)
				t->body_error = BODY_TOO_BIG;
			if (t->body_error == BODY_OK)
				body_out(s, p + i, span);
		}
		if (j == n)
			break;
		if (p[j] == '\r')
			t->pending_cr = true;
		else
			body_newline(s, true);   /* bare LF */
		i = j + 1;
	}
	if (evbuffer_get_length(s->stage) >= STAGE_FLUSH)
		stage_flush(s);
}

/* End of content: a trailing CR is bare; content must end with CRLF. */
static void
body_finish(struct smtp_session *s)
{
	struct transaction *t = &s->tx;

	if (t->pending_cr) {
		t->pending_cr = false;
		body_newline(s, true);
	}
	/* BDAT content may lack a final CRLF; a message always ends with one. */
	if (t->line_len > 0)
		body_newline(s, false);
	if (t->hdr_phase)
		hdr_finish(s, false);   /* a message that is all header */
	stage_flush(s);
}

/* ------------------------------------------------------------------ */
/* queue callbacks */

/* Wait for the queue: the client is not timed out for our slowness. */
static void
wait_queue(struct smtp_session *s)
{
	s->state = STATE_WAIT;
	s->io->set_timeout(s->io_arg, 0);
}

static void
resume(struct smtp_session *s, enum session_state st)
{
	s->state = st;
	if (!s->closing)
		set_timeout_for_state(s);
	if (!s->in_process) {
		smtp_session_process(s);
		if (s->io->progress != NULL)
			s->io->progress(s->io_arg);
	}
}

static void
copy_fail_reply(struct smtp_session *s, const struct queue_result *res)
{
	const char *r = res->reply;

	/* A failure reply must be a 4xx/5xx line; anything else is ours. */
	if (r == NULL || strlen(r) < 4 || (r[0] != '4' && r[0] != '5'))
		r = "451 4.3.0 Error: queue file write error";
	util_strlcpy(s->tx.fail_buf, r, sizeof(s->tx.fail_buf));
	s->tx.fail_reply = s->tx.fail_buf;
}

static void
write_received(struct smtp_session *s)
{
	struct transaction *t = &s->tx;
	char date[64], helo[HELO_MAX + 1], rcpt[40 + SMTP_ADDR_PATH_MAX];
	size_t i;

	util_rfc5322_date(t->env.arrival, date, sizeof(date));
	/* The HELO name is the client's claim: keep it inside a comment-safe
	 * alphabet so it cannot break the header's structure. */
	for (i = 0; s->helo[i] != '\0'; i++) {
		char c = s->helo[i];
		helo[i] = (c == '(' || c == ')' || c == '\\' || c == ';') ? '_' : c;
	}
	helo[i] = '\0';
	rcpt[0] = '\0';
	/* RFC 5321 4.4: "for" names a single recipient, never a list. */
	if (t->env.nrcpts == 1 && strlen(t->env.rcpts[0].addr) < SMTP_ADDR_PATH_MAX)
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", t->env.rcpts[0].addr);
	/* The TLS version and cipher as a comment, as Postfix does. */
	char tls[sizeof(s->tls_desc) + 40] = "";
	if (s->tls_active) {
		const char *colon = strchr(s->tls_desc, ':');
		int vl = colon ? (int)(colon - s->tls_desc) : (int)strlen(s->tls_desc);

		snprintf(tls, sizeof(tls), "\r\n\t(using %.*s with cipher %s)", vl,
		    s->tls_desc, colon ? colon + 1 : "unknown");
	}
	if (s->client->local)   /* tern sendmail: the kernel's word on who */
		evbuffer_add_printf(s->stage,
		    "Received: from %s (uid %lu)\r\n\tby %s (tern) with %s id %s%s;\r\n\t%s\r\n",
		    helo[0] ? helo : "unknown", s->client->uid, s->cfg->hostname,
		    t->env.protocol, t->queue_id, rcpt, date);
	else
		evbuffer_add_printf(s->stage,
		    "Received: from %s ([%s])%s\r\n\tby %s (tern) with %s id %s%s;\r\n\t%s\r\n",
		    helo[0] ? helo : "unknown", s->client->addr, tls,
		    s->cfg->hostname, t->env.protocol, t->queue_id, rcpt, date);
}

/* ------------------------------------------------------------------ */
/* the header of a submitted message (authenticated sessions) */

/* true if the header (h, n), CRLF lines, has a field called name. */
static bool
header_has(const char *h, size_t n, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < n;) {
		const char *eol = memchr(h + i, '\n', n - i);
		size_t len = eol ? (size_t)(eol - (h + i)) : n - i;
		size_t k = nl;

		if (len > nl && util_ascii_casecmp_n(h + i, nl, name, nl)) {
			while (k < len && (h[i + k] == ' ' || h[i + k] == '\t'))
				k++;
			if (k < len && h[i + k] == ':')
				return true;
		}
		i += len + 1;
	}
	return false;
}

/*
 * The unfolded value of the field name (RFC 5322 2.2.3) in the header
 * (h, n), in a fresh string; NULL if absent. *count is how many such
 * fields there are.
 */
static char *
header_value(const char *h, size_t n, const char *name, unsigned *count)
{
	size_t nl = strlen(name);
	char *val = NULL;
	size_t o = 0;
	bool in_field = false;

	*count = 0;
	for (size_t i = 0; i < n;) {
		const char *eol = memchr(h + i, '\n', n - i);
		size_t len = eol ? (size_t)(eol - (h + i)) : n - i;
		const char *line = h + i;
		size_t k = nl;

		i += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len > 0 && (line[0] == ' ' || line[0] == '\t')) {
			if (in_field) {
				memcpy(val + o, line, len);   /* unfold */
				o += len;
			}
			continue;
		}
		in_field = false;
		if (len <= nl || !util_ascii_casecmp_n(line, nl, name, nl))
			continue;
		while (k < len && (line[k] == ' ' || line[k] == '\t'))
			k++;
		if (k == len || line[k] != ':')
			continue;
		if ((*count)++ > 0)
			continue;
		val = xmalloc(n + 1);   /* the value is never longer */
		memcpy(val, line + k + 1, len - k - 1);
		o = len - k - 1;
		in_field = true;
	}
	if (val != NULL)
		val[o] = '\0';
	return val;
}

/*
 * The addresses of a mailbox-list (RFC 5322 3.4: From:), each as
 * "local@domain" with comments, blanks and display names gone and a
 * quoted local part unquoted, into out[] (each SMTP_ADDR_PATH_MAX + 1
 * bytes). Returns how many, or -1 if the list is malformed (groups,
 * unbalanced quotes, comments or brackets, too many or too long).
 */
static int
mailbox_list(const char *v, char (*out)[SMTP_ADDR_PATH_MAX + 1], int max)
{
	char plain[SMTP_ADDR_PATH_MAX + 1], angle[SMTP_ADDR_PATH_MAX + 1];
	size_t np = 0, na = 0;
	int nout = 0, depth = 0, angles = 0;
	bool quote = false, in_angle = false, overflow = false;

	for (const char *c = v;; c++) {
		char ch = *c;

		if (ch == '\0' || (ch == ',' && !quote && depth == 0 && !in_angle)) {
			const char *a = angles > 0 ? angle : plain;
			size_t al = angles > 0 ? na : np;

			if (quote || depth > 0 || in_angle || angles > 1 || overflow)
				return -1;
			if (al > 0) {
				char *d;
				size_t o = 0;

				if (nout == max)
					return -1;
				d = out[nout++];
				/* "local"@domain: unquote the local part */
				if (a[0] == '"') {
					size_t i = 1;

					for (; i < al && a[i] != '"'; i++) {
						if (a[i] == '\\' && i + 1 < al)
							i++;
						d[o++] = a[i];
					}
					if (i >= al)
						return -1;
					memcpy(d + o, a + i + 1, al - i - 1);
					o += al - i - 1;
				} else {
					memcpy(d, a, al);
					o = al;
				}
				d[o] = '\0';
			}
			if (ch == '\0')
				return nout;
			np = na = 0;
			angles = 0;
			continue;
		}
		if (depth > 0) {                 /* inside a comment */
			if (ch == '\\' && c[1] != '\0')
				c++;
			else if (ch == '(')
				depth++;
			else if (ch == ')')
				depth--;
			continue;
		}
		if (!quote) {
			if (ch == '(') {
				depth = 1;
				continue;
			}
			if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
				continue;
			if (ch == '<') {
				if (in_angle)
					return -1;
				in_angle = true;
				angles++;
				continue;
			}
			if (ch == '>') {
				if (!in_angle)
					return -1;
				in_angle = false;
				continue;
			}
			/* group syntax (or obs-route) has no place in From: */
			if ((ch == ':' || ch == ';') && !in_angle)
				return -1;
		}
		if (ch == '"')
			quote = !quote;
		else if (ch == '\\' && quote && c[1] != '\0') {
			/* keep the escape: the unquoting above removes it */
			if (in_angle ? na + 2 > SMTP_ADDR_PATH_MAX :
			    np + 2 > SMTP_ADDR_PATH_MAX) {
				overflow = true;
				c++;
				continue;
			}
			if (in_angle)
				angle[na++] = ch;
			else
				plain[np++] = ch;
			ch = *++c;
		}
		if (in_angle ? na >= SMTP_ADDR_PATH_MAX : np >= SMTP_ADDR_PATH_MAX)
			overflow = true;
		else if (in_angle)
			angle[na++] = ch;
		else
			plain[np++] = ch;
	}
}

/*
 * true if the header (h, n) has a control character other than TAB and
 * the CR LF line ends: NUL ends a C string early (mailbox_list() would
 * not see what follows it), and others are read differently by different
 * programs, so a header with one cannot be checked (RFC 5322 2.2: a
 * field body is printable US-ASCII and WSP; control characters appear
 * only in the obsolete syntax of RFC 5322 4).
 */
static bool
header_has_ctl(const char *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)h[i];

		if (c == '\r' && i + 1 < n && h[i + 1] == '\n') {
			i++;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return true;
	}
	return false;
}

/* From: of a submitted message: present once, and every address in it
 * one of the user's (auth_check_from). Sets from_error and its reply. */
static void
check_from(struct smtp_session *s, const char *h, size_t n)
{
	struct transaction *t = &s->tx;
	char (*addrs)[SMTP_ADDR_PATH_MAX + 1];
	char q[SMTP_ADDR_PATH_MAX * 4 + 8], u[SASL_FIELD_MAX * 4 + 8];
	const char *name = s->auth_user->name;
	unsigned count;
	char *v = header_value(h, n, "From", &count);
	int na = -1;

	log_quote(u, sizeof(u), name, strlen(name), SASL_FIELD_MAX);
	t->from_error = true;
	if (v == NULL) {
		snprintf(t->from_buf, sizeof(t->from_buf), "553 5.7.1 Sender "
		    "address rejected: message has no From: header");
		return;
	}
	addrs = xcalloc(FROM_ADDRS_MAX, sizeof(*addrs));
	/* RFC 5322 3.6: exactly one From: field */
	if (count == 1)
		na = mailbox_list(v, addrs, FROM_ADDRS_MAX);
	if (na <= 0) {
		snprintf(t->from_buf, sizeof(t->from_buf), "553 5.7.1 Sender "
		    "address rejected: malformed From: header");
		goto out;
	}
	for (int i = 0; i < na; i++) {
		if (!config_passwd_owns(s->auth_user, addrs[i], strlen(addrs[i]))) {
			log_quote(q, sizeof(q), addrs[i], strlen(addrs[i]),
			    SMTP_ADDR_PATH_MAX);
			snprintf(t->from_buf, sizeof(t->from_buf), "553 5.7.1 "
			    "<%.200s>: Sender address rejected: From: not owned "
			    "by user %.200s", q, u);
			goto out;
		}
	}
	t->from_error = false;
out:
	free(addrs);
	free(v);
}

/*
 * The header of a submitted message is complete (or too large to hold):
 * check From:, add what a submission server adds, and let it and the
 * rest of the content through to the queue.
 */
static void
hdr_finish(struct smtp_session *s, bool overflow)
{
	struct transaction *t = &s->tx;
	size_t n = evbuffer_get_length(s->hdr);
	const char *h = (const char *)evbuffer_pullup(s->hdr, -1);
	char date[64];

	t->hdr_phase = false;
	if (n > 0 && (h[0] == ' ' || h[0] == '\t')) {
		/* RFC 5322 2.2.3: a line starting with WSP continues the field
		 * before it; here that would be the Message-ID: or Date: added
		 * below (or the Received: field), so the field would change. */
		t->from_error = true;
		util_strlcpy(t->from_buf, "554 5.6.0 Error: malformed message "
		    "header: it starts with a continuation line",
		    sizeof(t->from_buf));
	} else if (s->cfg->auth_check_from && overflow) {
		/* What is past the capture was never seen: a second From:
		 * could hide there. Refuse rather than check half. */
		t->from_error = true;
		snprintf(t->from_buf, sizeof(t->from_buf), "552 5.3.4 Error: "
		    "message header too large to check (over %d octets)",
		    HDR_CAPTURE_MAX);
	} else if (s->cfg->auth_check_from && header_has_ctl(h, n)) {
		t->from_error = true;
		util_strlcpy(t->from_buf, "553 5.7.1 Sender address rejected: "
		    "control character in the message header, From: cannot be "
		    "checked", sizeof(t->from_buf));
	} else if (s->cfg->auth_check_from) {
		check_from(s, h ? h : "", n);
	}
	if (!overflow) {
		/* RFC 6409 8.3: add Date: when missing */
		if (!header_has(h ? h : "", n, "Date")) {
			util_rfc5322_date(t->env.arrival, date, sizeof(date));
			evbuffer_add_printf(s->stage, "Date: %s\r\n", date);
		}
		/* RFC 6409 8.6: add Message-ID: when missing */
		if (!header_has(h ? h : "", n, "Message-ID"))
			evbuffer_add_printf(s->stage, "Message-ID: <%s.%s@%s>\r\n",
			    t->queue_id, s->id, s->cfg->hostname);
	}
	evbuffer_add_buffer(s->stage, s->hdr);
}

static void
begin_done(void *arg, const struct queue_result *res)
{
	struct smtp_session *s = arg;
	struct transaction *t = &s->tx;

	if (!res->ok) {
		t->qtxn = NULL;    /* the queue dropped it */
		copy_fail_reply(s, res);
		if (!t->bdat) {
			reply_raw(s, t->fail_reply);
			log_info("smtp session=%s event=rejected reply=\"%s\"",
			    s->id, t->fail_reply);
			tx_reset(s);
			resume(s, STATE_READY);
			return;
		}
		/* BDAT: the chunk must still be consumed (RFC 3030 2). */
		t->bdat_failed = true;
		resume(s, STATE_BDAT);
		return;
	}
	util_strlcpy(t->queue_id, res->queue_id ? res->queue_id : "", sizeof(t->queue_id));
	write_received(s);
	/* Submission: hold the header back for From: and the fields an MSA
	 * adds (hdr_finish()). */
	t->hdr_phase = s->auth_user != NULL;
	if (t->bdat) {
		resume(s, STATE_BDAT);
	} else {
		reply(s, "354 End data with <CR><LF>.<CR><LF>");
		t->dl = DL_BOL;
		/* The DATA line's own ending starts the first content line. */
		t->prev_crlf = s->last_cmd_crlf;
		resume(s, STATE_DATA);
	}
}

static void
commit_done(void *arg, const struct queue_result *res)
{
	struct smtp_session *s = arg;
	struct transaction *t = &s->tx;

	t->qtxn = NULL;  /* finished either way */
	if (res->ok) {
		/* The queue answered after fsync of file and directory: only now
		 * may we take responsibility for the message (RFC 5321 6.1). */
		reply(s, "250 2.0.0 Ok: queued as %s", res->queue_id);
		log_info("smtp session=%s event=queued id=%s size=%" PRIu64
		    " nrcpt=%zu", s->id, res->queue_id, t->size, t->env.nrcpts);
		s->nmessages++;
	} else {
		copy_fail_reply(s, res);
		reply_raw(s, t->fail_reply);
		log_info("smtp session=%s event=rejected id=%s reply=\"%s\"",
		    s->id, t->queue_id, t->fail_reply);
	}
	tx_reset(s);
	resume(s, STATE_READY);
}

/* Content complete: refuse it, or commit it and wait. */
static void
content_end(struct smtp_session *s)
{
	struct transaction *t = &s->tx;
	const char *why = NULL;

	body_finish(s);
	switch (t->body_error) {
	case BODY_OK:
		break;
	case BODY_TOO_BIG:
		why = "552 5.3.4 Error: message size exceeds fixed limit";
		break;
	case BODY_LINE_TOO_LONG:
		/* RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with CRLF. */
		why = "500 5.5.2 Error: line too long (over 998 octets)";
		break;
	case BODY_BARE_NEWLINE:
		why = "550 5.5.2 Error: bare <CR> or <LF> received; lines must end with <CR><LF>";
		break;
	case BODY_LEADING_WSP:
		why = "554 5.6.0 Error: malformed message header: it starts with "
		    "a continuation line";
		break;
	}
	if (why == NULL && t->from_error)
		why = t->from_buf;
	if (why == NULL && t->qtxn == NULL)
		why = t->fail_reply ? t->fail_reply : "451 4.3.0 Error: queue file write error";
	if (why != NULL) {
		reply_raw(s, why);
		log_info("smtp session=%s event=rejected id=%s reply=\"%s\"", s->id,
		    t->queue_id[0] ? t->queue_id : "-", why);
		tx_reset(s);
		s->state = STATE_READY;
		set_timeout_for_state(s);
		return;
	}
	wait_queue(s);
	s->qops->commit(s->qctx, t->qtxn, commit_done, s);
}

/* ------------------------------------------------------------------ */
/* ESMTP parameters: "KEY[=VALUE]" separated by spaces (RFC 5321 4.1.2) */

struct param {
	const char *key;
	size_t keylen;
	const char *val;   /* NULL if no '=' */
	size_t vallen;
};

#define PARAMS_MAX 16

/* Split p..p+n into params. Returns the count, or -1 on syntax error. */
static int
params_split(const char *p, size_t n, struct param *out, bool utf8)
{
	int np = 0;
	size_t i = 0;

	while (i < n) {
		while (i < n && p[i] == ' ')
			i++;
		if (i == n)
			break;
		if (np == PARAMS_MAX)
			return -1;
		struct param *pp = &out[np++];
		pp->key = p + i;
		while (i < n && p[i] != ' ' && p[i] != '=') {
			unsigned char c = (unsigned char)p[i];
			/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || (c == '-' && p + i != pp->key)))
				return -1;
			i++;
		}
		pp->keylen = (size_t)(p + i - pp->key);
		if (pp->keylen == 0)
			return -1;
		pp->val = NULL;
		pp->vallen = 0;
		if (i < n && p[i] == '=') {
			i++;
			pp->val = p + i;
			while (i < n && p[i] != ' ') {
				unsigned char c = (unsigned char)p[i];
				/* esmtp-value = 1*(%d33-60 / %d62-126), UTF-8
				 * allowed under SMTPUTF8 (RFC 6531 3.3). */
				if (c == '=' || c < 33 || c == 127 || (c > 127 && !utf8))
					return -1;
				i++;
			}
			pp->vallen = (size_t)(p + i - pp->val);
			if (pp->vallen == 0)
				return -1;
		}
	}
	return np;
}

static bool
key_is(const struct param *pp, const char *name)
{
	return util_ascii_casecmp_n(pp->key, pp->keylen, name, strlen(name));
}

static bool
val_is(const struct param *pp, const char *v)
{
	return pp->val != NULL && util_ascii_casecmp_n(pp->val, pp->vallen, v, strlen(v));
}

static bool
params_dup(const struct param *pp, int np)
{
	for (int i = 0; i < np; i++)
		for (int j = i + 1; j < np; j++)
			if (util_ascii_casecmp_n(pp[i].key, pp[i].keylen,
			    pp[j].key, pp[j].keylen))
				return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* commands */

struct command {
	const char *verb;
	/* args: text after the verb and one space (may be empty) */
	void (*fn)(struct smtp_session *s, const char *args, size_t len);
	bool params_line;   /* may use SMTP_SESSION_PARAM_LINE_MAX */
};

/* AUTH exists here: a verifier, users, and a listener that offers it. */
static bool
auth_enabled(const struct smtp_session *s)
{
	return s->aops != NULL && s->cfg->passwd_file != NULL &&
	    s->listener->auth != CONFIG_LISTENER_AUTH_NO;
}

/* ... and may be used now: over TLS, or in clear text if the listener
 * allows it. RFC 4954 6 (538): do not offer what cannot be used. */
static bool
auth_usable(const struct smtp_session *s)
{
	return auth_enabled(s) && (s->tls_active ||
	    s->listener->auth_plaintext);
}

static bool
need_helo(struct smtp_session *s)
{
	if (s->state == STATE_NEW) {
		reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	return true;
}

static bool
no_args(struct smtp_session *s, size_t len, const char *verb)
{
	if (len != 0) {
		reply(s, "501 5.5.4 Syntax: %s", verb);
		return false;
	}
	return true;
}

/* HELO/EHLO argument: a domain or address literal; RFC 5321 4.1.4 says a
 * server MUST NOT refuse a mismatch, so only the form is checked. */
static bool
helo_arg_ok(const char *p, size_t len)
{
	if (len == 0 || len > HELO_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c <= ' ' || c >= 127)
			return false;
	}
	return true;
}

static void
do_helo_common(struct smtp_session *s, const char *args, size_t len, bool esmtp)
{
	const char *verb = esmtp ? "EHLO" : "HELO";

	/* Some clients send trailing spaces; one argument only. */
	while (len > 0 && args[len - 1] == ' ')
		len--;
	if (!helo_arg_ok(args, len)) {
		reply(s, "501 5.5.4 Syntax: %s hostname", verb);
		return;
	}
	/* RFC 5321 4.1.4: EHLO/HELO resets the transaction state. */
	tx_reset(s);
	memcpy(s->helo, args, len);
	s->helo[len] = '\0';
	s->esmtp = esmtp;
	s->state = STATE_READY;
	set_timeout_for_state(s);
	if (!esmtp) {
		reply(s, "250 %s", s->cfg->hostname);
		return;
	}
	evbuffer_add_printf(s->out,
	    "250-%s\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE %" PRIu64 "\r\n"
	    "250-8BITMIME\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-DSN\r\n"
	    "%s%s"
	    "250 CHUNKING\r\n",
	    s->cfg->hostname, s->cfg->max_message_size,
	    s->tls_offer && !s->tls_active ? "250-STARTTLS\r\n" : "",
	    auth_usable(s) && s->auth_user == NULL ?
	    "250-AUTH PLAIN LOGIN\r\n" : "");
}

static void
do_ehlo(struct smtp_session *s, const char *args, size_t len)
{
	do_helo_common(s, args, len, true);
}

static void
do_helo(struct smtp_session *s, const char *args, size_t len)
{
	do_helo_common(s, args, len, false);
}

/* "FROM:" / "TO:" then optional spaces (tolerated, as most MTAs do). */
static bool
skip_keyword(const char **p, size_t *len, const char *kw)
{
	size_t kl = strlen(kw);

	if (*len < kl || !util_ascii_casecmp_n(*p, kl, kw, kl))
		return false;
	*p += kl;
	*len -= kl;
	while (*len > 0 && **p == ' ') {
		(*p)++;
		(*len)--;
	}
	return true;
}

static const char *
addr_error_reply(enum smtp_addr_error e, bool sender)
{
	switch (e) {
	case SMTP_ADDR_ERR_UTF8_NOT_ALLOWED:
		/* RFC 6531 3.5 */
		return "553 5.6.7 Error: non-ASCII address requires SMTPUTF8";
	case SMTP_ADDR_ERR_LOCAL_TOO_LONG:
	case SMTP_ADDR_ERR_DOMAIN_TOO_LONG:
	case SMTP_ADDR_ERR_PATH_TOO_LONG:
		/* RFC 5321 4.5.3.1 */
		return sender ? "501 5.1.7 Error: sender address too long" :
		    "501 5.1.3 Error: recipient address too long";
	default:
		return sender ? "501 5.1.7 Error: bad sender address syntax" :
		    "501 5.1.3 Error: bad recipient address syntax";
	}
}

static void
do_mail(struct smtp_session *s, const char *args, size_t len)
{
	struct transaction *t = &s->tx;
	struct param pp[PARAMS_MAX];
	struct smtp_addr a;
	size_t used;
	int np;
	unsigned flags = SMTP_ADDR_NULL_OK;
	enum envelope_body body = ENVELOPE_BODY_NONE;
	enum envelope_ret ret = ENVELOPE_RET_NONE;
	bool utf8 = false;
	uint64_t size = 0;
	char envid[ENVID_MAX + 1] = "";
	char addr[SMTP_ADDR_PATH_MAX + 1];

	if (!need_helo(s))
		return;
	if (s->state != STATE_READY) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->listener->auth == CONFIG_LISTENER_AUTH_REQUIRED &&
	    s->auth_user == NULL) {
		/* RFC 4954 6, RFC 6409 4.3: submission needs AUTH first */
		reply(s, "530 5.7.0 Authentication required");
		return;
	}
	if (!skip_keyword(&args, &len, "FROM:")) {
		reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	/* The path's syntax depends on SMTPUTF8, which follows it: parse the
	 * path allowing UTF-8, then the parameters, then check. */
	enum smtp_addr_error e = smtp_addr_parse_path(args, len,
	    flags | SMTP_ADDR_UTF8, &a, &used);
	if (e != SMTP_ADDR_OK || (used < len && args[used] != ' ')) {
		reply(s, "%s", addr_error_reply(e == SMTP_ADDR_OK ? SMTP_ADDR_ERR_SYNTAX : e, true));
		return;
	}
	np = params_split(args + used, len - used, pp, true);
	if (np < 0) {
		reply(s, "501 5.5.4 Error: bad MAIL parameter syntax");
		return;
	}
	if (params_dup(pp, np)) {
		reply(s, "501 5.5.4 Error: duplicate MAIL parameter");
		return;
	}
	for (int i = 0; i < np; i++) {
		struct param *p = &pp[i];
		if (key_is(p, "SIZE")) {
			/* RFC 1870 6: size-value = 1*20DIGIT */
			if (p->val == NULL || p->vallen > 20) {
				reply(s, "501 5.5.4 Error: bad SIZE parameter");
				return;
			}
			size = 0;
			for (size_t k = 0; k < p->vallen; k++) {
				if (p->val[k] < '0' || p->val[k] > '9') {
					reply(s, "501 5.5.4 Error: bad SIZE parameter");
					return;
				}
				if (size > UINT64_MAX / 10 - 10)
					size = UINT64_MAX;
				else
					size = size * 10 + (uint64_t)(p->val[k] - '0');
			}
		} else if (key_is(p, "BODY")) {
			if (val_is(p, "7BIT"))
				body = ENVELOPE_BODY_7BIT;
			else if (val_is(p, "8BITMIME"))
				body = ENVELOPE_BODY_8BITMIME;
			else if (val_is(p, "BINARYMIME")) {
				/* RFC 3030 3: needs BINARYMIME, which we do not offer */
				reply(s, "504 5.5.4 Error: BODY=BINARYMIME is not supported");
				return;
			} else {
				reply(s, "501 5.5.4 Error: bad BODY parameter");
				return;
			}
		} else if (key_is(p, "SMTPUTF8")) {
			if (p->val != NULL) {
				reply(s, "501 5.5.4 Error: SMTPUTF8 takes no value");
				return;
			}
			utf8 = true;
		} else if (key_is(p, "RET")) {
			if (val_is(p, "FULL"))
				ret = ENVELOPE_RET_FULL;
			else if (val_is(p, "HDRS"))
				ret = ENVELOPE_RET_HDRS;
			else {
				reply(s, "501 5.5.4 Error: bad RET parameter");
				return;
			}
		} else if (key_is(p, "ENVID")) {
			/* RFC 3461 4.4: xtext, at most 100 characters */
			if (p->val == NULL || p->vallen > ENVID_MAX ||
			    !smtp_xtext_valid(p->val, p->vallen)) {
				reply(s, "501 5.5.4 Error: bad ENVID parameter");
				return;
			}
			memcpy(envid, p->val, p->vallen);
			envid[p->vallen] = '\0';
		} else if (key_is(p, "AUTH") && auth_enabled(s)) {
			/* RFC 4954 5: accepted and not passed on (tern does
			 * not trust another server's AUTH= claims). */
			if (p->val == NULL || !smtp_xtext_valid(p->val,
			    p->vallen)) {
				reply(s, "501 5.5.4 Error: bad AUTH parameter");
				return;
			}
		} else {
			char k[32];
			reply(s, "555 5.5.4 Error: unsupported MAIL parameter %s",
			    log_quote(k, sizeof(k), p->key, p->keylen, 20));
			return;
		}
	}
	if (!s->esmtp && np > 0) {
		/* RFC 5321 4.1.1.11: parameters only after EHLO */
		reply(s, "555 5.5.4 Error: MAIL parameters need EHLO");
		return;
	}
	if (a.has_utf8 && !utf8) {
		reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_UTF8_NOT_ALLOWED, true));
		return;
	}
	/* RFC 1870 6.1: refuse at MAIL what would be refused after DATA. */
	if (size > s->cfg->max_message_size) {
		reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
		return;
	}
	if (smtp_addr_format(&a, addr, sizeof(addr)) < 0) {
		reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_PATH_TOO_LONG, true));
		return;
	}
	if (s->auth_user != NULL && addr[0] != '\0' &&
	    !config_passwd_owns(s->auth_user, addr, strlen(addr))) {
		/* An authenticated user sends as itself only. The null
		 * sender stays allowed: RFC 6409 4.2 says it MUST NOT in
		 * itself be refused (disposition notifications use it). */
		char q[SMTP_ADDR_PATH_MAX * 4 + 8], u[SASL_FIELD_MAX * 4 + 8];

		log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
		log_quote(u, sizeof(u), s->auth_user->name,
		    strlen(s->auth_user->name), SASL_FIELD_MAX);
		reply(s, "553 5.7.1 <%.200s>: Sender address rejected: not "
		    "owned by user %.200s", q, u);
		return;
	}
	tx_reset(s);
	t->env.arrival = util_now_us() / 1000000;
	envelope_set(&t->env.sender, addr);
	envelope_set(&t->env.helo, s->helo);
	envelope_set(&t->env.client_addr, s->client->addr);
	/* RFC 3848 (and RFC 6531 4.3 for UTF8SMTP): S for TLS, A for AUTH. */
	char proto[16];
	snprintf(proto, sizeof(proto), "%s%s%s", !s->esmtp ? "SMTP" :
	    utf8 ? "UTF8SMTP" : "ESMTP", s->esmtp && s->tls_active ? "S" : "",
	    s->esmtp && s->auth_user != NULL ? "A" : "");
	envelope_set(&t->env.protocol, proto);
	t->env.body = body;
	t->env.smtputf8 = utf8;
	t->env.ret = ret;
	t->env.size_declared = size;
	if (envid[0])
		envelope_set(&t->env.envid, envid);
	s->state = STATE_MAIL;
	char q[SMTP_ADDR_PATH_MAX * 4 + 8];
	log_info("smtp session=%s event=mail from=<%s> size=%" PRIu64, s->id,
	    log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX), size);
	reply(s, "250 2.1.0 Ok");
}

/* RFC 3461 4.1: NOTIFY="NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
static int
parse_notify(const struct param *p, unsigned *out)
{
	unsigned v = 0;
	const char *q = p->val, *end;

	/* "NOTIFY" without a value; NULL + 0 would be undefined */
	if (p->val == NULL)
		return -1;
	end = p->val + p->vallen;
	while (q < end) {
		const char *c = memchr(q, ',', (size_t)(end - q));
		size_t n = c ? (size_t)(c - q) : (size_t)(end - q);
		unsigned bit;
		if (util_ascii_casecmp_n(q, n, "NEVER", 5))
			bit = ENVELOPE_NOTIFY_NEVER;
		else if (util_ascii_casecmp_n(q, n, "SUCCESS", 7))
			bit = ENVELOPE_NOTIFY_SUCCESS;
		else if (util_ascii_casecmp_n(q, n, "FAILURE", 7))
			bit = ENVELOPE_NOTIFY_FAILURE;
		else if (util_ascii_casecmp_n(q, n, "DELAY", 5))
			bit = ENVELOPE_NOTIFY_DELAY;
		else
			return -1;
		if (v & bit)
			return -1;
		v |= bit;
		q += n;
		if (c != NULL) {
			q++;
			if (q == end)
				return -1;
		}
	}
	/* NEVER must stand alone. */
	if ((v & ENVELOPE_NOTIFY_NEVER) && v != ENVELOPE_NOTIFY_NEVER)
		return -1;
	*out = v;
	return 0;
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext; RFC 6533 3 adds utf-8. */
static bool
orcpt_ok(const struct param *p, bool utf8)
{
	const char *semi;
	size_t tl;

	if (p->val == NULL || p->vallen > ORCPT_MAX)
		return false;
	semi = memchr(p->val, ';', p->vallen);
	if (semi == NULL || semi == p->val)
		return false;
	tl = (size_t)(semi - p->val);
	for (size_t i = 0; i < tl; i++) {
		char c = p->val[i];
		/* addr-type is an atom */
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	const char *v = semi + 1;
	size_t vl = p->vallen - tl - 1;
	if (vl == 0)
		return false;
	if (util_ascii_casecmp_n(p->val, tl, "utf-8", 5)) {
		/* utf-8-addr-xtext / -unitext: printable, no '+' '=' SP;
		 * raw UTF-8 only under SMTPUTF8 (RFC 6533 3). */
		for (size_t i = 0; i < vl; i++) {
			unsigned char c = (unsigned char)v[i];
			if (c == '+' || c == '=' || c <= ' ' || c == 127 ||
			    (c > 127 && !utf8))
				return false;
		}
		return true;
	}
	return smtp_xtext_valid(v, vl);
}

/* Remote addresses: local part exact, domain case-insensitive. */
static bool
same_remote_addr(const char *a, const char *b)
{
	const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');

	if (at_a == NULL || at_b == NULL || at_a - a != at_b - b ||
	    memcmp(a, b, (size_t)(at_a - a)) != 0)
		return false;
	return util_ascii_casecmp_n(at_a, strlen(at_a), at_b, strlen(at_b));
}

/* Add a recipient that passed every check. */
static void
rcpt_accept(struct smtp_session *s, const char *addr, const char *orcpt,
    unsigned notify, bool local, const char *q)
{
	struct transaction *t = &s->tx;
	const char *verdict = local ? "local" : "relay";

	/* The same recipient twice in one transaction gets one copy. Local
	 * parts are case-sensitive except in our own domains (RFC 5321 2.4),
	 * whose lookups fold case. */
	for (size_t i = 0; i < t->env.nrcpts; i++) {
		const char *o = t->env.rcpts[i].addr;
		bool same = local ?
		    util_ascii_casecmp_n(o, strlen(o), addr, strlen(addr)) :
		    same_remote_addr(o, addr);
		if (same) {
			verdict = "duplicate";
			goto out;
		}
	}
	envelope_add_rcpt(&t->env, addr, orcpt, notify);
out:
	reply(s, "250 2.1.5 Ok");
	log_info("smtp session=%s event=rcpt to=<%s> result=%s", s->id, q, verdict);
}

static void
domain_checked(void *arg, enum smtp_domain_verdict v)
{
	struct smtp_session *s = arg;
	char q[SMTP_ADDR_PATH_MAX * 4 + 8];
	const char *addr = s->pend_addr;

	s->dcheck_handle = NULL;
	log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
	switch (v) {
	case SMTP_DOMAIN_NULL_MX:
		/* RFC 7505 3: fail at once, never queue. */
		reply(s, "556 5.1.10 <%s>: Recipient address rejected: "
		    "domain does not accept mail (null MX)", q);
		log_info("smtp session=%s event=rcpt to=<%s> result=null-mx", s->id, q);
		break;
	case SMTP_DOMAIN_NXDOMAIN:
		reply(s, "550 5.1.2 <%s>: Recipient address rejected: "
		    "domain not found", q);
		log_info("smtp session=%s event=rcpt to=<%s> result=no-domain", s->id, q);
		break;
	default:
		rcpt_accept(s, addr, s->pend_has_orcpt ? s->pend_orcpt : NULL,
		    s->pend_notify, false, q);
		break;
	}
	resume(s, STATE_MAIL);
}

static void
do_rcpt(struct smtp_session *s, const char *args, size_t len)
{
	struct transaction *t = &s->tx;
	struct param pp[PARAMS_MAX];
	struct smtp_addr a;
	size_t used;
	int np;
	unsigned notify = 0;
	const struct param *orcpt = NULL;
	char addr[SMTP_ADDR_PATH_MAX + 1];
	char q[SMTP_ADDR_PATH_MAX * 4 + 8];
	const char *verdict;

	if (!need_helo(s))
		return;
	if (s->state != STATE_MAIL) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->tx.bdat) {
		/* RFC 3030 2: every RCPT comes before the first BDAT; the
		 * envelope is already with the queue. */
		reply(s, "503 5.5.1 Error: RCPT after BDAT");
		return;
	}
	if (!skip_keyword(&args, &len, "TO:")) {
		reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	t->rcpt_attempts++;
	/* RFC 5321 4.5.3.1.10: 452 for too many recipients; the client
	 * sends the rest in another transaction. */
	if (t->env.nrcpts >= s->cfg->max_recipients) {
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	unsigned flags = SMTP_ADDR_POSTMASTER_OK | (t->env.smtputf8 ? SMTP_ADDR_UTF8 : 0);
	enum smtp_addr_error e = smtp_addr_parse_path(args, len, flags, &a, &used);
	if (e != SMTP_ADDR_OK) {
		reply(s, "%s", addr_error_reply(e, false));
		return;
	}
	if (used < len && args[used] != ' ') {
		reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_SYNTAX, false));
		return;
	}
	np = params_split(args + used, len - used, pp, t->env.smtputf8);
	if (np < 0) {
		reply(s, "501 5.5.4 Error: bad RCPT parameter syntax");
		return;
	}
	if (params_dup(pp, np)) {
		reply(s, "501 5.5.4 Error: duplicate RCPT parameter");
		return;
	}
	for (int i = 0; i < np; i++) {
		if (key_is(&pp[i], "NOTIFY")) {
			if (parse_notify(&pp[i], &notify) < 0) {
				reply(s, "501 5.5.4 Error: bad NOTIFY parameter");
				return;
			}
		} else if (key_is(&pp[i], "ORCPT")) {
			if (!orcpt_ok(&pp[i], t->env.smtputf8)) {
				reply(s, "501 5.5.4 Error: bad ORCPT parameter");
				return;
			}
			orcpt = &pp[i];
		} else {
			char k[32];
			reply(s, "555 5.5.4 Error: unsupported RCPT parameter %s",
			    log_quote(k, sizeof(k), pp[i].key, pp[i].keylen, 20));
			return;
		}
	}
	if (!s->esmtp && np > 0) {
		reply(s, "555 5.5.4 Error: RCPT parameters need EHLO");
		return;
	}

	const struct config_domain *d = NULL;
	if (a.is_postmaster) {
		/* RFC 5321 4.5.1: <Postmaster> without a domain MUST be accepted. */
		d = s->cfg->ndomains > 0 ? &s->cfg->domains[0] : NULL;
		if (d == NULL) {
			reply(s, "451 4.3.0 Error: no local domain for postmaster");
			return;
		}
		snprintf(addr, sizeof(addr), "postmaster@%s", d->name);
	} else {
		if (smtp_addr_format(&a, addr, sizeof(addr)) < 0) {
			reply(s, "%s", addr_error_reply(SMTP_ADDR_ERR_PATH_TOO_LONG, false));
			return;
		}
		if (!a.is_literal)
			d = config_find_domain(s->cfg, a.domain, strlen(a.domain));
	}
	log_quote(q, sizeof(q), addr, strlen(addr), SMTP_ADDR_PATH_MAX);
	/* Who may relay here: authenticated users and relay_networks
	 * clients, each if the listener allows it; nobody else, whatever
	 * the listener says, so tern is never an open relay. */
	bool may_relay = (s->auth_user != NULL && s->listener->relay_auth) ||
	    (s->client->relay_ok && s->listener->relay_networks);
	if (d != NULL && !may_relay && !s->listener->receive &&
	    !a.is_postmaster) {
		/* a listener that only serves its own users */
		reply(s, "554 5.7.1 <%s>: Recipient address rejected: Access denied", q);
		verdict = "receive-denied";
		goto log;
	}
	if (d != NULL) {
		if (!a.is_postmaster && local_lookup(d, a.local_value,
		    strlen(a.local_value)) == LOCAL_LOOKUP_UNKNOWN) {
			/* Refuse now: accepting and bouncing later is backscatter. */
			reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", q);
			verdict = "unknown";
			goto log;
		}
	} else if (!may_relay) {
		/* Never an open relay (RFC 5321 3.6.2). */
		reply(s, "554 5.7.1 <%s>: Relay access denied", q);
		verdict = "relay-denied";
		goto log;
	}
	char orcpt_buf[ORCPT_MAX + 1];
	if (orcpt != NULL) {
		memcpy(orcpt_buf, orcpt->val, orcpt->vallen);
		orcpt_buf[orcpt->vallen] = '\0';
	}
	if (d == NULL && !a.is_literal && s->dcheck != NULL) {
		/* Ask DNS about the domain before saying 250; input waits. */
		util_strlcpy(s->pend_addr, addr, sizeof(s->pend_addr));
		s->pend_has_orcpt = orcpt != NULL;
		if (orcpt != NULL)
			util_strlcpy(s->pend_orcpt, orcpt_buf, sizeof(s->pend_orcpt));
		s->pend_notify = notify;
		wait_queue(s);
		s->dcheck_handle = s->dcheck->start(s->dcheck_ctx, a.domain,
		    domain_checked, s);
		return;
	}
	rcpt_accept(s, addr, orcpt ? orcpt_buf : NULL, notify, d != NULL, q);
	return;
log:
	log_info("smtp session=%s event=rcpt to=<%s> result=%s", s->id, q, verdict);
}

static bool
data_precheck(struct smtp_session *s, const char *verb)
{
	struct transaction *t = &s->tx;

	if (!need_helo(s))
		return false;
	if (s->state != STATE_MAIL) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return false;
	}
	if (t->env.nrcpts == 0) {
		if (t->rcpt_attempts == 0)
			reply(s, "503 5.5.1 Error: need RCPT command");
		else
			reply(s, "554 5.5.1 Error: no valid recipients");
		return false;
	}
	(void)verb;
	return true;
}

static void
do_data(struct smtp_session *s, const char *args, size_t len)
{
	if (!no_args(s, len, "DATA"))
		return;
	if (s->tx.bdat) {
		/* RFC 3030 2: no DATA within a BDAT transaction */
		reply(s, "503 5.5.1 Error: DATA after BDAT");
		return;
	}
	if (!data_precheck(s, "DATA"))
		return;
	s->tx.bdat = false;
	wait_queue(s);
	s->tx.qtxn = s->qops->begin(s->qctx, &s->tx.env, begin_done, s);
}

/*
 * BDAT chunk-size [LAST] (RFC 3030 2). The chunk is always consumed, even
 * when the command fails, or its octets would be read as commands.
 */
static void
do_bdat(struct smtp_session *s, const char *args, size_t len)
{
	struct transaction *t = &s->tx;
	uint64_t n = 0;
	size_t i = 0;
	bool last = false;

	while (i < len && args[i] >= '0' && args[i] <= '9') {
		if (n > (UINT64_MAX - 9) / 10) {
			reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
			return;
		}
		n = n * 10 + (uint64_t)(args[i] - '0');
		i++;
	}
	if (i == 0 || i > 20) {
		/* We cannot know how much to skip: the stream is lost. */
		reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		return;
	}
	const char *why = NULL;
	if (i < len && args[i] != ' ') {
		/* "BDAT 1x": no trustworthy size, nothing to consume. */
		reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		return;
	}
	if (i < len) {
		if (!util_ascii_casecmp_n(args + i + 1, len - i - 1, "LAST", 4))
			/* The size is known: the chunk is still consumed, so
			 * its octets can never be taken for commands. */
			why = "501 5.5.4 Syntax: BDAT chunk-size [LAST]";
		else
			last = true;
	}

	bool ok = true;
	if (why != NULL)
		;
	else if (s->state == STATE_NEW)
		why = "503 5.5.1 Error: send HELO/EHLO first";
	else if (s->state != STATE_MAIL)
		why = "503 5.5.1 Error: need MAIL command";
	else if (t->env.nrcpts == 0)
		why = t->rcpt_attempts == 0 ? "503 5.5.1 Error: need RCPT command" :
		    "554 5.5.1 Error: no valid recipients";
	if (why != NULL) {
		/* Consume the chunk in a throw-away transaction. */
		ok = false;
		tx_reset(s);
		t->bdat = true;
		t->bdat_failed = true;
		util_strlcpy(t->fail_buf, why, sizeof(t->fail_buf));
		t->fail_reply = t->fail_buf;
	}
	t->bdat = true;
	t->bdat_last = last;
	t->chunk_left = n;
	t->chunk_size = n;
	if (ok && t->qtxn == NULL && t->queue_id[0] == '\0' && !t->bdat_failed) {
		wait_queue(s);
		t->qtxn = s->qops->begin(s->qctx, &t->env, begin_done, s);
		return;
	}
	s->state = STATE_BDAT;
	set_timeout_for_state(s);
}

/* A BDAT chunk has been read completely. */
static void
bdat_chunk_done(struct smtp_session *s)
{
	struct transaction *t = &s->tx;

	if (t->bdat_failed) {
		reply_raw(s, t->fail_reply ? t->fail_reply :
		    "554 5.5.1 Error: transaction failed");
		/* A failed chunk ends the transaction (RFC 3030 4). */
		tx_reset(s);
		s->state = s->helo[0] != '\0' ? STATE_READY : STATE_NEW;
		set_timeout_for_state(s);
		return;
	}
	if (!t->bdat_last) {
		if (t->body_error == BODY_TOO_BIG) {
			/* No point reading further chunks of a message we refuse. */
			reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
			tx_reset(s);
			s->state = STATE_READY;
		} else {
			reply(s, "250 2.0.0 %" PRIu64 " octets received", t->chunk_size);
			s->state = STATE_MAIL;
		}
		set_timeout_for_state(s);
		return;
	}
	content_end(s);
}

/* ------------------------------------------------------------------ */
/* AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN */

static void
auth_log(struct smtp_session *s, const char *user, size_t ulen,
    const char *result)
{
	char u[SASL_FIELD_MAX * 4 + 8];

	log_info("smtp session=%s event=auth mech=%s user=\"%s\" result=%s",
	    s->id, s->auth_mech ? s->auth_mech : "-",
	    log_quote(u, sizeof(u), user, ulen, SASL_FIELD_MAX), result);
}

/* The exchange ends without a verification: back to commands. */
static void
auth_end(struct smtp_session *s)
{
	s->auth_step = AUTH_STEP_NONE;
	explicit_bzero(s->auth_try, sizeof(s->auth_try));
	s->state = STATE_READY;
	set_timeout_for_state(s);
}

static void
auth_done(void *arg, enum smtp_auth_verdict v)
{
	struct smtp_session *s = arg;
	size_t ulen = strlen(s->auth_try);

	s->auth_handle = NULL;
	switch (v) {
	case SMTP_AUTH_OK:
		s->auth_user = config_find_passwd(s->cfg, s->auth_try, ulen);
		if (s->auth_user == NULL) {
			/* the verifier and the config disagree: never */
			reply(s, "454 4.7.0 Temporary authentication failure");
			auth_log(s, s->auth_try, ulen, "tempfail");
			break;
		}
		reply(s, "235 2.7.0 Authentication successful");
		auth_log(s, s->auth_try, ulen, "ok");
		break;
	case SMTP_AUTH_FAILED:
		reply(s, "535 5.7.8 Error: authentication failed");
		auth_log(s, s->auth_try, ulen, "failed");
		break;
	case SMTP_AUTH_LOCKED:
		reply(s, "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later", s->cfg->hostname);
		auth_log(s, s->auth_try, ulen, "locked");
		explicit_bzero(s->auth_try, sizeof(s->auth_try));
		s->auth_step = AUTH_STEP_NONE;
		session_close(s);
		resume(s, STATE_CLOSED);
		return;
	case SMTP_AUTH_TEMPFAIL:
		reply(s, "454 4.7.0 Temporary authentication failure");
		auth_log(s, s->auth_try, ulen, "tempfail");
		break;
	}
	s->auth_step = AUTH_STEP_NONE;
	explicit_bzero(s->auth_try, sizeof(s->auth_try));
	resume(s, STATE_READY);
}

/* Hand user and password to the verifier and wait for its answer. */
static void
auth_verify(struct smtp_session *s, const char *user, size_t ulen,
    const char *pass, size_t plen)
{
	memcpy(s->auth_try, user, ulen);
	s->auth_try[ulen] = '\0';
	s->auth_step = AUTH_STEP_NONE;
	wait_queue(s);
	s->auth_handle = s->aops->start(s->actx, s->client->addr, user, ulen,
	    pass, plen, auth_done, s);
}

/* A user name or password must be 1..255 octets without NUL or line
 * ends (RFC 4616 2: UTF-8 without NUL). */
static bool
auth_field_ok(const char *p, size_t n)
{
	if (n == 0 || n > SASL_FIELD_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
			return false;
	return true;
}

/*
 * One client response of the exchange (the initial response or a line
 * after a 334), still base64. Replies, or starts a verification.
 */
static void
auth_response(struct smtp_session *s, const char *line, size_t len)
{
	unsigned char dec[SMTP_SESSION_AUTH_LINE_MAX / 4 * 3 + 3];
	ssize_t n;

	/* RFC 4954 4: "*" cancels, with a 501 */
	if (len == 1 && line[0] == '*') {
		reply(s, "501 5.7.0 Authentication aborted");
		auth_log(s, s->auth_try, strlen(s->auth_try), "aborted");
		auth_end(s);
		return;
	}
	/* RFC 4954 4: "=" is an empty initial response; base64 is strict */
	if (len == 1 && line[0] == '=')
		n = 0;
	else if ((n = sasl_b64_decode(line, len, dec, sizeof(dec))) < 0 ||
	    (n == 0 && len > 0)) {
		reply(s, "501 5.5.2 Error: cannot decode response");
		auth_end(s);
		return;
	}
	if (len == 0) {
		/* an empty line is not base64 of anything, not even "" */
		reply(s, "501 5.5.2 Error: cannot decode response");
		auth_end(s);
		return;
	}
	switch (s->auth_step) {
	case AUTH_STEP_PLAIN: {
		struct sasl_plain pl;

		if (!sasl_plain_parse(dec, (size_t)n, &pl) ||
		    !auth_field_ok(pl.authcid, pl.authcid_len) ||
		    !auth_field_ok(pl.passwd, pl.passwd_len)) {
			reply(s, "501 5.5.2 Error: malformed PLAIN response");
			auth_end(s);
			break;
		}
		/* RFC 4616 2: an authzid other than the authcid asks to act
		 * as someone else; tern has no such right to give. */
		if (pl.authzid_len > 0 && (pl.authzid_len != pl.authcid_len ||
		    memcmp(pl.authzid, pl.authcid, pl.authcid_len) != 0)) {
			reply(s, "535 5.7.8 Error: authentication failed: "
			    "authorization identity not allowed");
			auth_log(s, pl.authcid, pl.authcid_len, "bad-authzid");
			auth_end(s);
			break;
		}
		auth_verify(s, pl.authcid, pl.authcid_len, pl.passwd,
		    pl.passwd_len);
		break;
	}
	case AUTH_STEP_LOGIN_USER:
		if (!auth_field_ok((const char *)dec, (size_t)n)) {
			reply(s, "501 5.5.2 Error: malformed user name");
			auth_end(s);
			break;
		}
		memcpy(s->auth_try, dec, (size_t)n);
		s->auth_try[n] = '\0';
		s->auth_step = AUTH_STEP_LOGIN_PASS;
		s->state = STATE_AUTH;
		set_timeout_for_state(s);
		reply(s, "334 UGFzc3dvcmQ6");        /* "Password:" */
		break;
	case AUTH_STEP_LOGIN_PASS:
		if (!auth_field_ok((const char *)dec, (size_t)n)) {
			reply(s, "501 5.5.2 Error: malformed password");
			auth_end(s);
			break;
		}
		auth_verify(s, s->auth_try, strlen(s->auth_try),
		    (const char *)dec, (size_t)n);
		break;
	case AUTH_STEP_NONE:
		ASSERT(!"AUTH response without an exchange");
	}
	explicit_bzero(dec, sizeof(dec));
}

static void
do_auth(struct smtp_session *s, const char *args, size_t len)
{
	size_t ml = 0;

	if (!need_helo(s))
		return;
	if (!auth_enabled(s) || !s->esmtp) {
		reply(s, "503 5.5.1 Error: authentication not enabled");
		return;
	}
	/* RFC 4954 4: never twice, never inside a transaction (503) */
	if (s->auth_user != NULL) {
		reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != STATE_READY) {
		reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (!auth_usable(s)) {
		/* RFC 4954 6 */
		reply(s, "538 5.7.11 Encryption required for requested "
		    "authentication mechanism");
		return;
	}
	if (s->aops->throttled != NULL &&
	    s->aops->throttled(s->actx, s->client->addr)) {
		reply(s, "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later", s->cfg->hostname);
		log_info("smtp session=%s event=disconnect reason=auth-throttled",
		    s->id);
		session_close(s);
		return;
	}
	while (ml < len && args[ml] != ' ')
		ml++;
	const char *ir = ml < len ? args + ml + 1 : NULL;
	size_t irlen = ml < len ? len - ml - 1 : 0;
	if (ml == 0 || (ir != NULL && (irlen == 0 || memchr(ir, ' ', irlen)))) {
		reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	s->auth_try[0] = '\0';
	if (util_ascii_casecmp_n(args, ml, "PLAIN", 5)) {
		s->auth_mech = "PLAIN";
		s->auth_step = AUTH_STEP_PLAIN;
		if (ir != NULL) {
			auth_response(s, ir, irlen);
			return;
		}
		/* RFC 4954 4: an empty challenge is "334 " */
		s->state = STATE_AUTH;
		set_timeout_for_state(s);
		evbuffer_add(s->out, "334 \r\n", 6);
		return;
	}
	if (util_ascii_casecmp_n(args, ml, "LOGIN", 5)) {
		s->auth_mech = "LOGIN";
		s->auth_step = AUTH_STEP_LOGIN_USER;
		if (ir != NULL) {
			/* some clients send the user name at once */
			auth_response(s, ir, irlen);
			return;
		}
		s->state = STATE_AUTH;
		set_timeout_for_state(s);
		reply(s, "334 VXNlcm5hbWU6");        /* "Username:" */
		return;
	}
	/* RFC 4954 4: 504, 5.5.4 */
	reply(s, "504 5.5.4 Error: unsupported authentication mechanism");
}

/*
 * Read one AUTH response line (STATE_AUTH), up to
 * SMTP_SESSION_AUTH_LINE_MAX octets; a longer one is discarded to its
 * end and fails the exchange (RFC 4954 4: 500 5.5.6). Returns 1 when a
 * line was handled, 0 if more input is needed.
 */
static int
read_auth_line(struct smtp_session *s)
{
	size_t avail = evbuffer_get_length(s->in);
	size_t lim = avail < SMTP_SESSION_AUTH_LINE_MAX ? avail :
	    SMTP_SESSION_AUTH_LINE_MAX;
	struct evbuffer_ptr endp, pos;
	char buf[SMTP_SESSION_AUTH_LINE_MAX + 1];

	if (avail == 0)
		return 0;
	if (evbuffer_ptr_set(s->in, &endp, lim, EVBUFFER_PTR_SET) != 0)
		return 0;
	pos = evbuffer_search_range(s->in, "\n", 1, NULL, &endp);
	if (pos.pos < 0) {
		if (avail < SMTP_SESSION_AUTH_LINE_MAX)
			return 0;
		evbuffer_drain(s->in, lim);
		s->skipping_auth_line = true;
		return 1;
	}
	size_t rawlen = (size_t)pos.pos + 1;
	size_t len = rawlen - 1;
	evbuffer_remove(s->in, buf, rawlen);
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (s->skipping_auth_line) {
		s->skipping_auth_line = false;
		reply(s, "500 5.5.6 Authentication Exchange line is too long");
		auth_end(s);
	} else {
		auth_response(s, buf, len);
	}
	explicit_bzero(buf, rawlen);
	return 1;
}

static void
do_rset(struct smtp_session *s, const char *args, size_t len)
{
	if (!no_args(s, len, "RSET"))
		return;
	tx_reset(s);
	if (s->state != STATE_NEW)
		s->state = STATE_READY;
	reply(s, "250 2.0.0 Ok");
}

static void
do_noop(struct smtp_session *s, const char *args, size_t len)
{
	/* RFC 5321 4.1.1.9: a parameter may be given and is ignored. */
	reply(s, "250 2.0.0 Ok");
}

static void
do_vrfy(struct smtp_session *s, const char *args, size_t len)
{
	if (len == 0) {
		reply(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	/* RFC 5321 3.5.3: 252 when we will not say (address harvesting). */
	reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
do_help(struct smtp_session *s, const char *args, size_t len)
{
	reply(s, "214 2.0.0 Commands: EHLO HELO AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT");
}

static void
do_quit(struct smtp_session *s, const char *args, size_t len)
{
	/* RFC 5321 4.1.1.10: the receiver MUST send 221 OK, even with args. */
	reply(s, "221 2.0.0 Bye");
	log_info("smtp session=%s event=quit", s->id);
	session_close(s);
}

static void
do_not_impl(struct smtp_session *s, const char *args, size_t len)
{
	reply(s, "502 5.5.1 Error: command not implemented");
}

/* RFC 3207 4. */
static void
do_starttls(struct smtp_session *s, const char *args, size_t len)
{
	if (s->tls_active) {
		reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->tls_offer || s->io->starttls == NULL) {
		reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (len > 0) {
		reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->state == STATE_MAIL) {
		reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	log_info("smtp session=%s event=starttls", s->id);
	/* Nothing more is read in clear text: the transport discards what
	 * the client pipelined after the command (RFC 3207 5). */
	s->state = STATE_TLS;
	s->io->set_timeout(s->io_arg, s->cfg->timeout_command);
	s->io->starttls(s->io_arg);
}

static void
do_http(struct smtp_session *s, const char *args, size_t len)
{
	/* A web client or proxy abused to talk SMTP: stop at once. */
	reply(s, "421 4.7.0 %s Error: HTTP or proxy command refused", s->cfg->hostname);
	log_info("smtp session=%s event=disconnect reason=http-command", s->id);
	session_close(s);
}

static const struct command commands[] = {
	{ "EHLO", do_ehlo, false },
	{ "HELO", do_helo, false },
	{ "MAIL", do_mail, true },
	{ "RCPT", do_rcpt, true },
	{ "DATA", do_data, false },
	{ "BDAT", do_bdat, false },
	{ "RSET", do_rset, false },
	{ "NOOP", do_noop, false },
	{ "VRFY", do_vrfy, false },
	{ "HELP", do_help, false },
	{ "QUIT", do_quit, false },
	{ "EXPN", do_not_impl, false },
	{ "TURN", do_not_impl, false },
	{ "ETRN", do_not_impl, false },
	{ "SEND", do_not_impl, false },
	{ "SOML", do_not_impl, false },
	{ "SAML", do_not_impl, false },
	{ "STARTTLS", do_starttls, false },
	{ "AUTH", do_auth, true },
	{ "GET", do_http, false },
	{ "POST", do_http, false },
	{ "CONNECT", do_http, false },
	{ "PUT", do_http, false },
	{ "HEAD", do_http, false },
};

/* Run one command line (without its line ending). */
static void
dispatch(struct smtp_session *s, const char *line, size_t len, size_t rawlen)
{
	size_t vl = 0;

	while (vl < len && line[vl] != ' ')
		vl++;
	for (size_t i = 0; i < len; i++) {
		if (line[i] == '\0' || line[i] == '\r') {
			reply(s, "500 5.5.2 Error: invalid character in command");
			return;
		}
	}
	for (size_t i = 0; i < nitems(commands); i++) {
		const struct command *c = &commands[i];
		if (!util_ascii_casecmp_n(line, vl, c->verb, strlen(c->verb)))
			continue;
		if (!c->params_line && rawlen > SMTP_SESSION_LINE_MAX) {
			reply(s, "500 5.5.2 Error: line too long");
			return;
		}
		const char *args = vl < len ? line + vl + 1 : line + len;
		size_t alen = vl < len ? len - vl - 1 : 0;
		c->fn(s, args, alen);
		return;
	}
	if (rawlen > SMTP_SESSION_LINE_MAX)
		reply(s, "500 5.5.2 Error: line too long");
	else
		reply(s, "500 5.5.1 Error: command not recognized");
}

/* ------------------------------------------------------------------ */
/* input */

/*
 * Read one command line. Returns 1 with a line dispatched, 0 if more input
 * is needed. A line longer than SMTP_SESSION_PARAM_LINE_MAX is discarded up
 * to its end with one "line too long" reply (RFC 5321 4.5.3.1.4).
 */
static int
read_command(struct smtp_session *s)
{
	size_t avail = evbuffer_get_length(s->in);
	size_t lim = avail < SMTP_SESSION_PARAM_LINE_MAX ? avail : SMTP_SESSION_PARAM_LINE_MAX;
	struct evbuffer_ptr endp, pos;

	if (avail == 0)
		return 0;
	if (evbuffer_ptr_set(s->in, &endp, lim, EVBUFFER_PTR_SET) != 0)
		return 0;
	pos = evbuffer_search_range(s->in, "\n", 1, NULL, &endp);
	if (pos.pos < 0) {
		if (avail < SMTP_SESSION_PARAM_LINE_MAX)
			return 0;   /* wait for the rest of the line */
		/* Too long and no end in sight: discard what we have and the
		 * rest up to its LF, then answer once. */
		evbuffer_drain(s->in, lim);
		s->skipping_line = true;
		return 1;
	}
	size_t rawlen = (size_t)pos.pos + 1;
	char *line = (char *)evbuffer_pullup(s->in, (ssize_t)rawlen);
	size_t len = rawlen - 1;
	bool crlf = len > 0 && line[len - 1] == '\r';
	if (crlf)
		len--;
	if (s->skipping_line) {
		s->skipping_line = false;
		evbuffer_drain(s->in, rawlen);
		reply(s, "500 5.5.2 Error: line too long");
		return 1;
	}
	if (!crlf && s->cfg->bare_newline == CONFIG_BARE_NEWLINE_REJECT) {
		evbuffer_drain(s->in, rawlen);
		reply(s, "500 5.5.2 Error: bare <LF> received; commands must end with <CR><LF>");
		return 1;
	}
	char buf[SMTP_SESSION_PARAM_LINE_MAX + 1];
	memcpy(buf, line, len);
	buf[len] = '\0';
	evbuffer_drain(s->in, rawlen);
	s->last_cmd_crlf = crlf;
	dispatch(s, buf, len, rawlen);
	return 1;
}

/*
 * DATA content: line starts, dot-stuffing and end-of-data (RFC 5321
 * 4.5.2, 4.1.1.4). Only ".\r\n" at the start of a line whose predecessor
 * ended with CRLF ends the message. A "." line after a bare LF stays
 * content (kept with its dot; CRLF-normalised, it is re-stuffed when
 * relayed). Returns true at end-of-data.
 */
static bool
data_feed(struct smtp_session *s)
{
	struct transaction *t = &s->tx;
	struct evbuffer_iovec v[8];
	int nv;

	while (evbuffer_get_length(s->in) > 0 &&
	    (nv = evbuffer_peek(s->in, -1, NULL, v, 8)) > 0) {
		size_t consumed = 0;
		bool end = false;
		for (int k = 0; k < nv && !end; k++) {
			const char *p = v[k].iov_base;
			size_t n = v[k].iov_len, i = 0;
			while (i < n) {
				char c = p[i];
				switch (t->dl) {
				case DL_BOL:
					if (c == '.') {
						t->dl = DL_DOT;
						i++;
					} else {
						t->dl = DL_TEXT;
					}
					continue;
				case DL_DOT:
					if (c == '\r') {
						t->dl = DL_DOT_CR;
						i++;
						continue;
					}
					if (c == '\n')
						/* "." + bare LF: not an end; keep the dot */
						body_put(s, ".", 1);
					/* else: a stuffed dot, removed (4.5.2) */
					t->dl = DL_TEXT;
					continue;
				case DL_DOT_CR:
					if (c == '\n' && t->prev_crlf) {
						i++;
						end = true;
						break;
					}
					if (c == '\n')
						body_put(s, ".", 1);  /* after bare LF */
					/* ".\r" + other: dot was stuffing */
					body_put(s, "\r", 1);
					t->dl = DL_TEXT;
					continue;
				case DL_TEXT: {
					const char *nl = memchr(p + i, '\n', n - i);
					size_t span = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
					body_put(s, p + i, span);
					if (nl != NULL) {
						/* body_put just classified this ending */
						t->prev_crlf = !t->last_nl_bare;
						t->dl = DL_BOL;
					}
					i += span;
					continue;
				}
				}
				if (end)
					break;
			}
			consumed += i;
		}
		evbuffer_drain(s->in, consumed);
		if (end)
			return true;
		if (consumed == 0) {
			/* only empty chains in view: coalesce, never spin */
			size_t avail = evbuffer_get_length(s->in);
			evbuffer_pullup(s->in, (ssize_t)(avail < 4096 ? avail : 4096));
		}
		if (s->qops->congested != NULL && s->qops->congested(s->qctx))
			return false;
	}
	return false;
}

static bool
bdat_feed(struct smtp_session *s)
{
	struct transaction *t = &s->tx;

	while (t->chunk_left > 0) {
		/* By length, never by peeking chains: libevent may keep an
		 * empty chain at the front, and a zero-length step would spin. */
		size_t n = evbuffer_get_length(s->in);
		if (n == 0)
			return false;
		if (n > t->chunk_left)
			n = (size_t)t->chunk_left;
		if (n > STAGE_FLUSH)
			n = STAGE_FLUSH;
		const char *p = (const char *)evbuffer_pullup(s->in, (ssize_t)n);
		if (!t->bdat_failed)
			body_put(s, p, n);
		evbuffer_drain(s->in, n);
		t->chunk_left -= n;
		if (t->chunk_left > 0 && s->qops->congested != NULL &&
		    s->qops->congested(s->qctx))
			return false;
	}
	return true;
}

static void
session_process_input(struct smtp_session *s)
{
	while (!s->closing) {
		if (s->nerrors >= s->cfg->max_errors) {
			reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->hostname);
			log_info("smtp session=%s event=disconnect reason=too-many-errors", s->id);
			session_close(s);
			return;
		}
		if (evbuffer_get_length(s->out) > SMTP_SESSION_OUTPUT_MAX)
			return;   /* resumed when the client reads its replies */
		switch (s->state) {
		case STATE_WAIT:
		case STATE_TLS:
		case STATE_CLOSED:
			return;
		case STATE_DATA:
			if (!data_feed(s))
				return;
			content_end(s);
			break;
		case STATE_BDAT:
			if (!bdat_feed(s))
				return;
			bdat_chunk_done(s);
			break;
		case STATE_AUTH:
			if (read_auth_line(s) == 0)
				return;
			break;
		default:
			if (read_command(s) == 0)
				return;
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* public */

struct smtp_session *
smtp_session_new(const struct config *cfg,
    const struct smtp_session_client *client, struct evbuffer *in,
    struct evbuffer *out, const struct smtp_session_io *io, void *io_arg,
    const struct queue_client_ops *queue, void *queue_ctx)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));

	snprintf(s->id, sizeof(s->id), "%012" PRIx64 "%04x",
	    (uint64_t)((uint64_t)util_now_us() & UINT64_C(0xffffffffffff)),
	    ++session_counter & 0xffff);
	s->cfg = cfg;
	s->client = client;
	s->in = in;
	s->out = out;
	s->stage = evbuffer_new();
	s->hdr = evbuffer_new();
	if (s->stage == NULL || s->hdr == NULL)
		fatal("out of memory");
	s->listener = client->listener != NULL ? client->listener :
	    config_default_listener();
	s->io = io;
	s->io_arg = io_arg;
	s->qops = queue;
	s->qctx = queue_ctx;
	s->state = STATE_NEW;
	envelope_init(&s->tx.env);
	return s;
}

void
smtp_session_set_domain_check(struct smtp_session *s,
    const struct smtp_domain_check_ops *ops, void *ctx)
{
	s->dcheck = ops;
	s->dcheck_ctx = ctx;
}

void
smtp_session_set_auth(struct smtp_session *s, const struct smtp_auth_ops *ops,
    void *ctx)
{
	s->aops = ops;
	s->actx = ctx;
}

void
smtp_session_set_starttls(struct smtp_session *s, bool offer)
{
	s->tls_offer = offer;
}

void
smtp_session_tls_started(struct smtp_session *s, struct evbuffer *in,
    struct evbuffer *out, const char *desc)
{
	s->in = in;
	s->out = out;
	s->tls_active = true;
	util_strlcpy(s->tls_desc, desc, sizeof(s->tls_desc));
	log_info("smtp session=%s event=tls tls=%s", s->id, s->tls_desc);
	if (s->state != STATE_TLS)
		return;   /* implicit TLS: the greeting comes next */
	/* RFC 3207 4.2: discard all knowledge obtained from the client
	 * before TLS; it must send EHLO again. */
	tx_reset(s);
	s->helo[0] = '\0';
	s->esmtp = false;
	s->auth_user = NULL;
	s->auth_step = AUTH_STEP_NONE;
	s->state = STATE_NEW;
	set_timeout_for_state(s);
}

void
smtp_session_start(struct smtp_session *s)
{
	log_info("smtp session=%s event=connect client=%s:%u relay=%s", s->id,
	    s->client->addr, s->client->port, s->client->relay_ok ? "yes" : "no");
	if (auth_enabled(s) && s->aops->throttled != NULL &&
	    s->aops->throttled(s->actx, s->client->addr)) {
		/* Too many failed AUTH attempts from this address lately.
		 * Only where AUTH is offered: a listener without it (the MX
		 * on port 25) serves the address as ever, or anyone sharing
		 * its NAT or /64 could cut a legitimate MTA off by failing
		 * AUTH on the submission port. */
		reply(s, "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later", s->cfg->hostname);
		log_info("smtp session=%s event=disconnect reason=auth-throttled",
		    s->id);
		session_close(s);
		return;
	}
	/* No enhanced code on the greeting (RFC 2034 4). */
	evbuffer_add_printf(s->out, "220 %s ESMTP tern\r\n", s->cfg->hostname);
	set_timeout_for_state(s);
}

void
smtp_session_process(struct smtp_session *s)
{
	if (s->in_process)
		return;
	s->in_process = true;
	session_process_input(s);
	s->in_process = false;
}

void
smtp_session_timeout(struct smtp_session *s)
{
	if (s->closing)
		return;
	reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
	log_info("smtp session=%s event=disconnect reason=timeout", s->id);
	session_close(s);
}

void
smtp_session_shutdown(struct smtp_session *s)
{
	if (s->closing)
		return;
	/* during a handshake the buffers belong to the TLS layer */
	if (s->state != STATE_TLS)
		reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
	session_close(s);
}

bool
smtp_session_closing(const struct smtp_session *s)
{
	return s->closing;
}

bool
smtp_session_waiting(const struct smtp_session *s)
{
	return s->state == STATE_WAIT;
}

const char *
smtp_session_id(const struct smtp_session *s)
{
	return s->id;
}

void
smtp_session_free(struct smtp_session **sp)
{
	struct smtp_session *s = *sp;

	if (s == NULL)
		return;
	if (s->tx.qtxn != NULL)
		s->qops->abort(s->qctx, s->tx.qtxn);
	s->tx.qtxn = NULL;
	if (s->dcheck_handle != NULL)
		s->dcheck->cancel(s->dcheck_ctx, s->dcheck_handle);
	if (s->auth_handle != NULL)
		s->aops->cancel(s->actx, s->auth_handle);
	explicit_bzero(s->auth_try, sizeof(s->auth_try));
	envelope_clear(&s->tx.env);
	evbuffer_free(s->stage);
	evbuffer_free(s->hdr);
	free(s);
	*sp = NULL;
}
