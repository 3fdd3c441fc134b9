/*
 * test_config.c - the configuration loader, its error messages, relay
 * matching, local lookups and alias expansion, Maildir paths and the
 * generated reference.
 *
 * Error cases are a table of named cases: a configuration (and optional
 * users / aliases files) with the exact "file:line: reason" report wanted.
 * In the wanted text "@C" stands for the configuration file's path and
 * "@D" for the temporary directory holding all files.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "unit.h"

#include "conf/config.h"
#include "conf/local_lookup.h"
#include "conf/passwd.h"
#include "relay/route.h"
#include "lib/util.h"

static char tmpdir[] = "/tmp/tern-test-config-XXXXXX";
static char conf_path[256];
static char start_cwd[4096];

/*
 * Helpers
 */

static int
group_setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(conf_path, sizeof(conf_path), "%s/tern.conf", tmpdir);
	if (getcwd(start_cwd, sizeof(start_cwd)) == NULL)
		return -1;
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	return unit_rm_tree(tmpdir);
}

/* Write text to tmpdir/name; returns the path in a static buffer. */
static const char *
write_file(const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	return path;
}

/* Replace "@C" with the config path and "@D" with tmpdir. Caller frees. */
static char *
subst(const char *tmpl)
{
	size_t cap = strlen(tmpl) * 8 + 1024, o = 0;
	char *out = xmalloc(cap);

	for (const char *s = tmpl; *s != '\0'; s++) {
		const char *ins = NULL;

		if (s[0] == '@' && s[1] == 'C')
			ins = conf_path;
		else if (s[0] == '@' && s[1] == 'D')
			ins = tmpdir;
		if (ins != NULL) {
			size_t n = strlen(ins);

			assert_true(o + n < cap);
			memcpy(out + o, ins, n);
			o += n;
			s++;
		} else {
			assert_true(o + 1 < cap);
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return out;
}

/* Write the config text (after subst) and load it. */
static struct config *
load_conf(const char *text, char **errors)
{
	char *t = subst(text);
	struct config *cfg;

	write_file("tern.conf", t);
	free(t);
	cfg = config_load(conf_path, errors);
	return cfg;
}

/* Load a config that must be valid; fails the test with its errors. */
static struct config *
load_ok(const char *text)
{
	char *err = NULL;
	struct config *cfg = load_conf(text, &err);

	if (cfg == NULL) {
		print_error("unexpected errors:\n%s", err ? err : "(none)");
		free(err);
		fail();
	}
	assert_null(err);
	return cfg;
}

static char *
cwd_path(const char *rel)
{
	char cwd[4096];

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	return xasprintf("%s/%s", cwd, rel);
}

static void
assert_mailbox(const struct config_domain *d, const char *name)
{
	if (local_lookup(d, name, strlen(name)) != LOCAL_LOOKUP_MAILBOX) {
		print_error("%s is not a mailbox of %s\n", name, d->name);
		fail();
	}
}

/*
 * Loading valid configurations
 */

static void
test_default_loads(void **state)
{
	char host[256] = "";
	char *err = NULL, *want;
	const struct sockaddr_in *sin;
	const struct config_domain *d;
	struct config *cfg;

	(void)state;
	/* In an empty directory, so ./var/users surely does not exist. */
	assert_int_equal(chdir(tmpdir), 0);
	cfg = config_load(NULL, &err);
	assert_null(err);
	assert_non_null(cfg);

	assert_string_equal(cfg->source, "(default)");
	gethostname(host, sizeof(host) - 1);
	assert_string_equal(cfg->hostname, host);
	assert_int_equal(cfg->nlisteners, 1);
	assert_string_equal(cfg->listeners[0].text, "127.0.0.1:2525");
	sin = (const struct sockaddr_in *)&cfg->listeners[0].addr;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 2525);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(cfg->listeners[0].addrlen, sizeof(*sin));

	want = cwd_path("var/spool");
	assert_string_equal(cfg->spool_dir, want);
	free(want);
	want = cwd_path("var/empty");
	assert_string_equal(cfg->chroot_dir, want);
	free(want);
	assert_null(cfg->log_file);
	assert_string_equal(cfg->user_smtp, "tern-smtp");
	assert_string_equal(cfg->user_queue, "tern");

	/* etc/default.conf lists only 127.0.0.0/8 (the "only
	 * 127.0.0.0/8 may relay"). */
	assert_int_equal(cfg->nrelay_networks, 1);
	assert_int_equal(cfg->relay_networks[0].family, AF_INET);
	assert_int_equal(cfg->relay_networks[0].prefix, 8);
	assert_int_equal(cfg->relay_networks[0].addr[0], 127);

	assert_int_equal(cfg->max_message_size, 25 * 1024 * 1024);
	assert_int_equal(cfg->max_recipients, 100);
	assert_int_equal(cfg->max_connections, 256);
	assert_int_equal(cfg->max_connections_per_ip, 20);
	assert_int_equal(cfg->max_errors, 10);
	assert_int_equal(cfg->timeout_greeting, 300);
	assert_int_equal(cfg->timeout_command, 300);
	assert_int_equal(cfg->timeout_data, 180);
	assert_int_equal(cfg->delivery_workers, 4);
	assert_int_equal(cfg->bare_newline, CONFIG_BARE_NEWLINE_NORMALIZE);

	assert_int_equal(cfg->ndomains, 1);
	d = config_find_domain(cfg, "LocalHost", 9);
	assert_ptr_equal(d, &cfg->domains[0]);
	assert_string_equal(d->name, "localhost");
	assert_int_equal(d->nmailboxes, 1);
	assert_mailbox(d, "postmaster");
	assert_int_equal(d->naliases, 0);
	want = cwd_path("var/users");
	assert_string_equal(d->users_file, want);
	free(want);
	assert_null(d->aliases_file);
	want = cwd_path("var/mail/%d/%u");
	assert_string_equal(d->maildir, want);
	free(want);

	/* The missing users file is a warning, not an error. */
	want = xasprintf("(default):12: users file %s/var/users does not "
	    "exist; domain localhost has only its inline mailboxes\n", tmpdir);
	assert_non_null(cfg->warnings);
	assert_string_equal(cfg->warnings, want);
	free(want);

	config_free(&cfg);
	assert_null(cfg);
	assert_int_equal(chdir(start_cwd), 0);
}

static void
test_default_text(void **state)
{
	(void)state;
	assert_non_null(strstr(config_default_text(),
	    "listen          127.0.0.1:2525"));
	assert_non_null(strstr(config_default_text(), "domain localhost {"));
}

static void
test_empty_file_gets_table_defaults(void **state)
{
	struct config *cfg;
	char *want;

	(void)state;
	cfg = load_ok("# nothing but a comment\n\n");
	assert_int_equal(cfg->nlisteners, 1);
	assert_string_equal(cfg->listeners[0].text, "127.0.0.1:2525");
	/* relay_networks absent: both loopback networks. */
	assert_int_equal(cfg->nrelay_networks, 2);
	assert_int_equal(cfg->relay_networks[0].family, AF_INET);
	assert_int_equal(cfg->relay_networks[1].family, AF_INET6);
	assert_int_equal(cfg->relay_networks[1].prefix, 128);
	assert_int_equal(cfg->ndomains, 0);
	/* Outbound scheduling. */
	assert_int_equal(cfg->relay_port, 25);
	assert_int_equal(cfg->max_relay_connections, 100);
	assert_int_equal(cfg->max_relay_connections_per_domain, 10);
	assert_int_equal(cfg->retry_min, 300);
	assert_int_equal(cfg->retry_max, 4 * 3600);
	assert_int_equal(cfg->max_queue_lifetime, 5 * 86400);
	/* Delivery status notifications (docs/dsn.md). */
	assert_int_equal(cfg->delay_warning_time, 4 * 3600);
	assert_int_equal(cfg->dsn_max_return_size, 100 * 1024);
	want = cwd_path("var/spool");
	assert_string_equal(cfg->spool_dir, want);
	free(want);
	assert_null(cfg->warnings);
	config_free(&cfg);
}

/* Find the repository root (holding examples/tern.conf) above cwd. */
static bool
chdir_repo_root(void)
{
	for (int i = 0; i < 5; i++) {
		if (access("examples/tern.conf", R_OK) == 0)
			return true;
		if (chdir("..") == -1)
			return false;
	}
	return false;
}

static void
test_example_loads(void **state)
{
	struct local_target out[LOCAL_EXPAND_MAX];
	const struct config_domain *org, *net;
	char *err = NULL;
	struct config *cfg;
	int n;

	(void)state;
	assert_true(chdir_repo_root());
	cfg = config_load("examples/tern.conf", &err);
	if (cfg == NULL)
		print_error("%s", err);
	assert_null(err);
	assert_non_null(cfg);
	/* The only warning allowed: a clean clone makes examples/passwd
	 * world-readable (git keeps no modes but the executable bit). */
	if (cfg->warnings != NULL) {
		assert_non_null(strstr(cfg->warnings, "passwd is readable by "
		    "everyone"));
		assert_null(strchr(cfg->warnings, '\n') == NULL ? NULL :
		    strchr(strchr(cfg->warnings, '\n') + 1, '\n'));
	}

	assert_string_equal(cfg->hostname, "mail.example.org");
	assert_int_equal(cfg->nlisteners, 4);
	assert_string_equal(cfg->listeners[1].text, "[::]:25");
	assert_int_equal(cfg->listeners[1].addr.ss_family, AF_INET6);
	assert_int_equal(cfg->listeners[1].auth, CONFIG_LISTENER_AUTH_NO);
	assert_int_equal(cfg->listeners[2].auth, CONFIG_LISTENER_AUTH_REQUIRED);
	assert_int_equal(cfg->listeners[2].tls, CONFIG_LISTENER_TLS_STARTTLS);
	assert_int_equal(cfg->listeners[2].relay_networks, 0);
	assert_int_equal(cfg->listeners[3].tls, CONFIG_LISTENER_TLS_IMPLICIT);
	assert_string_equal(cfg->tls_certificate, "/etc/tern/tls/fullchain.pem");
	assert_int_equal(cfg->relay_tls, CONFIG_RELAY_TLS_MAY);
	assert_int_equal(cfg->npasswd, 2);
	assert_string_equal(cfg->spool_dir, "/var/spool/tern");
	assert_string_equal(cfg->log_file, "/var/log/tern/tern.log");
	assert_string_equal(cfg->chroot_dir, "/var/spool/empty");
	assert_int_equal(cfg->nrelay_networks, 4);
	assert_int_equal(cfg->max_message_size, 50 * 1024 * 1024);
	assert_int_equal(cfg->max_recipients, 200);
	assert_int_equal(cfg->max_connections, 512);
	assert_int_equal(cfg->max_connections_per_ip, 30);
	assert_int_equal(cfg->timeout_greeting, 300);
	assert_int_equal(cfg->timeout_command, 300);
	assert_int_equal(cfg->timeout_data, 180);
	assert_int_equal(cfg->delivery_workers, 8);
	assert_int_equal(cfg->bare_newline, CONFIG_BARE_NEWLINE_REJECT);

	assert_int_equal(cfg->ndomains, 2);
	org = config_find_domain(cfg, "example.org", 11);
	net = config_find_domain(cfg, "EXAMPLE.NET", 11);
	assert_non_null(org);
	assert_non_null(net);
	assert_string_equal(org->maildir, "/var/mail/vhosts/%d/%u");
	assert_string_equal(net->maildir, "/var/spool/mail/%d/%u");
	for (const char *const *m = (const char *const[]){ "alice", "bob",
	    "carol", "erin", "frank", "grace", NULL }; *m != NULL; m++)
		assert_mailbox(org, *m);
	assert_int_equal(org->nmailboxes, 6);
	assert_int_equal(local_lookup(org, "sales", 5), LOCAL_LOOKUP_ALIAS);
	/* sales: info, erin, dave@example.net; info: alice, bob */
	n = local_expand(&cfg->domain_index, org, "sales", 5, out);
	assert_int_equal(n, 4);
	assert_string_equal(out[0].mailbox, "alice");
	assert_string_equal(out[1].mailbox, "bob");
	assert_string_equal(out[2].mailbox, "erin");
	assert_string_equal(out[3].mailbox, "dave");
	assert_ptr_equal(out[3].domain, net);
	config_free(&cfg);
	assert_int_equal(chdir(start_cwd), 0);
}

static void
test_values_and_syntax(void **state)
{
	const struct config_domain *d;
	struct config *cfg;
	char *want;

	(void)state;
	cfg = load_ok(
	    "# values, quoting and layout\r\n"
	    "max_message_size 10k\t# lower-case suffix\r\n"
	    "timeout_greeting\t90\n"
	    "timeout_command 1h\n"
	    "timeout_data 2m\n"
	    "max_errors 1000\n"
	    "log_file \"/tmp/a b\\\"c\\\\d\"   # quoted\n"
	    "spool a/./b/../c\n"
	    "chroot //x//y/\n"
	    "hostname MX1.Example.ORG\n"
	    "relay_networks none\n"
	    "domain Example.ORG {\n"
	    "    mailbox PostMaster \"quoted.name\" \"a!b#c\" x#comment\n"
	    "    maildir \"/m %%/%d/%u\"\n"
	    "}\n"
	    "domain b.org { mailbox postmaster }\n"
	    "domain c.org { }\n");
	assert_int_equal(cfg->max_message_size, 10240);
	assert_int_equal(cfg->timeout_greeting, 90);
	assert_int_equal(cfg->timeout_command, 3600);
	assert_int_equal(cfg->timeout_data, 120);
	assert_int_equal(cfg->max_errors, 1000);
	assert_string_equal(cfg->log_file, "/tmp/a b\"c\\d");
	want = cwd_path("a/c");
	assert_string_equal(cfg->spool_dir, want);
	free(want);
	assert_string_equal(cfg->chroot_dir, "/x/y");
	assert_string_equal(cfg->hostname, "mx1.example.org");
	assert_int_equal(cfg->nrelay_networks, 0);
	assert_int_equal(cfg->ndomains, 3);
	d = &cfg->domains[0];
	assert_string_equal(d->name, "example.org");
	assert_mailbox(d, "postmaster");
	assert_mailbox(d, "quoted.name");
	assert_mailbox(d, "a!b#c");
	assert_mailbox(d, "x");
	assert_int_equal(d->nmailboxes, 4);
	assert_string_equal(d->maildir, "/m %%/%d/%u");
	assert_mailbox(&cfg->domains[1], "postmaster");
	assert_int_equal(cfg->domains[2].nmailboxes, 0);
	/* c.org has no postmaster: a warning, the load still succeeds. */
	want = subst("@C:17: domain c.org has no postmaster mailbox or alias "
	    "(RFC 5321 4.5.1 requires one)\n");
	assert_string_equal(cfg->warnings, want);
	free(want);
	config_free(&cfg);
}

static void
test_computed_defaults(void **state)
{
	static const struct {
		const char *name;
		const char *spool;
		const char *chroot;
		const char *maildir;
	} cases[] = {
		{ "nested", "/srv/tern/spool", "/srv/tern/empty",
		  "/srv/tern/mail/%d/%u" },
		{ "percent in path is escaped", "/srv/50%/spool",
		  "/srv/50%/empty", "/srv/50%%/mail/%d/%u" },
		{ "spool at the root", "/spool", "/empty", "/mail/%d/%u" },
		{ "dot-dot is lexical", "/a/b/../spool", "/a/empty",
		  "/a/mail/%d/%u" },
	};

	(void)state;
	for (size_t i = 0; i < nitems(cases); i++) {
		char *text = xasprintf("spool \"%s\"\ndomain a.org {\n"
		    "mailbox postmaster\n}\n", cases[i].spool);
		struct config *cfg = load_ok(text);

		print_message("case %s\n", cases[i].name);
		assert_string_equal(cfg->chroot_dir, cases[i].chroot);
		assert_string_equal(cfg->domains[0].maildir, cases[i].maildir);
		config_free(&cfg);
		free(text);
	}
}

/*
 * Errors: each class with its exact report
 */

struct error_case {
	const char *name;
	const char *conf;
	const char *users;     /* written to @D/users if not NULL */
	const char *aliases;   /* written to @D/aliases if not NULL */
	const char *want;
};

#define DOMAIN_WITH_ALIASES(mailboxes)                                         \
	"domain a.org {\n"                                                     \
	"    mailbox " mailboxes "\n"                                          \
	"    aliases @D/aliases\n"                                             \
	"}\n"

static const struct error_case error_cases[] = {
	{ "unknown option with a suggestion", "max_recipient 5\n", NULL, NULL,
	  "@C:1: unknown option 'max_recipient' (did you mean "
	  "'max_recipients'?)\n" },
	{ "unknown option without a suggestion", "\n# c\nfrobnicate yes\n",
	  NULL, NULL, "@C:3: unknown option 'frobnicate'\n" },
	{ "unknown option in a domain block",
	  "domain a.org {\n mailboxes x\n}\n", NULL, NULL,
	  "@C:2: unknown option 'mailboxes' in domain block (did you mean "
	  "'mailbox'?)\n" },
	{ "top-level option in a domain block",
	  "domain a.org {\n spool /x\n}\n", NULL, NULL,
	  "@C:2: option 'spool' is not allowed in a domain block (it is a "
	  "top-level option)\n" },
	{ "domain option at top level", "mailbox bob\n", NULL, NULL,
	  "@C:1: option 'mailbox' is only allowed in a domain block\n" },
	{ "bad number", "max_recipients many\n", NULL, NULL,
	  "@C:1: max_recipients: 'many' is not a number\n" },
	{ "number overflow", "max_connections 99999999999999999999999\n",
	  NULL, NULL, "@C:1: max_connections: '99999999999999999999999' is "
	  "not a number\n" },
	{ "negative number", "max_errors -1\n", NULL, NULL,
	  "@C:1: max_errors: '-1' is not a number\n" },
	{ "bad size", "max_message_size 10T\n", NULL, NULL,
	  "@C:1: max_message_size: '10T' is not a size (a number of bytes "
	  "with an optional K, M or G suffix)\n" },
	{ "bad duration", "timeout_data 5x\n", NULL, NULL,
	  "@C:1: timeout_data: '5x' is not a duration (a number of seconds, "
	  "or with an s, m, h or d suffix)\n" },
	{ "bad keyword", "bare_newline normalise\n", NULL, NULL,
	  "@C:1: bare_newline: 'normalise' is not one of normalize, reject "
	  "(did you mean 'normalize'?)\n" },
	{ "out of bounds, integer", "max_recipients 0\n", NULL, NULL,
	  "@C:1: max_recipients: 0 is out of bounds (1..10000)\n" },
	{ "out of bounds, workers", "delivery_workers 65\n", NULL, NULL,
	  "@C:1: delivery_workers: 65 is out of bounds (1..64)\n" },
	{ "out of bounds, size too big", "max_message_size 5G\n", NULL, NULL,
	  "@C:1: max_message_size: 5G is out of bounds (1K..4G)\n" },
	{ "out of bounds, size too small", "max_message_size 512\n", NULL,
	  NULL, "@C:1: max_message_size: 512 is out of bounds (1K..4G)\n" },
	{ "out of bounds, duration", "timeout_command 2h\n", NULL, NULL,
	  "@C:1: timeout_command: 2h is out of bounds (1s..1h)\n" },
	{ "duplicate option", "spool /a\nspool /b\n", NULL, NULL,
	  "@C:2: duplicate option 'spool' (first set at line 1)\n" },
	{ "duplicate option in a domain block",
	  "domain a.org {\n maildir /m/%u\n maildir /n/%u\n}\n", NULL, NULL,
	  "@C:3: duplicate option 'maildir' (first set at line 2)\n" },
	{ "duplicate domain", "domain a.org {\n}\ndomain A.org {\n}\n", NULL,
	  NULL, "@C:3: domain a.org is already defined at line 1\n" },
	{ "two values for a single-valued option", "spool /a /b\n", NULL, NULL,
	  "@C:1: spool: expects one value, got 2 (quote values that contain "
	  "spaces)\n" },
	{ "missing value", "spool\n", NULL, NULL,
	  "@C:1: spool: missing value\n" },
	{ "empty path", "spool \"\"\n", NULL, NULL,
	  "@C:1: spool: empty path\n" },
	{ "bad host name", "hostname mail_x.org\n", NULL, NULL,
	  "@C:1: hostname: 'mail_x.org' is not a valid host name: may only "
	  "contain letters, digits, '-' and '.'\n" },
	{ "bad user name", "user_smtp \"a b\"\n", NULL, NULL,
	  "@C:1: user_smtp: 'a b' is not a valid user name\n" },
	{ "unterminated block",
	  "domain a.org {\n    mailbox postmaster\n", NULL, NULL,
	  "@C:1: block 'domain a.org' is never closed (missing '}')\n" },
	{ "stray close", "}\n", NULL, NULL,
	  "@C:1: unexpected '}' (no block is open)\n" },
	{ "close not alone on its line",
	  "domain a.org {\n mailbox postmaster }\n}\n", NULL, NULL,
	  "@C:2: unexpected '}' (a block ends with '}' alone on its line)\n" },
	{ "open brace first", "{\n", NULL, NULL,
	  "@C:1: '{' must follow an option on the same line\n" },
	{ "option without a block", "spool /a {\n whatever\n}\n", NULL, NULL,
	  "@C:1: option 'spool' does not take a block\n" },
	{ "block without a brace", "domain a.org\n", NULL, NULL,
	  "@C:1: 'domain' opens a block: domain NAME { ... }\n" },
	{ "unknown block is skipped to its end",
	  "tlsx {\n  foo bar\n  nested {\n  }\n}\nmax_recipients 0\n", NULL,
	  NULL, "@C:1: unknown option 'tlsx'\n"
	  "@C:6: max_recipients: 0 is out of bounds (1..10000)\n" },
	{ "unterminated quote", "log_file \"/var/log\n", NULL, NULL,
	  "@C:1: unterminated quoted string\n" },
	{ "bad escape in quotes", "log_file \"a\\n\"\n", NULL, NULL,
	  "@C:1: invalid escape in quoted string (only \\\" and \\\\ are "
	  "allowed)\n" },
	{ "quote inside a word", "log_file ab\"c\"\n", NULL, NULL,
	  "@C:1: unexpected '\"' inside a word (quote the whole value)\n" },
	{ "control character", "spool /a\001b\n", NULL, NULL,
	  "@C:1: control character in line\n" },
	{ "bad CIDR", "relay_networks 10.0.0.0/33 fe80::/129 10.0.0.256 ::1 "
	  "10.0.0.0/ /8\n", NULL, NULL,
	  "@C:1: relay_networks: '10.0.0.0/33' is not a network (use "
	  "10.0.0.0/8, 2001:db8::/32 or a single address)\n"
	  "@C:1: relay_networks: 'fe80::/129' is not a network (use "
	  "10.0.0.0/8, 2001:db8::/32 or a single address)\n"
	  "@C:1: relay_networks: '10.0.0.256' is not a network (use "
	  "10.0.0.0/8, 2001:db8::/32 or a single address)\n"
	  "@C:1: relay_networks: '10.0.0.0/' is not a network (use "
	  "10.0.0.0/8, 2001:db8::/32 or a single address)\n"
	  "@C:1: relay_networks: '/8' is not a network (use "
	  "10.0.0.0/8, 2001:db8::/32 or a single address)\n" },
	{ "relay none mixed with networks",
	  "relay_networks none\nrelay_networks 10.0.0.0/8\n", NULL, NULL,
	  "@C:2: relay_networks: networks cannot be combined with 'none' "
	  "(line 1)\n" },
	{ "bad listen addresses",
	  "listen 1.2.3.4\nlisten ::1:25\nlisten [::1]:0\n"
	  "listen 1.2.3.4:65536\nlisten localhost:25\nlisten [::1]25\n",
	  NULL, NULL,
	  "@C:1: listen: '1.2.3.4' is not an address:port (use 192.0.2.1:25 "
	  "or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:2: listen: '::1:25' is not an address:port (use 192.0.2.1:25 "
	  "or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:3: listen: '[::1]:0' is not an address:port (use 192.0.2.1:25 "
	  "or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:4: listen: '1.2.3.4:65536' is not an address:port (use "
	  "192.0.2.1:25 or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:5: listen: 'localhost:25' is not an address:port (use "
	  "192.0.2.1:25 or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:6: listen: '[::1]25' is not an address:port (use 192.0.2.1:25 "
	  "or [2001:db8::1]:25; ports 1..65535)\n" },
	{ "duplicate listen address",
	  "listen 127.0.0.1:25\nlisten [::1]:25\nlisten 127.0.0.1:25\n", NULL,
	  NULL, "@C:3: listen: 127.0.0.1:25 is already listed at line 1\n" },
	{ "bad maildir escape",
	  "domain a.org {\n mailbox postmaster\n maildir /m/%d/%x\n}\n", NULL,
	  NULL, "@C:3: maildir: unknown escape '%x' (use %d, %u or %%)\n" },
	{ "maildir without %u",
	  "domain a.org {\n mailbox postmaster\n maildir /m/%d\n}\n", NULL,
	  NULL, "@C:3: maildir: the pattern must contain %u (the mailbox "
	  "name)\n" },
	{ "maildir ending in %",
	  "domain a.org {\n mailbox postmaster\n maildir /m/%u%\n}\n", NULL,
	  NULL, "@C:3: maildir: the pattern ends with a lone '%'\n" },
	{ "bad domain name", "domain -a.org {\n}\n", NULL, NULL,
	  "@C:1: domain: '-a.org' is not a valid domain name: has a label "
	  "starting with '-'\n" },
	{ "domain with an empty label", "domain a..org {\n}\n", NULL, NULL,
	  "@C:1: domain: 'a..org' is not a valid domain name: has an empty "
	  "label\n" },
	{ "bad mailbox names",
	  "domain a.org {\n mailbox postmaster a..b .a x/y\n}\n", NULL, NULL,
	  "@C:2: mailbox: invalid name 'a..b': has a leading, trailing or "
	  "double '.'\n"
	  "@C:2: mailbox: invalid name '.a': has a leading, trailing or "
	  "double '.'\n"
	  "@C:2: mailbox: invalid name 'x/y': contains '/' (names are used in "
	  "Maildir paths)\n" },
	{ "mailbox name too long",
	  "domain a.org {\n mailbox postmaster "
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
	  "}\n", NULL, NULL,
	  "@C:2: mailbox: invalid name "
	  "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'"
	  ": longer than 64 characters (RFC 5321 4.5.3.1.1)\n" },
	{ "bad name in users file",
	  "domain a.org {\n mailbox postmaster\n users @D/users\n}\n",
	  "alice\nbad name\n:hash\nb@c:hash\n", NULL,
	  "@D/users:2: invalid user name 'bad name': contains a character not "
	  "allowed in a dot-string (RFC 5321 4.1.2)\n"
	  "@D/users:3: missing user name before ':'\n"
	  "@D/users:4: invalid user name 'b@c': contains '@'\n" },
	{ "alias to an unknown target",
	  DOMAIN_WITH_ALIASES("alice"), NULL,
	  "postmaster: alice\ninfo: alice, nobody\n",
	  "@D/aliases:2: alias 'info': target 'nobody' is not a mailbox or "
	  "alias of domain a.org\n" },
	{ "alias to a domain that is not local",
	  DOMAIN_WITH_ALIASES("alice"), NULL,
	  "postmaster: alice\ninfo: bob@elsewhere.org\n",
	  "@D/aliases:2: alias 'info': target 'bob@elsewhere.org': "
	  "elsewhere.org is not a local domain\n" },
	{ "alias to an unknown user of another local domain",
	  DOMAIN_WITH_ALIASES("alice")
	  "domain b.org {\n mailbox postmaster\n}\n", NULL,
	  "postmaster: alice\ninfo: bob@b.org\n",
	  "@D/aliases:2: alias 'info': target 'bob@b.org' is not a mailbox or "
	  "alias of domain b.org\n" },
	{ "alias loop", DOMAIN_WITH_ALIASES("postmaster"), NULL,
	  "x: y\ny: x\n",
	  "@D/aliases:1: alias 'x': alias loop through 'x@a.org'\n"
	  "@D/aliases:2: alias 'y': alias loop through 'y@a.org'\n" },
	{ "aliases nested too deep", DOMAIN_WITH_ALIASES("postmaster"), NULL,
	  "a1: a2\na2: a3\na3: a4\na4: a5\na5: a6\na6: a7\na7: a8\na8: a9\n"
	  "a9: postmaster\n",
	  "@D/aliases:1: alias 'a1': aliases nested more than 8 deep at "
	  "'a9@a.org'\n" },
	{ "alias reaching too many mailboxes",
	  DOMAIN_WITH_ALIASES("postmaster m1 m2 m3 m4 m5 m6 m7 m8 m9 m10 m11 "
	  "m12 m13 m14 m15 m16 m17 m18 m19 m20 m21 m22 m23 m24 m25 m26 m27 m28 "
	  "m29 m30 m31 m32 m33 m34 m35 m36 m37 m38 m39 m40 m41 m42 m43 m44 m45 "
	  "m46 m47 m48 m49 m50 m51 m52 m53 m54 m55 m56 m57 m58 m59 m60 m61 m62 "
	  "m63 m64"), NULL,
	  "half: m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14,\n"
	  "  m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27,\n"
	  "  m28, m29, m30, m31, m32\n"
	  "all: half, m33, m34, m35, m36, m37, m38, m39, m40, m41, m42, m43,\n"
	  "  m44, m45, m46, m47, m48, m49, m50, m51, m52, m53, m54, m55, m56,\n"
	  "  m57, m58, m59, m60, m61, m62, m63, m64, postmaster\n",
	  "@D/aliases:4: alias 'all': expands to more than 64 mailboxes\n" },
	{ "duplicate alias", DOMAIN_WITH_ALIASES("postmaster"), NULL,
	  "x: postmaster\ny: postmaster\nX: postmaster\n",
	  "@D/aliases:3: duplicate alias 'x' (first defined at line 1)\n" },
	{ "alias named like a mailbox", DOMAIN_WITH_ALIASES("postmaster bob"),
	  NULL, "bob: postmaster\n",
	  "@D/aliases:1: alias 'bob' is also a mailbox of domain a.org\n" },
	{ "aliases file syntax", DOMAIN_WITH_ALIASES("postmaster"), NULL,
	  "just words\n  continued\nx:\n  # comment only\ny: a@b@c\n"
	  "bad name: postmaster\n",
	  "@D/aliases:1: expected 'name: target, ...'\n"
	  "@D/aliases:5: alias 'y': invalid target 'a@b@c': may only contain "
	  "letters, digits, '-' and '.'\n"
	  "@D/aliases:6: invalid alias name 'bad name': contains a character "
	  "not allowed in a dot-string (RFC 5321 4.1.2)\n"
	  "@D/aliases:3: alias 'x' has no targets\n" },
	{ "missing aliases file",
	  "domain a.org {\n mailbox postmaster\n aliases @D/nonexistent\n}\n",
	  NULL, NULL, "@C:3: aliases: cannot read @D/nonexistent: No such "
	  "file or directory\n" },
	{ "multiple errors are all reported",
	  "hostname mail.example.org\n"
	  "max_recipient 5\n"
	  "listen 127.0.0.1:25\n"
	  "listen 127.0.0.1\n"
	  "log_file \"oops\n"
	  "timeout_data 0\n"
	  "domain a.org {\n"
	  "    mailbox postmaster\n"
	  "    aliases @D/aliases\n"
	  "    maildir /m/%q/%u\n"
	  "}\n"
	  "spool /a\n"
	  "spool /b\n"
	  "domain b.org {\n"
	  "    mailbox postmaster\n",
	  NULL, "info: ghost\n",
	  "@C:2: unknown option 'max_recipient' (did you mean "
	  "'max_recipients'?)\n"
	  "@C:4: listen: '127.0.0.1' is not an address:port (use 192.0.2.1:25 "
	  "or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:5: unterminated quoted string\n"
	  "@C:6: timeout_data: 0 is out of bounds (1s..1h)\n"
	  "@C:10: maildir: unknown escape '%q' (use %d, %u or %%)\n"
	  "@C:13: duplicate option 'spool' (first set at line 12)\n"
	  "@C:14: block 'domain b.org' is never closed (missing '}')\n"
	  "@D/aliases:1: alias 'info': target 'ghost' is not a mailbox or "
	  "alias of domain a.org\n" },
	/* route blocks */
	{ "route option at top level", "smarthost relay.test\n", NULL, NULL,
	  "@C:1: option 'smarthost' is only allowed in a route block\n" },
	{ "route without a domain", "route {\n}\n", NULL, NULL,
	  "@C:1: route: expects one domain, `*` or `.domain`, got 0\n" },
	{ "route with a bad domain", "route exa_mple.com {\n}\n", NULL, NULL,
	  "@C:1: route: 'exa_mple.com' is not `*`, a domain or `.domain`: may "
	  "only contain letters, digits, '-' and '.'\n" },
	{ "route brace on the next line", "route *\n{\n}\n", NULL, NULL,
	  "@C:1: 'route' opens a block: route DOMAIN { ... }\n"
	  "@C:2: '{' must follow an option on the same line\n"
	  "@C:3: unexpected '}' (no block is open)\n" },
	{ "route duplicate", "route b.org { }\nroute B.org { }\n", NULL, NULL,
	  "@C:2: route b.org is already defined at line 1\n" },
	{ "route for a local domain",
	  "domain a.org { mailbox postmaster }\nroute a.org { }\n", NULL, NULL,
	  "@C:2: route a.org: a.org is a local domain (its mail is delivered "
	  "to Maildirs; routes are for foreign domains)\n" },
	{ "smarthost: IPv6 without brackets",
	  "route * { smarthost 2001:db8::1:25 }\n", NULL, NULL,
	  "@C:1: smarthost: '2001:db8::1:25': an IPv6 address goes in brackets "
	  "([2001:db8::1]:25)\n" },
	{ "smarthost: bad port", "route * { smarthost [192.0.2.1]:0 }\n",
	  NULL, NULL,
	  "@C:1: smarthost: '[192.0.2.1]:0': the port must be 1..65535\n" },
	{ "smarthost: junk after the bracket",
	  "route * { smarthost [192.0.2.1]x }\n", NULL, NULL,
	  "@C:1: smarthost: '[192.0.2.1]x': only ':PORT' may follow ']'\n" },
	{ "smarthost: bad host", "route * { smarthost relay..test:25 }\n",
	  NULL, NULL,
	  "@C:1: smarthost: 'relay..test:25': 'relay..test' is not an IP "
	  "address or a valid host name: has an empty label\n" },
	{ "auth_user without a smarthost",
	  "route * {\n auth_user u\n auth_password_file @D/users\n}\n",
	  "secret\n", NULL,
	  "@C:1: route *: auth_user needs a smarthost (credentials are only "
	  "sent to a smarthost)\n" },
	{ "auth_user without a password file",
	  "route * {\n smarthost [192.0.2.1]:587\n auth_user u\n}\n", NULL,
	  NULL, "@C:1: route *: auth_user needs auth_password_file\n" },
	{ "password file without auth_user",
	  "route * {\n smarthost [192.0.2.1]:587\n"
	  " auth_password_file @D/users\n}\n", "secret\n", NULL,
	  "@C:1: route *: auth_password_file needs auth_user\n" },
	{ "password file missing",
	  "route * {\n smarthost [192.0.2.1]:587\n auth_user u\n"
	  " auth_password_file @D/nope\n}\n", NULL, NULL,
	  "@C:4: auth_password_file: cannot open @D/nope: No such file or "
	  "directory\n" },
	{ "password file empty",
	  "route * {\n smarthost [192.0.2.1]:587\n auth_user u\n"
	  " auth_password_file @D/users\n}\n", "\nsecond line\n", NULL,
	  "@C:4: auth_password_file: @D/users holds no password (its first "
	  "line is empty)\n" },
	{ "auth_user with a control character",
	  "route * {\n smarthost [192.0.2.1]:587\n auth_user \"a\tb\"\n"
	  "}\n", NULL, NULL,
	  "@C:3: auth_user: 'a\\x09b' contains a control character\n" },
	{ "require_tls keyword", "route * { require_tls maybe }\n", NULL, NULL,
	  "@C:1: require_tls: 'maybe' is not one of no, yes, verify\n" },
	{ "listen block keyword", "listen 127.0.0.1:25 { auth maybe }\n", NULL,
	  NULL, "@C:1: auth: 'maybe' is not one of no, yes, required\n" },
	{ "listen block needs passwd_file",
	  "listen 127.0.0.1:25\nlisten 127.0.0.1:587 {\n auth required\n}\n",
	  NULL, NULL, "@C:2: listen 127.0.0.1:587: auth required needs "
	  "passwd_file (the users who may authenticate)\n" },
	{ "listen block with a bad address still checked",
	  "listen nowhere:25 {\n tls sometimes\n}\n", NULL, NULL,
	  "@C:1: listen: 'nowhere:25' is not an address:port (use "
	  "192.0.2.1:25 or [2001:db8::1]:25; ports 1..65535)\n"
	  "@C:2: tls: 'sometimes' is not one of none, starttls, implicit\n" },
	{ "listen block option at top level", "relay_auth no\n", NULL, NULL,
	  "@C:1: option 'relay_auth' is only allowed in a listen block\n" },
	{ "duplicate option in a listen block",
	  "listen 127.0.0.1:25 {\n tls none\n tls none\n}\n", NULL, NULL,
	  "@C:3: duplicate option 'tls' (first set at line 2)\n" },
	{ "listen block takes one address",
	  "listen 127.0.0.1:25 127.0.0.1:26 { tls none }\n", NULL, NULL,
	  "@C:1: listen: expects one ADDR:PORT before '{', got 2\n" },
	{ "missing passwd_file", "passwd_file @D/no-such-passwd\n", NULL, NULL,
	  "@C:1: passwd_file: cannot read @D/no-such-passwd: No such file or "
	  "directory\n" },
};

static void
test_error_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < nitems(error_cases); i++) {
		const struct error_case *c = &error_cases[i];
		char *err = NULL, *want;
		struct config *cfg;

		print_message("case %s\n", c->name);
		if (c->users != NULL)
			write_file("users", c->users);
		if (c->aliases != NULL)
			write_file("aliases", c->aliases);
		cfg = load_conf(c->conf, &err);
		want = subst(c->want);
		if (err == NULL || strcmp(err, want) != 0)
			print_error("case %s:\nwant:\n%sgot:\n%s", c->name, want,
			    err != NULL ? err : "(no errors)\n");
		assert_null(cfg);
		assert_non_null(err);
		assert_string_equal(err, want);
		free(want);
		free(err);
	}
}

static void
test_missing_users_file_is_a_warning(void **state)
{
	struct config *cfg;
	char *want;

	(void)state;
	cfg = load_ok("domain a.org {\n"
	    "    mailbox postmaster\n"
	    "    users @D/no-such-users\n"
	    "}\n");
	want = subst("@C:3: users file @D/no-such-users does not exist; "
	    "domain a.org has only its inline mailboxes\n");
	assert_string_equal(cfg->warnings, want);
	free(want);
	want = subst("@D/no-such-users");
	assert_string_equal(cfg->domains[0].users_file, want);
	free(want);
	assert_int_equal(cfg->domains[0].nmailboxes, 1);
	config_free(&cfg);
}

static void
test_missing_config_file(void **state)
{
	char *err = NULL, *want, *path;

	(void)state;
	want = subst("@D/nope.conf: cannot read: No such file or directory\n");
	path = subst("@D/nope.conf");
	assert_null(config_load(path, &err));
	free(path);
	assert_non_null(err);
	assert_string_equal(err, want);
	free(err);
	free(want);
	/* errors may be NULL */
	assert_null(config_load("/nonexistent/tern.conf", NULL));
}

static void
test_too_many_listeners(void **state)
{
	char conf[4096] = "", *err = NULL, *want;
	size_t o = 0;

	(void)state;
	for (int i = 0; i < CONFIG_MAX_LISTENERS + 1; i++)
		o += (size_t)snprintf(conf + o, sizeof(conf) - o,
		    "listen 127.0.0.1:%d\n", 2000 + i);
	assert_null(load_conf(conf, &err));
	want = subst("@C:33: listen: more than 32 listeners\n");
	assert_string_equal(err, want);
	free(want);
	free(err);
}

static void
test_too_many_errors(void **state)
{
	char conf[150 * 16] = "", *err = NULL;
	size_t lines = 0, o = 0;

	(void)state;
	for (int i = 0; i < 150; i++)
		o += (size_t)snprintf(conf + o, sizeof(conf) - o,
		    "bogus%d yes\n", i);
	assert_null(load_conf(conf, &err));
	for (const char *s = err; *s != '\0'; s++)
		lines += *s == '\n';
	assert_int_equal(lines, 101);
	assert_non_null(strstr(err, "too many errors, only the first 100 are "
	    "shown\n"));
	free(err);
}

/*
 * Relay networks
 */

static void
make_sockaddr(const char *ip, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	}
}

/*
 * Routes: parsing and the matching order (route.h)
 */

static void
test_routes_parse(void **state)
{
	struct config *cfg;
	const struct config_route *rt;
	char pw[512];

	(void)state;
	/* write_file()'s result is overwritten by the next call: copy it */
	util_strlcpy(pw, write_file("secret", "p\xc3\xa4ss word\r\nignored\n"),
	    sizeof(pw));
	assert_int_equal(chmod(pw, 0600), 0);
	cfg = load_ok("route * {\n"
	    "    smarthost [smtp.Provider.test]:587\n"
	    "    auth_user \"user@example.org\"\n"
	    "    auth_password_file @D/secret\n"
	    "}\n"
	    "route .Sub.test { smarthost relay.test }\n"
	    "route v6.test { smarthost [IPv6:2001:db8::25] }\n"
	    "route v4.test { smarthost 192.0.2.25:2525 }\n"
	    "route mx.test {\n    require_tls yes\n}\n");
	assert_null(cfg->warnings);
	assert_int_equal(cfg->nroutes, 5);
	rt = &cfg->routes[0];
	assert_string_equal(rt->domain, "*");
	assert_string_equal(rt->smarthost, "[smtp.Provider.test]:587");
	assert_string_equal(rt->smarthost_host, "smtp.provider.test");
	assert_int_equal(rt->smarthost_port, 587);
	assert_false(rt->smarthost_mx);
	assert_false(rt->smarthost_ip);
	assert_string_equal(rt->auth_user, "user@example.org");
	assert_string_equal(rt->auth_password, "p\xc3\xa4ss word");
	assert_int_equal(rt->require_tls, 0);
	rt = &cfg->routes[1];
	assert_string_equal(rt->domain, ".sub.test");
	assert_true(rt->smarthost_mx);
	assert_int_equal(rt->smarthost_port, 25);
	assert_null(rt->auth_user);
	rt = &cfg->routes[2];
	assert_string_equal(rt->smarthost_host, "2001:db8::25");
	assert_true(rt->smarthost_ip);
	assert_false(rt->smarthost_mx);
	rt = &cfg->routes[3];
	assert_true(rt->smarthost_ip);
	assert_false(rt->smarthost_mx);
	assert_int_equal(rt->smarthost_port, 2525);
	rt = &cfg->routes[4];
	assert_null(rt->smarthost);
	assert_int_equal(rt->require_tls, 1);
	config_free(&cfg);

	/* a password file others may read: loaded, with a warning */
	assert_int_equal(chmod(pw, 0644), 0);
	cfg = load_ok("route * {\n smarthost [192.0.2.1]:587\n auth_user u\n"
	    " auth_password_file @D/secret\n}\n");
	assert_non_null(cfg->warnings);
	assert_non_null(strstr(cfg->warnings, "may be read by group or others "
	    "(mode 0644)"));
	assert_null(strstr(cfg->warnings, "ss word"));   /* never the password */
	config_free(&cfg);
}

static void
test_route_lookup(void **state)
{
	static const struct {
		const char *name;
		const char *domain;
		const char *want;      /* route block, or NULL: none */
	} cases[] = {
		{ "exact", "exact.test", "exact.test" },
		{ "exact, other case and final dot", "EXACT.test.", "exact.test" },
		{ "exact beats suffix", "b.example.test", "b.example.test" },
		{ "subdomain", "a.example.test", ".example.test" },
		{ "deep subdomain", "x.y.a.example.test", ".example.test" },
		{ "longest suffix", "x.deep.example.test", ".deep.example.test" },
		{ "suffix is not the domain itself", "example.test", "*" },
		{ "suffix needs a dot boundary", "badexample.test", "*" },
		{ "a subdomain of an exact block is not it", "a.exact.test", "*" },
		{ "default", "other.test", "*" },
		{ "address literal only matches *", "[192.0.2.1]", "*" },
	};
	struct config *cfg;

	(void)state;
	cfg = load_ok("route exact.test { }\n"
	    "route * { smarthost [192.0.2.1] }\n"
	    "route .example.test { }\n"
	    "route .deep.example.test { }\n"
	    "route b.example.test { }\n");
	for (size_t i = 0; i < nitems(cases); i++) {
		const struct config_route *rt = route_lookup(cfg,
		    cases[i].domain);
		const char *got = rt != NULL ? rt->domain : NULL;

		if (got == NULL || strcmp(got, cases[i].want) != 0)
			fail_msg("case %s: want %s, got %s", cases[i].name,
			    cases[i].want, got ? got : "(none)");
	}
	config_free(&cfg);
	/* without "*", a domain without a block: none (MX lookup) */
	cfg = load_ok("route .example.test { }\n");
	assert_null(route_lookup(cfg, "other.test"));
	assert_null(route_lookup(cfg, "[192.0.2.1]"));
	assert_non_null(route_lookup(cfg, "a.example.test"));
	config_free(&cfg);
}

static void
test_relay_networks(void **state)
{
	static const struct {
		const char *name;
		const char *client;
		bool want;
	} cases[] = {
		{ "v4 inside /8", "10.1.2.3", true },
		{ "v4 outside /8", "11.0.0.1", false },
		{ "host bits masked", "192.168.1.200", true },
		{ "next /24", "192.168.2.1", false },
		{ "/12 low end", "172.16.0.0", true },
		{ "/12 high end", "172.31.255.255", true },
		{ "just past /12", "172.32.0.0", false },
		{ "single v4 address", "198.51.100.7", true },
		{ "next to single v4 address", "198.51.100.8", false },
		{ "v4-mapped v6 inside", "::ffff:10.9.9.9", true },
		{ "v4-mapped v6 outside", "::ffff:11.0.0.1", false },
		{ "v6 inside /32", "2001:db8:ffff::1", true },
		{ "v6 outside /32", "2001:db9::1", false },
		{ "v6 inside /33", "2001:db9:7fff::1", false },
		{ "single v6 address", "::1", true },
		{ "next to single v6 address", "::2", false },
		{ "v4 compat is not mapped", "::10.1.2.3", false },
	};
	struct config *cfg;
	struct sockaddr_storage ss;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	(void)state;
	cfg = load_ok("relay_networks 10.0.0.0/8 192.168.1.77/24\n"
	    "relay_networks 172.16.0.0/12 198.51.100.7 2001:db8::/32 ::1\n");
	assert_int_equal(cfg->nrelay_networks, 6);
	for (size_t i = 0; i < nitems(cases); i++) {
		print_message("case %s\n", cases[i].name);
		make_sockaddr(cases[i].client, &ss);
		assert_int_equal(config_is_relay_client(cfg,
		    (struct sockaddr *)&ss), cases[i].want);
	}
	assert_false(config_is_relay_client(cfg, (struct sockaddr *)&sun));
	assert_false(config_is_relay_client(cfg, NULL));
	config_free(&cfg);

	/* relay_networks none: nobody, not even loopback. */
	cfg = load_ok("relay_networks none\n");
	make_sockaddr("127.0.0.1", &ss);
	assert_false(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	config_free(&cfg);

	/* /0 matches its whole family only. */
	cfg = load_ok("relay_networks 0.0.0.0/0\n");
	make_sockaddr("203.0.113.9", &ss);
	assert_true(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	make_sockaddr("::ffff:203.0.113.9", &ss);
	assert_true(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	make_sockaddr("2001:db8::1", &ss);
	assert_false(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	config_free(&cfg);

	/* The default configuration: loopback IPv4 only. */
	cfg = config_load(NULL, NULL);
	assert_non_null(cfg);
	make_sockaddr("127.0.0.1", &ss);
	assert_true(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	make_sockaddr("::ffff:127.1.2.3", &ss);
	assert_true(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	make_sockaddr("192.0.2.1", &ss);
	assert_false(config_is_relay_client(cfg, (struct sockaddr *)&ss));
	config_free(&cfg);
}

/*
 * Local lookups and alias expansion
 */

static const char lookup_conf[] =
    "domain a.org {\n"
    "    mailbox postmaster alice Bob\n"
    "    users @D/users\n"
    "    aliases @D/aliases\n"
    "}\n"
    "domain B.org {\n"
    "    mailbox postmaster carol dave\n"
    "}\n";

static const char lookup_aliases[] =
    "# team reaches alice, bob and carol, each once\n"
    "team: alice, bob, team2\n"
    "team2: BOB, carol@b.org, Alice, erin\n"
    "cross: dave@B.ORG\n"
    "diamond: left, right\n"
    "left: bottom\n"
    "right: bottom\n"
    "bottom: alice\n"
    "self: alice@a.org\n";

static void
test_local_lookup(void **state)
{
	static const struct {
		const char *name;
		const char *local;
		size_t len;              /* 0: strlen */
		enum local_lookup_result want;
	} cases[] = {
		{ "inline mailbox", "alice", 0, LOCAL_LOOKUP_MAILBOX },
		{ "case-insensitive", "ALICE", 0, LOCAL_LOOKUP_MAILBOX },
		{ "inline lower-cased", "bob", 0, LOCAL_LOOKUP_MAILBOX },
		{ "postmaster any case", "PostMaster", 0, LOCAL_LOOKUP_MAILBOX },
		{ "users file", "erin", 0, LOCAL_LOOKUP_MAILBOX },
		{ "users file with hash", "frank", 0, LOCAL_LOOKUP_MAILBOX },
		{ "duplicate in users file", "alice", 0, LOCAL_LOOKUP_MAILBOX },
		{ "alias", "team", 0, LOCAL_LOOKUP_ALIAS },
		{ "alias any case", "Diamond", 0, LOCAL_LOOKUP_ALIAS },
		{ "unknown", "nobody", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "mailbox of the other domain", "carol", 0,
		  LOCAL_LOOKUP_UNKNOWN },
		{ "prefix of a mailbox", "alic", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "mailbox plus more", "alicea", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "not NUL-terminated", "alicex", 5, LOCAL_LOOKUP_MAILBOX },
		{ "empty", "", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "embedded NUL", "alice\0x", 7, LOCAL_LOOKUP_UNKNOWN },
		{ "longer than 64", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "hash column is not a name", "$6$x", 0, LOCAL_LOOKUP_UNKNOWN },
		{ "comment is not a name", "comment", 0, LOCAL_LOOKUP_UNKNOWN },
	};
	const struct config_domain *d;
	struct config *cfg;

	(void)state;
	write_file("users", "# users\nerin\nfrank:$6$x\nalice\n  grace  # c\n");
	write_file("aliases", lookup_aliases);
	cfg = load_ok(lookup_conf);
	d = config_find_domain(cfg, "A.ORG", 5);
	assert_non_null(d);
	assert_int_equal(d->nmailboxes, 6);   /* alice once */
	assert_null(config_find_domain(cfg, "c.org", 5));
	assert_null(config_find_domain(cfg, "a.or", 4));
	for (size_t i = 0; i < nitems(cases); i++) {
		size_t len = cases[i].len ? cases[i].len :
		    strlen(cases[i].local);

		print_message("case %s\n", cases[i].name);
		assert_int_equal(local_lookup(d, cases[i].local, len),
		    cases[i].want);
	}
	assert_int_equal(local_lookup(NULL, "alice", 5), LOCAL_LOOKUP_UNKNOWN);
	assert_mailbox(d, "grace");
	config_free(&cfg);
}

static void
test_local_expand(void **state)
{
	static const struct {
		const char *name;
		const char *local;
		int want;
		const char *mailboxes;   /* "box@domain ..." in order */
	} cases[] = {
		{ "mailbox is itself", "Alice", 1, "alice@a.org" },
		{ "nested with duplicates", "team", 4,
		  "alice@a.org bob@a.org carol@b.org erin@a.org" },
		{ "other local domain", "cross", 1, "dave@b.org" },
		{ "diamond reaches bottom once", "diamond", 1, "alice@a.org" },
		{ "explicit own domain", "self", 1, "alice@a.org" },
		{ "unknown", "nobody", -1, "" },
	};
	struct local_target out[LOCAL_EXPAND_MAX];
	const struct config_domain *d;
	struct config *cfg;

	(void)state;
	write_file("users", "erin\n");
	write_file("aliases", lookup_aliases);
	cfg = load_ok(lookup_conf);
	d = &cfg->domains[0];
	for (size_t i = 0; i < nitems(cases); i++) {
		char got[512] = "";
		size_t o = 0;
		int n;

		print_message("case %s\n", cases[i].name);
		n = local_expand(&cfg->domain_index, d, cases[i].local,
		    strlen(cases[i].local), out);
		assert_int_equal(n, cases[i].want);
		for (int j = 0; j < n; j++)
			o += (size_t)snprintf(got + o, sizeof(got) - o,
			    "%s%s@%s", j ? " " : "", out[j].mailbox,
			    out[j].domain->name);
		assert_string_equal(got, cases[i].mailboxes);
	}
	config_free(&cfg);
}

/* Build a domain by hand: the loader refuses loops, but local_expand must
 * still be safe if handed one. */
static void
test_local_expand_runtime_limits(void **state)
{
	struct config_alias aliases[3];
	char *loop1[] = { "y" }, *loop2[] = { "x" }, *many[70];
	char *boxes[70];
	char names[70][16];
	struct config_domain d = { 0 };
	struct config cfg = { 0 };
	struct local_target out[LOCAL_EXPAND_MAX];
	char why[256];

	(void)state;
	for (int i = 0; i < 70; i++) {
		snprintf(names[i], sizeof(names[i]), "m%02d", i);
		boxes[i] = names[i];
		many[i] = names[i];
	}
	aliases[0] = (struct config_alias){ "x", loop1, 1 };
	aliases[1] = (struct config_alias){ "y", loop2, 1 };
	aliases[2] = (struct config_alias){ "big", many, 70 };
	d.name = "a.org";
	d.mailboxes = boxes;
	d.nmailboxes = 70;
	d.aliases = aliases;
	d.naliases = 3;
	const struct config_domain *index[1] = { &d };
	cfg.domains = &d;
	cfg.ndomains = 1;
	cfg.domain_index.sorted = index;
	cfg.domain_index.n = 1;
	local_lookup_prepare(&d);
	assert_int_equal(d.nmailboxes, 70);

	assert_int_equal(local_expand_explain(&cfg.domain_index, &d, "x", 1, out, why,
	    sizeof(why)), -1);
	assert_string_equal(why, "alias loop through 'x@a.org'");
	assert_int_equal(local_expand_explain(&cfg.domain_index, &d, "big", 3, out, why,
	    sizeof(why)), -1);
	assert_string_equal(why, "expands to more than 64 mailboxes");
	assert_int_equal(local_expand(&cfg.domain_index, &d, "m05", 3, out), 1);
	assert_ptr_equal(out[0].mailbox, names[5]);
	assert_int_equal(local_expand(&cfg.domain_index, NULL, "m05", 3, out), -1);
}

static void
test_many_users(void **state)
{
	enum { N = 100000 };
	size_t cap = (size_t)N * 16 + 64, o = 0;
	char *users = xmalloc(cap), name[32];
	const struct config_domain *d;
	struct config *cfg;

	(void)state;
	/* Written in reverse order, so the load really has to sort. */
	for (int i = N - 1; i >= 0; i--)
		o += (size_t)snprintf(users + o, cap - o, "User%06d\n", i);
	write_file("users", users);
	free(users);
	cfg = load_ok("domain a.org {\n mailbox postmaster user000007\n"
	    " users @D/users\n}\n");
	d = &cfg->domains[0];
	assert_int_equal(d->nmailboxes, N + 1);
	for (int i = 0; i < N; i++) {
		int len = snprintf(name, sizeof(name), "user%06d", i);

		assert_int_equal(local_lookup(d, name, (size_t)len),
		    LOCAL_LOOKUP_MAILBOX);
	}
	assert_int_equal(local_lookup(d, "user100000", 10),
	    LOCAL_LOOKUP_UNKNOWN);
	assert_int_equal(local_lookup(d, "user", 4), LOCAL_LOOKUP_UNKNOWN);
	config_free(&cfg);
}

/*
 * Maildir paths
 */

static void
test_maildir_path(void **state)
{
	static const struct {
		const char *name;
		const char *pattern;
		const char *user;
		size_t bufsize;
		int want;
		const char *path;
	} cases[] = {
		{ "domain and user", "/m/%d/%u", "alice", 256, 0,
		  "/m/a.org/alice" },
		{ "percent escape", "/m/%%/%u/Maildir", "alice", 256, 0,
		  "/m/%/alice/Maildir" },
		{ "user twice", "/m/%u/%u", "bob", 256, 0, "/m/bob/bob" },
		{ "exact fit", "/m/%u", "bob", 7, 0, "/m/bob" },
		{ "one byte short", "/m/%u", "bob", 6, -1, NULL },
		{ "no room at all", "/m/%u", "bob", 0, -1, NULL },
		{ "empty user", "/m/%u", "", 256, -1, NULL },
		{ "slash in user", "/m/%u", "a/b", 256, -1, NULL },
		{ "dot-dot user", "/m/%u", "..", 256, -1, NULL },
		{ "hidden user", "/m/%u", ".x", 256, -1, NULL },
		{ "bad escape", "/m/%x/%u", "bob", 256, -1, NULL },
	};
	struct config_domain d = { .name = "a.org" };
	char buf[256];

	(void)state;
	for (size_t i = 0; i < nitems(cases); i++) {
		print_message("case %s\n", cases[i].name);
		d.maildir = (char *)cases[i].pattern;
		memset(buf, 'X', sizeof(buf));
		assert_int_equal(config_maildir_path(&d, cases[i].user, buf,
		    cases[i].bufsize), cases[i].want);
		if (cases[i].path != NULL)
			assert_string_equal(buf, cases[i].path);
	}
	d.maildir = NULL;
	assert_int_equal(config_maildir_path(&d, "bob", buf, sizeof(buf)), -1);
}

static void
test_maildir_path_from_config(void **state)
{
	struct config *cfg;
	char buf[512], *want;

	(void)state;
	cfg = load_ok("domain a.org {\n mailbox postmaster\n"
	    " maildir mail/./%d/../%d/%u\n}\n");
	assert_int_equal(config_maildir_path(&cfg->domains[0], "postmaster",
	    buf, sizeof(buf)), 0);
	want = cwd_path("mail/a.org/postmaster");
	assert_string_equal(buf, want);
	free(want);
	config_free(&cfg);
}

static void
test_find_domain(void **state)
{
	static const struct {
		const char *name, *key, *want;
	} cases[] = {
		{ "exact", "b.org", "b.org" },
		{ "case folded", "A.ORG", "a.org" },
		{ "mixed", "C.Net", "c.net" },
		{ "unknown", "d.org", NULL },
		{ "prefix of a name", "a.or", NULL },
		{ "name is a prefix", "a.orgx", NULL },
		{ "empty", "", NULL },
	};
	struct config *cfg;

	(void)state;
	cfg = load_ok("domain b.org {\n mailbox postmaster\n}\n"
	    "domain a.org {\n mailbox postmaster\n}\n"
	    "domain c.net {\n mailbox postmaster\n}\n");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct config_domain *d = config_find_domain(cfg,
		    cases[i].key, strlen(cases[i].key));
		const char *got = d ? d->name : NULL;
		if ((got == NULL) != (cases[i].want == NULL) ||
		    (got != NULL && strcmp(got, cases[i].want) != 0))
			fail_msg("%s: want %s got %s", cases[i].name,
			    cases[i].want ? cases[i].want : "none", got ? got : "none");
	}
	/* the first domain keeps its place (postmaster without a domain) */
	assert_string_equal(cfg->domains[0].name, "b.org");
	config_free(&cfg);
}

/*
 * The generated reference
 */

static void
test_doc_mentions_every_option(void **state)
{
	char *doc = NULL, heading[128];
	size_t len = 0, n = 0, headings = 0;
	FILE *f;

	(void)state;
	f = open_memstream(&doc, &len);
	assert_non_null(f);
	config_write_doc(f);
	assert_int_equal(fclose(f), 0);
	for (const char *name; (name = config_option_name(n)) != NULL; n++) {
		snprintf(heading, sizeof(heading), "\n### %s\n", name);
		if (strstr(doc, heading) == NULL) {
			print_error("option %s is not documented\n", name);
			fail();
		}
		snprintf(heading, sizeof(heading), "[`%s`](#%s)", name, name);
		assert_non_null(strstr(doc, heading));
	}
	/* ... and nothing else has a heading of its own: one per option. No
	 * fixed count, which every new option would have to bump. */
	for (const char *s = doc; (s = strstr(s, "\n### ")) != NULL; s++)
		headings++;
	assert_int_equal(headings, n);
	assert_true(n > 50);
	assert_non_null(strstr(doc, "## Users file"));
	assert_non_null(strstr(doc, "## Aliases file"));
	assert_non_null(strstr(doc, config_default_text()));
	free(doc);
}

/*
 * Listener blocks and passwd_file
 */

static void
test_listeners_and_passwd(void **state)
{
	struct config *cfg;
	const struct config_listener *l, *def = config_default_listener();
	const struct config_passwd *u;
	char *err = NULL;
	const char *pw;

	(void)state;
	/* the documented defaults are what a listener gets */
	assert_int_equal(def->tls, CONFIG_LISTENER_TLS_STARTTLS);
	assert_int_equal(def->auth, CONFIG_LISTENER_AUTH_NO);
	assert_int_equal(def->auth_plaintext, 0);
	assert_int_equal(def->receive, 1);
	assert_int_equal(def->relay_networks, 1);
	assert_int_equal(def->relay_auth, 1);

	pw = write_file("passwd",
	    "# users\n"
	    "alice@a.org:$6$saltsalt$abc\n"
	    "bob:$6$saltsalt$abc: bob@a.org , @B.ORG \n"
	    "\n"
	    "carol:!$6$saltsalt$abc:carol@a.org\n");
	chmod(pw, 0600);
	cfg = load_ok("listen 127.0.0.1:25\n"
	    "listen 127.0.0.1:587 {\n"
	    "    tls none\n"
	    "    auth required\n"
	    "    auth_plaintext yes\n"
	    "    receive no\n"
	    "    relay_networks no\n"
	    "    relay_auth no\n"
	    "}\n"
	    "listen [::1]:465 { tls implicit }\n"
	    "passwd_file @D/passwd\n"
	    "auth_max_failures 3\nauth_throttle_time 1m\nauth_failure_delay 0\n"
	    "auth_check_from no\n");
	assert_int_equal(cfg->nlisteners, 3);
	l = &cfg->listeners[0];
	assert_memory_equal(&l->tls, &def->tls, sizeof(*l) - offsetof(struct
	    config_listener, tls));
	l = &cfg->listeners[1];
	assert_string_equal(l->text, "127.0.0.1:587");
	assert_int_equal(l->tls, CONFIG_LISTENER_TLS_NONE);
	assert_int_equal(l->auth, CONFIG_LISTENER_AUTH_REQUIRED);
	assert_int_equal(l->auth_plaintext, 1);
	assert_int_equal(l->receive, 0);
	assert_int_equal(l->relay_networks, 0);
	assert_int_equal(l->relay_auth, 0);
	l = &cfg->listeners[2];
	assert_int_equal(l->tls, CONFIG_LISTENER_TLS_IMPLICIT);
	assert_int_equal(l->auth, CONFIG_LISTENER_AUTH_NO);
	assert_int_equal(cfg->auth_max_failures, 3);
	assert_int_equal(cfg->auth_throttle_time, 60);
	assert_int_equal(cfg->auth_failure_delay, 0);
	assert_int_equal(cfg->auth_check_from, 0);

	assert_int_equal(cfg->npasswd, 3);
	u = config_find_passwd(cfg, "alice@a.org", 11);
	assert_non_null(u);
	/* default: the name itself, being an address */
	assert_int_equal(u->naddresses, 1);
	assert_string_equal(u->addresses[0], "alice@a.org");
	assert_true(config_passwd_owns(u, "ALICE@A.ORG", 11));
	assert_false(config_passwd_owns(u, "alice@a.org.", 12));
	assert_null(config_find_passwd(cfg, "Alice@a.org", 11));
	assert_null(config_find_passwd(cfg, "alice@a.or", 10));
	u = config_find_passwd(cfg, "bob", 3);
	assert_non_null(u);
	assert_int_equal(u->naddresses, 2);
	assert_true(config_passwd_owns(u, "bob@a.org", 9));
	assert_true(config_passwd_owns(u, "anyone@b.org", 12));
	assert_true(config_passwd_owns(u, "\"x@y\"@b.org", 11));
	assert_false(config_passwd_owns(u, "anyone@sub.b.org", 16));
	assert_false(config_passwd_owns(u, "bob@a.org@evil.test", 19));
	assert_false(config_passwd_owns(u, "bob", 3));
	u = config_find_passwd(cfg, "carol", 5);
	assert_non_null(u);
	assert_int_equal(u->hash[0], '!');
	config_free(&cfg);

	/* the defaults: no AUTH, From: checked */
	cfg = load_ok("");
	assert_null(cfg->passwd_file);
	assert_int_equal(cfg->npasswd, 0);
	assert_int_equal(cfg->auth_max_failures, 5);
	assert_int_equal(cfg->auth_throttle_time, 600);
	assert_int_equal(cfg->auth_failure_delay, 1);
	assert_int_equal(cfg->auth_check_from, 1);
	config_free(&cfg);

	/* errors in the passwd file, each with its line; a world-readable
	 * file is a warning */
	pw = write_file("passwd",
	    "nocolon\n"
	    "a b:$6$saltsalt$abc\n"
	    "dup:$6$saltsalt$abc\n"
	    "dup:$6$saltsalt$abc\n"
	    "nohash:\n"
	    "badhash:$9$nonsense\n"
	    "badaddr:$6$saltsalt$abc:not-an-address,x@-bad-.org\n");
	chmod(pw, 0644);
	cfg = load_conf("passwd_file @D/passwd\n", &err);
	assert_null(cfg);
	char *want = subst(
	    "@D/passwd:1: expected 'user:hash[:addresses]'\n"
	    "@D/passwd:2: user 'a b': blank or control character in the name\n"
	    "@D/passwd:5: user 'nohash': no password hash (set one with tern passwd)\n"
	    "@D/passwd:6: user 'badhash': not a crypt(3) hash this system supports (use $y$ yescrypt or $6$ SHA-512)\n"
	    "@D/passwd:7: user 'badaddr': address 'not-an-address': not an address (local@domain) or @domain\n"
	    "@D/passwd:7: user 'badaddr': address 'x@-bad-.org': has a label starting with '-'\n"
	    "@D/passwd: user 'dup' is listed twice\n");
	assert_string_equal(err, want);
	free(want);
	free(err);
}

/*
 * config_load_buffer(): text in memory, files optional
 */

static void
test_load_buffer(void **state)
{
	static const char text[] = "max_recipients 55";
	static const char files[] =
	    "domain a.org {\n mailbox postmaster\n users /nonexistent/u\n"
	    " aliases /nonexistent/a\n}\npasswd_file /nonexistent/p\n"
	    "route * {\n smarthost [192.0.2.1]\n auth_user u\n"
	    " auth_password_file /nonexistent/s\n}\n";
	char *err = (char *)"untouched";
	struct config *cfg;

	(void)state;
	/* len bounds the text: no terminator needed */
	cfg = config_load_buffer("mem", text, sizeof(text) - 2, 0, &err);
	assert_non_null(cfg);
	assert_null(err);
	assert_string_equal(cfg->source, "mem");
	assert_int_equal(cfg->max_recipients, 5);
	config_free(&cfg);

	cfg = config_load_buffer("mem", "max_recipients 0\n", 17, 0, &err);
	assert_null(cfg);
	assert_string_equal(err, "mem:1: max_recipients: 0 is out of "
	    "bounds (1..10000)\n");
	free(err);

	/* a NUL byte is an error, as in a file */
	cfg = config_load_buffer("mem", "spool /x\0y\n", 11, 0, &err);
	assert_null(cfg);
	assert_string_equal(err, "mem:1: NUL byte in line\n");
	free(err);

	/* CONFIG_LOAD_NO_FILES: the paths are kept, the files never read */
	cfg = config_load_buffer("mem", files, strlen(files),
	    CONFIG_LOAD_NO_FILES, &err);
	assert_non_null(cfg);
	assert_null(err);
	assert_null(cfg->warnings);
	assert_string_equal(cfg->domains[0].users_file, "/nonexistent/u");
	assert_string_equal(cfg->passwd_file, "/nonexistent/p");
	assert_int_equal(cfg->npasswd, 0);
	assert_null(cfg->routes[0].auth_password);
	config_free(&cfg);
	/* without it they are read */
	cfg = config_load_buffer("mem", files, strlen(files), 0, &err);
	assert_null(cfg);
	assert_non_null(strstr(err, "aliases: cannot read /nonexistent/a"));
	free(err);
}

/*
 * tern passwd: the rewrite agrees with the loader (found by fuzz_conf_files)
 */

static void
test_passwd_rewrite(void **state)
{
	static const struct {
		const char *name, *old, *want;
	} cases[] = {
		/* The loader trims blanks, so " alice:" is alice's line: a
		 * second one would make it refuse the file (listed twice). */
		{ "indented line", "bob:x\n  alice:old:a@x.test\n",
		  "bob:x\nalice:H:a@x.test\n" },
		{ "tab before the name", "\talice:old\r\n", "alice:H\n" },
		{ "indented comment is not a user", " #alice:old\n",
		  " #alice:old\nalice:H\n" },
	};
	static const char nul[] = "alice:!\n\0bob:!\n";
	const char *path;
	char *argv[] = { "tern", "passwd", "alice", NULL, NULL };
	char buf[64];
	FILE *f;

	(void)state;
	for (size_t i = 0; i < nitems(cases); i++) {
		char *got = passwd_update_text(cases[i].old,
		    strlen(cases[i].old), "alice", "H");

		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: want %s got %s", cases[i].name,
			    cases[i].want, got);
		free(got);
	}
	/* "#..." would be a comment line to the loader: such a user could
	 * never authenticate. */
	assert_false(passwd_user_valid("#alice"));
	assert_false(passwd_user_valid("a:b"));
	assert_false(passwd_user_valid(""));
	assert_true(passwd_user_valid("al#ice@example.org"));
	argv[2] = "#alice";
	argv[3] = (char *)write_file("passwd-hash", "");
	assert_int_equal(passwd_main(4, argv), 64);
	argv[2] = "alice";

	/* A NUL byte would cut the text, and with it every later line. */
	assert_null(passwd_update_text(nul, sizeof(nul) - 1, "alice", "H"));
	path = write_file("passwd-nul", "");
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(nul, 1, sizeof(nul) - 1, f), sizeof(nul) - 1);
	assert_int_equal(fclose(f), 0);
	argv[3] = (char *)path;
	/* Refused before any password is asked for; the file is untouched. */
	assert_int_equal(passwd_main(4, argv), 1);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, sizeof(buf), f), sizeof(nul) - 1);
	assert_int_equal(fclose(f), 0);
	assert_memory_equal(buf, nul, sizeof(nul) - 1);
}

/* A user name with '@' that is not a valid address is just a name (tern
 * passwd writes such users): no default sender address, a warning, not
 * an error that would stop tern from starting (found by fuzz_conf_files). */
static void
test_passwd_name_not_an_address(void **state)
{
	const struct config_passwd *u;
	struct config *cfg;

	(void)state;
	write_file("passwd-names", "x@exampl%.org:!\nbob@-bad-.org:!\n"
	    "carol@c.org:!\n");
	cfg = load_ok("passwd_file @D/passwd-names\n");
	u = config_find_passwd(cfg, "x@exampl%.org", 13);
	assert_non_null(u);
	assert_int_equal(u->naddresses, 0);
	u = config_find_passwd(cfg, "bob@-bad-.org", 13);
	assert_non_null(u);
	assert_int_equal(u->naddresses, 0);
	u = config_find_passwd(cfg, "carol@c.org", 11);
	assert_non_null(u);
	assert_int_equal(u->naddresses, 1);
	assert_non_null(strstr(cfg->warnings, "passwd-names:1: user "
	    "'x@exampl%.org' has no sender address"));
	assert_non_null(strstr(cfg->warnings, "passwd-names:2: user "
	    "'bob@-bad-.org' has no sender address"));
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_loads),
		cmocka_unit_test(test_find_domain),
		cmocka_unit_test(test_default_text),
		cmocka_unit_test(test_empty_file_gets_table_defaults),
		cmocka_unit_test(test_example_loads),
		cmocka_unit_test(test_values_and_syntax),
		cmocka_unit_test(test_computed_defaults),
		cmocka_unit_test(test_error_cases),
		cmocka_unit_test(test_missing_users_file_is_a_warning),
		cmocka_unit_test(test_missing_config_file),
		cmocka_unit_test(test_too_many_listeners),
		cmocka_unit_test(test_too_many_errors),
		cmocka_unit_test(test_routes_parse),
		cmocka_unit_test(test_route_lookup),
		cmocka_unit_test(test_relay_networks),
		cmocka_unit_test(test_local_lookup),
		cmocka_unit_test(test_local_expand),
		cmocka_unit_test(test_local_expand_runtime_limits),
		cmocka_unit_test(test_many_users),
		cmocka_unit_test(test_maildir_path),
		cmocka_unit_test(test_maildir_path_from_config),
		cmocka_unit_test(test_doc_mentions_every_option),
		cmocka_unit_test(test_listeners_and_passwd),
		cmocka_unit_test(test_load_buffer),
		cmocka_unit_test(test_passwd_rewrite),
		cmocka_unit_test(test_passwd_name_not_an_address),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
