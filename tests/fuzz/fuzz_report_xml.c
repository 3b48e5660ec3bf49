/*
 * fuzz_report_xml.c - libFuzzer target: the DMARC aggregate report XML
 * parser (reports_inbound_dmarc_xml; issue 15) - anyone can mail a report.
 *
 * Invariants besides memory safety: an accepted report has a non-empty
 * org_name, report_id and domain, at most REPORTS_IN_MAX_RECORDS records,
 * no string longer than REPORTS_IN_MAX_STR, with a control character or
 * not UTF-8 (a cut never splits a character), counts at most
 * REPORTS_IN_MAX_COUNT and dates within 0..REPORTS_IN_MAX_TIME (what the
 * stores and the dashboard's sums can hold).
 */
#include "fuzz-common.h"
#include "reports-inbound.h"

static void check_str(const char *s)
{
	FUZZ_CHECK(s != NULL && strlen(s) <= REPORTS_IN_MAX_STR);
	for (; *s; s++)
		FUZZ_CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
}

/* check_utf8 - lead bytes followed by as many continuation bytes. */
static void check_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int n = *p < 0x80 ? 0 : *p >= 0xf0 ? 3 : *p >= 0xe0 ? 2 : *p >= 0xc0 ? 1 : -1;
		FUZZ_CHECK(n >= 0);
		p++;
		for (int i = 0; i < n; i++, p++)
			FUZZ_CHECK((*p & 0xc0) == 0x80);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reports_in_dmarc d;
	char err[200];

	reports_inbound_init();
	if (reports_inbound_dmarc_xml((const char *)data, size, &d, err, sizeof(err)) == 0) {
		FUZZ_CHECK(d.org_name[0] && d.report_id[0] && d.domain[0]);
		FUZZ_CHECK(d.n <= REPORTS_IN_MAX_RECORDS);
		check_str(d.org_name);
		check_str(d.domain);
		check_utf8(d.org_name);
		check_utf8(d.domain);
		FUZZ_CHECK(d.begin >= 0 && d.begin <= REPORTS_IN_MAX_TIME);
		FUZZ_CHECK(d.end >= 0 && d.end <= REPORTS_IN_MAX_TIME);
		for (size_t i = 0; i < d.n; i++) {
			check_str(d.recs[i].ip);
			check_utf8(d.recs[i].ip);
			FUZZ_CHECK(d.recs[i].count <= (uint64_t)REPORTS_IN_MAX_COUNT);
		}
		reports_in_dmarc_clear(&d);
	}
	return 0;
}
