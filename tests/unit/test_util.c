/*
 * test_util.c - table-driven tests of util/: queue ids, strings and buffers,
 * dates, host:port parsing, addresses, header iteration, files and logging.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* ------------------------------------------------------------ queue ids */

static void test_qid_sortable_unique(void **state)
{
	enum { N = 20000 };
	char (*ids)[UTIL_QID_LEN + 1] = calloc(N, sizeof(*ids));
	int i;

	assert_non_null(ids);
	for (i = 0; i < N; i++) {
		util_qid_new(ids[i]);
		assert_true(util_qid_is_valid(ids[i]));
		if (i > 0)
			assert_true(strcmp(ids[i - 1], ids[i]) < 0);
	}
	free(ids);
}

static void test_qid_time_prefix(void **state)
{
	char id[UTIL_QID_LEN + 1];
	char prefix[14];
	int64_t before = util_now_us();
	long long us;

	util_qid_new(id);
	memcpy(prefix, id, 13);
	prefix[13] = '\0';
	us = strtoll(prefix, NULL, 16);
	assert_true(us >= before);
	assert_true(us < before + 60 * 1000000LL);
}

static const struct {
	const char *s;
	bool valid;
} qid_cases[] = {
	{"0123456789ABCDEF", true},
	{"00000000000000000", false}, /* 17 */
	{"0123456789ABCDE", false},   /* 15 */
	{"0123456789abcdef", false},  /* lower case */
	{"0123456789ABCDEG", false},
	{"../../etc/passwd", false},
	{"", false},
};

static void test_qid_valid(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(qid_cases) / sizeof(qid_cases[0]); i++)
		assert_int_equal(util_qid_is_valid(qid_cases[i].s), qid_cases[i].valid);
	assert_false(util_qid_is_valid(NULL));
}

static void test_session_id(void **state)
{
	int64_t before = util_now_us() / 1000000;
	uint64_t a = util_session_id_next();
	uint64_t b = util_session_id_next();

	assert_true(a != 0 && b != 0 && b > a);
	/* not 1, 2, ... after every restart: the start time is in the top half */
	assert_true((int64_t)(a >> 32) >= before && (int64_t)(a >> 32) <= before + 1);
}

/* ------------------------------------------------------------ strings */

static const struct {
	const char *a, *b;
	bool eq;
} caseeq_cases[] = {
	{"abc", "ABC", true}, {"ExAmple.TEST", "example.test", true}, {"abc", "abcd", false},
	{"", "", true},       {"a", "", false},                      {"\xc3\xa9", "\xc3\x89", false},
	{"[", "{", false},    {"@", "`", false},
};

static void test_strcaseeq(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(caseeq_cases) / sizeof(caseeq_cases[0]); i++) {
		assert_int_equal(util_strcaseeq(caseeq_cases[i].a, caseeq_cases[i].b),
				 caseeq_cases[i].eq);
	}
}

static const struct {
	const char *addr;
	const char *domain; /* NULL: none */
} domain_cases[] = {
	{"user@example.test", "example.test"},
	{"\"a@b\"@example.test", "example.test"},
	{"postmaster", NULL},
	{"user@", ""},
	{"", NULL},
};

static void test_domain_of(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]); i++) {
		const char *d = util_domain_of(domain_cases[i].addr);

		if (domain_cases[i].domain == NULL)
			assert_null(d);
		else
			assert_string_equal(d, domain_cases[i].domain);
	}
	assert_null(util_domain_of(NULL));
}

static void test_xalloc(void **state)
{
	char *s = util_xstrndup("hello world", 5);
	char *t = util_xasprintf("%s-%d", "x", 42);
	char *u = util_xstrdup("");
	char *z = util_xcalloc(0, 0);
	char *c = util_xcalloc(4, 8);
	int i;

	assert_string_equal(s, "hello");
	assert_string_equal(t, "x-42");
	assert_string_equal(u, "");
	assert_non_null(z);
	for (i = 0; i < 32; i++)
		assert_int_equal(c[i], 0);
	c = util_xrealloc(c, 1000);
	free(s);
	free(t);
	free(u);
	free(z);
	free(c);
	s = util_xstrndup("ab", 10);
	assert_string_equal(s, "ab");
	free(s);
}

static void test_buf(void **state)
{
	struct util_buf b;
	struct util_buf z = {0};
	char big[3000];
	int i;

	util_buf_init(&b);
	assert_string_equal(b.data, "");
	util_buf_adds(&b, "abc");
	util_buf_add(&b, "\0x", 2);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.data, "abc\0x", 6);
	util_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	for (i = 0; i < 1000; i++)
		util_buf_printf(&b, "%d,", i % 10);
	assert_int_equal(b.len, 2000);
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	util_buf_printf(&b, "%s", big); /* larger than the free space */
	assert_int_equal(b.len, 2000 + sizeof(big) - 1);
	assert_int_equal(b.data[b.len], '\0');
	assert_int_equal(b.data[2000], 'q');
	util_buf_free(&b);
	assert_null(b.data);
	util_buf_free(&b); /* twice is fine */

	/* A zeroed struct works without util_buf_init. */
	util_buf_printf(&z, "%s", "x");
	util_buf_adds(&z, "y");
	assert_string_equal(z.data, "xy");
	util_buf_free(&z);
	util_buf_free(NULL);
}

static void test_strlist(void **state)
{
	struct util_strlist l = {0};

	util_strlist_add(&l, "Example.TEST");
	util_strlist_add(&l, "other.test");
	assert_int_equal(l.n, 2);
	assert_true(util_strlist_has_case(&l, "example.test"));
	assert_true(util_strlist_has_case(&l, "OTHER.test"));
	assert_false(util_strlist_has_case(&l, "example.tes"));
	util_strlist_free(&l);
	assert_int_equal(l.n, 0);
	assert_false(util_strlist_has_case(&l, "x"));
	util_strlist_free(&l);
	util_strlist_free(NULL);
}

static const struct {
	int64_t t;
	const char *date;
} date_cases[] = {
	{0, "Thu, 01 Jan 1970 00:00:00 +0000"},
	{1795593344, "Wed, 25 Nov 2026 07:55:44 +0000"},
	{951782400, "Tue, 29 Feb 2000 00:00:00 +0000"},
	{4102444799LL, "Thu, 31 Dec 2099 23:59:59 +0000"},
};

static void test_rfc5322_date(void **state)
{
	char out[64];
	size_t i;

	for (i = 0; i < sizeof(date_cases) / sizeof(date_cases[0]); i++) {
		util_rfc5322_date(date_cases[i].t, out);
		assert_string_equal(out, date_cases[i].date);
	}
}

static void test_clocks(void **state)
{
	int64_t a = util_mono_ms();
	int64_t b = util_mono_ms();

	assert_true(b >= a);
	assert_true(util_now_us() > 1700000000LL * 1000000);
}

/* ------------------------------------------------------------ host:port */

static const struct {
	const char *in;
	int def;
	int rc;
	const char *host;
	int port;
} hostport_cases[] = {
	{"127.0.0.1:2525", 25, 0, "127.0.0.1", 2525},
	{"127.0.0.1", 25, 0, "127.0.0.1", 25},
	{"[::1]:587", 25, 0, "::1", 587},
	{"[2001:db8::1]", 25, 0, "2001:db8::1", 25},
	{"::1", 25, 0, "::1", 25},
	{"mx.example.test:25", 0, 0, "mx.example.test", 25},
	{"inbound-smtp.us-east-1.amazonaws.com", 25, 0, "inbound-smtp.us-east-1.amazonaws.com", 25},
	{"localhost:65535", 25, 0, "localhost", 65535},
	{"localhost:1", 25, 0, "localhost", 1},
	{"localhost", -1, -1, NULL, 0},  /* port required */
	{"", 25, -1, NULL, 0},
	{":25", 25, -1, NULL, 0},
	{"host:", 25, -1, NULL, 0},
	{"host:0", 25, -1, NULL, 0},
	{"host:65536", 25, -1, NULL, 0},
	{"host:99999999999", 25, -1, NULL, 0},
	{"host:-1", 25, -1, NULL, 0},
	{"host:+25", 25, -1, NULL, 0},
	{"host:25x", 25, -1, NULL, 0},
	{"host: 25", 25, -1, NULL, 0},
	{"ho st:25", 25, -1, NULL, 0},
	{"[::1", 25, -1, NULL, 0},
	{"[::1]x", 25, -1, NULL, 0},
	{"[::1]:", 25, -1, NULL, 0},
	{"[]:25", 25, -1, NULL, 0},
	{"[not-v6]:25", 25, -1, NULL, 0},
	{"[127.0.0.1]:25", 25, -1, NULL, 0},
	{"2001:db8::1:25x", 25, -1, NULL, 0},
	{"a:b:c", 25, -1, NULL, 0},
};

static void test_hostport(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(hostport_cases) / sizeof(hostport_cases[0]); i++) {
		char host[256] = "";
		char err[128] = "";
		int port = -7;
		int rc = util_hostport_parse(hostport_cases[i].in, hostport_cases[i].def, host,
					     sizeof(host), &port, err, sizeof(err));

		if (rc != hostport_cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d err %s", i, hostport_cases[i].in, rc, err);
		if (rc == 0) {
			assert_string_equal(host, hostport_cases[i].host);
			assert_int_equal(port, hostport_cases[i].port);
		} else {
			assert_true(err[0] != '\0');
		}
	}
}

static void test_hostport_small_buffers(void **state)
{
	char host[4];
	int port;

	assert_int_equal(util_hostport_parse("abc:1", 25, host, sizeof(host), &port, NULL, 0), 0);
	assert_string_equal(host, "abc");
	assert_int_equal(util_hostport_parse("abcd:1", 25, host, sizeof(host), &port, NULL, 0),
			 -1);
}

/* ------------------------------------------------------------ addresses */

static const struct {
	const char *host;
	int port;
	int rc;
	const char *str;
	bool loopback;
} numeric_cases[] = {
	{"127.0.0.1", 25, 0, "127.0.0.1", true},
	{"127.255.0.9", 0, 0, "127.255.0.9", true},
	{"192.0.2.1", 65535, 0, "192.0.2.1", false},
	{"::1", 25, 0, "::1", true},
	{"2001:db8::1", 25, 0, "2001:db8::1", false},
	{"::ffff:127.0.0.1", 25, 0, "::ffff:127.0.0.1", true},
	{"localhost", 25, -1, NULL, false},
	{"1.2.3", 25, -1, NULL, false},
	{"192.0.2.1", 65536, -1, NULL, false},
	{"192.0.2.1", -1, -1, NULL, false},
	{"", 25, -1, NULL, false},
};

static void test_addr_numeric(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(numeric_cases) / sizeof(numeric_cases[0]); i++) {
		struct util_addr a;
		char s[64];
		int rc = util_addr_parse_numeric(numeric_cases[i].host, numeric_cases[i].port, &a);

		assert_int_equal(rc, numeric_cases[i].rc);
		if (rc != 0)
			continue;
		assert_string_equal(util_addr_str(&a, s, sizeof(s)), numeric_cases[i].str);
		assert_int_equal(util_addr_port(&a), numeric_cases[i].port);
		assert_int_equal(util_addr_is_loopback(&a), numeric_cases[i].loopback);
	}
}

static void test_addr_mapped(void **state)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;
	struct util_addr a;
	char s[64];

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	s6.sin6_port = htons(4321);
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
	util_addr_from_sockaddr(&a, (struct sockaddr *)&s6, sizeof(s6));
	assert_int_equal(a.ss.ss_family, AF_INET);
	assert_int_equal(a.len, sizeof(struct sockaddr_in));
	assert_string_equal(util_addr_str(&a, s, sizeof(s)), "192.0.2.7");
	assert_int_equal(util_addr_port(&a), 4321);

	inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
	util_addr_from_sockaddr(&a, (struct sockaddr *)&s6, sizeof(s6));
	assert_int_equal(a.ss.ss_family, AF_INET6);
	assert_string_equal(util_addr_str(&a, s, sizeof(s)), "2001:db8::7");

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = htons(25);
	inet_pton(AF_INET, "10.1.2.3", &s4.sin_addr);
	util_addr_from_sockaddr(&a, (struct sockaddr *)&s4, sizeof(s4));
	assert_string_equal(util_addr_str(&a, s, sizeof(s)), "10.1.2.3");
	assert_int_equal(util_addr_port(&a), 25);

	memset(&a, 0, sizeof(a));
	a.ss.ss_family = AF_UNIX;
	assert_string_equal(util_addr_str(&a, s, sizeof(s)), "?");
	assert_int_equal(util_addr_port(&a), -1);
	assert_false(util_addr_is_loopback(&a));
}

/* ------------------------------------------------------------ headers */

struct hdr_expect {
	const char *name;
	const char *value;
};

static const struct {
	const char *block;
	int nfields;              /* fields returned before the end */
	int last_rc;              /* 0 (end) or -1 (malformed) */
	struct hdr_expect f[4];
	size_t end_pos;           /* *pos after the last call (0: do not check) */
} hdr_cases[] = {
	{"From: a@b\r\nTo: c@d\r\n\r\nbody\r\n", 2, 0, {{"From", " a@b"}, {"To", " c@d"}}, 20},
	{"Subject: one\r\n two\r\n\tthree\r\nX: y\r\n\r\n", 2, 0,
	 {{"Subject", " one\r\n two\r\n\tthree"}, {"X", " y"}}, 34},
	{"X:\r\n", 1, 0, {{"X", ""}}, 4},
	{"X-Empty:\r\n\r\n", 1, 0, {{"X-Empty", ""}}, 10},
	{"Authentication-Results : forged\r\n", 1, 0, {{"Authentication-Results", " forged"}}, 0},
	{"Trunc: no crlf", 1, 0, {{"Trunc", " no crlf"}}, 14},
	{"A: 1\r\nB: folded\r\n ", 2, 0, {{"A", " 1"}, {"B", " folded\r\n "}}, 0},
	{"", 0, 0, {{NULL, NULL}}, 0},
	{"\r\n", 0, 0, {{NULL, NULL}}, 0},
	{"A: 1\r\nno colon here\r\n", 1, -1, {{"A", " 1"}}, 6},
	{"A: 1\r\n leading continuation", 1, 0, {{"A", " 1\r\n leading continuation"}}, 0},
	{" leading: space\r\n", 0, -1, {{NULL, NULL}}, 0},
	{": no name\r\n", 0, -1, {{NULL, NULL}}, 0},
	{"Bad\x01name: x\r\n", 0, -1, {{NULL, NULL}}, 0},
	{"Bad\xc3\xa9name: x\r\n", 0, -1, {{NULL, NULL}}, 0},
	{"A: bare LF\nAuthentication-Results: x\r\n", 0, -1, {{NULL, NULL}}, 0},
	{"A: bare CR\rB: x\r\n", 0, -1, {{NULL, NULL}}, 0},
	{"A: cr at end\r", 0, -1, {{NULL, NULL}}, 0},
	{"Trunc", 0, -1, {{NULL, NULL}}, 0},
	{"Trunc ", 0, -1, {{NULL, NULL}}, 0},
	{"A: 8bit \xc3\xa9\r\n", 1, 0, {{"A", " 8bit \xc3\xa9"}}, 0},
};

static void test_hdr_iterate(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
		const char *blk = hdr_cases[i].block;
		size_t len = strlen(blk);
		size_t pos = 0;
		struct util_hdr_field f;
		int n = 0;
		int rc;

		while ((rc = util_hdr_next(blk, len, &pos, &f)) == 1) {
			assert_true(n < hdr_cases[i].nfields);
			assert_int_equal(f.name_len, strlen(hdr_cases[i].f[n].name));
			assert_memory_equal(f.name, hdr_cases[i].f[n].name, f.name_len);
			if (f.value_len != strlen(hdr_cases[i].f[n].value) ||
			    memcmp(f.value, hdr_cases[i].f[n].value, f.value_len) != 0)
				fail_msg("case %zu field %d: value \"%.*s\"", i, n, (int)f.value_len,
					 f.value);
			assert_ptr_equal(f.raw, f.name);
			assert_true(f.raw + f.raw_len == blk + pos);
			n++;
		}
		if (n != hdr_cases[i].nfields || rc != hdr_cases[i].last_rc)
			fail_msg("case %zu: %d fields rc %d", i, n, rc);
		if (hdr_cases[i].end_pos != 0)
			assert_int_equal(pos, hdr_cases[i].end_pos);
	}
}

static void test_hdr_raw_and_name(void **state)
{
	const char blk[] = "DKIM-Signature: v=1;\r\n  a=rsa\r\nX: 1\r\n\r\n";
	struct util_hdr_field f;
	size_t pos = 0;

	assert_int_equal(util_hdr_next(blk, sizeof(blk) - 1, &pos, &f), 1);
	assert_int_equal(f.raw_len, strlen("DKIM-Signature: v=1;\r\n  a=rsa\r\n"));
	assert_true(util_hdr_name_is(&f, "dkim-signature"));
	assert_false(util_hdr_name_is(&f, "dkim-signatur"));
	assert_false(util_hdr_name_is(&f, "dkim-signaturex"));
	assert_int_equal(util_hdr_next(blk, sizeof(blk) - 1, &pos, &f), 1);
	assert_true(util_hdr_name_is(&f, "X"));
	assert_int_equal(util_hdr_next(blk, sizeof(blk) - 1, &pos, &f), 0);
	assert_int_equal(pos, sizeof(blk) - 3); /* at the empty line */
	/* A block cut at every length never reads past its end or crashes. */
	for (size_t len = 0; len < sizeof(blk); len++) {
		size_t p = 0;

		while (util_hdr_next(blk, len, &p, &f) == 1)
			assert_true(p <= len);
	}
	/* NUL inside a field. */
	pos = 0;
	assert_int_equal(util_hdr_next("A: x\0y\r\n", 8, &pos, &f), -1);
}

/* ------------------------------------------------------------ files */

static void test_files(void **state)
{
	char dir[] = "/tmp/mxgate-test-util-XXXXXX";
	char path[256];
	char *data;
	size_t len = 99;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(util_mkdir_p(path, 0700), 0);
	assert_int_equal(util_mkdir_p(path, 0700), 0); /* exists */
	assert_int_equal(util_fsync_dir(path), 0);
	snprintf(path, sizeof(path), "%s/a/b/f", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_write_all(fd, "hello\n", 6), 0);
	assert_int_equal(util_write_all(fd, "", 0), 0);
	close(fd);
	data = util_read_file(path, 6, &len);
	assert_non_null(data);
	assert_int_equal(len, 6);
	assert_string_equal(data, "hello\n");
	free(data);
	errno = 0;
	assert_null(util_read_file(path, 5, &len));
	assert_int_equal(errno, EFBIG);
	snprintf(path, sizeof(path), "%s/a/b/f/g", dir);
	assert_int_equal(util_mkdir_p(path, 0700), -1); /* f is a file */
	snprintf(path, sizeof(path), "%s/none", dir);
	assert_null(util_read_file(path, 100, NULL));
	assert_int_equal(util_fsync_dir(path), -1);
	assert_int_equal(util_write_all(-1, "x", 1), -1);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	assert_int_equal(system(path), 0);
}

/* ------------------------------------------------------------ logging */

static char *log_capture(enum util_log_format fmt, const char *msg)
{
	char path[] = "/tmp/mxgate-test-log-XXXXXX";
	int fd = mkstemp(path);
	char *data;

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(util_log_init(UTIL_LOG_INFO, fmt, path), 0);
	util_log_info("%s", msg);
	util_log_debug("not written %d", 1);
	assert_int_equal(util_log_init(UTIL_LOG_INFO, UTIL_LOG_TEXT, NULL), 0);
	data = util_read_file(path, 65536, NULL);
	assert_non_null(data);
	unlink(path);
	return data;
}

static void test_log_text(void **state)
{
	char *line = log_capture(UTIL_LOG_TEXT, "0123ABCD key=value\r\nforged");
	char expect[128];

	/* 2026-11-25T07:55:44.123Z mxgate[pid]: INFO message */
	assert_int_equal(strlen(line), 24 + strlen(" mxgate[]: INFO ") + (size_t)snprintf(expect, sizeof(expect), "%ld", (long)getpid()) + strlen("0123ABCD key=value??forged\n"));
	assert_int_equal(line[4], '-');
	assert_int_equal(line[10], 'T');
	assert_int_equal(line[19], '.');
	assert_int_equal(line[23], 'Z');
	snprintf(expect, sizeof(expect), " mxgate[%ld]: INFO 0123ABCD key=value??forged\n",
		 (long)getpid());
	assert_string_equal(line + 24, expect);
	free(line);
}

static void test_log_json(void **state)
{
	char *line = log_capture(UTIL_LOG_JSON, "q\"b\\s\n\x01\xc3\xa9");
	char expect[160];
	char *p;

	assert_memory_equal(line, "{\"ts\":\"", 7);
	p = strstr(line, "\",\"level\"");
	assert_non_null(p);
	assert_int_equal(p - line, 7 + 24);
	snprintf(expect, sizeof(expect),
		 "\",\"level\":\"info\",\"pid\":%ld,\"event\":\"q\\\"b\\\\s\\n\\u0001\xc3\xa9\"}\n",
		 (long)getpid());
	assert_string_equal(p, expect);
	free(line);
}

static void test_log_levels(void **state)
{
	char path[] = "/tmp/mxgate-test-log-XXXXXX";
	char big[10000];
	char *data;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(util_log_init(UTIL_LOG_WARN, UTIL_LOG_TEXT, path), 0);
	assert_true(util_log_enabled(UTIL_LOG_ERR));
	assert_false(util_log_enabled(UTIL_LOG_INFO));
	util_log_info("hidden");
	util_log_warn("shown");
	util_log_set_level(UTIL_LOG_DEBUG);
	util_log_debug("debug %d", 7);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	util_log_err("%s", big);
	assert_int_equal(util_log_init(UTIL_LOG_INFO, UTIL_LOG_TEXT, NULL), 0);
	data = util_read_file(path, 65536, NULL);
	assert_non_null(data);
	assert_null(strstr(data, "hidden"));
	assert_non_null(strstr(data, "WARN shown\n"));
	assert_non_null(strstr(data, "DEBUG debug 7\n"));
	assert_non_null(strstr(data, "ERROR xxxx"));
	assert_non_null(strstr(data, "xxx...\n"));
	free(data);
	unlink(path);
	assert_int_equal(util_log_init(UTIL_LOG_INFO, UTIL_LOG_TEXT, "/nonexistent/dir/log"), -1);
}

/* ------------------------------------------------------------ LDH names */

static const struct {
	const char *s;
	bool ok;
} ldh_cases[] = {
    {"mail.example.test", true},
    {"a", true},
    {"xn--bcher-kva.example", true},
    {"1-2-3.in-addr.example", true},
    {"", false},
    {"mail.example.test.", false},
    {".example.test", false},
    {"a..b", false},
    {"evil.test\r\nAuthentication-Results: mx.example.test; dmarc=pass", false},
    {"a b.test", false},
    {"a(b).test", false},
    {"a;b.test", false},
    {"a_b.test", false},
    {"a\tb", false},
    {"caf\xc3\xa9.test", false},
    {"x\x7f.test", false},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", true},  /* 63 */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", false}, /* 64 */
};

static void test_ldh_name(void **state)
{
	char big[300];

	for (size_t i = 0; i < sizeof(ldh_cases) / sizeof(ldh_cases[0]); i++)
		if (util_is_ldh_name(ldh_cases[i].s) != ldh_cases[i].ok)
			fail_msg("case %zu: %s", i, ldh_cases[i].s);
	assert_false(util_is_ldh_name(NULL));
	/* 253 octets in all, at most (RFC 1035 2.3.4 in text form) */
	memset(big, 'a', sizeof(big));
	for (size_t i = 50; i < sizeof(big); i += 51)
		big[i] = '.';
	big[253] = '\0';
	assert_true(util_is_ldh_name(big));
	big[253] = 'a';
	big[254] = '\0';
	assert_false(util_is_ldh_name(big));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qid_sortable_unique),
		cmocka_unit_test(test_qid_time_prefix),
		cmocka_unit_test(test_qid_valid),
		cmocka_unit_test(test_session_id),
		cmocka_unit_test(test_strcaseeq),
		cmocka_unit_test(test_ldh_name),
		cmocka_unit_test(test_domain_of),
		cmocka_unit_test(test_xalloc),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_strlist),
		cmocka_unit_test(test_rfc5322_date),
		cmocka_unit_test(test_clocks),
		cmocka_unit_test(test_hostport),
		cmocka_unit_test(test_hostport_small_buffers),
		cmocka_unit_test(test_addr_numeric),
		cmocka_unit_test(test_addr_mapped),
		cmocka_unit_test(test_hdr_iterate),
		cmocka_unit_test(test_hdr_raw_and_name),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_log_text),
		cmocka_unit_test(test_log_json),
		cmocka_unit_test(test_log_levels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
