/* content-internal.h - shared inside content/ only. */
#ifndef MXGATE_CONTENT_INTERNAL_H
#define MXGATE_CONTENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* content_gmime_init - GMime ready for use; safe from any thread, any time. */
void content_gmime_init(void);

/* The most MIME parts a message may have before GMime is let at it: GMime
 * makes an object per part (about 1.4 KiB each, and slower than linear), so
 * 2 MB of empty parts cost 400 MB and 15 s - a 25 MB message gigabytes. */
#define CONTENT_MAX_PARTS 5000

/* content_too_many_parts - msg[0..len) has more than limit boundary lines
 * (a line "--B" for a B named in a boundary= parameter anywhere in it, an
 * upper bound of the parts GMime would make), or boundary= values past any
 * sane nesting.  A cheap linear scan, run before parsing. */
bool content_too_many_parts(const char *msg, size_t len, size_t limit);

#endif
