/*
 * fuzz_smtp_client.c - libFuzzer target for the SMTP client engine: the
 * server's replies are the hostile input, read by its reply reader
 * (multi-line replies, RFC 2034 enhanced codes, EHLO keywords).
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_client tests/fuzz/corpus/fuzz_smtp_client
 *   FUZZ_SHOW_OUTPUT=1 ./build/fuzz/fuzz_smtp_client SEED   (what tern writes)
 *
 * Input: two options bytes, one length byte and that many octets of
 * message body, then the server's side of the conversation, cut into reads
 * at points chosen by the input itself (a byte n & 63 then n + 1 octets).
 * Options: output high-water mark, EOF or timeout at the end, SMTPUTF8/DSN
 * envelope, the transaction sent before or after the greeting; STARTTLS
 * policy (no, may, must), AUTH credentials, AUTH in clear text allowed, a
 * failing TLS handshake. The engine runs up to three transactions on the
 * connection (started from the callbacks), then QUIT.
 * Checks, besides ASan/UBSan:
 * - every transaction's callback runs exactly once, and the connection
 *   always ends (io->close exactly once);
 * - a recipient is DELIVERED only with a 2xx reply to the final ".";
 * - result texts are printable ASCII and bounded; every enhanced code is
 *   "class.subject.detail" (RFC 3463) and a server reply's class is its
 *   code's;
 * - everything written has CRLF line endings only (no bare CR or LF can
 *   leave tern, whatever the body holds);
 * - no MAIL before TLS when TLS is a must, no AUTH in clear text unless
 *   allowed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "lib/log.h"
#include "relay/smtp_client.h"
#include "lib/util.h"

#include "fuzz.h"

struct fz {
	struct smtp_client *c;
	struct envelope env;
	const char *body;
	size_t bodylen;
	int sends, cbs, closes;
	bool prev_cr;          /* output check across reads */
	bool tls_pending;      /* io->starttls() was called */
	bool tls_fail;         /* ... and the handshake is to fail */
	bool tls_must, auth_plain_ok;
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

/* RFC 3463 2: class "." subject "." detail, 1-3 digits each. */
static void
check_enhanced(const struct smtp_client_reply *r)
{
	const char *e = r->enhanced;
	size_t i = 2;

	CHECK(memchr(e, '\0', sizeof(r->enhanced)) != NULL);
	CHECK((e[0] == '2' || e[0] == '4' || e[0] == '5') && e[1] == '.');
	for (int part = 0; part < 2; part++) {
		size_t k = 0;
		while (e[i] >= '0' && e[i] <= '9' && k < 3)
			i++, k++;
		CHECK(k > 0);
		CHECK(e[i] == (part == 0 ? '.' : '\0'));
		i++;
	}
	if (r->code != 0)
		CHECK(r->code >= 200 && r->code <= 599 &&
		    (unsigned)(e[0] - '0') == r->code / 100);
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
		check_enhanced(&r->reply);
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

static void
io_starttls(void *arg)
{
	struct fz *f = arg;

	CHECK(!f->tls_pending);
	f->tls_pending = true;
}

static const struct smtp_client_io fio = { io_set_timeout, io_close, NULL };
static const struct smtp_client_io fio_tls = { io_set_timeout, io_close,
	io_starttls };

/* CR only before LF, LF only after CR, across reads; no envelope before
 * TLS when TLS is a must; no AUTH in clear text unless allowed. */
static void
check_output(struct fz *f, struct evbuffer *out)
{
	static int show_output = -1;
	size_t n = evbuffer_get_length(out);
	const unsigned char *p = evbuffer_pullup(out, -1);
	bool clear = !smtp_client_tls_active(f->c);

	if (show_output == -1)   /* for writing seeds */
		show_output = getenv("FUZZ_SHOW_OUTPUT") != NULL;
	if (show_output)
		fwrite(p, 1, n, stderr);

	for (size_t i = 0; i < n; i++) {
		if (f->prev_cr)
			CHECK(p[i] == '\n');
		if (p[i] == '\n')
			CHECK(f->prev_cr);
		f->prev_cr = p[i] == '\r';
	}
	/* (the body is sent as it is, so it may hold either text) */
	if (clear && f->tls_must && !memmem(f->body, f->bodylen, "MAIL FROM:", 10))
		CHECK(n < 10 || memmem(p, n, "MAIL FROM:", 10) == NULL);
	if (clear && !f->auth_plain_ok && !memmem(f->body, f->bodylen, "AUTH ", 5))
		CHECK(n < 5 || memmem(p, n, "AUTH ", 5) == NULL);
	evbuffer_drain(out, n);
}

/* The transport's side of STARTTLS: input received in clear text is
 * dropped (RFC 3207 5), then the handshake succeeds or fails. */
static void
fz_handshake(struct fz *f, struct evbuffer *in, struct evbuffer *out)
{
	if (!f->tls_pending)
		return;
	f->tls_pending = false;
	check_output(f, out);
	evbuffer_drain(in, evbuffer_get_length(in));
	smtp_client_tls_done(f->c, in, out, f->tls_fail ? "handshake failed" :
	    NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum smtp_client_tls tls[] = { SMTP_CLIENT_TLS_NO,
		SMTP_CLIENT_TLS_MAY, SMTP_CLIENT_TLS_MUST, SMTP_CLIENT_TLS_MAY };
	static bool init;

	if (!init) {
		log_set_level(LOG_LEVEL_ERR);
		init = true;
	}
	if (size < 3)
		return 0;
	uint8_t opt = data[0], opt2 = data[1];
	size_t blen = data[2];
	if (blen > size - 3)
		blen = size - 3;
	struct fz f = { .body = (const char *)data + 3, .bodylen = blen };
	size_t i = 3 + blen;

	struct smtp_client_params params = { .helo_name = "client.test",
		.peer = "fuzz", .output_high = (opt & 1) ? 16 : 0,
		.tls = tls[opt2 & 3], .auth_plaintext = (opt2 & 8) != 0 };
	if (opt2 & 4) {
		params.auth_user = "relay@client.test";
		params.auth_password = "pass word";
	}
	f.tls_must = params.tls == SMTP_CLIENT_TLS_MUST;
	f.auth_plain_ok = params.auth_plaintext;
	f.tls_fail = (opt2 & 16) != 0;
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

	f.c = smtp_client_new(&params, in, out,
	    params.tls != SMTP_CLIENT_TLS_NO ? &fio_tls : &fio, &f);
	smtp_client_start(f.c);
	if (!(opt & 32))
		fz_send(&f);      /* else: sent once greeted */
	while (i < size && f.closes == 0) {
		const uint8_t *p;
		size_t n = fuzz_next_read(data, size, &i, &p);

		evbuffer_add(in, p, n);
		smtp_client_process(f.c);
		if ((opt & 32) && f.sends == 0 && smtp_client_idle(f.c)) {
			fz_send(&f);
			smtp_client_process(f.c);
		}
		/* the engine keeps no more than one line of input */
		CHECK(evbuffer_get_length(in) < SMTP_CLIENT_LINE_MAX);
		check_output(&f, out);
		fz_handshake(&f, in, out);
		check_output(&f, out);
	}
	if (f.closes == 0) {
		if (opt & 64)
			smtp_client_timeout(f.c);
		else
			smtp_client_eof(f.c);
	}
	check_output(&f, out);
	const struct smtp_client_reply *last = smtp_client_last_reply(f.c);
	if (last->code / 100 == 3)
		CHECK(last->enhanced[0] == '\0');   /* RFC 3463: no class 3 */
	else if (last->code != 0 || last->enhanced[0] != '\0')
		check_enhanced(last);
	/* every transaction answered, the connection ended once */
	CHECK(f.closes == 1);
	CHECK(f.cbs == f.sends);
	smtp_client_free(&f.c);
	envelope_clear(&f.env);
	evbuffer_free(in);
	evbuffer_free(out);
	return 0;
}
