/*
 * config_files.c - the files a configuration names, read when it is
 * loaded: users (mailbox names), aliases, passwd_file (AUTH users) and a
 * route's auth_password_file (see config_int.h; formats in
 * docs/configuration.md).
 *
 * They are read with the loader's privileges (root in production),
 * before the processes that use them are confined. Every byte in them
 * is checked: each problem is reported as "file:line: reason", like the
 * configuration's own.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config_int.h"
#include "lib/util.h"


int
config_read_file(const char *path, size_t max, char **out, size_t *len)
{
	FILE *f = fopen(path, "re");
	struct stat st;
	char *buf;
	size_t n;

	if (f == NULL)
		return -1;
	if (fstat(fileno(f), &st) == -1) {
		int e = errno;

		fclose(f);
		errno = e;
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		fclose(f);
		errno = EISDIR;
		return -1;
	}
	buf = xmalloc(max + 1 < 65536 ? max + 1 : 65536);
	n = 0;
	for (size_t cap = max + 1 < 65536 ? max + 1 : 65536;;) {
		size_t r = fread(buf + n, 1, cap - n, f);

		n += r;
		if (r == 0)
			break;
		if (n > max) {
			free(buf);
			fclose(f);
			errno = EFBIG;
			return -1;
		}
		if (n == cap) {
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			buf = xreallocarray(buf, cap, 1);
		}
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		errno = EIO;
		return -1;
	}
	fclose(f);
	buf = xreallocarray(buf, n + 1, 1);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

bool
config_next_line(struct config_lines *it, const char **line, size_t *llen)
{
	const char *nl;
	size_t n;

	if (it->pos >= it->len)
		return false;
	nl = memchr(it->text + it->pos, '\n', it->len - it->pos);
	n = nl != NULL ? (size_t)(nl - (it->text + it->pos)) :
	    it->len - it->pos;
	*line = it->text + it->pos;
	*llen = n;
	it->pos += n + (nl != NULL);
	it->no++;
	if (n > 0 && (*line)[n - 1] == '\r')
		(*llen)--;     /* files edited on other systems */
	return true;
}

/* A users, aliases or passwd file: from the file system, or from the
 * loader's stand-in source (fuzzers). */
static int
read_list(struct config_parser *p, const char *path, char **text,
    size_t *len)
{
	if (p->src != NULL)
		return p->src->read(p->src->arg, path, CONFIG_LIST_FILE_MAX,
		    text, len);
	return config_read_file(path, CONFIG_LIST_FILE_MAX, text, len);
}

/* users file: one name per line, '#' starts a comment; anything after the
 * first ':' is reserved for a password hash (AUTH) and ignored for now. */
void
config_read_users(struct config_parser *p, struct config_domain *d,
    const char *path)
{
	struct config_lines it = { 0 };
	const char *line;
	size_t llen;
	char *text;

	if (read_list(p, path, &text, &it.len) == -1) {
		if (errno == ENOENT)
			config_warn_at(p, p->file, p->line, "users file %s "
			    "does not exist; domain %s has only its inline "
			    "mailboxes", path, d->name);
		else
			config_err(p, "users: cannot read %s: %s", path,
			    errno == EFBIG ? "file too large" :
			    strerror(errno));
		return;
	}
	it.text = text;
	while (config_next_line(&it, &line, &llen)) {
		const char *colon = memchr(line, ':', llen);
		const char *hash;
		size_t nlen = colon != NULL ? (size_t)(colon - line) : llen;
		const char *why;
		char sh[96];

		if (llen > CONFIG_LINE_MAX) {
			config_err_at(p, path, it.no, "line too long (more "
			    "than %d bytes)", CONFIG_LINE_MAX);
			continue;
		}
		if ((hash = memchr(line, '#', nlen)) != NULL) {
			nlen = (size_t)(hash - line);
			colon = NULL;     /* all of it is a comment */
		}
		config_trim(&line, &nlen);
		if (nlen == 0) {
			if (colon != NULL)
				config_err_at(p, path, it.no, "missing user "
				    "name before ':'");
			continue;
		}
		if ((why = config_check_local(line, nlen)) != NULL) {
			config_err_at(p, path, it.no, "invalid user name '%s': "
			    "%s", config_show(sh, line, nlen), why);
			continue;
		}
		d->mailboxes = config_grow(d->mailboxes, d->nmailboxes,
		    sizeof(*d->mailboxes));
		d->mailboxes[d->nmailboxes++] = config_lower_dup(line, nlen);
	}
	free(text);
}

static void
add_pending(struct config_parser *p, size_t dom, const char *alias,
    const char *target, const char *file, unsigned line)
{
	p->pend = config_grow(p->pend, p->npend, sizeof(*p->pend));
	p->pend[p->npend++] = (struct config_pending){ dom, alias, target, file,
	    line };
}

/* Check and store one alias target ("user" or "user@domain"); false after
 * reporting why it is not one. */
static bool
add_target(struct config_parser *p, size_t dom, struct config_alias *a,
    const char *t, size_t tlen, const char *path, unsigned lineno)
{
	const char *at = memchr(t, '@', tlen);
	size_t llen = at != NULL ? (size_t)(at - t) : tlen;
	const char *why;
	char sh[96];

	if ((why = config_check_local(t, llen)) == NULL && at != NULL)
		why = config_check_domain(at + 1, tlen - llen - 1);
	if (why != NULL) {
		config_err_at(p, path, lineno, "alias '%s': invalid target "
		    "'%s': %s", a->name, config_show(sh, t, tlen), why);
		return false;
	}
	if (a->ntargets >= CONFIG_MAX_TARGETS) {
		config_err_at(p, path, lineno, "alias '%s': more than %d "
		    "targets", a->name, CONFIG_MAX_TARGETS);
		return false;
	}
	a->targets = config_grow(a->targets, a->ntargets, sizeof(*a->targets));
	a->targets[a->ntargets] = config_lower_dup(t, tlen);
	add_pending(p, dom, a->name, a->targets[a->ntargets], path, lineno);
	a->ntargets++;
	return true;
}

struct alias_line {
	const char *name;
	unsigned line;
	bool bad_target;       /* reported already: not also "no targets" */
};

static int
alias_line_cmp(const void *a, const void *b)
{
	const struct alias_line *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

/* One aliases file being read. */
struct aliases_reader {
	struct config_parser *p;
	size_t dom;
	const char *path;
	struct alias_line *seen;   /* one per alias, in file order */
	size_t nseen;
	struct config_alias *cur;  /* the alias continuation lines add to */
	bool skip_cont;            /* after a bad alias line: stay quiet */
};

/* A line "name: targets" (trimmed, without comment) starts an alias:
 * returns its targets part, or NULL after reporting why it is none. */
static const char *
alias_start(struct aliases_reader *r, const char *line, size_t llen,
    unsigned no, size_t *rlen)
{
	struct config_domain *d = &r->p->cfg->domains[r->dom];
	const char *colon = memchr(line, ':', llen);
	const char *why, *name = line;
	size_t nlen;
	char sh[96];

	r->cur = NULL;
	r->skip_cont = true;
	if (colon == NULL) {
		config_err_at(r->p, r->path, no, "expected 'name: target, "
		    "...'");
		return NULL;
	}
	nlen = (size_t)(colon - line);
	config_trim(&name, &nlen);
	if ((why = config_check_local(name, nlen)) != NULL) {
		config_err_at(r->p, r->path, no, "invalid alias name '%s': %s",
		    config_show(sh, name, nlen), why);
		return NULL;
	}
	r->skip_cont = false;
	d->aliases = config_grow(d->aliases, d->naliases,
	    sizeof(*d->aliases));
	r->cur = &d->aliases[d->naliases++];
	memset(r->cur, 0, sizeof(*r->cur));
	r->cur->name = config_lower_dup(name, nlen);
	r->seen = config_grow(r->seen, r->nseen, sizeof(*r->seen));
	r->seen[r->nseen++] = (struct alias_line){ r->cur->name, no, false };
	add_pending(r->p, r->dom, r->cur->name, NULL, r->path, no);
	*rlen = (size_t)(line + llen - (colon + 1));
	return colon + 1;
}

/* The next item of a comma-separated list (*rest, *rlen), trimmed (it
 * may be empty); false at the end of the list. */
static bool
next_item(const char **rest, size_t *rlen, const char **item, size_t *ilen)
{
	const char *comma;

	if (*rlen == 0)
		return false;
	comma = memchr(*rest, ',', *rlen);
	*item = *rest;
	*ilen = comma != NULL ? (size_t)(comma - *rest) : *rlen;
	*rest += *ilen + (comma != NULL);
	*rlen -= *ilen + (comma != NULL);
	config_trim(item, ilen);
	return true;
}

/* Comma-separated targets of the current alias; empty items (a trailing
 * comma before a continuation line) are skipped. */
static void
alias_targets(struct aliases_reader *r, const char *rest, size_t rlen,
    unsigned no)
{
	const char *t;
	size_t tlen;

	while (next_item(&rest, &rlen, &t, &tlen))
		if (tlen > 0 && !add_target(r->p, r->dom, r->cur, t, tlen,
		    r->path, no))
			r->seen[r->nseen - 1].bad_target = true;
}

/* At the end of the file: aliases without targets, duplicates. The
 * aliases from index first on are this file's, in the order of seen. */
static void
aliases_report(struct aliases_reader *r, size_t first)
{
	const struct config_domain *d = &r->p->cfg->domains[r->dom];
	struct alias_line *seen = r->seen;

	ASSERT(d->naliases - first == r->nseen);
	for (size_t i = first; i < d->naliases; i++) {
		const struct alias_line *l = &seen[i - first];

		ASSERT(l->name == d->aliases[i].name);
		if (d->aliases[i].ntargets == 0 && !l->bad_target)
			config_err_at(r->p, r->path, l->line, "alias '%s' "
			    "has no targets", d->aliases[i].name);
	}
	if (r->nseen > 1)
		qsort(seen, r->nseen, sizeof(*seen), alias_line_cmp);
	for (size_t i = 1; i < r->nseen; i++)
		if (strcmp(seen[i].name, seen[i - 1].name) == 0)
			config_err_at(r->p, r->path, seen[i].line, "duplicate "
			    "alias '%s' (first defined at line %u)",
			    seen[i].name, seen[i - 1].line);
}

/*
 * aliases file: "name: target, target" per line; '#' starts a comment; a
 * line that starts with a blank continues the previous alias's targets.
 * Targets are checked against the local domains once the whole
 * configuration is read (config_finish()), since domains may come later.
 */
void
config_read_aliases(struct config_parser *p, size_t dom, const char *path)
{
	struct aliases_reader r = { .p = p, .dom = dom, .path = path };
	size_t first = p->cfg->domains[dom].naliases;
	struct config_lines it = { 0 };
	const char *line;
	size_t llen;
	char *text;

	if (read_list(p, path, &text, &it.len) == -1) {
		config_err(p, "aliases: cannot read %s: %s", path,
		    errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	it.text = text;
	while (config_next_line(&it, &line, &llen)) {
		const char *hash, *rest;
		size_t rlen;
		bool cont;

		if (llen > CONFIG_LINE_MAX) {
			config_err_at(p, path, it.no, "line too long (more "
			    "than %d bytes)", CONFIG_LINE_MAX);
			r.cur = NULL;
			r.skip_cont = true;
			continue;
		}
		if ((hash = memchr(line, '#', llen)) != NULL)
			llen = (size_t)(hash - line);
		cont = llen > 0 && config_is_space(line[0]);
		config_trim(&line, &llen);
		if (llen == 0)
			continue;
		if (!cont) {
			rest = alias_start(&r, line, llen, it.no, &rlen);
		} else if (r.cur != NULL) {
			rest = line;
			rlen = llen;
		} else {
			/* After a bad alias line, stay quiet. */
			if (!r.skip_cont)
				config_err_at(p, path, it.no, "continuation "
				    "line without an alias before it");
			continue;
		}
		if (rest != NULL)
			alias_targets(&r, rest, rlen, it.no);
	}
	/* The array may have moved: r.cur is not used past this point. */
	aliases_report(&r, first);
	free(r.seen);
	free(text);
}

/*
 * auth_password_file: the password is its first line. Read here, with
 * the loader's privileges (root in production), into memory that is
 * zeroed after use; messages name the file, never its content.
 */
void
config_read_secret(struct config_parser *p, const struct config_option *o,
    struct config_route *rt, const char *path)
{
	char buf[CONFIG_SECRET_FILE_MAX + 1];
	struct stat st;
	size_t n = 0, len;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		config_err(p, "%s: cannot open %s: %s", o->name, path,
		    strerror(errno));
		return;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		config_err(p, "%s: %s is not a regular file", o->name, path);
		close(fd);
		return;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		config_warn_at(p, p->file, p->line, "%s: %s may be read by "
		    "group or others (mode %04o); make it readable by root "
		    "only (chmod 600)", o->name, path,
		    (unsigned)(st.st_mode & 07777));
	while (n < sizeof(buf) &&
	    (r = read(fd, buf + n, sizeof(buf) - n)) != 0) {
		if (r == -1) {
			if (errno == EINTR)
				continue;
			config_err(p, "%s: cannot read %s: %s", o->name, path,
			    strerror(errno));
			close(fd);
			explicit_bzero(buf, sizeof(buf));
			return;
		}
		n += (size_t)r;
	}
	close(fd);
	for (len = 0; len < n && buf[len] != '\n'; len++)
		continue;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (n > CONFIG_SECRET_FILE_MAX || len > CONFIG_AUTH_MAX)
		config_err(p, "%s: the password in %s is longer than %d bytes",
		    o->name, path, CONFIG_AUTH_MAX);
	else if (len == 0)
		config_err(p, "%s: %s holds no password (its first line is "
		    "empty)", o->name, path);
	else if (memchr(buf, '\0', len) != NULL)
		config_err(p, "%s: the password in %s contains a NUL byte",
		    o->name, path);
	else {
		if (rt->auth_password != NULL)
			explicit_bzero(rt->auth_password,
			    strlen(rt->auth_password));
		free(rt->auth_password);
		rt->auth_password = xstrndup(buf, len);
	}
	explicit_bzero(buf, sizeof(buf));
}

/*
 * passwd_file: "user:hash[:addresses]" per line. Read here, with the
 * loader's privileges, so the chrooted smtp process never needs the file.
 */
static int
passwd_cmp(const void *a, const void *b)
{
	return strcmp(((const struct config_passwd *)a)->name,
	    ((const struct config_passwd *)b)->name);
}

/* NULL if (a, alen) is an address a passwd user may own ("a@b", or "@b"
 * for all of domain b), else why not. */
static const char *
passwd_address_why(const char *a, size_t alen)
{
	const char *at = alen > 0 ? memrchr(a, '@', alen) : NULL;
	const char *why;

	if (at == NULL)
		return "not an address (local@domain) or @domain";
	if (at != a && memchr(a, '@', (size_t)(at - a)) != NULL)
		return "more than one '@'";
	if ((why = config_check_domain(at + 1,
	    alen - (size_t)(at - a) - 1)) != NULL)
		return why;
	for (const char *c = a; c < at; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f || *c == ',' ||
		    *c == '<' || *c == '>')
			return "the local part contains a blank, control "
			    "character, ',' or angle bracket";
	return NULL;
}

/* Check and add one address of a passwd user; false after reporting why
 * not. */
static bool
passwd_add_address(struct config_parser *p, const char *path,
    unsigned lineno, struct config_passwd *u, const char *a, size_t alen)
{
	const char *why = passwd_address_why(a, alen);
	char sh[96];

	if (why != NULL) {
		config_err_at(p, path, lineno, "user '%s': address '%s': %s",
		    u->name, config_show(sh, a, alen), why);
		return false;
	}
	if (u->naddresses >= CONFIG_PASSWD_ADDRS_MAX) {
		config_err_at(p, path, lineno, "user '%s': more than %d "
		    "addresses", u->name, CONFIG_PASSWD_ADDRS_MAX);
		return false;
	}
	u->addresses = config_grow(u->addresses, u->naddresses,
	    sizeof(*u->addresses));
	u->addresses[u->naddresses++] = config_lower_dup(a, alen);
	return true;
}

/* The hash of a new passwd user (hlen bytes in the file): one this
 * system's crypt(3) supports, or a locked account ('!' or '*' first,
 * never matches). */
static void
passwd_check_hash(struct config_parser *p, const char *path, unsigned no,
    const struct config_passwd *u, size_t hlen)
{
	int cs;

	if (hlen == 0) {
		config_err_at(p, path, no, "user '%s': no password hash (set "
		    "one with tern passwd)", u->name);
		return;
	}
	if (u->hash[0] == '!' || u->hash[0] == '*')
		return;
	cs = crypt_checksalt(u->hash);
	if (cs == CRYPT_SALT_INVALID || cs == CRYPT_SALT_METHOD_DISABLED)
		config_err_at(p, path, no, "user '%s': not a crypt(3) hash "
		    "this system supports (use $y$ yescrypt or $6$ SHA-512)",
		    u->name);
	else if (cs != CRYPT_SALT_OK)
		config_warn_at(p, path, no, "user '%s': weak or legacy hash "
		    "method; set a new password with tern passwd", u->name);
}

/* The comma-separated addresses field (rest, rlen) of user u. */
static void
passwd_addresses(struct config_parser *p, const char *path, unsigned no,
    struct config_passwd *u, const char *rest, size_t rlen)
{
	size_t nlen = strlen(u->name), alen;
	const char *a;

	while (next_item(&rest, &rlen, &a, &alen))
		if (alen > 0)
			passwd_add_address(p, path, no, u, a, alen);
	/* By default a user may send as its own name, if that is an
	 * address (docs/configuration.md); a name that is not one is no
	 * error, as `tern passwd` accepts it: the user just has no sender
	 * address (warned below). */
	if (u->naddresses == 0 && memchr(u->name, '@', nlen) != NULL &&
	    passwd_address_why(u->name, nlen) == NULL)
		passwd_add_address(p, path, no, u, u->name, nlen);
	if (u->naddresses == 0)
		config_warn_at(p, path, no, "user '%s' has no sender address: "
		    "it can authenticate but only send with MAIL FROM:<>",
		    u->name);
}

/* One line "user:hash[:addresses]" (trimmed, not a comment); false when
 * the file holds too many users and reading stops. */
static bool
passwd_line(struct config_parser *p, const char *path, unsigned no,
    const char *line, size_t llen)
{
	struct config *cfg = p->cfg;
	const char *c1, *c2, *h, *rest;
	size_t nlen, hlen;
	struct config_passwd *u;
	char sh[96];

	if (llen > CONFIG_LINE_MAX) {
		config_err_at(p, path, no, "line too long");
		return true;
	}
	if ((c1 = memchr(line, ':', llen)) == NULL) {
		config_err_at(p, path, no, "expected 'user:hash[:addresses]'");
		return true;
	}
	nlen = (size_t)(c1 - line);
	h = c1 + 1;
	c2 = memchr(h, ':', llen - nlen - 1);
	hlen = c2 != NULL ? (size_t)(c2 - h) : llen - nlen - 1;
	rest = c2 != NULL ? c2 + 1 : line + llen;
	if (nlen == 0 || nlen > CONFIG_AUTH_MAX) {
		config_err_at(p, path, no, "the user name must be 1..%d bytes",
		    CONFIG_AUTH_MAX);
		return true;
	}
	for (size_t i = 0; i < nlen; i++) {
		if ((unsigned char)line[i] <= ' ' || line[i] == 0x7f) {
			config_err_at(p, path, no, "user '%s': blank or "
			    "control character in the name",
			    config_show(sh, line, nlen));
			return true;
		}
	}
	if (cfg->npasswd >= CONFIG_PASSWD_MAX) {
		config_err_at(p, path, no, "more than %d users",
		    CONFIG_PASSWD_MAX);
		return false;
	}
	cfg->passwd = config_grow(cfg->passwd, cfg->npasswd,
	    sizeof(*cfg->passwd));
	u = &cfg->passwd[cfg->npasswd++];
	memset(u, 0, sizeof(*u));
	u->name = xstrndup(line, nlen);
	u->hash = xstrndup(h, hlen);
	passwd_check_hash(p, path, no, u, hlen);
	passwd_addresses(p, path, no, u, rest, (size_t)(line + llen - rest));
	return true;
}

void
config_read_passwd(struct config_parser *p, const struct config_option *o,
    const char *path)
{
	struct config *cfg = p->cfg;
	struct config_lines it = { 0 };
	struct stat st;
	const char *line;
	size_t llen;
	char *text;

	if (read_list(p, path, &text, &it.len) == -1) {
		config_err(p, "%s: cannot read %s: %s", o->name, path,
		    errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	/* The hashes are not the passwords, but they allow offline guessing:
	 * others have no business reading them. */
	if (p->src == NULL && stat(path, &st) == 0 && (st.st_mode & S_IROTH))
		config_warn_at(p, p->file, p->line, "%s: %s is readable by "
		    "everyone (mode %04o); make it readable by root only "
		    "(chmod 600)", o->name, path,
		    (unsigned)(st.st_mode & 07777));
	it.text = text;
	while (config_next_line(&it, &line, &llen)) {
		config_trim(&line, &llen);
		if (llen == 0 || line[0] == '#')
			continue;
		if (!passwd_line(p, path, it.no, line, llen))
			break;
	}
	free(text);
	if (cfg->npasswd > 1)
		qsort(cfg->passwd, cfg->npasswd, sizeof(*cfg->passwd),
		    passwd_cmp);
	for (size_t i = 1; i < cfg->npasswd; i++)
		if (strcmp(cfg->passwd[i].name, cfg->passwd[i - 1].name) == 0)
			config_err_at(p, path, 0, "user '%s' is listed twice",
			    cfg->passwd[i].name);
}
