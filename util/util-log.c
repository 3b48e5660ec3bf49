/*
 * util-log.c - the process log: one line per call, text or JSON, to stderr
 * or an appended file.
 *
 * Text:  "2026-11-25T07:55:44.123Z mxgate[1234]: INFO msg"
 * JSON:  {"ts":"2026-11-25T07:55:44.123Z","level":"info","pid":1234,
 *         "session":"...","queue_id":"...","event":"queued","client":"...",...}
 *        (the message's key=value tokens as members, util-logjson.c)
 *
 * Ownership: the module owns the log file descriptor (closed when a new one is
 * installed); callers own nothing.  Each line is formatted into a stack buffer
 * and written with a single write(2) (O_APPEND), so lines from different
 * threads or processes never interleave.
 *
 * Diagnostics: a message longer than the line buffer is truncated and ends
 * in "..."; control characters in text mode are replaced by '?' and JSON
 * strings are escaped, so a network-supplied string can never forge a
 * second log line or member.  Write errors
 * are ignored: there is nowhere left to report them.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192 /* one formatted line, including the prefix */
#define LOG_MSG_MAX  4096 /* the caller's message before escaping */

static atomic_int log_level = UTIL_LOG_INFO;
static atomic_int log_format = UTIL_LOG_TEXT;
static atomic_int log_fd = STDERR_FILENO;
static char *log_path; /* the file, for util_log_reopen; NULL = stderr */

static const char *const log_text_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const log_json_names[] = {"error", "warn", "info", "debug"};

/* util_log_init - choose level, format and sink (stderr or appended file). */
int util_log_init(enum util_log_level level, enum util_log_format format, const char *path)
{
	int fd = STDERR_FILENO;
	int old;

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd == -1)
			return -1;
	}
	atomic_store(&log_level, (int)level);
	atomic_store(&log_format, (int)format);
	old = atomic_exchange(&log_fd, fd);
	if (old != STDERR_FILENO && old != fd)
		close(old);
	char *copy = path != NULL ? util_xstrdup(path) : NULL;
	free(log_path);
	log_path = copy;
	return 0;
}

/* util_log_reopen - open the log file's path again (after logrotate moved
 * it) and put it under the descriptor number writers use: dup3() swaps it
 * atomically, so a line written meanwhile by a worker thread goes to the
 * old or the new file, never to a closed descriptor.  stderr: nothing to
 * do.  0, or -1 with errno (the old file stays in use). */
int util_log_reopen(void)
{
	int fd, cur = atomic_load(&log_fd);

	if (log_path == NULL || cur == STDERR_FILENO)
		return 0;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	if (dup3(fd, cur, O_CLOEXEC) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	return 0;
}

/* util_log_path - the log file, or NULL for stderr. */
const char *util_log_path(void)
{
	return log_path;
}

/* util_log_set_level - change the minimum level (e.g. on reload). */
void util_log_set_level(enum util_log_level level)
{
	atomic_store(&log_level, (int)level);
}

/* util_log_set_format - text or json from the next line on (reload). */
void util_log_set_format(enum util_log_format format)
{
	atomic_store(&log_format, (int)format);
}

/* util_log_enabled - would a line at level be written? */
bool util_log_enabled(enum util_log_level level)
{
	return (int)level <= atomic_load(&log_level);
}

/* log_timestamp - ISO 8601 UTC with milliseconds into out (>= 96 bytes, to keep the compiler sure).
 */
static void log_timestamp(char *out, size_t outlen)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(ts.tv_nsec / 1000000 % 1000));
}

/* log_put - append one byte if there is room (keeps one byte for '\n'). */
static void log_put(char *line, size_t *len, char c)
{
	if (*len < LOG_LINE_MAX - 1)
		line[(*len)++] = c;
}

/* log_puts - append a NUL-terminated string, truncating. */
static void log_puts(char *line, size_t *len, const char *s)
{
	while (*s != '\0')
		log_put(line, len, *s++);
}

/* ---- recent errors, for `mxgate status` (issue 7) */

#define LOG_RECENT 8
#define LOG_RECENT_LEN 240
static pthread_mutex_t recent_lock = PTHREAD_MUTEX_INITIALIZER;
static char recent[LOG_RECENT][LOG_RECENT_LEN];
static unsigned recent_next;   /* total remembered; slot = recent_next % LOG_RECENT */

/* log_remember - keep the last LOG_RECENT warnings and errors. */
static void log_remember(const char *ts, const char *level, const char *msg)
{
	pthread_mutex_lock(&recent_lock);
	char *slot = recent[recent_next++ % LOG_RECENT];
	size_t n = (size_t)snprintf(slot, LOG_RECENT_LEN, "%.30s %.5s ", ts, level);
	if (n < LOG_RECENT_LEN)
		snprintf(slot + n, LOG_RECENT_LEN - n, "%.*s", (int)(LOG_RECENT_LEN - 1 - n), msg);
	for (char *p = slot; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = '?';
	pthread_mutex_unlock(&recent_lock);
}

/* util_log_recent - the last warnings and errors, oldest first, one per line. */
void util_log_recent(struct util_buf *out, const char *prefix)
{
	pthread_mutex_lock(&recent_lock);
	unsigned n = recent_next < LOG_RECENT ? recent_next : LOG_RECENT;
	for (unsigned i = recent_next - n; i < recent_next; i++)
		util_buf_printf(out, "%s%s\n", prefix, recent[i % LOG_RECENT]);
	pthread_mutex_unlock(&recent_lock);
}

/* util_vlog - format and write one line with a single write(2). */
void util_vlog(enum util_log_level level, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	char line[LOG_LINE_MAX];
	char ts[96];
	char pid[32];
	size_t len = 0;
	int lvl = (int)level;
	int n;
	int saved_errno = errno;

	if (!util_log_enabled(level))
		return;
	if (lvl < UTIL_LOG_ERR || lvl > UTIL_LOG_DEBUG)
		lvl = UTIL_LOG_ERR;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		snprintf(msg, sizeof(msg), "(unformattable log message)");
	else if ((size_t)n >= sizeof(msg))
		memcpy(msg + sizeof(msg) - 4, "...", 4);
	log_timestamp(ts, sizeof(ts));
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());

	if (atomic_load(&log_format) == UTIL_LOG_JSON) {
		/* structured: the key=value message split into members
		 * (util-logjson.c); always a complete object */
		len = util_log_json_line(line, LOG_LINE_MAX - 1, ts, log_json_names[lvl],
		                         (long)getpid(), msg);
	} else {
		const char *s;

		log_puts(line, &len, ts);
		log_puts(line, &len, " mxgate[");
		log_puts(line, &len, pid);
		log_puts(line, &len, "]: ");
		log_puts(line, &len, log_text_names[lvl]);
		log_put(line, &len, ' ');
		for (s = msg; *s != '\0'; s++) {
			unsigned char c = (unsigned char)*s;
			log_put(line, &len, (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c);
		}
	}
	line[len++] = '\n';
	if (lvl <= UTIL_LOG_WARN)
		log_remember(ts, log_json_names[lvl], msg);
	(void)util_write_all(atomic_load(&log_fd), line, len);
	errno = saved_errno;
}

/* util_log - printf-like front end of util_vlog. */
void util_log(enum util_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	util_vlog(level, fmt, ap);
	va_end(ap);
}

/* util_fatal - log at error level and exit(1); start-up only (STYLE rule 6). */
void util_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	util_vlog(UTIL_LOG_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
