/*
 * test_queue_envelope.c - table-driven tests of the envelope text format:
 * round trip (with every awkward byte), valid inputs, malformed inputs with
 * the expected message, every truncation, oversize, and seeded random
 * mutations that must never crash and must re-serialise stably.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

/* ------------------------------------------------------------ helpers */

/* str_eq - equal strings, NULL only equal to NULL. */
static void assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL) {
		assert_ptr_equal(a, b);
		return;
	}
	assert_string_equal(a, b);
}

/* assert_env_equal - every field of a and b is the same. */
static void assert_env_equal(const struct queue_envelope *a, const struct queue_envelope *b)
{
	size_t i;

	assert_string_equal(a->id, b->id);
	assert_str_eq_null(a->sender, b->sender);
	assert_int_equal(a->nrcpts, b->nrcpts);
	for (i = 0; i < a->nrcpts; i++) {
		assert_str_eq_null(a->rcpts[i].addr, b->rcpts[i].addr);
		assert_int_equal(a->rcpts[i].state, b->rcpts[i].state);
		assert_str_eq_null(a->rcpts[i].last_reply, b->rcpts[i].last_reply);
	}
	assert_str_eq_null(a->client_addr, b->client_addr);
	assert_str_eq_null(a->client_name, b->client_name);
	assert_str_eq_null(a->helo, b->helo);
	assert_str_eq_null(a->tls, b->tls);
	assert_str_eq_null(a->prepend, b->prepend);
	assert_int_equal(a->arrival, b->arrival);
	assert_int_equal(a->arrival_us, b->arrival_us);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->smtputf8, b->smtputf8);
	assert_int_equal(a->eightbit, b->eightbit);
	assert_int_equal(a->is_dsn, b->is_dsn);
	assert_int_equal(a->attempts, b->attempts);
	assert_int_equal(a->next_attempt, b->next_attempt);
	assert_int_equal(a->delay_warned, b->delay_warned);
	assert_str_eq_null(a->last_error, b->last_error);
	assert_str_eq_null(a->spf, b->spf);
	assert_str_eq_null(a->dmarc, b->dmarc);
	assert_str_eq_null(a->quarantine_reason, b->quarantine_reason);
	assert_str_eq_null(a->quarantine_verdict, b->quarantine_verdict);
}

/* full_env - an envelope using every field, with bytes that need escaping. */
static struct queue_envelope *full_env(void)
{
	struct queue_envelope *env = queue_envelope_new();
	char ctl[40];
	int i;

	for (i = 1; i < 32; i++)
		ctl[i - 1] = (char)i;
	ctl[31] = 0x7f;
	ctl[32] = '\\';
	ctl[33] = '\0';
	snprintf(env->id, sizeof(env->id), "0123456789ABCDEF");
	env->sender = strdup("bounce+x=y@sender.example");
	queue_envelope_add_rcpt(env, "user@example.com");
	queue_envelope_add_rcpt(env, "\"odd user\\\"\\n\"@example.com");
	queue_envelope_add_rcpt(env, "j\xc3\xbcrgen@b\xc3\xbc"
	                             "cher.example");
	env->rcpts[1].state = QUEUE_RCPT_DONE;
	env->rcpts[1].last_reply = strdup("250 2.0.0 Ok: queued as X\r\n");
	env->rcpts[2].state = QUEUE_RCPT_FAILED;
	env->rcpts[2].last_reply = strdup("");
	env->client_addr = strdup("2001:db8::1");
	env->client_name = strdup("mail.sender.example");
	env->helo = strdup(ctl);
	env->tls = strdup("TLSv1.3 TLS_AES_256_GCM_SHA384");
	env->prepend = strdup("Received: from mail.sender.example (mail.sender.example\r\n"
	                      "\t[2001:db8::1]) by mx.example.com\r\n"
	                      "Authentication-Results: mx.example.com; spf=pass \\ x\r\n"
	                      "X-Odd: bare\nlf and bare\rcr\r\n"
	                      "X-Tail: no final crlf");
	env->arrival = 1764057344;
	env->size = 123456789012LL;
	env->smtputf8 = true;
	env->eightbit = true;
	env->is_dsn = false;
	env->attempts = 7;
	env->next_attempt = 1764060944;
	env->delay_warned = true;
	env->last_error = strdup("connect to downstream: Connection refused\n(second line)");
	return env;
}

/* parse_str - parse a NUL-terminated text. */
static struct queue_envelope *parse_str(const char *text, char *err, size_t errlen)
{
	return queue_envelope_parse(text, strlen(text), err, errlen);
}

/* ------------------------------------------------------------ round trip */

static void test_round_trip_full(void **state)
{
	struct queue_envelope *env = full_env();
	struct queue_envelope *back;
	char err[256] = "";
	char *text, *text2;
	size_t len, len2, i;

	text = queue_envelope_serialize(env, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	/* no byte can break the line structure */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		assert_true(c != '\r' && c != '\0' && (c >= 0x20 || c == '\n' || c == '\t'));
	}
	assert_memory_equal(text, "version: 1\n", 11);
	assert_non_null(strstr(text, "\nend: ok\n"));
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_env_equal(env, back);
	text2 = queue_envelope_serialize(back, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(text, text2, len);
	free(text);
	free(text2);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

/* test_round_trip_verdicts - the ingress verdicts (version 2 keys) survive
 * a round trip, and their presence is what makes the file version 2. */
static void test_round_trip_verdicts(void **state)
{
	struct queue_envelope *env = full_env();
	struct queue_envelope *back;
	char err[256] = "";
	char *text;
	size_t len;

	(void)state;
	env->spf = strdup("fail");
	env->dmarc = strdup("pass");
	text = queue_envelope_serialize(env, &len);
	assert_memory_equal(text, "version: 2\n", 11);
	assert_non_null(strstr(text, "\nspf: fail\n"));
	assert_non_null(strstr(text, "\ndmarc: pass\n"));
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_env_equal(env, back);
	free(text);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

/* test_round_trip_quarantine - the quarantine verdict (version 3 keys)
 * survives a round trip and copy, and is what makes the file version 3;
 * the same envelope without it is still written as version 2, and a
 * version 3 file without the keys reads fine. */
static void test_round_trip_quarantine(void **state)
{
	struct queue_envelope *env = full_env();
	struct queue_envelope *back, *c;
	char err[256] = "";
	char *text;
	size_t len;

	(void)state;
	env->spf = strdup("pass");
	env->quarantine_reason = strdup("spam");
	env->quarantine_verdict = strdup("rspamd action=\"reject\" score=16.00\r\nx");
	text = queue_envelope_serialize(env, &len);
	assert_memory_equal(text, "version: 3\n", 11);
	assert_non_null(strstr(text, "\nquarantine-reason: spam\n"));
	assert_non_null(
	    strstr(text, "\nquarantine-verdict: rspamd action=\"reject\" score=16.00\\r\\nx\n"));
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_env_equal(env, back);
	c = queue_envelope_dup(env);
	assert_env_equal(env, c);
	queue_envelope_free(c);
	free(text);
	queue_envelope_free(back);
	free(env->quarantine_reason);
	free(env->quarantine_verdict);
	env->quarantine_reason = env->quarantine_verdict = NULL;
	text = queue_envelope_serialize(env, &len);
	assert_memory_equal(text, "version: 2\n", 11);
	assert_null(strstr(text, "quarantine"));
	text[9] = '3';
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse v3 without the keys: %s", err);
	assert_env_equal(env, back);
	free(text);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

/* test_round_trip_arrival_us - the microseconds of the arrival (version 4
 * key, issue 16: delay= to the µs) survive a round trip and make the file
 * version 4; without them the file keeps the version of its other keys,
 * and an older file reads as whole seconds. */
static void test_round_trip_arrival_us(void **state)
{
	static const struct {
		int us;
		bool quarantine;
		const char *version, *key; /* key NULL: must be absent */
	} cases[] = {
	    {123456, false, "version: 4\n", "\narrival-us: 123456\n"},
	    {1, true, "version: 4\n", "\narrival-us: 1\n"},
	    {999999, false, "version: 4\n", "\narrival-us: 999999\n"},
	    {0, false, "version: 1\n", NULL},
	    {0, true, "version: 3\n", NULL},
	};
	char err[256] = "";
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct queue_envelope *env = full_env(), *back, *c;
		char *text;

		env->arrival_us = cases[i].us;
		if (cases[i].quarantine)
			env->quarantine_reason = strdup("virus");
		text = queue_envelope_serialize(env, &len);
		assert_memory_equal(text, cases[i].version, strlen(cases[i].version));
		if (cases[i].key != NULL)
			assert_non_null(strstr(text, cases[i].key));
		else
			assert_null(strstr(text, "arrival-us"));
		back = queue_envelope_parse(text, len, err, sizeof(err));
		if (back == NULL)
			fail_msg("case %zu: parse: %s", i, err);
		assert_env_equal(env, back);
		c = queue_envelope_dup(env);
		assert_int_equal(c->arrival_us, cases[i].us);
		queue_envelope_free(c);
		queue_envelope_free(back);
		free(text);
		queue_envelope_free(env);
	}
}

static void test_round_trip_minimal(void **state)
{
	struct queue_envelope *env = queue_envelope_new();
	struct queue_envelope *back;
	char err[256] = "";
	char *text;
	size_t len;

	snprintf(env->id, sizeof(env->id), "00000000000000FF");
	env->sender = strdup("");
	text = queue_envelope_serialize(env, &len);
	assert_non_null(strstr(text, "\nsender: <>\n"));
	assert_null(strstr(text, "client-addr"));
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_env_equal(env, back);
	assert_int_equal(back->nrcpts, 0);
	assert_null(back->prepend);
	free(text);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

static void test_dup(void **state)
{
	struct queue_envelope *env = full_env();
	struct queue_envelope *c = queue_envelope_dup(env);

	assert_env_equal(env, c);
	assert_ptr_not_equal(env->rcpts, c->rcpts);
	assert_ptr_not_equal(env->prepend, c->prepend);
	queue_envelope_free(env);
	queue_envelope_free(c);
	queue_envelope_free(NULL);
}

/* ------------------------------------------------------------ valid inputs */

#define HDR "version: 1\nid: 0123456789ABCDEF\n"
#define REQ                                                                                        \
	"arrival: 10\nsize: 20\nsender: <a@b.example>\nsmtputf8: 0\neightbit: 1\nis-dsn: 0\n"      \
	"attempts: 3\nnext-attempt: 0\ndelay-warned: 0\n"

static void test_valid_cases(void **state)
{
	static const struct {
		const char *name;
		const char *text;
		const char *sender;
		size_t nrcpts;
		const char *reply0;
		const char *prepend;
	} cases[] = {
	    {"minimal", HDR REQ "end: ok\n", "a@b.example", 0, NULL, NULL},
	    {"keys in any order",
	     "version: 1\ndelay-warned: 1\nnext-attempt: 5\nattempts: 0\nis-dsn: 1\n"
	     "eightbit: 0\nsmtputf8: 1\nsender: <>\nsize: 0\narrival: 0\nrcpt: done <x@y>\n"
	     "id: 0123456789ABCDEF\nend: ok\n",
	     "", 1, NULL, NULL},
	    {"rcpt with reply", HDR REQ "rcpt: failed <u@v>\nreply: 550 5.1.1 no\\r\\n\nend: ok\n",
	     "a@b.example", 1, "550 5.1.1 no\r\n", NULL},
	    {"empty reply", HDR REQ "rcpt: pending <u@v>\nreply: \nend: ok\n", "a@b.example", 1, "",
	     NULL},
	    {"empty value without space", HDR REQ "rcpt: pending <u@v>\nreply:\nend: ok\n",
	     "a@b.example", 1, "", NULL},
	    {"prepend lines concatenate",
	     HDR REQ "prepend: A: 1\\r\\n\nprepend: \tfolded\\r\\n\nprepend: B: \\x01\\\\\\r\\n\n"
	             "end: ok\n",
	     "a@b.example", 0, NULL, "A: 1\r\n\tfolded\r\nB: \x01\\\r\n"},
	    {"lower-case hex escape", HDR REQ "prepend: \\x7f\\x1b\nend: ok\n", "a@b.example", 0,
	     NULL, "\x7f\x1b"},
	    {"address with > inside", HDR REQ "rcpt: pending <\"a>b\"@c>\nend: ok\n", "a@b.example",
	     1, NULL, NULL},
	    {"utf-8 bytes raw", HDR REQ "rcpt: pending <\xc3\xa9@\xc3\xa9.example>\nend: ok\n",
	     "a@b.example", 1, NULL, NULL},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		struct queue_envelope *env = parse_str(cases[i].text, err, sizeof(err));

		if (env == NULL)
			fail_msg("case \"%s\": %s", cases[i].name, err);
		assert_string_equal(env->sender, cases[i].sender);
		assert_int_equal(env->nrcpts, cases[i].nrcpts);
		if (cases[i].nrcpts > 0)
			assert_str_eq_null(env->rcpts[0].last_reply, cases[i].reply0);
		assert_str_eq_null(env->prepend, cases[i].prepend);
		queue_envelope_free(env);
	}
}

/* ------------------------------------------------------------ malformed inputs */

static void test_malformed_cases(void **state)
{
	static const struct {
		const char *name;
		const char *text;
		const char *err; /* expected substring of the message */
	} cases[] = {
	    {"empty", "", "empty envelope"},
	    {"not an envelope", "hello\n", "not an envelope"},
	    {"version 5", "version: 5\nend: ok\n", "unsupported envelope version 5"},
	    {"version 0", "version: 0\n" REQ "end: ok\n", "unsupported envelope version 0"},
	    {"version junk", "version: one\n", "version: not a decimal"},
	    {"version leading zero", "version: 01\n", "canonical"},
	    {"version not first", "id: 0123456789ABCDEF\nversion: 1\n", "not an envelope"},
	    {"duplicate version", HDR "version: 1\n", "line 3: duplicate \"version\""},
	    {"no end", HDR REQ, "truncated (no \"end\" line)"},
	    {"no final newline", HDR REQ "end: ok", "truncated (no newline"},
	    {"data after end", HDR REQ "end: ok\nsize: 1\n", "data after \"end\""},
	    {"bad end", HDR REQ "end: done\n", "end: expected \"ok\""},
	    {"unknown key", HDR "colour: blue\n" REQ "end: ok\n", "line 3: unknown key \"colour\""},
	    {"upper-case key", HDR "Size: 1\n", "bad character in key"},
	    {"no colon", HDR "size 1\n", "expected \"key: value\""},
	    {"no space after colon", HDR "size:1\n", "expected \": \" after key"},
	    {"empty key", HDR ": x\n", "empty key"},
	    {"missing id", "version: 1\n" REQ "end: ok\n", "missing key \"id\""},
	    {"missing sender", HDR "arrival: 1\nsize: 1\nend: ok\n", "missing key \"sender\""},
	    {"missing attempts",
	     HDR "arrival: 10\nsize: 20\nsender: <>\nsmtputf8: 0\neightbit: 1\nis-dsn: 0\n"
	         "next-attempt: 0\ndelay-warned: 0\nend: ok\n",
	     "missing key \"attempts\""},
	    {"duplicate size", HDR "size: 1\nsize: 2\n", "line 4: duplicate \"size\""},
	    {"duplicate id", HDR "id: 0123456789ABCDEF\n", "duplicate \"id\""},
	    {"bad id", "version: 1\nid: ../../etc/passw\n", "id: not a queue id"},
	    {"lower-case id", "version: 1\nid: 0123456789abcdef\n", "id: not a queue id"},
	    {"negative number", HDR "size: -1\n", "size: not a decimal number"},
	    {"number overflow", HDR "size: 9223372036854775808\n", "size: number out of range"},
	    {"int overflow", HDR "attempts: 2147483648\n", "attempts: number out of range"},
	    {"empty number", HDR "arrival: \n", "arrival: not a canonical"},
	    {"arrival-us a second", HDR "arrival-us: 1000000\n", "arrival-us: number out of range"},
	    {"arrival-us leading zero", HDR "arrival-us: 0500\n", "arrival-us: not a canonical"},
	    {"arrival-us twice", HDR "arrival-us: 5\narrival-us: 5\n", "duplicate \"arrival-us\""},
	    {"bool 2", HDR "smtputf8: 2\n", "smtputf8: expected 0 or 1"},
	    {"bool word", HDR "eightbit: yes\n", "eightbit: expected 0 or 1"},
	    {"sender without brackets", HDR "sender: a@b\n", "sender: address must be written"},
	    {"sender half bracket", HDR "sender: <\n", "sender: address must be written"},
	    {"rcpt without state", HDR "rcpt: <a@b>\n", "rcpt: expected \"STATE <addr>\""},
	    {"rcpt unknown state", HDR "rcpt: sent <a@b>\n", "rcpt: unknown state \"sent\""},
	    {"rcpt without brackets", HDR "rcpt: done a@b\n", "rcpt: address must be written"},
	    {"reply without rcpt", HDR "reply: 250 ok\n", "\"reply\" must follow a \"rcpt\""},
	    {"two replies", HDR "rcpt: done <a@b>\nreply: 1\nreply: 2\n", "must follow"},
	    {"reply after other key", HDR "rcpt: done <a@b>\nsize: 1\nreply: 1\n", "must follow"},
	    {"raw CR", HDR "helo: a\rb\n", "unescaped control character 0x0d"},
	    {"CRLF file", "version: 1\r\n", "version: not a decimal number"},
	    {"raw control", HDR "helo: a\x01z\n", "unescaped control character 0x01"},
	    {"raw DEL", HDR "helo: a\x7fz\n", "unescaped control character 0x7f"},
	    {"bad escape", HDR "helo: a\\qz\n", "bad escape sequence"},
	    {"trailing backslash", HDR "helo: a\\\n", "bad escape sequence"},
	    {"short hex escape", HDR "helo: a\\x4\n", "bad escape sequence"},
	    {"non-hex escape", HDR "helo: a\\xZZ\n", "bad escape sequence"},
	    {"escaped NUL", HDR "helo: a\\x00\n", "escaped NUL byte"},
	    {"NUL in address", HDR "sender: <a\\x00b>\n", "escaped NUL byte"},
	    {"error in prepend", HDR "prepend: \\q\n", "line 3: bad escape"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		struct queue_envelope *env = parse_str(cases[i].text, err, sizeof(err));

		if (env != NULL)
			fail_msg("case \"%s\" parsed", cases[i].name);
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"", cases[i].name, err,
			         cases[i].err);
	}
}

static void test_nul_byte(void **state)
{
	static const char text[] = HDR "helo: a\0b\n" REQ "end: ok\n";
	char err[256] = "";

	assert_null(queue_envelope_parse(text, sizeof(text) - 1, err, sizeof(err)));
	assert_non_null(strstr(err, "line 3: NUL byte"));
}

static void test_err_null_or_tiny(void **state)
{
	char err[8];

	assert_null(parse_str("junk\n", NULL, 0));
	assert_null(parse_str("junk\n", err, sizeof(err)));
	assert_int_equal(strlen(err), sizeof(err) - 1);
}

/* ------------------------------------------------------------ truncation, size */

static void test_every_truncation_fails(void **state)
{
	struct queue_envelope *env = full_env();
	char *text;
	size_t len, cut;

	text = queue_envelope_serialize(env, &len);
	for (cut = 0; cut < len; cut++) {
		char err[256] = "";
		char *copy = malloc(cut + 1);
		struct queue_envelope *e;

		memcpy(copy, text, cut); /* exact-size buffer: ASan sees over-reads */
		e = queue_envelope_parse(copy, cut, err, sizeof(err));
		if (e != NULL)
			fail_msg("prefix of %zu/%zu bytes parsed", cut, len);
		assert_true(err[0] != '\0');
		free(copy);
	}
	free(text);
	queue_envelope_free(env);
}

static void test_oversize(void **state)
{
	size_t n = (size_t)QUEUE_ENVELOPE_MAX + 1;
	char *big = malloc(n);
	char err[256] = "";

	assert_non_null(big);
	memset(big, 'a', n);
	assert_null(queue_envelope_parse(big, n, err, sizeof(err)));
	assert_non_null(strstr(err, "envelope too large"));
	free(big);
}

static void test_large_but_allowed(void **state)
{
	struct queue_envelope *env = queue_envelope_new();
	struct queue_envelope *back;
	char addr[64];
	char err[256] = "";
	char *text;
	size_t len;
	int i;

	snprintf(env->id, sizeof(env->id), "0123456789ABCDEF");
	env->sender = strdup("s@x");
	for (i = 0; i < 5000; i++) {
		snprintf(addr, sizeof(addr), "user%d@example.com", i);
		queue_envelope_add_rcpt(env, addr);
	}
	text = queue_envelope_serialize(env, &len);
	assert_true(len < QUEUE_ENVELOPE_MAX);
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_env_equal(env, back);
	free(text);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

/* Thousands of recipients, each with a long downstream reply: the replies
 * are shortened (then dropped) so the envelope stays readable. */
static void test_replies_shortened_to_fit(void **state)
{
	struct queue_envelope *env = queue_envelope_new();
	struct queue_envelope *back;
	static char reply[1200];
	char addr[64];
	char err[256] = "";
	char *text;
	size_t len, i;

	snprintf(env->id, sizeof(env->id), "0123456789ABCDEF");
	env->sender = strdup("s@x");
	/* a reply ending in a 2-byte UTF-8 character across the cut */
	memset(reply, 'r', sizeof(reply) - 1);
	memcpy(reply, "451 4.4.1 ", 10);
	reply[159] = (char)0xC3;
	reply[160] = (char)0xA9;
	for (i = 0; i < 4000; i++) {
		snprintf(addr, sizeof(addr), "user%zu@example.com", i);
		queue_envelope_add_rcpt(env, addr);
		env->rcpts[i].last_reply = strdup(reply);
	}
	env->last_error = strdup(reply);
	text = queue_envelope_serialize(env, &len);
	assert_true(len <= QUEUE_ENVELOPE_MAX);
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_int_equal(back->nrcpts, 4000);
	assert_string_equal(back->rcpts[3999].addr, "user3999@example.com");
	/* cut before the split character, marked */
	assert_int_equal(strlen(back->rcpts[0].last_reply), 159 + 3);
	assert_memory_equal(back->rcpts[0].last_reply, reply, 159);
	assert_string_equal(back->rcpts[0].last_reply + 159, "...");
	assert_int_equal(strlen(back->last_error), 159 + 3);
	free(text);
	queue_envelope_free(back);

	/* so many that even short replies do not fit: they are left out */
	for (; i < 30000; i++) {
		snprintf(addr, sizeof(addr), "a-much-longer-local-part-%zu@example.com", i);
		queue_envelope_add_rcpt(env, addr);
		env->rcpts[i].last_reply = strdup(reply);
	}
	text = queue_envelope_serialize(env, &len);
	assert_true(len <= QUEUE_ENVELOPE_MAX);
	back = queue_envelope_parse(text, len, err, sizeof(err));
	if (back == NULL)
		fail_msg("parse: %s", err);
	assert_int_equal(back->nrcpts, 30000);
	assert_null(back->rcpts[0].last_reply);
	assert_non_null(back->last_error);
	free(text);
	queue_envelope_free(back);
	queue_envelope_free(env);
}

/* ------------------------------------------------------------ mutations */

/* rnd - small deterministic PRNG (xorshift32). */
static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void test_random_mutations(void **state)
{
	static const char alphabet[] = "\n\r\\:<> x0\x01\xff";
	struct queue_envelope *env = full_env();
	uint32_t seed = 0x9e3779b9u;
	char *text;
	size_t len;
	int iter;

	text = queue_envelope_serialize(env, &len);
	for (iter = 0; iter < 20000; iter++) {
		char *m = malloc(len);
		char err[256];
		struct queue_envelope *e;
		int k, flips = 1 + (int)(rnd(&seed) % 4);

		memcpy(m, text, len);
		for (k = 0; k < flips; k++)
			m[rnd(&seed) % len] = alphabet[rnd(&seed) % (sizeof(alphabet) - 1)];
		e = queue_envelope_parse(m, len, err, sizeof(err));
		if (e != NULL) {
			/* whatever parses re-serialises to a stable, parsable text */
			size_t l1, l2;
			char *t1 = queue_envelope_serialize(e, &l1);
			struct queue_envelope *e2 = queue_envelope_parse(t1, l1, err, sizeof(err));
			char *t2;

			if (e2 == NULL)
				fail_msg("re-parse failed: %s", err);
			t2 = queue_envelope_serialize(e2, &l2);
			assert_int_equal(l1, l2);
			assert_memory_equal(t1, t2, l1);
			free(t1);
			free(t2);
			queue_envelope_free(e2);
			queue_envelope_free(e);
		}
		free(m);
	}
	free(text);
	queue_envelope_free(env);
}

/* ------------------------------------------------------------ documentation */

/* The example in docs/queue-format.md parses and re-serialises unchanged. */
static void test_doc_example(void **state)
{
	const char *src = getenv("MXGATE_SOURCE_DIR");
	char path[1024], err[256] = "";
	struct queue_envelope *env;
	char *doc, *start, *end, *again;
	size_t len, alen;
	FILE *fp;
	long n;

	if (src == NULL)
		skip();
	snprintf(path, sizeof(path), "%s/docs/queue-format.md", src);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	doc = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(doc, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	start = strstr(doc, "```\nversion: 1\n");
	assert_non_null(start);
	start += 4;
	end = strstr(start, "```");
	assert_non_null(end);
	len = (size_t)(end - start);
	env = queue_envelope_parse(start, len, err, sizeof(err));
	if (env == NULL)
		fail_msg("docs example: %s", err);
	assert_int_equal(env->nrcpts, 2);
	assert_int_equal(env->rcpts[0].state, QUEUE_RCPT_DONE);
	again = queue_envelope_serialize(env, &alen);
	assert_int_equal(alen, len);
	assert_memory_equal(again, start, len);
	free(again);
	queue_envelope_free(env);
	free(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_full),
	    cmocka_unit_test(test_round_trip_verdicts),
	    cmocka_unit_test(test_round_trip_quarantine),
	    cmocka_unit_test(test_round_trip_arrival_us),
	    cmocka_unit_test(test_round_trip_minimal),
	    cmocka_unit_test(test_dup),
	    cmocka_unit_test(test_valid_cases),
	    cmocka_unit_test(test_malformed_cases),
	    cmocka_unit_test(test_nul_byte),
	    cmocka_unit_test(test_err_null_or_tiny),
	    cmocka_unit_test(test_every_truncation_fails),
	    cmocka_unit_test(test_oversize),
	    cmocka_unit_test(test_large_but_allowed),
	    cmocka_unit_test(test_replies_shortened_to_fit),
	    cmocka_unit_test(test_random_mutations),
	    cmocka_unit_test(test_doc_example),
	};

	return cmocka_run_group_tests(tests, 0, NULL);
}
