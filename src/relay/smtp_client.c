/*
 * smtp_client.c - the SMTP client protocol engine (see smtp_client.h),
 * its core; smtp_client_int.h names the other files.
 *
 * smtp_client_process() loops: read one reply, else write what the state
 * allows (one command at a time without PIPELINING; MAIL, every RCPT and
 * DATA in one batch with it), else stop. Writing stops at the output
 * high-water mark and resumes when the caller says the output drained, so
 * a large recipient list or message is never copied whole.
 *
 * The server is hostile: reply lines are bounded (SMTP_CLIENT_LINE_MAX),
 * so is their number, codes must be three digits 2yz..5yz with the same
 * code on every line, a reply nobody asked for is a protocol error, and a
 * recipient is only ever DELIVERED by a 2xx to the final "." after its own
 * 2xx to RCPT.
 */
#include <inttypes.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "relay/smtp_client.h"
#include "relay/smtp_client_int.h"

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

void
smtp_client_expect_push(struct smtp_client *c, enum smtp_client_stage st)
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

enum smtp_client_stage
smtp_client_expect_head(const struct smtp_client *c)
{
	return (enum smtp_client_stage)c->expect[c->ex_head];
}

/* The engine's own reply (smtp_client_int.h). */
void
smtp_client_set_reply(struct smtp_client_reply *r, unsigned code,
    const char *enh, const char *fmt, ...)
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
enum smtp_client_stage
smtp_client_current_stage(const struct smtp_client *c)
{
	if (c->handling)
		return c->handled;
	if (c->handshake)
		return SMTP_CLIENT_STAGE_STARTTLS;
	if (c->ex_len > 0)
		return smtp_client_expect_head(c);
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
	want = timeout_for(c, smtp_client_current_stage(c));
	if (progress || want != c->timeout_set) {
		c->timeout_set = want;
		c->io->set_timeout(c->io_arg, want);
	}
}

void
smtp_client_cmd_write(struct smtp_client *c, enum smtp_client_stage st,
    const char *line, size_t len)
{
	evbuffer_add(c->out, line, len);
	evbuffer_add(c->out, "\r\n", 2);
	smtp_client_expect_push(c, st);
}

static const char *const error_names[] = { "none", "greeting", "helo",
	"protocol", "shutdown", "timeout", "lost", "auth", "tls" };

/*
 * The connection is over: every open recipient is TEMPFAIL (with the
 * server's reply if one caused this, else the engine's diagnosis), the
 * transaction's callback runs, then io->close(). c stays valid: the caller
 * frees it later.
 */
void
smtp_client_fail(struct smtp_client *c, enum smtp_client_error err,
    const struct smtp_client_reply *why)
{
	enum smtp_client_stage st = smtp_client_current_stage(c);

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
		smtp_client_tx_rcpt_open(&c->tx, st, why, false);
		smtp_client_tx_done(c, err);
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
	enum smtp_client_stage st = smtp_client_current_stage(c);

	if (st == SMTP_CLIENT_STAGE_DOT)
		/* RFC 5321 4.5.3.2.6, 6.1: the server may have taken it. */
		smtp_client_set_reply(&r, 0, enh, "%s with %s after end of data "
		    "(the message may be delivered twice)", what, peer);
	else
		smtp_client_set_reply(&r, 0, enh, "%s with %s while waiting "
		    "for %s", what, peer, st == SMTP_CLIENT_STAGE_BODY ?
		    "the message content to be read" :
		    st == SMTP_CLIENT_STAGE_LOCAL ? "nothing" : stage_name(st));
	smtp_client_fail(c, err, &r);
}

/* ------------------------------------------------------------------ */
/* reply handlers */

bool
smtp_client_is_421(struct smtp_client *c, const struct smtp_client_reply *r)
{
	/* RFC 5321 3.8: 421 to any command: the server is closing. */
	if (r->code != 421)
		return false;
	smtp_client_fail(c, SMTP_CLIENT_ERR_SHUTDOWN, r);
	return true;
}

void
smtp_client_protocol_error(struct smtp_client *c,
    const struct smtp_client_reply *r, const char *what)
{
	struct smtp_client_reply e;

	smtp_client_set_reply(&e, 0, "4.5.0", "protocol error: unexpected "
	    "reply %u to %s from %s", r->code, what,
	    c->params->peer ? c->params->peer : "peer");
	/* a garbage greeting is a failed connection: next MX */
	smtp_client_fail(c, c->handling &&
	    c->handled == SMTP_CLIENT_STAGE_GREETING ?
	    SMTP_CLIENT_ERR_GREETING : SMTP_CLIENT_ERR_PROTOCOL, &e);
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
	if (smtp_client_is_421(c, r))
		return;
	smtp_client_protocol_error(c, r, smtp_client_current_stage(c) ==
	    SMTP_CLIENT_STAGE_BODY ? "message content" : "no command");
}

static void
handle_reply(struct smtp_client *c, enum smtp_client_stage st,
    const struct smtp_client_reply *r)
{
	switch (st) {
	case SMTP_CLIENT_STAGE_GREETING:
		smtp_client_ehlo_on_greeting(c, r);
		break;
	case SMTP_CLIENT_STAGE_EHLO: smtp_client_ehlo_on_ehlo(c, r); break;
	case SMTP_CLIENT_STAGE_HELO: smtp_client_ehlo_on_helo(c, r); break;
	case SMTP_CLIENT_STAGE_RSET: smtp_client_tx_on_rset(c, r); break;
	case SMTP_CLIENT_STAGE_MAIL: smtp_client_tx_on_mail(c, r); break;
	case SMTP_CLIENT_STAGE_RCPT: smtp_client_tx_on_rcpt(c, r); break;
	case SMTP_CLIENT_STAGE_DATA: smtp_client_tx_on_data(c, r); break;
	case SMTP_CLIENT_STAGE_DOT: smtp_client_tx_on_dot(c, r); break;
	case SMTP_CLIENT_STAGE_QUIT: on_quit(c, r); break;
	case SMTP_CLIENT_STAGE_AUTH: smtp_client_auth_on_reply(c, r); break;
	case SMTP_CLIENT_STAGE_STARTTLS:
		smtp_client_ehlo_on_starttls(c, r);
		break;
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
	st = c->ex_len > 0 ? smtp_client_expect_head(c) : SMTP_CLIENT_STAGE_LOCAL;
	r = smtp_client_reply_read(c, st == SMTP_CLIENT_STAGE_EHLO);
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
	if (c->state != CS_READY)
		return false;
	if (!c->tx.active) {
		if (c->want_quit && !c->quit_sent && c->ex_len == 0) {
			/* RFC 5321 4.1.1.10; an open transaction dies with it */
			smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_QUIT, "QUIT",
			    4);
			c->quit_sent = true;
			return true;
		}
		return false;
	}
	return smtp_client_tx_step(c);
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
	smtp_client_expect_push(c, SMTP_CLIENT_STAGE_GREETING);
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

		smtp_client_set_reply(&e, 0, "4.7.10", "%s (%s)", error,
		    c->params->peer ? c->params->peer : "peer");
		smtp_client_fail(c, SMTP_CLIENT_ERR_TLS, &e);
		c->handshake = false;
		return;
	}
	c->handshake = false;
	c->tls = true;
	c->in = in;
	c->out = out;
	/* RFC 3207 4.2: the client SHOULD send EHLO again. */
	smtp_client_ehlo_write(c, true);
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
	smtp_client_tx_clear(&c->tx);
	free(c);
	*cp = NULL;
}
