/*
 * smtp-redis.c - the Redis/Valkey client for state shared across a fleet
 * (issue 17, [state] redis): N gateways behind one load balancer count the
 * [ratelimit] rates in one place.
 *
 * hiredis' asynchronous API on the server's event loop (libevent adapter):
 * [state] connections contexts used in turn, commands pipelined on each.
 * The counting is one Lua script (INCRBY, EXPIRE on the first hit, TTL; or
 * GET and TTL to only read a count), so a
 * window means the same on every node and a key can never be left without
 * an expiry.  Nothing blocks the loop: connects are non-blocking and every
 * command has a deadline (timeout_ms, a timer per command).
 *
 * Fail open: a command that errs, is not answered in time, or is sent while
 * the server is down yields SMTP_REDIS_FAILED and the caller lets the event
 * through, logged and counted (mxgate_state_errors_total{reason}).  A
 * deadline drops the connection (a hung server - SIGSTOP, a full backlog -
 * would hold every pipelined command); a dropped or refused connection is
 * retried RETRY_SECONDS later, and until then commands on it fail at once,
 * so a dead Redis costs nothing and never stalls a session.
 *
 * Ownership: the server owns the state (smtp_redis_free).  Each request is
 * owned by hiredis' callback list until its reply callback runs (hiredis
 * calls it exactly once: answer, or NULL when the context goes).
 *
 * Diagnostics: "- state redis=URL up|down reason=..." on each change (up
 * once a command is answered, not at connect: a hung server accepts);
 * counter mxgate_state_errors_total{reason=timeout|down|error}.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "smtp-redis.h"
#include "util.h"

#define RETRY_SECONDS 1
#define MAX_LINKS     16

/* INCRBY ARGV[2]; EXPIRE when new (or when a key somehow has none); answer
 * {count, ttl}.  By 0: read only, {0, 0} for a key not there. */
static const char hit_script[] =
    "local by = tonumber(ARGV[2]) "
    "if by == 0 then "
    "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "local t = redis.call('TTL', KEYS[1]) "
    "if t < 0 then t = 0 end "
    "return {n, t} end "
    "local n = redis.call('INCRBY', KEYS[1], by) "
    "local t = redis.call('TTL', KEYS[1]) "
    "if n == by or t < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) t = tonumber(ARGV[1]) end "
    "return {n, t}";

struct st_link {
	struct smtp_redis *st;
	redisAsyncContext *ac;  /* NULL = not connected */
	bool up;                /* last known state, for the log */
	int64_t retry_at;       /* no connect before (monotonic seconds) */
};

struct smtp_redis {
	struct event_base *base;
	struct util_redis_url url;
	char *url_text;
	char *password;
	char *prefix;
	int timeout_ms;
	size_t nlinks, next;
	struct st_link links[MAX_LINKS];
	bool closing;
	bool unresolved;        /* the host name did not resolve at start: down */
};

struct st_req {
	struct st_link *link;
	struct event *deadline;
	smtp_redis_hit_cb cb;      /* smtp_redis_hit */
	smtp_redis_eval_cb ecb;    /* or smtp_redis_eval */
	void *arg;
	bool done;              /* the caller has had its answer */
};

/* now_mono - monotonic seconds. */
static int64_t now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

/* link_down - forget the context (already freed or being freed by hiredis)
 * and log the change once. */
static void link_down(struct st_link *l, const char *why)
{
	l->ac = NULL;
	l->retry_at = now_mono() + RETRY_SECONDS;
	if (l->up && !l->st->closing) {
		util_log_warn("- state redis=%s down reason=%s action=fail_open retry=%ds",
		              l->st->url_text, why, RETRY_SECONDS);
	}
	l->up = false;
}

/* connect_cb - the non-blocking connect finished. */
static void connect_cb(const redisAsyncContext *ac, int status)
{
	struct st_link *l = ac->data;
	if (!l || l->ac != ac)
		return;
	if (status != REDIS_OK) {
		if (l->up && !l->st->closing)
			util_log_warn("- state redis=%s connect failed: %s", l->st->url_text,
			              ac->errstr[0] ? ac->errstr : "error");
		link_down(l, "connect");
	}
	/* up only once a command is answered: a hung server accepts connects */
}

/* link_answered - a command was answered: the server is up (logged once). */
static void link_answered(struct st_link *l)
{
	if (!l->up && !l->st->closing)
		util_log_info("- state redis=%s up", l->st->url_text);
	l->up = true;
}

/* disconnect_cb - the server closed, or the context was freed. */
static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct st_link *l = ac->data;
	(void)status;
	if (l && l->ac == ac)
		link_down(l, "closed");
}

/* auth_cb - the AUTH / SELECT answer: an error is logged (the commands
 * after it fail and are counted). */
static void auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *rep = r;
	(void)priv;
	struct st_link *l = ac->data;
	if (rep && rep->type == REDIS_REPLY_ERROR && l && !l->st->closing)
		util_log_warn("- state redis=%s setup failed: %.200s", l->st->url_text, rep->str);
}

/* link_connect - a new non-blocking context, or -1. */
static int link_connect(struct st_link *l)
{
	struct smtp_redis *st = l->st;
	if (st->unresolved)
		return -1;
	redisAsyncContext *ac = st->url.path[0] ? redisAsyncConnectUnix(st->url.path)
	                                        : redisAsyncConnect(st->url.host, st->url.port);
	if (!ac)
		return -1;
	if (ac->err) {
		redisAsyncFree(ac);
		return -1;
	}
	ac->data = l;
	if (redisLibeventAttach(ac, st->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return -1;
	}
	l->ac = ac;
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	if (st->password)
		redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", st->password);
	if (st->url.db)
		redisAsyncCommand(ac, auth_cb, NULL, "SELECT %d", st->url.db);
	return 0;
}

/* finish - give the caller its answer once. */
static void finish(struct st_req *q, int64_t count, int64_t left)
{
	if (q->done)
		return;
	q->done = true;
	if (q->deadline)
		event_del(q->deadline);
	if (q->ecb)
		q->ecb(q->arg, NULL, q->link->st->closing);
	else
		q->cb(q->arg, q->link->st->closing ? SMTP_REDIS_CANCELLED : count, left);
}

/* reply_cb - hiredis is done with the request: answered, or NULL when the
 * context went away. */
static void reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct st_req *q = priv;
	redisReply *rep = r;
	(void)ac;
	if (!q->done && q->ecb && rep && !q->link->st->closing) {
		q->done = true; /* the caller reads the answer, errors included */
		event_del(q->deadline);
		link_answered(q->link);
		if (rep->type == REDIS_REPLY_ERROR) {
			util_log_warn("- state redis=%s error: %.200s", q->link->st->url_text, rep->str);
			util_metrics_inc("mxgate_state_errors_total", "error");
		}
		q->ecb(q->arg, rep, false);
	}
	if (!q->done) {
		if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
		    rep->element[0]->type == REDIS_REPLY_INTEGER &&
		    rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer >= 0) {
			link_answered(q->link);
			finish(q, rep->element[0]->integer, rep->element[1]->integer);
		} else {
			const char *why = !rep ? "down" : "error";
			if (rep && rep->type == REDIS_REPLY_ERROR && !q->link->st->closing)
				util_log_warn("- state redis=%s error: %.200s", q->link->st->url_text,
				              rep->str);
			if (!q->link->st->closing)
				util_metrics_inc("mxgate_state_errors_total", why);
			finish(q, SMTP_REDIS_FAILED, 0);
		}
	}
	if (q->deadline)
		event_free(q->deadline);
	free(q);
}

/* deadline_cb - no answer in timeout_ms: fail open, and drop the
 * connection (everything pipelined behind would wait as long). */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct st_req *q = arg;
	(void)fd;
	(void)what;
	struct st_link *l = q->link;
	util_metrics_inc("mxgate_state_errors_total", "timeout");
	finish(q, SMTP_REDIS_FAILED, 0);
	redisAsyncContext *ac = l->ac;
	if (ac) {
		link_down(l, "timeout");
		redisAsyncFree(ac); /* the pending ones (q too) get NULL: failed, freed */
	}
}

/* smtp_redis_new - see smtp-redis.h. */
struct smtp_redis *smtp_redis_new(struct event_base *base, const struct config *cfg)
{
	char err[200];
	if (!cfg->state_redis)
		return NULL;
	struct smtp_redis *st = util_xcalloc(1, sizeof(*st));
	if (util_redis_url_parse(cfg->state_redis, &st->url, err, sizeof(err)) < 0) {
		free(st); /* check-config refused it already */
		return NULL;
	}
	st->base = base;
	st->url_text = util_xstrdup(cfg->state_redis);
	/* hiredis resolves a host name with a blocking getaddrinfo on each
	 * connect: resolve it once here, at start, so reconnects never block
	 * the loop (a changed address needs a restart). */
	if (!st->url.path[0]) {
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
		int rc = getaddrinfo(st->url.host, NULL, &hints, &res);
		if (rc != 0 || !res) {
			util_log_err("- state redis=%s cannot resolve %s: %s; failing open until a "
			             "restart", st->url_text, st->url.host, gai_strerror(rc));
			st->unresolved = true;
		} else {
			const struct addrinfo *ai = res; /* IPv4 first, like "localhost" servers bind */
			for (const struct addrinfo *p = res; p; p = p->ai_next)
				if (p->ai_family == AF_INET) {
					ai = p;
					break;
				}
			void *a = ai->ai_family == AF_INET6
			              ? (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
			              : (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
			inet_ntop(ai->ai_family, a, st->url.host, sizeof(st->url.host));
		}
		if (res)
			freeaddrinfo(res);
	}
	st->password = cfg->state_password ? util_xstrdup(cfg->state_password) : NULL;
	st->prefix = util_xstrdup(cfg->state_key_prefix ? cfg->state_key_prefix : "");
	st->timeout_ms = cfg->state_timeout_ms > 0 ? cfg->state_timeout_ms : 250;
	st->nlinks = cfg->state_connections < 1 ? 1
	             : cfg->state_connections > MAX_LINKS ? MAX_LINKS
	                                                  : (size_t)cfg->state_connections;
	for (size_t i = 0; i < st->nlinks; i++) {
		st->links[i].st = st;
		st->links[i].up = true; /* the first failure is logged */
		(void)link_connect(&st->links[i]);
	}
	util_log_info("- state redis=%s connections=%zu timeout=%dms", st->url_text, st->nlinks,
	              st->timeout_ms);
	return st;
}

/* smtp_redis_free - see smtp-redis.h. */
void smtp_redis_free(struct smtp_redis *st)
{
	if (!st)
		return;
	st->closing = true;
	for (size_t i = 0; i < st->nlinks; i++) {
		redisAsyncContext *ac = st->links[i].ac;
		st->links[i].ac = NULL;
		if (ac)
			redisAsyncFree(ac);
	}
	free(st->url_text);
	free(st->password);
	free(st->prefix);
	free(st);
}

/* req_send - a request on the next connection (connected now if need be):
 * EVAL script, the keys under the prefix, then args; armed deadline.  0, or
 * -1 (down: failed at once, counted). */
static int req_send(struct smtp_redis *st, struct st_req *q, const char *script, size_t nkeys,
                const char *const *keys, size_t nargs, const char *const *args)
{
	struct st_link *l = &st->links[st->next++ % st->nlinks];
	if (!l->ac) {
		if (now_mono() < l->retry_at || link_connect(l) < 0) {
			l->retry_at = l->retry_at > now_mono() ? l->retry_at : now_mono() + RETRY_SECONDS;
			util_metrics_inc("mxgate_state_errors_total", "down");
			free(q);
			return -1;
		}
	}
	q->link = l;
	q->deadline = evtimer_new(st->base, deadline_cb, q);
	size_t argc = 3 + nkeys + nargs;
	const char **argv = util_xcalloc(argc, sizeof(*argv));
	size_t *lens = util_xcalloc(argc, sizeof(*lens));
	char **owned = util_xcalloc(nkeys + 1, sizeof(*owned));
	char nk[24];
	snprintf(nk, sizeof(nk), "%zu", nkeys);
	argv[0] = "EVAL";
	argv[1] = script;
	argv[2] = nk;
	for (size_t i = 0; i < nkeys; i++) {
		size_t n = strlen(st->prefix) + strlen(keys[i]) + 1;
		owned[i] = util_xcalloc(1, n);
		snprintf(owned[i], n, "%s%s", st->prefix, keys[i]);
		argv[3 + i] = owned[i];
	}
	for (size_t i = 0; i < nargs; i++)
		argv[3 + nkeys + i] = args[i];
	for (size_t i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	int rc = q->deadline ? redisAsyncCommandArgv(l->ac, reply_cb, q, (int)argc, argv, lens)
	                     : REDIS_ERR;
	for (size_t i = 0; i < nkeys; i++)
		free(owned[i]);
	free(owned);
	free(argv);
	free(lens);
	if (rc != REDIS_OK) {
		if (q->deadline)
			event_free(q->deadline);
		free(q);
		util_metrics_inc("mxgate_state_errors_total", "error");
		return -1;
	}
	struct timeval tv = {.tv_sec = st->timeout_ms / 1000,
	                     .tv_usec = (st->timeout_ms % 1000) * 1000};
	evtimer_add(q->deadline, &tv);
	return 0;
}

/* smtp_redis_hit - see smtp-redis.h. */
int smtp_redis_hit(struct smtp_redis *st, const char *key, int64_t window, int64_t by,
                   smtp_redis_hit_cb cb, void *arg)
{
	char w[24], n[24];
	snprintf(w, sizeof(w), "%lld", (long long)window);
	snprintf(n, sizeof(n), "%lld", (long long)(by > 0 ? by : 0));
	const char *keys[1] = {key}, *args[2] = {w, n};
	struct st_req *q = util_xcalloc(1, sizeof(*q));
	q->cb = cb;
	q->arg = arg;
	return req_send(st, q, hit_script, 1, keys, 2, args);
}

/* smtp_redis_eval - see smtp-redis.h. */
int smtp_redis_eval(struct smtp_redis *st, const char *script, size_t nkeys,
                    const char *const *keys, size_t nargs, const char *const *args,
                    smtp_redis_eval_cb cb, void *arg)
{
	struct st_req *q = util_xcalloc(1, sizeof(*q));
	q->ecb = cb;
	q->arg = arg;
	return req_send(st, q, script, nkeys, keys, nargs, args);
}
