/*
 * config.h - tern's configuration: the parsed file and its option table.
 *
 * The file is a small line grammar (docs/configuration.md):
 *
 *     # comment
 *     hostname mail.example.org
 *     listen 127.0.0.1:2525
 *     listen [::1]:2525
 *     max_message_size 25M
 *     domain localhost {
 *         mailbox postmaster
 *         users ./var/users
 *         maildir ./var/mail/%d/%u
 *     }
 *
 * Each option is one row of a table (name, type, default, bounds, doc);
 * the reference in docs/configuration.md is generated from that table by
 * `tern config-doc`, so code and documentation cannot drift apart.
 *
 * Relative paths are resolved against the working directory when the
 * configuration is loaded; the structure holds only absolute paths.
 */
#ifndef TERN_CONFIG_H
#define TERN_CONFIG_H

#include "conf/local_lookup.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTENERS 32
/* sizeof(sun_path) on Linux: a socket path has at most 107 bytes. */
#define CONFIG_SOCKET_PATH_MAX 108

enum config_bare_newline {
	CONFIG_BARE_NEWLINE_NORMALIZE, /* bare CR/LF become CRLF; never end DATA */
	CONFIG_BARE_NEWLINE_REJECT,    /* message refused with 550 5.5.2 */
};

/* Per-listener options (`listen ADDR:PORT { ... }`); T_ENUM fields are
 * stored as the index of their name, so the values below are fixed. */
enum config_listener_tls {
	CONFIG_LISTENER_TLS_NONE = 0,      /* plaintext only */
	CONFIG_LISTENER_TLS_STARTTLS = 1,  /* offer STARTTLS (RFC 3207) */
	CONFIG_LISTENER_TLS_IMPLICIT = 2,  /* TLS from the first byte (RFC 8314) */
};

enum config_listener_auth {
	CONFIG_LISTENER_AUTH_NO = 0,       /* no AUTH */
	CONFIG_LISTENER_AUTH_YES = 1,      /* AUTH offered */
	CONFIG_LISTENER_AUTH_REQUIRED = 2, /* submission: MAIL needs AUTH */
};

struct config_listener {
	char text[80];                 /* as written, e.g. "[::1]:2525" */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	enum config_listener_tls tls;  /* parsed and stored; TLS is the lead's */
	enum config_listener_auth auth;
	unsigned auth_plaintext;       /* 0 no, 1 yes: AUTH without TLS */
	unsigned receive;              /* 1: local domains from anyone */
	unsigned relay_networks;       /* 1: relay_networks clients may relay */
	unsigned relay_auth;           /* 1: authenticated users may relay */
};

/* One line of passwd_file: "user:hash[:addresses]". */
struct config_passwd {
	char *name;            /* SASL authcid, as written (matched exactly) */
	char *hash;            /* crypt(3) hash: $y$ (yescrypt), $6$ (SHA-512) */
	char **addresses;      /* lower case; "@domain" is any address there */
	size_t naddresses;
};

struct config_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};


/*
 * A `route DOMAIN { ... }` block: how mail for foreign domains matching
 * DOMAIN leaves (route.h decides which block applies). domain is "*"
 * (every foreign domain), "example.com" (that domain only) or
 * ".example.com" (its subdomains only), lower case.
 */
#define CONFIG_AUTH_MAX 255      /* user name and password, RFC 4616 2 */

/* A route's require_tls. */
enum config_route_tls {
	CONFIG_ROUTE_TLS_DEFAULT, /* "no": the top-level relay_tls */
	CONFIG_ROUTE_TLS_ENCRYPT, /* "yes" */
	CONFIG_ROUTE_TLS_VERIFY,  /* "verify" */
};

/* relay_tls: outbound TLS levels, in increasing strength. */
enum config_relay_tls {
	CONFIG_RELAY_TLS_NO,
	CONFIG_RELAY_TLS_MAY,
	CONFIG_RELAY_TLS_ENCRYPT,
	CONFIG_RELAY_TLS_VERIFY,
};

enum config_tls_version {
	CONFIG_TLS_1_2,
	CONFIG_TLS_1_3,
};

struct config_route {
	char *domain;
	char *smarthost;         /* as written, or NULL: the recipient
	                          * domain's MX hosts */
	char *smarthost_host;    /* host name or IP address, no brackets */
	unsigned smarthost_port; /* 25 unless given */
	bool smarthost_mx;       /* no brackets and a name: MX lookup of it */
	bool smarthost_ip;       /* smarthost_host is an IP address */
	char *auth_user;         /* NULL: no AUTH */
	char *auth_password_file;
	char *auth_password;     /* read at load; never logged, zeroed on free */
	unsigned require_tls;    /* enum config_route_tls */
	unsigned auth_plaintext; /* 0 no, 1 yes: AUTH without TLS allowed */
};

struct config {
	char *source;          /* file name, or "(default)" */
	char *warnings;        /* "file:line: reason\n" lines, or NULL; also logged */
	char *hostname;
	struct config_listener listeners[CONFIG_MAX_LISTENERS];
	size_t nlisteners;
	char *spool_dir;       /* absolute */
	uint64_t spool_segment_size;   /* bytes per segment of the log */
	uint64_t spool_inline_max;     /* larger bodies go to spool/big/ */
	char *log_file;        /* absolute or NULL */
	char *user_smtp;       /* used only when started as root */
	char *user_queue;
	char *user_relay;      /* the outbound delivery process */
	char *chroot_dir;      /* empty directory for the smtp process (root) */
	char *submit_socket;   /* absolute; NULL: no local submission (none) */
	char *submit_group;    /* NULL: every local user may submit */

	struct config_cidr *relay_networks;
	size_t nrelay_networks;

	struct config_domain *domains;
	size_t ndomains;
	/* the same domains sorted by name, for config_find_domain(); a
	 * configuration built by hand (tests) must fill it too */
	struct local_domains domain_index;

	struct config_route *routes;   /* in file order; route.h matches */
	size_t nroutes;

	uint64_t max_message_size;     /* bytes, advertised in SIZE */
	unsigned max_recipients;       /* per transaction; more get 452 */
	unsigned max_received_headers; /* more Received: fields: a loop */
	unsigned max_connections;      /* in total */
	unsigned max_connections_per_ip;
	unsigned client_ipv6_prefix;   /* IPv6 clients counted per this prefix */
	unsigned max_errors;           /* per session, then 421 and close */
	unsigned max_junk_commands;    /* NOOP, RSET, ... per session, then 421 */
	unsigned timeout_greeting;     /* seconds to complete HELO/EHLO */
	unsigned timeout_command;      /* seconds for each command line, RFC 5321 4.5.3.2.7 */
	unsigned timeout_data;         /* seconds of message data budget */
	unsigned min_data_rate;        /* bytes/s that keep the budget; 0: none */
	unsigned delivery_workers;     /* local delivery threads in the queue process */
	enum config_bare_newline bare_newline;
	char *resolver;                /* "ADDR:PORT" as written, or NULL: system */
	unsigned allow_loopback_mx;    /* 0 no, 1 yes: a loopback MX is a route */
	unsigned relay_port;           /* TCP port of mail exchangers (25) */
	unsigned max_relay_connections;            /* outbound jobs in flight */
	unsigned max_relay_connections_per_domain; /* ... to one domain */
	unsigned relay_connection_reuse_time;      /* seconds an idle one waits */
	unsigned retry_min;            /* seconds: first back-off step */
	unsigned retry_max;            /* seconds: back-off cap */
	unsigned max_queue_lifetime;   /* seconds, then deferred mail fails */
	char *tls_certificate;         /* PEM chain, absolute, or NULL */
	char *tls_key;                 /* PEM key, absolute, or NULL */
	unsigned tls_min_version;      /* enum config_tls_version */
	char *tls_ca_file;             /* absolute */
	unsigned relay_tls;            /* enum config_relay_tls */

	/* AUTH for clients (RFC 4954): the credentials are read at load */
	char *passwd_file;             /* absolute, or NULL: no AUTH */
	struct config_passwd *passwd;  /* sorted by name */
	size_t npasswd;
	unsigned auth_max_failures;    /* per client IP, then 421 and throttle */
	unsigned auth_throttle_time;   /* seconds: throttle and failure window */
	unsigned auth_failure_delay;   /* seconds: first 535 delay, doubling */
	unsigned auth_check_from;      /* 0 no, 1 yes: From: must be the user's */
	unsigned delay_warning_time;   /* seconds deferred before a delay DSN; 0 none */
	uint64_t dsn_max_return_size;  /* octets of a bounced message returned */
};

/*
 * Load a configuration. path == NULL loads the embedded default.
 * On error every problem is appended to *errors as "file:line: reason\n"
 * (caller frees) and NULL is returned. The result is freed with
 * config_free(&cfg).
 * errors may be NULL; otherwise *errors is overwritten: NULL on success.
 * Warnings (a missing users file, a domain without postmaster) do not fail
 * the load: they are logged with log_warn() and kept in cfg->warnings.
 */
struct config *config_load(const char *path, char **errors);
void config_free(struct config **cfg);

/* config_load_buffer() flag: check the users, aliases, passwd and
 * password files a configuration names as paths, but never read them. */
#define CONFIG_LOAD_NO_FILES 0x1u

/*
 * config_load() of a configuration in memory: len bytes (no terminator
 * needed; a NUL byte is an error, as in a file), called name in
 * messages. flags: 0 or CONFIG_LOAD_NO_FILES (fuzzers, syntax checks).
 */
struct config *config_load_buffer(const char *name, const char *text,
    size_t len, unsigned flags, char **errors);

/* The embedded default configuration's text (what `make run` serves). */
const char *config_default_text(void);

/* Write the option reference as Markdown (docs/configuration.md). */
void config_write_doc(FILE *out);

/*
 * Names of all options in the table, top level first, then the options of
 * a domain block, then those of a route block; NULL when i is past the
 * end. For tests and tooling.
 */
const char *config_option_name(size_t i);

/* The default of a top-level option as written in the table ("./var/spool"
 * for spool), or NULL if it has none or is computed. */
const char *config_option_default(const char *name);

/* Look up a local domain (ASCII case-insensitive); NULL if not local. */
const struct config_domain *config_find_domain(const struct config *cfg,
    const char *domain, size_t len);

/*
 * cwd joined with path (unless path is absolute), "." and ".." resolved
 * lexically, as the loader makes paths absolute; NULL if longer than
 * PATH_MAX. Caller frees. For readers of the file that do not load it
 * whole (tern sendmail).
 */
char *config_path_absolute(const char *cwd, const char *path);

/* submit_socket's default for an absolute, normalised spool directory:
 * submit.sock next to it. Caller frees. */
char *config_default_submit_socket(const char *spool_dir);
/* The passwd_file entry of a SASL user name (exact match), or NULL. */
const struct config_passwd *config_find_passwd(const struct config *cfg,
    const char *name, size_t len);

/* true if the user may use addr (a formatted envelope address, or one
 * from a header) as sender: one of its addresses, or in one of its
 * "@domain" wildcards; ASCII case-insensitive. */
bool config_passwd_owns(const struct config_passwd *u, const char *addr,
    size_t len);

/* A listener with every option at its default: for sessions whose
 * transport names no listener (tests, fuzzers). */
const struct config_listener *config_default_listener(void);

/* true if addr falls in one of relay_networks. */
bool config_is_relay_client(const struct config *cfg,
    const struct sockaddr *addr);

/*
 * Path of a recipient's Maildir, expanded from the pattern into buf.
 * user is a mailbox name as stored in the config (lower case). Returns 0,
 * or -1 if user is not a safe path component or buf is too small.
 */
int config_maildir_path(const struct config_domain *d, const char *user,
    char *buf, size_t bufsize);

#endif
