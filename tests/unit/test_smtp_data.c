/*
 * test_smtp_data.c - table-driven tests of the DATA stream parser: end of
 * data, dot-unstuffing, every SMTP-smuggling variant, bare CR/LF, NUL,
 * 8-bit, long lines, the size limit, write errors, pipelined bytes after
 * the end, and every split of the input across feed calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp-internal.h"

#define B_LF SMTP_DATA_BARE_LF
#define B_CR SMTP_DATA_BARE_CR
#define LONG SMTP_DATA_LONG_LINE
#define NUL SMTP_DATA_NUL
#define BIG SMTP_DATA_TOO_BIG

struct sink {
	char *data;
	size_t len;
	size_t calls;
	int fail_after; /* fail the call with this number (1-based); 0 never */
};

/* sink_emit - collect emitted bytes. */
static int sink_emit(const char *p, size_t n, void *arg)
{
	struct sink *s = arg;

	assert_true(n > 0);
	s->calls++;
	if (s->fail_after != 0 && (int)s->calls >= s->fail_after)
		return -1;
	s->data = realloc(s->data, s->len + n + 1);
	assert_non_null(s->data);
	memcpy(s->data + s->len, p, n);
	s->len += n;
	s->data[s->len] = '\0';
	return 0;
}

struct run {
	struct smtp_data_parser p;
	struct sink out;
	size_t consumed;
	bool done;
};

/* run_feed - feed in[0..n) in pieces given by cuts (sorted offsets). */
static void run_feed(struct run *r, const char *in, size_t n, int64_t limit, const size_t *cuts,
		     size_t ncuts)
{
	size_t start = 0;
	size_t k;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&r->p, limit);
	for (k = 0; k <= ncuts && !r->done; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		size_t used = smtp_data_feed(&r->p, in + start, end - start, sink_emit, &r->out,
					     &r->done);

		assert_true(used <= end - start);
		if (!r->done)
			assert_int_equal(used, end - start);
		r->consumed = start + used;
		start = end;
	}
}

/* run_bytes - feed one byte per call. */
static void run_bytes(struct run *r, const char *in, size_t n, int64_t limit)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&r->p, limit);
	for (i = 0; i < n && !r->done; i++) {
		size_t used = smtp_data_feed(&r->p, in + i, 1, sink_emit, &r->out, &r->done);

		assert_int_equal(used, 1);
		r->consumed = i + 1;
	}
}

static void run_free(struct run *r)
{
	free(r->out.data);
	r->out.data = NULL;
}

struct data_case {
	const char *name;
	const char *in;
	size_t in_len;       /* 0: strlen */
	int64_t limit;
	const char *out;
	size_t out_len;      /* 0: strlen */
	unsigned errors;
	bool done;
	size_t consumed;     /* 0: whole input */
};

#define SMUGGLE "MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\n"

static const struct data_case data_cases[] = {
	{"simple", "Subject: x\r\n\r\nbody\r\n.\r\n", 0, 0, "Subject: x\r\n\r\nbody\r\n", 0, 0,
	 true, 0},
	{"empty message", ".\r\n", 0, 0, "", 0, 0, true, 0},
	{"empty line then end", "\r\n.\r\n", 0, 0, "\r\n", 0, 0, true, 0},
	{"pipelined after end", "a\r\n.\r\nQUIT\r\n", 0, 0, "a\r\n", 0, 0, true, 6},
	{"not ended", "a\r\nb\r\n", 0, 0, "a\r\nb\r\n", 0, 0, false, 0},
	{"not ended, dot", "a\r\n.", 0, 0, "a\r\n", 0, 0, false, 0},
	{"not ended, dot CR", "a\r\n.\r", 0, 0, "a\r\n", 0, 0, false, 0},
	{"not ended, CR", "a\r", 0, 0, "a", 0, 0, false, 0},
	{"dot unstuffing", "..a\r\n..\r\n...\r\n.\r\n", 0, 0, ".a\r\n.\r\n..\r\n", 0, 0, true, 0},
	{"first line stuffed", "..\r\n.\r\n", 0, 0, ".\r\n", 0, 0, true, 0},
	{"dot then text", ".x\r\n.\r\n", 0, 0, "x\r\n", 0, 0, true, 0},
	{"dot mid-line", "a.b\r\n a.\r\n.\r\n", 0, 0, "a.b\r\n a.\r\n", 0, 0, true, 0},
	{"8-bit", "caf\xc3\xa9\r\n.\r\n", 0, 0, "caf\xc3\xa9\r\n", 0, 0, true, 0},
	{"binary-ish 8-bit", "\x80\xff\xfe\r\n.\r\n", 0, 0, "\x80\xff\xfe\r\n", 0, 0, true, 0},
	/* SMTP smuggling (CVE-2023-51764/51765/51766 family): none may end the data. */
	{"<LF>.<LF>", "a\n.\n" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0, B_LF,
	 true, 0},
	{"<CR><LF>.<LF>", "a\r\n.\n" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_LF, true, 0},
	{"<LF>.<CR><LF>", "a\n.\r\n" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_LF, true, 0},
	{"<CR>.<CR>", "a\r.\r" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0, B_CR,
	 true, 0},
	{"<CR><LF>.<CR>", "a\r\n.\r" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_CR, true, 0},
	{"<CR>.<CR><LF>", "a\r.\r\n" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_CR, true, 0},
	{"<LF>.<CR>", "a\n.\r" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_LF | B_CR, true, 0},
	{"<CR>.<LF>", "a\r.\n" SMUGGLE "b\r\n.\r\n", 0, 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0,
	 B_CR | B_LF, true, 0},
	/* A real CRLF "." CRLF after a bare CR is the genuine end. */
	{"<CR><CR><LF>.<CR><LF>", "a\r\r\n.\r\nX\r\n.\r\n", 0, 0, "a\r\n\r\n", 0, B_CR, true,
	 7},
	{"<CR><LF><NUL>.<CR><LF>", "a\r\n\0.\r\n" SMUGGLE "b\r\n.\r\n", 13 + sizeof(SMUGGLE) - 1,
	 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0, NUL, true, 0},
	{"<CR><LF>.<NUL><CR><LF>", "a\r\n.\0\r\n" SMUGGLE "b\r\n.\r\n", 13 + sizeof(SMUGGLE) - 1,
	 0, "a\r\n.\r\n" SMUGGLE "b\r\n", 0, NUL, true, 0},
	{"<CR><NUL><LF>.<CR><LF>", "a\r\0\n.\r\n" SMUGGLE "b\r\n.\r\n", 13 + sizeof(SMUGGLE) - 1,
	 0, "a\r\n\r\n.\r\n" SMUGGLE "b\r\n", 0, NUL | B_CR | B_LF, true, 0},
	{"<LF>..<CR><LF>", "a\n..\r\n.\r\n", 0, 0, "a\r\n..\r\n", 0, B_LF, true, 0},
	{"leading <LF>.<LF>", "\n.\n.\r\n.\r\n", 0, 0, "\r\n.\r\n.\r\n", 0, B_LF, true, 0},
	{"leading <LF>.<LF>, unended", "\n.\n.\r\n", 0, 0, "\r\n.\r\n.\r\n", 0, B_LF, false, 0},
	{"leading .<LF>", ".\n.\r\n.\r\n", 0, 0, ".\r\n.\r\n", 0, B_LF, true, 0},
	{"leading .<CR>x", ".\rx\r\n.\r\n", 0, 0, ".\r\nx\r\n", 0, B_CR, true, 0},
	/* other errors */
	{"NUL dropped", "a\0b\r\n.\r\n", 8, 0, "ab\r\n", 0, NUL, true, 0},
	{"bare LF in line", "a\nb\r\n.\r\n", 0, 0, "a\r\nb\r\n", 0, B_LF, true, 0},
	{"bare CR in line", "a\rb\r\n.\r\n", 0, 0, "a\r\nb\r\n", 0, B_CR, true, 0},
	{"size limit", "0123456789\r\n.\r\n", 0, 5, "01234", 0, BIG, true, 0},
	{"size limit exact", "012\r\n.\r\n", 0, 5, "012\r\n", 0, 0, true, 0},
	{"size limit one over", "0123\r\n.\r\n", 0, 5, "0123\r", 0, BIG, true, 0},
	{"size limit, smuggling", "0123456789\n.\n" SMUGGLE ".\r\n", 0, 4, "0123", 0, BIG | B_LF,
	 true, 0},
	{"negative limit = none", "0123456789\r\n.\r\n", 0, -1, "0123456789\r\n", 0, 0, true, 0},
};

/* check_run - compare one run with its case. */
static void check_run(const struct data_case *t, const struct run *r, const char *how)
{
	size_t in_len = t->in_len ? t->in_len : strlen(t->in);
	size_t out_len = t->out_len ? t->out_len : strlen(t->out);
	size_t consumed = t->consumed ? t->consumed : in_len;

	if (r->out.len != out_len || (out_len > 0 && memcmp(r->out.data, t->out, out_len) != 0))
		fail_msg("%s (%s): output \"%.*s\"", t->name, how, (int)r->out.len,
			 r->out.data ? r->out.data : "");
	if (r->p.errors != t->errors)
		fail_msg("%s (%s): errors 0x%x, expected 0x%x", t->name, how, r->p.errors,
			 t->errors);
	if (r->done != t->done || r->consumed != consumed)
		fail_msg("%s (%s): done %d consumed %zu, expected %d %zu", t->name, how, r->done,
			 r->consumed, t->done, consumed);
	assert_int_equal(r->p.size, (int64_t)out_len);
	assert_false(r->p.write_error);
}

static void test_data_cases(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
		const struct data_case *t = &data_cases[i];
		size_t n = t->in_len ? t->in_len : strlen(t->in);
		struct run r;
		size_t cut;

		run_feed(&r, t->in, n, t->limit, NULL, 0);
		check_run(t, &r, "whole");
		run_free(&r);
		run_bytes(&r, t->in, n, t->limit);
		check_run(t, &r, "bytes");
		run_free(&r);
		for (cut = 0; cut <= n; cut++) {
			run_feed(&r, t->in, n, t->limit, &cut, 1);
			check_run(t, &r, "split");
			run_free(&r);
		}
	}
}

static const char sample[] = "Received: from a\r\n\tby b\r\nSubject: caf\xc3\xa9\r\n\r\n"
			     "..leading dot\r\nmid.dot\r\n..\r\n\r\nlast\r\n.\r\nNOOP\r\n";

/* Every way of cutting the sample stream in two and three pieces gives the
 * same output and the same end as feeding it whole. */
static void test_data_every_split(void **state)
{
	const char *expect = "Received: from a\r\n\tby b\r\nSubject: caf\xc3\xa9\r\n\r\n"
			     ".leading dot\r\nmid.dot\r\n.\r\n\r\nlast\r\n";
	size_t n = strlen(sample);
	size_t end = n - strlen("NOOP\r\n");
	struct run r;
	size_t a, b;

	for (a = 0; a <= n; a++) {
		for (b = a; b <= n; b++) {
			size_t cuts[2] = {a, b};

			run_feed(&r, sample, n, 0, cuts, 2);
			assert_true(r.done);
			assert_int_equal(r.consumed, end);
			assert_int_equal(r.out.len, strlen(expect));
			assert_memory_equal(r.out.data, expect, r.out.len);
			assert_int_equal(r.p.errors, 0);
			assert_true(r.p.eightbit);
			run_free(&r);
		}
	}
}

/* test_data_long_line - lines over RFC 5321's 1000 octets are emitted
 * unchanged (never wrapped: DKIM); only a line over line_limit (octets as
 * sent, before CRLF, a stuffing dot included; 0 = none) is flagged, and it is
 * still emitted whole, in one call or byte by byte. */
static void test_data_long_line(void **state)
{
	static const struct {
		size_t len; /* octets before the CRLF, after unstuffing */
		bool stuffed;
		size_t line_limit;
		unsigned errors;
	} cases[] = {
		{998, false, 998, 0},      {999, false, 998, LONG},   {997, true, 998, 0},
		{998, true, 998, LONG},    {999, false, 0, 0},        {5000, false, 0, 0},
		{200000, false, 0, 0},     {5000, false, 65536, 0},   {65536, false, 65536, 0},
		{65537, false, 65536, LONG}, {65535, true, 65536, 0}, {65536, true, 65536, LONG},
		{300000, false, 65536, LONG},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = cases[i].len + (cases[i].stuffed ? 1 : 0);
		char *in = malloc(n + 16);

		assert_non_null(in);
		for (size_t k = 0; k < n; k++)
			in[k] = (char)('a' + k % 26);
		if (cases[i].stuffed)
			in[0] = '.', in[1] = '.';
		memcpy(in + n, "\r\nok\r\n.\r\n", 9);
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			struct run r;
			size_t used = 0;

			memset(&r, 0, sizeof(r));
			smtp_data_init(&r.p, 0);
			r.p.line_limit = cases[i].line_limit;
			if (bytewise)
				for (size_t k = 0; k < n + 9 && !r.done; k++)
					used += smtp_data_feed(&r.p, in + k, 1, sink_emit, &r.out, &r.done);
			else
				used = smtp_data_feed(&r.p, in, n + 9, sink_emit, &r.out, &r.done);
			assert_true(r.done);
			assert_int_equal(used, n + 9);
			assert_int_equal(r.p.errors, cases[i].errors);
			/* the line itself, unwrapped: only the stuffing dot goes */
			assert_int_equal(r.out.len, cases[i].len + 6);
			assert_memory_equal(r.out.data, in + (cases[i].stuffed ? 1 : 0), cases[i].len);
			assert_memory_equal(r.out.data + cases[i].len, "\r\nok\r\n", 6);
			run_free(&r);
		}
		free(in);
	}
}

static void test_data_eightbit_flag(void **state)
{
	struct run r;

	run_feed(&r, "plain ascii\r\n.\r\n", 16, 0, NULL, 0);
	assert_true(r.done);
	assert_false(r.p.eightbit);
	run_free(&r);
	run_feed(&r, "\x80\r\n.\r\n", 6, 0, NULL, 0);
	assert_true(r.p.eightbit);
	run_free(&r);
}

static void test_data_write_error(void **state)
{
	static const char in[] = "line one\r\nline two\r\n.\r\nQUIT\r\n";
	struct run r;
	size_t i;

	/* Byte by byte, so there are many emit calls; the second one fails. */
	memset(&r, 0, sizeof(r));
	r.out.fail_after = 2;
	smtp_data_init(&r.p, 0);
	for (i = 0; i < sizeof(in) - 1 && !r.done; i++)
		r.consumed += smtp_data_feed(&r.p, in + i, 1, sink_emit, &r.out, &r.done);
	assert_true(r.done);
	assert_true(r.p.write_error);
	assert_int_equal(r.out.calls, 2); /* no emit after the failure */
	assert_int_equal(r.out.len, 1);
	assert_int_equal(r.consumed, sizeof(in) - 1 - 6);
	run_free(&r);
}

static void test_data_after_done(void **state)
{
	struct smtp_data_parser p;
	struct sink s = {0};
	bool done = false;

	smtp_data_init(&p, 0);
	assert_int_equal(smtp_data_feed(&p, ".\r\nMAIL", 7, sink_emit, &s, &done), 3);
	assert_true(done);
	done = false;
	assert_int_equal(smtp_data_feed(&p, "MAIL", 4, sink_emit, &s, &done), 0);
	assert_true(done);
	assert_int_equal(s.len, 0);
	/* A NULL emit discards. */
	smtp_data_init(&p, 0);
	assert_int_equal(smtp_data_feed(&p, "x\r\n.\r\n", 6, NULL, NULL, &done), 6);
	assert_true(done);
	assert_int_equal(p.size, 3);
	assert_int_equal(smtp_data_feed(&p, "", 0, NULL, NULL, &done), 0);
	free(s.data);
}

static void test_data_big_stream(void **state)
{
	/* 1 MB of lines under a 64 KiB limit: the end is still found. */
	size_t n = 80 * 13108; /* whole lines */
	char *in = malloc(n + 8);
	struct run r;
	size_t i;

	assert_non_null(in);
	for (i = 0; i < n; i++)
		in[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'a' + (char)(i % 26);
	memcpy(in + n, ".\r\n", 3);
	run_feed(&r, in, n + 3, 65536, NULL, 0);
	assert_true(r.done);
	assert_int_equal(r.consumed, n + 3);
	assert_int_equal(r.p.errors, BIG);
	assert_int_equal(r.out.len, 65536);
	assert_int_equal(r.p.size, 65536);
	assert_memory_equal(r.out.data, in, 65536);
	run_free(&r);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_cases),       cmocka_unit_test(test_data_every_split),
		cmocka_unit_test(test_data_long_line),   cmocka_unit_test(test_data_eightbit_flag),
		cmocka_unit_test(test_data_write_error), cmocka_unit_test(test_data_after_done),
		cmocka_unit_test(test_data_big_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
