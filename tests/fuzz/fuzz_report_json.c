/*
 * fuzz_report_json.c - libFuzzer target: the TLS-RPT JSON parser
 * (reports_inbound_tlsrpt_json; issue 15) and the decompressor in front of
 * it (reports_inbound_decompress: gzip, zip - bombs, truncation).
 *
 * Invariants besides memory safety: an accepted report has an org and id
 * and at most REPORTS_IN_MAX_RECORDS policies, session counts at most
 * REPORTS_IN_MAX_COUNT, dates within 0..REPORTS_IN_MAX_TIME, a failures
 * string of whole UTF-8 characters; decompressed output never
 * exceeds REPORTS_IN_MAX_DECOMP nor REPORTS_IN_MAX_RATIO x the input.
 */
#include "fuzz-common.h"
#include "reports-inbound.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reports_in_tlsrpt t;
	char err[200];
	unsigned char *out = NULL;
	size_t outlen = 0;

	if (reports_inbound_tlsrpt_json((const char *)data, size, &t, err, sizeof(err)) == 0) {
		FUZZ_CHECK(t.org_name[0] && t.report_id[0]);
		FUZZ_CHECK(t.n <= REPORTS_IN_MAX_RECORDS);
		FUZZ_CHECK(t.begin >= 0 && t.begin <= REPORTS_IN_MAX_TIME);
		FUZZ_CHECK(t.end >= 0 && t.end <= REPORTS_IN_MAX_TIME);
		for (size_t i = 0; i < t.n; i++) {
			FUZZ_CHECK(t.pols[i].success <= (uint64_t)REPORTS_IN_MAX_COUNT);
			FUZZ_CHECK(t.pols[i].failure <= (uint64_t)REPORTS_IN_MAX_COUNT);
			const unsigned char *f = (const unsigned char *)t.pols[i].failures;
			size_t fl = strlen(t.pols[i].failures);
			FUZZ_CHECK(fl == 0 || (f[fl - 1] & 0xc0) != 0xc0); /* no cut lead byte */
		}
		reports_in_tlsrpt_clear(&t);
	}
	if (reports_inbound_decompress(data, size, &out, &outlen, err, sizeof(err)) == 0) {
		FUZZ_CHECK(outlen <= REPORTS_IN_MAX_DECOMP);
		FUZZ_CHECK(outlen <= (uint64_t)size * REPORTS_IN_MAX_RATIO + 4096);
		free(out);
	}
	return 0;
}
