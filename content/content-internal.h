/* content-internal.h - shared inside content/ only. */
#ifndef MXGATE_CONTENT_INTERNAL_H
#define MXGATE_CONTENT_INTERNAL_H

/* content_gmime_init - GMime ready for use; safe from any thread, any time. */
void content_gmime_init(void);

#endif
