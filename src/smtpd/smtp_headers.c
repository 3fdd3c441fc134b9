/*
 * smtp_headers.c - RFC 5322 checks of the message header as it passes
 * through the session (see smtp_session_int.h).
 *
 * Every message: Received: fields are recognised for the mail-loop count
 * (RFC 5321 6.3). For an authenticated session the header is held back
 * until its end (at most HDR_CAPTURE_MAX octets) so that its From: can be
 * checked against the user's addresses and Date:/Message-ID: added when
 * missing (RFC 6409 8.3, 8.6) before anything reaches the queue. With
 * the From: check, a larger header, or one with control characters
 * (other than TAB), is refused: it cannot be checked whole. A header that
 * starts with a continuation line is refused in any case.
 */
#include <event2/buffer.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/header.h"
#include "smtpd/smtp_session.h"
#include "smtpd/smtp_session_int.h"

#define FROM_ADDRS_MAX 64        /* addresses in one From: field */

/* ------------------------------------------------------------------ */
/* the header of a submitted message (authenticated sessions) */

/* true if the header (h, n), CRLF lines, has a field called name. */
static bool
header_has(const char *h, size_t n, const char *name)
{
	return header_count(h, n, name, 1) > 0;
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
void
smtp_headers_finish(struct smtp_session *s, bool overflow)
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
