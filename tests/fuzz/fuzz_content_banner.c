/*
 * fuzz_content_banner.c - libFuzzer target: the MIME walk and banner splice
 * of the external-sender warning (content_banner_apply,
 * content/content-banner.c).  The sender controls every byte of the
 * message, including boundaries, encodings and charsets.
 *
 * Invariants besides memory safety:
 *  - the result is one of the known values; out is written only on DONE;
 *  - a rewritten message is never rewritten again (the banner is found).
 */
#include <stdbool.h>

#include "content.h"
#include "fuzz-common.h"

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
	}
	util_buf_free(&out);
	util_buf_free(&again);
	return 0;
}
