/*
 * reports-report.c - report content for a period: which period "now" is
 * in, the report id, and the XML a domain would be sent (`mxgate reports
 * preview DOMAIN`).
 *
 * Periods: [k * period, (k + 1) * period) seconds since the epoch, so a
 * period of 1d starts at UTC midnight (RFC 9990 section 3.2 asks for
 * reports at least daily and aligned to the UTC day where possible).
 *
 * What a run covers (reports_run_begin, reports_run_slice; the run and
 * the preview share them): from the end of the last run - or, before any
 * run, from the start of the period of the oldest evaluation - up to the
 * run's end, cut at period boundaries: one report per domain and period,
 * so a gateway that was down over a boundary sends each missed period on
 * its own (at start-up), and the id of a (domain, period) report is the
 * same in every run that makes it.  Periods older than the look-back
 * (retention, at least one period, at most REPORTS_LOOKBACK_MAX) are not
 * reported any more.
 *
 * Ownership: the store file is opened and closed per call; the XML is
 * appended to the caller's buffer.
 * Diagnostics: errors in err.
 */
#include "reports-internal.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "version.h"

/* reports_db_target - see reports-internal.h. */
char *reports_db_target(const struct config *cfg, const struct reports_backend **be, char *err,
                        size_t errlen)
{
	const char *db = cfg->reports_database;

	*be = &reports_sqlite_backend;
	if (db == NULL || db[0] == '\0' || strcmp(db, "sqlite") == 0)
		return util_xasprintf("%s/reports.db", cfg->queue_dir);
	if (strncmp(db, "sqlite:", 7) == 0)
		return util_xstrdup(db + 7);
	if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0) {
		*be = &reports_pg_backend;
		return util_xstrdup(db);
	}
	snprintf(err, errlen, "database %s: only sqlite is built in", db);
	return NULL;
}

/* open_existing - the store for a read-mostly command: an SQLite file must
 * exist already (a command run as root must not create the daemon's file). */
static void *open_existing(const struct reports_backend *be, const char *target, char *err,
                           size_t errlen)
{
	if (be == &reports_sqlite_backend && access(target, F_OK) < 0) {
		snprintf(err, errlen, "%s: no report store yet ([reports] record = yes makes it)",
		         target);
		return NULL;
	}
	return be->open(target, err, errlen);
}

/* reports_status - see reports.h. */
int reports_status(const struct config *cfg, struct util_buf *out, char *err, size_t errlen)
{
	const struct reports_backend *be = NULL;
	char *target = reports_db_target(cfg, &be, err, errlen);
	void *db = NULL;
	int rc = -1;

	if (target == NULL || (db = open_existing(be, target, err, errlen)) == NULL)
		goto out;
	util_buf_printf(out, "store: %s schema=%d\n",
	                be == &reports_sqlite_backend ? target : "postgresql",
	                be->schema_version(db));
	rc = be->status(db, out, err, errlen);
out:
	if (db != NULL)
		be->close(db);
	free(target);
	return rc;
}

/* reports_period_of - the period that contains t: [*begin, *end). */
void reports_period_of(const struct config *cfg, int64_t t, int64_t *begin, int64_t *end)
{
	int64_t p = cfg->reports_period > 0 ? cfg->reports_period : 86400;

	*begin = t - t % p;
	*end = *begin + p;
}

/* reports_report_id - see reports-internal.h. */
void reports_report_id(const char *hostname, const char *domain, int64_t begin, int64_t end,
                       char out[25])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *s = util_xasprintf("%s %s %lld %lld", hostname, domain, (long long)begin,
	                         (long long)end);
	EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL);
	free(s);
	for (int i = 0; i < 12; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* int_cb - the first value of the first row as an integer (NULL: kept). */
static int int_cb(void *arg, int ncol, const char *const *vals)
{
	if (ncol > 0 && vals[0] != NULL)
		*(int64_t *)arg = strtoll(vals[0], NULL, 10);
	return 0;
}

/* reports_run_begin - see reports-internal.h. */
int reports_run_begin(const struct reports_backend *be, void *db, const struct config *cfg,
                      int64_t end, int64_t *begin, char *err, size_t errlen)
{
	int64_t last = -1, oldest = 0, pb, pe;

	if (be->query(db, "SELECT max(end_t) FROM report_run", 0, NULL, int_cb, &last, err,
	              errlen) < 0)
		return -1;
	if (last >= 0) {
		*begin = last;
	} else {
		/* no run yet: from the start of the oldest evaluation's period */
		if (be->run_begin(db, &oldest, err, errlen) < 0)
			return -1;
		reports_period_of(cfg, oldest, &pb, &pe);
		*begin = oldest > 0 ? pb : end;
	}
	int64_t p = cfg->reports_period > 0 ? cfg->reports_period : 86400;
	int64_t back = cfg->reports_retention < p ? p : cfg->reports_retention;
	if (back > REPORTS_LOOKBACK_MAX)
		back = REPORTS_LOOKBACK_MAX;
	reports_period_of(cfg, end - back, &pb, &pe);
	if (*begin < pb) {
		util_log_warn("- reports periods before %lld not reported: older than the "
		              "look-back (last run end=%lld)",
		              (long long)pb, (long long)last);
		*begin = pb;
	}
	if (*begin > end) /* a send-now ended the last run after this end */
		*begin = end;
	return 0;
}

/* reports_run_slice - see reports-internal.h. */
int reports_run_slice(const struct reports_backend *be, void *db, const struct config *cfg,
                      int64_t from, int64_t end, int64_t *sb, int64_t *se, char *err,
                      size_t errlen)
{
	char b[24], e[24];
	int64_t next = -1, pb, pe;
	const char *v[2] = {b, e};

	if (from >= end)
		return 0;
	snprintf(b, sizeof(b), "%lld", (long long)from);
	snprintf(e, sizeof(e), "%lld", (long long)end);
	/* the next evaluation: periods without any are skipped */
	const char *sql = be == &reports_sqlite_backend
	                      ? "SELECT min(t) FROM evaluation WHERE t >= CAST(?1 AS INTEGER)"
	                        " AND t < CAST(?2 AS INTEGER)"
	                      : "SELECT min(t) FROM evaluation WHERE t >= $1::bigint"
	                        " AND t < $2::bigint";
	if (be->query(db, sql, 2, v, int_cb, &next, err, errlen) < 0)
		return -1;
	if (next < 0)
		return 0;
	reports_period_of(cfg, next, &pb, &pe);
	*sb = pb > from ? pb : from;
	*se = pe < end ? pe : end;
	return 1;
}

/* reports_preview - see reports.h. */
int reports_preview(const struct config *cfg, const char *domain, int64_t now, struct util_buf *out,
                    char *err, size_t errlen)
{
	const struct reports_backend *be = NULL;
	struct reports_agg agg = {0};
	char *target = reports_db_target(cfg, &be, err, errlen), *email = NULL;
	char id[25];
	void *db = NULL;
	int64_t begin, end = now + 1, pb, pe; /* a run ending now: send-now's end */
	int rc = -1;

	if (target == NULL)
		goto out;
	if ((db = open_existing(be, target, err, errlen)) == NULL)
		goto out;
	/* the run's own choice: from the last run's end (or the oldest
	 * evaluation's period), cut at the period boundary before now */
	if (reports_run_begin(be, db, cfg, end, &begin, err, errlen) < 0)
		goto out;
	reports_period_of(cfg, now, &pb, &pe);
	if (begin < pb)
		begin = pb; /* earlier periods are reports of their own */
	if (be->aggregate(db, domain, begin, end, &agg, err, errlen) < 0)
		goto out;
	if (agg.n == 0) {
		snprintf(err, errlen, "no evaluations for %s since %lld", domain, (long long)begin);
		rc = 1;
		goto out;
	}
	email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                           : util_xasprintf("postmaster@%s", cfg->hostname);
	reports_report_id(cfg->hostname, domain, begin, end, id);
	struct reports_meta m = {
	    .org_name = cfg->reports_org_name ? cfg->reports_org_name : cfg->hostname,
	    .email = email,
	    .report_id = id,
	    .generator = "mxgate " MXGATE_VERSION,
	    .begin = begin,
	    .end = end - 1,
	};
	if (reports_xml(&m, &agg, out) < 0) {
		snprintf(err, errlen, "XML writer failed");
		goto out;
	}
	rc = 0;
out:
	reports_agg_clear(&agg);
	if (db != NULL)
		be->close(db);
	free(target);
	free(email);
	return rc;
}
