/*
 * queue.h - the queue process: owns the spool, takes submissions from the
 * smtp process over IPC (proto/submit.h), delivers local mail to Maildirs
 * and hands relay jobs to the relay process (proto/relay_job.h).
 *
 * Its threads, and what each may touch, are described in queue_int.h;
 * the scheduler in docs/queue.md, the spool in docs/spool-format.md.
 */
#ifndef TERN_QUEUE_H
#define TERN_QUEUE_H

#include <sys/types.h>

#include "conf/config.h"

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
 * After the caller has dropped privileges: recover the spool (scan its
 * log, convert a format-1 spool), schedule every committed message, send CTL_READY on
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
