/*
 * spool.h - tern's on-disk queue, format 2: messages, their envelopes and
 * the per-recipient delivery journal as records in the segment log
 * (seglog.h), with group commit, recovery by scanning, and reclaim of
 * segments nothing needs (docs/spool-format.md).
 *
 * Layout under the spool directory (all mode 0700, owned by the queue
 * user):
 *     seg/<n>.seg   the segment log
 *     big/<id>      bodies over spool_inline_max, one file each
 *     corrupt/<id>  what could not be read, kept for the administrator
 *
 * Threads: spool_txn_* run on the queue's event loop (memory, or writes
 * to a big/ file: no fsync). spool_commit_batch(), spool_msg_* and the
 * other commits block on the disk and belong in worker threads; commits
 * from different threads share one fdatasync.
 */
#ifndef TERN_SPOOL_H
#define TERN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mail/envelope.h"
#include "queue/seglog.h"

#define SPOOL_VERSION 2
/* Segment size; bodies up to SPOOL_INLINE_MAX live in the log. */
#define SPOOL_SEGMENT_SIZE ((uint64_t)64 * 1024 * 1024)
#define SPOOL_INLINE_MAX (256 * 1024)
#define SPOOL_INLINE_MAX_LIMIT (SEGLOG_MAX_RECORD - SPOOL_MAX_HEAD - 64)
/* Bound on the head (magic + envelope text) of a queue file. */
#define SPOOL_MAX_HEAD (1024 * 1024)
/* Bound on a failure/deferral reply kept in the journal. */
#define SPOOL_MAX_REPLY 512

struct spool;
struct spool_txn;
struct spool_msg;

/*
 * Create dir's subdirectories (seg/, big/, corrupt/) when missing, owned
 * by uid/gid unless they are (uid_t)-1/(gid_t)-1, and open them. Runs
 * with start-up privileges. NULL with a reason in err.
 */
struct spool *spool_open(const char *dir, uid_t uid, gid_t gid, char *err,
    size_t errsize);
void spool_free(struct spool **sp);
/* The spool directory as given to spool_open(). */
const char *spool_path(const struct spool *sp);
/* Bodies larger than n octets go to big/ (bounded by the log's record). */
void spool_set_inline_max(struct spool *sp, size_t n);
/* Segments made from now on are n bytes (before the first commit). -1
 * (errno EINVAL) if out of seglog's range. */
int spool_set_segment_size(struct spool *sp, uint64_t n);

/*
 * Start-up recovery, before any transaction: scan the log into the index
 * (a torn tail is dropped: it was never acknowledged), remove what a
 * format-1 spool had in incoming/ and convert its queue/, remove big/
 * files of no message, drop segments nothing needs. Returns the number of
 * format-1 incoming files removed, or -1 with a reason in err (the spool
 * cannot be trusted: do not start).
 */
int spool_recover(struct spool *sp, char *err, size_t errsize);

/*
 * Call cb once per queued message, in id order, and (recovery did) move
 * the id generator past every id seen so ids stay unique and increasing
 * even if the clock stepped back. Returns the number of messages.
 */
int spool_scan(struct spool *sp, void (*cb)(void *arg, const char *id),
    void *arg);

/*
 * A new queue id: 16 lower-case hex digits holding (microseconds since the
 * epoch << 12 | counter), so ids sort by arrival and never repeat within
 * a spool. Any thread (the loop receives mail, workers spool reports).
 */
void spool_next_id(struct spool *sp, char id[QUEUE_ID_LEN + 1]);
/* The arrival time in microseconds encoded in a queue id; 0 if malformed. */
int64_t spool_id_time_us(const char *id);
/* true if s is QUEUE_ID_LEN lower-case hex digits and nothing else. */
bool spool_valid_id(const char *s);

/* ---- receiving a message (the loop; a worker for a report it spools
 * and commits itself with spool_commit_batch) ---- */

/*
 * Allocate a queue id into env->id and start the image (head, envelope)
 * in memory. NULL with errno EMSGSIZE if the envelope is over
 * SPOOL_MAX_HEAD. env stays owned by the caller.
 */
struct spool_txn *spool_txn_begin(struct spool *sp, struct envelope *env);
/* Append message octets (in memory; past spool_inline_max to big/<id>).
 * -1 with errno: the caller then aborts the txn. */
int spool_txn_write(struct spool_txn *t, const void *p, size_t len);
const char *spool_txn_id(const struct spool_txn *t);
/* Message octets written so far. */
uint64_t spool_txn_size(const struct spool_txn *t);
/* Drop an uncommitted transaction (and its big/ file); *t = NULL. */
void spool_txn_abort(struct spool_txn **t);

/*
 * Group commit, in a worker thread: for every txn, record the message
 * length in the head; fdatasync the big/ files and big/ once; append one
 * MSG record per txn to the log in one commit group (shared with other
 * threads' commits: one fdatasync). Each txn's outcome is read with
 * spool_txn_error(): 0 means the message is durable; otherwise nothing
 * of it counts and its big/ file is removed.
 */
void spool_commit_batch(struct spool *sp, struct spool_txn *const *txns,
    size_t n);
/* 0 once committed; the errno of the failed step otherwise. */
int spool_txn_error(const struct spool_txn *t);
/* Free a transaction after spool_commit_batch(); *t = NULL. */
void spool_txn_free(struct spool_txn **t);

/*
 * Forget a committed message whose COMMIT_OK was never sent (the smtp
 * side aborted or went away while it was being committed): a DONE
 * record. -1 with errno.
 */
int spool_unlink_committed(struct spool *sp, const char *id);

/* ---- delivering a message (worker threads) ---- */

enum spool_rcpt_state {
	SPOOL_RCPT_PENDING,    /* never tried, or tried and left no record */
	SPOOL_RCPT_DEFERRED,   /* temporary failure; retry at next_attempt */
	SPOOL_RCPT_DELIVERED,  /* final */
	SPOOL_RCPT_FAILED,     /* final: permanent failure */
};

struct spool_rcpt_status {
	enum spool_rcpt_state state;
	unsigned attempts;     /* temporary failures so far */
	int64_t next_attempt;  /* unix seconds, when DEFERRED */
	char *reply;           /* last failure reply (FAILED/DEFERRED) or NULL */
	bool warned;           /* a delay report was sent (journal "W") */
	bool reported;         /* the report on the final outcome is spooled
	                        * (journal "R") */
	/*
	 * Who decided the last outcome (journal "A", written just before
	 * it): 0 no A record (a journal from before reports were owed: its
	 * final outcome counts as reported), '-' tern itself, 'l' a local
	 * mailbox, 's' the SMTP server mta, 'd' the SMTP server mta, which
	 * offers DSN and reports from then on (RFC 3461 5.2.2).
	 */
	char how;
	int64_t last_attempt;  /* of the last outcome, unix s; 0: unknown */
	char *mta;             /* with 's'/'d': the server's name, else NULL */
};

/*
 * Read message id's record (and big/ file) and its journal into memory,
 * check its head, parse its envelope, replay its journal. NULL with errno:
 * ENOENT if it is gone, EBADMSG if it is corrupt (reason in err; see
 * spool_quarantine), anything else is an environment error worth a retry.
 */
struct spool_msg *spool_msg_load(struct spool *sp, const char *id, char *err,
    size_t errsize);
void spool_msg_close(struct spool_msg **m);

/*
 * What spool_msg_load() does once the image is in memory (p, len: head,
 * envelope, body, journal): check the head, parse the envelope (its id
 * must be id), replay the journal. The message points into p, which must
 * outlive it, and has no spool: use it to read (spool_msg_rcpt, _held,
 * _done), not to flush. *keep (may be NULL) gets the length of the image
 * without a torn last journal line (format-1 files). NULL with errno
 * EBADMSG (reason in err) if the image is corrupt, EINVAL for a bad id.
 * For tests and the fuzz target.
 */
struct spool_msg *spool_msg_parse(const char *id, const char *p, size_t len,
    size_t *keep, char *err, size_t errsize);

const char *spool_msg_id(const struct spool_msg *m);
/*
 * A random tag drawn at commit and kept with the message for its life
 * (format-1 messages keep their queue file's inode number). With the id
 * it names this message apart from any later one that might reuse the
 * id (local delivery's file names, docs/queue.md).
 */
uint64_t spool_msg_tag(const struct spool_msg *m);
const struct envelope *spool_msg_envelope(const struct spool_msg *m);
/* The message octets exactly as received (CRLF lines); valid until close. */
const char *spool_msg_body(const struct spool_msg *m, size_t *len);
const struct spool_rcpt_status *spool_msg_rcpt(const struct spool_msg *m,
    size_t i);

/*
 * Record a recipient's outcome: updates the in-memory status and buffers a
 * journal record; nothing is written until spool_msg_flush(). reply is a
 * complete SMTP reply line; control characters are replaced and it is cut
 * at SPOOL_MAX_REPLY.
 */
void spool_msg_delivered(struct spool_msg *m, size_t i);
void spool_msg_failed(struct spool_msg *m, size_t i, const char *reply);
void spool_msg_deferred(struct spool_msg *m, size_t i, int64_t next_attempt,
    const char *reply);
/* The sender got a delay report for recipient i: buffers "W <i>". */
void spool_msg_warned(struct spool_msg *m, size_t i);
/*
 * The report on recipient i's final outcome (failed, delivered, relayed)
 * is durable in the queue: buffers "R <i>".
 */
void spool_msg_reported(struct spool_msg *m, size_t i);
/*
 * Who decides the outcome of recipient i that is recorded next (call it
 * just before spool_msg_delivered/failed/deferred): buffers "A <i> <when>
 * <how> <mta>" (how and mta as in struct spool_rcpt_status; mta NULL or a
 * token of printable ASCII without spaces, else it is not kept). The
 * outcome record then carries it; an outcome without one has how 0.
 */
void spool_msg_attempt(struct spool_msg *m, size_t i, int64_t when, char how,
    const char *mta);
/*
 * Hold (tern queue hold) or release a message: buffers an "H <now>" or
 * "U <now>" journal record; the last one wins on replay. A held message is
 * not scheduled, across restarts too (docs/spool-format.md).
 */
void spool_msg_set_held(struct spool_msg *m, bool held, int64_t now);
/* true if the journal holds the message; *since (may be NULL): when. */
bool spool_msg_held(const struct spool_msg *m, int64_t *since);
/* Make the buffered records durable (a JRN record). -1 with errno. */
int spool_msg_flush(struct spool_msg *m);
/* true once every recipient is DELIVERED or FAILED. */
bool spool_msg_done(const struct spool_msg *m);
/* Finished: a DONE record, and the big/ file removed. -1 with errno. */
int spool_msg_remove(struct spool_msg *m);

/* Copy what can be read of the message to corrupt/<id> for the
 * administrator, and forget it. -1 with errno. */
int spool_quarantine(struct spool *sp, const char *id);

#endif
