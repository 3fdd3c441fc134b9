/*
 * route.c - local or remote, and `tern route` (see route.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "config.h"
#include "dns.h"
#include "route.h"
#include "smtp_addr.h"
#include "util.h"

struct explain {
	FILE *out;
	bool json;
	bool done;
	int rc;
	const char *address;
	struct event_base *base;
};

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
write_json(struct explain *e, const struct dns_mx_result *r)
{
	FILE *out = e->out;
	char a[INET6_ADDRSTRLEN];

	fprintf(out, "{\"address\": ");
	json_str(out, e->address);
	fprintf(out, ", \"domain\": ");
	json_str(out, r->domain);
	fprintf(out, ", \"route\": \"mx\", \"status\": \"%s\", \"reason\": ",
	    dns_status_name(r->status));
	json_str(out, r->reason);
	fprintf(out, ", \"implicit\": %s, \"literal\": %s, \"hosts\": [",
	    r->implicit ? "true" : "false", r->literal ? "true" : "false");
	for (size_t i = 0; i < r->nhosts; i++) {
		const struct dns_mx_host *h = &r->hosts[i];

		fprintf(out, "%s{\"name\": ", i ? ", " : "");
		json_str(out, h->name);
		fprintf(out, ", \"pref\": %u, \"status\": \"%s\", "
		    "\"addresses\": [", h->pref, dns_host_status_name(h->status));
		for (size_t k = 0; k < h->naddrs; k++) {
			addr_text(&h->addrs[k], a, sizeof(a));
			fprintf(out, "%s\"%s\"", k ? ", " : "", a);
		}
		fprintf(out, "]}");
	}
	fprintf(out, "]}\n");
}

static void
write_text(struct explain *e, const struct dns_mx_result *r)
{
	FILE *out = e->out;
	char a[INET6_ADDRSTRLEN];

	fprintf(out, "%s: remote domain %s, %s\n", e->address, r->domain,
	    r->literal ? "address literal" : r->implicit ?
	    "implicit MX (no MX record)" : "MX lookup");
	for (size_t i = 0; i < r->nhosts; i++) {
		const struct dns_mx_host *h = &r->hosts[i];

		fprintf(out, "  MX %u %s", h->pref, h->name);
		if (h->status != DNS_HOST_OK)
			fprintf(out, " (%s)", dns_host_status_name(h->status));
		fprintf(out, "\n");
		for (size_t k = 0; k < h->naddrs; k++) {
			addr_text(&h->addrs[k], a, sizeof(a));
			fprintf(out, "    %s\n", a);
		}
	}
	fprintf(out, "%s: %s\n", dns_status_name(r->status), r->reason);
}

static void
on_result(void *arg, const struct dns_mx_result *r)
{
	struct explain *e = arg;

	if (e->json)
		write_json(e, r);
	else
		write_text(e, r);
	e->rc = exit_code(r->status);
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
	(void)dns_resolve_mx(d, a.domain, on_result, &e);
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
