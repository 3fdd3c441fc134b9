/*
 * dsn.c - delivery status notifications (see dsn.h and docs/dsn.md).
 *
 * The report is built in one pass into an evbuffer. Every line is CRLF
 * terminated and at most 998 octets (RFC 5322 2.1.1): header fields and
 * DSN fields are folded at spaces near 78 octets and, as a last resort, a
 * word longer than a line is split; the explanation is wrapped by words.
 * Nothing from the original message or the network reaches a header or a
 * DSN field unsanitised: control octets become '?', so no value can start
 * a field or a part of its own.
 */
#include <inttypes.h>

#include <event2/buffer.h>

#include "mail/dsn.h"
#include "mail/envelope.h"
#include "lib/log.h"
#include "lib/utf8.h"
#include "lib/util.h"

#define FOLD_AT 78            /* RFC 5322 2.1.1 SHOULD */
#define LINE_MAX_OCTETS 998   /* RFC 5322 2.1.1 MUST */
#define HEADERS_MIN_RETURN (64 * 1024)
#define FIELD_MAX 4096        /* one field value, before folding */

bool
dsn_wanted(unsigned notify, enum dsn_action action)
{
	/* RFC 3461 4.1: NEVER excludes every other keyword. */
	if (notify & ENVELOPE_NOTIFY_NEVER)
		return false;
	/* RFC 3461 4.1: without NOTIFY, "FAILURE,DELAY" is assumed. */
	if (notify == 0)
		return action == DSN_ACTION_FAILED || action == DSN_ACTION_DELAYED;
	switch (action) {
	case DSN_ACTION_FAILED:
		return (notify & ENVELOPE_NOTIFY_FAILURE) != 0;
	case DSN_ACTION_DELAYED:
		return (notify & ENVELOPE_NOTIFY_DELAY) != 0;
	case DSN_ACTION_DELIVERED:
	case DSN_ACTION_RELAYED:
		return (notify & ENVELOPE_NOTIFY_SUCCESS) != 0;
	}
	return false;
}

/* ---- xtext (RFC 3461 4) and utf-8-addr-xtext (RFC 6533 3) ---- */

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
dsn_xtext_decode(const char *in, size_t len, char *out, size_t outsize)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '+') {
			int hi, lo;

			/* hexchar: "+" and two upper-case hex digits */
			if (i + 2 >= len)
				return -1;
			hi = hexval(in[i + 1]);
			lo = hexval(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return -1;
		}
		if (o + 1 >= outsize)
			return -1;
		out[o++] = (char)c;
	}
	if (outsize == 0)
		return -1;
	out[o] = '\0';
	return (int)o;
}

int
dsn_xtext_encode(const char *in, size_t len, char *out, size_t outsize)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c < '!' || c > '~' || c == '+' || c == '=') {
			if (o + 4 > outsize)
				return -1;
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			if (o + 2 > outsize)
				return -1;
			out[o++] = (char)c;
		}
	}
	if (outsize == 0)
		return -1;
	out[o] = '\0';
	return (int)o;
}

/* true if p..p+n is "\x{HEX}" (2 to 6 hex digits) at its start; its length. */
static size_t
embedded_unicode(const char *p, size_t n)
{
	size_t i = 3;

	if (n < 6 || p[0] != '\\' || p[1] != 'x' || p[2] != '{')
		return 0;
	while (i < n && i < 9 && ((p[i] >= '0' && p[i] <= '9') ||
	    (p[i] >= 'A' && p[i] <= 'F') || (p[i] >= 'a' && p[i] <= 'f')))
		i++;
	if (i - 3 < 2 || i >= n || p[i] != '}')
		return 0;
	return i + 1;
}

/* Append the utf-8-addr-xtext form of (s, n) to out; -1 if it overflows. */
static int
put_utf8_xtext(const char *s, size_t n, char *out, size_t outsize, size_t *o)
{
	for (size_t i = 0; i < n;) {
		const unsigned char *p = (const unsigned char *)s + i;
		size_t k = embedded_unicode(s + i, n - i);
		uint32_t cp;
		int w;

		if (k > 0) {
			/* already in the encoded form: keep it */
			if (*o + k + 1 > outsize)
				return -1;
			memcpy(out + *o, s + i, k);
			*o += k;
			i += k;
			continue;
		}
		k = utf8_decode(p, n - i, &cp);
		if (k == 0) {
			k = 1;
			cp = p[0];   /* malformed: the octet's value, visibly */
		}
		/* QCHAR: printable ASCII except SP, '\', '+', '=' */
		if (cp > 0x20 && cp < 0x7f && cp != '\\' && cp != '+' &&
		    cp != '=') {
			if (*o + 2 > outsize)
				return -1;
			out[(*o)++] = (char)cp;
		} else {
			w = snprintf(out + *o, outsize - *o, "\\x{%02" PRIX32 "}",
			    cp);
			if (w < 0 || (size_t)w >= outsize - *o)
				return -1;
			*o += (size_t)w;
		}
		i += k;
	}
	out[*o] = '\0';
	return 0;
}

static bool
printable_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

int
dsn_address_field(const char *addr, const char *orcpt, char *out,
    size_t outsize)
{
	size_t o = 0;

	if (outsize < 16)
		return -1;
	if (orcpt != NULL) {
		const char *semi = strchr(orcpt, ';');
		char dec[1100];
		int n;

		if (semi != NULL && semi > orcpt &&
		    printable_ascii(orcpt, (size_t)(semi - orcpt))) {
			size_t tl = (size_t)(semi - orcpt);
			const char *v = semi + 1;

			n = dsn_xtext_decode(v, strlen(v), dec, sizeof(dec));
			if (tl == 5 && strncasecmp(orcpt, "utf-8", 5) == 0) {
				/* RFC 6533 3: utf-8-addr-xtext in a 7-bit
				 * delivery-status, whatever form came in */
				if (n < 0) {
					util_strlcpy(dec, v, sizeof(dec));
					n = (int)strlen(dec);
				}
				if (tl + 1 >= outsize)
					return -1;
				memcpy(out, "utf-8;", 6);
				o = 6;
				return put_utf8_xtext(dec, (size_t)n, out, outsize,
				    &o) == 0 ? (int)o : -1;
			}
			/* RFC 3461 6.3(d) and 4.2: the decoded value, which
			 * must be printable US-ASCII; otherwise as received. */
			if (n < 0 || !printable_ascii(dec, (size_t)n))
				n = -1;
			if (snprintf(out, outsize, "%.*s;%s", (int)tl, orcpt,
			    n >= 0 ? dec : v) >= (int)outsize)
				return -1;
			/* a value as received may still hold non-ASCII */
			for (char *c = out; *c; c++)
				if ((unsigned char)*c < 0x20 ||
				    (unsigned char)*c > 0x7e)
					*c = '?';
			return (int)strlen(out);
		}
		/* not "type;value": report it as an unknown type */
		if (snprintf(out, outsize, "unknown;%s", orcpt) >= (int)outsize)
			return -1;
		for (char *c = out; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
				*c = '?';
		return (int)strlen(out);
	}
	if (printable_ascii(addr, strlen(addr))) {
		/* RFC 3461 6.3(e): received by SMTP, so rfc822 */
		if (snprintf(out, outsize, "rfc822;%s", addr) >= (int)outsize)
			return -1;
		return (int)strlen(out);
	}
	memcpy(out, "utf-8;", 6);
	o = 6;
	return put_utf8_xtext(addr, strlen(addr), out, outsize, &o) == 0 ?
	    (int)o : -1;
}

/* ---- output helpers ---- */

/* Control octets (and, unless keep8, octets >= 0x80) become '?'. */
static void
sanitize(char *s, bool keep8)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f || (!keep8 && c >= 0x80))
			*s = '?';
	}
}

/*
 * "Name: value" folded at spaces near FOLD_AT octets; a word that cannot
 * fit on a line of LINE_MAX_OCTETS is split. value holds no control
 * octets (callers sanitize).
 */
static void
put_field(struct evbuffer *out, const char *name, const char *value)
{
	size_t col = strlen(name) + 1;
	const char *p = value;

	evbuffer_add_printf(out, "%s:", name);
	while (*p == ' ')
		p++;
	while (*p != '\0') {
		const char *w = p;
		size_t wl;

		while (*p != '\0' && *p != ' ')
			p++;
		wl = (size_t)(p - w);
		while (*p == ' ')
			p++;
		if (col + 1 + wl > FOLD_AT && col > strlen(name) + 1) {
			evbuffer_add(out, "\r\n", 2);
			col = 0;
		}
		/* RFC 5322 2.1.1: a line is never longer than 998 octets */
		while (col + 1 + wl > LINE_MAX_OCTETS) {
			size_t room = LINE_MAX_OCTETS - col - 1;

			evbuffer_add(out, " ", 1);
			evbuffer_add(out, w, room);
			evbuffer_add(out, "\r\n", 2);
			w += room;
			wl -= room;
			col = 0;
		}
		evbuffer_add(out, " ", 1);
		evbuffer_add(out, w, wl);
		col += 1 + wl;
	}
	evbuffer_add(out, "\r\n", 2);
}

/* put_field() with a printf-built value, sanitized (7-bit). */
static void
put_fieldf(struct evbuffer *out, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
put_fieldf(struct evbuffer *out, const char *name, const char *fmt, ...)
{
	char v[FIELD_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	sanitize(v, false);
	put_field(out, name, v);
}

/*
 * Plain text wrapped by words at 76 octets, each line starting with
 * indent; a word longer than a line is split. text holds no control
 * octets other than '\n' (paragraph breaks are "\n").
 */
static void
put_text(struct evbuffer *out, const char *indent, const char *text)
{
	size_t il = strlen(indent), col = 0;
	const char *p = text;
	bool line_open = false;

	while (*p != '\0') {
		const char *w;
		size_t wl;
		bool split = false;

		if (*p == '\n') {
			evbuffer_add(out, "\r\n", 2);
			col = 0;
			line_open = false;
			p++;
			continue;
		}
		if (*p == ' ') {
			p++;
			continue;
		}
		w = p;
		while (*p != '\0' && *p != ' ' && *p != '\n')
			p++;
		wl = (size_t)(p - w);
		if (line_open && col + 1 + wl > 76) {
			evbuffer_add(out, "\r\n", 2);
			col = 0;
			line_open = false;
		}
		while (wl > 0) {
			size_t room;

			if (!line_open) {
				/* a split word's rest never starts a line at
				 * column 0, where it could look like a
				 * boundary */
				if (il == 0 && split) {
					evbuffer_add(out, " ", 1);
					col = 1;
				} else {
					evbuffer_add(out, indent, il);
					col = il;
				}
				line_open = true;
			} else {
				evbuffer_add(out, " ", 1);
				col++;
			}
			room = 900 - col;
			if (wl <= room) {
				evbuffer_add(out, w, wl);
				col += wl;
				break;
			}
			evbuffer_add(out, w, room);
			evbuffer_add(out, "\r\n", 2);
			line_open = false;
			split = true;
			w += room;
			wl -= room;
		}
	}
	if (line_open)
		evbuffer_add(out, "\r\n", 2);
}

static void
put_textf(struct evbuffer *out, const char *indent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
put_textf(struct evbuffer *out, const char *indent, const char *fmt, ...)
{
	char v[FIELD_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	for (char *c = v; *c; c++)
		if (((unsigned char)*c < 0x20 && *c != '\n') ||
		    (unsigned char)*c >= 0x7f)
			*c = '?';
	put_text(out, indent, v);
}

/* End of the line that holds offset max at most: a cut after a CRLF. */
static size_t
cut_at_line(const char *p, size_t n, size_t max)
{
	if (n <= max)
		return n;
	for (size_t i = max; i >= 2; i--)
		if (p[i - 2] == '\r' && p[i - 1] == '\n')
			return i;
	return 0;
}

/* The header block of msg, its final CRLF included (not the blank line). */
static size_t
header_len(const char *msg, size_t len)
{
	const char *e;

	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
		return 0;
	e = memmem(msg, len, "\r\n\r\n", 4);
	return e != NULL ? (size_t)(e - msg) + 2 : len;
}

/*
 * true if (p, n) is an RFC 3463 status code as RFC 3464 2.3.4 allows it:
 * class "." subject "." detail, class 2, 4 or 5, subject and detail 1 to
 * 3 digits without a leading zero ("5.1.1", "4.4.10"; not "5.01.001").
 */
static bool
status_valid(const char *p, size_t n)
{
	size_t i = 2;

	if (n < 5 || (p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
		return false;
	for (int part = 0; part < 2; part++) {
		size_t start = i;

		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
		if (i == start || i - start > 3 || (p[start] == '0' && i - start > 1))
			return false;
		if (part == 0 && (i >= n || p[i++] != '.'))
			return false;
	}
	return i == n;
}

/*
 * The status code of a report line: rc->status, else the enhanced code
 * of the reply ("550 5.1.1 text"), when either is valid (status_valid);
 * otherwise X.0.0 (RFC 3461 6.3(g)) of the reply's class, or of the
 * action's when the reply has none.
 */
static void
rcpt_status(const struct dsn_rcpt *rc, char *buf, size_t size)
{
	const char *d = rc->diagnostic;
	char cls = rc->action == DSN_ACTION_FAILED ? '5' :
	    rc->action == DSN_ACTION_DELAYED ? '4' : '2';

	if (rc->status != NULL && status_valid(rc->status, strlen(rc->status))) {
		util_strlcpy(buf, rc->status, size);
		return;
	}
	if (d != NULL && strlen(d) >= 4 && (d[0] == '2' || d[0] == '4' ||
	    d[0] == '5') && d[1] >= '0' && d[1] <= '9' && d[2] >= '0' &&
	    d[2] <= '9' && (d[3] == ' ' || d[3] == '-')) {
		size_t n = 4;

		while (d[n] != '\0' && d[n] != ' ')
			n++;
		/* the enhanced code after the reply code, of the same class
		 * (RFC 3463 2) */
		if (status_valid(d + 4, n - 4) && d[4] == d[0]) {
			snprintf(buf, size, "%.*s", (int)(n - 4), d + 4);
			return;
		}
		cls = d[0];
	}
	snprintf(buf, size, "%c.0.0", cls);
}

static const char *
action_name(enum dsn_action a)
{
	switch (a) {
	case DSN_ACTION_FAILED:
		return "failed";
	case DSN_ACTION_DELAYED:
		return "delayed";
	case DSN_ACTION_DELIVERED:
		return "delivered";
	case DSN_ACTION_RELAYED:
		return "relayed";
	}
	return "failed";
}

/* What the sender can do about a failure, by RFC 3463 subject.detail. */
static const char *
advice(const char *status, enum dsn_action a)
{
	const char *sd = strchr(status, '.');

	if (a != DSN_ACTION_FAILED)
		return NULL;
	sd = sd != NULL ? sd + 1 : "";
	if (strcmp(sd, "1.1") == 0 || strcmp(sd, "1.3") == 0 ||
	    strcmp(sd, "1.6") == 0)
		return "The address does not exist there. Check it for typing "
		    "mistakes, or ask the recipient for their current address.";
	if (strcmp(sd, "1.2") == 0)
		return "The recipient's domain (the part after the @) does not "
		    "exist. Check it for typing mistakes.";
	if (strcmp(sd, "1.10") == 0)
		return "The recipient's domain says it accepts no mail at all "
		    "(null MX). Reach the recipient another way.";
	if (strcmp(sd, "2.2") == 0)
		return "The recipient's mailbox is full. Try again later, or "
		    "reach the recipient another way.";
	if (strcmp(sd, "3.4") == 0 || strcmp(sd, "2.3") == 0)
		return "The message is too big for the recipient's mail system. "
		    "Send it again smaller, for example with a link instead of "
		    "a large attachment.";
	if (strcmp(sd, "4.7") == 0)
		return "The recipient's mail system could not be reached for as "
		    "long as the message may wait here. Try again later, or "
		    "reach the recipient another way.";
	if (strncmp(sd, "7.", 2) == 0)
		return "The recipient's mail system refused the message by its "
		    "policy. Reach the recipient another way, or forward this "
		    "report to your postmaster.";
	if (strncmp(sd, "6.", 2) == 0)
		return "The recipient's mail system cannot take the message in "
		    "this form (content or encoding). Send it again as plain "
		    "text, or forward this report to your postmaster.";
	return "Reach the recipient another way, or forward this report to "
	    "your postmaster, who can read the details below.";
}

/* true if the n octets at s occur in buffer b. */
static bool
in_buffer(struct evbuffer *b, const char *s, size_t n)
{
	struct evbuffer_ptr at = evbuffer_search(b, s, n, NULL);

	return at.pos != -1;
}

/*
 * A boundary that occurs in none of the parts: the returned content
 * (content, n), the text part p1 and the delivery-status part p2. Made
 * of p->nonce (random, from the caller), or p->unique without one.
 */
static void
make_boundary(const struct dsn_params *p, const char *content, size_t n,
    struct evbuffer *p1, struct evbuffer *p2, char *buf, size_t size)
{
	const char *token = p->nonce != NULL && p->nonce[0] != '\0' ?
	    p->nonce : p->unique;

	for (unsigned k = 0;; k++) {
		size_t bl;

		snprintf(buf, size, "=_tern-dsn-%s-%u", token, k);
		sanitize(buf, false);
		for (char *c = buf; *c; c++)
			if (*c == ' ' || *c == '"')
				*c = '_';
		bl = strlen(buf);
		if (memmem(content, n, buf, bl) == NULL &&
		    !in_buffer(p1, buf, bl) && !in_buffer(p2, buf, bl))
			return;
	}
}

/* What one report says and returns, worked out before any part is written. */
struct dsn_plan {
	bool any_failed, any_delayed, any_relayed;
	bool full;          /* the whole message returns, not its header */
	bool truncated;     /* ... cut at max_return */
	bool global;        /* RFC 6532 message/global forms */
	bool part_8bit;     /* the returned part has 8-bit octets */
	size_t ret_len;     /* octets of the message returned */
	int64_t retry_until;
	const char *ctype;  /* Content-Type of the returned part */
};

static void
plan_report(struct dsn_plan *pl, const struct envelope *orig,
    const struct dsn_rcpt *rcpts, size_t nrcpts, const char *msg,
    size_t msglen, const struct dsn_params *p)
{
	size_t hlen = header_len(msg, msglen);
	size_t hmax = p->max_return > HEADERS_MIN_RETURN ? p->max_return :
	    HEADERS_MIN_RETURN;
	bool headers_8bit;

	memset(pl, 0, sizeof(*pl));
	for (size_t i = 0; i < nrcpts; i++) {
		pl->any_failed |= rcpts[i].action == DSN_ACTION_FAILED;
		pl->any_delayed |= rcpts[i].action == DSN_ACTION_DELAYED;
		pl->any_relayed |= rcpts[i].action == DSN_ACTION_RELAYED;
		if (rcpts[i].retry_until > pl->retry_until)
			pl->retry_until = rcpts[i].retry_until;
	}
	/*
	 * What goes back (RFC 3461 4.3, 6.2): the whole message for a
	 * failure unless RET=HDRS, and never more than max_return octets of
	 * it; only the header for delays and successes.
	 */
	pl->full = pl->any_failed && orig->ret != ENVELOPE_RET_HDRS &&
	    p->max_return > 0;
	if (pl->full) {
		pl->ret_len = cut_at_line(msg, msglen, p->max_return);
		if (pl->ret_len < msglen)
			pl->truncated = true;
		if (pl->ret_len <= hlen) {
			/* not even the header fits: return the header */
			pl->full = false;
			pl->truncated = false;
		}
	}
	if (!pl->full) {
		pl->ret_len = cut_at_line(msg, hlen, hmax);
		if (pl->ret_len == 0)
			pl->ret_len = hlen < hmax ? hlen : 0;
	}
	headers_8bit = util_has_8bit(msg, pl->ret_len < hlen ? pl->ret_len :
	    hlen);
	pl->part_8bit = util_has_8bit(msg, pl->ret_len);
	/* RFC 6532 3.7: UTF-8 header fields travel as message/global */
	pl->global = orig->smtputf8 && headers_8bit;
	if (pl->full)
		pl->ctype = pl->global ? "message/global" : "message/rfc822";
	else
		pl->ctype = pl->global ? "message/global-headers" :
		    "text/rfc822-headers";
}

/* The report's own envelope: RFC 3461 6.2 / RFC 5321 4.5.5 null sender,
 * to the original sender. */
static void
report_envelope(const struct dsn_plan *pl, const struct envelope *orig,
    const struct dsn_params *p, struct envelope *report_env)
{
	report_env->arrival = p->now;
	envelope_set(&report_env->sender, "");
	envelope_set(&report_env->helo, p->reporting_mta);
	envelope_set(&report_env->protocol, "LOCAL");
	report_env->body = pl->part_8bit ? ENVELOPE_BODY_8BITMIME :
	    ENVELOPE_BODY_7BIT;
	report_env->smtputf8 = pl->global || util_has_8bit(orig->sender,
	    strlen(orig->sender));
	envelope_add_rcpt(report_env, orig->sender, NULL, 0);
}

/* One recipient's lines in the human-readable part. */
static void
human_rcpt(struct evbuffer *p1, const struct dsn_rcpt *rc)
{
	char addrf[FIELD_MAX], status[32], diag[FIELD_MAX / 2], mta[512];
	const char *shown, *adv;

	rcpt_status(rc, status, sizeof(status));
	sanitize(status, false);
	/* us-ascii text: the address as in Final-Recipient, the rest with
	 * every control or 8-bit octet as '?' */
	if (dsn_address_field(rc->addr, NULL, addrf, sizeof(addrf)) < 0)
		util_strlcpy(addrf, ";(address too long)", sizeof(addrf));
	shown = strchr(addrf, ';') + 1;
	util_strlcpy(diag, rc->diagnostic != NULL ? rc->diagnostic : "",
	    sizeof(diag));
	sanitize(diag, false);
	util_strlcpy(mta, rc->remote_mta != NULL ? rc->remote_mta :
	    "the next mail server", sizeof(mta));
	sanitize(mta, false);
	put_textf(p1, "", "<%s>: %s", shown, action_name(rc->action));
	switch (rc->action) {
	case DSN_ACTION_FAILED:
	case DSN_ACTION_DELAYED:
		if (rc->diagnostic != NULL && rc->remote_mta != NULL)
			put_textf(p1, "    ", "Why: the mail server %s "
			    "answered: %s", mta, diag);
		else if (rc->diagnostic != NULL)
			put_textf(p1, "    ", "Why: %s", diag);
		else
			put_textf(p1, "    ", "Why: status %s", status);
		break;
	case DSN_ACTION_DELIVERED:
		put_text(p1, "    ", "Delivered into the recipient's mailbox.");
		break;
	case DSN_ACTION_RELAYED:
		put_textf(p1, "    ", "Handed to %s, which does not send "
		    "delivery reports.", mta);
		break;
	}
	adv = advice(status, rc->action);
	if (adv != NULL)
		put_textf(p1, "    ", "What you can do: %s", adv);
	evbuffer_add(p1, "\r\n", 2);
}

/* Part 1: for a person (RFC 6522 3: first, human-readable). */
static void
part_human(struct evbuffer *p1, const struct dsn_plan *pl,
    const struct dsn_rcpt *rcpts, size_t nrcpts, size_t msglen,
    const struct dsn_params *p)
{
	put_field(p1, "Content-Description", "Notification");
	put_field(p1, "Content-Type", "text/plain; charset=us-ascii");
	evbuffer_add(p1, "\r\n", 2);
	put_textf(p1, "", "This is the mail system at host %s.\n\n",
	    p->reporting_mta);
	if (pl->any_failed)
		put_text(p1, "", "Your message could not be delivered to one "
		    "or more recipients. This is a permanent error: the mail "
		    "system will not try again for the recipients listed as "
		    "failed below.\n\n");
	if (pl->any_delayed) {
		char until[64];

		util_rfc5322_date(pl->retry_until, until, sizeof(until));
		put_textf(p1, "", "Your message has not been delivered yet "
		    "to the recipients listed as delayed below. This is only a "
		    "warning: you do not need to send the message again. The "
		    "mail system keeps trying until %s; if it still cannot "
		    "deliver the message by then, you will get another "
		    "report.\n\n", pl->retry_until > 0 ? until :
		    "it gives up");
	}
	if (!pl->any_failed && !pl->any_delayed)
		put_text(p1, "", "Your message was delivered to the "
		    "recipients listed below, as you asked with NOTIFY=SUCCESS."
		    "\n\n");
	if (pl->any_relayed)
		put_text(p1, "", "For recipients listed as relayed, the message "
		    "was handed to a mail server that does not send delivery "
		    "reports: you will get no further report for them.\n\n");
	for (size_t i = 0; i < nrcpts; i++)
		human_rcpt(p1, &rcpts[i]);
	if (pl->truncated)
		put_textf(p1, "", "The message is returned below cut short: its "
		    "first %zu of %zu octets.\n", pl->ret_len, msglen);
	else if (!pl->full && pl->any_failed)
		put_text(p1, "", "Only the header of your message is returned "
		    "below.\n");
	evbuffer_add(p1, "\r\n", 2);
}

/* Part 2: message/delivery-status (RFC 3464 2.1). */
static void
part_status(struct evbuffer *p2, const struct envelope *orig,
    const struct dsn_rcpt *rcpts, size_t nrcpts, const struct dsn_params *p)
{
	char date[64], addrf[FIELD_MAX], status[32];

	put_field(p2, "Content-Description", "Delivery report");
	put_field(p2, "Content-Type", "message/delivery-status");
	evbuffer_add(p2, "\r\n", 2);
	/* per-message fields (RFC 3464 2.2) */
	if (orig->envid != NULL) {
		char envid[512];

		/* RFC 3461 6.3(a): decoded from xtext */
		if (dsn_xtext_decode(orig->envid, strlen(orig->envid), envid,
		    sizeof(envid)) < 0)
			util_strlcpy(envid, orig->envid, sizeof(envid));
		put_fieldf(p2, "Original-Envelope-Id", "%s", envid);
	}
	/* RFC 3461 6.3(b): "dns" and our fully-qualified name */
	put_fieldf(p2, "Reporting-MTA", "dns; %s", p->reporting_mta);
	if (orig->helo != NULL && orig->helo[0] != '\0' &&
	    printable_ascii(orig->helo, strlen(orig->helo)))
		put_fieldf(p2, "Received-From-MTA", "dns; %s", orig->helo);
	if (orig->arrival > 0) {
		util_rfc5322_date(orig->arrival, date, sizeof(date));
		put_fieldf(p2, "Arrival-Date", "%s", date);
	}
	if (orig->id[0] != '\0')
		put_fieldf(p2, "X-Tern-Queue-ID", "%s", orig->id);
	/* per-recipient fields (RFC 3464 2.3), each group after a blank line */
	for (size_t i = 0; i < nrcpts; i++) {
		const struct dsn_rcpt *rc = &rcpts[i];

		evbuffer_add(p2, "\r\n", 2);
		rcpt_status(rc, status, sizeof(status));
		sanitize(status, false);
		/* RFC 3461 6.3(d): only when ORCPT was given */
		if (rc->orcpt != NULL &&
		    dsn_address_field(rc->addr, rc->orcpt, addrf,
		    sizeof(addrf)) > 0)
			put_fieldf(p2, "Original-Recipient", "%s", addrf);
		/* RFC 3461 6.3(e) */
		if (dsn_address_field(rc->addr, NULL, addrf, sizeof(addrf)) < 0)
			util_strlcpy(addrf, "unknown;address too long",
			    sizeof(addrf));
		put_fieldf(p2, "Final-Recipient", "%s", addrf);
		put_fieldf(p2, "Action", "%s", action_name(rc->action));
		put_fieldf(p2, "Status", "%s", status);
		/* RFC 3461 6.3(h): the server tried, when there was one */
		if (rc->remote_mta != NULL)
			put_fieldf(p2, "Remote-MTA", "dns; %s", rc->remote_mta);
		/* RFC 3461 6.3(i), 9.2: the reply as the server gave it */
		if (rc->diagnostic != NULL)
			put_fieldf(p2, "Diagnostic-Code", "smtp; %s",
			    rc->diagnostic);
		if (rc->last_attempt > 0) {
			util_rfc5322_date(rc->last_attempt, date, sizeof(date));
			put_fieldf(p2, "Last-Attempt-Date", "%s", date);
		}
		if (rc->action == DSN_ACTION_DELAYED && rc->retry_until > 0) {
			util_rfc5322_date(rc->retry_until, date, sizeof(date));
			put_fieldf(p2, "Will-Retry-Until", "%s", date);
		}
	}
	evbuffer_add(p2, "\r\n", 2);
}

/* The report's header fields, up to and including the preamble. */
static void
report_header(struct evbuffer *out, const struct dsn_plan *pl,
    const struct envelope *report_env, const struct envelope *orig,
    const struct dsn_params *p, const char *boundary)
{
	char date[64], sender[ENVELOPE_MAX_FIELD + 1];
	char to[ENVELOPE_MAX_FIELD + 8];

	util_strlcpy(sender, orig->sender, sizeof(sender));
	sanitize(sender, report_env->smtputf8);
	util_rfc5322_date(p->now, date, sizeof(date));
	put_fieldf(out, "From", "Mail Delivery System <MAILER-DAEMON@%s>",
	    p->reporting_mta);
	snprintf(to, sizeof(to), "<%s>", sender);
	put_field(out, "To", to);
	put_fieldf(out, "Subject", "%s", pl->any_failed ?
	    "Undelivered Mail Returned to Sender" : pl->any_delayed ?
	    "Delayed Mail (still being retried)" :
	    "Successful Mail Delivery Report");
	put_fieldf(out, "Date", "%s", date);
	put_fieldf(out, "Message-ID", "<%s@%s>", p->unique, p->reporting_mta);
	/* RFC 3834 5: marks the report as an automatic reply, so that
	 * responders (vacation, lists) never answer it */
	put_field(out, "Auto-Submitted", "auto-replied");
	put_field(out, "MIME-Version", "1.0");
	/* RFC 6522 3: report-type is required; boundary quoted */
	evbuffer_add_printf(out, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
	put_field(out, "Content-Transfer-Encoding", pl->part_8bit ? "8bit" :
	    "7bit");
	evbuffer_add(out, "\r\n", 2);
	put_text(out, "", "This is a MIME-encapsulated message.");
	evbuffer_add(out, "\r\n", 2);
}

/* Part 3: the returned message or its header, and the closing delimiter. */
static void
part_returned(struct evbuffer *out, const struct dsn_plan *pl,
    const char *msg, const char *boundary)
{
	evbuffer_add_printf(out, "--%s\r\n", boundary);
	put_field(out, "Content-Description", pl->full ?
	    "Undelivered Message" : "Message Headers");
	put_field(out, "Content-Type", pl->ctype);
	if (pl->part_8bit)
		put_field(out, "Content-Transfer-Encoding", "8bit");
	evbuffer_add(out, "\r\n", 2);
	evbuffer_add(out, msg, pl->ret_len);
	if (pl->ret_len > 0 && (pl->ret_len < 2 ||
	    msg[pl->ret_len - 2] != '\r' || msg[pl->ret_len - 1] != '\n'))
		evbuffer_add(out, "\r\n", 2);
	/* the CRLF before the delimiter belongs to it (RFC 2046 5.1.1) */
	evbuffer_add_printf(out, "\r\n--%s--\r\n", boundary);
}

void
dsn_build(const struct envelope *orig, const struct dsn_rcpt *rcpts,
    size_t nrcpts, const char *msg, size_t msglen,
    const struct dsn_params *p, struct evbuffer *out,
    struct envelope *report_env)
{
	struct dsn_plan pl;
	char boundary[160];
	struct evbuffer *p1, *p2;   /* the first two parts, without delimiter */

	ASSERT(nrcpts > 0 && orig->sender != NULL && orig->sender[0] != '\0');
	plan_report(&pl, orig, rcpts, nrcpts, msg, msglen, p);
	report_envelope(&pl, orig, p, report_env);
	p1 = evbuffer_new();
	p2 = evbuffer_new();
	if (p1 == NULL || p2 == NULL)
		fatal("out of memory");
	part_human(p1, &pl, rcpts, nrcpts, msglen, p);
	part_status(p2, orig, rcpts, nrcpts, p);
	/*
	 * The boundary: random (the caller's nonce), and checked against
	 * every part it delimits, so no text of the original message, of a
	 * reply or of an address can end a part early (RFC 2046 5.1.1).
	 */
	make_boundary(p, msg, pl.ret_len, p1, p2, boundary, sizeof(boundary));
	report_header(out, &pl, report_env, orig, p, boundary);
	evbuffer_add_printf(out, "--%s\r\n", boundary);
	evbuffer_add_buffer(out, p1);
	evbuffer_add_printf(out, "--%s\r\n", boundary);
	evbuffer_add_buffer(out, p2);
	evbuffer_free(p1);
	evbuffer_free(p2);
	part_returned(out, &pl, msg, boundary);
}
