/*
 * test_maildir.c - Maildir delivery: directory creation, headers added,
 * CRLF -> LF and nothing else, deterministic names, an earlier copy in
 * new/ or cur/ found instead of a second one, tmp/ clean-up.
 */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "queue/maildir.h"
#include "lib/util.h"

struct fx {
	char dir[64];
	int fd;
};

static int
setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));

	util_strlcpy(f->dir, "/tmp/tern-maildir-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	f->fd = open(f->dir, O_RDONLY | O_DIRECTORY);
	assert_true(f->fd >= 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	close(f->fd);
	unit_rm_tree(f->dir);
	free(f);
	return 0;
}

static char *
read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	char *buf;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	*len = (size_t)st.st_size;
	close(fd);
	return buf;
}

static int
count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* A message's identity for the tests: id, inode-like tag, arrival. */
#define ID1 "0123456789abcdef"
#define ARRIVAL_US INT64_C(1700000000123456)

static struct maildir_msg
msg_of(const char *rp, const char *to, const char *body, const char *id,
    uint64_t tag)
{
	struct maildir_msg mm = { rp, to, body, strlen(body), id, tag,
		ARRIVAL_US };

	return mm;
}

/* "new/<name>" -> "<name>" */
static const char *
base_of(const char *name)
{
	const char *s = strchr(name, '/');

	assert_non_null(s);
	return s + 1;
}

static void
test_deliver(void **state)
{
	struct fx *f = *state;
	/* Bare CR and bare LF stay; only CRLF pairs become LF. */
	static const char body[] = "Received: from x\r\nSubject: t\r\n\r\n"
	    "line1\r\nbare\rcr\nbare lf\r\n\r\r\n.\r\n";
	static const char want[] = "Return-Path: <alice@example.org>\n"
	    "Delivered-To: bob@localhost\n"
	    "Received: from x\nSubject: t\n\nline1\nbare\rcr\nbare lf\n\r\n.\n";
	struct maildir_msg mm = msg_of("alice@example.org", "bob@localhost",
	    body, ID1, 42);
	char name[512], path[700], sizetag[32];
	struct stat st;
	size_t len;
	char *got;

	assert_int_equal(maildir_deliver(f->fd, "localhost/bob", &mm, 0, name,
	    sizeof(name)), 0);
	assert_memory_equal(name, "new/", 4);
	snprintf(path, sizeof(path), "%s/localhost/bob/%s", f->dir, name);
	got = read_file(path, &len);
	assert_int_equal(len, sizeof(want) - 1);
	assert_string_equal(got, want);
	free(got);
	/* ,S=<size> is the stored size. */
	snprintf(sizetag, sizeof(sizetag), ",S=%zu", sizeof(want) - 1);
	assert_non_null(strstr(name, sizetag));
	/* The Maildir is complete and private. */
	for (int i = 0; i < 3; i++) {
		static const char *const sub[] = { "tmp", "new", "cur" };
		snprintf(path, sizeof(path), "%s/localhost/bob/%s", f->dir, sub[i]);
		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
	}
	snprintf(path, sizeof(path), "%s/localhost/bob/tmp", f->dir);
	assert_int_equal(count_dir(path), 0);
	snprintf(path, sizeof(path), "%s/localhost/bob/new", f->dir);
	assert_int_equal(count_dir(path), 1);
}

/*
 * The name is a function of the message (arrival, id, tag) and the
 * mailbox: <secs>.M<usecs>Q<id>I<tag>H<sha256(mailbox)[:128 bits]>.
 * <host>,S=<size>; the tmp/ name adds R<nonce> before the host.
 */
static void
test_deterministic_names(void **state)
{
	static const struct {
		const char *name;
		const char *to, *id;
		uint64_t tag;
		bool same;             /* as the first case */
	} cases[] = {
		{ "reference", "bob@localhost", ID1, 42, true },
		{ "same again", "bob@localhost", ID1, 42, true },
		{ "other mailbox", "carol@localhost", ID1, 42, false },
		{ "reused id, other file", "bob@localhost", ID1, 43, false },
		{ "other id", "bob@localhost", "0123456789abcdee", 42, false },
	};
	char first[300], got[300], tmp[300];
	const char *host, *r;

	(void)state;
	for (size_t i = 0; i < nitems(cases); i++) {
		struct maildir_msg mm = msg_of("a@b", cases[i].to, "x\r\n",
		    cases[i].id, cases[i].tag);

		assert_int_equal(maildir_name(&mm, false, got, sizeof(got)), 0);
		if (i == 0)
			util_strlcpy(first, got, sizeof(first));
		if ((strcmp(got, first) == 0) != cases[i].same)
			fail_msg("%s: %s vs %s", cases[i].name, got, first);
	}
	/* digest: SHA-256 of "bob@localhost", first 16 octets */
	assert_memory_equal(first, "1700000000.M123456Q" ID1 "I42H"
	    "405010d6c16c16dec36f3d7a7596c2d7.", 19 + 16 + 4 + 32 + 1);
	host = first + 19 + 16 + 4 + 32 + 1;
	/* size: "Return-Path: <a@b>\nDelivered-To: bob@localhost\nx\n" */
	assert_non_null(strstr(host, ",S=49"));
	assert_null(strchr(first, '/'));
	assert_null(strchr(first, ':'));
	/* The tmp/ name: R and 16 hex digits, fixed for this process. */
	{
		struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n",
		    ID1, 42);

		assert_int_equal(maildir_name(&mm, true, tmp, sizeof(tmp)), 0);
		assert_memory_equal(tmp, first, 19 + 16 + 4 + 32);
		r = tmp + 19 + 16 + 4 + 32;
		assert_int_equal(r[0], 'R');
		assert_int_equal(strspn(r + 1, "0123456789abcdef"), 16);
		assert_string_equal(r + 17, first + 19 + 16 + 4 + 32);
		assert_int_equal(maildir_name(&mm, true, got, sizeof(got)), 0);
		assert_string_equal(got, tmp);
	}
	/* unusable identities */
	{
		struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n",
		    "UPPER", 1);

		assert_int_equal(maildir_name(&mm, false, got, sizeof(got)), -1);
		mm.id = "";
		assert_int_equal(maildir_name(&mm, false, got, sizeof(got)), -1);
		mm.id = "../x";
		assert_int_equal(maildir_name(&mm, false, got, sizeof(got)), -1);
		mm.id = NULL;
		assert_int_equal(maildir_name(&mm, false, got, sizeof(got)), -1);
		mm.id = ID1;
		assert_int_equal(maildir_name(&mm, false, got, 10), -1);
	}
}

/* Deliveries of different messages get different names. */
static void
test_null_sender_and_unique_names(void **state)
{
	struct fx *f = *state;
	char names[50][512], path[700], id[17];
	size_t len;
	char *got;

	for (int i = 0; i < 50; i++) {
		struct maildir_msg mm;

		snprintf(id, sizeof(id), "%016x", i);
		mm = msg_of("", "bob@localhost", "x\r\n", id, 7);
		assert_int_equal(maildir_deliver(f->fd, "m", &mm, 0, names[i],
		    sizeof(names[i])), 0);
	}
	for (int i = 0; i < 50; i++)
		for (int k = i + 1; k < 50; k++)
			assert_string_not_equal(names[i], names[k]);
	snprintf(path, sizeof(path), "%s/m/new", f->dir);
	assert_int_equal(count_dir(path), 50);
	snprintf(path, sizeof(path), "%s/m/%s", f->dir, names[0]);
	got = read_file(path, &len);
	assert_string_equal(got, "Return-Path: <>\nDelivered-To: bob@localhost\nx\n");
	free(got);
	/* No ':' or '/' from the host name can reach the file name. */
	assert_null(strchr(names[0] + 4, '/'));
	assert_null(strchr(names[0], ':'));
}

/* A second attempt at one delivery finds the copy in new/: 1, nothing
 * written, the same name, with or without MAILDIR_RECHECK. */
static void
test_duplicate_in_new(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n", ID1, 9);
	char name[512], again[512], path[700];

	assert_int_equal(maildir_deliver(f->fd, "box", &mm, 0, name,
	    sizeof(name)), 0);
	assert_int_equal(maildir_deliver(f->fd, "box", &mm, 0, again,
	    sizeof(again)), 1);
	assert_string_equal(again, name);
	assert_int_equal(maildir_deliver(f->fd, "box", &mm, MAILDIR_RECHECK,
	    again, sizeof(again)), 1);
	assert_string_equal(again, name);
	snprintf(path, sizeof(path), "%s/box/new", f->dir);
	assert_int_equal(count_dir(path), 1);
	snprintf(path, sizeof(path), "%s/box/tmp", f->dir);
	assert_int_equal(count_dir(path), 0);
	/* the same message for another mailbox in the same Maildir, and a
	 * later message that reuses the id: copies of their own */
	mm.delivered_to = "carol@localhost";
	assert_int_equal(maildir_deliver(f->fd, "box", &mm, MAILDIR_RECHECK,
	    NULL, 0), 0);
	mm.delivered_to = "bob@localhost";
	mm.tag = 10;
	assert_int_equal(maildir_deliver(f->fd, "box", &mm, MAILDIR_RECHECK,
	    NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/box/new", f->dir);
	assert_int_equal(count_dir(path), 3);
}

/*
 * A mail reader moved the copy to cur/ and added flags (and another host
 * or a ,W= field in the name must not matter): MAILDIR_RECHECK finds it.
 * Without the flag only new/ is looked at, which is why the queue sets
 * it for every attempt that may follow an earlier one.
 */
static void
test_duplicate_in_cur(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *name;
		bool host;             /* suffix replaces ".<host>,S=<size>" */
		const char *suffix;
	} cases[] = {
		{ "flags", false, ":2,S" },
		{ "no info", false, "" },
		{ "other host, W=, flags", true, ".oldhost,S=49,W=50:2,FRS" },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n",
		    ID1, 100 + i);
		char name[512], found[512], from[900], to[900], want[600];
		char *dot;

		assert_int_equal(maildir_deliver(f->fd, "mb", &mm, 0, name,
		    sizeof(name)), 0);
		snprintf(from, sizeof(from), "%s/mb/%s", f->dir, name);
		if (!cases[i].host) {
			snprintf(want, sizeof(want), "cur/%s%s", base_of(name),
			    cases[i].suffix);
		} else {
			/* cut at the '.' before the host */
			dot = strchr(strchr(name, '.') + 1, '.');
			assert_non_null(dot);
			*dot = '\0';
			snprintf(want, sizeof(want), "cur/%s%s", base_of(name),
			    cases[i].suffix);
		}
		snprintf(to, sizeof(to), "%s/mb/%s", f->dir, want);
		assert_int_equal(rename(from, to), 0);
		assert_int_equal(maildir_deliver(f->fd, "mb", &mm,
		    MAILDIR_RECHECK, found, sizeof(found)), 1);
		if (strcmp(found, want) != 0)
			fail_msg("%s: found %s, want %s", cases[i].name, found,
			    want);
	}
	{
		char path[700];

		snprintf(path, sizeof(path), "%s/mb/new", f->dir);
		assert_int_equal(count_dir(path), 0);
		snprintf(path, sizeof(path), "%s/mb/cur", f->dir);
		assert_int_equal(count_dir(path), 3);
	}
	/* the contract without MAILDIR_RECHECK: cur/ is not read */
	{
		struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n",
		    ID1, 100);

		assert_int_equal(maildir_deliver(f->fd, "mb", &mm, 0, NULL, 0), 0);
	}
}

/* A tmp/ file of this process's own name for the delivery (an earlier
 * attempt that could not remove it) is replaced, not an error. */
static void
test_own_leftover_replaced(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n", ID1, 5);
	char tmp[300], path[700];
	int fd;

	assert_int_equal(maildir_name(&mm, true, tmp, sizeof(tmp)), 0);
	snprintf(path, sizeof(path), "%s/lb/tmp", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/lb/tmp/%s", f->dir, tmp);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial", 7), 7);
	close(fd);
	assert_int_equal(maildir_deliver(f->fd, "lb", &mm, 0, NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/lb/tmp", f->dir);
	assert_int_equal(count_dir(path), 0);
	snprintf(path, sizeof(path), "%s/lb/new", f->dir);
	assert_int_equal(count_dir(path), 1);
}

static void
test_incomplete_maildir(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = msg_of("a@b", "c@d", "x\r\n", ID1, 1);
	char path[700];
	struct stat st;

	/* Only tmp/ exists (an interrupted creation): new/ and cur/ appear. */
	snprintf(path, sizeof(path), "%s/part/tmp", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	assert_int_equal(maildir_deliver(f->fd, "part", &mm, 0, NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/part/new", f->dir);
	assert_int_equal(count_dir(path), 1);
	snprintf(path, sizeof(path), "%s/part/cur", f->dir);
	assert_int_equal(stat(path, &st), 0);
	/* Only new/: tmp/ appears. */
	snprintf(path, sizeof(path), "%s/part2/new", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	assert_int_equal(maildir_deliver(f->fd, "part2", &mm, MAILDIR_RECHECK,
	    NULL, 0), 0);
	assert_int_equal(count_dir(path), 1);
}

struct thr {
	int fd;
	int n;
	int ok;
};

static void *
deliver_many(void *arg)
{
	struct thr *t = arg;

	for (int i = 0; i < 25; i++) {
		char id[17];
		struct maildir_msg mm;

		snprintf(id, sizeof(id), "%08x%08x", t->n, i);
		mm = msg_of("a@b", "c@d", "hi\r\n", id, 1);
		if (maildir_deliver(t->fd, "shared", &mm, 0, NULL, 0) == 0)
			t->ok++;
	}
	return NULL;
}

static void
test_concurrent(void **state)
{
	struct fx *f = *state;
	pthread_t th[4];
	struct thr t[4];
	char path[700];

	for (int i = 0; i < 4; i++) {
		t[i].fd = f->fd;
		t[i].n = i;
		t[i].ok = 0;
		assert_int_equal(pthread_create(&th[i], NULL, deliver_many, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(t[i].ok, 25);
	}
	snprintf(path, sizeof(path), "%s/shared/new", f->dir);
	assert_int_equal(count_dir(path), 100);
}

static void
test_bad_paths(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = msg_of("a@b", "c@d", "x\r\n", ID1, 1);
	struct maildir_msg inj = msg_of("a@b\r\nX-Evil: 1", "c@d", "x\r\n",
	    ID1, 1);
	char path[700];
	int fd;

	errno = 0;
	assert_int_equal(maildir_deliver(f->fd, "../escape", &mm, 0, NULL, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(maildir_deliver(f->fd, "a/../../escape", &mm, 0, NULL, 0), -1);
	assert_int_equal(maildir_deliver(f->fd, "/abs", &mm, 0, NULL, 0), -1);
	assert_int_equal(maildir_deliver(f->fd, "ok", &inj, 0, NULL, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(maildir_clean_tmp(f->fd, "../x", time(NULL), NULL,
	    NULL), -1);
	assert_int_equal(errno, EINVAL);
	/* A file where a directory should be: an error, not a crash. */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	close(fd);
	assert_int_equal(maildir_deliver(f->fd, "file/box", &mm, 0, NULL, 0), -1);
	assert_int_equal(errno, ENOTDIR);
}

static void
test_unsearchable_ancestor(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = msg_of("a@b", "c@d", "x\r\n", ID1, 1);
	char path[700];
	int basefd;
	struct stat st;

	/* The base fd was opened while the path was searchable; delivery
	 * through it must not need the ancestor any more. */
	snprintf(path, sizeof(path), "%s/locked/base", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	basefd = open(path, O_RDONLY | O_DIRECTORY);
	assert_true(basefd >= 0);
	snprintf(path, sizeof(path), "%s/locked", f->dir);
	assert_int_equal(chmod(path, 0), 0);
	if (geteuid() == 0) {
		/* Root traverses anything: deliver as an unprivileged user,
		 * as the queue process does after dropping privileges. */
		pid_t pid;
		int status;

		assert_int_equal(fchown(basefd, 65534, 65534), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			if (setgid(65534) == -1 || setuid(65534) == -1)
				_exit(2);
			_exit(maildir_deliver(basefd, "d/u", &mm, 0, NULL, 0) == 0 ?
			    0 : 1);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	} else {
		assert_int_equal(maildir_deliver(basefd, "d/u", &mm, 0, NULL, 0), 0);
	}
	assert_int_equal(chmod(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/locked/base/d/u/new", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(count_dir(path), 1);
	close(basefd);
}

/* Create tmp/<name> in the Maildir dir (empty content "x"). */
static int
make_tmp(const char *dir, const char *name)
{
	char path[1000];
	int fd;

	snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd == -1 || write(fd, "x", 1) != 1)
		return -1;
	return close(fd);
}

static bool
tmp_has(const char *dir, const char *name)
{
	char path[1000];
	struct stat st;

	snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
	return lstat(path, &st) == 0;
}

/* In a forked child (a process whose Maildir state starts fresh): the
 * failing line, or 0. */
#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			return __LINE__;                                       \
	} while (0)

static int
clean_tmp_child(const char *root, int basefd)
{
	char host[128], dir[600], leftover[300], other_host[300], foreign[300];
	char live[300], own[300], other_tool[300];
	struct maildir_msg mm = msg_of("a@b", "bob@localhost", "x\r\n", ID1, 3);
	unsigned intr = 0, stale = 0;
	time_t now;

	CHECK(gethostname(host, sizeof(host)) == 0);
	host[sizeof(host) - 1] = '\0';
	CHECK(strpbrk(host, "/:, ") == NULL);   /* escaped otherwise */
	snprintf(dir, sizeof(dir), "%s/sw", root);
	snprintf(leftover, sizeof(leftover), "1700000000.M000001Q%sI3H"
	    "405010d6c16c16dec36f3d7a7596c2d7R0123456789abcdef.%s,S=49", ID1,
	    host);
	snprintf(other_host, sizeof(other_host), "1700000000.M000001Q%sI4H"
	    "405010d6c16c16dec36f3d7a7596c2d7R0123456789abcdef.elsewhere,S=49",
	    ID1);
	snprintf(other_tool, sizeof(other_tool), "1700000000.M1P2Q3.%s,S=3",
	    host);
	snprintf(foreign, sizeof(foreign), "garbage");
	/* Left by an earlier process: before this one delivers anything. */
	CHECK(util_mkdirs(dir, 0700) == 0);
	snprintf(dir, sizeof(dir), "%s/sw/tmp", root);
	CHECK(util_mkdirs(dir, 0700) == 0);
	snprintf(dir, sizeof(dir), "%s/sw", root);
	CHECK(make_tmp(dir, leftover) == 0);
	CHECK(make_tmp(dir, other_host) == 0);
	CHECK(make_tmp(dir, other_tool) == 0);
	CHECK(make_tmp(dir, foreign) == 0);
	usleep(50 * 1000);   /* file system clocks are coarse */

	/* This process starts: its own tmp/ file (a delivery under way) and
	 * one of another live tern, written after this process started. */
	CHECK(maildir_name(&mm, true, own, sizeof(own)) == 0);
	usleep(50 * 1000);
	CHECK(make_tmp(dir, own) == 0);
	snprintf(live, sizeof(live), "1700000000.M000001Q%sI5H"
	    "405010d6c16c16dec36f3d7a7596c2d7Rfedcba9876543210.%s,S=49", ID1,
	    host);
	CHECK(make_tmp(dir, live) == 0);
	now = time(NULL);
	CHECK(maildir_clean_tmp(basefd, "sw", now, &intr, &stale) == 0);
	CHECK(intr == 1 && stale == 0);
	CHECK(!tmp_has(dir, leftover));
	CHECK(tmp_has(dir, other_host) && tmp_has(dir, other_tool) &&
	    tmp_has(dir, foreign) && tmp_has(dir, own) && tmp_has(dir, live));
	/* 35 hours on: nothing is old enough */
	CHECK(maildir_clean_tmp(basefd, "sw", now + 35 * 3600, &intr,
	    &stale) == 0);
	CHECK(intr == 1 && stale == 0);
	/* 36 hours and a minute on: whatever is in tmp/ goes */
	CHECK(maildir_clean_tmp(basefd, "sw", now + 36 * 3600 + 60, &intr,
	    &stale) == 0);
	CHECK(intr == 1 && stale == 5);
	CHECK(!tmp_has(dir, other_host) && !tmp_has(dir, other_tool) &&
	    !tmp_has(dir, foreign) && !tmp_has(dir, own) && !tmp_has(dir, live));
	/* no Maildir: ENOENT */
	errno = 0;
	CHECK(maildir_clean_tmp(basefd, "none", now, NULL, NULL) == -1 &&
	    errno == ENOENT);
	return 0;
}

/*
 * tmp/ clean-up at recovery: a tern tmp/ file of this host from a process
 * that is gone (another nonce, written before this process started) is
 * removed; this process's own, another live process's, another host's
 * and other programs' stay until they are 36 hours old.
 */
static void
test_clean_tmp(void **state)
{
	struct fx *f = *state;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(clean_tmp_child(f->dir, f->fd) & 0xff);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("clean_tmp_child failed at line %d (mod 256)",
		    WEXITSTATUS(status));
}

static void
test_pattern_base(void **state)
{
	static const struct {
		const char *pattern;
		size_t want;
	} cases[] = {
		{ "/var/mail/%d/%u", 9 },     /* "/var/mail" */
		{ "/home/%u/Maildir", 5 },    /* "/home" */
		{ "/%u", 1 },                 /* "/" */
		{ "/srv/mail/x%u", 9 },       /* the component with % is not static */
		{ "/var/mail/shared", 9 },    /* no %: the parent */
		{ "/var/mail/shared/", 9 },
		{ "relative/%u", 0 },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		size_t got = maildir_pattern_base(cases[i].pattern);
		if (got != cases[i].want)
			fail_msg("pattern %s: want %zu got %zu", cases[i].pattern,
			    cases[i].want, got);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_deliver, setup, teardown),
		cmocka_unit_test(test_deterministic_names),
		cmocka_unit_test_setup_teardown(test_null_sender_and_unique_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_in_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_in_cur, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_leftover_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incomplete_maildir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsearchable_ancestor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clean_tmp, setup, teardown),
		cmocka_unit_test(test_pattern_base),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
