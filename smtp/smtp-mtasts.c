/*
 * smtp-mtasts.c - MTA-STS (RFC 8461) policy discovery for MX delivery: the
 * _mta-sts TXT record through mxgate's resolver, then the policy over HTTPS
 * from mta-sts.DOMAIN (certificate verified for that name, no redirects,
 * text/plain, at most POLICY_MTASTS_MAX bytes), cached per domain until
 * max_age runs out (section 5.1: a cached policy stays in force when the
 * TXT record or the web server is unreachable; a new id in the TXT record
 * triggers a refetch).  Concurrent requests for one domain share a fetch.
 *
 * Everything runs on the event loop: libunbound async for DNS, evhttp over
 * an OpenSSL bufferevent for HTTPS, bounded by one deadline for the whole
 * fetch (a server that trickles bytes gets no longer than a silent one).
 * Parsing is policy/policy-mtasts.c.
 *
 * Ownership: the deliverer owns the struct smtp_mtasts.  A callback gets a
 * borrowed policy (NULL: none) valid during the call only; it runs later,
 * never inside smtp_mtasts_get.  smtp_mtasts_free answers fetches waiting
 * for HTTPS with NULL; those waiting for DNS are orphaned and finish (with
 * NULL) when the resolver answers.
 *
 * Diagnostics: "mta-sts domain=D status=policy mode=enforce max_age=N id=I"
 * and "mta-sts domain=D status=fetch-failed error=(...)" at info level.
 */
#include "smtp-mtasts.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MTASTS_CACHE_MAX  1000 /* domains cached; the oldest goes first */
#define MTASTS_PATH       "/.well-known/mta-sts.txt"

struct mtasts_entry {
	char *domain;
	char id[33];
	struct policy_mtasts pol;
	int64_t expires; /* seconds since the epoch */
	struct mtasts_entry *next;
};

struct mtasts_waiter {
	smtp_mtasts_cb cb;
	void *arg;
	struct mtasts_waiter *next;
};

struct mtasts_fetch {
	struct smtp_mtasts *m; /* NULL once orphaned */
	char *domain;
	char *host;            /* mta-sts.DOMAIN */
	char id[33];
	int port;
	int timeout; /* seconds for the whole HTTPS fetch */
	char *ca_file;
	SSL_CTX *ctx;
	struct evhttp_connection *conn;
	struct event *deadline; /* the whole HTTPS fetch: evhttp's own timeout
	                           is per read, so a server trickling a byte
	                           at a time would hold the fetch forever */
	struct mtasts_waiter *waiters;
	bool dns_pending;
	bool in_http_cb; /* ending from the request's own callback */
	struct mtasts_fetch *next;
};

struct smtp_mtasts {
	struct event_base *base;
	struct policy_dns *dns;
	struct mtasts_entry *cache;
	size_t ncache;
	struct mtasts_fetch *fetches;
};

/* mtasts_now - wall clock seconds (max_age is wall-clock time). */
static int64_t mtasts_now(void)
{
	return (int64_t)time(NULL);
}

/* mtasts_find - the cache entry of domain, or NULL. */
static struct mtasts_entry *mtasts_find(struct smtp_mtasts *m, const char *domain)
{
	for (struct mtasts_entry *e = m->cache; e; e = e->next)
		if (strcasecmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

/* mtasts_entry_free - one cache entry. */
static void mtasts_entry_free(struct mtasts_entry *e)
{
	policy_mtasts_clear(&e->pol);
	free(e->domain);
	free(e);
}

/* mtasts_store - keep pol (taken) for domain until now + max_age. */
static void mtasts_store(struct smtp_mtasts *m, const char *domain, const char *id,
                         struct policy_mtasts *pol)
{
	struct mtasts_entry *e = mtasts_find(m, domain);
	if (e == NULL) {
		if (m->ncache >= MTASTS_CACHE_MAX) { /* drop the last (oldest) */
			struct mtasts_entry **pp = &m->cache;
			while ((*pp)->next)
				pp = &(*pp)->next;
			mtasts_entry_free(*pp);
			*pp = NULL;
			m->ncache--;
		}
		e = util_xcalloc(1, sizeof(*e));
		e->domain = util_xstrdup(domain);
		e->next = m->cache;
		m->cache = e;
		m->ncache++;
	}
	policy_mtasts_clear(&e->pol);
	e->pol = *pol;
	memset(pol, 0, sizeof(*pol));
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->expires = mtasts_now() + e->pol.max_age;
}

/* mtasts_valid - the unexpired cached policy of domain, or NULL. */
static const struct policy_mtasts *mtasts_valid(struct smtp_mtasts *m, const char *domain)
{
	struct mtasts_entry *e = m ? mtasts_find(m, domain) : NULL;
	return e != NULL && e->expires > mtasts_now() ? &e->pol : NULL;
}

/* mtasts_conn_free_cb - deferred free of a finished HTTP connection. */
static void mtasts_conn_free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

/* mtasts_fetch_end - answer every waiter with pol (or the cache, when
 * use_cache), unlink and free the fetch. */
static void mtasts_fetch_end(struct mtasts_fetch *f, const struct policy_mtasts *pol,
                             bool use_cache)
{
	struct smtp_mtasts *m = f->m;
	if (pol == NULL && use_cache)
		pol = mtasts_valid(m, f->domain);
	if (m != NULL) {
		struct mtasts_fetch **pp = &m->fetches;
		while (*pp && *pp != f)
			pp = &(*pp)->next;
		if (*pp)
			*pp = f->next;
	}
	struct mtasts_waiter *w = f->waiters, *wn;
	for (; w; w = wn) {
		wn = w->next;
		w->cb(w->arg, m != NULL ? pol : NULL);
		free(w);
	}
	if (f->conn != NULL && f->in_http_cb && m != NULL) {
		/* Never inside the request's own callback: libevent still uses
		 * the connection after it returns.  Free it from the loop. */
		struct timeval now = {0, 0};
		if (event_base_once(m->base, -1, EV_TIMEOUT, mtasts_conn_free_cb, f->conn, &now) != 0)
			evhttp_connection_free_on_completion(f->conn);
	} else if (f->conn != NULL) {
		evhttp_connection_free(f->conn);
	}
	if (f->deadline)
		event_free(f->deadline);
	if (f->ctx)
		SSL_CTX_free(f->ctx);
	free(f->ca_file);
	free(f->host);
	free(f->domain);
	free(f);
}

/* mtasts_fail - log why and fall back to the cache. */
static void mtasts_fail(struct mtasts_fetch *f, const char *why)
{
	util_log_info("mta-sts domain=%s status=fetch-failed error=(%s)%s", f->domain, why,
	              mtasts_valid(f->m, f->domain) ? " cached=yes" : "");
	mtasts_fetch_end(f, NULL, true);
}

/* mtasts_http_done - the policy (or an error) arrived. */
static void mtasts_http_done(struct evhttp_request *req, void *arg)
{
	struct mtasts_fetch *f = arg;
	char err[200];
	f->in_http_cb = true;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code != 200) {
		unsigned long e = ERR_get_error();
		if (code == 0 && e != 0)
			ERR_error_string_n(e, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "HTTP status %d", code);
		mtasts_fail(f, err);
		return;
	}
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	if (ct == NULL || strncasecmp(ct, "text/plain", 10) != 0) { /* RFC 8461 3.2 */
		mtasts_fail(f, "Content-Type is not text/plain");
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len > POLICY_MTASTS_MAX) {
		mtasts_fail(f, "policy too long");
		return;
	}
	char *text = util_xmalloc(len + 1);
	evbuffer_copyout(in, text, len);
	text[len] = '\0';
	struct policy_mtasts pol;
	int rc = policy_mtasts_parse(text, len, &pol, err, sizeof(err));
	free(text);
	if (rc != 0) {
		mtasts_fail(f, err);
		return;
	}
	util_log_info("mta-sts domain=%s status=policy mode=%s max_age=%lld id=%s", f->domain,
	              pol.mode == POLICY_MTASTS_ENFORCE   ? "enforce"
	              : pol.mode == POLICY_MTASTS_TESTING ? "testing"
	                                                  : "none",
	              (long long)pol.max_age, f->id);
	mtasts_store(f->m, f->domain, f->id, &pol);
	mtasts_fetch_end(f, mtasts_valid(f->m, f->domain), false);
}

/* mtasts_deadline_cb - the fetch took longer than its timeout in all. */
static void mtasts_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mtasts_fetch *f = arg;
	char why[64];
	(void)fd;
	(void)what;
	snprintf(why, sizeof(why), "no policy within %d s", f->timeout);
	mtasts_fail(f, why);
}

/* mtasts_http_start - GET the policy from addr over verified HTTPS. */
static void mtasts_http_start(struct mtasts_fetch *f, const struct util_addr *addr)
{
	char a[64];
	f->ctx = SSL_CTX_new(TLS_client_method());
	if (f->ctx == NULL) {
		mtasts_fail(f, "cannot create TLS context");
		return;
	}
	SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
	if ((f->ca_file ? SSL_CTX_load_verify_locations(f->ctx, f->ca_file, NULL)
	                : SSL_CTX_set_default_verify_paths(f->ctx)) != 1) {
		mtasts_fail(f, "cannot load the CA store");
		return;
	}
	SSL *ssl = SSL_new(f->ctx);
	if (ssl == NULL) {
		mtasts_fail(f, "cannot create TLS session");
		return;
	}
	/* RFC 8461 3.3: the certificate must be valid for mta-sts.DOMAIN. */
	SSL_set_tlsext_host_name(ssl, f->host);
	SSL_set1_host(ssl, f->host);
	SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    f->m->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		mtasts_fail(f, "cannot create TLS connection");
		return;
	}
	util_addr_str(addr, a, sizeof(a));
	f->conn = evhttp_connection_base_bufferevent_new(f->m->base, NULL, bev, a,
	                                                 (unsigned short)f->port);
	if (f->conn == NULL) {
		bufferevent_free(bev);
		mtasts_fail(f, "cannot create HTTP connection");
		return;
	}
	evhttp_connection_set_timeout(f->conn, f->timeout);
	f->deadline = evtimer_new(f->m->base, mtasts_deadline_cb, f);
	struct timeval tv = {.tv_sec = f->timeout, .tv_usec = 0};
	if (f->deadline != NULL)
		evtimer_add(f->deadline, &tv);
	evhttp_connection_set_max_body_size(f->conn, POLICY_MTASTS_MAX);
	evhttp_connection_set_max_headers_size(f->conn, 16384);
	evhttp_connection_set_retries(f->conn, 0);
	struct evhttp_request *req = evhttp_request_new(mtasts_http_done, f);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", f->host);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	if (evhttp_make_request(f->conn, req, EVHTTP_REQ_GET, MTASTS_PATH) != 0)
		mtasts_fail(f, "cannot send the HTTP request");
}

/* mtasts_host_cb - the address of mta-sts.DOMAIN. */
static void mtasts_host_cb(void *arg, enum policy_dns_status st, const struct util_addr *addrs,
                           size_t n)
{
	struct mtasts_fetch *f = arg;
	f->dns_pending = false;
	if (f->m == NULL) {
		mtasts_fetch_end(f, NULL, false);
		return;
	}
	if (st != POLICY_DNS_OK || n == 0) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s (%s)", f->host,
		         policy_dns_status_str(st));
		mtasts_fail(f, why);
		return;
	}
	mtasts_http_start(f, &addrs[0]);
}

/* mtasts_txt_cb - the _mta-sts record: no policy, the cached one, or a fetch. */
static void mtasts_txt_cb(void *arg, enum policy_dns_status st, const char *const *texts,
                          size_t n)
{
	struct mtasts_fetch *f = arg;
	f->dns_pending = false;
	if (f->m == NULL) {
		mtasts_fetch_end(f, NULL, false);
		return;
	}
	size_t found = 0;
	for (size_t i = 0; st == POLICY_DNS_OK && i < n; i++) {
		char id[33];
		if (strncmp(texts[i], "v=STSv1", 7) != 0)
			continue;
		found++;
		if (policy_mtasts_txt(texts[i], id, sizeof(id)) == 0)
			memcpy(f->id, id, sizeof(id));
		else
			f->id[0] = '\0';
	}
	util_log_debug("mta-sts domain=%s txt=%s records=%zu id=%s", f->domain,
	               policy_dns_status_str(st), found, f->id[0] ? f->id : "-");
	struct mtasts_entry *e = mtasts_find(f->m, f->domain);
	if (st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS) {
		mtasts_fetch_end(f, NULL, true); /* 5.1: keep using the cache */
		return;
	}
	if (found != 1 || f->id[0] == '\0') {
		/* No (or an ambiguous) record: no new policy; an unexpired
		 * cached one stays in force (RFC 8461 5.1). */
		mtasts_fetch_end(f, NULL, true);
		return;
	}
	if (e != NULL && e->expires > mtasts_now() && strcmp(e->id, f->id) == 0) {
		mtasts_fetch_end(f, &e->pol, false);
		return;
	}
	f->dns_pending = true;
	policy_dns_resolve_host(f->m->dns, f->host, f->port, mtasts_host_cb, f);
}

/* smtp_mtasts_new - an empty cache on base, looking names up through dns. */
struct smtp_mtasts *smtp_mtasts_new(struct event_base *base, struct policy_dns *dns)
{
	struct smtp_mtasts *m = util_xcalloc(1, sizeof(*m));
	m->base = base;
	m->dns = dns;
	return m;
}

/* smtp_mtasts_get - the policy of domain, through cb (later). */
void smtp_mtasts_get(struct smtp_mtasts *m, const char *domain, int port, const char *ca_file,
                     int timeout, smtp_mtasts_cb cb, void *arg)
{
	struct mtasts_waiter *w = util_xcalloc(1, sizeof(*w));
	w->cb = cb;
	w->arg = arg;
	for (struct mtasts_fetch *f = m->fetches; f; f = f->next) {
		if (strcasecmp(f->domain, domain) == 0) {
			w->next = f->waiters;
			f->waiters = w;
			return;
		}
	}
	struct mtasts_fetch *f = util_xcalloc(1, sizeof(*f));
	f->m = m;
	f->domain = util_xstrdup(domain);
	f->host = util_xasprintf("mta-sts.%s", domain);
	f->port = port > 0 ? port : 443;
	f->timeout = timeout > 0 && timeout < 60 ? timeout : 60;
	f->ca_file = ca_file ? util_xstrdup(ca_file) : NULL;
	f->waiters = w;
	f->next = m->fetches;
	m->fetches = f;
	char *name = util_xasprintf("_mta-sts.%s", domain);
	f->dns_pending = true;
	policy_dns_resolve_txt(m->dns, name, mtasts_txt_cb, f);
	free(name);
}

/* smtp_mtasts_free - the cache and every fetch (see the header comment). */
void smtp_mtasts_free(struct smtp_mtasts *m)
{
	if (m == NULL)
		return;
	while (m->fetches) {
		struct mtasts_fetch *f = m->fetches;
		m->fetches = f->next;
		f->m = NULL;
		if (!f->dns_pending)
			mtasts_fetch_end(f, NULL, false);
		/* else: the resolver's answer ends it */
	}
	while (m->cache) {
		struct mtasts_entry *e = m->cache;
		m->cache = e->next;
		mtasts_entry_free(e);
	}
	free(m);
}
