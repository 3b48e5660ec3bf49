/*
 * reports-store.c - recording DMARC evaluations without blocking the loop:
 * reports_record() copies the facts into a row and appends it to a bounded
 * queue; one writer thread takes everything queued and writes it in one
 * transaction through the backend (reports-sqlite.c).
 *
 * Why a thread and not the policy pool: a database write may wait on the
 * disk (fsync of the WAL at checkpoints) and must never hold up a verdict.
 * Why bounded: under a flood the rows are statistics, the mail is not; a
 * full queue drops the row and counts it (metric + the dropped table, so
 * the report can say how many evaluations it is missing).
 *
 * Ownership: the queue owns its rows; the writer frees them after the
 * write.  The store owns the backend handle.
 * Diagnostics: "- reports ..." log lines; write errors are logged at most
 * once a minute and counted in mxgate_reports_write_errors_total.
 */
#include "reports-internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

struct reports_store {
	const struct reports_backend *be;
	void *db;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t wake;    /* rows queued, or stopping */
	pthread_cond_t idle;    /* the writer finished a batch */
	struct reports_row **q; /* ring of qmax rows */
	size_t qmax, qhead, qlen;
	size_t writing;         /* rows taken by the writer, not yet written */
	uint64_t drops_pending; /* dropped, not yet in the dropped table */
	uint64_t written, dropped;
	bool stop;
	time_t last_err_log;
	int64_t min_t; /* loop thread: rows get t >= min_t (run barrier) */
};

/* dupe - NULL/"" stay NULL. */
static char *dupe(const char *s)
{
	return s != NULL && s[0] != '\0' ? util_xstrdup(s) : NULL;
}

/* reports_row_from_facts - see reports-internal.h. */
struct reports_row *reports_row_from_facts(const struct policy_dmarc_facts *f, const char *rcpt,
                                           int64_t t)
{
	struct reports_row *r = calloc(1, sizeof(*r));
	const char *at = rcpt ? strrchr(rcpt, '@') : NULL;

	if (r == NULL)
		return NULL;
	r->t = t;
	r->ip = dupe(f->ip);
	r->header_from = dupe(f->header_from);
	r->envelope_from = dupe(f->envelope_from);
	if (at != NULL) {
		/* the envelope_to domain, lower-case, without a closing '>' */
		r->envelope_to = util_xstrdup(at + 1);
		for (char *p = r->envelope_to; *p; p++) {
			if (*p == '>') {
				*p = '\0';
				break;
			}
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p + 32);
		}
	}
	r->dmarc = dupe(f->dmarc);
	r->spf_domain = dupe(f->spf_domain);
	r->spf_result = dupe(f->spf_result);
	r->spf_scope = dupe(f->spf_scope);
	r->ndkim = f->ndkim;
	for (size_t i = 0; i < f->ndkim; i++) {
		r->dkim[i].domain = dupe(f->dkim[i].domain);
		r->dkim[i].selector = dupe(f->dkim[i].selector);
		r->dkim[i].result = dupe(f->dkim[i].result);
	}
	r->dkim_aligned = f->dkim_aligned;
	r->spf_aligned = f->spf_aligned;
	r->record_domain = dupe(f->record_domain);
	r->p = dupe(f->p);
	r->sp = dupe(f->sp);
	r->np = dupe(f->np);
	r->adkim = dupe(f->adkim);
	r->aspf = dupe(f->aspf);
	r->t_tag = dupe(f->t);
	r->psd = dupe(f->psd);
	r->pct = f->pct;
	r->discovery = dupe(f->discovery);
	r->disposition = dupe(f->disposition ? f->disposition : "none");
	r->override = dupe(f->override);
	r->override_comment = dupe(f->override_comment);
	return r;
}

/* reports_row_free - NULL is a no-op. */
void reports_row_free(struct reports_row *r)
{
	if (r == NULL)
		return;
	free(r->ip);
	free(r->header_from);
	free(r->envelope_from);
	free(r->envelope_to);
	free(r->dmarc);
	free(r->spf_domain);
	free(r->spf_result);
	free(r->spf_scope);
	for (size_t i = 0; i < r->ndkim; i++) {
		free(r->dkim[i].domain);
		free(r->dkim[i].selector);
		free(r->dkim[i].result);
	}
	free(r->record_domain);
	free(r->p);
	free(r->sp);
	free(r->np);
	free(r->adkim);
	free(r->aspf);
	free(r->t_tag);
	free(r->psd);
	free(r->discovery);
	free(r->disposition);
	free(r->override);
	free(r->override_comment);
	free(r);
}

/* writer_main - take the whole queue, write it, repeat until stopped. */
static void *writer_main(void *arg)
{
	struct reports_store *rs = arg;
	struct reports_row **batch = calloc(rs->qmax, sizeof(*batch));
	char err[256];

	pthread_mutex_lock(&rs->lock);
	for (;;) {
		while (rs->qlen == 0 && rs->drops_pending == 0 && !rs->stop)
			pthread_cond_wait(&rs->wake, &rs->lock);
		if (rs->qlen == 0 && rs->drops_pending == 0 && rs->stop)
			break;
		size_t n = rs->qlen;
		uint64_t drops = rs->drops_pending;
		for (size_t i = 0; i < n; i++)
			batch[i] = rs->q[(rs->qhead + i) % rs->qmax];
		rs->qhead = (rs->qhead + n) % rs->qmax;
		rs->qlen = 0;
		rs->drops_pending = 0;
		rs->writing = n;
		pthread_mutex_unlock(&rs->lock);

		int rc = 0;
		if (batch != NULL && n > 0)
			rc = rs->be->insert(rs->db, batch, n, err, sizeof(err));
		if (rc == 0 && drops > 0)
			rc =
			    rs->be->add_drops(rs->db, (int64_t)time(NULL), drops, err, sizeof(err));
		if (rc < 0) {
			util_metrics_add("mxgate_reports_write_errors_total", NULL, (double)n);
			time_t now = time(NULL);
			if (now - rs->last_err_log >= 60) {
				rs->last_err_log = now;
				util_log_err("- reports write failed rows=%zu error=\"%s\"", n,
				             err);
			}
		} else {
			util_metrics_add("mxgate_reports_recorded_total", NULL, (double)n);
		}
		for (size_t i = 0; i < n; i++)
			reports_row_free(batch[i]);

		pthread_mutex_lock(&rs->lock);
		if (rc == 0)
			rs->written += n;
		rs->writing = 0;
		pthread_cond_broadcast(&rs->idle);
	}
	rs->writing = 0;
	pthread_cond_broadcast(&rs->idle);
	pthread_mutex_unlock(&rs->lock);
	free(batch);
	return NULL;
}

/* reports_open - see reports.h. */
struct reports_store *reports_open(const struct config *cfg, char *err, size_t errlen)
{
	struct reports_store *rs = NULL;
	char *target = NULL;
	const char *db = cfg->reports_database;

	(void)util_metrics_define("mxgate_reports_recorded_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations written to the report store", NULL, NULL, 0);
	(void)util_metrics_define("mxgate_reports_dropped_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations not recorded: the writer queue was full", NULL,
	                          NULL, 0);
	(void)util_metrics_define("mxgate_reports_write_errors_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations lost to a failed database write (disk full)",
	                          NULL, NULL, 0);
	(void)db;
	const struct reports_backend *be = NULL;
	if ((target = reports_db_target(cfg, &be, err, errlen)) == NULL)
		goto fail;
	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rs->be = be;
	rs->qmax = cfg->reports_queue_size > 0 ? (size_t)cfg->reports_queue_size : 1;
	if ((rs->q = calloc(rs->qmax, sizeof(*rs->q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->wake, NULL);
	pthread_cond_init(&rs->idle, NULL);
	if ((rs->db = rs->be->open(target, err, errlen)) == NULL)
		goto fail;
	if (pthread_create(&rs->thread, NULL, writer_main, rs) != 0) {
		snprintf(err, errlen, "cannot start the writer thread");
		goto fail;
	}
	rs->started = true;
	util_log_info("- reports store=%s path=%s schema=%d queue=%zu", rs->be->name, target,
	              rs->be->schema_version(rs->db), rs->qmax);
	free(target);
	return rs;
fail:
	free(target);
	reports_close(rs);
	return NULL;
}

/* reports_close - write what is queued, stop the writer, close. */
void reports_close(struct reports_store *rs)
{
	if (rs == NULL)
		return;
	if (rs->started) {
		pthread_mutex_lock(&rs->lock);
		rs->stop = true;
		pthread_cond_signal(&rs->wake);
		pthread_mutex_unlock(&rs->lock);
		pthread_join(rs->thread, NULL);
	}
	if (rs->q != NULL) {
		for (size_t i = 0; i < rs->qlen; i++)
			reports_row_free(rs->q[(rs->qhead + i) % rs->qmax]);
		pthread_mutex_destroy(&rs->lock);
		pthread_cond_destroy(&rs->wake);
		pthread_cond_destroy(&rs->idle);
	}
	if (rs->db != NULL)
		rs->be->close(rs->db);
	free(rs->q);
	free(rs);
}

/* reports_record - see reports.h.  Loop thread; takes the lock only to
 * append a pointer. */
int reports_record(struct reports_store *rs, const struct policy_msg *pm, const char *rcpt)
{
	struct policy_dmarc_facts f;
	struct reports_row *r;

	if (rs == NULL || pm == NULL || policy_msg_dmarc_facts(pm, &f) < 0)
		return 1;
	pthread_mutex_lock(&rs->lock);
	bool full = rs->qlen >= rs->qmax;
	if (full) {
		rs->dropped++;
		rs->drops_pending++;
		pthread_cond_signal(&rs->wake);
	}
	pthread_mutex_unlock(&rs->lock);
	if (full) {
		util_metrics_inc("mxgate_reports_dropped_total", NULL);
		return -1;
	}
	int64_t t = (int64_t)time(NULL);
	if ((r = reports_row_from_facts(&f, rcpt, t < rs->min_t ? rs->min_t : t)) == NULL)
		return -1;
	pthread_mutex_lock(&rs->lock);
	if (rs->qlen >= rs->qmax) { /* only the loop thread appends: cannot happen */
		pthread_mutex_unlock(&rs->lock);
		reports_row_free(r);
		return -1;
	}
	rs->q[(rs->qhead + rs->qlen) % rs->qmax] = r;
	rs->qlen++;
	pthread_cond_signal(&rs->wake);
	pthread_mutex_unlock(&rs->lock);
	return 0;
}

/* reports_store_barrier - see reports.h. */
void reports_store_barrier(struct reports_store *rs, int64_t t)
{
	if (rs != NULL && t > rs->min_t)
		rs->min_t = t;
}

/* reports_flush - see reports.h. */
void reports_flush(struct reports_store *rs)
{
	if (rs == NULL)
		return;
	pthread_mutex_lock(&rs->lock);
	while (rs->qlen > 0 || rs->writing > 0 || rs->drops_pending > 0)
		pthread_cond_wait(&rs->idle, &rs->lock);
	pthread_mutex_unlock(&rs->lock);
}

/* reports_stats - see reports.h. */
void reports_stats(const struct reports_store *rs, uint64_t *written, uint64_t *dropped)
{
	struct reports_store *m = (struct reports_store *)rs;

	*written = *dropped = 0;
	if (rs == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	*written = m->written;
	*dropped = m->dropped;
	pthread_mutex_unlock(&m->lock);
}
