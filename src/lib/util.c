/*
 * util.c - allocation, string and time helpers (see util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <idn2.h>

#include "lib/util.h"

/* util sits below log (log uses util's strings and writes), so its own
 * last words go through a hook that log_init() installs. */
static void (*panic_log)(const char *msg);

void
util_set_panic_log(void (*fn)(const char *msg))
{
	panic_log = fn;
}

static void
panic_say(const char *msg)
{
	if (panic_log != NULL) {
		panic_log(msg);
		return;
	}
	(void)util_write_all(STDERR_FILENO, msg, strlen(msg));
	(void)util_write_all(STDERR_FILENO, "\n", 1);
}

void
util_assert_fail(const char *expr, const char *file, int line)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "assertion failed: %s at %s:%d", expr, file,
	    line);
	panic_say(msg);
	abort();
}

static void *
check_alloc(void *p, size_t n)
{
	char msg[128];

	if (p == NULL && n != 0) {
		snprintf(msg, sizeof(msg), "out of memory allocating %zu bytes", n);
		panic_say(msg);
		exit(1);
	}
	return p;
}

void *
xmalloc(size_t n)
{
	return check_alloc(malloc(n ? n : 1), 1);
}

void *
xcalloc(size_t nmemb, size_t size)
{
	return check_alloc(calloc(nmemb ? nmemb : 1, size ? size : 1), 1);
}

void *
xreallocarray(void *p, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > SIZE_MAX / size)
		check_alloc(NULL, SIZE_MAX);    /* overflow: no such allocation */
	size_t n = nmemb * size;
	return check_alloc(realloc(p, n != 0 ? n : 1), 1);
}

char *
xstrdup(const char *s)
{
	return check_alloc(strdup(s), 1);
}

char *
xstrndup(const char *s, size_t n)
{
	return check_alloc(strndup(s, n), 1);
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		check_alloc(NULL, 1);
	return s;
}

size_t
util_strlcpy(char *dst, const char *src, size_t dstsize)
{
	size_t n = strlen(src);

	if (dstsize != 0) {
		size_t c = n < dstsize - 1 ? n : dstsize - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

static int
ascii_lower_c(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

bool
util_ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (ascii_lower_c((unsigned char)a[i]) !=
		    ascii_lower_c((unsigned char)b[i]))
			return false;
	return true;
}

void
util_ascii_lower(char *s)
{
	for (; *s; s++)
		*s = (char)ascii_lower_c((unsigned char)*s);
}

int64_t
util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
util_rfc5322_date(int64_t unix_secs, char *buf, size_t bufsize)
{
	/* RFC 5322 3.3; names are fixed English, never locale-dependent. */
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
		"Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May",
		"Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)unix_secs;
	struct tm tm;
	long off;

	localtime_r(&t, &tm);
	off = tm.tm_gmtoff / 60;
	snprintf(buf, bufsize, "%s, %d %s %04d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
	    labs(off) / 60, labs(off) % 60);
}

int
util_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int
util_set_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl == -1)
		return -1;
	return fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

int
util_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* All len octets at off, by pread or pwrite; EIO for a file that ends. */
static int
pio_all(int fd, char *p, size_t len, uint64_t off, bool write)
{
	while (len > 0) {
		ssize_t n = write ? pwrite(fd, p, len, (off_t)off) :
		    pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int
util_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	return pio_all(fd, (char *)(uintptr_t)buf, len, off, true);
}

int
util_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	return pio_all(fd, buf, len, off, false);
}

int
util_fsync_dir_at(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r, saved;

	if (fd == -1)
		return -1;
	r = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return r;
}

int
util_mkdirs(const char *path, unsigned mode)
{
	char buf[4096];
	size_t n = util_strlcpy(buf, path, sizeof(buf));

	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

bool
util_has_8bit(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;

	/* OR blocks together (vectorises), stop at the first hit. */
	for (size_t i = 0; i < n; i += 4096) {
		size_t e = n - i < 4096 ? n : i + 4096;
		unsigned char acc = 0;
		for (size_t j = i; j < e; j++)
			acc |= s[j];
		if (acc & 0x80)
			return true;
	}
	return false;
}

int
util_idna_to_ascii(const char *p, size_t len, char *out, size_t outsize)
{
	char in[1024];
	char *ascii = NULL;
	int rc;

	/* 255 octets of domain are at most 1020 octets of UTF-8 */
	if (len >= sizeof(in) || memchr(p, '\0', len) != NULL)
		return -1;
	memcpy(in, p, len);
	in[len] = '\0';
	rc = idn2_to_ascii_8z(in, &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (rc == IDN2_TOO_BIG_LABEL || rc == IDN2_TOO_BIG_DOMAIN ||
	    rc == IDN2_PUNYCODE_BIG_OUTPUT ||
	    (rc == IDN2_OK && ascii != NULL && strlen(ascii) >= outsize)) {
		idn2_free(ascii);
		return -2;
	}
	if (rc != IDN2_OK || ascii == NULL) {
		idn2_free(ascii);
		return -1;
	}
	for (size_t i = 0; ascii[i] != '\0'; i++)
		out[i] = (char)(ascii[i] >= 'A' && ascii[i] <= 'Z' ?
		    ascii[i] + 32 : ascii[i]);
	out[strlen(ascii)] = '\0';
	idn2_free(ascii);
	return 0;
}
