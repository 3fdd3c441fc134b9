/*
 * envelope.c - the envelope record and its text form (see envelope.h and
 * docs/spool-format.md).
 *
 * Text form: one record per line, "key" SP value LF, in this order:
 *
 *     version 1
 *     id 0005f1c2a3b4c001           (only once the queue has assigned it)
 *     arrival 1796000000
 *     sender alice@example.org      (value empty for the null path <>)
 *     helo client.example.org       (optional)
 *     client 192.0.2.1              (optional)
 *     protocol ESMTP                (optional)
 *     body 8BITMIME                 (optional: 7BIT or 8BITMIME)
 *     smtputf8 1                    (optional)
 *     ret FULL                      (optional: FULL or HDRS)
 *     envid QQ+2Bxyz                (optional)
 *     size 4096                     (optional)
 *     rcpt <notify> <orcpt> <addr>  (one per recipient, at least one)
 *
 * The parser accepts the single-valued records in any order after
 * "version", but each at most once. It is the one place where bytes from
 * the smtp process (IPC BEGIN) and from disk become an envelope, so it
 * trusts nothing: every line must end in LF, values are bounded by
 * ENVELOPE_MAX_FIELD, control characters and malformed UTF-8 are refused,
 * and the recipient count is bounded by the caller.
 */
#include <errno.h>
#include <inttypes.h>

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "lib/utf8.h"
#include "lib/util.h"

void
envelope_init(struct envelope *env)
{
	memset(env, 0, sizeof(*env));
	env->sender = NULL;
	env->rcpts = NULL;
}

void
envelope_clear(struct envelope *env)
{
	free(env->sender);
	free(env->helo);
	free(env->client_addr);
	free(env->protocol);
	free(env->envid);
	for (size_t i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].orcpt);
	}
	free(env->rcpts);
	envelope_init(env);
}

void
envelope_add_rcpt(struct envelope *env, const char *addr, const char *orcpt,
    unsigned notify)
{
	struct envelope_rcpt *r;

	if (env->nrcpts == env->rcpts_cap) {
		size_t cap = env->rcpts_cap ? env->rcpts_cap * 2 : 4;
		env->rcpts = xreallocarray(env->rcpts, cap, sizeof(*env->rcpts));
		env->rcpts_cap = cap;
	}
	r = &env->rcpts[env->nrcpts++];
	r->addr = xstrdup(addr);
	r->orcpt = orcpt != NULL ? xstrdup(orcpt) : NULL;
	r->notify = notify;
}

void
envelope_set(char **field, const char *val)
{
	free(*field);
	*field = val != NULL ? xstrdup(val) : NULL;
}

static const char *
body_name(enum envelope_body b)
{
	switch (b) {
	case ENVELOPE_BODY_7BIT:
		return "7BIT";
	case ENVELOPE_BODY_8BITMIME:
		return "8BITMIME";
	default:
		return NULL;
	}
}

static void
add_notify(struct evbuffer *out, unsigned notify)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ ENVELOPE_NOTIFY_NEVER, "NEVER" },
		{ ENVELOPE_NOTIFY_SUCCESS, "SUCCESS" },
		{ ENVELOPE_NOTIFY_FAILURE, "FAILURE" },
		{ ENVELOPE_NOTIFY_DELAY, "DELAY" },
	};
	bool first = true;

	if (notify == 0) {
		evbuffer_add(out, "-", 1);
		return;
	}
	for (size_t i = 0; i < nitems(names); i++) {
		if (!(notify & names[i].bit))
			continue;
		evbuffer_add_printf(out, "%s%s", first ? "" : ",", names[i].name);
		first = false;
	}
}

void
envelope_serialize(const struct envelope *env, struct evbuffer *out)
{
	const char *b;

	evbuffer_add_printf(out, "version %d\n", ENVELOPE_VERSION);
	if (env->id[0] != '\0')
		evbuffer_add_printf(out, "id %s\n", env->id);
	evbuffer_add_printf(out, "arrival %" PRId64 "\n", env->arrival);
	evbuffer_add_printf(out, "sender %s\n", env->sender ? env->sender : "");
	if (env->helo != NULL)
		evbuffer_add_printf(out, "helo %s\n", env->helo);
	if (env->client_addr != NULL)
		evbuffer_add_printf(out, "client %s\n", env->client_addr);
	if (env->protocol != NULL)
		evbuffer_add_printf(out, "protocol %s\n", env->protocol);
	if ((b = body_name(env->body)) != NULL)
		evbuffer_add_printf(out, "body %s\n", b);
	if (env->smtputf8)
		evbuffer_add_printf(out, "smtputf8 1\n");
	if (env->ret == ENVELOPE_RET_FULL)
		evbuffer_add_printf(out, "ret FULL\n");
	else if (env->ret == ENVELOPE_RET_HDRS)
		evbuffer_add_printf(out, "ret HDRS\n");
	if (env->envid != NULL)
		evbuffer_add_printf(out, "envid %s\n", env->envid);
	if (env->size_declared != 0)
		evbuffer_add_printf(out, "size %" PRIu64 "\n", env->size_declared);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct envelope_rcpt *r = &env->rcpts[i];

		evbuffer_add(out, "rcpt ", 5);
		add_notify(out, r->notify);
		evbuffer_add_printf(out, " %s %s\n",
		    r->orcpt != NULL ? r->orcpt : "-", r->addr);
	}
}

/* ---- parser ---- */

struct view {
	const char *p;
	size_t len;
};

static bool
view_eq(struct view v, const char *s)
{
	size_t n = strlen(s);

	return v.len == n && memcmp(v.p, s, n) == 0;
}

static int
fail(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errsize, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errsize, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * true if (p, len) holds no control character (C0, DEL) and is well-formed
 * UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
 * Values may carry UTF-8 under SMTPUTF8 (RFC 6531); a CR or LF in a value
 * would let a hostile writer forge records or headers, so none get in.
 */
static bool
valid_text(const char *p, size_t len)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		uint32_t cp;
		size_t need;

		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((need = utf8_decode(s + i, len - i, &cp)) == 0)
			return false;
		i += need;
	}
	return true;
}

/* Printable ASCII without space: protocol names, xtext, numbers. */
static bool
valid_token(struct view v)
{
	if (v.len == 0)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		unsigned char c = (unsigned char)v.p[i];
		if (c <= 0x20 || c >= 0x7f)
			return false;
	}
	return true;
}

/* Decimal without sign or leading zeros (except "0"), at most max. */
static bool
parse_u64(struct view v, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;

	if (v.len == 0 || v.len > 20 || (v.len > 1 && v.p[0] == '0'))
		return false;
	for (size_t i = 0; i < v.len; i++) {
		unsigned d;

		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
		d = (unsigned)(v.p[i] - '0');
		if (n > (max - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*out = n;
	return true;
}

static bool
parse_notify(struct view v, unsigned *out)
{
	unsigned bits = 0;
	size_t i = 0;

	if (view_eq(v, "-")) {
		*out = 0;
		return true;
	}
	while (i < v.len) {
		struct view w = { v.p + i, 0 };
		unsigned bit;

		while (i < v.len && v.p[i] != ',')
			i++, w.len++;
		if (view_eq(w, "NEVER"))
			bit = ENVELOPE_NOTIFY_NEVER;
		else if (view_eq(w, "SUCCESS"))
			bit = ENVELOPE_NOTIFY_SUCCESS;
		else if (view_eq(w, "FAILURE"))
			bit = ENVELOPE_NOTIFY_FAILURE;
		else if (view_eq(w, "DELAY"))
			bit = ENVELOPE_NOTIFY_DELAY;
		else
			return false;
		if (bits & bit)
			return false;
		bits |= bit;
		if (i < v.len) {
			i++;    /* the comma */
			if (i == v.len)
				return false;   /* trailing comma */
		}
	}
	/* RFC 3461 4.1: NEVER must not be combined with the others. */
	if ((bits & ENVELOPE_NOTIFY_NEVER) && bits != ENVELOPE_NOTIFY_NEVER)
		return false;
	*out = bits;
	return bits != 0;
}

static bool
is_hex_lower(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Split "a b rest" at the first space: head gets "a", v keeps the rest. */
static bool
take_word(struct view *v, struct view *head)
{
	const char *sp = memchr(v->p, ' ', v->len);

	if (sp == NULL)
		return false;
	head->p = v->p;
	head->len = (size_t)(sp - v->p);
	v->len -= head->len + 1;
	v->p = sp + 1;
	return true;
}

static int
parse_rcpt(struct envelope *env, struct view v, char *err, size_t errsize)
{
	struct view notify, orcpt;
	unsigned bits;
	char *addr, *orcpt_s = NULL;

	if (!take_word(&v, &notify) || !take_word(&v, &orcpt))
		return fail(err, errsize, "rcpt: expected 3 fields");
	if (!parse_notify(notify, &bits))
		return fail(err, errsize, "rcpt: bad notify");
	if (!view_eq(orcpt, "-")) {
		/* RFC 3461 4.2: addr-type ";" xtext; xtext has no spaces. */
		if (!valid_token(orcpt) || memchr(orcpt.p, ';', orcpt.len) == NULL)
			return fail(err, errsize, "rcpt: bad orcpt");
	}
	/* The address is the rest of the line: quoted local parts may hold spaces. */
	if (v.len == 0)
		return fail(err, errsize, "rcpt: empty address");
	addr = xstrndup(v.p, v.len);
	if (!view_eq(orcpt, "-"))
		orcpt_s = xstrndup(orcpt.p, orcpt.len);
	envelope_add_rcpt(env, addr, orcpt_s, bits);
	free(addr);
	free(orcpt_s);
	return 0;
}

enum field {
	F_ID, F_ARRIVAL, F_SENDER, F_HELO, F_CLIENT, F_PROTOCOL, F_BODY,
	F_SMTPUTF8, F_RET, F_ENVID, F_SIZE, F_RCPT, F_UNKNOWN
};

static enum field
field_of(struct view key)
{
	static const char *const names[] = { "id", "arrival", "sender", "helo",
		"client", "protocol", "body", "smtputf8", "ret", "envid", "size",
		"rcpt" };

	for (size_t i = 0; i < nitems(names); i++)
		if (view_eq(key, names[i]))
			return (enum field)i;
	return F_UNKNOWN;
}

static char *
dup_view(struct view v)
{
	return xstrndup(v.p, v.len);
}

static int
parse_field(struct envelope *env, enum field f, struct view v, size_t max_rcpts,
    char *err, size_t errsize)
{
	uint64_t n;

	switch (f) {
	case F_ID:
		if (v.len != QUEUE_ID_LEN)
			return fail(err, errsize, "id: bad length");
		for (size_t i = 0; i < v.len; i++)
			if (!is_hex_lower(v.p[i]))
				return fail(err, errsize, "id: not hex");
		memcpy(env->id, v.p, QUEUE_ID_LEN);
		env->id[QUEUE_ID_LEN] = '\0';
		return 0;
	case F_ARRIVAL:
		/* Up to year ~36812: anything larger is corruption. */
		if (!parse_u64(v, (uint64_t)1 << 40, &n))
			return fail(err, errsize, "arrival: bad number");
		env->arrival = (int64_t)n;
		return 0;
	case F_SENDER:
		env->sender = dup_view(v);   /* empty: the null path */
		return 0;
	case F_HELO:
		if (v.len == 0)
			return fail(err, errsize, "helo: empty");
		env->helo = dup_view(v);
		return 0;
	case F_CLIENT:
		if (!valid_token(v))
			return fail(err, errsize, "client: bad value");
		env->client_addr = dup_view(v);
		return 0;
	case F_PROTOCOL:
		if (!valid_token(v))
			return fail(err, errsize, "protocol: bad value");
		env->protocol = dup_view(v);
		return 0;
	case F_BODY:
		if (view_eq(v, "7BIT"))
			env->body = ENVELOPE_BODY_7BIT;
		else if (view_eq(v, "8BITMIME"))
			env->body = ENVELOPE_BODY_8BITMIME;
		else
			return fail(err, errsize, "body: unknown value");
		return 0;
	case F_SMTPUTF8:
		if (!view_eq(v, "1"))
			return fail(err, errsize, "smtputf8: bad value");
		env->smtputf8 = true;
		return 0;
	case F_RET:
		if (view_eq(v, "FULL"))
			env->ret = ENVELOPE_RET_FULL;
		else if (view_eq(v, "HDRS"))
			env->ret = ENVELOPE_RET_HDRS;
		else
			return fail(err, errsize, "ret: unknown value");
		return 0;
	case F_ENVID:
		if (!valid_token(v))
			return fail(err, errsize, "envid: bad value");
		env->envid = dup_view(v);
		return 0;
	case F_SIZE:
		if (!parse_u64(v, UINT64_MAX, &n) || n == 0)
			return fail(err, errsize, "size: bad number");
		env->size_declared = n;
		return 0;
	case F_RCPT:
		if (env->nrcpts >= max_rcpts)
			return fail(err, errsize, "too many recipients");
		return parse_rcpt(env, v, err, errsize);
	case F_UNKNOWN:
		break;
	}
	return fail(err, errsize, "unknown record");
}

int
envelope_parse(struct envelope *env, const char *p, size_t len,
    size_t max_rcpts, char *err, size_t errsize)
{
	unsigned seen = 0;
	size_t off = 0, lineno = 0;
	char tmp[128];

	if (max_rcpts > ENVELOPE_MAX_RCPTS)
		max_rcpts = ENVELOPE_MAX_RCPTS;
	while (off < len) {
		const char *nl = memchr(p + off, '\n', len - off);
		struct view line, key, val;
		enum field f;

		lineno++;
		if (nl == NULL) {
			fail(err, errsize, "line %zu: no final newline", lineno);
			goto bad;
		}
		line.p = p + off;
		line.len = (size_t)(nl - line.p);
		off += line.len + 1;
		/* Key, one space, value: the longest legal line is a rcpt. */
		if (line.len > 3 * ENVELOPE_MAX_FIELD) {
			fail(err, errsize, "line %zu: too long", lineno);
			goto bad;
		}
		if (!valid_text(line.p, line.len)) {
			fail(err, errsize, "line %zu: control character or bad UTF-8",
			    lineno);
			goto bad;
		}
		val = line;
		if (!take_word(&val, &key)) {
			fail(err, errsize, "line %zu: no value", lineno);
			goto bad;
		}
		if (lineno == 1) {
			if (!view_eq(key, "version")) {
				fail(err, errsize, "line 1: version expected");
				goto bad;
			}
			if (!view_eq(val, "1")) {
				fail(err, errsize, "unsupported version");
				goto bad;
			}
			continue;
		}
		f = field_of(key);
		if (f == F_UNKNOWN) {
			fail(err, errsize, "line %zu: unknown record", lineno);
			goto bad;
		}
		if (f != F_RCPT && val.len > ENVELOPE_MAX_FIELD) {
			fail(err, errsize, "line %zu: value too long", lineno);
			goto bad;
		}
		if (f != F_RCPT && (seen & (1u << f))) {
			fail(err, errsize, "line %zu: duplicate record", lineno);
			goto bad;
		}
		seen |= 1u << f;
		if (parse_field(env, f, val, max_rcpts, tmp, sizeof(tmp)) == -1) {
			fail(err, errsize, "line %zu: %s", lineno, tmp);
			goto bad;
		}
		if (f == F_RCPT) {
			struct envelope_rcpt *r = &env->rcpts[env->nrcpts - 1];
			if (strlen(r->addr) > ENVELOPE_MAX_FIELD) {
				fail(err, errsize, "line %zu: address too long", lineno);
				goto bad;
			}
		}
	}
	if (lineno == 0) {
		fail(err, errsize, "empty envelope");
		goto bad;
	}
	if (!(seen & (1u << F_ARRIVAL))) {
		fail(err, errsize, "missing arrival");
		goto bad;
	}
	if (!(seen & (1u << F_SENDER))) {
		fail(err, errsize, "missing sender");
		goto bad;
	}
	if (env->nrcpts == 0) {
		fail(err, errsize, "no recipients");
		goto bad;
	}
	return 0;
bad:
	envelope_clear(env);
	return -1;
}
