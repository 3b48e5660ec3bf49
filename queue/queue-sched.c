/*
 * queue-sched.c - the delivery scheduler: an in-memory index of every queued
 * message (hash table by id + min-heap on next attempt, one timer for the
 * earliest), built by one scan at start-up and kept current by the store's
 * commit hook; it starts attempts through the deliverer (struct
 * queue_deliver_ops), applies per-recipient outcomes, retries with backoff,
 * expires and bounces.  Concurrency: [queue] max_deliveries attempts in all,
 * and per destination (route, or route and domain for type mx) the route's
 * max_deliveries; a due message whose destination is full is parked on it
 * (no slot taken) until one of its attempts ends.
 *
 * Crash safety (at-least-once): recipient outcomes live only in memory until
 * queue_env_update() has made them durable; a DSN is committed (queue_inject)
 * BEFORE the recipients it reports are marked FAILED on disk, so a crash
 * can at worst repeat a bounce or a delivery, never lose one.  A message is
 * removed (queue_msg_remove) only when every recipient is DONE or FAILED.
 *
 * Unreadable envelopes: an open/read error (EMFILE, ENFILE, EIO, ...) never
 * drops a message - it stays indexed and is read again with backoff
 * (sched_load); only an envelope that was read and does not parse is moved
 * to corrupt/.
 *
 * Ownership: the scheduler owns its items and attempts.  During an attempt
 * it owns the envelope it loaded; the deliverer borrows it (and idx,
 * msg_path, route) until it calls queue_delivery_done().  Messages with the
 * null sender or is_dsn are never bounced: failures are logged and dropped.
 * Routing: messages mxgate originated (queue_envelope_is_local: DSNs) take
 * the outbound route; everything else the inbound route of its recipient
 * domain (config_route_for).
 *
 * Diagnostics: log lines start with the queue id, then key=value fields:
 *   "ID status=deferred attempts=3 next_attempt=120s error=(...)".
 * Postmaster operations live in queue-sched-ops.c.
 */
#include "queue-sched-internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define SCHED_DEFAULT_MAX_DELIVERIES 20
#define SCHED_READ_RETRY_MAX         300 /* s between retries of an unreadable envelope */

/* One delivery of a group of recipients that share a route. */
struct queue_delivery {
	struct sched_attempt *a;
	size_t *idx;
	size_t nidx;
	bool done;
};

/* One attempt on one message: all its pending recipients, maybe in groups. */
struct sched_attempt {
	struct queue_sched *s; /* NULL once the scheduler was freed */
	struct sched_item *it;
	struct queue_envelope *env; /* owned */
	enum queue_state from;
	char msg_path[PATH_MAX];
	struct queue_delivery *groups;
	size_t ngroups;
	size_t pending; /* groups not done yet (+1 while starting) */
	bool *has_out;  /* per env recipient */
	enum queue_outcome *out;
	char **reply;
	char *error; /* first attempt-level error */
	/* finishing: DSNs to inject, then the envelope update or removal */
	char *dsn_failed;
	size_t dsn_failed_len;
	char *dsn_delayed;
	size_t dsn_delayed_len;
	bool *failed_now;          /* recipients FAILED by this attempt */
	bool finishing;            /* outcomes applied; DSNs / update running */
	bool removing;             /* every recipient final: remove, not update */
	struct sched_dest **dests; /* destinations whose slot this attempt holds */
	size_t ndests;
	struct sched_attempt *next; /* s->attempts list */
};

static void sched_finish_step(struct sched_attempt *a);
static void sched_unpark(struct queue_sched *s, struct sched_item *it);

/* sched_now - wall clock seconds (envelope times are epoch seconds). */
int64_t sched_now(void)
{
	return util_now_us() / 1000000;
}

/* sched_hash - FNV-1a of a queue id. */
static size_t sched_hash(const char *id, size_t nbuckets)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *id; id++) {
		h ^= (unsigned char)*id;
		h *= 1099511628211ULL;
	}
	return (size_t)(h % nbuckets);
}

/* sched_find - the item with this id, or NULL. */
struct sched_item *sched_find(const struct queue_sched *s, const char *id)
{
	for (struct sched_item *it = s->buckets[sched_hash(id, s->nbuckets)]; it; it = it->hnext)
		if (strcmp(it->id, id) == 0)
			return it;
	return NULL;
}

/* sched_rehash - double the table when it gets full (load factor 1). */
static void sched_rehash(struct queue_sched *s)
{
	size_t nb = s->nbuckets * 2;
	struct sched_item **b = util_xcalloc(nb, sizeof(*b));
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct sched_item *it = s->buckets[i];
		while (it) {
			struct sched_item *next = it->hnext;
			size_t h = sched_hash(it->id, nb);
			it->hnext = b[h];
			b[h] = it;
			it = next;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

/* sched_less - heap order: earlier next attempt first, then older message. */
static bool sched_less(const struct sched_item *x, const struct sched_item *y)
{
	if (x->next_attempt != y->next_attempt)
		return x->next_attempt < y->next_attempt;
	return strcmp(x->id, y->id) < 0;
}

/* sched_heap_set - put it at slot i. */
static void sched_heap_set(struct queue_sched *s, size_t i, struct sched_item *it)
{
	s->heap[i] = it;
	it->heap_idx = i;
}

/* sched_sift_up - restore the heap upwards from i. */
static void sched_sift_up(struct queue_sched *s, size_t i)
{
	struct sched_item *it = s->heap[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!sched_less(it, s->heap[p]))
			break;
		sched_heap_set(s, i, s->heap[p]);
		i = p;
	}
	sched_heap_set(s, i, it);
}

/* sched_sift_down - restore the heap downwards from i. */
static void sched_sift_down(struct queue_sched *s, size_t i)
{
	struct sched_item *it = s->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= s->heap_len)
			break;
		if (c + 1 < s->heap_len && sched_less(s->heap[c + 1], s->heap[c]))
			c++;
		if (!sched_less(s->heap[c], it))
			break;
		sched_heap_set(s, i, s->heap[c]);
		i = c;
	}
	sched_heap_set(s, i, it);
}

/* sched_arm_timer - one timer for the earliest next attempt. */
static void sched_arm_timer(struct queue_sched *s)
{
	if (s->heap_len == 0 || s->draining) {
		event_del(s->timer);
		return;
	}
	int64_t delay = s->heap[0]->next_attempt - sched_now();
	if (delay < 0)
		delay = 0;
	struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = delay == 0 ? 1000 : 0};
	event_add(s->timer, &tv);
}

/* sched_dest_find - the destination with this key, or NULL. */
static struct sched_dest *sched_dest_find(const struct queue_sched *s, const char *key)
{
	for (struct sched_dest *d = s->dests; d; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	return NULL;
}

/* sched_dest_get - find or create. */
static struct sched_dest *sched_dest_get(struct queue_sched *s, const char *key)
{
	struct sched_dest *d = sched_dest_find(s, key);
	if (d == NULL) {
		d = util_xcalloc(1, sizeof(*d));
		d->key = util_xstrdup(key);
		d->next = s->dests;
		s->dests = d;
	}
	return d;
}

/* sched_dest_gc - forget a destination nobody uses. */
static void sched_dest_gc(struct queue_sched *s, struct sched_dest *d)
{
	if (d->in_flight > 0 || d->nparked > 0)
		return;
	struct sched_dest **pp = &s->dests;
	while (*pp != d)
		pp = &(*pp)->next;
	*pp = d->next;
	free(d->key);
	free(d);
}

/* sched_park - a due message waits for a slot of d (not in the heap). */
static void sched_park(struct queue_sched *s, struct sched_item *it, struct sched_dest *d)
{
	it->parked = d;
	it->pnext = NULL;
	if (d->park_tail)
		d->park_tail->pnext = it;
	else
		d->park_head = it;
	d->park_tail = it;
	d->nparked++;
}

/* sched_unpark - take it off its park list (it is in no index then). */
static void sched_unpark(struct queue_sched *s, struct sched_item *it)
{
	struct sched_dest *d = it->parked;
	struct sched_item *prev = NULL;
	for (struct sched_item *x = d->park_head; x && x != it; x = x->pnext)
		prev = x;
	if (prev)
		prev->pnext = it->pnext;
	else
		d->park_head = it->pnext;
	if (d->park_tail == it)
		d->park_tail = prev;
	d->nparked--;
	it->parked = NULL;
	it->pnext = NULL;
	sched_dest_gc(s, d);
}

/* sched_unpark_some - put up to n parked messages of d back in the heap
 * (first parked, first back); they are due, so the dispatcher sees them
 * first.  A message blocked by another destination parks there instead. */
static void sched_unpark_some(struct queue_sched *s, struct sched_dest *d, size_t n)
{
	while (n-- > 0 && d->park_head != NULL) {
		struct sched_item *it = d->park_head;
		bool last = d->nparked == 1;
		sched_unpark(s, it); /* frees d with the last one when idle */
		sched_heap_push(s, it);
		if (last)
			break;
	}
}

/* sched_dest_key - the deliverer's pool key of a route: "route" or, for type
 * mx, "route/domain" (lower case). */
static char *sched_dest_key(const struct config_route *r, const char *domain)
{
	char *key = r->type == CONFIG_ROUTE_MX ? util_xasprintf("%s/%s", r->name, domain)
	                                       : util_xstrdup(r->name);
	for (char *k = key; *k; k++)
		if (*k >= 'A' && *k <= 'Z')
			*k = (char)(*k - 'A' + 'a');
	return key;
}

/* sched_dest_limit - a route's max_deliveries (default: its max_connections;
 * a directory route opens no connections: only the global limit). */
static int sched_dest_limit(const struct config_route *r)
{
	if (r->max_deliveries > 0)
		return r->max_deliveries;
	if (r->type == CONFIG_ROUTE_DIRECTORY)
		return INT_MAX;
	return r->max_connections > 0 ? r->max_connections : 10;
}

/* sched_heap_push - index it for its next attempt (held and quarantined
 * items are not, unless a release waits for a retry of their unreadable
 * envelope; parked items wait in their destination's park list). */
void sched_heap_push(struct queue_sched *s, struct sched_item *it)
{
	bool kept = it->st == QUEUE_HOLD || it->st == QUEUE_QUARANTINE;
	if (it->heap_idx != SCHED_NOT_IN_HEAP || (kept && !it->want_release) || it->parked != NULL)
		return;
	if (s->heap_len == s->heap_cap) {
		s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 256;
		s->heap = util_xrealloc(s->heap, s->heap_cap * sizeof(*s->heap));
	}
	sched_heap_set(s, s->heap_len++, it);
	sched_sift_up(s, it->heap_idx);
	if (it->heap_idx == 0)
		sched_arm_timer(s);
}

/* sched_heap_remove - take it out of the heap (no-op when not in it). */
void sched_heap_remove(struct queue_sched *s, struct sched_item *it)
{
	if (it->parked != NULL)
		sched_unpark(s, it);
	size_t i = it->heap_idx;
	if (i == SCHED_NOT_IN_HEAP)
		return;
	it->heap_idx = SCHED_NOT_IN_HEAP;
	struct sched_item *last = s->heap[--s->heap_len];
	if (i < s->heap_len) {
		sched_heap_set(s, i, last);
		sched_sift_up(s, i);
		sched_sift_down(s, last->heap_idx);
	}
	if (i == 0)
		sched_arm_timer(s);
}

/* sched_index - index a message (no-op when already known). */
static struct sched_item *sched_index(struct queue_sched *s, const char *id, enum queue_state st,
                                      int64_t next_attempt, int64_t arrival)
{
	struct sched_item *it = sched_find(s, id);
	if (it != NULL)
		return it;
	if (s->count >= s->nbuckets)
		sched_rehash(s);
	it = util_xcalloc(1, sizeof(*it));
	snprintf(it->id, sizeof(it->id), "%s", id);
	it->st = st;
	it->next_attempt = next_attempt;
	it->arrival = arrival;
	it->heap_idx = SCHED_NOT_IN_HEAP;
	size_t h = sched_hash(it->id, s->nbuckets);
	it->hnext = s->buckets[h];
	s->buckets[h] = it;
	s->count++;
	sched_heap_push(s, it);
	return it;
}

/* sched_item_add - index a message from its envelope. */
static struct sched_item *sched_item_add(struct queue_sched *s, const struct queue_envelope *env,
                                         enum queue_state st)
{
	struct sched_item *it = sched_index(s, env->id, st, env->next_attempt, env->arrival);
	sched_quarantine_note(it, env);
	return it;
}

/* sched_item_drop - forget a message (its files are gone). */
void sched_item_drop(struct queue_sched *s, struct sched_item *it)
{
	sched_heap_remove(s, it);
	struct sched_item **pp = &s->buckets[sched_hash(it->id, s->nbuckets)];
	while (*pp != it)
		pp = &(*pp)->hnext;
	*pp = it->hnext;
	s->count--;
	free(it->by);
	free(it);
}

/* sched_load - load an idle item's envelope, or deal with the failure:
 * gone -> dropped; unparsable -> set aside into corrupt/ and dropped; a
 * read error (EMFILE, ENFILE, EIO, ...: the file may well be fine) -> the
 * item stays indexed (visible to `queue list`) and is retried after 1, 2,
 * 4 ... s, at most SCHED_READ_RETRY_MAX. */
bool sched_load(struct queue_sched *s, struct sched_item *it, const char *op,
                struct queue_envelope **env, enum queue_state *st)
{
	enum queue_state where = it->st;
	*env = NULL;
	if (queue_env_load(s->qs, it->id, env, &where) == 0) {
		if (it->read_errors > 0)
			util_log_info("%s status=readable op=%s after_read_errors=%d", it->id, op,
			              it->read_errors);
		it->read_errors = 0;
		it->read_errno = 0;
		if (st != NULL)
			*st = where;
		return true;
	}
	int err = errno;
	sched_heap_remove(s, it);
	if (err == ENOENT || err == EINVAL) {
		util_log_warn("%s status=dropped op=%s error=(envelope gone)", it->id, op);
		sched_item_drop(s, it);
		return false;
	}
	if (err == EBADMSG) {
		util_log_err("%s status=set-aside op=%s error=(envelope unparsable) to=corrupt/",
		             it->id, op);
		queue_env_set_aside(s->qs, it->id, where, NULL, NULL);
		sched_item_drop(s, it);
		return false;
	}
	it->read_errors++;
	it->read_errno = err;
	int64_t delay = (int64_t)1 << (it->read_errors <= 9 ? it->read_errors - 1 : 9);
	if (delay > SCHED_READ_RETRY_MAX)
		delay = SCHED_READ_RETRY_MAX;
	it->next_attempt = sched_now() + delay;
	util_metrics_inc("mxgate_queue_envelope_errors_total", "read");
	util_log_err("%s status=retry op=%s error=(envelope unreadable: %s) read_errors=%d "
	             "next_attempt=%llds",
	             it->id, op, strerror(err), it->read_errors, (long long)delay);
	sched_heap_push(s, it);
	return false;
}

/* sched_kick - dispatch from a fresh loop iteration, never inline. */
void sched_kick(struct queue_sched *s)
{
	if (!s->draining)
		event_active(s->kick, 0, 0);
}

/* sched_max_deliveries - configured limit of concurrent attempts. */
static int sched_max_deliveries(const struct queue_sched *s)
{
	return s->cfg->max_deliveries > 0 ? s->cfg->max_deliveries : SCHED_DEFAULT_MAX_DELIVERIES;
}

/* sched_attempt_free - release an attempt and everything it owns. */
static void sched_attempt_free(struct sched_attempt *a)
{
	if (a->s != NULL) {
		struct sched_attempt **pp = &a->s->attempts;
		while (*pp && *pp != a)
			pp = &(*pp)->next;
		if (*pp)
			*pp = a->next;
	}
	if (a->env != NULL) {
		for (size_t i = 0; i < a->env->nrcpts; i++)
			free(a->reply[i]);
	}
	for (size_t g = 0; g < a->ngroups; g++)
		free(a->groups[g].idx);
	free(a->groups);
	free(a->dests);
	free(a->has_out);
	free(a->out);
	free(a->reply);
	free(a->failed_now);
	free(a->error);
	free(a->dsn_failed);
	free(a->dsn_delayed);
	queue_envelope_free(a->env);
	free(a);
}

/* sched_attempt_end - the attempt is over: free it, settle the item, make
 * room for the next one. */
static void sched_attempt_end(struct sched_attempt *a, bool removed)
{
	struct queue_sched *s = a->s;
	struct sched_item *it = a->it;
	if (s != NULL) {
		/* a freed slot lets one parked message of the destination go */
		for (size_t i = 0; i < a->ndests; i++) {
			struct sched_dest *d = a->dests[i];
			d->in_flight--;
			if (d->nparked > 0)
				sched_unpark_some(s, d, 1);
			else
				sched_dest_gc(s, d);
		}
	}
	sched_attempt_free(a);
	if (s == NULL)
		return;
	s->in_flight--;
	if (removed) {
		sched_item_drop(s, it);
	} else {
		it->busy = false;
		sched_settle(s, it);
	}
	if (s->draining && s->in_flight == 0 && s->drain_cb != NULL) {
		void (*cb)(void *) = s->drain_cb;
		s->drain_cb = NULL;
		cb(s->drain_arg);
	}
	sched_kick(s);
}

/* sched_group_for - the group of a recipient: same route (and same domain
 * for MX routes, whose hosts depend on the domain). */
static struct queue_delivery *sched_group_for(struct sched_attempt *a,
                                              const struct config_route **routes,
                                              const struct config_route *r, const char *domain)
{
	for (size_t g = 0; g < a->ngroups; g++) {
		if (routes[g] != r)
			continue;
		if (r != NULL && r->type == CONFIG_ROUTE_MX) {
			const char *d0 = util_domain_of(a->env->rcpts[a->groups[g].idx[0]].addr);
			if (!util_strcaseeq(d0 ? d0 : "", domain))
				continue;
		}
		return &a->groups[g];
	}
	routes[a->ngroups] = r;
	struct queue_delivery *d = &a->groups[a->ngroups++];
	d->a = a;
	d->idx = util_xcalloc(a->env->nrcpts, sizeof(size_t));
	return d;
}

/* sched_start_attempt - load the envelope and hand each group of pending
 * recipients to the deliverer. */
static void sched_start_attempt(struct queue_sched *s, struct sched_item *it)
{
	struct queue_envelope *env = NULL;
	enum queue_state st;
	if (!sched_load(s, it, "attempt", &env, &st))
		return;
	/* Per-destination limit: while a destination of its pending recipients
	 * has max_deliveries attempts in flight, the message waits (parked) and
	 * takes no [queue] max_deliveries slot, so a slow or dead route cannot
	 * starve the others. */
	size_t nkeys = 0;
	char **keys = util_xcalloc(env->nrcpts + 1, sizeof(char *));
	int *limits = util_xcalloc(env->nrcpts + 1, sizeof(int));
	struct sched_dest *blocked = NULL;
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].state != QUEUE_RCPT_PENDING)
			continue;
		const char *domain = util_domain_of(env->rcpts[i].addr);
		const struct config_route *r = config_route_for(s->cfg, domain ? domain : "");
		if (r == NULL)
			continue;
		char *key = sched_dest_key(r, domain ? domain : "");
		bool seen = false;
		for (size_t k = 0; k < nkeys && !seen; k++)
			seen = strcmp(keys[k], key) == 0;
		if (seen) {
			free(key);
			continue;
		}
		limits[nkeys] = sched_dest_limit(r);
		keys[nkeys++] = key;
		struct sched_dest *d = sched_dest_find(s, key);
		if (blocked == NULL && d != NULL && d->in_flight >= limits[nkeys - 1])
			blocked = d;
	}
	if (blocked != NULL) {
		util_log_debug("%s status=waiting destination=%s in_flight=%d", it->id,
		               blocked->key, blocked->in_flight);
		sched_park(s, it, blocked);
		nkeys = 0; /* no slot taken */
	}
	struct sched_dest **dests = util_xcalloc(nkeys + 1, sizeof(*dests));
	for (size_t k = 0; k < nkeys; k++) {
		dests[k] = sched_dest_get(s, keys[k]);
		dests[k]->in_flight++;
	}
	for (size_t k = 0; keys[k] != NULL; k++)
		free(keys[k]);
	free(keys);
	free(limits);
	if (blocked != NULL) {
		free(dests);
		queue_envelope_free(env);
		return;
	}
	struct sched_attempt *a = util_xcalloc(1, sizeof(*a));
	a->dests = dests;
	a->ndests = nkeys;
	a->s = s;
	a->it = it;
	a->env = env;
	a->from = st;
	a->next = s->attempts;
	s->attempts = a;
	size_t n = env->nrcpts;
	a->has_out = util_xcalloc(n + 1, sizeof(bool));
	a->out = util_xcalloc(n + 1, sizeof(*a->out));
	a->reply = util_xcalloc(n + 1, sizeof(char *));
	a->failed_now = util_xcalloc(n + 1, sizeof(bool));
	a->groups = util_xcalloc(n + 1, sizeof(*a->groups));
	const struct config_route **routes = util_xcalloc(n + 1, sizeof(*routes));
	queue_msg_path(s->qs, env->id, a->msg_path, sizeof(a->msg_path));

	for (size_t i = 0; i < n; i++) {
		if (env->rcpts[i].state != QUEUE_RCPT_PENDING)
			continue;
		const char *domain = util_domain_of(env->rcpts[i].addr);
		/* What we originate (DSNs) goes out through the outbound route,
		 * never through an inbound downstream that takes mail for our own
		 * domains only (SES/WorkMail inbound-smtp would refuse it). */
		const struct config_route *r = queue_envelope_is_local(env)
		                                   ? config_route_outbound(s->cfg)
		                                   : config_route_for(s->cfg, domain ? domain : "");
		struct queue_delivery *d = sched_group_for(a, routes, r, domain ? domain : "");
		d->idx[d->nidx++] = i;
	}
	it->busy = true;
	s->in_flight++;
	a->pending = a->ngroups + 1; /* +1: a synchronous done cannot finish early */
	for (size_t g = 0; g < a->ngroups; g++) {
		if (routes[g] == NULL) {
			queue_delivery_done(&a->groups[g], "4.3.5 no route for recipient domain");
			continue;
		}
		s->ops->start(s->ops_ctx, &a->groups[g], env, a->groups[g].idx, a->groups[g].nidx,
		              a->msg_path, routes[g]);
	}
	free(routes);
	if (--a->pending == 0)
		sched_finish_step(a);
}

/* sched_dispatch - start every due attempt the limits allow, re-arm. */
static void sched_dispatch(struct queue_sched *s)
{
	int64_t now = sched_now();
	while (!s->draining && s->heap_len > 0 && s->in_flight < sched_max_deliveries(s)) {
		struct sched_item *it = s->heap[0];
		if (it->next_attempt > now)
			break;
		sched_heap_remove(s, it);
		if (it->want_hold || it->want_release) {
			/* a hold or release that waited for its envelope to be
			 * readable again (sched_move_to): retry that first */
			sched_settle(s, it);
			continue;
		}
		sched_start_attempt(s, it);
	}
	sched_arm_timer(s);
}

/* sched_timer_cb - the earliest next attempt is due. */
static void sched_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	sched_dispatch(arg);
}

/* queue_delivery_result - record one recipient's outcome. */
void queue_delivery_result(struct queue_delivery *d, size_t idx, enum queue_outcome out,
                           const char *reply)
{
	struct sched_attempt *a = d->a;
	if (a->env == NULL || idx >= a->env->nrcpts)
		return;
	a->has_out[idx] = true;
	a->out[idx] = out;
	util_metrics_inc("mxgate_delivery_attempts_total", out == QUEUE_OUT_DONE    ? "delivered"
	                                                   : out == QUEUE_OUT_DEFER ? "deferred"
	                                                                            : "bounced");
	free(a->reply[idx]);
	a->reply[idx] = reply ? util_xstrdup(reply) : NULL;
}

/* queue_delivery_done - one group finished; recipients without an outcome
 * are deferred with the error. */
void queue_delivery_done(struct queue_delivery *d, const char *error_or_null)
{
	struct sched_attempt *a = d->a;
	if (d->done)
		return;
	d->done = true;
	const char *err = error_or_null ? error_or_null : "4.4.0 delivery attempt failed";
	for (size_t i = 0; i < d->nidx; i++) {
		size_t k = d->idx[i];
		if (!a->has_out[k])
			queue_delivery_result(d, k, QUEUE_OUT_DEFER, err);
	}
	if (error_or_null != NULL && a->error == NULL)
		a->error = util_xstrdup(error_or_null);
	if (--a->pending == 0)
		sched_finish_step(a);
}

/* sched_status_of - the enhanced status code (RFC 3463) in a reply such as
 * "550 5.1.1 unknown", or a default from the basic code. */
static void sched_status_of(const char *reply, bool permanent, char out[16])
{
	const char *p = reply ? reply : "";
	if (p[0] >= '2' && p[0] <= '5' && strlen(p) > 4 && p[3] == ' ')
		p += 4;
	int a1, a2, a3, n = 0;
	if (sscanf(p, "%1d.%3d.%3d%n", &a1, &a2, &a3, &n) == 3 && (a1 == 4 || a1 == 5)) {
		snprintf(out, 16, "%d.%d.%d", a1, a2, a3);
		return;
	}
	snprintf(out, 16, "%s", permanent ? "5.0.0" : "4.0.0");
}

/* sched_make_dsn - compose a DSN for the recipients marked in `which`. */
static char *sched_make_dsn(struct sched_attempt *a, const bool *which, const char *action,
                            bool expired, size_t *len)
{
	struct queue_sched *s = a->s;
	const struct queue_envelope *env = a->env;
	struct queue_dsn_rcpt *r = util_xcalloc(env->nrcpts + 1, sizeof(*r));
	char(*status)[16] = util_xcalloc(env->nrcpts + 1, sizeof(*status));
	char **diag = util_xcalloc(env->nrcpts + 1, sizeof(char *));
	size_t n = 0;
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (!which[i])
			continue;
		const char *rep = a->reply[i] ? a->reply[i] : env->rcpts[i].last_reply;
		bool perm = a->out[i] == QUEUE_OUT_BOUNCE;
		if (expired && !perm)
			snprintf(status[n], 16, "4.4.7");
		else
			sched_status_of(rep, perm, status[n]);
		bool is_smtp = rep && rep[0] >= '2' && rep[0] <= '5' && rep[1] >= '0' &&
		               rep[1] <= '9' && rep[2] >= '0' && rep[2] <= '9';
		diag[n] = util_xasprintf("%s; %s%s", is_smtp ? "smtp" : "x-mxgate",
		                         rep ? rep : "unknown error",
		                         expired && !perm ? " (message expired in queue)" : "");
		r[n].addr = env->rcpts[i].addr;
		r[n].status = status[n];
		r[n].diagnostic = diag[n];
		n++;
	}
	struct util_buf hdr;
	util_buf_init(&hdr);
	sched_read_headers(s, env, &hdr);
	/* RFC 3462 headers only, and not too many of them: what a DSN carries
	 * back is text the (possibly forged) sender chose. */
	hdr.len = queue_dsn_headers_cut(hdr.data, hdr.len,
	                                s->cfg->bounce_max_headers > 0
	                                    ? (size_t)s->cfg->bounce_max_headers
	                                    : (size_t)16384);
	const char *mta = s->cfg->hostname ? s->cfg->hostname : "localhost";
	char *from = s->cfg->bounce_sender ? util_xstrdup(s->cfg->bounce_sender)
	                                   : util_xasprintf("MAILER-DAEMON@%s", mta);
	char *msg =
	    queue_dsn_compose(mta, from, env, action, r, n, hdr.data, hdr.len, sched_now(), len);
	free(from);
	util_buf_free(&hdr);
	for (size_t i = 0; i < n; i++)
		free(diag[i]);
	free(diag);
	free(status);
	free(r);
	return msg;
}

/* sched_apply_outcomes - turn this attempt's outcomes into recipient states,
 * log them, prepare DSNs and the next attempt time. */
static void sched_apply_outcomes(struct sched_attempt *a)
{
	struct queue_sched *s = a->s;
	struct queue_envelope *env = a->env;
	int64_t now = sched_now();
	int64_t lifetime = s->cfg->max_queue_lifetime;
	bool expired = lifetime > 0 && now >= env->arrival + lifetime;
	bool may_bounce = env->sender[0] != '\0' && !env->is_dsn;
	/* Never a DSN to a sender the ingress checks found forged. */
	const char *suppress = may_bounce ? queue_dsn_suppress_reason(env) : NULL;
	if (suppress != NULL)
		may_bounce = false;
	bool *delayed = util_xcalloc(env->nrcpts + 1, sizeof(bool));
	size_t nfailed = 0, ndelayed = 0;
	const char *first_defer = NULL;

	for (size_t i = 0; i < env->nrcpts; i++) {
		if (!a->has_out[i])
			continue;
		struct queue_rcpt *r = &env->rcpts[i];
		free(r->last_reply);
		r->last_reply = a->reply[i] ? util_xstrdup(a->reply[i]) : NULL;
		if (a->out[i] == QUEUE_OUT_DONE) {
			r->state = QUEUE_RCPT_DONE;
			util_metrics_observe("mxgate_delivery_seconds",
			                     (double)(now - env->arrival));
			continue;
		}
		if (a->out[i] == QUEUE_OUT_DEFER && !expired) {
			delayed[i] = true;
			ndelayed++;
			if (first_defer == NULL)
				first_defer = r->last_reply;
			continue;
		}
		r->state = QUEUE_RCPT_FAILED;
		a->failed_now[i] = true;
		nfailed++;
		util_log_info("%s to=<%s> status=%s dsn=%s (%s)", env->id, r->addr,
		              a->out[i] == QUEUE_OUT_BOUNCE ? "bounced" : "expired",
		              may_bounce          ? "yes"
		              : suppress != NULL ? (strcmp(suppress, "spf_fail") == 0 ? "no-spf-fail"
		                                                                    : "no-dmarc-fail")
		                                 : "no-null-sender",
		              r->last_reply ? r->last_reply : "");
	}
	env->attempts++;
	free(env->last_error);
	env->last_error =
	    first_defer ? util_xstrdup(first_defer) : (a->error ? util_xstrdup(a->error) : NULL);
	if (suppress != NULL && nfailed > 0) {
		util_log_info("%s status=dsn-suppressed reason=%s from=<%s> spf=%s dmarc=%s "
		              "recipients=%zu",
		              env->id, suppress, env->sender, env->spf ? env->spf : "-",
		              env->dmarc ? env->dmarc : "-", nfailed);
		util_metrics_inc("mxgate_dsn_suppressed_total", suppress);
	}
	if (nfailed > 0 && may_bounce)
		a->dsn_failed =
		    sched_make_dsn(a, a->failed_now, "failed", expired, &a->dsn_failed_len);
	if (ndelayed > 0 && may_bounce && !env->delay_warned && s->cfg->delay_warning_time > 0 &&
	    now - env->arrival >= s->cfg->delay_warning_time) {
		a->dsn_delayed = sched_make_dsn(a, delayed, "delayed", false, &a->dsn_delayed_len);
		env->delay_warned = true;
	}
	int64_t next = now + queue_backoff(s->cfg->retry_schedule, s->cfg->nretry, env->attempts);
	/* Do not sleep past the expiry: one last attempt right at the deadline. */
	if (lifetime > 0 && next > env->arrival + lifetime)
		next = env->arrival + lifetime > now ? env->arrival + lifetime : now + 1;
	env->next_attempt = next;
	if (ndelayed > 0)
		util_log_info("%s status=deferred attempts=%d next_attempt=%llds error=(%s)",
		              env->id, env->attempts, (long long)(next - now),
		              env->last_error ? env->last_error : "");
	free(delayed);
}

/* sched_dsn_new_env - envelope of a DSN to the sender of env (null sender). */
static struct queue_envelope *sched_dsn_new_env(const struct queue_sched *s,
                                                const struct queue_envelope *env, const char *msg,
                                                size_t len)
{
	struct queue_envelope *d = queue_envelope_new();
	d->sender = util_xstrdup("");
	queue_envelope_add_rcpt(d, env->sender);
	d->client_addr = util_xstrdup("127.0.0.1");
	d->helo = util_xstrdup(s->cfg->hostname ? s->cfg->hostname : "localhost");
	d->prepend = util_xstrdup("");
	d->arrival = sched_now();
	d->size = (int64_t)len;
	d->is_dsn = true;
	for (const char *p = env->sender; *p; p++)
		if ((unsigned char)*p >= 0x80)
			d->smtputf8 = true;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)msg[i] >= 0x80) {
			d->eightbit = true;
			break;
		}
	return d;
}

/* sched_dsn_committed - a DSN is durable (or failed): continue finishing. */
static void sched_dsn_committed(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct sched_attempt *a = arg;
	bool failed_kind = cookie == 1;
	if (a->s == NULL) {
		sched_attempt_free(a);
		return;
	}
	if (status != 0) {
		util_log_err("%s status=dsn-failed kind=%s error=(%s); will retry", a->env->id,
		             failed_kind ? "failed" : "delayed", strerror(err));
		if (failed_kind) {
			/* Not reported yet: keep the recipients pending so a later
			 * attempt bounces them again. */
			for (size_t i = 0; i < a->env->nrcpts; i++)
				if (a->failed_now[i])
					a->env->rcpts[i].state = QUEUE_RCPT_PENDING;
		} else {
			a->env->delay_warned = false;
		}
	} else {
		util_log_info("%s status=dsn-queued kind=%s dsn_id=%s to=<%s>", a->env->id,
		              failed_kind ? "failed" : "delayed", qid, a->env->sender);
		if (sched_find(a->s, qid) == NULL) {
			struct queue_envelope *denv = NULL;
			enum queue_state st;
			if (queue_env_load(a->s->qs, qid, &denv, &st) == 0) {
				sched_item_add(a->s, denv, st);
				queue_envelope_free(denv);
			} else {
				/* committed, so it exists: index it anyway, the
				 * attempt reads (or retries) the envelope */
				sched_index(a->s, qid, QUEUE_ACTIVE, 0, sched_now());
			}
			sched_kick(a->s);
		}
	}
	sched_finish_step(a);
}

/* sched_env_written - the envelope update or the removal is durable. */
static void sched_env_written(int status, void *arg)
{
	struct sched_attempt *a = arg;
	if (a->s == NULL) {
		sched_attempt_free(a);
		return;
	}
	bool removed = a->removing;
	if (status != 0)
		util_log_err("%s status=error error=(envelope %s failed; state kept on disk)",
		             a->it->id, removed ? "removal" : "update");
	else if (!removed)
		a->it->st = QUEUE_DEFERRED;
	if (!removed || status != 0)
		a->it->next_attempt = a->env->next_attempt;
	if (removed && status == 0)
		util_log_info("%s status=removed", a->it->id);
	sched_attempt_end(a, removed && status == 0);
}

/* sched_finish_step - after every group is done: outcomes, then each DSN
 * (one commit at a time), then the envelope update or removal. */
static void sched_finish_step(struct sched_attempt *a)
{
	struct queue_sched *s = a->s;
	if (s == NULL) {
		sched_attempt_free(a);
		return;
	}
	if (!a->finishing) {
		a->finishing = true;
		if (!a->it->want_delete)
			sched_apply_outcomes(a);
	}
	if (a->it->want_delete) {
		free(a->dsn_failed);
		free(a->dsn_delayed);
		a->dsn_failed = a->dsn_delayed = NULL;
	}
	if (a->dsn_failed != NULL || a->dsn_delayed != NULL) {
		bool failed_kind = a->dsn_failed != NULL;
		char *msg = failed_kind ? a->dsn_failed : a->dsn_delayed;
		size_t len = failed_kind ? a->dsn_failed_len : a->dsn_delayed_len;
		if (failed_kind)
			a->dsn_failed = NULL;
		else
			a->dsn_delayed = NULL;
		queue_inject(s->qs, sched_dsn_new_env(s, a->env, msg, len), msg, len,
		             sched_dsn_committed, failed_kind ? 1 : 2, a);
		free(msg);
		return;
	}
	a->removing = true;
	for (size_t i = 0; i < a->env->nrcpts; i++)
		if (a->env->rcpts[i].state == QUEUE_RCPT_PENDING)
			a->removing = false;
	bool purge = a->it->want_delete;
	if (purge) {
		/* the postmaster deleted it while it was being delivered */
		a->it->want_delete = false;
		util_log_info("%s status=deleted by=postmaster", a->it->id);
		a->removing = true;
	}
	if (a->removing && purge)
		queue_msg_purge(s->qs, a->it->id, a->from, sched_env_written, a);
	else if (a->removing)
		queue_msg_remove(s->qs, a->it->id, a->from, sched_env_written, a);
	else
		queue_env_update(s->qs, a->env, a->from, QUEUE_DEFERRED, sched_env_written, a);
}

/* sched_kick_cb - deferred dispatch. */
static void sched_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	sched_dispatch(arg);
}

/* sched_on_commit - store hook: index a new message and deliver it now
 * (a message committed into quarantine/ waits for a release). */
static void sched_on_commit(const struct queue_envelope *env, enum queue_state st, void *arg)
{
	struct queue_sched *s = arg;
	sched_item_add(s, env, st);
	if (st == QUEUE_ACTIVE)
		sched_kick(s);
}

/* sched_on_scan - start-up: index one envelope found on disk. */
static void sched_on_scan(const struct queue_envelope *env, enum queue_state st, void *arg)
{
	sched_item_add(arg, env, st);
}

/* sched_on_unreadable - start-up: an envelope that could not be read is
 * indexed all the same (arrival from the file's mtime) and read again by
 * its first attempt, retried with backoff while the error lasts. */
static void sched_on_unreadable(const char *id, enum queue_state st, int64_t mtime, int err,
                                void *arg)
{
	struct sched_item *it = sched_index(arg, id, st, 0, mtime);
	it->read_errno = err;
}

/* queue_sched_new - index the store and start delivering. */
struct queue_sched *queue_sched_new(struct queue_store *qs, struct event_base *base,
                                    const struct config *cfg, const struct queue_deliver_ops *ops,
                                    void *ops_ctx)
{
	struct queue_sched *s = util_xcalloc(1, sizeof(*s));
	s->qs = qs;
	s->base = base;
	s->cfg = cfg;
	s->ops = ops;
	s->ops_ctx = ops_ctx;
	s->nbuckets = 1024;
	s->buckets = util_xcalloc(s->nbuckets, sizeof(*s->buckets));
	s->timer = evtimer_new(base, sched_timer_cb, s);
	s->kick = event_new(base, -1, 0, sched_kick_cb, s);
	if (s->timer == NULL || s->kick == NULL || sched_quarantine_start(s) < 0) {
		util_log_err("queue scheduler: cannot create events");
		queue_sched_free(s);
		return NULL;
	}
	if (queue_store_scan(qs, sched_on_scan, sched_on_unreadable, s) != 0)
		util_log_err("queue scheduler: scan of %s incomplete", queue_store_dir(qs));
	queue_store_on_commit(qs, sched_on_commit, s);
	util_log_info("queue scheduler: started messages=%zu max_deliveries=%d", s->count,
	              sched_max_deliveries(s));
	sched_kick(s);
	return s;
}

/* queue_sched_set_config - reload: the new config is used from now on. */
void queue_sched_set_config(struct queue_sched *s, const struct config *cfg)
{
	s->cfg = cfg;
	/* routes and their limits may have changed: every parked message is
	 * judged again */
	struct sched_dest *next;
	for (struct sched_dest *d = s->dests; d; d = next) {
		next = d->next;
		sched_unpark_some(s, d, d->nparked);
	}
	sched_kick(s);
}

/* queue_sched_free - forget everything; attempts still running are
 * orphaned (their late callbacks only free them). */
void queue_sched_free(struct queue_sched *s)
{
	if (s == NULL)
		return;
	if (s->qs != NULL)
		queue_store_on_commit(s->qs, NULL, NULL);
	for (struct sched_attempt *a = s->attempts; a; a = a->next)
		a->s = NULL;
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct sched_item *it = s->buckets[i];
		while (it) {
			struct sched_item *next = it->hnext;
			free(it->by);
			free(it);
			it = next;
		}
	}
	if (s->timer)
		event_free(s->timer);
	if (s->kick)
		event_free(s->kick);
	if (s->qsweep)
		event_free(s->qsweep);
	while (s->dests != NULL) {
		struct sched_dest *d = s->dests;
		s->dests = d->next;
		free(d->key);
		free(d);
	}
	free(s->buckets);
	free(s->heap);
	free(s);
}

/* sched_drain_now - deferred drain callback when nothing was in flight. */
static void sched_drain_now(evutil_socket_t fd, short what, void *arg)
{
	struct queue_sched *s = arg;
	if (s->drain_cb != NULL && s->in_flight == 0) {
		void (*cb)(void *) = s->drain_cb;
		s->drain_cb = NULL;
		cb(s->drain_arg);
	}
}

/* queue_sched_drain - start nothing new; cb once in-flight attempts end. */
void queue_sched_drain(struct queue_sched *s, void (*cb)(void *arg), void *arg)
{
	s->draining = true;
	s->drain_cb = cb;
	s->drain_arg = arg;
	event_del(s->timer);
	util_log_info("queue scheduler: draining in_flight=%d", s->in_flight);
	if (s->in_flight == 0 && cb != NULL)
		event_base_once(s->base, -1, EV_TIMEOUT, sched_drain_now, s, NULL);
}
