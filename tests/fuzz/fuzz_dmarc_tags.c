/*
 * fuzz_dmarc_tags.c - libFuzzer target: the DMARC record readers of the
 * report path, which read TXT records any domain publishes:
 * policy_dmarc_tag (policy/policy-facts.c: p, sp, np, adkim, aspf, t, psd,
 * pct for the report store) and reports_rua_parse (reports/reports-send.c:
 * the mailto: destinations and their size limits).
 *
 * Input: the record text (NUL-terminated copy; bytes after a NUL are
 * ignored, as for a C string from the resolver).
 * Invariants besides memory safety:
 *  - a tag value fits its buffer, is NUL-terminated and has no upper-case
 *    ASCII letter, no ';' and no leading/trailing blank;
 *  - rua gives at most max destinations, each with an '@' that is neither
 *    first nor last, and no blank, '<', '>', '"', CR or LF.
 */
#include <ctype.h>

#include "fuzz-common.h"
#include "policy-internal.h"
#include "reports-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const tags[] = {"p", "sp",  "np",  "adkim", "aspf",
	                                   "t", "psd", "pct", "rua"};
	char *rec = malloc(size + 1);
	if (rec == NULL)
		return 0;
	memcpy(rec, data, size);
	rec[size] = '\0';
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		char out[12];
		memset(out, 'x', sizeof(out));
		policy_dmarc_tag(rec, tags[i], out, sizeof(out));
		size_t n = strnlen(out, sizeof(out));
		FUZZ_CHECK(n < sizeof(out));
		for (size_t k = 0; k < n; k++)
			FUZZ_CHECK(!(out[k] >= 'A' && out[k] <= 'Z') && out[k] != ';');
		if (n > 0)
			FUZZ_CHECK(out[0] != ' ' && out[0] != '\t' && out[n - 1] != ' ' &&
			           out[n - 1] != '\t');
	}
	struct util_strlist dests = {0};
	uint64_t limits[4];
	size_t nd = reports_rua_parse(rec, &dests, limits, 4);
	FUZZ_CHECK(nd <= 4 && nd == dests.n);
	for (size_t i = 0; i < nd; i++) {
		const char *a = dests.v[i], *at = strrchr(a, '@');
		FUZZ_CHECK(at != NULL && at != a && at[1] != '\0');
		FUZZ_CHECK(strpbrk(a, " \t<>\"\r\n") == NULL);
	}
	util_strlist_free(&dests);
	free(rec);
	return 0;
}
