/*
 * fuzz-common.h - helpers shared by the libFuzzer targets in tests/fuzz/:
 * a checked assertion that aborts with a message (so libFuzzer records the
 * input as a crash even in a build without assert()), and a bounded
 * NUL-terminated copy of the fuzzer's input.
 *
 * Ownership: fuzz_strdup() returns memory the caller frees with free().
 */
#ifndef MX_FUZZ_COMMON_H
#define MX_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* FUZZ_CHECK - an invariant of the code under test; abort() when broken. */
#define FUZZ_CHECK(cond)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, \
				#cond);                                                    \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* fuzz_strdup - data[0..n) as a NUL-terminated string (may contain NULs). */
static inline char *fuzz_strdup(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		abort();
	if (n)
		memcpy(s, data, n);
	s[n] = 0;
	return s;
}

#endif
