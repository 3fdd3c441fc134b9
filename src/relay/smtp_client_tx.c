/*
 * smtp_client_tx.c - one transaction of the SMTP client: the checks made
 * before any command (addresses, SMTPUTF8, 8BITMIME, SIZE), MAIL and RCPT
 * with their ESMTP parameters, DATA, the content (CRLF and dot-stuffing
 * enforced), and each recipient's result from the replies.
 */
#include <inttypes.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "mail/smtp_addr.h"
#include "lib/util.h"
#include "relay/smtp_client.h"
#include "relay/smtp_client_int.h"

/* ------------------------------------------------------------------ */
/* results and the end */

void
smtp_client_tx_clear(struct tx *t)
{
	free(t->res);
	free(t->rst);
	free(t->live);
	memset(t, 0, sizeof(*t));
}

/* Give the caller the results and forget the transaction. The state is
 * cleared first so the callback may start the next one. */
void
smtp_client_tx_done(struct smtp_client *c, enum smtp_client_error err)
{
	struct tx t = c->tx;
	struct smtp_client_result res;

	memset(&c->tx, 0, sizeof(c->tx));
	res.error = err;
	res.peer_dsn = (c->caps & SMTP_CLIENT_CAP_DSN) != 0;
	res.rcpts = t.res;
	res.nrcpts = t.n;
	t.cb(t.cb_arg, &res);
	smtp_client_tx_clear(&t);
}

/* Decide recipient i from a reply: 2xx DELIVERED, 4xx TEMP, 5xx PERM. */
void
smtp_client_tx_rcpt_final(struct tx *t, size_t i, enum smtp_client_stage st,
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
void
smtp_client_tx_rcpt_open(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r, bool final)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->rst[i] == R_DONE)
			continue;
		smtp_client_tx_rcpt_final(t, i, st, r);
		if (!final)
			t->res[i].status = SMTP_CLIENT_TEMPFAIL;
	}
}

/* Accepted recipients get the reply to DATA or to ".". */
void
smtp_client_tx_rcpt_accepted(struct tx *t, enum smtp_client_stage st,
    const struct smtp_client_reply *r)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->rst[i] == R_ACCEPTED)
			smtp_client_tx_rcpt_final(t, i, st, r);
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
		    smtp_client_is_digit((char)ch) || ch == '-'))
			return false;
	}
	return smtp_xtext_valid(semi + 1, n - (size_t)(semi + 1 - v));
}

static void
tx_local_all(struct tx *t, const char *enh, const char *text)
{
	struct smtp_client_reply r;

	smtp_client_set_reply(&r, 0, enh, "%s", text);
	for (size_t i = 0; i < t->n; i++)
		if (t->rst[i] != R_DONE)
			smtp_client_tx_rcpt_final(t, i, SMTP_CLIENT_STAGE_LOCAL,
			    &r);
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
			smtp_client_set_reply(&r, 0, "5.1.3", "bad recipient "
			    "address syntax");
			smtp_client_tx_rcpt_final(t, i, SMTP_CLIENT_STAGE_LOCAL,
			    &r);
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
	smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_MAIL, line, (size_t)n);
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
	smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_RCPT, line, (size_t)n);
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
/* the replies to the transaction's commands */

void
smtp_client_tx_on_rset(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	if (r->code / 100 == 2)
		return;
	if (smtp_client_is_421(c, r))
		return;
	/* The server will not reset: nothing sent after it can be trusted. */
	smtp_client_protocol_error(c, r, "RSET");
}

void
smtp_client_tx_on_mail(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "MAIL");
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	t->mail_answered = true;
	if (r->code / 100 == 2) {
		t->mail_ok = true;
		return;
	}
	/* MAIL refused: it decides every recipient. With PIPELINING the
	 * RCPT and DATA replies still to come are read and ignored. */
	smtp_client_tx_rcpt_open(t, SMTP_CLIENT_STAGE_MAIL, r, true);
	if (t->rcpt_sent == 0)
		smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
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
	smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
}

void
smtp_client_tx_on_rcpt(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;
	size_t i = t->live[t->rcpt_answered++];

	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "RCPT");
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (t->rst[i] == R_DONE)   /* decided by MAIL's refusal */
		goto out;
	if (r->code / 100 == 2) {
		t->rst[i] = R_ACCEPTED;
		t->res[i].stage = SMTP_CLIENT_STAGE_RCPT;
		t->res[i].reply = *r;
		t->naccepted++;
	} else {
		smtp_client_tx_rcpt_final(t, i, SMTP_CLIENT_STAGE_RCPT, r);
	}
out:
	if (!t->data_sent)
		rcpts_answered(c);
}

void
smtp_client_tx_on_data(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 2) {
		smtp_client_protocol_error(c, r, "DATA");
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	if (r->code / 100 == 3) {
		/* RFC 2920 3.1: DATA accepted with nobody to send to: "."
		 * alone; otherwise the content. */
		t->body_nobody = t->naccepted == 0;
		t->phase = TX_BODY;
		return;
	}
	smtp_client_tx_rcpt_accepted(t, SMTP_CLIENT_STAGE_DATA, r);
	c->need_rset = t->mail_ok;
	smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
}

void
smtp_client_tx_on_dot(struct smtp_client *c,
    const struct smtp_client_reply *r)
{
	struct tx *t = &c->tx;

	if (r->code / 100 == 3) {
		smtp_client_protocol_error(c, r, "end of data");
		return;
	}
	if (smtp_client_is_421(c, r))
		return;
	/* RFC 5321 4.1.1.4: one reply for every accepted recipient. */
	smtp_client_tx_rcpt_accepted(t, SMTP_CLIENT_STAGE_DOT, r);
	smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
}

/* The transaction's next commands or content (smtp_client_int.h). */
bool
smtp_client_tx_step(struct smtp_client *c)
{
	struct tx *t = &c->tx;
	bool pipelining = (c->caps & SMTP_CLIENT_CAP_PIPELINING) != 0;

	if (evbuffer_get_length(c->out) >= c->output_high)
		return false;
	switch (t->phase) {
	case TX_QUEUED:
		if (c->ex_len > 0)
			return false;
		if (!tx_start(c))
			smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
		return true;
	case TX_CMDS:
		/* RFC 2920 3.1: RSET, MAIL and RCPT anywhere in a group, DATA
		 * last; without PIPELINING one command, then its reply. */
		if (!pipelining && c->ex_len > 0)
			return false;
		if (c->need_rset) {
			smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_RSET, "RSET",
			    4);
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
			smtp_client_tx_done(c, SMTP_CLIENT_ERR_NONE);
			return true;
		}
		smtp_client_cmd_write(c, SMTP_CLIENT_STAGE_DATA, "DATA", 4);
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
			smtp_client_expect_push(c, SMTP_CLIENT_STAGE_DOT);
			t->phase = TX_DOT;
		}
		return true;
	}
	case TX_DOT:
		return false;
	}
	return false;
}
