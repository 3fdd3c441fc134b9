/*
 * tls.h - TLS for tern's connections, with OpenSSL 3 and libevent's
 * bufferevent_openssl: the contexts of the server side (certificate and
 * key from the configuration) and of the client side (CA bundle for
 * verification), and the wrap of a plain connection after STARTTLS.
 *
 * The protocol engines (smtp_session, smtp_client) never see OpenSSL:
 * they ask their transport to start TLS and get new buffers back. The
 * transport is lib/conn.c, the one user of the bufferevent functions
 * here; the processes make the contexts.
 */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

struct event_base;

/* The protocol floor for a context: TLS1_3_VERSION if tls13_only (the
 * configuration's tls_min_version TLSv1.3), else TLS1_2_VERSION. */
int tls_min_version(bool tls13_only);

/* "TLSv1.3:TLS_AES_256_GCM_SHA384" fits with room to spare. */
#define TLS_DESC_MAX 128

/*
 * A server context from PEM text: the certificate chain (leaf first) and
 * the private key. min_version is TLS1_2_VERSION or TLS1_3_VERSION.
 * Returns NULL with err set on any error (unreadable PEM, key that does
 * not match the certificate).
 */
SSL_CTX *tls_server_ctx_new(const char *cert_pem, size_t cert_len,
    const char *key_pem, size_t key_len, int min_version, char *err,
    size_t errsize);

/*
 * A client context. ca_file (PEM bundle) is read now, so that the
 * verification still works after chroot; NULL or a missing file leaves
 * the store empty (every certificate is then "untrusted").
 */
SSL_CTX *tls_client_ctx_new(const char *ca_file, int min_version, char *err,
    size_t errsize);

/*
 * Start TLS on an established connection: a filter bufferevent runs the
 * handshake over under, which it owns from now on (freeing the result
 * frees both). The caller discards the input buffered in clear text
 * first (conn_starttls(): RFC 3207 4.2).
 *
 * Client side (server == false): host, if not NULL, is sent as SNI when it
 * is a name, and when verify is true the handshake fails unless the peer's
 * certificate chains to the CA store and matches host (RFC 6125). With
 * verify false the certificate is still checked, for the log only
 * (tls_peer_verified()).
 *
 * Returns NULL (under untouched) on failure.
 */
struct bufferevent *tls_wrap(struct event_base *base, struct bufferevent *under,
    SSL_CTX *ctx, bool server, const char *host, bool verify);

/* Implicit TLS (RFC 8314): a server-side TLS bufferevent on a fresh fd. */
struct bufferevent *tls_accept(struct event_base *base, int fd, SSL_CTX *ctx);

/*
 * Queue close_notify (RFC 8446 6.1) on a TLS bufferevent whose own output
 * is empty. A socket-based one writes it to the socket; a filter puts it
 * in the output of the bufferevent below, for the caller to send.
 */
void tls_close_notify(struct bufferevent *bev);

/* "TLSv1.3:TLS_AES_256_GCM_SHA384" of a TLS bufferevent. */
void tls_describe(struct bufferevent *bev, char *buf, size_t size);

/* Whether the peer's certificate chained to the CA store and matched the
 * host given to tls_wrap() (client side). */
bool tls_peer_verified(struct bufferevent *bev);

/*
 * Why a TLS bufferevent failed, for logs: the OpenSSL error queue of the
 * bufferevent, the certificate verification result, or errno.
 */
void tls_error_text(struct bufferevent *bev, char *buf, size_t size);

/* Read a whole PEM file (at most 1 MiB) into a new NUL-terminated buffer.
 * Returns NULL with err set. */
char *tls_read_pem(const char *path, size_t *len, char *err, size_t errsize);

/* tls_server_ctx_new() from the two files (read now, as whoever calls;
 * the key's copy in memory is wiped after use). */
SSL_CTX *tls_server_ctx_load(const char *cert_path, const char *key_path,
    int min_version, char *err, size_t errsize);

/*
 * Certificate reload without giving the smtp process the files: the
 * parent (root) reads both into an anonymous memory file (memfd) and
 * passes its descriptor; the smtp process builds its new context from it.
 * tls_bundle_fd() returns the fd (read position 0) or -1 with err set;
 * tls_server_ctx_from_fd() reads it (not closing it) and wipes its copy.
 */
int tls_bundle_fd(const char *cert_path, const char *key_path, char *err,
    size_t errsize);
SSL_CTX *tls_server_ctx_from_fd(int fd, int min_version, char *err,
    size_t errsize);

#endif
