/*
 * fuzz_idn.c - libFuzzer target: the IDN conversions of policy/policy-idn.c
 * (RFC 8616), fed the client's MAIL FROM domain, HELO name and the From:
 * domain of any message.
 *
 * Input: the name or address (NUL-terminated copy; bytes after a NUL are
 * ignored, as for the C strings the session hands over).
 * Invariants besides memory safety:
 *  - policy_idn_alabels gives NULL or a lower-case name of LDH/"_" labels
 *    of 1..63 octets, at most 253 octets, that converts to itself;
 *  - policy_idn_lookup_name gives an ASCII input back unchanged, else what
 *    policy_idn_alabels gives;
 *  - policy_idn_header_name / policy_idn_header_addr are ASCII only (they
 *    go into our header fields), the address keeps its '@'.
 */
#include "fuzz-common.h"
#include "policy-internal.h"

/* check_alabels - a valid A-label name. */
static void check_alabels(const char *a)
{
	size_t n = strlen(a), lab = 0;

	FUZZ_CHECK(n > 0 && n <= 253);
	for (size_t i = 0; i <= n; i++) {
		if (i == n || a[i] == '.') {
			FUZZ_CHECK(i > lab && i - lab <= 63);
			lab = i + 1;
			continue;
		}
		FUZZ_CHECK((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= '0' && a[i] <= '9') ||
		           a[i] == '-' || a[i] == '_');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	char *a = policy_idn_alabels(s);
	char *l = policy_idn_lookup_name(s);
	char *hn = policy_idn_header_name(s);
	char *ha = policy_idn_header_addr(s);

	if (a != NULL) {
		char *again = policy_idn_alabels(a);
		check_alabels(a);
		FUZZ_CHECK(again != NULL && strcmp(again, a) == 0);
		free(again);
	}
	if (policy_idn_is_ascii(s))
		FUZZ_CHECK(l != NULL && strcmp(l, s) == 0);
	else
		FUZZ_CHECK((l == NULL) == (a == NULL) && (l == NULL || strcmp(l, a) == 0));
	FUZZ_CHECK(hn != NULL && ha != NULL);
	FUZZ_CHECK(policy_idn_is_ascii(hn) && policy_idn_is_ascii(ha));
	FUZZ_CHECK((strchr(s, '@') != NULL) == (strchr(ha, '@') != NULL));
	free(a);
	free(l);
	free(hn);
	free(ha);
	free(s);
	return 0;
}
