/*
 * fuzz_conf_files.c - libFuzzer target for the files a configuration
 * names: the users, aliases and passwd files as the loader reads them
 * (src/conf/config_files.c, with the alias checks of config_apply.c and
 * local_lookup.c), and the passwd line rewrite of `tern passwd`
 * (passwd_update_text(), src/conf/passwd.c).
 *
 *   make build/fuzz/fuzz_conf_files
 *   ./build/fuzz/fuzz_conf_files -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz_conf_files
 *
 * The first input byte selects what the rest is (its value modulo 5):
 *   0  a users file          of domain example.org
 *   1  an aliases file       of example.org (mailboxes postmaster, alice,
 *                            bob; example.net has postmaster and carol)
 *   2  a passwd_file
 *   3  all three, separated by NUL bytes: users, aliases, passwd
 *   4  passwd_update_text(): the user name on the first line, then the
 *      old file
 * The loader reads the files from memory (a config_file_source), never
 * from the disk. Checks, besides ASan/UBSan:
 * - a load gives a configuration or errors, never both, never neither;
 *   reports have no control characters;
 * - in a loaded configuration every mailbox and alias is found, every
 *   alias expands to at least one mailbox, every passwd user is found by
 *   its name and owns each of its addresses;
 * - the rewrite refuses a file with a NUL byte (it would be cut there);
 *   otherwise it keeps every other line, ends each line with a newline,
 *   writes the user's new line, and stays within its buffer; and when
 *   the loader accepts the old file, it accepts the new one with the
 *   new hash for the user, its addresses kept, every other user as was.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "conf/local_lookup.h"
#include "conf/passwd.h"
#include "lib/log.h"
#include "lib/util.h"

#include "fuzz.h"

/* A yescrypt hash (of "fuzz"): what `tern passwd` writes. */
#define HASH "$y$j9T$v/SXSwbptZzX5efUTYnDv.$" \
	"sex5m.FFeFvxPhBu6YqBoDlMXWMHq1FZ//KCWqmPkR4"


struct fuzz_files {
	const char *text[3];   /* users, aliases, passwd; NULL: absent */
	size_t len[3];
};

static const char *const paths[3] = { "/fuzz/users", "/fuzz/aliases",
	"/fuzz/passwd" };

/* config_read_file()'s contract, from memory. */
static int
fuzz_read(void *arg, const char *path, size_t max, char **out, size_t *len)
{
	const struct fuzz_files *f = arg;

	for (size_t i = 0; i < 3; i++) {
		if (strcmp(path, paths[i]) != 0)
			continue;
		if (f->text[i] == NULL)
			break;
		if (f->len[i] > max) {
			errno = EFBIG;
			return -1;
		}
		*out = xmalloc(f->len[i] + 1);
		memcpy(*out, f->text[i], f->len[i]);
		(*out)[f->len[i]] = '\0';
		*len = f->len[i];
		return 0;
	}
	errno = ENOENT;
	return -1;
}

/* No control characters in a report (names may hold UTF-8). */
static void
check_report(const char *text)
{
	for (const char *c = text; *c != '\0'; c++)
		CHECK(*c == '\n' || *c == '\t' ||
		    ((unsigned char)*c >= 0x20 && *c != 0x7f));
}

static void
check_domain(const struct config *cfg, const struct config_domain *d)
{
	struct local_target out[LOCAL_EXPAND_MAX];

	for (size_t i = 0; i < d->nmailboxes; i++)
		CHECK(local_lookup(d, d->mailboxes[i],
		    strlen(d->mailboxes[i])) == LOCAL_LOOKUP_MAILBOX);
	for (size_t i = 0; i < d->naliases; i++) {
		const char *a = d->aliases[i].name;
		int n;

		CHECK(local_lookup(d, a, strlen(a)) == LOCAL_LOOKUP_ALIAS);
		n = local_expand(&cfg->domain_index, d, a, strlen(a), out);
		CHECK(n >= 1 && n <= LOCAL_EXPAND_MAX);
		for (int k = 0; k < n; k++)
			CHECK(local_lookup(out[k].domain, out[k].mailbox,
			    strlen(out[k].mailbox)) == LOCAL_LOOKUP_MAILBOX);
	}
}

static void
check_passwd(const struct config *cfg)
{
	char addr[600];

	for (size_t i = 0; i < cfg->npasswd; i++) {
		const struct config_passwd *u = &cfg->passwd[i];

		CHECK(i == 0 || strcmp(cfg->passwd[i - 1].name, u->name) < 0);
		CHECK(config_find_passwd(cfg, u->name, strlen(u->name)) == u);
		for (size_t k = 0; k < u->naddresses; k++) {
			const char *a = u->addresses[k];

			snprintf(addr, sizeof(addr), "%s%s", a[0] == '@' ?
			    "someone" : "", a);
			CHECK(config_passwd_owns(u, addr, strlen(addr)));
		}
	}
}

static void
fuzz_load(unsigned mode, const char *p, size_t len)
{
	static const char *const conf[4] = {
		"domain example.org {\n mailbox postmaster\n"
		" users /fuzz/users\n}\n",
		"domain example.org {\n mailbox postmaster alice bob\n"
		" aliases /fuzz/aliases\n}\n"
		"domain example.net { mailbox postmaster carol }\n",
		"passwd_file /fuzz/passwd\n"
		"listen 127.0.0.1:2525 { auth yes }\n",
		"domain example.org {\n mailbox postmaster\n"
		" users /fuzz/users\n aliases /fuzz/aliases\n}\n"
		"domain example.net { mailbox postmaster carol }\n"
		"passwd_file /fuzz/passwd\n",
	};
	struct fuzz_files f = { { NULL, NULL, NULL }, { 0, 0, 0 } };
	struct config_file_source src = { fuzz_read, &f };
	char *errors = NULL;
	struct config *cfg;

	if (mode < 3) {
		f.text[mode] = p;
		f.len[mode] = len;
	} else {
		/* users NUL aliases NUL passwd; a missing part is empty */
		for (size_t i = 0; i < 3; i++) {
			const char *z = memchr(p, '\0', len);
			size_t n = i < 2 && z != NULL ? (size_t)(z - p) : len;

			f.text[i] = p;
			f.len[i] = n;
			p += n + (n < len);
			len -= n + (n < len);
		}
	}
	cfg = config_load_text("fuzz.conf", conf[mode], strlen(conf[mode]), 0,
	    &src, &errors);
	CHECK((cfg == NULL) != (errors == NULL));
	if (cfg == NULL) {
		check_report(errors);
		free(errors);
		return;
	}
	if (cfg->warnings != NULL)
		check_report(cfg->warnings);
	for (size_t i = 0; i < cfg->ndomains; i++)
		check_domain(cfg, &cfg->domains[i]);
	check_passwd(cfg);
	config_free(&cfg);
}

/* The passwd file (p, len) as the loader reads it; NULL if refused. */
static struct config *
load_passwd(const char *p, size_t len)
{
	static const char conf[] = "passwd_file /fuzz/passwd\n";
	struct fuzz_files f = { { NULL, NULL, p }, { 0, 0, len } };
	struct config_file_source src = { fuzz_read, &f };

	return config_load_text("fuzz.conf", conf, strlen(conf), 0, &src,
	    NULL);
}

/* What the loader made of old and of the rewritten text agree: the
 * user has the new hash and its old addresses, the others are kept. */
static void
check_update_loads(const char *old, size_t oldlen, const char *out,
    const char *user)
{
	const struct config_passwd *u0, *u1;
	struct config *before, *after;

	if ((before = load_passwd(old, oldlen)) == NULL)
		return;      /* a broken file stays broken */
	after = load_passwd(out, strlen(out));
	CHECK(after != NULL);
	u0 = config_find_passwd(before, user, strlen(user));
	u1 = config_find_passwd(after, user, strlen(user));
	CHECK(u1 != NULL && strcmp(u1->hash, HASH) == 0);
	CHECK(after->npasswd == before->npasswd + (u0 == NULL));
	if (u0 != NULL) {
		CHECK(u1->naddresses == u0->naddresses);
		for (size_t i = 0; i < u0->naddresses; i++)
			CHECK(strcmp(u0->addresses[i], u1->addresses[i]) == 0);
	}
	for (size_t i = 0; i < before->npasswd; i++) {
		const struct config_passwd *a = &before->passwd[i], *b;

		if (a == u0)
			continue;
		b = config_find_passwd(after, a->name, strlen(a->name));
		CHECK(b != NULL && strcmp(a->hash, b->hash) == 0);
	}
	config_free(&before);
	config_free(&after);
}

/* Lines of (p, len) as passwd_update_text() counts them. */
static size_t
count_lines(const char *p, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += p[i] == '\n';
	return n + (len > 0 && p[len - 1] != '\n');
}

static void
fuzz_update(const char *p, size_t len)
{
	const char *nl = memchr(p, '\n', len);
	size_t ulen = nl != NULL ? (size_t)(nl - p) : len;
	char user[256], *out, *line;
	size_t olen, found = 0;

	/* Only what `tern passwd` accepts as a user name. */
	if (ulen >= sizeof(user) || memchr(p, '\0', ulen) != NULL)
		return;
	memcpy(user, p, ulen);
	user[ulen] = '\0';
	if (!passwd_user_valid(user))
		return;
	p += ulen + (nl != NULL);
	len -= ulen + (nl != NULL);

	out = passwd_update_text(p, len, user, HASH);
	if (memchr(p, '\0', len) != NULL) {
		CHECK(out == NULL);     /* it would cut the file there */
		return;
	}
	olen = strlen(out);
	CHECK(olen <= len + ulen + strlen(HASH) + 4);
	CHECK(olen > 0 && out[olen - 1] == '\n');
	line = xasprintf("%s:%s", user, HASH);
	for (const char *s = out; s < out + olen;) {
		const char *e = strchr(s, '\n');

		if (strncmp(s, line, strlen(line)) == 0 &&
		    (s[strlen(line)] == '\n' || s[strlen(line)] == ':'))
			found++;
		s = e + 1;
	}
	CHECK(found >= 1);
	/* Every line is kept, plus the user's when it was not there. */
	CHECK(count_lines(out, olen) == count_lines(p, len) ||
	    count_lines(out, olen) == count_lines(p, len) + 1);
	check_update_loads(p, len, out, user);
	free(line);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	unsigned mode;

	if (!init) {
		log_set_level(LOG_LEVEL_ERR);   /* warnings are in cfg */
		init = 1;
	}
	if (size == 0)
		return 0;
	mode = data[0] % 5;
	if (mode < 4)
		fuzz_load(mode, (const char *)data + 1, size - 1);
	else
		fuzz_update((const char *)data + 1, size - 1);
	return 0;
}
