/*
 * test_policy_dkim.c - table-driven tests of mxgate's DKIM layer around
 * libopendkim (policy/policy-dkim-strict.c): the RFC 6376 3.2 tag-list
 * parser (duplicates, syntax, folding), h= counting, key type vs a=
 * (RFC 6376 3.6.1, RFC 8463), and the simple/relaxed canonical body
 * lengths (RFC 6376 3.4.3, 3.4.4) behind the l= check, in every chunking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

static const struct {
	const char *in;
	int rc;
	int ntags;           /* tags in out (also on a duplicate) */
	const char *d;       /* value of the first d=, NULL = absent */
	const char *errpart; /* substring of err when rc == -1 */
} tag_cases[] = {
    {"v=1; a=rsa-sha256; d=example.com; s=sel", 0, 4, "example.com", NULL},
    {"v=1;a=rsa-sha256;d=example.com;s=sel;", 0, 4, "example.com", NULL},
    {" v = 1 ; d = example.com ; ", 0, 2, "example.com", NULL},
    {"v=1;\r\n\td=example.com;\r\n b=abc\r\n def", 0, 3, "example.com", NULL},
    {"d=", 0, 1, "", NULL},
    {"", 0, 0, NULL, NULL},
    {"v=1;; d=x", 0, 2, "x", NULL},                   /* empty tag-spec tolerated */
    {"x_1=y; D=upper; d=lower", 0, 3, "lower", NULL}, /* names are case-sensitive */
    /* RFC 6376 3.2: a duplicated tag invalidates the whole list */
    {"v=1; d=bank.test; s=s; d=evil.test", -1, 4, "bank.test", "duplicate tag d="},
    {"d=a; d=a", -1, 2, "a", "duplicate tag d="},
    {"v=1; b=AAA; bh=x; b=BBB", -1, 4, NULL, "duplicate tag b="},
    {"k=rsa; p=abc; k=ed25519", -1, 3, NULL, "duplicate tag k="},
    /* syntax */
    {"v=1; 1d=x", -1, 1, NULL, "bad tag name"},
    {"v=1; =x", -1, 1, NULL, "bad tag name"},
    {"v=1; d", -1, 1, NULL, "has no '='"},
    {"v=1; d example", -1, 1, NULL, "has no '='"},
    {"v=1; d=a\001b", -1, 1, NULL, "control character"},
    {"v=1;\r\nd=x", -1, 1, NULL, "bad tag name"}, /* CRLF without WSP: no FWS */
};

static void test_tags_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(tag_cases) / sizeof(tag_cases[0]); i++) {
		struct policy_dkim_tags t;
		const struct policy_dkim_tag *d;
		char err[200] = "";
		int rc = policy_dkim_tags_parse(tag_cases[i].in, strlen(tag_cases[i].in), &t, err,
		                                sizeof(err));

		if (rc != tag_cases[i].rc || (int)t.n != tag_cases[i].ntags)
			fail_msg("case %zu \"%s\": rc %d n %zu err \"%s\"", i, tag_cases[i].in, rc,
			         t.n, err);
		d = policy_dkim_tags_get(&t, "d");
		if (tag_cases[i].d != NULL) {
			assert_non_null(d);
			if (d->value_len != strlen(tag_cases[i].d) ||
			    memcmp(d->value, tag_cases[i].d, d->value_len) != 0)
				fail_msg("case %zu: d=\"%.*s\"", i, (int)d->value_len, d->value);
		} else if (rc == 0) {
			assert_null(d);
		}
		if (tag_cases[i].errpart != NULL && strstr(err, tag_cases[i].errpart) == NULL)
			fail_msg("case %zu: err \"%s\" lacks \"%s\"", i, err, tag_cases[i].errpart);
		policy_dkim_tags_free(&t);
		policy_dkim_tags_free(&t); /* idempotent */
	}
}

/* A folded b= value keeps its folding inside the value, trimmed at the end. */
static void test_tags_value_folding(void **state)
{
	const char *s = "b=abc\r\n def ;x=1";
	struct policy_dkim_tags t;
	char err[100];
	const struct policy_dkim_tag *b;

	(void)state;
	assert_int_equal(policy_dkim_tags_parse(s, strlen(s), &t, err, sizeof(err)), 0);
	b = policy_dkim_tags_get(&t, "b");
	assert_non_null(b);
	assert_int_equal(b->value_len, strlen("abc\r\n def"));
	assert_memory_equal(b->value, "abc\r\n def", b->value_len);
	policy_dkim_tags_free(&t);
}

static const struct {
	const char *h, *name;
	int count;
} hlist_cases[] = {
    {"from:to:subject", "Subject", 1},
    {"From : To : Subject : subject", "subject", 2},
    {"from:\r\n\tsubject", "subject", 1},
    {"from:to", "subject", 0},
    {"from:subjectx:xsubject", "subject", 0},
    {"", "from", 0},
    {":::", "from", 0},
    {"reply-to:reply-to:reply-to", "Reply-To", 3},
};

static void test_hlist_count(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hlist_cases) / sizeof(hlist_cases[0]); i++) {
		int n = policy_dkim_hlist_count(hlist_cases[i].h, strlen(hlist_cases[i].h),
		                                hlist_cases[i].name);
		if (n != hlist_cases[i].count)
			fail_msg("case %zu \"%s\": %d", i, hlist_cases[i].h, n);
	}
}

static const struct {
	const char *key, *a;
	int rc;
} alg_cases[] = {
    {"v=DKIM1; k=rsa; p=AAAA", "rsa-sha256", 0},
    {"v=DKIM1; p=AAAA", "rsa-sha256", 0}, /* k= defaults to rsa */
    {"v=DKIM1; p=AAAA", "rsa-sha1", 0},
    {"v=DKIM1; k=ed25519; p=AAAA", "ed25519-sha256", 0},
    /* RFC 6376 3.6.1: no k= means rsa - an ed25519 signature must not verify */
    {"v=DKIM1; p=AAAA", "ed25519-sha256", -1},
    {"v=DKIM1; k=rsa; p=AAAA", "ed25519-sha256", -1},
    {"v=DKIM1; k=ed25519; p=AAAA", "rsa-sha256", -1},
    {"v=DKIM1; k=; p=AAAA", "rsa-sha256", -1},
    {"v=DKIM1; k=rsa; p=AAAA", "rsa", 0},
};

static void test_key_alg_check(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(alg_cases) / sizeof(alg_cases[0]); i++) {
		struct policy_dkim_tags t;
		char err[200] = "";
		int rc;

		assert_int_equal(policy_dkim_tags_parse(alg_cases[i].key, strlen(alg_cases[i].key),
		                                        &t, err, sizeof(err)),
		                 0);
		rc = policy_dkim_key_alg_check(&t, alg_cases[i].a, strlen(alg_cases[i].a), err,
		                               sizeof(err));
		if (rc != alg_cases[i].rc)
			fail_msg("case %zu: rc %d err \"%s\"", i, rc, err);
		if (rc < 0 && strstr(err, "RFC 6376 3.6.1") == NULL)
			fail_msg("case %zu: err \"%s\"", i, err);
		policy_dkim_tags_free(&t);
	}
}

static const struct {
	const char *body;
	int64_t simple, relaxed;
} len_cases[] = {
    {"", 2, 0},
    {"\r\n", 2, 0},
    {"\r\n\r\n\r\n", 2, 0},
    {"hello\r\n", 7, 7},
    {"hello", 7, 7},             /* a CRLF is added */
    {"hello\r\n\r\n\r\n", 7, 7}, /* trailing empty lines ignored */
    {"hello  \r\n", 9, 7},       /* relaxed: trailing WSP removed */
    {"a \t b\r\n", 7, 5},        /* relaxed: a WSP run is one SP */
    {" a\r\n", 4, 4},            /* leading WSP is one SP, kept */
    {"a\r\n  \r\n", 7, 3},       /* relaxed: WSP-only line is empty */
    {"a\r\n\r\nb\r\n", 8, 8},    /* inner empty line kept */
    {"a\rb\r\n", 5, 5},          /* a lone CR is content */
    {"a\r", 4, 4},
    {"hello\r\n\r\nnew IBAN\r\n", 19, 19},
};

/* count - the lengths of body fed in pieces of chunk bytes. */
static void count(const char *body, size_t chunk, int64_t *s, int64_t *r)
{
	struct policy_dkim_bodylen b;
	size_t n = strlen(body);

	memset(&b, 0, sizeof(b));
	for (size_t off = 0; off < n; off += chunk)
		policy_dkim_bodylen_feed(&b, body + off, n - off < chunk ? n - off : chunk);
	policy_dkim_bodylen_end(&b, s, r);
}

static void test_bodylen(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(len_cases) / sizeof(len_cases[0]); i++)
		for (size_t chunk = 1; chunk <= 8; chunk++) {
			int64_t s, r;
			count(len_cases[i].body, chunk, &s, &r);
			if (s != len_cases[i].simple || r != len_cases[i].relaxed)
				fail_msg("case %zu chunk %zu: simple %lld relaxed %lld", i, chunk,
				         (long long)s, (long long)r);
		}
}

static void test_single_use(void **state)
{
	(void)state;
	assert_true(policy_dkim_single_use_index("subject", 7) >= 0);
	assert_true(policy_dkim_single_use_index("REPLY-TO", 8) >= 0);
	assert_true(policy_dkim_single_use_index("From", 4) >= 0);
	assert_int_equal(policy_dkim_single_use_index("Received", 8), -1);
	assert_int_equal(policy_dkim_single_use_index("Subjec", 6), -1);
	assert_string_equal(policy_dkim_single_use_name(policy_dkim_single_use_index("from", 4)),
	                    "From");
	assert_string_equal(policy_dkim_single_use_name(-1), "");
	assert_string_equal(policy_dkim_single_use_name(POLICY_DKIM_NSINGLE), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tags_parse),  cmocka_unit_test(test_tags_value_folding),
	    cmocka_unit_test(test_hlist_count), cmocka_unit_test(test_key_alg_check),
	    cmocka_unit_test(test_bodylen),     cmocka_unit_test(test_single_use),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
