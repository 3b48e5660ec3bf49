/*
 * policy-dns.c - the one DNS resolver of mxgate, on libunbound.
 *
 * Two libunbound contexts, configured once in policy_dns_new() and never
 * touched by ub_ctx_set_option() again (libunbound forbids reconfiguring a
 * finalized context, see DESIGN.md "Known traps"):
 *   - the loop context: ub_resolve_async(), its ub_fd() watched by a libevent
 *     event, ub_process() on the loop thread, so host/MX callbacks run on
 *     the loop thread.
 *   - the worker context: used by the policy workers.  A worker submits
 *     ub_resolve_async() and waits on a condition variable with the [dns]
 *     timeout; a small "pump" thread runs ub_process() for that context.
 *     Plain ub_resolve() has no deadline (a zone that never answers holds
 *     the thread for libunbound's whole retry schedule); this way a query
 *     ends after `timeout` seconds with TEMPFAIL and is cancelled.
 *   - the batch context: policy_dns_confirmed_names (the dashboard's and
 *     `reports inbound`'s reverse names of up to 500 report sources), on
 *     the same pump thread.  Its own context because a batch of lookups
 *     into reverse zones that never answer fills libunbound's 16 outgoing
 *     ports and marks the forwarder slow for its context: on the worker
 *     context that made every SPF/DKIM/DMARC lookup of the SMTP side time
 *     out for seconds after one dashboard view (red team finding).
 * All contexts run libunbound in threaded async mode (ub_ctx_async(1)).
 *
 * RFC 6761 names: libunbound answers "test." and "invalid." itself; we make
 * them transparent zones (see dns_configure for why not `nodefault`) and
 * allow querying 127.0.0.1 so loopback test servers work.
 * DNSSEC: with a trust anchor (policy-dns-anchor.c: by default the
 * installed root anchor, RFC 5011 auto-trust-anchor), answers carry
 * secure/bogus; bogus is a
 * status of its own (callers treat it as a temporary error, RFC 7208 / 6376
 * have no better word).
 *
 * Ownership: answers are owned by the caller (policy_dns_answer_free);
 * pending loop queries are owned by the resolver and dropped without their
 * callback by policy_dns_free().  Free the policy context (its workers)
 * before the resolver.
 * Diagnostics: configuration errors into err; per-query failures at debug.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <unbound.h>

#include "policy-internal.h"

#define DNS_T_A    1
#define DNS_T_PTR  12
#define DNS_T_MX   15
#define DNS_T_TXT  16
#define DNS_T_AAAA 28
#define DNS_T_TLSA 52

/* Slow-domain isolation (worker queries): every query in flight is listed
 * with its registered domain; a domain is slow while one of its queries has
 * been pending for DNS_SLOW_MS, and for 2 x timeout after one failed
 * temporarily after that long.  A
 * new query to a slow domain that already has slow_limit queries in flight
 * fails at once with TEMPFAIL instead of holding one more worker: a zone
 * that never answers can hold slow_limit workers, never all of them. */
#define DNS_SLOW_MS    500
#define DNS_SLOW_SLOTS 64
struct dns_inflight {
	char key[256];
	int64_t start_ms;
	struct dns_inflight *next;
};
struct dns_slow {
	char key[256];
	int64_t until_ms;
};

/* One loop-side request (host: A + AAAA; mx: MX). */
struct dns_req {
	struct policy_dns *d;
	struct dns_req *next, *prev;
	bool is_mx;
	bool is_ptr;  /* PTR: the answer is kept in mx */
	bool is_tlsa; /* TLSA: the answer is kept in mx */
	bool is_txt;  /* TXT: the answer is kept in mx */
	policy_dns_name_cb name_cb;
	policy_dns_tlsa_cb tlsa_cb;
	policy_dns_txt_cb txt_cb;
	int ids[2];
	bool pending[2];
	struct event *timer;
	char *name;
	int port;
	policy_dns_addrs_cb addrs_cb;
	policy_dns_mx_cb mx_cb;
	void *arg;
	/* collected */
	struct util_addr *addrs;
	size_t naddrs;
	enum policy_dns_status st[2];
	struct policy_dns_answer mx;
};

struct policy_dns {
	struct event_base *base;
	struct ub_ctx *loop_ctx;
	struct ub_ctx *work_ctx;
	struct ub_ctx *batch_ctx; /* policy_dns_confirmed_names only */
	struct event *ev;
	pthread_t pump;
	bool pump_started;
	int stop_pipe[2];
	bool validating;
	struct policy_dns_anchor anchor;
	int timeout_ms;
	struct dns_req *reqs;
	/* slow-domain isolation for the synchronous (worker) queries */
	pthread_mutex_t slow_mu;
	int slow_limit;                /* [dns] slow_domain_limit, 0 = off */
	struct dns_inflight *inflight; /* one per worker waiting on a query */
	struct dns_slow slow[DNS_SLOW_SLOTS];
};

/* dns_configure - apply the config to one fresh context. */
static int dns_configure(struct ub_ctx *ctx, const struct config *cfg,
                         const struct policy_dns_anchor *ta, char *err, size_t errlen)
{
	char buf[64];
	int rc;
	long cache = cfg->dns_cache_size > 0 ? cfg->dns_cache_size : 10000;

	/* RFC 6761 special names answered by libunbound itself unless told
	 * otherwise: forward them like any other name.  Measured with
	 * libunbound 1.17: "test. nodefault" through ub_ctx_set_option() still
	 * leaves the built-in static zone in place (every *.test name is
	 * NXDOMAIN without a query); "transparent" with no local data does
	 * what nodefault promises. */
	if ((rc = ub_ctx_set_option(ctx, "local-zone:", "test. transparent")) != 0 ||
	    (rc = ub_ctx_set_option(ctx, "local-zone:", "invalid. transparent")) != 0 ||
	    /* RFC 5737 documentation networks: their reverse zones are
	     * built-in empty zones too (RFC 6303); test clients use them. */
	    (rc = ub_ctx_set_option(ctx, "local-zone:", "2.0.192.in-addr.arpa. transparent")) !=
	        0 ||
	    (rc = ub_ctx_set_option(ctx, "local-zone:", "100.51.198.in-addr.arpa. transparent")) !=
	        0 ||
	    (rc = ub_ctx_set_option(ctx, "local-zone:", "113.0.203.in-addr.arpa. transparent")) !=
	        0 ||
	    (rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0)
		goto fail;
	snprintf(buf, sizeof(buf), "%ld", cache * 512);
	if ((rc = ub_ctx_set_option(ctx, "rrset-cache-size:", buf)) != 0)
		goto fail;
	snprintf(buf, sizeof(buf), "%ld", cache * 256);
	if ((rc = ub_ctx_set_option(ctx, "msg-cache-size:", buf)) != 0)
		goto fail;
	/* With forwarders, the forwarder answers everything: private and
	 * documentation reverse zones (RFC 1918, RFC 5737 TEST-NETs, which
	 * libunbound otherwise answers NXDOMAIN itself, RFC 6303) go to it
	 * too.  Full recursion keeps them local, so they never leak to the
	 * public root. */
	if (cfg->dns_forwarders.n > 0 &&
	    (rc = ub_ctx_set_option(ctx, "unblock-lan-zones:", "yes")) != 0)
		goto fail;
	for (size_t i = 0; i < cfg->dns_forwarders.n; i++) {
		if ((rc = ub_ctx_set_fwd(ctx, cfg->dns_forwarders.v[i])) != 0) {
			snprintf(err, errlen, "dns forwarder %s: %s", cfg->dns_forwarders.v[i],
			         ub_strerror(rc));
			return -1;
		}
	}
	/* RFC 5011: with an auto-trust-anchor file libunbound follows root
	 * KSK rollovers and rewrites the file (policy-dns-anchor.c) */
	if (ta->mode != POLICY_DNS_TA_NONE &&
	    (rc = ta->mode == POLICY_DNS_TA_AUTR ? ub_ctx_add_ta_autr(ctx, ta->path)
	                                         : ub_ctx_add_ta_file(ctx, ta->path)) != 0) {
		snprintf(err, errlen, "dns trust anchor %s: %s", ta->path, ub_strerror(rc));
		return -1;
	}
	if ((rc = ub_ctx_async(ctx, 1)) != 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "libunbound configuration: %s", ub_strerror(rc));
	return -1;
}

/* dns_pump - worker-context thread: deliver answers to waiting workers. */
static void *dns_pump(void *arg)
{
	struct policy_dns *d = arg;
	struct pollfd pfd[3] = {
	    {.fd = ub_fd(d->work_ctx), .events = POLLIN},
	    {.fd = d->stop_pipe[0], .events = POLLIN},
	    {.fd = ub_fd(d->batch_ctx), .events = POLLIN},
	};

	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			util_log_err("dns pump poll: %s", strerror(errno));
			return NULL;
		}
		if (pfd[1].revents != 0)
			return NULL;
		if (pfd[0].revents != 0)
			ub_process(d->work_ctx);
		if (pfd[2].revents != 0)
			ub_process(d->batch_ctx);
	}
}

/* dns_on_fd - loop thread: the loop context has answers. */
static void dns_on_fd(evutil_socket_t fd, short what, void *arg)
{
	struct policy_dns *d = arg;

	ub_process(d->loop_ctx);
}

/* policy_dns_new - two configured libunbound contexts, the pump thread, the fd event. */
struct policy_dns *policy_dns_new(const struct config *cfg, struct event_base *base, char *err,
                                  size_t errlen)
{
	struct policy_dns *d = util_xcalloc(1, sizeof(*d));

	d->base = base;
	d->stop_pipe[0] = d->stop_pipe[1] = -1;
	d->timeout_ms = (cfg->dns_timeout > 0 ? cfg->dns_timeout : 5) * 1000;
	d->slow_limit = cfg->dns_slow_domain_limit;
	pthread_mutex_init(&d->slow_mu, NULL);
	d->loop_ctx = ub_ctx_create();
	d->work_ctx = ub_ctx_create();
	d->batch_ctx = ub_ctx_create();
	if (d->loop_ctx == NULL || d->work_ctx == NULL || d->batch_ctx == NULL) {
		snprintf(err, errlen, "ub_ctx_create failed");
		goto err;
	}
	if (policy_dns_anchor_setup(cfg, &d->anchor, err, errlen) < 0)
		goto err;
	d->validating = d->anchor.mode != POLICY_DNS_TA_NONE;
	if (dns_configure(d->loop_ctx, cfg, &d->anchor, err, errlen) < 0 ||
	    dns_configure(d->work_ctx, cfg, &d->anchor, err, errlen) < 0 ||
	    dns_configure(d->batch_ctx, cfg, &d->anchor, err, errlen) < 0)
		goto err;
	if (pipe(d->stop_pipe) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto err;
	}
	if (pthread_create(&d->pump, NULL, dns_pump, d) != 0) {
		snprintf(err, errlen, "pthread_create failed");
		goto err;
	}
	d->pump_started = true;
	if (base != NULL) {
		d->ev = event_new(base, ub_fd(d->loop_ctx), EV_READ | EV_PERSIST, dns_on_fd, d);
		if (d->ev == NULL || event_add(d->ev, NULL) < 0) {
			snprintf(err, errlen, "cannot watch the resolver fd");
			goto err;
		}
	}
	return d;
err:
	policy_dns_free(d);
	return NULL;
}

/* dns_req_free - unlink and free one loop request (no callback). */
static void dns_req_free(struct dns_req *r)
{
	for (int i = 0; i < 2; i++)
		if (r->pending[i])
			ub_cancel(r->d->loop_ctx, r->ids[i]);
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		r->d->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	if (r->timer != NULL)
		event_free(r->timer);
	policy_dns_answer_free(&r->mx);
	free(r->addrs);
	free(r->name);
	free(r);
}

/* policy_dns_free - drop pending queries (no callbacks), stop the pump, delete contexts. */
void policy_dns_free(struct policy_dns *d)
{
	if (d == NULL)
		return;
	while (d->reqs != NULL)
		dns_req_free(d->reqs);
	if (d->ev != NULL)
		event_free(d->ev);
	if (d->pump_started) {
		ssize_t w = write(d->stop_pipe[1], "x", 1);
		(void)w;
		pthread_join(d->pump, NULL);
	}
	if (d->stop_pipe[0] >= 0)
		close(d->stop_pipe[0]);
	if (d->stop_pipe[1] >= 0)
		close(d->stop_pipe[1]);
	if (d->loop_ctx != NULL)
		ub_ctx_delete(d->loop_ctx);
	if (d->work_ctx != NULL)
		ub_ctx_delete(d->work_ctx);
	if (d->batch_ctx != NULL)
		ub_ctx_delete(d->batch_ctx);
	pthread_mutex_destroy(&d->slow_mu);
	policy_dns_anchor_clear(&d->anchor);
	free(d);
}

/* policy_dns_is_validating - a trust anchor is in use. */
bool policy_dns_is_validating(const struct policy_dns *d)
{
	return d->validating;
}

/* policy_dns_dnssec_status - the trust anchor decision, one line. */
const char *policy_dns_dnssec_status(const struct policy_dns *d)
{
	return d->anchor.desc != NULL ? d->anchor.desc : "off";
}

/* policy_dns_status_str - status name for logs. */
const char *policy_dns_status_str(enum policy_dns_status st)
{
	switch (st) {
	case POLICY_DNS_OK:
		return "ok";
	case POLICY_DNS_NXDOMAIN:
		return "nxdomain";
	case POLICY_DNS_NODATA:
		return "nodata";
	case POLICY_DNS_TEMPFAIL:
		return "tempfail";
	case POLICY_DNS_BOGUS:
		return "bogus";
	}
	return "?";
}

/* dns_fill - ub_result into an answer (status, secure, copied rdata). */
static void dns_fill(struct policy_dns_answer *ans, int err, const struct ub_result *res)
{
	memset(ans, 0, sizeof(*ans));
	if (err != 0 || res == NULL) {
		ans->status = POLICY_DNS_TEMPFAIL;
		return;
	}
	ans->secure = res->secure != 0;
	ans->ttl = res->ttl;
	if (res->bogus)
		ans->status = POLICY_DNS_BOGUS;
	else if (res->rcode == 3)
		ans->status = POLICY_DNS_NXDOMAIN;
	else if (res->rcode != 0) {
		ans->status = POLICY_DNS_TEMPFAIL;
		ans->servfail = res->rcode == 2;
	} else if (!res->havedata)
		ans->status = POLICY_DNS_NODATA;
	else
		ans->status = POLICY_DNS_OK;
	if (ans->status != POLICY_DNS_OK)
		return;
	while (res->data[ans->n] != NULL)
		ans->n++;
	ans->data = util_xcalloc(ans->n, sizeof(*ans->data));
	ans->len = util_xcalloc(ans->n, sizeof(*ans->len));
	for (size_t i = 0; i < ans->n; i++) {
		ans->len[i] = (size_t)res->len[i];
		ans->data[i] = util_xmalloc(ans->len[i] + 1);
		memcpy(ans->data[i], res->data[i], ans->len[i]);
		ans->data[i][ans->len[i]] = 0;
	}
}

/* policy_dns_answer_free - free the copied rdata and reset. */
void policy_dns_answer_free(struct policy_dns_answer *ans)
{
	if (ans == NULL)
		return;
	for (size_t i = 0; i < ans->n; i++)
		free(ans->data[i]);
	free(ans->data);
	free(ans->len);
	memset(ans, 0, sizeof(*ans));
}

/* ------------------------------------------------------------ synchronous */

struct dns_syncq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int err;
	struct ub_result *res;
};

/* dns_sync_cb - pump thread: hand the answer to the waiting worker. */
static void dns_sync_cb(void *arg, int err, struct ub_result *res)
{
	struct dns_syncq *q = arg;

	pthread_mutex_lock(&q->mu);
	q->err = err;
	q->res = res;
	q->done = true;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* dns_slow_enter - worker: account a query to name's registered domain in
 * q; false (nothing accounted) when that domain is slow and already has
 * slow_limit queries in flight. */
static bool dns_slow_enter(struct policy_dns *d, const char *name, struct dns_inflight *q)
{
	int64_t now = util_mono_ms();
	int64_t slow_ms = d->timeout_ms / 2 < DNS_SLOW_MS ? d->timeout_ms / 2 : DNS_SLOW_MS;
	int n = 0;
	bool slow = false;

	policy_org_domain(name, q->key, sizeof(q->key));
	q->start_ms = now;
	pthread_mutex_lock(&d->slow_mu);
	for (struct dns_inflight *i = d->inflight; i != NULL; i = i->next)
		if (strcmp(i->key, q->key) == 0) {
			n++;
			if (now - i->start_ms >= slow_ms)
				slow = true;
		}
	for (int k = 0; k < DNS_SLOW_SLOTS && !slow; k++)
		if (d->slow[k].until_ms > now && strcmp(d->slow[k].key, q->key) == 0)
			slow = true;
	if (d->slow_limit > 0 && slow && n >= d->slow_limit) {
		pthread_mutex_unlock(&d->slow_mu);
		return false;
	}
	q->next = d->inflight;
	d->inflight = q;
	pthread_mutex_unlock(&d->slow_mu);
	return true;
}

/* dns_slow_leave - worker: the query of q is over; a temporary failure
 * (our timeout, or a forwarder in front answering SERVFAIL after its own)
 * that took as long as "slow" marks its domain slow for 2 x timeout (the
 * oldest mark makes room). */
static void dns_slow_leave(struct policy_dns *d, struct dns_inflight *q, bool failed)
{
	int64_t slow_ms = d->timeout_ms / 2 < DNS_SLOW_MS ? d->timeout_ms / 2 : DNS_SLOW_MS;

	pthread_mutex_lock(&d->slow_mu);
	for (struct dns_inflight **ip = &d->inflight; *ip != NULL; ip = &(*ip)->next)
		if (*ip == q) {
			*ip = q->next;
			break;
		}
	if (failed && util_mono_ms() - q->start_ms >= slow_ms) {
		int64_t now = util_mono_ms();
		int k, oldest = 0;

		for (k = 0; k < DNS_SLOW_SLOTS; k++) {
			if (strcmp(d->slow[k].key, q->key) == 0)
				break;
			if (d->slow[k].until_ms < d->slow[oldest].until_ms)
				oldest = k;
		}
		if (k == DNS_SLOW_SLOTS)
			k = oldest;
		snprintf(d->slow[k].key, sizeof(d->slow[k].key), "%s", q->key);
		d->slow[k].until_ms = now + 2 * (int64_t)d->timeout_ms;
	}
	pthread_mutex_unlock(&d->slow_mu);
}

/* policy_dns_name_ok - labels of 1..63 octets, at most 253 in all (RFC 1035
 * 2.3.4); a final dot is allowed. */
bool policy_dns_name_ok(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || name[i] == '.') {
			if (label == 0 || label > 63)
				return false;
			label = 0;
		} else {
			label++;
		}
	}
	return true;
}

/* policy_dns_query_sync - worker: one query bounded by the [dns] timeout. */
void policy_dns_query_sync(struct policy_dns *d, const char *name, int rrtype,
                           struct policy_dns_answer *ans)
{
	struct dns_syncq q = {.done = false};
	struct dns_inflight fl;
	pthread_condattr_t ca;
	struct timespec until;
	int id = 0, rc;

	memset(ans, 0, sizeof(*ans));
	if (!dns_slow_enter(d, name, &fl)) {
		util_log_debug("dns query=%s type=%d refused domain=%s reason=slow", name, rrtype,
		               fl.key);
		util_metrics_inc("mxgate_dns_slow_refused_total", NULL);
		ans->status = POLICY_DNS_TEMPFAIL;
		return;
	}
	pthread_mutex_init(&q.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q.cv, &ca);
	pthread_condattr_destroy(&ca);

	rc = ub_resolve_async(d->work_ctx, name, rrtype, 1, &q, dns_sync_cb, &id);
	if (rc != 0) {
		util_log_debug("dns query=%s type=%d error=\"%s\"", name, rrtype, ub_strerror(rc));
		ans->status = POLICY_DNS_TEMPFAIL;
		goto out;
	}
	util_mono_deadline(NULL, d->timeout_ms, &until);
	pthread_mutex_lock(&q.mu);
	while (!q.done) {
		if (pthread_cond_timedwait(&q.cv, &q.mu, &until) == ETIMEDOUT && !q.done) {
			/* Cancelled: the callback will not run.  UB_NOID: the
			 * answer is being delivered right now; wait for it. */
			if (ub_cancel(d->work_ctx, id) == 0) {
				pthread_mutex_unlock(&q.mu);
				util_log_debug("dns query=%s type=%d timeout", name, rrtype);
				ans->status = POLICY_DNS_TEMPFAIL;
				goto out;
			}
			while (!q.done)
				pthread_cond_wait(&q.cv, &q.mu);
		}
	}
	pthread_mutex_unlock(&q.mu);
	dns_fill(ans, q.err, q.res);
	ub_resolve_free(q.res);
	util_log_debug("dns query=%s type=%d status=%s n=%zu secure=%d", name, rrtype,
	               policy_dns_status_str(ans->status), ans->n, ans->secure);
out:
	dns_slow_leave(d, &fl, ans->status == POLICY_DNS_TEMPFAIL);
	pthread_cond_destroy(&q.cv);
	pthread_mutex_destroy(&q.mu);
}

/* policy_dns_txt_sync - worker: TXT records, character-strings joined per record. */
enum policy_dns_status policy_dns_txt_sync(struct policy_dns *d, const char *name,
                                           struct util_strlist *out, bool *secure)
{
	struct policy_dns_answer ans;
	enum policy_dns_status st;

	policy_dns_query_sync(d, name, DNS_T_TXT, &ans);
	st = ans.status;
	if (secure != NULL)
		*secure = ans.secure;
	for (size_t i = 0; i < ans.n; i++) {
		/* RFC 1035 3.3.14 / RFC 7208 3.3: the character-strings of one
		 * record are concatenated without separator. */
		struct util_buf b;
		size_t pos = 0;

		util_buf_init(&b);
		util_buf_adds(&b, "");
		while (pos < ans.len[i]) {
			size_t l = ans.data[i][pos++];
			if (pos + l > ans.len[i])
				l = ans.len[i] - pos;
			util_buf_add(&b, ans.data[i] + pos, l);
			pos += l;
		}
		util_strlist_add(out, b.data);
		util_buf_free(&b);
	}
	policy_dns_answer_free(&ans);
	return st;
}

/* ------------------------------------------------------------ asynchronous */

/* policy_dns_name_from_wire - uncompressed wire name at p into text ("" =
 * the root); -1 on a bad label, a missing terminator or no room.  Only host
 * names of LDH labels are accepted (util_is_ldh_name): a label may hold any
 * octet, and PTR and MX names end up in Received:, in SPF's %{p} and in log
 * lines, where CR, LF, spaces or parentheses would forge header fields or
 * log keys.  Anything else counts as no answer. */
int policy_dns_name_from_wire(const unsigned char *p, size_t len, char *out, size_t outlen)
{
	size_t pos = 0, o = 0;

	while (pos < len && p[pos] != 0) {
		size_t l = p[pos++];
		if (l > 63 || pos + l > len || o + l + 2 > outlen)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < l; i++) {
			unsigned char c = p[pos + i]; /* a '.' inside a label, too */
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-'))
				return -1;
		}
		memcpy(out + o, p + pos, l);
		o += l;
		pos += l;
	}
	out[o] = 0;
	if (pos >= len || (o > 0 && !util_is_ldh_name(out))) /* length */
		return -1;
	return 0;
}

/* dns_req_finish - both halves answered (or timed out): run the callback. */
static void dns_req_finish(struct dns_req *r, bool timed_out)
{
	if (r->is_ptr) {
		enum policy_dns_status st = timed_out ? POLICY_DNS_TEMPFAIL : r->mx.status;
		char name[256];
		if (st == POLICY_DNS_OK &&
		    (r->mx.n == 0 ||
		     policy_dns_name_from_wire(r->mx.data[0], r->mx.len[0], name, sizeof(name)) < 0 ||
		     !name[0]))
			st = POLICY_DNS_NODATA;
		r->name_cb(r->arg, st, st == POLICY_DNS_OK ? name : NULL);
		dns_req_free(r);
		return;
	}
	if (r->is_txt) {
		enum policy_dns_status st = timed_out ? POLICY_DNS_TEMPFAIL : r->mx.status;
		char **t = util_xcalloc(r->mx.n + 1, sizeof(*t));
		size_t n = 0;
		for (size_t i = 0; st == POLICY_DNS_OK && i < r->mx.n; i++) {
			/* character-strings: length byte + bytes, joined */
			const unsigned char *d = r->mx.data[i];
			size_t len = r->mx.len[i], o = 0, k = 0;
			t[n] = util_xmalloc(len + 1);
			while (o < len) {
				size_t sl = d[o++];
				if (sl > len - o)
					sl = len - o;
				memcpy(t[n] + k, d + o, sl);
				k += sl;
				o += sl;
			}
			t[n][k] = '\0';
			if (memchr(t[n], '\0', k) != NULL)
				free(t[n]); /* embedded NUL: not a text we can use */
			else
				n++;
		}
		r->txt_cb(r->arg, st, (const char *const *)t, n);
		for (size_t i = 0; i < n; i++)
			free(t[i]);
		free(t);
		dns_req_free(r);
		return;
	}
	if (r->is_tlsa) {
		enum policy_dns_status st = timed_out ? POLICY_DNS_TEMPFAIL : r->mx.status;
		struct policy_tlsa *t = util_xcalloc(r->mx.n + 1, sizeof(*t));
		size_t n = 0;
		for (size_t i = 0; st == POLICY_DNS_OK && i < r->mx.n; i++) {
			if (r->mx.len[i] < 4) /* usage, selector, matching type, data */
				continue;
			t[n].usage = r->mx.data[i][0];
			t[n].selector = r->mx.data[i][1];
			t[n].mtype = r->mx.data[i][2];
			t[n].data = r->mx.data[i] + 3;
			t[n].len = r->mx.len[i] - 3;
			n++;
		}
		r->tlsa_cb(r->arg, st, !timed_out && r->mx.secure, t, n);
		free(t);
		dns_req_free(r);
		return;
	}
	if (r->is_mx) {
		enum policy_dns_status st = timed_out ? POLICY_DNS_TEMPFAIL : r->mx.status;
		bool secure = !timed_out && r->mx.secure;
		struct {
			int pref;
			char host[256];
		} *mx = NULL;
		const char **hosts = NULL;
		size_t n = 0;

		if (st == POLICY_DNS_NODATA) {
			/* RFC 5321 5.1: no MX -> the domain itself. */
			const char *self = r->name;
			r->mx_cb(r->arg, POLICY_DNS_OK, secure, &self, 1);
			dns_req_free(r);
			return;
		}
		if (st == POLICY_DNS_OK) {
			size_t nnull = 0, nbad = 0;
			mx = util_xcalloc(r->mx.n + 1, sizeof(*mx));
			hosts = util_xcalloc(r->mx.n + 1, sizeof(*hosts));
			for (size_t i = 0; i < r->mx.n; i++) {
				if (r->mx.len[i] < 3 ||
				    policy_dns_name_from_wire(r->mx.data[i] + 2, r->mx.len[i] - 2,
				                       mx[n].host, sizeof(mx[n].host)) < 0) {
					nbad++;
					continue;
				}
				if (mx[n].host[0] == 0) {
					nnull++; /* "." names no host */
					continue;
				}
				mx[n].pref = (r->mx.data[i][0] << 8) | r->mx.data[i][1];
				n++;
			}
			/* insertion sort by preference (a handful of records) */
			for (size_t i = 1; i < n; i++)
				for (size_t j = i; j > 0 && mx[j].pref < mx[j - 1].pref; j--) {
					__typeof__(*mx) t = mx[j];
					mx[j] = mx[j - 1];
					mx[j - 1] = t;
				}
			for (size_t i = 0; i < n; i++)
				hosts[i] = mx[i].host;
			/* RFC 7505 3: "." as the only MX means no mail service
			 * (NODATA: a permanent routing fact).  A "." next to real
			 * MX hosts (which RFC 7505 forbids) is skipped.  MX
			 * records of which none names a usable host (not LDH,
			 * truncated) are broken DNS data at the destination, not
			 * a statement that it takes no mail: OK with n == 0,
			 * which the deliverer defers (Postfix: "malformed or
			 * unexpected name server reply"). */
			if (n == 0 && nnull > 0 && nbad == 0)
				st = POLICY_DNS_NODATA;
		}
		r->mx_cb(r->arg, st, secure, st == POLICY_DNS_OK ? hosts : NULL,
		         st == POLICY_DNS_OK ? n : 0);
		free(mx);
		free(hosts);
	} else {
		enum policy_dns_status st;
		if (r->naddrs > 0)
			st = POLICY_DNS_OK;
		else if (timed_out || r->st[0] == POLICY_DNS_TEMPFAIL ||
		         r->st[1] == POLICY_DNS_TEMPFAIL)
			st = POLICY_DNS_TEMPFAIL;
		else if (r->st[0] == POLICY_DNS_BOGUS || r->st[1] == POLICY_DNS_BOGUS)
			st = POLICY_DNS_BOGUS;
		else if (r->st[0] == POLICY_DNS_NXDOMAIN)
			st = POLICY_DNS_NXDOMAIN;
		else
			st = POLICY_DNS_NODATA;
		r->addrs_cb(r->arg, st, r->addrs, r->naddrs);
	}
	dns_req_free(r);
}

/* dns_async_cb - loop thread (inside ub_process): one half answered. */
static void dns_async_cb(void *arg, int err, struct ub_result *res, int half)
{
	struct dns_req *r = arg;
	struct policy_dns_answer ans;

	r->pending[half] = false;
	dns_fill(&ans, err, res);
	ub_resolve_free(res);
	r->st[half] = ans.status;
	if (r->is_mx || r->is_ptr || r->is_tlsa || r->is_txt) {
		r->mx = ans;
	} else {
		for (size_t i = 0; i < ans.n; i++) {
			struct util_addr a;
			memset(&a, 0, sizeof(a));
			if (half == 0 && ans.len[i] == 4) {
				struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
				sin->sin_family = AF_INET;
				sin->sin_port = htons((uint16_t)r->port);
				memcpy(&sin->sin_addr, ans.data[i], 4);
				a.len = sizeof(*sin);
			} else if (half == 1 && ans.len[i] == 16) {
				struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons((uint16_t)r->port);
				memcpy(&sin6->sin6_addr, ans.data[i], 16);
				a.len = sizeof(*sin6);
			} else {
				continue;
			}
			r->addrs = util_xrealloc(r->addrs, (r->naddrs + 1) * sizeof(*r->addrs));
			r->addrs[r->naddrs++] = a;
		}
		policy_dns_answer_free(&ans);
	}
	if (!r->pending[0] && !r->pending[1])
		dns_req_finish(r, false);
}

/* dns_cb0 / dns_cb1 - first (A or MX) and second (AAAA) half. */
static void dns_cb0(void *arg, int err, struct ub_result *res)
{
	dns_async_cb(arg, err, res, 0);
}

/* dns_cb1 - the AAAA half. */
static void dns_cb1(void *arg, int err, struct ub_result *res)
{
	dns_async_cb(arg, err, res, 1);
}

/* dns_on_timeout - loop thread: the request took longer than [dns] timeout. */
static void dns_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dns_req *r = arg;

	for (int i = 0; i < 2; i++)
		if (r->pending[i]) {
			ub_cancel(r->d->loop_ctx, r->ids[i]);
			r->pending[i] = false;
		}
	dns_req_finish(r, true);
}

/* dns_on_immediate - loop thread: answer known without a query. */
static void dns_on_immediate(evutil_socket_t fd, short what, void *arg)
{
	dns_req_finish(arg, false);
}

/* dns_req_new - allocate, link, arm the timeout. */
static struct dns_req *dns_req_new(struct policy_dns *d, const char *name, int port, void *arg)
{
	struct dns_req *r = util_xcalloc(1, sizeof(*r));
	struct timeval tv = {d->timeout_ms / 1000, (d->timeout_ms % 1000) * 1000};

	r->d = d;
	r->name = util_xstrdup(name);
	r->port = port;
	r->arg = arg;
	r->next = d->reqs;
	if (d->reqs != NULL)
		d->reqs->prev = r;
	d->reqs = r;
	r->timer = evtimer_new(d->base, dns_on_timeout, r);
	evtimer_add(r->timer, &tv);
	return r;
}

/* dns_req_immediate - finish r from the loop soon (never inside the call). */
static void dns_req_immediate(struct dns_req *r)
{
	struct timeval tv = {0, 0};

	event_free(r->timer);
	r->timer = evtimer_new(r->d->base, dns_on_immediate, r);
	evtimer_add(r->timer, &tv);
}

/* policy_dns_resolve_host - loop: A + AAAA of name (numeric names answered directly). */
void policy_dns_resolve_host(struct policy_dns *d, const char *name, int port,
                             policy_dns_addrs_cb cb, void *arg)
{
	struct dns_req *r = dns_req_new(d, name, port, arg);
	struct util_addr a;

	r->addrs_cb = cb;
	if (util_addr_parse_numeric(name, port, &a) == 0) {
		r->addrs = util_xmalloc(sizeof(a));
		r->addrs[0] = a;
		r->naddrs = 1;
		dns_req_immediate(r);
		return;
	}
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_A, 1, r, dns_cb0, &r->ids[0]) == 0;
	r->pending[1] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_AAAA, 1, r, dns_cb1, &r->ids[1]) == 0;
	if (!r->pending[0])
		r->st[0] = POLICY_DNS_TEMPFAIL;
	if (!r->pending[1])
		r->st[1] = POLICY_DNS_TEMPFAIL;
	if (!r->pending[0] && !r->pending[1])
		dns_req_immediate(r);
}

/* policy_dns_resolve_a - loop: A records only (DNSBL queries: RFC 5782
 * listings are A records; no AAAA, no numeric shortcut). */
void policy_dns_resolve_a(struct policy_dns *d, const char *name, policy_dns_addrs_cb cb, void *arg)
{
	struct dns_req *r = dns_req_new(d, name, 0, arg);

	r->addrs_cb = cb;
	r->st[1] = POLICY_DNS_NODATA;
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_A, 1, r, dns_cb0, &r->ids[0]) == 0;
	if (!r->pending[0]) {
		r->st[0] = POLICY_DNS_TEMPFAIL;
		dns_req_immediate(r);
	}
}

/* policy_dns_resolve_mx - loop: MX hosts by preference, implicit and null MX. */
void policy_dns_resolve_mx(struct policy_dns *d, const char *domain, policy_dns_mx_cb cb, void *arg)
{
	struct dns_req *r = dns_req_new(d, domain, 25, arg);

	r->is_mx = true;
	r->mx_cb = cb;
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, domain, DNS_T_MX, 1, r, dns_cb0, &r->ids[0]) == 0;
	if (!r->pending[0]) {
		r->mx.status = POLICY_DNS_TEMPFAIL;
		dns_req_immediate(r);
	}
}

/* policy_dns_resolve_tlsa - loop: TLSA records of _port._tcp.host. */
void policy_dns_resolve_tlsa(struct policy_dns *d, const char *host, int port,
                             policy_dns_tlsa_cb cb, void *arg)
{
	char name[300];

	snprintf(name, sizeof(name), "_%d._tcp.%s", port, host);
	struct dns_req *r = dns_req_new(d, name, port, arg);
	r->is_tlsa = true;
	r->tlsa_cb = cb;
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_TLSA, 1, r, dns_cb0, &r->ids[0]) == 0;
	if (!r->pending[0]) {
		r->mx.status = POLICY_DNS_TEMPFAIL;
		dns_req_immediate(r);
	}
}

/* policy_dns_resolve_txt - loop: TXT records of name. */
void policy_dns_resolve_txt(struct policy_dns *d, const char *name, policy_dns_txt_cb cb,
                            void *arg)
{
	struct dns_req *r = dns_req_new(d, name, 0, arg);
	r->is_txt = true;
	r->txt_cb = cb;
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_TXT, 1, r, dns_cb0, &r->ids[0]) == 0;
	if (!r->pending[0]) {
		r->mx.status = POLICY_DNS_TEMPFAIL;
		dns_req_immediate(r);
	}
}

/* dns_reverse_name - the in-addr.arpa / ip6.arpa name of a. */
static void dns_reverse_name(const struct util_addr *a, char name[80])
{
	size_t o = 0;

	if (a->ss.ss_family == AF_INET) {
		const unsigned char *b =
		    (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
		snprintf(name, 80, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
	} else {
		const unsigned char *b =
		    (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
		static const char hex[] = "0123456789abcdef";
		for (int i = 15; i >= 0; i--) {
			name[o++] = hex[b[i] & 15];
			name[o++] = '.';
			name[o++] = hex[b[i] >> 4];
			name[o++] = '.';
		}
		snprintf(name + o, 80 - o, "ip6.arpa");
	}
}

/* policy_dns_resolve_ptr - loop: the first PTR name of an address (the
 * caller forward-confirms it with policy_dns_resolve_host). */
void policy_dns_resolve_ptr(struct policy_dns *d, const struct util_addr *a, policy_dns_name_cb cb,
                            void *arg)
{
	char name[80];

	dns_reverse_name(a, name);
	struct dns_req *r = dns_req_new(d, name, 0, arg);
	r->is_ptr = true;
	r->name_cb = cb;
	r->pending[0] =
	    ub_resolve_async(d->loop_ctx, name, DNS_T_PTR, 1, r, dns_cb0, &r->ids[0]) == 0;
	if (!r->pending[0]) {
		r->mx.status = POLICY_DNS_TEMPFAIL;
		dns_req_immediate(r);
	}
}

/* ------------------------------------------------------------ batch FCrDNS */

struct dns_batch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t pending;
};
struct dns_bq {
	struct dns_batch *b;
	int id;
	bool sent, done;
	int err;
	struct ub_result *res;
};

/* dns_batch_cb - pump thread: one answer of a batch. */
static void dns_batch_cb(void *arg, int err, struct ub_result *res)
{
	struct dns_bq *q = arg;

	pthread_mutex_lock(&q->b->mu);
	q->err = err;
	q->res = res;
	q->done = true;
	q->b->pending--;
	pthread_cond_signal(&q->b->cv);
	pthread_mutex_unlock(&q->b->mu);
}

/* dns_batch_run - send names[i] (NULL: skip) of rrtype[i] at once on the
 * batch context (never the workers': see the file comment) and wait until all are answered or until (CLOCK_MONOTONIC);
 * what is still pending then is cancelled (its q[i].done stays false). */
static void dns_batch_run(struct policy_dns *d, char *const *names, const int *rrtype, size_t n,
                          struct dns_bq *q, const struct timespec *until)
{
	struct dns_batch b = {.pending = 0};
	pthread_condattr_t ca;

	pthread_mutex_init(&b.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b.cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&b.mu);
	for (size_t i = 0; i < n; i++) {
		memset(&q[i], 0, sizeof(q[i]));
		q[i].b = &b;
		if (names[i] == NULL)
			continue;
		b.pending++;
		if (ub_resolve_async(d->batch_ctx, names[i], rrtype[i], 1, &q[i], dns_batch_cb,
		                     &q[i].id) != 0)
			b.pending--;
		else
			q[i].sent = true;
	}
	while (b.pending > 0)
		if (pthread_cond_timedwait(&b.cv, &b.mu, until) == ETIMEDOUT)
			break;
	for (size_t i = 0; i < n; i++) {
		if (!q[i].sent || q[i].done)
			continue;
		/* Cancelled: its callback will not run.  UB_NOID: the answer
		 * is being delivered right now; wait for it. */
		if (ub_cancel(d->batch_ctx, q[i].id) != 0)
			while (!q[i].done)
				pthread_cond_wait(&b.cv, &b.mu);
	}
	pthread_mutex_unlock(&b.mu);
	pthread_cond_destroy(&b.cv);
	pthread_mutex_destroy(&b.mu);
}

/* policy_dns_confirmed_names - see policy.h. */
void policy_dns_confirmed_names(struct policy_dns *d, const char *const *ips, size_t n,
                                int budget_ms, char **names)
{
	struct util_addr *addr = util_xcalloc(n ? n : 1, sizeof(*addr));
	char **qname = util_xcalloc(n ? n : 1, sizeof(*qname));
	int *rrtype = util_xcalloc(n ? n : 1, sizeof(*rrtype));
	struct dns_bq *q = util_xcalloc(n ? n : 1, sizeof(*q));
	struct timespec now, half, until;

	clock_gettime(CLOCK_MONOTONIC, &now);
	util_mono_deadline(&now, budget_ms / 2, &half);
	util_mono_deadline(&now, budget_ms, &until);
	for (size_t i = 0; i < n; i++) {
		char rev[80];

		names[i] = NULL;
		if (ips[i] == NULL || util_addr_parse_numeric(ips[i], 0, &addr[i]) < 0)
			continue;
		dns_reverse_name(&addr[i], rev);
		qname[i] = util_xstrdup(rev);
		rrtype[i] = DNS_T_PTR;
	}
	/* Round one: the first PTR name of each address (LDH names only),
	 * within half the budget: one reverse zone that never answers must
	 * not use up the time of every confirmation (it did: no name at all). */
	dns_batch_run(d, qname, rrtype, n, q, &half);
	for (size_t i = 0; i < n; i++) {
		char host[256];
		struct policy_dns_answer ans;

		free(qname[i]);
		qname[i] = NULL;
		if (!q[i].done)
			continue;
		dns_fill(&ans, q[i].err, q[i].res);
		ub_resolve_free(q[i].res);
		if (ans.status == POLICY_DNS_OK && ans.n > 0 &&
		    policy_dns_name_from_wire((const unsigned char *)ans.data[0], ans.len[0], host,
		                              sizeof(host)) == 0 &&
		    host[0] != 0) {
			qname[i] = util_xstrdup(host);
			rrtype[i] = addr[i].ss.ss_family == AF_INET ? DNS_T_A : DNS_T_AAAA;
		}
		policy_dns_answer_free(&ans);
	}
	/* Round two: the name must resolve back to the address (FCrDNS). */
	dns_batch_run(d, qname, rrtype, n, q, &until);
	for (size_t i = 0; i < n; i++) {
		struct policy_dns_answer ans;
		bool ok = false;

		if (qname[i] == NULL || !q[i].done) {
			free(qname[i]);
			continue;
		}
		dns_fill(&ans, q[i].err, q[i].res);
		ub_resolve_free(q[i].res);
		for (size_t k = 0; ans.status == POLICY_DNS_OK && k < ans.n && !ok; k++) {
			if (addr[i].ss.ss_family == AF_INET)
				ok = ans.len[k] == 4 &&
				     memcmp(ans.data[k],
				            &((const struct sockaddr_in *)&addr[i].ss)->sin_addr, 4) == 0;
			else
				ok = ans.len[k] == 16 &&
				     memcmp(ans.data[k],
				            &((const struct sockaddr_in6 *)&addr[i].ss)->sin6_addr,
				            16) == 0;
		}
		policy_dns_answer_free(&ans);
		if (ok)
			names[i] = qname[i];
		else
			free(qname[i]);
	}
	free(q);
	free(rrtype);
	free(qname);
	free(addr);
}
