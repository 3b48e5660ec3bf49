/*
 * test_smtp_cmd.c - table-driven tests of the command-line and MAIL/RCPT
 * path parsers: verbs, arguments, paths, source routes, quoted local parts,
 * SMTPUTF8, parameters, relay hacks, and malformed / over-long input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp-internal.h"

/* ------------------------------------------------------------ command lines */

static const struct {
	const char *line;
	size_t len; /* 0: strlen */
	int rc;
	enum smtp_verb verb;
	const char *arg;
} cmd_cases[] = {
	{"EHLO mx.example.test", 0, 0, SMTP_VERB_EHLO, "mx.example.test"},
	{"ehlo mx.example.test", 0, 0, SMTP_VERB_EHLO, "mx.example.test"},
	{"HeLo x", 0, 0, SMTP_VERB_HELO, "x"},
	{"MAIL FROM:<a@b.test> SIZE=10", 0, 0, SMTP_VERB_MAIL, "FROM:<a@b.test> SIZE=10"},
	{"RCPT TO:<a@b.test>   ", 0, 0, SMTP_VERB_RCPT, "TO:<a@b.test>"},
	{"DATA", 0, 0, SMTP_VERB_DATA, ""},
	{"DATA ", 0, 0, SMTP_VERB_DATA, ""},
	{"data  x ", 0, 0, SMTP_VERB_DATA, " x"},
	{"RSET", 0, 0, SMTP_VERB_RSET, ""},
	{"NOOP hello", 0, 0, SMTP_VERB_NOOP, "hello"},
	{"QUIT", 0, 0, SMTP_VERB_QUIT, ""},
	{"VRFY postmaster", 0, 0, SMTP_VERB_VRFY, "postmaster"},
	{"EXPN list", 0, 0, SMTP_VERB_EXPN, "list"},
	{"HELP", 0, 0, SMTP_VERB_HELP, ""},
	{"StartTLS", 0, 0, SMTP_VERB_STARTTLS, ""},
	{"AUTH PLAIN", 0, 0, SMTP_VERB_AUTH, "PLAIN"},
	{"BDAT 100 LAST", 0, 0, SMTP_VERB_BDAT, "100 LAST"},
	{"MAILFROM:<a@b>", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"RCPTTO:<a@b>", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHLOx", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHL", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{" EHLO x", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHLO\tx", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"GET / HTTP/1.1", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"STARTTLSX", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHLO a\rRCPT TO:<x@y>", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHLO a\nRCPT TO:<x@y>", 0, -1, SMTP_VERB_UNKNOWN, NULL},
	{"EHLO a\0b", 8, -1, SMTP_VERB_UNKNOWN, NULL},
	{"\xc5\x9e" "EHLO", 0, -1, SMTP_VERB_UNKNOWN, NULL},
};

static void test_cmd_parse(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
		struct smtp_cmd c;
		size_t len = cmd_cases[i].len ? cmd_cases[i].len : strlen(cmd_cases[i].line);
		int rc = smtp_cmd_parse(cmd_cases[i].line, len, &c);

		if (rc != cmd_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d", i, cmd_cases[i].line, rc);
		assert_int_equal(c.verb, cmd_cases[i].verb);
		if (rc == 0)
			assert_string_equal(c.arg, cmd_cases[i].arg);
	}
}

static void test_cmd_length(void **state)
{
	char line[SMTP_MAX_CMD_LINE + 8];
	struct smtp_cmd c;

	/* 510 octets + CRLF = 512, the RFC 5321 4.5.3.1.4 maximum. */
	memset(line, 'a', sizeof(line));
	memcpy(line, "NOOP ", 5);
	line[SMTP_MAX_CMD_LINE - 2] = '\0';
	assert_int_equal(smtp_cmd_parse(line, SMTP_MAX_CMD_LINE - 2, &c), 0);
	assert_int_equal(strlen(c.arg), SMTP_MAX_CMD_LINE - 2 - 5);
	line[SMTP_MAX_CMD_LINE - 2] = 'a';
	line[SMTP_MAX_CMD_LINE - 1] = '\0';
	assert_int_equal(smtp_cmd_parse(line, SMTP_MAX_CMD_LINE - 1, &c), -1);
	assert_int_equal(c.verb, SMTP_VERB_UNKNOWN);
}

static void test_verb_name(void **state)
{
	static const struct {
		enum smtp_verb v;
		const char *name;
	} cases[] = {
		{SMTP_VERB_HELO, "HELO"},         {SMTP_VERB_EHLO, "EHLO"}, {SMTP_VERB_MAIL, "MAIL"},
		{SMTP_VERB_STARTTLS, "STARTTLS"}, {SMTP_VERB_BDAT, "BDAT"}, {SMTP_VERB_UNKNOWN, "UNKNOWN"},
		{(enum smtp_verb)999, "UNKNOWN"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(smtp_verb_name(cases[i].v), cases[i].name);
}

/* ------------------------------------------------------------ paths */

#define R_SYN_MAIL "501 5.5.4 Syntax: MAIL FROM:<address>"
#define R_SYN_RCPT "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_BAD_MAIL "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT "501 5.1.3 Bad recipient address syntax"
#define R_UTF8 "553 5.6.7 Non-ASCII address requires SMTPUTF8"
#define R_PARAM "501 5.5.4 Malformed parameter"

struct path_case {
	const char *arg;
	const char *prefix;
	bool utf8;
	bool null_ok;
	int rc;
	const char *addr;    /* expected address, or the reply when rc is -1 */
	size_t nparams;
};

static const struct path_case path_cases[] = {
	{"FROM:<user@example.test>", "FROM:", false, true, 0, "user@example.test", 0},
	{"from:<user@example.test>", "FROM:", false, true, 0, "user@example.test", 0},
	{"FROM: <user@example.test>", "FROM:", false, true, 0, "user@example.test", 0},
	{"FROM:<>", "FROM:", false, true, 0, "", 0},
	{"FROM:<> SIZE=100 BODY=8BITMIME", "FROM:", false, true, 0, "", 2},
	{"TO:<user@example.test>", "TO:", false, false, 0, "user@example.test", 0},
	{"To:<Postmaster>", "TO:", false, false, 0, "Postmaster", 0},
	{"TO:<@relay1.test,@relay2.test:user@example.test>", "TO:", false, false, 0,
	 "user@example.test", 0},
	{"TO:<@relay1.test:user@example.test>", "TO:", false, false, 0, "user@example.test", 0},
	{"TO:<\"john doe\"@example.test>", "TO:", false, false, 0, "\"john doe\"@example.test", 0},
	{"TO:<\"a\\\"b\"@example.test>", "TO:", false, false, 0, "\"a\\\"b\"@example.test", 0},
	{"TO:<\"a@b\"@example.test>", "TO:", false, false, 0, "\"a@b\"@example.test", 0},
	{"TO:<first.last+tag@sub.example.test>", "TO:", false, false, 0,
	 "first.last+tag@sub.example.test", 0},
	{"TO:<a!#$%&'*+-/=?^_`{|}~@example.test>", "TO:", false, false, 0,
	 "a!#$%&'*+-/=?^_`{|}~@example.test", 0},
	{"TO:<user@[192.0.2.1]>", "TO:", false, false, 0, "user@[192.0.2.1]", 0},
	{"TO:<user@[IPv6:2001:db8::1]>", "TO:", false, false, 0, "user@[IPv6:2001:db8::1]", 0},
	{"TO:<us\xc3\xa9r@ex\xc3\xa4mple.test>", "TO:", true, false, 0,
	 "us\xc3\xa9r@ex\xc3\xa4mple.test", 0},
	{"FROM:<a@b.test> SMTPUTF8", "FROM:", true, true, 0, "a@b.test", 1},
	{"FROM:<a@b.test>  SIZE=1   BODY=7BIT", "FROM:", false, true, 0, "a@b.test", 2},
	{"FROM:<a@b.test> ENVID=QQ314159 RET=HDRS", "FROM:", false, true, 0, "a@b.test", 2},
	{"FROM:<a..b@example.test>", "FROM:", false, true, 0, "a..b@example.test", 0},
	{"FROM:<under_score@my_host.example.test>", "FROM:", false, true, 0,
	 "under_score@my_host.example.test", 0},
	/* syntax */
	{"FROM:user@example.test", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"TO:user@example.test", "TO:", false, false, -1, R_SYN_RCPT, 0},
	{"FROM<a@b.test>", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"FROM:  <a@b.test>", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"TO:<a@b.test>", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"FROM:<a@b.test>SIZE=1", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	{"FROM:<a@b.test", "FROM:", false, true, -1, R_BAD_MAIL, 0},
	{"FROM:<>x", "FROM:", false, true, -1, R_SYN_MAIL, 0},
	/* addresses */
	{"TO:<>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a@b@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a b@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a\x01@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a\x7f@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<\"a\x01\"@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<\"unterminated@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a\"b@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a(b)@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<a,b@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"FROM:<postmaster>", "FROM:", false, true, -1, R_BAD_MAIL, 0},
	{"TO:<@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@example..test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@example.test.>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@.example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@-example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@example-.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@exa mple.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@[192.0.2.256]>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@[2001:db8::1]>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@[192.0.2.1>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<user@[192.0.2.1]x>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<@relay.test user@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<@relay.test,user@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<@:user@example.test>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	{"TO:<<a@b.test>>", "TO:", false, false, -1, R_BAD_RCPT, 0},
	/* 8-bit */
	{"TO:<us\xc3\xa9r@example.test>", "TO:", false, false, -1, R_UTF8, 0},
	{"TO:<user@ex\xc3\xa4mple.test>", "TO:", false, false, -1, R_UTF8, 0},
	{"TO:<us\xc3r@example.test>", "TO:", true, false, -1, R_BAD_RCPT, 0},
	{"TO:<us\xc0\xafr@example.test>", "TO:", true, false, -1, R_BAD_RCPT, 0},   /* overlong */
	{"TO:<us\xed\xa0\x80r@example.test>", "TO:", true, false, -1, R_BAD_RCPT, 0}, /* surrogate */
	{"TO:<\xff@example.test>", "TO:", true, false, -1, R_BAD_RCPT, 0},
	/* parameters */
	{"FROM:<a@b.test> SIZE=", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> =1", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> -X=1", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> SI_ZE=1", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> SIZE=1=2", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> SIZE=\x01", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> SIZE=\xc3\xa9", "FROM:", false, true, -1, R_PARAM, 0},
	{"FROM:<a@b.test> SIZE=1 size=2", "FROM:", false, true, -1,
	 "501 5.5.4 Duplicate parameter", 0},
	{"FROM:<a@b.test> A B C D E F G H I J K L M N O P Q", "FROM:", false, true, -1,
	 "501 5.5.4 Too many parameters", 0},
	{"FROM:<a@b.test> A B C D E F G H I J K L M N O P", "FROM:", false, true, 0, "a@b.test",
	 16},
	{"FROM:<a@b.test> ABCDEFGHIJABCDEFGHIJABCDEFGHIJAB=1", "FROM:", false, true, -1, R_PARAM,
	 0},
	{"FROM:<a@b.test> ABCDEFGHIJABCDEFGHIJABCDEFGHIJA=1", "FROM:", false, true, 0, "a@b.test",
	 1},
};

static void test_path_parse(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		const struct path_case *t = &path_cases[i];
		struct smtp_path p;
		char reply[128] = "";
		int rc = smtp_path_parse(t->arg, t->prefix, t->utf8, t->null_ok, &p, reply,
					 sizeof(reply));

		if (rc != t->rc)
			fail_msg("case %zu \"%s\": rc %d reply \"%s\"", i, t->arg, rc, reply);
		if (rc == 0) {
			assert_string_equal(p.addr, t->addr);
			assert_int_equal(p.null_path, t->addr[0] == '\0');
			assert_int_equal(p.nparams, t->nparams);
		} else if (strcmp(reply, t->addr) != 0) {
			fail_msg("case %zu \"%s\": reply \"%s\", expected \"%s\"", i, t->arg, reply,
				 t->addr);
		}
	}
}

static void test_path_params(void **state)
{
	struct smtp_path p;
	char reply[128];

	assert_int_equal(smtp_path_parse("FROM:<a@b.test> size=1000 body=8BITMIME SMTPUTF8",
					 "FROM:", false, true, &p, reply, sizeof(reply)),
			 0);
	assert_int_equal(p.nparams, 3);
	assert_string_equal(p.params[0].key, "SIZE");
	assert_string_equal(p.params[0].value, "1000");
	assert_string_equal(smtp_path_param(&p, "Size"), "1000");
	assert_string_equal(smtp_path_param(&p, "BODY"), "8BITMIME");
	assert_string_equal(smtp_path_param(&p, "smtputf8"), "");
	assert_null(smtp_path_param(&p, "RET"));
	assert_null(smtp_path_param(&p, "SIZ"));
	assert_null(smtp_path_param(&p, "SIZEX"));
}

static void test_path_length(void **state)
{
	char arg[SMTP_MAX_PATH + 64];
	struct smtp_path p;
	char reply[128];
	size_t dom;

	/* An address of exactly SMTP_MAX_PATH bytes, then one more. */
	strcpy(arg, "TO:<");
	memset(arg + 4, 'a', 64);
	arg[68] = '@';
	dom = SMTP_MAX_PATH - 65;
	memset(arg + 69, 'b', dom);
	for (size_t k = 69 + 50; k < 69 + dom - 1; k += 50)
		arg[k] = '.';
	strcpy(arg + 69 + dom, ">");
	assert_int_equal(smtp_path_parse(arg, "TO:", false, false, &p, reply, sizeof(reply)), 0);
	assert_int_equal(strlen(p.addr), SMTP_MAX_PATH);
	arg[69 + dom] = 'b';
	strcpy(arg + 70 + dom, ">");
	assert_int_equal(smtp_path_parse(arg, "TO:", false, false, &p, reply, sizeof(reply)), -1);
	assert_string_equal(reply, "501 5.1.3 Recipient address too long");
	/* Truncated at every length: never accepted, never a crash. */
	for (size_t n = 0; n < strlen("TO:<user@example.test>"); n++) {
		char t[64];

		snprintf(t, sizeof(t), "%.*s", (int)n, "TO:<user@example.test>");
		assert_int_equal(smtp_path_parse(t, "TO:", false, false, &p, reply, sizeof(reply)),
				 -1);
	}
	/* A tiny reply buffer is never overrun. */
	assert_int_equal(smtp_path_parse("TO:<x>", "TO:", false, false, &p, reply, 4), -1);
	assert_string_equal(reply, "501");
}

static const struct {
	const char *addr;
	bool hack;
} hack_cases[] = {
	{"user@example.test", false},
	{"user%other.test@example.test", true},
	{"other.test!user@example.test", true},
	{"\"user@other.test\"@example.test", true},
	{"\"john doe\"@example.test", false},
	{"user@exa%mple.test", false},
	{"postmaster", false},
	{"user%host", true},
	{"", false},
};

static void test_relay_hack(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(hack_cases) / sizeof(hack_cases[0]); i++) {
		if (smtp_addr_is_relay_hack(hack_cases[i].addr) != hack_cases[i].hack)
			fail_msg("\"%s\": expected %d", hack_cases[i].addr, hack_cases[i].hack);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmd_parse),   cmocka_unit_test(test_cmd_length),
		cmocka_unit_test(test_verb_name),   cmocka_unit_test(test_path_parse),
		cmocka_unit_test(test_path_params), cmocka_unit_test(test_path_length),
		cmocka_unit_test(test_relay_hack),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
