/*
 * spool.c - the on-disk queue, format 2 (see spool.h and
 * docs/spool-format.md): messages and their journals are records in the
 * segment log (seglog.c), indexed in memory (spool_index.c).
 *
 * Commits from any thread share one fdatasync: a caller adds its records
 * to the pending group under the lock and waits; whoever finds no commit
 * running leads one for everything pending, then applies every record it
 * made durable to the index, drops the segments nothing needs any more,
 * and wakes the others. Only the leader touches the log's tail, so
 * dropping a segment never races with filling one.
 *
 * A body larger than spool_inline_max goes to big/<id>, synced before
 * the MSG record that names it is written; everything else is in the log.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/seglog.h"
#include "queue/spool.h"
#include "queue/spool_index.h"
#include "queue/spool_int.h"

/* MSG payload: tag (8), flags (8), then the image. */
#define MSG_PREFIX 16
#define MSG_BIG 1u
/* Segments dropped per commit at most (the rest at the next one). */
#define DROP_MAX 64
/* Copy forward: a sealed segment whose live messages take less than
 * 1/COPY_DIV of it; at most COPY_MAX of them, COPY_BYTES, per commit. */
#define COPY_DIV 4
#define COPY_MAX 256
#define COPY_BYTES (8u * 1024 * 1024)

struct waiter {
	struct waiter *next;
	size_t first, count;    /* its records in the group */
	bool new_mail;          /* some of them are MSG (need free space) */
	bool lazy;              /* need not be synced (DONE) */
	bool reserved;          /* written in the reserve after an ENOSPC */
	bool done;
	int err;
};

struct spool {
	char *path;
	int dirfd;
	int corrupt_fd;
	int big_fd;
	size_t inline_max;
	pthread_mutex_t id_mu;           /* last_id: the loop and workers
	                                  * (reports) both make ids */
	uint64_t last_id;
	struct seglog *log;
	/* The index and the commit queue. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct spool_index *index;
	struct seglog_group *pending, *spare;
	struct waiter *waiters;          /* of the pending group */
	bool writing;                    /* a leader is committing */
};

struct spool_txn {
	struct spool *sp;
	char id[QUEUE_ID_LEN + 1];
	struct evbuffer *buf;            /* head, envelope, inline body */
	size_t head_len;
	int big;                         /* big/<id>, or -1 */
	uint64_t size;
	int error;
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

	sp->path = xstrdup(dir);
	sp->inline_max = SPOOL_INLINE_MAX;
	pthread_mutex_init(&sp->id_mu, NULL);
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cv, NULL);
	sp->index = spool_index_new();
	sp->pending = seglog_group_new();
	sp->corrupt_fd = sp->big_fd = -1;
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd == -1) {
		snprintf(err, errsize, "spool %s: %s", dir, strerror(errno));
		goto fail;
	}
	if ((sp->corrupt_fd = open_subdir(sp->dirfd, "corrupt", uid, gid)) == -1 ||
	    (sp->big_fd = open_subdir(sp->dirfd, "big", uid, gid)) == -1) {
		snprintf(err, errsize, "spool %s: %s", dir, strerror(errno));
		goto fail;
	}
	sp->log = seglog_open(sp->dirfd, SPOOL_SEGMENT_SIZE, uid, gid, err,
	    errsize);
	if (sp->log == NULL)
		goto fail;
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
	seglog_free(&sp->log);
	if (sp->dirfd != -1)
		close(sp->dirfd);
	if (sp->corrupt_fd != -1)
		close(sp->corrupt_fd);
	if (sp->big_fd != -1)
		close(sp->big_fd);
	spool_index_free(&sp->index);
	seglog_group_free(&sp->pending);
	seglog_group_free(&sp->spare);
	free(sp->path);
	pthread_mutex_destroy(&sp->id_mu);
	pthread_mutex_destroy(&sp->mu);
	pthread_cond_destroy(&sp->cv);
	free(sp);
	*spp = NULL;
}

const char *
spool_path(const struct spool *sp)
{
	return sp->path;
}

int
spool_set_segment_size(struct spool *sp, uint64_t n)
{
	return seglog_set_segment_size(sp->log, n);
}

void
spool_set_inline_max(struct spool *sp, size_t n)
{
	sp->inline_max = n < SPOOL_INLINE_MAX_LIMIT ? n : SPOOL_INLINE_MAX_LIMIT;
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

static void
id_text(uint64_t v, char id[QUEUE_ID_LEN + 1])
{
	snprintf(id, QUEUE_ID_LEN + 1, "%016" PRIx64, v);
}

static void
id_seen(struct spool *sp, uint64_t v)
{
	pthread_mutex_lock(&sp->id_mu);
	if (v > sp->last_id)
		sp->last_id = v;
	pthread_mutex_unlock(&sp->id_mu);
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
	id_text(v, id);
}

int64_t
spool_id_time_us(const char *id)
{
	if (!spool_valid_id(id))
		return 0;
	return (int64_t)(id_value(id) >> 12);
}

/* ---- commit groups ---- */

/*
 * The group failed for want of space: commit again, in the segment's
 * reserve, the records of the waiters that only record progress
 * (journal, DONE), so that deliveries are recorded and finished messages
 * free their segments: a full spool drains instead of locking up. New
 * mail keeps its 4xx. Returns the group written, or NULL.
 */
static struct seglog_group *
commit_reserved(struct spool *sp, struct seglog_group *g, struct waiter *ws)
{
	struct seglog_group *g2 = seglog_group_new();

	for (struct waiter *w = ws; w != NULL; w = w->next) {
		if (w->new_mail)
			continue;
		for (size_t i = w->first; i < w->first + w->count; i++) {
			struct seglog_rec r;
			struct iovec iov;

			seglog_group_rec(g, i, &r);
			iov.iov_base = (void *)r.payload;
			iov.iov_len = r.len;
			if (seglog_group_add(g2, r.type, r.id, &iov, 1) == -1)
				goto fail;
		}
		w->reserved = true;
	}
	if (seglog_group_count(g2) > 0 &&
	    seglog_commit(sp->log, g2, SEGLOG_RESERVE) == 0)
		return g2;
fail:
	for (struct waiter *w = ws; w != NULL; w = w->next)
		w->reserved = false;
	seglog_group_free(&g2);
	return NULL;
}

/*
 * Copy forward (under mu, as the leader): the live messages of the oldest
 * sealed segment that is mostly finished get a new MSG record (the same
 * payload: tag and flags kept) and a SNAP with their whole journal, so
 * the old segment can go; one deferred message must not keep 64 MiB. Its
 * SNAP is taken from the index under the same lock that applies every
 * record, and records not applied yet are written after it: nothing of
 * the journal is lost. NULL if there is nothing to copy.
 */
static struct seglog_group *
copy_forward_prepare(struct spool *sp)
{
	struct spool_entry *es[COPY_MAX];
	struct seglog_group *cf;
	uint64_t seg, active = seglog_active(sp->log);
	size_t n, bytes = 0;

	/* Not the segment sealed last: its messages are mostly still in
	 * their first delivery and about to finish. */
	if (active < 3 || !spool_index_sparse(sp->index, active - 1,
	    seglog_segment_size(sp->log) / COPY_DIV, &seg))
		return NULL;
	n = spool_index_in_segment(sp->index, seg, es, COPY_MAX);
	cf = seglog_group_new();
	for (size_t i = 0; i < n && bytes < COPY_BYTES; i++) {
		struct spool_entry *e = es[i];
		char *payload = xcalloc(1, e->msglen + 1);
		struct iovec iov = { payload, e->msglen };
		struct iovec jiov = { e->jrn, e->jlen };
		size_t mark = seglog_group_count(cf);

		if (seglog_read(sp->log, e->msg, payload, e->msglen) == -1 ||
		    seglog_group_add(cf, SEGLOG_MSG, e->key, &iov, 1) == -1 ||
		    seglog_group_add(cf, SEGLOG_SNAP, e->key, &jiov, 1) == -1) {
			/* this one stays (too large a journal, full group):
			 * the others still go */
			seglog_group_truncate(cf, mark);
			free(payload);
			continue;
		}
		bytes += e->msglen + e->jlen;
		free(payload);
	}
	if (seglog_group_count(cf) == 0)
		seglog_group_free(&cf);
	else
		log_info("queue event=spool-copy-forward segment=%016" PRIx64
		    " messages=%zu", seg, seglog_group_count(cf) / 2);
	return cf;
}

/* Lead one commit of everything pending; called and returns with mu
 * held, and with writing false. */
static void
lead(struct spool *sp)
{
	struct seglog_group *g = sp->pending, *done = NULL, *cf;
	struct waiter *ws = sp->waiters;
	uint64_t drop[DROP_MAX];
	size_t ndrop;
	int err = 0;

	sp->pending = sp->spare != NULL ? sp->spare : seglog_group_new();
	sp->spare = NULL;
	sp->waiters = NULL;
	sp->writing = true;
	pthread_mutex_unlock(&sp->mu);
	bool lazy = true;

	for (struct waiter *w = ws; w != NULL; w = w->next)
		lazy = lazy && w->lazy;
	bool synced;

	if (seglog_commit(sp->log, g, lazy ? SEGLOG_NOSYNC : 0) == 0)
		done = g;
	else if ((err = errno) == ENOSPC)
		done = commit_reserved(sp, g, ws);
	/* every byte before the active segment's tail is on disk now */
	synced = !lazy && done != NULL;
	pthread_mutex_lock(&sp->mu);
	for (size_t i = 0; done != NULL && i < seglog_group_count(done); i++) {
		struct seglog_rec r;

		seglog_group_rec(done, i, &r);
		spool_index_apply(sp->index, &r);
	}
	/* Its own sync: the old segment is dropped (for good) only after
	 * the copies are durable. Not after a commit without a sync: its
	 * DONE records may not be on disk yet, and nothing they freed may
	 * go before they are (the next synced commit drops it). */
	if (!lazy && (cf = copy_forward_prepare(sp)) != NULL) {
		int rc;

		pthread_mutex_unlock(&sp->mu);
		rc = seglog_commit(sp->log, cf, 0);
		pthread_mutex_lock(&sp->mu);
		for (size_t i = 0; rc == 0 && i < seglog_group_count(cf); i++) {
			struct seglog_rec r;

			seglog_group_rec(cf, i, &r);
			spool_index_apply(sp->index, &r);
		}
		synced = synced || rc == 0;
		seglog_group_free(&cf);
	}
	/* Only sealed segments: the active one is still being filled. And
	 * only after a sync: the DONE records that freed them are on disk. */
	ndrop = !synced ? 0 : spool_index_unused(sp->index,
	    seglog_active(sp->log) ? seglog_active(sp->log) : UINT64_MAX, drop,
	    DROP_MAX);
	pthread_mutex_unlock(&sp->mu);
	for (size_t i = 0; i < ndrop; i++)
		if (seglog_drop(sp->log, drop[i]) == -1 && errno != ENOENT)
			log_warn("queue event=spool-drop-failed segment=%016"
			    PRIx64 " error=\"%s\"", drop[i], strerror(errno));
	if (done != NULL && done != g)
		seglog_group_free(&done);
	pthread_mutex_lock(&sp->mu);
	for (struct waiter *w = ws; w != NULL; w = w->next) {
		w->done = true;
		w->err = done == g || w->reserved ? 0 : err;
	}
	seglog_group_reset(g);
	sp->spare = g;
	sp->writing = false;
	pthread_cond_broadcast(&sp->cv);
}

struct rec_in {
	enum seglog_type type;
	uint64_t id;
	const struct iovec *iov;
	int iovcnt;
};

/*
 * Make records durable, in order, in one commit group (shared with other
 * threads' records). 0 once they are; -1 with errno if not (then none of
 * them counts).
 */
static int
log_commit(struct spool *sp, const struct rec_in *recs, size_t n, bool lazy)
{
	struct waiter w = { 0 };

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		/* all of a caller's records go in one group */
		size_t mark = seglog_group_count(sp->pending), k;
		int e;

		for (k = 0; k < n; k++)
			if (seglog_group_add(sp->pending, recs[k].type, recs[k].id,
			    recs[k].iov, recs[k].iovcnt) == -1)
				break;
		if (k == n)
			break;
		e = errno;
		seglog_group_truncate(sp->pending, mark);
		if (e != ENOBUFS || mark == 0) {
			pthread_mutex_unlock(&sp->mu);
			errno = e == ENOBUFS ? EMSGSIZE : e;
			return -1;
		}
		/* the group is full: let it go first, then try again */
		if (!sp->writing)
			lead(sp);
		else
			pthread_cond_wait(&sp->cv, &sp->mu);
	}
	w.first = seglog_group_count(sp->pending) - n;
	w.count = n;
	for (size_t k = 0; k < n; k++)
		if (recs[k].type == SEGLOG_MSG || recs[k].type == SEGLOG_TPL ||
		    recs[k].type == SEGLOG_ROWS)
			w.new_mail = true;
	w.lazy = lazy;
	w.next = sp->waiters;
	sp->waiters = &w;
	while (!w.done) {
		if (!sp->writing)
			lead(sp);
		else
			pthread_cond_wait(&sp->cv, &sp->mu);
	}
	pthread_mutex_unlock(&sp->mu);
	if (w.err != 0) {
		errno = w.err;
		return -1;
	}
	return 0;
}

/* One record; lazy: written without a sync of its own (see lead()). */
static int
log_one(struct spool *sp, enum seglog_type type, const char *id,
    const void *p, size_t len, bool lazy)
{
	struct iovec iov = { (void *)p, len };
	struct rec_in r = { type, id_value(id), &iov, 1 };

	return log_commit(sp, &r, 1, lazy);
}

/* ---- recovery ---- */

static int
recover_rec(void *arg, const struct seglog_rec *r)
{
	struct spool *sp = arg;
	/* an id from more than a day ahead is not believed: it would stop
	 * the generator (ids are microseconds << 12) */
	uint64_t ahead = (uint64_t)(util_now_us() + 86400LL * 1000000) << 12;

	if (r->type == SEGLOG_MSG && r->id <= ahead)
		id_seen(sp, r->id);
	spool_index_apply(sp->index, r);
	return 0;
}

/* Call fn for every entry of the directory dirfd; -1 with errno if it
 * cannot be read. */
static int
for_each_entry(int dirfd, void (*fn)(void *arg, int dirfd, const char *name),
    void *arg)
{
	int fd = dup(dirfd);
	DIR *d = fd == -1 ? NULL : fdopendir(fd);
	struct dirent *de;
	int n = 0, saved;

	if (d == NULL) {
		saved = errno;
		if (fd != -1)
			close(fd);
		errno = saved;
		return -1;
	}
	rewinddir(d);
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		fn(arg, dirfd, de->d_name);
		n++;
	}
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : n;
}

static void
remove_incoming(void *arg, int dirfd, const char *name)
{
	char q[128];

	log_quote(q, sizeof(q), name, strlen(name), 64);
	if (unlinkat(dirfd, name, 0) == -1)
		log_warn("spool event=recover-failed file=incoming/%s error=\"%s\"",
		    q, strerror(errno));
	else
		log_info("spool event=recover-removed file=incoming/%s", q);
}

/* A big/<id> file whose message is not in the log was never committed
 * (or is finished): remove it. */
static void
remove_orphan(void *arg, int dirfd, const char *name)
{
	struct spool *sp = arg;

	if (spool_valid_id(name) &&
	    spool_index_get(sp->index, id_value(name)) != NULL)
		return;
	if (unlinkat(dirfd, name, 0) == 0)
		log_info("spool event=recover-removed file=big/%.64s", name);
}

/* Write body to big/<id> and make it durable. -1 with errno. */
static int
big_write(struct spool *sp, const char *id, const char *body, size_t len)
{
	int fd = openat(sp->big_fd, id, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC | O_NOFOLLOW, 0600);
	int saved;

	if (fd == -1)
		return -1;
	if (util_write_all(fd, body, len) == -1 || fdatasync(fd) == -1 ||
	    fsync(sp->big_fd) == -1) {
		saved = errno;
		close(fd);
		unlinkat(sp->big_fd, id, 0);
		errno = saved;
		return -1;
	}
	return close(fd);
}

static uint64_t
new_tag(uint64_t id)
{
	uint64_t t;

	if (getrandom(&t, sizeof(t), GRND_NONBLOCK) != (ssize_t)sizeof(t))
		t = (uint64_t)util_now_us() ^ (id << 7);
	return t;
}

static void
put_prefix(unsigned char pre[MSG_PREFIX], uint64_t tag, uint64_t flags)
{
	memcpy(pre, &tag, 8);
	memcpy(pre + 8, &flags, 8);
}

struct convert_ctx {
	struct spool *sp;
	int converted, failed;
};

/*
 * A format-1 queue file (queue/<id>) into the log: MSG with its image
 * (body to big/ when it is large) and JRN with its journal, then the
 * file is removed. A file whose id the log already holds was converted
 * before a crash: it is only removed.
 */
static void
convert_one(void *arg, int dirfd, const char *name)
{
	struct convert_ctx *c = arg;
	struct spool *sp = c->sp;
	struct spool_msg *m = NULL;
	char err[256], *img = NULL;
	size_t len = 0, keep, head, body;
	unsigned char pre[MSG_PREFIX];
	struct iovec iov[2], jiov;
	struct rec_in recs[2];
	struct stat st;
	bool known;
	int fd;

	if (!spool_valid_id(name)) {
		log_warn("spool event=convert-skipped file=queue/%.64s", name);
		return;
	}
	/* converted before a crash: its JRN may be torn, so the file's
	 * journal is written again, as a SNAP that replaces it */
	known = spool_index_get(sp->index, id_value(name)) != NULL;
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1 || fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > ((uint64_t)1 << 33)) {
		if (fd != -1)
			close(fd);
		goto bad;
	}
	len = (size_t)st.st_size;
	img = xcalloc(1, len + 1);
	if (util_pread_all(fd, img, len, 0) == -1) {
		close(fd);
		goto bad;
	}
	close(fd);
	m = spool_msg_parse(name, img, len, &keep, err, sizeof(err));
	if (m == NULL)
		goto bad;
	head = (size_t)(spool_msg_body(m, &body) - img);
	id_seen(sp, id_value(name));
	iov[0].iov_base = pre;
	iov[0].iov_len = sizeof(pre);
	iov[1].iov_base = img;
	if (known) {
		iov[1].iov_len = 0;      /* only the SNAP below */
	} else if (head + body > sp->inline_max) {
		if (big_write(sp, name, img + head, body) == -1)
			goto fail;
		put_prefix(pre, (uint64_t)st.st_ino, MSG_BIG);
		iov[1].iov_len = head;
	} else {
		put_prefix(pre, (uint64_t)st.st_ino, 0);
		iov[1].iov_len = head + body;
	}
	jiov.iov_base = img + head + body;
	jiov.iov_len = keep - head - body;
	recs[0] = (struct rec_in){ SEGLOG_MSG, id_value(name), iov, 2 };
	recs[1] = (struct rec_in){ SEGLOG_SNAP, id_value(name), &jiov, 1 };
	if (known ? log_commit(sp, &recs[1], 1, false) == -1 :
	    log_commit(sp, recs, 2, false) == -1)
		goto fail;
	c->converted++;
	spool_msg_close(&m);
	free(img);
	if (unlinkat(dirfd, name, 0) == -1)
		log_warn("spool event=convert-unlink-failed id=%s error=\"%s\"",
		    name, strerror(errno));
	return;
bad:
	log_err("spool event=corrupt file=queue/%.64s reason=\"%s\"", name,
	    m == NULL && img != NULL ? err : "unreadable");
	if (renameat(dirfd, name, sp->corrupt_fd, name) == -1)
		log_warn("spool event=quarantine-failed id=%.64s", name);
	spool_msg_close(&m);
	free(img);
	return;
fail:
	log_err("spool event=convert-failed id=%s error=\"%s\"", name,
	    strerror(errno));
	c->failed++;
	spool_msg_close(&m);
	free(img);
}

/* Format-1 directories: incoming/ emptied, queue/ converted; both
 * removed once empty. */
static int
recover_format1(struct spool *sp, int *removed)
{
	struct convert_ctx c = { sp, 0, 0 };
	int fd;

	fd = openat(sp->dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd != -1) {
		*removed = for_each_entry(fd, remove_incoming, NULL);
		close(fd);
		(void)unlinkat(sp->dirfd, "incoming", AT_REMOVEDIR);
	}
	fd = openat(sp->dirfd, "queue", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return 0;
	if (for_each_entry(fd, convert_one, &c) == -1) {
		close(fd);
		return -1;
	}
	close(fd);
	if (c.converted > 0)
		log_info("spool event=converted format=1 messages=%d",
		    c.converted);
	if (c.failed > 0) {
		errno = EIO;
		return -1;
	}
	(void)unlinkat(sp->dirfd, "queue", AT_REMOVEDIR);
	return fsync(sp->dirfd);
}

int
spool_recover(struct spool *sp, char *err, size_t errsize)
{
	uint64_t drop[DROP_MAX];
	size_t n;
	int removed = 0;

	if (seglog_recover(sp->log, recover_rec, sp, err, errsize) != 0)
		return -1;
	if (recover_format1(sp, &removed) == -1) {
		snprintf(err, errsize, "format-1 spool: %s", strerror(errno));
		return -1;
	}
	if (for_each_entry(sp->big_fd, remove_orphan, sp) == -1) {
		snprintf(err, errsize, "big/: %s", strerror(errno));
		return -1;
	}
	/* Appending resumes in a new segment: every old one is sealed. */
	while ((n = spool_index_unused(sp->index, UINT64_MAX, drop,
	    DROP_MAX)) > 0)
		for (size_t i = 0; i < n; i++)
			if (seglog_drop(sp->log, drop[i]) == -1)
				log_warn("queue event=spool-drop-failed segment=%016"
				    PRIx64 " error=\"%s\"", drop[i], strerror(errno));
	return removed < 0 ? 0 : removed;
}

struct idlist {
	uint64_t *v;
	size_t n;
};

static void
collect_id(void *arg, const struct spool_entry *e)
{
	struct idlist *l = arg;

	l->v[l->n++] = e->key;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int
spool_scan(struct spool *sp, void (*cb)(void *arg, const char *id), void *arg)
{
	struct idlist l;
	char id[QUEUE_ID_LEN + 1];

	pthread_mutex_lock(&sp->mu);
	l.v = xcalloc(spool_index_count(sp->index) + 1, sizeof(*l.v));
	l.n = 0;
	spool_index_foreach(sp->index, collect_id, &l);
	pthread_mutex_unlock(&sp->mu);
	/* In arrival order, as format 1's directory order roughly was. */
	qsort(l.v, l.n, sizeof(*l.v), cmp_u64);
	for (size_t i = 0; i < l.n; i++) {
		id_text(l.v[i], id);
		cb(arg, id);
	}
	free(l.v);
	return (int)l.n;
}

/* ---- receiving ---- */

struct spool_txn *
spool_txn_begin(struct spool *sp, struct envelope *env)
{
	struct spool_txn *t = xcalloc(1, sizeof(*t));

	t->sp = sp;
	t->big = -1;
	spool_next_id(sp, t->id);
	util_strlcpy(env->id, t->id, sizeof(env->id));
	t->buf = evbuffer_new();
	if (t->buf == NULL)
		fatal("out of memory");
	evbuffer_add_printf(t->buf, "%s%d %0*d\n", HEAD_MAGIC, IMAGE_VERSION,
	    HEAD_LEN_DIGITS, 0);
	envelope_serialize(env, t->buf);
	evbuffer_add(t->buf, "\n", 1);
	t->head_len = evbuffer_get_length(t->buf);
	if (t->head_len > SPOOL_MAX_HEAD) {
		evbuffer_free(t->buf);
		free(t);
		env->id[0] = '\0';
		errno = EMSGSIZE;
		return NULL;
	}
	return t;
}

/* The body so far moves to big/<id>; the head stays in memory. */
static int
txn_spill(struct spool_txn *t)
{
	struct evbuffer *head = evbuffer_new();
	const unsigned char *p;

	if (head == NULL)
		fatal("out of memory");
	t->big = openat(t->sp->big_fd, t->id, O_WRONLY | O_CREAT | O_EXCL |
	    O_CLOEXEC | O_NOFOLLOW, 0600);
	if (t->big == -1) {
		evbuffer_free(head);
		return -1;
	}
	p = evbuffer_pullup(t->buf, -1);
	if (util_write_all(t->big, p + t->head_len,
	    evbuffer_get_length(t->buf) - t->head_len) == -1) {
		evbuffer_free(head);
		return -1;
	}
	evbuffer_add(head, p, t->head_len);
	evbuffer_free(t->buf);
	t->buf = head;
	return 0;
}

int
spool_txn_write(struct spool_txn *t, const void *p, size_t len)
{
	if (t->big == -1 && t->size + len > t->sp->inline_max &&
	    txn_spill(t) == -1)
		return -1;
	if (t->big != -1) {
		if (util_write_all(t->big, p, len) == -1)
			return -1;
	} else {
		evbuffer_add(t->buf, p, len);
	}
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

static void
txn_drop_big(struct spool_txn *t)
{
	if (t->big == -1)
		return;
	close(t->big);
	t->big = -1;
	(void)unlinkat(t->sp->big_fd, t->id, 0);
}

void
spool_txn_abort(struct spool_txn **tp)
{
	struct spool_txn *t = *tp;

	if (t == NULL)
		return;
	txn_drop_big(t);
	spool_txn_free(tp);
}

void
spool_txn_free(struct spool_txn **tp)
{
	struct spool_txn *t = *tp;

	if (t == NULL)
		return;
	if (t->big != -1)
		close(t->big);
	if (t->buf != NULL)
		evbuffer_free(t->buf);
	free(t);
	*tp = NULL;
}

/* Big bodies of the batch durable (their files, then big/ once); a txn
 * that fails is marked and left out. */
static void
commit_bigs(struct spool *sp, struct spool_txn *const *txns, size_t n)
{
	bool any = false;

	for (size_t i = 0; i < n; i++)
		if (txns[i]->big != -1)
			(void)sync_file_range(txns[i]->big, 0, 0,
			    SYNC_FILE_RANGE_WRITE);
	for (size_t i = 0; i < n; i++) {
		if (txns[i]->big == -1)
			continue;
		if (fdatasync(txns[i]->big) == -1) {
			txns[i]->error = errno;
			txn_drop_big(txns[i]);
			continue;
		}
		any = true;
	}
	if (any && fsync(sp->big_fd) == -1)
		for (size_t i = 0; i < n; i++)
			if (txns[i]->big != -1) {
				txns[i]->error = errno;
				txn_drop_big(txns[i]);
			}
}

void
spool_commit_batch(struct spool *sp, struct spool_txn *const *txns, size_t n)
{
	struct rec_in *recs = xcalloc(n, sizeof(*recs));
	struct iovec *iov = xcalloc(2 * n, sizeof(*iov));
	unsigned char *pre = xcalloc(n, MSG_PREFIX);
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		struct spool_txn *t = txns[i];
		char len[HEAD_LEN_DIGITS + 1];
		unsigned char *h = evbuffer_pullup(t->buf, (ev_ssize_t)t->head_len);

		ASSERT(t->sp == sp);
		t->error = 0;
		snprintf(len, sizeof(len), "%0*" PRIu64, HEAD_LEN_DIGITS, t->size);
		memcpy(h + HEAD_LEN_OFF, len, HEAD_LEN_DIGITS);
	}
	commit_bigs(sp, txns, n);
	for (size_t i = 0; i < n; i++) {
		struct spool_txn *t = txns[i];

		if (t->error != 0)
			continue;
		put_prefix(pre + k * MSG_PREFIX, new_tag(id_value(t->id)),
		    t->big != -1 ? MSG_BIG : 0);
		iov[2 * k].iov_base = pre + k * MSG_PREFIX;
		iov[2 * k].iov_len = MSG_PREFIX;
		iov[2 * k + 1].iov_len = evbuffer_get_length(t->buf);
		iov[2 * k + 1].iov_base = evbuffer_pullup(t->buf, -1);
		recs[k] = (struct rec_in){ SEGLOG_MSG, id_value(t->id),
		    &iov[2 * k], 2 };
		k++;
	}
	if (k > 0 && log_commit(sp, recs, k, false) == -1) {
		int err = errno;

		/* Not durable, so not acknowledged. */
		for (size_t i = 0; i < n; i++)
			if (txns[i]->error == 0) {
				txns[i]->error = err;
				txn_drop_big(txns[i]);
			}
	}
	for (size_t i = 0; i < n; i++)
		if (txns[i]->big != -1) {
			close(txns[i]->big);
			txns[i]->big = -1;
		}
	free(recs);
	free(iov);
	free(pre);
}

int
spool_unlink_committed(struct spool *sp, const char *id)
{
	if (log_one(sp, SEGLOG_DONE, id, NULL, 0, false) == -1)
		return -1;
	if (unlinkat(sp->big_fd, id, 0) == -1 && errno != ENOENT)
		log_warn("spool event=unlink-failed file=big/%s error=\"%s\"",
		    id, strerror(errno));
	return 0;
}

/* ---- delivering ---- */

/*
 * The image of message id from the log (and big/): head, envelope, body,
 * journal. NULL with errno (ENOENT: not in the queue; EBADMSG: its
 * record or big file is not what the index says).
 */
static char *
load_image(struct spool *sp, const char *id, size_t *lenp, uint64_t *tag,
    bool *big)
{
	struct spool_entry *e;
	struct seglog_pos pos;
	size_t msglen, jlen, head, body = 0;
	char *jrn, *payload, *img;
	uint64_t flags;
	int saved;

	pthread_mutex_lock(&sp->mu);
	e = spool_index_get(sp->index, id_value(id));
	if (e == NULL) {
		pthread_mutex_unlock(&sp->mu);
		errno = ENOENT;
		return NULL;
	}
	pos = e->msg;
	msglen = e->msglen;
	jlen = e->jlen;
	jrn = xcalloc(1, jlen + 1);
	if (jlen > 0)
		memcpy(jrn, e->jrn, jlen);
	payload = xcalloc(1, msglen + 1);
	/* Read under the lock: a copy forward moves the record and then
	 * drops its old segment, never between a look-up and its read. */
	saved = msglen < MSG_PREFIX ? EBADMSG :
	    seglog_read(sp->log, pos, payload, msglen) == -1 ? errno : 0;
	pthread_mutex_unlock(&sp->mu);
	if (saved != 0) {
		/* the index names it: a missing segment is not "gone" */
		errno = saved == ENOENT ? EIO : saved;
		goto fail;
	}
	memcpy(tag, payload, 8);
	memcpy(&flags, payload + 8, 8);
	*big = (flags & MSG_BIG) != 0;
	head = msglen - MSG_PREFIX;
	if (*big) {
		struct stat st;
		int fd = openat(sp->big_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

		if (fd == -1 || fstat(fd, &st) == -1) {
			saved = errno == ENOENT ? EBADMSG : errno;
			if (fd != -1)
				close(fd);
			errno = saved;
			goto fail;
		}
		body = (size_t)st.st_size;
		/* the file must hold exactly the body the head line counts */
		if (head < HEAD_LINE_LEN || strtoull(payload + MSG_PREFIX +
		    HEAD_LEN_OFF, NULL, 10) != (unsigned long long)body) {
			close(fd);
			errno = EBADMSG;
			goto fail;
		}
		img = xcalloc(1, head + body + jlen + 1);
		if (util_pread_all(fd, img + head, body, 0) == -1) {
			saved = errno;
			close(fd);
			free(img);
			errno = saved;
			goto fail;
		}
		close(fd);
	} else {
		img = xcalloc(1, head + jlen + 1);
	}
	memcpy(img, payload + MSG_PREFIX, head);
	memcpy(img + head + body, jrn, jlen);
	free(payload);
	free(jrn);
	*lenp = head + body + jlen;
	return img;
fail:
	saved = errno;
	free(payload);
	free(jrn);
	errno = saved;
	return NULL;
}

struct spool_msg *
spool_msg_load(struct spool *sp, const char *id, char *err, size_t errsize)
{
	struct spool_msg *m;
	size_t len, keep;
	uint64_t tag;
	bool big;
	char *img;

	if ((m = spool_msg_new(sp, id, err, errsize)) == NULL)
		return NULL;
	img = load_image(sp, id, &len, &tag, &big);
	if (img == NULL) {
		snprintf(err, errsize, "%s", errno == EBADMSG ?
		    "record does not match the index" : strerror(errno));
		goto fail;
	}
	m->image = img;
	m->imagelen = len;
	m->tag = tag;
	m->big = big;
	if (spool_msg_parse_into(m, img, len, &keep, err, errsize) == -1) {
		errno = EBADMSG;
		goto fail;
	}
	return m;
fail:
	{
		int saved = errno;

		spool_msg_close(&m);
		errno = saved;
	}
	return NULL;
}

int
spool_msg_flush(struct spool_msg *m)
{
	size_t len = evbuffer_get_length(m->records);
	int rc;

	if (len == 0)
		return 0;
	rc = log_one(m->sp, SEGLOG_JRN, m->id,
	    evbuffer_pullup(m->records, -1), len, false);
	evbuffer_drain(m->records, len);
	return rc;
}

int
spool_msg_remove(struct spool_msg *m)
{
	/* A lost DONE brings a finished message back: delivered again (at
	 * least once; local copies are found), as format 1's unsynced
	 * unlink did; not worth a sync of its own. But a big/ body goes at
	 * once, so then the DONE must be durable first. */
	if (log_one(m->sp, SEGLOG_DONE, m->id, NULL, 0, !m->big) == -1)
		return -1;
	if (m->big && unlinkat(m->sp->big_fd, m->id, 0) == -1)
		log_warn("spool event=unlink-failed file=big/%s error=\"%s\"",
		    m->id, strerror(errno));
	return 0;
}

int
spool_quarantine(struct spool *sp, const char *id)
{
	size_t len;
	uint64_t tag;
	bool big;
	char *img = load_image(sp, id, &len, &tag, &big);
	int fd;

	/* Keep what can be read for the administrator, then forget it. */
	if (img != NULL) {
		fd = openat(sp->corrupt_fd, id, O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd == -1 || util_write_all(fd, img, len) == -1 ||
		    fsync(fd) == -1)
			log_warn("spool event=quarantine-copy-failed id=%s", id);
		if (fd != -1)
			close(fd);
		free(img);
	}
	if (log_one(sp, SEGLOG_DONE, id, NULL, 0, false) == -1)
		return -1;
	(void)unlinkat(sp->big_fd, id, 0);
	return 0;
}
