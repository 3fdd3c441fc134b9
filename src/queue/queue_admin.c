/*
 * queue_admin.c - what `tern queue` can do to the queue: list the
 * messages, flush, and show, hold, release or delete one. The control
 * socket server (queue_control.c) knows nothing of the queue: it calls
 * the operations of queue_admin_ops, which queue_new hands it with the
 * queue as their argument (docs/queue.md, "Queue control").
 *
 * Threads: list, flush and the start of show/hold/release/delete run on
 * the loop, from the control server's callbacks; the disk work of the
 * last four is a CTL task (queue_admin_task) in a worker thread, queued
 * behind whatever task the message has; the answer goes back to the
 * server on the loop when the task is back (queue_admin_task_back,
 * queue_admin_answer, called by queue_sched_task_done).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/queue_control.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

/* ---- the CTL task (worker threads) ---- */

/* CTL: tern queue show, hold, release or delete of message t->id. */
void
queue_admin_task(struct queue *q, struct task *t)
{
	struct spool_msg *m;
	int64_t now = (int64_t)time(NULL);

	if (t->ctl_op == QUEUE_CONTROL_OP_DELETE) {
		/* Jobs the relay holds are not recalled: their results find
		 * no file and are ignored (docs/queue.md). */
		if (spool_unlink_committed(q->spool, t->id) == 0) {
			log_info("queue id=%s event=deleted by=admin", t->id);
			t->result = TR_REMOVED;
			t->ctl_status = QUEUE_CONTROL_OK;
		} else if (errno == ENOENT) {
			t->result = TR_GONE;
			t->ctl_status = QUEUE_CONTROL_NOTFOUND;
		} else {
			log_err("queue id=%s event=delete-failed error=\"%s\"",
			    t->id, strerror(errno));
			t->result = TR_RETRY;
			t->ctl_status = QUEUE_CONTROL_FAILED;
		}
		return;
	}
	m = queue_task_load(q, t);
	if (m == NULL) {
		t->ctl_status = t->result == TR_GONE ? QUEUE_CONTROL_NOTFOUND :
		    QUEUE_CONTROL_FAILED;
		return;
	}
	if (t->ctl_op == QUEUE_CONTROL_OP_SHOW) {
		t->ctl_json = queue_control_show_json(m);
	} else {
		bool hold = t->ctl_op == QUEUE_CONTROL_OP_HOLD;

		spool_msg_set_held(m, hold, now);
		log_info("queue id=%s event=%s by=admin", t->id,
		    hold ? "held" : "released");
	}
	queue_task_finish(q, t, &m, now);   /* journals H/U; counts, next_due */
	t->ctl_status = t->result == TR_KEEP ? QUEUE_CONTROL_OK :
	    t->result == TR_REMOVED ? QUEUE_CONTROL_NOTFOUND :
	    QUEUE_CONTROL_FAILED;
}

/* ---- the loop ---- */

/* m as tern queue list shows it; e->sender is a copy. */
static void
msg_entry(const struct qmsg *m, int64_t now, struct queue_control_entry *e)
{
	bool in_heap = m->heap_idx != HEAP_NONE;

	queue_sched_idstr(m, e->id);
	e->size_kib = m->size_kib;
	e->nrcpt = m->nrcpt;
	e->npending = m->npending;
	e->sender = m->sender != NULL ? xstrdup(m->sender) : NULL;
	e->next = in_heap ? m->due : 0;
	if (m->held)
		e->state = QUEUE_CONTROL_STATE_HELD;
	else if (in_heap && m->due > now && !m->force)
		e->state = QUEUE_CONTROL_STATE_DEFERRED;
	else
		e->state = QUEUE_CONTROL_STATE_ACTIVE;
}

/*
 * A CTL task is back: a hold or release that could not be journaled is
 * undone (the state on disk still holds). Returns the message's next due
 * time (due: what the task's result gave).
 */
int64_t
queue_admin_task_back(struct task *t, int64_t due)
{
	struct qmsg *m = t->m;

	if (t->result == TR_SKIPPED)
		t->ctl_status = QUEUE_CONTROL_FAILED;   /* stopping */
	if (t->result == TR_KEEP)
		due = t->next_due;
	if (t->ctl_status == QUEUE_CONTROL_FAILED &&
	    t->ctl_op == QUEUE_CONTROL_OP_HOLD)
		m->held = false;
	if (t->ctl_status == QUEUE_CONTROL_FAILED &&
	    t->ctl_op == QUEUE_CONTROL_OP_RELEASE)
		m->held = true;
	return due;
}

/*
 * Answer the control client that asked for CTL task t, once the message
 * is settled; m: its record, NULL if it is gone.
 */
void
queue_admin_answer(struct task *t, const struct qmsg *m, int64_t now)
{
	struct queue_control_entry e, *ep = NULL;

	if (t->ctl_done == NULL)
		return;
	if (m != NULL && t->ctl_status == QUEUE_CONTROL_OK) {
		msg_entry(m, now, &e);
		ep = &e;
	}
	t->ctl_done(t->ctl_arg, t->ctl_status, t->ctl_json, ep);
	t->ctl_json = NULL;
	if (ep != NULL)
		free(e.sender);
}

/* The live record of id, or NULL. A linear walk: a control request is
 * rare, and an index would cost every message memory. */
static struct qmsg *
msg_find(struct queue *q, const char *id)
{
	uint64_t idn;

	if (!spool_valid_id(id))
		return NULL;
	idn = strtoull(id, NULL, 16);
	for (struct qmsg *m = q->msgs; m != NULL; m = m->next)
		if (m->idn == idn)
			return m->gone ? NULL : m;
	return NULL;
}

static int
entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct queue_control_entry *)a)->id,
	    ((const struct queue_control_entry *)b)->id);
}

/* queue_control_ops.list */
static size_t
admin_list(void *arg, struct queue_control_entry **out)
{
	struct queue *q = arg;
	int64_t now = (int64_t)time(NULL);
	size_t n = 0;

	*out = q->nmsgs > 0 ? xcalloc(q->nmsgs, sizeof(**out)) : NULL;
	for (struct qmsg *m = q->msgs; m != NULL && n < q->nmsgs; m = m->next)
		if (!m->gone)
			msg_entry(m, now, &(*out)[n++]);
	if (n > 1)
		qsort(*out, n, sizeof(**out), entry_cmp);
	return n;
}

/* queue_control_ops.start */
static int
admin_start(void *arg, const char *id, enum queue_control_op op,
    queue_control_done_fn *done, void *done_arg)
{
	struct queue *q = arg;
	struct qmsg *m = msg_find(q, id);
	struct task *t;

	if (m == NULL)
		return QUEUE_CONTROL_NOTFOUND;
	if (q->stopping)
		return QUEUE_CONTROL_FAILED;
	/* The loop's view changes now, so no scan starts meanwhile; the
	 * task makes it durable (and queue_admin_task_back undoes it on
	 * failure). */
	if (op == QUEUE_CONTROL_OP_HOLD) {
		m->held = true;
		m->force = false;
	} else if (op == QUEUE_CONTROL_OP_RELEASE) {
		m->held = false;
		m->force = true;   /* due now, deferred recipients too */
	}
	t = xcalloc(1, sizeof(*t));
	t->m = m;
	t->kind = TASK_CTL;
	t->fresh = true;   /* an administrator is waiting */
	t->ctl_op = op;
	t->ctl_done = done;
	t->ctl_arg = done_arg;
	queue_sched_enqueue(q, t);
	return QUEUE_CONTROL_OK;
}

/* queue_control_ops.flush */
static long
admin_flush(void *arg, const char *id)
{
	struct queue *q = arg;
	int64_t now = (int64_t)time(NULL);
	struct qmsg *one = NULL;
	long n = 0;

	if (id != NULL) {
		one = msg_find(q, id);
		if (one == NULL)
			return -QUEUE_CONTROL_NOTFOUND;
		if (one->held)
			return -QUEUE_CONTROL_HELD_ALREADY;
	}
	for (struct qmsg *m = one != NULL ? one : q->msgs; m != NULL;
	    m = one != NULL ? NULL : m->next) {
		if (m->gone || m->held)
			continue;
		/*
		 * Its next scan tries every deferred recipient. One that is
		 * idle is due now; one that is busy or has relay jobs out is
		 * being tried already, and is scanned again (forced) when
		 * they finish (queue_sched_settle).
		 */
		m->force = true;
		if (m->heap_idx != HEAP_NONE)
			queue_sched_put(q, m, now);
		n++;
	}
	if (n > 0 && !q->stopping)
		queue_sched_pop_due(q);
	return n;
}

const struct queue_control_ops queue_admin_ops = {
	.list = admin_list,
	.start = admin_start,
	.flush = admin_flush,
};
