/*
 * util-hdr.c - iterate over the fields of an RFC 5322 header block.
 *
 * Lines end only with CRLF (RFC 5322 2.1).  A field is a name of ftext
 * (RFC 5322 3.6.8: printable US-ASCII except ':'), optional white space
 * before the colon (obsolete syntax, RFC 5322 4.5.8 - accepted so that
 * "Authentication-Results :" is still recognised and can be removed), the
 * colon, and a value that may be folded over lines starting with SP or HTAB
 * (RFC 5322 2.2.3).  The last field may lack its final CRLF (a truncated
 * block); its value and raw text then run to the end of the block.
 *
 * Ownership: all pointers in struct util_hdr_field borrow from the block.
 * Diagnostics: -1 for a line that is not a field: no colon, a name outside
 * ftext, a continuation line with no field before it, or a bare CR, bare LF
 * or NUL anywhere in the field (a downstream MTA could read a bare LF as a
 * line end and see a field we never saw).
 */
#include "util.h"

#include <string.h>

/* hdr_is_ftext - RFC 5322 3.6.8 field-name character. */
static bool hdr_is_ftext(unsigned char c)
{
	return c >= 33 && c <= 126 && c != ':';
}

/* util_hdr_next - the field at *pos; 1 found, 0 end of block, -1 malformed. */
int util_hdr_next(const char *block, size_t len, size_t *pos, struct util_hdr_field *f)
{
	size_t start = *pos;
	size_t i = start;
	size_t name_end;

	if (start >= len)
		return 0;
	if (block[i] == '\r' && i + 1 < len && block[i + 1] == '\n')
		return 0; /* the empty line that ends the header block */
	while (i < len && hdr_is_ftext((unsigned char)block[i]))
		i++;
	name_end = i;
	if (name_end == start)
		return -1;
	while (i < len && (block[i] == ' ' || block[i] == '\t'))
		i++;
	if (i >= len || block[i] != ':')
		return -1;
	i++;
	f->name = block + start;
	f->name_len = name_end - start;
	f->value = block + i;
	for (;;) {
		if (i >= len) {
			/* Truncated: the block ends inside the last field. */
			f->value_len = len - (size_t)(f->value - block);
			break;
		}
		if (block[i] == '\0' || block[i] == '\n')
			return -1;
		if (block[i] != '\r') {
			i++;
			continue;
		}
		if (i + 1 >= len) {
			return -1; /* a CR with nothing after it cannot end a line */
		}
		if (block[i + 1] != '\n')
			return -1;
		if (i + 2 < len && (block[i + 2] == ' ' || block[i + 2] == '\t')) {
			i += 2; /* folded: the field continues (RFC 5322 2.2.3) */
			continue;
		}
		f->value_len = i - (size_t)(f->value - block);
		i += 2;
		break;
	}
	f->raw = block + start;
	f->raw_len = i - start;
	*pos = i;
	return 1;
}

/* util_hdr_name_is - ASCII case-insensitive comparison of the field name. */
bool util_hdr_name_is(const struct util_hdr_field *f, const char *name)
{
	size_t n = strlen(name);
	size_t i;

	if (n != f->name_len)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char a = (unsigned char)f->name[i];
		unsigned char b = (unsigned char)name[i];

		if (a >= 'A' && a <= 'Z')
			a = (unsigned char)(a + 32);
		if (b >= 'A' && b <= 'Z')
			b = (unsigned char)(b + 32);
		if (a != b)
			return false;
	}
	return true;
}
