/*
 * smtp-deliver.c - the deliverer: the scheduler's queue_deliver_ops.  It
 * picks the route's connection pool (one per [route], one per route and
 * domain for type = mx), reuses idle connections (RSET between messages, at
 * most msgs_per_connection each), opens new ones up to the route's
 * max_connections, and fails over through the route's hosts (or the
 * domain's MX hosts) and each host's addresses in order.  With tls = may a
 * host whose TLS handshake fails is tried once more in plaintext before the
 * next one (RFC 7435).  With tls = dane each MX host gets DANE (RFC 7672,
 * DNSSEC-validated TLSA records), else what the domain's MTA-STS policy
 * demands (RFC 8461, smtp-mtasts.c), else may.  Routes of type directory
 * are written by smtp-deliver-dir.c.
 *
 * Failures: a failed session set-up (refused, timed out, any 4xx/5xx before
 * READY) only moves on to the next address/host; when none is left the
 * waiting jobs are deferred - only a routing fact (NXDOMAIN, null MX)
 * bounces.  A transaction that ends with nothing of the message sent and
 * no final answer about any recipient (a 4xx/5xx to MAIL FROM, a 4xx to
 * every RCPT or to DATA, a malformed reply, a lost connection or timeout
 * before the 354: the client's tx.failover) is about this host: the
 * connection carries that one message on to the next address/host
 * (deliver_conn_carry, RFC 5321 5.1) and defers it when none is left; it
 * never counts towards the destination's dead marking.  After dead_after
 * such connections in a row the pool is dead: its jobs are deferred
 * without connecting for dead_time, then one connection probes (after any
 * failure only one connection at a time is opened).  The first READY, or a
 * postmaster flush, makes it alive again.
 *
 * Type mx: one attempt looks at the DELIVER_MX_HOST_LIMIT most preferred MX
 * hosts and connects to at most DELIVER_MX_ADDRESS_LIMIT of their addresses
 * (Postfix's smtp_mx_address_limit is 5): the destination is whoever a
 * bounce goes to, and thousands of MX hosts that accept and never greet
 * would otherwise hold a delivery slot for hours per attempt.
 *
 * Names are resolved through the project's resolver (policy_dns_*); numeric
 * hosts never touch it.
 *
 * Ownership: the deliverer owns pools, connections and jobs.  A pool keeps
 * its own copy of the route (a reload may free the old config while its
 * connections still run); set_config retires the old pools, which are freed
 * once their last connection is gone.  A job borrows the scheduler's
 * envelope until it calls queue_delivery_done().  A connection waiting for a
 * DNS answer is only marked when the deliverer is freed, and freed by the
 * answer (the resolver never calls back after policy_dns_free).
 *
 * Diagnostics: one line per recipient and attempt:
 *   "ID to=<a@b> route=R relay=mx[192.0.2.1]:25 delay=3.4 delays=3/0.1/0.3
 *    tls=TLSv1.3 ... status=sent (250 ok)" - delay since arrival, delays =
 *   queue (before this attempt) / connect (waiting for and setting up a
 *   connection) / transfer, in seconds.
 */
#include "smtp-deliver-internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DELIVER_MX_HOST_LIMIT    10 /* MX hosts looked at per attempt */
#define DELIVER_MX_ADDRESS_LIMIT 5  /* their addresses connected to per attempt */

#include <openssl/err.h>

#define DELIVER_IDLE_SECONDS 5 /* an idle connection waits this long for a message */

static void deliver_pool_pump(struct deliver_pool *p);

/* deliver_quit_cb - a quitting client is gone: forget it. */
static void deliver_quit_cb(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct smtp_deliverer *dl = arg;
	for (size_t i = 0; i < dl->nquitting; i++)
		if (dl->quitting[i] == c) {
			dl->quitting[i] = dl->quitting[--dl->nquitting];
			return;
		}
}

/* deliver_quit - QUIT politely; remember the client until it is gone. */
static void deliver_quit(struct smtp_deliverer *dl, struct smtp_client *c)
{
	if (!smtp_client_quit(c, deliver_quit_cb, dl))
		return;
	dl->quitting = util_xrealloc(dl->quitting, (dl->nquitting + 1) * sizeof(*dl->quitting));
	dl->quitting[dl->nquitting++] = c;
}
static void deliver_conn_try_next(struct deliver_conn *cn);
static void deliver_conn_connect(struct deliver_conn *cn, size_t i);
static void deliver_conn_tlsa_reset(struct deliver_conn *cn);

/* deliver_route_copy - the parts of a route a pool needs after a reload. */
static void deliver_route_copy(struct deliver_pool *p, const struct config_route *r)
{
	p->name = util_xstrdup(r->name);
	p->type = r->type;
	p->tls = r->tls;
	p->nhosts = r->nhosts;
	p->hosts = util_xcalloc(r->nhosts + 1, sizeof(*p->hosts));
	for (size_t i = 0; i < r->nhosts; i++) {
		p->hosts[i].host = util_xstrdup(r->hosts[i].host);
		p->hosts[i].port = r->hosts[i].port > 0 ? r->hosts[i].port : 25;
	}
	p->max_connections = r->max_connections > 0 ? r->max_connections : 10;
	p->mx_port = r->mx_port > 0 ? r->mx_port : 25;
	p->mta_sts_port = r->mta_sts_port > 0 ? r->mta_sts_port : 443;
	p->mta_sts_ca_file = r->mta_sts_ca_file ? util_xstrdup(r->mta_sts_ca_file) : NULL;
	p->msgs_per_connection = r->msgs_per_connection > 0 ? r->msgs_per_connection : 100;
	p->dead_after = r->dead_after > 0 ? r->dead_after : 2;
	p->dead_time = r->dead_time > 0 ? r->dead_time : 60;
	p->connect_timeout = r->connect_timeout > 0 ? r->connect_timeout : 30;
	p->command_timeout = r->command_timeout > 0 ? r->command_timeout : 300;
	p->greeting_timeout = r->greeting_timeout > 0 ? r->greeting_timeout : p->command_timeout;
	p->data_timeout = r->data_timeout > 0 ? r->data_timeout : 600;
}

/* deliver_check_auth_file - the config read "user:password" from auth_file
 * into auth_user/auth_password; the file must stay private (0600): a secret
 * others can read is refused, not used. */
static int deliver_check_auth_file(struct deliver_pool *p, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		p->setup_error = util_xasprintf("4.7.0 auth_file %s: cannot stat", path);
		return -1;
	}
	if (st.st_mode & 077) {
		p->setup_error = util_xasprintf(
		    "4.7.0 auth_file %s is group/world accessible (chmod 600)", path);
		return -1;
	}
	return 0;
}

/* deliver_ssl_ctx - the route's TLS client context (TLS 1.2 minimum). */
static int deliver_ssl_ctx(struct deliver_pool *p, const struct config_route *r)
{
	if (r->tls == CONFIG_TLS_NONE)
		return 0;
	p->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (p->ssl_ctx == NULL) {
		p->setup_error = util_xstrdup("4.7.5 cannot create TLS context");
		return -1;
	}
	SSL_CTX_set_min_proto_version(p->ssl_ctx, TLS1_2_VERSION);
	if (r->tls == CONFIG_TLS_DANE && SSL_CTX_dane_enable(p->ssl_ctx) <= 0) {
		p->setup_error = util_xstrdup("4.7.5 cannot enable DANE in the TLS context");
		return -1;
	}
	if (r->tls == CONFIG_TLS_VERIFY) {
		int ok = r->ca_file ? SSL_CTX_load_verify_locations(p->ssl_ctx, r->ca_file, NULL)
		                    : SSL_CTX_set_default_verify_paths(p->ssl_ctx);
		if (ok != 1) {
			char e[200];
			ERR_error_string_n(ERR_get_error(), e, sizeof(e));
			p->setup_error = util_xasprintf("4.7.5 cannot load CA %s: %s",
			                                r->ca_file ? r->ca_file : "(system)", e);
			return -1;
		}
	}
	return 0;
}

/* deliver_pool_new - a pool for route r (and domain for MX routes). */
static struct deliver_pool *deliver_pool_new(struct smtp_deliverer *dl,
                                             const struct config_route *r, const char *key)
{
	struct deliver_pool *p = util_xcalloc(1, sizeof(*p));
	p->dl = dl;
	p->key = util_xstrdup(key);
	deliver_route_copy(p, r);
	if (r->type == CONFIG_ROUTE_MX) {
		const char *slash = strchr(key, '/');
		p->domain = util_xstrdup(slash ? slash + 1 : "");
	}
	if (deliver_ssl_ctx(p, r) == 0 &&
	    (r->auth_file == NULL || deliver_check_auth_file(p, r->auth_file) == 0) &&
	    r->auth_user != NULL) {
		p->auth_user = util_xstrdup(r->auth_user);
		p->auth_password = util_xstrdup(r->auth_password ? r->auth_password : "");
	}
	if (p->auth_user != NULL && r->tls == CONFIG_TLS_NONE && p->setup_error == NULL)
		p->setup_error = util_xstrdup("4.7.0 AUTH needs TLS (route has tls = none)");
	if (p->setup_error)
		util_log_err("route=%s error=(%s)", p->name, p->setup_error);
	p->next = dl->pools;
	dl->pools = p;
	return p;
}

/* deliver_pool_free - unlink and free an empty pool. */
static void deliver_pool_free(struct deliver_pool *p)
{
	struct deliver_pool **pp = &p->dl->pools;
	while (*pp && *pp != p)
		pp = &(*pp)->next;
	if (*pp)
		*pp = p->next;
	for (size_t i = 0; i < p->nhosts; i++)
		free(p->hosts[i].host);
	free(p->hosts);
	if (p->ssl_ctx)
		SSL_CTX_free(p->ssl_ctx);
	if (p->sts_ctx)
		SSL_CTX_free(p->sts_ctx);
	free(p->mta_sts_ca_file);
	if (p->auth_password) {
		OPENSSL_cleanse(p->auth_password, strlen(p->auth_password));
		free(p->auth_password);
	}
	free(p->auth_user);
	free(p->setup_error);
	free(p->dead_error);
	free(p->domain);
	free(p->name);
	free(p->key);
	free(p);
}

/* deliver_pool_for - the live pool for a route (and domain). */
static struct deliver_pool *deliver_pool_for(struct smtp_deliverer *dl,
                                             const struct config_route *r, const char *domain)
{
	char *key = r->type == CONFIG_ROUTE_MX ? util_xasprintf("%s/%s", r->name, domain)
	                                       : util_xstrdup(r->name);
	for (char *k = key; *k; k++)
		if (*k >= 'A' && *k <= 'Z')
			*k = (char)(*k - 'A' + 'a');
	struct deliver_pool *p;
	for (p = dl->pools; p; p = p->next)
		if (!p->retired && strcmp(p->key, key) == 0)
			break;
	if (p == NULL)
		p = deliver_pool_new(dl, r, key);
	free(key);
	return p;
}

/* deliver_arrival - when the message was accepted, seconds since the epoch
 * (whole seconds for envelopes written before version 4). */
static double deliver_arrival(const struct queue_envelope *env)
{
	return (double)env->arrival + (double)env->arrival_us / 1e6;
}

/* smtp_deliver_job_report - hand the outcomes to the scheduler and log them. */
void smtp_deliver_job_report(struct deliver_job *j, const struct smtp_client_tx *tx,
                             const char *relay, const char *tls, const char *error)
{
	/* Postfix's meaning: delay = since arrival, delays = in the queue before
	 * this attempt / waiting for and setting up a connection / transfer.
	 * delay is measured on its own, from the arrival (to the µs), not
	 * added up from the parts. */
	int64_t now = util_mono_ms();
	int64_t sent = j->sent_ms ? j->sent_ms : now;
	double connect = (double)(sent - j->started_ms) / 1000.0;
	double transfer = (double)(now - sent) / 1000.0;
	double delay = (double)util_now_us() / 1e6 - deliver_arrival(j->env);
	if (delay < 0)
		delay = 0;
	/* An attempt-wide error is permanent when its RFC 3463 status class is
	 * 5 (no such domain, null MX): bounce now instead of retrying. */
	enum queue_outcome fallback =
	    error && error[0] == '5' && error[1] == '.' ? QUEUE_OUT_BOUNCE : QUEUE_OUT_DEFER;
	for (size_t i = 0; i < j->nidx; i++) {
		size_t k = j->idx[i];
		enum queue_outcome out = tx && tx->has[i] ? tx->out[i] : fallback;
		const char *reply = tx && tx->has[i] ? tx->reply[i] : error;
		if (reply == NULL)
			reply = "4.4.0 delivery failed";
		util_log_info("%s to=<%s> route=%s relay=%s delay=%.1f delays=%.1f/%.1f/%.1f "
		              "tls=%s status=%s (%s)",
		              j->env->id, j->env->rcpts[k].addr, j->route, relay ? relay : "none",
		              delay, j->queued_s, connect, transfer, tls ? tls : "none",
		              out == QUEUE_OUT_DONE     ? "sent"
		              : out == QUEUE_OUT_BOUNCE ? "bounced"
		                                        : "deferred",
		              reply);
		queue_delivery_result(j->d, k, out, reply);
		util_metrics_inc(out == QUEUE_OUT_DONE     ? "mxgate_route_delivered_total"
		                 : out == QUEUE_OUT_BOUNCE ? "mxgate_route_bounced_total"
		                                           : "mxgate_route_deferred_total",
		                 j->route);
		util_metrics_add("mxgate_route_delivery_seconds_total", j->route, connect + transfer);
	}
	queue_delivery_done(j->d, tx && tx->error ? tx->error : error);
}

/* deliver_conn_tlsa_reset - forget the TLSA records of the last target. */
static void deliver_conn_tlsa_reset(struct deliver_conn *cn)
{
	for (size_t i = 0; i < cn->ntlsa; i++)
		free((void *)cn->tlsa[i].data);
	free(cn->tlsa);
	cn->tlsa = NULL;
	cn->ntlsa = 0;
	cn->tlsa_for = 0;
	cn->host_tls = CONFIG_TLS_MAY;
}

/* deliver_conn_tls - the TLS level of the next connection: the route's, or
 * for tls = dane what the current target's TLSA records say. */
static enum config_tls_policy deliver_conn_tls(const struct deliver_conn *cn)
{
	if (cn->plain_retry)
		return CONFIG_TLS_NONE;
	if (cn->pool->tls != CONFIG_TLS_DANE)
		return cn->pool->tls;
	/* DANE first (RFC 8461 2: a host with usable TLSA records is DANE's),
	 * then an enforced MTA-STS policy (certificate verified for the MX
	 * name), then opportunistic TLS. */
	if (cn->host_tls != CONFIG_TLS_MAY)
		return cn->host_tls;
	if (cn->sts != NULL && cn->sts->mode == POLICY_MTASTS_ENFORCE)
		return CONFIG_TLS_VERIFY;
	return CONFIG_TLS_MAY;
}

/* deliver_sts_ctx - the pool's verifying context for MTA-STS enforce. */
static SSL_CTX *deliver_sts_ctx(struct deliver_pool *p)
{
	if (p->sts_ctx != NULL)
		return p->sts_ctx;
	p->sts_ctx = SSL_CTX_new(TLS_client_method());
	if (p->sts_ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(p->sts_ctx, TLS1_2_VERSION);
	if ((p->mta_sts_ca_file ? SSL_CTX_load_verify_locations(p->sts_ctx, p->mta_sts_ca_file, NULL)
	                        : SSL_CTX_set_default_verify_paths(p->sts_ctx)) != 1)
		util_log_err("route=%s error=(cannot load the MTA-STS CA store %s)", p->name,
		             p->mta_sts_ca_file ? p->mta_sts_ca_file : "(system)");
	return p->sts_ctx;
}

/* deliver_conn_clear - free what a connection owns (not the struct). */
static void deliver_conn_clear(struct deliver_conn *cn)
{
	if (cn->idle_timer)
		event_free(cn->idle_timer);
	cn->idle_timer = NULL;
	for (size_t i = 0; i < cn->naddrs; i++)
		free(cn->names[i]);
	free(cn->names);
	free(cn->addrs);
	free(cn->last_error);
	cn->names = NULL;
	cn->addrs = NULL;
	cn->last_error = NULL;
	cn->naddrs = 0;
	deliver_conn_tlsa_reset(cn);
	if (cn->sts != NULL) {
		policy_mtasts_clear(cn->sts);
		free(cn->sts);
		cn->sts = NULL;
	}
	smtp_deliver_free_targets(cn);
}

/* deliver_conn_remove - forget a connection (client already freed/quit). */
static void deliver_conn_remove(struct deliver_conn *cn)
{
	struct deliver_pool *p = cn->pool;
	struct deliver_conn **pp = &p->conns;
	while (*pp && *pp != cn)
		pp = &(*pp)->next;
	if (*pp)
		*pp = cn->next;
	p->nconns--;
	deliver_conn_clear(cn);
	free(cn);
	if (p->retired && p->nconns == 0 && p->wait_head == NULL)
		deliver_pool_free(p);
	else
		deliver_pool_pump(p);
}

/* smtp_deliver_free_targets - MX host list of a connection. */
void smtp_deliver_free_targets(struct deliver_conn *cn)
{
	for (size_t i = 0; cn->owned_targets && i < cn->ntargets; i++)
		free(cn->owned_targets[i].host);
	free(cn->owned_targets);
	cn->owned_targets = NULL;
	cn->targets = NULL;
	cn->ntargets = 0;
}

/* deliver_take_job - first waiting job of the pool, or NULL. */
static struct deliver_job *deliver_take_job(struct deliver_pool *p)
{
	struct deliver_job *j = p->wait_head;
	if (j) {
		p->wait_head = j->next;
		if (p->wait_head == NULL)
			p->wait_tail = NULL;
		p->nwait--;
	}
	return j;
}

/* deliver_conn_next_job - give an idle connection the next message, or
 * let it wait a little for one. */
static void deliver_conn_next_job(struct deliver_conn *cn)
{
	struct deliver_pool *p = cn->pool;
	struct deliver_job *j = cn->job; /* carried from a host (tx.failover) */
	if (j != NULL) {
		cn->job = NULL;
		goto send;
	}
	if (cn->msgs >= (unsigned)p->msgs_per_connection || p->retired) {
		deliver_quit(p->dl, cn->cl);
		cn->cl = NULL;
		deliver_conn_remove(cn);
		return;
	}
	j = deliver_take_job(p);
	if (j == NULL) {
		struct timeval tv = {.tv_sec = DELIVER_IDLE_SECONDS, .tv_usec = 0};
		event_add(cn->idle_timer, &tv);
		return;
	}
send:
	event_del(cn->idle_timer);
	j->sent_ms = util_mono_ms();
	cn->job = j;
	smtp_client_tx_init(&cn->tx, j->env, j->idx, j->nidx, j->msg_path);
	if (smtp_client_send(cn->cl, &cn->tx) != 0) {
		/* cannot happen on an idle client; put the job back and drop it */
		smtp_client_tx_clear(&cn->tx);
		cn->job = NULL;
		j->next = p->wait_head;
		p->wait_head = j;
		if (p->wait_tail == NULL)
			p->wait_tail = j;
		p->nwait++;
		smtp_client_free(cn->cl);
		cn->cl = NULL;
		deliver_conn_remove(cn);
	}
}

/* deliver_idle_cb - nobody needed the idle connection: QUIT. */
static void deliver_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct deliver_conn *cn = arg;
	deliver_quit(cn->pool->dl, cn->cl);
	cn->cl = NULL;
	deliver_conn_remove(cn);
}

/* deliver_fail_waiting - no host of the route answered: defer the waiting
 * jobs (all of them when no other connection of the pool is alive). */
static void deliver_fail_waiting(struct deliver_pool *p, const char *error, bool all)
{
	struct deliver_job *j;
	while ((j = deliver_take_job(p)) != NULL) {
		smtp_deliver_job_report(j, NULL, NULL, NULL, error);
		free(j);
		if (!all)
			break;
	}
}

/* deliver_conn_carry - the transaction failed over (tx.failover: the host
 * refused MAIL FROM, deferred every recipient or DATA, or the dialogue broke
 * before any of the message was sent - no final answer about a recipient,
 * so never a bounce): the connection keeps the message, leaves this host
 * and carries it to the next address/host like after a failed set-up; when
 * none is left the message alone is deferred (deliver_conn_try_next).  The
 * host did answer, so this is not a dead destination and the other waiting
 * messages are not failed with it. */
static void deliver_conn_carry(struct deliver_conn *cn, struct smtp_client *c)
{
	struct deliver_pool *p = cn->pool;
	free(cn->last_error);
	cn->last_error = util_xstrdup(
	    cn->tx.nidx > 0 && cn->tx.reply[0] ? cn->tx.reply[0] : "4.4.0 transaction failed");
	util_log_info("%s route=%s relay=%s status=failover error=(%s)", cn->job->env->id, p->name,
	              smtp_client_relay(c), cn->last_error);
	smtp_client_tx_clear(&cn->tx);
	deliver_quit(p->dl, c);
	cn->cl = NULL;
	cn->ready = false; /* setting up again, with the job */
	cn->reached = true;
	cn->plain_retry = false;
	cn->msgs = 0;
	deliver_conn_try_next(cn);
}

/* deliver_client_cb - events from the SMTP client of a connection. */
static void deliver_client_cb(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct deliver_conn *cn = arg;
	struct deliver_pool *p = cn->pool;
	switch (ev) {
	case SMTP_CLIENT_READY:
		cn->ready = true;
		if (p->dead_until_ms > 0)
			util_log_info("route=%s destination=%s status=alive relay=%s", p->name,
			              p->key, smtp_client_relay(c));
		p->failures = 0;
		p->dead_until_ms = 0;
		util_log_debug("route=%s relay=%s tls=%s status=connected", p->name,
		               smtp_client_relay(c), smtp_client_tls_info(c));
		deliver_conn_next_job(cn);
		return;
	case SMTP_CLIENT_TX_DONE: {
		struct deliver_job *j = cn->job;
		if (cn->tx.failover) {
			deliver_conn_carry(cn, c);
			return;
		}
		cn->job = NULL;
		cn->msgs++;
		smtp_deliver_job_report(j, &cn->tx, smtp_client_relay(c), smtp_client_tls_info(c),
		                        NULL);
		smtp_client_tx_clear(&cn->tx);
		free(j);
		if (smtp_client_is_usable(c)) {
			deliver_conn_next_job(cn);
		} else {
			smtp_client_free(c);
			cn->cl = NULL;
			deliver_conn_remove(cn);
		}
		return;
	}
	case SMTP_CLIENT_CLOSED:
		return; /* only quitting clients report it, to deliver_quit_cb */
	case SMTP_CLIENT_FAILED:
		free(cn->last_error);
		cn->last_error = util_xstrdup(smtp_client_error(c));
		smtp_client_free(c);
		cn->cl = NULL;
		if (cn->ready) { /* an idle connection went away */
			deliver_conn_remove(cn);
			return;
		}
		if (!cn->plain_retry && deliver_conn_tls(cn) == CONFIG_TLS_MAY &&
		    smtp_client_tls_failed(c)) {
			/* Opportunistic TLS (RFC 7435, like Postfix's "may"): a
			 * failed handshake is no reason to defer - the same host
			 * again, in plaintext. */
			util_log_info("route=%s relay=%s status=tls-fallback error=(%s)", p->name,
			              smtp_client_relay(c), cn->last_error);
			cn->plain_retry = true;
			deliver_conn_connect(cn, cn->next_addr - 1);
			return;
		}
		cn->plain_retry = false;
		util_log_info("route=%s relay=%s status=failover error=(%s)", p->name,
		              smtp_client_relay(c), cn->last_error);
		deliver_conn_try_next(cn);
		return;
	}
}

/* deliver_conn_connect - start a client towards address i. */
static void deliver_conn_connect(struct deliver_conn *cn, size_t i)
{
	struct deliver_pool *p = cn->pool;
	struct smtp_deliverer *dl = p->dl;
	struct smtp_client_conf conf = {
	    .host = cn->names[i],
	    .addr = cn->addrs[i],
	    .tls = deliver_conn_tls(cn),
	    .ssl_ctx = cn->plain_retry                              ? NULL
	               : p->tls == CONFIG_TLS_DANE &&
	                       deliver_conn_tls(cn) == CONFIG_TLS_VERIFY ? deliver_sts_ctx(p)
	                                                             : p->ssl_ctx,
	    .tlsa = cn->tlsa,
	    .ntlsa = cn->ntlsa,
	    .helo = dl->cfg->hostname,
	    .auth_user = p->auth_user,
	    .auth_password = p->auth_password,
	    .connect_timeout = p->connect_timeout,
	    .greeting_timeout = p->greeting_timeout,
	    .command_timeout = p->command_timeout,
	    .data_timeout = p->data_timeout,
	};
	cn->cl = smtp_client_new(dl->base, &conf, deliver_client_cb, cn);
}

/* deliver_conn_add_addrs - append resolved addresses of one host. */
static void deliver_conn_add_addrs(struct deliver_conn *cn, const char *name,
                                   const struct util_addr *addrs, size_t n)
{
	cn->addrs = util_xrealloc(cn->addrs, (cn->naddrs + n + 1) * sizeof(*cn->addrs));
	cn->names = util_xrealloc(cn->names, (cn->naddrs + n + 1) * sizeof(*cn->names));
	for (size_t i = 0; i < n; i++) {
		cn->addrs[cn->naddrs] = addrs[i];
		cn->names[cn->naddrs] = util_xstrdup(name);
		cn->naddrs++;
	}
}

/* deliver_dns_host_cb - addresses of the current host are known. */
static void deliver_dns_host_cb(void *arg, enum policy_dns_status st, const struct util_addr *addrs,
                                size_t n)
{
	struct deliver_conn *cn = arg;
	cn->dns_pending = false;
	if (cn->orphan) {
		free(cn);
		return;
	}
	if (st != POLICY_DNS_OK || n == 0) {
		free(cn->last_error);
		cn->last_error =
		    util_xasprintf("4.4.3 cannot resolve %s (%s)", cn->targets[cn->target].host,
		                   st == POLICY_DNS_NXDOMAIN   ? "no such host"
		                   : st == POLICY_DNS_TEMPFAIL ? "temporary failure"
		                                               : "no address");
	} else {
		deliver_conn_add_addrs(cn, cn->targets[cn->target].host, addrs, n);
	}
	cn->target++;
	deliver_conn_try_next(cn);
}

/* deliver_wants_tlsa - tls = dane and a DNSSEC-validated MX answer: the
 * hosts' TLSA records decide (RFC 7672 2.2.1: an insecure MX RRset gives no
 * DANE; then the route acts as tls = may). */
static bool deliver_wants_tlsa(const struct deliver_conn *cn)
{
	const struct deliver_pool *p = cn->pool;
	return p->tls == CONFIG_TLS_DANE && p->type == CONFIG_ROUTE_MX && cn->mx_secure &&
	       p->dl->dns != NULL && policy_dns_is_validating(p->dl->dns);
}

/* deliver_dns_tlsa_cb - TLSA records of the current target host. */
static void deliver_dns_tlsa_cb(void *arg, enum policy_dns_status st, bool secure,
                                const struct policy_tlsa *recs, size_t n)
{
	struct deliver_conn *cn = arg;
	cn->dns_pending = false;
	if (cn->orphan) {
		free(cn);
		return;
	}
	const struct config_host *h = &cn->targets[cn->target];
	deliver_conn_tlsa_reset(cn);
	cn->tlsa_for = cn->target + 1;
	if (st == POLICY_DNS_BOGUS || st == POLICY_DNS_TEMPFAIL) {
		/* RFC 7672 2.2: no validated answer and no validated denial -
		 * the host may be DANE-protected; never downgrade, skip it. */
		free(cn->last_error);
		cn->last_error = util_xasprintf("4.7.5 TLSA lookup for _%d._tcp.%s failed (%s)",
		                                h->port, h->host, policy_dns_status_str(st));
		util_log_info("route=%s host=%s dane=skip error=(%s)", cn->pool->name, h->host,
		              cn->last_error);
		cn->target++;
		deliver_conn_try_next(cn);
		return;
	}
	if (st == POLICY_DNS_OK && secure) {
		cn->tlsa = util_xcalloc(n + 1, sizeof(*cn->tlsa));
		for (size_t i = 0; i < n; i++) {
			/* RFC 7672 3.1: only DANE-TA(2) and DANE-EE(3), selector
			 * 0/1, matching type 0/1/2 are usable for SMTP */
			if ((recs[i].usage != 2 && recs[i].usage != 3) || recs[i].selector > 1 ||
			    recs[i].mtype > 2)
				continue;
			unsigned char *copy = util_xmalloc(recs[i].len + 1);
			memcpy(copy, recs[i].data, recs[i].len);
			cn->tlsa[cn->ntlsa] = recs[i];
			cn->tlsa[cn->ntlsa].data = copy;
			cn->ntlsa++;
		}
		/* RFC 7672 2.2: secure TLSA records, none usable - TLS is still
		 * mandatory, without authentication. */
		cn->host_tls = cn->ntlsa > 0 ? CONFIG_TLS_DANE : CONFIG_TLS_ENCRYPT;
	}
	util_log_debug("route=%s host=%s tlsa=%s usable=%zu tls=%s", cn->pool->name, h->host,
	               st == POLICY_DNS_OK ? (secure ? "secure" : "insecure")
	                                   : policy_dns_status_str(st),
	               cn->ntlsa,
	               cn->host_tls == CONFIG_TLS_DANE      ? "dane"
	               : cn->host_tls == CONFIG_TLS_ENCRYPT ? "encrypt"
	                                                    : "may");
	deliver_conn_try_next(cn);
}

/* deliver_conn_try_next - next address, else resolve the next host, else
 * give up on every waiting job with the last error. */
static void deliver_conn_try_next(struct deliver_conn *cn)
{
	struct deliver_pool *p = cn->pool;
	bool capped = p->type == CONFIG_ROUTE_MX && cn->next_addr >= DELIVER_MX_ADDRESS_LIMIT;
	if (!capped && cn->next_addr < cn->naddrs) {
		deliver_conn_connect(cn, cn->next_addr++);
		return;
	}
	while (!capped && cn->target < cn->ntargets) {
		const struct config_host *h = &cn->targets[cn->target];
		struct util_addr a;
		if (cn->sts != NULL && cn->sts->mode == POLICY_MTASTS_ENFORCE &&
		    !policy_mtasts_mx_matches(cn->sts, h->host)) {
			/* RFC 8461 4.1: an MX host the policy does not list is
			 * never used in enforce mode. */
			free(cn->last_error);
			cn->last_error = util_xasprintf(
			    "4.7.5 MX host %s is not in the MTA-STS policy of %s", h->host, p->domain);
			util_log_info("route=%s host=%s mta-sts=enforce status=skipped", p->name,
			              h->host);
			cn->target++;
			continue;
		}
		if (util_addr_parse_numeric(h->host, h->port, &a) == 0) {
			deliver_conn_tlsa_reset(cn); /* no TLSA for an address */
			deliver_conn_add_addrs(cn, h->host, &a, 1);
			cn->target++;
			deliver_conn_connect(cn, cn->next_addr++);
			return;
		}
		if (p->dl->dns == NULL) {
			free(cn->last_error);
			cn->last_error =
			    util_xasprintf("4.4.3 cannot resolve %s (no resolver)", h->host);
			cn->target++;
			continue;
		}
		if (deliver_wants_tlsa(cn) && cn->tlsa_for != cn->target + 1) {
			cn->dns_pending = true;
			policy_dns_resolve_tlsa(p->dl->dns, h->host, h->port, deliver_dns_tlsa_cb, cn);
			return;
		}
		cn->dns_pending = true;
		policy_dns_resolve_host(p->dl->dns, h->host, h->port, deliver_dns_host_cb, cn);
		return;
	}
	char *err = cn->last_error ? cn->last_error : util_xstrdup("4.4.1 no host to deliver to");
	cn->last_error = NULL;
	/* Only a routing fact may bounce here; whatever a host said while
	 * setting up a session is temporary for the messages. */
	if (!cn->permanent && err[0] == '5')
		err[0] = '4';
	cn->ready = true; /* nothing more to try */
	if (cn->job != NULL) {
		/* a message carried away from a host (tx.failover): every
		 * host refused it (or failed) - defer it alone */
		struct deliver_job *j = cn->job;
		cn->job = NULL;
		smtp_deliver_job_report(j, NULL, NULL, NULL, err);
		free(j);
	}
	if (cn->reached) {
		/* a host answered on this connection: the destination is alive */
		util_log_info("route=%s status=no-more-hosts error=(%s)", p->name, err);
		deliver_conn_remove(cn);
		free(err);
		return;
	}
	bool alone = p->nconns == 1;
	util_log_warn("route=%s status=unreachable error=(%s)", p->name, err);
	if (!cn->permanent && ++p->failures >= p->dead_after) {
		/* dead destination (Postfix qmgr): defer without connecting
		 * until dead_time has passed, then probe with one connection */
		p->dead_until_ms = util_mono_ms() + (int64_t)p->dead_time * 1000;
		free(p->dead_error);
		p->dead_error = util_xasprintf("4.4.1 delivery temporarily suspended: %s", err);
		util_log_warn("route=%s destination=%s status=dead failures=%d retry_after=%ds "
		              "error=(%s)",
		              p->name, p->key, p->failures, p->dead_time, err);
		alone = true;
	}
	/* report first: removing the connection pumps the pool, which would
	 * otherwise open a new connection for the same waiting jobs */
	deliver_fail_waiting(p, err, alone);
	deliver_conn_remove(cn);
	free(err);
}

/* deliver_dns_mx_cb - the MX hosts of the domain become the targets. */
static void deliver_dns_mx_cb(void *arg, enum policy_dns_status st, bool secure,
                              const char *const *hosts, size_t n)
{
	struct deliver_conn *cn = arg;
	cn->dns_pending = false;
	if (cn->orphan) {
		free(cn);
		return;
	}
	cn->mx_secure = secure;
	if (st == POLICY_DNS_OK && n > 0) {
		if (n > DELIVER_MX_HOST_LIMIT)
			n = DELIVER_MX_HOST_LIMIT; /* the most preferred ones */
		cn->owned_targets = util_xcalloc(n + 1, sizeof(*cn->owned_targets));
		for (size_t i = 0; i < n; i++) {
			cn->owned_targets[i].host = util_xstrdup(hosts[i]);
			cn->owned_targets[i].port = cn->pool->mx_port;
		}
		cn->targets = cn->owned_targets;
		cn->ntargets = n;
	} else if (st == POLICY_DNS_NODATA) {
		/* RFC 7505 3, 4.1: a null MX - the domain accepts no mail;
		 * fail at once, permanently, with 5.1.10 (RFC 7505 / RFC 3463
		 * registry: "Recipient address has null MX"). */
		cn->permanent = true;
		cn->last_error =
		    util_xasprintf("5.1.10 recipient domain %s has a null MX (RFC 7505): "
		                   "it accepts no mail",
		                   cn->pool->domain);
	} else if (st == POLICY_DNS_NXDOMAIN) {
		cn->permanent = true;
		cn->last_error = util_xasprintf("5.1.2 MX lookup for %s failed (no such domain)",
		                                cn->pool->domain);
	} else if (st == POLICY_DNS_OK) {
		/* MX records, none naming a usable host (not LDH, truncated):
		 * broken DNS data that its owner may fix - temporary, like
		 * Postfix's "malformed or unexpected name server reply" */
		cn->last_error =
		    util_xasprintf("4.4.3 MX lookup for %s: malformed DNS reply (no MX "
		                   "record names a valid host)",
		                   cn->pool->domain);
	} else {
		cn->last_error = util_xasprintf("4.4.3 MX lookup for %s failed (temporary failure)",
		                                cn->pool->domain);
	}
	deliver_conn_try_next(cn);
}

/* deliver_sts_cb - the domain's MTA-STS policy (or none): keep a copy for
 * this connection, then look up the MX hosts. */
static void deliver_sts_cb(void *arg, const struct policy_mtasts *pol)
{
	struct deliver_conn *cn = arg;
	if (cn->orphan) {
		cn->dns_pending = false;
		free(cn);
		return;
	}
	if (pol != NULL && pol->mode != POLICY_MTASTS_NONE) {
		cn->sts = util_xcalloc(1, sizeof(*cn->sts));
		policy_mtasts_copy(cn->sts, pol);
	}
	policy_dns_resolve_mx(cn->pool->dl->dns, cn->pool->domain, deliver_dns_mx_cb, cn);
}

/* deliver_conn_open - a new connection for the pool. */
static void deliver_conn_open(struct deliver_pool *p)
{
	struct deliver_conn *cn = util_xcalloc(1, sizeof(*cn));
	cn->pool = p;
	cn->host_tls = CONFIG_TLS_MAY;
	cn->idle_timer = evtimer_new(p->dl->base, deliver_idle_cb, cn);
	cn->next = p->conns;
	p->conns = cn;
	p->nconns++;
	if (p->type == CONFIG_ROUTE_MX) {
		if (p->dl->dns == NULL) {
			cn->last_error = util_xstrdup("4.4.3 MX route without a resolver");
			deliver_conn_try_next(cn);
			return;
		}
		cn->dns_pending = true;
		if (p->tls == CONFIG_TLS_DANE && p->dl->mtasts != NULL)
			smtp_mtasts_get(p->dl->mtasts, p->domain, p->mta_sts_port, p->mta_sts_ca_file,
			                p->connect_timeout, deliver_sts_cb, cn);
		else
			policy_dns_resolve_mx(p->dl->dns, p->domain, deliver_dns_mx_cb, cn);
		return;
	}
	cn->targets = p->hosts;
	cn->ntargets = p->nhosts;
	deliver_conn_try_next(cn);
}

/* deliver_pool_pump - match waiting jobs with idle or new connections. */
static void deliver_pool_pump(struct deliver_pool *p)
{
	if (p->setup_error != NULL) {
		deliver_fail_waiting(p, p->setup_error, true);
		return;
	}
	for (struct deliver_conn *cn = p->conns; cn && p->wait_head; cn = cn->next)
		if (cn->ready && cn->cl && cn->job == NULL && smtp_client_is_usable(cn->cl))
			deliver_conn_next_job(cn);
	if (p->dead_until_ms > 0 && util_mono_ms() < p->dead_until_ms) {
		deliver_fail_waiting(p, p->dead_error, true); /* known down: no connection */
		return;
	}
	size_t opening = 0;
	for (struct deliver_conn *cn = p->conns; cn; cn = cn->next)
		if (!cn->ready && cn->job == NULL) /* not one carrying its own message */
			opening++;
	/* After a failed connection (and to probe a destination whose dead_time
	 * is over) one connection at a time, until one reaches a host. */
	size_t max_opening = p->failures > 0 ? 1 : (size_t)p->max_connections;
	while (p->nwait > opening && opening < max_opening && p->nconns < p->max_connections) {
		deliver_conn_open(p);
		opening++;
	}
}

/* deliver_start - queue_deliver_ops.start. */
static void deliver_start(void *ctx, struct queue_delivery *d, const struct queue_envelope *env,
                          const size_t *idx, size_t nidx, const char *msg_path,
                          const struct config_route *route)
{
	struct smtp_deliverer *dl = ctx;
	struct deliver_job *j = util_xcalloc(1, sizeof(*j));
	j->dl = dl;
	j->d = d;
	j->env = env;
	j->idx = idx;
	j->nidx = nidx;
	j->msg_path = msg_path;
	j->started_ms = util_mono_ms();
	j->queued_s = (double)util_now_us() / 1e6 - deliver_arrival(env);
	if (j->queued_s < 0)
		j->queued_s = 0;
	snprintf(j->route, sizeof(j->route), "%s", route->name ? route->name : "");
	if (route->type == CONFIG_ROUTE_DIRECTORY) {
		j->sent_ms = j->started_ms;   /* nothing to connect to */
		smtp_deliver_dir_start(dl, j, route->directory);
		return;
	}
	const char *domain = util_domain_of(env->rcpts[idx[0]].addr);
	struct deliver_pool *p = deliver_pool_for(dl, route, domain ? domain : "");
	if (p->wait_tail)
		p->wait_tail->next = j;
	else
		p->wait_head = j;
	p->wait_tail = j;
	p->nwait++;
	/* Start from the loop, never inside start (the contract): an idle
	 * connection would otherwise finish synchronously on error paths. */
	event_active(dl->kick, 0, 0);
}

/* deliver_kick_cb - pump every pool with waiting jobs. */
static void deliver_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_deliverer *dl = arg;
	struct deliver_pool *next;
	for (struct deliver_pool *p = dl->pools; p; p = next) {
		next = p->next;
		if (p->wait_head)
			deliver_pool_pump(p);
	}
}

const struct queue_deliver_ops smtp_deliver_ops = {.start = deliver_start};

/* smtp_deliverer_new - an empty set of pools. */
struct smtp_deliverer *smtp_deliverer_new(struct event_base *base, const struct config *cfg,
                                          struct policy_dns *dns, char *err, size_t errlen)
{
	struct smtp_deliverer *dl = util_xcalloc(1, sizeof(*dl));
	dl->base = base;
	dl->cfg = cfg;
	dl->dns = dns;
	dl->kick = event_new(base, -1, 0, deliver_kick_cb, dl);
	if (dl->kick == NULL) {
		snprintf(err, errlen, "cannot create deliverer events");
		free(dl);
		return NULL;
	}
	dl->mtasts = dns != NULL ? smtp_mtasts_new(base, dns) : NULL;
	return dl;
}

/* smtp_deliverer_set_config - new jobs use cfg; old pools retire. */
void smtp_deliverer_set_config(struct smtp_deliverer *dl, const struct config *cfg)
{
	dl->cfg = cfg;
	struct deliver_pool *next;
	for (struct deliver_pool *p = dl->pools; p; p = next) {
		next = p->next;
		p->retired = true;
		struct deliver_conn *cnext;
		for (struct deliver_conn *cn = p->conns; cn; cn = cnext) {
			cnext = cn->next;
			if (cn->ready && cn->cl && cn->job == NULL) {
				deliver_quit(dl, cn->cl);
				cn->cl = NULL;
				deliver_conn_remove(cn); /* may free p when it was the last */
			}
		}
	}
}

/* smtp_deliverer_forget_dead - see smtp.h. */
void smtp_deliverer_forget_dead(struct smtp_deliverer *dl)
{
	for (struct deliver_pool *p = dl->pools; p; p = p->next) {
		if (p->dead_until_ms > 0)
			util_log_info("route=%s destination=%s status=retry by=postmaster", p->name,
			              p->key);
		p->dead_until_ms = 0;
		p->failures = 0;
	}
}

/* smtp_deliverer_free - close every connection; jobs still in flight are
 * reported as deferred ("shutting down") so the scheduler can let go of
 * them (it is normally freed first; then the reports only free memory). */
void smtp_deliverer_free(struct smtp_deliverer *dl)
{
	if (dl == NULL)
		return;
	static const char shutdown_err[] = "4.3.2 delivery interrupted: mxgate is shutting down";
	smtp_deliver_dir_shutdown(dl, shutdown_err);
	while (dl->pools) {
		struct deliver_pool *p = dl->pools;
		struct deliver_job *j;
		while ((j = deliver_take_job(p)) != NULL) {
			smtp_deliver_job_report(j, NULL, NULL, NULL, shutdown_err);
			free(j);
		}
		while (p->conns) {
			struct deliver_conn *cn = p->conns;
			p->conns = cn->next;
			smtp_client_free(cn->cl);
			if (cn->job) {
				smtp_client_tx_clear(&cn->tx);
				smtp_deliver_job_report(cn->job, NULL, NULL, NULL, shutdown_err);
				free(cn->job);
			}
			deliver_conn_clear(cn);
			if (cn->dns_pending)
				cn->orphan = true; /* the resolver's answer frees it */
			else
				free(cn);
		}
		p->nconns = 0;
		deliver_pool_free(p);
	}
	smtp_mtasts_free(dl->mtasts); /* answers waiting connections (orphans) */
	for (size_t i = 0; i < dl->nquitting; i++)
		smtp_client_free(dl->quitting[i]);
	free(dl->quitting);
	event_free(dl->kick);
	free(dl);
}
