/*
 * spool_int.h - what spool.c (the log: commit, recovery, reclaim) and
 * spool_msg.c (a loaded message: journal replay and outcome records)
 * share. Nothing outside these two files includes it.
 */
#ifndef TERN_SPOOL_INT_H
#define TERN_SPOOL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "mail/envelope.h"

/* Not spool.h: it is the module these two files implement (an include
 * back would be a cycle); its includers include it first. */
struct spool;
struct spool_rcpt_status;

#define HEAD_MAGIC "tern-queue "
#define HEAD_LEN_DIGITS 20
/* "tern-queue 1 " + 20 digits + "\n" */
#define HEAD_LINE_LEN (sizeof(HEAD_MAGIC) - 1 + 2 + HEAD_LEN_DIGITS + 1)
#define HEAD_LEN_OFF (HEAD_LINE_LEN - 1 - HEAD_LEN_DIGITS)
/* The image version in the head line: the message image is unchanged
 * from format 1 (docs/spool-format.md). */
#define IMAGE_VERSION 1
/* A journal record never legitimately exceeds this. */
#define JOURNAL_LINE_MAX (SPOOL_MAX_REPLY + 128)

/* An "A" record, until the outcome record it describes (D, F, T). */
struct staged_attempt {
	bool set;
	char how;
	int64_t when;
	char *mta;
};

struct spool_msg {
	struct spool *sp;
	char id[QUEUE_ID_LEN + 1];
	uint64_t tag;                    /* the MSG record's tag */
	bool big;                        /* body in big/<id> */
	char *image;                     /* head, envelope, body, journal */
	size_t imagelen;
	struct envelope env;
	const char *body;
	size_t body_len;
	struct spool_rcpt_status *st;    /* env.nrcpts entries */
	struct evbuffer *records;        /* buffered, not yet written */
	bool held;                       /* last H/U record was H */
	int64_t held_since;              /* its time, unix seconds */
	struct staged_attempt *staged;   /* env.nrcpts entries */
};

/* spool_msg.c */
struct spool_msg *spool_msg_new(struct spool *sp, const char *id, char *err,
    size_t errsize);
/* Parse an image (head, envelope, body, journal) into m; *keep gets the
 * length without a torn last journal line. -1 with a reason in err. */
int spool_msg_parse_into(struct spool_msg *m, const char *base, size_t len,
    size_t *keep, char *err, size_t errsize);

#endif
