/*
 * smtp_server.c - connections, limits and timeouts around smtp_session
 * (see smtp_server.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtpd/auth.h"
#include "conf/config.h"
#include "dns/dns.h"
#include "proto/ctl.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "smtpd/peer_key.h"
#include "smtpd/queue_client.h"
#include "smtpd/smtp_queue_ipc.h"
#include "smtpd/smtp_server.h"
#include "smtpd/smtp_session.h"
#include "lib/tls.h"
#include "lib/util.h"

/* Input buffered beyond this stops reading from the socket until the
 * session has consumed it (it may be waiting for the queue). */
#define READ_HIGH_WATER (256 * 1024)

struct conn {
	struct smtp_server *srv;
	struct bufferevent *bev;
	struct smtp_session *session;
	struct smtp_session_client client;
	char addr[INET6_ADDRSTRLEN];
	uint8_t key[PEER_KEY_LEN]; /* the client, for max_connections_per_ip */
	/* The one deadline of the connection: the session's input deadline
	 * (smtp_session_io.set_deadline), a TLS handshake's, or the flush of
	 * the last replies. Never a libevent read timeout: those restart on
	 * every octet, so a client sending one octet at a time would hold
	 * the connection for ever. */
	struct event *deadline;
	bool closing;
	bool eof;                 /* the client half-closed; finish, then go */
	bool handshake;           /* a TLS handshake runs */
	bool implicit;            /* ... the one of an implicit-TLS listener */
	bool tls;                 /* c->bev is a TLS bufferevent */
	struct event *free_ev;
	struct conn *next, *prev;
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
	struct conn *conns;
	unsigned nconns;
	int exit_status;
};

static void conn_free(struct conn *c);

/* Arm the connection's deadline ms milliseconds from now (0: none). */
static void
conn_deadline(struct conn *c, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
		.tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	if (ms == 0)
		evtimer_del(c->deadline);
	else if (evtimer_add(c->deadline, &tv) == -1)
		fatal("smtp: cannot arm a timer");
}

static void
io_set_deadline(void *arg, unsigned ms)
{
	conn_deadline(arg, ms);
}

/* Every reply is out: end TLS with close_notify (RFC 8314 3.4), then
 * free. */
static void
conn_finish(struct conn *c)
{
	if (c->tls && !c->handshake)
		tls_shutdown(c->bev);
	conn_free(c);
}

static void
free_cb(evutil_socket_t fd, short ev, void *arg)
{
	conn_finish(arg);
}

static void
io_close(void *arg)
{
	struct conn *c = arg;

	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	/* A closing connection must always end in write_cb or at its
	 * deadline. */
	bufferevent_enable(c->bev, EV_WRITE);
	/* A client that reads its last replies slowly, or not at all, has
	 * timeout_command for them, then the connection goes anyway. */
	conn_deadline(c, c->srv->cfg->timeout_command * 1000);
	/* Freed once the last reply is flushed (write_cb), or now if there is
	 * nothing to flush; never from inside the session's own call. */
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		event_active(c->free_ev, 0, 0);
}

/*
 * A half-closed client sends nothing more: once its session no longer
 * waits for the queue and every reply is flushed, the connection is done.
 */
static void
conn_check_eof(struct conn *c)
{
	if (!c->eof || c->closing || smtp_session_waiting(c->session))
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
		return;   /* write_cb comes back here */
	log_info("smtp session=%s event=disconnect reason=eof",
	    smtp_session_id(c->session));
	c->closing = true;
	event_active(c->free_ev, 0, 0);
}

static void
io_progress(void *arg)
{
	conn_check_eof(arg);
}

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* The connection's deadline passed: a handshake that did not finish, a
 * close whose replies were not read, or the session's input deadline. */
static void
deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;

	if (c->handshake) {
		log_info("smtp session=%s event=tls-failed client=%s "
		    "reason=\"handshake timed out\"",
		    smtp_session_id(c->session), c->addr);
		conn_free(c);
	} else if (c->closing) {
		/* a client that reads nothing will not read a 421 either */
		log_info("smtp session=%s event=disconnect reason=write-timeout",
		    smtp_session_id(c->session));
		conn_free(c);
	} else {
		smtp_session_timeout(c->session);
	}
}

/* After "220 Ready to start TLS": wrap the connection (tls.h drops what
 * the client pipelined in clear text). */
static void
io_starttls(void *arg)
{
	struct conn *c = arg;
	struct bufferevent *tb;

	tb = c->srv->tls != NULL ? tls_wrap(c->srv->base, c->bev, c->srv->tls,
	    true, NULL, false) : NULL;
	if (tb == NULL) {
		log_err("smtp session=%s event=tls-failed reason=\"cannot start "
		    "TLS\"", smtp_session_id(c->session));
		io_close(c);
		return;
	}
	c->bev = tb;
	c->handshake = true;
	c->tls = true;
	/* one deadline for the whole handshake, however it trickles */
	conn_deadline(c, c->srv->cfg->timeout_command * 1000);
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH_WATER);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static const struct smtp_session_io session_io = {
	.set_deadline = io_set_deadline,
	.close = io_close,
	.progress = io_progress,
	.starttls = io_starttls,
};

/* The handshake is over: the session goes on over TLS, or the connection
 * ends. */
static void
conn_tls_done(struct conn *c, bool ok)
{
	char buf[256];

	c->handshake = false;
	conn_deadline(c, 0);   /* the session arms its own next */
	if (!ok) {
		tls_error_text(c->bev, buf, sizeof(buf));
		log_info("smtp session=%s event=tls-failed client=%s reason=\"%s\"",
		    smtp_session_id(c->session), c->addr, buf);
		conn_free(c);
		return;
	}
	tls_describe(c->bev, buf, sizeof(buf));
	smtp_session_tls_started(c->session, bufferevent_get_input(c->bev),
	    bufferevent_get_output(c->bev), buf);
	if (c->implicit) {
		c->implicit = false;
		smtp_session_start(c->session);
	}
	smtp_session_process(c->session);
}

static void
conn_free(struct conn *c)
{
	struct smtp_server *srv = c->srv;

	event_free(c->deadline);
	smtp_session_free(&c->session);
	bufferevent_free(c->bev);
	event_free(c->free_ev);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	free(c);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (!c->closing && !c->handshake)
		smtp_session_process(c->session);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->closing) {
		conn_finish(c);
		return;
	}
	if (c->handshake)
		return;
	/* Output drained: a session paused on unread replies may go on. */
	smtp_session_process(c->session);
	conn_check_eof(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (c->handshake && !c->closing) {
		if (what & BEV_EVENT_CONNECTED)
			conn_tls_done(c, true);
		else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
			conn_tls_done(c, false);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !c->closing) {
		/* A half-close after pipelined commands ("." QUIT, BDAT LAST):
		 * finish what was sent; a reply still due is written if the
		 * client reads it. */
		c->eof = true;
		smtp_session_process(c->session);
		conn_check_eof(c);
		return;
	}
	if (!c->closing)
		log_info("smtp session=%s event=disconnect reason=%s",
		    smtp_session_id(c->session),
		    (what & BEV_EVENT_EOF) ? "eof" : "error");
	conn_free(c);
}

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

	for (struct conn *c = srv->conns; c; c = c->next) {
		if (local)
			n += c->client.local && c->client.uid == uid;
		else
			n += !c->client.local &&
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
	if (srv->nconns >= cfg->max_connections) {
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

	struct conn *c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	memcpy(c->key, key, sizeof(c->key));
	memcpy(c->addr, addr, sizeof(addr));
	c->client.addr = c->addr;
	c->client.port = port;
	/* A local program may send anywhere, as with Postfix's sendmail. */
	c->client.relay_ok = local || config_is_relay_client(cfg, sa);
	c->client.local = local;
	c->client.uid = (unsigned long)cred.uid;
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i] == l)   /* its policy (auth, relay) */
			c->client.listener = &cfg->listeners[i];
	enum config_listener_tls ltls = c->client.listener != NULL ?
	    c->client.listener->tls : CONFIG_LISTENER_TLS_NONE;
	if (ltls == CONFIG_LISTENER_TLS_IMPLICIT) {
		/* RFC 8314 3.3: TLS from the first octet. */
		c->bev = srv->tls != NULL ? tls_accept(srv->base, fd, srv->tls) :
		    NULL;
		if (c->bev == NULL) {
			log_err("smtp event=refused client=%s reason=\"implicit TLS "
			    "without a usable certificate\"", addr);
			close(fd);
			free(c);
			return;
		}
		c->handshake = c->implicit = c->tls = true;
	} else
		c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->free_ev = event_new(srv->base, -1, 0, free_cb, c);
	c->deadline = evtimer_new(srv->base, deadline_cb, c);
	if (c->bev == NULL || c->free_ev == NULL || c->deadline == NULL)
		fatal("out of memory creating a connection");
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH_WATER);
	c->session = smtp_session_new(cfg, &c->client,
	    bufferevent_get_input(c->bev), bufferevent_get_output(c->bev),
	    &session_io, c, &smtp_queue_ipc_ops, srv->queue);
	if (srv->dns != NULL && c->client.relay_ok)
		smtp_session_set_domain_check(c->session, &domain_check_ops, srv->dns);
	if (srv->auth != NULL)
		smtp_session_set_auth(c->session, &auth_ops, srv->auth);
	if (ltls == CONFIG_LISTENER_TLS_STARTTLS && srv->tls != NULL)
		smtp_session_set_starttls(c->session, true);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	if (local)
		log_info("smtp session=%s event=local-submission uid=%lu gid=%lu "
		    "pid=%ld", smtp_session_id(c->session), (unsigned long)cred.uid,
		    (unsigned long)cred.gid, (long)cred.pid);
	if (!c->implicit)   /* else the greeting follows the handshake */
		smtp_session_start(c->session);
	else
		conn_deadline(c, cfg->timeout_greeting * 1000);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
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
	struct conn *c, *next;

	for (c = srv->conns; c; c = next) {
		next = c->next;
		if (!c->closing)
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
	for (struct conn *c = srv.conns; c; c = c->next)
		smtp_session_shutdown(c->session);
	while (srv.conns) {
		struct conn *c = srv.conns;
		/* Best effort, never blocking: libevent freezes a bufferevent's
		 * output buffer, so send a copy of what is queued (the 421). */
		struct evbuffer *out = bufferevent_get_output(c->bev);
		char last[4096];
		ev_ssize_t n = evbuffer_copyout(out, last, sizeof(last));
		if (n > 0 && !c->tls)   /* raw octets would break TLS */
			(void)send(bufferevent_getfd(c->bev), last, (size_t)n,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
		conn_free(c);
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
