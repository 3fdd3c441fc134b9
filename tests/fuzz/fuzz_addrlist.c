/*
 * fuzz_addrlist.c - libFuzzer target for the RFC 5322 3.4 address-list
 * parser (mail/addrlist.c), which reads To:, Cc:, Bcc: for `tern sendmail
 * -t` and the From: of every authenticated submission.
 *
 *   make fuzz && ./build/fuzz/fuzz_addrlist tests/fuzz/corpus/fuzz_addrlist
 *
 * Input: one option byte, then the field value. Option bits: 0x01
 * ADDRLIST_MAILBOX_LIST, 0x02 qualify bare names with "example.test",
 * 0x0c the callback stops at call (bits >> 2), 0 never.
 * Checks, besides ASan/UBSan (the value is libFuzzer's exact-size buffer):
 * - the result is a count equal to the callback calls, ADDRLIST_STOPPED
 *   exactly when the callback said stop, or ADDRLIST_MALFORMED with a
 *   reason;
 * - every address is a valid RFC 5321 Mailbox within 254 octets, its
 *   value is the unquoted local part "@" the domain, and it parses again
 *   alone, as a list of one, to itself;
 * - a mailbox-list has no group member, and when it parses the same text
 *   parses as an address-list to the same addresses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/addrlist.h"
#include "mail/smtp_addr.h"

#include "fuzz.h"

#define KEPT_MAX 16   /* addresses compared between the two modes */

struct seen {
	unsigned flags;
	int calls, stop_at;
	char kept[KEPT_MAX][SMTP_ADDR_PATH_MAX + 1];
};

static int
same_one(void *arg, const struct addrlist_addr *a)
{
	CHECK(strcmp(arg, a->addr) == 0);
	return 0;
}

static int
check_addr(void *arg, const struct addrlist_addr *a)
{
	struct seen *s = arg;
	struct smtp_addr m;
	size_t n = strlen(a->addr);
	char err[128];

	CHECK(n <= SMTP_ADDR_MAILBOX_MAX);
	CHECK(!(s->flags & ADDRLIST_MAILBOX_LIST) || !a->in_group);
	CHECK(smtp_addr_parse_mailbox(a->addr, n, SMTP_ADDR_UTF8, &m) ==
	    SMTP_ADDR_OK);
	CHECK(strlen(a->value) == strlen(m.local_value) + 1 + strlen(m.domain));
	CHECK(memcmp(a->value, m.local_value, strlen(m.local_value)) == 0);
	CHECK(strcmp(a->value + strlen(m.local_value) + 1, m.domain) == 0);
	CHECK(addrlist_parse(a->addr, n, ADDRLIST_MAILBOX_LIST, NULL, same_one,
	    (void *)a->addr, err, sizeof(err)) == 1);
	if (s->calls < KEPT_MAX)
		memcpy(s->kept[s->calls], a->addr, n + 1);
	return ++s->calls == s->stop_at ? -1 : 0;
}

static int
run(const char *p, size_t len, unsigned flags, const char *domain,
    int stop_at, struct seen *s)
{
	char err[256] = "";
	int n;

	memset(s, 0, sizeof(*s));
	s->flags = flags;
	s->stop_at = stop_at;
	n = addrlist_parse(p, len, flags, domain, check_addr, s, err,
	    sizeof(err));
	if (n >= 0)
		CHECK(n == s->calls && (stop_at == 0 || n < stop_at));
	else if (n == ADDRLIST_STOPPED)
		CHECK(stop_at > 0 && s->calls == stop_at);
	else
		CHECK(n == ADDRLIST_MALFORMED && err[0] != '\0');
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct seen s, t;   /* large: not on the stack */
	const char *domain, *p = (const char *)data + 1;
	unsigned flags;
	int stop_at, n;

	if (size == 0)
		return 0;
	flags = data[0] & 1 ? ADDRLIST_MAILBOX_LIST : 0;
	domain = data[0] & 2 ? "example.test" : NULL;
	stop_at = (data[0] >> 2) & 3;
	n = run(p, size - 1, flags, domain, stop_at, &s);
	if ((flags & ADDRLIST_MAILBOX_LIST) && n >= 0) {
		CHECK(run(p, size - 1, 0, domain, 0, &t) == n);
		for (int i = 0; i < n && i < KEPT_MAX; i++)
			CHECK(strcmp(s.kept[i], t.kept[i]) == 0);
	}
	return 0;
}
