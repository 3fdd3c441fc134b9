/*
 * test_spool.c - the on-disk queue: commit, recovery, journal replay (with
 * a torn record), id uniqueness and corrupt-file detection.
 */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mail/envelope.h"
#include "lib/log.h"
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
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Receive and commit one message; returns its id in id. */
static void
commit_one(struct fx *f, size_t nrcpts, const char *body, char id[17])
{
	struct envelope env;
	struct spool_txn *t;

	make_env(&env, nrcpts);
	t = spool_txn_begin(f->sp, &env);
	assert_non_null(t);
	assert_string_equal(env.id, spool_txn_id(t));
	assert_true(exists(f->dir, "incoming", env.id));
	assert_int_equal(spool_txn_write(t, body, strlen(body) / 2), 0);
	assert_int_equal(spool_txn_write(t, body + strlen(body) / 2,
	    strlen(body) - strlen(body) / 2), 0);
	assert_int_equal(spool_txn_size(t), strlen(body));
	spool_commit_batch(f->sp, &t, 1);
	assert_int_equal(spool_txn_error(t), 0);
	util_strlcpy(id, env.id, 17);
	assert_false(exists(f->dir, "incoming", id));
	assert_true(exists(f->dir, "queue", id));
	spool_txn_free(&t);
	envelope_clear(&env);
}

static void
test_commit_and_load(void **state)
{
	struct fx *f = *state;
	static const char body[] = "Received: x\r\nSubject: hi\r\n\r\nbody\r\n";
	char id[17], err[256];
	struct spool_msg *m;
	const char *b;
	size_t blen;

	commit_one(f, 2, body, id);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	assert_string_equal(spool_msg_id(m), id);
	assert_string_equal(spool_msg_envelope(m)->sender, "alice@example.org");
	assert_string_equal(spool_msg_envelope(m)->id, id);
	assert_int_equal(spool_msg_envelope(m)->nrcpts, 2);
	b = spool_msg_body(m, &blen);
	assert_int_equal(blen, sizeof(body) - 1);
	assert_memory_equal(b, body, blen);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_PENDING);
	assert_false(spool_msg_done(m));
	spool_msg_close(&m);
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
	assert_int_equal(count_dir(f->dir, "queue"), 20);
	assert_int_equal(count_dir(f->dir, "incoming"), 0);
}

static void
scan_count(void *arg, const char *id)
{
	(*(int *)arg)++;
	assert_true(spool_valid_id(id));
}

static void
test_recovery(void **state)
{
	struct fx *f = *state;
	struct envelope env;
	struct spool_txn *t, *t2;
	char id[17], err[256];
	int n = 0;

	commit_one(f, 1, "committed\r\n", id);
	/* Two transactions left open by a "crash", one aborted. */
	make_env(&env, 1);
	t = spool_txn_begin(f->sp, &env);
	assert_int_equal(spool_txn_write(t, "partial", 7), 0);
	envelope_clear(&env);
	make_env(&env, 1);
	t2 = spool_txn_begin(f->sp, &env);
	spool_txn_abort(&t2);
	assert_null(t2);
	assert_false(exists(f->dir, "incoming", env.id));
	envelope_clear(&env);
	assert_int_equal(count_dir(f->dir, "incoming"), 1);
	spool_txn_free(&t);   /* closes without removing: the crash */

	/* A fresh start on the same spool. */
	spool_free(&f->sp);
	f->sp = spool_open(f->dir, (uid_t)-1, (gid_t)-1, err, sizeof(err));
	assert_non_null(f->sp);
	assert_int_equal(spool_recover_incoming(f->sp), 1);
	assert_int_equal(count_dir(f->dir, "incoming"), 0);
	assert_int_equal(spool_scan(f->sp, scan_count, &n), 1);
	assert_int_equal(n, 1);
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
append_raw(struct fx *f, const char *id, const char *text)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/queue/%s", f->dir, id);
	fd = open(p, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, text, strlen(text)), 0);
	close(fd);
}

static off_t
file_size(struct fx *f, const char *id)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/queue/%s", f->dir, id);
	assert_int_equal(stat(p, &st), 0);
	return st.st_size;
}

static void
test_journal_replay(void **state)
{
	struct fx *f = *state;
	char id[17], err[256];
	struct spool_msg *m;
	off_t before;

	commit_one(f, 4, "body\r\n", id);
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	spool_msg_delivered(m, 0);
	spool_msg_failed(m, 1, "550 5.1.1 no such user\r\nD 3");  /* CRLF scrubbed */
	spool_msg_deferred(m, 2, 1796000600, "451 4.3.0 disk trouble");
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	before = file_size(f, id);
	/* A torn record: the crash hit in the middle of a write. */
	append_raw(f, id, "D 3");

	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_rcpt(m, 0)->state, SPOOL_RCPT_DELIVERED);
	assert_int_equal(spool_msg_rcpt(m, 1)->state, SPOOL_RCPT_FAILED);
	assert_string_equal(spool_msg_rcpt(m, 1)->reply,
	    "550 5.1.1 no such user??D 3");
	assert_int_equal(spool_msg_rcpt(m, 2)->state, SPOOL_RCPT_DEFERRED);
	assert_int_equal(spool_msg_rcpt(m, 2)->attempts, 1);
	assert_int_equal(spool_msg_rcpt(m, 2)->next_attempt, 1796000600);
	assert_string_equal(spool_msg_rcpt(m, 2)->reply, "451 4.3.0 disk trouble");
	/* The torn "D 3" is ignored and cut off. */
	assert_int_equal(spool_msg_rcpt(m, 3)->state, SPOOL_RCPT_PENDING);
	assert_int_equal(file_size(f, id), before);
	assert_false(spool_msg_done(m));
	/* The next record starts on a line of its own. */
	spool_msg_deferred(m, 2, 1796001000, "451 4.3.0 again");
	spool_msg_delivered(m, 3);
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);

	/* Malformed and out-of-range records are skipped, not fatal. */
	append_raw(f, id, "D 99\nX 1\nD\nT 2 x 1 y\n");
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_rcpt(m, 2)->state, SPOOL_RCPT_DEFERRED);
	assert_int_equal(spool_msg_rcpt(m, 2)->attempts, 2);
	assert_int_equal(spool_msg_rcpt(m, 2)->next_attempt, 1796001000);
	assert_int_equal(spool_msg_rcpt(m, 3)->state, SPOOL_RCPT_DELIVERED);
	spool_msg_delivered(m, 2);
	assert_true(spool_msg_done(m));
	assert_int_equal(spool_msg_remove(m), 0);
	spool_msg_close(&m);
	assert_false(exists(f->dir, "queue", id));
	m = spool_msg_load(f->sp, id, err, sizeof(err));
	assert_null(m);
	assert_int_equal(errno, ENOENT);
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
write_queue_file(struct fx *f, const char *id, const char *content, size_t len)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/queue/%s", f->dir, id);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, content, len), 0);
	close(fd);
}

static void
test_corrupt_files(void **state)
{
	struct fx *f = *state;
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

	for (size_t i = 0; i < nitems(cases); i++) {
		struct spool_msg *m;

		write_queue_file(f, "00000000000000aa", cases[i].content,
		    strlen(cases[i].content));
		m = spool_msg_load(f->sp, "00000000000000aa", err, sizeof(err));
		if (m != NULL)
			fail_msg("case \"%s\": loaded", cases[i].name);
		if (errno != EBADMSG)
			fail_msg("case \"%s\": errno %d", cases[i].name, errno);
	}
	/* A good one, written by hand from the documented format. */
	static const char good[] = "tern-queue 1 00000000000000000006\n"
	    "version 1\nid 00000000000000aa\narrival 1\nsender \n"
	    "rcpt - - a@b\n\nbody\r\nD 0\n";
	write_queue_file(f, "00000000000000aa", good, sizeof(good) - 1);
	struct spool_msg *m = spool_msg_load(f->sp, "00000000000000aa", err,
	    sizeof(err));
	assert_non_null(m);
	assert_true(spool_msg_done(m));
	spool_msg_close(&m);
	assert_int_equal(spool_quarantine(f->sp, "00000000000000aa"), 0);
	assert_true(exists(f->dir, "corrupt", "00000000000000aa"));
	assert_false(exists(f->dir, "queue", "00000000000000aa"));
}

static void
test_rename_never_replaces(void **state)
{
	struct fx *f = *state;
	struct envelope env;
	struct spool_txn *t;

	make_env(&env, 1);
	t = spool_txn_begin(f->sp, &env);
	assert_non_null(t);
	/* Something already sits at queue/<id>: the commit must not clobber it. */
	write_queue_file(f, env.id, "precious", 8);
	spool_commit_batch(f->sp, &t, 1);
	assert_int_equal(spool_txn_error(t), EEXIST);
	assert_false(exists(f->dir, "incoming", env.id));
	assert_int_equal(file_size(f, env.id), 8);
	spool_txn_free(&t);
	envelope_clear(&env);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_and_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_id_unique_and_sorted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename_never_replaces, setup, teardown),
		cmocka_unit_test(test_parse_image),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
