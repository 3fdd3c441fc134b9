/*
 * conn.h - one TCP connection, plain or TLS, on a libevent bufferevent:
 * the transport under the SMTP server (smtpd/smtp_server.c) and client
 * (relay/relay_conn.c), and under any later line protocol. In the spirit
 * of OpenSMTPD's ioev.h: the owner sees two buffers and a few events,
 * never a socket, a bufferevent or an SSL object.
 *
 * What the connection owns:
 *  - reads and writes: conn_input()/conn_output() are the buffers (new
 *    ones after a TLS switch: fetch them again after tls_done); input
 *    stops being read while CONN_READ_MAX octets wait unconsumed;
 *  - one timer: the owner's deadline (not moved by arriving octets, so a
 *    peer dripping one octet at a time cannot hold the connection), or
 *    else the connection's own bound of the moment (connect, TLS
 *    handshake, the flush of conn_close());
 *  - TLS: implicit at accept, or STARTTLS in place, with the input that
 *    was pipelined in clear text discarded (RFC 3207 4.2 and 5);
 *  - the end: conn_close() flushes, says close_notify over TLS, then
 *    reports CONN_END_CLOSED.
 *
 * Callbacks run from the event loop only, never from inside a call the
 * owner made into this module, except that conn_free() may be called
 * from any callback: the object is then freed when the callback returns,
 * and no other callback of it runs.
 */
#ifndef TERN_CONN_H
#define TERN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct conn;
struct event_base;
struct evbuffer;
struct ssl_ctx_st;

/* Input buffered and not consumed beyond this stops reading from the
 * socket until the owner has taken some (it may be waiting for another
 * process). */
#define CONN_READ_MAX (256 * 1024)

/* How a connection ended (conn_ops.ended). */
enum conn_end {
	CONN_END_EOF,      /* the peer closed its side: what it sent is still
	                    * in the input, output may still go out */
	CONN_END_ERROR,    /* broken (reset, TLS error), or the connect failed */
	CONN_END_TIMEOUT,  /* the connect, or the flush of conn_close(), did
	                    * not finish within its bound */
	CONN_END_CLOSED,   /* conn_close() is done: every octet handed over */
};

/* What the connection tells its owner; any member may be NULL. */
struct conn_ops {
	/* conn_connect() succeeded: reading and writing are on. */
	void (*connected)(void *arg);
	/* Input arrived (never during a handshake or once closing). */
	void (*readable)(void *arg);
	/* The output fell to the low-water mark (conn_set_lowat(), 0 by
	 * default: empty): write more. Not during a handshake or a close. */
	void (*drained)(void *arg);
	/* A TLS handshake ended. ok: text is "TLSv1.3:TLS_AES_256_GCM_SHA384"
	 * and conn_input()/conn_output() are the protected buffers; not ok:
	 * text says why, and the connection is unusable (free it). */
	void (*tls_done)(void *arg, bool ok, const char *text);
	/* The owner's deadline passed. Nothing else happened to the
	 * connection: the owner says goodbye, closes or frees. */
	void (*timeout)(void *arg);
	/* See enum conn_end. After CLOSED, TIMEOUT, and ERROR or EOF during
	 * a close or a connect, no other callback comes: free it. why is
	 * text for logs. */
	void (*ended)(void *arg, enum conn_end end, const char *why);
};

/*
 * A connection on an accepted socket fd (made non-blocking; owned from
 * now on, unless NULL is returned). tls: a server context for implicit TLS (RFC 8314), the
 * handshake to finish within handshake_ms (0: no bound of its own) or
 * tls_done reports "handshake timed out"; NULL: plain. NULL if the TLS
 * state cannot be made. ops and arg must outlive the connection.
 */
struct conn *conn_accept(struct event_base *base, int fd,
    struct ssl_ctx_st *tls, unsigned handshake_ms,
    const struct conn_ops *ops, void *arg);

/*
 * A non-blocking TCP connect to `to`, from source address `from` if not
 * NULL (bound first; a zero port is picked at connect time). connected
 * or ended (ERROR, TIMEOUT after timeout_ms; 0: no bound) follows. NULL
 * with err set if the connect cannot even start.
 */
struct conn *conn_connect(struct event_base *base, const struct sockaddr *to,
    socklen_t tolen, const struct sockaddr *from, socklen_t fromlen,
    unsigned timeout_ms, const struct conn_ops *ops, void *arg, char *err,
    size_t errsize);

/* The buffers (valid until the next TLS switch or conn_free()). */
struct evbuffer *conn_input(struct conn *c);
struct evbuffer *conn_output(struct conn *c);

/* The owner's deadline: timeout fires ms milliseconds from now however
 * many octets arrive; replaces the one before; 0 disarms it. It fires
 * once; set it again to go on. Ignored while the connection's own bound
 * of the moment runs (a connect, a handshake with its own bound, a
 * close). */
void conn_set_deadline(struct conn *c, unsigned ms);
/* drained fires when the output falls to lowat octets (default 0). */
void conn_set_lowat(struct conn *c, size_t lowat);

/*
 * STARTTLS (RFC 3207): from now on TLS runs over the connection. The
 * input already received is discarded first (RFC 3207 4.2: nothing read
 * in clear text counts afterwards; the pipelining attack class of
 * CVE-2011-0411); output already queued still goes out in clear text
 * ahead of the handshake (the "220" that allowed it). Server side: ctx is
 * the server context. Client side: host (a name, sent as SNI, or an
 * address literal) is what the certificate must match for verify (the
 * handshake fails otherwise) and for conn_tls_verified(). handshake_ms:
 * the handshake's own bound (0: the owner's deadline goes on). tls_done
 * reports the end. Returns -1 (connection unchanged) if TLS cannot be
 * set up at all.
 */
int conn_starttls(struct conn *c, struct ssl_ctx_st *ctx, bool server,
    const char *host, bool verify, unsigned handshake_ms);

/* Whether TLS is up (a handshake succeeded). */
bool conn_tls_active(const struct conn *c);
/* Whether the peer's certificate chained to the CA store and matched the
 * host given to conn_starttls() (client side). */
bool conn_tls_verified(const struct conn *c);

/*
 * Close once the output is flushed, within flush_ms (0: no bound): reading
 * stops, then ended reports CLOSED (after close_notify over TLS, RFC 8446
 * 6.1, RFC 8314 3.4), TIMEOUT, or ERROR/EOF if the peer went first. ended
 * follows exactly once, from the loop (never from inside this call), also
 * on a connection that had ended already (CLOSED). The owner's bounds are
 * dropped. Calling it again does nothing.
 */
void conn_close(struct conn *c, unsigned flush_ms);

/* Whether conn_close() was called. */
bool conn_closing(const struct conn *c);

/* Hand what the output holds to the kernel now, without blocking or
 * waiting (a process shutting down). Plain connections only: raw octets
 * would break a TLS stream. */
void conn_flush_now(struct conn *c);

/* Free (the socket is closed; nothing more is sent). From a callback of
 * c, deferred to its return. Sets *c to NULL. */
void conn_free(struct conn **c);

/*
 * Line framing for protocols that end lines with LF (CR LF, or a bare LF
 * as the caller's policy allows): whether in starts with a whole line of
 * at most max octets, LF included.
 *   CONN_LINE_OK:        *rawlen is its length, LF included (nothing
 *                        consumed);
 *   CONN_LINE_MORE:      no LF yet, and fewer than max octets;
 *   CONN_LINE_TOO_LONG:  max octets without an LF: they are discarded
 *                        (the caller answers once and skips the rest of
 *                        the line, or drops the connection).
 */
enum conn_line {
	CONN_LINE_TOO_LONG = -1,
	CONN_LINE_MORE = 0,
	CONN_LINE_OK = 1,
};
enum conn_line conn_line(struct evbuffer *in, size_t max, size_t *rawlen);

#endif
