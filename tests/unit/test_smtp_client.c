/*
 * test_smtp_client.c - the SMTP client engine driven by transcripts: the
 * server's replies are scripted, and what the engine writes is compared to
 * the expected client commands, octet for octet.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "unit.h"

#include "mail/envelope.h"
#include "lib/log.h"
#include "relay/smtp_client.h"
#include "lib/util.h"

/* ------------------------------------------------------------------ */
/* harness */

#define MAXR 8

struct t {
	struct evbuffer *in, *out;
	struct smtp_client *c;
	struct smtp_client_params params;
	struct envelope env;
	bool closed;
	enum smtp_client_error close_why;
	unsigned timeout;
	unsigned timeouts[64];   /* every value given to set_timeout */
	size_t ntimeouts;
	/* the last transaction's results, copied */
	int ncb;
	enum smtp_client_error err;
	bool peer_dsn;
	size_t nres;
	struct smtp_client_rcpt_result res[MAXR];
	/* run from the callback: start this transaction next */
	const char *next_body;
	int nstarttls;           /* io->starttls() calls */
	struct evbuffer *old_in, *old_out;   /* before TLS */
};

static void
io_set_timeout(void *arg, unsigned secs)
{
	struct t *t = arg;

	t->timeout = secs;
	if (t->ntimeouts < nitems(t->timeouts))
		t->timeouts[t->ntimeouts++] = secs;
}

static void
io_close(void *arg, enum smtp_client_error why)
{
	struct t *t = arg;

	assert_false(t->closed);   /* once only */
	t->closed = true;
	t->close_why = why;
}

static void
io_starttls(void *arg)
{
	struct t *t = arg;

	t->nstarttls++;
}

static const struct smtp_client_io test_io = { io_set_timeout, io_close,
	io_starttls };

static void
on_result(void *arg, const struct smtp_client_result *res)
{
	struct t *t = arg;

	t->ncb++;
	t->err = res->error;
	t->peer_dsn = res->peer_dsn;
	t->nres = res->nrcpts;
	assert_true(res->nrcpts <= MAXR);
	memcpy(t->res, res->rcpts, res->nrcpts * sizeof(*res->rcpts));
}

static void
start_p(struct t *t, size_t output_high)
{
	memset(t, 0, sizeof(*t));
	t->in = evbuffer_new();
	t->out = evbuffer_new();
	t->params.helo_name = "client.test";
	t->params.peer = "mx.test[192.0.2.25]";
	t->params.output_high = output_high;
	envelope_init(&t->env);
	envelope_set(&t->env.sender, "sender@client.test");
	t->c = smtp_client_new(&t->params, t->in, t->out, &test_io, t);
	smtp_client_start(t->c);
}

static void
start(struct t *t)
{
	start_p(t, 0);
}

static void
stop(struct t *t)
{
	smtp_client_free(&t->c);
	envelope_clear(&t->env);
	evbuffer_free(t->in);
	evbuffer_free(t->out);
	if (t->old_in != NULL)
		evbuffer_free(t->old_in);
	if (t->old_out != NULL)
		evbuffer_free(t->old_out);
}

/* The transport's side of a successful handshake: fresh buffers. */
static void
tls_up(struct t *t)
{
	t->old_in = t->in;
	t->old_out = t->out;
	t->in = evbuffer_new();
	t->out = evbuffer_new();
	smtp_client_tls_done(t->c, t->in, t->out, NULL);
}

/* Everything the client wrote since the last call. */
static char *
take(struct t *t)
{
	size_t n = evbuffer_get_length(t->out);
	char *s = malloc(n + 1);

	evbuffer_remove(t->out, s, n);
	s[n] = '\0';
	return s;
}

/* The server says srv (may be NULL or ""); the client must answer want. */
static void
step(struct t *t, const char *srv, const char *want, int line)
{
	if (srv != NULL && srv[0] != '\0')
		evbuffer_add(t->in, srv, strlen(srv));
	smtp_client_process(t->c);
	char *got = take(t);
	if (strcmp(got, want) != 0)
		fail_msg("line %d: after server %s\nwant: \"%s\"\ngot:  \"%s\"",
		    line, srv ? srv : "(nothing)", want, got);
	free(got);
}
#define STEP(t, srv, want) step((t), (srv), (want), __LINE__)

/* A transcript: pairs of server text and expected client text. */
struct exch {
	const char *srv;
	const char *cli;
};

static void
run_script(struct t *t, const struct exch *x, size_t n, int line)
{
	for (size_t i = 0; i < n; i++)
		step(t, x[i].srv, x[i].cli, line);
}
#define SCRIPT(t, x) run_script((t), (x), nitems(x), __LINE__)

#define EHLO_FULL                                                              \
	"250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 10000\r\n"            \
	"250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-STARTTLS\r\n"          \
	"250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
#define EHLO_BARE "250 mx.test hello\r\n"       /* ESMTP, no extension */

/* Greeting and EHLO with the given EHLO reply. */
static void
greet(struct t *t, const char *ehlo_reply)
{
	STEP(t, "220 mx.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(t, ehlo_reply, "");
	assert_true(smtp_client_idle(t->c));
}

static void
add_rcpts(struct t *t, size_t n)
{
	static const char *const names[] = { "alice@example.test",
		"bob@example.test", "carol@example.test", "dave@example.test" };

	for (size_t i = 0; i < n; i++)
		envelope_add_rcpt(&t->env, names[i], NULL, 0);
}

static const size_t idx_all[] = { 0, 1, 2, 3, 4, 5, 6, 7 };

static void
send_msg(struct t *t, const char *body)
{
	assert_int_equal(smtp_client_send(t->c, &t->env, idx_all, t->env.nrcpts,
	    body, strlen(body), on_result, t), 0);
}

static void
want_rcpt(struct t *t, size_t i, enum smtp_client_status st, unsigned code,
    const char *enh, enum smtp_client_stage stage)
{
	assert_true(i < t->nres);
	if (t->res[i].status != st || t->res[i].reply.code != code ||
	    strcmp(t->res[i].reply.enhanced, enh) != 0 || t->res[i].stage != stage)
		fail_msg("rcpt %zu: want status %d code %u %s stage %d, got %d %u "
		    "%s stage %d (%s)", i, st, code, enh, stage, t->res[i].status,
		    t->res[i].reply.code, t->res[i].reply.enhanced, t->res[i].stage,
		    t->res[i].reply.text);
	assert_int_equal(t->res[i].rcpt, i);
}

/* ------------------------------------------------------------------ */
/* conversation */

static void
test_ehlo_ok(void **state)
{
	struct t t;
	uint64_t size;

	start(&t);
	assert_int_equal(t.timeout, 300);           /* 4.5.3.2.1 greeting */
	/* a multi-line greeting */
	STEP(&t, "220-mx.test ESMTP\r\n220 welcome\r\n", "EHLO client.test\r\n");
	STEP(&t, EHLO_FULL, "");
	unsigned caps = smtp_client_caps(t.c, &size);
	assert_int_equal(caps, SMTP_CLIENT_CAP_ESMTP | SMTP_CLIENT_CAP_PIPELINING |
	    SMTP_CLIENT_CAP_SIZE | SMTP_CLIENT_CAP_8BITMIME | SMTP_CLIENT_CAP_SMTPUTF8 |
	    SMTP_CLIENT_CAP_DSN | SMTP_CLIENT_CAP_STARTTLS |
	    SMTP_CLIENT_CAP_ENHANCEDSTATUSCODES | SMTP_CLIENT_CAP_CHUNKING);
	assert_int_equal(size, 10000);
	assert_true(smtp_client_idle(t.c));
	assert_int_equal(t.timeout, 0);             /* idle: the caller's call */
	smtp_client_quit(t.c);
	STEP(&t, NULL, "QUIT\r\n");
	assert_false(t.closed);
	assert_int_equal(t.timeout, 60);
	STEP(&t, "221 2.0.0 bye\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_NONE);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, "", 0,
	    on_result, &t), -1);
	stop(&t);
}

/* Keyword case, SIZE forms, unknown keywords, bare LF line ends. */
static void
test_ehlo_keywords(void **state)
{
	static const struct {
		const char *name;
		const char *reply;
		unsigned caps;
		uint64_t size;
	} cases[] = {
		{ "lower case", "250-mx\r\n250-pipelining\r\n250 size 5\r\n",
		  SMTP_CLIENT_CAP_PIPELINING | SMTP_CLIENT_CAP_SIZE, 5 },
		{ "SIZE without value", "250-mx\r\n250 SIZE\r\n", SMTP_CLIENT_CAP_SIZE, 0 },
		{ "SIZE garbage", "250-mx\r\n250 SIZE 12x\r\n", SMTP_CLIENT_CAP_SIZE, 0 },
		{ "SIZE huge", "250-mx\r\n250 SIZE 99999999999999999999\r\n",
		  SMTP_CLIENT_CAP_SIZE, UINT64_MAX },
		{ "unknown and prefixes", "250-mx\r\n250-AUTHX PLAIN\r\n250-PIPELININGX\r\n"
		  "250-X-DSN\r\n250 8BITMIMEY\r\n", 0, 0 },
		{ "AUTH mechanisms", "250-mx\r\n250 AUTH CRAM-MD5 login  PLAIN\r\n",
		  SMTP_CLIENT_CAP_AUTH_PLAIN | SMTP_CLIENT_CAP_AUTH_LOGIN, 0 },
		{ "AUTH= old form", "250-mx\r\n250 AUTH=LOGIN\r\n",
		  SMTP_CLIENT_CAP_AUTH_LOGIN, 0 },
		{ "AUTH without PLAIN or LOGIN", "250-mx\r\n250 AUTH CRAM-MD5 PLAINX\r\n",
		  0, 0 },
		{ "bare LF", "250-mx\n250-DSN\n250 SMTPUTF8\n",
		  SMTP_CLIENT_CAP_DSN | SMTP_CLIENT_CAP_SMTPUTF8, 0 },
		{ "empty continuation", "250-\r\n250-DSN\r\n250\r\n", SMTP_CLIENT_CAP_DSN, 0 },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct t t;
		uint64_t size = 42;
		start(&t);
		greet(&t, cases[i].reply);
		unsigned caps = smtp_client_caps(t.c, &size);
		if (caps != (cases[i].caps | SMTP_CLIENT_CAP_ESMTP) || size != cases[i].size)
			fail_msg("%s: caps %x size %llu", cases[i].name, caps,
			    (unsigned long long)size);
		stop(&t);
	}
}

static void
test_ehlo_5xx_helo(void **state)
{
	struct t t;

	start(&t);
	add_rcpts(&t, 1);
	/* handed in before the greeting: runs once greeted */
	send_msg(&t, "Subject: x\r\n\r\nbody\r\n");
	const struct exch x[] = {
		{ NULL, "" },
		{ "220 old.test SMTP\r\n", "EHLO client.test\r\n" },
		{ "500 5.5.1 what?\r\n", "HELO client.test\r\n" },
		/* no extensions: one command at a time, no parameters */
		{ "250 old.test\r\n", "MAIL FROM:<sender@client.test>\r\n" },
		{ "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n" },
		{ "250 ok\r\n", "DATA\r\n" },
		{ "354 go\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n" },
		{ "250 queued\r\n", "" },
	};
	SCRIPT(&t, x);
	assert_int_equal(smtp_client_caps(t.c, NULL), 0);
	assert_int_equal(t.ncb, 1);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_NONE);
	assert_false(t.peer_dsn);
	want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	assert_string_equal(t.res[0].reply.text, "queued");
	stop(&t);
}

/* EHLO 4xx, and HELO refused after EHLO 5xx: connection failures. */
static void
test_helo_refused(void **state)
{
	struct t t;

	start(&t);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, "220 mx\r\n", "EHLO client.test\r\n");
	STEP(&t, "450 4.7.1 go away\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_HELO);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_HELO);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 450, "4.7.1", SMTP_CLIENT_STAGE_EHLO);
	stop(&t);

	start(&t);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, "220 mx\r\n", "EHLO client.test\r\n");
	STEP(&t, "502 no\r\n", "HELO client.test\r\n");
	STEP(&t, "550 5.7.1 not you\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_HELO);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 550, "5.7.1", SMTP_CLIENT_STAGE_HELO);
	stop(&t);
}

static void
test_greeting_554(void **state)
{
	struct t t;

	start(&t);
	add_rcpts(&t, 2);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "");
	STEP(&t, "554-5.7.1 no service\r\n554 5.7.1 for you\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_GREETING);
	assert_int_equal(t.ncb, 1);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_GREETING);
	/* temporary: the caller tries the next MX */
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 554, "5.7.1", SMTP_CLIENT_STAGE_GREETING);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 554, "5.7.1", SMTP_CLIENT_STAGE_GREETING);
	assert_string_equal(t.res[0].reply.text, "no service for you");
	assert_int_equal(smtp_client_last_reply(t.c)->code, 554);
	stop(&t);

	/* 421 greeting, no transaction: just the close */
	start(&t);
	STEP(&t, "421 4.3.2 busy\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_GREETING);
	assert_int_equal(t.ncb, 0);
	stop(&t);
}

/* A 3yz reply where none is due (RFC 5321 4.2: greeting, EHLO, HELO)
 * is a protocol error decided by the engine: its code is no delivery
 * status, and "3.0.0" would be refused by the queue (RFC 3463 2 has no
 * class 3), which closes the relay channel. Found by fuzz_smtp_client. */
static void
test_reply_3xx(void **state)
{
	static const struct {
		struct exch x[3];          /* server text, client answer */
		enum smtp_client_error err;
		enum smtp_client_stage stage;
	} cases[] = {
		{ { { "330 3.1.0 what\r\n", "" } },
		  SMTP_CLIENT_ERR_GREETING, SMTP_CLIENT_STAGE_GREETING },
		{ { { "220 mx.test\r\n", "EHLO client.test\r\n" },
		    { "354 go on\r\n", "" } },
		  SMTP_CLIENT_ERR_PROTOCOL, SMTP_CLIENT_STAGE_EHLO },
		{ { { "220 mx.test\r\n", "EHLO client.test\r\n" },
		    { "500 what\r\n", "HELO client.test\r\n" },
		    { "334-3.0.0 a\r\n334 3.0.0 b\r\n", "" } },
		  SMTP_CLIENT_ERR_PROTOCOL, SMTP_CLIENT_STAGE_HELO },
	};
	struct t t;

	for (size_t i = 0; i < nitems(cases); i++) {
		start(&t);
		add_rcpts(&t, 1);
		send_msg(&t, "x\r\n");
		for (size_t k = 0; k < 3 && cases[i].x[k].srv != NULL; k++)
			STEP(&t, cases[i].x[k].srv, cases[i].x[k].cli);
		assert_true(t.closed);
		assert_int_equal(t.err, cases[i].err);
		want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0", cases[i].stage);
		stop(&t);
	}
}

/* ------------------------------------------------------------------ */
/* transactions */

static void
test_pipelining(void **state)
{
	struct t t;

	start(&t);
	greet(&t, EHLO_FULL);
	add_rcpts(&t, 2);
	send_msg(&t, "hello\r\n");
	/* RFC 2920: MAIL, every RCPT and DATA in one batch */
	STEP(&t, NULL,
	    "MAIL FROM:<sender@client.test> SIZE=7\r\n"
	    "RCPT TO:<alice@example.test> ORCPT=rfc822;alice@example.test\r\n"
	    "RCPT TO:<bob@example.test> ORCPT=rfc822;bob@example.test\r\n"
	    "DATA\r\n");
	assert_int_equal(t.timeout, 300);
	/* replies may arrive in any split; they are matched by count */
	STEP(&t, "250 2.1.0 ok\r\n250 2.1.5", "");
	STEP(&t, " ok\r\n250 2.1.5 ok\r\n", "");
	assert_int_equal(t.timeout, 120);           /* 4.5.3.2.4 DATA */
	STEP(&t, "354 go\r\n", "hello\r\n.\r\n");
	assert_int_equal(t.timeout, 600);           /* 4.5.3.2.6 */
	STEP(&t, "250 2.0.0 ok: queued as X\r\n", "");
	assert_int_equal(t.ncb, 1);
	assert_true(t.peer_dsn);
	want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	want_rcpt(&t, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	assert_string_equal(t.res[1].reply.text, "ok: queued as X");
	assert_true(smtp_client_idle(t.c));
	stop(&t);
}

static void
test_no_pipelining(void **state)
{
	struct t t;

	start(&t);
	greet(&t, "250-mx\r\n250 8BITMIME\r\n");
	add_rcpts(&t, 2);
	send_msg(&t, "hello\r\n");
	const struct exch x[] = {
		{ NULL, "MAIL FROM:<sender@client.test>\r\n" },
		{ NULL, "" },      /* nothing more until the reply */
		{ "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n" },
		{ "250 ok\r\n", "RCPT TO:<bob@example.test>\r\n" },
		{ "250 ok\r\n", "DATA\r\n" },
		{ "354 go\r\n", "hello\r\n.\r\n" },
		{ "250 ok\r\n", "" },
	};
	SCRIPT(&t, x);
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	stop(&t);
}

/* One 250, one 450, one 550: each recipient its own outcome. */
static void
test_mixed_rcpt(void **state)
{
	for (int pipelined = 0; pipelined < 2; pipelined++) {
		struct t t;
		start(&t);
		greet(&t, pipelined ? "250-mx\r\n250 PIPELINING\r\n" : EHLO_BARE);
		add_rcpts(&t, 3);
		send_msg(&t, "m\r\n");
		if (pipelined) {
			STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
			    "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
			    "RCPT TO:<carol@example.test>\r\nDATA\r\n");
			STEP(&t, "250 ok\r\n250 2.1.5 ok\r\n450 4.2.0 greylisted\r\n"
			    "550 5.1.1 unknown\r\n", "");
		} else {
			STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
			STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
			STEP(&t, "250 2.1.5 ok\r\n", "RCPT TO:<bob@example.test>\r\n");
			STEP(&t, "450 4.2.0 greylisted\r\n", "RCPT TO:<carol@example.test>\r\n");
			STEP(&t, "550 5.1.1 unknown\r\n", "DATA\r\n");
		}
		STEP(&t, "354 go\r\n", "m\r\n.\r\n");
		assert_int_equal(t.ncb, 0);
		STEP(&t, "250 2.0.0 ok\r\n", "");
		assert_int_equal(t.ncb, 1);
		assert_int_equal(t.err, SMTP_CLIENT_ERR_NONE);
		want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
		want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 450, "4.2.0", SMTP_CLIENT_STAGE_RCPT);
		want_rcpt(&t, 2, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
		assert_string_equal(t.res[1].reply.text, "greylisted");
		stop(&t);
	}
}

/* The final reply applies to every accepted recipient; DATA refused too. */
static void
test_final_reply_refused(void **state)
{
	struct t t;

	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 2);
	send_msg(&t, "m\r\n");
	free(take(&t));
	smtp_client_process(t.c);
	free(take(&t));
	STEP(&t, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n", "m\r\n.\r\n");
	STEP(&t, "552 5.3.4 too big for us\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 552, "5.3.4", SMTP_CLIENT_STAGE_DOT);
	want_rcpt(&t, 1, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	/* DATA itself refused with 451: accepted ones temporary */
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n250 ok\r\n250 ok\r\n451 4.3.0 later\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 451, "4.3.0", SMTP_CLIENT_STAGE_DATA);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 451, "4.3.0", SMTP_CLIENT_STAGE_DATA);
	/* the next transaction resets the one DATA left open */
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "RSET\r\nMAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
	stop(&t);
}

/* MAIL refused: it decides every recipient. */
static void
test_mail_refused(void **state)
{
	struct t t;

	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 2);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "553 5.1.8 bad sender\r\n", "");
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 553, "5.1.8", SMTP_CLIENT_STAGE_MAIL);
	want_rcpt(&t, 1, SMTP_CLIENT_PERMFAIL, 553, "5.1.8", SMTP_CLIENT_STAGE_MAIL);
	/* no transaction open: no RSET */
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	stop(&t);

	/* pipelined: the RCPT (503) and DATA replies are read and ignored */
	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "451 4.3.0 try later\r\n503 5.5.1 need MAIL\r\n", "");
	assert_int_equal(t.ncb, 0);
	STEP(&t, "503 5.5.1 need MAIL\r\n", "");
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 451, "4.3.0", SMTP_CLIENT_STAGE_MAIL);
	stop(&t);
}

static void
test_all_rcpt_refused(void **state)
{
	struct t t;

	/* without PIPELINING: no DATA, and RSET before the next MAIL */
	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 2);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "550 5.1.1 no\r\n", "RCPT TO:<bob@example.test>\r\n");
	STEP(&t, "450 4.1.1 later\r\n", "");
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 450, "4.1.1", SMTP_CLIENT_STAGE_RCPT);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "RSET\r\n");
	STEP(&t, "250 ok\r\n", "MAIL FROM:<sender@client.test>\r\n");
	stop(&t);

	/* ...or QUIT instead */
	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 1);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "550 5.1.1 no\r\n", "");
	smtp_client_quit(t.c);
	STEP(&t, NULL, "QUIT\r\n");
	STEP(&t, "221 bye\r\n", "");
	assert_true(t.closed);
	stop(&t);

	/* with PIPELINING: DATA went out; its refusal ends it, no content */
	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n", "");
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	/* RFC 2920 3.1: a server that says 354 anyway gets "." alone */
	send_msg(&t, "m\r\n");
	STEP(&t, NULL, "RSET\r\nMAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n", ".\r\n");
	assert_int_equal(t.ncb, 1);
	STEP(&t, "250 ok\r\n", "");     /* delivered to nobody */
	assert_int_equal(t.ncb, 2);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	stop(&t);
}

/* ------------------------------------------------------------------ */
/* checks made before sending */

static void
test_size_too_big(void **state)
{
	struct t t;
	char body[64];

	start(&t);
	greet(&t, "250-mx\r\n250 SIZE 20\r\n");
	add_rcpts(&t, 2);
	memset(body, 'a', 30);
	memcpy(body + 30, "\r\n", 3);
	send_msg(&t, body);
	STEP(&t, NULL, "");       /* no MAIL at all */
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 0, "5.3.4", SMTP_CLIENT_STAGE_LOCAL);
	want_rcpt(&t, 1, SMTP_CLIENT_PERMFAIL, 0, "5.3.4", SMTP_CLIENT_STAGE_LOCAL);
	assert_non_null(strstr(t.res[0].reply.text, "size"));
	assert_true(smtp_client_idle(t.c));
	/* a small one goes, with SIZE= */
	send_msg(&t, "small\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test> SIZE=7\r\n");
	stop(&t);
}

static void
test_smtputf8(void **state)
{
	struct t t;

	/* UTF-8 address, peer without SMTPUTF8: 5.6.7, nothing sent */
	start(&t);
	greet(&t, "250-mx\r\n250 8BITMIME\r\n");
	t.env.smtputf8 = true;
	envelope_add_rcpt(&t.env, "j\xc3\xb6rg@example.test", NULL, 0);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.7", SMTP_CLIENT_STAGE_LOCAL);
	stop(&t);

	/* UTF-8 in the header of an SMTPUTF8 message: needed too */
	start(&t);
	greet(&t, "250-mx\r\n250 8BITMIME\r\n");
	t.env.smtputf8 = true;
	add_rcpts(&t, 1);
	send_msg(&t, "Subject: gr\xc3\xbc\xc3\x9f\x65\r\n\r\nx\r\n");
	STEP(&t, NULL, "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.7", SMTP_CLIENT_STAGE_LOCAL);
	stop(&t);

	/* SMTPUTF8 asked for, but all ASCII: sent without (RFC 6531 3.4) */
	start(&t);
	greet(&t, "250-mx\r\n250 8BITMIME\r\n");
	t.env.smtputf8 = true;
	add_rcpts(&t, 1);
	send_msg(&t, "Subject: plain\r\n\r\nx\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	stop(&t);

	/* offered: the parameter goes out */
	start(&t);
	greet(&t, "250-mx\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
	t.env.smtputf8 = true;
	envelope_add_rcpt(&t.env, "j\xc3\xb6rg@example.test", NULL, 0);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test> SMTPUTF8\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<j\xc3\xb6rg@example.test>\r\n");
	stop(&t);
}

static void
test_8bit(void **state)
{
	struct t t;

	/* 8-bit content, peer without 8BITMIME: 5.6.3 (our documented
	 * choice: no conversion, no sending anyway) */
	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "Subject: x\r\n\r\ncaf\xc3\xa9\r\n");
	STEP(&t, NULL, "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 0, "5.6.3", SMTP_CLIENT_STAGE_LOCAL);
	/* marked 8BITMIME but 7-bit clean: sent, without BODY= */
	t.env.body = ENVELOPE_BODY_8BITMIME;
	send_msg(&t, "Subject: x\r\n\r\ncafe\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	stop(&t);

	/* peer with 8BITMIME: BODY=8BITMIME for 8-bit content or the mark */
	start(&t);
	greet(&t, "250-mx\r\n250 8BITMIME\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "caf\xc3\xa9\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test> BODY=8BITMIME\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "250 ok\r\n", "DATA\r\n");
	STEP(&t, "354 go\r\n", "caf\xc3\xa9\r\n.\r\n");
	STEP(&t, "250 ok\r\n", "");
	send_msg(&t, "plain\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	stop(&t);
}

static void
test_dsn_params(void **state)
{
	struct t t;

	for (int offered = 0; offered < 2; offered++) {
		start(&t);
		greet(&t, offered ? "250-mx\r\n250-DSN\r\n250 PIPELINING\r\n" :
		    "250-mx\r\n250 PIPELINING\r\n");
		t.env.ret = ENVELOPE_RET_HDRS;
		envelope_set(&t.env.envid, "QQ+2Bxyz");
		envelope_add_rcpt(&t.env, "alice@example.test",
		    "rfc822;Alice+2Bx@Example.test", ENVELOPE_NOTIFY_SUCCESS |
		    ENVELOPE_NOTIFY_FAILURE);
		envelope_add_rcpt(&t.env, "bob@example.test", NULL,
		    ENVELOPE_NOTIFY_NEVER);
		envelope_add_rcpt(&t.env, "carol@example.test", NULL, ENVELOPE_NOTIFY_DELAY);
		/* a stored ORCPT that is not valid is never passed on */
		envelope_add_rcpt(&t.env, "dave@example.test", "rfc822;a b", 0);
		send_msg(&t, "x\r\n");
		if (offered)
			STEP(&t, NULL,
			    "MAIL FROM:<sender@client.test> RET=HDRS ENVID=QQ+2Bxyz\r\n"
			    "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE "
			    "ORCPT=rfc822;Alice+2Bx@Example.test\r\n"
			    "RCPT TO:<bob@example.test> NOTIFY=NEVER "
			    "ORCPT=rfc822;bob@example.test\r\n"
			    "RCPT TO:<carol@example.test> NOTIFY=DELAY "
			    "ORCPT=rfc822;carol@example.test\r\n"
			    "RCPT TO:<dave@example.test>\r\n"
			    "DATA\r\n");
		else
			/* RFC 3461 5.2.2 (a): none of them */
			STEP(&t, NULL,
			    "MAIL FROM:<sender@client.test>\r\n"
			    "RCPT TO:<alice@example.test>\r\n"
			    "RCPT TO:<bob@example.test>\r\n"
			    "RCPT TO:<carol@example.test>\r\n"
			    "RCPT TO:<dave@example.test>\r\n"
			    "DATA\r\n");
		STEP(&t, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
		    "x\r\n.\r\n");
		STEP(&t, "250 ok\r\n", "");
		assert_int_equal(t.peer_dsn, offered);
		stop(&t);
	}
}

/* Addresses that cannot go on a command line are refused locally. */
static void
test_bad_addresses(void **state)
{
	struct t t;

	start(&t);
	greet(&t, EHLO_BARE);
	envelope_add_rcpt(&t.env, "alice@example.test\r\nDATA", NULL, 0);
	envelope_add_rcpt(&t.env, "bob@example.test", NULL, 0);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<bob@example.test>\r\n");
	STEP(&t, "250 ok\r\n", "DATA\r\n");
	STEP(&t, "354 go\r\n", "x\r\n.\r\n");
	STEP(&t, "250 ok\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 0, "5.1.3", SMTP_CLIENT_STAGE_LOCAL);
	want_rcpt(&t, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	envelope_set(&t.env.sender, "a b@c");
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "");
	want_rcpt(&t, 1, SMTP_CLIENT_PERMFAIL, 0, "5.1.7", SMTP_CLIENT_STAGE_LOCAL);
	/* the null reverse-path is fine */
	envelope_set(&t.env.sender, "");
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<>\r\n");
	stop(&t);
}

/* ------------------------------------------------------------------ */
/* content */

/* body as stored -> what goes on the wire after "354" */
static const struct {
	const char *name;
	const char *body;
	const char *wire;
} body_cases[] = {
	{ "plain", "a\r\nb\r\n", "a\r\nb\r\n.\r\n" },
	{ "empty", "", ".\r\n" },
	{ "dot lines", ".\r\n..\r\n.x\r\n", "..\r\n...\r\n..x\r\n.\r\n" },
	{ "no final CRLF", "a\r\nlast", "a\r\nlast\r\n.\r\n" },
	{ "last line a dot, no CRLF", "a\r\n.", "a\r\n..\r\n.\r\n" },
	{ "smuggle LF.LF", "a\n.\nMAIL FROM:<x@y>\n", "a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n" },
	{ "smuggle CR.CR", "a\r.\rRSET\r", "a\r\n..\r\nRSET\r\n.\r\n" },
	{ "smuggle CRLF.LF", "a\r\n.\nb", "a\r\n..\r\nb\r\n.\r\n" },
	{ "smuggle LF.CRLF", "a\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n" },
	{ "smuggle CRLF.CR", "a\r\n.\rb\r\n", "a\r\n..\r\nb\r\n.\r\n" },
	{ "CR CR LF", "a\r\r\nb\r\n", "a\r\n\r\nb\r\n" ".\r\n" },
	{ "trailing CR", "a\r", "a\r\n.\r\n" },
	{ "leading LF", "\nx", "\r\nx\r\n.\r\n" },
	{ "embedded end", "x\r\n.\r\ny\r\n", "x\r\n..\r\ny\r\n.\r\n" },
	{ "NUL kept", "a\0b\r\n", "a\0b\r\n.\r\n" },
};

static void
test_body_encoding(void **state)
{
	for (size_t i = 0; i < nitems(body_cases); i++) {
		struct t t;
		const char *b = body_cases[i].body;
		size_t blen = strcmp(body_cases[i].name, "NUL kept") == 0 ? 5 : strlen(b);
		size_t wlen = strcmp(body_cases[i].name, "NUL kept") == 0 ? 8 :
		    strlen(body_cases[i].wire);

		start(&t);
		greet(&t, "250-mx\r\n250 PIPELINING\r\n");
		add_rcpts(&t, 1);
		assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, b, blen,
		    on_result, &t), 0);
		STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
		    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
		evbuffer_add(t.in, "250 ok\r\n250 ok\r\n354 go\r\n", 24);
		smtp_client_process(t.c);
		size_t n = evbuffer_get_length(t.out);
		char *got = take(&t);
		if (n != wlen || memcmp(got, body_cases[i].wire, wlen) != 0)
			fail_msg("%s: got \"%s\" (%zu octets)", body_cases[i].name, got, n);
		free(got);
		STEP(&t, "250 ok\r\n", "");
		want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
		stop(&t);
	}
}

/* Reference encoder for the streaming test: one octet at a time. */
static size_t
ref_encode(const char *p, size_t n, char *out)
{
	size_t o = 0;
	bool bol = true;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' || p[i] == '\n') {
			if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
				i++;
			out[o++] = '\r';
			out[o++] = '\n';
			bol = true;
			continue;
		}
		if (bol && p[i] == '.')
			out[o++] = '.';
		out[o++] = p[i];
		bol = false;
	}
	if (!bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

/* A large message goes out in bounded pieces, as the output drains. */
static void
test_body_streaming(void **state)
{
	const size_t high = 4096, n = 300000;
	char *body = malloc(n), *want = malloc(2 * n + 8);
	struct evbuffer *wire = evbuffer_new();
	struct t t;
	unsigned seed = 7;

	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245 + 12345;
		unsigned r = (seed >> 16) % 40;
		body[i] = r == 0 ? '\r' : r == 1 ? '\n' : r < 5 ? '.' : (char)('a' + r % 26);
	}
	size_t wlen = ref_encode(body, n, want);

	start_p(&t, high);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 1);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, body, n,
	    on_result, &t), 0);
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "250 ok\r\n", "DATA\r\n");
	evbuffer_add(t.in, "354 go\r\n", 8);
	int rounds = 0;
	for (;;) {
		t.ntimeouts = 0;
		smtp_client_process(t.c);
		size_t got = evbuffer_get_length(t.out);
		if (got == 0)
			break;
		/* never much more than the high-water mark at once */
		assert_true(got <= high + 8192 + 16);
		/* each block of content restarts the 3 minute timer */
		assert_true(t.ntimeouts >= 1);
		evbuffer_remove_buffer(t.out, wire, got);
		rounds++;
	}
	assert_true(rounds > 50);
	assert_int_equal(evbuffer_get_length(wire), wlen);
	assert_memory_equal(evbuffer_pullup(wire, -1), want, wlen);
	assert_int_equal(t.timeout, 600);
	STEP(&t, "250 ok\r\n", "");
	assert_int_equal(t.ncb, 1);
	stop(&t);
	evbuffer_free(wire);
	free(body);
	free(want);
}

/* ------------------------------------------------------------------ */
/* connection reuse */

static void
next_from_cb(void *arg, const struct smtp_client_result *res)
{
	struct t *t = arg;

	on_result(arg, res);
	if (t->next_body != NULL) {
		const char *b = t->next_body;
		t->next_body = NULL;
		assert_int_equal(smtp_client_send(t->c, &t->env, idx_all + 1, 1, b,
		    strlen(b), next_from_cb, t), 0);
	} else {
		smtp_client_quit(t->c);
	}
}

static void
test_reuse(void **state)
{
	struct t t;

	start(&t);
	greet(&t, "250-mx\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
	add_rcpts(&t, 2);
	t.next_body = "second\r\n";
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, "first\r\n", 7,
	    next_from_cb, &t), 0);
	/* a second send while one runs is refused */
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, "x", 1,
	    on_result, &t), -1);
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n250 ok\r\n354 go\r\n", "first\r\n.\r\n");
	/* the callback starts the next message: no RSET after a complete one */
	STEP(&t, "250 2.0.0 first\r\n", "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nDATA\r\n");
	assert_int_equal(t.ncb, 1);
	want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	STEP(&t, "250 ok\r\n250 ok\r\n354 go\r\n", "second\r\n.\r\n");
	/* its callback quits */
	STEP(&t, "250 2.0.0 second\r\n", "QUIT\r\n");
	assert_int_equal(t.ncb, 2);
	assert_int_equal(t.res[0].rcpt, 1);
	assert_string_equal(t.res[0].reply.text, "second");
	STEP(&t, "221 bye\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_NONE);
	stop(&t);
}

/* ------------------------------------------------------------------ */
/* hostile and broken servers */

static void
test_malformed_replies(void **state)
{
	static const struct {
		const char *name;
		const char *reply;
	} cases[] = {
		{ "letter in code", "25O ok\r\n" },
		{ "code 199", "199 x\r\n" },
		{ "code 650", "650 x\r\n" },
		{ "code 260", "260 x\r\n" },
		{ "four digits", "2500 x\r\n" },
		{ "short", "25\r\n" },
		{ "empty line", "\r\n" },
		{ "bad separator", "250_ok\r\n" },
		{ "code changes", "250-a\r\n251 b\r\n" },
		{ "class changes", "250-a\r\n550 b\r\n" },
		{ "text only", "hello there\r\n" },
		{ "354 to MAIL", "354 go ahead\r\n" },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct t t;
		start(&t);
		greet(&t, EHLO_BARE);
		add_rcpts(&t, 1);
		send_msg(&t, "x\r\n");
		STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
		STEP(&t, cases[i].reply, "");
		if (!t.closed || t.close_why != SMTP_CLIENT_ERR_PROTOCOL || t.ncb != 1)
			fail_msg("%s: closed %d why %d ncb %d", cases[i].name,
			    t.closed, t.close_why, t.ncb);
		assert_int_equal(t.err, SMTP_CLIENT_ERR_PROTOCOL);
		want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0", SMTP_CLIENT_STAGE_MAIL);
		/* nothing more is read or written */
		STEP(&t, "250 ok\r\n", "");
		stop(&t);
	}
}

static void
test_long_replies(void **state)
{
	struct t t;
	char *buf = malloc(200 * 16 + SMTP_CLIENT_LINE_MAX + 16);

	/* a line longer than SMTP_CLIENT_LINE_MAX, never ended */
	start(&t);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	memcpy(buf, "220 ", 4);
	memset(buf + 4, 'a', SMTP_CLIENT_LINE_MAX);
	buf[SMTP_CLIENT_LINE_MAX + 4] = '\0';
	STEP(&t, buf, "");
	assert_true(t.closed);
	/* a garbage greeting is a failed connection */
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_GREETING);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0", SMTP_CLIENT_STAGE_GREETING);
	assert_int_equal(evbuffer_get_length(t.in), 0);  /* not buffered */
	stop(&t);

	/* one just within the limit is fine, and its text is bounded */
	start(&t);
	memcpy(buf, "220 ", 4);
	memset(buf + 4, 'b', SMTP_CLIENT_LINE_MAX - 6);
	memcpy(buf + SMTP_CLIENT_LINE_MAX - 2, "\r\n", 3);
	STEP(&t, buf, "EHLO client.test\r\n");
	assert_int_equal(strlen(smtp_client_last_reply(t.c)->text),
	    SMTP_CLIENT_TEXT_MAX - 1);
	/* too many lines in one reply */
	size_t o = 0;
	for (int i = 0; i < SMTP_CLIENT_REPLY_LINES_MAX + 1; i++, o += 13)
		memcpy(buf + o, "250-KEYWORD\r\n", 13);
	buf[o] = '\0';
	STEP(&t, buf, "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_PROTOCOL);
	stop(&t);
	free(buf);
}

/* Reply text: printable ASCII only, lines joined, enhanced code once. */
static void
test_reply_text(void **state)
{
	struct t t;

	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 2);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "550-5.1.1 The account\r\n550-5.1.1 does\tnot\r\n"
	    "550 5.1.1 exist\x01\x1b[31m\xff\r\n", "RCPT TO:<bob@example.test>\r\n");
	STEP(&t, "452 too many\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	assert_string_equal(t.res[0].reply.text, "The account does not exist??[31m?");
	/* no enhanced code: derived from the class */
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 452, "4.0.0", SMTP_CLIENT_STAGE_RCPT);
	assert_string_equal(t.res[1].reply.text, "too many");
	stop(&t);
}

static void
test_421_mid_session(void **state)
{
	struct t t;

	/* 421 to a RCPT: that one and the rest temporary, connection over */
	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 3);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	STEP(&t, "550 5.1.1 no\r\n", "RCPT TO:<bob@example.test>\r\n");
	STEP(&t, "421 4.3.2 shutting down\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_SHUTDOWN);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_SHUTDOWN);
	want_rcpt(&t, 0, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2", SMTP_CLIENT_STAGE_RCPT);
	want_rcpt(&t, 2, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2", SMTP_CLIENT_STAGE_RCPT);
	stop(&t);

	/* 421 to the final ".": accepted recipients temporary */
	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n250 ok\r\n354 go\r\n", "x\r\n.\r\n");
	STEP(&t, "421 4.4.2 timeout\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 421, "4.4.2", SMTP_CLIENT_STAGE_DOT);
	stop(&t);

	/* 421 while idle: the server timed us out */
	start(&t);
	greet(&t, EHLO_BARE);
	STEP(&t, "421 4.4.2 idle too long\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_SHUTDOWN);
	assert_int_equal(t.ncb, 0);
	stop(&t);

	/* any other unsolicited reply breaks the count */
	start(&t);
	greet(&t, EHLO_BARE);
	STEP(&t, "250 surprise\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_PROTOCOL);
	stop(&t);
}

/* A reply while the content is going out: never "delivered". */
static void
test_reply_during_body(void **state)
{
	struct t t;
	char *body = malloc(100000);

	memset(body, 'a', 100000);
	for (size_t i = 70; i < 100000; i += 72)
		memcpy(body + i, "\r\n", 2);
	start_p(&t, 4096);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 1, body, 100000,
	    on_result, &t), 0);
	smtp_client_process(t.c);
	free(take(&t));
	evbuffer_add(t.in, "250 ok\r\n250 ok\r\n354 go\r\n", 24);
	smtp_client_process(t.c);
	assert_int_equal(t.timeout, 180);           /* 4.5.3.2.5 data block */
	free(take(&t));
	STEP(&t, "250 2.0.0 queued\r\n", "");
	assert_true(t.closed);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_PROTOCOL);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0", SMTP_CLIENT_STAGE_BODY);
	stop(&t);
	free(body);
}

static void
test_lost_connection(void **state)
{
	struct t t;
	char *body = malloc(100000);

	memset(body, 'a', 100000);
	for (size_t i = 70; i < 100000; i += 72)
		memcpy(body + i, "\r\n", 2);

	/* in the middle of DATA */
	start_p(&t, 4096);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 2);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 2, body, 100000,
	    on_result, &t), 0);
	smtp_client_process(t.c);
	free(take(&t));
	evbuffer_add(t.in, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n", 39);
	smtp_client_process(t.c);
	free(take(&t));
	smtp_client_eof(t.c);
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_LOST);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_LOST);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2", SMTP_CLIENT_STAGE_BODY);
	want_rcpt(&t, 1, SMTP_CLIENT_PERMFAIL, 550, "5.1.1", SMTP_CLIENT_STAGE_RCPT);
	stop(&t);

	/* after the final ".": temporary, and the text says why it matters */
	start(&t);
	greet(&t, "250-mx\r\n250 PIPELINING\r\n");
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nDATA\r\n");
	STEP(&t, "250 ok\r\n250 ok\r\n354 go\r\n", "x\r\n.\r\n");
	smtp_client_eof(t.c);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2", SMTP_CLIENT_STAGE_DOT);
	assert_non_null(strstr(t.res[0].reply.text, "delivered twice"));
	stop(&t);

	/* a last 421 before the close is honoured */
	start(&t);
	greet(&t, EHLO_BARE);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	evbuffer_add(t.in, "421 4.3.2 bye\r\n", 15);
	smtp_client_eof(t.c);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_SHUTDOWN);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 421, "4.3.2", SMTP_CLIENT_STAGE_MAIL);
	stop(&t);

	/* EOF after QUIT is the normal end */
	start(&t);
	greet(&t, EHLO_BARE);
	smtp_client_quit(t.c);
	STEP(&t, NULL, "QUIT\r\n");
	smtp_client_eof(t.c);
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_NONE);
	stop(&t);
	free(body);
}

/* RFC 5321 4.5.3.2: the timer the engine asks for at each step. */
static void
test_timeouts(void **state)
{
	struct t t;

	start(&t);
	assert_int_equal(t.timeout, 300);
	STEP(&t, "220 mx\r\n", "EHLO client.test\r\n");
	assert_int_equal(t.timeout, 300);
	STEP(&t, EHLO_BARE, "");
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\n");
	assert_int_equal(t.timeout, 300);           /* MAIL */
	STEP(&t, "250 ok\r\n", "RCPT TO:<alice@example.test>\r\n");
	assert_int_equal(t.timeout, 300);           /* RCPT */
	STEP(&t, "250 ok\r\n", "DATA\r\n");
	assert_int_equal(t.timeout, 120);           /* DATA initiation */
	STEP(&t, "354 go\r\n", "x\r\n.\r\n");
	assert_int_equal(t.timeout, 600);           /* DATA termination */
	smtp_client_timeout(t.c);
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_TIMEOUT);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2", SMTP_CLIENT_STAGE_DOT);
	stop(&t);

	/* configured values replace the defaults; a greeting that never
	 * comes times out as a failed connection attempt */
	memset(&t, 0, sizeof(t));
	start(&t);
	smtp_client_free(&t.c);
	t.params.timeouts.greeting = 7;
	t.c = smtp_client_new(&t.params, t.in, t.out, &test_io, &t);
	smtp_client_start(t.c);
	assert_int_equal(t.timeout, 7);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	smtp_client_timeout(t.c);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_TIMEOUT);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.4.2", SMTP_CLIENT_STAGE_GREETING);
	stop(&t);
}

/* ------------------------------------------------------------------ */
/* AUTH (RFC 4954) */

#define AUTH_PLAIN_IR "AHRlcm4AczNjcmV0IHB3"   /* "\0tern\0s3cret pw" */

static void
auth_start(struct t *t)
{
	start(t);
	t->params.auth_user = "tern";
	t->params.auth_password = "s3cret pw";
	t->params.auth_plaintext = true;
	add_rcpts(t, 2);
	send_msg(t, "x\r\n");
}

static void
test_auth_plain_ok(void **state)
{
	struct t t;

	auth_start(&t);
	const struct exch x[] = {
		{ "220 relay.test ESMTP\r\n", "EHLO client.test\r\n" },
		/* PLAIN preferred over LOGIN, with the initial response */
		{ "250-relay.test\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n",
		  "AUTH PLAIN " AUTH_PLAIN_IR "\r\n" },
		{ "235 2.7.0 Authentication successful\r\n",
		  "MAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@example.test>\r\n"
		  "RCPT TO:<bob@example.test>\r\nDATA\r\n" },
		{ "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "x\r\n.\r\n" },
		{ "250 2.0.0 queued\r\n", "" },
	};
	SCRIPT(&t, x);
	assert_int_equal(t.ncb, 1);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_NONE);
	want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	want_rcpt(&t, 1, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	/* authenticated once per connection: the next one goes straight on */
	assert_true(smtp_client_idle(t.c));
	send_msg(&t, "y\r\n");
	STEP(&t, NULL, "MAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nDATA\r\n");
	stop(&t);
}

static void
test_auth_login_ok(void **state)
{
	struct t t;

	auth_start(&t);
	const struct exch x[] = {
		{ "220 relay.test ESMTP\r\n", "EHLO client.test\r\n" },
		{ "250-relay.test\r\n250 AUTH=LOGIN\r\n", "AUTH LOGIN\r\n" },
		{ "334 VXNlcm5hbWU6\r\n", "dGVybg==\r\n" },
		{ "334 UGFzc3dvcmQ6\r\n", "czNjcmV0IHB3\r\n" },
		{ "235 2.7.0 ok\r\n", "MAIL FROM:<sender@client.test>\r\n" },
	};
	SCRIPT(&t, x);
	assert_int_equal(t.ncb, 0);
	assert_int_equal(t.timeout, 300);
	stop(&t);
}

/* 535: the credentials are wrong; only the administrator can fix that. */
static void
test_auth_535(void **state)
{
	struct t t;

	auth_start(&t);
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN\r\n",
	    "AUTH PLAIN " AUTH_PLAIN_IR "\r\n");
	STEP(&t, "535 5.7.8 Authentication credentials invalid\r\n", "QUIT\r\n");
	assert_true(t.closed);
	assert_int_equal(t.close_why, SMTP_CLIENT_ERR_AUTH);
	assert_int_equal(t.ncb, 1);
	assert_int_equal(t.err, SMTP_CLIENT_ERR_AUTH);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 535, "5.7.8", SMTP_CLIENT_STAGE_AUTH);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 535, "5.7.8", SMTP_CLIENT_STAGE_AUTH);
	assert_string_equal(t.res[0].reply.text, "Authentication credentials invalid");
	stop(&t);

	/* a 4xx is temporary; a 5xx to the LOGIN password too is final */
	auth_start(&t);
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN\r\n",
	    "AUTH PLAIN " AUTH_PLAIN_IR "\r\n");
	STEP(&t, "454 4.7.0 Temporary authentication failure\r\n", "QUIT\r\n");
	assert_int_equal(t.err, SMTP_CLIENT_ERR_AUTH);
	want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 454, "4.7.0", SMTP_CLIENT_STAGE_AUTH);
	stop(&t);

	auth_start(&t);
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH LOGIN\r\n", "AUTH LOGIN\r\n");
	STEP(&t, "334 VXNlcm5hbWU6\r\n", "dGVybg==\r\n");
	STEP(&t, "334 UGFzc3dvcmQ6\r\n", "czNjcmV0IHB3\r\n");
	STEP(&t, "535 5.7.8 no\r\n", "QUIT\r\n");
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 535, "5.7.8", SMTP_CLIENT_STAGE_AUTH);
	stop(&t);

	/* a challenge after the initial response: nothing to answer */
	auth_start(&t);
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN\r\n",
	    "AUTH PLAIN " AUTH_PLAIN_IR "\r\n");
	STEP(&t, "334 \r\n", "");
	assert_int_equal(t.err, SMTP_CLIENT_ERR_PROTOCOL);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.5.0", SMTP_CLIENT_STAGE_AUTH);
	stop(&t);
}

/* Credentials but no usable mechanism: temporary 4.7.0, nothing sent. */
static void
test_auth_no_mechanism(void **state)
{
	static const char *const ehlo[] = {
		"250-relay.test\r\n250 AUTH CRAM-MD5\r\n",
		"250 relay.test\r\n",
	};

	for (size_t i = 0; i < nitems(ehlo); i++) {
		struct t t;

		auth_start(&t);
		STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
		STEP(&t, ehlo[i], "QUIT\r\n");
		assert_true(t.closed);
		assert_int_equal(t.err, SMTP_CLIENT_ERR_AUTH);
		want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0", SMTP_CLIENT_STAGE_AUTH);
		want_rcpt(&t, 1, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0", SMTP_CLIENT_STAGE_AUTH);
		assert_non_null(strstr(t.res[0].reply.text,
		    "smarthost offers no AUTH PLAIN/LOGIN"));
		stop(&t);
	}
	/* HELO (EHLO refused): no AUTH possible either */
	struct t t;
	auth_start(&t);
	STEP(&t, "220 relay.test\r\n", "EHLO client.test\r\n");
	STEP(&t, "502 no\r\n", "HELO client.test\r\n");
	STEP(&t, "250 relay.test\r\n", "QUIT\r\n");
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0", SMTP_CLIENT_STAGE_AUTH);
	stop(&t);
}

/* Without credentials, an offered AUTH is never used. */
static void
test_auth_not_configured(void **state)
{
	struct t t;

	start(&t);
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n",
	    "MAIL FROM:<sender@client.test>\r\n");
	stop(&t);
}

/* RFC 3207: STARTTLS when offered, then EHLO again on the new buffers,
 * and nothing read in clear text after the 220 counts. */
static void
test_starttls_may(void **state)
{
	struct t t;

	start(&t);
	t.params.tls = SMTP_CLIENT_TLS_MAY;
	add_rcpts(&t, 1);
	send_msg(&t, "x\r\n");
	STEP(&t, "220 mx.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, EHLO_FULL, "STARTTLS\r\n");
	assert_int_equal(t.nstarttls, 0);
	/* an injected reply after the 220 must not be read by the engine */
	STEP(&t, "220 2.0.0 go ahead\r\n250 injected\r\n", "");
	assert_int_equal(t.nstarttls, 1);
	assert_false(smtp_client_tls_active(t.c));
	assert_int_equal(smtp_client_caps(t.c, NULL), 0);   /* forgotten */
	assert_int_equal(t.timeout, 300);                   /* handshake bound */
	tls_up(&t);
	assert_true(smtp_client_tls_active(t.c));
	STEP(&t, NULL, "EHLO client.test\r\n");
	STEP(&t, "250-mx.test\r\n250 PIPELINING\r\n",
	    "MAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "DATA\r\n");
	assert_int_equal(smtp_client_caps(t.c, NULL),
	    SMTP_CLIENT_CAP_ESMTP | SMTP_CLIENT_CAP_PIPELINING);
	STEP(&t, "250 ok\r\n250 ok\r\n354 go\r\n", "x\r\n.\r\n");
	STEP(&t, "250 2.0.0 queued\r\n", "");
	want_rcpt(&t, 0, SMTP_CLIENT_DELIVERED, 250, "2.0.0", SMTP_CLIENT_STAGE_DOT);
	assert_int_equal(t.nstarttls, 1);   /* once only */
	stop(&t);
}

/* Opportunistic: no STARTTLS offered, or refused: clear text. */
static void
test_starttls_may_fallback(void **state)
{
	struct t t;

	start(&t);
	t.params.tls = SMTP_CLIENT_TLS_MAY;
	STEP(&t, "220 mx.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, EHLO_BARE, "");
	assert_true(smtp_client_idle(t.c));
	assert_int_equal(t.nstarttls, 0);
	stop(&t);

	start(&t);
	t.params.tls = SMTP_CLIENT_TLS_MAY;
	STEP(&t, "220 mx.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, EHLO_FULL, "STARTTLS\r\n");
	STEP(&t, "454 4.7.0 TLS not available\r\n", "");
	assert_true(smtp_client_idle(t.c));
	assert_int_equal(t.nstarttls, 0);
	assert_false(smtp_client_tls_active(t.c));
	stop(&t);
}

/* Required: not offered, refused, or a failed handshake end it all. */
static void
test_starttls_must(void **state)
{
	static const char *const after_ehlo[] = { EHLO_BARE, EHLO_FULL };

	for (size_t i = 0; i < 3; i++) {
		struct t t;

		start(&t);
		t.params.tls = SMTP_CLIENT_TLS_MUST;
		add_rcpts(&t, 2);
		send_msg(&t, "x\r\n");
		STEP(&t, "220 mx.test ESMTP\r\n", "EHLO client.test\r\n");
		STEP(&t, after_ehlo[i > 0], i == 0 ? "" : "STARTTLS\r\n");
		if (i == 1)
			STEP(&t, "454 4.7.0 not now\r\n", "");
		if (i == 2) {
			STEP(&t, "220 go\r\n", "");
			assert_int_equal(t.nstarttls, 1);
			smtp_client_tls_done(t.c, NULL, NULL,
			    "certificate verification failed: x");
		}
		assert_true(t.closed);
		assert_int_equal(t.close_why, SMTP_CLIENT_ERR_TLS);
		assert_int_equal(t.ncb, 1);
		assert_int_equal(t.err, SMTP_CLIENT_ERR_TLS);
		for (size_t r = 0; r < 2; r++)
			want_rcpt(&t, r, SMTP_CLIENT_TEMPFAIL, 0, "4.7.10",
			    i == 0 ? SMTP_CLIENT_STAGE_EHLO :
			    SMTP_CLIENT_STAGE_STARTTLS);
		assert_non_null(strstr(t.res[0].reply.text, i == 0 ?
		    "does not offer STARTTLS" : i == 1 ? "454" :
		    "certificate verification failed"));
		stop(&t);
	}
}

/* AUTH waits for TLS (RFC 4954 4), and without TLS is refused unless
 * auth_plaintext. */
static void
test_auth_after_tls(void **state)
{
	struct t t;

	auth_start(&t);
	t.params.auth_plaintext = false;
	t.params.tls = SMTP_CLIENT_TLS_MAY;
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n",
	    "STARTTLS\r\n");
	STEP(&t, "220 go\r\n", "");
	tls_up(&t);
	STEP(&t, NULL, "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN\r\n",
	    "AUTH PLAIN " AUTH_PLAIN_IR "\r\n");
	stop(&t);

	/* no STARTTLS offered: the password stays here */
	auth_start(&t);
	t.params.auth_plaintext = false;
	t.params.tls = SMTP_CLIENT_TLS_MAY;
	STEP(&t, "220 relay.test ESMTP\r\n", "EHLO client.test\r\n");
	STEP(&t, "250-relay.test\r\n250 AUTH PLAIN\r\n", "QUIT\r\n");
	assert_int_equal(t.err, SMTP_CLIENT_ERR_AUTH);
	want_rcpt(&t, 0, SMTP_CLIENT_TEMPFAIL, 0, "4.7.0", SMTP_CLIENT_STAGE_AUTH);
	assert_non_null(strstr(t.res[0].reply.text, "clear text"));
	stop(&t);
}

static void
test_send_misuse(void **state)
{
	struct t t;
	size_t bad = 5;

	start(&t);
	add_rcpts(&t, 1);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all, 0, "", 0,
	    on_result, &t), -1);
	assert_int_equal(smtp_client_send(t.c, &t.env, &bad, 1, "", 0,
	    on_result, &t), -1);
	assert_int_equal(smtp_client_send(t.c, &t.env, idx_all,
	    SMTP_CLIENT_RCPTS_MAX + 1, "", 0, on_result, &t), -1);
	/* quit before the greeting: hang up, nothing written */
	smtp_client_quit(t.c);
	assert_true(t.closed);
	assert_int_equal(evbuffer_get_length(t.out), 0);
	stop(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ehlo_ok),
		cmocka_unit_test(test_starttls_may),
		cmocka_unit_test(test_starttls_may_fallback),
		cmocka_unit_test(test_starttls_must),
		cmocka_unit_test(test_auth_after_tls),
		cmocka_unit_test(test_ehlo_keywords),
		cmocka_unit_test(test_ehlo_5xx_helo),
		cmocka_unit_test(test_helo_refused),
		cmocka_unit_test(test_greeting_554),
		cmocka_unit_test(test_reply_3xx),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_no_pipelining),
		cmocka_unit_test(test_mixed_rcpt),
		cmocka_unit_test(test_final_reply_refused),
		cmocka_unit_test(test_mail_refused),
		cmocka_unit_test(test_all_rcpt_refused),
		cmocka_unit_test(test_size_too_big),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_8bit),
		cmocka_unit_test(test_dsn_params),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_body_encoding),
		cmocka_unit_test(test_body_streaming),
		cmocka_unit_test(test_reuse),
		cmocka_unit_test(test_malformed_replies),
		cmocka_unit_test(test_long_replies),
		cmocka_unit_test(test_reply_text),
		cmocka_unit_test(test_421_mid_session),
		cmocka_unit_test(test_reply_during_body),
		cmocka_unit_test(test_lost_connection),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_send_misuse),
		cmocka_unit_test(test_auth_plain_ok),
		cmocka_unit_test(test_auth_login_ok),
		cmocka_unit_test(test_auth_535),
		cmocka_unit_test(test_auth_no_mechanism),
		cmocka_unit_test(test_auth_not_configured),
	};

	log_set_level(LOG_LEVEL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
