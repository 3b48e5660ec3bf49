/*
 * test_reports_failure.c - the DMARC failure report builder (RFC 9991,
 * reports-failure.c) below its thread: when a report is wanted (DMARC
 * result, ruf, psd=y, the fo= options), what is never reported on (reports,
 * auto-submitted mail), the RFC 6590 style redaction of the header block
 * (recipient fields rebuilt, Received "for" clauses, envelope recipients
 * anywhere, Bcc dropped; every address with redact = addresses), and the
 * ARF message itself: RFC 5965 multipart/report with its three parts in
 * order, the RFC 6591 / RFC 9991 fields, the header block only, 7-bit
 * throughout with non-ASCII header fields (RFC 2047 subject, base64 third
 * part), CRLF only.  Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "reports-internal.h"

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcde";

/* tok - "TOKEN@domain" of an address, by the function under test's own
 * token (its properties are checked in test_redact_token). */
static char *tok(const char *local, const char *domain)
{
	char t[REPORTS_REDACT_LEN + 1];
	reports_redact_local(KEY, local, strlen(local), t);
	return util_xasprintf("%s@%s", t, domain);
}

static void test_redact_token(void **state)
{
	(void)state;
	char a[REPORTS_REDACT_LEN + 1], b[REPORTS_REDACT_LEN + 1], c[REPORTS_REDACT_LEN + 1];
	unsigned char key2[32];
	memcpy(key2, KEY, 32);
	key2[0] ^= 1;
	reports_redact_local(KEY, "alice", 5, a);
	reports_redact_local(KEY, "ALICE", 5, b);
	assert_int_equal(strlen(a), REPORTS_REDACT_LEN);
	assert_string_equal(a, b); /* local parts compared case-insensitively */
	for (const char *p = a; *p; p++)
		assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
	reports_redact_local(KEY, "bob", 3, c);
	assert_string_not_equal(a, c);
	reports_redact_local(key2, "alice", 5, c); /* keyed: another key, another token */
	assert_string_not_equal(a, c);
	assert_null(strstr(a, "alice"));
}

/* when a failure report is wanted */
static const struct {
	const char *dmarc, *ruf, *psd;
	unsigned fo;
	const char *spf;
	const char *dkim; /* one signature's result, or NULL */
	const char *want; /* NULL = wanted */
} skip_cases[] = {
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_0, "fail", NULL, NULL},
    {"fail", "mailto:f@x.test", "n", POLICY_DMARC_FO_1, "pass", NULL, NULL},
    {"pass", "mailto:f@x.test", "", POLICY_DMARC_FO_1, "fail", NULL, "not_fail"},
    {"none", "mailto:f@x.test", "", POLICY_DMARC_FO_0, "fail", NULL, "not_fail"},
    {"temperror", "mailto:f@x.test", "", POLICY_DMARC_FO_0, "fail", NULL, "not_fail"},
    {"fail", NULL, "", POLICY_DMARC_FO_1, "fail", NULL, "no_ruf"},
    {"fail", "", "", POLICY_DMARC_FO_1, "fail", NULL, "no_ruf"},
    /* RFC 9991 2: no ruf of a PSD record */
    {"fail", "mailto:f@x.test", "y", POLICY_DMARC_FO_1, "fail", NULL, "psd"},
    /* fo=d: only when a DKIM signature failed to verify */
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D, "fail", NULL, "fo"},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D, "none", "fail", NULL},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D, "none", "permerror", NULL},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D, "none", "pass", "fo"},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D, "none", "temperror", "fo"},
    /* fo=s: only when SPF failed */
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_S, "fail", NULL, NULL},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_S, "softfail", NULL, NULL},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_S, "pass", "fail", "fo"},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_S, "none", NULL, "fo"},
    {"fail", "mailto:f@x.test", "", POLICY_DMARC_FO_D | POLICY_DMARC_FO_S, "pass", "fail",
     NULL},
};

static void test_skip(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(skip_cases) / sizeof(skip_cases[0]); i++) {
		struct policy_dmarc_facts f;
		memset(&f, 0, sizeof(f));
		f.dmarc = skip_cases[i].dmarc;
		f.ruf = skip_cases[i].ruf;
		snprintf(f.psd, sizeof(f.psd), "%s", skip_cases[i].psd);
		f.fo = skip_cases[i].fo;
		f.spf_result = skip_cases[i].spf;
		if (skip_cases[i].dkim != NULL) {
			f.ndkim = 1;
			f.dkim[0].domain = "x.test";
			f.dkim[0].selector = "s";
			f.dkim[0].result = skip_cases[i].dkim;
		}
		const char *got = reports_failure_skip(&f);
		const char *want = skip_cases[i].want;
		if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
			fail_msg("case %zu: %s, want %s", i, got ? got : "wanted",
			         want ? want : "wanted");
	}
}

/* never reported on: reports and auto-submitted messages (no loops) */
static const struct {
	const char *hdrs;
	bool report;
} loop_cases[] = {
    {"From: a@x.test\r\nSubject: hi\r\n", false},
    {"Content-Type: multipart/report; report-type=feedback-report;\r\n boundary=x\r\n", true},
    {"Content-Type:\r\n Multipart/Report; report-type=delivery-status\r\n", true},
    {"Content-Type: multipart/mixed\r\n", false},
    {"Auto-Submitted: auto-replied\r\n", true},
    {"Auto-Submitted: auto-generated (failure)\r\n", true},
    {"Auto-Submitted: no\r\n", false},
    {"Auto-Submitted: No (comment)\r\n", false},
    {"Auto-Submitted: nope\r\n", true},
};

static void test_is_report(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(loop_cases) / sizeof(loop_cases[0]); i++)
		if (reports_failure_is_report(loop_cases[i].hdrs, strlen(loop_cases[i].hdrs)) !=
		    loop_cases[i].report)
			fail_msg("case %zu: %s", i, loop_cases[i].hdrs);
}

static const char HDRS[] =
    "Received: from client.example.net (client.example.net [192.0.2.7])\r\n"
    "\tby relay.example.net with ESMTP id 1234\r\n"
    "\tfor <Alice.Smith@example.test>; Tue, 2 Dec 2026 10:00:00 +0000\r\n"
    "From: \"Pay Desk\" <billing@bank.test>\r\n"
    "To: \"Alice Smith\" <alice.smith@example.test>, bob@example.test\r\n"
    "Cc: carol@other.test (Carol)\r\n"
    "Bcc: secret@example.test\r\n"
    "Reply-To: fraud@bank.test\r\n"
    "Message-ID: <abc.123@bank.test>\r\n"
    "X-Mentions: please forward to bob@example.test today\r\n"
    /* no address boundary a parser agrees on: still redacted (fuzz) */
    "X-Chain: a@ALICE.smith@example.test\r\n"
    "Subject: Your invoice\r\n"
    "Delivered-To: dave@example.test\r\n";

static void test_redact_headers(void **state)
{
	(void)state;
	struct util_strlist rcpts = {0};
	util_strlist_add(&rcpts, "<erin@example.test>");
	size_t n = 0;
	char *alice = tok("alice.smith", "example.test"), *bob = tok("bob", "example.test"),
	     *carol = tok("carol", "other.test"), *dave = tok("dave", "example.test"),
	     *billing = tok("billing", "bank.test"), *fraud = tok("fraud", "bank.test");

	/* recipients: every recipient address, in every field */
	char *h = reports_failure_redact_headers(HDRS, strlen(HDRS), KEY, false, &rcpts, &n);
	assert_int_equal(n, strlen(h));
	static const char *const gone[] = {"alice",  "Alice", "bob@",  "carol@", "dave@",
	                                   "secret", "Bcc",   "Smith", "(Carol)"};
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		if (strstr(h, gone[i]) != NULL)
			fail_msg("\"%s\" left in:\n%s", gone[i], h);
	assert_null(strcasestr(h, "alice.smith@example.test"));
	char *want = util_xasprintf("To: <%s>,\r\n <%s>\r\n", alice, bob);
	assert_non_null(strstr(h, want));
	free(want);
	want = util_xasprintf("Cc: <%s>\r\n", carol);
	assert_non_null(strstr(h, want));
	free(want);
	want = util_xasprintf("Delivered-To: <%s>\r\n", dave);
	assert_non_null(strstr(h, want));
	free(want);
	/* Received keeps its folding; its for clause is redacted */
	want = util_xasprintf("\tfor <%s>; Tue, 2 Dec 2026", alice);
	assert_non_null(strstr(h, want));
	free(want);
	/* a recipient's address elsewhere too */
	want = util_xasprintf("X-Mentions: please forward to %s today\r\n", bob);
	assert_non_null(strstr(h, want));
	free(want);
	/* senders and identifiers stay */
	assert_non_null(strstr(h, "From: \"Pay Desk\" <billing@bank.test>\r\n"));
	assert_non_null(strstr(h, "Reply-To: fraud@bank.test\r\n"));
	assert_non_null(strstr(h, "Message-ID: <abc.123@bank.test>\r\n"));
	assert_non_null(strstr(h, "Subject: Your invoice\r\n"));
	free(h);

	/* addresses: the senders' too; message identifiers are no addresses */
	h = reports_failure_redact_headers(HDRS, strlen(HDRS), KEY, true, NULL, &n);
	assert_null(strstr(h, "billing@"));
	assert_null(strstr(h, "fraud@"));
	assert_null(strstr(h, "Pay Desk"));
	want = util_xasprintf("From: <%s>\r\n", billing);
	assert_non_null(strstr(h, want));
	free(want);
	want = util_xasprintf("Reply-To: <%s>\r\n", fraud);
	assert_non_null(strstr(h, want));
	free(want);
	assert_non_null(strstr(h, "Message-ID: <abc.123@bank.test>\r\n"));
	free(h);
	/* ... unless it holds a recipient's address (fuzz_failure_report) */
	const char *mid = "To: dave@example.test\r\nReferences: <a@b.test>\r\n <dave@example.test>\r\n";
	h = reports_failure_redact_headers(mid, strlen(mid), KEY, false, NULL, &n);
	want = util_xasprintf("References: <a@b.test>\r\n <%s>\r\n", dave);
	assert_non_null(strstr(h, want));
	free(want);
	free(h);

	/* quoted and non-ASCII (RFC 6532) local parts */
	const char *q = "To: \"a b\"@example.test, J\xc3\xb6rg@example.test\r\n";
	h = reports_failure_redact_headers(q, strlen(q), KEY, false, NULL, &n);
	assert_null(strstr(h, "a b"));
	assert_null(strstr(h, "J\xc3\xb6rg"));
	char *jq = tok("J\xc3\xb6rg", "example.test");
	assert_non_null(strstr(h, jq));
	free(jq);
	free(h);
	/* a field without an address */
	q = "To: undisclosed recipients\r\n";
	h = reports_failure_redact_headers(q, strlen(q), KEY, false, NULL, &n);
	assert_string_equal(h, "To: undisclosed-recipients:;\r\n");
	free(h);

	free(alice);
	free(bob);
	free(carol);
	free(dave);
	free(billing);
	free(fraud);
	util_strlist_free(&rcpts);
}

/* part - the n-th MIME part (1-based) of msg between --boundary lines:
 * its header block and body, malloc'd; NULL when there is none. */
static char *part(const char *msg, const char *boundary, int n, char **body)
{
	char *delim = util_xasprintf("\r\n--%s", boundary);
	const char *p = msg;
	for (int i = 0; i < n; i++) {
		p = strstr(p, delim);
		if (p == NULL) {
			free(delim);
			return NULL;
		}
		p += strlen(delim);
	}
	if (strncmp(p, "--", 2) == 0 || strncmp(p, "\r\n", 2) != 0) {
		free(delim);
		return NULL;
	}
	p += 2;
	const char *e = strstr(p, delim), *eoh = strstr(p, "\r\n\r\n");
	assert_non_null(e);
	assert_true(eoh != NULL && eoh < e);
	*body = strndup(eoh + 4, (size_t)(e - eoh - 4));
	free(delim);
	return strndup(p, (size_t)(eoh - p + 2));
}

static struct reports_failure_job *job(const char *hdrs)
{
	struct reports_failure_job *j = calloc(1, sizeof(*j));
	j->header_from = util_xstrdup("bank.test");
	j->record_domain = util_xstrdup("bank.test");
	j->mail_from = util_xstrdup("bounce@bank.test");
	snprintf(j->ip, sizeof(j->ip), "192.0.2.7");
	j->ar = util_xstrdup(" mx.example.test; spf=fail smtp.mailfrom=bounce@bank.test;\r\n"
	                     "\tdkim=fail header.d=bank.test header.s=s1; dmarc=fail "
	                     "header.from=bank.test");
	j->hdrs = util_xstrdup(hdrs);
	j->hlen = strlen(hdrs);
	util_strlist_add(&j->rcpts, "alice.smith@example.test");
	util_strlist_add(&j->rcpts, "<bob@example.test>");
	j->dkim_domain = util_xstrdup("bank.test");
	j->dkim_selector = util_xstrdup("s1");
	j->spf_domain = util_xstrdup("bank.test");
	util_strlist_add(&j->spf_dns, "v=spf1 include:\"q\\x\" -all");
	j->delivery = "reject";
	j->arrival = 1764669600; /* Tue, 02 Dec 2025 10:00:00 +0000 */
	return j;
}

static void check_7bit_crlf(const char *msg)
{
	for (const char *p = msg; *p; p++) {
		assert_true((unsigned char)*p < 0x80);
		if (*p == '\n')
			assert_true(p > msg && p[-1] == '\r');
	}
}

/* a recipient's address in RFC 2047 encoded words (a reader shows it
 * decoded): redacted as in plain text; an encoded word without one stays
 * as it is.  {field as sent ("%s": base64 of b64), must be kept as is,
 * what the output must hold (%s: the token), must not hold} */
static const struct {
	const char *field, *b64;
	bool kept;
	const char *want, *never;
} ewcases[] = {
    {"Subject: =?UTF-8?B?%s?=\r\n", "Hi alice.smith@example.test!", false,
     "Subject: Hi %s!\r\n", NULL},
    {"Subject: =?ISO-8859-1?Q?alice.smith=40example.test_now?=\r\n", NULL, false,
     "Subject: %s now\r\n", NULL},
    /* split over two words: the blank between them is not shown */
    {"X-Note: =?UTF-8?Q?Alice.Smith?=\r\n =?utf-8?b?%s?=\r\n", "@example.test", false,
     "X-Note: %s\r\n", NULL},
    /* a decoded CR LF makes no line of its own */
    {"X-A: =?UTF-8?Q?alice.smith@example.test=0D=0AX-Injected:_1?=\r\n", NULL, false,
     "X-A: %s??X-Injected: 1\r\n", "\nX-Injected"},
    {"Subject: =?UTF-8?B?%s?= =?UTF-8?Q?caf=C3=A9?=\r\n", "Hello", true, NULL, NULL},
    {"Subject: =?UTF-8?B?%s?=\r\n", "bob@example.test", true, NULL, NULL},
    {"Subject: =?UTF-8?X?alice.smith@example.test?=\r\n", NULL, false, "Subject: =?UTF-8?X?%s?=\r\n",
     NULL},
};

static void test_redact_encoded_words(void **state)
{
	(void)state;
	struct util_strlist rcpts = {0};
	util_strlist_add(&rcpts, "<alice.smith@example.test>");
	char *alice = tok("alice.smith", "example.test");
	for (size_t i = 0; i < sizeof(ewcases) / sizeof(ewcases[0]); i++) {
		unsigned char b64[128] = "";
		if (ewcases[i].b64 != NULL)
			EVP_EncodeBlock(b64, (const unsigned char *)ewcases[i].b64,
			                (int)strlen(ewcases[i].b64));
		char *f = util_xasprintf(ewcases[i].field, (char *)b64);
		size_t n = 0;
		char *h = reports_failure_redact_headers(f, strlen(f), KEY, false, &rcpts, &n);
		print_message("case %zu: %s", i, h);
		if (ewcases[i].kept)
			assert_string_equal(h, f);
		if (ewcases[i].want != NULL) {
			char *w = util_xasprintf(ewcases[i].want, alice);
			if (strstr(h, w) == NULL)
				fail_msg("case %zu: no %s in %s", i, w, h);
			free(w);
		}
		if (ewcases[i].never != NULL)
			assert_null(strstr(h, ewcases[i].never));
		free(h);
		/* the report's own subject, from the same field */
		if (strncmp(f, "Subject:", 8) == 0 && !ewcases[i].kept) {
			struct reports_failure_job *j = job(f);
			size_t len = 0;
			char *msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
			                                    "mx.example.test", KEY, false, &len);
			check_7bit_crlf(msg);
			const char *subj = strstr(msg, "\r\nSubject: ");
			assert_non_null(subj);
			const char *eol = strstr(subj + 2, "\r\n");
			char *line = strndup(subj + 2, (size_t)(eol - subj - 2));
			if (strstr(line, alice) == NULL || (b64[0] && strstr(line, (char *)b64) != NULL))
				fail_msg("case %zu: report subject %s", i, line);
			free(line);
			free(msg);
			reports_failure_job_free(j);
		}
		free(f);
	}
	free(alice);
	util_strlist_free(&rcpts);
}

/* the per destination domain rate limit: a limit a window per domain (any
 * case, a trailing dot or not), and a full table reuses the slot used
 * least recently instead of refusing every new domain for the rest of the
 * hour (an attacker with as many ruf domains as slots silenced all
 * failure reports that way). */
static const struct {
	const char *dest;
	int64_t now;
	bool ok, first;
} rsteps[] = {
    {"a@d1.test", 7200, true, false},
    {"b@d1.test", 7201, true, false},
    {"c@D1.Test.", 7202, false, true}, /* the same domain: over the limit of 2 */
    {"a@d1.test", 7203, false, false}, /* logged once */
    {"a@d2.test", 7204, true, false},
    {"a@d3.test", 7205, true, false},
    {"a@d4.test", 7206, true, false}, /* the table (4) is full */
    {"a@d5.test", 7207, true, false}, /* takes d1's slot, the least recent */
    {"a@d2.test", 7208, true, false}, /* d2 kept its count: 2 of 2 */
    {"a@d2.test", 7209, false, true},
    {"a@d1.test", 7210, true, false}, /* flooded out: a new window (takes d3's) */
    {"a@d2.test", 10800, true, false}, /* the next hour */
};

static void test_rate_limit(void **state)
{
	(void)state;
	struct reports_failure_rate slots[4];
	memset(slots, 0, sizeof(slots));
	for (size_t i = 0; i < sizeof(rsteps) / sizeof(rsteps[0]); i++) {
		bool first = true;
		bool ok = reports_failure_rate_take(slots, 4, rsteps[i].dest, rsteps[i].now, 2,
		                                    &first);
		if (ok != rsteps[i].ok || first != rsteps[i].first)
			fail_msg("step %zu (%s): ok=%d first=%d", i, rsteps[i].dest, ok, first);
	}
}

/* a line of short addresses grows past 998 octets when redacted (a token
 * is longer than the local part): the header part goes base64, every line
 * of the report stays within RFC 5322's limit */
static void test_long_lines(void **state)
{
	(void)state;
	struct util_buf h;
	util_buf_init(&h);
	util_buf_adds(&h, "From: billing@bank.test\r\nX-List:");
	for (int i = 0; i < 100; i++)
		util_buf_adds(&h, " a@b.test");
	util_buf_adds(&h, "\r\nSubject: hello\r\n");
	struct reports_failure_job *j = job(h.data);
	size_t len = 0;
	char *msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
	                                    "mx.example.test", KEY, true, &len);
	check_7bit_crlf(msg);
	size_t col = 0, longest = 0;
	for (size_t i = 0; i < len; i++) {
		col = msg[i] == '\n' ? 0 : col + 1;
		longest = col > longest ? col : longest;
	}
	assert_true(longest <= 999); /* 998 and the CR */
	assert_non_null(strstr(msg, "Content-Type: text/rfc822-headers; charset=utf-8\r\n"
	                            "Content-Transfer-Encoding: base64\r\n"));
	free(msg);
	reports_failure_job_free(j);
	util_buf_free(&h);
}

static void test_compose(void **state)
{
	(void)state;
	struct reports_failure_job *j = job(HDRS);
	size_t len = 0;
	char *msg = reports_failure_compose(j, "dmarc-reports@mx.example.test", "ruf@bank.test",
	                                    "mx.example.test", KEY, false, &len);
	assert_int_equal(len, strlen(msg));
	check_7bit_crlf(msg);
	assert_true(strncmp(msg, "From: <dmarc-reports@mx.example.test>\r\nTo: <ruf@bank.test>\r\n",
	                    60) == 0);
	assert_non_null(strstr(msg, "\r\nSubject: FW: Your invoice\r\n"));
	assert_non_null(strstr(msg, "\r\nAuto-Submitted: auto-generated\r\n"));
	const char *ct = strstr(msg, "\r\nContent-Type: multipart/report; "
	                             "report-type=feedback-report;\r\n boundary=\"");
	assert_non_null(ct);
	char boundary[80];
	assert_int_equal(sscanf(strstr(ct, "boundary=\"") + 10, "%79[^\"]", boundary), 1);

	char *b1 = NULL, *b2 = NULL, *b3 = NULL, *b4 = NULL;
	char *h1 = part(msg, boundary, 1, &b1), *h2 = part(msg, boundary, 2, &b2),
	     *h3 = part(msg, boundary, 3, &b3), *h4 = part(msg, boundary, 4, &b4);
	assert_non_null(h1);
	assert_non_null(h2);
	assert_non_null(h3);
	assert_null(h4); /* exactly three parts, then the closing delimiter */
	char *close = util_xasprintf("\r\n--%s--\r\n", boundary);
	assert_string_equal(msg + len - strlen(close), close);
	free(close);
	assert_non_null(strstr(h1, "Content-Type: text/plain"));
	assert_non_null(strstr(h2, "Content-Type: message/feedback-report\r\n"));
	assert_non_null(strstr(h3, "Content-Type: text/rfc822-headers\r\n"));
	assert_non_null(strstr(h3, "Content-Transfer-Encoding: 7bit\r\n"));

	/* RFC 5965 3 / RFC 6591 3.1 / RFC 9991 4 fields */
	char *alice = tok("alice.smith", "example.test"), *bob = tok("bob", "example.test");
	char *r1 = util_xasprintf("\r\nOriginal-Rcpt-To: <%s>\r\n", alice),
	     *r2 = util_xasprintf("\r\nOriginal-Rcpt-To: <%s>\r\n", bob);
	char *fb = util_xasprintf("\r\n%s", b2);
	static const char *const fields[] = {
	    "\r\nFeedback-Type: auth-failure\r\n",
	    "\r\nVersion: 1\r\n",
	    "\r\nUser-Agent: mxgate/",
	    "\r\nAuth-Failure: dmarc\r\n",
	    "\r\nOriginal-Mail-From: <bounce@bank.test>\r\n",
	    "\r\nArrival-Date: Tue, 02 Dec 2025 10:00:00 +0000\r\n",
	    "\r\nSource-IP: 192.0.2.7\r\n",
	    "\r\nReported-Domain: bank.test\r\n",
	    "\r\nIdentity-Alignment: dkim, spf\r\n",
	    "\r\nDKIM-Domain: bank.test\r\nDKIM-Identity: @bank.test\r\nDKIM-Selector: s1\r\n",
	    "\r\nDelivery-Result: reject\r\n",
	    /* RFC 6591 3.2, quoted-string escapes */
	    "\r\nSPF-DNS: txt : bank.test :\r\n \"v=spf1 include:\\\"q\\\\x\\\" -all\"\r\n",
	    ("\r\nAuthentication-Results: mx.example.test; spf=fail "
	     "smtp.mailfrom=bounce@bank.test;\r\n\tdkim=fail"),
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strstr(fb, fields[i]) == NULL)
			fail_msg("no %s in\n%s", fields[i], fb);
	assert_non_null(strstr(fb, r1));
	assert_non_null(strstr(fb, r2));
	assert_null(strstr(msg, "alice"));
	assert_null(strstr(msg, "bob@"));
	/* part 3: the header block only, redacted */
	assert_non_null(strstr(b3, "Subject: Your invoice\r\n"));
	assert_null(strstr(b3, "secret"));
	assert_true(strncmp(b3, "Received: from client.example.net", 33) == 0);

	free(r1);
	free(r2);
	free(fb);
	free(alice);
	free(bob);
	free(msg);

	/* redact = addresses: the sender too, everywhere */
	msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test", "mx.example.test",
	                              KEY, true, &len);
	assert_null(strstr(msg, "bounce@"));
	assert_null(strstr(msg, "billing@"));
	char *bounce = tok("bounce", "bank.test");
	char *omf = util_xasprintf("\r\nOriginal-Mail-From: <%s>\r\n", bounce);
	assert_non_null(strstr(msg, omf));
	free(omf);
	free(bounce);
	free(msg);

	/* a forger's MAIL FROM that is a recipient's own address ("from
	 * yourself" phishing): redacted in Original-Mail-From too, whatever
	 * the mode */
	for (int all = 0; all < 2; all++) {
		free(j->mail_from);
		j->mail_from = util_xstrdup("Alice.Smith@example.test");
		msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
		                              "mx.example.test", KEY, all, &len);
		char *a = tok("alice.smith", "example.test");
		char *want = util_xasprintf("\r\nOriginal-Mail-From: <%s>\r\n", a);
		if (strstr(msg, want) == NULL)
			fail_msg("all=%d: no %s in\n%s", all, want, msg);
		assert_null(strcasestr(msg, "alice.smith@"));
		free(want);
		free(a);
		free(msg);
	}
	free(h1);
	free(h2);
	free(h3);
	free(b1);
	free(b2);
	free(b3);
	free(b4);
	reports_failure_job_free(j);
}

static void test_compose_non_ascii(void **state)
{
	(void)state;
	/* RFC 6532 header fields: a UTF-8 subject and recipient */
	const char *hdrs = "From: billing@bank.test\r\n"
	                   "To: J\xc3\xb6rg <j\xc3\xb6rg@example.test>\r\n"
	                   "Subject: Rechnung f\xc3\xbcr J\xc3\xb6rg \xe2\x82\xac 100 - "
	                   "eine sehr lange Betreffzeile mit Umlauten \xc3\xa4\xc3\xb6\xc3\xbc\r\n";
	struct reports_failure_job *j = job(hdrs);
	size_t len = 0;
	char *msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
	                                    "mx.example.test", KEY, false, &len);
	check_7bit_crlf(msg);
	/* the subject: whole characters in encoded words of at most 75 */
	const char *s = strstr(msg, "\r\nSubject: FW: =?UTF-8?B?");
	assert_non_null(s);
	struct util_buf dec;
	util_buf_init(&dec);
	const char *p = s + 15;
	while (strncmp(p, "=?UTF-8?B?", 10) == 0) {
		const char *e = strstr(p + 10, "?=");
		assert_non_null(e);
		assert_true(e + 2 - p <= 75);
		unsigned char out[128];
		int n = EVP_DecodeBlock(out, (const unsigned char *)p + 10, (int)(e - p - 10));
		assert_true(n > 0);
		int pad = (e[-1] == '=') + (e[-2] == '=');
		util_buf_add(&dec, out, (size_t)(n - pad));
		p = e + 2;
		if (strncmp(p, "\r\n ", 3) == 0)
			p += 3;
	}
	assert_true(strncmp(p, "\r\n", 2) == 0);
	util_buf_adds(&dec, "");
	assert_string_equal(dec.data, "Rechnung f\xc3\xbcr J\xc3\xb6rg \xe2\x82\xac 100 - "
	                              "eine sehr lange Betreffzeile mit Umlauten "
	                              "\xc3\xa4\xc3\xb6\xc3\xbc");
	util_buf_free(&dec);
	/* part 3 in base64, decoding to the redacted UTF-8 header block */
	const char *h3 = strstr(msg, "Content-Type: text/rfc822-headers; charset=utf-8\r\n"
	                             "Content-Transfer-Encoding: base64\r\n\r\n");
	assert_non_null(h3);
	h3 = strstr(h3, "\r\n\r\n") + 4;
	struct util_buf raw;
	util_buf_init(&raw);
	while (*h3 != '\r' && *h3 != '-') {
		const char *e = strstr(h3, "\r\n");
		unsigned char out[128];
		int n = EVP_DecodeBlock(out, (const unsigned char *)h3, (int)(e - h3));
		int pad = (e[-1] == '=') + (e[-2] == '=');
		util_buf_add(&raw, out, (size_t)(n - pad));
		h3 = e + 2;
	}
	util_buf_adds(&raw, "");
	assert_non_null(strstr(raw.data, "Subject: Rechnung f\xc3\xbcr"));
	assert_null(strstr(raw.data, "j\xc3\xb6rg@"));
	assert_null(strstr(raw.data, "J\xc3\xb6rg <")); /* the display name is gone too */
	char *t = tok("j\xc3\xb6rg", "example.test");
	assert_non_null(strstr(raw.data, t));
	free(t);
	util_buf_free(&raw);
	free(msg);
	reports_failure_job_free(j);

	/* a subject that is not UTF-8, or none: the fallback */
	static const char *const bad[] = {"Subject: caf\xe9\r\nTo: a@example.test\r\n",
	                                  "To: a@example.test\r\n", "Subject: \r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = job(bad[i]);
		msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
		                              "mx.example.test", KEY, false, &len);
		check_7bit_crlf(msg);
		assert_non_null(strstr(msg, "\r\nSubject: DMARC failure report for bank.test\r\n"));
		free(msg);
		reports_failure_job_free(j);
	}
}

/* the report's own subject is redacted like the header part: a phish
 * names its victim there (found while writing fuzz_failure_report) */
static void test_subject_redacted(void **state)
{
	(void)state;
	const char *hdrs = "To: Alice.Smith@example.test\r\n"
	                   "Subject: Account alice.smith@example.test suspended,\r\n"
	                   " write to help@bank.test\r\n";
	struct reports_failure_job *j = job(hdrs);
	size_t len = 0;
	char *msg = reports_failure_compose(j, "r@mx.example.test", "ruf@bank.test",
	                                    "mx.example.test", KEY, false, &len);
	char *alice = tok("alice.smith", "example.test");
	char *want = util_xasprintf("\r\nSubject: FW: Account %s suspended, write to "
	                            "help@bank.test\r\n",
	                            alice);
	if (strstr(msg, want) == NULL)
		fail_msg("no %s in\n%s", want, msg);
	assert_null(strstr(msg, "alice"));
	assert_null(strstr(msg, "Alice"));
	free(want);
	free(alice);
	free(msg);
	reports_failure_job_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_redact_token), cmocka_unit_test(test_skip),
	    cmocka_unit_test(test_is_report),    cmocka_unit_test(test_redact_headers),
	    cmocka_unit_test(test_compose),      cmocka_unit_test(test_compose_non_ascii),
	    cmocka_unit_test(test_subject_redacted), cmocka_unit_test(test_redact_encoded_words),
	    cmocka_unit_test(test_rate_limit), cmocka_unit_test(test_long_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
