/*
 * content-init.c - GMime's process-wide set-up, once, for every user in
 * content/ (the banner and the attachment walk run on worker threads and
 * may start at the same moment; g_mime_init itself is not thread-safe).
 */
#include <pthread.h>

#include <gmime/gmime.h>

#include "content-internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* gmime_start - g_mime_init, called once. */
static void gmime_start(void)
{
	g_mime_init();
}

/* content_gmime_init - see content-internal.h. */
void content_gmime_init(void)
{
	pthread_once(&once, gmime_start);
}
