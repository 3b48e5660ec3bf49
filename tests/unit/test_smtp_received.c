/*
 * test_smtp_received.c - golden tests of the Received: field we prepend
 * (smtp_received_format, RFC 5321 4.4) with hostile client input: HELO
 * names, reverse-DNS names, recipients with quoted local parts and TLS
 * strings must never close a comment, add a clause, fake a date or a hop,
 * or start another header field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp-internal.h"

#define DATE "Wed, 02 Dec 2026 18:00:00 +0000"
#define BY   "\tby mx.example.test (mxgate) with ESMTP id 0123456789abcdef"

static const struct {
	const char *helo, *rdns, *client;
	bool v6;
	const char *tls, *rcpt, *want;
} received_cases[] = {
    {"client.example.net", "client.example.net", "192.0.2.1", false, NULL, "u@example.test",
     "Received: from client.example.net (client.example.net [192.0.2.1])\r\n" BY
     "\r\n\tfor <u@example.test>; " DATE "\r\n"},
    /* several recipients: no "for" */
    {"c.test", "", "2001:db8::1", true, NULL, NULL,
     "Received: from c.test (unknown [IPv6:2001:db8::1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    /* item 7: a PTR name with CR LF, spaces, parentheses is "unknown" */
    {"c.test", "x.test\r\nAuthentication-Results: mx.example.test; dmarc=pass", "192.0.2.1", false,
     NULL, NULL, "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "a) by evil.test (x", "192.0.2.1", false, NULL, NULL,
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "mx.example.test.", "192.0.2.1", false, NULL, NULL,
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    /* HELO: only domain / address-literal characters survive */
    {"h.test(x) by evil;", "", "192.0.2.1", false, NULL, NULL,
     "Received: from h.test?x??by?evil? (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"[IPv6:2001:db8::2]", "", "192.0.2.1", false, NULL, NULL,
     "Received: from [IPv6:2001:db8::2] (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"", "", "192.0.2.1", false, NULL, NULL,
     "Received: from unknown (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    /* quoted local parts could fake a date or a hop: no "for" clause */
    {"c.test", "", "192.0.2.1", false, NULL, "\"x; Tue, 1 Jan 2030 00:00:00 +0000\"@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, NULL, "\"a) by evil.test (x\"@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, NULL, "\"a>\"@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, NULL, "a..b@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, NULL, "a@[192.0.2.1]",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY ";\r\n\t" DATE "\r\n"},
    /* legal dot-atoms are written (UTF-8 too, RFC 6531) */
    {"c.test", "", "192.0.2.1", false, NULL, "first.last+tag=x@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY
     "\r\n\tfor <first.last+tag=x@example.test>; " DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, NULL, "j\xc3\xb6rg@example.test",
     "Received: from c.test (unknown [192.0.2.1])\r\n" BY
     "\r\n\tfor <j\xc3\xb6rg@example.test>; " DATE "\r\n"},
    /* TLS strings keep token characters only */
    {"c.test", "", "192.0.2.1", false, "TLSv1.3 TLS_AES_256_GCM_SHA384", NULL,
     "Received: from c.test (unknown [192.0.2.1])\r\n"
     "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n" BY ";\r\n\t" DATE "\r\n"},
    {"c.test", "", "192.0.2.1", false, "TLS(x) A;B\r\nX: y", NULL,
     "Received: from c.test (unknown [192.0.2.1])\r\n"
     "\t(using TLS?x? with cipher A?B??X??y)\r\n" BY ";\r\n\t" DATE "\r\n"},
};

static void test_received_golden(void **state)
{
	for (size_t i = 0; i < sizeof(received_cases) / sizeof(received_cases[0]); i++) {
		struct smtp_received r = {
		    .helo = received_cases[i].helo,
		    .rdns = received_cases[i].rdns,
		    .client = received_cases[i].client,
		    .v6 = received_cases[i].v6,
		    .tls_desc = received_cases[i].tls,
		    .by = "mx.example.test",
		    .proto = "ESMTP",
		    .qid = "0123456789abcdef",
		    .rcpt = received_cases[i].rcpt,
		    .date = DATE,
		};
		struct util_buf b;

		util_buf_init(&b);
		smtp_received_format(&b, &r);
		if (strcmp(b.data, received_cases[i].want) != 0)
			fail_msg("case %zu: got\n%s\nwant\n%s", i, b.data, received_cases[i].want);
		/* whatever the input: one field; a line ends only in CRLF, and
		 * every line but the first is a fold */
		for (size_t k = 0; k < b.len; k++) {
			if (b.data[k] == '\r')
				assert_true(k + 1 < b.len && b.data[k + 1] == '\n');
			if (b.data[k] == '\n')
				assert_true(k > 0 && b.data[k - 1] == '\r' &&
				            (k + 1 == b.len || b.data[k + 1] == '\t'));
		}
		util_buf_free(&b);
	}
}

static const struct {
	const char *addr;
	bool ok;
} for_cases[] = {
    {"u@example.test", true},    {"a.b-c+d@x-y.test", true},  {"\"u\"@example.test", false},
    {"u@@example.test", false},  {"@example.test", false},    {"u@", false},
    {".u@example.test", false},  {"u.@example.test", false},  {"u@example.test.", false},
    {"u@exa_mple.test", false},  {"u;x@example.test", false}, {"u(x)@example.test", false},
    {"u x@example.test", false}, {"u@example..test", false},  {NULL, false},
};

static void test_received_for_ok(void **state)
{
	for (size_t i = 0; i < sizeof(for_cases) / sizeof(for_cases[0]); i++)
		if (smtp_received_for_ok(for_cases[i].addr) != for_cases[i].ok)
			fail_msg("case %zu: %s", i, for_cases[i].addr ? for_cases[i].addr : "NULL");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_received_golden),
	    cmocka_unit_test(test_received_for_ok),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
