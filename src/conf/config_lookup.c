/*
 * config_lookup.c - a loaded configuration: the lookups the processes
 * make in it (domains, passwd users, relay networks, Maildir paths) and
 * config_free(). Loading is in config_parse.c and its neighbours
 * (config_int.h lists them); this file needs none of their internals.
 */
#include <arpa/inet.h>

#include "conf/config.h"
#include "lib/util.h"

static void
free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;

	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		struct config_domain *d = &cfg->domains[i];

		for (size_t j = 0; j < d->naliases; j++) {
			free(d->aliases[j].name);
			free_strings(d->aliases[j].targets,
			    d->aliases[j].ntargets);
		}
		free(d->aliases);
		free_strings(d->mailboxes, d->nmailboxes);
		free(d->name);
		free(d->users_file);
		free(d->aliases_file);
		free(d->maildir);
	}
	free(cfg->domains);
	for (size_t i = 0; i < cfg->nroutes; i++) {
		struct config_route *rt = &cfg->routes[i];

		free(rt->domain);
		free(rt->smarthost);
		free(rt->smarthost_host);
		free(rt->auth_user);
		free(rt->auth_password_file);
		if (rt->auth_password != NULL) {
			explicit_bzero(rt->auth_password,
			    strlen(rt->auth_password));
			free(rt->auth_password);
		}
	}
	free(cfg->routes);
	for (size_t i = 0; i < cfg->npasswd; i++) {
		free(cfg->passwd[i].name);
		free(cfg->passwd[i].hash);
		free_strings(cfg->passwd[i].addresses,
		    cfg->passwd[i].naddresses);
	}
	free(cfg->passwd);
	free(cfg->passwd_file);
	free(cfg->relay_networks);
	free(cfg->source);
	free(cfg->warnings);
	free(cfg->hostname);
	free(cfg->spool_dir);
	free(cfg->log_file);
	free(cfg->user_smtp);
	free(cfg->user_queue);
	free(cfg->user_relay);
	free(cfg->chroot_dir);
	free(cfg->submit_socket);
	free(cfg->submit_group);
	free(cfg->resolver);
	free(cfg->tls_certificate);
	free(cfg->tls_key);
	free(cfg->tls_ca_file);
	free(cfg->domain_index.sorted);
	free(cfg);
	*cfgp = NULL;
}

const struct config_domain *
config_find_domain(const struct config *cfg, const char *domain, size_t len)
{
	return local_find_domain(&cfg->domain_index, domain, len);
}

const struct config_passwd *
config_find_passwd(const struct config *cfg, const char *name, size_t len)
{
	size_t lo = 0, hi = cfg->npasswd;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *n = cfg->passwd[mid].name;
		size_t nl = strlen(n);
		int c = memcmp(n, name, nl < len ? nl : len);

		if (c == 0)
			c = nl < len ? -1 : nl > len ? 1 : 0;
		if (c == 0)
			return &cfg->passwd[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool
config_passwd_owns(const struct config_passwd *u, const char *addr,
    size_t len)
{
	const char *at = len > 0 ? memrchr(addr, '@', len) : NULL;

	if (u == NULL || at == NULL)
		return false;
	for (size_t i = 0; i < u->naddresses; i++) {
		const char *a = u->addresses[i];

		if (a[0] == '@') {
			if (util_ascii_casecmp_n(at + 1, len - (size_t)(at -
			    addr) - 1, a + 1, strlen(a + 1)))
				return true;
		} else if (util_ascii_casecmp_n(addr, len, a, strlen(a))) {
			return true;
		}
	}
	return false;
}

static bool
cidr_match(const struct config_cidr *c, int family, const uint8_t *addr)
{
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (c->family != family || memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((addr[full] ^ c->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool
config_is_relay_client(const struct config *cfg, const struct sockaddr *sa)
{
	const uint8_t *v4 = NULL, *v6 = NULL;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	if (sa == NULL)
		return false;
	/* Copies: the caller's sockaddr need not be aligned for its type. */
	if (sa->sa_family == AF_INET) {
		memcpy(&sin, sa, sizeof(sin));
		v4 = (const uint8_t *)&sin.sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(&sin6, sa, sizeof(sin6));
		v6 = sin6.sin6_addr.s6_addr;
		/* A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d;
		 * they must match the IPv4 networks. */
		if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr))
			v4 = v6 + 12;
	} else {
		return false;
	}
	for (size_t i = 0; i < cfg->nrelay_networks; i++) {
		const struct config_cidr *c = &cfg->relay_networks[i];

		if ((v4 != NULL && cidr_match(c, AF_INET, v4)) ||
		    (v6 != NULL && cidr_match(c, AF_INET6, v6)))
			return true;
	}
	return false;
}

int
config_maildir_path(const struct config_domain *d, const char *user,
    char *buf, size_t bufsize)
{
	size_t o = 0;

	/* The name becomes a path component: refuse what could climb out. */
	if (d == NULL || d->maildir == NULL || user == NULL || user[0] == '\0' ||
	    user[0] == '.' || strchr(user, '/') != NULL || bufsize == 0)
		return -1;
	for (const char *s = d->maildir; *s != '\0'; s++) {
		const char *ins = s;
		size_t n = 1;

		if (*s == '%') {
			s++;
			if (*s == 'd') {
				ins = d->name;
				n = strlen(d->name);
			} else if (*s == 'u') {
				ins = user;
				n = strlen(user);
			} else if (*s == '%') {
				ins = s;
			} else {
				return -1;  /* checked at load */
			}
		}
		if (o + n >= bufsize)
			return -1;
		memcpy(buf + o, ins, n);
		o += n;
	}
	buf[o] = '\0';
	return 0;
}
