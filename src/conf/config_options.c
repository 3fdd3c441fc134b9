/*
 * config_options.c - the option table: one row per option of the
 * configuration file (name, type, value syntax, default, bounds, where
 * it is stored, documentation).
 *
 * Which options exist, their types, defaults and bounds all come from the
 * tables below; a block is just an option whose row points to another
 * table. `domain`, `route` and `listen` open blocks (`listen` may also
 * stand alone: `listen 0.0.0.0:25`, or open a per-listener block
 * `listen 0.0.0.0:587 { auth required }`). The parser (config_parse.c)
 * and the generated reference docs/configuration.md (config_doc.c) read
 * the same rows, so the reference cannot drift from the code. Adding an
 * option is adding a row here and a field in struct config (config.h).
 */
#include "conf/config_int.h"
#include "lib/util.h"

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

static const struct config_option domain_opts[] = {
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

static const struct config_ctx domain_ctx = {
	CTX_DOMAIN, "domain block", domain_opts, nitems(domain_opts),
};

static const struct config_option route_opts[] = {
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

static const struct config_ctx route_ctx = {
	CTX_ROUTE, "route block", route_opts, nitems(route_opts),
};

/*
 * Options of a `listen ADDR:PORT { ... }` block. Their defaults are set by
 * config_listener_defaults() for every listener, with or without a block; the
 * `def` strings below must say the same (test_config checks it).
 */
static const struct config_option listen_opts[] = {
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

static const struct config_ctx listen_ctx = {
	CTX_LISTEN, "listen block", listen_opts, nitems(listen_opts),
};

void
config_listener_defaults(struct config_listener *l)
{
	l->tls = CONFIG_LISTENER_TLS_STARTTLS;
	l->auth = CONFIG_LISTENER_AUTH_NO;
	l->auth_plaintext = 0;
	l->receive = 1;
	l->relay_networks = 1;
	l->relay_auth = 1;
}

static const struct config_option top_opts[] = {
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
	{ "spool_segment_size", T_SIZE, "SIZE", "64M", NULL, 8 * KIB * KIB,
	  16 * KIB * KIB * KIB, false, TOP(spool_segment_size), NULL, NULL,
	  "Size of each segment file of the spool's log (docs/spool-format.md), "
	  "allocated in full when it is made, so that a full disk shows "
	  "before a commit, not halfway through one. The last eighth of a "
	  "segment is kept for delivery records, so a full spool can still "
	  "drain. A segment is removed when no queued message needs it." },
	{ "spool_inline_max", T_SIZE, "SIZE", "256K", NULL, 1 * KIB,
	  3 * KIB * KIB, false, TOP(spool_inline_max), NULL, NULL,
	  "Message bodies up to this size are kept in the spool's log, "
	  "written with other messages in one sync; larger ones each go to a "
	  "file of their own under `spool/big/`. It also bounds the memory "
	  "the queue process holds for a message while it arrives." },
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
	  "after STARTTLS), RCPT refused 452 for too many recipients, and "
	  "`BDAT 0` without LAST. "
	  "The next one is answered 421 4.7.0 and the session closed, so a "
	  "client cannot hold a connection forever with commands that cost "
	  "nothing (Postfix's `smtpd_junk_command_limit`). Each message "
	  "queued starts the count again." },
	{ "timeout_greeting", T_DURATION, "DURATION", "300s", NULL, 1,
	  3600, false, TOP(timeout_greeting), NULL, NULL,
	  "How long a new client has, from its connection (or from the end "
	  "of STARTTLS), to complete its EHLO or HELO command; then 421 "
	  "4.4.2 and close. On an implicit-TLS listener the handshake counts "
	  "against it too. A deadline: octets that trickle in do not extend "
	  "it, nor do other commands. Mirrors the 5 minutes a client waits "
	  "for a greeting (RFC 5321 4.5.3.2.1)." },
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
	  "4.4.2 and close. While tern holds the data back itself (the "
	  "queue is behind) the wait stands still, and then goes on with "
	  "what was left, not afresh." },
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

static const struct config_ctx top_ctx = {
	CTX_TOP, "top level", top_opts, nitems(top_opts),
};

/* In the order of enum config_ctx_kind. */
const struct config_ctx *const config_ctxs[CONFIG_NCTX] = { &top_ctx,
	&domain_ctx, &route_ctx, &listen_ctx };

const char *
config_listener_auth_name(unsigned auth)
{
	ASSERT(auth < nitems(auth_names) - 1);
	return auth_names[auth];
}

const struct config_listener *
config_default_listener(void)
{
	static struct config_listener l;
	static bool init;

	if (!init) {
		config_listener_defaults(&l);
		init = true;
	}
	return &l;
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
	for (size_t c = 0; c < nitems(config_ctxs); c++) {
		if (i < config_ctxs[c]->nopts)
			return config_ctxs[c]->opts[i].name;
		i -= config_ctxs[c]->nopts;
	}
	return NULL;
}
