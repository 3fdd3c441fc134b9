/*
 * test_proto_control_line.c - the request line of the queue's control
 * socket (proto/control_line.h): the parser's table of named cases, its
 * length bound, and format/parse round trips.
 */
#include "unit.h"

#include <string.h>

#include "lib/util.h"
#include "proto/control_line.h"

struct parse_case {
	const char *name;
	const char *line;
	int want_rc;
	enum control_line_verb want_verb;
	const char *want_id;
};

static const struct parse_case parse_cases[] = {
	{ "list", "list", 0, CONTROL_LINE_LIST, "" },
	{ "list with CR", "list\r", 0, CONTROL_LINE_LIST, "" },
	{ "show", "show 6616919388039000", 0, CONTROL_LINE_SHOW, "6616919388039000" },
	{ "upper-case id folded", "hold 66169193880390AF", 0, CONTROL_LINE_HOLD, "66169193880390af" },
	{ "flush all", "flush", 0, CONTROL_LINE_FLUSH, "" },
	{ "flush one", "flush 0123456789abcdef", 0, CONTROL_LINE_FLUSH, "0123456789abcdef" },
	{ "delete", "delete 0123456789abcdef", 0, CONTROL_LINE_DELETE, "0123456789abcdef" },
	{ "release", "release 0123456789abcdef", 0, CONTROL_LINE_RELEASE, "0123456789abcdef" },
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
		struct control_line req;
		const char *why = NULL;
		int got = control_line_parse(c->line, strlen(c->line), &req, &why);

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
	char line[CONTROL_LINE_MAX + 8];
	struct control_line req;
	const char *why;

	memset(line, 'x', sizeof(line));
	assert_int_equal(control_line_parse(line, CONTROL_LINE_MAX, &req,
	    &why), -1);
	assert_string_equal(why, "request line too long");
	/* 255 octets + LF is the longest line: refused as unknown, not long. */
	assert_int_equal(control_line_parse(line, CONTROL_LINE_MAX - 1,
	    &req, &why), -1);
	assert_string_not_equal(why, "request line too long");
}

/* Every accepted request formats to a line that parses to itself. */
static void
test_format_round_trip(void **state)
{
	for (size_t i = 0; i < nitems(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct control_line req, again;
		char line[CONTROL_LINE_MAX + 1];
		const char *why;
		int n;

		if (c->want_rc != 0)
			continue;
		assert_int_equal(control_line_parse(c->line, strlen(c->line),
		    &req, &why), 0);
		n = control_line_format(&req, line, sizeof(line));
		if (n <= 0 || line[n - 1] != '\n')
			fail_msg("%s: format gave %d", c->name, n);
		if (control_line_parse(line, (size_t)n - 1, &again, &why) != 0 ||
		    again.verb != req.verb || strcmp(again.id, req.id) != 0)
			fail_msg("%s: '%.*s' does not parse back", c->name, n - 1,
			    line);
	}
}

/* A buffer too small is refused, not overrun. */
static void
test_format_small_buffer(void **state)
{
	struct control_line req = { CONTROL_LINE_SHOW, "0123456789abcdef" };
	char line[8];

	assert_int_equal(control_line_format(&req, line, sizeof(line)), -1);
	assert_int_equal(control_line_format(&req, line, 0), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_length_bound),
		cmocka_unit_test(test_format_round_trip),
		cmocka_unit_test(test_format_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
