/*
 * smtp-hdrsplit.c - the header/body split of a message as the DATA parser
 * emits it: the header block is kept in memory (up to a limit) until its end
 * is known, then handed over field by field - so the session can feed the
 * DKIM verifier and drop forged Authentication-Results / spam headers - and
 * everything after it streams through as body, never buffered.
 *
 * Rules (RFC 5322 2.1, 2.2.3):
 *  - the block ends at the first empty line, or at the first line that is
 *    neither a field ("name:" with an ftext name; white space before the
 *    colon counts, RFC 5322 4.5.8, as it does for util_hdr_next) nor a
 *    continuation (starting with SP/HTAB, not as the first line);
 *  - a kept field's bytes go out unchanged; consecutive kept fields go out
 *    as one run (one write(2) per block, not per field);
 *  - exactly one empty line separates header and body in the output, even
 *    when the client sent none (as Postfix's cleanup does), so a downstream
 *    never reads a body line as a header;
 *  - a block that has not ended within the limit (max_header_size, counting
 *    the line that ends it) sets `overflow` and the rest of the message is
 *    swallowed (the session refuses it); how the bytes were cut into pieces
 *    does not matter.
 * The output never depends on how the input was cut into pieces;
 * tests/fuzz/fuzz_hdrsplit.c checks that and that every input byte is
 * accounted for (kept, dropped, separator or body).
 *
 * Ownership: the splitter owns its buffer (smtp_hdrsplit_free); field
 * pointers passed to ops->field live until the call returns.
 */
#include <string.h>

#include "smtp-internal.h"

/* smtp_hdrsplit_init - start of a message. */
void smtp_hdrsplit_init(struct smtp_hdrsplit *h, size_t max, const struct smtp_hdrsplit_ops *ops,
			void *arg)
{
	memset(h, 0, sizeof(*h));
	util_buf_init(&h->hdr);
	h->max = max;
	h->ops = ops;
	h->arg = arg;
}

/* smtp_hdrsplit_free - release the buffer; h may be fed no more. */
void smtp_hdrsplit_free(struct smtp_hdrsplit *h)
{
	util_buf_free(&h->hdr);
}

/* is_field_start - "name:" with an RFC 5322 ftext name, white space allowed
 * before the colon. */
static bool is_field_start(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != ':' && p[i] != ' ' && p[i] != '\t') {
		unsigned char c = (unsigned char)p[i];
		if (c < 33 || c > 126)
			return false;
		i++;
	}
	if (i == 0)
		return false;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < n && p[i] == ':';
}

/* finish - the header block is hdr[0..end): hand over the fields, write the
 * kept ones and the separator, then the rest of the buffer as body. */
static void finish(struct smtp_hdrsplit *h, size_t end)
{
	const struct smtp_hdrsplit_ops *ops = h->ops;
	struct util_hdr_field f;
	size_t pos = 0;
	size_t run = 0, run_len = 0;

	while (pos < end) {
		size_t at = pos;
		if (util_hdr_next(h->hdr.data, end, &pos, &f) != 1) {
			/* A line the field parser refuses (the DATA parser's output
			 * never has one: bare CR/LF and NUL are gone by then) is
			 * no header: the body starts there, nothing is lost. */
			end = at;
			break;
		}
		if (ops->field(h->arg, &f))
			continue; /* dropped */
		size_t off = (size_t)(f.raw - h->hdr.data);
		if (run_len > 0 && off != run + run_len) {
			ops->head(h->arg, h->hdr.data + run, run_len);
			run_len = 0;
		}
		if (run_len == 0)
			run = off;
		run_len += f.raw_len;
	}
	ops->eoh(h->arg);
	h->in_body = true;
	size_t rest = h->hdr.len - end;
	const char *p = h->hdr.data + end;
	bool crlf = rest >= 2 && p[0] == '\r' && p[1] == '\n';
	if (crlf) {
		p += 2;
		rest -= 2;
	}
	if (rest > 0 || crlf) {
		if (crlf && run_len > 0 && run + run_len == end) {
			run_len += 2; /* the client's empty line ends the run */
		} else {
			if (run_len > 0)
				ops->head(h->arg, h->hdr.data + run, run_len);
			run_len = 0;
			ops->head(h->arg, "\r\n", 2);
		}
	}
	if (run_len > 0)
		ops->head(h->arg, h->hdr.data + run, run_len);
	if (rest > 0)
		ops->body(h->arg, p, rest);
	util_buf_free(&h->hdr);
}

/* scan - look for the end of the header block in what arrived. */
static void scan(struct smtp_hdrsplit *h)
{
	for (;;) {
		const char *line = h->hdr.data + h->scan;
		size_t avail = h->hdr.len - h->scan;
		const char *lf = memchr(line, '\n', avail);
		if (!lf)
			return;
		size_t n = (size_t)(lf - line) + 1;
		bool blank = n == 2 && line[0] == '\r';
		bool cont = (line[0] == ' ' || line[0] == '\t') && h->scan > 0;
		if (blank || (!cont && !is_field_start(line, n))) {
			finish(h, h->scan);
			return;
		}
		h->scan += n;
	}
}

/* smtp_hdrsplit_feed - the next bytes of the message.  Only what fits the
 * limit is buffered: when the block ends inside it, the rest of the piece
 * is body - so the limit applies to the header block (and the line that
 * ends it), never to the size of the piece the bytes arrived in. */
void smtp_hdrsplit_feed(struct smtp_hdrsplit *h, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (h->in_body) {
		h->ops->body(h->arg, p, n);
		return;
	}
	if (h->overflow)
		return;
	size_t room = h->max > h->hdr.len ? h->max - h->hdr.len : 0;
	size_t take = n < room ? n : room;
	if (take > 0) {
		util_buf_add(&h->hdr, p, take);
		scan(h);
	}
	if (h->in_body) {
		if (take < n)
			h->ops->body(h->arg, p + take, n - take);
		return;
	}
	if (take < n) {
		h->overflow = true;
		util_buf_free(&h->hdr);
	}
}

/* smtp_hdrsplit_end - end of data: a message that is all header block (no
 * empty line, no body) is finished now. */
void smtp_hdrsplit_end(struct smtp_hdrsplit *h)
{
	if (!h->in_body && !h->overflow)
		finish(h, h->hdr.len);
}
