/*
 * gw-run.c - the daemon's life: load the config, build every component on
 * one libevent loop, drop privileges, run; SIGHUP reloads (a bad file keeps
 * the old config), SIGTERM/SIGINT stop accepting, let sessions finish their
 * transaction (grace period), drain deliveries and exit 0.
 *
 * Ownership: struct gw owns every component.  A config and the policy
 * context made for it that a reload replaced stay alive while sessions that
 * started under them run: the SMTP server counts them and hands the pair
 * back when its last session ends (gw_retire_cb); the policy context then
 * goes once its last message is gone (policy_retire: workers joined, pipe
 * closed, from a deferred event), and the config after it.  So reloads leak
 * nothing (test_reload_leaks.py).  At exit the resolver is freed last, after
 * every policy context whose workers use it.
 *
 * Diagnostics: start-up problems are printed as FILE:LINE: message (config)
 * or one line each, and the process exits non-zero; after start-up every
 * problem is logged and the daemon keeps going.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "gw.h"
#include "version.h"

#define SHUTDOWN_GRACE_MS 30000

/* Replaced config/policy pairs no session uses, waiting for the policy
 * context's last message (policy_retire); freed at exit when still here. */
struct gw_retired {
	struct config *cfg;
	struct policy_ctx *policy;
	struct gw_retired *next, *prev;
};
static struct gw_retired *retired;

/* retired_free - the policy context is gone: free the config it used. */
static void retired_free(void *arg)
{
	struct gw_retired *r = arg;
	if (r->prev)
		r->prev->next = r->next;
	else
		retired = r->next;
	if (r->next)
		r->next->prev = r->prev;
	config_free(r->cfg);
	free(r);
}

/* gw_retiring_count - pairs waiting for their policy context's last message. */
size_t gw_retiring_count(void)
{
	size_t n = 0;
	for (const struct gw_retired *r = retired; r; r = r->next)
		n++;
	return n;
}

/* gw_retire_cb - the SMTP server no longer uses a replaced pair. */
static void gw_retire_cb(void *arg, const struct config *cfg, struct policy_ctx *policy)
{
	struct gw_retired *r = util_xcalloc(1, sizeof(*r));
	(void)arg;
	r->cfg = (struct config *)cfg;   /* ours: gw_reload made it */
	r->policy = policy;
	r->next = retired;
	if (retired)
		retired->prev = r;
	retired = r;
	if (policy)
		policy_retire(policy, retired_free, r);
	else
		retired_free(r);
}

/* gw_cmd_check_config - validate; every problem as FILE:LINE: message. */
int gw_cmd_check_config(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			path = argv[++i];
		else {
			fprintf(stderr, "usage: mxgate check-config [-c FILE]\n");
			return 2;
		}
	}
	path = gw_config_path(path);
	struct config_diags diags = {0};
	struct config *cfg = config_load_flags(path, CONFIG_LOAD_HOST, &diags);
	config_diags_print(&diags, stderr);
	size_t errors = config_diags_errors(&diags);
	config_diags_free(&diags);
	if (!cfg) {
		fprintf(stderr, "%s: %zu error%s\n", path ? path : "(embedded default)", errors,
			errors == 1 ? "" : "s");
		return 2;
	}
	if (cfg->arc_seal) {
		/* the seal's key: read and matched to [arc] algorithm here too,
		 * so a bad key is found before a start or reload refuses it */
		char kerr[512];
		char *rec = policy_arc_selector_record(cfg, kerr, sizeof(kerr));
		if (rec == NULL) {
			fprintf(stderr, "%s: %s\n", cfg->path, kerr);
			config_free(cfg);
			return 2;
		}
		free(rec);
	}
	printf("%s: ok\n", cfg->path);
	config_free(cfg);
	return 0;
}

/* wants_policy - any ingress check (or ARC) on. */
static bool wants_policy(const struct config *cfg)
{
	return cfg->spf_enabled || cfg->dkim_enabled || cfg->dmarc_enabled ||
	       cfg->dnsbl_zones.n > 0 || cfg->ndnsbl_sites > 0 || cfg->arc_enabled || cfg->arc_seal;
}

/* report_diags - each diagnostic into the log and, for `mxgate reload`,
 * into its answer (FILE:LINE: [warning: ]message, as check-config). */
static void report_diags(const struct config_diags *d, struct util_buf *report)
{
	for (size_t i = 0; i < d->n; i++) {
		const struct config_diag *e = &d->v[i];
		util_log(e->warning ? UTIL_LOG_WARN : UTIL_LOG_ERR, "- reload %s:%d: %s%s", e->file,
			 e->line, e->warning ? "warning: " : "", e->msg);
		if (report && e->line > 0)
			util_buf_printf(report, "%s:%d: %s%s\n", e->file, e->line,
					e->warning ? "warning: " : "", e->msg);
		else if (report)
			util_buf_printf(report, "%s: %s%s\n", e->file, e->warning ? "warning: " : "",
					e->msg);
	}
}

/* gw_reload - re-read the config; keep the old one when the new is bad.
 * report (may be NULL) gets the problems and the changes that need a
 * restart, for the `mxgate reload` answer. */
int gw_reload(struct gw *gw, struct util_buf *report)
{
	struct config_diags diags = {0};
	struct config *cfg = config_load(gw->config_path, &diags);
	report_diags(&diags, report);
	config_diags_free(&diags);
	if (!cfg) {
		util_log_err("- reload refused: the config has errors; still running on the old one");
		util_metrics_inc("mxgate_config_reloads_total", "failed");
		return -1;
	}
	/* Directives that only a restart applies: say so, apply the rest. */
	struct config_diags notes = {0};
	(void)config_reload_check(gw->cfg, cfg, &notes);
	report_diags(&notes, report);
	config_diags_free(&notes);
	char err[512];
	struct policy_ctx *policy = NULL;
	if (wants_policy(cfg)) {
		policy = policy_new(cfg, gw->base, gw->dns, err, sizeof(err));
		if (!policy) {
			util_log_err("- reload refused: %s", err);
			if (report)
				util_buf_printf(report, "%s\n", err);
			util_metrics_inc("mxgate_config_reloads_total", "failed");
			config_free(cfg);
			return -1;
		}
	}
	if (smtp_server_reload(gw->server, cfg, policy, err, sizeof(err)) < 0) {
		util_log_err("- reload refused: %s", err);
		if (report)
			util_buf_printf(report, "%s\n", err);
		util_metrics_inc("mxgate_config_reloads_total", "failed");
		policy_free(policy);
		config_free(cfg);
		return -1;
	}
	/* The old pair is the server's to hand back (gw_retire_cb). */
	gw->cfg = cfg;
	gw->policy = policy;
	queue_sched_set_config(gw->sched, cfg);
	smtp_deliverer_set_config(gw->deliverer, cfg);
	reports_sender_set_config(gw->reports_sender, cfg); /* issue 14 */
	util_log_set_level(cfg->log_level);
	util_log_set_format(cfg->log_format);   /* [log] format is reloadable */
	gw_mta_sts_reload(gw->mta_sts, cfg);    /* renewed certificate for HTTPS too */
	gw_admin_reload(gw->admin, cfg);        /* and for the dashboard's */
	gw_metrics_config(cfg);                 /* new routes, renewed certificate */
	util_metrics_inc("mxgate_config_reloads_total", "ok");
	util_log_info("- reloaded config=%s", cfg->path);
	if (report)
		util_buf_printf(report, "reloaded %s\n", cfg->path);
	return 0;
}

/* drop_privileges - after binding: become cfg->user (and cfg->group), with
 * no supplementary groups, and check that root cannot be regained.  Started
 * as root without `user`, mxgate refuses to go on when it listens on a port
 * below 1024 (a real MX) unless [server] allow_root = yes; on unprivileged
 * ports (`make run`, the tests) it only warns.  docs/security.md. */
static int drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
	if (geteuid() != 0)
		return 0;
	if (!cfg->user) {
		bool privileged = false;
		for (size_t i = 0; i < cfg->nlisten; i++)
			if (cfg->listen[i].port < 1024)
				privileged = true;
		if (cfg->allow_root) {
			util_log_warn("- running as root (allow_root = yes)");
			return 0;
		}
		if (privileged) {
			snprintf(err, errlen, "refusing to run as root: set [server] user (and group) "
					      "to drop privileges after binding, or allow_root = yes");
			return -1;
		}
		util_log_warn("- running as root without [server] user: set user to drop "
			      "privileges after binding (allow_root = yes silences this)");
		return 0;
	}
	struct passwd *pw = getpwnam(cfg->user);
	if (!pw) {
		snprintf(err, errlen, "user %s does not exist", cfg->user);
		return -1;
	}
	if (pw->pw_uid == 0 && !cfg->allow_root) {
		snprintf(err, errlen, "user %s is root: refusing to run as root "
				      "(allow_root = yes to insist)", cfg->user);
		return -1;
	}
	gid_t gid = pw->pw_gid;
	if (cfg->group) {
		struct group *gr = getgrnam(cfg->group);
		if (!gr) {
			snprintf(err, errlen, "group %s does not exist", cfg->group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(pw->pw_uid) < 0) {
		snprintf(err, errlen, "cannot drop privileges to %s: %s", cfg->user,
			 strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) {
		snprintf(err, errlen, "dropped privileges to %s but could regain root", cfg->user);
		return -1;
	}
	/* The queue was opened (and its folders created) as root: if the new
	 * user cannot write them, every message would get 451 from now on -
	 * refuse to start instead, and say what to fix. */
	static const char *const sub[] = {"",          "/incoming", "/msg",        "/active",
	                                  "/deferred", "/hold",     "/quarantine", "/corrupt",
	                                  "/free"};
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s%s", cfg->queue_dir, sub[i]);
		if (access(path, W_OK | X_OK) < 0 && errno != ENOENT) {
			int e = errno;
			snprintf(err, errlen, "queue folder %.200s is not writable by user %.64s "
					      "(%.64s): chown -R it to that user", path, cfg->user,
				 strerror(e));
			return -1;
		}
	}
	util_log_info("- dropped privileges user=%s uid=%u gid=%u", cfg->user,
		      (unsigned)getuid(), (unsigned)getgid());
	return 0;
}

static struct event *stop_timer;
static bool deliveries_drained;   /* the scheduler has no delivery in flight */

/* drained_cb - queue_sched_drain: the last in-flight delivery finished. */
static void drained_cb(void *arg)
{
	deliveries_drained = true;
}

static int64_t stop_deadline;

/* stop_tick - exit once sessions and deliveries are done, or at the deadline. */
static void stop_tick(evutil_socket_t fd, short what, void *arg)
{
	struct gw *gw = arg;
	static const struct timeval tick = {0, 100000};
	size_t n = smtp_server_session_count(gw->server);
	if ((n == 0 && deliveries_drained) || util_mono_ms() >= stop_deadline) {
		if (!deliveries_drained)
			util_log_warn("- shutdown grace period over: deliveries still in flight "
				      "are retried later");
		if (n)
			util_log_warn("- shutdown grace period over sessions=%zu", n);
		event_base_loopexit(gw->base, NULL);
		return;
	}
	smtp_server_shutdown_sessions(gw->server);
	event_add(stop_timer, &tick);
}

/* gw_reopen_logs - see gw.h. */
int gw_reopen_logs(struct util_buf *report)
{
	const char *path = util_log_path();
	if (util_log_reopen() < 0) {
		int e = errno;
		util_log_err("- cannot reopen log file %s: %s; still writing to the old one", path,
			     strerror(e));
		if (report)
			util_buf_printf(report, "cannot reopen %s: %s\n", path, strerror(e));
		return -1;
	}
	util_log_info("- log file reopened file=%s", path ? path : "stderr");
	if (report)
		util_buf_printf(report, "reopened %s\n", path ? path : "stderr (nothing to do)");
	return 0;
}

/* signal_cb - SIGHUP reloads; SIGUSR1 reopens the log file; SIGTERM/SIGINT
 * stop. */
static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct gw *gw = arg;
	if (sig == SIGUSR1) {
		(void)gw_reopen_logs(NULL);
		return;
	}
	if (sig == SIGHUP) {
		util_log_info("- SIGHUP: reloading");
		(void)gw_reload(gw, NULL);
		return;
	}
	if (gw->stopping)
		return;
	gw->stopping = true;
	util_log_info("- signal %d: stopping sessions=%zu", (int)sig,
		      smtp_server_session_count(gw->server));
	sd_notify(0, "STOPPING=1");
	smtp_server_stop_accepting(gw->server);
	smtp_server_shutdown_sessions(gw->server);
	queue_sched_drain(gw->sched, drained_cb, NULL);
	stop_deadline = util_mono_ms() + SHUTDOWN_GRACE_MS;
	stop_timer = evtimer_new(gw->base, stop_tick, gw);
	event_active(stop_timer, EV_TIMEOUT, 0);
}

/* gw_cmd_run - the daemon. */
int gw_cmd_run(int argc, char **argv)
{
	struct gw gw = {0};
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			gw.config_path = argv[++i];
		else {
			fprintf(stderr, "usage: mxgate run [-c FILE]\n");
			return 2;
		}
	}
	gw.config_path = gw_config_path(gw.config_path);
	struct config_diags diags = {0};
	gw.cfg = config_load_flags(gw.config_path, CONFIG_LOAD_HOST, &diags);
	if (!gw.cfg) {
		config_diags_print(&diags, stderr);
		config_diags_free(&diags);
		fprintf(stderr, "mxgate: refusing to start: the config has errors\n");
		return 2;
	}
	if (util_log_init(gw.cfg->log_level, gw.cfg->log_format, gw.cfg->log_file) < 0) {
		fprintf(stderr, "mxgate: cannot open log file %s: %s\n", gw.cfg->log_file,
			strerror(errno));
		config_diags_free(&diags);
		return 1;
	}
	/* warnings of a good config go through the log, so a JSON log stays JSON */
	for (size_t i = 0; i < diags.n; i++)
		util_log_warn("- config %s:%d: warning: %s", diags.v[i].file, diags.v[i].line,
			      diags.v[i].msg);
	config_diags_free(&diags);
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	gw.base = event_base_new();
	if (!gw.base)
		util_fatal("- cannot create the event loop");
	gw.started = util_now_us() / 1000000;

	char err[512];
	int rc = 1;
	struct event *sigs[4] = {0};
	gw.dns = policy_dns_new(gw.cfg, gw.base, err, sizeof(err));
	if (!gw.dns) {
		util_log_err("- DNS resolver: %s", err);
		goto out;
	}
	util_log_info("- dnssec=%s", policy_dns_dnssec_status(gw.dns));
	if (wants_policy(gw.cfg)) {
		gw.policy = policy_new(gw.cfg, gw.base, gw.dns, err, sizeof(err));
		if (!gw.policy) {
			util_log_err("- policy: %s", err);
			goto out;
		}
	}
	gw.qs = queue_store_open(gw.cfg->queue_dir, gw.cfg->queue_fsync, gw.base, err, sizeof(err));
	if (!gw.qs) {
		util_log_err("- queue %s: %s", gw.cfg->queue_dir, err);
		goto out;
	}
	gw.deliverer = smtp_deliverer_new(gw.base, gw.cfg, gw.dns, err, sizeof(err));
	if (!gw.deliverer) {
		util_log_err("- deliverer: %s", err);
		goto out;
	}
	gw.sched = queue_sched_new(gw.qs, gw.base, gw.cfg, &smtp_deliver_ops, gw.deliverer);
	if (!gw.sched) {
		util_log_err("- scheduler could not start");
		goto out;
	}
	gw.server = smtp_server_new(gw.base, gw.cfg, gw.qs, gw.policy, gw.dns, err, sizeof(err));
	if (!gw.server) {
		util_log_err("- %s", err);
		goto out;
	}
	smtp_server_set_retire(gw.server, gw_retire_cb, &gw);
	gw.control = gw_control_new(&gw, gw.cfg->control_socket, err, sizeof(err));
	if (!gw.control) {
		util_log_err("- control socket %s: %s", gw.cfg->control_socket, err);
		goto out;
	}
	if ((gw.metrics = gw_metrics_new(&gw, err, sizeof(err))) == NULL && err[0]) {
		util_log_err("- %s", err);   /* issue 7: Prometheus endpoint */
		goto out;
	}
	if ((gw.admin = gw_admin_new(&gw, err, sizeof(err))) == NULL && err[0]) {
		util_log_err("- %s", err);   /* issue 15: report dashboard */
		goto out;
	}
	if ((gw.mta_sts = gw_mta_sts_new(&gw, err, sizeof(err))) == NULL && err[0]) {
		util_log_err("- %s", err);   /* issue 7: MTA-STS policy over HTTPS */
		goto out;
	}
	if (drop_privileges(gw.cfg, err, sizeof(err)) < 0) {
		util_log_err("- %s", err);
		goto out;
	}
	/* after the privilege drop: the store's files belong to the run user.
	 * A store that cannot be opened (broken file, server down) is not an
	 * error here: recording starts degraded and the writer retries; only
	 * a config this build cannot serve or no memory fails these calls. */
	if (gw.cfg->reports_record) {
		gw.reports = reports_open(gw.cfg, err, sizeof(err));
		if (!gw.reports) {
			util_log_err("- reports: %s", err);
			goto out;
		}
		smtp_server_set_reports(gw.server, gw.reports);
		gw.reports_sender = reports_sender_new(gw.base, gw.cfg, gw.dns, gw.qs, gw.reports, err,
						       sizeof(err));
		if (!gw.reports_sender) {
			util_log_err("- reports: %s", err);
			goto out;
		}
		/* RFC 9991 failure reports ([reports] failure_reports) */
		smtp_server_set_failure(gw.server, reports_sender_failure(gw.reports_sender));
	}
	if (gw.cfg->reports_ingest) {   /* issue 15: reports mailed to us */
		gw.reports_ingest = reports_ingest_new(gw.cfg, err, sizeof(err));
		if (!gw.reports_ingest) {
			util_log_err("- reports: %s", err);
			goto out;
		}
		smtp_server_set_ingest(gw.server, gw.reports_ingest);
	}
	int signums[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
	for (int i = 0; i < 4; i++) {
		sigs[i] = evsignal_new(gw.base, signums[i], signal_cb, &gw);
		evsignal_add(sigs[i], NULL);
	}
	util_log_info("- mxgate %s started config=%s hostname=%s queue=%s", MXGATE_VERSION,
		      gw.cfg->path, gw.cfg->hostname, gw.cfg->queue_dir);
	if (!gw.cfg->clamav_socket && !gw.cfg->rspamd_address)
		util_log_info("- content inspection off: set [clamav] socket = /run/clamav/clamd.ctl "
			      "and/or [rspamd] address = 127.0.0.1:11333 (docs/postmaster-guide.md)");
	sd_notify(0, "READY=1");
	event_base_dispatch(gw.base);
	util_log_info("- mxgate stopped");
	rc = 0;
out:
	for (int i = 0; i < 4; i++)
		if (sigs[i])
			event_free(sigs[i]);
	if (stop_timer)
		event_free(stop_timer);
	gw_mta_sts_free(gw.mta_sts);
	gw_metrics_free(gw.metrics);
	gw_admin_free(gw.admin);
	gw_control_free(gw.control);
	smtp_server_free(gw.server);    /* hands back replaced pairs (gw_retire_cb) */
	reports_sender_free(gw.reports_sender); /* waits for a run in progress */
	reports_close(gw.reports);      /* writes what is still queued */
	reports_ingest_free(gw.reports_ingest); /* parses what is still queued */
	queue_sched_free(gw.sched);
	smtp_deliverer_free(gw.deliverer);
	queue_store_close(gw.qs);
	/* Every policy context (their workers use the resolver) before the
	 * resolver; each config after its context. */
	while (retired) {
		struct gw_retired *n = retired->next;
		policy_free(retired->policy);
		config_free(retired->cfg);
		free(retired);
		retired = n;
	}
	policy_free(gw.policy);
	policy_dns_free(gw.dns);
	config_free(gw.cfg);
	if (gw.base)
		event_base_free(gw.base);
	return rc;
}
