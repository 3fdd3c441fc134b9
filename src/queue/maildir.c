/*
 * maildir.c - Maildir delivery (see maildir.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "queue/maildir.h"
#include "lib/util.h"

#define OUT_CHUNK (64 * 1024)

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static char host_name[256];
static atomic_uint_fast64_t delivery_counter;

/* The host name for unique names, with '/' and ':' escaped as the
 * Maildir convention asks (they would break the file name / info part). */
static void
host_init(void)
{
	char raw[128];
	size_t o = 0;

	if (gethostname(raw, sizeof(raw)) == -1)
		util_strlcpy(raw, "localhost", sizeof(raw));
	raw[sizeof(raw) - 1] = '\0';
	for (const char *p = raw; *p && o + 5 < sizeof(host_name); p++) {
		if (*p == '/') {
			memcpy(host_name + o, "\\057", 4);
			o += 4;
		} else if (*p == ':') {
			memcpy(host_name + o, "\\072", 4);
			o += 4;
		} else if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			host_name[o++] = '_';
		} else {
			host_name[o++] = *p;
		}
	}
	host_name[o] = '\0';
	if (o == 0)
		util_strlcpy(host_name, "localhost", sizeof(host_name));
}

size_t
maildir_pattern_base(const char *pattern)
{
	const char *pct = strchr(pattern, '%');
	const char *end = pct != NULL ? pct : pattern + strlen(pattern);
	const char *slash = NULL;

	if (pattern[0] != '/')
		return 0;
	/* Last '/' before the first '%' (or before the last component). */
	for (const char *p = pattern; p < end; p++)
		if (*p == '/')
			slash = p;
	if (pct == NULL) {
		/* No pattern: the base is the Maildir's parent. Strip trailing
		 * slashes of the Maildir itself first. */
		const char *e = end;
		while (e > pattern + 1 && e[-1] == '/')
			e--;
		slash = NULL;
		for (const char *p = pattern; p < e; p++)
			if (*p == '/')
				slash = p;
	}
	if (slash == pattern)
		return 1;   /* "/" */
	return (size_t)(slash - pattern);
}

/* true if rel has no "..", is not absolute and is not too long. */
static bool
safe_relpath(const char *rel)
{
	const char *p = rel;

	if (rel[0] == '/' || strlen(rel) >= 4096)
		return false;
	while (*p) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		while (*p == '/')
			p++;
	}
	return true;
}

/* mkdirat, fsyncing the parent when the directory is new so that the
 * Maildir holding a delivered message cannot vanish in a crash. */
static int
mkdir_durable(int dirfd, const char *name)
{
	if (mkdirat(dirfd, name, 0700) == -1)
		return errno == EEXIST ? 0 : -1;
	return fsync(dirfd);
}

/* Create tmp/, new/ and cur/ in the Maildir mfd when missing. */
static int
make_subdirs(int mfd)
{
	static const char *const sub[] = { "tmp", "new", "cur" };

	for (size_t i = 0; i < nitems(sub); i++)
		if (mkdir_durable(mfd, sub[i]) == -1)
			return -1;
	return 0;
}

/*
 * Open the Maildir directory at rel under basefd, creating it and its
 * parents when missing (tmp/new/cur are made by the caller on ENOENT, so
 * an existing Maildir costs one openat). Returns a directory fd or -1.
 */
static int
open_maildir(int basefd, const char *rel)
{
	char buf[4096];
	int fd, cur;
	char *p, *s;

	if (rel[0] == '\0')
		rel = ".";
	fd = openat(basefd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd != -1 || errno != ENOENT)
		return fd;
	/* Walk and create each component under basefd. */
	util_strlcpy(buf, rel, sizeof(buf));
	cur = dup(basefd);
	if (cur == -1)
		return -1;
	for (p = buf; p != NULL && *p; p = s) {
		int next;

		s = strchr(p, '/');
		if (s != NULL) {
			*s++ = '\0';
			while (*s == '/')
				s++;
		}
		if (*p == '\0' || strcmp(p, ".") == 0)
			continue;
		if (mkdir_durable(cur, p) == -1) {
			int saved = errno;
			close(cur);
			errno = saved;
			return -1;
		}
		next = openat(cur, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(cur);
		if (next == -1)
			return -1;
		cur = next;
	}
	return cur;
}

/* Octets stored for body: every CRLF becomes LF. */
static size_t
stored_body_size(const char *p, size_t len)
{
	size_t crlf = 0;
	const char *end = p + len, *s = p;

	while (s < end && (s = memchr(s, '\r', (size_t)(end - s))) != NULL) {
		if (s + 1 < end && s[1] == '\n')
			crlf++;
		s++;
	}
	return len - crlf;
}

struct out {
	int fd;
	char buf[OUT_CHUNK];
	size_t n;
};

static int
out_flush(struct out *o)
{
	if (o->n > 0 && util_write_all(o->fd, o->buf, o->n) == -1)
		return -1;
	o->n = 0;
	return 0;
}

static int
out_add(struct out *o, const char *p, size_t len)
{
	while (len > 0) {
		size_t c = sizeof(o->buf) - o->n;

		if (c > len)
			c = len;
		memcpy(o->buf + o->n, p, c);
		o->n += c;
		p += c;
		len -= c;
		if (o->n == sizeof(o->buf) && out_flush(o) == -1)
			return -1;
	}
	return 0;
}

/* Copy the body, turning each CRLF into LF and nothing else. */
static int
out_body(struct out *o, const char *p, size_t len)
{
	const char *end = p + len;

	while (p < end) {
		const char *cr = memchr(p, '\r', (size_t)(end - p));

		if (cr == NULL)
			return out_add(o, p, (size_t)(end - p));
		if (cr + 1 < end && cr[1] == '\n') {
			if (out_add(o, p, (size_t)(cr - p)) == -1)
				return -1;
			p = cr + 1;   /* resume at the LF */
		} else {
			if (out_add(o, p, (size_t)(cr + 1 - p)) == -1)
				return -1;
			p = cr + 1;
		}
	}
	return 0;
}

int
maildir_deliver(int basefd, const char *relpath,
    const struct maildir_msg *msg, char *name_r, size_t namesize)
{
	char head[2 * 1024 + 64], name[512], tmpname[600], newname[600];
	struct out *o = NULL;
	struct timeval tv;
	int mfd = -1, fd = -1, saved, hlen;
	size_t size;
	uint64_t n;

	if (!safe_relpath(relpath) ||
	    strlen(msg->return_path) > 1024 || strlen(msg->delivered_to) > 1024 ||
	    strpbrk(msg->return_path, "\r\n") != NULL ||
	    strpbrk(msg->delivered_to, "\r\n") != NULL) {
		errno = EINVAL;
		return -1;
	}
	pthread_once(&host_once, host_init);
	/* RFC 5322 3.6.7: Return-Path is the reverse-path in angle brackets
	 * ("<>" for the null path); RFC 5321 4.4 has the delivering MTA add it. */
	hlen = snprintf(head, sizeof(head), "Return-Path: <%s>\nDelivered-To: %s\n",
	    msg->return_path, msg->delivered_to);
	if (hlen < 0 || (size_t)hlen >= sizeof(head)) {
		errno = EINVAL;
		return -1;
	}
	size = (size_t)hlen + stored_body_size(msg->body, msg->len);

	mfd = open_maildir(basefd, relpath);
	if (mfd == -1)
		return -1;
	gettimeofday(&tv, NULL);
	n = atomic_fetch_add(&delivery_counter, 1);
	snprintf(name, sizeof(name), "%lld.M%ldP%ldQ%" PRIu64 ".%s,S=%zu",
	    (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(), n, host_name,
	    size);
	snprintf(tmpname, sizeof(tmpname), "tmp/%s", name);
	snprintf(newname, sizeof(newname), "new/%s", name);

	fd = openat(mfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd == -1 && errno == ENOENT) {
		/* A new Maildir (or one missing a subdirectory). */
		if (make_subdirs(mfd) == -1)
			goto fail;
		fd = openat(mfd, tmpname, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (fd == -1)
		goto fail;
	o = xmalloc(sizeof(*o));
	o->fd = fd;
	o->n = 0;
	if (out_add(o, head, (size_t)hlen) == -1 ||
	    out_body(o, msg->body, msg->len) == -1 || out_flush(o) == -1)
		goto fail_unlink;
	if (fsync(fd) == -1)
		goto fail_unlink;
	if (close(fd) == -1) {
		fd = -1;
		goto fail_unlink;
	}
	fd = -1;
	if (renameat(mfd, tmpname, mfd, newname) == -1 &&
	    (errno != ENOENT || make_subdirs(mfd) == -1 ||
	    renameat(mfd, tmpname, mfd, newname) == -1))
		goto fail_unlink;
	/* The rename is durable only once new/ is on disk. */
	if (util_fsync_dir_at(mfd, "new") == -1) {
		saved = errno;
		(void)unlinkat(mfd, newname, 0);
		errno = saved;
		goto fail;
	}
	free(o);
	close(mfd);
	if (name_r != NULL)
		util_strlcpy(name_r, newname, namesize);
	return 0;
fail_unlink:
	saved = errno;
	if (fd != -1)
		close(fd);
	fd = -1;
	(void)unlinkat(mfd, tmpname, 0);
	errno = saved;
fail:
	saved = errno;
	free(o);
	if (fd != -1)
		close(fd);
	if (mfd != -1)
		close(mfd);
	errno = saved;
	return -1;
}
