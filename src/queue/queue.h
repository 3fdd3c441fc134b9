/*
 * queue.h - the queue process: owns the spool, takes submissions from the
 * smtp process over IPC (proto/submit.h) and delivers local mail to
 * Maildirs.
 *
 * Threads (docs/spool-format.md has the full picture):
 *  - the event loop: IPC with the smtp process, the relay process and the
 *    parent, writing incoming files (page cache only), scheduling and
 *    logging;
 *  - QUEUE_COMMIT_THREADS commit threads: group commit (fdatasync, rename
 *    into queue/, one directory fsync per batch), after which the loop
 *    answers COMMIT_OK;
 *  - cfg->delivery_workers worker threads: load a queue file, deliver its
 *    local recipients, prepare relay jobs, journal outcomes, remove the
 *    file when every recipient is done.
 * Workers never touch libevent; they hand results back through an eventfd.
 *
 * Towards the relay process the relay protocol of proto/relay_job.h
 * holds, plus (docs/queue.md): the queue accepts only RESULT frames, each for a
 * job it sent and has no answer for yet, with a well-formed payload: the
 * via line, then exactly one line per job recipient in order, or the via
 * line alone (every recipient deferred: what a relay that reached no
 * server may say). Anything else closes the channel; every job in flight
 * on it is then deferred (retried after retry_min), never lost. The queue
 * sends no CANCEL today.
 *
 * Towards the smtp process the protocol of proto/submit.h holds, plus:
 *  - DATA may only follow BEGIN_OK; after BEGIN_FAIL the id is forgotten
 *    (an ABORT for it is ignored, DATA or COMMIT for it is a violation);
 *  - ABORT after COMMIT (the client went away while waiting for 250) is
 *    allowed: no reply follows and the message is taken back out of the
 *    queue once its commit finishes, since it was never acknowledged;
 *  - an unknown frame type, a zero or duplicate id, a malformed envelope
 *    or a frame that breaks these rules is a protocol violation: the
 *    channel is closed and logged, its open transactions are aborted.
 * Per transaction, the queue stores at most max_message_size plus
 * QUEUE_RECEIVED_ALLOWANCE octets; beyond that the transaction fails with
 * 552 at COMMIT. At most max_connections (+ a small margin) transactions
 * may be open at once; more get BEGIN_FAIL 451.
 */
#ifndef TERN_QUEUE_H
#define TERN_QUEUE_H

#include <sys/types.h>

#include "conf/config.h"

#define QUEUE_COMMIT_THREADS 2
/* Room for the Received: header the smtp process prepends (RFC 5321 4.4). */
#define QUEUE_RECEIVED_ALLOWANCE (16 * 1024)

struct queue;

/*
 * Runs with the start-up privileges: create the spool and the static
 * prefix of every domain's Maildir pattern when missing (owned by uid/gid
 * when uid is not (uid_t)-1), and open their directory fds so that
 * delivery keeps working after privileges are dropped. cfg must outlive
 * the queue. NULL with a reason in err on failure.
 */
struct queue *queue_new(const struct config *cfg, uid_t uid, gid_t gid,
    char *err, size_t errsize);

/*
 * After the caller has dropped privileges: remove partial files from
 * incoming/, schedule every committed message, send CTL_READY on
 * ctl_fd, then serve submissions on smtp_fd, hand relay jobs to the relay
 * process on relay_fd and deliver until CTL_SHUTDOWN (or
 * SIGTERM/SIGINT) arrives or the control channel closes. In-flight
 * commits, deliveries and the results of jobs the relay holds are
 * waited for (SHUTDOWN_GRACE_SECS at most); messages not yet delivered
 * stay in the spool. SIGTERM and SIGINT are taken through a signalfd and
 * stay blocked when queue_run returns; SIGPIPE is ignored. ctl_fd, smtp_fd
 * or relay_fd may be -1 (none yet: CTL_PEER_FD brings the smtp channel,
 * CTL_RELAY_FD the relay channel; relay jobs wait meanwhile). Takes
 * ownership of ctl_fd, smtp_fd and relay_fd.
 * Returns the process exit code: 0 after a requested shutdown, 1 after a
 * fatal error or the loss of the parent.
 */
int queue_run(struct queue *q, int ctl_fd, int smtp_fd, int relay_fd);

void queue_free(struct queue **q);

#endif
