/*
 * test_scan.c - table-driven tests of scan/: clamd reply lines (plain and
 * IDSESSION-numbered, clean, infected, errors, garbage, hostile signature
 * names) and the X-Virus-Scan header built from a result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

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
		int rc = scan_clamd_parse_reply(reply_cases[i].in, strlen(reply_cases[i].in), &id, &r);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply),
	    cmocka_unit_test(test_reply_long_name),
	    cmocka_unit_test(test_header),
	    cmocka_unit_test(test_drop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
