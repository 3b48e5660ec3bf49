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
	struct gw_mta_sts *mta_sts;   /* NULL when [mta_sts] listen is not set */
	struct reports_store *reports; /* NULL when [reports] record = no */
	struct reports_sender *reports_sender; /* NULL when [reports] record = no */
	int64_t started;              /* seconds since the epoch */
	bool stopping;
};

/* gw_reload - re-read the config; on errors log every one and keep the old
 * config.  0/-1. */
int gw_reload(struct gw *gw);
/* gw_retiring_count - replaced configs no session uses whose policy context
 * still waits for its last message (status). */
size_t gw_retiring_count(void);

/* ------------------------------------------------------------ control socket */

/* A unix stream socket (mode 0600) at cfg->control_socket.  Protocol: the
 * client sends one line "COMMAND [ARG]\n"; the daemon answers with text lines
 * and a last line "OK" or "ERR message".  Commands: queue-list, queue-show ID,
 * queue-flush [ID], queue-hold ID, queue-release ID, queue-delete ID, status,
 * reload. */
struct gw_control *gw_control_new(struct gw *gw, const char *path, char *err, size_t errlen);
void gw_control_free(struct gw_control *c);

/* gw_control_request - client side: connect to path, send the line, copy the
 * answer to stdout.  Returns the process exit code (0 on OK). */
int gw_control_request(const char *path, const char *line);

/* ------------------------------------------------------------ subcommands */

int gw_cmd_run(int argc, char **argv);
int gw_cmd_check_config(int argc, char **argv);
int gw_cmd_queue(int argc, char **argv);     /* mxgate queue list|show|flush|hold|release|delete */

/* ------------------------------------------------------------ production (issue 7) */

/* gw_metrics_define - declare every metric mxgate counts (gw-metrics.c). */
void gw_metrics_define(void);
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

/* gw_cmd_dns_records - `mxgate dns-records [-c FILE]` (gw-dnsrecords.c). */
int gw_cmd_dns_records(int argc, char **argv);
/* gw_cmd_reports - `mxgate reports preview DOMAIN [-c FILE]` (gw-reports.c). */
int gw_cmd_reports(int argc, char **argv);

#endif
