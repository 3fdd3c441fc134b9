/*
 * smtp_server.h - the smtp process: accepts connections on the listening
 * sockets the parent bound, enforces connection limits and timeouts, and
 * runs one smtp_session per client. It holds no privilege and no spool
 * access: messages go to the queue process over the submission channel.
 */
#ifndef TERN_SMTP_SERVER_H
#define TERN_SMTP_SERVER_H

#include <stddef.h>

struct config;

/*
 * Run the smtp process until told to stop (SIGTERM/SIGINT, CTL_SHUTDOWN
 * or the parent's control channel closing). Privileges are already dropped.
 * listen_fds are listening sockets (cfg->listeners order); queue_fd is the
 * submission channel; ctl_fd the control channel (both owned from now
 * on). Returns an exit status.
 */
struct dns;
struct event_base;

/* base: the process's event loop, created before chroot; dns: a resolver
 * on it for the RCPT-time domain check (RFC 7505 null MX), or NULL. Both
 * are freed by smtp_server_run. submit_fd: the listening AF_UNIX socket of
 * local submission (submit_socket, tern sendmail), or -1; its clients may
 * relay, and are named by their SO_PEERCRED uid. tls: the server TLS
 * context (owned from now on), or NULL: no TLS; a new one arrives with
 * CTL_TLS_FD on SIGHUP. */
struct ssl_ctx_st;
int smtp_server_run(const struct config *cfg, struct event_base *base,
    struct dns *dns, struct ssl_ctx_st *tls, const int *listen_fds,
    size_t nlisten, int submit_fd, int queue_fd, int ctl_fd);

#endif
