/*
 * addrlist.c - RFC 5322 3.4 address-list and mailbox-list parser (see
 * addrlist.h).
 *
 * One pass over the octets. Each list element (up to a "," or ";") is read
 * into one bounded buffer: its words (an addr-spec, or the display name
 * that an angle-addr then replaces) or the content of its angle-addr.
 * Comments and blanks are dropped on the way; quoted strings and domain
 * literals are copied whole, so the "," ":" "<" inside them are text.
 * At the end of an element its address is checked as an RFC 5321 Mailbox
 * and handed to the caller.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/util.h"
#include "mail/addrlist.h"
#include "mail/smtp_addr.h"

#define SHOWN_MAX 200   /* octets of a bad element quoted in an error */

struct scan {
	const char *s;
	size_t len, i;
	unsigned flags;
	const char *domain;
	addrlist_cb *cb;
	void *arg;
	char *err;
	size_t errsize;
	int count;
	bool in_group;
	/* the element being read */
	char buf[SMTP_ADDR_PATH_MAX + 1];
	size_t n;         /* its length; octets past the buffer are counted
	                   * only (the element is then too long) */
	char last;        /* the last octet of the words, kept or not */
	bool angle;       /* buf holds the content of an angle-addr */
	bool space;       /* CFWS since the last word octet */
	bool phrase;      /* two words not joined by "." or "@" */
	bool route;       /* an obsolete route was dropped from the angle-addr */
};

static int fail(struct scan *sc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The reason into the caller's err; returns ADDRLIST_MALFORMED. */
static int
fail(struct scan *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->err != NULL && sc->errsize > 0) {
		va_start(ap, fmt);
		vsnprintf(sc->err, sc->errsize, fmt, ap);
		va_end(ap);
	}
	return ADDRLIST_MALFORMED;
}

/* How much of the element to quote in an error. */
static int
shown(const struct scan *sc)
{
	size_t n = sc->n < sizeof(sc->buf) - 1 ? sc->n : sizeof(sc->buf) - 1;

	return (int)(n > SHOWN_MAX ? SHOWN_MAX : n);
}

/* FWS (RFC 5322 3.2.2); a lone CR or LF counts too, as in a header value
 * whose lines were joined either way. */
static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void
put(struct scan *sc, const char *p, size_t n)
{
	size_t room = sizeof(sc->buf) - 1;

	if (sc->n < room)
		memcpy(sc->buf + sc->n, p, n < room - sc->n ? n : room - sc->n);
	sc->n += n;
	if (n > 0)
		sc->last = p[n - 1];
}

/* Skip a comment at s[i] == '(': nested, with quoted-pairs (RFC 5322
 * 3.2.2). false if it does not end. */
static bool
skip_comment(struct scan *sc)
{
	size_t depth = 0;

	for (; sc->i < sc->len; sc->i++) {
		char c = sc->s[sc->i];

		if (c == '\\') {
			sc->i++;
		} else if (c == '(') {
			depth++;
		} else if (c == ')' && --depth == 0) {
			sc->i++;
			return true;
		}
	}
	return false;
}

/*
 * One word at s[i], outside comments and blanks: a quoted string or a
 * domain literal, copied whole and verbatim, or one octet. Two words with
 * only CFWS between them make a phrase unless a "." or "@" joins them
 * (obs-local-part and obs-domain allow CFWS around those, RFC 5322 4.4).
 */
static int
take_word(struct scan *sc)
{
	const char *s = sc->s;
	char c = s[sc->i];
	size_t start = sc->i;

	if (sc->space && sc->n > 0 && sc->last != '.' && sc->last != '@' &&
	    c != '.' && c != '@')
		sc->phrase = true;
	sc->space = false;
	if (c == '"') {   /* RFC 5322 3.2.4 */
		for (sc->i++; sc->i < sc->len; sc->i++) {
			if (s[sc->i] == '\\' && sc->i + 1 < sc->len) {
				sc->i++;
			} else if (s[sc->i] == '"') {
				sc->i++;
				put(sc, s + start, sc->i - start);
				return 0;
			}
		}
		return fail(sc, "unterminated quoted string");
	}
	if (c == '[') {   /* RFC 5322 3.4.1 domain-literal */
		const char *end = memchr(s + start, ']', sc->len - start);

		if (end == NULL)
			return fail(sc, "unterminated [literal]");
		sc->i = (size_t)(end - s) + 1;
		put(sc, s + start, sc->i - start);
		return 0;
	}
	put(sc, &c, 1);
	sc->i++;
	return 0;
}

/*
 * The angle-addr at s[i] == '<' into buf, replacing the display name read
 * so far. An obsolete route "@a,@b:" before the address is dropped
 * (RFC 5322 4.4: it is to be ignored).
 */
static int
take_angle(struct scan *sc)
{
	if (sc->angle)
		return fail(sc, "two <addresses> in one");
	sc->angle = true;
	sc->n = 0;
	sc->space = sc->phrase = false;
	for (sc->i++; sc->i < sc->len && sc->s[sc->i] != '>';) {
		char c = sc->s[sc->i];

		if (is_wsp(c)) {
			sc->space = sc->n > 0;
			sc->i++;
		} else if (c == '(') {
			if (!skip_comment(sc))
				return fail(sc, "unterminated comment");
			sc->space = sc->n > 0;
		} else if (c == ':' && !sc->route && sc->n > 0 &&
		    sc->buf[0] == '@') {
			sc->route = true;
			sc->n = 0;
			sc->space = sc->phrase = false;
			sc->i++;
		} else if (take_word(sc) == ADDRLIST_MALFORMED) {
			return ADDRLIST_MALFORMED;
		}
	}
	if (sc->i >= sc->len)
		return fail(sc, "unterminated <address>");
	sc->i++;
	return 0;
}

/* The element's address: qualified, checked, handed to the callback. */
static int
deliver(struct scan *sc)
{
	struct addrlist_addr a;
	struct smtp_addr m;
	enum smtp_addr_error e;
	bool quoted = false, has_at = false;
	size_t n = sc->n, lv, ld;

	for (size_t i = 0; i < n && i < sizeof(sc->buf) - 1; i++) {
		if (sc->buf[i] == '"')
			quoted = !quoted;
		else if (sc->buf[i] == '\\')
			i++;
		else if (sc->buf[i] == '@' && !quoted)
			has_at = true;
	}
	if (n <= SMTP_ADDR_MAILBOX_MAX) {
		memcpy(a.addr, sc->buf, n);
		a.addr[n] = '\0';
		if (!has_at && sc->domain != NULL)
			n += (size_t)snprintf(a.addr + n, sizeof(a.addr) - n, "@%s",
			    sc->domain);
	}
	/* RFC 5321 4.5.3.1.3: the path, "<" Mailbox ">", is at most 256 */
	if (n > SMTP_ADDR_MAILBOX_MAX)
		return fail(sc, "'%.*s' is not a valid address: %s", shown(sc),
		    sc->buf, smtp_addr_strerror(SMTP_ADDR_ERR_PATH_TOO_LONG));
	e = smtp_addr_parse_mailbox(a.addr, n, SMTP_ADDR_UTF8, &m);
	if (e != SMTP_ADDR_OK)
		return fail(sc, "'%.*s' is not a valid address: %s",
		    (int)(n > SHOWN_MAX ? SHOWN_MAX : n), a.addr,
		    smtp_addr_strerror(e));
	/* local_value is never longer than local: it fits where addr did */
	lv = strlen(m.local_value);
	ld = strlen(m.domain);
	ASSERT(lv + 1 + ld < sizeof(a.value));
	memcpy(a.value, m.local_value, lv);
	a.value[lv] = '@';
	memcpy(a.value + lv + 1, m.domain, ld + 1);
	a.in_group = sc->in_group;
	if (sc->count == INT_MAX)
		return fail(sc, "too many addresses");
	sc->count++;
	return sc->cb(sc->arg, &a) == 0 ? 0 : ADDRLIST_STOPPED;
}

/*
 * One element is done: an angle-addr wins over the words before it (a
 * display name); words alone must be one addr-spec. An empty element
 * (obs-addr-list, obs-mbox-list, an empty group) adds nothing.
 */
static int
end_element(struct scan *sc)
{
	int rc = 0;

	if (sc->angle && sc->n == 0)
		rc = fail(sc, "empty address <>");
	else if (sc->angle && sc->phrase)
		rc = fail(sc, "'%.*s' is not a valid address: words apart",
		    shown(sc), sc->buf);
	else if (sc->n > 0 && sc->phrase)
		rc = fail(sc, "'%.*s' is not an address (a name needs <address>)",
		    shown(sc), sc->buf);
	else if (sc->n > 0)
		rc = deliver(sc);
	sc->n = 0;
	sc->angle = sc->space = sc->phrase = sc->route = false;
	return rc;
}

/* A ":" outside quotes and angle brackets: the words before it name a
 * group (RFC 5322 3.4), a phrase and never an address. */
static int
start_group(struct scan *sc)
{
	size_t kept = sc->n < sizeof(sc->buf) ? sc->n : sizeof(sc->buf);

	if (sc->angle || (kept > 0 && memchr(sc->buf, '@', kept) != NULL))
		return fail(sc, "unexpected ':'");
	if (sc->flags & ADDRLIST_MAILBOX_LIST)
		return fail(sc, "a group in a mailbox list");
	sc->in_group = true;
	sc->n = 0;
	sc->space = sc->phrase = false;
	sc->i++;
	return 0;
}

int
addrlist_parse(const char *s, size_t len, unsigned flags,
    const char *domain, addrlist_cb *cb, void *arg, char *err,
    size_t errsize)
{
	struct scan sc = { .s = s, .len = len, .flags = flags,
	    .domain = domain, .cb = cb, .arg = arg, .err = err,
	    .errsize = errsize };
	int rc = 0;

	while (sc.i <= len && rc == 0) {
		char c = sc.i < len ? s[sc.i] : ',';

		if (c == ';' && (flags & ADDRLIST_MAILBOX_LIST)) {
			rc = fail(&sc, "a group in a mailbox list");
		} else if (c == ',' || c == ';') {
			rc = end_element(&sc);
			if (c == ';')
				sc.in_group = false;
			sc.i++;
		} else if (is_wsp(c)) {
			sc.space = sc.n > 0;
			sc.i++;
		} else if (c == '(') {
			if (!skip_comment(&sc))
				rc = fail(&sc, "unterminated comment");
			sc.space = sc.n > 0;
		} else if (c == ':') {
			rc = start_group(&sc);
		} else if (c == '<') {
			rc = take_angle(&sc);
		} else if (c == '>' || c == ')') {
			rc = fail(&sc, "unexpected '%c'", c);
		} else if (sc.angle) {
			/* name-addr ends with its angle-addr (RFC 5322 3.4) */
			rc = fail(&sc, "text after <address>");
		} else {
			rc = take_word(&sc);
		}
	}
	return rc == 0 ? sc.count : rc;
}
