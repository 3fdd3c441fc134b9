/*
 * test_queue_control.c - the control socket's JSON string writer and the
 * client's reading of answers (queue_control.h; the request line is
 * test_proto_control_line.c). Table-driven: each case names what it
 * checks, the input, and what it wants.
 */
#include <event2/buffer.h>

#include "proto/control_line.h"
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

/* The client's reading of an answer (queue_control_answer). */
struct answer_case {
	const char *name;
	enum control_line_verb verb;
	const char *doc;
	int want_rc;
	const char *want_out;
	const char *want_err;
};

static const struct answer_case answer_cases[] = {
	{ "flush", CONTROL_LINE_FLUSH, "{\"ok\":true,\"flushed\":3}\n", 0,
	  "3 messages flushed\n", "" },
	{ "one flushed", CONTROL_LINE_FLUSH, "{\"ok\":true,\"flushed\":1}", 0,
	  "1 message flushed\n", "" },
	/* found by fuzz_queue_control: (int64_t)1e300 is undefined */
	{ "number beyond int64", CONTROL_LINE_FLUSH,
	  "{\"ok\":true,\"flushed\":1e300}", 0, "-1 messages flushed\n", "" },
	{ "infinite number", CONTROL_LINE_FLUSH,
	  "{\"ok\":true,\"flushed\":-1e999}", 0, "-1 messages flushed\n", "" },
	{ "action", CONTROL_LINE_HOLD,
	  "{\"ok\":true,\"id\":\"0123456789abcdef\",\"action\":\"held\"}", 0,
	  "0123456789abcdef: held\n", "" },
	{ "error with id", CONTROL_LINE_SHOW,
	  "{\"ok\":false,\"error\":\"not found\",\"id\":\"0123456789abcdef\"}", 1,
	  "", "tern queue: 0123456789abcdef: not found\n" },
	{ "escapes read back", CONTROL_LINE_LIST,
	  "{\"ok\":false,\"error\":\"a\\u00e9\\\"\\u0001\"}", 1, "",
	  "tern queue: a\xc3\xa9\"\x01\n" },
	{ "not an object", CONTROL_LINE_LIST, "[1]", 1, "",
	  "tern queue: malformed answer from tern\n" },
	{ "trailing garbage", CONTROL_LINE_LIST, "{\"ok\":true} x", 1, "",
	  "tern queue: malformed answer from tern\n" },
	{ "too deep", CONTROL_LINE_LIST,
	  "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}", 1, "",
	  "tern queue: malformed answer from tern\n" },
};

static void
test_answer_table(void **state)
{
	for (size_t i = 0; i < nitems(answer_cases); i++) {
		const struct answer_case *c = &answer_cases[i];
		struct control_line req = { .verb = c->verb,
			.id = "0123456789abcdef" };
		char *out = NULL, *err = NULL;
		size_t outlen = 0, errlen = 0;
		FILE *fo = open_memstream(&out, &outlen);
		FILE *fe = open_memstream(&err, &errlen);
		int rc;

		assert_non_null(fo);
		assert_non_null(fe);
		rc = queue_control_answer(c->doc, strlen(c->doc), &req, false, fo,
		    fe);
		fclose(fo);
		fclose(fe);
		if (rc != c->want_rc || strcmp(out, c->want_out) != 0 ||
		    strcmp(err, c->want_err) != 0)
			fail_msg("%s: want %d \"%s\" \"%s\", got %d \"%s\" \"%s\"",
			    c->name, c->want_rc, c->want_out, c->want_err, rc, out,
			    err);
		free(out);
		free(err);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_str_table),
		cmocka_unit_test(test_answer_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
