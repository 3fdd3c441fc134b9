/*
 * smtp_queue_ipc.h - queue_client.h implemented over the smtp <-> queue
 * socketpair (protocol in proto/submit.h). Lives in the smtp process.
 *
 * If the channel is down (the queue process is being restarted), new
 * transactions fail at once with 451 4.3.0 and open ones fail with it;
 * the parent hands over a fresh channel with smtp_queue_ipc_set_fd().
 */
#ifndef TERN_SMTP_QUEUE_IPC_H
#define TERN_SMTP_QUEUE_IPC_H

struct event_base;
struct smtp_queue_ipc;

extern const struct queue_client_ops smtp_queue_ipc_ops;

/* fd: the channel (owned from now on), or -1. on_uncongested(arg) runs when
 * a backed-up channel has drained, so the server can resume sessions. */
struct smtp_queue_ipc *smtp_queue_ipc_new(struct event_base *base, int fd,
    void (*on_uncongested)(void *arg), void *arg);
/* Replace the channel (after a queue restart); fails open transactions. */
void smtp_queue_ipc_set_fd(struct smtp_queue_ipc *q, int fd);
void smtp_queue_ipc_free(struct smtp_queue_ipc **q);

#endif
