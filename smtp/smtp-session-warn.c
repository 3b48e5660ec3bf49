/*
 * smtp-session-warn.c - the external-sender warning in the session
 * (issue 13, [warning]): after the inspections and before the commit, a
 * message from outside the organisation (From: domain not in
 * accepted_domains nor [warning] internal_domains) or failing
 * authentication gets the subject tag (applied with the held Subject at
 * commit, smtp-session-scan.c) and a banner at the top of its text and HTML
 * body (content/content-banner.c).
 *
 * The body rewrite runs on a content worker (the server's bounded pool,
 * [server] content_workers), never on the event loop: the loop opens a new
 * spool file, the worker reads the old one (at most [warning] max_size
 * bytes; larger messages are not rewritten), splices in the banner with
 * GMime and writes the new spool; the completion comes back to the loop
 * through the pool's event and finds the session by id (gone: dropped).
 * When the pool's queue is full the message gets 451 4.3.2 (nothing is
 * queued; the client retries).  When the
 * banner went in, the new spool replaces the old one; otherwise the
 * message goes on unchanged.  Every warned message carries
 * "X-MXGate-Warning: <why>; banner=added|skipped reason=..." (the same
 * field is dropped from incoming mail, smtp-session-data.c), so downstream
 * rules and the postmaster see what happened.
 *
 * Ownership: the job owns its copies, the new spool (until handed to the
 * transaction) and the read descriptor; the completion frees the job.
 * Diagnostics: one line per warned message
 * ("s=... warning why=... banner=..."), metric mxgate_warnings_total.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#include "content.h"
#include "smtp-server-internal.h"

struct warn_job {
	struct smtp_job hdr;     /* first: the pool frees unfinished jobs with it */
	uint64_t id;             /* session id */
	struct smtp_server *srv; /* borrowed */
	int fd;                  /* owned; the old spool, read-only */
	int64_t size;
	struct queue_spool *out; /* owned until handed over */
	char *text, *html;       /* owned copies of the banners, or NULL */
	enum content_banner_result result;
	int err; /* read/write error (errno) */
};

/* domain_is_ours - d equals or is under one of the domains of l. */
static bool domain_is_ours(const struct util_strlist *l, const char *d)
{
	size_t dl = strlen(d);
	for (size_t i = 0; i < l->n; i++) {
		size_t n = strlen(l->v[i]);
		if (dl == n && strcasecmp(d, l->v[i]) == 0)
			return true;
		if (dl > n && d[dl - n - 1] == '.' && strcasecmp(d + dl - n, l->v[i]) == 0)
			return true;
	}
	return false;
}

/* warn_reason - "external", "failing" or NULL (no warning). */
static const char *warn_reason(struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	struct smtp_tx *tx = s->tx;
	bool external = !tx->from_domain[0] ||
	                !(domain_is_ours(&cfg->accepted_domains, tx->from_domain) ||
	                  domain_is_ours(&cfg->warning_internal_domains, tx->from_domain));
	const struct policy_verdict *v = tx->pm ? policy_msg_verdict(tx->pm) : NULL;
	bool failing = false;
	if (v && v->dmarc && strcmp(v->dmarc, "fail") == 0)
		failing = true;
	else if (v && (!v->dmarc || strcmp(v->dmarc, "none") == 0) && v->spf &&
	         (strcmp(v->spf, "fail") == 0 || strcmp(v->spf, "softfail") == 0))
		failing = true;
	switch (cfg->warning_senders) {
	case CONFIG_WARN_EXTERNAL:
		return external ? "external" : NULL;
	case CONFIG_WARN_FAILING:
		return failing ? "failing" : NULL;
	default:
		return external ? "external" : failing ? "failing" : NULL;
	}
}

/* banner_of - a configured banner, or NULL for "none". */
static const char *banner_of(const char *b)
{
	return b && *b && strcmp(b, "none") != 0 ? b : NULL;
}

/* finish - the header, the log line, the commit (async: see
 * smtp_data_commit). */
static void finish(struct smtp_session *s, const char *why, const char *banner, bool async)
{
	struct smtp_tx *tx = s->tx;
	struct util_buf b;
	util_buf_init(&b);
	if (tx->scan_headers)
		util_buf_adds(&b, tx->scan_headers);
	util_buf_printf(&b, CONTENT_WARNING_FIELD ": %s; banner=%s; by=%s\r\n", why, banner,
	                s->cfg->hostname);
	free(tx->scan_headers);
	tx->scan_headers = b.data; /* ownership moves to the transaction */
	util_log_info("s=%016llx warning why=%s banner=\"%s\"", (unsigned long long)s->id, why,
	              banner);
	util_metrics_inc("mxgate_warnings_total",
	                 strncmp(banner, "added", 5) == 0 ? "banner" : "subject_only");
	smtp_data_commit(s, async);
}

/* read_all - the message (size bytes) into b; -1 with errno.  Spool files
 * are recycled, so bytes past size are an older message's: never read. */
static int read_all(int fd, int64_t size, struct util_buf *b)
{
	char chunk[65536];
	int64_t got = 0;
	while (got < size) {
		size_t want =
		    size - got < (int64_t)sizeof(chunk) ? (size_t)(size - got) : sizeof(chunk);
		ssize_t n = pread(fd, chunk, want, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		util_buf_add(b, chunk, (size_t)n);
		got += n;
	}
	return 0;
}

/* job_work - worker: read, rewrite, write the new spool. */
static void job_work(void *arg)
{
	struct warn_job *j = arg;
	struct util_buf in, out;
	util_buf_init(&in);
	util_buf_init(&out);
	if (atomic_load(&j->hdr.cancelled)) { /* the session is gone */
		j->result = CONTENT_BANNER_ERROR;
		return;
	}
	if (read_all(j->fd, j->size, &in) < 0) {
		j->err = errno ? errno : EIO;
		j->result = CONTENT_BANNER_ERROR;
		goto done;
	}
	struct content_banner_opts o = {.text = j->text, .html = j->html};
	j->result = content_banner_apply(in.data, in.len, &o, &out);
	if (j->result == CONTENT_BANNER_DONE && queue_spool_write(j->out, out.data, out.len) < 0)
		j->err = errno ? errno : EIO;
done:
	util_buf_free(&in);
	util_buf_free(&out);
}

/* job_free - release a finished job. */
static void job_free(struct warn_job *j)
{
	if (j->fd >= 0)
		close(j->fd);
	queue_spool_abort(j->out);
	free(j->text);
	free(j->html);
	free(j);
}

/* job_free_any - job_free for the pool (struct smtp_job). */
static void job_free_any(void *job)
{
	job_free((struct warn_job *)job);
}

/* job_done - loop: the rewrite is over. */
static void job_done(void *arg)
{
	struct warn_job *j = arg;
	struct smtp_session *s = smtp_server_find(j->srv, j->id);
	if (!s || s->wait != SMTP_WAIT_SCAN || !s->tx) {
		util_log_info("s=%016llx warning note=client_gone", (unsigned long long)j->id);
		job_free(j);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	char banner[96];
	if (j->result == CONTENT_BANNER_DONE && j->err == 0) {
		queue_spool_abort(s->tx->spool);
		s->tx->spool = j->out; /* ownership moves to the transaction */
		j->out = NULL;
		snprintf(banner, sizeof(banner), "added");
	} else if (j->err) {
		util_log_warn("s=%016llx warning rewrite failed error=\"%s\"",
		              (unsigned long long)s->id, strerror(j->err));
		snprintf(banner, sizeof(banner), "skipped reason=error");
	} else {
		snprintf(banner, sizeof(banner), "skipped reason=%s",
		         content_banner_result_name(j->result));
	}
	const char *why = s->tx->warn_why;
	job_free(j);
	finish(s, why, banner, false); /* resumed here */
	smtp_session_resume(s);
}

/* start_job - hand the rewrite to a content worker; 0, -1 when it cannot
 * start, 1 when the workers' queue is full. */
static int start_job(struct smtp_session *s, const char *text, const char *html, int64_t size)
{
	struct warn_job *j = util_xcalloc(1, sizeof(*j));
	j->hdr.free = job_free_any;
	j->id = s->id;
	j->srv = s->srv;
	j->size = size;
	j->fd = queue_spool_open_read(s->tx->spool);
	j->out = queue_spool_new(s->srv->qs);
	j->text = text ? util_xstrdup(text) : NULL;
	j->html = html ? util_xstrdup(html) : NULL;
	if (j->fd < 0 || !j->out)
		goto fail;
	if (smtp_content_submit(s, job_work, job_done, &j->hdr) < 0) {
		job_free(j);
		return 1;
	}
	s->wait = SMTP_WAIT_SCAN;
	return 0;
fail:
	job_free(j);
	return -1;
}

/* smtp_warn_start - see smtp-server-internal.h. */
void smtp_warn_start(struct smtp_session *s, bool async)
{
	const struct config *cfg = s->cfg;
	struct smtp_tx *tx = s->tx;
	const char *why = cfg->warning_enabled ? warn_reason(s) : NULL;
	if (!why) {
		smtp_data_commit(s, async);
		return;
	}
	tx->warn_why = why;
	tx->warn_subject = banner_of(cfg->warning_subject_tag) != NULL;
	const char *text = banner_of(cfg->warning_banner_text);
	const char *html = banner_of(cfg->warning_banner_html);
	int64_t size = queue_spool_size(tx->spool);
	if (!text && !html) {
		finish(s, why, "skipped reason=off", async);
		return;
	}
	if (size > cfg->warning_max_size) {
		finish(s, why, "skipped reason=size", async);
		return;
	}
	int rc = start_job(s, text, html, size);
	if (rc < 0) {
		util_log_warn("s=%016llx warning rewrite could not start",
		              (unsigned long long)s->id);
		finish(s, why, "skipped reason=error", async);
		return;
	}
	if (rc > 0)
		smtp_content_busy(s, "warning", async);
	/* else the completion resumes the session */
}
