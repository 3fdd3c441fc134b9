/*
 * relay.c - the relay process (see relay.h).
 *
 * XXX placeholder while outbound delivery is being written: it answers
 * every job with a temporary failure, so queued relay mail stays queued
 * and is retried, exactly as before the relay existed.
 */
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "ipc.h"
#include "log.h"
#include "relay.h"
#include "util.h"

struct relay {
	const struct config *cfg;
	struct event_base *base;
	struct bufferevent *queue;
	int status;
};

struct relay *
relay_new(const struct config *cfg, char *err, size_t errsize)
{
	struct relay *r = xcalloc(1, sizeof(*r));

	r->cfg = cfg;
	return r;
}

void
relay_free(struct relay **rp)
{
	free(*rp);
	*rp = NULL;
}

static void
queue_read_cb(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct ipc_msg m;
	int n;

	while ((n = ipc_read(bufferevent_get_input(bev), &m)) == 1) {
		if (m.hdr.type == IPC_RELAY_END) {
			static const char res[] = "via - - -\n";
			ipc_write(bufferevent_get_output(bev), IPC_RELAY_RESULT,
			    m.hdr.id, res, sizeof(res) - 1);
		}
		ipc_msg_clear(&m);
	}
	if (n < 0) {
		log_err("relay: protocol error from the queue");
		event_base_loopbreak(r->base);
	}
}

static void
queue_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct relay *r = arg;

	bufferevent_free(r->queue);
	r->queue = NULL;
}

static void
set_queue(struct relay *r, int fd)
{
	if (r->queue != NULL)
		bufferevent_free(r->queue);
	util_set_nonblock(fd);
	r->queue = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->queue, queue_read_cb, NULL, queue_event_cb, r);
	bufferevent_enable(r->queue, EV_READ | EV_WRITE);
}

static void
ctl_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;
	enum ipc_type type;
	int pfd;

	if (ipc_recv_fd(fd, &type, &pfd) <= 0 || type == IPC_CTL_SHUTDOWN) {
		if (pfd != -1)
			close(pfd);
		event_base_loopbreak(r->base);
		return;
	}
	if (type == IPC_CTL_PEER_FD && pfd != -1)
		set_queue(r, pfd);
	else if (pfd != -1)
		close(pfd);
}

static void
sig_cb(evutil_socket_t sig, short ev, void *arg)
{
	event_base_loopbreak(((struct relay *)arg)->base);
}

int
relay_run(struct relay *r, int ctl_fd, int queue_fd)
{
	struct event *ctl, *term, *intr;

	signal(SIGPIPE, SIG_IGN);
	r->base = event_base_new();
	if (r->base == NULL)
		fatal("relay: event_base_new failed");
	if (queue_fd != -1)
		set_queue(r, queue_fd);
	ctl = event_new(r->base, ctl_fd, EV_READ | EV_PERSIST, ctl_cb, r);
	term = evsignal_new(r->base, SIGTERM, sig_cb, r);
	intr = evsignal_new(r->base, SIGINT, sig_cb, r);
	event_add(ctl, NULL);
	event_add(term, NULL);
	event_add(intr, NULL);
	log_info("relay event=placeholder");
	event_base_dispatch(r->base);
	if (r->queue != NULL)
		bufferevent_free(r->queue);
	event_free(ctl);
	event_free(term);
	event_free(intr);
	event_base_free(r->base);
	close(ctl_fd);
	return r->status;
}
