/*
 * smtp-ratelimit.c - rate limits per client address, client network (/24,
 * /64), envelope sender and recipient domain (issue 17): connections per
 * window at connect (421 4.7.0), messages per window (451 4.7.1: MAIL FROM
 * per client, network and sender; per recipient domain the first RCPT of
 * that domain in a transaction), recipients per window (451 4.7.1, per
 * client, network, sender and domain).  The limits are one table (`rules`):
 * what is counted, the key, the config field, the reply.  A RCPT is
 * counted once the relay control, the recipient lists and max_recipients
 * let it through, before the downstream verification: a repeated
 * recipient counts again, an unknown user refused from a list does not.
 * The concurrency caps per address ([limits] max_connections_per_ip) and per network
 * ([ratelimit] max_connections_per_net) are the counted-slot part of the
 * same policy and live in smtp-server.c's slot table, keyed by
 * smtp_rl_net_key for networks.
 *
 * Counters sit behind a small store interface (struct smtp_rl_store_ops):
 * hit(key, window) adds one and returns the count since the key's window
 * began, plus the seconds left in it - INCR and, on the first, EXPIRE in
 * Redis terms - so a shared Redis/Valkey store for a fleet is one more ops
 * table.  The in-process store here is a bounded map of keys with their
 * count and expiry (util/util-ttlmap.c; wall clock, so a window means the
 * same on every node); at most [ratelimit] max_keys keys, and a full table
 * evicts (expired keys first, else the least recently used of a random
 * sample) instead of letting events through, so filling it with many
 * networks or senders cannot switch the limits off.  A store that cannot
 * count (Redis) answers -1 and the event is let through (fail open),
 * logged and counted.
 *
 * With [state] redis the counts go to Redis/Valkey instead (smtp-redis.c),
 * shared by every gateway of a fleet: the event is suspended - the banner
 * held (SMTP_HOLD_STATE), the MAIL/RCPT line kept and run again - until the
 * answers are in or their deadline passed (then fail open), like RCPT waits
 * for SPF.  The answer is kept in s->rl_ans so a command run again after
 * another wait (SPF, verification) is counted once.
 *
 * Ownership: the server owns the store (smtp_rl_store_free).  Keys are
 * copied.  Diagnostics: "s=ID ratelimit client=IP limit=NAME count=N max=M
 * retry=S"; counter mxgate_ratelimited_total{limit}.
 */
#include <arpa/inet.h>
#include <string.h>
#include <time.h>

#include "smtp-server-internal.h"
#include "smtp-redis.h"

/* ------------------------------------------------------------ in-process store */

struct rl_mem {
	struct smtp_rl_store base;
	struct util_ttlmap *map; /* key -> count, expiry = end of the key's window */
};

/* mem_hit - INCR + EXPIRE on first: the count in key's current window.  A
 * full table evicts (util-ttlmap.c), it never stops counting. */
static int64_t mem_hit(struct smtp_rl_store *st, const char *key, int64_t window, int64_t now,
                       int64_t *left)
{
	struct rl_mem *m = (struct rl_mem *)st;
	bool fresh;
	int64_t *count = util_ttlmap_put(m->map, key, strlen(key), now, &fresh);
	int64_t *expires = util_ttlmap_expires(count);
	if (fresh)
		*expires = now + window;
	(*count)++;
	*left = *expires - now;
	return *count;
}

/* mem_free - every key. */
static void mem_free(struct smtp_rl_store *st)
{
	struct rl_mem *m = (struct rl_mem *)st;
	util_ttlmap_free(m->map);
	free(m);
}

static const struct smtp_rl_store_ops mem_ops = {"memory", mem_hit, mem_free};

/* smtp_rl_memory_new - the one-node store, at most max_keys keys. */
struct smtp_rl_store *smtp_rl_memory_new(size_t max_keys)
{
	struct rl_mem *m = util_xcalloc(1, sizeof(*m));
	m->base.ops = &mem_ops;
	m->map = util_ttlmap_new("ratelimit", max_keys, sizeof(int64_t));
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

/* smtp_rl_net_format - "192.0.2.0/24" / "2001:db8::/64": the network of a. */
void smtp_rl_net_format(const struct config *cfg, const struct util_addr *a, char *out,
                        size_t len)
{
	uint8_t key[17];
	char host[INET6_ADDRSTRLEN];
	smtp_rl_net_key(cfg, a, key);
	bool v4 = (key[0] & 0x7f) == 4;
	inet_ntop(v4 ? AF_INET : AF_INET6, key + 1, host, sizeof(host));
	snprintf(out, len, "%s/%d", host, v4 ? cfg->rl_net_prefix4 : cfg->rl_net_prefix6);
}

/* smtp_rl_net_str - the network of the session's client. */
void smtp_rl_net_str(const struct smtp_session *s, char *out, size_t len)
{
	smtp_rl_net_format(s->cfg, &s->client, out, len);
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
	bool per_message; /* RCPT: counted at the first RCPT of its domain in a transaction */
} rules[] = {
    {"connections_per_ip", RL_CONNECT, RL_IP, offsetof(struct config, rl_conn_per_ip),
     "connections", false},
    {"connections_per_net", RL_CONNECT, RL_NET, offsetof(struct config, rl_conn_per_net),
     "connections", false},
    {"messages_per_ip", RL_MAIL, RL_IP, offsetof(struct config, rl_msgs_per_ip), "messages",
     false},
    {"messages_per_net", RL_MAIL, RL_NET, offsetof(struct config, rl_msgs_per_net), "messages",
     false},
    {"messages_per_sender", RL_MAIL, RL_SENDER, offsetof(struct config, rl_msgs_per_sender),
     "messages", false},
    {"messages_per_domain", RL_RCPT, RL_DOMAIN, offsetof(struct config, rl_msgs_per_domain),
     "messages", true},
    {"recipients_per_ip", RL_RCPT, RL_IP, offsetof(struct config, rl_rcpts_per_ip),
     "recipients", false},
    {"recipients_per_net", RL_RCPT, RL_NET, offsetof(struct config, rl_rcpts_per_net),
     "recipients", false},
    {"recipients_per_sender", RL_RCPT, RL_SENDER, offsetof(struct config, rl_rcpts_per_sender),
     "recipients", false},
    {"recipients_per_domain", RL_RCPT, RL_DOMAIN, offsetof(struct config, rl_rcpts_per_domain),
     "recipients", false},
};

/* One rule's count for one event. */
struct rl_hit {
	const struct rl_rule *r;
	char subj[300];
	int64_t n, left;           /* n < 0: the store failed (fail open) */
	struct rl_batch *b;
};

/* The counts of one event asked of the shared store ([state] redis). */
struct rl_batch {
	struct smtp_server *srv;
	uint64_t sid;
	enum rl_event ev;
	size_t nhits, pending;
	bool cancelled;
	struct rl_hit hits[sizeof(rules) / sizeof(rules[0])];
};

/* subject - what rule r counts for this event: "[ip]", "net/24", "<sender>",
 * "domain" (sender and domain: the event's, NULL when it has none). */
static void subject(struct smtp_session *s, const struct rl_rule *r, const char *sender,
                    const char *domain, char *subj, size_t len)
{
	switch (r->subject) {
	case RL_IP:
		snprintf(subj, len, "[%s]", s->client_str);
		break;
	case RL_NET:
		smtp_rl_net_str(s, subj, len);
		break;
	case RL_SENDER:
		if (sender != NULL && sender[0] != '\0') {
			snprintf(subj, len, "<%s>", sender);
		} else {
			/* The null sender is nobody's: one bucket for all would
			 * let any client use it up and hold every bounce to our
			 * users; it counts per client network instead. */
			char net[64];
			smtp_rl_net_str(s, net, sizeof(net));
			snprintf(subj, len, "<>:%s", net);
		}
		break;
	case RL_DOMAIN:
		snprintf(subj, len, "%s", domain ? domain : "");
		for (char *p = subj; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		break;
	}
}

/* rl_key - the counter's key: rule name and subject, lower-cased, so that
 * <Spam@X>, <spam@x> and <SPAM@X> are one sender (domains are
 * case-insensitive, local parts in practice; red team finding). */
static void rl_key(char *key, size_t len, const char *prefix, const struct rl_hit *h)
{
	snprintf(key, len, "%s%s %s", prefix, h->r->name, h->subj);
	for (char *p = key; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
}

/* judge - the counts of one event against their limits, in table order:
 * SMTP_RL_OVER with the reply in s->rl_line, or SMTP_RL_PASS.  A failed
 * count lets the event through (logged, counted). */
static enum smtp_rl_ans judge(struct smtp_session *s, enum rl_event ev, const struct rl_hit *h,
                              size_t n, const char *store)
{
	const struct config *cfg = s->cfg;
	for (size_t i = 0; i < n; i++) {
		const struct rl_rule *r = h[i].r;
		int max = *(const int *)((const char *)cfg + r->limit_off);
		if (h[i].n < 0) {
			util_log_warn("s=%016llx ratelimit store=%s failed limit=%s action=allow",
			              (unsigned long long)s->id, store, r->name);
			util_metrics_inc("mxgate_ratelimit_store_errors_total", store);
			continue;
		}
		if (h[i].n <= max)
			continue;
		util_log_info("s=%016llx ratelimit client=%s limit=%s subject=%s count=%lld max=%d "
		              "retry=%llds",
		              (unsigned long long)s->id, s->client_str, r->name, h[i].subj,
		              (long long)h[i].n, max, (long long)h[i].left);
		util_metrics_inc("mxgate_ratelimited_total", r->name);
		if (ev == RL_CONNECT)
			snprintf(s->rl_line, sizeof(s->rl_line),
			         "421 4.7.0 %s Too many %s from %s, try again in %lld seconds",
			         cfg->hostname, r->what, h[i].subj, (long long)h[i].left);
		else
			snprintf(s->rl_line, sizeof(s->rl_line),
			         "451 4.7.1 Too many %s %s %s, try again in %lld seconds", r->what,
			         r->subject == RL_DOMAIN ? "for" : "from", h[i].subj,
			         (long long)h[i].left);
		return SMTP_RL_OVER;
	}
	return SMTP_RL_PASS;
}

/* batch_done - every count of a shared-store batch is in (or failed):
 * judge, then release the banner or resume the suspended command. */
static void batch_done(struct rl_batch *b)
{
	struct smtp_session *s = b->cancelled ? NULL : smtp_server_find(b->srv, b->sid);
	if (!s || s->rl_ans != SMTP_RL_PENDING || s->state == SMTP_STATE_CLOSING) {
		free(b);
		return;
	}
	s->rl_ans = judge(s, b->ev, b->hits, b->nhits, "redis");
	enum rl_event ev = b->ev;
	free(b);
	if (ev == RL_CONNECT) {
		smtp_session_greet_release(s, SMTP_HOLD_STATE);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	smtp_session_resume(s); /* the MAIL/RCPT line runs again with the answer */
}

/* hit_cb - one count from the shared store. */
static void hit_cb(void *arg, int64_t count, int64_t left)
{
	struct rl_hit *h = arg;
	struct rl_batch *b = h->b;
	if (count == SMTP_REDIS_CANCELLED)
		b->cancelled = true;
	h->n = count < 0 ? -1 : count;
	h->left = left;
	if (--b->pending == 0)
		batch_done(b);
}

/* check - count one event against every rule for it: sender (MAIL, RCPT)
 * and recipient domain (RCPT) are the event's.  The answer goes into
 * s->rl_ans: PASS, OVER (reply in s->rl_line), or PENDING when the shared
 * store was asked (batch_done finishes).  A command run again after it waited (pending
 * line) reuses the answer: an event is counted once. */
static enum smtp_rl_ans check(struct smtp_session *s, enum rl_event ev, const char *sender,
                              const char *domain)
{
	const struct config *cfg = s->cfg;
	struct smtp_server *srv = s->srv;
	if (s->rl_ans == SMTP_RL_PASS || s->rl_ans == SMTP_RL_OVER)
		return s->rl_ans;
	if ((!srv->rl && !srv->redis) || util_cidr_list_match(&cfg->rl_exempt, &s->client))
		return s->rl_ans = SMTP_RL_PASS;
	struct rl_batch *b = util_xcalloc(1, sizeof(*b));
	b->srv = srv;
	b->sid = s->id;
	b->ev = ev;
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rl_rule *r = &rules[i];
		int max = *(const int *)((const char *)cfg + r->limit_off);
		if (r->event != ev || max <= 0)
			continue;
		if (r->per_message && s->tx && util_strlist_has_case(&s->tx->rl_domains, domain))
			continue; /* this message was counted for the domain */
		struct rl_hit *h = &b->hits[b->nhits++];
		h->r = r;
		h->b = b;
		subject(s, r, sender, domain, h->subj, sizeof(h->subj));
	}
	if (srv->redis) {
		b->pending = 1; /* held while the commands are sent */
		for (size_t i = 0; i < b->nhits; i++) {
			struct rl_hit *h = &b->hits[i];
			char key[400];
			rl_key(key, sizeof(key), "rl:", h);
			h->n = -1;
			b->pending++;
			if (smtp_redis_hit(srv->redis, key, cfg->rl_window, hit_cb, h) < 0)
				b->pending--; /* down: failed at once */
		}
		if (--b->pending > 0)
			return s->rl_ans = SMTP_RL_PENDING;
		enum smtp_rl_ans a = judge(s, ev, b->hits, b->nhits, "redis");
		free(b);
		return s->rl_ans = a;
	}
	int64_t now = (int64_t)time(NULL);
	for (size_t i = 0; i < b->nhits; i++) {
		struct rl_hit *h = &b->hits[i];
		char key[400];
		rl_key(key, sizeof(key), "", h);
		h->n = srv->rl->ops->hit(srv->rl, key, cfg->rl_window, now, &h->left);
	}
	enum smtp_rl_ans a = judge(s, ev, b->hits, b->nhits, srv->rl->ops->name);
	free(b);
	return s->rl_ans = a;
}

/* suspend - the command waits for the shared store; its line runs again. */
static void suspend(struct smtp_session *s, const char *line)
{
	free(s->pending_line);
	s->pending_line = util_xstrdup(line);
	s->wait = SMTP_WAIT_STATE;
}

/* smtp_rl_connect - a new client: true with the 421 in reply when over a
 * connection rate; false with s->rl_ans == SMTP_RL_PENDING when the banner
 * must wait for the shared store (SMTP_HOLD_STATE). */
bool smtp_rl_connect(struct smtp_session *s, char *reply, size_t replylen)
{
	if (check(s, RL_CONNECT, NULL, NULL) != SMTP_RL_OVER)
		return false;
	snprintf(reply, replylen, "%s", s->rl_line);
	return true;
}

/* smtp_rl_mail - MAIL FROM:<sender>: true when answered (451 queued) or
 * suspended (SMTP_WAIT_STATE, line kept). */
bool smtp_rl_mail(struct smtp_session *s, const char *sender, const char *line)
{
	enum smtp_rl_ans a = check(s, RL_MAIL, sender, NULL);
	if (a == SMTP_RL_PENDING)
		suspend(s, line);
	else if (a == SMTP_RL_OVER)
		smtp_session_reply(s, "%s", s->rl_line);
	return a != SMTP_RL_PASS;
}

/* smtp_rl_rcpt - RCPT TO:<addr>: as smtp_rl_mail.  A recipient let
 * through marks its domain as counted for this message (messages_per_domain
 * counts the next RCPT of the domain only if this one was refused). */
bool smtp_rl_rcpt(struct smtp_session *s, const char *addr, const char *line)
{
	const char *dom = util_domain_of(addr);
	if (!dom)
		dom = "";
	enum smtp_rl_ans a = check(s, RL_RCPT, s->tx ? s->tx->mail.addr : NULL, dom);
	if (a == SMTP_RL_PENDING)
		suspend(s, line);
	else if (a == SMTP_RL_OVER)
		smtp_session_reply(s, "%s", s->rl_line);
	else if (s->tx && s->cfg->rl_msgs_per_domain > 0 &&
	         !util_strlist_has_case(&s->tx->rl_domains, dom))
		util_strlist_add(&s->tx->rl_domains, dom);
	return a != SMTP_RL_PASS;
}
