/*
 * fuzz_content_banner.c - libFuzzer target: the MIME walk and banner splice
 * of the external-sender warning (content_banner_apply,
 * content/content-banner.c).  The sender controls every byte of the
 * message, including boundaries, encodings and charsets.
 *
 * Invariants besides memory safety:
 *  - the result is one of the known values; out is written only on DONE;
 *  - a rewritten message is never rewritten again (the banner is found);
 *  - the rewrite never changes the MIME tree: the same parts, of the same
 *    types, in the same places (encoded text re-encoded into a boundary
 *    line made new parts - an .exe the attachment policy never saw).
 */
#include <stdbool.h>
#include <string.h>

#include <gmime/gmime.h>

#include "content-internal.h"
#include "content.h"
#include "fuzz-common.h"

/* shape - the MIME tree as text: each part's depth and content type. */
static void shape(GMimeObject *obj, int depth, struct util_buf *b)
{
	if (!obj || depth > 300)
		return;
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	util_buf_printf(b, "%d:%s/%s;", depth,
	                ct && g_mime_content_type_get_media_type(ct)
	                    ? g_mime_content_type_get_media_type(ct)
	                    : "-",
	                ct && g_mime_content_type_get_media_subtype(ct)
	                    ? g_mime_content_type_get_media_subtype(ct)
	                    : "-");
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
			shape(g_mime_multipart_get_part(mp, i), depth + 1, b);
	}
}

/* tree - shape of a whole message into b ("" when GMime cannot parse it). */
static void tree(const char *msg, size_t len, struct util_buf *b)
{
	content_gmime_init();
	GMimeStream *st = g_mime_stream_mem_new_with_buffer(msg, len);
	GMimeParser *p = g_mime_parser_new_with_stream(st);
	GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
	if (m) {
		shape(g_mime_message_get_mime_part(m), 0, b);
		g_object_unref(m);
	}
	g_object_unref(p);
	g_object_unref(st);
}

static const struct content_banner_opts opts = {
    .text = "CAUTION: external sender \xc3\xa9.",
    .html = "<b>CAUTION</b> \xe2\x9a\xa0",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	struct util_buf out, again;
	util_buf_init(&out);
	util_buf_init(&again);
	enum content_banner_result r = content_banner_apply((const char *)data, size, &opts, &out);
	FUZZ_CHECK(r >= CONTENT_BANNER_ERROR && r <= CONTENT_BANNER_CHARSET);
	FUZZ_CHECK(r == CONTENT_BANNER_DONE || out.len == 0);
	if (r == CONTENT_BANNER_DONE) {
		FUZZ_CHECK(out.len > 0);
		r = content_banner_apply(out.data, out.len, &opts, &again);
		FUZZ_CHECK(r != CONTENT_BANNER_DONE);
		struct util_buf t1, t2;
		util_buf_init(&t1);
		util_buf_init(&t2);
		tree((const char *)data, size, &t1);
		tree(out.data, out.len, &t2);
		FUZZ_CHECK(t1.len == t2.len && (t1.len == 0 || memcmp(t1.data, t2.data, t1.len) == 0));
		util_buf_free(&t1);
		util_buf_free(&t2);
	}
	util_buf_free(&out);
	util_buf_free(&again);
	return 0;
}
