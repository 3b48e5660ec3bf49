/* content-internal.h - shared inside content/ only. */
#ifndef MXGATE_CONTENT_INTERNAL_H
#define MXGATE_CONTENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* What a message may hold before GMime is let at it.  GMime makes an
 * object per part (about 1.4 KiB each, and slower than linear) and per
 * header field (about 500 bytes): 2 MB of empty parts cost 400 MB and 15 s,
 * 8 MB of "a:b" part header lines 1 GB - a 25 MB message gigabytes.
 * Counted without parsing (content_too_many_parts): lines starting with
 * "--" (each part needs one; other text has some too, hence the factor)
 * and lines that start like a header field (and the ';', ',' and '@' in
 * them and in their folded lines: each may be one more parameter or
 * address object - 5 MB of "; a=1" cost GMime 440 MB, an attached
 * message's To: of 1M addresses 300 MB). */
#define CONTENT_MAX_PARTS          5000
#define CONTENT_DASH_LINES_PER_PART 4
#define CONTENT_MAX_FIELDS         200000

/* content_too_many_parts - msg[0..len) has more than limit *
 * CONTENT_DASH_LINES_PER_PART lines starting with "--", or more than
 * CONTENT_MAX_FIELDS lines starting like a header field and ';' ',' '@' in them:
 * never handed to GMime.  A cheap linear scan. */
bool content_too_many_parts(const char *msg, size_t len, size_t limit);

#endif
