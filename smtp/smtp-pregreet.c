/*
 * smtp-pregreet.c - tests before and just after the banner (issue 17), in
 * the manner of Postfix's postscreen:
 *   - greeting delay: with [pregreet] enabled, a client not in the pass
 *     cache gets "220-<hostname>" at once (greet_mode = continuation) or
 *     nothing (pause), and the final 220 only after greet_delay;
 *   - early talkers: anything sent before the final 220 (also while the
 *     banner waits for the DNSBL answers) - 554 5.5.1 and close;
 *   - bare pipelining: more commands sent before the answer to EHLO, or
 *     after HELO, i.e. before PIPELINING was offered (RFC 2920 3.1) - 554
 *     5.5.1 and close;
 *   - non-SMTP commands (GET, POST, CONNECT, USER, ...) at any time, even
 *     without `enabled` - 554 5.5.1 and close;
 *   - the pass cache: a client whose HELO/EHLO came after the banner and
 *     alone is remembered for pass_ttl and skips the delay and the tests,
 *     so a legitimate MTA pays the delay once a day.
 *
 * The pass cache lives in memory, at most [pregreet] pass_cache_size
 * clients (a full cache evicts the least recently seen of a random sample:
 * that client is simply tested again); with [pregreet] pass_cache_file it is
 * read at start and written at stop (temp file, fsync, rename), one
 * "EXPIRES ADDRESS" line per client after a "mxgate-pregreet-pass 1" line.
 * A crash loses what was learnt since the start: clients are tested again.
 *
 * With [state] redis the pass cache is shared by a fleet: a pass is also
 * written to Redis/Valkey ("pass:ADDRESS", expiring after pass_ttl), and a
 * client not in the local cache is looked up there while its delay runs;
 * found, the delay ends at once (result=cached).  Redis down or late: the
 * client is simply tested (the delay is bounded), never stalled, and a pass
 * stays in this node's cache only - logged ("s=ID pregreet store=redis
 * failed op=lookup|add action=test|local") and counted
 * (mxgate_pregreet_store_errors_total{store}).
 *
 * Ownership: the server owns the pass cache (smtp_pregreet_free); the
 * session owns greet_ev.
 *
 * Diagnostics: "s=ID pregreet client=IP result=pass|cached|early_talker|
 * bare_pipelining|non_smtp_command"; counter mxgate_pregreet_total{result};
 * shared-cache failures as above.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <hiredis/hiredis.h>

#include "smtp-redis.h"
#include "smtp-server-internal.h"

/* The pass cache: a util_ttlmap from the 17-byte address key to nothing
 * (the expiry is the entry's); at most [pregreet] pass_cache_size clients,
 * a full cache evicts the least recently seen of a sample (util-ttlmap.c). */

/* pass_find - is the client's pass live at now? */
static bool pass_find(struct smtp_server *srv, const uint8_t key[17], int64_t now)
{
	return srv->passes && util_ttlmap_get(srv->passes, key, 17, now) != NULL;
}

/* pass_put - remember key until expires. */
static void pass_put(struct smtp_server *srv, const uint8_t key[17], int64_t expires, int64_t now)
{
	void *v = util_ttlmap_put(srv->passes, key, 17, now, NULL);
	*util_ttlmap_expires(v) = expires;
}

/* smtp_pregreet_passed - a has a live pass at now (wall-clock seconds). */
bool smtp_pregreet_passed(struct smtp_server *srv, const struct util_addr *a, int64_t now)
{
	uint8_t key[17];
	smtp_server_ip_key(a, key);
	return pass_find(srv, key, now);
}

/* smtp_pregreet_pass_add - a passed at now: remembered for cfg's pass_ttl. */
void smtp_pregreet_pass_add(struct smtp_server *srv, const struct config *cfg,
                            const struct util_addr *a, int64_t now)
{
	uint8_t key[17];
	smtp_server_ip_key(a, key);
	pass_put(srv, key, now + cfg->pregreet_pass_ttl, now);
}

#define PASS_MAGIC    "mxgate-pregreet-pass 1"
#define PASS_FILE_MAX (64 * 1024 * 1024)

/* smtp_pregreet_cache_parse - the file image, line by line. */
size_t smtp_pregreet_cache_parse(const char *text, size_t len, size_t max,
                                 void (*take)(void *arg, const uint8_t key[17], int64_t expires),
                                 void *arg)
{
	size_t n = 0, mlen = strlen(PASS_MAGIC);
	if (len < mlen + 1 || memcmp(text, PASS_MAGIC, mlen) != 0 || text[mlen] != '\n')
		return 0;
	const char *p = text + mlen + 1, *end = text + len;
	while (p < end && n < max) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char line[128], host[INET6_ADDRSTRLEN + 1];
		long long exp;
		int used = 0;
		struct util_addr a;
		if (ll < sizeof(line)) {
			memcpy(line, p, ll);
			line[ll] = 0;
			if (sscanf(line, "%lld %46s%n", &exp, host, &used) == 2 &&
			    (size_t)used == ll && exp > 0 && !memchr(line, '\0', ll) &&
			    util_addr_parse_numeric(host, 0, &a) == 0) {
				uint8_t key[17];
				smtp_server_ip_key(&a, key);
				take(arg, key, (int64_t)exp);
				n++;
			}
		}
		p += ll + 1;
	}
	return n;
}

/* load_take - one entry from the file (expired ones are dropped). */
static void load_take(void *arg, const uint8_t key[17], int64_t expires)
{
	struct smtp_server *srv = arg;
	int64_t now = (int64_t)time(NULL);
	if (expires <= now || pass_find(srv, key, now))
		return;
	pass_put(srv, key, expires, now);
}

/* smtp_pregreet_load - start-up: the saved pass cache. */
void smtp_pregreet_load(struct smtp_server *srv)
{
	size_t len = 0;
	if (!srv->pass_file)
		return;
	char *text = util_read_file(srv->pass_file, PASS_FILE_MAX, &len);
	if (!text) {
		if (errno != ENOENT)
			util_log_warn("- pregreet cache file=%s unreadable error=\"%s\"",
			              srv->pass_file, strerror(errno));
		return;
	}
	smtp_pregreet_cache_parse(text, len, (size_t)srv->cfg->pregreet_pass_max, load_take, srv);
	free(text);
	util_log_info("- pregreet cache file=%s loaded=%zu", srv->pass_file,
	              util_ttlmap_count(srv->passes));
}

struct save_ctx {
	FILE *f;
	int64_t now;
	size_t n;
};

/* save_one - util_ttlmap_foreach: one live entry as a line. */
static void save_one(void *arg, const void *key, size_t klen, void *value, int64_t expires)
{
	struct save_ctx *c = arg;
	const uint8_t *k = key;
	char host[INET6_ADDRSTRLEN];
	(void)value;
	if (klen != 17 || expires <= c->now)
		return;
	inet_ntop(k[0] == 4 ? AF_INET : AF_INET6, k + 1, host, sizeof(host));
	fprintf(c->f, "%lld %s\n", (long long)expires, host);
	c->n++;
}

/* pass_save - write the live entries (temp file, fsync, rename). */
static void pass_save(struct smtp_server *srv)
{
	char *tmp = util_xasprintf("%s.tmp", srv->pass_file);
	struct save_ctx c = {.f = NULL, .now = (int64_t)time(NULL), .n = 0};
	FILE *f = fopen(tmp, "w");
	if (!f)
		goto fail;
	c.f = f;
	fprintf(f, "%s\n", PASS_MAGIC);
	util_ttlmap_foreach(srv->passes, save_one, &c);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0 || rename(tmp, srv->pass_file) != 0)
		goto fail;
	util_log_info("- pregreet cache file=%s saved=%zu", srv->pass_file, c.n);
	free(tmp);
	return;
fail:
	util_log_warn("- pregreet cache file=%s not saved error=\"%s\"", srv->pass_file,
	              strerror(errno));
	(void)unlink(tmp);
	free(tmp);
}

/* smtp_pregreet_free - save (when configured) and free the pass cache. */
void smtp_pregreet_free(struct smtp_server *srv)
{
	if (srv->pass_file && srv->passes)
		pass_save(srv);
	util_ttlmap_free(srv->passes);
	srv->passes = NULL;
}

/* verdict - log and count one result. */
static void verdict(struct smtp_session *s, const char *result)
{
	util_log_info("s=%016llx pregreet client=%s result=%s", (unsigned long long)s->id,
	              s->client_str, result);
	util_metrics_inc("mxgate_pregreet_total", result);
}

/* refuse - 554 and close for a failed test. */
static void refuse(struct smtp_session *s, const char *result, const char *why)
{
	char line[300];
	verdict(s, result);
	snprintf(line, sizeof(line), "554 5.5.1 %s Error: %s", s->cfg->hostname, why);
	smtp_session_close(s, line);
}

/* delay_cb - greet_delay is over. */
static void delay_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtp_session_greet_release(arg, SMTP_HOLD_DELAY);
}

static const char pass_get_script[] = "return redis.call('EXISTS', KEYS[1])";
static const char pass_set_script[] = "redis.call('SET', KEYS[1], '1', 'EX', ARGV[1]) return 1";

struct pass_req {
	struct smtp_server *srv;
	uint64_t sid;
};

/* store_failed - the shared pass cache could not be asked (op "lookup":
 * the client is tested as if unknown) or told (op "add": the pass stays in
 * this node's cache only): fail open, logged and counted. */
static void store_failed(uint64_t sid, const char *op, const char *action)
{
	util_log_warn("s=%016llx pregreet store=redis failed op=%s action=%s",
	              (unsigned long long)sid, op, action);
	util_metrics_inc("mxgate_pregreet_store_errors_total", "redis");
}

/* shared_seen_cb - the shared pass cache answered while the delay runs. */
static void shared_seen_cb(void *arg, const redisReply *r, bool cancelled)
{
	struct pass_req *q = arg;
	uint64_t sid = q->sid;
	struct smtp_session *s = cancelled ? NULL : smtp_server_find(q->srv, q->sid);
	free(q);
	if (cancelled)
		return; /* shutting down */
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		store_failed(sid, "lookup", "test");
		return; /* no answer: the client is tested */
	}
	if (!s || r->integer != 1)
		return; /* unknown: the client is tested */
	if (!s->pregreet || s->passed || s->wait != SMTP_WAIT_GREET ||
	    !(s->greet_holds & SMTP_HOLD_DELAY))
		return;
	s->pregreet = false;
	if (s->greet_ev)
		event_del(s->greet_ev);
	verdict(s, "cached");
	smtp_session_greet_release(s, SMTP_HOLD_DELAY);
}

/* shared_set_cb - a pass written to the shared cache (or not). */
static void shared_set_cb(void *arg, const redisReply *r, bool cancelled)
{
	struct pass_req *q = arg;
	if (!cancelled && (!r || r->type != REDIS_REPLY_INTEGER))
		store_failed(q->sid, "add", "local");
	free(q);
}

/* shared_key - "pass:ADDRESS". */
static void shared_key(const struct smtp_session *s, char *key, size_t len)
{
	snprintf(key, len, "pass:%s", s->client_str);
}

/* shared_lookup - ask the fleet's pass cache while the delay runs. */
static void shared_lookup(struct smtp_session *s)
{
	char key[80];
	shared_key(s, key, sizeof(key));
	const char *keys[1] = {key};
	struct pass_req *q = util_xcalloc(1, sizeof(*q));
	q->srv = s->srv;
	q->sid = s->id;
	if (smtp_redis_eval(s->srv->redis, pass_get_script, 1, keys, 0, NULL, shared_seen_cb, q) <
	    0) {
		free(q);
		store_failed(s->id, "lookup", "test"); /* down: tested as usual */
	}
}

/* shared_add - tell the fleet the client passed. */
static void shared_add(struct smtp_session *s)
{
	char key[80], ttl[24];
	shared_key(s, key, sizeof(key));
	snprintf(ttl, sizeof(ttl), "%lld", (long long)s->cfg->pregreet_pass_ttl);
	const char *keys[1] = {key}, *args[1] = {ttl};
	struct pass_req *q = util_xcalloc(1, sizeof(*q));
	q->srv = s->srv;
	q->sid = s->id;
	if (smtp_redis_eval(s->srv->redis, pass_set_script, 1, keys, 1, args, shared_set_cb, q) <
	    0) {
		free(q);
		store_failed(s->id, "add", "local");
	}
}

/* smtp_pregreet_start - at accept: decide whether the tests apply and arm
 * the delay.  Returns SMTP_HOLD_DELAY when the banner must wait, else 0. */
int smtp_pregreet_start(struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	if (!cfg->pregreet_enabled)
		return 0;
	if (smtp_pregreet_passed(s->srv, &s->client, (int64_t)time(NULL))) {
		verdict(s, "cached");
		return 0;
	}
	s->pregreet = true;
	if (cfg->pregreet_delay <= 0)
		return 0;
	struct timeval tv = {.tv_sec = cfg->pregreet_delay, .tv_usec = 0};
	s->greet_ev = event_new(s->srv->base, -1, 0, delay_cb, s);
	if (!s->greet_ev || event_add(s->greet_ev, &tv) < 0)
		return 0; /* out of memory: no delay rather than no banner */
	if (s->srv->redis)
		shared_lookup(s); /* passed on another node: the delay ends early */
	return SMTP_HOLD_DELAY;
}

/* smtp_pregreet_continuation - the "220-" line, once, in continuation mode
 * while the delay runs. */
void smtp_pregreet_continuation(struct smtp_session *s)
{
	if (s->cont_sent || !s->pregreet || s->cfg->pregreet_mode != CONFIG_PREGREET_CONTINUATION)
		return;
	s->cont_sent = true;
	smtp_session_reply(s, "220-%s ESMTP", s->cfg->hostname);
}

/* smtp_pregreet_end - free the delay timer (teardown). */
void smtp_pregreet_end(struct smtp_session *s)
{
	if (s->greet_ev)
		event_free(s->greet_ev);
	s->greet_ev = NULL;
}

/* smtp_pregreet_early - input arrived while the banner is held: true when
 * the client was refused for it (an early talker). */
bool smtp_pregreet_early(struct smtp_session *s, struct evbuffer *in)
{
	if (!s->pregreet || evbuffer_get_length(in) == 0)
		return false;
	refuse(s, "early_talker", "SMTP protocol violation: talking before the greeting");
	return true;
}

/* is_non_smtp - the line starts with a web, proxy or POP3 verb. */
static bool is_non_smtp(const char *line, size_t len)
{
	static const char *const verbs[] = {"GET",     "POST",    "HEAD", "PUT",
	                                    "CONNECT", "OPTIONS", "USER"};
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		size_t n = strlen(verbs[i]);
		if (len >= n && strncasecmp(line, verbs[i], n) == 0 && (len == n || line[n] == ' '))
			return true;
	}
	return false;
}

/* smtp_pregreet_line - one complete command line, before it is dispatched
 * (in holds what came after it).  True when the client was refused. */
bool smtp_pregreet_line(struct smtp_session *s, const char *line, size_t len, struct evbuffer *in)
{
	const struct config *cfg = s->cfg;
	if (cfg->pregreet_non_smtp && is_non_smtp(line, len)) {
		refuse(s, "non_smtp_command", "non-SMTP command");
		return true;
	}
	if (!s->pregreet)
		return false;
	/* RFC 2920 3.1: a client may pipeline only after EHLO's answer lists
	 * PIPELINING; before it (or after HELO) a command must wait for its
	 * reply.  More bytes already behind this line break that. */
	if (cfg->pregreet_bare_pipelining && evbuffer_get_length(in) > 0 &&
	    (s->state == SMTP_STATE_HELO || !s->esmtp)) {
		refuse(s, "bare_pipelining",
		       "SMTP protocol violation: pipelining before it was "
		       "offered");
		return true;
	}
	if (!s->passed && s->state == SMTP_STATE_HELO && len >= 4 &&
	    (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0)) {
		s->passed = true;
		smtp_pregreet_pass_add(s->srv, s->cfg, &s->client, (int64_t)time(NULL));
		if (s->srv->redis)
			shared_add(s);
		verdict(s, "pass");
	}
	return false;
}
