/*
 * seglog.c - the append-only segment log (seglog.h,
 * docs/design/spool-v2.md).
 *
 * Durability argument, in short: a commit writes its records after every
 * record already in the segment and returns only after fdatasync() of the
 * segment (and, for a new segment, fsync() of the directory), so when a
 * record is reported durable every byte before it is too. A scan stops at
 * the first record that is not whole, which can only lie after the last
 * durable one. Appending never resumes after a failure or a recovery, so
 * stale bytes after a torn record are never partly overwritten and later
 * read as records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/seglog.h"

#define SEG_NAME_LEN 20     /* 16 hex digits + ".seg" */

struct segfile {
	uint64_t n;
	int fd;
};

struct seglog {
	int dirfd;
	uint64_t segsize;
	/* Sorted by n; readers look up under rd, commit/drop change it
	 * under wr (a new segment reallocates the table). */
	pthread_rwlock_t lock;
	struct segfile *segs;
	size_t nsegs, cap;
	uint64_t last;        /* highest segment number seen or made */
	uint64_t active;      /* segment appended to; 0: none yet */
	uint64_t tail;        /* append offset in the active segment */
	bool dirty;           /* the active one has bytes not yet synced */
};

struct grec {
	size_t off;          /* of the header in g->buf */
	struct seglog_pos pos;
};

struct seglog_group {
	struct grec *recs;
	size_t n, cap;
	unsigned char *buf;
	size_t used, bufcap;
};

/* ---- records ---- */

static void
put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void
put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
get32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t
seglog_rec_size(uint64_t len)
{
	return (SEGLOG_HDR + len + SEGLOG_ALIGN - 1) & ~(uint64_t)(SEGLOG_ALIGN - 1);
}

/* CRC-32 of the header without its checksum field, then the payload. */
static uint32_t
rec_crc(const unsigned char *hdr, const struct iovec *iov, int iovcnt)
{
	uLong c = crc32(0L, Z_NULL, 0);

	c = crc32(c, hdr, 12);
	c = crc32(c, hdr + 16, SEGLOG_HDR - 16);
	/* zlib's crc32() with a null buffer restarts the value: skip
	 * empty parts, whatever their pointer */
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len > 0)
			c = crc32(c, iov[i].iov_base, (uInt)iov[i].iov_len);
	return (uint32_t)c;
}

void
seglog_encode_header(unsigned char out[SEGLOG_HDR], enum seglog_type type,
    uint64_t id, const struct iovec *iov, int iovcnt)
{
	uint64_t len = 0;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	memset(out, 0, SEGLOG_HDR);
	put32(out, SEGLOG_MAGIC);
	put32(out + 4, (uint32_t)len);
	out[8] = (unsigned char)type;
	put64(out + 16, id);
	put32(out + 12, rec_crc(out, iov, iovcnt));
}

static bool
all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Is the record at p (avail bytes from it) whole? Its payload length in
 * *plen if so. */
static bool
rec_whole(const unsigned char *p, size_t avail, uint32_t *plen)
{
	uint32_t len;
	struct iovec iov;

	if (avail < SEGLOG_HDR || get32(p) != SEGLOG_MAGIC)
		return false;
	len = get32(p + 4);
	if (len > SEGLOG_MAX_RECORD || seglog_rec_size(len) > avail)
		return false;
	if (p[8] == 0 || p[8] > SEGLOG_TYPE_MAX || p[9] || p[10] || p[11])
		return false;
	iov.iov_base = (void *)(p + SEGLOG_HDR);
	iov.iov_len = len;
	if (rec_crc(p, &iov, 1) != get32(p + 12))
		return false;
	/* the padding is written as zeros: anything else is not ours */
	if (!all_zero(p + SEGLOG_HDR + len,
	    seglog_rec_size(len) - SEGLOG_HDR - len))
		return false;
	*plen = len;
	return true;
}

int
seglog_scan_image(const void *image, size_t len, uint64_t seg,
    int (*cb)(void *arg, const struct seglog_rec *r), void *arg,
    size_t *end, enum seglog_end *how)
{
	const unsigned char *p = image;
	size_t off = 0;
	int rc = 0;

	*how = SEGLOG_END_CLEAN;
	while (off < len) {
		size_t avail = len - off;
		uint32_t plen;
		struct seglog_rec r;

		if (!rec_whole(p + off, avail, &plen)) {
			/* zeros: the preallocated, never written tail */
			if (!all_zero(p + off, avail < SEGLOG_HDR ? avail :
			    SEGLOG_HDR))
				*how = SEGLOG_END_TORN;
			break;
		}
		r.type = (enum seglog_type)p[off + 8];
		r.id = get64(p + off + 16);
		r.payload = p + off + SEGLOG_HDR;
		r.len = plen;
		r.pos.seg = seg;
		r.pos.off = off;
		off += seglog_rec_size(plen);
		if (cb != NULL && (rc = cb(arg, &r)) != 0)
			break;
	}
	*end = off;
	return rc;
}

/* ---- segment files ---- */

static void
seg_name(char buf[SEG_NAME_LEN + 1], uint64_t n)
{
	snprintf(buf, SEG_NAME_LEN + 1, "%016" PRIx64 ".seg", n);
}

/* The number a segment's name spells, or 0 if it is not one. */
static uint64_t
seg_number(const char *name)
{
	uint64_t n = 0;

	if (strlen(name) != SEG_NAME_LEN || strcmp(name + 16, ".seg") != 0)
		return 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' :
		    c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

		if (d < 0)
			return 0;
		n = n << 4 | (uint64_t)d;
	}
	return n;
}

static int
seg_cmp(const void *a, const void *b)
{
	const struct segfile *x = a, *y = b;

	return x->n < y->n ? -1 : x->n > y->n;
}

static int
seg_add(struct seglog *l, uint64_t n, int fd)
{
	if (l->nsegs == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct segfile *s = realloc(l->segs, cap * sizeof(*s));

		if (s == NULL)
			return -1;
		l->segs = s;
		l->cap = cap;
	}
	l->segs[l->nsegs].n = n;
	l->segs[l->nsegs].fd = fd;
	l->nsegs++;
	if (l->nsegs > 1 && l->segs[l->nsegs - 2].n > n)
		qsort(l->segs, l->nsegs, sizeof(*l->segs), seg_cmp);
	if (n > l->last)
		l->last = n;
	return 0;
}

static struct segfile *
seg_find(const struct seglog *l, uint64_t n)
{
	struct segfile key = { .n = n };

	if (l->nsegs == 0)
		return NULL;
	return bsearch(&key, l->segs, l->nsegs, sizeof(*l->segs), seg_cmp);
}

static bool
segsize_ok(uint64_t segsize)
{
	return segsize >= SEGLOG_MIN_SEGMENT && segsize <= SEGLOG_MAX_SEGMENT &&
	    segsize % SEGLOG_ALIGN == 0;
}

struct seglog *
seglog_open(int dirfd, uint64_t segsize, uid_t uid, gid_t gid, char *err,
    size_t errsize)
{
	struct seglog *l;
	int fd;

	if (!segsize_ok(segsize)) {
		snprintf(err, errsize, "segment size %" PRIu64 " out of range",
		    segsize);
		return NULL;
	}
	if (mkdirat(dirfd, "seg", 0700) == -1 && errno != EEXIST) {
		snprintf(err, errsize, "mkdir seg: %s", strerror(errno));
		return NULL;
	}
	fd = openat(dirfd, "seg", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1) {
		snprintf(err, errsize, "open seg: %s", strerror(errno));
		return NULL;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) == -1) {
		snprintf(err, errsize, "chown seg: %s", strerror(errno));
		close(fd);
		return NULL;
	}
	l = xcalloc(1, sizeof(*l));
	l->dirfd = fd;
	l->segsize = segsize;
	/* Number new segments after every file there, even before (or
	 * without) a recovery, so a commit never meets an old name. */
	{
		int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = dfd == -1 ? NULL : fdopendir(dfd);
		struct dirent *e;

		if (d == NULL && dfd != -1)
			close(dfd);
		while (d != NULL && (e = readdir(d)) != NULL)
			if (seg_number(e->d_name) > l->last)
				l->last = seg_number(e->d_name);
		if (d != NULL)
			closedir(d);
	}
	pthread_rwlock_init(&l->lock, NULL);
	return l;
}

int
seglog_set_segment_size(struct seglog *l, uint64_t segsize)
{
	if (!segsize_ok(segsize)) {
		errno = EINVAL;
		return -1;
	}
	l->segsize = segsize;
	return 0;
}

void
seglog_free(struct seglog **lp)
{
	struct seglog *l = *lp;

	if (l == NULL)
		return;
	for (size_t i = 0; i < l->nsegs; i++)
		close(l->segs[i].fd);
	free(l->segs);
	close(l->dirfd);
	pthread_rwlock_destroy(&l->lock);
	free(l);
	*lp = NULL;
}

struct recover_ctx {
	uint64_t seg;
	bool first;
	bool bad_head;
	int (*cb)(void *, const struct seglog_rec *);
	void *arg;
};

static int
recover_rec(void *arg, const struct seglog_rec *r)
{
	struct recover_ctx *c = arg;

	if (c->first) {
		c->first = false;
		if (r->type != SEGLOG_SEG || r->len < 16 ||
		    get64((const unsigned char *)r->payload) != SEGLOG_VERSION ||
		    get64((const unsigned char *)r->payload + 8) != c->seg) {
			c->bad_head = true;
			return -1;
		}
		return 0;
	}
	if (r->type == SEGLOG_SEG)
		return 0;
	return c->cb(c->arg, r);
}

/* Scan one segment file; -1 with err on an environment error or a
 * segment that is not ours, else cb's value. */
static int
recover_one(struct seglog *l, int fd, uint64_t n,
    int (*cb)(void *, const struct seglog_rec *), void *arg, char *err,
    size_t errsize)
{
	struct recover_ctx c = { .seg = n, .first = true, .cb = cb, .arg = arg };
	struct stat st;
	void *map;
	size_t end;
	enum seglog_end how;
	int rc;

	if (fstat(fd, &st) == -1) {
		snprintf(err, errsize, "segment %" PRIx64 ": %s", n,
		    strerror(errno));
		return -1;
	}
	if (st.st_size == 0)
		return 0;
	if ((uint64_t)st.st_size > SEGLOG_MAX_SEGMENT) {
		snprintf(err, errsize, "segment %" PRIx64 ": too large", n);
		return -1;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		snprintf(err, errsize, "segment %" PRIx64 ": mmap: %s", n,
		    strerror(errno));
		return -1;
	}
	rc = seglog_scan_image(map, (size_t)st.st_size, n, recover_rec, &c,
	    &end, &how);
	munmap(map, (size_t)st.st_size);
	if (c.bad_head) {
		snprintf(err, errsize, "segment %" PRIx64 ": not a format-%d "
		    "tern segment of that number", n, SEGLOG_VERSION);
		return -1;
	}
	if (rc == 0 && how == SEGLOG_END_TORN)
		log_warn("queue event=spool-torn-tail segment=%016" PRIx64
		    " offset=%zu", n, end);
	return rc;
}

int
seglog_recover(struct seglog *l,
    int (*cb)(void *arg, const struct seglog_rec *r), void *arg, char *err,
    size_t errsize)
{
	DIR *d;
	struct dirent *e;
	int dfd, rc = 0;

	dfd = openat(l->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd == -1 || (d = fdopendir(dfd)) == NULL) {
		snprintf(err, errsize, "read seg: %s", strerror(errno));
		if (dfd != -1)
			close(dfd);
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		uint64_t n = seg_number(e->d_name);
		int fd;

		if (n == 0 || seg_find(l, n) != NULL)
			continue;
		fd = openat(l->dirfd, e->d_name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd == -1 || seg_add(l, n, fd) == -1) {
			snprintf(err, errsize, "open segment %s: %s", e->d_name,
			    strerror(errno));
			if (fd != -1)
				close(fd);
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	for (size_t i = 0; i < l->nsegs && rc == 0; i++)
		rc = recover_one(l, l->segs[i].fd, l->segs[i].n, cb, arg, err,
		    errsize);
	l->active = 0;
	return rc;
}

/* ---- commit ---- */

struct seglog_group *
seglog_group_new(void)
{
	return xcalloc(1, sizeof(struct seglog_group));
}

void
seglog_group_free(struct seglog_group **gp)
{
	struct seglog_group *g = *gp;

	if (g == NULL)
		return;
	free(g->recs);
	free(g->buf);
	free(g);
	*gp = NULL;
}

void
seglog_group_reset(struct seglog_group *g)
{
	g->n = 0;
	g->used = 0;
}

void
seglog_group_truncate(struct seglog_group *g, size_t n)
{
	if (n >= g->n)
		return;
	g->used = g->recs[n].off;
	g->n = n;
}

size_t
seglog_group_count(const struct seglog_group *g)
{
	return g->n;
}

int
seglog_group_add(struct seglog_group *g, enum seglog_type type, uint64_t id,
    const struct iovec *iov, int iovcnt)
{
	uint64_t len = 0, size;
	unsigned char *p;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (len > SEGLOG_MAX_RECORD) {
		errno = EMSGSIZE;
		return -1;
	}
	size = seglog_rec_size(len);
	if (g->n == SEGLOG_GROUP_MAX ||
	    (g->n > 0 && g->used + size > SEGLOG_GROUP_BYTES)) {
		errno = ENOBUFS;
		return -1;
	}
	if (g->n == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 32;
		g->recs = xreallocarray(g->recs, g->cap, sizeof(*g->recs));
	}
	if (g->used + size > g->bufcap) {
		size_t cap = g->bufcap ? g->bufcap : 64 * 1024;

		while (cap < g->used + size)
			cap *= 2;
		g->buf = xreallocarray(g->buf, cap, 1);
		g->bufcap = cap;
	}
	p = g->buf + g->used;
	seglog_encode_header(p, type, id, iov, iovcnt);
	p += SEGLOG_HDR;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > 0)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	memset(p, 0, size - SEGLOG_HDR - len);
	g->recs[g->n].off = g->used;
	g->recs[g->n].pos.seg = 0;
	g->recs[g->n].pos.off = 0;
	g->used += size;
	return (int)g->n++;
}

void
seglog_group_rec(const struct seglog_group *g, size_t i,
    struct seglog_rec *r)
{
	const unsigned char *p = g->buf + g->recs[i].off;

	r->type = (enum seglog_type)p[8];
	r->id = get64(p + 16);
	r->len = get32(p + 4);
	r->payload = p + SEGLOG_HDR;
	r->pos = g->recs[i].pos;
}

struct seglog_pos
seglog_group_pos(const struct seglog_group *g, size_t i)
{
	return g->recs[i].pos;
}

/* Create, preallocate and register the next segment, make its name
 * durable, and write its SEG record (made durable with the group). */
static int
new_segment(struct seglog *l)
{
	uint64_t n = l->last + 1;
	char name[SEG_NAME_LEN + 1];
	unsigned char head[SEGLOG_HDR + 24];
	unsigned char pay[24];
	struct iovec iov = { pay, sizeof(pay) };
	int fd, e;

	seg_name(name, n);
	fd = openat(l->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	/* The segment being sealed had unsynced writes (SEGLOG_NOSYNC):
	 * sync them now, so that a sync of a later segment still covers
	 * every byte before it. */
	if (l->active != 0 && l->dirty) {
		struct segfile *old = seg_find(l, l->active);

		if (old != NULL && fdatasync(old->fd) == -1)
			goto fail;
		l->dirty = false;
	}
	/* Reserve the blocks now: a commit group then never meets ENOSPC
	 * halfway, it meets it here, before anything is written. */
	e = posix_fallocate(fd, 0, (off_t)l->segsize);
	if (e != 0) {
		errno = e;
		goto fail;
	}
	put64(pay, SEGLOG_VERSION);
	put64(pay + 8, n);
	put64(pay + 16, (uint64_t)time(NULL));
	seglog_encode_header(head, SEGLOG_SEG, 0, &iov, 1);
	memcpy(head + SEGLOG_HDR, pay, sizeof(pay));
	if (util_pwrite_all(fd, head, sizeof(head), 0) == -1 ||
	    fsync(l->dirfd) == -1)
		goto fail;
	pthread_rwlock_wrlock(&l->lock);
	e = seg_add(l, n, fd);
	pthread_rwlock_unlock(&l->lock);
	if (e == -1)
		goto fail;
	l->active = n;
	l->tail = sizeof(head);
	l->dirty = false;
	return 0;
fail:
	e = errno;
	close(fd);
	unlinkat(l->dirfd, name, 0);
	l->last = n;     /* never reuse a number a crash may have left */
	errno = e;
	return -1;
}

/* Write records [from, to) of g at the tail of the active segment. */
static int
write_run(struct seglog *l, struct seglog_group *g, size_t from, size_t to,
    bool sync)
{
	size_t start = g->recs[from].off;
	size_t end = to < g->n ? g->recs[to].off : g->used;
	struct segfile *s = seg_find(l, l->active);

	if (util_pwrite_all(s->fd, g->buf + start, end - start,
	    l->tail) == -1 ||
	    (sync && fdatasync(s->fd) == -1))
		return -1;
	l->dirty = !sync;
	for (size_t i = from; i < to; i++) {
		g->recs[i].pos.seg = l->active;
		g->recs[i].pos.off = l->tail + (g->recs[i].off - start);
	}
	l->tail += end - start;
	return 0;
}

int
seglog_commit(struct seglog *l, struct seglog_group *g, unsigned flags)
{
	/* Normal commits leave the last eighth of a segment to those that
	 * only record progress, so a full disk can still drain. */
	uint64_t limit = flags & SEGLOG_RESERVE ? l->segsize :
	    l->segsize - l->segsize / SEGLOG_RESERVE_DIV;
	size_t from = 0;

	/* A group that does not fit what is left starts a new segment
	 * before anything is written: if that fails (ENOSPC), no record of
	 * the group is on disk, as the failure tells the callers. Only a
	 * group larger than a whole segment is split across segments. */
	if (g->n > 0 && (l->active == 0 || l->tail + g->used > limit) &&
	    new_segment(l) == -1)
		return -1;
	while (from < g->n) {
		size_t to = from;
		uint64_t room = l->active != 0 && limit > l->tail ?
		    limit - l->tail : 0;

		/* as many whole records as fit this segment */
		while (to < g->n) {
			size_t end = to + 1 < g->n ? g->recs[to + 1].off : g->used;

			if (end - g->recs[from].off > room)
				break;
			to++;
		}
		if (to == from) {
			/* full (or none): the next one. If it cannot be made,
			 * nothing was written and the active one stays. */
			if (new_segment(l) == -1)
				return -1;
			continue;
		}
		if (write_run(l, g, from, to, !(flags & SEGLOG_NOSYNC)) == -1) {
			l->active = 0;    /* never append after a failed write */
			return -1;
		}
		from = to;
	}
	return 0;
}

int
seglog_read(struct seglog *l, struct seglog_pos pos, void *buf, size_t len)
{
	unsigned char hdr[SEGLOG_HDR];
	struct segfile *s;
	struct iovec iov = { buf, len };
	ssize_t r1, r2 = 0;
	int e = 0;

	if (len > SEGLOG_MAX_RECORD) {
		errno = EBADMSG;
		return -1;
	}
	pthread_rwlock_rdlock(&l->lock);
	s = seg_find(l, pos.seg);
	if (s == NULL)
		e = ENOENT;
	else if ((r1 = pread(s->fd, hdr, sizeof(hdr), (off_t)pos.off)) !=
	    (ssize_t)sizeof(hdr) || (len > 0 && (r2 = pread(s->fd, buf, len,
	    (off_t)(pos.off + SEGLOG_HDR))) != (ssize_t)len))
		e = r1 == -1 || r2 == -1 ? errno : EBADMSG;
	pthread_rwlock_unlock(&l->lock);
	if (e == 0 && (get32(hdr) != SEGLOG_MAGIC || get32(hdr + 4) != len ||
	    rec_crc(hdr, &iov, 1) != get32(hdr + 12)))
		e = EBADMSG;
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

uint64_t
seglog_segment_size(const struct seglog *l)
{
	return l->segsize;
}

uint64_t
seglog_active(const struct seglog *l)
{
	return l->active;
}

size_t
seglog_segments(const struct seglog *l, uint64_t *bytes)
{
	if (bytes != NULL)
		*bytes = (uint64_t)l->nsegs * l->segsize;
	return l->nsegs;
}

int
seglog_drop(struct seglog *l, uint64_t seg)
{
	char name[SEG_NAME_LEN + 1];
	struct segfile *s;
	int fd;

	if (seg == l->active) {
		errno = EBUSY;
		return -1;
	}
	pthread_rwlock_wrlock(&l->lock);
	s = seg_find(l, seg);
	if (s == NULL) {
		pthread_rwlock_unlock(&l->lock);
		errno = ENOENT;
		return -1;
	}
	fd = s->fd;
	memmove(s, s + 1, (size_t)(l->segs + l->nsegs - (s + 1)) * sizeof(*s));
	l->nsegs--;
	pthread_rwlock_unlock(&l->lock);
	close(fd);
	seg_name(name, seg);
	/* Durable at once: a segment that came back after a crash, while a
	 * later one holding its messages' DONE records was gone for good,
	 * would bring finished messages back. One fsync per segment. */
	if (unlinkat(l->dirfd, name, 0) == -1)
		return -1;
	return fsync(l->dirfd);
}
