/*
 * config_int.h - what the files of the configuration loader share (see
 * config.h for the interface). Private to src/conf/config*.c and the
 * fuzzers; nothing else includes it.
 *
 * The loader is one module split along its seams:
 *
 *   config_options.c   the option tables (one row per option) and the
 *                      listener defaults
 *   config_parse.c     the tokenizer and the line grammar, blocks, error
 *                      reports, config_load()
 *   config_apply.c     applying an option's values to the configuration;
 *                      defaults and cross-checks at the end of the file
 *   config_value.c     value syntax: names, domains, numbers, addresses,
 *                      networks, paths; message helpers
 *   config_files.c     the users, aliases, passwd and password files
 *   config_doc.c       the generated reference (tern config-doc)
 *   config_lookup.c    lookups in a loaded configuration, config_free();
 *                      it does not include this header
 */
#ifndef TERN_CONFIG_INT_H
#define TERN_CONFIG_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

#define CONFIG_DEFAULT_NAME "(default)"
#define CONFIG_LINE_MAX 16384          /* bytes per line, any file */
#define CONFIG_FILE_MAX (16u << 20)    /* the configuration file */
#define CONFIG_LIST_FILE_MAX (512u << 20) /* users and aliases files */
#define CONFIG_MAX_ERRORS 100          /* then "too many errors" */
#define CONFIG_MAX_DEPTH 4             /* nested blocks */
#define CONFIG_MAX_TOKENS 4096         /* per line */
#define CONFIG_MAX_RELAY_NETWORKS 4096
#define CONFIG_MAX_DOMAINS 10000 /* domain lookups are linear */
#define CONFIG_MAX_ROUTES 10000  /* route lookups are linear */
#define CONFIG_SECRET_FILE_MAX 4096    /* a password file */
#define CONFIG_MAX_TARGETS 1024        /* per alias, before expansion */
#define CONFIG_PATH_MAX 4096           /* absolute paths, PATH_MAX */
#define CONFIG_HOSTNAME_MAX 253        /* RFC 1035 2.3.4, without final dot */
#define CONFIG_LABEL_MAX 63            /* RFC 1035 2.3.4 */
#define CONFIG_LOCAL_MAX 64            /* RFC 5321 4.5.3.1.1 */
#define CONFIG_USER_MAX 32             /* useradd's limit */
#define CONFIG_PASSWD_MAX 100000       /* users in passwd_file */
#define CONFIG_PASSWD_ADDRS_MAX 1024   /* addresses per passwd user */

/*
 * Option table
 */

enum config_opt_type {
	T_HOSTNAME,   /* a domain name */
	T_USER,       /* a system user name */
	T_PATH,       /* made absolute at load */
	T_LISTEN,     /* ADDR:PORT, repeatable */
	T_ADDRPORT,   /* one ADDR:PORT, kept as text */
	T_CIDRS,      /* networks, lists accumulate */
	T_SIZE,       /* bytes with K/M/G suffix, uint64_t */
	T_UINT,       /* unsigned */
	T_DURATION,   /* seconds with s/m/h/d suffix, unsigned */
	T_ENUM,       /* one of names[], stored as its index */
	T_DOMAIN,     /* opens a domain block */
	T_MAILBOXES,  /* names appended to the domain */
	T_USERS,      /* users file: path, read at load */
	T_ALIASES,    /* aliases file: path, read at load */
	T_MAILDIR,    /* path pattern with %d %u %% */
	T_ROUTE,      /* opens a route block */
	T_SMARTHOST,  /* HOST[:PORT] or [HOST][:PORT] */
	T_AUTH_USER,  /* a SASL user name, printable */
	T_SECRET,     /* password file: path, read at load */
	T_SOCKET,     /* path of a UNIX socket, made absolute, or none */
	T_PASSWD,     /* passwd_file: path, read at load */
};

enum config_ctx_kind { CTX_TOP, CTX_DOMAIN, CTX_ROUTE, CTX_LISTEN };

struct config_option;

struct config_ctx {
	enum config_ctx_kind kind;
	const char *what;              /* "top level", "domain block" */
	const struct config_option *opts;
	size_t nopts;
};

struct config_option {
	const char *name;
	enum config_opt_type type;
	const char *arg;       /* value syntax for the docs */
	const char *def;       /* default, in the file's own syntax; NULL: none
	                        * or computed (then def_doc says how) */
	const char *def_doc;
	uint64_t min, max;     /* bounds of T_SIZE, T_UINT, T_DURATION */
	bool repeat;           /* may be given more than once */
	size_t off;            /* into struct config, config_domain or
	                        * config_route */
	const char *const *names; /* T_ENUM values */
	const struct config_ctx *block;  /* options inside the block it opens */
	const char *doc;
};

#define KIB 1024ULL

/*
 * The option tables, indexed by enum config_ctx_kind (the order of the
 * reference): top level, domain, route and listen blocks.
 */
#define CONFIG_NCTX 4
extern const struct config_ctx *const config_ctxs[CONFIG_NCTX];

/* Every listener's options before its block (if any) is read. */
void config_listener_defaults(struct config_listener *l);
/* The keyword of a listener's auth setting, for messages. */
const char *config_listener_auth_name(unsigned auth);

/*
 * Parser state
 */

struct config_sbuf {
	char *s;
	size_t len, cap;
};

struct config_pending {
	size_t dom;            /* index into cfg->domains */
	const char *alias;     /* name, owned by the config */
	const char *target;    /* NULL: the alias definition itself */
	const char *file;      /* the aliases file, owned by the config */
	unsigned line;
};

struct config_frame {
	const struct config_ctx *ctx; /* NULL: skipping a block that could
	                               * not be opened */
	size_t dom;            /* CTX_DOMAIN: index into cfg->domains */
	unsigned line;         /* where the block opened */
	unsigned *seen;        /* per option: line where first set, or 0 */
	unsigned skip_depth;   /* nested blocks inside a skipped one */
	char label[300];       /* "domain example.org", for messages */
};

/*
 * Where the loader gets the users, aliases and passwd files a
 * configuration names: the file system (NULL), or a fuzzer's stand-in
 * with config_read_file()'s contract.
 */
struct config_file_source {
	int (*read)(void *arg, const char *path, size_t max, char **out,
	    size_t *len);
	void *arg;
};

struct config_parser {
	struct config *cfg;
	const char *file;      /* name in messages */
	unsigned line;
	const char *cwd;       /* NULL if getcwd() failed */
	struct config_sbuf errors, warnings;
	size_t nerrors;
	/* stack[0] is the top level; real blocks nest up to CONFIG_MAX_DEPTH,
	 * and one frame more skips a block that could not be opened (blocks
	 * inside a skipped one only count skip_depth). */
	struct config_frame stack[CONFIG_MAX_DEPTH + 2];
	size_t depth;
	unsigned listen_line[CONFIG_MAX_LISTENERS];
	struct config_listener bad_listener; /* options of an invalid listen */
	unsigned relay_line;   /* first relay_networks line, 0 if none */
	unsigned relay_none_line;
	unsigned *domain_line; /* per domain: where its block opened */
	unsigned *route_line;  /* per route: where its block opened */
	size_t alias_errors;   /* errors found reading aliases files */
	struct config_pending *pend;
	size_t npend;
	unsigned flags;        /* CONFIG_LOAD_* */
	const struct config_file_source *src; /* NULL: the file system */
};

/* Iterates over the lines of (text, len) (config_next_line()). */
struct config_lines {
	const char *text;
	size_t len, pos;
	unsigned no;
};

/*
 * config_parse.c
 */

/* config_load_buffer() reading the files it names through src (NULL: the
 * file system). */
struct config *config_load_text(const char *name, const char *text,
    size_t len, unsigned flags, const struct config_file_source *src,
    char **errors);

/* Record an error at the current line, or at (file, line) (line 0: no
 * line), or a warning (also logged). Errors past CONFIG_MAX_ERRORS are
 * counted but not shown. */
void config_err(struct config_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void config_err_at(struct config_parser *p, const char *file, unsigned line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void config_warn_at(struct config_parser *p, const char *file,
    unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * config_apply.c
 */

/* Apply option o of frame f with its values; reports every problem. */
void config_apply_option(struct config_parser *p, struct config_frame *f,
    const struct config_option *o, char **args, size_t nargs);
/* Add a listener; returns its index, or SIZE_MAX after reporting why
 * not. Every listener starts with the listen block's defaults. */
size_t config_apply_listen(struct config_parser *p,
    const struct config_option *o, const char *arg);
/* End of the file: defaults, computed values, cross-checks. */
void config_finish(struct config_parser *p);

/*
 * config_files.c
 */

/* Read a whole file (at most max bytes) into a NUL-terminated buffer.
 * Returns -1 with errno; EFBIG if it is too large. */
int config_read_file(const char *path, size_t max, char **out, size_t *len);
/* The next line (without "\n" or "\r\n"); false at the end. */
bool config_next_line(struct config_lines *it, const char **line,
    size_t *llen);
/* Read the users file at path (absolute) into domain d's mailboxes. */
void config_read_users(struct config_parser *p, struct config_domain *d,
    const char *path);
/* Read the aliases file at path into domain dom's aliases; their
 * targets are checked by config_finish(). */
void config_read_aliases(struct config_parser *p, size_t dom,
    const char *path);
/* Read a route's auth_password_file. */
void config_read_secret(struct config_parser *p,
    const struct config_option *o, struct config_route *rt,
    const char *path);
/* Read passwd_file into cfg->passwd, sorted by name. */
void config_read_passwd(struct config_parser *p,
    const struct config_option *o, const char *path);

/*
 * config_value.c
 */

/* Make room for element n of an array grown one at a time. */
void *config_grow(void *arr, size_t n, size_t size);
void config_sbuf_vaddf(struct config_sbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
void config_sbuf_addf(struct config_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A value quoted for a message into buf; returns buf. */
const char *config_show(char buf[96], const char *s, size_t len);
/* The closest of names (count n, stride bytes apart) to word if it is a
 * plausible typo, or NULL. */
const char *config_suggest(const char *word, const char *const *names,
    size_t n, size_t stride);
/* NULL if (s, len) is a valid mailbox name / LDH domain, else why not. */
const char *config_check_local(const char *s, size_t len);
const char *config_check_domain(const char *s, size_t len);
/* NULL if the maildir pattern is well formed, else why not (maybe
 * written into why). */
const char *config_check_maildir(const char *pat, char *why,
    size_t whysize);
/* Decimal digits only, at most 20, no overflow. */
bool config_parse_digits(const char *s, size_t len, uint64_t *v);
/* The value of a T_SIZE, T_DURATION or T_UINT option; false if
 * malformed or overflowing. */
bool config_parse_number(enum config_opt_type type, const char *s,
    uint64_t *v);
/* A bound or default of o printed the way a person writes it. */
void config_fmt_bound(const struct config_option *o, char *buf, size_t size,
    uint64_t v);
bool config_parse_listen(const char *s, struct sockaddr_storage *ss,
    socklen_t *slen);
bool config_parse_cidr(const char *s, struct config_cidr *c);
bool config_is_space(char c);
void config_trim(const char **s, size_t *len);
char *config_lower_dup(const char *s, size_t len);

/* Parent directory of an absolute, normalised path. Caller frees. */
char *config_path_parent(const char *abs);

#endif
