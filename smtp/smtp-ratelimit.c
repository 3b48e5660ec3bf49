/*
 * smtp-ratelimit.c - rate limits per client address, client network (/24,
 * /64), envelope sender and recipient domain (issue 17): connections per
 * window at connect (421 4.7.0), messages per window (451 4.7.1: MAIL FROM
 * per client and network; per sender and per recipient domain a message
 * accepted, see below), recipients per window (451 4.7.1, per client,
 * network, sender and domain).  The limits
 * are one table (`rules`): what is counted, the key, the config field, the
 * reply.  A RCPT is counted once the relay control, the recipient lists and
 * max_recipients let it through, before the downstream verification: a
 * repeated recipient counts again, an unknown user refused from a list
 * does not.
 *
 * messages_per_sender and messages_per_domain count accepted messages (the
 * 250 after DATA, smtp_rl_accepted), not transactions (red team finding:
 * with SPF pass making a sender one subject across clients, another tenant
 * of the sender's shared platform drained its budget with MAIL, RCPT, RSET
 * and no message at all).  Their check is at RCPT - the sender's first, the
 * first of each domain - against the count so far, without adding to it:
 * over when this message would make it more than the limit.  So a limit
 * hit by one message is answered at the next message's RCPT (451), and a
 * transaction that delivers nothing costs nothing.  Concurrent sessions
 * may each pass the check before either message is counted: the limit is
 * exceeded by at most the messages in flight.
 *
 * An event is counted in stages (red team finding): the client's own
 * limits (address, network), then the sender's, then the recipient
 * domain's; a stage is counted only when the ones before it passed, so a
 * client over its own limit cannot drain the budgets every sender shares.
 * The sender is one subject across clients only when SPF passed for it
 * (RCPT waits for SPF when a per-sender limit is set); a sender SPF did
 * not pass for, like <>, counts per client network - a forged MAIL FROM
 * cannot use up the real sender's budget.
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

/* mem_hit - INCRBY + EXPIRE on first: the count in key's current window
 * (by 0: GET).  A full table evicts (util-ttlmap.c), it never stops
 * counting. */
static int64_t mem_hit(struct smtp_rl_store *st, const char *key, int64_t window, int64_t by,
                       int64_t now, int64_t *left)
{
	struct rl_mem *m = (struct rl_mem *)st;
	if (by <= 0) { /* read only: a key not counted yet is not created */
		int64_t *c = util_ttlmap_get(m->map, key, strlen(key), now);
		*left = c ? *util_ttlmap_expires(c) - now : 0;
		return c ? *c : 0;
	}
	bool fresh;
	int64_t *count = util_ttlmap_put(m->map, key, strlen(key), now, &fresh);
	int64_t *expires = util_ttlmap_expires(count);
	if (fresh)
		*expires = now + window;
	*count += by;
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
/* Subjects in the order their counts are asked: the client's own (address,
 * network), then the sender's, then the recipient domain's, which every
 * client shares.  A stage is counted only when the ones before it passed,
 * so an event a narrower limit refuses never uses up a shared budget (red
 * team finding: an abuser over recipients_per_ip drained
 * messages_per_domain for everyone). */
enum rl_subject { RL_IP, RL_NET, RL_SENDER, RL_DOMAIN };
#define RL_STAGE(subj) ((int)((subj) == RL_NET ? RL_IP : (subj)))

static const struct rl_rule {
	const char *name; /* log and metric label */
	enum rl_event event;
	enum rl_subject subject;
	size_t limit_off; /* int field of struct config */
	const char *what; /* "connections", "messages", "recipients" */
	bool per_message; /* RCPT: checked once per transaction (per domain, per sender), only
	                     read there and counted when the message is accepted */
} rules[] = {
    {"connections_per_ip", RL_CONNECT, RL_IP, offsetof(struct config, rl_conn_per_ip),
     "connections", false},
    {"connections_per_net", RL_CONNECT, RL_NET, offsetof(struct config, rl_conn_per_net),
     "connections", false},
    {"messages_per_ip", RL_MAIL, RL_IP, offsetof(struct config, rl_msgs_per_ip), "messages",
     false},
    {"messages_per_net", RL_MAIL, RL_NET, offsetof(struct config, rl_msgs_per_net), "messages",
     false},
    /* checked at RCPT, not MAIL: only then is the sender's SPF result known;
     * counted at the 250 after DATA (smtp_rl_accepted) */
    {"messages_per_sender", RL_RCPT, RL_SENDER, offsetof(struct config, rl_msgs_per_sender),
     "messages", true},
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

#define NRULES (sizeof(rules) / sizeof(rules[0]))

/* One rule's count for one event. */
struct rl_hit {
	const struct rl_rule *r;
	char subj[320];  /* "<" 256-byte sender ">:" network: never cut */
	int64_t n, left; /* n < 0: the store failed (fail open) */
	struct rl_batch *b;
};

/* The counts of one event, stage by stage.  hits are in stage order;
 * [first, end) is the stage being counted.  With the shared store
 * ([state] redis) the batch lives until the answers are in. */
struct rl_batch {
	struct smtp_server *srv;
	uint64_t sid;
	enum rl_event ev;
	size_t nhits, first, end, pending;
	bool cancelled;
	struct rl_hit hits[NRULES];
};

/* subject - what rule r counts for this event: "[ip]", "net/24", "<sender>",
 * "domain" (sender and domain: the event's, NULL when it has none).  The
 * sender is a shared subject only when SPF passed for it (sender_auth):
 * anyone can write any MAIL FROM, and a forger would use up the real
 * sender's budget (red team finding); an unauthenticated sender - and the
 * null sender, which is nobody's - counts per client network,
 * "<a@b>:192.0.2.0/24". */
static void subject(struct smtp_session *s, const struct rl_rule *r, const char *sender,
                    bool sender_auth, const char *domain, char *subj, size_t len)
{
	switch (r->subject) {
	case RL_IP:
		snprintf(subj, len, "[%s]", s->client_str);
		break;
	case RL_NET:
		smtp_rl_net_str(s, subj, len);
		break;
	case RL_SENDER: {
		if (sender == NULL)
			sender = "";
		if (sender_auth && sender[0] != '\0') {
			snprintf(subj, len, "<%s>", sender);
			break;
		}
		char net[64];
		smtp_rl_net_str(s, net, sizeof(net));
		snprintf(subj, len, "<%s>:%s", sender, net);
		break;
	}
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

/* judge - the counts of one stage against their limits, in table order:
 * SMTP_RL_OVER with the reply in s->rl_line, or SMTP_RL_PASS.  A failed
 * count lets the event through (logged, counted). */
static enum smtp_rl_ans judge(struct smtp_session *s, enum rl_event ev, const struct rl_hit *h,
                              size_t n, const char *store)
{
	const struct config *cfg = s->cfg;
	for (size_t i = 0; i < n; i++) {
		const struct rl_rule *r = h[i].r;
		int max = *(const int *)((const char *)cfg + r->limit_off);
		/* a per-message rule read the count so far: this message is one more */
		int64_t cnt = h[i].n + (r->per_message ? 1 : 0);
		if (h[i].n < 0) {
			util_log_warn("s=%016llx ratelimit store=%s failed limit=%s action=allow",
			              (unsigned long long)s->id, store, r->name);
			util_metrics_inc("mxgate_ratelimit_store_errors_total", store);
			continue;
		}
		if (cnt <= max)
			continue;
		util_log_info("s=%016llx ratelimit client=%s limit=%s subject=%s count=%lld max=%d "
		              "retry=%llds",
		              (unsigned long long)s->id, s->client_str, r->name, h[i].subj,
		              (long long)cnt, max, (long long)h[i].left);
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

/* stage_next - the hits of the next stage into [first, end); false when
 * every stage is done. */
static bool stage_next(struct rl_batch *b)
{
	b->first = b->end;
	if (b->first >= b->nhits)
		return false;
	int stage = RL_STAGE(b->hits[b->first].r->subject);
	for (b->end = b->first + 1;
	     b->end < b->nhits && RL_STAGE(b->hits[b->end].r->subject) == stage; b->end++)
		;
	return true;
}

/* stage_passed - the current stage is within its limits: a per-message
 * rule of the sender is now checked for this transaction (the domain's is
 * marked by smtp_rl_rcpt once the whole RCPT passed). */
static void stage_passed(struct smtp_session *s, const struct rl_batch *b)
{
	for (size_t i = b->first; i < b->end; i++)
		if (b->hits[i].r->per_message && b->hits[i].r->subject == RL_SENDER && s->tx)
			s->tx->rl_sender_counted = true;
}

static void hit_cb(void *arg, int64_t count, int64_t left);

/* send_stage - ask the shared store for the current stage's counts: true
 * when answers are awaited (hit_cb), false when every one failed at once
 * (then n = -1: fail open). */
static bool send_stage(struct smtp_session *s, struct rl_batch *b)
{
	b->pending = 1; /* held while the commands are sent */
	for (size_t i = b->first; i < b->end; i++) {
		struct rl_hit *h = &b->hits[i];
		char key[400];
		rl_key(key, sizeof(key), "rl:", h);
		h->n = -1;
		b->pending++;
		if (smtp_redis_hit(s->srv->redis, key, s->cfg->rl_window, h->r->per_message ? 0 : 1,
		                   hit_cb, h) < 0)
			b->pending--; /* down: failed at once */
	}
	return --b->pending > 0;
}

/* run - count the stages of b in turn until one is over or all passed.
 * SMTP_RL_PENDING when the shared store was asked (hit_cb goes on; b is
 * kept), else the answer (b freed). */
static enum smtp_rl_ans run(struct smtp_session *s, struct rl_batch *b)
{
	struct smtp_server *srv = s->srv;
	const char *store = srv->redis ? "redis" : srv->rl->ops->name;
	enum smtp_rl_ans a = SMTP_RL_PASS;
	while (stage_next(b)) {
		if (srv->redis) {
			if (send_stage(s, b))
				return SMTP_RL_PENDING;
		} else {
			int64_t now = (int64_t)time(NULL);
			for (size_t i = b->first; i < b->end; i++) {
				struct rl_hit *h = &b->hits[i];
				char key[400];
				rl_key(key, sizeof(key), "", h);
				h->n = srv->rl->ops->hit(srv->rl, key, s->cfg->rl_window,
				                         h->r->per_message ? 0 : 1, now, &h->left);
			}
		}
		a = judge(s, b->ev, b->hits + b->first, b->end - b->first, store);
		if (a == SMTP_RL_OVER)
			break;
		stage_passed(s, b);
	}
	free(b);
	return a;
}

/* batch_done - every count of a stage asked of the shared store is in (or
 * failed): judge it; over, or the last stage passed: release the banner or
 * resume the suspended command; else ask the next stage. */
static void batch_done(struct rl_batch *b)
{
	struct smtp_session *s = b->cancelled ? NULL : smtp_server_find(b->srv, b->sid);
	if (!s || s->rl_ans != SMTP_RL_PENDING || s->state == SMTP_STATE_CLOSING) {
		free(b);
		return;
	}
	enum rl_event ev = b->ev;
	enum smtp_rl_ans a = judge(s, ev, b->hits + b->first, b->end - b->first, "redis");
	if (a == SMTP_RL_OVER) {
		free(b);
	} else {
		stage_passed(s, b);
		a = run(s, b);
		if (a == SMTP_RL_PENDING)
			return; /* the next stage was asked */
	}
	s->rl_ans = a;
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

/* counted - rule r, once per transaction, has checked this one already
 * (the sender's message, or the message to this domain). */
static bool counted(const struct smtp_session *s, const struct rl_rule *r, const char *domain)
{
	if (!r->per_message || !s->tx)
		return false;
	if (r->subject == RL_SENDER)
		return s->tx->rl_sender_counted;
	return util_strlist_has_case(&s->tx->rl_domains, domain);
}

/* check - count one event against every rule for it, stage by stage (see
 * enum rl_subject): sender (RCPT, sender_auth: SPF passed for it) and
 * recipient domain (RCPT) are the event's.  The answer goes into
 * s->rl_ans: PASS, OVER (reply in s->rl_line), or PENDING when the shared
 * store was asked (batch_done finishes).  A command run again after it
 * waited (pending line) reuses the answer: an event is counted once. */
static enum smtp_rl_ans check(struct smtp_session *s, enum rl_event ev, const char *sender,
                              bool sender_auth, const char *domain)
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
	for (int stage = RL_IP; stage <= RL_DOMAIN; stage++) {
		for (size_t i = 0; i < NRULES; i++) {
			const struct rl_rule *r = &rules[i];
			int max = *(const int *)((const char *)cfg + r->limit_off);
			if (r->event != ev || max <= 0 || RL_STAGE(r->subject) != stage ||
			    counted(s, r, domain))
				continue;
			struct rl_hit *h = &b->hits[b->nhits++];
			h->r = r;
			h->b = b;
			subject(s, r, sender, sender_auth, domain, h->subj, sizeof(h->subj));
		}
	}
	return s->rl_ans = run(s, b);
}

/* smtp_rl_wants_spf - RCPT must wait for the SPF result before it is
 * counted: a per-sender limit is set for this (non-exempt) client and the
 * sender is not <>. */
bool smtp_rl_wants_spf(const struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	if (!s->tx || !s->tx->mail.addr[0] || (!s->srv->rl && !s->srv->redis))
		return false;
	if (cfg->rl_msgs_per_sender <= 0 && cfg->rl_rcpts_per_sender <= 0)
		return false;
	return !util_cidr_list_match(&cfg->rl_exempt, &s->client);
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
	if (check(s, RL_CONNECT, NULL, false, NULL) != SMTP_RL_OVER)
		return false;
	snprintf(reply, replylen, "%s", s->rl_line);
	return true;
}

/* smtp_rl_mail - MAIL FROM:<sender>: true when answered (451 queued) or
 * suspended (SMTP_WAIT_STATE, line kept). */
bool smtp_rl_mail(struct smtp_session *s, const char *sender, const char *line)
{
	enum smtp_rl_ans a = check(s, RL_MAIL, sender, false, NULL);
	if (a == SMTP_RL_PENDING)
		suspend(s, line);
	else if (a == SMTP_RL_OVER)
		smtp_session_reply(s, "%s", s->rl_line);
	return a != SMTP_RL_PASS;
}

/* smtp_rl_rcpt - RCPT TO:<addr>: as smtp_rl_mail.  A recipient let
 * through marks its domain as checked for this message (messages_per_domain
 * checks the next RCPT of the domain only if this one was refused). */
bool smtp_rl_rcpt(struct smtp_session *s, const char *addr, const char *line)
{
	const char *dom = util_domain_of(addr);
	if (!dom)
		dom = "";
	bool auth = s->tx && s->tx->pm && policy_msg_spf_pass(s->tx->pm);
	enum smtp_rl_ans a = check(s, RL_RCPT, s->tx ? s->tx->mail.addr : NULL, auth, dom);
	if (a == SMTP_RL_PENDING)
		suspend(s, line);
	else if (a == SMTP_RL_OVER)
		smtp_session_reply(s, "%s", s->rl_line);
	else if (s->tx && s->cfg->rl_msgs_per_domain > 0 &&
	         !util_strlist_has_case(&s->tx->rl_domains, dom))
		util_strlist_add(&s->tx->rl_domains, dom);
	return a != SMTP_RL_PASS;
}

/* accepted_cb - the answer to a count made at accept time: nothing waits
 * for it (a failed count was logged by smtp-redis.c). */
static void accepted_cb(void *arg, int64_t count, int64_t left)
{
	(void)arg;
	(void)count;
	(void)left;
}

/* count_accepted - add one to rule r's counter for subject. */
static void count_accepted(struct smtp_session *s, const struct rl_rule *r, const char *sender,
                           bool sender_auth, const char *domain)
{
	struct rl_hit h = {.r = r};
	char key[400];
	subject(s, r, sender, sender_auth, domain, h.subj, sizeof(h.subj));
	if (s->srv->redis) {
		rl_key(key, sizeof(key), "rl:", &h);
		(void)smtp_redis_hit(s->srv->redis, key, s->cfg->rl_window, 1, accepted_cb, NULL);
		return;
	}
	rl_key(key, sizeof(key), "", &h);
	int64_t left;
	if (s->srv->rl->ops->hit(s->srv->rl, key, s->cfg->rl_window, 1, (int64_t)time(NULL),
	                         &left) < 0) {
		util_log_warn("s=%016llx ratelimit store=%s failed limit=%s action=allow",
		              (unsigned long long)s->id, s->srv->rl->ops->name, r->name);
		util_metrics_inc("mxgate_ratelimit_store_errors_total", s->srv->rl->ops->name);
	}
}

/* smtp_rl_accepted - the message was accepted (250 after DATA): one more
 * for its sender (messages_per_sender: the same subject as at RCPT) and for
 * each recipient domain it has (messages_per_domain, once each). */
void smtp_rl_accepted(struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	struct smtp_tx *tx = s->tx;
	if (!tx || (!s->srv->rl && !s->srv->redis) ||
	    util_cidr_list_match(&cfg->rl_exempt, &s->client))
		return;
	bool auth = tx->pm && policy_msg_spf_pass(tx->pm);
	for (size_t i = 0; i < NRULES; i++) {
		const struct rl_rule *r = &rules[i];
		int max = *(const int *)((const char *)cfg + r->limit_off);
		if (!r->per_message || max <= 0)
			continue;
		if (r->subject == RL_SENDER) {
			count_accepted(s, r, tx->mail.addr, auth, NULL);
			continue;
		}
		struct util_strlist seen = {0};
		for (size_t k = 0; k < tx->rcpts.n; k++) {
			const char *dom = util_domain_of(tx->rcpts.v[k]);
			if (!dom)
				dom = "";
			if (util_strlist_has_case(&seen, dom))
				continue;
			util_strlist_add(&seen, dom);
			count_accepted(s, r, NULL, false, dom);
		}
		util_strlist_free(&seen);
	}
}
