/*
 * smtp-verify-cache.c - the recipient-verification answer cache: a hash of
 * lower-case addresses to "exists until T" / "unknown until T", bounded
 * (oldest answer evicted first), kept on disk so a restart does not probe
 * every recipient again (like Postfix's address_verify_map).
 *
 * Why a flat file and not SQLite: the data is a few hundred thousand short
 * lines at most, read once at start-up and only ever appended to; a lost or
 * torn file costs probes, never mail.  An append-only log with a periodic
 * rewrite (temp + rename) needs no new library and no schema, and the
 * loop never touches the disk: a writer thread takes byte buffers.
 *
 * Ownership: the cache owns its entries, its buffers and its thread;
 * smtp_verify_cache_free() joins the thread after it wrote what was queued.
 *
 * Diagnostics: a file that cannot be read or written is logged once (warn);
 * lines that do not parse are skipped silently (counted in the load log).
 */
#include "smtp-verify-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define CACHE_FILE_MAX    (512 * 1024 * 1024) /* never read more than this */
#define CACHE_MIN_BUCKETS 1024

struct cache_entry {
	char *addr; /* lower case */
	bool ok;
	int64_t expires;
	struct cache_entry *hnext;         /* bucket chain */
	struct cache_entry *older, *newer; /* age list: oldest is evicted first */
};

struct smtp_verify_cache {
	struct cache_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t n, max;
	struct cache_entry *oldest, *newest;
	/* the file and its writer */
	char *path;    /* NULL: memory only */
	size_t nlines; /* lines in the file (appended + rewritten) */
	pthread_t thread;
	bool thread_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct util_buf append; /* lines to append (under mu) */
	char *rewrite;          /* a whole new file image (under mu), or NULL */
	size_t rewrite_len;
	bool stop;   /* under mu */
	bool warned; /* writer: one warning per problem kind */
};

/* cache_hash - FNV-1a of a lower-case address. */
static uint32_t cache_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* cache_lower - lower-case copy into out (false when too long / bad). */
static bool cache_lower(const char *addr, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; addr[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)addr[i];

		if (i + 1 >= outlen || ch <= ' ' || ch == 0x7f)
			return false;
		out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
	}
	out[i] = '\0';
	return i > 0 && strchr(out, '@') != NULL;
}

/* cache_find - the entry of a lower-case address, or NULL. */
static struct cache_entry *cache_find(const struct smtp_verify_cache *c, const char *key)
{
	struct cache_entry *e = c->buckets[cache_hash(key) & (c->nbuckets - 1)];

	while (e != NULL && strcmp(e->addr, key) != 0)
		e = e->hnext;
	return e;
}

/* cache_unlink - take e out of its bucket and the age list, free it. */
static void cache_remove(struct smtp_verify_cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[cache_hash(e->addr) & (c->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	c->n--;
	free(e->addr);
	free(e);
}

/* cache_grow - double the buckets when the chains get long. */
static void cache_grow(struct smtp_verify_cache *c)
{
	size_t nb = c->nbuckets * 2;
	struct cache_entry **b = util_xcalloc(nb, sizeof(*b));

	for (size_t i = 0; i < c->nbuckets; i++) {
		struct cache_entry *e = c->buckets[i];

		while (e != NULL) {
			struct cache_entry *next = e->hnext;
			size_t k = cache_hash(e->addr) & (nb - 1);

			e->hnext = b[k];
			b[k] = e;
			e = next;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = nb;
}

/* cache_set - insert or replace (the entry becomes the newest). */
static void cache_set(struct smtp_verify_cache *c, const char *key, bool ok, int64_t expires)
{
	struct cache_entry *e = cache_find(c, key);
	size_t k;

	if (e != NULL)
		cache_remove(c, e);
	while (c->n >= c->max && c->oldest != NULL) {
		util_metrics_inc("mxgate_state_evictions_total", "verify");
		cache_remove(c, c->oldest);
	}
	if (c->n + 1 > c->nbuckets)
		cache_grow(c);
	e = util_xcalloc(1, sizeof(*e));
	e->addr = util_xstrdup(key);
	e->ok = ok;
	e->expires = expires;
	k = cache_hash(key) & (c->nbuckets - 1);
	e->hnext = c->buckets[k];
	c->buckets[k] = e;
	e->older = c->newest;
	if (c->newest)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
	c->n++;
}

/* ------------------------------------------------------------ writer thread */

/* writer_rewrite - path.tmp, then rename over path. */
static int writer_rewrite(struct smtp_verify_cache *c, const char *img, size_t len)
{
	char *tmp = util_xasprintf("%s.tmp", c->path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = -1;

	if (fd < 0)
		goto out;
	if (util_write_all(fd, img, len) != 0) {
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	rc = rename(tmp, c->path);
	if (rc != 0)
		unlink(tmp);
out:
	free(tmp);
	return rc;
}

/* writer_append - lines at the end of path (created with the magic line). */
static int writer_append(struct smtp_verify_cache *c, const char *p, size_t len)
{
	int fd = open(c->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	struct stat st;
	int rc = -1;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && st.st_size == 0 &&
	    util_write_all(fd, SMTP_VERIFY_CACHE_MAGIC "\n", sizeof(SMTP_VERIFY_CACHE_MAGIC)) != 0)
		goto out;
	rc = util_write_all(fd, p, len);
out:
	close(fd);
	return rc;
}

/* writer_main - take what the loop queued and write it, until stopped. */
static void *writer_main(void *arg)
{
	struct smtp_verify_cache *c = arg;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->stop && c->append.len == 0 && c->rewrite == NULL)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->append.len == 0 && c->rewrite == NULL)
			break; /* stopped with nothing left */
		char *img = c->rewrite;
		size_t img_len = c->rewrite_len;
		struct util_buf app = c->append;

		c->rewrite = NULL;
		util_buf_init(&c->append);
		pthread_mutex_unlock(&c->mu);
		/* the image holds every answer queued before it; appends
		 * queued after it go after it */
		if ((img != NULL && writer_rewrite(c, img, img_len) != 0) ||
		    (app.len > 0 && writer_append(c, app.data, app.len) != 0)) {
			if (!c->warned)
				util_log_warn("verify cache file %s: cannot write: %s", c->path,
				              strerror(errno));
			c->warned = true;
		}
		free(img);
		util_buf_free(&app);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* cache_image - the whole file for the live entries (oldest first). */
static char *cache_image(const struct smtp_verify_cache *c, size_t *len)
{
	struct util_buf b;

	util_buf_init(&b);
	util_buf_adds(&b, SMTP_VERIFY_CACHE_MAGIC "\n");
	for (const struct cache_entry *e = c->oldest; e != NULL; e = e->newer)
		util_buf_printf(&b, "%c %lld %s\n", e->ok ? 'P' : 'N', (long long)e->expires,
		                e->addr);
	*len = b.len;
	return b.data;
}

/* ------------------------------------------------------------ API */

/* smtp_verify_cache_load - parse a file image into the cache. */
size_t smtp_verify_cache_load(struct smtp_verify_cache *c, const char *text, size_t len,
                              int64_t now)
{
	const char *p = text, *end = text + len;
	size_t taken = 0;
	bool first = true;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char line[SMTP_VERIFY_ADDR_MAX + 40], addr[SMTP_VERIFY_ADDR_MAX + 1];
		long long exp;
		char kind;
		int used = 0;

		if (first) {
			first = false;
			if (n != strlen(SMTP_VERIFY_CACHE_MAGIC) ||
			    memcmp(p, SMTP_VERIFY_CACHE_MAGIC, n) != 0)
				return 0; /* not our file (or another version): start empty */
			goto next;
		}
		if (nl == NULL || n >= sizeof(line) || n < 5)
			goto next; /* a torn last line, or garbage */
		memcpy(line, p, n);
		line[n] = '\0';
		if (memchr(line, '\0', n) != NULL)
			goto next;
		/* "K EXPIRES ADDRESS": exactly one space each, digits only */
		kind = line[0];
		if ((kind != 'P' && kind != 'N') || line[1] != ' ' || line[2] < '0' ||
		    line[2] > '9')
			goto next;
		exp = 0;
		for (used = 2; line[used] >= '0' && line[used] <= '9'; used++) {
			if (exp > (INT64_MAX - 9) / 10)
				goto next;
			exp = exp * 10 + (line[used] - '0');
		}
		if (line[used] != ' ' || (size_t)(n - (size_t)used - 1) > SMTP_VERIFY_ADDR_MAX)
			goto next;
		memcpy(addr, line + used + 1, n - (size_t)used);
		char key[SMTP_VERIFY_ADDR_MAX + 1];
		if (!cache_lower(addr, key, sizeof(key)) || strcmp(key, addr) != 0)
			goto next;
		if (exp <= now) {
			struct cache_entry *old = cache_find(c, key);

			if (old != NULL)
				cache_remove(c, old); /* a later, expired answer wins too */
			goto next;
		}
		cache_set(c, key, kind == 'P', exp);
		taken++;
	next:
		p += n + (nl != NULL ? 1 : 0);
	}
	return taken;
}

/* smtp_verify_cache_new - empty cache, file read, writer started. */
struct smtp_verify_cache *smtp_verify_cache_new(const char *path, size_t max, int64_t now)
{
	struct smtp_verify_cache *c = util_xcalloc(1, sizeof(*c));

	c->max = max > 0 ? max : 1;
	c->nbuckets = CACHE_MIN_BUCKETS;
	c->buckets = util_xcalloc(c->nbuckets, sizeof(*c->buckets));
	util_buf_init(&c->append);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (path == NULL)
		return c;
	c->path = util_xstrdup(path);
	size_t len = 0;
	char *text = util_read_file(path, CACHE_FILE_MAX, &len);
	if (text != NULL) {
		size_t lines = 0;

		for (size_t i = 0; i < len; i++)
			lines += text[i] == '\n';
		size_t n = smtp_verify_cache_load(c, text, len, now);
		c->nlines = lines;
		util_log_info("verify cache file=%s entries=%zu lines=%zu", path, n, lines);
		free(text);
	} else if (errno != ENOENT) {
		util_log_warn("verify cache file %s: cannot read: %s (starting empty)", path,
		              strerror(errno));
	}
	if (pthread_create(&c->thread, NULL, writer_main, c) == 0)
		c->thread_running = true;
	else
		util_log_warn("verify cache file %s: no writer thread; memory only", path);
	return c;
}

/* smtp_verify_cache_free - flush, join, free. */
void smtp_verify_cache_free(struct smtp_verify_cache *c)
{
	if (c == NULL)
		return;
	if (c->thread_running) {
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	}
	while (c->oldest != NULL)
		cache_remove(c, c->oldest);
	free(c->buckets);
	util_buf_free(&c->append);
	free(c->rewrite);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c->path);
	free(c);
}

/* smtp_verify_cache_get - a live answer, or PENDING (= not cached). */
enum smtp_verify_result smtp_verify_cache_get(struct smtp_verify_cache *c, const char *addr,
                                              int64_t now)
{
	char key[SMTP_VERIFY_ADDR_MAX + 1];
	struct cache_entry *e;

	if (!cache_lower(addr, key, sizeof(key)))
		return SMTP_VERIFY_PENDING;
	e = cache_find(c, key);
	if (e == NULL)
		return SMTP_VERIFY_PENDING;
	if (e->expires <= now) {
		cache_remove(c, e);
		return SMTP_VERIFY_PENDING;
	}
	return e->ok ? SMTP_VERIFY_OK : SMTP_VERIFY_UNKNOWN;
}

/* smtp_verify_cache_put - remember, and queue the line for the file. */
void smtp_verify_cache_put(struct smtp_verify_cache *c, const char *addr, bool ok, int64_t expires)
{
	char key[SMTP_VERIFY_ADDR_MAX + 1];

	if (!cache_lower(addr, key, sizeof(key)))
		return;
	cache_set(c, key, ok, expires);
	if (!c->thread_running)
		return;
	c->nlines++;
	pthread_mutex_lock(&c->mu);
	if (c->nlines > 1000 && c->nlines > 2 * c->n) {
		/* mostly dead lines: write a fresh image; it holds this
		 * answer, so what was waiting to be appended is moot */
		free(c->rewrite);
		c->rewrite = cache_image(c, &c->rewrite_len);
		util_buf_reset(&c->append);
		c->nlines = c->n + 1;
	} else {
		util_buf_printf(&c->append, "%c %lld %s\n", ok ? 'P' : 'N', (long long)expires,
		                key);
	}
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* smtp_verify_cache_set_max - a smaller cache drops its oldest answers. */
void smtp_verify_cache_set_max(struct smtp_verify_cache *c, size_t max)
{
	c->max = max > 0 ? max : 1;
	while (c->n > c->max && c->oldest != NULL)
		cache_remove(c, c->oldest);
}

/* smtp_verify_cache_count - live and expired-but-not-yet-dropped entries. */
size_t smtp_verify_cache_count(const struct smtp_verify_cache *c)
{
	return c->n;
}

/* smtp_verify_result_str - for logs and metrics. */
const char *smtp_verify_result_str(enum smtp_verify_result r)
{
	switch (r) {
	case SMTP_VERIFY_OK:
		return "ok";
	case SMTP_VERIFY_UNKNOWN:
		return "unknown";
	case SMTP_VERIFY_UNAVAILABLE:
		return "unavailable";
	default:
		return "pending";
	}
}
