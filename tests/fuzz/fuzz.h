/*
 * fuzz.h - what every fuzz target of tests/fuzz/ uses: libFuzzer's entry
 * point and CHECK, an invariant that aborts (libFuzzer then keeps the
 * input as a crash).
 */
#ifndef TERN_FUZZ_H
#define TERN_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			abort();                                               \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two strings that may be NULL are the same. */
static inline bool
fuzz_str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * The read framing of the targets that are fed a connection's input
 * (session, auth, client): at data[*i] a byte b, then (b & 63) + 1
 * octets, fewer at the end. Sets *p to them, returns their number and
 * moves *i past them; *i < size on entry.
 */
static inline size_t
fuzz_next_read(const uint8_t *data, size_t size, size_t *i, const uint8_t **p)
{
	size_t n = (size_t)(data[*i] & 63) + 1;

	(*i)++;
	if (n > size - *i)
		n = size - *i;
	*p = data + *i;
	*i += n;
	return n;
}

#endif
