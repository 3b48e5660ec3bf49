/*
 * smtp-deliver-dir.c - routes of type directory: each message becomes
 * DIR/ID.eml, written atomically (DIR/.ID.eml.tmp with O_EXCL, write,
 * fsync, rename, fsync DIR), so a reader never sees a partial file and a
 * crash leaves either nothing or the complete file.  A repeated delivery
 * after a crash replaces the file with identical content.
 *
 * The file holds Return-Path (RFC 5321 4.4) and one Delivered-To per
 * recipient, then env->prepend and msg/ID as they are.
 *
 * The write and its fsyncs run on a short-lived worker thread per message,
 * never on the loop thread; completion comes back through an event owned by
 * the loop (libevent is set up with evthread_use_pthreads()).
 *
 * Ownership: a job borrows the scheduler's envelope until it reports (the
 * scheduler does not touch it during an attempt); it owns its copy of DIR.
 *
 * Diagnostics: failures become the deferral reason, e.g.
 * "4.3.0 write /srv/mail/ID.eml: No space left on device".
 */
#include "smtp-deliver-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct deliver_dir_job {
	struct deliver_job *j;
	char *dir;
	pthread_t thread;
	bool has_thread;
	struct event *done_ev;
	char *error;         /* set by the worker on failure */
	char path[PATH_MAX]; /* final file name */
	struct deliver_dir_job *next;
};

/* dir_copy_file - append the file at path to fd. */
static int dir_copy_file(int fd, const char *path)
{
	int in = open(path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -1;
	char buf[65536];
	int rc = 0;
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -1;
			break;
		}
		if (n == 0)
			break;
		if (util_write_all(fd, buf, (size_t)n) != 0) {
			rc = -1;
			break;
		}
	}
	int saved = errno;
	close(in);
	errno = saved;
	return rc;
}

/* dir_write - the worker's job: tmp + write + fsync + rename + fsync dir. */
static void *dir_write(void *arg)
{
	struct deliver_dir_job *dj = arg;
	const struct queue_envelope *env = dj->j->env;
	char tmp[PATH_MAX];
	int fd = -1;
	const char *step = "create";
	snprintf(dj->path, sizeof(dj->path), "%s/%s.eml", dj->dir, env->id);
	snprintf(tmp, sizeof(tmp), "%s/.%s.eml.tmp", dj->dir, env->id);
	if (util_mkdir_p(dj->dir, 0750) != 0)
		goto err;
	unlink(tmp); /* left over by a crash in the middle of a write */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		goto err;
	step = "write";
	struct util_buf hdr;
	util_buf_init(&hdr);
	util_buf_printf(&hdr, "Return-Path: <%s>\r\n", env->sender);
	for (size_t i = 0; i < dj->j->nidx; i++)
		util_buf_printf(&hdr, "Delivered-To: %s\r\n", env->rcpts[dj->j->idx[i]].addr);
	if (env->prepend)
		util_buf_adds(&hdr, env->prepend);
	int rc = util_write_all(fd, hdr.data, hdr.len);
	util_buf_free(&hdr);
	if (rc != 0 || dir_copy_file(fd, dj->j->msg_path) != 0)
		goto err;
	step = "fsync";
	if (fsync(fd) != 0)
		goto err;
	step = "close";
	if (close(fd) != 0) {
		fd = -1;
		goto err;
	}
	fd = -1;
	step = "rename";
	if (rename(tmp, dj->path) != 0)
		goto err;
	step = "fsync directory";
	if (util_fsync_dir(dj->dir) != 0)
		goto err;
	event_active(dj->done_ev, 0, 0);
	return NULL;
err:
	dj->error = util_xasprintf("4.3.0 %s %s: %s", step, dj->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	event_active(dj->done_ev, 0, 0);
	return NULL;
}

/* dir_unlink - take dj off the deliverer's list. */
static void dir_unlink(struct smtp_deliverer *dl, struct deliver_dir_job *dj)
{
	struct deliver_dir_job **pp = &dl->dir_jobs;
	while (*pp && *pp != dj)
		pp = &(*pp)->next;
	if (*pp)
		*pp = dj->next;
}

/* dir_job_free - after the worker was joined. */
static void dir_job_free(struct deliver_dir_job *dj)
{
	event_free(dj->done_ev);
	free(dj->error);
	free(dj->dir);
	free(dj->j);
	free(dj);
}

/* dir_done_cb - loop thread: report the outcome of the write. */
static void dir_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct deliver_dir_job *dj = arg;
	if (dj->has_thread)
		pthread_join(dj->thread, NULL);
	dir_unlink(dj->j->dl, dj);
	struct smtp_client_tx tx;
	smtp_client_tx_init(&tx, dj->j->env, dj->j->idx, dj->j->nidx, dj->j->msg_path);
	char reply[PATH_MAX + 64];
	snprintf(reply, sizeof(reply), "250 2.0.0 written to %s", dj->path);
	for (size_t i = 0; i < dj->j->nidx; i++)
		smtp_client_tx_set(&tx, i, dj->error ? 0 : 250, dj->error ? dj->error : reply);
	if (dj->error)
		tx.error = util_xstrdup(dj->error);
	smtp_deliver_job_report(dj->j, &tx, dj->dir, "none", dj->error);
	smtp_client_tx_clear(&tx);
	dir_job_free(dj);
}

/* smtp_deliver_dir_start - write the message into dir on a worker thread. */
void smtp_deliver_dir_start(struct smtp_deliverer *dl, struct deliver_job *j, const char *dir)
{
	struct deliver_dir_job *dj = util_xcalloc(1, sizeof(*dj));
	dj->j = j;
	dj->dir = util_xstrdup(dir ? dir : "mailbox");
	dj->done_ev = event_new(dl->base, -1, 0, dir_done_cb, dj);
	dj->next = dl->dir_jobs;
	dl->dir_jobs = dj;
	int rc = pthread_create(&dj->thread, NULL, dir_write, dj);
	if (rc != 0) {
		/* no thread: a deferral, reported from a fresh loop turn */
		dj->error = util_xasprintf("4.3.0 cannot start writer thread: %s", strerror(rc));
		event_active(dj->done_ev, 0, 0);
		return;
	}
	dj->has_thread = true;
}

/* smtp_deliver_dir_shutdown - wait for the writers and report each job
 * with error (the deliverer is going away). */
void smtp_deliver_dir_shutdown(struct smtp_deliverer *dl, const char *error)
{
	while (dl->dir_jobs) {
		struct deliver_dir_job *dj = dl->dir_jobs;
		dl->dir_jobs = dj->next;
		if (dj->has_thread)
			pthread_join(dj->thread, NULL);
		smtp_deliver_job_report(dj->j, NULL, NULL, NULL, error);
		dir_job_free(dj);
	}
}
