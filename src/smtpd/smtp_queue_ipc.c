/*
 * smtp_queue_ipc.c - the session's queue interface over IPC (see
 * smtp_queue_ipc.h and the protocol in proto/submit.h).
 */
#include <event2/buffer.h>
#include <event2/event.h>

#include "mail/envelope.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "proto/submit.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_queue_ipc.h"
#include "lib/util.h"

/* Frames queued for the queue process beyond this mean "congested". */
#define CONGESTED_HIGH (1024 * 1024)
#define CONGESTED_LOW (256 * 1024)
#define REPLY_MAX SUBMIT_REPLY_MAX
#define TXN_BUCKETS 1024   /* ids are sequential: id % TXN_BUCKETS spreads */

enum txn_state { TXN_BEGIN_SENT, TXN_OPEN, TXN_COMMIT_SENT, TXN_FAILED };

struct txn {
	uint64_t id;
	enum txn_state state;
	queue_client_cb cb;
	void *arg;
	char reply[REPLY_MAX];    /* failure reply for a deferred callback */
	struct txn *next, *prev;
	struct txn *hnext, *hprev;   /* its bucket's chain */
};

struct smtp_queue_ipc {
	struct event_base *base;
	struct ipc *chan;         /* NULL while the channel is down */
	uint64_t next_id;
	struct txn *txns;         /* live transactions */
	struct txn *buckets[TXN_BUCKETS];  /* the same, by id */
	struct event *notify_ev;  /* runs deferred failure callbacks */
	bool congested;
	void (*on_uncongested)(void *);
	void *arg;
};

static const char *const DOWN_REPLY = "451 4.3.0 Error: queue temporarily unavailable";

static void
txn_unlink(struct smtp_queue_ipc *q, struct txn *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		q->txns = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
	if (t->hprev)
		t->hprev->hnext = t->hnext;
	else
		q->buckets[t->id % TXN_BUCKETS] = t->hnext;
	if (t->hnext)
		t->hnext->hprev = t->hprev;
	t->hnext = t->hprev = NULL;
}

static void
txn_link(struct smtp_queue_ipc *q, struct txn *t)
{
	struct txn **b = &q->buckets[t->id % TXN_BUCKETS];

	t->next = q->txns;
	if (q->txns)
		q->txns->prev = t;
	q->txns = t;
	t->hnext = *b;
	if (*b)
		(*b)->hprev = t;
	*b = t;
}

/* Every queue answer looks its transaction up: by hash, not by scan. */
static struct txn *
txn_find(struct smtp_queue_ipc *q, uint64_t id)
{
	for (struct txn *t = q->buckets[id % TXN_BUCKETS]; t; t = t->hnext)
		if (t->id == id)
			return t;
	return NULL;
}

/* Fail t later from the loop (callbacks never run inside our calls). */
static void
txn_fail_deferred(struct smtp_queue_ipc *q, struct txn *t, const char *reply)
{
	t->state = TXN_FAILED;
	if (reply != t->reply)
		util_strlcpy(t->reply, reply, sizeof(t->reply));
	event_active(q->notify_ev, 0, 0);
}

static void
notify_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct smtp_queue_ipc *q = arg;
	struct txn *t, *next;

	for (t = q->txns; t; t = next) {
		next = t->next;
		if (t->state != TXN_FAILED || t->cb == NULL)
			continue;
		queue_client_cb cb = t->cb;
		void *cbarg = t->arg;
		struct queue_result res = { .ok = false, .reply = t->reply };
		txn_unlink(q, t);
		/* The callback may begin a new transaction; t is ours alone now. */
		cb(cbarg, &res);
		free(t);
		next = q->txns;   /* the list may have changed */
	}
}

static void
channel_down(struct smtp_queue_ipc *q, const char *why)
{
	if (q->chan == NULL)
		return;
	log_err("smtp queue channel down: %s", why);
	ipc_free(&q->chan);
	for (struct txn *t = q->txns; t; t = t->next)
		if (t->state != TXN_FAILED)
			txn_fail_deferred(q, t, DOWN_REPLY);
	if (q->congested) {
		q->congested = false;
		q->on_uncongested(q->arg);
	}
}

/*
 * An answer from the queue: BEGIN_OK, BEGIN_FAIL, COMMIT_OK or
 * COMMIT_FAIL (the dispatch table below) for a transaction in the state
 * that expects it.
 */
static int
on_answer(void *arg, struct ipc_frame *f)
{
	struct smtp_queue_ipc *q = arg;
	struct txn *t = txn_find(q, f->id);
	struct queue_result res = { 0 };
	char text[REPLY_MAX];
	bool ok = f->type == SUBMIT_BEGIN_OK || f->type == SUBMIT_COMMIT_OK;
	bool begin = f->type == SUBMIT_BEGIN_OK || f->type == SUBMIT_BEGIN_FAIL;

	if (t == NULL)
		return 0;   /* aborted meanwhile: the queue dropped it too */
	if (t->state != (begin ? TXN_BEGIN_SENT : TXN_COMMIT_SENT)) {
		snprintf(f->why, f->whysize, "frame out of sequence");
		return -1;
	}
	if (ok ? submit_qid_decode(f->data, f->len, text) == -1 :
	    submit_reply_decode(f->data, f->len, text) == -1) {
		snprintf(f->why, f->whysize, "malformed reply");
		return -1;
	}
	res.ok = ok;
	if (ok)
		res.queue_id = text;
	else
		res.reply = text;
	queue_client_cb cb = t->cb;
	void *cbarg = t->arg;
	if (ok && begin) {
		t->state = TXN_OPEN;
		t->cb = NULL;
	} else {
		txn_unlink(q, t);
		free(t);
	}
	cb(cbarg, &res);
	return 0;
}

static void
chan_drained(void *arg)
{
	struct smtp_queue_ipc *q = arg;

	if (q->congested) {
		q->congested = false;
		q->on_uncongested(q->arg);
	}
}

static void
chan_closed(void *arg, enum ipc_end end, const char *why)
{
	char text[200];

	snprintf(text, sizeof(text), "%s", end == IPC_EOF ?
	    "closed by the queue" : end == IPC_ERROR ? "error" : why);
	channel_down(arg, text);
}

/* What the smtp process accepts from the queue. */
static const struct ipc_handler submit_answers[] = {
	{ SUBMIT_BEGIN_OK, 0, on_answer },
	{ SUBMIT_BEGIN_FAIL, 0, on_answer },
	{ SUBMIT_COMMIT_OK, 0, on_answer },
	{ SUBMIT_COMMIT_FAIL, 0, on_answer },
};

static const struct ipc_ops chan_ops = {
	.handlers = submit_answers,
	.nhandlers = nitems(submit_answers),
	.closed = chan_closed,
	.drained = chan_drained,
	.out_low = CONGESTED_LOW,
};

static void
check_congestion(struct smtp_queue_ipc *q)
{
	if (!q->congested && ipc_out_len(q->chan) > CONGESTED_HIGH)
		q->congested = true;
}

static void *
ops_begin(void *ctx, const struct envelope *env, queue_client_cb cb, void *arg)
{
	struct smtp_queue_ipc *q = ctx;
	struct txn *t = xcalloc(1, sizeof(*t));

	t->id = ++q->next_id;
	t->cb = cb;
	t->arg = arg;
	txn_link(q, t);
	if (q->chan == NULL) {
		txn_fail_deferred(q, t, DOWN_REPLY);
		return t;
	}
	struct evbuffer *text = evbuffer_new();
	if (text == NULL)
		fatal("out of memory");
	if (submit_begin_encode(text, env) == -1) {
		txn_fail_deferred(q, t, "452 4.5.3 Error: envelope too large");
	} else {
		ipc_send(q->chan, SUBMIT_BEGIN, t->id, evbuffer_pullup(text, -1),
		    evbuffer_get_length(text));
		t->state = TXN_BEGIN_SENT;
		check_congestion(q);
	}
	evbuffer_free(text);
	return t;
}

static void
ops_write(void *ctx, void *txn, const void *data, size_t len)
{
	struct smtp_queue_ipc *q = ctx;
	struct txn *t = txn;
	const char *p = data;

	if (q->chan == NULL || t->state != TXN_OPEN)
		return;   /* the failure surfaces at commit */
	while (len > 0) {
		size_t n = len < IPC_MAX_PAYLOAD ? len : IPC_MAX_PAYLOAD;
		ipc_send(q->chan, SUBMIT_DATA, t->id, p, n);
		p += n;
		len -= n;
	}
	check_congestion(q);
}

static void
ops_commit(void *ctx, void *txn, queue_client_cb cb, void *arg)
{
	struct smtp_queue_ipc *q = ctx;
	struct txn *t = txn;

	t->cb = cb;
	t->arg = arg;
	if (q->chan == NULL || t->state != TXN_OPEN) {
		txn_fail_deferred(q, t, t->state == TXN_FAILED && t->reply[0] ?
		    t->reply : DOWN_REPLY);
		return;
	}
	ipc_send(q->chan, SUBMIT_COMMIT, t->id, NULL, 0);
	t->state = TXN_COMMIT_SENT;
}

static void
ops_abort(void *ctx, void *txn)
{
	struct smtp_queue_ipc *q = ctx;
	struct txn *t = txn;

	if (q->chan != NULL && t->state != TXN_FAILED)
		ipc_send(q->chan, SUBMIT_ABORT, t->id, NULL, 0);
	txn_unlink(q, t);
	free(t);
}

static bool
ops_congested(void *ctx)
{
	return ((struct smtp_queue_ipc *)ctx)->congested;
}

const struct queue_client_ops smtp_queue_ipc_ops = {
	.begin = ops_begin,
	.write = ops_write,
	.commit = ops_commit,
	.abort = ops_abort,
	.congested = ops_congested,
};

struct smtp_queue_ipc *
smtp_queue_ipc_new(struct event_base *base, int fd,
    void (*on_uncongested)(void *arg), void *arg)
{
	struct smtp_queue_ipc *q = xcalloc(1, sizeof(*q));

	q->base = base;
	q->on_uncongested = on_uncongested;
	q->arg = arg;
	q->notify_ev = event_new(base, -1, 0, notify_cb, q);
	if (q->notify_ev == NULL)
		fatal("event_new failed");
	smtp_queue_ipc_set_fd(q, fd);
	return q;
}

void
smtp_queue_ipc_set_fd(struct smtp_queue_ipc *q, int fd)
{
	channel_down(q, "replaced");
	if (fd == -1)
		return;
	q->chan = ipc_new(q->base, fd, &chan_ops, q);
}

void
smtp_queue_ipc_free(struct smtp_queue_ipc **qp)
{
	struct smtp_queue_ipc *q = *qp;

	if (q == NULL)
		return;
	ipc_free(&q->chan);
	while (q->txns) {
		struct txn *t = q->txns;
		txn_unlink(q, t);
		free(t);
	}
	event_free(q->notify_ev);
	free(q);
	*qp = NULL;
}
