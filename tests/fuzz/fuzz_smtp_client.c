/*
 * fuzz_smtp_client.c - libFuzzer target for the SMTP client engine: the
 * server's replies are the hostile input.
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_client -max_total_time=60
 *
 * Input: one options byte (output high-water mark, EOF or timeout at the
 * end, SMTPUTF8/DSN envelope), one length byte and that many octets of
 * message body, then the server's side of the conversation, cut into reads
 * at points chosen by the input itself. The engine runs up to three
 * transactions on the connection (started from the callbacks), then QUIT.
 * Checks, besides ASan/UBSan:
 * - every transaction's callback runs exactly once, and the connection
 *   always ends (io->close exactly once);
 * - a recipient is DELIVERED only with a 2xx reply to the final ".";
 * - result texts are printable ASCII and bounded;
 * - everything written has CRLF line endings only (no bare CR or LF can
 *   leave tern, whatever the body holds).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "lib/log.h"
#include "relay/smtp_client.h"
#include "lib/util.h"

#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			abort();                                               \
	} while (0)

struct fz {
	struct smtp_client *c;
	struct envelope env;
	const char *body;
	size_t bodylen;
	int sends, cbs, closes;
	bool prev_cr;          /* output check across reads */
	bool prev_any;
};

static const size_t idx[] = { 0, 1, 2 };

static void on_result(void *arg, const struct smtp_client_result *res);

static void
fz_send(struct fz *f)
{
	if (smtp_client_send(f->c, &f->env, idx, 3, f->body, f->bodylen,
	    on_result, f) == 0)
		f->sends++;
}

static void
on_result(void *arg, const struct smtp_client_result *res)
{
	struct fz *f = arg;

	f->cbs++;
	CHECK(f->cbs == f->sends);
	CHECK(res->nrcpts == 3);
	for (size_t i = 0; i < res->nrcpts; i++) {
		const struct smtp_client_rcpt_result *r = &res->rcpts[i];
		CHECK(r->rcpt == idx[i]);
		if (r->status == SMTP_CLIENT_DELIVERED)
			CHECK(r->stage == SMTP_CLIENT_STAGE_DOT &&
			    r->reply.code >= 200 && r->reply.code < 300 &&
			    res->error == SMTP_CLIENT_ERR_NONE);
		if (res->error != SMTP_CLIENT_ERR_NONE)
			CHECK(r->status != SMTP_CLIENT_DELIVERED);
		size_t n = strnlen(r->reply.text, sizeof(r->reply.text));
		CHECK(n < sizeof(r->reply.text));
		for (size_t k = 0; k < n; k++)
			CHECK(r->reply.text[k] >= 32 && r->reply.text[k] < 127);
	}
	if (f->sends < 3)
		fz_send(f);
	else
		smtp_client_quit(f->c);
}

static void
io_set_timeout(void *arg, unsigned s)
{
}

static void
io_close(void *arg, enum smtp_client_error why)
{
	((struct fz *)arg)->closes++;
}

static const struct smtp_client_io fio = { io_set_timeout, io_close };

/* CR only before LF, LF only after CR, across reads. */
static void
check_output(struct fz *f, struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	const unsigned char *p = evbuffer_pullup(out, -1);

	for (size_t i = 0; i < n; i++) {
		if (f->prev_cr)
			CHECK(p[i] == '\n');
		if (p[i] == '\n')
			CHECK(f->prev_cr);
		f->prev_cr = p[i] == '\r';
	}
	evbuffer_drain(out, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;

	if (!init) {
		log_set_level(LOG_LEVEL_ERR);
		init = true;
	}
	if (size < 2)
		return 0;
	uint8_t opt = data[0];
	size_t blen = data[1];
	if (blen > size - 2)
		blen = size - 2;
	struct fz f = { .body = (const char *)data + 2, .bodylen = blen };
	size_t i = 2 + blen;

	struct smtp_client_params params = { .helo_name = "client.test",
		.peer = "fuzz", .output_high = (opt & 1) ? 16 : 0 };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	envelope_init(&f.env);
	envelope_set(&f.env.sender, (opt & 2) ? "" : "s\xc3\xa9nder@client.test");
	f.env.smtputf8 = (opt & 4) != 0;
	f.env.body = (opt & 8) ? ENVELOPE_BODY_8BITMIME : ENVELOPE_BODY_NONE;
	f.env.ret = (opt & 16) ? ENVELOPE_RET_FULL : ENVELOPE_RET_NONE;
	if (opt & 16)
		envelope_set(&f.env.envid, "QQ+2Bxyz");
	envelope_add_rcpt(&f.env, "alice@example.test", "rfc822;alice@example.test",
	    ENVELOPE_NOTIFY_SUCCESS);
	envelope_add_rcpt(&f.env, "bob@example.test", NULL, 0);
	envelope_add_rcpt(&f.env, "\"a b\"@example.test", NULL,
	    ENVELOPE_NOTIFY_NEVER);

	f.c = smtp_client_new(&params, in, out, &fio, &f);
	smtp_client_start(f.c);
	if (!(opt & 32))
		fz_send(&f);      /* else: sent once greeted */
	while (i < size && f.closes == 0) {
		size_t n = (size_t)(data[i] & 63) + 1;
		i++;
		if (n > size - i)
			n = size - i;
		evbuffer_add(in, data + i, n);
		i += n;
		smtp_client_process(f.c);
		if ((opt & 32) && f.sends == 0 && smtp_client_idle(f.c)) {
			fz_send(&f);
			smtp_client_process(f.c);
		}
		/* the engine keeps no more than one line of input */
		CHECK(evbuffer_get_length(in) < SMTP_CLIENT_LINE_MAX);
		check_output(&f, out);
	}
	if (f.closes == 0) {
		if (opt & 64)
			smtp_client_timeout(f.c);
		else
			smtp_client_eof(f.c);
	}
	check_output(&f, out);
	/* every transaction answered, the connection ended once */
	CHECK(f.closes == 1);
	CHECK(f.cbs == f.sends);
	smtp_client_free(&f.c);
	envelope_clear(&f.env);
	evbuffer_free(in);
	evbuffer_free(out);
	return 0;
}
