/*
 * seglog.c - how fast the disk takes durable messages, by write pattern:
 * the ceiling the spool's format can reach (issue 14, docs/performance.md).
 *
 *   make build/bench/seglog && ./build/bench/seglog [DIR] [MESSAGES] [SIZE]
 *
 * DIR defaults to ./var/bench-seglog (the disk `make run` spools on);
 * MESSAGES to 20000, SIZE to 4096. Prints one line per pattern:
 * messages per second with every message durable before it counts.
 *
 *   file+fsync   format 1's cost: create, write, fdatasync, rename into
 *                place, fsync the directory, per message, the way one
 *                message commits alone
 *   file/32      format 1 with group commit of 32: each file fdatasync'd,
 *                one directory fsync per group
 *   log/N        format 2: seglog commit groups of N records, one
 *                fdatasync each (N = 1, 8, 32, 128)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/seglog.h"

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "bench/seglog: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double
files(int dirfd, const char *body, size_t size, long n, long group)
{
	double t0 = now();
	int *fds = calloc((size_t)group, sizeof(int));

	if (fds == NULL)
		die("calloc");
	for (long i = 0; i < n; i += group) {
		long k = n - i < group ? n - i : group;

		for (long j = 0; j < k; j++) {
			char name[32];

			snprintf(name, sizeof(name), "in.%ld", i + j);
			fds[j] = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
			if (fds[j] == -1 || write(fds[j], body, size) != (ssize_t)size)
				die("write");
		}
		for (long j = 0; j < k; j++) {
			char from[32], to[32];

			snprintf(from, sizeof(from), "in.%ld", i + j);
			snprintf(to, sizeof(to), "q.%ld", i + j);
			if (fdatasync(fds[j]) == -1 ||
			    renameat(dirfd, from, dirfd, to) == -1)
				die("fdatasync/rename");
			close(fds[j]);
		}
		if (fsync(dirfd) == -1)
			die("fsync dir");
	}
	t0 = now() - t0;
	for (long i = 0; i < n; i++) {
		char name[32];

		snprintf(name, sizeof(name), "q.%ld", i);
		unlinkat(dirfd, name, 0);
	}
	free(fds);
	return (double)n / t0;
}

/* Remove seg/ and the segments in it. */
static void
rm_segments(int dirfd)
{
	int fd = openat(dirfd, "seg", O_RDONLY | O_DIRECTORY);
	DIR *d = fd == -1 ? NULL : fdopendir(fd);
	struct dirent *e;

	if (d == NULL)
		die("open seg");
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			unlinkat(fd, e->d_name, 0);
	closedir(d);
	unlinkat(dirfd, "seg", AT_REMOVEDIR);
}

static double
logged(int dirfd, const char *body, size_t size, long n, long group)
{
	char err[256];
	struct seglog *l = seglog_open(dirfd, SEGLOG_MIN_SEGMENT * 2,
	    (uid_t)-1, (gid_t)-1, err, sizeof(err));
	struct seglog_group *g = seglog_group_new();
	struct iovec iov = { (void *)body, size };
	double t0;

	if (l == NULL) {
		fprintf(stderr, "bench/seglog: %s\n", err);
		exit(1);
	}
	t0 = now();
	for (long i = 0; i < n; i += group) {
		long k = n - i < group ? n - i : group;

		seglog_group_reset(g);
		for (long j = 0; j < k; j++)
			if (seglog_group_add(g, SEGLOG_MSG, (uint64_t)(i + j + 1),
			    &iov, 1) == -1)
				die("group add");
		if (seglog_commit(l, g, 0) == -1)
			die("commit");
	}
	t0 = now() - t0;
	seglog_group_free(&g);
	seglog_free(&l);
	rm_segments(dirfd);
	return (double)n / t0;
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "var/bench-seglog";
	long n = argc > 2 ? atol(argv[2]) : 20000;
	size_t size = argc > 3 ? (size_t)atol(argv[3]) : 4096;
	long groups[] = { 1, 8, 32, 128 };
	char *body;
	int dirfd;

	log_set_level(LOG_LEVEL_ERR);
	if (n <= 0 || size == 0 || size > SEGLOG_MAX_RECORD)
		return 2;
	if (argc <= 1 && mkdir("var", 0700) == -1 && errno != EEXIST)
		die("var");
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		die(dir);
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dirfd == -1)
		die(dir);
	body = malloc(size);
	if (body == NULL)
		die("malloc");
	memset(body, 'x', size);
	printf("%-12s %10s  (%ld messages of %zu bytes in %s)\n", "pattern",
	    "msg/s", n, size, dir);
	printf("%-12s %10.0f\n", "file+fsync", files(dirfd, body, size,
	    n / 10 > 0 ? n / 10 : 1, 1));
	printf("%-12s %10.0f\n", "file/32", files(dirfd, body, size, n, 32));
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		char name[16];

		snprintf(name, sizeof(name), "log/%ld", groups[i]);
		printf("%-12s %10.0f\n", name, logged(dirfd, body, size,
		    groups[i] == 1 ? (n / 10 > 0 ? n / 10 : 1) : n, groups[i]));
	}
	free(body);
	close(dirfd);
	return 0;
}
