/*
 * config.c - tern's configuration file: tokenizer, option table, loader,
 * checks and the generated reference (see config.h).
 *
 * The grammar is line based. A line is split into tokens (words, quoted
 * strings, and the braces "{" and "}"), then read as one statement:
 *
 *     name value...              an option of the current context
 *     name value... {            opens a block (a context of its own)
 *     name value... { stmt }     a block with one statement, on one line
 *     }                          closes the innermost block
 *
 * Which options exist, their types, defaults and bounds all come from the
 * option tables below; a block is just an option whose row points to
 * another table. `domain`, `route` and `listen` open blocks (`listen` may
 * also stand alone: `listen 0.0.0.0:25`, or open a per-listener block
 * `listen 0.0.0.0:587 { auth required }`). docs/configuration.md is written from the same tables by
 * config_write_doc(), so the reference cannot drift from the code.
 *
 * Errors never stop the load: each is recorded as "file:line: reason" and
 * the parser goes on with the next line, so an administrator sees every
 * problem at once. Any error makes config_load() return NULL.
 */
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/util.h"

/* Generated into build/gen/config_default.c from etc/default.conf. */
extern const char config_default_text_data[];

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

enum opt_type {
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

enum ctx_kind { CTX_TOP, CTX_DOMAIN, CTX_ROUTE, CTX_LISTEN };

struct option;

struct ctx {
	enum ctx_kind kind;
	const char *what;              /* "top level", "domain block" */
	const struct option *opts;
	size_t nopts;
};

struct option {
	const char *name;
	enum opt_type type;
	const char *arg;       /* value syntax for the docs */
	const char *def;       /* default, in the file's own syntax; NULL: none
	                        * or computed (then def_doc says how) */
	const char *def_doc;
	uint64_t min, max;     /* bounds of T_SIZE, T_UINT, T_DURATION */
	bool repeat;           /* may be given more than once */
	size_t off;            /* into struct config, config_domain or
	                        * config_route */
	const char *const *names; /* T_ENUM values */
	const struct ctx *block;  /* options inside the block it opens */
	const char *doc;
};

#define KIB 1024ULL
#define TOP(f) offsetof(struct config, f)
#define DOM(f) offsetof(struct config_domain, f)
#define RTE(f) offsetof(struct config_route, f)
#define LIS(f) offsetof(struct config_listener, f)

static const char *const bare_newline_names[] = { "normalize", "reject", NULL };
static const char *const no_yes_names[] = { "no", "yes", NULL };
static const char *const require_tls_names[] = { "no", "yes", "verify", NULL };
static const char *const relay_tls_names[] = { "no", "may", "encrypt",
	"verify", NULL };
static const char *const tls_version_names[] = { "TLSv1.2", "TLSv1.3", NULL };
static const char *const tls_names[] = { "none", "starttls", "implicit",
	NULL };
static const char *const auth_names[] = { "no", "yes", "required", NULL };
_Static_assert(sizeof(enum config_bare_newline) == sizeof(unsigned),
    "T_ENUM fields are stored as unsigned");
_Static_assert(sizeof(enum config_listener_tls) == sizeof(unsigned) &&
    sizeof(enum config_listener_auth) == sizeof(unsigned),
    "T_ENUM fields are stored as unsigned");

static const struct option domain_opts[] = {
	{ "mailbox", T_MAILBOXES, "NAME...", NULL, "none", 0, 0, true,
	  DOM(mailboxes), NULL, NULL,
	  "Mailboxes of this domain, listed inline. Repeatable; the lists "
	  "add up, together with the users file. Names are lower-cased; each "
	  "is an RFC 5321 dot-string of at most 64 characters without '@' or "
	  "'/'. Every domain should have `postmaster` (RFC 5321 4.5.1), as a "
	  "mailbox or an alias: tern warns when it is missing." },
	{ "users", T_USERS, "PATH", NULL, "none", 0, 0, false,
	  DOM(users_file), NULL, NULL,
	  "A file listing more mailboxes, one per line (format below). It is "
	  "read when the configuration is loaded. A missing file is only a "
	  "warning, so a configuration can name a file that is created later; "
	  "any other read error is an error." },
	{ "aliases", T_ALIASES, "PATH", NULL, "none", 0, 0, false,
	  DOM(aliases_file), NULL, NULL,
	  "A file of aliases, `name: target, target` (format below), read when "
	  "the configuration is loaded; it must exist. Every target must be a "
	  "mailbox or alias of a local domain, and every alias must expand to "
	  "at least one mailbox without loops: both are checked at load." },
	{ "maildir", T_MAILDIR, "PATTERN", NULL, "SPOOLPARENT/mail/%d/%u",
	  0, 0, false, DOM(maildir), NULL, NULL,
	  "Where each mailbox's Maildir lives. `%d` is the domain, `%u` the "
	  "mailbox name, `%%` a literal `%`; any other `%` escape is an error, "
	  "and the pattern must contain `%u`. The default puts mail in `mail/` "
	  "next to the spool directory (SPOOLPARENT is the spool's parent): "
	  "`./var/mail/%d/%u` for the default spool." },
};

static const struct ctx domain_ctx = {
	CTX_DOMAIN, "domain block", domain_opts, nitems(domain_opts),
};

static const struct option route_opts[] = {
	{ "smarthost", T_SMARTHOST, "HOST[:PORT] | [HOST][:PORT]", NULL,
	  "none: the MX hosts of the recipient's domain", 0, 0, false,
	  RTE(smarthost), NULL, NULL,
	  "Send all mail of this route to one relay host instead of the "
	  "recipient domain's mail exchangers. `[HOST]:PORT` in brackets "
	  "means no MX lookup: tern connects to HOST's own addresses (A and "
	  "AAAA) or to the IP address given (`[192.0.2.25]:587`, "
	  "`[2001:db8::25]:587`), as Postfix's `relayhost` does. `HOST:PORT` "
	  "without brackets looks up HOST's MX records first (RFC 5321 5.1), "
	  "falling back to its addresses; an IPv4 address without brackets is "
	  "used as is; IPv6 addresses need brackets. PORT defaults to 25 "
	  "(587 is the submission port, RFC 6409). Every lookup failure of the "
	  "smarthost defers the mail (a configuration or DNS problem is never "
	  "a reason to bounce). A smarthost may be on this machine (a content "
	  "filter on 127.0.0.1:10025): the MX loop check does not apply, but "
	  "an address and port tern itself listens on is refused." },
	{ "auth_user", T_AUTH_USER, "NAME", NULL, "none: no AUTH", 0, 0,
	  false, RTE(auth_user), NULL, NULL,
	  "Authenticate to the smarthost as NAME (RFC 4954 AUTH, with PLAIN, "
	  "RFC 4616, preferred, or LOGIN) after EHLO and before MAIL. Needs "
	  "`smarthost` and `auth_password_file`. A 5xx reply to AUTH (535: "
	  "wrong credentials) fails the recipients permanently with the "
	  "server's reply, since only the administrator can fix it; a 4xx "
	  "defers them; a smarthost that offers neither PLAIN nor LOGIN "
	  "defers them with 4.7.0. Credentials are only ever sent to the "
	  "smarthost of their own route. At most 255 bytes, no control "
	  "characters." },
	{ "auth_password_file", T_SECRET, "PATH", NULL, "none", 0, 0, false,
	  RTE(auth_password_file), NULL, NULL,
	  "A file holding the password for `auth_user` on its first line "
	  "(a final newline is ignored; at most 255 bytes, no NUL). It is read "
	  "once, when the configuration is loaded (by root, before privileges "
	  "drop), so it can and should be readable by root only "
	  "(`chmod 600`): tern warns when group or others may read it. The "
	  "password never appears in the main configuration, in messages or "
	  "in logs." },
	{ "require_tls", T_ENUM, "no|yes|verify", "no", NULL, 0, 0, false,
	  RTE(require_tls), require_tls_names, NULL,
	  "With `yes`, mail of this route is only ever sent over TLS "
	  "(STARTTLS, RFC 3207): a server that does not offer STARTTLS, refuses "
	  "it or fails the handshake counts as unreachable (the next MX is "
	  "tried, then the mail is deferred with 4.7.10); nothing is sent in "
	  "clear text. With `verify`, the server's certificate must also chain "
	  "to `tls_ca_file` and match the smarthost's or MX host's name (RFC "
	  "6125; for a smarthost given as an IP address, that address). `no` "
	  "leaves the route at the top-level `relay_tls` level." },
	{ "auth_plaintext", T_ENUM, "no|yes", "no", NULL, 0, 0, false,
	  RTE(auth_plaintext), no_yes_names, NULL,
	  "With `yes`, `auth_user`'s credentials may be sent over a connection "
	  "without TLS (a smarthost on loopback or on a trusted link). With "
	  "`no`, AUTH waits for STARTTLS, and a smarthost that does not offer "
	  "TLS gets no password: the mail is deferred with 4.7.10." },
};

static const struct ctx route_ctx = {
	CTX_ROUTE, "route block", route_opts, nitems(route_opts),
};

/*
 * Options of a `listen ADDR:PORT { ... }` block. Their defaults are set by
 * listener_defaults() for every listener, with or without a block; the
 * `def` strings below must say the same (test_config checks it).
 */
static const struct option listen_opts[] = {
	{ "tls", T_ENUM, "none|starttls|implicit", "starttls", NULL, 0, 0,
	  false, LIS(tls), tls_names, NULL,
	  "TLS on this listener: `starttls` offers STARTTLS (RFC 3207) once "
	  "TLS certificates are configured, `implicit` speaks TLS from the "
	  "first byte (port 465, RFC 8314), `none` never offers TLS." },
	{ "auth", T_ENUM, "no|yes|required", "no", NULL, 0, 0, false,
	  LIS(auth), auth_names, NULL,
	  "SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, checked "
	  "against `passwd_file` (which `yes` and `required` need). `yes` "
	  "offers AUTH; `required` makes this a submission listener (RFC "
	  "6409): MAIL before a successful AUTH gets `530 5.7.0 "
	  "Authentication required`, and every message gets `Date:` and "
	  "`Message-ID:` fields when it lacks them (RFC 6409 8.3, 8.6; also "
	  "done for authenticated sessions on `auth yes` listeners)." },
	{ "auth_plaintext", T_ENUM, "no|yes", "no", NULL, 0, 0, false,
	  LIS(auth_plaintext), no_yes_names, NULL,
	  "Whether AUTH is offered and accepted on a connection without TLS. "
	  "With `no`, EHLO does not advertise AUTH before TLS is active and "
	  "the AUTH command gets `538 5.7.11 Encryption required for "
	  "requested authentication mechanism` (RFC 4954 6): passwords never "
	  "cross the network in clear text. `yes` is for trusted networks "
	  "and tests only." },
	{ "receive", T_ENUM, "no|yes", "yes", NULL, 0, 0, false,
	  LIS(receive), no_yes_names, NULL,
	  "Accept mail for the local domains from anyone (an MX listener). "
	  "With `no`, only clients allowed to relay (authenticated users, "
	  "or `relay_networks` clients when that is allowed here) may send "
	  "to local domains too; others get 554 5.7.1." },
	{ "relay_networks", T_ENUM, "no|yes", "yes", NULL, 0, 0, false,
	  LIS(relay_networks), no_yes_names, NULL,
	  "Whether clients in the top-level `relay_networks` may relay "
	  "(send to foreign domains) on this listener without AUTH." },
	{ "relay_auth", T_ENUM, "no|yes", "yes", NULL, 0, 0, false,
	  LIS(relay_auth), no_yes_names, NULL,
	  "Whether an authenticated user may relay to any domain on this "
	  "listener. Unauthenticated clients outside `relay_networks` never "
	  "relay, whatever the listener says." },
};

static const struct ctx listen_ctx = {
	CTX_LISTEN, "listen block", listen_opts, nitems(listen_opts),
};

static void
listener_defaults(struct config_listener *l)
{
	l->tls = CONFIG_LISTENER_TLS_STARTTLS;
	l->auth = CONFIG_LISTENER_AUTH_NO;
	l->auth_plaintext = 0;
	l->receive = 1;
	l->relay_networks = 1;
	l->relay_auth = 1;
}

static const struct option top_opts[] = {
	{ "hostname", T_HOSTNAME, "HOSTNAME", NULL,
	  "the system's host name (gethostname())", 0, 0, false, TOP(hostname),
	  NULL, NULL,
	  "The name tern gives itself in its greeting, in EHLO replies and in "
	  "Received: headers. Use the fully qualified name that the server's "
	  "address resolves to." },
	{ "listen", T_LISTEN, "ADDR:PORT [{ ... }]", "127.0.0.1:2525", NULL,
	  0, 0, true, 0, NULL, &listen_ctx,
	  "An address and port to accept SMTP connections on: IPv4 "
	  "`192.0.2.1:25`, or IPv6 in brackets `[2001:db8::1]:25`; "
	  "`0.0.0.0:25` and `[::]:25` mean every address. Repeatable, up to 32 "
	  "listeners; the default applies only when none is given. Host names "
	  "are not accepted (no DNS at start-up). A block after the address "
	  "sets that listener's own policy (TLS, AUTH, who may relay): see "
	  "the options of a listen block below. Without a block a listener "
	  "takes their defaults: an MX listener that relays only for "
	  "`relay_networks`." },
	{ "spool", T_PATH, "PATH", "./var/spool", NULL, 0, 0, false,
	  TOP(spool_dir), NULL, NULL,
	  "The queue directory, owned by the queue process. Created if "
	  "missing." },
	{ "log_file", T_PATH, "PATH", NULL, "none: log to stderr only", 0, 0,
	  false, TOP(log_file), NULL, NULL,
	  "Also append every log line to this file. Lines always go to "
	  "stderr as well. SIGHUP reopens it by name in every process (after "
	  "logrotate has moved it away)." },
	{ "user_smtp", T_USER, "USER", "tern-smtp", NULL, 0, 0, false,
	  TOP(user_smtp), NULL, NULL,
	  "The unprivileged user of the network-facing smtp process. Used "
	  "only when tern is started as root; otherwise every process runs "
	  "as the user who started tern." },
	{ "user_queue", T_USER, "USER", "tern", NULL, 0, 0, false,
	  TOP(user_queue), NULL, NULL,
	  "The user of the queue process, which owns the spool and writes the "
	  "Maildirs. Used only when tern is started as root." },
	{ "user_relay", T_USER, "USER", "tern-relay", NULL, 0, 0, false,
	  TOP(user_relay), NULL, NULL,
	  "The unprivileged user of the relay process, which delivers to "
	  "other servers. Used only when tern is started as root." },
	{ "chroot", T_PATH, "PATH", NULL,
	  "SPOOL/../empty (a directory `empty` next to the spool)", 0, 0, false,
	  TOP(chroot_dir), NULL, NULL,
	  "An empty directory the smtp and relay processes are chrooted "
	  "into when tern starts as root." },
	{ "submit_socket", T_SOCKET, "PATH | none", NULL,
	  "SPOOL/../submit.sock (`./var/submit.sock` for the default spool)",
	  0, 0, false, TOP(submit_socket), NULL, NULL,
	  "The local submission socket of `tern sendmail` (and of the same "
	  "binary run as `sendmail`). The parent process creates it at start "
	  "(replacing a stale socket, never another kind of file, and "
	  "refusing to start while another tern answers on it) with mode "
	  "0666, so every local user may submit, as with Postfix's default "
	  "`authorized_submit_users`; its directory is created if missing "
	  "(mode 0755). The smtp process accepts on it and runs the normal "
	  "SMTP engine with relaying allowed: a local program may send to any "
	  "domain. The peer's uid, gid and pid come from the kernel "
	  "(SO_PEERCRED), are logged and end up in the `Received:` header "
	  "(`from localhost (uid 1000)`). At most 107 bytes (the limit of a "
	  "socket address). `none` disables local submission." },
	{ "submit_group", T_USER, "GROUP", NULL,
	  "none: every local user may submit", 0, 0, false, TOP(submit_group),
	  NULL, NULL,
	  "Only members of this group (and root) may use `submit_socket`: "
	  "the socket is created with mode 0660 and this group, so the kernel "
	  "refuses everyone else's `tern sendmail` (exit 77, EX_NOPERM), as "
	  "Postfix's `authorized_submit_users` does. Applied when tern starts "
	  "as root; the group must exist." },
	{ "relay_networks", T_CIDRS, "CIDR...", "127.0.0.0/8 ::1/128", NULL,
	  0, 0, true, 0, NULL, NULL,
	  "Clients in these networks may relay: send to domains that are not "
	  "local. Everyone else may only send to local domains, so tern is "
	  "never an open relay. IPv4 `10.0.0.0/8` and IPv6 `2001:db8::/32`; a "
	  "bare address is a /32 or /128; host bits past the prefix are "
	  "ignored. IPv4 clients that arrive as IPv4-mapped IPv6 addresses "
	  "(`::ffff:10.1.2.3`) match IPv4 networks. Repeatable, the lists add "
	  "up (at most 4096 networks); the default applies only when the "
	  "option is absent. `relay_networks none` lets no client relay." },
	{ "max_message_size", T_SIZE, "SIZE", "25M", NULL, 1 * KIB,
	  4 * KIB * KIB * KIB, false, TOP(max_message_size), NULL, NULL,
	  "The largest message accepted, in bytes. Advertised in the EHLO "
	  "reply (SIZE, RFC 1870), enforced at MAIL FROM and again while the "
	  "message arrives (552 5.3.4)." },
	{ "max_recipients", T_UINT, "N", "100", NULL, 1, 10000, false,
	  TOP(max_recipients), NULL, NULL,
	  "Accepted RCPT commands per transaction, duplicates included (a "
	  "duplicate gets one copy but counts); more get 452 4.5.3 "
	  "(RFC 5321 4.5.3.1.10)." },
	{ "max_received_headers", T_UINT, "N", "100", NULL, 1, 1000, false,
	  TOP(max_received_headers), NULL, NULL,
	  "A message that already carries more `Received:` fields than this is "
	  "in a mail loop (RFC 5321 6.3): refused at the end of DATA with "
	  "554 5.4.6, or, if it was accepted, failed with a report; never "
	  "relayed or delivered. Exim uses 100, Postfix 50." },
	{ "max_connections", T_UINT, "N", "256", NULL, 1, 65535, false,
	  TOP(max_connections), NULL, NULL,
	  "Simultaneous SMTP sessions in total; further connections get "
	  "421 4.7.0 and are closed." },
	{ "max_connections_per_ip", T_UINT, "N", "20", NULL, 1, 65535, false,
	  TOP(max_connections_per_ip), NULL, NULL,
	  "Simultaneous sessions from one client (an IPv4 address, an IPv6 "
	  "network of `client_ipv6_prefix` bits; for the local "
	  "submit_socket: one user, by peer uid); further "
	  "connections get 421 4.7.0 and are closed." },
	{ "client_ipv6_prefix", T_UINT, "BITS", "64", NULL, 16, 128, false,
	  TOP(client_ipv6_prefix), NULL, NULL,
	  "IPv6 clients are told apart by this many leading bits of their "
	  "address, for `max_connections_per_ip` and the AUTH failure "
	  "throttle: one host usually holds a whole /64 and can take a new "
	  "address for every connection. 128 counts each address alone. "
	  "IPv4 clients (also IPv4-mapped IPv6 ones) count by address." },
	{ "max_errors", T_UINT, "N", "10", NULL, 1, 1000, false,
	  TOP(max_errors), NULL, NULL,
	  "Error replies one session may earn before tern answers 421 4.7.0 "
	  "and closes it, to shed clients that probe or misbehave." },
	{ "max_junk_commands", T_UINT, "N", "100", NULL, 1, 1000000, false,
	  TOP(max_junk_commands), NULL, NULL,
	  "Commands that move no mail one session may send: NOOP, RSET, "
	  "HELP, VRFY, a HELO or EHLO after the first (of the session, or "
	  "after STARTTLS), and RCPT refused 452 for too many recipients. "
	  "The next one is answered 421 4.7.0 and the session closed, so a "
	  "client cannot hold a connection forever with commands that cost "
	  "nothing (Postfix's `smtpd_junk_command_limit`). Each message "
	  "queued starts the count again." },
	{ "timeout_greeting", T_DURATION, "DURATION", "300s", NULL, 1,
	  3600, false, TOP(timeout_greeting), NULL, NULL,
	  "How long a new client has, after tern's 220 greeting (or after "
	  "STARTTLS), to complete its EHLO or HELO command; then 421 4.4.2 "
	  "and close. A deadline: octets that trickle in do not extend it, "
	  "nor do other commands. Mirrors the 5 minutes a client waits for "
	  "a greeting (RFC 5321 4.5.3.2.1)." },
	{ "timeout_command", T_DURATION, "DURATION", "300s", NULL, 1, 3600,
	  false, TOP(timeout_command), NULL, NULL,
	  "How long the client has to send each complete command line, "
	  "counted from the end of the one before (or from tern's reply, "
	  "when tern had to wait for the queue); then 421 4.4.2 and close. "
	  "A deadline: a line that trickles in an octet at a time does not "
	  "extend it. RFC 5321 4.5.3.2.7 says a server SHOULD wait at least "
	  "5 minutes." },
	{ "timeout_data", T_DURATION, "DURATION", "180s", NULL, 1, 3600, false,
	  TOP(timeout_data), NULL, NULL,
	  "How long tern waits for message data (DATA content, or a BDAT "
	  "transaction from its first BDAT to the end of its last chunk) "
	  "when nothing arrives. Octets that arrive extend the wait by the "
	  "time they take at `min_data_rate`, never beyond `timeout_data` "
	  "from now, so a large message on a slow but steady link is not cut "
	  "off (RFC 5321 4.5.3.2.5), and one that trickles is. Then 421 "
	  "4.4.2 and close." },
	{ "min_data_rate", T_UINT, "BYTES/S", "500", NULL, 0, 1000000000,
	  false, TOP(min_data_rate), NULL, NULL,
	  "The slowest message data tern waits for, in octets per second "
	  "(Postfix's `smtpd_min_data_rate`, same default): each octet buys "
	  "1/`min_data_rate` s of `timeout_data`. A client that sends slower "
	  "runs out of time: at rate r it is cut after at most "
	  "`timeout_data` / (1 - r/`min_data_rate`), with 421 4.4.2. "
	  "0: any rate, `timeout_data` is then the longest pause." },
	{ "delivery_workers", T_UINT, "N", "4", NULL, 1, 64, false,
	  TOP(delivery_workers), NULL, NULL,
	  "Threads in the queue process that write messages into Maildirs." },
	{ "bare_newline", T_ENUM, "normalize|reject", "normalize", NULL, 0, 0,
	  false, TOP(bare_newline), bare_newline_names, NULL,
	  "What to do with a bare LF or bare CR inside message data. Only "
	  "CR LF . CR LF ends a message either way, so no second message can "
	  "be smuggled in (the CVE-2023-51764 class). `normalize` turns each "
	  "bare LF or CR into CR LF; `reject` refuses the message with "
	  "550 5.5.2 once its data has been read." },
	{ "resolver", T_ADDRPORT, "ADDR:PORT", NULL,
	  "none: the system's resolver (/etc/resolv.conf)", 0, 0, false,
	  TOP(resolver), NULL, NULL,
	  "A DNS server to send every query of outbound delivery to (MX, A "
	  "and AAAA lookups), as `192.0.2.53:53` or `[2001:db8::53]:53`. It "
	  "must be a recursive resolver: tern asks with recursion desired "
	  "and follows no referrals. Without it tern uses the name servers of "
	  "/etc/resolv.conf, and resolves from the root itself if that file "
	  "lists none. /etc/hosts is never consulted for mail routing." },
	{ "allow_loopback_mx", T_ENUM, "no|yes", "no", NULL, 0, 0, false,
	  TOP(allow_loopback_mx), no_yes_names, NULL,
	  "Whether an MX host (or implicit MX) whose address is loopback "
	  "(127.0.0.0/8, ::1) is a real destination. With `no`, such a host "
	  "counts as tern itself: RFC 5321 5.1 discards it and every MX of "
	  "equal or higher preference, and when none is left the recipient "
	  "fails (`tern route` reports `loops back to myself`): a DNS mistake "
	  "becomes a clear configuration error, never a mail loop. `yes` is "
	  "for test set-ups whose receiving servers listen on 127.0.0.2, "
	  "127.0.0.3, ... The addresses of this machine's other interfaces "
	  "always count as tern itself." },
	{ "relay_port", T_UINT, "PORT", "25", NULL, 1, 65535, false,
	  TOP(relay_port), NULL, NULL,
	  "The TCP port outbound delivery connects to on each mail "
	  "exchanger. Always 25 on the internet (RFC 5321 4.5.4.2 and "
	  "appendix C); another value is for test set-ups." },
	{ "max_relay_connections", T_UINT, "N", "100", NULL, 1, 10000, false,
	  TOP(max_relay_connections), NULL, NULL,
	  "Outbound delivery jobs (one message, one destination domain, each "
	  "a connection) in flight at once, in total. Further jobs wait in "
	  "a queue per destination and go out as slots free up." },
	{ "max_relay_connections_per_domain", T_UINT, "N", "10", NULL, 1,
	  10000, false, TOP(max_relay_connections_per_domain), NULL, NULL,
	  "Outbound delivery jobs in flight at once to one destination "
	  "domain, so that tern never floods a receiving server and a slow "
	  "destination never holds up the others." },
	{ "relay_connection_reuse_time", T_DURATION, "DURATION", "2s", NULL, 0,
	  300, false, TOP(relay_connection_reuse_time), NULL, NULL,
	  "How long an outbound connection stays open after a delivery, "
	  "waiting to carry the next message to the same server; then it "
	  "says QUIT (logged as `event=conn-close reason=idle`). Short, as "
	  "Postfix's 2 s, so that mail to MX hosts of equal preference "
	  "spreads over them (RFC 5321 5.1): each message picks one of them "
	  "at random and reuses an idle connection only to the host it "
	  "picked. `0` never reuses a connection." },
	{ "retry_min", T_DURATION, "DURATION", "5m", NULL, 1, 86400, false,
	  TOP(retry_min), NULL, NULL,
	  "The wait before the second attempt at a deferred recipient "
	  "(a 4xx reply, a server that cannot be reached, a full disk). "
	  "Each further attempt waits twice as long, up to `retry_max`, "
	  "with up to a tenth of random jitter so that deferred mail does "
	  "not come back in bursts." },
	{ "retry_max", T_DURATION, "DURATION", "4h", NULL, 1, 7 * 86400,
	  false, TOP(retry_max), NULL, NULL,
	  "The longest wait between two attempts at a deferred recipient "
	  "(the cap of the back-off that starts at `retry_min`). A value "
	  "below `retry_min` is raised to it." },
	{ "max_queue_lifetime", T_DURATION, "DURATION", "5d", NULL, 60,
	  60 * 86400, false, TOP(max_queue_lifetime), NULL, NULL,
	  "How long a message may stay in the queue. A recipient that is "
	  "still deferred when its message is older than this fails "
	  "permanently (logged as `event=expired`, status 4.4.7, delivery "
	  "time expired: RFC 3463 3.5)." },
	{ "tls_certificate", T_PATH, "PATH", NULL, "none: no TLS offered",
	  0, 0, false, TOP(tls_certificate), NULL, NULL,
	  "The server certificate in PEM, followed by its intermediate "
	  "certificates (leaf first). With `tls_key`, listeners offer STARTTLS "
	  "(RFC 3207) or speak implicit TLS (RFC 8314), as each listener's "
	  "`tls` says. Read by root at start and on SIGHUP (a new certificate "
	  "applies to new connections; open ones keep theirs)." },
	{ "tls_key", T_PATH, "PATH", NULL, "none", 0, 0, false, TOP(tls_key),
	  NULL, NULL,
	  "The private key of `tls_certificate`, in PEM, unencrypted. Keep it "
	  "readable by root only: tern reads it as root and never from the "
	  "network-facing process (docs/security.md)." },
	{ "tls_min_version", T_ENUM, "TLSv1.2|TLSv1.3", "TLSv1.2", NULL, 0, 0,
	  false, TOP(tls_min_version), tls_version_names, NULL,
	  "The oldest TLS version tern accepts, as a server and as a client "
	  "(RFC 8996 retired TLS 1.0 and 1.1). A client offering less gets a "
	  "failed handshake." },
	{ "tls_ca_file", T_PATH, "PATH", "/etc/ssl/certs/ca-certificates.crt",
	  NULL, 0, 0, false, TOP(tls_ca_file), NULL, NULL,
	  "The CA certificates (PEM bundle) that outbound delivery trusts when "
	  "it verifies a server's certificate (`relay_tls verify`, a route's "
	  "`require_tls verify`). Read at start, before the relay process is "
	  "confined; a missing file trusts nothing." },
	{ "relay_tls", T_ENUM, "no|may|encrypt|verify", "may", NULL, 0, 0,
	  false, TOP(relay_tls), relay_tls_names, NULL,
	  "TLS on outbound connections. `may` (opportunistic, RFC 3207): "
	  "STARTTLS whenever the server offers it, without checking its "
	  "certificate (logged as verified or untrusted); a failed handshake "
	  "makes tern try that server in clear text at its next attempt. "
	  "`encrypt`: TLS or nothing. `verify`: TLS with a certificate that "
	  "chains to `tls_ca_file` and matches the MX host name. `no`: never "
	  "STARTTLS. A route's `require_tls` can raise the level for its "
	  "domains." },
	{ "passwd_file", T_PASSWD, "PATH", NULL, "none: no AUTH", 0, 0,
	  false, TOP(passwd_file), NULL, NULL,
	  "The users who may authenticate (SMTP AUTH on listeners with "
	  "`auth yes` or `auth required`), one per line: "
	  "`user:hash[:addresses]` (format below). Read once, when the "
	  "configuration is loaded, before the smtp process is chrooted; "
	  "tern warns when others may read it. `tern passwd USER FILE` adds "
	  "a user or changes a password. Without it AUTH is never offered." },
	{ "auth_max_failures", T_UINT, "N", "5", NULL, 1, 1000, false,
	  TOP(auth_max_failures), NULL, NULL,
	  "Failed AUTH attempts one client address may make within "
	  "`auth_throttle_time`; the last one is answered `421 4.7.0` and the "
	  "connection closed, and that address's new connections get 421 "
	  "until `auth_throttle_time` has passed." },
	{ "auth_throttle_time", T_DURATION, "DURATION", "10m", NULL, 1, 86400,
	  false, TOP(auth_throttle_time), NULL, NULL,
	  "How long an address stays refused after `auth_max_failures` "
	  "failed AUTH attempts; also how long a failure is remembered (a "
	  "client whose last failure is older starts again from zero)." },
	{ "auth_failure_delay", T_DURATION, "DURATION", "1s", NULL, 0, 60,
	  false, TOP(auth_failure_delay), NULL, NULL,
	  "The delay before the `535 5.7.8` answer to a failed AUTH; it "
	  "doubles with each further failure from the same address, up to 16 "
	  "times this value and never beyond half of `timeout_command`, so "
	  "the client hears its 535 before either side gives up. The session "
	  "waits on a timer, never blocking other clients, and the wait is "
	  "not held against the client's command deadline." },
	{ "auth_check_from", T_ENUM, "no|yes", "yes", NULL, 0, 0, false,
	  TOP(auth_check_from), no_yes_names, NULL,
	  "Whether the addresses of the `From:` header of a message from an "
	  "authenticated user must be among that user's addresses, like its "
	  "envelope sender (always checked). A mismatch gets `553 5.7.1` "
	  "after the message data, and a message without `From:` too." },
	{ "delay_warning_time", T_DURATION, "DURATION", "4h", NULL, 0,
	  60 * 86400, false, TOP(delay_warning_time), NULL, NULL,
	  "How long a recipient may stay deferred before tern warns the "
	  "sender with a delay report (a DSN with `Action: delayed` and "
	  "`Will-Retry-Until`, RFC 3464), once per recipient, unless its "
	  "NOTIFY parameter leaves out DELAY. `0` sends no delay reports. "
	  "See docs/dsn.md." },
	{ "dsn_max_return_size", T_SIZE, "SIZE", "100K", NULL, 0,
	  4 * KIB * KIB * KIB, false, TOP(dsn_max_return_size), NULL, NULL,
	  "How much of a failed message a failure report (bounce) returns to "
	  "its sender when RET=FULL or no RET was given: a longer message is "
	  "cut at a line end after this many bytes (its header always comes "
	  "back whole). `0` returns only the header, like RET=HDRS. Reports "
	  "are sent from `MAILER-DAEMON@` the `hostname` option, which is "
	  "also their Reporting-MTA." },
	{ "domain", T_DOMAIN, "NAME { ... }", NULL, "none", 0, 0, true, 0,
	  NULL, &domain_ctx,
	  "A local domain: tern accepts mail for its mailboxes and aliases and "
	  "delivers it to Maildirs; an unknown user gets 550 5.1.1 at RCPT "
	  "time. The name is lower-cased and must be letters, digits and "
	  "hyphens in dot-separated labels (IDNs as A-labels, `xn--`). "
	  "Repeatable, once per domain. Its options are listed below." },
	{ "route", T_ROUTE, "DOMAIN { ... }", NULL,
	  "none: MX lookup for every foreign domain", 0, 0, true, 0, NULL,
	  &route_ctx,
	  "How mail for foreign (non-local) domains leaves: through a "
	  "smarthost, with optional AUTH credentials and required TLS, or by "
	  "the MX lookup of the recipient's domain (a block without "
	  "`smarthost`). DOMAIN is `*` (every foreign domain: the default "
	  "route), `example.com` (exactly that domain) or `.example.com` (its "
	  "subdomains, not example.com itself). The most specific block wins: "
	  "an exact name, then the longest `.suffix`, then `*`; without any "
	  "match, MX lookup. Address literals (`user@[192.0.2.1]`) only match "
	  "`*`. A route for a local domain is an error. Repeatable, once per "
	  "DOMAIN. Its options are listed below; `tern route ADDRESS` shows "
	  "which route an address takes." },
};

static const struct ctx top_ctx = {
	CTX_TOP, "top level", top_opts, nitems(top_opts),
};

static const struct ctx *const all_ctx[] = { &top_ctx, &domain_ctx,
	&route_ctx, &listen_ctx };

/*
 * Small helpers: growing arrays and strings, error lists
 */

/* Make room for element n of an array grown one at a time: the capacity
 * is the power of two at or above n, so reallocate when n is one. */
static void *
grow(void *arr, size_t n, size_t size)
{
	if (n == 0 || (n & (n - 1)) == 0)
		arr = xreallocarray(arr, n == 0 ? 1 : 2 * n, size);
	return arr;
}

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sbuf_vaddf(struct sbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void sbuf_addf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sbuf_vaddf(struct sbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	ASSERT(n >= 0);
	if (b->len + (size_t)n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		b->s = xreallocarray(b->s, cap, 1);
		b->cap = cap;
	}
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	b->len += (size_t)n;
}

static void
sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sbuf_vaddf(b, fmt, ap);
	va_end(ap);
}

struct pending {
	size_t dom;            /* index into cfg->domains */
	const char *alias;     /* name, owned by the config */
	const char *target;    /* NULL: the alias definition itself */
	const char *file;      /* the aliases file, owned by the config */
	unsigned line;
};

struct frame {
	const struct ctx *ctx; /* NULL: skipping a block we could not open */
	size_t dom;            /* CTX_DOMAIN: index into cfg->domains */
	unsigned line;         /* where the block opened */
	unsigned *seen;        /* per option: line where first set, or 0 */
	unsigned skip_depth;   /* nested blocks inside a skipped one */
	char label[300];       /* "domain example.org", for messages */
};

struct parser {
	struct config *cfg;
	const char *file;      /* name in messages */
	unsigned line;
	char *cwd;             /* NULL if getcwd() failed */
	struct sbuf errors, warnings;
	size_t nerrors;
	/* stack[0] is the top level; real blocks nest up to CONFIG_MAX_DEPTH,
	 * and one frame more skips a block that could not be opened (blocks
	 * inside a skipped one only count skip_depth). */
	struct frame stack[CONFIG_MAX_DEPTH + 2];
	size_t depth;
	unsigned listen_line[CONFIG_MAX_LISTENERS];
	struct config_listener bad_listener; /* options of an invalid listen */
	unsigned relay_line;   /* first relay_networks line, 0 if none */
	unsigned relay_none_line;
	unsigned *domain_line; /* per domain: where its block opened */
	unsigned *route_line;  /* per route: where its block opened */
	size_t alias_errors;   /* errors found reading aliases files */
	struct pending *pend;
	size_t npend;
};

static void perr_vat(struct parser *p, const char *file, unsigned line,
    const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static void perr_at(struct parser *p, const char *file, unsigned line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void perr(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pwarn_at(struct parser *p, const char *file, unsigned line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
perr_vat(struct parser *p, const char *file, unsigned line, const char *fmt,
    va_list ap)
{
	p->nerrors++;
	if (p->nerrors > CONFIG_MAX_ERRORS) {
		if (p->nerrors == CONFIG_MAX_ERRORS + 1)
			sbuf_addf(&p->errors, "%s: too many errors, only the "
			    "first %d are shown\n", p->file, CONFIG_MAX_ERRORS);
		return;
	}
	if (line > 0)
		sbuf_addf(&p->errors, "%s:%u: ", file, line);
	else
		sbuf_addf(&p->errors, "%s: ", file);
	sbuf_vaddf(&p->errors, fmt, ap);
	sbuf_addf(&p->errors, "\n");
}

static void
perr_at(struct parser *p, const char *file, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	perr_vat(p, file, line, fmt, ap);
	va_end(ap);
}

static void
perr(struct parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	perr_vat(p, p->file, p->line, fmt, ap);
	va_end(ap);
}

static void
pwarn_at(struct parser *p, const char *file, unsigned line, const char *fmt,
    ...)
{
	struct sbuf one = { 0 };
	va_list ap;

	va_start(ap, fmt);
	sbuf_vaddf(&one, fmt, ap);
	va_end(ap);
	sbuf_addf(&p->warnings, "%s:%u: %s\n", file, line, one.s);
	log_warn("%s:%u: %s", file, line, one.s);
	free(one.s);
}

/* A value quoted for a message; non-printable bytes as \xNN, long values
 * cut, so a binary file cannot garble the report. */
static const char *
show(char buf[96], const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (o + 8 > 96) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c < 0x20 || c >= 0x7f) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return buf;
}

/* Levenshtein distance, for "did you mean"; names are short. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= nitems(row) || lb >= nitems(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The closest of names (count n, stride bytes apart) to word, if close
 * enough to be a plausible typo; NULL otherwise. */
static const char *
suggest(const char *word, const char *const *names, size_t n, size_t stride)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX, limit = strlen(word) / 3;

	if (limit < 1)
		limit = 1;
	if (limit > 3)
		limit = 3;
	for (size_t i = 0; i < n; i++) {
		const char *name = *(const char *const *)(const void *)
		    ((const char *)names + i * stride);
		size_t d = edit_distance(word, name);

		if (d <= limit && d < bestd) {
			best = name;
			bestd = d;
		}
	}
	return best;
}

/*
 * Value checks
 */

static bool
is_atext(int c)
{
	/* RFC 5321 4.1.2 atext, ASCII only (names in files are ASCII). */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* NULL if (s, len) is a valid mailbox name, else why not. */
static const char *
check_local(const char *s, size_t len)
{
	if (len == 0)
		return "empty name";
	if (len > CONFIG_LOCAL_MAX)
		return "longer than 64 characters (RFC 5321 4.5.3.1.1)";
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '@')
			return "contains '@'";
		if (s[i] == '/')
			return "contains '/' (names are used in Maildir paths)";
		if (s[i] == '.') {
			if (i == 0 || i == len - 1 || s[i - 1] == '.')
				return "has a leading, trailing or double '.'";
			continue;
		}
		if (!is_atext((unsigned char)s[i]))
			return "contains a character not allowed in a "
			       "dot-string (RFC 5321 4.1.2)";
	}
	return NULL;
}

/* NULL if (s, len) is a valid LDH domain name, else why not. */
static const char *
check_domain(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0)
		return "empty name";
	if (len > CONFIG_HOSTNAME_MAX)
		return "longer than 253 characters";
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';

		if (c == '.') {
			if (label == 0)
				return "has an empty label";
			if (s[i - 1] == '-')
				return "has a label ending in '-'";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-'))
			return "may only contain letters, digits, '-' and '.'";
		if (c == '-' && label == 0)
			return "has a label starting with '-'";
		if (++label > CONFIG_LABEL_MAX)
			return "has a label longer than 63 characters";
	}
	return NULL;
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
 * Join cwd and path and normalise "." and ".." lexically; NULL if the
 * result would exceed CONFIG_PATH_MAX. ".." is taken lexically (the parent
 * of the name, not of a symlink's target), which is what "SPOOL/../empty"
 * means in the documentation.
 */
static char *
path_absolute(const char *cwd, const char *path)
{
	char out[CONFIG_PATH_MAX + 1];
	size_t o = 0;
	const char *parts[2] = { path[0] == '/' ? "" : cwd, path };

	for (size_t k = 0; k < 2; k++) {
		const char *s = parts[k];

		while (*s != '\0') {
			const char *e;
			size_t n;

			while (*s == '/')
				s++;
			e = s;
			while (*e != '\0' && *e != '/')
				e++;
			n = (size_t)(e - s);
			if (n == 0 || (n == 1 && s[0] == '.')) {
				/* nothing */
			} else if (n == 2 && s[0] == '.' && s[1] == '.') {
				while (o > 0 && out[o - 1] != '/')
					o--;
				if (o > 0)
					o--;  /* the slash */
			} else {
				if (o + 1 + n > CONFIG_PATH_MAX)
					return NULL;
				out[o++] = '/';
				memcpy(out + o, s, n);
				o += n;
			}
			s = e;
		}
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	return xstrdup(out);
}

/* Parent directory of an absolute, normalised path. */
static char *
path_parent(const char *abs)
{
	const char *slash = strrchr(abs, '/');

	if (slash == NULL || slash == abs)
		return xstrdup("/");
	return xstrndup(abs, (size_t)(slash - abs));
}

char *
config_path_absolute(const char *cwd, const char *path)
{
	return path_absolute(cwd, path);
}

char *
config_default_submit_socket(const char *spool_dir)
{
	char *parent = path_parent(spool_dir);
	char *path = xasprintf("%s%ssubmit.sock", parent,
	    strcmp(parent, "/") == 0 ? "" : "/");

	free(parent);
	return path;
}

/* An absolute copy of path, or NULL after reporting why not. */
static char *
resolve_path(struct parser *p, const char *opt, const char *path)
{
	char *abs;

	if (path[0] == '\0') {
		perr(p, "%s: empty path", opt);
		return NULL;
	}
	if (path[0] != '/' && p->cwd == NULL) {
		perr(p, "%s: cannot resolve relative path '%s': the working "
		    "directory is unknown", opt, path);
		return NULL;
	}
	if ((abs = path_absolute(p->cwd, path)) == NULL)
		perr(p, "%s: path longer than %d bytes", opt, CONFIG_PATH_MAX);
	return abs;
}

static bool
parse_digits(const char *s, size_t len, uint64_t *v)
{
	uint64_t x = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (x > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return true;
}

/* A number with an optional one-letter unit from units (multipliers in
 * mult, same order); false if malformed or overflowing. */
static bool
parse_scaled(const char *s, const char *units, const uint64_t *mult,
    uint64_t *v)
{
	size_t len = strlen(s);
	uint64_t m = 1, x;
	const char *u;

	if (len > 1 && (u = strchr(units, s[len - 1])) != NULL) {
		m = mult[u - units];
		len--;
	}
	if (!parse_digits(s, len, &x) || (x != 0 && m > UINT64_MAX / x))
		return false;
	*v = x * m;
	return true;
}

static const char size_units[] = "KkMmGg";
static const uint64_t size_mult[] = { KIB, KIB, KIB * KIB, KIB * KIB,
	KIB * KIB * KIB, KIB * KIB * KIB };
static const char duration_units[] = "smhd";
static const uint64_t duration_mult[] = { 1, 60, 3600, 86400 };

/* Bounds and defaults printed the way a person would write them. */
static void
fmt_size(char *buf, size_t size, uint64_t v)
{
	static const char suffix[] = "GMK";
	static const uint64_t div[] = { KIB * KIB * KIB, KIB * KIB, KIB };

	for (size_t i = 0; i < nitems(div); i++) {
		if (v != 0 && v % div[i] == 0) {
			snprintf(buf, size, "%llu%c",
			    (unsigned long long)(v / div[i]), suffix[i]);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void
fmt_duration(char *buf, size_t size, uint64_t v)
{
	static const char suffix[] = "dhm";
	static const uint64_t div[] = { 86400, 3600, 60 };

	for (size_t i = 0; i < nitems(div); i++) {
		if (v != 0 && v % div[i] == 0) {
			snprintf(buf, size, "%llu%c",
			    (unsigned long long)(v / div[i]), suffix[i]);
			return;
		}
	}
	snprintf(buf, size, "%llus", (unsigned long long)v);
}

static void
fmt_bound(const struct option *o, char *buf, size_t size, uint64_t v)
{
	if (o->type == T_SIZE)
		fmt_size(buf, size, v);
	else if (o->type == T_DURATION)
		fmt_duration(buf, size, v);
	else
		snprintf(buf, size, "%llu", (unsigned long long)v);
}

static bool
parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *slen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hs;
	size_t hlen;
	uint64_t port;
	int family;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return false;
		hs = s + 1;
		hlen = (size_t)(close - hs);
		colon = close + 1;
		family = AF_INET6;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return false;
		hs = s;
		hlen = (size_t)(colon - s);
		if (memchr(hs, ':', hlen) != NULL)
			return false;   /* IPv6 needs brackets */
		family = AF_INET;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, hs, hlen);
	host[hlen] = '\0';
	if (!parse_digits(colon + 1, strlen(colon + 1), &port) || port == 0 ||
	    port > 65535)
		return false;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return false;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*slen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return false;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*slen = sizeof(*sin6);
	}
	return true;
}

static bool
parse_cidr(const char *s, struct config_cidr *c)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned bits;
	uint64_t prefix;

	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(c, 0, sizeof(*c));
	if (strchr(host, ':') != NULL) {
		if (inet_pton(AF_INET6, host, c->addr) != 1)
			return false;
		c->family = AF_INET6;
		bits = 128;
	} else {
		if (inet_pton(AF_INET, host, c->addr) != 1)
			return false;
		c->family = AF_INET;
		bits = 32;
	}
	prefix = bits;
	if (slash != NULL && (!parse_digits(slash + 1, strlen(slash + 1),
	    &prefix) || prefix > bits || strlen(slash + 1) > 3))
		return false;
	c->prefix = (unsigned)prefix;
	/* Keep only the network part, so matching compares whole bytes. */
	for (unsigned i = 0; i < bits / 8; i++) {
		unsigned lo = i * 8;

		if (lo >= c->prefix)
			c->addr[i] = 0;
		else if (lo + 8 > c->prefix)
			c->addr[i] &= (uint8_t)(0xff00u >> (c->prefix - lo));
	}
	return true;
}

/* NULL if the maildir pattern is well formed, else why not. */
static const char *
check_maildir(const char *pat, char *why, size_t whysize)
{
	bool has_user = false;

	for (const char *s = pat; *s != '\0'; s++) {
		if (*s != '%')
			continue;
		s++;
		if (*s == 'u')
			has_user = true;
		else if (*s == '\0')
			return "the pattern ends with a lone '%'";
		else if (*s != 'd' && *s != '%') {
			char c[96];

			snprintf(why, whysize, "unknown escape '%%%s' (use %%d, "
			    "%%u or %%%%)", show(c, s, 1));
			return why;
		}
	}
	if (!has_user)
		return "the pattern must contain %u (the mailbox name)";
	return NULL;
}

/*
 * Reading users and aliases files
 */

/* Read a whole file (at most max bytes) into a NUL-terminated buffer.
 * Returns -1 with errno; EFBIG if it is too large. */
static int
read_file(const char *path, size_t max, char **out, size_t *len)
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

/* Iterate over the lines of (text, len): returns false at the end. */
struct lines {
	const char *text;
	size_t len, pos;
	unsigned no;
};

static bool
next_line(struct lines *it, const char **line, size_t *llen)
{
	const char *nl;
	size_t n;

	if (it->pos >= it->len)
		return false;
	nl = memchr(it->text + it->pos, '\n', it->len - it->pos);
	n = nl != NULL ? (size_t)(nl - (it->text + it->pos)) : it->len - it->pos;
	*line = it->text + it->pos;
	*llen = n;
	it->pos += n + (nl != NULL);
	it->no++;
	if (n > 0 && (*line)[n - 1] == '\r')
		(*llen)--;     /* files edited on other systems */
	return true;
}

static bool
is_space(char c)
{
	return c == ' ' || c == '\t';
}

static void
trim(const char **s, size_t *len)
{
	while (*len > 0 && is_space(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_space((*s)[*len - 1]))
		(*len)--;
}

static char *
lower_dup(const char *s, size_t len)
{
	char *r = xstrndup(s, len);

	util_ascii_lower(r);
	return r;
}

/* users file: one name per line, '#' starts a comment; anything after the
 * first ':' is reserved for a password hash (AUTH) and ignored for now. */
static void
read_users(struct parser *p, struct config_domain *d, const char *path)
{
	struct lines it = { 0 };
	const char *line;
	size_t llen;
	char *text;

	if (read_file(path, CONFIG_LIST_FILE_MAX, &text, &it.len) == -1) {
		if (errno == ENOENT)
			pwarn_at(p, p->file, p->line, "users file %s does not "
			    "exist; domain %s has only its inline mailboxes",
			    path, d->name);
		else
			perr(p, "users: cannot read %s: %s", path,
			    errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	it.text = text;
	while (next_line(&it, &line, &llen)) {
		const char *colon = memchr(line, ':', llen);
		const char *hash;
		size_t nlen = colon != NULL ? (size_t)(colon - line) : llen;
		const char *why;
		char sh[96];

		if (llen > CONFIG_LINE_MAX) {
			perr_at(p, path, it.no, "line too long (more than %d "
			    "bytes)", CONFIG_LINE_MAX);
			continue;
		}
		if ((hash = memchr(line, '#', nlen)) != NULL) {
			nlen = (size_t)(hash - line);
			colon = NULL;     /* all of it is a comment */
		}
		trim(&line, &nlen);
		if (nlen == 0) {
			if (colon != NULL)
				perr_at(p, path, it.no, "missing user name "
				    "before ':'");
			continue;
		}
		if ((why = check_local(line, nlen)) != NULL) {
			perr_at(p, path, it.no, "invalid user name '%s': %s",
			    show(sh, line, nlen), why);
			continue;
		}
		d->mailboxes = grow(d->mailboxes, d->nmailboxes,
		    sizeof(*d->mailboxes));
		d->mailboxes[d->nmailboxes++] = lower_dup(line, nlen);
	}
	free(text);
}

static void
add_pending(struct parser *p, size_t dom, const char *alias,
    const char *target, const char *file, unsigned line)
{
	p->pend = grow(p->pend, p->npend, sizeof(*p->pend));
	p->pend[p->npend++] = (struct pending){ dom, alias, target, file, line };
}

/* Check and store one alias target ("user" or "user@domain"); false after
 * reporting why it is not one. */
static bool
add_target(struct parser *p, size_t dom, struct config_alias *a,
    const char *t, size_t tlen, const char *path, unsigned lineno)
{
	const char *at = memchr(t, '@', tlen);
	size_t llen = at != NULL ? (size_t)(at - t) : tlen;
	const char *why;
	char sh[96];

	if ((why = check_local(t, llen)) == NULL && at != NULL)
		why = check_domain(at + 1, tlen - llen - 1);
	if (why != NULL) {
		perr_at(p, path, lineno, "alias '%s': invalid target '%s': %s",
		    a->name, show(sh, t, tlen), why);
		return false;
	}
	if (a->ntargets >= CONFIG_MAX_TARGETS) {
		perr_at(p, path, lineno, "alias '%s': more than %d targets",
		    a->name, CONFIG_MAX_TARGETS);
		return false;
	}
	a->targets = grow(a->targets, a->ntargets, sizeof(*a->targets));
	a->targets[a->ntargets] = lower_dup(t, tlen);
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

/*
 * aliases file: "name: target, target" per line; '#' starts a comment; a
 * line that starts with a blank continues the previous alias's targets.
 * Targets are checked against the local domains once the whole
 * configuration is read (finish()), since domains may come later.
 */
static void
read_aliases(struct parser *p, size_t dom, const char *path)
{
	struct config_domain *d = &p->cfg->domains[dom];
	struct lines it = { 0 };
	struct alias_line *seen = NULL;
	struct config_alias *cur = NULL;
	size_t nseen = 0, first = d->naliases;
	bool skip_cont = false;
	const char *line;
	size_t llen;
	char *text;

	if (read_file(path, CONFIG_LIST_FILE_MAX, &text, &it.len) == -1) {
		perr(p, "aliases: cannot read %s: %s", path,
		    errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	it.text = text;
	while (next_line(&it, &line, &llen)) {
		const char *hash, *rest;
		size_t rlen;
		bool cont;

		if (llen > CONFIG_LINE_MAX) {
			perr_at(p, path, it.no, "line too long (more than %d "
			    "bytes)", CONFIG_LINE_MAX);
			cur = NULL;
			skip_cont = true;
			continue;
		}
		if ((hash = memchr(line, '#', llen)) != NULL)
			llen = (size_t)(hash - line);
		cont = llen > 0 && is_space(line[0]);
		trim(&line, &llen);
		if (llen == 0)
			continue;
		if (cont) {
			if (cur == NULL) {
				/* After a bad alias line, stay quiet. */
				if (!skip_cont)
					perr_at(p, path, it.no, "continuation "
					    "line without an alias before it");
				continue;
			}
			rest = line;
			rlen = llen;
		} else {
			const char *colon = memchr(line, ':', llen);
			const char *why, *name = line;
			size_t nlen;
			char sh[96];

			cur = NULL;
			skip_cont = true;
			if (colon == NULL) {
				perr_at(p, path, it.no, "expected "
				    "'name: target, ...'");
				continue;
			}
			nlen = (size_t)(colon - line);
			trim(&name, &nlen);
			if ((why = check_local(name, nlen)) != NULL) {
				perr_at(p, path, it.no, "invalid alias name "
				    "'%s': %s", show(sh, name, nlen), why);
				continue;
			}
			skip_cont = false;
			d->aliases = grow(d->aliases, d->naliases,
			    sizeof(*d->aliases));
			cur = &d->aliases[d->naliases++];
			memset(cur, 0, sizeof(*cur));
			cur->name = lower_dup(name, nlen);
			seen = grow(seen, nseen, sizeof(*seen));
			seen[nseen++] = (struct alias_line){ cur->name, it.no,
			    false };
			add_pending(p, dom, cur->name, NULL, path, it.no);
			rest = colon + 1;
			rlen = (size_t)(line + llen - rest);
		}
		/* Comma-separated targets; empty items (a trailing comma
		 * before a continuation line) are skipped. */
		while (rlen > 0) {
			const char *comma = memchr(rest, ',', rlen);
			size_t tlen = comma != NULL ? (size_t)(comma - rest) : rlen;
			const char *t = rest;

			rest += tlen + (comma != NULL);
			rlen -= tlen + (comma != NULL);
			trim(&t, &tlen);
			if (tlen > 0 && !add_target(p, dom, cur, t, tlen, path,
			    it.no))
				seen[nseen - 1].bad_target = true;
		}
	}
	/* The array may have moved: cur is not used past this point. */
	for (size_t i = first; i < d->naliases; i++) {
		if (d->aliases[i].ntargets == 0) {
			const struct alias_line *l = NULL;

			for (size_t j = 0; j < nseen; j++)
				if (seen[j].name == d->aliases[i].name)
					l = &seen[j];
			ASSERT(l != NULL);
			if (!l->bad_target)
				perr_at(p, path, l->line, "alias '%s' has no "
				    "targets", d->aliases[i].name);
		}
	}
	if (nseen > 1)
		qsort(seen, nseen, sizeof(*seen), alias_line_cmp);
	for (size_t i = 1; i < nseen; i++)
		if (strcmp(seen[i].name, seen[i - 1].name) == 0)
			perr_at(p, path, seen[i].line, "duplicate alias '%s' "
			    "(first defined at line %u)", seen[i].name,
			    seen[i - 1].line);
	free(seen);
	free(text);
}

/*
 * Options
 */

static struct config_domain *
frame_domain(struct parser *p, const struct frame *f)
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
apply_cidrs(struct parser *p, const struct option *o, char **args,
    size_t nargs)
{
	struct config *cfg = p->cfg;

	if (nargs == 1 && strcmp(args[0], "none") == 0) {
		if (p->relay_line != 0)
			perr(p, "%s: 'none' cannot be combined with networks "
			    "(line %u)", o->name, p->relay_line);
		else if (p->relay_none_line == 0)
			p->relay_none_line = p->line;
		return;
	}
	if (p->relay_none_line != 0) {
		perr(p, "%s: networks cannot be combined with 'none' (line %u)",
		    o->name, p->relay_none_line);
		return;
	}
	if (p->relay_line == 0)
		p->relay_line = p->line;
	for (size_t i = 0; i < nargs; i++) {
		struct config_cidr c;
		char sh[96];

		if (!parse_cidr(args[i], &c)) {
			perr(p, "%s: '%s' is not a network (use 10.0.0.0/8, "
			    "2001:db8::/32 or a single address)", o->name,
			    show(sh, args[i], strlen(args[i])));
			continue;
		}
		if (cfg->nrelay_networks >= CONFIG_MAX_RELAY_NETWORKS) {
			perr(p, "%s: more than %d networks", o->name,
			    CONFIG_MAX_RELAY_NETWORKS);
			return;
		}
		cfg->relay_networks = grow(cfg->relay_networks,
		    cfg->nrelay_networks, sizeof(*cfg->relay_networks));
		cfg->relay_networks[cfg->nrelay_networks++] = c;
	}
}

/* Add a listener; returns its index, or SIZE_MAX after reporting why
 * not. Every listener starts with the listen block's defaults. */
static size_t
apply_listen(struct parser *p, const struct option *o, const char *arg)
{
	struct config *cfg = p->cfg;
	struct config_listener *l;
	char sh[96];

	if (cfg->nlisteners >= CONFIG_MAX_LISTENERS) {
		perr(p, "%s: more than %d listeners", o->name,
		    CONFIG_MAX_LISTENERS);
		return SIZE_MAX;
	}
	l = &cfg->listeners[cfg->nlisteners];
	if (strlen(arg) >= sizeof(l->text) ||
	    !parse_listen(arg, &l->addr, &l->addrlen)) {
		perr(p, "%s: '%s' is not an address:port (use 192.0.2.1:25 or "
		    "[2001:db8::1]:25; ports 1..65535)", o->name,
		    show(sh, arg, strlen(arg)));
		memset(l, 0, sizeof(*l));
		return SIZE_MAX;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (cfg->listeners[i].addrlen == l->addrlen &&
		    memcmp(&cfg->listeners[i].addr, &l->addr, l->addrlen) == 0) {
			perr(p, "%s: %s is already listed at line %u", o->name,
			    arg, p->listen_line[i]);
			memset(l, 0, sizeof(*l));
			return SIZE_MAX;
		}
	}
	util_strlcpy(l->text, arg, sizeof(l->text));
	listener_defaults(l);
	p->listen_line[cfg->nlisteners] = p->line;
	return cfg->nlisteners++;
}

static void
apply_number(struct parser *p, const struct option *o, void *field,
    const char *arg)
{
	char sh[96], lo[32], hi[32];
	uint64_t v;
	bool ok;

	if (o->type == T_SIZE)
		ok = parse_scaled(arg, size_units, size_mult, &v);
	else if (o->type == T_DURATION)
		ok = parse_scaled(arg, duration_units, duration_mult, &v);
	else
		ok = parse_digits(arg, strlen(arg), &v);
	if (!ok) {
		show(sh, arg, strlen(arg));
		if (o->type == T_SIZE)
			perr(p, "%s: '%s' is not a size (a number of bytes with "
			    "an optional K, M or G suffix)", o->name, sh);
		else if (o->type == T_DURATION)
			perr(p, "%s: '%s' is not a duration (a number of "
			    "seconds, or with an s, m, h or d suffix)", o->name,
			    sh);
		else
			perr(p, "%s: '%s' is not a number", o->name, sh);
		return;
	}
	if (v < o->min || v > o->max) {
		fmt_bound(o, lo, sizeof(lo), o->min);
		fmt_bound(o, hi, sizeof(hi), o->max);
		perr(p, "%s: %s is out of bounds (%s..%s)", o->name,
		    show(sh, arg, strlen(arg)), lo, hi);
		return;
	}
	if (o->type == T_SIZE)
		*(uint64_t *)field = v;
	else
		*(unsigned *)field = (unsigned)v;
}

static void
apply_enum(struct parser *p, const struct option *o, void *field,
    const char *arg)
{
	struct sbuf list = { 0 };
	const char *near;
	size_t nnames;
	char sh[96];

	for (unsigned i = 0; o->names[i] != NULL; i++) {
		if (strcmp(arg, o->names[i]) == 0) {
			*(unsigned *)field = i;
			free(list.s);
			return;
		}
		sbuf_addf(&list, "%s%s", i ? ", " : "", o->names[i]);
	}
	for (nnames = 0; o->names[nnames] != NULL; nnames++)
		continue;
	near = suggest(arg, o->names, nnames, sizeof(char *));
	perr(p, "%s: '%s' is not one of %s%s%s%s", o->name,
	    show(sh, arg, strlen(arg)), list.s, near ? " (did you mean '" : "",
	    near ? near : "", near ? "'?)" : "");
	free(list.s);
}

static void
apply_mailboxes(struct parser *p, const struct option *o,
    struct config_domain *d, char **args, size_t nargs)
{
	for (size_t i = 0; i < nargs; i++) {
		const char *why = check_local(args[i], strlen(args[i]));
		char sh[96];

		if (why != NULL) {
			perr(p, "%s: invalid name '%s': %s", o->name,
			    show(sh, args[i], strlen(args[i])), why);
			continue;
		}
		d->mailboxes = grow(d->mailboxes, d->nmailboxes,
		    sizeof(*d->mailboxes));
		d->mailboxes[d->nmailboxes++] = lower_dup(args[i],
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
apply_smarthost(struct parser *p, const struct option *o,
    struct config_route *rt, const char *arg)
{
	char host[CONFIG_HOSTNAME_MAX + 2], sh[96];
	const char *h = arg, *e, *port = NULL, *why = NULL;
	bool brackets = arg[0] == '[';
	struct in6_addr a6;
	struct in_addr a4;
	uint64_t v = 25;
	size_t hl;

	show(sh, arg, strlen(arg));
	if (brackets) {
		h = arg + 1;
		if ((e = strchr(h, ']')) == NULL) {
			perr(p, "%s: '%s' has no closing ']'", o->name, sh);
			return;
		}
		if (e[1] == ':')
			port = e + 2;
		else if (e[1] != '\0') {
			perr(p, "%s: '%s': only ':PORT' may follow ']'",
			    o->name, sh);
			return;
		}
		if (strncasecmp(h, "IPv6:", 5) == 0)
			h += 5;
	} else {
		e = strchr(h, ':');
		if (e != NULL && strchr(e + 1, ':') != NULL) {
			perr(p, "%s: '%s': an IPv6 address goes in brackets "
			    "([2001:db8::1]:25)", o->name, sh);
			return;
		}
		if (e != NULL)
			port = e + 1;
		else
			e = h + strlen(h);
	}
	hl = (size_t)(e - h);
	if (hl == 0 || hl >= sizeof(host)) {
		perr(p, "%s: '%s': %s host", o->name, sh, hl ? "too long a" :
		    "no");
		return;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (port != NULL && (!parse_digits(port, strlen(port), &v) || v < 1 ||
	    v > 65535)) {
		perr(p, "%s: '%s': the port must be 1..65535", o->name, sh);
		return;
	}
	rt->smarthost_ip = inet_pton(AF_INET, host, &a4) == 1 ||
	    (brackets && inet_pton(AF_INET6, host, &a6) == 1);
	if (!rt->smarthost_ip && (why = check_domain(host, hl)) != NULL) {
		perr(p, "%s: '%s': '%s' is not an IP address or a valid host "
		    "name: %s", o->name, sh, host, why);
		return;
	}
	set_string(&rt->smarthost, xstrdup(arg));
	set_string(&rt->smarthost_host, lower_dup(host, hl));
	rt->smarthost_port = (unsigned)v;
	rt->smarthost_mx = !brackets && !rt->smarthost_ip;
}

/* auth_user: a SASL authcid (RFC 4616 2: 1..255 octets of UTF-8 without
 * NUL); control characters are refused too, as they only cause trouble. */
static void
apply_auth_user(struct parser *p, const struct option *o,
    struct config_route *rt, const char *arg)
{
	size_t len = strlen(arg);
	char sh[96];

	if (len == 0 || len > CONFIG_AUTH_MAX) {
		perr(p, "%s: the user name must be 1..%d bytes", o->name,
		    CONFIG_AUTH_MAX);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)arg[i];

		if (c < 0x20 || c == 0x7f) {
			perr(p, "%s: '%s' contains a control character",
			    o->name, show(sh, arg, len));
			return;
		}
	}
	set_string(&rt->auth_user, xstrdup(arg));
}

/*
 * auth_password_file: the password is its first line. Read here, with
 * the loader's privileges (root in production), into memory that is
 * zeroed after use; messages name the file, never its content.
 */
static void
read_secret(struct parser *p, const struct option *o,
    struct config_route *rt, const char *path)
{
	char buf[CONFIG_SECRET_FILE_MAX + 1];
	struct stat st;
	size_t n = 0, len;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		perr(p, "%s: cannot open %s: %s", o->name, path,
		    strerror(errno));
		return;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		perr(p, "%s: %s is not a regular file", o->name, path);
		close(fd);
		return;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		pwarn_at(p, p->file, p->line, "%s: %s may be read by group or "
		    "others (mode %04o); make it readable by root only "
		    "(chmod 600)", o->name, path, (unsigned)(st.st_mode & 07777));
	while (n < sizeof(buf) && (r = read(fd, buf + n, sizeof(buf) - n)) != 0) {
		if (r == -1) {
			if (errno == EINTR)
				continue;
			perr(p, "%s: cannot read %s: %s", o->name, path,
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
		perr(p, "%s: the password in %s is longer than %d bytes",
		    o->name, path, CONFIG_AUTH_MAX);
	else if (len == 0)
		perr(p, "%s: %s holds no password (its first line is empty)",
		    o->name, path);
	else if (memchr(buf, '\0', len) != NULL)
		perr(p, "%s: the password in %s contains a NUL byte", o->name,
		    path);
	else {
		if (rt->auth_password != NULL)
			explicit_bzero(rt->auth_password,
			    strlen(rt->auth_password));
		set_string(&rt->auth_password, xstrndup(buf, len));
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

/* Check and add one address of a passwd user ("a@b" or "@b"); false
 * after reporting why not. */
static bool
passwd_add_address(struct parser *p, const char *path, unsigned lineno,
    struct config_passwd *u, const char *a, size_t alen)
{
	const char *at = alen > 0 ? memrchr(a, '@', alen) : NULL;
	const char *why = NULL;
	char sh[96];

	if (at == NULL)
		why = "not an address (local@domain) or @domain";
	else if (at != a && memchr(a, '@', (size_t)(at - a)) != NULL)
		why = "more than one '@'";
	else if ((why = check_domain(at + 1, alen - (size_t)(at - a) - 1)) ==
	    NULL) {
		for (const char *c = a; c < at; c++)
			if ((unsigned char)*c <= ' ' || *c == 0x7f || *c == ',' ||
			    *c == '<' || *c == '>')
				why = "the local part contains a blank, control "
				    "character, ',' or angle bracket";
	}
	if (why != NULL) {
		perr_at(p, path, lineno, "user '%s': address '%s': %s",
		    u->name, show(sh, a, alen), why);
		return false;
	}
	if (u->naddresses >= CONFIG_PASSWD_ADDRS_MAX) {
		perr_at(p, path, lineno, "user '%s': more than %d addresses",
		    u->name, CONFIG_PASSWD_ADDRS_MAX);
		return false;
	}
	u->addresses = grow(u->addresses, u->naddresses,
	    sizeof(*u->addresses));
	u->addresses[u->naddresses++] = lower_dup(a, alen);
	return true;
}

static void
read_passwd(struct parser *p, const struct option *o, const char *path)
{
	struct config *cfg = p->cfg;
	struct lines it = { 0 };
	struct stat st;
	const char *line;
	size_t llen;
	char *text;

	if (read_file(path, CONFIG_LIST_FILE_MAX, &text, &it.len) == -1) {
		perr(p, "%s: cannot read %s: %s", o->name, path,
		    errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	/* The hashes are not the passwords, but they allow offline guessing:
	 * others have no business reading them. */
	if (stat(path, &st) == 0 && (st.st_mode & S_IROTH))
		pwarn_at(p, p->file, p->line, "%s: %s is readable by everyone "
		    "(mode %04o); make it readable by root only (chmod 600)",
		    o->name, path, (unsigned)(st.st_mode & 07777));
	it.text = text;
	while (next_line(&it, &line, &llen)) {
		const char *c1, *c2, *h, *rest;
		size_t nlen, hlen, rlen;
		struct config_passwd *u;
		char sh[96];
		bool bad = false;

		trim(&line, &llen);
		if (llen == 0 || line[0] == '#')
			continue;
		if (llen > CONFIG_LINE_MAX) {
			perr_at(p, path, it.no, "line too long");
			continue;
		}
		if ((c1 = memchr(line, ':', llen)) == NULL) {
			perr_at(p, path, it.no, "expected 'user:hash[:addresses]'");
			continue;
		}
		nlen = (size_t)(c1 - line);
		h = c1 + 1;
		c2 = memchr(h, ':', llen - nlen - 1);
		hlen = c2 != NULL ? (size_t)(c2 - h) : llen - nlen - 1;
		rest = c2 != NULL ? c2 + 1 : line + llen;
		rlen = (size_t)(line + llen - rest);
		if (nlen == 0 || nlen > CONFIG_AUTH_MAX) {
			perr_at(p, path, it.no, "the user name must be 1..%d "
			    "bytes", CONFIG_AUTH_MAX);
			continue;
		}
		for (size_t i = 0; i < nlen; i++)
			if ((unsigned char)line[i] <= ' ' || line[i] == 0x7f)
				bad = true;
		if (bad) {
			perr_at(p, path, it.no, "user '%s': blank or control "
			    "character in the name", show(sh, line, nlen));
			continue;
		}
		if (cfg->npasswd >= CONFIG_PASSWD_MAX) {
			perr_at(p, path, it.no, "more than %d users",
			    CONFIG_PASSWD_MAX);
			break;
		}
		cfg->passwd = grow(cfg->passwd, cfg->npasswd,
		    sizeof(*cfg->passwd));
		u = &cfg->passwd[cfg->npasswd++];
		memset(u, 0, sizeof(*u));
		u->name = xstrndup(line, nlen);
		u->hash = xstrndup(h, hlen);
		/* '!' or '*' first: a locked account, never matches. */
		if (hlen == 0)
			perr_at(p, path, it.no, "user '%s': no password hash "
			    "(set one with tern passwd)", u->name);
		else if (h[0] != '!' && h[0] != '*') {
			int cs = crypt_checksalt(u->hash);

			if (cs == CRYPT_SALT_INVALID ||
			    cs == CRYPT_SALT_METHOD_DISABLED)
				perr_at(p, path, it.no, "user '%s': not a "
				    "crypt(3) hash this system supports (use "
				    "$y$ yescrypt or $6$ SHA-512)", u->name);
			else if (cs != CRYPT_SALT_OK)
				pwarn_at(p, path, it.no, "user '%s': weak or "
				    "legacy hash method; set a new password "
				    "with tern passwd", u->name);
		}
		while (rlen > 0) {
			const char *comma = memchr(rest, ',', rlen);
			size_t alen = comma != NULL ? (size_t)(comma - rest) : rlen;
			const char *a = rest;

			rest += alen + (comma != NULL);
			rlen -= alen + (comma != NULL);
			trim(&a, &alen);
			if (alen > 0)
				passwd_add_address(p, path, it.no, u, a, alen);
		}
		/* By default a user may send as its own name, if that is an
		 * address. */
		if (u->naddresses == 0 && memchr(u->name, '@', nlen) != NULL)
			passwd_add_address(p, path, it.no, u, u->name, nlen);
		if (u->naddresses == 0)
			pwarn_at(p, path, it.no, "user '%s' has no sender "
			    "address: it can authenticate but only send with "
			    "MAIL FROM:<>", u->name);
	}
	free(text);
	if (cfg->npasswd > 1)
		qsort(cfg->passwd, cfg->npasswd, sizeof(*cfg->passwd),
		    passwd_cmp);
	for (size_t i = 1; i < cfg->npasswd; i++)
		if (strcmp(cfg->passwd[i].name, cfg->passwd[i - 1].name) == 0)
			perr_at(p, path, 0, "user '%s' is listed twice",
			    cfg->passwd[i].name);
}

/* The record a frame's options go to. */
static void *
frame_base(struct parser *p, const struct frame *f)
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

/* Apply option o of frame f with its values; reports every problem. */
static void
apply_option(struct parser *p, struct frame *f, const struct option *o,
    char **args, size_t nargs)
{
	void *base = frame_base(p, f);
	void *field = (char *)base + o->off;
	size_t idx = (size_t)(o - f->ctx->opts);
	bool list = o->type == T_CIDRS || o->type == T_MAILBOXES;
	const char *why;
	char sh[96], whybuf[128], *abs;
	size_t nerr;

	if (!o->repeat) {
		if (f->seen[idx] != 0) {
			perr(p, "duplicate option '%s' (first set at line %u)",
			    o->name, f->seen[idx]);
			return;
		}
		f->seen[idx] = p->line;
	}
	if (nargs == 0) {
		perr(p, "%s: missing value", o->name);
		return;
	}
	if (!list && nargs != 1) {
		perr(p, "%s: expects one value, got %zu (quote values that "
		    "contain spaces)", o->name, nargs);
		return;
	}
	switch (o->type) {
	case T_HOSTNAME:
		if ((why = check_domain(args[0], strlen(args[0]))) != NULL) {
			perr(p, "%s: '%s' is not a valid host name: %s",
			    o->name, show(sh, args[0], strlen(args[0])), why);
			return;
		}
		set_string(field, lower_dup(args[0], strlen(args[0])));
		return;
	case T_USER:
		if (!valid_user_name(args[0])) {
			perr(p, "%s: '%s' is not a valid user name", o->name,
			    show(sh, args[0], strlen(args[0])));
			return;
		}
		set_string(field, xstrdup(args[0]));
		return;
	case T_PATH:
		if ((abs = resolve_path(p, o->name, args[0])) != NULL)
			set_string(field, abs);
		return;
	case T_LISTEN:
		(void)apply_listen(p, o, args[0]);
		return;
	case T_ADDRPORT: {
		struct sockaddr_storage ss;
		socklen_t slen;

		if (strlen(args[0]) >= 80 || !parse_listen(args[0], &ss, &slen)) {
			perr(p, "%s: '%s' is not an address:port (use "
			    "192.0.2.53:53 or [2001:db8::53]:53; ports "
			    "1..65535)", o->name,
			    show(sh, args[0], strlen(args[0])));
			return;
		}
		set_string(field, xstrdup(args[0]));
		return;
	}
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
	case T_USERS:
		if ((abs = resolve_path(p, o->name, args[0])) == NULL)
			return;
		set_string(field, abs);
		read_users(p, base, abs);
		return;
	case T_ALIASES:
		if ((abs = resolve_path(p, o->name, args[0])) == NULL)
			return;
		set_string(field, abs);
		nerr = p->nerrors;
		read_aliases(p, f->dom, abs);
		p->alias_errors += p->nerrors - nerr;
		return;
	case T_MAILDIR:
		if ((why = check_maildir(args[0], whybuf, sizeof(whybuf))) !=
		    NULL) {
			perr(p, "%s: %s", o->name, why);
			return;
		}
		if ((abs = resolve_path(p, o->name, args[0])) != NULL)
			set_string(field, abs);
		return;
	case T_SMARTHOST:
		apply_smarthost(p, o, base, args[0]);
		return;
	case T_AUTH_USER:
		apply_auth_user(p, o, base, args[0]);
		return;
	case T_SECRET:
		if ((abs = resolve_path(p, o->name, args[0])) == NULL)
			return;
		set_string(field, abs);
		read_secret(p, o, base, abs);
		return;
	case T_SOCKET:
		/* "" stands for none until apply_defaults() sees it. */
		if (strcmp(args[0], "none") == 0)
			set_string(field, xstrdup(""));
		else if ((abs = resolve_path(p, o->name, args[0])) == NULL)
			return;
		else if (strlen(abs) >= CONFIG_SOCKET_PATH_MAX) {
			perr(p, "%s: '%s' is longer than %d bytes, the limit of "
			    "a socket address", o->name, show(sh, abs,
			    strlen(abs)), CONFIG_SOCKET_PATH_MAX - 1);
			free(abs);
		} else
			set_string(field, abs);
		return;
	case T_PASSWD:
		if ((abs = resolve_path(p, o->name, args[0])) == NULL)
			return;
		set_string(field, abs);
		read_passwd(p, o, abs);
		return;
	case T_DOMAIN:
	case T_ROUTE:
		break;
	}
	ASSERT(!"unreachable option type");
}

/*
 * Blocks
 */

/* Open a domain block; returns the index of its (possibly invalid) domain,
 * which receives the block's options either way so that errors inside it
 * are still found. */
static size_t
open_domain(struct parser *p, char **args, size_t nargs)
{
	struct config *cfg = p->cfg;
	struct config_domain *d;
	const char *why = NULL;
	char sh[96];

	if (cfg->ndomains >= CONFIG_MAX_DOMAINS)
		perr(p, "domain: more than %d domains", CONFIG_MAX_DOMAINS);
	else if (nargs != 1)
		perr(p, "domain: expects one name, got %zu", nargs);
	else if ((why = check_domain(args[0], strlen(args[0]))) != NULL)
		perr(p, "domain: '%s' is not a valid domain name: %s",
		    show(sh, args[0], strlen(args[0])), why);
	else {
		for (size_t i = 0; i < cfg->ndomains; i++) {
			if (strcasecmp(cfg->domains[i].name, args[0]) == 0) {
				perr(p, "domain %s is already defined at line "
				    "%u", cfg->domains[i].name,
				    p->domain_line[i]);
				break;
			}
		}
	}
	cfg->domains = grow(cfg->domains, cfg->ndomains, sizeof(*cfg->domains));
	p->domain_line = grow(p->domain_line, cfg->ndomains,
	    sizeof(*p->domain_line));
	d = &cfg->domains[cfg->ndomains];
	memset(d, 0, sizeof(*d));
	/* An invalid name is kept empty: it matches nothing, and the block's
	 * options are still checked. */
	d->name = nargs == 1 && why == NULL ?
	    lower_dup(args[0], strlen(args[0])) : xstrdup("");
	p->domain_line[cfg->ndomains] = p->line;
	return cfg->ndomains++;
}

/* At the end of a domain block. */
static void
close_domain(struct parser *p, size_t dom)
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
		pwarn_at(p, p->file, p->domain_line[dom], "domain %s has no "
		    "postmaster mailbox or alias (RFC 5321 4.5.1 requires one)",
		    d->name);
}

/* Open a route block; like open_domain(), an invalid one still takes its
 * options (its name stays empty and matches nothing). */
static size_t
open_route(struct parser *p, char **args, size_t nargs)
{
	struct config *cfg = p->cfg;
	struct config_route *rt;
	const char *why = NULL, *name = nargs == 1 ? args[0] : "";
	size_t len = strlen(name);
	char sh[96];
	bool ok = false;

	if (cfg->nroutes >= CONFIG_MAX_ROUTES)
		perr(p, "route: more than %d routes", CONFIG_MAX_ROUTES);
	else if (nargs != 1)
		perr(p, "route: expects one domain, `*` or `.domain`, got %zu",
		    nargs);
	else if (strcmp(name, "*") != 0 && (why = check_domain(name[0] ==
	    '.' ? name + 1 : name, name[0] == '.' ? len - 1 : len)) != NULL)
		perr(p, "route: '%s' is not `*`, a domain or `.domain`: %s",
		    show(sh, name, len), why);
	else {
		ok = true;
		for (size_t i = 0; i < cfg->nroutes; i++) {
			if (strcasecmp(cfg->routes[i].domain, name) == 0) {
				perr(p, "route %s is already defined at line "
				    "%u", cfg->routes[i].domain,
				    p->route_line[i]);
				ok = false;
				break;
			}
		}
	}
	cfg->routes = grow(cfg->routes, cfg->nroutes, sizeof(*cfg->routes));
	p->route_line = grow(p->route_line, cfg->nroutes,
	    sizeof(*p->route_line));
	rt = &cfg->routes[cfg->nroutes];
	memset(rt, 0, sizeof(*rt));
	rt->domain = ok ? lower_dup(name, len) : xstrdup("");
	p->route_line[cfg->nroutes] = p->line;
	return cfg->nroutes++;
}

/* At the end of a route block: the options must make sense together. */
static void
close_route(struct parser *p, size_t i)
{
	struct config_route *rt = &p->cfg->routes[i];
	unsigned line = p->route_line[i];
	const char *name = rt->domain[0] != '\0' ? rt->domain : "(invalid)";

	if (rt->auth_user != NULL && rt->smarthost == NULL)
		perr_at(p, p->file, line, "route %s: auth_user needs a "
		    "smarthost (credentials are only sent to a smarthost)",
		    name);
	if (rt->auth_user != NULL && rt->auth_password_file == NULL)
		perr_at(p, p->file, line, "route %s: auth_user needs "
		    "auth_password_file", name);
	if (rt->auth_user == NULL && rt->auth_password_file != NULL)
		perr_at(p, p->file, line, "route %s: auth_password_file needs "
		    "auth_user", name);
}

/* Open a listen block: the listener it configures, or SIZE_MAX when the
 * address is invalid (its options are still checked, into a scratch). */
static size_t
open_listen(struct parser *p, const struct option *o, char **args,
    size_t nargs)
{
	memset(&p->bad_listener, 0, sizeof(p->bad_listener));
	if (nargs != 1) {
		perr(p, "listen: expects one ADDR:PORT before '{', got %zu",
		    nargs);
		return SIZE_MAX;
	}
	return apply_listen(p, o, args[0]);
}

static void
push_frame(struct parser *p, const struct ctx *ctx, size_t dom,
    const char *label)
{
	struct frame *f = &p->stack[++p->depth];

	memset(f, 0, sizeof(*f));
	f->ctx = ctx;
	f->dom = dom;
	f->line = p->line;
	f->seen = ctx != NULL ? xcalloc(ctx->nopts, sizeof(unsigned)) : NULL;
	util_strlcpy(f->label, label, sizeof(f->label));
}

static void
pop_frame(struct parser *p)
{
	struct frame *f = &p->stack[p->depth];

	ASSERT(p->depth > 0);
	if (f->ctx != NULL && f->ctx->kind == CTX_DOMAIN)
		close_domain(p, f->dom);
	if (f->ctx != NULL && f->ctx->kind == CTX_ROUTE)
		close_route(p, f->dom);
	free(f->seen);
	f->seen = NULL;
	p->depth--;
}

static const struct option *
find_option(const struct ctx *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->nopts; i++)
		if (strcmp(ctx->opts[i].name, name) == 0)
			return &ctx->opts[i];
	return NULL;
}

/* Report an unknown option name in ctx, with the most useful hint. */
static void
unknown_option(struct parser *p, const struct ctx *ctx, const char *name)
{
	const char *near;
	char sh[96];

	show(sh, name, strlen(name));
	for (size_t i = 0; i < nitems(all_ctx); i++) {
		if (all_ctx[i] == ctx || find_option(all_ctx[i], name) == NULL)
			continue;
		if (all_ctx[i]->kind == CTX_TOP)
			perr(p, "option '%s' is not allowed in a %s (it is a "
			    "top-level option)", sh, ctx->what);
		else
			perr(p, "option '%s' is only allowed in a %s", sh,
			    all_ctx[i]->what);
		return;
	}
	near = suggest(name, &ctx->opts[0].name, ctx->nopts,
	    sizeof(ctx->opts[0]));
	perr(p, "unknown option '%s'%s%s%s%s%s", sh,
	    ctx->kind == CTX_TOP ? "" : " in ",
	    ctx->kind == CTX_TOP ? "" : ctx->what,
	    near ? " (did you mean '" : "", near ? near : "",
	    near ? "'?)" : "");
}

/* One statement (no braces) in the innermost frame. */
static void
statement(struct parser *p, char **t, size_t n)
{
	struct frame *f = &p->stack[p->depth];
	const struct option *o;

	if (f->ctx == NULL)
		return;    /* inside a block that could not be opened */
	if ((o = find_option(f->ctx, t[0])) == NULL) {
		unknown_option(p, f->ctx, t[0]);
		return;
	}
	if (o->block != NULL && o->type != T_LISTEN) {
		perr(p, "'%s' opens a block: %s %s", o->name, o->name, o->arg);
		return;
	}
	apply_option(p, f, o, t + 1, n - 1);
}

/* "name args... {" (inner == NULL) or "name args... { inner }". */
static void
open_block(struct parser *p, char **t, size_t n, char **inner, size_t ninner,
    bool oneline)
{
	struct frame *f = &p->stack[p->depth];
	const struct option *o = NULL;
	char label[300];

	if (f->ctx == NULL) {
		if (!oneline)
			f->skip_depth++;
		return;
	}
	if ((o = find_option(f->ctx, t[0])) == NULL)
		unknown_option(p, f->ctx, t[0]);
	else if (o->block == NULL)
		perr(p, "option '%s' does not take a block", o->name);
	else if (p->depth >= CONFIG_MAX_DEPTH)
		perr(p, "blocks nested more than %d deep", CONFIG_MAX_DEPTH);
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
close_block(struct parser *p)
{
	struct frame *f = &p->stack[p->depth];

	if (p->depth == 0) {
		perr(p, "unexpected '}' (no block is open)");
		return;
	}
	if (f->ctx == NULL && f->skip_depth > 0) {
		f->skip_depth--;
		return;
	}
	pop_frame(p);
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
tokenize(struct parser *p, const char *s, size_t len, char *buf, char **tok,
    bool *braces)
{
	size_t i = 0, o = 0;
	long n = 0;

	while (i < len) {
		char c = s[i];

		if (is_space(c) || c == '\r') {
			i++;
			continue;
		}
		if (c == '#')
			break;
		if (n >= CONFIG_MAX_TOKENS) {
			perr(p, "too many values on one line (more than %d)",
			    CONFIG_MAX_TOKENS);
			return -1;
		}
		tok[n] = buf + o;
		braces[n] = false;
		if (c == '{' || c == '}') {
			buf[o++] = c;
			braces[n] = true;
			i++;
		} else if (c == '"') {
			for (i++;; i++) {
				if (i >= len) {
					perr(p, "unterminated quoted string");
					return -1;
				}
				if (s[i] == '"')
					break;
				if (s[i] == '\\') {
					if (i + 1 < len &&
					    (s[i + 1] == '"' || s[i + 1] == '\\')) {
						buf[o++] = s[++i];
						continue;
					}
					perr(p, "invalid escape in quoted string "
					    "(only \\\" and \\\\ are allowed)");
					return -1;
				}
				if ((unsigned char)s[i] < 0x20 && s[i] != '\t') {
					perr(p, "control character in quoted "
					    "string");
					return -1;
				}
				buf[o++] = s[i];
			}
			i++;    /* the closing quote */
			if (i < len && !is_space(s[i]) && s[i] != '\r' &&
			    s[i] != '#' && s[i] != '{' && s[i] != '}') {
				perr(p, "missing space after quoted string");
				return -1;
			}
		} else {
			while (i < len && !is_space(s[i]) && s[i] != '\r' &&
			    s[i] != '#' && s[i] != '{' && s[i] != '}') {
				if (s[i] == '"') {
					perr(p, "unexpected '\"' inside a word "
					    "(quote the whole value)");
					return -1;
				}
				if ((unsigned char)s[i] < 0x20 ||
				    (unsigned char)s[i] == 0x7f) {
					perr(p, "control character in line");
					return -1;
				}
				buf[o++] = s[i++];
			}
		}
		buf[o++] = '\0';
		n++;
	}
	return n;
}

static void
parse_line(struct parser *p, const char *s, size_t len, char *buf,
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
			perr(p, "'}' must be alone on its line");
		else
			close_block(p);
	} else if (nopen == 0) {
		perr(p, "unexpected '}' (a block ends with '}' alone on its "
		    "line)");
	} else if (open == 0) {
		perr(p, "'{' must follow an option on the same line");
	} else if (nopen > 1) {
		perr(p, "only one '{' per line");
	} else if (open == n - 1 && nclose == 0) {
		open_block(p, tok, open, NULL, 0, false);
	} else if (nclose == 1 && br[n - 1] && tok[n - 1][0] == '}') {
		open_block(p, tok, open, tok + open + 1, n - open - 2, true);
	} else {
		perr(p, "'{' must end the line (or the block must close with "
		    "'}' at the end of the same line)");
	}
}

static void
parse_text(struct parser *p, const char *text, size_t len)
{
	struct lines it = { .text = text, .len = len };
	char **tok = xcalloc(CONFIG_MAX_TOKENS, sizeof(*tok));
	bool *br = xcalloc(CONFIG_MAX_TOKENS, sizeof(*br));
	char *buf = xmalloc(2 * CONFIG_LINE_MAX + 2);
	const char *line;
	size_t llen;

	while (next_line(&it, &line, &llen)) {
		p->line = it.no;
		if (llen > CONFIG_LINE_MAX) {
			perr(p, "line too long (more than %d bytes)",
			    CONFIG_LINE_MAX);
			continue;
		}
		if (memchr(line, '\0', llen) != NULL) {
			perr(p, "NUL byte in line");
			continue;
		}
		parse_line(p, line, llen, buf, tok, br);
	}
	/* Blocks left open at the end of the file. */
	while (p->depth > 0) {
		struct frame *f = &p->stack[p->depth];

		perr_at(p, p->file, f->line, "block '%s' is never closed "
		    "(missing '}')", f->label);
		pop_frame(p);
	}
	free(buf);
	free(br);
	free(tok);
}

/*
 * End of the file: defaults, computed values, cross-checks
 */

static void
apply_defaults(struct parser *p)
{
	struct config *cfg = p->cfg;
	const char *file = p->file;
	size_t nerr = p->nerrors;

	/* Built-in defaults go through the same parser as the file, so the
	 * documented default is exactly what tern uses. */
	p->file = "(built-in default)";
	p->line = 0;
	for (size_t i = 0; i < top_ctx.nopts; i++) {
		const struct option *o = &top_opts[i];
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
		apply_option(p, &p->stack[0], o, args, nargs);
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
		perr_at(p, p->file, 0, "tls_certificate and tls_key go "
		    "together: give both or neither");
	if (cfg->spool_dir == NULL)
		return;   /* reported already (working directory unknown) */
	if (cfg->chroot_dir == NULL) {
		char *parent = path_parent(cfg->spool_dir);

		cfg->chroot_dir = xasprintf("%s%sempty", parent,
		    strcmp(parent, "/") == 0 ? "" : "/");
		free(parent);
	}
	if (cfg->submit_socket == NULL) {
		cfg->submit_socket = config_default_submit_socket(cfg->spool_dir);
		if (strlen(cfg->submit_socket) >= CONFIG_SOCKET_PATH_MAX) {
			perr(p, "submit_socket: the default %s is longer than %d "
			    "bytes (the limit of a socket address): set "
			    "submit_socket or none", cfg->submit_socket,
			    CONFIG_SOCKET_PATH_MAX - 1);
		}
	} else if (cfg->submit_socket[0] == '\0') {
		free(cfg->submit_socket);       /* submit_socket none */
		cfg->submit_socket = NULL;
	}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		struct config_domain *d = &cfg->domains[i];
		char *parent;
		struct sbuf pat = { 0 };

		if (d->maildir != NULL)
			continue;
		parent = path_parent(cfg->spool_dir);
		/* The parent is a path, not a pattern: escape its '%'. */
		for (const char *s = parent; *s != '\0' &&
		    strcmp(parent, "/") != 0; s++) {
			if (*s == '%')
				sbuf_addf(&pat, "%%%%");
			else
				sbuf_addf(&pat, "%c", *s);
		}
		sbuf_addf(&pat, "/mail/%%d/%%u");
		free(parent);
		d->maildir = pat.s;
	}
}

/* Aliases: no clash with mailboxes, every target local and existing,
 * every alias expanding to mailboxes without loops. */
static void
check_aliases(struct parser *p)
{
	struct config *cfg = p->cfg;
	size_t nerr = p->nerrors;

	for (size_t i = 0; i < p->npend; i++) {
		const struct pending *e = &p->pend[i];
		const struct config_domain *d = &cfg->domains[e->dom];
		const struct config_domain *td = d;
		const char *t = e->target, *at;

		if (t == NULL) {
			if (local_lookup(d, e->alias, strlen(e->alias)) ==
			    LOCAL_LOOKUP_MAILBOX)
				perr_at(p, e->file, e->line, "alias '%s' is "
				    "also a mailbox of domain %s", e->alias,
				    d->name);
			continue;
		}
		if ((at = strchr(t, '@')) != NULL) {
			td = config_find_domain(cfg, at + 1, strlen(at + 1));
			if (td == NULL) {
				perr_at(p, e->file, e->line, "alias '%s': "
				    "target '%s': %s is not a local domain",
				    e->alias, t, at + 1);
				continue;
			}
		}
		if (local_lookup(td, t, at != NULL ? (size_t)(at - t) :
		    strlen(t)) == LOCAL_LOOKUP_UNKNOWN)
			perr_at(p, e->file, e->line, "alias '%s': target '%s' "
			    "is not a mailbox or alias of domain %s",
			    e->alias, t, td->name);
	}
	/* With a broken alias or target, expansion would only repeat the
	 * errors already reported; the loop checks wait for a clean file. */
	if (p->nerrors != nerr || p->alias_errors > 0)
		return;
	for (size_t i = 0; i < p->npend; i++) {
		const struct pending *e = &p->pend[i];
		const struct config_domain *d = &cfg->domains[e->dom];
		struct local_target out[LOCAL_EXPAND_MAX];
		char why[256];

		if (e->target != NULL)
			continue;
		if (local_expand_explain(&cfg->domain_index, d, e->alias,
		    strlen(e->alias), out, why, sizeof(why)) == -1)
			perr_at(p, e->file, e->line, "alias '%s': %s", e->alias,
			    why);
	}
}

/* Routes are for foreign domains: one naming a local domain is a mistake
 * (local mail never goes out), and its defaults are set here. */
static void
check_routes(struct parser *p)
{
	struct config *cfg = p->cfg;

	for (size_t i = 0; i < cfg->nroutes; i++) {
		const char *d = cfg->routes[i].domain;

		if (d[0] != '\0' && d[0] != '.' && strcmp(d, "*") != 0 &&
		    config_find_domain(cfg, d, strlen(d)) != NULL)
			perr_at(p, p->file, p->route_line[i], "route %s: %s is "
			    "a local domain (its mail is delivered to "
			    "Maildirs; routes are for foreign domains)", d, d);
	}
}

static int
domain_ptr_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct config_domain *const *)a)->name,
	    (*(const struct config_domain *const *)b)->name);
}

static void
finish(struct parser *p)
{
	struct config *cfg = p->cfg;

	apply_defaults(p);
	for (size_t i = 0; i < cfg->ndomains; i++)
		local_lookup_prepare(&cfg->domains[i]);
	/* Names are stored lower-cased: a sorted index makes the lookup at
	 * every RCPT a binary search, however many domains are hosted. */
	cfg->domain_index.sorted = xreallocarray(NULL,
	    cfg->ndomains ? cfg->ndomains : 1, sizeof(*cfg->domain_index.sorted));
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
			perr_at(p, p->file, p->listen_line[i], "listen %s: auth "
			    "%s needs passwd_file (the users who may "
			    "authenticate)", cfg->listeners[i].text,
			    auth_names[cfg->listeners[i].auth]);
}

/*
 * Public interface
 */

const char *
config_default_text(void)
{
	return config_default_text_data;
}

static struct config *
load_text(const char *name, const char *text, size_t len, char **errors)
{
	struct parser p = { 0 };
	char cwd[CONFIG_PATH_MAX + 1];
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->source = xstrdup(name);
	p.cfg = cfg;
	p.file = cfg->source;
	if (getcwd(cwd, sizeof(cwd)) != NULL && cwd[0] == '/')
		p.cwd = cwd;
	p.stack[0].ctx = &top_ctx;
	p.stack[0].seen = xcalloc(top_ctx.nopts, sizeof(unsigned));
	parse_text(&p, text, len);
	finish(&p);
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

		return load_text(CONFIG_DEFAULT_NAME, t, strlen(t), errors);
	}
	if (read_file(path, CONFIG_FILE_MAX, &text, &len) == -1) {
		if (errors != NULL)
			*errors = xasprintf("%s: cannot read: %s\n", path,
			    errno == EFBIG ? "file too large" : strerror(errno));
		return NULL;
	}
	cfg = load_text(path, text, len, errors);
	free(text);
	return cfg;
}

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

const struct config_listener *
config_default_listener(void)
{
	static struct config_listener l;
	static bool init;

	if (!init) {
		listener_defaults(&l);
		init = true;
	}
	return &l;
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

const char *
config_option_default(const char *name)
{
	for (size_t i = 0; i < nitems(top_opts); i++)
		if (strcmp(top_opts[i].name, name) == 0)
			return top_opts[i].def;
	return NULL;
}

const char *
config_option_name(size_t i)
{
	for (size_t c = 0; c < nitems(all_ctx); c++) {
		if (i < all_ctx[c]->nopts)
			return all_ctx[c]->opts[i].name;
		i -= all_ctx[c]->nopts;
	}
	return NULL;
}

/*
 * The reference, docs/configuration.md
 */

static const char *
type_doc(enum opt_type t)
{
	switch (t) {
	case T_HOSTNAME: return "host name";
	case T_USER: return "user name";
	case T_PATH: return "path";
	case T_LISTEN: return "address:port";
	case T_ADDRPORT: return "address:port";
	case T_CIDRS: return "list of networks";
	case T_SIZE: return "size";
	case T_UINT: return "integer";
	case T_DURATION: return "duration";
	case T_ENUM: return "keyword";
	case T_DOMAIN: return "block";
	case T_MAILBOXES: return "list of names";
	case T_USERS: return "path (users file)";
	case T_ALIASES: return "path (aliases file)";
	case T_MAILDIR: return "path pattern";
	case T_ROUTE: return "block";
	case T_SMARTHOST: return "host and port";
	case T_AUTH_USER: return "string";
	case T_SECRET: return "path (password file)";
	case T_SOCKET: return "path (socket) or `none`";
	case T_PASSWD: return "path (passwd file)";
	}
	return "?";
}

static void
doc_default(const struct option *o, char *buf, size_t size)
{
	if (o->def != NULL)
		snprintf(buf, size, "`%s`", o->def);
	else
		snprintf(buf, size, "%s", o->def_doc != NULL ? o->def_doc :
		    "none");
}

static void
doc_bounds(const struct option *o, char *buf, size_t size)
{
	char lo[32], hi[32];

	switch (o->type) {
	case T_SIZE:
	case T_UINT:
	case T_DURATION:
		fmt_bound(o, lo, sizeof(lo), o->min);
		fmt_bound(o, hi, sizeof(hi), o->max);
		snprintf(buf, size, "%s..%s", lo, hi);
		return;
	case T_LISTEN:
		snprintf(buf, size, "at most %d listeners",
		    CONFIG_MAX_LISTENERS);
		return;
	case T_ADDRPORT:
		snprintf(buf, size, "an IP address, no host name");
		return;
	case T_CIDRS:
		snprintf(buf, size, "at most %d networks",
		    CONFIG_MAX_RELAY_NETWORKS);
		return;
	case T_HOSTNAME:
		snprintf(buf, size, "at most %d characters",
		    CONFIG_HOSTNAME_MAX);
		return;
	case T_USER:
		snprintf(buf, size, "at most %d characters", CONFIG_USER_MAX);
		return;
	case T_PATH:
	case T_USERS:
	case T_ALIASES:
	case T_MAILDIR:
	case T_SECRET:
	case T_PASSWD:
		snprintf(buf, size, "at most %d bytes, made absolute",
		    CONFIG_PATH_MAX);
		return;
	case T_MAILBOXES:
		snprintf(buf, size, "names of at most %d characters",
		    CONFIG_LOCAL_MAX);
		return;
	case T_DOMAIN:
		snprintf(buf, size, "at most %d domains", CONFIG_MAX_DOMAINS);
		return;
	case T_ROUTE:
		snprintf(buf, size, "at most %d routes", CONFIG_MAX_ROUTES);
		return;
	case T_SMARTHOST:
		snprintf(buf, size, "port 1..65535");
		return;
	case T_AUTH_USER:
		snprintf(buf, size, "1..%d bytes", CONFIG_AUTH_MAX);
		return;
	case T_SOCKET:
		snprintf(buf, size, "at most %d bytes, made absolute",
		    CONFIG_SOCKET_PATH_MAX - 1);
		return;
	case T_ENUM:
		break;
	}
	snprintf(buf, size, "-");
}

static void
doc_table(FILE *out, const struct ctx *ctx)
{
	fprintf(out, "| Option | Value | Type | Default | Bounds | Given |\n");
	fprintf(out, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < ctx->nopts; i++) {
		const struct option *o = &ctx->opts[i];
		char def[128], bounds[80];

		doc_default(o, def, sizeof(def));
		doc_bounds(o, bounds, sizeof(bounds));
		fprintf(out, "| [`%s`](#%s) | `", o->name, o->name);
		/* A '|' would end the table cell. */
		for (const char *a = o->arg; *a != '\0'; a++)
			fprintf(out, "%s%c", *a == '|' ? "\\" : "", *a);
		fprintf(out, "` | %s | %s | %s | %s |\n", type_doc(o->type), def,
		    bounds, o->repeat ? "repeatable" : "once");
	}
	fprintf(out, "\n");
}

static void
doc_options(FILE *out, const struct ctx *ctx)
{
	for (size_t i = 0; i < ctx->nopts; i++) {
		const struct option *o = &ctx->opts[i];
		char def[128], bounds[80];

		doc_default(o, def, sizeof(def));
		doc_bounds(o, bounds, sizeof(bounds));
		fprintf(out, "### %s\n\n", o->name);
		fprintf(out, "```\n%s %s\n```\n\n", o->name, o->arg);
		fprintf(out, "- Type: %s\n", type_doc(o->type));
		fprintf(out, "- Default: %s\n", def);
		fprintf(out, "- Bounds: %s\n", bounds);
		fprintf(out, "- Given: %s\n\n", o->repeat ?
		    "repeatable" : "at most once");
		fprintf(out, "%s\n\n", o->doc);
	}
}

void
config_write_doc(FILE *out)
{
	fprintf(out,
"# tern configuration reference\n"
"\n"
"<!-- Generated by `tern config-doc` (make docs) from the option table in\n"
"     src/config.c. Do not edit by hand: change the table instead. -->\n"
"\n"
"tern reads one configuration file: `tern serve -c FILE`. Without `-c` it\n"
"uses its embedded default, shown at the end of this page, which is what\n"
"`make run` serves. `tern check-config [-c FILE]` loads a file, prints\n"
"every problem as `file:line: reason` and exits non-zero if there is one.\n"
"\n"
"## Grammar\n"
"\n"
"- One statement per line: an option name, then its values, separated by\n"
"  blanks: `max_recipients 100`.\n"
"- A value is a word or a double-quoted string. Inside quotes, `\\\"` is a\n"
"  quote and `\\\\` a backslash; no other escapes exist. Quote a value that\n"
"  contains blanks, `#`, `\"`, `{` or `}`: `log_file \"/var/log/my tern.log\"`.\n"
"- `#` starts a comment that runs to the end of the line (not inside\n"
"  quotes). Blank lines are ignored.\n"
"- A block groups the options of one thing. It opens with `{` at the end\n"
"  of the option's line and closes with `}` alone on a line:\n"
"\n"
"  ```\n"
"  domain example.org {\n"
"      mailbox postmaster alice\n"
"  }\n"
"  ```\n"
"\n"
"  A block with one statement may also stay on one line:\n"
"  `domain example.net { mailbox postmaster }`.\n"
"- Options given once may appear at most once per context; giving one\n"
"  twice is an error. Repeatable options add up.\n"
"- Options that are absent take their default.\n"
"- Relative paths are resolved against the working directory when the\n"
"  file is loaded, not against the file's directory. Paths need not\n"
"  exist, except the users and aliases files, which are read at load.\n"
"- Errors name the file and line: `tern.conf:12: unknown option\n"
"  'max_recipient' (did you mean 'max_recipients'?)`. Loading goes on\n"
"  after an error (a line with a syntax error is skipped), so every\n"
"  problem is reported at once; a file with any error is refused. The\n"
"  embedded default is called `(default)` in messages.\n"
"- Warnings (a missing users file; a domain without postmaster) do not\n"
"  stop tern: they are printed on stderr and logged.\n"
"\n"
"## Value types\n"
"\n"
"| Type | Syntax |\n"
"|---|---|\n"
"| host name | letters, digits and `-` in dot-separated labels of at most 63 characters; stored lower case |\n"
"| user name | a system user: letters, digits, `_`, `-`, `.`; at most 32 characters |\n"
"| path | a file or directory name; made absolute at load |\n"
"| address:port | IPv4 `192.0.2.1:25`, IPv6 `[2001:db8::1]:25`; port 1..65535 |\n"
"| list of networks | CIDRs `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128 |\n"
"| size | bytes, with an optional suffix `K`, `M` or `G` (powers of 1024): `25M` |\n"
"| integer | a decimal number |\n"
"| duration | seconds, or a number with a suffix `s`, `m`, `h` or `d`: `90`, `5m` |\n"
"| keyword | one of the words listed |\n"
"| list of names | mailbox names (RFC 5321 dot-strings without `@` or `/`), lower-cased |\n"
"| path pattern | a path with `%%d` (domain), `%%u` (mailbox) and `%%%%` (`%%`) |\n"
"\n"
"## Top-level options\n"
"\n");
	doc_table(out, &top_ctx);
	doc_options(out, &top_ctx);
	fprintf(out,
"## Options in a domain block\n"
"\n"
"Each `domain NAME { ... }` block takes these options.\n"
"\n");
	doc_table(out, &domain_ctx);
	doc_options(out, &domain_ctx);
	fprintf(out,
"## Options in a route block\n"
"\n"
"Each `route DOMAIN { ... }` block takes these options. Which block a\n"
"recipient domain uses (`tern route ADDRESS` shows it):\n"
"\n"
"1. a local domain (a `domain` block) is never routed: Maildir delivery;\n"
"2. `route example.com`: exactly that domain (case-insensitive);\n"
"3. `route .example.com`: any subdomain of example.com (`a.example.com`,\n"
"   `b.a.example.com`), not example.com itself; the longest matching\n"
"   suffix wins;\n"
"4. `route *`: every other foreign domain, and address literals;\n"
"5. no block: the MX hosts of the domain (RFC 5321 5.1).\n"
"\n"
"A block without `smarthost` means MX delivery, so `route example.com {\n"
"require_tls no }` exempts one domain from a `route *` smarthost.\n"
"\n"
"```\n"
"route * {\n"
"    smarthost          [smtp.provider.example]:587\n"
"    auth_user          tern@example.org\n"
"    auth_password_file /etc/tern/smarthost.secret\n"
"}\n"
"route partner.example {\n"
"    smarthost          [192.0.2.25]:25\n"
"    require_tls        yes\n"
"}\n"
"```\n"
"\n");
	doc_table(out, &route_ctx);
	doc_options(out, &route_ctx);
	fprintf(out,
"## Options in a listen block\n"
"\n"
"`listen ADDR:PORT { ... }` sets the policy of one listener; a `listen`\n"
"line without a block takes the defaults below. Who may send what:\n"
"\n"
"| client | local domains | foreign domains |\n"
"|---|---|---|\n"
"| authenticated (AUTH) | yes | if `relay_auth yes` |\n"
"| in `relay_networks`, not authenticated | yes | if `relay_networks yes` |\n"
"| anyone else | if `receive yes` | never (554 5.7.1) |\n"
"\n"
"With `auth required` nobody gets past MAIL without AUTH (530 5.7.0).\n"
"An authenticated user's envelope sender must be one of its addresses\n"
"(553 5.7.1 otherwise); `MAIL FROM:<>` is allowed, as RFC 6409 4.2\n"
"requires (disposition notifications use it). So the defaults make an MX\n"
"listener, and a submission listener (RFC 6409) on port 587 is:\n"
"\n"
"```\n"
"listen 0.0.0.0:25\n"
"listen 0.0.0.0:587 {\n"
"    auth            required\n"
"    receive         no\n"
"    relay_networks  no\n"
"}\n"
"passwd_file /etc/tern/passwd\n"
"```\n"
"\n");
	doc_table(out, &listen_ctx);
	doc_options(out, &listen_ctx);
	fprintf(out,
"## Passwd file\n"
"\n"
"One user per line, `user:hash[:addresses]`; `#` at the start of a line\n"
"makes it a comment; blank lines are ignored.\n"
"\n"
"- `user` is the name given to AUTH (1..255 bytes, no blanks), matched\n"
"  exactly (case-sensitive).\n"
"- `hash` is a crypt(3) hash, yescrypt (`$y$`, what `tern passwd`\n"
"  writes) or SHA-512 (`$6$`). A hash starting with `!` or `*` locks the\n"
"  account.\n"
"- `addresses` is a comma-separated list of the envelope senders (and\n"
"  `From:` addresses) the user may use: `alice@example.org` or\n"
"  `@example.org` for every address of that domain; compared without\n"
"  regard to case. Without it, the user name itself when that is an\n"
"  address.\n"
"\n"
"```\n"
"alice@example.org:$y$j9T$...$...\n"
"bob:$6$salt$...:bob@example.org,robert@example.org\n"
"robot@example.org:$y$j9T$...$...:@notify.example.org\n"
"```\n"
"\n"
"`tern passwd USER FILE` asks for a password twice (or reads one line\n"
"from standard input when it is not a terminal) and writes USER's line\n"
"with a new yescrypt hash, keeping its addresses, by writing a new file\n"
"and renaming it over the old one. tern reads the file when it loads\n"
"its configuration: restart it after a change.\n"
"\n"
"## Users file\n"
"\n"
"One mailbox name per line; names are lower-cased and validated like\n"
"`mailbox` names. `#` starts a comment; blank lines are ignored. Text after\n"
"the first `:` on a line is ignored, so `alice:$6$...` declares `alice`;\n"
"AUTH passwords live in `passwd_file`, not here.\n"
"Errors are reported as `usersfile:line: reason`. Names listed twice, or\n"
"both here and in `mailbox`, are one mailbox. Lookups stay fast with\n"
"hundreds of thousands of names (sorted at load, binary search).\n"
"\n"
"```\n"
"# users of example.org\n"
"alice\n"
"bob:$6$rounds=5000$salt$hash\n"
"```\n"
"\n"
"## Aliases file\n"
"\n"
"One alias per line, `name: target, target, ...`. `#` starts a comment;\n"
"blank lines are ignored; a line that starts with a blank continues the\n"
"target list of the alias above it. A target is a mailbox or alias of the\n"
"same domain (`bob`) or of another local domain (`bob@example.net`);\n"
"mail is never forwarded to other hosts by an alias. Checked at load,\n"
"each reported as `aliasesfile:line: reason`:\n"
"\n"
"- every target exists in a local domain;\n"
"- no alias is defined twice, or has the name of a mailbox;\n"
"- every alias reaches at least one mailbox, without loops, nested at most\n"
"  %d deep, and reaches at most %d mailboxes.\n"
"\n"
"```\n"
"# aliases of example.org\n"
"postmaster: alice\n"
"sales:      alice, bob,\n"
"            carol@example.net\n"
"```\n"
"\n"
"Mail to an alias is delivered once to each mailbox it reaches, however\n"
"many ways it reaches it.\n"
"\n"
"## The embedded default\n"
"\n"
"What tern uses without `-c` (etc/default.conf, compiled in):\n"
"\n"
"```\n", LOCAL_EXPAND_DEPTH, LOCAL_EXPAND_MAX);
	fprintf(out, "%s", config_default_text());
	fprintf(out, "```\n");
}
