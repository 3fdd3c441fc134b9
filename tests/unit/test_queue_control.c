/*
 * test_queue_control.c - the control socket's request line parser, the
 * JSON string writer and the client's reading of answers
 * (queue_control.h). Table-driven: each case names
 * what it checks, the input, and what it wants.
 */
#include <event2/buffer.h>

#include "queue/queue_control.h"
#include "unit.h"
#include "lib/util.h"

struct parse_case {
	const char *name;
	const char *line;
	int want_rc;
	enum queue_control_verb want_verb;
	const char *want_id;
};

static const struct parse_case parse_cases[] = {
	{ "list", "list", 0, QUEUE_CONTROL_LIST, "" },
	{ "list with CR", "list\r", 0, QUEUE_CONTROL_LIST, "" },
	{ "show", "show 6616919388039000", 0, QUEUE_CONTROL_SHOW, "6616919388039000" },
	{ "upper-case id folded", "hold 66169193880390AF", 0, QUEUE_CONTROL_HOLD, "66169193880390af" },
	{ "flush all", "flush", 0, QUEUE_CONTROL_FLUSH, "" },
	{ "flush one", "flush 0123456789abcdef", 0, QUEUE_CONTROL_FLUSH, "0123456789abcdef" },
	{ "delete", "delete 0123456789abcdef", 0, QUEUE_CONTROL_DELETE, "0123456789abcdef" },
	{ "release", "release 0123456789abcdef", 0, QUEUE_CONTROL_RELEASE, "0123456789abcdef" },
	{ "empty", "", -1, 0, NULL },
	{ "unknown verb", "purge", -1, 0, NULL },
	{ "verb is case-sensitive", "LIST", -1, 0, NULL },
	{ "list takes no id", "list 0123456789abcdef", -1, 0, NULL },
	{ "show needs an id", "show", -1, 0, NULL },
	{ "short id", "show 0123", -1, 0, NULL },
	{ "long id", "show 0123456789abcdef0", -1, 0, NULL },
	{ "non-hex id", "show 0123456789abcdeg", -1, 0, NULL },
	{ "two spaces", "show  0123456789abcdef", -1, 0, NULL },
	{ "trailing space", "list ", -1, 0, NULL },
	{ "extra argument", "show 0123456789abcdef x", -1, 0, NULL },
	{ "tab", "show\t0123456789abcdef", -1, 0, NULL },
	{ "8-bit", "list\xc3\xa9", -1, 0, NULL },
	{ "prefix of a verb", "lis", -1, 0, NULL },
	{ "verb with suffix", "lists", -1, 0, NULL },
};

static void
test_parse_table(void **state)
{
	for (size_t i = 0; i < nitems(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct queue_control_req req;
		const char *why = NULL;
		int got = queue_control_parse(c->line, strlen(c->line), &req, &why);

		if (got != c->want_rc)
			fail_msg("%s: want rc %d, got %d (%s)", c->name, c->want_rc,
			    got, why ? why : "");
		if (got == 0) {
			if (req.verb != c->want_verb)
				fail_msg("%s: want verb %d, got %d", c->name,
				    (int)c->want_verb, (int)req.verb);
			if (strcmp(req.id, c->want_id) != 0)
				fail_msg("%s: want id '%s', got '%s'", c->name,
				    c->want_id, req.id);
		} else if (why == NULL || why[0] == '\0') {
			fail_msg("%s: no reason given", c->name);
		}
	}
}

/* A line at the bound is parsed; one octet more is refused. */
static void
test_parse_length_bound(void **state)
{
	char line[QUEUE_CONTROL_LINE_MAX + 8];
	struct queue_control_req req;
	const char *why;

	memset(line, 'x', sizeof(line));
	assert_int_equal(queue_control_parse(line, QUEUE_CONTROL_LINE_MAX, &req,
	    &why), -1);
	assert_string_equal(why, "request line too long");
	/* 255 octets + LF is the longest line: refused as unknown, not long. */
	assert_int_equal(queue_control_parse(line, QUEUE_CONTROL_LINE_MAX - 1,
	    &req, &why), -1);
	assert_string_not_equal(why, "request line too long");
}

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
	enum queue_control_verb verb;
	const char *doc;
	int want_rc;
	const char *want_out;
	const char *want_err;
};

static const struct answer_case answer_cases[] = {
	{ "flush", QUEUE_CONTROL_FLUSH, "{\"ok\":true,\"flushed\":3}\n", 0,
	  "3 messages flushed\n", "" },
	{ "one flushed", QUEUE_CONTROL_FLUSH, "{\"ok\":true,\"flushed\":1}", 0,
	  "1 message flushed\n", "" },
	/* found by fuzz_queue_control: (int64_t)1e300 is undefined */
	{ "number beyond int64", QUEUE_CONTROL_FLUSH,
	  "{\"ok\":true,\"flushed\":1e300}", 0, "-1 messages flushed\n", "" },
	{ "infinite number", QUEUE_CONTROL_FLUSH,
	  "{\"ok\":true,\"flushed\":-1e999}", 0, "-1 messages flushed\n", "" },
	{ "action", QUEUE_CONTROL_HOLD,
	  "{\"ok\":true,\"id\":\"0123456789abcdef\",\"action\":\"held\"}", 0,
	  "0123456789abcdef: held\n", "" },
	{ "error with id", QUEUE_CONTROL_SHOW,
	  "{\"ok\":false,\"error\":\"not found\",\"id\":\"0123456789abcdef\"}", 1,
	  "", "tern queue: 0123456789abcdef: not found\n" },
	{ "escapes read back", QUEUE_CONTROL_LIST,
	  "{\"ok\":false,\"error\":\"a\\u00e9\\\"\\u0001\"}", 1, "",
	  "tern queue: a\xc3\xa9\"\x01\n" },
	{ "not an object", QUEUE_CONTROL_LIST, "[1]", 1, "",
	  "tern queue: malformed answer from tern\n" },
	{ "trailing garbage", QUEUE_CONTROL_LIST, "{\"ok\":true} x", 1, "",
	  "tern queue: malformed answer from tern\n" },
	{ "too deep", QUEUE_CONTROL_LIST,
	  "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}", 1, "",
	  "tern queue: malformed answer from tern\n" },
};

static void
test_answer_table(void **state)
{
	for (size_t i = 0; i < nitems(answer_cases); i++) {
		const struct answer_case *c = &answer_cases[i];
		struct queue_control_req req = { .verb = c->verb,
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
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_length_bound),
		cmocka_unit_test(test_json_str_table),
		cmocka_unit_test(test_answer_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
