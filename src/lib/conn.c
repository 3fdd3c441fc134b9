/*
 * conn.c - a TCP connection, plain or TLS, on a bufferevent (see conn.h).
 *
 * A connection is in one phase at a time; the phase says what the one
 * timer bounds and which events reach the owner:
 *
 *   CONNECTING  conn_connect() waits for the TCP handshake: the connect
 *               bound;
 *   HANDSHAKE   TLS is being negotiated: its own bound if it has one,
 *               else the owner's;
 *   OPEN        the owner's deadline;
 *   CLOSING     conn_close() flushes: the flush bound;
 *   DONE        reported ended; nothing more happens.
 *
 * Nothing is freed from inside its own callback (Redis freeClientAsync):
 * busy counts the callbacks of this connection on the stack, conn_free()
 * inside one only marks it, and the outermost one frees it on its way
 * out. A libevent event that arrives while a callback of the same
 * connection runs (a TLS filter reports from inside the owner's write) is
 * kept and delivered from the loop, so the owner never hears of an end
 * from inside its own code.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/conn.h"
#include "lib/log.h"
#include "lib/tls.h"
#include "lib/util.h"

enum conn_phase {
	PHASE_CONNECTING,
	PHASE_HANDSHAKE,
	PHASE_OPEN,
	PHASE_CLOSING,
	PHASE_DONE,
};

struct conn {
	struct event_base *base;
	struct bufferevent *bev;
	const struct conn_ops *ops;
	void *arg;
	enum conn_phase phase;
	struct event *timer;      /* the one timer (see the phases) */
	struct event *later;      /* deliveries that must wait for the loop */
	bool tls;                 /* bev is a TLS bufferevent */
	bool tls_up;              /* ... and its handshake succeeded */
	bool hs_bound;            /* the handshake runs under its own bound */
	bool close_called;        /* conn_close() was called ... */
	bool close_owed;          /* ... and its ended() is still to come */
	size_t lowat;
	int64_t deadline_at;      /* the owner's (util_mono_ms()); 0: none */
	/* an event kept for the loop (see the top of this file) */
	short pending;            /* BEV_EVENT_* bits, 0: none */
	char pending_why[256];
	unsigned busy;
	bool freeing;
};

/* ------------------------------------------------------------------ */
/* callbacks into the owner */

static void
enter(struct conn *c)
{
	c->busy++;
}

static void conn_destroy(struct conn *c);

static void
leave(struct conn *c)
{
	if (--c->busy == 0 && c->freeing)
		conn_destroy(c);
}

/* Whether the owner may still hear from c. */
static bool
live(const struct conn *c)
{
	return !c->freeing;
}

static void
report_end(struct conn *c, enum conn_end end, const char *why)
{
	if (live(c) && c->ops->ended != NULL)
		c->ops->ended(c->arg, end, why);
}

/* The connection is over: nothing runs any more, the owner hears why. */
static void
finish(struct conn *c, enum conn_end end, const char *why)
{
	c->phase = PHASE_DONE;
	c->close_owed = false;
	evtimer_del(c->timer);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	report_end(c, end, why);
}

/* ------------------------------------------------------------------ */
/* the timer */

static void
timer_in(struct conn *c, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	if (evtimer_add(c->timer, &tv) == -1)
		fatal("conn: cannot arm a timer");
}

/* A bound of the connection's own: replaces the owner's. ms 0: none. */
static void
own_bound(struct conn *c, unsigned ms)
{
	c->deadline_at = 0;
	if (ms == 0)
		evtimer_del(c->timer);
	else
		timer_in(c, ms);
}

/* Whether the owner's deadline drives the timer now. */
static bool
owner_timed(const struct conn *c)
{
	return c->phase == PHASE_OPEN ||
	    (c->phase == PHASE_HANDSHAKE && !c->hs_bound);
}

/* Arm the timer for the owner's deadline, if any. */
static void
owner_arm(struct conn *c, int64_t now)
{
	if (!owner_timed(c))
		return;
	if (c->deadline_at == 0)
		evtimer_del(c->timer);
	else
		timer_in(c, c->deadline_at - now);
}

static void
owner_timer(struct conn *c)
{
	c->deadline_at = 0;   /* it fired: set another to go on */
	if (live(c) && c->ops->timeout != NULL)
		c->ops->timeout(c->arg);
}

static void tls_end(struct conn *c, bool ok, const char *why);

static void
timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;

	enter(c);
	switch (c->phase) {
	case PHASE_CONNECTING:
		finish(c, CONN_END_TIMEOUT, "connection timed out");
		break;
	case PHASE_CLOSING:
		finish(c, CONN_END_TIMEOUT, "output not read in time");
		break;
	case PHASE_HANDSHAKE:
		if (c->hs_bound) {
			tls_end(c, false, "handshake timed out");
			break;
		}
		owner_timer(c);
		break;
	case PHASE_OPEN:
		owner_timer(c);
		break;
	case PHASE_DONE:
		break;
	}
	leave(c);
}

/* ------------------------------------------------------------------ */
/* TLS */

/*
 * Send what b's output holds to its socket now, without blocking and
 * without waiting: a bufferevent keeps the start of its output frozen
 * (only its own write callback drains it), so copy rather than drain.
 * A peer that does not read loses what does not fit, as it would anyway.
 */
static void
send_now(struct bufferevent *b)
{
	struct evbuffer_iovec v[16];
	evutil_socket_t fd;
	int n;

	if (b == NULL || (fd = bufferevent_getfd(b)) == -1)
		return;
	n = evbuffer_peek(bufferevent_get_output(b), -1, NULL, v, (int)nitems(v));
	if (n > (int)nitems(v))
		n = (int)nitems(v);
	for (int i = 0; i < n; i++) {
		ssize_t w = send(fd, v[i].iov_base, v[i].iov_len,
		    MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < (ssize_t)v[i].iov_len)
			break;
	}
}

/* The handshake is over: OPEN again, or the owner frees. */
static void
tls_end(struct conn *c, bool ok, const char *why)
{
	char desc[TLS_DESC_MAX];

	c->phase = ok ? PHASE_OPEN : PHASE_DONE;
	c->tls_up = ok;
	if (c->hs_bound) {
		c->hs_bound = false;
		evtimer_del(c->timer);   /* the owner arms its next */
	}
	if (!ok)
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	else
		tls_describe(c->bev, desc, sizeof(desc));
	if (live(c) && c->ops->tls_done != NULL)
		c->ops->tls_done(c->arg, ok, ok ? desc : why);
}

/* Callbacks, watermarks and the enabled directions of a new c->bev. */
static void bev_setup(struct conn *c);

static void
start_handshake(struct conn *c, unsigned handshake_ms)
{
	c->phase = PHASE_HANDSHAKE;
	c->tls = true;
	c->hs_bound = handshake_ms != 0;
	if (c->hs_bound)
		own_bound(c, handshake_ms);
	bev_setup(c);
}

int
conn_starttls(struct conn *c, struct ssl_ctx_st *ctx, bool server,
    const char *host, bool verify, unsigned handshake_ms)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct bufferevent *tb;

	if (c->phase != PHASE_OPEN || c->tls || ctx == NULL)
		return -1;
	/* RFC 3207 4.2 / 5: whatever arrived in clear text before the
	 * handshake is not part of the protected session. Before the filter
	 * exists: it would take these octets for the peer's handshake. */
	evbuffer_drain(in, evbuffer_get_length(in));
	tb = tls_wrap(c->base, c->bev, ctx, server, host, verify);
	if (tb == NULL)
		return -1;
	c->bev = tb;   /* the filter owns the socket's bufferevent now */
	start_handshake(c, handshake_ms);
	return 0;
}

bool
conn_tls_active(const struct conn *c)
{
	return c->tls_up;
}

bool
conn_tls_verified(const struct conn *c)
{
	return c->tls_up && tls_peer_verified(c->bev);
}

/* ------------------------------------------------------------------ */
/* bufferevent callbacks */

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	enter(c);
	if (c->phase == PHASE_OPEN && live(c) && c->ops->readable != NULL)
		c->ops->readable(c->arg);
	leave(c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	enter(c);
	if (c->phase == PHASE_CLOSING) {
		/* never from inside a write of the owner's (a TLS filter
		 * writes through at once) */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			event_active(c->later, 0, 0);
	} else if (c->phase == PHASE_OPEN && live(c) && c->ops->drained != NULL) {
		c->ops->drained(c->arg);
	}
	leave(c);
}

/* TCP is up: reading and writing on, the owner's turn. */
static void
established(struct conn *c)
{
	c->phase = PHASE_OPEN;
	evtimer_del(c->timer);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (live(c) && c->ops->connected != NULL)
		c->ops->connected(c->arg);
}

/* What a libevent event means in the current phase. */
static void
dispatch_event(struct conn *c, short what, const char *why)
{
	switch (c->phase) {
	case PHASE_CONNECTING:
		if (what & BEV_EVENT_CONNECTED) {
			established(c);
			return;
		}
		finish(c, CONN_END_ERROR, why);
		return;
	case PHASE_HANDSHAKE:
		if (what & BEV_EVENT_CONNECTED)
			tls_end(c, true, NULL);
		else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
			tls_end(c, false, why);
		return;
	case PHASE_OPEN:
		/* After EOF the owner may still write (a client's half-close
		 * after its last pipelined commands); after ERROR it closes. */
		if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
			report_end(c, (what & BEV_EVENT_EOF) ? CONN_END_EOF :
			    CONN_END_ERROR, why);
		return;
	case PHASE_CLOSING:
		if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
			finish(c, (what & BEV_EVENT_EOF) ? CONN_END_EOF :
			    CONN_END_ERROR, why);
		return;
	case PHASE_DONE:
		return;
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	int e = EVUTIL_SOCKET_ERROR();
	char why[sizeof(c->pending_why)];

	/* the reason now, while errno and the TLS error queue hold it */
	if (c->phase == PHASE_HANDSHAKE && !(what & BEV_EVENT_CONNECTED))
		tls_error_text(c->bev, why, sizeof(why));
	else if (what & BEV_EVENT_EOF)
		util_strlcpy(why, "connection closed by the peer", sizeof(why));
	else
		util_strlcpy(why, e != 0 ? strerror(e) : "connection failed",
		    sizeof(why));
	if (c->busy > 0) {
		/* from inside one of our callbacks: wait for the loop */
		c->pending |= what;
		util_strlcpy(c->pending_why, why, sizeof(c->pending_why));
		event_active(c->later, 0, 0);
		return;
	}
	enter(c);
	dispatch_event(c, what, why);
	leave(c);
}

/* Octets still queued under a TLS filter, in the socket's bufferevent. */
static bool
under_pending(const struct conn *c)
{
	struct bufferevent *u = c->tls_up ? bufferevent_get_underlying(c->bev) :
	    NULL;

	return u != NULL && evbuffer_get_length(bufferevent_get_output(u)) > 0;
}

/* The loop's turn: a kept event, or a close with nothing left to send. */
static void
later_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;

	enter(c);
	if (c->pending != 0) {
		short what = c->pending;

		c->pending = 0;
		dispatch_event(c, what, c->pending_why);
	}
	if (c->phase == PHASE_DONE && c->close_owed) {
		/* closed after it had ended some other way */
		finish(c, CONN_END_CLOSED, "closed");
	} else if (c->phase == PHASE_CLOSING &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		if (under_pending(c)) {
			/* the filter is empty, the socket under it is not, and
			 * nothing calls us when that drains: look again soon
			 * (the close bound still ends it) */
			struct timeval tv = { 0, 20 * 1000 };

			event_add(c->later, &tv);
			leave(c);
			return;
		}
		if (c->tls_up) {
			/* close_notify (RFC 8446 6.1; RFC 8314 3.4 asks it of
			 * the server after QUIT); a filter put it in the
			 * output of the socket's bufferevent, which it no
			 * longer drives once closing */
			tls_close_notify(c->bev);
			send_now(bufferevent_get_underlying(c->bev));
		}
		finish(c, CONN_END_CLOSED, "closed");
	}
	leave(c);
}

static void
bev_setup(struct conn *c)
{
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_READ_MAX);
	bufferevent_setwatermark(c->bev, EV_WRITE, c->lowat, 0);
	if (c->phase != PHASE_CONNECTING)
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ------------------------------------------------------------------ */
/* life */

static struct conn *
conn_new(struct event_base *base, struct bufferevent *bev,
    enum conn_phase phase, const struct conn_ops *ops, void *arg)
{
	struct conn *c = xcalloc(1, sizeof(*c));

	c->base = base;
	c->bev = bev;
	c->ops = ops;
	c->arg = arg;
	c->phase = phase;
	c->timer = evtimer_new(base, timer_cb, c);
	c->later = event_new(base, -1, 0, later_cb, c);
	if (c->timer == NULL || c->later == NULL)
		fatal("conn: out of memory");
	return c;
}

struct conn *
conn_accept(struct event_base *base, int fd, struct ssl_ctx_st *tls,
    unsigned handshake_ms, const struct conn_ops *ops, void *arg)
{
	struct bufferevent *bev;
	struct conn *c;

	/* a blocking socket would stall the loop (OpenSSL reads it itself) */
	if (util_set_nonblock(fd) == -1)
		return NULL;
	if (tls != NULL) {
		/* RFC 8314 3.3: TLS from the first octet */
		if ((bev = tls_accept(base, fd, tls)) == NULL)
			return NULL;
	} else if ((bev = bufferevent_socket_new(base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		fatal("conn: out of memory");
	}
	c = conn_new(base, bev, PHASE_OPEN, ops, arg);
	if (tls != NULL)
		start_handshake(c, handshake_ms);
	else
		bev_setup(c);
	return c;
}

/* Bind a source address, and let connect() pick the port: a pool of
 * source addresses then does not run out of ports at bind time. */
static int
bind_source(int fd, const struct sockaddr *from, socklen_t fromlen)
{
#ifdef IP_BIND_ADDRESS_NO_PORT
	int one = 1;

	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
	    sizeof(one));
#endif
	return bind(fd, from, fromlen);
}

struct conn *
conn_connect(struct event_base *base, const struct sockaddr *to,
    socklen_t tolen, const struct sockaddr *from, socklen_t fromlen,
    unsigned timeout_ms, const struct conn_ops *ops, void *arg, char *err,
    size_t errsize)
{
	struct bufferevent *bev;
	struct conn *c;
	int fd = socket(to->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);

	if (fd == -1 || (from != NULL && bind_source(fd, from, fromlen) == -1)) {
		snprintf(err, errsize, "%s", strerror(errno));
		if (fd != -1)
			close(fd);
		return NULL;
	}
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		fatal("conn: out of memory");
	c = conn_new(base, bev, PHASE_CONNECTING, ops, arg);
	bev_setup(c);
	if (bufferevent_socket_connect(c->bev, to, (int)tolen) == -1) {
		int e = errno;

		snprintf(err, errsize, "%s", e != 0 ? strerror(e) :
		    "cannot connect");
		conn_destroy(c);
		return NULL;
	}
	if (timeout_ms != 0)
		timer_in(c, timeout_ms);
	return c;
}

struct evbuffer *
conn_input(struct conn *c)
{
	return bufferevent_get_input(c->bev);
}

struct evbuffer *
conn_output(struct conn *c)
{
	return bufferevent_get_output(c->bev);
}

void
conn_set_deadline(struct conn *c, unsigned ms)
{
	int64_t now;

	if (!owner_timed(c))
		return;
	now = util_mono_ms();
	c->deadline_at = ms != 0 ? now + ms : 0;
	owner_arm(c, now);
}

void
conn_set_lowat(struct conn *c, size_t lowat)
{
	c->lowat = lowat;
	if (c->phase != PHASE_CLOSING)
		bufferevent_setwatermark(c->bev, EV_WRITE, lowat, 0);
}

void
conn_close(struct conn *c, unsigned flush_ms)
{
	if (c->close_called)
		return;
	c->close_called = true;
	c->close_owed = true;
	if (c->phase == PHASE_DONE) {
		event_active(c->later, 0, 0);
		return;
	}
	c->phase = PHASE_CLOSING;
	own_bound(c, flush_ms);
	bufferevent_disable(c->bev, EV_READ);
	/* done when empty, not when below the owner's low-water mark */
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	/* closing ends in write_cb or at the bound */
	bufferevent_enable(c->bev, EV_WRITE);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		event_active(c->later, 0, 0);
}

bool
conn_closing(const struct conn *c)
{
	return c->close_called;
}

void
conn_flush_now(struct conn *c)
{
	if (!c->tls)
		send_now(c->bev);
}

static void
conn_destroy(struct conn *c)
{
	event_free(c->timer);
	event_free(c->later);
	bufferevent_free(c->bev);
	free(c);
}

void
conn_free(struct conn **cp)
{
	struct conn *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	if (c->busy > 0) {
		/* inside a callback of c: the outermost one frees it */
		c->freeing = true;
		c->phase = PHASE_DONE;
		evtimer_del(c->timer);
		event_del(c->later);
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	conn_destroy(c);
}

/* ------------------------------------------------------------------ */
/* line framing */

enum conn_line
conn_line(struct evbuffer *in, size_t max, size_t *rawlen)
{
	size_t avail = evbuffer_get_length(in);
	size_t lim = avail < max ? avail : max;
	struct evbuffer_ptr end, lf;

	if (avail == 0 || evbuffer_ptr_set(in, &end, lim, EVBUFFER_PTR_SET) != 0)
		return CONN_LINE_MORE;
	lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
	if (lf.pos >= 0) {
		*rawlen = (size_t)lf.pos + 1;
		return CONN_LINE_OK;
	}
	if (avail < max)
		return CONN_LINE_MORE;
	evbuffer_drain(in, max);
	return CONN_LINE_TOO_LONG;
}
