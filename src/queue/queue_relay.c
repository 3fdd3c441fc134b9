/*
 * queue_relay.c - the relay feed. A scan groups a message's due remote
 * recipients into relay jobs (one message, one destination domain, at
 * most RELAY_JOB_MAX_RCPTS recipients); they wait in a FIFO per domain
 * and go to the relay process while the global and per-domain slots and
 * the octet budget allow, domains taking turns (docs/queue.md, "Relay
 * jobs: limits and fairness"). Each job's RESULT comes back on the same
 * channel and is journaled by a RESULT task. The wire format is
 * proto/relay_job.c.
 *
 * Threads: the loop runs everything here except the two task bodies,
 * queue_relay_load (LOAD: a job's frames, from the queue file) and
 * queue_relay_result (RESULT: journal its outcome), which run in the
 * worker threads. Jobs, domains and the channel belong to the loop; while
 * a LOAD or RESULT task has a job, the worker only reads the job's
 * recipients, its domain's name and its answer, and the loop leaves the
 * job alone until the task is back.
 *
 * Towards the relay process the relay protocol of proto/relay_job.h
 * holds, plus (docs/queue.md): the queue accepts only RESULT frames, each
 * for a job it sent and has no answer for yet, with a well-formed payload:
 * the via line, then exactly one line per job recipient in order, or the
 * via line alone (every recipient deferred: what a relay that reached no
 * server may say). Anything else closes the channel; every job in flight
 * on it is then deferred (retried after retry_min), never lost. The queue
 * sends no CANCEL today.
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/relay_job.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

#define RELAY_BYTES_MAX (64u << 20)    /* sent to the relay, unanswered */
#define RELAY_OUT_HIGH (4u << 20)      /* stop dispatching: relay not reading */
#define RELAY_OUT_LOW (1u << 20)

/*
 * A relay job: one message, one destination domain, up to
 * RELAY_JOB_MAX_RCPTS of its recipients. It waits in its domain's FIFO,
 * then holds a slot (global and per domain) from dispatch until its
 * RESULT arrives or the channel is lost.
 */
enum rjob_state { RJ_WAITING, RJ_LOADING, RJ_SENT, RJ_DONE };

struct rjob {
	struct rjob *next;         /* domain FIFO */
	struct rjob *hnext;        /* relay channel's table of sent jobs */
	struct qmsg *m;
	struct rdomain *dom;
	uint64_t id;               /* job number on the channel, never reused */
	uint32_t *idx;             /* recipient indexes in the message, job order */
	size_t n;
	uint64_t bytes;            /* held against RELAY_BYTES_MAX */
	enum rjob_state state;
	/* The answer, for the RESULT task. */
	bool lost;                 /* none: the channel went away */
	char *outcome;             /* n of 'D', 'F', 'T'; NULL: all T */
	char **reply;              /* n SMTP reply lines; NULL entries: default */
	bool *own;                 /* n: decided by the relay itself (reply
	                            * code 0), not the server's reply */
	char *via;                 /* log fields "relay=.. ip=.. tls=.." */
	char *via_mx;              /* the server's name (Remote-MTA), or NULL */
	bool peer_dsn;             /* it offers DSN: it reports from now on */
};

struct rdomain {
	struct rdomain *hnext;     /* q->dom_buckets chain */
	struct rdomain *rnext;     /* ready list */
	struct rjob *head, *tail;  /* jobs waiting for a slot, FIFO */
	unsigned inflight;         /* jobs holding a slot */
	unsigned refs;             /* jobs pointing here (any state): the
	                            * domain lives at least as long */
	bool ready;                /* on the ready list */
	char name[];               /* lower case */
};

/* The channel to the relay process. */
struct rchan {
	struct queue *q;
	struct ipc *ipc;
	struct rjob **buckets;     /* sent jobs by id */
	size_t mask;
	size_t nsent;
	bool dead;
};

/* ---- relay jobs and destinations (loop) ---- */

static size_t
dom_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (size_t)h;
}

static struct rdomain *
dom_get(struct queue *q, const char *name)
{
	struct rdomain *d;
	size_t len = strlen(name);

	if (q->dom_buckets != NULL)
		for (d = q->dom_buckets[dom_hash(name) & q->dom_mask]; d;
		    d = d->hnext)
			if (strcmp(d->name, name) == 0)
				return d;
	if (q->dom_buckets == NULL || q->ndoms > q->dom_mask) {
		size_t n = q->dom_buckets == NULL ? 64 : (q->dom_mask + 1) * 2;
		struct rdomain **nb = xcalloc(n, sizeof(*nb));

		for (size_t i = 0; q->dom_buckets != NULL && i <= q->dom_mask; i++)
			while ((d = q->dom_buckets[i]) != NULL) {
				q->dom_buckets[i] = d->hnext;
				d->hnext = nb[dom_hash(d->name) & (n - 1)];
				nb[dom_hash(d->name) & (n - 1)] = d;
			}
		free(q->dom_buckets);
		q->dom_buckets = nb;
		q->dom_mask = n - 1;
	}
	d = xcalloc(1, sizeof(*d) + len + 1);
	memcpy(d->name, name, len + 1);
	d->hnext = q->dom_buckets[dom_hash(name) & q->dom_mask];
	q->dom_buckets[dom_hash(name) & q->dom_mask] = d;
	q->ndoms++;
	return d;
}

static void
dom_free(struct queue *q, struct rdomain *d)
{
	struct rdomain **pp = &q->dom_buckets[dom_hash(d->name) & q->dom_mask];

	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	q->ndoms--;
	free(d);
}

/*
 * After d's jobs or slots changed: put it on the ready list when it has
 * a job waiting and a free slot, free it when it has neither.
 */
static void
dom_check(struct queue *q, struct rdomain *d)
{
	if (d->ready)
		return;
	if (d->head != NULL && d->inflight < q->max_relay_domain) {
		d->ready = true;
		d->rnext = NULL;
		if (q->ready_tail != NULL)
			q->ready_tail->rnext = d;
		else
			q->ready_head = d;
		q->ready_tail = d;
	} else if (d->head == NULL && d->inflight == 0 && d->refs == 0) {
		dom_free(q, d);
	}
}

static struct rdomain *
ready_pop(struct queue *q)
{
	struct rdomain *d = q->ready_head;

	if (d != NULL) {
		q->ready_head = d->rnext;
		if (q->ready_head == NULL)
			q->ready_tail = NULL;
		d->rnext = NULL;
		d->ready = false;
	}
	return d;
}

void
queue_relay_job_free(struct rjob *j)
{
	if (j->reply != NULL)
		for (size_t k = 0; k < j->n; k++)
			free(j->reply[k]);
	free(j->reply);
	free(j->outcome);
	free(j->own);
	free(j->via);
	free(j->via_mx);
	free(j->idx);
	free(j);
}

/* Give back the slot j holds (global, per domain, octets). */
static void
job_unslot(struct queue *q, struct rjob *j)
{
	if (j->state != RJ_LOADING && j->state != RJ_SENT)
		return;
	j->dom->inflight--;
	q->relay_inflight--;
	q->relay_bytes -= j->bytes;
	j->bytes = 0;
	j->state = RJ_DONE;
	/* No dom_check here: the caller re-queues or releases j first. */
}

/* Free a job that is in no list or table, and let its domain go. */
static void
job_release(struct queue *q, struct rjob *j)
{
	struct rdomain *d = j->dom;

	queue_relay_job_free(j);
	d->refs--;
	dom_check(q, d);
}

/*
 * Forget j (not in any FIFO or table any more). Its message goes back to
 * the heap for a scan at due (0: none) once nothing else holds it.
 */
static void
job_drop(struct queue *q, struct rjob *j, int64_t due)
{
	struct qmsg *m = j->m;

	job_unslot(q, j);
	job_release(q, j);
	m->njobs--;
	queue_sched_settle(q, m, due);
}

/* Queue the relay jobs a scan of m found, and send what may go now. */
void
queue_relay_jobs_add(struct queue *q, struct qmsg *m, struct rgroup *groups)
{
	for (struct rgroup *g = groups; g != NULL; g = g->next) {
		struct rjob *j = xcalloc(1, sizeof(*j));
		struct rdomain *d = dom_get(q, g->domain);

		j->m = m;
		j->dom = d;
		d->refs++;
		j->idx = g->idx;
		j->n = g->n;
		g->idx = NULL;
		j->state = RJ_WAITING;
		if (d->tail != NULL)
			d->tail->next = j;
		else
			d->head = j;
		d->tail = j;
		m->njobs++;
		dom_check(q, d);
	}
	queue_task_groups_free(groups);
}

/*
 * Dispatch waiting jobs while the limits allow: a slot in total
 * (max_relay_connections) and for the domain (per_domain), room in the
 * octet budget, and a relay that reads what it is sent. Domains take
 * turns (the ready list is round robin), so a busy destination never
 * holds up the others.
 */
void
queue_relay_pump(struct queue *q)
{
	if (q->pumping)
		return;
	q->pumping = true;
	while (q->relay != NULL && !q->relay->dead && !q->stopping &&
	    q->relay_inflight < q->max_relay &&
	    ipc_out_len(q->relay->ipc) < RELAY_OUT_HIGH && q->ready_head != NULL) {
		struct rdomain *d = q->ready_head;
		struct rjob *j = d->head;
		uint64_t est;

		if (j->m->gone || j->m->held) {
			/* Deleted or held: the recipients stay as journaled. */
			d->head = j->next;
			if (d->head == NULL)
				d->tail = NULL;
			(void)ready_pop(q);
			job_drop(q, j, 0);   /* may free d */
			continue;
		}
		est = (uint64_t)j->m->size_kib * 1024 + RELAY_HEAD_SLACK;
		if (q->relay_bytes > 0 && q->relay_bytes + est > RELAY_BYTES_MAX)
			break;   /* results coming back free the budget */
		(void)ready_pop(q);
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		j->next = NULL;
		j->state = RJ_LOADING;
		j->id = ++q->next_job_id;
		j->bytes = est;
		q->relay_bytes += est;
		q->relay_inflight++;
		d->inflight++;
		dom_check(q, d);
		queue_sched_start(q, j->m, TASK_LOAD, j, true);
	}
	q->pumping = false;
}

/* ---- the relay channel (loop) ---- */

static size_t
rjob_hash(const struct rchan *c, uint64_t id)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 32) & c->mask;
}

static struct rjob *
rchan_take(struct rchan *c, uint64_t id)
{
	struct rjob **pp = &c->buckets[rjob_hash(c, id)];

	for (; *pp != NULL; pp = &(*pp)->hnext)
		if ((*pp)->id == id) {
			struct rjob *j = *pp;
			*pp = j->hnext;
			j->hnext = NULL;
			c->nsent--;
			return j;
		}
	return NULL;
}

/* Hand j's answer (or its loss) to a RESULT task; its slot is free now. */
static void
job_answered(struct queue *q, struct rjob *j)
{
	job_unslot(q, j);
	dom_check(q, j->dom);   /* a slot is free; j keeps the domain alive */
	queue_sched_start(q, j->m, TASK_RESULT, j, true);
}

/*
 * Detach the relay channel and free it: every job sent on it and
 * unanswered counts as deferred (retried after retry_min); jobs being
 * loaded go back to their queue when the load ends.
 */
static void
relay_close(struct queue *q, struct rchan *c, const char *why)
{
	size_t lost = 0;

	if (q->relay == c)
		q->relay = NULL;
	c->dead = true;
	for (size_t i = 0; i <= c->mask; i++) {
		struct rjob *j;

		while ((j = c->buckets[i]) != NULL) {
			c->buckets[i] = j->hnext;
			j->hnext = NULL;
			j->lost = true;
			job_answered(q, j);
			lost++;
		}
	}
	c->nsent = 0;
	log_info("queue event=relay-channel-closed reason=\"%s\" deferred_jobs=%zu",
	    why, lost);
	ipc_free(&c->ipc);   /* later, if we are inside its callback */
	free(c->buckets);
	free(c);
	queue_maybe_exit(q);
}

/*
 * Take j's RESULT (proto/relay_job.h): fills j->outcome, j->reply, j->own,
 * j->via, j->via_mx; or the via line alone, which the placeholder relay
 * sends: every recipient deferred. -1 with a reason in why: a protocol
 * violation.
 */
static int
result_take(struct rjob *j, const void *p, size_t len, char *why,
    size_t whysize)
{
	struct relay_result res;
	struct relay_result_rcpt *lines = xcalloc(j->n ? j->n : 1, sizeof(*lines));
	char qv[3][RELAY_RESULT_TOKEN_MAX * 4 + 8];

	if (relay_result_decode(p, len, j->n, &res, lines, why, whysize) == -1) {
		free(lines);
		return -1;
	}
	j->peer_dsn = res.peer_dsn;
	if (res.n > 0) {
		j->outcome = xcalloc(j->n + 1, 1);
		j->reply = xcalloc(j->n, sizeof(*j->reply));
		j->own = xcalloc(j->n, sizeof(*j->own));
	}
	for (size_t k = 0; k < res.n; k++) {
		const struct relay_result_rcpt *l = &lines[k];
		unsigned code = l->code;

		/* code 0: tern decided without a reply; journal a reply line. */
		j->own[k] = code == 0;
		if (code == 0)
			code = l->outcome == 'D' ? 250 : l->outcome == 'F' ? 550 : 451;
		j->outcome[k] = l->outcome;
		j->reply[k] = xasprintf("%u %.*s%s%.*s", code, (int)l->enh_len,
		    l->enh, l->text_len > 0 ? " " : "", (int)l->text_len, l->text);
	}
	free(lines);
	for (int i = 0; i < 3; i++)
		log_quote(qv[i], sizeof(qv[i]), res.via[i], res.via_len[i],
		    RELAY_RESULT_TOKEN_MAX);
	j->via = xasprintf("relay=%s ip=%s tls=%s", qv[0], qv[1], qv[2]);
	free(j->via_mx);
	j->via_mx = res.via_len[0] == 1 && res.via[0][0] == '-' ? NULL :
	    xstrndup(res.via[0], res.via_len[0]);
	return 0;
}

/* RESULT: the answer to a job sent on this channel. */
static int
on_result(void *arg, struct ipc_frame *f)
{
	struct rchan *c = arg;
	struct queue *q = c->q;
	struct rjob *j = rchan_take(c, f->id);

	if (j == NULL) {
		snprintf(f->why, f->whysize, "RESULT for unknown job %" PRIu64,
		    f->id);
		return -1;
	}
	if (result_take(j, f->data, f->len, f->why, f->whysize) == -1) {
		/* Back in the table: it is deferred with the others. */
		j->hnext = c->buckets[rjob_hash(c, j->id)];
		c->buckets[rjob_hash(c, j->id)] = j;
		c->nsent++;
		return -1;
	}
	job_answered(q, j);
	queue_relay_pump(q);
	return 0;
}

/* What the queue accepts from the relay process. */
static const struct ipc_handler relay_answers[] = {
	{ RELAY_JOB_RESULT, IPC_ID, on_result },
};

static void
relay_closed(void *arg, enum ipc_end end, const char *why)
{
	struct rchan *c = arg;

	if (end == IPC_VIOLATION)
		log_err("queue event=protocol-violation peer=relay reason=\"%s\"",
		    why);
	relay_close(c->q, c, end == IPC_VIOLATION ? "protocol violation" :
	    end == IPC_EOF ? "closed by relay" : "channel error");
}

static void
relay_drained(void *arg)
{
	struct rchan *c = arg;

	queue_relay_pump(c->q);
	if (c->q->stopping)
		queue_maybe_exit(c->q);
}

static const struct ipc_ops relay_ops = {
	.handlers = relay_answers,
	.nhandlers = nitems(relay_answers),
	.closed = relay_closed,
	.drained = relay_drained,
	.out_low = RELAY_OUT_LOW,
};

void
queue_relay_open(struct queue *q, int fd)
{
	struct rchan *c = xcalloc(1, sizeof(*c));
	size_t n = 16;

	while (n < q->max_relay)
		n <<= 1;
	c->q = q;
	c->mask = n - 1;
	c->buckets = xcalloc(n, sizeof(*c->buckets));
	c->ipc = ipc_new(q->base, fd, &relay_ops, c);
	q->relay = c;
	log_info("queue event=relay-channel-open");
	queue_relay_pump(q);
}

/* A LOAD finished: send the job, or put it back if it cannot go now. */
void
queue_relay_load_done(struct queue *q, struct task *t)
{
	struct rjob *j = t->job;
	struct rchan *c = q->relay;
	struct rdomain *d = j->dom;
	char id[QUEUE_ID_LEN + 1];

	if (t->result == TR_KEEP && (j->m->gone || j->m->held))
		t->result = TR_SKIPPED;   /* deleted or held meanwhile: drop */
	if (t->result == TR_KEEP && c != NULL && !c->dead && !q->stopping) {
		size_t len = evbuffer_get_length(t->frames);

		q->relay_bytes = q->relay_bytes - j->bytes + len;
		j->bytes = len;
		j->state = RJ_SENT;
		j->hnext = c->buckets[rjob_hash(c, j->id)];
		c->buckets[rjob_hash(c, j->id)] = j;
		c->nsent++;
		queue_sched_idstr(j->m, id);
		log_info("queue id=%s event=relay-job job=%" PRIu64 " domain=%s nrcpt=%zu bytes=%zu",
		    id, j->id, d->name, j->n, len);
		ipc_send_buffer(c->ipc, t->frames);
		return;
	}
	if (t->result == TR_KEEP && !q->stopping) {
		/* The relay went away meanwhile: wait, first in line. */
		job_unslot(q, j);
		j->state = RJ_WAITING;
		j->next = d->head;
		d->head = j;
		if (d->tail == NULL)
			d->tail = j;
		dom_check(q, d);
		return;
	}
	if (t->result == TR_GONE)
		j->m->gone = true;
	job_drop(q, j, t->result == TR_RETRY ?
	    (int64_t)time(NULL) + LOAD_RETRY_SECS : 0);
}

void
queue_relay_close(struct queue *q, const char *why)
{
	if (q->relay != NULL)
		relay_close(q, q->relay, why);
}

size_t
queue_relay_unanswered(const struct queue *q)
{
	return q->relay != NULL && !q->relay->dead ? q->relay->nsent : 0;
}

/* A RESULT task is back: the job has served; free it. */
void
queue_relay_result_done(struct queue *q, struct task *t)
{
	job_release(q, t->job);
	t->m->njobs--;
}

/* ---- the end: nothing in flight any more (loop) ---- */


/* Free the relay channel and every job, at the end: what was in flight
 * stays unfinished in the spool and is tried again at the next start. */
void
queue_relay_free_all(struct queue *q)
{
	if (q->relay != NULL) {
		struct rchan *c = q->relay;

		q->relay = NULL;
		for (size_t i = 0; i <= c->mask; i++)
			while (c->buckets[i] != NULL) {
				struct rjob *j = c->buckets[i];
				c->buckets[i] = j->hnext;
				queue_relay_job_free(j);
			}
		ipc_free(&c->ipc);
		free(c->buckets);
		free(c);
	}
	for (size_t i = 0; q->dom_buckets != NULL && i <= q->dom_mask; i++)
		while (q->dom_buckets[i] != NULL) {
			struct rdomain *d = q->dom_buckets[i];

			q->dom_buckets[i] = d->hnext;
			while (d->head != NULL) {
				struct rjob *j = d->head;
				d->head = j->next;
				queue_relay_job_free(j);
			}
			free(d);
		}
	free(q->dom_buckets);
	q->dom_buckets = NULL;
	q->ready_head = q->ready_tail = NULL;
	q->ndoms = 0;
}

/* ---- the task bodies (worker threads) ---- */

/* LOAD: the frames of relay job t->job (proto/relay_job.h), ready to send. */
void
queue_relay_load(struct queue *q, struct task *t)
{
	struct rjob *j = t->job;
	struct spool_msg *m;
	const struct envelope *env;
	struct envelope sub;
	const char *body;
	size_t body_len;

	m = queue_task_load(q, t);
	if (m == NULL)
		return;
	env = spool_msg_envelope(m);
	for (size_t k = 0; k < j->n; k++) {
		const struct spool_rcpt_status *st;

		if (j->idx[k] >= env->nrcpts)
			goto bad;
		st = spool_msg_rcpt(m, j->idx[k]);
		if (st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED)
			goto bad;
	}
	/* The same envelope with only the job's recipients (DSN fields kept). */
	envelope_init(&sub);
	memcpy(sub.id, env->id, sizeof(sub.id));
	sub.arrival = env->arrival;
	envelope_set(&sub.sender, env->sender);
	envelope_set(&sub.helo, env->helo);
	envelope_set(&sub.client_addr, env->client_addr);
	envelope_set(&sub.protocol, env->protocol);
	sub.body = env->body;
	sub.smtputf8 = env->smtputf8;
	sub.ret = env->ret;
	envelope_set(&sub.envid, env->envid);
	sub.size_declared = env->size_declared;
	for (size_t k = 0; k < j->n; k++) {
		const struct envelope_rcpt *r = &env->rcpts[j->idx[k]];
		envelope_add_rcpt(&sub, r->addr, r->orcpt, r->notify);
	}
	t->frames = evbuffer_new();
	if (t->frames == NULL)
		fatal("out of memory");
	/* Copied here, in the worker: the loop never touches the file. */
	body = spool_msg_body(m, &body_len);
	if (relay_job_encode(t->frames, j->id, j->dom->name, &sub, body,
	    body_len) == -1) {
		/* scan_add_remote bounds the records: cannot happen. */
		envelope_clear(&sub);
		goto bad;
	}
	envelope_clear(&sub);
	spool_msg_close(&m);
	t->result = TR_KEEP;
	return;
bad:
	log_err("queue id=%s event=relay-job-stale job=%" PRIu64, t->id, j->id);
	spool_msg_close(&m);
	t->result = TR_RETRY;
}

/* RESULT: journal the outcome of relay job t->job. */
void
queue_relay_result(struct queue *q, struct task *t)
{
	static const char REPLY_NONE[] = "451 4.4.0 No result from the relay";
	static const char REPLY_LOST[] = "451 4.4.0 Relay process unavailable";
	struct rjob *j = t->job;
	struct spool_msg *m;
	const struct envelope *env;
	int64_t now = (int64_t)time(NULL);

	m = queue_task_load(q, t);
	if (m == NULL) {
		if (t->result == TR_RETRY)
			log_err("queue id=%s event=result-lost job=%" PRIu64
			    " reason=\"cannot load\"", t->id, j->id);
		return;
	}
	env = spool_msg_envelope(m);
	for (size_t k = 0; k < j->n; k++) {
		size_t i = j->idx[k];
		const struct spool_rcpt_status *st;
		const char *addr, *reply;
		char o, aq[600], rq[700];
		bool own;

		if (i >= env->nrcpts)
			continue;
		st = spool_msg_rcpt(m, i);
		if (st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED)
			continue;
		addr = env->rcpts[i].addr;
		o = j->lost || j->outcome == NULL ? 'T' : j->outcome[k];
		reply = j->lost ? REPLY_LOST : j->reply != NULL &&
		    j->reply[k] != NULL ? j->reply[k] : REPLY_NONE;
		log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
		log_quote(rq, sizeof(rq), reply, strlen(reply), 600);
		own = j->lost || j->own == NULL || j->own[k] || j->via_mx == NULL;
		switch (o) {
		case 'D':
			/* RFC 3461 5.2.2: a next hop with DSN got NOTIFY and
			 * ORCPT and reports from now on ('d'); one without it
			 * leaves the "relayed" report to us */
			spool_msg_attempt(m, i, now, own ? '-' : j->peer_dsn ?
			    'd' : 's', own ? NULL : j->via_mx);
			spool_msg_delivered(m, i);
			log_info("queue id=%s event=delivered rcpt=<%s> %s reply=\"%s\" delay=%.3fs",
			    t->id, aq, j->via != NULL ? j->via : "", rq,
			    (double)(util_now_us() - spool_id_time_us(t->id)) / 1e6);
			break;
		case 'F':
			spool_msg_attempt(m, i, now, own ? '-' : 's',
			    own ? NULL : j->via_mx);
			spool_msg_failed(m, i, reply);
			log_warn("queue id=%s event=failed rcpt=<%s> %s reply=\"%s\"",
			    t->id, aq, j->via != NULL ? j->via : "", rq);
			break;
		default:
			(void)queue_task_defer(q, m, i, now, reply, j->lost,
			    j->via, own ? '-' : 's', own ? NULL : j->via_mx);
			break;
		}
	}
	/* Journaled first, whatever happens to the report: a report owed
	 * goes out once no other job of the message is out (docs/dsn.md). */
	queue_task_finish(q, t, &m, now);
}
