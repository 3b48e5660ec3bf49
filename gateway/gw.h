/*
 * gw.h - the daemon: wiring of config, queue, scheduler, resolver, policy,
 * SMTP server and deliverer into one libevent loop; lifecycle (signals,
 * reload, drain); the control socket and the CLI subcommands that talk to it.
 *
 * Ownership: struct gw owns everything it points to.
 */
#ifndef MX_GW_H
#define MX_GW_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "policy.h"
#include "queue.h"
#include "smtp.h"

struct gw_control;
struct gw_metrics;
struct gw_admin;
struct gw_mta_sts;

struct gw {
	struct event_base *base;
	const char *config_path;      /* NULL = embedded default */
	struct config *cfg;           /* current config */
	struct policy_dns *dns;
	struct policy_ctx *policy;    /* NULL when SPF, DKIM and DMARC are all off */
	struct queue_store *qs;
	struct queue_sched *sched;
	struct smtp_server *server;
	struct smtp_deliverer *deliverer;
	struct gw_control *control;
	struct gw_metrics *metrics;   /* NULL when [metrics] listen is not set */
	struct gw_admin *admin;       /* NULL when [admin] listen or token is not set */
	struct gw_mta_sts *mta_sts;   /* NULL when [mta_sts] listen is not set */
	struct reports_store *reports; /* NULL when [reports] record = no */
	struct reports_sender *reports_sender; /* NULL when [reports] record = no */
	struct reports_ingest *reports_ingest; /* NULL when [reports] ingest = no */
	int64_t started;              /* seconds since the epoch */
	bool stopping;
};

/* gw_reload - re-read the config; on errors log every one and keep the old
 * config.  0/-1. */
int gw_reload(struct gw *gw, struct util_buf *report);
/* gw_reopen_logs - reopen [log] file after rotation (SIGUSR1, `mxgate
 * reopen-logs`); report (may be NULL) gets one line.  0/-1. */
int gw_reopen_logs(struct util_buf *report);
/* gw_retiring_count - replaced configs no session uses whose policy context
 * still waits for its last message (status). */
size_t gw_retiring_count(void);

/* ------------------------------------------------------------ control socket */

/* A unix stream socket (owner [server] user, group control_socket_group,
 * mode control_socket_mode) at cfg->control_socket.  Protocol: the
 * client sends one line "COMMAND [ARG]\n"; the daemon answers with text lines
 * and a last line "OK" or "ERR message".  Commands: queue-list, queue-show ID,
 * queue-flush [ID], queue-hold ID, queue-release ID, queue-delete ID, status,
 * reload. */
struct gw_control *gw_control_new(struct gw *gw, const char *path, char *err, size_t errlen);
void gw_control_free(struct gw_control *c);

/* gw_control_request - client side: connect to path, send the line, copy the
 * answer to stdout.  Returns the process exit code (0 on OK). */
int gw_control_request(const char *path, const char *line);

/* gw_config_path - the config a subcommand uses: given (-c), else
 * /etc/mxgate/mxgate.conf when it exists (or cannot be looked at: EACCES),
 * else NULL (the embedded default); says on stderr which when -c was not
 * given (gw-cli.c). */
const char *gw_config_path(const char *given);
/* gw_control_socket_for - the daemon's control socket for config_path:
 * from the loaded config, or, when the file has errors, from a partial read
 * (config_peek_control_socket) with a note on stderr; when the user may not
 * read the file, the packaged /run/mxgate/control.sock, with a note.
 * 0 (config loaded), 1 (path from the partial read or the default), -1. */
int gw_control_socket_for(const char *config_path, char *out, size_t outlen);

/* ------------------------------------------------------------ subcommands */

int gw_cmd_run(int argc, char **argv);
int gw_cmd_check_config(int argc, char **argv);
int gw_cmd_queue(int argc, char **argv);     /* mxgate queue list|show|flush|hold|release|delete */
int gw_cmd_quarantine(int argc, char **argv); /* mxgate quarantine list|show|release|delete */
/* gw_quarantine_execute - the daemon's side of "quarantine-*" control
 * requests (gw-quarantine.c); peer = the requesting user.  0/-1 + err. */
int gw_quarantine_execute(struct gw *gw, const char *cmd, const char *arg, const char *peer,
                          struct util_buf *out, char *err, size_t errlen);

/* ------------------------------------------------------------ production (issue 7) */

/* gw_admin_new - the report dashboard on [admin] listen, in its own thread
 * (gw-admin.c); NULL with err[0] == 0 when not configured, NULL + err on
 * error.  gw borrowed for the call.  gw_admin_free: NULL is a no-op. */
struct gw_admin *gw_admin_new(struct gw *gw, char *err, size_t errlen);
void gw_admin_free(struct gw_admin *a);
/* gw_admin_reload - re-read the [tls] certificate of an HTTPS dashboard
 * (renewals; on error the old one stays); NULL or plain HTTP: a no-op. */
void gw_admin_reload(struct gw_admin *a, const struct config *cfg);
/* The dashboard's page and script (gw-admin-page.c). */
extern const char gw_admin_html[], gw_admin_js[];
extern const size_t gw_admin_html_len, gw_admin_js_len;
/* The connection guard of an evhttp listener (gw-httpguard.c): a deadline
 * of timeout_ms from accept or from the last request answered (evhttp's
 * own timeout is per read, which a drip renews), and at most max_conns
 * connections; closed connections counted in metric{reason}.  Give every
 * bufferevent of the listener's bevcb to gw_http_guard_track (returns it;
 * NULL stays NULL), call gw_http_guard_answered from the request callback,
 * and free the guard after evhttp_free().  All on the thread of base. */
struct bufferevent;
struct evhttp_request;
struct gw_http_guard;
struct gw_http_guard *gw_http_guard_new(struct event_base *base, const char *name,
                                        const char *metric, int timeout_ms, size_t max_conns);
struct bufferevent *gw_http_guard_track(struct gw_http_guard *g, struct bufferevent *bev);
void gw_http_guard_answered(struct gw_http_guard *g, struct evhttp_request *req);
void gw_http_guard_free(struct gw_http_guard *g);
/* gw_metrics_define - declare every metric mxgate counts (gw-metrics.c). */
void gw_metrics_define(void);
/* gw_metrics_config - route series at 0 and the certificate's expiry, from
 * a config just loaded (start-up and every reload). */
void gw_metrics_config(const struct config *cfg);
/* gw_metrics_sample - refresh the state gauges (sessions, queue, uptime). */
void gw_metrics_sample(struct gw *gw);
/* gw_metrics_new - define the catalogue, serve GET /metrics on [metrics]
 * listen.  NULL with err empty when no listener is configured; NULL with a
 * message on error.  Caller frees with gw_metrics_free(). */
struct gw_metrics *gw_metrics_new(struct gw *gw, char *err, size_t errlen);
void gw_metrics_free(struct gw_metrics *m);

/* MTA-STS (gw-mtasts.c): the policy text (CRLF lines), its id (20 hex
 * digits, a hash of the text), and the HTTPS endpoint on [mta_sts] listen
 * (NULL with err empty when not configured). */
void gw_mta_sts_policy(const struct config *cfg, struct util_buf *out);
void gw_mta_sts_id(const struct config *cfg, char out[21]);
const char *gw_mta_sts_mode_name(const struct config *cfg);
struct gw_mta_sts *gw_mta_sts_new(struct gw *gw, char *err, size_t errlen);
void gw_mta_sts_free(struct gw_mta_sts *ms);
/* gw_mta_sts_reload - re-read the [tls] certificate; NULL ms is a no-op. */
void gw_mta_sts_reload(struct gw_mta_sts *ms, const struct config *cfg);

/* gw_status_extra - counters and the last warnings/errors, appended to the
 * control socket's `status` answer (gw-metrics.c). */
void gw_status_extra(struct gw *gw, struct util_buf *out);

/* gw_cmd_log - `mxgate log [QUEUE-ID] [--from A] [--to A] [--since T]
 * [--file LOG|-] [-c FILE]`: a message's story from the log (gw-logcmd.c). */
int gw_cmd_log(int argc, char **argv);
/* gw_cmd_dns_records - `mxgate dns-records [-c FILE]` (gw-dnsrecords.c). */
int gw_cmd_dns_records(int argc, char **argv);
/* gw_cmd_keygen - `mxgate keygen [--algorithm A] [--bits N] [--group G]
 * FILE`: a new seal key and its DKIM key record (gw-keygen.c). */
int gw_cmd_keygen(int argc, char **argv);
/* gw_cmd_reports - `mxgate reports preview DOMAIN [-c FILE]` (gw-reports.c). */
int gw_cmd_reports(int argc, char **argv);

#endif
