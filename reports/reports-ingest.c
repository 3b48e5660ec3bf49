/*
 * reports-ingest.c - the reports mailed to our report addresses (issue 15):
 * the loop thread takes a pinned read descriptor of the message's spool
 * file before the commit (queue_spool_pin) and hands it over once the
 * commit succeeded; one worker thread copies it, parses it
 * (reports-inbound.c) and stores the reports through the report store's
 * backend (its own connection: SQLite WAL or PostgreSQL).
 *
 * The message itself is queued and delivered downstream as any other: this
 * only reads it.  A message that breaks a limit or does not parse is stored
 * in inbound_refused with the error and its raw bytes, counted
 * (mxgate_reports_inbound_refused_total) and logged; nothing else is held
 * up.  A full queue drops the job (mxgate_reports_inbound_dropped_total).
 *
 * The message may be delivered and removed long before the worker gets to
 * it (a backlog of big reports).  The pin is what makes that safe: the
 * queue recycles a removed message's file for the next message
 * (queue-pool.c) but never a pinned one - it unlinks it instead - so the
 * worker always reads this message's bytes, never another sender's.
 *
 * Ownership: jobs own their pin and strings; the worker frees them.
 */
#include "reports-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define INGEST_QMAX        256
#define INGEST_COPY_BUDGET (64u * 1024 * 1024) /* copied, not yet parsed */
#define INGEST_PRUNE_EVERY 3600                /* seconds between retention passes */
#define INGEST_REFUSED_KEEP (30 * 86400)       /* refused parts, raw message: at most */

struct ingest_job {
	struct queue_pin *pin; /* NULL once copied */
	char *rcpt, *qid;
	int64_t t;
	char *data; /* copied by the worker */
	size_t len;
	bool too_big;
};

struct reports_ingest {
	const struct reports_backend *be;
	struct reports_conn conn; /* down: a report received is not stored */
	pthread_t thread;
	bool started, stop;
	pthread_mutex_t lock;
	pthread_cond_t wake, idle;
	struct ingest_job *q[INGEST_QMAX];
	size_t qhead, qlen, busy;
	uint64_t stored, refused;
	int64_t retention;  /* [reports] inbound_retention, seconds */
	int64_t last_prune; /* worker only */
};

static void job_free(struct ingest_job *j)
{
	if (j == NULL)
		return;
	queue_pin_free(j->pin);
	free(j->rcpt);
	free(j->qid);
	free(j->data);
	free(j);
}

/* job_copy - the spool file's bytes (bounded) into j->data; the pin is
 * released: the file's disk goes back once the message is removed. */
static void job_copy(struct ingest_job *j)
{
	int fd = queue_pin_fd(j->pin);

	size_t cap = 64 * 1024;
	j->data = malloc(cap + 1);
	if (j->data == NULL)
		abort();
	for (;;) {
		if (j->len == cap) {
			if (cap > REPORTS_IN_MAX_MSG) {
				j->too_big = true;
				break;
			}
			cap *= 2;
			char *n = realloc(j->data, cap + 1);
			if (n == NULL)
				abort();
			j->data = n;
		}
		ssize_t r = pread(fd, j->data + j->len, cap - j->len, (off_t)j->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		j->len += (size_t)r;
	}
	j->data[j->len] = '\0';
	queue_pin_free(j->pin);
	j->pin = NULL;
}

/* job_run - parse and store one message. */
static void job_run(struct reports_ingest *ri, struct ingest_job *j)
{
	struct reports_inbound in;
	char err[256];
	int dups = 0, found = 0;

	memset(&in, 0, sizeof(in));
	if (j->too_big)
		util_strlist_add(&in.errors, "message: over the size limit");
	else
		found = reports_inbound_parse(j->data, j->len, &in);
	size_t rawlen = j->len > REPORTS_IN_MAX_MSG ? REPORTS_IN_MAX_MSG : j->len;
	void *db = reports_conn_get(&ri->conn, err, sizeof(err));
	int rc = db == NULL ? -1
	                    : ri->be->add_inbound(db, &in, j->t, j->rcpt, j->qid,
	                                          in.errors.n ? j->data : NULL, rawlen, &dups,
	                                          err, sizeof(err));
	if (rc < 0 && db != NULL)
		reports_conn_failed(&ri->conn);
	if (rc < 0) {
		util_metrics_inc("mxgate_reports_write_errors_total", NULL);
		util_log_err("%s reports inbound store failed error=\"%s\"", j->qid, err);
	}
	for (size_t i = 0; i < in.errors.n; i++) {
		util_metrics_inc("mxgate_reports_inbound_refused_total", NULL);
		util_log_warn("%s reports inbound refused rcpt=%s error=\"%s\"", j->qid, j->rcpt,
		              in.errors.v[i]);
	}
	for (size_t i = 0; i < in.ndmarc; i++)
		util_log_info(
		    "%s reports inbound kind=dmarc org=\"%s\" id=\"%s\" domain=%s records=%zu",
		    j->qid, in.dmarc[i].org_name, in.dmarc[i].report_id, in.dmarc[i].domain,
		    in.dmarc[i].n);
	for (size_t i = 0; i < in.ntlsrpt; i++)
		util_log_info("%s reports inbound kind=tlsrpt org=\"%s\" id=\"%s\" policies=%zu",
		              j->qid, in.tlsrpt[i].org_name, in.tlsrpt[i].report_id,
		              in.tlsrpt[i].n);
	if (found > 0)
		util_metrics_add("mxgate_reports_inbound_total", NULL, (double)(found - dups));
	if (dups > 0)
		util_log_info("%s reports inbound duplicates=%d", j->qid, dups);
	pthread_mutex_lock(&ri->lock);
	ri->stored += (uint64_t)(found - dups);
	ri->refused += in.errors.n;
	pthread_mutex_unlock(&ri->lock);
	reports_inbound_clear(&in);
}

/* ingest_prune - worker: the retention of the reports received, at most
 * once every INGEST_PRUNE_EVERY seconds (and at start); refused parts and
 * their raw message for INGEST_REFUSED_KEEP at most. */
static void ingest_prune(struct reports_ingest *ri)
{
	int64_t now = (int64_t)time(NULL);
	int64_t keep_refused = ri->retention < INGEST_REFUSED_KEEP ? ri->retention
	                                                            : INGEST_REFUSED_KEEP;
	uint64_t n = 0;
	char err[256];

	if (ri->last_prune != 0 && now - ri->last_prune < INGEST_PRUNE_EVERY)
		return;
	void *db = reports_conn_get(&ri->conn, err, sizeof(err));
	if (db == NULL) /* down: the next message tries again */
		return;
	ri->last_prune = now;
	if (ri->be->prune_inbound(db, now - ri->retention, now - keep_refused, &n, err,
	                          sizeof(err)) < 0) {
		reports_conn_failed(&ri->conn);
		util_metrics_inc("mxgate_reports_write_errors_total", NULL);
		util_log_err("- reports inbound prune failed error=\"%s\"", err);
	} else if (n > 0) {
		util_log_info("- reports inbound pruned reports=%llu before=%lld",
		              (unsigned long long)n, (long long)(now - ri->retention));
	}
}

/* ingest_main - copy every waiting message as soon as it is queued (so a
 * delivered message's unlinked file does not hold disk for long), then parse the copies one at a time, taking and
 * copying newly queued messages between two parses; at most
 * INGEST_COPY_BUDGET bytes of copies wait to be parsed. */
static void *ingest_main(void *arg)
{
	struct reports_ingest *ri = arg;
	struct ingest_job *ready[INGEST_QMAX];
	size_t nready = 0, ready_bytes = 0;

	ingest_prune(ri);
	pthread_mutex_lock(&ri->lock);
	for (;;) {
		while (ri->qlen == 0 && nready == 0 && !ri->stop)
			pthread_cond_wait(&ri->wake, &ri->lock);
		if (ri->qlen == 0 && nready == 0)
			break;
		while (ri->qlen > 0 && nready < INGEST_QMAX &&
		       (ready_bytes < INGEST_COPY_BUDGET || nready == 0)) {
			struct ingest_job *f = ri->q[ri->qhead];
			ri->qhead = (ri->qhead + 1) % INGEST_QMAX;
			ri->qlen--;
			ri->busy++;
			pthread_mutex_unlock(&ri->lock);
			job_copy(f);
			ready_bytes += f->len;
			ready[nready++] = f;
			pthread_mutex_lock(&ri->lock);
		}
		pthread_mutex_unlock(&ri->lock);
		struct ingest_job *j = ready[0];
		memmove(ready, ready + 1, (nready - 1) * sizeof(*ready));
		nready--;
		ready_bytes -= j->len;
		job_run(ri, j);
		job_free(j);
		ingest_prune(ri);
		pthread_mutex_lock(&ri->lock);
		ri->busy--;
		if (ri->qlen == 0 && ri->busy == 0)
			pthread_cond_broadcast(&ri->idle);
	}
	pthread_cond_broadcast(&ri->idle);
	pthread_mutex_unlock(&ri->lock);
	return NULL;
}

/* reports_ingest_new - see reports.h. */
struct reports_ingest *reports_ingest_new(const struct config *cfg, char *err, size_t errlen)
{
	struct reports_ingest *ri = calloc(1, sizeof(*ri));
	char *target = NULL;

	if (ri == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&ri->lock, NULL);
	pthread_cond_init(&ri->wake, NULL);
	pthread_cond_init(&ri->idle, NULL);
	(void)util_metrics_define("mxgate_reports_inbound_total", UTIL_METRIC_COUNTER,
	                          "DMARC and TLS-RPT reports received and stored", NULL, NULL, 0);
	(void)util_metrics_define("mxgate_reports_inbound_refused_total", UTIL_METRIC_COUNTER,
	                          "Received report parts refused (limits, parse errors)", NULL,
	                          NULL, 0);
	(void)util_metrics_define("mxgate_reports_inbound_dropped_total", UTIL_METRIC_COUNTER,
	                          "Received report messages not parsed: ingest queue full", NULL,
	                          NULL, 0);
	reports_inbound_init();
	if ((target = reports_db_target(cfg, &ri->be, err, errlen)) == NULL)
		goto fail;
	if (ri->be->add_inbound == NULL) { /* every backend has it today */
		snprintf(err, errlen, "[reports] ingest: not supported with the %s store yet",
		         ri->be->name);
		goto fail;
	}
	/* a store that cannot be opened now is tried again per message:
	 * never a reason not to start (the messages are delivered anyway) */
	reports_conn_init(&ri->conn, ri->be, target, "ingest");
	target = NULL;
	char e2[256];
	(void)reports_conn_get(&ri->conn, e2, sizeof(e2));
	ri->retention = cfg->reports_inbound_retention > 0 ? cfg->reports_inbound_retention
	                                                   : 400 * 86400;
	if (pthread_create(&ri->thread, NULL, ingest_main, ri) != 0) {
		snprintf(err, errlen, "pthread_create failed");
		goto fail;
	}
	ri->started = true;
	free(target);
	return ri;
fail:
	free(target);
	reports_ingest_free(ri);
	return NULL;
}

/* reports_ingest_free - see reports.h. */
void reports_ingest_free(struct reports_ingest *ri)
{
	if (ri == NULL)
		return;
	if (ri->started) {
		pthread_mutex_lock(&ri->lock);
		ri->stop = true;
		pthread_cond_signal(&ri->wake);
		pthread_mutex_unlock(&ri->lock);
		pthread_join(ri->thread, NULL);
	}
	for (size_t i = 0; i < ri->qlen; i++)
		job_free(ri->q[(ri->qhead + i) % INGEST_QMAX]);
	reports_conn_close(&ri->conn);
	pthread_mutex_destroy(&ri->lock);
	pthread_cond_destroy(&ri->wake);
	pthread_cond_destroy(&ri->idle);
	free(ri);
}

/* reports_ingest_submit - see reports.h. */
int reports_ingest_submit(struct reports_ingest *ri, struct queue_pin *pin, const char *rcpt,
                          const char *qid)
{
	struct ingest_job *j;

	if (ri == NULL || pin == NULL) {
		queue_pin_free(pin);
		return -1;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		queue_pin_free(pin);
		return -1;
	}
	j->pin = pin;
	j->rcpt = util_xstrdup(rcpt);
	j->qid = util_xstrdup(qid);
	j->t = (int64_t)time(NULL);
	pthread_mutex_lock(&ri->lock);
	if (ri->qlen == INGEST_QMAX) {
		pthread_mutex_unlock(&ri->lock);
		util_metrics_inc("mxgate_reports_inbound_dropped_total", NULL);
		util_log_warn("%s reports inbound dropped reason=queue_full", qid);
		job_free(j);
		return -1;
	}
	ri->q[(ri->qhead + ri->qlen++) % INGEST_QMAX] = j;
	pthread_cond_signal(&ri->wake);
	pthread_mutex_unlock(&ri->lock);
	return 0;
}

/* reports_ingest_flush - see reports.h. */
void reports_ingest_flush(struct reports_ingest *ri)
{
	if (ri == NULL)
		return;
	pthread_mutex_lock(&ri->lock);
	while (ri->qlen > 0 || ri->busy > 0)
		pthread_cond_wait(&ri->idle, &ri->lock);
	pthread_mutex_unlock(&ri->lock);
}

/* addr_of - "mailto:a@b" (first of a list, size suffix cut) lower-cased. */
static void addr_of(const char *uri, char *out, size_t outlen)
{
	if (strncasecmp(uri, "mailto:", 7) == 0)
		uri += 7;
	size_t n = strcspn(uri, "!,; ");
	snprintf(out, outlen, "%.*s", (int)n, uri);
	for (char *p = out; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
}

/* reports_ingest_match - see reports.h. */
bool reports_ingest_match(const struct config *cfg, const char *rcpt)
{
	char a[320], want[320];

	if (!cfg->reports_ingest || rcpt == NULL)
		return false;
	if (*rcpt == '<')
		rcpt++;
	snprintf(a, sizeof(a), "%.*s", (int)strcspn(rcpt, ">"), rcpt);
	for (char *p = a; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
	if (cfg->reports_ingest_addresses.n > 0)
		return util_strlist_has_case(&cfg->reports_ingest_addresses, a);
	const char *at = strrchr(a, '@');
	if (at == NULL)
		return false;
	if (cfg->dmarc_rua && cfg->dmarc_rua[0]) {
		addr_of(cfg->dmarc_rua, want, sizeof(want));
		if (strcmp(a, want) == 0)
			return true;
	}
	if (cfg->tlsrpt_rua && cfg->tlsrpt_rua[0]) {
		addr_of(cfg->tlsrpt_rua, want, sizeof(want));
		if (strcmp(a, want) == 0)
			return true;
	}
	if (!util_strlist_has_case(&cfg->accepted_domains, at + 1))
		return false;
	size_t ll = (size_t)(at - a);
	return ((cfg->dmarc_rua == NULL || !cfg->dmarc_rua[0]) && ll == 13 &&
	        strncmp(a, "dmarc-reports", 13) == 0) ||
	       ((cfg->tlsrpt_rua == NULL || !cfg->tlsrpt_rua[0]) && ll == 6 &&
	        strncmp(a, "tlsrpt", 6) == 0);
}
