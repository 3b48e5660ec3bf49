/*
 * queue-store.c - the durable on-disk queue, loop-thread side: opening the
 * folders and recovering from a crash, the start-up scan, reading one
 * envelope, spool files being received, and turning commit / inject / update
 * / remove requests into jobs for the I/O thread (queue-io.c).
 *
 * Recovery at open (docs/queue-format.md explains why each is safe):
 * incoming/ is wiped (never acknowledged), leftover ID.tmp envelopes are
 * unlinked, and msg/ID files with no envelope in any state folder (a crash
 * before the commit point) are removed.  The scan moves unparsable
 * envelopes - and their msg/ID - to corrupt/, never deleting them; when a
 * crash in the middle of a state change left one id in two state folders,
 * the newer file wins and the older goes to corrupt/.  An envelope that
 * cannot be read (EMFILE, EIO: the file may be fine) is never set aside: it
 * stays where it is and the scheduler retries it (queue_scan_unreadable_fn).
 * The scan also moves a message an older build quarantined into hold/ to
 * quarantine/ (store_migrate_quarantine: rename, fsync of both folders).
 *
 * Ownership: queue_spool_new returns a spool freed by queue_spool_abort or
 * taken by queue_commit; queue_commit / queue_inject take the envelope;
 * queue_env_update copies (serialises) it.  Folders are kept open as
 * O_DIRECTORY descriptors and every path is resolved relative to them.
 *
 * Diagnostics: start-up problems return NULL and one message in err; other
 * problems are logged as "ID queue op=... error=...".  Ids that reach the
 * file system are checked with util_qid_is_valid(), so a control-socket id
 * can never name a path outside the queue.
 */
#include "queue-store-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct queue_spool {
	struct queue_store *qs;
	char id[UTIL_QID_LEN + 1];
	int fd;
	int64_t size;
	int64_t prior; /* length of the recycled file, -1 if created */
	int err; /* first write error, sticky: later writes and the commit fail */
};

/* One envelope file found by the scan. */
struct store_entry {
	char *name;
	enum queue_state st;
	struct timespec mtime;
};

/* ------------------------------------------------------------ helpers */

/* queue_store_list - the names in folder dir (without "." and ".."). */
int queue_store_list(struct queue_store *qs, int dir, struct util_strlist *out)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(qs->dfd[dir], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			util_strlist_add(out, de->d_name);
		errno = 0;
	}
	if (errno != 0) {
		int e = errno;

		closedir(d);
		errno = e;
		return -1;
	}
	closedir(d);
	return 0;
}

/* store_has_suffix - name ends with suffix. */
static bool store_has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);

	return n >= m && strcmp(name + n - m, suffix) == 0;
}

/* store_has_envelope - an envelope named id exists in a state folder. */
static bool store_has_envelope(struct queue_store *qs, const char *id)
{
	struct stat st;
	int d;

	for (d = QDIR_ACTIVE; d <= QDIR_LAST_STATE; d++)
		if (fstatat(qs->dfd[d], id, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
			return true; /* present, or unknown: keep the message */
	return false;
}

/* store_sync - fsync folder dir when fsync is on; failures are logged. */
static void store_sync(struct queue_store *qs, int dir)
{
	if (qs->fsync && fsync(qs->dfd[dir]) < 0)
		util_log_warn("queue op=fsync-dir file=%s error=\"%s\"", queue_dir_name(dir),
		              strerror(errno));
}

/* store_read - a whole envelope file (at most QUEUE_ENVELOPE_MAX) from
 * dir/name; NULL with errno: ENOENT when absent, EBADMSG when the file can
 * never be an envelope (too big, a FIFO or device), EISDIR for a directory
 * (what read(2) says; left to the postmaster like any other read error),
 * otherwise the errno of open/fstat/read (EMFILE, EIO, ...). */
static char *store_read(struct queue_store *qs, int dir, const char *name, size_t *len,
                        struct timespec *mtime)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd;
	int e = 0;

	/* O_NONBLOCK: a FIFO in place of an envelope must not block the open */
	fd = openat(qs->dfd[dir], name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		e = errno;
		goto done;
	}
	if (S_ISDIR(st.st_mode)) {
		e = EISDIR;
		goto done;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > QUEUE_ENVELOPE_MAX) {
		e = EBADMSG;
		goto done;
	}
	buf = util_xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			e = errno;
			goto done;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	*len = got;
	if (mtime != NULL)
		*mtime = st.st_mtim;
done:
	close(fd);
	if (e != 0) {
		free(buf);
		errno = e;
		return NULL;
	}
	return buf;
}

/* ------------------------------------------------------------ open / recovery */

/* store_wipe - unlink every entry of dir whose name matches (all when
 * suffix is NULL); returns the count removed. */
static size_t store_wipe(struct queue_store *qs, int dir, const char *suffix)
{
	struct util_strlist names = {NULL, 0};
	size_t i, n = 0;

	if (queue_store_list(qs, dir, &names) < 0) {
		util_log_warn("queue op=list file=%s error=\"%s\"", queue_dir_name(dir),
		              strerror(errno));
		return 0;
	}
	for (i = 0; i < names.n; i++) {
		if (suffix != NULL && !store_has_suffix(names.v[i], suffix))
			continue;
		if (unlinkat(qs->dfd[dir], names.v[i], 0) == 0)
			n++;
		else
			util_log_warn("queue op=unlink file=%s/%s error=\"%s\"",
			              queue_dir_name(dir), names.v[i], strerror(errno));
	}
	util_strlist_free(&names);
	return n;
}

/* store_remove_orphans - msg/ID without an envelope: crash before commit. */
static size_t store_remove_orphans(struct queue_store *qs)
{
	struct util_strlist names = {NULL, 0};
	size_t i, n = 0;

	if (queue_store_list(qs, QDIR_MSG, &names) < 0) {
		util_log_warn("queue op=list file=msg error=\"%s\"", strerror(errno));
		return 0;
	}
	for (i = 0; i < names.n; i++) {
		const char *id = names.v[i];

		if (!util_qid_is_valid(id)) {
			util_log_warn(
			    "queue op=recover file=msg/%s error=\"not a queue id; left alone\"",
			    id);
			continue;
		}
		if (store_has_envelope(qs, id))
			continue;
		if (unlinkat(qs->dfd[QDIR_MSG], id, 0) == 0) {
			util_log_info("%s queue op=recover removed=msg/%s reason=no-envelope", id,
			              id);
			n++;
		} else {
			util_log_warn("%s queue op=unlink file=msg/%s error=\"%s\"", id, id,
			              strerror(errno));
		}
	}
	util_strlist_free(&names);
	return n;
}

/* store_recover - undo what a crash left half-done (start-up only). */
static void store_recover(struct queue_store *qs)
{
	size_t spools, tmps = 0, orphans;
	int d;

	spools = store_wipe(qs, QDIR_INCOMING, NULL);
	for (d = QDIR_ACTIVE; d <= QDIR_LAST_STATE; d++)
		tmps += store_wipe(qs, d, ".tmp");
	orphans = store_remove_orphans(qs);
	if (spools + tmps + orphans > 0) {
		for (d = 0; d < QDIR_CORRUPT; d++)
			store_sync(qs, d);
		util_log_info("queue op=recover dir=%s spools=%zu tmp=%zu orphans=%zu", qs->dir,
		              spools, tmps, orphans);
	}
}

/* store_free - close and free everything (the thread is already stopped). */
static void store_free(struct queue_store *qs)
{
	int d;

	queue_io_stop(qs);
	queue_pool_fini(qs);
	for (d = 0; d < QDIR_COUNT; d++)
		if (qs->dfd[d] >= 0)
			close(qs->dfd[d]);
	free(qs->dir);
	free(qs);
}

/* queue_store_open - create folders, recover, start the I/O thread. */
struct queue_store *queue_store_open(const char *dir, bool do_fsync, struct event_base *base,
                                     char *err, size_t errlen)
{
	struct queue_store *qs;
	struct stat rst;
	int root = -1;
	int rc = -1;
	int d;

	qs = util_xcalloc(1, sizeof(*qs));
	for (d = 0; d < QDIR_COUNT; d++)
		qs->dfd[d] = -1;
	qs->wake_fd = -1;
	qs->dir = util_xstrdup(dir);
	qs->fsync = do_fsync;
	qs->base = base;
	if (util_mkdir_p(dir, 0700) < 0) {
		snprintf(err, errlen, "%s: cannot create queue directory: %s", dir,
		         strerror(errno));
		goto done;
	}
	root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto done;
	}
	if (fstat(root, &rst) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto done;
	}
	for (d = 0; d < QDIR_COUNT; d++) {
		const char *name = queue_dir_name(d);

		if (mkdirat(root, name, 0700) == 0) {
			/* A folder new to an existing queue (an upgrade, run as
			 * root before the privilege drop) belongs to the queue's
			 * owner like the others. */
			if (geteuid() == 0 && rst.st_uid != 0 &&
			    fchownat(root, name, rst.st_uid, rst.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
				util_log_warn("queue op=chown file=%s/%s error=\"%s\"", dir, name,
				              strerror(errno));
		} else if (errno != EEXIST) {
			snprintf(err, errlen, "%s/%s: cannot create: %s", dir, name,
			         strerror(errno));
			goto done;
		}
		qs->dfd[d] = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (qs->dfd[d] < 0) {
			snprintf(err, errlen, "%s/%s: %s", dir, name, strerror(errno));
			goto done;
		}
	}
	if (do_fsync && fsync(root) < 0) {
		snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto done;
	}
	store_recover(qs);
	queue_pool_init(qs);
	if (queue_io_start(qs, err, errlen) < 0)
		goto done;
	rc = 0;
done:
	if (root >= 0)
		close(root);
	if (rc < 0) {
		store_free(qs);
		return NULL;
	}
	return qs;
}

/* queue_store_close - finish pending jobs, run their callbacks, free. */
void queue_store_close(struct queue_store *qs)
{
	if (qs == NULL)
		return;
	store_free(qs);
}

/* queue_store_dir - the queue directory as given to open. */
const char *queue_store_dir(const struct queue_store *qs)
{
	return qs->dir;
}

/* queue_store_on_commit - set (or clear with NULL) the commit hook. */
void queue_store_on_commit(struct queue_store *qs,
                           void (*fn)(const struct queue_envelope *env, enum queue_state st,
                                      void *arg),
                           void *arg)
{
	qs->on_commit = fn;
	qs->on_commit_arg = arg;
}

/* ------------------------------------------------------------ scan */

/* store_entry_cmp - by name, then state (qsort). */
static int store_entry_cmp(const void *a, const void *b)
{
	const struct store_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : (int)x->st - (int)y->st;
}

/* store_newer - a is the more recent copy of an envelope than b. */
static bool store_newer(const struct store_entry *a, const struct store_entry *b)
{
	if (a->mtime.tv_sec != b->mtime.tv_sec)
		return a->mtime.tv_sec > b->mtime.tv_sec;
	if (a->mtime.tv_nsec != b->mtime.tv_nsec)
		return a->mtime.tv_nsec > b->mtime.tv_nsec;
	/* same time: quarantine beats hold beats deferred beats active (the
	 * copy that delivers nothing is the safe guess) */
	return a->st > b->st;
}

/* queue_store_move_corrupt - rename dir/name (and msg/name when with_msg)
 * into corrupt/ as "<state>-name[.N]" (+ ".msg"); never overwrites; counts
 * mxgate_queue_envelope_errors_total{error="corrupt"}.  0, or -1 with errno
 * when the envelope could not be moved (logged). */
int queue_store_move_corrupt(struct queue_store *qs, int dir, const char *name, bool with_msg,
                             const char *why)
{
	char dst[NAME_MAX - 8];
	char mdst[NAME_MAX + 1];
	int i, r = -1;

	for (i = 0; i < 1000; i++) {
		if (i == 0)
			snprintf(dst, sizeof(dst), "%s-%.200s", queue_dir_name(dir), name);
		else
			snprintf(dst, sizeof(dst), "%s-%.200s.%d", queue_dir_name(dir), name, i);
		r = renameat2(qs->dfd[dir], name, qs->dfd[QDIR_CORRUPT], dst, RENAME_NOREPLACE);
		if (r == 0 || errno != EEXIST)
			break;
	}
	if (r < 0) {
		int e = errno;

		util_log_err("%s queue op=move-corrupt file=%s/%s error=\"%s\" reason=\"%s\"", name,
		             queue_dir_name(dir), name, strerror(e), why);
		errno = e;
		return -1;
	}
	util_log_err("%s queue op=move-corrupt file=%s/%s to=corrupt/%s reason=\"%s\"", name,
	             queue_dir_name(dir), name, dst, why);
	if (with_msg && util_qid_is_valid(name)) {
		snprintf(mdst, sizeof(mdst), "%s.msg", dst);
		if (renameat2(qs->dfd[QDIR_MSG], name, qs->dfd[QDIR_CORRUPT], mdst,
		              RENAME_NOREPLACE) == 0)
			util_log_err("%s queue op=move-corrupt file=msg/%s to=corrupt/%s", name,
			             name, mdst);
		else if (errno != ENOENT)
			util_log_err("%s queue op=move-corrupt file=msg/%s error=\"%s\"", name,
			             name, strerror(errno));
	}
	store_sync(qs, QDIR_CORRUPT);
	store_sync(qs, dir);
	if (with_msg)
		store_sync(qs, QDIR_MSG);
	util_metrics_inc("mxgate_queue_envelope_errors_total", "corrupt");
	return 0;
}

/* store_migrate_quarantine - a message an older build quarantined into
 * hold/ (recognised by the X-Mxgate-Quarantine field of its prepend) moves
 * to quarantine/: one rename (never replacing a file), then an fsync of
 * quarantine/ before hold/, so a crash leaves the envelope in exactly one of
 * the two folders and the next start finishes the job.  The envelope's text
 * is not rewritten: its reason comes from the prepend
 * (queue_envelope_quarantine_reason).  0, or -1 (logged; it stays held). */
static int store_migrate_quarantine(struct queue_store *qs, const struct queue_envelope *env)
{
	char reason[64];

	if (queue_rename_excl(qs->dfd[QDIR_HOLD], env->id, qs->dfd[QDIR_QUARANTINE], env->id) < 0) {
		util_log_err("%s queue op=migrate file=hold/%s to=quarantine/%s error=\"%s\" "
		             "action=left-on-hold",
		             env->id, env->id, env->id, strerror(errno));
		return -1;
	}
	store_sync(qs, QDIR_QUARANTINE);
	store_sync(qs, QDIR_HOLD);
	util_log_info("%s queue op=migrate file=hold/%s to=quarantine/%s reason=%s", env->id,
	              env->id, env->id,
	              queue_envelope_quarantine_reason(env, reason, sizeof(reason)));
	return 0;
}

/* store_scan_one - parse one envelope and hand it to fn; set it aside when
 * it is unparsable; hand a read error (EMFILE, EIO, ...: maybe transient) to
 * unreadable, leaving the file where it is. */
static void store_scan_one(struct queue_store *qs, const struct store_entry *e, queue_scan_fn fn,
                           queue_scan_unreadable_fn unreadable, void *arg)
{
	int dir = QDIR_ACTIVE + (int)e->st;
	struct queue_envelope *env = NULL;
	char perr[256];
	char *text;
	size_t len = 0;

	text = store_read(qs, dir, e->name, &len, NULL);
	if (text == NULL) {
		int err = errno;

		if (err == ENOENT)
			return;
		if (err == EBADMSG) {
			snprintf(perr, sizeof(perr),
			         "not an envelope file (too big, or not a regular file)");
			goto corrupt;
		}
		util_log_err("%s queue op=scan file=%s/%s error=\"%s\" action=retry-later", e->name,
		             queue_dir_name(dir), e->name, strerror(err));
		util_metrics_inc("mxgate_queue_envelope_errors_total", "read");
		if (unreadable != NULL && util_qid_is_valid(e->name))
			unreadable(e->name, e->st, (int64_t)e->mtime.tv_sec, err, arg);
		return;
	}
	env = queue_envelope_parse(text, len, perr, sizeof(perr));
	free(text);
	if (env == NULL)
		goto corrupt;
	if (strcmp(env->id, e->name) != 0) {
		snprintf(perr, sizeof(perr), "id %s does not match the file name", env->id);
		goto corrupt;
	}
	if (e->st == QUEUE_HOLD && queue_envelope_is_legacy_quarantine(env) &&
	    store_migrate_quarantine(qs, env) == 0) {
		fn(env, QUEUE_QUARANTINE, arg);
		queue_envelope_free(env);
		return;
	}
	fn(env, e->st, arg);
	queue_envelope_free(env);
	return;
corrupt:
	queue_envelope_free(env);
	(void)queue_store_move_corrupt(qs, dir, e->name, true, perr);
}

/* queue_store_scan - call fn for every envelope (start-up, blocking). */
int queue_store_scan(struct queue_store *qs, queue_scan_fn fn, queue_scan_unreadable_fn unreadable,
                     void *arg)
{
	struct store_entry *ents = NULL;
	size_t n = 0, cap = 0, i, j;
	int rc = -1;
	int st;

	for (st = QUEUE_ACTIVE; st <= QUEUE_STATE_LAST; st++) {
		struct util_strlist names = {NULL, 0};
		int dir = QDIR_ACTIVE + st;

		if (queue_store_list(qs, dir, &names) < 0) {
			util_log_err("queue op=scan file=%s error=\"%s\"", queue_dir_name(dir),
			             strerror(errno));
			util_strlist_free(&names);
			goto done;
		}
		for (i = 0; i < names.n; i++) {
			struct stat sb;

			if (store_has_suffix(names.v[i], ".tmp"))
				continue; /* an update in flight: not an envelope yet */
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				ents = util_xrealloc(ents, cap * sizeof(*ents));
			}
			ents[n].name = util_xstrdup(names.v[i]);
			ents[n].st = (enum queue_state)st;
			ents[n].mtime.tv_sec = 0;
			ents[n].mtime.tv_nsec = 0;
			if (fstatat(qs->dfd[dir], names.v[i], &sb, AT_SYMLINK_NOFOLLOW) == 0)
				ents[n].mtime = sb.st_mtim;
			n++;
		}
		util_strlist_free(&names);
	}
	if (n > 0)
		qsort(ents, n, sizeof(*ents), store_entry_cmp);
	/* Ids sort by arrival, so fn sees the oldest message first. */
	for (i = 0; i < n; i = j) {
		size_t best = i;

		for (j = i + 1; j < n && strcmp(ents[j].name, ents[i].name) == 0; j++)
			if (store_newer(&ents[j], &ents[best]))
				best = j;
		for (size_t k = i; k < j; k++) {
			char why[64];

			if (k == best)
				continue;
			snprintf(why, sizeof(why), "duplicate; newer copy in %s/",
			         queue_dir_name(QDIR_ACTIVE + (int)ents[best].st));
			(void)queue_store_move_corrupt(qs, QDIR_ACTIVE + (int)ents[k].st,
			                               ents[k].name, false, why);
		}
		store_scan_one(qs, &ents[best], fn, unreadable, arg);
	}
	rc = 0;
done:
	for (i = 0; i < n; i++)
		free(ents[i].name);
	free(ents);
	return rc;
}

/* ------------------------------------------------------------ single envelopes */

/* queue_env_load - read and parse the envelope of id from its state folder. */
int queue_env_load(struct queue_store *qs, const char *id, struct queue_envelope **out,
                   enum queue_state *st)
{
	char perr[256];
	int s;

	*out = NULL;
	if (!util_qid_is_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	for (s = QUEUE_ACTIVE; s <= QUEUE_STATE_LAST; s++) {
		struct queue_envelope *env;
		size_t len = 0;
		char *text = store_read(qs, QDIR_ACTIVE + s, id, &len, NULL);

		if (text == NULL && errno == ENOENT)
			continue;
		if (text == NULL) {
			int e = errno;

			util_log_err("%s queue op=load file=%s/%s error=\"%s\"", id,
			             queue_dir_name(QDIR_ACTIVE + s), id, strerror(e));
			if (st != NULL)
				*st = (enum queue_state)s;
			errno = e;
			return -1;
		}
		env = queue_envelope_parse(text, len, perr, sizeof(perr));
		free(text);
		if (env != NULL && strcmp(env->id, id) != 0) {
			snprintf(perr, sizeof(perr), "id %s does not match the file name", env->id);
			queue_envelope_free(env);
			env = NULL;
		}
		if (env == NULL) {
			util_log_err("%s queue op=load file=%s/%s error=\"%s\"", id,
			             queue_dir_name(QDIR_ACTIVE + s), id, perr);
			if (st != NULL)
				*st = (enum queue_state)s;
			errno = EBADMSG;
			return -1;
		}
		*out = env;
		if (st != NULL)
			*st = (enum queue_state)s;
		return 0;
	}
	errno = ENOENT;
	return -1;
}

/* queue_msg_path - "<dir>/msg/<id>" into out. */
void queue_msg_path(const struct queue_store *qs, const char *id, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/msg/%s", qs->dir, id);
}

/* ------------------------------------------------------------ spools */

/* queue_spool_new - create incoming/ID.msg for a new message. */
struct queue_spool *queue_spool_new(struct queue_store *qs)
{
	struct queue_spool *sp;
	char name[UTIL_QID_LEN + 8];
	int tries;

	sp = util_xcalloc(1, sizeof(*sp));
	sp->qs = qs;
	sp->fd = -1;
	for (tries = 0; tries < 10 && sp->fd < 0; tries++) {
		util_qid_new(sp->id);
		errno = 0;
		if (store_has_envelope(qs, sp->id)) {
			/* An id of an earlier run (clock went back), or a state
			 * folder we cannot read: report which. */
			if (errno == 0 || errno == ENOENT)
				errno = EEXIST;
			continue;
		}
		snprintf(name, sizeof(name), "%s.msg", sp->id);
		sp->fd = queue_pool_open(qs, QDIR_INCOMING, name, &sp->prior);
		if (sp->fd < 0 && errno != EEXIST)
			break;
	}
	if (sp->fd < 0) {
		int e = errno;

		util_log_err("%s queue op=spool-create error=\"%s\"", sp->id, strerror(e));
		free(sp);
		errno = e;
		return NULL;
	}
	return sp;
}

/* queue_spool_id - the queue id the message will have. */
const char *queue_spool_id(const struct queue_spool *sp)
{
	return sp->id;
}

/* queue_spool_write - append n bytes (no fsync: the commit does that). */
int queue_spool_write(struct queue_spool *sp, const void *p, size_t n)
{
	const char *s = p;

	if (sp->err != 0) {
		errno = sp->err;
		return -1;
	}
	while (n > 0) {
		ssize_t w = write(sp->fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			sp->err = w < 0 ? errno : EIO;
			util_log_err("%s queue op=spool-write size=%lld error=\"%s\"", sp->id,
			             (long long)sp->size, strerror(sp->err));
			errno = sp->err;
			return -1;
		}
		s += w;
		n -= (size_t)w;
		sp->size += w;
	}
	return 0;
}

/* queue_spool_size - bytes written so far. */
int64_t queue_spool_size(const struct queue_spool *sp)
{
	return sp->size;
}

/* queue_spool_open_read - incoming/ID.msg, read-only. */
int queue_spool_open_read(const struct queue_spool *sp)
{
	char name[UTIL_QID_LEN + 8];

	snprintf(name, sizeof(name), "%s.msg", sp->id);
	return openat(sp->qs->dfd[QDIR_INCOMING], name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

struct queue_pin {
	struct queue_store *qs;
	int fd;
	dev_t dev;
	ino_t ino;
};

/* queue_spool_pin - see queue.h.  Pinned before the commit, so before
 * anything can retire the file. */
struct queue_pin *queue_spool_pin(const struct queue_spool *sp)
{
	struct queue_pin *pin;
	struct stat st;
	int fd = queue_spool_open_read(sp);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return NULL;
	}
	pin = util_xcalloc(1, sizeof(*pin));
	pin->qs = sp->qs;
	pin->fd = fd;
	pin->dev = st.st_dev;
	pin->ino = st.st_ino;
	queue_pool_pin(sp->qs, pin->dev, pin->ino);
	return pin;
}

/* queue_pin_fd - see queue.h. */
int queue_pin_fd(const struct queue_pin *pin)
{
	return pin->fd;
}

/* queue_pin_free - see queue.h.  Closed before unpinned: once unpinned the
 * file may be recycled, and by then nobody reads it through pin->fd. */
void queue_pin_free(struct queue_pin *pin)
{
	if (pin == NULL)
		return;
	close(pin->fd);
	queue_pool_unpin(pin->qs, pin->dev, pin->ino);
	free(pin);
}

/* queue_spool_abort - recycle (or unlink) the spool file and free; NULL is
 * a no-op.  After a disk-full error the pool is emptied instead. */
void queue_spool_abort(struct queue_spool *sp)
{
	char name[UTIL_QID_LEN + 8];
	int r;

	if (sp == NULL)
		return;
	snprintf(name, sizeof(name), "%s.msg", sp->id);
	if (sp->err == ENOSPC || sp->err == EDQUOT) {
		r = unlinkat(sp->qs->dfd[QDIR_INCOMING], name, 0);
		queue_io_drain_pool(sp->qs);
	} else {
		r = queue_pool_put(sp->qs, QDIR_INCOMING, name, sp->id, "s");
	}
	if (r < 0 && errno != ENOENT)
		util_log_warn("%s queue op=spool-abort error=\"%s\"", sp->id, strerror(errno));
	if (sp->fd >= 0)
		close(sp->fd);
	free(sp);
}

/* ------------------------------------------------------------ jobs */

/* store_stamp - fill the fields the store owns before serialising. */
static void store_stamp(struct queue_envelope *env, const char *id, int64_t size)
{
	memcpy(env->id, id, UTIL_QID_LEN + 1);
	env->size = size;
	if (env->arrival == 0)
		env->arrival = (int64_t)time(NULL);
}

/* store_commit - hand the spool and its envelope to the I/O thread; to = QDIR_* of the envelope. */
static void store_commit(struct queue_store *qs, struct queue_spool *sp, struct queue_envelope *env,
                         int to, queue_commit_cb cb, uint64_t cookie, void *arg)
{
	struct queue_job *j = queue_io_job_new(QUEUE_JOB_COMMIT);

	memcpy(j->id, sp->id, sizeof(j->id));
	j->fd = sp->fd;
	j->prior = sp->prior;
	j->steps = QUEUE_STEP_SPOOL;
	if (sp->err != 0) {
		j->status = -1;
		j->err = sp->err;
	}
	store_stamp(env, sp->id, sp->size);
	free(sp);
	j->env = env;
	j->text = queue_envelope_serialize(env, &j->text_len);
	j->to = to;
	j->ccb = cb;
	j->cookie = cookie;
	j->arg = arg;
	queue_io_submit(qs, j);
}

/* queue_commit - see queue.h: the envelope goes to active/. */
void queue_commit(struct queue_store *qs, struct queue_spool *sp, struct queue_envelope *env,
                  queue_commit_cb cb, uint64_t cookie, void *arg)
{
	store_commit(qs, sp, env, QDIR_ACTIVE, cb, cookie, arg);
}

/* queue_commit_quarantined - see queue.h: the envelope goes to
 * quarantine/ (same phases, same single fsync per folder; the commit point
 * is the fsync of quarantine/). */
void queue_commit_quarantined(struct queue_store *qs, struct queue_spool *sp,
                              struct queue_envelope *env, queue_commit_cb cb, uint64_t cookie,
                              void *arg)
{
	store_commit(qs, sp, env, QDIR_QUARANTINE, cb, cookie, arg);
}

/* queue_inject - commit a generated message; msg is copied. */
void queue_inject(struct queue_store *qs, struct queue_envelope *env, const void *msg, size_t len,
                  queue_commit_cb cb, uint64_t cookie, void *arg)
{
	struct queue_job *j = queue_io_job_new(QUEUE_JOB_INJECT);

	util_qid_new(j->id);
	j->data = util_xmalloc(len > 0 ? len : 1);
	if (len > 0)
		memcpy(j->data, msg, len);
	j->len = len;
	store_stamp(env, j->id, (int64_t)len);
	j->env = env;
	j->text = queue_envelope_serialize(env, &j->text_len);
	j->to = QDIR_ACTIVE;
	j->ccb = cb;
	j->cookie = cookie;
	j->arg = arg;
	queue_io_submit(qs, j);
}

/* store_state_ok - st is a known state. */
static bool store_state_ok(enum queue_state st)
{
	return (unsigned)st <= QUEUE_STATE_LAST;
}

/* queue_env_update - durably replace the envelope, maybe in another folder. */
void queue_env_update(struct queue_store *qs, const struct queue_envelope *env,
                      enum queue_state from, enum queue_state to, queue_done_cb cb, void *arg)
{
	struct queue_job *j = queue_io_job_new(QUEUE_JOB_UPDATE);

	snprintf(j->id, sizeof(j->id), "%s", env->id);
	j->dcb = cb;
	j->arg = arg;
	if (!util_qid_is_valid(env->id) || !store_state_ok(from) || !store_state_ok(to)) {
		util_log_err("%s queue op=update error=\"bad id or state\"", j->id);
		j->status = -1;
		j->err = EINVAL;
	} else {
		j->from = QDIR_ACTIVE + (int)from;
		j->to = QDIR_ACTIVE + (int)to;
		j->text = queue_envelope_serialize(env, &j->text_len);
	}
	queue_io_submit(qs, j);
}

/* store_remove - a remove job: the envelope (commit point), then msg/ID. */
static void store_remove(struct queue_store *qs, const char *id, enum queue_state from,
                         queue_done_cb cb, void *arg, bool purge)
{
	struct queue_job *j = queue_io_job_new(QUEUE_JOB_REMOVE);

	snprintf(j->id, sizeof(j->id), "%s", id);
	j->dcb = cb;
	j->arg = arg;
	j->purge = purge;
	if (!util_qid_is_valid(id) || !store_state_ok(from)) {
		util_log_err("%s queue op=remove error=\"bad id or state\"", j->id);
		j->status = -1;
		j->err = EINVAL;
	} else {
		j->from = QDIR_ACTIVE + (int)from;
	}
	queue_io_submit(qs, j);
}

/* queue_env_set_aside - an unparsable envelope (and msg/ID) into corrupt/. */
void queue_env_set_aside(struct queue_store *qs, const char *id, enum queue_state st,
                         queue_done_cb cb, void *arg)
{
	struct queue_job *j = queue_io_job_new(QUEUE_JOB_CORRUPT);

	snprintf(j->id, sizeof(j->id), "%s", id);
	j->dcb = cb;
	j->arg = arg;
	j->text = util_xstrdup("unparsable envelope found by the scheduler");
	if (!util_qid_is_valid(id) || !store_state_ok(st)) {
		util_log_err("%s queue op=set-aside error=\"bad id or state\"", j->id);
		j->status = -1;
		j->err = EINVAL;
	} else {
		j->from = QDIR_ACTIVE + (int)st;
	}
	queue_io_submit(qs, j);
}

/* queue_msg_remove - remove the envelope (commit point), then msg/ID; the
 * files are recycled. */
void queue_msg_remove(struct queue_store *qs, const char *id, enum queue_state from,
                      queue_done_cb cb, void *arg)
{
	store_remove(qs, id, from, cb, arg, false);
}

/* queue_msg_purge - the same, the files unlinked (a postmaster's delete). */
void queue_msg_purge(struct queue_store *qs, const char *id, enum queue_state from,
                     queue_done_cb cb, void *arg)
{
	store_remove(qs, id, from, cb, arg, true);
}
