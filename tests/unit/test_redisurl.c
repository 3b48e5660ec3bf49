/*
 * test_redisurl.c - table-driven tests of util_redis_url_parse, the
 * [state] redis address: TCP with defaults, [IPv6] literals, databases,
 * unix sockets, and every malformed form check-config must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "util.h"

static const struct {
	const char *in;
	int rc;
	const char *host, *path;
	int port, db;
	const char *errpart; /* substring of err on failure */
} cases[] = {
	{"redis://127.0.0.1", 0, "127.0.0.1", "", 6379, 0, NULL},
	{"redis://127.0.0.1/", 0, "127.0.0.1", "", 6379, 0, NULL},
	{"redis://127.0.0.1:6380/3", 0, "127.0.0.1", "", 6380, 3, NULL},
	{"redis://redis.internal.example:7000", 0, "redis.internal.example", "", 7000, 0, NULL},
	{"redis://[::1]:6390/15", 0, "::1", "", 6390, 15, NULL},
	{"redis://[::1]", 0, "::1", "", 6379, 0, NULL},
	{"unix:/run/redis/redis.sock", 0, "", "/run/redis/redis.sock", 6379, 0, NULL},
	{"unix:///run/redis/redis.sock?db=2", 0, "", "/run/redis/redis.sock", 6379, 2, NULL},
	{"http://127.0.0.1:6379", -1, NULL, NULL, 0, 0, "must be redis://"},
	{"redis://", -1, NULL, NULL, 0, 0, "host"},
	{"redis://:pw@127.0.0.1", -1, NULL, NULL, 0, 0, "[state] password"},
	{"redis://127.0.0.1:0", -1, NULL, NULL, 0, 0, "port must be 1-65535"},
	{"redis://127.0.0.1:65536", -1, NULL, NULL, 0, 0, "port must be 1-65535"},
	{"redis://127.0.0.1:port", -1, NULL, NULL, 0, 0, "port must be 1-65535"},
	{"redis://127.0.0.1/x", -1, NULL, NULL, 0, 0, "database must be"},
	{"redis://127.0.0.1/99999", -1, NULL, NULL, 0, 0, "database must be"},
	{"redis://[::1", -1, NULL, NULL, 0, 0, "unterminated"},
	{"redis://bad host", -1, NULL, NULL, 0, 0, "bad character"},
	{"unix:", -1, NULL, NULL, 0, 0, "absolute socket path"},
	{"unix:relative.sock", -1, NULL, NULL, 0, 0, "absolute socket path"},
	{"unix:/run/r.sock?db=", -1, NULL, NULL, 0, 0, "?db=N"},
	{"unix:/run/r.sock?timeout=1", -1, NULL, NULL, 0, 0, "?db=N"},
};

static void test_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct util_redis_url u;
		char err[200] = "";
		int rc = util_redis_url_parse(cases[i].in, &u, err, sizeof(err));
		if (rc != cases[i].rc)
			fail_msg("%s: rc %d, want %d (%s)", cases[i].in, rc, cases[i].rc, err);
		if (rc < 0) {
			if (!strstr(err, cases[i].errpart))
				fail_msg("%s: err \"%s\" lacks \"%s\"", cases[i].in, err, cases[i].errpart);
			continue;
		}
		assert_string_equal(u.host, cases[i].host);
		assert_string_equal(u.path, cases[i].path);
		assert_int_equal(u.port, cases[i].port);
		assert_int_equal(u.db, cases[i].db);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
