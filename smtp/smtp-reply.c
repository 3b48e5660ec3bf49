/*
 * smtp-reply.c - parse one SMTP reply from a downstream server, single- or
 * multi-line (RFC 5321 4.2, 4.2.1):
 *
 *     Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                     Reply-code [ SP textstring ] CRLF
 *
 * The parser is stateless: it is called with everything buffered so far
 * and answers "complete, n bytes", "need more" or "malformed".  Its cost is
 * bounded by the limits below (at most 1000 lines of at most 4096 bytes).
 *
 * Refused: a code that is not three digits 2xx..5xx, a code that changes
 * between lines, anything but '-', SP or CRLF after the code, a bare CR or
 * LF or a NUL in a line, a line over 4096 bytes (including CRLF), more than
 * 1000 lines.  Only CRLF ends a line (RFC 5321 2.3.8).
 *
 * Ownership: nothing is allocated; the text is copied (truncated) into the
 * caller's struct.  Diagnostics: -1 only; the caller logs the peer's bytes.
 */
#include "smtp-internal.h"

#include <string.h>

#define REPLY_MAX_LINE  4096
#define REPLY_MAX_LINES 1000

/* reply_append - add a line's text to out->text, "\n"-separated, truncating. */
static void reply_append(struct smtp_reply *out, size_t *tlen, const char *p, size_t n)
{
	size_t room;

	if (out->nlines > 0 && *tlen < sizeof(out->text) - 1)
		out->text[(*tlen)++] = '\n';
	room = sizeof(out->text) - 1 - *tlen;
	if (n > room)
		n = room;
	memcpy(out->text + *tlen, p, n);
	*tlen += n;
	out->text[*tlen] = '\0';
}

/* smtp_reply_parse - one complete reply: bytes used; 0 need more; -1 bad. */
int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *out)
{
	size_t pos = 0;
	size_t tlen = 0;

	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t i;
		size_t eol;
		int code;
		char sep;

		/* Find this line's CRLF, checking every byte on the way. */
		for (i = pos; i < len; i++) {
			if (i - pos + 2 > REPLY_MAX_LINE)
				goto bad;
			if (buf[i] == '\r' || buf[i] == '\n' || buf[i] == '\0')
				break;
		}
		/* Check the code as soon as its bytes are there. */
		for (size_t k = 0; k < 3 && pos + k < i; k++) {
			char d = buf[pos + k];

			if (d < (k == 0 ? '2' : '0') || d > (k == 0 ? '5' : '9'))
				goto bad;
		}
		if (i - pos > 3 && buf[pos + 3] != '-' && buf[pos + 3] != ' ')
			goto bad;
		if (i == len)
			return 0;
		if (buf[i] != '\r')
			goto bad; /* bare LF or NUL */
		if (i + 1 == len)
			return 0;
		if (buf[i + 1] != '\n')
			goto bad; /* bare CR */
		eol = i;
		if (eol - pos < 3)
			goto bad; /* "25\r\n" */
		code = (buf[pos] - '0') * 100 + (buf[pos + 1] - '0') * 10 + (buf[pos + 2] - '0');
		if (out->nlines > 0 && code != out->code)
			goto bad;
		out->code = code;
		if (eol - pos == 3) {
			sep = ' '; /* "250" CRLF: a last line without text */
			reply_append(out, &tlen, buf + eol, 0);
		} else {
			sep = buf[pos + 3];
			reply_append(out, &tlen, buf + pos + 4, eol - pos - 4);
		}
		out->nlines++;
		pos = eol + 2;
		if (sep == ' ')
			return (int)pos;
		if (out->nlines >= REPLY_MAX_LINES)
			goto bad;
	}
bad:
	memset(out, 0, sizeof(*out));
	return -1;
}
