/*
 * sasl.h - the pure parts of SASL for the SMTP server's AUTH (RFC 4954):
 * strict base64 and the PLAIN message (RFC 4616). No I/O, no state, so
 * the session engine and the fuzzers use them as they are.
 */
#ifndef TERN_SASL_H
#define TERN_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Longest SASL user name or password tern accepts (RFC 4616 2: 255). */
#define SASL_FIELD_MAX 255

/*
 * Decode base64 (RFC 4648 4) strictly, as RFC 4954 4 requires: every
 * character must be of the alphabet, the length a multiple of 4, and '='
 * only as one or two final pad characters ("=AAA", "AAA=BBB" refused).
 * Writes at most dstsize bytes. Returns the decoded length, or -1 if
 * the input is not base64 or does not fit.
 */
ssize_t sasl_b64_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstsize);

/* Encode (src, n) as base64 into dst, NUL-terminated; dst needs
 * 4 * ((n + 2) / 3) + 1 bytes. Returns the encoded length, or -1 if
 * dstsize is too small. */
ssize_t sasl_b64_encode(const void *src, size_t n, char *dst, size_t dstsize);

/* RFC 4616 2: message = [authzid] NUL authcid NUL passwd. Views into the
 * decoded message, not NUL-terminated. */
struct sasl_plain {
	const char *authzid;
	size_t authzid_len;
	const char *authcid;
	size_t authcid_len;
	const char *passwd;
	size_t passwd_len;
};

/* Split a PLAIN message: exactly two NULs, authcid and passwd of
 * 1..SASL_FIELD_MAX octets, authzid at most SASL_FIELD_MAX. Returns false
 * if the message is malformed. */
bool sasl_plain_parse(const unsigned char *msg, size_t len,
    struct sasl_plain *out);

#endif
