/*
 * scan-rspamd.c - asynchronous rspamd client on the libevent loop: one
 * HTTP/1.1 POST /checkv2 per message with libevent's evhttp, the envelope
 * facts as request headers (rspamd's protocol: IP, Helo, Hostname, From,
 * Rcpt, Queue-Id, MTA-Name, TLS-Version, TLS-Cipher, Settings) and the
 * message body attached straight from the spool file (evbuffer_add_file:
 * sendfile/mmap, never copied into the heap).
 *
 * mxgate's own authentication verdict is an input, not a second opinion:
 * with skip_auth_checks the Settings header disables rspamd's "policies"
 * group (SPF, DKIM, DMARC, ARC) for the request, and the request carries
 * X-Mxgate-Auth (the summary) and X-Mxgate-Auth-Score, which the rspamd
 * rule shipped in deploy/rspamd/mxgate.lua turns into symbol MXGATE_AUTH.
 *
 * Connections are pooled: up to [rspamd] max_connections evhttp
 * connections, one request at a time each; more checks wait in FIFO order.
 * We ask for keep-alive; rspamd 3.4's normal worker answers "Connection:
 * close", and evhttp then reconnects the same connection object for the
 * next check - the pool still bounds how many checks rspamd gets at once.  One timer per check is
 * its deadline, queueing included; on expiry the request is cancelled and its connection dropped.
 * A connection with bytes left after an answer is not reused (they would be read as the next
 * check's answer): it is closed from the loop (reap_cb).  Answers are bounded
 * (SCAN_RSPAMD_MAX_REPLY, SCAN_RSPAMD_MAX_HEADERS).
 *
 * Ownership: a check owns its spool descriptor until evbuffer_add_file()
 * takes it; the client owns connections and checks.  Callbacks run from
 * the loop, never inside scan_rspamd_start(), never after
 * scan_rspamd_free().
 *
 * Diagnostics: "rspamd address=... error=..." (warn) on a failed request;
 * once per client, "rspamd address=... warning=\"answer lacks MXGATE_AUTH
 * ...\"" when skip_auth_checks is on and an answer to a message with a
 * non-zero X-Mxgate-Auth-Score does not list the symbol: the rule is not
 * loaded, and neither mxgate's nor rspamd's SPF/DKIM/DMARC verdict counts.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>

#include "scan.h"

#define RSPAMD_ADDR_MAX 128

struct rspamd_check;

struct rspamd_conn {
	struct scan_rspamd *c;
	struct evhttp_connection *evcon; /* owned */
	char addr[RSPAMD_ADDR_MAX];
	struct rspamd_check *check; /* borrowed; in flight, or NULL = idle */
	bool stale;                 /* bytes after an answer: never reused */
	struct rspamd_conn *next, *prev;
};

struct rspamd_check {
	struct scan_rspamd *c;
	scan_spam_done_fn cb;
	void *arg;
	uint64_t cookie;
	int fd; /* owned until the request takes it */
	int64_t len;
	char addr[RSPAMD_ADDR_MAX];
	int max_conns;
	int timeout;
	struct util_strlist hkeys, hvals; /* request headers, prepared at start */
	char *prefix;                     /* owned; sent before the spool, or NULL */
	struct event *timer;              /* owned: deadline or deferred result */
	struct rspamd_conn *conn;         /* borrowed */
	struct evhttp_request *req;       /* owned by evhttp once made */
	bool has_result;
	bool want_auth_symbol; /* skip_auth_checks and a non-zero score sent */
	const char *http_err; /* why evhttp gave up (error_cb), or NULL */
	struct scan_spam_result result;
	struct rspamd_check *next, *prev;
};

struct scan_rspamd {
	struct event_base *base;
	struct rspamd_conn *conns;
	size_t nconns;
	struct rspamd_check *checks, *checks_tail;
	struct event *reap; /* owned: frees stale connections outside evhttp's callbacks */
	bool warned_no_rule; /* the missing-MXGATE_AUTH warning was logged */
};

static void pump(struct scan_rspamd *c);
static void reap_cb(evutil_socket_t fd, short what, void *arg);

/* scan_rspamd_new - an empty client; nothing connects until a check. */
struct scan_rspamd *scan_rspamd_new(struct event_base *base)
{
	struct scan_rspamd *c = util_xcalloc(1, sizeof(*c));
	c->base = base;
	c->reap = evtimer_new(base, reap_cb, c);
	return c;
}

/* hdrs_clear - free the prepared request headers. */
static void hdrs_clear(struct rspamd_check *k)
{
	util_strlist_free(&k->hkeys);
	util_strlist_free(&k->hvals);
}

/* hdr_add - one prepared header; the value is cleaned to printable ASCII
 * (they come from the SMTP session: a HELO name, addresses). */
static void hdr_add(struct rspamd_check *k, const char *name, const char *v)
{
	if (!v)
		return;
	char *val = util_xstrdup(v);
	for (char *p = val; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = ' ';
	util_strlist_add(&k->hkeys, name);
	util_strlist_add(&k->hvals, val);
	free(val);
}

/* check_free - unlink and free a check (its request is the caller's). */
static void check_free(struct rspamd_check *k)
{
	struct scan_rspamd *c = k->c;
	if (k->prev)
		k->prev->next = k->next;
	else
		c->checks = k->next;
	if (k->next)
		k->next->prev = k->prev;
	else
		c->checks_tail = k->prev;
	if (k->conn)
		k->conn->check = NULL;
	if (k->fd >= 0)
		close(k->fd);
	if (k->timer)
		event_free(k->timer);
	hdrs_clear(k);
	free(k->prefix);
	free(k);
}

/* conn_free - close a connection (cancels what it carries, no callback). */
static void conn_free(struct rspamd_conn *n)
{
	struct scan_rspamd *c = n->c;
	if (n->prev)
		n->prev->next = n->next;
	else
		c->conns = n->next;
	if (n->next)
		n->next->prev = n->prev;
	c->nconns--;
	if (n->check) {
		n->check->conn = NULL;
		n->check->req = NULL; /* freed with the connection */
	}
	evhttp_connection_free(n->evcon);
	free(n);
}

/* check_finish - report and forget; conn: drop it (true) or keep it idle. */
static void check_finish(struct rspamd_check *k, const struct scan_spam_result *r, bool drop)
{
	struct scan_spam_result res = *r;
	scan_spam_done_fn cb = k->cb;
	void *arg = k->arg;
	uint64_t cookie = k->cookie;
	struct scan_rspamd *c = k->c;
	struct rspamd_conn *n = k->conn;
	if (n) {
		n->check = NULL;
		k->conn = NULL;
		if (drop) {
			if (k->req)
				evhttp_cancel_request(k->req);
			k->req = NULL;
			conn_free(n);
		}
	}
	check_free(k);
	cb(cookie, &res, arg);
	pump(c);
}

/* fail_result - a "not checked" result. */
static struct scan_spam_result fail_result(const char *why)
{
	struct scan_spam_result r;
	memset(&r, 0, sizeof(r));
	r.failed = true;
	snprintf(r.reason, sizeof(r.reason), "%s", why);
	return r;
}

/* defer_result - report from the loop (never from the caller's stack). */
static void defer_result(struct rspamd_check *k, const char *why)
{
	k->has_result = true;
	k->result = fail_result(why);
	struct timeval now = {0, 0};
	evtimer_add(k->timer, &now);
}

/* done_cb - the answer (or a failure: req NULL or code 0). */
static void done_cb(struct evhttp_request *req, void *arg)
{
	struct rspamd_check *k = arg;
	k->req = NULL; /* evhttp frees the request after this callback */
	int code = req ? evhttp_request_get_response_code(req) : 0;
	struct scan_spam_result r;
	/* more bytes behind the answer (a second answer, say): evhttp would
	 * hand them to the next check on this connection as its answer, and
	 * every later verdict would be the previous message's (red team
	 * finding) - the connection goes, from the loop (never inside its own
	 * callback) */
	if (req && k->conn) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(k->conn->evcon);
		if (bev && evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
			util_log_warn("rspamd address=%s error=\"bytes after the answer\"", k->addr);
			k->conn->stale = true;
			struct timeval now = {0, 0};
			if (k->c->reap)
				evtimer_add(k->c->reap, &now);
		}
	}
	if (code != 200) {
		char why[32];
		if (code == 0 && k->http_err)
			snprintf(why, sizeof(why), "%s", k->http_err);
		else if (code == 0)
			snprintf(why, sizeof(why), "unavailable");
		else
			snprintf(why, sizeof(why), "http_%d", code);
		util_log_warn("rspamd address=%s error=\"%s\"", k->addr,
		              code || k->http_err ? why : "connection failed or closed");
		r = fail_result(why);
		/* never free an evhttp connection inside its own callback: it
		 * resets itself and reconnects for the next request */
		check_finish(k, &r, false);
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
	if (!body || scan_rspamd_parse_reply(body, n, &r) < 0) {
		util_log_warn("rspamd address=%s error=\"reply not understood\" bytes=%zu", k->addr,
		              n);
		r = fail_result("protocol");
	} else if (k->want_auth_symbol && !r.has_mxgate_auth && !k->c->warned_no_rule) {
		k->c->warned_no_rule = true;
		util_log_warn("rspamd address=%s warning=\"answer lacks MXGATE_AUTH: is "
		              "deploy/rspamd/mxgate.lua loaded? (docs/postmaster-guide.md)\"",
		              k->addr);
	}
	check_finish(k, &r, false);
}

/* error_cb - why evhttp gave up on a request (done_cb follows with NULL). */
static void error_cb(enum evhttp_request_error err, void *arg)
{
	struct rspamd_check *k = arg;
	if (err == EVREQ_HTTP_DATA_TOO_LONG)
		k->http_err = "reply_too_large"; /* body over SCAN_RSPAMD_MAX_REPLY */
	else if (err == EVREQ_HTTP_INVALID_HEADER)
		k->http_err = "protocol"; /* bad or too many header lines */
}

/* conn_new - a keep-alive evhttp connection to addr, or NULL. */
static struct rspamd_conn *conn_new(struct scan_rspamd *c, const char *addr, int timeout)
{
	char host[256], err[128];
	int port = 0;
	if (util_hostport_parse(addr, 0, host, sizeof(host), &port, err, sizeof(err)) < 0 ||
	    port <= 0)
		return NULL;
	struct evhttp_connection *ev =
	    evhttp_connection_base_new(c->base, NULL, host, (unsigned short)port);
	if (!ev)
		return NULL;
	/* longer than the check's own deadline, which decides (timer_cb) */
	evhttp_connection_set_timeout(ev, timeout + 5);
	evhttp_connection_set_retries(ev, 0);
	/* an answer is read whole before it is parsed: bound it, or a broken
	 * or hostile rspamd (a huge Content-Length, chunks or header lines
	 * without end) had mxgate buffer whatever it sent until the deadline
	 * (red team finding) */
	evhttp_connection_set_max_body_size(ev, SCAN_RSPAMD_MAX_REPLY);
	evhttp_connection_set_max_headers_size(ev, SCAN_RSPAMD_MAX_HEADERS);
	struct rspamd_conn *n = util_xcalloc(1, sizeof(*n));
	n->c = c;
	n->evcon = ev;
	snprintf(n->addr, sizeof(n->addr), "%s", addr);
	n->next = c->conns;
	if (c->conns)
		c->conns->prev = n;
	c->conns = n;
	c->nconns++;
	return n;
}

/* send_check - the request on connection n. */
static void send_check(struct rspamd_conn *n, struct rspamd_check *k)
{
	struct evhttp_request *req = evhttp_request_new(done_cb, k);
	if (!req) {
		defer_result(k, "setup");
		return;
	}
	evhttp_request_set_error_cb(req, error_cb);
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	evhttp_add_header(out, "Host", "rspamd");
	evhttp_add_header(out, "Connection", "keep-alive");
	for (size_t i = 0; i < k->hkeys.n; i++)
		evhttp_add_header(out, k->hkeys.v[i], k->hvals.v[i]);
	if (k->prefix)
		evbuffer_add(evhttp_request_get_output_buffer(req), k->prefix, strlen(k->prefix));
	if (k->len > 0) {
		/* the spool file itself: evbuffer_add_file takes the descriptor */
		if (evbuffer_add_file(evhttp_request_get_output_buffer(req), k->fd, 0, k->len) <
		    0) {
			evhttp_request_free(req);
			defer_result(k, "spool_read");
			return;
		}
		k->fd = -1;
	}
	n->check = k;
	k->conn = n;
	k->req = req;
	if (evhttp_make_request(n->evcon, req, EVHTTP_REQ_POST, "/checkv2") < 0) {
		/* evhttp freed the request */
		k->req = NULL;
		n->check = NULL;
		k->conn = NULL;
		conn_free(n);
		defer_result(k, "unavailable");
	}
}

/* pump - give waiting checks a connection. */
static void pump(struct scan_rspamd *c)
{
	for (struct rspamd_check *k = c->checks; k; k = k->next) {
		if (k->conn || k->has_result)
			continue;
		struct rspamd_conn *idle = NULL, *n = c->conns;
		while (n) {
			struct rspamd_conn *nx = n->next;
			if (!n->check && !n->stale) {
				if (strcmp(n->addr, k->addr) == 0) {
					if (!idle)
						idle = n;
				} else {
					conn_free(n); /* a socket no longer configured */
				}
			}
			n = nx;
		}
		if (!idle) {
			if (c->nconns >= (size_t)k->max_conns)
				break;
			idle = conn_new(c, k->addr, k->timeout);
			if (!idle) {
				defer_result(k, "unavailable");
				continue;
			}
		}
		send_check(idle, k);
	}
}

/* reap_cb - close the connections that must not be reused, then give
 * the waiting checks theirs. */
static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct scan_rspamd *c = arg;
	struct rspamd_conn *n = c->conns;
	while (n) {
		struct rspamd_conn *nx = n->next;
		if (n->stale && !n->check)
			conn_free(n);
		n = nx;
	}
	pump(c);
}

/* timer_cb - deadline, or a deferred result. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rspamd_check *k = arg;
	struct scan_spam_result r = k->has_result ? k->result : fail_result("timeout");
	if (!k->has_result)
		util_log_warn("rspamd address=%s error=\"no answer within the deadline\"", k->addr);
	check_finish(k, &r, true);
}

/* scan_rspamd_start - see scan.h. */
int scan_rspamd_start(struct scan_rspamd *c, const struct config *cfg, int fd, int64_t len,
                      const struct scan_envelope *env, scan_spam_done_fn cb, uint64_t cookie,
                      void *arg)
{
	if (!cfg->rspamd_address || strlen(cfg->rspamd_address) >= RSPAMD_ADDR_MAX) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct rspamd_check *k = util_xcalloc(1, sizeof(*k));
	k->c = c;
	k->cb = cb;
	k->arg = arg;
	k->cookie = cookie;
	k->fd = fd;
	k->len = len;
	k->timeout = cfg->rspamd_timeout > 0 ? cfg->rspamd_timeout : 15;
	k->max_conns = cfg->rspamd_max_connections > 0 ? cfg->rspamd_max_connections : 1;
	snprintf(k->addr, sizeof(k->addr), "%s", cfg->rspamd_address);
	k->prefix = env->body_prefix ? util_xstrdup(env->body_prefix) : NULL;
	hdr_add(k, "IP", env->client_ip);
	hdr_add(k, "Helo", env->helo);
	hdr_add(k, "Hostname", env->hostname && env->hostname[0] ? env->hostname : "unknown");
	hdr_add(k, "From", env->mail_from);
	for (size_t i = 0; i < env->nrcpts; i++)
		hdr_add(k, "Rcpt", env->rcpts[i]);
	hdr_add(k, "Queue-Id", env->queue_id);
	hdr_add(k, "MTA-Name", env->mta_name);
	hdr_add(k, "TLS-Version", env->tls_version);
	hdr_add(k, "TLS-Cipher", env->tls_cipher);
	if (cfg->rspamd_skip_auth)
		hdr_add(k, "Settings", "{\"groups_disabled\":[\"policies\"]}");
	if (env->auth_summary) {
		char score[32];
		snprintf(score, sizeof(score), "%.2f", env->auth_score);
		hdr_add(k, "X-Mxgate-Auth", env->auth_summary);
		hdr_add(k, "X-Mxgate-Auth-Score", score);
		/* the rule adds MXGATE_AUTH unless the score it reads is 0 */
		k->want_auth_symbol = cfg->rspamd_skip_auth && strtod(score, NULL) != 0;
	}
	k->timer = evtimer_new(c->base, timer_cb, k);
	if (!k->timer) {
		if (fd >= 0)
			close(fd);
		hdrs_clear(k);
		free(k->prefix);
		free(k);
		return -1;
	}
	struct timeval tv = {k->timeout, 0};
	evtimer_add(k->timer, &tv);
	k->prev = c->checks_tail;
	if (c->checks_tail)
		c->checks_tail->next = k;
	else
		c->checks = k;
	c->checks_tail = k;
	if (fd < 0)
		defer_result(k, "spool_read");
	else
		pump(c);
	return 0;
}

/* scan_rspamd_free - see scan.h. */
void scan_rspamd_free(struct scan_rspamd *c)
{
	if (!c)
		return;
	while (c->conns)
		conn_free(c->conns);
	while (c->checks)
		check_free(c->checks);
	if (c->reap)
		event_free(c->reap);
	free(c);
}
