/*
 * queue_client.h - how the SMTP session hands a message to the queue.
 *
 * The session engine knows only this interface: in the daemon it is
 * implemented over IPC to the queue process (smtp_queue_ipc.c); unit tests
 * and fuzzers plug in a fake. The session never sees a spool path or fd.
 *
 * Contract:
 *  - begin() starts a transaction for a complete envelope; the callback
 *    reports the queue id (for the Received: header) or a failure reply.
 *  - write() appends message octets (already unstuffed, CRLF lines).
 *  - commit() asks for durable storage; its callback's ok means the message
 *    is fsync'ed and renamed into the queue: only then may the session say
 *    250. A failure carries the SMTP reply to send (4xx: nothing is lost).
 *  - abort() drops the transaction; no callback follows.
 *  - Callbacks never run inside begin()/commit() themselves (an
 *    implementation that knows the answer at once defers it to the event
 *    loop), so a caller may store the handle after the call returns.
 *    After abort() no callback runs for that transaction.
 */
#ifndef TERN_QUEUE_CLIENT_H
#define TERN_QUEUE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct envelope;

struct queue_result {
	bool ok;
	const char *queue_id;  /* on success */
	const char *reply;     /* on failure: full SMTP reply line, no CRLF */
};

typedef void (*queue_client_cb)(void *arg, const struct queue_result *res);

struct queue_client_ops {
	/* Returns a transaction handle (never NULL; failures come via cb). */
	void *(*begin)(void *ctx, const struct envelope *env,
	    queue_client_cb cb, void *arg);
	void (*write)(void *ctx, void *txn, const void *data, size_t len);
	void (*commit)(void *ctx, void *txn, queue_client_cb cb, void *arg);
	void (*abort)(void *ctx, void *txn);
	/*
	 * true while the queue is behind (its input is backed up): the
	 * session then stops reading message data from its client until the
	 * implementation tells the server to resume (flow control instead of
	 * unbounded buffering). May be NULL: never congested.
	 */
	bool (*congested)(void *ctx);
};

#endif
