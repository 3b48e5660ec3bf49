/*
 * fuzz_report_mime.c - libFuzzer target: a whole report message through
 * the MIME walk (GMime), the sniffing, decompression and both parsers
 * (reports_inbound_parse; issue 15).
 *
 * Invariants besides memory safety: at most REPORTS_IN_MAX_REPORTS reports
 * per message; the count returned is the number of reports added; a
 * message without any report says why.
 */
#include "fuzz-common.h"
#include "reports-inbound.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reports_inbound in;

	memset(&in, 0, sizeof(in));
	int n = reports_inbound_parse((const char *)data, size, &in);
	FUZZ_CHECK(n >= 0 && (size_t)n == in.ndmarc + in.ntlsrpt);
	FUZZ_CHECK(in.ndmarc + in.ntlsrpt <= REPORTS_IN_MAX_REPORTS);
	FUZZ_CHECK(n > 0 || in.errors.n > 0);
	reports_inbound_clear(&in);
	return 0;
}
