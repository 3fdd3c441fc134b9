/*
 * sendmail.h - `tern sendmail`, the classic command-line interface of
 * cron, PHP mail() and scripts (also the binary invoked as `sendmail`).
 *
 *   tern sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-C FILE] [-v]
 *                 [--] [ADDRESS...] < message
 *
 * The message is read from stdin, completed (From:, Date:, Message-ID:
 * when missing; Bcc: removed; CRLF line ends) and handed to the running
 * daemon over its submit_socket, an AF_UNIX socket on which the smtp
 * process speaks ordinary SMTP and learns the caller's uid from the
 * kernel. The exit status is 0 only after the daemon's 250 to the end of
 * data, that is once the message is fsync'ed in the queue; otherwise a
 * sysexits code and a line on stderr with the daemon's reply:
 *
 *   64 EX_USAGE     bad option, no recipients
 *   65 EX_DATAERR   bad address syntax, sender or content refused (5xx)
 *   67 EX_NOUSER    a recipient refused (5xx): nothing was queued
 *   69 EX_UNAVAILABLE  local submission disabled (submit_socket none),
 *                   the daemon refuses sessions (5xx greeting)
 *   74 EX_IOERR     reading stdin, or the connection broke
 *   75 EX_TEMPFAIL  tern is not running (no socket, refused), a 4xx, a
 *                   timeout: nothing was queued, try again later
 *   77 EX_NOPERM    the socket's permissions refuse this user
 *   78 EX_CONFIG    the configuration file cannot be read
 *
 * All or nothing: if any recipient is refused the transaction is
 * abandoned, so that a retry never duplicates mail for the others.
 *
 * The configuration (for submit_socket, spool and hostname only) is the
 * -C/-c file, else $TERN_CONFIG, else /etc/tern/tern.conf if it exists,
 * else the embedded default (relative paths against the working
 * directory, as `tern serve` without -c).
 */
#ifndef TERN_SENDMAIL_H
#define TERN_SENDMAIL_H

#include <stdbool.h>

/* Run the command on argv[first..argc); returns the exit status. */
int sendmail_main(int argc, char **argv, int first);

/* true if argv0's last path component is "sendmail". */
bool sendmail_invoked_as(const char *argv0);

#endif
