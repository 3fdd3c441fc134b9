/*
 * dns.h - asynchronous mail routing lookups (RFC 5321 5.1) on a libevent
 * loop, with libunbound.
 *
 * One struct dns per process and event base. dns_resolve_mx() finds the
 * mail exchangers of a domain and the addresses of each, and reports once,
 * from the event loop, through a callback. Nothing here blocks the loop:
 * libunbound resolves on its own thread and signals results through a pipe
 * (ub_fd()) that the loop watches.
 *
 * Routing rules (RFC 5321 5.1, RFC 7505):
 *   - MX records are sorted by preference; equal preferences are shuffled.
 *   - No MX record (NOERROR, no data): the domain itself is the only host,
 *     preference 0 (implicit MX). A name without any record is not one:
 *     NXDOMAIN fails, a name with neither MX nor A/AAAA is DNS_NO_ADDRESS.
 *   - A null MX ("0 .") fails at once, without address lookups.
 *   - An MX host that is tern itself (its addresses are loopback unless
 *     allowed, or an address of a local interface, or its name is our
 *     hostname) is discarded with every MX of equal or higher preference;
 *     nothing left is DNS_LOOP.
 *   - CNAMEs are followed by libunbound (bounded by its own chain limit).
 *
 * Address order inside one MX host: IPv6 and IPv4 interleaved, IPv6 first
 * (the RFC 8305 section 4 order without the racing), each family in the
 * order the resolver returned it. A host with a broken IPv6 path thus
 * costs one failed connection before an IPv4 address is tried, and a
 * host with only one family is tried in DNS order (RFC 5321 5.1: "MUST try
 * them in the order presented").
 *
 * Bounds: at most DNS_MAX_MX hosts (the most preferred ones) and
 * DNS_MAX_ADDRS addresses per host; names longer than 253 octets, or with
 * an empty or 64+ octet label, are refused; a whole lookup is abandoned
 * as temporary after the timeout given to dns_new().
 */
#ifndef TERN_DNS_H
#define TERN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;

#define DNS_MAX_MX 16         /* MX hosts kept per domain, best first */
#define DNS_MAX_ADDRS 8       /* addresses kept per MX host */
#define DNS_NAME_MAX 253      /* RFC 1035 2.3.4, text form without final dot */
#define DNS_DEFAULT_TIMEOUT_MS 30000

enum dns_status {
	DNS_OK,          /* at least one host with addresses */
	DNS_NXDOMAIN,    /* permanent: no such domain (5.1.2) */
	DNS_NULL_MX,     /* permanent: RFC 7505 null MX (556 5.1.10) */
	DNS_NO_ADDRESS,  /* permanent: no usable host: no MX and no A/AAAA,
	                  * or no MX host has an address (5.4.4) */
	DNS_LOOP,        /* permanent: the best MX is tern itself, a
	                  * configuration error (5.4.6, RFC 5321 5.1) */
	DNS_BAD_NAME,    /* permanent: not a domain DNS can be asked about
	                  * (syntax, length, non-ASCII without IDNA) (5.1.2) */
	DNS_TEMPFAIL,    /* temporary: SERVFAIL, timeout, resolver trouble */
};

/* Per-host state: only DNS_OK hosts have addresses. */
enum dns_host_status {
	DNS_HOST_OK,
	DNS_HOST_NO_ADDRESS,  /* NXDOMAIN or no A/AAAA */
	DNS_HOST_TEMPFAIL,
	DNS_HOST_SELF,        /* tern itself: discarded, see above */
	DNS_HOST_SKIPPED,     /* preference equal to or above a SELF host */
};

struct dns_mx_host {
	char name[DNS_NAME_MAX + 1];  /* lower case, no final dot */
	unsigned pref;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0 */
	size_t naddrs;
	enum dns_host_status status;
};

struct dns_mx_result {
	enum dns_status status;
	char reason[384];        /* human text for logs and bounces */
	const char *domain;      /* as asked */
	struct dns_mx_host *hosts; /* in try order, including discarded ones
	                            * (status tells); nhosts <= DNS_MAX_MX */
	size_t nhosts;
	bool implicit;           /* no MX: hosts[0] is the domain itself */
	bool literal;            /* "[192.0.2.1]": no DNS involved */
	bool host_only;          /* dns_resolve_host(): no MX lookup */
};

struct dns_options {
	const char *resolver;    /* "ADDR:PORT" ("[v6]:port"), NULL: system */
	const char *self_name;   /* our hostname: an MX by that name is us */
	bool allow_loopback;     /* a loopback address is a real MX */
	unsigned timeout_ms;     /* per dns_resolve_mx(); 0: the default */
};

struct dns;
struct dns_query;

typedef void dns_mx_cb(void *arg, const struct dns_mx_result *r);

/*
 * A resolver on base. Reads /etc/resolv.conf (when opt->resolver is NULL)
 * and the local interface addresses now, synchronously: call it at start-up,
 * not from a callback. The libunbound thread starts with the first query
 * and inherits the caller's signal mask. On error returns NULL with a
 * message in err. Free with dns_free() before the event base.
 */
struct dns *dns_new(struct event_base *base, const struct dns_options *opt,
    char *err, size_t errsize);

/* Cancels every outstanding query without calling its callback. Must not
 * be called from inside a dns callback. Sets *d to NULL. */
void dns_free(struct dns **d);

/*
 * Resolve where mail for domain goes (RFC 5321 5.1). domain is a domain
 * as in an address (ASCII, case-insensitive, an optional final dot) or an
 * address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]". cb runs exactly
 * once, from the event loop and never before this function returns,
 * unless the query is cancelled first. The result and everything it
 * points to is valid only during the callback. The returned handle is
 * valid until the callback starts or dns_cancel() is called; the callback
 * may start new queries and cancel other ones, but not free the dns.
 */
struct dns_query *dns_resolve_mx(struct dns *d, const char *domain,
    dns_mx_cb *cb, void *arg);

/*
 * Like dns_resolve_mx(), but without the MX lookup: host itself is the
 * one host (preference 0), with its A/AAAA addresses, or an address
 * literal. For a smarthost written in brackets ("[relay.example]:587").
 * result->host_only is set; self-detection applies as for an MX host.
 */
struct dns_query *dns_resolve_host(struct dns *d, const char *host,
    dns_mx_cb *cb, void *arg);

/* Stop q; its callback will not run. q is invalid afterwards. */
void dns_cancel(struct dns_query *q);

const char *dns_status_name(enum dns_status s);
const char *dns_host_status_name(enum dns_host_status s);

/*
 * The pure part of the decision, for tests and for dns.c itself.
 *
 * One MX record as it came from DNS; name "" is the root (".").
 */
struct dns_mx_rr {
	unsigned pref;
	char name[DNS_NAME_MAX + 1];
};

/*
 * Sort rrs[0..n) in place by preference, shuffling each run of equal
 * preference with rnd (returns a uniform value in [0, bound); NULL uses
 * random()). Returns DNS_NULL_MX when every record is the root ("."; RFC
 * 7505 defines it as the single record "0 ."), otherwise DNS_OK; root
 * records mixed with real ones are dropped (they name no host) and *n is
 * reduced accordingly, as is any record past DNS_MAX_MX after sorting.
 * n == 0 returns DNS_OK with *n == 0: the caller uses the implicit MX.
 */
enum dns_status dns_mx_sort(struct dns_mx_rr *rrs, size_t *n,
    unsigned (*rnd)(unsigned bound));

/*
 * Add rr to rrs[0..*n), which holds at most max records: past that, rr
 * replaces the least preferred record kept if it is more preferred, so
 * an answer with more records than max keeps its best ones whatever
 * their order. Memory stays bounded by max, not by the answer.
 */
void dns_mx_keep(struct dns_mx_rr *rrs, size_t *n, size_t max,
    const struct dns_mx_rr *rr);

/*
 * RFC 5321 5.1 self-detection on sorted hosts: the first host whose status
 * is DNS_HOST_SELF discards itself and every later host of equal or higher
 * preference (status DNS_HOST_SKIPPED). Then decides the overall status:
 * DNS_OK if a host is usable, DNS_LOOP if a self host cut the list before
 * any usable one, DNS_TEMPFAIL if any remaining host failed temporarily,
 * else DNS_NO_ADDRESS.
 */
enum dns_status dns_mx_decide(struct dns_mx_host *hosts, size_t n);

/*
 * Interleave addresses for the try order: v6[0], v4[0], v6[1], v4[1], ...
 * then the rest of the longer list, at most max in all. Returns the count.
 */
size_t dns_addr_interleave(const struct sockaddr_storage *v6, size_t n6,
    const struct sockaddr_storage *v4, size_t n4,
    struct sockaddr_storage *out, size_t max);

/* Is addr loopback or unspecified (127/8, ::1, ::, 0.0.0.0, v4-mapped)? */
bool dns_addr_is_loopback(const struct sockaddr *addr);

#endif
