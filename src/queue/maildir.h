/*
 * maildir.h - local delivery into a Maildir (https://cr.yp.to/proto/maildir.html).
 *
 * A delivery writes tmp/<unique>, fsyncs it, renames it into new/ and
 * fsyncs new/: the message is durable before maildir_deliver() returns.
 * Unique names follow the modern convention
 *     <secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>
 * with '/' and ':' in the host name written as \057 and \072.
 *
 * Stored form: "Return-Path: <sender>" and "Delivered-To: rcpt" are
 * prepended, and every CRLF of the spooled message becomes LF, because
 * Maildir files hold lines in the local (Unix) convention that mail
 * readers expect. Nothing else changes: a bare CR or LF stays as it is.
 *
 * Every path is relative to a directory fd the caller opened while it
 * still had its start-up privileges (openat/mkdirat/renameat), so
 * delivery works when an ancestor is not searchable by the queue user.
 * Thread-safe: delivery workers call it concurrently.
 */
#ifndef TERN_MAILDIR_H
#define TERN_MAILDIR_H

#include <stddef.h>

struct maildir_msg {
	const char *return_path;   /* envelope sender; "" for the null path */
	const char *delivered_to;  /* the mailbox address being delivered to */
	const char *body;          /* message as spooled: CRLF lines */
	size_t len;
};

/*
 * Deliver msg into the Maildir at relpath (relative to basefd; "" or "."
 * is basefd itself). The Maildir and any missing directories on relpath
 * are created (mode 0700). relpath must not be absolute nor contain ".."
 * components (EINVAL). On success returns 0 and, if name_r is not NULL,
 * stores "new/<unique>" there. -1 with errno on failure; nothing is left
 * in new/ then.
 */
int maildir_deliver(int basefd, const char *relpath,
    const struct maildir_msg *msg, char *name_r, size_t namesize);

/*
 * Length of the static directory prefix of a Maildir path pattern: the
 * part before the directory component holding the first '%' ("%d", "%u",
 * ...), without its trailing slash ("/" stays "/" for root). For a
 * pattern without '%', the parent directory of the Maildir. Returns 0 if
 * the pattern is not absolute.
 */
size_t maildir_pattern_base(const char *pattern);

#endif
