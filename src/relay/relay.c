/*
 * relay.c - the relay process: outbound delivery (see relay.h, and the
 * relay protocol in proto/relay_job.h).
 *
 * One libevent loop, two kinds of object (relay_int.h):
 *
 *   job   one RELAY_JOB from the queue: its envelope and body, then its
 *         MX lookup (dns.c), then the attempt it is on, then exactly one
 *         RELAY_RESULT (relay_job.c);
 *   conn  one outbound TCP connection with its smtp_client: connecting,
 *         busy with one job, idle in the cache, or quitting / closing
 *         (relay_conn.c).
 *
 * This file is the process around them: the queue channel, the control
 * channel, the reap list, start and stop.
 *
 * The queue channel is trusted to be well-formed but checked: frame types,
 * ids, sizes, the number of jobs in flight and the octets buffered per job
 * are bounded; a violation is logged and the process exits with status 1
 * (which closes the channel): the parent starts a fresh relay and hands
 * the queue a fresh channel, and the queue defers every job in flight.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "proto/ctl.h"
#include "relay/relay.h"
#include "relay/relay_int.h"

/* ------------------------------------------------------------------ */
/* small helpers (relay_int.h) */

void
relay_reason_set(struct smtp_client_reply *rs, unsigned code,
    const char *enh, const char *fmt, ...)
{
	va_list ap;

	rs->code = code;
	util_strlcpy(rs->enhanced, enh, sizeof(rs->enhanced));
	va_start(ap, fmt);
	vsnprintf(rs->text, sizeof(rs->text), fmt, ap);
	va_end(ap);
}

void
relay_reason_from_reply(struct smtp_client_reply *rs,
    const struct smtp_client_reply *rp)
{
	*rs = *rp;
	if (rs->enhanced[0] == '\0')   /* a 3yz reply in the wrong place */
		util_strlcpy(rs->enhanced, "4.0.0", sizeof(rs->enhanced));
}

void
relay_addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *a = ss->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)(const void *)ss)->sin_addr;

	if (inet_ntop(ss->ss_family, a, buf, (socklen_t)size) == NULL)
		util_strlcpy(buf, "?", size);
}

socklen_t
relay_addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
}

/* Same address and port? */
bool
relay_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

void
relay_addr_set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)(void *)ss)->sin_port = htons((uint16_t)port);
}

void
relay_timer_start(struct event *ev, unsigned seconds)
{
	struct timeval tv = { .tv_sec = (time_t)seconds, .tv_usec = 0 };

	evtimer_add(ev, &tv);
}

void
relay_reap_later(struct relay *r)
{
	event_active(r->reap_ev, 0, 0);
}

/* ------------------------------------------------------------------ */
/* the queue channel (proto/relay_job.h) */

static void queue_close(struct relay *r);

/* START: a new job, "domain <d>\n" then the envelope. */
static int
on_job_start(void *arg, struct ipc_frame *f)
{
	struct relay *r = arg;
	char err[256];
	struct job *j;

	if (relay_job_find(r, f->id) != NULL) {
		snprintf(f->why, f->whysize, "job id %llu already in use",
		    (unsigned long long)f->id);
		return -1;
	}
	if (r->njobs >= r->max_jobs) {
		snprintf(f->why, f->whysize, "too many jobs in flight");
		return -1;
	}
	j = relay_job_new(r, f->id, f->data, f->len, err, sizeof(err));
	if (j == NULL) {
		snprintf(f->why, f->whysize, "job %llu invalid: %s",
		    (unsigned long long)f->id, err);
		return -1;
	}
	return 0;
}

/* The job f is for, if it is still receiving its message. */
static struct job *
job_receiving(struct relay *r, struct ipc_frame *f)
{
	struct job *j = relay_job_find(r, f->id);

	if (j == NULL || j->state != JOB_RECEIVING) {
		snprintf(f->why, f->whysize, "frame for no job being received "
		    "(id %llu)", (unsigned long long)f->id);
		return NULL;
	}
	return j;
}

static int
on_job_data(void *arg, struct ipc_frame *f)
{
	struct relay *r = arg;
	struct job *j = job_receiving(r, f);

	if (j == NULL)
		return -1;
	if (j->too_big || evbuffer_get_length(j->body) + f->len >
	    r->cfg->max_message_size + RELAY_BODY_SLACK) {
		/* Queued under a larger max_message_size than today's: this
		 * job fails at its END (relay_job_start), and the relay, which
		 * holds a body in memory, keeps no more of it than the limit.
		 * Refusing the channel instead would restart the relay and
		 * defer every job in flight at each retry of the message. */
		j->too_big = true;
		evbuffer_drain(j->body, evbuffer_get_length(j->body));
		return 0;
	}
	evbuffer_add(j->body, f->data, f->len);
	return 0;
}

static int
on_job_end(void *arg, struct ipc_frame *f)
{
	struct job *j = job_receiving(arg, f);

	if (j == NULL)
		return -1;
	relay_job_start(j);
	return 0;
}

static int
on_job_cancel(void *arg, struct ipc_frame *f)
{
	struct job *j = relay_job_find(arg, f->id);

	/* The job may be answered already: the RESULT crossed. */
	if (j != NULL) {
		log_info("relay id=%s event=cancelled", j->env.id);
		relay_job_kill(j);
	}
	return 0;
}

/* What the relay accepts from the queue. */
static const struct ipc_handler queue_frames[] = {
	{ RELAY_JOB_START, IPC_ID, on_job_start },
	{ RELAY_JOB_DATA, IPC_ID, on_job_data },
	{ RELAY_JOB_END, IPC_ID | IPC_EMPTY, on_job_end },
	{ RELAY_JOB_CANCEL, IPC_ID | IPC_EMPTY, on_job_cancel },
};

/*
 * The queue closed the channel, or broke the protocol. Exit and let the
 * parent restart us: it then hands both sides a fresh channel, which it
 * would not do for a channel the queue closed on its own.
 */
static void
queue_closed(void *arg, enum ipc_end end, const char *why)
{
	struct relay *r = arg;

	if (end == IPC_VIOLATION)
		log_err("relay event=protocol-error reason=\"%s\" action=restart",
		    why);
	else
		log_info("relay event=queue-channel-closed jobs=%zu "
		    "action=restart", r->njobs);
	queue_close(r);
	if (!r->stopping || end == IPC_VIOLATION) {
		r->status = 1;
		event_base_loopbreak(r->base);
	}
}

static const struct ipc_ops queue_ops = {
	.handlers = queue_frames,
	.nhandlers = nitems(queue_frames),
	.closed = queue_closed,
};

static void
queue_close(struct relay *r)
{
	relay_job_drop_all(r);
	ipc_free(&r->queue);
}

static void
queue_set(struct relay *r, int fd)
{
	queue_close(r);
	r->queue = ipc_new(r->base, fd, &queue_ops, r);
}

/* ------------------------------------------------------------------ */
/* the process */

static void
reap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct relay *r = arg;

	/* connections first: a dead one may still point at a dead job's body */
	bool freed = r->dead_conns != NULL;

	while (r->dead_conns != NULL) {
		struct relay_conn *c = r->dead_conns;
		r->dead_conns = c->reap_next;
		relay_conn_free(c);
		r->nconns--;
	}
	while (r->dead_jobs != NULL) {
		struct job *j = r->dead_jobs;
		r->dead_jobs = j->reap_next;
		relay_job_free(j);
	}
	/* sockets closed: slots for the jobs waiting */
	if (freed && !r->stopping)
		relay_job_wake_parked(r);
}

static void
relay_stop(struct relay *r, int status)
{
	r->stopping = true;
	r->status = status;
	event_base_loopbreak(r->base);
}

/* ---- control frames from the parent (proto/ctl.h) ---- */

static void
ctl_peer_fd(void *arg, int fd)
{
	struct relay *r = arg;

	log_info("relay event=queue-channel-replaced jobs-dropped=%zu",
	    r->njobs);
	queue_set(r, fd);
}

static void
ctl_shutdown(void *arg)
{
	struct relay *r = arg;

	relay_stop(r, r->status);
}

static void
ctl_lost(void *arg, enum ipc_end end, const char *why)
{
	/* the parent is gone: so are we */
	if (end != IPC_EOF)
		log_err("relay event=control-error reason=\"%s\"", why);
	relay_stop(arg, end == IPC_EOF ? 0 : 1);
}

static const struct ctl_ops ctl_ops = {
	.peer_fd = ctl_peer_fd,
	.shutdown = ctl_shutdown,
	.lost = ctl_lost,
};

static void
sig_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct relay *r = arg;

	relay_stop(r, r->status);
}

struct relay *
relay_new(const struct config *cfg, char *err, size_t errsize)
{
	struct relay *r = xcalloc(1, sizeof(*r));
	struct dns_options opt = { 0 };

	r->cfg = cfg;
	r->port = cfg->relay_port != 0 ? cfg->relay_port : 25;
	/* The queue keeps at most max_relay_connections jobs in flight. */
	r->max_jobs = cfg->max_relay_connections > RELAY_MAX_JOBS ?
	    cfg->max_relay_connections : RELAY_MAX_JOBS;
	r->max_conns = cfg->max_relay_connections ? cfg->max_relay_connections :
	    100;
	r->max_conns_dest = cfg->max_relay_connections_per_domain ?
	    cfg->max_relay_connections_per_domain : 10;
	/* The base now: dns_new() reads resolv.conf and the interface
	 * addresses, which the chroot will hide. */
	r->base = event_base_new();
	if (r->base == NULL) {
		snprintf(err, errsize, "event_base_new failed");
		goto fail;
	}
	r->reap_ev = event_new(r->base, -1, 0, reap_cb, r);
	if (r->reap_ev == NULL) {
		snprintf(err, errsize, "cannot create an event");
		goto fail;
	}
	opt.resolver = cfg->resolver;
	opt.self_name = cfg->hostname;
	opt.allow_loopback = cfg->allow_loopback_mx != 0;
	r->dns = dns_new(r->base, &opt, err, errsize);
	if (r->dns == NULL)
		goto fail;
	/* Now too: the CA file is read before the chroot hides it. A
	 * failure only costs TLS: "may" goes on in clear text, stronger
	 * levels defer. */
	char terr[256];
	r->tls_ctx = tls_client_ctx_new(cfg->tls_ca_file,
	    tls_min_version(cfg->tls_min_version == CONFIG_TLS_1_3),
	    terr, sizeof(terr));
	if (r->tls_ctx == NULL)
		log_warn("relay event=tls-unavailable reason=\"%s\"", terr);
	else if (cfg->tls_ca_file != NULL && access(cfg->tls_ca_file, R_OK) != 0)
		log_warn("relay event=no-ca-file file=%s reason=\"%s\" (no "
		    "certificate can verify: require_tls verify routes defer)",
		    cfg->tls_ca_file, strerror(errno));
	return r;
fail:
	relay_free(&r);
	return NULL;
}

void
relay_set_port(struct relay *r, unsigned port)
{
	r->port = port;
}

void
relay_free(struct relay **rp)
{
	struct relay *r = *rp;

	if (r == NULL)
		return;
	dns_free(&r->dns);
	SSL_CTX_free(r->tls_ctx);
	if (r->reap_ev != NULL)
		event_free(r->reap_ev);
	if (r->base != NULL)
		event_base_free(r->base);
	free(r);
	*rp = NULL;
}

/* Shutting down: say QUIT to the cached connections (best effort, never
 * waiting), drop everything else. The queue defers whatever was in flight
 * when the channel closes. */
static void
relay_teardown(struct relay *r)
{
	r->stopping = true;
	relay_job_drop_all(r);
	relay_conn_close_all(r);
	if (r->queue != NULL) {
		/* results already written go out if the socket takes them */
		ipc_flush_now(r->queue);
		queue_close(r);
	}
	reap_cb(-1, 0, r);
}

int
relay_run(struct relay *r, int ctl_fd, int queue_fd)
{
	signal(SIGPIPE, SIG_IGN);
	if (queue_fd != -1)
		queue_set(r, queue_fd);
	r->ctl = ctl_open(r->base, ctl_fd, CTL_WORKER, &ctl_ops, r);
	r->sig_term = evsignal_new(r->base, SIGTERM, sig_cb, r);
	r->sig_int = evsignal_new(r->base, SIGINT, sig_cb, r);
	if (r->sig_term == NULL || r->sig_int == NULL)
		fatal("relay: cannot create events");
	event_add(r->sig_term, NULL);
	event_add(r->sig_int, NULL);
	log_info("relay event=ready port=%u max_jobs=%zu", r->port,
	    r->max_jobs);
	(void)ctl_send(r->ctl, CTL_READY, -1);
	event_base_dispatch(r->base);

	relay_teardown(r);
	ctl_free(&r->ctl);
	event_free(r->sig_term);
	event_free(r->sig_int);
	r->sig_term = r->sig_int = NULL;
	return r->status;
}
