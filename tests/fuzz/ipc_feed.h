/*
 * ipc_feed.h - for the fuzz targets that feed a real channel end
 * (lib/ipc.h) arbitrary octets from its peer: a socketpair whose far end
 * writes the input in chunks the input itself chooses, some with a
 * descriptor attached, and sometimes reads what the channel answered, and
 * a check that no descriptor leaks. Static functions: each target is
 * built alone.
 *
 * Input: chunks of [control octet][length octet][length octets].
 * Control bits: 1 attach a descriptor (/dev/null) to this chunk; 2 run
 * the loop after it; 4 read (and drop) what the channel sent; 8 stop
 * writing here and close the peer (EOF).
 */
#ifndef TERN_IPC_FEED_H
#define TERN_IPC_FEED_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

#include "fuzz.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"

static struct event_base *feed_base;
static int feed_lowest_free;   /* the first free descriptor number */

static int
feed_first_free(void)
{
	int fd = dup(0);

	CHECK(fd >= 0);
	close(fd);
	return fd;
}

/* Once per process: the loop, quiet logs, and a log file descriptor so
 * that a LOG_FD frame replaces it instead of keeping a new one. */
static void
feed_init(void)
{
	if (feed_base != NULL)
		return;
	feed_base = event_base_new();
	CHECK(feed_base != NULL);
	log_set_level(LOG_LEVEL_ERR);
	log_set_file_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
	feed_lowest_free = feed_first_free();
}

/* A socketpair: sv[0] for the channel under test, sv[1] the peer. Small
 * buffers, so answers back up and back-pressure is exercised. */
static void
feed_pair(int sv[2])
{
	int small = 4096;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	(void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	CHECK(util_set_nonblock(sv[1]) == 0);
}

static void
feed_loop(int rounds)
{
	for (int i = 0; i < rounds; i++)
		event_base_loop(feed_base, EVLOOP_NONBLOCK);
}

static void
feed_drain(int sock)
{
	char sink[16384];

	while (read(sock, sink, sizeof(sink)) > 0)
		;
}

/*
 * Write the input's chunks to peer; *alive tells whether the channel
 * still listens. Closes peer at the end (or at a chunk with bit 8).
 */
static void
feed_run(int peer, const uint8_t *data, size_t size, const bool *alive)
{
	size_t off = 0;

	while (off + 2 <= size && *alive) {
		unsigned ctl = data[off], len = data[off + 1];
		struct iovec iov;
		int fd = -1;
		size_t done = 0;

		off += 2;
		if (len > size - off)
			len = (unsigned)(size - off);
		if (ctl & 8)
			break;
		if (ctl & 1)
			fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		while (done < len || (len == 0 && fd != -1)) {
			ssize_t w;

			iov.iov_base = (void *)(uintptr_t)(data + off + done);
			iov.iov_len = len - done;
			w = ipc_sendmsg(peer, &iov, 1, fd, MSG_DONTWAIT);
			if (w > 0 || (w == 0 && len == 0)) {
				done += (size_t)w;
				if (fd != -1)
					close(fd);
				fd = -1;
				if (len == 0)
					break;
				continue;
			}
			if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK)
				break;
			/* Full: let the channel read (and answer). */
			feed_drain(peer);
			feed_loop(1);
			if (!*alive)
				break;
		}
		if (fd != -1)
			close(fd);
		off += len;
		if (ctl & 4)
			feed_drain(peer);
		if (ctl & 2)
			feed_loop(1);
	}
	close(peer);
	/* Let the channel take what is left, and see the EOF. */
	for (int i = 0; i < 64 && *alive; i++)
		feed_loop(1);
}

/* After the channel is freed: no descriptor may have been left open. */
static void
feed_check_fds(void)
{
	CHECK(feed_first_free() == feed_lowest_free);
}

#endif
