/*
 * smtp_data.c - DATA and BDAT: message content and its queue transaction
 * (see smtp_session_int.h).
 *
 * Message content passes through two layers:
 *
 *   DATA: data_feed() finds line starts, removes dot-stuffing and
 *         recognises end-of-data (only CR LF "." CR LF, RFC 5321 4.1.1.4);
 *   BDAT: octets are taken as counted (RFC 3030), no dot processing;
 *   both then go through body_put(), which applies the bare CR / bare LF
 *   policy, checks line lengths and the size limit, counts Received:
 *   fields (RFC 5321 6.3), and stages the CRLF normalised octets for the
 *   queue (through the header capture of smtp_headers.c for an
 *   authenticated session).
 *
 * So a message can only end where a standards-conforming receiver would
 * end it, and what tern stores (and later relays) always has CRLF lines:
 * no SMTP smuggling sequence (CVE-2023-51764 class) survives either way.
 * The queue says 250 only once the message is on disk (commit_done()).
 */
#include <event2/buffer.h>
#include <inttypes.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/header.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_session.h"
#include "smtpd/smtp_session_int.h"

#define BODY_LINE_MAX 998        /* RFC 5322 2.1.1, RFC 5321 4.5.3.1.6 */
#define STAGE_FLUSH (64 * 1024)  /* octets staged before a queue write */

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
		smtp_headers_finish(s, true);
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

	if (!t->in_body) {
		/* RFC 5322 2.1: the first empty line ends the header section */
		if (empty_line)
			t->in_body = true;
		else if (header_field_is(t->line_head, t->line_len <
		    sizeof(t->line_head) ? t->line_len : sizeof(t->line_head),
		    "Received"))
			t->nreceived++;
	}

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
		smtp_headers_finish(s, false);
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
			if (!t->in_body && t->line_len < sizeof(t->line_head)) {
				size_t room = sizeof(t->line_head) - t->line_len;

				memcpy(t->line_head + t->line_len, p + i,
				    span < room ? span : room);
			}
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
		smtp_headers_finish(s, false);   /* a message that is all header */
	stage_flush(s);
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

static void
begin_done(void *arg, const struct queue_result *res)
{
	struct smtp_session *s = arg;
	struct transaction *t = &s->tx;

	if (!res->ok) {
		t->qtxn = NULL;    /* the queue dropped it */
		copy_fail_reply(s, res);
		if (!t->bdat) {
			smtp_session_reply_raw(s, t->fail_reply);
			log_info("smtp session=%s event=rejected reply=\"%s\"",
			    s->id, t->fail_reply);
			smtp_session_tx_reset(s);
			smtp_session_resume(s, STATE_READY);
			return;
		}
		/* BDAT: the chunk must still be consumed (RFC 3030 2). */
		t->bdat_failed = true;
		smtp_session_resume(s, STATE_BDAT);
		return;
	}
	util_strlcpy(t->queue_id, res->queue_id ? res->queue_id : "", sizeof(t->queue_id));
	write_received(s);
	/* Submission: hold the header back for From: and the fields an MSA
	 * adds (smtp_headers_finish()). */
	t->hdr_phase = s->auth_user != NULL;
	if (t->bdat) {
		smtp_session_resume(s, STATE_BDAT);
	} else {
		smtp_session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
		t->dl = DL_BOL;
		/* The DATA line's own ending starts the first content line. */
		t->prev_crlf = s->last_cmd_crlf;
		smtp_session_resume(s, STATE_DATA);
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
		smtp_session_reply(s, "250 2.0.0 Ok: queued as %s", res->queue_id);
		log_info("smtp session=%s event=queued id=%s size=%" PRIu64
		    " nrcpt=%zu", s->id, res->queue_id, t->size, t->env.nrcpts);
		s->nmessages++;
		s->njunk = 0;   /* a session that delivers mail is no idler */
	} else {
		copy_fail_reply(s, res);
		smtp_session_reply_raw(s, t->fail_reply);
		log_info("smtp session=%s event=rejected id=%s reply=\"%s\"",
		    s->id, t->queue_id, t->fail_reply);
	}
	smtp_session_tx_reset(s);
	smtp_session_resume(s, STATE_READY);
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
	/* RFC 5321 6.3: a message that passed this many hosts is looping;
	 * refuse it before it goes round once more. */
	if (why == NULL && t->nreceived > s->cfg->max_received_headers) {
		why = "554 5.4.6 Too many Received headers: mail loop";
		log_info("smtp session=%s event=mail-loop received=%u limit=%u",
		    s->id, t->nreceived, s->cfg->max_received_headers);
	}
	if (why == NULL && t->from_error)
		why = t->from_buf;
	if (why == NULL && t->qtxn == NULL)
		why = t->fail_reply ? t->fail_reply : "451 4.3.0 Error: queue file write error";
	if (why != NULL) {
		smtp_session_reply_raw(s, why);
		log_info("smtp session=%s event=rejected id=%s reply=\"%s\"", s->id,
		    t->queue_id[0] ? t->queue_id : "-", why);
		smtp_session_tx_reset(s);
		s->state = STATE_READY;
		smtp_session_deadline_arm(s);
		return;
	}
	smtp_session_wait(s);
	s->qops->commit(s->qctx, t->qtxn, commit_done, s);
}

static bool
data_precheck(struct smtp_session *s, const char *verb)
{
	struct transaction *t = &s->tx;

	if (!smtp_session_need_helo(s))
		return false;
	if (s->state != STATE_MAIL) {
		smtp_session_reply(s, "503 5.5.1 Error: need MAIL command");
		return false;
	}
	if (t->env.nrcpts == 0) {
		if (t->rcpt_attempts == 0)
			smtp_session_reply(s, "503 5.5.1 Error: need RCPT command");
		else
			smtp_session_reply(s, "554 5.5.1 Error: no valid recipients");
		return false;
	}
	(void)verb;
	return true;
}

void
smtp_data_do_data(struct smtp_session *s, const char *args, size_t len)
{
	if (!smtp_session_no_args(s, len, "DATA"))
		return;
	if (s->tx.bdat) {
		/* RFC 3030 2: no DATA within a BDAT transaction */
		smtp_session_reply(s, "503 5.5.1 Error: DATA after BDAT");
		return;
	}
	if (!data_precheck(s, "DATA"))
		return;
	s->tx.bdat = false;
	smtp_session_wait(s);
	s->tx.qtxn = s->qops->begin(s->qctx, &s->tx.env, begin_done, s);
}

/*
 * BDAT chunk-size [LAST] (RFC 3030 2). The chunk is always consumed, even
 * when the command fails, or its octets would be read as commands.
 */
void
smtp_data_do_bdat(struct smtp_session *s, const char *args, size_t len)
{
	struct transaction *t = &s->tx;
	uint64_t n = 0;
	size_t i = 0;
	bool last = false;

	while (i < len && args[i] >= '0' && args[i] <= '9') {
		if (n > (UINT64_MAX - 9) / 10) {
			smtp_session_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
			return;
		}
		n = n * 10 + (uint64_t)(args[i] - '0');
		i++;
	}
	if (i == 0 || i > 20) {
		/* We cannot know how much to skip: the stream is lost. */
		smtp_session_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		return;
	}
	/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [SP end-marker] CRLF,
	 * end-marker = "LAST" (case-insensitive). Anything else ("BDAT 1x",
	 * "BDAT 10 FOO", a trailing space) is no BDAT command at all: a 501
	 * at once, and what follows is read as commands, as Postfix does.
	 * Only a well-formed command that fails has its chunk consumed. */
	if (i < len && (args[i] != ' ' ||
	    !util_ascii_casecmp_n(args + i + 1, len - i - 1, "LAST", 4))) {
		smtp_session_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		return;
	}
	last = i < len;
	/* An empty chunk that does not end the message moves no mail: it
	 * counts as a junk command, or a client could hold its slot for
	 * ever with "BDAT 0" lines, each answered and each crediting its
	 * octets to the data budget. */
	if (n == 0 && !last && !smtp_session_junk_ok(s))
		return;

	const char *why = NULL;
	bool ok = true;
	if (s->state == STATE_NEW)
		why = "503 5.5.1 Error: send HELO/EHLO first";
	else if (s->state != STATE_MAIL)
		why = "503 5.5.1 Error: need MAIL command";
	else if (t->env.nrcpts == 0)
		why = t->rcpt_attempts == 0 ? "503 5.5.1 Error: need RCPT command" :
		    "554 5.5.1 Error: no valid recipients";
	if (why != NULL) {
		/* Consume the chunk in a throw-away transaction. */
		ok = false;
		smtp_session_tx_reset(s);
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
		smtp_session_wait(s);
		t->qtxn = s->qops->begin(s->qctx, &t->env, begin_done, s);
		return;
	}
	s->state = STATE_BDAT;
	smtp_session_deadline_arm(s);
}

/* A BDAT chunk has been read completely. */
static void
bdat_chunk_done(struct smtp_session *s)
{
	struct transaction *t = &s->tx;

	if (t->bdat_failed) {
		smtp_session_reply_raw(s, t->fail_reply ? t->fail_reply :
		    "554 5.5.1 Error: transaction failed");
		/* A failed chunk ends the transaction (RFC 3030 4). */
		smtp_session_tx_reset(s);
		s->state = s->helo[0] != '\0' ? STATE_READY : STATE_NEW;
		smtp_session_deadline_arm(s);
		return;
	}
	if (!t->bdat_last) {
		if (t->body_error == BODY_TOO_BIG) {
			/* No point reading further chunks of a message we refuse. */
			smtp_session_reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
			smtp_session_tx_reset(s);
			s->state = STATE_READY;
		} else {
			smtp_session_reply(s, "250 2.0.0 %" PRIu64 " octets received", t->chunk_size);
			s->state = STATE_MAIL;
		}
		smtp_session_deadline_arm(s);
		return;
	}
	content_end(s);
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
		smtp_session_deadline_credit(s, consumed);
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
		smtp_session_deadline_credit(s, n);
		t->chunk_left -= n;
		if (t->chunk_left > 0 && s->qops->congested != NULL &&
		    s->qops->congested(s->qctx))
			return false;
	}
	return true;
}

/*
 * Message data stopped: for more input, or because the queue is behind.
 * While it is behind the client is not timed out (its octets wait in our
 * buffers, or the transport stops reading them), and the data budget
 * stands still: it goes on with what was left when data flows again.
 */
static void
data_paused(struct smtp_session *s)
{
	if (s->qops->congested == NULL || !s->qops->congested(s->qctx))
		return;
	smtp_session_deadline_hold(s);
}

bool
smtp_data_input(struct smtp_session *s)
{
	if (s->state == STATE_DATA) {
		if (!data_feed(s)) {
			data_paused(s);
			return false;
		}
		content_end(s);
		return true;
	}
	if (!bdat_feed(s)) {
		data_paused(s);
		return false;
	}
	bdat_chunk_done(s);
	return true;
}
