/*
 * queue_local.c - local delivery: a recipient of a local domain is
 * expanded to its mailboxes (conf/local_lookup.h) and the message written
 * into each one's Maildir (maildir.c), through the directory fds of the
 * Maildir bases that queue_new opened with the start-up privileges; and
 * the sweep of the Maildirs' tmp/ (docs/queue.md, "Local delivery exactly
 * once").
 *
 * Threads: queue_local_deliver runs in the worker threads (SCAN tasks,
 * queue_task.c) on the task's own copy of the message; the sweep runs in
 * its own thread, which the loop starts and stops
 * (queue_local_sweep_start/end).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "conf/config.h"
#include "conf/local_lookup.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/maildir.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

#define SWEEP_INTERVAL (24 * 3600)   /* seconds between Maildir sweeps */

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

/* The copy this scan has in mailbox, or NULL. */
static const char *
done_find(const struct local_done *done, const char *mailbox)
{
	for (size_t k = 0; k < done->n; k++)
		if (strcmp(done->v[k].mailbox, mailbox) == 0)
			return done->v[k].file;
	return NULL;
}

static void
done_add(struct local_done *done, const char *mailbox, const char *file)
{
	if (done->n == done->cap) {
		done->cap = done->cap ? done->cap * 2 : 8;
		done->v = xreallocarray(done->v, done->cap, sizeof(*done->v));
	}
	done->v[done->n].mailbox = xstrdup(mailbox);
	done->v[done->n].file = xstrdup(file);
	done->n++;
}

void
queue_local_done_clear(struct local_done *done)
{
	for (size_t k = 0; k < done->n; k++) {
		free(done->v[k].mailbox);
		free(done->v[k].file);
	}
	free(done->v);
	memset(done, 0, sizeof(*done));
}

/*
 * Deliver recipient i of m (a local one) to every mailbox it expands to.
 * mflags: MAILDIR_RECHECK unless this is the first attempt at m in this
 * process (maildir.h; docs/queue.md, "Local delivery exactly once").
 * done: the mailboxes this scan already has its copy in; one of them
 * counts as delivered as it is (one copy per mailbox and message), the
 * others are added once they have theirs.
 * Returns its outcome: 'D', 'F' or 'T' (deferred).
 */
char
queue_local_deliver(struct queue *q, struct spool_msg *m, size_t i,
    const struct config_domain *d, const char *local, size_t llen,
    int64_t now, unsigned mflags, struct local_done *done)
{
	const struct envelope *env = spool_msg_envelope(m);
	const char *addr = env->rcpts[i].addr;
	struct local_target targets[LOCAL_EXPAND_MAX];
	char aq[600], lbuf[256], why[1400], reason[1500];
	int n, ll;
	size_t body_len;
	const char *body = spool_msg_body(m, &body_len);
	bool temp_fail = false;
	int err = 0;

	log_quote(aq, sizeof(aq), addr, strlen(addr), 300);
	ll = unquote_local(local, llen, lbuf, sizeof(lbuf));
	why[0] = '\0';
	n = ll < 0 ? -1 : local_expand_explain(&q->cfg->domain_index, d, lbuf,
	    (size_t)ll, targets, why, sizeof(why));
	if (n < 0) {
		/* Accepted at RCPT time, so the configuration has changed since. */
		snprintf(reason, sizeof(reason),
		    "550 5.1.1 <%s>: Recipient address rejected: no such mailbox",
		    addr);
		spool_msg_attempt(m, i, now, 'l', NULL);
		spool_msg_failed(m, i, reason);
		log_warn("queue id=%s event=failed rcpt=<%s> reason=\"no such mailbox\" detail=\"%s\"",
		    spool_msg_id(m), aq, why[0] ? why : "unparsable local part");
		return 'F';
	}
	for (int k = 0; k < n && !temp_fail; k++) {
		const struct local_target *t = &targets[k];
		char path[4096], mbox[600], mq[700], pq[1200], name[600];
		const struct base_dir *b;
		const char *rel = NULL;
		const char *had;
		struct maildir_msg mm;
		int r;

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
		/* Another recipient of this scan reached this mailbox: its
		 * copy is this one's too. Not looked for again: a reader may
		 * have moved it to cur/ or renamed it since, and the look
		 * would miss it and write a second copy. */
		if ((had = done_find(done, mbox)) != NULL) {
			log_info("queue id=%s event=delivered rcpt=<%s> mailbox=%s path=%s file=%s copy=earlier delay=%.3fs",
			    spool_msg_id(m), aq, mq, pq, had,
			    (double)(util_now_us() - spool_id_time_us(spool_msg_id(m))) / 1e6);
			continue;
		}
		mm.return_path = env->sender;
		mm.delivered_to = mbox;
		mm.body = body;
		mm.len = body_len;
		/* The message's identity names the copy: the id, and the
		 * tag that tells it from a later message reusing the id. */
		mm.id = spool_msg_id(m);
		mm.tag = spool_msg_tag(m);
		mm.arrival_us = spool_id_time_us(spool_msg_id(m));
		r = maildir_deliver(b->fd, rel, &mm, mflags, name, sizeof(name));
		if (r == -1) {
			err = errno;
			snprintf(why, sizeof(why), "maildir %s: %s", pq,
			    strerror(errno));
			temp_fail = true;
			break;
		}
		done_add(done, mbox, name);
		/* copy=earlier: an earlier attempt (before a crash, or for
		 * another recipient reaching this mailbox) left it there */
		log_info("queue id=%s event=delivered rcpt=<%s> mailbox=%s path=%s file=%s%s delay=%.3fs",
		    spool_msg_id(m), aq, mq, pq, name,
		    r == 1 ? " copy=earlier" : "",
		    (double)(util_now_us() - spool_id_time_us(spool_msg_id(m))) / 1e6);
	}
	if (temp_fail && err == EDQUOT) {
		/* The mailbox's quota, not the disk: the recipient's own
		 * problem, final (RFC 3463 3.3 X.2.2 mailbox full). */
		snprintf(reason, sizeof(reason),
		    "552 5.2.2 <%s>: Mailbox full", addr);
		spool_msg_attempt(m, i, now, 'l', NULL);
		spool_msg_failed(m, i, reason);
		log_warn("queue id=%s event=failed rcpt=<%s> reason=\"mailbox full\" detail=\"%s\"",
		    spool_msg_id(m), aq, why);
		return 'F';
	}
	if (temp_fail) {
		/* The recipient is retried as a whole: mailboxes of an alias
		 * that already got the message find their copy then (the
		 * retry runs with MAILDIR_RECHECK). */
		/* The reply reaches the sender (reports, tern queue show):
		 * generic; paths and errno stay in the log. */
		log_warn("queue id=%s event=mailbox-unavailable rcpt=<%s> detail=\"%s\"",
		    spool_msg_id(m), aq, why);
		return queue_task_defer(q, m, i, now,
		    "451 4.3.0 mailbox temporarily unavailable", false, NULL,
		    'l', NULL);
	}
	spool_msg_attempt(m, i, now, 'l', NULL);
	spool_msg_delivered(m, i);
	return 'D';
}

/*
 * Clean tmp/ in the Maildir of every mailbox of the configuration
 * (maildir_clean_tmp): files of deliveries a crash interrupted, and
 * anything older than 36 hours. In the sweep thread; stops early when
 * the queue stops.
 */
static void
sweep_maildirs(struct queue *q)
{
	const struct config *cfg = q->cfg;
	char path[4096], prev[4096] = "", pq[1200];

	for (size_t i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *d = &cfg->domains[i];

		for (size_t k = 0; d->maildir != NULL && k < d->nmailboxes; k++) {
			const struct base_dir *b;
			const char *rel = NULL;
			unsigned intr = 0, stale = 0;

			if (atomic_load(&q->sweep_stop))
				return;
			/* a pattern without %u: one Maildir for the domain */
			if (config_maildir_path(d, d->mailboxes[k], path,
			    sizeof(path)) != 0 || strcmp(path, prev) == 0)
				continue;
			util_strlcpy(prev, path, sizeof(prev));
			b = find_base(q, path, &rel);
			if (b == NULL)
				continue;
			log_quote(pq, sizeof(pq), path, strlen(path), 500);
			if (maildir_clean_tmp(b->fd, rel, time(NULL), &intr,
			    &stale) == -1) {
				if (errno != ENOENT)
					log_warn("queue event=maildir-clean-failed path=%s error=\"%s\"",
					    pq, strerror(errno));
				continue;
			}
			if (intr + stale > 0)
				log_info("queue event=maildir-tmp-cleaned path=%s interrupted=%u stale=%u",
				    pq, intr, stale);
		}
	}
}

/* The sweep thread: at start-up (recovery), then daily. */
static void *
sweep_main(void *arg)
{
	struct queue *q = arg;

	pthread_mutex_lock(&q->mu);
	while (!atomic_load(&q->sweep_stop)) {
		struct timespec ts;

		pthread_mutex_unlock(&q->mu);
		sweep_maildirs(q);
		pthread_mutex_lock(&q->mu);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += SWEEP_INTERVAL;
		while (!atomic_load(&q->sweep_stop) &&
		    pthread_cond_timedwait(&q->sweep_cv, &q->mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* Start the sweep thread (signals blocked, as in every worker). */
void
queue_local_sweep_start(struct queue *q)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&q->sweep_thread, NULL, sweep_main, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		log_warn("queue event=maildir-sweep-failed error=\"%s\"",
		    strerror(r));
	q->sweep_started = r == 0;
}

void
queue_local_sweep_end(struct queue *q)
{
	if (!q->sweep_started)
		return;
	pthread_mutex_lock(&q->mu);
	atomic_store(&q->sweep_stop, true);
	pthread_cond_broadcast(&q->sweep_cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->sweep_thread, NULL);
	q->sweep_started = false;
}
