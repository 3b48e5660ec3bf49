/*
 * test_config_dnsbl.c - table-driven tests of the [dnsbl] sites syntax
 * (config_dnsbl_parse) and of what counts as a listing
 * (config_dnsbl_match, config_dnsbl_is_listing): filters, weights, the
 * 127.255.255.0/24 "query refused" codes, bad input; and the [dnsbl]
 * section through config_load_string.
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <string.h>

#include "config.h"

static const struct {
	const char *spec;
	int rc;
	const char *zone; /* parsed zone */
	int weight;
	const char *errpart; /* substring of err on failure */
} parse_cases[] = {
    {"zen.spamhaus.org", 0, "zen.spamhaus.org", 1, NULL},
    {"Zen.Spamhaus.ORG=127.0.0.[2..11]*3", 0, "zen.spamhaus.org", 3, NULL},
    {"list.dnswl.org=127.0.[0..255].[1;2;3]*-5", 0, "list.dnswl.org", -5, NULL},
    {"bl.test*2", 0, "bl.test", 2, NULL},
    {"bl.test*+2", 0, "bl.test", 2, NULL},
    {"bl.test=127.0.0.2", 0, "bl.test", 1, NULL},
    {"bl.test=127.0.0.[2;4..6;10]*1000", 0, "bl.test", 1000, NULL},
    {"", -1, NULL, 0, "zone"},
    {"=127.0.0.2", -1, NULL, 0, "zone"},
    {"bl.test*0", -1, NULL, 0, "non-zero"},
    {"bl.test*1001", -1, NULL, 0, "-1000..1000"},
    {"bl.test*-1001", -1, NULL, 0, "-1000..1000"},
    {"bl.test*x", -1, NULL, 0, "integer weight"},
    {"bl.test*3x", -1, NULL, 0, "non-zero integer"},
    {"bl.test=127.0.0", -1, NULL, 0, "four octets"},
    {"bl.test=127.0.0.256", -1, NULL, 0, "0..255"},
    {"bl.test=127.0.0.[5..2]", -1, NULL, 0, "bad range"},
    {"bl.test=127.0.0.[2", -1, NULL, 0, "';' or ']'"},
    {"bl.test=127.0.0.[]", -1, NULL, 0, "inside [...]"},
    {"bl.test=127.0.0.2.5", -1, NULL, 0, "unexpected"},
    {"bl.test=127.0.0.2*3*4", -1, NULL, 0, "non-zero integer"},
    {"bad_zone!.test", -1, NULL, 0, "zone \"bad_zone!.test\""},
};

/* test_parse - every case of parse_cases. */
static void test_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		struct config_dnsbl_site site;
		char err[200] = "";
		int rc = config_dnsbl_parse(parse_cases[i].spec, &site, err, sizeof(err));
		if (rc != parse_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d (%s)", i, parse_cases[i].spec, rc, err);
		if (rc == 0) {
			assert_string_equal(site.zone, parse_cases[i].zone);
			assert_int_equal(site.weight, parse_cases[i].weight);
		} else if (!strstr(err, parse_cases[i].errpart)) {
			fail_msg("case %zu \"%s\": err \"%s\" lacks \"%s\"", i, parse_cases[i].spec,
			         err, parse_cases[i].errpart);
		}
	}
}

static const struct {
	const char *spec;
	uint8_t a[4];
	bool match;
} match_cases[] = {
    {"bl.test", {127, 0, 0, 2}, true},
    {"bl.test", {127, 1, 2, 3}, true},
    {"bl.test", {127, 255, 255, 254}, false}, /* query refused (Spamhaus) */
    {"bl.test", {127, 255, 255, 252}, false}, /* typo in the zone name */
    {"bl.test", {127, 255, 254, 1}, true},
    {"bl.test", {10, 0, 0, 2}, false}, /* outside 127/8: not a listing */
    {"bl.test", {0, 0, 0, 0}, false},
    {"zen.test=127.0.0.[2..11]", {127, 0, 0, 2}, true},
    {"zen.test=127.0.0.[2..11]", {127, 0, 0, 11}, true},
    {"zen.test=127.0.0.[2..11]", {127, 0, 0, 12}, false},
    {"zen.test=127.0.0.[2..11]", {127, 0, 0, 1}, false},
    {"zen.test=127.0.0.[2..11]", {127, 0, 1, 2}, false},
    {"zen.test=127.0.0.[2;4]", {127, 0, 0, 3}, false},
    {"zen.test=127.0.0.[2;4]", {127, 0, 0, 4}, true},
    {"wl.test=127.0.[0..255].[1..3]*-5", {127, 0, 15, 3}, true},
    {"wl.test=127.0.[0..255].[1..3]*-5", {127, 0, 15, 0}, false},
    {"all.test=127.255.255.[0..255]", {127, 255, 255, 254}, false}, /* never, filter or not */
};

/* test_match - every case of match_cases. */
static void test_match(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		struct config_dnsbl_site site;
		char err[200];
		assert_int_equal(config_dnsbl_parse(match_cases[i].spec, &site, err, sizeof(err)),
		                 0);
		if (config_dnsbl_match(&site, match_cases[i].a) != match_cases[i].match)
			fail_msg("case %zu \"%s\" %u.%u.%u.%u: expected %s", i, match_cases[i].spec,
			         match_cases[i].a[0], match_cases[i].a[1], match_cases[i].a[2],
			         match_cases[i].a[3], match_cases[i].match ? "match" : "no match");
	}
}

#define BASE                                                                                       \
	"[server]\nhostname = mx.example.test\nlisten = 127.0.0.1:2525\n"                          \
	"[domains]\naccepted_domains = example.test\n"                                             \
	"[queue]\ndirectory = /tmp\n"                                                              \
	"[route d]\ntype = directory\ndirectory = /tmp\n"

/* test_section - [dnsbl] through the config loader: parsed sites, a bad
 * site reported at its line, the threshold warning. */
static void test_section(void **state)
{
	(void)state;
	struct config_diags d = {0};
	struct config *cfg = config_load_string(
	    BASE "[dnsbl]\nsites = zen.test=127.0.0.[2..11]*3, wl.test*-2\n"
	         "sites = bl.test\nreject_threshold = 4\ntag_threshold = 1\ndecide_at = rcpt\n",
	    "t.conf", &d);
	if (!cfg) {
		config_diags_print(&d, stderr);
		fail();
	}
	assert_int_equal(cfg->ndnsbl_sites, 3);
	assert_string_equal(cfg->dnsbl_sites[0].zone, "zen.test");
	assert_int_equal(cfg->dnsbl_sites[1].weight, -2);
	assert_string_equal(cfg->dnsbl_sites[2].zone, "bl.test");
	assert_int_equal(cfg->dnsbl_reject_threshold, 4);
	assert_int_equal(cfg->dnsbl_decide, CONFIG_DNSBL_RCPT);
	config_free(cfg);
	config_diags_free(&d);

	memset(&d, 0, sizeof(d));
	cfg = config_load_string(BASE "[dnsbl]\nsites = zen.test*0\n", "t.conf", &d);
	assert_null(cfg);
	assert_true(d.n >= 1);
	assert_int_equal(d.v[0].line, 12);
	assert_non_null(strstr(d.v[0].msg, "non-zero"));
	config_diags_free(&d);

	memset(&d, 0, sizeof(d));
	cfg = config_load_string(BASE "[dnsbl]\nsites = bl.test\nreject_threshold = 2\n"
	                              "tag_threshold = 5\n",
	                         "t.conf", &d);
	assert_non_null(cfg);
	assert_true(d.n == 1 && d.v[0].warning && strstr(d.v[0].msg, "tag_threshold"));
	config_free(cfg);
	config_diags_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_section),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
