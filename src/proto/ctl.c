/*
 * ctl.c - the control protocol and its dispatcher (see ctl.h): one table
 * per end, shared by every worker and by the parent.
 */
#include <unistd.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "proto/ctl.h"

struct ctl {
	struct ipc *ipc;
	const struct ctl_ops *ops;
	void *arg;
};

static const char *const type_names[] = {
	[CTL_PEER_FD - CTL_PEER_FD] = "PEER_FD",
	[CTL_SHUTDOWN - CTL_PEER_FD] = "SHUTDOWN",
	[CTL_READY - CTL_PEER_FD] = "READY",
	[CTL_RELAY_FD - CTL_PEER_FD] = "RELAY_FD",
	[CTL_TLS_FD - CTL_PEER_FD] = "TLS_FD",
	[CTL_LOG_FD - CTL_PEER_FD] = "LOG_FD",
};

const char *
ctl_type_name(unsigned type)
{
	if (type < CTL_PEER_FD || type - CTL_PEER_FD >= nitems(type_names))
		return "?";
	return type_names[type - CTL_PEER_FD];
}

/* An fd frame for callback fn (NULL: this end refuses it). */
static int
give_fd(void (*fn)(void *, int), struct ctl *c, struct ipc_frame *f)
{
	if (fn == NULL) {
		snprintf(f->why, f->whysize, "%s is not for this process",
		    ctl_type_name(f->type));
		return -1;
	}
	fn(c->arg, f->fd);
	f->fd = -1;
	return 0;
}

static int
on_peer_fd(void *arg, struct ipc_frame *f)
{
	struct ctl *c = arg;

	return give_fd(c->ops->peer_fd, c, f);
}

static int
on_relay_fd(void *arg, struct ipc_frame *f)
{
	struct ctl *c = arg;

	return give_fd(c->ops->relay_fd, c, f);
}

static int
on_tls_fd(void *arg, struct ipc_frame *f)
{
	struct ctl *c = arg;

	return give_fd(c->ops->tls_fd, c, f);
}

static int
on_log_fd(void *arg, struct ipc_frame *f)
{
	/* Every worker alike: the descriptor takes the old one's number. */
	log_reopen_fd(f->fd);
	return 0;
}

static int
on_shutdown(void *arg, struct ipc_frame *f)
{
	struct ctl *c = arg;

	c->ops->shutdown(c->arg);
	return 0;
}

static int
on_ready(void *arg, struct ipc_frame *f)
{
	struct ctl *c = arg;

	if (c->ops->ready != NULL)
		c->ops->ready(c->arg);
	return 0;
}

/* What a worker accepts from the parent. */
static const struct ipc_handler worker_frames[] = {
	{ CTL_PEER_FD, IPC_EMPTY | IPC_FD, on_peer_fd },
	{ CTL_RELAY_FD, IPC_EMPTY | IPC_FD, on_relay_fd },
	{ CTL_TLS_FD, IPC_EMPTY | IPC_FD, on_tls_fd },
	{ CTL_LOG_FD, IPC_EMPTY | IPC_FD, on_log_fd },
	{ CTL_SHUTDOWN, IPC_EMPTY, on_shutdown },
};

/* What the parent accepts from a worker. */
static const struct ipc_handler parent_frames[] = {
	{ CTL_READY, IPC_EMPTY, on_ready },
};

static void
closed(void *arg, enum ipc_end end, const char *why)
{
	struct ctl *c = arg;

	c->ops->lost(c->arg, end, why);
}

static const struct ipc_ops worker_ops = {
	.handlers = worker_frames,
	.nhandlers = nitems(worker_frames),
	.closed = closed,
};

static const struct ipc_ops parent_ops = {
	.handlers = parent_frames,
	.nhandlers = nitems(parent_frames),
	.closed = closed,
};

struct ctl *
ctl_open(struct event_base *base, int fd, enum ctl_side side,
    const struct ctl_ops *ops, void *arg)
{
	struct ctl *c = xcalloc(1, sizeof(*c));

	ASSERT(ops->lost != NULL);
	ASSERT(side == CTL_PARENT || ops->shutdown != NULL);
	c->ops = ops;
	c->arg = arg;
	c->ipc = ipc_new(base, fd, side == CTL_WORKER ? &worker_ops : &parent_ops,
	    c);
	return c;
}

int
ctl_send(struct ctl *c, enum ctl_type type, int fd)
{
	if (c == NULL) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (fd != -1)
		return ipc_send_fd(c->ipc, (uint16_t)type, 0, fd);
	return ipc_send(c->ipc, (uint16_t)type, 0, NULL, 0);
}

void
ctl_flush(struct ctl *c)
{
	if (c != NULL)
		ipc_flush_now(c->ipc);
}

void
ctl_free(struct ctl **cp)
{
	struct ctl *c = *cp;

	if (c == NULL)
		return;
	ipc_free(&c->ipc);
	free(c);
	*cp = NULL;
}
