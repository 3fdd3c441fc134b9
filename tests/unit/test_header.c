/*
 * test_header.c - RFC 5322 field recognition (mail/header.c), table-driven:
 * what is a field of a given name and how many the header section has.
 */
#include "unit.h"

#include <string.h>

#include "mail/header.h"

static void
test_field_is(void **state)
{
	static const struct {
		const char *name, *line, *field;
		bool want;
	} cases[] = {
		{ "plain", "Received: from a", "Received", true },
		{ "any case", "rECEIVED: from a", "Received", true },
		{ "obsolete WSP before colon", "Received \t: x", "Received", true },
		{ "empty value", "Received:", "Received", true },
		{ "no colon", "Received from a", "Received", false },
		{ "longer name", "Received-SPF: pass", "Received", false },
		{ "prefix name", "X-Received: x", "Received", false },
		{ "continuation line", " Received: x", "Received", false },
		{ "name only", "Received", "Received", false },
		{ "shorter than name", "Rec", "Received", false },
		{ "other field", "Message-ID: <a@b>", "Message-ID", true },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = header_field_is(cases[i].line, strlen(cases[i].line),
		    cases[i].field);
		if (got != cases[i].want)
			fail_msg("%s: want %d got %d", cases[i].name,
			    cases[i].want, got);
	}
}

static void
test_count(void **state)
{
	static const struct {
		const char *name, *msg;
		unsigned stop, want;
	} cases[] = {
		{ "crlf", "Received: a\r\nreceived : b\r\nSubject: c\r\n\r\n"
		    "Received: body\r\n", 100, 2 },
		{ "lf only", "Received: a\nReceived: b\n\nReceived: c\n", 100, 2 },
		{ "folded value is one field", "Received: a\r\n Received: b\r\n"
		    "\r\n", 100, 1 },
		{ "stops at stop", "Received: a\r\nReceived: b\r\nReceived: c\r\n",
		    2, 2 },
		{ "no header end", "Received: a\r\nReceived: b", 100, 2 },
		{ "empty message", "", 100, 0 },
		{ "body only", "\r\nReceived: a\r\n", 100, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned got = header_count(cases[i].msg, strlen(cases[i].msg),
		    "Received", cases[i].stop);
		if (got != cases[i].want)
			fail_msg("%s: want %u got %u", cases[i].name,
			    cases[i].want, got);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_field_is),
		cmocka_unit_test(test_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
