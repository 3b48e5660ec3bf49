/*
 * fuzz_verify_cache.c - libFuzzer target: the recipient-verification cache
 * file reader (smtp_verify_cache_load, smtp/smtp-verify-cache.c).  The file
 * lives in the queue directory; a crash, a full disk or a careless edit can
 * leave anything in it, and mxgate reads it at every start.
 *
 * Invariants besides memory safety:
 *  - the cache never holds more than its maximum, nor more entries than
 *    the answers taken;
 *  - loading the same image twice takes the same number of answers;
 *  - a well-formed positive line appended after the input is always taken
 *    and answers OK (a bad line never swallows the next one) - unless the
 *    input does not start with the magic line, when nothing is taken.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-verify-internal.h"

#define NOW 1700000000
#define MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char tail[] = "\nP 1800000000 probe@fuzz.test\n";
	if (size > 1 << 16)
		return 0;
	struct smtp_verify_cache *c = smtp_verify_cache_new(NULL, MAX, NOW);
	size_t n1 = smtp_verify_cache_load(c, (const char *)data, size, NOW);
	FUZZ_CHECK(smtp_verify_cache_count(c) <= MAX);
	FUZZ_CHECK(smtp_verify_cache_count(c) <= n1);
	smtp_verify_cache_free(c);

	c = smtp_verify_cache_new(NULL, MAX, NOW);
	FUZZ_CHECK(smtp_verify_cache_load(c, (const char *)data, size, NOW) == n1);
	smtp_verify_cache_free(c);

	char *buf = malloc(size + sizeof(tail));
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	memcpy(buf + size, tail, sizeof(tail) - 1);
	size_t ml = strlen(SMTP_VERIFY_CACHE_MAGIC);
	bool magic = size >= ml && memcmp(data, SMTP_VERIFY_CACHE_MAGIC, ml) == 0 &&
	             (size == ml || data[ml] == '\n');
	c = smtp_verify_cache_new(NULL, MAX, NOW);
	size_t n2 = smtp_verify_cache_load(c, buf, size + sizeof(tail) - 1, NOW);
	enum smtp_verify_result r = smtp_verify_cache_get(c, "probe@fuzz.test", NOW);
	if (magic)
		FUZZ_CHECK(n2 >= 1 && r == SMTP_VERIFY_OK);
	else
		FUZZ_CHECK(n2 == 0 && r == SMTP_VERIFY_PENDING);
	smtp_verify_cache_free(c);
	free(buf);
	return 0;
}
