/*
 * fuzz_ar_id.c - libFuzzer target: policy_ar_authserv_id, the parser that
 * finds the authserv-id of an incoming Authentication-Results or
 * ARC-Authentication-Results value (RFC 8601 2.2, RFC 8617 4.1.1); its
 * answer decides whether a forged copy of our header is removed.
 *
 * Input: first byte selects the ARC form (low bit), the rest is the value.
 * Invariants besides memory safety:
 *  - the result is 0 or -1; on 0 the id is non-empty, fits the buffer, has
 *    no trailing dot, no encoded word ("=?") and no CR or LF;
 *  - stable under CFWS: the same value behind a comment and folding white
 *    space gives the same answer and the same id;
 *  - round trip: a parsed id written back as a quoted-string (and, when it
 *    is all token characters, bare) parses to the same id;
 *  - a too-small buffer never yields a truncated id: -1 or the same id.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "policy.h"
#include "util.h"

static bool is_token(unsigned char c)
{
	return c > 0x20 && c != 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	bool arc = data[0] & 1;
	const char *v = (const char *)data + 1;
	size_t n = size - 1;
	char id[256], id2[256], small[16];
	int rc = policy_ar_authserv_id(v, n, arc, id, sizeof(id));
	const int rc0 = rc;

	FUZZ_CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		size_t k = strlen(id);
		FUZZ_CHECK(k > 0 && k < sizeof(id));
		FUZZ_CHECK(id[k - 1] != '.');
		FUZZ_CHECK(strstr(id, "=?") == NULL);
		FUZZ_CHECK(strchr(id, '\r') == NULL && strchr(id, '\n') == NULL);
	}

	/* the same value behind a comment and a fold (after "i=N;" for ARC:
	 * prefixing there would change the instance, so only plain A-R) */
	if (!arc) {
		struct util_buf b;
		util_buf_init(&b);
		util_buf_adds(&b, " (x\\) (y))\r\n\t");
		util_buf_add(&b, v, n);
		int rc2 = policy_ar_authserv_id(b.data, b.len, false, id2, sizeof(id2));
		FUZZ_CHECK(rc2 == rc);
		if (rc == 0)
			FUZZ_CHECK(strcmp(id, id2) == 0);
		util_buf_free(&b);
	}

	if (rc == 0) {
		/* round trip through a quoted-string, and bare when possible */
		struct util_buf b;
		bool token = true;
		util_buf_init(&b);
		util_buf_adds(&b, arc ? " i=1; \"" : " \"");
		for (const char *p = id; *p; p++) {
			if (*p == '"' || *p == '\\')
				util_buf_adds(&b, "\\");
			util_buf_add(&b, p, 1);
			token = token && is_token((unsigned char)*p);
		}
		util_buf_adds(&b, "\"; none");
		FUZZ_CHECK(policy_ar_authserv_id(b.data, b.len, arc, id2, sizeof(id2)) == 0);
		FUZZ_CHECK(strcmp(id, id2) == 0);
		util_buf_reset(&b);
		if (token) {
			util_buf_adds(&b, arc ? "i=2;" : "");
			util_buf_adds(&b, id);
			util_buf_adds(&b, ";none");
			FUZZ_CHECK(policy_ar_authserv_id(b.data, b.len, arc, id2, sizeof(id2)) ==
			           0);
			FUZZ_CHECK(strcmp(id, id2) == 0);
		}
		util_buf_free(&b);
	}

	rc = policy_ar_authserv_id(v, n, arc, small, sizeof(small));
	if (rc == 0)
		FUZZ_CHECK(rc0 == 0 && strlen(small) < sizeof(small) && strcmp(small, id) == 0);
	return 0;
}
