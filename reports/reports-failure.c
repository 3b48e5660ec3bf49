/*
 * reports-failure.c - DMARC failure reports (RFC 9991), off unless
 * [reports] failure_reports = yes: for a message whose DMARC result is fail
 * and whose policy record asks for them (ruf= mailto: destinations, fo=),
 * one ARF report (RFC 5965 multipart/report; report-type=feedback-report,
 * RFC 6591 Feedback-Type: auth-failure, Auth-Failure: dmarc, the RFC 9991
 * Identity-Alignment field) per destination, whose third part is the
 * original header block only (text/rfc822-headers: no body content), with
 * the local parts of the recipient addresses - or, with failure_report_redact
 * = addresses, of every address - replaced by a keyed hash (RFC 6590 style:
 * the same address gives the same token, so a Domain Owner can tell reports
 * apart without learning the address).
 *
 * What is left out on purpose (RFC 9991 7, privacy): the body, Bcc fields,
 * display names of redacted address fields.  Never reported on: messages
 * with the null reverse-path, reports (multipart/report) and anything
 * Auto-Submitted (RFC 3834): no report loops; records with psd=y (RFC 9991
 * 2: a PSD's ruf needs an agreement).  fo= (RFC 9989 4.7): 0 and 1 both
 * hold for a DMARC fail; d needs a DKIM signature that failed to verify, s
 * an SPF fail (mxgate reports DMARC failures only: no RFC 6651/6652 reports).
 *
 * Threads: reports_failure_submit() runs on the loop and never waits: it
 * filters, applies the per destination domain rate limit (RFC 9991 2:
 * "MUST implement a rate-limit") and copies what the report needs into a
 * job on a bounded queue.  One worker thread verifies external destinations
 * (sync DNS, RFC 9990 3 with ruf for rua), builds, signs (the aggregate
 * reports' key) and hands finished messages back through a pipe; only the
 * loop calls queue_inject() (locally originated, null reverse-path: the
 * outbound route, never bounced, never the inbound downstream).
 *
 * Ownership: the failure sender borrows dns and qs, copies what it keeps
 * of cfg; jobs and messages are owned by whoever holds them in a list.
 * Diagnostics: "- reports failure ..." log lines;
 * mxgate_reports_failure_total{result}.
 */
#include "reports-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue.h"
#include "version.h"

#define FR_QUEUE_MAX   64        /* jobs waiting for the worker */
#define FR_RATE_SLOTS  512       /* destination domains rate-limited at once */
#define FR_MAX_RCPTS   10        /* Original-Rcpt-To fields per report */
#define FR_HDRS_MAX    (64 * 1024)

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

/* redact_inplace - v with the local part of every address r says to hide
 * (every one when all) replaced; the rest, folding too, kept. */
static void redact_inplace(struct util_buf *out, const struct fr_redact *r, const char *v,
                           size_t n, bool all)
{
	size_t pos = 0, last = 0;
	struct fr_addr a;

	while (next_addr(v, n, &pos, &a)) {
		if (!all && !is_rcpt(r, v, &a))
			continue;
		util_buf_add(out, v + last, a.l - last);
		put_redacted(out, r, v, &a);
		last = a.e;
	}
	util_buf_add(out, v + last, n - last);
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
/* identifiers, not addresses: left as they are */
static const char *const fr_id_fields[] = {"Message-ID", "In-Reply-To", "References",
                                           "Resent-Message-ID", "Content-ID", NULL};

/* reports_failure_redact_headers - see reports-internal.h. */
char *reports_failure_redact_headers(const char *hdrs, size_t len, const unsigned char key[32],
                                     bool all, const struct util_strlist *rcpts, size_t *outlen)
{
	struct fr_redact r = {.key = key, .all = all};
	struct util_buf out;
	struct util_hdr_field f;
	size_t pos = 0;

	for (size_t i = 0; rcpts != NULL && i < rcpts->n; i++)
		add_rcpt(&r, rcpts->v[i], strlen(rcpts->v[i]));
	/* every address of a recipient field counts as a recipient elsewhere */
	while (util_hdr_next(hdrs, len, &pos, &f) == 1) {
		if (!name_in(&f, fr_rcpt_fields) && !name_in(&f, fr_drop_fields))
			continue;
		size_t p2 = 0;
		struct fr_addr a;
		while (next_addr(f.value, f.value_len, &p2, &a))
			add_rcpt(&r, f.value + a.l, a.e - a.l);
	}
	util_buf_init(&out);
	pos = 0;
	while (util_hdr_next(hdrs, len, &pos, &f) == 1) {
		if (name_in(&f, fr_drop_fields))
			continue;
		if (name_in(&f, fr_rcpt_fields) || (all && name_in(&f, fr_sender_fields)))
			rebuild(&out, &r, &f);
		else if (name_in(&f, fr_id_fields))
			util_buf_add(&out, f.raw, f.raw_len);
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
 * A's convention), unfolded; non-ASCII UTF-8 as RFC 2047 encoded words of
 * whole characters; anything else unusable (control bytes, invalid UTF-8,
 * over 200 bytes, no subject): "DMARC failure report for <domain>". */
static void put_subject(struct util_buf *m, const char *hdrs, size_t len, const char *domain)
{
	struct util_hdr_field f;
	size_t pos = 0;
	char s[256];
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
				s[n++] = (char)c;
		}
	}
	while (n > 0 && s[n - 1] == ' ')
		n--;
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

/* b64_body - base64 of data, 76-column CRLF lines (RFC 2045 6.8). */
static void b64_body(struct util_buf *out, const unsigned char *data, size_t len)
{
	for (size_t off = 0; off < len; off += 57) {
		unsigned char line[80];
		size_t n = len - off < 57 ? len - off : 57;
		int w = EVP_EncodeBlock(line, data + off, (int)n);
		util_buf_add(out, line, (size_t)w);
		util_buf_adds(out, "\r\n");
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
	struct fr_redact r = {.key = key, .all = all};

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
	put_subject(&m, j->hdrs, j->hlen, j->header_from);
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
	if (all && j->mail_from[0] != '\0') {
		struct util_buf t;
		util_buf_init(&t);
		redact_inplace(&t, &r, j->mail_from, strlen(j->mail_from), true);
		put_ascii_value(&m, t.data ? t.data : "", t.len);
		util_buf_free(&t);
	} else {
		put_ascii_value(&m, j->mail_from, strlen(j->mail_from));
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
	if (j->delivery != NULL)
		util_buf_printf(&m, "Delivery-Result: %s\r\n", j->delivery);
	util_buf_adds(&m, "\r\n");
	/* part 3: the header block only, redacted (RFC 5965 2 (d)) */
	size_t hl = 0;
	char *h = reports_failure_redact_headers(j->hdrs, j->hlen, key, all, &j->rcpts, &hl);
	if (ascii_only(h, hl)) {
		util_buf_printf(&m,
		                "--%s\r\nContent-Type: text/rfc822-headers\r\n"
		                "Content-Transfer-Encoding: 7bit\r\n\r\n",
		                boundary);
		util_buf_add(&m, h, hl);
	} else {
		/* RFC 6532 header fields: base64 keeps the report 7-bit */
		util_buf_printf(&m,
		                "--%s\r\nContent-Type: text/rfc822-headers; charset=utf-8\r\n"
		                "Content-Transfer-Encoding: base64\r\n\r\n",
		                boundary);
		b64_body(&m, (const unsigned char *)h, hl);
	}
	free(h);
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
	free(j->dkim_selector);
	util_strlist_free(&j->rcpts);
	util_strlist_free(&j->dests);
	free(j);
}

/* ------------------------------------------------------------ the sender */

struct fr_rate {
	char domain[256];
	int64_t hour; /* the window: time / 3600 */
	int count;
	bool logged; /* the suppression of this window was logged */
};

struct reports_failure {
	struct event_base *base;
	const struct config *cfg; /* borrowed; the current one (reload) */
	struct policy_dns *dns;
	struct queue_store *qs;
	/* the worker's own copies (fixed at start: [reports] needs a restart) */
	char *hostname, *email, *selector, *sign_domain, *key_pem;
	unsigned char key[32]; /* the redaction key */
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct reports_failure_job *q, **qtail; /* the worker's queue */
	size_t qlen;
	bool stop;
	struct reports_out *done; /* finished messages, for the loop */
	int pipefd[2];
	struct event *done_ev;
	struct fr_rate *rates; /* FR_RATE_SLOTS, loop thread */
};

/* verify_dest - RFC 9991 5 / RFC 9990 3: a destination outside the policy
 * domain's organizational domain must publish
 * <policy-domain>._report._dmarc.<dest-domain> "v=DMARC1". */
static bool verify_dest(struct reports_failure *fr, const char *domain, const char *to)
{
	const char *dd = strrchr(to, '@') + 1;
	if (reports_same_org(domain, dd))
		return true;
	char *vname = util_xasprintf("%s._report._dmarc.%s", domain, dd);
	char *v = reports_find_dmarc(fr->dns, vname);
	bool ok = v != NULL;
	free(vname);
	free(v);
	return ok;
}

/* work_job - worker: the job's report to each of its destinations. */
static void work_job(struct reports_failure *fr, struct reports_failure_job *j)
{
	char err[256];
	for (size_t i = 0; i < j->dests.n; i++) {
		const char *to = j->dests.v[i];
		if (!verify_dest(fr, j->record_domain, to)) {
			util_log_warn("- reports failure domain=%s ruf=%s not verified: no "
			              "%s._report._dmarc.%s record, skipped",
			              j->record_domain, to, j->record_domain, strrchr(to, '@') + 1);
			util_metrics_inc("mxgate_reports_failure_total", "unverified");
			continue;
		}
		size_t len = 0;
		char *msg = reports_failure_compose(j, fr->email, to, fr->hostname, fr->key,
		                                    j->redact_all, &len);
		char *sig = reports_dkim_sign(fr->key_pem, fr->selector, fr->sign_domain, msg, len,
		                              err, sizeof(err));
		if (sig == NULL) {
			util_log_err("- reports failure domain=%s ruf=%s not signed error=\"%s\"",
			             j->header_from, to, err);
			util_metrics_inc("mxgate_reports_failure_total", "sign_error");
			free(msg);
			continue;
		}
		size_t total = strlen(sig) + len;
		if (j->limits[i] > 0 && total > j->limits[i]) {
			util_log_warn("- reports failure domain=%s ruf=%s size=%zu over the limit "
			              "%llu, skipped",
			              j->header_from, to, total, (unsigned long long)j->limits[i]);
			util_metrics_inc("mxgate_reports_failure_total", "too_big");
			free(sig);
			free(msg);
			continue;
		}
		struct reports_out *o = calloc(1, sizeof(*o));
		if (o != NULL) {
			o->report_id = util_xstrdup(j->header_from);
			o->rcpt = util_xstrdup(to);
			o->sender = util_xstrdup(""); /* the null reverse-path */
			o->msg = util_xasprintf("%s%s", sig, msg);
			o->len = total;
			pthread_mutex_lock(&fr->lock);
			o->next = fr->done;
			fr->done = o;
			pthread_mutex_unlock(&fr->lock);
		}
		free(sig);
		free(msg);
	}
	char c = 'x';
	while (write(fr->pipefd[1], &c, 1) < 0 && errno == EINTR)
		;
}

/* worker - the failure report thread. */
static void *worker(void *arg)
{
	struct reports_failure *fr = arg;
	pthread_mutex_lock(&fr->lock);
	for (;;) {
		while (fr->q == NULL && !fr->stop)
			pthread_cond_wait(&fr->wake, &fr->lock);
		if (fr->stop)
			break; /* exit: what is left is dropped (best effort) */
		struct reports_failure_job *j = fr->q;
		fr->q = j->next;
		if (fr->q == NULL)
			fr->qtail = &fr->q;
		fr->qlen--;
		pthread_mutex_unlock(&fr->lock);
		work_job(fr, j);
		reports_failure_job_free(j);
		pthread_mutex_lock(&fr->lock);
	}
	pthread_mutex_unlock(&fr->lock);
	return NULL;
}

/* inject_cb - a failure report is durable in the queue (or not). */
static void inject_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	char *to = arg;
	(void)cookie;
	if (status == 0) {
		util_log_info("%s reports failure queued to=<%s>", qid ? qid : "-", to);
		util_metrics_inc("mxgate_reports_failure_total", "queued");
	} else {
		util_log_err("- reports failure queue commit failed to=<%s> error=\"%s\"", to,
		             strerror(err));
		util_metrics_inc("mxgate_reports_failure_total", "queue_error");
	}
	free(to);
}

/* queue_done - loop: queue what the worker finished. */
static void queue_done(struct reports_failure *fr)
{
	pthread_mutex_lock(&fr->lock);
	struct reports_out *list = fr->done;
	fr->done = NULL;
	pthread_mutex_unlock(&fr->lock);
	while (list != NULL) {
		struct reports_out *o = list;
		list = o->next;
		o->next = NULL;
		struct queue_envelope *env = queue_envelope_new();
		env->sender = util_xstrdup(o->sender);
		queue_envelope_add_rcpt(env, o->rcpt);
		env->client_addr = util_xstrdup("127.0.0.1");
		env->helo = util_xstrdup(fr->hostname);
		env->prepend = util_xstrdup("");
		env->arrival = (int64_t)time(NULL);
		env->size = (int64_t)o->len;
		env->is_dsn = true; /* locally originated: the outbound route, never bounced */
		queue_inject(fr->qs, env, o->msg, o->len, inject_cb, 0, util_xstrdup(o->rcpt));
		reports_out_free(o);
	}
}

/* done_cb - loop: the worker finished a job. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	char c[64];
	(void)what;
	while (read(fd, c, sizeof(c)) > 0)
		;
	queue_done(arg);
}

/* rate_take - loop: one report to dest's domain in this hour, if the
 * limit allows; false (counted, logged once a window) when it does not. */
static bool rate_take(struct reports_failure *fr, const char *dest, int64_t now)
{
	const char *dom = strrchr(dest, '@') + 1;
	int64_t hour = now / 3600;
	struct fr_rate *slot = NULL, *stale = NULL;
	int limit = fr->cfg->reports_failure_rate;

	for (size_t i = 0; i < FR_RATE_SLOTS; i++) {
		struct fr_rate *r = &fr->rates[i];
		if (r->domain[0] != '\0' && strcasecmp(r->domain, dom) == 0) {
			slot = r;
			break;
		}
		if (stale == NULL && (r->domain[0] == '\0' || r->hour != hour))
			stale = r;
	}
	if (slot == NULL) {
		if (stale == NULL) {
			/* as many domains as slots this hour: a flood, refuse */
			util_metrics_inc("mxgate_reports_failure_total", "rate_limited");
			return false;
		}
		slot = stale;
		snprintf(slot->domain, sizeof(slot->domain), "%s", dom);
		slot->hour = hour;
		slot->count = 0;
		slot->logged = false;
	}
	if (slot->hour != hour) {
		slot->hour = hour;
		slot->count = 0;
		slot->logged = false;
	}
	if (slot->count >= limit) {
		util_metrics_inc("mxgate_reports_failure_total", "rate_limited");
		if (!slot->logged) {
			slot->logged = true;
			util_log_warn("- reports failure rate limit reached domain=%s limit=%d/h: "
			              "further reports to it this hour are suppressed",
			              slot->domain, limit);
		}
		return false;
	}
	slot->count++;
	return true;
}

/* ar_value - the Authentication-Results value among the verdict's header
 * fields (CRLF-separated), malloc'd; NULL when there is none. */
static char *ar_value(const char *headers)
{
	struct util_hdr_field f;
	size_t pos = 0;
	if (headers == NULL)
		return NULL;
	while (util_hdr_next(headers, strlen(headers), &pos, &f) == 1)
		if (util_hdr_name_is(&f, "Authentication-Results"))
			return strndup(f.value, f.value_len);
	return NULL;
}

/* reports_failure_submit - see reports.h. */
int reports_failure_submit(struct reports_failure *fr, const struct policy_msg *pm,
                           const char *verdict_headers, const char *hdrs, size_t hlen,
                           const char *mail_from, const struct util_strlist *rcpts)
{
	struct policy_dmarc_facts f;
	const char *why;

	if (fr == NULL || pm == NULL || policy_msg_dmarc_facts(pm, &f) < 0)
		return 1;
	if ((why = reports_failure_skip(&f)) != NULL)
		return 1;
	if (mail_from == NULL || mail_from[0] == '\0' || reports_failure_is_report(hdrs, hlen)) {
		util_metrics_inc("mxgate_reports_failure_total", "not_reported");
		return 1; /* no loops: reports, bounces, auto-replies */
	}
	struct reports_failure_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return -1;
	int64_t now = (int64_t)time(NULL);
	struct util_strlist all = {0};
	uint64_t lim[8];
	size_t max = (size_t)fr->cfg->reports_failure_max_dests;
	if (max > 8)
		max = 8;
	size_t nd = reports_uri_parse(f.ruf, strlen(f.ruf), &all, lim, max);
	for (size_t i = 0; i < nd; i++) {
		if (!rate_take(fr, all.v[i], now))
			continue;
		j->limits[j->dests.n] = lim[i];
		util_strlist_add(&j->dests, all.v[i]);
	}
	util_strlist_free(&all);
	if (j->dests.n == 0) {
		reports_failure_job_free(j);
		return nd == 0 ? 1 : -1;
	}
	j->arrival = now;
	j->header_from = util_xstrdup(f.header_from);
	j->record_domain = util_xstrdup(f.record_domain ? f.record_domain : f.header_from);
	snprintf(j->ip, sizeof(j->ip), "%s", f.ip);
	j->mail_from = util_xstrdup(mail_from);
	j->ar = ar_value(verdict_headers);
	size_t hl = hlen < FR_HDRS_MAX ? hlen : FR_HDRS_MAX;
	j->hdrs = malloc(hl + 1);
	if (j->hdrs != NULL) {
		memcpy(j->hdrs, hdrs, hl);
		j->hdrs[hl] = '\0';
		j->hlen = hl;
	}
	for (size_t i = 0; rcpts != NULL && i < rcpts->n && i < FR_MAX_RCPTS; i++)
		util_strlist_add(&j->rcpts, rcpts->v[i]);
	j->dkim_aligned = f.dkim_aligned;
	j->spf_aligned = f.spf_aligned;
	for (size_t i = 0; i < f.ndkim && j->dkim_domain == NULL; i++) {
		char a[256], b[256];
		if (f.dkim[i].result == NULL || strcmp(f.dkim[i].result, "pass") == 0)
			continue;
		policy_org_domain(f.dkim[i].domain, a, sizeof(a));
		policy_org_domain(f.header_from, b, sizeof(b));
		if (util_strcaseeq(a, b)) {
			j->dkim_domain = util_xstrdup(f.dkim[i].domain);
			j->dkim_selector = f.dkim[i].selector ? util_xstrdup(f.dkim[i].selector) : NULL;
		}
	}
	j->delivery = strcmp(f.disposition, "reject") == 0       ? "reject"
	              : strcmp(f.disposition, "quarantine") == 0 ? "spam"
	                                                         : "delivered";
	j->redact_all = fr->cfg->reports_failure_redact == 1;
	pthread_mutex_lock(&fr->lock);
	if (fr->qlen >= FR_QUEUE_MAX) {
		pthread_mutex_unlock(&fr->lock);
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
		reports_failure_job_free(j);
		return -1;
	}
	*fr->qtail = j;
	fr->qtail = &j->next;
	fr->qlen++;
	pthread_cond_signal(&fr->wake);
	pthread_mutex_unlock(&fr->lock);
	return 0;
}

/* reports_failure_new - see reports-internal.h. */
struct reports_failure *reports_failure_new(struct event_base *base, const struct config *cfg,
                                            struct policy_dns *dns, struct queue_store *qs,
                                            const char *key_pem, char *err, size_t errlen)
{
	struct reports_failure *fr = calloc(1, sizeof(*fr));
	if (fr == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fr->pipefd[0] = fr->pipefd[1] = -1;
	fr->base = base;
	fr->cfg = cfg;
	fr->dns = dns;
	fr->qs = qs;
	fr->qtail = &fr->q;
	pthread_mutex_init(&fr->lock, NULL);
	pthread_cond_init(&fr->wake, NULL);
	(void)util_metrics_define("mxgate_reports_failure_total", UTIL_METRIC_COUNTER,
	                          "DMARC failure reports (RFC 9991) by outcome (queued, "
	                          "rate_limited, unverified, too_big, dropped, not_reported, "
	                          "sign_error, queue_error)",
	                          "result", NULL, 0);
	fr->hostname = util_xstrdup(cfg->hostname);
	fr->email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                               : util_xasprintf("postmaster@%s", cfg->hostname);
	fr->selector = util_xstrdup(cfg->reports_dkim_selector ? cfg->reports_dkim_selector
	                                                       : "mxgate-reports");
	fr->sign_domain = util_xstrdup(reports_sign_domain(cfg, fr->email));
	fr->key_pem = util_xstrdup(key_pem);
	/* the redaction key: derived from the signing key, so it stays the
	 * same across restarts without another secret file */
	char *material = util_xasprintf("mxgate failure report redaction\n%s", key_pem);
	unsigned int kl = 0;
	EVP_Digest(material, strlen(material), fr->key, &kl, EVP_sha256(), NULL);
	OPENSSL_cleanse(material, strlen(material));
	free(material);
	fr->rates = calloc(FR_RATE_SLOTS, sizeof(*fr->rates));
	if (fr->rates == NULL || pipe2(fr->pipefd, O_CLOEXEC | O_NONBLOCK) < 0) {
		snprintf(err, errlen, "failure reports: %s", strerror(errno ? errno : ENOMEM));
		goto fail;
	}
	fr->done_ev = event_new(base, fr->pipefd[0], EV_READ | EV_PERSIST, done_cb, fr);
	if (fr->done_ev == NULL || event_add(fr->done_ev, NULL) < 0) {
		snprintf(err, errlen, "failure reports: cannot set up events");
		goto fail;
	}
	if (pthread_create(&fr->thread, NULL, worker, fr) != 0) {
		snprintf(err, errlen, "failure reports: cannot start the thread");
		goto fail;
	}
	fr->started = true;
	util_log_info("- reports failure reports on rate=%d/h max_destinations=%d redact=%s",
	              cfg->reports_failure_rate, cfg->reports_failure_max_dests,
	              cfg->reports_failure_redact == 1 ? "addresses" : "recipients");
	return fr;
fail:
	reports_failure_free(fr);
	return NULL;
}

/* reports_failure_set_config - the config after a reload (borrowed). */
void reports_failure_set_config(struct reports_failure *fr, const struct config *cfg)
{
	if (fr != NULL)
		fr->cfg = cfg;
}

/* reports_failure_free - stops the worker after its current job; reports
 * not queued yet are dropped (failure reports are best effort, counted);
 * NULL is a no-op. */
void reports_failure_free(struct reports_failure *fr)
{
	if (fr == NULL)
		return;
	if (fr->started) {
		pthread_mutex_lock(&fr->lock);
		fr->stop = true;
		pthread_cond_signal(&fr->wake);
		pthread_mutex_unlock(&fr->lock);
		pthread_join(fr->thread, NULL);
	}
	while (fr->q != NULL) {
		struct reports_failure_job *j = fr->q;
		fr->q = j->next;
		reports_failure_job_free(j);
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
	}
	for (struct reports_out *o = fr->done; o != NULL; o = o->next)
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
	reports_out_free(fr->done);
	if (fr->done_ev)
		event_free(fr->done_ev);
	if (fr->pipefd[0] >= 0)
		close(fr->pipefd[0]);
	if (fr->pipefd[1] >= 0)
		close(fr->pipefd[1]);
	pthread_mutex_destroy(&fr->lock);
	pthread_cond_destroy(&fr->wake);
	free(fr->rates);
	free(fr->hostname);
	free(fr->email);
	free(fr->selector);
	free(fr->sign_domain);
	if (fr->key_pem != NULL)
		OPENSSL_cleanse(fr->key_pem, strlen(fr->key_pem));
	free(fr->key_pem);
	OPENSSL_cleanse(fr->key, sizeof(fr->key));
	free(fr);
}
