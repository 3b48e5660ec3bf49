/*
 * fuzz_pregreet_cache.c - libFuzzer target: the pregreet pass-cache file
 * (smtp_pregreet_cache_parse), read at every start from
 * [pregreet] pass_cache_file.
 *
 * Invariants besides memory safety:
 *  - never more entries than the maximum, nor than lines in the input;
 *  - nothing is taken from an image without the magic first line;
 *  - every key taken is an IPv4 or IPv6 address key with a positive expiry;
 *  - the same image always gives the same count.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-server-internal.h"

struct tally {
	size_t n;
};

static void take(void *arg, const uint8_t key[17], int64_t expires)
{
	struct tally *t = arg;
	FUZZ_CHECK(key[0] == 4 || key[0] == 6);
	FUZZ_CHECK(expires > 0);
	t->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	char *buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	size_t lines = 0;
	for (size_t i = 0; i < size; i++)
		lines += buf[i] == '\n';
	struct tally t = {0}, again = {0};
	size_t max = 1 + (size & 7);
	size_t n = smtp_pregreet_cache_parse(buf, size, max, take, &t);
	FUZZ_CHECK(n == t.n && n <= max && n <= lines + 1);
	if (size < 23 || memcmp(buf, "mxgate-pregreet-pass 1\n", 23) != 0)
		FUZZ_CHECK(n == 0);
	FUZZ_CHECK(smtp_pregreet_cache_parse(buf, size, max, take, &again) == n);
	free(buf);
	return 0;
}
