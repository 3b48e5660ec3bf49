/*
 * content-attach.c - the attachment policy (issue 13, [attachments]):
 * every leaf part of the message (and of attached messages) is judged by
 * its file name and by what its bytes are.
 *
 * Name: the part's filename (Content-Disposition filename, else
 * Content-Type name), which GMime decodes from RFC 2231 (filename*=) and
 * RFC 2047 encoded-words; trailing dots and blanks are dropped (Windows
 * ignores them) and the last extension is compared, case-insensitively,
 * with the blocked list - so "invoice.pdf.exe" is an .exe, whatever the
 * "pdf" in front says.  Type: the decoded content's first bytes (magic):
 * "MZ" (PE), "\x7fELF", "#!" (script), whatever the name claims.  Zip
 * archives ("PK\3\4", by magic) are opened with libzip from memory, one
 * level deep: the central directory's names (at most max_zip_entries of
 * them) and the first bytes of each entry are judged the same way; an
 * archive inside the archive is not opened.  An archive libzip cannot open
 * or an encrypted entry is not judged here (clamd sees it).
 *
 * Ownership: nothing outlives a call.  Diagnostics: none (the caller logs
 * the reason).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>
#include <zip.h>

#include "content-internal.h"
#include "content.h"

#define MAX_DEPTH 16

struct judge {
	const struct content_attach_opts *o;
	char *why;
	size_t whylen;
	int blocked;
};

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

/* judge_zip - the archive's entries, one level deep. */
static void judge_zip(struct judge *j, const char *zname, const unsigned char *p, size_t n)
{
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

/* judge_part - one leaf part. */
static void judge_part(struct judge *j, GMimePart *part)
{
	const char *name = g_mime_part_get_filename(part);
	if (ext_blocked(j->o->extensions, name)) {
		block(j, "name=%s%s", name, "");
		return;
	}
	if (!j->o->types && !j->o->zip)
		return;
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	if (!dw)
		return;
	GMimeStream *mem = g_mime_stream_mem_new();
	g_mime_data_wrapper_write_to_stream(dw, mem); /* decoded */
	GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	unsigned t = magic_type(ba->data, ba->len);
	if (t & j->o->types)
		block(j, "type=%s name=%s", content_attach_type_name(t), name ? name : "-");
	else if (j->o->zip && ba->len >= 4 && memcmp(ba->data, "PK\3\4", 4) == 0)
		judge_zip(j, name ? name : "-", ba->data, ba->len);
	g_object_unref(mem);
}

/* walk - every leaf, attached messages included. */
static void walk(struct judge *j, GMimeObject *obj, int depth)
{
	if (!obj || depth > MAX_DEPTH || j->blocked)
		return;
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		int n = g_mime_multipart_get_count(mp);
		for (int i = 0; i < n && !j->blocked; i++)
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
		judge_part(j, GMIME_PART(obj));
}

/* content_attach_check - see content.h. */
int content_attach_check(const char *msg, size_t len, const struct content_attach_opts *o,
                         char *why, size_t whylen)
{
	struct judge j = {.o = o, .why = why, .whylen = whylen, .blocked = 0};
	if (whylen)
		why[0] = 0;
	content_gmime_init();
	GMimeStream *stream = g_mime_stream_mem_new_with_buffer(msg, len);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	GMimeMessage *m = g_mime_parser_construct_message(parser, NULL);
	int rc = -1;
	if (m) {
		walk(&j, g_mime_message_get_mime_part(m), 0);
		rc = j.blocked;
		g_object_unref(m);
	}
	g_object_unref(parser);
	g_object_unref(stream);
	return rc;
}
