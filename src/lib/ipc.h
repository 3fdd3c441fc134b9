/*
 * ipc.h - the channel between two of tern's processes: framed messages
 * over a socketpair, descriptor passing, bounds and back-pressure. Every
 * pair uses it: the parent and each worker (control, proto/ctl.h), smtp
 * and queue (submission, proto/submit.h), queue and relay (jobs and
 * results, proto/relay_job.h).
 *
 * Frame: a 16-octet header (struct ipc_hdr, host byte order: both ends
 * are the same binary) and len payload octets. A frame whose header has
 * IPC_F_FD carries one descriptor (SCM_RIGHTS), sent with its first octet.
 * The receiver checks the header before it buffers the payload (len at
 * most IPC_MAX_PAYLOAD, no unknown flag), and the frame against the table
 * of what its end accepts (struct ipc_handler: type, empty or not, with a
 * descriptor or not, id zero or not), so a compromised peer can neither
 * make it allocate without bound nor act on a frame meant for another
 * role: any breach closes the channel.
 *
 * The channel does its own reads and writes (recvmsg/sendmsg on
 * evbuffers under libevent events): a bufferevent's read(2) would discard
 * the descriptors. Input is bounded (two frames at most); output is not
 * (the owner bounds what it sends, with ipc_out_len() and the drained
 * callback), but with out_pause set the channel stops taking frames while
 * its unread answers pile up, so a peer that never reads cannot make this
 * end buffer without bound either.
 *
 * Nothing is freed from inside its own callback: ipc_free() called from a
 * handler or from closed() only marks the channel, which is freed when
 * the callback returns.
 */
#ifndef TERN_IPC_H
#define TERN_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct iovec;
struct evbuffer;
struct ipc;

#define IPC_MAX_PAYLOAD (256 * 1024)
#define IPC_HDR_SIZE 16
#define IPC_FDS_MAX 16         /* descriptors queued per direction */

#define IPC_F_FD 0x0001        /* header flag: a descriptor comes with it */

struct ipc_hdr {
	uint32_t len;   /* payload octets */
	uint16_t type;  /* the protocol's frame type */
	uint16_t flags; /* IPC_F_* */
	uint64_t id;    /* transaction or job id, or 0 */
};

/* One received frame, as a handler sees it. */
struct ipc_frame {
	uint16_t type;
	uint64_t id;
	const unsigned char *data;  /* len octets (not NUL-terminated), valid
	                             * until the handler returns */
	size_t len;
	int fd;         /* the descriptor that came with it, or -1; a handler
	                 * that keeps it sets fd to -1, else it is closed */
	char *why;      /* a handler that returns -1 may say why here */
	size_t whysize;
};

/* Rules of a handler row: what a frame of its type must look like. */
#define IPC_EMPTY 0x1  /* no payload */
#define IPC_FD    0x2  /* carries a descriptor (without: must not) */
#define IPC_ID    0x4  /* id is not 0 */

/* 0, or -1: a protocol violation (reason in f->why), the channel closes. */
typedef int ipc_handler_fn(void *arg, struct ipc_frame *f);

/* One row of a dispatch table: the frame types an end accepts. */
struct ipc_handler {
	uint16_t type;
	uint8_t rules;          /* IPC_EMPTY | IPC_FD | IPC_ID */
	ipc_handler_fn *fn;
};

enum ipc_end { IPC_EOF, IPC_ERROR, IPC_VIOLATION };

struct ipc_ops {
	const struct ipc_handler *handlers;
	size_t nhandlers;
	/*
	 * The channel is dead (the peer closed it, an I/O error, or a frame
	 * broke the rules: why says which). Called once; nothing is read or
	 * written any more. The owner calls ipc_free() (here or later).
	 */
	void (*closed)(void *arg, enum ipc_end end, const char *why);
	/* After a write left at most out_low octets queued. May be NULL. */
	void (*drained)(void *arg);
	size_t out_pause;       /* stop taking frames above this; 0: never */
	size_t out_low;         /* drained and resume at or below this */
};

/*
 * A channel on fd (a connected AF_UNIX stream socket; owned from now on,
 * made non-blocking and close-on-exec). ops must outlive the channel.
 */
struct ipc *ipc_new(struct event_base *base, int fd, const struct ipc_ops *ops,
    void *arg);
/* Close the socket and every queued descriptor; *c = NULL. See above. */
void ipc_free(struct ipc **c);

/* Queue one frame (len <= IPC_MAX_PAYLOAD). -1 if the channel is dead. */
int ipc_send(struct ipc *c, uint16_t type, uint64_t id, const void *data,
    size_t len);
/* Queue an empty frame carrying fd, whose ownership passes to the
 * channel (closed once sent, or at once on failure). -1 on failure. */
int ipc_send_fd(struct ipc *c, uint16_t type, uint64_t id, int fd);
/* Queue frames built with ipc_frame_put() (moved out of frames). */
int ipc_send_buffer(struct ipc *c, struct evbuffer *frames);
/* Octets queued and not yet written. */
size_t ipc_out_len(const struct ipc *c);
/* Write what is queued as far as the socket takes it now, never waiting
 * (at shutdown). */
void ipc_flush_now(struct ipc *c);
bool ipc_is_open(const struct ipc *c);

/* ---- pure parts (the fuzz targets and unit tests call them) ---- */

/* Append one frame (header and payload) to out; len <= IPC_MAX_PAYLOAD.
 * Safe on any thread for a buffer of its own. */
void ipc_frame_put(struct evbuffer *out, uint16_t type, uint16_t flags,
    uint64_t id, const void *data, size_t len);

/* Check the header at p (IPC_HDR_SIZE octets) into *h: 0, or -1 with a
 * reason (a static string) in *why. */
int ipc_hdr_decode(const unsigned char *p, struct ipc_hdr *h,
    const char **why);

/*
 * Check f against table tab (n rows) and call its handler with arg.
 * Returns the handler's 0, or -1 with a reason in f->why: no row for the
 * type, a rule broken, or the handler refused.
 */
int ipc_dispatch(const struct ipc_handler *tab, size_t n, void *arg,
    struct ipc_frame *f);

/* ---- descriptor passing on a socket (SCM_RIGHTS) ---- */

/* sendmsg the iov[0..n-1] octets with fd (-1: none) attached to the
 * first; flags as sendmsg's (MSG_NOSIGNAL is added). */
ssize_t ipc_sendmsg(int sock, const struct iovec *iov, int n, int fd,
    int flags);
/* recvmsg into iov[0..n-1]; received descriptors (close-on-exec) into
 * fds[0..*nfds-1], at most maxfds: more, or truncated control data, is an
 * error (EPROTO, and what came is closed). 0 at EOF, -1 with errno. */
ssize_t ipc_recvmsg(int sock, const struct iovec *iov, int n, int *fds,
    size_t *nfds, size_t maxfds);

#endif
