/*
 * tls.c - OpenSSL contexts and TLS bufferevents (see tls.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/tls.h"
#include "lib/util.h"

#define TLS_PEM_MAX (1u << 20)
#define TLS_UNDER_WRITE_MAX (64 * 1024)  /* ciphertext queued under a filter */

int
tls_min_version(bool tls13_only)
{
	return tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* The first queued OpenSSL error as text (and the queue cleared). */
static void
ssl_err(char *buf, size_t size, const char *what)
{
	unsigned long e = ERR_get_error();
	char tmp[256];

	if (e == 0)
		snprintf(buf, size, "%s", what);
	else {
		ERR_error_string_n(e, tmp, sizeof(tmp));
		snprintf(buf, size, "%s: %s", what, tmp);
	}
	ERR_clear_error();
}

/* Common settings of both sides. */
static bool
ctx_common(SSL_CTX *ctx, int min_version)
{
	if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1)
		return false;
	/* Client-initiated renegotiation is a cheap CPU attack on a server
	 * and useless to SMTP; compression invites CRIME. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return true;
}

SSL_CTX *
tls_server_ctx_new(const char *cert_pem, size_t cert_len, const char *key_pem,
    size_t key_len, int min_version, char *err, size_t errsize)
{
	SSL_CTX *ctx = NULL;
	BIO *bio = NULL;
	X509 *x = NULL;
	EVP_PKEY *key = NULL;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || !ctx_common(ctx, min_version)) {
		ssl_err(err, errsize, "cannot create a TLS context");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Session resumption across the worker's connections. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tern", 4);

	/* The chain: leaf first, then intermediates. */
	if (cert_len > INT32_MAX || key_len > INT32_MAX ||
	    (bio = BIO_new_mem_buf(cert_pem, (int)cert_len)) == NULL) {
		snprintf(err, errsize, "certificate too large");
		goto fail;
	}
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (x == NULL) {
		ssl_err(err, errsize, "no certificate in PEM");
		goto fail;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		ssl_err(err, errsize, "certificate refused");
		goto fail;
	}
	X509_free(x);
	x = NULL;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			ssl_err(err, errsize, "chain certificate refused");
			goto fail;
		}
		x = NULL;   /* owned by ctx */
	}
	/* The end of the PEM text is "no start line"; anything else is a
	 * damaged certificate (a renewal caught half-written, say). */
	unsigned long e = ERR_peek_last_error();
	if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		ssl_err(err, errsize, "damaged certificate chain");
		goto fail;
	}
	ERR_clear_error();
	BIO_free(bio);

	bio = BIO_new_mem_buf(key_pem, (int)key_len);
	if (bio == NULL) {
		snprintf(err, errsize, "out of memory");
		goto fail;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (key == NULL) {
		ssl_err(err, errsize, "no private key in PEM (or it is "
		    "encrypted)");
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errsize, "private key does not match the "
		    "certificate");
		goto fail;
	}
	EVP_PKEY_free(key);
	BIO_free(bio);
	return ctx;
fail:
	X509_free(x);
	EVP_PKEY_free(key);
	BIO_free(bio);
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *
tls_client_ctx_new(const char *ca_file, int min_version, char *err,
    size_t errsize)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || !ctx_common(ctx, min_version)) {
		ssl_err(err, errsize, "cannot create a TLS context");
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Verification is asked per connection (tls_wrap()); without it the
	 * result is still computed, for the log. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_verify_depth(ctx, 10);
	if (ca_file != NULL && access(ca_file, R_OK) == 0 &&
	    SSL_CTX_load_verify_file(ctx, ca_file) != 1) {
		ssl_err(err, errsize, "cannot load the CA file");
		SSL_CTX_free(ctx);
		return NULL;
	}
	ERR_clear_error();
	return ctx;
}

struct bufferevent *
tls_wrap(struct event_base *base, struct bufferevent *under, SSL_CTX *ctx,
    bool server, const char *host, bool verify)
{
	struct bufferevent *bev;
	SSL *ssl = SSL_new(ctx);
	struct in6_addr a6;
	struct in_addr a4;

	if (ssl == NULL)
		return NULL;
	if (!server && verify && (host == NULL || host[0] == '\0')) {
		/* nothing to verify against: refuse rather than fail open */
		SSL_free(ssl);
		return NULL;
	}
	if (!server && host != NULL && host[0] != '\0') {
		bool ip = inet_pton(AF_INET, host, &a4) == 1 ||
		    inet_pton(AF_INET6, host, &a6) == 1;
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);

		/* RFC 6066 3: SNI carries host names, never literals. */
		if (!ip)
			SSL_set_tlsext_host_name(ssl, host);
		if (ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 :
		    SSL_set1_host(ssl, host) != 1) {
			SSL_free(ssl);
			return NULL;
		}
		X509_VERIFY_PARAM_set_hostflags(vp,
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (verify)
			SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	}
	/* Without a high-water mark on the socket's bufferevent, the
	 * filter moves every octet written to it straight into the socket's
	 * output: the filter's own output stays empty, so no owner's output
	 * bound (a client that never reads its replies) would ever engage.
	 * With it the filter stops there and its output holds the rest. */
	bufferevent_setwatermark(under, EV_WRITE, 0, TLS_UNDER_WRITE_MAX);
	bev = bufferevent_openssl_filter_new(base, under, ssl,
	    server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* Many SMTP peers close without close_notify; the SMTP dialogue
	 * (QUIT, the final ".") says whether anything was cut short. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

struct bufferevent *
tls_accept(struct event_base *base, int fd, SSL_CTX *ctx)
{
	struct bufferevent *bev;
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

void
tls_close_notify(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	if (ssl != NULL && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
		(void)SSL_shutdown(ssl);
	ERR_clear_error();
}

void
tls_describe(struct bufferevent *bev, char *buf, size_t size)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	if (ssl == NULL) {
		snprintf(buf, size, "none");
		return;
	}
	snprintf(buf, size, "%s:%s", SSL_get_version(ssl),
	    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
}

bool
tls_peer_verified(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	X509 *peer;

	if (ssl == NULL || (peer = SSL_get0_peer_certificate(ssl)) == NULL)
		return false;
	return SSL_get_verify_result(ssl) == X509_V_OK;
}

void
tls_error_text(struct bufferevent *bev, char *buf, size_t size)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	unsigned long e = bufferevent_get_openssl_error(bev);
	long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	char tmp[256];

	if (vr != X509_V_OK && ssl != NULL &&
	    SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) {
		snprintf(buf, size, "certificate verification failed: %s",
		    X509_verify_cert_error_string(vr));
	} else if (e != 0) {
		ERR_error_string_n(e, tmp, sizeof(tmp));
		snprintf(buf, size, "TLS handshake failed: %s", tmp);
	} else if (errno != 0) {
		snprintf(buf, size, "TLS handshake failed: %s", strerror(errno));
	} else {
		snprintf(buf, size, "TLS handshake failed: connection closed");
	}
	while (bufferevent_get_openssl_error(bev) != 0)
		;
}

char *
tls_read_pem(const char *path, size_t *len, char *err, size_t errsize)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd == -1) {
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size > (off_t)TLS_PEM_MAX) {
		snprintf(err, errsize, "%s: not a regular file of at most 1 MiB",
		    path);
		close(fd);
		return NULL;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size &&
	    (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)n;
	close(fd);
	buf[got] = '\0';
	*len = got;
	return buf;
}

SSL_CTX *
tls_server_ctx_load(const char *cert_path, const char *key_path,
    int min_version, char *err, size_t errsize)
{
	size_t clen, klen;
	char *cert, *key;
	SSL_CTX *ctx = NULL;

	if ((cert = tls_read_pem(cert_path, &clen, err, errsize)) == NULL)
		return NULL;
	if ((key = tls_read_pem(key_path, &klen, err, errsize)) != NULL) {
		ctx = tls_server_ctx_new(cert, clen, key, klen, min_version, err,
		    errsize);
		explicit_bzero(key, klen);
		free(key);
	}
	free(cert);
	return ctx;
}

/* Write all of buf to fd. */
static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
tls_bundle_fd(const char *cert_path, const char *key_path, char *err,
    size_t errsize)
{
	size_t clen, klen;
	char *cert, *key;
	int fd, rc;

	if ((cert = tls_read_pem(cert_path, &clen, err, errsize)) == NULL)
		return -1;
	if ((key = tls_read_pem(key_path, &klen, err, errsize)) == NULL) {
		free(cert);
		return -1;
	}
	fd = memfd_create("tern-tls", MFD_CLOEXEC);
	if (fd == -1) {
		snprintf(err, errsize, "memfd_create: %s", strerror(errno));
		rc = -1;
	} else {
		/* PEM readers skip blocks of other types, so one text holds
		 * both: certificates first, then the key. */
		rc = write_all(fd, cert, clen) == 0 && write_all(fd, "\n", 1) == 0 &&
		    write_all(fd, key, klen) == 0 && lseek(fd, 0, SEEK_SET) == 0 ?
		    0 : -1;
		if (rc == -1) {
			snprintf(err, errsize, "memfd: %s", strerror(errno));
			close(fd);
			fd = -1;
		}
	}
	explicit_bzero(key, klen);
	free(key);
	free(cert);
	return fd;
}

SSL_CTX *
tls_server_ctx_from_fd(int fd, int min_version, char *err, size_t errsize)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	ssize_t n;
	SSL_CTX *ctx;

	if (fstat(fd, &st) == -1 || st.st_size <= 0 ||
	    st.st_size > (off_t)(2 * TLS_PEM_MAX)) {
		snprintf(err, errsize, "certificate bundle unreadable");
		return NULL;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size &&
	    (n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	ctx = tls_server_ctx_new(buf, got, buf, got, min_version, err, errsize);
	explicit_bzero(buf, got);
	free(buf);
	return ctx;
}
