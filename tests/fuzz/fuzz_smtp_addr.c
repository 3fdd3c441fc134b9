/*
 * fuzz_smtp_addr.c - libFuzzer target for smtp_addr.c.
 *
 *   make fuzz && ./build/fuzz/fuzz_smtp_addr tests/fuzz/corpus/fuzz_smtp_addr
 *
 * Input: the address text itself.
 *
 * Besides memory safety (the input is libFuzzer's exact-size buffer, so
 * any read past len trips ASan) it checks invariants that tie the API
 * together, and aborts when one breaks:
 * - every flag only ever widens what is accepted, with the same consumed;
 * - a parsed address formats within the RFC 5321 limits and the text
 *   parses again to the same local part, value and domain;
 * - without SMTP_ADDR_UTF8 no accepted address has an 8-bit octet;
 * - xtext: valid() agrees with decode(), decode(encode(x)) == x, and
 *   encode(decode(x)) is valid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/smtp_addr.h"

#include "fuzz.h"

#define ALL_FLAGS 16u

static void
check_reparse(const struct smtp_addr *a, unsigned flags)
{
	char buf[SMTP_ADDR_PATH_MAX + 1], pbuf[SMTP_ADDR_PATH_MAX + 2];
	struct smtp_addr b;
	size_t consumed;
	int n;

	CHECK(memchr(a->local, '\0', sizeof(a->local)) != NULL);
	CHECK(memchr(a->local_value, '\0', sizeof(a->local_value)) != NULL);
	CHECK(memchr(a->domain, '\0', sizeof(a->domain)) != NULL);
	CHECK(strlen(a->local_value) <= strlen(a->local));
	if (!(flags & SMTP_ADDR_UTF8))
		CHECK(!a->has_utf8);

	n = smtp_addr_format(a, buf, sizeof(buf));
	CHECK(n >= 0 && n <= SMTP_ADDR_MAILBOX_MAX);
	if (a->is_null) {
		CHECK(n == 0);
		return;
	}
	CHECK(smtp_addr_parse_mailbox(buf, (size_t)n, flags, &b) ==
	    SMTP_ADDR_OK);
	CHECK(strcmp(a->local, b.local) == 0);
	CHECK(strcmp(a->local_value, b.local_value) == 0);
	CHECK(strcmp(a->domain, b.domain) == 0);
	CHECK(a->is_quoted == b.is_quoted && a->is_literal == b.is_literal);
	CHECK(a->is_postmaster == b.is_postmaster);
	if (!a->is_postmaster)
		CHECK(smtp_addr_valid_domain(a->domain, strlen(a->domain),
		    flags, true));

	/* And as a path, without the source route. */
	pbuf[0] = '<';
	memcpy(pbuf + 1, buf, (size_t)n);
	pbuf[n + 1] = '>';
	CHECK(smtp_addr_parse_path(pbuf, (size_t)n + 2, flags, &b,
	    &consumed) == SMTP_ADDR_OK);
	CHECK(consumed == (size_t)n + 2 && !b.had_source_route);
	CHECK(strcmp(a->local, b.local) == 0 && strcmp(a->domain, b.domain) == 0);
}

static void
fuzz_path(const char *p, size_t len)
{
	enum smtp_addr_error err[ALL_FLAGS];
	size_t consumed[ALL_FLAGS];
	struct smtp_addr a;

	for (unsigned f = 0; f < ALL_FLAGS; f++) {
		err[f] = smtp_addr_parse_path(p, len, f, &a, &consumed[f]);
		CHECK((int)err[f] >= SMTP_ADDR_OK &&
		    err[f] <= SMTP_ADDR_ERR_BAD_IDN);
		CHECK(smtp_addr_strerror(err[f]) != NULL);
		if (err[f] != SMTP_ADDR_OK) {
			CHECK(consumed[f] == 0);
			continue;
		}
		CHECK(consumed[f] > 0 && consumed[f] <= len);
		CHECK(consumed[f] <= SMTP_ADDR_PATH_MAX);
		CHECK(consumed[f] == len || p[consumed[f] - 1] == '>' ||
		    p[consumed[f]] == ' ');
		check_reparse(&a, f);
	}
	/* Flags only widen: OK under f stays OK, same length, under f|g. */
	for (unsigned f = 0; f < ALL_FLAGS; f++) {
		if (err[f] != SMTP_ADDR_OK)
			continue;
		for (unsigned g = 0; g < ALL_FLAGS; g++) {
			CHECK(err[f | g] == SMTP_ADDR_OK);
			CHECK(consumed[f | g] == consumed[f]);
		}
	}

	for (unsigned f = 0; f < ALL_FLAGS; f++) {
		if (smtp_addr_parse_mailbox(p, len, f, &a) == SMTP_ADDR_OK)
			check_reparse(&a, f);
	}
	(void)smtp_addr_valid_domain(p, len, 0, false);
	(void)smtp_addr_valid_domain(p, len, SMTP_ADDR_UTF8, true);
}

static void
fuzz_xtext(const char *p, size_t len)
{
	char *dec = malloc(len + 1), *enc = malloc(3 * len + 1);
	char *dec2 = malloc(len + 1), *enc2;
	int d, e, d2;

	CHECK(dec != NULL && enc != NULL && dec2 != NULL);
	d = smtp_xtext_decode(p, len, dec, len + 1);
	CHECK((d >= 0) == smtp_xtext_valid(p, len));
	if (d >= 0) {
		/* Canonical re-encoding is valid and decodes the same. */
		enc2 = malloc(3 * (size_t)d + 1);
		CHECK(enc2 != NULL);
		e = smtp_xtext_encode(dec, (size_t)d, enc2, 3 * (size_t)d + 1);
		CHECK(e >= 0 && smtp_xtext_valid(enc2, (size_t)e));
		d2 = smtp_xtext_decode(enc2, (size_t)e, dec2, len + 1);
		CHECK(d2 == d && memcmp(dec, dec2, (size_t)d) == 0);
		free(enc2);
		/* A buffer one octet short must fail cleanly. */
		if (d > 0)
			CHECK(smtp_xtext_decode(p, len, dec, (size_t)d) == -1);
	}

	e = smtp_xtext_encode(p, len, enc, 3 * len + 1);
	CHECK(e >= 0 && (size_t)e >= len && smtp_xtext_valid(enc, (size_t)e));
	d2 = smtp_xtext_decode(enc, (size_t)e, dec2, len + 1);
	CHECK(d2 >= 0 && (size_t)d2 == len && memcmp(dec2, p, len) == 0);
	if (e > 0)
		CHECK(smtp_xtext_encode(p, len, enc, (size_t)e) == -1);

	free(dec);
	free(enc);
	free(dec2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_path((const char *)data, size);
	fuzz_xtext((const char *)data, size);
	return 0;
}
