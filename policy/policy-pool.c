/*
 * policy-pool.c - the bounded pool of policy worker threads.
 *
 * Jobs run a function on a worker (SPF, DKIM key lookups, DMARC, DNSBL: the
 * synchronous libraries and their DNS), then a completion function on the
 * loop thread.  Completions travel through a mutex-protected list and a
 * self-pipe watched by a libevent event, so the pool works whether or not
 * libevent was set up for threads.
 *
 * Ownership: the pool never owns a message, except when the owner called
 * policy_msg_free() while its job was in flight (msg->freed): the
 * completion then frees it instead of calling back (STYLE rule 12).  A job
 * still waiting in the queue when its message is freed is taken out and
 * never runs (policy_pool_cancel), so abandoned sessions cost no DNS.  The
 * queue is bounded: policy_pool_submit() fails when it is full and the
 * caller answers 451 instead of letting the queue grow.
 * Threads: submit/free on the loop thread; work functions on workers.
 * Diagnostics: thread/pipe creation errors into err.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "policy-internal.h"

struct pool_job {
	struct policy_msg *pm;
	policy_pool_fn work, done;
	struct pool_job *next;
};

struct policy_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct pool_job *qhead, *qtail; /* waiting for a worker */
	size_t qlen, qmax;
	struct pool_job *dhead, *dtail; /* finished, waiting for the loop */
	bool stop;
	pthread_t *threads;
	int nthreads;
	int pipefd[2];
	bool woken; /* a byte is in the pipe */
	struct event *ev;
};

/* pool_push_done - locked: append a finished job and wake the loop. */
static void pool_push_done(struct policy_pool *p, struct pool_job *j)
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
	struct policy_pool *p = arg;

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
		pthread_mutex_unlock(&p->mu);
		j->work(j->pm);
		pthread_mutex_lock(&p->mu);
		pool_push_done(p, j);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* pool_on_done - loop thread: run completions (or free abandoned messages). */
static void pool_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct policy_pool *p = arg;
	struct pool_job *list;
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&p->mu);
	list = p->dhead;
	p->dhead = p->dtail = NULL;
	p->woken = false;
	pthread_mutex_unlock(&p->mu);
	while (list != NULL) {
		struct pool_job *j = list;
		struct policy_msg *pm = j->pm;

		list = j->next;
		pm->busy = false;
		if (pm->freed)
			policy_msg_destroy(pm);
		else
			j->done(pm);
		free(j);
	}
}

/* policy_pool_new - start nthreads workers and watch the completion pipe. */
struct policy_pool *policy_pool_new(struct event_base *base, int nthreads, size_t qmax, char *err,
                                    size_t errlen)
{
	struct policy_pool *p = util_xcalloc(1, sizeof(*p));

	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->qmax = qmax;
	p->pipefd[0] = p->pipefd[1] = -1;
	if (pipe2(p->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto err;
	}
	p->ev = event_new(base, p->pipefd[0], EV_READ | EV_PERSIST, pool_on_done, p);
	if (p->ev == NULL || event_add(p->ev, NULL) < 0) {
		snprintf(err, errlen, "cannot watch the policy pool pipe");
		goto err;
	}
	p->threads = util_xcalloc((size_t)nthreads, sizeof(*p->threads));
	for (int i = 0; i < nthreads; i++) {
		if (pthread_create(&p->threads[i], NULL, pool_worker, p) != 0) {
			snprintf(err, errlen, "cannot start policy worker %d", i);
			goto err;
		}
		p->nthreads++;
	}
	return p;
err:
	policy_pool_free(p);
	return NULL;
}

/* policy_pool_free - stop and join the workers, release unfinished jobs. */
void policy_pool_free(struct policy_pool *p)
{
	struct pool_job *lists[2];

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	/* Jobs never run or never completed: their messages are no longer
	 * busy; abandoned ones are freed here. */
	lists[0] = p->qhead;
	lists[1] = p->dhead;
	for (int k = 0; k < 2; k++)
		while (lists[k] != NULL) {
			struct pool_job *j = lists[k];
			lists[k] = j->next;
			j->pm->busy = false;
			if (j->pm->freed)
				policy_msg_destroy(j->pm);
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

/* policy_pool_cancel - loop: take pm's job out of the queue if it has not started. */
void policy_pool_cancel(struct policy_pool *p, struct policy_msg *pm)
{
	struct pool_job **jp;

	pthread_mutex_lock(&p->mu);
	for (jp = &p->qhead; *jp != NULL; jp = &(*jp)->next) {
		struct pool_job *j = *jp;
		if (j->pm != pm)
			continue;
		*jp = j->next;
		p->qtail = NULL;
		for (struct pool_job *t = p->qhead; t != NULL; t = t->next)
			p->qtail = t;
		p->qlen--;
		pool_push_done(p, j); /* completion frees the abandoned message */
		break;
	}
	pthread_mutex_unlock(&p->mu);
}

/* policy_pool_submit - loop: queue a job, or fail when the queue is full. */
int policy_pool_submit(struct policy_pool *p, struct policy_msg *pm, policy_pool_fn work,
                       policy_pool_fn done)
{
	struct pool_job *j;

	pthread_mutex_lock(&p->mu);
	if (work != NULL && p->qlen >= p->qmax) {
		pthread_mutex_unlock(&p->mu);
		return -1;
	}
	j = util_xcalloc(1, sizeof(*j));
	j->pm = pm;
	j->work = work;
	j->done = done;
	pm->busy = true;
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
