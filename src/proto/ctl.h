/*
 * ctl.h - the control protocol between the parent and each worker, and
 * the one dispatcher both ends use (frames on lib/ipc.h, id 0, never a
 * payload; some carry a descriptor):
 *
 *   parent -> worker  PEER_FD   fd: a new channel to the worker's peer
 *                               (smtp, relay: the queue; queue: smtp)
 *   parent -> queue   RELAY_FD  fd: a new channel to the relay
 *   parent -> smtp    TLS_FD    fd: certificate and key (memfd, tls.h)
 *   parent -> worker  LOG_FD    fd: log_file, opened again (SIGHUP)
 *   parent -> worker  SHUTDOWN  finish and exit
 *   worker -> parent  READY     initialised, privileges dropped
 *
 * Each end has one table of the frames it accepts (ctl.c); a frame of
 * another type, with a payload, or without its descriptor closes the
 * channel, and a worker whose control channel closes stops. LOG_FD is
 * handled here, the same in every worker.
 */
#ifndef TERN_CTL_H
#define TERN_CTL_H

#include "lib/ipc.h"

struct event_base;
struct ctl;

enum ctl_type {
	CTL_PEER_FD = 32,
	CTL_SHUTDOWN,
	CTL_READY,
	CTL_RELAY_FD,
	CTL_TLS_FD,
	CTL_LOG_FD,
};

enum ctl_side { CTL_WORKER, CTL_PARENT };

/* What an end does with each frame; NULL: that end refuses the frame.
 * The fd callbacks own fd. */
struct ctl_ops {
	void (*peer_fd)(void *arg, int fd);     /* worker */
	void (*relay_fd)(void *arg, int fd);    /* queue */
	void (*tls_fd)(void *arg, int fd);      /* smtp */
	void (*shutdown)(void *arg);            /* worker */
	void (*ready)(void *arg);               /* parent */
	/* The channel is gone (ipc.h's closed): called once. */
	void (*lost)(void *arg, enum ipc_end end, const char *why);
};

/* One end of a control channel on fd (owned); ops outlives it. */
struct ctl *ctl_open(struct event_base *base, int fd, enum ctl_side side,
    const struct ctl_ops *ops, void *arg);
/* Send type, with fd (owned from now on; -1: none). -1 if the channel is
 * gone (fd closed). */
int ctl_send(struct ctl *c, enum ctl_type type, int fd);
/* Write what is queued without waiting (before a worker exits). */
void ctl_flush(struct ctl *c);
void ctl_free(struct ctl **c);

/* "PEER_FD", ...; "?" for another type. */
const char *ctl_type_name(unsigned type);

#endif
