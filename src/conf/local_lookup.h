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

/* A local domain and its aliases, as the configuration loads them. */
struct config_alias {
	char *name;      /* local part, lower-cased */
	char **targets;  /* "user" (same domain) or "user@localdomain" */
	size_t ntargets;
};

struct config_domain {
	char *name;            /* lower-cased ASCII domain (A-labels) */
	char **mailboxes;      /* lower-cased local parts: inline + users file */
	size_t nmailboxes;
	struct config_alias *aliases;
	size_t naliases;
	char *users_file;      /* absolute, or NULL */
	char *aliases_file;    /* absolute, or NULL */
	char *maildir;         /* absolute pattern: %d domain, %u user, %% */
};

/* The local domains sorted by name (config.h: cfg->domain_index), so a
 * lookup at every RCPT is a binary search however many are hosted. */
struct local_domains {
	const struct config_domain **sorted;
	size_t n;
};

/* The local domain (domain, len), ASCII case-insensitively; NULL if the
 * name is not one of ld's. */
const struct config_domain *local_find_domain(const struct local_domains *ld,
    const char *domain, size_t len);

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
int local_expand(const struct local_domains *ld, const struct config_domain *d,
    const char *local, size_t len, struct local_target out[LOCAL_EXPAND_MAX]);

/* local_expand(), and on -1 a one-line reason in why (for config checks). */
int local_expand_explain(const struct local_domains *ld,
    const struct config_domain *d, const char *local, size_t len,
    struct local_target out[LOCAL_EXPAND_MAX], char *why, size_t whysize);

#endif
