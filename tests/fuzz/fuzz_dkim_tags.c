/*
 * fuzz_dkim_tags.c - libFuzzer target: mxgate's DKIM layer over outside
 * input (policy/policy-dkim-strict.c): the RFC 6376 3.2 tag-list parser run
 * on every DKIM-Signature field and key record, the h= counter, the key
 * type check and the canonical body length counter behind the l= check.
 *
 * Input: the whole input is a tag-list and also a body.
 * Invariants besides memory safety:
 *  - the result is 0 or -1; every tag name starts with a letter and lies in
 *    the input, every value lies in the input and has no ';';
 *  - on 0 no two tags share a name, and a second parse gives the same tags;
 *    tags_get finds the first of a name;
 *  - h= counts are >= 0 and the count of a tag value in itself is
 *    consistent (never above the number of ':' + 1);
 *  - the key type check answers 0 or -1;
 *  - body lengths: the same for one piece and for a split at every point
 *    derived from the input; simple >= 2, relaxed <= simple, simple <=
 *    input length + 2.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "policy-internal.h"

static bool inside(const char *p, size_t n, const char *s, size_t len)
{
	return p >= s && p + n <= s + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	char *s = fuzz_strdup(data, size);
	struct policy_dkim_tags t, t2;
	char err[256];
	int rc = policy_dkim_tags_parse(s, size, &t, err, sizeof(err));

	FUZZ_CHECK(rc == 0 || rc == -1);
	for (size_t i = 0; i < t.n; i++) {
		const struct policy_dkim_tag *g = &t.v[i];
		FUZZ_CHECK(g->name_len > 0 && inside(g->name, g->name_len, s, size));
		FUZZ_CHECK((g->name[0] >= 'a' && g->name[0] <= 'z') ||
		           (g->name[0] >= 'A' && g->name[0] <= 'Z'));
		FUZZ_CHECK(g->value_len == 0 || inside(g->value, g->value_len, s, size));
		FUZZ_CHECK(memchr(g->value, ';', g->value_len) == NULL);
	}
	if (rc == 0) {
		for (size_t i = 0; i < t.n; i++) {
			for (size_t j = i + 1; j < t.n; j++)
				FUZZ_CHECK(t.v[i].name_len != t.v[j].name_len ||
				           memcmp(t.v[i].name, t.v[j].name, t.v[i].name_len) != 0);
			char name[64];
			if (t.v[i].name_len < sizeof(name)) {
				memcpy(name, t.v[i].name, t.v[i].name_len);
				name[t.v[i].name_len] = 0;
				FUZZ_CHECK(policy_dkim_tags_get(&t, name) == &t.v[i]);
			}
		}
		FUZZ_CHECK(policy_dkim_tags_parse(s, size, &t2, err, sizeof(err)) == 0);
		FUZZ_CHECK(t2.n == t.n);
		for (size_t i = 0; i < t.n; i++)
			FUZZ_CHECK(t2.v[i].name == t.v[i].name && t2.v[i].value == t.v[i].value &&
			           t2.v[i].value_len == t.v[i].value_len);
		policy_dkim_tags_free(&t2);

		const struct policy_dkim_tag *h = policy_dkim_tags_get(&t, "h");
		if (h != NULL) {
			size_t colons = 0;
			for (size_t i = 0; i < h->value_len; i++)
				colons += h->value[i] == ':';
			int c = policy_dkim_hlist_count(h->value, h->value_len, "from");
			FUZZ_CHECK(c >= 0 && (size_t)c <= colons + 1);
		}
		const struct policy_dkim_tag *a = policy_dkim_tags_get(&t, "a");
		if (a != NULL) {
			int k =
			    policy_dkim_key_alg_check(&t, a->value, a->value_len, err, sizeof(err));
			FUZZ_CHECK(k == 0 || k == -1);
		}
	}
	policy_dkim_tags_free(&t);

	/* body lengths: one piece vs a split */
	struct policy_dkim_bodylen b1, b2;
	int64_t s1, r1, s2, r2;
	size_t cut = size > 0 ? data[0] % (size + 1) : 0;
	memset(&b1, 0, sizeof(b1));
	memset(&b2, 0, sizeof(b2));
	policy_dkim_bodylen_feed(&b1, s, size);
	policy_dkim_bodylen_end(&b1, &s1, &r1);
	policy_dkim_bodylen_feed(&b2, s, cut);
	policy_dkim_bodylen_feed(&b2, s + cut, size - cut);
	policy_dkim_bodylen_end(&b2, &s2, &r2);
	FUZZ_CHECK(s1 == s2 && r1 == r2);
	FUZZ_CHECK(s1 >= 2 && r1 >= 0 && r1 <= s1 && s1 <= (int64_t)size + 2);
	free(s);
	return 0;
}
