/*
 * queue_sched.c - the scheduler: one small record per queued message
 * (struct qmsg), the due heap and its timer, and the task queue to the
 * worker threads with its rule of one task per message at a time.
 *
 * Idle messages sit in a binary min-heap by due time with one timer for
 * its top; when it fires, due messages are handed to the workers for a
 * SCAN, at most SCAN_MAX at once. A scan delivers local recipients and
 * turns due remote ones into relay jobs (queue_relay.c); when no task and
 * no job hold a message any more it goes back into the heap at its next
 * due time (docs/queue.md, "The due heap and the timer").
 *
 * Memory per queued message is one small struct qmsg plus a heap slot:
 * the envelope and the message stay on disk and are loaded by the worker
 * that needs them.
 *
 * Threads: everything here runs on the loop. task_submit hands a task to
 * the workers under q->mu; queue_sched_task_done takes it back when the
 * loop drains the done list (queue.c).
 */
#include <inttypes.h>
#include <pthread.h>
#include <time.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/queue_int.h"

#define SCAN_MAX 64                    /* scans queued for workers at once */

void
queue_sched_idstr(const struct qmsg *m, char id[QUEUE_ID_LEN + 1])
{
	snprintf(id, QUEUE_ID_LEN + 1, "%016" PRIx64, m->idn);
}

struct qmsg *
queue_sched_msg_new(struct queue *q, const char *id)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	m->idn = strtoull(id, NULL, 16);
	m->heap_idx = HEAP_NONE;
	m->next = q->msgs;
	if (q->msgs != NULL)
		q->msgs->prev = m;
	q->msgs = m;
	q->nmsgs++;
	return m;
}

static void
heap_swap(struct queue *q, size_t a, size_t b)
{
	struct qmsg *t = q->heap[a];

	q->heap[a] = q->heap[b];
	q->heap[b] = t;
	q->heap[a]->heap_idx = (uint32_t)a;
	q->heap[b]->heap_idx = (uint32_t)b;
}

static void
heap_fix(struct queue *q, size_t i)
{
	while (i > 0 && q->heap[(i - 1) / 2]->due > q->heap[i]->due) {
		heap_swap(q, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, s = i;

		if (l < q->nheap && q->heap[l]->due < q->heap[s]->due)
			s = l;
		if (r < q->nheap && q->heap[r]->due < q->heap[s]->due)
			s = r;
		if (s == i)
			break;
		heap_swap(q, i, s);
		i = s;
	}
}

static void
heap_del(struct queue *q, struct qmsg *m)
{
	size_t i = m->heap_idx;

	if (i == HEAP_NONE)
		return;
	m->heap_idx = HEAP_NONE;
	q->nheap--;
	if (i != q->nheap) {
		q->heap[i] = q->heap[q->nheap];
		q->heap[i]->heap_idx = (uint32_t)i;
		heap_fix(q, i);
	}
}

void
queue_sched_put(struct queue *q, struct qmsg *m, int64_t due)
{
	m->due = due;
	if (m->heap_idx != HEAP_NONE) {
		heap_fix(q, m->heap_idx);
		return;
	}
	if (q->nheap == q->heapcap) {
		q->heapcap = q->heapcap ? q->heapcap * 2 : 1024;
		q->heap = xreallocarray(q->heap, q->heapcap, sizeof(*q->heap));
	}
	m->heap_idx = (uint32_t)q->nheap;
	q->heap[q->nheap++] = m;
	heap_fix(q, m->heap_idx);
}

static void
timer_arm(struct queue *q)
{
	int64_t now = (int64_t)time(NULL);
	struct timeval tv = { 0, 0 };

	if (q->nheap == 0 || q->stopping) {
		evtimer_del(q->timer_ev);
		return;
	}
	if (q->heap[0]->due <= now && q->scans_inflight >= SCAN_MAX) {
		evtimer_del(q->timer_ev);   /* a finishing scan calls back */
		return;
	}
	if (q->heap[0]->due > now)
		tv.tv_sec = q->heap[0]->due - now;
	evtimer_add(q->timer_ev, &tv);
}

static void
msg_free(struct queue *q, struct qmsg *m)
{
	ASSERT(!m->busy && m->waiting == NULL && m->njobs == 0);
	heap_del(q, m);
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		q->msgs = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	q->nmsgs--;
	free(m->sender);
	free(m);
}

/*
 * Nothing holds m any more: free it if it is gone, or put it in the heap
 * for its next scan (due: unix seconds; 0: keep its current due time).
 * Does nothing while a task or a relay job holds it.
 */
void
queue_sched_settle(struct queue *q, struct qmsg *m, int64_t due)
{
	if (m->busy || m->waiting != NULL || m->njobs > 0)
		return;
	if (m->gone) {
		msg_free(q, m);
		return;
	}
	if (m->held)
		return;   /* tern queue release puts it back */
	if (m->force)
		due = (int64_t)time(NULL);
	if (due != 0) {
		queue_sched_put(q, m, due);
		timer_arm(q);
	}
}

/*
 * Hand t to the workers now: its message has no task in a worker. While
 * stopping, only RESULT tasks still run (outcomes need the disk); the
 * others are skipped, their messages stay in the spool.
 */
static void
task_submit(struct queue *q, struct task *t)
{
	struct qmsg *m = t->m;

	m->busy = true;
	if (q->stopping && t->kind != TASK_RESULT) {
		/* Only outcomes still need the disk; the rest can wait. */
		t->result = TR_SKIPPED;
		queue_sched_task_done(q, t);
		return;
	}
	pthread_mutex_lock(&q->mu);
	if (t->fresh) {
		if (q->new_tail != NULL)
			q->new_tail->next = t;
		else
			q->new_head = t;
		q->new_tail = t;
	} else {
		if (q->old_tail != NULL)
			q->old_tail->next = t;
		else
			q->old_head = t;
		q->old_tail = t;
	}
	pthread_cond_signal(&q->deliver_cv);
	pthread_mutex_unlock(&q->mu);
}

/* Queue t (filled in) for its message: now, or behind m's running task. */
void
queue_sched_enqueue(struct queue *q, struct task *t)
{
	struct qmsg *m = t->m;

	queue_sched_idstr(m, t->id);
	q->tasks_inflight++;
	if (t->kind == TASK_SCAN) {
		q->scans_inflight++;
		t->force = m->force;
		m->force = false;
	}
	heap_del(q, m);
	if (m->busy) {
		struct task **pp = &m->waiting;

		while (*pp != NULL)
			pp = &(*pp)->next;
		*pp = t;
		return;
	}
	task_submit(q, t);
}

void
queue_sched_start(struct queue *q, struct qmsg *m, enum task_kind kind,
    struct rjob *j, bool fresh)
{
	struct task *t = xcalloc(1, sizeof(*t));

	t->m = m;
	t->kind = kind;
	t->job = j;
	t->fresh = fresh;
	queue_sched_enqueue(q, t);
}

/* Scan every idle message that is due, up to SCAN_MAX at once. */
void
queue_sched_pop_due(struct queue *q)
{
	int64_t now = (int64_t)time(NULL);

	while (!q->stopping && q->nheap > 0 && q->heap[0]->due <= now &&
	    q->scans_inflight < SCAN_MAX) {
		struct qmsg *m = q->heap[0];

		heap_del(q, m);
		queue_sched_start(q, m, TASK_SCAN, NULL, false);
	}
	timer_arm(q);
}

static void
timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	queue_sched_pop_due(arg);
}

void
queue_sched_init(struct queue *q)
{
	q->timer_ev = evtimer_new(q->base, timer_cb, q);
	if (q->timer_ev == NULL)
		fatal("queue: evtimer_new failed");
}

void
queue_sched_stop(struct queue *q)
{
	evtimer_del(q->timer_ev);
}

void
queue_sched_free(struct queue *q)
{
	while (q->msgs != NULL) {
		struct qmsg *m = q->msgs;

		queue_task_free_list(m->waiting);
		m->waiting = NULL;
		m->busy = false;
		m->njobs = 0;
		msg_free(q, m);
	}
	free(q->heap);
	q->heap = NULL;
	if (q->timer_ev != NULL)
		event_free(q->timer_ev);
	q->timer_ev = NULL;
}

/*
 * Apply what task t found to its message's record (counts, sender, size,
 * held, the relay jobs a scan found, the outcome of a LOAD or RESULT).
 * Returns the message's next due time (0: none from this task).
 */
static int64_t
task_outcome(struct queue *q, struct task *t, int64_t now)
{
	struct qmsg *m = t->m;
	int64_t due = 0;

	if (t->result == TR_GONE || t->result == TR_REMOVED)
		m->gone = true;
	else if (t->result == TR_RETRY)
		due = now + LOAD_RETRY_SECS;
	if (t->nrcpt != 0) {
		m->nrcpt = t->nrcpt;
		m->npending = t->npending;
	}
	if (t->sender != NULL && m->sender == NULL) {
		m->sender = t->sender;
		t->sender = NULL;
	}
	switch (t->kind) {
	case TASK_SCAN:
		if (t->result == TR_KEEP) {
			uint64_t kib = (t->size + 1023) / 1024;

			m->size_kib = kib > UINT32_MAX ? UINT32_MAX : (uint32_t)kib;
			if (t->held)
				m->held = true;   /* recovered from the journal */
			queue_relay_jobs_add(q, m, t->groups);
			t->groups = NULL;
			due = t->next_due;
		}
		break;
	case TASK_CTL:
		due = queue_admin_task_back(t, due);
		break;
	case TASK_LOAD:
		/* The job may be dropped; keep m alive until task_next. */
		m->busy = true;
		queue_relay_load_done(q, t);
		m->busy = false;
		break;
	case TASK_RESULT:
		if (t->result == TR_KEEP)
			due = t->next_due;
		queue_relay_result_done(q, t);
		break;
	case TASK_REPORT:
		due = queue_report_done(q, t, due, now);
		break;
	}
	if (t->kind != TASK_LOAD)
		m->dsn_owed = t->result == TR_KEEP && t->owes;
	return due;
}

/*
 * After t: the next task waiting for its message, or the report it owes,
 * or back into the heap at due (or freed, if it is gone).
 */
static void
task_next(struct queue *q, struct task *t, int64_t due, int64_t now)
{
	struct qmsg *m = t->m;

	if (m->waiting != NULL) {
		struct task *next = m->waiting;

		m->waiting = next->next;
		next->next = NULL;
		task_submit(q, next);
	} else if (m->dsn_owed && (t->kind == TASK_SCAN ||
	    t->kind == TASK_RESULT) && m->njobs == 0 && !m->held && !m->gone &&
	    !q->stopping) {
		/* Nothing else holds the message: its one report now,
		 * covering every recipient owed one (docs/dsn.md). */
		queue_sched_start(q, m, TASK_REPORT, NULL, false);
	} else {
		if (due != 0 && due < now)
			due = now;
		queue_sched_settle(q, m, due);   /* frees m if it is gone */
	}
}

/*
 * A task finished (or was skipped): apply its outcome, start the next
 * task waiting for the message, reschedule or free the message, answer
 * the administrator who asked for it; frees t.
 */
void
queue_sched_task_done(struct queue *q, struct task *t)
{
	struct qmsg *m = t->m;
	int64_t due, now = (int64_t)time(NULL);
	bool alive;

	q->tasks_inflight--;
	if (t->kind == TASK_SCAN)
		q->scans_inflight--;
	m->busy = false;
	due = task_outcome(q, t, now);
	alive = !m->gone;   /* task_next frees only a gone message */
	task_next(q, t, due, now);
	if (t->kind == TASK_CTL)
		queue_admin_answer(t, alive ? m : NULL, now);
	queue_task_free(t);
	if (!q->stopping) {
		queue_relay_pump(q);
		queue_sched_pop_due(q);
	}
}
