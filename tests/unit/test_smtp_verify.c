/*
 * test_smtp_verify.c - the recipient-verification cache (smtp-verify-cache.c):
 * the file format as read back (table: file image -> answers), expiry,
 * case folding, eviction of the oldest answer, and the write-through to the
 * file by the writer thread (what a restart reads).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp-verify-internal.h"
#include "util.h"

#define NOW 1700000000

/* test_load - file images and the answers they give. */
static void test_load(void **state)
{
	static const struct {
		const char *name;
		const char *text;
		size_t taken;
		const char *addr;
		enum smtp_verify_result want;
	} tc[] = {
	    {"positive", "mxgate-verify 1\nP 1800000000 a@example.test\n", 1, "a@example.test",
	     SMTP_VERIFY_OK},
	    {"negative", "mxgate-verify 1\nN 1800000000 a@example.test\n", 1, "A@Example.TEST",
	     SMTP_VERIFY_UNKNOWN},
	    {"expired", "mxgate-verify 1\nP 1600000000 a@example.test\n", 0, "a@example.test",
	     SMTP_VERIFY_PENDING},
	    {"later line wins", "mxgate-verify 1\nP 1800000000 a@x.test\nN 1800000001 a@x.test\n",
	     2, "a@x.test", SMTP_VERIFY_UNKNOWN},
	    {"later expired line wins",
	     "mxgate-verify 1\nP 1800000000 a@x.test\nN 1600000000 a@x.test\n", 1, "a@x.test",
	     SMTP_VERIFY_PENDING},
	    {"no magic", "P 1800000000 a@x.test\n", 0, "a@x.test", SMTP_VERIFY_PENDING},
	    {"other version", "mxgate-verify 2\nP 1800000000 a@x.test\n", 0, "a@x.test",
	     SMTP_VERIFY_PENDING},
	    {"torn last line", "mxgate-verify 1\nP 1800000000 a@x.test", 0, "a@x.test",
	     SMTP_VERIFY_PENDING},
	    {"garbage skipped",
	     "mxgate-verify 1\nhello\nX 1800000000 b@x.test\nP abc b@x.test\nP 1800000000 "
	     "b@x.test\n",
	     1, "b@x.test", SMTP_VERIFY_OK},
	    {"upper case in file refused", "mxgate-verify 1\nP 1800000000 B@x.test\n", 0,
	     "b@x.test", SMTP_VERIFY_PENDING},
	    {"no at sign", "mxgate-verify 1\nP 1800000000 postmaster\n", 0, "postmaster",
	     SMTP_VERIFY_PENDING},
	    {"trailing junk", "mxgate-verify 1\nP 1800000000 a@x.test extra\n", 0, "a@x.test",
	     SMTP_VERIFY_PENDING},
	    {"two spaces", "mxgate-verify 1\nP  1800000000 a@x.test\n", 0, "a@x.test",
	     SMTP_VERIFY_PENDING},
	    {"NUL inside", "mxgate-verify 1\nP 1800000000 a@x.test\0\n", 0, "a@x.test",
	     SMTP_VERIFY_PENDING},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(tc) / sizeof(tc[0]); i++) {
		struct smtp_verify_cache *c = smtp_verify_cache_new(NULL, 100, NOW);
		size_t len = strlen(tc[i].text);

		if (strcmp(tc[i].name, "NUL inside") == 0)
			len = sizeof("mxgate-verify 1\nP 1800000000 a@x.test\0\n") - 1;
		size_t taken = smtp_verify_cache_load(c, tc[i].text, len, NOW);
		enum smtp_verify_result got = smtp_verify_cache_get(c, tc[i].addr, NOW);

		if (taken != tc[i].taken || got != tc[i].want)
			fail_msg("%s: taken %zu (want %zu), answer %s (want %s)", tc[i].name, taken,
			         tc[i].taken, smtp_verify_result_str(got),
			         smtp_verify_result_str(tc[i].want));
		smtp_verify_cache_free(c);
	}
}

/* test_expiry_and_eviction - answers end at their time; a full cache
 * drops its oldest answer, and re-putting one makes it the newest. */
static void test_expiry_and_eviction(void **state)
{
	struct smtp_verify_cache *c = smtp_verify_cache_new(NULL, 3, NOW);

	(void)state;
	smtp_verify_cache_put(c, "a@x.test", true, NOW + 10);
	assert_int_equal(smtp_verify_cache_get(c, "A@X.test", NOW + 9), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_get(c, "a@x.test", NOW + 10), SMTP_VERIFY_PENDING);
	assert_int_equal(smtp_verify_cache_count(c), 0);
	smtp_verify_cache_put(c, "a@x.test", true, NOW + 100);
	smtp_verify_cache_put(c, "b@x.test", false, NOW + 100);
	smtp_verify_cache_put(c, "c@x.test", true, NOW + 100);
	smtp_verify_cache_put(c, "a@x.test", true, NOW + 100); /* a is the newest now */
	smtp_verify_cache_put(c, "d@x.test", true, NOW + 100); /* evicts b */
	assert_int_equal(smtp_verify_cache_count(c), 3);
	assert_int_equal(smtp_verify_cache_get(c, "b@x.test", NOW), SMTP_VERIFY_PENDING);
	assert_int_equal(smtp_verify_cache_get(c, "a@x.test", NOW), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_get(c, "c@x.test", NOW), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_get(c, "d@x.test", NOW), SMTP_VERIFY_OK);
	smtp_verify_cache_set_max(c, 1);
	assert_int_equal(smtp_verify_cache_count(c), 1);
	assert_int_equal(smtp_verify_cache_get(c, "d@x.test", NOW), SMTP_VERIFY_OK);
	/* addresses that cannot be keys are never stored */
	smtp_verify_cache_put(c, "has space@x.test", true, NOW + 100);
	smtp_verify_cache_put(c, "", true, NOW + 100);
	assert_int_equal(smtp_verify_cache_count(c), 1);
	smtp_verify_cache_free(c);
}

/* test_file_round_trip - what the writer thread wrote is what the next
 * start reads; many updates of few addresses make the file be rewritten
 * (it stays small) without losing the newest answers. */
static void test_file_round_trip(void **state)
{
	char dir[] = "/tmp/mxg-verify-XXXXXX";
	char path[64];
	struct smtp_verify_cache *c;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/verify.cache", dir);
	c = smtp_verify_cache_new(path, 100, NOW);
	smtp_verify_cache_put(c, "Alice@X.test", true, NOW + 1000);
	smtp_verify_cache_put(c, "ghost@x.test", false, NOW + 1000);
	for (int i = 0; i < 3000; i++)
		smtp_verify_cache_put(c, i % 2 ? "flip@x.test" : "flop@x.test", i % 3 != 0,
		                      NOW + 1000 + i);
	smtp_verify_cache_free(c); /* joins the writer after the last write */

	size_t len = 0;
	char *text = util_read_file(path, 1 << 20, &len);
	assert_non_null(text);
	assert_true(strncmp(text, "mxgate-verify 1\n", 16) == 0);
	size_t lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	assert_true(lines < 2100); /* rewritten at least once, not 3003 lines */
	free(text);

	c = smtp_verify_cache_new(path, 100, NOW + 1);
	assert_int_equal(smtp_verify_cache_get(c, "alice@x.test", NOW + 1), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_get(c, "ghost@x.test", NOW + 1), SMTP_VERIFY_UNKNOWN);
	/* i = 2999 (flip, 2999 % 3 != 0 -> ok), i = 2998 (flop, ok) */
	assert_int_equal(smtp_verify_cache_get(c, "flip@x.test", NOW + 1), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_get(c, "flop@x.test", NOW + 1), SMTP_VERIFY_OK);
	assert_int_equal(smtp_verify_cache_count(c), 4);
	smtp_verify_cache_free(c);
	/* a restart long after: everything expired */
	c = smtp_verify_cache_new(path, 100, NOW + 1000000);
	assert_int_equal(smtp_verify_cache_count(c), 0);
	smtp_verify_cache_free(c);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_load),
	    cmocka_unit_test(test_expiry_and_eviction),
	    cmocka_unit_test(test_file_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
