/*
 * config_apply.c - what an option's values do to the configuration being
 * loaded: each value is checked against its type and stored in the
 * record its block fills (struct config, config_domain, config_route or
 * config_listener); files named by an option are read at once. At the
 * end of the file, config_finish() applies the defaults and checks what
 * only the whole configuration can tell (see config_int.h).
 */
#include <arpa/inet.h>
#include <unistd.h>

#include "conf/config_int.h"
#include "lib/util.h"

/* An absolute copy of path, or NULL after reporting why not. */
static char *
resolve_path(struct config_parser *p, const char *opt, const char *path)
{
	char *abs;

	if (path[0] == '\0') {
		config_err(p, "%s: empty path", opt);
		return NULL;
	}
	if (path[0] != '/' && p->cwd == NULL) {
		config_err(p, "%s: cannot resolve relative path '%s': the "
		    "working directory is unknown", opt, path);
		return NULL;
	}
	if ((abs = config_path_absolute(p->cwd, path)) == NULL)
		config_err(p, "%s: path longer than %d bytes", opt,
		    CONFIG_PATH_MAX);
	return abs;
}

static bool
valid_user_name(const char *s)
{
	size_t len = strlen(s);

	/* The portable set of useradd(8), plus '.'. */
	if (len == 0 || len > CONFIG_USER_MAX || s[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

/*
 * Options
 */

static struct config_domain *
frame_domain(struct config_parser *p, const struct config_frame *f)
{
	return &p->cfg->domains[f->dom];
}

static void
set_string(char **field, char *value)
{
	free(*field);
	*field = value;
}

static void
apply_cidrs(struct config_parser *p, const struct config_option *o,
    char **args, size_t nargs)
{
	struct config *cfg = p->cfg;

	if (nargs == 1 && strcmp(args[0], "none") == 0) {
		if (p->relay_line != 0)
			config_err(p, "%s: 'none' cannot be combined with "
			    "networks (line %u)", o->name, p->relay_line);
		else if (p->relay_none_line == 0)
			p->relay_none_line = p->line;
		return;
	}
	if (p->relay_none_line != 0) {
		config_err(p, "%s: networks cannot be combined with 'none' "
		    "(line %u)", o->name, p->relay_none_line);
		return;
	}
	if (p->relay_line == 0)
		p->relay_line = p->line;
	for (size_t i = 0; i < nargs; i++) {
		struct config_cidr c;
		char sh[96];

		if (!config_parse_cidr(args[i], &c)) {
			config_err(p, "%s: '%s' is not a network (use "
			    "10.0.0.0/8, 2001:db8::/32 or a single address)",
			    o->name, config_show(sh, args[i], strlen(args[i])));
			continue;
		}
		if (cfg->nrelay_networks >= CONFIG_MAX_RELAY_NETWORKS) {
			config_err(p, "%s: more than %d networks", o->name,
			    CONFIG_MAX_RELAY_NETWORKS);
			return;
		}
		cfg->relay_networks = config_grow(cfg->relay_networks,
		    cfg->nrelay_networks, sizeof(*cfg->relay_networks));
		cfg->relay_networks[cfg->nrelay_networks++] = c;
	}
}

size_t
config_apply_listen(struct config_parser *p, const struct config_option *o,
    const char *arg)
{
	struct config *cfg = p->cfg;
	struct config_listener *l;
	char sh[96];

	if (cfg->nlisteners >= CONFIG_MAX_LISTENERS) {
		config_err(p, "%s: more than %d listeners", o->name,
		    CONFIG_MAX_LISTENERS);
		return SIZE_MAX;
	}
	l = &cfg->listeners[cfg->nlisteners];
	if (strlen(arg) >= sizeof(l->text) ||
	    !config_parse_listen(arg, &l->addr, &l->addrlen)) {
		config_err(p, "%s: '%s' is not an address:port (use "
		    "192.0.2.1:25 or [2001:db8::1]:25; ports 1..65535)",
		    o->name, config_show(sh, arg, strlen(arg)));
		memset(l, 0, sizeof(*l));
		return SIZE_MAX;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (cfg->listeners[i].addrlen == l->addrlen &&
		    memcmp(&cfg->listeners[i].addr, &l->addr,
		    l->addrlen) == 0) {
			config_err(p, "%s: %s is already listed at line %u",
			    o->name, arg, p->listen_line[i]);
			memset(l, 0, sizeof(*l));
			return SIZE_MAX;
		}
	}
	util_strlcpy(l->text, arg, sizeof(l->text));
	config_listener_defaults(l);
	p->listen_line[cfg->nlisteners] = p->line;
	return cfg->nlisteners++;
}

static void
apply_number(struct config_parser *p, const struct config_option *o,
    void *field, const char *arg)
{
	char sh[96], lo[32], hi[32];
	uint64_t v;

	if (!config_parse_number(o->type, arg, &v)) {
		config_show(sh, arg, strlen(arg));
		if (o->type == T_SIZE)
			config_err(p, "%s: '%s' is not a size (a number of "
			    "bytes with an optional K, M or G suffix)", o->name,
			    sh);
		else if (o->type == T_DURATION)
			config_err(p, "%s: '%s' is not a duration (a number of "
			    "seconds, or with an s, m, h or d suffix)", o->name,
			    sh);
		else
			config_err(p, "%s: '%s' is not a number", o->name, sh);
		return;
	}
	if (v < o->min || v > o->max) {
		config_fmt_bound(o, lo, sizeof(lo), o->min);
		config_fmt_bound(o, hi, sizeof(hi), o->max);
		config_err(p, "%s: %s is out of bounds (%s..%s)", o->name,
		    config_show(sh, arg, strlen(arg)), lo, hi);
		return;
	}
	if (o->type == T_SIZE)
		*(uint64_t *)field = v;
	else
		*(unsigned *)field = (unsigned)v;
}

static void
apply_enum(struct config_parser *p, const struct config_option *o,
    void *field, const char *arg)
{
	struct config_sbuf list = { 0 };
	const char *near;
	size_t nnames;
	char sh[96];

	for (unsigned i = 0; o->names[i] != NULL; i++) {
		if (strcmp(arg, o->names[i]) == 0) {
			*(unsigned *)field = i;
			free(list.s);
			return;
		}
		config_sbuf_addf(&list, "%s%s", i ? ", " : "", o->names[i]);
	}
	for (nnames = 0; o->names[nnames] != NULL; nnames++)
		continue;
	near = config_suggest(arg, o->names, nnames, sizeof(char *));
	config_err(p, "%s: '%s' is not one of %s%s%s%s", o->name,
	    config_show(sh, arg, strlen(arg)), list.s,
	    near ? " (did you mean '" : "", near ? near : "",
	    near ? "'?)" : "");
	free(list.s);
}

static void
apply_mailboxes(struct config_parser *p, const struct config_option *o,
    struct config_domain *d, char **args, size_t nargs)
{
	for (size_t i = 0; i < nargs; i++) {
		const char *why = config_check_local(args[i], strlen(args[i]));
		char sh[96];

		if (why != NULL) {
			config_err(p, "%s: invalid name '%s': %s", o->name,
			    config_show(sh, args[i], strlen(args[i])), why);
			continue;
		}
		d->mailboxes = config_grow(d->mailboxes, d->nmailboxes,
		    sizeof(*d->mailboxes));
		d->mailboxes[d->nmailboxes++] = config_lower_dup(args[i],
		    strlen(args[i]));
	}
}

/*
 * smarthost: "[HOST]:PORT", "[HOST]", "HOST:PORT" or "HOST". In brackets
 * HOST is an IPv4 or IPv6 address (an "IPv6:" prefix is allowed, as in
 * an address literal) or a name whose A/AAAA records are used; without,
 * a name whose MX records are looked up, or an IPv4 address.
 */
static void
apply_smarthost(struct config_parser *p, const struct config_option *o,
    struct config_route *rt, const char *arg)
{
	char host[CONFIG_HOSTNAME_MAX + 2], sh[96];
	const char *h = arg, *e, *port = NULL, *why = NULL;
	bool brackets = arg[0] == '[';
	struct in6_addr a6;
	struct in_addr a4;
	uint64_t v = 25;
	size_t hl;

	config_show(sh, arg, strlen(arg));
	if (brackets) {
		h = arg + 1;
		if ((e = strchr(h, ']')) == NULL) {
			config_err(p, "%s: '%s' has no closing ']'", o->name,
			    sh);
			return;
		}
		if (e[1] == ':')
			port = e + 2;
		else if (e[1] != '\0') {
			config_err(p, "%s: '%s': only ':PORT' may follow ']'",
			    o->name, sh);
			return;
		}
		if (strncasecmp(h, "IPv6:", 5) == 0)
			h += 5;
	} else {
		e = strchr(h, ':');
		if (e != NULL && strchr(e + 1, ':') != NULL) {
			config_err(p, "%s: '%s': an IPv6 address goes in "
			    "brackets ([2001:db8::1]:25)", o->name, sh);
			return;
		}
		if (e != NULL)
			port = e + 1;
		else
			e = h + strlen(h);
	}
	hl = (size_t)(e - h);
	if (hl == 0 || hl >= sizeof(host)) {
		config_err(p, "%s: '%s': %s host", o->name, sh,
		    hl ? "too long a" : "no");
		return;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (port != NULL && (!config_parse_digits(port, strlen(port), &v) ||
	    v < 1 || v > 65535)) {
		config_err(p, "%s: '%s': the port must be 1..65535", o->name,
		    sh);
		return;
	}
	rt->smarthost_ip = inet_pton(AF_INET, host, &a4) == 1 ||
	    (brackets && inet_pton(AF_INET6, host, &a6) == 1);
	if (!rt->smarthost_ip &&
	    (why = config_check_domain(host, hl)) != NULL) {
		config_err(p, "%s: '%s': '%s' is not an IP address or a valid "
		    "host name: %s", o->name, sh, host, why);
		return;
	}
	set_string(&rt->smarthost, xstrdup(arg));
	set_string(&rt->smarthost_host, config_lower_dup(host, hl));
	rt->smarthost_port = (unsigned)v;
	rt->smarthost_mx = !brackets && !rt->smarthost_ip;
}

/* auth_user: a SASL authcid (RFC 4616 2: 1..255 octets of UTF-8 without
 * NUL); control characters are refused too, as they only cause trouble. */
static void
apply_auth_user(struct config_parser *p, const struct config_option *o,
    struct config_route *rt, const char *arg)
{
	size_t len = strlen(arg);
	char sh[96];

	if (len == 0 || len > CONFIG_AUTH_MAX) {
		config_err(p, "%s: the user name must be 1..%d bytes", o->name,
		    CONFIG_AUTH_MAX);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)arg[i];

		if (c < 0x20 || c == 0x7f) {
			config_err(p, "%s: '%s' contains a control character",
			    o->name, config_show(sh, arg, len));
			return;
		}
	}
	set_string(&rt->auth_user, xstrdup(arg));
}

/* The record a frame's options go to. */
static void *
frame_base(struct config_parser *p, const struct config_frame *f)
{
	switch (f->ctx->kind) {
	case CTX_TOP:
		return p->cfg;
	case CTX_DOMAIN:
		return frame_domain(p, f);
	case CTX_ROUTE:
		return &p->cfg->routes[f->dom];
	case CTX_LISTEN:
		return f->dom == SIZE_MAX ? &p->bad_listener :
		    &p->cfg->listeners[f->dom];
	}
	ASSERT(!"unreachable context");
	return NULL;
}

/* The value of a path option (T_PATH and the files read at load), made
 * absolute; the files are read here. */
static void
apply_path(struct config_parser *p, const struct config_frame *f,
    const struct config_option *o, void *base, const char *arg)
{
	void *field = (char *)base + o->off;
	char sh[96], whybuf[128], *abs;
	const char *why;
	size_t nerr;

	switch (o->type) {
	case T_MAILDIR:
		if ((why = config_check_maildir(arg, whybuf,
		    sizeof(whybuf))) != NULL) {
			config_err(p, "%s: %s", o->name, why);
			return;
		}
		break;
	case T_SOCKET:
		/* "" stands for none until apply_defaults() sees it. */
		if (strcmp(arg, "none") == 0) {
			set_string(field, xstrdup(""));
			return;
		}
		break;
	default:
		break;
	}
	if ((abs = resolve_path(p, o->name, arg)) == NULL)
		return;
	if (o->type == T_SOCKET && strlen(abs) >= CONFIG_SOCKET_PATH_MAX) {
		config_err(p, "%s: '%s' is longer than %d bytes, the limit of "
		    "a socket address", o->name, config_show(sh, abs,
		    strlen(abs)), CONFIG_SOCKET_PATH_MAX - 1);
		free(abs);
		return;
	}
	set_string(field, abs);
	/* Files are read now, unless only the syntax is wanted. */
	if (p->flags & CONFIG_LOAD_NO_FILES)
		return;
	switch (o->type) {
	case T_USERS:
		config_read_users(p, base, abs);
		return;
	case T_ALIASES:
		nerr = p->nerrors;
		config_read_aliases(p, f->dom, abs);
		p->alias_errors += p->nerrors - nerr;
		return;
	case T_SECRET:
		config_read_secret(p, o, base, abs);
		return;
	case T_PASSWD:
		config_read_passwd(p, o, abs);
		return;
	default:
		return;     /* T_PATH, T_MAILDIR, T_SOCKET */
	}
}

/* A value that is one word: a name or an address. */
static void
apply_word(struct config_parser *p, const struct config_option *o,
    void *field, const char *arg)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	const char *why;
	char sh[96];

	switch (o->type) {
	case T_HOSTNAME:
		if ((why = config_check_domain(arg, strlen(arg))) != NULL) {
			config_err(p, "%s: '%s' is not a valid host name: %s",
			    o->name, config_show(sh, arg, strlen(arg)), why);
			return;
		}
		set_string(field, config_lower_dup(arg, strlen(arg)));
		return;
	case T_USER:
		if (!valid_user_name(arg)) {
			config_err(p, "%s: '%s' is not a valid user name",
			    o->name, config_show(sh, arg, strlen(arg)));
			return;
		}
		set_string(field, xstrdup(arg));
		return;
	case T_ADDRPORT:
		if (strlen(arg) >= 80 || !config_parse_listen(arg, &ss,
		    &slen)) {
			config_err(p, "%s: '%s' is not an address:port (use "
			    "192.0.2.53:53 or [2001:db8::53]:53; ports "
			    "1..65535)", o->name,
			    config_show(sh, arg, strlen(arg)));
			return;
		}
		set_string(field, xstrdup(arg));
		return;
	default:
		ASSERT(!"not a word option");
	}
}

void
config_apply_option(struct config_parser *p, struct config_frame *f,
    const struct config_option *o, char **args, size_t nargs)
{
	void *base = frame_base(p, f);
	void *field = (char *)base + o->off;
	size_t idx = (size_t)(o - f->ctx->opts);
	bool list = o->type == T_CIDRS || o->type == T_MAILBOXES;

	if (!o->repeat) {
		if (f->seen[idx] != 0) {
			config_err(p, "duplicate option '%s' (first set at "
			    "line %u)", o->name, f->seen[idx]);
			return;
		}
		f->seen[idx] = p->line;
	}
	if (nargs == 0) {
		config_err(p, "%s: missing value", o->name);
		return;
	}
	if (!list && nargs != 1) {
		config_err(p, "%s: expects one value, got %zu (quote values "
		    "that contain spaces)", o->name, nargs);
		return;
	}
	switch (o->type) {
	case T_HOSTNAME:
	case T_USER:
	case T_ADDRPORT:
		apply_word(p, o, field, args[0]);
		return;
	case T_PATH:
	case T_USERS:
	case T_ALIASES:
	case T_MAILDIR:
	case T_SECRET:
	case T_SOCKET:
	case T_PASSWD:
		apply_path(p, f, o, base, args[0]);
		return;
	case T_LISTEN:
		(void)config_apply_listen(p, o, args[0]);
		return;
	case T_CIDRS:
		apply_cidrs(p, o, args, nargs);
		return;
	case T_SIZE:
	case T_UINT:
	case T_DURATION:
		apply_number(p, o, field, args[0]);
		return;
	case T_ENUM:
		apply_enum(p, o, field, args[0]);
		return;
	case T_MAILBOXES:
		apply_mailboxes(p, o, base, args, nargs);
		return;
	case T_SMARTHOST:
		apply_smarthost(p, o, base, args[0]);
		return;
	case T_AUTH_USER:
		apply_auth_user(p, o, base, args[0]);
		return;
	case T_DOMAIN:
	case T_ROUTE:
		break;
	}
	ASSERT(!"unreachable option type");
}

/*
 * End of the file: defaults, computed values, cross-checks
 */

static void
apply_defaults(struct config_parser *p)
{
	const struct config_ctx *top = config_ctxs[CTX_TOP];
	struct config *cfg = p->cfg;
	const char *file = p->file;
	size_t nerr = p->nerrors;

	/* Built-in defaults go through the same parser as the file, so the
	 * documented default is exactly what tern uses. */
	p->file = "(built-in default)";
	p->line = 0;
	for (size_t i = 0; i < top->nopts; i++) {
		const struct config_option *o = &top->opts[i];
		char buf[128], *args[8], *save = NULL;
		size_t nargs = 0;
		bool unset;

		if (o->def == NULL)
			continue;
		if (o->type == T_LISTEN)
			unset = cfg->nlisteners == 0;
		else if (o->type == T_CIDRS)
			unset = p->relay_line == 0 && p->relay_none_line == 0;
		else
			unset = p->stack[0].seen[i] == 0;
		if (!unset)
			continue;
		util_strlcpy(buf, o->def, sizeof(buf));
		for (char *s = strtok_r(buf, " ", &save); s != NULL &&
		    nargs < nitems(args); s = strtok_r(NULL, " ", &save))
			args[nargs++] = s;
		p->stack[0].seen[i] = 0;
		config_apply_option(p, &p->stack[0], o, args, nargs);
	}
	ASSERT(p->nerrors == nerr || p->cwd == NULL);
	p->file = file;

	if (cfg->hostname == NULL) {
		char host[256];

		if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
			util_strlcpy(host, "localhost", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		cfg->hostname = xstrdup(host);
	}
	if ((cfg->tls_certificate == NULL) != (cfg->tls_key == NULL))
		config_err_at(p, p->file, 0, "tls_certificate and tls_key go "
		    "together: give both or neither");
	if (cfg->spool_dir == NULL)
		return;   /* reported already (working directory unknown) */
	if (cfg->chroot_dir == NULL) {
		char *parent = config_path_parent(cfg->spool_dir);

		cfg->chroot_dir = xasprintf("%s%sempty", parent,
		    strcmp(parent, "/") == 0 ? "" : "/");
		free(parent);
	}
	if (cfg->submit_socket == NULL) {
		cfg->submit_socket =
		    config_default_submit_socket(cfg->spool_dir);
		if (strlen(cfg->submit_socket) >= CONFIG_SOCKET_PATH_MAX) {
			config_err(p, "submit_socket: the default %s is longer "
			    "than %d bytes (the limit of a socket address): "
			    "set submit_socket or none", cfg->submit_socket,
			    CONFIG_SOCKET_PATH_MAX - 1);
		}
	} else if (cfg->submit_socket[0] == '\0') {
		free(cfg->submit_socket);       /* submit_socket none */
		cfg->submit_socket = NULL;
	}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		struct config_domain *d = &cfg->domains[i];
		char *parent;
		struct config_sbuf pat = { 0 };

		if (d->maildir != NULL)
			continue;
		parent = config_path_parent(cfg->spool_dir);
		/* The parent is a path, not a pattern: escape its '%'. */
		for (const char *s = parent; *s != '\0' &&
		    strcmp(parent, "/") != 0; s++) {
			if (*s == '%')
				config_sbuf_addf(&pat, "%%%%");
			else
				config_sbuf_addf(&pat, "%c", *s);
		}
		config_sbuf_addf(&pat, "/mail/%%d/%%u");
		free(parent);
		d->maildir = pat.s;
	}
}

/* Aliases: no clash with mailboxes, every target local and existing,
 * every alias expanding to mailboxes without loops. */
static void
check_aliases(struct config_parser *p)
{
	struct config *cfg = p->cfg;
	size_t nerr = p->nerrors;

	for (size_t i = 0; i < p->npend; i++) {
		const struct config_pending *e = &p->pend[i];
		const struct config_domain *d = &cfg->domains[e->dom];
		const struct config_domain *td = d;
		const char *t = e->target, *at;

		if (t == NULL) {
			if (local_lookup(d, e->alias, strlen(e->alias)) ==
			    LOCAL_LOOKUP_MAILBOX)
				config_err_at(p, e->file, e->line, "alias '%s' "
				    "is also a mailbox of domain %s", e->alias,
				    d->name);
			continue;
		}
		if ((at = strchr(t, '@')) != NULL) {
			td = config_find_domain(cfg, at + 1, strlen(at + 1));
			if (td == NULL) {
				config_err_at(p, e->file, e->line, "alias "
				    "'%s': target '%s': %s is not a local "
				    "domain", e->alias, t, at + 1);
				continue;
			}
		}
		if (local_lookup(td, t, at != NULL ? (size_t)(at - t) :
		    strlen(t)) == LOCAL_LOOKUP_UNKNOWN)
			config_err_at(p, e->file, e->line, "alias '%s': target "
			    "'%s' is not a mailbox or alias of domain %s",
			    e->alias, t, td->name);
	}
	/* With a broken alias or target, expansion would only repeat the
	 * errors already reported; the loop checks wait for a clean file. */
	if (p->nerrors != nerr || p->alias_errors > 0)
		return;
	for (size_t i = 0; i < p->npend; i++) {
		const struct config_pending *e = &p->pend[i];
		const struct config_domain *d = &cfg->domains[e->dom];
		struct local_target out[LOCAL_EXPAND_MAX];
		char why[256];

		if (e->target != NULL)
			continue;
		if (local_expand_explain(&cfg->domain_index, d, e->alias,
		    strlen(e->alias), out, why, sizeof(why)) == -1)
			config_err_at(p, e->file, e->line, "alias '%s': %s",
			    e->alias, why);
	}
}

/* Routes are for foreign domains: one naming a local domain is a mistake
 * (local mail never goes out), and its defaults are set here. */
static void
check_routes(struct config_parser *p)
{
	struct config *cfg = p->cfg;

	for (size_t i = 0; i < cfg->nroutes; i++) {
		const char *d = cfg->routes[i].domain;

		if (d[0] != '\0' && d[0] != '.' && strcmp(d, "*") != 0 &&
		    config_find_domain(cfg, d, strlen(d)) != NULL)
			config_err_at(p, p->file, p->route_line[i], "route %s: "
			    "%s is a local domain (its mail is delivered to "
			    "Maildirs; routes are for foreign domains)", d, d);
	}
}

static int
domain_ptr_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct config_domain *const *)a)->name,
	    (*(const struct config_domain *const *)b)->name);
}

void
config_finish(struct config_parser *p)
{
	struct config *cfg = p->cfg;

	apply_defaults(p);
	for (size_t i = 0; i < cfg->ndomains; i++)
		local_lookup_prepare(&cfg->domains[i]);
	/* Names are stored lower-cased: a sorted index makes the lookup at
	 * every RCPT a binary search, however many domains are hosted. */
	cfg->domain_index.sorted = xreallocarray(NULL,
	    cfg->ndomains ? cfg->ndomains : 1,
	    sizeof(*cfg->domain_index.sorted));
	for (size_t i = 0; i < cfg->ndomains; i++)
		cfg->domain_index.sorted[i] = &cfg->domains[i];
	cfg->domain_index.n = cfg->ndomains;
	qsort(cfg->domain_index.sorted, cfg->ndomains,
	    sizeof(*cfg->domain_index.sorted), domain_ptr_cmp);
	check_routes(p);
	check_aliases(p);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].auth != CONFIG_LISTENER_AUTH_NO &&
		    cfg->passwd_file == NULL)
			config_err_at(p, p->file, p->listen_line[i], "listen "
			    "%s: auth %s needs passwd_file (the users who may "
			    "authenticate)", cfg->listeners[i].text,
			    config_listener_auth_name(cfg->listeners[i].auth));
}
