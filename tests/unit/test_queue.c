/*
 * test_queue.c - the queue process end to end: queue_new/queue_run in a
 * forked child, driven over real socketpairs with the IPC protocol
 * (ipc.h), checking what lands in the Maildirs and the spool.
 *
 * The configuration is filled by hand (no config file): domain
 * "localhost" with mailboxes bob and carol, alias team -> bob, carol,
 * maildir <tmp>/mail/%d/%u.
 *
 * The spool is format 2 (docs/spool-format.md): what is queued is read
 * from its segment files (queued_image(), msg_state()), never through
 * the queue's own spool code.
 */
#include "unit.h"

#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "conf/config.h"
#include "mail/envelope.h"
#include "lib/ipc.h"
#include "proto/ctl.h"
#include "proto/relay_job.h"
#include "proto/submit.h"
#include "conf/local_lookup.h"
#include "lib/log.h"
#include "queue/maildir.h"
#include "queue/queue.h"
#include "queue/seglog.h"
#include "queue/spool.h"
#include "lib/util.h"

#define WAIT_MS 15000

#include "ipc_test_util.h"

struct fx {
	char dir[64];
	char spool[128];
	char pattern[128];
	struct config cfg;
	struct config_domain dom;
	const struct config_domain *dom_index[1];   /* cfg.domain_index */
	struct config_alias alias;
	pid_t pid;
	int ctl;      /* parent end of the control channel */
	int chan;     /* smtp end of the submission channel */
	bool use_relay;  /* give the queue a relay channel */
	int relay;    /* relay end of the relay channel, or -1 */
};

static int
setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));

	log_set_level(LOG_LEVEL_WARN);
	util_strlcpy(f->dir, "/tmp/tern-queue-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->spool, sizeof(f->spool), "%s/spool", f->dir);
	snprintf(f->pattern, sizeof(f->pattern), "%s/mail/%%d/%%u", f->dir);

	f->dom.name = xstrdup("localhost");
	f->dom.mailboxes = xcalloc(2, sizeof(char *));
	f->dom.mailboxes[0] = xstrdup("carol");
	f->dom.mailboxes[1] = xstrdup("bob");
	f->dom.nmailboxes = 2;
	f->alias.name = xstrdup("team");
	f->alias.targets = xcalloc(2, sizeof(char *));
	f->alias.targets[0] = xstrdup("bob");
	f->alias.targets[1] = xstrdup("carol");
	f->alias.ntargets = 2;
	f->dom.aliases = &f->alias;
	f->dom.naliases = 1;
	f->dom.maildir = f->pattern;
	local_lookup_prepare(&f->dom);

	f->cfg.source = "(test)";
	f->cfg.hostname = "mx.test";
	f->cfg.spool_dir = f->spool;
	f->cfg.domains = &f->dom;
	f->cfg.ndomains = 1;
	f->dom_index[0] = &f->dom;
	f->cfg.domain_index.sorted = f->dom_index;
	f->cfg.domain_index.n = 1;
	f->cfg.max_message_size = 64 * 1024;
	f->cfg.max_recipients = 50;
	f->cfg.max_connections = 4;
	f->cfg.delivery_workers = 2;
	/* queue_new takes these as given (a config file has its defaults).
	 * The smallest segments: what the tests prove does not depend on
	 * the size, and each segment takes its full size on disk. */
	f->cfg.spool_segment_size = SEGLOG_MIN_SEGMENT;
	f->cfg.spool_inline_max = SPOOL_INLINE_MAX;
	f->pid = -1;
	f->ctl = f->chan = f->relay = -1;
	*state = f;
	return 0;
}

static void
stop_child(struct fx *f, int want_status)
{
	if (f->pid <= 0)
		return;
	assert_int_equal(send_ctl(f->ctl, CTL_SHUTDOWN, -1), 0);
	assert_int_equal(ipc_test_reap(&f->pid), want_status);
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	if (f->ctl != -1)
		close(f->ctl);
	if (f->chan != -1)
		close(f->chan);
	if (f->relay != -1)
		close(f->relay);
	(void)umount2(f->spool, MNT_DETACH);   /* test_disk_full, if it failed */
	unit_rm_tree(f->dir);
	free(f->dom.name);
	for (size_t i = 0; i < f->dom.nmailboxes; i++)
		free(f->dom.mailboxes[i]);
	free(f->dom.mailboxes);
	free(f->alias.name);
	free(f->alias.targets[0]);
	free(f->alias.targets[1]);
	free(f->alias.targets);
	free(f);
	return 0;
}

/* Fork the queue process (as uid/gid, dropping root after queue_new when
 * uid is not -1); wait for its READY. */
static void
start_child_as(struct fx *f, uid_t uid, gid_t gid)
{
	/* control, submission and (with use_relay) relay channels */
	int sp[3][2] = { { -1, -1 }, { -1, -1 }, { -1, -1 } };
	uint16_t type;
	int fd;

	f->pid = ipc_test_fork(sp, f->use_relay ? 3 : 2);
	if (f->pid == 0) {
		char err[256];
		struct queue *q;
		int status;

		log_set_role("queue");
		q = queue_new(&f->cfg, uid, gid, err, sizeof(err));
		if (q == NULL) {
			log_err("queue_new: %s", err);
			_exit(3);
		}
		if (uid != (uid_t)-1 && (setgroups(0, NULL) == -1 ||
		    setgid(gid) == -1 || setuid(uid) == -1)) {
			log_err("drop privileges: %s", strerror(errno));
			_exit(4);
		}
		status = queue_run(q, sp[0][1], sp[1][1], sp[2][1]);
		queue_free(&q);
		/* exit, not _exit: LeakSanitizer checks the queue process too. */
		exit(status);
	}
	f->ctl = sp[0][0];
	f->chan = sp[1][0];
	f->relay = sp[2][0];
	assert_int_equal(recv_ctl(f->ctl, &type, &fd), 1);
	assert_int_equal(type, CTL_READY);
	assert_int_equal(fd, -1);
}

static void
start_child(struct fx *f)
{
	start_child_as(f, (uid_t)-1, (gid_t)-1);
}

/* One reply frame into h and buf (NUL-terminated); 0 on EOF. */
static int
recv_frame(int fd, struct ipc_hdr *h, char *buf, size_t bufsize)
{
	int rc = recv_frame_ms(fd, h, buf, bufsize, WAIT_MS);

	if (rc == -1)
		fail_msg("timed out waiting for the queue");
	return rc;
}

static void
send_envelope(int fd, uint64_t id, const char *sender, const char *const *rcpts,
    size_t n)
{
	struct envelope env;
	struct evbuffer *b = evbuffer_new();

	envelope_init(&env);
	env.arrival = util_now_us() / 1000000;
	envelope_set(&env.sender, sender);
	envelope_set(&env.helo, "client.test");
	envelope_set(&env.client_addr, "127.0.0.1");
	envelope_set(&env.protocol, "ESMTP");
	for (size_t i = 0; i < n; i++)
		envelope_add_rcpt(&env, rcpts[i], NULL, 0);
	envelope_serialize(&env, b);
	send_frame(fd, SUBMIT_BEGIN, id, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b));
	evbuffer_free(b);
	envelope_clear(&env);
}

static void
expect(int fd, uint16_t type, uint64_t id, char *buf, size_t bufsize)
{
	struct ipc_hdr h;

	if (recv_frame(fd, &h, buf, bufsize) != 1)
		fail_msg("channel closed, wanted frame type %d", type);
	if (h.type != type)
		fail_msg("got frame type %u (%s), wanted %d", h.type, buf, type);
	assert_int_equal(h.id, id);
}

/* BEGIN/DATA/COMMIT one message; the queue id lands in qid. */
static void
submit(struct fx *f, uint64_t id, const char *const *rcpts, size_t n,
    const char *body, char qid[17])
{
	char buf[256];
	size_t len = strlen(body);

	send_envelope(f->chan, id, "alice@example.org", rcpts, n);
	expect(f->chan, SUBMIT_BEGIN_OK, id, buf, sizeof(buf));
	assert_int_equal(strlen(buf), QUEUE_ID_LEN);
	assert_true(spool_valid_id(buf));
	util_strlcpy(qid, buf, 17);
	send_frame(f->chan, SUBMIT_DATA, id, body, len / 2);
	send_frame(f->chan, SUBMIT_DATA, id, body + len / 2, len - len / 2);
	send_frame(f->chan, SUBMIT_COMMIT, id, NULL, 0);
	expect(f->chan, SUBMIT_COMMIT_OK, id, buf, sizeof(buf));
	assert_string_equal(buf, qid);
}

static int
count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int
count_sub(struct fx *f, const char *sub)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	return count_dir(p);
}

static bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Poll until dir holds n entries (deliveries run in worker threads). */
static void
wait_count(struct fx *f, const char *sub, int n)
{
	for (int i = 0; i < WAIT_MS / 10; i++) {
		if (count_sub(f, sub) == n)
			return;
		usleep(10000);
	}
	fail_msg("%s: want %d entries, have %d", sub, n, count_sub(f, sub));
}

/* ---- what the spool holds, read as it is ----
 *
 * The segment files scanned read-only with seglog's public scanner, as
 * read_spool() in tests/integration/harness.py does (spool_recover()
 * would change the spool: it drops segments and converts format 1):
 * segments in number order; a MSG record places a message, JRN adds to
 * its journal, SNAP replaces the journal, DONE ends it. The queue may be
 * appending meanwhile: a record not yet whole ends the scan of its
 * segment, and is seen at the next poll.
 */

/* A MSG payload: tag (8 octets), flags (8; bit 0: the body is in
 * big/<id>), then the image: head, envelope and (unless in big/) body. */
#define MSG_PREFIX 16
#define MSG_BIG 1u

enum msg_state {
	MSG_NEVER,     /* no MSG record: never committed */
	MSG_LIVE,      /* queued */
	MSG_DONE,      /* committed, then DONE */
};

struct seen_msg {
	uint64_t id;
	enum msg_state state;
	bool big;
	char *head;           /* the image in the MSG record */
	size_t head_len;
	char *jrn;            /* the journal: JRN payloads since MSG/SNAP */
	size_t jrn_len;
};

struct seen {
	struct seen_msg *m;
	size_t n;
};

static struct seen_msg *
seen_find(struct seen *s, uint64_t id, bool add)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->m[i].id == id)
			return &s->m[i];
	if (!add)
		return NULL;
	s->m = xreallocarray(s->m, s->n + 1, sizeof(*s->m));
	memset(&s->m[s->n], 0, sizeof(*s->m));
	s->m[s->n].id = id;
	return &s->m[s->n++];
}

/* *p becomes p[0..*len) (or, with append, keeps it) plus n octets of src. */
static void
bytes_put(char **p, size_t *len, const void *src, size_t n, bool append)
{
	size_t at = append ? *len : 0;

	*p = xreallocarray(*p, at + n + 1, 1);
	if (n > 0)
		memcpy(*p + at, src, n);
	*len = at + n;
	(*p)[*len] = '\0';
}

static int
seen_rec(void *arg, const struct seglog_rec *r)
{
	struct seen *s = arg;
	struct seen_msg *m = seen_find(s, r->id, r->type == SEGLOG_MSG);
	const char *pay = r->payload;
	uint64_t flags;

	if (m == NULL)
		return 0;
	switch (r->type) {
	case SEGLOG_MSG:
		assert_true(r->len >= MSG_PREFIX);
		memcpy(&flags, pay + 8, sizeof(flags));
		m->state = MSG_LIVE;
		m->big = (flags & MSG_BIG) != 0;
		bytes_put(&m->head, &m->head_len, pay + MSG_PREFIX,
		    r->len - MSG_PREFIX, false);
		bytes_put(&m->jrn, &m->jrn_len, NULL, 0, false);
		break;
	case SEGLOG_JRN:
	case SEGLOG_SNAP:
		bytes_put(&m->jrn, &m->jrn_len, pay, r->len,
		    r->type == SEGLOG_JRN);
		break;
	case SEGLOG_DONE:
		m->state = MSG_DONE;
		break;
	default:
		break;
	}
	return 0;
}

static void
scan_segment(const char *dir, const char *name, struct seen *s)
{
	char p[512];
	struct stat st;
	enum seglog_end how;
	size_t end;
	void *map;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd == -1) {
		/* dropped since the listing: nothing live was in it */
		assert_int_equal(errno, ENOENT);
		return;
	}
	assert_int_equal(fstat(fd, &st), 0);
	if (st.st_size > 0) {   /* 0: being made */
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		assert_true(map != MAP_FAILED);
		(void)seglog_scan_image(map, (size_t)st.st_size,
		    strtoull(name, NULL, 16), seen_rec, s, &end, &how);
		munmap(map, (size_t)st.st_size);
	}
	close(fd);
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every message the segments of f's spool know of, into s. */
static void
seen_load(struct fx *f, struct seen *s)
{
	char dir[256], **names = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	memset(s, 0, sizeof(*s));
	snprintf(dir, sizeof(dir), "%s/seg", f->spool);
	d = opendir(dir);
	if (d == NULL)
		return;   /* no queue has run on it yet */
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		/* <16 hex digits>.seg */
		if (len != 20 || strcmp(de->d_name + 16, ".seg") != 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	/* fixed-width names: their order is the segments' */
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_name);
	for (size_t i = 0; i < n; i++) {
		scan_segment(dir, names[i], s);
		free(names[i]);
	}
	free(names);
}

static void
seen_free(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->m[i].head);
		free(s->m[i].jrn);
	}
	free(s->m);
	memset(s, 0, sizeof(*s));
}

static enum msg_state
msg_state(struct fx *f, const char *qid)
{
	struct seen s;
	struct seen_msg *m;
	enum msg_state st;

	seen_load(f, &s);
	m = seen_find(&s, strtoull(qid, NULL, 16), false);
	st = m != NULL ? m->state : MSG_NEVER;
	seen_free(&s);
	return st;
}

/* The queued messages' ids (up to max) into ids; how many are queued. */
static size_t
queued_ids(struct fx *f, char (*ids)[17], size_t max)
{
	struct seen s;
	size_t n = 0;

	seen_load(f, &s);
	for (size_t i = 0; i < s.n; i++)
		if (s.m[i].state == MSG_LIVE) {
			if (n < max)
				snprintf(ids[n], 17, "%016" PRIx64, s.m[i].id);
			n++;
		}
	seen_free(&s);
	return n;
}

/* The image of queued message qid as format 1 kept it in one file: head,
 * envelope, body (from big/<id> if it is there), journal. "" once it is
 * not queued. Caller frees. */
static char *
queued_image(struct fx *f, const char *qid)
{
	struct seen s;
	struct seen_msg *m;
	char *img = NULL, path[256];
	size_t len = 0;

	seen_load(f, &s);
	m = seen_find(&s, strtoull(qid, NULL, 16), false);
	if (m == NULL || m->state != MSG_LIVE) {
		seen_free(&s);
		return xstrdup("");
	}
	bytes_put(&img, &len, m->head, m->head_len, false);
	if (m->big) {
		struct stat st;
		char *body;
		int fd;

		snprintf(path, sizeof(path), "%s/big/%s", f->spool, qid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd == -1) {
			/* finished since the scan: its DONE came first */
			assert_int_equal(errno, ENOENT);
			free(img);
			seen_free(&s);
			return xstrdup("");
		}
		assert_int_equal(fstat(fd, &st), 0);
		body = xmalloc((size_t)st.st_size + 1);
		assert_int_equal(read(fd, body, (size_t)st.st_size), st.st_size);
		close(fd);
		bytes_put(&img, &len, body, (size_t)st.st_size, true);
		free(body);
	}
	bytes_put(&img, &len, m->jrn, m->jrn_len, true);
	seen_free(&s);
	return img;
}

/* Wait until the journal of qid holds want. */
static void
wait_journal(struct fx *f, const char *qid, const char *want)
{
	for (int i = 0; i < WAIT_MS / 10; i++) {
		char *got = queued_image(f, qid);
		bool ok = strstr(got, want) != NULL;

		free(got);
		if (ok)
			return;
		usleep(10000);
	}
	fail_msg("message %s never got \"%s\" in its journal", qid, want);
}

/* Wait until qid is not queued (never committed, or finished). */
static void
wait_queue_gone(struct fx *f, const char *qid)
{
	for (int i = 0; i < WAIT_MS / 10 && msg_state(f, qid) == MSG_LIVE; i++)
		usleep(10000);
	assert_int_not_equal(msg_state(f, qid), MSG_LIVE);
}

/*
 * The spool of a previous run, opened while no queue runs on it, as the
 * queue opens it at start (spool_recover() first: it finds the segments
 * to go on after). spool_free() when done.
 */
static struct spool *
open_stopped(struct fx *f)
{
	struct spool *sp;
	char err[256];

	assert_int_equal(util_mkdirs(f->spool, 0700), 0);
	sp = spool_open(f->spool, (uid_t)-1, (gid_t)-1, err, sizeof(err));
	if (sp == NULL)
		fail_msg("spool_open: %s", err);
	assert_int_equal(spool_set_segment_size(sp, f->cfg.spool_segment_size), 0);
	if (spool_recover(sp, err, sizeof(err)) == -1)
		fail_msg("spool_recover: %s", err);
	return sp;
}

/* The only message in a Maildir's new/. */
static char *
read_only_message(struct fx *f, const char *sub)
{
	char p[512];
	DIR *d;
	struct dirent *de;
	char *buf = NULL;

	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	d = opendir(p);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char fp[1024];
		struct stat st;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(fp, sizeof(fp), "%s/%s", p, de->d_name);
		fd = open(fp, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		buf = xmalloc((size_t)st.st_size + 1);
		assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
		buf[st.st_size] = '\0';
		close(fd);
		break;
	}
	closedir(d);
	assert_non_null(buf);
	return buf;
}

static const char BODY[] = "Received: from client.test by mx.test; x\r\n"
    "Subject: hello\r\n\r\nline one\r\n.dot\r\n";

static void
test_submit_and_deliver(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "carol@localhost", "team@LocalHost",
		"someone@example.net" };
	static const char *const local_only[] = { "bob@localhost" };
	char qid[17], qid2[17], ids[2][17];
	char *got;

	start_child(f);
	submit(f, 1, rcpts, 3, BODY, qid);
	/* carol directly and through team: one message, one mailbox, one
	 * copy (the second finds the first by its name); bob through team. */
	wait_count(f, "mail/localhost/carol/new", 1);
	wait_count(f, "mail/localhost/bob/new", 1);
	got = read_only_message(f, "mail/localhost/bob/new");
	assert_int_equal(count_sub(f, "mail/localhost/carol/new"), 1);
	assert_string_equal(got, "Return-Path: <alice@example.org>\n"
	    "Delivered-To: bob@localhost\n"
	    "Received: from client.test by mx.test; x\n"
	    "Subject: hello\n\nline one\n.dot\n");
	free(got);
	/* The relay recipient keeps the message queued, with the local
	 * outcomes journaled (the journal follows the body), each outcome
	 * after the A record of who decided it. */
	wait_journal(f, qid, "\r\nA 0 ");
	wait_journal(f, qid, " l -\nD 0\nA 1 ");
	wait_journal(f, qid, " l -\nD 1\n");
	/* A message with only local recipients leaves the queue. */
	submit(f, 2, local_only, 1, BODY, qid2);
	assert_true(strcmp(qid2, qid) > 0);
	wait_count(f, "mail/localhost/bob/new", 2);
	wait_queue_gone(f, qid2);
	assert_int_equal(msg_state(f, qid2), MSG_DONE);
	assert_int_equal(count_sub(f, "spool/big"), 0);
	stop_child(f, 0);
	assert_int_equal(queued_ids(f, ids, 2), 1);
	assert_string_equal(ids[0], qid);
}

static void
test_abort_leaves_nothing(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	/* static: a forked queue child must not inherit a heap block
	 * that LeakSanitizer would report at its exit. */
	static char large[4096];
	char buf[256], qid7[17], qid8[17], path[256];

	/* 7's body stays in memory; 8's is over spool_inline_max: big/. */
	memset(large, 'a', sizeof(large));
	f->cfg.spool_inline_max = 1024;
	start_child(f);
	send_envelope(f->chan, 7, "", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 7, buf, sizeof(buf));
	util_strlcpy(qid7, buf, sizeof(qid7));
	send_frame(f->chan, SUBMIT_DATA, 7, BODY, sizeof(BODY) - 1);
	send_frame(f->chan, SUBMIT_ABORT, 7, NULL, 0);
	/* ABORT of an unknown id (after BEGIN_FAIL, say) is harmless. */
	send_frame(f->chan, SUBMIT_ABORT, 99, NULL, 0);
	/* Frames are handled in order: once 8 is begun, 7 is gone. */
	send_envelope(f->chan, 8, "", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 8, buf, sizeof(buf));
	util_strlcpy(qid8, buf, sizeof(qid8));
	send_frame(f->chan, SUBMIT_DATA, 8, large, sizeof(large));
	/* ... and once 9 is begun, 8's body is in big/ */
	send_envelope(f->chan, 9, "", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 9, buf, sizeof(buf));
	snprintf(path, sizeof(path), "%s/big/%s", f->spool, qid8);
	assert_true(file_exists(path));
	assert_int_equal(count_sub(f, "spool/big"), 1);
	/* The smtp process dies with 8 and 9 open: 8's file goes too. */
	close(f->chan);
	f->chan = -1;
	wait_count(f, "spool/big", 0);
	stop_child(f, 0);
	/* Nothing of them ever reached the log. */
	assert_int_equal(msg_state(f, qid7), MSG_NEVER);
	assert_int_equal(msg_state(f, qid8), MSG_NEVER);
	assert_int_equal(queued_ids(f, NULL, 0), 0);
	assert_int_equal(count_sub(f, "mail"), 0);
}

static void
test_abort_during_commit_rolls_back(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	struct evbuffer *b = evbuffer_new();
	char buf[256], qid[17];

	start_child(f);
	send_envelope(f->chan, 1, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 1, buf, sizeof(buf));
	util_strlcpy(qid, buf, sizeof(qid));
	send_frame(f->chan, SUBMIT_DATA, 1, BODY, sizeof(BODY) - 1);
	/* COMMIT then ABORT in one write: the client left while waiting for
	 * 250. Both are read before the commit can finish. */
	ipc_frame_put(b, SUBMIT_COMMIT, 0, 1, NULL, 0);
	ipc_frame_put(b, SUBMIT_ABORT, 0, 1, NULL, 0);
	assert_int_equal(util_write_all(f->chan, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b)), 0);
	evbuffer_free(b);
	/* No COMMIT_OK for 1: the next frame is the reply to BEGIN 2. */
	send_envelope(f->chan, 2, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 2, buf, sizeof(buf));
	/* Never acknowledged, so never delivered: the committed message
	 * is taken back (a DONE record after its MSG). */
	for (int i = 0; i < WAIT_MS / 10 && msg_state(f, qid) != MSG_DONE; i++)
		usleep(10000);
	assert_int_equal(msg_state(f, qid), MSG_DONE);
	stop_child(f, 0);
	assert_int_equal(count_sub(f, "mail"), 0);
	assert_int_equal(queued_ids(f, NULL, 0), 0);
	assert_int_equal(count_sub(f, "spool/big"), 0);
}

/* A new submission channel, handed over as the parent does after
 * restarting the smtp process. */
static void
new_channel(struct fx *f)
{
	int sp[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(send_ctl(f->ctl, CTL_PEER_FD, sp[1]), 0);
	close(sp[1]);
	if (f->chan != -1)
		close(f->chan);
	f->chan = sp[0];
}

static void
expect_closed(struct fx *f)
{
	struct ipc_hdr h;
	char buf[256];

	if (recv_frame(f->chan, &h, buf, sizeof(buf)) != 0)
		fail_msg("channel still open: got frame type %u", h.type);
}

static void
test_hostile_frames(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	struct ipc_hdr h = { 0 };
	char qid[17], buf[256];

	/* Every body goes to big/: what an aborted transaction leaves shows. */
	f->cfg.spool_inline_max = 16;
	start_child(f);
	/* An oversized frame header: refused before anything is buffered. */
	h.len = IPC_MAX_PAYLOAD + 1;
	h.type = SUBMIT_DATA;
	h.id = 1;
	assert_int_equal(util_write_all(f->chan, &h, sizeof(h)), 0);
	expect_closed(f);

	/* The open transaction of a violating channel is aborted. */
	new_channel(f);
	send_envelope(f->chan, 1, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 1, buf, sizeof(buf));
	send_frame(f->chan, SUBMIT_DATA, 1, BODY, sizeof(BODY) - 1);
	send_envelope(f->chan, 2, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 2, buf, sizeof(buf));
	assert_int_equal(count_sub(f, "spool/big"), 1);   /* 1's body */
	send_frame(f->chan, SUBMIT_BEGIN_OK, 1, "x", 1);   /* wrong role */
	expect_closed(f);
	wait_count(f, "spool/big", 0);

	new_channel(f);
	send_frame(f->chan, SUBMIT_BEGIN, 1, "version 1\nsender a@b\n", 21);
	expect_closed(f);

	new_channel(f);
	send_frame(f->chan, SUBMIT_DATA, 5, "x", 1);   /* unknown txn */
	expect_closed(f);

	new_channel(f);
	send_envelope(f->chan, 0, "a@b", rcpts, 1);          /* id 0 */
	expect_closed(f);

	new_channel(f);
	send_envelope(f->chan, 3, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 3, buf, sizeof(buf));
	send_envelope(f->chan, 3, "a@b", rcpts, 1);          /* duplicate id */
	expect_closed(f);

	new_channel(f);
	h.len = 0;
	h.type = SUBMIT_COMMIT;
	h.flags = 1;                                         /* nonzero flags */
	h.id = 1;
	assert_int_equal(util_write_all(f->chan, &h, sizeof(h)), 0);
	expect_closed(f);

	/* A queue id in the smtp side's envelope. */
	new_channel(f);
	{
		static const char env[] = "version 1\nid 0123456789abcdef\n"
		    "arrival 1\nsender \nrcpt - - bob@localhost\n";
		send_frame(f->chan, SUBMIT_BEGIN, 4, env, sizeof(env) - 1);
	}
	expect_closed(f);

	/* After all that, a well-behaved channel still works. */
	new_channel(f);
	submit(f, 1, rcpts, 1, BODY, qid);
	wait_count(f, "mail/localhost/bob/new", 1);
	wait_queue_gone(f, qid);
	wait_count(f, "spool/big", 0);
	stop_child(f, 0);
	/* of all the transactions, only the well-behaved one was committed */
	{
		struct seen s;

		seen_load(f, &s);
		assert_int_equal(s.n, 1);
		assert_int_equal(s.m[0].state, MSG_DONE);
		seen_free(&s);
	}
}

static void
test_size_limit(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	char buf[256];
	/* static: a forked queue child must not inherit a heap block
	 * that LeakSanitizer would report at its exit. */
	static char chunk[32 * 1024];
	char qid[17];

	memset(chunk, 'a', 32 * 1024);
	/* what came before the limit is in big/ and must go */
	f->cfg.spool_inline_max = 16 * 1024;
	start_child(f);
	send_envelope(f->chan, 1, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, 1, buf, sizeof(buf));
	util_strlcpy(qid, buf, sizeof(qid));
	/* 64 KiB limit + 16 KiB allowance: the third 32 KiB frame is too much. */
	for (int i = 0; i < 4; i++)
		send_frame(f->chan, SUBMIT_DATA, 1, chunk, 32 * 1024);
	send_frame(f->chan, SUBMIT_COMMIT, 1, NULL, 0);
	expect(f->chan, SUBMIT_COMMIT_FAIL, 1, buf, sizeof(buf));
	assert_memory_equal(buf, "552 5.3.4 ", 10);
	assert_int_equal(count_sub(f, "spool/big"), 0);
	assert_int_equal(msg_state(f, qid), MSG_NEVER);
	stop_child(f, 0);
}

/* BEGIN, n DATA frames of 32 KiB (64-octet lines), COMMIT; the reply's
 * text into buf. */
static uint16_t
submit_large(struct fx *f, uint64_t id, const char *const *rcpts, int n,
    char *buf, size_t bufsize)
{
	/* static: a forked queue child must not inherit a heap block
	 * that LeakSanitizer would report at its exit. */
	static char chunk[32 * 1024];
	struct ipc_hdr h;

	memset(chunk, 'a', sizeof(chunk));
	for (size_t i = 62; i < sizeof(chunk); i += 64)
		memcpy(chunk + i, "\r\n", 2);
	send_envelope(f->chan, id, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_OK, id, buf, bufsize);
	for (int i = 0; i < n; i++)
		send_frame(f->chan, SUBMIT_DATA, id, chunk, sizeof(chunk));
	send_frame(f->chan, SUBMIT_COMMIT, id, NULL, 0);
	if (recv_frame(f->chan, &h, buf, bufsize) != 1)
		fail_msg("channel closed, wanted the reply to COMMIT");
	assert_int_equal(h.id, id);
	return h.type;
}

/*
 * Disk full: a small tmpfs as the spool, in a private mount namespace so
 * nothing leaks to the host. Needs root; skipped otherwise. The first
 * message makes the segment (8 MiB of the 9); what is left (1 MiB) is
 * too little for a 2 MiB body in big/: 452, and its partial file goes,
 * so a 768 KiB one fits after it.
 */
static void
test_disk_full(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	char buf[256], qid[17];

	if (geteuid() != 0 || unshare(CLONE_NEWNS) == -1 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1) {
		skip();
	}
	assert_int_equal(mkdir(f->spool, 0700), 0);
	if (mount("tmpfs", f->spool, "tmpfs", 0, "size=9m") == -1) {
		skip();
	}
	f->cfg.spool_segment_size = SEGLOG_MIN_SEGMENT;       /* 8 MiB */
	f->cfg.max_message_size = 4 * 1024 * 1024;   /* the disk runs out first */
	start_child(f);
	submit(f, 1, rcpts, 1, BODY, qid);
	wait_count(f, "mail/localhost/bob/new", 1);
	assert_int_equal(submit_large(f, 2, rcpts, 64, buf, sizeof(buf)),
	    SUBMIT_COMMIT_FAIL);
	assert_string_equal(buf, "452 4.3.1 Insufficient system storage");
	assert_int_equal(count_sub(f, "spool/big"), 0);
	/* The space came back with the partial file: the next one commits. */
	assert_int_equal(submit_large(f, 3, rcpts, 24, buf, sizeof(buf)),
	    SUBMIT_COMMIT_OK);
	util_strlcpy(qid, buf, sizeof(qid));
	wait_count(f, "mail/localhost/bob/new", 2);
	wait_queue_gone(f, qid);
	stop_child(f, 0);
	assert_int_equal(umount(f->spool), 0);
}

static void
test_concurrent_transaction_bound(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	char buf[256];
	uint64_t id;

	/* every body in big/: what the open transactions leave shows */
	f->cfg.spool_inline_max = 16;
	start_child(f);
	/* max_connections 4 + margin 8: the 13th open transaction is refused. */
	for (id = 1; id <= 12; id++) {
		send_envelope(f->chan, id, "a@b", rcpts, 1);
		expect(f->chan, SUBMIT_BEGIN_OK, id, buf, sizeof(buf));
		send_frame(f->chan, SUBMIT_DATA, id, BODY, sizeof(BODY) - 1);
	}
	send_envelope(f->chan, id, "a@b", rcpts, 1);
	expect(f->chan, SUBMIT_BEGIN_FAIL, id, buf, sizeof(buf));
	assert_memory_equal(buf, "451 4.3.2 ", 10);
	assert_int_equal(count_sub(f, "spool/big"), 12);
	stop_child(f, 0);
	/* the open ones were aborted at the shutdown: nothing committed */
	assert_int_equal(queued_ids(f, NULL, 0), 0);
	assert_int_equal(count_sub(f, "spool/big"), 0);
}

/*
 * A format-1 queue file (docs/spool-format.md: the head line with the
 * message's length, the envelope, an empty line, the message, then the
 * journal), written as a tern before the segment log left it in
 * <spool>/queue/<id>.
 */
static void
write_format1(struct fx *f, const char *id, const char *const *rcpts,
    size_t n, const char *body, const char *journal)
{
	struct envelope env;
	struct evbuffer *b = evbuffer_new();
	char path[512];
	int fd;

	envelope_init(&env);
	util_strlcpy(env.id, id, sizeof(env.id));
	env.arrival = spool_id_time_us(id) / 1000000;
	envelope_set(&env.sender, "old@example.org");
	for (size_t i = 0; i < n; i++)
		envelope_add_rcpt(&env, rcpts[i], NULL, 0);
	evbuffer_add_printf(b, "tern-queue 1 %020zu\n", strlen(body));
	envelope_serialize(&env, b);
	evbuffer_add_printf(b, "\n%s%s", body, journal);
	snprintf(path, sizeof(path), "%s/queue", f->spool);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/queue/%s", f->spool, id);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b)), 0);
	close(fd);
	evbuffer_free(b);
	envelope_clear(&env);
}

/*
 * A format-1 spool from an older tern: a committed message in queue/
 * (bob delivered already, by its journal) and a partial one in
 * incoming/. At start the committed one is converted into the log, its
 * journal with it, and delivered to the rest; the partial one is
 * dropped; both directories go.
 */
static void
test_recovery_at_start(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "carol@localhost",
		"nobody@localhost",   /* config changed */
		"bob@localhost" };
	/* arrival 1 s after the epoch, as ids spell it (time << 12) */
	static const char id[] = "00000000f4240000";
	char path[512], report[1][17];
	char *got;
	int fd;

	write_format1(f, id, rcpts, 3, BODY, "D 2\n");
	snprintf(path, sizeof(path), "%s/incoming", f->spool);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/incoming/00000000000000ff", f->spool);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);

	start_child(f);
	snprintf(path, sizeof(path), "%s/queue", f->spool);
	assert_false(file_exists(path));
	snprintf(path, sizeof(path), "%s/incoming", f->spool);
	assert_false(file_exists(path));
	assert_int_not_equal(msg_state(f, id), MSG_NEVER);   /* in the log */
	wait_count(f, "mail/localhost/carol/new", 1);
	wait_queue_gone(f, id);   /* carol delivered, nobody failed: all done */
	assert_int_equal(count_sub(f, "mail/localhost/bob"), 0);
	/* The failure is reported: a message of its own, from <>, for the
	 * sender (no relay here, so it stays queued). */
	assert_int_equal(queued_ids(f, report, 1), 1);
	got = queued_image(f, report[0]);
	assert_non_null(strstr(got, "\nsender \n"));
	assert_non_null(strstr(got, "\nrcpt - - old@example.org\n"));
	assert_non_null(strstr(got, "Final-Recipient: rfc822;nobody@localhost\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\n"));
	assert_null(strstr(got, "carol@localhost\r\nAction"));
	assert_null(strstr(got, "bob@localhost\r\nAction"));
	free(got);
	stop_child(f, 0);
}

/*
 * Started as root: queue_new creates the spool and the Maildir base for
 * the queue user and opens them; after the drop to that user, delivery
 * works although the directory above them (mkdtemp's, mode 0700, root's)
 * is not searchable any more. Needs root; skipped otherwise.
 */
static void
test_privilege_drop(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	char qid[17], path[256];
	struct stat st;

	if (geteuid() != 0)
		skip();
	start_child_as(f, 65534, 65534);
	for (size_t i = 0; i < 3; i++) {
		static const char *const sub[] = { "seg", "big", "corrupt" };

		snprintf(path, sizeof(path), "%s/%s", f->spool, sub[i]);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, 65534);
		assert_int_equal(st.st_mode & 0777, 0700);
	}
	snprintf(path, sizeof(path), "%s/mail", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);   /* closed to the queue user */
	submit(f, 1, rcpts, 1, BODY, qid);
	wait_count(f, "mail/localhost/bob/new", 1);
	wait_queue_gone(f, qid);
	assert_int_equal(msg_state(f, qid), MSG_DONE);
	/* the segment it was committed to was made by the queue user */
	snprintf(path, sizeof(path), "%s/seg/0000000000000001.seg", f->spool);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	snprintf(path, sizeof(path), "%s/mail/localhost/bob/new", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	stop_child(f, 0);
}

/* ---- outbound scheduling: a fake relay on the other end ---- */

struct got_job {
	uint64_t id;
	char head[8192];      /* "domain <d>\n" + envelope */
	char body[16384];     /* room for a report (DSN) */
	size_t body_len;
};

/* Read one relay job (JOB, DATA..., END) from the queue. */
static void
relay_expect_job(struct fx *f, struct got_job *j)
{
	struct ipc_hdr h;
	static char buf[IPC_MAX_PAYLOAD + 1];

	memset(j, 0, sizeof(*j));
	if (recv_frame(f->relay, &h, buf, sizeof(buf)) != 1)
		fail_msg("relay channel closed, wanted a JOB");
	assert_int_equal(h.type, RELAY_JOB_START);
	assert_true(h.id != 0);
	j->id = h.id;
	util_strlcpy(j->head, buf, sizeof(j->head));
	for (;;) {
		if (recv_frame(f->relay, &h, buf, sizeof(buf)) != 1)
			fail_msg("relay channel closed inside a job");
		assert_int_equal(h.id, j->id);
		if (h.type == RELAY_JOB_END) {
			assert_int_equal(h.len, 0);
			break;
		}
		assert_int_equal(h.type, RELAY_JOB_DATA);
		assert_true(j->body_len + h.len < sizeof(j->body));
		memcpy(j->body + j->body_len, buf, h.len);
		j->body_len += h.len;
	}
	j->body[j->body_len] = '\0';
}

/* true if a frame arrives from the queue on the relay channel within ms. */
static bool
relay_readable(struct fx *f, int ms)
{
	struct pollfd pfd = { f->relay, POLLIN, 0 };

	return poll(&pfd, 1, ms) == 1;
}

static void
relay_answer(struct fx *f, uint64_t id, const char *payload)
{
	send_frame(f->relay, RELAY_JOB_RESULT, id, payload, strlen(payload));
}

/* A committed message (body) from a previous run; qid gets its id. */
static void
make_queued_body(struct fx *f, int64_t arrival, const char *const *rcpts,
    size_t n, const char *body, char qid[17])
{
	struct envelope env;
	struct spool *sp = open_stopped(f);
	struct spool_txn *t;

	envelope_init(&env);
	env.arrival = arrival;
	envelope_set(&env.sender, "old@example.org");
	for (size_t i = 0; i < n; i++)
		envelope_add_rcpt(&env, rcpts[i], NULL, 0);
	t = spool_txn_begin(sp, &env);
	assert_non_null(t);
	assert_int_equal(spool_txn_write(t, body, strlen(body)), 0);
	spool_commit_batch(sp, &t, 1);
	assert_int_equal(spool_txn_error(t), 0);
	spool_txn_free(&t);
	util_strlcpy(qid, env.id, 17);
	envelope_clear(&env);
	spool_free(&sp);
}

static void
make_queued(struct fx *f, int64_t arrival, const char *const *rcpts,
    size_t n, char qid[17])
{
	make_queued_body(f, arrival, rcpts, n, BODY, qid);
}

/* Journal "recipient i deferred until next" into a stopped spool. */
static void
journal_deferred(struct fx *f, const char *qid, size_t i, int64_t next)
{
	struct spool *sp = open_stopped(f);
	struct spool_msg *m;
	char err[256];

	m = spool_msg_load(sp, qid, err, sizeof(err));
	assert_non_null(m);
	spool_msg_deferred(m, i, next, "451 4.4.1 earlier try");
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	spool_free(&sp);
}

/*
 * Two local and three remote recipients in two domains (one spelled in
 * two cases): the locals land in Maildirs, the remotes make two jobs.
 * One job comes back D and F, the other with only its via line (what the
 * placeholder relay says): T. After the back-off the T job comes again.
 */
static void
test_relay_jobs(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost", "x@one.test",
		"carol@localhost", "y@two.test", "z@ONE.test" };
	struct got_job a, b, c;
	char qid[17], *got;
	int64_t t0;

	f->use_relay = true;
	f->cfg.retry_min = 1;
	f->cfg.retry_max = 1;
	start_child(f);
	submit(f, 1, rcpts, 5, BODY, qid);
	relay_expect_job(f, &a);
	relay_expect_job(f, &b);
	if (strncmp(a.head, "domain two.test\n", 16) == 0) {
		struct got_job tmp = a;
		a = b;
		b = tmp;
	}
	/* One job per domain, case-insensitive, recipients in order. */
	assert_memory_equal(a.head, "domain one.test\nversion 1\n", 26);
	assert_non_null(strstr(a.head, "\nsender alice@example.org\n"));
	assert_non_null(strstr(a.head, "\nrcpt - - x@one.test\nrcpt - - z@ONE.test\n"));
	assert_null(strstr(a.head, "localhost"));
	assert_null(strstr(a.head, "two.test"));
	assert_non_null(strstr(a.head, qid));
	assert_memory_equal(b.head, "domain two.test\n", 16);
	assert_non_null(strstr(b.head, "\nrcpt - - y@two.test\n"));
	assert_null(strstr(b.head, "one.test"));
	assert_string_equal(a.body, BODY);
	assert_string_equal(b.body, BODY);
	assert_true(a.id != b.id);
	wait_count(f, "mail/localhost/bob/new", 1);
	wait_count(f, "mail/localhost/carol/new", 1);

	relay_answer(f, a.id, "via mx.one.test 127.0.0.2 TLSv1.3\n"
	    "0 D 250 2.0.0 Ok queued\n"
	    "1 F 550 5.1.1 <z@ONE.test> no such user\n");
	t0 = (int64_t)time(NULL);
	relay_answer(f, b.id, "via - - -\n");
	wait_journal(f, qid, "\nD 1\n");
	wait_journal(f, qid, "\nF 4 550 5.1.1 <z@ONE.test> no such user\n");
	wait_journal(f, qid, " 1 451 4.4.0 No result from the relay\n");
	got = queued_image(f, qid);
	assert_non_null(strstr(got, "\nD 0\n"));
	assert_non_null(strstr(got, "\nD 2\n"));
	assert_non_null(strstr(got, "\nT 3 "));
	free(got);
	/* The failure of z@ONE.test is reported to the sender at once
	 * (docs/dsn.md): a message of its own, null sender. */
	relay_expect_job(f, &c);
	assert_memory_equal(c.head, "domain example.org\n", 19);
	assert_non_null(strstr(c.head, "\nsender \n"));
	assert_non_null(strstr(c.head, "\nrcpt - - alice@example.org\n"));
	assert_non_null(strstr(c.body, "Auto-Submitted: auto-replied\r\n"));
	assert_non_null(strstr(c.body, "Final-Recipient: rfc822;z@ONE.test\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\n"
	    "Remote-MTA: dns; mx.one.test\r\n"));
	/* x@one.test (no NOTIFY) and the locals: no success report */
	assert_null(strstr(c.body, "x@one.test"));
	assert_null(strstr(c.body, "Action: relayed"));
	relay_answer(f, c.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	/* After retry_min (1 s) the deferred recipient comes back alone. */
	relay_expect_job(f, &c);
	assert_true((int64_t)time(NULL) >= t0 + 1);
	assert_memory_equal(c.head, "domain two.test\n", 16);
	assert_non_null(strstr(c.head, "\nrcpt - - y@two.test\n"));
	assert_null(strstr(c.head, "one.test"));
	relay_answer(f, c.id, "via mx.two.test 127.0.0.3 -\n0 D 250 2.0.0 Ok\n");
	wait_queue_gone(f, qid);   /* every recipient final */
	stop_child(f, 0);
	assert_int_equal(queued_ids(f, NULL, 0), 0);
}

/* A recipient still deferred past max_queue_lifetime fails (4.4.7). */
static void
test_relay_expiry(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "a@far.test" };
	struct got_job j;
	char qid[17];

	make_queued(f, (int64_t)time(NULL) - 7200, rcpts, 1, qid);
	f->use_relay = true;
	f->cfg.max_queue_lifetime = 3600;
	start_child(f);
	relay_expect_job(f, &j);
	assert_memory_equal(j.head, "domain far.test\n", 16);
	/* No journal records yet: F would be written only with the message
	 * kept, so the removal itself shows the recipient is final. */
	relay_answer(f, j.id, "via mx.far.test 127.0.0.2 -\n"
	    "0 T 451 4.7.1 try later\n");
	wait_queue_gone(f, qid);
	/* The sender gets the failure report; it fails too: dropped, and
	 * never reported on (null sender). */
	relay_expect_job(f, &j);
	assert_memory_equal(j.head, "domain example.org\n", 19);
	assert_non_null(strstr(j.head, "\nsender \n"));
	assert_non_null(strstr(j.body, "Action: failed\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(j.body, "Diagnostic-Code: smtp; 451 4.4.7 "
	    "Delivery time expired"));
	relay_answer(f, j.id, "via mx.example.org 127.0.0.4 -\n"
	    "0 F 550 5.1.1 no alice here\n");
	assert_false(relay_readable(f, 500));
	stop_child(f, 0);
}

/*
 * A recipient deferred longer than delay_warning_time gets one delay
 * report, even before its next attempt is due; the journal's W record
 * keeps it from being sent again after a restart (docs/dsn.md).
 */
static void
test_delay_report_once(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "slow@far.test" };
	struct got_job j;
	char qid[17];
	int64_t now = (int64_t)time(NULL);

	make_queued(f, now - 7200, rcpts, 1, qid);
	journal_deferred(f, qid, 0, now + 3600);
	f->use_relay = true;
	f->cfg.delay_warning_time = 3600;
	start_child(f);
	relay_expect_job(f, &j);
	assert_memory_equal(j.head, "domain example.org\n", 19);
	assert_non_null(strstr(j.head, "\nsender \n"));
	assert_non_null(strstr(j.head, "\nrcpt - - old@example.org\n"));
	assert_non_null(strstr(j.body, "Subject: Delayed Mail"));
	assert_non_null(strstr(j.body, "Final-Recipient: rfc822;slow@far.test\r\n"
	    "Action: delayed\r\nStatus: 4.4.1\r\n"));
	assert_non_null(strstr(j.body, "Will-Retry-Until: "));
	assert_non_null(strstr(j.body, "Content-Type: text/rfc822-headers\r\n"));
	wait_journal(f, qid, "\nW 0\n");
	relay_answer(f, j.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	/* not tried before its next attempt, not warned twice */
	assert_false(relay_readable(f, 500));
	stop_child(f, 0);
	start_child(f);
	assert_false(relay_readable(f, 800));
	stop_child(f, 0);
}

/*
 * One report per message (docs/dsn.md): a local recipient whose mailbox
 * no longer exists fails at the scan, two remote ones fail in two relay
 * jobs (two domains); the sender gets ONE report naming all three, once
 * both jobs are answered, and nothing more.
 */
static void
test_one_report_per_message(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "gone@localhost", "a@one.test",
		"b@two.test" };
	struct got_job a, b, r;
	char qid[17];

	make_queued(f, (int64_t)time(NULL), rcpts, 3, qid);
	f->use_relay = true;
	start_child(f);
	relay_expect_job(f, &a);
	relay_expect_job(f, &b);
	wait_journal(f, qid, "\nF 0 550 5.1.1 <gone@localhost>");
	/* the local failure waits for the jobs: no report yet */
	assert_false(relay_readable(f, 300));
	relay_answer(f, a.id, "via mx.x.test 127.0.0.2 -\n"
	    "0 F 550 5.1.1 no such user\n");
	assert_false(relay_readable(f, 300));
	relay_answer(f, b.id, "via - - -\n0 F 0 5.1.2 domain does not exist\n");
	relay_expect_job(f, &r);
	assert_memory_equal(r.head, "domain example.org\n", 19);
	assert_non_null(strstr(r.head, "\nsender \n"));
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;gone@localhost\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550"));
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;a@one.test\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.x.test\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
	/* decided by the relay (reply code 0): no Remote-MTA */
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;b@two.test\r\n"
	    "Action: failed\r\nStatus: 5.1.2\r\nDiagnostic-Code: smtp; 550 5.1.2"));
	wait_queue_gone(f, qid);
	relay_answer(f, r.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	assert_false(relay_readable(f, 800));
	stop_child(f, 0);
}

/*
 * A report that cannot be spooled is not a reason to deliver again: the
 * outcomes are journaled, the local recipient keeps its one copy, and
 * the report alone is retried until the spool takes it (docs/dsn.md).
 * The report cannot be spooled because its body is over
 * spool_inline_max and big/ is not writable (the log itself is open
 * already: a mode does not stop its commits). The queue runs as nobody
 * when the test is root, so the directory's mode applies to it.
 */
static void
test_report_spool_failure_no_redelivery(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost", "x@far.test" };
	struct got_job j, r;
	char qid[17], big[256];
	char *got;

	f->use_relay = true;
	/* the message (BODY) stays in the log; a report is larger */
	f->cfg.spool_inline_max = 512;
	f->cfg.retry_min = 1;
	f->cfg.retry_max = 1;
	if (geteuid() == 0)
		start_child_as(f, 65534, 65534);
	else
		start_child(f);
	submit(f, 1, rcpts, 2, BODY, qid);
	relay_expect_job(f, &j);
	wait_count(f, "mail/localhost/bob/new", 1);
	wait_journal(f, qid, "\nD 0\n");
	snprintf(big, sizeof(big), "%s/big", f->spool);
	assert_int_equal(chmod(big, 0500), 0);
	relay_answer(f, j.id, "via mx.far.test 127.0.0.2 -\n"
	    "0 F 550 5.1.1 no such user\n");
	wait_journal(f, qid, "\nF 1 550 5.1.1 no such user\n");
	/* several report attempts fail (1 s apart): nothing is sent, bob
	 * is not delivered to again, the message stays for the report */
	assert_false(relay_readable(f, 3500));
	assert_int_equal(count_sub(f, "mail/localhost/bob/new"), 1);
	got = queued_image(f, qid);
	assert_non_null(strstr(got, "\nF 1 "));
	assert_null(strstr(got, "\nR 1\n"));
	free(got);
	/* the spool works again: the report goes out, once */
	assert_int_equal(chmod(big, 0700), 0);
	relay_expect_job(f, &r);
	assert_memory_equal(r.head, "domain example.org\n", 19);
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;x@far.test\r\n"
	    "Action: failed\r\n"));
	assert_null(strstr(r.body, "bob@localhost"));
	wait_queue_gone(f, qid);
	relay_answer(f, r.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	assert_false(relay_readable(f, 800));
	assert_int_equal(count_sub(f, "mail/localhost/bob/new"), 1);
	stop_child(f, 0);
}

/*
 * A crash after the outcomes were journaled and before the report was
 * spooled: the journal says the report is owed (an A record before F,
 * no R), so the next start sends it without trying the recipient again.
 * A final outcome without an A record comes from an older tern, which
 * spooled the report before journaling: not reported twice.
 */
static void
test_owed_report_after_restart(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "x@far.test" };
	struct got_job r;
	char owed[17], old[17], err[256];
	struct spool *sp;
	struct spool_msg *m;
	int64_t now = (int64_t)time(NULL);

	make_queued(f, now - 60, rcpts, 1, owed);
	make_queued(f, now - 60, rcpts, 1, old);
	sp = open_stopped(f);
	m = spool_msg_load(sp, owed, err, sizeof(err));
	assert_non_null(m);
	spool_msg_attempt(m, 0, now - 30, 's', "mx.far.test");
	spool_msg_failed(m, 0, "550 5.1.1 no such user");
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	m = spool_msg_load(sp, old, err, sizeof(err));
	assert_non_null(m);
	spool_msg_failed(m, 0, "550 5.1.1 no such user");
	/* every recipient final, none owed a report: simply removed */
	assert_int_equal(spool_msg_flush(m), 0);
	spool_msg_close(&m);
	spool_free(&sp);

	f->use_relay = true;
	start_child(f);
	relay_expect_job(f, &r);
	assert_memory_equal(r.head, "domain example.org\n", 19);
	assert_non_null(strstr(r.body, owed));
	assert_null(strstr(r.body, old));
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;x@far.test\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.far.test\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
	    "Last-Attempt-Date: "));
	wait_queue_gone(f, owed);
	wait_queue_gone(f, old);
	relay_answer(f, r.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	/* no job for far.test, no second report */
	assert_false(relay_readable(f, 800));
	stop_child(f, 0);
}

/*
 * A Maildir that cannot be written (here: its directory is a file, which
 * stops root too) defers the recipient with a generic reply: the path
 * and the system error stay in the log, since the reply reaches the
 * sender in delay and expiry reports (docs/dsn.md).
 */
static void
test_local_deferral_reply_is_generic(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost" };
	char qid[17], path[256], *got;
	int fd;

	snprintf(path, sizeof(path), "%s/mail/localhost", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/mail/localhost/bob", f->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	start_child(f);
	submit(f, 1, rcpts, 1, BODY, qid);
	wait_journal(f, qid, " 1 451 4.3.0 mailbox temporarily unavailable\n");
	got = queued_image(f, qid);
	assert_null(strstr(got, f->dir));
	assert_null(strstr(got, "maildir"));
	free(got);
	stop_child(f, 0);
}

/* The only entry of directory <f->dir>/sub, into name. */
static void
only_entry(struct fx *f, const char *sub, char *name, size_t namesize)
{
	char p[512];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	d = opendir(p);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.') {
			util_strlcpy(name, de->d_name, namesize);
			n++;
		}
	closedir(d);
	assert_int_equal(n, 1);
}

/* What a mail reader does: new/<x> -> cur/<x>:2,S in a Maildir. */
static void
read_by_user(struct fx *f, const char *maildir)
{
	char sub[256], name[300], from[1000], to[1000];

	snprintf(sub, sizeof(sub), "%s/new", maildir);
	only_entry(f, sub, name, sizeof(name));
	snprintf(from, sizeof(from), "%s/%s/new/%s", f->dir, maildir, name);
	snprintf(to, sizeof(to), "%s/%s/cur/%s:2,S", f->dir, maildir, name);
	assert_int_equal(rename(from, to), 0);
}

/*
 * A crash after the Maildir rename and before the journal: the next start
 * delivers the message again and finds each copy by its name. bob's, which
 * his mail reader has moved to cur/ and flagged meanwhile, counts as
 * delivered (for bob, and for team, which reaches bob too); carol's was
 * never written and is. The tmp/ file the crashed delivery left in
 * carol's Maildir (another process's name) goes at recovery.
 */
static void
test_recovery_finds_earlier_copy(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost", "team@localhost" };
	char qid[17], err[256], path[700], tmpname[300];
	struct spool *sp;
	struct spool_msg *m;
	struct maildir_msg mm;
	size_t len;
	int basefd, fd;

	make_queued(f, (int64_t)time(NULL), rcpts, 2, qid);
	sp = open_stopped(f);
	m = spool_msg_load(sp, qid, err, sizeof(err));
	assert_non_null(m);
	/* the crashed run: bob's copy written, carol's half written */
	mm.return_path = "old@example.org";
	mm.delivered_to = "bob@localhost";
	mm.body = spool_msg_body(m, &len);
	mm.len = len;
	mm.id = qid;
	mm.tag = spool_msg_tag(m);
	mm.arrival_us = spool_id_time_us(qid);
	snprintf(path, sizeof(path), "%s/mail/localhost/carol/tmp", f->dir);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/mail", f->dir);
	basefd = open(path, O_RDONLY | O_DIRECTORY);
	assert_true(basefd >= 0);
	assert_int_equal(maildir_deliver(basefd, "localhost/bob", &mm, 0, NULL,
	    0), 0);
	close(basefd);
	read_by_user(f, "mail/localhost/bob");
	mm.delivered_to = "carol@localhost";
	assert_int_equal(maildir_name(&mm, true, tmpname, sizeof(tmpname)), 0);
	snprintf(path, sizeof(path), "%s/mail/localhost/carol/tmp/%s", f->dir,
	    tmpname);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "Return-Path: <old@", 18), 18);
	close(fd);
	spool_msg_close(&m);
	spool_free(&sp);
	usleep(50 * 1000);   /* file system time stamps are coarse */

	start_child(f);
	wait_queue_gone(f, qid);
	wait_count(f, "mail/localhost/carol/tmp", 0);
	assert_int_equal(count_sub(f, "mail/localhost/bob/new"), 0);
	assert_int_equal(count_sub(f, "mail/localhost/bob/cur"), 1);
	assert_int_equal(count_sub(f, "mail/localhost/bob/tmp"), 0);
	assert_int_equal(count_sub(f, "mail/localhost/carol/new"), 1);
	stop_child(f, 0);
}

/*
 * An alias whose expansion half failed is retried as a whole: the
 * mailbox that got the message finds its copy (in cur/, read meanwhile)
 * and gets no second one.
 */
static void
test_alias_retry_no_second_copy(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "team@localhost" };
	char qid[17], path[256];
	int fd;

	f->cfg.retry_min = 1;
	f->cfg.retry_max = 1;
	/* carol's Maildir cannot be made: a file where its directory goes */
	snprintf(path, sizeof(path), "%s/mail/localhost", f->dir);
	assert_int_equal(util_mkdirs(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/mail/localhost/carol", f->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	start_child(f);
	submit(f, 1, rcpts, 1, BODY, qid);
	wait_journal(f, qid, "\nT 0 ");
	wait_count(f, "mail/localhost/bob/new", 1);
	/* bob reads his copy; only then can carol's Maildir be made, so
	 * every retry before that fails again */
	read_by_user(f, "mail/localhost/bob");
	assert_int_equal(unlink(path), 0);
	wait_queue_gone(f, qid);
	assert_int_equal(count_sub(f, "mail/localhost/carol/new"), 1);
	assert_int_equal(count_sub(f, "mail/localhost/bob/new"), 0);
	assert_int_equal(count_sub(f, "mail/localhost/bob/cur"), 1);
	stop_child(f, 0);
}

/* A message with n Received: fields (and with decoys, which must not
 * count: a folded line, another field name, the body). Static buffer. */
static const char *
hops_body(unsigned n)
{
	static char buf[16384];
	size_t o = 0;

	for (unsigned i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o,
		    "%s from hop%u.test by mx.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
		    i % 3 == 0 ? "Received:" : i % 3 == 1 ? "RECEIVED :" :
		    "received\t:", i);
	snprintf(buf + o, sizeof(buf) - o, "\tReceived: folded into the last\r\n"
	    "X-Received: from elsewhere\r\nSubject: hops\r\n\r\n"
	    "Received: from the body\r\n");
	return buf;
}

/*
 * RFC 5321 6.3: a queued message with more Received: fields than
 * max_received_headers (100 by default) is neither delivered nor
 * relayed: every recipient fails with 5.4.6 and the sender gets one
 * report. One with exactly the limit goes through. A spooled message
 * also carries tern's own Received: field, so the queue allows one more.
 */
static void
test_mail_loop_at_delivery(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "bob@localhost", "x@far.test" };
	static const char *const ok_rcpts[] = { "carol@localhost" };
	char loop_qid[17], ok_qid[17];
	struct got_job r;
	int64_t now = (int64_t)time(NULL);

	make_queued_body(f, now, rcpts, 2, hops_body(102), loop_qid);
	make_queued_body(f, now, ok_rcpts, 1, hops_body(101), ok_qid);
	f->use_relay = true;
	start_child(f);
	relay_expect_job(f, &r);   /* the report, and no job for far.test */
	assert_memory_equal(r.head, "domain example.org\n", 19);
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;bob@localhost\r\n"
	    "Action: failed\r\nStatus: 5.4.6\r\n"));
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;x@far.test\r\n"
	    "Action: failed\r\nStatus: 5.4.6\r\n"));
	assert_non_null(strstr(r.body, "554 5.4.6 Too many"));
	wait_queue_gone(f, loop_qid);
	wait_count(f, "mail/localhost/carol/new", 1);
	wait_queue_gone(f, ok_qid);
	relay_answer(f, r.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	assert_false(relay_readable(f, 500));
	assert_int_equal(count_sub(f, "mail/localhost/bob"), 0);
	stop_child(f, 0);
}

/* The limit is the option's: with max_received_headers 1, three fields
 * (tern's own and two) are a loop and two are not. */
static void
test_mail_loop_limit_option(void **state)
{
	struct fx *f = *state;
	static const char *const bob[] = { "bob@localhost" };
	static const char *const carol[] = { "carol@localhost" };
	char loop_qid[17], ok_qid[17];
	struct got_job r;
	int64_t now = (int64_t)time(NULL);

	f->cfg.max_received_headers = 1;
	make_queued_body(f, now, bob, 1, hops_body(3), loop_qid);
	make_queued_body(f, now, carol, 1, hops_body(2), ok_qid);
	f->use_relay = true;
	start_child(f);
	relay_expect_job(f, &r);
	assert_non_null(strstr(r.body, "Final-Recipient: rfc822;bob@localhost\r\n"
	    "Action: failed\r\nStatus: 5.4.6\r\n"));
	wait_count(f, "mail/localhost/carol/new", 1);
	wait_queue_gone(f, loop_qid);
	assert_int_equal(count_sub(f, "mail/localhost/bob"), 0);
	relay_answer(f, r.id, "via mx.example.org 127.0.0.4 -\n0 D 250 2.0.0 Ok\n");
	stop_child(f, 0);
}

/*
 * max_relay_connections_per_domain 1: three messages to one domain go
 * one at a time, while a message to another domain is not held up.
 */
static void
test_relay_per_domain_limit(void **state)
{
	struct fx *f = *state;
	static const char *const busy[] = { "u@busy.test" };
	static const char *const other[] = { "v@other.test" };
	char qid[4][17];
	struct got_job j, first;
	bool done[3] = { false, false, false };

	f->use_relay = true;
	f->cfg.max_relay_connections_per_domain = 1;
	start_child(f);
	for (int i = 0; i < 3; i++)
		submit(f, (uint64_t)i + 1, busy, 1, BODY, qid[i]);
	relay_expect_job(f, &first);
	assert_memory_equal(first.head, "domain busy.test\n", 17);
	assert_false(relay_readable(f, 500));   /* the other two wait */
	submit(f, 4, other, 1, BODY, qid[3]);
	relay_expect_job(f, &j);               /* another domain goes at once */
	assert_memory_equal(j.head, "domain other.test\n", 18);
	relay_answer(f, j.id, "via mx 127.0.0.3 -\n0 D 250 2.0.0 Ok\n");
	wait_queue_gone(f, qid[3]);
	assert_false(relay_readable(f, 300));
	for (int n = 0; n < 3; n++) {
		int k = -1;

		if (n > 0) {
			relay_expect_job(f, &j);
			assert_memory_equal(j.head, "domain busy.test\n", 17);
		} else {
			j = first;
		}
		for (int i = 0; i < 3; i++)
			if (!done[i] && strstr(j.head, qid[i]) != NULL)
				k = i;
		assert_true(k >= 0);
		done[k] = true;
		/* Only ever one in flight. */
		assert_false(relay_readable(f, 200));
		relay_answer(f, j.id, "via mx 127.0.0.2 -\n0 D 250 2.0.0 Ok\n");
		wait_queue_gone(f, qid[k]);
	}
	stop_child(f, 0);
}

/* max_relay_connections 2: three domains, two jobs out at a time. */
static void
test_relay_global_limit(void **state)
{
	struct fx *f = *state;
	static const char *const r1[] = { "a@d1.test" }, *const r2[] = { "b@d2.test" },
	    *const r3[] = { "c@d3.test" };
	char qid[3][17];
	struct got_job j1, j2, j3;

	f->use_relay = true;
	f->cfg.max_relay_connections = 2;
	start_child(f);
	submit(f, 1, r1, 1, BODY, qid[0]);
	submit(f, 2, r2, 1, BODY, qid[1]);
	submit(f, 3, r3, 1, BODY, qid[2]);
	relay_expect_job(f, &j1);
	relay_expect_job(f, &j2);
	assert_false(relay_readable(f, 500));
	relay_answer(f, j1.id, "via mx 127.0.0.2 -\n0 D 250 2.0.0 Ok\n");
	relay_expect_job(f, &j3);
	assert_false(relay_readable(f, 300));
	relay_answer(f, j2.id, "via mx 127.0.0.2 -\n0 D 250 2.0.0 Ok\n");
	relay_answer(f, j3.id, "via mx 127.0.0.2 -\n0 D 250 2.0.0 Ok\n");
	for (int i = 0; i < 3; i++)
		wait_queue_gone(f, qid[i]);
	stop_child(f, 0);
}

/* Deferred mail survives a restart: the job comes at its journaled time. */
static void
test_relay_recovery(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "carol@localhost", "r@later.test" };
	struct got_job j;
	char qid[17];
	int64_t next = (int64_t)time(NULL) + 3;

	make_queued(f, (int64_t)time(NULL), rcpts, 2, qid);
	journal_deferred(f, qid, 1, next);
	f->use_relay = true;
	start_child(f);
	wait_count(f, "mail/localhost/carol/new", 1);   /* pending: at once */
	assert_false(relay_readable(f, 1000));
	relay_expect_job(f, &j);
	assert_true((int64_t)time(NULL) >= next);
	assert_memory_equal(j.head, "domain later.test\n", 18);
	relay_answer(f, j.id, "via mx 127.0.0.2 -\n0 D 250 2.0.0 Ok\n");
	wait_queue_gone(f, qid);
	stop_child(f, 0);
}

/*
 * A malformed RESULT closes the relay channel and defers the job; a new
 * channel from the parent (CTL_RELAY_FD) gets it again.
 */
static void
test_relay_violation(void **state)
{
	struct fx *f = *state;
	static const char *const rcpts[] = { "p@bad.test", "q@bad.test" };
	struct got_job j;
	char qid[17], buf[64];
	int sp[2];

	f->use_relay = true;
	f->cfg.retry_min = 1;
	start_child(f);
	submit(f, 1, rcpts, 2, BODY, qid);
	relay_expect_job(f, &j);
	/* One line for two recipients. */
	relay_answer(f, j.id, "via - - -\n0 D 250 2.0.0 Ok\n");
	assert_true(relay_readable(f, WAIT_MS));
	assert_int_equal(read(f->relay, buf, sizeof(buf)), 0);   /* closed */
	close(f->relay);
	f->relay = -1;
	wait_journal(f, qid, " 1 451 4.4.0 Relay process unavailable\n");
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(send_ctl(f->ctl, CTL_RELAY_FD, sp[1]), 0);
	close(sp[1]);
	f->relay = sp[0];
	relay_expect_job(f, &j);
	assert_non_null(strstr(j.head, "\nrcpt - - p@bad.test\nrcpt - - q@bad.test\n"));
	/* Unknown job ids and frame types are violations too. */
	relay_answer(f, j.id + 1000, "via - - -\n");
	assert_true(relay_readable(f, WAIT_MS));
	assert_int_equal(read(f->relay, buf, sizeof(buf)), 0);
	stop_child(f, 0);
}

/* Resident set of pid in KiB, from /proc. */
static long
rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(fp);
	return kib;
}

/* CPU ticks pid has used; stops growing once the queue is idle. */
static long
cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	long ut = 0, st = 0;
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fp = fopen(path, "r");
	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	assert_non_null(p);
	/* state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime stime */
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld",
	    &ut, &st), 2);
	return ut + st;
}

/* Start the queue on the spool as it is, wait until it is idle, stop it;
 * its resident set once idle, in KiB. */
static long
idle_rss(struct fx *f)
{
	long last = -1, rss;
	int still = 0;

	start_child(f);
	while (still < 4) {
		long t = cpu_ticks(f->pid);

		usleep(250000);
		still = t == last ? still + 1 : 0;
		last = t;
	}
	rss = rss_kib(f->pid);
	stop_child(f, 0);
	return rss;
}

/*
 * The in-memory cost of a deferred message (docs/queue.md): RSS of an
 * idle queue process holding TERN_QUEUE_MEASURE messages (each with one
 * remote recipient deferred for an hour) minus that of an empty one.
 * A measurement, not a check: skipped unless the variable is set, e.g.
 *   TERN_QUEUE_MEASURE=100000 build/tests/test_queue
 * The spool goes to /dev/shm so that creating it takes seconds.
 */
static void
test_memory_per_message(void **state)
{
	struct fx *f = *state;
	const char *env = getenv("TERN_QUEUE_MEASURE");
	long n = env != NULL ? atol(env) : 0, base, full;
	char dir[64], err[256];
	struct spool *sp;
	int64_t now = (int64_t)time(NULL);

	if (n <= 0)
		skip();
	util_strlcpy(dir, "/dev/shm/tern-measure-XXXXXX", sizeof(dir));
	assert_non_null(mkdtemp(dir));
	snprintf(f->spool, sizeof(f->spool), "%s/spool", dir);
	f->use_relay = true;   /* never answered: nothing is due anyway */
	base = idle_rss(f);

	sp = open_stopped(f);
	for (long i = 0; i < n; i += 256) {
		struct spool_txn *t[256];
		size_t k = 0;

		for (; k < 256 && i + (long)k < n; k++) {
			struct envelope e;
			char rcpt[64];

			envelope_init(&e);
			e.arrival = now;
			envelope_set(&e.sender, "alice@example.org");
			snprintf(rcpt, sizeof(rcpt), "user%ld@d%ld.test",
			    i + (long)k, (i + (long)k) % 1000);
			envelope_add_rcpt(&e, rcpt, NULL, 0);
			t[k] = spool_txn_begin(sp, &e);
			assert_non_null(t[k]);
			assert_int_equal(spool_txn_write(t[k], BODY,
			    sizeof(BODY) - 1), 0);
			envelope_clear(&e);
		}
		spool_commit_batch(sp, t, k);
		for (size_t x = 0; x < k; x++) {
			struct spool_msg *m;
			char id[17];

			assert_int_equal(spool_txn_error(t[x]), 0);
			util_strlcpy(id, spool_txn_id(t[x]), sizeof(id));
			spool_txn_free(&t[x]);
			m = spool_msg_load(sp, id, err, sizeof(err));
			assert_non_null(m);
			spool_msg_deferred(m, 0, now + 3600, "451 4.4.1 later");
			assert_int_equal(spool_msg_flush(m), 0);
			spool_msg_close(&m);
		}
	}
	spool_free(&sp);
	full = idle_rss(f);
	print_message("queue RSS: empty %ld KiB, %ld deferred messages %ld KiB: "
	    "%.1f bytes per message\n", base, n, full,
	    (double)(full - base) * 1024.0 / (double)n);
	unit_rm_tree(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_submit_and_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_during_commit_rolls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_transaction_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_privilege_drop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay_report_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_report_per_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_spool_failure_no_redelivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owed_report_after_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_local_deferral_reply_is_generic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_finds_earlier_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alias_retry_no_second_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_loop_at_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_loop_limit_option, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_per_domain_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_global_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_violation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_per_message, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
