/*
 * queue_int.h - what the files of the queue process share; queue.h is
 * its public face. Only src/queue/ includes this.
 *
 * Threads:
 *  - the event loop: IPC with the smtp process (queue_submit.c), the relay
 *    process (queue_relay.c) and the parent (queue.c), the control socket
 *    (queue_control.c, queue_admin.c), transactions in memory and big/
 *    files (page cache only), scheduling (queue_sched.c) and logging;
 *  - QUEUE_COMMIT_THREADS commit threads (queue_submit.c): group commit
 *    (fdatasync, rename into queue/, one directory fsync per batch), after
 *    which the loop answers COMMIT_OK;
 *  - cfg->delivery_workers worker threads (queue_task.c): run tasks: load
 *    a queue file, deliver its local recipients (queue_local.c), prepare
 *    relay jobs and journal their results (queue_relay.c), spool reports
 *    (queue_report.c), serve tern queue (queue_admin.c), remove the file
 *    when every recipient is done;
 *  - one sweep thread (queue_local.c): cleans the Maildirs' tmp/ at start
 *    and daily.
 * Workers never touch libevent; they hand results back through an eventfd
 * (queue_notify).
 *
 * Ownership:
 *  - struct qmsg belongs to the event loop, as do the relay feed's jobs,
 *    domains and channel (queue_relay.c) and the smtp channel's
 *    transactions (queue_submit.c). A transaction being committed is also
 *    referenced by the commit pipeline; the loop frees it only when the
 *    commit thread hands it back.
 *  - A task (struct task) carries a copy of the queue id and, for relay
 *    work, its job; workers never touch the loop's struct qmsg. At most
 *    one task per message is in a worker (qmsg.busy; the others wait in
 *    qmsg.waiting), so no two threads ever work on one queue file.
 *  - q->mu guards the task lists, the done lists and the stop flags; the
 *    loop learns about finished work by reading q->done_fd (an eventfd).
 *
 * Each file of the queue says at its top which thread runs its functions.
 */
#ifndef TERN_QUEUE_INT_H
#define TERN_QUEUE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mail/dsn.h"
#include "mail/envelope.h"
#include "lib/ipc.h"
#include "queue/queue_control.h"

#define QUEUE_COMMIT_THREADS 2
/* Room for the Received: header the smtp process prepends (RFC 5321 4.4). */
#define QUEUE_RECEIVED_ALLOWANCE (16 * 1024)
#define LOAD_RETRY_SECS 60
#define HEAP_NONE UINT32_MAX
#define RELAY_HEAD_SLACK (16 * 1024)   /* envelope records other than rcpt */
#define RELAY_RCPT_BYTES (IPC_MAX_PAYLOAD - RELAY_HEAD_SLACK)

struct chan;          /* queue_submit.c */
struct config;
struct rchan;         /* queue_relay.c */
struct rdomain;       /* queue_relay.c */
struct rjob;          /* queue_relay.c */
struct spool_msg;
struct txn;           /* queue_submit.c */

/*
 * One queued message, as the loop knows it. Everything else (envelope,
 * recipients' states, the message) stays on disk until a worker loads it:
 * this is the whole in-memory cost of a deferred message (docs/queue.md).
 * Invariant: a message is in the due heap only while no task runs or
 * waits for it and it has no relay job (whoever holds it reschedules it).
 */
struct qmsg {
	struct qmsg *prev, *next;  /* every message (q->msgs) */
	struct task *waiting;      /* tasks queued behind the running one */
	char *sender;              /* for tern queue list; NULL until loaded */
	uint64_t idn;              /* the queue id, as a number */
	int64_t due;               /* next scan, unix seconds, while in the heap */
	uint32_t heap_idx;         /* HEAP_NONE when not in the heap */
	uint32_t njobs : 24;       /* relay jobs waiting or in flight
	                              (at most one per recipient) */
	uint32_t dsn_tries : 7;    /* reports that failed to spool in a row */
	uint32_t dsn_owed : 1;     /* the last task found a report owed */
	uint32_t size_kib;         /* message size, for the relay byte budget */
	/* Recipients (ENVELOPE_MAX_RCPTS < 2^14) and flags in one word. */
	unsigned nrcpt : 14;       /* in the envelope; 0 until loaded */
	unsigned npending : 14;    /* not final yet, as of the last task */
	unsigned busy : 1;         /* a task is in a worker: one at a time */
	unsigned gone : 1;         /* removed or quarantined: free when idle */
	unsigned held : 1;         /* tern queue hold: never in the heap */
	unsigned force : 1;        /* tern queue flush: next scan ignores
	                              the deferred recipients' next attempt */
};

/*
 * Work on one message for the worker threads. Tasks for one message run
 * one after the other (qmsg.busy, qmsg.waiting), so no two threads ever
 * touch one queue file and each journal append sees the records before it.
 *  SCAN    load, deliver local recipients, journal, and list the remote
 *          recipients that are due, grouped into relay jobs;
 *  LOAD    load a relay job's envelope and message into ready frames;
 *  RESULT  journal a relay job's outcome, remove the file when done;
 *  CTL     tern queue show/hold/release/delete (queue_admin.c);
 *  REPORT  spool the one report the message owes its sender, covering
 *          every recipient owed one (docs/dsn.md), journal R/W records.
 */
enum task_kind { TASK_SCAN, TASK_LOAD, TASK_RESULT, TASK_CTL, TASK_REPORT };
enum task_result { TR_KEEP, TR_REMOVED, TR_GONE, TR_RETRY, TR_SKIPPED };

/*
 * A recipient outcome the sender is owed a report about (dsn.h), as a
 * REPORT task finds it in the journal (docs/dsn.md).
 */
struct dsn_note {
	size_t rcpt;
	enum dsn_action action;
	char *diag;                /* the SMTP reply, or NULL */
	char *mta;                 /* the server that gave it, or NULL */
	int64_t when;              /* last attempt, unix s; 0: unknown */
};

struct rgroup {                /* SCAN output: the recipients of one job */
	struct rgroup *next;
	char *domain;              /* lower case */
	uint32_t *idx;             /* recipient indexes, in envelope order */
	size_t n, cap;
	size_t bytes;              /* their envelope records, bounded */
};

struct task {
	struct task *next;
	struct qmsg *m;            /* loop only */
	enum task_kind kind;
	bool fresh;                /* new mail goes ahead of retries */
	char id[QUEUE_ID_LEN + 1];
	enum task_result result;
	int64_t next_due;          /* SCAN/RESULT KEEP: earliest work left; 0 none */
	uint64_t size;             /* SCAN: message octets */
	struct rgroup *groups;     /* SCAN: relay jobs to queue */
	struct rjob *job;          /* LOAD, RESULT */
	struct evbuffer *frames;   /* LOAD: JOB, DATA..., END, ready to send */
	bool force;                /* SCAN: deferred recipients are due now */
	bool held;                 /* SCAN: the journal holds the message */
	unsigned nrcpt, npending;  /* after the task; nrcpt 0: not loaded */
	char *sender;              /* copy for the loop's record, or NULL */
	/* After the task: the message owes its sender a report (its file
	 * is kept for it) */
	bool owes;
	/* REPORT: the recipients covered, and the report spooled */
	struct dsn_note *notes;
	size_t nnotes, notes_cap;
	char dsn_id[QUEUE_ID_LEN + 1];   /* "" if none */
	bool dsn_failed;           /* could not be spooled: retry later */
	/* CTL */
	enum queue_control_op ctl_op;
	int ctl_status;            /* QUEUE_CONTROL_* */
	char *ctl_json;            /* SHOW: the message object */
	queue_control_done_fn *ctl_done;
	void *ctl_arg;
};

struct base_dir {
	char *path;                /* static prefix of a Maildir pattern */
	size_t len;
	int fd;
};


struct queue {
	const struct config *cfg;
	struct spool *spool;
	struct base_dir *bases;
	size_t nbases;
	size_t max_txns;
	uint64_t max_size;

	struct event_base *base;
	struct event *done_ev, *sig_ev, *grace_ev;
	struct ctl *ctl;           /* to the parent, or NULL */
	int done_fd;
	int sig_fd;                /* signalfd for SIGTERM, SIGINT */
	struct chan *chan;
	struct qmsg *msgs;
	size_t nmsgs;
	struct queue_control *control;     /* tern queue ... (control socket) */

	/* Shared with the workers, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t commit_cv, deliver_cv;
	struct txn *commit_head, *commit_tail;
	struct task *new_head, *new_tail;   /* fresh mail and relay work first */
	struct task *old_head, *old_tail;   /* recovered and retried */
	struct txn *done_txn_head, *done_txn_tail;
	struct task *done_job_head, *done_job_tail;
	bool stop_threads;
	pthread_cond_t sweep_cv;            /* wakes the Maildir sweep to stop */
	atomic_bool sweep_stop;
	pthread_t sweep_thread;
	bool sweep_started;
	uint64_t ncommits, nbatches;        /* group commit statistics */
	pthread_t *threads;
	size_t nthreads;

	/* Scheduling (loop only). */
	int64_t retry_min, retry_max, lifetime;   /* seconds */
	int64_t delay_warn;                 /* seconds; 0: no delay reports */
	unsigned max_relay, max_relay_domain;
	struct qmsg **heap;                 /* idle messages by due time */
	size_t nheap, heapcap;
	struct event *timer_ev;             /* fires for heap[0] */
	size_t scans_inflight;
	struct rchan *relay;                /* NULL while there is none */
	struct rdomain **dom_buckets;
	size_t dom_mask, ndoms;
	struct rdomain *ready_head, *ready_tail;  /* domains that may send */
	uint64_t next_job_id;
	size_t relay_inflight;              /* jobs holding a slot */
	uint64_t relay_bytes;               /* their octets, reserved */
	bool pumping;

	/* Loop only. */
	size_t commits_inflight;
	size_t tasks_inflight;
	bool stopping;
	bool threads_started;
	int exit_code;
};

/* ---- queue.c (loop, except queue_notify) ---- */

/* Wake the loop to take the done lists; any thread, with q->mu held. */
void queue_notify(struct queue *q);
/* Shutting down and nothing left in flight: end the loop. */
void queue_maybe_exit(struct queue *q);

/* ---- queue_sched.c (loop) ---- */

/* m's queue id as text. */
void queue_sched_idstr(const struct qmsg *m, char id[QUEUE_ID_LEN + 1]);
/* Nothing holds m any more: free it if gone, else into the due heap at
 * due (0: keep its due time). */
void queue_sched_settle(struct queue *q, struct qmsg *m, int64_t due);
/* A record for queue id (16 hex digits), in q->msgs. */
struct qmsg *queue_sched_msg_new(struct queue *q, const char *id);
/* Start a task of kind for m (behind the one it has); j: the relay job
 * of a LOAD or RESULT; fresh: ahead of retries. */
void queue_sched_start(struct queue *q, struct qmsg *m, enum task_kind kind,
    struct rjob *j, bool fresh);
/* Queue t (filled in) for its message: now, or behind its running task. */
void queue_sched_enqueue(struct queue *q, struct task *t);
/* Into the due heap at due (unix seconds), or moved there. */
void queue_sched_put(struct queue *q, struct qmsg *m, int64_t due);
/* Scan every idle message that is due, up to SCAN_MAX at once. */
void queue_sched_pop_due(struct queue *q);
/* A task is back from the workers (or skipped): apply it, free it. */
void queue_sched_task_done(struct queue *q, struct task *t);
/* The due timer: create it (queue_run), stop it (shutdown). */
void queue_sched_init(struct queue *q);
void queue_sched_stop(struct queue *q);
/* At the end: every record, the tasks waiting behind them, the heap. */
void queue_sched_free(struct queue *q);

/* ---- queue_submit.c (loop, except queue_submit_commit_main) ---- */

/* Serve the submission channel fd (taken over) as q->chan. */
void queue_submit_open(struct queue *q, int fd);
/* Close q->chan, if any: open transactions are aborted, committing ones
 * rolled back when their commit ends. */
void queue_submit_close(struct queue *q, const char *why);
/* Replies to the smtp process still wait in the channel's buffer. */
bool queue_submit_unsent(const struct queue *q);
/* queue_free: the channel without its callbacks. */
void queue_submit_free(struct queue *q);
/* The body of each commit thread. */
void *queue_submit_commit_main(void *arg);
/* Answer the transactions of list (linked by their qnext) the commit
 * threads handed back; final: the loop has ended, so roll them back. */
void queue_submit_done(struct queue *q, struct txn *list, bool final);

/* ---- queue_task.c (worker threads, except queue_task_free*) ---- */

/* The body of each worker thread: run tasks until stop_threads. */
void *queue_task_main(void *arg);
/* Load t->id, or NULL with t->result set. */
struct spool_msg *queue_task_load(struct queue *q, struct task *t);
/* Journal what m holds (or remove the file when nothing is left to do),
 * set t's outcome for the loop; closes *mp. */
void queue_task_finish(const struct queue *q, struct task *t,
    struct spool_msg **mp, int64_t now);
/* Recipient i of m failed temporarily: journal its next attempt, or its
 * expiry; logs; returns 'T' or 'F'. */
char queue_task_defer(const struct queue *q, struct spool_msg *m, size_t i,
    int64_t now, const char *reply, bool lost, const char *via, char how,
    const char *mta);
/* Seconds before the next attempt after `attempts` failed ones. */
int64_t queue_task_backoff(const struct queue *q, unsigned attempts,
    bool jitter);
void queue_task_groups_free(struct rgroup *g);
/* Loop: free t and what it owns, except its relay job. */
void queue_task_free(struct task *t);
/* Loop: free a list of tasks no worker has, with their relay jobs. */
void queue_task_free_list(struct task *t);

/* ---- queue_local.c (workers; the sweep in its own thread) ---- */

struct config_domain;

/*
 * The mailboxes one scan of a message has its copy in (delivered, or
 * found from an earlier attempt), with the copy's file: a second
 * recipient reaching one of them (an alias and the mailbox itself) is
 * delivered by that copy, never by a second look in the Maildir, where a
 * mail reader may have moved or renamed the first one meanwhile. The
 * scan owns it; queue_local_done_clear() frees what it holds.
 */
struct local_done {
	struct local_done_box {
		char *mailbox;          /* mailbox@domain, as the name's digest */
		char *file;             /* "new/<name>" or "cur/<name>" */
	} *v;
	size_t n, cap;
};

/* Deliver recipient i of m (local part local/llen, domain d) to every
 * mailbox it expands to that done does not hold yet, adding those;
 * returns 'D', 'F' or 'T'. */
char queue_local_deliver(struct queue *q, struct spool_msg *m, size_t i,
    const struct config_domain *d, const char *local, size_t llen,
    int64_t now, unsigned mflags, struct local_done *done);
void queue_local_done_clear(struct local_done *done);
/* Loop: start / stop (and join) the thread that cleans Maildir tmp/. */
void queue_local_sweep_start(struct queue *q);
void queue_local_sweep_end(struct queue *q);

/* ---- queue_relay.c (loop, except the task bodies) ---- */

/* Serve the relay channel fd (taken over) and send what may go. */
void queue_relay_open(struct queue *q, int fd);
/* Close the relay channel, if any: every job sent on it and unanswered
 * is deferred (retried after retry_min). */
void queue_relay_close(struct queue *q, const char *why);
/* Jobs the relay process has and has not answered yet. */
size_t queue_relay_unanswered(const struct queue *q);
/* Queue the jobs a scan of m found (groups: taken over). */
void queue_relay_jobs_add(struct queue *q, struct qmsg *m,
    struct rgroup *groups);
/* Dispatch waiting jobs while the limits allow. */
void queue_relay_pump(struct queue *q);
/* A LOAD task is back: send its job, put it back, or drop it. */
void queue_relay_load_done(struct queue *q, struct task *t);
/* A RESULT task is back: its job is done. */
void queue_relay_result_done(struct queue *q, struct task *t);
void queue_relay_job_free(struct rjob *j);
/* At the end: free the channel, every domain and job. */
void queue_relay_free_all(struct queue *q);
/* Worker threads: the LOAD and RESULT task bodies. */
void queue_relay_load(struct queue *q, struct task *t);
void queue_relay_result(struct queue *q, struct task *t);

/* ---- queue_report.c (worker threads, except queue_report_done) ---- */

struct spool_rcpt_status;

/* The REPORT task: spool the one report m owes, journal R/W. */
void queue_report_task(struct queue *q, struct task *t);
/* Does any recipient of m owe its sender a report now? */
bool queue_report_owed(const struct queue *q, const struct spool_msg *m,
    int64_t now);
/* When recipient i (state st) is owed its one delay report
 * (delay_warning_time after arrival), or 0: never / already warned. */
int64_t queue_report_warn_at(const struct queue *q,
    const struct envelope *env, size_t i, const struct spool_rcpt_status *st);
void queue_report_notes_free(struct task *t);
/* Loop: a REPORT task is back; returns m's next due time (due: the one
 * the task's result gave) and schedules the report it spooled. */
int64_t queue_report_done(struct queue *q, struct task *t, int64_t due,
    int64_t now);

/* ---- queue_admin.c (loop, except queue_admin_task) ---- */

/* What the control server (queue_control.c) may ask; arg: the queue. */
extern const struct queue_control_ops queue_admin_ops;
/* The CTL task body (worker threads). */
void queue_admin_task(struct queue *q, struct task *t);
/* A CTL task is back: undo what failed; returns m's next due time. */
int64_t queue_admin_task_back(struct task *t, int64_t due);
/* Answer the client of CTL task t; m: its record, NULL if gone. */
void queue_admin_answer(struct task *t, const struct qmsg *m, int64_t now);

#endif
