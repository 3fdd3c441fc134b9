/*
 * spool_index.c - the in-memory map of the segment log (spool_index.h).
 */
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "queue/spool_index.h"

struct segref {
	uint64_t seg;
	uint64_t refs;       /* live messages with a record in it */
	uint64_t live;       /* bytes of their MSG records in it */
};

struct spool_index {
	struct spool_entry **buckets;
	size_t nbuckets;     /* a power of two */
	size_t count;
	struct segref *segs; /* ascending by seg */
	size_t nsegs, segcap;
};

struct spool_index *
spool_index_new(void)
{
	struct spool_index *x = xcalloc(1, sizeof(*x));

	x->nbuckets = 1024;
	x->buckets = xcalloc(x->nbuckets, sizeof(*x->buckets));
	return x;
}

static void
entry_free(struct spool_entry *e)
{
	free(e->jrn);
	free(e->segs);
	free(e);
}

void
spool_index_free(struct spool_index **xp)
{
	struct spool_index *x = *xp;

	if (x == NULL)
		return;
	for (size_t b = 0; b < x->nbuckets; b++)
		for (struct spool_entry *e = x->buckets[b], *n; e != NULL; e = n) {
			n = e->next;
			entry_free(e);
		}
	free(x->buckets);
	free(x->segs);
	free(x);
	*xp = NULL;
}

/* Ids are time << 12 | counter: mix so that neighbours spread. */
static size_t
bucket(const struct spool_index *x, uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ULL;
	key ^= key >> 32;
	return (size_t)key & (x->nbuckets - 1);
}

static void
grow(struct spool_index *x)
{
	size_t old = x->nbuckets;
	struct spool_entry **ob = x->buckets;

	x->nbuckets = old * 2;
	x->buckets = xcalloc(x->nbuckets, sizeof(*x->buckets));
	for (size_t b = 0; b < old; b++)
		for (struct spool_entry *e = ob[b], *n; e != NULL; e = n) {
			size_t h = bucket(x, e->key);

			n = e->next;
			e->next = x->buckets[h];
			x->buckets[h] = e;
		}
	free(ob);
}

struct spool_entry *
spool_index_get(struct spool_index *x, uint64_t key)
{
	for (struct spool_entry *e = x->buckets[bucket(x, key)]; e != NULL;
	    e = e->next)
		if (e->key == key)
			return e;
	return NULL;
}

size_t
spool_index_count(const struct spool_index *x)
{
	return x->count;
}

void
spool_index_foreach(struct spool_index *x,
    void (*cb)(void *arg, const struct spool_entry *e), void *arg)
{
	for (size_t b = 0; b < x->nbuckets; b++)
		for (struct spool_entry *e = x->buckets[b]; e != NULL; e = e->next)
			cb(arg, e);
}

/* ---- segments ---- */

static struct segref *
segref(struct spool_index *x, uint64_t seg, bool create)
{
	size_t lo = 0, hi = x->nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (x->segs[mid].seg < seg)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < x->nsegs && x->segs[lo].seg == seg)
		return &x->segs[lo];
	if (!create)
		return NULL;
	if (x->nsegs == x->segcap) {
		x->segcap = x->segcap ? x->segcap * 2 : 64;
		x->segs = xreallocarray(x->segs, x->segcap, sizeof(*x->segs));
	}
	memmove(&x->segs[lo + 1], &x->segs[lo],
	    (x->nsegs - lo) * sizeof(*x->segs));
	x->segs[lo].seg = seg;
	x->segs[lo].refs = 0;
	x->segs[lo].live = 0;
	x->nsegs++;
	return &x->segs[lo];
}

void
spool_index_segment(struct spool_index *x, uint64_t seg)
{
	(void)segref(x, seg, true);
}

/* e has a record in seg: count it once per (message, segment). */
static void
entry_ref(struct spool_index *x, struct spool_entry *e, uint64_t seg)
{
	for (uint32_t i = e->nsegs; i > 0; i--)
		if (e->segs[i - 1] == seg)
			return;
	if (e->nsegs == e->segcap) {
		e->segcap = e->segcap ? e->segcap * 2 : 4;
		e->segs = xreallocarray(e->segs, e->segcap, sizeof(*e->segs));
	}
	e->segs[e->nsegs++] = seg;
	segref(x, seg, true)->refs++;
}

static void
entry_unref_all(struct spool_index *x, struct spool_entry *e)
{
	struct segref *m = e->nsegs > 0 ? segref(x, e->msg.seg, false) : NULL;

	if (m != NULL)
		m->live -= m->live < seglog_rec_size(e->msglen) ? m->live :
		    seglog_rec_size(e->msglen);
	for (uint32_t i = 0; i < e->nsegs; i++) {
		struct segref *s = segref(x, e->segs[i], false);

		if (s != NULL && s->refs > 0)
			s->refs--;
	}
	e->nsegs = 0;
}

size_t
spool_index_unused(struct spool_index *x, uint64_t below, uint64_t *out,
    size_t max)
{
	size_t n = 0;

	/* Oldest first, and only while every older one is gone: a DONE (or
	 * a copy) in a segment cancels records in older ones, so it must
	 * outlive them, or a finished message comes back at recovery. */
	while (n < x->nsegs && n < max && x->segs[n].seg < below &&
	    x->segs[n].refs == 0) {
		out[n] = x->segs[n].seg;
		n++;
	}
	if (n > 0)
		memmove(x->segs, x->segs + n, (x->nsegs - n) * sizeof(*x->segs));
	x->nsegs -= n;
	return n;
}

bool
spool_index_sparse(struct spool_index *x, uint64_t below, uint64_t max_live,
    uint64_t *seg)
{
	size_t head = 0, blocked = 0;

	/* Only the oldest needed segment can free anything (segments go in
	 * order): copy it when it is mostly finished, or when finished
	 * segments wait behind it. */
	while (head < x->nsegs && x->segs[head].refs == 0)
		head++;
	if (head == x->nsegs || x->segs[head].seg >= below)
		return false;
	for (size_t i = head + 1; i < x->nsegs && x->segs[i].seg < below; i++)
		if (x->segs[i].refs == 0)
			blocked++;
	if (x->segs[head].live >= max_live && blocked < 2)
		return false;
	*seg = x->segs[head].seg;
	return true;
}

size_t
spool_index_in_segment(struct spool_index *x, uint64_t seg,
    struct spool_entry **out, size_t max)
{
	size_t n = 0;

	for (size_t b = 0; b < x->nbuckets && n < max; b++)
		for (struct spool_entry *e = x->buckets[b]; e != NULL && n < max;
		    e = e->next)
			for (uint32_t i = 0; i < e->nsegs; i++)
				if (e->segs[i] == seg) {
					out[n++] = e;
					break;
				}
	return n;
}

/* ---- records ---- */

static void
jrn_set(struct spool_entry *e, const void *p, size_t n, bool append)
{
	if (!append)
		e->jlen = 0;
	if (e->jlen + n > e->jcap) {
		size_t cap = e->jcap ? e->jcap : 64;

		while (cap < e->jlen + n)
			cap *= 2;
		e->jrn = xreallocarray(e->jrn, cap, 1);
		e->jcap = cap;
	}
	if (n > 0)
		memcpy(e->jrn + e->jlen, p, n);
	e->jlen += n;
}

static void
forget(struct spool_index *x, struct spool_entry *e)
{
	struct spool_entry **pp = &x->buckets[bucket(x, e->key)];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	entry_unref_all(x, e);
	entry_free(e);
	x->count--;
}

void
spool_index_apply(struct spool_index *x, const struct seglog_rec *r)
{
	struct spool_entry *e;

	spool_index_segment(x, r->pos.seg);
	e = spool_index_get(x, r->id);
	switch (r->type) {
	case SEGLOG_MSG:
		if (e == NULL) {
			if (x->count >= x->nbuckets * 2)
				grow(x);
			e = xcalloc(1, sizeof(*e));
			e->key = r->id;
			e->next = x->buckets[bucket(x, r->id)];
			x->buckets[bucket(x, r->id)] = e;
			x->count++;
		}
		/* A copy forward carries the journal in a SNAP after it:
		 * the new MSG releases every older record of the message. */
		/* A copy of a known message keeps its journal: a SNAP, if
		 * one follows, replaces it; a torn SNAP must not erase it. */
		entry_unref_all(x, e);
		e->msg = r->pos;
		e->msglen = r->len;
		entry_ref(x, e, r->pos.seg);
		segref(x, r->pos.seg, true)->live += seglog_rec_size(r->len);
		break;
	case SEGLOG_JRN:
	case SEGLOG_SNAP:
		if (e == NULL)
			return;
		jrn_set(e, r->payload, r->len, r->type == SEGLOG_JRN);
		entry_ref(x, e, r->pos.seg);
		break;
	case SEGLOG_DONE:
		if (e != NULL)
			forget(x, e);
		break;
	default:
		break;
	}
}
