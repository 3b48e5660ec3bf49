/*
 * policy-dnsbl.c - the client address against DNS lists (RFC 5782).
 *
 * Loop side (issue 17): policy_dnsbl_check() looks the client up in every
 * [dnsbl] site and [spam] dnsbl_zones zone at once - one A query per
 * distinct zone, all in flight together through mxgate's libunbound async
 * resolver, so the loop never waits - and hands back the weighted score
 * (negative weights are allowlists, DNSWL), the site to name in a 554 and
 * the zones that enter the spam score.  Answers are cached by query name
 * for [dnsbl] cache_ttl (listed and not listed alike; a timeout is not
 * cached), at most DNSBL_CACHE_MAX names, oldest first out.
 * Worker side: the "client has no PTR" fact of the spam score, and - only
 * for a message whose connect-time lookups were not handed over
 * (policy_msg_set_dnsbl) - the [spam] dnsbl_zones lookups.
 *
 * A listing is an A answer in 127.0.0.0/8 outside 127.255.255.0/24: that
 * block is what Spamhaus and others answer to refused queries (open
 * resolvers, over quota), which must never block a client
 * (config_dnsbl_is_listing).  A timeout or SERVFAIL is "no data" too: the
 * client is judged without that zone (fail open), logged by the caller and
 * counted in `failed`.
 *
 * Ownership: struct policy_dnsbl owns its cache and the checks in flight;
 * a check owns copies of the sites and zones it needs (a reload may free
 * the config meanwhile).  policy_dnsbl_free drops checks in flight; their
 * DNS requests must then be dropped by policy_dns_free (called next).
 * Threads: loop only, except policy_dnsbl_eval (worker).
 * Diagnostics: lookups at debug level.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

#define DNS_T_A         1
#define DNS_T_PTR       12
#define DNSBL_MAX_ADDRS 8     /* A records kept per answer */
#define DNSBL_CACHE_MAX 65536 /* query names cached */
#define DNSBL_BUCKETS   16384
#define DNSBL_NAME_MAX  330 /* 32 nibbles x 2 + a 253-byte zone + dot */

struct dnsbl_answer {
	bool done, failed;
	uint8_t a[DNSBL_MAX_ADDRS][4];
	size_t n;
};

struct dnsbl_cache_ent {
	char *name;
	struct dnsbl_answer ans;
	int64_t expires;               /* monotonic ms */
	struct dnsbl_cache_ent *hnext; /* hash chain */
	struct dnsbl_cache_ent *fnext; /* insertion order (eviction) */
};

struct dnsbl_check;

/* One query of a check: the check and which zone. */
struct dnsbl_query {
	struct dnsbl_check *c;
	size_t idx;
};

struct dnsbl_check {
	struct policy_dnsbl *b;
	struct dnsbl_check *next, *prev;
	policy_dnsbl_cb cb;
	void *arg;
	uint64_t cookie;
	struct config_dnsbl_site *sites; /* owned copy */
	size_t nsites;
	struct util_strlist spam;  /* owned copy of [spam] dnsbl_zones */
	struct util_strlist zones; /* distinct zones queried */
	char **names;              /* owned; query name per zone */
	struct dnsbl_answer *ans;  /* per zone */
	struct dnsbl_query *qs;    /* per zone */
	size_t pending;
	int64_t ttl_ms;
	int cached;
	struct event *done_ev; /* finish from the loop when all came from the cache */
};

struct policy_dnsbl {
	struct event_base *base;    /* borrowed */
	struct policy_dns *dns;     /* borrowed */
	struct dnsbl_check *checks; /* owned; in flight */
	struct dnsbl_cache_ent *buckets[DNSBL_BUCKETS];
	struct dnsbl_cache_ent *fhead, *ftail;
	size_t ncache;
};

/* ------------------------------------------------------------ names */

/* policy_dnsbl_reverse - RFC 5782 2.1 / 2.4: reversed octets or nibbles. */
void policy_dnsbl_reverse(const struct util_addr *a, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = 0;
	if (a->ss.ss_family == AF_INET) {
		const unsigned char *b =
		    (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
		snprintf(out, outlen, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]);
		return;
	}
	if (a->ss.ss_family != AF_INET6)
		return;
	const unsigned char *b =
	    (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
	for (int i = 15; i >= 0 && o + 5 < outlen; i--) {
		o += (size_t)snprintf(out + o, outlen - o, "%x.%x.", b[i] & 0xf, b[i] >> 4);
	}
	if (o > 0)
		out[o - 1] = 0;
}

/* ------------------------------------------------------------ cache */

/* cache_hash - FNV-1a of a query name. */
static size_t cache_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h % DNSBL_BUCKETS;
}

/* cache_unlink - remove e from its hash chain. */
static void cache_unlink(struct policy_dnsbl *b, struct dnsbl_cache_ent *e)
{
	for (struct dnsbl_cache_ent **pp = &b->buckets[cache_hash(e->name)]; *pp;
	     pp = &(*pp)->hnext)
		if (*pp == e) {
			*pp = e->hnext;
			return;
		}
}

/* cache_get - a fresh answer for name at now (monotonic ms), or NULL. */
static const struct dnsbl_answer *cache_get(struct policy_dnsbl *b, const char *name, int64_t now)
{
	for (struct dnsbl_cache_ent *e = b->buckets[cache_hash(name)]; e; e = e->hnext)
		if (strcmp(e->name, name) == 0)
			return e->expires > now ? &e->ans : NULL;
	return NULL;
}

/* cache_put - remember an answer from now (monotonic ms) for ttl_ms
 * (replaces an older one; evicts the oldest name when full). */
static void cache_put(struct policy_dnsbl *b, const char *name, const struct dnsbl_answer *ans,
                      int64_t ttl_ms, int64_t now)
{
	int64_t exp = now + ttl_ms;
	for (struct dnsbl_cache_ent *e = b->buckets[cache_hash(name)]; e; e = e->hnext)
		if (strcmp(e->name, name) == 0) {
			e->ans = *ans;
			e->expires = exp;
			return;
		}
	if (b->ncache >= DNSBL_CACHE_MAX && b->fhead) {
		struct dnsbl_cache_ent *old = b->fhead;
		b->fhead = old->fnext;
		if (!b->fhead)
			b->ftail = NULL;
		cache_unlink(b, old);
		util_metrics_inc("mxgate_state_evictions_total", "dnsbl");
		free(old->name);
		free(old);
		b->ncache--;
	}
	struct dnsbl_cache_ent *e = util_xcalloc(1, sizeof(*e));
	size_t h = cache_hash(name);
	e->name = util_xstrdup(name);
	e->ans = *ans;
	e->expires = exp;
	e->hnext = b->buckets[h];
	b->buckets[h] = e;
	if (b->ftail)
		b->ftail->fnext = e;
	else
		b->fhead = e;
	b->ftail = e;
	b->ncache++;
}

/* policy_dnsbl_cache_get - see policy-internal.h. */
int policy_dnsbl_cache_get(struct policy_dnsbl *b, const char *name, int64_t now_ms,
                           uint8_t (*a)[4], size_t max)
{
	const struct dnsbl_answer *ans = cache_get(b, name, now_ms);
	if (!ans)
		return -1;
	size_t n = ans->n < max ? ans->n : max;
	memcpy(a, ans->a, n * 4);
	return (int)n;
}

/* policy_dnsbl_cache_put - see policy-internal.h. */
void policy_dnsbl_cache_put(struct policy_dnsbl *b, const char *name, const uint8_t (*a)[4],
                            size_t n, int64_t ttl_ms, int64_t now_ms)
{
	struct dnsbl_answer ans;
	memset(&ans, 0, sizeof(ans));
	ans.done = true;
	ans.n = n < DNSBL_MAX_ADDRS ? n : DNSBL_MAX_ADDRS;
	memcpy(ans.a, a, ans.n * 4);
	cache_put(b, name, &ans, ttl_ms, now_ms);
}

/* ------------------------------------------------------------ checks */

/* policy_dnsbl_new - an empty cache. */
struct policy_dnsbl *policy_dnsbl_new(struct event_base *base, struct policy_dns *dns)
{
	struct policy_dnsbl *b = util_xcalloc(1, sizeof(*b));
	b->base = base;
	b->dns = dns;
	return b;
}

/* check_free - unlink and free one check. */
static void check_free(struct dnsbl_check *c)
{
	struct policy_dnsbl *b = c->b;
	if (c->prev)
		c->prev->next = c->next;
	else
		b->checks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	for (size_t i = 0; i < c->zones.n; i++)
		free(c->names[i]);
	free(c->names);
	free(c->ans);
	free(c->qs);
	free(c->sites);
	util_strlist_free(&c->spam);
	util_strlist_free(&c->zones);
	if (c->done_ev)
		event_free(c->done_ev);
	free(c);
}

/* policy_dnsbl_free - the cache and the checks in flight (no callbacks). */
void policy_dnsbl_free(struct policy_dnsbl *b)
{
	if (!b)
		return;
	while (b->checks)
		check_free(b->checks);
	for (struct dnsbl_cache_ent *e = b->fhead, *n; e; e = n) {
		n = e->fnext;
		free(e->name);
		free(e);
	}
	free(b);
}

/* policy_dnsbl_wanted - any zone configured. */
bool policy_dnsbl_wanted(const struct config *cfg)
{
	return cfg->ndnsbl_sites > 0 || cfg->dnsbl_zones.n > 0;
}

/* zone_answer - the answer for zone in check c (NULL when not queried). */
static const struct dnsbl_answer *zone_answer(const struct dnsbl_check *c, const char *zone)
{
	for (size_t i = 0; i < c->zones.n; i++)
		if (strcmp(c->zones.v[i], zone) == 0)
			return &c->ans[i];
	return NULL;
}

/* check_finish - every zone answered: score, callback, free. */
static void check_finish(struct dnsbl_check *c)
{
	struct policy_dnsbl_result r;
	int best = 0;
	memset(&r, 0, sizeof(r));
	r.cached = c->cached;
	for (size_t i = 0; i < c->zones.n; i++)
		if (c->ans[i].failed)
			r.failed++;
	for (size_t i = 0; i < c->nsites; i++) {
		const struct config_dnsbl_site *site = &c->sites[i];
		const struct dnsbl_answer *a = zone_answer(c, site->zone);
		for (size_t k = 0; a && k < a->n; k++) {
			if (!config_dnsbl_match(site, a->a[k]))
				continue;
			char item[300];
			snprintf(item, sizeof(item), "%s=%u.%u.%u.%u", site->zone, a->a[k][0],
			         a->a[k][1], a->a[k][2], a->a[k][3]);
			util_strlist_add(&r.listed, item);
			r.score += site->weight;
			if (site->weight > best) {
				best = site->weight;
				snprintf(r.blocked_by, sizeof(r.blocked_by), "%s", site->zone);
			}
			if (site->weight < 0)
				r.allowlisted = true;
			if (site->weight > 0 && !util_strlist_has_case(&r.tag_zones, site->zone))
				util_strlist_add(&r.tag_zones, site->zone);
			break; /* one match per site: weights count once */
		}
	}
	for (size_t i = 0; i < c->spam.n; i++) {
		const struct dnsbl_answer *a = zone_answer(c, c->spam.v[i]);
		for (size_t k = 0; a && k < a->n; k++)
			if (config_dnsbl_is_listing(a->a[k])) {
				util_strlist_add(&r.spam_zones, c->spam.v[i]);
				break;
			}
	}
	c->cb(c->arg, c->cookie, &r);
	util_strlist_free(&r.listed);
	util_strlist_free(&r.tag_zones);
	util_strlist_free(&r.spam_zones);
	check_free(c);
}

/* done_cb - finish a check answered wholly from the cache. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	check_finish(arg);
}

/* query_cb - one zone answered (or failed). */
static void query_cb(void *arg, enum policy_dns_status st, const struct util_addr *addrs, size_t n)
{
	struct dnsbl_query *q = arg;
	struct dnsbl_check *c = q->c;
	struct dnsbl_answer *a = &c->ans[q->idx];
	a->done = true;
	a->failed = st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS;
	for (size_t i = 0; st == POLICY_DNS_OK && i < n && a->n < DNSBL_MAX_ADDRS; i++) {
		if (addrs[i].ss.ss_family != AF_INET)
			continue;
		memcpy(a->a[a->n++], &((const struct sockaddr_in *)&addrs[i].ss)->sin_addr, 4);
	}
	util_log_debug("- dnsbl query=%s status=%s answers=%zu", c->names[q->idx],
	               policy_dns_status_str(st), a->n);
	if (!a->failed && c->ttl_ms > 0)
		cache_put(c->b, c->names[q->idx], a, c->ttl_ms, util_mono_ms());
	if (--c->pending == 0)
		check_finish(c);
}

/* add_zone - a distinct zone to query. */
static void add_zone(struct dnsbl_check *c, const char *zone)
{
	if (!util_strlist_has_case(&c->zones, zone))
		util_strlist_add(&c->zones, zone);
}

/* policy_dnsbl_check - start the lookups. */
void policy_dnsbl_check(struct policy_dnsbl *b, const struct config *cfg,
                        const struct util_addr *client, policy_dnsbl_cb cb, void *arg,
                        uint64_t cookie)
{
	char rev[80];
	struct dnsbl_check *c = util_xcalloc(1, sizeof(*c));
	c->b = b;
	c->cb = cb;
	c->arg = arg;
	c->cookie = cookie;
	c->ttl_ms = cfg->dnsbl_cache_ttl * 1000;
	c->next = b->checks;
	if (b->checks)
		b->checks->prev = c;
	b->checks = c;
	policy_dnsbl_reverse(client, rev, sizeof(rev));
	if (rev[0]) {
		/* IPv4-mapped IPv6 clients were normalised by util_addr; an
		 * unknown family queries nothing (no data). */
		c->nsites = cfg->ndnsbl_sites;
		if (c->nsites) {
			c->sites = util_xcalloc(c->nsites, sizeof(*c->sites));
			memcpy(c->sites, cfg->dnsbl_sites, c->nsites * sizeof(*c->sites));
		}
		for (size_t i = 0; i < cfg->dnsbl_zones.n; i++)
			util_strlist_add(&c->spam, cfg->dnsbl_zones.v[i]);
		for (size_t i = 0; i < c->nsites; i++)
			add_zone(c, c->sites[i].zone);
		for (size_t i = 0; i < c->spam.n; i++)
			add_zone(c, c->spam.v[i]);
	}
	size_t nz = c->zones.n;
	c->names = util_xcalloc(nz ? nz : 1, sizeof(*c->names));
	c->ans = util_xcalloc(nz ? nz : 1, sizeof(*c->ans));
	c->qs = util_xcalloc(nz ? nz : 1, sizeof(*c->qs));
	int64_t now_ms = util_mono_ms();
	for (size_t i = 0; i < nz; i++) {
		c->names[i] = util_xasprintf("%s.%s", rev, c->zones.v[i]);
		const struct dnsbl_answer *hit =
		    c->ttl_ms > 0 ? cache_get(b, c->names[i], now_ms) : NULL;
		if (hit) {
			c->ans[i] = *hit;
			c->cached++;
		}
	}
	/* Every query goes out before any can answer (answers come from the
	 * loop, never inside policy_dns_resolve_a). */
	for (size_t i = 0; i < nz; i++) {
		if (c->ans[i].done)
			continue;
		c->qs[i].c = c;
		c->qs[i].idx = i;
		c->pending++;
	}
	if (c->pending == 0) {
		static const struct timeval now = {0, 0};
		c->done_ev = event_new(b->base, -1, 0, done_cb, c);
		if (c->done_ev)
			event_add(c->done_ev, &now);
		else
			check_finish(c); /* out of memory: better late than never */
		return;
	}
	for (size_t i = 0; i < nz; i++)
		if (!c->ans[i].done)
			policy_dns_resolve_a(b->dns, c->names[i], query_cb, &c->qs[i]);
}

/* ------------------------------------------------------------ worker side */

/* policy_msg_set_dnsbl - the connect-time listings. */
void policy_msg_set_dnsbl(struct policy_msg *pm, const struct util_strlist *zones)
{
	/* Once finish started, a worker may be reading dnsbl_hits (or asking
	 * the zones itself): too late, and never from two threads. */
	if (pm->finished)
		return;
	util_strlist_free(&pm->dnsbl_hits);
	for (size_t i = 0; i < zones->n; i++)
		util_strlist_add(&pm->dnsbl_hits, zones->v[i]);
	pm->dnsbl_known = true;
}

/* policy_dnsbl_eval - worker: DNSBL listings (unless known from connect
 * time) and the client's PTR. */
void policy_dnsbl_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	char rev[80];

	pm->rdns_checked = false;
	policy_dnsbl_reverse(&pm->client, rev, sizeof(rev));
	if (rev[0] == 0)
		return;
	for (size_t i = 0; !pm->dnsbl_known && i < cfg->dnsbl_zones.n; i++) {
		struct policy_dns_answer ans;
		char *name = util_xasprintf("%s.%s", rev, cfg->dnsbl_zones.v[i]);
		bool listed = false;

		policy_dns_query_sync(pm->pc->dns, name, DNS_T_A, &ans);
		for (size_t k = 0; k < ans.n; k++)
			if (ans.len[k] == 4 && config_dnsbl_is_listing(ans.data[k]))
				listed = true;
		if (listed)
			util_strlist_add(&pm->dnsbl_hits, cfg->dnsbl_zones.v[i]);
		policy_dns_answer_free(&ans);
		free(name);
	}
	if (cfg->weight_no_rdns != 0) {
		struct policy_dns_answer ans;
		char *name = util_xasprintf(
		    "%s.%s", rev, pm->client.ss.ss_family == AF_INET ? "in-addr.arpa" : "ip6.arpa");
		policy_dns_query_sync(pm->pc->dns, name, DNS_T_PTR, &ans);
		/* only a definite "no such name / no PTR" counts, never a timeout;
		 * a PTR that is not an LDH host name (CR, LF, spaces... in a
		 * label) is no rDNS either, as for Received: */
		pm->rdns_checked = true;
		pm->no_rdns = ans.status == POLICY_DNS_NXDOMAIN || ans.status == POLICY_DNS_NODATA;
		if (ans.status == POLICY_DNS_OK) {
			bool named = false;
			for (size_t k = 0; k < ans.n && !named; k++) {
				char host[256];
				named = policy_dns_name_from_wire(ans.data[k], ans.len[k], host,
				                                  sizeof(host)) == 0 &&
				        host[0] != '\0';
			}
			pm->no_rdns = !named;
		}
		policy_dns_answer_free(&ans);
		free(name);
	}
}
