/*
 * relay_job.c - a job in the relay process, from the queue's START to its
 * one RESULT (see relay_int.h; the wire format is proto/relay_job.h).
 *
 * A job: one message, one destination domain, some of its recipients. It
 * receives its body, resolves the domain's mail exchangers (dns.c), tries
 * them, and answers with one result line per recipient. Jobs live in a
 * small hash by id.
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
 * hosts of 8 addresses each costs minutes, not an hour. A job reuses an
 * idle connection only to the host it is about to try (relay_conn.c).
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
 */
#include <inttypes.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "relay/relay_int.h"
#include "relay/route.h"

static void job_step_cb(evutil_socket_t fd, short ev, void *arg);

/* ------------------------------------------------------------------ */
/* the table */

static size_t
job_bucket(uint64_t id)
{
	return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> 54) &
	    (RELAY_HASH - 1);
}

struct job *
relay_job_find(struct relay *r, uint64_t id)
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

void
relay_job_free(struct job *j)
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

/* A new job from START (relay_int.h). */
struct job *
relay_job_new(struct relay *r, uint64_t id, const void *data, size_t len,
    char *err, size_t errsize)
{
	struct job *j = xcalloc(1, sizeof(*j));

	envelope_init(&j->env);
	if (relay_job_decode(data, len, j->domain, &j->env, err, errsize) == -1) {
		relay_job_free(j);
		return NULL;
	}
	j->r = r;
	j->id = id;
	j->state = JOB_RECEIVING;
	j->body = evbuffer_new();
	j->step_ev = event_new(r->base, -1, 0, job_step_cb, j);
	if (j->body == NULL || j->step_ev == NULL)
		fatal("relay: out of memory");
	j->hnext = r->jobs[job_bucket(j->id)];
	r->jobs[job_bucket(j->id)] = j;
	r->njobs++;
	return j;
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

void
relay_job_wake_parked(struct relay *r)
{
	while (r->parked != NULL) {
		struct job *j = r->parked;

		job_unpark(j);
		event_active(j->step_ev, 0, 0);
	}
}

/* Take j out of service: no callback of its own runs again; freed by
 * reap. Its connection, if any, must already be detached or killed. */
void
relay_job_kill(struct job *j)
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
	relay_reap_later(r);
}

/* Every job of the channel, without results (the channel is gone or going). */
void
relay_job_drop_all(struct relay *r)
{
	for (size_t b = 0; b < RELAY_HASH; b++)
		while (r->jobs[b] != NULL)
			relay_job_kill(r->jobs[b]);
}

/* ------------------------------------------------------------------ */
/* results */

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
    const struct smtp_client_reply *rs)
{
	struct relay_result_line l = { .outcome = letter, .code = rs->code };
	char qrcpt[256], qtext[SMTP_CLIENT_TEXT_MAX * 4 + 8], qmx[300];
	const char *addr = j->env.rcpts[i].addr;

	util_strlcpy(l.enh, rs->enhanced, sizeof(l.enh));
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
	relay_job_kill(j);
}

/* Every recipient the same verdict. */
static void
job_finish_all(struct job *j, char letter, const struct smtp_client_reply *rs)
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
	struct smtp_client_reply rs;

	ASSERT(cr->nrcpts == j->env.nrcpts);
	/* The queue owes "relayed" DSNs only to a peer without DSN. */
	result_begin(j, &res, cr->peer_dsn);
	for (size_t i = 0; i < cr->nrcpts; i++) {
		const struct smtp_client_rcpt_result *x = &cr->rcpts[i];

		ASSERT(x->rcpt == i);
		relay_reason_from_reply(&rs, &x->reply);
		result_line(j, &res, i,
		    x->status == SMTP_CLIENT_DELIVERED ? 'D' :
		    x->status == SMTP_CLIENT_PERMFAIL ? 'F' : 'T', &rs);
	}
	result_end(j, &res);
}

void
relay_job_defer(struct job *j)
{
	event_active(j->step_ev, 0, 0);
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

/* smtp_client's verdict on j's transaction on c (relay_int.h). */
void
relay_job_transaction_done(struct job *j, struct relay_conn *c,
    const struct smtp_client_result *cr, bool reused)
{
	char q[SMTP_CLIENT_TEXT_MAX * 4 + 8];

	if (!connection_level(cr)) {
		job_finish_client(j, cr);
		return;
	}
	relay_reason_from_reply(&j->last, &cr->rcpts[0].reply);
	log_info("relay id=%s event=attempt-failed mx=%s ip=%s "
	    "reused=%s reply=\"%u %s %s\"", j->env.id, c->mx,
	    c->ip, reused ? "yes" : "no", j->last.code,
	    j->last.enhanced, log_quote(q, sizeof(q), j->last.text,
	    strlen(j->last.text), 200));
	/* A cached connection gone stale says nothing about the server:
	 * try it again on a fresh one. So does a failed opportunistic
	 * handshake: in clear text. */
	j->retry_here = reused;
	if (c->tls_failed && c->tls == CONFIG_RELAY_TLS_MAY) {
		relay_conn_tls_broken_add(c->r, &c->addr);
		j->retry_here = true;
	}
	relay_job_defer(j);
}

/* ------------------------------------------------------------------ */
/* delivery */

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
		struct relay_conn *c = relay_conn_idle_find(j, &h->addrs[a],
		    h->name);

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
		relay_reason_set(&j->last, 0, "4.4.4", "smarthost %s has no usable "
		    "address (tern's own listeners are skipped)",
		    j->route->smarthost);
		job_finish_all(j, 'T', &j->last);
		return;
	}
	if (j->nhosts == 0) {
		relay_reason_set(&j->last, 0, "4.4.4", "no usable mail exchanger "
		    "for %s", j->domain);
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
		if (!fresh_only &&
		    (c = relay_conn_idle_find(j, sa, h->name)) != NULL) {
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
	if (j->last.enhanced[0] == '\0')
		relay_reason_set(&j->last, 0, "4.4.1", "no mail exchanger for %s "
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
	struct smtp_client_reply rs;

	j->q = NULL;
	if (smart && st == DNS_LOOP)
		/* A smarthost may be on this machine (route_host_usable()). */
		for (size_t i = 0; i < res->nhosts; i++)
			if (route_host_usable(rt, &res->hosts[i]))
				st = DNS_OK;
	if (smart && st != DNS_OK) {
		/* The administrator named it: a lookup failure is a
		 * configuration or DNS problem to fix, never a bounce. */
		relay_reason_set(&rs, 0, "4.4.3", "smarthost %s: %s",
		    rt->smarthost, res->reason);
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
		relay_reason_set(&rs, 556, "5.1.10", "Recipient address has null MX: "
		    "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_NXDOMAIN:
	case DNS_BAD_NAME:
		relay_reason_set(&rs, 0, "5.1.2", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_NO_ADDRESS:
		relay_reason_set(&rs, 0, "5.4.4", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_LOOP:
		relay_reason_set(&rs, 0, "5.4.6", "%s", res->reason);
		job_finish_all(j, 'F', &rs);
		return;
	case DNS_TEMPFAIL:
	default:
		relay_reason_set(&rs, 0, "4.4.3", "%s", res->reason);
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
			relay_addr_set_port(&jh->addrs[jh->naddrs++], j->port);
		}
		if (jh->naddrs > 0)
			j->nhosts++;
	}
	j->state = JOB_SENDING;
	job_attempt(j);
}

/* END: the message is complete. */
void
relay_job_start(struct job *j)
{
	j->flatlen = evbuffer_get_length(j->body);
	j->flat = j->flatlen ? (const char *)evbuffer_pullup(j->body, -1) : "";
	if (j->flat == NULL)
		fatal("relay: out of memory");
	j->idx = xcalloc(j->env.nrcpts, sizeof(*j->idx));
	for (size_t i = 0; i < j->env.nrcpts; i++)
		j->idx[i] = i;
	if (j->too_big) {
		struct smtp_client_reply rs;

		relay_reason_set(&rs, 0, "5.3.4", "message larger than "
		    "max_message_size (%" PRIu64 " bytes)",
		    j->r->cfg->max_message_size);
		job_finish_all(j, 'F', &rs);
		return;
	}
	if (util_has_8bit(j->domain, strlen(j->domain))) {
		/* RFC 5891 5: DNS, routes and TLS names all use A-labels. */
		char alabel[RELAY_DOMAIN_MAX + 1];
		struct smtp_client_reply rs;

		switch (util_idna_to_ascii(j->domain, strlen(j->domain), alabel,
		    sizeof(alabel))) {
		case 0:
			util_strlcpy(j->domain, alabel, sizeof(j->domain));
			break;
		default:
			relay_reason_set(&rs, 0, "5.1.2", "%s is not a valid "
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
		struct smtp_client_reply rs;

		/* Never in clear text what must be encrypted. */
		relay_reason_set(&rs, 0, "4.7.10", "TLS required but unavailable "
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
