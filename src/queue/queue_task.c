/*
 * queue_task.c - the worker threads: the task loop (queue_task_main),
 * loading a message and journaling what a task did with it
 * (queue_task_load, queue_task_finish), the retry schedule, and the SCAN
 * task: one pass over a message that delivers its local recipients
 * (queue_local.c) and groups the due remote ones into relay jobs for the
 * loop to queue (queue_relay.c).
 *
 * Threads: everything here runs in a worker thread, on the task's own
 * copy of the message (struct spool_msg); the loop's struct qmsg is never
 * touched. Tasks for one message run one at a time (queue_int.h), so each
 * journal has one writer. queue_task_free runs on the loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/header.h"
#include "queue/maildir.h"
#include "queue/queue_int.h"
#include "queue/spool.h"
#include "proto/relay_job.h"

/*
 * Seconds to wait after `attempts` failed attempts in a row: retry_min
 * doubled per attempt after the first, capped at retry_max. With jitter,
 * minus up to a tenth, so the recipients of one burst do not all come
 * back at once. Any thread (arc4random is thread-safe).
 */
int64_t
queue_task_backoff(const struct queue *q, unsigned attempts, bool jitter)
{
	int64_t d = q->retry_min;

	for (unsigned i = 1; i < attempts && d < q->retry_max; i++)
		d *= 2;
	if (d > q->retry_max)
		d = q->retry_max;
	if (jitter && d >= 10)
		d -= (int64_t)arc4random_uniform((uint32_t)(d / 10) + 1);
	return d;
}

/*
 * Recipient i of m failed temporarily with reply: journal a T record for
 * the next attempt, or, once the message is older than
 * max_queue_lifetime, an F record (delivery time expired, RFC 3463 3.5
 * X.4.7). lost: the relay went away, retry after retry_min. via: log
 * fields of the server tried, or NULL. how/mta: who gave reply
 * (spool_msg_attempt); an expiry is tern's own diagnosis, so it names
 * no server (RFC 3464 2.3.5: Remote-MTA goes with that server's
 * Diagnostic-Code) and keeps the last reply as text. Logs the outcome;
 * returns 'T' or 'F'.
 */
char
queue_task_defer(const struct queue *q, struct spool_msg *m, size_t i,
    int64_t now, const char *reply, bool lost, const char *via, char how,
    const char *mta)
{
	const struct envelope *env = spool_msg_envelope(m);
	const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
	const char *addr = env->rcpts[i].addr;
	char aq[600], rq[700];
	unsigned attempts = st->attempts + 1;

	log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
	log_quote(rq, sizeof(rq), reply, strlen(reply), 600);
	if (now >= env->arrival + q->lifetime) {
		char final[SPOOL_MAX_REPLY + 80];

		snprintf(final, sizeof(final),
		    "451 4.4.7 Delivery time expired, last reply: %s", reply);
		spool_msg_attempt(m, i, now, '-', NULL);
		spool_msg_failed(m, i, final);
		log_warn("queue id=%s event=expired rcpt=<%s> attempts=%u age=%" PRId64 "s%s%s reply=\"%s\"",
		    spool_msg_id(m), aq, attempts, now - env->arrival,
		    via != NULL ? " " : "", via != NULL ? via : "", rq);
		return 'F';
	}
	{
		int64_t wait = lost ? q->retry_min :
		    queue_task_backoff(q, attempts, true);

		spool_msg_attempt(m, i, now, how, mta);
		spool_msg_deferred(m, i, now + wait, reply);
		log_warn("queue id=%s event=deferred rcpt=<%s> attempts=%u retry_in=%" PRId64 "s%s%s reply=\"%s\"",
		    spool_msg_id(m), aq, attempts, wait,
		    via != NULL ? " " : "", via != NULL ? via : "", rq);
	}
	return 'T';
}

/* Load t->id; on failure set t->result (quarantining a corrupt file). */
struct spool_msg *
queue_task_load(struct queue *q, struct task *t)
{
	char err[300];
	struct spool_msg *m = spool_msg_load(q->spool, t->id, err, sizeof(err));

	if (m != NULL)
		return m;
	if (errno == ENOENT) {
		t->result = TR_GONE;
	} else if (errno == EBADMSG) {
		log_err("queue id=%s event=corrupt reason=\"%s\" action=quarantine",
		    t->id, err);
		if (spool_quarantine(q->spool, t->id) == -1)
			log_err("queue id=%s event=quarantine-failed error=\"%s\"",
			    t->id, strerror(errno));
		t->result = TR_GONE;
	} else {
		log_err("queue id=%s event=load-failed error=\"%s\"", t->id, err);
		t->result = TR_RETRY;
	}
	return NULL;
}

/*
 * Journal what is buffered in m, or remove the file when every recipient
 * is final and no report is owed any more (no record needed: see
 * docs/spool-format.md). Sets t->result, t->owes (a REPORT task is due
 * once nothing else holds the message) and, when the file stays,
 * t->next_due: the earliest time anything is left to do (a pending
 * recipient: now). Closes m.
 */
void
queue_task_finish(const struct queue *q, struct task *t, struct spool_msg **mp,
    int64_t now)
{
	struct spool_msg *m = *mp;
	const struct envelope *env = spool_msg_envelope(m);

	t->owes = queue_report_owed(q, m, now);
	if (spool_msg_done(m) && !t->owes) {
		/* The unlink is not fsync'ed: if a crash brings the file
		 * back, its recipients get the message again (at least once). */
		if (spool_msg_remove(m) == 0) {
			log_info("queue id=%s event=removed", t->id);
			t->result = TR_REMOVED;
		} else {
			log_err("queue id=%s event=remove-failed error=\"%s\"",
			    t->id, strerror(errno));
			t->result = TR_RETRY;
		}
		spool_msg_close(mp);
		return;
	}
	if (spool_msg_flush(m) == -1) {
		log_err("queue id=%s event=journal-failed error=\"%s\"", t->id,
		    strerror(errno));
		/* The outcome is not durable: retry (at worst a duplicate). */
		t->result = TR_RETRY;
		spool_msg_close(mp);
		return;
	}
	t->next_due = 0;
	t->npending = 0;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		int64_t due;

		if (st->state == SPOOL_RCPT_DEFERRED) {
			int64_t w = queue_report_warn_at(q, env, i, st);

			due = st->next_attempt;
			/* the delay report is due before the next attempt */
			if (w != 0 && w < due)
				due = w;
		} else if (st->state == SPOOL_RCPT_PENDING)
			due = now;
		else
			continue;
		t->npending++;
		if (t->next_due == 0 || due < t->next_due)
			t->next_due = due;
	}
	/* For the loop's record (tern queue list). */
	t->nrcpt = (unsigned)env->nrcpts;
	if (t->sender == NULL)
		t->sender = xstrdup(env->sender);
	t->result = TR_KEEP;
	spool_msg_close(mp);
}

/* Octets recipient r takes in an envelope's text, with room to spare. */
static size_t
rcpt_record_bytes(const struct envelope_rcpt *r)
{
	return strlen(r->addr) + (r->orcpt != NULL ? strlen(r->orcpt) : 1) + 48;
}

/* Add recipient i (domain dom, not NUL-terminated) to a job of t. */
static void
scan_add_remote(struct task *t, const struct envelope *env, size_t i,
    const char *dom)
{
	struct rgroup *g, *last = NULL;
	size_t rb = rcpt_record_bytes(&env->rcpts[i]);

	/* The last group of that domain, if it has room; else a new one. */
	for (g = t->groups; g != NULL; g = g->next)
		if (strcasecmp(g->domain, dom) == 0)
			last = g;
	g = last;
	if (g == NULL || g->n >= RELAY_JOB_MAX_RCPTS ||
	    g->bytes + rb > RELAY_RCPT_BYTES) {
		g = xcalloc(1, sizeof(*g));
		g->domain = xstrdup(dom);
		util_ascii_lower(g->domain);
		/* Keep the groups in first-seen order. */
		if (t->groups == NULL) {
			t->groups = g;
		} else {
			struct rgroup *e = t->groups;
			while (e->next != NULL)
				e = e->next;
			e->next = g;
		}
	}
	if (g->n == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 4;
		g->idx = xreallocarray(g->idx, g->cap, sizeof(*g->idx));
	}
	g->idx[g->n++] = (uint32_t)i;
	g->bytes += rb;
}

void
queue_task_groups_free(struct rgroup *g)
{
	while (g != NULL) {
		struct rgroup *next = g->next;
		free(g->domain);
		free(g->idx);
		free(g);
		g = next;
	}
}

/*
 * RFC 5321 6.3: a message that carries more Received: fields than
 * max_received_headers is in a mail loop. The smtp process refuses it at
 * the end of DATA; one accepted anyway (before an upgrade, or by a path
 * that does not count) fails here for every recipient not final yet,
 * before anything is delivered or relayed, and its sender gets a report
 * (RFC 3463 X.4.6 routing loop).
 */
static void
fail_mail_loop(const struct queue *q, struct spool_msg *m, int64_t now)
{
	const struct envelope *env = spool_msg_envelope(m);
	unsigned limit = q->cfg->max_received_headers != 0 ?
	    q->cfg->max_received_headers : 100;
	size_t body_len;
	const char *body = spool_msg_body(m, &body_len);
	char reply[128];

	/* The spooled text starts with tern's own Received: field (RFC 5321
	 * 4.4), which the session's count at DATA did not include: the
	 * message carried more than limit when it came only past limit + 1. */
	if (header_count(body, body_len, "Received", limit + 2) <= limit + 1)
		return;
	snprintf(reply, sizeof(reply), "554 5.4.6 Too many \"Received:\" "
	    "header fields (more than %u): mail loop", limit);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		const char *addr = env->rcpts[i].addr;
		char aq[600];

		if (st->state == SPOOL_RCPT_DELIVERED ||
		    st->state == SPOOL_RCPT_FAILED)
			continue;
		log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
		spool_msg_attempt(m, i, now, '-', NULL);
		spool_msg_failed(m, i, reply);
		log_warn("queue id=%s event=failed rcpt=<%s> reason=\"mail loop\" received_over=%u",
		    spool_msg_id(m), aq, limit);
	}
}

/*
 * SCAN: one pass over message t->id: deliver every local recipient that
 * is pending or due, and group the due remote ones into relay jobs
 * (t->groups) for the loop to queue.
 */
static void
task_scan(struct queue *q, struct task *t)
{
	struct spool_msg *m;
	const struct envelope *env;
	int64_t now = (int64_t)time(NULL);
	size_t body_len;
	/* Only the first scan of a message committed by this process
	 * cannot have delivered it before (docs/queue.md). */
	unsigned mflags = t->fresh ? 0 : MAILDIR_RECHECK;
	/* one copy per mailbox and message: recipients that reach the same
	 * mailbox share the copy the first of them made or found */
	struct local_done done = { 0 };

	m = queue_task_load(q, t);
	if (m == NULL)
		return;
	env = spool_msg_envelope(m);
	(void)spool_msg_body(m, &body_len);
	t->size = body_len;
	/* Held (tern queue hold): nothing is tried until the release. */
	t->held = spool_msg_held(m, NULL);
	if (!t->held)
		fail_mail_loop(q, m, now);
	for (size_t i = 0; i < env->nrcpts && !t->held; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		const char *addr = env->rcpts[i].addr;
		const char *at = strrchr(addr, '@');
		const struct config_domain *d;
		char aq[600];

		if (st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED)
			continue;
		/* not due; a delay report it may be owed is the REPORT
		 * task's business */
		if (st->state == SPOOL_RCPT_DEFERRED && st->next_attempt > now &&
		    !t->force)
			continue;
		if (at == NULL || at == addr || at[1] == '\0') {
			log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
			spool_msg_attempt(m, i, now, '-', NULL);
			spool_msg_failed(m, i, "550 5.1.3 Bad recipient address syntax");
			log_warn("queue id=%s event=failed rcpt=<%s> reason=\"bad address\"",
			    t->id, aq);
			continue;
		}
		d = config_find_domain(q->cfg, at + 1, strlen(at + 1));
		if (d == NULL) {
			scan_add_remote(t, env, i, at + 1);
			continue;
		}
		(void)queue_local_deliver(q, m, i, d, addr, (size_t)(at - addr), now,
		    mflags, &done);
	}
	queue_local_done_clear(&done);
	/* The outcomes are journaled before anything is reported: a report
	 * waits for the REPORT task (docs/dsn.md). */
	queue_task_finish(q, t, &m, now);
	if (t->result != TR_KEEP) {
		/* Removed (nothing remote was due) or not journaled: no jobs. */
		queue_task_groups_free(t->groups);
		t->groups = NULL;
		return;
	}
	/* Recipients now in jobs are not due again until their result. */
	if (t->groups != NULL || t->held)
		t->next_due = 0;
}

void *
queue_task_main(void *arg)
{
	struct queue *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct task *t;
		bool wake;

		while (q->new_head == NULL && q->old_head == NULL &&
		    !q->stop_threads)
			pthread_cond_wait(&q->deliver_cv, &q->mu);
		if (q->stop_threads)
			break;
		if (q->new_head != NULL) {
			t = q->new_head;
			q->new_head = t->next;
			if (q->new_head == NULL)
				q->new_tail = NULL;
		} else {
			t = q->old_head;
			q->old_head = t->next;
			if (q->old_head == NULL)
				q->old_tail = NULL;
		}
		t->next = NULL;
		pthread_mutex_unlock(&q->mu);

		switch (t->kind) {
		case TASK_SCAN:
			task_scan(q, t);
			break;
		case TASK_LOAD:
			queue_relay_load(q, t);
			break;
		case TASK_RESULT:
			queue_relay_result(q, t);
			break;
		case TASK_CTL:
			queue_admin_task(q, t);
			break;
		case TASK_REPORT:
			queue_report_task(q, t);
			break;
		}

		pthread_mutex_lock(&q->mu);
		wake = q->done_txn_head == NULL && q->done_job_head == NULL;
		if (q->done_job_tail != NULL)
			q->done_job_tail->next = t;
		else
			q->done_job_head = t;
		q->done_job_tail = t;
		if (wake)
			queue_notify(q);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* Free t and what it owns, but not its relay job (the loop's). Loop. */
void
queue_task_free(struct task *t)
{
	queue_task_groups_free(t->groups);
	if (t->frames != NULL)
		evbuffer_free(t->frames);
	queue_report_notes_free(t);
	free(t->ctl_json);
	free(t->sender);
	free(t);
}

/* Free a list of tasks (linked by next) no worker has, with their jobs. */
void
queue_task_free_list(struct task *t)
{
	while (t != NULL) {
		struct task *n = t->next;

		/* A job being loaded or journaled belongs to its task. */
		if (t->job != NULL)
			queue_relay_job_free(t->job);
		queue_task_free(t);
		t = n;
	}
}
