/*
 * smtp_client.c - the SMTP client protocol engine (see smtp_client.h).
 *
 * Shape: every command written pushes the stage of its reply on a FIFO
 * (expect[]); every complete reply read pops one and goes to the handler
 * of that stage (handlers[]). Replies are matched to commands only by
 * counting, never by code or text (RFC 2920 3.1). smtp_client_process()
 * loops: read one reply, else write what the state allows (one command at
 * a time without PIPELINING; MAIL, every RCPT and DATA in one batch with
 * it), else stop. Writing stops at the output high-water mark and resumes
 * when the caller says the output drained, so a large recipient list or
 * message is never copied whole.
 *
 * The server is hostile: reply lines are bounded (SMTP_CLIENT_LINE_MAX),
 * so is their number, codes must be three digits 2yz..5yz with the same
 * code on every line, a reply nobody asked for is a protocol error, and a
 * recipient is only ever DELIVERED by a 2xx to the final "." after its own
 * 2xx to RCPT.
 *
 * AUTH (RFC 4954) sits between EHLO and the first transaction: state
 * CS_AUTH holds transactions back until 235. The credentials only leave
 * this file base64-encoded on the wire; the buffers that held them are
 * zeroed, and no log line carries them.
 */
#include <event2/buffer.h>
#include <inttypes.h>

#include "mail/envelope.h"
#include "lib/conn.h"
#include "lib/log.h"
#include "mail/smtp_addr.h"
#include "relay/smtp_client.h"
#include "lib/util.h"

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

static unsigned client_counter;

/* ------------------------------------------------------------------ */
/* small helpers */

static const char *
stage_name(enum smtp_client_stage st)
{
	static const char *const names[] = { "local decision", "greeting",
		"EHLO", "HELO", "RSET", "MAIL FROM", "RCPT TO", "DATA",
		"message content", "end of data", "QUIT", "AUTH", "STARTTLS" };

	return (size_t)st < nitems(names) ? names[st] : "?";
}

static void
expect_push(struct smtp_client *c, enum smtp_client_stage st)
{
	ASSERT(c->ex_len < EXPECT_MAX);
	c->expect[(c->ex_head + c->ex_len) % EXPECT_MAX] = (uint8_t)st;
	c->ex_len++;
}

static enum smtp_client_stage
expect_pop(struct smtp_client *c)
{
	enum smtp_client_stage st;

	ASSERT(c->ex_len > 0);
	st = (enum smtp_client_stage)c->expect[c->ex_head];
	c->ex_head = (c->ex_head + 1) % EXPECT_MAX;
	c->ex_len--;
	return st;
}

static enum smtp_client_stage
expect_head(const struct smtp_client *c)
{
	return (enum smtp_client_stage)c->expect[c->ex_head];
}

static void
set_reply(struct smtp_client_reply *r, unsigned code, const char *enh,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The engine's own reply (code 0 unless a server code applies). */
static void
set_reply(struct smtp_client_reply *r, unsigned code, const char *enh,
    const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	util_strlcpy(r->enhanced, enh, sizeof(r->enhanced));
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
}

static unsigned
timeout_for(const struct smtp_client *c, enum smtp_client_stage st)
{
	switch (st) {
	case SMTP_CLIENT_STAGE_GREETING: return c->to.greeting;
	case SMTP_CLIENT_STAGE_EHLO:
	case SMTP_CLIENT_STAGE_HELO: return c->to.helo;
	case SMTP_CLIENT_STAGE_RSET: return c->to.rset;
	case SMTP_CLIENT_STAGE_MAIL: return c->to.mail;
	case SMTP_CLIENT_STAGE_RCPT: return c->to.rcpt;
	case SMTP_CLIENT_STAGE_DATA: return c->to.data_init;
	case SMTP_CLIENT_STAGE_BODY: return c->to.data_block;
	case SMTP_CLIENT_STAGE_DOT: return c->to.data_done;
	case SMTP_CLIENT_STAGE_QUIT: return c->to.quit;
	case SMTP_CLIENT_STAGE_AUTH:
	case SMTP_CLIENT_STAGE_STARTTLS: return c->to.helo;
	default: return 0;
	}
}

/* What we wait for now, for timeouts and diagnostics. */
static enum smtp_client_stage
current_stage(const struct smtp_client *c)
{
	if (c->handling)
		return c->handled;
	if (c->handshake)
		return SMTP_CLIENT_STAGE_STARTTLS;
	if (c->ex_len > 0)
		return expect_head(c);
	if (c->tx.active && c->tx.phase == TX_BODY)
		return SMTP_CLIENT_STAGE_BODY;
	return SMTP_CLIENT_STAGE_LOCAL;
}

/* RFC 5321 4.5.3.2: a timer per command and per block of content. The
 * timer restarts whenever something was read or written. */
static void
update_timeout(struct smtp_client *c, bool progress)
{
	unsigned want;

	if (c->closing)
		return;
	want = timeout_for(c, current_stage(c));
	if (progress || want != c->timeout_set) {
		c->timeout_set = want;
		c->io->set_timeout(c->io_arg, want);
	}
}

static void
cmd_write(struct smtp_client *c, enum smtp_client_stage st, const char *line,
    size_t len)
{
	evbuffer_add(c->out, line, len);
	evbuffer_add(c->out, "\r\n", 2);
	expect_push(c, st);
}

/* ------------------------------------------------------------------ */
/* transactions: results and the end */

static void
tx_clear(struct tx *t)
{
	free(t->res);
	free(t->rst);
	free(t->live);
	memset(t, 0, sizeof(*t));
}

/* Give the caller the results and forget the transaction. The state is
 * cleared first so the callback may start the next one. */
static void
tx_done(struct smtp_client *c, enum smtp_client_error err)
{
	struct tx t = c->tx;
	struct smtp_client_result res;

	memset(&c->tx, 0, sizeof(c->tx));
	res.error = err;
	res.peer_dsn = (c->caps & SMTP_CLIENT_CAP_DSN) != 0;
	res.rcpts = t.res;
	res.nrcpts = t.n;
	t.cb(t.cb_arg, &res);
	tx_clear(&t);
}

/* Decide recipient i from a reply: 2xx DELIVERED, 4xx TEMP, 5xx PERM. */
static void
rcpt_final(struct tx *t, size_t i, enum smtp_client_stage st,
    const struct smtp_client_reply *r)
{
	struct smtp_client_rcpt_result *res = &t->res[i];

	/* the engine's own verdicts have code 0 and say it by class */
	char cls = r->code != 0 ? (char)('0' + r->code / 100) : r->enhanced[0];

	res->status = cls == '2' ? SMTP_CLIENT_DELIVERED :
	    cls == '5' ? SMTP_CLIENT_PERMFAIL : SMTP_CLIENT_TEMPFAIL;
	res->stage = st;
	res->reply = *r;
	t->rst[i] = R_DONE;
}

/* Every recipient still open gets r (its class, but never better than
 * TEMPFAIL unless final says so). */
static void
rcpt_all_open(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r, bool final)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->rst[i] == R_DONE)
			continue;
		rcpt_final(t, i, st, r);
		if (!final)
			t->res[i].status = SMTP_CLIENT_TEMPFAIL;
	}
}

/* Accepted recipients get the reply to DATA or to ".". */
static void
rcpt_accepted(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->rst[i] == R_ACCEPTED)
			rcpt_final(t, i, st, r);
}

static const char *const error_names[] = { "none", "greeting", "helo",
	"protocol", "shutdown", "timeout", "lost", "auth", "tls" };

/*
 * The connection is over: every open recipient is TEMPFAIL (with the
 * server's reply if one caused this, else the engine's diagnosis), the
 * transaction's callback runs, then io->close(). c stays valid: the caller
 * frees it later.
 */
static void
conn_fail(struct smtp_client *c, enum smtp_client_error err,
    const struct smtp_client_reply *why)
{
	enum smtp_client_stage st = current_stage(c);

	if (c->closing)
		return;
	c->closing = true;
	c->state = CS_CLOSED;
	/* nothing more is read from this peer (during a handshake the
	 * buffers belong to the TLS layer) */
	if (!c->handshake)
		evbuffer_drain(c->in, evbuffer_get_length(c->in));
	if (why != NULL && why != &c->last)
		c->last = *why;
	char q[SMTP_CLIENT_TEXT_MAX * 4 + 8];
	log_info("client session=%s event=disconnect peer=%s reason=%s stage=%s "
	    "reply=\"%u %s %s\"", c->id, c->params->peer ? c->params->peer : "-",
	    error_names[err], stage_name(st), why ? why->code : 0,
	    why ? why->enhanced : "",
	    why ? log_quote(q, sizeof(q), why->text, strlen(why->text), 200) : "");
	if (c->tx.active) {
		if (c->tx.phase == TX_QUEUED && st == SMTP_CLIENT_STAGE_LOCAL)
			st = SMTP_CLIENT_STAGE_GREETING;
		rcpt_all_open(&c->tx, st, why, false);
		tx_done(c, err);
	}
	c->io->close(c->io_arg, err);
}

/* The engine's diagnosis for a failure without a reply. */
static void
conn_fail_local(struct smtp_client *c, enum smtp_client_error err,
    const char *enh, const char *what)
{
	struct smtp_client_reply r;
	const char *peer = c->params->peer ? c->params->peer : "peer";
	enum smtp_client_stage st = current_stage(c);

	if (st == SMTP_CLIENT_STAGE_DOT)
		/* RFC 5321 4.5.3.2.6, 6.1: the server may have taken it. */
		set_reply(&r, 0, enh, "%s with %s after end of data "
		    "(the message may be delivered twice)", what, peer);
	else
		set_reply(&r, 0, enh, "%s with %s while waiting for %s", what,
		    peer, st == SMTP_CLIENT_STAGE_BODY ? "the message content to be read" :
		    st == SMTP_CLIENT_STAGE_LOCAL ? "nothing" : stage_name(st));
	conn_fail(c, err, &r);
}

/* ------------------------------------------------------------------ */
/* reading replies */

static bool
is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* "d.ddd.ddd" (RFC 3463 2: class 2/4/5, 1-3 digits each) at the start of
 * (p, n), followed by a space or the end. Returns its length, or 0. */
static size_t
enhanced_len(const char *p, size_t n, char cls)
{
	size_t i = 0, k;

	if (n < 5 || p[0] != cls || p[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		for (k = 0; k < 3 && i < n && is_digit(p[i]); k++)
			i++;
		if (k == 0)
			return 0;
		if (part == 0) {
			if (i >= n || p[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && p[i] != ' ')
		return 0;
	return i;
}

/* Append text to the reply being read: printable ASCII only, bounded. */
static void
text_append(struct reply_rd *rd, const char *p, size_t n)
{
	char *t = rd->r.text;
	size_t cap = sizeof(rd->r.text) - 1;

	if (rd->tlen > 0 && n > 0 && rd->tlen < cap)
		t[rd->tlen++] = ' ';
	for (size_t i = 0; i < n && rd->tlen < cap; i++) {
		unsigned char ch = (unsigned char)p[i];
		t[rd->tlen++] = ch == '\t' ? ' ' : (ch >= 32 && ch < 127) ? (char)ch : '?';
	}
	t[rd->tlen] = '\0';
}

static bool
kw_is(const char *p, size_t n, const char *kw)
{
	return util_ascii_casecmp_n(p, n, kw, strlen(kw));
}

/* One EHLO keyword line (RFC 5321 4.1.1.1: ehlo-keyword *(SP ehlo-param)).
 * Unknown keywords are ignored. */
static void
ehlo_line(struct reply_rd *rd, const char *p, size_t n)
{
	static const struct {
		const char *kw;
		unsigned cap;
	} kws[] = {
		{ "PIPELINING", SMTP_CLIENT_CAP_PIPELINING },
		{ "SIZE", SMTP_CLIENT_CAP_SIZE },
		{ "8BITMIME", SMTP_CLIENT_CAP_8BITMIME },
		{ "SMTPUTF8", SMTP_CLIENT_CAP_SMTPUTF8 },
		{ "DSN", SMTP_CLIENT_CAP_DSN },
		{ "CHUNKING", SMTP_CLIENT_CAP_CHUNKING },
		{ "STARTTLS", SMTP_CLIENT_CAP_STARTTLS },
		{ "ENHANCEDSTATUSCODES", SMTP_CLIENT_CAP_ENHANCEDSTATUSCODES },
	};
	size_t kl = 0;

	while (kl < n && p[kl] != ' ')
		kl++;
	/* RFC 4954 3: "AUTH" SP mechanism *(SP mechanism); some old servers
	 * also say "AUTH=PLAIN LOGIN". Only PLAIN and LOGIN are of use. */
	if (kl >= 4 && kw_is(p, 4, "AUTH") && (kl == 4 || p[4] == '=')) {
		size_t j = kl == 4 ? 4 : 5;

		while (j < n) {
			size_t t0;

			while (j < n && p[j] == ' ')
				j++;
			t0 = j;
			while (j < n && p[j] != ' ')
				j++;
			if (kw_is(p + t0, j - t0, "PLAIN"))
				rd->caps |= SMTP_CLIENT_CAP_AUTH_PLAIN;
			else if (kw_is(p + t0, j - t0, "LOGIN"))
				rd->caps |= SMTP_CLIENT_CAP_AUTH_LOGIN;
		}
		return;
	}
	for (size_t i = 0; i < nitems(kws); i++) {
		if (!kw_is(p, kl, kws[i].kw))
			continue;
		rd->caps |= kws[i].cap;
		if (kws[i].cap != SMTP_CLIENT_CAP_SIZE)
			return;
		/* RFC 1870 4: "SIZE" [SP 1*20DIGIT]; absent or 0: no limit.
		 * A malformed value is read as no announced limit. */
		size_t j = kl;
		uint64_t v = 0;
		while (j < n && p[j] == ' ')
			j++;
		size_t d0 = j;
		while (j < n && is_digit(p[j]) && j - d0 < 20) {
			uint64_t dv = (uint64_t)(p[j] - '0');
			v = v > (UINT64_MAX - dv) / 10 ? UINT64_MAX : v * 10 + dv;
			j++;
		}
		rd->size_max = (j > d0 && (j == n || p[j] == ' ')) ? v : 0;
		return;
	}
}

/*
 * Read one reply line. Returns -1 on a protocol error (r describes it),
 * 0 if more input is needed, 1 if a line was consumed and the reply
 * continues, 2 if the reply is complete (in c->rd.r).
 * RFC 5321 4.2: Reply-line = *(Reply-code "-" [textstring] CRLF)
 *               Reply-code [SP textstring] CRLF; codes 2yz..5yz here.
 */
static int
read_line(struct smtp_client *c, bool ehlo, const char **why)
{
	struct reply_rd *rd = &c->rd;
	size_t rawlen;

	switch (conn_line(c->in, SMTP_CLIENT_LINE_MAX, &rawlen)) {
	case CONN_LINE_MORE:
		return 0;
	case CONN_LINE_TOO_LONG:
		*why = "reply line too long";
		return -1;
	case CONN_LINE_OK:
		break;
	}
	char line[SMTP_CLIENT_LINE_MAX];
	evbuffer_remove(c->in, line, rawlen);
	size_t len = rawlen - 1;
	/* CRLF, and a bare LF from sloppy servers, end a line. */
	if (len > 0 && line[len - 1] == '\r')
		len--;

	if (++rd->nlines > SMTP_CLIENT_REPLY_LINES_MAX) {
		*why = "too many reply lines";
		return -1;
	}
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
	    line[1] > '5' || !is_digit(line[2]) || (len > 3 && line[3] != ' ' &&
	    line[3] != '-')) {
		*why = "malformed reply";
		return -1;
	}
	unsigned code = (unsigned)(line[0] - '0') * 100 +
	    (unsigned)(line[1] - '0') * 10 + (unsigned)(line[2] - '0');
	if (rd->nlines == 1) {
		rd->code = code;
	} else if (code != rd->code) {
		*why = "reply code changed within a reply";
		return -1;
	}
	bool more = len > 3 && line[3] == '-';
	const char *txt = len > 4 ? line + 4 : line + len;
	size_t tl = len > 4 ? len - 4 : 0;

	/* RFC 2034 3: the enhanced code starts each line's text. Kept once,
	 * removed from the text where it repeats. RFC 3463 2 has classes 2,
	 * 4 and 5 only: a 3yz reply has none (the queue refuses "3.x.x"). */
	size_t el = line[0] == '3' ? 0 : enhanced_len(txt, tl, line[0]);
	if (el > 0 && el < sizeof(rd->first_enh)) {
		if (rd->nlines == 1) {
			memcpy(rd->first_enh, txt, el);
			rd->first_enh[el] = '\0';
		}
		if (strlen(rd->first_enh) == el && memcmp(rd->first_enh, txt, el) == 0) {
			txt += el;
			tl -= el;
			while (tl > 0 && *txt == ' ') {
				txt++;
				tl--;
			}
		}
	}
	if (ehlo && rd->nlines > 1)
		ehlo_line(rd, txt, tl);
	text_append(rd, txt, tl);
	if (more)
		return 1;
	rd->r.code = rd->code;
	if (rd->first_enh[0] != '\0')
		util_strlcpy(rd->r.enhanced, rd->first_enh, sizeof(rd->r.enhanced));
	else if (line[0] != '3')
		snprintf(rd->r.enhanced, sizeof(rd->r.enhanced), "%c.0.0", line[0]);
	return 2;
}

/* Read a whole reply: -1 error, 0 need more, 1 complete in c->last. */
static int
read_reply(struct smtp_client *c, bool ehlo)
{
	const char *why = NULL;
	int r;

	while ((r = read_line(c, ehlo, &why)) == 1)
		;
	if (r == 0)
		return 0;
	if (r < 0) {
		struct smtp_client_reply e;
		set_reply(&e, 0, "4.5.0", "protocol error: %s from %s", why,
		    c->params->peer ? c->params->peer : "peer");
		memset(&c->rd, 0, sizeof(c->rd));
		/* A garbage greeting is a failed connection: next MX. */
		conn_fail(c, c->ex_len > 0 && expect_head(c) ==
		    SMTP_CLIENT_STAGE_GREETING ? SMTP_CLIENT_ERR_GREETING :
		    SMTP_CLIENT_ERR_PROTOCOL, &e);
		return -1;
	}
	c->last = c->rd.r;
	return 1;
}

/* ------------------------------------------------------------------ */
/* starting a transaction: local checks, then the commands */

/* 8-bit octets in the header section (up to the first empty line). */
static bool
header_has_8bit(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t e = nl ? (size_t)(nl - p) : n;
		size_t le = e > i && p[e - 1] == '\r' ? e - 1 : e;
		if (le == i)
			return false;        /* empty line: the body follows */
		if (util_has_8bit(p + i, le - i))
			return true;
		i = e + 1;
	}
	return false;
}

/* ORCPT value "addr-type;xtext" (RFC 3461 4.2), bounded. */
static bool
orcpt_valid(const char *v)
{
	size_t n = strlen(v);
	const char *semi = memchr(v, ';', n);

	if (n > ORCPT_MAX || semi == NULL || semi == v)
		return false;
	for (const char *q = v; q < semi; q++) {
		unsigned char ch = (unsigned char)*q;
		/* addr-type is an atom; keep to letters, digits and '-' */
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    is_digit((char)ch) || ch == '-'))
			return false;
	}
	return smtp_xtext_valid(semi + 1, n - (size_t)(semi + 1 - v));
}

static void
tx_local_all(struct tx *t, const char *enh, const char *text)
{
	struct smtp_client_reply r;

	set_reply(&r, 0, enh, "%s", text);
	for (size_t i = 0; i < t->n; i++)
		if (t->rst[i] != R_DONE)
			rcpt_final(t, i, SMTP_CLIENT_STAGE_LOCAL, &r);
}

/*
 * Checks made before any command: addresses well formed (they come from
 * our own spool, but a command line is built from them), SMTPUTF8, 8-bit,
 * SIZE. Fills t->live with the recipients to send. Returns false if the
 * transaction is over (every recipient decided locally).
 */
static bool
tx_start(struct smtp_client *c)
{
	struct tx *t = &c->tx;
	const struct envelope *env = t->env;
	struct smtp_addr a;
	bool utf8 = false;

	t->phase = TX_CMDS;
	if (env->sender[0] != '\0') {
		if (smtp_addr_parse_mailbox(env->sender, strlen(env->sender),
		    SMTP_ADDR_UTF8, &a) != SMTP_ADDR_OK) {
			tx_local_all(t, "5.1.7", "bad sender address syntax");
			return false;
		}
		utf8 |= a.has_utf8;
	}
	for (size_t i = 0; i < t->n; i++) {
		const char *ra = env->rcpts[t->res[i].rcpt].addr;
		if (smtp_addr_parse_mailbox(ra, strlen(ra), SMTP_ADDR_UTF8, &a) !=
		    SMTP_ADDR_OK) {
			struct smtp_client_reply r;
			set_reply(&r, 0, "5.1.3", "bad recipient address syntax");
			rcpt_final(t, i, SMTP_CLIENT_STAGE_LOCAL, &r);
			continue;
		}
		utf8 |= a.has_utf8;
		t->live[t->nlive++] = i;
	}
	if (t->nlive == 0)
		return false;

	/* RFC 6531 3.4: SMTPUTF8 when the envelope or the message needs it
	 * (and only then); 3.5: never to a server without it. */
	if (!utf8 && env->smtputf8)
		utf8 = header_has_8bit(t->body, t->bodylen);
	if (utf8 && !(c->caps & SMTP_CLIENT_CAP_SMTPUTF8)) {
		tx_local_all(t, "5.6.7", "SMTPUTF8 is required, but was not "
		    "offered by the host");
		return false;
	}
	t->param_utf8 = utf8;

	/* RFC 6152 3: 8-bit content only to an 8BITMIME server; we do not
	 * convert (see smtp_client.h). */
	bool eightbit = util_has_8bit(t->body, t->bodylen);
	if (eightbit && !(c->caps & SMTP_CLIENT_CAP_8BITMIME) && !utf8) {
		tx_local_all(t, "5.6.3", "message has 8-bit content, but the host "
		    "does not offer 8BITMIME");
		return false;
	}
	t->param_8bit = (c->caps & SMTP_CLIENT_CAP_8BITMIME) &&
	    (eightbit || env->body == ENVELOPE_BODY_8BITMIME);

	/* RFC 1870 6: never send more than the server's fixed limit. */
	if ((c->caps & SMTP_CLIENT_CAP_SIZE) && c->size_max > 0 &&
	    t->bodylen > c->size_max) {
		char text[128];
		snprintf(text, sizeof(text), "message size %zu exceeds the size "
		    "limit %" PRIu64 " of the host", t->bodylen, c->size_max);
		tx_local_all(t, "5.3.4", text);
		return false;
	}
	t->bol = true;
	return true;
}

static void
write_mail(struct smtp_client *c)
{
	struct tx *t = &c->tx;
	const struct envelope *env = t->env;
	char line[CMD_MAX];
	int n;

	n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", env->sender);
	if (c->caps & SMTP_CLIENT_CAP_SIZE)
		n += snprintf(line + n, sizeof(line) - (size_t)n, " SIZE=%zu",
		    t->bodylen);
	if (t->param_8bit)
		n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=8BITMIME");
	if (t->param_utf8)
		n += snprintf(line + n, sizeof(line) - (size_t)n, " SMTPUTF8");
	/* RFC 3461 5.2.1 (a)(b): as received; 5.2.2 (a): never without DSN. */
	if (c->caps & SMTP_CLIENT_CAP_DSN) {
		if (env->ret != ENVELOPE_RET_NONE)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " RET=%s",
			    env->ret == ENVELOPE_RET_FULL ? "FULL" : "HDRS");
		if (env->envid != NULL && strlen(env->envid) <= ENVID_MAX &&
		    smtp_xtext_valid(env->envid, strlen(env->envid)))
			n += snprintf(line + n, sizeof(line) - (size_t)n,
			    " ENVID=%s", env->envid);
	}
	/* sender <= 254 octets and bounded parameters: it always fits */
	ASSERT(n > 0 && (size_t)n < sizeof(line));
	cmd_write(c, SMTP_CLIENT_STAGE_MAIL, line, (size_t)n);
	t->mail_sent = true;
}

static void
write_rcpt(struct smtp_client *c)
{
	struct tx *t = &c->tx;
	const struct envelope_rcpt *r = &t->env->rcpts[t->res[t->live[t->rcpt_sent]].rcpt];
	char line[CMD_MAX];
	int n;

	n = snprintf(line, sizeof(line), "RCPT TO:<%s>", r->addr);
	if ((c->caps & SMTP_CLIENT_CAP_DSN)) {
		/* RFC 3461 5.2.1 (c): NOTIFY as received, or not at all. */
		if (r->notify & ENVELOPE_NOTIFY_NEVER) {
			n += snprintf(line + n, sizeof(line) - (size_t)n, " NOTIFY=NEVER");
		} else if (r->notify != 0) {
			const char *sep = " NOTIFY=";
			static const struct { unsigned bit; const char *name; } nb[] = {
				{ ENVELOPE_NOTIFY_SUCCESS, "SUCCESS" },
				{ ENVELOPE_NOTIFY_FAILURE, "FAILURE" },
				{ ENVELOPE_NOTIFY_DELAY, "DELAY" },
			};
			for (size_t i = 0; i < nitems(nb); i++) {
				if (!(r->notify & nb[i].bit))
					continue;
				n += snprintf(line + n, sizeof(line) - (size_t)n,
				    "%s%s", sep, nb[i].name);
				sep = ",";
			}
		}
		/* 5.2.1 (d): ORCPT unchanged; when absent we MAY add the
		 * address it was received for (ASCII only: "rfc822"). */
		if (r->orcpt != NULL && orcpt_valid(r->orcpt)) {
			n += snprintf(line + n, sizeof(line) - (size_t)n,
			    " ORCPT=%s", r->orcpt);
		} else if (r->orcpt == NULL && !util_has_8bit(r->addr, strlen(r->addr))) {
			char x[ORCPT_MAX + 1];
			if (smtp_xtext_encode(r->addr, strlen(r->addr), x,
			    sizeof(x) - 7) >= 0)
				n += snprintf(line + n, sizeof(line) - (size_t)n,
				    " ORCPT=rfc822;%s", x);
		}
	}
	ASSERT(n > 0 && (size_t)n < sizeof(line));
	cmd_write(c, SMTP_CLIENT_STAGE_RCPT, line, (size_t)n);
	t->rcpt_sent++;
}

/* ------------------------------------------------------------------ */
/* content */

/*
 * Encode up to about budget octets of content into the output: every
 * line ending becomes CRLF (a bare CR or bare LF too: RFC 5321 2.3.8 allows
 * no other, and a lone one is how SMTP smuggling starts), and a line
 * starting with "." gets one more (RFC 5321 4.5.2). Returns true when the
 * whole message, with its final CRLF "." CRLF, is out.
 */
static bool
body_write(struct smtp_client *c, size_t budget)
{
	struct tx *t = &c->tx;
	const char *p = t->body;
	size_t n = t->bodylen, i = t->off, written = 0, o = 0;
	char stage[BODY_STAGE + 8];

	while (i < n && written + o < budget) {
		if (o > BODY_STAGE - 4) {
			evbuffer_add(c->out, stage, o);
			written += o;
			o = 0;
		}
		char ch = p[i];
		if (t->pending_cr) {
			t->pending_cr = false;
			stage[o++] = '\r';
			stage[o++] = '\n';
			t->bol = true;
			if (ch == '\n') {
				i++;
				continue;
			}
		}
		if (ch == '\r') {
			t->pending_cr = true;
			i++;
			continue;
		}
		if (ch == '\n') {
			stage[o++] = '\r';
			stage[o++] = '\n';
			t->bol = true;
			i++;
			continue;
		}
		if (t->bol && ch == '.')
			stage[o++] = '.';
		t->bol = false;
		/* the rest of the line's text, as far as the stage allows */
		size_t room = BODY_STAGE - o;
		size_t j = i;
		while (j < n && j - i < room && p[j] != '\r' && p[j] != '\n')
			j++;
		memcpy(stage + o, p + i, j - i);
		o += j - i;
		i = j;
	}
	t->off = i;
	bool done = i == n;
	if (done) {
		if (t->pending_cr || !t->bol) {
			/* a last line without its CRLF gets one */
			stage[o++] = '\r';
			stage[o++] = '\n';
			t->pending_cr = false;
		}
		stage[o++] = '.';
		stage[o++] = '\r';
		stage[o++] = '\n';
	}
	if (o > 0)
		evbuffer_add(c->out, stage, o);
	return done;
}

/* ------------------------------------------------------------------ */
/* reply handlers */

static bool
reply_is_421(struct smtp_client *c, const struct smtp_client_reply *r)
{
	/* RFC 5321 3.8: 421 to any command: the server is closing. */
	if (r->code != 421)
		return false;
	conn_fail(c, SMTP_CLIENT_ERR_SHUTDOWN, r);
	return true;
}

static void
protocol_error(struct smtp_client *c, const struct smtp_client_reply *r,
    const char *what)
{
	struct smtp_client_reply e;

	set_reply(&e, 0, "4.5.0", "protocol error: unexpected reply %u to %s "
	    "from %s", r->code, what, c->params->peer ? c->params->peer : "peer");
	/* a garbage greeting is a failed connection: next MX */
	conn_fail(c, c->handling && c->handled == SMTP_CLIENT_STAGE_GREETING ?
	    SMTP_CLIENT_ERR_GREETING : SMTP_CLIENT_ERR_PROTOCOL, &e);
}

static void
write_hello(struct smtp_client *c, bool esmtp)
{
	char line[CMD_MAX];
	int n = snprintf(line, sizeof(line), "%s %s", esmtp ? "EHLO" : "HELO",
	    c->params->helo_name);

	ASSERT(n > 0 && (size_t)n < sizeof(line));
	cmd_write(c, esmtp ? SMTP_CLIENT_STAGE_EHLO : SMTP_CLIENT_STAGE_HELO,
	    line, (size_t)n);
	c->state = CS_HELLO;
}

static void
on_greeting(struct smtp_client *c, const struct smtp_client_reply *r)
{
	/* RFC 5321 4.2, 3.1: 220 service ready; 554 (or any 4xx/5xx) means
	 * no service here: the caller tries the next MX (5.1). A 3yz reply
	 * answers nothing here; it must not decide recipients either (its
	 * code is no delivery status). */
	if (r->code / 100 == 3) {
		protocol_error(c, r, "the greeting");
		return;
	}
	if (r->code / 100 != 2) {
		conn_fail(c, SMTP_CLIENT_ERR_GREETING, r);
		return;
	}
	if (c->want_quit && !c->tx.active) {
		c->state = CS_READY;
		return;
	}
	write_hello(c, true);
}

/* RFC 4648 4 base64 of (src, n) into dst (4 * ((n + 2) / 3) + 1 bytes),
 * NUL-terminated; returns the length. */
static size_t
b64_encode(const unsigned char *src, size_t n, char *dst, size_t size)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	ASSERT(size >= 4 * ((n + 2) / 3) + 1);
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)src[i] << 16 |
		    (i + 1 < n ? (unsigned)src[i + 1] << 8 : 0) |
		    (i + 2 < n ? (unsigned)src[i + 2] : 0);

		dst[o++] = tab[v >> 18 & 63];
		dst[o++] = tab[v >> 12 & 63];
		dst[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		dst[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	dst[o] = '\0';
	return o;
}

/* A command line that carries a secret: written, then wiped. */
static void
cmd_write_secret(struct smtp_client *c, const char *prefix,
    const char *secret, size_t len)
{
	char line[CMD_MAX];
	size_t pl = strlen(prefix);

	ASSERT(pl + 4 * ((len + 2) / 3) + 1 <= sizeof(line));
	memcpy(line, prefix, pl);
	pl += b64_encode((const unsigned char *)secret, len, line + pl,
	    sizeof(line) - pl);
	cmd_write(c, SMTP_CLIENT_STAGE_AUTH, line, pl);
	explicit_bzero(line, sizeof(line));
}

/*
 * AUTH refused or impossible (r: the server's reply, or the engine's own
 * with code 0). A 5xx decides the open recipients for good: the
 * credentials are wrong and retrying cannot help until the administrator
 * fixes them; anything else leaves them temporary. The connection ends
 * with a QUIT whose reply nobody waits for.
 */
static void
auth_fail(struct smtp_client *c, const struct smtp_client_reply *r)
{
	char q[SMTP_CLIENT_TEXT_MAX * 4 + 8];

	log_info("client session=%s event=auth peer=%s mechanism=%s "
	    "result=failed reply=\"%u %s %s\"", c->id,
	    c->params->peer ? c->params->peer : "-",
	    c->auth_mech ? c->auth_mech : "none", r->code, r->enhanced,
	    log_quote(q, sizeof(q), r->text, strlen(r->text), 200));
	/* Temporary whatever the code: a rejected or rotated password is the
	 * administrator's to fix, and the mail must wait for that rather
	 * than be failed (as Postfix's smtp_sasl_auth_soft_bounce). */
	if (c->tx.active)
		for (size_t i = 0; i < c->tx.n; i++)
			if (c->tx.rst[i] != R_DONE) {
				rcpt_final(&c->tx, i, SMTP_CLIENT_STAGE_AUTH, r);
				c->tx.res[i].status = SMTP_CLIENT_TEMPFAIL;
			}
	evbuffer_add(c->out, "QUIT\r\n", 6);
	conn_fail(c, SMTP_CLIENT_ERR_AUTH, r);
}

static void
auth_fail_local(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
auth_fail_local(struct smtp_client *c, const char *fmt, ...)
{
	struct smtp_client_reply r = { .code = 0 };
	va_list ap;

	util_strlcpy(r.enhanced, "4.7.0", sizeof(r.enhanced));
	va_start(ap, fmt);
	vsnprintf(r.text, sizeof(r.text), fmt, ap);
	va_end(ap);
	auth_fail(c, &r);
}

/* RFC 4954 4: AUTH after EHLO, before MAIL; PLAIN preferred (one round
 * trip, RFC 4616 with an initial response), else LOGIN. */
static void
auth_start(struct smtp_client *c)
{
	const char *u = c->params->auth_user, *pw = c->params->auth_password;
	size_t ul = strlen(u), pl = strlen(pw);

	c->state = CS_AUTH;
	if (ul == 0 || ul > AUTH_MAX || pl == 0 || pl > AUTH_MAX) {
		auth_fail_local(c, "AUTH credentials unusable (user name and "
		    "password must be 1..%d octets)", AUTH_MAX);
		return;
	}
	if (c->caps & SMTP_CLIENT_CAP_AUTH_PLAIN) {
		/* RFC 4616 2: [authzid] NUL authcid NUL passwd */
		char raw[2 * AUTH_MAX + 2];

		raw[0] = '\0';
		memcpy(raw + 1, u, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, pw, pl);
		c->auth_mech = "PLAIN";
		c->auth_step = AUTH_PLAIN_SENT;
		cmd_write_secret(c, "AUTH PLAIN ", raw, ul + pl + 2);
		explicit_bzero(raw, sizeof(raw));
	} else if (c->caps & SMTP_CLIENT_CAP_AUTH_LOGIN) {
		c->auth_mech = "LOGIN";
		c->auth_step = AUTH_LOGIN_USER;
		cmd_write(c, SMTP_CLIENT_STAGE_AUTH, "AUTH LOGIN", 10);
	} else {
		auth_fail_local(c, "smarthost offers no AUTH PLAIN/LOGIN");
	}
}

static void
on_auth(struct smtp_client *c, const struct smtp_client_reply *r)
{
	const char *secret;

	if (r->code / 100 == 2) {
		/* 235 (RFC 4954 6); another 2xx is taken as success too. */
		log_info("client session=%s event=auth peer=%s mechanism=%s "
		    "user=%s result=ok", c->id,
		    c->params->peer ? c->params->peer : "-", c->auth_mech,
		    c->params->auth_user);
		c->auth_step = AUTH_NONE;
		c->state = CS_READY;
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (r->code == 334 && (c->auth_step == AUTH_LOGIN_USER ||
	    c->auth_step == AUTH_LOGIN_PASS)) {
		/* LOGIN's challenges ("Username:", "Password:") come in
		 * that order; their text is not needed. */
		secret = c->auth_step == AUTH_LOGIN_USER ?
		    c->params->auth_user : c->params->auth_password;
		c->auth_step = c->auth_step == AUTH_LOGIN_USER ?
		    AUTH_LOGIN_PASS : AUTH_LOGIN_DONE;
		cmd_write_secret(c, "", secret, strlen(secret));
		return;
	}
	if (r->code / 100 == 3) {
		/* A challenge we have nothing more for. */
		protocol_error(c, r, "AUTH");
		return;
	}
	auth_fail(c, r);
}

/* Greeted (and, if it came to that, TLS is up): AUTH, or ready. */
static void
hello_done(struct smtp_client *c)
{
	if (c->params->auth_user != NULL && c->params->auth_password != NULL) {
		/* RFC 4954 4 lets the client refuse to send a password in
		 * clear text; tern does unless the route allows it. */
		if (!c->tls && !c->params->auth_plaintext) {
			c->state = CS_AUTH;
			auth_fail_local(c, c->params->tls == SMTP_CLIENT_TLS_NO ||
			    !(c->caps & SMTP_CLIENT_CAP_STARTTLS) ?
			    "smarthost offers no STARTTLS: AUTH refused in clear "
			    "text (route auth_plaintext no)" :
			    "STARTTLS refused: AUTH refused in clear text (route "
			    "auth_plaintext no)");
			return;
		}
		auth_start(c);
		return;
	}
	c->state = CS_READY;
}

/* Fail the connection for TLS policy, with the server's reply if any. */
static void
tls_fail(struct smtp_client *c, const struct smtp_client_reply *r,
    const char *what)
{
	struct smtp_client_reply e;

	if (r != NULL)
		set_reply(&e, 0, "4.7.10", "%s: %s said %u %s", what,
		    c->params->peer ? c->params->peer : "peer", r->code, r->text);
	else
		set_reply(&e, 0, "4.7.10", "%s (%s)", what,
		    c->params->peer ? c->params->peer : "peer");
	conn_fail(c, SMTP_CLIENT_ERR_TLS, &e);
}

/*
 * EHLO (or HELO) accepted. RFC 3207 4: STARTTLS only after EHLO, only
 * once; after the handshake the second EHLO's reply counts.
 */
static void
ehlo_done(struct smtp_client *c)
{
	bool want = c->params->tls != SMTP_CLIENT_TLS_NO &&
	    c->io->starttls != NULL && !c->tls;

	if (want && (c->caps & SMTP_CLIENT_CAP_STARTTLS)) {
		c->state = CS_TLS;
		cmd_write(c, SMTP_CLIENT_STAGE_STARTTLS, "STARTTLS", 8);
		return;
	}
	if (want && c->params->tls == SMTP_CLIENT_TLS_MUST) {
		c->state = CS_TLS;
		tls_fail(c, NULL, "TLS required, but the server does not offer "
		    "STARTTLS");
		return;
	}
	hello_done(c);
}

static void
on_starttls(struct smtp_client *c, const struct smtp_client_reply *r)
{
	if (r->code == 220) {
		/* RFC 3207 4.2: nothing of the clear-text dialogue survives;
		 * the transport drops any input that came with the 220. */
		c->handshake = true;
		c->caps = 0;
		c->size_max = 0;
		c->io->starttls(c->io_arg);
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (c->params->tls == SMTP_CLIENT_TLS_MUST) {
		tls_fail(c, r, "TLS required, but STARTTLS was refused");
		return;
	}
	/* Opportunistic: go on in clear text (RFC 3207 4.1). */
	hello_done(c);
}

static void
on_ehlo(struct smtp_client *c, const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2) {
		c->caps = c->rd_caps | SMTP_CLIENT_CAP_ESMTP;
		c->size_max = c->rd_size_max;
		ehlo_done(c);
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (r->code / 100 == 5) {
		/* RFC 5321 4.1.4, 3.2: an old server; try HELO. */
		write_hello(c, false);
		return;
	}
	if (r->code / 100 == 3) {
		protocol_error(c, r, "EHLO");
		return;
	}
	conn_fail(c, SMTP_CLIENT_ERR_HELO, r);
}

static void
on_helo(struct smtp_client *c, const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2) {
		c->caps = 0;
		c->size_max = 0;
		ehlo_done(c);
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (r->code / 100 == 3) {
		protocol_error(c, r, "HELO");
		return;
	}
	conn_fail(c, SMTP_CLIENT_ERR_HELO, r);
}

static void
on_rset(struct smtp_client *c, const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2)
		return;
	if (reply_is_421(c, r))
		return;
	/* The server will not reset: nothing sent after it can be trusted. */
	protocol_error(c, r, "RSET");
}

static void
on_mail(struct smtp_client *c, const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 3) {
		protocol_error(c, r, "MAIL");
		return;
	}
	if (reply_is_421(c, r))
		return;
	t->mail_answered = true;
	if (r->code / 100 == 2) {
		t->mail_ok = true;
		return;
	}
	/* MAIL refused: it decides every recipient. With PIPELINING the
	 * RCPT and DATA replies still to come are read and ignored. */
	rcpt_all_open(t, SMTP_CLIENT_STAGE_MAIL, r, true);
	if (t->rcpt_sent == 0)
		tx_done(c, SMTP_CLIENT_ERR_NONE);
}

/* Without PIPELINING: after the last RCPT reply, DATA or the end. */
static void
rcpts_answered(struct smtp_client *c)
{
	struct tx *t = &c->tx;

	if (t->rcpt_answered < t->nlive || t->data_sent || t->naccepted > 0)
		return;
	/* No recipient accepted: no DATA (the open transaction is reset
	 * before the next one, or QUIT ends it). */
	c->need_rset = t->mail_ok;
	tx_done(c, SMTP_CLIENT_ERR_NONE);
}

static void
on_rcpt(struct smtp_client *c, const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;
	size_t i = t->live[t->rcpt_answered++];

	if (r->code / 100 == 3) {
		protocol_error(c, r, "RCPT");
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (t->rst[i] == R_DONE)   /* decided by MAIL's refusal */
		goto out;
	if (r->code / 100 == 2) {
		t->rst[i] = R_ACCEPTED;
		t->res[i].stage = SMTP_CLIENT_STAGE_RCPT;
		t->res[i].reply = *r;
		t->naccepted++;
	} else {
		rcpt_final(t, i, SMTP_CLIENT_STAGE_RCPT, r);
	}
out:
	if (!t->data_sent)
		rcpts_answered(c);
}

static void
on_data(struct smtp_client *c, const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 2) {
		protocol_error(c, r, "DATA");
		return;
	}
	if (reply_is_421(c, r))
		return;
	if (r->code / 100 == 3) {
		/* RFC 2920 3.1: DATA accepted with nobody to send to: "."
		 * alone; otherwise the content. */
		t->body_nobody = t->naccepted == 0;
		t->phase = TX_BODY;
		return;
	}
	rcpt_accepted(t, SMTP_CLIENT_STAGE_DATA, r);
	c->need_rset = t->mail_ok;
	tx_done(c, SMTP_CLIENT_ERR_NONE);
}

static void
on_dot(struct smtp_client *c, const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 3) {
		protocol_error(c, r, "end of data");
		return;
	}
	if (reply_is_421(c, r))
		return;
	/* RFC 5321 4.1.1.4: one reply for every accepted recipient. */
	rcpt_accepted(t, SMTP_CLIENT_STAGE_DOT, r);
	tx_done(c, SMTP_CLIENT_ERR_NONE);
}

static void
on_quit(struct smtp_client *c, const struct smtp_client_reply *r)
{
	/* Whatever the server says, we are done. */
	c->closing = true;
	c->state = CS_CLOSED;
	c->io->close(c->io_arg, SMTP_CLIENT_ERR_NONE);
}

/* A reply with no command waiting for it. A 421 is the server timing out
 * an idle connection; anything else breaks the count of replies. */
static void
on_unsolicited(struct smtp_client *c, const struct smtp_client_reply *r)
{
	if (reply_is_421(c, r))
		return;
	protocol_error(c, r, current_stage(c) == SMTP_CLIENT_STAGE_BODY ?
	    "message content" : "no command");
}

static void
handle_reply(struct smtp_client *c, enum smtp_client_stage st,
    const struct smtp_client_reply *r)
{
	switch (st) {
	case SMTP_CLIENT_STAGE_GREETING: on_greeting(c, r); break;
	case SMTP_CLIENT_STAGE_EHLO: on_ehlo(c, r); break;
	case SMTP_CLIENT_STAGE_HELO: on_helo(c, r); break;
	case SMTP_CLIENT_STAGE_RSET: on_rset(c, r); break;
	case SMTP_CLIENT_STAGE_MAIL: on_mail(c, r); break;
	case SMTP_CLIENT_STAGE_RCPT: on_rcpt(c, r); break;
	case SMTP_CLIENT_STAGE_DATA: on_data(c, r); break;
	case SMTP_CLIENT_STAGE_DOT: on_dot(c, r); break;
	case SMTP_CLIENT_STAGE_QUIT: on_quit(c, r); break;
	case SMTP_CLIENT_STAGE_AUTH: on_auth(c, r); break;
	case SMTP_CLIENT_STAGE_STARTTLS: on_starttls(c, r); break;
	default: on_unsolicited(c, r); break;
	}
}

/* ------------------------------------------------------------------ */
/* the loop */

/* Read and handle one reply. Returns true if one was handled. */
static bool
step_read(struct smtp_client *c)
{
	enum smtp_client_stage st;
	int r;

	if (c->state == CS_NEW || c->handshake ||
	    evbuffer_get_length(c->in) == 0)
		return false;
	st = c->ex_len > 0 ? expect_head(c) : SMTP_CLIENT_STAGE_LOCAL;
	r = read_reply(c, st == SMTP_CLIENT_STAGE_EHLO);
	if (r <= 0)
		return r < 0;
	struct smtp_client_reply rep = c->rd.r;
	c->rd_caps = c->rd.caps;
	c->rd_size_max = c->rd.size_max;
	memset(&c->rd, 0, sizeof(c->rd));
	if (c->ex_len > 0) {
		expect_pop(c);
		c->handling = true;
		c->handled = st;
		handle_reply(c, st, &rep);
		c->handling = false;
	} else {
		on_unsolicited(c, &rep);
	}
	return true;
}

/* Write what the state allows. Returns true if anything was written or the
 * state changed. */
static bool
step_write(struct smtp_client *c)
{
	struct tx *t = &c->tx;
	bool pipelining = (c->caps & SMTP_CLIENT_CAP_PIPELINING) != 0;

	if (c->state != CS_READY)
		return false;
	if (!t->active) {
		if (c->want_quit && !c->quit_sent && c->ex_len == 0) {
			/* RFC 5321 4.1.1.10; an open transaction dies with it */
			cmd_write(c, SMTP_CLIENT_STAGE_QUIT, "QUIT", 4);
			c->quit_sent = true;
			return true;
		}
		return false;
	}
	if (evbuffer_get_length(c->out) >= c->output_high)
		return false;
	switch (t->phase) {
	case TX_QUEUED:
		if (c->ex_len > 0)
			return false;
		if (!tx_start(c))
			tx_done(c, SMTP_CLIENT_ERR_NONE);
		return true;
	case TX_CMDS:
		/* RFC 2920 3.1: RSET, MAIL and RCPT anywhere in a group, DATA
		 * last; without PIPELINING one command, then its reply. */
		if (!pipelining && c->ex_len > 0)
			return false;
		if (c->need_rset) {
			cmd_write(c, SMTP_CLIENT_STAGE_RSET, "RSET", 4);
			c->need_rset = false;
			return true;
		}
		if (!t->mail_sent) {
			write_mail(c);
			return true;
		}
		if (t->rcpt_sent < t->nlive) {
			write_rcpt(c);
			return true;
		}
		if (t->data_sent)
			return false;
		if (t->mail_answered && t->rcpt_answered == t->nlive &&
		    t->naccepted == 0) {
			/* Every answer is in and nobody accepted: no DATA. */
			c->need_rset = t->mail_ok;
			tx_done(c, SMTP_CLIENT_ERR_NONE);
			return true;
		}
		cmd_write(c, SMTP_CLIENT_STAGE_DATA, "DATA", 4);
		t->data_sent = true;
		return true;
	case TX_BODY: {
		bool done;
		if (t->body_nobody) {
			evbuffer_add(c->out, ".\r\n", 3);
			done = true;
		} else {
			done = body_write(c, c->output_high -
			    evbuffer_get_length(c->out));
		}
		if (done) {
			expect_push(c, SMTP_CLIENT_STAGE_DOT);
			t->phase = TX_DOT;
		}
		return true;
	}
	case TX_DOT:
		return false;
	}
	return false;
}

static void
client_run(struct smtp_client *c)
{
	bool progress = false;

	while (!c->closing) {
		if (step_read(c) || (!c->closing && step_write(c))) {
			progress = true;
			continue;
		}
		break;
	}
	update_timeout(c, progress);
}

/* ------------------------------------------------------------------ */
/* public */

struct smtp_client *
smtp_client_new(const struct smtp_client_params *params, struct evbuffer *in,
    struct evbuffer *out, const struct smtp_client_io *io, void *io_arg)
{
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	const struct smtp_client_timeouts *t = &params->timeouts;

	ASSERT(params->helo_name != NULL);
	snprintf(c->id, sizeof(c->id), "%012" PRIx64 "%04x",
	    (uint64_t)((uint64_t)util_now_us() & UINT64_C(0xffffffffffff)),
	    ++client_counter & 0xffff);
	c->params = params;
	c->to.greeting = t->greeting ? t->greeting : 300;
	c->to.helo = t->helo ? t->helo : 300;
	c->to.mail = t->mail ? t->mail : 300;
	c->to.rcpt = t->rcpt ? t->rcpt : 300;
	c->to.data_init = t->data_init ? t->data_init : 120;
	c->to.data_block = t->data_block ? t->data_block : 180;
	c->to.data_done = t->data_done ? t->data_done : 600;
	c->to.rset = t->rset ? t->rset : 120;
	c->to.quit = t->quit ? t->quit : 60;
	c->output_high = params->output_high ? params->output_high :
	    SMTP_CLIENT_OUTPUT_HIGH;
	c->in = in;
	c->out = out;
	c->io = io;
	c->io_arg = io_arg;
	c->state = CS_NEW;
	return c;
}

void
smtp_client_start(struct smtp_client *c)
{
	if (c->state != CS_NEW)
		return;
	c->state = CS_GREETING;
	expect_push(c, SMTP_CLIENT_STAGE_GREETING);
	update_timeout(c, true);
}

int
smtp_client_send(struct smtp_client *c, const struct envelope *env,
    const size_t *rcpt_idx, size_t n, const char *body, size_t bodylen,
    smtp_client_cb cb, void *arg)
{
	struct tx *t = &c->tx;

	if (c->closing || c->want_quit || t->active || n == 0 ||
	    n > SMTP_CLIENT_RCPTS_MAX || cb == NULL || env->sender == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (rcpt_idx[i] >= env->nrcpts)
			return -1;
	memset(t, 0, sizeof(*t));
	t->active = true;
	t->phase = TX_QUEUED;
	t->env = env;
	t->body = body;
	t->bodylen = bodylen;
	t->cb = cb;
	t->cb_arg = arg;
	t->n = n;
	t->res = xcalloc(n, sizeof(*t->res));
	t->rst = xcalloc(n, sizeof(*t->rst));
	t->live = xcalloc(n, sizeof(*t->live));
	for (size_t i = 0; i < n; i++) {
		t->res[i].rcpt = rcpt_idx[i];
		t->res[i].status = SMTP_CLIENT_TEMPFAIL;
	}
	return 0;
}

void
smtp_client_quit(struct smtp_client *c)
{
	if (c->closing || c->want_quit)
		return;
	c->want_quit = true;
	if (c->state == CS_NEW || c->state == CS_GREETING ||
	    c->state == CS_HELLO || c->state == CS_AUTH || c->state == CS_TLS) {
		if (c->tx.active)
			return;   /* QUIT follows the transaction */
		/* Not greeted yet and nothing to send: just hang up. */
		c->closing = true;
		c->state = CS_CLOSED;
		c->io->close(c->io_arg, SMTP_CLIENT_ERR_NONE);
	}
}

void
smtp_client_process(struct smtp_client *c)
{
	if (c->in_process || c->closing)
		return;
	c->in_process = true;
	client_run(c);
	c->in_process = false;
}

/* The connection ended (timer or EOF): after our QUIT that is the normal
 * end; otherwise every open recipient fails temporarily with why. */
static void
connection_ended(struct smtp_client *c, enum smtp_client_error err,
    const char *why)
{
	if (c->closing)
		return;
	if (c->quit_sent) {
		c->closing = true;
		c->state = CS_CLOSED;
		c->io->close(c->io_arg, SMTP_CLIENT_ERR_NONE);
		return;
	}
	conn_fail_local(c, err, "4.4.2", why);
}

void
smtp_client_timeout(struct smtp_client *c)
{
	connection_ended(c, SMTP_CLIENT_ERR_TIMEOUT, "timeout");
}

void
smtp_client_eof(struct smtp_client *c)
{
	smtp_client_process(c);   /* a last reply, such as 421, counts */
	connection_ended(c, SMTP_CLIENT_ERR_LOST, "lost connection");
}

void
smtp_client_tls_done(struct smtp_client *c, struct evbuffer *in,
    struct evbuffer *out, const char *error)
{
	if (!c->handshake || c->closing)
		return;
	if (error != NULL) {
		struct smtp_client_reply e;

		set_reply(&e, 0, "4.7.10", "%s (%s)", error,
		    c->params->peer ? c->params->peer : "peer");
		conn_fail(c, SMTP_CLIENT_ERR_TLS, &e);
		c->handshake = false;
		return;
	}
	c->handshake = false;
	c->tls = true;
	c->in = in;
	c->out = out;
	/* RFC 3207 4.2: the client SHOULD send EHLO again. */
	write_hello(c, true);
	client_run(c);
}

bool
smtp_client_tls_active(const struct smtp_client *c)
{
	return c->tls;
}

unsigned
smtp_client_caps(const struct smtp_client *c, uint64_t *size_max_r)
{
	if (size_max_r != NULL)
		*size_max_r = c->size_max;
	return c->caps;
}

bool
smtp_client_idle(const struct smtp_client *c)
{
	return c->state == CS_READY && !c->tx.active && !c->closing &&
	    !c->want_quit;
}

bool
smtp_client_closing(const struct smtp_client *c)
{
	return c->closing;
}

const struct smtp_client_reply *
smtp_client_last_reply(const struct smtp_client *c)
{
	return &c->last;
}

const char *
smtp_client_id(const struct smtp_client *c)
{
	return c->id;
}

void
smtp_client_free(struct smtp_client **cp)
{
	struct smtp_client *c = *cp;

	if (c == NULL)
		return;
	tx_clear(&c->tx);
	free(c);
	*cp = NULL;
}
