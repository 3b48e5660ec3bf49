/*
 * test_smtp_pregreet.c - the pregreet pass cache with the clock passed in
 * (smtp_pregreet_pass_add / smtp_pregreet_passed): a pass lasts pass_ttl
 * to the second, is per address (IPv6 too: not per /64), and a new pass
 * starts the time again.  Table-driven: each step adds a pass or asks for
 * one at a time after NOW.
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
#include <stdlib.h>
#include <string.h>

#include "smtp-server-internal.h"

#define NOW 1700000000
#define TTL 86400 /* [pregreet] pass_ttl */

static const struct {
	const char *name;
	bool add; /* add a pass, else ask */
	int64_t at;
	const char *client;
	bool want; /* asked: the pass is live */
} steps[] = {
    {"unknown", false, 0, "192.0.2.1", false},
    {"pass", true, 0, "192.0.2.1", false},
    {"live at once", false, 0, "192.0.2.1", true},
    {"live in its last second", false, TTL - 1, "192.0.2.1", true},
    {"another address of the /24", false, 10, "192.0.2.2", false},
    {"pass_ttl over", false, TTL, "192.0.2.1", false},
    {"passes again", true, TTL + 5, "192.0.2.1", false},
    {"a new day from there", false, 2 * TTL + 4, "192.0.2.1", true},
    {"and over", false, 2 * TTL + 5, "192.0.2.1", false},
    {"v6 pass", true, 0, "2001:db8::1", false},
    {"v6 live", false, TTL - 1, "2001:db8::1", true},
    {"v6 another address of the /64", false, 1, "2001:db8::2", false},
    {"v6 over", false, TTL, "2001:db8::1", false},
};

/* test_pass_ttl - the steps in order against one cache. */
static void test_pass_ttl(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.pregreet_pass_ttl = TTL;
	struct smtp_server *srv = calloc(1, sizeof(*srv));
	assert_non_null(srv);
	srv->cfg = &cfg;
	srv->passes = util_ttlmap_new("pregreet", 1000, 0);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct util_addr a;
		assert_int_equal(util_addr_parse_numeric(steps[i].client, 25, &a), 0);
		if (steps[i].add) {
			smtp_pregreet_pass_add(srv, &cfg, &a, NOW + steps[i].at);
			continue;
		}
		bool got = smtp_pregreet_passed(srv, &a, NOW + steps[i].at);
		if (got != steps[i].want)
			fail_msg("step %zu (%s): %s at +%lld is %s", i, steps[i].name,
			         steps[i].client, (long long)steps[i].at,
			         got ? "live" : "not live");
	}
	smtp_pregreet_free(srv); /* no pass_cache_file: frees the cache */
	assert_null(srv->passes);
	free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pass_ttl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
