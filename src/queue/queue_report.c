/*
 * queue_report.c - delivery status notifications: which recipient's
 * sender is owed a report, and the REPORT task that spools one report per
 * message covering every recipient owed one (docs/dsn.md). The report
 * itself is built by the pure generator mail/dsn.c.
 *
 * Threads: the task body and what it calls (queue_report_task,
 * queue_report_owed, queue_report_warn_at) run in the worker threads,
 * on the task's own copy of the message; queue_report_done runs on the
 * loop when the task is back (queue_int.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <time.h>

#include <event2/buffer.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/dsn.h"
#include "mail/envelope.h"
#include "queue/queue_int.h"
#include "queue/spool.h"

static atomic_uint dsn_seq;   /* makes each report's Message-ID unique */

/*
 * Recipient i of m is owed a report with action a, if its sender and its
 * NOTIFY want one: never for the null reverse-path (RFC 3461 6.2, RFC
 * 5321 4.5.5: a report is never reported on, so reports cannot loop),
 * and as NOTIFY asks (RFC 3461 4.1; without it, failures and delays).
 */
static void
dsn_note(struct task *t, const struct spool_msg *m, size_t i,
    enum dsn_action a, const char *diag, const char *mta, int64_t when)
{
	const struct envelope *env = spool_msg_envelope(m);
	struct dsn_note *n;

	if (env->sender[0] == '\0' || !dsn_wanted(env->rcpts[i].notify, a))
		return;
	if (t->nnotes == t->notes_cap) {
		t->notes_cap = t->notes_cap ? t->notes_cap * 2 : 4;
		t->notes = xreallocarray(t->notes, t->notes_cap,
		    sizeof(*t->notes));
	}
	n = &t->notes[t->nnotes++];
	n->rcpt = i;
	n->action = a;
	n->diag = diag != NULL ? xstrdup(diag) : NULL;
	n->mta = mta != NULL ? xstrdup(mta) : NULL;
	n->when = when;
}

void
queue_report_notes_free(struct task *t)
{
	for (size_t k = 0; k < t->nnotes; k++) {
		free(t->notes[k].diag);
		free(t->notes[k].mta);
	}
	free(t->notes);
	t->notes = NULL;
	t->nnotes = t->notes_cap = 0;
}

int64_t
queue_report_warn_at(const struct queue *q, const struct envelope *env,
    size_t i, const struct spool_rcpt_status *st)
{
	if (q->delay_warn <= 0 || st->state != SPOOL_RCPT_DEFERRED ||
	    st->warned || env->sender[0] == '\0' ||
	    !dsn_wanted(env->rcpts[i].notify, DSN_ACTION_DELAYED))
		return 0;
	return env->arrival + q->delay_warn;
}

/*
 * Is recipient i of m (state st) owed a report now, and with which
 * action (*a)? Never for the null reverse-path; as NOTIFY asks:
 *  - failed, or delivered into a mailbox / relayed to a server without
 *    DSN, and not reported yet (no R record). A final outcome without
 *    an A record comes from a tern that spooled the report before
 *    journaling the outcome: it counts as reported;
 *  - deferred for delay_warning_time since arrival and not warned yet
 *    (no W record: queue_report_warn_at).
 */
static bool
report_owed(const struct queue *q, const struct envelope *env, size_t i,
    const struct spool_rcpt_status *st, int64_t now, enum dsn_action *a)
{
	int64_t w;

	if (env->sender[0] == '\0')
		return false;
	switch (st->state) {
	case SPOOL_RCPT_FAILED:
		*a = DSN_ACTION_FAILED;
		break;
	case SPOOL_RCPT_DELIVERED:
		/* 'd': the next hop got NOTIFY and reports itself (RFC 3461
		 * 5.2.2) */
		if (st->how == 'd')
			return false;
		*a = st->how == 'l' ? DSN_ACTION_DELIVERED : DSN_ACTION_RELAYED;
		break;
	case SPOOL_RCPT_DEFERRED:
		*a = DSN_ACTION_DELAYED;
		w = queue_report_warn_at(q, env, i, st);
		return w != 0 && now >= w;
	default:
		return false;
	}
	return st->how != 0 && !st->reported &&
	    dsn_wanted(env->rcpts[i].notify, *a);
}

bool
queue_report_owed(const struct queue *q, const struct spool_msg *m,
    int64_t now)
{
	const struct envelope *env = spool_msg_envelope(m);
	enum dsn_action a;

	for (size_t i = 0; i < env->nrcpts; i++)
		if (report_owed(q, env, i, spool_msg_rcpt(m, i), now, &a))
			return true;
	return false;
}

/*
 * One report for every note of t (dsn.h), spooled as a new message with
 * the null reverse-path through the same path as received mail
 * (a MSG record in a commit group of the spool's log), in this
 * worker. Returns 0 once it is durable (t->dsn_id names it), -1 if it
 * could not be spooled (logged). The caller journals R/W records only
 * after 0: the outcomes themselves are journaled long before.
 */
static int
dsn_emit(struct queue *q, struct task *t, struct spool_msg *m, int64_t now)
{
	const struct envelope *env = spool_msg_envelope(m);
	struct dsn_rcpt *rc;
	struct envelope renv;
	struct evbuffer *buf;
	struct spool_txn *st;
	struct dsn_params p;
	char unique[96], nonce[33], acts[64] = "", sq[600];
	const char *body;
	size_t body_len, len = 0;
	int err = 0;

	if (t->nnotes == 0)
		return 0;
	rc = xcalloc(t->nnotes, sizeof(*rc));
	for (size_t k = 0; k < t->nnotes; k++) {
		const struct dsn_note *n = &t->notes[k];
		const char *name = n->action == DSN_ACTION_FAILED ? "failed" :
		    n->action == DSN_ACTION_DELAYED ? "delayed" :
		    n->action == DSN_ACTION_DELIVERED ? "delivered" : "relayed";

		rc[k].addr = env->rcpts[n->rcpt].addr;
		rc[k].orcpt = env->rcpts[n->rcpt].orcpt;
		rc[k].action = n->action;
		rc[k].diagnostic = n->diag;
		rc[k].remote_mta = n->mta;
		rc[k].last_attempt = n->when;
		rc[k].retry_until = n->action == DSN_ACTION_DELAYED ?
		    env->arrival + q->lifetime : 0;
		if (strstr(acts, name) == NULL)
			snprintf(acts + strlen(acts), sizeof(acts) - strlen(acts),
			    "%s%s", acts[0] ? "," : "", name);
	}
	snprintf(unique, sizeof(unique), "%s.%" PRId64 ".%u.dsn", t->id, now,
	    atomic_fetch_add(&dsn_seq, 1));
	p.reporting_mta = q->cfg->hostname != NULL ? q->cfg->hostname :
	    "localhost";
	p.unique = unique;
	/* an unpredictable MIME boundary: nothing a sender or a server
	 * wrote into the report can guess it */
	{
		unsigned char rnd[16];

		arc4random_buf(rnd, sizeof(rnd));
		for (size_t k = 0; k < sizeof(rnd); k++)
			snprintf(nonce + 2 * k, 3, "%02x", rnd[k]);
	}
	p.nonce = nonce;
	p.now = now;
	p.max_return = (size_t)q->cfg->dsn_max_return_size;
	body = spool_msg_body(m, &body_len);
	envelope_init(&renv);
	buf = evbuffer_new();
	if (buf == NULL)
		fatal("out of memory");
	dsn_build(env, rc, t->nnotes, body, body_len, &p, buf, &renv);
	free(rc);
	st = spool_txn_begin(q->spool, &renv);
	if (st == NULL) {
		err = errno;
	} else {
		len = evbuffer_get_length(buf);
		if (spool_txn_write(st, evbuffer_pullup(buf, -1), len) == -1) {
			err = errno;
			spool_txn_abort(&st);
		} else {
			spool_commit_batch(q->spool, &st, 1);
			err = spool_txn_error(st);
			if (err == 0)
				util_strlcpy(t->dsn_id, spool_txn_id(st),
				    sizeof(t->dsn_id));
			spool_txn_free(&st);
		}
	}
	evbuffer_free(buf);
	envelope_clear(&renv);
	log_quote(sq, sizeof(sq), env->sender, strlen(env->sender), 300);
	if (err != 0) {
		log_err("queue id=%s event=dsn-failed action=%s nrcpt=%zu to=<%s> error=\"%s\"",
		    t->id, acts, t->nnotes, sq, strerror(err));
		return -1;
	}
	log_info("queue id=%s event=dsn dsn_id=%s action=%s nrcpt=%zu to=<%s>",
	    t->id, t->dsn_id, acts, t->nnotes, sq);
	log_info("queue id=%s event=committed size=%zu nrcpt=1 from=<> dsn_for=%s",
	    t->dsn_id, len, t->id);
	return 0;
}

/*
 * REPORT: the one report message t->id owes its sender now, covering
 * every recipient owed one (report_owed), spooled, then journaled as
 * reported (R for final outcomes, W for delays) and fdatasync'ed: a crash
 * in between sends the report again at the next start (at least once).
 * If it cannot be spooled, t->dsn_failed: the loop tries the report
 * alone again later; no recipient is tried again for it.
 */
void
queue_report_task(struct queue *q, struct task *t)
{
	struct spool_msg *m;
	const struct envelope *env;
	int64_t now = (int64_t)time(NULL);

	m = queue_task_load(q, t);
	if (m == NULL)
		return;
	env = spool_msg_envelope(m);
	for (size_t i = 0; i < env->nrcpts && !spool_msg_held(m, NULL); i++) {
		const struct spool_rcpt_status *st = spool_msg_rcpt(m, i);
		enum dsn_action a;

		if (!report_owed(q, env, i, st, now, &a))
			continue;
		/* Remote-MTA only with that server's own reply (RFC 3464
		 * 2.3.5, 2.3.6); the relayed reply itself is not kept */
		dsn_note(t, m, i, a, a == DSN_ACTION_FAILED ||
		    a == DSN_ACTION_DELAYED ? st->reply : NULL,
		    st->how == 's' || st->how == 'd' ? st->mta : NULL,
		    st->last_attempt);
	}
	if (t->nnotes > 0 && dsn_emit(q, t, m, now) == -1) {
		t->dsn_failed = true;
	} else if (t->nnotes > 0) {
		for (size_t k = 0; k < t->nnotes; k++) {
			if (t->notes[k].action == DSN_ACTION_DELAYED)
				spool_msg_warned(m, t->notes[k].rcpt);
			else
				spool_msg_reported(m, t->notes[k].rcpt);
		}
		/* Before a removal too: a crash that undoes the unlink must
		 * not bring the report back. */
		if (spool_msg_flush(m) == -1) {
			log_err("queue id=%s event=journal-failed error=\"%s\"",
			    t->id, strerror(errno));
			t->result = TR_RETRY;
			spool_msg_close(&m);
			return;
		}
	}
	queue_task_finish(q, t, &m, now);
}

/*
 * On the loop, when a REPORT task is back: the report it spooled gets its
 * record and a scan; a report that could not be spooled is tried again
 * alone, on the recipients' schedule without jitter. Returns the message's next due time (due:
 * what the task's result gave).
 */
int64_t
queue_report_done(struct queue *q, struct task *t, int64_t due, int64_t now)
{
	struct qmsg *m = t->m;

	if (t->dsn_id[0] != '\0') {
		/* The report this task spooled: a message like any other,
		 * scanned at once (at the next start if stopping). */
		struct qmsg *r = queue_sched_msg_new(q, t->dsn_id);

		if (!q->stopping)
			queue_sched_start(q, r, TASK_SCAN, NULL, true);
	}
	if (t->result != TR_KEEP)
		return due;
	due = t->next_due;
	if (t->dsn_failed) {
		/* The report alone is tried again: a scan then finds
		 * nothing to deliver and owes it still. */
		int64_t rd;

		if (m->dsn_tries < 127)
			m->dsn_tries++;
		rd = now + queue_task_backoff(q, m->dsn_tries, false);
		if (due == 0 || rd < due)
			due = rd;
	} else {
		m->dsn_tries = 0;
	}
	return due;
}
