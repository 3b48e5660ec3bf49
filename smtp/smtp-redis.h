/*
 * smtp-redis.h - state shared by a fleet of gateways in Redis/Valkey
 * (issue 17, [state]): asynchronous, pipelined commands on a small pool of
 * connections attached to the event loop, a deadline per command, and fail
 * open (callback with SMTP_REDIS_FAILED) when the server is down or slow.
 */
#ifndef MXGATE_SMTP_REDIS_H
#define MXGATE_SMTP_REDIS_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"

#define SMTP_REDIS_FAILED    (-1) /* no answer: down, slow, error - fail open */
#define SMTP_REDIS_CANCELLED (-2) /* shutting down: free your context, touch nothing */

struct smtp_redis;

/* count: the key's count in its window (>= 0), or SMTP_REDIS_FAILED /
 * SMTP_REDIS_CANCELLED; left: seconds left in the window.  Called exactly
 * once per accepted smtp_redis_hit, never from inside smtp_redis_hit. */
typedef void (*smtp_redis_hit_cb)(void *arg, int64_t count, int64_t left);

/* smtp_redis_new - NULL when cfg has no [state] redis (in-process state). */
struct smtp_redis *smtp_redis_new(struct event_base *base, const struct config *cfg);
/* smtp_redis_free - pending callbacks get SMTP_REDIS_CANCELLED; NULL is a no-op. */
void smtp_redis_free(struct smtp_redis *st);
/* smtp_redis_hit - INCRBY key by and EXPIRE it on the first hit (one Lua
 * script, atomic), window seconds; by 0 only reads the count (0 for a key
 * not there, nothing created).  0 = cb will be called; -1 = failed at once
 * (the server is known to be down), no callback: fail open. */
int smtp_redis_hit(struct smtp_redis *st, const char *key, int64_t window, int64_t by,
                   smtp_redis_hit_cb cb, void *arg);

struct redisReply;
/* r: the answer (an error reply included), or NULL when there is none:
 * cancelled is then true when shutting down (touch nothing), false when
 * failed (down, deadline passed: fail open). */
typedef void (*smtp_redis_eval_cb)(void *arg, const struct redisReply *r, bool cancelled);

/* smtp_redis_eval - EVAL script with nkeys keys (prefixed with key_prefix)
 * and nargs arguments.  0 = cb will be called once (never from inside this
 * call); -1 = failed at once (down), no callback. */
int smtp_redis_eval(struct smtp_redis *st, const char *script, size_t nkeys,
                    const char *const *keys, size_t nargs, const char *const *args,
                    smtp_redis_eval_cb cb, void *arg);

#endif
