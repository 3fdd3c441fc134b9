/*
 * relay.c - the relay process: outbound delivery (see relay.h, and the
 * relay protocol in proto/relay_job.h).
 *
 * One libevent loop, two kinds of object:
 *
 *   job   one RELAY_JOB from the queue: its envelope and body, then its
 *         MX lookup (dns.c), then the attempt it is on, then exactly one
 *         RELAY_RESULT. Jobs live in a small hash by id.
 *   conn  one outbound TCP connection with its smtp_client: connecting,
 *         busy with one job, idle in the cache (a later job whose MX
 *         resolves to the same address sends its transaction on it), or
 *         quitting / closing.
 *
 * The connection cache: after a transaction a connection waits, idle,
 * for relay_connection_reuse_time (2 s by default, as Postfix's
 * smtp_connection_cache_time_limit) and then says QUIT
 * (event=conn-close reason=idle). A job reuses an idle connection only
 * to the host it is about to try, starting with the one its own MX order
 * put first: RFC 5321 5.1 wants hosts of equal preference tried in random
 * order (dns_mx_sort() shuffles them for every job), and a job that took
 * whatever connection was cached would send a steady stream to whichever
 * host happened to be connected first (event=conn-reuse).
 *
 * Delivery of one job (RFC 5321 5.1): the MX hosts in DNS order, each
 * host's addresses in dns.h's order. A failure at connection level (no
 * TCP connection, a greeting or EHLO/HELO failure, the connection lost or
 * timed out before the server said anything about the transaction, a 421)
 * moves on to the next address; everything else (a reply to MAIL, RCPT,
 * DATA or ".") decides the recipients. When every address failed at
 * connection level, every recipient is deferred with the last reason.
 * At most RELAY_MAX_ATTEMPTS fresh connections per job (Postfix bounds its
 * tries the same way, smtp_mx_address_limit), so a domain with 16 dead MX
 * hosts of 8 addresses each costs minutes, not an hour.
 *
 * Routes (route.h): a job whose domain has a `route` block with a
 * smarthost resolves and connects to the smarthost (its MX hosts, or in
 * brackets its own addresses) on the route's port instead of the domain's
 * MX hosts; any trouble finding it defers the job (never a bounce). Only
 * such a connection carries the route's AUTH credentials, and a cached
 * connection is reused only by a job with the same credentials (none, or
 * the same route's), so credentials never reach another server and an
 * unauthenticated connection never serves an AUTH route.
 *
 * TLS (RFC 3207): each job has a level, the top-level relay_tls raised
 * by its route's require_tls. "may" speaks STARTTLS when offered and
 * goes on in clear text otherwise; a handshake that fails at that level
 * marks the server's address as TLS-broken for RELAY_TLS_BROKEN_SECONDS
 * and the job retries the same address at once in clear text (as
 * Postfix does), so a server with a broken TLS stack still gets its mail.
 * "encrypt" and "verify" never send anything in clear text: a server
 * without TLS counts as unreachable. A cached connection serves a job
 * only if its TLS state satisfies the job's level.
 *
 * Nothing is freed from inside its own callbacks: a finished job or a dead
 * connection is unlinked, made inert (events deleted, its lib/conn.h
 * transport freed, which conn.c defers inside its own callbacks) and put
 * on a reap list that an event made active for the purpose empties from
 * the top of the loop (Redis freeClientAsync). A job
 * moves to its next attempt through its own deferred event, never by
 * recursion from inside a connection's callback.
 *
 * The queue channel is trusted to be well-formed but checked: frame types,
 * ids, sizes, the number of jobs in flight and the octets buffered per job
 * are bounded; a violation is logged and the process exits with status 1
 * (which closes the channel): the parent starts a fresh relay and hands
 * the queue a fresh channel, and the queue defers every job in flight.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/config.h"
#include "dns/dns.h"
#include "mail/envelope.h"
#include "lib/conn.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "proto/ctl.h"
#include "proto/relay_job.h"
#include "relay/relay.h"
#include "relay/route.h"
#include "relay/smtp_client.h"
#include "lib/tls.h"
#include "lib/util.h"

#define RELAY_HASH 1024               /* job hash buckets (power of 2) */
#define RELAY_BODY_SLACK (64 * 1024)  /* over max_message_size: headers
                                       * the queue adds (Received:, ...) */
#define RELAY_DOMAIN_MAX RELAY_JOB_DOMAIN_MAX
#define RELAY_CONNECT_TIMEOUT 30      /* seconds, like Postfix */
#define RELAY_CLOSE_TIMEOUT 10        /* seconds to flush a last command */
#define RELAY_MAX_ATTEMPTS 10         /* fresh connections per job */
#define RELAY_IDLE_MAX 64             /* idle connections kept in all, at
                                       * least; max_relay_connections if more.
                                       * Per server address: as many as a
                                       * domain may have open at once. */
#define RELAY_TLS_BROKEN_MAX 256      /* addresses remembered */
#define RELAY_TLS_BROKEN_SECONDS 3600

enum job_state {
	JOB_RECEIVING,   /* JOB seen, DATA frames until END */
	JOB_RESOLVING,   /* MX lookup running */
	JOB_SENDING,     /* connecting or in a transaction, or between */
	JOB_DEAD,        /* answered or dropped: on the reap list */
};

enum relay_conn_state {
	RC_CONNECTING,
	RC_BUSY,       /* a job's transaction runs (or waits for EHLO) */
	RC_IDLE,       /* in the cache, QUIT when the idle timer fires */
	RC_QUITTING,   /* QUIT sent or about to be */
	RC_CLOSING,    /* the client is done: flushing, then close */
	RC_DEAD,       /* on the reap list */
};

/* A reason for a result line: a server reply or tern's own (code 0). */
struct reason {
	unsigned code;
	char enh[16];
	char text[SMTP_CLIENT_TEXT_MAX];
};

/* An MX host as the job tries it: only usable hosts are kept. */
struct job_host {
	char name[DNS_NAME_MAX + 1];
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];  /* port set */
	size_t naddrs;
	unsigned pref;
};

struct relay_conn;

struct job {
	struct relay *r;
	uint64_t id;
	enum job_state state;
	char domain[RELAY_DOMAIN_MAX + 1];
	const struct config_route *route;  /* NULL: MX of the domain */
	const struct config_route *auth;   /* route whose AUTH applies */
	unsigned port;                     /* of every address tried */
	enum config_relay_tls tls;         /* level of this job */
	struct envelope env;
	struct evbuffer *body;
	const char *flat;        /* the body, contiguous, from END on */
	size_t flatlen;
	size_t *idx;             /* 0..nrcpts-1: every recipient, every time */
	struct dns_query *q;
	struct job_host *hosts;
	size_t nhosts;
	size_t hi, ai;           /* the address being tried */
	bool started;            /* hi/ai point at a tried address */
	bool retry_here;         /* a cached connection failed: fresh one */
	bool hold_pos;           /* hi/ai not tried yet (waited for a slot) */
	bool parked;             /* waiting for a connection slot */
	struct job *pnext, *pprev;
	unsigned attempts;       /* fresh connections made */
	struct relay_conn *conn;
	struct event *step_ev;   /* deferred "try the next address" */
	struct reason last;      /* why the last attempt failed */
	char via_mx[DNS_NAME_MAX + 1];
	char via_ip[INET6_ADDRSTRLEN];
	char via_tls[TLS_DESC_MAX];
	struct job *hnext;       /* hash chain */
	struct job *reap_next;
};

struct relay_conn {
	struct relay *r;
	enum relay_conn_state state;
	struct conn *io;         /* the transport (lib/conn.h) */
	struct smtp_client *client;
	struct smtp_client_params params;
	struct event *timer;     /* the idle bound in the cache, and a failed
	                          * STARTTLS reported from the loop */
	struct sockaddr_storage addr;
	const struct config_route *auth; /* credentials used, or NULL */
	enum config_relay_tls tls;       /* level asked when connecting */
	bool tls_failed;         /* the handshake failed */
	bool tls_unstarted;      /* TLS could not even start: tell the client
	                          * from c->timer */
	bool tls_on, tls_verified;
	char tls_desc[TLS_DESC_MAX];     /* "none" or "TLSv1.3:CIPHER" */
	char mx[DNS_NAME_MAX + 1];
	char ip[INET6_ADDRSTRLEN];
	char peer[DNS_NAME_MAX + INET6_ADDRSTRLEN + 3];  /* "mx[ip]" */
	struct job *job;
	bool reused;             /* the running transaction is not the first */
	unsigned uses;           /* transactions started on it */
	int64_t idle_since;      /* util_mono_ms() when it went idle */
	struct relay_conn *next, *prev;
	struct relay_conn *reap_next;
};

/* An address whose TLS handshake failed at level "may". */
struct tls_broken {
	struct sockaddr_storage addr;
	int64_t until;           /* util_mono_ms() */
};

struct relay {
	const struct config *cfg;
	SSL_CTX *tls_ctx;        /* NULL: TLS unavailable */
	struct tls_broken broken[RELAY_TLS_BROKEN_MAX];
	size_t nbroken_next;     /* ring position */
	struct event_base *base;
	struct dns *dns;
	unsigned port;           /* relay_port, or relay_set_port() */
	size_t max_jobs;
	size_t max_conns;        /* max_relay_connections */
	size_t max_conns_dest;   /* max_relay_connections_per_domain, per
	                          * server address */
	size_t nconns;           /* sockets open (dead ones until reaped) */
	struct job *parked, *parked_tail;
	size_t nparked;
	struct ipc *queue;       /* the channel to the queue, or NULL */
	struct ctl *ctl;         /* to the parent */
	struct event *sig_term, *sig_int, *reap_ev;
	struct job *jobs[RELAY_HASH];
	size_t njobs;
	struct relay_conn *conns;
	size_t nidle;
	struct job *dead_jobs;
	struct relay_conn *dead_conns;
	bool stopping;
	int status;
};

static void job_attempt(struct job *j);
static void relay_conn_kill(struct relay_conn *c);

/* ------------------------------------------------------------------ */
/* small helpers */

static void
reason_set(struct reason *rs, unsigned code, const char *enh,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
reason_set(struct reason *rs, unsigned code, const char *enh,
    const char *fmt, ...)
{
	va_list ap;

	rs->code = code;
	util_strlcpy(rs->enh, enh, sizeof(rs->enh));
	va_start(ap, fmt);
	vsnprintf(rs->text, sizeof(rs->text), fmt, ap);
	va_end(ap);
}

static void
reason_from_reply(struct reason *rs, const struct smtp_client_reply *rp)
{
	rs->code = rp->code;
	util_strlcpy(rs->enh, rp->enhanced[0] ? rp->enhanced : "4.0.0",
	    sizeof(rs->enh));
	util_strlcpy(rs->text, rp->text, sizeof(rs->text));
}

static void
addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *a = ss->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr;

	if (inet_ntop(ss->ss_family, a, buf, (socklen_t)size) == NULL)
		util_strlcpy(buf, "?", size);
}

static socklen_t
addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
}

/* Same address and port? */
static bool
addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static void
addr_set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)(void *)ss)->sin_port = htons((uint16_t)port);
}

static void
timer_start(struct event *ev, unsigned seconds)
{
	struct timeval tv = { .tv_sec = (time_t)seconds, .tv_usec = 0 };

	evtimer_add(ev, &tv);
}

static void
reap_later(struct relay *r)
{
	event_active(r->reap_ev, 0, 0);
}

/* ------------------------------------------------------------------ */
/* jobs: table */

static size_t
job_bucket(uint64_t id)
{
	return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> 54) &
	    (RELAY_HASH - 1);
}

static struct job *
job_find(struct relay *r, uint64_t id)
{
	for (struct job *j = r->jobs[job_bucket(id)]; j != NULL; j = j->hnext)
		if (j->id == id)
			return j;
	return NULL;
}

static void
job_unlink(struct job *j)
{
	struct job **pp = &j->r->jobs[job_bucket(j->id)];

	while (*pp != j)
		pp = &(*pp)->hnext;
	*pp = j->hnext;
	j->hnext = NULL;
	j->r->njobs--;
}

static void
job_free(struct job *j)
{
	envelope_clear(&j->env);
	if (j->body != NULL)
		evbuffer_free(j->body);
	if (j->step_ev != NULL)
		event_free(j->step_ev);
	free(j->idx);
	free(j->hosts);
	free(j);
}

static void
job_unpark(struct job *j)
{
	struct relay *r = j->r;

	if (!j->parked)
		return;
	if (j->pprev != NULL)
		j->pprev->pnext = j->pnext;
	else
		r->parked = j->pnext;
	if (j->pnext != NULL)
		j->pnext->pprev = j->pprev;
	else
		r->parked_tail = j->pprev;
	j->pnext = j->pprev = NULL;
	j->parked = false;
	r->nparked--;
}

/* Wait for a connection slot: woken (in order) when a connection closes
 * or goes idle. */
static void
job_park(struct job *j)
{
	struct relay *r = j->r;

	ASSERT(!j->parked);
	j->parked = true;
	r->nparked++;
	j->pnext = NULL;
	j->pprev = r->parked_tail;
	if (r->parked_tail != NULL)
		r->parked_tail->pnext = j;
	else
		r->parked = j;
	r->parked_tail = j;
}

static void
jobs_wake_parked(struct relay *r)
{
	while (r->parked != NULL) {
		struct job *j = r->parked;

		job_unpark(j);
		event_active(j->step_ev, 0, 0);
	}
}

/* Take j out of service: no callback of its own runs again; freed by
 * reap. Its connection, if any, must already be detached or killed. */
static void
job_kill(struct job *j)
{
	struct relay *r = j->r;

	if (j->state == JOB_DEAD)
		return;
	if (j->q != NULL) {
		dns_cancel(j->q);
		j->q = NULL;
	}
	if (j->conn != NULL) {
		struct relay_conn *c = j->conn;

		/* A transaction for a job nobody waits for: the connection
		 * goes (the server discards an unfinished message, RFC 5321
		 * 4.1.1.4); the client still points at the job's body. */
		c->job = NULL;
		j->conn = NULL;
		relay_conn_kill(c);
	}
	event_del(j->step_ev);
	job_unpark(j);
	job_unlink(j);
	j->state = JOB_DEAD;
	j->reap_next = r->dead_jobs;
	r->dead_jobs = j;
	reap_later(r);
}

/* Every job of the channel, without results (the channel is gone or going). */
static void
jobs_drop_all(struct relay *r)
{
	for (size_t b = 0; b < RELAY_HASH; b++)
		while (r->jobs[b] != NULL)
			job_kill(r->jobs[b]);
}

/* ------------------------------------------------------------------ */
/* jobs: results */

static const char *
state_name(char letter)
{
	return letter == 'D' ? "delivered" : letter == 'F' ? "failed" :
	    "deferred";
}

struct result {
	struct evbuffer *buf;
	size_t textmax;      /* per line, so that the frame fits */
	int64_t delay;
};

static void
result_begin(struct job *j, struct result *res, bool peer_dsn)
{
	int64_t now = util_now_us() / 1000000;

	res->buf = evbuffer_new();
	if (res->buf == NULL)
		fatal("relay: out of memory");
	res->textmax = relay_result_text_max(j->env.nrcpts);
	res->delay = now > j->env.arrival ? now - j->env.arrival : 0;
	relay_result_begin(res->buf, j->via_mx, j->via_ip,
	    j->via_ip[0] ? j->via_tls : NULL, peer_dsn);
}

/* One recipient's line, and its log line. */
static void
result_line(struct job *j, struct result *res, size_t i, char letter,
    const struct reason *rs)
{
	struct relay_result_line l = { .outcome = letter, .code = rs->code };
	char qrcpt[256], qtext[SMTP_CLIENT_TEXT_MAX * 4 + 8], qmx[300];
	const char *addr = j->env.rcpts[i].addr;

	util_strlcpy(l.enh, rs->enh, sizeof(l.enh));
	util_strlcpy(l.text, rs->text, sizeof(l.text));
	relay_result_add(res->buf, i, &l, res->textmax);
	log_info("relay id=%s rcpt=%s mx=%s ip=%s tls=%s reply=\"%u %s %s\" "
	    "state=%s delay=%llds", j->env.id,
	    log_quote(qrcpt, sizeof(qrcpt), addr, strlen(addr), 200),
	    j->via_mx[0] ? log_quote(qmx, sizeof(qmx), j->via_mx,
	    strlen(j->via_mx), 253) : "-", j->via_ip[0] ? j->via_ip : "-",
	    j->via_ip[0] && j->via_tls[0] ? j->via_tls : "-",
	    l.code, l.enh, log_quote(qtext, sizeof(qtext), l.text,
	    strlen(l.text), 200), state_name(letter), (long long)res->delay);
}

/* Send the RESULT and retire the job. */
static void
result_end(struct job *j, struct result *res)
{
	struct relay *r = j->r;
	size_t len = evbuffer_get_length(res->buf);

	ASSERT(len <= IPC_MAX_PAYLOAD);
	if (r->queue != NULL)
		ipc_send(r->queue, RELAY_JOB_RESULT, j->id,
		    evbuffer_pullup(res->buf, -1), len);
	evbuffer_free(res->buf);
	job_kill(j);
}

/* Every recipient the same verdict. */
static void
job_finish_all(struct job *j, char letter, const struct reason *rs)
{
	struct result res;

	result_begin(j, &res, false);
	for (size_t i = 0; i < j->env.nrcpts; i++)
		result_line(j, &res, i, letter, rs);
	result_end(j, &res);
}

/* Each recipient as the server (or the client engine) decided. */
static void
job_finish_client(struct job *j, const struct smtp_client_result *cr)
{
	struct result res;
	struct reason rs;

	ASSERT(cr->nrcpts == j->env.nrcpts);
	/* The queue owes "relayed" DSNs only to a peer without DSN. */
	result_begin(j, &res, cr->peer_dsn);
	for (size_t i = 0; i < cr->nrcpts; i++) {
		const struct smtp_client_rcpt_result *x = &cr->rcpts[i];

		ASSERT(x->rcpt == i);
		reason_from_reply(&rs, &x->reply);
		result_line(j, &res, i,
		    x->status == SMTP_CLIENT_DELIVERED ? 'D' :
		    x->status == SMTP_CLIENT_PERMFAIL ? 'F' : 'T', &rs);
	}
	result_end(j, &res);
}

/* ------------------------------------------------------------------ */
/* connections */

static void
relay_conn_free(struct relay_conn *c)
{
	smtp_client_free(&c->client);
	conn_free(&c->io);
	event_free(c->timer);
	free(c);
}

static void
relay_conn_set_state(struct relay_conn *c, enum relay_conn_state st)
{
	if (c->state == RC_IDLE)
		c->r->nidle--;
	c->state = st;
	if (st == RC_IDLE) {
		c->r->nidle++;
		c->idle_since = util_mono_ms();
		/* a job waiting for this server may take it */
		jobs_wake_parked(c->r);
	}
}

/* Take c out of service: nothing of it runs again; freed by reap. The
 * caller deals with c->job first (it is only detached here). */
static void
relay_conn_kill(struct relay_conn *c)
{
	struct relay *r = c->r;

	if (c->state == RC_DEAD)
		return;
	if (c->job != NULL) {
		c->job->conn = NULL;
		c->job = NULL;
	}
	relay_conn_set_state(c, RC_DEAD);
	evtimer_del(c->timer);
	/* the socket closes now (or when the callback we are in returns);
	 * the client, which points at its buffers, is not called again */
	conn_free(&c->io);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->reap_next = r->dead_conns;
	r->dead_conns = c;
	reap_later(r);
}

/* TLS-broken addresses (see the top of this file). */
static bool
tls_broken(struct relay *r, const struct sockaddr_storage *sa)
{
	int64_t now = util_mono_ms();

	for (size_t i = 0; i < RELAY_TLS_BROKEN_MAX; i++)
		if (r->broken[i].until > now && addr_eq(&r->broken[i].addr, sa))
			return true;
	return false;
}

static void
tls_broken_add(struct relay *r, const struct sockaddr_storage *sa)
{
	struct tls_broken *b = &r->broken[r->nbroken_next];

	r->nbroken_next = (r->nbroken_next + 1) % RELAY_TLS_BROKEN_MAX;
	b->addr = *sa;
	b->until = util_mono_ms() + RELAY_TLS_BROKEN_SECONDS * 1000;
}

static void
job_defer_attempt(struct job *j)
{
	event_active(j->step_ev, 0, 0);
}

/* The connection attempt failed: the job moves on. */
static void
relay_conn_connect_failed(struct relay_conn *c, const char *why)
{
	struct job *j = c->job;

	log_info("relay id=%s event=connect-failed mx=%s ip=%s reason=\"%s\"",
	    j ? j->env.id : "-", c->mx, c->ip, why);
	if (j != NULL)
		reason_set(&j->last, 0, "4.4.1", "connect to %s: %s", c->peer,
		    why);
	relay_conn_kill(c);
	if (j != NULL)
		job_defer_attempt(j);
}

/* A connection-level failure: nothing about the transaction was said.
 * On a cached connection the server may just have dropped an old idle
 * connection, so a query at MAIL or RSET counts too. */
static bool
connection_level(const struct smtp_client_result *cr)
{
	if (cr->error == SMTP_CLIENT_ERR_NONE)
		return false;
	for (size_t i = 0; i < cr->nrcpts; i++) {
		const struct smtp_client_rcpt_result *x = &cr->rcpts[i];

		if (x->status != SMTP_CLIENT_TEMPFAIL)
			return false;
		switch (x->stage) {
		case SMTP_CLIENT_STAGE_LOCAL:
		case SMTP_CLIENT_STAGE_GREETING:
		case SMTP_CLIENT_STAGE_EHLO:
		case SMTP_CLIENT_STAGE_HELO:
		case SMTP_CLIENT_STAGE_RSET:
		case SMTP_CLIENT_STAGE_STARTTLS:
		case SMTP_CLIENT_STAGE_MAIL:
			/* error != NONE at MAIL: the reply to MAIL was 421,
			 * or none came: the server never took the
			 * transaction. */
			break;
		default:
			return false;
		}
	}
	return true;
}

/* After a transaction: keep the connection for the next job to the same
 * server, for relay_connection_reuse_time at most, or QUIT it. */
static void
relay_conn_after_transaction(struct relay_conn *c)
{
	struct relay *r = c->r;
	unsigned keep = r->cfg->relay_connection_reuse_time;
	size_t same = 0;

	for (struct relay_conn *o = r->conns; o != NULL; o = o->next)
		if (o != c && o->state == RC_IDLE && addr_eq(&o->addr, &c->addr))
			same++;
	size_t idle_max = r->cfg->max_relay_connections > RELAY_IDLE_MAX ?
	    r->cfg->max_relay_connections : RELAY_IDLE_MAX;
	/* Keeping as many idle as jobs may run for a destination lets a
	 * steady stream reuse every connection instead of reconnecting. */
	if (r->stopping || keep == 0 || r->nidle >= idle_max ||
	    same >= r->max_conns_dest ||
	    !smtp_client_idle(c->client)) {
		relay_conn_set_state(c, RC_QUITTING);
		smtp_client_quit(c->client);
		return;
	}
	relay_conn_set_state(c, RC_IDLE);
	timer_start(c->timer, keep);
}

/* smtp_client's verdict on one transaction (from inside the client). */
static void
on_result(void *arg, const struct smtp_client_result *cr)
{
	struct relay_conn *c = arg;
	struct job *j = c->job;
	bool reused = c->reused;

	c->job = NULL;
	c->reused = false;
	if (j != NULL) {
		j->conn = NULL;
		if (connection_level(cr)) {
			char q[SMTP_CLIENT_TEXT_MAX * 4 + 8];

			reason_from_reply(&j->last, &cr->rcpts[0].reply);
			log_info("relay id=%s event=attempt-failed mx=%s ip=%s "
			    "reused=%s reply=\"%u %s %s\"", j->env.id, c->mx,
			    c->ip, reused ? "yes" : "no", j->last.code,
			    j->last.enh, log_quote(q, sizeof(q), j->last.text,
			    strlen(j->last.text), 200));
			/* A cached connection gone stale says nothing about
			 * the server: try it again on a fresh one. So does
			 * a failed opportunistic handshake: in clear text. */
			j->retry_here = reused;
			if (c->tls_failed && c->tls == CONFIG_RELAY_TLS_MAY) {
				tls_broken_add(c->r, &c->addr);
				j->retry_here = true;
			}
			job_defer_attempt(j);
		} else {
			job_finish_client(j, cr);
		}
	}
	if (cr->error == SMTP_CLIENT_ERR_NONE && c->state == RC_BUSY)
		relay_conn_after_transaction(c);
	/* otherwise io->close follows */
}

/* Hand c's job to the client. */
static void
relay_conn_send(struct relay_conn *c)
{
	struct job *j = c->job;
	int rc;

	c->uses++;
	rc = smtp_client_send(c->client, &j->env, j->idx, j->env.nrcpts,
	    j->flat, j->flatlen, on_result, c);
	/* Recipient counts are checked at RELAY_JOB, and a cached
	 * connection is used only when smtp_client_idle(). */
	ASSERT(rc == 0);
	smtp_client_process(c->client);
}

static void
cio_set_timeout(void *arg, unsigned seconds)
{
	struct relay_conn *c = arg;

	if (c->state == RC_DEAD)
		return;
	/* the engine restarts it whenever it made progress (RFC 5321
	 * 4.5.3.2: a timeout per command and per block of content) */
	conn_set_deadline(c->io, seconds * 1000);
}

static void
cio_close(void *arg, enum smtp_client_error why)
{
	struct relay_conn *c = arg;

	if (c->state == RC_DEAD || c->state == RC_CLOSING)
		return;
	if (c->job != NULL) {
		/* Never happens (a running transaction gets its result
		 * first); a job is never stranded if it does. */
		struct job *j = c->job;

		c->job = NULL;
		j->conn = NULL;
		reason_from_reply(&j->last, smtp_client_last_reply(c->client));
		job_defer_attempt(j);
	}
	relay_conn_set_state(c, RC_CLOSING);
	evtimer_del(c->timer);
	/* flush the QUIT (or whatever is left), bounded; ended follows */
	conn_close(c->io, RELAY_CLOSE_TIMEOUT * 1000);
}

/* The server said 220 to STARTTLS: wrap the connection (tls.h). */
static void
cio_starttls(void *arg)
{
	struct relay_conn *c = arg;
	struct relay *r = c->r;

	/* An address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]") is checked
	 * as an address and sent without SNI (RFC 6066 3). */
	char host[DNS_NAME_MAX + 1];
	size_t hl = strlen(c->mx);
	if (hl > 2 && c->mx[0] == '[' && c->mx[hl - 1] == ']') {
		const char *a = c->mx + 1;
		size_t al = hl - 2;

		if (al > 5 && strncasecmp(a, "IPv6:", 5) == 0) {
			a += 5;
			al -= 5;
		}
		snprintf(host, sizeof(host), "%.*s", (int)al, a);
	} else
		util_strlcpy(host, c->mx, sizeof(host));
	/* the client's own timer bounds the handshake (its STARTTLS stage) */
	if (conn_starttls(c->io, r->tls_ctx, false, host,
	    c->tls == CONFIG_RELAY_TLS_VERIFY, 0) == -1) {
		/* Reported from the timer, never from inside the client. */
		c->tls_unstarted = true;
		timer_start(c->timer, 0);
	}
}

/* The handshake is over (ok) or failed (why). */
static void
relay_conn_tls_done(struct relay_conn *c, bool ok, const char *text)
{
	if (!ok) {
		c->tls_failed = true;
		log_info("relay id=%s event=tls-failed mx=%s ip=%s level=%s "
		    "reason=\"%s\"", c->job ? c->job->env.id : "-", c->mx, c->ip,
		    route_tls_name(c->tls), text);
		smtp_client_tls_done(c->client, NULL, NULL, text);
		return;
	}
	c->tls_on = true;
	c->tls_verified = conn_tls_verified(c->io);
	util_strlcpy(c->tls_desc, text, sizeof(c->tls_desc));
	if (c->job != NULL)
		util_strlcpy(c->job->via_tls, c->tls_desc,
		    sizeof(c->job->via_tls));
	log_info("relay id=%s event=tls mx=%s ip=%s tls=%s cert=%s",
	    c->job ? c->job->env.id : "-", c->mx, c->ip, c->tls_desc,
	    c->tls_verified ? "verified" : "untrusted");
	smtp_client_tls_done(c->client, conn_input(c->io), conn_output(c->io),
	    NULL);
}

static const struct smtp_client_io client_io = {
	.set_timeout = cio_set_timeout,
	.close = cio_close,
	.starttls = cio_starttls,
};

/* ---- what the transport tells us (conn_ops) ---- */

static void
rc_readable(void *arg)
{
	struct relay_conn *c = arg;

	if (c->client != NULL && (c->state == RC_BUSY ||
	    c->state == RC_IDLE || c->state == RC_QUITTING))
		smtp_client_process(c->client);
}

static void
rc_drained(void *arg)
{
	struct relay_conn *c = arg;

	/* output drained below the low-water mark: more content */
	if (c->client != NULL && (c->state == RC_BUSY ||
	    c->state == RC_QUITTING))
		smtp_client_process(c->client);
}

static void
rc_tls_done(void *arg, bool ok, const char *text)
{
	relay_conn_tls_done(arg, ok, text);
}

/* The client's timer (io->set_timeout) fired. */
static void
rc_timeout(void *arg)
{
	struct relay_conn *c = arg;

	if (c->client != NULL && c->state != RC_CLOSING &&
	    c->state != RC_DEAD)
		smtp_client_timeout(c->client);
}

static void
rc_connected(void *arg)
{
	struct relay_conn *c = arg;
	struct relay *r = c->r;
	struct job *j = c->job;

	relay_conn_set_state(c, RC_BUSY);
	util_strlcpy(j->via_mx, c->mx, sizeof(j->via_mx));
	util_strlcpy(j->via_ip, c->ip, sizeof(j->via_ip));
	c->params.helo_name = r->cfg->hostname;
	c->params.peer = c->peer;
	util_strlcpy(c->tls_desc, "none", sizeof(c->tls_desc));
	util_strlcpy(j->via_tls, "none", sizeof(j->via_tls));
	c->params.tls = r->tls_ctx == NULL || c->tls == CONFIG_RELAY_TLS_NO ?
	    SMTP_CLIENT_TLS_NO : c->tls == CONFIG_RELAY_TLS_MAY ?
	    SMTP_CLIENT_TLS_MAY : SMTP_CLIENT_TLS_MUST;
	if (c->tls == CONFIG_RELAY_TLS_MAY && tls_broken(r, &c->addr)) {
		log_debug("relay id=%s event=tls-skipped mx=%s ip=%s "
		    "reason=\"handshake failed recently\"", j->env.id, c->mx,
		    c->ip);
		c->params.tls = SMTP_CLIENT_TLS_NO;
	}
	c->params.auth_plaintext = c->auth != NULL &&
	    c->auth->auth_plaintext != 0;
	/* Only ever on a connection to the route's own smarthost. */
	if (c->auth != NULL) {
		c->params.auth_user = c->auth->auth_user;
		c->params.auth_password = c->auth->auth_password;
	}
	c->client = smtp_client_new(&c->params, conn_input(c->io),
	    conn_output(c->io), &client_io, c);
	smtp_client_start(c->client);
	relay_conn_send(c);
}

static void
rc_ended(void *arg, enum conn_end end, const char *why)
{
	struct relay_conn *c = arg;

	switch (c->state) {
	case RC_DEAD:
		return;
	case RC_CONNECTING:
		relay_conn_connect_failed(c, why);
		return;
	case RC_CLOSING:
		relay_conn_kill(c);
		return;
	default:
		/* The client reads what is left (a last 421 counts), fails
		 * the transaction if one runs, and closes (io->close). */
		smtp_client_eof(c->client);
		return;
	}
}

static const struct conn_ops relay_conn_ops = {
	.connected = rc_connected,
	.readable = rc_readable,
	.drained = rc_drained,
	.tls_done = rc_tls_done,
	.timeout = rc_timeout,
	.ended = rc_ended,
};

/* The idle bound of a cached connection, or a STARTTLS that could not
 * start, reported from here rather than from inside the client. */
static void
relay_conn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct relay_conn *c = arg;

	if (c->state == RC_IDLE) {
		/* No job wanted it within relay_connection_reuse_time. */
		log_info("relay event=conn-close reason=idle mx=%s ip=%s "
		    "uses=%u", c->mx, c->ip, c->uses);
		relay_conn_set_state(c, RC_QUITTING);
		smtp_client_quit(c->client);
		smtp_client_process(c->client);
	} else if (c->tls_unstarted && c->state != RC_DEAD &&
	    c->state != RC_CLOSING) {
		c->tls_unstarted = false;
		relay_conn_tls_done(c, false,
		    "TLS handshake failed: cannot start TLS");
	}
}

/*
 * Start a connection for j to host h's address sa. 0: connecting (the job
 * hears back through its step event), -1: could not even start, with
 * j->last saying why.
 */
static int
relay_conn_connect(struct job *j, const struct job_host *h,
    const struct sockaddr_storage *sa)
{
	struct relay *r = j->r;
	struct relay_conn *c = xcalloc(1, sizeof(*c));
	char err[256];

	c->r = r;
	c->addr = *sa;
	c->auth = j->auth;
	c->tls = j->tls;
	util_strlcpy(c->mx, h->name, sizeof(c->mx));
	addr_text(sa, c->ip, sizeof(c->ip));
	snprintf(c->peer, sizeof(c->peer), "%s[%s]", c->mx, c->ip);
	c->timer = evtimer_new(r->base, relay_conn_timer_cb, c);
	if (c->timer == NULL)
		fatal("relay: out of memory creating a connection");
	c->state = RC_CONNECTING;
	r->nconns++;
	c->next = r->conns;
	if (r->conns != NULL)
		r->conns->prev = c;
	r->conns = c;
	c->job = j;
	j->conn = c;
	j->via_mx[0] = '\0';
	j->via_ip[0] = '\0';
	c->io = conn_connect(r->base, (const struct sockaddr *)sa, addr_len(sa),
	    NULL, 0, RELAY_CONNECT_TIMEOUT * 1000, &relay_conn_ops, c, err,
	    sizeof(err));
	if (c->io == NULL) {
		reason_set(&j->last, 0, "4.4.1", "connect to %s: %s", c->peer,
		    err);
		log_info("relay id=%s event=connect-failed mx=%s ip=%s "
		    "reason=\"%s\"", j->env.id, c->mx, c->ip, err);
		relay_conn_kill(c);
		return -1;
	}
	/* writing stops at SMTP_CLIENT_OUTPUT_HIGH; drained asks for more
	 * at half of it */
	conn_set_lowat(c->io, SMTP_CLIENT_OUTPUT_HIGH / 2);
	return 0;
}

/*
 * Room for one more connection to sa? max_relay_connections bounds the
 * sockets open at once, max_relay_connections_per_domain those to one
 * server address; idle, quitting and closing connections count (the
 * server sees them), dead ones too until their socket is closed. When
 * there is no room, the idle connection unused longest is told to QUIT,
 * so that waiting for a slot never waits for the idle timer.
 */
static bool
relay_conn_slot(struct relay *r, const struct sockaddr_storage *sa)
{
	struct relay_conn *lru = NULL, *lru_dest = NULL;
	size_t dest = 0, leaving = 0;

	for (struct relay_conn *c = r->conns; c != NULL; c = c->next) {
		bool same = addr_eq(&c->addr, sa);

		dest += same;
		if (c->state == RC_QUITTING || c->state == RC_CLOSING)
			leaving++;
		if (c->state != RC_IDLE)
			continue;
		if (lru == NULL || c->idle_since < lru->idle_since)
			lru = c;
		if (same && (lru_dest == NULL || c->idle_since < lru_dest->idle_since))
			lru_dest = c;
	}
	for (struct relay_conn *c = r->dead_conns; c != NULL; c = c->reap_next) {
		dest += addr_eq(&c->addr, sa);
		leaving++;
	}
	if (r->nconns < r->max_conns && dest < r->max_conns_dest)
		return true;
	if (dest >= r->max_conns_dest)
		lru = lru_dest;
	/* one connection on its way out per waiting job is enough */
	if (lru != NULL && leaving <= r->nparked) {
		log_debug("relay event=conn-close reason=limit mx=%s ip=%s "
		    "uses=%u", lru->mx, lru->ip, lru->uses);
		relay_conn_set_state(lru, RC_QUITTING);
		evtimer_del(lru->timer);
		smtp_client_quit(lru->client);
		smtp_client_process(lru->client);
	}
	return false;
}

/* A cached connection to sa (host name host), ready for a transaction of
 * j, or NULL: the same server, the same credentials (see the top of this
 * file), and TLS as strong as j needs. A verified certificate was only
 * checked against the name the connection was made for, so a job that
 * needs verification reuses it only for that same name. One idle for
 * relay_connection_reuse_time already is not taken, even if its timer
 * has not run yet (it is due in this same turn of the loop). */
static struct relay_conn *
relay_conn_idle_find(struct job *j, const struct sockaddr_storage *sa,
    const char *host)
{
	int64_t since = util_mono_ms() -
	    (int64_t)j->r->cfg->relay_connection_reuse_time * 1000;

	for (struct relay_conn *c = j->r->conns; c != NULL; c = c->next)
		if (c->state == RC_IDLE && c->idle_since > since &&
		    addr_eq(&c->addr, sa) &&
		    c->auth == j->auth && smtp_client_idle(c->client) &&
		    (j->tls < CONFIG_RELAY_TLS_ENCRYPT || c->tls_on) &&
		    (j->tls < CONFIG_RELAY_TLS_VERIFY || (c->tls_verified &&
		    strcasecmp(c->mx, host) == 0)))
			return c;
	return NULL;
}

static void
relay_conn_reuse(struct relay_conn *c, struct job *j, const struct job_host *h)
{
	log_info("relay id=%s event=conn-reuse mx=%s ip=%s uses=%u idle=%lldms",
	    j->env.id, c->mx, c->ip, c->uses,
	    (long long)(util_mono_ms() - c->idle_since));
	evtimer_del(c->timer);
	relay_conn_set_state(c, RC_BUSY);
	c->job = j;
	c->reused = true;
	j->conn = c;
	util_strlcpy(j->via_mx, h->name, sizeof(j->via_mx));
	util_strlcpy(j->via_ip, c->ip, sizeof(j->via_ip));
	util_strlcpy(j->via_tls, c->tls_desc, sizeof(j->via_tls));
	relay_conn_send(c);
}

/* ------------------------------------------------------------------ */
/* jobs: delivery */

/* Advance to the next address in try order; false when none is left. */
static bool
job_next_addr(struct job *j)
{
	if (!j->started) {
		j->started = true;
		j->hi = 0;
		j->ai = 0;
	} else if (++j->ai >= j->hosts[j->hi].naddrs) {
		j->hi++;
		j->ai = 0;
	}
	return j->hi < j->nhosts;
}

/*
 * Before the first attempt: a cached connection to any address of the
 * job's first host saves a connection without leaving the order RFC 5321
 * 5.1 asks for (a host's addresses are one server). Only that host's: it
 * is this job's random pick among the most preferred ones (dns_mx_sort()),
 * and taking a connection cached for another one of them would send
 * every job to the host that happened to be connected first, whereas
 * RFC 5321 5.1 wants equal preferences tried in random order so that
 * they share the load.
 */
static bool
job_try_cached_first(struct job *j)
{
	const struct job_host *h = &j->hosts[0];

	for (size_t a = 0; a < h->naddrs; a++) {
		struct relay_conn *c = relay_conn_idle_find(j, &h->addrs[a], h->name);

		if (c == NULL)
			continue;
		j->started = true;
		j->hi = 0;
		j->ai = a;
		relay_conn_reuse(c, j, h);
		return true;
	}
	return false;
}

/* Start the next attempt, or answer when none is left. */
static void
job_attempt(struct job *j)
{
	ASSERT(j->state == JOB_SENDING && j->conn == NULL);
	if (j->nhosts == 0 && j->route != NULL && j->route->smarthost != NULL) {
		reason_set(&j->last, 0, "4.4.4", "smarthost %s has no usable "
		    "address (tern's own listeners are skipped)",
		    j->route->smarthost);
		job_finish_all(j, 'T', &j->last);
		return;
	}
	if (j->nhosts == 0) {
		reason_set(&j->last, 0, "4.4.4", "no usable mail exchanger for %s",
		    j->domain);
		job_finish_all(j, 'T', &j->last);
		return;
	}
	if (!j->started && job_try_cached_first(j))
		return;
	for (;;) {
		bool fresh_only = j->retry_here;
		const struct job_host *h;
		const struct sockaddr_storage *sa;
		struct relay_conn *c;

		j->retry_here = false;
		if (j->hold_pos)
			j->hold_pos = false;   /* back from waiting for a slot */
		else if (!fresh_only && !job_next_addr(j))
			break;
		h = &j->hosts[j->hi];
		sa = &h->addrs[j->ai];
		if (!fresh_only && (c = relay_conn_idle_find(j, sa, h->name)) != NULL) {
			relay_conn_reuse(c, j, h);
			return;
		}
		if (j->attempts >= RELAY_MAX_ATTEMPTS)
			break;
		if (!relay_conn_slot(j->r, sa)) {
			j->hold_pos = true;
			j->retry_here = fresh_only;
			job_park(j);
			return;
		}
		j->attempts++;
		if (relay_conn_connect(j, h, sa) == 0)
			return;
	}
	/* Every address failed at connection level: try again later, with
	 * the last reason (RFC 5321 5.1, 4.5.4.1). */
	if (j->last.enh[0] == '\0')
		reason_set(&j->last, 0, "4.4.1", "no mail exchanger for %s "
		    "could be reached", j->domain);
	j->via_mx[0] = '\0';
	j->via_ip[0] = '\0';
	job_finish_all(j, 'T', &j->last);
}

static void
job_step_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct job *j = arg;

	if (j->state == JOB_SENDING && j->conn == NULL)
		job_attempt(j);
}

static void
on_mx(void *arg, const struct dns_mx_result *res)
{
	struct job *j = arg;
	const struct config_route *rt = j->route;
	bool smart = rt != NULL && rt->smarthost != NULL;
	enum dns_status st = res->status;
	struct reason rs;

	j->q = NULL;
	if (smart && st == DNS_LOOP)
		/* A smarthost may be on this machine (route_host_usable()). */
		for (size_t i = 0; i < res->nhosts; i++)
			if (route_host_usable(rt, &res->hosts[i]))
				st = DNS_OK;
	if (smart && st != DNS_OK) {
		/* The administrator named it: a lookup failure is a
		 * configuration or DNS problem to fix, never a bounce. */
		reason_set(&rs, 0, "4.4.3", "smarthost %s: %s", rt->smarthost,
		    res->reason);
		log_info("relay id=%s event=smarthost-unresolved route=%s "
		    "smarthost=%s reason=\"%s\"", j->env.id, rt->domain,
		    rt->smarthost, res->reason);
		job_finish_all(j, 'T', &rs);
		return;
	}
	switch (st) {
	case DNS_OK:
		break;
	case DNS_NULL_MX:
		/* RFC 7505 3: no mail accepted for this domain; fail at once. */
		reason_set(&rs, 556, "5.1.10", "Recipient address has null MX: "
		    "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_NXDOMAIN:
	case DNS_BAD_NAME:
		reason_set(&rs, 0, "5.1.2", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_NO_ADDRESS:
		reason_set(&rs, 0, "5.4.4", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_LOOP:
		reason_set(&rs, 0, "5.4.6", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_TEMPFAIL:
	default:
		reason_set(&rs, 0, "4.4.3", "%s", res->reason);
		job_finish_all(j, 'T', &rs);
		return;
	}
	j->hosts = xcalloc(res->nhosts ? res->nhosts : 1, sizeof(*j->hosts));
	for (size_t i = 0; i < res->nhosts; i++) {
		const struct dns_mx_host *h = &res->hosts[i];
		struct job_host *jh = &j->hosts[j->nhosts];

		if (!route_host_usable(rt, h))
			continue;
		util_strlcpy(jh->name, h->name, sizeof(jh->name));
		jh->pref = h->pref;
		jh->naddrs = 0;
		for (size_t a = 0; a < h->naddrs && a < DNS_MAX_ADDRS; a++) {
			/* A smarthost that is tern's own listener would loop. */
			if (smart && route_is_listener(j->r->cfg, &h->addrs[a],
			    j->port))
				continue;
			jh->addrs[jh->naddrs] = h->addrs[a];
			addr_set_port(&jh->addrs[jh->naddrs++], j->port);
		}
		if (jh->naddrs > 0)
			j->nhosts++;
	}
	j->state = JOB_SENDING;
	job_attempt(j);
}

/* END: the message is complete. */
static void
job_start(struct job *j)
{
	j->flatlen = evbuffer_get_length(j->body);
	j->flat = j->flatlen ? (const char *)evbuffer_pullup(j->body, -1) : "";
	if (j->flat == NULL)
		fatal("relay: out of memory");
	j->idx = xcalloc(j->env.nrcpts, sizeof(*j->idx));
	for (size_t i = 0; i < j->env.nrcpts; i++)
		j->idx[i] = i;
	if (util_has_8bit(j->domain, strlen(j->domain))) {
		/* RFC 5891 5: DNS, routes and TLS names all use A-labels. */
		char alabel[RELAY_DOMAIN_MAX + 1];
		struct reason rs;

		switch (util_idna_to_ascii(j->domain, strlen(j->domain), alabel,
		    sizeof(alabel))) {
		case 0:
			util_strlcpy(j->domain, alabel, sizeof(j->domain));
			break;
		default:
			reason_set(&rs, 0, "5.1.2", "%s is not a valid "
			    "internationalized domain (IDNA2008, RFC 5891)",
			    j->domain);
			job_finish_all(j, 'F', &rs);
			return;
		}
	}
	j->route = route_lookup(j->r->cfg, j->domain);
	j->port = j->r->port;
	j->tls = route_tls_level(j->r->cfg, j->route);
	if (j->tls >= CONFIG_RELAY_TLS_ENCRYPT && j->r->tls_ctx == NULL) {
		struct reason rs;

		/* Never in clear text what must be encrypted. */
		reason_set(&rs, 0, "4.7.10", "TLS required but unavailable "
		    "(the TLS context could not be created; see the log)");
		job_finish_all(j, 'T', &rs);
		return;
	}
	j->state = JOB_RESOLVING;
	if (j->route != NULL && j->route->smarthost != NULL) {
		char q[DNS_NAME_MAX + 16];
		bool mx;

		route_smarthost_query(j->route, q, sizeof(q), &mx);
		j->port = j->route->smarthost_port;
		if (j->route->auth_user != NULL)
			j->auth = j->route;
		log_debug("relay id=%s event=route route=%s smarthost=%s "
		    "auth=%s", j->env.id, j->route->domain,
		    j->route->smarthost, j->auth != NULL ? "yes" : "no");
		j->q = mx ? dns_resolve_mx(j->r->dns, q, on_mx, j) :
		    dns_resolve_host(j->r->dns, q, on_mx, j);
		return;
	}
	j->q = dns_resolve_mx(j->r->dns, j->domain, on_mx, j);
}

/* ------------------------------------------------------------------ */
/* the queue channel (proto/relay_job.h) */

static void queue_close(struct relay *r);

/* START: a new job, "domain <d>\n" then the envelope. */
static int
on_job_start(void *arg, struct ipc_frame *f)
{
	struct relay *r = arg;
	char err[256];
	struct job *j;

	if (job_find(r, f->id) != NULL) {
		snprintf(f->why, f->whysize, "job id %llu already in use",
		    (unsigned long long)f->id);
		return -1;
	}
	if (r->njobs >= r->max_jobs) {
		snprintf(f->why, f->whysize, "too many jobs in flight");
		return -1;
	}
	j = xcalloc(1, sizeof(*j));
	envelope_init(&j->env);
	if (relay_job_decode(f->data, f->len, j->domain, &j->env, err,
	    sizeof(err)) == -1) {
		snprintf(f->why, f->whysize, "job %llu invalid: %s",
		    (unsigned long long)f->id, err);
		job_free(j);
		return -1;
	}
	j->r = r;
	j->id = f->id;
	j->state = JOB_RECEIVING;
	j->body = evbuffer_new();
	j->step_ev = event_new(r->base, -1, 0, job_step_cb, j);
	if (j->body == NULL || j->step_ev == NULL)
		fatal("relay: out of memory");
	j->hnext = r->jobs[job_bucket(j->id)];
	r->jobs[job_bucket(j->id)] = j;
	r->njobs++;
	return 0;
}

/* The job f is for, if it is still receiving its message. */
static struct job *
job_receiving(struct relay *r, struct ipc_frame *f)
{
	struct job *j = job_find(r, f->id);

	if (j == NULL || j->state != JOB_RECEIVING) {
		snprintf(f->why, f->whysize, "frame for no job being received "
		    "(id %llu)", (unsigned long long)f->id);
		return NULL;
	}
	return j;
}

static int
on_job_data(void *arg, struct ipc_frame *f)
{
	struct relay *r = arg;
	struct job *j = job_receiving(r, f);

	if (j == NULL)
		return -1;
	if (evbuffer_get_length(j->body) + f->len >
	    r->cfg->max_message_size + RELAY_BODY_SLACK) {
		snprintf(f->why, f->whysize, "job %llu: body over max_message_size",
		    (unsigned long long)f->id);
		return -1;
	}
	evbuffer_add(j->body, f->data, f->len);
	return 0;
}

static int
on_job_end(void *arg, struct ipc_frame *f)
{
	struct job *j = job_receiving(arg, f);

	if (j == NULL)
		return -1;
	job_start(j);
	return 0;
}

static int
on_job_cancel(void *arg, struct ipc_frame *f)
{
	struct job *j = job_find(arg, f->id);

	/* The job may be answered already: the RESULT crossed. */
	if (j != NULL) {
		log_info("relay id=%s event=cancelled", j->env.id);
		job_kill(j);
	}
	return 0;
}

/* What the relay accepts from the queue. */
static const struct ipc_handler queue_frames[] = {
	{ RELAY_JOB_START, IPC_ID, on_job_start },
	{ RELAY_JOB_DATA, IPC_ID, on_job_data },
	{ RELAY_JOB_END, IPC_ID | IPC_EMPTY, on_job_end },
	{ RELAY_JOB_CANCEL, IPC_ID | IPC_EMPTY, on_job_cancel },
};

/*
 * The queue closed the channel, or broke the protocol. Exit and let the
 * parent restart us: it then hands both sides a fresh channel, which it
 * would not do for a channel the queue closed on its own.
 */
static void
queue_closed(void *arg, enum ipc_end end, const char *why)
{
	struct relay *r = arg;

	if (end == IPC_VIOLATION)
		log_err("relay event=protocol-error reason=\"%s\" action=restart",
		    why);
	else
		log_info("relay event=queue-channel-closed jobs=%zu "
		    "action=restart", r->njobs);
	queue_close(r);
	if (!r->stopping || end == IPC_VIOLATION) {
		r->status = 1;
		event_base_loopbreak(r->base);
	}
}

static const struct ipc_ops queue_ops = {
	.handlers = queue_frames,
	.nhandlers = nitems(queue_frames),
	.closed = queue_closed,
};

static void
queue_close(struct relay *r)
{
	jobs_drop_all(r);
	ipc_free(&r->queue);
}

static void
queue_set(struct relay *r, int fd)
{
	queue_close(r);
	r->queue = ipc_new(r->base, fd, &queue_ops, r);
}

/* ------------------------------------------------------------------ */
/* the process */

static void
reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;

	/* connections first: a dead one may still point at a dead job's body */
	bool freed = r->dead_conns != NULL;

	while (r->dead_conns != NULL) {
		struct relay_conn *c = r->dead_conns;
		r->dead_conns = c->reap_next;
		relay_conn_free(c);
		r->nconns--;
	}
	while (r->dead_jobs != NULL) {
		struct job *j = r->dead_jobs;
		r->dead_jobs = j->reap_next;
		job_free(j);
	}
	/* sockets closed: slots for the jobs waiting */
	if (freed && !r->stopping)
		jobs_wake_parked(r);
}

static void
relay_stop(struct relay *r, int status)
{
	r->stopping = true;
	r->status = status;
	event_base_loopbreak(r->base);
}

/* ---- control frames from the parent (proto/ctl.h) ---- */

static void
ctl_peer_fd(void *arg, int fd)
{
	struct relay *r = arg;

	log_info("relay event=queue-channel-replaced jobs-dropped=%zu",
	    r->njobs);
	queue_set(r, fd);
}

static void
ctl_shutdown(void *arg)
{
	struct relay *r = arg;

	relay_stop(r, r->status);
}

static void
ctl_lost(void *arg, enum ipc_end end, const char *why)
{
	/* the parent is gone: so are we */
	if (end != IPC_EOF)
		log_err("relay event=control-error reason=\"%s\"", why);
	relay_stop(arg, end == IPC_EOF ? 0 : 1);
}

static const struct ctl_ops ctl_ops = {
	.peer_fd = ctl_peer_fd,
	.shutdown = ctl_shutdown,
	.lost = ctl_lost,
};

static void
sig_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct relay *r = arg;

	relay_stop(r, r->status);
}

struct relay *
relay_new(const struct config *cfg, char *err, size_t errsize)
{
	struct relay *r = xcalloc(1, sizeof(*r));
	struct dns_options opt = { 0 };

	r->cfg = cfg;
	r->port = cfg->relay_port != 0 ? cfg->relay_port : 25;
	/* The queue keeps at most max_relay_connections jobs in flight. */
	r->max_jobs = cfg->max_relay_connections > RELAY_MAX_JOBS ?
	    cfg->max_relay_connections : RELAY_MAX_JOBS;
	r->max_conns = cfg->max_relay_connections ? cfg->max_relay_connections :
	    100;
	r->max_conns_dest = cfg->max_relay_connections_per_domain ?
	    cfg->max_relay_connections_per_domain : 10;
	/* The base now: dns_new() reads resolv.conf and the interface
	 * addresses, which the chroot will hide. */
	r->base = event_base_new();
	if (r->base == NULL) {
		snprintf(err, errsize, "event_base_new failed");
		goto fail;
	}
	r->reap_ev = event_new(r->base, -1, 0, reap_cb, r);
	if (r->reap_ev == NULL) {
		snprintf(err, errsize, "cannot create an event");
		goto fail;
	}
	opt.resolver = cfg->resolver;
	opt.self_name = cfg->hostname;
	opt.allow_loopback = cfg->allow_loopback_mx != 0;
	r->dns = dns_new(r->base, &opt, err, errsize);
	if (r->dns == NULL)
		goto fail;
	/* Now too: the CA file is read before the chroot hides it. A
	 * failure only costs TLS: "may" goes on in clear text, stronger
	 * levels defer. */
	char terr[256];
	r->tls_ctx = tls_client_ctx_new(cfg->tls_ca_file,
	    tls_min_version(cfg->tls_min_version == CONFIG_TLS_1_3),
	    terr, sizeof(terr));
	if (r->tls_ctx == NULL)
		log_warn("relay event=tls-unavailable reason=\"%s\"", terr);
	else if (cfg->tls_ca_file != NULL && access(cfg->tls_ca_file, R_OK) != 0)
		log_warn("relay event=no-ca-file file=%s reason=\"%s\" (no "
		    "certificate can verify: require_tls verify routes defer)",
		    cfg->tls_ca_file, strerror(errno));
	return r;
fail:
	relay_free(&r);
	return NULL;
}

void
relay_set_port(struct relay *r, unsigned port)
{
	r->port = port;
}

void
relay_free(struct relay **rp)
{
	struct relay *r = *rp;

	if (r == NULL)
		return;
	dns_free(&r->dns);
	SSL_CTX_free(r->tls_ctx);
	if (r->reap_ev != NULL)
		event_free(r->reap_ev);
	if (r->base != NULL)
		event_base_free(r->base);
	free(r);
	*rp = NULL;
}

/* Shutting down: say QUIT to the cached connections (best effort, never
 * waiting), drop everything else. The queue defers whatever was in flight
 * when the channel closes. */
static void
relay_teardown(struct relay *r)
{
	r->stopping = true;
	jobs_drop_all(r);
	while (r->conns != NULL) {
		struct relay_conn *c = r->conns;

		if (c->state == RC_IDLE) {
			smtp_client_quit(c->client);
			smtp_client_process(c->client);
			/* best effort, never waiting (plain text only) */
			conn_flush_now(c->io);
		}
		relay_conn_kill(c);
	}
	if (r->queue != NULL) {
		/* results already written go out if the socket takes them */
		ipc_flush_now(r->queue);
		queue_close(r);
	}
	reap_cb(-1, 0, r);
}

int
relay_run(struct relay *r, int ctl_fd, int queue_fd)
{
	signal(SIGPIPE, SIG_IGN);
	if (queue_fd != -1)
		queue_set(r, queue_fd);
	r->ctl = ctl_open(r->base, ctl_fd, CTL_WORKER, &ctl_ops, r);
	r->sig_term = evsignal_new(r->base, SIGTERM, sig_cb, r);
	r->sig_int = evsignal_new(r->base, SIGINT, sig_cb, r);
	if (r->sig_term == NULL || r->sig_int == NULL)
		fatal("relay: cannot create events");
	event_add(r->sig_term, NULL);
	event_add(r->sig_int, NULL);
	log_info("relay event=ready port=%u max_jobs=%zu", r->port,
	    r->max_jobs);
	(void)ctl_send(r->ctl, CTL_READY, -1);
	event_base_dispatch(r->base);

	relay_teardown(r);
	ctl_free(&r->ctl);
	event_free(r->sig_term);
	event_free(r->sig_int);
	r->sig_term = r->sig_int = NULL;
	return r->status;
}
