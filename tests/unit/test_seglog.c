/*
 * test_seglog.c - the segment log: record encoding and scanning (clean
 * end, torn tail, flipped bits), commit groups across segments, reading
 * back, recovery that never appends to a scanned segment, and dropping.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/seglog.h"

#define SEGSIZE SEGLOG_MIN_SEGMENT

struct fx {
	char dir[64];
	int dirfd;
	struct seglog *l;
};

static int
setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	char err[256];

	log_set_level(LOG_LEVEL_ERR);
	util_strlcpy(f->dir, "/tmp/tern-seglog-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY);
	assert_true(f->dirfd >= 0);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_non_null(f->l);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char mnt[128];

	seglog_free(&f->l);
	close(f->dirfd);
	/* test_enospc_reserve's file system, also when it failed */
	snprintf(mnt, sizeof(mnt), "%s/small", f->dir);
	(void)umount2(mnt, MNT_DETACH);
	unit_rm_tree(f->dir);
	free(f);
	return 0;
}

/* What a scan saw: up to 64 records, their payloads copied. */
struct seen {
	size_t n;
	enum seglog_type type[64];
	uint64_t id[64];
	char payload[64][64];
	struct seglog_pos pos[64];
};

static int
collect(void *arg, const struct seglog_rec *r)
{
	struct seen *s = arg;

	if (s->n == 64)
		return 7;
	s->type[s->n] = r->type;
	s->id[s->n] = r->id;
	snprintf(s->payload[s->n], sizeof(s->payload[0]), "%.*s",
	    (int)(r->len < 63 ? r->len : 63), (const char *)r->payload);
	s->pos[s->n] = r->pos;
	s->n++;
	return 0;
}

/* Build an image of records with payloads p[0..n) in memory. */
static size_t
image(unsigned char *buf, size_t size, const char *const *p, size_t n)
{
	size_t off = 0;

	memset(buf, 0, size);
	for (size_t i = 0; i < n; i++) {
		struct iovec iov = { (void *)p[i], strlen(p[i]) };

		assert_true(off + seglog_rec_size(iov.iov_len) <= size);
		seglog_encode_header(buf + off, SEGLOG_JRN, 100 + i, &iov, 1);
		memcpy(buf + off + SEGLOG_HDR, p[i], iov.iov_len);
		off += seglog_rec_size(iov.iov_len);
	}
	return off;
}

static void
test_scan_image(void **state)
{
	const char *p[] = { "D 0\n", "", "T 1 1796000000 1 451 4.4.1 x\n" };
	unsigned char buf[512];
	size_t used = image(buf, sizeof(buf), p, 3), end;
	enum seglog_end how;
	struct seen s = { 0 };

	(void)state;
	/* the preallocated zero tail is a clean end */
	assert_int_equal(seglog_scan_image(buf, sizeof(buf), 5, collect, &s,
	    &end, &how), 0);
	assert_int_equal(how, SEGLOG_END_CLEAN);
	assert_int_equal(end, used);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.type[0], SEGLOG_JRN);
	assert_int_equal(s.id[2], 102);
	assert_string_equal(s.payload[0], "D 0\n");
	assert_string_equal(s.payload[1], "");
	assert_int_equal(s.pos[1].seg, 5);
	assert_int_equal(s.pos[1].off, seglog_rec_size(4));
	assert_int_equal(used % SEGLOG_ALIGN, 0);

	/* an image that ends exactly after a record */
	memset(&s, 0, sizeof(s));
	seglog_scan_image(buf, used, 5, collect, &s, &end, &how);
	assert_int_equal(how, SEGLOG_END_CLEAN);
	assert_int_equal(s.n, 3);

	/* torn: cut inside the last record; the first two survive */
	memset(&s, 0, sizeof(s));
	seglog_scan_image(buf, used - 5, 5, collect, &s, &end, &how);
	assert_int_equal(how, SEGLOG_END_TORN);
	assert_int_equal(s.n, 2);
	assert_int_equal(end, s.pos[1].off + seglog_rec_size(0));

	/* a flipped bit in a payload, the header, or the padding */
	size_t at[] = { SEGLOG_HDR + 1, 5, 9, 17, SEGLOG_HDR + 5 };
	for (size_t i = 0; i < nitems(at); i++) {
		buf[at[i]] ^= 0x10;
		memset(&s, 0, sizeof(s));
		seglog_scan_image(buf, sizeof(buf), 5, collect, &s, &end, &how);
		assert_int_equal(how, SEGLOG_END_TORN);
		assert_int_equal(s.n, 0);
		assert_int_equal(end, 0);
		buf[at[i]] ^= 0x10;
	}

	/* a callback's value stops the scan */
	assert_int_equal(seglog_scan_image(buf, sizeof(buf), 5, NULL, NULL,
	    &end, &how), 0);
	assert_int_equal(end, used);
}

static int
stop_at_two(void *arg, const struct seglog_rec *r)
{
	size_t *n = arg;

	(void)r;
	return ++*n == 2 ? 42 : 0;
}

static void
test_scan_stops(void **state)
{
	const char *p[] = { "a", "b", "c" };
	unsigned char buf[256];
	size_t n = 0, end;
	enum seglog_end how;

	(void)state;
	image(buf, sizeof(buf), p, 3);
	assert_int_equal(seglog_scan_image(buf, sizeof(buf), 1, stop_at_two,
	    &n, &end, &how), 42);
	assert_int_equal(n, 2);
	/* a length over the bound is not a record */
	buf[7] = 0x7f;
	n = 0;
	seglog_scan_image(buf, sizeof(buf), 1, stop_at_two, &n, &end, &how);
	assert_int_equal(n, 0);
	assert_int_equal(how, SEGLOG_END_TORN);
}

static void
add(struct seglog_group *g, enum seglog_type t, uint64_t id, const char *s)
{
	struct iovec iov = { (void *)s, strlen(s) };

	assert_true(seglog_group_add(g, t, id, &iov, 1) >= 0);
}

static void
test_commit_read_recover(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	struct seen s = { 0 };
	struct seglog_pos p0, p1, p2;
	char buf[64], err[256];

	add(g, SEGLOG_MSG, 1, "version 1\nmessage one");
	add(g, SEGLOG_JRN, 1, "D 0\n");
	{
		/* an empty payload given as a null pointer (zlib's crc32()
		 * restarts on one) */
		struct iovec none = { NULL, 0 };

		assert_int_equal(seglog_group_add(g, SEGLOG_DONE, 3, &none, 1), 2);
	}
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	p0 = seglog_group_pos(g, 0);
	p1 = seglog_group_pos(g, 1);
	assert_int_equal(p0.seg, 1);
	assert_int_equal(seglog_active(f->l), 1);
	seglog_group_reset(g);
	add(g, SEGLOG_DONE, 1, "");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	p2 = seglog_group_pos(g, 0);
	assert_int_equal(p2.seg, 1);
	assert_true(p2.off > p1.off);

	assert_int_equal(seglog_read(f->l, p0, buf, 21), 0);
	assert_memory_equal(buf, "version 1\nmessage one", 21);
	/* a wrong length or position is refused, not misread */
	assert_int_equal(seglog_read(f->l, p0, buf, 20), -1);
	assert_int_equal(errno, EBADMSG);
	p1.off += 8;
	assert_int_equal(seglog_read(f->l, p1, buf, 4), -1);

	/* a new log over the same directory recovers the records, SEG
	 * records hidden, and appends to a new segment */
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_non_null(f->l);
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.type[0], SEGLOG_MSG);
	assert_int_equal(s.type[2], SEGLOG_DONE);
	assert_int_equal(s.id[2], 3);
	assert_int_equal(s.type[3], SEGLOG_DONE);
	assert_int_equal(seglog_read(f->l, p0, buf, 21), 0);
	seglog_group_reset(g);
	add(g, SEGLOG_JRN, 2, "D 1\n");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 2);
	assert_int_equal(seglog_segments(f->l, NULL), 2);

	/* a commit without its own sync is read back and recovered like
	 * any other (the next sync covers it) */
	seglog_group_reset(g);
	add(g, SEGLOG_DONE, 2, "");
	assert_int_equal(seglog_commit(f->l, g, SEGLOG_NOSYNC), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 2);
	seglog_group_reset(g);
	add(g, SEGLOG_JRN, 4, "D 0\n");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	memset(&s, 0, sizeof(s));
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 7);
	assert_int_equal(s.type[5], SEGLOG_DONE);
	assert_int_equal(s.id[5], 2);
	seglog_group_reset(g);
	add(g, SEGLOG_JRN, 5, "D 0\n");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);

	/* segment 1 is no longer needed: dropped; the active one is not */
	assert_int_equal(seglog_drop(f->l, 3), -1);
	assert_int_equal(errno, EBUSY);
	assert_int_equal(seglog_drop(f->l, 1), 0);
	assert_int_equal(seglog_segments(f->l, NULL), 2);
	assert_int_equal(seglog_read(f->l, p0, buf, 21), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(faccessat(f->dirfd, "seg/0000000000000001.seg", F_OK, 0),
	    -1);
	seglog_group_free(&g);
}

/* A log opened over old segments numbers new ones after them even when
 * it is not recovered first. */
static void
test_numbering_without_recovery(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	char err[256];

	add(g, SEGLOG_MSG, 1, "one");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_non_null(f->l);
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 2);
	seglog_group_free(&g);
}

/* A torn tail (a crash mid-write) is dropped; what came before stays, and
 * nothing is ever appended after it. */
static void
test_torn_tail_recovery(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	struct seen s = { 0 };
	char err[256];
	int fd;
	uint64_t end;

	add(g, SEGLOG_MSG, 7, "acknowledged");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	end = seglog_group_pos(g, 0).off + seglog_rec_size(12);
	/* half a record after it, as a crash during the next group leaves */
	fd = openat(f->dirfd, "seg/0000000000000001.seg", O_RDWR);
	assert_true(fd >= 0);
	{
		unsigned char rec[64];
		struct iovec iov = { "never synced", 12 };

		seglog_encode_header(rec, SEGLOG_MSG, 8, &iov, 1);
		memcpy(rec + SEGLOG_HDR, "never synced", 12);
		assert_int_equal(pwrite(fd, rec, SEGLOG_HDR + 6, (off_t)end),
		    SEGLOG_HDR + 6);
	}
	close(fd);
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.id[0], 7);
	seglog_group_reset(g);
	add(g, SEGLOG_DONE, 7, "");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 2);
	seglog_group_free(&g);
}

/* A group larger than a segment's room continues in the next segment;
 * every record is whole in one segment. */
static void
test_group_spans_segments(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	size_t big = SEGLOG_MAX_RECORD - 100;
	char *p = xcalloc(1, big), err[256];
	struct seen s = { 0 };

	memset(p, 'x', big);
	for (int i = 0; i < 3; i++) {
		struct iovec iov = { p, big };

		assert_int_equal(seglog_group_add(g, SEGLOG_MSG, 10 + (uint64_t)i,
		    &iov, 1), i);
	}
	{
		struct iovec iov = { p, SEGLOG_MAX_RECORD + 1 };

		assert_int_equal(seglog_group_add(g, SEGLOG_MSG, 1, &iov, 1), -1);
		assert_int_equal(errno, EMSGSIZE);
	}
	/* a segment of twice the largest record holds two of them, but
	 * for its reserve: a normal commit puts one in each */
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(seglog_group_pos(g, (size_t)i).seg, 1 + (uint64_t)i);
		assert_int_equal(seglog_group_pos(g, (size_t)i).off, SEGLOG_HDR + 24);
	}
	assert_int_equal(seglog_read(f->l, seglog_group_pos(g, 2), p, big), 0);
	/* a commit allowed the reserve fills the active segment (3) first */
	seglog_group_reset(g);
	{
		struct iovec iov = { p, big / 2 };

		assert_int_equal(seglog_group_add(g, SEGLOG_JRN, 12, &iov, 1), 0);
		assert_int_equal(seglog_commit(f->l, g, SEGLOG_RESERVE), 0);
		assert_int_equal(seglog_group_pos(g, 0).seg, 3);
	}
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.id[2], 12);
	assert_int_equal(s.type[3], SEGLOG_JRN);
	free(p);
	seglog_group_free(&g);
}

/* A caller's records that did not all fit are taken back; a group holds
 * at most SEGLOG_GROUP_BYTES (unless it has one record only). */
static void
test_group_bounds(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	struct seen s = { 0 };
	struct seglog_rec r;
	size_t big = SEGLOG_MAX_RECORD - 64, n = 0;
	char *p = xcalloc(1, big), err[256];
	struct iovec iov = { p, big };

	add(g, SEGLOG_MSG, 1, "kept");
	add(g, SEGLOG_JRN, 2, "taken back");
	add(g, SEGLOG_JRN, 3, "taken back too");
	seglog_group_truncate(g, 1);
	assert_int_equal(seglog_group_count(g), 1);
	seglog_group_rec(g, 0, &r);
	assert_int_equal(r.type, SEGLOG_MSG);
	assert_int_equal(r.id, 1);
	assert_int_equal(r.len, 4);
	assert_memory_equal(r.payload, "kept", 4);
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	seglog_free(&f->l);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.payload[0], "kept");

	seglog_group_reset(g);
	while (seglog_group_add(g, SEGLOG_MSG, 9, &iov, 1) >= 0)
		n++;
	assert_int_equal(errno, ENOBUFS);
	assert_true(n * seglog_rec_size(big) <= SEGLOG_GROUP_BYTES);
	assert_true((n + 1) * seglog_rec_size(big) > SEGLOG_GROUP_BYTES);
	free(p);
	seglog_group_free(&g);
}

/* On a full file system: a new segment cannot be made (ENOSPC, nothing
 * written, the active segment still good), a commit allowed the reserve
 * still succeeds, and once a segment is dropped the log goes on. Needs
 * root for a small tmpfs of its own. */
static void
test_enospc_reserve(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	char mnt[128], err[256], *p;
	size_t rec = SEGLOG_MAX_RECORD / 2;
	struct iovec iov;
	int dfd, rc = 0, n = 0;
	struct seglog *l;

	if (geteuid() != 0)
		skip();
	snprintf(mnt, sizeof(mnt), "%s/small", f->dir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	/* two segments of 8 MiB fit, a third does not */
	assert_int_equal(mount("tern-seglog", mnt, "tmpfs", 0,
	    "size=20m,mode=0700"), 0);
	dfd = open(mnt, O_RDONLY | O_DIRECTORY);
	l = seglog_open(dfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err, sizeof(err));
	assert_non_null(l);
	p = xcalloc(1, rec);
	iov.iov_base = p;
	iov.iov_len = rec;
	struct seglog_pos last = { 0, 0 };

	while (n < 64 && (rc = (seglog_group_reset(g),
	    seglog_group_add(g, SEGLOG_MSG, 1 + (uint64_t)n, &iov, 1),
	    seglog_commit(l, g, 0))) == 0) {
		last = seglog_group_pos(g, 0);
		n++;
	}
	assert_int_equal(rc, -1);
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(seglog_active(l), 2);
	/* a group whose first record would still fit fails whole: nothing
	 * of it is written (its caller is told it failed) */
	seglog_group_reset(g);
	add(g, SEGLOG_JRN, 1, "D 0\n");
	seglog_group_add(g, SEGLOG_MSG, 98, &iov, 1);
	assert_int_equal(seglog_commit(l, g, 0), -1);
	assert_int_equal(errno, ENOSPC);
	/* progress still fits in the reserve of segment 2, right after the
	 * last record written */
	seglog_group_reset(g);
	add(g, SEGLOG_DONE, 1, "");
	assert_int_equal(seglog_commit(l, g, SEGLOG_RESERVE), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 2);
	assert_int_equal(seglog_group_pos(g, 0).off,
	    last.off + seglog_rec_size(rec));
	/* segment 1 freed: new mail goes on, in segment 5 (3 and 4 are
	 * never reused: a crash may have left their files half made) */
	assert_int_equal(seglog_drop(l, 1), 0);
	seglog_group_reset(g);
	seglog_group_add(g, SEGLOG_MSG, 99, &iov, 1);
	assert_int_equal(seglog_commit(l, g, 0), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 5);
	seglog_free(&l);
	close(dfd);
	free(p);
	seglog_group_free(&g);
	assert_int_equal(umount(mnt), 0);
}

/* A file named like a segment that is not one is refused, not parsed. */
static void
test_foreign_segment(void **state)
{
	struct fx *f = *state;
	struct seglog_group *g = seglog_group_new();
	struct seen s = { 0 };
	char err[256];
	int fd;

	add(g, SEGLOG_MSG, 7, "x");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	seglog_free(&f->l);
	/* a copy of segment 1 under the number 5 */
	assert_int_equal(renameat(f->dirfd, "seg/0000000000000001.seg",
	    f->dirfd, "seg/0000000000000005.seg"), 0);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a format-2 tern segment"));
	/* a segment created but never written (a crash right after
	 * creating it) holds nothing and is fine */
	seglog_free(&f->l);
	unlinkat(f->dirfd, "seg/0000000000000005.seg", 0);
	fd = openat(f->dirfd, "seg/0000000000000006.seg", O_RDWR | O_CREAT, 0600);
	assert_int_equal(ftruncate(fd, 4096), 0);
	close(fd);
	f->l = seglog_open(f->dirfd, SEGSIZE, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_recover(f->l, collect, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 0);
	seglog_group_reset(g);
	add(g, SEGLOG_MSG, 8, "y");
	assert_int_equal(seglog_commit(f->l, g, 0), 0);
	assert_int_equal(seglog_group_pos(g, 0).seg, 7);
	seglog_group_free(&g);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scan_image),
		cmocka_unit_test(test_scan_stops),
		cmocka_unit_test_setup_teardown(test_commit_read_recover, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_numbering_without_recovery,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_recovery, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_group_spans_segments, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_group_bounds, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_foreign_segment, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_enospc_reserve, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
