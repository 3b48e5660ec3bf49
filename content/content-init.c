/*
 * content-init.c - GMime's process-wide set-up, once, for every user in
 * content/ (the banner and the attachment walk run on worker threads and
 * may start at the same moment; g_mime_init itself is not thread-safe),
 * and the part count checked before GMime parses (content_too_many_parts).
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <gmime/gmime.h>

#include "content-internal.h"
#include "content.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* gmime_start - g_mime_init, called once. */
static void gmime_start(void)
{
	g_mime_init();
}

/* content_gmime_init - see content.h. */
void content_gmime_init(void)
{
	pthread_once(&once, gmime_start);
}

/* content_too_many_parts - see content-internal.h.  An upper bound that
 * does not depend on how the boundaries are named: every part starts after
 * a line beginning with "--" (whatever boundary= says, plain, RFC 2231
 * encoded or continued, or an encoded word - GMime decodes them all), and
 * every header field GMime makes an object of starts a line with a field
 * name and a colon.  Lines inside base64 never look like either. */
bool content_too_many_parts(const char *msg, size_t len, size_t limit)
{
	size_t dashes = 0, fields = 0;
	bool in_field = false; /* the line before started or continued a field */
	for (size_t i = 0; i < len;) {
		const char *p = msg + i;
		const char *nl = memchr(p, '\n', len - i);
		size_t n = nl ? (size_t)(nl - p) : len - i;
		bool field = false;
		if (n >= 2 && p[0] == '-' && p[1] == '-') {
			if (++dashes > limit * CONTENT_DASH_LINES_PER_PART)
				return true;
		} else if (in_field && n > 0 && (p[0] == ' ' || p[0] == '\t')) {
			field = true; /* a folded field goes on */
		} else {
			size_t k = 0;
			while (k < n && p[k] > 32 && p[k] < 127 && p[k] != ':')
				k++;
			size_t c = k;
			while (c < n && (p[c] == ' ' || p[c] == '\t'))
				c++;
			field = k > 0 && c < n && p[c] == ':';
			fields += field;
		}
		if (field) {
			/* every ';' may be one more parameter object (Content-Type,
			 * Content-Disposition: 5 MB of "; a=1" cost GMime 440 MB),
			 * every ',' or '@' one more address (an attached message's
			 * To: of 1M addresses, 4 MB, cost 300 MB) */
			for (size_t k = 0; k < n; k++)
				fields += p[k] == ';' || p[k] == ',' || p[k] == '@';
			if (fields > CONTENT_MAX_FIELDS)
				return true;
		}
		in_field = field;
		i += n + 1;
	}
	return false;
}

/* content_mime_too_complex - see content.h. */
bool content_mime_too_complex(const char *msg, size_t len)
{
	return content_too_many_parts(msg, len, CONTENT_MAX_PARTS);
}
