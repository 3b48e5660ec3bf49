/*
 * smtp-greylist.c - greylisting (issue 17, optional, [greylist] enabled):
 * at the end of DATA, once the message is judged acceptable, each
 * (client network, envelope sender, recipient) triplet seen for the first
 * time gets "451 4.7.1 Greylisted, try again in N seconds"; a retry after
 * `delay` and within `retry_window` is accepted, and the client's network
 * (/24, /64: [ratelimit] net_prefix_v4/v6, since big senders retry from
 * another address of their pool) is then allowlisted for `allowlist_ttl`.
 *
 * At the end of DATA rather than at RCPT so the exemptions can be known:
 * DKIM-signed mail passing DMARC for a p=reject domain is never greylisted,
 * nor a client a negative-weight [dnsbl] site lists (DNSWL), nor an SPF
 * pass for a sender domain in skip_spf_domains.  Costs the body of the
 * first attempt, once per triplet.
 *
 * Ownership: the server owns the state (smtp_greylist_free).  Times are
 * wall-clock seconds.  At most GREY_MAX keys; when full, expired ones are
 * purged, and if none, the message passes (fail open, logged).
 *
 * Diagnostics: "s=ID greylist client=IP from=<a> rcpt=<b> result=new|early|
 * retried|allowlisted|skipped reason=..."; counter mxgate_greylist_total{result}.
 */
#include <string.h>
#include <time.h>

#include "smtp-server-internal.h"

#define GREY_MAX     500000
#define GREY_BUCKETS 65536

struct grey_ent {
	char *key;
	int64_t first;   /* first attempt */
	int64_t expires; /* forgotten then */
	bool passed;     /* retried correctly */
	struct grey_ent *next;
};

struct smtp_greylist {
	struct grey_ent *b[GREY_BUCKETS];
	size_t n;
	int64_t last_purge; /* a full table is scanned at most once a second */
};

/* grey_hash - FNV-1a of a key. */
static size_t grey_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h % GREY_BUCKETS;
}

/* smtp_greylist_new - empty state. */
struct smtp_greylist *smtp_greylist_new(void)
{
	return util_xcalloc(1, sizeof(struct smtp_greylist));
}

/* smtp_greylist_free - all of it; NULL is a no-op. */
void smtp_greylist_free(struct smtp_greylist *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < GREY_BUCKETS; i++)
		while (g->b[i]) {
			struct grey_ent *e = g->b[i];
			g->b[i] = e->next;
			free(e->key);
			free(e);
		}
	free(g);
}

/* purge - drop expired keys. */
static void purge(struct smtp_greylist *g, int64_t now)
{
	for (size_t i = 0; i < GREY_BUCKETS; i++)
		for (struct grey_ent **pp = &g->b[i]; *pp;) {
			struct grey_ent *e = *pp;
			if (e->expires > now) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			free(e->key);
			free(e);
			g->n--;
		}
}

/* find - the live entry of key, or NULL (an expired one is reset). */
static struct grey_ent *find(struct smtp_greylist *g, const char *key, int64_t now)
{
	for (struct grey_ent *e = g->b[grey_hash(key)]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e->expires > now ? e : NULL;
	return NULL;
}

/* put - the entry of key (new or reused), NULL when full. */
static struct grey_ent *put(struct smtp_greylist *g, const char *key, int64_t now)
{
	size_t h = grey_hash(key);
	for (struct grey_ent *e = g->b[h]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	if (g->n >= GREY_MAX && now != g->last_purge) {
		g->last_purge = now;
		purge(g, now);
	}
	if (g->n >= GREY_MAX)
		return NULL;
	struct grey_ent *e = util_xcalloc(1, sizeof(*e));
	e->key = util_xstrdup(key);
	e->next = g->b[h];
	g->b[h] = e;
	g->n++;
	return e;
}

/* note - log and count one result. */
static void note(struct smtp_session *s, const char *rcpt, const char *result, const char *why)
{
	util_log_info("s=%016llx greylist client=%s from=<%s> rcpt=<%s> result=%s%s%s",
	              (unsigned long long)s->id, s->client_str, s->tx->mail.addr, rcpt ? rcpt : "",
	              result, why ? " reason=" : "", why ? why : "");
	util_metrics_inc("mxgate_greylist_total", result);
}

/* exempt - why this message skips greylisting, or NULL. */
static const char *exempt(const struct smtp_session *s)
{
	const struct policy_msg *pm = s->tx->pm;
	if (s->dnswl)
		return "dnswl";
	if (pm && s->cfg->greylist_spf_domains.n > 0 &&
	    policy_msg_spf_pass_for(pm, &s->cfg->greylist_spf_domains))
		return "spf_pass";
	if (pm && policy_msg_dmarc_reject_dkim_pass(pm))
		return "dkim_dmarc_reject";
	return NULL;
}

/* smtp_greylist_check - every recipient's triplet. */
bool smtp_greylist_check(struct smtp_session *s, char *reply, size_t replylen)
{
	const struct config *cfg = s->cfg;
	struct smtp_greylist *g = s->srv->greylist;
	struct smtp_tx *tx = s->tx;
	char net[80], key[1200];
	int64_t now = (int64_t)time(NULL);
	int64_t wait = 0;
	if (!cfg->greylist_enabled || !g || !tx)
		return false;
	const char *why = exempt(s);
	if (why) {
		note(s, NULL, "skipped", why);
		return false;
	}
	smtp_rl_net_str(s, net, sizeof(net));
	snprintf(key, sizeof(key), "net %s", net);
	if (find(g, key, now)) {
		note(s, NULL, "allowlisted", NULL);
		return false;
	}
	bool retried = false;
	for (size_t i = 0; i < tx->rcpts.n; i++) {
		snprintf(key, sizeof(key), "t %s <%s> <%s>", net, tx->mail.addr, tx->rcpts.v[i]);
		struct grey_ent *e = find(g, key, now);
		if (!e) {
			e = put(g, key, now);
			if (!e) {
				util_log_warn("s=%016llx greylist full action=accept",
				              (unsigned long long)s->id);
				continue;
			}
			e->first = now;
			e->passed = false;
			e->expires = now + cfg->greylist_retry_window;
			note(s, tx->rcpts.v[i], "new", NULL);
			if (cfg->greylist_delay > wait)
				wait = cfg->greylist_delay;
			continue;
		}
		if (!e->passed && now - e->first < cfg->greylist_delay) {
			note(s, tx->rcpts.v[i], "early", NULL);
			if (e->first + cfg->greylist_delay - now > wait)
				wait = e->first + cfg->greylist_delay - now;
			continue;
		}
		if (!e->passed)
			note(s, tx->rcpts.v[i], "retried", NULL);
		e->passed = true;
		e->expires = now + cfg->greylist_allow_ttl;
		retried = true;
	}
	if (retried) {
		/* A correct retry: the whole network passes from now on. */
		snprintf(key, sizeof(key), "net %s", net);
		struct grey_ent *n = put(g, key, now);
		if (n)
			n->expires = now + cfg->greylist_allow_ttl;
	}
	if (wait == 0)
		return false;
	snprintf(reply, replylen, "451 4.7.1 Greylisted, please try again in %lld seconds",
	         (long long)wait);
	return true;
}
