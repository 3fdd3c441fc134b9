/*
 * queue.c - the queue process (see queue.h; queue_int.h says which thread
 * runs what and who owns what; docs/queue.md): start-up, the run loop and
 * the done lists the other threads hand their work back on, the control
 * channel to the parent, signals and shutdown.
 *
 * Threads: the loop, except queue_notify (any thread, to wake the loop)
 * and the bodies of the threads it starts, which live with their seams:
 * queue_submit_commit_main, queue_task_main, the sweep in queue_local.c.
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

#include <event2/event.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "proto/ctl.h"
#include "queue/maildir.h"
#include "queue/queue.h"
#include "queue/queue_control.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

#define SHUTDOWN_GRACE_SECS 30

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
	q->done_fd = -1;
	q->sig_fd = -1;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->commit_cv, NULL);
	pthread_cond_init(&q->deliver_cv, NULL);
	pthread_cond_init(&q->sweep_cv, NULL);
	q->max_txns = cfg->max_connections != 0 ? cfg->max_connections + 8 : 1024;
	if (q->max_txns > 65536)
		q->max_txns = 65536;
	/* Zero (a configuration filled by hand) means the table default. */
	q->retry_min = cfg->retry_min != 0 ? cfg->retry_min : 300;
	q->retry_max = cfg->retry_max != 0 ? cfg->retry_max : 4 * 3600;
	if (q->retry_max < q->retry_min)
		q->retry_max = q->retry_min;
	q->lifetime = cfg->max_queue_lifetime != 0 ? cfg->max_queue_lifetime :
	    5 * 86400;
	/* Zero here means none: a configuration made by hand sends none. */
	q->delay_warn = cfg->delay_warning_time;
	q->max_relay = cfg->max_relay_connections != 0 ?
	    cfg->max_relay_connections : 100;
	q->max_relay_domain = cfg->max_relay_connections_per_domain != 0 ?
	    cfg->max_relay_connections_per_domain : 10;
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
	/* the option's bounds are seglog's; whole records only */
	if (cfg->spool_segment_size != 0 && spool_set_segment_size(q->spool,
	    cfg->spool_segment_size & ~(uint64_t)7) == -1) {
		snprintf(err, errsize, "spool_segment_size out of range");
		goto fail;
	}
	/* 0 only from a configuration built by hand: the default */
	if (cfg->spool_inline_max != 0)
		spool_set_inline_max(q->spool, (size_t)cfg->spool_inline_max);
	q->control = queue_control_new(cfg->spool_dir, uid, gid,
	    &queue_admin_ops, q, err, errsize);
	if (q->control == NULL)
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

/* ---- the done lists ---- */

void
queue_notify(struct queue *q)
{
	uint64_t one = 1;

	/* Only fails if the counter would overflow: then the loop is awake. */
	if (write(q->done_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_err("queue event=eventfd-write error=\"%s\"", strerror(errno));
}

/* Take everything the workers finished; final: the loop has ended. */
static void
drain_done(struct queue *q, bool final)
{
	struct txn *txns;
	struct task *tasks;

	pthread_mutex_lock(&q->mu);
	txns = q->done_txn_head;
	tasks = q->done_job_head;
	q->done_txn_head = q->done_txn_tail = NULL;
	q->done_job_head = q->done_job_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	queue_submit_done(q, txns, final);
	while (tasks != NULL) {
		struct task *next = tasks->next;
		queue_sched_task_done(q, tasks);
		tasks = next;
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
	queue_maybe_exit(q);
}

/* ---- control and shutdown ---- */

void
queue_maybe_exit(struct queue *q)
{
	if (!q->stopping || q->commits_inflight > 0 || q->tasks_inflight > 0)
		return;
	/* Outcomes of jobs the relay has: wait for them (within the grace). */
	if (queue_relay_unanswered(q) > 0)
		return;
	/* Let the last COMMIT_OKs reach the smtp process first. */
	if (queue_submit_unsent(q))
		return;   /* the channel's drained callback calls back */
	event_base_loopexit(q->base, NULL);
}

static void
grace_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct queue *q = arg;

	log_warn("queue event=shutdown-forced commits=%zu tasks=%zu relay_jobs=%zu",
	    q->commits_inflight, q->tasks_inflight,
	    queue_relay_unanswered(q));
	event_base_loopexit(q->base, NULL);
}

static void
begin_shutdown(struct queue *q, int code, const char *why)
{
	struct task *keep_head = NULL, **keep_tail = &keep_head, *drop = NULL;
	struct timeval grace = { SHUTDOWN_GRACE_SECS, 0 };

	if (q->stopping)
		return;
	q->stopping = true;
	q->exit_code = code;
	log_info("queue event=shutdown reason=\"%s\"", why);
	queue_sched_stop(q);
	queue_control_stop(q->control);
	/*
	 * Scans and loads no worker has started stay for the next run (the
	 * spool has them); outcomes from the relay are journaled first.
	 */
	pthread_mutex_lock(&q->mu);
	for (int l = 0; l < 2; l++) {
		struct task *t = l == 0 ? q->new_head : q->old_head;

		while (t != NULL) {
			struct task *next = t->next;

			t->next = NULL;
			if (t->kind == TASK_RESULT) {
				*keep_tail = t;
				keep_tail = &t->next;
			} else {
				t->next = drop;
				drop = t;
			}
			t = next;
		}
	}
	q->new_head = keep_head;
	q->new_tail = NULL;
	for (struct task *t = keep_head; t != NULL; t = t->next)
		q->new_tail = t;
	q->old_head = q->old_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (drop != NULL) {
		struct task *next = drop->next;
		drop->next = NULL;
		drop->result = TR_SKIPPED;
		queue_sched_task_done(q, drop);
		drop = next;
	}
	q->grace_ev = evtimer_new(q->base, grace_cb, q);
	if (q->grace_ev != NULL)
		evtimer_add(q->grace_ev, &grace);
	queue_maybe_exit(q);
}

/* ---- control frames from the parent (proto/ctl.h) ---- */

static void
ctl_relay_fd(void *arg, int fd)
{
	struct queue *q = arg;

	if (q->stopping) {
		close(fd);
		return;
	}
	queue_relay_close(q, "replaced by parent");
	queue_relay_open(q, fd);
}

static void
ctl_peer_fd(void *arg, int fd)
{
	struct queue *q = arg;

	if (q->stopping) {
		close(fd);
		return;
	}
	queue_submit_close(q, "replaced by parent");
	queue_submit_open(q, fd);
}

static void
ctl_shutdown(void *arg)
{
	begin_shutdown(arg, 0, "requested");
}

static void
ctl_lost(void *arg, enum ipc_end end, const char *why)
{
	if (end == IPC_EOF)
		log_warn("queue event=control-closed");
	else
		log_err("queue event=control-error error=\"%s\"", why);
	begin_shutdown(arg, 1, "lost the parent");
}

static const struct ctl_ops ctl_ops = {
	.peer_fd = ctl_peer_fd,
	.relay_fd = ctl_relay_fd,
	.shutdown = ctl_shutdown,
	.lost = ctl_lost,
};

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
	struct queue *q = arg;

	/* Scanned as the heap hands it out: a journaled deferral is then
	 * rescheduled at its next attempt, pending work runs at once. */
	queue_sched_put(q, queue_sched_msg_new(q, id), 0);
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
		    i < QUEUE_COMMIT_THREADS ? queue_submit_commit_main : queue_task_main, q);
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
	int removed, recovered;
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	q->base = event_base_new();
	if (q->base == NULL) {
		log_err("queue event=fatal error=\"event_base_new failed\"");
		goto fail_fds;
	}
	q->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->done_fd == -1) {
		log_err("queue event=fatal error=\"eventfd: %s\"", strerror(errno));
		goto fail_fds;
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
			goto fail_fds;
		}
	}
	queue_sched_init(q);

	/* Recovery (docs/spool-format.md): the log scanned into the index. */
	removed = spool_recover(q->spool, err, sizeof(err));
	if (removed == -1) {
		log_err("queue event=fatal error=\"spool: %s\"", err);
		goto fail_fds;
	}
	recovered = spool_scan(q->spool, recovered_cb, q);
	if (recovered == -1) {
		log_err("queue event=fatal error=\"scan queue/: %s\"",
		    strerror(errno));
		goto fail_fds;
	}
	log_info("queue event=recovered messages=%d removed_incoming=%d spool=%s",
	    recovered, removed < 0 ? 0 : removed, spool_path(q->spool));

	if (start_threads(q) == -1) {
		log_err("queue event=fatal error=\"pthread_create: %s\"",
		    strerror(errno));
		stop_threads(q);
		goto fail_fds;
	}
	/* Recovery of the Maildirs, beside the deliveries: tmp/ files of
	 * deliveries the last run left unfinished (docs/queue.md). */
	queue_local_sweep_start(q);
	q->done_ev = event_new(q->base, q->done_fd, EV_READ | EV_PERSIST,
	    done_cb, q);
	q->sig_ev = event_new(q->base, q->sig_fd, EV_READ | EV_PERSIST,
	    signal_cb, q);
	if (q->done_ev == NULL || q->sig_ev == NULL)
		fatal("queue: event_new failed");
	event_add(q->done_ev, NULL);
	event_add(q->sig_ev, NULL);
	if (ctl_fd != -1)
		q->ctl = ctl_open(q->base, ctl_fd, CTL_WORKER, &ctl_ops, q);
	if (smtp_fd != -1)
		queue_submit_open(q, smtp_fd);
	if (relay_fd != -1)
		queue_relay_open(q, relay_fd);
	queue_control_start(q->control, q->base);
	queue_sched_pop_due(q);
	(void)ctl_send(q->ctl, CTL_READY, -1);

	event_base_dispatch(q->base);

	queue_local_sweep_end(q);
	stop_threads(q);
	/* Work that finished after the loop: no one to tell, nothing lost. */
	q->stopping = true;
	drain_done(q, true);
	queue_submit_close(q, "queue exiting");
	queue_relay_free_all(q);
	queue_control_stop(q->control);
	/* Run the deferred frees (control socket clients). */
	event_base_loop(q->base, EVLOOP_NONBLOCK);
	log_info("queue event=stopped queued=%zu commits=%" PRIu64 " commit_batches=%" PRIu64,
	    q->nmsgs, q->ncommits, q->nbatches);
	return q->exit_code;
fail_fds:
	if (ctl_fd != -1)
		close(ctl_fd);
	if (smtp_fd != -1)
		close(smtp_fd);
	if (relay_fd != -1)
		close(relay_fd);
	return 1;
}

void
queue_free(struct queue **qp)
{
	struct queue *q = *qp;

	if (q == NULL)
		return;
	if (q->nthreads > 0)
		stop_threads(q);
	q->stopping = true;
	drain_done(q, true);
	queue_relay_free_all(q);
	/* Tasks still listed were never started. */
	queue_task_free_list(q->new_head);
	queue_task_free_list(q->old_head);
	q->new_head = q->old_head = NULL;
	queue_sched_free(q);
	/* After the tasks: a CTL task never started points at a client. */
	queue_control_free(&q->control);
	queue_submit_free(q);
	ctl_free(&q->ctl);
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
	pthread_cond_destroy(&q->sweep_cv);
	free(q);
	*qp = NULL;
}
