/*
 * spool_msg.c - a message as the queue holds it while it works on it: the
 * image parsed (head, envelope, body), the journal replayed into
 * per-recipient state, and new outcome records buffered until
 * spool_msg_flush() (spool.c) makes them durable. The image and journal
 * formats are in docs/spool-format.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/spool.h"
#include "queue/spool_int.h"

static int
corrupt(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
corrupt(char *err, size_t errsize, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errsize, fmt, ap);
	va_end(ap);
	errno = EBADMSG;
	return -1;
}

/* Decimal field of a journal record; false unless all digits and <= max. */
static bool
rec_number(const char **p, const char *end, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;
	const char *s = *p;

	if (s == end || *s < '0' || *s > '9')
		return false;
	while (s < end && *s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s - '0');
		if (n > (max - d) / 10)
			return false;
		n = n * 10 + d;
		s++;
	}
	*p = s;
	*out = n;
	return true;
}

static void
set_reply(struct spool_rcpt_status *st, const char *p, size_t len)
{
	free(st->reply);
	st->reply = xstrndup(p, len);
}

/* The outcome of i is being recorded: it takes the staged A record. */
static void
take_attempt(struct spool_msg *m, size_t i)
{
	struct spool_rcpt_status *st = &m->st[i];
	struct staged_attempt *a = &m->staged[i];

	free(st->mta);
	st->how = a->set ? a->how : 0;
	st->last_attempt = a->set ? a->when : 0;
	st->mta = a->set ? a->mta : NULL;
	a->mta = NULL;
	a->set = false;
}

/* A server name worth keeping: printable ASCII, no space, not "-". */
static bool
mta_token(const char *p, size_t n)
{
	if (n == 0 || n > 255 || (n == 1 && p[0] == '-'))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			return false;
	return true;
}

static void
stage_attempt(struct spool_msg *m, size_t i, int64_t when, char how,
    const char *mta, size_t mlen)
{
	struct staged_attempt *a = &m->staged[i];

	free(a->mta);
	a->set = true;
	a->how = how;
	a->when = when;
	a->mta = (how == 's' || how == 'd') && mta != NULL &&
	    mta_token(mta, mlen) ? xstrndup(mta, mlen) : NULL;
}

/*
 * Apply one journal record (p, end) without its newline. Records that do
 * not parse are skipped with a warning: the journal is advisory beyond
 * "which recipients are finished", and refusing the whole message over
 * one bad line would lose the rest.
 */
static void
replay_record(struct spool_msg *m, const char *p, const char *end)
{
	char kind;
	uint64_t idx, next = 0, attempts = 0;
	struct spool_rcpt_status *st;

	if (end - p < 3 || p[1] != ' ')
		goto bad;
	kind = p[0];
	p += 2;
	/* "H <time>" / "U <time>": held by the administrator, released. */
	if (kind == 'H' || kind == 'U') {
		if (!rec_number(&p, end, (uint64_t)1 << 40, &next) || p != end)
			goto bad;
		m->held = kind == 'H';
		m->held_since = m->held ? (int64_t)next : 0;
		return;
	}
	if (!rec_number(&p, end, m->env.nrcpts, &idx) || idx >= m->env.nrcpts)
		goto bad;
	st = &m->st[idx];
	/* "W <i>": the sender was warned that i is delayed (docs/dsn.md) */
	if (kind == 'W') {
		if (p != end)
			goto bad;
		st->warned = true;
		return;
	}
	/* "R <i>": the report on i's final outcome is spooled */
	if (kind == 'R') {
		if (p != end)
			goto bad;
		st->reported = true;
		return;
	}
	/* "A <i> <when> <how> <mta>": who decides the next outcome of i */
	if (kind == 'A') {
		char how;

		if (p == end || *p++ != ' ' ||
		    !rec_number(&p, end, (uint64_t)1 << 40, &next) ||
		    end - p < 4 || p[0] != ' ' || p[2] != ' ' ||
		    (p[1] != '-' && p[1] != 'l' && p[1] != 's' && p[1] != 'd'))
			goto bad;
		how = p[1];
		p += 3;
		stage_attempt(m, idx, (int64_t)next, how, p, (size_t)(end - p));
		return;
	}
	if (st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED)
		return;   /* final states are final */
	switch (kind) {
	case 'D':
		if (p != end)
			goto bad;
		st->state = SPOOL_RCPT_DELIVERED;
		take_attempt(m, idx);
		return;
	case 'F':
		if (p == end || *p++ != ' ')
			goto bad;
		st->state = SPOOL_RCPT_FAILED;
		set_reply(st, p, (size_t)(end - p));
		take_attempt(m, idx);
		return;
	case 'T':
		if (p == end || *p++ != ' ' ||
		    !rec_number(&p, end, (uint64_t)1 << 40, &next) ||
		    p == end || *p++ != ' ' ||
		    !rec_number(&p, end, 1000000, &attempts) ||
		    p == end || *p++ != ' ')
			goto bad;
		st->state = SPOOL_RCPT_DEFERRED;
		st->next_attempt = (int64_t)next;
		st->attempts = (unsigned)attempts;
		set_reply(st, p, (size_t)(end - p));
		take_attempt(m, idx);
		return;
	default:
		break;
	}
bad:
	log_warn("queue id=%s event=journal-skipped reason=\"malformed record\"",
	    m->id);
}

/*
 * Parse the image (base, len) of queue file m->id into m: head, envelope,
 * message bounds, journal. *keep gets the length without a torn last
 * record. -1 (errno EBADMSG, reason in err) if it is corrupt.
 */
int
spool_msg_parse_into(struct spool_msg *m, const char *base, size_t len,
    size_t *keep, char *err, size_t errsize)
{
	const char *hend, *sep, *j, *jend;
	uint64_t body_len = 0;
	size_t limit;
	char perr[256];

	if (len < HEAD_LINE_LEN)
		return corrupt(err, errsize, "not a queue file");
	/* Head line: magic, version, fixed-width message length. */
	if (memcmp(base, HEAD_MAGIC, sizeof(HEAD_MAGIC) - 1) != 0)
		return corrupt(err, errsize, "bad magic");
	if (base[sizeof(HEAD_MAGIC) - 1] != '0' + IMAGE_VERSION ||
	    base[sizeof(HEAD_MAGIC)] != ' ')
		return corrupt(err, errsize, "unsupported queue file version");
	for (size_t i = HEAD_LEN_OFF; i < HEAD_LEN_OFF + HEAD_LEN_DIGITS; i++) {
		if (base[i] < '0' || base[i] > '9')
			return corrupt(err, errsize, "bad length field");
		if (body_len > (UINT64_MAX - 9) / 10)
			return corrupt(err, errsize, "bad length field");
		body_len = body_len * 10 + (uint64_t)(base[i] - '0');
	}
	if (base[HEAD_LINE_LEN - 1] != '\n')
		return corrupt(err, errsize, "bad head line");
	/* Envelope: up to the first empty line (values never hold LF). */
	hend = base + HEAD_LINE_LEN;
	limit = len - HEAD_LINE_LEN;
	if (limit > SPOOL_MAX_HEAD)
		limit = SPOOL_MAX_HEAD;
	sep = memmem(hend, limit, "\n\n", 2);
	if (sep == NULL)
		return corrupt(err, errsize, "no end of envelope");
	if (envelope_parse(&m->env, hend, (size_t)(sep + 1 - hend),
	    ENVELOPE_MAX_RCPTS, perr, sizeof(perr)) == -1)
		return corrupt(err, errsize, "envelope: %s", perr);
	if (strcmp(m->env.id, m->id) != 0)
		return corrupt(err, errsize, "envelope id does not match file name");
	m->body = sep + 2;
	if (body_len > (uint64_t)(base + len - m->body))
		return corrupt(err, errsize, "file shorter than its message");
	m->body_len = (size_t)body_len;
	m->st = xcalloc(m->env.nrcpts, sizeof(*m->st));
	m->staged = xcalloc(m->env.nrcpts, sizeof(*m->staged));

	/* Journal replay. A last record without its newline is torn: cut it. */
	j = m->body + m->body_len;
	jend = base + len;
	while (j < jend) {
		const char *nl = memchr(j, '\n', (size_t)(jend - j));

		if (nl == NULL) {
			log_warn("queue id=%s event=journal-torn offset=%zu",
			    m->id, (size_t)(j - base));
			jend = j;
			break;
		}
		if (nl - j > JOURNAL_LINE_MAX)
			log_warn("queue id=%s event=journal-skipped reason=\"record too long\"",
			    m->id);
		else
			replay_record(m, j, nl);
		j = nl + 1;
	}
	*keep = (size_t)(jend - base);
	return 0;
}

/* An empty message for queue id id; NULL (errno EINVAL) if id is none. */
struct spool_msg *
spool_msg_new(struct spool *sp, const char *id, char *err, size_t errsize)
{
	struct spool_msg *m;

	if (!spool_valid_id(id)) {
		snprintf(err, errsize, "bad queue id");
		errno = EINVAL;
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->sp = sp;
	envelope_init(&m->env);
	util_strlcpy(m->id, id, sizeof(m->id));
	m->records = evbuffer_new();
	if (m->records == NULL)
		fatal("out of memory");
	return m;
}

struct spool_msg *
spool_msg_parse(const char *id, const char *p, size_t len, size_t *keep,
    char *err, size_t errsize)
{
	struct spool_msg *m = spool_msg_new(NULL, id, err, errsize);
	size_t k;

	if (m == NULL)
		return NULL;
	if (spool_msg_parse_into(m, p, len, &k, err, errsize) == -1) {
		spool_msg_close(&m);
		errno = EBADMSG;
		return NULL;
	}
	if (keep != NULL)
		*keep = k;
	return m;
}

void
spool_msg_close(struct spool_msg **mp)
{
	struct spool_msg *m = *mp;

	if (m == NULL)
		return;
	free(m->image);
	if (m->st != NULL)
		for (size_t i = 0; i < m->env.nrcpts; i++) {
			free(m->st[i].reply);
			free(m->st[i].mta);
		}
	free(m->st);
	if (m->staged != NULL)
		for (size_t i = 0; i < m->env.nrcpts; i++)
			free(m->staged[i].mta);
	free(m->staged);
	if (m->records != NULL)
		evbuffer_free(m->records);
	envelope_clear(&m->env);
	free(m);
	*mp = NULL;
}

const char *
spool_msg_id(const struct spool_msg *m)
{
	return m->id;
}

uint64_t
spool_msg_tag(const struct spool_msg *m)
{
	return m->tag;
}

const struct envelope *
spool_msg_envelope(const struct spool_msg *m)
{
	return &m->env;
}

const char *
spool_msg_body(const struct spool_msg *m, size_t *len)
{
	*len = m->body_len;
	return m->body;
}

const struct spool_rcpt_status *
spool_msg_rcpt(const struct spool_msg *m, size_t i)
{
	ASSERT(i < m->env.nrcpts);
	return &m->st[i];
}

/* Reply text safe for one journal line: no control bytes, bounded. */
static char *
clean_reply(const char *reply)
{
	size_t n = strnlen(reply, SPOOL_MAX_REPLY);
	char *s = xstrndup(reply, n);

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			s[i] = '?';
	return s;
}

void
spool_msg_delivered(struct spool_msg *m, size_t i)
{
	ASSERT(i < m->env.nrcpts);
	m->st[i].state = SPOOL_RCPT_DELIVERED;
	take_attempt(m, i);
	evbuffer_add_printf(m->records, "D %zu\n", i);
}

void
spool_msg_failed(struct spool_msg *m, size_t i, const char *reply)
{
	char *r = clean_reply(reply);

	ASSERT(i < m->env.nrcpts);
	m->st[i].state = SPOOL_RCPT_FAILED;
	take_attempt(m, i);
	evbuffer_add_printf(m->records, "F %zu %s\n", i, r);
	free(m->st[i].reply);
	m->st[i].reply = r;
}

void
spool_msg_deferred(struct spool_msg *m, size_t i, int64_t next_attempt,
    const char *reply)
{
	char *r = clean_reply(reply);
	struct spool_rcpt_status *st = &m->st[i];

	ASSERT(i < m->env.nrcpts);
	if (next_attempt < 0)
		next_attempt = 0;
	st->state = SPOOL_RCPT_DEFERRED;
	st->attempts++;
	st->next_attempt = next_attempt;
	take_attempt(m, i);
	evbuffer_add_printf(m->records, "T %zu %" PRId64 " %u %s\n", i,
	    next_attempt, st->attempts, r);
	free(st->reply);
	st->reply = r;
}

void
spool_msg_warned(struct spool_msg *m, size_t i)
{
	ASSERT(i < m->env.nrcpts);
	m->st[i].warned = true;
	evbuffer_add_printf(m->records, "W %zu\n", i);
}

void
spool_msg_reported(struct spool_msg *m, size_t i)
{
	ASSERT(i < m->env.nrcpts);
	m->st[i].reported = true;
	evbuffer_add_printf(m->records, "R %zu\n", i);
}

void
spool_msg_attempt(struct spool_msg *m, size_t i, int64_t when, char how,
    const char *mta)
{
	const char *keep;

	ASSERT(i < m->env.nrcpts);
	ASSERT(how == '-' || how == 'l' || how == 's' || how == 'd');
	if (when < 0)
		when = 0;
	stage_attempt(m, i, when, how, mta, mta != NULL ? strlen(mta) : 0);
	keep = m->staged[i].mta;
	evbuffer_add_printf(m->records, "A %zu %" PRId64 " %c %s\n", i, when,
	    how, keep != NULL ? keep : "-");
}

void
spool_msg_set_held(struct spool_msg *m, bool held, int64_t now)
{
	if (now < 0)
		now = 0;
	m->held = held;
	m->held_since = held ? now : 0;
	evbuffer_add_printf(m->records, "%c %" PRId64 "\n", held ? 'H' : 'U',
	    now);
}

bool
spool_msg_held(const struct spool_msg *m, int64_t *since)
{
	if (since != NULL)
		*since = m->held_since;
	return m->held;
}

bool
spool_msg_done(const struct spool_msg *m)
{
	for (size_t i = 0; i < m->env.nrcpts; i++)
		if (m->st[i].state != SPOOL_RCPT_DELIVERED &&
		    m->st[i].state != SPOOL_RCPT_FAILED)
			return false;
	return true;
}

