/*
 * fuzz_rspamd_reply.c - libFuzzer target: rspamd's /checkv2 JSON answer
 * (scan_rspamd_parse_reply, scan/scan-rspamd-reply.c) and the X-Spam-*
 * fields built from it (scan_spam_headers).  rspamd, or whatever listens on
 * the configured [rspamd] address, controls these bytes.
 *
 * Invariants besides memory safety:
 *  - result 0 or -1; an accepted answer has a known action, a finite score
 *    and NUL-terminated symbols/message strings that fit their buffers;
 *  - symbols is empty or "NAME(S.SS)" items joined by ',', names made of
 *    header-safe bytes (no space, ';', ',', '(', ')', '"', '\\');
 *  - the message has printable ASCII only;
 *  - the header fields built from it are CRLF lines of at most 78 columns
 *    apart from one symbol longer than that, continuation lines start with
 *    a tab, no bare CR or LF anywhere.
 */
#include <math.h>
#include <stdbool.h>

#include "fuzz-common.h"
#include "scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	struct scan_spam_result r;
	int rc = scan_rspamd_parse_reply(buf, size, &r);
	FUZZ_CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		FUZZ_CHECK(!r.failed);
		FUZZ_CHECK((int)r.action >= SCAN_SPAM_NO_ACTION &&
		           r.action <= SCAN_SPAM_QUARANTINE);
		FUZZ_CHECK(isfinite(r.score) && isfinite(r.required));
		size_t n = strnlen(r.symbols, sizeof(r.symbols));
		FUZZ_CHECK(n < sizeof(r.symbols));
		FUZZ_CHECK(n == 0 || r.symbols[n - 1] == ')');
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)r.symbols[i];
			FUZZ_CHECK(c > 0x20 && c < 0x7f && c != ';' && c != '"' && c != '\\');
		}
		size_t m = strnlen(r.message, sizeof(r.message));
		FUZZ_CHECK(m < sizeof(r.message));
		for (size_t i = 0; i < m; i++)
			FUZZ_CHECK(r.message[i] >= 0x20 && r.message[i] < 0x7f);
		struct config cfg;
		memset(&cfg, 0, sizeof(cfg));
		struct util_buf h;
		util_buf_init(&h);
		scan_spam_headers(&h, &cfg, &r, size & 1);
		FUZZ_CHECK(h.len >= 2 && h.data[h.len - 2] == '\r' && h.data[h.len - 1] == '\n');
		const char *line = h.data;
		while (*line) {
			const char *e = strstr(line, "\r\n");
			FUZZ_CHECK(e != NULL);
			FUZZ_CHECK(memchr(line, '\n', (size_t)(e - line)) == NULL);
			FUZZ_CHECK(memchr(line, '\r', (size_t)(e - line)) == NULL);
			/* longer only when one item cannot be folded */
			FUZZ_CHECK(e - line <= 78 ||
			           memchr(line, ',', (size_t)(e - line)) == NULL ||
			           line[0] == '\t');
			line = e + 2;
		}
		util_buf_free(&h);
	}
	free(buf);
	return 0;
}
