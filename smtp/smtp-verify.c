/*
 * smtp-verify.c - recipient verification at RCPT time (issue 11): an SMTP
 * callout to the route's hosts, like Postfix's reject_unverified_recipient.
 * A probe is one connection: greeting, EHLO, STARTTLS per the route's tls
 * setting (and AUTH when the route has it), MAIL FROM:<>, RCPT TO:<addr>,
 * QUIT - through the same client as delivery (smtp-client.c, probe mode:
 * never DATA).  2xx means the recipient exists, 5xx that it does not; both
 * are cached (smtp-verify-cache.c: positive_ttl, negative_ttl).  Anything
 * else - no host reachable, a 4xx, the [verify] timeout - is UNAVAILABLE
 * and never cached: the RCPT then gets the configured answer (451 4.4.3 by
 * default; never a silent accept).
 *
 * On the loop, never blocking: names resolve through the project resolver,
 * one deadline bounds the whole probe (all hosts), concurrent RCPTs for one
 * address share one probe, and at most [verify] max_probes run at once.
 *
 * Ownership: the verifier owns its probes, their clients (until handed to
 * smtp_client_quit, then kept in `quitting` until CLOSED), its TLS contexts
 * and the cache.  A probe copies what it needs of the route, so a reload
 * may free the config it started with.  Waiting sessions are known by id
 * only (STYLE rule 12): one that is gone is simply not told.
 *
 * Diagnostics: one line per probe,
 *   "verify rcpt=<a@b> result=unknown relay=h[192.0.2.1]:25 tls=TLSv1.3 ...
 *    waiters=2 reply=(550 5.1.1 no such user)"
 * and the counter mxgate_recipient_verify_total{result}.
 */
#include "smtp-verify-internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "smtp-client-internal.h"
#include "util.h"

struct verify_probe;

/* One TLS client context per (tls policy, CA file): loading the system
 * store per probe would cost milliseconds each time. */
struct verify_tls {
	enum config_tls_policy tls;
	char *ca_file; /* NULL = system store */
	SSL_CTX *ctx;  /* NULL when it could not be made */
	struct verify_tls *next;
};

struct smtp_verifier {
	struct event_base *base;
	const struct config *cfg; /* borrowed; the newest */
	struct policy_dns *dns;   /* borrowed; may be NULL */
	smtp_verify_cb cb;
	void *cb_arg;
	struct smtp_verify_cache *cache;
	struct verify_probe *probes; /* running */
	size_t nprobes;
	struct smtp_client **quitting; /* after the probe: QUIT in progress */
	size_t nquitting;
	struct verify_tls *tls;
};

struct verify_probe {
	struct smtp_verifier *v;
	char addr[SMTP_VERIFY_ADDR_MAX + 1];
	uint64_t *waiters; /* session ids */
	size_t nwaiters;
	/* what the probe needs of the route (copied) */
	char *route;
	struct config_host *hosts;
	size_t nhosts;
	enum config_tls_policy tls;
	SSL_CTX *ssl_ctx; /* borrowed from v->tls */
	char *auth_user, *auth_password;
	int connect_timeout, command_timeout;
	/* where it is */
	size_t host;             /* next host to resolve */
	struct util_addr *addrs; /* addresses of the hosts so far */
	char **names;
	size_t naddrs, next_addr;
	bool dns_pending;
	bool abandoned;      /* timed out while the resolver held it: the
	                        waiters were told, the answer frees it */
	struct event *start; /* the first step runs from the loop, so no
	                        waiter is ever told inside the lookup */
	struct smtp_client *cl;
	struct queue_envelope *env; /* sender <>, one recipient */
	struct smtp_client_tx tx;
	bool tx_started;
	struct event *deadline;
	char *last_error;
	char client[64]; /* who started it (per-client share) */
	struct verify_probe *next;
};

static void probe_try_next(struct verify_probe *p);

/* ------------------------------------------------------------ helpers */

/* verify_now - seconds since the epoch (cache expiry is wall-clock: it
 * must mean the same after a restart). */
static int64_t verify_now(void)
{
	return util_now_us() / 1000000;
}

/* verify_ssl_ctx - the shared context for a route's TLS settings. */
static SSL_CTX *verify_ssl_ctx(struct smtp_verifier *v, const struct config_route *r)
{
	struct verify_tls *t;

	if (r->tls == CONFIG_TLS_NONE)
		return NULL;
	for (t = v->tls; t != NULL; t = t->next) {
		if (t->tls == r->tls &&
		    ((t->ca_file == NULL && r->ca_file == NULL) ||
		     (t->ca_file && r->ca_file && !strcmp(t->ca_file, r->ca_file))))
			return t->ctx;
	}
	t = util_xcalloc(1, sizeof(*t));
	t->tls = r->tls;
	t->ca_file = r->ca_file ? util_xstrdup(r->ca_file) : NULL;
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (t->ctx != NULL) {
		SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
		if (r->tls == CONFIG_TLS_VERIFY &&
		    (r->ca_file ? SSL_CTX_load_verify_locations(t->ctx, r->ca_file, NULL)
		                : SSL_CTX_set_default_verify_paths(t->ctx)) != 1) {
			char e[200];

			ERR_error_string_n(ERR_get_error(), e, sizeof(e));
			util_log_warn("verify route=%s cannot load CA %s: %s", r->name,
			              r->ca_file ? r->ca_file : "(system)", e);
			SSL_CTX_free(t->ctx);
			t->ctx = NULL;
		}
	}
	t->next = v->tls;
	v->tls = t;
	return t->ctx;
}

/* verify_quit_cb - a probe's connection said goodbye: forget it. */
static void verify_quit_cb(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct smtp_verifier *v = arg;

	(void)ev;
	for (size_t i = 0; i < v->nquitting; i++) {
		if (v->quitting[i] == c) {
			v->quitting[i] = v->quitting[--v->nquitting];
			return;
		}
	}
}

/* probe_free - unlink and release (the client is already handed off). */
static void probe_free(struct verify_probe *p)
{
	struct verify_probe **pp = &p->v->probes;

	while (*pp != NULL && *pp != p)
		pp = &(*pp)->next;
	if (*pp == p) {
		*pp = p->next;
		p->v->nprobes--;
	}
	if (p->cl != NULL)
		smtp_client_free(p->cl);
	if (p->tx_started)
		smtp_client_tx_clear(&p->tx);
	queue_envelope_free(p->env);
	if (p->deadline)
		event_free(p->deadline);
	if (p->start)
		event_free(p->start);
	for (size_t i = 0; i < p->naddrs; i++)
		free(p->names[i]);
	free(p->names);
	free(p->addrs);
	for (size_t i = 0; i < p->nhosts; i++)
		free(p->hosts[i].host);
	free(p->hosts);
	free(p->route);
	free(p->auth_user);
	if (p->auth_password) {
		OPENSSL_cleanse(p->auth_password, strlen(p->auth_password));
		free(p->auth_password);
	}
	free(p->last_error);
	free(p->waiters);
	free(p);
}

/* probe_error - remember why the last host did not answer. */
static void probe_error(struct verify_probe *p, const char *msg)
{
	free(p->last_error);
	p->last_error = util_xstrdup(msg && msg[0] ? msg : "unknown error");
}

/* probe_finish - the answer: cache it, log it, tell every waiter, free. */
static void probe_finish(struct verify_probe *p, enum smtp_verify_result r, const char *reply)
{
	struct smtp_verifier *v = p->v;
	const struct config *cfg = v->cfg;
	int64_t now = verify_now();

	if (r == SMTP_VERIFY_OK)
		smtp_verify_cache_put(v->cache, p->addr, true, now + cfg->verify_positive_ttl);
	else if (r == SMTP_VERIFY_UNKNOWN)
		smtp_verify_cache_put(v->cache, p->addr, false, now + cfg->verify_negative_ttl);
	util_log_info("verify rcpt=<%s> result=%s route=%s relay=%s tls=%s waiters=%zu reply=(%s)",
	              p->addr, smtp_verify_result_str(r), p->route,
	              p->cl ? smtp_client_relay(p->cl) : "-",
	              p->cl ? smtp_client_tls_info(p->cl) : "-", p->nwaiters,
	              reply ? reply : (p->last_error ? p->last_error : ""));
	util_metrics_inc("mxgate_recipient_verify_total", smtp_verify_result_str(r));
	/* The client: QUIT politely when it is idle, else close. */
	if (p->cl != NULL) {
		struct smtp_client *c = p->cl;

		p->cl = NULL;
		if (smtp_client_quit(c, verify_quit_cb, v)) {
			v->quitting =
			    util_xrealloc(v->quitting, (v->nquitting + 1) * sizeof(*v->quitting));
			v->quitting[v->nquitting++] = c;
		}
	}
	/* Detach first: a waiter's session may look up again (even this
	 * address, answered from the cache now) while being told. */
	uint64_t *w = p->waiters;
	size_t nw = p->nwaiters;
	char addr[sizeof(p->addr)];

	memcpy(addr, p->addr, sizeof(addr));
	p->waiters = NULL;
	p->nwaiters = 0;
	probe_free(p);
	for (size_t i = 0; i < nw; i++)
		v->cb(v->cb_arg, w[i], addr, r);
	free(w);
}

/* ------------------------------------------------------------ the dialogue */

/* probe_client_cb - events of the probe's connection. */
static void probe_client_cb(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct verify_probe *p = arg;

	switch (ev) {
	case SMTP_CLIENT_READY:
		p->env = queue_envelope_new();
		snprintf(p->env->id, sizeof(p->env->id), "%s", "verify");
		p->env->sender = util_xstrdup("");
		queue_envelope_add_rcpt(p->env, p->addr);
		static const size_t idx0 = 0;
		smtp_client_tx_init(&p->tx, p->env, &idx0, 1, NULL);
		p->tx.probe = true;
		p->tx_started = true;
		if (smtp_client_send(c, &p->tx) != 0) {
			probe_error(p, "4.3.0 cannot start the probe");
			smtp_client_free(c);
			p->cl = NULL;
			probe_try_next(p);
		}
		return;
	case SMTP_CLIENT_TX_DONE: {
		enum queue_outcome o = p->tx.has[0] ? p->tx.out[0] : QUEUE_OUT_DEFER;
		char *reply = util_xstrdup(p->tx.reply[0] ? p->tx.reply[0] : "no reply");

		probe_finish(p,
		             o == QUEUE_OUT_DONE     ? SMTP_VERIFY_OK
		             : o == QUEUE_OUT_BOUNCE ? SMTP_VERIFY_UNKNOWN
		                                     : SMTP_VERIFY_UNAVAILABLE,
		             reply);
		free(reply);
		return;
	}
	case SMTP_CLIENT_FAILED:
		probe_error(p, smtp_client_error(c));
		util_log_debug("verify rcpt=<%s> relay=%s status=failover error=(%s)", p->addr,
		               smtp_client_relay(c), p->last_error);
		smtp_client_free(c);
		p->cl = NULL;
		if (p->tx_started) {
			smtp_client_tx_clear(&p->tx);
			p->tx_started = false;
		}
		queue_envelope_free(p->env);
		p->env = NULL;
		probe_try_next(p);
		return;
	case SMTP_CLIENT_CLOSED:
		return;
	}
}

/* probe_connect - a client towards address i. */
static void probe_connect(struct verify_probe *p, size_t i)
{
	struct smtp_client_conf conf = {
	    .host = p->names[i],
	    .addr = p->addrs[i],
	    .tls = p->tls,
	    .ssl_ctx = p->ssl_ctx,
	    .helo = p->v->cfg->hostname,
	    .auth_user = p->auth_user,
	    .auth_password = p->auth_password,
	    .connect_timeout = p->connect_timeout,
	    .command_timeout = p->command_timeout,
	    .data_timeout = p->command_timeout,
	};

	p->cl = smtp_client_new(p->v->base, &conf, probe_client_cb, p);
}

/* probe_add_addrs - append the addresses of one host. */
static void probe_add_addrs(struct verify_probe *p, const char *name, const struct util_addr *a,
                            size_t n)
{
	p->addrs = util_xrealloc(p->addrs, (p->naddrs + n + 1) * sizeof(*p->addrs));
	p->names = util_xrealloc(p->names, (p->naddrs + n + 1) * sizeof(*p->names));
	for (size_t i = 0; i < n; i++) {
		p->addrs[p->naddrs] = a[i];
		p->names[p->naddrs] = util_xstrdup(name);
		p->naddrs++;
	}
}

/* probe_dns_cb - the addresses of the current host. */
static void probe_dns_cb(void *arg, enum policy_dns_status st, const struct util_addr *addrs,
                         size_t n)
{
	struct verify_probe *p = arg;
	char msg[300];

	p->dns_pending = false;
	if (p->abandoned) {
		probe_free(p);
		return;
	}
	if (st != POLICY_DNS_OK || n == 0) {
		snprintf(msg, sizeof(msg), "4.4.3 cannot resolve %s", p->hosts[p->host].host);
		probe_error(p, msg);
	} else {
		probe_add_addrs(p, p->hosts[p->host].host, addrs, n);
	}
	p->host++;
	probe_try_next(p);
}

/* probe_try_next - next address, else resolve the next host, else give up. */
static void probe_try_next(struct verify_probe *p)
{
	char msg[300];

	if (p->ssl_ctx == NULL && p->tls != CONFIG_TLS_NONE) {
		probe_finish(p, SMTP_VERIFY_UNAVAILABLE, "4.7.5 no TLS context for the route");
		return;
	}
	if (p->next_addr < p->naddrs) {
		probe_connect(p, p->next_addr++);
		return;
	}
	while (p->host < p->nhosts) {
		const struct config_host *h = &p->hosts[p->host];
		struct util_addr a;

		if (util_addr_parse_numeric(h->host, h->port, &a) == 0) {
			probe_add_addrs(p, h->host, &a, 1);
			p->host++;
			probe_connect(p, p->next_addr++);
			return;
		}
		if (p->v->dns == NULL) {
			snprintf(msg, sizeof(msg), "4.4.3 cannot resolve %s (no resolver)",
			         h->host);
			probe_error(p, msg);
			p->host++;
			continue;
		}
		p->dns_pending = true;
		policy_dns_resolve_host(p->v->dns, h->host, h->port, probe_dns_cb, p);
		return;
	}
	probe_finish(p, SMTP_VERIFY_UNAVAILABLE, NULL);
}

/* probe_deadline_cb - [verify] timeout: stop, whatever the step. */
static void probe_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct verify_probe *p = arg;

	(void)fd;
	(void)what;
	if (p->dns_pending) {
		/* The resolver still holds p: tell the waiters now, and let
		 * the resolver's answer free it (bounded by [dns] timeout). */
		uint64_t *w = p->waiters;
		size_t nw = p->nwaiters;

		p->waiters = NULL;
		p->nwaiters = 0;
		p->abandoned = true;
		util_log_info("verify rcpt=<%s> result=unavailable route=%s relay=- tls=- "
		              "waiters=%zu reply=(4.4.2 timeout resolving the downstream)",
		              p->addr, p->route, nw);
		util_metrics_inc("mxgate_recipient_verify_total", "unavailable");
		for (size_t i = 0; i < nw; i++)
			p->v->cb(p->v->cb_arg, w[i], p->addr, SMTP_VERIFY_UNAVAILABLE);
		free(w);
		return;
	}
	probe_error(p, "4.4.2 verification timeout");
	probe_finish(p, SMTP_VERIFY_UNAVAILABLE, NULL);
}

/* probe_start_cb - the first step, one loop turn after the lookup. */
static void probe_start_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	probe_try_next(arg);
}

/* ------------------------------------------------------------ API */

/* smtp_verifier_new - the cache file is read here (start-up). */
struct smtp_verifier *smtp_verifier_new(struct event_base *base, const struct config *cfg,
                                        struct policy_dns *dns, smtp_verify_cb cb, void *arg)
{
	struct smtp_verifier *v = util_xcalloc(1, sizeof(*v));
	char *path = NULL;

	v->base = base;
	v->cfg = cfg;
	v->dns = dns;
	v->cb = cb;
	v->cb_arg = arg;
	if (cfg->verify_cache_file == NULL)
		path = util_xasprintf("%s/verify.cache", cfg->queue_dir);
	else if (strcmp(cfg->verify_cache_file, "none") != 0)
		path = util_xstrdup(cfg->verify_cache_file);
	v->cache = smtp_verify_cache_new(path, (size_t)cfg->verify_cache_size, verify_now());
	free(path);
	return v;
}

/* smtp_verifier_set_config - new limits and TTLs. */
void smtp_verifier_set_config(struct smtp_verifier *v, const struct config *cfg)
{
	v->cfg = cfg;
	smtp_verify_cache_set_max(v->cache, (size_t)cfg->verify_cache_size);
}

/* smtp_verifier_free - everything, now (the loop has stopped). */
void smtp_verifier_free(struct smtp_verifier *v)
{
	if (v == NULL)
		return;
	while (v->probes != NULL)
		probe_free(v->probes); /* a resolver answer can no longer come */
	for (size_t i = 0; i < v->nquitting; i++)
		smtp_client_free(v->quitting[i]);
	free(v->quitting);
	while (v->tls != NULL) {
		struct verify_tls *t = v->tls;

		v->tls = t->next;
		if (t->ctx)
			SSL_CTX_free(t->ctx);
		free(t->ca_file);
		free(t);
	}
	smtp_verify_cache_free(v->cache);
	free(v);
}

/* smtp_verify_lookup - cache, else join or start a probe. */
enum smtp_verify_result smtp_verify_lookup(struct smtp_verifier *v, const struct config_route *r,
                                           const char *addr, const char *client, uint64_t sid)
{
	const struct config *cfg = v->cfg;
	enum smtp_verify_result res = smtp_verify_cache_get(v->cache, addr, verify_now());
	struct verify_probe *p;

	if (res != SMTP_VERIFY_PENDING)
		return res;
	if (strlen(addr) > SMTP_VERIFY_ADDR_MAX)
		return SMTP_VERIFY_UNAVAILABLE;
	for (p = v->probes; p != NULL; p = p->next) {
		if (!p->abandoned && util_strcaseeq(p->addr, addr)) {
			p->waiters =
			    util_xrealloc(p->waiters, (p->nwaiters + 1) * sizeof(uint64_t));
			p->waiters[p->nwaiters++] = sid;
			return SMTP_VERIFY_PENDING;
		}
	}
	if (v->nprobes >= (size_t)cfg->verify_max_probes) {
		util_log_info("verify rcpt=<%s> result=unavailable route=%s reason=max_probes "
		              "running=%zu",
		              addr, r->name, v->nprobes);
		util_metrics_inc("mxgate_recipient_verify_total", "unavailable");
		return SMTP_VERIFY_UNAVAILABLE;
	}
	/* One client may not take every slot (random addresses against a
	 * downstream that tarpits its 5.1.1 answers would lock every other
	 * sender out): it may start a quarter of them. */
	size_t mine = 0, share = ((size_t)cfg->verify_max_probes + 3) / 4;
	for (p = v->probes; client != NULL && p != NULL; p = p->next)
		if (!p->abandoned && strcmp(p->client, client) == 0)
			mine++;
	if (client != NULL && mine >= share) {
		util_log_info("verify rcpt=<%s> result=unavailable route=%s reason=client_share "
		              "client=%s running=%zu",
		              addr, r->name, client, mine);
		util_metrics_inc("mxgate_recipient_verify_total", "unavailable");
		return SMTP_VERIFY_UNAVAILABLE;
	}
	p = util_xcalloc(1, sizeof(*p));
	p->v = v;
	for (size_t i = 0; addr[i] != '\0' && i < SMTP_VERIFY_ADDR_MAX; i++)
		p->addr[i] =
		    (char)(addr[i] >= 'A' && addr[i] <= 'Z' ? addr[i] - 'A' + 'a' : addr[i]);
	snprintf(p->client, sizeof(p->client), "%s", client != NULL ? client : "");
	p->waiters = util_xcalloc(1, sizeof(uint64_t));
	p->waiters[0] = sid;
	p->nwaiters = 1;
	p->route = util_xstrdup(r->name);
	p->nhosts = r->nhosts;
	p->hosts = util_xcalloc(r->nhosts + 1, sizeof(*p->hosts));
	for (size_t i = 0; i < r->nhosts; i++) {
		p->hosts[i].host = util_xstrdup(r->hosts[i].host);
		p->hosts[i].port = r->hosts[i].port > 0 ? r->hosts[i].port : 25;
	}
	p->tls = r->tls;
	p->ssl_ctx = verify_ssl_ctx(v, r);
	if (r->auth_user != NULL) {
		p->auth_user = util_xstrdup(r->auth_user);
		p->auth_password = util_xstrdup(r->auth_password ? r->auth_password : "");
	}
	/* the whole probe fits in [verify] timeout, so each step does too */
	p->connect_timeout =
	    r->connect_timeout < cfg->verify_timeout ? r->connect_timeout : cfg->verify_timeout;
	p->command_timeout =
	    r->command_timeout < cfg->verify_timeout ? r->command_timeout : cfg->verify_timeout;
	p->deadline = evtimer_new(v->base, probe_deadline_cb, p);
	struct timeval tv = {.tv_sec = cfg->verify_timeout, .tv_usec = 0};
	evtimer_add(p->deadline, &tv);
	p->next = v->probes;
	v->probes = p;
	v->nprobes++;
	util_log_debug("verify rcpt=<%s> probe route=%s", p->addr, p->route);
	p->start = event_new(v->base, -1, 0, probe_start_cb, p);
	event_active(p->start, 0, 0);
	return SMTP_VERIFY_PENDING;
}
