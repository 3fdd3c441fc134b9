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
#include "mail/addrlist.h"
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

/* The addresses of the From: field, unquoted (what the ownership check
 * compares), in v[]: at most FROM_ADDRS_MAX. */
struct from_addrs {
	char (*v)[SMTP_ADDR_PATH_MAX + 1];
	int n;
};

static int
from_add(void *arg, const struct addrlist_addr *a)
{
	struct from_addrs *f = arg;

	if (f->n == FROM_ADDRS_MAX)
		return -1;
	util_strlcpy(f->v[f->n++], a->value, sizeof(f->v[0]));
	return 0;
}

/*
 * true if the header (h, n) has a control character other than TAB and
 * the CR LF line ends: NUL ends a C string early (the From: value
 * would be cut there), and others are read differently by different
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
	struct from_addrs f = { NULL, 0 };
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
	f.v = xcalloc(FROM_ADDRS_MAX, sizeof(*f.v));
	/* RFC 5322 3.6: exactly one From: field, a mailbox-list (3.6.2: no
	 * group); too many addresses count as malformed */
	if (count == 1)
		na = addrlist_parse(v, strlen(v), ADDRLIST_MAILBOX_LIST, NULL,
		    from_add, &f, NULL, 0);
	if (na <= 0) {
		snprintf(t->from_buf, sizeof(t->from_buf), "553 5.7.1 Sender "
		    "address rejected: malformed From: header");
		goto out;
	}
	for (int i = 0; i < na; i++) {
		if (!config_passwd_owns(s->auth_user, f.v[i], strlen(f.v[i]))) {
			log_quote(q, sizeof(q), f.v[i], strlen(f.v[i]),
			    SMTP_ADDR_PATH_MAX);
			snprintf(t->from_buf, sizeof(t->from_buf), "553 5.7.1 "
			    "<%.200s>: Sender address rejected: From: not owned "
			    "by user %.200s", q, u);
			goto out;
		}
	}
	t->from_error = false;
out:
	free(f.v);
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
