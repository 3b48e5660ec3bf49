/*
 * gw-metrics.c - the metric catalogue of mxgate and its Prometheus endpoint:
 * GET /metrics over plain HTTP (libevent evhttp) on the [metrics] listen
 * addresses, meant for a local or private address only.  Anything but
 * GET/HEAD /metrics is answered 404 (405 for other methods).
 *
 * The catalogue (gw_metrics_define) is declared at start-up whether or not a
 * listener is configured: modules count events by name (util_metrics_inc)
 * and `mxgate status` reads the same counters.  Gauges that describe the
 * current state (sessions, queue size and age, uptime) are sampled from the
 * components right before each scrape, on the loop thread.
 *
 * Ownership: struct gw_metrics owns its evhttp and bound sockets; the gw is
 * borrowed (it outlives the endpoint).
 *
 * Diagnostics: a listen address that cannot be bound is a start-up error
 * (message in err); each scrape is logged at debug level.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#define METRICS_HTTP_TIMEOUT 10   /* seconds per request */
#define METRICS_MAX_BODY     4096 /* nobody needs to send us a body */

struct gw_metrics {
	struct gw *gw;
	struct evhttp *http;
};

/* Histogram buckets (seconds).  DATA->250 covers the client's upload, the
 * policy checks and the fsync; delivery covers time in the queue. */
static const double data_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,  5,     10,   30,  60,   300};
static const double delivery_buckets[] = {0.1, 0.5, 1,    5,     10,    30,    60,
                                          300, 900, 3600, 14400, 43200, 86400, 432000};

/* gw_metrics_define - the whole catalogue (every name a module may count). */
void gw_metrics_define(void)
{
	static const struct {
		const char *name;
		enum util_metric_kind kind;
		const char *label;
		const char *help;
	} cat[] = {
	    {"mxgate_uptime_seconds", UTIL_METRIC_GAUGE, NULL, "Seconds since the daemon started"},
	    {"mxgate_connections_current", UTIL_METRIC_GAUGE, NULL, "SMTP sessions open now"},
	    {"mxgate_connections_total", UTIL_METRIC_COUNTER, NULL,
	     "SMTP connections accepted by the listeners"},
	    {"mxgate_connections_refused_total", UTIL_METRIC_COUNTER, "reason",
	     "SMTP connections refused, by reason"},
	    {"mxgate_accept_pauses_total", UTIL_METRIC_COUNTER, "error",
	     "Listener pauses because accept() ran out of descriptors or memory (EMFILE, ENFILE, "
	     "ENOBUFS, ENOMEM)"},
	    {"mxgate_messages_accepted_total", UTIL_METRIC_COUNTER, NULL,
	     "Messages queued (250 after DATA)"},
	    {"mxgate_messages_rejected_total", UTIL_METRIC_COUNTER, "reason",
	     "Messages refused at end of DATA (5xx or 4xx), by reason"},
	    {"mxgate_recipients_rejected_total", UTIL_METRIC_COUNTER, "reason",
	     "RCPT TO commands refused, by reason"},
	    {"mxgate_spf_results_total", UTIL_METRIC_COUNTER, "result", "SPF results (RFC 7208)"},
	    {"mxgate_dkim_results_total", UTIL_METRIC_COUNTER, "result",
	     "DKIM results per message, best signature (RFC 6376)"},
	    {"mxgate_dmarc_results_total", UTIL_METRIC_COUNTER, "result",
	     "DMARC results (RFC 7489)"},
	    {"mxgate_spam_verdicts_total", UTIL_METRIC_COUNTER, "verdict",
	     "Spam verdicts of judged messages (ham, spam)"},
	    {"mxgate_policy_actions_total", UTIL_METRIC_COUNTER, "action",
	     "Policy decisions: accept, quarantine, reject, tempfail"},
	    {"mxgate_queue_messages", UTIL_METRIC_GAUGE, NULL, "Messages in the queue"},
	    {"mxgate_queue_oldest_age_seconds", UTIL_METRIC_GAUGE, NULL,
	     "Age of the oldest queued message (0 when empty)"},
	    {"mxgate_queue_recycled_bytes", UTIL_METRIC_GAUGE, NULL,
	     "Disk held by delivered messages' files kept in free/ for reuse"},
	    {"mxgate_queue_envelope_errors_total", UTIL_METRIC_COUNTER, "error",
	     "Envelopes that could not be read (read: retried with backoff) or parsed "
	     "(corrupt: moved to corrupt/)"},
	    {"mxgate_delivery_attempts_total", UTIL_METRIC_COUNTER, "outcome",
	     "Delivery outcomes per recipient: delivered, deferred, bounced"},
	    {"mxgate_recipient_verify_total", UTIL_METRIC_COUNTER, "result",
	     "Recipient verification answers (ok, unknown, unavailable), probes and refusals to "
	     "probe"},
	    {"mxgate_recipients_unverified_total", UTIL_METRIC_COUNTER, NULL,
	     "Recipients accepted without verification ([verify] unavailable = accept)"},
	    {"mxgate_dsn_suppressed_total", UTIL_METRIC_COUNTER, "reason",
	     "Bounces not sent because the sender failed SPF or DMARC (spf_fail, dmarc_fail)"},
	    {"mxgate_virus_scans_total", UTIL_METRIC_COUNTER, "result",
	     "Virus scans at end of DATA ([clamav]): clean, infected, unscanned"},
	    {"mxgate_quarantined_total", UTIL_METRIC_COUNTER, "reason",
	     "Messages accepted into quarantine (held in the queue): virus, spam, policy"},
	    {"mxgate_quarantine_messages", UTIL_METRIC_GAUGE, NULL,
	     "Quarantined messages waiting in hold/ (refreshed every quarter of the retention, "
	     "at most hourly)"},
	    {"mxgate_quarantine_bytes", UTIL_METRIC_GAUGE, NULL, "Bytes of the quarantined messages"},
	    {"mxgate_quarantine_oldest_age_seconds", UTIL_METRIC_GAUGE, NULL,
	     "Age of the oldest quarantined message (0 when none)"},
	    {"mxgate_spam_checks_total", UTIL_METRIC_COUNTER, "action",
	     "rspamd checks at end of DATA ([rspamd]) by rspamd's action (no_action, add_header, "
	     "rewrite_subject, soft_reject, reject, ...), or unchecked"},
	    {"mxgate_scanner_failures_total", UTIL_METRIC_COUNTER, "reason",
	     "Scans that did not happen, by scanner and reason: clamav_timeout, "
	     "clamav_unavailable, clamav_connection_lost, clamav_clamd_error, "
	     "clamav_clamd_size_limit, clamav_protocol, rspamd_timeout, rspamd_unavailable, "
	     "rspamd_http_NNN, rspamd_protocol, *_spool_read, *_setup"},
	    {"mxgate_config_reloads_total", UTIL_METRIC_COUNTER, "result",
	     "Config reloads (SIGHUP, mxgate reload): ok, failed"},
	};
	for (size_t i = 0; i < sizeof(cat) / sizeof(cat[0]); i++)
		(void)util_metrics_define(cat[i].name, cat[i].kind, cat[i].help, cat[i].label, NULL,
		                          0);
	(void)util_metrics_define("mxgate_data_to_250_seconds", UTIL_METRIC_HISTOGRAM,
	                          "Time from the DATA command to the 250 reply of queued messages",
	                          NULL, data_buckets,
	                          sizeof(data_buckets) / sizeof(data_buckets[0]));
	(void)util_metrics_define(
	    "mxgate_delivery_seconds", UTIL_METRIC_HISTOGRAM,
	    "Time from arrival to successful delivery, per recipient (1 s resolution)", NULL,
	    delivery_buckets, sizeof(delivery_buckets) / sizeof(delivery_buckets[0]));
}

/* gw_metrics_sample - refresh the state gauges from the components. */
void gw_metrics_sample(struct gw *gw)
{
	int64_t now = util_now_us() / 1000000;
	util_metrics_set("mxgate_uptime_seconds", NULL, (double)(now - gw->started));
	if (gw->server)
		util_metrics_set("mxgate_connections_current", NULL,
		                 (double)smtp_server_session_count(gw->server));
	if (gw->sched) {
		int64_t oldest = queue_sched_oldest(gw->sched);
		util_metrics_set("mxgate_queue_messages", NULL,
		                 (double)queue_sched_count(gw->sched));
		util_metrics_set("mxgate_queue_oldest_age_seconds", NULL,
		                 (double)(oldest > 0 && now > oldest ? now - oldest : 0));
	}
	if (gw->qs)
		util_metrics_set("mxgate_queue_recycled_bytes", NULL,
		                 (double)queue_pool_bytes(gw->qs));
}

/* metrics_request_cb - GET /metrics; everything else 404. */
static void metrics_request_cb(struct evhttp_request *req, void *arg)
{
	struct gw_metrics *m = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, HTTP_BADMETHOD, "Method Not Allowed");
		return;
	}
	gw_metrics_sample(m->gw);
	struct util_buf b;
	util_buf_init(&b);
	util_metrics_render(&b);
	struct evbuffer *body = evbuffer_new();
	if (body == NULL) {
		util_buf_free(&b);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(body, b.data ? b.data : "", b.len);
	util_buf_free(&b);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
	util_log_debug("- metrics scrape");
}

/* gw_metrics_new - bind every [metrics] listen address; with none configured
 * the endpoint is off and this returns NULL with err empty. */
struct gw_metrics *gw_metrics_new(struct gw *gw, char *err, size_t errlen)
{
	const struct config *cfg = gw->cfg;
	err[0] = '\0';
	gw_metrics_define();
	if (cfg->nmetrics_listen == 0)
		return NULL;
	struct gw_metrics *m = util_xcalloc(1, sizeof(*m));
	m->gw = gw;
	m->http = evhttp_new(gw->base);
	if (m->http == NULL) {
		snprintf(err, errlen, "metrics: cannot create the HTTP server");
		goto err;
	}
	evhttp_set_timeout(m->http, METRICS_HTTP_TIMEOUT);
	evhttp_set_max_body_size(m->http, METRICS_MAX_BODY);
	evhttp_set_max_headers_size(m->http, 16384);
	evhttp_set_gencb(m->http, metrics_request_cb, m);
	for (size_t i = 0; i < cfg->nmetrics_listen; i++) {
		const struct config_listen *l = &cfg->metrics_listen[i];
		if (evhttp_bind_socket_with_handle(m->http, l->host, (ev_uint16_t)l->port) ==
		    NULL) {
			snprintf(err, errlen, "metrics: cannot listen on %s%s%s:%d",
			         strchr(l->host, ':') ? "[" : "", l->host,
			         strchr(l->host, ':') ? "]" : "", l->port);
			goto err;
		}
		util_log_info("- metrics listening on %s%s%s:%d", strchr(l->host, ':') ? "[" : "",
		              l->host, strchr(l->host, ':') ? "]" : "", l->port);
	}
	return m;
err:
	gw_metrics_free(m);
	return NULL;
}

/* gw_metrics_free - close the endpoint; NULL is a no-op. */
void gw_metrics_free(struct gw_metrics *m)
{
	if (m == NULL)
		return;
	if (m->http)
		evhttp_free(m->http);
	free(m);
}

/* gw_status_extra - the counters and recent problems part of `mxgate
 * status` (the control socket's status answer calls this). */
void gw_status_extra(struct gw *gw, struct util_buf *out)
{
	double nrej = util_metrics_value("mxgate_messages_rejected_total", NULL);
	util_buf_printf(out, "connections_total: %.0f\n",
	                util_metrics_value("mxgate_connections_total", NULL));
	util_buf_printf(out, "messages_accepted: %.0f\n",
	                util_metrics_value("mxgate_messages_accepted_total", NULL));
	util_buf_printf(out, "messages_rejected: %.0f (policy %.0f)\n", nrej,
	                util_metrics_value("mxgate_messages_rejected_total", "policy"));
	util_buf_printf(out, "deliveries: delivered %.0f, deferred %.0f, bounced %.0f\n",
	                util_metrics_value("mxgate_delivery_attempts_total", "delivered"),
	                util_metrics_value("mxgate_delivery_attempts_total", "deferred"),
	                util_metrics_value("mxgate_delivery_attempts_total", "bounced"));
	util_buf_printf(out, "reloads: ok %.0f, failed %.0f\n",
	                util_metrics_value("mxgate_config_reloads_total", "ok"),
	                util_metrics_value("mxgate_config_reloads_total", "failed"));
	util_buf_adds(out, "last_errors:\n");
	struct util_buf recent;
	util_buf_init(&recent);
	util_log_recent(&recent, "  ");
	util_buf_adds(out, recent.len ? recent.data : "  (none)\n");
	util_buf_free(&recent);
}
