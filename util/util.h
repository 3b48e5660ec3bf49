/*
 * util.h - the bottom layer of mxgate: logging, queue ids, small string and
 * address helpers, CIDR lists.  Nothing here knows about SMTP, the queue or
 * the config file; every other module may include it.
 *
 * Ownership: functions returning char * return a malloc'd string the caller
 * frees with free(); *_free(NULL) is always a no-op.
 */
#ifndef MX_UTIL_H
#define MX_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define UTIL_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* "not yet" for non-blocking steps (STYLE rule 5). */
#define GW_AGAIN (-2)

/* ---------------------------------------------------------------- logging */

enum util_log_level { UTIL_LOG_ERR = 0, UTIL_LOG_WARN, UTIL_LOG_INFO, UTIL_LOG_DEBUG };
enum util_log_format { UTIL_LOG_TEXT = 0, UTIL_LOG_JSON };

/* util_log_init - set the minimum level and format; the sink is stderr, or the
 * file at path (appended) when path is not NULL.  Returns 0/-1. */
int util_log_init(enum util_log_level level, enum util_log_format format, const char *path);
/* util_log_reopen - reopen the file after log rotation (SIGUSR1, `mxgate
 * reopen-logs`); the new file takes the old one's descriptor atomically.
 * 0 (also when logging to stderr), or -1 with errno. */
int util_log_reopen(void);
/* util_log_path - the log file given to util_log_init, or NULL (stderr). */
const char *util_log_path(void);
void util_log_set_level(enum util_log_level level);
void util_log_set_format(enum util_log_format format);
bool util_log_enabled(enum util_log_level level);
/* util_log - one line "LEVEL msg" (text) or one JSON object whose members
 * are the message's key=value tokens (json, util_log_json_line).
 * Lines are written with one write(2), so threads never interleave.  The
 * message is expected in "id key=value key=value" form (STYLE rule 8). */
void util_log(enum util_log_level level, const char *fmt, ...) UTIL_PRINTF(2, 3);
void util_vlog(enum util_log_level level, const char *fmt, va_list ap) UTIL_PRINTF(2, 0);
#define util_log_err(...) util_log(UTIL_LOG_ERR, __VA_ARGS__)
#define util_log_warn(...) util_log(UTIL_LOG_WARN, __VA_ARGS__)
#define util_log_info(...) util_log(UTIL_LOG_INFO, __VA_ARGS__)
#define util_log_debug(...)                                                    \
	do {                                                                   \
		if (util_log_enabled(UTIL_LOG_DEBUG))                          \
			util_log(UTIL_LOG_DEBUG, __VA_ARGS__);                 \
	} while (0)
/* Structured log lines (util-logjson.c).  A message token: key=value, or a
 * bare word (keylen 0).  val excludes surrounding quotes and parentheses;
 * quote is '"', '(', '<' (val keeps the angle brackets) or 0. */
struct util_logkv {
	const char *key;
	size_t keylen;
	const char *val;
	size_t vallen;
	char quote;
};
bool util_logkv_next(const char *msg, size_t len, size_t *pos, struct util_logkv *kv);
/* util_log_json_line - the JSON object for one message, always complete;
 * returns its length (< cap, cap >= 128). */
size_t util_log_json_line(char *out, size_t cap, const char *ts, const char *level, long pid,
                          const char *msg);
/* util_json_escape - append s[0..n) as a JSON string body; false when cap
 * stopped it (never half an escape). */
bool util_json_escape(char *out, size_t cap, size_t *len, const char *s, size_t n);
/* util_json_flat_parse - a flat JSON object (scalars, arrays of scalars);
 * cb per member (per element of an array).  0/-1. */
int util_json_flat_parse(const char *s, size_t len,
                         void (*cb)(void *ctx, const char *key, const char *val), void *ctx);
/* util_fatal - start-up only (STYLE rule 6): log and exit(1). */
void util_fatal(const char *fmt, ...) UTIL_PRINTF(1, 2) __attribute__((noreturn));

/* ---------------------------------------------------------------- queue ids */

/* Queue ids are 16 upper-case hex digits: 13 of microseconds since the epoch
 * followed by 3 of a per-microsecond sequence, so they sort by arrival time
 * and are unique within one process (the generator never goes backwards, even
 * when the wall clock does).  Thread-safe. */
#define UTIL_QID_LEN 16
void util_qid_new(char out[UTIL_QID_LEN + 1]);
bool util_qid_is_valid(const char *s);
/* util_session_id_next - 64-bit session id, unique across restarts (start
 * time in the upper 32 bits), increasing within a run, never 0. */
uint64_t util_session_id_next(void);

/* ---------------------------------------------------------------- strings */

void *util_xmalloc(size_t n);            /* abort()s on ENOMEM */
void *util_xcalloc(size_t n, size_t m);
void *util_xrealloc(void *p, size_t n);
char *util_xstrdup(const char *s);
char *util_xstrndup(const char *s, size_t n);
char *util_xasprintf(const char *fmt, ...) UTIL_PRINTF(1, 2);
bool util_strcaseeq(const char *a, const char *b);
/* util_is_ldh_name - s is a host name of LDH labels (RFC 5890 2.3.1:
 * letters, digits, hyphen; 1-63 octets each, 253 in all, no trailing dot).
 * Every DNS name that can reach a header field or a log line must pass:
 * DNS labels may hold any octet (CR, LF, space, parentheses). */
bool util_is_ldh_name(const char *s);
/* util_seterr - printf into err when err != NULL and errlen > 0. */
void util_seterr(char *err, size_t errlen, const char *fmt, ...) UTIL_PRINTF(3, 4);
/* util_domain_of - pointer into addr just after the last '@', or NULL. */
const char *util_domain_of(const char *addr);
/* util_now_us - wall clock in microseconds; util_mono_ms - monotonic ms. */
int64_t util_now_us(void);
int64_t util_mono_ms(void);
/* util_mono_deadline - *out = CLOCK_MONOTONIC now (or *from) + ms, for
 * pthread_cond_timedwait on a condition variable with a monotonic clock. */
struct timespec;
void util_mono_deadline(const struct timespec *from, int64_t ms, struct timespec *out);
/* util_rfc5322_date - "Wed, 25 Nov 2026 07:55:44 +0000" for t (seconds). */
void util_rfc5322_date(int64_t t, char out[64]);

/* Growable byte buffer (used for header blocks, replies, files). */
struct util_buf {
	char *data;   /* NUL-terminated; owned */
	size_t len;
	size_t cap;
};
void util_buf_init(struct util_buf *b);
void util_buf_free(struct util_buf *b);
void util_buf_reset(struct util_buf *b);
void util_buf_add(struct util_buf *b, const void *p, size_t n);
void util_buf_adds(struct util_buf *b, const char *s);
void util_buf_printf(struct util_buf *b, const char *fmt, ...) UTIL_PRINTF(2, 3);

/* A list of owned strings. */
struct util_strlist {
	char **v;
	size_t n;
};
void util_strlist_add(struct util_strlist *l, const char *s);
void util_strlist_free(struct util_strlist *l);
bool util_strlist_has_case(const struct util_strlist *l, const char *s);

/* ---------------------------------------------------------------- addresses */

/* A socket address big enough for IPv4 and IPv6. */
struct util_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};
/* util_addr_str - "192.0.2.1" / "2001:db8::1" (no port) into out. */
const char *util_addr_str(const struct util_addr *a, char *out, size_t outlen);
int util_addr_port(const struct util_addr *a);
/* util_addr_from_sockaddr - copy; IPv4-mapped IPv6 becomes plain IPv4. */
void util_addr_from_sockaddr(struct util_addr *a, const struct sockaddr *sa, socklen_t len);
/* util_hostport_parse - "host:port", "[v6]:port", "v4", "[v6]" (default_port
 * used when no port).  host is written without brackets.  Returns 0/-1 with a
 * message in err. */
int util_hostport_parse(const char *s, int default_port, char *host, size_t hostlen,
			int *port, char *err, size_t errlen);
/* util_addr_parse_numeric - numeric host + port into a util_addr.  0/-1. */
int util_addr_parse_numeric(const char *host, int port, struct util_addr *out);
bool util_addr_is_loopback(const struct util_addr *a);

/* ---------------------------------------------------------------- CIDR */

struct util_cidr {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];    /* network address, host bits cleared */
	int prefix;          /* 0..32 or 0..128 */
};
/* util_cidr_parse - "192.0.2.0/24", "2001:db8::/32", or a bare address
 * (= /32 or /128).  Host bits set beyond the prefix are an error ("did you
 * mean 192.0.2.0/24?").  Returns 0/-1 with a message in err. */
int util_cidr_parse(const char *s, struct util_cidr *out, char *err, size_t errlen);
/* util_cidr_match - IPv4-mapped IPv6 addresses match IPv4 entries. */
bool util_cidr_match(const struct util_cidr *c, const struct util_addr *a);
void util_cidr_format(const struct util_cidr *c, char *out, size_t outlen);

struct util_cidr_list {
	struct util_cidr *v;
	size_t n;
};
void util_cidr_list_add(struct util_cidr_list *l, const struct util_cidr *c);
bool util_cidr_list_match(const struct util_cidr_list *l, const struct util_addr *a);
void util_cidr_list_free(struct util_cidr_list *l);

/* ---------------------------------------------------------------- files */

/* util_fsync_dir - open the directory, fsync it, close.  0/-1 (errno set). */
int util_fsync_dir(const char *path);
/* util_mkdir_p - create path and parents with mode.  0/-1. */
int util_mkdir_p(const char *path, int mode);
/* util_write_all - write the whole buffer, retrying on EINTR.  0/-1. */
int util_write_all(int fd, const void *p, size_t n);
/* util_read_file - whole small file into a malloc'd NUL-terminated buffer. */
char *util_read_file(const char *path, size_t max, size_t *len_out);

/* ---------------------------------------------------------------- RFC 5322 headers */

/* One header field of a header block (CRLF line endings).  All pointers are
 * borrowed from the block. */
struct util_hdr_field {
	const char *name;    /* field name, not NUL-terminated */
	size_t name_len;
	const char *value;   /* after the ':' up to (not including) the final CRLF, folding kept */
	size_t value_len;
	const char *raw;     /* the whole field including continuation lines and the final CRLF */
	size_t raw_len;
};
/* util_hdr_next - the field starting at *pos in block[0..len); advances *pos.
 * Returns 1 when a field was found, 0 at the end of the block (or at the empty
 * line that ends it), -1 on a malformed line (no colon, or a name with
 * characters outside RFC 5322 ftext). */
int util_hdr_next(const char *block, size_t len, size_t *pos, struct util_hdr_field *f);
/* util_hdr_name_is - case-insensitive field-name comparison. */
bool util_hdr_name_is(const struct util_hdr_field *f, const char *name);

/* ---------------------------------------------------------------- metrics (issue 7: production) */

/* A process-wide registry of Prometheus metrics (util-metrics.c).  Families
 * are declared once at start-up; modules update them by name with one-line
 * calls; updating an undeclared name is a no-op.  A family has at most one
 * label; at most UTIL_METRICS_MAX_SERIES label values are kept, later ones
 * count as "other".  Thread-safe. */
enum util_metric_kind { UTIL_METRIC_COUNTER = 0, UTIL_METRIC_GAUGE, UTIL_METRIC_HISTOGRAM };
#define UTIL_METRICS_MAX_SERIES 32
/* util_metrics_define - label: label name or NULL; bounds: histogram bucket
 * upper bounds, ascending (+Inf implied), histograms have no label.  Defining
 * an existing name again is a no-op.  0/-1 (bad name, too many families). */
int util_metrics_define(const char *name, enum util_metric_kind kind, const char *help,
			const char *label, const double *bounds, size_t nbounds);
/* label_value: NULL for a family without a label.  Counters only go up. */
void util_metrics_inc(const char *name, const char *label_value);
void util_metrics_add(const char *name, const char *label_value, double v);
void util_metrics_set(const char *name, const char *label_value, double v);   /* gauges */
void util_metrics_observe(const char *name, double v);                        /* histograms */
/* util_metrics_value - a counter/gauge value (label_value NULL: the sum over
 * every label value), or a histogram's count; 0 when unknown. */
double util_metrics_value(const char *name, const char *label_value);
/* util_metrics_render - append every family in Prometheus text format 0.0.4. */
void util_metrics_render(struct util_buf *out);
/* util_metrics_reset - forget every family (tests). */
void util_metrics_reset(void);
/* util_log_recent - the last few warnings and errors logged (util-log.c),
 * oldest first, one line each, prefixed with prefix (`mxgate status`). */
void util_log_recent(struct util_buf *out, const char *prefix);

/* ---------------------------------------------------------------- worker pool (util-pool.c) */
/* A bounded pool of worker threads: work(arg) on a worker, then done(arg)
 * on the loop thread through an event the pool adds to the loop's base. */
struct event_base;
struct util_pool;
typedef void (*util_pool_fn)(void *arg);
/* util_pool_new - nthreads workers, at most qmax jobs waiting.  drop(arg)
 * (may be NULL) is called by util_pool_free() for every job whose done()
 * never ran.  base is borrowed.  Caller frees with util_pool_free(); NULL
 * with err on failure. */
struct util_pool *util_pool_new(struct event_base *base, int nthreads, size_t qmax,
                                util_pool_fn drop, char *err, size_t errlen);
/* util_pool_free - stop; workers finish the job they hold and are joined;
 * unfinished jobs go to drop().  NULL is a no-op.  Loop thread. */
void util_pool_free(struct util_pool *p);
/* util_pool_submit - loop thread: queue work(arg) (NULL: no work, only the
 * completion), then done(arg) on the loop.  arg is borrowed until done or
 * drop.  -1 when the queue is full (nothing queued). */
int util_pool_submit(struct util_pool *p, util_pool_fn work, util_pool_fn done, void *arg);
/* util_pool_cancel - loop thread: arg's job, if still waiting, will not
 * run; its done() still comes.  true when it was found waiting. */
bool util_pool_cancel(struct util_pool *p, void *arg);
/* util_pool_stats - jobs waiting and jobs on a worker now (NULL: skip). */
void util_pool_stats(struct util_pool *p, size_t *queued, size_t *running);

/* ---------------------------------------------------------------- bounded TTL map (util-ttlmap.c) */
/* Keys (bytes) to fixed-size values with an expiry, at most capacity
 * entries: a full map evicts (expired first, else approximated LRU over a
 * random sample; O(1)), counted in mxgate_state_evictions_total{name}. */
struct util_ttlmap;
/* util_ttlmap_new - name labels the metric and log; values are vsize bytes
 * (zeroed when created).  Caller frees with util_ttlmap_free() (NULL ok). */
struct util_ttlmap *util_ttlmap_new(const char *name, size_t capacity, size_t vsize);
void util_ttlmap_free(struct util_ttlmap *m);
/* util_ttlmap_get - the live value of key (marks it used), or NULL; an
 * expired entry is removed. */
void *util_ttlmap_get(struct util_ttlmap *m, const void *key, size_t klen, int64_t now);
/* util_ttlmap_put - the live value of key, or a new zeroed one (*fresh
 * true; its expiry is now until the caller sets *util_ttlmap_expires()),
 * evicting one entry when full.  Never NULL. */
void *util_ttlmap_put(struct util_ttlmap *m, const void *key, size_t klen, int64_t now,
                      bool *fresh);
/* util_ttlmap_expires - the expiry of the entry holding value (writable). */
int64_t *util_ttlmap_expires(void *value);
size_t util_ttlmap_count(const struct util_ttlmap *m);
/* util_ttlmap_evictions - live entries evicted so far. */
uint64_t util_ttlmap_evictions(const struct util_ttlmap *m);
/* util_ttlmap_foreach - every entry (expired ones too); fn must not change
 * the map. */
void util_ttlmap_foreach(struct util_ttlmap *m,
                         void (*fn)(void *arg, const void *key, size_t klen, void *value,
                                    int64_t expires),
                         void *arg);

/* util-redisurl.c - [state] redis: redis://HOST[:PORT][/DB] or unix:/PATH[?db=N] */
struct util_redis_url {
	char host[256];   /* "" for a unix socket */
	int port;
	char path[108];   /* unix socket, or "" */
	int db;
};
int util_redis_url_parse(const char *url, struct util_redis_url *out, char *err, size_t errlen);

#endif
