/*
 * session_harness.h - what fuzz_smtp_session and fuzz_smtp_auth share: a
 * fake queue behind queue_client.h that checks what the session stores,
 * and the loop that feeds the input to a session in reads whose lengths
 * the input chooses (a byte n & 63, then n + 1 octets).
 *
 * Included by one fuzz target each (static functions, no object file).
 */
#ifndef TERN_FUZZ_SESSION_HARNESS_H
#define TERN_FUZZ_SESSION_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_session.h"

#include "fuzz.h"

struct fq {
	bool fail;               /* every answer is a failure */
	struct evbuffer *data;   /* the message being stored */
	queue_client_cb cb;      /* an answer is due */
	void *arg;
	bool open;               /* between begin and its end */
	bool committing;         /* the answer due is commit's */
	unsigned stored;         /* messages committed */
};

static void *
fq_begin(void *ctx, const struct envelope *env, queue_client_cb cb, void *arg)
{
	struct fq *q = ctx;

	/* one transaction at a time, and a whole envelope */
	CHECK(q->cb == NULL && !q->open);
	CHECK(env->sender != NULL && env->nrcpts > 0);
	q->cb = cb;
	q->arg = arg;
	q->open = true;
	q->committing = false;
	evbuffer_drain(q->data, evbuffer_get_length(q->data));
	return q;
}

static void
fq_write(void *ctx, void *txn, const void *data, size_t len)
{
	struct fq *q = ctx;

	CHECK(q->open && !q->committing);
	evbuffer_add(q->data, data, len);
}

static void
fq_commit(void *ctx, void *txn, queue_client_cb cb, void *arg)
{
	struct fq *q = ctx;
	size_t n = evbuffer_get_length(q->data);
	const unsigned char *p = evbuffer_pullup(q->data, -1);

	CHECK(q->open && q->cb == NULL && !q->committing);
	/* stored content: CR only before LF, LF only after CR */
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r')
			CHECK(i + 1 < n && p[i + 1] == '\n');
		if (p[i] == '\n')
			CHECK(i > 0 && p[i - 1] == '\r');
	}
	CHECK(n == 0 || (n >= 2 && p[n - 1] == '\n'));
	q->cb = cb;
	q->arg = arg;
	q->committing = true;
}

static void
fq_abort(void *ctx, void *txn)
{
	struct fq *q = ctx;

	CHECK(q->open);
	q->open = false;
	q->committing = false;
	q->cb = NULL;
}

static const struct queue_client_ops fq_ops = { fq_begin, fq_write, fq_commit,
	fq_abort, NULL };

/* Answer what the session waits for, as the queue's loop would. */
static void
fq_answer(struct fq *q, struct smtp_session *s)
{
	static char qid[QUEUE_ID_LEN + 1] = "0123456789abcdef";

	while (q->cb != NULL) {
		queue_client_cb cb = q->cb;
		struct queue_result res = { .ok = !q->fail, .queue_id = qid,
			.reply = "451 4.3.0 Error: queue file write error" };

		q->cb = NULL;
		/* a failed begin and any commit end the transaction */
		if (!res.ok || q->committing) {
			q->open = false;
			if (res.ok)
				q->stored++;
		}
		q->committing = false;
		cb(q->arg, &res);
		smtp_session_process(s);
	}
}

/*
 * Feed data[i..size) to s in reads framed as above. After each read:
 * the queue answers, then between(arg) runs (other asynchronous answers:
 * AUTH, TLS), and the session's buffers are checked and the output
 * dropped (or shown on stderr with FUZZ_SHOW_OUTPUT set in the
 * environment: how a seed's dialogue is checked).
 */
static void
harness_feed(struct smtp_session *s, struct evbuffer *in, struct evbuffer *out,
    struct fq *q, const uint8_t *data, size_t size, size_t i,
    const bool *closed, void (*between)(void *), void *arg)
{
	static int show_output = -1;

	if (show_output == -1)
		show_output = getenv("FUZZ_SHOW_OUTPUT") != NULL;
	while (i < size && !*closed) {
		const uint8_t *p;
		size_t n = fuzz_next_read(data, size, &i, &p);

		evbuffer_add(in, p, n);
		smtp_session_process(s);
		fq_answer(q, s);
		if (between != NULL)
			between(arg);
		fq_answer(q, s);
		/* the session never buffers beyond its bounds */
		CHECK(evbuffer_get_length(in) <= 256 * 1024);
		if (show_output)   /* for writing seeds */
			fwrite(evbuffer_pullup(out, -1), 1,
			    evbuffer_get_length(out), stderr);
		evbuffer_drain(out, evbuffer_get_length(out));
	}
}

#endif
