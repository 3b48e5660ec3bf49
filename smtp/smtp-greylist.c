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
 * With [state] redis the triplets and allowlisted networks live in Redis or
 * Valkey, shared by a fleet: the same decision is one Lua script over the
 * network key and every triplet (atomic, times from the server's clock, so
 * nodes need not agree on the time); the end of DATA waits for it
 * (SMTP_WAIT_GREYLIST) and, when Redis is down or late, the message passes
 * (fail open: result=failed, logged and counted).
 *
 * Ownership: the server owns the state (smtp_greylist_free).  Times are
 * wall-clock seconds, passed in to the in-process decision
 * (smtp_greylist_decide), so unit tests drive the clock.  At most
 * [greylist] max_entries keys (util-ttlmap.c): a full table evicts an
 * entry (expired first, else the least recently used of a random sample)
 * and never lets a triplet through for lack of room; an evicted triplet
 * only means that sender is greylisted again.
 *
 * Diagnostics: "s=ID greylist client=IP from=<a> rcpt=<b> result=new|early|
 * retried|allowlisted|skipped|failed reason=..."; counter mxgate_greylist_total{result}.
 */
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "smtp-redis.h"
#include "smtp-server-internal.h"

/* A triplet's or an allowlisted network's state; the expiry is the map's. */
struct grey_ent {
	int64_t first; /* first attempt */
	bool passed;   /* retried correctly */
};

struct smtp_greylist {
	struct util_ttlmap *map;
};

/* smtp_greylist_new - empty state, at most max entries. */
struct smtp_greylist *smtp_greylist_new(size_t max)
{
	struct smtp_greylist *g = util_xcalloc(1, sizeof(*g));
	g->map = util_ttlmap_new("greylist", max, sizeof(struct grey_ent));
	return g;
}

/* smtp_greylist_free - all of it; NULL is a no-op. */
void smtp_greylist_free(struct smtp_greylist *g)
{
	if (!g)
		return;
	util_ttlmap_free(g->map);
	free(g);
}

/* find - the live entry of key, or NULL. */
static struct grey_ent *find(struct smtp_greylist *g, const char *key, int64_t now)
{
	return util_ttlmap_get(g->map, key, strlen(key), now);
}

/* put - the entry of key, new (zeroed) or live; a full table evicts. */
static struct grey_ent *put(struct smtp_greylist *g, const char *key, int64_t now)
{
	return util_ttlmap_put(g->map, key, strlen(key), now, NULL);
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

/* The shared decision: KEYS[1] the network, KEYS[2..] the triplets; ARGV
 * delay, retry_window, allowlist_ttl.  Answers {wait, allowlisted, result
 * per triplet (new, early, retried, passed)}; a triplet value is "f<first
 * attempt>" or "p" (retried correctly). */
static const char grey_script[] =
    "local now = tonumber(redis.call('TIME')[1]) "
    "local delay, rw, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) "
    "if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 1} end "
    "local wait, retried, out = 0, false, {0, 0} "
    "for i = 2, #KEYS do "
    "  local v = redis.call('GET', KEYS[i]) "
    "  if not v then "
    "    redis.call('SET', KEYS[i], 'f' .. now, 'EX', rw) out[#out + 1] = 'new' "
    "    if delay > wait then wait = delay end "
    "  elseif v == 'p' then "
    "    redis.call('EXPIRE', KEYS[i], ttl) retried = true out[#out + 1] = 'passed' "
    "  else "
    "    local first = tonumber(string.sub(v, 2)) or now "
    "    if now - first < delay then "
    "      out[#out + 1] = 'early' "
    "      if first + delay - now > wait then wait = first + delay - now end "
    "    else "
    "      redis.call('SET', KEYS[i], 'p', 'EX', ttl) retried = true out[#out + 1] = 'retried' "
    "    end "
    "  end "
    "end "
    "if retried then redis.call('SET', KEYS[1], '1', 'EX', ttl) end "
    "out[1] = wait "
    "return out";

struct grey_req {
	struct smtp_server *srv;
	uint64_t sid;
};

/* shared_cb - the shared decision is in (or failed: the message passes). */
static void shared_cb(void *arg, const redisReply *r, bool cancelled)
{
	struct grey_req *q = arg;
	struct smtp_session *s = cancelled ? NULL : smtp_server_find(q->srv, q->sid);
	free(q);
	if (!s || s->wait != SMTP_WAIT_GREYLIST || !s->tx)
		return;
	s->wait = SMTP_WAIT_NONE;
	struct smtp_tx *tx = s->tx;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    (r->element[1]->integer == 0 && r->elements != 2 + tx->rcpts.n)) {
		note(s, NULL, "failed", "state_unavailable");
		util_log_warn("s=%016llx greylist store=redis failed action=accept",
		              (unsigned long long)s->id);
		smtp_data_greylisted(s, NULL, true);
		return;
	}
	if (r->element[1]->integer) {
		note(s, NULL, "allowlisted", NULL);
		smtp_data_greylisted(s, NULL, true);
		return;
	}
	for (size_t i = 0; i < tx->rcpts.n; i++) {
		const redisReply *e = r->element[2 + i];
		if (e->type == REDIS_REPLY_STRING && strcmp(e->str, "passed") != 0)
			note(s, tx->rcpts.v[i], e->str, NULL);
	}
	long long wait = r->element[0]->integer;
	if (wait <= 0) {
		smtp_data_greylisted(s, NULL, true);
		return;
	}
	char reply[300];
	snprintf(reply, sizeof(reply), "451 4.7.1 Greylisted, please try again in %lld seconds",
	         wait);
	smtp_data_greylisted(s, reply, true);
}

/* shared_check - ask [state] redis: SMTP_GREY_PENDING, or SMTP_GREY_PASS
 * when it is known to be down (fail open). */
static int shared_check(struct smtp_session *s, const char *net)
{
	const struct config *cfg = s->cfg;
	struct smtp_tx *tx = s->tx;
	size_t nkeys = 1 + tx->rcpts.n;
	char **keys = util_xcalloc(nkeys, sizeof(*keys));
	char args[3][24];
	const char *argv[3] = {args[0], args[1], args[2]};
	snprintf(args[0], sizeof(args[0]), "%lld", (long long)cfg->greylist_delay);
	snprintf(args[1], sizeof(args[1]), "%lld", (long long)cfg->greylist_retry_window);
	snprintf(args[2], sizeof(args[2]), "%lld", (long long)cfg->greylist_allow_ttl);
	for (size_t i = 0; i < nkeys; i++) {
		char key[1200];
		if (i == 0)
			snprintf(key, sizeof(key), "grey:net %s", net);
		else
			snprintf(key, sizeof(key), "grey:t %s <%s> <%s>", net, tx->mail.addr,
			         tx->rcpts.v[i - 1]);
		keys[i] = util_xstrdup(key);
	}
	struct grey_req *q = util_xcalloc(1, sizeof(*q));
	q->srv = s->srv;
	q->sid = s->id;
	int rc = smtp_redis_eval(s->srv->redis, grey_script, nkeys, (const char *const *)keys, 3,
	                         argv, shared_cb, q);
	for (size_t i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
	if (rc < 0) {
		free(q);
		note(s, NULL, "failed", "state_unavailable");
		util_log_warn("s=%016llx greylist store=redis failed action=accept",
		              (unsigned long long)s->id);
		return SMTP_GREY_PASS;
	}
	s->wait = SMTP_WAIT_GREYLIST;
	return SMTP_GREY_PENDING;
}

/* smtp_greylist_decide - the in-process decision for one message from a
 * client of network net at now (wall-clock seconds): result[i] is "new",
 * "early", "retried" or NULL (passed before) for rcpts->v[i], *allowlisted
 * tells that the network skipped it all.  Returns the seconds to wait, 0
 * when the message passes.  Times are passed in, so tests drive them. */
int64_t smtp_greylist_decide(struct smtp_greylist *g, const struct config *cfg, const char *net,
                             const char *sender, const struct util_strlist *rcpts, int64_t now,
                             const char **result, bool *allowlisted)
{
	char key[1200];
	int64_t wait = 0;
	bool retried = false;
	snprintf(key, sizeof(key), "net %s", net);
	*allowlisted = find(g, key, now) != NULL;
	for (size_t i = 0; i < rcpts->n; i++)
		result[i] = NULL;
	if (*allowlisted)
		return 0;
	for (size_t i = 0; i < rcpts->n; i++) {
		snprintf(key, sizeof(key), "t %s <%s> <%s>", net, sender, rcpts->v[i]);
		struct grey_ent *e = find(g, key, now);
		if (!e) {
			e = put(g, key, now);
			e->first = now;
			e->passed = false;
			*util_ttlmap_expires(e) = now + cfg->greylist_retry_window;
			result[i] = "new";
			if (cfg->greylist_delay > wait)
				wait = cfg->greylist_delay;
			continue;
		}
		if (!e->passed && now - e->first < cfg->greylist_delay) {
			result[i] = "early";
			if (e->first + cfg->greylist_delay - now > wait)
				wait = e->first + cfg->greylist_delay - now;
			continue;
		}
		if (!e->passed)
			result[i] = "retried";
		e->passed = true;
		*util_ttlmap_expires(e) = now + cfg->greylist_allow_ttl;
		retried = true;
	}
	if (retried) {
		/* A correct retry: the whole network passes from now on. */
		snprintf(key, sizeof(key), "net %s", net);
		struct grey_ent *n = put(g, key, now);
		*util_ttlmap_expires(n) = now + cfg->greylist_allow_ttl;
	}
	return wait;
}

/* smtp_greylist_check - every recipient's triplet. */
int smtp_greylist_check(struct smtp_session *s, char *reply, size_t replylen)
{
	const struct config *cfg = s->cfg;
	struct smtp_greylist *g = s->srv->greylist;
	struct smtp_tx *tx = s->tx;
	char net[80];
	if (!cfg->greylist_enabled || !g || !tx)
		return SMTP_GREY_PASS;
	const char *why = exempt(s);
	if (why) {
		note(s, NULL, "skipped", why);
		return SMTP_GREY_PASS;
	}
	smtp_rl_net_str(s, net, sizeof(net));
	if (s->srv->redis)
		return shared_check(s, net);
	bool allowlisted;
	const char **result = util_xcalloc(tx->rcpts.n ? tx->rcpts.n : 1, sizeof(*result));
	int64_t wait = smtp_greylist_decide(g, cfg, net, tx->mail.addr, &tx->rcpts,
	                                    (int64_t)time(NULL), result, &allowlisted);
	if (allowlisted)
		note(s, NULL, "allowlisted", NULL);
	for (size_t i = 0; i < tx->rcpts.n; i++)
		if (result[i])
			note(s, tx->rcpts.v[i], result[i], NULL);
	free(result);
	if (wait == 0)
		return SMTP_GREY_PASS;
	snprintf(reply, replylen, "451 4.7.1 Greylisted, please try again in %lld seconds",
	         (long long)wait);
	return SMTP_GREY_LISTED;
}
