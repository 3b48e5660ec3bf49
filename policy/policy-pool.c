/*
 * policy-pool.c - the policy worker threads: the policy's ownership rules
 * on top of the generic bounded pool (util/util-pool.c).
 *
 * Jobs run a function on a worker (SPF, DKIM key lookups, DMARC, DNSBL: the
 * synchronous libraries and their DNS), then a completion function on the
 * loop thread.
 *
 * Ownership: the pool never owns a message, except when the owner called
 * policy_msg_free() while its job was in flight (msg->freed): the
 * completion then frees it instead of calling back (STYLE rule 12).  A job
 * still waiting in the queue when its message is freed is taken out and
 * never runs (policy_pool_cancel), so abandoned sessions cost no DNS.  The
 * queue is bounded: policy_pool_submit() fails when it is full and the
 * caller answers 451 instead of letting the queue grow.  A message has at
 * most one job at a time (msg->busy), so the job's functions live in it.
 * Threads: submit/free on the loop thread; work functions on workers.
 * Diagnostics: thread/pipe creation errors into err.
 */
#include "policy-internal.h"

/* pool_work - worker: the message's work function. */
static void pool_work(void *arg)
{
	struct policy_msg *pm = arg;
	pm->pool_work(pm);
}

/* pool_done - loop: the completion, or free an abandoned message. */
static void pool_done(void *arg)
{
	struct policy_msg *pm = arg;
	pm->busy = false;
	if (pm->freed)
		policy_msg_destroy(pm);
	else
		pm->pool_done(pm);
}

/* pool_drop - pool stopped before the completion: release abandoned ones. */
static void pool_drop(void *arg)
{
	struct policy_msg *pm = arg;
	pm->busy = false;
	if (pm->freed)
		policy_msg_destroy(pm);
}

/* policy_pool_new - start nthreads workers and watch the completion pipe. */
struct util_pool *policy_pool_new(struct event_base *base, int nthreads, size_t qmax, char *err,
                                  size_t errlen)
{
	return util_pool_new(base, nthreads, qmax, pool_drop, err, errlen);
}

/* policy_pool_free - stop and join the workers, release unfinished jobs. */
void policy_pool_free(struct util_pool *p)
{
	util_pool_free(p);
}

/* policy_pool_cancel - loop: take pm's job out of the queue if it has not started. */
void policy_pool_cancel(struct util_pool *p, struct policy_msg *pm)
{
	(void)util_pool_cancel(p, pm); /* completion frees it */
}

/* policy_pool_submit - loop: queue a job, or fail when the queue is full. */
int policy_pool_submit(struct util_pool *p, struct policy_msg *pm, policy_pool_fn work,
                       policy_pool_fn done)
{
	pm->pool_work = work;
	pm->pool_done = done;
	if (util_pool_submit(p, work != NULL ? pool_work : NULL, pool_done, pm) < 0)
		return -1;
	pm->busy = true;
	return 0;
}
