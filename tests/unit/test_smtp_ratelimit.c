/*
 * test_smtp_ratelimit.c - table-driven tests of the rate-limit pieces that
 * need no network: the network key of a client (net_prefix_v4/v6 masking,
 * network keys never equal address keys) and the in-process counter store
 * (INCR semantics per key, windows per key, the seconds left, a window
 * ending - the clock is passed in).
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "smtp-server-internal.h"

#define NOW 1700000000

static const struct {
	const char *addr;
	int p4, p6;
	const char *net; /* the masked address of the key */
} net_cases[] = {
    {"192.0.2.77", 24, 64, "192.0.2.0"},
    {"192.0.2.77", 16, 64, "192.0.0.0"},
    {"192.0.2.77", 32, 64, "192.0.2.77"},
    {"192.0.2.77", 25, 64, "192.0.2.0"},
    {"192.0.2.200", 25, 64, "192.0.2.128"},
    {"192.0.2.77", 8, 64, "192.0.0.0"},
    {"2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::"},
    {"2001:db8:1:2:3:4:5:6", 24, 48, "2001:db8:1::"},
    {"2001:db8:1:2:3:4:5:6", 24, 56, "2001:db8:1::"},
    {"2001:db8:1:2ff:3:4:5:6", 24, 56, "2001:db8:1:200::"},
    {"2001:db8:1:2:3:4:5:6", 24, 128, "2001:db8:1:2:3:4:5:6"},
};

/* test_net_key - masking per prefix, flag bit on the family byte. */
static void test_net_key(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(net_cases) / sizeof(net_cases[0]); i++) {
		struct config cfg;
		struct util_addr a;
		uint8_t key[17], ipkey[17];
		char out[INET6_ADDRSTRLEN];
		memset(&cfg, 0, sizeof(cfg));
		cfg.rl_net_prefix4 = net_cases[i].p4;
		cfg.rl_net_prefix6 = net_cases[i].p6;
		assert_int_equal(util_addr_parse_numeric(net_cases[i].addr, 25, &a), 0);
		smtp_rl_net_key(&cfg, &a, key);
		smtp_server_ip_key(&a, ipkey);
		assert_true(key[0] & 0x80);
		assert_int_equal(key[0] & 0x7f, ipkey[0]);
		assert_true(memcmp(key, ipkey, 17) != 0); /* never an address key */
		inet_ntop((key[0] & 0x7f) == 4 ? AF_INET : AF_INET6, key + 1, out, sizeof(out));
		if (strcmp(out, net_cases[i].net) != 0)
			fail_msg("case %zu %s /%d /%d: %s, expected %s", i, net_cases[i].addr,
			         net_cases[i].p4, net_cases[i].p6, out, net_cases[i].net);
	}
}

static const struct {
	const char *key;
	int64_t window;
	int64_t by;    /* added; 0 only reads */
	int64_t count; /* expected count after this hit */
} hit_steps[] = {
    {"a", 60, 1, 1}, {"a", 60, 1, 2},   {"b", 60, 1, 1},
    {"a", 60, 1, 3}, {"A", 60, 1, 1}, /* keys are exact: callers fold case */
    {"b", 60, 1, 2}, {"c", 3600, 1, 1}, {"c", 3600, 1, 2},
    /* by 0 reads (messages_per_sender at RCPT): no change, nothing created */
    {"a", 60, 0, 3}, {"a", 60, 0, 3},   {"z", 60, 0, 0},
    {"z", 60, 1, 1}, {"a", 60, 2, 5},
};

/* test_memory_store - counts per key within the window. */
static void test_memory_store(void **state)
{
	(void)state;
	struct smtp_rl_store *st = smtp_rl_memory_new(1000);
	assert_string_equal(st->ops->name, "memory");
	for (size_t i = 0; i < sizeof(hit_steps) / sizeof(hit_steps[0]); i++) {
		int64_t left = -1;
		int64_t n = st->ops->hit(st, hit_steps[i].key, hit_steps[i].window, hit_steps[i].by,
		                         NOW, &left);
		if (n != hit_steps[i].count)
			fail_msg("step %zu key %s: count %lld, expected %lld", i, hit_steps[i].key,
			         (long long)n, (long long)hit_steps[i].count);
		if (n == 0)
			assert_int_equal(left, 0); /* no window yet */
		else
			assert_true(left > 0 && left <= hit_steps[i].window);
	}
	smtp_rl_store_free(st);
	smtp_rl_store_free(NULL);
}

static const struct {
	size_t cap;  /* [ratelimit] max_keys */
	int cold;    /* one-off keys (other networks, forged senders) */
	int every;   /* the attacker's key is hit after every `every` cold ones */
	int64_t max; /* its limit */
} full_cases[] = {
    {1000, 20000, 10, 5}, {1000, 5000, 1, 100}, {5000, 50000, 100, 3},
};

/* test_full_store_keeps_limits - a store full of live keys still counts:
 * the hot key's count goes on rising past its limit (the old store answered
 * -1, "let through", for every new key once full). */
static void test_full_store_keeps_limits(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(full_cases) / sizeof(full_cases[0]); c++) {
		struct smtp_rl_store *st = smtp_rl_memory_new(full_cases[c].cap);
		int64_t hits = 0, left;
		for (int i = 0; i < full_cases[c].cold; i++) {
			char key[64];
			snprintf(key, sizeof(key), "connections_per_net [2001:db8:%x::]/64", i);
			if (st->ops->hit(st, key, 3600, 1, NOW, &left) != 1)
				fail_msg("case %zu: cold key %d not counted", c, i);
			if (i % full_cases[c].every == 0) {
				int64_t n =
				    st->ops->hit(st, "connections_per_ip [192.0.2.1]", 3600, 1, NOW, &left);
				hits++;
				if (n != hits)
					fail_msg("case %zu: hot key counted %lld after %lld hits", c,
					         (long long)n, (long long)hits);
			}
		}
		assert_true(hits > full_cases[c].max); /* over its limit: refused every time */
		smtp_rl_store_free(st);
	}
	/* the default size, filled: a key never seen is counted, not let through */
	struct smtp_rl_store *st = smtp_rl_memory_new(500000);
	int64_t left;
	for (int i = 0; i < 500000; i++) {
		char key[64];
		snprintf(key, sizeof(key), "messages_per_sender <%d@x.example>", i);
		st->ops->hit(st, key, 3600, 1, NOW, &left);
	}
	for (int64_t want = 1; want <= 3; want++)
		assert_int_equal(
		    st->ops->hit(st, "messages_per_sender <new@x.example>", 3600, 1, NOW, &left), want);
	smtp_rl_store_free(st);
}

static const struct {
	const char *key;
	int64_t at;    /* seconds after NOW */
	int64_t count; /* expected count after this hit */
	int64_t left;  /* expected seconds left in the window */
} window_steps[] = {
    /* window 60: a window starts at a key's first hit, not on a boundary */
    {"a", 0, 1, 60},
    {"a", 30, 2, 30},
    {"a", 59, 3, 1},
    {"a", 60, 1, 60},   /* the window ended: counting starts again */
    {"a", 61, 2, 59},
    {"b", 50, 1, 60},   /* its own window */
    {"b", 109, 2, 1},
    {"b", 110, 1, 60},
    {"a", 500, 1, 60},  /* long after: a fresh window */
};

/* test_window_ends - the count starts again when the key's window is
 * over; the seconds left count down to it (the "try again in N seconds"). */
static void test_window_ends(void **state)
{
	(void)state;
	struct smtp_rl_store *st = smtp_rl_memory_new(1000);
	for (size_t i = 0; i < sizeof(window_steps) / sizeof(window_steps[0]); i++) {
		int64_t left = -1;
		int64_t n = st->ops->hit(st, window_steps[i].key, 60, 1, NOW + window_steps[i].at, &left);
		if (n != window_steps[i].count || left != window_steps[i].left)
			fail_msg("step %zu key %s at +%lld: count %lld left %lld, expected %lld and "
			         "%lld",
			         i, window_steps[i].key, (long long)window_steps[i].at, (long long)n,
			         (long long)left, (long long)window_steps[i].count,
			         (long long)window_steps[i].left);
	}
	smtp_rl_store_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_net_key),
	    cmocka_unit_test(test_memory_store),
	    cmocka_unit_test(test_window_ends),
	    cmocka_unit_test(test_full_store_keeps_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
