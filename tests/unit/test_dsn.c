/*
 * test_dsn.c - the DSN generator (dsn.h): NOTIFY policy, xtext, address
 * fields, and whole reports checked line by line (CRLF, 998 octets, the
 * RFC 3464 fields in their order, the returned content per RET and size).
 * tests/integration/test_dsn.py parses real reports with Python's email
 * package on top of this.
 */
#include "unit.h"

#include <event2/buffer.h>

#include "mail/dsn.h"
#include "mail/envelope.h"
#include "lib/util.h"

/* ---- NOTIFY policy (RFC 3461 4.1) ---- */

static void
test_wanted(void **state)
{
	static const struct {
		const char *name;
		unsigned notify;
		bool failed, delayed, delivered, relayed;
	} cases[] = {
		{ "absent", 0, true, true, false, false },
		{ "never", ENVELOPE_NOTIFY_NEVER, false, false, false, false },
		{ "success", ENVELOPE_NOTIFY_SUCCESS, false, false, true, true },
		{ "failure", ENVELOPE_NOTIFY_FAILURE, true, false, false, false },
		{ "delay", ENVELOPE_NOTIFY_DELAY, false, true, false, false },
		{ "all", ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_FAILURE |
		    ENVELOPE_NOTIFY_DELAY, true, true, true, true },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		print_message("case %s\n", cases[i].name);
		assert_int_equal(dsn_wanted(cases[i].notify, DSN_ACTION_FAILED),
		    cases[i].failed);
		assert_int_equal(dsn_wanted(cases[i].notify, DSN_ACTION_DELAYED),
		    cases[i].delayed);
		assert_int_equal(dsn_wanted(cases[i].notify,
		    DSN_ACTION_DELIVERED), cases[i].delivered);
		assert_int_equal(dsn_wanted(cases[i].notify, DSN_ACTION_RELAYED),
		    cases[i].relayed);
	}
}

/* ---- xtext (RFC 3461 4) ---- */

static void
test_xtext(void **state)
{
	static const struct {
		const char *in;
		const char *want;   /* NULL: invalid */
	} dec[] = {
		{ "bob@example.org", "bob@example.org" },
		{ "bob+2Bext@example.org", "bob+ext@example.org" },
		{ "a+20b+3Dc", "a b=c" },
		{ "", "" },
		{ "bad+2b", NULL },       /* hex must be upper case */
		{ "bad+2", NULL },
		{ "bad+", NULL },
		{ "a=b", NULL },
		{ "a b", NULL },
		{ "caf\xc3\xa9", NULL },
	};
	char out[64];

	for (size_t i = 0; i < nitems(dec); i++) {
		int n = dsn_xtext_decode(dec[i].in, strlen(dec[i].in), out,
		    sizeof(out));

		print_message("decode %s\n", dec[i].in);
		if (dec[i].want == NULL) {
			assert_int_equal(n, -1);
		} else {
			assert_int_equal(n, (int)strlen(dec[i].want));
			assert_string_equal(out, dec[i].want);
		}
	}
	assert_int_equal(dsn_xtext_encode("a+b=c d\x01", 8, out, sizeof(out)),
	    16);
	assert_string_equal(out, "a+2Bb+3Dc+20d+01");
	/* round trip */
	assert_int_equal(dsn_xtext_decode(out, strlen(out), out, sizeof(out)), 8);
	assert_memory_equal(out, "a+b=c d\x01", 8);
	assert_int_equal(dsn_xtext_encode("abc", 3, out, 3), -1);
	assert_int_equal(dsn_xtext_decode("abc", 3, out, 3), -1);
}

/* ---- address fields (RFC 3461 6.3, RFC 6533 3) ---- */

static void
test_address_field(void **state)
{
	static const struct {
		const char *name, *addr, *orcpt, *want;
	} cases[] = {
		{ "ascii", "bob@example.org", NULL, "rfc822;bob@example.org" },
		{ "utf-8 address", "j\xc3\xb6rg@example.org", NULL,
		  "utf-8;j\\x{F6}rg@example.org" },
		{ "orcpt decoded", "bob@example.org", "rfc822;bob+2Bx@example.org",
		  "rfc822;bob+x@example.org" },
		{ "orcpt type kept", "bob@example.org", "RFC822;Bob@Example.ORG",
		  "RFC822;Bob@Example.ORG" },
		{ "orcpt utf-8 raw", "x@example.org", "utf-8;z\xc3\xbc@example.org",
		  "utf-8;z\\x{FC}@example.org" },
		{ "orcpt utf-8 xtext kept", "x@example.org",
		  "utf-8;z\\x{FC}@example.org", "utf-8;z\\x{FC}@example.org" },
		{ "orcpt utf-8 plus", "x@example.org", "utf-8;a+2Bb@example.org",
		  "utf-8;a\\x{2B}b@example.org" },
		{ "orcpt control decodes: kept as sent", "x@example.org",
		  "rfc822;a+0D+0AFrom:b", "rfc822;a+0D+0AFrom:b" },
		{ "orcpt without type", "x@example.org", "nosemicolon",
		  "unknown;nosemicolon" },
	};
	char out[256];

	for (size_t i = 0; i < nitems(cases); i++) {
		print_message("case %s\n", cases[i].name);
		assert_true(dsn_address_field(cases[i].addr, cases[i].orcpt, out,
		    sizeof(out)) > 0);
		assert_string_equal(out, cases[i].want);
	}
	assert_int_equal(dsn_address_field("bob@example.org", NULL, out, 16), -1);
}

/* ---- whole reports ---- */

struct report {
	char *text;
	size_t len;
	struct envelope env;   /* the report's envelope */
};

static void
build(struct report *r, const struct envelope *orig,
    const struct dsn_rcpt *rc, size_t n, const char *msg, size_t max_return)
{
	struct evbuffer *b = evbuffer_new();
	struct dsn_params p = {
		.reporting_mta = "mx.example.net",
		.unique = "0123456789abcdef.1.dsn",
		.now = 1796000100,
		.max_return = max_return,
	};

	envelope_init(&r->env);
	dsn_build(orig, rc, n, msg, strlen(msg), &p, b, &r->env);
	r->len = evbuffer_get_length(b);
	r->text = xmalloc(r->len + 1);
	evbuffer_remove(b, r->text, r->len);
	r->text[r->len] = '\0';
	evbuffer_free(b);
	if (getenv("TERN_DSN_DUMP") != NULL)
		fprintf(stderr, "%s\n----\n", r->text);
}

static void
report_free(struct report *r)
{
	free(r->text);
	envelope_clear(&r->env);
}

/* RFC 5322 2.1.1 / 2.3: CRLF only, no line over 998 octets. */
static void
assert_lines_ok(const struct report *r)
{
	size_t start = 0;

	for (size_t i = 0; i < r->len; i++) {
		if (r->text[i] == '\n') {
			assert_true(i > 0 && r->text[i - 1] == '\r');
			assert_true(i - 1 - start <= 998);
			start = i + 1;
		} else if (r->text[i] == '\r') {
			assert_true(i + 1 < r->len && r->text[i + 1] == '\n');
		}
	}
	assert_int_equal(start, r->len);   /* ends with CRLF */
}

/* The offset of needle in r, after from; fails if absent. */
static size_t
find(const struct report *r, size_t from, const char *needle)
{
	const char *p = memmem(r->text + from, r->len - from, needle,
	    strlen(needle));

	if (p == NULL)
		fail_msg("not found: %s", needle);
	return (size_t)(p - r->text);
}

static bool
contains(const struct report *r, const char *needle)
{
	return memmem(r->text, r->len, needle, strlen(needle)) != NULL;
}

static const char MSG[] =
    "Received: from client.example.org by mx.example.net\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@remote.example\r\n"
    "Subject: lunch\r\n"
    "\r\n"
    "Shall we have lunch?\r\n"
    "-- \r\n"
    "Alice\r\n";

static void
orig_init(struct envelope *e)
{
	envelope_init(e);
	util_strlcpy(e->id, "0123456789abcdef", sizeof(e->id));
	e->arrival = 1796000000;
	envelope_set(&e->sender, "alice@example.org");
	envelope_set(&e->helo, "client.example.org");
	envelope_set(&e->envid, "QQ+2B314");
	envelope_add_rcpt(e, "bob@remote.example", "rfc822;bob@remote.example",
	    0);
	envelope_add_rcpt(e, "carol@remote.example", NULL, 0);
}

static void
test_failure_report(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc[2] = {
		{ .addr = "bob@remote.example", .orcpt = "rfc822;bob@remote.example",
		  .action = DSN_ACTION_FAILED, .remote_mta = "mx.remote.example",
		  .diagnostic = "550 5.1.1 <bob@remote.example>: no such user",
		  .last_attempt = 1796000050 },
		{ .addr = "carol@remote.example", .action = DSN_ACTION_FAILED,
		  .diagnostic = "451 4.4.7 Delivery time expired, last reply: "
		  "451 4.3.0 try later", .last_attempt = 1796000060 },
	};
	size_t ds, p3, o;

	orig_init(&orig);
	build(&r, &orig, rc, 2, MSG, 100000);
	assert_lines_ok(&r);
	/* the report's header */
	assert_true(contains(&r, "From: Mail Delivery System "
	    "<MAILER-DAEMON@mx.example.net>\r\n"));
	assert_true(contains(&r, "To: <alice@example.org>\r\n"));
	assert_true(contains(&r, "Subject: Undelivered Mail Returned to "
	    "Sender\r\n"));
	assert_true(contains(&r, "Auto-Submitted: auto-replied\r\n"));
	assert_true(contains(&r, "MIME-Version: 1.0\r\n"));
	assert_true(contains(&r, "Message-ID: <0123456789abcdef.1.dsn@"
	    "mx.example.net>\r\n"));
	assert_true(contains(&r, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\""));
	/* plain words: which address, why, what to do */
	assert_true(contains(&r, "<bob@remote.example>: failed"));
	assert_true(contains(&r, "no such user"));
	assert_true(contains(&r, "What you can do: The address does not "
	    "exist"));
	assert_true(contains(&r, "What you can do: The recipient's mail "
	    "system could not be reached"));
	/* message/delivery-status, fields in RFC 3464 order */
	ds = find(&r, 0, "Content-Type: message/delivery-status\r\n\r\n");
	o = find(&r, ds, "Original-Envelope-Id: QQ+314\r\n");
	o = find(&r, o, "Reporting-MTA: dns; mx.example.net\r\n");
	o = find(&r, o, "Received-From-MTA: dns; client.example.org\r\n");
	o = find(&r, o, "Arrival-Date: ");
	o = find(&r, o, "\r\n\r\nOriginal-Recipient: rfc822;bob@remote.example\r\n"
	    "Final-Recipient: rfc822;bob@remote.example\r\n"
	    "Action: failed\r\n"
	    "Status: 5.1.1\r\n"
	    "Remote-MTA: dns; mx.remote.example\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.example>: no such "
	    "user\r\nLast-Attempt-Date: ");
	o = find(&r, o, "\r\n\r\nFinal-Recipient: rfc822;carol@remote.example\r\n"
	    "Action: failed\r\n"
	    "Status: 4.4.7\r\n"
	    "Diagnostic-Code: smtp; 451 4.4.7 Delivery time expired, last "
	    "reply: 451 4.3.0\r\n try later\r\n");
	/* no Original-Recipient for carol: she had no ORCPT */
	assert_null(memmem(r.text + ds, o - ds, "Original-Recipient: rfc822;"
	    "carol", 32));
	/* the whole message comes back (RET absent) */
	p3 = find(&r, o, "Content-Type: message/rfc822\r\n\r\n");
	o = find(&r, p3, MSG);
	assert_true(r.text[o + strlen(MSG)] == '\r');
	find(&r, o, "\r\n--=_tern-dsn-0123456789abcdef.1.dsn-0--\r\n");
	/* the report's envelope */
	assert_string_equal(r.env.sender, "");
	assert_int_equal(r.env.nrcpts, 1);
	assert_string_equal(r.env.rcpts[0].addr, "alice@example.org");
	assert_int_equal(r.env.body, ENVELOPE_BODY_7BIT);
	assert_false(r.env.smtputf8);
	assert_int_equal(r.env.arrival, 1796000100);
	report_free(&r);
	envelope_clear(&orig);
}

static void
test_ret_hdrs(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "bob@remote.example",
	    .action = DSN_ACTION_FAILED, .status = "5.2.2",
	    .diagnostic = "552 5.2.2 Mailbox full" };
	size_t p3;

	orig_init(&orig);
	orig.ret = ENVELOPE_RET_HDRS;
	build(&r, &orig, &rc, 1, MSG, 100000);
	assert_lines_ok(&r);
	p3 = find(&r, 0, "Content-Type: text/rfc822-headers\r\n\r\n"
	    "Received: from client.example.org by mx.example.net\r\n");
	find(&r, p3, "Subject: lunch\r\n\r\n--=_tern-dsn-");
	assert_false(contains(&r, "Shall we have lunch?"));
	assert_true(contains(&r, "Status: 5.2.2\r\n"));
	assert_true(contains(&r, "mailbox is full"));
	report_free(&r);
	envelope_clear(&orig);
}

static void
test_truncated(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "bob@remote.example",
	    .action = DSN_ACTION_FAILED,
	    .diagnostic = "552 5.3.4 Message too big" };
	char msg[8192];
	size_t o = 0;

	orig_init(&orig);
	o += (size_t)snprintf(msg, sizeof(msg), "Subject: big\r\n\r\n");
	for (int i = 0; o + 40 < sizeof(msg); i++)
		o += (size_t)snprintf(msg + o, sizeof(msg) - o,
		    "line %04d of the body\r\n", i);
	build(&r, &orig, &rc, 1, msg, 1000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "Content-Type: message/rfc822\r\n"));
	assert_true(contains(&r, "line 0000 of the body\r\n"));
	assert_false(contains(&r, "line 0100 of the body"));
	assert_true(contains(&r, "cut short"));
	assert_true(contains(&r, "too big for the recipient's"));
	report_free(&r);

	/* max_return 0: the header only */
	build(&r, &orig, &rc, 1, msg, 0);
	assert_true(contains(&r, "Content-Type: text/rfc822-headers\r\n"));
	assert_false(contains(&r, "line 0000"));
	report_free(&r);
	envelope_clear(&orig);
}

static void
test_delay_report(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "bob@remote.example",
	    .action = DSN_ACTION_DELAYED, .remote_mta = "mx.remote.example",
	    .diagnostic = "451 4.3.0 try again later",
	    .last_attempt = 1796000050, .retry_until = 1796432000 };
	size_t o;

	orig_init(&orig);
	build(&r, &orig, &rc, 1, MSG, 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "Subject: Delayed Mail (still being "
	    "retried)\r\n"));
	o = find(&r, 0, "Action: delayed\r\nStatus: 4.3.0\r\n");
	o = find(&r, o, "Last-Attempt-Date: ");
	find(&r, o, "Will-Retry-Until: ");
	/* RFC 3461 6.2: no failure, headers only */
	assert_true(contains(&r, "Content-Type: text/rfc822-headers\r\n"));
	assert_false(contains(&r, "Shall we have lunch?"));
	assert_true(contains(&r, "you do not need to send the message again"));
	report_free(&r);
	envelope_clear(&orig);
}

static void
test_success_report(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc[2] = {
		{ .addr = "bob@example.net", .action = DSN_ACTION_DELIVERED },
		{ .addr = "carol@remote.example", .action = DSN_ACTION_RELAYED,
		  .remote_mta = "mx.remote.example",
		  .diagnostic = "250 2.0.0 Ok: queued" },
	};

	orig_init(&orig);
	envelope_set(&orig.envid, NULL);
	build(&r, &orig, rc, 2, MSG, 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "Subject: Successful Mail Delivery Report\r\n"));
	assert_true(contains(&r, "Final-Recipient: rfc822;bob@example.net\r\n"
	    "Action: delivered\r\nStatus: 2.0.0\r\n"));
	assert_true(contains(&r, "Action: relayed\r\nStatus: 2.0.0\r\n"
	    "Remote-MTA: dns; mx.remote.example\r\n"));
	/* RFC 3461 6.3(a): no ENVID, no Original-Envelope-Id */
	assert_false(contains(&r, "Original-Envelope-Id"));
	assert_true(contains(&r, "Content-Type: text/rfc822-headers\r\n"));
	assert_true(contains(&r, "does not send delivery reports"));
	report_free(&r);
	envelope_clear(&orig);
}

/* Long words, hostile text: still CRLF lines of at most 998 octets. */
static void
test_long_and_hostile(void **state)
{
	struct envelope orig;
	struct report r;
	char diag[3000], addr[1100];
	struct dsn_rcpt rc = { .action = DSN_ACTION_FAILED };

	orig_init(&orig);
	memcpy(diag, "550 5.7.1 ", 10);
	memset(diag + 10, 'x', sizeof(diag) - 11);
	diag[sizeof(diag) - 1] = '\0';
	diag[500] = '\r';
	diag[501] = '\n';
	memset(addr, 'a', 1000);
	memcpy(addr + 1000, "@remote.example", 16);
	rc.addr = addr;
	rc.diagnostic = diag;
	rc.remote_mta = "mx.remote.example";
	build(&r, &orig, &rc, 1, MSG, 100000);
	assert_lines_ok(&r);
	/* the CR LF of the diagnostic never starts a line of its own */
	assert_false(contains(&r, "\r\nxxxxxxxx"));
	report_free(&r);
	envelope_clear(&orig);
}

static void
test_boundary_collision(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "bob@remote.example",
	    .action = DSN_ACTION_FAILED, .diagnostic = "550 5.1.1 no" };
	static const char msg[] = "Subject: tricky\r\n\r\n"
	    "--=_tern-dsn-0123456789abcdef.1.dsn-0--\r\n";

	orig_init(&orig);
	build(&r, &orig, &rc, 1, msg, 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "boundary=\"=_tern-dsn-0123456789abcdef.1.dsn-1\""));
	report_free(&r);
	envelope_clear(&orig);
}

/*
 * The boundary occurs in no part: not in the returned content, and not
 * in the text or delivery-status parts either (a reply or an address
 * that holds it); with a nonce, it is made of the nonce.
 */
static void
test_boundary_in_every_part(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "bob@remote.example",
	    .action = DSN_ACTION_FAILED,
	    .diagnostic = "550 5.1.1 no --=_tern-dsn-0123456789abcdef.1.dsn-0" };
	struct evbuffer *b;
	struct dsn_params p = {
		.reporting_mta = "mx.example.net",
		.unique = "0123456789abcdef.1.dsn",
		.nonce = "5f1c0a9e7d3b44c2a1e8f06b9d2c7e13",
		.now = 1796000100,
		.max_return = 100000,
	};
	char *text;
	size_t len;

	(void)state;
	orig_init(&orig);
	build(&r, &orig, &rc, 1, MSG, 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "boundary=\"=_tern-dsn-0123456789abcdef.1.dsn-1\""));
	report_free(&r);

	b = evbuffer_new();
	envelope_init(&r.env);
	dsn_build(&orig, &rc, 1, MSG, strlen(MSG), &p, b, &r.env);
	len = evbuffer_get_length(b);
	text = xmalloc(len + 1);
	evbuffer_remove(b, text, len);
	text[len] = '\0';
	evbuffer_free(b);
	assert_non_null(strstr(text, "boundary=\"=_tern-dsn-"
	    "5f1c0a9e7d3b44c2a1e8f06b9d2c7e13-0\""));
	assert_null(strstr(text, "0123456789abcdef.1.dsn-1"));
	free(text);
	envelope_clear(&r.env);
	envelope_clear(&orig);
}

/* RFC 3464 2.3.4, RFC 3463 2: Status from the reply, normalised. */
static void
test_status_grammar(void **state)
{
	static const struct {
		const char *name;
		enum dsn_action action;
		const char *status, *diag, *want;
	} cases[] = {
		{ "plain", DSN_ACTION_FAILED, NULL, "550 5.1.1 no", "5.1.1" },
		{ "three digits", DSN_ACTION_FAILED, NULL, "550 5.7.255 x", "5.7.255" },
		{ "leading zeros", DSN_ACTION_FAILED, NULL, "550 5.01.001 x", "5.0.0" },
		{ "zero detail", DSN_ACTION_FAILED, NULL, "550 5.1.0 x", "5.1.0" },
		{ "too many digits", DSN_ACTION_FAILED, NULL, "550 5.1.1000 x", "5.0.0" },
		{ "class 4 reply", DSN_ACTION_DELAYED, NULL, "451 4.04.1 x", "4.0.0" },
		{ "class mismatch", DSN_ACTION_FAILED, NULL, "550 4.1.1 x", "5.0.0" },
		{ "no enhanced code", DSN_ACTION_FAILED, NULL, "550 no such user", "5.0.0" },
		{ "4xx failure", DSN_ACTION_FAILED, NULL, "451 too long", "4.0.0" },
		{ "no reply", DSN_ACTION_DELAYED, NULL, NULL, "4.0.0" },
		{ "given", DSN_ACTION_FAILED, "5.2.2", "550 5.1.1 x", "5.2.2" },
		{ "given, bad", DSN_ACTION_FAILED, "5.02.2", "550 5.1.1 x", "5.1.1" },
		{ "trailing dot", DSN_ACTION_FAILED, NULL, "550 5.1.1. x", "5.0.0" },
	};
	struct envelope orig;

	(void)state;
	orig_init(&orig);
	for (size_t i = 0; i < nitems(cases); i++) {
		struct dsn_rcpt rc = { .addr = "bob@remote.example",
		    .action = cases[i].action, .status = cases[i].status,
		    .diagnostic = cases[i].diag };
		struct report r;
		char want[64];

		print_message("case %s\n", cases[i].name);
		build(&r, &orig, &rc, 1, MSG, 100000);
		snprintf(want, sizeof(want), "\r\nStatus: %s\r\n", cases[i].want);
		if (!contains(&r, want))
			fail_msg("case %s: want %s", cases[i].name, cases[i].want);
		report_free(&r);
	}
	envelope_clear(&orig);
}

static void
test_utf8(void **state)
{
	struct envelope orig;
	struct report r;
	struct dsn_rcpt rc = { .addr = "z\xc3\xbc@remote.example",
	    .orcpt = "utf-8;z\xc3\xbc@remote.example",
	    .action = DSN_ACTION_FAILED, .diagnostic = "550 5.1.1 no" };
	static const char msg[] = "Subject: gr\xc3\xbc\xc3\x9f" "e\r\n\r\nbody\r\n";

	orig_init(&orig);
	envelope_set(&orig.sender, "j\xc3\xb6rg@example.org");
	orig.smtputf8 = true;
	build(&r, &orig, &rc, 1, msg, 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "Content-Type: message/global\r\n"));
	assert_true(contains(&r, "Original-Recipient: utf-8;z\\x{FC}@remote.example\r\n"));
	assert_true(contains(&r, "Final-Recipient: utf-8;z\\x{FC}@remote.example\r\n"));
	assert_true(contains(&r, "To: <j\xc3\xb6rg@example.org>\r\n"));
	assert_true(r.env.smtputf8);
	assert_int_equal(r.env.body, ENVELOPE_BODY_8BITMIME);
	report_free(&r);

	/* 8-bit body without SMTPUTF8: message/rfc822, 8bit, BODY=8BITMIME */
	envelope_set(&orig.sender, "alice@example.org");
	orig.smtputf8 = false;
	build(&r, &orig, &rc, 1, "Subject: x\r\n\r\n\xe9t\xe9\r\n", 100000);
	assert_lines_ok(&r);
	assert_true(contains(&r, "Content-Type: message/rfc822\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"));
	assert_false(r.env.smtputf8);
	assert_int_equal(r.env.body, ENVELOPE_BODY_8BITMIME);
	report_free(&r);
	envelope_clear(&orig);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wanted),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_address_field),
		cmocka_unit_test(test_failure_report),
		cmocka_unit_test(test_ret_hdrs),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_delay_report),
		cmocka_unit_test(test_success_report),
		cmocka_unit_test(test_long_and_hostile),
		cmocka_unit_test(test_boundary_collision),
		cmocka_unit_test(test_boundary_in_every_part),
		cmocka_unit_test(test_status_grammar),
		cmocka_unit_test(test_utf8),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
