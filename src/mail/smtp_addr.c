/*
 * smtp_addr.c - RFC 5321 Path / Mailbox parser (4.1.2, 4.1.3), the UTF-8
 * extension of RFC 6531 3.3, and RFC 3461 4 xtext.
 *
 * The parser is a hand-written descent parser over a (pointer, length)
 * view: it never reads past len and never looks for a NUL. It first checks
 * the whole grammar, and only then the length limits of RFC 5321 4.5.3.1,
 * so a malformed over-long address is reported as a syntax error. Nothing
 * is copied into the caller's struct until every check has passed; on any
 * error the struct is cleared, so a caller can never act on half a parse.
 *
 * Policy decisions (see also smtp_addr.h):
 * - A DNS label longer than 63 octets (RFC 1035 2.3.4) is
 *   SMTP_ADDR_ERR_DOMAIN_TOO_LONG, not a syntax error.
 * - General-address-literal is accepted by syntax, except that a tag of
 *   one to four hex digits is refused: "[1:2:3:4:5:6:7:8]" is an IPv6
 *   address missing its mandatory "IPv6:" tag, not a registered tag.
 * - Without SMTP_ADDR_UTF8 the first octet >= 0x80 met while parsing is
 *   SMTP_ADDR_ERR_UTF8_NOT_ALLOWED, wherever it is (553 5.6.7 for the
 *   caller); with it, UTF-8 is allowed only where RFC 6531 3.3 puts it
 *   (atext, qtextSMTP, domain labels) and must be well-formed.
 * - Source route hops are Domains only (At-domain = "@" Domain); an
 *   address literal as a hop is a syntax error.
 * - SMTP_ADDR_NO_BRACKETS_OK takes a bare Mailbox that ends at SP or at
 *   the end of input; "<a@b" and "a@b>" stay syntax errors.
 */
#include <limits.h>

#include "mail/smtp_addr.h"
#include "lib/utf8.h"
#include "lib/util.h"

/* Read position over the input view. */
struct cur {
	const unsigned char *p;
	size_t len;
	size_t pos;
	unsigned flags;
	bool utf8_seen;
};

/* Offsets of what parse_mailbox_at() found, relative to cur.p. */
struct mbox {
	size_t local_off, local_len;
	size_t domain_off, domain_len;
	size_t max_label;
	bool quoted;
	bool literal;
	bool postmaster;
};

static bool
is_alpha(unsigned c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool
is_digit(unsigned c)
{
	return c >= '0' && c <= '9';
}

static bool
is_hex(unsigned c)
{
	return is_digit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

static bool
is_let_dig(unsigned c)
{
	return is_alpha(c) || is_digit(c);
}

/* atext of RFC 5322 3.2.3, which RFC 5321 4.1.2 refers to (ASCII part). */
static bool
is_atext(unsigned c)
{
	if (is_let_dig(c))
		return true;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'':
	case '*': case '+': case '-': case '/': case '=': case '?':
	case '^': case '_': case '`': case '{': case '|': case '}':
	case '~':
		return true;
	default:
		return false;
	}
}

/* dcontent of RFC 5321 4.1.3: printable ASCII except "[", "\", "]". */
static bool
is_dcontent(unsigned c)
{
	return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

/*
 * Consume one UTF8-non-ascii character at c->pos (the caller saw an octet
 * >= 0x80 where RFC 6531 3.3 allows one). Without SMTPUTF8 no such octet
 * may appear at all: RFC 5321 4.1.2 says they MUST NOT be used in MAIL or
 * RCPT.
 * C1 controls (U+0080..U+009F) are refused like the ASCII controls:
 * RFC 6532 3.1's UTF8-non-ascii includes them, but an address ends up raw
 * in Received:, Return-Path: and reports, where a control (U+009B is a
 * terminal's CSI) has no business.
 */
static enum smtp_addr_error
take_utf8(struct cur *c)
{
	uint32_t cp;
	size_t n;

	if (!(c->flags & SMTP_ADDR_UTF8))
		return SMTP_ADDR_ERR_UTF8_NOT_ALLOWED;
	n = utf8_decode(c->p + c->pos, c->len - c->pos, &cp);
	if (n == 0)
		return SMTP_ADDR_ERR_BAD_UTF8;
	if (cp < 0xA0)   /* a C1 control, U+0080..U+009F */
		return SMTP_ADDR_ERR_SYNTAX;
	c->pos += n;
	c->utf8_seen = true;
	return SMTP_ADDR_OK;
}

/*
 * The error for an unexpected octet at c->pos (or the end of input): an
 * 8-bit octet without SMTPUTF8 gets its own code so that the caller can
 * answer 553 5.6.7 (RFC 6531 3.6.2), anything else is a syntax error.
 */
static enum smtp_addr_error
fail(const struct cur *c)
{
	if (c->pos < c->len && c->p[c->pos] >= 0x80 &&
	    !(c->flags & SMTP_ADDR_UTF8))
		return SMTP_ADDR_ERR_UTF8_NOT_ALLOWED;
	return SMTP_ADDR_ERR_SYNTAX;
}

static bool
at(const struct cur *c, unsigned char ch)
{
	return c->pos < c->len && c->p[c->pos] == ch;
}

/* Dot-string = Atom *("." Atom); Atom = 1*atext (RFC 5321 4.1.2). */
static enum smtp_addr_error
parse_dot_string(struct cur *c)
{
	enum smtp_addr_error err;

	for (;;) {
		size_t start = c->pos;

		while (c->pos < c->len) {
			unsigned ch = c->p[c->pos];

			if (is_atext(ch)) {
				c->pos++;
			} else if (ch >= 0x80) {
				if ((err = take_utf8(c)) != SMTP_ADDR_OK)
					return err;
			} else {
				break;
			}
		}
		if (c->pos == start)
			return fail(c);     /* empty atom: ".a", "a..b", "a." */
		if (!at(c, '.'))
			return SMTP_ADDR_OK;
		c->pos++;
	}
}

/*
 * Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 4.1.2), c->pos at
 * the opening quote. quoted-pairSMTP is a backslash and one ASCII octet
 * 32..126: control characters cannot be smuggled in by escaping them.
 */
static enum smtp_addr_error
parse_quoted_string(struct cur *c)
{
	enum smtp_addr_error err;

	c->pos++;
	while (c->pos < c->len) {
		unsigned ch = c->p[c->pos];

		if (ch == '"') {
			c->pos++;
			return SMTP_ADDR_OK;
		}
		if (ch == '\\') {
			c->pos++;
			if (c->pos >= c->len)
				return SMTP_ADDR_ERR_SYNTAX;
			ch = c->p[c->pos];
			if (ch < 32 || ch > 126)
				return fail(c);
			c->pos++;
		} else if (ch >= 0x80) {
			if ((err = take_utf8(c)) != SMTP_ADDR_OK)
				return err;
		} else if (ch < 32 || ch == 127) {
			return SMTP_ADDR_ERR_SYNTAX;
		} else {
			c->pos++;   /* qtextSMTP */
		}
	}
	return SMTP_ADDR_ERR_SYNTAX;    /* unterminated */
}

/*
 * Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 4.1.2), so a label neither starts nor ends with "-", and "_"
 * is refused. With SMTPUTF8 a label may also hold UTF-8 (RFC 6531 3.3
 * U-label); whether it is a valid IDNA2008 label is left to the DNS.
 * *max_label receives the longest label in octets; the length limits are
 * the caller's to check, after the syntax (labels_check()).
 */
static enum smtp_addr_error parse_domain(struct cur *c, size_t *max_label);

/*
 * The 63-octet label limit (RFC 1035 2.3.4) of a syntactically valid
 * domain (p, len) whose longest label has max_label octets. A domain with
 * U-labels is held to the limits of its A-labels (RFC 5890 2.3.2.1),
 * which may be shorter or longer than the UTF-8, and must be a valid
 * IDNA2008 name (RFC 5891): otherwise no DNS lookup could ever find it.
 */
static enum smtp_addr_error
labels_check(const unsigned char *p, size_t len, size_t max_label)
{
	char alabel[SMTP_ADDR_DOMAIN_MAX + 1];

	if (!util_has_8bit((const char *)p, len))
		return max_label <= SMTP_ADDR_LABEL_MAX ? SMTP_ADDR_OK :
		    SMTP_ADDR_ERR_DOMAIN_TOO_LONG;
	switch (util_idna_to_ascii((const char *)p, len, alabel,
	    sizeof(alabel))) {
	case 0:
		return SMTP_ADDR_OK;
	case -2:
		return SMTP_ADDR_ERR_DOMAIN_TOO_LONG;
	default:
		return SMTP_ADDR_ERR_BAD_IDN;
	}
}

static enum smtp_addr_error
parse_domain(struct cur *c, size_t *max_label)
{
	enum smtp_addr_error err;
	size_t maxl = 0;

	for (;;) {
		size_t start = c->pos;
		bool hyphen_last = false;

		if (at(c, '-'))
			return SMTP_ADDR_ERR_SYNTAX;
		while (c->pos < c->len) {
			unsigned ch = c->p[c->pos];

			if (is_let_dig(ch) || ch == '-') {
				hyphen_last = ch == '-';
				c->pos++;
			} else if (ch >= 0x80) {
				if ((err = take_utf8(c)) != SMTP_ADDR_OK)
					return err;
				hyphen_last = false;
			} else {
				break;
			}
		}
		if (c->pos == start)
			return fail(c);
		if (hyphen_last)
			return SMTP_ADDR_ERR_SYNTAX;
		if (c->pos - start > maxl)
			maxl = c->pos - start;
		if (!at(c, '.'))
			break;
		c->pos++;
	}
	*max_label = maxl;
	return SMTP_ADDR_OK;
}

/* IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT, 0..255. */
static bool
ipv4_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	int part;

	for (part = 0; part < 4; part++) {
		unsigned val = 0;
		size_t digits = 0;

		if (part > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit(s[i]) && digits < 3) {
			val = val * 10 + (unsigned)(s[i] - '0');
			digits++;
			i++;
		}
		if (digits == 0 || val > 255)
			return false;
	}
	return i == n;
}

/*
 * IPv6-addr of RFC 5321 4.1.3, exactly as its ABNF has it:
 *   IPv6-full   8 groups
 *   IPv6-comp   "::" with at most 6 groups around it in all
 *   IPv6v4-full 6 groups, then an IPv4 literal
 *   IPv6v4-comp "::" with at most 4 groups around it, then an IPv4 literal
 * So "::" always stands for at least two groups, and "1:2:3:4:5:6::8" is
 * refused although RFC 4291 would take it.
 */
static bool
ipv6_valid(const unsigned char *s, size_t n)
{
	size_t i = 0, before = 0, after = 0, total;
	bool dcolon = false, v4 = false;

	if (n >= 2 && s[0] == ':' && s[1] == ':') {
		dcolon = true;
		i = 2;
	}
	while (i < n) {
		size_t j = i;

		while (j < n && (is_hex(s[j]) || s[j] == '.'))
			j++;
		if (j == i)
			return false;
		if (memchr(s + i, '.', j - i) != NULL) {
			/* The IPv4 part ends the address. */
			if (j != n || !ipv4_valid(s + i, j - i))
				return false;
			v4 = true;
			break;
		}
		if (j - i > 4)
			return false;
		if (dcolon)
			after++;
		else
			before++;
		i = j;
		if (i == n)
			break;
		if (s[i] != ':')
			return false;
		if (i + 1 < n && s[i + 1] == ':') {
			if (dcolon)
				return false;   /* a second "::" */
			dcolon = true;
			i += 2;             /* may end here: "1::" */
			continue;
		}
		i++;
		if (i == n)
			return false;       /* trailing single ":" */
	}
	total = before + after;
	if (!dcolon)
		return total == (v4 ? 6u : 8u);
	return total <= (v4 ? 4u : 6u);
}

/*
 * address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]" (RFC 5321 4.1.2, 4.1.3), c->pos at "[".
 * A literal whose tag is "IPv6" must be a valid IPv6-addr; it does not
 * fall back to the general form.
 */
static enum smtp_addr_error
parse_address_literal(struct cur *c)
{
	const unsigned char *s;
	size_t start, n, i;

	c->pos++;
	start = c->pos;
	while (c->pos < c->len && c->p[c->pos] != ']') {
		if (!is_dcontent(c->p[c->pos]))
			return fail(c);
		c->pos++;
	}
	if (c->pos >= c->len)
		return SMTP_ADDR_ERR_SYNTAX;    /* no "]" */
	s = c->p + start;
	n = c->pos - start;
	c->pos++;

	if (ipv4_valid(s, n))
		return SMTP_ADDR_OK;
	/* ABNF literal strings are case-insensitive (RFC 5234 2.3). */
	if (n >= 5 && util_ascii_casecmp_n((const char *)s, 5, "IPv6:", 5))
		return ipv6_valid(s + 5, n - 5) ? SMTP_ADDR_OK
						: SMTP_ADDR_ERR_SYNTAX;

	/* General-address-literal = Standardized-tag ":" 1*dcontent;
	 * Standardized-tag = Ldh-str. */
	for (i = 0; i < n && (is_let_dig(s[i]) || s[i] == '-'); i++)
		;
	if (i == 0 || i >= n || s[i] != ':' || !is_let_dig(s[i - 1]) ||
	    i + 1 >= n)
		return SMTP_ADDR_ERR_SYNTAX;
	if (i <= 4) {
		size_t k;

		for (k = 0; k < i && is_hex(s[k]); k++)
			;
		if (k == i)
			return SMTP_ADDR_ERR_SYNTAX;    /* untagged IPv6 */
	}
	return SMTP_ADDR_OK;
}

/*
 * Mailbox = Local-part "@" ( Domain / address-literal ) at c->pos; stops
 * after the mailbox and leaves what follows to the caller. With
 * SMTP_ADDR_POSTMASTER_OK a bare dot-string "Postmaster" (any case, RFC
 * 5321 4.1.1.3) with no "@" is also taken.
 */
static enum smtp_addr_error
parse_mailbox_at(struct cur *c, struct mbox *m)
{
	enum smtp_addr_error err;

	m->local_off = c->pos;
	if (at(c, '"')) {
		m->quoted = true;
		err = parse_quoted_string(c);
	} else {
		err = parse_dot_string(c);
	}
	if (err != SMTP_ADDR_OK)
		return err;
	m->local_len = c->pos - m->local_off;

	if (!at(c, '@')) {
		if (!m->quoted && (c->flags & SMTP_ADDR_POSTMASTER_OK) &&
		    util_ascii_casecmp_n((const char *)c->p + m->local_off,
		    m->local_len, "postmaster", 10)) {
			m->postmaster = true;
			return SMTP_ADDR_OK;
		}
		/* RFC 5321 4.1.2: a Mailbox always has a domain. */
		return fail(c);
	}
	c->pos++;
	m->domain_off = c->pos;
	if (at(c, '[')) {
		m->literal = true;
		err = parse_address_literal(c);
	} else {
		err = parse_domain(c, &m->max_label);
	}
	if (err != SMTP_ADDR_OK)
		return err;
	m->domain_len = c->pos - m->domain_off;
	return SMTP_ADDR_OK;
}

/* Copy a validated Quoted-string (quotes included) minus its quoting. */
static void
dequote(const unsigned char *s, size_t n, char *dst)
{
	size_t i, o = 0;

	for (i = 1; i + 1 < n; i++) {
		if (s[i] == '\\')
			i++;
		dst[o++] = (char)s[i];
	}
	dst[o] = '\0';
}

/*
 * Check the RFC 5321 4.5.3.1 limits of a syntactically valid mailbox and
 * fill *out. Only here are bytes copied, so the buffers in struct
 * smtp_addr cannot overflow whatever the parser saw.
 */
static enum smtp_addr_error
mbox_finish(const struct cur *c, const struct mbox *m, struct smtp_addr *out)
{
	enum smtp_addr_error err;
	size_t mbox_len;

	/* RFC 5321 4.5.3.1.1: local part as sent, quotes included. */
	if (m->local_len > SMTP_ADDR_LOCAL_MAX)
		return SMTP_ADDR_ERR_LOCAL_TOO_LONG;
	/* RFC 5321 4.5.3.1.2; labels: RFC 1035 2.3.4. */
	if (m->domain_len > SMTP_ADDR_DOMAIN_MAX)
		return SMTP_ADDR_ERR_DOMAIN_TOO_LONG;
	err = labels_check(c->p + m->domain_off, m->domain_len, m->max_label);
	if (err != SMTP_ADDR_OK)
		return err;
	/* RFC 5321 4.5.3.1.3: 256 for the path, less its two brackets. */
	mbox_len = m->local_len + (m->postmaster ? 0 : 1 + m->domain_len);
	if (mbox_len > SMTP_ADDR_MAILBOX_MAX)
		return SMTP_ADDR_ERR_PATH_TOO_LONG;

	memcpy(out->local, c->p + m->local_off, m->local_len);
	out->local[m->local_len] = '\0';
	if (m->quoted) {
		dequote(c->p + m->local_off, m->local_len, out->local_value);
	} else {
		memcpy(out->local_value, out->local, m->local_len + 1);
	}
	memcpy(out->domain, c->p + m->domain_off, m->domain_len);
	out->domain[m->domain_len] = '\0';
	out->is_postmaster = m->postmaster;
	out->is_quoted = m->quoted;
	out->is_literal = m->literal;
	out->has_utf8 = c->utf8_seen;
	return SMTP_ADDR_OK;
}

/*
 * A-d-l ":" of RFC 5321 4.1.2, c->pos at the first "@". The route "MUST
 * BE accepted, SHOULD NOT be generated, and SHOULD be ignored" (4.1.2,
 * 4.1.1.3, appendix C): it is checked and skipped. *too_long is set if a
 * route domain breaks the 4.5.3.1.2 limits.
 */
static enum smtp_addr_error
parse_route(struct cur *c, bool *too_long)
{
	enum smtp_addr_error err;

	for (;;) {
		size_t start, max_label;

		c->pos++;   /* "@" */
		start = c->pos;
		if ((err = parse_domain(c, &max_label)) != SMTP_ADDR_OK)
			return err;
		if (c->pos - start > SMTP_ADDR_DOMAIN_MAX ||
		    max_label > SMTP_ADDR_LABEL_MAX)
			*too_long = true;
		if (at(c, ':')) {
			c->pos++;
			return SMTP_ADDR_OK;
		}
		if (!at(c, ','))
			return fail(c);
		c->pos++;
		if (!at(c, '@'))
			return fail(c);
	}
}

/*
 * Parse a Path, "<>" or (with SMTP_ADDR_NO_BRACKETS_OK) a bare Mailbox at
 * the start of (p, len). On success fills *out, sets *consumed to the
 * octets used (just past ">", or the bare mailbox up to but not including
 * the SP or the end of input that must follow it) and returns
 * SMTP_ADDR_OK. What follows ">" is not looked at: the caller checks for
 * SP and parameters. On error *out is cleared and *consumed is 0.
 * out and consumed must not be NULL; p may be NULL only if len is 0.
 */
enum smtp_addr_error
smtp_addr_parse_path(const char *p, size_t len, unsigned flags,
    struct smtp_addr *out, size_t *consumed)
{
	struct cur c = { (const unsigned char *)p, len, 0, flags, false };
	struct mbox m = { 0 };
	enum smtp_addr_error err;
	bool route = false, route_too_long = false;

	ASSERT(out != NULL && consumed != NULL);
	memset(out, 0, sizeof(*out));
	*consumed = 0;

	if (!at(&c, '<')) {
		/* Tolerance for clients that send "MAIL FROM:a@b": the bare
		 * mailbox must end at SP or at the end of input. No source
		 * route and no null path in this form. */
		if (!(flags & SMTP_ADDR_NO_BRACKETS_OK))
			return SMTP_ADDR_ERR_SYNTAX;
		err = parse_mailbox_at(&c, &m);
		if (err == SMTP_ADDR_OK && c.pos < len && p[c.pos] != ' ')
			err = fail(&c);
		if (err == SMTP_ADDR_OK)
			err = mbox_finish(&c, &m, out);
		goto done;
	}
	c.pos++;

	if (at(&c, '>')) {
		/* Reverse-path = Path / "<>" (RFC 5321 4.1.2). */
		if (!(flags & SMTP_ADDR_NULL_OK))
			return SMTP_ADDR_ERR_NULL_NOT_ALLOWED;
		out->is_null = true;
		*consumed = 2;
		return SMTP_ADDR_OK;
	}
	if (at(&c, '@')) {
		route = true;
		if ((err = parse_route(&c, &route_too_long)) != SMTP_ADDR_OK)
			goto done;
	}
	if ((err = parse_mailbox_at(&c, &m)) != SMTP_ADDR_OK)
		goto done;
	if (route && m.postmaster) {
		/* The grammar has "<Postmaster>" alone, never routed. */
		err = SMTP_ADDR_ERR_SYNTAX;
		goto done;
	}
	if (!at(&c, '>')) {
		err = fail(&c);
		goto done;
	}
	c.pos++;
	if (route_too_long) {
		err = SMTP_ADDR_ERR_DOMAIN_TOO_LONG;
		goto done;
	}
	if ((err = mbox_finish(&c, &m, out)) != SMTP_ADDR_OK)
		goto done;
	/* RFC 5321 4.5.3.1.3: the whole path, source route included. */
	if (c.pos > SMTP_ADDR_PATH_MAX) {
		err = SMTP_ADDR_ERR_PATH_TOO_LONG;
		goto done;
	}
	out->had_source_route = route;

done:
	if (err != SMTP_ADDR_OK) {
		memset(out, 0, sizeof(*out));
		return err;
	}
	*consumed = c.pos;
	return SMTP_ADDR_OK;
}

/*
 * Parse all of (p, len) as one Mailbox. SMTP_ADDR_UTF8 and
 * SMTP_ADDR_POSTMASTER_OK apply; the other flags do not. Fills *out on
 * success, clears it on error. out must not be NULL.
 */
enum smtp_addr_error
smtp_addr_parse_mailbox(const char *p, size_t len, unsigned flags,
    struct smtp_addr *out)
{
	struct cur c = { (const unsigned char *)p, len, 0, flags, false };
	struct mbox m = { 0 };
	enum smtp_addr_error err;

	ASSERT(out != NULL);
	memset(out, 0, sizeof(*out));
	err = parse_mailbox_at(&c, &m);
	if (err == SMTP_ADDR_OK && c.pos != len)
		err = fail(&c);
	if (err == SMTP_ADDR_OK)
		err = mbox_finish(&c, &m, out);
	if (err != SMTP_ADDR_OK)
		memset(out, 0, sizeof(*out));
	return err;
}

/*
 * True if all of (p, len) is a Domain (RFC 5321 4.1.2, with U-labels if
 * flags has SMTP_ADDR_UTF8) within 255 octets and 63 per label, or, with
 * allow_literal, an address literal (4.1.3) within 255 octets.
 */
bool
smtp_addr_valid_domain(const char *p, size_t len, unsigned flags,
    bool allow_literal)
{
	struct cur c = { (const unsigned char *)p, len, 0, flags, false };
	size_t max_label = 0;
	enum smtp_addr_error err;

	if (len == 0 || len > SMTP_ADDR_DOMAIN_MAX)
		return false;
	if (at(&c, '[')) {
		if (!allow_literal)
			return false;
		err = parse_address_literal(&c);
	} else {
		err = parse_domain(&c, &max_label);
	}
	return err == SMTP_ADDR_OK && c.pos == len &&
	    labels_check(c.p, len, max_label) == SMTP_ADDR_OK;
}

/*
 * Write "local@domain" (local part as sent, so it stays parseable), just
 * "Postmaster" for the domainless form, or "" for the null path, into buf
 * with a NUL. Returns the length, or -1 if bufsize is too small (buf then
 * holds "" if bufsize > 0).
 */
int
smtp_addr_format(const struct smtp_addr *a, char *buf, size_t bufsize)
{
	size_t ll, dl, n;

	if (bufsize == 0)
		return -1;
	buf[0] = '\0';
	if (a->is_null)
		return 0;
	ll = strnlen(a->local, sizeof(a->local));
	dl = strnlen(a->domain, sizeof(a->domain));
	n = ll + (dl > 0 ? 1 + dl : 0);
	if (n >= bufsize)
		return -1;
	memcpy(buf, a->local, ll);
	if (dl > 0) {
		buf[ll] = '@';
		memcpy(buf + ll + 1, a->domain, dl);
	}
	buf[n] = '\0';
	return (int)n;
}

/* A static English phrase for err, for logs and reply texts. */
const char *
smtp_addr_strerror(enum smtp_addr_error err)
{
	switch (err) {
	case SMTP_ADDR_OK:
		return "ok";
	case SMTP_ADDR_ERR_SYNTAX:
		return "address syntax error";
	case SMTP_ADDR_ERR_LOCAL_TOO_LONG:
		return "local part too long";
	case SMTP_ADDR_ERR_DOMAIN_TOO_LONG:
		return "domain name too long";
	case SMTP_ADDR_ERR_PATH_TOO_LONG:
		return "path too long";
	case SMTP_ADDR_ERR_UTF8_NOT_ALLOWED:
		return "non-ASCII address without SMTPUTF8";
	case SMTP_ADDR_ERR_BAD_UTF8:
		return "malformed UTF-8 in address";
	case SMTP_ADDR_ERR_NULL_NOT_ALLOWED:
		return "null path not allowed";
	case SMTP_ADDR_ERR_BAD_IDN:
		return "not a valid internationalized domain (IDNA2008)";
	}
	return "unknown address error";
}

/* xchar of RFC 3461 4: "!".."~" except "+" and "=". */
static bool
is_xchar(unsigned c)
{
	return c >= 33 && c <= 126 && c != '+' && c != '=';
}

/* Value of an upper case hex digit, or -1 (RFC 3461 4 hexchar). */
static int
xdigit_val(unsigned c)
{
	if (is_digit(c))
		return (int)(c - '0');
	if (c >= 'A' && c <= 'F')
		return (int)(c - 'A' + 10);
	return -1;
}

/*
 * Decode xtext (RFC 3461 4). Strict: a hexchar is "+" and exactly two
 * UPPER case hex digits, as the RFC's ABNF says; "+2b" is refused, as is
 * any octet outside xchar. The decoded octets may include NUL ("+00"), so
 * callers use the returned length. Writes at most outsize octets including
 * the final NUL; returns the decoded length, or -1 for bad xtext or if out
 * is too small.
 */
int
smtp_xtext_decode(const char *p, size_t len, char *out, size_t outsize)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0, o = 0;

	if (outsize == 0)
		return -1;
	out[0] = '\0';
	while (i < len) {
		unsigned char ch;

		if (s[i] == '+') {
			int hi, lo;

			if (len - i < 3)
				return -1;
			hi = xdigit_val(s[i + 1]);
			lo = xdigit_val(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			ch = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else if (is_xchar(s[i])) {
			ch = s[i++];
		} else {
			return -1;
		}
		if (o + 1 >= outsize || o >= INT_MAX) {
			out[0] = '\0';
			return -1;
		}
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return (int)o;
}

/*
 * Encode (p, len) as xtext (RFC 3461 4): xchars as themselves, everything
 * else as "+XX" with upper case hex. Returns the encoded length, or -1 if
 * out (outsize octets with the NUL) is too small.
 */
int
smtp_xtext_encode(const char *p, size_t len, char *out, size_t outsize)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)p;
	size_t i, o = 0;

	if (outsize == 0)
		return -1;
	out[0] = '\0';
	for (i = 0; i < len; i++) {
		size_t need = is_xchar(s[i]) ? 1 : 3;

		if (outsize - o <= need || o + need > INT_MAX) {
			out[0] = '\0';
			return -1;
		}
		if (need == 1) {
			out[o++] = (char)s[i];
		} else {
			out[o++] = '+';
			out[o++] = hex[s[i] >> 4];
			out[o++] = hex[s[i] & 0x0F];
		}
	}
	out[o] = '\0';
	return (int)o;
}

/* True if all of (p, len) is xtext by the rules of smtp_xtext_decode(). */
bool
smtp_xtext_valid(const char *p, size_t len)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;

	while (i < len) {
		if (s[i] == '+') {
			if (len - i < 3 || xdigit_val(s[i + 1]) < 0 ||
			    xdigit_val(s[i + 2]) < 0)
				return false;
			i += 3;
		} else if (is_xchar(s[i])) {
			i++;
		} else {
			return false;
		}
	}
	return true;
}
