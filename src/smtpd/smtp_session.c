/*
 * smtp_session.c - the SMTP server protocol engine (see smtp_session.h):
 * its core. The engine's files share smtp_session_int.h:
 *
 *   smtp_session.c   replies, deadlines, transactions, queue waits, the
 *                    verb table with the simple verbs, input and the
 *                    public interface
 *   smtp_params.c    MAIL and RCPT with their ESMTP parameters
 *   smtp_auth_cmd.c  AUTH (RFC 4954) with PLAIN and LOGIN
 *   smtp_data.c      DATA and BDAT: content filters, the queue transaction
 *   smtp_headers.c   RFC 5322 checks of the message header
 *
 * Shape: commands[] is a table of verbs and handlers (OpenSMTPD, Postfix).
 * Input is consumed by smtp_session_process(), which loops until it needs
 * more octets, waits for the queue (an asynchronous begin or commit), or
 * has queued SMTP_SESSION_OUTPUT_MAX octets of replies the client has not
 * read. The listener's policy (config_listener) decides who may send to
 * local and foreign domains (smtp_params.c).
 */
#include <event2/buffer.h>
#include <inttypes.h>

#include "conf/config.h"
#include "lib/conn.h"
#include "lib/log.h"
#include "lib/util.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_session.h"
#include "smtpd/smtp_session_int.h"

static unsigned session_counter;

/* ------------------------------------------------------------------ */
/* replies */

void
smtp_session_reply_raw(struct smtp_session *s, const char *line)
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

void
smtp_session_reply(struct smtp_session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	smtp_session_reply_raw(s, line);
}

void
smtp_session_close(struct smtp_session *s)
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
	smtp_session_tx_reset(s);
	s->io->close(s->io_arg);
}

/* ------------------------------------------------------------------ */
/* deadlines (the slow-drip defence)
 *
 * The client has timeout_greeting from the connection's start (an
 * implicit-TLS handshake included) to complete HELO/EHLO, timeout_command
 * for each command line, counted from the end of the line before (or
 * from a reply that waited for the queue), and during message data a
 * budget: timeout_data, which arriving octets extend by the time they
 * take at min_data_rate, never past timeout_data from now. These are
 * deadlines: partial input does not move them, so a client that sends
 * one octet at a time cannot hold a connection for ever. Time the
 * session spends waiting for the queue, a resolver or the AUTH verifier
 * is never counted against the client.
 */

/* Message data flows: DATA content, or a BDAT transaction from its first
 * chunk to its last (the BDAT lines between chunks included). */
bool
smtp_session_in_content(const struct smtp_session *s)
{
	return s->state == STATE_DATA || s->state == STATE_BDAT ||
	    (s->state == STATE_MAIL && s->tx.bdat);
}

static void
deadline_set(struct smtp_session *s, int64_t ms)
{
	s->io->set_deadline(s->io_arg, ms < 1 ? 1 : (unsigned)ms);
}

/* The data budget's clock: standing still while the session holds
 * message data for the queue. */
static int64_t
data_clock(const struct smtp_session *s)
{
	return s->data_held ? s->data_held_at : util_mono_ms();
}

/* Arm the deadline for what the session waits for now. */
void
smtp_session_deadline_arm(struct smtp_session *s)
{
	if (s->closing || s->state == STATE_TLS)
		return;   /* the transport bounds the flush or the handshake */
	if (s->state == STATE_WAIT) {
		/* waits only before content (begin) or after it (commit):
		 * the data to come, if any, starts a budget of its own */
		s->data_budget = false;
		s->data_held = false;
		s->io->set_deadline(s->io_arg, 0);
		return;
	}
	if (smtp_session_in_content(s)) {
		int64_t now = data_clock(s);

		if (!s->data_budget) {
			s->data_budget = true;
			s->data_deadline = now + (int64_t)s->cfg->timeout_data * 1000;
			s->data_last_input = now;
		}
		if (s->data_held)
			s->io->set_deadline(s->io_arg, 0);
		else
			deadline_set(s, s->data_deadline - now);
		return;
	}
	s->data_budget = false;
	s->data_held = false;
	if (s->state == STATE_NEW)
		deadline_set(s, s->greeting_at - util_mono_ms());
	else
		deadline_set(s, (int64_t)s->cfg->timeout_command * 1000);
}

/* n octets of message data arrived: they buy n / min_data_rate seconds,
 * up to timeout_data from now. */
void
smtp_session_deadline_credit(struct smtp_session *s, size_t n)
{
	int64_t now, cap;

	if (n == 0 || !smtp_session_in_content(s))
		return;
	if (!s->data_budget)
		smtp_session_deadline_arm(s);
	now = data_clock(s);
	cap = now + (int64_t)s->cfg->timeout_data * 1000;
	s->data_last_input = now;
	if (s->cfg->min_data_rate == 0)
		s->data_deadline = cap;
	else {
		if (s->data_deadline < now)
			s->data_deadline = now;
		s->data_deadline += (int64_t)((uint64_t)n * 1000 /
		    s->cfg->min_data_rate);
		if (s->data_deadline > cap)
			s->data_deadline = cap;
	}
	if (!s->data_held)
		deadline_set(s, s->data_deadline - now);
}

void
smtp_session_deadline_hold(struct smtp_session *s)
{
	if (s->closing || !smtp_session_in_content(s))
		return;
	if (!s->data_budget)
		smtp_session_deadline_arm(s);
	if (!s->data_held) {
		s->data_held = true;
		s->data_held_at = util_mono_ms();
	}
	s->io->set_deadline(s->io_arg, 0);
}

/* The queue caught up: the held budget goes on where it stood, shifted
 * by the time tern held the data (a fresh one would let a client that
 * met a busy queue stretch its transaction past timeout_data). */
static void
deadline_release(struct smtp_session *s)
{
	int64_t now = util_mono_ms(), held = now - s->data_held_at;

	s->data_held = false;
	s->data_deadline += held;
	s->data_last_input += held;
	deadline_set(s, s->data_deadline - now);
}

/* A whole command line of rawlen octets was read and handled: the next
 * one gets a fresh deadline, except before HELO/EHLO (timeout_greeting
 * bounds the whole greeting phase) and within BDAT transactions (the
 * line is data transfer too). */
static void
deadline_line_done(struct smtp_session *s, size_t rawlen)
{
	if (s->state == STATE_NEW)
		return;
	if (smtp_session_in_content(s))
		smtp_session_deadline_credit(s, rawlen);
	else
		smtp_session_deadline_arm(s);
}

/* ------------------------------------------------------------------ */
/* transactions */

void
smtp_session_tx_reset(struct smtp_session *s)
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

/* ------------------------------------------------------------------ */
/* waiting for the queue, a resolver or the AUTH verifier */

/* Wait for the queue: the client is not timed out for our slowness. */
void
smtp_session_wait(struct smtp_session *s)
{
	s->state = STATE_WAIT;
	smtp_session_deadline_arm(s);
}

void
smtp_session_resume(struct smtp_session *s, enum session_state st)
{
	s->state = st;
	if (!s->closing)
		smtp_session_deadline_arm(s);
	if (!s->in_process) {
		smtp_session_process(s);
		if (s->io->progress != NULL)
			s->io->progress(s->io_arg);
	}
}

/* ------------------------------------------------------------------ */
/* commands */

struct command {
	const char *verb;
	/* args: text after the verb and one space (may be empty) */
	void (*fn)(struct smtp_session *s, const char *args, size_t len);
	bool params_line;   /* may use SMTP_SESSION_PARAM_LINE_MAX */
};

/*
 * One more command that moves no mail (Postfix's junk commands: NOOP,
 * RSET, HELP, VRFY, a repeated HELO/EHLO, RCPT past max_recipients).
 * Each costs the client nothing and would restart its deadline, so a
 * session may send max_junk_commands of them; the next one ends it with
 * 421 4.7.0. Returns false when it did.
 */
bool
smtp_session_junk_ok(struct smtp_session *s)
{
	if (s->njunk < s->cfg->max_junk_commands) {
		s->njunk++;
		return true;
	}
	smtp_session_reply(s, "421 4.7.0 %s Error: too many commands without mail",
	    s->cfg->hostname);
	log_info("smtp session=%s event=disconnect reason=junk-commands "
	    "count=%u", s->id, s->njunk);
	smtp_session_close(s);
	return false;
}

bool
smtp_session_need_helo(struct smtp_session *s)
{
	if (s->state == STATE_NEW) {
		smtp_session_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	return true;
}

bool
smtp_session_no_args(struct smtp_session *s, size_t len, const char *verb)
{
	if (len != 0) {
		smtp_session_reply(s, "501 5.5.4 Syntax: %s", verb);
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
		smtp_session_reply(s, "501 5.5.4 Syntax: %s hostname", verb);
		return;
	}
	if (s->helo[0] != '\0' && !smtp_session_junk_ok(s))
		return;
	/* RFC 5321 4.1.4: EHLO/HELO resets the transaction state. */
	smtp_session_tx_reset(s);
	memcpy(s->helo, args, len);
	s->helo[len] = '\0';
	s->esmtp = esmtp;
	s->state = STATE_READY;
	smtp_session_deadline_arm(s);
	if (!esmtp) {
		smtp_session_reply(s, "250 %s", s->cfg->hostname);
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
	    smtp_auth_cmd_usable(s) && s->auth_user == NULL ?
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

static void
do_rset(struct smtp_session *s, const char *args, size_t len)
{
	if (!smtp_session_no_args(s, len, "RSET") || !smtp_session_junk_ok(s))
		return;
	smtp_session_tx_reset(s);
	if (s->state != STATE_NEW)
		s->state = STATE_READY;
	smtp_session_reply(s, "250 2.0.0 Ok");
}

static void
do_noop(struct smtp_session *s, const char *args, size_t len)
{
	/* RFC 5321 4.1.1.9: a parameter may be given and is ignored. */
	if (smtp_session_junk_ok(s))
		smtp_session_reply(s, "250 2.0.0 Ok");
}

static void
do_vrfy(struct smtp_session *s, const char *args, size_t len)
{
	if (len == 0) {
		smtp_session_reply(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	if (!smtp_session_junk_ok(s))
		return;
	/* RFC 5321 3.5.3: 252 when we will not say (address harvesting). */
	smtp_session_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void
do_help(struct smtp_session *s, const char *args, size_t len)
{
	if (smtp_session_junk_ok(s))
		smtp_session_reply(s, "214 2.0.0 Commands: EHLO HELO AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT");
}

static void
do_quit(struct smtp_session *s, const char *args, size_t len)
{
	/* RFC 5321 4.1.1.10: the receiver MUST send 221 OK, even with args. */
	smtp_session_reply(s, "221 2.0.0 Bye");
	log_info("smtp session=%s event=quit", s->id);
	smtp_session_close(s);
}

static void
do_not_impl(struct smtp_session *s, const char *args, size_t len)
{
	smtp_session_reply(s, "502 5.5.1 Error: command not implemented");
}

/* RFC 3207 4. */
static void
do_starttls(struct smtp_session *s, const char *args, size_t len)
{
	if (s->tls_active) {
		smtp_session_reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->tls_offer || s->io->starttls == NULL) {
		smtp_session_reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (len > 0) {
		smtp_session_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->state == STATE_MAIL) {
		smtp_session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	smtp_session_reply(s, "220 2.0.0 Ready to start TLS");
	log_info("smtp session=%s event=starttls", s->id);
	/* Nothing more is read in clear text: the transport discards what
	 * the client pipelined after the command (RFC 3207 5). */
	s->state = STATE_TLS;
	s->io->starttls(s->io_arg);   /* it bounds the handshake */
}

static void
do_http(struct smtp_session *s, const char *args, size_t len)
{
	/* A web client or proxy abused to talk SMTP: stop at once. */
	smtp_session_reply(s, "421 4.7.0 %s Error: HTTP or proxy command refused", s->cfg->hostname);
	log_info("smtp session=%s event=disconnect reason=http-command", s->id);
	smtp_session_close(s);
}

static const struct command commands[] = {
	{ "EHLO", do_ehlo, false },
	{ "HELO", do_helo, false },
	{ "MAIL", smtp_params_do_mail, true },
	{ "RCPT", smtp_params_do_rcpt, true },
	{ "DATA", smtp_data_do_data, false },
	{ "BDAT", smtp_data_do_bdat, false },
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
	{ "AUTH", smtp_auth_cmd_do_auth, true },
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
			smtp_session_reply(s, "500 5.5.2 Error: invalid character in command");
			return;
		}
	}
	for (size_t i = 0; i < nitems(commands); i++) {
		const struct command *c = &commands[i];
		if (!util_ascii_casecmp_n(line, vl, c->verb, strlen(c->verb)))
			continue;
		if (!c->params_line && rawlen > SMTP_SESSION_LINE_MAX) {
			smtp_session_reply(s, "500 5.5.2 Error: line too long");
			return;
		}
		const char *args = vl < len ? line + vl + 1 : line + len;
		size_t alen = vl < len ? len - vl - 1 : 0;
		c->fn(s, args, alen);
		return;
	}
	if (rawlen > SMTP_SESSION_LINE_MAX)
		smtp_session_reply(s, "500 5.5.2 Error: line too long");
	else
		smtp_session_reply(s, "500 5.5.1 Error: command not recognized");
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
	size_t rawlen;
	/* too long: the first octets are gone, skip the rest of the line */
	enum conn_line found = conn_line(s->in, SMTP_SESSION_PARAM_LINE_MAX,
	    &rawlen);

	if (found == CONN_LINE_MORE)
		return 0;
	if (found == CONN_LINE_TOO_LONG) {
		s->skipping_line = true;
		return 1;
	}
	char *line = (char *)evbuffer_pullup(s->in, (ssize_t)rawlen);
	size_t len = rawlen - 1;
	bool crlf = len > 0 && line[len - 1] == '\r';
	if (crlf)
		len--;
	if (s->skipping_line) {
		s->skipping_line = false;
		evbuffer_drain(s->in, rawlen);
		smtp_session_reply(s, "500 5.5.2 Error: line too long");
	} else if (!crlf && s->cfg->bare_newline == CONFIG_BARE_NEWLINE_REJECT) {
		evbuffer_drain(s->in, rawlen);
		smtp_session_reply(s, "500 5.5.2 Error: bare <LF> received; commands must end with <CR><LF>");
	} else {
		char buf[SMTP_SESSION_PARAM_LINE_MAX + 1];

		memcpy(buf, line, len);
		buf[len] = '\0';
		evbuffer_drain(s->in, rawlen);
		s->last_cmd_crlf = crlf;
		dispatch(s, buf, len, rawlen);
	}
	deadline_line_done(s, rawlen);
	return 1;
}

static void
session_process_input(struct smtp_session *s)
{
	while (!s->closing) {
		if (s->nerrors >= s->cfg->max_errors) {
			smtp_session_reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->hostname);
			log_info("smtp session=%s event=disconnect reason=too-many-errors", s->id);
			smtp_session_close(s);
			return;
		}
		if (evbuffer_get_length(s->out) > SMTP_SESSION_OUTPUT_MAX)
			return;   /* resumed when the client reads its replies */
		if (s->data_held && (s->qops->congested == NULL ||
		    !s->qops->congested(s->qctx)))
			deadline_release(s);   /* after a pause for the queue */
		switch (s->state) {
		case STATE_WAIT:
		case STATE_TLS:
		case STATE_CLOSED:
			return;
		case STATE_DATA:
		case STATE_BDAT:
			if (!smtp_data_input(s))
				return;
			break;
		case STATE_AUTH:
			if (smtp_auth_cmd_read_line(s) == 0)
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
	/* the greeting phase starts with the connection: on an implicit-TLS
	 * listener the handshake comes first and counts against it */
	s->greeting_at = util_mono_ms() + (int64_t)cfg->timeout_greeting * 1000;
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
	smtp_session_tx_reset(s);
	s->helo[0] = '\0';
	s->esmtp = false;
	s->auth_user = NULL;
	s->auth_step = AUTH_STEP_NONE;
	s->state = STATE_NEW;
	/* a greeting phase of its own: the handshake had timeout_command */
	s->greeting_at = util_mono_ms() + (int64_t)s->cfg->timeout_greeting * 1000;
	smtp_session_deadline_arm(s);
}

void
smtp_session_start(struct smtp_session *s)
{
	log_info("smtp session=%s event=connect client=%s:%u relay=%s", s->id,
	    s->client->addr, s->client->port, s->client->relay_ok ? "yes" : "no");
	/* Too many failed AUTH attempts from this address lately: 421.
	 * Only where AUTH is offered: a listener without it (the MX on port
	 * 25) serves the address as ever, or anyone sharing its NAT or /64
	 * could cut a legitimate MTA off by failing AUTH on the submission
	 * port. */
	if (smtp_auth_cmd_enabled(s) && smtp_auth_cmd_refuse_throttled(s))
		return;
	/* No enhanced code on the greeting (RFC 2034 4). */
	evbuffer_add_printf(s->out, "220 %s ESMTP tern\r\n", s->cfg->hostname);
	smtp_session_deadline_arm(s);
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
	const char *stage = s->state == STATE_NEW ? "greeting" :
	    s->state == STATE_AUTH ? "auth" : smtp_session_in_content(s) ? "data" :
	    "command";

	if (s->closing)
		return;
	if (smtp_session_in_content(s) && s->cfg->min_data_rate > 0 &&
	    util_mono_ms() - s->data_last_input <
	    (int64_t)s->cfg->timeout_data * 1000) {
		/* octets kept coming, too few of them */
		smtp_session_reply(s, "421 4.4.2 %s Error: timeout exceeded: data slower "
		    "than %u bytes/s", s->cfg->hostname, s->cfg->min_data_rate);
		log_info("smtp session=%s event=disconnect reason=slow-data "
		    "stage=data size=%" PRIu64, s->id, s->tx.size);
	} else {
		smtp_session_reply(s, "421 4.4.2 %s Error: timeout exceeded",
		    s->cfg->hostname);
		/* pending: octets of a line that never ended */
		log_info("smtp session=%s event=disconnect reason=timeout "
		    "stage=%s pending=%zu", s->id, stage,
		    evbuffer_get_length(s->in));
	}
	smtp_session_close(s);
}

void
smtp_session_shutdown(struct smtp_session *s)
{
	if (s->closing)
		return;
	/* during a handshake the buffers belong to the TLS layer */
	if (s->state != STATE_TLS)
		smtp_session_reply(s, "421 4.3.2 %s Service shutting down", s->cfg->hostname);
	smtp_session_close(s);
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
