/*
 * log.c - key=value event lines (see log.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"

static char log_role[16] = "tern";
static int log_file_fd = -1;
static enum log_level log_min = LOG_LEVEL_INFO;

static void
log_panic(const char *msg)
{
	log_err("%s", msg);
}

void
log_init(const char *role)
{
	log_set_role(role);
	util_set_panic_log(log_panic);
}

void
log_set_role(const char *role)
{
	util_strlcpy(log_role, role, sizeof(log_role));
}

void
log_set_file_fd(int fd)
{
	log_file_fd = fd;
}

void
log_reopen_fd(int fd)
{
	if (fd == -1)
		return;
	if (log_file_fd == -1) {
		log_file_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		return;
	}
	(void)dup3(fd, log_file_fd, O_CLOEXEC);
}

void
log_set_level(enum log_level lvl)
{
	log_min = lvl;
}

static void log_emit(enum log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
log_emit(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r, saved = errno;

	if (lvl < log_min)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ tern[%s %ld] %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000, log_role, (long)getpid(),
	    names[lvl]);
	n = r > 0 ? (size_t)r : 0;
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;   /* cut, but keep the newline */
	line[n++] = '\n';
	(void)util_write_all(STDERR_FILENO, line, n);
	if (log_file_fd != -1)
		(void)util_write_all(log_file_fd, line, n);
	errno = saved;
}

#define LOG_FN(name, lvl)                                                      \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		log_emit(lvl, fmt, ap);                                        \
		va_end(ap);                                                    \
	}
LOG_FN(log_debug, LOG_LEVEL_DEBUG)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_err, LOG_LEVEL_ERR)

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}

char *
log_quote(char *buf, size_t bufsize, const char *s, size_t len, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	bool cut = false;

	ASSERT(bufsize >= 8);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[4];
		size_t elen;

		if (c < 0x20 || c == 0x7f || c == ' ' || c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 15];
			elen = 4;
		} else {
			esc[0] = (char)c;
			elen = 1;
		}
		if (o + elen > max || o + elen + 4 > bufsize) {
			cut = true;
			break;
		}
		memcpy(buf + o, esc, elen);
		o += elen;
	}
	if (cut) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}
