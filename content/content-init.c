/*
 * content-init.c - GMime's process-wide set-up, once, for every user in
 * content/ (the banner and the attachment walk run on worker threads and
 * may start at the same moment; g_mime_init itself is not thread-safe),
 * and the part count checked before GMime parses (content_too_many_parts).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

#define MAX_BOUNDARIES 256 /* distinct boundary= values: far past nesting */
#define MAX_BOUNDARY   70  /* RFC 2046 5.1.1 */

struct bset {
	char v[MAX_BOUNDARIES][MAX_BOUNDARY + 1];
	size_t len[MAX_BOUNDARIES];
	size_t n;
};

/* bset_add - one boundary= value; -1 when there are too many. */
static int bset_add(struct bset *b, const char *p, size_t n)
{
	if (n == 0 || n > MAX_BOUNDARY)
		return 0; /* not one GMime would use as such */
	for (size_t i = 0; i < b->n; i++)
		if (b->len[i] == n && memcmp(b->v[i], p, n) == 0)
			return 0;
	if (b->n == MAX_BOUNDARIES)
		return -1;
	memcpy(b->v[b->n], p, n);
	b->len[b->n++] = n;
	return 0;
}

/* content_too_many_parts - see content-internal.h. */
bool content_too_many_parts(const char *msg, size_t len, size_t limit)
{
	struct bset *b = calloc(1, sizeof(*b));
	bool over = false;
	if (!b)
		return true;
	/* every boundary= value, quoted or not, wherever it is */
	for (size_t i = 0; i + 9 <= len; i++) {
		if ((msg[i] | 0x20) != 'b' || strncasecmp(msg + i, "boundary", 8) != 0)
			continue;
		size_t j = i + 8;
		while (j < len && (msg[j] == ' ' || msg[j] == '\t'))
			j++;
		if (j >= len || msg[j] != '=')
			continue;
		j++;
		while (j < len && (msg[j] == ' ' || msg[j] == '\t'))
			j++;
		size_t s = j;
		if (j < len && msg[j] == '"') {
			s = ++j;
			while (j < len && msg[j] != '"' && msg[j] != '\r' && msg[j] != '\n')
				j++;
		} else {
			while (j < len && msg[j] != ';' && msg[j] != ' ' && msg[j] != '\t' &&
			       msg[j] != '\r' && msg[j] != '\n')
				j++;
		}
		if (bset_add(b, msg + s, j - s) < 0) {
			over = true;
			goto out;
		}
		i = j > i ? j - 1 : i;
	}
	/* the lines that open or close a part of one of them */
	size_t count = 0;
	for (size_t i = 0; i + 2 < len; i++) {
		if ((i == 0 || msg[i - 1] == '\n') && msg[i] == '-' && msg[i + 1] == '-') {
			const char *p = msg + i + 2;
			size_t left = len - i - 2;
			for (size_t k = 0; k < b->n; k++) {
				if (b->len[k] <= left && p[0] == b->v[k][0] &&
				    memcmp(p, b->v[k], b->len[k]) == 0) {
					if (++count > limit) {
						over = true;
						goto out;
					}
					break;
				}
			}
		}
		const char *nl = memchr(msg + i, '\n', len - i);
		if (!nl)
			break;
		i = (size_t)(nl - msg);
	}
out:
	free(b);
	return over;
}
