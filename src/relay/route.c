/*
 * route.c - local or remote, the route block of a foreign domain, and
 * `tern route` (see route.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "conf/config.h"
#include "dns/dns.h"
#include "relay/route.h"
#include "mail/smtp_addr.h"
#include "lib/util.h"

struct explain {
	FILE *out;
	bool json;
	bool done;
	int rc;
	const char *address;
	const char *domain;              /* the recipient's */
	const struct config *cfg;
	const struct config_route *rt;   /* NULL: no route block */
	struct event_base *base;
};

/* ------------------------------------------------------------------ */
/* the decision (pure) */

const struct config_route *
route_lookup(const struct config *cfg, const char *domain)
{
	const struct config_route *exact = NULL, *suffix = NULL, *star = NULL;
	size_t len = strlen(domain), best = 0;

	if (len > 0 && domain[len - 1] == '.')
		len--;
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct config_route *rt = &cfg->routes[i];
		const char *n = rt->domain;
		size_t nl = strlen(n);

		if (nl == 0)
			continue;       /* an invalid block: never loaded */
		if (strcmp(n, "*") == 0) {
			star = rt;
			continue;
		}
		if (domain[0] == '[')
			continue;       /* literals only match "*" */
		if (n[0] != '.') {
			if (util_ascii_casecmp_n(n, nl, domain, len))
				exact = rt;
			continue;
		}
		/* ".example.com": strict subdomains; the suffix includes its
		 * dot, so "badexample.com" does not match. */
		if (len > nl && util_ascii_casecmp_n(n, nl, domain + len - nl,
		    nl) && nl > best) {
			suffix = rt;
			best = nl;
		}
	}
	return exact != NULL ? exact : suffix != NULL ? suffix : star;
}

unsigned
route_tls_level(const struct config *cfg, const struct config_route *rt)
{
	unsigned lvl = cfg->relay_tls;

	if (rt != NULL && rt->require_tls == CONFIG_ROUTE_TLS_ENCRYPT &&
	    lvl < CONFIG_RELAY_TLS_ENCRYPT)
		lvl = CONFIG_RELAY_TLS_ENCRYPT;
	if (rt != NULL && rt->require_tls == CONFIG_ROUTE_TLS_VERIFY)
		lvl = CONFIG_RELAY_TLS_VERIFY;
	return lvl;
}

const char *
route_tls_name(unsigned level)
{
	static const char *const names[] = { "no", "may", "encrypt", "verify" };

	return level < 4 ? names[level] : "?";
}

const char *
route_smarthost_query(const struct config_route *rt, char *buf, size_t size,
    bool *mx_r)
{
	struct in6_addr a6;

	*mx_r = rt->smarthost_mx;
	if (rt->smarthost_ip)
		snprintf(buf, size, "[%s%s]", inet_pton(AF_INET6,
		    rt->smarthost_host, &a6) == 1 ? "IPv6:" : "",
		    rt->smarthost_host);
	else
		util_strlcpy(buf, rt->smarthost_host, size);
	return buf;
}

bool
route_host_usable(const struct config_route *rt, const struct dns_mx_host *h)
{
	if (h->naddrs == 0)
		return false;
	if (rt != NULL && rt->smarthost != NULL)
		return h->status == DNS_HOST_OK || h->status == DNS_HOST_SELF ||
		    h->status == DNS_HOST_SKIPPED;
	return h->status == DNS_HOST_OK;
}

bool
route_is_listener(const struct config *cfg,
    const struct sockaddr_storage *addr, unsigned port)
{
	bool lo = dns_addr_is_loopback((const struct sockaddr *)addr);

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct sockaddr_storage *l = &cfg->listeners[i].addr;
		unsigned lport;
		bool any;

		if (l->ss_family == AF_INET) {
			const struct sockaddr_in *s = (const void *)l;

			lport = ntohs(s->sin_port);
			any = s->sin_addr.s_addr == htonl(INADDR_ANY);
			if (lport != port)
				continue;
			if (any && lo)
				return true;
			if (addr->ss_family == AF_INET && memcmp(&s->sin_addr,
			    &((const struct sockaddr_in *)(const void *)addr)->
			    sin_addr, 4) == 0)
				return true;
		} else if (l->ss_family == AF_INET6) {
			const struct sockaddr_in6 *s = (const void *)l;

			lport = ntohs(s->sin6_port);
			any = IN6_IS_ADDR_UNSPECIFIED(&s->sin6_addr);
			if (lport != port)
				continue;
			if (any && lo)
				return true;
			if (addr->ss_family == AF_INET6 && memcmp(&s->sin6_addr,
			    &((const struct sockaddr_in6 *)(const void *)addr)->
			    sin6_addr, 16) == 0)
				return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* tern route */

/* s as a JSON string; the address may hold quotes and backslashes. */
static void
json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void
addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *a = ss->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->
	    sin6_addr :
	    (const void *)&((const struct sockaddr_in *)(const void *)ss)->
	    sin_addr;

	if (inet_ntop(ss->ss_family, a, buf, (socklen_t)size) == NULL)
		util_strlcpy(buf, "?", size);
}

static int
exit_code(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return ROUTE_EXIT_OK;
	case DNS_TEMPFAIL:
		return ROUTE_EXIT_TEMPFAIL;
	default:
		return ROUTE_EXIT_PERMANENT;
	}
}

static void
write_json(struct explain *e, const struct dns_mx_result *r,
    enum dns_status st, const char *reason)
{
	FILE *out = e->out;
	const struct config_route *rt = e->rt;
	char a[INET6_ADDRSTRLEN];

	fprintf(out, "{\"address\": ");
	json_str(out, e->address);
	fprintf(out, ", \"domain\": ");
	json_str(out, e->domain);
	fprintf(out, ", \"route\": \"%s\", \"route_block\": ",
	    rt != NULL && rt->smarthost != NULL ? "smarthost" : "mx");
	if (rt != NULL)
		json_str(out, rt->domain);
	else
		fprintf(out, "null");
	if (rt != NULL && rt->smarthost != NULL) {
		fprintf(out, ", \"smarthost\": ");
		json_str(out, rt->smarthost);
		fprintf(out, ", \"smarthost_host\": ");
		json_str(out, rt->smarthost_host);
		fprintf(out, ", \"port\": %u, \"mx_lookup\": %s",
		    rt->smarthost_port, rt->smarthost_mx ? "true" : "false");
	}
	fprintf(out, ", \"auth\": %s, \"auth_user\": ",
	    rt != NULL && rt->auth_user != NULL ? "true" : "false");
	if (rt != NULL && rt->auth_user != NULL)
		json_str(out, rt->auth_user);
	else
		fprintf(out, "null");
	fprintf(out, ", \"require_tls\": %s, \"tls\": \"%s\", "
	    "\"status\": \"%s\", \"reason\": ",
	    route_tls_level(e->cfg, rt) >= CONFIG_RELAY_TLS_ENCRYPT ? "true" :
	    "false", route_tls_name(route_tls_level(e->cfg, rt)),
	    dns_status_name(st));
	json_str(out, reason);
	fprintf(out, ", \"implicit\": %s, \"literal\": %s, \"hosts\": [",
	    r->implicit ? "true" : "false", r->literal ? "true" : "false");
	for (size_t i = 0; i < r->nhosts; i++) {
		const struct dns_mx_host *h = &r->hosts[i];

		fprintf(out, "%s{\"name\": ", i ? ", " : "");
		json_str(out, h->name);
		fprintf(out, ", \"pref\": %u, \"status\": \"%s\", "
		    "\"usable\": %s, \"addresses\": [", h->pref,
		    dns_host_status_name(h->status),
		    route_host_usable(rt, h) ? "true" : "false");
		for (size_t k = 0; k < h->naddrs; k++) {
			addr_text(&h->addrs[k], a, sizeof(a));
			fprintf(out, "%s\"%s\"", k ? ", " : "", a);
		}
		fprintf(out, "]}");
	}
	fprintf(out, "]}\n");
}

static void
write_text(struct explain *e, const struct dns_mx_result *r,
    enum dns_status st, const char *reason)
{
	FILE *out = e->out;
	const struct config_route *rt = e->rt;
	bool smart = rt != NULL && rt->smarthost != NULL;
	char a[INET6_ADDRSTRLEN];

	fprintf(out, "%s: remote domain %s, %s%s\n", e->address, e->domain,
	    smart ? "smarthost " : "", smart ? rt->smarthost : r->literal ?
	    "address literal" : r->implicit ? "implicit MX (no MX record)" :
	    "MX lookup");
	if (rt != NULL)
		fprintf(out, "  route %s\n", rt->domain);
	else
		fprintf(out, "  route (none: default MX delivery)\n");
	if (smart)
		fprintf(out, "  smarthost %s port %u, %s\n", rt->smarthost_host,
		    rt->smarthost_port, rt->smarthost_ip ? "IP address" :
		    rt->smarthost_mx ? "MX lookup of the smarthost" :
		    "address lookup (A/AAAA), no MX lookup");
	if (rt != NULL && rt->auth_user != NULL)
		fprintf(out, "  auth required: yes (PLAIN or LOGIN, user %s)\n",
		    rt->auth_user);
	else
		fprintf(out, "  auth required: no\n");
	unsigned lvl = route_tls_level(e->cfg, rt);
	fprintf(out, "  tls required: %s (relay_tls level %s)\n",
	    lvl >= CONFIG_RELAY_TLS_ENCRYPT ? "yes" : "no", route_tls_name(lvl));
	for (size_t i = 0; i < r->nhosts; i++) {
		const struct dns_mx_host *h = &r->hosts[i];

		fprintf(out, "  %s %u %s", smart ? "host" : "MX", h->pref,
		    h->name);
		if (h->status != DNS_HOST_OK)
			fprintf(out, " (%s%s)", dns_host_status_name(h->status),
			    route_host_usable(rt, h) ? ", used: smarthost" : "");
		fprintf(out, "\n");
		for (size_t k = 0; k < h->naddrs; k++) {
			addr_text(&h->addrs[k], a, sizeof(a));
			fprintf(out, "    %s\n", a);
		}
	}
	fprintf(out, "%s: %s\n", dns_status_name(st), reason);
}

static void
on_result(void *arg, const struct dns_mx_result *r)
{
	struct explain *e = arg;
	enum dns_status st = r->status;
	const char *reason = r->reason;
	char why[512];

	/* A smarthost on this machine is not a loop (route_host_usable()). */
	if (e->rt != NULL && e->rt->smarthost != NULL && st == DNS_LOOP)
		for (size_t i = 0; i < r->nhosts; i++)
			if (route_host_usable(e->rt, &r->hosts[i])) {
				st = DNS_OK;
				reason = "smarthost on this machine";
				break;
			}
	if (e->rt != NULL && e->rt->smarthost != NULL && st != DNS_OK) {
		/* The relay defers: a smarthost problem never bounces. */
		snprintf(why, sizeof(why), "smarthost %s: %s (mail is "
		    "deferred)", e->rt->smarthost, r->reason);
		reason = why;
		st = DNS_TEMPFAIL;
	}
	if (e->json)
		write_json(e, r, st, reason);
	else
		write_text(e, r, st, reason);
	e->rc = exit_code(st);
	e->done = true;
	event_base_loopbreak(e->base);
}

static int
explain_failure(struct explain *e, const char *domain, const char *status,
    const char *reason, int rc)
{
	if (e->json) {
		fprintf(e->out, "{\"address\": ");
		json_str(e->out, e->address);
		fprintf(e->out, ", \"domain\": ");
		json_str(e->out, domain);
		fprintf(e->out, ", \"route\": null, \"status\": \"%s\", "
		    "\"reason\": ", status);
		json_str(e->out, reason);
		fprintf(e->out, "}\n");
	} else {
		fprintf(e->out, "%s: %s: %s\n", e->address, status, reason);
	}
	return rc;
}

int
route_explain(const struct config *cfg, const char *address, bool json,
    FILE *out)
{
	struct explain e = { .out = out, .json = json, .address = address };
	struct dns_options opt = { 0 };
	struct smtp_addr a;
	enum smtp_addr_error aerr;
	struct dns *d;
	char err[256];
	size_t len = strlen(address);
	const char *p = address;

	if (len >= 2 && p[0] == '<' && p[len - 1] == '>') {
		p++;
		len -= 2;
	}
	aerr = smtp_addr_parse_mailbox(p, len, SMTP_ADDR_UTF8, &a);
	if (aerr != SMTP_ADDR_OK)
		return explain_failure(&e, "", "bad-address",
		    smtp_addr_strerror(aerr), ROUTE_EXIT_PERMANENT);
	if (config_find_domain(cfg, a.domain, strlen(a.domain)) != NULL) {
		if (json) {
			fprintf(out, "{\"address\": ");
			json_str(out, address);
			fprintf(out, ", \"domain\": ");
			json_str(out, a.domain);
			fprintf(out, ", \"route\": \"local\", \"status\": "
			    "\"ok\", \"reason\": \"local domain: Maildir "
			    "delivery\"}\n");
		} else {
			fprintf(out, "%s: local domain %s, Maildir delivery\n",
			    address, a.domain);
		}
		return ROUTE_EXIT_OK;
	}
	e.domain = a.domain;
	e.cfg = cfg;
	e.rt = route_lookup(cfg, a.domain);
	if ((e.base = event_base_new()) == NULL)
		return explain_failure(&e, a.domain, "tempfail",
		    "cannot create an event base", ROUTE_EXIT_TEMPFAIL);
	opt.resolver = cfg->resolver;
	opt.self_name = cfg->hostname;
	opt.allow_loopback = cfg->allow_loopback_mx != 0;
	if ((d = dns_new(e.base, &opt, err, sizeof(err))) == NULL) {
		event_base_free(e.base);
		return explain_failure(&e, a.domain, "tempfail", err,
		    ROUTE_EXIT_TEMPFAIL);
	}
	if (e.rt != NULL && e.rt->smarthost != NULL) {
		char q[DNS_NAME_MAX + 16];
		bool mx;

		route_smarthost_query(e.rt, q, sizeof(q), &mx);
		if (mx)
			(void)dns_resolve_mx(d, q, on_result, &e);
		else
			(void)dns_resolve_host(d, q, on_result, &e);
	} else {
		(void)dns_resolve_mx(d, a.domain, on_result, &e);
	}
	while (!e.done)
		if (event_base_loop(e.base, EVLOOP_ONCE) == -1)
			break;
	dns_free(&d);
	event_base_free(e.base);
	if (!e.done)
		return explain_failure(&e, a.domain, "tempfail",
		    "event loop failed", ROUTE_EXIT_TEMPFAIL);
	return e.rc;
}
