/*
 * config_parse.c - the configuration file's grammar: tokenizer, lines,
 * blocks, error reports, and config_load() (see config.h, config_int.h).
 *
 * The grammar is line based. A line is split into tokens (words, quoted
 * strings, and the braces "{" and "}"), then read as one statement:
 *
 *     name value...              an option of the current context
 *     name value... {            opens a block (a context of its own)
 *     name value... { stmt }     a block with one statement, on one line
 *     }                          closes the innermost block
 *
 * Which names exist and what their values mean comes from the option
 * tables (config_options.c); config_apply.c stores the values.
 *
 * Errors never stop the load: each is recorded as "file:line: reason" and
 * the parser goes on with the next line, so an administrator sees every
 * problem at once. Any error makes config_load() return NULL.
 */
#include <errno.h>
#include <unistd.h>

#include "conf/config_int.h"
#include "lib/log.h"
#include "lib/util.h"

/* Generated into build/gen/config_default.c from etc/default.conf. */
extern const char config_default_text_data[];

/*
 * Error reports
 */

static void err_vat(struct config_parser *p, const char *file, unsigned line,
    const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void
err_vat(struct config_parser *p, const char *file, unsigned line,
    const char *fmt, va_list ap)
{
	p->nerrors++;
	if (p->nerrors > CONFIG_MAX_ERRORS) {
		if (p->nerrors == CONFIG_MAX_ERRORS + 1)
			config_sbuf_addf(&p->errors, "%s: too many errors, "
			    "only the first %d are shown\n", p->file,
			    CONFIG_MAX_ERRORS);
		return;
	}
	if (line > 0)
		config_sbuf_addf(&p->errors, "%s:%u: ", file, line);
	else
		config_sbuf_addf(&p->errors, "%s: ", file);
	config_sbuf_vaddf(&p->errors, fmt, ap);
	config_sbuf_addf(&p->errors, "\n");
}

void
config_err_at(struct config_parser *p, const char *file, unsigned line,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vat(p, file, line, fmt, ap);
	va_end(ap);
}

void
config_err(struct config_parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vat(p, p->file, p->line, fmt, ap);
	va_end(ap);
}

void
config_warn_at(struct config_parser *p, const char *file, unsigned line,
    const char *fmt, ...)
{
	struct config_sbuf one = { 0 };
	va_list ap;

	va_start(ap, fmt);
	config_sbuf_vaddf(&one, fmt, ap);
	va_end(ap);
	config_sbuf_addf(&p->warnings, "%s:%u: %s\n", file, line, one.s);
	log_warn("%s:%u: %s", file, line, one.s);
	free(one.s);
}

/*
 * Blocks
 */

/* Open a domain block; returns the index of its (possibly invalid) domain,
 * which receives the block's options either way so that errors inside it
 * are still found. */
static size_t
open_domain(struct config_parser *p, char **args, size_t nargs)
{
	struct config *cfg = p->cfg;
	struct config_domain *d;
	const char *why = NULL;
	char sh[96];

	if (cfg->ndomains >= CONFIG_MAX_DOMAINS)
		config_err(p, "domain: more than %d domains",
		    CONFIG_MAX_DOMAINS);
	else if (nargs != 1)
		config_err(p, "domain: expects one name, got %zu", nargs);
	else if ((why = config_check_domain(args[0], strlen(args[0]))) != NULL)
		config_err(p, "domain: '%s' is not a valid domain name: %s",
		    config_show(sh, args[0], strlen(args[0])), why);
	else {
		for (size_t i = 0; i < cfg->ndomains; i++) {
			if (strcasecmp(cfg->domains[i].name, args[0]) == 0) {
				config_err(p, "domain %s is already defined at "
				    "line %u", cfg->domains[i].name,
				    p->domain_line[i]);
				break;
			}
		}
	}
	cfg->domains = config_grow(cfg->domains, cfg->ndomains,
	    sizeof(*cfg->domains));
	p->domain_line = config_grow(p->domain_line, cfg->ndomains,
	    sizeof(*p->domain_line));
	d = &cfg->domains[cfg->ndomains];
	memset(d, 0, sizeof(*d));
	/* An invalid name is kept empty: it matches nothing, and the block's
	 * options are still checked. */
	d->name = nargs == 1 && why == NULL ?
	    config_lower_dup(args[0], strlen(args[0])) : xstrdup("");
	p->domain_line[cfg->ndomains] = p->line;
	return cfg->ndomains++;
}

/* At the end of a domain block. */
static void
close_domain(struct config_parser *p, size_t dom)
{
	struct config_domain *d = &p->cfg->domains[dom];
	bool found = false;

	/* RFC 5321 4.5.1: every domain MUST accept "postmaster". The users
	 * file may be absent on purpose, so this is a warning. */
	for (size_t i = 0; i < d->nmailboxes && !found; i++)
		found = strcmp(d->mailboxes[i], "postmaster") == 0;
	for (size_t i = 0; i < d->naliases && !found; i++)
		found = strcmp(d->aliases[i].name, "postmaster") == 0;
	if (!found && d->name[0] != '\0')
		config_warn_at(p, p->file, p->domain_line[dom], "domain %s has "
		    "no postmaster mailbox or alias (RFC 5321 4.5.1 requires "
		    "one)", d->name);
}

/* Open a route block; like open_domain(), an invalid one still takes its
 * options (its name stays empty and matches nothing). */
static size_t
open_route(struct config_parser *p, char **args, size_t nargs)
{
	struct config *cfg = p->cfg;
	struct config_route *rt;
	const char *why = NULL, *name = nargs == 1 ? args[0] : "";
	size_t len = strlen(name);
	char sh[96];
	bool ok = false;

	if (cfg->nroutes >= CONFIG_MAX_ROUTES)
		config_err(p, "route: more than %d routes", CONFIG_MAX_ROUTES);
	else if (nargs != 1)
		config_err(p, "route: expects one domain, `*` or `.domain`, "
		    "got %zu", nargs);
	else if (strcmp(name, "*") != 0 && (why = config_check_domain(name[0] ==
	    '.' ? name + 1 : name, name[0] == '.' ? len - 1 : len)) != NULL)
		config_err(p, "route: '%s' is not `*`, a domain or `.domain`: "
		    "%s", config_show(sh, name, len), why);
	else {
		ok = true;
		for (size_t i = 0; i < cfg->nroutes; i++) {
			if (strcasecmp(cfg->routes[i].domain, name) == 0) {
				config_err(p, "route %s is already defined at "
				    "line %u", cfg->routes[i].domain,
				    p->route_line[i]);
				ok = false;
				break;
			}
		}
	}
	cfg->routes = config_grow(cfg->routes, cfg->nroutes,
	    sizeof(*cfg->routes));
	p->route_line = config_grow(p->route_line, cfg->nroutes,
	    sizeof(*p->route_line));
	rt = &cfg->routes[cfg->nroutes];
	memset(rt, 0, sizeof(*rt));
	rt->domain = ok ? config_lower_dup(name, len) : xstrdup("");
	p->route_line[cfg->nroutes] = p->line;
	return cfg->nroutes++;
}

/* At the end of a route block: the options must make sense together. */
static void
close_route(struct config_parser *p, size_t i)
{
	struct config_route *rt = &p->cfg->routes[i];
	unsigned line = p->route_line[i];
	const char *name = rt->domain[0] != '\0' ? rt->domain : "(invalid)";

	if (rt->auth_user != NULL && rt->smarthost == NULL)
		config_err_at(p, p->file, line, "route %s: auth_user needs a "
		    "smarthost (credentials are only sent to a smarthost)",
		    name);
	if (rt->auth_user != NULL && rt->auth_password_file == NULL)
		config_err_at(p, p->file, line, "route %s: auth_user needs "
		    "auth_password_file", name);
	if (rt->auth_user == NULL && rt->auth_password_file != NULL)
		config_err_at(p, p->file, line, "route %s: auth_password_file "
		    "needs auth_user", name);
}

/* Open a listen block: the listener it configures, or SIZE_MAX when the
 * address is invalid (its options are still checked, into a scratch). */
static size_t
open_listen(struct config_parser *p, const struct config_option *o, char **args,
    size_t nargs)
{
	memset(&p->bad_listener, 0, sizeof(p->bad_listener));
	if (nargs != 1) {
		config_err(p, "listen: expects one ADDR:PORT before '{', got "
		    "%zu", nargs);
		return SIZE_MAX;
	}
	return config_apply_listen(p, o, args[0]);
}

static void
push_frame(struct config_parser *p, const struct config_ctx *ctx, size_t dom,
    const char *label)
{
	struct config_frame *f = &p->stack[++p->depth];

	memset(f, 0, sizeof(*f));
	f->ctx = ctx;
	f->dom = dom;
	f->line = p->line;
	f->seen = ctx != NULL ? xcalloc(ctx->nopts, sizeof(unsigned)) : NULL;
	util_strlcpy(f->label, label, sizeof(f->label));
}

static void
pop_frame(struct config_parser *p)
{
	struct config_frame *f = &p->stack[p->depth];

	ASSERT(p->depth > 0);
	if (f->ctx != NULL && f->ctx->kind == CTX_DOMAIN)
		close_domain(p, f->dom);
	if (f->ctx != NULL && f->ctx->kind == CTX_ROUTE)
		close_route(p, f->dom);
	free(f->seen);
	f->seen = NULL;
	p->depth--;
}

static const struct config_option *
find_option(const struct config_ctx *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->nopts; i++)
		if (strcmp(ctx->opts[i].name, name) == 0)
			return &ctx->opts[i];
	return NULL;
}

/* Report an unknown option name in ctx, with the most useful hint. */
static void
unknown_option(struct config_parser *p, const struct config_ctx *ctx,
    const char *name)
{
	const char *near;
	char sh[96];

	config_show(sh, name, strlen(name));
	for (size_t i = 0; i < nitems(config_ctxs); i++) {
		if (config_ctxs[i] == ctx ||
		    find_option(config_ctxs[i], name) == NULL)
			continue;
		if (config_ctxs[i]->kind == CTX_TOP)
			config_err(p, "option '%s' is not allowed in a %s (it "
			    "is a top-level option)", sh, ctx->what);
		else
			config_err(p, "option '%s' is only allowed in a %s", sh,
			    config_ctxs[i]->what);
		return;
	}
	near = config_suggest(name, &ctx->opts[0].name, ctx->nopts,
	    sizeof(ctx->opts[0]));
	config_err(p, "unknown option '%s'%s%s%s%s%s", sh,
	    ctx->kind == CTX_TOP ? "" : " in ",
	    ctx->kind == CTX_TOP ? "" : ctx->what,
	    near ? " (did you mean '" : "", near ? near : "",
	    near ? "'?)" : "");
}

/* One statement (no braces) in the innermost frame. */
static void
statement(struct config_parser *p, char **t, size_t n)
{
	struct config_frame *f = &p->stack[p->depth];
	const struct config_option *o;

	if (f->ctx == NULL)
		return;    /* inside a block that could not be opened */
	if ((o = find_option(f->ctx, t[0])) == NULL) {
		unknown_option(p, f->ctx, t[0]);
		return;
	}
	if (o->block != NULL && o->type != T_LISTEN) {
		config_err(p, "'%s' opens a block: %s %s", o->name, o->name,
		    o->arg);
		return;
	}
	config_apply_option(p, f, o, t + 1, n - 1);
}

/* "name args... {" (inner == NULL) or "name args... { inner }". */
static void
open_block(struct config_parser *p, char **t, size_t n, char **inner,
    size_t ninner, bool oneline)
{
	struct config_frame *f = &p->stack[p->depth];
	const struct config_option *o = NULL;
	char label[300];

	if (f->ctx == NULL) {
		if (!oneline)
			f->skip_depth++;
		return;
	}
	if ((o = find_option(f->ctx, t[0])) == NULL)
		unknown_option(p, f->ctx, t[0]);
	else if (o->block == NULL)
		config_err(p, "option '%s' does not take a block", o->name);
	else if (p->depth >= CONFIG_MAX_DEPTH)
		config_err(p, "blocks nested more than %d deep",
		    CONFIG_MAX_DEPTH);
	if (o == NULL || o->block == NULL || p->depth >= CONFIG_MAX_DEPTH) {
		/* Skip to the matching '}' so it does not look stray. */
		if (!oneline)
			push_frame(p, NULL, 0, t[0]);
		return;
	}
	snprintf(label, sizeof(label), "%s%s%s", o->name, n > 1 ? " " : "",
	    n > 1 ? t[1] : "");
	ASSERT(o->type == T_DOMAIN || o->type == T_ROUTE ||
	    o->type == T_LISTEN);
	if (o->type == T_LISTEN)
		push_frame(p, o->block, open_listen(p, o, t + 1, n - 1), label);
	else
		push_frame(p, o->block, o->type == T_ROUTE ?
		    open_route(p, t + 1, n - 1) : open_domain(p, t + 1, n - 1),
		    label);
	if (oneline) {
		if (ninner > 0)
			statement(p, inner, ninner);
		pop_frame(p);
	}
}

static void
close_block(struct config_parser *p)
{
	struct config_frame *f = &p->stack[p->depth];

	if (p->depth == 0) {
		config_err(p, "unexpected '}' (no block is open)");
		return;
	}
	if (f->ctx == NULL && f->skip_depth > 0) {
		f->skip_depth--;
		return;
	}
	pop_frame(p);
}

/* Whether c ends an unquoted word; a closing quote must be followed by
 * one of these too. */
static bool
ends_word(char c)
{
	return config_is_space(c) || c == '\r' || c == '#' || c == '{' ||
	    c == '}';
}

/* The quoted string opening at s[*ip] into buf at *op; both advance past
 * it. -1 after reporting why it is not one. */
static int
tokenize_quoted(struct config_parser *p, const char *s, size_t len,
    size_t *ip, char *buf, size_t *op)
{
	size_t i = *ip + 1, o = *op;

	for (;; i++) {
		if (i >= len) {
			config_err(p, "unterminated quoted string");
			return -1;
		}
		if (s[i] == '"')
			break;
		if (s[i] == '\\') {
			if (i + 1 < len && (s[i + 1] == '"' || s[i + 1] == '\\')) {
				buf[o++] = s[++i];
				continue;
			}
			config_err(p, "invalid escape in quoted string (only "
			    "\\\" and \\\\ are allowed)");
			return -1;
		}
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t') {
			config_err(p, "control character in quoted string");
			return -1;
		}
		buf[o++] = s[i];
	}
	i++;    /* the closing quote */
	if (i < len && !ends_word(s[i])) {
		config_err(p, "missing space after quoted string");
		return -1;
	}
	*ip = i;
	*op = o;
	return 0;
}

/* The word starting at s[*ip] into buf at *op, as tokenize_quoted(). */
static int
tokenize_word(struct config_parser *p, const char *s, size_t len,
    size_t *ip, char *buf, size_t *op)
{
	size_t i = *ip, o = *op;

	while (i < len && !ends_word(s[i])) {
		if (s[i] == '"') {
			config_err(p, "unexpected '\"' inside a word (quote "
			    "the whole value)");
			return -1;
		}
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f) {
			config_err(p, "control character in line");
			return -1;
		}
		buf[o++] = s[i++];
	}
	*ip = i;
	*op = o;
	return 0;
}

/*
 * Tokenizer: words, "quoted strings" with \" and \\, the braces { and },
 * and '#' comments outside quotes. Tokens are written NUL-terminated into
 * buf (2 * len + 2 bytes, enough for every token and terminator). A brace
 * is recorded as the one-character token "{" / "}" with braces[i] set, so
 * a quoted "{" stays an ordinary value. Returns the token count, or -1
 * after reporting the error (the line is then skipped).
 */
static long
tokenize(struct config_parser *p, const char *s, size_t len, char *buf,
    char **tok, bool *braces)
{
	size_t i = 0, o = 0;
	long n = 0;

	while (i < len) {
		char c = s[i];

		if (config_is_space(c) || c == '\r') {
			i++;
			continue;
		}
		if (c == '#')
			break;
		if (n >= CONFIG_MAX_TOKENS) {
			config_err(p, "too many values on one line (more than "
			    "%d)", CONFIG_MAX_TOKENS);
			return -1;
		}
		tok[n] = buf + o;
		braces[n] = false;
		if (c == '{' || c == '}') {
			buf[o++] = c;
			braces[n] = true;
			i++;
		} else if (c == '"') {
			if (tokenize_quoted(p, s, len, &i, buf, &o) == -1)
				return -1;
		} else if (tokenize_word(p, s, len, &i, buf, &o) == -1) {
			return -1;
		}
		buf[o++] = '\0';
		n++;
	}
	return n;
}

static void
parse_line(struct config_parser *p, const char *s, size_t len, char *buf,
    char **tok, bool *br)
{
	long nl = tokenize(p, s, len, buf, tok, br);
	size_t n, open = SIZE_MAX, nopen = 0, nclose = 0;

	if (nl <= 0)
		return;
	n = (size_t)nl;
	for (size_t i = 0; i < n; i++) {
		if (br[i] && tok[i][0] == '{') {
			nopen++;
			if (open == SIZE_MAX)
				open = i;
		} else if (br[i]) {
			nclose++;
		}
	}
	if (nopen == 0 && nclose == 0) {
		statement(p, tok, n);
	} else if (br[0] && tok[0][0] == '}') {
		if (n != 1)
			config_err(p, "'}' must be alone on its line");
		else
			close_block(p);
	} else if (nopen == 0) {
		config_err(p, "unexpected '}' (a block ends with '}' alone on "
		    "its line)");
	} else if (open == 0) {
		config_err(p, "'{' must follow an option on the same line");
	} else if (nopen > 1) {
		config_err(p, "only one '{' per line");
	} else if (open == n - 1 && nclose == 0) {
		open_block(p, tok, open, NULL, 0, false);
	} else if (nclose == 1 && br[n - 1] && tok[n - 1][0] == '}') {
		open_block(p, tok, open, tok + open + 1, n - open - 2, true);
	} else {
		config_err(p, "'{' must end the line (or the block must close "
		    "with '}' at the end of the same line)");
	}
}

static void
parse_text(struct config_parser *p, const char *text, size_t len)
{
	struct config_lines it = { .text = text, .len = len };
	char **tok = xcalloc(CONFIG_MAX_TOKENS, sizeof(*tok));
	bool *br = xcalloc(CONFIG_MAX_TOKENS, sizeof(*br));
	char *buf = xmalloc(2 * CONFIG_LINE_MAX + 2);
	const char *line;
	size_t llen;

	while (config_next_line(&it, &line, &llen)) {
		p->line = it.no;
		if (llen > CONFIG_LINE_MAX) {
			config_err(p, "line too long (more than %d bytes)",
			    CONFIG_LINE_MAX);
			continue;
		}
		if (memchr(line, '\0', llen) != NULL) {
			config_err(p, "NUL byte in line");
			continue;
		}
		parse_line(p, line, llen, buf, tok, br);
	}
	/* Blocks left open at the end of the file. */
	while (p->depth > 0) {
		struct config_frame *f = &p->stack[p->depth];

		config_err_at(p, p->file, f->line, "block '%s' is never closed "
		    "(missing '}')", f->label);
		pop_frame(p);
	}
	free(buf);
	free(br);
	free(tok);
}

/*
 * Loading
 */

const char *
config_default_text(void)
{
	return config_default_text_data;
}

struct config *
config_load_text(const char *name, const char *text, size_t len,
    unsigned flags, const struct config_file_source *src, char **errors)
{
	struct config_parser p = { 0 };
	char cwd[CONFIG_PATH_MAX + 1];
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->source = xstrdup(name);
	p.cfg = cfg;
	p.file = cfg->source;
	p.flags = flags;
	p.src = src;
	if (getcwd(cwd, sizeof(cwd)) != NULL && cwd[0] == '/')
		p.cwd = cwd;
	p.stack[0].ctx = config_ctxs[CTX_TOP];
	p.stack[0].seen = xcalloc(p.stack[0].ctx->nopts, sizeof(unsigned));
	parse_text(&p, text, len);
	config_finish(&p);
	free(p.stack[0].seen);
	free(p.domain_line);
	free(p.route_line);
	free(p.pend);
	cfg->warnings = p.warnings.s;
	if (p.nerrors > 0) {
		config_free(&cfg);
		if (errors != NULL)
			*errors = p.errors.s;
		else
			free(p.errors.s);
		return NULL;
	}
	free(p.errors.s);
	return cfg;
}

struct config *
config_load(const char *path, char **errors)
{
	struct config *cfg;
	size_t len;
	char *text;

	if (errors != NULL)
		*errors = NULL;
	if (path == NULL) {
		const char *t = config_default_text();

		return config_load_text(CONFIG_DEFAULT_NAME, t, strlen(t), 0,
		    NULL, errors);
	}
	if (config_read_file(path, CONFIG_FILE_MAX, &text, &len) == -1) {
		if (errors != NULL)
			*errors = xasprintf("%s: cannot read: %s\n", path,
			    errno == EFBIG ? "file too large" :
			    strerror(errno));
		return NULL;
	}
	cfg = config_load_text(path, text, len, 0, NULL, errors);
	free(text);
	return cfg;
}

struct config *
config_load_buffer(const char *name, const char *text, size_t len,
    unsigned flags, char **errors)
{
	if (errors != NULL)
		*errors = NULL;
	if (len > CONFIG_FILE_MAX) {
		if (errors != NULL)
			*errors = xasprintf("%s: cannot read: file too large\n",
			    name);
		return NULL;
	}
	return config_load_text(name, text, len, flags, NULL, errors);
}
