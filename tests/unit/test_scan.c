/*
 * test_scan.c - table-driven tests of scan/: clamd reply lines (plain and
 * IDSESSION-numbered, clean, infected, errors, garbage, hostile signature
 * names) and the X-Virus-Scan header built from a result; rspamd's
 * /checkv2 JSON answers (actions, scores, symbols, hostile names, garbage)
 * and the X-Spam-* fields built from them (folding).
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <string.h>

#include "queue.h"
#include "scan.h"

static const struct {
	const char *in;
	int rc;
	unsigned long id;
	enum scan_status status;
	const char *name;
} reply_cases[] = {
    {"stream: OK", 0, 0, SCAN_CLEAN, ""},
    {"1: stream: OK", 0, 1, SCAN_CLEAN, ""},
    {"42: stream: OK", 0, 42, SCAN_CLEAN, ""},
    {"stream: OK\n", 0, 0, SCAN_CLEAN, ""},
    {"stream: Eicar-Test-Signature FOUND", 0, 0, SCAN_INFECTED, "Eicar-Test-Signature"},
    {"3: stream: Win.Test.EICAR_HDB-1 FOUND", 0, 3, SCAN_INFECTED, "Win.Test.EICAR_HDB-1"},
    {"stream: Mxgate-Test-EICAR.UNOFFICIAL FOUND", 0, 0, SCAN_INFECTED,
     "Mxgate-Test-EICAR.UNOFFICIAL"},
    /* ExtendedDetectionInfo: "NAME(hash:size)"; spaces, ';' and quotes made safe */
    {"stream: Eicar(44d88612fea8a8f36de82e1278abb02f:68) FOUND", 0, 0, SCAN_INFECTED,
     "Eicar(44d88612fea8a8f36de82e1278abb02f:68)"},
    {"stream: a;b\"c d\\e FOUND", 0, 0, SCAN_INFECTED, "a_b_c_d_e"},
    {"INSTREAM size limit exceeded. ERROR", 0, 0, SCAN_FAILED, "clamd_size_limit"},
    {"2: INSTREAM size limit exceeded. ERROR", 0, 2, SCAN_FAILED, "clamd_size_limit"},
    {"stream: Can't allocate memory ERROR", 0, 0, SCAN_FAILED, "clamd_error"},
    {"UNKNOWN COMMAND", -1, 0, SCAN_CLEAN, ""},
    {"", -1, 0, SCAN_CLEAN, ""},
    {"stream:", -1, 0, SCAN_CLEAN, ""},
    {"stream: ", -1, 0, SCAN_CLEAN, ""},
    {"stream:  FOUND", -1, 0, SCAN_CLEAN, ""},
    {"stream: OKAY", -1, 0, SCAN_CLEAN, ""},
    {"PONG", -1, 0, SCAN_CLEAN, ""},
    {"1 stream: OK", -1, 0, SCAN_CLEAN, ""},
    {"1:stream: OK", -1, 0, SCAN_CLEAN, ""},
    {"1: ", -1, 0, SCAN_CLEAN, ""},
    {"file: OK", -1, 0, SCAN_CLEAN, ""},
};

static void test_reply(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		struct scan_result r;
		unsigned long id = 99;
		int rc =
		    scan_clamd_parse_reply(reply_cases[i].in, strlen(reply_cases[i].in), &id, &r);
		if (rc != reply_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d, want %d", i, reply_cases[i].in, rc,
			         reply_cases[i].rc);
		if (rc < 0)
			continue;
		assert_int_equal(id, reply_cases[i].id);
		assert_int_equal(r.status, reply_cases[i].status);
		assert_string_equal(r.name, reply_cases[i].name);
	}
}

/* a signature name longer than the result buffer is cut, still terminated */
static void test_reply_long_name(void **state)
{
	(void)state;
	char line[600] = "stream: ";
	memset(line + 8, 'A', 500);
	strcpy(line + 508, " FOUND");
	struct scan_result r;
	unsigned long id;
	assert_int_equal(scan_clamd_parse_reply(line, strlen(line), &id, &r), 0);
	assert_int_equal(r.status, SCAN_INFECTED);
	assert_int_equal(strlen(r.name), sizeof(r.name) - 1);
	/* over the protocol bound: refused */
	char big[5000];
	memset(big, 'x', sizeof(big));
	assert_int_equal(scan_clamd_parse_reply(big, sizeof(big), &id, &r), -1);
}

static const struct {
	enum scan_status status;
	const char *name;
	const char *want;
} header_cases[] = {
    {SCAN_CLEAN, "", "X-Virus-Scan: clean; scanner=clamav; by=mx.example.test\r\n"},
    {SCAN_INFECTED, "Eicar-Test-Signature",
     "X-Virus-Scan: infected; virus=Eicar-Test-Signature; scanner=clamav; by=mx.example.test\r\n"},
    {SCAN_FAILED, "timeout",
     "X-Virus-Scan: unscanned; reason=timeout; scanner=clamav; by=mx.example.test\r\n"},
};

static void test_header(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]); i++) {
		struct scan_result r = {.status = header_cases[i].status};
		strcpy(r.name, header_cases[i].name);
		struct util_buf b;
		util_buf_init(&b);
		scan_header(&b, &r, "mx.example.test");
		assert_string_equal(b.data, header_cases[i].want);
		util_buf_free(&b);
	}
}

static const struct {
	const char *field;
	bool ours;
} drop_cases[] = {
    {"X-Virus-Scan: clean\r\n", true},
    {"x-virus-scan: clean\r\n", true},
    {"X-Virus-Scanned: clamav\r\n", false},
    {"Subject: X-Virus-Scan\r\n", false},
    {"X-Mxgate-Quarantine: reason=virus\r\n", true},
    /* red team: a forged release stamp reached the downstream */
    {"X-Mxgate-Released: by=postmaster; at=now\r\n", true},
    {"x-mxgate-queue-id: 1234\r\n", true},
    {"X-Mxgatex: 1\r\n", false},
};

static void test_drop(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(drop_cases) / sizeof(drop_cases[0]); i++) {
		const char *s = drop_cases[i].field;
		size_t pos = 0;
		struct util_hdr_field f;
		assert_int_equal(util_hdr_next(s, strlen(s), &pos, &f), 1);
		assert_int_equal(scan_is_our_header(&f), drop_cases[i].ours);
	}
}

static const struct {
	const char *json;
	int rc;
	enum scan_spam_action action;
	double score, required;
	const char *symbols;
	const char *message;
} rspamd_cases[] = {
    {"{\"is_skipped\":false,\"score\":2.5,\"required_score\":15.0,\"action\":\"no action\","
     "\"symbols\":{\"MXGATE_AUTH\":{\"name\":\"MXGATE_AUTH\",\"score\":2.5}},"
     "\"messages\":{}}",
     0, SCAN_SPAM_NO_ACTION, 2.5, 15.0, "MXGATE_AUTH(2.50)", ""},
    {"{\"score\":15,\"required_score\":15,\"action\":\"reject\",\"symbols\":{\"GTUBE\":"
     "{\"score\":0}},\"messages\":{\"smtp_message\":\"Gtube pattern\"}}",
     0, SCAN_SPAM_REJECT, 15, 15, "GTUBE(0.00)", "Gtube pattern"},
    {"{\"score\":6.5,\"required_score\":15,\"action\":\"add header\",\"symbols\":{"
     "\"A\":{\"score\":1},\"B\":{\"score\":5.5}}}",
     0, SCAN_SPAM_ADD_HEADER, 6.5, 15, "A(1.00),B(5.50)", ""},
    {"{\"score\":4,\"action\":\"soft reject\"}", 0, SCAN_SPAM_SOFT_REJECT, 4, 0, "", ""},
    {"{\"score\":9,\"action\":\"rewrite subject\",\"symbols\":[]}", 0, SCAN_SPAM_REWRITE_SUBJECT, 9,
     0, "", ""},
    {"{\"score\":-1,\"action\":\"greylist\"}", 0, SCAN_SPAM_GREYLIST, -1, 0, "", ""},
    /* only the exact name says mxgate's rule ran */
    {"{\"score\":1,\"action\":\"no action\",\"symbols\":{\"MXGATE_AUTHX\":{\"score\":1}}}",
     0, SCAN_SPAM_NO_ACTION, 1, 0, "MXGATE_AUTHX(1.00)", ""},
    /* hostile symbol names and messages are made header-safe */
    {"{\"score\":1,\"action\":\"no action\",\"symbols\":{\"A B;C(\\\"x\\\")\":{\"score\":1}},"
     "\"messages\":{\"smtp_message\":\"a\\r\\nb\"}}",
     0, SCAN_SPAM_NO_ACTION, 1, 0, "A_B_C__x__(1.00)", "a  b"},
    /* not understood */
    {"", -1, 0, 0, 0, "", ""},
    {"not json", -1, 0, 0, 0, "", ""},
    {"[]", -1, 0, 0, 0, "", ""},
    {"{\"score\":1}", -1, 0, 0, 0, "", ""},
    {"{\"action\":\"no action\"}", -1, 0, 0, 0, "", ""},
    {"{\"action\":\"my custom\",\"score\":1}", -1, 0, 0, 0, "", ""},
    {"{\"action\":\"reject\",\"score\":\"15\"}", -1, 0, 0, 0, "", ""},
    {"{\"action\":\"reject\",\"score\":1e300}", -1, 0, 0, 0, "", ""},
    {"{\"action\":\"reject\",\"action\":\"no action\",\"score\":1}", -1, 0, 0, 0, "", ""},
};

static void test_rspamd_reply(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rspamd_cases) / sizeof(rspamd_cases[0]); i++) {
		struct scan_spam_result r;
		int rc =
		    scan_rspamd_parse_reply(rspamd_cases[i].json, strlen(rspamd_cases[i].json), &r);
		if (rc != rspamd_cases[i].rc)
			fail_msg("case %zu: rc %d, want %d", i, rc, rspamd_cases[i].rc);
		if (rc < 0)
			continue;
		assert_false(r.failed);
		assert_int_equal(r.action, rspamd_cases[i].action);
		assert_true(r.score == rspamd_cases[i].score);
		assert_true(r.required == rspamd_cases[i].required);
		assert_string_equal(r.symbols, rspamd_cases[i].symbols);
		assert_string_equal(r.message, rspamd_cases[i].message);
		/* MXGATE_AUTH listed: deploy/rspamd/mxgate.lua ran */
		assert_int_equal(r.has_mxgate_auth,
		                 strncmp(rspamd_cases[i].symbols, "MXGATE_AUTH(", 12) == 0);
	}
}

/* many symbols: cut at a whole symbol, every header line under 80 columns */
static void test_rspamd_many_symbols_folded(void **state)
{
	(void)state;
	struct util_buf j;
	util_buf_init(&j);
	util_buf_adds(&j,
	              "{\"score\":7,\"required_score\":15,\"action\":\"add header\",\"symbols\":{");
	for (int i = 0; i < 400; i++)
		util_buf_printf(&j, "%s\"SYMBOL_NUMBER_%03d\":{\"score\":0.1}", i ? "," : "", i);
	util_buf_adds(&j, "}}");
	struct scan_spam_result r;
	assert_int_equal(scan_rspamd_parse_reply(j.data, j.len, &r), 0);
	size_t n = strlen(r.symbols);
	assert_true(n > 1000 && n < sizeof(r.symbols));
	assert_int_equal(r.symbols[n - 1], ')');
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	struct util_buf h;
	util_buf_init(&h);
	scan_spam_headers(&h, &cfg, &r, true);
	assert_non_null(strstr(h.data,
	                       "X-Spam-Flag: YES\r\nX-Spam-Score: 7.00\r\nX-Spam-Status: Yes, "
	                       "score=7.00 required=15.00"));
	const char *line = h.data;
	while (*line) {
		const char *e = strstr(line, "\r\n");
		assert_non_null(e);
		assert_true(e - line <= 78);
		line = e + 2;
	}
	util_buf_free(&h);
	util_buf_free(&j);
}

static void test_rspamd_headers_names(void **state)
{
	(void)state;
	struct scan_spam_result r;
	memset(&r, 0, sizeof(r));
	r.action = SCAN_SPAM_NO_ACTION;
	r.score = 0.5;
	r.required = 15;
	strcpy(r.symbols, "A(0.50)");
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.spam_flag_header = "X-Flag";
	cfg.spam_score_header = "X-Score";
	cfg.spam_status_header = "X-Status";
	struct util_buf h;
	util_buf_init(&h);
	scan_spam_headers(&h, &cfg, &r, false);
	assert_string_equal(
	    h.data, "X-Flag: NO\r\nX-Score: 0.50\r\nX-Status: No, score=0.50 "
	            "required=15.00 action=\"no action\" scanner=rspamd\r\n\ttests=A(0.50)\r\n");
	util_buf_free(&h);
}

static const struct {
	const char *prepend;
	bool quarantined;
} quarantine_cases[] = {
    {"X-Mxgate-Quarantine: reason=virus; by=mx; at=x\r\n", true},
    {"Received: from a\r\n\tby b\r\nX-Mxgate-Quarantine: reason=spam\r\n", true},
    {"Received: from a\r\nx-mxgate-quarantine: reason=spam\r\n", true},
    {"Received: from a\r\n", false},
    {"Received: from a; X-Mxgate-Quarantine: no\r\n", false},
    {"X-Mxgate-Quarantined: reason=x\r\n", false},
    {"", false},
    {NULL, false},
};

static void test_quarantine_field(void **state)
{
	(void)state;
	/* scan/ cannot include queue.h: the two names must stay equal */
	assert_string_equal(SCAN_QUARANTINE_HEADER, QUEUE_QUARANTINE_FIELD);
	for (size_t i = 0; i < sizeof(quarantine_cases) / sizeof(quarantine_cases[0]); i++) {
		struct queue_envelope env;
		memset(&env, 0, sizeof(env));
		env.prepend = (char *)quarantine_cases[i].prepend;
		if (queue_envelope_is_quarantined(&env) != quarantine_cases[i].quarantined)
			fail_msg("case %zu", i);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply),
	    cmocka_unit_test(test_reply_long_name),
	    cmocka_unit_test(test_header),
	    cmocka_unit_test(test_drop),
	    cmocka_unit_test(test_rspamd_reply),
	    cmocka_unit_test(test_rspamd_many_symbols_folded),
	    cmocka_unit_test(test_rspamd_headers_names),
	    cmocka_unit_test(test_quarantine_field),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
