/*
 * ipc.c - framed messages between tern's processes (see ipc.h).
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"

void
ipc_write(struct evbuffer *out, enum ipc_type type, uint64_t id,
    const void *payload, size_t len)
{
	struct ipc_hdr h = { 0 };

	ASSERT(len <= IPC_MAX_PAYLOAD);
	h.len = (uint32_t)len;
	h.type = (uint16_t)type;
	h.id = id;
	evbuffer_add(out, &h, sizeof(h));
	if (len > 0)
		evbuffer_add(out, payload, len);
}

int
ipc_read(struct evbuffer *in, struct ipc_msg *msg)
{
	struct ipc_hdr h;

	if (evbuffer_get_length(in) < sizeof(h))
		return 0;
	evbuffer_copyout(in, &h, sizeof(h));
	/* Check before buffering: a peer must not make us allocate freely. */
	if (h.len > IPC_MAX_PAYLOAD || h.flags != 0)
		return -1;
	if (evbuffer_get_length(in) < sizeof(h) + h.len)
		return 0;
	evbuffer_drain(in, sizeof(h));
	msg->hdr = h;
	msg->payload = xmalloc((size_t)h.len + 1);
	evbuffer_remove(in, msg->payload, h.len);
	msg->payload[h.len] = '\0';
	return 1;
}

void
ipc_msg_clear(struct ipc_msg *msg)
{
	free(msg->payload);
	msg->payload = NULL;
}

int
ipc_send_fd(int sock, enum ipc_type type, int fd)
{
	struct ipc_hdr h = { 0 };
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh = { 0 };
	ssize_t n;

	h.type = (uint16_t)type;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
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
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(h))
		return -1;
	return 0;
}

int
ipc_recv_fd(int sock, enum ipc_type *type, int *fd)
{
	struct ipc_hdr h;
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh = { 0 };
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n == 0)
		return 0;   /* peer closed */
	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	}
	if (n != (ssize_t)sizeof(h) || h.len != 0 || h.flags != 0 ||
	    (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		/* never leak a descriptor that came with a bad frame */
		if (*fd != -1)
			close(*fd);
		*fd = -1;
		return -1;
	}
	*type = (enum ipc_type)h.type;
	return 1;
}
