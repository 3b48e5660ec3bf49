/*
 * content-attach.c - the attachment policy (issue 13, [attachments]):
 * every leaf part of the message (and of attached messages) is judged by
 * its file name and by what its bytes are.
 *
 * Name: the part's filenames (Content-Disposition filename and
 * Content-Type name, either blocks), which GMime decodes from RFC 2231 (filename*=) and
 * RFC 2047 encoded-words; trailing dots and blanks are dropped (Windows
 * ignores them) and the last extension is compared, case-insensitively,
 * with the blocked list - so "invoice.pdf.exe" is an .exe, whatever the
 * "pdf" in front says.  Type: the decoded content's first bytes (magic):
 * "MZ" (PE), "\x7fELF", "#!" (script), whatever the name claims.  An
 * attached message GMime leaves as a leaf (base64 or quoted-printable
 * encoded) is decoded and walked too; a tree deeper than MAX_DEPTH is
 * blocked, and so is a message GMime would build too many objects for
 * (content_too_many_parts, counted before it parses).  Zip archives ("PK\3\4", or an end record near the end with
 * junk in front) are opened with libzip from memory, one
 * level deep: the central directory's names (at most max_zip_entries of
 * them) and the first bytes of each entry are judged the same way; an
 * archive inside the archive is not opened.  An archive libzip cannot open
 * or an encrypted entry is not judged here (clamd sees it).
 *
 * Unparsable: a message GMime cannot build at all, or one where GMime
 * reports a critical issue (GMIME_CRIT_*: a multipart without a boundary,
 * conflicting Content-Type fields or boundary parameters, an invalid
 * header name, a part with neither headers nor content, nesting overflow)
 * - there it had to guess, and a reader may guess otherwise and show an
 * attachment GMime never saw.  Blocked still wins: what GMime did see is
 * judged first.
 *
 * Memory (red team 2): an attached message left encoded costs its decoded
 * bytes while everything inside it is walked, so a chain of them (each
 * quoted-printable, decoding to nearly its own size) held 32 copies at
 * once, each twice (decoded bytes and GMime's copy of them): 68 times the
 * message.  Now the decoded bytes are parsed where they lie (no copy; the
 * outer message neither: GMime reads the caller's buffer), a level is
 * freed as soon as it is judged, and all attached messages decoded in one
 * check may sum to DECODE_FACTOR times the message plus DECODE_FLOOR at
 * most: past that the message is blocked ("decoded=over_limit"), like a
 * tree past MAX_DEPTH (RFC 2046 allows message/rfc822 no such encoding at
 * all: ordinary forwards are parsed, not decoded, and cost nothing here).
 * A check so holds at most the message, DECODE_FACTOR times it plus 1 MiB
 * in decoded attached messages and one leaf part decoded for its magic
 * bytes (no larger than the message): 4 times the message plus 1 MiB,
 * plus GMime's objects (bounded by content_too_many_parts).  o->cancel set (the client left):
 * the walk stops at the next part and the result is -1 ("cancelled").
 *
 * Ownership: nothing outlives a call.  Diagnostics: none (the caller logs
 * the reason).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>
#include <zip.h>

#include "content-internal.h"
#include "content.h"

#define MAX_DEPTH 32 /* deeper: blocked, never passed unjudged */
#define ZIP_EOCD_WINDOW (65535 + 22) /* the end record and its comment */
#define DECODE_FACTOR 2 /* decoded attached messages, all levels: x the message */
#define DECODE_FLOOR (1u << 20) /* ... plus this: small chains are walked to MAX_DEPTH */

struct judge {
	const struct content_attach_opts *o;
	char *why;
	size_t whylen;
	int blocked;
	GMimeParserOptions *popts; /* owned by content_attach_check */
	const char *crit;          /* static; the first critical parser issue, or NULL */
	size_t budget;             /* decoded attached-message bytes still allowed */
	bool cancelled;            /* o->cancel seen set: stop */
};

/* stop - the walk ends here: blocked, or the caller gave up on it. */
static bool stop(struct judge *j)
{
	if (!j->cancelled && j->o->cancel != NULL && atomic_load(j->o->cancel))
		j->cancelled = true;
	return j->blocked || j->cancelled;
}

/* decode - the part's content, decoded, into a memory stream sized for it
 * up front (decoding never grows it: no doubling copies); NULL when it
 * would take more than limit bytes (encoded size: decoding only shrinks). */
static GMimeStream *decode(GMimeDataWrapper *dw, size_t limit)
{
	GMimeStream *raw = g_mime_data_wrapper_get_stream(dw);
	gint64 enc = raw ? g_mime_stream_length(raw) : -1;
	if (enc > 0 && (guint64)enc > limit)
		return NULL;
	GByteArray *ba = g_byte_array_sized_new(enc > 0 ? (guint)enc : 0);
	GMimeStream *mem = g_mime_stream_mem_new_with_byte_array(ba); /* owns ba */
	g_mime_data_wrapper_write_to_stream(dw, mem);
	if (ba->len > limit) {
		g_object_unref(mem);
		return NULL;
	}
	return mem;
}

/* parser_warning - GMime's warning callback: the first critical issue
 * (GMIME_CRIT_*) is kept; mere warnings (duplicated fields, 8-bit
 * headers, ...) are everyday mail. */
static void parser_warning(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer arg)
{
	struct judge *j = arg;
	const char *name = NULL;
	(void)offset;
	(void)item;
	switch (code) {
	case GMIME_CRIT_INVALID_HEADER_NAME:
		name = "invalid_header_name";
		break;
	case GMIME_CRIT_CONFLICTING_HEADER:
		name = "conflicting_header";
		break;
	case GMIME_CRIT_CONFLICTING_PARAMETER:
		name = "conflicting_parameter";
		break;
	case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
		name = "multipart_without_boundary";
		break;
	case GMIME_CRIT_NESTING_OVERFLOW:
		name = "nesting_overflow";
		break;
	case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
		name = "part_without_headers_or_content";
		break;
	default:
		break;
	}
	if (name != NULL && j->crit == NULL)
		j->crit = name;
}

/* content_attach_type_name - see content.h. */
const char *content_attach_type_name(unsigned type)
{
	switch (type) {
	case CONTENT_TYPE_PE:
		return "pe";
	case CONTENT_TYPE_ELF:
		return "elf";
	case CONTENT_TYPE_SCRIPT:
		return "script";
	}
	return "?";
}

/* magic_type - the CONTENT_TYPE_* the bytes start like, or 0. */
static unsigned magic_type(const unsigned char *p, size_t n)
{
	if (n >= 2 && p[0] == 'M' && p[1] == 'Z')
		return CONTENT_TYPE_PE;
	if (n >= 4 && memcmp(p,
	                     "\x7f"
	                     "ELF",
	                     4) == 0)
		return CONTENT_TYPE_ELF;
	if (n >= 2 && p[0] == '#' && p[1] == '!')
		return CONTENT_TYPE_SCRIPT;
	return 0;
}

/* ext_blocked - the name's last extension is on the list. */
static bool ext_blocked(const struct util_strlist *l, const char *name)
{
	if (!l || !name)
		return false;
	size_t n = strlen(name);
	while (n > 0 && (name[n - 1] == '.' || name[n - 1] == ' ' || name[n - 1] == '\t'))
		n--;
	size_t dot = n;
	while (dot > 0 && name[dot - 1] != '.' && name[dot - 1] != '/' && name[dot - 1] != '\\')
		dot--;
	if (dot == 0 || name[dot - 1] != '.')
		return false;
	size_t el = n - dot;
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->v[i]) == el && strncasecmp(name + dot, l->v[i], el) == 0)
			return true;
	return false;
}

/* printable - the name as it goes into the log and the reply: printable
 * ASCII, anything else '?', no quote or semicolon, cut at 80. */
static void printable(const char *in, char *out, size_t outlen)
{
	size_t n = 0;
	for (; in && *in && n + 1 < outlen && n < 80; in++) {
		unsigned char c = (unsigned char)*in;
		out[n++] =
		    (c < 0x21 || c > 0x7e || c == '"' || c == ';' || c == '\\') ? '?' : (char)c;
	}
	out[n] = 0;
}

/* block - note the first reason. */
static void block(struct judge *j, const char *fmt, const char *a, const char *b)
{
	if (j->blocked)
		return;
	char pa[96], pb[96];
	printable(a, pa, sizeof(pa));
	printable(b, pb, sizeof(pb));
	snprintf(j->why, j->whylen, fmt, pa, pb);
	j->blocked = 1;
}

/* zip_prefix - how many bytes precede the archive, from its
 * end-of-central-directory record near the end (where unzip tools look):
 * the record's position less the central directory's size and recorded
 * offset.  0 for a plain archive, -1 when there is no record. */
static long long zip_prefix(const unsigned char *p, size_t n)
{
	if (n < 22)
		return -1;
	size_t from = n > ZIP_EOCD_WINDOW ? n - ZIP_EOCD_WINDOW : 0;
	for (size_t i = n - 22 + 1; i-- > from;) {
		if (memcmp(p + i, "PK\5\6", 4) != 0)
			continue;
		const unsigned char *e = p + i;
		unsigned long long size = e[12] | e[13] << 8 | e[14] << 16 | (unsigned long long)e[15] << 24;
		unsigned long long off = e[16] | e[17] << 8 | e[18] << 16 | (unsigned long long)e[19] << 24;
		if (size + off > i)
			return 0; /* not a prefix we can place: let libzip judge */
		return (long long)(i - size - off);
	}
	return -1;
}

/* is_zip - a zip archive by its first local header or, as unzip tools
 * find one, by the end-of-central-directory record near its end: a junk
 * prefix in front hid the archive from the policy (red team finding). */
static bool is_zip(const unsigned char *p, size_t n)
{
	return (n >= 4 && memcmp(p, "PK\3\4", 4) == 0) || zip_prefix(p, n) >= 0;
}

/* judge_zip - the archive's entries, one level deep. */
static void judge_zip(struct judge *j, const char *zname, const unsigned char *p, size_t n)
{
	long long skip = zip_prefix(p, n); /* libzip wants the archive at offset 0 */
	if (skip > 0) {
		p += skip;
		n -= (size_t)skip;
	}
	zip_error_t ze;
	zip_error_init(&ze);
	zip_source_t *src = zip_source_buffer_create(p, n, 0, &ze);
	zip_t *za = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : NULL;
	if (!za) {
		if (src)
			zip_source_free(src);
		zip_error_fini(&ze);
		return; /* not judged here: clamd sees it */
	}
	zip_int64_t count = zip_get_num_entries(za, 0);
	if (count > (zip_int64_t)j->o->max_zip_entries) {
		block(j, "zip=%s entries=over_limit%s", zname, "");
		goto out;
	}
	for (zip_int64_t i = 0; i < count && !j->blocked; i++) {
		const char *name = zip_get_name(za, (zip_uint64_t)i, ZIP_FL_ENC_GUESS);
		if (!name)
			continue;
		if (ext_blocked(j->o->extensions, name)) {
			block(j, "zip=%s entry=%s", zname, name);
			break;
		}
		if (!j->o->types)
			continue;
		zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
		if (!zf)
			continue; /* encrypted or unsupported: clamd's */
		unsigned char head[4];
		zip_int64_t got = zip_fread(zf, head, sizeof(head));
		zip_fclose(zf);
		unsigned t = got > 0 ? magic_type(head, (size_t)got) : 0;
		if (t & j->o->types) {
			if (t == CONTENT_TYPE_PE)
				block(j, "type=pe zip=%s entry=%s", zname, name);
			else if (t == CONTENT_TYPE_ELF)
				block(j, "type=elf zip=%s entry=%s", zname, name);
			else
				block(j, "type=script zip=%s entry=%s", zname, name);
		}
	}
out:
	zip_close(za); /* read-only: discards, frees the source */
	zip_error_fini(&ze);
}

static void walk(struct judge *j, GMimeObject *obj, int depth);

/* judge_message - an attached message GMime left as a leaf because it came
 * base64 or quoted-printable encoded (readers decode and show it, with its
 * attachments): parse the decoded bytes (stream, taken) where they lie -
 * GMime's parts refer into them, no copy - and walk them. */
static void judge_message(struct judge *j, GMimeStream *stream, int depth)
{
	GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream));
	if (content_too_many_parts((const char *)ba->data, ba->len, CONTENT_MAX_PARTS)) {
		block(j, "parts=over_limit%s%s", "", "");
		g_object_unref(stream);
		return;
	}
	g_mime_stream_reset(stream);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	GMimeMessage *m = g_mime_parser_construct_message(parser, j->popts);
	if (m) {
		walk(j, g_mime_message_get_mime_part(m), depth + 1);
		g_object_unref(m);
	}
	g_object_unref(parser);
	g_object_unref(stream); /* the level's bytes go as soon as it is judged */
}

/* judge_part - one leaf part: both of its names (Content-Disposition
 * filename and Content-Type name: readers differ in which they show and
 * save under, so either one blocked blocks), then its decoded bytes. */
static void judge_part(struct judge *j, GMimePart *part, int depth)
{
	GMimeObject *obj = GMIME_OBJECT(part);
	const char *name = g_mime_part_get_filename(part);
	const char *names[2] = {g_mime_object_get_content_disposition_parameter(obj, "filename"),
	                        g_mime_object_get_content_type_parameter(obj, "name")};
	for (int i = 0; i < 2; i++)
		if (ext_blocked(j->o->extensions, names[i])) {
			block(j, "name=%s%s", names[i], "");
			return;
		}
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	const char *mt = ct ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *st = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
	bool message = mt && st && strcasecmp(mt, "message") == 0 &&
	               (strcasecmp(st, "rfc822") == 0 || strcasecmp(st, "global") == 0);
	if (!j->o->types && !j->o->zip && !message)
		return;
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	if (!dw)
		return;
	/* an attached message is held while everything in it is walked: it
	 * spends the budget; any other part goes when judged */
	GMimeStream *mem = decode(dw, message ? j->budget : (size_t)-1);
	if (!mem) {
		block(j, "decoded=over_limit%s%s", "", "");
		return;
	}
	GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	unsigned t = magic_type(ba->data, ba->len);
	if (t & j->o->types) {
		block(j, "type=%s name=%s", content_attach_type_name(t), name ? name : "-");
	} else if (message) {
		j->budget -= ba->len;
		judge_message(j, mem, depth); /* takes mem */
		return;
	} else if (j->o->zip && is_zip(ba->data, ba->len)) {
		judge_zip(j, name ? name : "-", ba->data, ba->len);
	}
	g_object_unref(mem);
}

/* walk - every leaf, attached messages included.  Deeper than MAX_DEPTH
 * is blocked: a tree nested past it let an attachment through unjudged
 * (red team finding). */
static void walk(struct judge *j, GMimeObject *obj, int depth)
{
	if (!obj || stop(j))
		return;
	if (depth > MAX_DEPTH) {
		block(j, "depth=over_limit%s%s", "", "");
		return;
	}
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		int n = g_mime_multipart_get_count(mp);
		for (int i = 0; i < n && !stop(j); i++)
			walk(j, g_mime_multipart_get_part(mp, i), depth + 1);
		return;
	}
	if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
		if (m)
			walk(j, g_mime_message_get_mime_part(m), depth + 1);
		return;
	}
	if (GMIME_IS_PART(obj))
		judge_part(j, GMIME_PART(obj), depth);
}

/* content_attach_check - see content.h. */
int content_attach_check(const char *msg, size_t len, const struct content_attach_opts *o,
                         char *why, size_t whylen)
{
	struct judge j = {.o = o, .why = why, .whylen = whylen, .blocked = 0};
	j.budget = len > (SIZE_MAX - DECODE_FLOOR) / DECODE_FACTOR ? SIZE_MAX
	                                                            : len * DECODE_FACTOR + DECODE_FLOOR;
	if (whylen)
		why[0] = 0;
	if (content_too_many_parts(msg, len, CONTENT_MAX_PARTS)) {
		/* never parsed: GMime's memory grows with the part count */
		block(&j, "parts=over_limit%s%s", "", "");
		return 1;
	}
	content_gmime_init();
	j.popts = g_mime_parser_options_new();
	g_mime_parser_options_set_warning_callback(j.popts, parser_warning, &j);
	/* GMime reads msg where it lies: a byte array over it, which neither
	 * the stream (not its owner) nor g_byte_array_free(.., FALSE) frees */
	GByteArray *ba = g_byte_array_new_take((guint8 *)(uintptr_t)msg, len);
	GMimeStream *stream = g_mime_stream_mem_new_with_byte_array(ba);
	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(stream), FALSE);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	GMimeMessage *m = g_mime_parser_construct_message(parser, j.popts);
	int rc = -1;
	if (m) {
		walk(&j, g_mime_message_get_mime_part(m), 0);
		rc = j.blocked;
		g_object_unref(m);
	}
	g_object_unref(parser);
	g_object_unref(stream);
	g_byte_array_free(ba, FALSE); /* the array, not msg's bytes */
	g_mime_parser_options_free(j.popts);
	if (j.cancelled && !j.blocked) {
		snprintf(why, whylen, "cancelled");
		return -1;
	}
	if (rc == 0 && j.crit != NULL)
		rc = -1; /* GMime guessed: what it saw is clean, the rest unknown */
	if (rc < 0 && whylen)
		snprintf(why, whylen, "mime=%s", j.crit != NULL ? j.crit : "no_message");
	return rc;
}
