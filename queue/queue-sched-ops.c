/*
 * queue-sched-ops.c - postmaster operations on the scheduler's index (the
 * control socket's queue-list/show/flush/hold/release/delete), the settling
 * of requests made while a message was busy, and small read-only helpers.
 *
 * A request on a message that is being delivered (or whose envelope is being
 * rewritten) is recorded in the item (want_*) and applied when it settles, so
 * there is never more than one envelope rewrite of a message in flight.
 *
 * Ownership: nothing here keeps an envelope beyond the call; list and show
 * load each envelope from disk (a postmaster command, not a hot path; for a
 * very large queue `list` is O(messages) small reads on the loop thread).
 *
 * A quarantined message (quarantine/) is not the `queue` commands' to
 * change: flush, hold, release and delete refuse it with a hint to use
 * `mxgate quarantine` (queue-quarantine.c), so releasing held mail can never
 * deliver a virus by accident; list and show include it (state quarantine).
 *
 * Diagnostics: errors go back to the caller in err ("no such message ID");
 * state changes are logged as "ID status=held by=postmaster".
 */
#include "queue-sched-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHED_HEADERS_MAX (256 * 1024) /* header bytes attached to a DSN or shown */

/* A pending envelope rewrite (hold/release). */
struct sched_move {
	struct queue_sched *s;
	struct sched_item *it;
	enum queue_state from, to;
	int64_t next_attempt;
};

/* sched_moved - the rewrite is durable (or failed): settle the item. */
static void sched_moved(int status, void *arg)
{
	struct sched_move *m = arg;
	struct sched_item *it = m->it;
	if (status == 0) {
		it->next_attempt = m->next_attempt;
	} else {
		util_log_err("%s status=error error=(envelope move failed)", it->id);
		it->st = m->from;
	}
	it->busy = false;
	it->moving = false;
	sched_settle(m->s, it);
	sched_kick(m->s);
	free(m);
}

/* sched_move_to - rewrite the envelope into folder `to`. */
static void sched_move_to(struct queue_sched *s, struct sched_item *it, enum queue_state to,
                          int64_t next_attempt)
{
	struct queue_envelope *env = NULL;
	enum queue_state st;
	/* kept pending while the envelope cannot be read: the retry that
	 * sched_load schedules applies it (sched_dispatch) */
	it->want_hold = to == QUEUE_HOLD;
	it->want_release = to != QUEUE_HOLD;
	if (!sched_load(s, it, to == QUEUE_HOLD ? "hold" : "release", &env, &st))
		return;
	it->want_hold = it->want_release = false;
	env->next_attempt = next_attempt;
	if (it->st == QUEUE_QUARANTINE && to != QUEUE_QUARANTINE)
		sched_quarantine_release(it, env);
	struct sched_move *m = util_xcalloc(1, sizeof(*m));
	m->s = s;
	m->it = it;
	m->from = it->st;
	m->to = to;
	m->next_attempt = next_attempt;
	sched_heap_remove(s, it);
	it->busy = true;
	it->moving = true;
	it->st = to; /* what list shows from now on; undone if the move fails */
	queue_env_update(s->qs, env, st, to, sched_moved, m);
	queue_envelope_free(env);
}

/* sched_removed - a postmaster delete is durable. */
static void sched_removed(int status, void *arg)
{
	struct sched_move *m = arg;
	if (status == 0) {
		sched_item_drop(m->s, m->it);
	} else {
		util_log_err("%s status=error error=(delete failed)", m->it->id);
		m->it->busy = false;
		sched_settle(m->s, m->it);
	}
	free(m);
}

/* sched_settle - apply requests recorded while busy, or re-index the item. */
void sched_settle(struct queue_sched *s, struct sched_item *it)
{
	if (it->busy)
		return;
	if (it->want_delete) {
		it->want_delete = false;
		struct sched_move *m = util_xcalloc(1, sizeof(*m));
		m->s = s;
		m->it = it;
		sched_heap_remove(s, it);
		it->busy = true;
		util_log_info("%s status=deleted by=%s%s", it->id, it->by ? it->by : "postmaster",
		              it->st == QUEUE_QUARANTINE ? " reason=quarantine" : "");
		free(it->by);
		it->by = NULL;
		queue_msg_purge(s->qs, it->id, it->st, sched_removed, m);
		return;
	}
	if (it->want_hold) {
		it->want_hold = false;
		if (it->st != QUEUE_HOLD && it->st != QUEUE_QUARANTINE) {
			util_log_info("%s status=held by=postmaster", it->id);
			sched_move_to(s, it, QUEUE_HOLD, it->next_attempt);
			return;
		}
	}
	if (it->want_release) {
		it->want_release = false;
		if (it->st == QUEUE_HOLD) {
			util_log_info("%s status=released by=postmaster", it->id);
			sched_move_to(s, it, QUEUE_DEFERRED, 0);
			return;
		}
		if (it->st == QUEUE_QUARANTINE) {
			/* delivered as it would have been: due now, in active/
			 * (logged by sched_quarantine_release) */
			sched_move_to(s, it, QUEUE_ACTIVE, 0);
			return;
		}
	}
	if (it->want_flush && it->st != QUEUE_HOLD && it->st != QUEUE_QUARANTINE) {
		it->want_flush = false;
		sched_heap_remove(s, it);
		it->next_attempt = 0;
	}
	sched_heap_push(s, it);
}

/* sched_lookup - the item for a postmaster request, or NULL with err. */
struct sched_item *sched_lookup(struct queue_sched *s, const char *id, char *err, size_t errlen)
{
	struct sched_item *it = NULL;
	if (id == NULL || !util_qid_is_valid(id))
		snprintf(err, errlen, "invalid queue id");
	else if ((it = sched_find(s, id)) == NULL)
		snprintf(err, errlen, "no such message %s", id);
	return it;
}

/* sched_refuse_quarantined - a `queue` operation on a quarantined item:
 * true with the hint in err. */
static bool sched_refuse_quarantined(const struct sched_item *it, const char *op, char *err,
                                     size_t errlen)
{
	if (it->st != QUEUE_QUARANTINE)
		return false;
	snprintf(err, errlen, "message %s is in quarantine: use `mxgate quarantine %s %s`", it->id,
	         op, it->id);
	return true;
}

/* queue_sched_flush - retry now: one message, or every one not on hold. */
int queue_sched_flush(struct queue_sched *s, const char *id_or_null, char *err, size_t errlen)
{
	if (id_or_null == NULL) {
		for (size_t i = 0; i < s->nbuckets; i++)
			for (struct sched_item *it = s->buckets[i]; it; it = it->hnext) {
				if (it->busy)
					it->want_flush = true;
				else
					it->want_flush =
					    it->st != QUEUE_HOLD && it->st != QUEUE_QUARANTINE;
				if (!it->busy)
					sched_settle(s, it);
			}
		util_log_info("queue status=flushed messages=%zu by=postmaster", s->count);
		sched_kick(s);
		return 0;
	}
	struct sched_item *it = sched_lookup(s, id_or_null, err, errlen);
	if (it == NULL)
		return -1;
	if (sched_refuse_quarantined(it, "release", err, errlen))
		return -1;
	if (it->st == QUEUE_HOLD || it->want_hold) {
		snprintf(err, errlen, "message %s is on hold (release it first)", it->id);
		return -1;
	}
	it->want_flush = true;
	sched_settle(s, it);
	util_log_info("%s status=flushed by=postmaster", it->id);
	sched_kick(s);
	return 0;
}

/* queue_sched_hold - keep a message from delivery until released. */
int queue_sched_hold(struct queue_sched *s, const char *id, char *err, size_t errlen)
{
	struct sched_item *it = sched_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	if (it->st == QUEUE_QUARANTINE) {
		snprintf(err, errlen,
		         "message %s is in quarantine (never delivered until "
		         "`mxgate quarantine release %s`)",
		         it->id, it->id);
		return -1;
	}
	it->want_release = false;
	it->want_hold = true;
	sched_settle(s, it);
	return 0;
}

/* queue_sched_release - a held message becomes due now. */
int queue_sched_release(struct queue_sched *s, const char *id, char *err, size_t errlen)
{
	return queue_sched_release_by(s, id, NULL, err, errlen);
}

/* queue_sched_release_by - see queue.h. */
int queue_sched_release_by(struct queue_sched *s, const char *id, const char *who, char *err,
                           size_t errlen)
{
	struct sched_item *it = sched_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	if (sched_refuse_quarantined(it, "release", err, errlen))
		return -1;
	if (it->st != QUEUE_HOLD && !it->want_hold) {
		snprintf(err, errlen, "message %s is not on hold", it->id);
		return -1;
	}
	sched_release(s, it, who);
	return 0;
}

/* sched_release - see queue-sched-internal.h. */
void sched_release(struct queue_sched *s, struct sched_item *it, const char *who)
{
	free(it->by); /* the latest request names who asked */
	it->by = who != NULL ? util_xstrdup(who) : NULL;
	it->want_hold = false;
	it->want_release = true;
	sched_settle(s, it);
	sched_kick(s);
}

/* sched_delete - see queue-sched-internal.h. */
void sched_delete(struct queue_sched *s, struct sched_item *it, const char *who)
{
	free(it->by); /* the latest request names who asked */
	it->by = who != NULL ? util_xstrdup(who) : NULL;
	it->want_delete = true;
	sched_settle(s, it);
}

/* queue_sched_delete - remove a message without a bounce (postsuper -d). */
int queue_sched_delete(struct queue_sched *s, const char *id, char *err, size_t errlen)
{
	struct sched_item *it = sched_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	if (sched_refuse_quarantined(it, "delete", err, errlen))
		return -1;
	sched_delete(s, it, NULL);
	return 0;
}

/* sched_state_name - folder name for the listing. */
static const char *sched_state_name(const struct sched_item *it)
{
	if (it->want_delete)
		return "deleting";
	if (it->st == QUEUE_QUARANTINE)
		return "quarantine";
	if (it->st == QUEUE_HOLD || it->want_hold)
		return "hold";
	if (it->busy && !it->moving)
		return "delivering";
	return it->st == QUEUE_ACTIVE ? "active" : "deferred";
}

/* sched_rcpt_state_name - recipient state for list/show. */
static const char *sched_rcpt_state_name(enum queue_rcpt_state st)
{
	return st == QUEUE_RCPT_DONE ? "done" : st == QUEUE_RCPT_FAILED ? "failed" : "pending";
}

/* sched_cmp_item - qsort by id, i.e. by arrival. */
static int sched_cmp_item(const void *x, const void *y)
{
	const struct sched_item *a = *(const struct sched_item *const *)x;
	const struct sched_item *b = *(const struct sched_item *const *)y;
	return strcmp(a->id, b->id);
}

/* sched_add_oneline - append s with control characters replaced. */
static void sched_add_oneline(struct util_buf *out, const char *s)
{
	for (; s && *s; s++) {
		char c = ((unsigned char)*s < 0x20) ? ' ' : *s;
		util_buf_add(out, &c, 1);
	}
}

/* queue_sched_list - one block per message, oldest first (like mailq):
 *   ID STATE age=SECONDSs size=BYTES attempts=N next=+SECONDSs from=<sender>
 *     to=<rcpt> STATE [(last reply)]
 *     last_error=(text)                                                     */
int queue_sched_list(struct queue_sched *s, struct util_buf *out)
{
	struct sched_item **v = util_xcalloc(s->count + 1, sizeof(*v));
	size_t n = 0;
	for (size_t i = 0; i < s->nbuckets; i++)
		for (struct sched_item *it = s->buckets[i]; it; it = it->hnext)
			v[n++] = it;
	qsort(v, n, sizeof(*v), sched_cmp_item);
	int64_t now = sched_now();
	for (size_t i = 0; i < n; i++) {
		struct queue_envelope *env = NULL;
		enum queue_state st;
		int64_t next = v[i]->next_attempt > now ? v[i]->next_attempt - now : 0;
		if (queue_env_load(s->qs, v[i]->id, &env, &st) != 0) {
			/* still queued, only its envelope cannot be read now */
			util_buf_printf(out, "%s %s age=%llds next=+%llds read_error=(%s)\n",
			                v[i]->id, sched_state_name(v[i]),
			                (long long)(now - v[i]->arrival), (long long)next,
			                strerror(errno));
			continue;
		}
		util_buf_printf(out, "%s %s age=%llds size=%lld attempts=%d next=+%llds from=<",
		                env->id, sched_state_name(v[i]), (long long)(now - env->arrival),
		                (long long)env->size, env->attempts, (long long)next);
		sched_add_oneline(out, env->sender);
		util_buf_adds(out, ">\n");
		for (size_t r = 0; r < env->nrcpts; r++) {
			util_buf_adds(out, "  to=<");
			sched_add_oneline(out, env->rcpts[r].addr);
			util_buf_printf(out, "> %s", sched_rcpt_state_name(env->rcpts[r].state));
			if (env->rcpts[r].last_reply != NULL) {
				util_buf_adds(out, " (");
				sched_add_oneline(out, env->rcpts[r].last_reply);
				util_buf_adds(out, ")");
			}
			util_buf_adds(out, "\n");
		}
		if (env->last_error != NULL) {
			util_buf_adds(out, "  last_error=(");
			sched_add_oneline(out, env->last_error);
			util_buf_adds(out, ")\n");
		}
		queue_envelope_free(env);
	}
	util_buf_printf(out, "-- %zu message%s in queue\n", n, n == 1 ? "" : "s");
	free(v);
	return 0;
}

/* queue_sched_show - the envelope, then the headers of the message. */
int queue_sched_show(struct queue_sched *s, const char *id, struct util_buf *out, char *err,
                     size_t errlen)
{
	struct sched_item *it = sched_lookup(s, id, err, errlen);
	if (it == NULL)
		return -1;
	struct queue_envelope *env = NULL;
	enum queue_state st;
	if (queue_env_load(s->qs, id, &env, &st) != 0) {
		snprintf(err, errlen, "cannot read the envelope of %s: %s", id, strerror(errno));
		return -1;
	}
	char date[64];
	util_rfc5322_date(env->arrival, date);
	util_buf_printf(out, "id: %s\nstate: %s\narrival: %s\nsize: %lld\nattempts: %d\n", env->id,
	                sched_state_name(it), date, (long long)env->size, env->attempts);
	if (it->next_attempt > 0) {
		util_rfc5322_date(it->next_attempt, date);
		util_buf_printf(out, "next_attempt: %s\n", date);
	}
	util_buf_adds(out, "sender: <");
	sched_add_oneline(out, env->sender);
	util_buf_printf(out, ">\nclient: %s [%s] helo=%s tls=%s\n",
	                env->client_name ? env->client_name : "unknown",
	                env->client_addr ? env->client_addr : "", env->helo ? env->helo : "",
	                env->tls ? env->tls : "none");
	util_buf_printf(out, "flags:%s%s%s%s\n", env->smtputf8 ? " smtputf8" : "",
	                env->eightbit ? " 8bit" : "", env->is_dsn ? " dsn" : "",
	                env->delay_warned ? " delay-warned" : "");
	if (env->quarantine_reason != NULL || queue_envelope_is_legacy_quarantine(env)) {
		char reason[64];
		util_buf_adds(out, "quarantine: reason=");
		sched_add_oneline(out,
		                  queue_envelope_quarantine_reason(env, reason, sizeof(reason)));
		if (env->quarantine_verdict != NULL) {
			util_buf_adds(out, " verdict=(");
			sched_add_oneline(out, env->quarantine_verdict);
			util_buf_adds(out, ")");
		}
		util_buf_adds(out, "\n");
	}
	for (size_t r = 0; r < env->nrcpts; r++) {
		util_buf_adds(out, "recipient: <");
		sched_add_oneline(out, env->rcpts[r].addr);
		util_buf_printf(out, "> %s", sched_rcpt_state_name(env->rcpts[r].state));
		if (env->rcpts[r].last_reply) {
			util_buf_adds(out, " (");
			sched_add_oneline(out, env->rcpts[r].last_reply);
			util_buf_adds(out, ")");
		}
		util_buf_adds(out, "\n");
	}
	if (env->last_error) {
		util_buf_adds(out, "last_error: ");
		sched_add_oneline(out, env->last_error);
		util_buf_adds(out, "\n");
	}
	util_buf_adds(out, "\n");
	struct util_buf hdr;
	util_buf_init(&hdr);
	sched_read_headers(s, env, &hdr);
	/* the answer is line-oriented: CRLF becomes LF */
	for (size_t i = 0; i < hdr.len; i++)
		if (hdr.data[i] != '\r')
			util_buf_add(out, &hdr.data[i], 1);
	util_buf_free(&hdr);
	queue_envelope_free(env);
	return 0;
}

/* queue_sched_count - messages in the queue. */
size_t queue_sched_count(const struct queue_sched *s)
{
	return s->count;
}

/* queue_sched_count_state - messages whose folder is st now (metrics). */
size_t queue_sched_count_state(const struct queue_sched *s, enum queue_state st)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nbuckets; i++)
		for (const struct sched_item *it = s->buckets[i]; it; it = it->hnext)
			n += it->st == st;
	return n;
}

/* queue_sched_oldest - arrival time of the oldest message, 0 when empty;
 * quarantined messages do not count (they wait for a person, and
 * mxgate_quarantine_oldest_age_seconds watches them). */
int64_t queue_sched_oldest(const struct queue_sched *s)
{
	int64_t oldest = 0;
	for (size_t i = 0; i < s->nbuckets; i++)
		for (const struct sched_item *it = s->buckets[i]; it; it = it->hnext)
			if (it->st != QUEUE_QUARANTINE && (oldest == 0 || it->arrival < oldest))
				oldest = it->arrival;
	return oldest;
}

/* sched_read_headers - prepend + header block of msg/ID, up to the empty
 * line (capped at SCHED_HEADERS_MAX).  A small local read on the loop thread:
 * the file was just read by the attempt, so it is in the page cache. */
void sched_read_headers(struct queue_sched *s, const struct queue_envelope *env,
                        struct util_buf *out)
{
	if (env->prepend != NULL)
		util_buf_adds(out, env->prepend);
	char path[PATH_MAX];
	queue_msg_path(s->qs, env->id, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char buf[8192];
	size_t start = out->len;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		util_buf_add(out, buf, (size_t)n);
		if (memcmp(out->data + start, "\r\n", out->len - start >= 2 ? 2 : 0) == 0 &&
		    out->len - start >= 2) {
			out->len = start; /* empty header block */
			break;
		}
		const char *end = memmem(out->data + start, out->len - start, "\r\n\r\n", 4);
		if (end != NULL) {
			out->len = (size_t)(end - out->data) + 2;
			break;
		}
		if (out->len - start > SCHED_HEADERS_MAX) {
			out->len = start + SCHED_HEADERS_MAX;
			break;
		}
	}
	if (out->data != NULL)
		out->data[out->len] = '\0';
	close(fd);
}
