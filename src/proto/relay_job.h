/*
 * relay_job.h - the relay protocol between the queue and the relay
 * process: jobs one way, results the other (frames on lib/ipc.h; id = the
 * queue's job number, never 0, unique per channel).
 *
 * A job is one message for one destination domain with up to
 * RELAY_JOB_MAX_RCPTS of its recipients:
 *   queue -> relay  START   payload: "domain <d>\n" and the envelope text
 *                           (envelope.h) holding only the job's
 *                           recipients, in job order
 *   queue -> relay  DATA    payload: message octets (CRLF lines), any
 *                           number of frames
 *   queue -> relay  END     (empty): the message is complete: deliver
 *   queue -> relay  CANCEL  (empty): drop the job (the queue is shutting
 *                           down, or the message was deleted); a RESULT
 *                           may still come
 *   relay -> queue  RESULT  payload: a line "via <mx> <ip> <tls>\n" ("-"
 *                           for each when no server was reached), then,
 *                           when the server offered DSN, "peer-dsn\n" (RFC
 *                           3461 5.2.2: then it, not tern, reports
 *                           success), then one line per recipient in job
 *                           order, "<i> <D|T|F> <code> <x.y.z> <text>\n" (D
 *                           delivered, T temporary, F permanent; code 0
 *                           when tern decided without a reply), or no
 *                           recipient line at all: every one deferred.
 * The relay answers every job with exactly one RESULT (or the channel
 * closes: the queue then treats every job in flight as deferred).
 *
 * Everything below is pure: byte views in, values out; what an encoder
 * writes, its decoder accepts.
 */
#ifndef TERN_RELAY_JOB_H
#define TERN_RELAY_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct envelope;
struct evbuffer;

enum relay_job_type {
	RELAY_JOB_START = 16,
	RELAY_JOB_DATA,
	RELAY_JOB_END,
	RELAY_JOB_CANCEL,
	RELAY_JOB_RESULT,
};

#define RELAY_JOB_MAX_RCPTS 1000
#define RELAY_JOB_DOMAIN_MAX 255     /* a domain or an address literal */
#define RELAY_RESULT_TOKEN_MAX 255   /* one token of the via line */
#define RELAY_RESULT_TEXT_MAX 511    /* one recipient's text */

/* ---- jobs ---- */

/*
 * Append the frames of job id to out: START for domain and env (which
 * holds only the job's recipients), DATA for the body, END. 0, or -1
 * (nothing appended) when the START payload would not fit a frame.
 */
int relay_job_encode(struct evbuffer *out, uint64_t id, const char *domain,
    const struct envelope *env, const void *body, size_t body_len);

/*
 * Parse a START payload: the domain (printable, UTF-8 allowed, no space
 * or control octet) into domain and the envelope into env (initialised by
 * the caller), 1 to RELAY_JOB_MAX_RCPTS recipients. 0, or -1 with a reason
 * in err.
 */
int relay_job_decode(const void *p, size_t len,
    char domain[RELAY_JOB_DOMAIN_MAX + 1], struct envelope *env, char *err,
    size_t errsize);

/* ---- results ---- */

/* One recipient's outcome, as the relay reports it. */
struct relay_result_line {
	char outcome;                /* 'D', 'T' or 'F' */
	unsigned code;               /* reply code, 0: tern decided */
	char enh[16];                /* RFC 3463 "x.y.z", or "" */
	char text[RELAY_RESULT_TEXT_MAX + 1];
};

/* The text octets a line may carry so that nrcpts of them fit a frame. */
size_t relay_result_text_max(size_t nrcpts);

/* Start a RESULT payload in out: the via line (NULL or "" tokens become
 * "-", other octets than printable non-blank ASCII '?') and peer-dsn. */
void relay_result_begin(struct evbuffer *out, const char *mx, const char *ip,
    const char *tls, bool peer_dsn);

/*
 * Append recipient i's line for l, made valid first (in place, so the
 * caller logs what was sent): the status class and the code agree with
 * the outcome (else x.0.0 and code 0), the text is printable ASCII of at
 * most textmax octets and never empty.
 */
void relay_result_add(struct evbuffer *out, size_t i,
    struct relay_result_line *l, size_t textmax);

/* A recipient's line as decoded: views into the payload. */
struct relay_result_rcpt {
	char outcome;
	unsigned code;               /* 0, or 200..599 */
	const char *enh;
	size_t enh_len;
	const char *text;            /* may be empty */
	size_t text_len;
};

struct relay_result {
	const char *via[3];          /* mx, ip, tls: "-" when none */
	size_t via_len[3];
	bool peer_dsn;
	size_t n;                    /* lines: nrcpts, or 0 (all deferred) */
};

/*
 * Parse a RESULT payload for a job of nrcpts recipients; rcpts has room
 * for nrcpts lines. 0, or -1 with a reason in why.
 */
int relay_result_decode(const void *p, size_t len, size_t nrcpts,
    struct relay_result *res, struct relay_result_rcpt *rcpts, char *why,
    size_t whysize);

#endif
