/*
 * fuzz_smtp_data.c - libFuzzer target: the DATA stream parser
 * (smtp_data_feed): dot-unstuffing, strict CRLF, the end-of-data recogniser
 * and the size limit - the code that stands between a client and SMTP
 * smuggling.
 *
 * Input: bytes 0-1 give the size limit (0 = none), byte 2 seeds the chunk
 * sizes; the rest is the stream after "354".  The stream is fed twice: in
 * one piece and in fuzzer-chosen chunks.  Invariants:
 *  - both feeds consume the same bytes, end at the same place, emit the same
 *    output with the same flags (a split across packets changes nothing);
 *  - the data ends exactly after the first "\r\n.\r\n" of the input (or at a
 *    leading ".\r\n") and never anywhere else: no smuggling variant ends it;
 *  - the output has only CRLF line ends and no NUL byte;
 *  - p.size is the number of bytes emitted and never exceeds the limit;
 *  - the output of a clean stream, dot-stuffed again (as the relay does on
 *    the way out), parses back to itself and ends exactly at its end.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-internal.h"

struct sink {
	char *buf;
	size_t len, cap;
};

static int sink_emit(const char *p, size_t n, void *arg)
{
	struct sink *s = arg;
	FUZZ_CHECK(n > 0);
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->buf = realloc(s->buf, s->cap);
		if (!s->buf)
			abort();
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

/* first_end - offset just past the end-of-data mark, or 0 when none. */
static size_t first_end(const char *p, size_t n)
{
	if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= n; i++)
		if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3 || size > 1 << 16)
		return 0;
	int64_t limit = (int64_t)data[0] << 8 | data[1];
	unsigned seed = data[2];
	const char *in = (const char *)data + 3;
	size_t n = size - 3;

	struct smtp_data_parser a, b;
	struct sink sa = {0}, sb = {0};
	bool done_a = false, done_b = false;

	/* odd seed: no line limit; even: a small one, so LONG_LINE is reached */
	size_t line_limit = (seed & 1) ? 0 : 16 + (size_t)seed * 4;

	smtp_data_init(&a, limit);
	a.line_limit = line_limit;
	size_t used_a = smtp_data_feed(&a, in, n, sink_emit, &sa, &done_a);

	smtp_data_init(&b, limit);
	b.line_limit = line_limit;
	size_t used_b = 0;
	while (used_b < n && !done_b) {
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 7;
		if (chunk > n - used_b)
			chunk = n - used_b;
		size_t u = smtp_data_feed(&b, in + used_b, chunk, sink_emit, &sb, &done_b);
		FUZZ_CHECK(u <= chunk);
		if (!done_b)
			FUZZ_CHECK(u == chunk);
		used_b += u;
	}
	FUZZ_CHECK(used_a <= n);
	FUZZ_CHECK(used_a == used_b && done_a == done_b);
	FUZZ_CHECK(sa.len == sb.len && (sa.len == 0 || memcmp(sa.buf, sb.buf, sa.len) == 0));
	FUZZ_CHECK(a.errors == b.errors && a.size == b.size && a.eightbit == b.eightbit);

	/* Where the data ends: exactly the first real CRLF.CRLF. */
	size_t end = first_end(in, n);
	FUZZ_CHECK(done_a == (end != 0));
	FUZZ_CHECK(done_a ? used_a == end : used_a == n);

	/* A feed after the end consumes nothing. */
	if (done_a) {
		bool d2 = false;
		FUZZ_CHECK(smtp_data_feed(&a, "x", 1, sink_emit, &sa, &d2) == 0 && d2);
	}

	/* The output: CRLF only, no NUL, size accounted, limit kept. */
	FUZZ_CHECK((int64_t)sa.len == a.size);
	if (limit > 0)
		FUZZ_CHECK(a.size <= limit);
	for (size_t i = 0; i < sa.len; i++) {
		FUZZ_CHECK(sa.buf[i] != 0);
		if (sa.buf[i] == '\r')
			FUZZ_CHECK(i + 1 < sa.len ? sa.buf[i + 1] == '\n'
						  : (a.errors & SMTP_DATA_TOO_BIG) != 0);
		if (sa.buf[i] == '\n')
			FUZZ_CHECK(i > 0 && sa.buf[i - 1] == '\r');
	}
	if (done_a && !(a.errors & SMTP_DATA_TOO_BIG))
		FUZZ_CHECK(sa.len == 0 || (sa.len >= 2 && sa.buf[sa.len - 2] == '\r' &&
					   sa.buf[sa.len - 1] == '\n'));
	if (a.errors & SMTP_DATA_TOO_BIG)
		FUZZ_CHECK(limit > 0);

	/* Clean output survives the relay: stuff it, parse it back. */
	if (done_a && a.errors == 0) {
		struct sink st = {0}, back = {0};
		bool bol = true;
		for (size_t i = 0; i < sa.len; i++) {
			if (bol && sa.buf[i] == '.')
				sink_emit(".", 1, &st);
			sink_emit(sa.buf + i, 1, &st);
			bol = sa.buf[i] == '\n';
		}
		sink_emit(".\r\n", 3, &st);
		struct smtp_data_parser c;
		bool done_c = false;
		smtp_data_init(&c, 0);
		size_t used_c = smtp_data_feed(&c, st.buf, st.len, sink_emit, &back, &done_c);
		FUZZ_CHECK(done_c && used_c == st.len && c.errors == 0);
		FUZZ_CHECK(back.len == sa.len &&
			   (sa.len == 0 || memcmp(back.buf, sa.buf, sa.len) == 0));
		free(st.buf);
		free(back.buf);
	}
	free(sa.buf);
	free(sb.buf);
	return 0;
}
