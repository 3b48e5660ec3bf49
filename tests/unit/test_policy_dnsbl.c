/*
 * test_policy_dnsbl.c - the DNSBL answer cache ([dnsbl] cache_ttl) with the
 * clock passed in (policy_dnsbl_cache_put / policy_dnsbl_cache_get): an
 * answer - a listing or "not listed" (no address) alike - is served for
 * cache_ttl to the millisecond, then asked again; a new answer replaces the
 * old one and starts its own time.  Table-driven: each step stores an
 * answer or looks one up at a time after NOW.
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <stdio.h>
#include <string.h>

#include "policy-internal.h"

#define NOW    5000000 /* monotonic ms */
#define TTL    300000  /* cache_ttl 5m */
#define LISTED "2.0.0.127.zen.test"
#define CLEAN  "1.0.0.127.zen.test"

static const struct {
	const char *name;
	bool put;   /* store an answer, else look up */
	int64_t at; /* ms after NOW */
	const char *qname;
	int addr; /* put: last octet of 127.0.0.x, 0 = no address (not listed);
	             get: expected, -1 = not cached */
} steps[] = {
    {"nothing yet", false, 0, LISTED, -1},
    {"listing", true, 0, LISTED, 4},
    {"not listed", true, 1000, CLEAN, 0},
    {"listing served", false, 1, LISTED, 4},
    {"not listed served (no address)", false, 1000, CLEAN, 0},
    {"listing's last millisecond", false, TTL - 1, LISTED, 4},
    {"listing expired", false, TTL, LISTED, -1},
    {"not listed still served", false, TTL + 999, CLEAN, 0},
    {"not listed expired", false, TTL + 1000, CLEAN, -1},
    {"listed again, another code", true, TTL + 5, LISTED, 10},
    {"the new answer", false, TTL + 6, LISTED, 10},
    {"replaced before expiry", true, TTL + 7, LISTED, 11},
    {"the newest answer, its own time", false, 2 * TTL + 6, LISTED, 11},
    {"and expired", false, 2 * TTL + 7, LISTED, -1},
};

/* test_cache_ttl - the steps in order against one cache. */
static void test_cache_ttl(void **state)
{
	(void)state;
	struct policy_dnsbl *b = policy_dnsbl_new(NULL, NULL); /* cache only: no lookups */
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		uint8_t a[8][4];
		if (steps[i].put) {
			uint8_t v[1][4] = {{127, 0, 0, (uint8_t)steps[i].addr}};
			policy_dnsbl_cache_put(b, steps[i].qname, (const uint8_t(*)[4])v,
			                       steps[i].addr ? 1 : 0, TTL, NOW + steps[i].at);
			continue;
		}
		int n = policy_dnsbl_cache_get(b, steps[i].qname, NOW + steps[i].at, a, 8);
		int got = n < 0 ? -1 : n == 0 ? 0 : a[0][3];
		if (got != steps[i].addr || (n > 0 && (a[0][0] != 127 || n != 1)))
			fail_msg("step %zu (%s): %s at +%lld ms gives %d (n=%d), expected %d", i,
			         steps[i].name, steps[i].qname, (long long)steps[i].at, got, n,
			         steps[i].addr);
	}
	policy_dnsbl_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cache_ttl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
