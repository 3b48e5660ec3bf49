/*
 * gw-mtasts.c - MTA-STS (RFC 8461) for the domains mxgate is the MX of: the
 * policy file text (also printed by `mxgate dns-records`), its policy id,
 * and an optional HTTPS endpoint on the [mta_sts] listen addresses that
 * serves it at /.well-known/mta-sts.txt (RFC 8461 section 3.3), with the
 * [tls] certificate (which must then also name mta-sts.DOMAIN).
 *
 * The policy id is derived from the policy text (SHA-256, 20 hex digits), so
 * it changes exactly when the policy changes - the rule RFC 8461 section 3.1
 * asks of whoever publishes the _mta-sts TXT record.
 *
 * Ownership: struct gw_mta_sts owns its evhttp, SSL_CTX and policy text; the
 * gw is borrowed.  Diagnostics: bind and certificate errors at start-up are
 * returned in err; requests are logged at debug level.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define MTA_STS_PATH "/.well-known/mta-sts.txt"

struct gw_mta_sts {
	struct gw *gw;
	struct evhttp *http;
	SSL_CTX *tls;
	struct util_buf policy;
};

static const char *const mta_sts_modes[] = {"testing", "enforce", "none"};

/* gw_mta_sts_mode_name - "testing" | "enforce" | "none". */
const char *gw_mta_sts_mode_name(const struct config *cfg)
{
	unsigned m = (unsigned)cfg->mta_sts_mode;
	return m < 3 ? mta_sts_modes[m] : "testing";
}

/* gw_mta_sts_policy - the policy file (RFC 8461 section 3.2), CRLF lines. */
void gw_mta_sts_policy(const struct config *cfg, struct util_buf *out)
{
	util_buf_printf(out, "version: STSv1\r\nmode: %s\r\n", gw_mta_sts_mode_name(cfg));
	if (cfg->mta_sts_mx.n == 0)
		util_buf_printf(out, "mx: %s\r\n", cfg->hostname);
	for (size_t i = 0; i < cfg->mta_sts_mx.n; i++)
		util_buf_printf(out, "mx: %s\r\n", cfg->mta_sts_mx.v[i]);
	util_buf_printf(out, "max_age: %lld\r\n", (long long)cfg->mta_sts_max_age);
}

/* gw_mta_sts_id - policy id: 20 hex digits of SHA-256 of the policy text. */
void gw_mta_sts_id(const struct config *cfg, char out[21])
{
	struct util_buf p;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	util_buf_init(&p);
	gw_mta_sts_policy(cfg, &p);
	if (EVP_Digest(p.data, p.len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 10)
		memset(md, 0, sizeof(md));
	for (int i = 0; i < 10; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	util_buf_free(&p);
}

/* mta_sts_tls_new - the HTTPS context from the [tls] certificate: the SMTP
 * server's own builder (TLS 1.2+, [tls] min_version and ciphers). */
static SSL_CTX *mta_sts_tls_new(const struct config *cfg, char *err, size_t errlen)
{
	char why[384];
	SSL_CTX *ctx = smtp_server_tls_ctx_new(cfg, why, sizeof(why));

	if (ctx == NULL)
		snprintf(err, errlen, "mta_sts: %s", why[0] ? why : "no [tls] cert_file");
	return ctx;
}

/* gw_mta_sts_reload - re-read the certificate (renewals); on error the old
 * one stays.  Policy and listeners change only with a restart. */
void gw_mta_sts_reload(struct gw_mta_sts *ms, const struct config *cfg)
{
	char err[512];
	if (ms == NULL || cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)
		return;
	SSL_CTX *ctx = mta_sts_tls_new(cfg, err, sizeof(err));
	if (ctx == NULL) {
		util_log_err("- reload: %s; still serving the old certificate", err);
		return;
	}
	SSL_CTX_free(ms->tls); /* connections in progress hold their own reference */
	ms->tls = ctx;
}

/* mta_sts_request_cb - serve the policy; 404 for any other path. */
static void mta_sts_request_cb(struct evhttp_request *req, void *arg)
{
	struct gw_mta_sts *ms = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (path == NULL || strcmp(path, MTA_STS_PATH) != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	struct evbuffer *body = evbuffer_new();
	if (body == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(body, ms->policy.data, ms->policy.len);
	/* RFC 8461 3.3: media type text/plain; no redirects, no caching games. */
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
	util_log_debug("- mta-sts policy served");
}

/* mta_sts_bevcb - every HTTP connection is TLS. */
static struct bufferevent *mta_sts_bevcb(struct event_base *base, void *arg)
{
	struct gw_mta_sts *ms = arg;
	SSL *ssl = SSL_new(ms->tls);
	if (ssl == NULL)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

/* gw_mta_sts_new - serve the policy on every [mta_sts] listen address; with
 * none configured this returns NULL with err empty. */
struct gw_mta_sts *gw_mta_sts_new(struct gw *gw, char *err, size_t errlen)
{
	const struct config *cfg = gw->cfg;
	err[0] = '\0';
	if (cfg->nmta_sts_listen == 0)
		return NULL;
	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL) {
		snprintf(err, errlen, "mta_sts: listen needs [tls] cert_file and key_file");
		return NULL;
	}
	struct gw_mta_sts *ms = util_xcalloc(1, sizeof(*ms));
	ms->gw = gw;
	util_buf_init(&ms->policy);
	gw_mta_sts_policy(cfg, &ms->policy);
	ms->tls = mta_sts_tls_new(cfg, err, errlen);
	if (ms->tls == NULL)
		goto err;
	ms->http = evhttp_new(gw->base);
	if (ms->http == NULL) {
		snprintf(err, errlen, "mta_sts: cannot create the HTTP server");
		goto err;
	}
	evhttp_set_timeout(ms->http, 10);
	evhttp_set_max_body_size(ms->http, 4096);
	evhttp_set_max_headers_size(ms->http, 16384);
	evhttp_set_allowed_methods(ms->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_bevcb(ms->http, mta_sts_bevcb, ms);
	evhttp_set_gencb(ms->http, mta_sts_request_cb, ms);
	for (size_t i = 0; i < cfg->nmta_sts_listen; i++) {
		const struct config_listen *l = &cfg->mta_sts_listen[i];
		bool v6 = strchr(l->host, ':') != NULL;
		if (evhttp_bind_socket_with_handle(ms->http, l->host, (ev_uint16_t)l->port) ==
		    NULL) {
			snprintf(err, errlen, "mta_sts: cannot listen on %s%s%s:%d", v6 ? "[" : "",
			         l->host, v6 ? "]" : "", l->port);
			goto err;
		}
		util_log_info("- mta-sts policy served on https://%s%s%s:%d%s", v6 ? "[" : "",
		              l->host, v6 ? "]" : "", l->port, MTA_STS_PATH);
	}
	return ms;
err:
	gw_mta_sts_free(ms);
	return NULL;
}

/* gw_mta_sts_free - stop serving; NULL is a no-op. */
void gw_mta_sts_free(struct gw_mta_sts *ms)
{
	if (ms == NULL)
		return;
	if (ms->http)
		evhttp_free(ms->http);
	SSL_CTX_free(ms->tls);
	util_buf_free(&ms->policy);
	free(ms);
}
