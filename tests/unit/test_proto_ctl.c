/*
 * test_proto_ctl.c - the control protocol and its one dispatcher
 * (proto/ctl.h): each frame a worker or the parent may get, and each it
 * must refuse, sent raw on a socketpair to a real end in one event loop
 * (a table of named cases: what was called, or how the channel ended),
 * then the parent's sending side end to end with descriptors.
 */
#include "unit.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "proto/ctl.h"
#include "proto_test_util.h"

enum got { GOT_NONE, GOT_PEER, GOT_RELAY, GOT_TLS, GOT_SHUTDOWN, GOT_READY,
	GOT_LOST };

struct rec {
	enum got got;
	int fd;
	enum ipc_end end;
	char why[160];
};

static void
rec_fd(struct rec *r, enum got g, int fd)
{
	r->got = g;
	r->fd = fd;
}

static void on_peer(void *a, int fd) { rec_fd(a, GOT_PEER, fd); }
static void on_relay(void *a, int fd) { rec_fd(a, GOT_RELAY, fd); }
static void on_tls(void *a, int fd) { rec_fd(a, GOT_TLS, fd); }
static void on_shutdown(void *a) { ((struct rec *)a)->got = GOT_SHUTDOWN; }
static void on_ready(void *a) { ((struct rec *)a)->got = GOT_READY; }

static void
on_lost(void *a, enum ipc_end end, const char *why)
{
	struct rec *r = a;

	r->got = GOT_LOST;
	r->end = end;
	util_strlcpy(r->why, why, sizeof(r->why));
}

/* A queue: peer and relay channels. */
static const struct ctl_ops queue_ops = {
	.peer_fd = on_peer, .relay_fd = on_relay, .shutdown = on_shutdown,
	.lost = on_lost,
};
/* An smtp process: peer channel and TLS. */
static const struct ctl_ops smtp_ops = {
	.peer_fd = on_peer, .tls_fd = on_tls, .shutdown = on_shutdown,
	.lost = on_lost,
};
static const struct ctl_ops parent_ops = {
	.ready = on_ready, .lost = on_lost,
};

struct frame_case {
	const char *name;
	enum ctl_side side;
	const struct ctl_ops *ops;
	uint16_t type;
	uint32_t len;            /* payload octets sent after the header */
	bool fd;                 /* attach a descriptor */
	enum got want;
	enum ipc_end want_end;   /* when GOT_LOST */
};

static const struct frame_case frame_cases[] = {
	{ "queue: new smtp channel", CTL_WORKER, &queue_ops, CTL_PEER_FD, 0,
	  true, GOT_PEER, 0 },
	{ "queue: new relay channel", CTL_WORKER, &queue_ops, CTL_RELAY_FD, 0,
	  true, GOT_RELAY, 0 },
	{ "smtp: new certificate", CTL_WORKER, &smtp_ops, CTL_TLS_FD, 0, true,
	  GOT_TLS, 0 },
	{ "worker: shutdown", CTL_WORKER, &smtp_ops, CTL_SHUTDOWN, 0, false,
	  GOT_SHUTDOWN, 0 },
	{ "smtp: no relay channel for it", CTL_WORKER, &smtp_ops, CTL_RELAY_FD,
	  0, true, GOT_LOST, IPC_VIOLATION },
	{ "queue: no certificate for it", CTL_WORKER, &queue_ops, CTL_TLS_FD,
	  0, true, GOT_LOST, IPC_VIOLATION },
	{ "peer channel without its descriptor", CTL_WORKER, &queue_ops,
	  CTL_PEER_FD, 0, false, GOT_LOST, IPC_VIOLATION },
	{ "shutdown with a descriptor", CTL_WORKER, &queue_ops, CTL_SHUTDOWN, 0,
	  true, GOT_LOST, IPC_VIOLATION },
	{ "shutdown with a payload", CTL_WORKER, &queue_ops, CTL_SHUTDOWN, 4,
	  false, GOT_LOST, IPC_VIOLATION },
	{ "worker: READY is the parent's", CTL_WORKER, &queue_ops, CTL_READY, 0,
	  false, GOT_LOST, IPC_VIOLATION },
	{ "worker: a submission frame", CTL_WORKER, &queue_ops, 1, 0, false,
	  GOT_LOST, IPC_VIOLATION },
	{ "parent: ready", CTL_PARENT, &parent_ops, CTL_READY, 0, false,
	  GOT_READY, 0 },
	{ "parent: SHUTDOWN is the workers'", CTL_PARENT, &parent_ops,
	  CTL_SHUTDOWN, 0, false, GOT_LOST, IPC_VIOLATION },
	{ "parent: a descriptor", CTL_PARENT, &parent_ops, CTL_PEER_FD, 0, true,
	  GOT_LOST, IPC_VIOLATION },
};

static void
test_frame_table(void **state)
{
	for (size_t i = 0; i < nitems(frame_cases); i++) {
		const struct frame_case *c = &frame_cases[i];
		struct event_base *base = event_base_new();
		struct rec r = { .got = GOT_NONE, .fd = -1 };
		struct ipc_hdr h = { .len = c->len, .type = c->type,
		    .flags = c->fd ? IPC_F_FD : 0 };
		char payload[8] = "abcdefg";
		struct iovec iov[2] = { { &h, sizeof(h) }, { payload, c->len } };
		int sv[2], fd = -1, before;
		struct ctl *ctl;

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		before = open_fds();
		ctl = ctl_open(base, sv[0], c->side, c->ops, &r);
		if (c->fd)
			fd = open("/dev/null", O_RDONLY);
		assert_int_equal(ipc_sendmsg(sv[1], iov, 2, fd, 0),
		    (ssize_t)(sizeof(h) + c->len));
		if (fd != -1)
			close(fd);
		for (int k = 0; k < 1000 && r.got == GOT_NONE; k++)
			event_base_loop(base, EVLOOP_NONBLOCK);
		if (r.got != c->want)
			fail_msg("%s: want %d, got %d (%s)", c->name, (int)c->want,
			    (int)r.got, r.why);
		if (c->want == GOT_LOST && r.end != c->want_end)
			fail_msg("%s: ended %d (%s)", c->name, (int)r.end, r.why);
		if (c->want == GOT_LOST && r.why[0] == '\0')
			fail_msg("%s: no reason", c->name);
		/* A descriptor handed over is the callback's; others are
		 * closed by the channel. */
		if (r.fd != -1)
			close(r.fd);
		ctl_free(&ctl);
		assert_int_equal(open_fds(), before - 1);   /* sv[0] */
		close(sv[1]);
		event_base_free(base);
	}
}

/* The worker's end closing: the parent learns it as EOF. */
static void
test_parent_sees_eof(void **state)
{
	struct event_base *base = event_base_new();
	struct rec r = { .got = GOT_NONE, .fd = -1 };
	int sv[2];
	struct ctl *ctl;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ctl = ctl_open(base, sv[0], CTL_PARENT, &parent_ops, &r);
	close(sv[1]);
	for (int k = 0; k < 1000 && r.got == GOT_NONE; k++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(r.got, GOT_LOST);
	assert_int_equal(r.end, IPC_EOF);
	/* Nothing goes out on a dead channel; a descriptor is not leaked. */
	assert_int_equal(ctl_send(ctl, CTL_SHUTDOWN, -1), -1);
	assert_int_equal(ctl_send(ctl, CTL_PEER_FD, open("/dev/null",
	    O_RDONLY)), -1);
	ctl_free(&ctl);
	event_base_free(base);
}

/* The parent's end sends, a worker's end takes: descriptors arrive as
 * the same open files, in order, and LOG_FD is handled by the
 * dispatcher itself. */
static void
test_parent_to_worker(void **state)
{
	struct event_base *base = event_base_new();
	struct rec pr = { .got = GOT_NONE, .fd = -1 };
	struct rec wr = { .got = GOT_NONE, .fd = -1 };
	struct ctl *parent, *worker;
	struct stat want, got;
	int sv[2], pfd[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	parent = ctl_open(base, sv[0], CTL_PARENT, &parent_ops, &pr);
	worker = ctl_open(base, sv[1], CTL_WORKER, &queue_ops, &wr);
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(fstat(pfd[0], &want), 0);
	close(pfd[1]);
	assert_int_equal(ctl_send(parent, CTL_RELAY_FD, pfd[0]), 0);
	for (int k = 0; k < 1000 && wr.got == GOT_NONE; k++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(wr.got, GOT_RELAY);
	assert_int_equal(fstat(wr.fd, &got), 0);
	assert_int_equal(got.st_ino, want.st_ino);
	close(wr.fd);

	/* Log rotation: the worker's log lines go to the new file. */
	char path[] = "/tmp/tern-test-ctl-XXXXXX";
	int logfd = mkstemp(path);
	assert_true(logfd >= 0);
	assert_int_equal(ctl_send(parent, CTL_LOG_FD, logfd), 0);
	wr.got = GOT_NONE;
	assert_int_equal(ctl_send(parent, CTL_SHUTDOWN, -1), 0);
	for (int k = 0; k < 1000 && wr.got == GOT_NONE; k++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(wr.got, GOT_SHUTDOWN);
	log_info("test-ctl event=after-rotation");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size > 0);
	unlink(path);

	assert_int_equal(ctl_send(worker, CTL_READY, -1), 0);
	for (int k = 0; k < 1000 && pr.got == GOT_NONE; k++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(pr.got, GOT_READY);
	ctl_free(&parent);
	ctl_free(&worker);
	event_base_free(base);
}

static void
test_type_names(void **state)
{
	assert_string_equal(ctl_type_name(CTL_PEER_FD), "PEER_FD");
	assert_string_equal(ctl_type_name(CTL_LOG_FD), "LOG_FD");
	assert_string_equal(ctl_type_name(CTL_READY), "READY");
	assert_string_equal(ctl_type_name(0), "?");
	assert_string_equal(ctl_type_name(CTL_LOG_FD + 1), "?");
	assert_string_equal(ctl_type_name(65535), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_table),
		cmocka_unit_test(test_parent_sees_eof),
		cmocka_unit_test(test_parent_to_worker),
		cmocka_unit_test(test_type_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
