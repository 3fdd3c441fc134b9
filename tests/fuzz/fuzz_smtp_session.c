/*
 * fuzz_smtp_session.c - libFuzzer target for the whole SMTP session engine
 * with a fake queue (the engine's only way to the spool is queue_client.h).
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_session -max_total_time=60
 *
 * The first input byte picks the options (bare_newline policy and small
 * limits, relay permission, whether the queue fails, whether the input
 * deadline passes at the end); the rest is split into reads at
 * points chosen by the input itself, so line ends and DATA terminators
 * land across read boundaries. Checks, besides ASan/UBSan:
 * - the session never buffers more than its bounds allow;
 * - every stored message has CRLF line endings only.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conf/config.h"
#include "mail/envelope.h"
#include "lib/log.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_session.h"
#include "lib/util.h"

#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			abort();                                               \
	} while (0)

struct fq {
	bool fail;
	struct evbuffer *data;
	queue_client_cb cb;
	void *arg;
	bool open;
};

static void *
fq_begin(void *ctx, const struct envelope *env, queue_client_cb cb, void *arg)
{
	struct fq *q = ctx;

	CHECK(q->cb == NULL && !q->open);
	q->cb = cb;
	q->arg = arg;
	q->open = true;
	evbuffer_drain(q->data, evbuffer_get_length(q->data));
	return q;
}

static void
fq_write(void *ctx, void *txn, const void *data, size_t len)
{
	struct fq *q = ctx;

	CHECK(q->open);
	evbuffer_add(q->data, data, len);
}

static void
fq_commit(void *ctx, void *txn, queue_client_cb cb, void *arg)
{
	struct fq *q = ctx;
	size_t n = evbuffer_get_length(q->data);
	const unsigned char *p = evbuffer_pullup(q->data, -1);

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
}

static void
fq_abort(void *ctx, void *txn)
{
	struct fq *q = ctx;

	q->open = false;
	q->cb = NULL;
}

static const struct queue_client_ops fq_ops = { fq_begin, fq_write, fq_commit,
	fq_abort, NULL };

static void
io_set_deadline(void *arg, unsigned ms)
{
}

static void
io_close(void *arg)
{
	*(bool *)arg = true;
}

static const struct smtp_session_io fio = { .set_deadline = io_set_deadline,
	.close = io_close };

static struct config *cfgs[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (cfgs[0] == NULL) {
		log_set_level(LOG_LEVEL_ERR);
		cfgs[0] = config_load(NULL, NULL);
		CHECK(cfgs[0] != NULL);
		cfgs[1] = config_load(NULL, NULL);
		cfgs[1]->bare_newline = CONFIG_BARE_NEWLINE_REJECT;
		cfgs[1]->max_message_size = 2048;
		cfgs[1]->max_recipients = 2;
		cfgs[1]->max_junk_commands = 3;
		cfgs[1]->max_received_headers = 2;
	}
	uint8_t opt = data[0];
	struct smtp_session_client client = { "192.0.2.7", 1234, (opt & 2) != 0 };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	struct fq q = { .fail = (opt & 4) != 0, .data = evbuffer_new() };
	bool closed = false;
	struct smtp_session *s = smtp_session_new(cfgs[opt & 1], &client, in,
	    out, &fio, &closed, &fq_ops, &q);
	char qid[QUEUE_ID_LEN + 1] = "0123456789ABCDEF";

	smtp_session_start(s);
	size_t i = 1;
	while (i < size && !closed) {
		/* chunk length from the data itself: 1..64 octets */
		size_t n = (size_t)(data[i] & 63) + 1;
		i++;
		if (n > size - i)
			n = size - i;
		evbuffer_add(in, data + i, n);
		i += n;
		smtp_session_process(s);
		while (q.cb != NULL) {
			queue_client_cb cb = q.cb;
			struct queue_result res = { .ok = !q.fail, .queue_id = qid,
				.reply = "451 4.3.0 Error: queue file write error" };
			q.cb = NULL;
			if (!res.ok || !q.open)
				q.open = false;
			cb(q.arg, &res);
			smtp_session_process(s);
		}
		CHECK(evbuffer_get_length(in) <= 256 * 1024);
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	if ((opt & 8) != 0 && !closed) {
		/* the deadline passes in whatever state the input left */
		smtp_session_timeout(s);
		CHECK(closed);
	}
	smtp_session_free(&s);
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(q.data);
	return 0;
}
