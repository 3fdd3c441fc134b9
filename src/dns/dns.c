/*
 * dns.c - MX resolution on a libevent loop with libunbound (see dns.h).
 *
 * libunbound runs in threaded asynchronous mode (ub_ctx_async(ctx, 1)):
 * queries go to its worker thread, answers come back through a pipe whose
 * read end (ub_fd()) is watched by a persistent read event; ub_process()
 * then runs our ub callbacks, on the loop thread. So every user callback
 * runs from the loop. Results that need no DNS (address literals, bad
 * names, start-up errors) are delivered by a zero timeout for the same
 * reason: a caller never sees its callback inside dns_resolve_mx().
 *
 * A query goes through two stages:
 *   MX    one MX lookup of the domain;
 *   ADDR  A and AAAA of every MX host kept (or of the domain itself for an
 *         implicit MX), all in flight at once.
 * Each lookup is a struct sub, so a query can be cancelled at any point
 * (ub_cancel() on each one still in flight). One timer per query bounds
 * the whole thing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <event2/event.h>
#include <unbound.h>

#include "dns/dns.h"
#include "lib/log.h"
#include "lib/util.h"

#define RR_TYPE_A 1
#define RR_TYPE_MX 15
#define RR_TYPE_AAAA 28
#define RR_CLASS_IN 1
#define RCODE_NOERROR 0
#define RCODE_NXDOMAIN 3
#define DNS_MAX_MX_RRS 1024   /* MX records read from one answer */
#define DNS_MAX_LOCAL 64      /* local interface addresses remembered */
#define DNS_LABEL_MAX 63      /* RFC 1035 2.3.4 */

struct dns {
	struct event_base *base;
	struct ub_ctx *ub;
	struct event *ev;            /* ub_fd() readable */
	char *self_name;             /* lower case, or NULL */
	bool allow_loopback;
	unsigned timeout_ms;
	struct sockaddr_storage local[DNS_MAX_LOCAL]; /* non-loopback */
	size_t nlocal;
	struct dns_query *queries;   /* outstanding, doubly linked */
};

enum sub_kind { SUB_MX, SUB_A, SUB_AAAA };

struct sub {
	struct dns_query *q;
	enum sub_kind kind;
	size_t host;                 /* SUB_A / SUB_AAAA: index in hosts */
	int id;                      /* libunbound async id */
	bool active;
};

enum fam_state { FAM_NONE, FAM_DATA, FAM_NODATA, FAM_NXDOMAIN, FAM_TEMP };

struct host_work {
	struct in6_addr v6[DNS_MAX_ADDRS];
	struct in_addr v4[DNS_MAX_ADDRS];
	size_t n6, n4;
	enum fam_state s6, s4;
};

enum stage { STAGE_MX, STAGE_ADDR, STAGE_DONE };

struct dns_query {
	struct dns *d;
	struct dns_query *prev, *next;
	dns_mx_cb *cb;
	void *arg;
	enum stage stage;
	bool in_start;               /* inside resolve(): results wait */
	struct event *timer;         /* deadline; zero timeout once done */
	size_t pending;              /* subs in flight */
	char domain[DNS_NAME_MAX + 1];
	struct dns_mx_result res;
	struct dns_mx_host hosts[DNS_MAX_MX];
	struct host_work work[DNS_MAX_MX];
	struct sub mx;
	struct sub addr[DNS_MAX_MX][2];
};

static void query_fail(struct dns_query *q, enum dns_status st,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

const char *
dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK: return "ok";
	case DNS_NXDOMAIN: return "nxdomain";
	case DNS_NULL_MX: return "null-mx";
	case DNS_NO_ADDRESS: return "no-address";
	case DNS_LOOP: return "loop";
	case DNS_BAD_NAME: return "bad-name";
	case DNS_TEMPFAIL: return "tempfail";
	}
	return "?";
}

const char *
dns_host_status_name(enum dns_host_status s)
{
	switch (s) {
	case DNS_HOST_OK: return "ok";
	case DNS_HOST_NO_ADDRESS: return "no-address";
	case DNS_HOST_TEMPFAIL: return "tempfail";
	case DNS_HOST_SELF: return "self";
	case DNS_HOST_SKIPPED: return "skipped";
	}
	return "?";
}

/*
 * Pure decisions
 */

static unsigned
default_rnd(unsigned bound)
{
	return arc4random_uniform(bound);
}

void
dns_mx_keep(struct dns_mx_rr *rrs, size_t *n, size_t max,
    const struct dns_mx_rr *rr)
{
	size_t worst = 0;

	if (*n < max) {
		rrs[(*n)++] = *rr;
		return;
	}
	/* Linear: answers this long are rare and bounded by the 64 KiB
	 * message size (some thousands of records). */
	for (size_t k = 1; k < *n; k++)
		if (rrs[k].pref > rrs[worst].pref)
			worst = k;
	if (*n > 0 && rr->pref < rrs[worst].pref)
		rrs[worst] = *rr;
}

enum dns_status
dns_mx_sort(struct dns_mx_rr *rrs, size_t *n, unsigned (*rnd)(unsigned))
{
	size_t i, j, nroot = 0;

	if (rnd == NULL)
		rnd = default_rnd;
	for (i = 0; i < *n; i++)
		nroot += rrs[i].name[0] == '\0';
	/* RFC 7505 3: a null MX is a single "0 ." record. A set of nothing
	 * but roots names no host either, so it gets the same answer. */
	if (*n > 0 && nroot == *n)
		return DNS_NULL_MX;
	/* Roots among real hosts break RFC 7505 3 ("MUST NOT advertise any
	 * other MX RR"); they name no host, so only the real ones count. */
	for (i = j = 0; i < *n; i++)
		if (rrs[i].name[0] != '\0')
			rrs[j++] = rrs[i];
	*n = j;
	/* Stable insertion sort: n is bounded by the caller (DNS_MAX_MX_RRS
	 * in dns.c) and stability keeps the tests deterministic. */
	for (i = 1; i < *n; i++) {
		struct dns_mx_rr t = rrs[i];

		for (j = i; j > 0 && rrs[j - 1].pref > t.pref; j--)
			rrs[j] = rrs[j - 1];
		rrs[j] = t;
	}
	/* RFC 5321 5.1: equal preferences MUST be randomised. Fisher-Yates
	 * on each run of equal preference. */
	for (i = 0; i < *n; i = j) {
		for (j = i + 1; j < *n && rrs[j].pref == rrs[i].pref; j++)
			continue;
		for (size_t k = j - i; k > 1; k--) {
			size_t r = rnd((unsigned)k);
			struct dns_mx_rr t = rrs[i + k - 1];

			ASSERT(r < k);
			rrs[i + k - 1] = rrs[i + r];
			rrs[i + r] = t;
		}
	}
	if (*n > DNS_MAX_MX)
		*n = DNS_MAX_MX;
	return DNS_OK;
}

enum dns_status
dns_mx_decide(struct dns_mx_host *hosts, size_t n)
{
	bool cut = false, temp = false, ok = false;
	unsigned cut_pref = 0;

	/* RFC 5321 5.1: "If a matching record is found, all records at that
	 * preference level and higher-numbered ones MUST be discarded". */
	for (size_t i = 0; i < n; i++) {
		if (!cut && hosts[i].status == DNS_HOST_SELF) {
			cut = true;
			cut_pref = hosts[i].pref;
			for (size_t k = 0; k < i; k++)
				if (hosts[k].pref >= cut_pref &&
				    hosts[k].status != DNS_HOST_SELF)
					hosts[k].status = DNS_HOST_SKIPPED;
			continue;
		}
		if (cut && hosts[i].pref >= cut_pref &&
		    hosts[i].status != DNS_HOST_SELF)
			hosts[i].status = DNS_HOST_SKIPPED;
	}
	for (size_t i = 0; i < n; i++) {
		ok |= hosts[i].status == DNS_HOST_OK;
		temp |= hosts[i].status == DNS_HOST_TEMPFAIL;
	}
	if (ok)
		return DNS_OK;
	/* "If there are no records left at that point, it is an error
	 * condition, and the message MUST be returned as undeliverable."
	 * A temporary failure of a better MX does not change that: were it
	 * reachable, it would be tried first anyway; we report the loop only
	 * when nothing better than us is left at all. */
	if (temp)
		return DNS_TEMPFAIL;
	if (cut)
		return DNS_LOOP;
	return DNS_NO_ADDRESS;
}

size_t
dns_addr_interleave(const struct sockaddr_storage *v6, size_t n6,
    const struct sockaddr_storage *v4, size_t n4,
    struct sockaddr_storage *out, size_t max)
{
	size_t i6 = 0, i4 = 0, o = 0;

	while (o < max && (i6 < n6 || i4 < n4)) {
		if (i6 < n6)
			out[o++] = v6[i6++];
		if (o < max && i4 < n4)
			out[o++] = v4[i4++];
	}
	return o;
}

bool
dns_addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;
		uint32_t a = ntohl(sin->sin_addr.s_addr);

		return (a >> 24) == 127 || a == 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;
		const struct in6_addr *a = &sin6->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(a))
			return a->s6_addr[12] == 127 ||
			    (a->s6_addr[12] | a->s6_addr[13] | a->s6_addr[14] |
			    a->s6_addr[15]) == 0;
	}
	return false;
}

/*
 * Names
 */

static bool
is_name_char(int c)
{
	/* LDH plus '_' (seen in the wild); nothing libunbound would read as
	 * an escape or a separator. */
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Normalise a text domain into out (lower case, no final dot). NULL if
 * fine, else why not. */
static const char *
name_check(const char *s, char out[DNS_NAME_MAX + 1])
{
	size_t len = strlen(s), label = 0;
	char alabel[DNS_NAME_MAX + 2];

	/* RFC 5891 5: an SMTPUTF8 domain is looked up by its A-labels. */
	if (util_has_8bit(s, len)) {
		int rc = util_idna_to_ascii(s, len, alabel, sizeof(alabel));

		if (rc == -2)
			return "domain or label too long as A-labels (RFC 1035 "
			    "2.3.4)";
		if (rc != 0)
			return "invalid internationalized domain (IDNA2008, "
			    "RFC 5891)";
		s = alabel;
		len = strlen(s);
	}

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0)
		return "empty domain";
	if (len > DNS_NAME_MAX)
		return "domain longer than 253 octets (RFC 1035 2.3.4)";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return "empty label in domain";
			label = 0;
		} else if (!is_name_char(c)) {
			return "invalid character in domain";
		} else if (++label > DNS_LABEL_MAX) {
			return "label longer than 63 octets (RFC 1035 2.3.4)";
		}
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	if (label == 0)
		return "empty label in domain";
	out[len] = '\0';
	return NULL;
}

/* The exchange of an MX rdata (uncompressed wire format from libunbound)
 * as text; "" for the root. false if malformed or not a host name. */
static bool
wire_name(const unsigned char *p, size_t len, char out[DNS_NAME_MAX + 1])
{
	size_t o = 0, i = 0;

	for (;;) {
		size_t l;

		if (i >= len)
			return false;
		l = p[i++];
		if (l == 0)
			break;
		if (l > DNS_LABEL_MAX || i + l > len)
			return false;
		if (o + (o > 0) + l > DNS_NAME_MAX)
			return false;
		if (o > 0)
			out[o++] = '.';
		for (size_t k = 0; k < l; k++) {
			unsigned char c = p[i + k];

			if (!is_name_char(c))
				return false;
			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
		i += l;
	}
	out[o] = '\0';
	return true;
}

/*
 * Context
 */

static void
on_ub_readable(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;
	int r = ub_process(d->ub);

	if (r != 0)
		log_warn("dns event=process-error error=\"%s\"", ub_strerror(r));
}

/* "192.0.2.1:53" / "[2001:db8::1]:53" into libunbound's "addr@port". */
static bool
fwd_text(const char *s, char *out, size_t size)
{
	const char *host, *port;
	size_t hlen;
	char h[INET6_ADDRSTRLEN + 1];
	unsigned char buf[sizeof(struct in6_addr)];
	char *end;
	unsigned long pn;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return false;
		host = s + 1;
		hlen = (size_t)(close - host);
		port = close + 2;
	} else {
		const char *colon = strrchr(s, ':');

		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)))
			return false;
		host = s;
		hlen = (size_t)(colon - s);
		port = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof(h))
		return false;
	memcpy(h, host, hlen);
	h[hlen] = '\0';
	if (inet_pton(AF_INET, h, buf) != 1 && inet_pton(AF_INET6, h, buf) != 1)
		return false;
	if (port[0] < '0' || port[0] > '9')
		return false;
	errno = 0;
	pn = strtoul(port, &end, 10);
	if (errno != 0 || *end != '\0' || pn == 0 || pn > 65535)
		return false;
	return (size_t)snprintf(out, size, "%s@%lu", h, pn) < size;
}

static void
load_local_addrs(struct dns *d)
{
	struct ifaddrs *ifa, *i;

	if (getifaddrs(&ifa) == -1) {
		log_warn("dns event=getifaddrs-failed error=\"%s\"",
		    strerror(errno));
		return;
	}
	for (i = ifa; i != NULL && d->nlocal < DNS_MAX_LOCAL; i = i->ifa_next) {
		struct sockaddr *sa = i->ifa_addr;

		if (sa == NULL || (sa->sa_family != AF_INET &&
		    sa->sa_family != AF_INET6) || dns_addr_is_loopback(sa))
			continue;
		memset(&d->local[d->nlocal], 0, sizeof(d->local[0]));
		memcpy(&d->local[d->nlocal], sa, sa->sa_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
		d->nlocal++;
	}
	freeifaddrs(ifa);
}

struct dns *
dns_new(struct event_base *base, const struct dns_options *opt, char *err,
    size_t errsize)
{
	struct dns *d = xcalloc(1, sizeof(*d));
	char fwd[INET6_ADDRSTRLEN + 16];
	int r;

	d->base = base;
	d->allow_loopback = opt->allow_loopback;
	d->timeout_ms = opt->timeout_ms ? opt->timeout_ms :
	    DNS_DEFAULT_TIMEOUT_MS;
	if (opt->self_name != NULL) {
		d->self_name = xstrdup(opt->self_name);
		util_ascii_lower(d->self_name);
	}
	if ((d->ub = ub_ctx_create()) == NULL) {
		snprintf(err, errsize, "cannot create the libunbound context");
		goto fail;
	}
	/* Threads, not libunbound's default forked helper process: a child
	 * process would outlive us badly and share our signal handling. */
	if ((r = ub_ctx_async(d->ub, 1)) != 0) {
		snprintf(err, errsize, "libunbound async mode: %s",
		    ub_strerror(r));
		goto fail;
	}
	/* A forwarder on 127.0.0.1 (a local cache, the tests' dnsmasq) is
	 * legitimate; libunbound refuses to query localhost by default. */
	(void)ub_ctx_set_option(d->ub, "do-not-query-localhost:", "no");
	/* libunbound answers NXDOMAIN itself for the RFC 6761 names; leave
	 * "test." to the resolver, so test set-ups (ours included) can serve
	 * it. localhost., invalid., onion. keep their built-in answers.
	 * ("nodefault" is ignored through ub_ctx_set_option() in 1.17; an
	 * empty transparent zone passes every query through.) */
	(void)ub_ctx_set_option(d->ub, "local-zone:", "test. transparent");
	if (opt->resolver != NULL) {
		if (!fwd_text(opt->resolver, fwd, sizeof(fwd))) {
			snprintf(err, errsize, "resolver '%s' is not an "
			    "address:port", opt->resolver);
			goto fail;
		}
		if ((r = ub_ctx_set_fwd(d->ub, fwd)) != 0) {
			snprintf(err, errsize, "resolver %s: %s", opt->resolver,
			    ub_strerror(r));
			goto fail;
		}
	} else if ((r = ub_ctx_resolvconf(d->ub, NULL)) != 0) {
		/* Without name servers libunbound recurses from the root
		 * itself: slower, but mail still flows. */
		log_warn("dns event=no-resolv-conf error=\"%s\" "
		    "action=full-recursion", ub_strerror(r));
	}
	d->ev = event_new(base, ub_fd(d->ub), EV_READ | EV_PERSIST,
	    on_ub_readable, d);
	if (d->ev == NULL || event_add(d->ev, NULL) == -1) {
		snprintf(err, errsize, "cannot watch the resolver's pipe");
		goto fail;
	}
	load_local_addrs(d);
	return d;
fail:
	dns_free(&d);
	return NULL;
}

static void query_free(struct dns_query *q);

void
dns_free(struct dns **dp)
{
	struct dns *d = *dp;

	if (d == NULL)
		return;
	while (d->queries != NULL)
		dns_cancel(d->queries);
	if (d->ev != NULL)
		event_free(d->ev);
	if (d->ub != NULL)
		ub_ctx_delete(d->ub);   /* stops and joins its thread */
	free(d->self_name);
	free(d);
	*dp = NULL;
}

/*
 * Queries
 */

static void
sub_cancel(struct dns_query *q, struct sub *s)
{
	if (!s->active)
		return;
	(void)ub_cancel(q->d->ub, s->id);
	s->active = false;
	q->pending--;
}

static void
query_free(struct dns_query *q)
{
	struct dns *d = q->d;

	sub_cancel(q, &q->mx);
	for (size_t i = 0; i < DNS_MAX_MX; i++)
		for (size_t k = 0; k < 2; k++)
			sub_cancel(q, &q->addr[i][k]);
	ASSERT(q->pending == 0);
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		d->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	event_free(q->timer);
	free(q);
}

void
dns_cancel(struct dns_query *q)
{
	if (q != NULL)
		query_free(q);
}

/* Hand the result over from the loop: now if we are in a libunbound or
 * timer callback, else at the next loop turn. */
static void
query_done(struct dns_query *q, bool from_loop)
{
	static const struct timeval zero = { 0, 0 };

	q->stage = STAGE_DONE;
	if (!from_loop) {
		evtimer_add(q->timer, &zero);
		return;
	}
	q->cb(q->arg, &q->res);
	query_free(q);
}

static void
query_vset(struct dns_query *q, enum dns_status st, const char *fmt,
    va_list ap) __attribute__((format(printf, 3, 0)));

static void
query_vset(struct dns_query *q, enum dns_status st, const char *fmt,
    va_list ap)
{
	q->res.status = st;
	vsnprintf(q->res.reason, sizeof(q->res.reason), fmt, ap);
}

/* A failure of the whole query, delivered at once (we are on the loop). */
static void
query_fail(struct dns_query *q, enum dns_status st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	query_vset(q, st, fmt, ap);
	va_end(ap);
	q->res.nhosts = 0;
	query_done(q, true);
}

static void on_ub_answer(void *mydata, int err, struct ub_result *r);

static bool
sub_start(struct dns_query *q, struct sub *s, const char *name, int type)
{
	int r;

	s->q = q;
	r = ub_resolve_async(q->d->ub, name, type, RR_CLASS_IN, s,
	    on_ub_answer, &s->id);
	if (r != 0) {
		log_warn("dns event=resolve-error name=%s error=\"%s\"", name,
		    ub_strerror(r));
		return false;
	}
	s->active = true;
	q->pending++;
	return true;
}

static bool
is_self(struct dns *d, const struct dns_mx_host *h)
{
	if (d->self_name != NULL && strcmp(h->name, d->self_name) == 0)
		return true;
	for (size_t i = 0; i < h->naddrs; i++) {
		const struct sockaddr *sa = (const void *)&h->addrs[i];

		if (dns_addr_is_loopback(sa)) {
			/* 0.0.0.0 and :: reach this host too; never a route */
			if (!d->allow_loopback)
				return true;
			if (sa->sa_family == AF_INET &&
			    ((const struct sockaddr_in *)(const void *)sa)->
			    sin_addr.s_addr == 0)
				return true;
			if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(
			    &((const struct sockaddr_in6 *)(const void *)sa)->
			    sin6_addr))
				return true;
			continue;
		}
		for (size_t k = 0; k < d->nlocal; k++) {
			const struct sockaddr *l = (const void *)&d->local[k];

			if (l->sa_family != sa->sa_family)
				continue;
			if (sa->sa_family == AF_INET &&
			    memcmp(&((const struct sockaddr_in *)(const void *)
			    l)->sin_addr, &((const struct sockaddr_in *)
			    (const void *)sa)->sin_addr, 4) == 0)
				return true;
			if (sa->sa_family == AF_INET6 &&
			    memcmp(&((const struct sockaddr_in6 *)(const void *)
			    l)->sin6_addr, &((const struct sockaddr_in6 *)
			    (const void *)sa)->sin6_addr, 16) == 0)
				return true;
		}
	}
	return false;
}

/* Every address lookup is in: build each host's list and decide. */
static void
query_addrs_done(struct dns_query *q)
{
	struct dns_mx_result *res = &q->res;
	bool nxdomain_all = true;
	const char *why = "";
	size_t nok = 0;

	for (size_t i = 0; i < res->nhosts; i++) {
		struct dns_mx_host *h = &q->hosts[i];
		struct host_work *w = &q->work[i];
		struct sockaddr_storage v6[DNS_MAX_ADDRS], v4[DNS_MAX_ADDRS];

		if (h->status == DNS_HOST_SELF)
			continue;   /* known by name; not looked up */
		memset(v6, 0, sizeof(v6));
		memset(v4, 0, sizeof(v4));
		for (size_t k = 0; k < w->n6; k++) {
			struct sockaddr_in6 *s = (void *)&v6[k];

			s->sin6_family = AF_INET6;
			s->sin6_addr = w->v6[k];
		}
		for (size_t k = 0; k < w->n4; k++) {
			struct sockaddr_in *s = (void *)&v4[k];

			s->sin_family = AF_INET;
			s->sin_addr = w->v4[k];
		}
		h->naddrs = dns_addr_interleave(v6, w->n6, v4, w->n4, h->addrs,
		    DNS_MAX_ADDRS);
		if (w->s6 != FAM_NXDOMAIN || w->s4 != FAM_NXDOMAIN)
			nxdomain_all = false;
		if (h->naddrs > 0)
			h->status = is_self(q->d, h) ? DNS_HOST_SELF :
			    DNS_HOST_OK;
		else if (w->s6 == FAM_TEMP || w->s4 == FAM_TEMP)
			h->status = DNS_HOST_TEMPFAIL;
		else
			h->status = DNS_HOST_NO_ADDRESS;
	}
	res->status = dns_mx_decide(q->hosts, res->nhosts);
	for (size_t i = 0; i < res->nhosts; i++)
		nok += q->hosts[i].status == DNS_HOST_OK;
	switch (res->status) {
	case DNS_OK:
		snprintf(res->reason, sizeof(res->reason), "%s%zu of %zu "
		    "host%s usable", res->implicit ? "implicit MX (no MX "
		    "record), " : res->host_only ? "address lookup, " : "",
		    nok, res->nhosts, res->nhosts == 1 ? "" : "s");
		break;
	case DNS_TEMPFAIL:
		snprintf(res->reason, sizeof(res->reason), "temporary DNS "
		    "failure resolving the address of %s%.253s",
		    res->implicit || res->host_only ? "" : "MX host ",
		    q->hosts[0].name);
		break;
	case DNS_LOOP:
		snprintf(res->reason, sizeof(res->reason), "mail for %s "
		    "loops back to myself (best MX is this host)", q->domain);
		break;
	default:
		if ((res->implicit || res->host_only) && nxdomain_all) {
			res->status = DNS_NXDOMAIN;
			why = "domain does not exist";
		} else if (res->host_only) {
			why = "no A/AAAA record";
		} else if (res->implicit) {
			why = "no MX and no A/AAAA record";
		} else {
			why = "no MX host has an address";
		}
		snprintf(res->reason, sizeof(res->reason), "%s: %s", q->domain,
		    why);
		break;
	}
	query_done(q, !q->in_start);
}

static void
on_addr_answer(struct sub *s, int err, struct ub_result *r)
{
	struct dns_query *q = s->q;
	struct host_work *w = &q->work[s->host];
	enum fam_state *st = s->kind == SUB_A ? &w->s4 : &w->s6;

	if (err != 0 || r == NULL) {
		*st = FAM_TEMP;
	} else if (r->rcode == RCODE_NXDOMAIN || r->nxdomain) {
		*st = FAM_NXDOMAIN;
	} else if (r->rcode != RCODE_NOERROR || r->bogus) {
		*st = FAM_TEMP;
	} else if (!r->havedata) {
		*st = FAM_NODATA;
	} else {
		*st = FAM_DATA;
		for (size_t i = 0; r->data[i] != NULL; i++) {
			if (s->kind == SUB_A && r->len[i] == 4 &&
			    w->n4 < DNS_MAX_ADDRS)
				memcpy(&w->v4[w->n4++], r->data[i], 4);
			else if (s->kind == SUB_AAAA && r->len[i] == 16 &&
			    w->n6 < DNS_MAX_ADDRS)
				memcpy(&w->v6[w->n6++], r->data[i], 16);
		}
	}
	if (q->pending == 0)
		query_addrs_done(q);
}

/* Start A and AAAA of each host; SELF-by-name hosts are not looked up. */
static void
query_start_addrs(struct dns_query *q)
{
	q->stage = STAGE_ADDR;
	for (size_t i = 0; i < q->res.nhosts; i++) {
		struct dns_mx_host *h = &q->hosts[i];

		if (q->d->self_name != NULL &&
		    strcmp(h->name, q->d->self_name) == 0) {
			h->status = DNS_HOST_SELF;
			continue;
		}
		q->addr[i][0].kind = SUB_AAAA;
		q->addr[i][0].host = i;
		q->addr[i][1].kind = SUB_A;
		q->addr[i][1].host = i;
		if (!sub_start(q, &q->addr[i][0], h->name, RR_TYPE_AAAA))
			q->work[i].s6 = FAM_TEMP;
		if (!sub_start(q, &q->addr[i][1], h->name, RR_TYPE_A))
			q->work[i].s4 = FAM_TEMP;
	}
	if (q->pending == 0)
		query_addrs_done(q);
}

static void
on_mx_answer(struct sub *s, int err, struct ub_result *r)
{
	struct dns_query *q = s->q;
	struct dns_mx_rr *rrs;
	size_t n = 0, nrr = 0;
	enum dns_status st;

	if (err != 0 || r == NULL) {
		query_fail(q, DNS_TEMPFAIL, "MX lookup of %s: %s", q->domain,
		    ub_strerror(err));
		return;
	}
	if (r->rcode == RCODE_NXDOMAIN || r->nxdomain) {
		/* RFC 5321 5.1: "If a non-existent domain error is returned,
		 * this situation MUST be reported as an error." */
		query_fail(q, DNS_NXDOMAIN, "%s: domain does not exist "
		    "(NXDOMAIN)", q->domain);
		return;
	}
	if (r->rcode != RCODE_NOERROR || r->bogus) {
		/* "If a temporary error is returned, the message MUST be
		 * queued and retried later" (SERVFAIL, REFUSED, ...). */
		query_fail(q, DNS_TEMPFAIL, "MX lookup of %s: %s", q->domain,
		    r->bogus ? "DNSSEC validation failed" : r->rcode == 2 ?
		    "SERVFAIL" : "resolver error");
		return;
	}
	if (!r->havedata) {
		/* "If an empty list of MXs is returned, the address is
		 * treated as if it was associated with an implicit MX RR,
		 * with a preference of 0, pointing to that host." */
		q->res.implicit = true;
		q->res.nhosts = 1;
		util_strlcpy(q->hosts[0].name, q->domain,
		    sizeof(q->hosts[0].name));
		q->hosts[0].pref = 0;
		query_start_addrs(q);
		return;
	}
	for (nrr = 0; r->data[nrr] != NULL; nrr++)
		continue;
	rrs = xcalloc(nrr < DNS_MAX_MX_RRS ? nrr : DNS_MAX_MX_RRS, sizeof(*rrs));
	for (size_t i = 0; i < nrr; i++) {
		const unsigned char *p = (const unsigned char *)r->data[i];
		struct dns_mx_rr rr;

		if (r->len[i] < 3 || !wire_name(p + 2, (size_t)r->len[i] - 2,
		    rr.name))
			continue;   /* not a host name we can use */
		rr.pref = (unsigned)p[0] << 8 | p[1];
		dns_mx_keep(rrs, &n, DNS_MAX_MX_RRS, &rr);
	}
	st = dns_mx_sort(rrs, &n, NULL);
	if (st == DNS_NULL_MX) {
		free(rrs);
		/* RFC 7505 4.1: 556 5.1.10, without retries. */
		query_fail(q, DNS_NULL_MX, "%s does not accept mail "
		    "(null MX, RFC 7505)", q->domain);
		return;
	}
	if (n == 0) {
		free(rrs);
		/* RFC 5321 5.1: MX records present but none usable is an
		 * error; the implicit MX does not apply. */
		query_fail(q, DNS_NO_ADDRESS, "%s: no usable MX record",
		    q->domain);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		util_strlcpy(q->hosts[i].name, rrs[i].name,
		    sizeof(q->hosts[i].name));
		q->hosts[i].pref = rrs[i].pref;
	}
	q->res.nhosts = n;
	free(rrs);
	query_start_addrs(q);
}

/* libunbound's callback, run from ub_process() on the loop. */
static void
on_ub_answer(void *mydata, int err, struct ub_result *r)
{
	struct sub *s = mydata;
	struct dns_query *q = s->q;

	ASSERT(s->active);
	s->active = false;
	q->pending--;
	if (s->kind == SUB_MX)
		on_mx_answer(s, err, r);
	else
		on_addr_answer(s, err, r);
	ub_resolve_free(r);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	switch (q->stage) {
	case STAGE_DONE:
		query_done(q, true);
		return;
	case STAGE_MX:
		query_fail(q, DNS_TEMPFAIL, "MX lookup of %s timed out",
		    q->domain);
		return;
	case STAGE_ADDR:
		/* Use what has arrived; the rest failed temporarily. */
		for (size_t i = 0; i < q->res.nhosts; i++) {
			if (q->addr[i][0].active)
				q->work[i].s6 = FAM_TEMP;
			if (q->addr[i][1].active)
				q->work[i].s4 = FAM_TEMP;
			sub_cancel(q, &q->addr[i][0]);
			sub_cancel(q, &q->addr[i][1]);
		}
		query_addrs_done(q);
		return;
	}
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 4.1.3): one host. */
static void
query_literal(struct dns_query *q, const char *domain)
{
	struct dns_mx_host *h = &q->hosts[0];
	size_t len = strlen(domain);
	char text[INET6_ADDRSTRLEN + 8];
	const char *a;

	q->res.literal = true;
	q->res.status = DNS_BAD_NAME;
	snprintf(q->res.reason, sizeof(q->res.reason), "invalid address "
	    "literal");
	if (len < 3 || domain[len - 1] != ']' || len - 2 >= sizeof(text))
		return;
	memcpy(text, domain + 1, len - 2);
	text[len - 2] = '\0';
	util_strlcpy(h->name, domain, sizeof(h->name));
	if (strncasecmp(text, "IPv6:", 5) == 0) {
		struct sockaddr_in6 *s = (void *)&h->addrs[0];

		a = text + 5;
		if (inet_pton(AF_INET6, a, &s->sin6_addr) != 1)
			return;
		s->sin6_family = AF_INET6;
	} else {
		struct sockaddr_in *s = (void *)&h->addrs[0];

		if (inet_pton(AF_INET, text, &s->sin_addr) != 1)
			return;
		s->sin_family = AF_INET;
	}
	h->naddrs = 1;
	q->res.nhosts = 1;
	h->status = is_self(q->d, h) ? DNS_HOST_SELF : DNS_HOST_OK;
	q->res.status = dns_mx_decide(q->hosts, 1);
	snprintf(q->res.reason, sizeof(q->res.reason), q->res.status ==
	    DNS_OK ? "address literal" : "address literal %s is this host",
	    domain);
}

static struct dns_query *
resolve(struct dns *d, const char *domain, bool mx, dns_mx_cb *cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv;
	const char *why;

	q->d = d;
	q->cb = cb;
	q->arg = arg;
	q->res.hosts = q->hosts;
	q->res.domain = q->domain;
	q->timer = evtimer_new(d->base, on_timer, q);
	ASSERT(q->timer != NULL);
	q->next = d->queries;
	if (d->queries != NULL)
		d->queries->prev = q;
	d->queries = q;

	if (domain[0] == '[') {
		util_strlcpy(q->domain, domain, sizeof(q->domain));
		query_literal(q, domain);
		query_done(q, false);
		return q;
	}
	if ((why = name_check(domain, q->domain)) != NULL) {
		util_strlcpy(q->domain, domain, sizeof(q->domain));
		q->res.status = DNS_BAD_NAME;
		snprintf(q->res.reason, sizeof(q->res.reason), "%s", why);
		query_done(q, false);
		return q;
	}
	tv.tv_sec = d->timeout_ms / 1000;
	tv.tv_usec = (d->timeout_ms % 1000) * 1000;
	if (!mx) {
		/* dns_resolve_host(): the name is the one host, as an
		 * implicit MX is, but no MX is asked for. */
		q->res.host_only = true;
		q->res.nhosts = 1;
		util_strlcpy(q->hosts[0].name, q->domain,
		    sizeof(q->hosts[0].name));
		q->hosts[0].pref = 0;
		q->in_start = true;
		query_start_addrs(q);
		q->in_start = false;
		if (q->stage != STAGE_DONE)
			evtimer_add(q->timer, &tv);
		return q;
	}
	q->mx.kind = SUB_MX;
	if (!sub_start(q, &q->mx, q->domain, RR_TYPE_MX)) {
		q->res.status = DNS_TEMPFAIL;
		snprintf(q->res.reason, sizeof(q->res.reason), "cannot start "
		    "the MX lookup of %s", q->domain);
		query_done(q, false);
		return q;
	}
	evtimer_add(q->timer, &tv);
	return q;
}

struct dns_query *
dns_resolve_mx(struct dns *d, const char *domain, dns_mx_cb *cb, void *arg)
{
	return resolve(d, domain, true, cb, arg);
}

struct dns_query *
dns_resolve_host(struct dns *d, const char *host, dns_mx_cb *cb, void *arg)
{
	return resolve(d, host, false, cb, arg);
}
