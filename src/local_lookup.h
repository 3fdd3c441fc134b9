/*
 * local_lookup.h - who lives in tern's local domains.
 *
 * Used by the smtp process at RCPT time (an unknown user gets 550 5.1.1,
 * so tern never accepts mail it cannot deliver) and by the queue process at
 * delivery time (aliases expand to mailboxes). Local parts are compared
 * ASCII case-insensitively, as most MTAs do for local users.
 */
#ifndef TERN_LOCAL_LOOKUP_H
#define TERN_LOCAL_LOOKUP_H

#include <stddef.h>

#include "config.h"

enum local_lookup_result {
	LOCAL_LOOKUP_MAILBOX,  /* a mailbox of this domain */
	LOCAL_LOOKUP_ALIAS,    /* an alias of this domain */
	LOCAL_LOOKUP_UNKNOWN,  /* no such user */
};

/*
 * Sort a domain's mailboxes (dropping duplicates) and aliases so lookups
 * can binary-search them. config_load() calls it once per domain; the
 * names must already be lower case.
 */
void local_lookup_prepare(struct config_domain *d);

/* Classify local part (local, len) in domain d. */
enum local_lookup_result local_lookup(const struct config_domain *d,
    const char *local, size_t len);

#define LOCAL_EXPAND_MAX 64    /* mailboxes one recipient may expand to */
#define LOCAL_EXPAND_DEPTH 8   /* alias nesting before we call it a loop */

struct local_target {
	const struct config_domain *domain;
	const char *mailbox;       /* points into the config */
};

/*
 * Expand local part (local, len) of domain d into the mailboxes it reaches,
 * following aliases (depth-limited, duplicates removed). Fills out[] and
 * returns the count (>= 1), or -1 if it reaches no mailbox, loops, or
 * exceeds LOCAL_EXPAND_MAX.
 */
int local_expand(const struct config *cfg, const struct config_domain *d,
    const char *local, size_t len, struct local_target out[LOCAL_EXPAND_MAX]);

/* local_expand(), and on -1 a one-line reason in why (for config checks). */
int local_expand_explain(const struct config *cfg,
    const struct config_domain *d, const char *local, size_t len,
    struct local_target out[LOCAL_EXPAND_MAX], char *why, size_t whysize);

#endif
