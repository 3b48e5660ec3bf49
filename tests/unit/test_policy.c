/*
 * test_policy.c - table-driven unit tests of policy/'s pure logic:
 * policy_drop_header (our authserv-id and spam headers), From: address
 * extraction, the spam score, Authentication-Results / Received-SPF
 * formatting and the verdict (enforcement, exemptions, summary).
 * No DNS, no threads: messages are built by hand from policy-internal.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy-internal.h"
#include "policy-test-helpers.h"

/* test_cfg - the documented defaults of [auth] and [spam], as loaded from
 * the config table; cfg is a copy a test may change (its strings belong to
 * a config kept for the whole run). */
static void test_cfg(struct config *cfg)
{
	static struct config *defaults;

	if (defaults == NULL)
		defaults = policy_test_config("");
	*cfg = *defaults;
}

/* ------------------------------------------------------------ drop_header */

static const struct {
	const char *field;
	bool drop;
} drop_cases[] = {
    {"Authentication-Results: mx.example.test; spf=pass\r\n", true},
    {"authentication-results: MX.EXAMPLE.TEST; dkim=pass\r\n", true},
    {"Authentication-Results:mx.example.test;none\r\n", true},
    {"Authentication-Results: (forged) mx.example.test; spf=pass\r\n", true},
    {"Authentication-Results: (a (nested) comment)\r\n mx.example.test; spf=pass\r\n", true},
    {"Authentication-Results:\r\n\tmx.example.test 1; spf=pass\r\n", true},
    {"Authentication-Results: \"mx.example.test\"; spf=pass\r\n", true},
    {"Authentication-Results: mx.example.test(comment); spf=pass\r\n", true},
    {"Authentication-Results: mx.other.test; spf=pass\r\n", false},
    {"Authentication-Results: mx.example.test.evil; spf=pass\r\n", false},
    {"Authentication-Results: (mx.example.test) other.test; spf=pass\r\n", false},
    {"X-Spam-Flag: NO\r\n", true},
    {"x-spam-score: -10\r\n", true},
    {"X-SPAM-STATUS: No\r\n", true},
    {"Subject: Authentication-Results: mx.example.test\r\n", false},
    /* issue 11 item 9: every field a downstream could take for ours */
    {"Authentication-Results: mx.example.test.; dmarc=pass\r\n", true},
    {"Authentication-Results: MX.Example.Test.;dmarc=pass\r\n", true},
    {"Authentication-Results: \"mx.example.test.\"; dmarc=pass\r\n", true},
    {"Authentication-Results: \"mx\\.example.test\"; dmarc=pass\r\n", true},
    {"Authentication-Results: \" mx.example.test \"; dmarc=pass\r\n", true},
    {"Authentication-Results: \"mx.example.test;x\"; dmarc=pass\r\n", true},
    {"Authentication-Results: =?us-ascii?Q?mx.example.test?=; dmarc=pass\r\n", true},
    {"Authentication-Results: \"=?utf-8?b?bXguZXhhbXBsZS50ZXN0?=\"; dmarc=pass\r\n", true},
    {"Authentication-Results: (unclosed mx.example.test; dmarc=pass\r\n", true},
    {"Authentication-Results: (a) (b (c) mx.example.test; dmarc=pass\r\n", true},
    {"Authentication-Results: \"mx.example.test; dmarc=pass\r\n", true},
    {"Authentication-Results: mx.example.test,other.test; dmarc=pass\r\n", true},
    {"Authentication-Results: other.test mx.example.test; dmarc=pass\r\n", true},
    {"Authentication-Results: mx.example.test\r\n", true},
    {"Authentication-Results:\r\n\t(x)\r\n\tmx.example.test\r\n\t(y) 1\r\n\t; spf=pass\r\n", true},
    {"Authentication-Results: ;spf=pass\r\n", true},
    {"Authentication-Results: mx.other.test.; spf=pass (mx.example.test)\r\n", false},
    {"Authentication-Results: mx.other.test 1; spf=pass\r\n", false},
    {"Authentication-Results: \"mx.other.test\"; none\r\n", false},
    {"ARC-Authentication-Results: i=1; mx.example.test; dmarc=pass\r\n", true},
    {"arc-authentication-results: i = 2 ; (c) MX.EXAMPLE.TEST. ; dmarc=pass\r\n", true},
    {"ARC-Authentication-Results: i=1; =?us-ascii?Q?mx=2Eexample=2Etest?=; dmarc=pass\r\n",
     true},
    {"ARC-Authentication-Results: i=1; (mx.example.test; dmarc=pass\r\n", true},
    {"ARC-Authentication-Results: i=1; mx.other.test; dmarc=pass\r\n", false},
    {"ARC-Authentication-Results: i=x; mx.other.test; dmarc=pass\r\n", false},
    {"ARC-Seal: i=1; a=rsa-sha256; d=mx.example.test; cv=none; b=abc\r\n", false},
    {"ARC-Message-Signature: i=1; d=mx.example.test; b=abc\r\n", false},
    {"X-Spam-Level: ***\r\n", true},
    {"X-Spam-Report: nothing\r\n", true},
    {"x-spam: yes\r\n", true},
    {"X-SPAM-CHECKER-VERSION: SpamAssassin\r\n", true},
    {"X-Spam_Flag: NO\r\n", true},
    {"X-Spam-Flag : NO\r\n", true},
    {"Received-SPF: pass\r\n", true},
    {"received-spf: pass (mx.other.test) client-ip=192.0.2.1;\r\n", true},
    {"Received-SPF : none\r\n", true},
    /* red team: non-ASCII octets in or around our id - a no-break space
     * (U+00A0, trimmed by .NET's String.Trim), a zero-width space
     * (U+200B), a BOM - vanish for a lax Unicode-aware reader */
    {"Authentication-Results: mx.example.test\xc2\xa0; dmarc=pass\r\n", true},
    {"Authentication-Results: \xc2\xa0mx.example.test; dmarc=pass\r\n", true},
    {"Authentication-Results: mx.example\xe2\x80\x8b.test; dmarc=pass\r\n", true},
    {"Authentication-Results: \"\xef\xbb\xbfmx.example.test\"; dmarc=pass\r\n", true},
    {"ARC-Authentication-Results: i=1; mx.example.test\xc2\xa0; dmarc=pass\r\n", true},
    {"Authentication-Results: mx.\xc3\xa9xample.test; dmarc=pass\r\n", false},
    {"X-Spa: no\r\n", false},
    {"Received: from mx.example.test\r\n", false},
    {"DKIM-Signature: v=1; d=example.test; b=x\r\n", false},
};

/* authserv-id extraction (RFC 8601 2.2, RFC 8617 4.1.1): NULL = unparseable */
static const struct {
	const char *value;
	bool arc;
	const char *id;
} arid_cases[] = {
    {" mx.example.test; spf=pass", false, "mx.example.test"},
    {" mx.example.test.; spf=pass", false, "mx.example.test"},
    {" mx.example.test..;none", false, "mx.example.test"},
    {" (c (nested)) \"a\\b\" 1 (v); none", false, "ab"},
    {" \"a\\\"b\"; none", false, NULL},
    {" \"mx.example.test;x\"; none", false, NULL},
    {"\r\n\tx.test\r\n\t;\r\n\tnone", false, "x.test"},
    {" x.test 12 ; none", false, "x.test"},
    {" \" x.test\r\n\t\"; none", false, "x.test"},
    {" x.test", false, NULL},
    {" x.test 1 2; none", false, NULL},
    {" x.test junk; none", false, NULL},
    {" x.test/y; none", false, NULL},
    {" (open x.test; none", false, NULL},
    {" \"open x.test; none", false, NULL},
    {" =?utf-8?q?x.test?=; none", false, NULL},
    {" \"=?utf-8?q?x.test?=\"; none", false, NULL},
    {" ; none", false, NULL},
    {" .; none", false, NULL},
    {"", false, NULL},
    {" i=1; x.test; spf=pass", true, "x.test"},
    {" I = 12 ;(c)x.test.;spf=pass", true, "x.test"},
    {" x.test; spf=pass", true, NULL},
    {" i=; x.test; spf=pass", true, NULL},
    {" i=1 x.test; spf=pass", true, NULL},
};

/* DNS names from the wire (PTR, MX targets): only LDH host names pass */
static const struct {
	const char *wire; /* length-prefixed labels, ending in a zero octet */
	size_t len;
	const char *name;   /* NULL = refused */
} wire_cases[] = {
#define W(s) s, sizeof(s)
    {W("\4mail\7example\4test"), "mail.example.test"},
    {W(""), ""},
    {W("\x39" "evil\r\nAuthentication-Results: mx.example.test; dmarc=pass\4test"), NULL},
    {W("\3a b\4test"), NULL},
    {W("\3a(b\4test"), NULL},
    {W("\3a)b\4test"), NULL},
    {W("\3a;b\4test"), NULL},
    {W("\3a\0b\4test"), NULL},
    {W("\3a.b\4test"), NULL}, /* a dot inside a label would read as two labels */
    {"\4mail\4test", 10, NULL},      /* no terminator */
#undef W
};

static void test_dns_name_from_wire(void **state)
{
	for (size_t i = 0; i < sizeof(wire_cases) / sizeof(wire_cases[0]); i++) {
		char out[256];
		int rc = policy_dns_name_from_wire((const unsigned char *)wire_cases[i].wire,
		                                   wire_cases[i].len, out, sizeof(out));
		if (wire_cases[i].name == NULL ? rc != -1
		                               : rc != 0 || strcmp(out, wire_cases[i].name) != 0)
			fail_msg("case %zu: rc %d", i, rc);
	}
}

static void test_ar_authserv_id(void **state)
{
	for (size_t i = 0; i < sizeof(arid_cases) / sizeof(arid_cases[0]); i++) {
		char out[256];
		const char *v = arid_cases[i].value;
		int rc = policy_ar_authserv_id(v, strlen(v), arid_cases[i].arc, out, sizeof(out));

		if (arid_cases[i].id == NULL) {
			if (rc != -1)
				fail_msg("case %zu (%s): parsed as \"%s\"", i, v, out);
		} else if (rc != 0 || strcmp(out, arid_cases[i].id) != 0) {
			fail_msg("case %zu (%s): rc %d id \"%s\", want \"%s\"", i, v, rc, out,
			         arid_cases[i].id);
		}
	}
	/* an id that does not fit is not truncated into a match */
	{
		char small[8];
		assert_int_equal(policy_ar_authserv_id(" mx.example.test; none", 22, false, small,
		                                       sizeof(small)),
		                 -1);
	}
}

static void test_drop_header(void **state)
{
	struct config cfg;

	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(drop_cases) / sizeof(drop_cases[0]); i++) {
		struct util_hdr_field f;
		size_t pos = 0;
		const char *s = drop_cases[i].field;

		assert_int_equal(util_hdr_next(s, strlen(s), &pos, &f), 1);
		if (policy_drop_header(&cfg, &f) != drop_cases[i].drop)
			fail_msg("case %zu: %s", i, s);
	}
	/* renamed spam headers: only the configured names */
	cfg.spam_flag_header = "X-Gateway-Spam";
	{
		struct util_hdr_field f;
		size_t pos = 0;
		const char *s = "X-Gateway-Spam: YES\r\n";
		assert_int_equal(util_hdr_next(s, strlen(s), &pos, &f), 1);
		assert_true(policy_drop_header(&cfg, &f));
	}
}

/* ------------------------------------------------------------ From: */

static const struct {
	const char *value;
	int count;
	const char *domain;
} from_cases[] = {
    {" alice@example.test", 1, "example.test"},
    {" Alice <alice@Example.TEST>", 1, "example.test"},
    {" \"Smith, Alice\" <alice@example.test>", 1, "example.test"},
    {" alice@example.test (Alice, at work)", 1, "example.test"},
    {" (comment <x@y.test>) alice@example.test", 1, "example.test"},
    {" \"a@b.test\" <alice@example.test>", 1, "example.test"},
    {" alice@example.test, bob@other.test", 2, "example.test"},
    /* RFC 5322 3.6.2: From: is a mailbox-list; groups are refused */
    {" Friends: alice@example.test, bob@other.test;", -1, NULL},
    {" Undisclosed recipients:;", -1, NULL},
    {" Friends: alice@example.test;", -1, NULL},
    {" ", 0, NULL},
    {" Alice\r\n <alice@example.test>", 1, "example.test"},
    {" <@route.test:alice@example.test>", 1, "example.test"},
    {" alice@example.test.", 1, "example.test"},
    {" \"unterminated <alice@example.test>", -1, NULL},
    {" Alice <alice@example.test", -1, NULL},
    {" alice", -1, NULL},
    {" (open comment alice@example.test", -1, NULL},
    {" a@evil.test);spf=pass", -1, NULL},
    {" a@[192.0.2.1]", -1, NULL},
};

/* policy_org_domain without a PSL loaded: the last two labels, lower-case,
 * no final dot (the key of the resolver's slow-domain accounting). */
static const struct {
	const char *in, *want;
} org_cases[] = {
    {"_dmarc.Mail.Example.TEST", "example.test"},
    {"sel._domainkey.bank.test.", "bank.test"},
    {"3.0.0.127.bl.test", "bl.test"},
    {"example.test", "example.test"},
    {"test", "test"},
    {"", ""},
};

static void test_org_domain(void **state)
{
	char out[256];

	for (size_t i = 0; i < sizeof(org_cases) / sizeof(org_cases[0]); i++) {
		policy_org_domain(org_cases[i].in, out, sizeof(out));
		if (strcmp(out, org_cases[i].want) != 0)
			fail_msg("case %zu: %s -> %s, want %s", i, org_cases[i].in, out,
			         org_cases[i].want);
	}
}

static void test_from_parse(void **state)
{
	for (size_t i = 0; i < sizeof(from_cases) / sizeof(from_cases[0]); i++) {
		char *dom = NULL;
		int n = policy_from_parse(from_cases[i].value, strlen(from_cases[i].value), &dom);

		if (n != from_cases[i].count)
			fail_msg("case %zu (%s): count %d, want %d", i, from_cases[i].value, n,
			         from_cases[i].count);
		if (from_cases[i].domain == NULL)
			assert_null(dom);
		else
			assert_string_equal(dom, from_cases[i].domain);
		free(dom);
	}
}

/* ------------------------------------------------------------ messages */

static struct policy_ctx test_pc;

/* test_msg - a message with the given results, no DNS involved. */
static struct policy_msg *test_msg(const struct config *cfg, enum policy_spf_result spf,
                                   const char *dkim1, const char *dkim2, int dmarc, char applied)
{
	struct policy_msg *pm = util_xcalloc(1, sizeof(*pm));

	test_pc.cfg = cfg;
	pm->pc = &test_pc;
	util_addr_parse_numeric("192.0.2.7", 25, &pm->client);
	pm->helo = util_xstrdup("client.sender.test");
	pm->mail_from = util_xstrdup("alice@sender.test");
	pm->spf.evaluated = true;
	pm->spf.result = spf;
	pm->spf.identity = util_xstrdup("alice@sender.test");
	pm->spf.domain = util_xstrdup("sender.test");
	pm->spf.comment = util_xstrdup("mx.example.test: test");
	pm->sigs = util_xcalloc(2, sizeof(*pm->sigs));
	const char *dk[2] = {dkim1, dkim2};
	for (int i = 0; i < 2; i++) {
		if (dk[i] == NULL)
			continue;
		struct policy_dkim_sig *g = &pm->sigs[pm->nsigs++];
		g->result = dk[i];
		g->d = util_xstrdup("sender.test");
		g->s = util_xstrdup(i == 0 ? "sel1" : "sel2");
		g->b = util_xstrdup(i == 0 ? "AbCdEfGh" : "12345678");
		g->comment = util_xstrdup("2048-bit key");
	}
	if (dmarc >= 0) {
		pm->dmarc.evaluated = true;
		pm->dmarc.result = (enum policy_dmarc_result)dmarc;
		pm->dmarc.applied = applied;
		pm->dmarc.policy = applied ? applied : 'n';
		pm->dmarc.header_from = util_xstrdup("sender.test");
		pm->dmarc.comment = util_xstrdup("p=reject sp=unset pct=100");
	}
	return pm;
}

/* ------------------------------------------------------------ score */

static const struct {
	enum policy_spf_result spf;
	const char *dkim1, *dkim2;
	int dmarc;
	char applied;
	int dnsbl;
	bool no_rdns;
	double score;
	const char *rules;
} score_cases[] = {
    {POLICY_SPF_PASS, "pass", NULL, POLICY_DMARC_PASS, 'n', 0, false, 0.0, ""},
    {POLICY_SPF_FAIL, NULL, NULL, -1, 0, 0, false, 3.0, "SPF_FAIL"},
    {POLICY_SPF_SOFTFAIL, NULL, NULL, -1, 0, 0, false, 1.0, "SPF_SOFTFAIL"},
    {POLICY_SPF_NEUTRAL, "fail", NULL, -1, 0, 0, false, 1.0, "DKIM_FAIL"},
    {POLICY_SPF_NEUTRAL, "fail", "pass", -1, 0, 0, false, 0.0, ""},
    {POLICY_SPF_NEUTRAL, "policy", NULL, -1, 0, 0, false, 1.0, "DKIM_FAIL"},
    {POLICY_SPF_FAIL, "fail", NULL, POLICY_DMARC_FAIL, 'r', 0, false, 8.0,
     "SPF_FAIL DKIM_FAIL DMARC_FAIL"},
    {POLICY_SPF_NONE, NULL, NULL, POLICY_DMARC_FAIL, 'q', 0, false, 5.0, "DMARC_QUARANTINE"},
    {POLICY_SPF_NONE, NULL, NULL, POLICY_DMARC_FAIL, 'n', 0, false, 4.0, "DMARC_FAIL"},
    {POLICY_SPF_PASS, NULL, NULL, -1, 0, 2, true, 9.0, "DNSBL_bl1.test DNSBL_bl2.test NO_RDNS"},
    {POLICY_SPF_TEMPERROR, "temperror", NULL, POLICY_DMARC_TEMPERROR, 0, 0, false, 0.0, ""},
};

static void test_score(void **state)
{
	struct config cfg;

	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(score_cases) / sizeof(score_cases[0]); i++) {
		struct policy_msg *pm =
		    test_msg(&cfg, score_cases[i].spf, score_cases[i].dkim1, score_cases[i].dkim2,
		             score_cases[i].dmarc, score_cases[i].applied);
		struct util_strlist rules = {0};
		struct util_buf b;
		double s;

		for (int k = 0; k < score_cases[i].dnsbl; k++)
			util_strlist_add(&pm->dnsbl_hits, k == 0 ? "bl1.test" : "bl2.test");
		pm->rdns_checked = true;
		pm->no_rdns = score_cases[i].no_rdns;
		s = policy_score(&cfg, pm, &rules);
		util_buf_init(&b);
		util_buf_adds(&b, "");
		for (size_t k = 0; k < rules.n; k++)
			util_buf_printf(&b, "%s%s", k ? " " : "", rules.v[k]);
		if (s < score_cases[i].score - 0.001 || s > score_cases[i].score + 0.001)
			fail_msg("case %zu: score %.1f, want %.1f", i, s, score_cases[i].score);
		assert_string_equal(b.data, score_cases[i].rules);
		util_buf_free(&b);
		util_strlist_free(&rules);
		policy_msg_destroy(pm);
	}
}

/* ------------------------------------------------------------ A-R */

static const struct {
	enum policy_spf_result spf;
	bool helo;
	const char *dkim1, *dkim2;
	int dmarc;
	char applied;
	const char *expect;
} ar_cases[] = {
    {POLICY_SPF_PASS, false, "pass", NULL, POLICY_DMARC_PASS, 'n',
     "Authentication-Results: mx.example.test;\r\n"
     "\tspf=pass (mx.example.test: test) smtp.mailfrom=alice@sender.test;\r\n"
     "\tdkim=pass (2048-bit key) header.d=sender.test header.s=sel1 header.b=AbCdEfGh;\r\n"
     "\tdmarc=pass (p=reject sp=unset pct=100 dis=none) header.from=sender.test"
     " policy.dmarc=none\r\n"},
    {POLICY_SPF_FAIL, false, "pass", "fail", POLICY_DMARC_FAIL, 'r',
     "Authentication-Results: mx.example.test;\r\n"
     "\tspf=fail (mx.example.test: test) smtp.mailfrom=alice@sender.test;\r\n"
     "\tdkim=pass (2048-bit key) header.d=sender.test header.s=sel1 header.b=AbCdEfGh;\r\n"
     "\tdkim=fail (2048-bit key) header.d=sender.test header.s=sel2 header.b=12345678;\r\n"
     "\tdmarc=fail (p=reject sp=unset pct=100 dis=reject) header.from=sender.test"
     " policy.dmarc=reject\r\n"},
    {POLICY_SPF_NONE, true, NULL, NULL, -1, 0,
     "Authentication-Results: mx.example.test;\r\n"
     "\tspf=none (mx.example.test: test) smtp.helo=client.sender.test;\r\n"
     "\tdkim=none\r\n"},
};

static const struct {
	const char *value, *want;
} pvalue_cases[] = {
    {"alice@sender.test", "alice@sender.test"},
    {"a.b+c=d/e@sender.test", "a.b+c=d/e@sender.test"},
    {"@sender.test", "@sender.test"},
    {"", "\"\""},
    {"a;dmarc=pass@sender.test", "\"a;dmarc=pass@sender.test\""},
    {"x=y", "\"x=y\""},
    {"a(b@sender.test", "\"a(b@sender.test\""},
    {"\"q\\\"x\"@sender.test", "\"\\\"q\\\\\\\"x\\\"@sender.test\""},
    {"a.@sender.test", "\"a.@sender.test\""},
    {"a@sender.test.", "\"a@sender.test.\""},
    {"a@b@sender.test", "\"a@b@sender.test\""},
    {"a@[192.0.2.1]", "\"a@[192.0.2.1]\""},
    /* RFC 8616 4: ASCII only - the domain as A-labels, a UTF-8 local-part
     * left out, a domain that does not convert with '?' per octet */
    {"a@b\303\274cher.test", "a@xn--bcher-kva.test"},
    {"a@B\303\234CHER.test", "a@xn--bcher-kva.test"},
    {"j\303\266rg@b\303\274cher.test", "@xn--bcher-kva.test"},
    {"a@\342\230\203.test", "\"a@???.test\""},
};

/* RFC 8616: U-labels to A-labels (policy-idn.c).  want NULL: not a
 * domain name. */
static const struct {
	const char *in, *alabels, *lookup;
} idn_cases[] = {
    {"b\303\274cher.test", "xn--bcher-kva.test", "xn--bcher-kva.test"},
    {"B\303\234CHER.Test", "xn--bcher-kva.test", "xn--bcher-kva.test"}, /* UTS #46 */
    {"bu\314\210cher.test", "xn--bcher-kva.test", "xn--bcher-kva.test"}, /* NFC */
    {"stra\303\237e.test", "xn--strae-oqa.test", "xn--strae-oqa.test"},   /* non-trans. */
    {"mx.m\303\274ller.test", "mx.xn--mller-kva.test", "mx.xn--mller-kva.test"},
    {"Example.COM", "example.com", "Example.COM"}, /* ASCII: looked up as it is */
    {"xn--bcher-kva.test", "xn--bcher-kva.test", "xn--bcher-kva.test"},
    {"xn--zz.test", NULL, "xn--zz.test"},          /* no IDN: SPF looks it up */
    {"[192.0.2.1]", NULL, "[192.0.2.1]"},
    {"\342\230\203.test", NULL, NULL}, /* U+2603: DISALLOWED in IDNA2008 */
    {"b\303\274cher..test", NULL, NULL},
    {"b\303\274/cher.test", NULL, NULL},
    {"b\303\274cher.test\377", NULL, NULL}, /* not UTF-8 */
    {"", NULL, ""},
};

static void test_idn(void **state)
{
	for (size_t i = 0; i < sizeof(idn_cases) / sizeof(idn_cases[0]); i++) {
		char *a = policy_idn_alabels(idn_cases[i].in);
		char *l = policy_idn_lookup_name(idn_cases[i].in);
		if ((a == NULL) != (idn_cases[i].alabels == NULL) ||
		    (a != NULL && strcmp(a, idn_cases[i].alabels) != 0))
			fail_msg("case %zu alabels: got %s", i, a ? a : "NULL");
		if ((l == NULL) != (idn_cases[i].lookup == NULL) ||
		    (l != NULL && strcmp(l, idn_cases[i].lookup) != 0))
			fail_msg("case %zu lookup: got %s", i, l ? l : "NULL");
		free(a);
		free(l);
	}
}

static void test_ar_format(void **state)
{
	struct config cfg;

	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(ar_cases) / sizeof(ar_cases[0]); i++) {
		struct policy_msg *pm =
		    test_msg(&cfg, ar_cases[i].spf, ar_cases[i].dkim1, ar_cases[i].dkim2,
		             ar_cases[i].dmarc, ar_cases[i].applied);
		char *ar;

		pm->spf.helo_identity = ar_cases[i].helo;
		ar = policy_ar_format(&cfg, pm);
		assert_string_equal(ar, ar_cases[i].expect);
		free(ar);
		policy_msg_destroy(pm);
	}
}

static void test_ar_special(void **state)
{
	struct config cfg;
	struct policy_msg *pm;
	char *ar;

	test_cfg(&cfg);
	/* quoted local-part, DNSSEC, header.i, exemption, disabled checks */
	pm = test_msg(&cfg, POLICY_SPF_PASS, "pass", NULL, POLICY_DMARC_FAIL, 'r');
	free(pm->mail_from);
	pm->mail_from = util_xstrdup("a b@sender.test");
	pm->spf.secure = true;
	pm->sigs[0].i = util_xstrdup("@sender.test");
	pm->sigs[0].secure = true;
	pm->dmarc.exempt = util_xstrdup("exempt client 192.0.2.7");
	ar = policy_ar_format(&cfg, pm);
	assert_non_null(strstr(ar, "smtp.mailfrom=\"a b@sender.test\""));
	assert_non_null(strstr(ar, "(mx.example.test: test; dnssec=secure)"));
	assert_non_null(strstr(ar, "header.s=sel1 header.i=@sender.test header.b=AbCdEfGh"));
	assert_non_null(strstr(ar, "dis=none; override=exempt client 192.0.2.7)"));
	free(ar);
	/* comment text from the wire cannot close the comment */
	free(pm->spf.comment);
	pm->spf.comment = util_xstrdup("x) smtp.mailfrom=forged; dkim=pass (y");
	ar = policy_ar_format(&cfg, pm);
	assert_non_null(strstr(ar, "spf=pass (x\\) smtp.mailfrom=forged; dkim=pass \\(y; "
	                           "dnssec=secure) smtp.mailfrom="));
	free(ar);
	/* issue 11 item 8: client values are bare only as token or
	 * dot-atom@domain, else quoted: never a new property or clause */
	for (size_t i = 0; i < sizeof(pvalue_cases) / sizeof(pvalue_cases[0]); i++) {
		char *want = util_xasprintf("smtp.mailfrom=%s;\r\n", pvalue_cases[i].want);
		free(pm->mail_from);
		pm->mail_from = util_xstrdup(pvalue_cases[i].value);
		ar = policy_ar_format(&cfg, pm);
		if (strstr(ar, want) == NULL)
			fail_msg("case %zu: want %s in\n%s", i, want, ar);
		free(want);
		free(ar);
	}
	pm->spf.helo_identity = true;
	free(pm->helo);
	pm->helo = util_xstrdup("h.test;client-ip=203.0.113.9");
	ar = policy_ar_format(&cfg, pm);
	assert_non_null(strstr(ar, " smtp.helo=\"h.test;client-ip=203.0.113.9\";\r\n"));
	free(ar);
	free(pm->helo);
	pm->helo = util_xstrdup("mx.b\303\274cher.test"); /* RFC 8616 4: A-labels */
	ar = policy_ar_format(&cfg, pm);
	assert_non_null(strstr(ar, " smtp.helo=mx.xn--bcher-kva.test;\r\n"));
	free(ar);
	/* red team: DKIM tag values are the signer's text, of any length; no
	 * line of ours may exceed RFC 5322's 998 octets (a downstream refuses
	 * the message, or one that wraps it makes a new field of the rest) */
	{
		char *big = util_xmalloc(3001);
		memset(big, 'a', 3000);
		big[3000] = 0;
		free(pm->sigs[0].i);
		pm->sigs[0].i = util_xasprintf("%s@sender.test", big);
		free(pm->sigs[0].s);
		pm->sigs[0].s = util_xstrdup(big);
		free(big);
		ar = policy_ar_format(&cfg, pm);
		for (const char *l = ar, *e; *l; l = e + 2) {
			e = strstr(l, "\r\n");
			assert_non_null(e);
			if (e - l > 998)
				fail_msg("A-R line of %d octets", (int)(e - l));
		}
		assert_non_null(strstr(ar, "header.d=sender.test"));
		free(ar);
	}
	/* ... nor from an envelope-from of 250 backslashes (quoted-pairs in
	 * the comment and in the quoted value: ~500 octets each) */
	{
		char from[300];
		int n = snprintf(from, sizeof(from), "\"");
		for (int i = 0; i < 125; i++)
			n += snprintf(from + n, sizeof(from) - (size_t)n, "\\\\");
		snprintf(from + n, sizeof(from) - (size_t)n, "\"@s.test");
		free(pm->mail_from);
		pm->mail_from = util_xstrdup(from);
		free(pm->spf.comment);
		pm->spf.comment = util_xasprintf("mx.example.test: domain of %s designates", from);
		pm->spf.helo_identity = false;
		ar = policy_ar_format(&cfg, pm);
		for (const char *l = ar, *e; *l; l = e + 2) {
			e = strstr(l, "\r\n");
			assert_non_null(e);
			if (e - l > 998)
				fail_msg("A-R line of %d octets", (int)(e - l));
		}
		assert_non_null(strstr(ar, ")\r\n\t smtp.mailfrom=\""));
		free(ar);
	}
	cfg.dkim_enabled = false;
	pm->dmarc.evaluated = false;
	pm->spf.evaluated = false;
	ar = policy_ar_format(&cfg, pm);
	assert_string_equal(ar, "Authentication-Results: mx.example.test; none\r\n");
	free(ar);
	policy_msg_destroy(pm);
}

/* ------------------------------------------------------------ verdict */

static const struct {
	enum config_dmarc_enforcement enf;
	int dmarc;
	char applied;
	bool exempt;
	int from_addrs;
	enum policy_action action;
	const char *reply_prefix;
	const char *flag;
	enum config_dmarc_temperror tmp; /* [auth] dmarc_temperror */
} verdict_cases[] = {
    {CONFIG_DMARC_REJECT, POLICY_DMARC_PASS, 'n', false, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_FAIL, 'r', false, 1, POLICY_REJECT,
     "550 5.7.1 Rejected by the DMARC policy of sender.test", "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_QUARANTINE, POLICY_DMARC_FAIL, 'r', false, 1, POLICY_QUARANTINE, NULL, "YES",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_MONITOR, POLICY_DMARC_FAIL, 'r', false, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_FAIL, 'q', false, 1, POLICY_QUARANTINE, NULL, "YES",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_FAIL, 'n', false, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_FAIL, 'r', true, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_PERMERROR, 0, false, 2, POLICY_REJECT,
     "550 5.7.1 Rejected: the message has 2 From: addresses", "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_MONITOR, POLICY_DMARC_PERMERROR, 0, true, 0, POLICY_REJECT,
     "550 5.7.1 Rejected: the message has no From: address", "NO", CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    /* temperror: unknown is not pass - 451 unless told to accept, monitoring
     * or exempt */
    {CONFIG_DMARC_REJECT, POLICY_DMARC_TEMPERROR, 'r', false, 1, POLICY_TEMPFAIL,
     "451 4.7.1 DMARC check of sender.test failed temporarily", "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_QUARANTINE, POLICY_DMARC_TEMPERROR, 0, false, 1, POLICY_TEMPFAIL,
     "451 4.7.1 DMARC check of sender.test failed temporarily", "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_TEMPERROR, 'r', false, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_ACCEPT},
    {CONFIG_DMARC_MONITOR, POLICY_DMARC_TEMPERROR, 'r', false, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
    {CONFIG_DMARC_REJECT, POLICY_DMARC_TEMPERROR, 'r', true, 1, POLICY_ACCEPT, NULL, "NO",
     CONFIG_DMARC_TEMPERROR_TEMPFAIL},
};

static void test_verdict(void **state)
{
	struct config cfg;

	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(verdict_cases) / sizeof(verdict_cases[0]); i++) {
		struct policy_msg *pm = test_msg(&cfg, POLICY_SPF_PASS, NULL, NULL,
		                                 verdict_cases[i].dmarc, verdict_cases[i].applied);
		char flag[32];

		cfg.dmarc_enforcement = verdict_cases[i].enf;
		cfg.dmarc_temperror = verdict_cases[i].tmp;
		if (verdict_cases[i].exempt)
			pm->dmarc.exempt = util_xstrdup("exempt domain sender.test");
		if (verdict_cases[i].from_addrs != 1) {
			pm->dmarc.from_error = true;
			pm->dmarc.from_error_text =
			    verdict_cases[i].from_addrs == 0
			        ? util_xstrdup("the message has no From: address")
			        : util_xstrdup("the message has 2 From: addresses; exactly "
			                       "one is required");
		}
		policy_verdict_build(pm);
		if (pm->verdict.action != verdict_cases[i].action)
			fail_msg("case %zu: action %d, want %d", i, pm->verdict.action,
			         verdict_cases[i].action);
		if (verdict_cases[i].reply_prefix == NULL)
			assert_null(pm->verdict.reply);
		else
			assert_true(strncmp(pm->verdict.reply, verdict_cases[i].reply_prefix,
			                    strlen(verdict_cases[i].reply_prefix)) == 0);
		snprintf(flag, sizeof(flag), "X-Spam-Flag: %s\r\n", verdict_cases[i].flag);
		if (strstr(pm->verdict.headers, flag) == NULL)
			fail_msg("case %zu: headers:\n%s", i, pm->verdict.headers);
		assert_non_null(strstr(pm->verdict.headers, "Received-SPF: pass ("));
		assert_non_null(strstr(pm->verdict.summary, "spf=pass dkim=none"));
		policy_msg_destroy(pm);
	}
}

/* mxgate's own verdict kinds (issue 13): which fired, and X-Spam-Flag
 * follows the configured action of those that did. */
static const struct {
	enum policy_spf_result spf;
	int dmarc;
	char applied;
	int dnsbl;        /* listing zones */
	double threshold; /* [spam] threshold */
	int dmarc_act, score_act, dnsbl_act;
	unsigned kinds;
	enum policy_action action;
	const char *flag;
} kind_cases[] = {
    {POLICY_SPF_PASS, -1, 0, 0, 5, CONFIG_PQ_TAG, CONFIG_PQ_TAG, CONFIG_PQ_DELIVER, 0,
     POLICY_ACCEPT, "NO"},
    {POLICY_SPF_PASS, POLICY_DMARC_FAIL, 'q', 0, 100, CONFIG_PQ_TAG, CONFIG_PQ_TAG,
     CONFIG_PQ_DELIVER, POLICY_KIND_DMARC, POLICY_QUARANTINE, "YES"},
    {POLICY_SPF_PASS, POLICY_DMARC_FAIL, 'q', 0, 100, CONFIG_PQ_DELIVER, CONFIG_PQ_TAG,
     CONFIG_PQ_DELIVER, POLICY_KIND_DMARC, POLICY_QUARANTINE, "NO"},
    {POLICY_SPF_PASS, POLICY_DMARC_FAIL, 'q', 0, 5, CONFIG_PQ_QUARANTINE, CONFIG_PQ_REJECT,
     CONFIG_PQ_DELIVER, POLICY_KIND_DMARC | POLICY_KIND_SCORE, POLICY_QUARANTINE, "YES"},
    {POLICY_SPF_FAIL, -1, 0, 0, 2, CONFIG_PQ_TAG, CONFIG_PQ_DELIVER, CONFIG_PQ_DELIVER,
     POLICY_KIND_SCORE, POLICY_QUARANTINE, "NO"},
    {POLICY_SPF_FAIL, -1, 0, 0, 2, CONFIG_PQ_TAG, CONFIG_PQ_QUARANTINE, CONFIG_PQ_DELIVER,
     POLICY_KIND_SCORE, POLICY_QUARANTINE, "YES"},
    /* a listing under the default deliver acts only through the score */
    {POLICY_SPF_PASS, -1, 0, 1, 100, CONFIG_PQ_TAG, CONFIG_PQ_TAG, CONFIG_PQ_DELIVER, 0,
     POLICY_ACCEPT, "NO"},
    {POLICY_SPF_PASS, -1, 0, 1, 100, CONFIG_PQ_TAG, CONFIG_PQ_TAG, CONFIG_PQ_TAG,
     POLICY_KIND_DNSBL, POLICY_QUARANTINE, "YES"},
    {POLICY_SPF_PASS, -1, 0, 1, 3, CONFIG_PQ_TAG, CONFIG_PQ_DELIVER, CONFIG_PQ_REJECT,
     POLICY_KIND_DNSBL | POLICY_KIND_SCORE, POLICY_QUARANTINE, "YES"},
    /* DMARC reject stays a reject: no kind */
    {POLICY_SPF_PASS, POLICY_DMARC_FAIL, 'r', 1, 5, CONFIG_PQ_TAG, CONFIG_PQ_TAG, CONFIG_PQ_TAG,
     0, POLICY_REJECT, "YES"},
};

static void test_verdict_kinds(void **state)
{
	struct config cfg;

	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(kind_cases) / sizeof(kind_cases[0]); i++) {
		struct policy_msg *pm = test_msg(&cfg, kind_cases[i].spf, NULL, NULL,
		                                 kind_cases[i].dmarc, kind_cases[i].applied);
		char flag[32];

		cfg.spam_threshold = kind_cases[i].threshold;
		cfg.spam_dmarc_action = kind_cases[i].dmarc_act;
		cfg.spam_score_action = kind_cases[i].score_act;
		cfg.dnsbl_tag_action = kind_cases[i].dnsbl_act;
		for (int k = 0; k < kind_cases[i].dnsbl; k++)
			util_strlist_add(&pm->dnsbl_hits, "bl1.test");
		policy_verdict_build(pm);
		if (pm->verdict.kinds != kind_cases[i].kinds ||
		    pm->verdict.action != kind_cases[i].action)
			fail_msg("case %zu: kinds %u action %d, want %u %d", i, pm->verdict.kinds,
			         pm->verdict.action, kind_cases[i].kinds, kind_cases[i].action);
		snprintf(flag, sizeof(flag), "X-Spam-Flag: %s\r\n", kind_cases[i].flag);
		if (strstr(pm->verdict.headers, flag) == NULL)
			fail_msg("case %zu: headers:\n%s", i, pm->verdict.headers);
		policy_msg_destroy(pm);
	}
}

/* the disposition an aggregate report states follows what was done to a
 * DMARC quarantine: [spam] dmarc_quarantine_action (issue 13) */
static void test_facts_dmarc_quarantine_action(void **state)
{
	static const struct {
		int act;
		const char *disposition, *override;
	} fc[] = {
	    {CONFIG_PQ_TAG, "quarantine", NULL},
	    {CONFIG_PQ_QUARANTINE, "quarantine", NULL},
	    {CONFIG_PQ_REJECT, "reject", "local_policy"}, /* stricter than p=quarantine */
	    {CONFIG_PQ_DELIVER, "none", "local_policy"},
	};
	struct config cfg;

	(void)state;
	test_cfg(&cfg);
	for (size_t i = 0; i < sizeof(fc) / sizeof(fc[0]); i++) {
		struct policy_msg *pm = test_msg(&cfg, POLICY_SPF_FAIL, NULL, NULL,
		                                 POLICY_DMARC_FAIL, 'q');
		struct policy_dmarc_facts f;

		cfg.spam_dmarc_action = fc[i].act;
		assert_int_equal(policy_msg_dmarc_facts(pm, &f), 0);
		assert_string_equal(f.disposition, fc[i].disposition);
		if (fc[i].override == NULL)
			assert_null(f.override);
		else
			assert_string_equal(f.override, fc[i].override);
		policy_msg_destroy(pm);
	}
}

static void test_summary_and_spam_headers(void **state)
{
	struct config cfg;
	struct policy_msg *pm;

	test_cfg(&cfg);
	cfg.dmarc_enforcement = CONFIG_DMARC_MONITOR;
	pm = test_msg(&cfg, POLICY_SPF_FAIL, "fail", NULL, POLICY_DMARC_FAIL, 'r');
	policy_verdict_build(pm);
	assert_string_equal(pm->verdict.summary,
	                    "spf=fail dkim=fail dmarc=fail score=8.0 action=quarantine");
	assert_non_null(strstr(pm->verdict.headers, "X-Spam-Flag: YES\r\nX-Spam-Score: 8.0\r\n"
	                                            "X-Spam-Status: Yes, score=8.0 required=5.0 "
	                                            "tests=SPF_FAIL,DKIM_FAIL,DMARC_FAIL\r\n"));
	assert_int_equal(pm->verdict.action, POLICY_QUARANTINE);
	policy_verdict_tempfail(pm, "451 4.3.2 System busy, try again later");
	assert_int_equal(pm->verdict.action, POLICY_TEMPFAIL);
	assert_string_equal(pm->verdict.reply, "451 4.3.2 System busy, try again later");
	policy_msg_destroy(pm);
}

static void test_spf_reply(void **state)
{
	struct config cfg;
	struct policy_spf_outcome o = {
	    .evaluated = true, .identity = "a@s.test", .domain = "s.test"};
	char *r;

	test_cfg(&cfg);
	o.result = POLICY_SPF_FAIL;
	assert_null(policy_spf_compute_reply(&cfg, &o));
	cfg.spf_reject_fail = true;
	r = policy_spf_compute_reply(&cfg, &o);
	assert_true(strncmp(r, "550 5.7.23 ", 11) == 0);
	free(r);
	o.result = POLICY_SPF_TEMPERROR;
	assert_null(policy_spf_compute_reply(&cfg, &o));
	cfg.spf_temperror_defer = true;
	r = policy_spf_compute_reply(&cfg, &o);
	assert_true(strncmp(r, "451 4.7.24 ", 11) == 0);
	free(r);
	o.result = POLICY_SPF_SOFTFAIL;
	assert_null(policy_spf_compute_reply(&cfg, &o));
}

#define RSPF_HEAD                                                                          \
	"Received-SPF: softfail (domain of \"a\\)b\"@sender.test)\r\n"                          \
	"\treceiver=mx.example.test; client-ip=192.0.2.7; envelope-from="

static const struct {
	const char *helo, *from, *want;
} rspf_cases[] = {
    {"h.test;client-ip=203.0.113.9", "a@b.test",
     RSPF_HEAD "\"a@b.test\"; helo=\"h.test;client-ip=203.0.113.9\"; identity=mailfrom;\r\n"},
    {"h.test(", "a@b.test",
     RSPF_HEAD "\"a@b.test\"; helo=\"h.test(\"; identity=mailfrom;\r\n"},
    {"x\"y\\z", "", RSPF_HEAD "\"\"; helo=\"x\\\"y\\\\z\"; identity=mailfrom;\r\n"},
    {"[192.0.2.1]", "a.b@c.test",
     RSPF_HEAD "\"a.b@c.test\"; helo=\"[192.0.2.1]\"; identity=mailfrom;\r\n"},
    {"h..test", "x", RSPF_HEAD "x; helo=\"h..test\"; identity=mailfrom;\r\n"},
    {"h.test.", "x", RSPF_HEAD "x; helo=\"h.test.\"; identity=mailfrom;\r\n"},
    {"", "x", RSPF_HEAD "x; helo=unknown; identity=mailfrom;\r\n"},
    /* RFC 8616 4: ASCII only, domains as A-labels */
    {"mx.b\303\274cher.test", "j\303\266rg@b\303\274cher.test",
     RSPF_HEAD "\"@xn--bcher-kva.test\"; helo=mx.xn--bcher-kva.test; identity=mailfrom;\r\n"},
    {"h\377.test", "a@m\303\274ller.test",
     RSPF_HEAD "\"a@xn--mller-kva.test\"; helo=h?.test; identity=mailfrom;\r\n"},
};

static void test_received_spf(void **state)
{
	struct config cfg;
	struct policy_msg *pm;
	char *r;

	test_cfg(&cfg);
	pm = test_msg(&cfg, POLICY_SPF_SOFTFAIL, NULL, NULL, -1, 0);
	free(pm->mail_from);
	pm->mail_from = util_xstrdup("\"a)b\"@sender.test");
	free(pm->spf.comment);
	pm->spf.comment = util_xstrdup("domain of \"a)b\"@sender.test");
	r = policy_received_spf_format(&cfg, pm);
	assert_string_equal(r, "Received-SPF: softfail (domain of \"a\\)b\"@sender.test)\r\n"
	                       "\treceiver=mx.example.test; client-ip=192.0.2.7;"
	                       " envelope-from=\"\\\"a)b\\\"@sender.test\";"
	                       " helo=client.sender.test; identity=mailfrom;\r\n");
	free(r);
	/* issue 11 item 8: every value is a dot-atom or a quoted-string
	 * (RFC 7208 9.1), so the client's HELO cannot add pairs or open a
	 * comment that swallows identity= */
	for (size_t i = 0; i < sizeof(rspf_cases) / sizeof(rspf_cases[0]); i++) {
		free(pm->helo);
		pm->helo = util_xstrdup(rspf_cases[i].helo);
		free(pm->mail_from);
		pm->mail_from = util_xstrdup(rspf_cases[i].from);
		r = policy_received_spf_format(&cfg, pm);
		if (strcmp(r, rspf_cases[i].want) != 0)
			fail_msg("case %zu: got\n%s\nwant\n%s", i, r, rspf_cases[i].want);
		free(r);
	}
	/* red team: a quoted envelope-from and a HELO full of characters that
	 * need quoted-pairs: no line over 998 octets (folded after a ';') */
	{
		char from[300], helo[256];
		int n = snprintf(from, sizeof(from), "\"");
		for (int i = 0; i < 120; i++)
			n += snprintf(from + n, sizeof(from) - (size_t)n, "\\\"");
		snprintf(from + n, sizeof(from) - (size_t)n, "\"@s.test");
		memset(helo, '\\', 250);
		helo[250] = 0;
		free(pm->helo);
		pm->helo = util_xstrdup(helo);
		free(pm->mail_from);
		pm->mail_from = util_xstrdup(from);
		r = policy_received_spf_format(&cfg, pm);
		for (const char *l = r, *e; *l; l = e + 2) {
			e = strstr(l, "\r\n");
			assert_non_null(e);
			if (e - l > 998)
				fail_msg("Received-SPF line of %d octets:\n%s", (int)(e - l), r);
		}
		assert_non_null(strstr(r, ";\r\n\thelo=\""));
		assert_non_null(strstr(r, " identity=mailfrom;\r\n"));
		free(r);
	}
	pm->spf.evaluated = false;
	assert_null(policy_received_spf_format(&cfg, pm));
	policy_msg_destroy(pm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_drop_header),
	    cmocka_unit_test(test_from_parse),
	    cmocka_unit_test(test_org_domain),
	    cmocka_unit_test(test_score),
	    cmocka_unit_test(test_idn),
	    cmocka_unit_test(test_ar_format),
	    cmocka_unit_test(test_ar_special),
	    cmocka_unit_test(test_verdict), cmocka_unit_test(test_verdict_kinds),
	    cmocka_unit_test(test_facts_dmarc_quarantine_action),
	    cmocka_unit_test(test_summary_and_spam_headers),
	    cmocka_unit_test(test_spf_reply),
	    cmocka_unit_test(test_received_spf),
	    cmocka_unit_test(test_ar_authserv_id),
	    cmocka_unit_test(test_dns_name_from_wire),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
