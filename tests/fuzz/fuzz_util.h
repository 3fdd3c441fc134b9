/*
 * fuzz_util.h - what every fuzz target of the channel and the codecs
 * needs: CHECK (an invariant that breaks aborts, so libFuzzer keeps the
 * input) and the entry point's prototype.
 */
#ifndef TERN_FUZZ_UTIL_H
#define TERN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			abort();                                               \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
