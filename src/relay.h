/*
 * relay.h - the relay process: outbound delivery to other mail servers.
 *
 * It receives jobs from the queue (one message, one destination domain,
 * some of its recipients: protocol in ipc.h), finds the mail exchangers
 * (dns.c, RFC 5321 5.1), speaks SMTP to them (smtp_client.c) and answers
 * each job with one result line per recipient. It holds no spool access
 * and runs unprivileged (user_relay), chrooted when tern starts as root.
 */
#ifndef TERN_RELAY_H
#define TERN_RELAY_H

#include <stddef.h>

struct config;
struct relay;

/*
 * With the start-up privileges: everything that needs the file system
 * (the resolver's configuration, this host's addresses). cfg must outlive
 * the relay. NULL with a reason in err.
 */
struct relay *relay_new(const struct config *cfg, char *err, size_t errsize);

/*
 * After privileges are dropped (and chroot): serve jobs from queue_fd until
 * IPC_CTL_SHUTDOWN, SIGTERM/SIGINT or the control channel closes. A new
 * queue channel arrives as IPC_CTL_PEER_FD on ctl_fd. Takes ownership of
 * queue_fd. Returns the process exit status.
 */
int relay_run(struct relay *r, int ctl_fd, int queue_fd);

void relay_free(struct relay **r);

#endif
