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

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "smtp-reasons.h"
#include "version.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#define METRICS_MAX_BODY     4096 /* nobody needs to send us a body */

struct gw_metrics {
	struct gw *gw;
	struct evhttp *http;
	struct gw_http_guard *guard; /* request deadline and connection cap */
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
	    {"mxgate_sessions_cut_total", UTIL_METRIC_COUNTER, "reason",
	     "Sessions closed with 421 for holding a slot without sending mail: junk_commands, "
	     "session_time, transactions"},
	    {"mxgate_dnsbl_lookups_total", UTIL_METRIC_COUNTER, "result",
	     "Client DNSBL/DNSWL checks: clean, listed, failed (a zone timed out or failed: "
	     "judged without it)"},
	    {"mxgate_pregreet_total", UTIL_METRIC_COUNTER, "result",
	     "Pre-greeting tests: pass, cached (pass cache hit), early_talker, bare_pipelining, "
	     "non_smtp_command"},
	    {"mxgate_pregreet_store_errors_total", UTIL_METRIC_COUNTER, "store",
	     "Pregreet pass-cache lookups and writes to [state] redis that failed (the client "
	     "was tested as if unknown; a pass was kept on this node only)"},
	    {"mxgate_ratelimited_total", UTIL_METRIC_COUNTER, "limit",
	     "Connections (421), MAIL and RCPT commands (451) refused by a [ratelimit] rate, by "
	     "limit"},
	    {"mxgate_ratelimit_store_errors_total", UTIL_METRIC_COUNTER, "store",
	     "Rate-limit counts that failed (the event was let through)"},
	    {"mxgate_state_errors_total", UTIL_METRIC_COUNTER, "reason",
	     "[state] redis commands that failed and were let through (fail open): timeout (no "
	     "answer within timeout_ms), down (not connected), error"},
	    {"mxgate_state_evictions_total", UTIL_METRIC_COUNTER, "table",
	     "Entries evicted from a full in-process table to make room: ratelimit, greylist, "
	     "pregreet (least recently used of a sample; [ratelimit] max_keys, [greylist] "
	     "max_entries, [pregreet] pass_cache_size), dnsbl, verify (oldest first)"},
	    {"mxgate_greylist_total", UTIL_METRIC_COUNTER, "result",
	     "Greylisting decisions: new and early (451), retried, allowlisted, skipped, failed "
	     "([state] redis unavailable: accepted)"},
	    {"mxgate_stress_periods_total", UTIL_METRIC_COUNTER, NULL,
	     "Times the session count rose above [limits] stress_threshold (stress mode)"},
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
	    {"mxgate_arc_results_total", UTIL_METRIC_COUNTER, "result",
	     "ARC chain results of judged messages (RFC 8617): pass, fail, none"},
	    {"mxgate_arc_overrides_total", UTIL_METRIC_COUNTER, NULL,
	     "DMARC failures not enforced: trusted ARC sealer, i=1 dmarc=pass"},
	    {"mxgate_arc_seals_total", UTIL_METRIC_COUNTER, "outcome",
	     "ARC seals added to relayed messages: sealed, failed"},
	    {"mxgate_spam_verdicts_total", UTIL_METRIC_COUNTER, "verdict",
	     "Spam verdicts of judged messages (ham, spam)"},
	    {"mxgate_policy_actions_total", UTIL_METRIC_COUNTER, "action",
	     "Policy decisions: accept, quarantine, reject, tempfail"},
	    {"mxgate_dns_slow_refused_total", UTIL_METRIC_COUNTER, NULL,
	     "Policy DNS lookups refused at once: their domain is slow (slow_domain_limit)"},
	    {"mxgate_queue_messages", UTIL_METRIC_GAUGE, NULL, "Messages in the queue"},
	    {"mxgate_queue_oldest_age_seconds", UTIL_METRIC_GAUGE, NULL,
	     "Age of the oldest queued message, quarantine not counted (0 when empty)"},
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
	     "Messages accepted into quarantine (the queue's quarantine/): virus, spam, policy, "
	     "attachment"},
	    {"mxgate_quarantine_messages", UTIL_METRIC_GAUGE, NULL,
	     "Quarantined messages waiting in the queue's quarantine/ (refreshed every quarter of "
	     "the retention, at most hourly)"},
	    {"mxgate_quarantine_bytes", UTIL_METRIC_GAUGE, NULL, "Bytes of the quarantined messages"},
	    {"mxgate_quarantine_oldest_age_seconds", UTIL_METRIC_GAUGE, NULL,
	     "Age of the oldest quarantined message (0 when none)"},
	    {"mxgate_attachment_checks_total", UTIL_METRIC_COUNTER, "result",
	     "Attachment policy checks ([attachments]): clean, blocked or unchecked (too large, "
	     "unparsable)"},
	    {"mxgate_warnings_total", UTIL_METRIC_COUNTER, "kind",
	     "Messages given the external-sender warning ([warning]): banner (body banner added) "
	     "or subject_only (signed, encrypted, charset, size, already warned)"},
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
	    {"mxgate_metrics_http_closed_total", UTIL_METRIC_COUNTER, "reason",
	     "Metrics HTTP connections closed by mxgate: request_timeout, max_connections"},
	    {"mxgate_admin_http_closed_total", UTIL_METRIC_COUNTER, "reason",
	     "Dashboard connections closed by mxgate: request_timeout (no request answered "
	     "10 s after the accept or the last answer, TLS handshake included), "
	     "max_connections (128)"},
	    {"mxgate_queue_messages_by_state", UTIL_METRIC_GAUGE, "state",
	     "Messages in the queue by state: active, deferred, hold, quarantine"},
	    {"mxgate_route_delivered_total", UTIL_METRIC_COUNTER, "route",
	     "Recipients delivered, by [route] name"},
	    {"mxgate_route_deferred_total", UTIL_METRIC_COUNTER, "route",
	     "Recipient delivery attempts deferred (will be retried), by [route] name"},
	    {"mxgate_route_bounced_total", UTIL_METRIC_COUNTER, "route",
	     "Recipients bounced (permanent failure), by [route] name"},
	    {"mxgate_route_delivery_seconds_total", UTIL_METRIC_COUNTER, "route",
	     "Seconds spent per recipient attempt connecting and transferring, by [route] name; "
	     "divide by the sum of delivered, deferred and bounced for the mean latency"},
	    {"mxgate_tls_certificate_expiry_timestamp_seconds", UTIL_METRIC_GAUGE, NULL,
	     "notAfter of the [tls] server certificate loaded now, as a Unix time (0: no "
	     "certificate)"},
	    {"mxgate_build_info", UTIL_METRIC_GAUGE, "version", "Always 1; the mxgate version"},
	    {"process_cpu_seconds_total", UTIL_METRIC_COUNTER, NULL,
	     "User and system CPU time of the process, seconds"},
	    {"process_resident_memory_bytes", UTIL_METRIC_GAUGE, NULL, "Resident memory, bytes"},
	    {"process_open_fds", UTIL_METRIC_GAUGE, NULL, "Open file descriptors"},
	    {"process_max_fds", UTIL_METRIC_GAUGE, NULL, "Limit on open file descriptors"},
	    {"process_start_time_seconds", UTIL_METRIC_GAUGE, NULL,
	     "Start time of the process, Unix time"},
	};
	/* Labelled series an alert may watch exist from start-up at 0 (an
	 * increase() over a series that appears only with its first event never
	 * fires).  Label values are fixed sets; the SMTP refusal reasons come
	 * from the table the call sites are checked against (smtp-reasons.h);
	 * routes come from the config (gw_metrics_config).
	 * docs/postmaster-guide.md lists them. */
	static const struct {
		const char *name;
		const char *const values[8];
	} zero[] = {
	    {"mxgate_accept_pauses_total", {"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"}},
	    {"mxgate_dmarc_results_total", {"none", "pass", "fail", "temperror", "permerror"}},
	    {"mxgate_spam_verdicts_total", {"ham", "spam"}},
	    {"mxgate_policy_actions_total", {"accept", "quarantine", "reject", "tempfail"}},
	    {"mxgate_queue_envelope_errors_total", {"read", "corrupt"}},
	    {"mxgate_delivery_attempts_total", {"delivered", "deferred", "bounced"}},
	    {"mxgate_dsn_suppressed_total", {"spf_fail", "dmarc_fail"}},
	    {"mxgate_config_reloads_total", {"ok", "failed"}},
	    {"mxgate_metrics_http_closed_total", {"request_timeout", "max_connections"}},
	    {"mxgate_admin_http_closed_total", {"request_timeout", "max_connections"}},
	    {"mxgate_queue_messages_by_state", {"active", "deferred", "hold", "quarantine"}},
	    {"mxgate_state_evictions_total",
	     {"ratelimit", "greylist", "pregreet", "dnsbl", "verify", "admin_rdns"}},
	};
	static const struct {
		const char *name;
		const char *const *values; /* NULL-terminated */
	} zero_smtp[] = {
	    {"mxgate_connections_refused_total", smtp_refused_reasons},
	    {"mxgate_messages_rejected_total", smtp_rejected_reasons},
	};
	for (size_t i = 0; i < sizeof(cat) / sizeof(cat[0]); i++)
		(void)util_metrics_define(cat[i].name, cat[i].kind, cat[i].help, cat[i].label, NULL,
		                          0);
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		for (size_t k = 0; k < 8 && zero[i].values[k]; k++)
			util_metrics_add(zero[i].name, zero[i].values[k], 0);
	for (size_t i = 0; i < sizeof(zero_smtp) / sizeof(zero_smtp[0]); i++)
		for (size_t k = 0; zero_smtp[i].values[k] != NULL; k++)
			util_metrics_add(zero_smtp[i].name, zero_smtp[i].values[k], 0);
	util_metrics_set("mxgate_build_info", MXGATE_VERSION, 1);
	(void)util_metrics_define("mxgate_data_to_250_seconds", UTIL_METRIC_HISTOGRAM,
	                          "Time from the DATA command to the 250 reply of queued messages",
	                          NULL, data_buckets,
	                          sizeof(data_buckets) / sizeof(data_buckets[0]));
	(void)util_metrics_define(
	    "mxgate_delivery_seconds", UTIL_METRIC_HISTOGRAM,
	    "Time from arrival to successful delivery, per recipient (1 s resolution)", NULL,
	    delivery_buckets, sizeof(delivery_buckets) / sizeof(delivery_buckets[0]));
}

/* cert_not_after - notAfter of the first certificate in a PEM file, Unix
 * time; 0 when there is none or it cannot be read. */
static double cert_not_after(const char *path)
{
	FILE *f = path ? fopen(path, "r") : NULL;
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	struct tm tm;
	double t = 0;
	if (x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		t = (double)timegm(&tm);
	X509_free(x);
	if (f)
		fclose(f);
	ERR_clear_error();
	return t;
}

/* gw_metrics_config - what the metrics take from a (re)loaded config: the
 * route label values (at 0, so alerts see them from the start) and the
 * server certificate's expiry. */
void gw_metrics_config(const struct config *cfg)
{
	static const char *const fams[] = {
	    "mxgate_route_delivered_total", "mxgate_route_deferred_total",
	    "mxgate_route_bounced_total", "mxgate_route_delivery_seconds_total"};
	for (size_t r = 0; r < cfg->nroutes; r++)
		for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++)
			util_metrics_add(fams[i], cfg->routes[r].name, 0);
	util_metrics_set("mxgate_tls_certificate_expiry_timestamp_seconds", NULL,
	                 cert_not_after(cfg->tls_cert_file));
}

/* sample_process - CPU, memory and descriptors of this process. */
static void sample_process(void)
{
	static double cpu_seen;
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		if (cpu > cpu_seen) {
			util_metrics_add("process_cpu_seconds_total", NULL, cpu - cpu_seen);
			cpu_seen = cpu;
		}
	}
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size, rss;
	if (f && fscanf(f, "%lu %lu", &size, &rss) == 2)
		util_metrics_set("process_resident_memory_bytes", NULL,
		                 (double)rss * (double)sysconf(_SC_PAGESIZE));
	if (f)
		fclose(f);
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		size_t n = 0;
		while (readdir(d) != NULL)
			n++;
		closedir(d);
		util_metrics_set("process_open_fds", NULL, (double)(n > 3 ? n - 3 : 0)); /* . .. dirfd */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		util_metrics_set("process_max_fds", NULL, (double)rl.rlim_cur);
}

/* gw_metrics_sample - refresh the state gauges from the components. */
void gw_metrics_sample(struct gw *gw)
{
	int64_t now = util_now_us() / 1000000;
	sample_process();
	util_metrics_set("process_start_time_seconds", NULL, (double)gw->started);
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
		static const char *const states[] = {"active", "deferred", "hold", "quarantine"};
		for (int st = QUEUE_ACTIVE; st <= QUEUE_STATE_LAST; st++)
			util_metrics_set("mxgate_queue_messages_by_state", states[st],
			                 (double)queue_sched_count_state(gw->sched,
			                                                 (enum queue_state)st));
		/* at scrape time, like the states: a quarantine, release or
		 * delete shows at once (not at the next retention sweep) */
		size_t qn;
		int64_t qbytes, qoldest;
		queue_sched_quarantine_stats(gw->sched, &qn, &qbytes, &qoldest);
		util_metrics_set("mxgate_quarantine_messages", NULL, (double)qn);
		util_metrics_set("mxgate_quarantine_bytes", NULL, (double)qbytes);
		util_metrics_set("mxgate_quarantine_oldest_age_seconds", NULL,
		                 (double)(qoldest > 0 && now > qoldest ? now - qoldest : 0));
	}
	if (gw->qs)
		util_metrics_set("mxgate_queue_recycled_bytes", NULL,
		                 (double)queue_pool_bytes(gw->qs));
}

/* metrics_bev_cb - evhttp accepted a connection: its bufferevent, guarded. */
static struct bufferevent *metrics_bev_cb(struct event_base *base, void *arg)
{
	struct gw_metrics *m = arg;

	return gw_http_guard_track(m->guard,
	                           bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE));
}

/* metrics_request_cb - GET /metrics; everything else 404. */
static void metrics_request_cb(struct evhttp_request *req, void *arg)
{
	struct gw_metrics *m = arg;
	gw_http_guard_answered(m->guard, req); /* keep-alive scrapers: a new deadline */
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
	gw_metrics_config(cfg);
	if (cfg->nmetrics_listen == 0)
		return NULL;
	struct gw_metrics *m = util_xcalloc(1, sizeof(*m));
	m->gw = gw;
	m->http = evhttp_new(gw->base);
	if (m->http == NULL) {
		snprintf(err, errlen, "metrics: cannot create the HTTP server");
		goto err;
	}
	/* evhttp's timeout is per read (a drip-feeding client renews it): the
	 * guard enforces a deadline for the whole request and the cap. */
	evhttp_set_timeout(m->http, cfg->metrics_request_timeout);
	m->guard = gw_http_guard_new(gw->base, "metrics", "mxgate_metrics_http_closed_total",
	                             cfg->metrics_request_timeout * 1000,
	                             (size_t)cfg->metrics_max_connections);
	if (m->guard == NULL) {
		snprintf(err, errlen, "metrics: cannot create a timer");
		goto err;
	}
	evhttp_set_bevcb(m->http, metrics_bev_cb, m);
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
		evhttp_free(m->http);   /* frees its connections: then the guard */
	gw_http_guard_free(m->guard);
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
