/*
 * spool_index.h - the queue's in-memory map of the segment log (format 2,
 * docs/spool-format.md): for each live message where its MSG record is,
 * its journal text, and which segments hold any record of it; for each
 * segment how many live messages it holds records of, so a segment no
 * message needs is known at once.
 *
 * One function keeps it, spool_index_apply(): recovery calls it for every
 * record it scans, and the commit for every record it has made durable,
 * so the map after a restart is the map before it. Not thread-safe: the
 * spool calls it under its lock.
 */
#ifndef TERN_SPOOL_INDEX_H
#define TERN_SPOOL_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/seglog.h"

struct spool_entry {
	uint64_t key;               /* the queue id's value */
	struct spool_entry *next;   /* hash chain */
	struct seglog_pos msg;      /* its latest MSG record */
	uint32_t msglen;            /* that record's payload length */
	char *jrn;                  /* journal lines since that MSG */
	size_t jlen, jcap;
	uint64_t *segs;             /* segments with its records, ascending */
	uint32_t nsegs, segcap;
};

struct spool_index;

struct spool_index *spool_index_new(void);
void spool_index_free(struct spool_index **xp);

/*
 * Account for one durable record: MSG (re)places a message, JRN appends
 * to its journal, SNAP replaces its journal, DONE forgets it. Records of
 * a message the map does not hold (finished, or never committed) are
 * ignored; so are the types that are not the index's.
 */
void spool_index_apply(struct spool_index *x, const struct seglog_rec *r);

struct spool_entry *spool_index_get(struct spool_index *x, uint64_t key);
size_t spool_index_count(const struct spool_index *x);
/* Call cb for every live message, in no particular order. */
void spool_index_foreach(struct spool_index *x,
    void (*cb)(void *arg, const struct spool_entry *e), void *arg);

/*
 * The oldest segments below `below` that no live message holds a record
 * of, while every older one is gone too (a segment's DONE records must
 * outlive the older records they cancel), up to max of them into out
 * (ascending); they are forgotten by the index. Returns how many.
 */
size_t spool_index_unused(struct spool_index *x, uint64_t below,
    uint64_t *out, size_t max);
/*
 * The oldest segment below `below` that live messages still need, if its
 * live MSG records take fewer than max_live bytes or at least two
 * finished segments wait behind it (segments go oldest first): worth
 * copying its messages forward so that it can go. false if none.
 */
bool spool_index_sparse(struct spool_index *x, uint64_t below,
    uint64_t max_live, uint64_t *seg);
/* Up to max live messages with a record in segment seg. */
size_t spool_index_in_segment(struct spool_index *x, uint64_t seg,
    struct spool_entry **out, size_t max);
/* Tell the index segment seg exists (so an unused one is reported). */
void spool_index_segment(struct spool_index *x, uint64_t seg);

#endif
