/*
 * test_logjson.c - util/util-logjson.c: the key=value tokenizer, the JSON
 * object `[log] format = json` writes (table: message -> members), its
 * escaping and truncation, and the flat JSON reader `mxgate log` uses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define HEAD "{\"ts\":\"2026-12-02T10:00:00.000Z\",\"level\":\"info\",\"pid\":42"

static const struct {
	const char *msg;
	const char *members; /* after HEAD, before the closing brace */
} json_cases[] = {
    /* the per-message summary line of smtp-session-data.c */
    {"s=00000000000000a1 queued id=0123456789ABCDEF client=192.0.2.1 rdns=unknown helo=x "
     "from=<a@b.example> to=<c@d>,<e@f> size=1234 tls=no spf=pass dmarc=pass "
     "reply=\"250 2.0.0 Ok: queued as 0123456789ABCDEF\"",
     ",\"session\":\"00000000000000a1\",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"queued\","
     "\"client\":\"192.0.2.1\",\"rdns\":\"unknown\",\"helo\":\"x\",\"from\":\"a@b.example\","
     "\"to\":[\"c@d\",\"e@f\"],\"size\":1234,\"tls\":\"no\",\"spf\":\"pass\",\"dmarc\":\"pass\","
     "\"reply\":\"250 2.0.0 Ok: queued as 0123456789ABCDEF\""},
    /* a delivery line: the queue id leads, the status is the event, the
     * reply in parentheses (nested) is the detail */
    {"0123456789ABCDEF to=<c@d> relay=127.0.0.1:25 delay=1.5 tls=none status=sent "
     "(250 ok (queued as x))",
     ",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"sent\",\"to\":\"c@d\","
     "\"relay\":\"127.0.0.1:25\",\"delay\":1.5,\"tls\":\"none\",\"status\":\"sent\","
     "\"detail\":\"250 ok (queued as x)\""},
    {"0123456789ABCDEF status=deferred attempts=1 next_attempt=60s error=(connection refused)",
     ",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"deferred\",\"status\":\"deferred\","
     "\"attempts\":1,\"next_attempt\":\"60s\",\"error\":\"connection refused\""},
    /* no session: "- " is dropped, the words are the event */
    {"- listening on 127.0.0.1:2525", ",\"event\":\"listening on 127.0.0.1:2525\""},
    {"queue scheduler: started messages=0 max_deliveries=20",
     ",\"event\":\"queue scheduler: started\",\"messages\":0,\"max_deliveries\":20"},
    /* the null sender */
    {"s=1 reject client=1.2.3.4 from=<> rcpt=<x@y> reason=relay_hack",
     ",\"session\":\"1\",\"event\":\"reject\",\"client\":\"1.2.3.4\",\"from\":\"\","
     "\"rcpt\":\"x@y\",\"reason\":\"relay_hack\""},
    /* id=- is no queue id */
    {"s=2 rejected id=- from=<a@b> reply=\"550 5.7.1 no\"",
     ",\"session\":\"2\",\"event\":\"rejected\",\"from\":\"a@b\",\"reply\":\"550 5.7.1 no\""},
    /* words after the pairs are text */
    {"0123456789ABCDEF status=error error=(delete failed); will retry",
     ",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"error\",\"status\":\"error\","
     "\"error\":\"delete failed\",\"text\":\"; will retry\""},
    /* a reply holding quotes: closed by the quote before the next key */
    {"s=3 x reply=\"550 \"no\" thanks\" tls=no",
     ",\"session\":\"3\",\"event\":\"x\",\"reply\":\"550 \\\"no\\\" thanks\",\"tls\":\"no\""},
    /* unterminated quote and parenthesis: the rest of the line */
    {"s=4 x a=\"abc def", ",\"session\":\"4\",\"event\":\"x\",\"a\":\"abc def\""},
    {"s=4 x a=(abc (def", ",\"session\":\"4\",\"event\":\"x\",\"a\":\"abc (def\""},
    /* keys spelled like the object's own members, repeated keys */
    {"s=5 ts=x level=y event=z s=6 s=7",
     ",\"session\":\"5\",\"session_2\":\"6\",\"session_3\":\"7\",\"msg_ts\":\"x\","
     "\"msg_level\":\"y\",\"msg_event\":\"z\""},
    /* a message key spelled like a suffixed name (found by fuzz_logjson) */
    {"s=1 x to=<a> to_2=b to=<c> (y) (z) detail_2=q",
     ",\"session\":\"1\",\"event\":\"x\",\"to\":\"a\",\"to_2\":\"b\",\"to_3\":\"c\","
     "\"detail\":\"y\",\"detail_2\":\"z\",\"detail_2_2\":\"q\""},
    /* counters are numbers only when they look like one */
    {"s=8 connect peer_port=abc size=007 errors=-1 delay=1. helo=123",
     ",\"session\":\"8\",\"event\":\"connect\",\"peer_port\":\"abc\",\"size\":\"007\","
     "\"errors\":-1,\"delay\":\"1.\",\"helo\":\"123\""},
    /* escaping: quotes, backslash, controls, invalid UTF-8, valid UTF-8 */
    {"s=9 x helo=a\\b\x01\x7f\xff\xc3\xa9 y=\"q\"\"",
     ",\"session\":\"9\",\"event\":\"x\",\"helo\":\"a\\\\b\\u0001\\u007f\\ufffd\xc3\xa9\","
     "\"y\":\"q\\\"\""},
    /* a "key=" that is not a key stays a word */
    {"1a=b =c", ",\"event\":\"1a=b =c\""},
    /* red team: a quoted local part holding "> key=" forges no member,
     * and ">,<" inside it splits no address list */
    {"s=a queued id=0123456789ABCDEF from=<\"x> status=sent id=FEDCBA9876543210 \"@e.example> "
     "to=<\"a>,<ceo@corp.example>,<\"@e.example>,<b@c> size=1",
     ",\"session\":\"a\",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"queued\","
     "\"from\":\"\\\"x> status=sent id=FEDCBA9876543210 \\\"@e.example\","
     "\"to\":[\"\\\"a>,<ceo@corp.example>,<\\\"@e.example\",\"b@c\"],\"size\":1"},
    /* a backslash pair inside the quoted local part */
    {"s=b x from=<\"a\\\" b> c=d\"@e> n=1",
     ",\"session\":\"b\",\"event\":\"x\",\"from\":\"\\\"a\\\\\\\" b> c=d\\\"@e\",\"n\":\"1\""},
    /* red team: a downstream reply holding ") key=(" forges no member */
    {"0123456789ABCDEF to=<c@d> tls=none status=sent (250 ok) dsn_id=FEDCBA9876543210 "
     "id=FEDCBA9876543210 (x)",
     ",\"queue_id\":\"0123456789ABCDEF\",\"event\":\"sent\",\"to\":\"c@d\","
     "\"tls\":\"none\",\"status\":\"sent\","
     "\"detail\":\"250 ok) dsn_id=FEDCBA9876543210 id=FEDCBA9876543210 (x\""},
    /* red team: a tab (HELO argument) separates nothing */
    {"s=c disconnect client=1.2.3.4 helo=x\tstatus=sent\tid=FEDCBA9876543210 errors=0",
     ",\"session\":\"c\",\"event\":\"disconnect\",\"client\":\"1.2.3.4\","
     "\"helo\":\"x\\tstatus=sent\\tid=FEDCBA9876543210\",\"errors\":0"},
    {"", ""},
    {"   ", ""},
};

static void test_json_table(void **state)
{
	char out[8192], want[4096];

	for (size_t i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
		size_t n = util_log_json_line(out, sizeof(out), "2026-12-02T10:00:00.000Z", "info", 42,
		                              json_cases[i].msg);
		snprintf(want, sizeof(want), "%s%s}", HEAD, json_cases[i].members);
		if (strcmp(out, want) != 0)
			print_error("case %zu: %s\n   got %s\n  want %s\n", i, json_cases[i].msg, out,
			            want);
		assert_string_equal(out, want);
		assert_int_equal(n, strlen(out));
		assert_int_equal(util_json_flat_parse(out, n, NULL, NULL), 0);
	}
}

/* tokens: positions only move forward and every byte is covered */
static const struct {
	const char *msg;
	const char *tokens; /* "key|val|quote;" each */
} kv_cases[] = {
    {"a=b c", "a|b|0;|c|0;"},
    {"a=\"x y\" b=(1 (2)) c=<p>,<q> d=", "a|x y|\";b|1 (2)|(;c|<p>,<q>|<;d||0;"},
    {"x-y.z=1 _k=2 9=3", "x-y.z|1|0;_k|2|0;|9=3|0;"},
    {"\t a=\t", "|\t|0;a|\t|0;"}, /* a tab is no blank */
    {"a=<b c> d", "a|<b c>|<;|d|0;"},
    {"a=<b c", "a|<b|<;|c|0;"},
};

static void test_kv_tokens(void **state)
{
	char got[512];

	for (size_t i = 0; i < sizeof(kv_cases) / sizeof(kv_cases[0]); i++) {
		const char *m = kv_cases[i].msg;
		size_t pos = 0, last = 0, len = strlen(m), g = 0;
		struct util_logkv kv;

		got[0] = '\0';
		while (util_logkv_next(m, len, &pos, &kv)) {
			assert_true(pos > last && pos <= len);
			last = pos;
			g += (size_t)snprintf(got + g, sizeof(got) - g, "%.*s|%.*s|%c;", (int)kv.keylen,
			                      kv.key ? kv.key : "", (int)kv.vallen, kv.val,
			                      kv.quote ? kv.quote : '0');
		}
		assert_int_equal(pos, len);
		assert_string_equal(got, kv_cases[i].tokens);
	}
}

/* a message larger than the line: members are dropped whole, the object
 * stays valid and says so */
static void test_json_truncated(void **state)
{
	char msg[6000], out[512];
	size_t n = 0;

	for (int i = 0; n + 16 < sizeof(msg); i++)
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "k%d=\"\x01\x01\" ", i);
	size_t len = util_log_json_line(out, sizeof(out), "T", "info", 1, msg);
	assert_true(len < sizeof(out));
	assert_int_equal(strlen(out), len);
	assert_int_equal(util_json_flat_parse(out, len, NULL, NULL), 0);
	assert_non_null(strstr(out, ",\"truncated\":true}"));
	/* more than 64 members */
	char out2[8192];
	len = util_log_json_line(out2, sizeof(out2), "T", "info", 1, msg);
	assert_int_equal(util_json_flat_parse(out2, len, NULL, NULL), 0);
	assert_non_null(strstr(out2, "\"k63\""));
	assert_null(strstr(out2, "\"k64\""));
	assert_non_null(strstr(out2, ",\"truncated\":true}"));
}

struct collect {
	char buf[1024];
	size_t n;
};

static void collect_cb(void *ctx, const char *key, const char *val)
{
	struct collect *c = ctx;
	c->n += (size_t)snprintf(c->buf + c->n, sizeof(c->buf) - c->n, "%s=%s;", key, val);
}

static const struct {
	const char *json;
	int rc;
	const char *members;
} parse_cases[] = {
    {"{\"a\":\"b\",\"n\":1.5,\"t\":true,\"z\":null}", 0, "a=b;n=1.5;t=true;z=null;"},
    {" { \"to\" : [ \"x\" , \"y\" ] , \"e\":[] } \n", 0, "to=x;to=y;"},
    {"{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20ac\\ud800\"}", 0,
     "s=\"\\/\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xef\xbf\xbd;"},
    {"{}", 0, ""},
    {"{\"a\":\"b\"", -1, NULL},
    {"{\"a\":\"b\"}x", -1, NULL},
    {"{\"a\":bogus}", -1, NULL},
    {"{\"a\":\"\\q\"}", -1, NULL},
    {"{\"a\":\"\\u00g1\"}", -1, NULL},
    {"{\"a\":\"x\ny\"}", -1, NULL},
    {"{\"a\":{\"b\":1}}", -1, NULL},
    {"[1]", -1, NULL},
    {"2026-12-02T10:00:00.000Z mxgate[1]: INFO s=1 connect", -1, NULL},
    {"", -1, NULL},
};

static void test_flat_parse(void **state)
{
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		struct collect c = {.n = 0};
		const char *j = parse_cases[i].json;

		c.buf[0] = '\0';
		assert_int_equal(util_json_flat_parse(j, strlen(j), collect_cb, &c), parse_cases[i].rc);
		if (parse_cases[i].rc == 0)
			assert_string_equal(c.buf, parse_cases[i].members);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_table),
		cmocka_unit_test(test_kv_tokens),
		cmocka_unit_test(test_json_truncated),
		cmocka_unit_test(test_flat_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
