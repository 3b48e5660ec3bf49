/*
 * reports-failure-build.c - the DMARC failure report itself (RFC 9991),
 * pure: whether a DMARC result asks for one (ruf, psd, fo), what must not
 * be reported on (loops), the RFC 6590 style redaction of the original
 * header block, and the ARF message (RFC 5965 multipart/report,
 * RFC 6591 auth-failure, the RFC 9991 fields) with the header block only.
 * The sender (thread, rate limit, queueing) is reports-failure.c.
 *
 * Redaction: Bcc dropped; recipient address fields rebuilt as
 * "<TOKEN@domain>" (display names and comments dropped); in every other
 * field (the subject of the report too) the local part of a recipient's
 * address - an envelope recipient or one named in a recipient field - and
 * of every address in Received replaced; with all (failure_report_redact =
 * addresses) every address, the sender fields rebuilt too.  Message
 * identifiers (Message-ID, References...) are not addresses and stay,
 * unless they hold a recipient's address.  A field whose RFC 2047 encoded
 * words hide such an address once decoded (as a reader shows them) is
 * redacted decoded.
 * TOKEN: 12 hex digits of HMAC-SHA256(key, lower-cased local part).
 *
 * Ownership: results are malloc'd for the caller; inputs borrowed.
 * Threads: pure, any thread.  Diagnostics: none.
 */
#include "reports-internal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "version.h"

#define FR_MAX_RCPTS REPORTS_FAILURE_MAX_RCPTS

/* ------------------------------------------------------------ pure pieces */

/* reports_failure_skip - see reports-internal.h. */
const char *reports_failure_skip(const struct policy_dmarc_facts *f)
{
	bool dkim_failed = false, spf_failed = false;

	if (f->dmarc == NULL || strcmp(f->dmarc, "fail") != 0)
		return "not_fail";
	if (f->ruf == NULL || f->ruf[0] == '\0')
		return "no_ruf";
	if (strcmp(f->psd, "y") == 0)
		return "psd"; /* RFC 9991 2: not without an agreement */
	if (f->fo & (POLICY_DMARC_FO_0 | POLICY_DMARC_FO_1))
		return NULL; /* DMARC fail: no mechanism gave an aligned pass */
	for (size_t i = 0; i < f->ndkim; i++)
		if (f->dkim[i].result != NULL && strcmp(f->dkim[i].result, "pass") != 0 &&
		    strcmp(f->dkim[i].result, "none") != 0 &&
		    strcmp(f->dkim[i].result, "temperror") != 0)
			dkim_failed = true;
	if (f->spf_result != NULL &&
	    (strcmp(f->spf_result, "fail") == 0 || strcmp(f->spf_result, "softfail") == 0 ||
	     strcmp(f->spf_result, "permerror") == 0))
		spf_failed = true;
	if (((f->fo & POLICY_DMARC_FO_D) && dkim_failed) ||
	    ((f->fo & POLICY_DMARC_FO_S) && spf_failed))
		return NULL;
	return "fo";
}

/* reports_failure_is_report - the message must not be reported on (no
 * loops): a report (multipart/report) or auto-submitted (RFC 3834). */
bool reports_failure_is_report(const char *hdrs, size_t len)
{
	struct util_hdr_field f;
	size_t pos = 0;

	while (util_hdr_next(hdrs, len, &pos, &f) == 1) {
		const char *v = f.value;
		size_t n = f.value_len;
		while (n > 0 && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
			v++, n--;
		if (util_hdr_name_is(&f, "Content-Type") && n >= 16 &&
		    strncasecmp(v, "multipart/report", 16) == 0)
			return true;
		if (util_hdr_name_is(&f, "Auto-Submitted") &&
		    !(n >= 2 && strncasecmp(v, "no", 2) == 0 &&
		      (n == 2 || v[2] == ' ' || v[2] == '\t' || v[2] == '(' || v[2] == ';' ||
		       v[2] == '\r')))
			return true;
	}
	return false;
}

/* reports_redact_local - the token that stands for local part [local,
 * local+n): HMAC-SHA256 under key of the lower-cased local part, 12 hex
 * digits (RFC 6590: same input, same token; not reversible without key). */
void reports_redact_local(const unsigned char key[32], const char *local, size_t n,
                          char out[REPORTS_REDACT_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE], low[256];
	unsigned int mdlen = 0;
	size_t m = n < sizeof(low) ? n : sizeof(low);

	for (size_t i = 0; i < m; i++)
		low[i] = (unsigned char)(local[i] >= 'A' && local[i] <= 'Z' ? local[i] + 32 : local[i]);
	HMAC(EVP_sha256(), key, 32, low, m, md, &mdlen);
	for (int i = 0; i < REPORTS_REDACT_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool is_local_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

static bool is_domain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || c == '-' || c == '.';
}

/* One address found in a text: local part [l, at), domain (at, e). */
struct fr_addr {
	size_t l, at, e;
};

/* next_addr - the next "local@domain" in v[*pos, n); false at the end. */
static bool next_addr(const char *v, size_t n, size_t *pos, struct fr_addr *a)
{
	for (size_t i = *pos; i < n; i++) {
		if (v[i] != '@')
			continue;
		size_t j = i;
		if (j > *pos && v[j - 1] == '"') { /* quoted local part */
			size_t k = j - 1;
			while (k > *pos && v[k - 1] != '"')
				k--;
			j = k > *pos ? k - 1 : j;
		} else {
			while (j > *pos && is_local_char((unsigned char)v[j - 1]))
				j--;
		}
		size_t e = i + 1;
		while (e < n && is_domain_char((unsigned char)v[e]))
			e++;
		while (e > i + 1 && v[e - 1] == '.')
			e--;
		if (j == i || e == i + 1)
			continue;
		a->l = j;
		a->at = i;
		a->e = e;
		*pos = e;
		return true;
	}
	*pos = n;
	return false;
}

/* One redaction: the key, the mode and the addresses known to be
 * recipients (lower-case "local@domain"). */
struct fr_redact {
	const unsigned char *key;
	bool all;
	struct util_strlist rcpts;
};

static bool is_rcpt(const struct fr_redact *r, const char *v, const struct fr_addr *a)
{
	size_t n = a->e - a->l;
	for (size_t i = 0; i < r->rcpts.n; i++)
		if (strlen(r->rcpts.v[i]) == n && strncasecmp(r->rcpts.v[i], v + a->l, n) == 0)
			return true;
	return false;
}

static void add_rcpt(struct fr_redact *r, const char *a, size_t n)
{
	while (n > 0 && *a == '<')
		a++, n--;
	while (n > 0 && a[n - 1] == '>')
		n--;
	if (n == 0 || memchr(a, '@', n) == NULL || r->rcpts.n >= 256)
		return;
	char *s = strndup(a, n);
	if (s == NULL)
		return;
	util_strlist_add(&r->rcpts, s);
	free(s);
}

/* put_redacted - "tok@domain" for the address a of v. */
static void put_redacted(struct util_buf *out, const struct fr_redact *r, const char *v,
                         const struct fr_addr *a)
{
	char tok[REPORTS_REDACT_LEN + 1];
	reports_redact_local(r->key, v + a->l, a->at - a->l, tok);
	util_buf_adds(out, tok);
	util_buf_add(out, v + a->at, a->e - a->at);
}

/* scrub_rcpts - out[from..] with every remaining copy of a recipient's
 * address (case-insensitive, wherever it stands: "a@victim@example" has
 * no address boundary a parser would agree on) given its token: the
 * recipient's address never leaves in a report (fuzz_failure_report). */
static void scrub_rcpts(struct util_buf *out, size_t from, const struct fr_redact *r)
{
	for (size_t k = 0; k < r->rcpts.n; k++) {
		const char *a = r->rcpts.v[k], *at = strrchr(a, '@');
		size_t al = strlen(a), ll = (size_t)(at - a);
		if (ll == 0 || out->len - from < al)
			continue;
		struct util_buf t;
		bool hit = false;
		size_t last = from;
		util_buf_init(&t);
		for (size_t i = from; i + al <= out->len; i++) {
			if (strncasecmp(out->data + i, a, al) != 0)
				continue;
			char tok[REPORTS_REDACT_LEN + 1];
			if (!hit)
				util_buf_add(&t, out->data, from);
			hit = true;
			util_buf_add(&t, out->data + last, i - last);
			reports_redact_local(r->key, out->data + i, ll, tok);
			util_buf_adds(&t, tok);
			util_buf_add(&t, out->data + i + ll, al - ll);
			last = i + al;
			i = last - 1;
		}
		if (!hit) {
			util_buf_free(&t);
			continue;
		}
		util_buf_add(&t, out->data + last, out->len - last);
		util_buf_free(out);
		*out = t;
	}
}

/* redact_plain - v with the local part of every address r says to hide
 * (every one when all) replaced; the rest, folding too, kept. */
static void redact_plain(struct util_buf *out, const struct fr_redact *r, const char *v,
                         size_t n, bool all)
{
	size_t pos = 0, last = 0, start = out->len;
	struct fr_addr a;

	while (next_addr(v, n, &pos, &a)) {
		if (!all && !is_rcpt(r, v, &a))
			continue;
		util_buf_add(out, v + last, a.l - last);
		put_redacted(out, r, v, &a);
		last = a.e;
	}
	util_buf_add(out, v + last, n - last);
	scrub_rcpts(out, start, r);
}

/* ew_len - the length of the RFC 2047 encoded word at v[0..n)
 * ("=?charset?B|Q?text?="), 0 when there is none; *enc, *text, *tl: its
 * encoding letter and text. */
static size_t ew_len(const char *v, size_t n, char *enc, const char **text, size_t *tl)
{
	size_t i = 2;
	if (n < 8 || v[0] != '=' || v[1] != '?')
		return 0;
	while (i < n && v[i] != '?' && (unsigned char)v[i] > ' ' && v[i] != 0x7f)
		i++;
	if (i == 2 || i + 3 >= n || v[i] != '?' || v[i + 2] != '?')
		return 0;
	*enc = (char)(v[i + 1] | 0x20);
	if (*enc != 'b' && *enc != 'q')
		return 0;
	size_t t = i + 3, e = t;
	while (e + 1 < n && !(v[e] == '?' && v[e + 1] == '=') && (unsigned char)v[e] > ' ' &&
	       v[e] != 0x7f)
		e++;
	if (e + 1 >= n || v[e] != '?' || v[e + 1] != '=')
		return 0;
	*text = v + t;
	*tl = e - t;
	return e + 2;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0'
	       : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
	                                                : -1;
}

/* ew_put - the decoded bytes of one encoded word's text (control bytes as
 * '?': a decoded CR LF must not make lines of its own). */
static void ew_put(struct util_buf *out, char enc, const char *t, size_t tl)
{
	unsigned char buf[4];
	if (enc == 'q') {
		for (size_t i = 0; i < tl; i++) {
			int c = (unsigned char)t[i];
			if (t[i] == '_')
				c = ' ';
			else if (t[i] == '=' && i + 2 < tl && hexval(t[i + 1]) >= 0 &&
			         hexval(t[i + 2]) >= 0) {
				c = hexval(t[i + 1]) * 16 + hexval(t[i + 2]);
				i += 2;
			}
			buf[0] = (unsigned char)(c < 0x20 || c == 0x7f ? '?' : c);
			util_buf_add(out, buf, 1);
		}
		return;
	}
	for (size_t i = 0; i < tl; i += 4) { /* base64, 4 characters at a time */
		char q[4] = {'=', '=', '=', '='};
		size_t k = tl - i < 4 ? tl - i : 4;
		memcpy(q, t + i, k);
		int pad = (q[3] == '=') + (q[2] == '=');
		int w = EVP_DecodeBlock(buf, (const unsigned char *)q, 4);
		if (w < 0)
			return;
		for (int j = 0; j < w - pad && j < 3; j++) {
			unsigned char c = buf[j];
			util_buf_add(out, c < 0x20 || c == 0x7f ? (const unsigned char *)"?" : &c, 1);
		}
	}
}

/* ew_decode - v with its encoded words decoded (the blanks and folding
 * between two of them dropped, as a reader shows them) into out; false
 * when v has none. */
static bool ew_decode(const char *v, size_t n, struct util_buf *out)
{
	bool any = false;
	size_t i = 0, prev_end = 0;
	bool prev_ew = false;

	while (i < n) {
		char enc;
		const char *t;
		size_t tl, l = v[i] == '=' ? ew_len(v + i, n - i, &enc, &t, &tl) : 0;
		if (l == 0) {
			i++;
			continue;
		}
		bool blank = true; /* only blanks since the last encoded word */
		for (size_t k = prev_end; k < i && blank; k++)
			blank = v[k] == ' ' || v[k] == '\t' || v[k] == '\r' || v[k] == '\n';
		if (!(prev_ew && blank))
			util_buf_add(out, v + prev_end, i - prev_end);
		ew_put(out, enc, t, tl);
		any = prev_ew = true;
		i += l;
		prev_end = i;
	}
	util_buf_add(out, v + prev_end, n - prev_end);
	return any;
}

/* redact_inplace - redact_plain of v; when v holds RFC 2047 encoded words
 * whose decoded text has an address to hide (a reader shows it decoded:
 * "=?UTF-8?B?YWxpY2VAZXhhbXBsZS5vcmc=?=" is alice@example.org), of v
 * decoded instead - the report then carries that field decoded. */
static void redact_inplace(struct util_buf *out, const struct fr_redact *r, const char *v,
                           size_t n, bool all)
{
	struct util_buf dec, t;
	util_buf_init(&dec);
	util_buf_init(&t);
	if (n >= 8 && memmem(v, n, "=?", 2) != NULL && ew_decode(v, n, &dec)) {
		redact_plain(&t, r, dec.data, dec.len, all);
		if (t.len != dec.len || memcmp(t.data, dec.data, t.len) != 0) {
			util_buf_add(out, t.data, t.len);
			util_buf_free(&t);
			util_buf_free(&dec);
			return;
		}
	}
	util_buf_free(&t);
	util_buf_free(&dec);
	redact_plain(out, r, v, n, all);
}

/* rebuild - an address field as "Name: <tok@domain>,\r\n <...>": its
 * addresses redacted, display names and comments dropped. */
static void rebuild(struct util_buf *out, const struct fr_redact *r,
                    const struct util_hdr_field *f)
{
	size_t pos = 0, k = 0;
	struct fr_addr a;

	util_buf_add(out, f->name, f->name_len);
	util_buf_adds(out, ":");
	while (next_addr(f->value, f->value_len, &pos, &a)) {
		util_buf_adds(out, k++ ? ",\r\n <" : " <");
		put_redacted(out, r, f->value, &a);
		util_buf_adds(out, ">");
	}
	if (k == 0)
		util_buf_adds(out, " undisclosed-recipients:;");
	util_buf_adds(out, "\r\n");
}

static bool name_in(const struct util_hdr_field *f, const char *const *names)
{
	for (size_t i = 0; names[i] != NULL; i++)
		if (util_hdr_name_is(f, names[i]))
			return true;
	return false;
}

/* the recipient address fields (RFC 5322 3.6.3, 3.6.6 and trace fields
 * others add), rebuilt redacted */
static const char *const fr_rcpt_fields[] = {
    "To",          "Cc",           "Resent-To",    "Resent-Cc",       "Delivered-To",
    "X-Original-To", "Envelope-To", "X-Envelope-To", "Apparently-To", "X-Rcpt-To",
    "Original-Recipient", "X-Original-Recipient", "X-Forwarded-To", NULL};
/* the sender address fields, rebuilt redacted with redact = addresses */
static const char *const fr_sender_fields[] = {
    "From",     "Sender",        "Reply-To",   "Return-Path", "Resent-From",
    "Resent-Sender", "Mail-Followup-To", "Disposition-Notification-To",
    "Return-Receipt-To", "Errors-To", "Author", NULL};
/* never in a report */
static const char *const fr_drop_fields[] = {"Bcc", "Resent-Bcc", NULL};
/* identifiers, not addresses: left as they are, but for a recipient's
 * address (a sender can write one there: found by fuzz_failure_report) */
static const char *const fr_id_fields[] = {"Message-ID", "In-Reply-To", "References",
                                           "Resent-Message-ID", "Content-ID", NULL};

/* redact_init - r for a header block: the key, the mode, the recipients
 * (envelope rcpts, may be NULL, and every address of a recipient or Bcc
 * field: such an address is a recipient's wherever else it shows). */
static void redact_init(struct fr_redact *r, const char *hdrs, size_t len,
                        const unsigned char key[32], bool all,
                        const struct util_strlist *rcpts)
{
	struct util_hdr_field f;
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	r->key = key;
	r->all = all;
	for (size_t i = 0; rcpts != NULL && i < rcpts->n; i++)
		add_rcpt(r, rcpts->v[i], strlen(rcpts->v[i]));
	while (hdrs != NULL && util_hdr_next(hdrs, len, &pos, &f) == 1) {
		if (!name_in(&f, fr_rcpt_fields) && !name_in(&f, fr_drop_fields))
			continue;
		size_t p2 = 0;
		struct fr_addr a;
		while (next_addr(f.value, f.value_len, &p2, &a))
			add_rcpt(r, f.value + a.l, a.e - a.l);
	}
}

/* reports_failure_redact_headers - see reports-internal.h. */
char *reports_failure_redact_headers(const char *hdrs, size_t len, const unsigned char key[32],
                                     bool all, const struct util_strlist *rcpts, size_t *outlen)
{
	struct fr_redact r;
	struct util_buf out;
	struct util_hdr_field f;
	size_t pos = 0;

	redact_init(&r, hdrs, len, key, all, rcpts);
	util_buf_init(&out);
	while (util_hdr_next(hdrs, len, &pos, &f) == 1) {
		if (name_in(&f, fr_drop_fields))
			continue;
		if (name_in(&f, fr_rcpt_fields) || (all && name_in(&f, fr_sender_fields)))
			rebuild(&out, &r, &f);
		else if (name_in(&f, fr_id_fields)) /* ids: only a recipient's address */
			redact_inplace(&out, &r, f.raw, f.raw_len, false);
		else
			redact_inplace(&out, &r, f.raw, f.raw_len,
			               all || util_hdr_name_is(&f, "Received"));
	}
	util_strlist_free(&r.rcpts);
	*outlen = out.len;
	if (out.data == NULL)
		return util_xstrdup("");
	return out.data;
}

/* ascii_only - n bytes of printable ASCII, blanks and CRLF. */
static bool ascii_only(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80 || s[i] == '\0')
			return false;
	return true;
}

/* lines_fit - no line of s[0..n) is over 998 octets (RFC 5322 2.1.1): a
 * token is longer than the local part it stands for, so redaction can
 * stretch a line of short addresses past it. */
static bool lines_fit(const char *s, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n')
			col = 0;
		else if (++col > 998)
			return false;
	}
	return true;
}

/* utf8_len - length of the valid UTF-8 sequence at s (of n bytes), 0 when
 * it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t k = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3
	                         : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
	if (k == 0 || k > n || (k == 2 && s[0] < 0xc2))
		return 0;
	for (size_t i = 1; i < k; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return k;
}

/* put_subject - "Subject: FW: <the original subject>" (RFC 9991 appendix
 * A's convention), unfolded and redacted like the header part (a phish
 * names its victim's address in the subject); non-ASCII UTF-8 as RFC 2047
 * encoded words of whole characters; anything else unusable (control
 * bytes, invalid UTF-8, over 200 bytes, no subject): "DMARC failure report
 * for <domain>". */
static void put_subject(struct util_buf *m, const struct fr_redact *r, const char *hdrs,
                        size_t len, const char *domain)
{
	struct util_hdr_field f;
	size_t pos = 0;
	char raw[256], s[256];
	size_t n = 0;
	bool found = false, ok = true;

	while (!found && util_hdr_next(hdrs, len, &pos, &f) == 1) {
		if (!util_hdr_name_is(&f, "Subject"))
			continue;
		found = true;
		for (size_t i = 0; i < f.value_len && ok; i++) {
			unsigned char c = (unsigned char)f.value[i];
			if (c == '\r' || c == '\n')
				continue;
			if (c == '\t')
				c = ' ';
			if ((c < 0x20 && c != ' ') || c == 0x7f || n + 1 >= 201)
				ok = false;
			else if (!(n == 0 && c == ' '))
				raw[n++] = (char)c;
		}
	}
	while (n > 0 && raw[n - 1] == ' ')
		n--;
	if (ok && n > 0) {
		/* a token (12) stands for a local part of at least one byte and
		 * an '@': at most 200 + 12 * 66 bytes; cut back to 200 else */
		struct util_buf t;
		util_buf_init(&t);
		redact_inplace(&t, r, raw, n, r->all);
		if (t.len > 200)
			ok = false;
		else
			memcpy(s, t.data, t.len);
		n = t.len;
		util_buf_free(&t);
	}
	if (!found || !ok || n == 0) {
		util_buf_printf(m, "Subject: DMARC failure report for %s\r\n", domain);
		return;
	}
	if (ascii_only(s, n)) {
		util_buf_printf(m, "Subject: FW: %.*s\r\n", (int)n, s);
		return;
	}
	for (size_t i = 0; i < n;) {
		size_t k = utf8_len((const unsigned char *)s + i, n - i);
		if (k == 0) {
			util_buf_printf(m, "Subject: DMARC failure report for %s\r\n", domain);
			return;
		}
		i += k;
	}
	util_buf_adds(m, "Subject: FW:");
	for (size_t i = 0; i < n;) {
		size_t w = 0;
		while (i + w < n) { /* whole characters, at most 45 bytes a word */
			size_t k = utf8_len((const unsigned char *)s + i + w, n - i - w);
			if (w + k > 45)
				break;
			w += k;
		}
		unsigned char b64[64];
		int bl = EVP_EncodeBlock(b64, (const unsigned char *)s + i, (int)w);
		util_buf_printf(m, "%s=?UTF-8?B?%.*s?=", i == 0 ? " " : "\r\n ", bl, (char *)b64);
		i += w;
	}
	util_buf_adds(m, "\r\n");
}

/* put_ascii_value - v (a field value) with bytes that are not printable
 * ASCII (or folding) shown as '?': the feedback-report part stays 7-bit. */
static void put_ascii_value(struct util_buf *m, const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		char ch = (c >= 0x20 && c < 0x7f) || c == '\t' || c == '\r' || c == '\n' ? (char)c
		                                                                           : '?';
		util_buf_add(m, &ch, 1);
	}
}

/* reports_failure_compose - see reports-internal.h. */
char *reports_failure_compose(const struct reports_failure_job *j, const char *from,
                              const char *to, const char *hostname,
                              const unsigned char key[32], bool all, size_t *len)
{
	struct util_buf m;
	char date[64], arrival[64], boundary[64], mid[40];
	time_t now = time(NULL), at = (time_t)j->arrival;
	struct tm tm;
	unsigned char rnd[8] = {0};
	struct fr_redact r;

	redact_init(&r, j->hdrs, j->hlen, key, all, &j->rcpts);
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	gmtime_r(&at, &tm);
	strftime(arrival, sizeof(arrival), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		memcpy(rnd, &now, sizeof(rnd) < sizeof(now) ? sizeof(rnd) : sizeof(now));
	for (int i = 0; i < 8; i++)
		snprintf(mid + 2 * i, 3, "%02x", rnd[i]);
	snprintf(boundary, sizeof(boundary), "=_mxgate_fr_%s", mid);

	util_buf_init(&m);
	util_buf_printf(&m, "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\n", from, to, date);
	put_subject(&m, &r, j->hdrs, j->hlen, j->header_from);
	util_buf_printf(&m, "Message-ID: <%s.%lld.failure@%s>\r\n", mid, (long long)now,
	                hostname);
	/* RFC 3834: an automatic message; nobody answers or reports on it */
	util_buf_adds(&m, "Auto-Submitted: auto-generated\r\n");
	util_buf_printf(&m,
	                "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
	                "report-type=feedback-report;\r\n boundary=\"%s\"\r\n\r\n"
	                "This is a MIME-formatted message.\r\n\r\n",
	                boundary);
	/* part 1: for people (RFC 5965 2 (b)) */
	util_buf_printf(&m,
	                "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
	                "Content-Transfer-Encoding: 7bit\r\n\r\n"
	                "This is a DMARC failure report (RFC 9991) for an email message\r\n"
	                "with From: domain %s received from IP %s on %s.\r\n"
	                "Only the message's header fields are included; the local parts of\r\n"
	                "%s addresses are replaced by a keyed hash (RFC 6590).\r\n\r\n",
	                boundary, j->header_from, j->ip, arrival, all ? "all" : "recipient");
	/* part 2: the machine-readable report (RFC 5965 3, RFC 6591 3.1,
	 * RFC 9991 4) */
	util_buf_printf(&m,
	                "--%s\r\nContent-Type: message/feedback-report\r\n"
	                "Content-Transfer-Encoding: 7bit\r\n\r\n"
	                "Feedback-Type: auth-failure\r\nUser-Agent: mxgate/%s\r\nVersion: 1\r\n",
	                boundary, MXGATE_VERSION);
	util_buf_adds(&m, "Original-Mail-From: <");
	if (j->mail_from[0] != '\0') {
		/* every address with all; else a recipient's only - a forger's
		 * MAIL FROM is often the victim's own address */
		struct util_buf t;
		util_buf_init(&t);
		redact_inplace(&t, &r, j->mail_from, strlen(j->mail_from), all);
		put_ascii_value(&m, t.data ? t.data : "", t.len);
		util_buf_free(&t);
	}
	util_buf_adds(&m, ">\r\n");
	for (size_t i = 0; i < j->rcpts.n && i < FR_MAX_RCPTS; i++) {
		const char *a = j->rcpts.v[i];
		size_t pos = 0, n = strlen(a);
		struct fr_addr ad;
		if (!next_addr(a, n, &pos, &ad))
			continue;
		util_buf_adds(&m, "Original-Rcpt-To: <");
		put_redacted(&m, &r, a, &ad);
		util_buf_adds(&m, ">\r\n");
	}
	util_buf_printf(&m, "Arrival-Date: %s\r\nReporting-MTA: dns; %s\r\nSource-IP: %s\r\n",
	                arrival, hostname, j->ip);
	util_buf_adds(&m, "Auth-Failure: dmarc\r\n");
	if (j->ar != NULL && j->ar[0] != '\0') {
		struct util_buf t;
		util_buf_init(&t);
		redact_inplace(&t, &r, j->ar, strlen(j->ar), all);
		util_buf_adds(&m, "Authentication-Results:");
		put_ascii_value(&m, t.data ? t.data : "", t.len);
		util_buf_adds(&m, "\r\n");
		util_buf_free(&t);
	}
	util_buf_printf(&m, "Reported-Domain: %s\r\n", j->header_from);
	/* RFC 9991 4: the mechanisms that failed to authenticate an aligned
	 * identity */
	util_buf_printf(&m, "Identity-Alignment: %s\r\n",
	                !j->dkim_aligned && !j->spf_aligned ? "dkim, spf"
	                : !j->dkim_aligned                  ? "dkim"
	                : !j->spf_aligned                   ? "spf"
	                                                    : "none");
	if (j->dkim_domain != NULL) /* RFC 9991 4: a DKIM failure of an aligned identifier */
		util_buf_printf(&m, "DKIM-Domain: %s\r\nDKIM-Identity: @%s\r\nDKIM-Selector: %s\r\n",
		                j->dkim_domain, j->dkim_domain,
		                j->dkim_selector ? j->dkim_selector : "");
	/* RFC 9991 4: an SPF failure of an aligned identifier: the records
	 * used (RFC 6591 3.2: type : domain : quoted record) */
	for (size_t i = 0; j->spf_domain != NULL && i < j->spf_dns.n && i < 2; i++) {
		util_buf_printf(&m, "SPF-DNS: txt : %s :\r\n \"", j->spf_domain);
		for (const char *c = j->spf_dns.v[i]; *c && c - j->spf_dns.v[i] < 900; c++) {
			if (*c == '"' || *c == '\\')
				util_buf_adds(&m, "\\");
			put_ascii_value(&m, c, (*c == '\r' || *c == '\n') ? 0 : 1);
		}
		util_buf_adds(&m, "\"\r\n");
	}
	if (j->delivery != NULL)
		util_buf_printf(&m, "Delivery-Result: %s\r\n", j->delivery);
	util_buf_adds(&m, "\r\n");
	/* part 3: the header block only, redacted (RFC 5965 2 (d)) */
	size_t hl = 0;
	char *h = reports_failure_redact_headers(j->hdrs, j->hlen, key, all, &j->rcpts, &hl);
	if (ascii_only(h, hl) && lines_fit(h, hl)) {
		util_buf_printf(&m,
		                "--%s\r\nContent-Type: text/rfc822-headers\r\n"
		                "Content-Transfer-Encoding: 7bit\r\n\r\n",
		                boundary);
		util_buf_add(&m, h, hl);
	} else {
		/* RFC 6532 header fields, or lines redaction made too long:
		 * base64 keeps the report 7-bit, its lines short */
		util_buf_printf(&m,
		                "--%s\r\nContent-Type: text/rfc822-headers; charset=utf-8\r\n"
		                "Content-Transfer-Encoding: base64\r\n\r\n",
		                boundary);
		reports_b64_lines(&m, (const unsigned char *)h, hl);
	}
	free(h);
	util_strlist_free(&r.rcpts);
	if (m.len >= 2 && (m.data[m.len - 2] != '\r' || m.data[m.len - 1] != '\n'))
		util_buf_adds(&m, "\r\n");
	util_buf_printf(&m, "\r\n--%s--\r\n", boundary);
	*len = m.len;
	return m.data;
}

/* reports_failure_job_free - one job; NULL is a no-op. */
void reports_failure_job_free(struct reports_failure_job *j)
{
	if (j == NULL)
		return;
	free(j->header_from);
	free(j->record_domain);
	free(j->mail_from);
	free(j->ar);
	free(j->hdrs);
	free(j->dkim_domain);
	free(j->spf_domain);
	util_strlist_free(&j->spf_dns);
	free(j->dkim_selector);
	util_strlist_free(&j->rcpts);
	util_strlist_free(&j->dests);
	free(j);
}

