/*
 * queue-pool.c - recycled queue files: a removed message's files are renamed
 * into free/ instead of being unlinked, and the next spool or envelope is
 * renamed out of free/ instead of being created.
 *
 * Why: creating and deleting inodes is what a mail queue does all day, and it
 * is the largest cost the benchmark's profile found (docs/performance.md,
 * cost 2): on an ext4 without a journal every creation scans the block
 * group's recently deleted inodes, and the time grows as the queue churns.
 * A rename allocates and frees nothing.  A recycled file is written from
 * offset 0 over its old blocks and cut to the new length (queue_pool_trim)
 * before it is fsynced and before it gets a name any reader looks at, so old
 * bytes never show through.
 *
 * Safety: a file in free/ is never read as queue data.  Start-up adopts what
 * free/ holds (up to the limits; the rest is unlinked), so a crash at any
 * point leaves nothing to recover.  Moving an envelope into free/ removes it
 * from its state folder exactly as unlinking would (the commit point of a
 * removal), and free/ itself is never fsynced.  But until the state folder
 * is fsynced that removal is not durable: a crash can bring the envelope's
 * name back, pointing at the same inode.  So an envelope file is only
 * retired (moved into free/, not listed) when it leaves its folder, and
 * published for reuse after the batch's fsync of that folder
 * (queue_pool_retire / queue_pool_publish, called by queue-io.c); were it
 * reused earlier, a crash could leave an envelope name over another
 * message's bytes.  Aborted spools and removed msg/ID files (whose
 * envelope's removal is already durable) are published at once.
 *
 * Pins: a reader that may outlive the message (the report ingester reads
 * its copy of a report after the commit, possibly after delivery) pins the
 * file's inode (queue_spool_pin).  A pinned file is unlinked, never moved
 * into free/, when its message goes: were it recycled, the next message
 * would be written over it while the reader still holds it, and the reader
 * would read another sender's bytes.  The unlinked inode lives on until the
 * reader closes it.  The check costs one comparison while nothing is
 * pinned (ordinary mail), under the mutex queue_pool_retire takes anyway.
 *
 * Limits: at most QUEUE_POOL_FILES files and QUEUE_POOL_BYTES of disk; a
 * file bigger than QUEUE_POOL_FILE_MAX is unlinked.  When a write fails with
 * ENOSPC or EDQUOT the whole pool is unlinked (queue_pool_drain), so free/
 * never holds space a new message needs.
 *
 * Threads: the loop thread takes spools and returns aborted ones; the I/O
 * thread takes envelope files and returns removed messages.  The list of
 * names is guarded by its own mutex; the file-system calls run outside it.
 */
#include "queue-store-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* queue_rename_excl - rename that never replaces an existing file. */
int queue_rename_excl(int ofd, const char *oname, int nfd, const char *nname)
{
	struct stat st;

	if (renameat2(ofd, oname, nfd, nname, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* The file system has no RENAME_NOREPLACE: check, then rename.  Only
	 * the daemon creates names in its queue. */
	if (fstatat(nfd, nname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		return -1;
	}
	return renameat(ofd, oname, nfd, nname);
}

/* pool_push - add a name (under mu); false when the limits say no. */
static bool pool_push(struct queue_pool *p, const char *name, int64_t size, int64_t bytes)
{
	struct queue_pool_ent *e;

	if (p->n >= QUEUE_POOL_FILES || p->bytes + bytes > QUEUE_POOL_BYTES)
		return false;
	e = &p->v[p->n++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->size = size;
	e->bytes = bytes;
	p->bytes += bytes;
	return true;
}

/* pool_pop - take the newest name (under mu); false when empty. */
static bool pool_pop(struct queue_pool *p, struct queue_pool_ent *out)
{
	if (p->n == 0)
		return false;
	*out = p->v[--p->n];
	p->bytes -= out->bytes;
	return true;
}

/* pool_take - pool_pop under the lock. */
static bool pool_take(struct queue_pool *p, struct queue_pool_ent *out)
{
	bool got;

	pthread_mutex_lock(&p->mu);
	got = pool_pop(p, out);
	pthread_mutex_unlock(&p->mu);
	return got;
}

/* pool_usable - a regular file small enough to keep, with no other name
 * (a hard link made as a backup must never be overwritten by reuse). */
static bool pool_usable(const struct stat *st)
{
	return S_ISREG(st->st_mode) && st->st_nlink == 1 && st->st_size <= QUEUE_POOL_FILE_MAX;
}

/* pool_pinned - is dev/ino pinned (under mu)? */
static bool pool_pinned(const struct queue_pool *p, const struct stat *st)
{
	for (size_t i = 0; i < p->npins; i++)
		if (p->pins[i].ino == st->st_ino && p->pins[i].dev == st->st_dev)
			return true;
	return false;
}

/* queue_pool_pin - see queue-store-internal.h. */
void queue_pool_pin(struct queue_store *qs, dev_t dev, ino_t ino)
{
	struct queue_pool *p = &qs->pool;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->npins; i++) {
		if (p->pins[i].ino == ino && p->pins[i].dev == dev) {
			p->pins[i].refs++;
			pthread_mutex_unlock(&p->mu);
			return;
		}
	}
	if (p->npins == p->pins_cap) {
		p->pins_cap = p->pins_cap ? 2 * p->pins_cap : 16;
		p->pins = util_xrealloc(p->pins, p->pins_cap * sizeof(*p->pins));
	}
	p->pins[p->npins++] = (struct queue_pool_pin){.dev = dev, .ino = ino, .refs = 1};
	pthread_mutex_unlock(&p->mu);
}

/* queue_pool_unpin - see queue-store-internal.h. */
void queue_pool_unpin(struct queue_store *qs, dev_t dev, ino_t ino)
{
	struct queue_pool *p = &qs->pool;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->npins; i++) {
		if (p->pins[i].ino == ino && p->pins[i].dev == dev) {
			if (--p->pins[i].refs == 0)
				p->pins[i] = p->pins[--p->npins];
			break;
		}
	}
	pthread_mutex_unlock(&p->mu);
}

/* queue_pool_init - adopt what free/ holds (start-up, before the thread). */
void queue_pool_init(struct queue_store *qs)
{
	struct queue_pool *p = &qs->pool;
	struct util_strlist names = {NULL, 0};
	size_t i, kept = 0, dropped = 0;

	pthread_mutex_init(&p->mu, NULL);
	p->v = util_xcalloc(QUEUE_POOL_FILES, sizeof(*p->v));
	p->init = true;
	if (queue_store_list(qs, QDIR_FREE, &names) < 0) {
		util_log_warn("queue op=list file=free error=\"%s\"", strerror(errno));
		return;
	}
	for (i = 0; i < names.n; i++) {
		const char *name = names.v[i];
		struct stat st;

		if (fstatat(qs->dfd[QDIR_FREE], name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    pool_usable(&st) && strlen(name) < sizeof(p->v[0].name) &&
		    pool_push(p, name, st.st_size, (int64_t)st.st_blocks * 512)) {
			kept++;
			continue;
		}
		if (unlinkat(qs->dfd[QDIR_FREE], name, 0) == 0)
			dropped++;
		else if (errno != ENOENT)
			util_log_warn("queue op=unlink file=free/%s error=\"%s\"", name,
			              strerror(errno));
	}
	util_strlist_free(&names);
	if (kept + dropped > 0)
		util_log_debug("queue op=pool-adopt kept=%zu dropped=%zu", kept, dropped);
}

/* queue_pool_fini - forget the names (the files stay in free/ for the next
 * start). */
void queue_pool_fini(struct queue_store *qs)
{
	struct queue_pool *p = &qs->pool;

	if (!p->init)
		return;
	pthread_mutex_destroy(&p->mu);
	free(p->v);
	p->v = NULL;
	p->n = 0;
	free(p->pins);
	p->pins = NULL;
	p->npins = p->pins_cap = 0;
	p->init = false;
}

/* queue_pool_open - a new file dir/name for writing from offset 0: a
 * recycled one when the pool has one (*prior = its old length), otherwise
 * created with O_EXCL (*prior = -1).  Like O_CREAT|O_EXCL, it fails with
 * EEXIST when dir/name exists; -1 with errno on error. */
int queue_pool_open(struct queue_store *qs, int dir, const char *name, int64_t *prior)
{
	struct queue_pool *p = &qs->pool;
	struct queue_pool_ent e;
	int fd;

	*prior = -1;
	while (pool_take(p, &e)) {
		if (queue_rename_excl(qs->dfd[QDIR_FREE], e.name, qs->dfd[dir], name) < 0) {
			int err = errno;

			if (err == ENOENT)
				continue; /* gone behind our back: try the next one */
			/* the name is taken (or the rename is refused): keep the
			 * free file for later and report like O_EXCL would */
			pthread_mutex_lock(&p->mu);
			bool kept = pool_push(p, e.name, e.size, e.bytes);
			pthread_mutex_unlock(&p->mu);
			if (!kept)
				(void)unlinkat(qs->dfd[QDIR_FREE], e.name, 0);
			if (err == EEXIST) {
				errno = err;
				return -1;
			}
			break;
		}
		fd = openat(qs->dfd[dir], name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			*prior = e.size;
			return fd;
		}
		util_log_warn("queue op=pool-open file=%s/%s error=\"%s\"", queue_dir_name(dir),
		              name, strerror(errno));
		(void)unlinkat(qs->dfd[dir], name, 0);
	}
	return openat(qs->dfd[dir], name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
}

/* queue_pool_trim - cut a recycled file to size (a no-op for a new one or
 * one that grew); 0, or -1 with errno. */
int queue_pool_trim(int fd, int64_t prior, int64_t size)
{
	if (prior <= size)
		return 0;
	return ftruncate(fd, (off_t)size);
}

/* queue_pool_retire - move dir/name into free/ as id.tag without listing
 * it (out->name "" when it was unlinked instead: not worth keeping, pinned,
 * or the pool is full).  0, or -1 with errno as unlinkat would report it (ENOENT
 * when there is no such file). */
int queue_pool_retire(struct queue_store *qs, int dir, const char *name, const char *id,
                      const char *tag, struct queue_pool_ent *out)
{
	struct queue_pool *p = &qs->pool;
	int64_t bytes;
	struct stat st;
	bool room;

	out->name[0] = '\0';
	if (fstatat(qs->dfd[dir], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	if (!pool_usable(&st))
		return unlinkat(qs->dfd[dir], name, 0);
	bytes = (int64_t)st.st_blocks * 512;
	pthread_mutex_lock(&p->mu);
	room = p->n < QUEUE_POOL_FILES && p->bytes + bytes <= QUEUE_POOL_BYTES &&
	       (p->npins == 0 || !pool_pinned(p, &st));
	pthread_mutex_unlock(&p->mu);
	if (!room) /* the pool is full, or a reader holds the file (pinned) */
		return unlinkat(qs->dfd[dir], name, 0);
	snprintf(out->name, sizeof(out->name), "%s.%s", id, tag);
	if (queue_rename_excl(qs->dfd[dir], name, qs->dfd[QDIR_FREE], out->name) < 0) {
		out->name[0] = '\0';
		return errno == ENOENT ? -1 : unlinkat(qs->dfd[dir], name, 0);
	}
	out->size = st.st_size;
	out->bytes = bytes;
	return 0;
}

/* queue_pool_publish - list a retired file for reuse.  It is named in free/
 * before it is listed, so nobody can take a name whose file is not there
 * yet.  The other thread may have filled the pool meanwhile: then the file
 * goes.  A no-op for an empty name; e is emptied. */
void queue_pool_publish(struct queue_store *qs, struct queue_pool_ent *e)
{
	struct queue_pool *p = &qs->pool;
	bool room;

	if (e->name[0] == '\0')
		return;
	pthread_mutex_lock(&p->mu);
	room = pool_push(p, e->name, e->size, e->bytes);
	pthread_mutex_unlock(&p->mu);
	if (!room)
		(void)unlinkat(qs->dfd[QDIR_FREE], e->name, 0);
	e->name[0] = '\0';
}

/* queue_pool_discard - unlink a retired file instead of listing it (its
 * removal may not be durable: a crash could bring the old name back, so its
 * bytes must never be overwritten).  A no-op for an empty name. */
void queue_pool_discard(struct queue_store *qs, struct queue_pool_ent *e)
{
	if (e->name[0] == '\0')
		return;
	if (unlinkat(qs->dfd[QDIR_FREE], e->name, 0) < 0 && errno != ENOENT)
		util_log_warn("queue op=unlink file=free/%s error=\"%s\"", e->name,
		              strerror(errno));
	e->name[0] = '\0';
}

/* queue_pool_put - recycle dir/name (as id.tag in free/) for immediate reuse,
 * or unlink it when the pool is full or the file is not worth keeping.  Only
 * for a file whose old name nothing reads after a crash (an aborted spool,
 * a removed message's msg/ID); a file retired from a state folder waits
 * for that folder's fsync (queue_pool_retire).  0, or -1 with errno. */
int queue_pool_put(struct queue_store *qs, int dir, const char *name, const char *id,
                   const char *tag)
{
	struct queue_pool_ent e;

	if (queue_pool_retire(qs, dir, name, id, tag, &e) < 0)
		return -1;
	queue_pool_publish(qs, &e);
	return 0;
}

/* queue_pool_drain - unlink every pooled file (the disk is full). */
void queue_pool_drain(struct queue_store *qs)
{
	struct queue_pool *p = &qs->pool;
	struct queue_pool_ent e;
	size_t n = 0;

	while (pool_take(p, &e))
		if (unlinkat(qs->dfd[QDIR_FREE], e.name, 0) == 0)
			n++;
	if (n > 0)
		util_log_info("queue op=pool-drain unlinked=%zu reason=disk-full", n);
}

/* queue_pool_size - files in the pool now (for tests and status). */
size_t queue_pool_size(struct queue_store *qs)
{
	size_t n;

	pthread_mutex_lock(&qs->pool.mu);
	n = qs->pool.n;
	pthread_mutex_unlock(&qs->pool.mu);
	return n;
}

/* queue_pool_bytes - disk held by the pool now (st_blocks). */
int64_t queue_pool_bytes(struct queue_store *qs)
{
	int64_t n;

	pthread_mutex_lock(&qs->pool.mu);
	n = qs->pool.bytes;
	pthread_mutex_unlock(&qs->pool.mu);
	return n;
}
