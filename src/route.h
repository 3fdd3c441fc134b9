/*
 * route.h - where mail for an address goes, and `tern route`.
 *
 * Today a domain is either local (a `domain` block: Maildir delivery) or
 * remote (MX lookup, dns.h). Per-domain routes (smarthosts) of issue 3
 * will be decided here too, so `tern route` and the delivery code give
 * the same answer.
 */
#ifndef TERN_ROUTE_H
#define TERN_ROUTE_H

#include <stdbool.h>
#include <stdio.h>

struct config;

/* Exit statuses of route_explain(), as sysexits.h */
#define ROUTE_EXIT_OK 0
#define ROUTE_EXIT_PERMANENT 1
#define ROUTE_EXIT_TEMPFAIL 75   /* EX_TEMPFAIL */

/*
 * Explain the route of address (a mailbox, "user@domain", optionally in
 * angle brackets) to out, as text or one JSON object: local or remote,
 * and for a remote domain the real DNS lookup (with cfg->resolver): MX
 * hosts in try order, each with its preference, state and addresses in
 * the order tern would try them, or the failure. Blocks until the lookup
 * ends (it runs its own event loop): for the command line only.
 * Returns ROUTE_EXIT_OK, ROUTE_EXIT_PERMANENT (bad address, NXDOMAIN, null
 * MX, no address, loop) or ROUTE_EXIT_TEMPFAIL.
 */
int route_explain(const struct config *cfg, const char *address, bool json,
    FILE *out);

#endif
