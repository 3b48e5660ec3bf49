/*
 * test_policy_arc.c - the pure parts of ARC (policy/policy-arc-parse.c):
 * the strict RFC 6376 3.2 tag-list parser, header and body
 * canonicalisation (with the examples of RFC 6376 3.4.5), b= removal and
 * the grouping of ARC fields into sets (RFC 8617 5.2 steps 1-4).
 * Signing and verification are tested end to end against dkimpy in
 * tests/integration/test_arc.py; tests/fuzz/fuzz_arc.c drives the same
 * parsers with random input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "policy-arc.h"

/* ------------------------------------------------------------ tag-list */

struct tag_case {
	const char *in;
	int rc;           /* 0 or -1 */
	size_t n;         /* tags when rc == 0 */
	const char *name; /* one tag to look at (NULL: none) */
	const char *value;
	const char *err; /* substring of the error when rc == -1 */
};

static const struct tag_case tag_cases[] = {
    {"i=1; a=rsa-sha256; d=example.org", 0, 3, "d", "example.org", NULL},
    {"i=1;", 0, 1, "i", "1", NULL},
    {"a=b;c=d;", 0, 2, "c", "d", NULL},
    {" a = b ; c= d ", 0, 2, "a", "b", NULL},
    {"a=x y", 0, 1, "a", "x y", NULL},
    {"a=;b=1", 0, 2, "a", "", NULL},
    {"b=abc\r\n def; c=x", 0, 2, "b", "abc\r\n def", NULL},
    {"x_1=v", 0, 1, "x_1", "v", NULL},
    {"A=1; a=2", 0, 2, "A", "1", NULL}, /* names are case-sensitive */
    {"", -1, 0, NULL, NULL, "empty"},
    {" \t", -1, 0, NULL, NULL, "empty"},
    {"i=1; i=2", -1, 0, NULL, NULL, "duplicate tag i"},
    {"d=a.example; s=x; d=b.example", -1, 0, NULL, NULL, "duplicate tag d"},
    {"1a=x", -1, 0, NULL, NULL, "letter"},
    {"_a=x", -1, 0, NULL, NULL, "letter"},
    {"a", -1, 0, NULL, NULL, "without '='"},
    {"a b=c", -1, 0, NULL, NULL, "without '='"},
    {"a=b;;c=d", -1, 0, NULL, NULL, "letter"},
    {"a=b\nc", -1, 0, NULL, NULL, "0x0a"},
    {"a=b\rc", -1, 0, NULL, NULL, "folding"},
    {"a=b\r\nc=d", -1, 0, NULL, NULL, "folding"},
    {"a=\x01", -1, 0, NULL, NULL, "0x01"},
    {"a=\xc3\xa9", -1, 0, NULL, NULL, "0xc3"},
    {"abcdefghijklmnop=1", -1, 0, NULL, NULL, "too long"},
};

static void test_tag_list(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(tag_cases) / sizeof(tag_cases[0]); i++) {
		const struct tag_case *c = &tag_cases[i];
		struct policy_arc_tags t;
		char err[80] = "";
		int rc = policy_arc_tags_parse(c->in, strlen(c->in), &t, err, sizeof(err));

		if (rc != c->rc)
			fail_msg("case %zu \"%s\": rc %d (%s)", i, c->in, rc, err);
		if (rc == 0) {
			assert_int_equal(t.n, c->n);
			if (c->name != NULL) {
				const char *v = policy_arc_tag(&t, c->name);
				assert_non_null(v);
				assert_string_equal(v, c->value);
			}
		} else if (strstr(err, c->err) == NULL) {
			fail_msg("case %zu \"%s\": error \"%s\" lacks \"%s\"", i, c->in, err,
			         c->err);
		}
		policy_arc_tags_free(&t);
	}
}

static void test_tag_list_limit(void **state)
{
	struct util_buf b;
	struct policy_arc_tags t;
	char err[80];

	(void)state;
	util_buf_init(&b);
	for (int i = 0; i < POLICY_ARC_MAX_TAGS; i++)
		util_buf_printf(&b, "t%d=%d;", i, i);
	assert_int_equal(policy_arc_tags_parse(b.data, b.len, &t, err, sizeof(err)), 0);
	assert_int_equal(t.n, POLICY_ARC_MAX_TAGS);
	policy_arc_tags_free(&t);
	util_buf_adds(&b, "one=more");
	assert_int_equal(policy_arc_tags_parse(b.data, b.len, &t, err, sizeof(err)), -1);
	policy_arc_tags_free(&t);
	util_buf_free(&b);
}

/* ------------------------------------------------------------ header canon */

struct hdr_case {
	const char *raw;
	bool relaxed, crlf;
	const char *want;
};

static const struct hdr_case hdr_cases[] = {
    /* RFC 6376 3.4.5 */
    {"A: X\r\n", true, true, "a:X\r\n"},
    {"B : Y\t\r\n\tZ  \r\n", true, true, "b:Y Z\r\n"},
    {"B : Y\t\r\n\tZ  \r\n", false, true, "B : Y\t\r\n\tZ  \r\n"},
    {"Subject :  Hello   World \r\n", true, true, "subject:Hello World\r\n"},
    {"From: a\r\n\tb\r\n", true, false, "from:a b"},
    {"X-Empty:\r\n", true, true, "x-empty:\r\n"},
    {"X-Empty:   \r\n", true, true, "x-empty:\r\n"},
    {"ARC-Seal: i=1; b=\r\n", false, false, "ARC-Seal: i=1; b="},
};

static void test_header_canon(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
		const struct hdr_case *c = &hdr_cases[i];
		struct util_buf b;

		util_buf_init(&b);
		policy_arc_canon_header(&b, c->raw, strlen(c->raw), c->relaxed, c->crlf);
		if (b.len != strlen(c->want) || memcmp(b.data, c->want, b.len) != 0)
			fail_msg("case %zu: got \"%s\"", i, b.data ? b.data : "");
		util_buf_free(&b);
	}
}

struct strip_case {
	const char *raw, *want;
};

static const struct strip_case strip_cases[] = {
    {"ARC-Seal: i=1; b=abc\r\n def; d=x\r\n", "ARC-Seal: i=1; b=; d=x\r\n"},
    {"ARC-Seal: i=1; a=rsa-sha256;\r\n\tb=QUJD\r\n\t REVG==\r\n",
     "ARC-Seal: i=1; a=rsa-sha256;\r\n\tb=\r\n"},
    {"X: bh=abc; b=xyz", "X: bh=abc; b="},
    {"X: b = xyz ; c=1", "X: b =  ; c=1"},
};

static void test_strip_b(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(strip_cases) / sizeof(strip_cases[0]); i++) {
		size_t n = 0;
		char *s = policy_arc_strip_b(strip_cases[i].raw, strlen(strip_cases[i].raw), &n);
		assert_non_null(s);
		if (n != strlen(strip_cases[i].want) || strcmp(s, strip_cases[i].want) != 0)
			fail_msg("case %zu: got \"%s\"", i, s);
		free(s);
	}
	/* no b= (or an unparsable field): nothing to strip */
	size_t n;
	assert_null(policy_arc_strip_b("X: a=1", 6, &n));
	assert_null(policy_arc_strip_b("X: a=1; a=2; b=3", 16, &n));
}

/* ------------------------------------------------------------ body canon */

struct body_case {
	const char *in;
	bool relaxed;
	int64_t limit;
	const char *want; /* canonical form */
};

static const struct body_case body_cases[] = {
    /* RFC 6376 3.4.5 */
    {" C \r\nD \t E\r\n\r\n\r\n", true, -1, " C\r\nD E\r\n"},
    {" C \r\nD \t E\r\n\r\n\r\n", false, -1, " C \r\nD \t E\r\n"},
    {"", true, -1, ""},
    {"", false, -1, "\r\n"},
    {"\r\n\r\n", true, -1, ""},
    {"\r\n\r\n", false, -1, "\r\n"},
    {"  \r\n\t\r\n", true, -1, ""},
    {"abc", true, -1, "abc\r\n"},
    {"abc", false, -1, "abc\r\n"},
    {"a\rb\r\n", true, -1, "a\rb\r\n"},
    {"a\r\n\r\nb\r\n", true, -1, "a\r\n\r\nb\r\n"},
    {"line  one \r\n\r\n  two\r\n", true, -1, "line one\r\n\r\n two\r\n"},
    {"abcdef\r\n", true, 3, "abc"},
    {"abcdef\r\n", false, 0, ""},
};

/* sha256 - of a string. */
static void sha256(const char *s, unsigned char out[32])
{
	unsigned int n = 0;
	assert_int_equal(EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL), 1);
}

static void test_body_canon(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
		const struct body_case *c = &body_cases[i];
		unsigned char want[32], whole[32], bytewise[32];
		struct policy_arc_body *b;
		size_t len = strlen(c->in);

		sha256(c->want, want);
		b = policy_arc_body_new(c->relaxed, c->limit);
		policy_arc_body_update(b, c->in, len);
		assert_int_equal(policy_arc_body_final(b, whole), 0);
		policy_arc_body_free(b);
		/* the same one byte at a time: held-back CR, WSP and CRLF
		 * survive every cut */
		b = policy_arc_body_new(c->relaxed, c->limit);
		for (size_t k = 0; k < len; k++)
			policy_arc_body_update(b, c->in + k, 1);
		assert_int_equal(policy_arc_body_final(b, bytewise), 0);
		policy_arc_body_free(b);
		if (memcmp(whole, want, 32) != 0)
			fail_msg("case %zu: hash differs from the canonical form", i);
		assert_memory_equal(whole, bytewise, 32);
	}
	policy_arc_body_free(NULL);
}

/* ------------------------------------------------------------ header/body split */

/* The spool read back for a deferred seal: the header block (prefix kept
 * in front of it) and the body, however the reads cut it. */
struct split_case {
	const char *in, *hdr, *body;
	size_t max;
	int rc;
};

static const struct split_case split_cases[] = {
    {"From: a\r\nTo: b\r\n\r\nbody\r\n", "From: a\r\nTo: b\r\n", "body\r\n", 0, 0},
    {"From: a\r\n\r\n", "From: a\r\n", "", 0, 0},
    {"From: a\r\n\r\n\r\n\r\nx\r\n", "From: a\r\n", "\r\n\r\nx\r\n", 0, 0},
    {"\r\nbody only\r\n", "", "body only\r\n", 0, 0},               /* no field */
    {"\r\n", "", "", 0, 0},
    {"Subject: all header\r\n", "Subject: all header\r\n", "", 0, 0}, /* no empty line */
    {"A: 1\r\n folded\r\nB: 2\r\n\r\nx", "A: 1\r\n folded\r\nB: 2\r\n", "x", 0, 0},
    {"A: 1\r\nB: \r\r\n\r\nx", "A: 1\r\nB: \r\r\n", "x", 0, 0},  /* a CR before the CRLF */
    {"A: 1234567890\r\n\r\nx", "A: 1234567890\r\n", "x", 15, 0},    /* 15 bytes: the limit */
    {"A: 1234567890\r\nB: 1\r\n", NULL, NULL, 15, -1},              /* past it, no end */
};

static void test_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
		const struct split_case *c = &split_cases[i];
		size_t len = strlen(c->in);
		unsigned char want[32], got[32];
		struct policy_arc_body *b;

		if (c->rc == 0) {
			b = policy_arc_body_new(true, -1);
			policy_arc_body_update(b, c->body, strlen(c->body));
			assert_int_equal(policy_arc_body_final(b, want), 0);
			policy_arc_body_free(b);
		}
		/* every piece size, 1 byte to the whole message at once */
		for (size_t piece = 1; piece <= len; piece++) {
			struct util_buf h;
			struct policy_arc_split sp;
			int rc = 0;
			util_buf_init(&h);
			util_buf_adds(&h, "Prefix: ours\r\n");
			b = policy_arc_body_new(true, -1);
			policy_arc_split_init(&sp, &h, b, c->max);
			for (size_t off = 0; off < len && rc == 0; off += piece)
				rc = policy_arc_split_feed(&sp, c->in + off,
				                           len - off < piece ? len - off : piece);
			if (c->rc < 0) {
				if (rc != -1)
					fail_msg("case %zu piece %zu: the limit did not hold", i, piece);
			} else {
				if (rc != 0)
					fail_msg("case %zu piece %zu: refused", i, piece);
				assert_int_equal(h.len, strlen(h.data));
				assert_string_equal(h.data + strlen("Prefix: ours\r\n"), c->hdr);
				assert_int_equal(policy_arc_body_final(b, got), 0);
				if (memcmp(got, want, 32) != 0)
					fail_msg("case %zu piece %zu: body hash differs", i, piece);
			}
			policy_arc_body_free(b);
			util_buf_free(&h);
		}
	}
}

/* ------------------------------------------------------------ ARC sets */

#define AAR(i) "ARC-Authentication-Results: i=" #i "; lists.example; dmarc=pass\r\n"
#define AMS(i)                                                                                     \
	"ARC-Message-Signature: i=" #i "; a=rsa-sha256; d=x; s=y; h=from; bh=AA==; b=AA==\r\n"
#define AS(i, cv) "ARC-Seal: i=" #i "; a=rsa-sha256; cv=" cv "; d=x; s=y; b=AA==\r\n"

struct chain_case {
	const char *fields[8];
	bool fail;
	size_t n;
	const char *why;
	int max_seen;
};

static const struct chain_case chain_cases[] = {
    {{"From: a@b.example\r\n", "Subject: x\r\n"}, false, 0, NULL, 0},
    {{AS(1, "none"), AMS(1), AAR(1), "From: a@b.example\r\n"}, false, 1, NULL, 1},
    {{AS(2, "pass"), AMS(2), AAR(2), AS(1, "none"), AMS(1), AAR(1)}, false, 2, NULL, 2},
    {{"arc-seal : i=1; cv=none; b=AA==; d=x; s=y\r\n", AMS(1), AAR(1)}, false, 1, NULL, 1},
    {{AMS(1), AAR(1)}, true, 1, "missing", 1},
    {{AS(2, "pass"), AMS(2), AAR(2)}, true, 2, "missing", 2},
    {{AS(1, "none"), AMS(1), AMS(1), AAR(1)}, true, 1, "duplicate", 1},
    {{AS(11, "pass"), AMS(1), AAR(1)}, true, 1, "longer chain", 11},
    {{"ARC-Seal: i=0; cv=none; d=x; s=y; b=AA==\r\n"}, true, 0, "i=", 0},
    {{"ARC-Seal: i=51; cv=none; d=x; s=y; b=AA==\r\n"}, true, 0, "i=", 0},
    {{"ARC-Seal: i=01; cv=none; d=x; s=y; b=AA==\r\n"}, true, 0, "i=", 0},
    {{"ARC-Seal: i=1; cv=none; d=x; s=y; h=from; b=AA==\r\n", AMS(1), AAR(1)}, true, 1, "h=", 1},
    {{AS(1, "maybe"), AMS(1), AAR(1)}, true, 1, "cv=", 1},
    {{AS(1, "none"), AMS(1), "ARC-Authentication-Results: lists.example; dmarc=pass\r\n"},
     true,
     1,
     "i=",
     1},
    {{"ARC-Seal: i=1; i=1; cv=none; b=AA==\r\n", AMS(1), AAR(1)}, true, 1, "duplicate tag", 1},
};

static void test_chain_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(chain_cases) / sizeof(chain_cases[0]); i++) {
		const struct chain_case *c = &chain_cases[i];
		const char *f[8];
		size_t lens[8], n = 0;
		struct policy_arc_chain ch;

		for (; n < 8 && c->fields[n] != NULL; n++) {
			f[n] = c->fields[n];
			lens[n] = strlen(f[n]);
		}
		policy_arc_chain_parse(f, lens, n, &ch);
		if (ch.structural_fail != c->fail)
			fail_msg("case %zu: structural_fail=%d why=\"%s\"", i, ch.structural_fail,
			         ch.why);
		assert_int_equal(ch.n, c->n);
		assert_int_equal(ch.max_seen, c->max_seen);
		if (c->why != NULL && strstr(ch.why, c->why) == NULL)
			fail_msg("case %zu: why \"%s\" lacks \"%s\"", i, ch.why, c->why);
		if (!c->fail)
			for (size_t k = 0; k < ch.n; k++)
				for (int j = 0; j < 3; j++)
					assert_non_null(ch.sets[k].raw[j]);
		policy_arc_chain_free(&ch);
	}
}

/* ------------------------------------------------------------ ARC-A-R */

struct aar_case {
	const char *raw, *from;
	bool pass;
};

static const struct aar_case aar_cases[] = {
    {"ARC-Authentication-Results: i=1; lists.example; dmarc=pass header.from=b.example\r\n",
     "b.example", true},
    {"ARC-Authentication-Results: i=1; lists.example; spf=pass smtp.mailfrom=a@b.example;\r\n"
     "\tdmarc=pass (p=reject) header.from=B.Example\r\n",
     "b.example", true},
    {"ARC-Authentication-Results: i=1; lists.example; DMARC = pass\r\n", "b.example", true},
    {"ARC-Authentication-Results: i=1; lists.example; dmarc=pass header.from=c.example\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; dmarc=fail header.from=b.example\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; dmarc=passed\r\n", "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; spf=fail (dmarc=pass) "
     "header.from=b.example\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; x=y (a\\) dmarc=pass)\r\n", "b.example",
     false},
    {"ARC-Authentication-Results: i=1; lists.example; dkim=pass header.d=b.example\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; dmarc=pass header.from=b.example\r\n", NULL,
     false},
    /* red team: a ';' inside a quoted string (the attacker's local part
     * recorded in smtp.mailfrom) starts no clause */
    {"ARC-Authentication-Results: i=1; lists.example; spf=pass "
     "smtp.mailfrom=\"x;dmarc=pass \"@evil.example; dmarc=fail header.from=b.example\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; spf=pass "
     "smtp.mailfrom=\"x\\\";dmarc=pass \"@evil.example; dmarc=fail\r\n",
     "b.example", false},
    {"ARC-Authentication-Results: i=1; lists.example; spf=pass smtp.mailfrom=\"a;b\"@b.example;"
     " dmarc=pass header.from=b.example\r\n",
     "b.example", true},
};

static void test_aar_dmarc_pass(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(aar_cases) / sizeof(aar_cases[0]); i++) {
		const struct aar_case *c = &aar_cases[i];
		if (policy_arc_aar_dmarc_pass(c->raw, strlen(c->raw), c->from) != c->pass)
			fail_msg("case %zu: expected %s", i, c->pass ? "pass" : "no pass");
	}
}

/* ------------------------------------------------------------ key records */

struct key_case {
	const char *fmt; /* %s: the public key, base64 */
	bool ok;
	const char *why;
};

static const struct key_case key_cases[] = {
    {"v=DKIM1; k=ed25519; p=%s", true, NULL},
    {"k=ed25519; p=%s", true, NULL},
    {"v=DKIM1; k=ed25519; h=sha1:sha256; s=email; p=%s", true, NULL},
    {"v=DKIM1; k=ed25519; s=*; p=%s", true, NULL},
    {"v=DKIM1; k=ed25519; p=", false, "revoked"},
    {"v=DKIM2; k=ed25519; p=%s", false, "does not parse"},
    {"k=ed25519; v=DKIM1; p=%s", false, "does not parse"},
    {"v=DKIM1; k=ed25519; h=sha1; p=%s", false, "sha256"},
    {"v=DKIM1; k=ed25519; s=tlsrpt; p=%s", false, "email"},
    {"v=DKIM1; k=rsa; p=%s", false, "does not parse"},
    {"v=DKIM1; k=dsa; p=%s", false, "unknown key type"},
    {"v=DKIM1; k=ed25519; p=not*base64", false, "does not parse"},
    {"v=DKIM1; k=ed25519; k=rsa; p=%s", false, "does not parse"},
};

static void test_key_records(void **state)
{
	EVP_PKEY *priv = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	unsigned char raw[32];
	size_t rawlen = sizeof(raw);
	char *b64;

	(void)state;
	assert_non_null(priv);
	assert_int_equal(EVP_PKEY_get_raw_public_key(priv, raw, &rawlen), 1);
	b64 = policy_arc_b64(raw, rawlen);
	for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
		char rec[256];
		const char *why = NULL;
		EVP_PKEY *k;

		snprintf(rec, sizeof(rec), key_cases[i].fmt, b64);
		k = policy_arc_parse_key(rec, 1024, &why);
		if ((k != NULL) != key_cases[i].ok)
			fail_msg("case %zu \"%s\": %s", i, rec, why ? why : "parsed");
		if (k != NULL) {
			assert_null(why);
			assert_int_equal(EVP_PKEY_eq(k, priv), 1);
		} else if (strstr(why, key_cases[i].why) == NULL) {
			fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, why, key_cases[i].why);
		}
		EVP_PKEY_free(k);
	}
	free(b64);
	EVP_PKEY_free(priv);
}

/* test_sign_verify - our signatures verify with the public half, and not
 * after one byte of the data changes; rsa-sha256 and ed25519-sha256. */
static void test_sign_verify(void **state)
{
	const char *algs[] = {"RSA", "ED25519"};

	(void)state;
	for (int a = 0; a < 2; a++) {
		EVP_PKEY *k = a == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
		                     : EVP_PKEY_Q_keygen(NULL, NULL, algs[a]);
		struct util_buf data;
		char *sig;

		assert_non_null(k);
		util_buf_init(&data);
		util_buf_adds(&data, "arc-seal:i=1; a=x; b=");
		sig = policy_arc_sign(k, &data);
		assert_non_null(sig);
		assert_true(policy_arc_verify_sig(k, a, &data, sig));
		assert_false(policy_arc_verify_sig(k, 1 - a, &data, sig)); /* wrong a= */
		data.data[0] = 'A';
		assert_false(policy_arc_verify_sig(k, a, &data, sig));
		free(sig);
		util_buf_free(&data);
		EVP_PKEY_free(k);
	}
	assert_int_equal(policy_arc_alg("rsa-sha256"), 0);
	assert_int_equal(policy_arc_alg("ed25519-sha256"), 1);
	assert_int_equal(policy_arc_alg("rsa-sha1"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tag_list),       cmocka_unit_test(test_tag_list_limit),
	    cmocka_unit_test(test_header_canon),   cmocka_unit_test(test_strip_b),
	    cmocka_unit_test(test_body_canon),     cmocka_unit_test(test_chain_parse),
	    cmocka_unit_test(test_aar_dmarc_pass), cmocka_unit_test(test_key_records),
	    cmocka_unit_test(test_sign_verify),    cmocka_unit_test(test_split),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
