/*
 * relay.h - the relay process: outbound delivery to other mail servers.
 *
 * It receives jobs from the queue (one message, one destination domain,
 * some of its recipients: protocol in proto/relay_job.h), finds the mail exchangers
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
 * Jobs in flight on one queue channel (received and not yet answered):
 * this, or max_relay_connections if that is larger. The queue must not
 * send more; a START past it is a protocol violation, like a frame of the
 * wrong type, an unknown or reused id, or a body over max_message_size +
 * 64 KiB: the relay logs it and exits, the parent starts a new one with a
 * new channel, and the queue defers the jobs it had in flight.
 *
 * RESULT lines number the recipients from 0, in the order of the
 * job's envelope: "<i> <D|T|F> <code> <x.y.z> <text>". The text is
 * printable ASCII, cut so the frame fits IPC_MAX_PAYLOAD (229 octets per
 * line with 1000 recipients), and never empty.
 */
#define RELAY_MAX_JOBS 1000

/*
 * With the start-up privileges: everything that needs the file system
 * (the resolver's configuration, this host's addresses). cfg must outlive
 * the relay. NULL with a reason in err.
 */
struct relay *relay_new(const struct config *cfg, char *err, size_t errsize);

/*
 * After privileges are dropped (and chroot): serve jobs from queue_fd until
 * CTL_SHUTDOWN, SIGTERM/SIGINT or the control channel closes. A new
 * queue channel arrives as CTL_PEER_FD on ctl_fd. Takes ownership of
 * ctl_fd and queue_fd. Returns the process exit status.
 */
int relay_run(struct relay *r, int ctl_fd, int queue_fd);

/* Override relay_port (the TCP port of mail exchangers); for tests. */
void relay_set_port(struct relay *r, unsigned port);

void relay_free(struct relay **r);

#endif
