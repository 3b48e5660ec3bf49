/*
 * content-banner.c - the external-sender warning banner (issue 13).
 *
 * GMime parses the message with a persistent stream, so every leaf part
 * knows the byte range of its encoded content in the original message.
 * The banner is spliced in there: at the start of a text/plain part, after
 * the <body> tag of a text/html part (or at its start).  The part keeps its
 * Content-Transfer-Encoding and charset: identity encodings get the bytes,
 * quoted-printable text/plain parts get the banner quoted-printable
 * encoded, base64 parts and quoted-printable HTML parts are decoded, edited
 * and re-encoded (the <body> tag is looked for in the decoded HTML).  Nothing
 * outside the edited parts changes, byte for byte.
 *
 * Which parts: the first body part of the message, recursing into the first
 * child of multipart/mixed and related that holds a text part (an inline
 * image may come first) and into every child of multipart/alternative.  Attachments and attached messages are never
 * touched.  Left alone (the caller tags the subject only):
 * multipart/signed, multipart/encrypted and application/(x-)pkcs7-mime
 * anywhere in the walk.  Each part on its own, the others still bannered:
 * inline PGP (a text/plain part starting with "-----BEGIN PGP "); a part
 * whose charset cannot carry the banner (not ASCII-compatible, or the text
 * does not convert to it; an HTML banner is made ASCII with character
 * references so it fits any ASCII-compatible charset); a part already
 * carrying our banner exactly where we put it (top of the text, after
 * <body> or at the top of the HTML) - our text or mark elsewhere is the
 * sender's and does not count.
 *
 * Ownership: everything allocated here is freed before returning; the
 * result goes to the caller's util_buf.  Diagnostics: none (the caller
 * logs the result).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "content-internal.h"
#include "content.h"

#define MAX_TARGETS    8

struct edit {
	size_t at, end; /* replace msg[at..end) ... */
	char *repl;     /* ... with this (owned) */
	size_t rlen;
};

struct walk {
	GMimeObject *targets[MAX_TARGETS];
	int n;
	bool protect;
};

/* is_sub - the content type's subtype is sub (case-insensitive). */
static bool is_type(GMimeObject *obj, const char *type, const char *sub)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	const char *t = ct ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *s = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
	return t && s && strcasecmp(t, type) == 0 && (!sub || strcasecmp(s, sub) == 0);
}

/* walk_part - collect the parts that get a banner; note protected ones. */
static void walk_part(struct walk *w, GMimeObject *obj, int depth)
{
	if (!obj || depth > 256) /* past what content_too_many_parts lets through */
		return;
	if (GMIME_IS_MULTIPART(obj)) {
		if (is_type(obj, "multipart", "signed") || is_type(obj, "multipart", "encrypted")) {
			w->protect = true;
			return;
		}
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		int n = g_mime_multipart_get_count(mp);
		if (is_type(obj, "multipart", "alternative")) {
			for (int i = 0; i < n; i++)
				walk_part(w, g_mime_multipart_get_part(mp, i), depth + 1);
			return;
		}
		/* the first child that has a text part to mark: readers show
		 * the inline parts of mixed one after the other, and related's
		 * root may be any child (start=) - an inline image in front
		 * left the HTML after it without a banner (red team finding) */
		for (int i = 0; i < n && !w->protect; i++) {
			int before = w->n;
			walk_part(w, g_mime_multipart_get_part(mp, i), depth + 1);
			if (w->n > before)
				break;
		}
		return;
	}
	if (is_type(obj, "application", "pkcs7-mime") ||
	    is_type(obj, "application", "x-pkcs7-mime") ||
	    is_type(obj, "application", "pgp-encrypted")) {
		w->protect = true;
		return;
	}
	if (!GMIME_IS_PART(obj) || !(is_type(obj, "text", "plain") || is_type(obj, "text", "html")))
		return;
	const char *disp = g_mime_object_get_disposition(obj);
	if (disp && strcasecmp(disp, "attachment") == 0)
		return;
	if (w->n < MAX_TARGETS)
		w->targets[w->n++] = obj;
}

/* decode - a part's content without its transfer encoding (caller frees). */
static unsigned char *decode(GMimeContentEncoding enc, const char *raw, size_t n, size_t *outlen)
{
	GMimeEncoding st;
	g_mime_encoding_init_decode(&st, enc);
	unsigned char *out = malloc(g_mime_encoding_outlen(&st, n) + 1);
	if (!out)
		return NULL;
	*outlen = g_mime_encoding_flush(&st, raw, n, (char *)out);
	out[*outlen] = 0;
	return out;
}

/* is_identity - an encoding whose bytes are the content. */
static bool is_identity(GMimeContentEncoding enc)
{
	return enc == GMIME_CONTENT_ENCODING_DEFAULT || enc == GMIME_CONTENT_ENCODING_7BIT ||
	       enc == GMIME_CONTENT_ENCODING_8BIT || enc == GMIME_CONTENT_ENCODING_BINARY;
}

/* has_8bit - any byte over 0x7f. */
static bool has_8bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] > 0x7f)
			return true;
	return false;
}

/* is_utf8_charset - no charset, us-ascii or utf-8 (banner bytes as they are). */
static bool is_utf8_charset(const char *cs)
{
	return !cs || strcasecmp(cs, "utf-8") == 0 || strcasecmp(cs, "utf8") == 0 ||
	       strcasecmp(cs, "us-ascii") == 0 || strcasecmp(cs, "ascii") == 0;
}

/* to_charset - UTF-8 s in charset cs (ASCII-compatible only); NULL when it
 * cannot be said there.  Caller frees with g_free(). */
static char *to_charset(const char *s, const char *cs, gsize *len)
{
	gsize n = 0;
	char *probe = g_convert("<a =\r\n>", -1, cs, "UTF-8", NULL, &n, NULL);
	bool ascii_ok = probe && n == 7 && memcmp(probe, "<a =\r\n>", 7) == 0;
	g_free(probe);
	if (!ascii_ok)
		return NULL;
	return g_convert(s, -1, cs, "UTF-8", NULL, len, NULL);
}

/* is_utf7 - cs names UTF-7. */
static bool is_utf7(const char *cs)
{
	return strcasecmp(cs, "utf-7") == 0 || strcasecmp(cs, "utf7") == 0 ||
	       strcasecmp(cs, "unicode-1-1-utf-7") == 0;
}

/* charset_known - iconv can convert to cs (else it is a made-up name). */
static bool charset_known(const char *cs)
{
	GIConv cd = g_iconv_open(cs, "UTF-8");
	if (cd == (GIConv)-1)
		return false;
	g_iconv_close(cd);
	return true;
}

/* html_ascii - the HTML fragment with non-ASCII characters as &#N;. */
static char *html_ascii(const char *html)
{
	struct util_buf b;
	util_buf_init(&b);
	if (!g_utf8_validate(html, -1, NULL)) {
		util_buf_free(&b);
		return NULL;
	}
	for (const char *p = html; *p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);
		if (c < 0x80)
			util_buf_add(&b, p, 1);
		else
			util_buf_printf(&b, "&#%u;", (unsigned)c);
	}
	return b.data ? b.data : strdup("");
}

/* qp_encode - quoted-printable (RFC 2045 6.7) of s; CRLF stays a hard
 * line break, lines are cut at 73 characters with soft breaks, and no line
 * starts with '-' (so none can read as a MIME boundary). */
static void qp_encode(struct util_buf *b, const char *s, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' && i + 1 < n && s[i + 1] == '\n') {
			util_buf_adds(b, "\r\n");
			i++;
			col = 0;
			continue;
		}
		bool last = i + 1 == n || s[i + 1] == '\r';
		char tmp[4];
		size_t w;
		/* a '-' that would start a line is escaped: a decoded "--b"
		 * written back as is became a boundary line, and the parts an
		 * attacker hid in the encoded text (an .exe the attachment
		 * policy never saw) became real ones (red team, found by
		 * fuzz_content_banner) */
		bool bol = col == 0 || col + 1 > 73;
		if (c == '-' && bol) {
			snprintf(tmp, sizeof(tmp), "=%02X", c);
			w = 3;
		} else if ((c >= 33 && c <= 126 && c != '=') || (c == ' ' && !last)) {
			tmp[0] = (char)c;
			w = 1;
		} else {
			snprintf(tmp, sizeof(tmp), "=%02X", c);
			w = 3;
		}
		if (col + w > 73) {
			util_buf_adds(b, "=\r\n");
			col = 0;
		}
		util_buf_add(b, tmp, w);
		col += w;
	}
}

/* b64_encode - base64 in 76-column CRLF lines (RFC 2045 6.8). */
static void b64_encode(struct util_buf *b, const unsigned char *p, size_t n, bool final_crlf)
{
	gchar *e = g_base64_encode(p, n);
	size_t el = strlen(e);
	for (size_t i = 0; i < el; i += 76) {
		util_buf_add(b, e + i, el - i < 76 ? el - i : 76);
		if (i + 76 < el || final_crlf)
			util_buf_adds(b, "\r\n");
	}
	g_free(e);
}

/* tag_close - offset just after the '>' that closes the tag whose
 * attributes start at p[i], quoted attribute values skipped (a '>' inside
 * one does not close the tag); 0 when the tag never closes. */
static size_t tag_close(const char *p, size_t n, size_t i)
{
	while (i < n) {
		if (p[i] == '>')
			return i + 1;
		if (p[i++] != '=')
			continue;
		while (i < n && isspace((unsigned char)p[i]))
			i++;
		if (i < n && (p[i] == '"' || p[i] == '\'')) {
			const char *q = memchr(p + i + 1, p[i], n - i - 1);
			if (!q)
				return 0;
			i = (size_t)(q - p) + 1;
		}
	}
	return 0;
}

/* find_ci - offset of the ASCII case-insensitive needle in p[from..n), or n. */
static size_t find_ci(const char *p, size_t n, size_t from, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = from; i + k <= n; i++)
		if (strncasecmp(p + i, needle, k) == 0)
			return i;
	return n;
}

/* body_tag_end - offset just after the document's "<body ...>" start tag
 * in p[0..n), or 0 (then the banner goes at the very top).  The HTML is
 * walked tag by tag the way a browser reads it: comments, declarations,
 * quoted attribute values and the text of raw-text elements (style,
 * script, title, template...) are skipped, so a "<body>" written inside
 * one of them is not taken for the real one - a banner put there would not
 * be seen (red team finding). */
static size_t body_tag_end(const char *p, size_t n)
{
	static const char *const rawtext[] = {"script", "style",   "title",    "textarea", "xmp",
	                                      "iframe", "noembed", "noframes", "template", NULL};
	size_t i = 0;
	while (i < n) {
		if (p[i] != '<' || i + 1 >= n) {
			i++;
			continue;
		}
		if (i + 4 <= n && memcmp(p + i, "<!--", 4) == 0) {
			size_t e = find_ci(p, n, i + 4, "-->");
			if (e >= n)
				return 0;
			i = e + 3;
			continue;
		}
		if (p[i + 1] == '!' || p[i + 1] == '?' || p[i + 1] == '/') {
			size_t e = tag_close(p, n, i + 2);
			if (!e)
				return 0;
			i = e;
			continue;
		}
		if (!isalpha((unsigned char)p[i + 1])) {
			i++;
			continue;
		}
		size_t ns = i + 1, ne = ns;
		while (ne < n && (isalnum((unsigned char)p[ne]) || p[ne] == '-'))
			ne++;
		size_t e = tag_close(p, n, ne);
		if (!e)
			return 0;
		size_t nl = ne - ns;
		if (nl == 4 && strncasecmp(p + ns, "body", 4) == 0)
			return e;
		if (nl == 9 && strncasecmp(p + ns, "plaintext", 9) == 0)
			return 0; /* the rest is text */
		i = e;
		for (int k = 0; rawtext[k]; k++) {
			if (strlen(rawtext[k]) != nl || strncasecmp(p + ns, rawtext[k], nl) != 0)
				continue;
			char close[16];
			snprintf(close, sizeof(close), "</%s", rawtext[k]);
			i = find_ci(p, n, e, close);
			if (i >= n)
				return 0;
			break;
		}
	}
	return 0;
}

/* starts_with_at - p[at..n), leading blanks skipped, starts with s[0..k). */
static bool starts_with_at(const unsigned char *p, size_t n, size_t at, const char *s, size_t k)
{
	while (at < n && isspace(p[at]))
		at++;
	return at <= n && n - at >= k && memcmp(p + at, s, k) == 0;
}

/* plan_part - the edit for one part; a result other than DONE stops all. */
static enum content_banner_result plan_part(const char *msg, size_t len, GMimeObject *obj,
                                            const struct content_banner_opts *o, struct edit *e)
{
	bool html = is_type(obj, "text", "html");
	const char *banner = html ? o->html : o->text;
	memset(e, 0, sizeof(*e));
	if (!banner || !*banner)
		return CONTENT_BANNER_NONE;
	GMimePart *part = GMIME_PART(obj);
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	GMimeStream *st = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
	if (!st || st->bound_start < 0 || (size_t)st->bound_start > len)
		return CONTENT_BANNER_ERROR;
	size_t start = (size_t)st->bound_start;
	size_t end = st->bound_end < 0 || (size_t)st->bound_end > len ? len : (size_t)st->bound_end;
	if (end < start)
		return CONTENT_BANNER_ERROR;
	/* the content follows the blank line that ends the part's header
	 * block; a message that is all header block has no body to mark (a
	 * banner there would read as one more header field) */
	if (start < 2 || msg[start - 1] != '\n' ||
	    !(msg[start - 2] == '\n' ||
	      (start >= 3 && msg[start - 2] == '\r' && msg[start - 3] == '\n')))
		return CONTENT_BANNER_NONE;
	GMimeContentEncoding enc = g_mime_part_get_content_encoding(part);
	if (!is_identity(enc) && enc != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
	    enc != GMIME_CONTENT_ENCODING_BASE64)
		return CONTENT_BANNER_NONE; /* uuencode: leave it */
	size_t dlen = 0;
	unsigned char *dec = decode(enc, msg + start, end - start, &dlen);
	if (!dec)
		return CONTENT_BANNER_ERROR;
	enum content_banner_result r = CONTENT_BANNER_DONE;
	char *ins = NULL; /* the banner in the part's charset (g_free or free) */
	bool ins_g = false;
	gsize inslen = 0;
	struct util_buf b;
	util_buf_init(&b);
	/* inline PGP: a text part that is an armored block is left as the
	 * sender wrote it.  Only at the top: the armor anywhere else (say, in
	 * a text alternative nobody reads) cost the HTML part its banner (red
	 * team finding), and a banner above an armored block breaks nothing,
	 * the signature covers the text between the armor lines only. */
	if (!html && starts_with_at(dec, dlen, 0, "-----BEGIN PGP ", 15)) {
		r = CONTENT_BANNER_PROTECTED;
		goto out;
	}
	/* the banner, then a blank line (plain) or the marked block (html) */
	const char *cs = g_mime_object_get_content_type_parameter(obj, "charset");
	struct util_buf u;
	util_buf_init(&u);
	if (html) {
		char *a = html_ascii(banner);
		util_buf_printf(&u, "<div " CONTENT_BANNER_HTML_MARK "=\"1\">%s</div>\r\n",
		                a ? a : "");
		free(a);
	} else {
		util_buf_printf(&u, "%s\r\n\r\n", banner);
	}
	if (is_utf8_charset(cs)) {
		bool ascii_cs = cs && strncasecmp(cs, "us-ascii", 8) == 0;
		if (ascii_cs && has_8bit(u.data, u.len)) {
			util_buf_free(&u);
			r = CONTENT_BANNER_CHARSET;
			goto out;
		}
		inslen = u.len;
		ins = u.data; /* ownership moves */
		u.data = NULL;
	} else {
		ins = to_charset(u.data, cs, &inslen);
		ins_g = true;
		if (!ins && !has_8bit(u.data, u.len) &&
		    (!charset_known(cs) || (is_utf7(cs) && !strpbrk(u.data, "+\\~")))) {
			/* a charset nobody knows: the reader falls back to an
			 * ASCII-compatible default, so ASCII is safe - skipping
			 * it let a made-up charset name shed the banner.  UTF-7
			 * (Outlook still reads it) takes ASCII without '+', '\\'
			 * and '~' as it is (RFC 2152 direct characters). */
			ins = g_strndup(u.data, u.len);
			inslen = u.len;
		}
		util_buf_free(&u);
		if (!ins) {
			r = CONTENT_BANNER_CHARSET;
			goto out;
		}
	}
	util_buf_free(&u);
	/* our banner, exactly as it would be in this charset, where we put it
	 * (the top of a text part; after <body> or at the top of HTML): only
	 * then is it "already there".  Our text or mark anywhere else was the
	 * sender's, and it cost the message its banner (red team finding); a
	 * sender who writes the whole banner at the top shows it himself. */
	/* without the line end(s); HTML: the opening tag and the text, which
	 * is what the reader sees (the mid-line form breaks before </div>) */
	size_t blen = inslen - (html ? 8 : 4);
	if (starts_with_at(dec, dlen, 0, ins, blen) ||
	    (html && starts_with_at(dec, dlen, body_tag_end((const char *)dec, dlen), ins, blen))) {
		r = CONTENT_BANNER_PRESENT;
		goto out;
	}
	if (enc == GMIME_CONTENT_ENCODING_7BIT && has_8bit(ins, inslen)) {
		r = CONTENT_BANNER_CHARSET; /* a 7bit part cannot carry it */
		goto out;
	}
	bool qp = enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE;
	if (is_identity(enc) || (qp && !html)) {
		size_t at = html ? body_tag_end(msg + start, end - start) : 0;
		if (qp) {
			qp_encode(&b, ins, inslen);
		} else if (at > 0) {
			/* after <body>, inside a line: the rest of that line must
			 * not start a line of its own - "<body>--b" became a
			 * boundary line, and the .exe part the sender had written
			 * as HTML text after it a real part, one the attachment
			 * policy (run before) never saw (red team finding).  So:
			 * a break before our block, the block, and a break inside
			 * it: the rest follows "</div>" on the last line, which is
			 * then no longer than the line it came from. */
			util_buf_adds(&b, "\r\n");
			util_buf_add(&b, ins, inslen - 8); /* without "</div>\r\n" */
			util_buf_adds(&b, "\r\n</div>");
		} else {
			util_buf_add(&b, ins, inslen);
		}
		e->at = e->end = start + at;
	} else {
		/* base64, or quoted-printable HTML: decode, splice, re-encode.
		 * The <body> tag is found in the decoded HTML: in the encoded
		 * text a quoted attribute value reads =3D"...", and a '>' in it
		 * put the banner inside the value, unseen (red team finding). */
		size_t at = html ? body_tag_end((const char *)dec, dlen) : 0;
		struct util_buf d;
		util_buf_init(&d);
		util_buf_add(&d, dec, at);
		util_buf_add(&d, ins, inslen);
		util_buf_add(&d, dec + at, dlen - at);
		/* end with a line break when the original did, and when what
		 * follows would otherwise be glued to our last line (an empty
		 * part: the boundary comes straight after its blank line; glued,
		 * it was no boundary any more and the MIME tree changed - found
		 * by fuzz_content_banner) */
		bool crlf = (end - start >= 2 && msg[end - 2] == '\r' && msg[end - 1] == '\n') ||
		            (end < len && msg[end] != '\r' && msg[end] != '\n');
		if (qp) {
			qp_encode(&b, d.data, d.len);
			if (crlf && !(b.len >= 2 && b.data[b.len - 2] == '\r' && b.data[b.len - 1] == '\n'))
				util_buf_adds(&b, "\r\n"); /* the line break before the boundary */
		} else {
			b64_encode(&b, (const unsigned char *)d.data, d.len, crlf);
		}
		util_buf_free(&d);
		e->at = start;
		e->end = end;
	}
	e->repl = b.data;
	e->rlen = b.len;
	b.data = NULL;
out:
	if (ins_g)
		g_free(ins);
	else
		free(ins);
	util_buf_free(&b);
	free(dec);
	return r;
}

/* edit_cmp - edits in message order. */
static int edit_cmp(const void *a, const void *b)
{
	const struct edit *x = a, *y = b;
	return x->at < y->at ? -1 : x->at > y->at;
}

/* content_banner_apply - see content.h. */
enum content_banner_result content_banner_apply(const char *msg, size_t len,
                                                const struct content_banner_opts *o,
                                                struct util_buf *out)
{
	enum content_banner_result r = CONTENT_BANNER_NONE;
	GMimeStream *stream = NULL;
	GMimeParser *parser = NULL;
	GMimeMessage *m = NULL;
	struct edit edits[MAX_TARGETS];
	int nedits = 0;
	struct walk w = {.n = 0};

	if (content_too_many_parts(msg, len, CONTENT_MAX_PARTS))
		return CONTENT_BANNER_ERROR; /* not parsed: GMime's memory grows per part */
	content_gmime_init();
	stream = g_mime_stream_mem_new_with_buffer(msg, len);
	parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_persist_stream(parser, TRUE);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	m = g_mime_parser_construct_message(parser, NULL);
	if (!m) {
		r = CONTENT_BANNER_ERROR;
		goto out;
	}
	walk_part(&w, g_mime_message_get_mime_part(m), 0);
	if (w.protect) {
		r = CONTENT_BANNER_PROTECTED;
		goto out;
	}
	/* each part on its own: one that cannot or need not take the banner
	 * (charset, already there, inline PGP) does not cost the others theirs
	 * - a text alternative in a bogus charset left the HTML the reader sees
	 * without a banner (red team finding) */
	enum content_banner_result skipped = CONTENT_BANNER_NONE;
	for (int i = 0; i < w.n; i++) {
		enum content_banner_result pr =
		    plan_part(msg, len, w.targets[i], o, &edits[nedits]);
		if (pr == CONTENT_BANNER_ERROR) {
			r = pr;
			goto out;
		}
		if (pr == CONTENT_BANNER_DONE)
			nedits++;
		else if (skipped == CONTENT_BANNER_NONE || pr == CONTENT_BANNER_PRESENT)
			skipped = pr; /* "already there" says most */
	}
	if (nedits == 0) {
		r = skipped;
		goto out;
	}
	qsort(edits, (size_t)nedits, sizeof(edits[0]), edit_cmp);
	size_t pos = 0;
	for (int i = 0; i < nedits; i++) {
		if (edits[i].at < pos) { /* overlapping parts: not a tree we understand */
			r = CONTENT_BANNER_ERROR;
			goto out;
		}
	}
	for (int i = 0; i < nedits; i++) {
		util_buf_add(out, msg + pos, edits[i].at - pos);
		util_buf_add(out, edits[i].repl, edits[i].rlen);
		pos = edits[i].end;
	}
	util_buf_add(out, msg + pos, len - pos);
	r = CONTENT_BANNER_DONE;
out:
	for (int i = 0; i < nedits; i++)
		free(edits[i].repl);
	if (m)
		g_object_unref(m);
	if (parser)
		g_object_unref(parser);
	if (stream)
		g_object_unref(stream);
	return r;
}

/* content_banner_result_name - see content.h. */
const char *content_banner_result_name(enum content_banner_result r)
{
	switch (r) {
	case CONTENT_BANNER_ERROR:
		return "unparsable";
	case CONTENT_BANNER_NONE:
		return "no_text_part";
	case CONTENT_BANNER_DONE:
		return "done";
	case CONTENT_BANNER_PROTECTED:
		return "signed_or_encrypted";
	case CONTENT_BANNER_PRESENT:
		return "already_present";
	case CONTENT_BANNER_CHARSET:
		return "charset";
	}
	return "?";
}

/* content_from_domain - see content.h.  The address in <...> when there is
 * one (RFC 5322 name-addr), else the first word with an '@'. */
int content_from_domain(const char *value, size_t len, char *buf, size_t buflen)
{
	const char *p = value, *end = value + len;
	const char *lt = memchr(value, '<', len);
	if (lt) {
		p = lt + 1;
		const char *gt = memchr(p, '>', (size_t)(end - p));
		if (gt)
			end = gt;
	}
	const char *at = NULL;
	for (const char *q = p; q < end; q++) {
		if (*q == '@')
			at = q;
		else if (!lt && at &&
		         (*q == ',' || *q == ' ' || *q == '\t' || *q == '\r' || *q == '\n' ||
		          *q == ';' || *q == '(' || *q == '>')) {
			end = q;
			break;
		}
	}
	if (!at)
		return -1;
	size_t n = 0;
	for (const char *q = at + 1; q < end && n + 1 < buflen; q++) {
		unsigned char c = (unsigned char)*q;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		buf[n++] = (char)tolower(c);
	}
	buf[n] = 0;
	return n ? 0 : -1;
}
