/*
 * test_utf8.c - the one UTF-8 decoder (lib/utf8.c), table-driven: every
 * class of ill-formed sequence RFC 3629 forbids, and the edges it allows.
 */
#include "unit.h"

#include <string.h>

#include "lib/utf8.h"

static void
test_decode(void **state)
{
	static const struct {
		const char *name, *in;
		size_t n, want_len;
		uint32_t want_cp;
	} cases[] = {
		{ "ascii", "A", 1, 1, 0x41 },
		{ "two octets", "\xc3\xa9", 2, 2, 0xe9 },
		{ "C1 control is well-formed", "\xc2\x80", 2, 2, 0x80 },
		{ "three octets", "\xe2\x82\xac", 3, 3, 0x20ac },
		{ "four octets", "\xf0\x9f\x98\x80", 4, 4, 0x1f600 },
		{ "last code point", "\xf4\x8f\xbf\xbf", 4, 4, 0x10ffff },
		{ "overlong C0", "\xc0\xaf", 2, 0, 0 },
		{ "overlong C1", "\xc1\xbf", 2, 0, 0 },
		{ "overlong three", "\xe0\x80\xaf", 3, 0, 0 },
		{ "overlong four", "\xf0\x80\x80\xaf", 4, 0, 0 },
		{ "surrogate", "\xed\xa0\x80", 3, 0, 0 },
		{ "beyond U+10FFFF", "\xf4\x90\x80\x80", 4, 0, 0 },
		{ "F5 lead", "\xf5\x80\x80\x80", 4, 0, 0 },
		{ "lone continuation", "\x80", 1, 0, 0 },
		{ "cut short by n", "\xe2\x82\xac", 2, 0, 0 },
		{ "bad continuation", "\xe2\x28\xa1", 3, 0, 0 },
		{ "nothing", "", 0, 0, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t cp = 0;
		size_t got = utf8_decode((const unsigned char *)cases[i].in,
		    cases[i].n, &cp);

		if (got != cases[i].want_len ||
		    (got != 0 && cp != cases[i].want_cp))
			fail_msg("%s: want %zu U+%04X, got %zu U+%04X",
			    cases[i].name, cases[i].want_len,
			    (unsigned)cases[i].want_cp, got, (unsigned)cp);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
