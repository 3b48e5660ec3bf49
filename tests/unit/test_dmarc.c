/*
 * test_dmarc.c - table-driven unit tests of DMARC's pure parts (RFC 9989):
 * the policy record parser (policy-dmarc-record.c), the names the DNS tree
 * walk queries (policy-dmarc-walk.c) and the RFC 5322 From: parser
 * (policy-from.c) on the display tricks of issue #12 item 6.
 * The walk itself (DNS) is tested over SMTP: test_dmarc_rfc9989.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy-dmarc-internal.h"

/* want: rc, then p sp np adkim aspf psd as a 6-character string
 * ("-" for 0), t, has_pct, p_missing; err: substring of the error. */
static const struct {
	const char *txt;
	int rc;
	const char *want;
	bool t, pct, p_missing;
	const char *err;
} rec_cases[] = {
    {"v=DMARC1; p=reject", 0, "r--rru", false, false, false, NULL},
    {"v=DMARC1;p=none", 0, "n--rru", false, false, false, NULL},
    /* item 5: FWS around "=" and ";" (RFC 9989 tag-spec) */
    {"v = DMARC1; p = reject", 0, "r--rru", false, false, false, NULL},
    {"  v=DMARC1 ;\tp=quarantine ; ", 0, "q--rru", false, false, false, NULL},
    /* item 5: pct is recognised and ignored, whatever its value */
    {"v=DMARC1; p=reject; pct=abc", 0, "r--rru", false, true, false, NULL},
    {"v=DMARC1; p=reject; pct=0", 0, "r--rru", false, true, false, NULL},
    {"v=DMARC1; p=Reject; sp=none; np=quarantine; adkim=s; aspf=s; psd=n; t=y", 0, "rnqssn", true,
     false, false, NULL},
    {"v=DMARC1; p=none; psd=y", 0, "n--rry", false, false, false, NULL},
    {"v=DMARC1; p=none; psd=maybe; adkim=x; t=maybe", 0, "n--rru", false, false, false, NULL},
    /* unknown tags are ignored (RFC 9989 4.7) */
    {"v=DMARC1; p=reject; foo=bar; ri=86400; rf=afrf", 0, "r--rru", false, false, false, NULL},
    /* not DMARC records: ignored */
    {"v=spf1 -all", 1, NULL, false, false, false, NULL},
    {"p=reject; v=DMARC1", 1, NULL, false, false, false, NULL},
    {"v=DMARC2; p=reject", 1, NULL, false, false, false, NULL},
    {"v=dmarc1; p=reject", 1, NULL, false, false, false, NULL},
    {"", 1, NULL, false, false, false, NULL},
    {"google-site-verification=abc", 1, NULL, false, false, false, NULL},
    /* unusable DMARC records */
    {"v=DMARC1", -1, NULL, false, false, false, "no p="},
    {"v=DMARC1; p=bogus", -1, NULL, false, false, false, "invalid p="},
    {"v=DMARC1; p=reject; sp=bogus", -1, NULL, false, false, false, "invalid sp="},
    {"v=DMARC1; p=reject; p=none", -1, NULL, false, false, false, "duplicated tag p="},
    {"v=DMARC1; v=DMARC1; p=none", -1, NULL, false, false, false, "duplicated tag v="},
    /* red team: a syntax error after v=DMARC1 is discarded (RFC 9989
     * 4.8), it does not make the record unusable (no enforcement) */
    {"v=DMARC1; p=reject; junk", 0, "r--rru", false, false, false, NULL},
    {"v=DMARC1; p=reject; =x", 0, "r--rru", false, false, false, NULL},
    {"v=DMARC1; p=reject; fo:1; sp=quarantine", 0, "rq-rru", false, false, false, NULL},
    {"v=DMARC1; junk; p=reject", 0, "r--rru", false, false, false, NULL},
    {"v=DMARC1; p reject", -1, NULL, false, false, false, "no p="},
    /* no usable p, but rua: p=none (RFC 9989 4.7) */
    {"v=DMARC1; rua=mailto:d@example.test", 0, "n--rru", false, false, true, NULL},
    {"v=DMARC1; p=bogus; sp=reject; rua=mailto:d@example.test", 0, "n--rru", false, false, true,
     NULL},
};

static void test_record_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rec_cases) / sizeof(rec_cases[0]); i++) {
		struct policy_dmarc_record r;
		char err[128], got[7];
		int rc = policy_dmarc_record_parse(rec_cases[i].txt, strlen(rec_cases[i].txt), &r,
		                                   err, sizeof(err));
		if (rc != rec_cases[i].rc)
			fail_msg("case %zu (%s): rc %d, want %d (%s)", i, rec_cases[i].txt, rc,
			         rec_cases[i].rc, err);
		if (rc == -1 && strstr(err, rec_cases[i].err) == NULL)
			fail_msg("case %zu: error \"%s\", want \"%s\"", i, err, rec_cases[i].err);
		if (rc != 0)
			continue;
		got[0] = r.p ? r.p : '-';
		got[1] = r.sp ? r.sp : '-';
		got[2] = r.np ? r.np : '-';
		got[3] = r.adkim;
		got[4] = r.aspf;
		got[5] = r.psd;
		got[6] = 0;
		if (strcmp(got, rec_cases[i].want) != 0 || r.t != rec_cases[i].t ||
		    r.has_pct != rec_cases[i].pct || r.p_missing != rec_cases[i].p_missing)
			fail_msg("case %zu (%s): %s t=%d pct=%d p_missing=%d, want %s %d %d %d", i,
			         rec_cases[i].txt, got, r.t, r.has_pct, r.p_missing,
			         rec_cases[i].want, rec_cases[i].t, rec_cases[i].pct,
			         rec_cases[i].p_missing);
	}
}

/* ruf= and fo= are kept for failure reports (RFC 9991): the ruf value
 * trimmed (cut after the last whole URI that fits), fo as bits. */
#define FO0 POLICY_DMARC_FO_0
#define FO1 POLICY_DMARC_FO_1
#define FOD POLICY_DMARC_FO_D
#define FOS POLICY_DMARC_FO_S
static const struct {
	const char *txt;
	const char *ruf;
	unsigned fo;
} ruf_cases[] = {
    {"v=DMARC1; p=reject", "", FO0},
    {"v=DMARC1; p=reject; ruf=mailto:f@example.test; fo=1", "mailto:f@example.test", FO1},
    {"v=DMARC1; p=none; ruf = mailto:a@x.test!10k, mailto:b@y.test ; fo = d:s",
     "mailto:a@x.test!10k, mailto:b@y.test", FOD | FOS},
    {"v=DMARC1; p=none; fo=0:1:d:s", "", FO0 | FO1 | FOD | FOS},
    {"v=DMARC1; p=none; fo=D", "", FOD},
    /* no known option: the default */
    {"v=DMARC1; p=none; fo=x:yz", "", FO0},
    {"v=DMARC1; p=none; fo=", "", FO0},
    {"v=DMARC1; p=none; fo=1:bogus", "", FO1},
    /* a ruf that cannot be a policy's: rua still makes p=none */
    {"v=DMARC1; rua=mailto:a@x.test; ruf=mailto:f@x.test", "mailto:f@x.test", FO0},
};

static void test_ruf_fo(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(ruf_cases) / sizeof(ruf_cases[0]); i++) {
		struct policy_dmarc_record r;
		char err[128];
		int rc = policy_dmarc_record_parse(ruf_cases[i].txt, strlen(ruf_cases[i].txt), &r,
		                                   err, sizeof(err));
		if (rc != 0 || strcmp(r.ruf, ruf_cases[i].ruf) != 0 || r.fo != ruf_cases[i].fo)
			fail_msg("case %zu (%s): rc %d ruf \"%s\" fo %#x, want \"%s\" %#x", i,
			         ruf_cases[i].txt, rc, r.ruf, r.fo, ruf_cases[i].ruf, ruf_cases[i].fo);
	}
	/* a ruf longer than the buffer: cut after the last whole URI */
	char txt[2048];
	size_t n = (size_t)snprintf(txt, sizeof(txt), "v=DMARC1; p=none; ruf=");
	for (int k = 0; k < 40; k++)
		n += (size_t)snprintf(txt + n, sizeof(txt) - n, "%smailto:r%02d@example.test",
		                      k ? "," : "", k);
	struct policy_dmarc_record r;
	char err[64];
	assert_int_equal(policy_dmarc_record_parse(txt, n, &r, err, sizeof(err)), 0);
	size_t rl = strlen(r.ruf);
	assert_true(rl > 0 && rl < POLICY_DMARC_RUF_MAX);
	assert_true(strncmp(txt + 22, r.ruf, rl) == 0 && txt[22 + rl] == ',');
}

/* RFC 9989 4.10: the names queried after the name itself, "|"-joined. */
static const struct {
	const char *name, *want;
} walk_cases[] = {
    {"example.test", "test"},
    {"test", ""},
    {"a.b.example.test", "b.example.test|example.test|test"},
    {"news.acme.shop.kawasaki.jp", "acme.shop.kawasaki.jp|shop.kawasaki.jp|kawasaki.jp|jp"},
    /* 8 labels: one at a time */
    {"1.2.3.4.5.6.7.test", "2.3.4.5.6.7.test|3.4.5.6.7.test|4.5.6.7.test|5.6.7.test|6.7.test|"
                           "7.test|test"},
    /* 11 labels: straight to the last 7, then one at a time (8 queries) */
    {"a.b.c.d.e.f.g.h.i.deep.test", "e.f.g.h.i.deep.test|f.g.h.i.deep.test|g.h.i.deep.test|"
                                    "h.i.deep.test|i.deep.test|deep.test|test"},
};

static void test_walk_targets(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(walk_cases) / sizeof(walk_cases[0]); i++) {
		const char *t[POLICY_DMARC_WALK_MAX_LABELS];
		size_t n = policy_dmarc_walk_targets(walk_cases[i].name, t, 8);
		char got[512] = "";
		assert_true(n + 1 <= POLICY_DMARC_WALK_MAX_LABELS);
		for (size_t k = 0; k < n; k++) {
			if (k > 0)
				strcat(got, "|");
			strcat(got, t[k]);
		}
		if (strcmp(got, walk_cases[i].want) != 0)
			fail_msg("case %zu (%s): %s, want %s", i, walk_cases[i].name, got,
			         walk_cases[i].want);
	}
}

/* issue #12 item 6: a From: that is not exactly RFC 5322 mailboxes is
 * refused (-1), and the domain is the addr-spec a reader displays. */
static const struct {
	const char *value;
	int count;
	const char *domain;
} from_cases[] = {
    {" ceo@bank.test <a@evil.test>", -1, NULL},
    {" ceo@bank.test<a@evil.test>", -1, NULL},
    {" <a@evil.test> <ceo@bank.test>", -1, NULL},
    {" <ceo@bank.test> <a@evil.test>", -1, NULL},
    {" Bank <a@evil.test><ceo@bank.test>", -1, NULL},
    {" Bank <a@evil.test> ceo@bank.test", -1, NULL},
    {" a@evil.test ceo@bank.test", -1, NULL},
    {" a@evil.test@bank.test", -1, NULL},
    {" <a@evil.test", -1, NULL},
    {" a@", -1, NULL},
    {" @bank.test", -1, NULL},
    {" a@bank..test", -1, NULL},
    {" a b@bank.test", -1, NULL},
    {" \"ceo@bank.test\" <a@evil.test>", 1, "evil.test"},
    {" ceo.bank.test <a@evil.test>", 1, "evil.test"}, /* obs-phrase */
    {" \"a b\"@Bank.Test", 1, "bank.test"},
    {" first.last@bank.test", 1, "bank.test"},
    {" Jörg <jörg@Bücher.test>", 1, "bücher.test"},
    {" (x) a (y) @ (z) bank.test (w)", 1, "bank.test"},
    {" Alice <@r1.test,@r2.test:a@bank.test>", 1, "bank.test"},
    {" ,a@bank.test,", 1, "bank.test"}, /* obs-mbox-list */
};

static void test_from_display(void **state)
{
	(void)state;
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_record_parse),
	    cmocka_unit_test(test_ruf_fo),
	    cmocka_unit_test(test_walk_targets),
	    cmocka_unit_test(test_from_display),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
