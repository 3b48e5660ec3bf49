/*
 * test_proxy.c - table-driven tests of the PROXY protocol parser: v1 text
 * (TCP4, TCP6, UNKNOWN), v2 binary headers built byte by byte (PROXY,
 * LOCAL, UNSPEC, TLVs), every truncation, malformed and oversize headers,
 * and smtp_proxy_looks_like.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "smtp-internal.h"

/* ------------------------------------------------------------ v1 */

static const struct {
	const char *in;
	int rc;           /* -2: the length of the first line including CRLF */
	bool local;
	const char *src;  /* "addr port" */
	const char *dst;
} v1_cases[] = {
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\n", -2, false, "192.0.2.1 12345",
	 "198.51.100.2 25"},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\nEHLO x\r\n", -2, false, "192.0.2.1 12345",
	 "198.51.100.2 25"},
	{"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", -2, false, "0.0.0.0 0",
	 "255.255.255.255 65535"},
	{"PROXY TCP6 2001:db8::1 2001:db8::2 1 587\r\n", -2, false, "2001:db8::1 1",
	 "2001:db8::2 587"},
	{"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 4000 25\r\n", -2, false, "192.0.2.1 4000",
	 "192.0.2.2 25"},
	{"PROXY UNKNOWN\r\n", -2, true, NULL, NULL},
	{"PROXY UNKNOWN whatever  is here\r\n", -2, true, NULL, NULL},
	/* The longest legal line (107 bytes, from the specification). */
	{"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", -2, true, NULL, NULL},
	{"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:"
	 "ffff:ffff 65535 65535\r\n",
	 -2, true, NULL, NULL},
	/* need more */
	{"P", 0, false, NULL, NULL},
	{"PROX", 0, false, NULL, NULL},
	{"PROXY ", 0, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1", 0, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25", 0, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r", 0, false, NULL, NULL},
	/* malformed */
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\rx", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25 \r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25 7\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4  192.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY  TCP4 192.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY  UNKNOWN\r\n", -1, false, NULL, NULL},
	{"PROXY UNKNOWNX\r\n", -1, false, NULL, NULL},
	{"PROXY TCP5 192.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY tcp4 192.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"proxy TCP4 192.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 2001:db8::1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP6 192.0.2.1 2001:db8::2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.256 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 01.0.2.1 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2 198.51.100.2 12345 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 012 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 +1 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 123456 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 1x 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1\t198.51.100.2 1 25\r\n", -1, false, NULL, NULL},
	{"PROXY TCP4 192.0.2.1 198.51.100.2 1 25\xff\r\n", -1, false, NULL, NULL},
	{"PROXY\r\n", -1, false, NULL, NULL},
	{"PROXY \r\n", -1, false, NULL, NULL},
	{"PROXX TCP4", -1, false, NULL, NULL},
	{"EHLO client.example.test\r\n", -1, false, NULL, NULL},
	{"GET / HTTP/1.0\r\n", -1, false, NULL, NULL},
};

/* addr_port - "addr port" of a util_addr. */
static void addr_port(const struct util_addr *a, char *out, size_t n)
{
	char s[64];

	snprintf(out, n, "%s %d", util_addr_str(a, s, sizeof(s)), util_addr_port(a));
}

static void test_v1(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(v1_cases) / sizeof(v1_cases[0]); i++) {
		const char *in = v1_cases[i].in;
		struct smtp_proxy_info info;
		int expect = v1_cases[i].rc;
		char s[96];
		int rc;

		if (expect == -2)
			expect = (int)(strstr(in, "\r\n") - in) + 2;
		rc = smtp_proxy_parse((const unsigned char *)in, strlen(in), &info);
		if (rc != expect)
			fail_msg("case %zu \"%s\": rc %d, expected %d", i, in, rc, expect);
		if (rc <= 0)
			continue;
		assert_int_equal(info.local, v1_cases[i].local);
		if (v1_cases[i].src != NULL) {
			addr_port(&info.src, s, sizeof(s));
			assert_string_equal(s, v1_cases[i].src);
			addr_port(&info.dst, s, sizeof(s));
			assert_string_equal(s, v1_cases[i].dst);
		}
	}
}

static void test_v1_length(void **state)
{
	char line[200];
	struct smtp_proxy_info info;
	size_t pad;

	/* "PROXY UNKNOWN " + padding + CRLF: 107 bytes accepted, 108 refused. */
	for (pad = 80; pad <= 100; pad++) {
		size_t n;

		snprintf(line, sizeof(line), "PROXY UNKNOWN %.*s\r\n", (int)pad,
			 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		n = strlen(line);
		assert_int_equal(smtp_proxy_parse((unsigned char *)line, n, &info),
				 n <= SMTP_PROXY_V1_MAX ? (int)n : -1);
	}
	/* No CRLF within 107 bytes: refused without waiting for more. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY TCP4 ", 11);
	assert_int_equal(smtp_proxy_parse((unsigned char *)line, 106, &info), 0);
	assert_int_equal(smtp_proxy_parse((unsigned char *)line, 107, &info), -1);
	assert_int_equal(smtp_proxy_parse((unsigned char *)line, 200, &info), -1);
	/* CR as the 107th byte: the LF would be the 108th. */
	line[106] = '\r';
	assert_int_equal(smtp_proxy_parse((unsigned char *)line, 107, &info), -1);
}

static void test_v1_every_truncation(void **state)
{
	static const char *const good[] = {
		"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1 587\r\n",
		"PROXY UNKNOWN\r\n",
	};
	size_t i, n;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t len = strlen(good[i]);

		for (n = 0; n < len; n++) {
			struct smtp_proxy_info info;

			assert_int_equal(smtp_proxy_parse((const unsigned char *)good[i], n, &info),
					 0);
		}
	}
}

/* ------------------------------------------------------------ v2 */

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

struct v2 {
	unsigned char b[SMTP_PROXY_V2_MAX + 64];
	size_t n;
};

/* v2_begin - signature, version/command and family bytes; length later. */
static void v2_begin(struct v2 *h, unsigned char ver_cmd, unsigned char fam)
{
	memcpy(h->b, v2_sig, sizeof(v2_sig));
	h->b[12] = ver_cmd;
	h->b[13] = fam;
	h->n = 16;
}

static void v2_bytes(struct v2 *h, const void *p, size_t n)
{
	memcpy(h->b + h->n, p, n);
	h->n += n;
}

static void v2_u16(struct v2 *h, unsigned v)
{
	h->b[h->n++] = (unsigned char)(v >> 8);
	h->b[h->n++] = (unsigned char)v;
}

static void v2_ip(struct v2 *h, int family, const char *s)
{
	unsigned char a[16];

	assert_int_equal(inet_pton(family, s, a), 1);
	v2_bytes(h, a, family == AF_INET ? 4 : 16);
}

static void v2_tlv(struct v2 *h, unsigned char type, const char *val, size_t n)
{
	h->b[h->n++] = type;
	v2_u16(h, (unsigned)n);
	v2_bytes(h, val, n);
}

/* v2_end - write the length field from what was added. */
static void v2_end(struct v2 *h)
{
	size_t len = h->n - 16;

	h->b[14] = (unsigned char)(len >> 8);
	h->b[15] = (unsigned char)len;
}

/* v2_tcp4 - a PROXY TCP/IPv4 header. */
static void v2_tcp4(struct v2 *h, const char *src, unsigned sport, const char *dst,
		    unsigned dport)
{
	v2_begin(h, 0x21, 0x11);
	v2_ip(h, AF_INET, src);
	v2_ip(h, AF_INET, dst);
	v2_u16(h, sport);
	v2_u16(h, dport);
}

/* v2_tcp6 - a PROXY TCP/IPv6 header. */
static void v2_tcp6(struct v2 *h, const char *src, unsigned sport, const char *dst,
		    unsigned dport)
{
	v2_begin(h, 0x21, 0x21);
	v2_ip(h, AF_INET6, src);
	v2_ip(h, AF_INET6, dst);
	v2_u16(h, sport);
	v2_u16(h, dport);
}

enum v2_kind {
	V2_TCP4,
	V2_TCP4_TLV,
	V2_TCP4_TLV_OVERRUN,
	V2_TCP4_TLV_SHORT,
	V2_TCP4_SHORT_ADDR,
	V2_TCP4_MAX,
	V2_TCP4_OVER_MAX,
	V2_TCP6,
	V2_TCP6_MAPPED,
	V2_TCP6_SHORT_ADDR,
	V2_LOCAL,
	V2_LOCAL_JUNK,
	V2_UNSPEC,
	V2_BAD_VERSION1,
	V2_BAD_VERSION3,
	V2_BAD_CMD,
	V2_UDP4,
	V2_UNIX,
	V2_INET_NO_TRANSPORT,
	V2_BAD_SIG,
};

static const struct {
	enum v2_kind kind;
	int rc;       /* -2: the whole built header */
	bool local;
	const char *src;
	const char *dst;
} v2_cases[] = {
	{V2_TCP4, -2, false, "192.0.2.1 12345", "198.51.100.2 25"},
	{V2_TCP4_TLV, -2, false, "192.0.2.1 12345", "198.51.100.2 25"},
	{V2_TCP4_TLV_OVERRUN, -1, false, NULL, NULL},
	{V2_TCP4_TLV_SHORT, -1, false, NULL, NULL},
	{V2_TCP4_SHORT_ADDR, -1, false, NULL, NULL},
	{V2_TCP4_MAX, -2, false, "192.0.2.1 12345", "198.51.100.2 25"},
	{V2_TCP4_OVER_MAX, -1, false, NULL, NULL},
	{V2_TCP6, -2, false, "2001:db8::1 65535", "2001:db8::2 25"},
	{V2_TCP6_MAPPED, -2, false, "192.0.2.7 1", "2001:db8::2 25"},
	{V2_TCP6_SHORT_ADDR, -1, false, NULL, NULL},
	{V2_LOCAL, -2, true, NULL, NULL},
	{V2_LOCAL_JUNK, -2, true, NULL, NULL},
	{V2_UNSPEC, -2, true, NULL, NULL},
	{V2_BAD_VERSION1, -1, false, NULL, NULL},
	{V2_BAD_VERSION3, -1, false, NULL, NULL},
	{V2_BAD_CMD, -1, false, NULL, NULL},
	{V2_UDP4, -1, false, NULL, NULL},
	{V2_UNIX, -1, false, NULL, NULL},
	{V2_INET_NO_TRANSPORT, -1, false, NULL, NULL},
	{V2_BAD_SIG, -1, false, NULL, NULL},
};

/* v2_build - the header for one kind of case. */
static void v2_build(struct v2 *h, enum v2_kind kind)
{
	static const char aws_vpce[] = "\x01vpce-0123456789abcdef0";
	unsigned char junk[40];

	memset(h, 0, sizeof(*h));
	memset(junk, 0xa5, sizeof(junk));
	switch (kind) {
	case V2_TCP4:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		break;
	case V2_TCP4_TLV:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		v2_tlv(h, 0xEA, aws_vpce, sizeof(aws_vpce) - 1); /* AWS NLB VPC endpoint */
		v2_tlv(h, 0x04, "", 0);                          /* PP2_TYPE_NOOP */
		break;
	case V2_TCP4_TLV_OVERRUN:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[h->n++] = 0xEA;
		v2_u16(h, 10);
		v2_bytes(h, "abc", 3);
		break;
	case V2_TCP4_TLV_SHORT:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		v2_bytes(h, "\x04\x00", 2);
		break;
	case V2_TCP4_SHORT_ADDR:
		v2_begin(h, 0x21, 0x11);
		v2_ip(h, AF_INET, "192.0.2.1");
		v2_ip(h, AF_INET, "198.51.100.2");
		v2_u16(h, 1);
		break;
	case V2_TCP4_MAX:
	case V2_TCP4_OVER_MAX: {
		static char pad[SMTP_PROXY_V2_MAX];
		size_t n = SMTP_PROXY_V2_MAX - 16 - 12 - 3 + (kind == V2_TCP4_OVER_MAX);

		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		v2_tlv(h, 0x04, pad, n);
		break;
	}
	case V2_TCP6:
		v2_tcp6(h, "2001:db8::1", 65535, "2001:db8::2", 25);
		break;
	case V2_TCP6_MAPPED:
		v2_tcp6(h, "::ffff:192.0.2.7", 1, "2001:db8::2", 25);
		break;
	case V2_TCP6_SHORT_ADDR:
		v2_begin(h, 0x21, 0x21);
		v2_ip(h, AF_INET6, "2001:db8::1");
		v2_ip(h, AF_INET6, "2001:db8::2");
		v2_u16(h, 1);
		break;
	case V2_LOCAL:
		v2_begin(h, 0x20, 0x00);
		break;
	case V2_LOCAL_JUNK:
		v2_begin(h, 0x20, 0x31); /* family is ignored for LOCAL */
		v2_bytes(h, junk, sizeof(junk));
		break;
	case V2_UNSPEC:
		v2_begin(h, 0x21, 0x00);
		v2_bytes(h, junk, 5);
		break;
	case V2_BAD_VERSION1:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[12] = 0x11;
		break;
	case V2_BAD_VERSION3:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[12] = 0x31;
		break;
	case V2_BAD_CMD:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[12] = 0x22;
		break;
	case V2_UDP4:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[13] = 0x12;
		break;
	case V2_UNIX:
		v2_begin(h, 0x21, 0x31);
		v2_bytes(h, junk, sizeof(junk));
		break;
	case V2_INET_NO_TRANSPORT:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[13] = 0x10;
		break;
	case V2_BAD_SIG:
		v2_tcp4(h, "192.0.2.1", 12345, "198.51.100.2", 25);
		h->b[11] = 0x0b;
		break;
	}
	v2_end(h);
}

static void test_v2(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(v2_cases) / sizeof(v2_cases[0]); i++) {
		struct smtp_proxy_info info;
		struct v2 h;
		int expect = v2_cases[i].rc;
		char s[96];
		int rc;

		v2_build(&h, v2_cases[i].kind);
		if (expect == -2)
			expect = (int)h.n;
		/* Pipelined SMTP bytes after the header are not consumed. */
		memcpy(h.b + h.n, "EHLO x\r\n", 8);
		rc = smtp_proxy_parse(h.b, h.n + 8, &info);
		if (rc != expect)
			fail_msg("case %zu: rc %d, expected %d", i, rc, expect);
		if (rc <= 0)
			continue;
		assert_int_equal(info.local, v2_cases[i].local);
		if (v2_cases[i].src != NULL) {
			addr_port(&info.src, s, sizeof(s));
			assert_string_equal(s, v2_cases[i].src);
			addr_port(&info.dst, s, sizeof(s));
			assert_string_equal(s, v2_cases[i].dst);
		}
	}
}

/* Every prefix of a valid header needs more; every prefix of a bad one
 * needs more or is refused, never accepted. */
static void test_v2_every_truncation(void **state)
{
	size_t i, n;

	for (i = 0; i < sizeof(v2_cases) / sizeof(v2_cases[0]); i++) {
		struct v2 h;
		bool refused = false;

		v2_build(&h, v2_cases[i].kind);
		for (n = 0; n < h.n; n++) {
			struct smtp_proxy_info info;
			int rc = smtp_proxy_parse(h.b, n, &info);

			if (v2_cases[i].rc == -2)
				assert_int_equal(rc, 0);
			else if (rc == -1)
				refused = true;
			else
				assert_true(rc == 0 && !refused); /* once refused, stays refused */
		}
	}
}

static void test_v2_oversize_early(void **state)
{
	struct smtp_proxy_info info;
	struct v2 h;

	/* A length field over the limit is refused from the first 16 bytes. */
	v2_begin(&h, 0x21, 0x11);
	h.b[14] = 0xff;
	h.b[15] = 0xff;
	assert_int_equal(smtp_proxy_parse(h.b, 16, &info), -1);
	/* A bad version is refused from byte 13 on. */
	v2_begin(&h, 0x31, 0x11);
	assert_int_equal(smtp_proxy_parse(h.b, 13, &info), -1);
}

/* ------------------------------------------------------------ looks_like */

static void test_looks_like(void **state)
{
	static const struct {
		const char *in;
		size_t n; /* 0: strlen */
		bool like;
	} cases[] = {
		{"PROXY TCP4 1.2.3.4", 0, true},
		{"PROXY ", 0, true},
		{"PROX", 0, true},
		{"\r\n\r\n\0\r\nQUIT\n\x21", 13, true},
		{"\r\n\r\n\0", 5, true},
		{"EHLO x\r\n", 0, false},
		{"PROXX", 0, false},
		{"proxy ", 0, false},
		{"\r\n\r\nx", 0, false},
		{"", 0, false},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = cases[i].n ? cases[i].n : strlen(cases[i].in);

		if (smtp_proxy_looks_like((const unsigned char *)cases[i].in, n) != cases[i].like)
			fail_msg("case %zu", i);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1),
		cmocka_unit_test(test_v1_length),
		cmocka_unit_test(test_v1_every_truncation),
		cmocka_unit_test(test_v2),
		cmocka_unit_test(test_v2_every_truncation),
		cmocka_unit_test(test_v2_oversize_early),
		cmocka_unit_test(test_looks_like),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
