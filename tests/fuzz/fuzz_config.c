/*
 * fuzz_config.c - libFuzzer target for the configuration grammar: the
 * tokenizer, lines and blocks, every option's value syntax, the defaults
 * and the cross-checks at the end of the file (src/conf/config_*.c).
 *
 *   make build/fuzz/fuzz_config
 *   ./build/fuzz/fuzz_config -max_total_time=60 tests/fuzz/corpus/fuzz_config
 *
 * The input is the configuration text, loaded from memory with
 * config_load_buffer(CONFIG_LOAD_NO_FILES): the users, aliases, passwd
 * and password files it names are never read (fuzz_conf_files covers
 * their parsers). Checks, besides ASan/UBSan:
 * - a load gives a configuration or errors, never both, never neither;
 * - every error line names the file, ends in a newline and holds no
 *   control character, so a hostile byte cannot garble the report; at most
 *   CONFIG_MAX_ERRORS of them, plus the "too many errors" line;
 * - a loaded configuration is consistent: listeners parse again from their
 *   text, paths are absolute, every domain is found by its name in the
 *   sorted index, and every mailbox and alias by local_lookup(), and
 *   every Maildir path expands or is refused.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "conf/local_lookup.h"
#include "lib/log.h"
#include "lib/util.h"

#include "fuzz.h"

#define FUZZ_NAME "fuzz.conf"


/* Every line "NAME...\n" without control characters (a path may hold
 * UTF-8 or a tab); returns the line count. */
static size_t
check_report(const char *text)
{
	size_t n = 0;

	for (const char *s = text; *s != '\0'; n++) {
		const char *nl = strchr(s, '\n');

		CHECK(nl != NULL);
		CHECK(strncmp(s, FUZZ_NAME, strlen(FUZZ_NAME)) == 0 ||
		    strncmp(s, "(built-in default)", 18) == 0);
		for (const char *c = s; c < nl; c++)
			CHECK(((unsigned char)*c >= 0x20 || *c == '\t') &&
			    *c != 0x7f);
		s = nl + 1;
	}
	return n;
}

static void
check_domain(const struct config *cfg, const struct config_domain *d)
{
	char path[8192];

	CHECK(config_find_domain(cfg, d->name, strlen(d->name)) == d);
	CHECK(d->maildir != NULL && d->maildir[0] == '/');
	for (size_t i = 0; i < d->nmailboxes; i++) {
		const char *m = d->mailboxes[i];

		CHECK(local_lookup(d, m, strlen(m)) == LOCAL_LOOKUP_MAILBOX);
		if (config_maildir_path(d, m, path, sizeof(path)) == 0)
			CHECK(path[0] == '/');
	}
	for (size_t i = 0; i < d->naliases; i++)
		CHECK(local_lookup(d, d->aliases[i].name,
		    strlen(d->aliases[i].name)) == LOCAL_LOOKUP_ALIAS);
}

static void
check_config(const struct config *cfg)
{
	CHECK(cfg->hostname != NULL && cfg->hostname[0] != '\0');
	CHECK(cfg->spool_dir != NULL && cfg->spool_dir[0] == '/');
	CHECK(cfg->chroot_dir != NULL && cfg->chroot_dir[0] == '/');
	CHECK(cfg->submit_socket == NULL ||
	    (cfg->submit_socket[0] == '/' &&
	    strlen(cfg->submit_socket) < CONFIG_SOCKET_PATH_MAX));
	CHECK(cfg->nlisteners >= 1 && cfg->nlisteners <= CONFIG_MAX_LISTENERS);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		struct sockaddr_storage ss;
		socklen_t slen;

		CHECK(config_parse_listen(l->text, &ss, &slen));
		CHECK(slen == l->addrlen && memcmp(&ss, &l->addr, slen) == 0);
		CHECK(l->auth == CONFIG_LISTENER_AUTH_NO ||
		    cfg->passwd_file != NULL);
	}
	CHECK(cfg->retry_min >= 1 && cfg->max_recipients >= 1);
	CHECK(cfg->domain_index.n == cfg->ndomains);
	for (size_t i = 1; i < cfg->domain_index.n; i++)
		CHECK(strcmp(cfg->domain_index.sorted[i - 1]->name,
		    cfg->domain_index.sorted[i]->name) < 0);
	for (size_t i = 0; i < cfg->ndomains; i++)
		check_domain(cfg, &cfg->domains[i]);
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct config_route *rt = &cfg->routes[i];

		CHECK(rt->domain[0] != '\0');
		CHECK(rt->smarthost == NULL || (rt->smarthost_port >= 1 &&
		    rt->smarthost_port <= 65535 && rt->smarthost_host != NULL));
		CHECK((rt->auth_user == NULL) ==
		    (rt->auth_password_file == NULL));
	}
	(void)config_is_relay_client(cfg, (const struct sockaddr *)
	    &cfg->listeners[0].addr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	char *errors = NULL;
	struct config *cfg;

	if (!init) {
		log_set_level(LOG_LEVEL_ERR);   /* warnings are in cfg */
		init = 1;
	}
	cfg = config_load_buffer(FUZZ_NAME, (const char *)data, size,
	    CONFIG_LOAD_NO_FILES, &errors);
	CHECK((cfg == NULL) != (errors == NULL));
	if (cfg == NULL) {
		CHECK(errors[0] != '\0');
		CHECK(check_report(errors) <= CONFIG_MAX_ERRORS + 1);
		free(errors);
		return 0;
	}
	if (cfg->warnings != NULL)
		(void)check_report(cfg->warnings);
	check_config(cfg);
	config_free(&cfg);
	CHECK(cfg == NULL);
	return 0;
}
