/*
 * ipc.h - framed messages between tern's processes over socketpairs.
 *
 * Frame: struct ipc_hdr (host byte order: both ends are the same binary)
 * followed by len payload octets. The receiver checks len against
 * IPC_MAX_PAYLOAD before buffering anything, and the type against the set
 * its role accepts, so a compromised smtp process cannot make the queue
 * allocate without bound or act on a message meant for another role.
 *
 * Channels:
 *   parent <-> smtp   control (fd passing of a new queue channel, shutdown)
 *   parent <-> queue  control (fd passing of a new smtp channel, shutdown)
 *   smtp   <-> queue  message submission (IPC_SUBMIT_* below)
 *
 * Submission protocol (id = the smtp side's transaction number):
 *   smtp -> queue  BEGIN  payload: envelope text (envelope.h)
 *   queue -> smtp  BEGIN_OK payload: queue id | BEGIN_FAIL payload: SMTP reply
 *   smtp -> queue  DATA   payload: message octets (CRLF lines, unstuffed)
 *   smtp -> queue  COMMIT (empty) | ABORT (empty)
 *   queue -> smtp  COMMIT_OK payload: queue id | COMMIT_FAIL payload: SMTP reply
 * The queue answers COMMIT_OK only after the file and its directory are
 * fsync'ed. A *_FAIL reply text is a complete SMTP reply line without CRLF,
 * e.g. "451 4.3.0 Local error in processing".
 *
 * Relay protocol, queue <-> relay (outbound delivery; id = the queue's job
 * number, nonzero, unique per channel). A job is one message for one
 * destination domain with up to IPC_RELAY_MAX_RCPTS of its recipients:
 *   queue -> relay  RELAY_JOB   payload: "domain <d>\n" then the envelope
 *                               text (envelope.h) holding only the job's
 *                               recipients, in job order
 *   queue -> relay  RELAY_DATA  payload: message octets (CRLF lines), any
 *                               number of frames
 *   queue -> relay  RELAY_END   (empty): the message is complete: deliver
 *   queue -> relay  RELAY_CANCEL (empty): drop the job (queue shutting down
 *                               or message deleted); a RESULT may still come
 *   relay -> queue  RELAY_RESULT payload: one line per recipient, in job
 *                               order: "<i> <D|T|F> <code> <x.y.z> <text>\n"
 *                               (D delivered, T temporary, F permanent;
 *                               code 0 when tern decided without a reply),
 *                               preceded by a line "via <mx> <ip> <tls>\n"
 *                               ("via - - -" if no server was reached)
 *                               and, when the server offered DSN, a line
 *                               "peer-dsn\n" after it (RFC 3461 5.2.2:
 *                               then it, not tern, reports success).
 * The relay answers every JOB with exactly one RESULT (or the channel
 * closes: the queue then treats every job in flight as deferred).
 */
#ifndef TERN_IPC_H
#define TERN_IPC_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define IPC_MAX_PAYLOAD (256 * 1024)

enum ipc_type {
	IPC_SUBMIT_BEGIN = 1,
	IPC_SUBMIT_BEGIN_OK,
	IPC_SUBMIT_BEGIN_FAIL,
	IPC_SUBMIT_DATA,
	IPC_SUBMIT_COMMIT,
	IPC_SUBMIT_ABORT,
	IPC_SUBMIT_COMMIT_OK,
	IPC_SUBMIT_COMMIT_FAIL,

	IPC_RELAY_JOB = 16,
	IPC_RELAY_DATA,
	IPC_RELAY_END,
	IPC_RELAY_CANCEL,
	IPC_RELAY_RESULT,

	IPC_CTL_PEER_FD = 32,   /* parent -> child: here is your new peer channel (fd attached) */
	IPC_CTL_SHUTDOWN,       /* parent -> child: finish and exit */
	IPC_CTL_READY,          /* child -> parent: initialised, privileges dropped */
	IPC_CTL_RELAY_FD,       /* parent -> queue: your new relay channel (fd attached) */
	IPC_CTL_TLS_FD,         /* parent -> smtp: new certificate and key (memfd attached, tls.h) */
	IPC_CTL_LOG_FD,         /* parent -> all: log_file reopened (fd attached) */
};

#define IPC_RELAY_MAX_RCPTS 1000

struct ipc_hdr {
	uint32_t len;   /* payload octets */
	uint16_t type;  /* enum ipc_type */
	uint16_t flags; /* zero */
	uint64_t id;    /* transaction id, or 0 */
};

struct ipc_msg {
	struct ipc_hdr hdr;
	unsigned char *payload; /* hdr.len octets + a NUL; owned by the caller after ipc_read */
};

/* Append one frame to out. */
void ipc_write(struct evbuffer *out, enum ipc_type type, uint64_t id,
    const void *payload, size_t len);

/*
 * Take one complete frame from in. Returns 1 and fills *msg (free with
 * ipc_msg_clear), 0 if more octets are needed, -1 on a protocol violation
 * (payload too long, nonzero flags): the caller must close the channel.
 */
int ipc_read(struct evbuffer *in, struct ipc_msg *msg);
void ipc_msg_clear(struct ipc_msg *msg);

/*
 * Blocking send/receive of one small control frame with an optional fd
 * (SCM_RIGHTS) on a control socket. Used only on parent<->child control
 * channels, which carry a handful of frames in a process's lifetime.
 * ipc_recv_fd stores the received fd (or -1) in *fd.
 */
int ipc_send_fd(int sock, enum ipc_type type, int fd);
/* Returns 1 with a frame, 0 if the peer closed, -1 on error. */
int ipc_recv_fd(int sock, enum ipc_type *type, int *fd);

#endif
