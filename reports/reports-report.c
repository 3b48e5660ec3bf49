/*
 * reports-report.c - report content for a period: which period "now" is
 * in, the report id, and the XML a domain would be sent (`mxgate reports
 * preview DOMAIN`).
 *
 * Periods: [k * period, (k + 1) * period) seconds since the epoch, so a
 * period of 1d starts at UTC midnight (RFC 9990 section 3.2 asks for
 * reports at least daily and aligned to the UTC day where possible).
 *
 * Ownership: the store file is opened and closed per call; the XML is
 * appended to the caller's buffer.
 * Diagnostics: errors in err.
 */
#include "reports-internal.h"

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

/* reports_preview - see reports.h. */
int reports_preview(const struct config *cfg, const char *domain, int64_t now, struct util_buf *out,
                    char *err, size_t errlen)
{
	const struct reports_backend *be = NULL;
	struct reports_agg agg = {0};
	char *target = reports_db_target(cfg, &be, err, errlen), *email = NULL, *id = NULL;
	void *db = NULL;
	int64_t begin, end;
	int rc = -1;

	if (target == NULL)
		goto out;
	if ((db = open_existing(be, target, err, errlen)) == NULL)
		goto out;
	reports_period_of(cfg, now, &begin, &end);
	if (be->aggregate(db, domain, begin, end, &agg, err, errlen) < 0)
		goto out;
	if (agg.n == 0) {
		snprintf(err, errlen, "no evaluations for %s in the period starting %lld", domain,
		         (long long)begin);
		rc = 1;
		goto out;
	}
	email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                           : util_xasprintf("postmaster@%s", cfg->hostname);
	id = util_xasprintf("%s.%lld.%s", domain, (long long)begin, cfg->hostname);
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
	free(id);
	return rc;
}
