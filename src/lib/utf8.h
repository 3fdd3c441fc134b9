/*
 * utf8.h - one strict UTF-8 decoder for every module that checks or
 * escapes text: addresses (RFC 6531), envelopes, reports, JSON answers.
 */
#ifndef TERN_UTF8_H
#define TERN_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence at p, at most n
 * octets of it (n >= 1), with its code point in *cp; 0 if it is malformed
 * or cut short by n. Strict as RFC 3629 3 and 4 require: no overlong
 * forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. An ASCII
 * octet is a sequence of one.
 */
size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp);

#endif
