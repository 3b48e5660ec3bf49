/*
 * util-pool.c - a bounded pool of worker threads for blocking work.
 *
 * A job runs work(arg) on one of N threads, then done(arg) on the loop
 * thread.  Completions travel through a mutex-protected list and a
 * self-pipe watched by a libevent event the pool creates on the loop's
 * base, so the pool works whether or not libevent was set up for threads.
 * The queue of waiting jobs is bounded: util_pool_submit() fails when it
 * is full and the caller answers 4xx instead of letting it grow.  Users:
 * the policy workers (policy/policy-pool.c: SPF, DKIM, DMARC) and the
 * content workers (smtp/: attachment policy, external-sender banner).
 *
 * Ownership: the pool never owns arg.  Every submitted job ends in exactly
 * one of: done(arg) on the loop, or the pool's drop(arg) from
 * util_pool_free() (stopped before its completion ran; the job is
 * abandoned: the owner frees arg there).  A job taken back with
 * util_pool_cancel() before it started still completes, without its work.
 * Threads: submit/cancel/free on the loop thread; work on workers.
 * Diagnostics: thread/pipe creation errors into err.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

struct pool_job {
	void *arg;
	util_pool_fn work, done;
	struct pool_job *next;
};

struct util_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct pool_job *qhead, *qtail; /* waiting for a worker */
	size_t qlen, qmax;
	struct pool_job *dhead, *dtail; /* finished, waiting for the loop */
	size_t running;                 /* jobs on a worker now */
	bool stop;
	pthread_t *threads;
	int nthreads;
	int pipefd[2];
	bool woken; /* a byte is in the pipe */
	struct event *ev;
	util_pool_fn drop;
};

/* pool_push_done - locked: append a finished job and wake the loop. */
static void pool_push_done(struct util_pool *p, struct pool_job *j)
{
	j->next = NULL;
	if (p->dtail != NULL)
		p->dtail->next = j;
	else
		p->dhead = j;
	p->dtail = j;
	if (!p->woken) {
		ssize_t w = write(p->pipefd[1], "j", 1);
		(void)w;
		p->woken = true;
	}
}

/* pool_worker - thread body: take a job, run it, queue its completion. */
static void *pool_worker(void *arg)
{
	struct util_pool *p = arg;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct pool_job *j;

		while (!p->stop && p->qhead == NULL)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop)
			break;
		j = p->qhead;
		p->qhead = j->next;
		if (p->qhead == NULL)
			p->qtail = NULL;
		p->qlen--;
		p->running++;
		pthread_mutex_unlock(&p->mu);
		j->work(j->arg);
		pthread_mutex_lock(&p->mu);
		p->running--;
		pool_push_done(p, j);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* pool_on_done - loop thread: run the completions. */
static void pool_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct util_pool *p = arg;
	struct pool_job *list;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&p->mu);
	list = p->dhead;
	p->dhead = p->dtail = NULL;
	p->woken = false;
	pthread_mutex_unlock(&p->mu);
	while (list != NULL) {
		struct pool_job *j = list;

		list = j->next;
		j->done(j->arg);
		free(j);
	}
}

/* util_pool_new - see util.h. */
struct util_pool *util_pool_new(struct event_base *base, int nthreads, size_t qmax,
                                util_pool_fn drop, char *err, size_t errlen)
{
	struct util_pool *p = util_xcalloc(1, sizeof(*p));

	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->qmax = qmax;
	p->drop = drop;
	p->pipefd[0] = p->pipefd[1] = -1;
	if (pipe2(p->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto err;
	}
	p->ev = event_new(base, p->pipefd[0], EV_READ | EV_PERSIST, pool_on_done, p);
	if (p->ev == NULL || event_add(p->ev, NULL) < 0) {
		snprintf(err, errlen, "cannot watch the worker pool pipe");
		goto err;
	}
	p->threads = util_xcalloc(nthreads > 0 ? (size_t)nthreads : 1, sizeof(*p->threads));
	for (int i = 0; i < nthreads; i++) {
		if (pthread_create(&p->threads[i], NULL, pool_worker, p) != 0) {
			snprintf(err, errlen, "cannot start worker thread %d", i);
			goto err;
		}
		p->nthreads++;
	}
	return p;
err:
	util_pool_free(p);
	return NULL;
}

/* util_pool_free - see util.h. */
void util_pool_free(struct util_pool *p)
{
	struct pool_job *lists[2];

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	/* A worker finishes the job it holds (bounded: jobs are bounded by
	 * their own size limits), then sees stop. */
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	lists[0] = p->qhead; /* never ran */
	lists[1] = p->dhead; /* ran, completion never delivered */
	for (int k = 0; k < 2; k++)
		while (lists[k] != NULL) {
			struct pool_job *j = lists[k];
			lists[k] = j->next;
			if (p->drop != NULL)
				p->drop(j->arg);
			free(j);
		}
	if (p->ev != NULL)
		event_free(p->ev);
	if (p->pipefd[0] >= 0)
		close(p->pipefd[0]);
	if (p->pipefd[1] >= 0)
		close(p->pipefd[1]);
	free(p->threads);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* util_pool_cancel - see util.h. */
bool util_pool_cancel(struct util_pool *p, void *arg)
{
	struct pool_job **jp;
	bool found = false;

	pthread_mutex_lock(&p->mu);
	for (jp = &p->qhead; *jp != NULL; jp = &(*jp)->next) {
		struct pool_job *j = *jp;
		if (j->arg != arg)
			continue;
		*jp = j->next;
		p->qtail = NULL;
		for (struct pool_job *t = p->qhead; t != NULL; t = t->next)
			p->qtail = t;
		p->qlen--;
		pool_push_done(p, j); /* the completion comes, without the work */
		found = true;
		break;
	}
	pthread_mutex_unlock(&p->mu);
	return found;
}

/* util_pool_submit - see util.h. */
int util_pool_submit(struct util_pool *p, util_pool_fn work, util_pool_fn done, void *arg)
{
	struct pool_job *j;

	pthread_mutex_lock(&p->mu);
	if (work != NULL && p->qlen >= p->qmax) {
		pthread_mutex_unlock(&p->mu);
		return -1;
	}
	j = util_xcalloc(1, sizeof(*j));
	j->arg = arg;
	j->work = work;
	j->done = done;
	if (work == NULL) {
		pool_push_done(p, j);
	} else {
		if (p->qtail != NULL)
			p->qtail->next = j;
		else
			p->qhead = j;
		p->qtail = j;
		p->qlen++;
		pthread_cond_signal(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* util_pool_stats - see util.h. */
void util_pool_stats(struct util_pool *p, size_t *queued, size_t *running)
{
	pthread_mutex_lock(&p->mu);
	if (queued != NULL)
		*queued = p->qlen;
	if (running != NULL)
		*running = p->running;
	pthread_mutex_unlock(&p->mu);
}
