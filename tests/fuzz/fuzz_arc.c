/*
 * fuzz_arc.c - libFuzzer target: the ARC parsers of policy/policy-arc-parse.c
 * (RFC 8617 header sets, RFC 6376 tag-lists, canonicalisation, b= removal,
 * the ARC-Authentication-Results reading of the trusted-forwarder override),
 * which read header fields any sender controls before any signature has
 * been checked.
 *
 * Input: a header block (split into fields with util_hdr_next, as the
 * session does), then everything after the first empty line as a body.
 * Invariants besides memory safety:
 *  - a chain that is not a structural failure has every set 1..n complete,
 *    n <= POLICY_ARC_MAX_INSTANCES, and n <= the highest i= seen (<= 50);
 *  - a tag-list that parses has 1..POLICY_ARC_MAX_TAGS tags with unique
 *    names, each value is exactly the bytes at [voff, vend) and holds no
 *    ';'; parsing the same bytes again gives the same tags;
 *  - relaxed header canonicalisation gives a lower-case name, no CR/LF but
 *    the final CRLF, no two spaces in a row; doing it twice changes nothing;
 *  - b= removal never makes a field longer and keeps "b=";
 *  - the body hash does not depend on how the body is cut into pieces;
 *  - the header/body split of a deferred seal (policy_arc_split_*) gives
 *    the same header block and body hash whole, byte by byte and in 7-byte
 *    pieces; the header block is the input up to the first empty line (or
 *    all of it), the body everything after that line.
 */
#include <ctype.h>
#include <stdbool.h>

#include "fuzz-common.h"
#include "policy-arc.h"
#include "util.h"

/* check_tags - the tag-list invariants on one field value. */
static void check_tags(const char *v, size_t len)
{
	struct policy_arc_tags t, t2;
	char err[80];

	if (policy_arc_tags_parse(v, len, &t, err, sizeof(err)) == 0) {
		FUZZ_CHECK(t.n >= 1 && t.n <= POLICY_ARC_MAX_TAGS);
		for (size_t i = 0; i < t.n; i++) {
			FUZZ_CHECK(t.v[i].voff <= t.v[i].vend && t.v[i].vend <= len);
			FUZZ_CHECK(strlen(t.v[i].value) == t.v[i].vend - t.v[i].voff);
			FUZZ_CHECK(
			    memcmp(t.v[i].value, v + t.v[i].voff, t.v[i].vend - t.v[i].voff) == 0);
			FUZZ_CHECK(strchr(t.v[i].value, ';') == NULL);
			for (size_t k = i + 1; k < t.n; k++)
				FUZZ_CHECK(strcmp(t.v[i].name, t.v[k].name) != 0);
		}
		FUZZ_CHECK(policy_arc_tags_parse(v, len, &t2, err, sizeof(err)) == 0);
		FUZZ_CHECK(t2.n == t.n);
		for (size_t i = 0; i < t.n; i++)
			FUZZ_CHECK(strcmp(t.v[i].value, t2.v[i].value) == 0);
		policy_arc_tags_free(&t2);
	}
	policy_arc_tags_free(&t);
}

/* check_canon - relaxed header canonicalisation of one raw field. */
static void check_canon(const char *raw, size_t len)
{
	struct util_buf a, b;
	const char *colon;

	util_buf_init(&a);
	util_buf_init(&b);
	policy_arc_canon_header(&a, raw, len, true, true);
	FUZZ_CHECK(a.len >= 3 && memcmp(a.data + a.len - 2, "\r\n", 2) == 0);
	colon = memchr(a.data, ':', a.len);
	FUZZ_CHECK(colon != NULL);
	for (const char *p = a.data; p < colon; p++)
		FUZZ_CHECK(!isupper((unsigned char)*p) && *p != ' ' && *p != '\t');
	for (size_t i = 0; i + 2 < a.len; i++) {
		FUZZ_CHECK(a.data[i] != '\r' && a.data[i] != '\n');
		FUZZ_CHECK(!(a.data[i] == ' ' && a.data[i + 1] == ' '));
	}
	policy_arc_canon_header(&b, a.data, a.len, true, true);
	FUZZ_CHECK(b.len == a.len && memcmp(a.data, b.data, a.len) == 0);
	util_buf_free(&a);
	util_buf_free(&b);
}

/* split_with - the split of s[0..size) fed in pieces of piece bytes. */
static void split_with(const char *s, size_t size, size_t piece, struct util_buf *h,
                       unsigned char hash[32])
{
	struct policy_arc_body *b = policy_arc_body_new(true, -1);
	struct policy_arc_split sp;

	util_buf_init(h);
	util_buf_adds(h, "X: 1\r\n"); /* what is in front (the prepend) stays */
	policy_arc_split_init(&sp, h, b, 0);
	for (size_t off = 0; off < size; off += piece)
		FUZZ_CHECK(policy_arc_split_feed(&sp, s + off,
		                                 size - off < piece ? size - off : piece) == 0);
	FUZZ_CHECK(policy_arc_body_final(b, hash) == 0);
	policy_arc_body_free(b);
}

/* check_split - the deferred seal's header/body split. */
static void check_split(const char *s, size_t size, size_t hend, size_t body_at)
{
	struct util_buf h[3];
	unsigned char hash[3][32], want[32];
	const size_t pieces[3] = {size > 0 ? size : 1, 1, 7};
	struct policy_arc_body *b = policy_arc_body_new(true, -1);

	/* a block that starts with the empty line has no field at all */
	if (size >= 2 && s[0] == '\r' && s[1] == '\n') {
		hend = 0;
		body_at = 2;
	}
	policy_arc_body_update(b, s + body_at, size - body_at);
	FUZZ_CHECK(policy_arc_body_final(b, want) == 0);
	policy_arc_body_free(b);
	for (int k = 0; k < 3; k++) {
		split_with(s, size, pieces[k], &h[k], hash[k]);
		FUZZ_CHECK(h[k].len == 6 + hend && memcmp(h[k].data + 6, s, hend) == 0);
		FUZZ_CHECK(memcmp(hash[k], want, 32) == 0);
		util_buf_free(&h[k]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	const char *fields[256];
	size_t lens[256], nf = 0, pos = 0, body_at = size;
	struct util_hdr_field f;
	struct policy_arc_chain ch;
	const char *sep = NULL;

	for (size_t i = 0; i + 3 < size; i++)
		if (memcmp(s + i, "\r\n\r\n", 4) == 0) {
			sep = s + i;
			break;
		}
	if (sep != NULL)
		body_at = (size_t)(sep - s) + 4;
	while (nf < 256 && util_hdr_next(s, sep ? (size_t)(sep - s) + 2 : size, &pos, &f) == 1) {
		fields[nf] = f.raw;
		lens[nf++] = f.raw_len;
		check_tags(f.value, f.value_len);
		check_canon(f.raw, f.raw_len);
		(void)policy_arc_aar_dmarc_pass(f.raw, f.raw_len, "b.example");
		size_t sl = 0;
		char *st = policy_arc_strip_b(f.raw, f.raw_len, &sl);
		if (st != NULL) {
			FUZZ_CHECK(sl <= f.raw_len && strstr(st, "b") != NULL);
			free(st);
		}
	}
	policy_arc_chain_parse(fields, lens, nf, &ch);
	FUZZ_CHECK(ch.max_seen >= 0 && ch.max_seen <= 50);
	if (!ch.structural_fail) {
		FUZZ_CHECK(ch.n <= POLICY_ARC_MAX_INSTANCES && (int)ch.n <= ch.max_seen);
		for (size_t i = 0; i < ch.n; i++)
			for (int k = 0; k < 3; k++)
				FUZZ_CHECK(ch.sets[i].raw[k] != NULL);
	}
	policy_arc_chain_free(&ch);

	/* body: whole vs cut at every 7th byte, both canonicalisations */
	for (int relaxed = 0; relaxed < 2; relaxed++) {
		unsigned char h1[32], h2[32];
		struct policy_arc_body *b1 = policy_arc_body_new(relaxed, -1);
		struct policy_arc_body *b2 = policy_arc_body_new(relaxed, -1);
		policy_arc_body_update(b1, s + body_at, size - body_at);
		for (size_t i = body_at; i < size; i += 7)
			policy_arc_body_update(b2, s + i, size - i < 7 ? size - i : 7);
		FUZZ_CHECK(policy_arc_body_final(b1, h1) == 0 &&
		           policy_arc_body_final(b2, h2) == 0);
		FUZZ_CHECK(memcmp(h1, h2, 32) == 0);
		policy_arc_body_free(b1);
		policy_arc_body_free(b2);
	}
	check_split(s, size, sep != NULL ? (size_t)(sep - s) + 2 : size, body_at);
	free(s);
	return 0;
}
