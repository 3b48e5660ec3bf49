/*
 * test_smtp_reply.c - table-driven tests of the client-side reply parser:
 * single and multi-line replies, pipelined replies, bad codes, a code that
 * changes between lines, bare CR/LF, truncation at every byte, over-long
 * lines and too many lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp-internal.h"

static const struct {
	const char *in;
	size_t in_len; /* 0: strlen */
	int rc;        /* -2: whole input */
	int code;
	const char *text;
	size_t nlines;
} reply_cases[] = {
	{"220 mx.example.test ESMTP\r\n", 0, -2, 220, "mx.example.test ESMTP", 1},
	{"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n", 0, -2,
	 250, "mx.example.test\nPIPELINING\nSIZE 10240000\nSTARTTLS", 4},
	{"250 2.0.0 Ok: queued as 1234\r\n", 0, -2, 250, "2.0.0 Ok: queued as 1234", 1},
	{"354 End data with <CR><LF>.<CR><LF>\r\n", 0, -2, 354, "End data with <CR><LF>.<CR><LF>", 1},
	{"421 4.4.2 timeout\r\n", 0, -2, 421, "4.4.2 timeout", 1},
	{"550-5.7.1 first\r\n550 5.7.1 second\r\n", 0, -2, 550, "5.7.1 first\n5.7.1 second", 2},
	{"250\r\n", 0, -2, 250, "", 1},
	{"250 \r\n", 0, -2, 250, "", 1},
	{"250-\r\n250 x\r\n", 0, -2, 250, "\nx", 2},
	{"599 max code\r\n", 0, -2, 599, "max code", 1},
	{"200 min code\r\n", 0, -2, 200, "min code", 1},
	{"250 tab\there\r\n", 0, -2, 250, "tab\there", 1},
	{"250 utf8 \xc3\xa9\r\n", 0, -2, 250, "utf8 \xc3\xa9", 1},
	/* Pipelined replies: one at a time. */
	{"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", 0, 14, 250, "2.1.0 Ok", 1},
	{"250-a\r\n250 b\r\n354 go\r\n", 0, 14, 250, "a\nb", 2},
	/* Need more. */
	{"", 0, 0, 0, "", 0},
	{"2", 0, 0, 0, "", 0},
	{"25", 0, 0, 0, "", 0},
	{"250", 0, 0, 0, "", 0},
	{"250 Ok", 0, 0, 0, "", 0},
	{"250 Ok\r", 0, 0, 0, "", 0},
	{"250-a\r\n", 0, 0, 0, "", 0},
	{"250-a\r\n250", 0, 0, 0, "", 0},
	{"250-a\r\n250-b\r\n25", 0, 0, 0, "", 0},
	/* Malformed. */
	{"abc Ok\r\n", 0, -1, 0, "", 0},
	{"2a0 Ok\r\n", 0, -1, 0, "", 0},
	{"100 Informational\r\n", 0, -1, 0, "", 0},
	{"600 Out of range\r\n", 0, -1, 0, "", 0},
	{"099 Ok\r\n", 0, -1, 0, "", 0},
	{"25 Ok\r\n", 0, -1, 0, "", 0},
	{"25\r\n", 0, -1, 0, "", 0},
	{"\r\n", 0, -1, 0, "", 0},
	{"2500 Ok\r\n", 0, -1, 0, "", 0},
	{"250_Ok\r\n", 0, -1, 0, "", 0},
	{" 250 Ok\r\n", 0, -1, 0, "", 0},
	{"250 Ok\n", 0, -1, 0, "", 0},
	{"250 Ok\rx\r\n", 0, -1, 0, "", 0},
	{"250 O\0k\r\n", 8, -1, 0, "", 0},
	{"250-a\r\n251 b\r\n", 0, -1, 0, "", 0},
	{"250-a\r\n550 b\r\n", 0, -1, 0, "", 0},
	{"250-a\r\n25", 0, 0, 0, "", 0},
	{"250-a\r\n2x", 0, -1, 0, "", 0},
	{"250-a\r\n\r\n", 0, -1, 0, "", 0},
	{"HTTP/1.1 400 Bad Request\r\n", 0, -1, 0, "", 0},
};

static void test_reply_cases(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const char *in = reply_cases[i].in;
		size_t n = reply_cases[i].in_len ? reply_cases[i].in_len : strlen(in);
		int expect = reply_cases[i].rc == -2 ? (int)n : reply_cases[i].rc;
		struct smtp_reply r;
		int rc = smtp_reply_parse(in, n, &r);

		if (rc != expect)
			fail_msg("case %zu \"%s\": rc %d, expected %d", i, in, rc, expect);
		if (rc <= 0)
			continue;
		assert_int_equal(r.code, reply_cases[i].code);
		assert_string_equal(r.text, reply_cases[i].text);
		assert_int_equal(r.nlines, reply_cases[i].nlines);
	}
}

/* Every prefix of a complete reply needs more bytes. */
static void test_reply_every_truncation(void **state)
{
	size_t i, n;

	for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const char *in = reply_cases[i].in;
		size_t len = reply_cases[i].in_len ? reply_cases[i].in_len : strlen(in);
		struct smtp_reply r;
		int full = smtp_reply_parse(in, len, &r);

		if (full <= 0)
			continue;
		for (n = 0; n < (size_t)full; n++)
			assert_int_equal(smtp_reply_parse(in, n, &r), 0);
	}
}

static void test_reply_long_line(void **state)
{
	size_t cap = 5000;
	char *buf = malloc(cap);
	struct smtp_reply r;
	size_t textlen;

	assert_non_null(buf);
	/* A line of exactly 4096 bytes including CRLF is accepted, with the
	 * text truncated to fit r.text. */
	memcpy(buf, "250 ", 4);
	memset(buf + 4, 'x', 4096 - 6);
	memcpy(buf + 4096 - 2, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(buf, 4096, &r), 4096);
	textlen = strlen(r.text);
	assert_int_equal(textlen, 4096 - 6);
	/* One byte more is refused, even before the CRLF arrives. */
	memcpy(buf, "250 ", 4);
	memset(buf + 4, 'x', 4096 - 5);
	memcpy(buf + 4096 - 1, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(buf, 4097, &r), -1);
	assert_int_equal(smtp_reply_parse(buf, 4096, &r), -1);
	assert_int_equal(smtp_reply_parse(buf, 4094, &r), 0);
	free(buf);
}

static void test_reply_text_truncated(void **state)
{
	/* Two long lines: the joined text is cut at sizeof(r.text) - 1. */
	size_t line = 3000;
	char *buf = malloc(2 * line);
	struct smtp_reply r;

	assert_non_null(buf);
	memcpy(buf, "250-", 4);
	memset(buf + 4, 'a', line - 6);
	memcpy(buf + line - 2, "\r\n", 2);
	memcpy(buf + line, "250 ", 4);
	memset(buf + line + 4, 'b', line - 6);
	memcpy(buf + 2 * line - 2, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(buf, 2 * line, &r), (int)(2 * line));
	assert_int_equal(strlen(r.text), sizeof(r.text) - 1);
	assert_int_equal(r.text[line - 6], '\n');
	assert_int_equal(r.text[line - 5], 'b');
	assert_int_equal(r.nlines, 2);
	free(buf);
}

static void test_reply_many_lines(void **state)
{
	/* 1000 lines are accepted, 1001 are not. */
	size_t n = 1001;
	char *buf = malloc(n * 8 + 1);
	struct smtp_reply r;
	size_t i;

	assert_non_null(buf);
	for (i = 0; i < n; i++)
		memcpy(buf + i * 8, i == 999 ? "250 12\r\n" : "250-12\r\n", 8);
	assert_int_equal(smtp_reply_parse(buf, 1000 * 8, &r), 1000 * 8);
	assert_int_equal(r.nlines, 1000);
	memcpy(buf + 999 * 8, "250-12\r\n", 8);
	memcpy(buf + 1000 * 8, "250 12\r\n", 8);
	assert_int_equal(smtp_reply_parse(buf, 1001 * 8, &r), -1);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_cases),
		cmocka_unit_test(test_reply_every_truncation),
		cmocka_unit_test(test_reply_long_line),
		cmocka_unit_test(test_reply_text_truncated),
		cmocka_unit_test(test_reply_many_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
