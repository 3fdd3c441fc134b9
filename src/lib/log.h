/*
 * log.h - one line per event, key=value, to stderr and optionally a file.
 *
 * Line shape: "2026-11-29T11:45:28.123Z tern[role pid] event key=value ..."
 * Each line goes out in a single write(2) so lines from the parent, the
 * smtp and the queue processes never interleave.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdarg.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERR };

/* role names the process in each line ("parent", "smtp", "queue"). */
void log_init(const char *role);
/* Also copy every line to fd (the log_file, opened by the parent). -1: none. */
void log_set_file_fd(int fd);
/* Log rotation: from now on the log file is the one open at fd (the
 * caller still closes fd). The descriptor number stays the same (dup2),
 * so a thread writing at that moment writes to the old file or the new
 * one, never to a closed or reused descriptor. */
void log_reopen_fd(int fd);
void log_set_level(enum log_level lvl);
void log_set_role(const char *role);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Environment failure we cannot continue from: log and exit(1). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Quote a peer-supplied string for a log value: control bytes, spaces,
 * quotes and backslashes are escaped, and the result is cut at max bytes
 * (marked with "..."), so a hostile peer cannot forge or flood log lines.
 * Returns buf.
 */
char *log_quote(char *buf, size_t bufsize, const char *s, size_t len, size_t max);

#endif
