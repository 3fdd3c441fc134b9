/*
 * test_conn.c - the connection layer (lib/conn.h) over real loopback TCP
 * in one event loop: both ends are conns (one from conn_connect(), one
 * from conn_accept()), plain and TLS with a throw-away certificate made
 * here. Line framing (table-driven), connect and its source address,
 * the deadline against a drip of octets, STARTTLS dropping pipelined
 * input, implicit TLS and its handshake bound, verification, close after
 * flush (also with close_notify), a close whose output is never read,
 * back-pressure (CONN_READ_MAX, before and after STARTTLS), and
 * conn_free() from inside the callbacks (ASan checks the deferral).
 */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/conn.h"
#include "lib/tls.h"
#include "lib/util.h"

#define WAIT_MS 20000   /* generous: the machines are shared */

/* ------------------------------------------------------------------ */
/* line framing */

struct line_case {
	const char *name;
	const char *in;
	size_t max;
	enum conn_line want;
	size_t rawlen;      /* if OK */
	size_t left;        /* octets left in the buffer */
};

static const struct line_case line_cases[] = {
	{ "CRLF line", "NOOP\r\nQUIT\r\n", 512, CONN_LINE_OK, 6, 12 },
	{ "bare LF line", "NOOP\nQUIT", 512, CONN_LINE_OK, 5, 9 },
	{ "empty line", "\r\n", 512, CONN_LINE_OK, 2, 2 },
	{ "nothing yet", "", 512, CONN_LINE_MORE, 0, 0 },
	{ "partial line", "MAIL FROM:<a@b>", 512, CONN_LINE_MORE, 0, 15 },
	{ "CR alone ends nothing", "NOOP\r", 512, CONN_LINE_MORE, 0, 5 },
	{ "exactly max with its LF", "abc\n", 4, CONN_LINE_OK, 4, 4 },
	{ "max octets without LF", "abcd\n", 4, CONN_LINE_TOO_LONG, 0, 1 },
	{ "far too long", "abcdefghij", 4, CONN_LINE_TOO_LONG, 0, 6 },
	{ "LF only after max", "abcdef\n", 4, CONN_LINE_TOO_LONG, 0, 3 },
};

static void
test_line_table(void **state)
{
	for (size_t i = 0; i < nitems(line_cases); i++) {
		const struct line_case *lc = &line_cases[i];
		struct evbuffer *b = evbuffer_new();
		size_t rawlen = 0;
		enum conn_line got;

		evbuffer_add(b, lc->in, strlen(lc->in));
		got = conn_line(b, lc->max, &rawlen);
		if (got != lc->want)
			fail_msg("%s: want %d, got %d", lc->name, lc->want, got);
		if (got == CONN_LINE_OK && rawlen != lc->rawlen)
			fail_msg("%s: want rawlen %zu, got %zu", lc->name,
			    lc->rawlen, rawlen);
		if (evbuffer_get_length(b) != lc->left)
			fail_msg("%s: want %zu left, got %zu", lc->name, lc->left,
			    evbuffer_get_length(b));
		evbuffer_free(b);
	}
}

/* ------------------------------------------------------------------ */
/* a certificate for "localhost", self-signed, made now */

static char *cert_pem, *key_pem;
static size_t cert_len, key_len;
static char ca_path[64];

static char *
bio_text(BIO *b, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = xmalloc((size_t)n + 1);

	memcpy(s, p, (size_t)n);
	s[n] = '\0';
	*len = (size_t)n;
	return s;
}

static void
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static int
make_cert(void **state)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n;
	BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
	int fd;

	assert_non_null(k);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(x, NID_subject_alt_name, "DNS:localhost");
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509(cb, x), 1);
	assert_int_equal(PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL,
	    NULL), 1);
	cert_pem = bio_text(cb, &cert_len);
	key_pem = bio_text(kb, &key_len);
	BIO_free(cb);
	BIO_free(kb);
	X509_free(x);
	EVP_PKEY_free(k);
	/* the client's CA file: the certificate itself */
	snprintf(ca_path, sizeof(ca_path), "/tmp/tern-test-conn-XXXXXX");
	fd = mkstemp(ca_path);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, cert_pem, cert_len), 0);
	close(fd);
	return 0;
}

static int
drop_cert(void **state)
{
	unlink(ca_path);
	free(cert_pem);
	free(key_pem);
	return 0;
}

static SSL_CTX *
server_ctx(void)
{
	char err[256];
	SSL_CTX *ctx = tls_server_ctx_new(cert_pem, cert_len, key_pem, key_len,
	    TLS1_2_VERSION, err, sizeof(err));

	if (ctx == NULL)
		fail_msg("server context: %s", err);
	return ctx;
}

static SSL_CTX *
client_ctx(void)
{
	char err[256];
	SSL_CTX *ctx = tls_client_ctx_new(ca_path, TLS1_2_VERSION, err,
	    sizeof(err));

	if (ctx == NULL)
		fail_msg("client context: %s", err);
	return ctx;
}

/* ------------------------------------------------------------------ */
/* one end of a test connection */

struct side {
	struct conn *c;
	struct evbuffer *got;      /* every octet read, in order */
	int connected, readable, drained, timeouts, tls_ok, tls_failed;
	int ended;
	enum conn_end end;
	char why[256];
	char tls_text[256];
	/* what to do on an event, beyond recording it */
	void (*on_read)(struct side *);
	bool free_in_readable, free_in_tls, free_in_ended;
	bool keep_input;           /* leave input in conn_input(): a peer
	                            * that reads nothing (CONN_READ_MAX) */
	void *ctx;                 /* for on_read */
};

static void
side_readable(void *arg)
{
	struct side *s = arg;

	s->readable++;
	if (!s->keep_input)
		evbuffer_add_buffer(s->got, conn_input(s->c));
	if (s->on_read != NULL)
		s->on_read(s);
	if (s->free_in_readable)
		conn_free(&s->c);
}

static void
side_connected(void *arg)
{
	((struct side *)arg)->connected++;
}

static void
side_drained(void *arg)
{
	((struct side *)arg)->drained++;
}

static void
side_tls_done(void *arg, bool ok, const char *text)
{
	struct side *s = arg;

	if (ok)
		s->tls_ok++;
	else
		s->tls_failed++;
	util_strlcpy(s->tls_text, text, sizeof(s->tls_text));
	if (s->free_in_tls)
		conn_free(&s->c);
}

static void
side_timeout(void *arg)
{
	((struct side *)arg)->timeouts++;
}

static void
side_ended(void *arg, enum conn_end end, const char *why)
{
	struct side *s = arg;

	s->ended++;
	s->end = end;
	util_strlcpy(s->why, why, sizeof(s->why));
	if (s->free_in_ended)
		conn_free(&s->c);
}

static const struct conn_ops side_ops = {
	.connected = side_connected,
	.readable = side_readable,
	.drained = side_drained,
	.tls_done = side_tls_done,
	.timeout = side_timeout,
	.ended = side_ended,
};

static void
side_init(struct side *s)
{
	memset(s, 0, sizeof(*s));
	s->got = evbuffer_new();
}

static void
side_clear(struct side *s)
{
	conn_free(&s->c);
	evbuffer_free(s->got);
}

/* Whether s has read text (anywhere in what it got). */
static bool
side_has(struct side *s, const char *text)
{
	return evbuffer_search(s->got, text, strlen(text), NULL).pos >= 0;
}

/* ------------------------------------------------------------------ */
/* the loop and the sockets */

struct world {
	struct event_base *base;
	int lfd;                   /* listening on 127.0.0.1 */
	struct sockaddr_in addr;
	struct side cli, srv;
};

static int
world_setup(void **state)
{
	struct world *w = xcalloc(1, sizeof(*w));
	socklen_t alen = sizeof(w->addr);

	w->base = event_base_new();
	assert_non_null(w->base);
	w->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(w->lfd >= 0);
	w->addr.sin_family = AF_INET;
	w->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(w->lfd, (struct sockaddr *)&w->addr,
	    sizeof(w->addr)), 0);
	assert_int_equal(listen(w->lfd, 16), 0);
	assert_int_equal(getsockname(w->lfd, (struct sockaddr *)&w->addr,
	    &alen), 0);
	side_init(&w->cli);
	side_init(&w->srv);
	*state = w;
	return 0;
}

static int
world_teardown(void **state)
{
	struct world *w = *state;

	side_clear(&w->cli);
	side_clear(&w->srv);
	/* libevent finishes freeing a bufferevent from the loop (its
	 * finalizers; one whose reading stopped at the read bound is not
	 * finished by event_base_free()): one pass, as a server's loop goes on */
	event_base_loop(w->base, EVLOOP_NONBLOCK);
	close(w->lfd);
	event_base_free(w->base);
	free(w);
	return 0;
}

/* One turn of the loop, never blocking for more than 100 ms. */
static void
turn(struct world *w)
{
	struct timeval tv = { 0, 100 * 1000 };

	event_base_loopexit(w->base, &tv);
	event_base_loop(w->base, EVLOOP_ONCE);
}

/* Run the loop until *flag is nonzero (or fail after WAIT_MS). */
static void
run_until(struct world *w, const int *flag, const char *what)
{
	int64_t end = util_mono_ms() + WAIT_MS;

	while (*flag == 0) {
		if (util_mono_ms() > end)
			fail_msg("timed out waiting for %s", what);
		turn(w);
	}
}

/* Run the loop until s has read text. */
static void
run_until_read(struct world *w, struct side *s, const char *text)
{
	int64_t end = util_mono_ms() + WAIT_MS;

	while (!side_has(s, text)) {
		if (util_mono_ms() > end)
			fail_msg("timed out waiting for \"%s\"", text);
		turn(w);
	}
}

/* Run the loop for about ms (for things that must NOT happen). */
static void
run_for(struct world *w, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
		.tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	event_base_loopexit(w->base, &tv);
	event_base_dispatch(w->base);
}

/* The next connection on the listener (the kernel completes loopback
 * handshakes by itself). */
static int
accept_one(struct world *w)
{
	struct pollfd p = { .fd = w->lfd, .events = POLLIN };
	int fd;

	assert_int_equal(poll(&p, 1, WAIT_MS), 1);
	fd = accept(w->lfd, NULL, NULL);
	assert_true(fd >= 0);
	return fd;
}

/* A client conn connected to the listener and its server conn (tls: the
 * server side's implicit TLS context, or NULL). */
static void
pair(struct world *w, SSL_CTX *tls, unsigned handshake_ms)
{
	char err[256];

	w->cli.c = conn_connect(w->base, (struct sockaddr *)&w->addr,
	    sizeof(w->addr), NULL, 0, WAIT_MS, &side_ops, &w->cli, err,
	    sizeof(err));
	if (w->cli.c == NULL)
		fail_msg("connect: %s", err);
	w->srv.c = conn_accept(w->base, accept_one(w), tls, handshake_ms,
	    &side_ops, &w->srv);
	assert_non_null(w->srv.c);
	run_until(w, &w->cli.connected, "connected");
}

static void
say(struct side *s, const char *text)
{
	evbuffer_add(conn_output(s->c), text, strlen(text));
}

/* ------------------------------------------------------------------ */
/* plain */

static void
test_plain_both_ways(void **state)
{
	struct world *w = *state;

	pair(w, NULL, 0);
	assert_false(conn_tls_active(w->cli.c));
	say(&w->cli, "EHLO client.test\r\n");
	run_until_read(w, &w->srv, "EHLO client.test\r\n");
	say(&w->srv, "250 ok\r\n");
	run_until_read(w, &w->cli, "250 ok\r\n");
	/* the server's output emptied: drained */
	run_until(w, &w->srv.drained, "drained");
	assert_int_equal(w->srv.ended + w->cli.ended, 0);
}

static void
test_connect_refused(void **state)
{
	struct world *w = *state;
	struct sockaddr_in to = { .sin_family = AF_INET };
	socklen_t tolen = sizeof(to);
	int held = socket(AF_INET, SOCK_STREAM, 0);
	char err[256];

	/* a port nobody listens on, held (bound, not listening) so that no
	 * one else takes it meanwhile */
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(held, (struct sockaddr *)&to, sizeof(to)), 0);
	assert_int_equal(getsockname(held, (struct sockaddr *)&to, &tolen), 0);
	w->cli.c = conn_connect(w->base, (struct sockaddr *)&to, sizeof(to),
	    NULL, 0, WAIT_MS, &side_ops, &w->cli, err, sizeof(err));
	if (w->cli.c != NULL) {   /* else refused at once: also right */
		run_until(w, &w->cli.ended, "the connect failing");
		assert_int_equal(w->cli.end, CONN_END_ERROR);
		assert_int_equal(w->cli.connected, 0);
		assert_true(strlen(w->cli.why) > 0);
	}
	close(held);
}

static void
test_connect_source_address(void **state)
{
	struct world *w = *state;
	struct sockaddr_in from = { .sin_family = AF_INET };
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	char err[256], text[INET_ADDRSTRLEN];
	int fd;

	/* another loopback address, as a source-address pool would bind */
	inet_pton(AF_INET, "127.0.0.2", &from.sin_addr);
	w->cli.c = conn_connect(w->base, (struct sockaddr *)&w->addr,
	    sizeof(w->addr), (struct sockaddr *)&from, sizeof(from), WAIT_MS,
	    &side_ops, &w->cli, err, sizeof(err));
	if (w->cli.c == NULL)
		fail_msg("connect: %s", err);
	fd = accept_one(w);
	assert_int_equal(getpeername(fd, (struct sockaddr *)&peer, &plen), 0);
	inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
	assert_string_equal(text, "127.0.0.2");
	w->srv.c = conn_accept(w->base, fd, NULL, 0, &side_ops, &w->srv);
	run_until(w, &w->cli.connected, "connected");
}

static void
test_connect_bind_fails(void **state)
{
	struct world *w = *state;
	struct sockaddr_in from = { .sin_family = AF_INET };
	char err[256] = "";

	/* an address this host does not have */
	inet_pton(AF_INET, "192.0.2.1", &from.sin_addr);
	w->cli.c = conn_connect(w->base, (struct sockaddr *)&w->addr,
	    sizeof(w->addr), (struct sockaddr *)&from, sizeof(from), WAIT_MS,
	    &side_ops, &w->cli, err, sizeof(err));
	assert_null(w->cli.c);
	assert_true(strlen(err) > 0);
}

/* ------------------------------------------------------------------ */
/* the timer */

struct drip {
	struct side *s;
	struct event *ev;
	unsigned left;     /* octets still to send; UINT_MAX: for ever */
	unsigned sent;
};

static void
drip_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct drip *d = arg;
	struct timeval tv = { 0, 20 * 1000 };

	if (d->left == 0)
		return;
	say(d->s, "x");
	d->sent++;
	if (d->left != UINT_MAX)
		d->left--;
	evtimer_add(d->ev, &tv);
}

static void
drip_start(struct world *w, struct drip *d, unsigned octets)
{
	d->s = &w->cli;
	d->left = octets;
	d->ev = evtimer_new(w->base, drip_cb, d);
	event_active(d->ev, 0, 0);
}

static void
test_deadline_despite_drip(void **state)
{
	struct world *w = *state;
	struct drip d = { 0 };

	pair(w, NULL, 0);
	/* one octet every 20 ms for ever, a deadline of 300 ms: the
	 * octets must not push it back (the slow-drip defence) */
	drip_start(w, &d, UINT_MAX);
	conn_set_deadline(w->srv.c, 300);
	run_until(w, &w->srv.timeouts, "the deadline");
	assert_true(w->srv.readable > 0);   /* octets did arrive */
	assert_int_equal(w->srv.ended, 0);  /* and it is still open */
	/* it fired once: not again without a new one */
	unsigned seen = d.sent;
	while (d.sent < seen + 20)
		turn(w);
	assert_int_equal(w->srv.timeouts, 1);
	/* a new deadline replaces none, and 0 disarms */
	conn_set_deadline(w->srv.c, 100);
	conn_set_deadline(w->srv.c, 0);
	seen = d.sent;
	while (d.sent < seen + 20)
		turn(w);
	assert_int_equal(w->srv.timeouts, 1);
	event_free(d.ev);
}

/* ------------------------------------------------------------------ */
/* TLS */

struct starttls_ctx {
	SSL_CTX *ctx;
	bool done;
};

/* Server: once "STARTTLS" and the line pipelined after it are both in,
 * take the first, say 220 and switch: the second must be lost. */
static void
server_starttls(struct side *s)
{
	struct starttls_ctx *st = s->ctx;
	struct evbuffer *in = conn_input(s->c);

	if (st->done || evbuffer_search(in, "<evil@x>\r\n", 10, NULL).pos < 0)
		return;
	st->done = true;
	evbuffer_drain(in, strlen("STARTTLS\r\n"));
	say(s, "220 go ahead\r\n");
	assert_int_equal(conn_starttls(s->c, st->ctx, true, NULL, false, 0), 0);
	s->keep_input = false;   /* from now on, record what comes */
}

/* Client: on the 220, switch too. */
static void
client_starttls(struct side *s)
{
	struct starttls_ctx *st = s->ctx;

	if (st->done || !side_has(s, "220 go ahead\r\n"))
		return;
	st->done = true;
	assert_int_equal(conn_starttls(s->c, st->ctx, false, "localhost", true,
	    0), 0);
}

/* A connected pair switched to TLS by STARTTLS: the client sends first
 * (STARTTLS and a line pipelined after it), both handshakes succeed. */
static void
starttls_pair(struct world *w, struct starttls_ctx *sst,
    struct starttls_ctx *cst, const char *first)
{
	pair(w, NULL, 0);
	w->srv.keep_input = true;
	w->srv.on_read = server_starttls;
	w->srv.ctx = sst;
	w->cli.on_read = client_starttls;
	w->cli.ctx = cst;
	say(&w->cli, first);
	run_until(w, &w->srv.tls_ok, "the server's handshake");
	run_until(w, &w->cli.tls_ok, "the client's handshake");
}

static void
test_starttls_drops_pipelined(void **state)
{
	struct world *w = *state;
	struct starttls_ctx sst = { .ctx = server_ctx() };
	struct starttls_ctx cst = { .ctx = client_ctx() };

	/* RFC 3207 5: a command pipelined after STARTTLS in clear text */
	starttls_pair(w, &sst, &cst, "STARTTLS\r\nMAIL FROM:<evil@x>\r\n");
	assert_non_null(strstr(w->srv.tls_text, "TLSv1."));
	assert_true(conn_tls_active(w->srv.c) && conn_tls_active(w->cli.c));
	assert_true(conn_tls_verified(w->cli.c));
	/* the first line over TLS is the first the server sees */
	say(&w->cli, "EHLO again\r\n");
	run_until_read(w, &w->srv, "\r\n");
	assert_false(side_has(&w->srv, "evil"));
	assert_true(side_has(&w->srv, "EHLO again\r\n"));
	/* a second switch is refused */
	assert_int_equal(conn_starttls(w->cli.c, cst.ctx, false, "localhost",
	    false, 0), -1);
	SSL_CTX_free(sst.ctx);
	SSL_CTX_free(cst.ctx);
}

/*
 * After STARTTLS the owner's output is where unsent data waits, so an
 * owner's bound on it (a client that never reads its replies) engages:
 * the TLS filter passes at most 64 KiB on to the socket's bufferevent.
 * Before, the filter moved everything there and its own output looked
 * empty however much the peer left unread.
 */
static void
test_starttls_output_stays_visible(void **state)
{
	struct world *w = *state;
	struct starttls_ctx sst = { .ctx = server_ctx() };
	struct starttls_ctx cst = { .ctx = client_ctx() };
	static char chunk[1024 * 1024];
	size_t total = 8 * sizeof(chunk), got;

	starttls_pair(w, &sst, &cst, "STARTTLS\r\n<evil@x>\r\n");
	/* the client reads nothing more: its conn stops reading at
	 * CONN_READ_MAX */
	w->cli.keep_input = true;
	w->cli.on_read = NULL;
	memset(chunk, 'x', sizeof(chunk));
	for (size_t i = 0; i < total / sizeof(chunk); i++)
		evbuffer_add(conn_output(w->srv.c), chunk, sizeof(chunk));
	run_for(w, 300);
	/* the kernel's buffers and 64 KiB under the filter hold far less
	 * than 8 MiB: most of it must still be in the owner's view */
	assert_true(evbuffer_get_length(conn_output(w->srv.c)) > total / 2);
	/* it reads again */
	w->cli.keep_input = false;
	evbuffer_add_buffer(w->cli.got, conn_input(w->cli.c));
	for (int k = 0; k < 600; k++) {
		got = evbuffer_get_length(w->cli.got);
		if (got >= total)
			break;
		run_for(w, 50);
	}
	assert_true(evbuffer_get_length(w->cli.got) >= total);
	SSL_CTX_free(sst.ctx);
	SSL_CTX_free(cst.ctx);
}

static void
start_client_tls(struct side *s)
{
	struct starttls_ctx *st = s->ctx;

	if (!st->done) {
		st->done = true;
		assert_int_equal(conn_starttls(s->c, st->ctx, false, s->why,
		    true, 0), 0);
	}
}

/* Implicit TLS: the client switches at once; verify against host. */
static void
implicit_pair(struct world *w, SSL_CTX *sctx, struct starttls_ctx *cst,
    const char *host)
{
	pair(w, sctx, WAIT_MS);
	util_strlcpy(w->cli.why, host, sizeof(w->cli.why));
	w->cli.ctx = cst;
	start_client_tls(&w->cli);
}

static void
test_implicit_tls_and_close_notify(void **state)
{
	struct world *w = *state;
	SSL_CTX *sctx = server_ctx();
	struct starttls_ctx cst = { .ctx = client_ctx() };
	size_t big = 300 * 1024;
	char *blob = xmalloc(big);

	implicit_pair(w, sctx, &cst, "localhost");
	run_until(w, &w->srv.tls_ok, "the server's handshake");
	run_until(w, &w->cli.tls_ok, "the client's handshake");
	/* a large reply, then close: all of it arrives, then the end */
	memset(blob, 'y', big);
	evbuffer_add(conn_output(w->srv.c), blob, big);
	conn_close(w->srv.c, WAIT_MS);
	assert_int_equal(w->srv.ended, 0);   /* never from inside the call */
	assert_true(conn_closing(w->srv.c));
	run_until(w, &w->srv.ended, "the server's close");
	assert_int_equal(w->srv.end, CONN_END_CLOSED);
	run_until(w, &w->cli.ended, "the client seeing the end");
	assert_int_equal(w->cli.end, CONN_END_EOF);
	assert_int_equal(evbuffer_get_length(w->cli.got), big);
	free(blob);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cst.ctx);
}

static void
test_verify_wrong_name(void **state)
{
	struct world *w = *state;
	SSL_CTX *sctx = server_ctx();
	struct starttls_ctx cst = { .ctx = client_ctx() };

	w->srv.free_in_tls = true;
	implicit_pair(w, sctx, &cst, "mx.other.test");
	run_until(w, &w->cli.tls_failed, "the client refusing");
	assert_non_null(strstr(w->cli.tls_text, "verif"));
	assert_int_equal(w->cli.tls_ok, 0);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cst.ctx);
}

static void
test_handshake_bound(void **state)
{
	struct world *w = *state;
	SSL_CTX *sctx = server_ctx();
	char err[256];

	/* a client that connects to an implicit-TLS port and says nothing */
	w->cli.c = conn_connect(w->base, (struct sockaddr *)&w->addr,
	    sizeof(w->addr), NULL, 0, WAIT_MS, &side_ops, &w->cli, err,
	    sizeof(err));
	assert_non_null(w->cli.c);
	w->srv.c = conn_accept(w->base, accept_one(w), sctx, 200, &side_ops,
	    &w->srv);
	w->srv.free_in_tls = true;
	run_until(w, &w->srv.tls_failed, "the handshake bound");
	assert_string_equal(w->srv.tls_text, "handshake timed out");
	assert_null(w->srv.c);
	/* the client sees the connection go */
	run_until(w, &w->cli.ended, "the client seeing the end");
	SSL_CTX_free(sctx);
}

/* ------------------------------------------------------------------ */
/* closing, back-pressure, freeing */

static void
test_close_unread_output(void **state)
{
	struct world *w = *state;
	size_t big = 32 * 1024 * 1024;   /* beyond the socket buffers */
	char *blob = xcalloc(1, big);

	pair(w, NULL, 0);
	/* the client never reads: the flush cannot finish */
	w->cli.keep_input = true;
	evbuffer_add(conn_output(w->srv.c), blob, big);
	conn_close(w->srv.c, 200);
	run_until(w, &w->srv.ended, "the flush bound");
	assert_int_equal(w->srv.end, CONN_END_TIMEOUT);
	free(blob);
}

static void
test_close_nothing_to_flush(void **state)
{
	struct world *w = *state;

	pair(w, NULL, 0);
	w->srv.free_in_ended = true;
	conn_close(w->srv.c, 1000);
	conn_close(w->srv.c, 1000);   /* again: nothing more */
	assert_int_equal(w->srv.ended, 0);
	run_until(w, &w->srv.ended, "the close");
	assert_int_equal(w->srv.end, CONN_END_CLOSED);
	assert_null(w->srv.c);
	run_until(w, &w->cli.ended, "the client seeing the end");
	assert_int_equal(w->cli.end, CONN_END_EOF);
	run_for(w, 50);
	assert_int_equal(w->srv.ended, 1);
}

static void
test_eof_then_write(void **state)
{
	struct world *w = *state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char buf[64];
	size_t got = 0;

	/* a raw client that half-closes after its last command */
	assert_int_equal(connect(fd, (struct sockaddr *)&w->addr,
	    sizeof(w->addr)), 0);
	w->srv.c = conn_accept(w->base, accept_one(w), NULL, 0, &side_ops,
	    &w->srv);
	assert_int_equal(write(fd, "QUIT\r\n", 6), 6);
	shutdown(fd, SHUT_WR);
	run_until(w, &w->srv.ended, "the server seeing EOF");
	assert_int_equal(w->srv.end, CONN_END_EOF);
	assert_true(side_has(&w->srv, "QUIT\r\n"));
	/* the reply still goes out, then the close */
	say(&w->srv, "221 bye\r\n");
	w->srv.free_in_ended = true;   /* the socket closes at the free */
	conn_close(w->srv.c, WAIT_MS);
	while (w->srv.ended < 2)
		turn(w);
	assert_int_equal(w->srv.end, CONN_END_CLOSED);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&p, 1, WAIT_MS), 1);
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		assert_true(n >= 0);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	assert_string_equal(buf, "221 bye\r\n");
	close(fd);
}

/* Send n octets of 'x' from s (a chunk at a time: the output is bounded
 * by nothing here, the test keeps it small). */
static void
say_n(struct side *s, size_t n)
{
	static char chunk[64 * 1024];

	memset(chunk, 'x', sizeof(chunk));
	while (n > 0) {
		size_t k = n < sizeof(chunk) ? n : sizeof(chunk);

		evbuffer_add(conn_output(s->c), chunk, k);
		n -= k;
	}
}

/*
 * Back-pressure: an owner that does not take its input (waiting for
 * another process) has the connection stop reading at CONN_READ_MAX,
 * and reading goes on once it takes some. After STARTTLS too: the bound
 * is set again on the TLS filter that replaced the plain bufferevent.
 */
static void
check_read_bound(struct world *w, size_t total)
{
	size_t held;

	int64_t end = util_mono_ms() + WAIT_MS;

	w->srv.keep_input = true;
	say_n(&w->cli, total);
	while (evbuffer_get_length(conn_input(w->srv.c)) < CONN_READ_MAX) {
		if (util_mono_ms() > end)
			fail_msg("only %zu octets arrived",
			    evbuffer_get_length(conn_input(w->srv.c)));
		turn(w);
	}
	/* time to read on, if it would */
	run_for(w, 300);
	/* libevent reads up to a step past the mark (TLS: a record) */
	held = evbuffer_get_length(conn_input(w->srv.c));
	if (held > CONN_READ_MAX + 64 * 1024)
		fail_msg("%zu octets read and held, want at most about %u",
		    held, CONN_READ_MAX);
	w->srv.keep_input = false;
	evbuffer_add_buffer(w->srv.got, conn_input(w->srv.c));
	for (int k = 0; k < 600 && evbuffer_get_length(w->srv.got) < total;
	    k++)
		run_for(w, 50);
	assert_int_equal(evbuffer_get_length(w->srv.got), total);
}

static void
test_read_bound(void **state)
{
	struct world *w = *state;

	pair(w, NULL, 0);
	/* far beyond the socket buffers and CONN_READ_MAX */
	check_read_bound(w, 16 * 1024 * 1024);
}

static void
test_read_bound_after_starttls(void **state)
{
	struct world *w = *state;
	struct starttls_ctx sst = { .ctx = server_ctx() };
	struct starttls_ctx cst = { .ctx = client_ctx() };

	starttls_pair(w, &sst, &cst, "STARTTLS\r\n<evil@x>\r\n");
	w->cli.on_read = NULL;
	evbuffer_drain(w->srv.got, evbuffer_get_length(w->srv.got));
	check_read_bound(w, 16 * 1024 * 1024);
	SSL_CTX_free(sst.ctx);
	SSL_CTX_free(cst.ctx);
}

static void
test_free_in_readable(void **state)
{
	struct world *w = *state;

	pair(w, NULL, 0);
	w->srv.free_in_readable = true;
	say(&w->cli, "one\r\n");
	run_until(w, &w->srv.readable, "the server reading");
	assert_null(w->srv.c);
	/* the socket closed: the client sees it; the server hears nothing */
	run_until(w, &w->cli.ended, "the client seeing the end");
	assert_int_equal(w->srv.ended, 0);
	assert_int_equal(w->srv.readable, 1);
}

static void
test_free_in_ended(void **state)
{
	struct world *w = *state;

	pair(w, NULL, 0);
	w->srv.free_in_ended = true;
	conn_free(&w->cli.c);   /* outside any callback: at once */
	run_until(w, &w->srv.ended, "the server seeing the end");
	assert_null(w->srv.c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_table),
		cmocka_unit_test_setup_teardown(test_plain_both_ways,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_connect_refused,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_connect_source_address,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_connect_bind_fails,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_deadline_despite_drip,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_starttls_output_stays_visible,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_starttls_drops_pipelined,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_implicit_tls_and_close_notify,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_verify_wrong_name,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_handshake_bound,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_close_unread_output,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_close_nothing_to_flush,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_eof_then_write,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_read_bound,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_read_bound_after_starttls,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_free_in_readable,
		    world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_free_in_ended,
		    world_setup, world_teardown),
	};

	return cmocka_run_group_tests(tests, make_cert, drop_cert);
}
