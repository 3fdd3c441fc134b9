/*
 * maildir.h - local delivery into a Maildir (https://cr.yp.to/proto/maildir.html).
 *
 * A delivery writes tmp/<name>R<nonce>, fsyncs it, renames it into
 * new/<name> without replacing anything and fsyncs new/: the message is
 * durable before maildir_deliver() returns.
 *
 * Names are deterministic (docs/queue.md, "Local delivery exactly once"):
 *     <secs>.M<usecs>Q<id>I<tag>H<digest>.<host>,S=<size>
 * secs and usecs are the message's arrival, id its queue id, tag the
 * number that tells it apart from any later message with the same id
 * (the queue file's inode), digest the first 128 bits of SHA-256 of the
 * mailbox address in hex, host the host name with '/', ':' and ','
 * written as \057, \072 and _, size the stored size. One message reaches
 * one mailbox under one name, so a second attempt (after a crash, or for a
 * second recipient reaching the same mailbox) finds the first copy in
 * new/, or in cur/ where a mail reader moved it and appended
 * ":2,<flags>", instead of writing another. The tmp/ name adds
 * R<nonce>, 16 hex digits drawn once per process, so the tmp/ files of
 * a process that is gone can be told from those being written
 * (maildir_clean_tmp).
 *
 * Stored form: "Return-Path: <sender>" and "Delivered-To: rcpt" are
 * prepended, and every CRLF of the spooled message becomes LF, because
 * Maildir files hold lines in the local (Unix) convention that mail
 * readers expect. Nothing else changes: a bare CR or LF stays as it is.
 *
 * Every path is relative to a directory fd the caller opened while it
 * still had its start-up privileges (openat/mkdirat/renameat), so
 * delivery works when an ancestor is not searchable by the queue user.
 * Thread-safe: delivery workers call it concurrently, on different
 * (message, mailbox) pairs.
 */
#ifndef TERN_MAILDIR_H
#define TERN_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The Maildir convention: a tmp/ file untouched this long is garbage. */
#define MAILDIR_TMP_MAX_AGE (36 * 3600)

struct maildir_msg {
	const char *return_path;   /* envelope sender; "" for the null path */
	const char *delivered_to;  /* the mailbox address being delivered to */
	const char *body;          /* message as spooled: CRLF lines */
	size_t len;
	/* The message's identity, which names the delivery: */
	const char *id;            /* queue id: 1..32 lower-case letters, digits */
	uint64_t tag;              /* unique among messages with that id */
	int64_t arrival_us;        /* arrival, microseconds since the epoch */
};

/* maildir_deliver() flags */
#define MAILDIR_RECHECK 0x1    /* an earlier attempt may have delivered:
                                * read new/ and cur/ for its copy */

/*
 * Deliver msg into the Maildir at relpath (relative to basefd; "" or "."
 * is basefd itself). The Maildir and any missing directories on relpath
 * are created (mode 0700). relpath must not be absolute nor contain ".."
 * components (EINVAL). Without MAILDIR_RECHECK only new/<name> is looked
 * for (a stat); with it, every entry of new/ and cur/ whose name starts
 * with "<secs>.M<usecs>Q<id>I<tag>H<digest>." counts as the earlier copy,
 * whatever host, size or info suffix it has.
 *
 * Returns 0 when this call wrote the copy, 1 when it found an earlier
 * one (and made sure that directory entry is durable), -1 with errno on
 * failure (nothing of this call is left in new/ then). On 0 and 1, if
 * name_r is not NULL, stores the copy's "new/<name>" or "cur/<name>".
 */
int maildir_deliver(int basefd, const char *relpath,
    const struct maildir_msg *msg, unsigned flags, char *name_r,
    size_t namesize);

/*
 * The name of msg's copy in new/, or with tmp the name its tmp/ file gets
 * in this process, into buf. -1 (EINVAL) if msg's id or addresses are
 * unusable, or buf is too small.
 */
int maildir_name(const struct maildir_msg *msg, bool tmp, char *buf,
    size_t bufsize);

/*
 * Clean tmp/ of the Maildir at relpath under basefd (at start-up and
 * daily): remove every regular file whose last access, change and
 * modification are all older than MAILDIR_TMP_MAX_AGE before now, and
 * every tmp/ file of a tern delivery on this host that another process
 * began (not this process's nonce) and last wrote before this process
 * made its first delivery or sweep: its writer is gone, the delivery was
 * interrupted, and its message is delivered again under a new tmp/
 * name. Counts what it removed in *interrupted and *stale (either may be
 * NULL). Returns 0, or -1 with errno (ENOENT: no such Maildir or tmp/).
 */
int maildir_clean_tmp(int basefd, const char *relpath, time_t now,
    unsigned *interrupted, unsigned *stale);

/*
 * Length of the static directory prefix of a Maildir path pattern: the
 * part before the directory component holding the first '%' ("%d", "%u",
 * ...), without its trailing slash ("/" stays "/" for root). For a
 * pattern without '%', the parent directory of the Maildir. Returns 0 if
 * the pattern is not absolute.
 */
size_t maildir_pattern_base(const char *pattern);

#endif
