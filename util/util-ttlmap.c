/*
 * util-ttlmap.c - a bounded in-process map of byte-string keys to small
 * fixed-size values with an expiry: the state behind rate limits,
 * greylisting and the pregreet pass cache when no [state] redis is set.
 *
 * Bounded, and never fail open when full: inserting into a full map evicts
 * one entry, chosen as Redis does for maxmemory (approximated LRU): sample
 * UTIL_TTLMAP_SAMPLES entries at random, take an expired one if any, else
 * the least recently used.  O(1) per insertion - entries sit in a dense
 * array as well as in the hash chains, so a random pick is one index - and
 * never a scan of the table on the loop.  A key in active use (an attacker
 * over its rate limit, an allowlisted network) is recently used, so churn
 * of cold keys evicts cold keys.  Evictions of live entries are counted in
 * mxgate_state_evictions_total{table} and logged at most once a minute per
 * map ("state table full ...").
 *
 * Times are whatever the caller uses (wall-clock seconds here); "now" is
 * passed in, so tests drive the clock.
 * Ownership: the map owns its entries and copies of the keys; values are
 * plain bytes (no pointers the map would have to free).
 * Threads: one thread (the loop).
 * Diagnostics: the log line and metric above.
 */
#include "util.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define UTIL_TTLMAP_SAMPLES 8
#define LOG_INTERVAL_MS     60000

struct ttl_ent {
	struct ttl_ent *hnext;
	size_t slot;     /* index in m->ents */
	int64_t expires; /* the caller's time */
	uint64_t used;   /* m->clock at the last get/put */
	uint32_t hash;
	uint32_t klen;
	alignas(16) unsigned char data[]; /* value (vsize bytes, padded), then the key */
};

struct util_ttlmap {
	char name[32];
	size_t cap, vsize, vpad;
	struct ttl_ent **buckets;
	size_t nbuckets;       /* a power of two */
	struct ttl_ent **ents; /* dense: ents[0..n) */
	size_t n;
	uint64_t clock; /* use counter (LRU order) */
	uint64_t rng;   /* xorshift64 state */
	uint64_t evictions, unlogged;
	int64_t logged_ms;
};

/* hash - FNV-1a. */
static uint32_t hash(const void *key, size_t klen)
{
	const unsigned char *p = key;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < klen; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* rnd - xorshift64: enough to pick samples. */
static uint64_t rnd(struct util_ttlmap *m)
{
	uint64_t x = m->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return m->rng = x;
}

/* util_ttlmap_new - see util.h. */
struct util_ttlmap *util_ttlmap_new(const char *name, size_t capacity, size_t vsize)
{
	struct util_ttlmap *m = util_xcalloc(1, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->cap = capacity > 0 ? capacity : 1;
	m->vsize = vsize;
	m->vpad = (vsize + 15) & ~(size_t)15;
	m->nbuckets = 1024;
	while (m->nbuckets < m->cap && m->nbuckets < ((size_t)1 << 24))
		m->nbuckets <<= 1;
	m->buckets = util_xcalloc(m->nbuckets, sizeof(*m->buckets));
	m->ents = util_xcalloc(m->cap, sizeof(*m->ents));
	m->rng = 0x9e3779b97f4a7c15ull; /* fixed: runs are reproducible; nobody sees the samples */
	return m;
}

/* util_ttlmap_free - see util.h. */
void util_ttlmap_free(struct util_ttlmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->ents[i]);
	free(m->ents);
	free(m->buckets);
	free(m);
}

/* ent_key - the key bytes of e. */
static const unsigned char *ent_key(const struct util_ttlmap *m, const struct ttl_ent *e)
{
	return e->data + m->vpad;
}

/* lookup - the entry of key, or NULL. */
static struct ttl_ent *lookup(struct util_ttlmap *m, const void *key, size_t klen, uint32_t h)
{
	for (struct ttl_ent *e = m->buckets[h & (m->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->klen == klen && memcmp(ent_key(m, e), key, klen) == 0)
			return e;
	return NULL;
}

/* remove_ent - unlink e from its chain and the dense array; free it. */
static void remove_ent(struct util_ttlmap *m, struct ttl_ent *e)
{
	for (struct ttl_ent **pp = &m->buckets[e->hash & (m->nbuckets - 1)]; *pp;
	     pp = &(*pp)->hnext)
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
	struct ttl_ent *last = m->ents[--m->n];
	m->ents[e->slot] = last;
	last->slot = e->slot;
	free(e);
}

/* evict_one - sampled eviction: an expired entry, else the least recently
 * used of UTIL_TTLMAP_SAMPLES random ones. */
static void evict_one(struct util_ttlmap *m, int64_t now)
{
	struct ttl_ent *victim = NULL;
	for (int i = 0; i < UTIL_TTLMAP_SAMPLES; i++) {
		struct ttl_ent *e = m->ents[rnd(m) % m->n];
		if (e->expires <= now) {
			victim = e;
			break;
		}
		if (!victim || e->used < victim->used)
			victim = e;
	}
	if (victim->expires > now) {
		m->evictions++;
		m->unlogged++;
		util_metrics_inc("mxgate_state_evictions_total", m->name);
		int64_t ms = util_mono_ms();
		if (m->logged_ms == 0 || ms - m->logged_ms >= LOG_INTERVAL_MS) {
			util_log_warn(
			    "state table full: evicting live entries table=%s capacity=%zu "
			    "evicted=%llu (since the last line)",
			    m->name, m->cap, (unsigned long long)m->unlogged);
			m->logged_ms = ms;
			m->unlogged = 0;
		}
	}
	remove_ent(m, victim);
}

/* util_ttlmap_get - see util.h. */
void *util_ttlmap_get(struct util_ttlmap *m, const void *key, size_t klen, int64_t now)
{
	struct ttl_ent *e = lookup(m, key, klen, hash(key, klen));
	if (!e)
		return NULL;
	if (e->expires <= now) {
		remove_ent(m, e);
		return NULL;
	}
	e->used = ++m->clock;
	return e->data;
}

/* util_ttlmap_put - see util.h. */
void *util_ttlmap_put(struct util_ttlmap *m, const void *key, size_t klen, int64_t now, bool *fresh)
{
	uint32_t h = hash(key, klen);
	struct ttl_ent *e = lookup(m, key, klen, h);
	if (e && e->expires <= now) {
		remove_ent(m, e); /* expired: starts over */
		e = NULL;
	}
	if (e) {
		e->used = ++m->clock;
		if (fresh)
			*fresh = false;
		return e->data;
	}
	while (m->n >= m->cap)
		evict_one(m, now);
	e = util_xcalloc(1, sizeof(*e) + m->vpad + klen);
	memcpy(e->data + m->vpad, key, klen);
	e->klen = (uint32_t)klen;
	e->hash = h;
	e->expires = now; /* the caller sets it */
	e->used = ++m->clock;
	e->slot = m->n;
	m->ents[m->n++] = e;
	e->hnext = m->buckets[h & (m->nbuckets - 1)];
	m->buckets[h & (m->nbuckets - 1)] = e;
	if (fresh)
		*fresh = true;
	return e->data;
}

/* util_ttlmap_expires - see util.h. */
int64_t *util_ttlmap_expires(void *value)
{
	struct ttl_ent *e =
	    (struct ttl_ent *)((unsigned char *)value - offsetof(struct ttl_ent, data));
	return &e->expires;
}

/* util_ttlmap_count - see util.h. */
size_t util_ttlmap_count(const struct util_ttlmap *m)
{
	return m->n;
}

/* util_ttlmap_evictions - see util.h. */
uint64_t util_ttlmap_evictions(const struct util_ttlmap *m)
{
	return m->evictions;
}

/* util_ttlmap_foreach - see util.h. */
void util_ttlmap_foreach(struct util_ttlmap *m,
                         void (*fn)(void *arg, const void *key, size_t klen, void *value,
                                    int64_t expires),
                         void *arg)
{
	for (size_t i = 0; i < m->n; i++) {
		struct ttl_ent *e = m->ents[i];
		fn(arg, ent_key(m, e), e->klen, e->data, e->expires);
	}
}
