/*
 * fuzz_smtp_reply.c - libFuzzer target: the downstream reply parser
 * (smtp_reply_parse) used by the SMTP client when relaying.  A downstream
 * (or anyone on the path when TLS is not verified) controls these bytes.
 *
 * Invariants besides memory safety:
 *  - the length consumed is never more than the bytes given;
 *  - an accepted reply has a code 200..599, 1..1000 lines and a
 *    NUL-terminated text shorter than its buffer;
 *  - parsing exactly the consumed bytes gives the same result, and a prefix
 *    of them asks for more (0): a reply is never completed early.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-internal.h"

static struct smtp_reply r1, r2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	int n = smtp_reply_parse(buf, size, &r1);
	FUZZ_CHECK(n >= -1 && (size_t)(n > 0 ? n : 0) <= size);
	if (n > 0) {
		FUZZ_CHECK(r1.code >= 200 && r1.code <= 599);
		FUZZ_CHECK(r1.nlines >= 1 && r1.nlines <= 1000);
		FUZZ_CHECK(memchr(r1.text, 0, sizeof(r1.text)) != NULL);
		FUZZ_CHECK(smtp_reply_parse(buf, (size_t)n, &r2) == n);
		FUZZ_CHECK(r2.code == r1.code && r2.nlines == r1.nlines &&
			   strcmp(r2.text, r1.text) == 0);
		size_t cuts[2] = {(size_t)n - 1, (size_t)n / 2};
		for (int i = 0; i < 2; i++)
			if (cuts[i] > 0)
				FUZZ_CHECK(smtp_reply_parse(buf, cuts[i], &r2) == 0);
	}
	free(buf);
	return 0;
}
