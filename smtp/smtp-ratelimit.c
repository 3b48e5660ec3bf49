/*
 * smtp-ratelimit.c - rate limits per client address, client network (/24,
 * /64), envelope sender and recipient domain (issue 17): connections per
 * window at connect (421 4.7.0), MAIL FROM per window (451 4.7.1),
 * recipients per window (451 4.7.1).  The limits are one table (`rules`):
 * what is counted, the key, the config field, the reply.  The concurrency
 * caps per address ([limits] max_connections_per_ip) and per network
 * ([ratelimit] max_connections_per_net) are the counted-slot part of the
 * same policy and live in smtp-server.c's slot table, keyed by
 * smtp_rl_net_key for networks.
 *
 * Counters sit behind a small store interface (struct smtp_rl_store_ops):
 * hit(key, window) adds one and returns the count since the key's window
 * began, plus the seconds left in it - INCR and, on the first, EXPIRE in
 * Redis terms - so a shared Redis/Valkey store for a fleet is one more ops
 * table.  The in-process store here is a hash of keys with their count and
 * expiry (wall clock, so a window means the same on every node); at most
 * RL_MAX_KEYS keys, expired ones purged when full; a store that cannot
 * count answers -1 and the event is let through (fail open), logged and
 * counted.
 *
 * Ownership: the server owns the store (smtp_rl_store_free).  Keys are
 * copied.  Diagnostics: "s=ID ratelimit client=IP limit=NAME count=N max=M
 * retry=S"; counter mxgate_ratelimited_total{limit}.
 */
#include <arpa/inet.h>
#include <string.h>
#include <time.h>

#include "smtp-server-internal.h"

#define RL_MAX_KEYS 500000
#define RL_BUCKETS  65536

/* ------------------------------------------------------------ in-process store */

struct rl_ent {
	char *key;
	int64_t count;
	int64_t expires; /* wall-clock seconds */
	struct rl_ent *next;
};

struct rl_mem {
	struct smtp_rl_store base;
	struct rl_ent *b[RL_BUCKETS];
	size_t n;
	int64_t last_purge; /* a full table is scanned at most once a second */
};

/* rl_hash - FNV-1a of a key. */
static size_t rl_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h % RL_BUCKETS;
}

/* mem_purge - drop expired keys. */
static void mem_purge(struct rl_mem *m, int64_t now)
{
	for (size_t i = 0; i < RL_BUCKETS; i++)
		for (struct rl_ent **pp = &m->b[i]; *pp;) {
			struct rl_ent *e = *pp;
			if (e->expires > now) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			free(e->key);
			free(e);
			m->n--;
		}
}

/* mem_hit - INCR + EXPIRE on first: the count in key's current window. */
static int64_t mem_hit(struct smtp_rl_store *st, const char *key, int64_t window, int64_t *left)
{
	struct rl_mem *m = (struct rl_mem *)st;
	int64_t now = (int64_t)time(NULL);
	size_t h = rl_hash(key);
	struct rl_ent *e;
	for (e = m->b[h]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			break;
	if (!e) {
		if (m->n >= RL_MAX_KEYS && now != m->last_purge) {
			m->last_purge = now; /* a flood of new keys must not scan per event */
			mem_purge(m, now);
		}
		if (m->n >= RL_MAX_KEYS)
			return -1; /* full of live keys: fail open */
		e = util_xcalloc(1, sizeof(*e));
		e->key = util_xstrdup(key);
		e->next = m->b[h];
		m->b[h] = e;
		m->n++;
	}
	if (e->expires <= now) {
		e->count = 0;
		e->expires = now + window;
	}
	e->count++;
	*left = e->expires - now;
	return e->count;
}

/* mem_free - every key. */
static void mem_free(struct smtp_rl_store *st)
{
	struct rl_mem *m = (struct rl_mem *)st;
	for (size_t i = 0; i < RL_BUCKETS; i++)
		while (m->b[i]) {
			struct rl_ent *e = m->b[i];
			m->b[i] = e->next;
			free(e->key);
			free(e);
		}
	free(m);
}

static const struct smtp_rl_store_ops mem_ops = {"memory", mem_hit, mem_free};

/* smtp_rl_memory_new - the one-node store. */
struct smtp_rl_store *smtp_rl_memory_new(void)
{
	struct rl_mem *m = util_xcalloc(1, sizeof(*m));
	m->base.ops = &mem_ops;
	return &m->base;
}

/* smtp_rl_store_free - any store; NULL is a no-op. */
void smtp_rl_store_free(struct smtp_rl_store *st)
{
	if (st)
		st->ops->free(st);
}

/* ------------------------------------------------------------ keys */

/* smtp_rl_net_key - the client's network (net_prefix_v4/v6) as a slot key:
 * family byte with the top bit set (never equal to an address key), masked
 * address bytes. */
void smtp_rl_net_key(const struct config *cfg, const struct util_addr *a, uint8_t key[17])
{
	smtp_server_ip_key(a, key);
	int prefix = key[0] == 4 ? cfg->rl_net_prefix4 : cfg->rl_net_prefix6;
	int nbytes = key[0] == 4 ? 4 : 16;
	for (int i = 0; i < nbytes; i++) {
		int bits = prefix - 8 * i;
		uint8_t mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
		key[1 + i] &= mask;
	}
	key[0] |= 0x80;
}

/* smtp_rl_net_str - "192.0.2.0/24" / "2001:db8::/64" of the client's network. */
void smtp_rl_net_str(const struct smtp_session *s, char *out, size_t len)
{
	uint8_t key[17];
	char a[INET6_ADDRSTRLEN];
	smtp_rl_net_key(s->cfg, &s->client, key);
	bool v4 = (key[0] & 0x7f) == 4;
	inet_ntop(v4 ? AF_INET : AF_INET6, key + 1, a, sizeof(a));
	snprintf(out, len, "%s/%d", a, v4 ? s->cfg->rl_net_prefix4 : s->cfg->rl_net_prefix6);
}

/* ------------------------------------------------------------ the table */

enum rl_event { RL_CONNECT, RL_MAIL, RL_RCPT };
enum rl_subject { RL_IP, RL_NET, RL_SENDER, RL_DOMAIN };

static const struct rl_rule {
	const char *name; /* log and metric label */
	enum rl_event event;
	enum rl_subject subject;
	size_t limit_off; /* int field of struct config */
	const char *what; /* "connections", "messages", "recipients" */
} rules[] = {
    {"connections_per_ip", RL_CONNECT, RL_IP, offsetof(struct config, rl_conn_per_ip),
     "connections"},
    {"connections_per_net", RL_CONNECT, RL_NET, offsetof(struct config, rl_conn_per_net),
     "connections"},
    {"messages_per_ip", RL_MAIL, RL_IP, offsetof(struct config, rl_msgs_per_ip), "messages"},
    {"messages_per_net", RL_MAIL, RL_NET, offsetof(struct config, rl_msgs_per_net), "messages"},
    {"messages_per_sender", RL_MAIL, RL_SENDER, offsetof(struct config, rl_msgs_per_sender),
     "messages"},
    {"recipients_per_ip", RL_RCPT, RL_IP, offsetof(struct config, rl_rcpts_per_ip), "recipients"},
    {"recipients_per_domain", RL_RCPT, RL_DOMAIN, offsetof(struct config, rl_rcpts_per_domain),
     "recipients"},
};

/* check - count one event against every rule for it; true (reply queued,
 * or for RL_CONNECT written into reply) when a limit is exceeded.  arg is
 * the sender (MAIL) or recipient domain (RCPT). */
static bool check(struct smtp_session *s, enum rl_event ev, const char *arg, char *reply,
                  size_t replylen)
{
	const struct config *cfg = s->cfg;
	struct smtp_rl_store *st = s->srv->rl;
	if (!st || util_cidr_list_match(&cfg->rl_exempt, &s->client))
		return false;
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rl_rule *r = &rules[i];
		int max = *(const int *)((const char *)cfg + r->limit_off);
		if (r->event != ev || max <= 0)
			continue;
		char subj[300], key[400];
		switch (r->subject) {
		case RL_IP:
			snprintf(subj, sizeof(subj), "[%s]", s->client_str);
			break;
		case RL_NET:
			smtp_rl_net_str(s, subj, sizeof(subj));
			break;
		case RL_SENDER:
			snprintf(subj, sizeof(subj), "<%s>", arg ? arg : "");
			break;
		case RL_DOMAIN:
			snprintf(subj, sizeof(subj), "%s", arg ? arg : "");
			for (char *p = subj; *p; p++)
				*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
			break;
		}
		snprintf(key, sizeof(key), "%s %s", r->name, subj);
		/* one counter per address whatever its letter case (domains
		 * are case-insensitive, local parts in practice): <Spam@X>,
		 * <spam@x>, <SPAM@X> are one sender (red team finding) */
		for (char *p = key; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		int64_t left = 0;
		int64_t n = st->ops->hit(st, key, cfg->rl_window, &left);
		if (n < 0) {
			util_log_warn("s=%016llx ratelimit store=%s failed limit=%s action=allow",
			              (unsigned long long)s->id, st->ops->name, r->name);
			util_metrics_inc("mxgate_ratelimit_store_errors_total", st->ops->name);
			continue;
		}
		if (n <= max)
			continue;
		util_log_info("s=%016llx ratelimit client=%s limit=%s subject=%s count=%lld max=%d "
		              "retry=%llds",
		              (unsigned long long)s->id, s->client_str, r->name, subj, (long long)n,
		              max, (long long)left);
		util_metrics_inc("mxgate_ratelimited_total", r->name);
		if (ev == RL_CONNECT)
			snprintf(reply, replylen,
			         "421 4.7.0 %s Too many %s from %s, try again in %lld seconds",
			         cfg->hostname, r->what, subj, (long long)left);
		else
			smtp_session_reply(
			    s, "451 4.7.1 Too many %s %s %s, try again in %lld seconds", r->what,
			    r->subject == RL_DOMAIN ? "for" : "from", subj, (long long)left);
		return true;
	}
	return false;
}

/* smtp_rl_connect - a new client: true with the 421 in reply when over a
 * connection rate. */
bool smtp_rl_connect(struct smtp_session *s, char *reply, size_t replylen)
{
	return check(s, RL_CONNECT, NULL, reply, replylen);
}

/* smtp_rl_mail - MAIL FROM:<sender>: true (451 queued) when over a rate. */
bool smtp_rl_mail(struct smtp_session *s, const char *sender)
{
	char dummy[8];
	return check(s, RL_MAIL, sender, dummy, sizeof(dummy));
}

/* smtp_rl_rcpt - RCPT TO:<addr>: true (451 queued) when over a rate. */
bool smtp_rl_rcpt(struct smtp_session *s, const char *addr)
{
	char dummy[8];
	const char *dom = util_domain_of(addr);
	return check(s, RL_RCPT, dom ? dom : "", dummy, sizeof(dummy));
}
