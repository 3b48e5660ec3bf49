/*
 * fuzz_dmarc_record.c - libFuzzer target: the DMARC policy record parser
 * (policy_dmarc_record_parse, RFC 9989 4.7) and the RFC 5322 From: parser
 * DMARC judges by (policy_from_parse); both read text from the outside (a
 * TXT record, a header field).
 *
 * Input: first byte selects the parser (low bit: From:), the rest is the text.
 * Invariants besides memory safety:
 *  - record: the result is -1, 0 or 1; on 0 every field is in its value set
 *    (p in n/q/r, sp/np in 0/n/q/r, adkim/aspf in r/s, psd in y/n/u); on -1
 *    the error is non-empty; appending ";" or " ; " to the text changes
 *    nothing (empty tag-specs are allowed), and neither does writing white
 *    space around the "=" of the first tag;
 *  - From: the count is -1 or >= 0; a domain exactly when the count is > 0,
 *    non-empty, no upper-case ASCII, no CR/LF, no "@" "<" ">" ",";
 *    a trailing comment does not change the answer.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "policy-dmarc-internal.h"
#include "util.h"

static bool pol_ok(char c, bool zero_ok)
{
	return c == 'n' || c == 'q' || c == 'r' || (zero_ok && c == 0);
}

static void check_record(const char *t, size_t n)
{
	struct policy_dmarc_record r, r2;
	char err[128], err2[128];
	int rc = policy_dmarc_record_parse(t, n, &r, err, sizeof(err));

	FUZZ_CHECK(rc == -1 || rc == 0 || rc == 1);
	if (rc == -1)
		FUZZ_CHECK(err[0] != 0);
	if (rc == 0) {
		FUZZ_CHECK(pol_ok(r.p, false) && pol_ok(r.sp, true) && pol_ok(r.np, true));
		FUZZ_CHECK(r.adkim == 'r' || r.adkim == 's');
		FUZZ_CHECK(r.aspf == 'r' || r.aspf == 's');
		FUZZ_CHECK(r.psd == 'y' || r.psd == 'n' || r.psd == 'u');
		/* RFC 9991: fo always has an option; ruf is a bounded string */
		FUZZ_CHECK(r.fo != 0 && (r.fo & ~0xfu) == 0);
		FUZZ_CHECK(memchr(r.ruf, 0, sizeof(r.ruf)) != NULL);
	}
	if (memchr(t, 0, n) != NULL)
		return;
	for (int k = 0; k < 2; k++) {
		char *t2 = util_xasprintf("%.*s%s", (int)n, t, k == 0 ? ";" : " ; ");
		int rc2 = policy_dmarc_record_parse(t2, strlen(t2), &r2, err2, sizeof(err2));
		/* a text ending inside a tag value may now end that value
		 * differently only when it ended with white space already */
		if (n == 0 || (t[n - 1] != ';' && t[n - 1] != ' ' && t[n - 1] != '\t' &&
		               t[n - 1] != '\r' && t[n - 1] != '\n')) {
			FUZZ_CHECK(rc2 == rc);
			if (rc == 0)
				FUZZ_CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
		}
		free(t2);
	}
	if (n > 2 && t[0] == 'v' && t[1] == '=') {
		char *t3 = util_xasprintf("v \t= %.*s", (int)(n - 2), t + 2);
		int rc3 = policy_dmarc_record_parse(t3, strlen(t3), &r2, err2, sizeof(err2));
		if (t[2] != ' ' && t[2] != '\t' && t[2] != '\r' && t[2] != '\n') {
			FUZZ_CHECK(rc3 == rc);
			if (rc == 0)
				FUZZ_CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
		}
		free(t3);
	}
}

static void check_from(const char *v, size_t n)
{
	char *dom = NULL, *dom2 = NULL;
	int c = policy_from_parse(v, n, &dom);

	FUZZ_CHECK(c >= -1);
	FUZZ_CHECK((dom != NULL) == (c > 0));
	if (dom != NULL) {
		FUZZ_CHECK(dom[0] != 0);
		for (const char *p = dom; *p; p++)
			FUZZ_CHECK(!(*p >= 'A' && *p <= 'Z') && strchr("\r\n@<>,", *p) == NULL);
	}
	if (memchr(v, 0, n) == NULL && memchr(v, '\\', n) == NULL && memchr(v, '(', n) == NULL &&
	    memchr(v, ')', n) == NULL && memchr(v, '"', n) == NULL) {
		char *v2 = util_xasprintf("%.*s (c)", (int)n, v);
		int c2 = policy_from_parse(v2, strlen(v2), &dom2);
		FUZZ_CHECK(c2 == c);
		FUZZ_CHECK((dom == NULL && dom2 == NULL) ||
		           (dom != NULL && dom2 != NULL && strcmp(dom, dom2) == 0));
		free(v2);
		free(dom2);
	}
	free(dom);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	if (data[0] & 1)
		check_from((const char *)data + 1, size - 1);
	else
		check_record((const char *)data + 1, size - 1);
	return 0;
}
