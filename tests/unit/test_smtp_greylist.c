/*
 * test_smtp_greylist.c - the in-process greylist decision
 * (smtp_greylist_decide) with the clock passed in: a first attempt, an
 * early retry, a retry after `delay`, the first attempt forgotten after
 * `retry_window`, the network allowlisted for `allowlist_ttl` and then not,
 * and IPv6 clients greylisted by their /64 (another address of the /64
 * retries for the first).  Table-driven: each step is one single-recipient
 * message at a time after NOW.
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

#include "smtp-server-internal.h"

#define NOW   1700000000
#define DELAY 300
#define RW    3600  /* retry_window */
#define TTL   86400 /* allowlist_ttl */

/* What one step must give: a triplet result, or the network allowlisted. */
#define ALLOWLISTED "allowlisted"

static const struct {
	const char *name;
	int64_t at; /* seconds after NOW */
	const char *client, *sender, *rcpt;
	const char *want; /* "new", "early", "retried", ALLOWLISTED, or NULL: passed before */
	int64_t wait;     /* seconds to wait, 0: accepted */
} steps[] = {
    {"first attempt", 0, "192.0.2.10", "a@s.example", "x@example.test", "new", DELAY},
    {"one second early", DELAY - 1, "192.0.2.10", "a@s.example", "x@example.test", "early", 1},
    {"retry from the same /24 after delay", DELAY, "192.0.2.77", "a@s.example", "x@example.test",
     "retried", 0},
    {"network allowlisted", DELAY + 1, "192.0.2.5", "b@s.example", "y@example.test", ALLOWLISTED,
     0},
    {"allowlist's last second", DELAY + TTL - 1, "192.0.2.5", "c@s.example", "z@example.test",
     ALLOWLISTED, 0},
    {"allowlist_ttl over", DELAY + TTL, "192.0.2.5", "c@s.example", "z@example.test", "new", DELAY},
    {"the passed triplet expired with it", DELAY + TTL + 1, "192.0.2.10", "a@s.example",
     "x@example.test", "new", DELAY},

    /* retry_window: a first attempt is remembered that long */
    {"B first", 0, "198.51.100.1", "b@t.example", "w@example.test", "new", DELAY},
    {"C first (another network)", 0, "203.0.113.2", "c@u.example", "w@example.test", "new", DELAY},
    {"B retried in the window's last second", RW - 1, "198.51.100.1", "b@t.example",
     "w@example.test", "retried", 0},
    {"C retried when the window is over: new again", RW + 10, "203.0.113.2", "c@u.example",
     "w@example.test", "new", DELAY},
    {"C early again", RW + 11, "203.0.113.2", "c@u.example", "w@example.test", "early", DELAY - 1},

    /* IPv6: the client's network is its /64 */
    {"v6 first", 0, "2001:db8:1:2::5", "e@v.example", "v@example.test", "new", DELAY},
    {"v6 another address of the /64 retries", DELAY, "2001:db8:1:2:ffff:ffff:ffff:9", "e@v.example",
     "v@example.test", "retried", 0},
    {"v6 another /64 is another triplet", DELAY + 1, "2001:db8:1:3::1", "e@v.example",
     "v@example.test", "new", DELAY},
    {"v6 the /64 is allowlisted", DELAY + 2, "2001:db8:1:2::77", "f@w.example", "q@example.test",
     ALLOWLISTED, 0},
};

/* test_expiry - the steps in order, against one state. */
static void test_expiry(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.rl_net_prefix4 = 24;
	cfg.rl_net_prefix6 = 64;
	cfg.greylist_delay = DELAY;
	cfg.greylist_retry_window = RW;
	cfg.greylist_allow_ttl = TTL;
	struct smtp_greylist *g = smtp_greylist_new(1000);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct util_addr a;
		char net[80];
		struct util_strlist rcpts = {NULL, 0};
		const char *result[1];
		bool allowlisted = false;
		assert_int_equal(util_addr_parse_numeric(steps[i].client, 25, &a), 0);
		smtp_rl_net_format(&cfg, &a, net, sizeof(net));
		util_strlist_add(&rcpts, steps[i].rcpt);
		int64_t wait = smtp_greylist_decide(g, &cfg, net, steps[i].sender, &rcpts,
		                                    NOW + steps[i].at, result, &allowlisted);
		const char *got = allowlisted ? ALLOWLISTED : result[0];
		bool same =
		    got && steps[i].want ? strcmp(got, steps[i].want) == 0 : got == steps[i].want;
		if (!same || wait != steps[i].wait)
			fail_msg("step %zu (%s): %s wait %lld, expected %s wait %lld", i,
			         steps[i].name, got ? got : "passed", (long long)wait,
			         steps[i].want ? steps[i].want : "passed",
			         (long long)steps[i].wait);
		util_strlist_free(&rcpts);
	}
	smtp_greylist_free(g);
}

/* test_message_with_two_recipients - one retried and one new recipient: the
 * message waits for the new one; the retried one allowlists the network. */
static void test_message_with_two_recipients(void **state)
{
	(void)state;
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.greylist_delay = DELAY;
	cfg.greylist_retry_window = RW;
	cfg.greylist_allow_ttl = TTL;
	struct smtp_greylist *g = smtp_greylist_new(1000);
	struct util_strlist one = {NULL, 0}, two = {NULL, 0};
	const char *result[2];
	bool allowlisted;
	util_strlist_add(&one, "x@example.test");
	util_strlist_add(&two, "x@example.test");
	util_strlist_add(&two, "y@example.test");
	assert_int_equal(smtp_greylist_decide(g, &cfg, "192.0.2.0/24", "a@s.example", &one, NOW,
	                                      result, &allowlisted),
	                 DELAY);
	assert_int_equal(smtp_greylist_decide(g, &cfg, "192.0.2.0/24", "a@s.example", &two,
	                                      NOW + DELAY, result, &allowlisted),
	                 DELAY);
	assert_false(allowlisted);
	assert_string_equal(result[0], "retried");
	assert_string_equal(result[1], "new");
	assert_int_equal(smtp_greylist_decide(g, &cfg, "192.0.2.0/24", "a@s.example", &two,
	                                      NOW + DELAY + 1, result, &allowlisted),
	                 0);
	assert_true(allowlisted);
	util_strlist_free(&one);
	util_strlist_free(&two);
	smtp_greylist_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_message_with_two_recipients),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
