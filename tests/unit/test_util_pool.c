/*
 * test_util_pool.c - table-driven tests of the bounded worker pool
 * (util/util-pool.c): at most N jobs run at once, at most qmax wait, the
 * rest are refused; every accepted job completes once on the loop; a
 * cancelled job completes without running; util_pool_free() hands every
 * job whose completion never ran to drop().
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <pthread.h>
#include <string.h>

#include <event2/event.h>

#include "util.h"

/* A gate the work functions wait on, so jobs pile up deterministically. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int running, max_running, worked;

struct job {
	int id;
	int worked, done, dropped;
};

static int done_total;

/* work - worker: count, wait for the gate. */
static void work(void *arg)
{
	struct job *j = arg;
	pthread_mutex_lock(&mu);
	running++;
	if (running > max_running)
		max_running = running;
	pthread_cond_broadcast(&cv);
	while (!gate_open)
		pthread_cond_wait(&cv, &mu);
	running--;
	worked++;
	j->worked++;
	pthread_mutex_unlock(&mu);
}

/* done - loop: count. */
static void done(void *arg)
{
	struct job *j = arg;
	j->done++;
	done_total++;
}

/* drop - from util_pool_free. */
static void drop(void *arg)
{
	struct job *j = arg;
	j->dropped++;
}

/* wait_running - until n work functions hold a worker. */
static void wait_running(int n)
{
	pthread_mutex_lock(&mu);
	while (running < n)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

/* open_gate - let the work functions finish. */
static void open_gate(bool open)
{
	pthread_mutex_lock(&mu);
	gate_open = open;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void reset(void)
{
	open_gate(false);
	running = max_running = worked = 0;
	done_total = 0;
}

static const struct {
	int nthreads;
	size_t qmax;
	int njobs;
	int accepted; /* nthreads running + qmax waiting, or njobs */
} cases[] = {
    {1, 1, 5, 2}, {2, 3, 10, 5}, {4, 8, 4, 4}, {3, 2, 20, 5}, {1, 100, 50, 50},
};

/* test_bounded - refusals past N + qmax; every accepted job completes once. */
static void test_bounded(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct event_base *base = event_base_new();
		char err[128];
		struct job jobs[64];
		int accepted = 0, refused = 0;

		reset();
		memset(jobs, 0, sizeof(jobs));
		struct util_pool *p =
		    util_pool_new(base, cases[c].nthreads, cases[c].qmax, drop, err, sizeof(err));
		assert_non_null(p);
		for (int i = 0; i < cases[c].njobs; i++) {
			jobs[i].id = i;
			if (util_pool_submit(p, work, done, &jobs[i]) == 0)
				accepted++;
			else
				refused++;
			/* each of the first N jobs is taken by a worker before more
			 * come (else it would still take a queue slot) */
			if (i < cases[c].nthreads)
				wait_running(i + 1);
		}
		if (accepted != cases[c].accepted)
			fail_msg("case %zu: %d accepted, expected %d", c, accepted,
			         cases[c].accepted);
		assert_int_equal(refused, cases[c].njobs - cases[c].accepted);
		size_t queued = 0, run = 0;
		util_pool_stats(p, &queued, &run);
		assert_true(run <= (size_t)cases[c].nthreads && queued <= cases[c].qmax);
		open_gate(true);
		while (done_total < accepted)
			event_base_loop(base, EVLOOP_ONCE);
		assert_true(max_running <= cases[c].nthreads);
		for (int i = 0; i < cases[c].njobs; i++) {
			int want = i < accepted ? 1 : 0; /* refusals come last: FIFO fill */
			if (jobs[i].done != want || jobs[i].worked != want || jobs[i].dropped)
				fail_msg("case %zu job %d: done %d worked %d dropped %d", c, i,
				         jobs[i].done, jobs[i].worked, jobs[i].dropped);
		}
		util_pool_free(p);
		event_base_free(base);
	}
	util_pool_free(NULL);
}

/* test_cancel_and_free - a cancelled job completes without work; free drops
 * the rest (waiting, and finished but not delivered). */
static void test_cancel_and_free(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	char err[128];
	struct job jobs[4];

	reset();
	memset(jobs, 0, sizeof(jobs));
	struct util_pool *p = util_pool_new(base, 1, 8, drop, err, sizeof(err));
	assert_non_null(p);
	assert_int_equal(util_pool_submit(p, work, done, &jobs[0]), 0);
	wait_running(1);
	assert_int_equal(util_pool_submit(p, work, done, &jobs[1]), 0);
	assert_int_equal(util_pool_submit(p, work, done, &jobs[2]), 0);
	assert_int_equal(util_pool_submit(p, NULL, done, &jobs[3]), 0); /* completion only */
	assert_true(util_pool_cancel(p, &jobs[1]));
	assert_false(util_pool_cancel(p, &jobs[0])); /* running: not cancellable */
	while (done_total < 2)                       /* jobs 1 and 3 */
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(jobs[1].done, 1);
	assert_int_equal(jobs[1].worked, 0);
	assert_int_equal(jobs[3].done, 1);
	/* job 0 finishes on its worker, job 2 waits: free without a loop turn */
	open_gate(true);
	util_pool_free(p);
	assert_int_equal(jobs[0].worked + jobs[2].worked, worked);
	for (int i = 0; i < 4; i++)
		assert_int_equal(jobs[i].done + jobs[i].dropped, 1); /* exactly one end */
	assert_int_equal(jobs[0].dropped, 1);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bounded),
	    cmocka_unit_test(test_cancel_and_free),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
