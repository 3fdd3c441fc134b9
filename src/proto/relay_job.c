/*
 * relay_job.c - the relay protocol's payloads (see relay_job.h).
 */
#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/relay_job.h"

/* ---- jobs ---- */

int
relay_job_encode(struct evbuffer *out, uint64_t id, const char *domain,
    const struct envelope *env, const void *body, size_t body_len)
{
	struct evbuffer *head = evbuffer_new();
	const char *b = body;
	size_t n;

	if (head == NULL)
		util_assert_fail("evbuffer_new", __FILE__, __LINE__);
	evbuffer_add_printf(head, "domain %s\n", domain);
	envelope_serialize(env, head);
	n = evbuffer_get_length(head);
	if (n > IPC_MAX_PAYLOAD) {
		evbuffer_free(head);
		return -1;
	}
	ipc_frame_put(out, RELAY_JOB_START, 0, id, evbuffer_pullup(head, -1), n);
	evbuffer_free(head);
	for (size_t off = 0; off < body_len; off += n) {
		n = body_len - off < IPC_MAX_PAYLOAD ? body_len - off :
		    IPC_MAX_PAYLOAD;
		ipc_frame_put(out, RELAY_JOB_DATA, 0, id, b + off, n);
	}
	ipc_frame_put(out, RELAY_JOB_END, 0, id, NULL, 0);
	return 0;
}

int
relay_job_decode(const void *p, size_t len,
    char domain[RELAY_JOB_DOMAIN_MAX + 1], struct envelope *env, char *err,
    size_t errsize)
{
	const char *s = p, *nl;
	size_t dlen;

	if (len < 8 || memcmp(s, "domain ", 7) != 0 ||
	    (nl = memchr(s, '\n', len)) == NULL) {
		snprintf(err, errsize, "job without a domain line");
		return -1;
	}
	dlen = (size_t)(nl - (s + 7));
	if (dlen == 0 || dlen > RELAY_JOB_DOMAIN_MAX) {
		snprintf(err, errsize, "job domain empty or too long");
		return -1;
	}
	for (size_t i = 0; i < dlen; i++)
		if ((unsigned char)s[7 + i] <= 0x20 || (unsigned char)s[7 + i] == 0x7f) {
			/* UTF-8 is fine: an SMTPUTF8 recipient's U-labels
			 * (the relay turns them into A-labels) */
			snprintf(err, errsize, "job domain with a control or space octet");
			return -1;
		}
	if (envelope_parse(env, nl + 1, len - (size_t)(nl + 1 - s),
	    RELAY_JOB_MAX_RCPTS, err, errsize) == -1)
		return -1;
	if (env->nrcpts == 0) {
		envelope_clear(env);
		snprintf(err, errsize, "no recipients");
		return -1;
	}
	memcpy(domain, s + 7, dlen);
	domain[dlen] = '\0';
	return 0;
}

/* ---- results: encoding ---- */

size_t
relay_result_text_max(size_t nrcpts)
{
	/* Every line is at most 32 octets plus its text; the via line and
	 * peer-dsn less than 1024. 1000 recipients still get 229 octets of
	 * text each. */
	size_t m = (IPC_MAX_PAYLOAD - 1024) / (nrcpts ? nrcpts : 1) - 32;

	return m < RELAY_RESULT_TEXT_MAX ? m : RELAY_RESULT_TEXT_MAX;
}

/* Printable non-blank ASCII, at most RELAY_RESULT_TOKEN_MAX; "-" if none. */
static void
via_put(struct evbuffer *out, const char *tok, const char *sep)
{
	char buf[RELAY_RESULT_TOKEN_MAX + 1];
	size_t o = 0;

	for (; tok != NULL && *tok != '\0' && o < RELAY_RESULT_TOKEN_MAX; tok++) {
		unsigned char ch = (unsigned char)*tok;

		buf[o++] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	if (o == 0)
		buf[o++] = '-';
	buf[o] = '\0';
	evbuffer_add_printf(out, "%s%s", buf, sep);
}

void
relay_result_begin(struct evbuffer *out, const char *mx, const char *ip,
    const char *tls, bool peer_dsn)
{
	evbuffer_add(out, "via ", 4);
	via_put(out, mx, " ");
	via_put(out, ip, " ");
	via_put(out, tls, "\n");
	if (peer_dsn)
		evbuffer_add(out, "peer-dsn\n", 9);
}

/* Digits only, 1..max of them; the value in *v. */
static bool
digits(const char *p, size_t n, size_t max, unsigned long *v)
{
	if (n == 0 || n > max)
		return false;
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		*v = *v * 10 + (unsigned long)(p[i] - '0');
	}
	return true;
}

/*
 * RFC 3463 2: class "." subject "." detail, class 2, 4 or 5. Loose on
 * purpose (leading zeros pass): it is the server's code, passed on by the
 * relay, and refusing it would close the relay channel. A report
 * normalises it (dsn.c: RFC 3464 2.3.4 allows no leading zeros).
 */
static bool
enhanced_status(const char *p, size_t n)
{
	const char *d1, *d2;
	unsigned long v;

	if (n < 5 || (p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
		return false;
	d1 = p + 2;
	d2 = memchr(d1, '.', n - 2);
	if (d2 == NULL)
		return false;
	return digits(d1, (size_t)(d2 - d1), 3, &v) &&
	    digits(d2 + 1, (size_t)(p + n - d2 - 1), 3, &v);
}

void
relay_result_add(struct evbuffer *out, size_t i, struct relay_result_line *l,
    size_t textmax)
{
	char cls, *t = l->text;
	size_t o = 0;

	if (l->outcome != 'D' && l->outcome != 'F')
		l->outcome = 'T';
	cls = l->outcome == 'D' ? '2' : l->outcome == 'F' ? '5' : '4';
	/* The status class must agree with the outcome (RFC 3463 2): a
	 * server may answer a greeting or EHLO with a 3xx, which is reported
	 * as a failure of tern's, never as a "3.x.x" the queue would refuse. */
	l->enh[sizeof(l->enh) - 1] = '\0';
	if (l->enh[0] != cls || !enhanced_status(l->enh, strlen(l->enh)))
		snprintf(l->enh, sizeof(l->enh), "%c.0.0", cls);
	if (l->code != 0 && (l->code / 100 != (unsigned)(cls - '0') ||
	    l->code > 599))
		l->code = 0;
	if (textmax > RELAY_RESULT_TEXT_MAX)
		textmax = RELAY_RESULT_TEXT_MAX;
	l->text[RELAY_RESULT_TEXT_MAX] = '\0';
	for (const char *s = l->text; *s != '\0' && o < textmax; s++) {
		unsigned char ch = (unsigned char)*s;

		t[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	t[o] = '\0';
	if (o == 0)
		util_strlcpy(l->text, l->outcome == 'D' ? "delivered" :
		    "no reply text", sizeof(l->text));
	evbuffer_add_printf(out, "%zu %c %u %s %s\n", i, l->outcome, l->code,
	    l->enh, l->text);
}

/* ---- results: decoding ---- */

/* true if p..p+n is one token of printable non-blank ASCII. */
static bool
via_token(const char *p, size_t n)
{
	if (n == 0 || n > RELAY_RESULT_TOKEN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			return false;
	return true;
}

/* "via <mx> <ip> <tls>\n" at p; the octet after it in *next. */
static int
via_decode(const char *p, const char *end, struct relay_result *res,
    const char **next)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p)), *s;

	if (nl == NULL || (size_t)(nl - p) < 4 || memcmp(p, "via ", 4) != 0)
		return -1;
	s = p + 4;
	for (int i = 0; i < 3; i++) {
		const char *sp = memchr(s, ' ', (size_t)(nl - s));
		const char *e = i < 2 ? sp : nl;

		if (e == NULL || (i == 2 && sp != NULL) ||
		    !via_token(s, (size_t)(e - s)))
			return -1;
		res->via[i] = s;
		res->via_len[i] = (size_t)(e - s);
		s = e + 1;
	}
	*next = nl + 1;
	return 0;
}

/* Line k, p..nl (without its LF): "<k> <D|T|F> <code> <x.y.z>[ <text>]". */
static const char *
line_decode(const char *p, const char *nl, size_t k,
    struct relay_result_rcpt *r)
{
	const char *f[4], *s = p;
	size_t flen[4];
	unsigned long idx, code;

	if (memchr(p, '\r', (size_t)(nl - p)) != NULL)
		return "CR in result line";
	/* Four fields separated by single spaces, then the text. */
	for (int i = 0; i < 4; i++) {
		const char *sp = memchr(s, ' ', (size_t)(nl - s));
		const char *e = sp != NULL ? sp : nl;

		if (i < 3 && sp == NULL)
			return "short result line";
		f[i] = s;
		flen[i] = (size_t)(e - s);
		s = e < nl ? e + 1 : nl;
	}
	if (!digits(f[0], flen[0], 5, &idx) || idx != k ||
	    (flen[0] > 1 && f[0][0] == '0'))
		return "bad index";
	if (flen[1] != 1 || (f[1][0] != 'D' && f[1][0] != 'T' && f[1][0] != 'F'))
		return "bad outcome";
	if (!digits(f[2], flen[2], 3, &code) || (code != 0 &&
	    (flen[2] != 3 || code < 200 || code > 599)) ||
	    (code == 0 && flen[2] != 1))
		return "bad reply code";
	if (!enhanced_status(f[3], flen[3]))
		return "bad status code";
	/* What relay_result_add() writes: printable ASCII, bounded. The
	 * text goes into the journal and a report's Diagnostic-Code, so a
	 * relay that breaks the rule is refused, not believed. */
	if ((size_t)(nl - s) > RELAY_RESULT_TEXT_MAX)
		return "result text too long";
	for (const char *c = s; c < nl; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			return "control or 8-bit octet in result text";
	r->outcome = f[1][0];
	r->code = (unsigned)code;
	r->enh = f[3];
	r->enh_len = flen[3];
	r->text = s;
	r->text_len = (size_t)(nl - s);
	return NULL;
}

int
relay_result_decode(const void *payload, size_t len, size_t nrcpts,
    struct relay_result *res, struct relay_result_rcpt *rcpts, char *why,
    size_t whysize)
{
	const char *p = payload, *end = p + len, *nl, *bad;
	size_t k = 0;

	memset(res, 0, sizeof(*res));
	if (len == 0 || memchr(p, '\0', len) != NULL) {
		snprintf(why, whysize, "empty result, or a NUL in it");
		return -1;
	}
	if (via_decode(p, end, res, &p) == -1) {
		snprintf(why, whysize, "result without a valid via line");
		return -1;
	}
	/* Optional "peer-dsn": the server offered DSN (RFC 3461 5.2.2). */
	if ((size_t)(end - p) >= 9 && memcmp(p, "peer-dsn\n", 9) == 0) {
		res->peer_dsn = true;
		p += 9;
	}
	for (; p < end; p = nl + 1, k++) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			snprintf(why, whysize, "unterminated result line %zu", k);
			return -1;
		}
		if (k >= nrcpts) {
			snprintf(why, whysize, "more result lines than the job's "
			    "%zu recipients", nrcpts);
			return -1;
		}
		if ((bad = line_decode(p, nl, k, &rcpts[k])) != NULL) {
			snprintf(why, whysize, "result line %zu: %s", k, bad);
			return -1;
		}
	}
	if (k != 0 && k != nrcpts) {
		snprintf(why, whysize, "%zu result lines for %zu recipients", k,
		    nrcpts);
		return -1;
	}
	res->n = k;
	return 0;
}
