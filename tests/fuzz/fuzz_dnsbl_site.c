/*
 * fuzz_dnsbl_site.c - libFuzzer target: the [dnsbl] sites syntax
 * (config_dnsbl_parse, config_dnsbl_match).  Config files are written by
 * the postmaster, but site lists are pasted from vendors' pages.
 *
 * Invariants besides memory safety:
 *  - a parsed site has a non-empty lower-case zone and a non-zero weight in
 *    -1000..1000;
 *  - an answer in 127.255.255.0/24 or outside 127.0.0.0/8 never matches;
 *  - an unfiltered site matches every other 127.0.0.0/8 answer.
 */
#include <stdbool.h>

#include "config.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *spec = malloc(size + 1);
	if (!spec)
		abort();
	memcpy(spec, data, size);
	spec[size] = 0;
	struct config_dnsbl_site site;
	char err[200];
	if (config_dnsbl_parse(spec, &site, err, sizeof(err)) == 0) {
		FUZZ_CHECK(site.zone[0] != 0);
		for (const char *z = site.zone; *z; z++)
			FUZZ_CHECK(!(*z >= 'A' && *z <= 'Z'));
		FUZZ_CHECK(site.weight != 0 && site.weight >= -1000 && site.weight <= 1000);
		const uint8_t refused[4] = {127, 255, 255, (uint8_t)(size & 0xff)};
		const uint8_t outside[4] = {(uint8_t)(size % 127), 0, 0, 2};
		const uint8_t inside[4] = {127, 0, (uint8_t)(size & 0xff), 2};
		FUZZ_CHECK(!config_dnsbl_match(&site, refused));
		FUZZ_CHECK(!config_dnsbl_match(&site, outside));
		if (!site.filtered)
			FUZZ_CHECK(config_dnsbl_match(&site, inside));
	} else {
		FUZZ_CHECK(err[0] != 0);
	}
	free(spec);
	return 0;
}
