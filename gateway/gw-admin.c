/*
 * gw-admin.c - the report dashboard (issue 15): [admin] listen serves a
 * small page (HTML + one script, both compiled in: no CDN, works offline)
 * and a read-only JSON API over the reports received ([reports] ingest):
 *   GET /            the page            GET /app.js  its script
 *   GET /api/sources?days=N, /api/daily?days=N, /api/tlsrpt?days=N
 *   POST /api/approve (domain=&ip=&approved=0|1: the sender inventory)
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
 *
 * Report strings are attacker-controlled: the API returns them JSON-escaped
 * and the script only ever sets textContent; the page's
 * Content-Security-Policy forbids inline script besides.
 *
 * Threads: the listener runs its own event_base in its own thread, so a
 * slow SQLite read never holds up SMTP.  It copies what it needs from the
 * config at start (a reload does not change it: restart), except the
 * certificate, swapped under tls_mu (the loop thread writes, the admin
 * thread reads).
 * Ownership: struct gw_admin owns the thread, base, evhttp, SSL_CTX and
 * copies.
 */
#include "gw.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "reports.h"
#include "smtp.h"

/* One year, the usual HSTS lifetime (RFC 6797 section 6.1.1); no
 * includeSubDomains: the gateway's name may share a parent with sites
 * mxgate knows nothing of. */
#define ADMIN_HSTS "max-age=31536000"

struct gw_admin {
	struct event_base *base;
	struct evhttp *http;
	pthread_t thread;
	bool started;
	pthread_mutex_t tls_mu; /* guards tls */
	SSL_CTX *tls;           /* NULL: plain HTTP */
	bool https;             /* tls set at start (never changes after) */
	unsigned char token_sha[SHA256_DIGEST_LENGTH];
	struct config cfg; /* only reports_database and queue_dir set (owned) */
	char info[128];    /* GET /api/info: the MTA-STS mode published */
};

static const char admin_html[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>mxgate reports</title>\n<style>\n"
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "td{max-width:18em;overflow-wrap:anywhere}"
    "td.n{text-align:right}tr.fail{background:#fde2e1}"
    "#err{color:#b00}svg{border:1px solid #ccc;background:#fafafa}\n"
    "</style></head><body>\n<h1>mxgate - reports received</h1>\n"
    "<form id=\"login\"><label>Token <input id=\"token\" type=\"password\"></label>"
    " <label>Days <input id=\"days\" type=\"number\" value=\"30\" min=\"1\" max=\"3650\"></label>"
    " <button>Show</button> <a id=\"csv\" href=\"#\">sources as CSV</a></form>\n"
    "<p id=\"err\"></p>\n"
    "<h2>DMARC: volume per day</h2><div id=\"chart\"></div>\n"
    "<h2>DMARC: sources sending as your domains</h2>\n<ul id=\"ready\"></ul>\n"
    "<table id=\"sources\"><thead><tr><th>Domain</th><th>Source IP</th><th>Reported by</th>"
    "<th>Messages</th><th>DMARC pass</th><th>SPF aligned</th><th>DKIM aligned</th>"
    "<th>Approved</th></tr></thead><tbody></tbody></table>\n"
    "<h2>TLS-RPT: sessions per policy domain</h2>\n"
    "<p>MTA-STS mode published: <b id=\"stsmode\">?</b> (switch to enforce once no "
    "sender reports failures)</p>\n"
    "<table id=\"tlsrpt\"><thead><tr><th>Policy domain</th><th>Type</th><th>Organisation</th>"
    "<th>Successful</th><th>Failed</th><th>Failure types</th></tr></thead><tbody></tbody>"
    "</table>\n<h2>What mxgate itself judged</h2>\n"
    "<table id=\"verdicts\"><thead><tr><th>Domain</th><th>Disposition</th><th>Reason</th>"
    "<th>Messages</th></tr></thead><tbody></tbody></table>\n"
    "<script src=\"/app.js\"></script>\n</body></html>\n";

/* Only textContent / attributes set by the script: nothing from a report is
 * ever parsed as HTML. */
static const char admin_js[] =
    "'use strict';\n"
    "const $ = (id) => document.getElementById(id);\n"
    "let token = sessionStorage.getItem('mxgate-token') || '';\n"
    "const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);\n"
    "if (m) { token = decodeURIComponent(m[1]); sessionStorage.setItem('mxgate-token', token); }\n"
    "const md = /(?:^#|&)days=([0-9]+)/.exec(location.hash);\n"
    "if (md) $('days').value = md[1];\n"
    "if (m) history.replaceState(null, '', location.pathname);\n"
    "let sources = [];\n"
    "function cell(tr, text, num) { const td = document.createElement('td');\n"
    "  td.textContent = String(text); if (num) td.className = 'n'; tr.appendChild(td); }\n"
    "function pct(a, b) { return b ? (100 * a / b).toFixed(1) + '%' : '-'; }\n"
    "async function api(what) {\n"
    "  const r = await fetch('/api/' + what + '?days=' + encodeURIComponent($('days').value),\n"
    "    {headers: {'Authorization': 'Bearer ' + token}});\n"
    "  if (!r.ok) throw new Error(what + ': ' + r.status + ' ' + r.statusText);\n"
    "  return r.json(); }\n"
    "function chart(rows) { const svgns = 'http://www.w3.org/2000/svg';\n"
    "  const svg = document.createElementNS(svgns, 'svg'); const w = 600, h = 160;\n"
    "  svg.setAttribute('width', w); svg.setAttribute('height', h);\n"
    "  const max = Math.max(1, ...rows.map((r) => r.count)); const bw = w / Math.max(1, "
    "rows.length);\n"
    "  rows.forEach((r, i) => { for (const [v, c] of [[r.count, '#e57373'], [r.dmarc_pass, "
    "'#81c784']]) {\n"
    "    const b = document.createElementNS(svgns, 'rect'); const bh = (h - 10) * v / max;\n"
    "    b.setAttribute('x', i * bw + 2); b.setAttribute('width', Math.max(1, bw - 4));\n"
    "    b.setAttribute('y', h - bh); b.setAttribute('height', bh); b.setAttribute('fill', c);\n"
    "    const t = document.createElementNS(svgns, 'title');\n"
    "    t.textContent = r.domain + ' ' + r.day + ': ' + r.dmarc_pass + '/' + r.count + ' pass';\n"
    "    b.appendChild(t); svg.appendChild(b); } });\n"
    "  $('chart').replaceChildren(svg); }\n"
    "async function load() {\n"
    "  $('err').textContent = '';\n"
    "  try {\n"
    "    sources = await api('sources'); const tb = $('sources').tBodies[0]; "
    "tb.replaceChildren();\n"
    "    for (const s of sources) { const tr = document.createElement('tr');\n"
    "      if (s.dmarc_pass < s.count) tr.className = 'fail';\n"
    "      cell(tr, s.domain); cell(tr, s.source_ip); cell(tr, s.orgs); cell(tr, s.count, 1);\n"
    "      cell(tr, pct(s.dmarc_pass, s.count), 1); cell(tr, pct(s.spf_pass, s.count), 1);\n"
    "      cell(tr, pct(s.dkim_pass, s.count), 1);\n"
    "      const td = document.createElement('td'); const bt = document.createElement('button');\n"
    "      bt.textContent = s.approved ? 'approved (undo)' : 'approve';\n"
    "      bt.addEventListener('click', () => approve(s.domain, s.source_ip, !s.approved));\n"
    "      td.appendChild(bt); tr.appendChild(td); tb.appendChild(tr); }\n"
    "    readiness();\n"
    "    chart(await api('daily'));\n"
    "    const tl = await api('tlsrpt'); const tt = $('tlsrpt').tBodies[0]; tt.replaceChildren();\n"
    "    for (const p of tl) { const tr = document.createElement('tr');\n"
    "      if (p.failure > 0) tr.className = 'fail';\n"
    "      cell(tr, p.policy_domain); cell(tr, p.policy_type); cell(tr, p.org);\n"
    "      cell(tr, p.success, 1); cell(tr, p.failure, 1); cell(tr, p.failures);\n"
    "      tt.appendChild(tr); }\n"
    "    const vd = await api('verdicts'); const vt = $('verdicts').tBodies[0]; "
    "vt.replaceChildren();\n"
    "    for (const v of vd) { const tr = document.createElement('tr');\n"
    "      cell(tr, v.domain); cell(tr, v.disposition); cell(tr, v.reason); cell(tr, v.count, 1);\n"
    "      vt.appendChild(tr); }\n"
    "    $('stsmode').textContent = (await api('info')).mta_sts_mode;\n"
    "    document.body.dataset.loaded = 'yes';\n"
    "  } catch (e) { $('err').textContent = String(e.message); document.body.dataset.loaded = "
    "'error'; } }\n"
    "function readiness() { const per = {};\n"
    "  for (const s of sources) { const d = per[s.domain] = per[s.domain] ||\n"
    "      {n: 0, pass: 0, other: 0, otherfail: 0};\n"
    "    if (s.approved) { d.n += s.count; d.pass += s.dmarc_pass; }\n"
    "    else { d.other += s.count; d.otherfail += s.count - s.dmarc_pass; } }\n"
    "  const ul = $('ready'); ul.replaceChildren();\n"
    "  for (const [dom, d] of Object.entries(per)) { const li = document.createElement('li');\n"
    "    let t = dom + ': ';\n"
    "    if (!d.n) t += 'no source approved yet - approve your legitimate senders first';\n"
    "    else { const p = 100 * d.pass / d.n;\n"
    "      t += p.toFixed(1) + '% of mail from approved sources passes DMARC (' + d.pass + ' of ' "
    "+ d.n + ')';\n"
    "      t += p >= 98 ? ' - safe to move to p=quarantine, then p=reject'\n"
    "                   : ' - not yet: fix SPF/DKIM of the approved sources that fail'; }\n"
    "    t += '; ' + d.other + ' messages from sources not approved (' + d.otherfail + ' "
    "failing)';\n"
    "    li.textContent = t; li.className = 'ready'; ul.appendChild(li); } }\n"
    "async function approve(domain, ip, yes) {\n"
    "  const r = await fetch('/api/approve', {method: 'POST', headers: {'Authorization': 'Bearer ' "
    "+ token,\n"
    "    'Content-Type': 'application/x-www-form-urlencoded'},\n"
    "    body: new URLSearchParams({domain: domain, ip: ip, approved: yes ? '1' : '0'})});\n"
    "  if (!r.ok) { $('err').textContent = 'approve: ' + r.status; return; } load(); }\n"
    "function csvq(v) { v = String(v); if (/^[=+@\\-\\t\\r]/.test(v)) v = \"'\" + v;\n"
    "  return '\"' + v.replace(/\"/g, '\"\"') + '\"'; }\n"
    "$('csv').addEventListener('click', (ev) => { ev.preventDefault();\n"
    "  const lines = [['domain', 'source_ip', 'orgs', 'count', 'dmarc_pass', 'spf_pass', "
    "'dkim_pass', 'approved']];\n"
    "  for (const s of sources) lines.push([s.domain, s.source_ip, s.orgs, s.count, s.dmarc_pass,\n"
    "    s.spf_pass, s.dkim_pass, s.approved]);\n"
    "  const a = document.createElement('a'); a.download = 'sources.csv';\n"
    "  a.href = URL.createObjectURL(new Blob([lines.map((l) => "
    "l.map(csvq).join(',')).join('\\r\\n')],\n"
    "    {type: 'text/csv'})); a.click(); });\n"
    "$('login').addEventListener('submit', (ev) => { ev.preventDefault();\n"
    "  if ($('token').value) { token = $('token').value; sessionStorage.setItem('mxgate-token', "
    "token); }\n"
    "  load(); });\n"
    "if (token) load();\n";

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

/* admin_approve - POST /api/approve, form body domain=&ip=&approved=0|1:
 * the sender inventory (the only write the dashboard makes). */
static void admin_approve(struct gw_admin *a, struct evhttp_request *req)
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
		           *ap = evhttp_find_header(&q, "approved");
		if (d && ip && ap && d[0] && ip[0])
			rc = reports_dash_approve(&a->cfg, d, ip, strcmp(ap, "1") == 0, err,
			                          sizeof(err));
		else
			snprintf(err, sizeof(err), "domain, ip and approved needed");
	} else {
		snprintf(err, sizeof(err), "bad form");
	}
	evhttp_clear_headers(&q);
	if (rc < 0) {
		util_log_warn("- admin approve error=\"%s\"", err);
		send_body(req, HTTP_BADREQUEST, "Bad Request", "application/json",
		          "{\"error\":\"approve\"}", 19);
		return;
	}
	util_log_info("- admin source approval changed");
	send_body(req, HTTP_OK, "OK", "application/json", "{}", 2);
}

static void admin_request_cb(struct evhttp_request *req, void *arg)
{
	struct gw_admin *a = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;

	if (a->https)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		                  "Strict-Transport-Security", ADMIN_HSTS);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd != EVHTTP_REQ_GET &&
	    !(cmd == EVHTTP_REQ_POST && path != NULL && strcmp(path, "/api/approve") == 0)) {
		evhttp_send_error(req, HTTP_BADMETHOD, "Method Not Allowed");
		return;
	}
	if (path == NULL) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	if (strcmp(path, "/") == 0) {
		send_body(req, HTTP_OK, "OK", "text/html; charset=utf-8", admin_html,
		          sizeof(admin_html) - 1);
		return;
	}
	if (strcmp(path, "/app.js") == 0) {
		send_body(req, HTTP_OK, "OK", "text/javascript; charset=utf-8", admin_js,
		          sizeof(admin_js) - 1);
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
		admin_approve(a, req);
		return;
	}
	if (strcmp(path, "/api/info") == 0) {
		send_body(req, HTTP_OK, "OK", "application/json", a->info, strlen(a->info));
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
	if (reports_dash_json(&a->cfg, path + 5, days, &out, err, sizeof(err)) < 0) {
		util_log_warn("- admin path=%s error=\"%s\"", path, err);
		send_body(req, HTTP_INTERNAL, "Error", "application/json", "{\"error\":\"store\"}",
		          17);
	} else {
		send_body(req, HTTP_OK, "OK", "application/json", out.data ? out.data : "[]",
		          out.data ? out.len : 2);
	}
	util_buf_free(&out);
}

/* admin_bevcb - every connection of an HTTPS dashboard is TLS (admin
 * thread); the SSL holds its own reference to the context. */
static struct bufferevent *admin_bevcb(struct event_base *base, void *arg)
{
	struct gw_admin *a = arg;
	SSL *ssl;

	pthread_mutex_lock(&a->tls_mu);
	ssl = SSL_new(a->tls);
	pthread_mutex_unlock(&a->tls_mu);
	if (ssl == NULL)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

/* gw_admin_reload - see gw.h. */
void gw_admin_reload(struct gw_admin *a, const struct config *cfg)
{
	char err[512];
	SSL_CTX *ctx, *old;

	if (a == NULL || !a->https)
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
	static const char *const modes[] = {"testing", "enforce", "none"};
	snprintf(a->info, sizeof(a->info), "{\"mta_sts_mode\":\"%s\"}",
	         cfg->mta_sts_mode >= 0 && cfg->mta_sts_mode <= 2 ? modes[cfg->mta_sts_mode] : "?");
	if ((a->base = event_base_new()) == NULL || (a->http = evhttp_new(a->base)) == NULL) {
		snprintf(err, errlen, "admin: cannot create the HTTP server");
		goto fail;
	}
	evhttp_set_timeout(a->http, 10);
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
		evhttp_set_bevcb(a->http, admin_bevcb, a);
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
	if (a->base)
		event_base_free(a->base);
	SSL_CTX_free(a->tls);
	pthread_mutex_destroy(&a->tls_mu);
	free(a->cfg.reports_database);
	free(a->cfg.queue_dir);
	free(a);
}
