/*
 * queue-quarantine.c - the scheduler's side of the quarantine (issue 13):
 * a message a content verdict quarantined is committed straight into hold/
 * (queue_commit_held, queue-store.c) with an X-Mxgate-Quarantine field in
 * its envelope's prepend.  Here: recognising such messages when they are
 * indexed (at commit and by the start-up scan), stamping who released one
 * and when, expiring them after [queue] quarantine_retention (default 30
 * days), and the quarantine gauges.
 *
 * A quarantined message is an ordinary held message otherwise: `mxgate
 * queue list|show|release|delete` act on it, with the same crash rules.
 *
 * Ownership: items belong to the scheduler; release_by is owned by the item.
 * Diagnostics: "ID status=released by=WHO reason=quarantine" (the release
 * itself is logged by queue-sched-ops.c), "ID status=expired
 * reason=quarantine_retention age=Ns"; gauges mxgate_quarantine_messages,
 * mxgate_quarantine_bytes, mxgate_quarantine_oldest_age_seconds.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "queue-sched-internal.h"

#define SWEEP_MAX 3600 /* seconds between sweeps at most */

/* queue_envelope_is_quarantined - see queue.h: a line of the prepend that
 * starts with our field name and a colon. */
bool queue_envelope_is_quarantined(const struct queue_envelope *env)
{
	const char *p = env->prepend;
	size_t n = strlen(QUEUE_QUARANTINE_FIELD);
	while (p && *p) {
		if (strncasecmp(p, QUEUE_QUARANTINE_FIELD, n) == 0 && p[n] == ':')
			return true;
		p = strstr(p, "\r\n");
		if (p)
			p += 2;
	}
	return false;
}

/* sched_quarantine_note - see queue-sched-internal.h. */
void sched_quarantine_note(struct sched_item *it, const struct queue_envelope *env)
{
	it->size = env->size;
	it->quarantined = it->st == QUEUE_HOLD && queue_envelope_is_quarantined(env);
}

/* sched_quarantine_release - see queue-sched-internal.h. */
void sched_quarantine_release(struct sched_item *it, struct queue_envelope *env)
{
	char date[64];
	util_rfc5322_date(util_now_us() / 1000000, date);
	const char *who = it->release_by ? it->release_by : "postmaster";
	char *p = util_xasprintf("%s" QUEUE_RELEASED_FIELD ": by=%s; at=%s\r\n",
	                         env->prepend ? env->prepend : "", who, date);
	free(env->prepend);
	env->prepend = p;
	util_log_info("%s status=released by=%s reason=quarantine", it->id, who);
	it->quarantined = false;
	free(it->release_by);
	it->release_by = NULL;
}

/* sweep_period - how often to look: a quarter of the retention, at least
 * every second, at most every hour. */
static int64_t sweep_period(const struct queue_sched *s)
{
	int64_t r = s->cfg ? s->cfg->quarantine_retention : 0;
	if (r <= 0)
		return SWEEP_MAX;
	r /= 4;
	return r < 1 ? 1 : r > SWEEP_MAX ? SWEEP_MAX : r;
}

/* sweep_cb - expire quarantined messages older than the retention, and
 * refresh the gauges. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_sched *s = arg;
	int64_t now = util_now_us() / 1000000;
	int64_t retention = s->cfg ? s->cfg->quarantine_retention : 0;
	double count = 0, bytes = 0, oldest = 0;
	for (size_t b = 0; b < s->nbuckets; b++) {
		struct sched_item *next;
		for (struct sched_item *it = s->buckets[b]; it; it = next) {
			next = it->hnext; /* sched_settle may drop it later, not now */
			if (!it->quarantined || it->st != QUEUE_HOLD)
				continue;
			int64_t age = now - it->arrival;
			if (retention > 0 && age >= retention && !it->want_delete &&
			    !it->want_release) {
				util_log_info(
				    "%s status=expired reason=quarantine_retention age=%llds",
				    it->id, (long long)age);
				it->want_delete = true;
				sched_settle(s, it);
				continue;
			}
			count++;
			bytes += (double)it->size;
			if (age > oldest)
				oldest = (double)age;
		}
	}
	util_metrics_set("mxgate_quarantine_messages", NULL, count);
	util_metrics_set("mxgate_quarantine_bytes", NULL, bytes);
	util_metrics_set("mxgate_quarantine_oldest_age_seconds", NULL, oldest);
	struct timeval tv = {sweep_period(s), 0};
	evtimer_add(s->qsweep, &tv);
}

/* sched_quarantine_start - see queue-sched-internal.h; the first sweep runs
 * right after the start-up scan. */
int sched_quarantine_start(struct queue_sched *s)
{
	s->qsweep = evtimer_new(s->base, sweep_cb, s);
	if (s->qsweep == NULL)
		return -1;
	struct timeval tv = {0, 100000};
	evtimer_add(s->qsweep, &tv);
	return 0;
}
