/*
 * test_cidr.c - table-driven tests of util_cidr_*: parsing (IPv4, IPv6,
 * bare addresses, IPv4-mapped entries, bad input, host bits), matching
 * (including IPv4-mapped IPv6 clients) and lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "util.h"

static const struct {
	const char *in;
	int rc;
	const char *fmt;     /* util_cidr_format of the result */
	const char *errpart; /* substring of err on failure */
} parse_cases[] = {
	{"192.0.2.0/24", 0, "192.0.2.0/24", NULL},
	{"192.0.2.1", 0, "192.0.2.1/32", NULL},
	{"0.0.0.0/0", 0, "0.0.0.0/0", NULL},
	{"10.0.0.0/8", 0, "10.0.0.0/8", NULL},
	{"192.0.2.128/25", 0, "192.0.2.128/25", NULL},
	{"192.0.2.1/32", 0, "192.0.2.1/32", NULL},
	{"2001:db8::/32", 0, "2001:db8::/32", NULL},
	{"2001:DB8::/32", 0, "2001:db8::/32", NULL},
	{"::1", 0, "::1/128", NULL},
	{"::/0", 0, "::/0", NULL},
	{"2001:db8::8000/113", 0, "2001:db8::8000/113", NULL},
	{"::ffff:192.0.2.0/120", 0, "192.0.2.0/24", NULL},
	{"::ffff:192.0.2.9", 0, "192.0.2.9/32", NULL},
	{"::ffff:0:0/96", 0, "0.0.0.0/0", NULL},
	/* host bits */
	{"192.0.2.1/24", -1, NULL, "did you mean 192.0.2.0/24?"},
	{"10.1.0.0/8", -1, NULL, "did you mean 10.0.0.0/8?"},
	{"2001:db8::1/64", -1, NULL, "did you mean 2001:db8::/64?"},
	{"192.0.2.129/25", -1, NULL, "did you mean 192.0.2.128/25?"},
	/* bad input */
	{"", -1, NULL, "empty"},
	{"192.0.2.0/33", -1, NULL, "over 32"},
	{"2001:db8::/129", -1, NULL, "over 128"},
	{"192.0.2.0/", -1, NULL, "prefix"},
	{"192.0.2.0/-1", -1, NULL, "prefix"},
	{"192.0.2.0/+8", -1, NULL, "prefix"},
	{"192.0.2.0/24x", -1, NULL, "prefix"},
	{"192.0.2.0/0024", -1, NULL, "prefix"},
	{"192.0.2.0/24/8", -1, NULL, "prefix"},
	{"/24", -1, NULL, "address"},
	{"192.0.2/24", -1, NULL, "address"},
	{"192.0.2.256", -1, NULL, "address"},
	{"example.test", -1, NULL, "address"},
	{" 192.0.2.0/24", -1, NULL, "address"},
	{"192.0.2.0 /24", -1, NULL, "address"},
	{"192.0.2.0/ 24", -1, NULL, "prefix"},
	{"2001:db8:::/32", -1, NULL, "address"},
	{"2001:db8::1%eth0", -1, NULL, "address"},
	{"1111:2222:3333:4444:5555:6666:7777:8888:9999/64", -1, NULL, "address"},
};

static void test_cidr_parse(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		struct util_cidr c;
		char err[160] = "";
		char out[64];
		int rc = util_cidr_parse(parse_cases[i].in, &c, err, sizeof(err));

		if (rc != parse_cases[i].rc)
			fail_msg("case \"%s\": rc %d err \"%s\"", parse_cases[i].in, rc, err);
		if (rc == 0) {
			util_cidr_format(&c, out, sizeof(out));
			assert_string_equal(out, parse_cases[i].fmt);
		} else if (strstr(err, parse_cases[i].errpart) == NULL) {
			fail_msg("case \"%s\": err \"%s\" lacks \"%s\"", parse_cases[i].in, err,
				 parse_cases[i].errpart);
		}
	}
	assert_int_equal(util_cidr_parse(NULL, &(struct util_cidr){0}, NULL, 0), -1);
	assert_int_equal(util_cidr_parse("1.2.3.4/33", &(struct util_cidr){0}, NULL, 0), -1);
}

/* addr - a util_addr from a numeric string (AF_INET6 kept as given). */
static struct util_addr addr(const char *s)
{
	struct util_addr a;

	assert_int_equal(util_addr_parse_numeric(s, 25, &a), 0);
	return a;
}

static const struct {
	const char *cidr;
	const char *addr;
	bool match;
} match_cases[] = {
	{"192.0.2.0/24", "192.0.2.0", true},
	{"192.0.2.0/24", "192.0.2.255", true},
	{"192.0.2.0/24", "192.0.3.0", false},
	{"192.0.2.0/24", "192.0.1.255", false},
	{"192.0.2.128/25", "192.0.2.127", false},
	{"192.0.2.128/25", "192.0.2.128", true},
	{"192.0.2.7", "192.0.2.7", true},
	{"192.0.2.7", "192.0.2.6", false},
	{"0.0.0.0/0", "203.0.113.9", true},
	{"0.0.0.0/0", "2001:db8::1", false},
	{"192.0.2.0/24", "::ffff:192.0.2.9", true},  /* mapped client, IPv4 entry */
	{"192.0.2.0/24", "::ffff:192.0.3.9", false},
	{"192.0.2.0/24", "::192.0.2.9", false},      /* compatible, not mapped */
	{"192.0.2.0/24", "64:ff9b::192.0.2.9", false},
	{"::ffff:192.0.2.0/120", "192.0.2.3", true}, /* mapped entry, IPv4 client */
	{"::ffff:192.0.2.0/120", "::ffff:192.0.2.3", true},
	{"::/0", "192.0.2.1", false},
	{"::/0", "::1", true},
	{"2001:db8::/32", "2001:db8:ffff::1", true},
	{"2001:db8::/32", "2001:db9::1", false},
	{"2001:db8::8000/113", "2001:db8::ffff", true},
	{"2001:db8::8000/113", "2001:db8::7fff", false},
	{"::1", "::1", true},
	{"::1", "127.0.0.1", false},
	{"127.0.0.0/8", "::1", false},
};

static void test_cidr_match(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		struct util_cidr c;
		struct util_addr a = addr(match_cases[i].addr);

		assert_int_equal(util_cidr_parse(match_cases[i].cidr, &c, NULL, 0), 0);
		if (util_cidr_match(&c, &a) != match_cases[i].match)
			fail_msg("%s in %s: expected %d", match_cases[i].addr, match_cases[i].cidr,
				 match_cases[i].match);
	}
}

static void test_cidr_mapped_sockaddr(void **state)
{
	struct sockaddr_in6 s6;
	struct util_addr a;
	struct util_cidr c;

	/* What a dual-stack listener hands us for an IPv4 client. */
	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:198.51.100.20", &s6.sin6_addr);
	util_addr_from_sockaddr(&a, (struct sockaddr *)&s6, sizeof(s6));
	assert_int_equal(util_cidr_parse("198.51.100.0/24", &c, NULL, 0), 0);
	assert_true(util_cidr_match(&c, &a));
}

static void test_cidr_list(void **state)
{
	static const char *const entries[] = {"10.0.0.0/8", "2001:db8::/48", "192.0.2.1"};
	struct util_cidr_list l = {0};
	struct util_addr a;
	size_t i;

	a = addr("10.9.9.9");
	assert_false(util_cidr_list_match(&l, &a)); /* empty list matches nothing */
	for (i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		struct util_cidr c;

		assert_int_equal(util_cidr_parse(entries[i], &c, NULL, 0), 0);
		util_cidr_list_add(&l, &c);
	}
	assert_int_equal(l.n, 3);
	assert_true(util_cidr_list_match(&l, &a));
	a = addr("2001:db8:0:1::5");
	assert_true(util_cidr_list_match(&l, &a));
	a = addr("2001:db8:1::5");
	assert_false(util_cidr_list_match(&l, &a));
	a = addr("192.0.2.1");
	assert_true(util_cidr_list_match(&l, &a));
	a = addr("192.0.2.2");
	assert_false(util_cidr_list_match(&l, &a));
	util_cidr_list_free(&l);
	assert_int_equal(l.n, 0);
	assert_null(l.v);
	util_cidr_list_free(&l);
	util_cidr_list_free(NULL);
}

static void test_cidr_format_small(void **state)
{
	struct util_cidr c;
	char out[8];

	assert_int_equal(util_cidr_parse("192.0.2.0/24", &c, NULL, 0), 0);
	util_cidr_format(&c, out, sizeof(out));
	assert_string_equal(out, "192.0.2"); /* truncated, still terminated */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_cidr_match),
		cmocka_unit_test(test_cidr_mapped_sockaddr),
		cmocka_unit_test(test_cidr_list),
		cmocka_unit_test(test_cidr_format_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
