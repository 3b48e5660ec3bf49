/*
 * queue-sched-internal.h - the scheduler's in-memory index, shared by
 * queue-sched.c (heap, timer, attempts, outcomes) and queue-sched-ops.c
 * (postmaster operations).  Not for use outside queue/.
 *
 * Ownership: the scheduler owns every item; an item is referenced from the
 * id hash table (always) and from the heap (when it waits for an attempt).
 */
#ifndef MX_QUEUE_SCHED_INTERNAL_H
#define MX_QUEUE_SCHED_INTERNAL_H

#include "queue.h"

#define SCHED_NOT_IN_HEAP ((size_t)-1)

/* One queued message. */
struct sched_item {
	char id[UTIL_QID_LEN + 1];
	enum queue_state st;  /* folder of the envelope on disk */
	int64_t next_attempt; /* seconds since the epoch */
	int64_t arrival;
	size_t heap_idx; /* SCHED_NOT_IN_HEAP when not waiting */
	bool busy;       /* an attempt or an envelope update is running */
	bool moving;     /* the update is a postmaster hold/release */
	/* postmaster requests made while busy, applied when the item settles */
	bool want_hold, want_release, want_delete, want_flush;
	int64_t size;             /* bytes of msg/ID, when known */
	char *by;                 /* owned; who asked for the pending release or delete
	                             (control socket user, "retention"), or NULL */
	int read_errors;          /* envelope reads failed in a row (EMFILE, EIO, ...) */
	int read_errno;           /* errno of the last failed read, 0 after a good one */
	struct sched_item *hnext;  /* hash chain */
	struct sched_dest *parked; /* due, waiting for a slot of this destination */
	struct sched_item *pnext;  /* park list */
};

struct sched_attempt;

/* One delivery destination (a route; a route and domain for type mx - the
 * deliverer's pool key): its attempts in flight, and the due messages that
 * wait for one of its max_deliveries slots (FIFO).  Exists only while one of
 * the two is non-empty. */
struct sched_dest {
	char *key;
	int in_flight;
	struct sched_item *park_head, *park_tail;
	size_t nparked;
	struct sched_dest *next;
};

struct queue_sched {
	struct queue_store *qs;
	struct event_base *base;
	const struct config *cfg; /* borrowed */
	const struct queue_deliver_ops *ops;
	void *ops_ctx;

	struct sched_item **buckets; /* id -> item */
	size_t nbuckets;
	size_t count;

	struct sched_item **heap; /* min-heap on next_attempt */
	size_t heap_len, heap_cap;

	struct event *timer;            /* fires at the earliest next_attempt */
	struct event *kick;             /* deferred "dispatch now" */
	struct event *qsweep;           /* quarantine retention sweep (queue-quarantine.c) */
	int in_flight;                  /* attempts running */
	struct sched_attempt *attempts; /* every live attempt */
	struct sched_dest *dests;       /* destinations with attempts or parked items */
	bool draining;
	void (*drain_cb)(void *arg);
	void *drain_arg;
};

struct sched_item *sched_find(const struct queue_sched *s, const char *id);

/* queue-quarantine.c */
/* sched_quarantine_start - the retention sweep timer; -1 when it cannot be made. */
int sched_quarantine_start(struct queue_sched *s);
/* sched_quarantine_note - index time: what the gauges need of the envelope. */
void sched_quarantine_note(struct sched_item *it, const struct queue_envelope *env);
/* sched_quarantine_release - a quarantined message leaves quarantine/:
 * stamp who released it and when into env->prepend (the envelope is
 * rewritten by the move into active/) and log the release. */
void sched_quarantine_release(struct sched_item *it, struct queue_envelope *env);
/* sched_release - release a held or quarantined item (who may be NULL);
 * sched_delete - purge any item.  Both apply once the item is idle. */
void sched_release(struct queue_sched *s, struct sched_item *it, const char *who);
void sched_delete(struct queue_sched *s, struct sched_item *it, const char *who);
/* sched_lookup - the item of a postmaster request, or NULL with err. */
struct sched_item *sched_lookup(struct queue_sched *s, const char *id, char *err, size_t errlen);
void sched_heap_push(struct queue_sched *s, struct sched_item *it);
/* sched_heap_remove - out of the heap, or out of a park list. */
void sched_heap_remove(struct queue_sched *s, struct sched_item *it);
void sched_item_drop(struct queue_sched *s, struct sched_item *it);
/* sched_load - load the envelope of an idle item for op ("attempt", "hold",
 * ...).  On failure the item is dealt with and false returned: dropped when
 * the envelope is gone; set aside into corrupt/ when unparsable; retried
 * with backoff (it->next_attempt) after a read error, keeping the
 * postmaster requests it has. */
bool sched_load(struct queue_sched *s, struct sched_item *it, const char *op,
                struct queue_envelope **env, enum queue_state *st);
/* sched_kick - run the dispatcher soon (from the loop, never inline). */
void sched_kick(struct queue_sched *s);
/* sched_settle - apply pending postmaster requests of an idle item, or put it
 * back in the heap. */
void sched_settle(struct queue_sched *s, struct sched_item *it);
/* sched_read_headers - prepend + header block of msg/ID (capped). */
void sched_read_headers(struct queue_sched *s, const struct queue_envelope *env,
                        struct util_buf *out);
int64_t sched_now(void);

#endif
