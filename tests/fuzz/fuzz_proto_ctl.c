/*
 * fuzz_proto_ctl.c - libFuzzer target for the control protocol's
 * dispatcher (proto/ctl.c) behind a real channel end: the parent's
 * frames as a worker reads them, or a worker's as the parent reads them.
 *
 *   make build/fuzz/fuzz_proto_ctl
 *   ./build/fuzz/fuzz_proto_ctl tests/fuzz/corpus/fuzz_proto_ctl -max_total_time=60
 *
 * Input: one octet choosing the end (bit 0: the parent; bit 1: a worker
 * that takes relay channels, like the queue, else TLS, like smtp), then
 * chunks as ipc_feed.h reads them. Checks, besides ASan/UBSan:
 * - a callback runs only for a frame its end accepts, with a descriptor
 *   exactly when the frame carries one;
 * - the end is lost at most once, and nothing is called after;
 * - no descriptor is left open (the callbacks close theirs).
 */
#include "ipc_feed.h"
#include "proto/ctl.h"

struct fz {
	struct ctl *ctl;
	bool alive;
	bool parent, queue;
	int lost;
};

static void
take_fd(struct fz *z, int fd, bool allowed)
{
	CHECK(z->alive && allowed && fd >= 0 && fcntl(fd, F_GETFD) != -1);
	close(fd);
}

static void on_peer(void *a, int fd) { take_fd(a, fd, !((struct fz *)a)->parent); }
static void on_relay(void *a, int fd) { take_fd(a, fd, ((struct fz *)a)->queue); }
static void on_tls(void *a, int fd) { take_fd(a, fd, !((struct fz *)a)->queue); }

static void
on_shutdown(void *a)
{
	struct fz *z = a;

	CHECK(z->alive && !z->parent);
}

static void
on_ready(void *a)
{
	struct fz *z = a;

	CHECK(z->alive && z->parent);
}

static void
on_lost(void *a, enum ipc_end end, const char *why)
{
	struct fz *z = a;

	CHECK(z->alive && z->lost == 0 && why != NULL);
	z->lost++;
	z->alive = false;
}

static const struct ctl_ops queue_ops = {
	.peer_fd = on_peer, .relay_fd = on_relay, .shutdown = on_shutdown,
	.lost = on_lost,
};
static const struct ctl_ops smtp_ops = {
	.peer_fd = on_peer, .tls_fd = on_tls, .shutdown = on_shutdown,
	.lost = on_lost,
};
static const struct ctl_ops parent_ops = {
	.ready = on_ready, .lost = on_lost,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz z = { .alive = true };
	int sv[2];

	if (size < 1)
		return 0;
	feed_init();
	z.parent = data[0] & 1;
	z.queue = (data[0] & 2) != 0;
	feed_pair(sv);
	z.ctl = ctl_open(feed_base, sv[0], z.parent ? CTL_PARENT : CTL_WORKER,
	    z.parent ? &parent_ops : z.queue ? &queue_ops : &smtp_ops, &z);
	feed_run(sv[1], data + 1, size - 1, &z.alive);
	ctl_free(&z.ctl);
	feed_loop(1);
	feed_check_fds();
	return 0;
}
