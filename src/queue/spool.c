/*
 * spool.c - the on-disk queue (see spool.h and docs/spool-format.md).
 *
 * A queue file is written once, front to back, while the message arrives:
 *
 *     "tern-queue 1 <20-digit message length>\n"   head
 *     envelope text (envelope.h), with its "id" record
 *     "\n"
 *     message octets, exactly as received
 *     journal records, appended during delivery
 *
 * The length in the head is zero while the file sits in incoming/ and is
 * filled in by the commit, before the fdatasync, so the boundary between
 * message and journal is known without scanning the message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "queue/spool.h"
#include "lib/util.h"

#define HEAD_MAGIC "tern-queue "
#define HEAD_LEN_DIGITS 20
/* "tern-queue 1 " + 20 digits + "\n" */
#define HEAD_LINE_LEN (sizeof(HEAD_MAGIC) - 1 + 2 + HEAD_LEN_DIGITS + 1)
#define HEAD_LEN_OFF (HEAD_LINE_LEN - 1 - HEAD_LEN_DIGITS)
/* A journal record never legitimately exceeds this. */
#define JOURNAL_LINE_MAX (SPOOL_MAX_REPLY + 128)

struct spool {
	char *path;
	int dirfd;
	int incoming_fd;
	int queue_fd;
	int corrupt_fd;
	pthread_mutex_t id_mu;           /* last_id: the loop and workers
	                                  * (reports) both make ids */
	uint64_t last_id;
};

struct spool_txn {
	struct spool *sp;
	char id[QUEUE_ID_LEN + 1];
	int fd;
	uint64_t size;
	int error;
};

/* An "A" record, until the outcome record it describes (D, F, T). */
struct staged_attempt {
	bool set;
	char how;
	int64_t when;
	char *mta;
};

struct spool_msg {
	struct spool *sp;
	char id[QUEUE_ID_LEN + 1];
	int fd;
	uint64_t ino;                    /* the queue file's inode */
	void *map;
	size_t maplen;
	struct envelope env;
	const char *body;
	size_t body_len;
	off_t end;                       /* where the next record goes */
	struct spool_rcpt_status *st;    /* env.nrcpts entries */
	struct evbuffer *records;        /* buffered, not yet written */
	bool held;                       /* last H/U record was H */
	int64_t held_since;              /* its time, unix seconds */
	struct staged_attempt *staged;   /* env.nrcpts entries */
};

/* ---- opening ---- */

static int
open_subdir(int dirfd, const char *name, uid_t uid, gid_t gid)
{
	if (mkdirat(dirfd, name, 0700) == 0) {
		if ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
		    fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) == -1)
			return -1;
	} else if (errno != EEXIST) {
		return -1;
	}
	return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

struct spool *
spool_open(const char *dir, uid_t uid, gid_t gid, char *err, size_t errsize)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));
	static const char *const subs[] = { "incoming", "queue", "corrupt" };
	int *fds[] = { &sp->incoming_fd, &sp->queue_fd, &sp->corrupt_fd };

	sp->path = xstrdup(dir);
	pthread_mutex_init(&sp->id_mu, NULL);
	sp->incoming_fd = sp->queue_fd = sp->corrupt_fd = -1;
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd == -1) {
		snprintf(err, errsize, "spool %s: %s", dir, strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < nitems(subs); i++) {
		*fds[i] = open_subdir(sp->dirfd, subs[i], uid, gid);
		if (*fds[i] == -1) {
			snprintf(err, errsize, "spool %s/%s: %s", dir, subs[i],
			    strerror(errno));
			goto fail;
		}
	}
	/* The new subdirectories must survive a crash before the first commit. */
	if (fsync(sp->dirfd) == -1) {
		snprintf(err, errsize, "spool %s: fsync: %s", dir, strerror(errno));
		goto fail;
	}
	return sp;
fail:
	spool_free(&sp);
	return NULL;
}

void
spool_free(struct spool **spp)
{
	struct spool *sp = *spp;

	if (sp == NULL)
		return;
	if (sp->dirfd != -1)
		close(sp->dirfd);
	if (sp->incoming_fd != -1)
		close(sp->incoming_fd);
	if (sp->queue_fd != -1)
		close(sp->queue_fd);
	if (sp->corrupt_fd != -1)
		close(sp->corrupt_fd);
	free(sp->path);
	pthread_mutex_destroy(&sp->id_mu);
	free(sp);
	*spp = NULL;
}

const char *
spool_path(const struct spool *sp)
{
	return sp->path;
}

/* ---- ids ---- */

bool
spool_valid_id(const char *s)
{
	for (size_t i = 0; i < QUEUE_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[QUEUE_ID_LEN] == '\0';
}

static uint64_t
id_value(const char *id)
{
	return strtoull(id, NULL, 16);
}

void
spool_next_id(struct spool *sp, char id[QUEUE_ID_LEN + 1])
{
	uint64_t v = (uint64_t)util_now_us() << 12;

	/* Never repeat, never go backwards, even within one microsecond. */
	pthread_mutex_lock(&sp->id_mu);
	if (v <= sp->last_id)
		v = sp->last_id + 1;
	sp->last_id = v;
	pthread_mutex_unlock(&sp->id_mu);
	snprintf(id, QUEUE_ID_LEN + 1, "%016" PRIx64, v);
}

int64_t
spool_id_time_us(const char *id)
{
	if (!spool_valid_id(id))
		return 0;
	return (int64_t)(id_value(id) >> 12);
}

/* ---- recovery ---- */

static int
for_each_entry(int dirfd, void (*fn)(void *arg, int dirfd, const char *name),
    void *arg)
{
	int fd = dup(dirfd);
	DIR *d;
	struct dirent *de;
	int n = 0;

	if (fd == -1)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	rewinddir(d);
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		fn(arg, dirfd, de->d_name);
		n++;
	}
	if (errno != 0) {
		int saved = errno;
		closedir(d);
		errno = saved;
		return -1;
	}
	closedir(d);
	return n;
}

static void
remove_incoming(void *arg, int dirfd, const char *name)
{
	char q[128];

	if (unlinkat(dirfd, name, 0) == -1)
		log_warn("spool event=recover-failed file=incoming/%s error=\"%s\"",
		    log_quote(q, sizeof(q), name, strlen(name), 64),
		    strerror(errno));
	else
		log_info("spool event=recover-removed file=incoming/%s",
		    log_quote(q, sizeof(q), name, strlen(name), 64));
}

int
spool_recover_incoming(struct spool *sp)
{
	int n = for_each_entry(sp->incoming_fd, remove_incoming, NULL);

	if (n > 0)
		(void)fsync(sp->incoming_fd);
	return n;
}

struct scan_ctx {
	struct spool *sp;
	void (*cb)(void *arg, const char *id);
	void *arg;
	int count;
};

static void
scan_one(void *arg, int dirfd, const char *name)
{
	struct scan_ctx *c = arg;
	char q[128];
	uint64_t v;

	if (!spool_valid_id(name)) {
		log_warn("spool event=scan-skipped file=queue/%s reason=\"not a queue id\"",
		    log_quote(q, sizeof(q), name, strlen(name), 64));
		return;
	}
	v = id_value(name);
	pthread_mutex_lock(&c->sp->id_mu);
	if (v > c->sp->last_id)
		c->sp->last_id = v;
	pthread_mutex_unlock(&c->sp->id_mu);
	c->count++;
	c->cb(c->arg, name);
}

int
spool_scan(struct spool *sp, void (*cb)(void *arg, const char *id), void *arg)
{
	struct scan_ctx c = { sp, cb, arg, 0 };

	if (for_each_entry(sp->queue_fd, scan_one, &c) == -1)
		return -1;
	return c.count;
}

/* ---- receiving ---- */

struct spool_txn *
spool_txn_begin(struct spool *sp, struct envelope *env)
{
	struct spool_txn *t;
	struct evbuffer *head;
	int saved;

	t = xcalloc(1, sizeof(*t));
	t->sp = sp;
	t->fd = -1;
	/* O_EXCL: two transactions can never share a file, whatever the clock. */
	for (int tries = 0; tries < 8; tries++) {
		spool_next_id(sp, t->id);
		t->fd = openat(sp->incoming_fd, t->id,
		    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (t->fd != -1 || errno != EEXIST)
			break;
	}
	if (t->fd == -1)
		goto fail;
	util_strlcpy(env->id, t->id, sizeof(env->id));
	head = evbuffer_new();
	if (head == NULL)
		fatal("out of memory");
	evbuffer_add_printf(head, "%s%d %0*d\n", HEAD_MAGIC, SPOOL_VERSION,
	    HEAD_LEN_DIGITS, 0);
	envelope_serialize(env, head);
	evbuffer_add(head, "\n", 1);
	if (evbuffer_get_length(head) > SPOOL_MAX_HEAD) {
		evbuffer_free(head);
		errno = EMSGSIZE;
		goto fail_unlink;
	}
	if (util_write_all(t->fd, evbuffer_pullup(head, -1),
	    evbuffer_get_length(head)) == -1) {
		saved = errno;
		evbuffer_free(head);
		errno = saved;
		goto fail_unlink;
	}
	evbuffer_free(head);
	return t;
fail_unlink:
	saved = errno;
	close(t->fd);
	(void)unlinkat(sp->incoming_fd, t->id, 0);
	errno = saved;
fail:
	saved = errno;
	env->id[0] = '\0';
	free(t);
	errno = saved;
	return NULL;
}

int
spool_txn_write(struct spool_txn *t, const void *p, size_t len)
{
	if (util_write_all(t->fd, p, len) == -1)
		return -1;
	t->size += len;
	return 0;
}

const char *
spool_txn_id(const struct spool_txn *t)
{
	return t->id;
}

uint64_t
spool_txn_size(const struct spool_txn *t)
{
	return t->size;
}

int
spool_txn_error(const struct spool_txn *t)
{
	return t->error;
}

void
spool_txn_abort(struct spool_txn **tp)
{
	struct spool_txn *t = *tp;

	if (t == NULL)
		return;
	if (t->fd != -1) {
		close(t->fd);
		(void)unlinkat(t->sp->incoming_fd, t->id, 0);
	}
	free(t);
	*tp = NULL;
}

void
spool_txn_free(struct spool_txn **tp)
{
	struct spool_txn *t = *tp;

	if (t == NULL)
		return;
	if (t->fd != -1)
		close(t->fd);
	free(t);
	*tp = NULL;
}

/* Move incoming/<id> to queue/<id>, refusing to replace an existing file. */
static int
rename_noreplace(struct spool *sp, const char *id)
{
	if (renameat2(sp->incoming_fd, id, sp->queue_fd, id,
	    RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* File systems without RENAME_NOREPLACE: link fails with EEXIST. */
	if (linkat(sp->incoming_fd, id, sp->queue_fd, id, 0) == -1)
		return -1;
	(void)unlinkat(sp->incoming_fd, id, 0);
	return 0;
}

static void
txn_fail(struct spool_txn *t, int err)
{
	t->error = err;
	close(t->fd);
	t->fd = -1;
	(void)unlinkat(t->sp->incoming_fd, t->id, 0);
}

void
spool_commit_batch(struct spool *sp, struct spool_txn *const *txns, size_t n)
{
	size_t renamed = 0;

	for (size_t i = 0; i < n; i++) {
		struct spool_txn *t = txns[i];
		char len[HEAD_LEN_DIGITS + 1];

		ASSERT(t->sp == sp && t->fd != -1);
		t->error = 0;
		snprintf(len, sizeof(len), "%0*" PRIu64, HEAD_LEN_DIGITS, t->size);
		if (pwrite(t->fd, len, HEAD_LEN_DIGITS, (off_t)HEAD_LEN_OFF) !=
		    HEAD_LEN_DIGITS) {
			txn_fail(t, errno ? errno : EIO);
			continue;
		}
		/* Queue write-back for every file before waiting on any. */
		(void)sync_file_range(t->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	for (size_t i = 0; i < n; i++) {
		struct spool_txn *t = txns[i];

		if (t->fd == -1)
			continue;
		if (fdatasync(t->fd) == -1)
			txn_fail(t, errno);
	}
	for (size_t i = 0; i < n; i++) {
		struct spool_txn *t = txns[i];

		if (t->fd == -1)
			continue;
		if (rename_noreplace(sp, t->id) == -1) {
			txn_fail(t, errno);
			continue;
		}
		renamed++;
	}
	/* One directory fsync makes every rename of the batch durable. */
	if (renamed > 0 && fsync(sp->queue_fd) == -1) {
		int err = errno;

		for (size_t i = 0; i < n; i++) {
			struct spool_txn *t = txns[i];

			if (t->fd == -1)
				continue;
			/* Not durable, so not acknowledged: take it back. */
			(void)unlinkat(sp->queue_fd, t->id, 0);
			t->error = err;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (txns[i]->fd != -1) {
			close(txns[i]->fd);
			txns[i]->fd = -1;
		}
	}
}

int
spool_unlink_committed(struct spool *sp, const char *id)
{
	return unlinkat(sp->queue_fd, id, 0);
}

int
spool_quarantine(struct spool *sp, const char *id)
{
	if (renameat(sp->queue_fd, id, sp->corrupt_fd, id) == -1)
		return -1;
	(void)fsync(sp->corrupt_fd);
	(void)fsync(sp->queue_fd);
	return 0;
}

/* ---- delivering ---- */

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
static int
msg_parse(struct spool_msg *m, const char *base, size_t len, size_t *keep,
    char *err, size_t errsize)
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
	if (base[sizeof(HEAD_MAGIC) - 1] != '0' + SPOOL_VERSION ||
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
static struct spool_msg *
msg_new(struct spool *sp, const char *id, char *err, size_t errsize)
{
	struct spool_msg *m;

	if (!spool_valid_id(id)) {
		snprintf(err, errsize, "bad queue id");
		errno = EINVAL;
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->sp = sp;
	m->fd = -1;
	m->map = MAP_FAILED;
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
	struct spool_msg *m = msg_new(NULL, id, err, errsize);
	size_t k;

	if (m == NULL)
		return NULL;
	if (msg_parse(m, p, len, &k, err, errsize) == -1) {
		spool_msg_close(&m);
		errno = EBADMSG;
		return NULL;
	}
	m->end = (off_t)k;
	if (keep != NULL)
		*keep = k;
	return m;
}

struct spool_msg *
spool_msg_load(struct spool *sp, const char *id, char *err, size_t errsize)
{
	struct spool_msg *m;
	struct stat st;
	size_t keep;
	int saved;

	if ((m = msg_new(sp, id, err, errsize)) == NULL)
		return NULL;
	m->fd = openat(sp->queue_fd, id, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (m->fd == -1) {
		snprintf(err, errsize, "open: %s", strerror(errno));
		goto fail;
	}
	if (fstat(m->fd, &st) == -1) {
		snprintf(err, errsize, "fstat: %s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)HEAD_LINE_LEN) {
		corrupt(err, errsize, "not a queue file");
		goto fail;
	}
	m->ino = (uint64_t)st.st_ino;
	m->maplen = (size_t)st.st_size;
	m->map = mmap(NULL, m->maplen, PROT_READ, MAP_SHARED, m->fd, 0);
	if (m->map == MAP_FAILED) {
		snprintf(err, errsize, "mmap: %s", strerror(errno));
		goto fail;
	}
	if (msg_parse(m, m->map, m->maplen, &keep, err, errsize) == -1)
		goto fail;
	if (keep < m->maplen && ftruncate(m->fd, (off_t)keep) == -1) {
		snprintf(err, errsize, "ftruncate: %s", strerror(errno));
		goto fail;
	}
	m->end = (off_t)keep;
	return m;
fail:
	saved = errno;
	spool_msg_close(&m);
	errno = saved;
	return NULL;
}

void
spool_msg_close(struct spool_msg **mp)
{
	struct spool_msg *m = *mp;

	if (m == NULL)
		return;
	if (m->map != MAP_FAILED)
		munmap(m->map, m->maplen);
	if (m->fd != -1)
		close(m->fd);
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
spool_msg_inode(const struct spool_msg *m)
{
	return m->ino;
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

int
spool_msg_flush(struct spool_msg *m)
{
	size_t len = evbuffer_get_length(m->records);
	const char *p;
	size_t off = 0;

	if (len == 0)
		return 0;
	p = (const char *)evbuffer_pullup(m->records, -1);
	while (off < len) {
		ssize_t w = pwrite(m->fd, p + off, len - off, m->end + (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)w;
	}
	if (fdatasync(m->fd) == -1)
		goto fail;
	m->end += (off_t)len;
	evbuffer_drain(m->records, len);
	return 0;
fail:
	{
		/* Leave no torn record behind for the next append. */
		int saved = errno;
		if (ftruncate(m->fd, m->end) == -1)
			log_warn("queue id=%s event=journal-truncate-failed error=\"%s\"",
			    m->id, strerror(errno));
		evbuffer_drain(m->records, len);
		errno = saved;
	}
	return -1;
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

int
spool_msg_remove(struct spool_msg *m)
{
	return unlinkat(m->sp->queue_fd, m->id, 0);
}
