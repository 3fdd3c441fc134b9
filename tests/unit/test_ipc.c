/*
 * test_ipc.c - the channel between tern's processes (lib/ipc.h): the
 * header check and the dispatch rules (table-driven, named cases), and
 * two real channels on a socketpair in one event loop: frames both ways
 * up to the largest payload, descriptors in order, every violation
 * closing the channel, back-pressure, and ipc_free() from inside a
 * handler.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/util.h"
#include "proto_test_util.h"

/* ---- ipc_hdr_decode ---- */

struct hdr_case {
	const char *name;
	uint32_t len;
	uint16_t flags;
	int want;
};

static const struct hdr_case hdr_cases[] = {
	{ "empty frame", 0, 0, 0 },
	{ "largest payload", IPC_MAX_PAYLOAD, 0, 0 },
	{ "one octet too long", IPC_MAX_PAYLOAD + 1, 0, -1 },
	{ "huge length", UINT32_MAX, 0, -1 },
	{ "descriptor frame", 0, IPC_F_FD, 0 },
	{ "descriptor frame with payload", 1, IPC_F_FD, -1 },
	{ "unknown flag", 0, 0x2, -1 },
	{ "high flag", 0, 0x8000, -1 },
};

static void
test_hdr_table(void **state)
{
	for (size_t i = 0; i < nitems(hdr_cases); i++) {
		const struct hdr_case *c = &hdr_cases[i];
		struct ipc_hdr in = { .len = c->len, .type = 7, .flags = c->flags,
		    .id = 0x1122334455667788ULL }, out;
		unsigned char raw[IPC_HDR_SIZE];
		const char *why = NULL;
		int got;

		memcpy(raw, &in, sizeof(raw));
		got = ipc_hdr_decode(raw, &out, &why);
		if (got != c->want)
			fail_msg("%s: want %d, got %d", c->name, c->want, got);
		if (got == 0 && (out.len != c->len || out.type != 7 ||
		    out.id != in.id))
			fail_msg("%s: fields changed", c->name);
		if (got == -1 && (why == NULL || why[0] == '\0'))
			fail_msg("%s: no reason", c->name);
	}
}

/* ---- ipc_dispatch ---- */

static int handled;

static int
count_fn(void *arg, struct ipc_frame *f)
{
	handled++;
	return 0;
}

static int
refuse_fn(void *arg, struct ipc_frame *f)
{
	snprintf(f->why, f->whysize, "refused by the handler");
	return -1;
}

static const struct ipc_handler table[] = {
	{ 1, 0, count_fn },
	{ 2, IPC_EMPTY, count_fn },
	{ 3, IPC_EMPTY | IPC_FD, count_fn },
	{ 4, IPC_ID, count_fn },
	{ 5, 0, refuse_fn },
};

struct dispatch_case {
	const char *name;
	uint16_t type;
	uint64_t id;
	size_t len;
	bool fd;
	int want;
	const char *want_why;   /* substring */
};

static const struct dispatch_case dispatch_cases[] = {
	{ "plain", 1, 0, 10, false, 0, NULL },
	{ "empty as required", 2, 0, 0, false, 0, NULL },
	{ "payload where empty", 2, 0, 1, false, -1, "with a payload" },
	{ "descriptor as required", 3, 0, 0, true, 0, NULL },
	{ "descriptor missing", 3, 0, 0, false, -1, "without its descriptor" },
	{ "descriptor not wanted", 1, 0, 0, true, -1, "with a descriptor" },
	{ "id as required", 4, 9, 0, false, 0, NULL },
	{ "id 0 where required", 4, 0, 0, false, -1, "with id 0" },
	{ "unknown type", 6, 0, 0, false, -1, "frame type 6 unexpected" },
	{ "type 0", 0, 0, 0, false, -1, "unexpected" },
	{ "handler refuses", 5, 0, 0, false, -1, "refused by the handler" },
};

static void
test_dispatch_table(void **state)
{
	for (size_t i = 0; i < nitems(dispatch_cases); i++) {
		const struct dispatch_case *c = &dispatch_cases[i];
		unsigned char data[16] = { 0 };
		char why[128] = "";
		struct ipc_frame f = { .type = c->type, .id = c->id,
		    .data = data, .len = c->len, .fd = c->fd ? 0 : -1,
		    .why = why, .whysize = sizeof(why) };
		int before = handled, got;

		got = ipc_dispatch(table, nitems(table), NULL, &f);
		if (got != c->want)
			fail_msg("%s: want %d, got %d (%s)", c->name, c->want, got,
			    why);
		if (got == 0 && handled != before + 1)
			fail_msg("%s: handler not called", c->name);
		if (got == -1 && c->type != 5 && handled != before)
			fail_msg("%s: handler called for a broken frame", c->name);
		if (c->want_why != NULL && strstr(why, c->want_why) == NULL)
			fail_msg("%s: want reason '%s', got '%s'", c->name,
			    c->want_why, why);
	}
}

/* ---- two channels on a socketpair ---- */

#define MAX_SEEN 64

struct end {
	struct event_base *base;
	struct ipc *c;
	struct ipc **self;       /* for the freeing handler */
	uint16_t types[MAX_SEEN];
	uint64_t ids[MAX_SEEN];
	size_t lens[MAX_SEEN];
	ino_t inos[MAX_SEEN];    /* of the descriptor that came, or 0 */
	size_t n;
	unsigned char last[IPC_MAX_PAYLOAD];
	bool closed;
	enum ipc_end end;
	char why[160];
	int drained;
	size_t reply_len;        /* answer every frame with this many octets */
	bool free_in_handler;
};

static int
record_fn(void *arg, struct ipc_frame *f)
{
	struct end *e = arg;

	assert_true(e->n < MAX_SEEN);
	e->types[e->n] = f->type;
	e->ids[e->n] = f->id;
	e->lens[e->n] = f->len;
	e->inos[e->n] = 0;
	if (f->fd != -1) {
		struct stat st;

		assert_int_equal(fstat(f->fd, &st), 0);
		e->inos[e->n] = st.st_ino;
	}
	memcpy(e->last, f->data, f->len);
	e->n++;
	if (e->reply_len > 0) {
		static unsigned char big[IPC_MAX_PAYLOAD];

		ipc_send(e->c, 1, f->id, big, e->reply_len);
	}
	if (e->free_in_handler)
		ipc_free(e->self);
	return 0;
}

static const struct ipc_handler any_frames[] = {
	{ 1, 0, record_fn },
	{ 2, IPC_EMPTY | IPC_FD, record_fn },
	{ 3, IPC_ID, record_fn },
};

static void
end_closed(void *arg, enum ipc_end end, const char *why)
{
	struct end *e = arg;

	e->closed = true;
	e->end = end;
	util_strlcpy(e->why, why, sizeof(e->why));
}

static void
end_drained(void *arg)
{
	((struct end *)arg)->drained++;
}

static const struct ipc_ops plain_ops = {
	.handlers = any_frames,
	.nhandlers = nitems(any_frames),
	.closed = end_closed,
	.drained = end_drained,
};

static const struct ipc_ops pausing_ops = {
	.handlers = any_frames,
	.nhandlers = nitems(any_frames),
	.closed = end_closed,
	.drained = end_drained,
	.out_pause = 64 * 1024,
	.out_low = 16 * 1024,
};

struct pair {
	struct event_base *base;
	struct end a, b;
	int raw;                 /* b's socket when b is not a channel */
};

static struct pair *
pair_new(const struct ipc_ops *aops, const struct ipc_ops *bops)
{
	struct pair *p = xcalloc(1, sizeof(*p));
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	p->base = event_base_new();
	assert_non_null(p->base);
	p->a.c = ipc_new(p->base, sv[0], aops, &p->a);
	p->a.self = &p->a.c;
	p->raw = -1;
	if (bops != NULL) {
		p->b.c = ipc_new(p->base, sv[1], bops, &p->b);
		p->b.self = &p->b.c;
	} else {
		p->raw = sv[1];
	}
	return p;
}

static void
pair_free(struct pair *p)
{
	ipc_free(&p->a.c);
	ipc_free(&p->b.c);
	if (p->raw != -1)
		close(p->raw);
	event_base_free(p->base);
	free(p);
}

/* Run the loop until cond holds (or give up after many rounds). */
#define RUN_UNTIL(p, cond)                                                     \
	do {                                                                   \
		for (int r_ = 0; r_ < 2000 && !(cond); r_++)                   \
			event_base_loop((p)->base, EVLOOP_NONBLOCK);           \
		assert_true(cond);                                             \
	} while (0)

static void
test_frames_both_ways(void **state)
{
	struct pair *p = pair_new(&plain_ops, &plain_ops);
	static unsigned char big[IPC_MAX_PAYLOAD];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7);
	assert_int_equal(ipc_send(p->a.c, 1, 11, "hello", 5), 0);
	assert_int_equal(ipc_send(p->a.c, 1, 12, big, sizeof(big)), 0);
	assert_int_equal(ipc_send(p->a.c, 3, 13, NULL, 0), 0);
	assert_int_equal(ipc_send(p->b.c, 1, 21, "back", 4), 0);
	RUN_UNTIL(p, p->b.n == 3 && p->a.n == 1);
	assert_int_equal(p->b.ids[0], 11);
	assert_int_equal(p->b.lens[1], sizeof(big));
	/* the empty third frame copied nothing over the second's payload */
	assert_memory_equal(p->b.last, big, sizeof(big));
	assert_int_equal(p->b.types[2], 3);
	assert_int_equal(p->a.ids[0], 21);
	assert_memory_equal(p->a.last, "back", 4);
	assert_true(p->a.drained > 0);
	assert_false(p->a.closed || p->b.closed);
	pair_free(p);
}

/* Descriptors arrive in order, each with its own frame, among data. */
static void
test_descriptors_in_order(void **state)
{
	struct pair *p = pair_new(&plain_ops, &plain_ops);
	int before = open_fds();
	ino_t want[4];

	for (int i = 0; i < 4; i++) {
		int pfd[2];
		struct stat st;

		assert_int_equal(pipe(pfd), 0);
		assert_int_equal(fstat(pfd[0], &st), 0);
		want[i] = st.st_ino;
		close(pfd[1]);
		assert_int_equal(ipc_send(p->a.c, 1, (uint64_t)i, "x", 1), 0);
		assert_int_equal(ipc_send_fd(p->a.c, 2, 0, pfd[0]), 0);
	}
	RUN_UNTIL(p, p->b.n == 8);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(p->b.types[2 * i], 1);
		assert_int_equal(p->b.types[2 * i + 1], 2);
		assert_int_equal(p->b.inos[2 * i + 1], want[i]);
	}
	/* Sent descriptors are closed by the sender, received ones by the
	 * channel after the handler (which kept none). */
	assert_int_equal(open_fds(), before);
	pair_free(p);
}

/* Raw octets from a peer that breaks the rules. */
struct violation_case {
	const char *name;
	uint32_t len;
	uint16_t type, flags;
	uint64_t id;
	bool attach;          /* send a descriptor with it */
	const char *want_why;
};

static const struct violation_case violation_cases[] = {
	{ "too long", IPC_MAX_PAYLOAD + 1, 1, 0, 1, false, "longer than" },
	{ "unknown flag", 0, 1, 4, 1, false, "flags" },
	{ "announced descriptor missing", 0, 2, IPC_F_FD, 0, false,
	  "without the descriptor" },
	{ "descriptor for a plain frame", 0, 1, IPC_F_FD, 0, true,
	  "with a descriptor" },
	{ "type nobody accepts", 0, 9, 0, 1, false, "unexpected" },
	{ "id 0 where required", 0, 3, 0, 0, false, "id 0" },
};

static void
test_violations_close(void **state)
{
	for (size_t i = 0; i < nitems(violation_cases); i++) {
		const struct violation_case *c = &violation_cases[i];
		struct pair *p = pair_new(&plain_ops, NULL);
		struct ipc_hdr h = { .len = c->len, .type = c->type,
		    .flags = c->flags, .id = c->id };
		struct iovec iov = { &h, sizeof(h) };
		int before = open_fds(), fd = -1;

		if (c->attach)
			fd = open("/dev/null", O_RDONLY);
		assert_int_equal(ipc_sendmsg(p->raw, &iov, 1, fd, 0),
		    (ssize_t)sizeof(h));
		if (fd != -1)
			close(fd);
		RUN_UNTIL(p, p->a.closed);
		if (p->a.end != IPC_VIOLATION || strstr(p->a.why, c->want_why) == NULL)
			fail_msg("%s: end %d why '%s'", c->name, (int)p->a.end,
			    p->a.why);
		assert_int_equal(p->a.n, 0);
		/* Nothing is sent on a dead channel, and nothing leaks. */
		assert_int_equal(ipc_send(p->a.c, 1, 1, "x", 1), -1);
		assert_int_equal(open_fds(), before);
		pair_free(p);
	}
}

/* A descriptor sent beside a frame that does not announce it is a
 * violation once that frame is taken, and is closed, never handed to a
 * later frame that announces one. */
static void
test_stray_descriptor(void **state)
{
	struct pair *p = pair_new(&plain_ops, NULL);
	struct ipc_hdr h = { .len = 0, .type = 1, .flags = 0, .id = 1 };
	struct iovec iov = { &h, sizeof(h) };
	int before = open_fds(), fd = open("/dev/null", O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(ipc_sendmsg(p->raw, &iov, 1, fd, 0), (ssize_t)sizeof(h));
	close(fd);
	RUN_UNTIL(p, p->a.closed);
	assert_int_equal(p->a.end, IPC_VIOLATION);
	assert_non_null(strstr(p->a.why, "no frame announced"));
	assert_int_equal(p->a.n, 1);     /* the frame itself was fine */
	assert_int_equal(open_fds(), before);
	pair_free(p);
}

static void
test_eof(void **state)
{
	struct pair *p = pair_new(&plain_ops, NULL);
	struct ipc_hdr h = { .len = 3, .type = 1 };

	/* A complete frame, then half of one, then EOF. */
	assert_int_equal(util_write_all(p->raw, &h, sizeof(h)), 0);
	assert_int_equal(util_write_all(p->raw, "abc", 3), 0);
	assert_int_equal(util_write_all(p->raw, &h, 8), 0);
	close(p->raw);
	p->raw = -1;
	RUN_UNTIL(p, p->a.closed);
	assert_int_equal(p->a.end, IPC_EOF);
	assert_int_equal(p->a.n, 1);
	pair_free(p);
}

/*
 * out_pause: an end whose answers pile up unread stops taking frames,
 * and takes them again once the peer reads.
 */
static void
test_back_pressure(void **state)
{
	struct pair *p = pair_new(&pausing_ops, NULL);
	struct ipc_hdr h = { .len = 0, .type = 1, .id = 1 };
	unsigned char sink[65536];
	size_t n = 0;

	p->a.reply_len = 200 * 1024;
	for (int i = 0; i < 40; i++)
		assert_int_equal(util_write_all(p->raw, &h, sizeof(h)), 0);
	for (int r = 0; r < 200; r++)
		event_base_loop(p->base, EVLOOP_NONBLOCK);
	assert_true(p->a.n >= 1);
	assert_true(p->a.n < 40);
	assert_true(ipc_out_len(p->a.c) > pausing_ops.out_low);
	/* The peer reads: everything is taken, every answer goes out. */
	util_set_nonblock(p->raw);
	for (int r = 0; r < 100000 && (p->a.n < 40 || n < 40 * (200 * 1024 +
	    IPC_HDR_SIZE)); r++) {
		ssize_t k = read(p->raw, sink, sizeof(sink));

		if (k > 0)
			n += (size_t)k;
		event_base_loop(p->base, EVLOOP_NONBLOCK);
	}
	assert_int_equal(p->a.n, 40);
	assert_int_equal(n, 40 * (200 * 1024 + IPC_HDR_SIZE));
	assert_false(p->a.closed);
	pair_free(p);
}

/* A handler may free its channel; the frames after it are not taken. */
static void
test_free_in_handler(void **state)
{
	struct pair *p = pair_new(&plain_ops, &plain_ops);

	p->b.free_in_handler = true;
	assert_int_equal(ipc_send(p->a.c, 1, 1, "x", 1), 0);
	assert_int_equal(ipc_send(p->a.c, 1, 2, "y", 1), 0);
	RUN_UNTIL(p, p->b.c == NULL);
	for (int r = 0; r < 50; r++)
		event_base_loop(p->base, EVLOOP_NONBLOCK);
	assert_int_equal(p->b.n, 1);
	RUN_UNTIL(p, p->a.closed);
	pair_free(p);
}

/* A descriptor sent on a dead channel is closed, not leaked. */
static void
test_send_fd_dead(void **state)
{
	struct pair *p = pair_new(&plain_ops, NULL);
	int before, fd;

	close(p->raw);
	p->raw = -1;
	RUN_UNTIL(p, p->a.closed);
	before = open_fds();
	fd = open("/dev/null", O_RDONLY);
	assert_int_equal(ipc_send_fd(p->a.c, 2, 0, fd), -1);
	assert_int_equal(open_fds(), before);
	pair_free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_table),
		cmocka_unit_test(test_dispatch_table),
		cmocka_unit_test(test_frames_both_ways),
		cmocka_unit_test(test_descriptors_in_order),
		cmocka_unit_test(test_violations_close),
		cmocka_unit_test(test_stray_descriptor),
		cmocka_unit_test(test_eof),
		cmocka_unit_test(test_back_pressure),
		cmocka_unit_test(test_free_in_handler),
		cmocka_unit_test(test_send_fd_dead),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
