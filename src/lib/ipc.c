/*
 * ipc.c - the channel between two of tern's processes (see ipc.h).
 *
 * Reads: one recvmsg per readable event into the input evbuffer (never
 * past in_max octets), descriptors into a FIFO; then every complete frame
 * goes through the dispatch table. A frame that announces a descriptor
 * takes the FIFO's head: the sender attaches each descriptor to the first
 * octet of its frame, and the kernel never delivers it later than that
 * octet, so the head is that frame's (an fd ahead of its frame waits).
 *
 * Writes: the output evbuffer goes out with sendmsg; a queued descriptor
 * records the stream offset of its frame, and the write that starts there
 * carries it (writes before it stop short of it).
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/util.h"

#define IPC_IN_MAX (2 * (IPC_HDR_SIZE + IPC_MAX_PAYLOAD))
#define IPC_READ_CHUNK (64 * 1024)
#define IPC_IOV_MAX 16

struct ipc_outfd {
	uint64_t at;            /* stream offset of its frame */
	int fd;
};

struct ipc {
	const struct ipc_ops *ops;
	void *arg;
	int fd;
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	uint64_t queued;        /* octets ever appended to out */
	uint64_t sent;          /* octets ever written */
	int fds_in[IPC_FDS_MAX];
	size_t nfds_in;
	struct ipc_outfd fds_out[IPC_FDS_MAX];
	size_t nfds_out;
	unsigned busy;          /* inside our own callbacks */
	bool dead;              /* closed: nothing read or written */
	bool freeing;           /* ipc_free() came while busy */
	bool paused;            /* output above out_pause: not taking frames */
	char why[160];
};

/* ---- pure parts ---- */

void
ipc_frame_put(struct evbuffer *out, uint16_t type, uint16_t flags,
    uint64_t id, const void *data, size_t len)
{
	struct ipc_hdr h = { 0 };

	ASSERT(len <= IPC_MAX_PAYLOAD);
	h.len = (uint32_t)len;
	h.type = type;
	h.flags = flags;
	h.id = id;
	if (evbuffer_add(out, &h, sizeof(h)) == -1 ||
	    (len > 0 && evbuffer_add(out, data, len) == -1))
		util_assert_fail("evbuffer_add", __FILE__, __LINE__);
}

int
ipc_hdr_decode(const unsigned char *p, struct ipc_hdr *h, const char **why)
{
	_Static_assert(sizeof(struct ipc_hdr) == IPC_HDR_SIZE, "header size");
	memcpy(h, p, sizeof(*h));
	/* Checked before anything is buffered: a peer must not make us
	 * allocate freely. */
	if (h->len > IPC_MAX_PAYLOAD) {
		*why = "frame longer than IPC_MAX_PAYLOAD";
		return -1;
	}
	if ((h->flags & ~IPC_F_FD) != 0) {
		*why = "unknown frame flags";
		return -1;
	}
	if ((h->flags & IPC_F_FD) && h->len != 0) {
		*why = "a descriptor frame with a payload";
		return -1;
	}
	return 0;
}

int
ipc_dispatch(const struct ipc_handler *tab, size_t n, void *arg,
    struct ipc_frame *f)
{
	const struct ipc_handler *h = NULL;
	const char *broken = NULL;

	for (size_t i = 0; i < n && h == NULL; i++)
		if (tab[i].type == f->type)
			h = &tab[i];
	if (h == NULL)
		broken = "unexpected";
	else if ((h->rules & IPC_EMPTY) && f->len != 0)
		broken = "with a payload";
	else if ((h->rules & IPC_FD) && f->fd == -1)
		broken = "without its descriptor";
	else if (!(h->rules & IPC_FD) && f->fd != -1)
		broken = "with a descriptor";
	else if ((h->rules & IPC_ID) && f->id == 0)
		broken = "with id 0";
	if (broken != NULL) {
		snprintf(f->why, f->whysize, "frame type %u %s", (unsigned)f->type,
		    broken);
		return -1;
	}
	if (f->whysize > 0)
		f->why[0] = '\0';
	if (h->fn(arg, f) == -1) {
		if (f->whysize > 0 && f->why[0] == '\0')
			snprintf(f->why, f->whysize, "frame type %u refused",
			    (unsigned)f->type);
		return -1;
	}
	return 0;
}

/* ---- descriptor passing ---- */

ssize_t
ipc_sendmsg(int sock, const struct iovec *iov, int n, int fd, int flags)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh = { 0 };
	ssize_t w;

	mh.msg_iov = (struct iovec *)(uintptr_t)iov;
	mh.msg_iovlen = (size_t)n;
	if (fd != -1) {
		struct cmsghdr *c;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		w = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
	while (w == -1 && errno == EINTR);
	return w;
}

ssize_t
ipc_recvmsg(int sock, const struct iovec *iov, int n, int *fds, size_t *nfds,
    size_t maxfds)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * IPC_FDS_MAX)];
	} cbuf;
	struct msghdr mh = { 0 };
	bool bad = false;
	ssize_t r;

	*nfds = 0;
	mh.msg_iov = (struct iovec *)(uintptr_t)iov;
	mh.msg_iovlen = (size_t)n;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	do
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (r == -1 && errno == EINTR);
	if (r == -1)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL;
	    c = CMSG_NXTHDR(&mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0)) {
			bad = true;
			continue;
		}
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*nfds < maxfds)
				fds[(*nfds)++] = fd;
			else {
				close(fd);   /* never leak what we cannot hold */
				bad = true;
			}
		}
	}
	if (bad || (mh.msg_flags & MSG_CTRUNC)) {
		while (*nfds > 0)
			close(fds[--*nfds]);
		errno = EPROTO;
		return -1;
	}
	return r;
}

/* ---- the channel ---- */

static void ipc_read_cb(evutil_socket_t fd, short ev, void *arg);
static void ipc_write_cb(evutil_socket_t fd, short ev, void *arg);

struct ipc *
ipc_new(struct event_base *base, int fd, const struct ipc_ops *ops, void *arg)
{
	struct ipc *c = xcalloc(1, sizeof(*c));

	ASSERT(fd >= 0);
	(void)util_set_nonblock(fd);
	(void)util_set_cloexec(fd);
	c->ops = ops;
	c->arg = arg;
	c->fd = fd;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, ipc_read_cb, c);
	c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, ipc_write_cb, c);
	if (c->in == NULL || c->out == NULL || c->rev == NULL || c->wev == NULL)
		util_assert_fail("ipc_new: out of memory", __FILE__, __LINE__);
	event_add(c->rev, NULL);
	return c;
}

/* Close the descriptors received and not handed to a frame. */
static void
ipc_close_fds_in(struct ipc *c)
{
	for (size_t i = 0; i < c->nfds_in; i++)
		close(c->fds_in[i]);
	c->nfds_in = 0;
}

static void
ipc_release(struct ipc *c)
{
	event_free(c->rev);
	event_free(c->wev);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	ipc_close_fds_in(c);
	for (size_t i = 0; i < c->nfds_out; i++)
		close(c->fds_out[i].fd);
	close(c->fd);
	free(c);
}

void
ipc_free(struct ipc **cp)
{
	struct ipc *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	event_del(c->rev);
	event_del(c->wev);
	if (c->busy > 0)
		c->freeing = true;   /* our caller's frame is still on the stack */
	else
		ipc_release(c);
}

/* The channel is dead: stop, and tell the owner once. */
static void
ipc_fail(struct ipc *c, enum ipc_end end, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	event_del(c->rev);
	event_del(c->wev);
	if (!c->freeing && c->ops->closed != NULL)
		c->ops->closed(c->arg, end, why);
}

bool
ipc_is_open(const struct ipc *c)
{
	return c != NULL && !c->dead && !c->freeing;
}

size_t
ipc_out_len(const struct ipc *c)
{
	return evbuffer_get_length(c->out);
}

static void
ipc_want_write(struct ipc *c)
{
	if (!c->dead && !c->freeing && evbuffer_get_length(c->out) > 0)
		event_add(c->wev, NULL);
}

int
ipc_send(struct ipc *c, uint16_t type, uint64_t id, const void *data,
    size_t len)
{
	if (!ipc_is_open(c))
		return -1;
	ipc_frame_put(c->out, type, 0, id, data, len);
	c->queued += IPC_HDR_SIZE + len;
	ipc_want_write(c);
	return 0;
}

int
ipc_send_fd(struct ipc *c, uint16_t type, uint64_t id, int fd)
{
	if (!ipc_is_open(c) || fd == -1 || c->nfds_out == IPC_FDS_MAX) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	c->fds_out[c->nfds_out].at = c->queued;
	c->fds_out[c->nfds_out].fd = fd;
	c->nfds_out++;
	ipc_frame_put(c->out, type, IPC_F_FD, id, NULL, 0);
	c->queued += IPC_HDR_SIZE;
	ipc_want_write(c);
	return 0;
}

int
ipc_send_buffer(struct ipc *c, struct evbuffer *frames)
{
	size_t len = evbuffer_get_length(frames);

	if (!ipc_is_open(c))
		return -1;
	if (evbuffer_add_buffer(c->out, frames) == -1)
		util_assert_fail("evbuffer_add_buffer", __FILE__, __LINE__);
	c->queued += len;
	ipc_want_write(c);
	return 0;
}

/*
 * Write what the socket takes now. 0 (all written or it would block),
 * -1 on an error (errno).
 */
static int
ipc_flush(struct ipc *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		struct evbuffer_iovec v[IPC_IOV_MAX];
		struct iovec iov[IPC_IOV_MAX];
		size_t limit = evbuffer_get_length(c->out), total = 0;
		int fd = -1, n;
		ssize_t w;

		/* A descriptor goes with the first octet of its frame. */
		if (c->nfds_out > 0) {
			if (c->fds_out[0].at == c->sent) {
				fd = c->fds_out[0].fd;
				if (c->nfds_out > 1)
					limit = (size_t)(c->fds_out[1].at - c->sent);
			} else {
				limit = (size_t)(c->fds_out[0].at - c->sent);
			}
		}
		n = evbuffer_peek(c->out, (ev_ssize_t)limit, NULL, v, IPC_IOV_MAX);
		if (n > IPC_IOV_MAX)
			n = IPC_IOV_MAX;
		for (int i = 0; i < n; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
			if (total + iov[i].iov_len > limit)
				iov[i].iov_len = limit - total;
			total += iov[i].iov_len;
		}
		w = ipc_sendmsg(c->fd, iov, n, fd, MSG_DONTWAIT);
		if (w == -1)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		evbuffer_drain(c->out, (size_t)w);
		c->sent += (uint64_t)w;
		if (fd != -1) {
			close(fd);
			memmove(&c->fds_out[0], &c->fds_out[1],
			    (c->nfds_out - 1) * sizeof(c->fds_out[0]));
			c->nfds_out--;
		}
	}
	return 0;
}

void
ipc_flush_now(struct ipc *c)
{
	if (ipc_is_open(c))
		(void)ipc_flush(c);
}

/* Read once: 1 octets came, 0 nothing now, -1 an error, -2 EOF. */
static int
ipc_fill(struct ipc *c)
{
	size_t room = IPC_IN_MAX - evbuffer_get_length(c->in);
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	int fds[IPC_FDS_MAX];
	size_t nfds;
	ssize_t r;
	int n, e;

	if (room == 0)
		return 0;
	if (room > IPC_READ_CHUNK)
		room = IPC_READ_CHUNK;
	n = evbuffer_reserve_space(c->in, (ev_ssize_t)room, v, 2);
	if (n <= 0)
		util_assert_fail("evbuffer_reserve_space", __FILE__, __LINE__);
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	r = ipc_recvmsg(c->fd, iov, n, fds, &nfds, IPC_FDS_MAX - c->nfds_in);
	if (r <= 0) {
		evbuffer_commit_space(c->in, v, 0);
		if (r == 0)
			return -2;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		e = errno;
		snprintf(c->why, sizeof(c->why), "%s", e == EPROTO ?
		    "more descriptors than frames" : strerror(e));
		errno = e;
		return -1;
	}
	for (int i = 0; i < n; i++) {
		size_t take = (size_t)r < v[i].iov_len ? (size_t)r : v[i].iov_len;

		v[i].iov_len = take;
		r -= (ssize_t)take;
	}
	evbuffer_commit_space(c->in, v, n);
	memcpy(&c->fds_in[c->nfds_in], fds, nfds * sizeof(int));
	c->nfds_in += nfds;
	return 1;
}

/* Take and dispatch every complete frame, unless paused or dead. */
static void
ipc_take(struct ipc *c)
{
	const struct ipc_ops *ops = c->ops;

	while (!c->dead && !c->freeing) {
		unsigned char hb[IPC_HDR_SIZE];
		struct ipc_hdr h;
		struct ipc_frame f = { 0 };
		const char *why;
		int r;

		if (ops->out_pause != 0 &&
		    evbuffer_get_length(c->out) > ops->out_pause) {
			/* The peer does not read our answers: stop taking
			 * its requests until it does (ipc_write_cb). */
			c->paused = true;
			event_del(c->rev);
			return;
		}
		if (evbuffer_get_length(c->in) == 0 && c->nfds_in > 0) {
			/* A descriptor arrives with the first octets sent
			 * beside it, which belong to the frame that announces
			 * it: with every octet taken, one left is a stray. */
			ipc_close_fds_in(c);
			ipc_fail(c, IPC_VIOLATION,
			    "a descriptor no frame announced");
			return;
		}
		if (evbuffer_copyout(c->in, hb, sizeof(hb)) < (ev_ssize_t)sizeof(hb))
			return;
		if (ipc_hdr_decode(hb, &h, &why) == -1) {
			ipc_fail(c, IPC_VIOLATION, why);
			return;
		}
		if (evbuffer_get_length(c->in) < IPC_HDR_SIZE + (size_t)h.len)
			return;
		f.type = h.type;
		f.id = h.id;
		f.len = h.len;
		f.fd = -1;
		f.why = c->why;
		f.whysize = sizeof(c->why);
		if (h.flags & IPC_F_FD) {
			if (c->nfds_in == 0) {
				ipc_fail(c, IPC_VIOLATION,
				    "a frame without the descriptor it announces");
				return;
			}
			f.fd = c->fds_in[0];
			memmove(&c->fds_in[0], &c->fds_in[1],
			    (c->nfds_in - 1) * sizeof(int));
			c->nfds_in--;
		}
		evbuffer_drain(c->in, IPC_HDR_SIZE);
		f.data = h.len > 0 ? evbuffer_pullup(c->in, h.len) :
		    (const unsigned char *)"";
		if (f.data == NULL)
			util_assert_fail("evbuffer_pullup", __FILE__, __LINE__);
		r = ipc_dispatch(ops->handlers, ops->nhandlers, c->arg, &f);
		if (f.fd != -1)
			close(f.fd);
		evbuffer_drain(c->in, h.len);
		if (r == -1) {
			ipc_fail(c, IPC_VIOLATION, c->why);
			return;
		}
	}
}

/* Leave a callback: free if asked meanwhile. */
static void
ipc_leave(struct ipc *c)
{
	if (--c->busy == 0 && c->freeing)
		ipc_release(c);
}

static void
ipc_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct ipc *c = arg;
	int r;

	c->busy++;
	r = ipc_fill(c);
	if (r == -1) {
		ipc_fail(c, errno == EPROTO ? IPC_VIOLATION : IPC_ERROR, c->why);
	} else {
		ipc_take(c);
		if (r == -2 && !c->dead && !c->paused)
			ipc_fail(c, IPC_EOF, "closed by the peer");
	}
	ipc_leave(c);
}

static void
ipc_write_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct ipc *c = arg;
	const struct ipc_ops *ops = c->ops;

	c->busy++;
	if (ipc_flush(c) == -1) {
		int e = errno;

		snprintf(c->why, sizeof(c->why), "%s", strerror(e));
		ipc_fail(c, e == EPIPE || e == ECONNRESET ? IPC_EOF : IPC_ERROR,
		    c->why);
	} else {
		if (evbuffer_get_length(c->out) == 0)
			event_del(c->wev);
		if (evbuffer_get_length(c->out) <= ops->out_low) {
			if (c->paused) {
				c->paused = false;
				event_add(c->rev, NULL);
				ipc_take(c);
			}
			if (!c->dead && !c->freeing && ops->drained != NULL)
				ops->drained(c->arg);
		}
	}
	ipc_leave(c);
}
