/*
 * fuzz_content_attach.c - libFuzzer target: the MIME walk of the attachment
 * policy (content_attach_check, content/content-attach.c): part headers,
 * RFC 2231 / encoded-word file names, transfer encodings and zip central
 * directories, all controlled by the sender.
 *
 * Invariants besides memory safety:
 *  - the result is -1, 0 or 1; a reason exactly when blocked (1) or not
 *    parsable (-1), and it is printable ASCII without '"' or ';' (it goes
 *    into the 550 reply and the X-Mxgate-Attachments header);
 *  - the same bytes give the same answer.
 */
#include <stdbool.h>

#include "content.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	static struct util_strlist ext;
	if (ext.n == 0) {
		util_strlist_add(&ext, "exe");
		util_strlist_add(&ext, "js");
		util_strlist_add(&ext, "bat");
	}
	struct content_attach_opts o = {.extensions = &ext,
	                                .types = CONTENT_TYPE_PE | CONTENT_TYPE_ELF |
	                                         CONTENT_TYPE_SCRIPT,
	                                .zip = true,
	                                .max_zip_entries = 64};
	char why[256], why2[256];
	int rc = content_attach_check((const char *)data, size, &o, why, sizeof(why));
	FUZZ_CHECK(rc >= -1 && rc <= 1);
	FUZZ_CHECK((rc != 0) == (why[0] != 0));
	for (const char *p = why; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p < 0x7f && *p != '"' && *p != ';');
	FUZZ_CHECK(content_attach_check((const char *)data, size, &o, why2, sizeof(why2)) == rc);
	FUZZ_CHECK(strcmp(why, why2) == 0);
	return 0;
}
