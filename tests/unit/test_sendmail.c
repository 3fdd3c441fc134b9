/*
 * test_sendmail.c - unit tests for sendmail_msg.c (tern sendmail's pure
 * parts): option parsing, RFC 5322 address lists in hostile forms, header
 * recipients for -t, Bcc removal, CRLF and the lone dot, dot-stuffing,
 * display names, the configuration peek; and submit_socket in config.c.
 *
 * Table-driven: every case is checked and each mismatch printed with its
 * name before the test fails.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "cmd/sendmail_msg.h"

/* ------------------------------------------------------------------ */

struct args_case {
	const char *name;
	const char *argv[8];
	int want_rc;
	bool t, i;
	const char *sender, *fullname, *config;
	const char *rcpts;     /* joined with "|" */
};

static const struct args_case args_cases[] = {
	{ "plain recipients", { "a@x", "b@y" }, 0, false, false, NULL, NULL,
	  NULL, "a@x|b@y" },
	{ "-t -i", { "-t", "-i" }, 0, true, true, NULL, NULL, NULL, "" },
	{ "-oi and ignored -o options", { "-oi", "-oem", "-odi", "-oee", "a@x" },
	  0, false, true, NULL, NULL, NULL, "a@x" },
	{ "-f attached, -F separate", { "-fme@x", "-F", "Me Too", "a@x" }, 0,
	  false, false, "me@x", "Me Too", NULL, "a@x" },
	{ "-f separate, -F attached", { "-f", "me@x", "-FName", "a@x" }, 0,
	  false, false, "me@x", "Name", NULL, "a@x" },
	{ "-r is -f", { "-r", "me@x", "a@x" }, 0, false, false, "me@x", NULL,
	  NULL, "a@x" },
	{ "-C config", { "-C", "/etc/t.conf", "-t" }, 0, true, false, NULL, NULL,
	  "/etc/t.conf", "" },
	{ "-c config", { "-c/etc/t.conf", "a@x" }, 0, false, false, NULL, NULL,
	  "/etc/t.conf", "a@x" },
	{ "cron's options", { "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root" },
	  0, false, true, NULL, "CronDaemon", NULL, "root" },
	{ "-bm is the default", { "-bm", "a@x" }, 0, false, false, NULL, NULL,
	  NULL, "a@x" },
	{ "-- ends options", { "-t", "--", "-odd@x", "-t" }, 0, true, false, NULL,
	  NULL, NULL, "-odd@x|-t" },
	{ "options after recipients", { "a@x", "-i" }, 0, false, true, NULL, NULL,
	  NULL, "a@x" },
	{ "unknown option", { "-X" }, 64, false, false, NULL, NULL, NULL, "" },
	{ "-t with junk", { "-tx" }, 64, false, false, NULL, NULL, NULL, "" },
	{ "-f without value", { "a@x", "-f" }, 64, false, false, NULL, NULL, NULL, "" },
	{ "-bp not supported", { "-bp" }, 64, false, false, NULL, NULL, NULL, "" },
	{ "-bs not supported", { "-bs" }, 64, false, false, NULL, NULL, NULL, "" },
	{ "lone -o", { "-o" }, 64, false, false, NULL, NULL, NULL, "" },
};

static bool
same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void
test_parse_args(void **state)
{
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(args_cases) / sizeof(args_cases[0]); k++) {
		const struct args_case *c = &args_cases[k];
		char *argv[10] = { "tern", "sendmail" };
		int argc = 2;
		struct sendmail_opts o;
		char err[256] = "", got[512] = "";
		int rc;

		for (size_t j = 0; c->argv[j] != NULL; j++)
			argv[argc++] = (char *)c->argv[j];
		rc = sendmail_parse_args(argc, argv, 2, &o, err, sizeof(err));
		if (rc != c->want_rc) {
			print_error("%s: rc %d, want %d (%s)\n", c->name, rc,
			    c->want_rc, err);
			bad++;
			free(o.rcpts);
			continue;
		}
		if (rc != 0) {
			if (err[0] == '\0') {
				print_error("%s: no error message\n", c->name);
				bad++;
			}
			continue;
		}
		for (size_t j = 0; j < o.nrcpts; j++) {
			strncat(got, j ? "|" : "", sizeof(got) - strlen(got) - 1);
			strncat(got, o.rcpts[j], sizeof(got) - strlen(got) - 1);
		}
		if (o.extract != c->t || o.ignore_dots != c->i ||
		    !same(o.sender, c->sender) || !same(o.fullname, c->fullname) ||
		    !same(o.config, c->config) || strcmp(got, c->rcpts) != 0) {
			print_error("%s: got t=%d i=%d f=%s F=%s C=%s rcpts=%s\n",
			    c->name, o.extract, o.ignore_dots, o.sender ? o.sender : "-",
			    o.fullname ? o.fullname : "-", o.config ? o.config : "-",
			    got);
			bad++;
		}
		free(o.rcpts);
	}
	assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ */

struct addr_case {
	const char *name;
	const char *in;
	int want_n;            /* -1: error */
	const char *want;      /* joined with "|" */
};

static const struct addr_case addr_cases[] = {
	{ "bare", "a@example.org", 1, "a@example.org" },
	{ "unqualified", "root", 1, "root@host.test" },
	{ "list", "a@x.org, b@y.org,c@z.org", 3, "a@x.org|b@y.org|c@z.org" },
	{ "display name", "Joe Smith <joe@x.org>", 1, "joe@x.org" },
	{ "quoted name with comma", "\"Smith, Joe\" <joe@x.org>, b@y.org", 2,
	  "joe@x.org|b@y.org" },
	{ "quoted name with <>", "\"a@evil <x@evil.org>\" <joe@x.org>", 1,
	  "joe@x.org" },
	{ "comment", "joe@x.org (Joe, the \\) one), b@y.org", 2,
	  "joe@x.org|b@y.org" },
	{ "nested comment", "joe@x.org (a (b, c) d)", 1, "joe@x.org" },
	{ "comment in angle", "<(c)joe@x.org>", 1, "joe@x.org" },
	{ "folded", "a@x.org,\r\n\tJoe\r\n <joe@x.org>", 2, "a@x.org|joe@x.org" },
	{ "group", "friends: a@x.org, Bob <b@y.org>;, c@z.org", 3,
	  "a@x.org|b@y.org|c@z.org" },
	{ "empty group", "undisclosed-recipients:;", 0, "" },
	{ "empty elements", ", ,a@x.org,,", 1, "a@x.org" },
	{ "obsolete route", "<@relay.org,@r2.org:joe@x.org>", 1, "joe@x.org" },
	{ "quoted local part", "\"joe smith\"@x.org", 1, "\"joe smith\"@x.org" },
	{ "quoted local part with @", "\"a@b\"@x.org", 1, "\"a@b\"@x.org" },
	{ "domain literal", "joe@[192.0.2.1]", 1, "joe@[192.0.2.1]" },
	{ "duplicates merge", "a@x.org, A@X.ORG, <a@x.org>", 3, "a@x.org" },
	{ "utf-8", "J\xc3\xb6rg <j\xc3\xb6rg@x.org>", 1, "j\xc3\xb6rg@x.org" },
	{ "name without address", "Joe Smith", -1, "" },
	{ "unterminated angle", "Joe <joe@x.org", -1, "" },
	{ "unterminated quote", "\"Joe <joe@x.org>", -1, "" },
	{ "unterminated comment", "joe@x.org (oops", -1, "" },
	{ "two angles", "<a@x.org> <b@x.org>", -1, "" },
	{ "empty angle", "<>", -1, "" },
	{ "stray >", "joe@x.org>", -1, "" },
	{ "bad domain", "joe@-x-.org", -1, "" },
	{ "two @", "a@b@x.org", -1, "" },
	{ "CR LF injection stays one header", "a@x.org\r\nRCPT TO:<b@y.org>", -1, "" },
	{ "local part too long",
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.org",
	  -1, "" },
};

static void
test_addresses(void **state)
{
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(addr_cases) / sizeof(addr_cases[0]); k++) {
		const struct addr_case *c = &addr_cases[k];
		struct sendmail_list l = { 0 };
		char err[256] = "", got[512] = "";
		int n = sendmail_parse_addresses(c->in, strlen(c->in), "host.test",
		    &l, err, sizeof(err));

		for (size_t j = 0; j < l.n; j++) {
			strncat(got, j ? "|" : "", sizeof(got) - strlen(got) - 1);
			strncat(got, l.v[j], sizeof(got) - strlen(got) - 1);
		}
		if (n != c->want_n || (n >= 0 && strcmp(got, c->want) != 0) ||
		    (n < 0 && err[0] == '\0')) {
			print_error("%s: n=%d want %d, got '%s' want '%s' (%s)\n",
			    c->name, n, c->want_n, got, c->want, err);
			bad++;
		}
		sendmail_list_clear(&l);
	}
	assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ */

struct msg_case {
	const char *name;
	const char *in;
	bool ignore_dots, extract;
	int want_rc;
	const char *header, *body, *rcpts;
	bool from, date, msgid;
};

static const struct msg_case msg_cases[] = {
	{ "LF to CRLF, Bcc removed, recipients", "To: a@x.org\nCc: B <b@x.org>\n"
	  "Bcc: c@x.org,\n d@x.org\nSubject: s\n\nbody\n", false, true, 0,
	  "To: a@x.org\r\nCc: B <b@x.org>\r\nSubject: s\r\n", "body\r\n",
	  "a@x.org|b@x.org|c@x.org|d@x.org", false, false, false },
	{ "without -t nothing is extracted, Bcc still removed",
	  "To: a@x.org\r\nBCC: c@x.org\r\n\r\nbody\r\n", false, false, 0,
	  "To: a@x.org\r\n", "body\r\n", "", false, false, false },
	{ "lone dot ends input", "To: a@x.org\n\nline\n.\nafter\n", false, true,
	  0, "To: a@x.org\r\n", "line\r\n", "a@x.org", false, false, false },
	{ "lone dot with CRLF ends input", "Subject: s\r\n\r\nline\r\n.\r\nafter\r\n",
	  false, false, 0, "Subject: s\r\n", "line\r\n", "", false, false, false },
	{ "-i keeps the lone dot", "Subject: s\n\nline\n.\nafter\n", true, false,
	  0, "Subject: s\r\n", "line\r\n.\r\nafter\r\n", "", false, false, false },
	{ "no header", "hello world\nsecond\n", false, true, 0, "",
	  "hello world\r\nsecond\r\n", "", false, false, false },
	{ "header ended by a body line", "Subject: s\nnot a header\n", false,
	  false, 0, "Subject: s\r\n", "not a header\r\n", "", false, false, false },
	{ "empty input", "", false, true, 0, "", "", "", false, false, false },
	{ "no final newline", "Subject: s\n\nlast", false, false, 0,
	  "Subject: s\r\n", "last\r\n", "", false, false, false },
	{ "mbox From line dropped", "From someone Mon Jan 1\nSubject: s\n\nb\n",
	  false, false, 0, "Subject: s\r\n", "b\r\n", "", false, false, false },
	{ "present From Date Message-ID noted", "from: a@x.org\nDATE: Mon, 1 Jan "
	  "2024 00:00:00 +0000\nMessage-Id: <1@x>\n\nb\n", false, false, 0,
	  "from: a@x.org\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	  "Message-Id: <1@x>\r\n", "b\r\n", "", true, true, true },
	{ "field name with space before colon", "To : a@x.org\n\nb\n", false,
	  true, 0, "To : a@x.org\r\n", "b\r\n", "a@x.org", false, false, false },
	{ "Resent-To and X-To are not recipients", "Resent-To: r@x.org\n"
	  "X-To: q@x.org\nTo: a@x.org\n\nb\n", false, true, 0,
	  "Resent-To: r@x.org\r\nX-To: q@x.org\r\nTo: a@x.org\r\n", "b\r\n",
	  "a@x.org", false, false, false },
	{ "Bcc in the body is body", "To: a@x.org\n\nBcc: z@x.org\n", false, true,
	  0, "To: a@x.org\r\n", "Bcc: z@x.org\r\n", "a@x.org", false, false, false },
	{ "bad To: is an error", "To: Joe Smith\n\nb\n", false, true, -1, "", "",
	  "", false, false, false },
	{ "bad To: without -t passes", "To: Joe Smith\n\nb\n", false, false, 0,
	  "To: Joe Smith\r\n", "b\r\n", "", false, false, false },
	{ "group in To", "To: list:;\nCc: a@x.org\n\nb\n", false, true, 0,
	  "To: list:;\r\nCc: a@x.org\r\n", "b\r\n", "a@x.org", false, false, false },
	{ "Resent-Bcc removed, not extracted", "Resent-To: r@x.org\n"
	  "Resent-Bcc: rb@x.org,\n rc@x.org\nRESENT-BCC : rd@x.org\nTo: a@x.org\n"
	  "X-Resent-Bcc: x@x.org\n\nResent-Bcc: body@x.org\n", false, true, 0,
	  "Resent-To: r@x.org\r\nTo: a@x.org\r\nX-Resent-Bcc: x@x.org\r\n",
	  "Resent-Bcc: body@x.org\r\n", "a@x.org", false, false, false },
	/* a lone CR ends a line as the daemon reads it (bare_newline
	 * normalize): the Bcc: behind it is a field, and removed */
	{ "lone CR before Bcc", "Subject: x\rBcc: u01@x.org\rTo: a@x.org\n\nb\n",
	  false, true, 0, "Subject: x\r\nTo: a@x.org\r\n", "b\r\n",
	  "u01@x.org|a@x.org", false, false, false },
	{ "lone CR before Bcc without -t", "Subject: x\rBcc: u01@x.org\r\n\r\nb\r\n",
	  false, false, 0, "Subject: x\r\n", "b\r\n", "", false, false, false },
	{ "CR lines only", "To: a@x.org\rBCC: c@x.org\r\rb\rc\r", false, true, 0,
	  "To: a@x.org\r\n", "b\r\nc\r\n", "a@x.org|c@x.org", false, false,
	  false },
	{ "CR CR LF is two line ends", "Subject: s\r\r\nBcc: z@x.org\n", false,
	  true, 0, "Subject: s\r\n", "Bcc: z@x.org\r\n", "", false, false, false },
	{ "LF CR is two line ends", "To: a@x.org\n\rb\n", false, true, 0,
	  "To: a@x.org\r\n", "b\r\n", "a@x.org", false, false, false },
	{ "lone CR in a folded Bcc", "To: a@x.org\nBcc: b@x.org,\r c@x.org\n\nb\n",
	  false, true, 0, "To: a@x.org\r\n", "b\r\n", "a@x.org|b@x.org|c@x.org",
	  false, false, false },
	{ "lone CR before the dot", "Subject: s\n\nline\r.\rafter\n", false,
	  false, 0, "Subject: s\r\n", "line\r\n", "", false, false, false },
};

static void
test_messages(void **state)
{
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(msg_cases) / sizeof(msg_cases[0]); k++) {
		const struct msg_case *c = &msg_cases[k];
		struct sendmail_msg m;
		char err[256] = "", got[512] = "";
		int rc = sendmail_msg_parse(c->in, strlen(c->in), c->ignore_dots,
		    c->extract, "host.test", &m, err, sizeof(err));

		if (rc != c->want_rc) {
			print_error("%s: rc %d want %d (%s)\n", c->name, rc,
			    c->want_rc, err);
			bad++;
			sendmail_msg_clear(&m);
			continue;
		}
		if (rc != 0) {
			sendmail_msg_clear(&m);
			continue;
		}
		for (size_t j = 0; j < m.rcpts.n; j++) {
			strncat(got, j ? "|" : "", sizeof(got) - strlen(got) - 1);
			strncat(got, m.rcpts.v[j], sizeof(got) - strlen(got) - 1);
		}
		if (strcmp(m.header.p ? m.header.p : "", c->header) != 0 ||
		    strcmp(m.body.p ? m.body.p : "", c->body) != 0 ||
		    strcmp(got, c->rcpts) != 0 || m.has_from != c->from ||
		    m.has_date != c->date || m.has_message_id != c->msgid) {
			print_error("%s: header '%s' body '%s' rcpts '%s' "
			    "from=%d date=%d msgid=%d\n", c->name,
			    m.header.p ? m.header.p : "", m.body.p ? m.body.p : "",
			    got, m.has_from, m.has_date, m.has_message_id);
			bad++;
		}
		sendmail_msg_clear(&m);
	}
	assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------ */

static void
test_dot_stuff(void **state)
{
	static const struct {
		const char *name, *in, *want;
	} cases[] = {
		{ "none", "a\r\nb\r\n", "a\r\nb\r\n" },
		{ "leading dot", ".a\r\n", "..a\r\n" },
		{ "lone dot", "x\r\n.\r\ny\r\n", "x\r\n..\r\ny\r\n" },
		{ "dots inside lines", "a.b\r\n .c\r\n", "a.b\r\n .c\r\n" },
		{ "last line", "a\r\n..", "a\r\n..." },
		{ "empty", "", "" },
	};
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct sendmail_buf b = { 0 };

		sendmail_dot_stuff(&b, cases[k].in, strlen(cases[k].in));
		if (strcmp(b.p ? b.p : "", cases[k].want) != 0) {
			print_error("%s: got '%s'\n", cases[k].name, b.p ? b.p : "");
			bad++;
		}
		sendmail_buf_clear(&b);
	}
	assert_int_equal(bad, 0);
}

static void
test_display_name(void **state)
{
	static const struct {
		const char *name, *in, *want;
	} cases[] = {
		{ "atoms", "Joe Smith", "Joe Smith" },
		{ "specials quoted", "Smith, Joe (Jr.)", "\"Smith, Joe (Jr.)\"" },
		{ "quotes escaped", "a \"b\" \\c", "\"a \\\"b\\\" \\\\c\"" },
		{ "utf-8 encoded", "J\xc3\xb6rg", "=?UTF-8?B?SsO2cmc=?=" },
		{ "newline cannot inject", "x\r\nBcc: y@z", "=?UTF-8?B?eEJjYzogeUB6?=" },
		{ "one pad", "\xc3\xa9t\xc3\xa9", "=?UTF-8?B?w6l0w6k=?=" },
		{ "no pad", "\xc3\xa9t\xc3\xa9!", "=?UTF-8?B?w6l0w6kh?=" },
		/* 46 octets: two encoded words, the first of 45 */
		{ "split at 45 octets",
		  "\xc3\xa9" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "=?UTF-8?B?w6lhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh?= "
		  "=?UTF-8?B?YQ==?=" },
	};
	int bad = 0;

	(void)state;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct sendmail_buf b = { 0 };

		sendmail_display_name(&b, cases[k].in);
		if (strcmp(b.p ? b.p : "", cases[k].want) != 0) {
			print_error("%s: got '%s'\n", cases[k].name, b.p ? b.p : "");
			bad++;
		}
		sendmail_buf_clear(&b);
	}
	assert_int_equal(bad, 0);
}

static void
test_config_scan(void **state)
{
	static const char text[] =
	    "# comment: submit_socket /nope\n"
	    "hostname Mail.Example.org   # trailing\n"
	    "domain x.org {\n"
	    "    spool /in/a/block\n"
	    "    submit_socket /in/a/block\n"
	    "}\n"
	    "route * { spool /one/line/block }\n"
	    "spool \"/var/sp ool\"\n"
	    "submit_socket ./run/s.sock\n"
	    "submit_socket /second/ignored\n";
	char *sock, *spool, *host, err[128];

	(void)state;
	assert_int_equal(sendmail_config_scan(text, strlen(text), &sock, &spool,
	    &host, err, sizeof(err)), 0);
	assert_string_equal(sock, "./run/s.sock");
	assert_string_equal(spool, "/var/sp ool");
	assert_string_equal(host, "Mail.Example.org");
	free(sock);
	free(spool);
	free(host);
	assert_int_equal(sendmail_config_scan("spool /a\n", 9, &sock, &spool,
	    &host, err, sizeof(err)), 0);
	assert_null(sock);
	assert_null(host);
	assert_string_equal(spool, "/a");
	free(spool);
	assert_int_equal(sendmail_config_scan("spool \"/a\n", 10, &sock, &spool,
	    &host, err, sizeof(err)), -1);
	/* values found before the error are not left allocated (they
	 * leaked: found by fuzz_sendmail, under ASan) */
	assert_int_equal(sendmail_config_scan("spool /a\nhostname \"h\n", 21,
	    &sock, &spool, &host, err, sizeof(err)), -1);
	assert_null(spool);
	assert_null(host);
	/* a NUL octet in a word looped for ever (found by fuzz_sendmail) */
	assert_int_equal(sendmail_config_scan("spool /a\0b\nhostname \0\n", 22,
	    &sock, &spool, &host, err, sizeof(err)), 0);
	assert_null(sock);
	assert_string_equal(spool, "/a");
	assert_string_equal(host, "");
	free(spool);
	free(host);
}

/* submit_socket in the real loader: default, relative, none, too long. */
static struct config *
load_text(const char *text, char **errors)
{
	char path[] = "/tmp/tern-test-sendmail-XXXXXX";
	int fd = mkstemp(path);
	struct config *cfg;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cfg = config_load(path, errors);
	unlink(path);
	return cfg;
}

static void
test_config_submit_socket(void **state)
{
	char *errors = NULL, cwd[4096], want[4200];
	struct config *cfg;

	(void)state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	cfg = load_text("spool /srv/tern/spool\n", &errors);
	assert_non_null(cfg);
	assert_string_equal(cfg->submit_socket, "/srv/tern/submit.sock");
	config_free(&cfg);
	free(errors);

	cfg = load_text("spool /srv/spool\nsubmit_socket run/s.sock\n", &errors);
	assert_non_null(cfg);
	snprintf(want, sizeof(want), "%s/run/s.sock", strcmp(cwd, "/") ? cwd : "");
	assert_string_equal(cfg->submit_socket, want);
	config_free(&cfg);
	free(errors);

	cfg = load_text("spool /srv/spool\nsubmit_socket none\n", &errors);
	assert_non_null(cfg);
	assert_null(cfg->submit_socket);
	config_free(&cfg);
	free(errors);

	cfg = load_text("submit_socket /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaa/s\n", &errors);
	assert_null(cfg);
	assert_non_null(errors);
	assert_non_null(strstr(errors, "limit of a socket address"));
	free(errors);

	cfg = load_text("submit_socket \"\"\n", &errors);
	assert_null(cfg);
	free(errors);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_args),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_dot_stuff),
		cmocka_unit_test(test_display_name),
		cmocka_unit_test(test_config_scan),
		cmocka_unit_test(test_config_submit_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
