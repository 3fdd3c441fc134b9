/*
 * queue_submit.c - submissions from the smtp process: the submission
 * channel (proto/submit.h) and the commit pipeline (group commit).
 *
 * Threads: everything runs on the loop except queue_submit_commit_main,
 * the body of the QUEUE_COMMIT_THREADS commit threads. They take
 * transactions from q->commit_head and hand them back on q->done_txn_*
 * (both under q->mu); the loop answers them in queue_submit_done. A txn
 * in TXN_COMMITTING is referenced by the commit pipeline; the loop frees
 * it only when a commit thread has handed it back.
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
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>

#include "conf/config.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "proto/submit.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

#define COMMIT_BATCH_MAX 256
#define CHAN_OUT_HIGH (1024 * 1024)   /* stop reading while replies pile up */
#define CHAN_OUT_LOW (64 * 1024)
#define ERR_TOO_BIG (-1)               /* txn.err: not an errno */


static const char REPLY_NOSPACE[] = "452 4.3.1 Insufficient system storage";
static const char REPLY_WRITE[] = "451 4.3.0 Queue file write error";
static const char REPLY_TOO_BIG[] =
    "552 5.3.4 Message size exceeds fixed maximum message size";
static const char REPLY_BUSY[] =
    "451 4.3.2 Too many concurrent transactions, try again later";
static const char REPLY_STOPPING[] =
    "451 4.3.2 Queue shutting down, try again later";

enum txn_state { TXN_OPEN, TXN_FAILED, TXN_COMMITTING };

struct txn {
	uint64_t sid;              /* the smtp side's transaction number */
	struct chan *chan;         /* NULL once the channel is gone */
	struct txn *hnext;         /* chan bucket chain */
	struct txn *qnext;         /* commit queue / done list */
	struct spool_txn *st;      /* NULL once failed */
	enum txn_state state;
	int err;                   /* errno or ERR_TOO_BIG when failed */
	bool abandoned;            /* ABORT arrived during the commit */
	size_t nrcpt;
	char *from_q;              /* log-quoted sender */
	char *client_q;            /* log-quoted client address */
};

struct chan {
	struct queue *q;
	struct ipc *ipc;
	struct txn **buckets;
	size_t mask;               /* nbuckets - 1 */
	size_t ntxns;
	bool dead;
};

static const char *
reply_for(int err)
{
	if (err == ERR_TOO_BIG)
		return REPLY_TOO_BIG;
	if (err == ENOSPC || err == EDQUOT)
		return REPLY_NOSPACE;
	return REPLY_WRITE;
}

static char *
quote_dup(const char *s)
{
	char buf[1200];

	if (s == NULL)
		return xstrdup("");
	return xstrdup(log_quote(buf, sizeof(buf), s, strlen(s), 300));
}

/* ---- channel to the smtp process ---- */

static size_t
txn_hash(const struct chan *c, uint64_t sid)
{
	return (size_t)((sid * 0x9e3779b97f4a7c15ULL) >> 32) & c->mask;
}

static struct txn *
txn_find(struct chan *c, uint64_t sid)
{
	for (struct txn *t = c->buckets[txn_hash(c, sid)]; t; t = t->hnext)
		if (t->sid == sid)
			return t;
	return NULL;
}

static void
txn_unhash(struct chan *c, struct txn *t)
{
	struct txn **pp = &c->buckets[txn_hash(c, t->sid)];

	while (*pp != t)
		pp = &(*pp)->hnext;
	*pp = t->hnext;
	t->hnext = NULL;
	c->ntxns--;
}

static void
txn_free(struct txn *t)
{
	if (t->st != NULL)
		spool_txn_abort(&t->st);
	free(t->from_q);
	free(t->client_q);
	free(t);
}

static void
reply(struct chan *c, enum submit_type type, uint64_t sid, const char *text)
{
	if (c == NULL || c->dead)
		return;
	ipc_send(c->ipc, (uint16_t)type, sid, text, strlen(text));
}

static int
violation(struct ipc_frame *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The smtp process broke the protocol: say how; the channel closes. */
static int
violation(struct ipc_frame *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->why, f->whysize, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Detach c from the queue and free it: open transactions are aborted
 * (their files removed), committing ones are orphaned (rolled back when
 * their commit ends: no COMMIT_OK can reach the client).
 */
static void
chan_close(struct queue *q, struct chan *c, const char *why)
{
	size_t aborted = 0;

	if (q->chan == c)
		q->chan = NULL;
	c->dead = true;
	for (size_t i = 0; i <= c->mask; i++) {
		struct txn *t, *next;

		for (t = c->buckets[i]; t; t = next) {
			next = t->hnext;
			t->hnext = NULL;
			if (t->state == TXN_COMMITTING) {
				t->chan = NULL;
			} else {
				txn_free(t);
				aborted++;
			}
		}
		c->buckets[i] = NULL;
	}
	c->ntxns = 0;
	log_info("queue event=smtp-channel-closed reason=\"%s\" aborted=%zu",
	    why, aborted);
	ipc_free(&c->ipc);   /* later, if we are inside its callback */
	free(c->buckets);
	free(c);
	queue_maybe_exit(q);
}

static void
txn_fail(struct txn *t, int err)
{
	t->state = TXN_FAILED;
	t->err = err;
	spool_txn_abort(&t->st);
}

/* BEGIN: open a spool transaction for the envelope. */
static int
on_begin(void *arg, struct ipc_frame *f)
{
	struct chan *c = arg;
	struct queue *q = c->q;
	struct envelope env;
	struct spool_txn *st;
	struct txn *t;
	char perr[160];
	size_t max_rcpts = q->cfg->max_recipients != 0 ?
	    q->cfg->max_recipients : ENVELOPE_MAX_RCPTS;

	if (txn_find(c, f->id) != NULL)
		return violation(f, "duplicate transaction id %" PRIu64, f->id);
	envelope_init(&env);
	if (submit_begin_decode(f->data, f->len, max_rcpts, &env, perr,
	    sizeof(perr)) == -1)
		return violation(f, "bad envelope: %s", perr);
	if (q->stopping) {
		envelope_clear(&env);
		reply(c, SUBMIT_BEGIN_FAIL, f->id, REPLY_STOPPING);
		return 0;
	}
	if (c->ntxns >= q->max_txns) {
		envelope_clear(&env);
		log_warn("queue event=begin-refused reason=\"too many transactions\" open=%zu",
		    c->ntxns);
		reply(c, SUBMIT_BEGIN_FAIL, f->id, REPLY_BUSY);
		return 0;
	}
	st = spool_txn_begin(q->spool, &env);
	if (st == NULL) {
		int e = errno;
		log_err("queue event=begin-failed error=\"%s\"", strerror(e));
		reply(c, SUBMIT_BEGIN_FAIL, f->id, reply_for(e));
		envelope_clear(&env);
		return 0;
	}
	t = xcalloc(1, sizeof(*t));
	t->sid = f->id;
	t->chan = c;
	t->st = st;
	t->state = TXN_OPEN;
	t->nrcpt = env.nrcpts;
	t->from_q = quote_dup(env.sender);
	t->client_q = quote_dup(env.client_addr);
	envelope_clear(&env);
	t->hnext = c->buckets[txn_hash(c, t->sid)];
	c->buckets[txn_hash(c, t->sid)] = t;
	c->ntxns++;
	reply(c, SUBMIT_BEGIN_OK, t->sid, spool_txn_id(st));
	return 0;
}

/* DATA: append to the transaction's file. */
static int
on_data(void *arg, struct ipc_frame *f)
{
	struct chan *c = arg;
	struct queue *q = c->q;
	struct txn *t = txn_find(c, f->id);

	if (t == NULL || t->state == TXN_COMMITTING)
		return violation(f, "DATA for %s transaction %" PRIu64,
		    t == NULL ? "unknown" : "committing", f->id);
	if (t->state == TXN_FAILED)
		return 0;   /* the failure is reported at COMMIT */
	/* A compromised smtp process must not fill the disk: bound it here too. */
	if (f->len > q->max_size - spool_txn_size(t->st)) {
		log_warn("queue id=%s event=too-big size=%" PRIu64 " limit=%" PRIu64,
		    spool_txn_id(t->st), spool_txn_size(t->st) + f->len,
		    q->max_size);
		txn_fail(t, ERR_TOO_BIG);
		return 0;
	}
	if (spool_txn_write(t->st, f->data, f->len) == -1) {
		int e = errno;
		log_err("queue id=%s event=write-failed error=\"%s\"",
		    spool_txn_id(t->st), strerror(e));
		txn_fail(t, e);
	}
	return 0;
}

static void
commit_push(struct queue *q, struct txn *t)
{
	pthread_mutex_lock(&q->mu);
	t->qnext = NULL;
	if (q->commit_tail != NULL)
		q->commit_tail->qnext = t;
	else
		q->commit_head = t;
	q->commit_tail = t;
	pthread_cond_signal(&q->commit_cv);
	pthread_mutex_unlock(&q->mu);
}

/* COMMIT: to the commit thread (or the failure, now). */
static int
on_commit(void *arg, struct ipc_frame *f)
{
	struct chan *c = arg;
	struct queue *q = c->q;
	struct txn *t = txn_find(c, f->id);

	if (t == NULL || t->state == TXN_COMMITTING)
		return violation(f, "COMMIT for %s transaction %" PRIu64,
		    t == NULL ? "unknown" : "committing", f->id);
	if (t->state == TXN_FAILED) {
		reply(c, SUBMIT_COMMIT_FAIL, t->sid, reply_for(t->err));
		txn_unhash(c, t);
		txn_free(t);
		return 0;
	}
	t->state = TXN_COMMITTING;
	q->commits_inflight++;
	commit_push(q, t);
	return 0;
}

static int
on_abort(void *arg, struct ipc_frame *f)
{
	struct chan *c = arg;
	struct txn *t = txn_find(c, f->id);

	if (t == NULL)
		return 0;   /* e.g. after BEGIN_FAIL: nothing to do */
	if (t->state == TXN_COMMITTING) {
		t->abandoned = true;   /* rolled back when the commit ends */
		return 0;
	}
	log_info("queue id=%s event=aborted",
	    t->st != NULL ? spool_txn_id(t->st) : "-");
	txn_unhash(c, t);
	txn_free(t);
	return 0;
}

/* What the queue accepts from the smtp process (proto/submit.h). */
static const struct ipc_handler submit_requests[] = {
	{ SUBMIT_BEGIN, IPC_ID, on_begin },
	{ SUBMIT_DATA, IPC_ID, on_data },
	{ SUBMIT_COMMIT, IPC_ID | IPC_EMPTY, on_commit },
	{ SUBMIT_ABORT, IPC_ID | IPC_EMPTY, on_abort },
};

static void
chan_closed(void *arg, enum ipc_end end, const char *why)
{
	struct chan *c = arg;

	if (end == IPC_VIOLATION)
		log_err("queue event=protocol-violation peer=smtp reason=\"%s\"",
		    why);
	chan_close(c->q, c, end == IPC_VIOLATION ? "protocol violation" :
	    end == IPC_EOF ? "closed by smtp" : "channel error");
}

static void
chan_drained(void *arg)
{
	struct chan *c = arg;

	if (c->q->stopping)
		queue_maybe_exit(c->q);
}

static const struct ipc_ops chan_ops = {
	.handlers = submit_requests,
	.nhandlers = nitems(submit_requests),
	.closed = chan_closed,
	.drained = chan_drained,
	.out_pause = CHAN_OUT_HIGH,   /* stop reading while replies pile up */
	.out_low = CHAN_OUT_LOW,
};

void
queue_submit_open(struct queue *q, int fd)
{
	struct chan *c = xcalloc(1, sizeof(*c));
	size_t n = 16;

	while (n < q->max_txns)
		n <<= 1;
	c->q = q;
	c->mask = n - 1;
	c->buckets = xcalloc(n, sizeof(*c->buckets));
	c->ipc = ipc_new(q->base, fd, &chan_ops, c);
	q->chan = c;
	log_info("queue event=smtp-channel-open");
}


void
queue_submit_close(struct queue *q, const char *why)
{
	if (q->chan != NULL)
		chan_close(q, q->chan, why);
}

bool
queue_submit_unsent(const struct queue *q)
{
	return q->chan != NULL && !q->chan->dead &&
	    ipc_out_len(q->chan->ipc) > 0;
}

void
queue_submit_free(struct queue *q)
{
	struct chan *c = q->chan;

	if (c == NULL)
		return;
	q->chan = NULL;
	ipc_free(&c->ipc);
	free(c->buckets);
	free(c);
}

/* ---- the commit pipeline ---- */

void *
queue_submit_commit_main(void *arg)
{
	struct queue *q = arg;
	struct txn *batch[COMMIT_BATCH_MAX];
	struct spool_txn *st[COMMIT_BATCH_MAX];

	pthread_mutex_lock(&q->mu);
	for (;;) {
		size_t n = 0;
		bool wake;

		while (q->commit_head == NULL && !q->stop_threads)
			pthread_cond_wait(&q->commit_cv, &q->mu);
		if (q->commit_head == NULL)
			break;   /* stopping, and nothing left to commit */
		while (q->commit_head != NULL && n < COMMIT_BATCH_MAX) {
			struct txn *t = q->commit_head;
			q->commit_head = t->qnext;
			t->qnext = NULL;
			batch[n] = t;
			st[n] = t->st;
			n++;
		}
		if (q->commit_head == NULL)
			q->commit_tail = NULL;
		pthread_mutex_unlock(&q->mu);

		spool_commit_batch(q->spool, st, n);

		pthread_mutex_lock(&q->mu);
		q->ncommits += n;
		q->nbatches++;
		wake = q->done_txn_head == NULL && q->done_job_head == NULL;
		for (size_t i = 0; i < n; i++) {
			if (q->done_txn_tail != NULL)
				q->done_txn_tail->qnext = batch[i];
			else
				q->done_txn_head = batch[i];
			q->done_txn_tail = batch[i];
		}
		if (wake)
			queue_notify(q);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void
commit_done(struct queue *q, struct txn *t, bool final)
{
	int err = spool_txn_error(t->st);
	const char *id = spool_txn_id(t->st);
	struct chan *c = t->chan;

	q->commits_inflight--;
	if (err == 0 && (c == NULL || c->dead || t->abandoned || final)) {
		/* Never acknowledged, so not ours to deliver: take it back. */
		if (spool_unlink_committed(q->spool, id) == -1)
			log_err("queue id=%s event=rollback-failed error=\"%s\"", id,
			    strerror(errno));
		else
			log_info("queue id=%s event=rolled-back reason=\"%s\"", id,
			    t->abandoned ? "aborted by smtp" : "smtp channel gone");
	} else if (err == 0) {
		struct qmsg *m;

		reply(c, SUBMIT_COMMIT_OK, t->sid, id);
		log_info("queue id=%s event=committed size=%" PRIu64 " nrcpt=%zu from=<%s> client=%s",
		    id, spool_txn_size(t->st), t->nrcpt, t->from_q, t->client_q);
		m = queue_sched_msg_new(q, id);
		/* Delivered now, not at the next scan; ahead of retries. */
		if (!q->stopping)
			queue_sched_start(q, m, TASK_SCAN, NULL, true);
	} else {
		log_err("queue id=%s event=commit-failed error=\"%s\"", id,
		    strerror(err));
		if (c != NULL && !t->abandoned)
			reply(c, SUBMIT_COMMIT_FAIL, t->sid, reply_for(err));
	}
	if (c != NULL)
		txn_unhash(c, t);
	spool_txn_free(&t->st);
	txn_free(t);
}

void
queue_submit_done(struct queue *q, struct txn *list, bool final)
{
	while (list != NULL) {
		struct txn *next = list->qnext;

		commit_done(q, list, final);
		list = next;
	}
}
