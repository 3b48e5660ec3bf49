/*
 * fuzz_spf_record.c - libFuzzer target: the strict SPF record validator
 * and normalizer (policy/policy-spf-check.c), which reads TXT records any
 * domain publishes, and policy_spf_name_ok (names from macro expansion).
 *
 * Input: byte 0 picks the macro context (bit 0: values known, as on the
 * live path; otherwise none); the rest is the record (may hold NULs: the
 * length, not a NUL, bounds it).
 * Invariants besides memory safety:
 *  - a refusal returns -1, *out NULL and a non-empty reason;
 *  - an accepted record normalizes to "v=spf1" followed by single-space
 *    separated terms of printable ASCII, no longer than 4 times the input
 *    (the /0 split is the only growth) plus a constant;
 *  - the normalized record is accepted again and normalizes to itself
 *    (what libspf2 evaluates is stable and valid by mxgate's rules);
 *  - it never holds an exp= or an unknown modifier, and a redirect= only
 *    as its last term and only without an "all" mechanism.
 */
#include <strings.h>

#include "fuzz-common.h"
#include "policy-internal.h"

/* check_normal - the invariants of one normalized record */
static void check_normal(const char *s, size_t inlen)
{
	size_t n = strlen(s);
	const char *redir;

	FUZZ_CHECK(strncmp(s, "v=spf1", 6) == 0);
	FUZZ_CHECK(n <= 6 + 4 * inlen + 64);
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(s[i] >= 0x20 && s[i] < 0x7f);
		if (s[i] == ' ')
			FUZZ_CHECK(i + 1 < n && s[i + 1] != ' ');
	}
	FUZZ_CHECK(strcasestr(s, " exp=") == NULL);
	redir = strcasestr(s, " redirect=");
	if (redir != NULL) {
		FUZZ_CHECK(strchr(redir + 1, ' ') == NULL);
		/* no "all" mechanism among the terms */
		for (const char *t = s + 6; *t == ' ';) {
			const char *e = strchr(t + 1, ' ');
			size_t tl = e ? (size_t)(e - t - 1) : strlen(t + 1);
			const char *m = t + 1;
			if (tl > 0 && strchr("+-~?", *m) != NULL) {
				m++;
				tl--;
			}
			FUZZ_CHECK(!(tl == 3 && strncasecmp(m, "all", 3) == 0));
			if (e == NULL)
				break;
			t = e;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct policy_spf_macro_ctx mc = {
	    .s = "strong-bad@mail.example.com",
	    .l = "strong-bad",
	    .o = "mail.example.com",
	    .d = "a.b.example.com",
	    .i = "192.0.2.3",
	    .h = "helo.example.net",
	    .v = "in-addr",
	};
	char err[200], err2[200], *out = NULL, *again = NULL;
	char *rec;
	size_t n;
	int rc;

	if (size < 1)
		return 0;
	n = size - 1;
	rec = fuzz_strdup(data + 1, n);
	(void)policy_spf_name_ok(rec);
	err[0] = 0;
	rc = policy_spf_check_record(rec, n, (data[0] & 1) ? &mc : NULL, &out, err, sizeof(err));
	if (rc != 0) {
		FUZZ_CHECK(rc == -1 && out == NULL && err[0] != 0);
		goto done;
	}
	FUZZ_CHECK(out != NULL);
	check_normal(out, n);
	/* stable: the normalized record is valid and its own normal form
	 * (without values: the digit rule already applied) */
	err2[0] = 0;
	FUZZ_CHECK(policy_spf_check_record(out, strlen(out), NULL, &again, err2, sizeof(err2)) ==
	           0);
	FUZZ_CHECK(strcmp(out, again) == 0);
done:
	free(again);
	free(out);
	free(rec);
	return 0;
}
