/*
 * fuzz_ipc.c - libFuzzer target for the channel's frame reader
 * (lib/ipc.c): a real channel end reads what its peer writes, arbitrary
 * octets in chunks the input chooses, some carrying descriptors.
 *
 *   make build/fuzz/fuzz_ipc
 *   ./build/fuzz/fuzz_ipc tests/fuzz/corpus/fuzz_ipc -max_total_time=60
 *
 * Input: see ipc_feed.h. The end's table has a type of each kind of rule
 * (none, empty with a descriptor, nonzero id, a handler that refuses, one
 * that answers with a frame as long as the input asks, one that frees
 * the channel from inside its handler); its output pauses above 4 KiB.
 * Checks, besides ASan/UBSan:
 * - a handler sees only frames its row allows (rules enforced), with the
 *   announced length readable;
 * - the channel ends at most once, and never calls back after that;
 * - no descriptor is left open once the channel is freed.
 */
#include "ipc_feed.h"

struct fz {
	struct ipc *c;
	bool alive;
	int closed;
	unsigned frames;
};

static int
on_plain(void *arg, struct ipc_frame *f)
{
	struct fz *z = arg;
	unsigned sum = 0;

	CHECK(z->alive && f->fd == -1 && f->len <= IPC_MAX_PAYLOAD);
	for (size_t i = 0; i < f->len; i++)
		sum += f->data[i];
	z->frames += sum & 1;
	return 0;
}

static int
on_fd(void *arg, struct ipc_frame *f)
{
	struct fz *z = arg;

	CHECK(z->alive && f->fd >= 0 && f->len == 0);
	CHECK(fcntl(f->fd, F_GETFD) != -1);
	if (f->id & 1) {   /* keep it: then it is ours to close */
		close(f->fd);
		f->fd = -1;
	}
	return 0;
}

static int
on_id(void *arg, struct ipc_frame *f)
{
	CHECK(f->id != 0 && f->fd == -1);
	return 0;
}

static int
on_refuse(void *arg, struct ipc_frame *f)
{
	if (f->len > 0 && f->data[0] == 'x') {
		snprintf(f->why, f->whysize, "refused");
		return -1;
	}
	return 0;
}

static int
on_answer(void *arg, struct ipc_frame *f)
{
	struct fz *z = arg;
	static unsigned char big[IPC_MAX_PAYLOAD];
	size_t n = f->len >= 2 ? ((size_t)f->data[0] << 8 | f->data[1]) * 8 : 0;

	CHECK(ipc_send(z->c, 1, f->id, big, n > IPC_MAX_PAYLOAD ?
	    IPC_MAX_PAYLOAD : n) == 0);
	if (f->len >= 3 && f->data[2] == 'f') {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

		CHECK(fd >= 0);
		(void)ipc_send_fd(z->c, 2, f->id | 1, fd);
	}
	return 0;
}

static int
on_free(void *arg, struct ipc_frame *f)
{
	struct fz *z = arg;

	ipc_free(&z->c);
	z->alive = false;
	return 0;
}

static const struct ipc_handler frames[] = {
	{ 1, 0, on_plain },
	{ 2, IPC_EMPTY | IPC_FD, on_fd },
	{ 3, IPC_ID, on_id },
	{ 4, 0, on_refuse },
	{ 5, IPC_ID, on_answer },
	{ 6, IPC_EMPTY, on_free },
};

static void
closed(void *arg, enum ipc_end end, const char *why)
{
	struct fz *z = arg;

	CHECK(z->alive && z->closed == 0);
	CHECK(why != NULL && why[0] != '\0');
	z->closed++;
	z->alive = false;
}

static void
drained(void *arg)
{
	struct fz *z = arg;

	CHECK(z->alive);
}

static const struct ipc_ops ops = {
	.handlers = frames,
	.nhandlers = sizeof(frames) / sizeof(frames[0]),
	.closed = closed,
	.drained = drained,
	.out_pause = 4096,
	.out_low = 1024,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz z = { .alive = true };
	int sv[2];

	feed_init();
	feed_pair(sv);
	z.c = ipc_new(feed_base, sv[0], &ops, &z);
	feed_run(sv[1], data, size, &z.alive);
	ipc_free(&z.c);
	feed_loop(1);
	feed_check_fds();
	return 0;
}
