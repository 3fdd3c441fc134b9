/*
 * sasl.c - strict base64 and the PLAIN message (see sasl.h).
 */
#include <string.h>

#include "mail/sasl.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 character, or -1. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

ssize_t
sasl_b64_decode(const char *src, size_t len, unsigned char *dst,
    size_t dstsize)
{
	size_t o = 0;

	/* RFC 4954 4: reject, never ignore, anything outside the alphabet. */
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;

		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)src[i + k];

			if (c == '=') {
				/* only in the last quantum, only at its end */
				if (i + 4 != len || k < 2)
					return -1;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad > 0 || (v[k] = b64_value(c)) < 0)
				return -1;
		}
		/* RFC 4648 3.5: the unused bits before padding are zero in a
		 * canonical encoding; a decoder may refuse others, and one
		 * that accepts them lets one message have many encodings
		 * ("YR==" and "YQ==" would both be "a"). */
		if ((pad == 2 && (v[1] & 15) != 0) || (pad == 1 && (v[2] & 3) != 0))
			return -1;
		if (o + (size_t)(3 - pad) > dstsize)
			return -1;
		dst[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			dst[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			dst[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	return (ssize_t)o;
}

ssize_t
sasl_b64_encode(const void *src, size_t n, char *dst, size_t dstsize)
{
	const unsigned char *s = src;
	size_t o = 0;

	if (dstsize < 4 * ((n + 2) / 3) + 1)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)s[i] << 16;

		if (i + 1 < n)
			v |= (unsigned)s[i + 1] << 8;
		if (i + 2 < n)
			v |= s[i + 2];
		dst[o++] = b64_alphabet[v >> 18 & 63];
		dst[o++] = b64_alphabet[v >> 12 & 63];
		dst[o++] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
		dst[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
	}
	dst[o] = '\0';
	return (ssize_t)o;
}

bool
sasl_plain_parse(const unsigned char *msg, size_t len, struct sasl_plain *out)
{
	const unsigned char *n1, *n2;

	n1 = memchr(msg, '\0', len);
	if (n1 == NULL)
		return false;
	n2 = memchr(n1 + 1, '\0', len - (size_t)(n1 + 1 - msg));
	if (n2 == NULL || memchr(n2 + 1, '\0', len - (size_t)(n2 + 1 - msg)))
		return false;
	out->authzid = (const char *)msg;
	out->authzid_len = (size_t)(n1 - msg);
	out->authcid = (const char *)n1 + 1;
	out->authcid_len = (size_t)(n2 - n1 - 1);
	out->passwd = (const char *)n2 + 1;
	out->passwd_len = len - (size_t)(n2 + 1 - msg);
	return out->authzid_len <= SASL_FIELD_MAX &&
	    out->authcid_len > 0 && out->authcid_len <= SASL_FIELD_MAX &&
	    out->passwd_len > 0 && out->passwd_len <= SASL_FIELD_MAX;
}
