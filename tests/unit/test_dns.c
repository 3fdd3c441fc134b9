/*
 * test_dns.c - the pure routing decisions of dns.c (table-driven): MX
 * sorting and shuffling, null MX, self-detection and the overall verdict,
 * address interleaving, loopback classification; and the lookups that need
 * no DNS (address literals, bad names), which must still answer from the
 * event loop and be cancellable.
 */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include <unistd.h>

#include "conf/config.h"
#include "dns/dns.h"
#include "lib/util.h"

/* "10:a 20:b 0:." into rrs; returns the count. */
static size_t
parse_rrs(const char *spec, struct dns_mx_rr *rrs, size_t max)
{
	char buf[4096], *save = NULL;
	size_t n = 0;

	util_strlcpy(buf, spec, sizeof(buf));
	for (char *t = strtok_r(buf, " ", &save); t != NULL;
	    t = strtok_r(NULL, " ", &save)) {
		char *colon = strchr(t, ':');

		assert_non_null(colon);
		assert_true(n < max);
		*colon = '\0';
		rrs[n].pref = (unsigned)strtoul(t, NULL, 10);
		util_strlcpy(rrs[n].name, strcmp(colon + 1, ".") == 0 ? "" :
		    colon + 1, sizeof(rrs[n].name));
		n++;
	}
	return n;
}

static void
format_rrs(const struct dns_mx_rr *rrs, size_t n, char *buf, size_t size)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && o < size; i++)
		o += (size_t)snprintf(buf + o, size - o, "%s%u:%s", i ? " " : "",
		    rrs[i].pref, rrs[i].name[0] ? rrs[i].name : ".");
}

static unsigned
rnd_zero(unsigned bound)
{
	return 0;
}

static unsigned
rnd_last(unsigned bound)
{
	return bound - 1;
}

static void
test_mx_sort_table(void **state)
{
	static const struct {
		const char *name;
		const char *in;
		unsigned (*rnd)(unsigned);
		enum dns_status want;
		const char *want_order;
	} cases[] = {
		{ "empty: implicit MX is the caller's job", "", rnd_zero,
		  DNS_OK, "" },
		{ "single", "10:mx.example", rnd_zero, DNS_OK, "10:mx.example" },
		{ "by preference", "20:b 10:a 30:c", rnd_zero, DNS_OK,
		  "10:a 20:b 30:c" },
		{ "extremes", "65535:z 0:a", rnd_zero, DNS_OK, "0:a 65535:z" },
		{ "null MX", "0:.", rnd_zero, DNS_NULL_MX, NULL },
		{ "root with another preference", "10:.", rnd_zero,
		  DNS_NULL_MX, NULL },
		{ "only roots", "0:. 0:.", rnd_zero, DNS_NULL_MX, NULL },
		{ "root among hosts is dropped", "0:. 10:a", rnd_zero, DNS_OK,
		  "10:a" },
		{ "equal, no swap", "10:a 10:b", rnd_last, DNS_OK,
		  "10:a 10:b" },
		{ "equal, swapped", "10:a 10:b", rnd_zero, DNS_OK,
		  "10:b 10:a" },
		{ "three equal, rnd 0", "10:a 10:b 10:c", rnd_zero, DNS_OK,
		  "10:b 10:c 10:a" },
		{ "shuffle stays inside its preference",
		  "20:x 10:a 30:y 10:b", rnd_zero, DNS_OK,
		  "10:b 10:a 20:x 30:y" },
		{ "bounded to DNS_MAX_MX, best kept",
		  "99:z1 99:z2 1:a 2:b 3:c 4:d 5:e 6:f 7:g 8:h 9:i 10:j 11:k "
		  "12:l 13:m 14:n 15:o 16:p 99:z3", rnd_last, DNS_OK,
		  "1:a 2:b 3:c 4:d 5:e 6:f 7:g 8:h 9:i 10:j 11:k 12:l 13:m "
		  "14:n 15:o 16:p" },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct dns_mx_rr rrs[32];
		size_t n = parse_rrs(cases[i].in, rrs, nitems(rrs));
		enum dns_status got = dns_mx_sort(rrs, &n, cases[i].rnd);
		char order[1024];

		if (got != cases[i].want)
			fail_msg("%s: want %s, got %s", cases[i].name,
			    dns_status_name(cases[i].want),
			    dns_status_name(got));
		if (cases[i].want_order == NULL)
			continue;
		format_rrs(rrs, n, order, sizeof(order));
		if (strcmp(order, cases[i].want_order) != 0)
			fail_msg("%s: want \"%s\", got \"%s\"", cases[i].name,
			    cases[i].want_order, order);
	}
}

/* With the real random source (arc4random) every host of an equal group
 * comes first in some runs, every run keeps the preference order, and
 * nothing is lost or duplicated (RFC 5321 5.1). */
static void
test_mx_sort_randomises(void **state)
{
	static const char *const names[] = { "a", "b", "p", "q", "r" };
	unsigned first[nitems(names)] = { 0 }, want = 0;

	for (const char *p = "abcpqrz"; *p != '\0'; p++)
		want |= 1u << (*p - 'a');
	for (int run = 0; run < 1000; run++) {
		struct dns_mx_rr rrs[8];
		size_t n = parse_rrs("20:c 10:a 30:q 10:b 5:z 30:p 30:r", rrs,
		    nitems(rrs));
		unsigned seen = 0;

		assert_int_equal(dns_mx_sort(rrs, &n, NULL), DNS_OK);
		assert_int_equal(n, 7);
		for (size_t i = 1; i < n; i++)
			assert_true(rrs[i - 1].pref <= rrs[i].pref);
		assert_string_equal(rrs[0].name, "z");
		assert_string_equal(rrs[3].name, "c");
		for (size_t i = 0; i < n; i++)
			seen |= 1u << (rrs[i].name[0] - 'a');
		assert_int_equal(seen, want);
		for (size_t k = 0; k < nitems(names); k++)
			first[k] += strcmp(rrs[k < 2 ? 1 : 4].name,
			    names[k]) == 0;
	}
	assert_int_equal(first[0] + first[1], 1000);
	assert_int_equal(first[2] + first[3] + first[4], 1000);
	for (size_t k = 0; k < nitems(names); k++)
		if (first[k] == 0)
			fail_msg("%s never came first in its preference group",
			    names[k]);
}

/* Host list as "pref:status" letters: o ok, n no-address, t tempfail,
 * s self; results with k for skipped. */
static size_t
parse_hosts(const char *spec, struct dns_mx_host *h, size_t max)
{
	size_t n = 0;

	for (const char *p = spec; *p != '\0';) {
		char *end;

		assert_true(n < max);
		memset(&h[n], 0, sizeof(h[n]));
		h[n].pref = (unsigned)strtoul(p, &end, 10);
		assert_int_equal(*end, ':');
		switch (end[1]) {
		case 'o': h[n].status = DNS_HOST_OK; break;
		case 'n': h[n].status = DNS_HOST_NO_ADDRESS; break;
		case 't': h[n].status = DNS_HOST_TEMPFAIL; break;
		case 's': h[n].status = DNS_HOST_SELF; break;
		default: fail_msg("bad spec %s", spec);
		}
		n++;
		p = end + 2;
		while (*p == ' ')
			p++;
	}
	return n;
}

static void
test_mx_decide_table(void **state)
{
	static const char letters[] = { 'o', 'n', 't', 's', 'k' };
	static const struct {
		const char *name;
		const char *in;
		enum dns_status want;
		const char *want_states;
	} cases[] = {
		{ "all usable", "10:o 20:o", DNS_OK, "oo" },
		{ "nothing at all", "", DNS_NO_ADDRESS, "" },
		{ "best is self: loop", "10:s 20:o", DNS_LOOP, "sk" },
		{ "self cuts equal and worse", "5:o 10:s 10:o 20:o", DNS_OK,
		  "oskk" },
		{ "self after an equal host cuts it too", "10:o 10:s",
		  DNS_LOOP, "ks" },
		{ "implicit MX to self", "0:s", DNS_LOOP, "s" },
		{ "better host temp: retry, not loop", "5:t 10:s",
		  DNS_TEMPFAIL, "ts" },
		{ "no host has an address", "10:n 20:n", DNS_NO_ADDRESS,
		  "nn" },
		{ "one temp among dead ones", "10:n 20:t", DNS_TEMPFAIL,
		  "nt" },
		{ "a dead best, a good backup", "10:n 20:o", DNS_OK, "no" },
		{ "a later self host stays self", "10:o 20:s 30:s 40:o", DNS_OK,
		  "ossk" },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct dns_mx_host h[8];
		size_t n = parse_hosts(cases[i].in, h, nitems(h));
		enum dns_status got = dns_mx_decide(h, n);
		char states[16];

		for (size_t k = 0; k < n; k++)
			states[k] = letters[h[k].status];
		states[n] = '\0';
		if (got != cases[i].want)
			fail_msg("%s: want %s, got %s", cases[i].name,
			    dns_status_name(cases[i].want),
			    dns_status_name(got));
		if (strcmp(states, cases[i].want_states) != 0)
			fail_msg("%s: want states %s, got %s", cases[i].name,
			    cases[i].want_states, states);
	}
}

static struct sockaddr_storage
ss(const char *text)
{
	struct sockaddr_storage s;

	memset(&s, 0, sizeof(s));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *a = (void *)&s;

		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (void *)&s;

		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
	}
	return s;
}

static void
addr_str(const struct sockaddr_storage *s, char *buf, size_t size)
{
	const void *a = s->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)(const void *)s)->
	    sin6_addr :
	    (const void *)&((const struct sockaddr_in *)(const void *)s)->
	    sin_addr;

	assert_non_null(inet_ntop(s->ss_family, a, buf, (socklen_t)size));
}

static void
test_interleave_table(void **state)
{
	static const struct {
		const char *name;
		size_t n6, n4, max;
		const char *want;
	} cases[] = {
		{ "both, v6 first", 2, 2, 8, "6a 4a 6b 4b" },
		{ "more v4", 1, 3, 8, "6a 4a 4b 4c" },
		{ "more v6", 3, 1, 8, "6a 4a 6b 6c" },
		{ "only v4", 0, 2, 8, "4a 4b" },
		{ "only v6", 2, 0, 8, "6a 6b" },
		{ "bounded", 3, 3, 3, "6a 4a 6b" },
		{ "none", 0, 0, 8, "" },
	};
	struct sockaddr_storage v6[3], v4[3];
	const char *n6[] = { "2001:db8::a", "2001:db8::b", "2001:db8::c" };
	const char *n4[] = { "203.0.113.10", "203.0.113.11", "203.0.113.12" };

	for (size_t i = 0; i < 3; i++) {
		v6[i] = ss(n6[i]);
		v4[i] = ss(n4[i]);
	}
	for (size_t i = 0; i < nitems(cases); i++) {
		struct sockaddr_storage out[8];
		char got[256] = "", a[64];
		size_t n = dns_addr_interleave(v6, cases[i].n6, v4,
		    cases[i].n4, out, cases[i].max), o = 0;

		for (size_t k = 0; k < n; k++) {
			const char *tag;

			addr_str(&out[k], a, sizeof(a));
			tag = strcmp(a, n6[0]) == 0 ? "6a" :
			    strcmp(a, n6[1]) == 0 ? "6b" :
			    strcmp(a, n6[2]) == 0 ? "6c" :
			    strcmp(a, n4[0]) == 0 ? "4a" :
			    strcmp(a, n4[1]) == 0 ? "4b" : "4c";
			o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%s",
			    k ? " " : "", tag);
		}
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: want \"%s\", got \"%s\"", cases[i].name,
			    cases[i].want, got);
	}
}

static void
test_loopback_table(void **state)
{
	static const struct {
		const char *addr;
		bool want;
	} cases[] = {
		{ "127.0.0.1", true }, { "127.0.0.2", true },
		{ "127.255.255.254", true }, { "0.0.0.0", true },
		{ "::1", true }, { "::", true }, { "::ffff:127.0.0.3", true },
		{ "::ffff:0.0.0.0", true }, { "128.0.0.1", false },
		{ "126.255.255.255", false }, { "203.0.113.1", false },
		{ "2001:db8::1", false }, { "::ffff:203.0.113.1", false },
		{ "::2", false },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		struct sockaddr_storage s = ss(cases[i].addr);

		if (dns_addr_is_loopback((struct sockaddr *)&s) !=
		    cases[i].want)
			fail_msg("%s: want %s", cases[i].addr,
			    cases[i].want ? "loopback" : "not loopback");
	}
}

/*
 * Lookups without DNS: the resolver address is never queried.
 */

struct got {
	int calls;
	enum dns_status status;
	bool literal;
	size_t nhosts;
	char first_addr[64];
	enum dns_host_status host_status;
};

static void
on_result(void *arg, const struct dns_mx_result *r)
{
	struct got *g = arg;

	g->calls++;
	g->status = r->status;
	g->literal = r->literal;
	g->nhosts = r->nhosts;
	g->first_addr[0] = '\0';
	if (r->nhosts > 0) {
		g->host_status = r->hosts[0].status;
		if (r->hosts[0].naddrs > 0)
			addr_str(&r->hosts[0].addrs[0], g->first_addr,
			    sizeof(g->first_addr));
	}
}

/* More records than can be kept: the most preferred survive, in any
 * order of arrival (a long answer listing the best MX last). */
static void
test_mx_keep_best(void **state)
{
	struct dns_mx_rr rrs[4], rr;
	size_t n = 0;
	static const unsigned prefs[] = { 50, 40, 60, 30, 70, 5, 45, 10, 20 };

	for (size_t i = 0; i < nitems(prefs); i++) {
		rr.pref = prefs[i];
		snprintf(rr.name, sizeof(rr.name), "mx%u.test", prefs[i]);
		dns_mx_keep(rrs, &n, nitems(rrs), &rr);
	}
	assert_int_equal(n, 4);
	assert_int_equal(dns_mx_sort(rrs, &n, NULL), DNS_OK);
	assert_int_equal(n, 4);
	assert_int_equal(rrs[0].pref, 5);
	assert_int_equal(rrs[1].pref, 10);
	assert_int_equal(rrs[2].pref, 20);
	assert_int_equal(rrs[3].pref, 30);
	assert_string_equal(rrs[0].name, "mx5.test");
}

/* RFC 5891: U-labels become A-labels before DNS (util_idna_to_ascii). */
static void
test_idna(void **state)
{
	static const struct {
		const char *in, *want;   /* want NULL: refused */
	} cases[] = {
		{ "b\xc3\xbc" "cher.example", "xn--bcher-kva.example" },
		{ "B\xc3\x9c" "CHER.Example", "xn--bcher-kva.example" },
		{ "\xe4\xbe\x8b\xe3\x81\x88.test", "xn--r8jz45g.test" },
		{ "Plain.Example", "plain.example" },
		{ "\xe2\x98\x95.example", NULL },
		{ "b\xff" "cher.example", NULL },
	};
	char out[256];

	for (size_t i = 0; i < nitems(cases); i++) {
		int rc = util_idna_to_ascii(cases[i].in, strlen(cases[i].in), out,
		    sizeof(out));

		if (cases[i].want == NULL) {
			if (rc != -1)
				fail_msg("%s: accepted as %s", cases[i].in, out);
		} else if (rc != 0 || strcmp(out, cases[i].want) != 0) {
			fail_msg("%s: want %s, got rc %d %s", cases[i].in,
			    cases[i].want, rc, rc == 0 ? out : "");
		}
	}
	/* a result that does not fit is refused, never cut */
	assert_int_equal(util_idna_to_ascii("b\xc3\xbc" "cher.example", 14, out,
	    10), -2);
}

static void
test_no_dns_table(void **state)
{
	static const struct {
		const char *domain;
		bool allow_loopback;
		enum dns_status want;
		const char *want_addr;
	} cases[] = {
		{ "[203.0.113.7]", false, DNS_OK, "203.0.113.7" },
		{ "[IPv6:2001:db8::7]", false, DNS_OK, "2001:db8::7" },
		{ "[ipv6:2001:db8::8]", false, DNS_OK, "2001:db8::8" },
		{ "[127.0.0.2]", false, DNS_LOOP, "127.0.0.2" },
		{ "[127.0.0.2]", true, DNS_OK, "127.0.0.2" },
		{ "[IPv6:::1]", false, DNS_LOOP, "::1" },
		{ "[0.0.0.0]", true, DNS_LOOP, "0.0.0.0" },
		{ "[300.1.1.1]", false, DNS_BAD_NAME, NULL },
		{ "[tag:whatever]", false, DNS_BAD_NAME, NULL },
		{ "[]", false, DNS_BAD_NAME, NULL },
		{ "", false, DNS_BAD_NAME, NULL },
		{ ".", false, DNS_BAD_NAME, NULL },
		{ "a..b", false, DNS_BAD_NAME, NULL },
		{ ".a", false, DNS_BAD_NAME, NULL },
		{ "ex ample.org", false, DNS_BAD_NAME, NULL },
		{ "ex\\.ample.org", false, DNS_BAD_NAME, NULL },
		/* not valid IDNA2008: a symbol, broken UTF-8 */
		{ "\xe2\x98\x95.example", false, DNS_BAD_NAME, NULL },
		{ "b\xff" "cher.example", false, DNS_BAD_NAME, NULL },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  ".example", false, DNS_BAD_NAME, NULL },
	};
	struct event_base *base = event_base_new();

	assert_non_null(base);
	for (size_t i = 0; i < nitems(cases); i++) {
		struct dns_options opt = {
			.resolver = "127.0.0.1:1",
			.allow_loopback = cases[i].allow_loopback,
		};
		struct got g = { 0 };
		char err[128];
		struct dns *d = dns_new(base, &opt, err, sizeof(err));

		assert_non_null(d);
		assert_non_null(dns_resolve_mx(d, cases[i].domain, on_result,
		    &g));
		/* never from inside the call */
		assert_int_equal(g.calls, 0);
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (g.calls != 1)
			fail_msg("%s: %d callbacks", cases[i].domain, g.calls);
		if (g.status != cases[i].want)
			fail_msg("%s: want %s, got %s", cases[i].domain,
			    dns_status_name(cases[i].want),
			    dns_status_name(g.status));
		if (cases[i].want_addr != NULL &&
		    strcmp(g.first_addr, cases[i].want_addr) != 0)
			fail_msg("%s: want %s, got %s", cases[i].domain,
			    cases[i].want_addr, g.first_addr);
		dns_free(&d);
		assert_null(d);
	}
	event_base_free(base);
}

static void
test_cancel_and_free(void **state)
{
	struct event_base *base = event_base_new();
	struct dns_options opt = { .resolver = "[::1]:1" };
	struct got g1 = { 0 }, g2 = { 0 };
	struct dns_query *q;
	char err[128];
	struct dns *d = dns_new(base, &opt, err, sizeof(err));

	assert_non_null(d);
	q = dns_resolve_mx(d, "[203.0.113.1]", on_result, &g1);
	(void)dns_resolve_mx(d, "[203.0.113.2]", on_result, &g2);
	dns_cancel(q);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(g1.calls, 0);
	assert_int_equal(g2.calls, 1);
	/* freed with a query outstanding: no callback, no leak */
	(void)dns_resolve_mx(d, "[203.0.113.3]", on_result, &g1);
	dns_free(&d);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(g1.calls, 0);
	event_base_free(base);
}

static void
test_bad_resolver(void **state)
{
	static const char *const bad[] = {
		"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:53",
		"[::1]53", "host.example:53", "127.0.0.1:5x",
	};
	struct event_base *base = event_base_new();

	for (size_t i = 0; i < nitems(bad); i++) {
		struct dns_options opt = { .resolver = bad[i] };
		char err[128] = "";
		struct dns *d = dns_new(base, &opt, err, sizeof(err));

		if (d != NULL)
			fail_msg("%s accepted", bad[i]);
		assert_true(err[0] != '\0');
	}
	event_base_free(base);
}

/* The options dns_new() is fed from: `resolver` and `allow_loopback_mx`. */
static void
test_config_options(void **state)
{
	static const struct {
		const char *text;
		bool ok;
		const char *resolver;
		unsigned allow;
	} cases[] = {
		{ "", true, NULL, 0 },
		{ "resolver 127.0.0.1:5353\n", true, "127.0.0.1:5353", 0 },
		{ "resolver [::1]:53\nallow_loopback_mx yes\n", true,
		  "[::1]:53", 1 },
		{ "allow_loopback_mx no\n", true, NULL, 0 },
		{ "resolver 127.0.0.1\n", false, NULL, 0 },
		{ "resolver ::1:53\n", false, NULL, 0 },
		{ "resolver dns.example:53\n", false, NULL, 0 },
		{ "resolver 127.0.0.1:0\n", false, NULL, 0 },
		{ "resolver 127.0.0.1:53 127.0.0.2:53\n", false, NULL, 0 },
		{ "resolver 127.0.0.1:53\nresolver 127.0.0.2:53\n", false,
		  NULL, 0 },
		{ "allow_loopback_mx maybe\n", false, NULL, 0 },
	};

	for (size_t i = 0; i < nitems(cases); i++) {
		char path[] = "/tmp/tern-test-dns-XXXXXX";
		int fd = mkstemp(path);
		char *errors = NULL;
		struct config *cfg;

		assert_true(fd >= 0);
		assert_int_equal(util_write_all(fd, cases[i].text,
		    strlen(cases[i].text)), 0);
		close(fd);
		cfg = config_load(path, &errors);
		unlink(path);
		if ((cfg != NULL) != cases[i].ok)
			fail_msg("\"%s\": want %s, got %s", cases[i].text,
			    cases[i].ok ? "ok" : "an error",
			    errors ? errors : "ok");
		free(errors);
		if (cfg == NULL)
			continue;
		if (cases[i].resolver == NULL)
			assert_null(cfg->resolver);
		else
			assert_string_equal(cfg->resolver, cases[i].resolver);
		assert_int_equal(cfg->allow_loopback_mx, cases[i].allow);
		config_free(&cfg);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mx_sort_table),
		cmocka_unit_test(test_mx_sort_randomises),
		cmocka_unit_test(test_mx_decide_table),
		cmocka_unit_test(test_interleave_table),
		cmocka_unit_test(test_loopback_table),
		cmocka_unit_test(test_mx_keep_best),
		cmocka_unit_test(test_idna),
		cmocka_unit_test(test_no_dns_table),
		cmocka_unit_test(test_cancel_and_free),
		cmocka_unit_test(test_bad_resolver),
		cmocka_unit_test(test_config_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
