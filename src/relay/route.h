/*
 * route.h - where mail for an address goes, and `tern route`.
 *
 * A domain is either local (a `domain` block: Maildir delivery) or
 * foreign. A foreign domain's mail leaves by the `route` block that
 * matches it (config.h): a smarthost, or the MX lookup of the domain.
 * route_lookup() decides for both `tern route` and the relay process, so
 * the two always give the same answer.
 */
#ifndef TERN_ROUTE_H
#define TERN_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;
struct config_route;
struct dns_mx_host;
struct sockaddr_storage;

/* Exit statuses of route_explain(), as sysexits.h */
#define ROUTE_EXIT_OK 0
#define ROUTE_EXIT_PERMANENT 1
#define ROUTE_EXIT_TEMPFAIL 75   /* EX_TEMPFAIL */

/*
 * The route block for a foreign recipient domain (ASCII, any case, an
 * optional final dot; or an address literal "[...]"), or NULL: no block
 * matches, deliver by MX lookup. Most specific first: the exact name,
 * then the longest ".suffix" block the domain is a subdomain of, then
 * "*". Address literals match only "*". Pure; the result points into cfg.
 * The caller has checked that the domain is not local.
 */
const struct config_route *route_lookup(const struct config *cfg,
    const char *domain);

/*
 * The outbound TLS level (enum config_relay_tls) of mail taking route rt
 * (NULL: none): the top-level relay_tls, raised by the route's
 * require_tls. Pure.
 */
unsigned route_tls_level(const struct config *cfg,
    const struct config_route *rt);

/* "no", "may", "encrypt" or "verify". */
const char *route_tls_name(unsigned level);

/*
 * What the relay resolves for a route's smarthost, into buf: "[a.b.c.d]"
 * or "[IPv6:...]" for an address (dns_resolve_mx() reads it as a literal),
 * else the host name. *mx_r says whether to look up MX records (no
 * brackets) or only A/AAAA (dns_resolve_host()). Returns buf.
 */
const char *route_smarthost_query(const struct config_route *rt, char *buf,
    size_t size, bool *mx_r);

/*
 * Is the DNS result for a route's destination usable, and which hosts?
 * For the recipient domain's MX hosts only DNS_HOST_OK hosts are (RFC
 * 5321 5.1 self-detection applies). A smarthost was named by the
 * administrator and may be on this machine (a content filter on
 * 127.0.0.1:10025), so its hosts count whatever the self-detection said,
 * as long as they have addresses; the caller skips addresses that are
 * one of tern's own listeners (route_is_listener()).
 */
bool route_host_usable(const struct config_route *rt,
    const struct dns_mx_host *h);

/* true if addr (any port) with port is one of cfg's `listen` sockets,
 * or matches a wildcard listener on that port (loopback addresses only):
 * sending there would loop back into tern. */
bool route_is_listener(const struct config *cfg,
    const struct sockaddr_storage *addr, unsigned port);

/*
 * Explain the route of address (a mailbox, "user@domain", optionally in
 * angle brackets) to out, as text or one JSON object: local or remote;
 * for a remote domain the route block that applies (smarthost, AUTH,
 * TLS), then the real DNS lookup of the smarthost or of the domain (with cfg->resolver): MX
 * hosts in try order, each with its preference, state and addresses in
 * the order tern would try them, or the failure. Blocks until the lookup
 * ends (it runs its own event loop): for the command line only.
 * Returns ROUTE_EXIT_OK, ROUTE_EXIT_PERMANENT (bad address, NXDOMAIN, null
 * MX, no address, loop) or ROUTE_EXIT_TEMPFAIL.
 */
int route_explain(const struct config *cfg, const char *address, bool json,
    FILE *out);

#endif
