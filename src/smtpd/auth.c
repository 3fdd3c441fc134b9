/*
 * auth.c - AUTH password verification off the event loop and per-address
 * failure throttling (see auth.h).
 *
 * A job goes: start() -> todo list (under mu) -> a worker runs crypt_r()
 * -> done list (under mu) + eventfd -> the loop (done_cb) -> the session's
 * callback, at once on success, or after the failure delay (a timer).
 * cancel() takes a job nobody has started off the todo list (under mu)
 * and frees it; it only marks a job that a worker holds, and the loop
 * frees that one when it comes back. Every job queued or hashing is also
 * on the loop's pending list, which the limits (AUTH_PENDING_MAX, ..._PER_ADDR)
 * count. The attempt is counted against the address when the job is
 * queued and given back if it succeeds. The failure table and the pending
 * list are touched by the loop only.
 */
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/event.h>

#include "smtpd/auth.h"
#include "smtpd/peer_key.h"
#include "conf/config.h"
#include "lib/log.h"
#include "mail/sasl.h"
#include "lib/util.h"

#define AUTH_DELAY_DOUBLINGS 4   /* delay caps at 16 times the first */

enum job_state { JOB_WORKING, JOB_DELAY };

struct auth_job {
	struct auth *a;
	enum job_state state;
	bool cancelled;          /* loop only */
	bool charged;            /* counted against the address (loop only) */
	bool ok;                 /* the worker's answer */
	bool known;              /* a real, unlocked account */
	enum smtp_auth_verdict verdict;   /* JOB_DELAY: what cb gets */
	uint8_t key[PEER_KEY_LEN]; /* the client (peer_key.h) */
	char addr[64];           /* for the log */
	char pass[SASL_FIELD_MAX + 1];
	const char *hash;        /* the setting crypt_r() gets */
	smtp_auth_cb cb;
	void *arg;
	struct event *delay_ev;
	struct auth_job *next;
	struct auth_job *pend_prev, *pend_next;   /* pending list (loop only) */
};

struct peer {
	bool used;
	uint8_t key[PEER_KEY_LEN];
	unsigned failures;       /* within the window */
	int64_t last_fail;       /* ms, monotonic */
	int64_t locked_until;    /* ms, monotonic; 0: not locked */
};

struct auth {
	struct event_base *base;
	const struct config *cfg;
	char dummy[CRYPT_OUTPUT_SIZE];   /* for unknown users */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct auth_job *todo_head, *todo_tail;  /* under mu */
	struct auth_job *done_head, *done_tail;  /* under mu */
	bool stop;                                /* under mu */
	pthread_t threads[AUTH_THREADS];
	size_t nthreads;
	int done_fd;
	struct event *done_ev;
	struct auth_job *pending;   /* queued or hashing (loop only) */
	size_t npending;
	uint64_t seed;
	struct peer table[AUTH_TABLE_BUCKETS][AUTH_TABLE_WAYS];
};

/* ---- the failure table (loop only) ---- */

static size_t
peer_bucket(const struct auth *a, const uint8_t key[PEER_KEY_LEN])
{
	uint64_t h = 0xcbf29ce484222325ULL ^ a->seed;   /* FNV-1a, seeded */

	for (size_t i = 0; i < PEER_KEY_LEN; i++) {
		h ^= key[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 29;
	return (size_t)(h % AUTH_TABLE_BUCKETS);
}

/*
 * The entry of key, or NULL; with insert, a new one replaces (in this
 * order) a free way, one whose failures have all expired, the least
 * recently failed unlocked one, the least recently failed one.
 */
static struct peer *
peer_get(struct auth *a, const uint8_t key[PEER_KEY_LEN], bool insert,
    int64_t now)
{
	struct peer *ways = a->table[peer_bucket(a, key)], *victim = NULL;
	int64_t window = (int64_t)a->cfg->auth_throttle_time * 1000;
	int rank = 99;

	for (size_t i = 0; i < AUTH_TABLE_WAYS; i++)
		if (ways[i].used && memcmp(ways[i].key, key, PEER_KEY_LEN) == 0)
			return &ways[i];
	if (!insert)
		return NULL;
	for (size_t i = 0; i < AUTH_TABLE_WAYS; i++) {
		struct peer *p = &ways[i];
		bool locked = p->locked_until > now;
		int r = !p->used ? 0 : !locked && now - p->last_fail > window ?
		    1 : !locked ? 2 : 3;

		if (r < rank || (r == rank && p->last_fail < victim->last_fail)) {
			victim = p;
			rank = r;
		}
	}
	memset(victim, 0, sizeof(*victim));
	victim->used = true;
	memcpy(victim->key, key, PEER_KEY_LEN);
	return victim;
}

static bool
peer_locked(struct auth *a, const uint8_t key[PEER_KEY_LEN], int64_t now)
{
	struct peer *p = peer_get(a, key, false, now);

	return p != NULL && p->locked_until > now;
}

/* An attempt from key is queued: it counts as a failure until it
 * succeeds (peer_refund()), so one given up on still counts. */
static void
peer_charge(struct auth *a, const uint8_t key[PEER_KEY_LEN], int64_t now)
{
	struct peer *p = peer_get(a, key, true, now);

	if (now - p->last_fail > (int64_t)a->cfg->auth_throttle_time * 1000)
		p->failures = 0;
	p->failures++;
	p->last_fail = now;
}

/* The attempt succeeded: it was not a failure after all. */
static void
peer_refund(struct auth *a, const uint8_t key[PEER_KEY_LEN], int64_t now)
{
	struct peer *p = peer_get(a, key, false, now);

	if (p != NULL && p->failures > 0)
		p->failures--;
}

/* j's attempt failed (wrong password, or given up on): its charge
 * stands; the auth_max_failures-th locks the address out. Returns the
 * address's entry. */
static struct peer *
peer_failed(struct auth *a, const struct auth_job *j, int64_t now)
{
	const struct config *cfg = a->cfg;
	struct peer *p = peer_get(a, j->key, true, now);

	if (p->failures == 0) {
		/* the entry was recycled since the charge: charge again */
		p->failures = 1;
		p->last_fail = now;
	}
	if (p->failures >= cfg->auth_max_failures && p->locked_until <= now) {
		p->locked_until = now + (int64_t)cfg->auth_throttle_time * 1000;
		log_info("smtp event=auth-throttle client=%s failures=%u "
		    "seconds=%u", j->addr, p->failures, cfg->auth_throttle_time);
	}
	return p;
}

/* ---- the pending list (loop only) ---- */

static void
pending_add(struct auth *a, struct auth_job *j)
{
	j->pend_prev = NULL;
	j->pend_next = a->pending;
	if (a->pending != NULL)
		a->pending->pend_prev = j;
	a->pending = j;
	a->npending++;
}

static void
pending_del(struct auth *a, struct auth_job *j)
{
	if (j->pend_prev != NULL)
		j->pend_prev->pend_next = j->pend_next;
	else
		a->pending = j->pend_next;
	if (j->pend_next != NULL)
		j->pend_next->pend_prev = j->pend_prev;
	j->pend_prev = j->pend_next = NULL;
	a->npending--;
}

/* Jobs of key queued or hashing (at most AUTH_PENDING_MAX to look at). */
static size_t
pending_for(const struct auth *a, const uint8_t key[PEER_KEY_LEN])
{
	size_t n = 0;

	for (const struct auth_job *j = a->pending; j != NULL; j = j->pend_next)
		n += memcmp(j->key, key, PEER_KEY_LEN) == 0;
	return n;
}

/* ---- workers ---- */

/* Equal strings, in time that depends on the length of b only. */
static bool
ct_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;

	for (size_t i = 0; i < lb; i++)
		d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
	return d == 0;
}

static void *
worker(void *arg)
{
	struct auth *a = arg;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));

	for (;;) {
		struct auth_job *j;
		uint64_t one = 1;
		char *r;

		pthread_mutex_lock(&a->mu);
		while (!a->stop && a->todo_head == NULL)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->stop) {
			pthread_mutex_unlock(&a->mu);
			break;
		}
		j = a->todo_head;
		a->todo_head = j->next;
		if (a->todo_head == NULL)
			a->todo_tail = NULL;
		pthread_mutex_unlock(&a->mu);

		/* The same work whether or not the user exists. */
		r = crypt_r(j->pass, j->hash, cd);
		j->ok = r != NULL && r[0] != '*' && ct_equal(r, j->hash) &&
		    j->known;
		explicit_bzero(j->pass, sizeof(j->pass));
		explicit_bzero(cd, sizeof(*cd));

		pthread_mutex_lock(&a->mu);
		j->next = NULL;
		if (a->done_tail != NULL)
			a->done_tail->next = j;
		else
			a->done_head = j;
		a->done_tail = j;
		pthread_mutex_unlock(&a->mu);
		if (write(a->done_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
			log_err("smtp: auth eventfd write: %s", strerror(errno));
	}
	free(cd);
	return NULL;
}

/* ---- the loop side ---- */

static void
job_free(struct auth_job *j)
{
	if (j->delay_ev != NULL)
		event_free(j->delay_ev);
	explicit_bzero(j->pass, sizeof(j->pass));
	free(j);
}

static void
delay_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct auth_job *j = arg;
	smtp_auth_cb cb = j->cb;
	void *cbarg = j->arg;
	enum smtp_auth_verdict v = j->verdict;

	job_free(j);
	cb(cbarg, v);
}

/* Answer v after ms milliseconds (0: on the next loop turn). */
static void
job_answer_later(struct auth_job *j, enum smtp_auth_verdict v, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
		.tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	j->state = JOB_DELAY;
	j->verdict = v;
	j->delay_ev = evtimer_new(j->a->base, delay_cb, j);
	if (j->delay_ev == NULL || evtimer_add(j->delay_ev, &tv) == -1)
		fatal("smtp: auth timer: out of memory");
}

/* A worker's answer for j: success at once; a failure counts against
 * the address and is answered after the delay, or locks it out. */
static void
job_finish(struct auth *a, struct auth_job *j)
{
	const struct config *cfg = a->cfg;
	int64_t now = util_mono_ms(), delay;
	struct peer *p;
	unsigned shift;

	if (j->ok) {
		smtp_auth_cb cb = j->cb;
		void *cbarg = j->arg;

		peer_refund(a, j->key, now);
		job_free(j);
		cb(cbarg, SMTP_AUTH_OK);
		return;
	}
	p = peer_failed(a, j, now);
	if (p->locked_until > now) {
		job_answer_later(j, SMTP_AUTH_LOCKED, 0);
		return;
	}
	shift = p->failures - 1 < AUTH_DELAY_DOUBLINGS ? p->failures - 1 :
	    AUTH_DELAY_DOUBLINGS;
	delay = ((int64_t)cfg->auth_failure_delay * 1000) << shift;
	/* The client waits for this answer with a timeout of its own,
	 * likely no longer than ours (RFC 5321 4.5.3.2 suggests the same 5
	 * minutes): keep within half of timeout_command, so the 535 always
	 * comes first. (The session's own deadline does not run meanwhile.) */
	if (delay > (int64_t)cfg->timeout_command * 500)
		delay = (int64_t)cfg->timeout_command * 500;
	job_answer_later(j, SMTP_AUTH_FAILED, delay);
}

static void
done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct auth *a = arg;
	struct auth_job *j, *next;
	uint64_t v;

	if (read(a->done_fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		log_err("smtp: auth eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&a->mu);
	j = a->done_head;
	a->done_head = a->done_tail = NULL;
	pthread_mutex_unlock(&a->mu);
	for (; j != NULL; j = next) {
		next = j->next;
		pending_del(a, j);
		if (j->cancelled)
			job_free(j);
		else
			job_finish(a, j);
	}
}

static void *
auth_start(void *ctx, const char *client_addr, const char *user, size_t ulen,
    const char *pass, size_t plen, smtp_auth_cb cb, void *arg)
{
	struct auth *a = ctx;
	struct auth_job *j = xcalloc(1, sizeof(*j));
	const struct config_passwd *u = config_find_passwd(a->cfg, user, ulen);
	int64_t now = util_mono_ms();

	j->a = a;
	j->cb = cb;
	j->arg = arg;
	j->state = JOB_WORKING;
	util_strlcpy(j->addr, client_addr, sizeof(j->addr));
	peer_key_make(client_addr, a->cfg->client_ipv6_prefix, j->key);
	if (peer_locked(a, j->key, now)) {
		/* locked out by failures on another connection */
		job_answer_later(j, SMTP_AUTH_LOCKED, 0);
		return j;
	}
	/* RFC 4954 6: 454 4.7.0 when the server cannot verify now. Nothing
	 * is hashed and nothing counted: the queue of hashes stays short
	 * whoever floods it. */
	if (a->npending >= AUTH_PENDING_MAX ||
	    pending_for(a, j->key) >= AUTH_PENDING_PER_ADDR) {
		job_answer_later(j, SMTP_AUTH_TEMPFAIL, 0);
		return j;
	}
	peer_charge(a, j->key, now);
	j->charged = true;
	pending_add(a, j);
	ASSERT(plen <= SASL_FIELD_MAX);
	memcpy(j->pass, pass, plen);
	j->pass[plen] = '\0';
	j->known = u != NULL && u->hash[0] != '!' && u->hash[0] != '*';
	j->hash = j->known ? u->hash : a->dummy;
	pthread_mutex_lock(&a->mu);
	if (a->todo_tail != NULL)
		a->todo_tail->next = j;
	else
		a->todo_head = j;
	a->todo_tail = j;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	return j;
}

static void
auth_cancel(void *ctx, void *handle)
{
	struct auth *a = ctx;
	struct auth_job *j = handle, **pp, *prev = NULL;
	bool unlisted = false;

	if (j->state == JOB_DELAY) {
		job_free(j);   /* answered already: counted as it was */
		return;
	}
	/* Given up on before the answer: a failure (the client may be
	 * flooding us with attempts it never waits for). */
	if (j->charged)
		(void)peer_failed(a, j, util_mono_ms());
	pthread_mutex_lock(&a->mu);
	for (pp = &a->todo_head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == j) {
			*pp = j->next;
			if (a->todo_tail == j)
				a->todo_tail = prev;
			unlisted = true;
			break;
		}
	}
	pthread_mutex_unlock(&a->mu);
	if (unlisted) {
		/* no worker took it: no hash for it */
		pending_del(a, j);
		job_free(j);
	} else {
		j->cancelled = true;   /* a worker has it; done_cb frees it */
	}
}

static bool
auth_throttled(void *ctx, const char *client_addr)
{
	struct auth *a = ctx;
	uint8_t key[PEER_KEY_LEN];

	peer_key_make(client_addr, a->cfg->client_ipv6_prefix, key);
	return peer_locked(a, key, util_mono_ms());
}

const struct smtp_auth_ops auth_ops = {
	.start = auth_start,
	.cancel = auth_cancel,
	.throttled = auth_throttled,
};

/*
 * The hash an unknown user's password is checked against: one with the
 * same method and cost as the first user's (crypt_r() accepts a whole
 * hash as its setting), or a fresh yescrypt one without users.
 */
static void
make_dummy(struct auth *a)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	const struct config *cfg = a->cfg;

	for (size_t i = 0; i < cfg->npasswd; i++) {
		const char *h = cfg->passwd[i].hash;

		if (h[0] == '$' && crypt_checksalt(h) == CRYPT_SALT_OK) {
			util_strlcpy(a->dummy, h, sizeof(a->dummy));
			return;
		}
	}
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, setting, sizeof(setting)) ==
	    NULL)
		fatal("smtp: crypt_gensalt: %s", strerror(errno));
	util_strlcpy(a->dummy, setting, sizeof(a->dummy));
}

struct auth *
auth_new(struct event_base *base, const struct config *cfg)
{
	struct auth *a = xcalloc(1, sizeof(*a));

	a->base = base;
	a->cfg = cfg;
	if (getrandom(&a->seed, sizeof(a->seed), 0) != sizeof(a->seed))
		a->seed = (uint64_t)util_now_us();
	make_dummy(a);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->done_fd == -1)
		fatal("smtp: auth eventfd: %s", strerror(errno));
	a->done_ev = event_new(base, a->done_fd, EV_READ | EV_PERSIST, done_cb,
	    a);
	if (a->done_ev == NULL || event_add(a->done_ev, NULL) == -1)
		fatal("smtp: auth: event_new failed");
	for (size_t i = 0; i < AUTH_THREADS; i++) {
		int e = pthread_create(&a->threads[i], NULL, worker, a);

		if (e != 0)
			fatal("smtp: auth worker: %s", strerror(e));
		a->nthreads++;
	}
	return a;
}

void
auth_free(struct auth **ap)
{
	struct auth *a = *ap;
	struct auth_job *j, *next;

	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	for (size_t i = 0; i < a->nthreads; i++)
		pthread_join(a->threads[i], NULL);
	/* Jobs still listed were cancelled with their sessions. */
	for (j = a->todo_head; j != NULL; j = next) {
		next = j->next;
		job_free(j);
	}
	for (j = a->done_head; j != NULL; j = next) {
		next = j->next;
		job_free(j);
	}
	event_free(a->done_ev);
	close(a->done_fd);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a);
	*ap = NULL;
}
