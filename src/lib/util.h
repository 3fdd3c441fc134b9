/*
 * util.h - allocation, string and time helpers with no mail knowledge.
 *
 * Every other module may include this; it includes nothing of tern's.
 * The x-prefixed allocators abort on failure (an MTA that cannot allocate
 * a few bytes is better restarted by its parent than limping on).
 */
#ifndef TERN_UTIL_H
#define TERN_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/* Broken invariant: log and abort. Never used for peer mistakes. */
#define ASSERT(e)                                                              \
	do {                                                                   \
		if (!(e))                                                      \
			util_assert_fail(#e, __FILE__, __LINE__);              \
	} while (0)

_Noreturn void util_assert_fail(const char *expr, const char *file, int line);
/* Where an assertion failure or an allocation failure is reported before
 * the process ends: log_init() installs the logger; until then, stderr. */
void util_set_panic_log(void (*fn)(const char *msg));

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a fresh heap string; aborts on allocation failure. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Copy at most dstsize-1 bytes of src and NUL-terminate; returns strlen(src)
 * so callers detect truncation with ret >= dstsize (BSD strlcpy contract).
 */
size_t util_strlcpy(char *dst, const char *src, size_t dstsize);

/* ASCII-only case folding: addresses and keywords are compared this way. */
bool util_ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen);

/* true if any of the n octets at p is >= 0x80 (8-bit content, UTF-8). */
bool util_has_8bit(const char *p, size_t n);

/*
 * The A-label form (RFC 5890 2.3.2.1, "xn--...") of the domain (p, len)
 * whose labels may be UTF-8 U-labels, by IDNA2008 (RFC 5891, libidn2,
 * with UTS #46 mapping of case and width so "Bücher" and "bücher" are one
 * name); ASCII labels are lower-cased. Returns 0 with out filled (at most
 * outsize - 1 octets); -2 if a label or the name is too long as A-labels
 * (RFC 1035 2.3.4), or the result does not fit; -1 if it is not a valid
 * IDN at all.
 */
int util_idna_to_ascii(const char *p, size_t len, char *out, size_t outsize);
void util_ascii_lower(char *s);

/* Wall clock in microseconds / seconds since the epoch. */
int64_t util_now_us(void);
/* Monotonic clock in milliseconds, for timeouts and delays. */
int64_t util_mono_ms(void);

/* RFC 5322 date-time for Received:, Date: and friends, in local time. */
void util_rfc5322_date(int64_t unix_secs, char *buf, size_t bufsize);

/* Set O_NONBLOCK / FD_CLOEXEC; return -1 with errno on failure. */
int util_set_nonblock(int fd);
int util_set_cloexec(int fd);

/* write(2) all of buf, retrying on EINTR; -1 with errno on failure. */
int util_write_all(int fd, const void *buf, size_t len);
/* All len octets at offset off, retrying short transfers and EINTR. -1
 * with errno (EIO for a file that ends first). */
int util_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
int util_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* fsync a directory by path relative to dirfd (AT_FDCWD for cwd). */
int util_fsync_dir_at(int dirfd, const char *path);

/* mkdir -p with mode; existing directories are fine. */
int util_mkdirs(const char *path, unsigned mode);

/* The unsafe string functions do not compile in tern (HAProxy's bug.h). */
#pragma GCC poison strcpy strcat sprintf vsprintf gets

#endif
