/*
 * policy-mtasts.c - the pure parts of MTA-STS (RFC 8461) as a sending MTA
 * uses them: the _mta-sts TXT record (section 3.1), the policy file fetched
 * from https://mta-sts.DOMAIN/.well-known/mta-sts.txt (section 3.2), and
 * the match of an MX host name against the policy's mx patterns (section
 * 4.1).  Fetching and caching live with the deliverer (smtp/smtp-mtasts.c).
 *
 * Ownership: policy_mtasts_parse fills a struct policy_mtasts the caller
 * clears with policy_mtasts_clear(); policy_mtasts_copy makes an
 * independent copy.  Inputs are borrowed.
 *
 * Diagnostics: parse errors come back as one line in err ("line 3: bad
 * mode \"strict\""); nothing is logged.  The parser is total over arbitrary
 * bytes (fuzzed: tests/fuzz/fuzz_mtasts.c) and refuses input longer than
 * POLICY_MTASTS_MAX before looking at it.
 */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MTASTS_MAX_AGE_LIMIT 31557600 /* RFC 8461 3.2: at most one year */
#define MTASTS_MAX_MX        64       /* patterns kept; more is a broken policy */

/* mtasts_trim - [*s, *e) without leading/trailing blanks. */
static void mtasts_trim(const char **s, const char **e)
{
	while (*s < *e && (**s == ' ' || **s == '\t'))
		(*s)++;
	while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
		(*e)--;
}

/* mtasts_is_pattern - RFC 8461 3.2 mx value: a host name, or "*." and one. */
static bool mtasts_is_pattern(const char *s, size_t n)
{
	size_t i = 0, label = 0;

	if (n >= 2 && s[0] == '*' && s[1] == '.')
		i = 2;
	if (i == n || n > 253)
		return false;
	for (; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* policy_mtasts_clear - free what p owns and zero it. */
void policy_mtasts_clear(struct policy_mtasts *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nmx; i++)
		free(p->mx[i]);
	free(p->mx);
	memset(p, 0, sizeof(*p));
}

/* policy_mtasts_copy - deep copy of src into dst (dst is overwritten). */
void policy_mtasts_copy(struct policy_mtasts *dst, const struct policy_mtasts *src)
{
	*dst = *src;
	dst->mx = util_xcalloc(src->nmx + 1, sizeof(*dst->mx));
	for (size_t i = 0; i < src->nmx; i++)
		dst->mx[i] = util_xstrdup(src->mx[i]);
}

/* policy_mtasts_parse - RFC 8461 3.2 "key: value" lines (LF or CRLF).
 * version STSv1, mode and max_age are required, mx unless mode is none;
 * unknown keys are ignored (extensibility, 3.2). */
int policy_mtasts_parse(const char *text, size_t len, struct policy_mtasts *out, char *err,
                        size_t errlen)
{
	bool have_version = false, have_mode = false, have_age = false;
	const char *p = text, *end = text + len;
	int line = 0;

	memset(out, 0, sizeof(*out));
	if (len > POLICY_MTASTS_MAX) {
		snprintf(err, errlen, "policy longer than %d bytes", POLICY_MTASTS_MAX);
		return -1;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end, *colon, *ks, *ke, *vs, *ve;
		line++;
		ks = p;
		p = nl ? nl + 1 : end;
		if (memchr(ks, '\0', (size_t)(le - ks)) != NULL) {
			snprintf(err, errlen, "line %d: NUL byte", line);
			goto fail;
		}
		ke = le;
		mtasts_trim(&ks, &ke);
		if (ks == ke)
			continue;
		colon = memchr(ks, ':', (size_t)(ke - ks));
		if (colon == NULL) {
			snprintf(err, errlen, "line %d: no ':'", line);
			goto fail;
		}
		vs = colon + 1;
		ve = ke;
		ke = colon;
		mtasts_trim(&ks, &ke);
		mtasts_trim(&vs, &ve);
		size_t kn = (size_t)(ke - ks), vn = (size_t)(ve - vs);
		if (kn == 7 && memcmp(ks, "version", 7) == 0) {
			if (vn != 5 || memcmp(vs, "STSv1", 5) != 0) {
				snprintf(err, errlen, "line %d: unsupported version", line);
				goto fail;
			}
			have_version = true;
		} else if (kn == 4 && memcmp(ks, "mode", 4) == 0) {
			if (vn == 7 && memcmp(vs, "enforce", 7) == 0)
				out->mode = POLICY_MTASTS_ENFORCE;
			else if (vn == 7 && memcmp(vs, "testing", 7) == 0)
				out->mode = POLICY_MTASTS_TESTING;
			else if (vn == 4 && memcmp(vs, "none", 4) == 0)
				out->mode = POLICY_MTASTS_NONE;
			else {
				snprintf(err, errlen, "line %d: bad mode \"%.*s\"", line,
				         (int)(vn > 20 ? 20 : vn), vs);
				goto fail;
			}
			have_mode = true;
		} else if (kn == 7 && memcmp(ks, "max_age", 7) == 0) {
			int64_t v = 0;
			if (vn == 0 || vn > 10) {
				snprintf(err, errlen, "line %d: bad max_age", line);
				goto fail;
			}
			for (size_t i = 0; i < vn; i++) {
				if (vs[i] < '0' || vs[i] > '9') {
					snprintf(err, errlen, "line %d: bad max_age", line);
					goto fail;
				}
				v = v * 10 + (vs[i] - '0');
			}
			out->max_age = v > MTASTS_MAX_AGE_LIMIT ? MTASTS_MAX_AGE_LIMIT : v;
			have_age = true;
		} else if (kn == 2 && memcmp(ks, "mx", 2) == 0) {
			if (!mtasts_is_pattern(vs, vn)) {
				snprintf(err, errlen, "line %d: bad mx pattern", line);
				goto fail;
			}
			if (out->nmx >= MTASTS_MAX_MX) {
				snprintf(err, errlen, "line %d: more than %d mx patterns", line,
				         MTASTS_MAX_MX);
				goto fail;
			}
			out->mx = util_xrealloc(out->mx, (out->nmx + 1) * sizeof(*out->mx));
			out->mx[out->nmx] = util_xmalloc(vn + 1);
			memcpy(out->mx[out->nmx], vs, vn);
			out->mx[out->nmx][vn] = '\0';
			out->nmx++;
		}
	}
	if (!have_version || !have_mode || !have_age) {
		snprintf(err, errlen, "missing %s",
		         !have_version ? "version" : !have_mode ? "mode" : "max_age");
		goto fail;
	}
	if (out->nmx == 0 && out->mode != POLICY_MTASTS_NONE) {
		snprintf(err, errlen, "no mx pattern");
		goto fail;
	}
	return 0;
fail:
	policy_mtasts_clear(out);
	return -1;
}

/* policy_mtasts_mx_matches - RFC 8461 4.1: exact (case-insensitive, a
 * trailing dot ignored), or "*.suffix" matching exactly one more label. */
bool policy_mtasts_mx_matches(const struct policy_mtasts *p, const char *host)
{
	size_t hn = strlen(host);

	if (hn > 0 && host[hn - 1] == '.')
		hn--;
	for (size_t i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];
		size_t pn = strlen(pat);
		if (pn > 2 && pat[0] == '*' && pat[1] == '.') {
			const char *dot = memchr(host, '.', hn);
			if (dot == NULL || dot == host)
				continue;
			size_t rest = hn - (size_t)(dot + 1 - host);
			if (rest == pn - 2 && strncasecmp(dot + 1, pat + 2, rest) == 0)
				return true;
		} else if (pn == hn && strncasecmp(host, pat, hn) == 0) {
			return true;
		}
	}
	return false;
}

/* policy_mtasts_txt - RFC 8461 3.1: "v=STSv1; id=ID[; ext...]" with v first;
 * 0 and the id in id (1..32 alphanumerics), -1 when not such a record. */
int policy_mtasts_txt(const char *txt, char *id, size_t idlen)
{
	const char *p = txt;
	bool first = true, have_id = false;

	while (*p != '\0') {
		const char *semi = strchr(p, ';');
		const char *e = semi ? semi : p + strlen(p), *s = p, *eq;
		p = semi ? semi + 1 : e;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (s == e) {
			if (first)
				return -1;
			continue;
		}
		eq = memchr(s, '=', (size_t)(e - s));
		if (eq == NULL)
			return -1;
		if (first) {
			if (eq - s != 1 || s[0] != 'v' || e - eq - 1 != 5 || memcmp(eq + 1, "STSv1", 5) != 0)
				return -1;
			first = false;
			continue;
		}
		if (eq - s == 2 && memcmp(s, "id", 2) == 0) {
			size_t n = (size_t)(e - eq - 1);
			if (n == 0 || n > 32 || n + 1 > idlen)
				return -1;
			for (size_t i = 0; i < n; i++) {
				char c = eq[1 + i];
				if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				      (c >= '0' && c <= '9')))
					return -1;
			}
			memcpy(id, eq + 1, n);
			id[n] = '\0';
			have_id = true;
		}
	}
	return !first && have_id ? 0 : -1;
}
