/*
 * policy-arc-parse.c - the pure parts of ARC (RFC 8617): the strict
 * RFC 6376 3.2 tag-list parser, header and body canonicalisation (RFC 6376
 * 3.4, the algorithms ARC reuses, RFC 8617 4.1.2/5.1.1), the removal of the
 * b= value from a signature field, and the grouping of a message's ARC
 * header fields into sets by instance (RFC 8617 4.1, 5.2 steps 1-4).
 *
 * No DNS, no keys, no threads: this is what tests/fuzz/fuzz_arc.c and the
 * unit tests drive with arbitrary input.  Every parser is bounded:
 * POLICY_ARC_MAX_TAGS tags, tag names < 16 bytes, POLICY_ARC_MAX_INSTANCES
 * sets; the values themselves are bounded by the header block
 * (max_header_size).
 *
 * Ownership: tag values are malloc'd (policy_arc_tags_free); a chain points
 * into the caller's header fields and owns only its tags.
 * Diagnostics: reasons in err / chain->why, never logged here.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "policy-arc.h"

/* ------------------------------------------------------------ tag-list */

/* arc_skip_fws - past [FWS]; *bad on a CR or LF that is not folding. */
static size_t arc_skip_fws(const char *s, size_t len, size_t i, bool *bad)
{
	while (i < len) {
		if (s[i] == ' ' || s[i] == '\t') {
			i++;
		} else if (s[i] == '\r' && i + 2 < len && s[i + 1] == '\n' &&
		           (s[i + 2] == ' ' || s[i + 2] == '\t')) {
			i += 2;
		} else {
			if (s[i] == '\r' || s[i] == '\n')
				*bad = true;
			break;
		}
	}
	return i;
}

/* policy_arc_tags_free - the values. */
void policy_arc_tags_free(struct policy_arc_tags *t)
{
	for (size_t i = 0; t != NULL && i < t->n; i++)
		free(t->v[i].value);
	if (t != NULL)
		t->n = 0;
}

/* policy_arc_tags_parse - strict tag-list (RFC 6376 3.2). */
int policy_arc_tags_parse(const char *s, size_t len, struct policy_arc_tags *out, char *err,
                          size_t errlen)
{
	size_t i = 0;
	bool bad = false;

	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t start, nlen, vstart, vend;
		struct policy_arc_tag *t;

		i = arc_skip_fws(s, len, i, &bad);
		if (bad)
			goto bad_fws;
		if (i == len) {
			if (out->n == 0) {
				snprintf(err, errlen, "empty tag-list");
				return -1;
			}
			return 0; /* after a trailing ';' */
		}
		start = i;
		if (!isalpha((unsigned char)s[i])) {
			snprintf(err, errlen, "tag name must start with a letter");
			return -1;
		}
		while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		nlen = i - start;
		if (nlen >= sizeof(out->v[0].name)) {
			snprintf(err, errlen, "tag name too long");
			return -1;
		}
		i = arc_skip_fws(s, len, i, &bad);
		if (bad)
			goto bad_fws;
		if (i == len || s[i] != '=') {
			snprintf(err, errlen, "tag %.*s without '='", (int)(i - start), s + start);
			return -1;
		}
		i = arc_skip_fws(s, len, i + 1, &bad);
		if (bad)
			goto bad_fws;
		vstart = vend = i;
		while (i < len && s[i] != ';') {
			unsigned char c = (unsigned char)s[i];

			if (c == ' ' || c == '\t') {
				i++;
			} else if (c == '\r') {
				if (!(i + 2 < len && s[i + 1] == '\n' &&
				      (s[i + 2] == ' ' || s[i + 2] == '\t')))
					goto bad_fws;
				i += 2;
			} else if (c >= 0x21 && c <= 0x7e) {
				vend = ++i;
			} else {
				snprintf(err, errlen, "byte 0x%02x in a tag value", c);
				return -1;
			}
		}
		if (out->n == POLICY_ARC_MAX_TAGS) {
			snprintf(err, errlen, "more than %d tags", POLICY_ARC_MAX_TAGS);
			return -1;
		}
		t = &out->v[out->n];
		memcpy(t->name, s + start, nlen);
		t->name[nlen] = 0;
		if (policy_arc_tag(out, t->name) != NULL) {
			/* RFC 6376 3.2: duplicate tag names MUST be an error */
			snprintf(err, errlen, "duplicate tag %s", t->name);
			return -1;
		}
		t->value = util_xstrndup(s + vstart, vend - vstart);
		t->voff = vstart;
		t->vend = vend;
		out->n++;
		if (i == len)
			return 0;
		i++; /* ';' */
	}
bad_fws:
	snprintf(err, errlen, "CR or LF that is not folding");
	return -1;
}

/* policy_arc_tag - value of a tag (names are case-sensitive, RFC 6376 3.2). */
const char *policy_arc_tag(const struct policy_arc_tags *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].value != NULL && strcmp(t->v[i].name, name) == 0)
			return t->v[i].value;
	return NULL;
}

/* ------------------------------------------------------------ canonicalisation */

/* policy_arc_canon_header - relaxed (lower-case name, unfolded, WSP runs
 * as one SP, none around the colon or at the end) or simple. */
void policy_arc_canon_header(struct util_buf *out, const char *raw, size_t len, bool relaxed,
                             bool crlf)
{
	const char *colon;
	size_t i, end = len;
	bool wsp = false, any = false;

	if (end >= 2 && raw[end - 2] == '\r' && raw[end - 1] == '\n')
		end -= 2;
	if (!relaxed) {
		util_buf_add(out, raw, end);
		if (crlf)
			util_buf_add(out, "\r\n", 2);
		return;
	}
	colon = memchr(raw, ':', end);
	if (colon == NULL)
		colon = raw + end;
	for (i = 0; raw + i < colon; i++) {
		char c = raw[i];
		if (c == ' ' || c == '\t')
			continue; /* WSP before the colon goes */
		c = (char)tolower((unsigned char)c);
		util_buf_add(out, &c, 1);
	}
	util_buf_add(out, ":", 1);
	for (i = (size_t)(colon - raw) + 1; i < end; i++) {
		char c = raw[i];
		if (c == '\r' || c == '\n')
			continue; /* unfold */
		if (c == ' ' || c == '\t') {
			wsp = true;
			continue;
		}
		if (wsp && any)
			util_buf_add(out, " ", 1);
		wsp = false;
		any = true;
		util_buf_add(out, &c, 1);
	}
	if (crlf)
		util_buf_add(out, "\r\n", 2);
}

/* arc_is_b64 - a base64 character. */
static bool arc_is_b64(char c)
{
	return isalnum((unsigned char)c) || c == '+' || c == '/' || c == '=';
}

/* policy_arc_strip_b - the field with its b= value removed: base64
 * characters and the folding white space between them, as RFC 6376 3.7 and
 * the common implementations (libopendkim, dkimpy) do it. */
char *policy_arc_strip_b(const char *raw, size_t len, size_t *outlen)
{
	const char *colon = memchr(raw, ':', len);
	struct policy_arc_tags t;
	char err[80];
	size_t vbase, vlen, cut = 0, cutend = 0;
	char *out;

	*outlen = 0;
	if (colon == NULL)
		return NULL;
	vbase = (size_t)(colon - raw) + 1;
	vlen = len - vbase;
	if (vlen >= 2 && raw[len - 2] == '\r' && raw[len - 1] == '\n')
		vlen -= 2;
	if (policy_arc_tags_parse(raw + vbase, vlen, &t, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < t.n; i++) {
			if (strcmp(t.v[i].name, "b") != 0)
				continue;
			size_t p = vbase + t.v[i].voff;
			size_t e = p;
			while (e < vbase + vlen) {
				size_t q = e;
				while (q < vbase + vlen && (raw[q] == ' ' || raw[q] == '\t' ||
				                            raw[q] == '\r' || raw[q] == '\n'))
					q++;
				if (q < vbase + vlen && arc_is_b64(raw[q]))
					e = q + 1;
				else
					break;
			}
			cut = p;
			cutend = e;
		}
	}
	policy_arc_tags_free(&t);
	if (cutend == 0)
		return NULL;
	out = util_xmalloc(len - (cutend - cut) + 1);
	memcpy(out, raw, cut);
	memcpy(out + cut, raw + cutend, len - cutend);
	*outlen = len - (cutend - cut);
	out[*outlen] = 0;
	return out;
}

/* Streaming body canonicaliser: line ends and white space are held back
 * until the next content byte shows they are not trailing. */
struct policy_arc_body {
	EVP_MD_CTX *md;
	bool relaxed;
	int64_t limit; /* < 0: none */
	int64_t done;  /* bytes hashed */
	size_t ncrlf;  /* line ends held back */
	bool wsp;      /* relaxed: white space held back */
	bool cr;       /* a CR waiting for its LF */
	bool any;      /* content seen */
	bool failed;
};

/* policy_arc_body_new - a SHA-256 canonicaliser. */
struct policy_arc_body *policy_arc_body_new(bool relaxed, int64_t limit)
{
	struct policy_arc_body *b = util_xcalloc(1, sizeof(*b));

	b->md = EVP_MD_CTX_new();
	if (b->md == NULL || EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) != 1)
		b->failed = true;
	b->relaxed = relaxed;
	b->limit = limit;
	return b;
}

/* arc_body_emit - canonical bytes into the hash (up to l=). */
static void arc_body_emit(struct policy_arc_body *b, const char *p, size_t n)
{
	if (b->limit >= 0) {
		if (b->done >= b->limit)
			return;
		if ((int64_t)n > b->limit - b->done)
			n = (size_t)(b->limit - b->done);
	}
	if (!b->failed && EVP_DigestUpdate(b->md, p, n) != 1)
		b->failed = true;
	b->done += (int64_t)n;
}

/* arc_body_content - a content byte: what was held back is not trailing. */
static void arc_body_content(struct policy_arc_body *b, char c)
{
	for (; b->ncrlf > 0; b->ncrlf--)
		arc_body_emit(b, "\r\n", 2);
	if (b->wsp)
		arc_body_emit(b, " ", 1);
	b->wsp = false;
	b->any = true;
	arc_body_emit(b, &c, 1);
}

/* policy_arc_body_update - more body bytes. */
void policy_arc_body_update(struct policy_arc_body *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				b->wsp = false; /* relaxed: no WSP at a line end */
				b->ncrlf++;
				continue;
			}
			arc_body_content(b, '\r'); /* a bare CR is content */
		}
		if (c == '\r') {
			b->cr = true;
		} else if (b->relaxed && (c == ' ' || c == '\t')) {
			b->wsp = true;
		} else {
			arc_body_content(b, c);
		}
	}
}

/* policy_arc_body_final - trailing empty lines dropped; simple: an empty
 * body is one CRLF; relaxed: an empty body stays empty. */
int policy_arc_body_final(struct policy_arc_body *b, unsigned char out[32])
{
	unsigned int len = 0;

	if (b->cr)
		arc_body_content(b, '\r');
	b->cr = false;
	if (b->any || !b->relaxed)
		arc_body_emit(b, "\r\n", 2);
	if (b->failed || EVP_DigestFinal_ex(b->md, out, &len) != 1 || len != 32)
		return -1;
	return 0;
}

/* policy_arc_body_free - NULL is a no-op. */
void policy_arc_body_free(struct policy_arc_body *b)
{
	if (b == NULL)
		return;
	EVP_MD_CTX_free(b->md);
	free(b);
}

/* ------------------------------------------------------------ header/body split */

/* policy_arc_split_init - see policy-arc.h. */
void policy_arc_split_init(struct policy_arc_split *sp, struct util_buf *hdr,
                           struct policy_arc_body *body, size_t max)
{
	memset(sp, 0, sizeof(*sp));
	sp->hdr = hdr;
	sp->body = body;
	sp->hstart = hdr->len;
	sp->max = max;
}

/* split_eoh - the empty line in p[0..n), looked for from offset from on:
 * *hend (the end of the last field), *bstart (the first body byte). */
static bool split_eoh(const char *p, size_t n, size_t from, size_t *hend, size_t *bstart)
{
	if (from == 0 && n >= 2 && p[0] == '\r' && p[1] == '\n') {
		*hend = 0; /* no header field at all */
		*bstart = 2;
		return true;
	}
	for (size_t i = from; i + 3 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
			*hend = i + 2;
			*bstart = i + 4;
			return true;
		}
	return false;
}

/* policy_arc_split_feed - see policy-arc.h. */
int policy_arc_split_feed(struct policy_arc_split *sp, const char *p, size_t n)
{
	struct util_buf *h = sp->hdr;
	size_t hend, bstart;

	if (sp->in_body) {
		policy_arc_body_update(sp->body, p, n);
		return 0;
	}
	util_buf_add(h, p, n);
	if (split_eoh(h->data + sp->hstart, h->len - sp->hstart, sp->scanned, &hend, &bstart)) {
		policy_arc_body_update(sp->body, h->data + sp->hstart + bstart,
		                       h->len - sp->hstart - bstart);
		h->len = sp->hstart + hend;
		h->data[h->len] = '\0';
		sp->in_body = true;
		return 0;
	}
	/* the empty line may straddle two pieces: look from 3 bytes back */
	sp->scanned = h->len - sp->hstart > 3 ? h->len - sp->hstart - 3 : 0;
	/* past max: a longer header block, or only part of the empty line */
	return sp->max > 0 && h->len - sp->hstart > sp->max + 3 ? -1 : 0;
}

/* ------------------------------------------------------------ ARC sets */

static const char *const arc_names[3] = {"ARC-Authentication-Results", "ARC-Message-Signature",
                                         "ARC-Seal"};

/* arc_instance - "1".."50" -> number; -1 otherwise (RFC 8617 4.2.1). */
static int arc_instance(const char *s)
{
	int v = 0;

	if (s == NULL || s[0] == 0 || s[0] == '0' || strlen(s) > 2)
		return -1;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v >= 1 && v <= 50 ? v : -1;
}

/* arc_aar_instance - the leading "i=N;" of an ARC-Authentication-Results
 * value (RFC 8617 4.1.1: i= then the A-R payload); -1 if absent. */
static int arc_aar_instance(const char *v, size_t len)
{
	size_t i = 0, s;
	bool bad = false;
	char num[4];

	i = arc_skip_fws(v, len, i, &bad);
	if (bad || i + 1 >= len || v[i] != 'i')
		return -1;
	i = arc_skip_fws(v, len, i + 1, &bad);
	if (bad || i >= len || v[i] != '=')
		return -1;
	i = arc_skip_fws(v, len, i + 1, &bad);
	s = i;
	while (i < len && isdigit((unsigned char)v[i]) && i - s < 3)
		i++;
	if (i == s || i - s > 2)
		return -1;
	memcpy(num, v + s, i - s);
	num[i - s] = 0;
	i = arc_skip_fws(v, len, i, &bad);
	if (bad || i >= len || v[i] != ';')
		return -1;
	return arc_instance(num);
}

/* arc_fail - a structural failure (the first reason is kept). */
static void arc_fail(struct policy_arc_chain *c, const char *what, const char *name, int n)
{
	if (c->structural_fail)
		return;
	c->structural_fail = true;
	snprintf(c->why, sizeof(c->why), "%s i=%d: %s", name, n, what);
}

/* policy_arc_chain_parse - group the ARC fields into sets and check their shape. */
void policy_arc_chain_parse(const char *const *fields, const size_t *lens, size_t nfields,
                            struct policy_arc_chain *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t f = 0; f < nfields; f++) {
		const char *raw = fields[f];
		size_t len = lens[f], vlen;
		const char *colon = memchr(raw, ':', len);
		int kind = -1, inst;
		struct policy_arc_tags tags;
		char err[80];

		if (colon == NULL)
			continue;
		for (int k = 0; k < 3; k++) {
			size_t nl = strlen(arc_names[k]);
			const char *e = colon;
			while (e > raw && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - raw) == nl && strncasecmp(raw, arc_names[k], nl) == 0)
				kind = k;
		}
		if (kind < 0)
			continue;
		vlen = len - (size_t)(colon + 1 - raw);
		if (vlen >= 2 && colon[vlen - 1] == '\r' && colon[vlen] == '\n')
			vlen -= 2;
		memset(&tags, 0, sizeof(tags));
		if (kind == POLICY_ARC_AAR) {
			inst = arc_aar_instance(colon + 1, vlen);
		} else if (policy_arc_tags_parse(colon + 1, vlen, &tags, err, sizeof(err)) < 0) {
			policy_arc_tags_free(&tags);
			arc_fail(c, err, arc_names[kind], 0);
			continue;
		} else {
			inst = arc_instance(policy_arc_tag(&tags, "i"));
		}
		if (inst < 0) {
			policy_arc_tags_free(&tags);
			arc_fail(c, "no valid i= (1..50)", arc_names[kind], 0);
			continue;
		}
		if (inst > c->max_seen)
			c->max_seen = inst;
		if (inst > POLICY_ARC_MAX_INSTANCES) {
			policy_arc_tags_free(&tags);
			arc_fail(c, "longer chain than mxgate accepts", arc_names[kind], inst);
			continue;
		}
		struct policy_arc_set *set = &c->sets[inst - 1];
		if (set->raw[kind] != NULL) {
			policy_arc_tags_free(&tags);
			arc_fail(c, "duplicate", arc_names[kind], inst);
			continue;
		}
		set->raw[kind] = raw;
		set->rawlen[kind] = len;
		set->tags[kind] = tags;
		if ((size_t)inst > c->n)
			c->n = (size_t)inst;
	}
	/* RFC 8617 5.2 step 3: every instance 1..N has exactly one of each */
	for (size_t i = 0; i < c->n && !c->structural_fail; i++)
		for (int k = 0; k < 3; k++)
			if (c->sets[i].raw[k] == NULL)
				arc_fail(c, "missing", arc_names[k], (int)i + 1);
	for (size_t i = 0; i < c->n && !c->structural_fail; i++) {
		const struct policy_arc_tags *as = &c->sets[i].tags[POLICY_ARC_AS];
		const char *cv = policy_arc_tag(as, "cv");
		/* RFC 8617 4.1.3: h= is not allowed in ARC-Seal */
		if (policy_arc_tag(as, "h") != NULL)
			arc_fail(c, "h= is not allowed", arc_names[POLICY_ARC_AS], (int)i + 1);
		else if (cv == NULL || (strcmp(cv, "none") != 0 && strcmp(cv, "pass") != 0 &&
		                        strcmp(cv, "fail") != 0))
			arc_fail(c, "bad cv=", arc_names[POLICY_ARC_AS], (int)i + 1);
	}
}

/* policy_arc_chain_free - the tags of every set. */
void policy_arc_chain_free(struct policy_arc_chain *c)
{
	for (size_t i = 0; i < POLICY_ARC_MAX_INSTANCES; i++)
		for (int k = 0; k < 3; k++)
			policy_arc_tags_free(&c->sets[i].tags[k]);
}

/* ------------------------------------------------------------ ARC-A-R */

/* policy_arc_aar_dmarc_pass - a "dmarc=pass" clause for from_domain. */
bool policy_arc_aar_dmarc_pass(const char *raw, size_t len, const char *from_domain)
{
	char *v = util_xstrndup(raw, len), *p, *clause, *save = NULL;
	bool ok = false;

	/* comments and quoted strings can hold anything (a quoted local part
	 * "x;dmarc=pass "@evil.test in smtp.mailfrom: red team finding):
	 * blank them out first */
	for (p = v; *p; p++) {
		if (*p == '"') {
			for (*p++ = ' '; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1])
					*p++ = ' ';
				*p = ' ';
			}
			if (*p == 0)
				break;
			*p = ' ';
		} else if (*p == '(') {
			int depth = 0;
			for (; *p; p++) {
				if (*p == '\\' && p[1])
					*p++ = ' ';
				else if (*p == '(')
					depth++;
				else if (*p == ')' && --depth == 0) {
					*p = ' ';
					break;
				}
				*p = ' ';
			}
			if (*p == 0)
				break;
		} else if (*p == '\r' || *p == '\n' || *p == '\t') {
			*p = ' ';
		}
	}
	for (clause = strtok_r(v, ";", &save); clause != NULL;
	     clause = strtok_r(NULL, ";", &save)) {
		char *w = clause, *hf;
		while (*w == ' ')
			w++;
		if (strncasecmp(w, "dmarc", 5) != 0)
			continue;
		w += 5;
		while (*w == ' ')
			w++;
		if (*w != '=')
			continue;
		w++;
		while (*w == ' ')
			w++;
		if (strncasecmp(w, "pass", 4) != 0 || (w[4] != ' ' && w[4] != 0))
			continue;
		for (hf = w; *hf && strncasecmp(hf, "header.from=", 12) != 0; hf++)
			;
		if (*hf == 0)
			hf = NULL;
		if (hf != NULL) {
			char dom[256];
			size_t n = 0;
			for (hf += 12; *hf && *hf != ' ' && n + 1 < sizeof(dom); hf++)
				dom[n++] = *hf;
			dom[n] = 0;
			if (from_domain == NULL || !util_strcaseeq(dom, from_domain))
				continue;
		}
		ok = true;
		break;
	}
	free(v);
	return ok;
}
