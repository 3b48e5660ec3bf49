/*
 * test_util_ttlmap.c - table-driven tests of the bounded TTL map
 * (util/util-ttlmap.c) behind the in-process rate limits, greylisting and
 * the pregreet pass cache: a full map evicts instead of refusing, a key in
 * use survives thousands of cold keys churning through, expired entries go
 * first (not counted as evictions), and the size never passes capacity.
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

#include "util.h"

static const struct {
	size_t cap;
	int cold;  /* distinct cold keys inserted, one use each */
	int every; /* the hot key is used after every `every` cold keys */
} churn_cases[] = {
    {16, 2000, 1}, {64, 5000, 4}, {100, 10000, 8}, {1000, 20000, 50}, {1000, 3000, 200},
};

/* test_hot_key_survives_churn - counts of the hot key never restart. */
static void test_hot_key_survives_churn(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(churn_cases) / sizeof(churn_cases[0]); c++) {
		struct util_ttlmap *m =
		    util_ttlmap_new("test", churn_cases[c].cap, sizeof(int64_t));
		int64_t now = 1000, hot_hits = 0;
		for (int i = 0; i < churn_cases[c].cold; i++) {
			char key[32];
			bool fresh;
			snprintf(key, sizeof(key), "cold %d", i);
			int64_t *v = util_ttlmap_put(m, key, strlen(key), now, &fresh);
			assert_true(fresh);
			*util_ttlmap_expires(v) = now + 3600;
			(*v)++;
			if (i % churn_cases[c].every == 0) {
				int64_t *h = util_ttlmap_put(m, "hot", 3, now, &fresh);
				if (hot_hits == 0)
					*util_ttlmap_expires(h) = now + 3600;
				else if (fresh)
					fail_msg("case %zu: hot key evicted after %lld hits (cold "
					         "key %d)",
					         c, (long long)hot_hits, i);
				(*h)++;
				hot_hits++;
				assert_int_equal(*h, hot_hits);
			}
			assert_true(util_ttlmap_count(m) <= churn_cases[c].cap);
		}
		assert_int_equal(util_ttlmap_count(m), churn_cases[c].cap);
		/* every cold insert past capacity evicted one live entry */
		assert_int_equal(util_ttlmap_evictions(m),
		                 (uint64_t)(churn_cases[c].cold + 1 - (int)churn_cases[c].cap));
		util_ttlmap_free(m);
	}
	util_ttlmap_free(NULL);
}

/* test_expired_go_first - a full map of expired entries makes room mostly
 * from them: a live entry goes only when all the samples were live (about
 * 100/9 of 100 here, against 100 without the preference); get() of an
 * expired key is NULL. */
static void test_expired_go_first(void **state)
{
	(void)state;
	struct util_ttlmap *m = util_ttlmap_new("test", 100, 16);
	for (int i = 0; i < 100; i++) {
		char key[16];
		snprintf(key, sizeof(key), "a%d", i);
		void *v = util_ttlmap_put(m, key, strlen(key), 10, NULL);
		*util_ttlmap_expires(v) = 20;
	}
	assert_non_null(util_ttlmap_get(m, "a5", 2, 19));
	assert_null(util_ttlmap_get(m, "a5", 2, 20)); /* expired: gone */
	for (int i = 0; i < 100; i++) {
		char key[16];
		bool fresh;
		snprintf(key, sizeof(key), "b%d", i);
		void *v = util_ttlmap_put(m, key, strlen(key), 30, &fresh);
		assert_true(fresh);
		*util_ttlmap_expires(v) = 40;
	}
	assert_int_equal(util_ttlmap_count(m), 100);
	assert_true(util_ttlmap_evictions(m) <= 25);
	/* an expired key put again starts over, zeroed */
	bool fresh = false;
	unsigned char *v = util_ttlmap_put(m, "b99", 3, 30, &fresh); /* the newest: still there */
	assert_false(fresh);
	v[0] = 7;
	v = util_ttlmap_put(m, "b99", 3, 41, &fresh);
	assert_true(fresh);
	assert_int_equal(v[0], 0);
	util_ttlmap_free(m);
}

/* count_one - util_ttlmap_foreach: count and check the keys are binary-safe. */
static void count_one(void *arg, const void *key, size_t klen, void *value, int64_t expires)
{
	(void)value;
	(void)expires;
	size_t *n = arg;
	assert_int_equal(klen, 17);
	assert_int_equal(((const unsigned char *)key)[1], 0);
	(*n)++;
}

/* test_binary_keys - keys with NUL bytes (17-byte address keys). */
static void test_binary_keys(void **state)
{
	(void)state;
	struct util_ttlmap *m = util_ttlmap_new("test", 1000, 0);
	for (int i = 0; i < 300; i++) {
		unsigned char key[17] = {6, 0};
		key[16] = (unsigned char)i;
		key[15] = (unsigned char)(i >> 8);
		void *v = util_ttlmap_put(m, key, sizeof(key), 1, NULL);
		*util_ttlmap_expires(v) = 100;
	}
	unsigned char probe[17] = {6, 0};
	probe[16] = 44;
	assert_non_null(util_ttlmap_get(m, probe, sizeof(probe), 2));
	probe[0] = 4;
	assert_null(util_ttlmap_get(m, probe, sizeof(probe), 2));
	size_t n = 0;
	util_ttlmap_foreach(m, count_one, &n);
	assert_int_equal(n, 300);
	util_ttlmap_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hot_key_survives_churn),
	    cmocka_unit_test(test_expired_go_first),
	    cmocka_unit_test(test_binary_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
