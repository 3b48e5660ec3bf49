/*
 * smtp-verify-internal.h - recipient verification against the downstream
 * (issue 11): the answer cache with its file (smtp-verify-cache.c) and the
 * RCPT-time SMTP callout (smtp-verify.c).  Used by the SMTP server, the unit
 * tests and the fuzz target; not for use outside smtp/.
 *
 * Threads: everything runs on the loop thread, except the cache's writer
 * thread, which only ever sees byte buffers handed to it under its mutex.
 */
#ifndef MX_SMTP_VERIFY_INTERNAL_H
#define MX_SMTP_VERIFY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "policy.h"

enum smtp_verify_result {
	SMTP_VERIFY_PENDING = 0, /* a probe runs; the callback tells */
	SMTP_VERIFY_OK,          /* the downstream accepts the recipient */
	SMTP_VERIFY_UNKNOWN,     /* the downstream refused it with 5xx */
	SMTP_VERIFY_UNAVAILABLE, /* could not ask: down, 4xx, timeout, too many probes */
};
const char *smtp_verify_result_str(enum smtp_verify_result r);

/* ------------------------------------------------------------ cache (smtp-verify-cache.c) */

/* The file: "mxgate-verify 1" on the first line, then one answer per line,
 * "P EXPIRES ADDRESS" (positive) or "N EXPIRES ADDRESS" (negative), EXPIRES
 * in seconds since the epoch, ADDRESS lower-case.  A later line for the same
 * address wins.  Answers are appended as they come; when the file holds
 * twice the live entries it is rewritten (temp file + rename).  The file is
 * only a cache: a line that does not parse is skipped, losing the file
 * costs probes, never mail. */
#define SMTP_VERIFY_CACHE_MAGIC "mxgate-verify 1"
#define SMTP_VERIFY_ADDR_MAX    256

struct smtp_verify_cache;

/* smtp_verify_cache_new - an empty cache of at most max entries; path (may be
 * NULL = memory only) is read now (start-up: a blocking read is fine there)
 * and later written by a writer thread, never by the loop.  Caller frees
 * with smtp_verify_cache_free(). */
struct smtp_verify_cache *smtp_verify_cache_new(const char *path, size_t max, int64_t now);
/* smtp_verify_cache_free - write what is pending, stop the writer; NULL ok. */
void smtp_verify_cache_free(struct smtp_verify_cache *c);
/* smtp_verify_cache_load - parse a file image (pure but for the entries it
 * adds); returns the number of live entries taken.  Bounded: lines longer
 * than an address line are skipped, expired answers are not kept. */
size_t smtp_verify_cache_load(struct smtp_verify_cache *c, const char *text, size_t len,
                              int64_t now);
/* smtp_verify_cache_get - OK, UNKNOWN, or PENDING for "not cached" (or
 * expired, which also drops the entry).  addr is matched case-insensitively. */
enum smtp_verify_result smtp_verify_cache_get(struct smtp_verify_cache *c, const char *addr,
                                              int64_t now);
/* smtp_verify_cache_put - remember an OK/UNKNOWN answer until expires; the
 * oldest entry goes when the cache is full.  Queued for the file. */
void smtp_verify_cache_put(struct smtp_verify_cache *c, const char *addr, bool ok, int64_t expires);
void smtp_verify_cache_set_max(struct smtp_verify_cache *c, size_t max);
size_t smtp_verify_cache_count(const struct smtp_verify_cache *c);

/* ------------------------------------------------------------ callout (smtp-verify.c) */

struct smtp_verifier;

/* The answer for a RCPT that waited (loop thread, later than the lookup).
 * addr is borrowed for the call. */
typedef void (*smtp_verify_cb)(void *arg, uint64_t sid, const char *addr,
                               enum smtp_verify_result r);

/* smtp_verifier_new - cfg and dns (may be NULL: numeric hosts only) are
 * borrowed.  The cache file is [verify] cache_file, by default
 * <queue dir>/verify.cache. */
struct smtp_verifier *smtp_verifier_new(struct event_base *base, const struct config *cfg,
                                        struct policy_dns *dns, smtp_verify_cb cb, void *arg);
/* smtp_verifier_set_config - after a reload (limits, TTLs; new probes use
 * the new routes, running ones keep their copy). */
void smtp_verifier_set_config(struct smtp_verifier *v, const struct config *cfg);
/* smtp_verifier_free - abandons running probes (their sessions are gone by
 * then); NULL is a no-op. */
void smtp_verifier_free(struct smtp_verifier *v);
/* smtp_verify_lookup - the cached answer for addr on route r, else start a
 * probe (or join the one running for addr) and return PENDING: the callback
 * then brings the answer for session sid.  UNAVAILABLE at once when
 * max_probes are running, or when the probes that client (its IPv4 address
 * or IPv6 /64, as text) started fill its share, a quarter of max_probes (at
 * least one). */
enum smtp_verify_result smtp_verify_lookup(struct smtp_verifier *v, const struct config_route *r,
                                           const char *addr, const char *client, uint64_t sid);

#endif
