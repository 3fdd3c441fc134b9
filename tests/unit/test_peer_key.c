/*
 * test_peer_key.c - the keys that tell clients apart for the connection
 * and AUTH limits: IPv4 by address (also IPv4-mapped IPv6), IPv6 by its
 * network of client_ipv6_prefix bits.
 */
#include <stdbool.h>
#include <string.h>

#include "unit.h"

#include "lib/util.h"
#include "smtpd/peer_key.h"

struct case_ {
	const char *name;
	const char *a, *b;
	unsigned prefix;
	bool same;
};

static void
test_same_client(void **state)
{
	static const struct case_ cases[] = {
		{ "ipv4 same", "192.0.2.1", "192.0.2.1", 64, true },
		{ "ipv4 neighbour", "192.0.2.1", "192.0.2.2", 64, false },
		{ "ipv6 same /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", 64, true },
		{ "ipv6 other /64", "2001:db8:1:2::1", "2001:db8:1:3::1", 64, false },
		{ "ipv6 /128", "2001:db8::1", "2001:db8::2", 128, false },
		{ "ipv6 /128 same", "2001:db8::1", "2001:db8:0:0::1", 128, true },
		{ "ipv6 /60 same", "2001:db8:0:10::1", "2001:db8:0:1f::1", 60, true },
		{ "ipv6 /60 other", "2001:db8:0:10::1", "2001:db8:0:20::1", 60, false },
		{ "ipv6 /57 same", "2001:db8:0:7f80::", "2001:db8:0:7fff::", 57, true },
		{ "ipv6 /57 other", "2001:db8:0:7f80::", "2001:db8:0:7f00::", 57, false },
		/* a dual-stack socket: IPv4 clients stay one per address */
		{ "mapped same", "::ffff:192.0.2.1", "192.0.2.1", 64, true },
		{ "mapped other", "::ffff:192.0.2.1", "::ffff:192.0.2.2", 64, false },
		{ "v4 vs v6", "0.0.0.1", "::1", 128, false },
		{ "loopback v6", "::1", "::1", 64, true },
		{ "not an address", "local", "local", 64, true },
		{ "not an address, other", "local", "unknown", 64, false },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		uint8_t ka[PEER_KEY_LEN], kb[PEER_KEY_LEN];

		peer_key_make(cases[i].a, cases[i].prefix, ka);
		peer_key_make(cases[i].b, cases[i].prefix, kb);
		if ((memcmp(ka, kb, PEER_KEY_LEN) == 0) != cases[i].same)
			fail_msg("%s: %s vs %s: want %s", cases[i].name,
			    cases[i].a, cases[i].b,
			    cases[i].same ? "same" : "different");
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_client),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
