/*
 * queue.c - the queue process (see queue.h and docs/spool-format.md).
 *
 * Ownership and threads:
 *  - struct txn, struct chan and struct qmsg belong to the event loop.
 *    A txn in TXN_COMMITTING is also referenced by the commit pipeline;
 *    the loop frees it only when the commit thread hands it back.
 *  - A delivery job (struct djob) carries a copy of the queue id; workers
 *    never touch the loop's struct qmsg. At most one job per message is in
 *    flight (qmsg.busy), so no two threads ever work on one queue file.
 *  - q->mu guards the job lists, the done lists and the stop flags; the
 *    loop learns about finished work by reading q->done_fd (an eventfd).
 *
 * Memory per queued message is one small struct qmsg: the envelope and
 * the message stay on disk and are loaded by the worker that delivers, so
 * a deferred queue of 100,000 messages costs a few megabytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "envelope.h"
#include "ipc.h"
#include "local_lookup.h"
#include "log.h"
#include "maildir.h"
#include "queue.h"
#include "spool.h"
#include "util.h"

#define COMMIT_BATCH_MAX 256
#define CHAN_OUT_HIGH (1024 * 1024)   /* stop reading while replies pile up */
#define CHAN_OUT_LOW (64 * 1024)
#define CHAN_IN_HIGH (2 * IPC_MAX_PAYLOAD)
#define SHUTDOWN_GRACE_SECS 30
#define LOAD_RETRY_SECS 60
#define ERR_TOO_BIG (-1)               /* txn.err: not an errno */

static const char REPLY_NOSPACE[] = "452 4.3.1 Insufficient system storage";
static const char REPLY_WRITE[] = "451 4.3.0 Queue file write error";
static const char REPLY_TOO_BIG[] =
    "552 5.3.4 Message size exceeds fixed maximum message size";
static const char REPLY_BUSY[] =
    "451 4.3.2 Too many concurrent transactions, try again later";
static const char REPLY_STOPPING[] =
    "451 4.3.2 Queue shutting down, try again later";

enum txn_state { TXN_OPEN, TXN_FAILED, TXN_COMMITTING };

struct chan;

struct txn {
	uint64_t sid;              /* the smtp side's transaction number */
	struct chan *chan;         /* NULL once the channel is gone */
	struct txn *hnext;         /* chan bucket chain */
	struct txn *qnext;         /* commit queue / done list */
	struct spool_txn *st;      /* NULL once failed */
	enum txn_state state;
	int err;                   /* errno or ERR_TOO_BIG when failed */
	bool abandoned;            /* ABORT arrived during the commit */
	size_t nrcpt;
	char *from_q;              /* log-quoted sender */
	char *client_q;            /* log-quoted client address */
};

struct chan {
	struct queue *q;
	struct bufferevent *bev;
	struct txn **buckets;
	size_t mask;               /* nbuckets - 1 */
	size_t ntxns;
	bool paused;               /* reading stopped: output backed up */
	bool dead;
};

struct qmsg {
	struct queue *q;
	struct qmsg *prev, *next;
	char id[QUEUE_ID_LEN + 1];
	bool busy;                 /* a delivery job is in flight */
	bool logged_waiting;       /* "waiting for relay" logged once per load */
	struct event *retry_ev;    /* created on first deferral */
};

enum djob_result { DJ_KEEP, DJ_REMOVED, DJ_GONE, DJ_RETRY, DJ_SKIPPED };

struct djob {
	struct djob *next;
	struct qmsg *m;            /* loop only */
	char id[QUEUE_ID_LEN + 1];
	bool log_waiting;
	enum djob_result result;
	int64_t next_attempt;      /* earliest deferred retry; 0: none */
	size_t nrelay;
};

struct base_dir {
	char *path;                /* static prefix of a Maildir pattern */
	size_t len;
	int fd;
};

struct list {                  /* singly linked FIFO, intrusive */
	void *head, *tail;
};

struct queue {
	const struct config *cfg;
	struct spool *spool;
	struct base_dir *bases;
	size_t nbases;
	size_t max_txns;
	uint64_t max_size;

	struct event_base *base;
	struct event *ctl_ev, *done_ev, *sig_ev, *grace_ev;
	int ctl_fd;
	int done_fd;
	int sig_fd;                /* signalfd for SIGTERM, SIGINT */
	struct chan *chan;
	struct qmsg *msgs;
	size_t nmsgs;

	/* Shared with the workers, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t commit_cv, deliver_cv;
	struct txn *commit_head, *commit_tail;
	struct djob *new_head, *new_tail;   /* fresh mail first */
	struct djob *old_head, *old_tail;   /* recovered and retried */
	struct txn *done_txn_head, *done_txn_tail;
	struct djob *done_job_head, *done_job_tail;
	bool stop_threads;
	uint64_t ncommits, nbatches;        /* group commit statistics */
	pthread_t *threads;
	size_t nthreads;

	/* Loop only. */
	size_t commits_inflight;
	size_t deliveries_inflight;
	bool stopping;
	bool threads_started;
	int exit_code;
};

static void msg_schedule(struct queue *q, struct qmsg *m, bool fresh);
static void maybe_exit(struct queue *q);

/* ---- helpers ---- */

static const char *
reply_for(int err)
{
	if (err == ERR_TOO_BIG)
		return REPLY_TOO_BIG;
	if (err == ENOSPC || err == EDQUOT)
		return REPLY_NOSPACE;
	return REPLY_WRITE;
}

static char *
quote_dup(const char *s)
{
	char buf[1200];

	if (s == NULL)
		return xstrdup("");
	return xstrdup(log_quote(buf, sizeof(buf), s, strlen(s), 300));
}

/* mkdir -p that hands each directory it creates to uid/gid. */
static int
mkdirs_owned(const char *path, unsigned mode, uid_t uid, gid_t gid)
{
	char buf[4096];
	size_t n = util_strlcpy(buf, path, sizeof(buf));

	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1;; p++) {
		bool last = *p == '\0';

		if (!last && *p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) == 0) {
			if ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
			    chown(buf, uid, gid) == -1)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		if (last)
			break;
		*p = '/';
	}
	return 0;
}

/* ---- start-up ---- */

struct queue *
queue_new(const struct config *cfg, uid_t uid, gid_t gid, char *err,
    size_t errsize)
{
	struct queue *q = xcalloc(1, sizeof(*q));

	q->cfg = cfg;
	q->ctl_fd = -1;
	q->done_fd = -1;
	q->sig_fd = -1;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->commit_cv, NULL);
	pthread_cond_init(&q->deliver_cv, NULL);
	q->max_txns = cfg->max_connections != 0 ? cfg->max_connections + 8 : 1024;
	if (q->max_txns > 65536)
		q->max_txns = 65536;
	q->max_size = cfg->max_message_size != 0 &&
	    cfg->max_message_size < UINT64_MAX - QUEUE_RECEIVED_ALLOWANCE ?
	    cfg->max_message_size + QUEUE_RECEIVED_ALLOWANCE : UINT64_MAX;

	if (cfg->spool_dir == NULL || cfg->spool_dir[0] != '/') {
		snprintf(err, errsize, "spool directory must be an absolute path");
		goto fail;
	}
	if (mkdirs_owned(cfg->spool_dir, 0700, uid, gid) == -1) {
		snprintf(err, errsize, "spool %s: %s", cfg->spool_dir,
		    strerror(errno));
		goto fail;
	}
	q->spool = spool_open(cfg->spool_dir, uid, gid, err, errsize);
	if (q->spool == NULL)
		goto fail;

	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];
		size_t blen;
		bool dup = false;

		if (d->maildir == NULL)
			continue;
		blen = maildir_pattern_base(d->maildir);
		if (blen == 0) {
			snprintf(err, errsize, "domain %s: maildir %s is not absolute",
			    d->name, d->maildir);
			goto fail;
		}
		for (size_t k = 0; k < q->nbases; k++)
			if (q->bases[k].len == blen &&
			    memcmp(q->bases[k].path, d->maildir, blen) == 0)
				dup = true;
		if (dup)
			continue;
		q->bases = xreallocarray(q->bases, q->nbases + 1, sizeof(*q->bases));
		struct base_dir *b = &q->bases[q->nbases];
		b->path = xstrndup(d->maildir, blen);
		b->len = blen;
		b->fd = -1;
		q->nbases++;
		if (mkdirs_owned(b->path, 0755, uid, gid) == -1) {
			snprintf(err, errsize, "maildir base %s: %s", b->path,
			    strerror(errno));
			goto fail;
		}
		b->fd = open(b->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (b->fd == -1) {
			snprintf(err, errsize, "maildir base %s: %s", b->path,
			    strerror(errno));
			goto fail;
		}
	}
	return q;
fail:
	queue_free(&q);
	return NULL;
}

/* ---- channel to the smtp process ---- */

static size_t
txn_hash(const struct chan *c, uint64_t sid)
{
	return (size_t)((sid * 0x9e3779b97f4a7c15ULL) >> 32) & c->mask;
}

static struct txn *
txn_find(struct chan *c, uint64_t sid)
{
	for (struct txn *t = c->buckets[txn_hash(c, sid)]; t; t = t->hnext)
		if (t->sid == sid)
			return t;
	return NULL;
}

static void
txn_unhash(struct chan *c, struct txn *t)
{
	struct txn **pp = &c->buckets[txn_hash(c, t->sid)];

	while (*pp != t)
		pp = &(*pp)->hnext;
	*pp = t->hnext;
	t->hnext = NULL;
	c->ntxns--;
}

static void
txn_free(struct txn *t)
{
	if (t->st != NULL)
		spool_txn_abort(&t->st);
	free(t->from_q);
	free(t->client_q);
	free(t);
}

static void
reply(struct chan *c, enum ipc_type type, uint64_t sid, const char *text)
{
	if (c == NULL || c->dead)
		return;
	ipc_write(bufferevent_get_output(c->bev), type, sid, text, strlen(text));
}

static void
violation(struct chan *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The smtp process broke the protocol: log, and close the channel once
 * the current callback is done with it. */
static void
violation(struct chan *c, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_err("queue event=protocol-violation peer=smtp reason=\"%s\"", why);
	c->dead = true;
}

static void
chan_reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct chan *c = arg;

	bufferevent_free(c->bev);
	free(c->buckets);
	free(c);
}

/*
 * Detach c from the queue: open transactions are aborted (their files
 * removed), committing ones are orphaned (rolled back when their commit
 * ends: no COMMIT_OK can reach the client). The bufferevent is freed
 * from a fresh callback, never from inside its own.
 */
static void
chan_close(struct queue *q, struct chan *c, const char *why)
{
	size_t aborted = 0;
	struct timeval now = { 0, 0 };

	if (q->chan == c)
		q->chan = NULL;
	c->dead = true;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	for (size_t i = 0; i <= c->mask; i++) {
		struct txn *t, *next;

		for (t = c->buckets[i]; t; t = next) {
			next = t->hnext;
			t->hnext = NULL;
			if (t->state == TXN_COMMITTING) {
				t->chan = NULL;
			} else {
				txn_free(t);
				aborted++;
			}
		}
		c->buckets[i] = NULL;
	}
	c->ntxns = 0;
	log_info("queue event=smtp-channel-closed reason=\"%s\" aborted=%zu",
	    why, aborted);
	if (event_base_once(q->base, -1, EV_TIMEOUT, chan_reap_cb, c, &now) == -1)
		fatal("event_base_once failed");
	maybe_exit(q);
}

static void
txn_fail(struct txn *t, int err)
{
	t->state = TXN_FAILED;
	t->err = err;
	spool_txn_abort(&t->st);
}

static void
on_begin(struct queue *q, struct chan *c, const struct ipc_msg *msg)
{
	struct envelope env;
	struct spool_txn *st;
	struct txn *t;
	char perr[160];
	size_t max_rcpts = q->cfg->max_recipients != 0 ?
	    q->cfg->max_recipients : ENVELOPE_MAX_RCPTS;

	if (txn_find(c, msg->hdr.id) != NULL) {
		violation(c, "duplicate transaction id %" PRIu64, msg->hdr.id);
		return;
	}
	envelope_init(&env);
	if (envelope_parse(&env, (const char *)msg->payload, msg->hdr.len,
	    max_rcpts, perr, sizeof(perr)) == -1) {
		violation(c, "bad envelope: %s", perr);
		return;
	}
	if (env.id[0] != '\0') {
		envelope_clear(&env);
		violation(c, "envelope carries a queue id");
		return;
	}
	if (q->stopping) {
		envelope_clear(&env);
		reply(c, IPC_SUBMIT_BEGIN_FAIL, msg->hdr.id, REPLY_STOPPING);
		return;
	}
	if (c->ntxns >= q->max_txns) {
		envelope_clear(&env);
		log_warn("queue event=begin-refused reason=\"too many transactions\" open=%zu",
		    c->ntxns);
		reply(c, IPC_SUBMIT_BEGIN_FAIL, msg->hdr.id, REPLY_BUSY);
		return;
	}
	st = spool_txn_begin(q->spool, &env);
	if (st == NULL) {
		int e = errno;
		log_err("queue event=begin-failed error=\"%s\"", strerror(e));
		reply(c, IPC_SUBMIT_BEGIN_FAIL, msg->hdr.id, reply_for(e));
		envelope_clear(&env);
		return;
	}
	t = xcalloc(1, sizeof(*t));
	t->sid = msg->hdr.id;
	t->chan = c;
	t->st = st;
	t->state = TXN_OPEN;
	t->nrcpt = env.nrcpts;
	t->from_q = quote_dup(env.sender);
	t->client_q = quote_dup(env.client_addr);
	envelope_clear(&env);
	t->hnext = c->buckets[txn_hash(c, t->sid)];
	c->buckets[txn_hash(c, t->sid)] = t;
	c->ntxns++;
	reply(c, IPC_SUBMIT_BEGIN_OK, t->sid, spool_txn_id(st));
}

static void
on_data(struct queue *q, struct chan *c, const struct ipc_msg *msg)
{
	struct txn *t = txn_find(c, msg->hdr.id);

	if (t == NULL || t->state == TXN_COMMITTING) {
		violation(c, "DATA for %s transaction %" PRIu64,
		    t == NULL ? "unknown" : "committing", msg->hdr.id);
		return;
	}
	if (t->state == TXN_FAILED)
		return;   /* the failure is reported at COMMIT */
	/* A compromised smtp process must not fill the disk: bound it here too. */
	if (msg->hdr.len > q->max_size - spool_txn_size(t->st)) {
		log_warn("queue id=%s event=too-big size=%" PRIu64 " limit=%" PRIu64,
		    spool_txn_id(t->st), spool_txn_size(t->st) + msg->hdr.len,
		    q->max_size);
		txn_fail(t, ERR_TOO_BIG);
		return;
	}
	if (spool_txn_write(t->st, msg->payload, msg->hdr.len) == -1) {
		int e = errno;
		log_err("queue id=%s event=write-failed error=\"%s\"",
		    spool_txn_id(t->st), strerror(e));
		txn_fail(t, e);
	}
}

static void
commit_push(struct queue *q, struct txn *t)
{
	pthread_mutex_lock(&q->mu);
	t->qnext = NULL;
	if (q->commit_tail != NULL)
		q->commit_tail->qnext = t;
	else
		q->commit_head = t;
	q->commit_tail = t;
	pthread_cond_signal(&q->commit_cv);
	pthread_mutex_unlock(&q->mu);
}

static void
on_commit(struct queue *q, struct chan *c, const struct ipc_msg *msg)
{
	struct txn *t = txn_find(c, msg->hdr.id);

	if (t == NULL || t->state == TXN_COMMITTING) {
		violation(c, "COMMIT for %s transaction %" PRIu64,
		    t == NULL ? "unknown" : "committing", msg->hdr.id);
		return;
	}
	if (t->state == TXN_FAILED) {
		reply(c, IPC_SUBMIT_COMMIT_FAIL, t->sid, reply_for(t->err));
		txn_unhash(c, t);
		txn_free(t);
		return;
	}
	t->state = TXN_COMMITTING;
	q->commits_inflight++;
	commit_push(q, t);
}

static void
on_abort(struct queue *q, struct chan *c, const struct ipc_msg *msg)
{
	struct txn *t = txn_find(c, msg->hdr.id);

	if (t == NULL)
		return;   /* e.g. after BEGIN_FAIL: nothing to do */
	if (t->state == TXN_COMMITTING) {
		t->abandoned = true;   /* rolled back when the commit ends */
		return;
	}
	log_info("queue id=%s event=aborted",
	    t->st != NULL ? spool_txn_id(t->st) : "-");
	txn_unhash(c, t);
	txn_free(t);
}

static void
handle_frame(struct queue *q, struct chan *c, const struct ipc_msg *msg)
{
	if (msg->hdr.id == 0) {
		violation(c, "frame type %u with id 0", msg->hdr.type);
		return;
	}
	switch (msg->hdr.type) {
	case IPC_SUBMIT_BEGIN:
		on_begin(q, c, msg);
		break;
	case IPC_SUBMIT_DATA:
		on_data(q, c, msg);
		break;
	case IPC_SUBMIT_COMMIT:
		if (msg->hdr.len != 0)
			violation(c, "COMMIT with a payload");
		else
			on_commit(q, c, msg);
		break;
	case IPC_SUBMIT_ABORT:
		if (msg->hdr.len != 0)
			violation(c, "ABORT with a payload");
		else
			on_abort(q, c, msg);
		break;
	default:
		violation(c, "unexpected frame type %u", msg->hdr.type);
		break;
	}
}

/* Take every complete frame, unless replies are piling up unread. */
static void
chan_process(struct chan *c)
{
	struct queue *q = c->q;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);

	while (!c->dead) {
		struct ipc_msg msg;
		int r;

		if (evbuffer_get_length(out) > CHAN_OUT_HIGH) {
			c->paused = true;
			bufferevent_disable(c->bev, EV_READ);
			break;
		}
		r = ipc_read(in, &msg);
		if (r == 0)
			break;
		if (r < 0) {
			violation(c, "bad frame header");
			break;
		}
		handle_frame(q, c, &msg);
		ipc_msg_clear(&msg);
	}
	if (c->dead)
		chan_close(q, c, "protocol violation");
}

static void
chan_read_cb(struct bufferevent *bev, void *arg)
{
	chan_process(arg);
}

static void
chan_write_cb(struct bufferevent *bev, void *arg)
{
	struct chan *c = arg;

	if (c->paused) {
		c->paused = false;
		bufferevent_enable(c->bev, EV_READ);
		chan_process(c);
	}
	if (!c->dead && c->q->stopping)
		maybe_exit(c->q);
}

static void
chan_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct chan *c = arg;

	if (c->dead)
		return;
	chan_close(c->q, c, (what & BEV_EVENT_EOF) ? "closed by smtp" :
	    "channel error");
}

static void
chan_open(struct queue *q, int fd)
{
	struct chan *c = xcalloc(1, sizeof(*c));
	size_t n = 16;

	while (n < q->max_txns)
		n <<= 1;
	c->q = q;
	c->mask = n - 1;
	c->buckets = xcalloc(n, sizeof(*c->buckets));
	if (util_set_nonblock(fd) == -1 || util_set_cloexec(fd) == -1)
		log_warn("queue event=smtp-channel-setup error=\"%s\"",
		    strerror(errno));
	c->bev = bufferevent_socket_new(q->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, chan_read_cb, chan_write_cb, chan_event_cb, c);
	/* Never buffer more than two frames' worth of input. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, CHAN_IN_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, CHAN_OUT_LOW, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	q->chan = c;
	log_info("queue event=smtp-channel-open");
}

/* ---- worker threads ---- */

static void
notify_loop(struct queue *q)
{
	uint64_t one = 1;

	/* Only fails if the counter would overflow: then the loop is awake. */
	if (write(q->done_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_err("queue event=eventfd-write error=\"%s\"", strerror(errno));
}

static void *
commit_main(void *arg)
{
	struct queue *q = arg;
	struct txn *batch[COMMIT_BATCH_MAX];
	struct spool_txn *st[COMMIT_BATCH_MAX];

	pthread_mutex_lock(&q->mu);
	for (;;) {
		size_t n = 0;
		bool wake;

		while (q->commit_head == NULL && !q->stop_threads)
			pthread_cond_wait(&q->commit_cv, &q->mu);
		if (q->commit_head == NULL)
			break;   /* stopping, and nothing left to commit */
		while (q->commit_head != NULL && n < COMMIT_BATCH_MAX) {
			struct txn *t = q->commit_head;
			q->commit_head = t->qnext;
			t->qnext = NULL;
			batch[n] = t;
			st[n] = t->st;
			n++;
		}
		if (q->commit_head == NULL)
			q->commit_tail = NULL;
		pthread_mutex_unlock(&q->mu);

		spool_commit_batch(q->spool, st, n);

		pthread_mutex_lock(&q->mu);
		q->ncommits += n;
		q->nbatches++;
		wake = q->done_txn_head == NULL && q->done_job_head == NULL;
		for (size_t i = 0; i < n; i++) {
			if (q->done_txn_tail != NULL)
				q->done_txn_tail->qnext = batch[i];
			else
				q->done_txn_head = batch[i];
			q->done_txn_tail = batch[i];
		}
		if (wake)
			notify_loop(q);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static int64_t
retry_delay(unsigned attempts)
{
	int64_t d = QUEUE_RETRY_MIN;

	for (unsigned i = 1; i < attempts && d < QUEUE_RETRY_MAX; i++)
		d *= 2;
	return d < QUEUE_RETRY_MAX ? d : QUEUE_RETRY_MAX;
}

/* The Maildir base holding path, and path relative to it; NULL if none. */
static const struct base_dir *
find_base(const struct queue *q, const char *path, const char **rel)
{
	const struct base_dir *best = NULL;

	for (size_t i = 0; i < q->nbases; i++) {
		const struct base_dir *b = &q->bases[i];

		if (strncmp(path, b->path, b->len) != 0)
			continue;
		if (b->len > 1 && path[b->len] != '/' && path[b->len] != '\0')
			continue;
		if (best == NULL || b->len > best->len)
			best = b;
	}
	if (best != NULL) {
		const char *r = path + best->len;
		while (*r == '/')
			r++;
		*rel = r;
	}
	return best;
}

/*
 * The local part of addr with RFC 5321 quoting removed (4.1.2
 * Quoted-string: "\" escapes the next octet), into buf. -1 if it does not
 * fit or the quoting is broken.
 */
static int
unquote_local(const char *p, size_t len, char *buf, size_t bufsize)
{
	size_t o = 0;

	if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
		for (size_t i = 1; i + 1 < len; i++) {
			char ch = p[i];
			if (ch == '\\') {
				if (i + 2 >= len)
					return -1;
				ch = p[++i];
			}
			if (o + 1 >= bufsize)
				return -1;
			buf[o++] = ch;
		}
	} else {
		if (len + 1 > bufsize)
			return -1;
		memcpy(buf, p, len);
		o = len;
	}
	buf[o] = '\0';
	return (int)o;
}

/* Deliver recipient i of m (a local one) to every mailbox it expands to. */
static void
deliver_local(struct queue *q, struct spool_msg *m, size_t i,
    const struct config_domain *d, const char *local, size_t llen,
    int64_t now)
{
	const struct envelope *env = spool_msg_envelope(m);
	const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
	const char *addr = env->rcpts[i].addr;
	struct local_target targets[LOCAL_EXPAND_MAX];
	char aq[600], lbuf[256], why[1400], reason[1500];
	int n, ll;
	size_t body_len;
	const char *body = spool_msg_body(m, &body_len);
	bool temp_fail = false;

	log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
	ll = unquote_local(local, llen, lbuf, sizeof(lbuf));
	why[0] = '\0';
	n = ll < 0 ? -1 : local_expand_explain(q->cfg, d, lbuf, (size_t)ll,
	    targets, why, sizeof(why));
	if (n < 0) {
		/* Accepted at RCPT time, so the configuration has changed since. */
		snprintf(reason, sizeof(reason),
		    "550 5.1.1 <%s>: Recipient address rejected: no such mailbox",
		    addr);
		spool_msg_failed(m, i, reason);
		log_warn("queue id=%s event=failed rcpt=<%s> reason=\"no such mailbox\" detail=\"%s\"",
		    spool_msg_id(m), aq, why[0] ? why : "unparsable local part");
		return;
	}
	for (int k = 0; k < n && !temp_fail; k++) {
		const struct local_target *t = &targets[k];
		char path[4096], mbox[600], mq[700], pq[1200], name[600];
		const struct base_dir *b;
		const char *rel = NULL;
		struct maildir_msg mm;

		snprintf(mbox, sizeof(mbox), "%s@%s", t->mailbox, t->domain->name);
		log_quote(mq, sizeof(mq), mbox, strlen(mbox), 300);
		if (config_maildir_path(t->domain, t->mailbox, path,
		    sizeof(path)) != 0) {
			snprintf(why, sizeof(why), "bad maildir path for %s", mq);
			temp_fail = true;
			break;
		}
		log_quote(pq, sizeof(pq), path, strlen(path), 500);
		b = find_base(q, path, &rel);
		if (b == NULL) {
			snprintf(why, sizeof(why), "maildir %s outside its base", pq);
			temp_fail = true;
			break;
		}
		mm.return_path = env->sender;
		mm.delivered_to = mbox;
		mm.body = body;
		mm.len = body_len;
		if (maildir_deliver(b->fd, rel, &mm, name, sizeof(name)) == -1) {
			snprintf(why, sizeof(why), "maildir %s: %s", pq,
			    strerror(errno));
			temp_fail = true;
			break;
		}
		log_info("queue id=%s event=delivered rcpt=<%s> mailbox=%s path=%s file=%s delay=%.3fs",
		    spool_msg_id(m), aq, mq, pq, name,
		    (double)(util_now_us() - spool_id_time_us(spool_msg_id(m))) / 1e6);
	}
	if (temp_fail) {
		/*
		 * XXX the recipient is retried as a whole: mailboxes of an alias
		 * that already got the message get it again. Per-target state
		 * would need a journal record per expanded mailbox.
		 */
		unsigned attempts = st->attempts + 1;
		int64_t next = now + retry_delay(attempts);

		snprintf(reason, sizeof(reason), "451 4.3.0 %s", why);
		spool_msg_deferred(m, i, next, reason);
		log_warn("queue id=%s event=deferred rcpt=<%s> attempts=%u retry_in=%" PRId64 "s reason=\"%s\"",
		    spool_msg_id(m), aq, attempts, next - now, why);
		return;
	}
	spool_msg_delivered(m, i);
}

/* Worker: one delivery pass over message j->id. */
static void
deliver_job(struct queue *q, struct djob *j)
{
	char err[300];
	struct spool_msg *m;
	const struct envelope *env;
	int64_t now = (int64_t)time(NULL);

	m = spool_msg_load(q->spool, j->id, err, sizeof(err));
	if (m == NULL) {
		if (errno == ENOENT) {
			j->result = DJ_GONE;
		} else if (errno == EBADMSG) {
			log_err("queue id=%s event=corrupt reason=\"%s\" action=quarantine",
			    j->id, err);
			if (spool_quarantine(q->spool, j->id) == -1)
				log_err("queue id=%s event=quarantine-failed error=\"%s\"",
				    j->id, strerror(errno));
			j->result = DJ_GONE;
		} else {
			log_err("queue id=%s event=load-failed error=\"%s\"", j->id, err);
			j->result = DJ_RETRY;
		}
		return;
	}
	env = spool_msg_envelope(m);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		const char *addr = env->rcpts[i].addr;
		const char *at = strrchr(addr, '@');
		const struct config_domain *d;
		char aq[600];

		if (st->state == SPOOL_RCPT_DELIVERED || st->state == SPOOL_RCPT_FAILED)
			continue;
		if (st->state == SPOOL_RCPT_DEFERRED && st->next_attempt > now)
			continue;
		log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
		if (at == NULL || at == addr || at[1] == '\0') {
			spool_msg_failed(m, i, "550 5.1.3 Bad recipient address syntax");
			log_warn("queue id=%s event=failed rcpt=<%s> reason=\"bad address\"",
			    j->id, aq);
			continue;
		}
		d = config_find_domain(q->cfg, at + 1, strlen(at + 1));
		if (d == NULL) {
			/* Outbound delivery is a later issue: keep it queued. */
			j->nrelay++;
			if (j->log_waiting)
				log_info("queue id=%s event=waiting rcpt=<%s> reason=relay",
				    j->id, aq);
			continue;
		}
		deliver_local(q, m, i, d, addr, (size_t)(at - addr), now);
	}
	if (spool_msg_done(m)) {
		/*
		 * Every recipient is final: no journal record is needed, the
		 * file goes. The unlink is not fsync'ed: if a crash brings the
		 * file back, its recipients get the message again (at least once).
		 */
		if (spool_msg_remove(m) == 0) {
			log_info("queue id=%s event=removed", j->id);
			spool_msg_close(&m);
			j->result = DJ_REMOVED;
			return;
		}
		log_err("queue id=%s event=remove-failed error=\"%s\"", j->id,
		    strerror(errno));
		/* Try again later rather than leave it idle until restart. */
		spool_msg_close(&m);
		j->result = DJ_RETRY;
		return;
	}
	if (spool_msg_flush(m) == -1) {
		log_err("queue id=%s event=journal-failed error=\"%s\"", j->id,
		    strerror(errno));
		/* The outcome is not durable: retry (at worst a duplicate). */
		spool_msg_close(&m);
		j->result = DJ_RETRY;
		return;
	}
	j->next_attempt = 0;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		if (st->state == SPOOL_RCPT_DEFERRED &&
		    (j->next_attempt == 0 || st->next_attempt < j->next_attempt))
			j->next_attempt = st->next_attempt;
	}
	spool_msg_close(&m);
	j->result = DJ_KEEP;
}

static void *
deliver_main(void *arg)
{
	struct queue *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		struct djob *j;
		bool wake;

		while (q->new_head == NULL && q->old_head == NULL &&
		    !q->stop_threads)
			pthread_cond_wait(&q->deliver_cv, &q->mu);
		if (q->stop_threads)
			break;
		if (q->new_head != NULL) {
			j = q->new_head;
			q->new_head = j->next;
			if (q->new_head == NULL)
				q->new_tail = NULL;
		} else {
			j = q->old_head;
			q->old_head = j->next;
			if (q->old_head == NULL)
				q->old_tail = NULL;
		}
		j->next = NULL;
		pthread_mutex_unlock(&q->mu);

		deliver_job(q, j);

		pthread_mutex_lock(&q->mu);
		wake = q->done_txn_head == NULL && q->done_job_head == NULL;
		if (q->done_job_tail != NULL)
			q->done_job_tail->next = j;
		else
			q->done_job_head = j;
		q->done_job_tail = j;
		if (wake)
			notify_loop(q);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* ---- messages (loop) ---- */

static struct qmsg *
msg_new(struct queue *q, const char *id)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	m->q = q;
	util_strlcpy(m->id, id, sizeof(m->id));
	m->next = q->msgs;
	if (q->msgs != NULL)
		q->msgs->prev = m;
	q->msgs = m;
	q->nmsgs++;
	return m;
}

static void
msg_free(struct queue *q, struct qmsg *m)
{
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		q->msgs = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	if (m->retry_ev != NULL)
		event_free(m->retry_ev);
	q->nmsgs--;
	free(m);
}

static void
retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct qmsg *m = arg;

	msg_schedule(m->q, m, false);
}

static void
msg_retry_at(struct queue *q, struct qmsg *m, int64_t when)
{
	int64_t now = (int64_t)time(NULL);
	struct timeval tv = { when > now ? when - now : 1, 0 };

	if (m->retry_ev == NULL) {
		m->retry_ev = evtimer_new(q->base, retry_cb, m);
		if (m->retry_ev == NULL)
			fatal("evtimer_new failed");
	}
	evtimer_add(m->retry_ev, &tv);
}

/* Hand m to a delivery worker, unless one already has it. */
static void
msg_schedule(struct queue *q, struct qmsg *m, bool fresh)
{
	struct djob *j;

	if (m->busy || q->stopping)
		return;
	if (m->retry_ev != NULL)
		evtimer_del(m->retry_ev);
	j = xcalloc(1, sizeof(*j));
	j->m = m;
	util_strlcpy(j->id, m->id, sizeof(j->id));
	j->log_waiting = !m->logged_waiting;
	m->busy = true;
	q->deliveries_inflight++;
	pthread_mutex_lock(&q->mu);
	if (fresh) {
		if (q->new_tail != NULL)
			q->new_tail->next = j;
		else
			q->new_head = j;
		q->new_tail = j;
	} else {
		if (q->old_tail != NULL)
			q->old_tail->next = j;
		else
			q->old_head = j;
		q->old_tail = j;
	}
	pthread_cond_signal(&q->deliver_cv);
	pthread_mutex_unlock(&q->mu);
}

static void
job_done(struct queue *q, struct djob *j)
{
	struct qmsg *m = j->m;

	q->deliveries_inflight--;
	m->busy = false;
	if (j->log_waiting && j->nrelay > 0)
		m->logged_waiting = true;
	switch (j->result) {
	case DJ_REMOVED:
	case DJ_GONE:
		msg_free(q, m);
		break;
	case DJ_RETRY:
		msg_retry_at(q, m, (int64_t)time(NULL) + LOAD_RETRY_SECS);
		break;
	case DJ_KEEP:
		if (j->next_attempt != 0)
			msg_retry_at(q, m, j->next_attempt);
		/* else only relay recipients are left: the outbound side
		 * (a later issue) will pick the message up. */
		break;
	case DJ_SKIPPED:
		break;
	}
	free(j);
}

static void
commit_done(struct queue *q, struct txn *t, bool final)
{
	int err = spool_txn_error(t->st);
	const char *id = spool_txn_id(t->st);
	struct chan *c = t->chan;

	q->commits_inflight--;
	if (err == 0 && (c == NULL || c->dead || t->abandoned || final)) {
		/* Never acknowledged, so not ours to deliver: take it back. */
		if (spool_unlink_committed(q->spool, id) == -1)
			log_err("queue id=%s event=rollback-failed error=\"%s\"", id,
			    strerror(errno));
		else
			log_info("queue id=%s event=rolled-back reason=\"%s\"", id,
			    t->abandoned ? "aborted by smtp" : "smtp channel gone");
	} else if (err == 0) {
		struct qmsg *m;

		reply(c, IPC_SUBMIT_COMMIT_OK, t->sid, id);
		log_info("queue id=%s event=committed size=%" PRIu64 " nrcpt=%zu from=<%s> client=%s",
		    id, spool_txn_size(t->st), t->nrcpt, t->from_q, t->client_q);
		m = msg_new(q, id);
		msg_schedule(q, m, true);   /* delivered now, not at the next scan */
	} else {
		log_err("queue id=%s event=commit-failed error=\"%s\"", id,
		    strerror(err));
		if (c != NULL && !t->abandoned)
			reply(c, IPC_SUBMIT_COMMIT_FAIL, t->sid, reply_for(err));
	}
	if (c != NULL)
		txn_unhash(c, t);
	spool_txn_free(&t->st);
	txn_free(t);
}

/* Take everything the workers finished; final: the loop has ended. */
static void
drain_done(struct queue *q, bool final)
{
	struct txn *txns;
	struct djob *jobs;

	pthread_mutex_lock(&q->mu);
	txns = q->done_txn_head;
	jobs = q->done_job_head;
	q->done_txn_head = q->done_txn_tail = NULL;
	q->done_job_head = q->done_job_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (txns != NULL) {
		struct txn *next = txns->qnext;
		commit_done(q, txns, final);
		txns = next;
	}
	while (jobs != NULL) {
		struct djob *next = jobs->next;
		job_done(q, jobs);
		jobs = next;
	}
}

static void
done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct queue *q = arg;
	uint64_t v;

	if (read(q->done_fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		log_err("queue event=eventfd-read error=\"%s\"", strerror(errno));
	drain_done(q, false);
	maybe_exit(q);
}

/* ---- control and shutdown ---- */

static void
maybe_exit(struct queue *q)
{
	if (!q->stopping || q->commits_inflight > 0 || q->deliveries_inflight > 0)
		return;
	/* Let the last COMMIT_OKs reach the smtp process first. */
	if (q->chan != NULL && !q->chan->dead &&
	    evbuffer_get_length(bufferevent_get_output(q->chan->bev)) > 0)
		return;   /* chan_write_cb calls back when drained */
	event_base_loopexit(q->base, NULL);
}

static void
grace_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct queue *q = arg;

	log_warn("queue event=shutdown-forced commits=%zu deliveries=%zu",
	    q->commits_inflight, q->deliveries_inflight);
	event_base_loopexit(q->base, NULL);
}

static void
begin_shutdown(struct queue *q, int code, const char *why)
{
	struct djob *drop;
	struct timeval grace = { SHUTDOWN_GRACE_SECS, 0 };

	if (q->stopping)
		return;
	q->stopping = true;
	q->exit_code = code;
	log_info("queue event=shutdown reason=\"%s\"", why);
	/* Jobs no worker has started stay in the spool for the next run. */
	pthread_mutex_lock(&q->mu);
	if (q->new_head != NULL) {
		drop = q->new_head;
		q->new_tail->next = q->old_head;
	} else {
		drop = q->old_head;
	}
	q->new_head = q->new_tail = q->old_head = q->old_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (drop != NULL) {
		struct djob *next = drop->next;
		drop->result = DJ_SKIPPED;
		job_done(q, drop);
		drop = next;
	}
	if (q->ctl_ev != NULL)
		event_del(q->ctl_ev);
	q->grace_ev = evtimer_new(q->base, grace_cb, q);
	if (q->grace_ev != NULL)
		evtimer_add(q->grace_ev, &grace);
	maybe_exit(q);
}

static void
ctl_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct queue *q = arg;
	enum ipc_type type;
	int pfd = -1, r;

	r = ipc_recv_fd(fd, &type, &pfd);
	if (r <= 0) {
		event_del(q->ctl_ev);
		if (r == 0)
			log_warn("queue event=control-closed");
		else
			log_err("queue event=control-error error=\"%s\"",
			    strerror(errno));
		begin_shutdown(q, 1, "lost the parent");
		return;
	}
	switch (type) {
	case IPC_CTL_RELAY_FD:
		/* XXX served once the scheduler lands */
		if (pfd != -1)
			close(pfd);
		return;
	case IPC_CTL_PEER_FD:
		if (pfd == -1) {
			log_warn("queue event=control-bad reason=\"PEER_FD without fd\"");
			break;
		}
		if (q->stopping) {
			close(pfd);
			break;
		}
		if (q->chan != NULL)
			chan_close(q, q->chan, "replaced by parent");
		chan_open(q, pfd);
		return;
	case IPC_CTL_SHUTDOWN:
		begin_shutdown(q, 0, "requested");
		break;
	default:
		log_warn("queue event=control-bad type=%u", (unsigned)type);
		break;
	}
	if (pfd != -1)
		close(pfd);
}

static void
signal_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	begin_shutdown(arg, 0, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void
recovered_cb(void *arg, const char *id)
{
	msg_new(arg, id);
}

static int
start_threads(struct queue *q)
{
	size_t nd = q->cfg->delivery_workers != 0 ? q->cfg->delivery_workers : 1;
	sigset_t all, old;
	int r = 0;

	if (nd > 256)
		nd = 256;
	q->threads = xcalloc(QUEUE_COMMIT_THREADS + nd, sizeof(*q->threads));
	/* Workers never take signals: the loop handles them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (size_t i = 0; i < QUEUE_COMMIT_THREADS + nd; i++) {
		r = pthread_create(&q->threads[i], NULL,
		    i < QUEUE_COMMIT_THREADS ? commit_main : deliver_main, q);
		if (r != 0)
			break;
		q->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	q->threads_started = true;
	if (r != 0) {
		errno = r;
		return -1;
	}
	return 0;
}

static void
stop_threads(struct queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->stop_threads = true;
	pthread_cond_broadcast(&q->commit_cv);
	pthread_cond_broadcast(&q->deliver_cv);
	pthread_mutex_unlock(&q->mu);
	for (size_t i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	q->nthreads = 0;
}

int
queue_run(struct queue *q, int ctl_fd, int smtp_fd, int relay_fd)
{
	/* XXX the relay channel is served once the scheduler lands. */
	if (relay_fd != -1)
		close(relay_fd);
	int removed, recovered;

	signal(SIGPIPE, SIG_IGN);
	q->ctl_fd = ctl_fd;
	q->base = event_base_new();
	if (q->base == NULL) {
		log_err("queue event=fatal error=\"event_base_new failed\"");
		if (smtp_fd != -1)
			close(smtp_fd);
		return 1;
	}
	q->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->done_fd == -1) {
		log_err("queue event=fatal error=\"eventfd: %s\"", strerror(errno));
		if (smtp_fd != -1)
			close(smtp_fd);
		return 1;
	}

	/*
	 * SIGTERM/SIGINT through a signalfd rather than libevent's signal
	 * events: a forked child may still hold its parent's event_base,
	 * and epoll lets only one base own signals. They stay blocked after
	 * queue_run returns, so a late SIGTERM cannot cut the exit short.
	 */
	{
		sigset_t ss;

		sigemptyset(&ss);
		sigaddset(&ss, SIGTERM);
		sigaddset(&ss, SIGINT);
		pthread_sigmask(SIG_BLOCK, &ss, NULL);
		q->sig_fd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
		if (q->sig_fd == -1) {
			log_err("queue event=fatal error=\"signalfd: %s\"",
			    strerror(errno));
			if (smtp_fd != -1)
				close(smtp_fd);
			return 1;
		}
	}

	/* Recovery (docs/spool-format.md): nothing in incoming/ was acknowledged. */
	removed = spool_recover_incoming(q->spool);
	if (removed == -1)
		log_err("queue event=recover-failed dir=incoming error=\"%s\"",
		    strerror(errno));
	recovered = spool_scan(q->spool, recovered_cb, q);
	if (recovered == -1) {
		log_err("queue event=fatal error=\"scan queue/: %s\"",
		    strerror(errno));
		if (smtp_fd != -1)
			close(smtp_fd);
		return 1;
	}
	log_info("queue event=recovered messages=%d removed_incoming=%d spool=%s",
	    recovered, removed < 0 ? 0 : removed, spool_path(q->spool));

	if (start_threads(q) == -1) {
		log_err("queue event=fatal error=\"pthread_create: %s\"",
		    strerror(errno));
		stop_threads(q);
		if (smtp_fd != -1)
			close(smtp_fd);
		return 1;
	}
	q->done_ev = event_new(q->base, q->done_fd, EV_READ | EV_PERSIST,
	    done_cb, q);
	q->sig_ev = event_new(q->base, q->sig_fd, EV_READ | EV_PERSIST,
	    signal_cb, q);
	if (q->done_ev == NULL || q->sig_ev == NULL)
		fatal("queue: event_new failed");
	event_add(q->done_ev, NULL);
	event_add(q->sig_ev, NULL);
	if (ctl_fd != -1) {
		q->ctl_ev = event_new(q->base, ctl_fd, EV_READ | EV_PERSIST,
		    ctl_cb, q);
		if (q->ctl_ev == NULL)
			fatal("queue: event_new failed");
		event_add(q->ctl_ev, NULL);
	}
	if (smtp_fd != -1)
		chan_open(q, smtp_fd);
	for (struct qmsg *m = q->msgs; m != NULL; m = m->next)
		msg_schedule(q, m, false);
	if (ctl_fd != -1 && ipc_send_fd(ctl_fd, IPC_CTL_READY, -1) == -1)
		log_warn("queue event=ready-failed error=\"%s\"", strerror(errno));

	event_base_dispatch(q->base);

	stop_threads(q);
	/* Work that finished after the loop: no one to tell, nothing lost. */
	drain_done(q, true);
	if (q->chan != NULL)
		chan_close(q, q->chan, "queue exiting");
	/* Run the deferred channel frees. */
	event_base_loop(q->base, EVLOOP_NONBLOCK);
	log_info("queue event=stopped queued=%zu commits=%" PRIu64 " commit_batches=%" PRIu64,
	    q->nmsgs, q->ncommits, q->nbatches);
	return q->exit_code;
}

void
queue_free(struct queue **qp)
{
	struct queue *q = *qp;

	if (q == NULL)
		return;
	if (q->nthreads > 0)
		stop_threads(q);
	drain_done(q, true);
	/* Jobs still listed were never started. */
	for (struct djob *j = q->new_head, *n; j != NULL; j = n) {
		n = j->next;
		free(j);
	}
	for (struct djob *j = q->old_head, *n; j != NULL; j = n) {
		n = j->next;
		free(j);
	}
	while (q->msgs != NULL)
		msg_free(q, q->msgs);
	if (q->chan != NULL) {
		struct chan *c = q->chan;
		q->chan = NULL;
		bufferevent_free(c->bev);
		free(c->buckets);
		free(c);
	}
	if (q->ctl_ev != NULL)
		event_free(q->ctl_ev);
	if (q->done_ev != NULL)
		event_free(q->done_ev);
	if (q->sig_ev != NULL)
		event_free(q->sig_ev);
	if (q->grace_ev != NULL)
		event_free(q->grace_ev);
	if (q->base != NULL)
		event_base_free(q->base);
	if (q->done_fd != -1)
		close(q->done_fd);
	if (q->sig_fd != -1)
		close(q->sig_fd);
	for (size_t i = 0; i < q->nbases; i++) {
		if (q->bases[i].fd != -1)
			close(q->bases[i].fd);
		free(q->bases[i].path);
	}
	free(q->bases);
	free(q->threads);
	spool_free(&q->spool);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->commit_cv);
	pthread_cond_destroy(&q->deliver_cv);
	free(q);
	*qp = NULL;
}
