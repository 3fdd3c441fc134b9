/*
 * test_spool.c - the on-disk queue, format 2: commit (in the log and to
 * big/), recovery across restarts, journal replay, id uniqueness, corrupt
 * images, format-1 conversion, quarantine and segment reclaim.
 */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mail/envelope.h"
#include "lib/log.h"
#include "queue/seglog.h"
#include "queue/spool.h"
#include "lib/util.h"

struct fx {
	char dir[64];
	struct spool *sp;
};

static int
setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	char err[256];

	log_set_level(LOG_LEVEL_ERR);
	util_strlcpy(f->dir, "/tmp/tern-spool-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	f->sp = spool_open(f->dir, (uid_t)-1, (gid_t)-1, err, sizeof(err));
	assert_non_null(f->sp);
	assert_int_equal(spool_recover(f->sp, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	spool_free(&f->sp);
	unit_rm_tree(f->dir);
	free(f);
	return 0;
}

static void
make_env(struct envelope *env, size_t nrcpts)
{
	envelope_init(env);
	env->arrival = 1796000000;
	envelope_set(&env->sender, "alice@example.org");
	envelope_set(&env->protocol, "ESMTP");
	for (size_t i = 0; i < nrcpts; i++) {
		char a[32];
		snprintf(a, sizeof(a), "u%zu@localhost", i);
		envelope_add_rcpt(env, a, NULL, 0);
	}
}

static bool
exists(const char *dir, const char *sub, const char *id)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, id);
	return stat(p, &st) == 0;
}

static int
count_dir(const char *dir, const char *sub)
{
	char p[256];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(p, sizeof(p), "%s/%s", dir, sub);
	d = opendir(p);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* A restart: a new spool over the same directory, recovered. Returns
 * what spool_recover() returned. */
static int
reopen(struct fx *f)
{
	char err[256];
	int rc;

	spool_free(&f->sp);
	f->sp = spool_open(f->dir, (uid_t)-1, (gid_t)-1, err, sizeof(err));
	assert_non_null(f->sp);
	rc = spool_recover(f->sp, err, sizeof(err));
	if (rc == -1)
		fail_msg("recover: %s", err);
	return rc;
}

static void
scan_count(void *arg, const char *id)
{
	(*(int *)arg)++;
	assert_true(spool_valid_id(id));
}

static int
queued(struct fx *f)
{
	int n = 0, r = spool_scan(f->sp, scan_count, &n);

	assert_int_equal(r, n);
	return n;
}

/* Receive and commit one message; returns its id in id. */
static void
commit_one(struct fx *f, size_t nrcpts, const char *body, size_t len,
    char id[17])
{
	struct envelope env;
	struct spool_txn *t;

	make_env(&env, nrcpts);
	t = spool_txn_begin(f->sp, &env);
	assert_non_null(t);
	assert_string_equal(env.id, spool_txn_id(t));
	assert_int_equal(spool_txn_write(t, body, len / 2), 0);
	assert_int_equal(spool_txn_write(t, body + len / 2, len - len / 2), 0);
	assert_int_equal(spool_txn_size(t), len);
	spool_commit_batch(f->sp, &t, 1);
	assert_int_equal(spool_txn_error(t), 0);
	util_strlcpy(id, env.id, 17);
	spool_txn_free(&t);
	envelope_clear(&env);
}

static void
check_body(struct fx *f, const char *id, const char *body, size_t len)
{
	char err[256];
	struct spool_msg *m = spool_msg_load(f->sp, id, err, sizeof(err));
	const char *b;
	size_t blen;

	if (m == NULL)
		fail_msg("load %s: %s", id, err);
	assert_string_equal(spool_msg_id(m), id);
	assert_string_equal(spool_msg_envelope(m)->id, id);
	b = spool_msg_body(m, &blen);
	assert_int_equal(blen, len);
	assert_memory_equal(b, body, blen);
	spool_msg_close(&m);
}

static void
test_commit_and_load(void **state)
{
	struct fx *f = *state;
	static const char body[] = "Received: x\r\nSubject: hi\r\n\r\nbody\r\n";
	char id[17], err[256];
	struct spool_msg *m;

	commit_one(f, 2, body, sizeof(body) - 1, id);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	assert_string_equal(spool_msg_envelope(m)->sender, "alice@example.org");
	assert_int_equal(spool_msg_envelope(m)->nrcpts, 2);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_PENDING);
	assert_false(spool_msg_done(m));
	spool_msg_close(&m);
	check_body(f, id, body, sizeof(body) - 1);
	/* in the log, nowhere else: it is there after a restart */
	assert_int_equal(count_dir(f->dir, "big"), 0);
	reopen(f);
	assert_int_equal(queued(f), 1);
	check_body(f, id, body, sizeof(body) - 1);
}

static void
test_batch_commit(void **state)
{
	struct fx *f = *state;
	struct spool_txn *t[20];
	struct envelope env[20];

	for (int i = 0; i < 20; i++) {
		make_env(&env[i], 1);
		t[i] = spool_txn_begin(f->sp, &env[i]);
		assert_non_null(t[i]);
		assert_int_equal(spool_txn_write(t[i], "x\r\n", 3), 0);
	}
	spool_commit_batch(f->sp, t, 20);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(spool_txn_error(t[i]), 0);
		spool_txn_free(&t[i]);
		envelope_clear(&env[i]);
	}
	assert_int_equal(queued(f), 20);
	reopen(f);
	assert_int_equal(queued(f), 20);
	/* one segment, no files per message */
	assert_int_equal(count_dir(f->dir, "seg"), 1);
}

/* Bodies over spool_inline_max go to big/<id>; the record names it. */
static void
test_big_body(void **state)
{
	struct fx *f = *state;
	char *body = xcalloc(1, 5000), id[17], err[256];
	struct spool_msg *m;

	for (size_t i = 0; i < 5000; i++)
		body[i] = (char)('a' + i % 26);
	spool_set_inline_max(f->sp, 1000);
	commit_one(f, 1, body, 5000, id);
	assert_true(exists(f->dir, "big", id));
	check_body(f, id, body, 5000);
	reopen(f);
	check_body(f, id, body, 5000);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	spool_msg_delivered(m, 0);
	assert_int_equal(spool_msg_flush(m), 0);
	assert_int_equal(spool_msg_remove(m), 0);
	spool_msg_close(&m);
	assert_false(exists(f->dir, "big", id));
	reopen(f);
	assert_int_equal(queued(f), 0);
	free(body);
}

static void
test_recovery(void **state)
{
	struct fx *f = *state;
	struct envelope env;
	struct spool_txn *t, *t2, *t3;
	char id[17], big[4096];

	commit_one(f, 1, "committed\r\n", 11, id);
	/* Transactions left open by a "crash" (one with a big/ file), one
	 * aborted. */
	spool_set_inline_max(f->sp, 100);
	make_env(&env, 1);
	t = spool_txn_begin(f->sp, &env);
	assert_int_equal(spool_txn_write(t, "partial", 7), 0);
	envelope_clear(&env);
	make_env(&env, 1);
	t3 = spool_txn_begin(f->sp, &env);
	memset(big, 'b', sizeof(big));
	assert_int_equal(spool_txn_write(t3, big, sizeof(big)), 0);
	assert_true(exists(f->dir, "big", env.id));
	envelope_clear(&env);
	make_env(&env, 1);
	t2 = spool_txn_begin(f->sp, &env);
	assert_int_equal(spool_txn_write(t2, big, sizeof(big)), 0);
	spool_txn_abort(&t2);
	assert_null(t2);
	assert_false(exists(f->dir, "big", env.id));
	envelope_clear(&env);
	spool_txn_free(&t);   /* closes without removing: the crash */
	spool_txn_free(&t3);

	/* A fresh start on the same spool: only the committed one. */
	assert_int_equal(reopen(f), 0);
	assert_int_equal(queued(f), 1);
	assert_int_equal(count_dir(f->dir, "big"), 0);
	/* New ids sort after every recovered one. */
	{
		char next[17];
		spool_next_id(f->sp, next);
		assert_true(strcmp(next, id) > 0);
	}
}

static void
test_id_unique_and_sorted(void **state)
{
	struct fx *f = *state;
	char prev[17] = "", id[17];
	int64_t now = util_now_us();

	for (int i = 0; i < 100000; i++) {
		spool_next_id(f->sp, id);
		assert_true(spool_valid_id(id));
		assert_true(strcmp(id, prev) > 0);
		memcpy(prev, id, sizeof(id));
	}
	/* The id tells the arrival time (microseconds). */
	assert_true(spool_id_time_us(id) >= now - 1000000);
	assert_true(spool_id_time_us(id) <= util_now_us() + 1000000);
	assert_false(spool_valid_id("0123456789ABCDEF"));
	assert_false(spool_valid_id("0123456789abcde"));
	assert_false(spool_valid_id("0123456789abcdef0"));
}

static void
test_journal_replay(void **state)
{
	struct fx *f = *state;
	char id[17], err[256];
	struct spool_msg *m;

	commit_one(f, 4, "body\r\n", 6, id);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	spool_msg_delivered(m, 0);
	spool_msg_failed(m, 1, "550 5.1.1 no such user\r\nD 3");  /* CRLF scrubbed */
	spool_msg_deferred(m, 2, 1796000600, "451 4.3.0 disk trouble");
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);

	for (int pass = 0; pass < 2; pass++) {
		/* the same after a restart: the journal is in the log */
		m = spool_msg_load(f->sp, id, err, sizeof(err));
		assert_non_null(m);
		assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
		assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_FAILED);
		assert_string_equal(spool_msg_rcpt(m, 1)->reply,
		    "550 5.1.1 no such user??D 3");
		assert_int_equal(spool_msg_rcpt(m, 2)->state, SPOOL_RCPT_DEFERRED);
		assert_int_equal(spool_msg_rcpt(m, 2)->attempts, 1);
		assert_int_equal(spool_msg_rcpt(m, 2)->next_attempt, 1796000600);
		assert_string_equal(spool_msg_rcpt(m, 2)->reply,
		    "451 4.3.0 disk trouble");
		assert_int_equal(spool_msg_rcpt(m, 3)->state, SPOOL_RCPT_PENDING);
		assert_false(spool_msg_done(m));
		spool_msg_close(&m);
		reopen(f);
	}
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	spool_msg_deferred(m, 2, 1796001000, "451 4.3.0 again");
	spool_msg_delivered(m, 3);
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_int_equal(spool_msg_rcpt(m, 2)->attempts, 2);
	assert_int_equal(spool_msg_rcpt(m, 3)->state, SPOOL_RCPT_DELIVERED);
	spool_msg_delivered(m, 2);
	assert_true(spool_msg_done(m));
	assert_int_equal(spool_msg_flush(m), 0);
	assert_int_equal(spool_msg_remove(m), 0);
	spool_msg_close(&m);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_null(m);
	assert_int_equal(errno, ENOENT);
	reopen(f);
	assert_int_equal(queued(f), 0);
}

/* spool_msg_parse: the loader's parsing over an image in memory (what
 * fuzz_spool_journal drives), with the same verdicts as the loader. */
static void
test_parse_image(void **state)
{
	static const char img[] =
	    "tern-queue 1 00000000000000000006\n"
	    "version 1\nid 0123456789abcdef\narrival 1796000000\nsender \n"
	    "rcpt - - a@localhost\nrcpt - - b@localhost\n\n"
	    "body\r\n"
	    "A 0 1796000100 s mx.test\nT 0 1796000600 1 451 4.3.0 later\n"
	    "H 1796000200\nA 1 1796000100 l -\nD 1\nR 1\nD 0";
	const struct spool_rcpt_status *st;
	struct spool_msg *m;
	size_t keep, blen;
	int64_t since;
	char err[256];

	m = spool_msg_parse("0123456789abcdef", img, sizeof(img) - 1, &keep, err,
	    sizeof(err));
	assert_non_null(m);
	assert_memory_equal(spool_msg_body(m, &blen), "body\r\n", 6);
	assert_int_equal(blen, 6);
	/* the torn "D 0" is not applied and would be cut */
	assert_int_equal(keep, sizeof(img) - 1 - 3);
	st = spool_msg_rcpt(m, 0);
	assert_int_equal(st->state, SPOOL_RCPT_DEFERRED);
	assert_int_equal(st->how, 's');
	assert_string_equal(st->mta, "mx.test");
	assert_string_equal(st->reply, "451 4.3.0 later");
	st = spool_msg_rcpt(m, 1);
	assert_int_equal(st->state, SPOOL_RCPT_DELIVERED);
	assert_true(st->reported);
	assert_int_equal(st->how, 'l');
	assert_true(spool_msg_held(m, &since));
	assert_int_equal(since, 1796000200);
	spool_msg_close(&m);

	/* the id must match, and a corrupt image is EBADMSG */
	m = spool_msg_parse("0123456789abcdee", img, sizeof(img) - 1, NULL, err,
	    sizeof(err));
	assert_null(m);
	assert_int_equal(errno, EBADMSG);
	assert_non_null(strstr(err, "does not match"));
	m = spool_msg_parse("0123456789abcdef", img, 40, NULL, err, sizeof(err));
	assert_null(m);
	assert_int_equal(errno, EBADMSG);
	m = spool_msg_parse("xyz", img, sizeof(img) - 1, NULL, err, sizeof(err));
	assert_null(m);
	assert_int_equal(errno, EINVAL);
}

static void
write_file(struct fx *f, const char *sub, const char *id, const char *content,
    size_t len)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	(void)mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/%s/%s", f->dir, sub, id);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, content, len), 0);
	close(fd);
}

/* Images that are not queue files are EBADMSG, never loaded. */
static void
test_corrupt_images(void **state)
{
	static const struct {
		const char *name;
		const char *content;
	} cases[] = {
		{ "empty", "" },
		{ "bad magic", "tern-queux 1 00000000000000000000\nversion 1\n" },
		{ "future version", "tern-queue 2 00000000000000000006\nversion 1\narrival 1\nsender \nid 00000000000000aa\nrcpt - - a@b\n\nbody\r\n" },
		{ "length not digits", "tern-queue 1 0000000000000000000x\nversion 1\n" },
		{ "length beyond file", "tern-queue 1 00000000000000000099\nversion 1\narrival 1\nsender \nid 00000000000000aa\nrcpt - - a@b\n\nbody\r\n" },
		{ "no blank line", "tern-queue 1 00000000000000000000\nversion 1\narrival 1\nsender \n" },
		{ "bad envelope", "tern-queue 1 00000000000000000000\nversion 1\narrival x\nsender \nid 00000000000000aa\nrcpt - - a@b\n\n" },
		{ "id mismatch", "tern-queue 1 00000000000000000000\nversion 1\narrival 1\nsender \nid 00000000000000bb\nrcpt - - a@b\n\n" },
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < nitems(cases); i++) {
		struct spool_msg *m = spool_msg_parse("00000000000000aa",
		    cases[i].content, strlen(cases[i].content), NULL, err,
		    sizeof(err));

		if (m != NULL)
			fail_msg("case \"%s\": loaded", cases[i].name);
		if (errno != EBADMSG)
			fail_msg("case \"%s\": errno %d", cases[i].name, errno);
	}
}

/* A format-1 spool is converted at start-up: incoming/ emptied, queue/
 * files into the log with their journals, a corrupt one set aside, and
 * both directories gone. */
static void
test_format1_conversion(void **state)
{
	struct fx *f = *state;
	static const char good[] = "tern-queue 1 00000000000000000006\n"
	    "version 1\nid 00000000000000aa\narrival 1\nsender \n"
	    "rcpt - - a@b\nrcpt - - c@d\n\nbody\r\nD 0\nT 1 1796000600 2 451 4.4.1 x\n";
	char err[256];
	struct spool_msg *m;

	write_file(f, "queue", "00000000000000aa", good, sizeof(good) - 1);
	write_file(f, "queue", "00000000000000bb", "tern-queux", 10);
	write_file(f, "incoming", "00000000000000cc", "tern-queue 1 0", 14);
	assert_int_equal(reopen(f), 1);
	assert_int_equal(count_dir(f->dir, "queue"), -1);
	assert_int_equal(count_dir(f->dir, "incoming"), -1);
	assert_true(exists(f->dir, "corrupt", "00000000000000bb"));
	assert_int_equal(queued(f), 1);
	m = spool_msg_load(f->sp, "00000000000000aa", err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
	assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_DEFERRED);
	assert_int_equal(spool_msg_rcpt(m, 1)->attempts, 2);
	spool_msg_close(&m);
	check_body(f, "00000000000000aa", "body\r\n", 6);
	/* new ids come after the converted ones */
	{
		char next[17];
		spool_next_id(f->sp, next);
		assert_true(strcmp(next, "00000000000000aa") > 0);
	}
	reopen(f);
	assert_int_equal(queued(f), 1);
}

/* A conversion that a crash cut after the MSG (its journal record torn)
 * is resumed: the queue file's journal is written again. */
static void
test_format1_conversion_resumed(void **state)
{
	struct fx *f = *state;
	static const char first[] = "tern-queue 1 00000000000000000006\n"
	    "version 1\nid 00000000000000aa\narrival 1\nsender \n"
	    "rcpt - - a@b\nrcpt - - c@d\n\nbody\r\n";
	static const char again[] = "tern-queue 1 00000000000000000006\n"
	    "version 1\nid 00000000000000aa\narrival 1\nsender \n"
	    "rcpt - - a@b\nrcpt - - c@d\n\nbody\r\nD 0\nD 1\n";
	char err[256];
	struct spool_msg *m;

	/* the first run got the MSG in, not the journal (as if torn) */
	write_file(f, "queue", "00000000000000aa", first, sizeof(first) - 1);
	reopen(f);
	/* ... and the file was still there, with its journal */
	write_file(f, "queue", "00000000000000aa", again, sizeof(again) - 1);
	reopen(f);
	assert_int_equal(count_dir(f->dir, "queue"), -1);
	assert_int_equal(queued(f), 1);
	m = spool_msg_load(f->sp, "00000000000000aa", err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
	assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_DELIVERED);
	spool_msg_close(&m);
}

/* A big/ body that is not as long as its head line says is corrupt, not
 * read as a body plus journal lines. */
static void
test_big_body_length_checked(void **state)
{
	struct fx *f = *state;
	char body[5000], id[17], err[256], p[256];

	memset(body, 'q', sizeof(body));
	spool_set_inline_max(f->sp, 1000);
	commit_one(f, 1, body, sizeof(body), id);
	snprintf(p, sizeof(p), "%s/big/%s", f->dir, id);
	assert_int_equal(truncate(p, 4000), 0);
	assert_null(spool_msg_load(f->sp, id, err, sizeof(err)));
	assert_int_equal(errno, EBADMSG);
	assert_int_equal(truncate(p, 6000), 0);
	assert_null(spool_msg_load(f->sp, id, err, sizeof(err)));
	assert_int_equal(errno, EBADMSG);
}

/* A record with an id from the far future (a crafted or damaged
 * segment) does not stop the id generator. */
static void
test_future_id_not_believed(void **state)
{
	struct fx *f = *state;
	char err[256], a[17], b[17];
	struct seglog *l;
	struct seglog_group *g = seglog_group_new();
	struct iovec iov = { "x", 1 };
	int dfd;
	int64_t now = util_now_us();

	spool_free(&f->sp);
	dfd = open(f->dir, O_RDONLY | O_DIRECTORY);
	l = seglog_open(dfd, SEGLOG_MIN_SEGMENT, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	assert_int_equal(seglog_group_add(g, SEGLOG_MSG, UINT64_MAX, &iov, 1), 0);
	assert_int_equal(seglog_commit(l, g, 0), 0);
	seglog_group_free(&g);
	seglog_free(&l);
	close(dfd);
	f->sp = NULL;
	reopen(f);
	spool_next_id(f->sp, a);
	spool_next_id(f->sp, b);
	assert_true(strcmp(a, b) < 0);
	assert_true(spool_id_time_us(a) >= now - 1000000);
	assert_true(spool_id_time_us(a) <= util_now_us() + 1000000);
}

/* Quarantine: what can be read goes to corrupt/<id>; the message is
 * forgotten, also after a restart. */
static void
test_quarantine(void **state)
{
	struct fx *f = *state;
	char id[17], err[256];

	commit_one(f, 1, "odd\r\n", 5, id);
	assert_int_equal(spool_quarantine(f->sp, id), 0);
	assert_true(exists(f->dir, "corrupt", id));
	assert_null(spool_msg_load(f->sp, id, err, sizeof(err)));
	assert_int_equal(errno, ENOENT);
	reopen(f);
	assert_int_equal(queued(f), 0);
}

/* A message that stays (deferred) while everything around it finishes is
 * copied forward, journal and all, and its old segments go: one message
 * does not keep whole segments. */
static void
test_copy_forward(void **state)
{
	struct fx *f = *state;
	size_t len = 2u * 1024 * 1024;
	char *body = xcalloc(1, len), keep[17], id[17], err[256];
	struct spool_msg *m;

	memset(body, 'c', len);
	assert_int_equal(spool_set_segment_size(f->sp, SEGLOG_MIN_SEGMENT), 0);
	spool_set_inline_max(f->sp, SPOOL_INLINE_MAX_LIMIT);
	commit_one(f, 2, "keep me\r\n", 9, keep);
	m = spool_msg_load(f->sp, keep, err, sizeof(err));
	spool_msg_delivered(m, 0);
	spool_msg_deferred(m, 1, 1796000600, "451 4.7.0 later");
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	/* traffic that finishes: segments fill, seal and empty */
	for (int i = 0; i < 12; i++) {
		commit_one(f, 1, body, len, id);
		m = spool_msg_load(f->sp, id, err, sizeof(err));
		spool_msg_delivered(m, 0);
		assert_int_equal(spool_msg_remove(m), 0);
		spool_msg_close(&m);
	}
	/* segment 1, where it was received, is gone; it is intact */
	assert_false(exists(f->dir, "seg", "0000000000000001.seg"));
	assert_true(count_dir(f->dir, "seg") <= 3);
	for (int pass = 0; pass < 2; pass++) {
		m = spool_msg_load(f->sp, keep, err, sizeof(err));
		assert_non_null(m);
		assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
		assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_DEFERRED);
		assert_string_equal(spool_msg_rcpt(m, 1)->reply, "451 4.7.0 later");
		spool_msg_close(&m);
		check_body(f, keep, "keep me\r\n", 9);
		assert_int_equal(queued(f), 1);
		reopen(f);
	}
	free(body);
}

/* A finished message never comes back: its DONE record outlives the
 * older segment that holds its MSG (segments go oldest first), also when
 * other messages keep that older segment. */
static void
test_done_outlives_its_message(void **state)
{
	struct fx *f = *state;
	size_t len = 2u * 1024 * 1024 + 512 * 1024;
	char *body = xcalloc(1, len), keep[17], keep2[17], gone[17], id[17];
	char err[256];
	struct spool_msg *m;

	memset(body, 'd', len);
	assert_int_equal(spool_set_segment_size(f->sp, SEGLOG_MIN_SEGMENT), 0);
	spool_set_inline_max(f->sp, SPOOL_INLINE_MAX_LIMIT);
	/* two that stay queued: more than a quarter of their segment */
	commit_one(f, 1, body, 1536 * 1024, keep);
	commit_one(f, 1, body, 1536 * 1024, keep2);
	commit_one(f, 1, "finishes\r\n", 10, gone);
	for (int i = 0; i < 8; i++) {
		commit_one(f, 1, body, len, id);
		if (i == 1) {
			/* its DONE lands in a later segment than its MSG */
			m = spool_msg_load(f->sp, gone, err, sizeof(err));
			spool_msg_delivered(m, 0);
			assert_int_equal(spool_msg_remove(m), 0);
			spool_msg_close(&m);
		}
		m = spool_msg_load(f->sp, id, err, sizeof(err));
		spool_msg_delivered(m, 0);
		assert_int_equal(spool_msg_remove(m), 0);
		spool_msg_close(&m);
	}
	reopen(f);
	assert_int_equal(queued(f), 2);
	assert_null(spool_msg_load(f->sp, gone, err, sizeof(err)));
	check_body(f, keep, body, 1536 * 1024);
	check_body(f, keep2, body, 1536 * 1024);
	free(body);
}

struct grab {
	uint64_t key;
	char *payload;
	size_t len;
};

static int
grab_msg(void *arg, const struct seglog_rec *r)
{
	struct grab *g = arg;

	if (r->type == SEGLOG_MSG && r->id == g->key) {
		free(g->payload);
		g->payload = xcalloc(1, r->len + 1);
		memcpy(g->payload, r->payload, r->len);
		g->len = r->len;
	}
	return 0;
}

/* A copy forward whose SNAP was torn (a crash before its sync) leaves a
 * second MSG record alone: the journal from before is kept. */
static void
test_torn_copy_keeps_journal(void **state)
{
	struct fx *f = *state;
	char id[17], err[256];
	struct spool_msg *m;
	struct grab g = { 0 };
	struct seglog *l;
	struct seglog_group *grp;
	struct iovec iov;
	int dfd;

	commit_one(f, 2, "copied\r\n", 8, id);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	spool_msg_delivered(m, 0);
	spool_msg_set_held(m, true, 1796000000);
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	spool_free(&f->sp);
	/* the crash image: the MSG of a copy, no SNAP after it */
	dfd = open(f->dir, O_RDONLY | O_DIRECTORY);
	l = seglog_open(dfd, SEGLOG_MIN_SEGMENT, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err));
	g.key = strtoull(id, NULL, 16);
	assert_int_equal(seglog_recover(l, grab_msg, &g, err, sizeof(err)), 0);
	assert_non_null(g.payload);
	grp = seglog_group_new();
	iov.iov_base = g.payload;
	iov.iov_len = g.len;
	assert_int_equal(seglog_group_add(grp, SEGLOG_MSG, g.key, &iov, 1), 0);
	assert_int_equal(seglog_commit(l, grp, 0), 0);
	seglog_group_free(&grp);
	seglog_free(&l);
	close(dfd);
	free(g.payload);
	f->sp = NULL;
	reopen(f);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
	assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_PENDING);
	assert_true(spool_msg_held(m, NULL));
	spool_msg_close(&m);
}

/* Segments that no queued message needs are removed: at recovery, and
 * once the log has moved on to a new segment. */
static void
test_segments_reclaimed(void **state)
{
	struct fx *f = *state;
	size_t len = 2u * 1024 * 1024;
	char *body = xcalloc(1, len), ids[8][17], err[256];

	memset(body, 'z', len);
	assert_int_equal(spool_set_segment_size(f->sp, SEGLOG_MIN_SEGMENT), 0);
	spool_set_inline_max(f->sp, SPOOL_INLINE_MAX_LIMIT);
	for (int i = 0; i < 8; i++)
		commit_one(f, 1, body, len, ids[i]);
	assert_true(count_dir(f->dir, "seg") >= 3);
	assert_int_equal(count_dir(f->dir, "big"), 0);
	for (int i = 0; i < 7; i++) {
		struct spool_msg *m = spool_msg_load(f->sp, ids[i], err,
		    sizeof(err));

		assert_non_null(m);
		spool_msg_delivered(m, 0);
		assert_int_equal(spool_msg_flush(m), 0);
		assert_int_equal(spool_msg_remove(m), 0);
		spool_msg_close(&m);
	}
	/* the sealed segments holding only finished messages are gone */
	assert_true(count_dir(f->dir, "seg") <= 2);
	reopen(f);
	assert_int_equal(queued(f), 1);
	check_body(f, ids[7], body, len);
	assert_true(count_dir(f->dir, "seg") <= 2);
	free(body);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_and_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_id_unique_and_sorted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_replay, setup, teardown),
		cmocka_unit_test(test_parse_image),
		cmocka_unit_test(test_corrupt_images),
		cmocka_unit_test_setup_teardown(test_format1_conversion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quarantine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format1_conversion_resumed,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_body_length_checked, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_future_id_not_believed, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_segments_reclaimed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_done_outlives_its_message, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_torn_copy_keeps_journal, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
