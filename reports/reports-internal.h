/*
 * reports-internal.h - what the files of reports/ share: one evaluation
 * row, and the small table of functions a database backend provides
 * (SQLite now, PostgreSQL later: the same schema and the same calls).
 *
 * Threads: a backend handle is used by one thread at a time (the writer
 * thread, or the caller of reports_open before the thread starts).
 */
#ifndef MX_REPORTS_INTERNAL_H
#define MX_REPORTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "reports.h"

/* One DMARC evaluation, every string owned ("" = unknown, stored NULL). */
struct reports_row {
	int64_t t; /* seconds since the epoch, UTC */
	char *ip, *header_from, *envelope_from, *envelope_to;
	char *dmarc;
	char *spf_domain, *spf_result, *spf_scope;
	size_t ndkim;
	struct {
		char *domain, *selector, *result;
	} dkim[POLICY_FACTS_MAX_DKIM];
	bool dkim_aligned, spf_aligned;
	char *record_domain, *p, *sp, *np, *adkim, *aspf, *t_tag, *psd;
	int pct; /* -1 absent */
	char *discovery;
	char *disposition, *override, *override_comment;
};

/* reports_row_from_facts - a row owning copies of f's strings; rcpt may be
 * NULL.  Caller frees with reports_row_free(). */
struct reports_row *reports_row_from_facts(const struct policy_dmarc_facts *f, const char *rcpt,
                                           int64_t t);
void reports_row_free(struct reports_row *r);

/* A database backend. */
struct reports_backend {
	const char *name;
	/* open - connect/open and run the versioned migrations; NULL + err */
	void *(*open)(const char *target, char *err, size_t errlen);
	/* insert - rows in one transaction; 0/-1 + err */
	int (*insert)(void *db, struct reports_row *const *rows, size_t n, char *err, size_t errlen);
	/* add_drops - n rows dropped at time t (report metadata); 0/-1 */
	int (*add_drops)(void *db, int64_t t, uint64_t n, char *err, size_t errlen);
	/* schema_version - the migrated version, -1 on error */
	int (*schema_version)(void *db);
	void (*close)(void *db);
};
extern const struct reports_backend reports_sqlite_backend;

/* reports_schema_version - the version the migrations reach. */
#define REPORTS_SCHEMA_VERSION 1

#endif
