/*
 * queue_control.h - `tern queue ...`: the queue process's control socket
 * and the command-line client that talks to it.
 *
 * Server (queue process, event loop): a unix stream socket
 * <spool>/control, mode 0600, owned by user_queue, created by queue_new()
 * while it still has its start-up privileges (a stale one is removed).
 * Only peers whose SO_PEERCRED uid is 0 or the queue process's own uid may
 * talk. Protocol: the client sends one request line
 * (proto/control_line.h: list, show <id>, flush [<id>], delete <id>,
 * hold <id>, release <id>) and gets one JSON document (UTF-8, then LF),
 * after which the server closes. Every document has "ok": true or false; failures carry "error"
 * (docs/queue.md lists the documents). At most QUEUE_CONTROL_MAX_CLIENTS
 * connections at once (more are closed at once), QUEUE_CONTROL_TIMEOUT
 * seconds to send the request and to read the answer.
 *
 * The server knows nothing of the queue: it asks the operations it was
 * given (struct queue_control_ops; the queue process's are queue_admin.c),
 * which never touch the disk on the loop: show, hold, release and delete
 * run as tasks in the queue's workers, list comes from the in-memory
 * records.
 */
#ifndef TERN_QUEUE_CONTROL_H
#define TERN_QUEUE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "mail/envelope.h"

struct control_line;

#define QUEUE_CONTROL_MAX_CLIENTS 16
#define QUEUE_CONTROL_TIMEOUT 30
#define QUEUE_CONTROL_SOCKET "control"   /* under the spool directory */

struct config;
struct event_base;
struct queue_control;
struct spool_msg;

/* Append s as a JSON string (quotes included) to out; invalid UTF-8
 * becomes U+FFFD, control characters \u escapes. NULL: null. */
struct evbuffer;
void queue_control_json_str(struct evbuffer *out, const char *s);

/* ---- what the server asks of the queue (the loop thread only) ---- */

enum queue_control_state {
	QUEUE_CONTROL_STATE_ACTIVE,    /* due, in a worker or a relay job */
	QUEUE_CONTROL_STATE_DEFERRED,  /* waiting for its next attempt */
	QUEUE_CONTROL_STATE_HELD,
};

struct queue_control_entry {
	char id[QUEUE_ID_LEN + 1];
	int64_t next;             /* next scan, unix seconds; 0: none scheduled */
	uint32_t size_kib;        /* 0 before the first load */
	unsigned nrcpt, npending; /* 0/0 before the first load */
	enum queue_control_state state;
	char *sender;             /* a copy; NULL before the first load */
};

/* Results of the operations. */
#define QUEUE_CONTROL_OK 0
#define QUEUE_CONTROL_NOTFOUND 1      /* no such message (or already gone) */
#define QUEUE_CONTROL_HELD_ALREADY 2  /* flush of a held message */
#define QUEUE_CONTROL_FAILED 3        /* disk error, or the queue is stopping */

enum queue_control_op {
	QUEUE_CONTROL_OP_SHOW,
	QUEUE_CONTROL_OP_HOLD,
	QUEUE_CONTROL_OP_RELEASE,
	QUEUE_CONTROL_OP_DELETE,
};

/*
 * Called on the loop when an op has finished: status is one of
 * QUEUE_CONTROL_*; for SHOW, json is the message object (ownership
 * passes) and e describes the in-memory record (NULL if gone).
 */
typedef void queue_control_done_fn(void *done_arg, int status, char *json,
    const struct queue_control_entry *e);

struct queue_control_ops {
	/* Every queued message, sorted by id (arrival). *out: the caller
	 * frees each sender and the array. */
	size_t (*list)(void *arg, struct queue_control_entry **out);
	/*
	 * Run op on message id, after any work the message has. done is
	 * never called from inside this call. Returns QUEUE_CONTROL_OK (done
	 * will be called), QUEUE_CONTROL_NOTFOUND or QUEUE_CONTROL_FAILED
	 * (the queue is stopping; done will not be called).
	 */
	int (*start)(void *arg, const char *id, enum queue_control_op op,
	    queue_control_done_fn *done, void *done_arg);
	/*
	 * Make every deferred recipient of id (NULL: of every message that
	 * is not held) due now. Returns the number of messages flushed, or
	 * -QUEUE_CONTROL_NOTFOUND / -QUEUE_CONTROL_HELD_ALREADY for one id.
	 */
	long (*flush)(void *arg, const char *id);
};

/* ---- server (queue process) ---- */

/*
 * With the start-up privileges: remove a stale <spool_dir>/control, bind
 * and listen, chmod 0600, chown to uid/gid unless (uid_t)-1. Requests
 * will be served by calling ops with arg (both must outlive the server).
 * NULL with a reason in err.
 */
struct queue_control *queue_control_new(const char *spool_dir, uid_t uid,
    gid_t gid, const struct queue_control_ops *ops, void *arg, char *err,
    size_t errsize);
/* Start accepting on base (queue_run). */
void queue_control_start(struct queue_control *qc, struct event_base *base);
/* Stop accepting and remove the socket (shutdown begins); idempotent. */
void queue_control_stop(struct queue_control *qc);
/* Close every connection and the socket; *qc = NULL. */
void queue_control_free(struct queue_control **qc);

/*
 * The "message" object of a show answer, built in a worker from a loaded
 * queue file: envelope and each recipient's state with its last reply.
 * Returns a heap string (the caller frees it).
 */
char *queue_control_show_json(struct spool_msg *m);

/* ---- client (tern queue ...) ---- */

/*
 * tern queue list|show ID|flush [ID]|delete ID|hold ID|release ID [--json]:
 * argv[0] is "list", ...; cfg gives the spool. Prints the answer (JSON as
 * received with json, a table otherwise) to out, errors to stderr.
 * Returns 0, 1 (not found, refused, failed), 64 (usage) or 69 (the daemon
 * is not running).
 */
int queue_control_client(const struct config *cfg, int argc, char **argv,
    bool json, FILE *out);

/*
 * The client's half once the daemon's answer (p, len) is read: parse the
 * JSON document and print it for req to out (as received with json, a
 * table otherwise), or its error to err. Returns 0 if the answer says
 * "ok": true, else 1 (a malformed answer too). No I/O but the two
 * streams: unit tests and the fuzz target drive it.
 */
int queue_control_answer(const char *p, size_t len,
    const struct control_line *req, bool json, FILE *out, FILE *err);

#endif
