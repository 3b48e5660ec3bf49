/*
 * test_policy_spf_check.c - table-driven tests of the strict SPF record
 * validator (policy/policy-spf-check.c): records RFC 7208 section 12
 * accepts, with the normalized copy libspf2 gets; records it refuses, with
 * a piece of the reason; macro digit normalization with known values; and
 * policy_spf_name_ok (4.3).  The end-to-end table is
 * tests/integration/spf-conformance/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy-internal.h"

/* valid records and what libspf2 is given */
static const struct {
	const char *in;
	const char *norm;
} good[] = {
    {"v=spf1", "v=spf1"},
    {"v=spf1 ", "v=spf1"},
    {"V=SPF1 -ALL", "v=spf1 -all"},
    {"v=spf1  ip4:192.0.2.1   -all  ", "v=spf1 ip4:192.0.2.1 -all"},
    {"v=spf1 +all", "v=spf1 +all"},
    {"v=spf1 ip4:192.0.2.0/24 ~all", "v=spf1 ip4:192.0.2.0/24 ~all"},
    {"v=spf1 ip4:192.0.2.1/32", "v=spf1 ip4:192.0.2.1/32"},
    {"v=spf1 ip4:0.0.0.0/0 -all", "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all"},
    {"v=spf1 -ip4:10.0.0.0/0", "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1"},
    {"v=spf1 ip6:::/0", "v=spf1 ip6:::/1 ip6:8000::/1"},
    {"v=spf1 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1",
     "v=spf1 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1"},
    {"v=spf1 a a/24 a//64 a/24//64 a:m.example.com/0//0",
     "v=spf1 a a/24 a//64 a/24//64 a:m.example.com/0//0"},
    {"v=spf1 mx mx:example.com. ptr ptr:example.com",
     "v=spf1 mx mx:example.com. ptr ptr:example.com"},
    {"v=spf1 include:_spf.example.com exists:%{i}._e.example.com",
     "v=spf1 include:_spf.example.com exists:%{i}._e.example.com"},
    {"v=spf1 a:foo.1a a:foo.1-2 a:x.y-z", "v=spf1 a:foo.1a a:foo.1-2 a:x.y-z"},
    {"v=spf1 exists:%{d}", "v=spf1 exists:%{d}"},
    {"v=spf1 exists:%{ir}.%{v}._spf.%{d2}", "v=spf1 exists:%{ir}.%{v}._spf.%{d2}"},
    /* dots inside a macro are delimiters, not label separators */
    {"v=spf1 exists:%{l..}.%{d2.-}.example.com", "v=spf1 exists:%{l.}.%{d2.-}.example.com"},
    {"v=spf1 exists:%{l-}.%{L+_=,/}.%{d2R}.example.com",
     "v=spf1 exists:%{l-}.%{L+_=,/}.%{d2r}.example.com"},
    {"v=spf1 exists:%%%_%-.example.com", "v=spf1 exists:%%%_%-.example.com"},
    /* shapes seen in published records */
    {"v=spf1 include:_spf.google.com ~all", "v=spf1 include:_spf.google.com ~all"},
    {"v=spf1 ip4:192.168.0.1/16 -all", "v=spf1 ip4:192.168.0.1/16 -all"},
    {"v=spf1 mx a ip4:198.51.100.4 ip6:2a00:1450:4000::/36 include:amazonses.com ?all",
     "v=spf1 mx a ip4:198.51.100.4 ip6:2a00:1450:4000::/36 include:amazonses.com ?all"},
    {"v=spf1 exists:%{i}._spf.mta.example.com -all", "v=spf1 exists:%{i}._spf.mta.example.com -all"},
    {"v=spf1 include:%{ir}.%{v}.%{d}.spf.has.example.com ~all",
     "v=spf1 include:%{ir}.%{v}.%{d}.spf.has.example.com ~all"},
    {"v=spf1 redirect=_spf.example.com", "v=spf1 redirect=_spf.example.com"},
    {"v=spf1 a:mail.xn--p1ai mx:example.co.uk +a +mx -all",
     "v=spf1 a:mail.xn--p1ai mx:example.co.uk +a +mx -all"},
    {"v=spf1 include:_spf.example.com. -all exp=explain._spf.%{d}",
     "v=spf1 include:_spf.example.com. -all"},
    {"v=spf1 ip6:2001:db8::/32 ip6:::ffff:198.51.100.4 ptr -all",
     "v=spf1 ip6:2001:db8::/32 ip6:::ffff:198.51.100.4 ptr -all"},
    /* modifiers: unknown and exp dropped, redirect last, not with all */
    {"v=spf1 foo=bar f_o.o-9=%{c}%{r}%{t} moo= -all", "v=spf1 -all"},
    {"v=spf1 redirect=r.example.com ip4:192.0.2.1", "v=spf1 ip4:192.0.2.1 redirect=r.example.com"},
    {"v=spf1 REDIRECT=%{d}.r.example.com", "v=spf1 redirect=%{d}.r.example.com"},
    {"v=spf1 ?all redirect=r.example.com", "v=spf1 ?all"},
    {"v=spf1 -all exp=e.example.com", "v=spf1 -all"},
    {"v=spf1 exp=%{d}.e.example.com redirect=r.example.com", "v=spf1 redirect=r.example.com"},
    {"v=spf1 a=mail.example.com -all", "v=spf1 -all"},
    {"v=spf1 include=i.example.com -all", "v=spf1 -all"},
    {"v=spf1 foo=a=b:c/d -all", "v=spf1 -all"},
};

/* invalid records (RFC 7208 4.6, 12) and a piece of the reason */
static const struct {
	const char *in;
	const char *why;
} bad[] = {
    {"v=spf10", "not an SPF"},
    {"spf2.0/pra", "not an SPF"},
    {"", "not an SPF"},
    {"v=spf1 ip4:192.0.2.1/032", "CIDR"},
    {"v=spf1 ip4:192.0.2.0/00", "CIDR"},
    {"v=spf1 ip4:192.0.2.1/33", "CIDR"},
    {"v=spf1 ip4:192.0.2.1/", "CIDR"},
    {"v=spf1 ip4:192.0.2.1/4294967328", "CIDR"},
    {"v=spf1 ip4:192.0.2.1//64", "CIDR"},
    {"v=spf1 ip4:192.0.2.01", "address"},
    {"v=spf1 ip4:192.0.2.256", "address"},
    {"v=spf1 ip4:99999999999999.0.2.1", "address"}, /* fuzz: int overflow */
    {"v=spf1 ip4:192.0.2", "address"},
    {"v=spf1 ip4:192.0.2.1.", "address"},
    {"v=spf1 ip4:", "address"},
    {"v=spf1 ip4", "address"},
    {"v=spf1 ip6:2001:db8::1/0128", "CIDR"},
    {"v=spf1 ip6:2001:db8::1/129", "CIDR"},
    {"v=spf1 ip6:2001:db8:::1", "address"},
    {"v=spf1 ip6:2001:db8::1%eth0", "address"},
    {"v=spf1 ip6:[2001:db8::1]", "address"},
    {"v=spf1 ip6:192.0.2.1", "address"},
    {"v=spf1 a:", "empty domain"},
    {"v=spf1 a:/24", "empty domain"},
    {"v=spf1 a/024", "CIDR"},
    {"v=spf1 a//064", "CIDR"},
    {"v=spf1 a/33", "CIDR"},
    {"v=spf1 a//129", "CIDR"},
    {"v=spf1 a//64/24", "CIDR"},
    {"v=spf1 mx///64", "CIDR"},
    {"v=spf1 ptr/24", "CIDR"},
    {"v=spf1 ptr:", "empty domain"},
    {"v=spf1 a:192.0.2.1", "top-level"},
    {"v=spf1 a:mail", "top-level"},
    {"v=spf1 a:foo.123.", "top-level"},
    {"v=spf1 a:mail.-x", "top-level"},
    {"v=spf1 a:mail.x-", "top-level"},
    {"v=spf1 a:foo._x", "top-level"},
    {"v=spf1 a:.", "empty label"},
    {"v=spf1 a:.test", "empty label"},
    {"v=spf1 a:mail..example.com", "empty label"},
    {"v=spf1 a:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example.com",
     "63 octets"},
    {"v=spf1 include:", "empty domain"},
    {"v=spf1 include", "needs a domain"},
    {"v=spf1 include:i.example.com/24", "top-level"},
    {"v=spf1 exists:e.example.com//64", "top-level"},
    {"v=spf1 exists:foo", "top-level"},
    {"v=spf1 exists:x.%{l}x", "top-level"},
    {"v=spf1 foo", "unknown mechanism"},
    {"v=spf1 ipv4:192.0.2.1", "unknown mechanism"},
    {"v=spf1 - all", "unknown mechanism"},
    {"v=spf1 ++all", "unknown mechanism"},
    {"v=spf1 -all:foo.example.com", "unknown mechanism"},
    {"v=spf1 +all ip4:bogus", "address"},
    {"v=spf1 9foo=bar", "unknown mechanism"},
    {"v=spf1 =bar", "unknown mechanism"},
    {"v=spf1 -redirect=r.example.com", "unknown mechanism"},
    {"v=spf1 redirect:r.example.com", "unknown mechanism"},
    {"v=spf1 redirect=r.example.com redirect=r.example.com", "twice"},
    {"v=spf1 redirect=a.example.com REDIRECT=b.example.com", "twice"},
    {"v=spf1 -all exp=e.example.com Exp=e.example.com", "twice"},
    {"v=spf1 redirect=", "empty domain"},
    {"v=spf1 -all exp=", "empty domain"},
    {"v=spf1 redirect=192.0.2.1", "top-level"},
    {"v=spf1 -all exp=foo", "top-level"},
    {"v=spf1 foo=%{z}", "letter"},
    {"v=spf1 foo=50%", "at the end"},
    {"v=spf1 exists:%{x}.example.com", "letter"},
    {"v=spf1 exists:%{c}.example.com", "letter"},
    {"v=spf1 exists:%{r}.example.com", "letter"},
    {"v=spf1 exists:%{t}.example.com", "letter"},
    {"v=spf1 exists:%{d0}.example.com", "transformer 0"},
    {"v=spf1 exists:%{d00}.example.com", "transformer 0"},
    {"v=spf1 exists:%{d.example.com", "macro syntax"},
    {"v=spf1 exists:%{}.example.com", "letter"},
    {"v=spf1 exists:%x.example.com", "is not a macro"},
    {"v=spf1 exists:%{l;}.example.com", "macro syntax"},
    {"v=spf1 exists:%{dr2}.example.com", "macro syntax"},
    {"v=spf1 exists:%{", "unterminated"},
    {"v=spf1 a:m\xc3\xa4il.example.com", "0xc3"},
    {"v=spf1 foo=\x01", "0x01"},
};

/* test_check_good - accepted, normalized as expected */
static void test_check_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char err[160] = "", *out = NULL;
		int rc = policy_spf_check_record(good[i].in, strlen(good[i].in), NULL, &out, err,
		                                 sizeof(err));
		if (rc != 0)
			fail_msg("case %zu \"%s\": refused: %s", i, good[i].in, err);
		if (strcmp(out, good[i].norm) != 0)
			fail_msg("case %zu \"%s\": normalized to \"%s\", want \"%s\"", i,
			         good[i].in, out, good[i].norm);
		free(out);
	}
}

/* test_check_bad - refused with the expected reason, nothing returned */
static void test_check_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[160] = "", *out = (char *)"x";
		int rc = policy_spf_check_record(bad[i].in, strlen(bad[i].in), NULL, &out, err,
		                                 sizeof(err));
		if (rc != -1)
			fail_msg("case %zu \"%s\": accepted as \"%s\"", i, bad[i].in, out);
		if (out != NULL)
			fail_msg("case %zu: *out not NULL on failure", i);
		if (strstr(err, bad[i].why) == NULL)
			fail_msg("case %zu \"%s\": reason \"%s\" lacks \"%s\"", i, bad[i].in, err,
			         bad[i].why);
	}
}

/* macro digits not smaller than the number of parts are dropped; zero
 * CIDR lengths rewritten where an equivalent exists */
static const struct {
	const char *in;
	const char *norm;
} macro_cases[] = {
    {"v=spf1 exists:%{d3}.x.example.com", "v=spf1 exists:%{d}.x.example.com"},
    {"v=spf1 exists:%{d4}.x.example.com", "v=spf1 exists:%{d}.x.example.com"},
    {"v=spf1 exists:%{d2}.x.example.com", "v=spf1 exists:%{d2}.x.example.com"},
    {"v=spf1 exists:%{d3r}.x.example.com", "v=spf1 exists:%{dr}.x.example.com"},
    {"v=spf1 exists:%{l2-}.x.example.com", "v=spf1 exists:%{l-}.x.example.com"},
    {"v=spf1 exists:%{l1-}.x.example.com", "v=spf1 exists:%{l1-}.x.example.com"},
    {"v=spf1 exists:%{l2}.x.example.com", "v=spf1 exists:%{l}.x.example.com"},
    {"v=spf1 exists:%{i4}.x.example.com", "v=spf1 exists:%{i}.x.example.com"},
    {"v=spf1 exists:%{i3r}.x.example.com", "v=spf1 exists:%{i3r}.x.example.com"},
    {"v=spf1 exists:%{h5}.x.example.com", "v=spf1 exists:%{h5}.x.example.com"},
    {"v=spf1 exists:%{p1}.x.example.com", "v=spf1 exists:%{p1}.x.example.com"},
    /* "," and "/" (refused by libspf2) dropped when the value lacks them */
    {"v=spf1 exists:%{l+_=,/}.x.example.com", "v=spf1 exists:%{l+_=}.x.example.com"},
    {"v=spf1 exists:%{l,}.x.example.com", "v=spf1 exists:%{l+}.x.example.com"},
    {"v=spf1 exists:%{l2r,/}.x.example.com", "v=spf1 exists:%{lr+}.x.example.com"},
    {"v=spf1 exists:%{s1/}.x.example.com", "v=spf1 exists:%{s+}.x.example.com"},
    {"v=spf1 exists:%{d..}.x.example.com", "v=spf1 exists:%{d.}.x.example.com"},
    /* zero CIDR lengths for an IPv4 client */
    {"v=spf1 a/0 -all", "v=spf1 exists:%{d} -all"},
    {"v=spf1 ~a:m.example.com/0//0", "v=spf1 ~exists:m.example.com"},
    /* the IPv6 length means nothing to exists (fuzzing: "exists:x//6") */
    {"v=spf1 ~a:m.example.com/0//6", "v=spf1 ~exists:m.example.com"},
    {"v=spf1 a/0//64 -all", "v=spf1 exists:%{d} -all"},
    {"v=spf1 mx/24//0 a//0", "v=spf1 mx/24 a"},
    {"v=spf1 mx/0", "v=spf1 mx/0"},
};

/* test_check_macro_digits - normalization with known macro values */
static void test_check_macro_digits(void **state)
{
	const struct policy_spf_macro_ctx mc = {
	    .s = "strong-bad@mail.example.com",
	    .l = "strong-bad",
	    .o = "mail.example.com",
	    .d = "mail.example.com",
	    .i = "192.0.2.3",
	    .h = NULL,
	    .v = "in-addr",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(macro_cases) / sizeof(macro_cases[0]); i++) {
		char err[160] = "", *out = NULL;
		if (policy_spf_check_record(macro_cases[i].in, strlen(macro_cases[i].in), &mc, &out,
		                            err, sizeof(err)) != 0)
			fail_msg("case %zu: refused: %s", i, err);
		if (strcmp(out, macro_cases[i].norm) != 0)
			fail_msg("case %zu \"%s\": \"%s\", want \"%s\"", i, macro_cases[i].in, out,
			         macro_cases[i].norm);
		free(out);
	}
}

/* test_check_length_bound - the record length is what is read: a record
 * cut inside a term is judged on what is left, no NUL needed */
static void test_check_length_bound(void **state)
{
	static const char rec[] = "v=spf1 ip4:192.0.2.1/24XXXX";
	char err[160], *out = NULL;

	(void)state;
	assert_int_equal(policy_spf_check_record(rec, 23, NULL, &out, err, sizeof(err)), 0);
	assert_string_equal(out, "v=spf1 ip4:192.0.2.1/24");
	free(out);
	assert_int_equal(policy_spf_check_record(rec, 22, NULL, &out, err, sizeof(err)), 0);
	assert_string_equal(out, "v=spf1 ip4:192.0.2.1/2");
	free(out);
	assert_int_equal(policy_spf_check_record(rec, 21, NULL, &out, err, sizeof(err)), -1);
	/* fuzz: a NUL is never a macro delimiter, letter or qualifier */
	static const char nul1[] = "v=spf1 exists:%{l1r\0+-}.x.example.com";
	static const char nul2[] = "v=spf1 exists:%{\0}.x.example.com";
	static const char nul3[] = "v=spf1 \0all";
	assert_int_equal(
	    policy_spf_check_record(nul1, sizeof(nul1) - 1, NULL, &out, err, sizeof(err)), -1);
	assert_int_equal(
	    policy_spf_check_record(nul2, sizeof(nul2) - 1, NULL, &out, err, sizeof(err)), -1);
	assert_int_equal(
	    policy_spf_check_record(nul3, sizeof(nul3) - 1, NULL, &out, err, sizeof(err)), -1);
	assert_null(out);
}

static const struct {
	const char *name;
	bool ok;
} names[] = {
    {"example.com", true},
    {"example.com.", true},
    {"_spf.example.com", true},
    {"a.b.c.d.e.example.com", true},
    {"example", false},
    {"", false},
    {".", false},
    {".example.com", false},
    {"a..example.com", false},
    {"example.com..", false},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", true},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", false},
    /* RFC 8616 4: %{l} of a UTF-8 local-part names nothing */
    {"j\303\266rg.x.example.com", false},
    {"xn--jrg-sna.x.example.com", true},
};

/* test_name_ok - RFC 7208 4.3 usable names */
static void test_name_ok(void **state)
{
	char longname[300];

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (policy_spf_name_ok(names[i].name) != names[i].ok)
			fail_msg("case %zu \"%s\": want %s", i, names[i].name,
			         names[i].ok ? "ok" : "refused");
	/* 253 octets is the most a name may have */
	memset(longname, 0, sizeof(longname));
	for (int i = 0; i < 63; i++)
		strcat(longname, "abc.");
	strcat(longname, "d");
	assert_int_equal(strlen(longname), 253);
	assert_true(policy_spf_name_ok(longname));
	strcat(longname, "e");
	assert_false(policy_spf_name_ok(longname));
	assert_false(policy_spf_name_ok(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_check_good),
	    cmocka_unit_test(test_check_bad),
	    cmocka_unit_test(test_check_macro_digits),
	    cmocka_unit_test(test_check_length_bound),
	    cmocka_unit_test(test_name_ok),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
