/*
 * util-str.c - allocation wrappers, small string helpers, clocks, RFC 5322
 * dates, the growable byte buffer and the string list.
 *
 * Ownership: util_x* return memory the caller frees with free().  A
 * struct util_buf owns its data (util_buf_free); a struct util_strlist owns
 * every string in it (util_strlist_free).  Both free functions leave the
 * struct empty and reusable, and accept an already empty struct.
 *
 * Diagnostics: out of memory (or a size overflow) prints one line to stderr
 * and abort()s: there is no sane way for a session to continue.
 */
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* str_oom - report an allocation failure and abort. */
static void str_oom(size_t n) __attribute__((noreturn));
static void str_oom(size_t n)
{
	char msg[96];
	int len = snprintf(msg, sizeof(msg), "mxgate: out of memory allocating %zu bytes\n", n);

	if (len > 0)
		(void)!write(STDERR_FILENO, msg, (size_t)len);
	abort();
}

/* util_xmalloc - malloc that never returns NULL (0 bytes gives a valid pointer). */
void *util_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		str_oom(n);
	return p;
}

/* util_xcalloc - zeroed array of n elements of m bytes; overflow aborts. */
void *util_xcalloc(size_t n, size_t m)
{
	void *p;

	if (n == 0 || m == 0) {
		n = 1;
		m = 1;
	}
	if (n > SIZE_MAX / m)
		str_oom(SIZE_MAX);
	p = calloc(n, m);
	if (p == NULL)
		str_oom(n * m);
	return p;
}

/* util_xrealloc - realloc that never returns NULL. */
void *util_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		str_oom(n);
	return q;
}

/* util_xstrdup - copy of s. */
char *util_xstrdup(const char *s)
{
	return util_xstrndup(s, strlen(s));
}

/* util_xstrndup - copy of at most n bytes of s, NUL-terminated. */
char *util_xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p;

	if (len == SIZE_MAX)
		str_oom(len);
	p = util_xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* util_xasprintf - printf into a new string. */
char *util_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return util_xstrdup(""); /* bad format: empty string rather than NULL */
	p = util_xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* str_lower - ASCII lower case, independent of the locale. */
static unsigned char str_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* util_strcaseeq - ASCII case-insensitive equality (locale-independent). */
bool util_strcaseeq(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a;
	const unsigned char *y = (const unsigned char *)b;

	for (; *x != '\0' && *y != '\0'; x++, y++) {
		if (str_lower(*x) != str_lower(*y))
			return false;
	}
	return *x == *y;
}

/* util_is_ldh_name - letters, digits and hyphens in non-empty labels. */
bool util_is_ldh_name(const char *s)
{
	size_t label = 0, total = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++, total++) {
		unsigned char c = (unsigned char)*s;

		if (c == '.') {
			if (label == 0)
				return false; /* empty label, or a trailing dot */
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && total <= 253;
}

/* util_domain_of - the domain after the last '@' of addr, or NULL. */
const char *util_domain_of(const char *addr)
{
	const char *at;

	if (addr == NULL)
		return NULL;
	at = strrchr(addr, '@');
	return at != NULL ? at + 1 : NULL;
}

/* util_now_us - wall clock, microseconds since the epoch. */
int64_t util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* util_mono_ms - monotonic clock in milliseconds (for timeouts). */
int64_t util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* util_mono_deadline - see util.h. */
void util_mono_deadline(const struct timespec *from, int64_t ms, struct timespec *out)
{
	if (from != NULL)
		*out = *from;
	else
		clock_gettime(CLOCK_MONOTONIC, out);
	out->tv_sec += (time_t)(ms / 1000);
	out->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (out->tv_nsec >= 1000000000L) {
		out->tv_sec++;
		out->tv_nsec -= 1000000000L;
	}
}

/* util_rfc5322_date - date-time of RFC 5322 3.3 in UTC, locale-independent. */
void util_rfc5322_date(int64_t t, char out[64])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		tt = 0;
		gmtime_r(&tt, &tm);
	}
	snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
	         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ------------------------------------------------------------ util_buf */

/* util_buf_init - empty buffer; data is always a valid NUL-terminated string. */
void util_buf_init(struct util_buf *b)
{
	b->cap = 64;
	b->len = 0;
	b->data = util_xmalloc(b->cap);
	b->data[0] = '\0';
}

/* util_buf_free - release the data; b is left empty (data NULL). */
void util_buf_free(struct util_buf *b)
{
	if (b == NULL)
		return;
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

/* util_buf_reset - empty the buffer, keeping its memory. */
void util_buf_reset(struct util_buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

/* buf_reserve - make room for n more bytes plus the terminating NUL. */
static void buf_reserve(struct util_buf *b, size_t n)
{
	size_t need;
	size_t cap;

	if (n > SIZE_MAX - b->len - 1)
		str_oom(SIZE_MAX);
	need = b->len + n + 1;
	if (b->data != NULL && need <= b->cap)
		return;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	b->data = util_xrealloc(b->data, cap);
	b->cap = cap;
}

/* util_buf_add - append n bytes (may contain NUL bytes). */
void util_buf_add(struct util_buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* util_buf_adds - append a NUL-terminated string. */
void util_buf_adds(struct util_buf *b, const char *s)
{
	util_buf_add(b, s, strlen(s));
}

/* util_buf_printf - append printf output. */
void util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	buf_reserve(b, 0);
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		buf_reserve(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

/* ------------------------------------------------------------ util_strlist */

/* util_strlist_add - append a copy of s. */
void util_strlist_add(struct util_strlist *l, const char *s)
{
	if (l->n >= SIZE_MAX / sizeof(char *) / 2)
		str_oom(SIZE_MAX);
	/* The capacity is implicit: lists only grow, one at a time, so the
	 * array is doubled whenever n reaches a power of two (4, 8, 16, ...);
	 * appending n strings costs O(n), not O(n^2) copying. */
	if (l->n < 4 ? l->n == 0 : (l->n & (l->n - 1)) == 0)
		l->v = util_xrealloc(l->v, (l->n < 4 ? 4 : l->n * 2) * sizeof(char *));
	l->v[l->n++] = util_xstrdup(s);
}

/* util_strlist_free - free every string and the array; l is left empty. */
void util_strlist_free(struct util_strlist *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* util_strlist_has_case - does the list hold s (ASCII case-insensitive)? */
bool util_strlist_has_case(const struct util_strlist *l, const char *s)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (util_strcaseeq(l->v[i], s))
			return true;
	}
	return false;
}

/* util_seterr - format a message into err when the caller gave room. */
void util_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
