/*
 * fuzz_mtasts.c - libFuzzer target: the MTA-STS policy parser and TXT
 * record parser (policy_mtasts_parse, policy_mtasts_txt).  Both read bytes
 * from any web server / DNS zone a bounce is addressed to.
 *
 * Invariants besides memory safety:
 *  - an accepted policy has a mode, max_age <= one year, at most 64 mx
 *    patterns, and mx patterns unless mode is none; every pattern matches
 *    itself (a wildcard matches "x" + its suffix);
 *  - a refused policy leaves the output empty;
 *  - an accepted TXT record yields an id of 1..32 alphanumerics.
 */
#include <ctype.h>
#include <stdbool.h>

#include "fuzz-common.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_mtasts p;
	char err[200], id[64], host[300];
	char *text = fuzz_strdup(data, size);

	if (policy_mtasts_parse(text, size, &p, err, sizeof(err)) == 0) {
		FUZZ_CHECK(p.max_age >= 0 && p.max_age <= 31557600);
		FUZZ_CHECK(p.nmx <= 64);
		FUZZ_CHECK(p.nmx > 0 || p.mode == POLICY_MTASTS_NONE);
		for (size_t i = 0; i < p.nmx; i++) {
			const char *m = p.mx[i];
			if (m[0] == '*')
				snprintf(host, sizeof(host), "x%s", m + 1);
			else
				snprintf(host, sizeof(host), "%s", m);
			FUZZ_CHECK(policy_mtasts_mx_matches(&p, host));
		}
		policy_mtasts_clear(&p);
	} else {
		FUZZ_CHECK(p.mx == NULL && p.nmx == 0);
	}
	if (policy_mtasts_txt(text, id, sizeof(id)) == 0) {
		size_t n = strlen(id);
		FUZZ_CHECK(n >= 1 && n <= 32);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(isalnum((unsigned char)id[i]));
	}
	free(text);
	return 0;
}
