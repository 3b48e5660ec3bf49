/*
 * fuzz_failure_report.c - libFuzzer target: the DMARC failure report
 * builder (RFC 9991, reports/reports-failure.c) on a header block the
 * sender controls entirely: the loop check (reports_failure_is_report),
 * the redaction in both modes (reports_failure_redact_headers) and the
 * whole ARF message (reports_failure_compose: subject, feedback fields,
 * header part).
 *
 * Input: the header block, behind a fixed "To: <victim@example.test>"
 * field.  Invariants besides memory safety: the redacted block's length is
 * the one returned and grows at most 8x + 64; the recipient's address, in
 * any case, is nowhere in the redacted block nor in the report (its
 * subject too: found while writing this target; "a@victim@..." and an
 * address in Message-ID: found by it; inside encoded words: seed
 * encoded-words); the message is 7-bit, has its three
 * parts, and ends with the closing delimiter.
 */
#include <strings.h>

#include "fuzz-common.h"
#include "reports-internal.h"
#include "util.h"

static const unsigned char KEY[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
#define VICTIM "victim@example.test"

/* no_victim - VICTIM (any case) is nowhere in s[0..n). */
static void no_victim(const char *s, size_t n)
{
	size_t vl = strlen(VICTIM);
	for (size_t i = 0; i + vl <= n; i++)
		FUZZ_CHECK(strncasecmp(s + i, VICTIM, vl) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	static const char head[] = "To: <" VICTIM ">\r\n";
	size_t hl = sizeof(head) - 1 + size;
	char *hdrs = malloc(hl + 1);
	if (hdrs == NULL)
		return 0;
	memcpy(hdrs, head, sizeof(head) - 1);
	memcpy(hdrs + sizeof(head) - 1, data, size); /* NULs too */
	hdrs[hl] = '\0';
	struct util_strlist rcpts = {0};
	util_strlist_add(&rcpts, "<" VICTIM ">");

	(void)reports_failure_is_report(hdrs, hl);
	for (int all = 0; all < 2; all++) {
		size_t n = 0;
		char *r = reports_failure_redact_headers(hdrs, hl, KEY, all == 1, &rcpts, &n);
		FUZZ_CHECK(r != NULL);
		FUZZ_CHECK(n <= 8 * hl + 64);
		no_victim(r, n);
		free(r);
	}

	struct reports_failure_job j;
	memset(&j, 0, sizeof(j));
	j.header_from = "example.org";
	j.record_domain = "example.org";
	j.mail_from = "sender@example.org";
	snprintf(j.ip, sizeof(j.ip), "192.0.2.1");
	j.ar = " mx.example.test; dmarc=fail header.from=example.org";
	j.hdrs = hdrs;
	j.hlen = hl;
	j.rcpts = rcpts;
	j.delivery = "delivered";
	j.arrival = 1764669600;
	size_t len = 0;
	char *msg = reports_failure_compose(&j, "r@mx.example.test", "ruf@example.org",
	                                    "mx.example.test", KEY, false, &len);
	FUZZ_CHECK(msg != NULL && len == strlen(msg));
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK((unsigned char)msg[i] < 0x80);
	size_t parts = 0;
	for (const char *p = msg; (p = strstr(p, "\r\n--=_mxgate_fr_")) != NULL; p++)
		parts++;
	FUZZ_CHECK(parts >= 4);
	FUZZ_CHECK(len >= 4 && strcmp(msg + len - 4, "--\r\n") == 0);
	no_victim(msg, len); /* the report's subject, fields and header part */
	free(msg);
	util_strlist_free(&rcpts);
	free(hdrs);
	return 0;
}
