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

#include "conf/config.h"
#include "mail/envelope.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_session.h"
#include "lib/util.h"

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
	bool congested;      /* the queue is behind (back-pressure) */
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

static bool
fake_congested(void *ctx)
{
	return ((struct fake_queue *)ctx)->congested;
}

static const struct queue_client_ops fake_ops = {
	.begin = fake_begin,
	.write = fake_write,
	.commit = fake_commit,
	.abort = fake_abort,
	.congested = fake_congested,
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
	unsigned deadline;   /* ms, the last one armed; 0: none */
	unsigned narmed;     /* set_deadline() calls */
	char dir[64];
};

static void
io_set_deadline(void *arg, unsigned ms)
{
	((struct t *)arg)->deadline = ms;
	((struct t *)arg)->narmed++;
}

static void
io_close(void *arg)
{
	((struct t *)arg)->closed = true;
}

static const struct smtp_session_io test_io = { .set_deadline = io_set_deadline,
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

/* A first line starting with WSP would continue tern's Received: field
 * (RFC 5322 2.2.3): refused, whoever sends it, by DATA or BDAT. */
static void
test_leading_whitespace(void **state)
{
	struct t t;

	start(&t, "max_message_size 4K", false);
	ehlo(&t);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	EXPECT(&t, " by evil.test; forged\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
	    "554 5.6.0 Error: malformed message header: it starts with a "
	    "continuation line\r\n");
	assert_false(t.q.msgs[0].committed);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"));
	EXPECT(&t, "BDAT 6 LAST\r\n\tx\r\n\r\n",
	    "554 5.6.0 Error: malformed message header: it starts with a "
	    "continuation line\r\n");
	/* an empty header (first line empty) is fine, and so is WSP later */
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	char *r = feed(&t, "\r\n body\r\n.\r\n");
	assert_true(strncmp(r, "250 2.0.0 Ok", 12) == 0);
	free(r);
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
	/* no value (fuzz_smtp_session: pointer arithmetic on NULL; its
	 * reproducer is the seed regress_notify_no_value) */
	EXPECT(&t, "RCPT TO:<alice@example.test> NOTIFY\r\n",
	    "501 5.5.4 Error: bad NOTIFY parameter\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test> ORCPT\r\n",
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

/* max_recipients bounds accepted RCPT commands, duplicates included:
 * folding duplicates into one copy must not make the limit endless. */
static void
test_duplicate_recipients_count(void **state)
{
	struct t t;

	start(&t, "max_message_size 4K\nmax_recipients 3\nmax_errors 20", false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<ALICE@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
	    "452 4.5.3 Error: too many recipients\r\n"
	    "452 4.5.3 Error: too many recipients\r\n");
	/* rejected recipients do not count against the limit */
	EXPECT_PREFIX(&t, "DATA\r\nx\r\n.\r\n", "354 ");
	assert_int_equal(t.q.msgs[0].env.nrcpts, 1);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<nobody@example.test>\r\n"
	    "RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<alice@example.test>\r\n",
	    "250 2.1.0 Ok\r\n"
	    "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"
	    "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"
	    "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
	    "452 4.5.3 Error: too many recipients\r\n");
	/* a new transaction starts from zero */
	EXPECT(&t, "RSET\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
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
	/* RCPT between chunks: the envelope is already with the queue */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabc",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n");
	EXPECT(&t, "RCPT TO:<bob@example.test>\r\n", "503 5.5.1 Error: RCPT after BDAT\r\n");
	EXPECT_PREFIX(&t, "BDAT 0 LAST\r\n", "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.q.msgs[1].env.nrcpts, 1);
	stop(&t);
}

/* RFC 3030 2: end-marker = "LAST". A BDAT line with anything else after
 * the size is a syntax error, answered at once: no octets are taken as a
 * chunk, the next line is a command. */
static void
test_bdat_end_marker(void **state)
{
	static const char *const bad[] = {
		"BDAT 12 LAST \r\n", "BDAT 12 FOO\r\n", "BDAT 12 LASTX\r\n",
		"BDAT 12 LAS\r\n", "BDAT 12  LAST\r\n", "BDAT 12 \r\n",
		"BDAT 12 LAST LAST\r\n", "BDAT 0 NOTLAST\r\n",
	};
	struct t t;
	char *body;

	start(&t, "max_message_size 4K\nmax_recipients 3\nmax_errors 40", false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	for (size_t i = 0; i < nitems(bad); i++) {
		char in[64];

		snprintf(in, sizeof(in), "%sNOOP\r\nNOOP\r\n", bad[i]);
		char *got = feed(&t, in);
		if (strcmp(got, "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"
		    "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n") != 0)
			fail_msg("%s: got %s", bad[i], got);
		free(got);
	}
	assert_int_equal(t.q.nmsgs, 0);
	/* the transaction is intact: "LAST" in any case still works */
	EXPECT_PREFIX(&t, "bdat 10 last\r\nSubject: x", "250 2.0.0 Ok: queued as ");
	body = stored_body(&t.q.msgs[0]);
	assert_string_equal(body, "Subject: x\r\n");
	free(body);
	EXPECT_PREFIX(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "BDAT 10 LAST\r\nSubject: y", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "250 2.0.0 Ok: queued as ");
	EXPECT_PREFIX(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<bob@example.test>\r\n"
	    "BDAT 5 Last\r\nab\r\n\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.q.nmsgs, 3);
	stop(&t);
}

/* RFC 5321 6.3: more Received: fields in the header section than
 * max_received_headers is a mail loop: 554 5.4.6 at the end of the data,
 * by DATA or BDAT, and the queue transaction is aborted. Fields in the
 * body, other names (X-Received:, Received-SPF:) and tern's own
 * Received: do not count; the name's case and WSP before the colon do
 * not matter, nor where the input is cut. */
static void
test_mail_loop(void **state)
{
	static const char three[] =
	    "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "received : from c\r\n\tby d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "X-Received: not one\r\nReceived-SPF: pass\r\n"
	    "RECEIVED:\tfrom e by f; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "Subject: loop\r\n\r\n"
	    "Received: in the body, not a field\r\n";
	static const char fourth[] = "Received:from g by h; x\r\n";
	struct t t;
	char *r, msg[1024];

	start(&t, "max_message_size 4K\nmax_received_headers 3\nmax_errors 20", false);
	ehlo(&t);
	/* at the limit: queued */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	snprintf(msg, sizeof(msg), "%s.\r\n", three);
	EXPECT_PREFIX(&t, msg, "250 2.0.0 Ok: queued as ");
	assert_true(t.q.msgs[0].committed);
	/* one more, fed an octet at a time: refused, nothing queued */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	snprintf(msg, sizeof(msg), "%s%s.\r\n", fourth, three);
	for (size_t i = 0; msg[i + 1] != '\0'; i++)
		free(feed_n(&t, msg + i, 1));
	EXPECT(&t, "\n", "554 5.4.6 Too many Received headers: mail loop\r\n");
	assert_false(t.q.msgs[1].committed);
	assert_true(t.q.msgs[1].aborted);
	/* the same by BDAT, in two chunks; the session goes on */
	snprintf(msg, sizeof(msg), "%s%s", fourth, three);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 20\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	free(feed_n(&t, msg, 20));
	r = malloc(strlen(msg) + 32);
	snprintf(r, strlen(msg) + 32, "BDAT %zu LAST\r\n%s", strlen(msg) - 20, msg + 20);
	EXPECT(&t, r, "554 5.4.6 Too many Received headers: mail loop\r\n");
	free(r);
	assert_false(t.q.msgs[2].committed);
	assert_true(t.q.msgs[2].aborted);
	snprintf(msg, sizeof(msg), "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "BDAT %zu LAST\r\n%s", strlen(three), three);
	EXPECT_PREFIX(&t, msg, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as ");
	assert_true(t.q.msgs[3].committed);
	EXPECT(&t, "NOOP\r\n", "250 2.0.0 Ok\r\n");
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
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	smtp_session_timeout(t.s);
	char *r = feed(&t, "");
	assert_string_equal(r, "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	free(r);
	assert_true(t.closed);
	stop(&t);
}

/*
 * Deadlines, not idle timeouts: partial input never re-arms the
 * deadline. timeout_greeting bounds the whole greeting phase,
 * timeout_command each command line, and message data has a budget that
 * octets extend at min_data_rate only (Issue: one octet every few seconds
 * held a connection for ever).
 */
static void
test_deadlines(void **state)
{
	struct t t;
	unsigned n;
	char *r;

	start(&t, "max_message_size 4K\ntimeout_greeting 20s\ntimeout_command 30s\n"
	    "timeout_data 10s\nmin_data_rate 1000000", false);
	free(feed(&t, ""));
	/* from the session's creation, a moment before its start */
	assert_in_range(t.deadline, 19000, 20000);
	/* before HELO/EHLO: neither octets nor whole commands re-arm it */
	n = t.narmed;
	free(feed(&t, "NO"));
	free(feed(&t, "OP\r\nRSET\r\nEH"));
	assert_int_equal(t.narmed, n);
	free(feed(&t, "LO c.test\r\n"));
	assert_int_equal(t.deadline, 30000);
	/* a command line that trickles in is one deadline */
	n = t.narmed;
	for (const char *p = "NOOP"; *p; p++)
		free(feed_n(&t, p, 1));
	assert_int_equal(t.narmed, n);
	EXPECT(&t, "\r\n", "250 2.0.0 Ok\r\n");
	assert_int_equal(t.narmed, n + 1);
	assert_int_equal(t.deadline, 30000);
	/* data: timeout_data, octets buy 1/min_data_rate s each: here next
	 * to nothing, so the budget only shrinks as time passes */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_int_equal(t.deadline, 10000);
	usleep(60 * 1000);
	free(feed(&t, "Subject: slow\r\n"));
	assert_true(t.deadline <= 10000 - 50);
	/* the deadline passes while octets still come: the rate is blamed */
	smtp_session_timeout(t.s);
	r = feed(&t, "");
	assert_string_equal(r, "421 4.4.2 mx.test Error: timeout exceeded: data "
	    "slower than 1000000 bytes/s\r\n");
	free(r);
	assert_true(t.closed);
	assert_true(t.q.msgs[0].aborted);
	stop(&t);

	/* min_data_rate 0: timeout_data is the longest pause */
	start(&t, "max_message_size 4K\ntimeout_data 10s\nmin_data_rate 0", false);
	ehlo(&t);
	free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"));
	usleep(60 * 1000);
	free(feed(&t, "x"));
	assert_int_equal(t.deadline, 10000);
	EXPECT_PREFIX(&t, "\r\n.\r\n", "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	/* a BDAT transaction is data from its first chunk to its last:
	 * the BDAT lines between chunks do not restart timeout_command */
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 1\r\nx",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 1 octets received\r\n");
	assert_int_equal(t.deadline, 10000);
	EXPECT(&t, "BDAT 1\r\ny", "250 2.0.0 1 octets received\r\n");
	assert_int_equal(t.deadline, 10000);
	EXPECT_PREFIX(&t, "BDAT 2 LAST\r\n\r\n", "250 2.0.0 Ok: queued as ");
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	/* an idle client gets the plain timeout */
	smtp_session_timeout(t.s);
	EXPECT(&t, "", "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	stop(&t);
}

/*
 * The queue is behind: the session stops taking message data and no
 * deadline runs, but the data budget is held, not renewed. When data
 * flows again the client has what it had left when tern paused (minus
 * none of tern's pause), or a client meeting a busy queue could stretch
 * its transaction with a fresh timeout_data after each pause.
 */
static void
test_data_budget_held_while_congested(void **state)
{
	static const struct { const char *name, *cmd; } starts[] = {
		{ "DATA", "DATA\r\n" },
		{ "BDAT", "BDAT 100 LAST\r\n" },
	};
	struct t t;

	for (size_t i = 0; i < nitems(starts); i++) {
		start(&t, "max_message_size 4K\ntimeout_data 10s\n"
		    "min_data_rate 1000000", false);
		ehlo(&t);
		free(feed(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"));
		free(feed(&t, starts[i].cmd));
		assert_int_equal(t.deadline, 10000);
		usleep(100 * 1000);   /* the client's time: it counts */
		t.q.congested = true;
		free(feed(&t, "Subject: held\r\n"));
		assert_int_equal(t.deadline, 0);   /* tern's pause: none runs */
		/* more input while the queue is still behind: still none */
		free(feed(&t, "X-More: yes\r\n"));
		assert_int_equal(t.deadline, 0);
		usleep(1500 * 1000);  /* tern's time: it does not count */
		t.q.congested = false;
		smtp_session_process(t.s);   /* what the server does then */
		if (t.deadline >= 10000 - 90 || t.deadline <= 10000 - 1400)
			fail_msg("%s: budget after the pause %u ms, want what was "
			    "left before it (about 9900)", starts[i].name, t.deadline);
		stop(&t);
	}
}

/*
 * Implicit TLS (RFC 8314 3.3): the session is made at the accept, the
 * handshake runs, then the greeting. The handshake's time counts against
 * timeout_greeting: one deadline for handshake and EHLO together, not a
 * fresh timeout_greeting after a handshake that took nearly one.
 */
static void
test_greeting_deadline_counts_handshake(void **state)
{
	struct t t;

	memset(&t, 0, sizeof(t));
	t.cfg = load_cfg(&t, "timeout_greeting 20s\ntimeout_command 30s");
	t.in = evbuffer_new();
	t.out = evbuffer_new();
	t.client.addr = "192.0.2.1";
	t.client.port = 40000;
	t.s = smtp_session_new(t.cfg, &t.client, t.in, t.out, &test_io, &t,
	    &fake_ops, &t.q);
	usleep(300 * 1000);   /* the handshake */
	smtp_session_tls_started(t.s, t.in, t.out, "TLSv1.3:TLS_AES_128_GCM_SHA256");
	smtp_session_start(t.s);
	EXPECT(&t, "", "220 mx.test ESMTP tern\r\n");
	if (t.deadline > 20000 - 300)
		fail_msg("greeting deadline %u ms after a 300 ms handshake, want "
		    "at most %u", t.deadline, 20000 - 300);
	assert_true(t.deadline > 0);
	stop(&t);
}

/* NOOP, RSET, HELP, VRFY, a repeated HELO/EHLO and RCPT past the
 * recipient limit: max_junk_commands of them, then 421 4.7.0; a queued
 * message starts the count again. */
static void
test_junk_commands(void **state)
{
	struct t t;
	char *r;

	start(&t, "max_message_size 4K\nmax_recipients 1\nmax_junk_commands 4", false);
	ehlo(&t);
	EXPECT(&t, "NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\n",
	    "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n214 2.0.0 Commands: EHLO HELO AUTH "
	    "MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT\r\n"
	    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	/* a message resets the count; syntax errors are errors, not junk */
	EXPECT_PREFIX(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "DATA\r\nx\r\n.\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 ");
	EXPECT(&t, "RSET x\r\nEHLO\r\nVRFY\r\n", "501 5.5.4 Syntax: RSET\r\n"
	    "501 5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 Syntax: VRFY address\r\n");
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"
	    "452 4.5.3 Error: too many recipients\r\n");
	r = feed(&t, "HELO c.test\r\nEHLO c.test\r\nNOOP\r\n");
	if (strncmp(r, "250 mx.test\r\n250-mx.test\r\n", 26) != 0 ||
	    strstr(r, "\r\n421 4.7.0 mx.test Error: too many commands without "
	    "mail\r\n") == NULL)
		fail_msg("got %s", r);
	assert_string_equal(strstr(r, "421 "), "421 4.7.0 mx.test Error: too many "
	    "commands without mail\r\n");
	free(r);
	assert_true(t.closed);
	stop(&t);
}

/* "BDAT 0" without LAST moves no mail: such chunks count as junk, so a
 * client cannot keep its slot with them for ever. */
static void
test_bdat_empty_chunks_are_junk(void **state)
{
	struct t t;
	char *r;

	start(&t, "max_junk_commands 2", false);
	ehlo(&t);
	EXPECT(&t, "MAIL FROM:<a@r.test>\r\nRCPT TO:<alice@example.test>\r\n"
	    "BDAT 0\r\nBDAT 0\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "250 2.0.0 0 octets received\r\n250 2.0.0 0 octets received\r\n");
	r = feed(&t, "BDAT 0\r\n");
	assert_string_equal(r, "421 4.7.0 mx.test Error: too many commands "
	    "without mail\r\n");
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

/* ------------------------------------------------------------------ */
/* AUTH (RFC 4954) with a fake verifier: "secret" is the password,
 * "lock" locks the address out; answers wait for fake_run(). */

static smtp_auth_cb fa_cb;
static void *fa_arg;
static enum smtp_auth_verdict fa_verdict;
static bool fa_throttled;
static char fa_user[300];
static int fa_handle;

static void *
fa_start(void *ctx, const char *addr, const char *user, size_t ulen,
    const char *pass, size_t plen, smtp_auth_cb cb, void *arg)
{
	assert_null(fa_cb);
	fa_cb = cb;
	fa_arg = arg;
	assert_true(ulen < sizeof(fa_user));
	memcpy(fa_user, user, ulen);
	fa_user[ulen] = '\0';
	fa_verdict = plen == 6 && memcmp(pass, "secret", 6) == 0 ? SMTP_AUTH_OK :
	    plen == 4 && memcmp(pass, "lock", 4) == 0 ? SMTP_AUTH_LOCKED :
	    SMTP_AUTH_FAILED;
	return &fa_handle;
}

static void
fa_cancel(void *ctx, void *handle)
{
	fa_cb = NULL;
}

static bool
fa_is_throttled(void *ctx, const char *addr)
{
	return fa_throttled;
}

static const struct smtp_auth_ops fa_ops = { fa_start, fa_cancel,
	fa_is_throttled };

static void
fa_run(void)
{
	while (fa_cb != NULL) {
		smtp_auth_cb cb = fa_cb;
		fa_cb = NULL;
		cb(fa_arg, fa_verdict);
	}
}

/* AUTH_B64_*: base64 of PLAIN messages and LOGIN fields */
#define B64_PLAIN_OK "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ="     /* \0alice@example.test\0secret */
#define B64_PLAIN_BAD "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw=="   /* ...\0wrong */
#define B64_PLAIN_LOCK "AGFsaWNlQGV4YW1wbGUudGVzdABsb2Nr"      /* ...\0lock */
#define B64_PLAIN_AUTHZ "Ym9iQGV4YW1wbGUudGVzdABhbGljZUBleGFtcGxlLnRlc3QAc2VjcmV0"
#define B64_ALICE "YWxpY2VAZXhhbXBsZS50ZXN0"
#define B64_SECRET "c2VjcmV0"
#define B64_WRONG "d3Jvbmc="

/* Listeners of AUTH_CONF: [0] plain MX, [1] submission (auth required,
 * in clear text), [2] auth yes in clear text, [3] auth yes, TLS only. */
#define AUTH_CONF(passwd, extra)                                                \
	"%s"                                                                   \
	"listen 127.0.0.1:2587 {\n auth required\n auth_plaintext yes\n"       \
	" relay_networks no\n receive no\n}\n"                                 \
	"listen 127.0.0.1:2588 {\n auth yes\n auth_plaintext yes\n}\n"         \
	"listen 127.0.0.1:2589 { auth yes }\n"                                 \
	"passwd_file " passwd "\n" extra

static char auth_pw_path[64];
/* the limits of the next start_auth() */
static const char *auth_limits =
    "max_message_size 4K\nmax_recipients 3\nmax_errors 20\n";

/* Start a session on listener li of an AUTH configuration. */
static void
start_auth(struct t *t, size_t li, bool relay_ok, const char *extra)
{
	char conf[1024];
	FILE *f;

	snprintf(auth_pw_path, sizeof(auth_pw_path), "/tmp/tern-pw-%d", (int)getpid());
	f = fopen(auth_pw_path, "w");
	assert_non_null(f);
	fprintf(f, "alice@example.test:$6$saltsalt$abc:alice@example.test,@alias.test\n"
	    "nobody:$6$saltsalt$abc\n");
	fclose(f);
	chmod(auth_pw_path, 0600);
	snprintf(conf, sizeof(conf), AUTH_CONF("%s", "%s"), auth_limits,
	    auth_pw_path, extra ? extra : "");
	memset(t, 0, sizeof(*t));
	t->cfg = load_cfg(t, conf);
	unlink(auth_pw_path);
	assert_true(li < t->cfg->nlisteners);
	t->in = evbuffer_new();
	t->out = evbuffer_new();
	t->client.addr = "192.0.2.1";
	t->client.port = 40000;
	t->client.relay_ok = relay_ok;
	t->client.listener = &t->cfg->listeners[li];
	t->s = smtp_session_new(t->cfg, &t->client, t->in, t->out, &test_io, t,
	    &fake_ops, &t->q);
	smtp_session_set_auth(t->s, &fa_ops, NULL);
	smtp_session_start(t->s);
	fa_throttled = false;
}

/* feed(), with the verifier's answers delivered too */
static char *
feed_auth(struct t *t, const char *data)
{
	char *a = feed(t, data), *b;
	size_t la, lb;

	fa_run();
	b = feed(t, "");
	la = strlen(a);
	lb = strlen(b);
	a = realloc(a, la + lb + 1);
	memcpy(a + la, b, lb + 1);
	free(b);
	return a;
}

#define EXPECT_AUTH(t, input, want)                                            \
	do {                                                                   \
		char *got_ = feed_auth((t), (input));                          \
		if (strcmp(got_, (want)) != 0)                                 \
			fail_msg("input %s\nwant: %s\ngot:  %s", #input, (want), got_); \
		free(got_);                                                    \
	} while (0)

static void
ehlo_auth(struct t *t, bool want_auth)
{
	free(feed(t, ""));   /* greeting */
	char *r = feed(t, "EHLO client.test\r\n");
	if ((strstr(r, "250-AUTH PLAIN LOGIN\r\n") != NULL) != want_auth)
		fail_msg("EHLO reply %s AUTH: %s", want_auth ? "lacks" : "has", r);
	free(r);
}

static void
test_auth_advertised(void **state)
{
	struct t t;

	/* no AUTH on a listener without it */
	start_auth(&t, 0, false, NULL);
	ehlo_auth(&t, false);
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "503 5.5.1 Error: authentication not enabled\r\n");
	stop(&t);
	/* TLS-only AUTH without TLS: not offered, and 538 (RFC 4954 6) */
	start_auth(&t, 3, false, NULL);
	ehlo_auth(&t, false);
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
	stop(&t);
	/* offered; not after HELO; not before EHLO */
	start_auth(&t, 2, false, NULL);
	free(feed(&t, ""));
	EXPECT(&t, "AUTH PLAIN\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
	EXPECT(&t, "HELO client.test\r\n", "250 mx.test\r\n");
	EXPECT(&t, "AUTH PLAIN\r\n", "503 5.5.1 Error: authentication not enabled\r\n");
	ehlo_auth(&t, true);
	stop(&t);
	/* without a verifier there is no AUTH either */
	start(&t, NULL, false);
	ehlo(&t);
	EXPECT(&t, "AUTH LOGIN\r\n", "503 5.5.1 Error: authentication not enabled\r\n");
	stop(&t);
}

static void
test_auth_plain(void **state)
{
	struct t t;

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	/* wrong password, then right, with and without initial response */
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_BAD "\r\n",
	    "535 5.7.8 Error: authentication failed\r\n");
	EXPECT_AUTH(&t, "AUTH PLAIN\r\n", "334 \r\n");
	EXPECT_AUTH(&t, B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");
	assert_string_equal(fa_user, "alice@example.test");
	/* RFC 4954 4: never twice; EHLO no longer offers it */
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "503 5.5.1 Error: already authenticated\r\n");
	char *r = feed(&t, "EHLO client.test\r\n");
	assert_null(strstr(r, "AUTH"));
	free(r);
	stop(&t);

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	/* "=" is an empty initial response: not a PLAIN message */
	EXPECT(&t, "AUTH PLAIN =\r\n", "501 5.5.2 Error: malformed PLAIN response\r\n");
	/* RFC 4954 4: strict base64 */
	EXPECT(&t, "AUTH PLAIN AGFsaWNl*GV4\r\n", "501 5.5.2 Error: cannot decode response\r\n");
	EXPECT(&t, "AUTH PLAIN =AAA\r\n", "501 5.5.2 Error: cannot decode response\r\n");
	EXPECT(&t, "AUTH PLAIN\r\nAAA=BBBB\r\n",
	    "334 \r\n501 5.5.2 Error: cannot decode response\r\n");
	EXPECT(&t, "AUTH PLAIN\r\n\r\n", "334 \r\n501 5.5.2 Error: cannot decode response\r\n");
	/* "*" cancels with 501 */
	EXPECT(&t, "AUTH PLAIN\r\n*\r\n", "334 \r\n501 5.7.0 Authentication aborted\r\n");
	/* authzid other than authcid */
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_AUTHZ "\r\n",
	    "535 5.7.8 Error: authentication failed: authorization identity not allowed\r\n");
	EXPECT(&t, "AUTH CRAM-MD5\r\n", "504 5.5.4 Error: unsupported authentication mechanism\r\n");
	EXPECT(&t, "AUTH\r\n", "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
	EXPECT(&t, "AUTH PLAIN a b\r\n", "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
	/* the session still works */
	EXPECT(&t, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	stop(&t);
}

static void
test_auth_login(void **state)
{
	struct t t;

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	EXPECT_AUTH(&t, B64_ALICE "\r\n", "334 UGFzc3dvcmQ6\r\n");
	EXPECT_AUTH(&t, B64_WRONG "\r\n", "535 5.7.8 Error: authentication failed\r\n");
	/* user name as initial response */
	EXPECT_AUTH(&t, "auth login " B64_ALICE "\r\n", "334 UGFzc3dvcmQ6\r\n");
	EXPECT_AUTH(&t, "*\r\n", "501 5.7.0 Authentication aborted\r\n");
	EXPECT_AUTH(&t, "AUTH LOGIN\r\n" B64_ALICE "\r\n" B64_SECRET "\r\n",
	    "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n");
	stop(&t);
}

static void
test_auth_line_limit(void **state)
{
	struct t t;
	size_t n = SMTP_SESSION_AUTH_LINE_MAX + 100;
	char *big = malloc(n + 3);

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT(&t, "AUTH PLAIN\r\n", "334 \r\n");
	memset(big, 'A', n);
	memcpy(big + n, "\r\n", 3);
	/* RFC 4954 4: 500 5.5.6, once, and the line is gone */
	EXPECT(&t, big, "500 5.5.6 Authentication Exchange line is too long\r\n");
	EXPECT(&t, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	/* a long but bounded line is decoded (and is no PLAIN message) */
	EXPECT(&t, "AUTH PLAIN\r\n", "334 \r\n");
	memset(big, 'A', 8000);
	memcpy(big + 8000, "\r\n", 3);
	EXPECT(&t, big, "501 5.5.2 Error: malformed PLAIN response\r\n");
	free(big);
	stop(&t);
}

static void
test_auth_state_errors(void **state)
{
	struct t t;

	/* RFC 4954 4: no AUTH inside a transaction */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT(&t, "MAIL FROM:<x@remote.test>\r\n", "250 2.1.0 Ok\r\n");
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "503 5.5.1 Error: MAIL transaction in progress\r\n");
	EXPECT(&t, "RSET\r\n", "250 2.0.0 Ok\r\n");
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "235 2.7.0 Authentication successful\r\n");
	stop(&t);
	/* the verifier locks the address out: 421 and close */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_LOCK "\r\n",
	    "421 4.7.0 mx.test Error: too many failed authentications, try again later\r\n");
	assert_true(t.closed);
	stop(&t);
	/* a throttled address: AUTH gets 421 */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	fa_throttled = true;
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "421 4.7.0 mx.test Error: too many failed authentications, try again later\r\n");
	assert_true(t.closed);
	fa_throttled = false;
	stop(&t);
	/* a session that ends during a verification cancels it */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	free(feed(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n"));
	assert_non_null(fa_cb);
	stop(&t);
	assert_null(fa_cb);
}

/* The verifier's delay is the server's, not the client's idleness: no
 * deadline runs while it lasts, and a fresh one after the answer. */
static void
test_auth_delay_not_idle(void **state)
{
	struct t t;

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	for (int i = 0; i < 3; i++) {
		free(feed(&t, "AUTH PLAIN " B64_PLAIN_BAD "\r\n"));
		assert_non_null(fa_cb);
		assert_int_equal(t.deadline, 0);
		t.narmed = 0;
		EXPECT_AUTH(&t, "", "535 5.7.8 Error: authentication failed\r\n");
		assert_int_equal(t.narmed, 1);
		assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	}
	/* LOGIN: each response line re-arms; the wait does not count */
	EXPECT(&t, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
	EXPECT(&t, "YWxpY2VAZXhhbXBsZS50ZXN0\r\n", "334 UGFzc3dvcmQ6\r\n");
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	free(feed(&t, "c2VjcmV0\r\n"));
	assert_int_equal(t.deadline, 0);
	EXPECT_AUTH(&t, "", "235 2.7.0 Authentication successful\r\n");
	assert_int_equal(t.deadline, t.cfg->timeout_command * 1000);
	stop(&t);
}

static void
test_auth_throttled_greeting(void **state)
{
	struct t t;

	memset(&t, 0, sizeof(t));
	fa_throttled = true;
	/* start_auth() clears the flag only after the greeting */
	start_auth(&t, 2, false, NULL);
	EXPECT(&t, "", "421 4.7.0 mx.test Error: too many failed authentications, "
	    "try again later\r\n");
	assert_true(t.closed);
	stop(&t);

	/* a listener without AUTH (the MX) serves a throttled address */
	memset(&t, 0, sizeof(t));
	fa_throttled = true;
	start_auth(&t, 0, false, NULL);
	fa_throttled = true;
	EXPECT(&t, "", "220 mx.test ESMTP tern\r\n");
	assert_false(t.closed);
	EXPECT_PREFIX(&t, "EHLO client.test\r\n", "250-mx.test");
	EXPECT(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n",
	    "503 5.5.1 Error: authentication not enabled\r\n");
	EXPECT(&t, "MAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	assert_false(t.closed);
	stop(&t);
	fa_throttled = false;
}

static void
test_submission_policy(void **state)
{
	struct t t;

	/* auth required: 530 before AUTH (RFC 4954 6), even from a trusted
	 * network; receive no: not even local mail */
	start_auth(&t, 1, true, NULL);
	ehlo_auth(&t, true);
	EXPECT(&t, "MAIL FROM:<alice@example.test>\r\n", "530 5.7.0 Authentication required\r\n");
	EXPECT(&t, "RCPT TO:<alice@example.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");
	/* the envelope sender must be the user's (553 5.7.1) */
	EXPECT(&t, "MAIL FROM:<bob@example.test>\r\n",
	    "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test\r\n");
	EXPECT(&t, "MAIL FROM:<alice%remote.test@example.test>\r\n",
	    "553 5.7.1 <alice%remote.test@example.test>: Sender address rejected: not owned by user alice@example.test\r\n");
	EXPECT(&t, "MAIL FROM:<Alice@Example.TEST>\r\nRSET\r\n", "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n");
	EXPECT(&t, "MAIL FROM:<anything@alias.test>\r\nRSET\r\n", "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n");
	EXPECT(&t, "MAIL FROM:<x@sub.alias.test>\r\n",
	    "553 5.7.1 <x@sub.alias.test>: Sender address rejected: not owned by user alice@example.test\r\n");
	/* RFC 6409 4.2: the null sender is allowed */
	EXPECT(&t, "MAIL FROM:<>\r\nRSET\r\n", "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n");
	/* authenticated: relays anywhere (relay_auth yes), and local too */
	EXPECT(&t, "MAIL FROM:<alice@example.test> AUTH=<>\r\n"
	    "RCPT TO:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n");
	stop(&t);

	/* auth yes, a stranger: local mail only, no relay */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT(&t, "MAIL FROM:<x@remote.test>\r\nRCPT TO:<x@remote.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n554 5.7.1 <x@remote.test>: Relay access denied\r\n"
	    "250 2.1.5 Ok\r\n");
	stop(&t);

	/* a trusted client on a listener with relay_networks no: no relay */
	start_auth(&t, 2, true, "listen 127.0.0.1:2590 {\n relay_networks no\n receive no\n}\n");
	stop(&t);
	start_auth(&t, 4, true, "listen 127.0.0.1:2590 {\n relay_networks no\n receive no\n}\n");
	ehlo_auth(&t, false);
	/* receive no: not even local mail, postmaster excepted (RFC 5321 4.5.1) */
	EXPECT(&t, "MAIL FROM:<x@remote.test>\r\nRCPT TO:<x@remote.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\nRCPT TO:<postmaster>\r\n",
	    "250 2.1.0 Ok\r\n554 5.7.1 <x@remote.test>: Relay access denied\r\n"
	    "554 5.7.1 <bob@example.test>: Recipient address rejected: Access denied\r\n"
	    "250 2.1.5 Ok\r\n");
	stop(&t);
}

static void
test_submission_headers(void **state)
{
	struct t t;
	char *body;

	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");
	/* From: not the user's: 553 after the data, nothing queued */
	EXPECT(&t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT(&t, "From: Alice <alice@example.test>, bob@example.test\r\n\r\nhi\r\n.\r\n",
	    "553 5.7.1 <bob@example.test>: Sender address rejected: From: not owned by user alice@example.test\r\n");
	assert_true(t.q.msgs[0].aborted);
	/* display names, comments, quoted local parts, folding: accepted;
	 * Date: and Message-ID: added (RFC 6409 8.3, 8.6) */
	EXPECT(&t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT_PREFIX(&t, "Subject: x\r\nFROM : \"Smith, A. <evil@x.test>\" (c <evil@y.test>)\r\n"
	    " <\"alice\"@example.TEST>\r\n\r\nhi\r\n.\r\n", "250 2.0.0 Ok: queued as");
	body = stored_body(&t.q.msgs[1]);
	assert_true(strncmp(body, "Date: ", 6) == 0);
	assert_non_null(strstr(body, "\r\nMessage-ID: <"));
	assert_non_null(strstr(body, "@mx.test>\r\nSubject: x\r\nFROM :"));
	assert_non_null(strstr(body, "\r\n\r\nhi\r\n"));
	free(body);
	/* present fields are kept, not doubled; BDAT goes the same way */
	EXPECT(&t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	EXPECT_PREFIX(&t, "BDAT 79 LAST\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "Message-ID: <a@b>\r\nFrom: x@alias.test\r\n\r\n",
	    "250 2.0.0 Ok: queued as");
	body = stored_body(&t.q.msgs[2]);
	assert_string_equal(body, "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "Message-ID: <a@b>\r\nFrom: x@alias.test\r\n\r\n");
	free(body);
	/* no From:, two From:, a group, an unbalanced comment, an address
	 * after the owned one (a reader could show either): refused */
	static const char *const bad[] = {
		"Subject: none\r\n\r\nhi\r\n.\r\n",
		"From: alice@example.test\r\nFrom: alice@example.test\r\n\r\n.\r\n",
		"From: friends: alice@example.test;\r\n\r\n.\r\n",
		"From: (open alice@example.test\r\n\r\n.\r\n",
		"From: <alice@example.test\r\n\r\n.\r\n",
		"From: \"alice@example.test\"@evil.test\r\n\r\n.\r\n",
		"From: alice@example.test.\r\n\r\n.\r\n",
		"From: <alice@example.test> mallory@evil.test\r\n\r\n.\r\n",
		"From: alice@example.test;\r\n\r\n.\r\n",
		"From: <>, alice@example.test\r\n\r\n.\r\n",
	};
	for (size_t i = 0; i < nitems(bad); i++) {
		EXPECT(&t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
		    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
		EXPECT_PREFIX(&t, bad[i], "553 5.7.1 ");
	}
	stop(&t);

	/* auth_check_from no: any From:, still Date/Message-ID */
	start_auth(&t, 2, false, "auth_check_from no\n");
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");
	EXPECT(&t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	EXPECT_PREFIX(&t, "From: someone@else.test\r\n\r\nhi\r\n.\r\n", "250 2.0.0 Ok");
	stop(&t);

	/* not authenticated: the content is stored as it came */
	start_auth(&t, 2, false, NULL);
	ehlo_auth(&t, true);
	EXPECT_PREFIX(&t, "MAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
	    "From: x@remote.test\r\n\r\nhi\r\n.\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 ");
	body = stored_body(&t.q.msgs[0]);
	assert_string_equal(body, "From: x@remote.test\r\n\r\nhi\r\n");
	free(body);
	stop(&t);
}

/* DATA with the given content for alice; returns the reply to it. */
static char *
submit_n(struct t *t, const char *content, size_t len)
{
	EXPECT(t, "MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	return feed_n(t, content, len);
}

#define EXPECT_SUBMIT(t, content, prefix)                                      \
	do {                                                                   \
		char *got_ = submit_n((t), (content), sizeof(content) - 1);    \
		if (strncmp(got_, (prefix), strlen(prefix)) != 0)              \
			fail_msg("content %s\nwant prefix: %s\ngot: %s",        \
			    #content, (prefix), got_);                         \
		free(got_);                                                    \
	} while (0)

/*
 * The From: check cannot be bypassed: a header larger than the capture
 * (a second From: past it), NUL or other control characters (a NUL ended
 * the From: value early), and a header that starts with a continuation
 * line (it folded into the Message-ID: tern adds).
 */
static void
test_submission_header_bypass(void **state)
{
	struct t t;
	struct evbuffer *big = evbuffer_new();
	char pad[901], *got, *body;
	size_t nbig;

	auth_limits = "max_message_size 1M\nmax_recipients 3\nmax_errors 40\n";
	start_auth(&t, 2, false, NULL);
	auth_limits = "max_message_size 4K\nmax_recipients 3\nmax_errors 20\n";
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");

	/* (a) From: alice, 80 lines of padding (72 KB), From: ceo */
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	evbuffer_add_printf(big, "From: alice@example.test\r\n");
	for (int i = 0; i < 80; i++)
		evbuffer_add_printf(big, "X-Pad-%d: %s\r\n", i, pad);
	evbuffer_add_printf(big, "From: ceo@bank.example\r\n\r\nhi\r\n.\r\n");
	nbig = evbuffer_get_length(big);
	got = submit_n(&t, (const char *)evbuffer_pullup(big, -1), nbig);
	if (strncmp(got, "552 5.3.4 Error: message header too large", 41) != 0)
		fail_msg("header past the capture: %s", got);
	free(got);
	/* ... and one large header with a single, good From: too */
	evbuffer_drain(big, nbig);
	evbuffer_add_printf(big, "From: alice@example.test\r\n");
	for (int i = 0; i < 80; i++)
		evbuffer_add_printf(big, "X-Pad-%d: %s\r\n", i, pad);
	evbuffer_add_printf(big, "\r\nhi\r\n.\r\n");
	nbig = evbuffer_get_length(big);
	got = submit_n(&t, (const char *)evbuffer_pullup(big, -1), nbig);
	if (strncmp(got, "552 5.3.4 ", 10) != 0)
		fail_msg("large header: %s", got);
	free(got);
	/* a large body behind a small header is fine */
	evbuffer_drain(big, nbig);
	evbuffer_add_printf(big, "From: alice@example.test\r\n\r\n");
	for (int i = 0; i < 80; i++)
		evbuffer_add_printf(big, "%s\r\n", pad);
	evbuffer_add_printf(big, ".\r\n");
	nbig = evbuffer_get_length(big);
	got = submit_n(&t, (const char *)evbuffer_pullup(big, -1), nbig);
	if (strncmp(got, "250 2.0.0 Ok", 12) != 0)
		fail_msg("large body: %s", got);
	free(got);

	/* (b) NUL in From: (and other control characters anywhere) */
	EXPECT_SUBMIT(&t, "From: alice@example.test\0, ceo@bank.example\r\n\r\nhi\r\n.\r\n",
	    "553 5.7.1 Sender address rejected: control character");
	EXPECT_SUBMIT(&t, "From: alice@example.test\x01, ceo@bank.example\r\n\r\n.\r\n",
	    "553 5.7.1 Sender address rejected: control character");
	EXPECT_SUBMIT(&t, "Subject: a\x1b b\r\nFrom: alice@example.test\r\n\r\n.\r\n",
	    "553 5.7.1 Sender address rejected: control character");
	EXPECT_SUBMIT(&t, "From: alice@example.test\x7f\r\n\r\n.\r\n",
	    "553 5.7.1 Sender address rejected: control character");
	/* TAB is white space; control characters in the body are not looked at */
	EXPECT_SUBMIT(&t, "From:\talice@example.test\r\n\t(me)\r\n\r\na\0b\x01\r\n.\r\n",
	    "250 2.0.0 Ok");

	/* (c) a first line that continues nothing */
	EXPECT_SUBMIT(&t, " x@evil.test>\r\nFrom: alice@example.test\r\n\r\nhi\r\n.\r\n",
	    "554 5.6.0 Error: malformed message header");
	EXPECT_SUBMIT(&t, "\tBcc: x\r\nFrom: alice@example.test\r\n\r\n.\r\n",
	    "554 5.6.0 Error: malformed message header");
	/* an empty header is not one */
	EXPECT_SUBMIT(&t, "\r\n From: alice@example.test\r\n.\r\n", "553 5.7.1 ");
	for (int i = 0; i < t.q.nmsgs; i++)
		assert_true(t.q.msgs[i].committed == (i == 2 || i == 7));
	body = stored_body(&t.q.msgs[7]);
	assert_non_null(strstr(body, "\r\nFrom:\talice@example.test\r\n\t(me)\r\n"));
	free(body);
	stop(&t);

	/* without the From: check a continuation first line is still refused */
	start_auth(&t, 2, false, "auth_check_from no\n");
	ehlo_auth(&t, true);
	EXPECT_AUTH(&t, "AUTH PLAIN " B64_PLAIN_OK "\r\n", "235 2.7.0 Authentication successful\r\n");
	EXPECT_SUBMIT(&t, " x\r\nFrom: a@b.test\r\n\r\n.\r\n",
	    "554 5.6.0 Error: malformed message header");
	EXPECT_SUBMIT(&t, "From: a@b.test\0\r\n\r\n.\r\n", "250 2.0.0 Ok");
	stop(&t);
	evbuffer_free(big);
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
		cmocka_unit_test(test_leading_whitespace),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_relay_and_addresses),
		cmocka_unit_test(test_too_many_recipients_and_errors),
		cmocka_unit_test(test_duplicate_recipients_count),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_bdat_end_marker),
		cmocka_unit_test(test_mail_loop),
		cmocka_unit_test(test_queue_failures),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_deadlines),
		cmocka_unit_test(test_data_budget_held_while_congested),
		cmocka_unit_test(test_greeting_deadline_counts_handshake),
		cmocka_unit_test(test_junk_commands),
		cmocka_unit_test(test_bdat_empty_chunks_are_junk),
		cmocka_unit_test(test_domain_check),
		cmocka_unit_test(test_auth_advertised),
		cmocka_unit_test(test_auth_plain),
		cmocka_unit_test(test_auth_login),
		cmocka_unit_test(test_auth_line_limit),
		cmocka_unit_test(test_auth_state_errors),
		cmocka_unit_test(test_auth_delay_not_idle),
		cmocka_unit_test(test_auth_throttled_greeting),
		cmocka_unit_test(test_submission_policy),
		cmocka_unit_test(test_submission_headers),
		cmocka_unit_test(test_submission_header_bypass),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
