/*
 * queue.h - the durable on-disk queue (store) and the delivery scheduler.
 *
 * Layout under queue_dir (docs/queue-format.md has the byte-level format):
 *   incoming/  ID.msg being received; never acknowledged; wiped at start-up
 *   msg/       ID      committed message bytes (as received + nothing else)
 *   active/    ID      envelope of a message due for delivery
 *   deferred/  ID      envelope of a message waiting for its next attempt
 *   hold/      ID      envelope of a message held by the postmaster
 *   quarantine/ ID     envelope of a message a content verdict quarantined
 *                      (issue 13): never delivered until `mxgate quarantine
 *                      release`, expired after [queue] quarantine_retention
 *   corrupt/   unparsable or duplicate envelopes (and their msg) set aside
 *              by the start-up scan or the scheduler; never deleted by mxgate
 * A message exists exactly when its envelope exists in one of the state
 * folders; a msg/ID without an envelope is an orphan of a crash before the
 * commit point and is removed at start-up.  The commit point is the rename of
 * the envelope into active/ (quarantine/ for a quarantined message) followed
 * by an fsync of that folder.
 *
 * Threads: every function here is called on the event-loop thread.  Blocking
 * work (fsync, rename batches) runs on the store's own I/O thread, which
 * groups concurrent commits into one directory fsync; completion callbacks
 * run on the loop thread (libevent with evthread_use_pthreads()).
 *
 * Ownership: queue_envelope_free() frees an envelope and everything in it;
 * functions that "take" an envelope or spool free it themselves.
 */
#ifndef MX_QUEUE_H
#define MX_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "util.h"

/* The state folders, in this order (the store's folder table follows it). */
enum queue_state { QUEUE_ACTIVE = 0, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_QUARANTINE };
#define QUEUE_STATE_LAST QUEUE_QUARANTINE
enum queue_rcpt_state { QUEUE_RCPT_PENDING = 0, QUEUE_RCPT_DONE, QUEUE_RCPT_FAILED };

struct queue_rcpt {
	char *addr;                    /* owned */
	enum queue_rcpt_state state;
	char *last_reply;              /* owned; last downstream reply or error, NULL if none */
};

struct queue_envelope {
	char id[UTIL_QID_LEN + 1];
	char *sender;                  /* owned; "" for the null sender <> */
	struct queue_rcpt *rcpts;      /* owned array */
	size_t nrcpts;
	char *client_addr;             /* owned; real client address (after PROXY) */
	char *client_name;             /* owned; reverse DNS name or NULL */
	char *helo;                    /* owned */
	char *tls;                     /* owned; "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL */
	char *prepend;                 /* owned; header lines (CRLF) put in front of the
	                                  message file on delivery: Received, A-R, ... */
	int64_t arrival;               /* seconds since the epoch */
	int arrival_us;                /* and microseconds (0..999999); 0 in
	                                  envelopes of builds before version 4 */
	int64_t size;                  /* bytes of msg/ID (not counting prepend) */
	bool smtputf8;                 /* client used SMTPUTF8: needs SMTPUTF8 downstream */
	bool eightbit;                 /* message has 8-bit bytes: needs 8BITMIME downstream */
	bool is_dsn;                   /* a bounce we generated: never bounced itself,
	                                  delivered through the outbound route */
	int attempts;
	int64_t next_attempt;          /* seconds since the epoch; 0 = now */
	bool delay_warned;             /* a delay DSN was already sent */
	char *last_error;              /* owned; summary of the last failed attempt */
	char *spf;                     /* owned; SPF result at ingress ("pass", "fail", ...)
	                                  or NULL when not evaluated */
	char *dmarc;                   /* owned; DMARC result at ingress, or NULL */
	char *quarantine_reason;       /* owned; why a content verdict quarantined it
	                                  ("virus", "spam", "policy", "attachment"),
	                                  NULL when it never was (issue 13) */
	char *quarantine_verdict;      /* owned; that verdict in words ("virus=Eicar-...",
	                                  "rspamd action=reject score=..."), or NULL */
};

/* queue_envelope_is_local - did mxgate itself originate the message (today:
 * a DSN)?  Such messages go out through the outbound route (config.h), never
 * through an inbound route. */
static inline bool queue_envelope_is_local(const struct queue_envelope *env)
{
	return env->is_dsn;
}

struct queue_envelope *queue_envelope_new(void);
void queue_envelope_free(struct queue_envelope *env);
struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env);
void queue_envelope_add_rcpt(struct queue_envelope *env, const char *addr);
/* Serialisation (pure; used by the store and by the unit tests).
 * queue_envelope_parse returns NULL and a message in err on a bad file.
 * QUEUE_ENVELOPE_MAX bounds an envelope file (the parser rejects longer
 * input before allocating; the store never reads more). */
#define QUEUE_ENVELOPE_MAX (4 * 1024 * 1024)
char *queue_envelope_serialize(const struct queue_envelope *env, size_t *len);
struct queue_envelope *queue_envelope_parse(const char *text, size_t len, char *err, size_t errlen);

/* ------------------------------------------------------------ store */

struct queue_store;

/* queue_store_open - create the folders if needed, wipe incoming/, remove
 * orphans, start the I/O thread.  fsync=false only for benchmarks.
 * Returns NULL with a message in err. */
struct queue_store *queue_store_open(const char *dir, bool fsync, struct event_base *base,
				     char *err, size_t errlen);
/* queue_store_close - waits for the I/O thread to finish pending jobs, then
 * runs their callbacks (on_commit + cb) before returning, so every job gets
 * exactly one callback; a job submitted from such a callback fails with
 * ESHUTDOWN.  Never call it from inside a store callback.  NULL is a no-op. */
void queue_store_close(struct queue_store *qs);
const char *queue_store_dir(const struct queue_store *qs);
/* queue_pool_size - removed files kept in free/ for reuse (queue-pool.c);
 * queue_pool_bytes - the disk they hold. */
size_t queue_pool_size(struct queue_store *qs);
int64_t queue_pool_bytes(struct queue_store *qs);

/* A message being received.  Writes go straight to incoming/ID.msg. */
struct queue_spool;
struct queue_spool *queue_spool_new(struct queue_store *qs);       /* NULL + errno on failure */
const char *queue_spool_id(const struct queue_spool *sp);
/* queue_spool_write - 0, or -1 with errno (ENOSPC/EDQUOT -> 452 4.3.1). */
int queue_spool_write(struct queue_spool *sp, const void *p, size_t n);
int64_t queue_spool_size(const struct queue_spool *sp);
/* queue_spool_open_read - a read-only descriptor of the spool file (for the
 * DKIM worker); the caller closes it.  -1 with errno on failure. */
int queue_spool_open_read(const struct queue_spool *sp);
void queue_spool_abort(struct queue_spool *sp);                     /* remove + free; NULL ok */

/* A pinned read descriptor of a spool file, for a reader that may still be
 * reading after the commit - even after delivery removed the message (the
 * report ingester, reports-ingest.c).  While pinned, the file is never
 * recycled through free/ (queue-pool.c): removing the message or aborting
 * the spool unlinks it instead, so the descriptor reads this message's bytes
 * and never those of the next message written over a recycled file.
 * queue_spool_pin - open incoming/ID.msg read-only and pin it (loop
 * thread); caller frees with queue_pin_free().  NULL with errno on failure.
 * queue_pin_fd - its descriptor (borrowed: queue_pin_free closes it).
 * queue_pin_free - close and unpin; any thread, before queue_store_close();
 * NULL is a no-op. */
struct queue_pin;
struct queue_pin *queue_spool_pin(const struct queue_spool *sp);
int queue_pin_fd(const struct queue_pin *pin);
void queue_pin_free(struct queue_pin *pin);

/* queue_commit - make the message durable: fsync the spool, rename it to
 * msg/ID, write the envelope (env->id is set to the spool id, env->size to
 * the spool size, env->arrival to now when 0), fsync, rename
 * into active/, fsync the folders.  Takes ownership of sp and env.  cb runs on
 * the loop thread: status 0 = durable (answer 250), -1 = failed with errno in
 * err (nothing left behind; answer 451/452).  Concurrent commits share one
 * fsync of each folder.  The scheduler's on_commit hook runs before cb. */
typedef void (*queue_commit_cb)(uint64_t cookie, int status, int err, const char *qid, void *arg);
void queue_commit(struct queue_store *qs, struct queue_spool *sp, struct queue_envelope *env,
		  queue_commit_cb cb, uint64_t cookie, void *arg);

/* queue_commit_quarantined - queue_commit into quarantine/ instead of
 * active/: the message is durable under the same rules but never delivered
 * until the postmaster releases it (issue 13).  env->quarantine_reason
 * should be set (the envelope records the verdict). */
void queue_commit_quarantined(struct queue_store *qs, struct queue_spool *sp,
                              struct queue_envelope *env, queue_commit_cb cb, uint64_t cookie,
                              void *arg);

/* queue_inject - commit a message we generated (a DSN): bytes in memory
 * (copied; env->id gets a new id, env->size = len). */
void queue_inject(struct queue_store *qs, struct queue_envelope *env, const void *msg, size_t len,
		  queue_commit_cb cb, uint64_t cookie, void *arg);

/* queue_store_on_commit - hook called (loop thread) with each newly
 * committed envelope (borrowed) and the state it was committed in (active,
 * or quarantine for queue_commit_quarantined) - the scheduler indexes it.  fn NULL
 * clears the hook (do so before freeing what arg points to). */
void queue_store_on_commit(struct queue_store *qs,
			   void (*fn)(const struct queue_envelope *env, enum queue_state st,
				      void *arg),
			   void *arg);

/* Completion of an envelope update, removal or set-aside: status 0 or -1. */
typedef void (*queue_done_cb)(int status, void *arg);

/* queue_store_scan - start-up only (blocking): call fn for every envelope in
 * active/, deferred/, hold/ and quarantine/.  Unparsable envelopes are
 * logged and moved aside to corrupt/, never deleted.  A message an older
 * mxgate quarantined into hold/ (queue_envelope_is_legacy_quarantine) is
 * first moved to quarantine/ (rename, fsync of both folders; logged
 * "ID queue op=migrate ...") and handed to fn as quarantined.  An envelope
 * that cannot be read (open or read fails: EMFILE, EIO, ... - the file may
 * be fine) stays where it is and is handed to unreadable (may be NULL) with
 * its file's mtime and the errno, so the caller can retry it.  env is
 * borrowed for the call. */
typedef void (*queue_scan_fn)(const struct queue_envelope *env, enum queue_state st, void *arg);
typedef void (*queue_scan_unreadable_fn)(const char *id, enum queue_state st, int64_t mtime,
					 int err, void *arg);
int queue_store_scan(struct queue_store *qs, queue_scan_fn fn, queue_scan_unreadable_fn unreadable,
		     void *arg);

/* queue_env_load - read one envelope (small file; loop thread).  0/-1 with
 * errno ENOENT (no such message), EINVAL (bad id), EBADMSG (the file is
 * there but is no valid envelope of this id: logged; see
 * queue_env_set_aside) or the errno of a failed open/read (EMFILE, EIO,
 * ...: logged; worth retrying).  On EBADMSG and read errors *st (when not
 * NULL) is the folder the file is in. */
int queue_env_load(struct queue_store *qs, const char *id, struct queue_envelope **out,
		   enum queue_state *st);
/* queue_env_set_aside - move an unparsable envelope (and its msg/ID) from
 * the folder of st into corrupt/ (I/O thread; logged, counted in
 * mxgate_queue_envelope_errors_total{error="corrupt"}); cb(status, arg)
 * on the loop thread, may be NULL. */
void queue_env_set_aside(struct queue_store *qs, const char *id, enum queue_state st,
			 queue_done_cb cb, void *arg);
/* queue_msg_path - path of msg/ID into out. */
void queue_msg_path(const struct queue_store *qs, const char *id, char *out, size_t outlen);

/* queue_env_update - durably replace the envelope (new file + fsync + rename
 * into the folder of state `to`, then unlink it from `from` if different,
 * fsync folders).  The envelope is serialised before the call returns (env
 * stays the caller's).  cb(status, arg) on the loop thread; cb may be NULL.
 * Jobs for one id run in submission order. */
void queue_env_update(struct queue_store *qs, const struct queue_envelope *env,
		      enum queue_state from, enum queue_state to, queue_done_cb cb, void *arg);
/* queue_msg_remove - remove envelope (first: the commit point) then msg;
 * the files are recycled through free/ (queue-pool.c). */
void queue_msg_remove(struct queue_store *qs, const char *id, enum queue_state from,
		      queue_done_cb cb, void *arg);
/* queue_msg_purge - the same, with the files unlinked, not recycled: a
 * postmaster's delete, whose bytes should not sit in free/. */
void queue_msg_purge(struct queue_store *qs, const char *id, enum queue_state from,
		     queue_done_cb cb, void *arg);

/* ------------------------------------------------------------ scheduler */

/* The scheduler keeps an in-memory index of every queued message (id, state,
 * next attempt) in a min-heap, built by one scan at start-up and updated on
 * commit and after each attempt: no directory rescan per tick. */
struct queue_sched;

/* Outcome of one delivery attempt for one recipient. */
enum queue_outcome { QUEUE_OUT_DONE = 0, QUEUE_OUT_DEFER, QUEUE_OUT_BOUNCE };

/* What the scheduler needs from a deliverer (implemented in smtp/ and wired
 * by the gateway, so queue/ never depends on smtp/). */
struct queue_delivery;   /* one attempt, owned by the scheduler */
struct queue_deliver_ops {
	/* start - deliver msg (prepend + file at msg_path) to rcpts[idx[i]] of
	 * env through route.  Must call queue_delivery_done() exactly once,
	 * later (never from inside start). */
	void (*start)(void *ctx, struct queue_delivery *d, const struct queue_envelope *env,
		      const size_t *idx, size_t nidx, const char *msg_path,
		      const struct config_route *route);
};
/* queue_delivery_result - record the outcome of rcpt idx (the reply text is
 * copied); then queue_delivery_done() once all are recorded.  Recipients not
 * given an outcome are deferred with the attempt's error. */
void queue_delivery_result(struct queue_delivery *d, size_t idx, enum queue_outcome out,
			   const char *reply);
void queue_delivery_done(struct queue_delivery *d, const char *error_or_null);

struct queue_sched *queue_sched_new(struct queue_store *qs, struct event_base *base,
				    const struct config *cfg, const struct queue_deliver_ops *ops,
				    void *ops_ctx);
/* queue_sched_set_config - reload: new schedule/routes/limits (borrowed; must
 * outlive the scheduler or the next call). */
void queue_sched_set_config(struct queue_sched *s, const struct config *cfg);
void queue_sched_free(struct queue_sched *s);
/* Stop starting new deliveries (SIGTERM); cb when in-flight ones are done. */
void queue_sched_drain(struct queue_sched *s, void (*cb)(void *arg), void *arg);

/* Postmaster operations (control socket).  Each returns 0, or -1 with a
 * message in err.  list/show write human-readable text into out. */
int queue_sched_list(struct queue_sched *s, struct util_buf *out);
int queue_sched_show(struct queue_sched *s, const char *id, struct util_buf *out, char *err, size_t errlen);
int queue_sched_flush(struct queue_sched *s, const char *id_or_null, char *err, size_t errlen);
int queue_sched_hold(struct queue_sched *s, const char *id, char *err, size_t errlen);
int queue_sched_release(struct queue_sched *s, const char *id, char *err, size_t errlen);
/* queue_sched_release_by - release naming who asked (e.g. "root").  The
 * `queue` operations (flush, hold, release, delete) refuse a quarantined
 * message with a hint to use `mxgate quarantine`; those go through the
 * queue_sched_quarantine_* functions below. */
int queue_sched_release_by(struct queue_sched *s, const char *id, const char *who, char *err,
                           size_t errlen);

/* The header field a quarantined message carries (smtp/ writes it, scan/
 * drops forged ones; the start-up scan recognises messages quarantined into
 * hold/ by older builds by it), and the one stamped on release. */
#define QUEUE_QUARANTINE_FIELD "X-Mxgate-Quarantine"
#define QUEUE_RELEASED_FIELD   "X-Mxgate-Released"
/* queue_sched_quarantine_list - quarantined messages, oldest first, one line
 * each ("ID age=Ns size=N reason=R from=<s> to=<r>,<r>") and a total;
 * filter "rcpt=A,sender=A,reason=R,older=SECONDS,newer=SECONDS" (any
 * subset, "" = all).  0, or -1 with a message (bad filter). */
int queue_sched_quarantine_list(struct queue_sched *s, const char *filter, struct util_buf *out,
                                char *err, size_t errlen);
/* queue_sched_quarantine_stats - the quarantine gauges, computed now: how
 * many messages stay in quarantine/ (a release or delete under way excluded),
 * their bytes, and the arrival of the oldest (0 when none). */
void queue_sched_quarantine_stats(const struct queue_sched *s, size_t *count, int64_t *bytes,
                                  int64_t *oldest_arrival);
/* queue_sched_is_quarantined - is id a message in quarantine/? */
bool queue_sched_is_quarantined(struct queue_sched *s, const char *id);
/* queue_sched_quarantine_release - deliver a quarantined message as it would
 * have been: its envelope moves to active/ with "X-Mxgate-Released: by=WHO;
 * at=DATE" added to the prepend; logged "ID status=released by=WHO
 * reason=quarantine".  Refuses (-1) a message not in quarantine. */
int queue_sched_quarantine_release(struct queue_sched *s, const char *id, const char *who,
                                   char *err, size_t errlen);
/* queue_sched_quarantine_delete - purge a quarantined message (logged
 * "ID status=deleted by=WHO reason=quarantine").  Refuses others. */
int queue_sched_quarantine_delete(struct queue_sched *s, const char *id, const char *who, char *err,
                                  size_t errlen);
/* queue_envelope_is_quarantined - does env->prepend hold our quarantine field? */
bool queue_envelope_is_quarantined(const struct queue_envelope *env);
/* queue_envelope_is_legacy_quarantine - was env quarantined into hold/ by an
 * older build: the quarantine field in its prepend, no release stamp, and
 * no quarantine-reason of its own? */
bool queue_envelope_is_legacy_quarantine(const struct queue_envelope *env);
/* queue_envelope_quarantine_reason - env->quarantine_reason, or for a legacy
 * envelope the reason= of its quarantine field (into buf); "-" when neither. */
const char *queue_envelope_quarantine_reason(const struct queue_envelope *env, char *buf,
                                             size_t buflen);
int queue_sched_delete(struct queue_sched *s, const char *id, char *err, size_t errlen);
size_t queue_sched_count(const struct queue_sched *s);
/* queue_sched_count_state - messages in one state (active, deferred, hold,
 * quarantine). */
size_t queue_sched_count_state(const struct queue_sched *s, enum queue_state st);
/* queue_sched_oldest - arrival of the oldest message not in quarantine, 0 if none. */
int64_t queue_sched_oldest(const struct queue_sched *s);

/* Backoff: delay before attempt number `attempt` (1 = the first retry), from
 * the configured schedule (the last entry repeats).  Pure. */
int64_t queue_backoff(const int64_t *schedule, size_t n, int attempt);

/* DSN composition (RFC 3464), pure: a multipart/report message from
 * `reporting_mta` to env->sender, reporting the recipients listed with their
 * status ("5.1.1") and diagnostic replies, with the original headers
 * (orig_headers, CRLF) attached as text/rfc822-headers.  action is "failed"
 * or "delayed".  Returns a malloc'd message (CRLF line endings). */
struct queue_dsn_rcpt {
	const char *addr;
	const char *status;       /* "5.1.1" */
	const char *diagnostic;   /* "smtp; 550 5.1.1 user unknown" or NULL */
};
/* queue_dsn_headers_cut - how many bytes of the header block h[0..len) a
 * DSN may carry back: all when len <= max, else the longest prefix of whole
 * header fields (a cut only before a line that does not start with SP/HTAB,
 * RFC 5322 2.2.3) that fits in max bytes; 0 when not even the first field
 * fits.  Keeps the gateway from reflecting attacker text to a victim. */
size_t queue_dsn_headers_cut(const char *h, size_t len, size_t max);
/* queue_dsn_suppress_reason - why no DSN may go to env's sender although it
 * is not the null sender: "spf_fail" / "dmarc_fail" when the ingress verdict
 * says the sender address is (almost certainly) forged, else NULL. */
const char *queue_dsn_suppress_reason(const struct queue_envelope *env);
char *queue_dsn_compose(const char *reporting_mta, const char *from_addr,
			const struct queue_envelope *env, const char *action,
			const struct queue_dsn_rcpt *rcpts, size_t nrcpts,
			const char *orig_headers, size_t orig_len, int64_t now, size_t *len_out);

#endif
