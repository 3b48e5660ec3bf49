/*
 * reports-failure.c - DMARC failure reports (RFC 9991), off unless
 * [reports] failure_reports = yes: for a message whose DMARC result is fail
 * and whose policy record asks for them (ruf= mailto: destinations, fo=),
 * one ARF report (RFC 5965 multipart/report; report-type=feedback-report,
 * RFC 6591 Feedback-Type: auth-failure, Auth-Failure: dmarc, the RFC 9991
 * Identity-Alignment field) per destination, whose third part is the
 * original header block only (text/rfc822-headers: no body content), with
 * the local parts of the recipient addresses - or, with failure_report_redact
 * = addresses, of every address - replaced by a keyed hash (RFC 6590 style:
 * the same address gives the same token, so a Domain Owner can tell reports
 * apart without learning the address).  The report itself is built by
 * reports-failure-build.c (pure); this file is the sender.
 *
 * What is left out on purpose (RFC 9991 7, privacy): the body, Bcc fields,
 * display names of redacted address fields.  Never reported on: messages
 * with the null reverse-path, reports (multipart/report) and anything
 * Auto-Submitted (RFC 3834): no report loops; records with psd=y (RFC 9991
 * 2: a PSD's ruf needs an agreement).  fo= (RFC 9989 4.7): 0 and 1 both
 * hold for a DMARC fail; d needs a DKIM signature that failed to verify, s
 * an SPF fail (mxgate reports DMARC failures only: no RFC 6651/6652 reports).
 *
 * Threads: reports_failure_submit() runs on the loop and never waits: it
 * filters, applies the per destination domain rate limit (RFC 9991 2:
 * "MUST implement a rate-limit") and copies what the report needs into a
 * job on a bounded queue.  One worker thread verifies external destinations
 * (sync DNS, RFC 9990 3 with ruf for rua), builds, signs (the aggregate
 * reports' key) and hands finished messages back through a pipe; only the
 * loop calls queue_inject() (locally originated, null reverse-path: the
 * outbound route, never bounced, never the inbound downstream).
 *
 * Ownership: the failure sender borrows dns and qs, copies what it keeps
 * of cfg; jobs and messages are owned by whoever holds them in a list.
 * Diagnostics: "- reports failure ..." log lines;
 * mxgate_reports_failure_total{result}.
 */
#include "reports-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue.h"

#define FR_QUEUE_MAX   64        /* jobs waiting for the worker */
#define FR_RATE_SLOTS  512       /* destination domains rate-limited at once */
#define FR_MAX_RCPTS   REPORTS_FAILURE_MAX_RCPTS
#define FR_HDRS_MAX    (64 * 1024)

/* ------------------------------------------------------------ the sender */

struct reports_failure {
	struct event_base *base;
	const struct config *cfg; /* borrowed; the current one (reload) */
	struct policy_dns *dns;
	struct queue_store *qs;
	/* the worker's own copies (fixed at start: [reports] needs a restart) */
	char *hostname, *email, *selector, *sign_domain, *key_pem;
	unsigned char key[32]; /* the redaction key */
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct reports_failure_job *q, **qtail; /* the worker's queue */
	size_t qlen;
	bool stop;
	struct reports_out *done; /* finished messages, for the loop */
	int pipefd[2];
	struct event *done_ev;
	struct reports_failure_rate *rates; /* FR_RATE_SLOTS, loop thread */
};

/* verify_dest - RFC 9991 5 / RFC 9990 3: a destination outside the policy
 * domain's organizational domain must publish
 * <policy-domain>._report._dmarc.<dest-domain> "v=DMARC1". */
static bool verify_dest(struct reports_failure *fr, const char *domain, const char *to)
{
	const char *dd = strrchr(to, '@') + 1;
	if (reports_same_org(domain, dd))
		return true;
	char *vname = util_xasprintf("%s._report._dmarc.%s", domain, dd);
	char *v = reports_find_dmarc(fr->dns, vname);
	bool ok = v != NULL;
	free(vname);
	free(v);
	return ok;
}

/* work_job - worker: the job's report to each of its destinations. */
static void work_job(struct reports_failure *fr, struct reports_failure_job *j)
{
	char err[256];

	if (j->spf_domain != NULL) { /* SPF-DNS: the SPF records of the domain */
		struct util_strlist txt = {0};
		bool secure = false;
		if (policy_dns_txt_sync(fr->dns, j->spf_domain, &txt, &secure) == POLICY_DNS_OK)
			for (size_t i = 0; i < txt.n; i++)
				if (strncasecmp(txt.v[i], "v=spf1", 6) == 0 &&
				    (txt.v[i][6] == '\0' || txt.v[i][6] == ' '))
					util_strlist_add(&j->spf_dns, txt.v[i]);
		util_strlist_free(&txt);
	}
	for (size_t i = 0; i < j->dests.n; i++) {
		const char *to = j->dests.v[i];
		if (!verify_dest(fr, j->record_domain, to)) {
			/* counted before the log line: a test reading the log
			 * finds the count */
			util_metrics_inc("mxgate_reports_failure_total", "unverified");
			util_log_warn("- reports failure domain=%s ruf=%s not verified: no "
			              "%s._report._dmarc.%s record, skipped",
			              j->record_domain, to, j->record_domain, strrchr(to, '@') + 1);
			continue;
		}
		size_t len = 0;
		char *msg = reports_failure_compose(j, fr->email, to, fr->hostname, fr->key,
		                                    j->redact_all, &len);
		char *sig = reports_dkim_sign(fr->key_pem, fr->selector, fr->sign_domain, msg, len,
		                              err, sizeof(err));
		if (sig == NULL) {
			util_log_err("- reports failure domain=%s ruf=%s not signed error=\"%s\"",
			             j->header_from, to, err);
			util_metrics_inc("mxgate_reports_failure_total", "sign_error");
			free(msg);
			continue;
		}
		size_t total = strlen(sig) + len;
		if (j->limits[i] > 0 && total > j->limits[i]) {
			util_metrics_inc("mxgate_reports_failure_total", "too_big");
			util_log_warn("- reports failure domain=%s ruf=%s size=%zu over the limit "
			              "%llu, skipped",
			              j->header_from, to, total, (unsigned long long)j->limits[i]);
			free(sig);
			free(msg);
			continue;
		}
		struct reports_out *o = calloc(1, sizeof(*o));
		if (o != NULL) {
			o->report_id = util_xstrdup(j->header_from);
			o->rcpt = util_xstrdup(to);
			o->sender = util_xstrdup(""); /* the null reverse-path */
			o->msg = util_xasprintf("%s%s", sig, msg);
			o->len = total;
			pthread_mutex_lock(&fr->lock);
			o->next = fr->done;
			fr->done = o;
			pthread_mutex_unlock(&fr->lock);
		}
		free(sig);
		free(msg);
	}
	char c = 'x';
	while (write(fr->pipefd[1], &c, 1) < 0 && errno == EINTR)
		;
}

/* worker - the failure report thread. */
static void *worker(void *arg)
{
	struct reports_failure *fr = arg;
	pthread_mutex_lock(&fr->lock);
	for (;;) {
		while (fr->q == NULL && !fr->stop)
			pthread_cond_wait(&fr->wake, &fr->lock);
		if (fr->stop)
			break; /* exit: what is left is dropped (best effort) */
		struct reports_failure_job *j = fr->q;
		fr->q = j->next;
		if (fr->q == NULL)
			fr->qtail = &fr->q;
		fr->qlen--;
		pthread_mutex_unlock(&fr->lock);
		work_job(fr, j);
		reports_failure_job_free(j);
		pthread_mutex_lock(&fr->lock);
	}
	pthread_mutex_unlock(&fr->lock);
	return NULL;
}

/* inject_cb - a failure report is durable in the queue (or not). */
static void inject_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	char *to = arg;
	(void)cookie;
	if (status == 0) {
		util_log_info("%s reports failure queued to=<%s>", qid ? qid : "-", to);
		util_metrics_inc("mxgate_reports_failure_total", "queued");
	} else {
		util_log_err("- reports failure queue commit failed to=<%s> error=\"%s\"", to,
		             strerror(err));
		util_metrics_inc("mxgate_reports_failure_total", "queue_error");
	}
	free(to);
}

/* queue_done - loop: queue what the worker finished. */
static void queue_done(struct reports_failure *fr)
{
	pthread_mutex_lock(&fr->lock);
	struct reports_out *list = fr->done;
	fr->done = NULL;
	pthread_mutex_unlock(&fr->lock);
	while (list != NULL) {
		struct reports_out *o = list;
		list = o->next;
		o->next = NULL;
		struct queue_envelope *env = queue_envelope_new();
		env->sender = util_xstrdup(o->sender);
		queue_envelope_add_rcpt(env, o->rcpt);
		env->client_addr = util_xstrdup("127.0.0.1");
		env->helo = util_xstrdup(fr->hostname);
		env->prepend = util_xstrdup("");
		env->arrival = (int64_t)time(NULL);
		env->size = (int64_t)o->len;
		env->is_dsn = true; /* locally originated: the outbound route, never bounced */
		queue_inject(fr->qs, env, o->msg, o->len, inject_cb, 0, util_xstrdup(o->rcpt));
		reports_out_free(o);
	}
}

/* done_cb - loop: the worker finished a job. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	char c[64];
	(void)what;
	while (read(fd, c, sizeof(c)) > 0)
		;
	queue_done(arg);
}

/* reports_failure_rate_take - see reports-internal.h.  An attacker who
 * publishes ruf= for as many domains as there are slots must not be able
 * to silence the reports to every other domain for the rest of the hour
 * (the table used to refuse new domains when full); reusing the slot used
 * least recently lets a flooded-out domain start a new window, which
 * costs the attacker a table's worth of messages each time. */
bool reports_failure_rate_take(struct reports_failure_rate *slots, size_t nslots,
                               const char *dest, int64_t now, int limit, bool *first)
{
	const char *at = strrchr(dest, '@');
	const char *dom = at != NULL ? at + 1 : dest;
	size_t dl = strlen(dom);
	int64_t hour = now / 3600;
	struct reports_failure_rate *slot = NULL, *stale = NULL, *lru = NULL;

	*first = false;
	while (dl > 0 && dom[dl - 1] == '.') /* "a.example." is a.example */
		dl--;
	for (size_t i = 0; i < nslots; i++) {
		struct reports_failure_rate *r = &slots[i];
		if (r->domain[0] != '\0' && strlen(r->domain) == dl &&
		    strncasecmp(r->domain, dom, dl) == 0) {
			slot = r;
			break;
		}
		if (stale == NULL && (r->domain[0] == '\0' || r->hour != hour))
			stale = r;
		if (lru == NULL || r->last < lru->last)
			lru = r;
	}
	if (slot == NULL) {
		slot = stale != NULL ? stale : lru;
		if (slot == NULL)
			return false;
		snprintf(slot->domain, sizeof(slot->domain), "%.*s", (int)dl, dom);
		slot->hour = hour;
		slot->count = 0;
		slot->logged = false;
	}
	if (slot->hour != hour) {
		slot->hour = hour;
		slot->count = 0;
		slot->logged = false;
	}
	slot->last = now;
	if (slot->count >= limit) {
		*first = !slot->logged;
		slot->logged = true;
		return false;
	}
	slot->count++;
	return true;
}

/* rate_take - loop: one report to dest's domain in this hour, if the
 * limit allows; false (counted, logged once a window) when it does not. */
static bool rate_take(struct reports_failure *fr, const char *dest, int64_t now)
{
	int limit = fr->cfg->reports_failure_rate;
	bool first = false;

	if (reports_failure_rate_take(fr->rates, FR_RATE_SLOTS, dest, now, limit, &first))
		return true;
	util_metrics_inc("mxgate_reports_failure_total", "rate_limited");
	if (first)
		util_log_warn("- reports failure rate limit reached domain=%s limit=%d/h: "
		              "further reports to it this hour are suppressed",
		              strrchr(dest, '@') + 1, limit);
	return false;
}

/* ar_value - the Authentication-Results value among the verdict's header
 * fields (CRLF-separated), malloc'd; NULL when there is none. */
static char *ar_value(const char *headers)
{
	struct util_hdr_field f;
	size_t pos = 0;
	if (headers == NULL)
		return NULL;
	while (util_hdr_next(headers, strlen(headers), &pos, &f) == 1)
		if (util_hdr_name_is(&f, "Authentication-Results"))
			return strndup(f.value, f.value_len);
	return NULL;
}

/* reports_failure_submit - see reports.h. */
int reports_failure_submit(struct reports_failure *fr, const struct policy_msg *pm,
                           const char *verdict_headers, const char *hdrs, size_t hlen,
                           const char *mail_from, const struct util_strlist *rcpts)
{
	struct policy_dmarc_facts f;
	const char *why;

	if (fr == NULL || pm == NULL || policy_msg_dmarc_facts(pm, &f) < 0)
		return 1;
	if ((why = reports_failure_skip(&f)) != NULL)
		return 1;
	if (mail_from == NULL || mail_from[0] == '\0' ||
	    (hdrs != NULL && reports_failure_is_report(hdrs, hlen))) {
		util_metrics_inc("mxgate_reports_failure_total", "not_reported");
		return 1; /* no loops: reports, bounces, auto-replies */
	}
	struct reports_failure_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return -1;
	int64_t now = (int64_t)time(NULL);
	struct util_strlist all = {0};
	uint64_t lim[8];
	size_t max = (size_t)fr->cfg->reports_failure_max_dests;
	if (max > 8)
		max = 8;
	size_t nd = reports_uri_parse(f.ruf, strlen(f.ruf), &all, lim, max);
	for (size_t i = 0; i < nd; i++) {
		if (!rate_take(fr, all.v[i], now))
			continue;
		j->limits[j->dests.n] = lim[i];
		util_strlist_add(&j->dests, all.v[i]);
	}
	util_strlist_free(&all);
	if (j->dests.n == 0) {
		reports_failure_job_free(j);
		return nd == 0 ? 1 : -1;
	}
	j->arrival = now;
	j->header_from = util_xstrdup(f.header_from);
	j->record_domain = util_xstrdup(f.record_domain ? f.record_domain : f.header_from);
	snprintf(j->ip, sizeof(j->ip), "%s", f.ip);
	j->mail_from = util_xstrdup(mail_from);
	j->ar = ar_value(verdict_headers);
	size_t hl = hdrs != NULL ? (hlen < FR_HDRS_MAX ? hlen : FR_HDRS_MAX) : 0;
	j->hdrs = malloc(hl + 1);
	if (j->hdrs != NULL) {
		if (hl > 0)
			memcpy(j->hdrs, hdrs, hl);
		j->hdrs[hl] = '\0';
		j->hlen = hl;
	}
	for (size_t i = 0; rcpts != NULL && i < rcpts->n && i < FR_MAX_RCPTS; i++)
		util_strlist_add(&j->rcpts, rcpts->v[i]);
	j->dkim_aligned = f.dkim_aligned;
	j->spf_aligned = f.spf_aligned;
	for (size_t i = 0; i < f.ndkim && j->dkim_domain == NULL; i++) {
		char a[256], b[256];
		if (f.dkim[i].result == NULL || strcmp(f.dkim[i].result, "pass") == 0)
			continue;
		policy_org_domain(f.dkim[i].domain, a, sizeof(a));
		policy_org_domain(f.header_from, b, sizeof(b));
		if (util_strcaseeq(a, b)) {
			j->dkim_domain = util_xstrdup(f.dkim[i].domain);
			j->dkim_selector = f.dkim[i].selector ? util_xstrdup(f.dkim[i].selector) : NULL;
		}
	}
	if (f.spf_domain != NULL && f.spf_result != NULL && strcmp(f.spf_result, "pass") != 0 &&
	    strcmp(f.spf_result, "none") != 0) {
		char a[256], b[256];
		policy_org_domain(f.spf_domain, a, sizeof(a));
		policy_org_domain(f.header_from, b, sizeof(b));
		if (util_strcaseeq(a, b))
			j->spf_domain = util_xstrdup(f.spf_domain);
	}
	j->delivery = strcmp(f.disposition, "reject") == 0       ? "reject"
	              : strcmp(f.disposition, "quarantine") == 0 ? "spam"
	                                                         : "delivered";
	j->redact_all = fr->cfg->reports_failure_redact == 1;
	pthread_mutex_lock(&fr->lock);
	if (fr->qlen >= FR_QUEUE_MAX) {
		pthread_mutex_unlock(&fr->lock);
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
		reports_failure_job_free(j);
		return -1;
	}
	*fr->qtail = j;
	fr->qtail = &j->next;
	fr->qlen++;
	pthread_cond_signal(&fr->wake);
	pthread_mutex_unlock(&fr->lock);
	return 0;
}

/* reports_failure_new - see reports-internal.h. */
struct reports_failure *reports_failure_new(struct event_base *base, const struct config *cfg,
                                            struct policy_dns *dns, struct queue_store *qs,
                                            const char *key_pem, char *err, size_t errlen)
{
	struct reports_failure *fr = calloc(1, sizeof(*fr));
	if (fr == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fr->pipefd[0] = fr->pipefd[1] = -1;
	fr->base = base;
	fr->cfg = cfg;
	fr->dns = dns;
	fr->qs = qs;
	fr->qtail = &fr->q;
	pthread_mutex_init(&fr->lock, NULL);
	pthread_cond_init(&fr->wake, NULL);
	(void)util_metrics_define("mxgate_reports_failure_total", UTIL_METRIC_COUNTER,
	                          "DMARC failure reports (RFC 9991) by outcome (queued, "
	                          "rate_limited, unverified, too_big, dropped, not_reported, "
	                          "sign_error, queue_error)",
	                          "result", NULL, 0);
	fr->hostname = util_xstrdup(cfg->hostname);
	fr->email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                               : util_xasprintf("postmaster@%s", cfg->hostname);
	fr->selector = util_xstrdup(cfg->reports_dkim_selector ? cfg->reports_dkim_selector
	                                                       : "mxgate-reports");
	fr->sign_domain = util_xstrdup(reports_sign_domain(cfg, fr->email));
	fr->key_pem = util_xstrdup(key_pem);
	/* the redaction key: derived from the signing key, so it stays the
	 * same across restarts without another secret file */
	char *material = util_xasprintf("mxgate failure report redaction\n%s", key_pem);
	unsigned int kl = 0;
	EVP_Digest(material, strlen(material), fr->key, &kl, EVP_sha256(), NULL);
	OPENSSL_cleanse(material, strlen(material));
	free(material);
	fr->rates = calloc(FR_RATE_SLOTS, sizeof(*fr->rates));
	if (fr->rates == NULL || pipe2(fr->pipefd, O_CLOEXEC | O_NONBLOCK) < 0) {
		snprintf(err, errlen, "failure reports: %s", strerror(errno ? errno : ENOMEM));
		goto fail;
	}
	fr->done_ev = event_new(base, fr->pipefd[0], EV_READ | EV_PERSIST, done_cb, fr);
	if (fr->done_ev == NULL || event_add(fr->done_ev, NULL) < 0) {
		snprintf(err, errlen, "failure reports: cannot set up events");
		goto fail;
	}
	if (pthread_create(&fr->thread, NULL, worker, fr) != 0) {
		snprintf(err, errlen, "failure reports: cannot start the thread");
		goto fail;
	}
	fr->started = true;
	util_log_info("- reports failure reports on rate=%d/h max_destinations=%d redact=%s",
	              cfg->reports_failure_rate, cfg->reports_failure_max_dests,
	              cfg->reports_failure_redact == 1 ? "addresses" : "recipients");
	return fr;
fail:
	reports_failure_free(fr);
	return NULL;
}

/* reports_failure_set_config - the config after a reload (borrowed). */
void reports_failure_set_config(struct reports_failure *fr, const struct config *cfg)
{
	if (fr != NULL)
		fr->cfg = cfg;
}

/* reports_failure_free - stops the worker after its current job; reports
 * not queued yet are dropped (failure reports are best effort, counted);
 * NULL is a no-op. */
void reports_failure_free(struct reports_failure *fr)
{
	if (fr == NULL)
		return;
	if (fr->started) {
		pthread_mutex_lock(&fr->lock);
		fr->stop = true;
		pthread_cond_signal(&fr->wake);
		pthread_mutex_unlock(&fr->lock);
		pthread_join(fr->thread, NULL);
	}
	while (fr->q != NULL) {
		struct reports_failure_job *j = fr->q;
		fr->q = j->next;
		reports_failure_job_free(j);
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
	}
	for (struct reports_out *o = fr->done; o != NULL; o = o->next)
		util_metrics_inc("mxgate_reports_failure_total", "dropped");
	reports_out_free(fr->done);
	if (fr->done_ev)
		event_free(fr->done_ev);
	if (fr->pipefd[0] >= 0)
		close(fr->pipefd[0]);
	if (fr->pipefd[1] >= 0)
		close(fr->pipefd[1]);
	pthread_mutex_destroy(&fr->lock);
	pthread_cond_destroy(&fr->wake);
	free(fr->rates);
	free(fr->hostname);
	free(fr->email);
	free(fr->selector);
	free(fr->sign_domain);
	if (fr->key_pem != NULL)
		OPENSSL_cleanse(fr->key_pem, strlen(fr->key_pem));
	free(fr->key_pem);
	OPENSSL_cleanse(fr->key, sizeof(fr->key));
	free(fr);
}
