/*
 * policy-dkim-strict.c - what mxgate checks around libopendkim (RFC 6376):
 * its own DKIM tag-list parser (RFC 6376 3.2) for DKIM-Signature fields and
 * key records, the key type against the signature algorithm (3.6.1), the
 * canonicalised body length behind an l= tag (3.4.3/3.4.4, 8.2) and extra
 * instances of signed single-use header fields (8.15).
 *
 * libopendkim 2.11 keeps the last of two same-named tags and never checks k=
 * against a=; both gave false passes.  The l= and extra-instance checks are
 * what the letter of RFC 6376 allows to pass but are known attacks: with
 * [auth] dkim_strict they turn a pass into "policy" with the reason.
 * docs/conformance.md "## DKIM" lists each override.
 *
 * Ownership: parsed tags point into the caller's text (borrowed); a
 * struct policy_dkim_tags is released with policy_dkim_tags_free().
 * Everything here is pure and thread-agnostic; the glue is in
 * policy-dkim.c (worker thread).
 * Diagnostics: reasons go into caller-supplied buffers, nothing is logged.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy-internal.h"

/* RFC 5322 3.6 (at most one each) and RFC 2045 (one MIME header set). */
static const char *const single_use[POLICY_DKIM_NSINGLE] = {
    "Date",         "From",
    "Sender",       "Reply-To",
    "To",           "Cc",
    "Bcc",          "Message-ID",
    "In-Reply-To",  "References",
    "Subject",      "MIME-Version",
    "Content-Type", "Content-Transfer-Encoding"};

/* is_wsp - RFC 5234 WSP. */
static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* skip_fws - past [FWS] (RFC 5322 3.2.2: CRLF only when WSP follows). */
static size_t skip_fws(const char *s, size_t len, size_t i)
{
	for (;;) {
		if (i < len && is_wsp(s[i]))
			i++;
		else if (i + 2 < len && s[i] == '\r' && s[i + 1] == '\n' && is_wsp(s[i + 2]))
			i += 3;
		else
			return i;
	}
}

/* policy_dkim_tags_free - release the tag array (NULL-safe). */
void policy_dkim_tags_free(struct policy_dkim_tags *t)
{
	if (t == NULL)
		return;
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

/* policy_dkim_tags_parse - RFC 6376 3.2 tag-list. */
int policy_dkim_tags_parse(const char *s, size_t len, struct policy_dkim_tags *out, char *err,
                           size_t errlen)
{
	size_t cap = 1, i = 0;
	int rc = 0;

	out->v = NULL;
	out->n = 0;
	for (size_t k = 0; k < len; k++)
		cap += s[k] == ';';
	out->v = util_xcalloc(cap, sizeof(*out->v));
	while (i < len) {
		struct policy_dkim_tag t;
		size_t e;

		i = skip_fws(s, len, i);
		if (i >= len)
			break;
		/* an empty tag-spec (";;", or white space after the last ';')
		 * is tolerated: it cannot hide or repeat a tag */
		if (s[i] == ';') {
			i++;
			continue;
		}
		if (!isalpha((unsigned char)s[i])) {
			snprintf(err, errlen, "bad tag name at offset %zu", i);
			return -1;
		}
		t.name = s + i;
		while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		t.name_len = (size_t)(s + i - t.name);
		i = skip_fws(s, len, i);
		if (i >= len || s[i] != '=') {
			snprintf(err, errlen, "tag %.*s has no '='", (int)t.name_len, t.name);
			return -1;
		}
		i = skip_fws(s, len, i + 1);
		for (e = i; e < len && s[e] != ';'; e++)
			if ((unsigned char)s[e] < 0x20 && s[e] != '\t' && s[e] != '\r' &&
			    s[e] != '\n') {
				snprintf(err, errlen, "control character in tag %.*s",
				         (int)t.name_len, t.name);
				return -1;
			}
		t.value = s + i;
		t.value_len = e - i;
		while (t.value_len > 0 && isspace((unsigned char)t.value[t.value_len - 1]))
			t.value_len--;
		/* RFC 6376 3.2: a repeated tag name makes the whole list invalid
		 * (names are case-sensitive).  Keep parsing, so the caller still
		 * sees every value (e.g. to identify the signature by b=). */
		for (size_t k = 0; k < out->n; k++)
			if (out->v[k].name_len == t.name_len &&
			    memcmp(out->v[k].name, t.name, t.name_len) == 0 && rc == 0) {
				snprintf(err, errlen, "duplicate tag %.*s=, RFC 6376 3.2",
				         (int)t.name_len, t.name);
				rc = -1;
			}
		out->v[out->n++] = t;
		i = e < len ? e + 1 : e;
	}
	return rc;
}

/* policy_dkim_tags_get - the first tag called name, or NULL. */
const struct policy_dkim_tag *policy_dkim_tags_get(const struct policy_dkim_tags *t,
                                                   const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; t != NULL && i < t->n; i++)
		if (t->v[i].name_len == n && memcmp(t->v[i].name, name, n) == 0)
			return &t->v[i];
	return NULL;
}

/* policy_dkim_hlist_count - how often field name appears in an h= value
 * (colon-separated, FWS allowed around names, case-insensitive). */
int policy_dkim_hlist_count(const char *h, size_t hlen, const char *name)
{
	size_t nlen = strlen(name), i = 0;
	int count = 0;

	while (i <= hlen) {
		size_t e = i, a, b;

		while (e < hlen && h[e] != ':')
			e++;
		a = i;
		b = e;
		while (a < b && isspace((unsigned char)h[a]))
			a++;
		while (b > a && isspace((unsigned char)h[b - 1]))
			b--;
		if (b - a == nlen && strncasecmp(h + a, name, nlen) == 0)
			count++;
		i = e + 1;
	}
	return count;
}

/* policy_dkim_key_alg_check - RFC 6376 3.6.1: the key type (k=, default
 * "rsa") must be the one a= names ("rsa-sha256" -> rsa, "ed25519-sha256"
 * -> ed25519, RFC 8463 3). */
int policy_dkim_key_alg_check(const struct policy_dkim_tags *key, const char *a, size_t alen,
                              char *err, size_t errlen)
{
	const struct policy_dkim_tag *k = policy_dkim_tags_get(key, "k");
	const char *kt = k != NULL ? k->value : "rsa";
	size_t klen = k != NULL ? k->value_len : 3;
	size_t atype = 0;

	while (atype < alen && a[atype] != '-')
		atype++;
	if (atype == klen && strncasecmp(a, kt, klen) == 0)
		return 0;
	snprintf(err, errlen, "key type k=%.*s%s does not match a=%.*s, RFC 6376 3.6.1",
	         (int)(klen > 32 ? 32 : klen), kt, k == NULL ? " by default" : "",
	         (int)(alen > 32 ? 32 : alen), a);
	return -1;
}

/* policy_dkim_single_use_index - index of a single-use field name in
 * single_use[], or -1. */
int policy_dkim_single_use_index(const char *name, size_t len)
{
	for (int i = 0; i < POLICY_DKIM_NSINGLE; i++)
		if (strlen(single_use[i]) == len && strncasecmp(single_use[i], name, len) == 0)
			return i;
	return -1;
}

/* policy_dkim_single_use_name - the canonical spelling of index i. */
const char *policy_dkim_single_use_name(int i)
{
	return i >= 0 && i < POLICY_DKIM_NSINGLE ? single_use[i] : "";
}

/* One canonicalisation's length counter: committed bytes, pending empty
 * lines (dropped if nothing follows, RFC 6376 3.4.3/3.4.4), the current
 * line's length so far. */
static void bl_line_end(int64_t *total, int64_t *pend, int64_t *line)
{
	if (*line == 0) {
		(*pend)++;
	} else {
		*total += *pend * 2 + *line + 2;
		*pend = 0;
	}
	*line = 0;
}

/* bl_byte - one content byte (not part of a CRLF line end). */
static void bl_byte(struct policy_dkim_bodylen *b, char c)
{
	b->s_line++;
	if (is_wsp(c)) {
		b->r_wsp = true; /* relaxed: a WSP run counts once (as SP), and
		                  * only when something follows on the line */
		return;
	}
	if (b->r_wsp)
		b->r_line++;
	b->r_wsp = false;
	b->r_line++;
}

/* policy_dkim_bodylen_feed - count the simple and relaxed canonical lengths
 * of body bytes (CRLF line ends), in any chunking. */
void policy_dkim_bodylen_feed(struct policy_dkim_bodylen *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				bl_line_end(&b->simple, &b->s_pend, &b->s_line);
				/* relaxed: trailing WSP is removed */
				b->r_wsp = false;
				bl_line_end(&b->relaxed, &b->r_pend, &b->r_line);
				continue;
			}
			bl_byte(b, '\r');
		}
		if (c == '\r')
			b->cr = true;
		else
			bl_byte(b, c);
	}
}

/* policy_dkim_bodylen_end - the lengths of the whole body: an unfinished
 * last line gets its CRLF; an empty body is CRLF (simple) or empty
 * (relaxed). */
void policy_dkim_bodylen_end(struct policy_dkim_bodylen *b, int64_t *simple, int64_t *relaxed)
{
	struct policy_dkim_bodylen c = *b;

	if (c.cr) {
		c.cr = false;
		bl_byte(&c, '\r');
	}
	if (c.s_line > 0)
		bl_line_end(&c.simple, &c.s_pend, &c.s_line);
	c.r_wsp = false;
	if (c.r_line > 0)
		bl_line_end(&c.relaxed, &c.r_pend, &c.r_line);
	*simple = c.simple == 0 ? 2 : c.simple;
	*relaxed = c.relaxed;
}
