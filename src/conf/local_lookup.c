/*
 * local_lookup.c - mailboxes and aliases of the local domains (see
 * local_lookup.h).
 *
 * A domain may have a hundred thousand users, and the smtp process asks
 * once per RCPT, so config_load() sorts each domain's arrays once
 * (local_lookup_prepare) and every lookup is a binary search. Names in
 * the config are lower-cased ASCII, so a key is folded to lower case
 * before the search and the order is plain byte order (strcmp).
 */
#include <stdio.h>

#include "conf/local_lookup.h"
#include "lib/util.h"

/* RFC 5321 4.5.3.1.1: a local part is at most 64 octets; the config
 * refuses longer names, so a longer key cannot match anything. */
#define LOCAL_NAME_MAX 64
/* Distinct aliases one expansion may pass through; each is expanded at
 * most once, so this bounds the work of a single local_expand(). */
#define LOCAL_EXPAND_ALIASES_MAX 256

struct key {
	const char *s;
	size_t len;
};

/* Byte order of a (pointer, length) key against a NUL-terminated name;
 * agrees with strcmp() as names contain no NUL. */
static int
key_cmp(const struct key *k, const char *name)
{
	size_t nlen = strlen(name);
	size_t n = k->len < nlen ? k->len : nlen;
	int c = memcmp(k->s, name, n);

	if (c != 0)
		return c;
	return k->len < nlen ? -1 : k->len > nlen;
}

static int
mailbox_key_cmp(const void *k, const void *elem)
{
	return key_cmp(k, *(char *const *)elem);
}

static int
alias_key_cmp(const void *k, const void *elem)
{
	return key_cmp(k, ((const struct config_alias *)elem)->name);
}

static int
mailbox_sort_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
alias_sort_cmp(const void *a, const void *b)
{
	return strcmp(((const struct config_alias *)a)->name,
	    ((const struct config_alias *)b)->name);
}

void
local_lookup_prepare(struct config_domain *d)
{
	size_t o = 0;

	if (d->nmailboxes > 1)
		qsort(d->mailboxes, d->nmailboxes, sizeof(d->mailboxes[0]),
		    mailbox_sort_cmp);
	/* The same user inline and in the users file is one mailbox. */
	for (size_t i = 0; i < d->nmailboxes; i++) {
		if (o > 0 && strcmp(d->mailboxes[o - 1], d->mailboxes[i]) == 0) {
			free(d->mailboxes[i]);
			continue;
		}
		d->mailboxes[o++] = d->mailboxes[i];
	}
	d->nmailboxes = o;
	/* Duplicate aliases are a config error reported by config_load(). */
	if (d->naliases > 1)
		qsort(d->aliases, d->naliases, sizeof(d->aliases[0]),
		    alias_sort_cmp);
}

/* Fold (local, len) into buf as a lookup key; false if it cannot be a
 * configured name (too long, or holds a NUL). */
static bool
make_key(const char *local, size_t len, char buf[LOCAL_NAME_MAX + 1],
    struct key *k)
{
	if (len == 0 || len > LOCAL_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = local[i];

		if (c == '\0')
			return false;
		buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	buf[len] = '\0';
	k->s = buf;
	k->len = len;
	return true;
}

static const char *
find_mailbox(const struct config_domain *d, const struct key *k)
{
	char *const *m;

	if (d->nmailboxes == 0)
		return NULL;
	m = bsearch(k, d->mailboxes, d->nmailboxes, sizeof(d->mailboxes[0]),
	    mailbox_key_cmp);
	return m != NULL ? *m : NULL;
}

static const struct config_alias *
find_alias(const struct config_domain *d, const struct key *k)
{
	if (d->naliases == 0)
		return NULL;
	return bsearch(k, d->aliases, d->naliases, sizeof(d->aliases[0]),
	    alias_key_cmp);
}

enum local_lookup_result
local_lookup(const struct config_domain *d, const char *local, size_t len)
{
	char buf[LOCAL_NAME_MAX + 1];
	struct key k;

	if (d == NULL || !make_key(local, len, buf, &k))
		return LOCAL_LOOKUP_UNKNOWN;
	if (find_mailbox(d, &k) != NULL)
		return LOCAL_LOOKUP_MAILBOX;
	if (find_alias(d, &k) != NULL)
		return LOCAL_LOOKUP_ALIAS;
	return LOCAL_LOOKUP_UNKNOWN;
}
const struct config_domain *
local_find_domain(const struct local_domains *ld, const char *domain,
    size_t len)
{
	size_t lo = 0, hi = ld->sorted != NULL ? ld->n : 0;

	/* Binary search over lower-cased names, folding the key as we go. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *name = ld->sorted[mid]->name;
		int c = 0;
		size_t i;

		for (i = 0; i < len && name[i] != '\0'; i++) {
			int k = (unsigned char)domain[i];
			if (k >= 'A' && k <= 'Z')
				k += 'a' - 'A';
			c = (unsigned char)name[i] - k;
			if (c != 0)
				break;
		}
		if (c == 0)
			c = name[i] != '\0' ? 1 : i < len ? -1 : 0;
		if (c == 0)
			return ld->sorted[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct expand {
	const struct local_domains *ld;
	struct local_target *out;
	int n;
	/* Aliases met so far; on_path marks those being expanded, so meeting
	 * one again is a loop, while meeting a finished one adds nothing. */
	struct {
		const struct config_alias *a;
		bool on_path;
	} seen[LOCAL_EXPAND_ALIASES_MAX];
	size_t nseen;
	char *why;
	size_t whysize;
};

static int
expand_fail(struct expand *x, const char *reason, const struct config_domain *d,
    const char *name, size_t len)
{
	if (x->why != NULL && x->whysize > 0)
		snprintf(x->why, x->whysize, "%s '%.*s@%s'", reason, (int)len,
		    name, d->name);
	return -1;
}

/* Expand one name of domain d at alias nesting depth; 0 or -1. */
static int
expand_name(struct expand *x, const struct config_domain *d, const char *name,
    size_t len, unsigned depth)
{
	char buf[LOCAL_NAME_MAX + 1];
	const struct config_alias *a;
	const char *mbox;
	struct key k;
	size_t slot;

	if (!make_key(name, len, buf, &k))
		return expand_fail(x, "no such mailbox or alias", d, name, len);
	if ((mbox = find_mailbox(d, &k)) != NULL) {
		for (int i = 0; i < x->n; i++)
			if (x->out[i].domain == d && x->out[i].mailbox == mbox)
				return 0;
		if (x->n >= LOCAL_EXPAND_MAX) {
			if (x->why != NULL && x->whysize > 0)
				snprintf(x->why, x->whysize,
				    "expands to more than %d mailboxes",
				    LOCAL_EXPAND_MAX);
			return -1;
		}
		x->out[x->n].domain = d;
		x->out[x->n].mailbox = mbox;
		x->n++;
		return 0;
	}
	if ((a = find_alias(d, &k)) == NULL)
		return expand_fail(x, "no such mailbox or alias", d, name, len);
	for (size_t i = 0; i < x->nseen; i++) {
		if (x->seen[i].a != a)
			continue;
		if (x->seen[i].on_path)
			return expand_fail(x, "alias loop through", d, name, len);
		return 0;
	}
	if (depth >= LOCAL_EXPAND_DEPTH) {
		if (x->why != NULL && x->whysize > 0)
			snprintf(x->why, x->whysize,
			    "aliases nested more than %d deep at '%s@%s'",
			    LOCAL_EXPAND_DEPTH, a->name, d->name);
		return -1;
	}
	if (x->nseen >= LOCAL_EXPAND_ALIASES_MAX) {
		if (x->why != NULL && x->whysize > 0)
			snprintf(x->why, x->whysize,
			    "expands through more than %d aliases",
			    LOCAL_EXPAND_ALIASES_MAX);
		return -1;
	}
	slot = x->nseen++;
	x->seen[slot].a = a;
	x->seen[slot].on_path = true;
	for (size_t t = 0; t < a->ntargets; t++) {
		const char *target = a->targets[t];
		const char *at = strchr(target, '@');
		const struct config_domain *td = d;
		size_t tlen = strlen(target);

		if (at != NULL) {
			tlen = (size_t)(at - target);
			td = x->ld != NULL ? local_find_domain(x->ld, at + 1,
			    strlen(at + 1)) : NULL;
			if (td == NULL) {
				if (x->why != NULL && x->whysize > 0)
					snprintf(x->why, x->whysize,
					    "target '%s' of alias '%s@%s' is "
					    "not in a local domain", target,
					    a->name, d->name);
				return -1;
			}
		}
		if (expand_name(x, td, target, tlen, depth + 1) == -1)
			return -1;
	}
	x->seen[slot].on_path = false;
	return 0;
}

int
local_expand_explain(const struct local_domains *ld,
    const struct config_domain *d,
    const char *local, size_t len, struct local_target out[LOCAL_EXPAND_MAX],
    char *why, size_t whysize)
{
	struct expand *x;
	int n;

	if (why != NULL && whysize > 0)
		why[0] = '\0';
	if (d == NULL)
		return -1;
	/* About 4 KiB of bookkeeping: on the heap, not a worker's stack. */
	x = xcalloc(1, sizeof(*x));
	x->ld = ld;
	x->out = out;
	x->why = why;
	x->whysize = whysize;
	n = expand_name(x, d, local, len, 0) == -1 ? -1 : x->n;
	if (n == 0) {
		/* Only an alias without targets; the loader refuses those. */
		if (why != NULL && whysize > 0)
			snprintf(why, whysize, "reaches no mailbox");
		n = -1;
	}
	free(x);
	return n;
}

int
local_expand(const struct local_domains *ld, const struct config_domain *d,
    const char *local, size_t len, struct local_target out[LOCAL_EXPAND_MAX])
{
	return local_expand_explain(ld, d, local, len, out, NULL, 0);
}
