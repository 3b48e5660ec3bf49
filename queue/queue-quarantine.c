/*
 * queue-quarantine.c - the scheduler's side of the quarantine (issue 13):
 * a message a content verdict quarantined is committed straight into the
 * queue's quarantine/ folder (queue_commit_quarantined, queue-store.c) with
 * the verdict in its envelope (quarantine-reason, quarantine-verdict) and an
 * X-Mxgate-Quarantine field in its prepend.  The scheduler indexes it in
 * state QUEUE_QUARANTINE and never delivers it.  Here: the postmaster's
 * quarantine operations (list with filters, release, delete), stamping who
 * released one and when, expiring them after [queue] quarantine_retention
 * (default 30 days), the quarantine gauges, and recognising the messages an
 * older build quarantined into hold/ (moved to quarantine/ by the start-up
 * scan).
 *
 * A release moves the envelope into active/ (delivered as it would have
 * been, the X-Mxgate-Released field added); a delete purges it.  Both use
 * the same envelope rewrite / removal jobs as every queue operation, with
 * the same crash rules.  `mxgate queue release|delete|hold|flush` refuse a
 * quarantined message (queue-sched-ops.c).
 *
 * Ownership: items belong to the scheduler; it->by is owned by the item.
 * Diagnostics: "ID status=released by=WHO reason=quarantine", "ID
 * status=deleted by=WHO reason=quarantine" (queue-sched-ops.c), "ID
 * status=expired reason=quarantine_retention age=Ns"; the gauges
 * mxgate_quarantine_messages, mxgate_quarantine_bytes and
 * mxgate_quarantine_oldest_age_seconds come from queue_sched_quarantine_stats
 * at every scrape (gw-metrics.c), so a message quarantined, released or
 * deleted a moment ago is counted right (the hourly sweep used to be the
 * only refresh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "queue-sched-internal.h"

#define SWEEP_MAX 3600 /* seconds between sweeps at most */

/* prepend_field - the value of the first line of prepend that starts with
 * field and a colon (after the colon), or NULL. */
static const char *prepend_field(const char *prepend, const char *field)
{
	const char *p = prepend;
	size_t n = strlen(field);
	while (p && *p) {
		if (strncasecmp(p, field, n) == 0 && p[n] == ':')
			return p + n + 1;
		p = strstr(p, "\r\n");
		if (p)
			p += 2;
	}
	return NULL;
}

/* queue_envelope_is_quarantined - see queue.h. */
bool queue_envelope_is_quarantined(const struct queue_envelope *env)
{
	return prepend_field(env->prepend, QUEUE_QUARANTINE_FIELD) != NULL;
}

/* queue_envelope_is_legacy_quarantine - see queue.h: a released message
 * (the older build stamped X-Mxgate-Released) that the postmaster later held
 * by hand stays an ordinary held message. */
bool queue_envelope_is_legacy_quarantine(const struct queue_envelope *env)
{
	return env->quarantine_reason == NULL && queue_envelope_is_quarantined(env) &&
	       prepend_field(env->prepend, QUEUE_RELEASED_FIELD) == NULL;
}

/* queue_envelope_quarantine_reason - see queue.h. */
const char *queue_envelope_quarantine_reason(const struct queue_envelope *env, char *buf,
                                             size_t buflen)
{
	if (env->quarantine_reason != NULL)
		return env->quarantine_reason;
	snprintf(buf, buflen, "-");
	const char *p = prepend_field(env->prepend, QUEUE_QUARANTINE_FIELD);
	if (p == NULL)
		return buf;
	p += strspn(p, " \t");
	if (strncasecmp(p, "reason=", 7) != 0)
		return buf;
	p += 7;
	size_t n = strcspn(p, "; \t\r\n");
	if (n > 0)
		snprintf(buf, buflen, "%.*s", (int)(n < 60 ? n : 60), p);
	return buf;
}

/* sched_quarantine_note - see queue-sched-internal.h. */
void sched_quarantine_note(struct sched_item *it, const struct queue_envelope *env)
{
	it->size = env->size;
}

/* sched_quarantine_release - see queue-sched-internal.h. */
void sched_quarantine_release(struct sched_item *it, struct queue_envelope *env)
{
	char date[64];
	util_rfc5322_date(util_now_us() / 1000000, date);
	const char *who = it->by ? it->by : "postmaster";
	char *p = util_xasprintf("%s" QUEUE_RELEASED_FIELD ": by=%s; at=%s\r\n",
	                         env->prepend ? env->prepend : "", who, date);
	free(env->prepend);
	env->prepend = p;
	util_log_info("%s status=released by=%s reason=quarantine", it->id, who);
	free(it->by);
	it->by = NULL;
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

/* is_counted - a message the quarantine gauges count: in quarantine/ and
 * staying there (a delete or release under way no longer counts). */
static bool is_counted(const struct sched_item *it)
{
	return it->st == QUEUE_QUARANTINE && !it->want_delete && !it->want_release;
}

/* queue_sched_quarantine_stats - see queue.h. */
void queue_sched_quarantine_stats(const struct queue_sched *s, size_t *count, int64_t *bytes,
                                  int64_t *oldest_arrival)
{
	*count = 0;
	*bytes = 0;
	*oldest_arrival = 0;
	for (size_t b = 0; b < s->nbuckets; b++)
		for (const struct sched_item *it = s->buckets[b]; it; it = it->hnext) {
			if (!is_counted(it))
				continue;
			(*count)++;
			*bytes += it->size;
			if (*oldest_arrival == 0 || it->arrival < *oldest_arrival)
				*oldest_arrival = it->arrival;
		}
}

/* sweep_cb - expire quarantined messages older than the retention. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_sched *s = arg;
	int64_t now = util_now_us() / 1000000;
	int64_t retention = s->cfg ? s->cfg->quarantine_retention : 0;
	for (size_t b = 0; b < s->nbuckets && retention > 0; b++) {
		struct sched_item *next;
		for (struct sched_item *it = s->buckets[b]; it; it = next) {
			next = it->hnext; /* sched_settle may drop it later, not now */
			if (!is_counted(it))
				continue;
			int64_t age = now - it->arrival;
			if (age >= retention) {
				util_log_info(
				    "%s status=expired reason=quarantine_retention age=%llds",
				    it->id, (long long)age);
				sched_delete(s, it, "retention");
			}
		}
	}
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

/* ------------------------------------------------------------ listing */

/* A parsed filter: "rcpt=a@b,sender=c@d,reason=virus,older=3600,newer=60". */
struct qfilter {
	char rcpt[320], sender[320], reason[64];
	int64_t older, newer; /* seconds; 0 = no bound */
};

/* filter_parse - 0, or -1 with a message. */
static int filter_parse(const char *spec, struct qfilter *f, char *err, size_t errlen)
{
	memset(f, 0, sizeof(*f));
	while (spec && *spec) {
		const char *end = strchr(spec, ',');
		size_t n = end ? (size_t)(end - spec) : strlen(spec);
		char item[400];
		if (n >= sizeof(item)) {
			snprintf(err, errlen, "filter too long");
			return -1;
		}
		memcpy(item, spec, n);
		item[n] = 0;
		char *eq = strchr(item, '=');
		if (!eq || eq[1] == 0) {
			snprintf(err, errlen, "bad filter '%s' (want key=value)", item);
			return -1;
		}
		*eq++ = 0;
		char *e = NULL;
		if (strcmp(item, "rcpt") == 0)
			snprintf(f->rcpt, sizeof(f->rcpt), "%s", eq);
		else if (strcmp(item, "sender") == 0)
			snprintf(f->sender, sizeof(f->sender), "%s", eq);
		else if (strcmp(item, "reason") == 0)
			snprintf(f->reason, sizeof(f->reason), "%s", eq);
		else if (strcmp(item, "older") == 0 && (f->older = strtoll(eq, &e, 10)) >= 0 && !*e)
			;
		else if (strcmp(item, "newer") == 0 && (f->newer = strtoll(eq, &e, 10)) >= 0 && !*e)
			;
		else {
			snprintf(err, errlen, "bad filter '%s'", item);
			return -1;
		}
		spec = end ? end + 1 : NULL;
	}
	return 0;
}

/* filter_match - does env (age seconds, reason) pass f? */
static bool filter_match(const struct qfilter *f, const struct queue_envelope *env, int64_t age,
                         const char *reason)
{
	if (f->older && age < f->older)
		return false;
	if (f->newer && age > f->newer)
		return false;
	if (f->reason[0] && !util_strcaseeq(f->reason, reason))
		return false;
	if (f->sender[0] && !util_strcaseeq(f->sender, env->sender ? env->sender : ""))
		return false;
	if (f->rcpt[0]) {
		bool hit = false;
		for (size_t i = 0; i < env->nrcpts && !hit; i++)
			hit = util_strcaseeq(f->rcpt, env->rcpts[i].addr);
		if (!hit)
			return false;
	}
	return true;
}

/* id_cmp - qsort of char * by string. */
static int id_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* queue_sched_is_quarantined - see queue.h. */
bool queue_sched_is_quarantined(struct queue_sched *s, const char *id)
{
	struct sched_item *it = util_qid_is_valid(id) ? sched_find(s, id) : NULL;
	return it != NULL && it->st == QUEUE_QUARANTINE;
}

/* quarantine_lookup - the quarantined item of id, or NULL with err. */
static struct sched_item *quarantine_lookup(struct queue_sched *s, const char *id, char *err,
                                            size_t errlen)
{
	struct sched_item *it = sched_lookup(s, id, err, errlen);
	if (it != NULL && it->st != QUEUE_QUARANTINE) {
		snprintf(err, errlen, "message %s is not in quarantine", it->id);
		return NULL;
	}
	if (it == NULL && util_qid_is_valid(id))
		snprintf(err, errlen, "message %s is not in quarantine", id);
	return it;
}

/* queue_sched_quarantine_release - see queue.h. */
int queue_sched_quarantine_release(struct queue_sched *s, const char *id, const char *who,
                                   char *err, size_t errlen)
{
	struct sched_item *it = quarantine_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	sched_release(s, it, who);
	return 0;
}

/* queue_sched_quarantine_delete - see queue.h. */
int queue_sched_quarantine_delete(struct queue_sched *s, const char *id, const char *who, char *err,
                                  size_t errlen)
{
	struct sched_item *it = quarantine_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	sched_delete(s, it, who);
	return 0;
}

/* queue_sched_quarantine_list - see queue.h: oldest first. */
int queue_sched_quarantine_list(struct queue_sched *s, const char *filter, struct util_buf *out,
                                char *err, size_t errlen)
{
	struct qfilter f;
	if (filter_parse(filter, &f, err, errlen) < 0)
		return -1;
	struct util_strlist ids = {0};
	for (size_t b = 0; b < s->nbuckets; b++)
		for (struct sched_item *it = s->buckets[b]; it; it = it->hnext)
			if (it->st == QUEUE_QUARANTINE)
				util_strlist_add(&ids, it->id);
	/* queue ids sort by arrival */
	if (ids.n > 1)
		qsort(ids.v, ids.n, sizeof(char *), id_cmp);
	int64_t now = util_now_us() / 1000000;
	size_t shown = 0;
	for (size_t i = 0; i < ids.n; i++) {
		struct queue_envelope *env = NULL;
		enum queue_state st;
		if (queue_env_load(s->qs, ids.v[i], &env, &st) < 0)
			continue; /* gone meanwhile, or unreadable: `queue list` shows it */
		char buf[64];
		const char *reason = queue_envelope_quarantine_reason(env, buf, sizeof(buf));
		int64_t age = now - env->arrival;
		if (filter_match(&f, env, age, reason)) {
			util_buf_printf(out,
			                "%s age=%llds size=%lld reason=%s from=<%s> to=", env->id,
			                (long long)age, (long long)env->size, reason,
			                env->sender ? env->sender : "");
			for (size_t r = 0; r < env->nrcpts; r++)
				util_buf_printf(out, "%s<%s>", r ? "," : "", env->rcpts[r].addr);
			util_buf_adds(out, "\n");
			shown++;
		}
		queue_envelope_free(env);
	}
	util_buf_printf(out, "-- %zu quarantined message%s\n", shown, shown == 1 ? "" : "s");
	util_strlist_free(&ids);
	return 0;
}
