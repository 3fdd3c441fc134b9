/*
 * test_queue_control.c - the control socket's JSON string writer
 * (queue_control.h; the request line is test_proto_control_line.c).
 * Table-driven: each case names what it checks, the input, and what it
 * wants.
 */
#include <event2/buffer.h>

#include "queue/queue_control.h"
#include "unit.h"
#include "lib/util.h"

struct json_case {
	const char *name;
	const char *in;
	const char *want;
};

static const struct json_case json_cases[] = {
	{ "plain", "alice@example.org", "\"alice@example.org\"" },
	{ "quote and backslash", "a\"b\\c", "\"a\\\"b\\\\c\"" },
	{ "control", "a\tb\x01", "\"a\\u0009b\\u0001\"" },
	{ "DEL", "a\x7f", "\"a\\u007f\"" },
	{ "utf-8 kept", "j\xc3\xb6rg@b\xc3\xbc.example", "\"j\xc3\xb6rg@b\xc3\xbc.example\"" },
	{ "4-octet utf-8 kept", "\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"" },
	{ "invalid octet", "a\xffz", "\"a\\ufffdz\"" },
	{ "truncated sequence", "a\xc3", "\"a\\ufffd\"" },
	{ "overlong", "\xc0\xaf", "\"\\ufffd\\ufffd\"" },
	{ "surrogate", "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"" },
	{ "empty", "", "\"\"" },
	{ "null", NULL, "null" },
};

static void
test_json_str_table(void **state)
{
	for (size_t i = 0; i < nitems(json_cases); i++) {
		const struct json_case *c = &json_cases[i];
		struct evbuffer *b = evbuffer_new();
		size_t len;
		char *got;

		assert_non_null(b);
		queue_control_json_str(b, c->in);
		len = evbuffer_get_length(b);
		got = xmalloc(len + 1);
		evbuffer_remove(b, got, len);
		got[len] = '\0';
		if (strcmp(got, c->want) != 0)
			fail_msg("%s: want %s, got %s", c->name, c->want, got);
		free(got);
		evbuffer_free(b);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_str_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
