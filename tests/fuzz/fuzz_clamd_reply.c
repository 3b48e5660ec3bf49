/*
 * fuzz_clamd_reply.c - libFuzzer target: clamd's reply lines
 * (scan_clamd_parse_reply, scan/scan-reply.c).  clamd, or whatever listens
 * on the configured [clamav] socket, controls these bytes.
 *
 * Invariants besides memory safety:
 *  - an accepted reply has a known status and a NUL-terminated name that is
 *    a header-safe token (printable ASCII, no ';', '"', '\\' or space), so it
 *    can go into X-Virus-Scan and the 550 reply as is;
 *  - an infected result always names its signature;
 *  - the X-Virus-Scan field built from it is one line ending in CRLF.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 14)
		return 0;
	char *buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	struct scan_result r;
	unsigned long id;
	int rc = scan_clamd_parse_reply(buf, size, &id, &r);
	FUZZ_CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		FUZZ_CHECK(r.status == SCAN_CLEAN || r.status == SCAN_INFECTED ||
		           r.status == SCAN_FAILED);
		size_t n = strnlen(r.name, sizeof(r.name));
		FUZZ_CHECK(n < sizeof(r.name));
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)r.name[i];
			FUZZ_CHECK(c > 0x20 && c < 0x7f && c != ';' && c != '"' && c != '\\');
		}
		FUZZ_CHECK(r.status != SCAN_INFECTED || n > 0);
		struct util_buf b;
		util_buf_init(&b);
		scan_header(&b, &r, "mx.example.test");
		FUZZ_CHECK(b.len >= 2 && b.data[b.len - 2] == '\r' && b.data[b.len - 1] == '\n');
		FUZZ_CHECK(memchr(b.data, '\n', b.len - 1) == NULL);
		util_buf_free(&b);
	}
	free(buf);
	return 0;
}
