/*
 * fuzz_sendmail.c - libFuzzer target for the parsers of `tern sendmail`
 * (sendmail_msg.c): its command line, RFC 5322 address lists, the message
 * read from stdin (header fields, -t recipients, Bcc: removal), and the
 * configuration peek; plus what it writes from them (dot-stuffing, the
 * From: display name).
 *
 *   make fuzz && ./build/fuzz/fuzz_sendmail tests/fuzz/corpus/fuzz_sendmail
 *
 * Input: one mode byte (mode = byte % 5, options in the high bits), then
 * - 0: arguments separated by NUL octets (sendmail_parse_args);
 * - 1: an address-list header value (sendmail_parse_addresses);
 * - 2: a message (sendmail_msg_parse, then sendmail_dot_stuff);
 * - 3: a full name (sendmail_display_name);
 * - 4: a configuration text (sendmail_config_scan).
 * Checks, besides ASan/UBSan:
 * - every recipient taken from arguments or headers is a valid RFC 5321
 *   Mailbox, listed once;
 * - the header and body handed on have CRLF line ends only, and no Bcc:
 *   field survives (RFC 5322 3.6.3);
 * - dot-stuffing is undone by removing one dot from lines that start
 *   with one, and no line of the result is a lone ".";
 * - a display name holds no control character (no header injection) and
 *   its encoded-words stay within 75 characters (RFC 2047 2).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/sendmail_msg.h"
#include "lib/util.h"
#include "mail/smtp_addr.h"

#include "fuzz.h"

#define MAX_ARGS 64

static void
check_list(const struct sendmail_list *l)
{
	struct smtp_addr a;

	for (size_t i = 0; i < l->n; i++) {
		size_t n = strlen(l->v[i]);

		CHECK(smtp_addr_parse_mailbox(l->v[i], n, SMTP_ADDR_UTF8, &a) ==
		    SMTP_ADDR_OK);
		for (size_t k = 0; k < i; k++)
			CHECK(!util_ascii_casecmp_n(l->v[k], strlen(l->v[k]),
			    l->v[i], n));
	}
}

static void
fuzz_args(const char *p, size_t len)
{
	char *copy = malloc(len + 1), *argv[MAX_ARGS + 1];
	struct sendmail_opts o;
	char err[256];
	int argc = 1, rc;

	CHECK(copy != NULL);
	memcpy(copy, p, len);
	copy[len] = '\0';
	argv[0] = "sendmail";
	for (size_t i = 0; i <= len && argc < MAX_ARGS;) {
		argv[argc++] = copy + i;
		i += strlen(copy + i) + 1;
	}
	argv[argc] = NULL;
	rc = sendmail_parse_args(argc, argv, 1, &o, err, sizeof(err));
	CHECK(rc == 0 || rc == 64);
	if (rc == 0) {
		CHECK(o.nrcpts <= (size_t)argc - 1);
		for (size_t i = 0; i < o.nrcpts; i++)
			CHECK(o.rcpts[i] >= copy && o.rcpts[i] <= copy + len);
	} else {
		CHECK(o.rcpts == NULL && o.nrcpts == 0 && err[0] != '\0');
	}
	free(o.rcpts);
	free(copy);
}

static void
fuzz_addresses(const char *p, size_t len, bool qualify)
{
	struct sendmail_list l = { 0 };
	char err[256];
	int n;

	n = sendmail_parse_addresses(p, len, qualify ? "example.test" : NULL,
	    &l, err, sizeof(err));
	if (n >= 0) {
		CHECK(l.n <= (size_t)n);
		CHECK(n == 0 || l.n > 0);
		check_list(&l);
	} else {
		CHECK(err[0] != '\0');
	}
	sendmail_list_clear(&l);
}

/* CR only in CRLF; the text is empty or ends in CRLF. */
static void
check_crlf(const struct sendmail_buf *b)
{
	for (size_t i = 0; i < b->len; i++) {
		if (b->p[i] == '\r')
			CHECK(i + 1 < b->len && b->p[i + 1] == '\n');
		if (b->p[i] == '\n')
			CHECK(i > 0 && b->p[i - 1] == '\r');
	}
	CHECK(b->len == 0 || (b->len >= 2 && b->p[b->len - 1] == '\n'));
}

/* No field of the header is Bcc: or Resent-Bcc: (a line that does not
 * start with WSP starts a field). */
static void
check_no_bcc(const struct sendmail_buf *h)
{
	size_t i = 0;

	while (i < h->len) {
		const char *l = h->p + i, *nl = memchr(l, '\n', h->len - i);
		size_t n = (size_t)(nl - l) + 1, k = 0;

		CHECK(nl != NULL);
		if (l[0] != ' ' && l[0] != '\t') {
			while (k < n && l[k] != ':' && l[k] != ' ' && l[k] != '\t')
				k++;
			CHECK(!util_ascii_casecmp_n(l, k, "bcc", 3));
			CHECK(!util_ascii_casecmp_n(l, k, "resent-bcc", 10));
		}
		i += n;
	}
}

static void
check_dot_stuff(const struct sendmail_buf *body)
{
	struct sendmail_buf st = { 0 }, un = { 0 };
	size_t i = 0;

	sendmail_dot_stuff(&st, body->p, body->len);
	while (i < st.len) {
		const char *l = st.p + i, *nl = memchr(l, '\n', st.len - i);
		size_t n = nl ? (size_t)(nl - l) + 1 : st.len - i;

		/* RFC 5321 4.5.2: no line of the stuffed text is "." */
		CHECK(!(n == 3 && memcmp(l, ".\r\n", 3) == 0));
		if (l[0] == '.')
			sendmail_buf_add(&un, l + 1, n - 1);
		else
			sendmail_buf_add(&un, l, n);
		i += n;
	}
	CHECK(un.len == body->len);
	CHECK(un.len == 0 || memcmp(un.p, body->p, un.len) == 0);
	sendmail_buf_clear(&st);
	sendmail_buf_clear(&un);
}

static void
fuzz_message(const char *p, size_t len, uint8_t opt)
{
	struct sendmail_msg m;
	char err[256];

	if (sendmail_msg_parse(p, len, (opt & 0x20) != 0, (opt & 0x40) != 0,
	    (opt & 0x80) ? "example.test" : NULL, &m, err, sizeof(err)) == -1) {
		CHECK(err[0] != '\0');
		CHECK(m.header.p == NULL && m.body.p == NULL && m.rcpts.n == 0);
		return;
	}
	check_crlf(&m.header);
	check_crlf(&m.body);
	check_no_bcc(&m.header);
	if (!(opt & 0x40))
		CHECK(m.rcpts.n == 0);
	check_list(&m.rcpts);
	check_dot_stuff(&m.body);
	sendmail_msg_clear(&m);
}

static void
fuzz_display_name(const char *p, size_t len)
{
	char *name = strndup(p, len);
	struct sendmail_buf out = { 0 };
	bool encoded = false;

	CHECK(name != NULL);
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		encoded |= *c < 0x20 || *c >= 0x7f;
	sendmail_display_name(&out, name);
	for (size_t i = 0; i < out.len; i++)
		CHECK((unsigned char)out.p[i] >= 0x20 && out.p[i] != 0x7f);
	/* RFC 2047 2: encoded-words of at most 75 characters, apart */
	for (size_t i = 0; encoded && i < out.len;) {
		const char *sp = memchr(out.p + i, ' ', out.len - i);
		size_t w = sp ? (size_t)(sp - out.p) - i : out.len - i;

		CHECK(w >= 12 && w <= 75);
		CHECK(memcmp(out.p + i, "=?UTF-8?B?", 10) == 0);
		CHECK(memcmp(out.p + i + w - 2, "?=", 2) == 0);
		i += w + 1;
	}
	sendmail_buf_clear(&out);
	free(name);
}

static void
fuzz_config(const char *p, size_t len)
{
	char *sock, *spool, *host, err[128];

	if (sendmail_config_scan(p, len, &sock, &spool, &host, err,
	    sizeof(err)) == -1) {
		CHECK(err[0] != '\0');
		CHECK(sock == NULL && spool == NULL && host == NULL);
		return;
	}
	free(sock);
	free(spool);
	free(host);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data + 1;

	if (size == 0)
		return 0;
	switch (data[0] % 5) {
	case 0:
		fuzz_args(p, size - 1);
		break;
	case 1:
		fuzz_addresses(p, size - 1, (data[0] & 0x80) != 0);
		break;
	case 2:
		fuzz_message(p, size - 1, data[0]);
		break;
	case 3:
		fuzz_display_name(p, size - 1);
		break;
	default:
		fuzz_config(p, size - 1);
		break;
	}
	return 0;
}
