/*
 * smtp-server.c - the SMTP server object: listening sockets, the TLS server
 * context, the registry of live sessions (by 64-bit id, so asynchronous
 * results never follow a dangling pointer) and the per-client-IP connection
 * counters.  The protocol itself lives in smtp-session.c.
 *
 * Ownership: the server owns its listeners, its SSL_CTX and every session;
 * the config, queue store and policy context are borrowed.  Each config +
 * policy pair is counted by the sessions using it (struct smtp_gen); after a
 * reload the replaced pair is handed back through the retire callback from
 * a deferred event once its last session has ended, so a reload costs
 * nothing that outlives its sessions.
 *
 * Out of descriptors: when accept() fails with EMFILE/ENFILE (or ENOBUFS/
 * ENOMEM) the pending connection stays in the kernel's queue, so the
 * listening socket stays readable and a level-triggered listener would call
 * accept() again at once, forever: 100% CPU and a log line per try.  So
 * every listener is disabled (descriptors are per process) and re-enabled
 * by a timer SMTP_ACCEPT_PAUSE_MS later; the clients wait in the backlog
 * meanwhile and are served once sessions have ended.
 *
 * Diagnostics: bind/listen/TLS errors are returned as messages (start-up and
 * reload report them); other accept errors are logged and the listener goes
 * on; a pause is logged once ("- accept paused error=... for_ms=500") and
 * counted in mxgate_accept_pauses_total{error}.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>
#include <openssl/err.h>

#include "smtp-server-internal.h"
#include "smtp-redis.h"

#define SMTP_ACCEPT_PAUSE_MS 500

/* hash_u64 - bucket of a session id. */
static size_t hash_u64(uint64_t v)
{
	v ^= v >> 33;
	v *= 0xff51afd7ed558ccdULL;
	v ^= v >> 33;
	return (size_t)(v % SMTP_HASH_BUCKETS);
}

/* smtp_server_ip_key - family byte + address bytes of a (possibly mapped) address. */
void smtp_server_ip_key(const struct util_addr *a, uint8_t key[17])
{
	memset(key, 0, 17);
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
		key[0] = 4;
		memcpy(key + 1, &in->sin_addr, 4);
	} else if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
		key[0] = 6;
		memcpy(key + 1, &in6->sin6_addr, 16);
	}
}

/* smtp_server_ip_hash - bucket of an address key (FNV-1a). */
size_t smtp_server_ip_hash(const uint8_t key[17])
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % SMTP_HASH_BUCKETS;
}

/* smtp_server_find - live session by id, or NULL when it is gone. */
struct smtp_session *smtp_server_find(struct smtp_server *srv, uint64_t id)
{
	for (struct smtp_session *s = srv->sessions[hash_u64(id)]; s; s = s->hnext)
		if (s->id == id)
			return s;
	return NULL;
}

/* smtp_server_register - add to the registry. */
void smtp_server_register(struct smtp_server *srv, struct smtp_session *s)
{
	size_t b = hash_u64(s->id);
	s->hnext = srv->sessions[b];
	srv->sessions[b] = s;
	srv->nsessions++;
	smtp_defence_stress_update(srv);
}

/* smtp_server_unregister - remove from the registry (session teardown). */
void smtp_server_unregister(struct smtp_server *srv, struct smtp_session *s)
{
	for (struct smtp_session **pp = &srv->sessions[hash_u64(s->id)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == s) {
			*pp = s->hnext;
			srv->nsessions--;
			smtp_defence_stress_update(srv);
			return;
		}
	}
}

/* gen_new - a pair with no sessions yet. */
static struct smtp_gen *gen_new(const struct config *cfg, struct policy_ctx *policy)
{
	struct smtp_gen *g = util_xcalloc(1, sizeof(*g));
	g->cfg = cfg;
	g->policy = policy;
	return g;
}

/* smtp_server_gen_get - count one more session on the current pair. */
struct smtp_gen *smtp_server_gen_get(struct smtp_server *srv)
{
	srv->gen->refs++;
	return srv->gen;
}

/* smtp_server_gen_put - one session less; an unused replaced pair is handed
 * back from the loop (retire_cb), never inside the session's teardown. */
void smtp_server_gen_put(struct smtp_server *srv, struct smtp_gen *g)
{
	if (g == NULL)
		return;
	if (--g->refs == 0 && g != srv->gen && srv->retire_ev)
		event_active(srv->retire_ev, EV_TIMEOUT, 0);
}

/* retire_unused - hand every replaced pair without sessions to the callback
 * (all = every replaced pair: server teardown). */
static void retire_unused(struct smtp_server *srv, bool all)
{
	struct smtp_gen **pp = &srv->retired;
	while (*pp) {
		struct smtp_gen *g = *pp;
		if (g->refs > 0 && !all) {
			pp = &g->next;
			continue;
		}
		*pp = g->next;
		if (srv->retire_fn)
			srv->retire_fn(srv->retire_arg, g->cfg, g->policy);
		free(g);
	}
}

/* retire_cb - deferred: replaced pairs whose last session ended. */
static void retire_cb(evutil_socket_t fd, short what, void *arg)
{
	retire_unused(arg, false);
}

/* smtp_server_set_retire - who gets replaced pairs once unused. */
void smtp_server_set_retire(struct smtp_server *srv, smtp_server_retire_fn fn, void *arg)
{
	srv->retire_fn = fn;
	srv->retire_arg = arg;
}

/* smtp_server_set_reports - the DMARC report store (issue 14). */
void smtp_server_set_reports(struct smtp_server *srv, struct reports_store *rs)
{
	srv->reports = rs;
}

/* smtp_server_set_failure - failure reports (RFC 9991, borrowed). */
void smtp_server_set_failure(struct smtp_server *srv, struct reports_failure *fr)
{
	srv->failrep = fr;
}

/* smtp_server_set_ingest - reports mailed to us (issue 15). */
void smtp_server_set_ingest(struct smtp_server *srv, struct reports_ingest *ri)
{
	srv->ingest = ri;
}

/* smtp_server_generations - current pair + replaced pairs still held. */
size_t smtp_server_generations(const struct smtp_server *srv)
{
	size_t n = srv->gen ? 1 : 0;
	for (const struct smtp_gen *g = srv->retired; g; g = g->next)
		n++;
	return n;
}

/* slot_acquire - one more connection under key unless limit is reached. */
static int slot_acquire(struct smtp_server *srv, const uint8_t key[17], int limit)
{
	size_t b = smtp_server_ip_hash(key);
	struct smtp_ipcount *c;
	for (c = srv->ipcounts[b]; c; c = c->next)
		if (memcmp(c->key, key, 17) == 0)
			break;
	if (c && c->count >= limit)
		return -1;
	if (!c) {
		c = util_xcalloc(1, sizeof(*c));
		memcpy(c->key, key, 17);
		c->next = srv->ipcounts[b];
		srv->ipcounts[b] = c;
	}
	c->count++;
	return 0;
}

/* slot_release - give a slot back; free the counter at zero. */
static void slot_release(struct smtp_server *srv, const uint8_t key[17])
{
	for (struct smtp_ipcount **pp = &srv->ipcounts[smtp_server_ip_hash(key)]; *pp; pp = &(*pp)->next) {
		struct smtp_ipcount *c = *pp;
		if (memcmp(c->key, key, 17) == 0) {
			if (--c->count == 0) {
				*pp = c->next;
				free(c);
			}
			return;
		}
	}
}

/* smtp_server_ip_acquire - take the client's address slot and, with
 * [ratelimit] max_connections_per_net, its network slot (both concurrency
 * caps share this table; network keys never equal address keys). */
int smtp_server_ip_acquire(struct smtp_server *srv, struct smtp_session *s)
{
	uint8_t key[17], net[17];
	smtp_server_ip_key(&s->client, key);
	if (slot_acquire(srv, key, s->cfg->max_connections_per_ip) < 0)
		return -1;
	if (s->cfg->rl_max_connections_per_net > 0 &&
	    !util_cidr_list_match(&s->cfg->rl_exempt, &s->client)) {
		smtp_rl_net_key(s->cfg, &s->client, net);
		if (slot_acquire(srv, net, s->cfg->rl_max_connections_per_net) < 0) {
			slot_release(srv, key);
			return -2;
		}
		s->netcounted = true;
	}
	s->ipcounted = true;
	return 0;
}

/* smtp_server_ip_release - give the slots back. */
void smtp_server_ip_release(struct smtp_server *srv, struct smtp_session *s)
{
	uint8_t key[17];
	if (s->netcounted) {
		s->netcounted = false;
		smtp_rl_net_key(s->cfg, &s->client, key);
		slot_release(srv, key);
	}
	if (!s->ipcounted)
		return;
	s->ipcounted = false;
	smtp_server_ip_key(&s->client, key);
	slot_release(srv, key);
}

/* rdns_free - unlink and free one lookup. */
static void rdns_free(struct smtp_rdns *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		r->srv->rdns = r->next;
	if (r->next)
		r->next->prev = r->prev;
	free(r);
}

/* rdns_done - the lookup is over: a session waiting for it goes on. */
static void rdns_done(struct smtp_session *s)
{
	s->rdns_pending = false;
	if (s->wait == SMTP_WAIT_RDNS) {
		s->wait = SMTP_WAIT_NONE;
		smtp_data_judge(s);
		if (s->wait == SMTP_WAIT_NONE)
			smtp_session_resume(s);   /* refused (greylisted): read on */
	}
}

/* same_ip - equal addresses, ports ignored. */
static bool same_ip(const struct util_addr *a, const struct util_addr *b)
{
	uint8_t ka[17], kb[17];
	smtp_server_ip_key(a, ka);
	smtp_server_ip_key(b, kb);
	return memcmp(ka, kb, 17) == 0;
}

/* rdns_host_cb - forward confirmation: the name must lead back to the
 * client address, or it is not the client's name (FCrDNS). */
static void rdns_host_cb(void *arg, enum policy_dns_status st, const struct util_addr *addrs,
			 size_t n)
{
	struct smtp_rdns *r = arg;
	struct smtp_session *s = smtp_server_find(r->srv, r->sid);
	bool ok = false;
	for (size_t i = 0; st == POLICY_DNS_OK && i < n && !ok; i++)
		ok = same_ip(&addrs[i], &r->client);
	if (s) {
		if (ok)
			snprintf(s->rdns, sizeof(s->rdns), "%s", r->name);
		util_log_info("s=%016llx rdns client=%s name=%s confirmed=%s",
			      (unsigned long long)r->sid, s->client_str, r->name, ok ? "yes" : "no");
	}
	rdns_free(r);
	if (s)
		rdns_done(s);
}

/* rdns_ptr_cb - PTR answer: confirm it forward. */
static void rdns_ptr_cb(void *arg, enum policy_dns_status st, const char *name)
{
	struct smtp_rdns *r = arg;
	struct smtp_session *s = smtp_server_find(r->srv, r->sid);
	/* policy_dns only hands out LDH names; checked again here because
	 * this name goes into Received: and the log (a PTR label may hold CR,
	 * LF, spaces, parentheses: anything else is "no rDNS"). */
	if (st != POLICY_DNS_OK || !s || !util_is_ldh_name(name)) {
		rdns_free(r);
		if (s)
			rdns_done(s);
		return;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	policy_dns_resolve_host(r->srv->dns, r->name, 0, rdns_host_cb, r);
}

/* smtp_server_rdns_start - PTR lookup, then forward confirmation. */
void smtp_server_rdns_start(struct smtp_server *srv, struct smtp_session *s)
{
	if (!srv->dns)
		return;
	struct smtp_rdns *r = util_xcalloc(1, sizeof(*r));
	r->srv = srv;
	r->sid = s->id;
	s->rdns_pending = true;
	r->client = s->client;
	r->next = srv->rdns;
	if (srv->rdns)
		srv->rdns->prev = r;
	srv->rdns = r;
	policy_dns_resolve_ptr(srv->dns, &s->client, rdns_ptr_cb, r);
}

/* accept_cb - a new connection: refuse over the total limit, else start. */
static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct smtp_server *srv = arg;
	if (!srv->accepting) {
		close(fd);
		return;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (srv->nsessions >= (size_t)srv->cfg->max_connections) {
		/* Answer without building a session: cheap under a flood. */
		char line[300];
		int n = snprintf(line, sizeof(line),
				 "421 4.7.0 %s Too many connections, try again later\r\n",
				 srv->cfg->hostname);
		(void)!write(fd, line, (size_t)n);
		close(fd);
		util_log_info("- refused reason=max_connections limit=%d",
			      srv->cfg->max_connections);
		util_metrics_inc("mxgate_connections_refused_total", "max_connections");
		return;
	}
	util_metrics_inc("mxgate_connections_total", NULL);
	smtp_session_start(srv, fd, sa, salen);
}

/* listeners_enable - enable (or disable) every listener. */
static void listeners_enable(struct smtp_server *srv, bool on)
{
	for (struct smtp_listener *l = srv->listeners; l; l = l->next)
		if ((on ? evconnlistener_enable(l->lev) : evconnlistener_disable(l->lev)) < 0)
			util_log_err("- listener %s error=\"cannot %s\"", l->name,
				     on ? "enable" : "disable");
}

/* accept_resume_cb - the pause is over: accept again (if it fails again,
 * accept_error_cb pauses again). */
static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;
	if (!srv->accept_paused)
		return;
	srv->accept_paused = false;
	if (!srv->accepting)
		return;
	util_log_debug("- accept resumed");
	listeners_enable(srv, true);
}

/* accept_pause - out of descriptors: stop every listener for a while. */
static void accept_pause(struct smtp_server *srv, int err)
{
	struct timeval tv = {0, SMTP_ACCEPT_PAUSE_MS * 1000};
	if (srv->accept_paused)
		return;
	if (srv->accept_resume == NULL)
		srv->accept_resume = evtimer_new(srv->base, accept_resume_cb, srv);
	if (srv->accept_resume == NULL || evtimer_add(srv->accept_resume, &tv) < 0) {
		util_log_err("- accept failed error=\"%s\" (cannot pause: no timer)",
			     strerror(err));
		return;
	}
	srv->accept_paused = true;
	listeners_enable(srv, false);
	util_log_warn("- accept paused error=\"%s\" for_ms=%d sessions=%zu", strerror(err),
		      SMTP_ACCEPT_PAUSE_MS, srv->nsessions);
	util_metrics_inc("mxgate_accept_pauses_total", err == EMFILE   ? "EMFILE"
						       : err == ENFILE ? "ENFILE"
						       : err == ENOBUFS ? "ENOBUFS"
									: "ENOMEM");
}

/* accept_error_cb - accept() failed with an error libevent does not retry
 * by itself: pause when out of descriptors or memory, else log and go on. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct smtp_server *srv = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		accept_pause(srv, err);
		return;
	}
	util_log_warn("- accept failed error=\"%s\"", strerror(err));
}

/* listener_open - bind one [server] listen address. */
static struct smtp_listener *listener_open(struct smtp_server *srv, const struct config_listen *l,
					   char *err, size_t errlen)
{
	struct smtp_listener *sl = util_xcalloc(1, sizeof(*sl));
	sl->addr = l->addr;
	if (l->addr.ss.ss_family == AF_INET6)
		snprintf(sl->name, sizeof(sl->name), "[%s]:%d", l->host, l->port);
	else
		snprintf(sl->name, sizeof(sl->name), "%s:%d", l->host, l->port);

	int fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->addr.ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr.ss, l->addr.len) < 0)
		goto err;
	sl->lev = evconnlistener_new(srv->base, accept_cb, srv,
				     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024, fd);
	if (!sl->lev)
		goto err;
	evconnlistener_set_error_cb(sl->lev, accept_error_cb);
	if (srv->accept_paused)
		evconnlistener_disable(sl->lev); /* bound by a reload during a pause */
	util_log_info("- listening on %s", sl->name);
	return sl;
err:
	snprintf(err, errlen, "cannot listen on %s: %s", sl->name, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(sl);
	return NULL;
}

/* smtp_server_tls_ctx_new - see smtp.h: TLS 1.2+, modern ciphers, cert
 * chain.  The admin dashboard's HTTPS uses it too (gw-admin.c). */
SSL_CTX *smtp_server_tls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	if (!cfg->tls_cert_file)
		return NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto err;
	int minv = TLS1_2_VERSION;
	if (cfg->tls_min_version && util_strcaseeq(cfg->tls_min_version, "TLSv1.3"))
		minv = TLS1_3_VERSION;
	SSL_CTX_set_min_proto_version(ctx, minv);
	/* No compression, no renegotiation by clients, server cipher order. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (cfg->tls_ciphers && SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1)
		goto err;
	if (cfg->tls_ciphersuites && SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1)
		goto err;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1)
		goto err;
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1)
		goto err;
	if (SSL_CTX_check_private_key(ctx) != 1)
		goto err;
	/* One session ticket is plenty for SMTP (DESIGN: TLS 1.3 ticket stall). */
	SSL_CTX_set_num_tickets(ctx, 1);
	return ctx;
err:;
	char buf[256];
	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	snprintf(err, errlen, "TLS setup with %s / %s failed: %s", cfg->tls_cert_file,
		 cfg->tls_key_file ? cfg->tls_key_file : "(no key)", buf);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

/* sync_listeners - bind every configured address that is not bound yet;
 * close the ones no longer configured.  On error nothing new stays open. */
static int sync_listeners(struct smtp_server *srv, const struct config *cfg, char *err,
			  size_t errlen)
{
	struct smtp_listener *fresh = NULL;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		const struct config_listen *l = &cfg->listen[i];
		struct smtp_listener **pp, *found = NULL;
		for (pp = &srv->listeners; *pp; pp = &(*pp)->next) {
			if ((*pp)->addr.len == l->addr.len &&
			    memcmp(&(*pp)->addr.ss, &l->addr.ss, l->addr.len) == 0) {
				found = *pp;
				*pp = found->next;   /* move it to the new list */
				break;
			}
		}
		if (!found && (found = listener_open(srv, l, err, errlen)) != NULL)
			found->opened_now = true;
		if (!found) {
			/* Put everything back: old ones stay, new ones close. */
			while (fresh) {
				struct smtp_listener *n = fresh->next;
				if (fresh->opened_now) {
					evconnlistener_free(fresh->lev);
					free(fresh);
				} else {
					fresh->next = srv->listeners;
					srv->listeners = fresh;
				}
				fresh = n;
			}
			return -1;
		}
		found->next = fresh;
		fresh = found;
	}
	for (struct smtp_listener *l = fresh; l; l = l->next)
		l->opened_now = false;
	while (srv->listeners) {
		struct smtp_listener *n = srv->listeners->next;
		util_log_info("- closed listener %s", srv->listeners->name);
		evconnlistener_free(srv->listeners->lev);
		free(srv->listeners);
		srv->listeners = n;
	}
	srv->listeners = fresh;
	return 0;
}

/* content_drop - the pool stopped before a job's completion ran. */
static void content_drop(void *job)
{
	struct smtp_job *j = job;
	j->free(job);
}

/* smtp_server_new - TLS context, listeners; ready to accept. */
struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
				    struct queue_store *qs, struct policy_ctx *policy,
				    struct policy_dns *dns, char *err, size_t errlen)
{
	struct smtp_server *srv = util_xcalloc(1, sizeof(*srv));
	srv->base = base;
	srv->cfg = cfg;
	srv->qs = qs;
	srv->policy = policy;
	srv->gen = gen_new(cfg, policy);
	srv->dns = dns;
	srv->accepting = true;
	srv->verifier = smtp_verifier_new(base, cfg, dns, smtp_session_verify_done, srv);
	if (dns)
		srv->dnsbl = policy_dnsbl_new(base, dns);
	srv->rl = smtp_rl_memory_new(cfg->rl_max_keys > 0 ? (size_t)cfg->rl_max_keys : 500000);
	srv->redis = smtp_redis_new(base, cfg);   /* [state] redis, or NULL */
	srv->greylist = smtp_greylist_new(
	    cfg->greylist_max_entries > 0 ? (size_t)cfg->greylist_max_entries : 500000);
	srv->passes = util_ttlmap_new(
	    "pregreet", cfg->pregreet_pass_max > 0 ? (size_t)cfg->pregreet_pass_max : 200000, 0);
	if (cfg->pregreet_pass_file)
		srv->pass_file = util_xstrdup(cfg->pregreet_pass_file);
	smtp_pregreet_load(srv);
	srv->clamd = scan_clamd_new(base);
	srv->rspamd = scan_rspamd_new(base);
	err[0] = 0;
	srv->content_pool = util_pool_new(base, cfg->content_workers > 0 ? cfg->content_workers : 2,
	                                  cfg->content_queue > 0 ? (size_t)cfg->content_queue : 100,
	                                  content_drop, err, errlen);
	if (!srv->content_pool)
		goto err;
	srv->retire_ev = event_new(base, -1, 0, retire_cb, srv);
	if (!srv->retire_ev) {
		snprintf(err, errlen, "cannot create the server's events");
		goto err;
	}
	srv->tls = smtp_server_tls_ctx_new(cfg, err, errlen);
	if (!srv->tls && err[0])
		goto err;
	if (sync_listeners(srv, cfg, err, errlen) < 0)
		goto err;
	return srv;
err:
	smtp_server_free(srv);
	return NULL;
}

/* smtp_server_reload - new config for new sessions; re-read certificate. */
int smtp_server_reload(struct smtp_server *srv, const struct config *cfg,
		       struct policy_ctx *policy, char *err, size_t errlen)
{
	err[0] = 0;
	SSL_CTX *tls = smtp_server_tls_ctx_new(cfg, err, errlen);
	if (!tls && err[0])
		return -1;
	if (srv->accepting && sync_listeners(srv, cfg, err, errlen) < 0) {
		SSL_CTX_free(tls);
		return -1;
	}
	/* Sessions already in TLS hold their own reference to the old SSL_CTX. */
	SSL_CTX_free(srv->tls);
	srv->tls = tls;
	srv->cfg = cfg;
	srv->policy = policy;
	/* The old pair stays while sessions use it; unused, it goes back to
	 * its owner from the loop. */
	struct smtp_gen *old = srv->gen;
	old->next = srv->retired;
	srv->retired = old;
	srv->gen = gen_new(cfg, policy);
	if (old->refs == 0)
		event_active(srv->retire_ev, EV_TIMEOUT, 0);
	smtp_verifier_set_config(srv->verifier, cfg);
	return 0;
}

/* smtp_server_stop_accepting - close every listener (shutdown). */
void smtp_server_stop_accepting(struct smtp_server *srv)
{
	srv->accepting = false;
	while (srv->listeners) {
		struct smtp_listener *n = srv->listeners->next;
		evconnlistener_free(srv->listeners->lev);
		free(srv->listeners);
		srv->listeners = n;
	}
}

/* smtp_server_shutdown_sessions - 421 to every session not inside DATA or
 * waiting for a verdict/commit; those finish their transaction first. */
void smtp_server_shutdown_sessions(struct smtp_server *srv)
{
	for (size_t b = 0; b < SMTP_HASH_BUCKETS; b++) {
		struct smtp_session *s = srv->sessions[b];
		while (s) {
			struct smtp_session *n = s->hnext;
			if (s->state != SMTP_STATE_DATA && s->wait == SMTP_WAIT_NONE &&
			    s->state != SMTP_STATE_CLOSING) {
				char line[300];
				snprintf(line, sizeof(line),
					 "421 4.3.2 %s Service shutting down, closing channel",
					 s->cfg->hostname);
				smtp_session_close(s, line);
			}
			s = n;
		}
	}
}

size_t smtp_server_session_count(const struct smtp_server *srv)
{
	return srv->nsessions;
}

/* smtp_server_free - listeners, TLS context, and any session still open. */
void smtp_server_free(struct smtp_server *srv)
{
	if (!srv)
		return;
	smtp_server_stop_accepting(srv);
	if (srv->accept_resume)
		event_free(srv->accept_resume);
	for (size_t b = 0; b < SMTP_HASH_BUCKETS; b++)
		while (srv->sessions[b])
			smtp_session_destroy(srv->sessions[b]);
	/* body rewrites and attachment checks in flight: the workers finish
	 * theirs; completions that cannot run any more free their jobs */
	util_pool_free(srv->content_pool);
	for (size_t b = 0; b < SMTP_HASH_BUCKETS; b++) {
		while (srv->ipcounts[b]) {
			struct smtp_ipcount *n = srv->ipcounts[b]->next;
			free(srv->ipcounts[b]);
			srv->ipcounts[b] = n;
		}
	}
	while (srv->rdns)
		rdns_free(srv->rdns);   /* their callbacks can no longer run */
	retire_unused(srv, true);       /* no session is left */
	free(srv->gen);                 /* the current pair stays the caller's */
	if (srv->retire_ev)
		event_free(srv->retire_ev);
	smtp_verifier_free(srv->verifier);
	policy_dnsbl_free(srv->dnsbl);
	smtp_pregreet_free(srv);
	free(srv->pass_file);
	smtp_rl_store_free(srv->rl);
	smtp_redis_free(srv->redis);   /* no session is left to call back */
	smtp_greylist_free(srv->greylist);   /* before the resolver (gw-run.c) */
	scan_clamd_free(srv->clamd);   /* after the sessions: no callback is left */
	scan_rspamd_free(srv->rspamd);
	SSL_CTX_free(srv->tls);
	free(srv);
}

/* ---------------------------------------------------------- content workers */

/* content_done - loop: a content job ends; its session (if still there)
 * no longer names it, then the job's own completion runs. */
static void content_done(void *arg)
{
	struct smtp_job *j = arg;
	struct smtp_session *s = smtp_server_find(j->srv, j->sid);
	if (s && s->content_job == j)
		s->content_job = NULL;
	j->done(arg);
}

/* smtp_content_submit - see smtp-server-internal.h. */
int smtp_content_submit(struct smtp_session *s, util_pool_fn work, util_pool_fn done,
                        struct smtp_job *job)
{
	struct smtp_server *srv = s->srv;
	if (!srv->content_pool)
		return -1;
	atomic_init(&job->cancelled, false);
	job->srv = srv;
	job->sid = s->id;
	job->done = done;
	if (util_pool_submit(srv->content_pool, work, content_done, job) < 0)
		return -1;
	s->content_job = job;
	return 0;
}

/* smtp_content_abandon - see smtp-server-internal.h.  The job stays valid
 * until content_done (loop thread, like this), so the flag is safe to set;
 * the worker reads it between steps (red team 2: a client leaving after
 * its dot had its whole check run for nobody). */
void smtp_content_abandon(struct smtp_session *s)
{
	struct smtp_job *j = s->content_job;
	if (!j)
		return;
	s->content_job = NULL;
	atomic_store(&j->cancelled, true);
	if (util_pool_cancel(s->srv->content_pool, j))
		util_log_info("s=%016llx content_job note=cancelled_unrun", (unsigned long long)s->id);
}

/* smtp_content_busy - see smtp-server-internal.h. */
void smtp_content_busy(struct smtp_session *s, const char *what, bool async)
{
	size_t queued = 0, running = 0;
	if (s->srv->content_pool)
		util_pool_stats(s->srv->content_pool, &queued, &running);
	util_log_warn("s=%016llx content workers busy job=%s queued=%zu running=%zu",
	              (unsigned long long)s->id, what, queued, running);
	smtp_data_refuse(s, "451 4.3.2 System busy, try again later", "content_busy");
	if (async)
		smtp_session_resume(s);
}
