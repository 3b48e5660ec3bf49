/*
 * util-logjson.c - structured log lines: the key=value tokenizer of a log
 * message, the JSON object `[log] format = json` writes for it, and a flat
 * JSON reader for those objects (`mxgate log`).
 *
 * Log messages are "id key=value key=value ..." text (STYLE rule 8).  A
 * value is one of
 *   word            up to the next blank
 *   "text"          up to a '"' followed by a blank or the end (the text
 *                   itself may hold quotes: replies are logged unescaped)
 *   (text)          the rest of the line when it ends with ')' and is
 *                   balanced as a whole (replies are logged last and may
 *                   hold ") key=("); else up to the ')' that balances the
 *                   '(' and is followed by a blank; else the first
 *                   balancing ')'
 *   <a>[,<b>...]    addresses: up to a '>' followed by a blank or the end,
 *                   skipping quoted local parts ("a> x=y"@b is one address)
 * A blank is a space only (a tab may come from outside, e.g. in a HELO).
 * A token without "key=" is a bare word: the queue id a line starts with, a
 * session's event words ("connect", "queued"), a "(detail)".
 *
 * The JSON object: ts, level, pid, then session (from s=), queue_id (the
 * leading queue id, or id=), event (the bare words before the first
 * key=value), then every key=value in order (quotes, parentheses and angle
 * brackets removed; <a>,<b> becomes an array), detail (a bare "(text)"),
 * text (other bare words).  Counters (size=, errors=, ...) are numbers when
 * they look like one, everything else is a string.  A repeated key gets a
 * suffix (_2, _3).  The object is always complete: fields that do not fit
 * are dropped and "truncated":true is added.
 *
 * Ownership: callers pass their buffers; nothing is allocated except by
 * util_json_flat_parse, which frees what it allocates before returning.
 * Diagnostics: none; a malformed message still gives a valid object.
 */
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define LJ_MAX_FIELDS 64
#define LJ_TAIL 24 /* room kept for ,"truncated":true} */
#define LJ_NAME_MAX 64 /* a longer "key=" is a word */

/* ---------------------------------------------------------------- tokens */

/* only a space separates: a tab may come from outside (a HELO argument)
 * and the text log writes it as is */
static bool lj_blank(char c)
{
	return c == ' ';
}

/* lj_skip_quoted - at s[i] inside <...>: the index after a quoted string
 * starting at i (RFC 5321 Quoted-string, backslash pairs), or i when s[i]
 * is no quote; len when the quote is not closed.  A quoted local part may
 * hold '>', ',', '<', blanks and "key=" text. */
static size_t lj_skip_quoted(const char *s, size_t len, size_t i)
{
	if (s[i] != '"')
		return i;
	for (i++; i < len && s[i] != '"'; i++)
		if (s[i] == '\\' && i + 1 < len)
			i++;
	return i < len ? i + 1 : len;
}

static bool lj_keystart(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool lj_keychar(char c)
{
	return lj_keystart(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* lj_key_follows - at p: the end, or blanks then "key=" (so a quote
 * before p closes a value even when the value itself holds '" '). */
static bool lj_key_follows(const char *s, size_t len, size_t p)
{
	while (p < len && lj_blank(s[p]))
		p++;
	if (p == len)
		return true;
	if (!lj_keystart(s[p]))
		return false;
	while (p < len && lj_keychar(s[p]))
		p++;
	return p < len && s[p] == '=';
}

/* lj_value - scan one value at p; sets kv->val/vallen/quote, returns the
 * position after it. */
static size_t lj_value(const char *s, size_t len, size_t p, struct util_logkv *kv)
{
	size_t i;

	kv->quote = 0;
	if (p < len && s[p] == '"') {
		size_t first = 0;

		kv->quote = '"';
		for (i = p + 1; i < len; i++)
			if (s[i] == '"' && (i + 1 == len || lj_blank(s[i + 1]))) {
				if (first == 0)
					first = i;
				if (lj_key_follows(s, len, i + 1))
					break;
			}
		if (i == len)
			i = first != 0 ? first : len;
		kv->val = s + p + 1;
		kv->vallen = i - p - 1;
		return i < len ? i + 1 : len;
	}
	if (p < len && s[p] == '(') {
		size_t first = 0;
		long depth = 0;

		kv->quote = '(';
		/* "(reply)" ending the line, balanced as a whole: all of it, so
		 * a downstream reply "ok) dsn_id=X (y" forges no key */
		if (s[len - 1] == ')') {
			for (i = p; i < len; i++)
				depth += s[i] == '(' ? 1 : s[i] == ')' ? -1 : 0;
			if (depth == 0) {
				kv->val = s + p + 1;
				kv->vallen = len - p - 2;
				return len;
			}
			depth = 0;
		}
		for (i = p; i < len; i++) {
			if (s[i] == '(')
				depth++;
			else if (s[i] == ')') {
				depth--;
				if (depth == 0 && first == 0)
					first = i;
				if (depth <= 0 && (i + 1 == len || lj_blank(s[i + 1])))
					break;
			}
		}
		if (i == len && first != 0)
			i = first;
		kv->val = s + p + 1;
		kv->vallen = (i < len ? i : len) - p - 1;
		return i < len ? i + 1 : len;
	}
	if (p < len && s[p] == '<') {
		kv->quote = '<';
		for (i = p + 1; i < len; i++) {
			size_t q = lj_skip_quoted(s, len, i);

			if (q != i) {
				i = q - 1;
				continue;
			}
			if (s[i] == '>' && (i + 1 == len || lj_blank(s[i + 1])))
				break;
		}
		if (i >= len) /* no closing '>': a word */
			for (i = p; i < len && !lj_blank(s[i]); i++)
				;
		else
			i++;
		kv->val = s + p;
		kv->vallen = i - p;
		return i;
	}
	for (i = p; i < len && !lj_blank(s[i]); i++)
		;
	kv->val = s + p;
	kv->vallen = i - p;
	return i;
}

/* util_logkv_next - the next token of msg[0..len) at *pos; false at the end. */
bool util_logkv_next(const char *msg, size_t len, size_t *pos, struct util_logkv *kv)
{
	size_t p = *pos, k;

	while (p < len && lj_blank(msg[p]))
		p++;
	if (p >= len) {
		*pos = len;
		return false;
	}
	kv->key = NULL;
	kv->keylen = 0;
	if (lj_keystart(msg[p])) {
		for (k = p; k < len && lj_keychar(msg[k]); k++)
			;
		if (k < len && msg[k] == '=' && k - p <= LJ_NAME_MAX) {
			kv->key = msg + p;
			kv->keylen = k - p;
			p = k + 1;
		}
	}
	*pos = lj_value(msg, len, p, kv);
	return true;
}

/* ---------------------------------------------------------------- writer */

struct lj_out {
	char names[LJ_MAX_FIELDS + 8][LJ_NAME_MAX + 32]; /* member names written */
	size_t nnames;
	char *buf;
	size_t cap;   /* bytes in buf, the NUL included */
	size_t len;
	size_t limit; /* fields stop here */
	bool full;
};

static void lj_put(struct lj_out *o, char c)
{
	if (o->len + 1 < o->limit)
		o->buf[o->len++] = c;
	else
		o->full = true;
}

static void lj_puts(struct lj_out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		lj_put(o, s[i]);
}

/* lj_utf8_len - length of the valid UTF-8 sequence at s (at most n bytes;
 * RFC 3629 4: no overlongs, no surrogates, nothing above U+10FFFF), 0 when
 * invalid. */
static size_t lj_utf8_len(const unsigned char *s, size_t n)
{
	size_t need;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		need = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		need = 4;
	else
		return 0;
	if (n < need)
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need;
}

/* util_json_escape - s[0..n) as the body of a JSON string (RFC 8259 7):
 * '"' '\\' and controls escaped, invalid UTF-8 as U+FFFD.  Appends to out
 * (cap bytes) at *len, never past cap - 1 and never half an escape; returns
 * false when it had to stop. */
bool util_json_escape(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	char tmp[8];
	size_t i, t;

	for (i = 0; i < n; i++) {
		t = 0;
		switch (u[i]) {
		case '"': tmp[t++] = '\\'; tmp[t++] = '"'; break;
		case '\\': tmp[t++] = '\\'; tmp[t++] = '\\'; break;
		case '\n': tmp[t++] = '\\'; tmp[t++] = 'n'; break;
		case '\r': tmp[t++] = '\\'; tmp[t++] = 'r'; break;
		case '\t': tmp[t++] = '\\'; tmp[t++] = 't'; break;
		default:
			if (u[i] >= 0x80) {
				size_t k = lj_utf8_len(u + i, n - i);
				if (k == 0) {
					memcpy(tmp, "\\ufffd", 6);
					t = 6;
				} else {
					memcpy(tmp, u + i, k);
					t = k;
					i += k - 1;
				}
			} else if (u[i] < 0x20 || u[i] == 0x7f) {
				memcpy(tmp, "\\u00", 4);
				tmp[4] = hex[u[i] >> 4];
				tmp[5] = hex[u[i] & 0xf];
				t = 6;
			} else {
				tmp[t++] = (char)u[i];
			}
		}
		if (*len + t + 1 > cap)
			return false;
		memcpy(out + *len, tmp, t);
		*len += t;
	}
	return true;
}

static void lj_str(struct lj_out *o, const char *s, size_t n)
{
	size_t len;

	lj_put(o, '"');
	if (o->full)
		return;
	len = o->len;
	if (!util_json_escape(o->buf, o->limit, &len, s, n)) {
		o->full = true;
		return;
	}
	o->len = len;
	lj_put(o, '"');
}

/* the counters logged as numbers */
static const char *const lj_numeric[] = {
	"size", "errors", "peer_port", "waiters", "running", "limit", "attempts", "messages",
	"read_errors", "after_read_errors", "unlinked", "in_flight", "max_deliveries",
	"discarded", "delay", "recipients", "count", "rcpts", "jobs", "sessions", NULL,
};

static bool lj_is_numeric_key(const char *k, size_t n)
{
	for (size_t i = 0; lj_numeric[i] != NULL; i++)
		if (strlen(lj_numeric[i]) == n && memcmp(lj_numeric[i], k, n) == 0)
			return true;
	return false;
}

/* lj_is_number - RFC 8259 6 subset: -?(0|[1-9][0-9]*)(\.[0-9]+)?, short. */
static bool lj_is_number(const char *s, size_t n)
{
	size_t i = 0;

	if (n == 0 || n > 20)
		return false;
	if (s[i] == '-')
		i++;
	if (i == n || s[i] < '0' || s[i] > '9')
		return false;
	if (s[i] == '0' && i + 1 < n && s[i + 1] != '.')
		return false;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i < n && s[i] == '.') {
		if (++i == n)
			return false;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	return i == n;
}

static bool lj_is_qid(const char *s, size_t n)
{
	if (n != UTIL_QID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

struct lj_field {
	const char *name;
	size_t namelen;
	bool prefixed; /* written as "msg_" + name */
	struct util_logkv kv;
};

/* lj_value_out - a value: number, address (list) or string. */
static void lj_value_out(struct lj_out *o, const struct lj_field *f)
{
	const char *v = f->kv.val;
	size_t n = f->kv.vallen;

	if (!f->prefixed && lj_is_numeric_key(f->name, f->namelen) && lj_is_number(v, n)) {
		lj_puts(o, v, n);
		return;
	}
	if (f->kv.quote == '<' && n >= 2 && v[n - 1] == '>') {
		/* <a> or <a>,<b>,... */
		size_t items = 1, i, start, q;

		/* ">,<" inside a quoted local part separates nothing */
		for (i = 0; i + 2 < n; i++) {
			if ((q = lj_skip_quoted(v, n, i)) != i) {
				i = q - 1;
				continue;
			}
			if (v[i] == '>' && v[i + 1] == ',' && v[i + 2] == '<')
				items++;
		}
		if (items > 1)
			lj_put(o, '[');
		for (i = 0, start = 1; i < n; i++) {
			if (i != n - 1 && (q = lj_skip_quoted(v, n, i)) != i) {
				i = q - 1;
				if (i >= n - 1)
					i = n - 2;
				continue;
			}
			if (i == n - 1 || (v[i] == '>' && i + 2 < n && v[i + 1] == ',' && v[i + 2] == '<')) {
				if (start > 1)
					lj_put(o, ',');
				lj_str(o, v + start, i - start);
				start = i + 3;
				i += 2;
			}
		}
		if (items > 1)
			lj_put(o, ']');
		return;
	}
	lj_str(o, v, n);
}

/* names of the object's own members: a message key spelled like one is
 * written as "msg_KEY" */
static bool lj_reserved(const char *k, size_t n)
{
	static const char *const names[] = {"ts", "level", "pid", "event", "text", "detail",
	                                    "truncated", NULL};
	for (size_t i = 0; names[i] != NULL; i++)
		if (strlen(names[i]) == n && memcmp(names[i], k, n) == 0)
			return true;
	return false;
}

static bool lj_name_eq(const struct lj_field *f, const char *s)
{
	return !f->prefixed && strlen(s) == f->namelen && memcmp(f->name, s, f->namelen) == 0;
}

/* lj_field_out - ,"name":value; a name already written gets the first free
 * suffix _2, _3, ... (checked against every name written, so a message key
 * "to_2" cannot collide with the second "to").  Rolled back whole when it
 * does not fit. */
static void lj_field_out(struct lj_out *o, const struct lj_field *f)
{
	size_t mark = o->len, base, rep = 1, i;
	char name[LJ_NAME_MAX + 32];

	if (o->nnames == LJ_MAX_FIELDS + 8)
		o->full = true;
	if (o->full)
		return;
	base = (size_t)snprintf(name, LJ_NAME_MAX + 8, "%s%.*s", f->prefixed ? "msg_" : "",
	                        (int)f->namelen, f->name);
	for (i = 0; i < o->nnames;) {
		if (strcmp(o->names[i], name) == 0) {
			snprintf(name + base, sizeof(name) - base, "_%zu", ++rep);
			i = 0;
			continue;
		}
		i++;
	}
	lj_put(o, ',');
	lj_str(o, name, strlen(name));
	lj_put(o, ':');
	lj_value_out(o, f);
	if (o->full) {
		o->len = mark;
		return;
	}
	memcpy(o->names[o->nnames++], name, strlen(name) + 1);
}

/* util_log_json_line - the JSON object for one log message (module
 * comment), NUL-terminated in out; returns its length (< cap).  cap must be
 * at least 128. */
size_t util_log_json_line(char *out, size_t cap, const char *ts, const char *level, long pid,
                          const char *msg)
{
	static _Thread_local struct lj_out o;
	struct lj_field fs[LJ_MAX_FIELDS];
	struct util_logkv kv;
	size_t nf = 0, pos = 0, len = strlen(msg);
	const char *ev = NULL, *ev_end = NULL;
	char text[1024];
	size_t textlen = 0;
	bool seen_kv = false, truncated = false;
	char num[32];

	o.nnames = 3;
	memcpy(o.names[0], "ts", 3);
	memcpy(o.names[1], "level", 6);
	memcpy(o.names[2], "pid", 4);
	o.buf = out;
	o.cap = cap;
	o.len = 0;
	o.limit = cap - LJ_TAIL;
	o.full = false;
	while (util_logkv_next(msg, len, &pos, &kv)) {
		struct lj_field f = {.kv = kv};

		if (kv.keylen == 0) {
			if (!seen_kv && kv.quote == 0 && nf == 0 && ev == NULL && kv.vallen == 1 &&
			    kv.val[0] == '-')
				continue; /* "- listening on ...": no session */
			if (!seen_kv && kv.quote == 0 && ev == NULL && lj_is_qid(kv.val, kv.vallen)) {
				f.name = "queue_id";
			} else if (kv.quote == '(') {
				f.name = "detail";
			} else if (!seen_kv) {
				/* the word as written: with its quotes (when closed) */
				const char *w = kv.quote == '"' ? kv.val - 1 : kv.val;
				size_t wl = (size_t)(msg + pos - w);

				if (ev == NULL)
					ev = w;
				ev_end = w + wl;
				continue;
			} else {
				const char *w = kv.quote == '"' ? kv.val - 1 : kv.val;
				size_t wl = (size_t)(msg + pos - w);

				if (textlen + wl + 2 >= sizeof(text)) {
					truncated = true;
					continue;
				}
				if (textlen > 0)
					text[textlen++] = ' ';
				memcpy(text + textlen, w, wl);
				textlen += wl;
				continue;
			}
		} else {
			seen_kv = seen_kv || !(kv.keylen == 1 && kv.key[0] == 's');
			f.name = kv.key;
			f.namelen = kv.keylen;
			if (lj_reserved(kv.key, kv.keylen)) {
				f.prefixed = true;
			} else if (kv.keylen == 1 && kv.key[0] == 's')
				f.name = "session";
			else if (kv.keylen == 2 && memcmp(kv.key, "id", 2) == 0) {
				if (kv.vallen == 1 && kv.val[0] == '-')
					continue;
				f.name = "queue_id";
			}
		}
		if (f.name != kv.key)
			f.namelen = strlen(f.name);
		if (nf == LJ_MAX_FIELDS) {
			truncated = true;
			break;
		}
		fs[nf++] = f;
	}

	lj_puts(&o, "{\"ts\":", 6);
	lj_str(&o, ts, strlen(ts));
	lj_puts(&o, ",\"level\":", 9);
	lj_str(&o, level, strlen(level));
	snprintf(num, sizeof(num), ",\"pid\":%ld", pid);
	lj_puts(&o, num, strlen(num));
	/* session and queue id first, then the event, then the rest in order */
	for (size_t k = 0; k < nf; k++)
		if (lj_name_eq(&fs[k], "session"))
			lj_field_out(&o, &fs[k]);
	for (size_t k = 0; k < nf; k++)
		if (lj_name_eq(&fs[k], "queue_id"))
			lj_field_out(&o, &fs[k]);
	if (ev != NULL) {
		struct lj_field e = {.name = "event", .namelen = 5};
		e.kv.val = ev;
		e.kv.vallen = (size_t)(ev_end - ev);
		lj_field_out(&o, &e);
	} else {
		/* "QUEUEID ... status=sent": the status is the event */
		for (size_t k = 0; k < nf; k++)
			if (lj_name_eq(&fs[k], "status")) {
				struct lj_field e = {.name = "event", .namelen = 5, .kv = fs[k].kv};
				lj_field_out(&o, &e);
				break;
			}
	}
	for (size_t k = 0; k < nf; k++)
		if (!lj_name_eq(&fs[k], "session") && !lj_name_eq(&fs[k], "queue_id"))
			lj_field_out(&o, &fs[k]);
	if (textlen > 0) {
		struct lj_field t = {.name = "text", .namelen = 4};
		t.kv.val = text;
		t.kv.vallen = textlen;
		lj_field_out(&o, &t);
	}
	if (o.full || truncated) {
		o.limit = cap; /* the tail was kept for this */
		lj_puts(&o, ",\"truncated\":true", 17);
	}
	o.limit = cap;
	lj_put(&o, '}');
	out[o.len] = '\0';
	return o.len;
}

/* ---------------------------------------------------------------- reader */

struct lj_in {
	const char *s;
	size_t len, pos;
};

static void lj_ws(struct lj_in *in)
{
	while (in->pos < in->len && strchr(" \t\r\n", in->s[in->pos]) != NULL && in->s[in->pos])
		in->pos++;
}

static int lj_hex4(const char *s, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

/* lj_string - a JSON string at in->pos into b (decoded, NUL-terminated). */
static int lj_string(struct lj_in *in, struct util_buf *b)
{
	util_buf_reset(b);
	if (in->pos >= in->len || in->s[in->pos] != '"')
		return -1;
	in->pos++;
	while (in->pos < in->len) {
		unsigned char c = (unsigned char)in->s[in->pos++];
		if (c == '"') {
			util_buf_add(b, "", 0); /* data non-NULL, NUL-terminated */
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c != '\\') {
			util_buf_add(b, &c, 1);
			continue;
		}
		if (in->pos >= in->len)
			return -1;
		c = (unsigned char)in->s[in->pos++];
		if (c != 'u') {
			char e;
			switch (c) {
			case '"': case '\\': case '/': e = (char)c; break;
			case 'b': e = '\b'; break;
			case 'f': e = '\f'; break;
			case 'n': e = '\n'; break;
			case 'r': e = '\r'; break;
			case 't': e = '\t'; break;
			default: return -1;
			}
			util_buf_add(b, &e, 1);
			continue;
		}
		unsigned v;
		char u8[4];
		size_t n;
		if (in->pos + 4 > in->len || lj_hex4(in->s + in->pos, &v) < 0)
			return -1;
		in->pos += 4;
		if (v >= 0xd800 && v <= 0xdfff)
			v = 0xfffd; /* surrogates: the writer never makes them */
		if (v < 0x80) {
			u8[0] = (char)v;
			n = 1;
		} else if (v < 0x800) {
			u8[0] = (char)(0xc0 | (v >> 6));
			u8[1] = (char)(0x80 | (v & 0x3f));
			n = 2;
		} else {
			u8[0] = (char)(0xe0 | (v >> 12));
			u8[1] = (char)(0x80 | ((v >> 6) & 0x3f));
			u8[2] = (char)(0x80 | (v & 0x3f));
			n = 3;
		}
		util_buf_add(b, u8, n);
	}
	return -1;
}

/* lj_scalar - a number, true, false or null as its text into b. */
static int lj_scalar(struct lj_in *in, struct util_buf *b)
{
	size_t p = in->pos;

	while (p < in->len && strchr(",]} \t\r\n", in->s[p]) == NULL)
		p++;
	if (p == in->pos)
		return -1;
	util_buf_reset(b);
	util_buf_add(b, in->s + in->pos, p - in->pos);
	if (!(lj_is_number(b->data, b->len) || strcmp(b->data, "true") == 0 ||
	      strcmp(b->data, "false") == 0 || strcmp(b->data, "null") == 0))
		return -1;
	in->pos = p;
	return 0;
}

/* util_json_flat_parse - one flat JSON object (string, number, true, false
 * or null members, or arrays of those) as written by util_log_json_line;
 * cb is called per member (per element for arrays) with decoded text.
 * Returns 0, or -1 when the text is not such an object. */
int util_json_flat_parse(const char *s, size_t len,
                         void (*cb)(void *ctx, const char *key, const char *val), void *ctx)
{
	struct lj_in in = {.s = s, .len = len, .pos = 0};
	struct util_buf key, val;
	int rc = -1;

	util_buf_init(&key);
	util_buf_init(&val);
	lj_ws(&in);
	if (in.pos >= in.len || s[in.pos++] != '{')
		goto out;
	lj_ws(&in);
	if (in.pos < in.len && s[in.pos] == '}') {
		in.pos++;
		goto end;
	}
	for (;;) {
		lj_ws(&in);
		if (lj_string(&in, &key) < 0)
			goto out;
		lj_ws(&in);
		if (in.pos >= in.len || s[in.pos++] != ':')
			goto out;
		lj_ws(&in);
		if (in.pos < in.len && s[in.pos] == '[') {
			in.pos++;
			lj_ws(&in);
			if (in.pos < in.len && s[in.pos] == ']') {
				in.pos++;
			} else {
				for (;;) {
					lj_ws(&in);
					if ((in.pos < in.len && s[in.pos] == '"' ? lj_string(&in, &val)
					                                         : lj_scalar(&in, &val)) < 0)
						goto out;
					if (cb != NULL)
						cb(ctx, key.data, val.data);
					lj_ws(&in);
					if (in.pos < in.len && s[in.pos] == ',') {
						in.pos++;
						continue;
					}
					if (in.pos < in.len && s[in.pos] == ']') {
						in.pos++;
						break;
					}
					goto out;
				}
			}
		} else {
			if ((in.pos < in.len && s[in.pos] == '"' ? lj_string(&in, &val)
			                                         : lj_scalar(&in, &val)) < 0)
				goto out;
			if (cb != NULL)
				cb(ctx, key.data, val.data);
		}
		lj_ws(&in);
		if (in.pos < in.len && s[in.pos] == ',') {
			in.pos++;
			continue;
		}
		if (in.pos < in.len && s[in.pos] == '}') {
			in.pos++;
			break;
		}
		goto out;
	}
end:
	lj_ws(&in);
	rc = in.pos == in.len ? 0 : -1;
out:
	util_buf_free(&key);
	util_buf_free(&val);
	return rc;
}
