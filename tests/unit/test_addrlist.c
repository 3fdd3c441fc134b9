/*
 * test_addrlist.c - the RFC 5322 3.4 address-list parser (mail/addrlist.c),
 * table-driven: the examples of RFC 5322 Appendix A.1, A.5 and A.6, the
 * forms `tern sendmail -t` and the From: check rely on, and hostile input
 * (unterminated quotes and comments, deep nesting, huge counts, NUL and
 * 8-bit octets, overlong elements).
 */
#include "unit.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mail/addrlist.h"

#define ML ADDRLIST_MAILBOX_LIST

struct got {
	char addrs[2048];    /* addr, "|" between, "g:" before a group member */
	char values[2048];   /* value, the same way */
	int calls, stop_at;  /* stop_at: the callback says stop at that call */
};

static void
join(char *to, size_t size, const char *s, bool group)
{
	if (to[0] != '\0')
		strncat(to, "|", size - strlen(to) - 1);
	if (group)
		strncat(to, "g:", size - strlen(to) - 1);
	strncat(to, s, size - strlen(to) - 1);
}

static int
collect(void *arg, const struct addrlist_addr *a)
{
	struct got *g = arg;

	join(g->addrs, sizeof(g->addrs), a->addr, a->in_group);
	join(g->values, sizeof(g->values), a->value, a->in_group);
	return ++g->calls == g->stop_at ? -1 : 0;
}

struct addr_case {
	const char *name;
	const char *in;
	size_t len;            /* 0: strlen(in) */
	unsigned flags;
	const char *domain;
	int want_n;            /* ADDRLIST_MALFORMED: an error */
	const char *want;      /* the addrs, joined */
	const char *want_values; /* NULL: the same as want */
};

static const struct addr_case cases[] = {
	/* RFC 5322 A.1.1 */
	{ "A.1.1 From", "John Doe <jdoe@machine.example>", 0, ML, NULL, 1,
	  "jdoe@machine.example", NULL },
	{ "A.1.1 To", "Mary Smith <mary@example.net>", 0, 0, NULL, 1,
	  "mary@example.net", NULL },
	{ "A.1.1 Sender", "Michael Jones <mjones@machine.example>", 0, ML,
	  NULL, 1, "mjones@machine.example", NULL },
	/* A.1.2 */
	{ "A.1.2 quoted display name", "\"Joe Q. Public\" "
	  "<john.q.public@example.com>", 0, ML, NULL, 1,
	  "john.q.public@example.com", NULL },
	{ "A.1.2 To", "Mary Smith <mary@x.test>, jdoe@example.org, Who? "
	  "<one@y.test>", 0, 0, NULL, 3,
	  "mary@x.test|jdoe@example.org|one@y.test", NULL },
	{ "A.1.2 Cc", "<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" "
	  "<sysservices@example.net>", 0, ML, NULL, 2,
	  "boss@nil.test|sysservices@example.net", NULL },
	/* A.1.3 */
	{ "A.1.3 From", "Pete <pete@silly.example>", 0, ML, NULL, 1,
	  "pete@silly.example", NULL },
	{ "A.1.3 group", "A Group:Ed Jones <c@a.test>,joe@where.test,John "
	  "<jdoe@one.test>;", 0, 0, NULL, 3,
	  "g:c@a.test|g:joe@where.test|g:jdoe@one.test", NULL },
	{ "A.1.3 group in a mailbox-list", "A Group:Ed Jones <c@a.test>,"
	  "joe@where.test,John <jdoe@one.test>;", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "A.1.3 empty group", "Undisclosed recipients:;", 0, 0, NULL, 0, "",
	  NULL },
	/* A.5 */
	{ "A.5 From", "Pete(A nice \\) chap) <pete(his account)@silly.test"
	  "(his host)>", 0, ML, NULL, 1, "pete@silly.test", NULL },
	{ "A.5 To", "A Group(Some people)\r\n     :Chris Jones "
	  "<c@(Chris's host.)public.example>,\r\n         joe@example.org,\r\n"
	  "  John <jdoe@one.test> (my dear friend); (the end of the group)",
	  0, 0, NULL, 3,
	  "g:c@public.example|g:joe@example.org|g:jdoe@one.test", NULL },
	{ "A.5 Cc", "(Empty list)(start)Hidden recipients  :(nobody(that I "
	  "know))  ;", 0, 0, NULL, 0, "", NULL },
	/* A.6.1, A.6.3: obsolete forms */
	{ "A.6.1 unquoted dot in name", "Joe Q. Public "
	  "<john.q.public@example.com>", 0, ML, NULL, 1,
	  "john.q.public@example.com", NULL },
	{ "A.6.1 route, empty element, spaced dot", "Mary Smith "
	  "<@node.test:mary@example.net>, , jdoe@test  . example", 0, 0, NULL,
	  2, "mary@example.net|jdoe@test.example", NULL },
	{ "A.6.3 comment and space in domain", "John Doe <jdoe@machine(comment)."
	  "  example>", 0, ML, NULL, 1, "jdoe@machine.example", NULL },
	{ "A.6.3 blank folding line", "Mary Smith\r\n  \r\n          "
	  "<mary@example.net>", 0, ML, NULL, 1, "mary@example.net", NULL },
	{ "two-domain route", "<@a.test,@b.test:joe@x.org>", 0, ML, NULL, 1,
	  "joe@x.org", NULL },
	{ "route without address", "<@a.test>", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "second route", "<@a.test:@b.test:joe@x.org>", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },

	/* what the callers rely on */
	{ "qualified", "root", 0, 0, "host.test", 1, "root@host.test", NULL },
	{ "qualified in angle", "Root <root>", 0, 0, "host.test", 1,
	  "root@host.test", NULL },
	{ "unqualified without a domain", "root", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "quoted @ is no domain", "\"a@b\"", 0, 0, "host.test", 1,
	  "\"a@b\"@host.test", "a@b@host.test" },
	{ "quoted local part", "\"joe smith\"@x.org", 0, ML, NULL, 1,
	  "\"joe smith\"@x.org", "joe smith@x.org" },
	{ "quoted-pair in local part", "<\"a\\\"b\"@x.org>", 0, ML, NULL, 1,
	  "\"a\\\"b\"@x.org", "a\"b@x.org" },
	{ "quoted local part with @", "\"alice@example.test\"@evil.test", 0,
	  ML, NULL, 1, "\"alice@example.test\"@evil.test",
	  "alice@example.test@evil.test" },
	{ "quoted name with comma", "\"Smith, Joe\" <joe@x.org>, b@y.org", 0,
	  ML, NULL, 2, "joe@x.org|b@y.org", NULL },
	{ "quoted name with <>", "\"a@evil <x@evil.org>\" <joe@x.org>", 0, ML,
	  NULL, 1, "joe@x.org", NULL },
	{ "comment with address", "(alice@x.org) mallory@evil.test", 0, ML,
	  NULL, 1, "mallory@evil.test", NULL },
	{ "comment with comma", "joe@x.org (Joe, the \\) one), b@y.org", 0,
	  ML, NULL, 2, "joe@x.org|b@y.org", NULL },
	{ "folded list", "a@x.org,\r\n\tJoe\r\n <joe@x.org>", 0, ML, NULL, 2,
	  "a@x.org|joe@x.org", NULL },
	{ "spaces around @", "joe @ x.org", 0, ML, NULL, 1, "joe@x.org", NULL },
	{ "domain literal", "joe@[192.0.2.1]", 0, ML, NULL, 1,
	  "joe@[192.0.2.1]", NULL },
	{ "IPv6 literal, colons", "joe@[IPv6:2001:db8::1], <a@[IPv6:::1]>", 0,
	  ML, NULL, 2, "joe@[IPv6:2001:db8::1]|a@[IPv6:::1]", NULL },
	{ "case kept", "Alice@Example.TEST", 0, ML, NULL, 1,
	  "Alice@Example.TEST", NULL },
	{ "duplicates are each handed on", "a@x.org, A@X.ORG", 0, ML, NULL, 2,
	  "a@x.org|A@X.ORG", NULL },
	{ "utf-8", "J\xc3\xb6rg <j\xc3\xb6rg@x.org>", 0, ML, NULL, 1,
	  "j\xc3\xb6rg@x.org", NULL },
	{ "encoded-word name", "=?utf-8?q?Al=C3=AFce?= <alice@x.org> (me)", 0,
	  ML, NULL, 1, "alice@x.org", NULL },
	{ "semicolon separates an address-list", "a@x.org; b@y.org", 0, 0,
	  NULL, 2, "a@x.org|b@y.org", NULL },
	{ "semicolon in a mailbox-list", "a@x.org; b@y.org", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "group without ;", "list: a@x.org, b@y.org", 0, 0, NULL, 2,
	  "g:a@x.org|g:b@y.org", NULL },
	{ "after a group", "list: a@x.org; b@y.org", 0, 0, NULL, 2,
	  "g:a@x.org|b@y.org", NULL },
	{ "empty", "", 0, ML, NULL, 0, "", NULL },
	{ "empty elements", ", ,\r\n ,", 0, ML, NULL, 0, "", NULL },
	{ "only a comment", "(nobody)", 0, ML, NULL, 0, "", NULL },

	/* malformed */
	{ "name without address", "Joe Smith", 0, 0, "host.test",
	  ADDRLIST_MALFORMED, "", NULL },
	{ "words in an address", "ali ce@x.org", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "words in an angle", "<ali ce@x.org>", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated angle", "Joe <joe@x.org", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated quote", "\"Joe <joe@x.org>", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "quote ends in a backslash", "\"Joe\\", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated comment", "joe@x.org (oops", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated nested comment", "(a (b (c) d) joe@x.org", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "comment ends in a backslash", "joe@x.org (\\", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated comment in angle", "<joe@x.org (oops>", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "unterminated literal", "joe@[192.0.2.1", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "two angles", "<a@x.org> <b@x.org>", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "words after angle", "<a@x.org> b@y.org", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "quoted string after angle", "<a@x.org> \"b\"", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "angle inside angle", "<a<b@x.org>>", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "empty angle", "<>", 0, 0, NULL, ADDRLIST_MALFORMED, "", NULL },
	{ "empty angle in a list", "<>, a@x.org", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "stray >", "joe@x.org>", 0, ML, NULL, ADDRLIST_MALFORMED, "", NULL },
	{ "stray )", "joe@x.org)", 0, ML, NULL, ADDRLIST_MALFORMED, "", NULL },
	{ "colon after address", "a@x.org: b@y.org", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "colon after angle", "Joe <a@x.org>: b@y.org;", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "bad domain", "joe@-x-.org", 0, 0, NULL, ADDRLIST_MALFORMED, "",
	  NULL },
	{ "trailing dot", "alice@example.test.", 0, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "two @", "a@b@x.org", 0, 0, NULL, ADDRLIST_MALFORMED, "", NULL },
	{ "quoted-pair outside quotes", "a\\@b@x.org", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "CR LF injection", "a@x.org\r\nRCPT TO:<b@y.org>", 0, 0, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "local part too long", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	  "aaaaaaaaaaaaaaaaaaa@x.org", 0, 0, NULL, ADDRLIST_MALFORMED, "",
	  NULL },

	/* NUL and 8-bit octets */
	{ "NUL in local part", "a\0b@x.org", 9, ML, NULL, ADDRLIST_MALFORMED,
	  "", NULL },
	{ "NUL after address", "a@x.org\0", 8, ML, NULL, ADDRLIST_MALFORMED,
	  "", NULL },
	{ "NUL in quoted local part", "\"a\0\"@x.org", 10, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "NUL in a comment", "(\0) a@x.org", 11, ML, NULL, 1, "a@x.org",
	  NULL },
	{ "NUL ends nothing", "a@x.org,\0b@y.org", 16, ML, NULL,
	  ADDRLIST_MALFORMED, "", NULL },
	{ "8-bit not UTF-8", "\xff@x.org", 0, ML, NULL, ADDRLIST_MALFORMED, "",
	  NULL },
	{ "truncated UTF-8", "\xc3@x.org", 0, ML, NULL, ADDRLIST_MALFORMED, "",
	  NULL },
	{ "8-bit in a display name", "\xff\xfe <a@x.org>", 0, ML, NULL, 1,
	  "a@x.org", NULL },
};

static void
test_cases(void **state)
{
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const struct addr_case *c = &cases[k];
		struct got g = { .stop_at = -1 };
		char err[256] = "";
		size_t len = c->len ? c->len : strlen(c->in);
		int n = addrlist_parse(c->in, len, c->flags, c->domain, collect,
		    &g, err, sizeof(err));
		const char *wv = c->want_values ? c->want_values : c->want;

		if (n != c->want_n || (n >= 0 && (strcmp(g.addrs, c->want) != 0 ||
		    strcmp(g.values, wv) != 0 || g.calls != n)) ||
		    (n < 0 && err[0] == '\0')) {
			print_error("%s: n=%d want %d, got '%s' / '%s' want '%s' / "
			    "'%s' (%s)\n", c->name, n, c->want_n, g.addrs,
			    g.values, c->want, wv, err);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* A string of n copies of c, for the long cases. */
static char *
repeat(const char *prefix, char c, size_t n, const char *suffix)
{
	size_t lp = strlen(prefix), ls = strlen(suffix);
	char *s = malloc(lp + n + ls + 1);

	assert_non_null(s);
	memcpy(s, prefix, lp);
	memset(s + lp, c, n);
	memcpy(s + lp + n, suffix, ls + 1);
	return s;
}

static int
parse(const char *s, unsigned flags, const char *domain, struct got *g)
{
	char err[256];

	memset(g, 0, sizeof(*g));
	g->stop_at = -1;
	return addrlist_parse(s, strlen(s), flags, domain, collect, g, err,
	    sizeof(err));
}

/* RFC 5321 4.5.3.1.3: the path is at most 256 octets, so the Mailbox 254 */
static void
test_lengths(void **state)
{
	/* 64 + "@" + 189 = 254 */
	const char *dom254 = "@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb."
	    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc."
	    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
	char buf[512], *local = repeat("", 'a', 64, "");
	struct got g;
	char *s;

	(void)state;
	snprintf(buf, sizeof(buf), "<%s%s>", local, dom254);
	assert_int_equal(strlen(buf), 256);
	assert_int_equal(parse(buf, ML, NULL, &g), 1);
	assert_int_equal(strlen(g.addrs), 254);
	/* one octet more: too long */
	snprintf(buf, sizeof(buf), "<a%s%s>", local, dom254);
	assert_int_equal(parse(buf, ML, NULL, &g), ADDRLIST_MALFORMED);
	free(local);

	/* an element far longer than the buffer: refused, nothing overflows */
	s = repeat("", 'a', 5000, "@x.org");
	assert_int_equal(parse(s, 0, NULL, &g), ADDRLIST_MALFORMED);
	free(s);
	s = repeat("<", 'a', 5000, "@x.org>");
	assert_int_equal(parse(s, 0, NULL, &g), ADDRLIST_MALFORMED);
	free(s);
	/* ... but a display name may be long */
	s = repeat("\"", 'n', 5000, "\" <a@x.org>");
	assert_int_equal(parse(s, ML, NULL, &g), 1);
	free(s);
	s = repeat("", 'n', 5000, " <a@x.org>");
	assert_int_equal(parse(s, ML, NULL, &g), 1);
	free(s);
	/* and so may a route, which is dropped */
	s = repeat("<@", 'r', 5000, ".test:a@x.org>");
	assert_int_equal(parse(s, 0, NULL, &g), 1);
	assert_string_equal(g.addrs, "a@x.org");
	free(s);
	/* the default domain counts */
	s = repeat("", 'd', 250, "");
	assert_int_equal(parse("root", 0, s, &g), ADDRLIST_MALFORMED);
	free(s);
}

/* Nesting is a counter, not recursion: no depth blows the stack. */
static void
test_deep_nesting(void **state)
{
	size_t depth = 200000;
	char *s = malloc(2 * depth + 16);
	struct got g;

	(void)state;
	assert_non_null(s);
	memset(s, '(', depth);
	memset(s + depth, ')', depth);
	memcpy(s + 2 * depth, "a@x.org", 8);
	assert_int_equal(parse(s, ML, NULL, &g), 1);
	assert_string_equal(g.addrs, "a@x.org");
	/* one ")" short: unterminated */
	memmove(s + 2 * depth - 1, s + 2 * depth, strlen(s + 2 * depth) + 1);
	assert_int_equal(parse(s, ML, NULL, &g), ADDRLIST_MALFORMED);
	free(s);
}

static int
count_only(void *arg, const struct addrlist_addr *a)
{
	(void)a;
	++*(int *)arg;
	return 0;
}

/* Many addresses: each reaches the callback; the callback may stop. */
static void
test_counts(void **state)
{
	int n = 100000, calls = 0;
	char *s = malloc((size_t)n * 8 + 1), *p = s;
	struct got g = { .stop_at = 3 };

	(void)state;
	assert_non_null(s);
	for (int i = 0; i < n; i++) {
		memcpy(p, "a@x.org,", 8);
		p += 8;
	}
	*p = '\0';
	assert_int_equal(addrlist_parse(s, strlen(s), ML, NULL, count_only,
	    &calls, NULL, 0), n);
	assert_int_equal(calls, n);
	assert_int_equal(addrlist_parse(s, strlen(s), ML, NULL, collect, &g,
	    NULL, 0), ADDRLIST_STOPPED);
	assert_int_equal(g.calls, 3);
	free(s);
	/* addresses before an error were handed on; err may be NULL */
	calls = 0;
	assert_int_equal(addrlist_parse("a@x.org, b@y.org, (", 19, 0, NULL,
	    count_only, &calls, NULL, 0), ADDRLIST_MALFORMED);
	assert_int_equal(calls, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_counts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
