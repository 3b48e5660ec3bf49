/*
 * smtp-data.c - the DATA stream parser (RFC 5321 4.1.1.4, 4.5.2, 2.3.8).
 *
 * A byte-at-a-time state machine, so any split of the input across
 * smtp_data_feed() calls gives the same output and the same end point.  Only
 * CRLF "." CRLF ends the data, and only when the "." starts a line that a
 * real CRLF began: every SMTP-smuggling variant (<LF>.<LF>, <CR>.<CR>,
 * <CR><LF>.<LF>, <LF>.<CR><LF>, NUL tricks) is seen as message text, flagged,
 * and never ends the data early.  Data starts at the beginning of a line, so
 * ".\r\n" as the very first line is an empty message.
 *
 * Output rules: a leading "." followed by more text is removed (dot
 * unstuffing, 4.5.2); the CRLF before the final "." belongs to the message;
 * bare LF and bare CR are flagged and emitted as CRLF (the output has CRLF
 * line ends only), but the line after them is not a "beginning of line", so
 * neither end detection nor unstuffing applies there and a dot there is kept;
 * NUL bytes are flagged and dropped; bytes past the size limit are counted
 * as TOO_BIG and not emitted.  Lines longer than RFC 5321's 1000 octets are
 * emitted unchanged (never wrapped: that would break DKIM); only a line over
 * the caller's line_limit is flagged.  Nothing is buffered per line, so a
 * long line costs no memory.
 *
 * Ownership: the parser owns nothing; emitted pieces are borrowed for the
 * duration of the callback.  Diagnostics: the SMTP_DATA_* bits in
 * p->errors, p->eightbit and p->write_error - the caller decides the reply.
 */
#include "smtp-internal.h"

#include <string.h>

enum data_state {
	DATA_BOL = 0, /* at the beginning of a line (after a real CRLF) */
	DATA_DOT,     /* "." at the beginning of a line */
	DATA_DOT_CR,  /* "." CR at the beginning of a line */
	DATA_TEXT,    /* inside a line */
	DATA_CR,      /* CR inside a line, LF not seen yet */
	DATA_DONE,    /* CRLF "." CRLF seen */
};

#define DATA_OUT_SIZE 65536 /* one spool write per read of up to 64 KiB */

/* Output staging for one feed call. */
struct data_out {
	struct smtp_data_parser *p;
	smtp_data_emit_fn emit;
	void *arg;
	size_t n;
	char buf[DATA_OUT_SIZE];
};

/* data_flush - hand the staged bytes to emit; note a write error. */
static void data_flush(struct data_out *o)
{
	if (o->n > 0 && !o->p->write_error && o->emit != NULL) {
		if (o->emit(o->buf, o->n, o->arg) == -1)
			o->p->write_error = true;
	}
	o->n = 0;
}

/* data_put - one message byte: counted against the limit, then staged. */
static void data_put(struct data_out *o, char c)
{
	struct smtp_data_parser *p = o->p;

	if (p->errors & SMTP_DATA_TOO_BIG)
		return;
	if (p->limit > 0 && p->size >= p->limit) {
		p->errors |= SMTP_DATA_TOO_BIG;
		return;
	}
	p->size++;
	if (o->n == sizeof(o->buf))
		data_flush(o);
	o->buf[o->n++] = c;
}

/* data_newline - emit CRLF and start a new line; bol says whether the new
 * line is a real beginning of line (after a real CRLF). */
static void data_newline(struct data_out *o, bool bol)
{
	data_put(o, '\r');
	data_put(o, '\n');
	o->p->line_len = 0;
	o->p->state = bol ? DATA_BOL : DATA_TEXT;
}

/* data_count - one more input byte on the current line.  RFC 5321
 * 4.5.3.1.6 sets 1000 octets with the CRLF as the least a server must take,
 * but real senders (unwrapped HTML) exceed it, and wrapping would break
 * their DKIM signatures: lines are relayed unchanged up to p->line_limit. */
static void data_count(struct smtp_data_parser *p)
{
	p->line_len++;
	if (p->line_limit > 0 && p->line_len > p->line_limit)
		p->errors |= SMTP_DATA_LONG_LINE;
}

/* data_text - one byte inside a line (state DATA_TEXT). */
static void data_text(struct data_out *o, unsigned char c)
{
	struct smtp_data_parser *p = o->p;

	switch (c) {
	case '\r':
		p->state = DATA_CR;
		break;
	case '\n':
		p->errors |= SMTP_DATA_BARE_LF;
		data_newline(o, false);
		break;
	case '\0':
		p->errors |= SMTP_DATA_NUL;
		data_count(p);
		break;
	default:
		if (c >= 0x80)
			p->eightbit = true;
		data_count(p);
		data_put(o, (char)c);
	}
}

/* data_text_run - fast path of data_text for a run of ordinary bytes (not CR,
 * LF or NUL) at b[0..n): the same counting, flags and output as calling
 * data_text on each byte, in bulk.  Returns the run's length (>= 1 when b[0]
 * is ordinary).  Most of a message is such runs, and per-byte calls were the
 * parser's cost (docs/performance.md). */
static size_t data_text_run(struct data_out *o, const unsigned char *b, size_t n)
{
	struct smtp_data_parser *p = o->p;
	size_t k = 0, i = 0;

	while (k < n && b[k] != '\r' && b[k] != '\n' && b[k] != '\0') {
		if (b[k] >= 0x80)
			p->eightbit = true;
		k++;
	}
	p->line_len += k;
	if (p->line_limit > 0 && p->line_len > p->line_limit)
		p->errors |= SMTP_DATA_LONG_LINE;
	while (i < k && !(p->errors & SMTP_DATA_TOO_BIG)) {
		size_t take = k - i;

		if (p->limit > 0 && p->size >= p->limit) {
			p->errors |= SMTP_DATA_TOO_BIG;
			break;
		}
		if (o->n == sizeof(o->buf))
			data_flush(o);
		if (take > sizeof(o->buf) - o->n)
			take = sizeof(o->buf) - o->n;
		if (p->limit > 0 && (int64_t)take > p->limit - p->size)
			take = (size_t)(p->limit - p->size);
		memcpy(o->buf + o->n, b + i, take);
		o->n += take;
		p->size += (int64_t)take;
		i += take;
	}
	return k;
}

/* smtp_data_init - fresh parser at the beginning of the first line. */
void smtp_data_init(struct smtp_data_parser *p, int64_t limit)
{
	memset(p, 0, sizeof(*p));
	p->state = DATA_BOL;
	p->limit = limit;
}

/* smtp_data_feed - run the state machine over buf; stop after the end. */
size_t smtp_data_feed(struct smtp_data_parser *p, const char *buf, size_t n, smtp_data_emit_fn emit,
                      void *arg, bool *done)
{
	struct data_out o;
	size_t i;

	o.p = p;
	o.emit = emit;
	o.arg = arg;
	o.n = 0;
	*done = p->state == DATA_DONE;
	for (i = 0; i < n && p->state != DATA_DONE; i++) {
		unsigned char c = (unsigned char)buf[i];

		switch (p->state) {
		case DATA_BOL:
			if (c == '.') {
				data_count(p);
				p->state = DATA_DOT;
			} else {
				p->state = DATA_TEXT;
				data_text(&o, c);
			}
			break;
		case DATA_DOT:
			if (c == '\r') {
				p->state = DATA_DOT_CR;
			} else if (c == '\n' || c == '\0') {
				/* ".<LF>" / ".<NUL>": not a stuffed line; keep the dot. */
				data_put(&o, '.');
				p->state = DATA_TEXT;
				data_text(&o, c);
			} else {
				p->state = DATA_TEXT; /* unstuffing: the dot is dropped */
				data_text(&o, c);
			}
			break;
		case DATA_DOT_CR:
			if (c == '\n') {
				p->state = DATA_DONE; /* CRLF "." CRLF */
				break;
			}
			/* ".<CR>x": a bare CR; the dot stays, the line is not a BOL. */
			p->errors |= SMTP_DATA_BARE_CR;
			data_put(&o, '.');
			data_newline(&o, false);
			data_text(&o, c);
			break;
		case DATA_TEXT:
			if (c != '\r' && c != '\n' && c != '\0') {
				/* the loop's i++ steps over the run's last byte */
				i += data_text_run(&o, (const unsigned char *)buf + i, n - i) - 1;
				break;
			}
			data_text(&o, c);
			break;
		case DATA_CR:
			if (c == '\n') {
				data_newline(&o, true);
				break;
			}
			p->errors |= SMTP_DATA_BARE_CR;
			data_newline(&o, false);
			data_text(&o, c);
			break;
		default:
			break;
		}
	}
	data_flush(&o);
	if (p->state == DATA_DONE)
		*done = true;
	return i;
}
