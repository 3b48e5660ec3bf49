/*
 * queue-io.c - the store's I/O thread: every fsync and every rename of the
 * queue happens here, in batches (group commit), so the event loop never
 * waits for the disk.
 *
 * One batch = every pending job (up to IO_BATCH_MAX, and stopping before a
 * second job for the same id, so jobs for one id keep their order).  The
 * batch runs in phases, each followed by ONE fsync per touched folder:
 *   1. commit/inject: fsync the spool, rename incoming/ID.msg -> msg/ID;
 *      commit/inject/update: write <to>/ID.tmp (O_EXCL) and fsync it
 *      -> fsync msg/ (and incoming/)
 *   2. rename <to>/ID.tmp -> <to>/ID               -> fsync the <to> folders
 *      (for a commit this is the commit point)
 *   3. remove <from>/ID (update to another state, remove)
 *                                                  -> fsync the <from> folders
 *   4. remove: remove msg/ID (an orphan left by a crash here is removed at
 *      start-up, so no fsync is needed).
 * A set-aside job (an envelope the scheduler found unparsable) runs before
 * phase 1: rename <from>/ID and msg/ID into corrupt/, fsync those folders.
 * "Remove" means: moved into free/ for reuse, or unlinked when the pool is
 * full (queue-pool.c); new files (spools, ID.tmp) come from free/ when it
 * has one.  For the crash analysis the two are the same: the name is gone
 * from its folder.  An envelope file that left a state folder in phase 2
 * (the old side of an update in place) or 3 becomes reusable only after
 * that phase's folder fsync (io_batch_publish): reused before, a crash
 * could bring its old name back over another message's bytes.  When that
 * fsync fails the file is unlinked, never reused.
 * Within phase 1 the data goes to the disk for the whole batch at once:
 * writeback of every spool is started first (sync_file_range WRITE), every
 * envelope is written and its writeback started, and only then is each file
 * fsynced - so the fsyncs wait for I/O already in flight instead of issuing
 * it one file after the other (half the time per file on this machine's
 * disk; docs/performance.md).
 * The order makes every crash leave either the old or the new state: msg/ID
 * is durable before any envelope names it, and a new envelope is durable
 * before the old one is unlinked.  A job that fails at any step has what it
 * created unlinked again (commit/inject leave nothing behind) and reports -1
 * with errno.  With fsync off (benchmarks) the same renames run unsynced.
 *
 * Completion: the thread appends the finished batch to the done list and
 * writes 1 to an eventfd watched by the loop (EV_READ|EV_PERSIST); the loop
 * drains the list and runs on_commit + the callbacks.  An eventfd does not
 * depend on evthread_use_pthreads() having been called before the base was
 * created, and costs one write per batch.  The event is only added while
 * jobs are in flight, so an idle store never keeps event_base_dispatch()
 * from returning.
 *
 * Ownership: jobs move pending -> batch (thread) -> done -> freed on the loop
 * thread after their callback; qs->mu guards both lists.  The thread blocks
 * every signal so they are delivered to the loop thread.
 *
 * Diagnostics: one line per failed step, "ID queue-io op=... error=...";
 * batches at debug level.
 */
#include "queue-store-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_BATCH_MAX 1024
#define IO_NAME_MAX  (UTIL_QID_LEN + 8)

/* Phases after which folders are fsynced. */
enum io_phase { IO_PH_WRITE, IO_PH_PLACE, IO_PH_UNLINK };

static const char *const io_kind_names[] = {"commit", "inject", "update", "remove", "set-aside"};

/* queue_io_job_new - a zeroed job of kind with fd -1. */
struct queue_job *queue_io_job_new(enum queue_job_kind kind)
{
	struct queue_job *j = util_xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->fd = -1;
	j->from = -1;
	j->to = -1;
	return j;
}

/* io_job_free - release a job and what it owns. */
static void io_job_free(struct queue_job *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->data);
	free(j->text);
	queue_envelope_free(j->env);
	free(j);
}

/* io_name - "ID" + suffix into out. */
static const char *io_name(char out[IO_NAME_MAX], const char *id, const char *suffix)
{
	snprintf(out, IO_NAME_MAX, "%s%s", id, suffix);
	return out;
}

/* io_unlink - unlinkat that logs a failure other than ENOENT. */
static void io_unlink(struct queue_store *qs, const char *id, int dir, const char *name)
{
	if (unlinkat(qs->dfd[dir], name, 0) < 0 && errno != ENOENT)
		util_log_warn("%s queue-io op=unlink file=%s/%s error=\"%s\"", id,
		              queue_dir_name(dir), name, strerror(errno));
}

/* io_job_undo - remove whatever the job created; idempotent. */
static void io_job_undo(struct queue_store *qs, struct queue_job *j)
{
	char name[IO_NAME_MAX];

	if (j->steps & QUEUE_STEP_ENV)
		io_unlink(qs, j->id, j->to, j->id);
	if (j->steps & QUEUE_STEP_TMP)
		io_unlink(qs, j->id, j->to, io_name(name, j->id, ".tmp"));
	if (j->steps & QUEUE_STEP_MSG)
		io_unlink(qs, j->id, QDIR_MSG, j->id);
	if (j->steps & QUEUE_STEP_SPOOL)
		io_unlink(qs, j->id, QDIR_INCOMING, io_name(name, j->id, ".msg"));
	/* the fsync that would have made its removal durable failed */
	queue_pool_discard(qs, &j->retired);
	if (j->fd >= 0) {
		close(j->fd);
		j->fd = -1;
	}
	j->steps = 0;
}

/* io_disk_full - after ENOSPC/EDQUOT, the pool's files go at the end of
 * this batch (I/O thread). */
static void io_disk_full(struct queue_store *qs, int err)
{
	if (err != ENOSPC && err != EDQUOT)
		return;
	pthread_mutex_lock(&qs->mu);
	qs->drain_pool = true;
	pthread_mutex_unlock(&qs->mu);
}

/* io_job_fail - log the failed step, mark the job failed and undo it. */
static void io_job_fail(struct queue_store *qs, struct queue_job *j, int err, const char *op,
                        int dir, const char *name)
{
	io_disk_full(qs, err);
	util_log_err("%s queue-io job=%s op=%s file=%s/%s error=\"%s\"", j->id,
	             io_kind_names[j->kind], op, queue_dir_name(dir), name, strerror(err));
	j->status = -1;
	j->err = err;
	io_job_undo(qs, j);
}

/* io_write_tmp - create <to>/ID.tmp exclusively (a recycled file when the
 * pool has one) with the envelope text and start its writeback; the
 * descriptor stays in j->fd for io_job_sync_tmp. */
static void io_write_tmp(struct queue_store *qs, struct queue_job *j)
{
	char name[IO_NAME_MAX];
	int64_t prior;

	io_name(name, j->id, ".tmp");
	j->fd = queue_pool_open(qs, j->to, name, &prior);
	if (j->fd < 0) {
		io_job_fail(qs, j, errno, "create", j->to, name);
		return;
	}
	j->steps |= QUEUE_STEP_TMP;
	if (util_write_all(j->fd, j->text, j->text_len) < 0) {
		io_job_fail(qs, j, errno, "write", j->to, name);
		return;
	}
	if (queue_pool_trim(j->fd, prior, (int64_t)j->text_len) < 0) {
		io_job_fail(qs, j, errno, "truncate", j->to, name);
		return;
	}
	if (qs->fsync)
		(void)sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* io_job_set_aside - a set-aside job: <from>/ID and msg/ID into corrupt/,
 * with its own folder fsyncs (rare: a scheduler found it unparsable). */
static void io_job_set_aside(struct queue_store *qs, struct queue_job *j)
{
	if (j->status != 0 || j->kind != QUEUE_JOB_CORRUPT)
		return;
	if (queue_store_move_corrupt(qs, j->from, j->id, true, j->text) < 0) {
		j->status = -1;
		j->err = errno;
	}
}

/* io_job_kick - start writeback of a commit's spool (a hint: errors show up
 * in the fsync that follows). */
static void io_job_kick(struct queue_store *qs, struct queue_job *j)
{
	if (qs->fsync && j->status == 0 && j->kind == QUEUE_JOB_COMMIT && j->fd >= 0)
		(void)sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* io_job_sync_tmp - end of phase 1: fsync and close <to>/ID.tmp. */
static void io_job_sync_tmp(struct queue_store *qs, struct queue_job *j)
{
	char name[IO_NAME_MAX];

	if (j->status != 0 || j->fd < 0)
		return;
	if (qs->fsync && fsync(j->fd) < 0) {
		io_job_fail(qs, j, errno, "fsync", j->to, io_name(name, j->id, ".tmp"));
		return;
	}
	close(j->fd);
	j->fd = -1;
}

/* io_job_write - phase 1: message into msg/, envelope into <to>/ID.tmp. */
static void io_job_write(struct queue_store *qs, struct queue_job *j)
{
	char name[IO_NAME_MAX];

	if (j->status != 0 || j->kind == QUEUE_JOB_REMOVE || j->kind == QUEUE_JOB_CORRUPT)
		return;
	io_name(name, j->id, ".msg");
	if (j->kind == QUEUE_JOB_INJECT) {
		j->fd = queue_pool_open(qs, QDIR_INCOMING, name, &j->prior);
		if (j->fd < 0) {
			io_job_fail(qs, j, errno, "create", QDIR_INCOMING, name);
			return;
		}
		j->steps |= QUEUE_STEP_SPOOL;
		if (util_write_all(j->fd, j->data, j->len) < 0) {
			io_job_fail(qs, j, errno, "write", QDIR_INCOMING, name);
			return;
		}
	}
	if (j->kind == QUEUE_JOB_COMMIT || j->kind == QUEUE_JOB_INJECT) {
		/* a recycled spool: cut off the old message's tail first */
		if (queue_pool_trim(j->fd, j->prior,
		                    j->kind == QUEUE_JOB_INJECT ? (int64_t)j->len : j->env->size) < 0) {
			io_job_fail(qs, j, errno, "truncate", QDIR_INCOMING, name);
			return;
		}
		if (qs->fsync && fsync(j->fd) < 0) {
			io_job_fail(qs, j, errno, "fsync", QDIR_INCOMING, name);
			return;
		}
		if (queue_rename_excl(qs->dfd[QDIR_INCOMING], name, qs->dfd[QDIR_MSG], j->id) < 0) {
			io_job_fail(qs, j, errno, "rename-to-msg", QDIR_INCOMING, name);
			return;
		}
		j->steps = (j->steps & ~QUEUE_STEP_SPOOL) | QUEUE_STEP_MSG;
		close(j->fd);
		j->fd = -1;
	}
	io_write_tmp(qs, j);
}

/* io_job_place - phase 2: rename <to>/ID.tmp -> <to>/ID.  An update in
 * place swaps the two names, so the old envelope can be recycled - after
 * the fsync of <to> (io_batch_publish). */
static void io_job_place(struct queue_store *qs, struct queue_job *j)
{
	char name[IO_NAME_MAX];
	int r;

	if (j->status != 0 || j->kind == QUEUE_JOB_REMOVE || j->kind == QUEUE_JOB_CORRUPT)
		return;
	io_name(name, j->id, ".tmp");
	if (j->kind == QUEUE_JOB_UPDATE && j->from == j->to &&
	    renameat2(qs->dfd[j->to], name, qs->dfd[j->to], j->id, RENAME_EXCHANGE) == 0) {
		j->steps &= ~QUEUE_STEP_TMP;
		if (queue_pool_retire(qs, j->to, name, j->id, "e", &j->retired) < 0 &&
		    errno != ENOENT)
			util_log_warn("%s queue-io job=update op=recycle file=%s/%s error=\"%s\"",
			              j->id, queue_dir_name(j->to), name, strerror(errno));
		return;
	}
	if (j->kind == QUEUE_JOB_UPDATE)
		r = renameat(qs->dfd[j->to], name, qs->dfd[j->to], j->id);
	else
		r = queue_rename_excl(qs->dfd[j->to], name, qs->dfd[j->to], j->id);
	if (r < 0) {
		io_job_fail(qs, j, errno, "rename", j->to, name);
		return;
	}
	j->steps &= ~QUEUE_STEP_TMP;
	if (j->kind != QUEUE_JOB_UPDATE)
		j->steps |= QUEUE_STEP_ENV;
}

/* io_job_unlink_env - phase 3: remove the old envelope from its folder (into
 * free/, reusable after the fsync of <from>; or unlinked). */
static void io_job_unlink_env(struct queue_store *qs, struct queue_job *j)
{
	if (j->status != 0)
		return;
	if (j->kind == QUEUE_JOB_UPDATE && j->from != j->to) {
		if (queue_pool_retire(qs, j->from, j->id, j->id, "e", &j->retired) == 0)
			return;
		if (errno == ENOENT)
			util_log_warn("%s queue-io job=update op=unlink file=%s/%s error=\"%s\"",
			              j->id, queue_dir_name(j->from), j->id, strerror(errno));
		else
			io_job_fail(qs, j, errno, "unlink", j->from, j->id);
	} else if (j->kind == QUEUE_JOB_REMOVE) {
		int r = j->purge ? unlinkat(qs->dfd[j->from], j->id, 0)
		                 : queue_pool_retire(qs, j->from, j->id, j->id, "e", &j->retired);
		if (r < 0)
			io_job_fail(qs, j, errno, "unlink", j->from, j->id);
	}
}

/* io_job_unlink_msg - phase 4: a removed message's bytes (recycled or
 * unlinked; nothing reads msg/ID once its envelope is gone). */
static void io_job_unlink_msg(struct queue_store *qs, struct queue_job *j)
{
	if (j->status != 0 || j->kind != QUEUE_JOB_REMOVE)
		return;
	if (j->purge)
		io_unlink(qs, j->id, QDIR_MSG, j->id);
	else if (queue_pool_put(qs, QDIR_MSG, j->id, j->id, "m") < 0 && errno != ENOENT)
		util_log_warn("%s queue-io op=unlink file=msg/%s error=\"%s\"", j->id, j->id,
		              strerror(errno));
}

/* io_phase_dir - the folder a live job changed in phase ph, or -1. */
static int io_phase_dir(const struct queue_job *j, enum io_phase ph)
{
	if (j->status != 0)
		return -1;
	switch (ph) {
	case IO_PH_WRITE:
		return j->kind == QUEUE_JOB_COMMIT || j->kind == QUEUE_JOB_INJECT ? QDIR_MSG : -1;
	case IO_PH_PLACE:
		return j->kind == QUEUE_JOB_REMOVE || j->kind == QUEUE_JOB_CORRUPT ? -1 : j->to;
	case IO_PH_UNLINK:
		if (j->kind == QUEUE_JOB_REMOVE ||
		    (j->kind == QUEUE_JOB_UPDATE && j->from != j->to))
			return j->from;
		return -1;
	}
	return -1;
}

/* io_batch_sync - one fsync per folder the batch changed in phase ph; the
 * jobs behind a failed fsync fail. */
static void io_batch_sync(struct queue_store *qs, struct queue_job *batch, enum io_phase ph)
{
	bool touched[QDIR_COUNT] = {false};
	struct queue_job *j;
	int d;

	if (!qs->fsync)
		return;
	for (j = batch; j != NULL; j = j->next) {
		d = io_phase_dir(j, ph);
		if (d >= 0)
			touched[d] = true;
	}
	for (d = 0; d < QDIR_COUNT; d++) {
		int err;

		if (!touched[d])
			continue;
		if (fsync(qs->dfd[d]) == 0)
			continue;
		err = errno;
		for (j = batch; j != NULL; j = j->next)
			if (io_phase_dir(j, ph) == d)
				io_job_fail(qs, j, err, "fsync-dir", d, ".");
	}
	/* incoming/ lost names in phase 1; nothing depends on that being
	 * durable (start-up wipes it), so a failure is only logged. */
	if (ph == IO_PH_WRITE && touched[QDIR_MSG] && fsync(qs->dfd[QDIR_INCOMING]) < 0)
		util_log_warn("queue-io op=fsync-dir file=incoming error=\"%s\"", strerror(errno));
}

/* io_batch_publish - after a phase's folder fsyncs: the envelope files the
 * batch took out of those folders may be reused now (a failed job's were
 * discarded by its undo). */
static void io_batch_publish(struct queue_store *qs, struct queue_job *batch)
{
	struct queue_job *j;

	for (j = batch; j != NULL; j = j->next) {
		if (j->status == 0)
			queue_pool_publish(qs, &j->retired);
		else
			queue_pool_discard(qs, &j->retired);
	}
}

/* io_run_batch - run every phase of a batch of n jobs (I/O thread). */
static void io_run_batch(struct queue_store *qs, struct queue_job *batch, size_t n)
{
	struct queue_job *j;

	(void)n;
	for (j = batch; j != NULL; j = j->next)
		if (j->status != 0) {
			io_disk_full(qs, j->err);
			io_job_undo(qs, j);
		}
	for (j = batch; j != NULL; j = j->next)
		io_job_set_aside(qs, j);
	for (j = batch; j != NULL; j = j->next)
		io_job_kick(qs, j);
	for (j = batch; j != NULL; j = j->next)
		io_job_write(qs, j);
	for (j = batch; j != NULL; j = j->next)
		io_job_sync_tmp(qs, j);
	io_batch_sync(qs, batch, IO_PH_WRITE);
	for (j = batch; j != NULL; j = j->next)
		io_job_place(qs, j);
	io_batch_sync(qs, batch, IO_PH_PLACE);
	io_batch_publish(qs, batch);
	for (j = batch; j != NULL; j = j->next)
		io_job_unlink_env(qs, j);
	io_batch_sync(qs, batch, IO_PH_UNLINK);
	io_batch_publish(qs, batch);
	for (j = batch; j != NULL; j = j->next)
		io_job_unlink_msg(qs, j);
}

/* io_id_hash - FNV-1a of a queue id. */
static size_t io_id_hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h;
}

/* io_take_batch - detach pending jobs (under mu): at most IO_BATCH_MAX, and
 * none after a second job for an id already in the batch. */
static struct queue_job *io_take_batch(struct queue_store *qs, size_t *count)
{
	static const size_t nslots = IO_BATCH_MAX * 2;
	struct queue_job *slots[IO_BATCH_MAX * 2];
	struct queue_job *batch = NULL;
	struct queue_job **tail = &batch;
	size_t n = 0;

	memset(slots, 0, sizeof(slots));
	while (qs->pend_head != NULL && n < IO_BATCH_MAX) {
		struct queue_job *j = qs->pend_head;
		size_t h = io_id_hash(j->id) % nslots;

		while (slots[h] != NULL && strcmp(slots[h]->id, j->id) != 0)
			h = (h + 1) % nslots;
		if (slots[h] != NULL)
			break;
		slots[h] = j;
		qs->pend_head = j->next;
		j->next = NULL;
		*tail = j;
		tail = &j->next;
		n++;
	}
	if (qs->pend_head == NULL)
		qs->pend_tail = &qs->pend_head;
	*count = n;
	return batch;
}

/* io_post - append finished jobs to the done list and wake the loop. */
static void io_post(struct queue_store *qs, struct queue_job *batch)
{
	struct queue_job *last = batch;
	uint64_t one = 1;

	if (batch == NULL)
		return;
	while (last->next != NULL)
		last = last->next;
	pthread_mutex_lock(&qs->mu);
	*qs->done_tail = batch;
	qs->done_tail = &last->next;
	pthread_mutex_unlock(&qs->mu);
	if (write(qs->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		util_log_err("queue-io op=wake error=\"%s\"", strerror(errno));
}

/* io_main - the I/O thread: batches until closing and nothing is pending. */
static void *io_main(void *arg)
{
	struct queue_store *qs = arg;

	for (;;) {
		struct queue_job *batch;
		bool drain;
		size_t n;

		pthread_mutex_lock(&qs->mu);
		while (qs->pend_head == NULL && !qs->closing && !qs->drain_pool)
			pthread_cond_wait(&qs->cv, &qs->mu);
		if (qs->pend_head == NULL && !qs->drain_pool) {
			pthread_mutex_unlock(&qs->mu);
			break;
		}
		batch = io_take_batch(qs, &n);
		pthread_mutex_unlock(&qs->mu);
		if (batch != NULL) {
			util_log_debug("queue-io batch jobs=%zu", n);
			io_run_batch(qs, batch, n);
			io_post(qs, batch);
		}
		pthread_mutex_lock(&qs->mu);
		drain = qs->drain_pool;
		qs->drain_pool = false;
		pthread_mutex_unlock(&qs->mu);
		if (drain)
			queue_pool_drain(qs);
	}
	return NULL;
}

/* io_complete - run the callbacks of one finished job (loop thread). */
static void io_complete(struct queue_store *qs, struct queue_job *j)
{
	switch (j->kind) {
	case QUEUE_JOB_COMMIT:
	case QUEUE_JOB_INJECT:
		if (j->status == 0) {
			util_log_debug("%s queue: committed job=%s size=%lld rcpts=%zu", j->id,
			               io_kind_names[j->kind], (long long)j->env->size,
			               j->env->nrcpts);
			if (qs->on_commit != NULL)
				qs->on_commit(j->env, (enum queue_state)(j->to - QDIR_ACTIVE),
				              qs->on_commit_arg);
		}
		if (j->ccb != NULL)
			j->ccb(j->cookie, j->status, j->status == 0 ? 0 : j->err, j->id, j->arg);
		break;
	case QUEUE_JOB_UPDATE:
	case QUEUE_JOB_REMOVE:
	case QUEUE_JOB_CORRUPT:
		if (j->dcb != NULL)
			j->dcb(j->status, j->arg);
		break;
	}
}

/* io_run_completions - detach the done list and complete each job. */
static void io_run_completions(struct queue_store *qs)
{
	struct queue_job *list;

	pthread_mutex_lock(&qs->mu);
	list = qs->done_head;
	qs->done_head = NULL;
	qs->done_tail = &qs->done_head;
	pthread_mutex_unlock(&qs->mu);
	while (list != NULL) {
		struct queue_job *j = list;

		list = j->next;
		qs->inflight--;
		io_complete(qs, j);
		io_job_free(j);
	}
	/* Idle: stop watching, so event_base_dispatch() can return when the
	 * store is the only thing left on the loop. */
	if (qs->inflight == 0 && qs->wake_ev != NULL)
		event_del(qs->wake_ev);
}

/* io_wake_cb - the eventfd became readable: reset it, run completions. */
static void io_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_store *qs = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		util_log_err("queue-io op=wake-read error=\"%s\"", strerror(errno));
	io_run_completions(qs);
}

/* queue_io_submit - queue a job for the I/O thread (loop thread). */
void queue_io_submit(struct queue_store *qs, struct queue_job *job)
{
	bool shut;

	job->next = NULL;
	if (qs->inflight++ == 0 && qs->wake_ev != NULL && event_add(qs->wake_ev, NULL) < 0)
		util_log_err("%s queue-io op=event-add error=\"cannot watch completions\"",
		             job->id);
	pthread_mutex_lock(&qs->mu);
	shut = qs->closing;
	if (!shut) {
		*qs->pend_tail = job;
		qs->pend_tail = &job->next;
		pthread_cond_signal(&qs->cv);
	}
	pthread_mutex_unlock(&qs->mu);
	if (!shut)
		return;
	/* Submitted from a callback run by queue_store_close(): the thread is
	 * gone; fail the job, and queue_io_stop() runs its callback. */
	if (job->status == 0) {
		job->status = -1;
		job->err = ESHUTDOWN;
	}
	io_job_undo(qs, job);
	pthread_mutex_lock(&qs->mu);
	*qs->done_tail = job;
	qs->done_tail = &job->next;
	pthread_mutex_unlock(&qs->mu);
}

/* queue_io_drain_pool - ask the I/O thread to unlink the pooled files (the
 * disk is full; loop thread). */
void queue_io_drain_pool(struct queue_store *qs)
{
	if (!qs->sync_init)
		return;
	pthread_mutex_lock(&qs->mu);
	qs->drain_pool = true;
	pthread_cond_signal(&qs->cv);
	pthread_mutex_unlock(&qs->mu);
}

/* queue_io_start - wake-up eventfd + event, then the thread. */
int queue_io_start(struct queue_store *qs, char *err, size_t errlen)
{
	sigset_t all, old;
	int rc;

	qs->pend_tail = &qs->pend_head;
	qs->done_tail = &qs->done_head;
	if (pthread_mutex_init(&qs->mu, NULL) != 0 || pthread_cond_init(&qs->cv, NULL) != 0) {
		snprintf(err, errlen, "%s: cannot initialise the queue lock", qs->dir);
		return -1;
	}
	qs->sync_init = true;
	qs->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (qs->wake_fd < 0) {
		snprintf(err, errlen, "%s: eventfd: %s", qs->dir, strerror(errno));
		return -1;
	}
	qs->wake_ev = event_new(qs->base, qs->wake_fd, EV_READ | EV_PERSIST, io_wake_cb, qs);
	if (qs->wake_ev == NULL) {
		snprintf(err, errlen, "%s: cannot add the queue completion event", qs->dir);
		return -1;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&qs->thread, NULL, io_main, qs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "%s: cannot start the queue I/O thread: %s", qs->dir,
		         strerror(rc));
		return -1;
	}
	pthread_setname_np(qs->thread, "mx-queue-io");
	qs->thread_started = true;
	return 0;
}

/* queue_io_stop - drain the thread, join it, run every remaining callback. */
void queue_io_stop(struct queue_store *qs)
{
	if (qs->sync_init) {
		pthread_mutex_lock(&qs->mu);
		qs->closing = true;
		pthread_cond_broadcast(&qs->cv);
		pthread_mutex_unlock(&qs->mu);
	}
	if (qs->thread_started) {
		pthread_join(qs->thread, NULL);
		qs->thread_started = false;
	}
	/* Callbacks may submit new jobs; those fail with ESHUTDOWN and land on
	 * the done list again, so loop until it stays empty. */
	while (qs->sync_init && qs->done_head != NULL)
		io_run_completions(qs);
	if (qs->wake_ev != NULL) {
		event_free(qs->wake_ev);
		qs->wake_ev = NULL;
	}
	if (qs->wake_fd >= 0) {
		close(qs->wake_fd);
		qs->wake_fd = -1;
	}
	if (qs->sync_init) {
		pthread_mutex_destroy(&qs->mu);
		pthread_cond_destroy(&qs->cv);
		qs->sync_init = false;
	}
}
