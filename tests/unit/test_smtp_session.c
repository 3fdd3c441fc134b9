/*
 * test_smtp_session.c - the SMTP engine driven by transcripts, with a fake
 * queue (the engine's only way to the spool is queue_client.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "unit.h"

#include "config.h"
#include "envelope.h"
#include "queue_client.h"
#include "smtp_session.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* fake queue: answers are deferred until fake_run(), as the contract says */

struct fake_msg {
	struct envelope env;
	struct evbuffer *data;
	bool committed;
	bool aborted;
};

struct fake_queue {
	bool fail_begin;
	bool fail_commit;
	struct fake_msg msgs[16];
	int nmsgs;
	/* one pending callback at a time is all a session can have */
	queue_client_cb cb;
	void *cb_arg;
	struct queue_result res;
	char qid[QUEUE_ID_LEN + 1];
};

static void *
fake_begin(void *ctx, const struct envelope *env, queue_client_cb cb, void *arg)
{
	struct fake_queue *q = ctx;
	struct fake_msg *m;
	struct evbuffer *tmp = evbuffer_new();
	char err[128];

	assert_true(q->nmsgs < 16);
	m = &q->msgs[q->nmsgs++];
	envelope_init(&m->env);
	/* round-trip through the text form, as the IPC does */
	envelope_serialize(env, tmp);
	assert_int_equal(envelope_parse(&m->env, (const char *)evbuffer_pullup(tmp, -1),
	    evbuffer_get_length(tmp), 10000, err, sizeof(err)), 0);
	evbuffer_free(tmp);
	m->data = evbuffer_new();
	assert_null(q->cb);
	q->cb = cb;
	q->cb_arg = arg;
	snprintf(q->qid, sizeof(q->qid), "%016X", (unsigned)q->nmsgs);
	q->res.ok = !q->fail_begin;
	q->res.queue_id = q->qid;
	q->res.reply = "451 4.3.0 Error: queue file write error";
	return m;
}

static void
fake_write(void *ctx, void *txn, const void *data, size_t len)
{
	struct fake_msg *m = txn;

	evbuffer_add(m->data, data, len);
}

static void
fake_commit(void *ctx, void *txn, queue_client_cb cb, void *arg)
{
	struct fake_queue *q = ctx;
	struct fake_msg *m = txn;

	assert_null(q->cb);
	q->cb = cb;
	q->cb_arg = arg;
	m->committed = !q->fail_commit;
	q->res.ok = !q->fail_commit;
	q->res.queue_id = q->qid;
	q->res.reply = "452 4.3.1 Insufficient system storage";
}

static void
fake_abort(void *ctx, void *txn)
{
	struct fake_msg *m = txn;

	m->aborted = true;
}

static const struct queue_client_ops fake_ops = {
	.begin = fake_begin,
	.write = fake_write,
	.commit = fake_commit,
	.abort = fake_abort,
};

/* ------------------------------------------------------------------ */
/* harness */

struct t {
	struct config *cfg;
	struct evbuffer *in, *out;
	struct smtp_session *s;
	struct fake_queue q;
	struct smtp_session_client client;
	bool closed;
	unsigned timeout;
	char dir[64];
};

static void
io_set_timeout(void *arg, unsigned secs)
{
	((struct t *)arg)->timeout = secs;
}

static void
io_close(void *arg)
{
	((struct t *)arg)->closed = true;
}

static const struct smtp_session_io test_io = { .set_timeout = io_set_timeout,
	.close = io_close };

#define DEFAULT_LIMITS "max_message_size 4K\nmax_recipients 3\nmax_errors 6"

static struct config *
load_cfg(struct t *t, const char *extra)
{
	char path[128], *errors = NULL;
	FILE *f;
	struct config *cfg;

	snprintf(t->dir, sizeof(t->dir), "/tmp/tern-session-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(path, sizeof(path), "%s/tern.conf", t->dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	    "hostname mx.test\n"
	    "listen 127.0.0.1:2525\n"
	    "spool %s/spool\n"
	    "relay_networks 10.0.0.0/8\n"
	    "%s\n"
	    "domain example.test {\n"
	    "  mailbox postmaster alice bob\n"
	    "  maildir %s/mail/%%d/%%u\n"
	    "}\n", t->dir, extra ? extra : DEFAULT_LIMITS, t->dir);
	fclose(f);
	cfg = config_load(path, &errors);
	if (cfg == NULL)
		fail_msg("config: %s", errors);
	free(errors);
	unlink(path);
	return cfg;
}

static void
start(struct t *t, const char *extra, bool relay_ok)
{
	memset(t, 0, sizeof(*t));
	t->cfg = load_cfg(t, extra);
	t->in = evbuffer_new();
	t->out = evbuffer_new();
	t->client.addr = "192.0.2.1";
	t->client.port = 40000;
	t->client.relay_ok = relay_ok;
	t->s = smtp_session_new(t->cfg, &t->client, t->in, t->out, &test_io, t,
	    &fake_ops, &t->q);
	smtp_session_start(t->s);
}

static void
stop(struct t *t)
{
	smtp_session_free(&t->s);
	for (int i = 0; i < t->q.nmsgs; i++) {
		envelope_clear(&t->q.msgs[i].env);
		evbuffer_free(t->q.msgs[i].data);
	}
	evbuffer_free(t->in);
	evbuffer_free(t->out);
	config_free(&t->cfg);
	rmdir(t->dir);
}

/* fake RCPT-time domain check: answers from the domain's first label */
static smtp_domain_cb dc_cb;
static void *dc_arg;
static enum smtp_domain_verdict dc_verdict;
static int dc_handle;

static void *
dc_start(void *ctx, const char *domain, smtp_domain_cb cb, void *arg)
{
	assert_null(dc_cb);
	dc_cb = cb;
	dc_arg = arg;
	dc_verdict = strncmp(domain, "nullmx.", 7) == 0 ? SMTP_DOMAIN_NULL_MX :
	    strncmp(domain, "nxdomain.", 9) == 0 ? SMTP_DOMAIN_NXDOMAIN : SMTP_DOMAIN_OK;
	return &dc_handle;
}

static void
dc_cancel(void *ctx, void *handle)
{
	dc_cb = NULL;
}

static const struct smtp_domain_check_ops dc_ops = { dc_start, dc_cancel };

/* Deliver pending queue answers until none is left. */
static void
fake_run(struct t *t)
{
	while (dc_cb != NULL) {
		smtp_domain_cb cb = dc_cb;
		dc_cb = NULL;
		cb(dc_arg, dc_verdict);
	}
	while (t->q.cb != NULL) {
		queue_client_cb cb = t->q.cb;
		t->q.cb = NULL;
		cb(t->q.cb_arg, &t->q.res);
	}
}

/* Feed input, let the queue answer, return all output since last call. */
static char *
feed_n(struct t *t, const char *data, size_t len)
{
	size_t n;
	char *s;

	evbuffer_add(t->in, data, len);
	smtp_session_process(t->s);
	fake_run(t);
	smtp_session_process(t->s);
	fake_run(t);
	n = evbuffer_get_length(t->out);
	s = malloc(n + 1);
	evbuffer_remove(t->out, s, n);
	s[n] = '\0';
	return s;
}

static char *
feed(struct t *t, const char *data)
{
	return feed_n(t, data, strlen(data));
}

/* Assert the output equals want, then free it. */
#define EXPECT(t, input, want)                                                 \
	do {                                                                   \
		char *got_ = feed((t), (input));                               \
		if (strcmp(got_, (want)) != 0)                                 \
			fail_msg("input %s\nwant: %s\ngot:  %s", #input, (want), got_); \
		free(got_);                                                    \
	} while (0)

/* Assert the output starts with prefix. */
#define EXPECT_PREFIX(t, input, prefix)                                        \
	do {                                                                   \
		char *got_ = feed((t), (input));                               \
		if (strncmp(got_, (prefix), strlen(prefix)) != 0)              \
			fail_msg("input %s\nwant prefix: %s\ngot: %s", #input, (prefix), got_); \
		free(got_);                                                    \
	} while (0)

static void
ehlo(struct t *t)
{
	free(feed(t, ""));   /* greeting */
	char *r = feed(t, "EHLO client.test\r\n");
	assert_non_null(strstr(r, "250 CHUNKING\r\n"));
	free(r);
}

/* The stored message minus the Received: header tern prepends. */
static char *
stored_body(struct fake_msg *m)
{
	size_t n = evbuffer_get_length(m->data);
	char *all = (char *)evbuffer_pullup(m->data, -1);
	char *s = malloc(n + 1);
	memcpy(s, all, n);
	s[n] = '\0';
	assert_true(strncmp(s, "Received: from client.test", 26) == 0 ||
	    strncmp(s, "Received: from ", 15) == 0);
	/* the header ends at the first line that does not start with TAB */
	char *p = s;
	for (;;) {
		char *nl = strstr(p, "\r\n");
		assert_non_null(nl);
		p = nl + 2;
		if (*p != '\t')
			break;
	}
	char *body = strdup(p);
	free(s);
	return body;
}

/* ------------------------------------------------------------------ */
/* tests */

static void
test_greeting_and_ehlo(void **state)
{
	struct t t;

	start(&t, NULL, false);
	EXPECT(&t, "", "220 mx.test ESMTP tern\r\n");
	EXPECT(&t, "EHLO client.test\r\n",
	    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 4096\r\n250-8BITMIME\r\n"
	    "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 CHUNKING\r\n");
	EXPECT(&t, "HELO client.test\r\n", "250 mx.test\r\n");
	EXPECT(&t, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	EXPECT(&t, "VRFY alice\r\n",
	    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	EXPECT_PREFIX(&t, "HELP\r\n", "214 2.0.0 ");
	EXPECT(&t, "EXPN list\r\n", "502 5.5.1 Error: command not implemented\r\n");
	EXPECT(&t, "FOO\r\n", "500 5.5.1 Error: command not recognized\r\n");
	EXPECT(&t, "quit\r\n", "221 2.0.0 Bye\r\n");
	assert_true(t.closed);
	stop(&t);
}

static void
test_sequence_errors(void **state)
{
	struct t t;

	start(&t, "max_message_size 4K\nmax_errors 20", false);
	free(feed(&t, ""));
	EXPECT(&t, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
	EXPECT(&t, "EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
	free(feed(&t, "EHLO c.test\r\n"));
	EXPECT(&t, "RCPT TO:<alice@example.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	EXPECT(&t, "DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	EXPECT(&t, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	EXPECT(&t, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: nested MAIL command\r\n");
	EXPECT(&t, "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n");
	stop(&t);
}

static void
test_one_message(void **state)
{
	struct t t;
	char *body;

	start(&t, NULL, false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<sender@remote.test> SIZE=100 BODY=8BITMIME\r\n", "250 2.1.0 Ok\r\n");
	EXPECT(&t, "RCPT TO:<Alice@Example.TEST> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40example.test\r\n",
	    "250 2.1.5 Ok\r\n");
	EXPECT(&t, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT_PREFIX(&t, "Subject: hi\r\n\r\n..leading dot\r\n.\r\n", "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.q.nmsgs, 1);
	assert_true(t.q.msgs[0].committed);
	assert_string_equal(t.q.msgs[0].env.sender, "sender@remote.test");
	assert_int_equal(t.q.msgs[0].env.nrcpts, 1);
	assert_string_equal(t.q.msgs[0].env.rcpts[0].addr, "Alice@Example.TEST");
	assert_string_equal(t.q.msgs[0].env.rcpts[0].orcpt, "rfc822;alice+40example.test");
	assert_int_equal(t.q.msgs[0].env.rcpts[0].notify,
	    ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_FAILURE);
	assert_int_equal(t.q.msgs[0].env.body, ENVELOPE_BODY_8BITMIME);
	body = stored_body(&t.q.msgs[0]);
	assert_string_equal(body, "Subject: hi\r\n\r\n.leading dot\r\n");
	free(body);
	/* a second transaction on the same session */
	EXPECT(&t, "MAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT_PREFIX(&t, "x\r\n.\r\n", "250 2.0.0 Ok: queued as ");
	assert_string_equal(t.q.msgs[1].env.sender, "");
	stop(&t);
}

static void
test_pipelined_batch(void **state)
{
	struct t t;

	start(&t, NULL, false);
	ehlo(&t);
	/* One write with two whole transactions, replies in order. */
	char *r = feed(&t,
	    "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<nobody@example.test>\r\nDATA\r\nhello\r\n.\r\n"
	    "MAIL FROM:<b@r.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nworld\r\n.\r\n"
	    "QUIT\r\n");
	const char *want_parts[] = { "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
		"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n",
		"354 ", "250 2.0.0 Ok: queued as ", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
		"354 ", "250 2.0.0 Ok: queued as ", "221 2.0.0 Bye\r\n" };
	char *p = r;
	for (size_t i = 0; i < nitems(want_parts); i++) {
		char *at = strstr(p, want_parts[i]);
		if (at == NULL)
			fail_msg("missing %s in %s", want_parts[i], p);
		p = at + strlen(want_parts[i]);
	}
	free(r);
	assert_int_equal(t.q.nmsgs, 2);
	stop(&t);
}

/* Each smuggling sequence: the message must not end early, and the
 * smuggled commands must stay content. */
static void
test_smuggling_normalize(void **state)
{
	static const char *const seqs[] = { "\n.\n", "\n.\r\n", "\r.\r", "\r.\r\n",
		"\r\n.\n", "\r\n.\r", ".\n" };

	for (size_t i = 0; i < nitems(seqs); i++) {
		struct t t;
		char input[512];

		start(&t, NULL, false);
		ehlo(&t);
		free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
		snprintf(input, sizeof(input),
		    "Subject: s\r\n\r\nbody%sMAIL FROM:<evil@r.test>\r\n"
		    "RCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n", seqs[i]);
		char *r = feed(&t, input);
		/* exactly one reply: the message's, no replies to smuggled commands */
		if (strncmp(r, "250 2.0.0 Ok: queued as ", 24) != 0 ||
		    strstr(r + 1, "\r\n2") != NULL)
			fail_msg("sequence %zu: got %s", i, r);
		free(r);
		assert_int_equal(t.q.nmsgs, 1);
		assert_int_equal(t.q.msgs[0].env.nrcpts, 1);
		char *body = stored_body(&t.q.msgs[0]);
		assert_non_null(strstr(body, "MAIL FROM:<evil@r.test>\r\n"));
		/* every line of the stored content ends in CRLF */
		for (char *c = body; *c; c++) {
			if (*c == '\n')
				assert_true(c > body && c[-1] == '\r');
			if (*c == '\r')
				assert_true(c[1] == '\n');
		}
		free(body);
		stop(&t);
	}
}

static void
test_smuggling_reject(void **state)
{
	struct t t;

	start(&t, "max_message_size 4K\nbare_newline reject", false);
	ehlo(&t);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	EXPECT(&t, "body\n.\nMAIL FROM:<evil@r.test>\r\n.\r\n",
	    "550 5.5.2 Error: bare <CR> or <LF> received; lines must end with <CR><LF>\r\n");
	assert_false(t.q.msgs[0].committed);
	assert_true(t.q.msgs[0].aborted);
	/* the session goes on */
	EXPECT(&t, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	stop(&t);
}

static void
test_long_lines(void **state)
{
	struct t t;
	char line[1100];

	start(&t, "max_message_size 10K\nmax_errors 20", false);
	ehlo(&t);
	/* a command line over 512 octets */
	memset(line, 'a', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 600, "\r\n", 3);
	EXPECT(&t, line, "500 5.5.2 Error: line too long\r\n");
	/* the same split over two inputs */
	line[600] = '\0';
	free(feed(&t, line));
	EXPECT(&t, "\r\n", "500 5.5.2 Error: line too long\r\n");
	/* a content line of 999 octets */
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	memset(line, 'b', 999);
	memcpy(line + 999, "\r\n.\r\n", 6);
	EXPECT(&t, line, "500 5.5.2 Error: line too long (over 998 octets)\r\n");
	/* exactly 998 is fine */
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	memset(line, 'b', 998);
	memcpy(line + 998, "\r\n.\r\n", 6);
	EXPECT_PREFIX(&t, line, "250 2.0.0 Ok: queued as ");
	stop(&t);
}

static void
test_size_limits(void **state)
{
	struct t t;
	static char big[5000];

	start(&t, NULL, false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test> SIZE=5000\r\n",
	    "552 5.3.4 Error: message size exceeds fixed limit\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> SIZE=99999999999999999999999\r\n",
	    "501 5.5.4 Error: bad SIZE parameter\r\n");
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	for (size_t i = 0; i + 2 < sizeof(big); i += 50) {
		memset(big + i, 'x', 48);
		big[i + 48] = '\r';
		big[i + 49] = '\n';
	}
	big[sizeof(big) - 1] = '\0';
	free(feed(&t, big));
	EXPECT(&t, "\r\n.\r\n", "552 5.3.4 Error: message size exceeds fixed limit\r\n");
	assert_false(t.q.msgs[0].committed);
	stop(&t);
}

static void
test_params(void **state)
{
	struct t t;

	start(&t, "max_message_size 4K\nmax_errors 20", false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test> FOO=BAR\r\n", "555 5.5.4 Error: unsupported MAIL parameter FOO\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> BODY=FOO\r\n", "501 5.5.4 Error: bad BODY parameter\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> BODY=BINARYMIME\r\n",
	    "504 5.5.4 Error: BODY=BINARYMIME is not supported\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> RET=X\r\n", "501 5.5.4 Error: bad RET parameter\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> ENVID=a+2\r\n", "501 5.5.4 Error: bad ENVID parameter\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test> SIZE=1 SIZE=2\r\n", "501 5.5.4 Error: duplicate MAIL parameter\r\n");
	EXPECT(&t, "MAIL FROM:<j\xc3\xb6rg@r.test>\r\n",
	    "553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n");
	stop(&t);

	start(&t, NULL, false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<j\xc3\xb6rg@r.test> SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\n", "250 2.1.0 Ok\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS\r\n",
	    "501 5.5.4 Error: bad NOTIFY parameter\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test> ORCPT=rfc822\r\n",
	    "501 5.5.4 Error: bad ORCPT parameter\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test> XYZ\r\n",
	    "555 5.5.4 Error: unsupported RCPT parameter XYZ\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test> NOTIFY=NEVER\r\n", "250 2.1.5 Ok\r\n");
	stop(&t);
}

static void
test_relay_and_addresses(void **state)
{
	static const struct {
		const char *name, *rcpt, *want;
	} cases[] = {
		{ "foreign", "<u@other.test>", "554 5.7.1 <u@other.test>: Relay access denied" },
		{ "percent hack", "<u%other.test@example.test>",
		  "550 5.1.1 <u%other.test@example.test>: Recipient address rejected: User unknown" },
		{ "quoted at", "<\"u@other.test\"@example.test>", "550 5.1.1 " },
		{ "double at", "<u@other.test@example.test>", "501 5.1.3 " },
		{ "source route", "<@example.test:u@other.test>", "554 5.7.1 " },
		{ "literal", "<u@[127.0.0.1]>", "554 5.7.1 " },
		{ "trailing dot", "<u@other.test.>", "501 5.1.3 " },
		{ "no brackets", "u@example.test", "501 5.1.3 " },
		{ "postmaster", "<Postmaster>", "250 2.1.5 Ok" },
		{ "case", "<ALICE@EXAMPLE.test>", "250 2.1.5 Ok" },
		{ "unknown", "<carol@example.test>", "550 5.1.1 " },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct t t;
		char cmd[300];

		start(&t, NULL, false);
		ehlo(&t);
		free(feed(&t, "MAIL FROM:<a@r.test>\r\n"));
		snprintf(cmd, sizeof(cmd), "RCPT TO:%s\r\n", cases[i].rcpt);
		char *got = feed(&t, cmd);
		if (strncmp(got, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("%s: want %s got %s", cases[i].name, cases[i].want, got);
		free(got);
		stop(&t);
	}
	/* from a relay network, foreign domains are accepted */
	struct t t;
	start(&t, NULL, true);
	ehlo(&t);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\n"));
	EXPECT(&t, "RCPT TO:<u@other.test>\r\n", "250 2.1.5 Ok\r\n");
	stop(&t);
}

static void
test_too_many_recipients_and_errors(void **state)
{
	struct t t;

	start(&t, NULL, false);
	ehlo(&t);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\n"));
	EXPECT(&t, "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "RCPT TO:<postmaster@example.test>\r\nRCPT TO:<alice@example.test>\r\n",
	    "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n");
	/* 452 for too many recipients is not held against the client */
	EXPECT(&t, "RCPT TO:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "452 4.5.3 Error: too many recipients\r\n452 4.5.3 Error: too many recipients\r\n"
	    "452 4.5.3 Error: too many recipients\r\n452 4.5.3 Error: too many recipients\r\n"
	    "452 4.5.3 Error: too many recipients\r\n452 4.5.3 Error: too many recipients\r\n");
	/* 6 real errors reach max_errors 6 */
	char *r = feed(&t, "X\r\nX\r\nX\r\nX\r\nX\r\nX\r\nX\r\n");
	assert_non_null(strstr(r, "421 4.7.0 mx.test Error: too many errors\r\n"));
	/* nothing after the 421 */
	assert_string_equal(strstr(r, "421 ") + strlen("421 4.7.0 mx.test Error: too many errors\r\n"), "");
	free(r);
	assert_true(t.closed);
	stop(&t);
}

static void
test_bdat(void **state)
{
	struct t t;
	char *body;

	start(&t, NULL, false);
	ehlo(&t);
	/* BDAT without a transaction still consumes its octets */
	EXPECT(&t, "BDAT 12\r\nNOOP\r\nNOOP\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	EXPECT(&t, "BDAT 9\r\nSubject: ", "250 2.0.0 9 octets received\r\n");
	EXPECT(&t, "DATA\r\n", "503 5.5.1 Error: DATA after BDAT\r\n");
	EXPECT_PREFIX(&t, "BDAT 10 LAST\r\nx\r\n\r\n.\r\nab", "250 2.0.0 Ok: queued as ");
	body = stored_body(&t.q.msgs[0]);
	/* no dot-unstuffing in BDAT, and a final CRLF is supplied */
	assert_string_equal(body, "Subject: x\r\n\r\n.\r\nab\r\n");
	free(body);
	EXPECT(&t, "BDAT x\r\n", "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n");
	/* a bad BDAT line with a valid size still consumes its chunk */
	EXPECT(&t, "BDAT 12 LAST \r\nNOOP\r\nNOOP\r\n", "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n");
	/* RCPT between chunks: the envelope is already with the queue */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabc",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n");
	EXPECT(&t, "RCPT TO:<bob@example.test>\r\n", "503 5.5.1 Error: RCPT after BDAT\r\n");
	EXPECT_PREFIX(&t, "BDAT 0 LAST\r\n", "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.q.msgs[1].env.nrcpts, 1);
	stop(&t);
}

static void
test_queue_failures(void **state)
{
	struct t t;

	start(&t, NULL, false);
	ehlo(&t);
	t.q.fail_begin = true;
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 Error: queue file write error\r\n");
	t.q.fail_begin = false;
	t.q.fail_commit = true;
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT(&t, "hi\r\n.\r\n", "452 4.3.1 Insufficient system storage\r\n");
	stop(&t);
}

static void
test_timeout(void **state)
{
	struct t t;

	start(&t, NULL, false);
	ehlo(&t);
	assert_int_equal(t.timeout, t.cfg->timeout_command);
	smtp_session_timeout(t.s);
	char *r = feed(&t, "");
	assert_string_equal(r, "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	free(r);
	assert_true(t.closed);
	stop(&t);
}

static void
test_domain_check(void **state)
{
	struct t t;

	start(&t, NULL, true);
	smtp_session_set_domain_check(t.s, &dc_ops, NULL);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\n"
	    "RCPT TO:<u@nullmx.test>\r\nRCPT TO:<u@nxdomain.test>\r\n"
	    "RCPT TO:<u@fine.test>\r\nRCPT TO:<alice@example.test>\r\n",
	    "250 2.1.0 Ok\r\n"
	    "556 5.1.10 <u@nullmx.test>: Recipient address rejected: domain does not accept mail (null MX)\r\n"
	    "550 5.1.2 <u@nxdomain.test>: Recipient address rejected: domain not found\r\n"
	    "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n");
	EXPECT_PREFIX(&t, "DATA\r\nx\r\n.\r\n", "354 ");
	assert_int_equal(t.q.msgs[0].env.nrcpts, 2);
	assert_string_equal(t.q.msgs[0].env.rcpts[0].addr, "u@fine.test");
	/* a check in flight when the session ends is cancelled */
	free(feed(&t, "MAIL FROM:<a@r.test>\r\n"));
	evbuffer_add(t.in, "RCPT TO:<u@slow.test>\r\n", 23);
	smtp_session_process(t.s);
	assert_non_null(dc_cb);
	stop(&t);
	assert_null(dc_cb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_ehlo),
		cmocka_unit_test(test_sequence_errors),
		cmocka_unit_test(test_one_message),
		cmocka_unit_test(test_pipelined_batch),
		cmocka_unit_test(test_smuggling_normalize),
		cmocka_unit_test(test_smuggling_reject),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_relay_and_addresses),
		cmocka_unit_test(test_too_many_recipients_and_errors),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_queue_failures),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_domain_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
