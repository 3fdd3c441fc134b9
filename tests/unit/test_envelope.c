/*
 * test_envelope.c - the envelope text form: round trip and every class of
 * malformed input the parser must refuse (table-driven).
 */
#include "unit.h"

#include <event2/buffer.h>

#include "mail/envelope.h"
#include "lib/util.h"

static char *
serialize(const struct envelope *env, size_t *len)
{
	struct evbuffer *b = evbuffer_new();
	char *s;

	envelope_serialize(env, b);
	*len = evbuffer_get_length(b);
	s = xmalloc(*len + 1);
	evbuffer_remove(b, s, *len);
	s[*len] = '\0';
	evbuffer_free(b);
	return s;
}

static void
fill(struct envelope *env)
{
	envelope_init(env);
	env->arrival = 1796000000;
	envelope_set(&env->sender, "alice@example.org");
	envelope_set(&env->helo, "client.example.org");
	envelope_set(&env->client_addr, "192.0.2.1");
	envelope_set(&env->protocol, "ESMTP");
	env->body = ENVELOPE_BODY_8BITMIME;
	env->smtputf8 = true;
	env->ret = ENVELOPE_RET_HDRS;
	envelope_set(&env->envid, "QQ+2Bxyz");
	env->size_declared = 4096;
	envelope_add_rcpt(env, "bob@localhost", NULL, 0);
	envelope_add_rcpt(env, "\"john doe\"@localhost", "rfc822;john+40x",
	    ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_DELAY);
	envelope_add_rcpt(env, "j\xc3\xbcrgen@example.net", NULL,
	    ENVELOPE_NOTIFY_NEVER);
}

static void
test_round_trip(void **state)
{
	struct envelope a, b;
	char err[128];
	size_t len, len2;
	char *text, *text2;

	fill(&a);
	util_strlcpy(a.id, "0123456789abcdef", sizeof(a.id));
	text = serialize(&a, &len);
	envelope_init(&b);
	assert_int_equal(envelope_parse(&b, text, len, 100, err, sizeof(err)), 0);
	assert_string_equal(b.id, "0123456789abcdef");
	assert_int_equal(b.arrival, 1796000000);
	assert_string_equal(b.sender, "alice@example.org");
	assert_string_equal(b.helo, "client.example.org");
	assert_string_equal(b.client_addr, "192.0.2.1");
	assert_string_equal(b.protocol, "ESMTP");
	assert_int_equal(b.body, ENVELOPE_BODY_8BITMIME);
	assert_true(b.smtputf8);
	assert_int_equal(b.ret, ENVELOPE_RET_HDRS);
	assert_string_equal(b.envid, "QQ+2Bxyz");
	assert_int_equal(b.size_declared, 4096);
	assert_int_equal(b.nrcpts, 3);
	assert_string_equal(b.rcpts[0].addr, "bob@localhost");
	assert_null(b.rcpts[0].orcpt);
	assert_int_equal(b.rcpts[0].notify, 0);
	assert_string_equal(b.rcpts[1].addr, "\"john doe\"@localhost");
	assert_string_equal(b.rcpts[1].orcpt, "rfc822;john+40x");
	assert_int_equal(b.rcpts[1].notify,
	    ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_DELAY);
	assert_int_equal(b.rcpts[2].notify, ENVELOPE_NOTIFY_NEVER);
	/* Serialising the parsed copy gives the same text. */
	text2 = serialize(&b, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(text, text2, len);
	free(text);
	free(text2);
	envelope_clear(&a);
	envelope_clear(&b);
}

static void
test_minimal_and_null_sender(void **state)
{
	static const char text[] = "version 1\narrival 0\nsender \nrcpt - - a@b\n";
	struct envelope e;
	char err[128];

	envelope_init(&e);
	assert_int_equal(envelope_parse(&e, text, sizeof(text) - 1, 10, err,
	    sizeof(err)), 0);
	assert_string_equal(e.sender, "");
	assert_null(e.helo);
	assert_int_equal(e.body, ENVELOPE_BODY_NONE);
	assert_int_equal(e.id[0], '\0');
	envelope_clear(&e);
}

static void
test_not_nul_terminated(void **state)
{
	/* The parser reads (p, len) only: the byte after len is garbage. */
	char buf[] = "version 1\narrival 5\nsender x@y\nrcpt - - a@b\nXXXX";
	struct envelope e;
	char err[128];

	envelope_init(&e);
	assert_int_equal(envelope_parse(&e, buf, sizeof(buf) - 5, 10, err,
	    sizeof(err)), 0);
	envelope_clear(&e);
}

struct bad_case {
	const char *name;
	const char *text;
	size_t len;        /* 0: strlen(text) */
	size_t max_rcpts;
};

#define HEAD "version 1\narrival 5\nsender a@b\n"
#define RCPT "rcpt - - c@d\n"

static const struct bad_case bad_cases[] = {
	{ "empty", "", 0, 10 },
	{ "no version", "arrival 5\nsender a@b\n" RCPT, 0, 10 },
	{ "version not first", "arrival 5\nversion 1\nsender a@b\n" RCPT, 0, 10 },
	{ "unknown version", "version 2\narrival 5\nsender a@b\n" RCPT, 0, 10 },
	{ "version junk", "version 01\narrival 5\nsender a@b\n" RCPT, 0, 10 },
	{ "no final newline", HEAD "rcpt - - c@d", 0, 10 },
	{ "blank line", HEAD "\n" RCPT, 0, 10 },
	{ "missing arrival", "version 1\nsender a@b\n" RCPT, 0, 10 },
	{ "missing sender", "version 1\narrival 5\n" RCPT, 0, 10 },
	{ "no recipients", HEAD, 0, 10 },
	{ "too many recipients", HEAD RCPT RCPT RCPT, 0, 2 },
	{ "unknown record", HEAD "x-foo bar\n" RCPT, 0, 10 },
	{ "record without value", HEAD "helo\n" RCPT, 0, 10 },
	{ "duplicate sender", HEAD "sender e@f\n" RCPT, 0, 10 },
	{ "duplicate helo", HEAD "helo a\nhelo b\n" RCPT, 0, 10 },
	{ "duplicate id", HEAD "id 0123456789abcdef\nid 0123456789abcdef\n" RCPT, 0, 10 },
	{ "CR in value", HEAD "helo a\rb\n" RCPT, 0, 10 },
	{ "CRLF line end", "version 1\r\narrival 5\nsender a@b\n" RCPT, 0, 10 },
	{ "NUL in value", HEAD "helo a\0b\n" RCPT, sizeof(HEAD "helo a\0b\n" RCPT) - 1, 10 },
	{ "tab in sender", "version 1\narrival 5\nsender a\t@b\n" RCPT, 0, 10 },
	{ "DEL in rcpt", HEAD "rcpt - - c\x7f@d\n", 0, 10 },
	{ "bad UTF-8", HEAD "rcpt - - c\xc3@d\n", 0, 10 },
	{ "overlong UTF-8", HEAD "rcpt - - c\xc0\xaf@d\n", 0, 10 },
	{ "UTF-8 surrogate", HEAD "rcpt - - c\xed\xa0\x80@d\n", 0, 10 },
	{ "arrival not a number", "version 1\narrival 5x\nsender a@b\n" RCPT, 0, 10 },
	{ "arrival negative", "version 1\narrival -5\nsender a@b\n" RCPT, 0, 10 },
	{ "arrival leading zero", "version 1\narrival 05\nsender a@b\n" RCPT, 0, 10 },
	{ "arrival huge", "version 1\narrival 99999999999999999999999\nsender a@b\n" RCPT, 0, 10 },
	{ "size zero", HEAD "size 0\n" RCPT, 0, 10 },
	{ "size overflow", HEAD "size 18446744073709551616\n" RCPT, 0, 10 },
	{ "id short", HEAD "id 0123\n" RCPT, 0, 10 },
	{ "id upper case", HEAD "id 0123456789ABCDEF\n" RCPT, 0, 10 },
	{ "id not hex", HEAD "id 0123456789abcdeg\n" RCPT, 0, 10 },
	{ "body unknown", HEAD "body BINARYMIME\n" RCPT, 0, 10 },
	{ "ret unknown", HEAD "ret ALL\n" RCPT, 0, 10 },
	{ "smtputf8 0", HEAD "smtputf8 0\n" RCPT, 0, 10 },
	{ "protocol with space", HEAD "protocol E SMTP\n" RCPT, 0, 10 },
	{ "client empty", HEAD "client \n" RCPT, 0, 10 },
	{ "envid with space", HEAD "envid a b\n" RCPT, 0, 10 },
	{ "rcpt two fields", HEAD "rcpt - c@d\n", 0, 10 },
	{ "rcpt empty address", HEAD "rcpt - - \n", 0, 10 },
	{ "rcpt bad notify", HEAD "rcpt SOMETIMES - c@d\n", 0, 10 },
	{ "rcpt notify never+success", HEAD "rcpt NEVER,SUCCESS - c@d\n", 0, 10 },
	{ "rcpt notify duplicate", HEAD "rcpt DELAY,DELAY - c@d\n", 0, 10 },
	{ "rcpt notify trailing comma", HEAD "rcpt DELAY, - c@d\n", 0, 10 },
	{ "rcpt orcpt without type", HEAD "rcpt - john c@d\n", 0, 10 },
	{ "rcpt orcpt empty", HEAD "rcpt -  c@d\n", 0, 10 },
};

static void
test_bad_inputs(void **state)
{
	for (size_t i = 0; i < nitems(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t len = c->len ? c->len : strlen(c->text);
		struct envelope e;
		char err[128] = "";
		int got;

		envelope_init(&e);
		got = envelope_parse(&e, c->text, len, c->max_rcpts, err, sizeof(err));
		if (got != -1)
			fail_msg("case \"%s\": want -1, got %d", c->name, got);
		if (err[0] == '\0')
			fail_msg("case \"%s\": no reason given", c->name);
		/* A failed parse leaves the envelope empty (nothing leaks). */
		assert_int_equal(e.nrcpts, 0);
		assert_null(e.sender);
	}
}

static void
test_field_too_long(void **state)
{
	struct evbuffer *b = evbuffer_new();
	struct envelope e;
	char err[128];
	char *text;
	size_t len;

	evbuffer_add_printf(b, HEAD "helo ");
	for (int i = 0; i < ENVELOPE_MAX_FIELD + 1; i++)
		evbuffer_add(b, "h", 1);
	evbuffer_add_printf(b, "\n" RCPT);
	len = evbuffer_get_length(b);
	text = (char *)evbuffer_pullup(b, -1);
	envelope_init(&e);
	assert_int_equal(envelope_parse(&e, text, len, 10, err, sizeof(err)), -1);
	evbuffer_free(b);

	/* An over-long address. */
	b = evbuffer_new();
	evbuffer_add_printf(b, HEAD "rcpt - - ");
	for (int i = 0; i < ENVELOPE_MAX_FIELD + 1; i++)
		evbuffer_add(b, "a", 1);
	evbuffer_add_printf(b, "@d\n");
	len = evbuffer_get_length(b);
	text = (char *)evbuffer_pullup(b, -1);
	envelope_init(&e);
	assert_int_equal(envelope_parse(&e, text, len, 10, err, sizeof(err)), -1);
	evbuffer_free(b);
}

static void
test_max_rcpts_bound(void **state)
{
	/* Exactly max_rcpts is fine; the hard bound caps a generous caller. */
	struct evbuffer *b = evbuffer_new();
	struct envelope e;
	char err[128];
	size_t len;

	evbuffer_add_printf(b, HEAD);
	for (int i = 0; i < 5; i++)
		evbuffer_add_printf(b, "rcpt - - u%d@d\n", i);
	len = evbuffer_get_length(b);
	envelope_init(&e);
	assert_int_equal(envelope_parse(&e, (char *)evbuffer_pullup(b, -1), len,
	    5, err, sizeof(err)), 0);
	assert_int_equal(e.nrcpts, 5);
	envelope_clear(&e);
	evbuffer_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_minimal_and_null_sender),
		cmocka_unit_test(test_not_nul_terminated),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_field_too_long),
		cmocka_unit_test(test_max_rcpts_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
