/*
 * fuzz_smtp_session.c - libFuzzer target for the whole SMTP session engine
 * with a fake queue (the engine's only way to the spool is queue_client.h).
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_session tests/fuzz/corpus/fuzz_smtp_session
 *
 * The first input byte picks the options (bare_newline policy and small
 * limits, relay permission, whether the queue fails, whether the input
 * deadline passes at the end); the rest is split into reads at points
 * chosen by the input itself (session_harness.h), so line ends and DATA
 * terminators land across read boundaries. Checks, besides ASan/UBSan:
 * - the session never buffers more than its bounds allow;
 * - it keeps the queue's contract (one transaction at a time, commit only
 *   after begin's answer, no abort after the end);
 * - every stored message has CRLF line endings only.
 * AUTH is fuzz_smtp_auth's.
 */
#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"

#include "session_harness.h"

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
	struct smtp_session_client client = { .addr = "192.0.2.7", .port = 1234,
		.relay_ok = (opt & 2) != 0 };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	struct fq q = { .fail = (opt & 4) != 0, .data = evbuffer_new() };
	bool closed = false;
	struct smtp_session *s = smtp_session_new(cfgs[opt & 1], &client, in,
	    out, &fio, &closed, &fq_ops, &q);

	smtp_session_start(s);
	harness_feed(s, in, out, &q, data, size, 1, &closed, NULL, NULL);
	if ((opt & 8) != 0 && !closed) {
		/* the deadline passes in whatever state the input left */
		smtp_session_timeout(s);
		CHECK(closed);
	}
	smtp_session_free(&s);
	CHECK(!q.open);   /* freeing the session aborted its transaction */
	evbuffer_free(in);
	evbuffer_free(out);
	evbuffer_free(q.data);
	return 0;
}
