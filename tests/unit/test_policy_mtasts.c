/*
 * test_policy_mtasts.c - table-driven tests of the MTA-STS (RFC 8461) pure
 * parts: policy files (3.2), _mta-sts TXT records (3.1) and MX pattern
 * matching (4.1).
 *
 * Ownership: each parsed policy is cleared by the case that made it.
 * Diagnostics: a failing case prints its name and the parser's message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"

struct policy_case {
	const char *name;
	const char *text;
	int rc;              /* 0 accepted, -1 refused */
	const char *err_sub; /* refused: substring of the message */
	enum policy_mtasts_mode mode;
	int64_t max_age;
	size_t nmx;
};

static const struct policy_case policy_cases[] = {
    {"enforce", "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\n"
                "max_age: 604800\n", 0, NULL, POLICY_MTASTS_ENFORCE, 604800, 2},
    {"crlf and blanks", "version: STSv1\r\nmode:testing \r\n mx : a.example\r\nmax_age: 1\r\n",
     0, NULL, POLICY_MTASTS_TESTING, 1, 1},
    {"none without mx", "version: STSv1\nmode: none\nmax_age: 0\n", 0, NULL, POLICY_MTASTS_NONE,
     0, 0},
    {"unknown key ignored", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\n"
                            "future: thing\n", 0, NULL, POLICY_MTASTS_ENFORCE, 5, 1},
    {"max_age capped", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999\n", 0,
     NULL, POLICY_MTASTS_ENFORCE, 31557600, 1},
    {"bad version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 5\n", -1,
     "line 1: unsupported version", 0, 0, 0},
    {"bad mode", "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 5\n", -1,
     "line 2: bad mode \"strict\"", 0, 0, 0},
    {"no mx", "version: STSv1\nmode: enforce\nmax_age: 5\n", -1, "no mx pattern", 0, 0, 0},
    {"no max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", -1, "missing max_age", 0, 0, 0},
    {"negative max_age", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", -1,
     "line 4: bad max_age", 0, 0, 0},
    {"bad pattern", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 5\n", -1,
     "line 3: bad mx pattern", 0, 0, 0},
    {"no colon", "version: STSv1\nmode enforce\n", -1, "line 2: no ':'", 0, 0, 0},
    {"empty", "", -1, "missing version", 0, 0, 0},
};

static void test_policy_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]); i++) {
		const struct policy_case *tc = &policy_cases[i];
		struct policy_mtasts p;
		char err[200] = "";
		int rc = policy_mtasts_parse(tc->text, strlen(tc->text), &p, err, sizeof(err));
		if (rc != tc->rc || (rc == -1 && strstr(err, tc->err_sub) == NULL))
			fail_msg("case %s: rc %d err \"%s\"", tc->name, rc, err);
		if (rc == 0) {
			assert_int_equal(p.mode, tc->mode);
			assert_int_equal(p.max_age, tc->max_age);
			assert_int_equal(p.nmx, tc->nmx);
		} else {
			assert_null(p.mx);
		}
		policy_mtasts_clear(&p);
	}
}

static void test_policy_too_long(void **state)
{
	static char big[POLICY_MTASTS_MAX + 2];
	struct policy_mtasts p;
	char err[200];
	(void)state;
	memset(big, '\n', sizeof(big) - 1);
	assert_int_equal(policy_mtasts_parse(big, sizeof(big) - 1, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "longer than"));
}

struct match_case {
	const char *host;
	bool match;
};

static void test_mx_matches(void **state)
{
	static const struct match_case cases[] = {
	    {"mx1.example.com", true},   {"MX1.Example.COM.", true}, {"mx2.example.com", false},
	    {"a.example.net", true},     {"b.a.example.net", false}, {"example.net", false},
	    {".example.net", false},     {"xexample.net", false},
	};
	struct policy_mtasts p;
	char err[200];
	const char *text = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\n"
	                   "max_age: 5\n";
	(void)state;
	assert_int_equal(policy_mtasts_parse(text, strlen(text), &p, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (policy_mtasts_mx_matches(&p, cases[i].host) != cases[i].match)
			fail_msg("host %s: want %d", cases[i].host, cases[i].match);
	policy_mtasts_clear(&p);
}

struct txt_case {
	const char *txt;
	const char *id; /* NULL: refused */
};

static void test_txt(void **state)
{
	static const struct txt_case cases[] = {
	    {"v=STSv1; id=20160831085700Z;", "20160831085700Z"},
	    {"v=STSv1;id=abc", "abc"},
	    {"v=STSv1; ext=1; id=X1 ", "X1"},
	    {"id=abc; v=STSv1", NULL},
	    {"v=STSv2; id=abc", NULL},
	    {"v=STSv1", NULL},
	    {"v=STSv1; id=", NULL},
	    {"v=STSv1; id=a-b", NULL},
	    {"v=STSv1; id=123456789012345678901234567890123", NULL},
	    {"v=spf1 -all", NULL},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char id[64] = "";
		int rc = policy_mtasts_txt(cases[i].txt, id, sizeof(id));
		if (cases[i].id == NULL ? rc != -1 : (rc != 0 || strcmp(id, cases[i].id) != 0))
			fail_msg("txt \"%s\": rc %d id \"%s\"", cases[i].txt, rc, id);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policy_parse),
	    cmocka_unit_test(test_policy_too_long),
	    cmocka_unit_test(test_mx_matches),
	    cmocka_unit_test(test_txt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
