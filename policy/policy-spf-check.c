/*
 * policy-spf-check.c - strict RFC 7208 record validation before libspf2
 * sees a record, and the normalized copy libspf2 evaluates.
 *
 * libspf2 1.2.10 compiles records more loosely than RFC 7208 section 12
 * (leading zeros in CIDR lengths, "a:" with no domain, bad macro escapes,
 * 8-bit text, redirect/exp given twice, ...); several of those end in a
 * false pass.  Every record fetched for evaluation (the policy, an include
 * or redirect target) goes through policy_spf_check_record() first; an
 * invalid record makes the whole evaluation a permerror (RFC 7208 4.6:
 * a syntax error anywhere in the record, even after a match).
 *
 * The normalized copy handed to libspf2 keeps the meaning and drops what
 * libspf2 gets wrong (docs/conformance.md lists each rewrite):
 *   - unknown modifiers are dropped (6: ignored; libspf2 refuses names
 *     with "_" or ".");
 *   - exp= is dropped (the explanation is never used by mxgate, and its
 *     lookup must not count as a DNS term, 4.6.4);
 *   - redirect= moves to the end, and is dropped when the record has an
 *     "all" mechanism (6.1);
 *   - ip4:X/0 and ip6:X/0 become two /1 halves (libspf2 refuses /0); on
 *     a/mx a zero length of the other family than the client's is dropped,
 *     and a/0 for an IPv4 client is exists (the same test);
 *   - the "R" transformer is written "r" (7.1: case-insensitive);
 *   - a digit transformer not smaller than the number of parts of the
 *     macro's value is dropped (7.3: all parts are used either way; libspf2
 *     gets it wrong); the delimiters "," and "/", which libspf2 refuses,
 *     are dropped when the value does not hold them (7.1).
 *
 * Ownership: *out is malloc'd, the caller frees it.  Pure, thread-safe.
 * Diagnostics: the reason of a refusal in err (for the A-R comment).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy-internal.h"

#define CHECK_FAIL(...)                                                                            \
	do {                                                                                       \
		snprintf(err, errlen, __VA_ARGS__);                                                \
		goto fail;                                                                         \
	} while (0)

/* check_in - c is one of set (never true for NUL, unlike strchr). */
static bool check_in(const char *set, char c)
{
	return c != 0 && strchr(set, c) != NULL;
}

/* check_is_alnum - ASCII letter or digit (not locale dependent). */
static bool check_is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* check_is_alpha - ASCII letter. */
static bool check_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* check_toplabel - RFC 7208 12 toplabel: alphanumeric, not all digits,
 * hyphens only inside. */
static bool check_toplabel(const char *p, size_t n)
{
	bool alpha = false;

	if (n == 0 || n > 63 || p[0] == '-' || p[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '-')
			alpha = true; /* 1*alphanum "-" ... alphanum form */
		else if (!check_is_alnum(p[i]))
			return false;
		else if (check_is_alpha(p[i]))
			alpha = true;
	}
	return alpha;
}

/* check_macro_value - the value of macro letter c, NULL when unknown. */
static const char *check_macro_value(const struct policy_spf_macro_ctx *mc, char c)
{
	if (mc == NULL)
		return NULL;
	switch (c) {
	case 's':
		return mc->s;
	case 'l':
		return mc->l;
	case 'o':
		return mc->o;
	case 'd':
		return mc->d;
	case 'i':
		return mc->i;
	case 'h':
		return mc->h;
	case 'v':
		return mc->v;
	default:
		return NULL;
	}
}

/* check_macro_string - RFC 7208 7.1 macro-string of p[0..n): 0 or -1.
 * exp_letters: c, r and t are allowed (explanation text, unknown
 * modifiers).  With out != NULL the text is appended there, the "R"
 * transformer lower-cased and a digit transformer not smaller than the
 * number of parts of the value (mc, may be NULL) dropped.  *ends_macro: the string ends with a
 * macro-expand. */
static int check_macro_string(const char *p, size_t n, bool exp_letters,
                              const struct policy_spf_macro_ctx *mc, struct util_buf *out,
                              bool *ends_macro, char *err, size_t errlen)
{
	size_t i = 0;

	*ends_macro = false;
	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		if (c != '%') {
			if (c < 0x21 || c > 0x7e)
				CHECK_FAIL("character 0x%02x not allowed", c);
			if (out != NULL)
				util_buf_add(out, p + i, 1);
			*ends_macro = false;
			i++;
			continue;
		}
		if (i + 1 >= n)
			CHECK_FAIL("'%%' at the end of a macro-string");
		if (p[i + 1] == '%' || p[i + 1] == '_' || p[i + 1] == '-') {
			if (out != NULL)
				util_buf_add(out, p + i, 2);
			*ends_macro = true;
			i += 2;
			continue;
		}
		if (p[i + 1] != '{')
			CHECK_FAIL("'%%%c' is not a macro", p[i + 1]);
		size_t j = i + 2;
		if (j >= n)
			CHECK_FAIL("unterminated macro");
		char letter = (char)tolower((unsigned char)p[j]);
		if (!check_in("slodiphv", letter) && !(exp_letters && check_in("crt", letter)))
			CHECK_FAIL("macro letter '%c' not allowed here", p[j]);
		size_t lpos = j++;
		size_t d0 = j;
		unsigned long num = 0;
		while (j < n && isdigit((unsigned char)p[j])) {
			if (num < 100000)
				num = num * 10 + (unsigned long)(p[j] - '0');
			j++;
		}
		size_t d1 = j;
		if (d1 > d0 && num == 0)
			CHECK_FAIL("macro transformer 0 (RFC 7208 7.3: must be nonzero)");
		bool rev = j < n && (p[j] == 'r' || p[j] == 'R');
		if (rev)
			j++;
		size_t s0 = j;
		while (j < n && check_in(".-+,/_=", p[j]))
			j++;
		size_t s1 = j;
		if (j >= n || p[j] != '}')
			CHECK_FAIL("bad macro syntax");
		if (out != NULL) {
			const char *val = check_macro_value(mc, letter);
			char set[8] = "", emit[8] = "";
			size_t ns = 0, ne = 0;
			bool keep_digits = d1 > d0;
			for (size_t k = s0; k < s1 && ns < 7; k++)
				if (strchr(set, p[k]) == NULL)
					set[ns++] = p[k];
			if (val == NULL) {
				memcpy(emit, set, sizeof(set));
			} else {
				/* libspf2 refuses ',' and '/' as delimiters: one
				 * the value does not hold splits nothing */
				for (size_t k = 0; k < ns; k++)
					if (!((set[k] == ',' || set[k] == '/') &&
					      strchr(val, set[k]) == NULL))
						emit[ne++] = set[k];
				/* none left: a delimiter absent from the value
				 * keeps it one part, as the dropped ones did */
				for (const char *dc = "-+_=."; ne == 0 && ns > 0 && *dc; dc++)
					if (strchr(val, *dc) == NULL)
						emit[ne++] = *dc;
				if (ne == 0)
					memcpy(emit, set, sizeof(set));
				/* libspf2 mangles a digit transformer not smaller
				 * than the number of parts; all parts is the same */
				unsigned long parts = 1;
				for (const char *v = val; *v; v++)
					parts += check_in(ns > 0 ? set : ".", *v);
				keep_digits = keep_digits && num < parts;
			}
			util_buf_add(out, p + i, 2);
			util_buf_add(out, p + lpos, 1);
			if (keep_digits)
				util_buf_add(out, p + d0, d1 - d0);
			if (rev)
				util_buf_adds(out, "r");
			util_buf_adds(out, emit);
			util_buf_adds(out, "}");
		}
		*ends_macro = true;
		i = j + 1;
	}
	return 0;
fail:
	return -1;
}

/* check_domain_spec - RFC 7208 12 domain-spec, plus what a literal name
 * needs to be a name at all (no empty label, labels of at most 63 octets).
 * Appended to out (normalized) when out != NULL. */
static int check_domain_spec(const char *p, size_t n, const struct policy_spf_macro_ctx *mc,
                             struct util_buf *out, char *err, size_t errlen)
{
	bool ends_macro;
	size_t lab = 0;

	if (n == 0)
		CHECK_FAIL("empty domain-spec");
	if (check_macro_string(p, n, false, mc, out, &ends_macro, err, errlen) < 0)
		return -1;
	/* literal labels: split on '.' outside macros (already checked, so
	 * every "%{" has its "}"); only a trailing dot may leave an empty
	 * label; a label holding a macro is checked after expansion */
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] == '%') {
			if (p[i + 1] == '{')
				i = (size_t)((const char *)memchr(p + i, '}', n - i) - p);
			else
				i++;
			continue;
		}
		if (i < n && p[i] != '.')
			continue;
		size_t len = i - lab;
		if (len == 0 && !(i == n && lab > 0))
			CHECK_FAIL("empty label in domain-spec");
		if (memchr(p + lab, '%', len) == NULL && len > 63)
			CHECK_FAIL("label longer than 63 octets in domain-spec");
		lab = i + 1;
	}
	if (ends_macro)
		return 0;
	/* domain-end = "." toplabel [ "." ] */
	size_t end = n;
	if (p[end - 1] == '.')
		end--;
	size_t dot = end;
	while (dot > 0 && p[dot - 1] != '.')
		dot--;
	if (dot == 0)
		CHECK_FAIL("domain-spec without a top-level label");
	if (memchr(p + dot, '%', end - dot) != NULL || !check_toplabel(p + dot, end - dot))
		CHECK_FAIL("bad top-level label in domain-spec");
	return 0;
fail:
	return -1;
}

/* check_cidr - "/" ( "0" / %x31-39 0*N DIGIT ), value <= max, at p[0..n). */
static int check_cidr(const char *p, size_t n, int max, int *val)
{
	int v = 0;

	if (n < 2 || p[0] != '/' || n > 4)
		return -1;
	if (p[1] == '0' && n != 2)
		return -1;
	for (size_t i = 1; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	if (v > max)
		return -1;
	*val = v;
	return 0;
}

/* check_dual_cidr - RFC 7208 12 dual-cidr-length of p[0..n) (may be
 * empty); the lengths into *c4, *c6 (-1: not given). */
static int check_dual_cidr(const char *p, size_t n, int *c4, int *c6)
{
	const char *v6 = NULL;

	for (size_t i = 0; i + 1 < n; i++)
		if (p[i] == '/' && p[i + 1] == '/') {
			v6 = p + i;
			break;
		}
	size_t n4 = v6 ? (size_t)(v6 - p) : n;
	*c4 = *c6 = -1;
	if (n4 > 0 && check_cidr(p, n4, 32, c4) < 0)
		return -1;
	if (v6 != NULL && check_cidr(v6 + 1, n - n4 - 1, 128, c6) < 0)
		return -1;
	return 0;
}

/* check_ip4 - RFC 7208 12 ip4-network: four qnums without leading zeros. */
static bool check_ip4(const char *p, size_t n)
{
	int parts = 0;
	size_t i = 0;

	while (i < n) {
		size_t s = i;
		int v = 0;
		while (i < n && isdigit((unsigned char)p[i]) && i - s < 4)
			v = v * 10 + (p[i++] - '0');
		if (i == s || i - s > 3 || (i - s > 1 && p[s] == '0') || v > 255)
			return false;
		parts++;
		if (i < n) {
			if (p[i] != '.' || i + 1 == n)
				return false;
			i++;
		}
	}
	return parts == 4;
}

/* check_ip6 - RFC 4291 2.2 text form (inet_pton), no zone id or brackets. */
static bool check_ip6(const char *p, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (n == 0 || n >= sizeof(buf))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)p[i]) && p[i] != ':' && p[i] != '.')
			return false;
	memcpy(buf, p, n);
	buf[n] = 0;
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/* check_modifier_name - RFC 7208 12 name = ALPHA *( ALPHA / DIGIT / "-" /
 * "_" / "." ); its length, or 0 when p does not start with "name=". */
static size_t check_modifier_name(const char *p, size_t n)
{
	size_t i = 0;

	if (n == 0 || !check_is_alpha(p[0]))
		return 0;
	while (i < n && (check_is_alnum(p[i]) || p[i] == '-' || p[i] == '_' || p[i] == '.'))
		i++;
	return i < n && p[i] == '=' ? i : 0;
}

/* check_term_is - the mechanism name m (case-insensitive) and what follows. */
static bool check_term_is(const char *p, size_t n, const char *m, const char **rest)
{
	size_t ml = strlen(m);

	if (n < ml || strncasecmp(p, m, ml) != 0)
		return false;
	if (n > ml && p[ml] != ':' && p[ml] != '/')
		return false;
	*rest = p + ml;
	return true;
}

/* policy_spf_check_record - validate one record (RFC 7208 4.5, 4.6, 12);
 * 0 and the normalized record in *out, or -1 and the reason in err. */
int policy_spf_check_record(const char *rec, size_t len, const struct policy_spf_macro_ctx *mc,
                            char **out, char *err, size_t errlen)
{
	struct util_buf b, redirect;
	bool has_all = false, has_redirect = false, has_exp = false;
	size_t i;

	*out = NULL;
	util_buf_init(&b);
	util_buf_init(&redirect);
	if (len < 6 || strncasecmp(rec, "v=spf1", 6) != 0 || (len > 6 && rec[6] != ' '))
		CHECK_FAIL("not an SPF version 1 record");
	util_buf_adds(&b, "v=spf1");
	i = 6;
	while (i < len) {
		if (rec[i] == ' ') {
			i++;
			continue;
		}
		size_t s = i;
		while (i < len && rec[i] != ' ')
			i++;
		const char *t = rec + s;
		size_t n = i - s;
		size_t nl = check_modifier_name(t, n);
		if (nl > 0) {
			const char *v = t + nl + 1;
			size_t vn = n - nl - 1;
			bool ends_macro;
			if (nl == 8 && strncasecmp(t, "redirect", 8) == 0) {
				if (has_redirect)
					CHECK_FAIL("redirect= given twice (RFC 7208 6)");
				has_redirect = true;
				util_buf_adds(&redirect, " redirect=");
				if (check_domain_spec(v, vn, mc, &redirect, err, errlen) < 0)
					goto fail;
			} else if (nl == 3 && strncasecmp(t, "exp", 3) == 0) {
				if (has_exp)
					CHECK_FAIL("exp= given twice (RFC 7208 6)");
				has_exp = true;
				if (check_domain_spec(v, vn, mc, NULL, err, errlen) < 0)
					goto fail;
			} else if (check_macro_string(v, vn, true, mc, NULL, &ends_macro, err,
			                              errlen) < 0) {
				goto fail;
			}
			continue;
		}
		/* directive = [ qualifier ] mechanism */
		char q = 0;
		if (n > 0 && check_in("+-~?", t[0])) {
			q = t[0];
			t++;
			n--;
		}
		const char *r;
		util_buf_adds(&b, " ");
		if (q)
			util_buf_add(&b, &q, 1);
		if (n == 3 && strncasecmp(t, "all", 3) == 0) {
			has_all = true;
			util_buf_adds(&b, "all");
		} else if (check_term_is(t, n, "include", &r) ||
		           check_term_is(t, n, "exists", &r)) {
			size_t rn = n - (size_t)(r - t);
			if (rn == 0 || r[0] != ':')
				CHECK_FAIL("%.*s needs a domain", (int)(r - t), t);
			util_buf_add(&b, t, (size_t)(r - t) + 1);
			if (check_domain_spec(r + 1, rn - 1, mc, &b, err, errlen) < 0)
				goto fail;
		} else if (check_term_is(t, n, "a", &r) || check_term_is(t, n, "mx", &r) ||
		           check_term_is(t, n, "ptr", &r)) {
			bool ptr = r - t == 3, is_a = r - t == 1;
			size_t rn = n - (size_t)(r - t);
			const char *slash = memchr(r, '/', rn);
			size_t dn = slash ? (size_t)(slash - r) : rn;
			size_t dstart;
			int c4 = -1, c6 = -1;
			if (slash != NULL && (ptr || check_dual_cidr(slash, rn - dn, &c4, &c6) < 0))
				CHECK_FAIL("bad CIDR length in '%.*s'", (int)n, t);
			util_buf_add(&b, t, (size_t)(r - t));
			dstart = b.len;
			if (dn > 0) { /* ":" domain-spec */
				util_buf_adds(&b, ":");
				if (check_domain_spec(r + 1, dn - 1, mc, &b, err, errlen) < 0)
					goto fail;
			}
			/* libspf2 refuses a zero length: the one of the other
			 * family is dropped; for IPv4, a/0 is exists (5.3, 5.7) */
			if (mc != NULL && mc->v != NULL) {
				bool client6 = strcmp(mc->v, "ip6") == 0;
				if (client6 ? c4 == 0 : c6 == 0)
					*(client6 ? &c4 : &c6) = -1;
				if (!client6 && c4 == 0 && is_a) {
					char *dom =
					    util_xstrdup(dn > 0 ? b.data + dstart + 1 : "%{d}");
					b.len = dstart - 1; /* drop "a" */
					b.data[b.len] = 0;
					util_buf_printf(&b, "exists:%s", dom);
					free(dom);
					c4 = c6 = -1; /* exists takes no length */
				}
			}
			if (c4 >= 0)
				util_buf_printf(&b, "/%d", c4);
			if (c6 >= 0)
				util_buf_printf(&b, "//%d", c6);
		} else if (check_term_is(t, n, "ip4", &r) || check_term_is(t, n, "ip6", &r)) {
			bool v6 = t[2] == '6';
			size_t rn = n - (size_t)(r - t);
			if (rn == 0 || r[0] != ':')
				CHECK_FAIL("%.3s needs an address", t);
			const char *a = r + 1;
			size_t an = rn - 1;
			const char *slash = memchr(a, '/', an);
			size_t addrn = slash ? (size_t)(slash - a) : an;
			int cidr = v6 ? 128 : 32;
			if (v6 ? !check_ip6(a, addrn) : !check_ip4(a, addrn))
				CHECK_FAIL("bad address in '%.*s'", (int)n, t);
			if (slash != NULL &&
			    check_cidr(slash, an - addrn, v6 ? 128 : 32, &cidr) < 0)
				CHECK_FAIL("bad CIDR length in '%.*s'", (int)n, t);
			if (cidr == 0) {
				/* libspf2 refuses /0: the two halves match the same */
				char qs[2] = {q, 0};
				util_buf_printf(&b, "%s %s%s", v6 ? "ip6:::/1" : "ip4:0.0.0.0/1",
				                qs, v6 ? "ip6:8000::/1" : "ip4:128.0.0.0/1");
			} else {
				util_buf_add(&b, t, n);
			}
		} else {
			CHECK_FAIL("unknown mechanism '%.*s'", (int)(n > 40 ? 40 : n), t);
		}
	}
	/* RFC 7208 6.1: redirect is ignored when there is an "all" */
	if (has_redirect && !has_all)
		util_buf_add(&b, redirect.data, redirect.len);
	util_buf_free(&redirect);
	*out = b.data != NULL ? b.data : util_xstrdup("v=spf1");
	return 0;
fail:
	util_buf_free(&b);
	util_buf_free(&redirect);
	return -1;
}

/* policy_spf_name_ok - a name that can be looked up (RFC 7208 4.3: no label
 * over 63 octets, no empty label but a final one, more than one label;
 * RFC 8616 4: no octet over 0x7f - the identity's U-labels are A-labels by
 * now, and a term whose %{s} / %{l} holds a UTF-8 local-part matches
 * nothing, so such a name is never sent to the DNS). */
bool policy_spf_name_ok(const char *name)
{
	size_t n = name != NULL ? strlen(name) : 0, lab = 0;
	int labels = 0;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && (unsigned char)name[i] >= 0x80)
			return false;
		if (i < n && name[i] != '.')
			continue;
		if (i == lab || i - lab > 63)
			return false;
		labels++;
		lab = i + 1;
	}
	return labels >= 2;
}
