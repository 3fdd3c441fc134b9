/*
 * smtp_server.c - connections, limits and timeouts around smtp_session
 * (see smtp_server.h). Each client is a connection of lib/conn.h (the
 * reads, writes, TLS and the one deadline timer) and an smtp_session;
 * this file wires the two and keeps the limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtpd/auth.h"
#include "conf/config.h"
#include "dns/dns.h"
#include "proto/ctl.h"
#include "lib/conn.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "smtpd/peer_key.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_queue_ipc.h"
#include "smtpd/smtp_server.h"
#include "smtpd/smtp_session.h"
#include "lib/tls.h"
#include "lib/util.h"

/* One client connection: its transport (lib/conn.h) and its session. */
struct client {
	struct smtp_server *srv;
	struct conn *io;
	struct smtp_session *session;
	struct smtp_session_client peer;
	char addr[INET6_ADDRSTRLEN];
	uint8_t key[PEER_KEY_LEN]; /* the client, for max_connections_per_ip */
	bool eof;                 /* the client half-closed; finish, then go */
	bool implicit;            /* the handshake of an implicit-TLS listener
	                           * runs: the greeting follows it */
	struct client *next, *prev;
};

struct smtp_server {
	const struct config *cfg;
	struct event_base *base;
	struct evconnlistener *listeners[CONFIG_MAX_LISTENERS];
	size_t nlisteners;
	struct evconnlistener *submit;   /* submit_socket, or NULL */
	struct smtp_queue_ipc *queue;
	struct dns *dns;
	SSL_CTX *tls;             /* NULL: no TLS; replaced on reload */
	struct auth *auth;        /* AUTH verifier, NULL without passwd_file */
	struct ctl *ctl;          /* to the parent */
	struct event *sig_term, *sig_int, *sig_hup;
	struct client *clients;
	unsigned nclients;
	int exit_status;
};

/* Free c with its session (from any callback: lib/conn.h defers its own
 * part). */
static void
client_free(struct client *c)
{
	struct smtp_server *srv = c->srv;

	smtp_session_free(&c->session);
	conn_free(&c->io);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nclients--;
	free(c);
}

/* ---- what the session asks of its transport (smtp_session_io) ---- */

/*
 * The session's input deadline: per command line, a data budget
 * (smtp_session.c). A deadline, never a libevent read timeout: those
 * restart on every octet, so a client sending one octet at a time would
 * hold the connection for ever.
 */
static void
io_set_deadline(void *arg, unsigned ms)
{
	struct client *c = arg;

	conn_set_deadline(c->io, ms);
}

static void
io_close(void *arg)
{
	struct client *c = arg;

	/* Freed once the last reply is flushed (ended: CLOSED); a client
	 * that reads its last replies slowly, or not at all, has
	 * timeout_command for them, then the connection goes anyway. */
	conn_close(c->io, c->srv->cfg->timeout_command * 1000);
}

/*
 * A half-closed client sends nothing more: once its session no longer
 * waits for the queue and every reply is flushed, the connection is done.
 */
static void
client_check_eof(struct client *c)
{
	if (!c->eof || conn_closing(c->io) || smtp_session_waiting(c->session))
		return;
	if (evbuffer_get_length(conn_output(c->io)) > 0)
		return;   /* drained comes back here */
	log_info("smtp session=%s event=disconnect reason=eof",
	    smtp_session_id(c->session));
	conn_close(c->io, c->srv->cfg->timeout_command * 1000);
}

static void
io_progress(void *arg)
{
	client_check_eof(arg);
}

/* After "220 Ready to start TLS": TLS in place, within timeout_command
 * however the handshake trickles (conn.h drops what the client pipelined
 * in clear text). */
static void
io_starttls(void *arg)
{
	struct client *c = arg;

	if (c->srv->tls == NULL || conn_starttls(c->io, c->srv->tls, true, NULL,
	    false, c->srv->cfg->timeout_command * 1000) == -1) {
		log_err("smtp session=%s event=tls-failed reason=\"cannot start "
		    "TLS\"", smtp_session_id(c->session));
		io_close(c);
	}
}

static const struct smtp_session_io session_io = {
	.set_deadline = io_set_deadline,
	.close = io_close,
	.progress = io_progress,
	.starttls = io_starttls,
};

/* ---- what the transport tells us (conn_ops) ---- */

static void
on_readable(void *arg)
{
	struct client *c = arg;

	smtp_session_process(c->session);
}

static void
on_drained(void *arg)
{
	struct client *c = arg;

	/* Output drained: a session paused on unread replies may go on. */
	smtp_session_process(c->session);
	client_check_eof(c);
}

/* The handshake is over: the session goes on over TLS, or the connection
 * ends. */
static void
on_tls_done(void *arg, bool ok, const char *text)
{
	struct client *c = arg;

	if (!ok) {
		log_info("smtp session=%s event=tls-failed client=%s reason=\"%s\"",
		    smtp_session_id(c->session), c->addr, text);
		client_free(c);
		return;
	}
	smtp_session_tls_started(c->session, conn_input(c->io),
	    conn_output(c->io), text);
	if (c->implicit) {
		c->implicit = false;
		smtp_session_start(c->session);
	}
	smtp_session_process(c->session);
}

/* The session's input deadline passed. */
static void
on_timeout(void *arg)
{
	struct client *c = arg;

	smtp_session_timeout(c->session);
}

static void
on_ended(void *arg, enum conn_end end, const char *why)
{
	struct client *c = arg;

	if (conn_closing(c->io)) {
		/* a client that reads nothing will not read a 421 either */
		if (end == CONN_END_TIMEOUT)
			log_info("smtp session=%s event=disconnect "
			    "reason=write-timeout", smtp_session_id(c->session));
		client_free(c);
		return;
	}
	if (end == CONN_END_EOF) {
		/* A half-close after pipelined commands ("." QUIT, BDAT LAST):
		 * finish what was sent; a reply still due is written if the
		 * client reads it. */
		c->eof = true;
		smtp_session_process(c->session);
		client_check_eof(c);
		return;
	}
	log_info("smtp session=%s event=disconnect reason=error",
	    smtp_session_id(c->session));
	client_free(c);
}

static const struct conn_ops client_conn_ops = {
	.readable = on_readable,
	.drained = on_drained,
	.tls_done = on_tls_done,
	.timeout = on_timeout,
	.ended = on_ended,
};

/* RCPT-time domain check over dns.c (smtp_session.h). */
struct domain_check {
	struct dns_query *q;
	smtp_domain_cb cb;
	void *arg;
};

static void
domain_mx_cb(void *arg, const struct dns_mx_result *r)
{
	struct domain_check *dc = arg;
	enum smtp_domain_verdict v = SMTP_DOMAIN_OK;

	/* Only the null MX is refused here (RFC 7505 3). A domain that does
	 * not exist is left to the relay's permanent failure: split-horizon
	 * and not-yet-published domains are common on trusted networks. */
	if (r->status == DNS_NULL_MX)
		v = SMTP_DOMAIN_NULL_MX;
	smtp_domain_cb cb = dc->cb;
	void *cbarg = dc->arg;
	free(dc);
	cb(cbarg, v);
}

static void *
domain_check_start(void *ctx, const char *domain, smtp_domain_cb cb, void *arg)
{
	struct domain_check *dc = xcalloc(1, sizeof(*dc));

	dc->cb = cb;
	dc->arg = arg;
	dc->q = dns_resolve_mx(ctx, domain, domain_mx_cb, dc);
	return dc;
}

static void
domain_check_cancel(void *ctx, void *handle)
{
	struct domain_check *dc = handle;

	dns_cancel(dc->q);
	free(dc);
}

static const struct smtp_domain_check_ops domain_check_ops = {
	.start = domain_check_start,
	.cancel = domain_check_cancel,
};

/* Connections from the client of key (peer_key.h: an IPv4 address, an
 * IPv6 network of client_ipv6_prefix bits), or for local submission
 * (AF_UNIX, no address to tell clients apart) of the same peer uid
 * (SO_PEERCRED). */
static unsigned
count_from(struct smtp_server *srv, const uint8_t key[PEER_KEY_LEN],
    bool local, unsigned long uid)
{
	unsigned n = 0;

	for (struct client *c = srv->clients; c; c = c->next) {
		if (local)
			n += c->peer.local && c->peer.uid == uid;
		else
			n += !c->peer.local &&
			    memcmp(c->key, key, PEER_KEY_LEN) == 0;
	}
	return n;
}

/* Refuse a connection over a limit with a 421 (RFC 5321 3.1), then close. */
static void
refuse(struct smtp_server *srv, evutil_socket_t fd, const char *addr,
    const char *reply, const char *why)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "%s\r\n", reply);

	/* A best-effort, non-blocking write: the socket is fresh, its buffer
	 * empty, so the short line fits; we do not wait for anything. */
	if (n > 0)
		(void)send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	log_info("smtp event=refused client=%s reason=%s", addr, why);
	close(fd);
}

/* A connection within the limits: its transport and its session. */
static void
client_new(struct smtp_server *srv, struct evconnlistener *l,
    evutil_socket_t fd, const struct sockaddr *sa, const char *addr,
    unsigned port, const uint8_t key[PEER_KEY_LEN], const struct ucred *cred)
{
	const struct config *cfg = srv->cfg;
	bool local = sa->sa_family == AF_UNIX;
	struct client *c = xcalloc(1, sizeof(*c));

	c->srv = srv;
	memcpy(c->key, key, sizeof(c->key));
	util_strlcpy(c->addr, addr, sizeof(c->addr));
	c->peer.addr = c->addr;
	c->peer.port = port;
	/* A local program may send anywhere, as with Postfix's sendmail. */
	c->peer.relay_ok = local || config_is_relay_client(cfg, sa);
	c->peer.local = local;
	c->peer.uid = (unsigned long)cred->uid;
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i] == l)   /* its policy (auth, relay) */
			c->peer.listener = &cfg->listeners[i];
	enum config_listener_tls ltls = c->peer.listener != NULL ?
	    c->peer.listener->tls : CONFIG_LISTENER_TLS_NONE;
	c->implicit = ltls == CONFIG_LISTENER_TLS_IMPLICIT;
	/* RFC 8314 3.3: TLS from the first octet, the handshake within the
	 * greeting's time: the session's greeting deadline, which starts at
	 * smtp_session_new() below, bounds handshake and EHLO together */
	if (!c->implicit || srv->tls != NULL)
		c->io = conn_accept(srv->base, fd, c->implicit ? srv->tls : NULL,
		    c->implicit ? cfg->timeout_greeting * 1000 : 0,
		    &client_conn_ops, c);
	if (c->io == NULL) {
		log_err("smtp event=refused client=%s reason=\"implicit TLS "
		    "without a usable certificate\"", addr);
		close(fd);
		free(c);
		return;
	}
	c->session = smtp_session_new(cfg, &c->peer, conn_input(c->io),
	    conn_output(c->io), &session_io, c, &smtp_queue_ipc_ops, srv->queue);
	if (srv->dns != NULL && c->peer.relay_ok)
		smtp_session_set_domain_check(c->session, &domain_check_ops, srv->dns);
	if (srv->auth != NULL)
		smtp_session_set_auth(c->session, &auth_ops, srv->auth);
	if (ltls == CONFIG_LISTENER_TLS_STARTTLS && srv->tls != NULL)
		smtp_session_set_starttls(c->session, true);
	c->next = srv->clients;
	if (srv->clients)
		srv->clients->prev = c;
	srv->clients = c;
	srv->nclients++;
	if (local)
		log_info("smtp session=%s event=local-submission uid=%lu gid=%lu "
		    "pid=%ld", smtp_session_id(c->session), (unsigned long)cred->uid,
		    (unsigned long)cred->gid, (long)cred->pid);
	if (!c->implicit)   /* else the greeting follows the handshake */
		smtp_session_start(c->session);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct smtp_server *srv = arg;
	const struct config *cfg = srv->cfg;
	char addr[INET6_ADDRSTRLEN] = "unknown";
	unsigned port = 0;
	char reply[200];
	uint8_t key[PEER_KEY_LEN];
	/* Local submission: who is calling, from the kernel. */
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	bool local = sa->sa_family == AF_UNIX;

	if (local) {
		socklen_t clen = sizeof(cred);

		util_strlcpy(addr, "local", sizeof(addr));
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1) {
			log_warn("smtp event=refused client=local reason=peercred "
			    "error=\"%s\"", strerror(errno));
			close(fd);
			return;
		}
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
		port = ntohs(sin6->sin6_port);
	}
	if (srv->nclients >= cfg->max_connections) {
		snprintf(reply, sizeof(reply),
		    "421 4.3.2 %s Error: too many connections, try again later",
		    cfg->hostname);
		refuse(srv, fd, addr, reply, "max_connections");
		return;
	}
	peer_key_make(addr, cfg->client_ipv6_prefix, key);
	if (count_from(srv, key, local, (unsigned long)cred.uid) >=
	    cfg->max_connections_per_ip) {
		char who[64];

		snprintf(reply, sizeof(reply),
		    "421 4.7.0 %s Error: too many connections from your %s",
		    cfg->hostname, local ? "user" : "address");
		if (local)
			snprintf(who, sizeof(who), "local uid=%lu",
			    (unsigned long)cred.uid);
		refuse(srv, fd, local ? who : addr, reply,
		    "max_connections_per_ip");
		return;
	}

	client_new(srv, l, fd, sa, addr, port, key, &cred);
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	/* EMFILE and friends: log and keep listening; libevent retries. */
	log_warn("smtp event=accept-error error=\"%s\"", strerror(errno));
}

static void
uncongested_cb(void *arg)
{
	struct smtp_server *srv = arg;
	struct client *c, *next;

	for (c = srv->clients; c; c = next) {
		next = c->next;
		if (!conn_closing(c->io))
			smtp_session_process(c->session);
	}
}

static void
server_stop(struct smtp_server *srv, int status)
{
	srv->exit_status = status;
	event_base_loopbreak(srv->base);
}

/* ---- control frames from the parent (proto/ctl.h) ---- */

static void
ctl_peer_fd(void *arg, int fd)
{
	struct smtp_server *srv = arg;

	log_info("smtp event=queue-channel-replaced");
	smtp_queue_ipc_set_fd(srv->queue, fd);
}

static void
ctl_tls_fd(void *arg, int fd)
{
	struct smtp_server *srv = arg;
	char err[256];
	SSL_CTX *ctx;

	ctx = tls_server_ctx_from_fd(fd, tls_min_version(
	    srv->cfg->tls_min_version == CONFIG_TLS_1_3), err, sizeof(err));
	close(fd);
	if (ctx == NULL) {
		log_err("smtp event=tls-reload result=failed reason=\"%s\"", err);
		return;
	}
	/* Open connections hold their own reference (SSL_new). */
	SSL_CTX_free(srv->tls);
	srv->tls = ctx;
	log_info("smtp event=tls-reload result=ok");
}

static void
ctl_shutdown(void *arg)
{
	server_stop(arg, 0);
}

static void
ctl_lost(void *arg, enum ipc_end end, const char *why)
{
	/* The parent is gone: so are we. */
	if (end != IPC_EOF)
		log_err("smtp event=control-error reason=\"%s\"", why);
	server_stop(arg, end == IPC_EOF ? 0 : 1);
}

static const struct ctl_ops ctl_ops = {
	.peer_fd = ctl_peer_fd,
	.tls_fd = ctl_tls_fd,
	.shutdown = ctl_shutdown,
	.lost = ctl_lost,
};

static void
signal_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct smtp_server *srv = arg;

	if (sig == SIGHUP)
		return;   /* reload comes with TLS certificates; ignore for now */
	server_stop(srv, 0);
}

int
smtp_server_run(const struct config *cfg, struct event_base *base,
    struct dns *dns, SSL_CTX *tls, const int *listen_fds, size_t nlisten,
    int submit_fd,
    int queue_fd, int ctl_fd)
{
	struct smtp_server srv = { 0 };

	signal(SIGPIPE, SIG_IGN);
	srv.cfg = cfg;
	srv.tls = tls;
	srv.base = base;
	srv.dns = dns;
	srv.queue = smtp_queue_ipc_new(srv.base, queue_fd, uncongested_cb, &srv);
	if (cfg->passwd_file != NULL)
		srv.auth = auth_new(srv.base, cfg);
	for (size_t i = 0; i < nlisten; i++) {
		util_set_nonblock(listen_fds[i]);
		srv.listeners[i] = evconnlistener_new(srv.base, accept_cb, &srv,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, listen_fds[i]);
		if (srv.listeners[i] == NULL)
			fatal("smtp: cannot listen on %s", cfg->listeners[i].text);
		evconnlistener_set_error_cb(srv.listeners[i], accept_error_cb);
		srv.nlisteners++;
	}
	if (submit_fd != -1) {
		util_set_nonblock(submit_fd);
		srv.submit = evconnlistener_new(srv.base, accept_cb, &srv,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, submit_fd);
		if (srv.submit == NULL)
			fatal("smtp: cannot listen on %s", cfg->submit_socket);
		evconnlistener_set_error_cb(srv.submit, accept_error_cb);
	}
	srv.ctl = ctl_open(srv.base, ctl_fd, CTL_WORKER, &ctl_ops, &srv);
	srv.sig_term = evsignal_new(srv.base, SIGTERM, signal_cb, &srv);
	srv.sig_int = evsignal_new(srv.base, SIGINT, signal_cb, &srv);
	srv.sig_hup = evsignal_new(srv.base, SIGHUP, signal_cb, &srv);
	event_add(srv.sig_term, NULL);
	event_add(srv.sig_int, NULL);
	event_add(srv.sig_hup, NULL);

	log_info("smtp event=ready listeners=%zu", nlisten);
	(void)ctl_send(srv.ctl, CTL_READY, -1);
	event_base_dispatch(srv.base);

	/* Shutting down: tell connected clients, then go. Messages not yet
	 * acknowledged were never promised; the client will retry. */
	for (struct client *c = srv.clients; c; c = c->next)
		smtp_session_shutdown(c->session);
	while (srv.clients) {
		/* Best effort, never blocking: the 421 if the socket takes it. */
		conn_flush_now(srv.clients->io);
		client_free(srv.clients);
	}
	auth_free(&srv.auth);
	for (size_t i = 0; i < srv.nlisteners; i++)
		evconnlistener_free(srv.listeners[i]);
	if (srv.submit != NULL)
		evconnlistener_free(srv.submit);
	smtp_queue_ipc_free(&srv.queue);
	if (srv.dns != NULL)
		dns_free(&srv.dns);
	SSL_CTX_free(srv.tls);
	ctl_free(&srv.ctl);
	event_free(srv.sig_term);
	event_free(srv.sig_int);
	event_free(srv.sig_hup);
	event_base_free(srv.base);
	return srv.exit_status;
}
