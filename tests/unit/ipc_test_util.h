/*
 * ipc_test_util.h - helpers for the unit tests that fork one of tern's
 * processes (queue, relay) and talk to it over socketpairs in ipc.h frames:
 * fork with the channels, reap at shutdown, write a frame, read one back,
 * and play the parent's end of the control channel (blocking).
 * Static functions: each tests/unit/test_*.c is built alone.
 *
 * The including file defines WAIT_MS, how long a frame's payload may take
 * once its header has come.
 */
#ifndef TERN_IPC_TEST_UTIL_H
#define TERN_IPC_TEST_UTIL_H

#include "unit.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "lib/ipc.h"
#include "lib/util.h"

#ifndef WAIT_MS
#error "define WAIT_MS before including ipc_test_util.h"
#endif

/* Fork with n fresh socketpairs sp[0..n-1]: the child keeps end [1] of
 * each, the parent end [0] (the other end is closed on each side). Returns
 * fork()'s value. */
static inline pid_t
ipc_test_fork(int sp[][2], size_t n)
{
	pid_t pid;

	for (size_t i = 0; i < n; i++)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp[i]), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	for (size_t i = 0; i < n; i++)
		close(sp[i][pid == 0 ? 0 : 1]);
	return pid;
}

/* Wait for the child *pid (asked to shut down) to exit; its exit status.
 * *pid becomes -1. */
static inline int
ipc_test_reap(pid_t *pid)
{
	int status;

	assert_int_equal(waitpid(*pid, &status, 0), *pid);
	*pid = -1;
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static inline void
send_frame(int fd, uint16_t type, uint64_t id, const void *p, size_t len)
{
	struct evbuffer *b = evbuffer_new();

	ipc_frame_put(b, type, 0, id, p, len);
	assert_int_equal(util_write_all(fd, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b)), 0);
	evbuffer_free(b);
}

/* A control frame (proto/ctl.h) on the blocking socket sock, as the
 * parent sends it: with fd attached unless -1 (the caller keeps fd). */
static inline int
send_ctl(int sock, uint16_t type, int fd)
{
	struct ipc_hdr h = { .type = type, .flags = fd != -1 ? IPC_F_FD : 0 };
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };

	return ipc_sendmsg(sock, &iov, 1, fd, 0) == (ssize_t)sizeof(h) ? 0 : -1;
}

/* One control frame from a worker: 1 with its type (and a descriptor in
 * *fd, or -1), 0 at EOF, -1 on an error. */
static inline int
recv_ctl(int sock, uint16_t *type, int *fd)
{
	struct ipc_hdr h;
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	int fds[IPC_FDS_MAX];
	size_t nfds;
	ssize_t n = ipc_recvmsg(sock, &iov, 1, fds, &nfds, IPC_FDS_MAX);

	*fd = nfds > 0 ? fds[0] : -1;
	for (size_t i = 1; i < nfds; i++)
		close(fds[i]);
	if (n <= 0)
		return (int)n;
	if (n != (ssize_t)sizeof(h))
		return -1;
	*type = h.type;
	return 1;
}

/* len bytes into buf, waiting up to ms for each read: 1 when they came,
 * 0 on EOF, -1 on timeout. */
static inline int
read_full(int fd, void *buf, size_t len, int ms)
{
	char *p = buf;

	while (len > 0) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pfd, 1, ms) != 1)
			return -1;
		n = read(fd, p, len);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail_msg("read: %s", strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
	return 1;
}

/* One frame into h and buf (NUL-terminated), its header within ms: 1, 0 on
 * EOF, -1 on timeout. */
static inline int
recv_frame_ms(int fd, struct ipc_hdr *h, char *buf, size_t size, int ms)
{
	int rc;

	if ((rc = read_full(fd, h, sizeof(*h), ms)) != 1)
		return rc;
	assert_true(h->len < size);
	if (h->len > 0 && (rc = read_full(fd, buf, h->len, WAIT_MS)) != 1)
		return rc;
	buf[h->len] = '\0';
	return 1;
}

#endif
