/*
 * scan-reply.c - clamd's reply lines (clamd(8), "INSTREAM" and "IDSESSION")
 * and the X-Virus-Scan header built from a scan's outcome.
 *
 * clamd answers a z-command with one NUL-terminated line:
 *   "stream: OK"                          clean
 *   "stream: Eicar-Test-Signature FOUND"  infected
 *   "INSTREAM size limit exceeded. ERROR" (or any "... ERROR")
 * and, inside an IDSESSION, prefixes each with the request number: "3: ".
 * The line comes from another process: it is treated as outside input
 * (length-bounded, the signature name reduced to a safe token; fuzzed by
 * tests/fuzz/fuzz_clamd_reply.c).
 *
 * Ownership: nothing allocated.  Diagnostics: none (the caller logs).
 */
#include <string.h>
#include <strings.h>

#include "scan.h"

/* ends_with - does [p, p+n) end with suffix? */
static bool ends_with(const char *p, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n >= k && memcmp(p + n - k, suffix, k) == 0;
}

/* copy_token - name as a header-safe token: printable ASCII without ';',
 * '"' or '\\' (those become '_'), cut to fit. */
static void copy_token(char *dst, size_t dstlen, const char *p, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < n && j + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)p[i];
		dst[j++] =
		    (c > 0x20 && c < 0x7f && c != ';' && c != '"' && c != '\\') ? (char)c : '_';
	}
	dst[j] = 0;
}

/* scan_clamd_parse_reply - see scan.h. */
int scan_clamd_parse_reply(const char *line, size_t n, unsigned long *id, struct scan_result *r)
{
	size_t i = 0;
	*id = 0;
	memset(r, 0, sizeof(*r));
	if (n > 4096)
		return -1;
	/* optional "N: " request number (IDSESSION) */
	while (i < n && line[i] >= '0' && line[i] <= '9' && i < 10)
		*id = *id * 10 + (unsigned long)(line[i++] - '0');
	if (i > 0) {
		if (i + 1 >= n || line[i] != ':' || line[i + 1] != ' ')
			return -1;
		i += 2;
	}
	const char *p = line + i;
	size_t len = n - i;
	/* trailing newline tolerated (n-commands) */
	while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		len--;
	if (ends_with(p, len, " ERROR")) {
		r->status = SCAN_FAILED;
		strcpy(r->name,
		       memmem(p, len, "size limit", 10) ? "clamd_size_limit" : "clamd_error");
		return 0;
	}
	if (len < 8 || memcmp(p, "stream: ", 8) != 0)
		return -1;
	p += 8;
	len -= 8;
	if (len == 2 && memcmp(p, "OK", 2) == 0) {
		r->status = SCAN_CLEAN;
		return 0;
	}
	if (ends_with(p, len, " FOUND") && len > 6) {
		size_t k = len - 6;
		/* "stream: NAME(HASH:SIZE) FOUND" is possible with ExtendedDetectionInfo */
		r->status = SCAN_INFECTED;
		copy_token(r->name, sizeof(r->name), p, k);
		if (!r->name[0])
			return -1;
		return 0;
	}
	return -1;
}

/* scan_is_our_header - see scan.h.  Every X-Mxgate-* field is ours: a
 * sender's "X-Mxgate-Released: by=postmaster" reached the recipient as if
 * a postmaster had let the message out of quarantine (red team finding). */
bool scan_is_our_header(const struct util_hdr_field *f)
{
	static const char prefix[] = "X-Mxgate-";
	return util_hdr_name_is(f, SCAN_VIRUS_HEADER) ||
	       util_hdr_name_is(f, SCAN_QUARANTINE_HEADER) ||
	       (f->name_len >= sizeof(prefix) - 1 &&
	        strncasecmp(f->name, prefix, sizeof(prefix) - 1) == 0);
}

/* scan_header - see scan.h. */
void scan_header(struct util_buf *b, const struct scan_result *r, const char *host)
{
	switch (r->status) {
	case SCAN_CLEAN:
		util_buf_printf(b, SCAN_VIRUS_HEADER ": clean; scanner=clamav; by=%s\r\n", host);
		break;
	case SCAN_INFECTED:
		util_buf_printf(b,
		                SCAN_VIRUS_HEADER ": infected; virus=%s; scanner=clamav; by=%s\r\n",
		                r->name, host);
		break;
	case SCAN_FAILED:
		util_buf_printf(
		    b, SCAN_VIRUS_HEADER ": unscanned; reason=%s; scanner=clamav; by=%s\r\n",
		    r->name, host);
		break;
	}
}
