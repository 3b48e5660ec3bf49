/*
 * fuzz_report_xml.c - libFuzzer target: the DMARC aggregate report XML
 * parser (reports_inbound_dmarc_xml; issue 15) - anyone can mail a report.
 *
 * Invariants besides memory safety: an accepted report has a non-empty
 * org_name, report_id and domain, at most REPORTS_IN_MAX_RECORDS records,
 * and no string longer than REPORTS_IN_MAX_STR or with a control character.
 */
#include "fuzz-common.h"
#include "reports-inbound.h"

static void check_str(const char *s)
{
	FUZZ_CHECK(s != NULL && strlen(s) <= REPORTS_IN_MAX_STR);
	for (; *s; s++)
		FUZZ_CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
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
		for (size_t i = 0; i < d.n; i++)
			check_str(d.recs[i].ip);
		reports_in_dmarc_clear(&d);
	}
	return 0;
}
