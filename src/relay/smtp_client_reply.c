/*
 * smtp_client_reply.c - the SMTP client's reply reader (RFC 5321 4.2):
 * bounded lines (conn_line()), at most SMTP_CLIENT_REPLY_LINES_MAX of
 * them, the same three-digit code 2yz..5yz on each, the enhanced code of
 * RFC 2034 kept once, the text cut to printable ASCII, and EHLO keywords
 * handed to smtp_client_ehlo_line().
 */
#include <string.h>

#include <event2/buffer.h>

#include "lib/conn.h"
#include "lib/util.h"
#include "relay/smtp_client.h"
#include "relay/smtp_client_int.h"

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
		for (k = 0; k < 3 && i < n && smtp_client_is_digit(p[i]); k++)
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
	    line[1] > '5' || !smtp_client_is_digit(line[2]) || (len > 3 && line[3] != ' ' &&
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
		smtp_client_ehlo_line(rd, txt, tl);
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
int
smtp_client_reply_read(struct smtp_client *c, bool ehlo)
{
	const char *why = NULL;
	int r;

	while ((r = read_line(c, ehlo, &why)) == 1)
		;
	if (r == 0)
		return 0;
	if (r < 0) {
		struct smtp_client_reply e;
		smtp_client_set_reply(&e, 0, "4.5.0", "protocol error: %s "
		    "from %s", why, c->params->peer ? c->params->peer : "peer");
		memset(&c->rd, 0, sizeof(c->rd));
		/* A garbage greeting is a failed connection: next MX. */
		smtp_client_fail(c, c->ex_len > 0 && smtp_client_expect_head(c) ==
		    SMTP_CLIENT_STAGE_GREETING ? SMTP_CLIENT_ERR_GREETING :
		    SMTP_CLIENT_ERR_PROTOCOL, &e);
		return -1;
	}
	c->last = c->rd.r;
	return 1;
}
