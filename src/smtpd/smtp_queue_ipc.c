/*
 * smtp_queue_ipc.c - the session's queue interface over IPC (see
 * smtp_queue_ipc.h and the protocol in ipc.h).
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "mail/envelope.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_queue_ipc.h"
#include "lib/util.h"

/* Frames queued for the queue process beyond this mean "congested". */
#define CONGESTED_HIGH (1024 * 1024)
#define CONGESTED_LOW (256 * 1024)
#define REPLY_MAX 512
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
	struct bufferevent *bev;  /* NULL while the channel is down */
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
	if (q->bev == NULL)
		return;
	log_err("smtp queue channel down: %s", why);
	bufferevent_free(q->bev);
	q->bev = NULL;
	for (struct txn *t = q->txns; t; t = t->next)
		if (t->state != TXN_FAILED)
			txn_fail_deferred(q, t, DOWN_REPLY);
	if (q->congested) {
		q->congested = false;
		q->on_uncongested(q->arg);
	}
}

static bool
valid_qid(const unsigned char *p, size_t n)
{
	if (n != QUEUE_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'F') ||
		    (p[i] >= 'a' && p[i] <= 'f')))
			return false;
	return true;
}

/* A failure reply from the queue must look like one: 4xx/5xx, printable. */
static bool
valid_reply(const unsigned char *p, size_t n)
{
	if (n < 4 || n >= REPLY_MAX || (p[0] != '4' && p[0] != '5'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 32 || p[i] > 126)
			return false;
	return true;
}

static void
handle_msg(struct smtp_queue_ipc *q, struct ipc_msg *m)
{
	struct txn *t = txn_find(q, m->hdr.id);
	struct queue_result res = { 0 };
	enum txn_state want;

	if (t == NULL)
		return;   /* aborted meanwhile: the queue dropped it too */
	switch (m->hdr.type) {
	case IPC_SUBMIT_BEGIN_OK:
	case IPC_SUBMIT_BEGIN_FAIL:
		want = TXN_BEGIN_SENT;
		break;
	case IPC_SUBMIT_COMMIT_OK:
	case IPC_SUBMIT_COMMIT_FAIL:
		want = TXN_COMMIT_SENT;
		break;
	default:
		channel_down(q, "unexpected frame type");
		return;
	}
	if (t->state != want) {
		channel_down(q, "frame out of sequence");
		return;
	}
	bool ok = m->hdr.type == IPC_SUBMIT_BEGIN_OK || m->hdr.type == IPC_SUBMIT_COMMIT_OK;
	if (ok ? !valid_qid(m->payload, m->hdr.len) : !valid_reply(m->payload, m->hdr.len)) {
		channel_down(q, "malformed reply");
		return;
	}
	res.ok = ok;
	if (ok)
		res.queue_id = (const char *)m->payload;
	else
		res.reply = (const char *)m->payload;
	queue_client_cb cb = t->cb;
	void *arg = t->arg;
	if (ok && m->hdr.type == IPC_SUBMIT_BEGIN_OK) {
		t->state = TXN_OPEN;
		t->cb = NULL;
	} else {
		txn_unlink(q, t);
		free(t);
	}
	cb(arg, &res);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_queue_ipc *q = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct ipc_msg m;
	int r;

	while (q->bev == bev && (r = ipc_read(in, &m)) != 0) {
		if (r < 0) {
			channel_down(q, "protocol error");
			return;
		}
		handle_msg(q, &m);
		ipc_msg_clear(&m);
	}
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_queue_ipc *q = arg;

	if (q->congested &&
	    evbuffer_get_length(bufferevent_get_output(bev)) <= CONGESTED_LOW) {
		q->congested = false;
		q->on_uncongested(q->arg);
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	channel_down(arg, (what & BEV_EVENT_EOF) ? "closed by the queue" : "error");
}

static struct evbuffer *
out_buf(struct smtp_queue_ipc *q)
{
	return bufferevent_get_output(q->bev);
}

static void
check_congestion(struct smtp_queue_ipc *q)
{
	if (!q->congested && evbuffer_get_length(out_buf(q)) > CONGESTED_HIGH)
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
	if (q->bev == NULL) {
		txn_fail_deferred(q, t, DOWN_REPLY);
		return t;
	}
	struct evbuffer *text = evbuffer_new();
	if (text == NULL)
		fatal("out of memory");
	envelope_serialize(env, text);
	size_t n = evbuffer_get_length(text);
	if (n > IPC_MAX_PAYLOAD) {
		/* Bounded by max_recipients in practice; never send a frame
		 * the queue must refuse. */
		txn_fail_deferred(q, t, "452 4.5.3 Error: envelope too large");
	} else {
		ipc_write(out_buf(q), IPC_SUBMIT_BEGIN, t->id,
		    evbuffer_pullup(text, -1), n);
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

	if (q->bev == NULL || t->state != TXN_OPEN)
		return;   /* the failure surfaces at commit */
	while (len > 0) {
		size_t n = len < IPC_MAX_PAYLOAD ? len : IPC_MAX_PAYLOAD;
		ipc_write(out_buf(q), IPC_SUBMIT_DATA, t->id, p, n);
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
	if (q->bev == NULL || t->state != TXN_OPEN) {
		txn_fail_deferred(q, t, t->state == TXN_FAILED && t->reply[0] ?
		    t->reply : DOWN_REPLY);
		return;
	}
	ipc_write(out_buf(q), IPC_SUBMIT_COMMIT, t->id, NULL, 0);
	t->state = TXN_COMMIT_SENT;
}

static void
ops_abort(void *ctx, void *txn)
{
	struct smtp_queue_ipc *q = ctx;
	struct txn *t = txn;

	if (q->bev != NULL && t->state != TXN_FAILED)
		ipc_write(out_buf(q), IPC_SUBMIT_ABORT, t->id, NULL, 0);
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
	util_set_nonblock(fd);
	q->bev = bufferevent_socket_new(q->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (q->bev == NULL)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(q->bev, read_cb, write_cb, event_cb, q);
	bufferevent_setwatermark(q->bev, EV_WRITE, CONGESTED_LOW, 0);
	bufferevent_enable(q->bev, EV_READ | EV_WRITE);
}

void
smtp_queue_ipc_free(struct smtp_queue_ipc **qp)
{
	struct smtp_queue_ipc *q = *qp;

	if (q == NULL)
		return;
	if (q->bev)
		bufferevent_free(q->bev);
	while (q->txns) {
		struct txn *t = q->txns;
		txn_unlink(q, t);
		free(t);
	}
	event_free(q->notify_ev);
	free(q);
	*qp = NULL;
}
