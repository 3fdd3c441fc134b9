/*
 * test_maildir.c - Maildir delivery: directory creation, headers added,
 * CRLF -> LF and nothing else, unique names, the file lands in new/.
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
	struct maildir_msg mm = { "alice@example.org", "bob@localhost", body,
		sizeof(body) - 1 };
	char name[512], path[700], sizetag[32];
	struct stat st;
	size_t len;
	char *got;

	assert_int_equal(maildir_deliver(f->fd, "localhost/bob", &mm, name,
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

static void
test_null_sender_and_unique_names(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = { "", "bob@localhost", "x\r\n", 3 };
	char names[50][512], path[700];
	size_t len;
	char *got;

	for (int i = 0; i < 50; i++)
		assert_int_equal(maildir_deliver(f->fd, "m", &mm, names[i],
		    sizeof(names[i])), 0);
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

static void
test_incomplete_maildir(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = { "a@b", "c@d", "x\r\n", 3 };
	char path[700];
	struct stat st;

	/* Only tmp/ exists (an interrupted creation): new/ and cur/ appear. */
	snprintf(path, sizeof(path), "%s/part/tmp", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	assert_int_equal(maildir_deliver(f->fd, "part", &mm, NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/part/new", f->dir);
	assert_int_equal(count_dir(path), 1);
	snprintf(path, sizeof(path), "%s/part/cur", f->dir);
	assert_int_equal(stat(path, &st), 0);
	/* Only new/: tmp/ appears. */
	snprintf(path, sizeof(path), "%s/part2/new", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	assert_int_equal(maildir_deliver(f->fd, "part2", &mm, NULL, 0), 0);
	assert_int_equal(count_dir(path), 1);
}

struct thr {
	int fd;
	int ok;
};

static void *
deliver_many(void *arg)
{
	struct thr *t = arg;
	struct maildir_msg mm = { "a@b", "c@d", "hi\r\n", 4 };

	for (int i = 0; i < 25; i++)
		if (maildir_deliver(t->fd, "shared", &mm, NULL, 0) == 0)
			t->ok++;
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
	struct maildir_msg mm = { "a@b", "c@d", "x\r\n", 3 };
	struct maildir_msg inj = { "a@b\r\nX-Evil: 1", "c@d", "x\r\n", 3 };
	char path[700];
	int fd;

	errno = 0;
	assert_int_equal(maildir_deliver(f->fd, "../escape", &mm, NULL, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(maildir_deliver(f->fd, "a/../../escape", &mm, NULL, 0), -1);
	assert_int_equal(maildir_deliver(f->fd, "/abs", &mm, NULL, 0), -1);
	assert_int_equal(maildir_deliver(f->fd, "ok", &inj, NULL, 0), -1);
	assert_int_equal(errno, EINVAL);
	/* A file where a directory should be: an error, not a crash. */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	close(fd);
	assert_int_equal(maildir_deliver(f->fd, "file/box", &mm, NULL, 0), -1);
	assert_int_equal(errno, ENOTDIR);
}

static void
test_unsearchable_ancestor(void **state)
{
	struct fx *f = *state;
	struct maildir_msg mm = { "a@b", "c@d", "x\r\n", 3 };
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
			_exit(maildir_deliver(basefd, "d/u", &mm, NULL, 0) == 0 ? 0 : 1);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	} else {
		assert_int_equal(maildir_deliver(basefd, "d/u", &mm, NULL, 0), 0);
	}
	assert_int_equal(chmod(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/locked/base/d/u/new", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(count_dir(path), 1);
	close(basefd);
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
		cmocka_unit_test_setup_teardown(test_null_sender_and_unique_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incomplete_maildir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsearchable_ancestor, setup, teardown),
		cmocka_unit_test(test_pattern_base),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
