/*
 * queue-store-internal.h - the store's state, shared by queue-store.c (the
 * loop-thread API: open, recovery, scan, spools, job submission) and
 * queue-io.c (the I/O thread: group-committed jobs and their completions).
 * Not for use outside queue/.
 *
 * Ownership: a struct queue_job is owned by whichever list holds it (pending
 * -> the I/O thread's batch -> done) and freed by queue_io_job_free() after
 * its callback ran on the loop thread.  Both lists are guarded by qs->mu.
 */
#ifndef MX_QUEUE_STORE_INTERNAL_H
#define MX_QUEUE_STORE_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>

#include "queue.h"

/* Folders under the queue directory, indexes into qs->dfd.  The state
 * folders follow enum queue_state: QDIR_ACTIVE + st, up to QDIR_LAST_STATE. */
enum queue_dir_ix {
	QDIR_INCOMING = 0,
	QDIR_MSG,
	QDIR_ACTIVE,
	QDIR_DEFERRED,
	QDIR_HOLD,
	QDIR_QUARANTINE,
	QDIR_CORRUPT,
	QDIR_FREE,
	QDIR_COUNT
};
#define QDIR_LAST_STATE (QDIR_ACTIVE + QUEUE_STATE_LAST)

/* queue_dir_name - folder name of a QDIR_* index. */
static inline const char *queue_dir_name(int ix)
{
	static const char *const names[QDIR_COUNT] = {
	    "incoming", "msg", "active", "deferred", "hold", "quarantine", "corrupt", "free"};

	return ix >= 0 && ix < QDIR_COUNT ? names[ix] : "?";
}

enum queue_job_kind {
	QUEUE_JOB_COMMIT,
	QUEUE_JOB_INJECT,
	QUEUE_JOB_UPDATE,
	QUEUE_JOB_REMOVE,
	QUEUE_JOB_CORRUPT /* set an unparsable envelope aside (before the phases) */
};

/* What a job has put on disk so far (undone when the job fails). */
#define QUEUE_STEP_SPOOL 0x01u /* incoming/ID.msg exists */
#define QUEUE_STEP_MSG   0x02u /* msg/ID exists (renamed by this job) */
#define QUEUE_STEP_TMP   0x04u /* <to>/ID.tmp exists */
#define QUEUE_STEP_ENV   0x08u /* <to>/ID placed by this job (commit/inject) */

/* A file in free/ (queue-pool.c). */
struct queue_pool_ent {
	char name[UTIL_QID_LEN + 8];
	int64_t size;  /* st_size when it was put */
	int64_t bytes; /* disk it holds (st_blocks) */
};

struct queue_job {
	struct queue_job *next;
	enum queue_job_kind kind;
	char id[UTIL_QID_LEN + 1];
	int fd;     /* commit/inject: spool descriptor (owned) or -1 */
	int64_t prior; /* length of the recycled file behind fd, -1 if new */
	bool purge;    /* remove: unlink the files instead of recycling them */
	void *data; /* inject: message bytes (owned) */
	size_t len;
	struct queue_envelope *env; /* commit/inject: owned; given to on_commit */
	char *text;                 /* serialised envelope (owned), commit/inject/update */
	size_t text_len;
	int from;   /* QDIR_* of the current envelope (update/remove) */
	int to;     /* QDIR_* of the new envelope (commit/inject/update) */
	int status; /* 0, or -1 with err */
	int err;
	unsigned steps;      /* QUEUE_STEP_* */
	/* the envelope file this job took out of a state folder, already in
	 * free/ but not reusable until the batch's fsync of that folder made
	 * its removal durable (name "" = none); see queue-io.c */
	struct queue_pool_ent retired;
	queue_commit_cb ccb; /* commit/inject */
	uint64_t cookie;
	queue_done_cb dcb; /* update/remove */
	void *arg;
};

/* The pool of recycled files (queue-pool.c): names in free/, newest last. */
#define QUEUE_POOL_FILES    1024
#define QUEUE_POOL_BYTES    ((int64_t)64 << 20)
#define QUEUE_POOL_FILE_MAX ((int64_t)4 << 20)

/* A pinned inode (queue_spool_pin): never recycled, unlinked instead. */
struct queue_pool_pin {
	dev_t dev;
	ino_t ino;
	unsigned refs;
};

struct queue_pool {
	pthread_mutex_t mu; /* guards v, n, bytes, pins, npins */
	bool init;
	struct queue_pool_ent *v; /* QUEUE_POOL_FILES slots */
	size_t n;
	int64_t bytes;
	struct queue_pool_pin *pins; /* owned; npins used of cap */
	size_t npins, pins_cap;
};

struct queue_store {
	char *dir;
	bool fsync;
	struct event_base *base;
	int dfd[QDIR_COUNT];   /* O_DIRECTORY descriptors of the folders */
	int wake_fd;           /* eventfd: I/O thread -> loop, "done list not empty" */
	struct event *wake_ev; /* added only while inflight > 0 */
	size_t inflight;       /* loop thread: jobs submitted, callback not yet run */
	pthread_t thread;
	bool thread_started;
	bool sync_init; /* mu and cv initialised */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queue_job *pend_head; /* under mu: submitted, not yet taken */
	struct queue_job **pend_tail;
	struct queue_job *done_head; /* under mu: finished, callback not yet run */
	struct queue_job **done_tail;
	bool closing; /* under mu: the thread exits once pend is empty */
	bool drain_pool; /* under mu: unlink the pool's files (disk full) */
	void (*on_commit)(const struct queue_envelope *env, enum queue_state st, void *arg);
	void *on_commit_arg;
	struct queue_pool pool;
};

/* queue_store_list - the names in folder dir (without "." and ".."). */
int queue_store_list(struct queue_store *qs, int dir, struct util_strlist *out);

/* queue_store_move_corrupt - move dir/name (and msg/name when with_msg)
 * into corrupt/, fsync the folders; 0, or -1 with errno (logged). */
int queue_store_move_corrupt(struct queue_store *qs, int dir, const char *name, bool with_msg,
                             const char *why);

/* queue_rename_excl - renameat that never replaces an existing file (EEXIST). */
int queue_rename_excl(int ofd, const char *oname, int nfd, const char *nname);

/* Recycled files (queue-pool.c, which explains why). */
void queue_pool_init(struct queue_store *qs);
void queue_pool_fini(struct queue_store *qs);
int queue_pool_open(struct queue_store *qs, int dir, const char *name, int64_t *prior);
int queue_pool_trim(int fd, int64_t prior, int64_t size);
int queue_pool_put(struct queue_store *qs, int dir, const char *name, const char *id,
                   const char *tag);
/* queue_pool_retire - the first half of queue_pool_put: the file is moved
 * into free/ (described in *out) but not listed, so nobody can reuse it;
 * out->name is "" when it was unlinked instead.  queue_pool_publish lists it
 * (or unlinks it when the pool is full); queue_pool_discard unlinks it. */
int queue_pool_retire(struct queue_store *qs, int dir, const char *name, const char *id,
                      const char *tag, struct queue_pool_ent *out);
void queue_pool_publish(struct queue_store *qs, struct queue_pool_ent *e);
void queue_pool_discard(struct queue_store *qs, struct queue_pool_ent *e);
void queue_pool_drain(struct queue_store *qs);
/* queue_pool_pin - keep the inode dev/ino out of the pool (counted);
 * queue_pool_unpin - undo one queue_pool_pin.  Any thread. */
void queue_pool_pin(struct queue_store *qs, dev_t dev, ino_t ino);
void queue_pool_unpin(struct queue_store *qs, dev_t dev, ino_t ino);

/* queue_io_start - create the wake-up event and start the I/O thread. */
int queue_io_start(struct queue_store *qs, char *err, size_t errlen);
/* queue_io_submit - queue a job (loop thread); takes ownership of job.  A job
 * submitted with status -1, or after close began, only has its partial state
 * undone and its callback run. */
void queue_io_submit(struct queue_store *qs, struct queue_job *job);
/* queue_io_stop - finish pending jobs, join the thread, run every callback. */
void queue_io_stop(struct queue_store *qs);
/* queue_io_drain_pool - have the I/O thread empty the pool (disk full). */
void queue_io_drain_pool(struct queue_store *qs);
/* queue_io_job_new - a zeroed job of kind with fd -1. */
struct queue_job *queue_io_job_new(enum queue_job_kind kind);

#endif
