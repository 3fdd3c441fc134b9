/*
 * sendmail_msg.c - command line, address lists, message and configuration
 * peek of `tern sendmail` (see sendmail_msg.h). Pure functions over
 * buffers: nothing here reads, writes or connects.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/sendmail_msg.h"
#include "mail/addrlist.h"
#include "lib/util.h"
#include "mail/sasl.h"

#define EX_USAGE_ 64   /* sysexits.h EX_USAGE, without the header here */

/* ------------------------------------------------------------------ */
/* buffers and lists */

void
sendmail_buf_add(struct sendmail_buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = xreallocarray(b->p, cap, 1);
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
sendmail_buf_addf(struct sendmail_buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		abort();
	va_end(ap);
	sendmail_buf_add(b, s, strlen(s));
	free(s);
}

void
sendmail_buf_clear(struct sendmail_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

void
sendmail_list_add(struct sendmail_list *l, const char *s, size_t n)
{
	for (size_t i = 0; i < l->n; i++)
		if (util_ascii_casecmp_n(l->v[i], strlen(l->v[i]), s, n))
			return;
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = xstrndup(s, n);
}

void
sendmail_list_clear(struct sendmail_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* ------------------------------------------------------------------ */
/* command line */

/* The value of an option that takes one: the rest of argv[*i] after the
 * letter, or the next argument. NULL if there is none. */
static const char *
opt_value(int argc, char **argv, int *i)
{
	if (argv[*i][2] != '\0')
		return argv[*i] + 2;
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

int
sendmail_parse_args(int argc, char **argv, int first,
    struct sendmail_opts *o, char *err, size_t errsize)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->rcpts = xcalloc((size_t)(argc > first ? argc - first : 1),
	    sizeof(*o->rcpts));
	for (i = first; i < argc; i++) {
		const char *a = argv[i], *v;

		if (strcmp(a, "--") == 0) {
			while (++i < argc)
				o->rcpts[o->nrcpts++] = argv[i];
			break;
		}
		if (a[0] != '-' || a[1] == '\0') {
			o->rcpts[o->nrcpts++] = argv[i];
			continue;
		}
		switch (a[1]) {
		case 't':
		case 'i':
		case 'v':
		case 'm':   /* me too: meaningless here */
		case 'n':   /* no aliasing: aliases are the daemon's */
		case 'U':   /* initial user submission: it always is */
			if (a[2] != '\0')
				goto unknown;
			if (a[1] == 't')
				o->extract = true;
			else if (a[1] == 'i')
				o->ignore_dots = true;
			else if (a[1] == 'v')
				o->verbose = true;
			break;
		case 'o':
			if (a[2] == '\0')
				goto unknown;
			if (strcmp(a, "-oi") == 0)
				o->ignore_dots = true;
			/* -oem, -oee, -odi, -odb, -oQ...: sendmail's own
			 * settings, with no meaning for tern: ignored. */
			break;
		case 'e':   /* -em, -ee...: error reporting mode */
			break;
		case 'b':
			if (strcmp(a, "-bm") != 0) {
				snprintf(err, errsize, "mode %s is not supported "
				    "(only -bm, delivering a message)", a);
				goto usage;
			}
			break;
		case 'f':
		case 'r':
		case 'F':
		case 'C':
		case 'c':
		case 'B':   /* body type: tern looks at the octets itself */
		case 'N':   /* DSN notify, R return, V envelope id: no DSN yet */
		case 'R':
		case 'V':
		case 'L':   /* syslog tag */
		case 'h':   /* hop count */
		case 'O':   /* long option=value */
			if ((v = opt_value(argc, argv, &i)) == NULL) {
				snprintf(err, errsize, "option -%c needs a value",
				    a[1]);
				goto usage;
			}
			if (a[1] == 'f' || a[1] == 'r')
				o->sender = v;
			else if (a[1] == 'F')
				o->fullname = v;
			else if (a[1] == 'C' || a[1] == 'c')
				o->config = v;
			break;
		default:
		unknown:
			snprintf(err, errsize, "unknown option %s", a);
			goto usage;
		}
	}
	return 0;
usage:
	free(o->rcpts);
	o->rcpts = NULL;
	o->nrcpts = 0;
	return EX_USAGE_;
}

/* ------------------------------------------------------------------ */
/* RFC 5322 3.4 address lists (mail/addrlist.c) */

static int
list_add(void *arg, const struct addrlist_addr *a)
{
	sendmail_list_add(arg, a->addr, strlen(a->addr));
	return 0;
}

int
sendmail_parse_addresses(const char *s, size_t len, const char *domain,
    struct sendmail_list *out, char *err, size_t errsize)
{
	int n = addrlist_parse(s, len, 0, domain, list_add, out, err, errsize);

	return n < 0 ? -1 : n;
}

/* ------------------------------------------------------------------ */
/* the message */

/* Length of the field name of a header line, or 0 if it is none:
 * ftext (RFC 5322 3.6.8) then optional WSP (obs-optional) and ':'. */
static size_t
field_name_len(const char *l, size_t n)
{
	size_t i = 0, name;

	while (i < n && l[i] >= 33 && l[i] <= 126 && l[i] != ':')
		i++;
	name = i;
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	if (name == 0 || i >= n || l[i] != ':')
		return 0;
	return name;
}

static bool
name_is(const char *l, size_t n, const char *name)
{
	return util_ascii_casecmp_n(l, n, name, strlen(name));
}

/* One header field, its lines joined with CRLF (no final CRLF). */
static int
take_field(struct sendmail_msg *m, const char *f, size_t n, bool extract,
    const char *domain, char *err, size_t errsize)
{
	size_t nl = field_name_len(f, n);
	const char *colon = memchr(f, ':', n);
	bool to = name_is(f, nl, "to"), cc = name_is(f, nl, "cc");
	bool bcc = name_is(f, nl, "bcc");

	if (extract && (to || cc || bcc)) {
		size_t off = (size_t)(colon + 1 - f);

		if (sendmail_parse_addresses(colon + 1, n - off, domain,
		    &m->rcpts, err, errsize) == -1) {
			char why[200];

			util_strlcpy(why, err, sizeof(why));
			snprintf(err, errsize, "%.*s: header: %s", (int)nl, f, why);
			return -1;
		}
	}
	/* RFC 5322 3.6.3, 3.6.6: Bcc: and Resent-Bcc: are never shown to
	 * the recipients (Resent-* fields name no recipients for -t, as
	 * Resent-To: does not) */
	if (bcc || name_is(f, nl, "resent-bcc"))
		return 0;
	m->has_from |= name_is(f, nl, "from");
	m->has_date |= name_is(f, nl, "date");
	m->has_message_id |= name_is(f, nl, "message-id");
	sendmail_buf_add(&m->header, f, n);
	sendmail_buf_add(&m->header, "\r\n", 2);
	return 0;
}

int
sendmail_msg_parse(const char *in, size_t len, bool ignore_dots,
    bool extract, const char *domain, struct sendmail_msg *m, char *err,
    size_t errsize)
{
	struct sendmail_buf field = { 0 };
	bool in_header = true, first = true;
	size_t pos = 0;

	memset(m, 0, sizeof(*m));
	while (pos < len) {
		const char *l = in + pos;
		size_t n = 0;

		/* CR LF, a lone CR and a lone LF each end a line, as the
		 * daemon's bare_newline normalize reads them (RFC 5321 2.3.8
		 * allows only CRLF): a CR kept inside a line here would become
		 * a line end there, after Bcc: removal and -t, and a "Bcc:"
		 * hidden behind it would be delivered. */
		while (pos + n < len && l[n] != '\r' && l[n] != '\n')
			n++;
		pos += n;
		if (pos < len)
			pos += in[pos] == '\r' && pos + 1 < len &&
			    in[pos + 1] == '\n' ? 2 : 1;
		if (!ignore_dots && n == 1 && l[0] == '.')
			break;
		if (in_header) {
			bool cont = n > 0 && (l[0] == ' ' || l[0] == '\t');

			if (first && n >= 5 && memcmp(l, "From ", 5) == 0) {
				first = false;   /* mbox separator */
				continue;
			}
			first = false;
			if (cont && field.len > 0) {
				sendmail_buf_add(&field, "\r\n", 2);
				sendmail_buf_add(&field, l, n);
				continue;
			}
			if (field.len > 0) {
				if (take_field(m, field.p, field.len, extract,
				    domain, err, errsize) == -1)
					goto fail;
				field.len = 0;
			}
			if (n > 0 && field_name_len(l, n) > 0) {
				sendmail_buf_add(&field, l, n);
				continue;
			}
			in_header = false;
			if (n == 0)
				continue;   /* the separator: the caller writes it */
		}
		sendmail_buf_add(&m->body, l, n);
		sendmail_buf_add(&m->body, "\r\n", 2);
	}
	if (field.len > 0 && take_field(m, field.p, field.len, extract, domain,
	    err, errsize) == -1)
		goto fail;
	sendmail_buf_clear(&field);
	return 0;
fail:
	sendmail_buf_clear(&field);
	sendmail_msg_clear(m);
	return -1;
}

void
sendmail_msg_clear(struct sendmail_msg *m)
{
	sendmail_buf_clear(&m->header);
	sendmail_buf_clear(&m->body);
	sendmail_list_clear(&m->rcpts);
}

void
sendmail_dot_stuff(struct sendmail_buf *out, const char *in, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		const char *l = in + pos;
		const char *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) + 1 : len - pos;

		if (l[0] == '.')
			sendmail_buf_add(out, ".", 1);
		sendmail_buf_add(out, l, n);
		pos += n;
	}
}

void
sendmail_display_name(struct sendmail_buf *out, const char *name)
{
	bool ascii = true, atoms = true;
	size_t n = strlen(name);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c >= 0x80 || c < 0x20 || c == 0x7f)
			ascii = false;
		else if (c != ' ' && !((c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL))
			atoms = false;
	}
	if (ascii && atoms && n > 0 && name[0] != ' ' && name[n - 1] != ' ') {
		sendmail_buf_add(out, name, n);
	} else if (ascii) {
		sendmail_buf_add(out, "\"", 1);
		for (size_t i = 0; i < n; i++) {
			if (name[i] == '"' || name[i] == '\\')
				sendmail_buf_add(out, "\\", 1);
			sendmail_buf_add(out, name + i, 1);
		}
		sendmail_buf_add(out, "\"", 1);
	} else {
		/* RFC 2047 4.1; control characters are dropped first. One
		 * encoded word per 45 octets keeps each under 75 chars. */
		struct sendmail_buf clean = { 0 };

		for (size_t i = 0; i < n; i++)
			if ((unsigned char)name[i] >= 0x20 && name[i] != 0x7f)
				sendmail_buf_add(&clean, name + i, 1);
		for (size_t i = 0; i < clean.len; i += 45) {
			size_t k = clean.len - i < 45 ? clean.len - i : 45;
			char enc[4 * 45 / 3 + 1];
			ssize_t elen = sasl_b64_encode(clean.p + i, k, enc,
			    sizeof(enc));

			if (elen < 0)   /* enc fits 45 octets: cannot happen */
				abort();
			sendmail_buf_add(out, i ? " =?UTF-8?B?" : "=?UTF-8?B?", i ? 11 : 10);
			sendmail_buf_add(out, enc, (size_t)elen);
			sendmail_buf_add(out, "?=", 2);
		}
		sendmail_buf_clear(&clean);
	}
}

/* ------------------------------------------------------------------ */
/* the configuration file, the three values the client needs */

int
sendmail_config_scan(const char *text, size_t len, char **submit_socket,
    char **spool, char **hostname, char *err, size_t errsize)
{
	unsigned depth = 0, lineno = 0;
	size_t pos = 0;

	*submit_socket = *spool = *hostname = NULL;
	while (pos < len) {
		const char *l = text + pos;
		const char *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		struct sendmail_buf tok[2] = { { 0 }, { 0 } };
		size_t ntok = 0, i = 0;
		unsigned d0 = depth;

		pos += n + (nl != NULL);
		lineno++;
		while (i < n) {
			char c = l[i];

			if (c == ' ' || c == '\t' || c == '\r') {
				i++;
			} else if (c == '#') {
				break;
			} else if (c == '{' || c == '}') {
				if (c == '{')
					depth++;
				else if (depth > 0)
					depth--;
				ntok = 2;   /* a brace ends the statement's value */
				i++;
			} else {
				struct sendmail_buf *t = ntok < 2 ? &tok[ntok] : NULL;

				if (c == '"') {
					for (i++; i < n && l[i] != '"'; i++) {
						if (l[i] == '\\' && i + 1 < n)
							i++;
						if (t != NULL)
							sendmail_buf_add(t, l + i, 1);
					}
					if (i >= n) {
						snprintf(err, errsize, "line %u: "
						    "unterminated quoted string",
						    lineno);
						sendmail_buf_clear(&tok[0]);
						sendmail_buf_clear(&tok[1]);
						/* nothing for the caller to free */
						free(*submit_socket);
						free(*spool);
						free(*hostname);
						*submit_socket = *spool = *hostname = NULL;
						return -1;
					}
					i++;
				} else {
					/* memchr: strchr would find a NUL octet
					 * in its own terminator and loop */
					for (; i < n && memchr(" \t\r#{}\"", l[i],
					    7) == NULL; i++)
						if (t != NULL)
							sendmail_buf_add(t, l + i, 1);
				}
				if (t != NULL && t->len == 0)
					sendmail_buf_add(t, "", 0);
				ntok += ntok < 2;
			}
		}
		if (d0 == 0 && tok[0].len > 0 && tok[1].p != NULL) {
			char **slot = strcmp(tok[0].p, "submit_socket") == 0 ?
			    submit_socket : strcmp(tok[0].p, "spool") == 0 ?
			    spool : strcmp(tok[0].p, "hostname") == 0 ?
			    hostname : NULL;

			if (slot != NULL && *slot == NULL)
				*slot = xstrdup(tok[1].p);
		}
		sendmail_buf_clear(&tok[0]);
		sendmail_buf_clear(&tok[1]);
	}
	return 0;
}
