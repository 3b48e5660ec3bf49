/*
 * fuzz_hdrsplit.c - libFuzzer target: the session's header/body split
 * (smtp-hdrsplit.c), which decides where the header block ends, which
 * fields reach the downstream, and where the body starts.
 *
 * Input: byte 0 picks the mode (bit 0: feed the raw bytes; otherwise run
 * them through the DATA parser first, as the session does) and the header
 * limit; byte 1 seeds the cutting of the input into pieces; the rest is the
 * message.  Fields whose name starts with 'X' or 'x' are dropped.
 * Invariants besides memory safety:
 *  - the output (fields seen, drop decisions, header bytes, body bytes and
 *    where the header block ended) is the same whether the message arrives
 *    in one piece or cut anywhere;
 *  - nothing is lost or invented: the fields seen, concatenated, are the
 *    input up to the end of the header block; the header bytes written are
 *    exactly the kept fields followed by one empty line (when anything
 *    follows the block); the body bytes are the input after the block and
 *    its empty line;
 *  - every kept field ends in CRLF when a separator follows, so the empty
 *    line can never merge into a field;
 *  - a block over the limit is reported (overflow) and nothing is written.
 */
#include "fuzz-common.h"
#include "smtp-internal.h"
#include "util.h"

struct out {
	struct util_buf fields; /* every field's raw bytes, in order */
	struct util_buf kept;   /* kept fields' raw bytes */
	struct util_buf head;   /* ops->head bytes */
	struct util_buf body;   /* ops->body bytes */
	size_t nfields, ndropped;
	int eoh;                /* times eoh() was called */
	bool body_before_eoh;
};

static bool on_field(void *arg, const struct util_hdr_field *f)
{
	struct out *o = arg;
	bool drop = f->name_len > 0 && (f->name[0] == 'X' || f->name[0] == 'x');

	FUZZ_CHECK(o->eoh == 0);
	FUZZ_CHECK(f->raw_len > 0 && f->name_len > 0);
	FUZZ_CHECK(f->name >= f->raw && f->name + f->name_len <= f->raw + f->raw_len);
	util_buf_add(&o->fields, f->raw, f->raw_len);
	o->nfields++;
	if (drop)
		o->ndropped++;
	else
		util_buf_add(&o->kept, f->raw, f->raw_len);
	return drop;
}

static void on_eoh(void *arg)
{
	((struct out *)arg)->eoh++;
}

static void on_head(void *arg, const char *p, size_t n)
{
	struct out *o = arg;
	FUZZ_CHECK(n > 0);
	util_buf_add(&o->head, p, n);
}

static void on_body(void *arg, const char *p, size_t n)
{
	struct out *o = arg;
	if (o->eoh == 0)
		o->body_before_eoh = true;
	FUZZ_CHECK(n > 0);
	util_buf_add(&o->body, p, n);
}

static const struct smtp_hdrsplit_ops ops = {on_field, on_eoh, on_head, on_body};

struct feed {
	struct smtp_hdrsplit *h;
	uint32_t seed;
};

/* cut - split p[0..n) into pseudo-random pieces (1..64 bytes) for h. */
static void cut(struct smtp_hdrsplit *h, const char *p, size_t n, uint32_t *seed)
{
	while (n > 0) {
		*seed = *seed * 1103515245u + 12345u;
		size_t k = 1 + (*seed >> 16) % 64;
		if (k > n)
			k = n;
		smtp_hdrsplit_feed(h, p, k);
		p += k;
		n -= k;
	}
}

static void out_free(struct out *o)
{
	util_buf_free(&o->fields);
	util_buf_free(&o->kept);
	util_buf_free(&o->head);
	util_buf_free(&o->body);
}

static bool buf_eq(const struct util_buf *a, const struct util_buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* emit_msg - the DATA parser's output collected into a buffer. */
static int emit_msg(const char *p, size_t n, void *arg)
{
	util_buf_add(arg, p, n);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct util_buf msg;
	struct smtp_hdrsplit h1, h2;
	struct out o1, o2;
	size_t max;
	uint32_t seed;

	if (size < 2)
		return 0;
	max = 16 + (size_t)(data[0] >> 1) * 64; /* 16 .. 8144 bytes */
	seed = data[1];
	util_buf_init(&msg);
	if (data[0] & 1) {
		util_buf_add(&msg, data + 2, size - 2);
	} else {
		struct smtp_data_parser dp;
		bool done = false;

		smtp_data_init(&dp, 0);
		(void)smtp_data_feed(&dp, (const char *)data + 2, size - 2, emit_msg, &msg, &done);
		if (!done)
			(void)smtp_data_feed(&dp, "\r\n.\r\n", 5, emit_msg, &msg, &done);
	}
	memset(&o1, 0, sizeof(o1));
	memset(&o2, 0, sizeof(o2));
	util_buf_init(&o1.fields);
	util_buf_init(&o1.kept);
	util_buf_init(&o1.head);
	util_buf_init(&o1.body);
	util_buf_init(&o2.fields);
	util_buf_init(&o2.kept);
	util_buf_init(&o2.head);
	util_buf_init(&o2.body);

	/* in one piece */
	smtp_hdrsplit_init(&h1, max, &ops, &o1);
	smtp_hdrsplit_feed(&h1, msg.data, msg.len);
	smtp_hdrsplit_end(&h1);
	/* cut anywhere */
	smtp_hdrsplit_init(&h2, max, &ops, &o2);
	cut(&h2, msg.data, msg.len, &seed);
	smtp_hdrsplit_end(&h2);

	FUZZ_CHECK(h1.overflow == h2.overflow);
	if (!h1.overflow) {
		FUZZ_CHECK(o1.eoh == 1 && o2.eoh == 1);
		FUZZ_CHECK(!o1.body_before_eoh && !o2.body_before_eoh);
		FUZZ_CHECK(o1.nfields == o2.nfields && o1.ndropped == o2.ndropped);
		FUZZ_CHECK(buf_eq(&o1.fields, &o2.fields));
		FUZZ_CHECK(buf_eq(&o1.head, &o2.head));
		FUZZ_CHECK(buf_eq(&o1.body, &o2.body));

		/* accounting: fields = input[0..end); after it an optional CRLF,
		 * then the body */
		size_t end = o1.fields.len;
		FUZZ_CHECK(end <= msg.len);
		FUZZ_CHECK(end == 0 || memcmp(msg.data, o1.fields.data, end) == 0);
		size_t after = end;
		bool crlf = msg.len - end >= 2 && msg.data[end] == '\r' && msg.data[end + 1] == '\n';
		if (crlf)
			after += 2;
		FUZZ_CHECK(o1.body.len == msg.len - after);
		FUZZ_CHECK(o1.body.len == 0 ||
			   memcmp(o1.body.data, msg.data + after, o1.body.len) == 0);
		/* header bytes = kept fields + one separator when anything followed */
		bool sep = after < msg.len || crlf;
		FUZZ_CHECK(o1.head.len == o1.kept.len + (sep ? 2 : 0));
		FUZZ_CHECK(o1.kept.len == 0 || memcmp(o1.head.data, o1.kept.data, o1.kept.len) == 0);
		if (sep) {
			FUZZ_CHECK(memcmp(o1.head.data + o1.kept.len, "\r\n", 2) == 0);
			FUZZ_CHECK(o1.kept.len == 0 ||
				   (o1.kept.len >= 2 &&
				    memcmp(o1.kept.data + o1.kept.len - 2, "\r\n", 2) == 0));
		}
	} else {
		FUZZ_CHECK(o1.head.len == 0 && o1.body.len == 0 && o1.eoh == 0);
		FUZZ_CHECK(o2.head.len == 0 && o2.body.len == 0 && o2.eoh == 0);
	}
	smtp_hdrsplit_free(&h1);
	smtp_hdrsplit_free(&h2);
	out_free(&o1);
	out_free(&o2);
	util_buf_free(&msg);
	return 0;
}
