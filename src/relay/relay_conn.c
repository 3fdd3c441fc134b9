/*
 * relay_conn.c - the relay's outbound connections and their cache (see
 * relay_int.h): each one a lib/conn.h transport under an smtp_client,
 * connecting, busy with one job, idle in the cache (a later job whose MX
 * resolves to the same address sends its transaction on it), or quitting
 * and closing.
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
 * The limits: max_relay_connections sockets in all, and
 * max_relay_connections_per_domain to one server address; a job that
 * finds no room waits (relay_job.c parks it) and the idle connection
 * unused longest is told to QUIT.
 */
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/conn.h"
#include "lib/log.h"
#include "lib/util.h"
#include "relay/relay_int.h"
#include "relay/route.h"

void
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
		relay_job_wake_parked(c->r);
	}
}

/* Take c out of service: nothing of it runs again; freed by reap. The
 * caller deals with c->job first (it is only detached here). */
void
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
	relay_reap_later(r);
}

/* TLS-broken addresses (relay_job.c: a failed handshake at level "may"
 * is retried at once in clear text, and skipped for a while). */
static bool
tls_broken(struct relay *r, const struct sockaddr_storage *sa)
{
	int64_t now = util_mono_ms();

	for (size_t i = 0; i < RELAY_TLS_BROKEN_MAX; i++)
		if (r->broken[i].until > now &&
		    relay_addr_eq(&r->broken[i].addr, sa))
			return true;
	return false;
}

void
relay_conn_tls_broken_add(struct relay *r, const struct sockaddr_storage *sa)
{
	struct tls_broken *b = &r->broken[r->nbroken_next];

	r->nbroken_next = (r->nbroken_next + 1) % RELAY_TLS_BROKEN_MAX;
	b->addr = *sa;
	b->until = util_mono_ms() + RELAY_TLS_BROKEN_SECONDS * 1000;
}

/* The connection attempt failed: the job moves on. */
static void
relay_conn_connect_failed(struct relay_conn *c, const char *why)
{
	struct job *j = c->job;

	log_info("relay id=%s event=connect-failed mx=%s ip=%s reason=\"%s\"",
	    j ? j->env.id : "-", c->mx, c->ip, why);
	if (j != NULL)
		relay_reason_set(&j->last, 0, "4.4.1", "connect to %s: %s",
		    c->peer, why);
	relay_conn_kill(c);
	if (j != NULL)
		relay_job_defer(j);
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
		if (o != c && o->state == RC_IDLE &&
		    relay_addr_eq(&o->addr, &c->addr))
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
	relay_timer_start(c->timer, keep);
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
		relay_job_transaction_done(j, c, cr, reused);
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
		relay_reason_from_reply(&j->last,
		    smtp_client_last_reply(c->client));
		relay_job_defer(j);
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
		relay_timer_start(c->timer, 0);
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
int
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
	relay_addr_text(sa, c->ip, sizeof(c->ip));
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
	c->io = conn_connect(r->base, (const struct sockaddr *)sa,
	    relay_addr_len(sa), NULL, 0, RELAY_CONNECT_TIMEOUT * 1000,
	    &relay_conn_ops, c, err, sizeof(err));
	if (c->io == NULL) {
		relay_reason_set(&j->last, 0, "4.4.1", "connect to %s: %s",
		    c->peer, err);
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
bool
relay_conn_slot(struct relay *r, const struct sockaddr_storage *sa)
{
	struct relay_conn *lru = NULL, *lru_dest = NULL;
	size_t dest = 0, leaving = 0;

	for (struct relay_conn *c = r->conns; c != NULL; c = c->next) {
		bool same = relay_addr_eq(&c->addr, sa);

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
		dest += relay_addr_eq(&c->addr, sa);
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
struct relay_conn *
relay_conn_idle_find(struct job *j, const struct sockaddr_storage *sa,
    const char *host)
{
	int64_t since = util_mono_ms() -
	    (int64_t)j->r->cfg->relay_connection_reuse_time * 1000;

	for (struct relay_conn *c = j->r->conns; c != NULL; c = c->next)
		if (c->state == RC_IDLE && c->idle_since > since &&
		    relay_addr_eq(&c->addr, sa) &&
		    c->auth == j->auth && smtp_client_idle(c->client) &&
		    (j->tls < CONFIG_RELAY_TLS_ENCRYPT || c->tls_on) &&
		    (j->tls < CONFIG_RELAY_TLS_VERIFY || (c->tls_verified &&
		    strcasecmp(c->mx, host) == 0)))
			return c;
	return NULL;
}

void
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

/* Shutting down (relay_int.h). */
void
relay_conn_close_all(struct relay *r)
{
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
}
