/*
 * gw-admin.c - the report dashboard (issue 15): [admin] listen serves a
 * small page (HTML + one script, both compiled in: no CDN, works offline)
 * and a read-only JSON API over the reports received ([reports] ingest):
 *   GET /            the page            GET /app.js  its script
 *                    (both in gw-admin-page.c)
 *   GET /api/sources|daily|inventory|tlsrpt|verdicts?days=N, /api/info
 *   POST /api/approve (domain=&ip=&approved=0|1: the sender inventory)
 *   POST /api/seen (domain=&until=T: "mark as seen", the last look)
 * The API needs "Authorization: Bearer TOKEN" ([admin] token; compared as
 * SHA-256 digests with CRYPTO_memcmp: constant time, any length); the page
 * and script hold no data and are public.  The page takes the token from
 * its URL fragment (#token=..., never sent to the server) or a form and
 * keeps it in sessionStorage.  No token configured: no dashboard.
 *
 * Transport ([admin] tls, config_admin_https): HTTPS with the gateway's
 * [tls] certificate - the SMTP server's own context builder
 * (smtp_server_tls_ctx_new: TLS 1.2+, [tls] min_version and ciphers) -
 * through evhttp_set_bevcb and an OpenSSL bufferevent per connection, with
 * Strict-Transport-Security on every answer; or plain HTTP, which
 * check-config allows beyond loopback only with allow_plain_http = yes.
 * A reload re-reads the certificate (gw_admin_reload): new connections get
 * the new context, connections in progress keep a reference to the old one.
 * evhttp's timeout is per read, so a client that drips its request (or
 * its ClientHello) a byte at a time would hold a connection - and a
 * descriptor the SMTP side shares - forever: the connection guard
 * (gw-httpguard.c) shuts down a connection that has no request answered
 * ADMIN_REQUEST_SECS after its accept or its last answer, and keeps at
 * most ADMIN_MAX_CONNS open (more are closed at once, logged when the cap
 * is reached), plain HTTP and HTTPS alike.
 *
 * Report strings are attacker-controlled: the API returns them JSON-escaped
 * and the script only ever sets textContent; the page's
 * Content-Security-Policy forbids inline script besides.
 *
 * MTA-STS per domain (GET /api/info, the TLS-RPT view): for each accepted
 * domain - the list of the config now, replaced at a reload - the mode
 * mxgate serves for it (the policy of the start config: [mta_sts] mode and
 * listen change only with a restart, as gw-mtasts.c serves them) and what
 * its _mta-sts TXT record publishes, looked up through mxgate's resolver
 * per request: the served policy's id ("current", so the served mode is the
 * one in force), another id ("stale": senders may hold an older policy) or
 * none.  At most ADMIN_STS_DOMAINS domains.
 *
 * Threads: the listener runs its own event_base in its own thread, so a
 * slow SQLite read never holds up SMTP.  It copies what it needs from the
 * config at start (a reload does not change it: restart), except the
 * certificate, swapped under tls_mu (the loop thread writes, the admin
 * thread reads), and the accepted domains (under tls_mu too).
 * Ownership: struct gw_admin owns the thread, base, evhttp, SSL_CTX and
 * copies.
 */
#include "gw.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "policy.h"
#include "reports.h"
#include "smtp.h"

/* One year, the usual HSTS lifetime (RFC 6797 section 6.1.1); no
 * includeSubDomains: the gateway's name may share a parent with sites
 * mxgate knows nothing of. */
#define ADMIN_HSTS "max-age=31536000"

/* HTTPS: a handshake must be over this many seconds after the accept, and
 * no more connections than this are open at once (a dashboard has a few). */
#define ADMIN_REQUEST_SECS 10
#define ADMIN_MAX_CONNS    128

struct gw_admin {
	struct event_base *base;
	struct evhttp *http;
	pthread_t thread;
	bool started;
	pthread_mutex_t tls_mu; /* guards tls */
	SSL_CTX *tls;           /* NULL: plain HTTP */
	bool https;             /* tls set at start (never changes after) */
	unsigned char token_sha[SHA256_DIGEST_LENGTH];
	struct config cfg; /* only reports_database, queue_dir, mta_sts_mode set (owned) */
	const char *sts_mode;       /* the served MTA-STS policy's mode (static) */
	char sts_id[21];            /* and its id */
	bool sts_served;            /* [mta_sts] listen: mxgate serves it over HTTPS */
	struct util_strlist domains; /* accepted domains of the config now (tls_mu) */
	struct policy_dns *dns;      /* borrowed (gw's resolver, freed after us) */
	struct util_ttlmap *rdns;    /* source address -> struct admin_name (admin thread) */
	struct gw_http_guard *guard; /* request deadline, connection cap (admin thread) */
};

/* The sources' reverse names (FCrDNS), cached in the admin thread: an
 * hour for a name, ten minutes for none, at most ADMIN_RDNS_KEYS
 * addresses; the misses of one request are looked up together within
 * ADMIN_RDNS_BUDGET_MS, so a page of unknown sources waits at most that. */
#define ADMIN_RDNS_KEYS      20000
#define ADMIN_RDNS_BUDGET_MS 2000
#define ADMIN_RDNS_TTL       3600
#define ADMIN_RDNS_NEG_TTL   600
struct admin_name {
	char name[256]; /* "" = none */
};

/* admin_rdns - reports_dash_rdns.fn: the cached names, the misses looked
 * up at once (policy_dns_confirmed_names). */
static void admin_rdns(void *arg, const char *const *ips, size_t n, char **names)
{
	struct gw_admin *a = arg;
	const char **miss = util_xcalloc(n, sizeof(*miss));
	size_t *at = util_xcalloc(n, sizeof(*at));
	char **got = util_xcalloc(n, sizeof(*got));
	int64_t now = (int64_t)time(NULL);
	size_t nmiss = 0;

	for (size_t i = 0; i < n; i++) {
		struct admin_name *c = util_ttlmap_get(a->rdns, ips[i], strlen(ips[i]), now);
		if (c != NULL) {
			names[i] = c->name[0] ? util_xstrdup(c->name) : NULL;
			continue;
		}
		miss[nmiss] = ips[i];
		at[nmiss++] = i;
	}
	if (nmiss > 0)
		policy_dns_confirmed_names(a->dns, miss, nmiss, ADMIN_RDNS_BUDGET_MS, got);
	for (size_t k = 0; k < nmiss; k++) {
		bool fresh;
		struct admin_name *c =
		    util_ttlmap_put(a->rdns, miss[k], strlen(miss[k]), now, &fresh);
		if (c != NULL) {
			snprintf(c->name, sizeof(c->name), "%s", got[k] ? got[k] : "");
			*util_ttlmap_expires(c) =
			    now + (got[k] ? ADMIN_RDNS_TTL : ADMIN_RDNS_NEG_TTL);
		}
		names[at[k]] = got[k];
	}
	free(got);
	free(at);
	free(miss);
}

#define ADMIN_STS_DOMAINS 100

/* sts_published - what _mta-sts.domain publishes: "current" (the id of the
 * policy mxgate serves), "stale" (another id, copied to *id), "none" or
 * "unknown" (the lookup failed). */
static const char *sts_published(struct gw_admin *a, const char *domain, char *id, size_t idlen)
{
	struct util_strlist txt = {0};
	bool secure = false;
	const char *r = "none";
	char *name = util_xasprintf("_mta-sts.%s", domain);
	enum policy_dns_status st = a->dns != NULL ? policy_dns_txt_sync(a->dns, name, &txt, &secure)
	                                           : POLICY_DNS_TEMPFAIL;

	id[0] = '\0';
	if (st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS)
		r = "unknown";
	for (size_t i = 0; st == POLICY_DNS_OK && i < txt.n; i++) {
		if (strncmp(txt.v[i], "v=STSv1", 7) != 0)
			continue;
		const char *p = strstr(txt.v[i], "id=");
		size_t n = p != NULL ? strcspn(p + 3, "; \t") : 0;
		snprintf(id, idlen, "%.*s", (int)n, p != NULL ? p + 3 : "");
		r = strcmp(id, a->sts_id) == 0 ? "current" : "stale";
		break;
	}
	util_strlist_free(&txt);
	free(name);
	return r;
}

/* admin_info - GET /api/info: the MTA-STS mode mxgate serves, and per
 * accepted domain what it serves and what DNS publishes for it now. */
static char *admin_info(struct gw_admin *a)
{
	struct util_strlist doms = {0};
	json_t *list = json_array();
	char id[64];

	pthread_mutex_lock(&a->tls_mu);
	for (size_t i = 0; i < a->domains.n && i < ADMIN_STS_DOMAINS; i++)
		util_strlist_add(&doms, a->domains.v[i]);
	pthread_mutex_unlock(&a->tls_mu);
	for (size_t i = 0; i < doms.n; i++) {
		const char *pub = sts_published(a, doms.v[i], id, sizeof(id));
		json_array_append_new(
		    list, json_pack("{s:s, s:o, s:s, s:o, s:o}", "domain", doms.v[i], "served",
		                    a->sts_served ? json_string(a->sts_mode) : json_null(),
		                    "published", pub, "published_id",
		                    id[0] ? json_string(id) : json_null(), "published_mode",
		                    strcmp(pub, "current") == 0 ? json_string(a->sts_mode)
		                                                : json_null()));
	}
	json_t *o = json_pack("{s:s, s:b, s:s, s:o}", "mta_sts_mode", a->sts_mode, "mta_sts_served",
	                      a->sts_served, "mta_sts_id", a->sts_id, "domains", list);
	char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	util_strlist_free(&doms);
	return s;
}

/* authorized - the request carries the configured bearer token. */
static bool authorized(struct gw_admin *a, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	unsigned char d[SHA256_DIGEST_LENGTH];

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	SHA256((const unsigned char *)h + 7, strlen(h + 7), d);
	return CRYPTO_memcmp(d, a->token_sha, sizeof(d)) == 0;
}

static void send_body(struct evhttp_request *req, int code, const char *reason, const char *type,
                      const char *data, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evbuffer_new();
	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "Content-Security-Policy",
	                  "default-src 'none'; script-src 'self'; connect-src 'self'; "
	                  "style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
	                  "form-action 'none'; frame-ancestors 'none'");
	if (b != NULL)
		evbuffer_add(b, data, len);
	evhttp_send_reply(req, code, reason, b);
	if (b != NULL)
		evbuffer_free(b);
}

/* admin_post - POST /api/approve (domain=&ip=&approved=0|1: the sender
 * inventory) and POST /api/seen (domain=&until=T: the last look), form
 * bodies: the only writes the dashboard makes. */
static void admin_post(struct gw_admin *a, struct evhttp_request *req, bool seen)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = in ? evbuffer_get_length(in) : 0;
	char body[4097], err[256];
	struct evkeyvalq q;
	int rc = -1;

	memset(&q, 0, sizeof(q));
	if (n == 0 || n >= sizeof(body)) {
		send_body(req, HTTP_BADREQUEST, "Bad Request", "application/json",
		          "{\"error\":\"body\"}", 16);
		return;
	}
	evbuffer_remove(in, body, n);
	body[n] = '\0';
	if (evhttp_parse_query_str(body, &q) == 0) {
		const char *d = evhttp_find_header(&q, "domain"),
		           *ip = evhttp_find_header(&q, "ip"),
		           *ap = evhttp_find_header(&q, "approved"),
		           *until = evhttp_find_header(&q, "until");
		if (seen && d && d[0])
			rc = reports_dash_seen(&a->cfg, d, until ? strtoll(until, NULL, 10) : -1,
			                       err, sizeof(err));
		else if (!seen && d && ip && ap && d[0] && ip[0])
			rc = reports_dash_approve(&a->cfg, d, ip, strcmp(ap, "1") == 0, err,
			                          sizeof(err));
		else
			snprintf(err, sizeof(err), "%s", seen ? "domain needed"
			                                      : "domain, ip and approved needed");
	} else {
		snprintf(err, sizeof(err), "bad form");
	}
	evhttp_clear_headers(&q);
	if (rc < 0) {
		util_log_warn("- admin %s error=\"%s\"", seen ? "seen" : "approve", err);
		send_body(req, HTTP_BADREQUEST, "Bad Request", "application/json",
		          "{\"error\":\"update\"}", 18);
		return;
	}
	util_log_info("- admin %s", seen ? "sources marked as seen" : "source approval changed");
	send_body(req, HTTP_OK, "OK", "application/json", "{}", 2);
}

static void admin_request_cb(struct evhttp_request *req, void *arg)
{
	struct gw_admin *a = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;

	gw_http_guard_answered(a->guard, req); /* a keep-alive connection: a new deadline */
	if (a->https)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		                  "Strict-Transport-Security", ADMIN_HSTS);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	bool post_ok = path != NULL &&
	               (strcmp(path, "/api/approve") == 0 || strcmp(path, "/api/seen") == 0);
	if (cmd != EVHTTP_REQ_GET && !(cmd == EVHTTP_REQ_POST && post_ok)) {
		evhttp_send_error(req, HTTP_BADMETHOD, "Method Not Allowed");
		return;
	}
	if (path == NULL) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	if (strcmp(path, "/") == 0) {
		send_body(req, HTTP_OK, "OK", "text/html; charset=utf-8", gw_admin_html,
		          gw_admin_html_len);
		return;
	}
	if (strcmp(path, "/app.js") == 0) {
		send_body(req, HTTP_OK, "OK", "text/javascript; charset=utf-8", gw_admin_js,
		          gw_admin_js_len);
		return;
	}
	if (strncmp(path, "/api/", 5) != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	if (!authorized(a, req)) {
		util_log_info("- admin refused path=%s reason=token", path);
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
		                  "Bearer realm=\"mxgate\"");
		send_body(req, 401, "Unauthorized", "application/json", "{\"error\":\"token\"}",
		          17);
		return;
	}
	if (cmd == EVHTTP_REQ_POST) {
		admin_post(a, req, strcmp(path, "/api/seen") == 0);
		return;
	}
	if (strcmp(path, "/api/info") == 0) {
		char *info = admin_info(a);
		if (info == NULL)
			send_body(req, HTTP_INTERNAL, "Error", "application/json",
			          "{\"error\":\"info\"}", 16);
		else
			send_body(req, HTTP_OK, "OK", "application/json", info, strlen(info));
		free(info);
		return;
	}
	int days = 30;
	struct evkeyvalq q;
	memset(&q, 0, sizeof(q));
	if (query && evhttp_parse_query_str(query, &q) == 0) {
		const char *d = evhttp_find_header(&q, "days");
		if (d != NULL)
			days = atoi(d);
		evhttp_clear_headers(&q);
	}
	if (days < 1 || days > 3650)
		days = 30;
	struct util_buf out;
	char err[256];
	util_buf_init(&out);
	struct reports_dash_rdns rd = {a->dns != NULL ? admin_rdns : NULL, a};
	if (reports_dash_json(&a->cfg, path + 5, days, &rd, &out, err, sizeof(err)) < 0) {
		util_log_warn("- admin path=%s error=\"%s\"", path, err);
		send_body(req, HTTP_INTERNAL, "Error", "application/json", "{\"error\":\"store\"}",
		          17);
	} else {
		send_body(req, HTTP_OK, "OK", "application/json", out.data ? out.data : "[]",
		          out.data ? out.len : 2);
	}
	util_buf_free(&out);
}

/* admin_bevcb - every connection of the dashboard (admin thread), guarded:
 * TLS for an HTTPS dashboard (the SSL holds its own reference to the
 * context), plain otherwise. */
static struct bufferevent *admin_bevcb(struct event_base *base, void *arg)
{
	struct gw_admin *a = arg;
	struct bufferevent *bev;
	SSL *ssl;

	if (!a->https)
		return gw_http_guard_track(a->guard,
		                           bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE));
	pthread_mutex_lock(&a->tls_mu);
	ssl = SSL_new(a->tls);
	pthread_mutex_unlock(&a->tls_mu);
	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		SSL_free(ssl); /* libevent 2.1 leaves it to us on failure */
	return gw_http_guard_track(a->guard, bev);
}

/* gw_admin_reload - see gw.h. */
void gw_admin_reload(struct gw_admin *a, const struct config *cfg)
{
	char err[512];
	SSL_CTX *ctx, *old;

	if (a == NULL)
		return;
	pthread_mutex_lock(&a->tls_mu); /* the accepted domains of the new config */
	util_strlist_free(&a->domains);
	for (size_t i = 0; i < cfg->accepted_domains.n; i++)
		util_strlist_add(&a->domains, cfg->accepted_domains.v[i]);
	pthread_mutex_unlock(&a->tls_mu);
	if (!a->https)
		return;
	ctx = smtp_server_tls_ctx_new(cfg, err, sizeof(err));
	if (ctx == NULL) {
		util_log_err("- reload: admin: %s; still serving the old certificate",
		             err[0] ? err : "no [tls] cert_file");
		return;
	}
	pthread_mutex_lock(&a->tls_mu);
	old = a->tls;
	a->tls = ctx;
	pthread_mutex_unlock(&a->tls_mu);
	SSL_CTX_free(old); /* connections in progress hold their own reference */
}

static void *admin_main(void *arg)
{
	struct gw_admin *a = arg;
	event_base_dispatch(a->base);
	return NULL;
}

/* gw_admin_new - see gw.h. */
struct gw_admin *gw_admin_new(struct gw *gw, char *err, size_t errlen)
{
	const struct config *cfg = gw->cfg;
	err[0] = '\0';
	if (cfg->nadmin_listen == 0 || cfg->admin_token == NULL || cfg->admin_token[0] == '\0')
		return NULL;
	if (strlen(cfg->admin_token) < 16) {
		snprintf(err, errlen, "admin: token shorter than 16 characters");
		return NULL;
	}
	struct gw_admin *a = util_xcalloc(1, sizeof(*a));
	pthread_mutex_init(&a->tls_mu, NULL);
	SHA256((const unsigned char *)cfg->admin_token, strlen(cfg->admin_token), a->token_sha);
	a->cfg.reports_database =
	    cfg->reports_database ? util_xstrdup(cfg->reports_database) : NULL;
	a->cfg.queue_dir = util_xstrdup(cfg->queue_dir);
	a->cfg.mta_sts_mode = cfg->mta_sts_mode;
	a->dns = gw->dns;
	a->rdns = util_ttlmap_new("admin_rdns", ADMIN_RDNS_KEYS, sizeof(struct admin_name));
	/* the policy gw-mtasts.c serves: made from the start config too */
	a->sts_mode = gw_mta_sts_mode_name(cfg);
	gw_mta_sts_id(cfg, a->sts_id);
	a->sts_served = cfg->nmta_sts_listen > 0;
	for (size_t i = 0; i < cfg->accepted_domains.n; i++)
		util_strlist_add(&a->domains, cfg->accepted_domains.v[i]);
	if ((a->base = event_base_new()) == NULL || (a->http = evhttp_new(a->base)) == NULL) {
		snprintf(err, errlen, "admin: cannot create the HTTP server");
		goto fail;
	}
	evhttp_set_timeout(a->http, ADMIN_REQUEST_SECS);
	a->guard = gw_http_guard_new(a->base, "admin", "mxgate_admin_http_closed_total",
	                             ADMIN_REQUEST_SECS * 1000, ADMIN_MAX_CONNS);
	if (a->guard == NULL) {
		snprintf(err, errlen, "admin: cannot create a timer");
		goto fail;
	}
	evhttp_set_bevcb(a->http, admin_bevcb, a);
	evhttp_set_max_body_size(a->http, 4096);
	evhttp_set_max_headers_size(a->http, 16384);
	evhttp_set_gencb(a->http, admin_request_cb, a);
	if (config_admin_https(cfg)) {
		char why[384];

		a->tls = smtp_server_tls_ctx_new(cfg, why, sizeof(why));
		if (a->tls == NULL) {
			snprintf(err, errlen, "admin: %s",
			         why[0] ? why : "HTTPS needs [tls] cert_file and key_file");
			goto fail;
		}
		a->https = true;
	}
	for (size_t i = 0; i < cfg->nadmin_listen; i++) {
		const struct config_listen *l = &cfg->admin_listen[i];
		if (evhttp_bind_socket_with_handle(a->http, l->host, (ev_uint16_t)l->port) ==
		    NULL) {
			snprintf(err, errlen, "admin: cannot listen on %s%s%s:%d",
			         strchr(l->host, ':') ? "[" : "", l->host,
			         strchr(l->host, ':') ? "]" : "", l->port);
			goto fail;
		}
		util_log_info("- admin dashboard listening on %s://%s%s%s:%d",
		              a->https ? "https" : "http", strchr(l->host, ':') ? "[" : "", l->host,
		              strchr(l->host, ':') ? "]" : "", l->port);
	}
	if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
		snprintf(err, errlen, "admin: cannot start its thread");
		goto fail;
	}
	a->started = true;
	return a;
fail:
	gw_admin_free(a);
	return NULL;
}

/* gw_admin_free - see gw.h. */
void gw_admin_free(struct gw_admin *a)
{
	if (a == NULL)
		return;
	if (a->started) {
		event_base_loopexit(a->base, NULL);
		pthread_join(a->thread, NULL);
	}
	if (a->http)
		evhttp_free(a->http);
	gw_http_guard_free(a->guard); /* after evhttp: it frees the connections */
	if (a->base)
		event_base_free(a->base);
	SSL_CTX_free(a->tls);
	util_ttlmap_free(a->rdns);
	util_strlist_free(&a->domains);
	pthread_mutex_destroy(&a->tls_mu);
	free(a->cfg.reports_database);
	free(a->cfg.queue_dir);
	free(a);
}
