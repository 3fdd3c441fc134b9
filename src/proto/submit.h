/*
 * submit.h - the submission protocol between the smtp and the queue
 * process (frames on lib/ipc.h; id = the smtp side's transaction number,
 * never 0):
 *
 *   smtp -> queue  BEGIN       payload: the envelope text (envelope.h),
 *                              without a queue id
 *   queue -> smtp  BEGIN_OK    payload: the queue id (QUEUE_ID_LEN hex)
 *                | BEGIN_FAIL  payload: an SMTP reply
 *   smtp -> queue  DATA        payload: message octets (CRLF lines,
 *                              unstuffed), any number of frames
 *   smtp -> queue  COMMIT | ABORT   (empty)
 *   queue -> smtp  COMMIT_OK   payload: the queue id
 *                | COMMIT_FAIL payload: an SMTP reply
 *
 * The queue answers COMMIT_OK only after the file and its directory are
 * fsync'ed. A reply is one complete SMTP reply line without CRLF, 4xx or
 * 5xx, printable ASCII, e.g. "451 4.3.0 Local error in processing".
 *
 * The functions below are pure: byte views in, values out.
 */
#ifndef TERN_SUBMIT_H
#define TERN_SUBMIT_H

#include <stddef.h>

#include "mail/envelope.h"

struct evbuffer;

enum submit_type {
	SUBMIT_BEGIN = 1,
	SUBMIT_BEGIN_OK,
	SUBMIT_BEGIN_FAIL,
	SUBMIT_DATA,
	SUBMIT_COMMIT,
	SUBMIT_ABORT,
	SUBMIT_COMMIT_OK,
	SUBMIT_COMMIT_FAIL,
};

#define SUBMIT_REPLY_MAX 512   /* a reply's octets, with a NUL */

/* Append BEGIN's payload for env to out: 0, or -1 (nothing appended) if
 * it would not fit a frame. */
int submit_begin_encode(struct evbuffer *out, const struct envelope *env);

/*
 * Parse BEGIN's payload into env (initialised by the caller; cleared
 * again on failure): at most max_rcpts recipients, no queue id. 0, or -1
 * with a reason in err.
 */
int submit_begin_decode(const void *p, size_t len, size_t max_rcpts,
    struct envelope *env, char *err, size_t errsize);

/* A BEGIN_OK / COMMIT_OK payload: 0 and the id in id (NUL-terminated,
 * as sent), or -1. */
int submit_qid_decode(const void *p, size_t len, char id[QUEUE_ID_LEN + 1]);

/* A BEGIN_FAIL / COMMIT_FAIL payload: 0 and the reply in reply, or -1. */
int submit_reply_decode(const void *p, size_t len,
    char reply[SUBMIT_REPLY_MAX]);

#endif
