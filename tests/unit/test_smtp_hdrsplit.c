/*
 * test_smtp_hdrsplit.c - the header/body split of the DATA phase
 * (smtp/smtp-hdrsplit.c): where the header block ends, which fields are
 * handed over and written, the empty line between header and body, the
 * header limit - and that none of it depends on how the bytes arrive.
 * tests/fuzz/fuzz_hdrsplit.c checks the same invariants on random input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp-internal.h"

struct out {
	struct util_buf head, body;
	char fields[16][64];
	int nfields;
	int eoh;
};

static bool on_field(void *arg, const struct util_hdr_field *f)
{
	struct out *o = arg;

	if (o->nfields < 16)
		snprintf(o->fields[o->nfields++], 64, "%.*s", (int)f->name_len, f->name);
	return f->name_len >= 2 && strncasecmp(f->name, "X-", 2) == 0;
}

static void on_eoh(void *arg)
{
	((struct out *)arg)->eoh++;
}

static void on_head(void *arg, const char *p, size_t n)
{
	util_buf_add(&((struct out *)arg)->head, p, n);
}

static void on_body(void *arg, const char *p, size_t n)
{
	util_buf_add(&((struct out *)arg)->body, p, n);
}

static const struct smtp_hdrsplit_ops ops = {on_field, on_eoh, on_head, on_body};

/* split - run msg through a splitter with limit max, in pieces of piece
 * bytes (0 = one piece); returns overflow. */
static bool split(const char *msg, size_t len, size_t max, size_t piece, struct out *o)
{
	struct smtp_hdrsplit h;
	bool overflow;

	memset(o, 0, sizeof(*o));
	util_buf_init(&o->head);
	util_buf_init(&o->body);
	smtp_hdrsplit_init(&h, max, &ops, o);
	for (size_t off = 0; off < len;) {
		size_t k = piece == 0 || piece > len - off ? len - off : piece;
		smtp_hdrsplit_feed(&h, msg + off, k);
		off += k;
	}
	smtp_hdrsplit_end(&h);
	overflow = h.overflow;
	smtp_hdrsplit_free(&h);
	return overflow;
}

static void out_free(struct out *o)
{
	util_buf_free(&o->head);
	util_buf_free(&o->body);
}

static void test_fields_separator_body(void **state)
{
	static const char msg[] = "From: a@example.net\r\n"
				  "X-Spam-Flag: NO\r\n"
				  "Subject: folded\r\n"
				  " line\r\n"
				  "\r\n"
				  "body 1\r\n"
				  "X-Not-A-Header: body\r\n";
	static const size_t pieces[] = {0, 1, 2, 3, 7, 64};
	struct out o;

	(void)state;
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		assert_false(split(msg, strlen(msg), 1024, pieces[i], &o));
		assert_int_equal(o.nfields, 3);
		assert_string_equal(o.fields[0], "From");
		assert_string_equal(o.fields[1], "X-Spam-Flag");
		assert_string_equal(o.fields[2], "Subject");
		assert_int_equal(o.eoh, 1);
		assert_string_equal(o.head.data, "From: a@example.net\r\n"
						 "Subject: folded\r\n"
						 " line\r\n"
						 "\r\n");
		assert_string_equal(o.body.data, "body 1\r\nX-Not-A-Header: body\r\n");
		out_free(&o);
	}
}

static void test_no_empty_line_gets_one(void **state)
{
	static const char msg[] = "Subject: x\r\nthis is body\r\n";
	struct out o;

	(void)state;
	assert_false(split(msg, strlen(msg), 1024, 0, &o));
	assert_string_equal(o.head.data, "Subject: x\r\n\r\n");
	assert_string_equal(o.body.data, "this is body\r\n");
	out_free(&o);
	/* all header block, no body: nothing added */
	assert_false(split("Subject: y\r\n", 12, 1024, 5, &o));
	assert_string_equal(o.head.data, "Subject: y\r\n");
	assert_int_equal(o.body.len, 0);
	assert_int_equal(o.eoh, 1);
	out_free(&o);
}

/* A small header limit applies to the header block, not to the piece the
 * bytes came in: 4 KiB limit, 100 KiB body in one 64 KiB-sized piece. */
static void test_limit_is_for_the_header_block(void **state)
{
	size_t body = 100 * 1024, len;
	char *msg = malloc(body + 64);
	struct out o;

	(void)state;
	assert_non_null(msg);
	len = (size_t)snprintf(msg, 64, "Subject: small header\r\n\r\n");
	memset(msg + len, 'b', body);
	len += body;
	assert_false(split(msg, len, 4096, 0, &o));
	assert_int_equal(o.body.len, body);
	out_free(&o);
	assert_false(split(msg, len, 4096, 65536, &o));
	assert_int_equal(o.body.len, body);
	out_free(&o);

	/* a header block that does not end within the limit overflows, in one
	 * piece or many, and nothing is written */
	memset(msg, 'h', 6000);
	memcpy(msg, "Subject: ", 9);
	memcpy(msg + 6000, "\r\n\r\nbody\r\n", 10);
	assert_true(split(msg, 6010, 4096, 0, &o));
	assert_int_equal(o.head.len + o.body.len, 0);
	out_free(&o);
	assert_true(split(msg, 6010, 4096, 100, &o));
	assert_int_equal(o.head.len + o.body.len, 0);
	out_free(&o);
	free(msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields_separator_body),
	    cmocka_unit_test(test_no_empty_line_gets_one),
	    cmocka_unit_test(test_limit_is_for_the_header_block),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
