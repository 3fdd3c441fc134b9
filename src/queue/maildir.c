/*
 * maildir.c - Maildir delivery (see maildir.h; why each step comes where
 * it does: docs/queue.md, "Local delivery exactly once").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "queue/maildir.h"
#include "lib/util.h"

#define OUT_CHUNK (64 * 1024)
#define HOST_MAX 100           /* keeps every name under NAME_MAX (255) */
#define DIGEST_HEX 32          /* 128 bits of SHA-256 */
#define ID_MAX 32

/*
 * Per process: the host part of names, the nonce of its tmp/ names and
 * when it began delivering (maildir_clean_tmp). Made again in a forked
 * child: a child must not take its parent's tmp/ files for its own.
 */
static pthread_mutex_t inst_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t inst_pid;
static char host_name[HOST_MAX + 1];
static char inst_nonce[17];
static struct timespec inst_started;

/* The host name for names, with '/' and ':' escaped as the Maildir
 * convention asks (they would break the file name / info part). */
static void
inst_make(void)
{
	char raw[128];
	size_t o = 0;
	uint64_t nonce;

	if (gethostname(raw, sizeof(raw)) == -1)
		util_strlcpy(raw, "localhost", sizeof(raw));
	raw[sizeof(raw) - 1] = '\0';
	for (const char *p = raw; *p && o + 4 <= HOST_MAX; p++) {
		if (*p == '/') {
			memcpy(host_name + o, "\\057", 4);
			o += 4;
		} else if (*p == ':') {
			memcpy(host_name + o, "\\072", 4);
			o += 4;
		} else if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == ',') {
			host_name[o++] = '_';
		} else {
			host_name[o++] = *p;
		}
	}
	host_name[o] = '\0';
	if (o == 0)
		util_strlcpy(host_name, "localhost", sizeof(host_name));
	arc4random_buf(&nonce, sizeof(nonce));
	snprintf(inst_nonce, sizeof(inst_nonce), "%016" PRIx64, nonce);
	clock_gettime(CLOCK_REALTIME, &inst_started);
}

static void
inst_init(void)
{
	pthread_mutex_lock(&inst_mu);
	if (inst_pid != getpid()) {
		inst_make();
		inst_pid = getpid();
	}
	pthread_mutex_unlock(&inst_mu);
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

/* The names of one delivery, and the header lines it prepends. */
struct names {
	char head[2 * 1024 + 64];
	size_t hlen;
	size_t size;               /* stored octets */
	char key[160];             /* <secs>.M<usecs>Q<id>I<tag>H<digest> */
	size_t klen;
	char name[300];            /* in new/ */
	char tmp[320];             /* in tmp/ */
};

static bool
valid_id(const char *id)
{
	size_t n = 0;

	for (; id[n] != '\0'; n++)
		if (!((id[n] >= '0' && id[n] <= '9') ||
		    (id[n] >= 'a' && id[n] <= 'z')))
			return false;
	return n > 0 && n <= ID_MAX;
}

/* SHA-256 of s, its first DIGEST_HEX / 2 octets in hex, into out. */
static int
digest_hex(const char *s, char out[DIGEST_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen < DIGEST_HEX / 2)
		return -1;
	for (size_t i = 0; i < DIGEST_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Check msg and fill n; -1 with errno EINVAL if msg is unusable. */
static int
names_make(const struct maildir_msg *msg, struct names *n)
{
	char digest[DIGEST_HEX + 1];
	int64_t secs, usecs;
	int len;

	if (msg->id == NULL || !valid_id(msg->id) || msg->arrival_us < 0 ||
	    strlen(msg->return_path) > 1024 || strlen(msg->delivered_to) > 1024 ||
	    strpbrk(msg->return_path, "\r\n") != NULL ||
	    strpbrk(msg->delivered_to, "\r\n") != NULL ||
	    digest_hex(msg->delivered_to, digest) == -1) {
		errno = EINVAL;
		return -1;
	}
	inst_init();
	/* RFC 5322 3.6.7: Return-Path is the reverse-path in angle brackets
	 * ("<>" for the null path); RFC 5321 4.4 has the delivering MTA add it. */
	len = snprintf(n->head, sizeof(n->head),
	    "Return-Path: <%s>\nDelivered-To: %s\n", msg->return_path,
	    msg->delivered_to);
	if (len < 0 || (size_t)len >= sizeof(n->head)) {
		errno = EINVAL;
		return -1;
	}
	n->hlen = (size_t)len;
	n->size = n->hlen + stored_body_size(msg->body, msg->len);
	secs = msg->arrival_us / 1000000;
	usecs = msg->arrival_us % 1000000;
	len = snprintf(n->key, sizeof(n->key), "%" PRId64 ".M%06" PRId64 "Q%sI%"
	    PRIu64 "H%s", secs, usecs, msg->id, msg->tag, digest);
	if (len < 0 || (size_t)len >= sizeof(n->key)) {
		errno = EINVAL;
		return -1;
	}
	n->klen = (size_t)len;
	snprintf(n->name, sizeof(n->name), "%s.%s,S=%zu", n->key, host_name,
	    n->size);
	snprintf(n->tmp, sizeof(n->tmp), "%sR%s.%s,S=%zu", n->key, inst_nonce,
	    host_name, n->size);
	return 0;
}

int
maildir_name(const struct maildir_msg *msg, bool tmp, char *buf,
    size_t bufsize)
{
	struct names *n = xmalloc(sizeof(*n));
	int r = -1;

	if (names_make(msg, n) == 0) {
		if (util_strlcpy(buf, tmp ? n->tmp : n->name, bufsize) < bufsize)
			r = 0;
		else
			errno = EINVAL;
	}
	free(n);
	return r;
}

/*
 * Look in sub ("new" or "cur") of the Maildir mfd for an entry whose name
 * starts with key and a '.': a copy of this delivery, whatever host, size
 * and info suffix it has. 1 and its name in found, 0 if none (or no such
 * directory), -1 with errno.
 */
static int
scan_for(int mfd, const char *sub, const char *key, size_t klen,
    char *found, size_t foundsize)
{
	int fd = openat(mfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (fd == -1)
		return errno == ENOENT ? 0 : -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, key, klen) == 0 && de->d_name[klen] == '.') {
			snprintf(found, foundsize, "%s/%s", sub, de->d_name);
			r = 1;
			break;
		}
	}
	if (de == NULL && errno != 0)
		r = -1;
	closedir(d);
	return r;
}

/*
 * An earlier copy of this delivery: new/<name> by a stat, and with
 * MAILDIR_RECHECK any new/ then cur/ entry with the key (new/ first: a
 * reader moves files from new/ to cur/, so a copy moved while new/ is
 * read is in cur/ when that is read). A copy found is made durable (its
 * writer may have died before its directory fsync) before it counts.
 * 1 with its name in found, 0 if none, -1 with errno.
 */
static int
find_copy(int mfd, const struct names *n, unsigned flags, char *found,
    size_t foundsize)
{
	static const char *const subs[] = { "new", "cur" };
	char path[sizeof(n->name) + 8];
	struct stat st;
	int r = 0;

	if (!(flags & MAILDIR_RECHECK)) {
		snprintf(path, sizeof(path), "new/%s", n->name);
		if (fstatat(mfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			util_strlcpy(found, path, foundsize);
			r = 1;
		} else if (errno != ENOENT && errno != ENOTDIR) {
			return -1;
		}
	} else {
		for (size_t i = 0; i < nitems(subs) && r == 0; i++)
			r = scan_for(mfd, subs[i], n->key, n->klen, found,
			    foundsize);
		if (r == -1)
			return -1;
	}
	if (r == 1 && util_fsync_dir_at(mfd, found[0] == 'n' ? "new" : "cur")
	    == -1)
		return -1;
	return r;
}

/*
 * Write the stored form of msg to tmp/<n->tmp> and fsync it. A file
 * already there has this process's nonce, so it is a leftover of an
 * earlier attempt of this very delivery that failed to remove it: it is
 * replaced. 0, or -1 with errno and nothing left in tmp/.
 */
static int
write_tmp(int mfd, const struct names *n, const struct maildir_msg *msg)
{
	char path[sizeof(n->tmp) + 8];
	struct out *o = NULL;
	int fd = -1, saved;

	snprintf(path, sizeof(path), "tmp/%s", n->tmp);
	for (int tries = 0; fd == -1 && tries < 3; tries++) {
		fd = openat(mfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
		if (fd != -1)
			break;
		if (errno == ENOENT) {
			/* A new Maildir (or one missing a subdirectory). */
			if (make_subdirs(mfd) == -1)
				return -1;
		} else if (errno == EEXIST) {
			if (unlinkat(mfd, path, 0) == -1 && errno != ENOENT)
				return -1;
		} else {
			return -1;
		}
	}
	if (fd == -1)
		return -1;
	o = xmalloc(sizeof(*o));
	o->fd = fd;
	o->n = 0;
	if (out_add(o, n->head, n->hlen) == -1 ||
	    out_body(o, msg->body, msg->len) == -1 || out_flush(o) == -1 ||
	    fsync(fd) == -1)
		goto fail;
	free(o);
	if (close(fd) == -1) {
		fd = -1;
		goto fail_closed;
	}
	return 0;
fail:
	free(o);
	close(fd);
fail_closed:
	saved = errno;
	(void)unlinkat(mfd, path, 0);
	errno = saved;
	return -1;
}

/*
 * Move tmp/<n->tmp> to new/<n->name>, never replacing a file there
 * (RENAME_NOREPLACE, or link() and unlink() where the file system lacks
 * it). 0 when moved, 1 if new/<name> already exists (the tmp/ file is
 * removed), -1 with errno (the tmp/ file is removed).
 */
static int
publish(int mfd, const struct names *n)
{
	char from[sizeof(n->tmp) + 8], to[sizeof(n->name) + 8];
	int saved;

	snprintf(from, sizeof(from), "tmp/%s", n->tmp);
	snprintf(to, sizeof(to), "new/%s", n->name);
	for (int tries = 0; tries < 2; tries++) {
		if (renameat2(mfd, from, mfd, to, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno == EINVAL || errno == ENOSYS) {
			if (linkat(mfd, from, mfd, to, 0) == 0) {
				(void)unlinkat(mfd, from, 0);
				return 0;
			}
		}
		if (errno == EEXIST) {
			(void)unlinkat(mfd, from, 0);
			return 1;
		}
		/* new/ missing: made, then once more */
		if (errno != ENOENT || tries > 0 || make_subdirs(mfd) == -1)
			break;
	}
	saved = errno;
	(void)unlinkat(mfd, from, 0);
	errno = saved;
	return -1;
}

int
maildir_deliver(int basefd, const char *relpath,
    const struct maildir_msg *msg, unsigned flags, char *name_r,
    size_t namesize)
{
	struct names *n = NULL;
	char found[600], newname[sizeof(n->name) + 8];
	int mfd = -1, r = -1, saved;

	if (!safe_relpath(relpath)) {
		errno = EINVAL;
		return -1;
	}
	n = xmalloc(sizeof(*n));
	if (names_make(msg, n) == -1)
		goto out;
	mfd = open_maildir(basefd, relpath);
	if (mfd == -1)
		goto out;
	r = find_copy(mfd, n, flags, found, sizeof(found));
	if (r != 0)
		goto out;
	snprintf(newname, sizeof(newname), "new/%s", n->name);
	r = -1;
	if (write_tmp(mfd, n, msg) == -1)
		goto out;
	r = publish(mfd, n);
	if (r == -1)
		goto out;
	util_strlcpy(found, newname, sizeof(found));
	/* The rename (or the copy found in its way) is durable only once
	 * new/ is on disk. */
	if (util_fsync_dir_at(mfd, "new") == -1) {
		saved = errno;
		if (r == 0)
			(void)unlinkat(mfd, newname, 0);
		errno = saved;
		r = -1;
	}
out:
	saved = errno;
	if (r >= 0 && name_r != NULL)
		util_strlcpy(name_r, found, namesize);
	if (mfd != -1)
		close(mfd);
	free(n);
	errno = saved;
	return r;
}

/* Skip the characters of set at *p (at most max); false if fewer than min. */
static bool
skip_set(const char **p, const char *set, size_t min, size_t max)
{
	size_t n = 0;

	while (n < max && (*p)[n] != '\0' && strchr(set, (*p)[n]) != NULL)
		n++;
	*p += n;
	return n >= min;
}

/*
 * true if name is the tmp/ name of a tern delivery on this host made by
 * another process: <secs>.M<usecs>Q<id>I<tag>H<digest>R<nonce>.<host>,...
 * with a nonce that is not this process's.
 */
static bool
foreign_tern_tmp(const char *name)
{
	static const char dig[] = "0123456789", hex[] = "0123456789abcdef";
	static const char idc[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	const char *p = name, *nonce;
	size_t hl = strlen(host_name);

	if (!skip_set(&p, dig, 1, 20) || *p++ != '.' || *p++ != 'M' ||
	    !skip_set(&p, dig, 1, 6) || *p++ != 'Q' ||
	    !skip_set(&p, idc, 1, ID_MAX) || *p++ != 'I' ||
	    !skip_set(&p, dig, 1, 20) || *p++ != 'H' ||
	    !skip_set(&p, hex, DIGEST_HEX, DIGEST_HEX) || *p++ != 'R')
		return false;
	nonce = p;
	if (!skip_set(&p, hex, 16, 16) || *p++ != '.')
		return false;
	if (strncmp(p, host_name, hl) != 0 || p[hl] != ',')
		return false;
	return memcmp(nonce, inst_nonce, 16) != 0;
}

static bool
ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	    (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int
maildir_clean_tmp(int basefd, const char *relpath, time_t now,
    unsigned *interrupted, unsigned *stale)
{
	struct dirent *de;
	DIR *d;
	int mfd, tfd, saved;

	if (!safe_relpath(relpath)) {
		errno = EINVAL;
		return -1;
	}
	inst_init();
	mfd = openat(basefd, relpath[0] != '\0' ? relpath : ".",
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd == -1)
		return -1;
	tfd = openat(mfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(mfd);
	if (tfd == -1)
		return -1;
	/* readdir on a dup; tfd stays for fstatat/unlinkat */
	mfd = dup(tfd);
	d = mfd != -1 ? fdopendir(mfd) : NULL;
	if (d == NULL) {
		saved = errno;
		if (mfd != -1)
			close(mfd);
		close(tfd);
		errno = saved;
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		time_t last;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(tfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
		    !S_ISREG(st.st_mode))
			continue;
		last = st.st_atime;
		if (st.st_mtime > last)
			last = st.st_mtime;
		if (st.st_ctime > last)
			last = st.st_ctime;
		if (last < now - MAILDIR_TMP_MAX_AGE) {
			if (unlinkat(tfd, de->d_name, 0) == 0 && stale != NULL)
				(*stale)++;
		} else if (foreign_tern_tmp(de->d_name) &&
		    ts_before(&st.st_mtim, &inst_started) &&
		    ts_before(&st.st_ctim, &inst_started)) {
			if (unlinkat(tfd, de->d_name, 0) == 0 &&
			    interrupted != NULL)
				(*interrupted)++;
		}
	}
	closedir(d);
	close(tfd);
	return 0;
}
