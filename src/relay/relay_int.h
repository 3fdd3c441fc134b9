/*
 * relay_int.h - what the relay process's files share (relay.h is the
 * process's public face): its objects and the functions that cross
 * between
 *
 *   relay.c       the process: the queue channel, control frames, the
 *                 reap list, start and stop; small shared helpers;
 *   relay_job.c   a job, from the queue's START to its one RESULT: the
 *                 job table, MX lookup, attempts in RFC 5321 5.1 order,
 *                 each transaction's verdict, the result lines;
 *   relay_conn.c  outbound connections (lib/conn.h under an smtp_client)
 *                 and their cache: connect, STARTTLS, reuse, idle, QUIT.
 *
 * Nothing is freed from inside its own callbacks: a finished job or a dead
 * connection is unlinked, made inert (events deleted, its lib/conn.h
 * transport freed, which conn.c defers inside its own callbacks) and put
 * on a reap list that an event made active for the purpose empties from
 * the top of the loop (Redis freeClientAsync). A job moves to its next
 * attempt through its own deferred event, never by recursion from inside
 * a connection's callback.
 */
#ifndef TERN_RELAY_INT_H
#define TERN_RELAY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <openssl/ssl.h>

#include "conf/config.h"
#include "dns/dns.h"
#include "lib/tls.h"
#include "mail/envelope.h"
#include "proto/relay_job.h"
#include "relay/smtp_client.h"

struct conn;
struct event;
struct event_base;
struct evbuffer;
struct ipc;
struct ctl;

#define RELAY_HASH 1024               /* job hash buckets (power of 2) */
#define RELAY_BODY_SLACK (64 * 1024)  /* over max_message_size: headers
                                       * the queue adds (Received:, ...) */
#define RELAY_DOMAIN_MAX RELAY_JOB_DOMAIN_MAX
#define RELAY_CONNECT_TIMEOUT 30      /* seconds, like Postfix */
#define RELAY_CLOSE_TIMEOUT 10        /* seconds to flush a last command */
#define RELAY_MAX_ATTEMPTS 10         /* fresh connections per job */
#define RELAY_IDLE_MAX 64             /* idle connections kept in all, at
                                       * least; max_relay_connections if more.
                                       * Per server address: as many as a
                                       * domain may have open at once. */
#define RELAY_TLS_BROKEN_MAX 256      /* addresses remembered */
#define RELAY_TLS_BROKEN_SECONDS 3600

enum job_state {
	JOB_RECEIVING,   /* JOB seen, DATA frames until END */
	JOB_RESOLVING,   /* MX lookup running */
	JOB_SENDING,     /* connecting or in a transaction, or between */
	JOB_DEAD,        /* answered or dropped: on the reap list */
};

enum relay_conn_state {
	RC_CONNECTING,
	RC_BUSY,       /* a job's transaction runs (or waits for EHLO) */
	RC_IDLE,       /* in the cache, QUIT when the idle timer fires */
	RC_QUITTING,   /* QUIT sent or about to be */
	RC_CLOSING,    /* the client is done: flushing, then close */
	RC_DEAD,       /* on the reap list */
};

/* An MX host as the job tries it: only usable hosts are kept. */
struct job_host {
	char name[DNS_NAME_MAX + 1];
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];  /* port set */
	size_t naddrs;
	unsigned pref;
};

struct relay_conn;

struct job {
	struct relay *r;
	uint64_t id;
	enum job_state state;
	char domain[RELAY_DOMAIN_MAX + 1];
	const struct config_route *route;  /* NULL: MX of the domain */
	const struct config_route *auth;   /* route whose AUTH applies */
	unsigned port;                     /* of every address tried */
	enum config_relay_tls tls;         /* level of this job */
	struct envelope env;
	struct evbuffer *body;
	const char *flat;        /* the body, contiguous, from END on */
	size_t flatlen;
	size_t *idx;             /* 0..nrcpts-1: every recipient, every time */
	struct dns_query *q;
	struct job_host *hosts;
	size_t nhosts;
	size_t hi, ai;           /* the address being tried */
	bool started;            /* hi/ai point at a tried address */
	bool retry_here;         /* a cached connection failed: fresh one */
	bool hold_pos;           /* hi/ai not tried yet (waited for a slot) */
	bool parked;             /* waiting for a connection slot */
	bool too_big;            /* body over max_message_size: dropped */
	struct job *pnext, *pprev;
	unsigned attempts;       /* fresh connections made */
	struct relay_conn *conn;
	struct event *step_ev;   /* deferred "try the next address" */
	struct smtp_client_reply last;      /* why the last attempt failed */
	char via_mx[DNS_NAME_MAX + 1];
	char via_ip[INET6_ADDRSTRLEN];
	char via_tls[TLS_DESC_MAX];
	struct job *hnext;       /* hash chain */
	struct job *reap_next;
};

struct relay_conn {
	struct relay *r;
	enum relay_conn_state state;
	struct conn *io;         /* the transport (lib/conn.h) */
	struct smtp_client *client;
	struct smtp_client_params params;
	struct event *timer;     /* the idle bound in the cache, and a failed
	                          * STARTTLS reported from the loop */
	struct sockaddr_storage addr;
	const struct config_route *auth; /* credentials used, or NULL */
	enum config_relay_tls tls;       /* level asked when connecting */
	bool tls_failed;         /* the handshake failed */
	bool tls_unstarted;      /* TLS could not even start: tell the client
	                          * from c->timer */
	bool tls_on, tls_verified;
	char tls_desc[TLS_DESC_MAX];     /* "none" or "TLSv1.3:CIPHER" */
	char mx[DNS_NAME_MAX + 1];
	char ip[INET6_ADDRSTRLEN];
	char peer[DNS_NAME_MAX + INET6_ADDRSTRLEN + 3];  /* "mx[ip]" */
	struct job *job;
	bool reused;             /* the running transaction is not the first */
	unsigned uses;           /* transactions started on it */
	int64_t idle_since;      /* util_mono_ms() when it went idle */
	struct relay_conn *next, *prev;
	struct relay_conn *reap_next;
};

/* An address whose TLS handshake failed at level "may". */
struct tls_broken {
	struct sockaddr_storage addr;
	int64_t until;           /* util_mono_ms() */
};

struct relay {
	const struct config *cfg;
	SSL_CTX *tls_ctx;        /* NULL: TLS unavailable */
	struct tls_broken broken[RELAY_TLS_BROKEN_MAX];
	size_t nbroken_next;     /* ring position */
	struct event_base *base;
	struct dns *dns;
	unsigned port;           /* relay_port, or relay_set_port() */
	size_t max_jobs;
	size_t max_conns;        /* max_relay_connections */
	size_t max_conns_dest;   /* max_relay_connections_per_domain, per
	                          * server address */
	size_t nconns;           /* sockets open (dead ones until reaped) */
	struct job *parked, *parked_tail;
	size_t nparked;
	struct ipc *queue;       /* the channel to the queue, or NULL */
	struct ctl *ctl;         /* to the parent */
	struct event *sig_term, *sig_int, *reap_ev;
	struct job *jobs[RELAY_HASH];
	size_t njobs;
	struct relay_conn *conns;
	size_t nidle;
	struct job *dead_jobs;
	struct relay_conn *dead_conns;
	bool stopping;
	int status;
};

/* ---- relay.c: shared helpers ---- */

/* Why recipients end as they do: one reply type for the server's reply
 * and tern's own diagnosis (code 0), with printf-style text. */
void relay_reason_set(struct smtp_client_reply *rs, unsigned code,
    const char *enh, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* A server's reply (or the client engine's diagnosis) as a reason. */
void relay_reason_from_reply(struct smtp_client_reply *rs,
    const struct smtp_client_reply *rp);
/* Addresses with their port, as the connections use them. */
void relay_addr_text(const struct sockaddr_storage *ss, char *buf,
    size_t size);
socklen_t relay_addr_len(const struct sockaddr_storage *ss);
bool relay_addr_eq(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b);
void relay_addr_set_port(struct sockaddr_storage *ss, unsigned port);
/* Arm ev seconds from now. */
void relay_timer_start(struct event *ev, unsigned seconds);
/* Free the dead jobs and connections from the top of the loop. */
void relay_reap_later(struct relay *r);

/* ---- relay_job.c ---- */

/* A new job from a START frame (id, payload): decoded, in the table,
 * receiving its body. NULL with err set if the payload is invalid. */
struct job *relay_job_new(struct relay *r, uint64_t id, const void *data,
    size_t len, char *err, size_t errsize);
struct job *relay_job_find(struct relay *r, uint64_t id);
/* END: the body is complete; resolve and deliver. */
void relay_job_start(struct job *j);
/* Take j out of service (no callback of its own runs again; its
 * connection, if any, is killed); freed by reap. */
void relay_job_kill(struct job *j);
/* Every job of the channel, without results. */
void relay_job_drop_all(struct relay *r);
void relay_job_free(struct job *j);
/* Wake the jobs waiting for a connection slot, in order. */
void relay_job_wake_parked(struct relay *r);
/* Go on to the next attempt, from the loop. */
void relay_job_defer(struct job *j);
/* smtp_client's verdict on j's transaction on c (reused: c served an
 * earlier transaction): the recipients' results, or the next attempt. */
void relay_job_transaction_done(struct job *j, struct relay_conn *c,
    const struct smtp_client_result *cr, bool reused);

/* ---- relay_conn.c ---- */

/* Start a connection for j to host h's address sa. 0: connecting, -1:
 * could not even start, with j->last saying why. */
int relay_conn_connect(struct job *j, const struct job_host *h,
    const struct sockaddr_storage *sa);
/* Room for one more connection to sa? (Else an idle one is told to go.) */
bool relay_conn_slot(struct relay *r, const struct sockaddr_storage *sa);
/* A cached connection to sa that may carry j's transaction, or NULL. */
struct relay_conn *relay_conn_idle_find(struct job *j,
    const struct sockaddr_storage *sa, const char *host);
/* Run j's transaction on the cached connection c (to host h). */
void relay_conn_reuse(struct relay_conn *c, struct job *j,
    const struct job_host *h);
/* Take c out of service (c->job is only detached); freed by reap. */
void relay_conn_kill(struct relay_conn *c);
void relay_conn_free(struct relay_conn *c);
/* Remember that sa's TLS handshake failed at level "may". */
void relay_conn_tls_broken_add(struct relay *r,
    const struct sockaddr_storage *sa);
/* Shutting down: QUIT to the cached connections (best effort, never
 * waiting), every connection killed. */
void relay_conn_close_all(struct relay *r);

#endif
