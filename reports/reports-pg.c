/*
 * reports-pg.c - the report store for a fleet: PostgreSQL (libpq), the same
 * tables, columns and calls as reports-sqlite.c, so N gateways behind a load
 * balancer record into one store and one of them sends each period's
 * reports with every node's evaluations.
 *
 * One sender per run: lock_run takes a session-level advisory lock
 * (pg_try_advisory_lock) that is held until the run's connection closes;
 * a node that does not get it skips its run, and the next run of any node
 * starts where the last recorded run (report_run) ended.  Migrations run
 * under a blocking advisory lock, so nodes starting together migrate once.
 *
 * Ownership: the handle is a PGconn * closed by close().
 * Diagnostics: errors in err with libpq's message (one line).
 */
#include "reports-internal.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define PG_LOCK_MIGRATE 0x6d786d6967LL /* "mxmig" */
#define PG_LOCK_RUN     0x6d7872756eLL /* "mxrun" */
#define PG_CLAIM_LEASE  "600"          /* seconds a node's outbox claim holds */

static const char *const pg_migrations[] = {
    /* 1 */
    "CREATE TABLE evaluation ("
    " id BIGSERIAL PRIMARY KEY, t BIGINT NOT NULL, source_ip TEXT NOT NULL,"
    " header_from TEXT NOT NULL, envelope_from TEXT, envelope_to TEXT, dmarc TEXT NOT NULL,"
    " spf_domain TEXT, spf_result TEXT, spf_scope TEXT,"
    " dkim_aligned INTEGER NOT NULL, spf_aligned INTEGER NOT NULL,"
    " policy_domain TEXT, p TEXT, sp TEXT, np TEXT, adkim TEXT, aspf TEXT,"
    " testing TEXT, psd TEXT, pct INTEGER, discovery_method TEXT,"
    " disposition TEXT NOT NULL, override_type TEXT, override_comment TEXT, reported INTEGER);"
    "CREATE INDEX evaluation_domain_t ON evaluation(header_from, t);"
    "CREATE INDEX evaluation_t ON evaluation(t);"
    "CREATE TABLE evaluation_dkim ("
    " evaluation_id BIGINT NOT NULL REFERENCES evaluation(id) ON DELETE CASCADE,"
    " domain TEXT NOT NULL, selector TEXT, result TEXT NOT NULL);"
    "CREATE INDEX evaluation_dkim_id ON evaluation_dkim(evaluation_id);"
    "CREATE TABLE dropped (t BIGINT NOT NULL, n BIGINT NOT NULL);",
    /* 2 */
    "CREATE TABLE report_run (begin_t BIGINT NOT NULL, end_t BIGINT NOT NULL,"
    " done_at BIGINT NOT NULL);"
    "CREATE TABLE report (report_id TEXT PRIMARY KEY, domain TEXT NOT NULL,"
    " begin_t BIGINT NOT NULL, end_t BIGINT NOT NULL, created_at BIGINT NOT NULL);",
    /* 3 */
    "CREATE TABLE outbox (report_id TEXT NOT NULL, rcpt TEXT NOT NULL, sender TEXT NOT NULL,"
    " msg BYTEA NOT NULL, queued INTEGER NOT NULL DEFAULT 0, claimed_at BIGINT,"
    " PRIMARY KEY (report_id, rcpt));"
    "CREATE TABLE refused (t BIGINT NOT NULL, domain TEXT NOT NULL, rcpt TEXT NOT NULL,"
    " reason TEXT NOT NULL);",
    /* 4 (issue 15): reports mailed to us */
    "CREATE TABLE inbound_dmarc (id BIGSERIAL PRIMARY KEY, org_name TEXT NOT NULL,"
    " email TEXT, report_id TEXT NOT NULL, domain TEXT NOT NULL, p TEXT,"
    " begin_t BIGINT NOT NULL, end_t BIGINT NOT NULL, received_t BIGINT NOT NULL,"
    " rcpt TEXT, qid TEXT, UNIQUE (org_name, report_id));"
    "CREATE INDEX inbound_dmarc_domain ON inbound_dmarc(domain, begin_t);"
    "CREATE TABLE inbound_dmarc_rec (report BIGINT NOT NULL REFERENCES inbound_dmarc(id)"
    " ON DELETE CASCADE, source_ip TEXT NOT NULL, count BIGINT NOT NULL,"
    " disposition TEXT, dkim TEXT, spf TEXT, header_from TEXT, dkim_domain TEXT,"
    " dkim_result TEXT, spf_domain TEXT, spf_result TEXT);"
    "CREATE INDEX inbound_dmarc_rec_report ON inbound_dmarc_rec(report);"
    "CREATE TABLE inbound_tlsrpt (id BIGSERIAL PRIMARY KEY, org_name TEXT NOT NULL,"
    " report_id TEXT NOT NULL, contact TEXT, begin_t BIGINT NOT NULL,"
    " end_t BIGINT NOT NULL, received_t BIGINT NOT NULL, rcpt TEXT, qid TEXT,"
    " UNIQUE (org_name, report_id));"
    "CREATE TABLE inbound_tlsrpt_policy (report BIGINT NOT NULL REFERENCES"
    " inbound_tlsrpt(id) ON DELETE CASCADE, policy_type TEXT, policy_domain TEXT,"
    " success BIGINT NOT NULL, failure BIGINT NOT NULL, failures TEXT);"
    "CREATE TABLE inbound_refused (t BIGINT NOT NULL, rcpt TEXT, qid TEXT,"
    " error TEXT NOT NULL, raw BYTEA);",
    /* 5 (parenthesised: one element, not a missing comma) */
    ("CREATE TABLE inbound_approved (domain TEXT NOT NULL, source_ip TEXT NOT NULL,"
     " approved_at BIGINT NOT NULL, PRIMARY KEY (domain, source_ip));"),
    /* 6: the postmaster's last look per domain (dashboard "mark as seen") */
    ("CREATE TABLE inbound_seen (domain TEXT PRIMARY KEY, seen_t BIGINT NOT NULL,"
     " marked_at BIGINT NOT NULL);"),
};

/* pg_err - libpq's message, one line. */
static void pg_err(PGconn *c, char *err, size_t errlen)
{
	const char *m = c ? PQerrorMessage(c) : "out of memory";
	size_t i = 0;

	if (errlen == 0)
		return;
	/* copied by hand: -O3 inlining makes gcc flag snprintf("%s") into a
	 * caller's small buffer as truncation (-Werror=format-truncation) */
	for (; m[i] != '\0' && i + 1 < errlen; i++)
		err[i] = (m[i] == '\n' || m[i] == '\r') ? ' ' : m[i];
	err[i] = '\0';
}

/* pg_do - run sql (no parameters); 0/-1 + err. */
static int pg_do(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int st = PQresultStatus(r);
	int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
	if (rc < 0)
		pg_err(c, err, errlen);
	PQclear(r);
	return rc;
}

/* pg_q - a query with text parameters; the result or NULL + err. */
static PGresult *pg_q(PGconn *c, const char *sql, int n, const char *const *v, char *err,
                      size_t errlen)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
	int st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_err(c, err, errlen);
		PQclear(r);
		return NULL;
	}
	return r;
}

/* pg_int - the first column of the first row as an integer. */
static int64_t pg_int(PGresult *r)
{
	return PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
	                                                 : 0;
}

static int pg_version(void *h)
{
	char err[64];
	PGresult *r = pg_q(h, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
	                   err, sizeof(err));
	int v = r ? (int)pg_int(r) : -1;
	PQclear(r);
	return v;
}

/* pg_migrate - the steps above the current version, under a lock. */
static int pg_migrate(PGconn *c, char *err, size_t errlen)
{
	const int nsteps = (int)(sizeof(pg_migrations) / sizeof(pg_migrations[0]));
	char sql[128];
	int v, rc = -1;

	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", PG_LOCK_MIGRATE);
	if (pg_do(c, sql, err, errlen) < 0)
		return -1;
	if (pg_do(c,
	          "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
	          " applied_at BIGINT NOT NULL)",
	          err, errlen) < 0 ||
	    (v = pg_version(c)) < 0)
		goto out;
	if (v > nsteps) {
		snprintf(err, errlen, "schema version %d is newer than this mxgate's %d", v,
		         nsteps);
		goto out;
	}
	for (int i = v; i < nsteps; i++) {
		char bump[160];
		snprintf(
		    bump, sizeof(bump),
		    "INSERT INTO schema_migrations VALUES (%d, extract(epoch from now())::bigint)",
		    i + 1);
		if (pg_do(c, "BEGIN", err, errlen) < 0)
			goto out;
		if (pg_do(c, pg_migrations[i], err, errlen) < 0 ||
		    pg_do(c, bump, err, errlen) < 0) {
			char e2[8];
			(void)pg_do(c, "ROLLBACK", e2, sizeof(e2));
			goto out;
		}
		if (pg_do(c, "COMMIT", err, errlen) < 0)
			goto out;
		util_log_info("- reports migration=%d applied", i + 1);
	}
	rc = 0;
out:
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", PG_LOCK_MIGRATE);
	char e3[8];
	(void)pg_do(c, sql, e3, sizeof(e3));
	return rc;
}

static void *pg_open(const char *target, char *err, size_t errlen)
{
	PGconn *c = PQconnectdb(target);

	if (c == NULL || PQstatus(c) != CONNECTION_OK) {
		pg_err(c, err, errlen);
		PQfinish(c);
		return NULL;
	}
	char e2[8];
	(void)pg_do(c, "SET client_min_messages = warning", e2, sizeof(e2));
	if (pg_migrate(c, err, errlen) < 0) {
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* pg_broken - the server went away (restart, network): open again. */
static bool pg_broken(void *h)
{
	return PQstatus(h) != CONNECTION_OK;
}

static void pg_close(void *h)
{
	PQfinish(h);
}

/* s0 - NULL for "" (stored as NULL, like the SQLite backend). */
static const char *s0(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : NULL;
}

/* Rows per multi-row INSERT: 25 parameters a row (65,535 at most). */
#define PG_INSERT_CHUNK 400

/* The text of one row's numbers, for the parameters. */
struct pg_rownum {
	char id[24], t[24], da[4], sa[4], pct[16];
};

/* pg_insert_chunk - rows [0, n) (n <= PG_INSERT_CHUNK) in three round
 * trips whatever n: their ids from the sequence, one multi-row INSERT of
 * the evaluations with those ids, one of all their DKIM rows. */
static int pg_insert_chunk(PGconn *c, struct reports_row *const *rows, size_t n, char *err,
                           size_t errlen)
{
	struct pg_rownum *num = calloc(n, sizeof(*num));
	const char **v = calloc(n * 25, sizeof(*v));
	const char **dv = calloc(n * POLICY_FACTS_MAX_DKIM * 4, sizeof(*dv));
	struct util_buf sql;
	PGresult *res = NULL;
	char cnt[24];
	int rc = -1;

	util_buf_init(&sql);
	if (num == NULL || v == NULL || dv == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(cnt, sizeof(cnt), "%zu", n);
	const char *cv[1] = {cnt};
	if ((res = pg_q(c,
	                "SELECT nextval(pg_get_serial_sequence('evaluation', 'id'))"
	                " FROM generate_series(1, $1::int) ORDER BY 1",
	                1, cv, err, errlen)) == NULL)
		goto out;
	if ((size_t)PQntuples(res) != n) {
		snprintf(err, errlen, "the id sequence gave %d ids for %zu rows", PQntuples(res), n);
		goto out;
	}
	util_buf_adds(&sql, "INSERT INTO evaluation (id, t, source_ip, header_from, envelope_from,"
	                    " envelope_to, dmarc, spf_domain, spf_result, spf_scope, dkim_aligned,"
	                    " spf_aligned, policy_domain, p, sp, np, adkim, aspf, testing, psd,"
	                    " pct, discovery_method, disposition, override_type,"
	                    " override_comment) VALUES ");
	for (size_t i = 0; i < n; i++) {
		const struct reports_row *r = rows[i];
		struct pg_rownum *m = &num[i];
		snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(res, (int)i, 0));
		snprintf(m->t, sizeof(m->t), "%lld", (long long)r->t);
		snprintf(m->da, sizeof(m->da), "%d", r->dkim_aligned ? 1 : 0);
		snprintf(m->sa, sizeof(m->sa), "%d", r->spf_aligned ? 1 : 0);
		snprintf(m->pct, sizeof(m->pct), "%d", r->pct);
		const char *row[25] = {m->id,
		                       m->t,
		                       s0(r->ip),
		                       s0(r->header_from),
		                       s0(r->envelope_from),
		                       s0(r->envelope_to),
		                       s0(r->dmarc),
		                       s0(r->spf_domain),
		                       s0(r->spf_result),
		                       s0(r->spf_scope),
		                       m->da,
		                       m->sa,
		                       s0(r->record_domain),
		                       s0(r->p),
		                       s0(r->sp),
		                       s0(r->np),
		                       s0(r->adkim),
		                       s0(r->aspf),
		                       s0(r->t_tag),
		                       s0(r->psd),
		                       r->pct < 0 ? NULL : m->pct,
		                       s0(r->discovery),
		                       s0(r->disposition),
		                       s0(r->override),
		                       s0(r->override_comment)};
		memcpy(&v[i * 25], row, sizeof(row));
		util_buf_adds(&sql, i > 0 ? ",(" : "(");
		for (size_t k = 0; k < 25; k++)
			util_buf_printf(&sql, k > 0 ? ",$%zu" : "$%zu", i * 25 + k + 1);
		util_buf_adds(&sql, ")");
	}
	util_buf_add(&sql, "", 1);
	PQclear(res);
	if ((res = pg_q(c, sql.data, (int)(n * 25), v, err, errlen)) == NULL)
		goto out;
	PQclear(res);
	res = NULL;

	size_t nd = 0;
	util_buf_reset(&sql);
	util_buf_adds(&sql, "INSERT INTO evaluation_dkim (evaluation_id, domain, selector, result)"
	                    " VALUES ");
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < rows[i]->ndkim; k++, nd++) {
			dv[nd * 4] = num[i].id;
			dv[nd * 4 + 1] = s0(rows[i]->dkim[k].domain);
			dv[nd * 4 + 2] = s0(rows[i]->dkim[k].selector);
			dv[nd * 4 + 3] = s0(rows[i]->dkim[k].result);
			util_buf_printf(&sql, "%s($%zu,$%zu,$%zu,$%zu)", nd > 0 ? "," : "",
			                nd * 4 + 1, nd * 4 + 2, nd * 4 + 3, nd * 4 + 4);
		}
	util_buf_add(&sql, "", 1);
	if (nd > 0 && (res = pg_q(c, sql.data, (int)(nd * 4), dv, err, errlen)) == NULL)
		goto out;
	rc = 0;
out:
	PQclear(res);
	util_buf_free(&sql);
	free(num);
	free(v);
	free(dv);
	return rc;
}

/* pg_insert - the batch in one transaction, PG_INSERT_CHUNK rows a round
 * of statements (a round trip per row was the cost of a batch). */
static int pg_insert(void *h, struct reports_row *const *rows, size_t n, char *err, size_t errlen)
{
	PGconn *c = h;

	if (pg_do(c, "BEGIN", err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < n; i += PG_INSERT_CHUNK)
		if (pg_insert_chunk(c, rows + i, n - i < PG_INSERT_CHUNK ? n - i : PG_INSERT_CHUNK,
		                    err, errlen) < 0)
			goto fail;
	return pg_do(c, "COMMIT", err, errlen);
fail:;
	char e2[8];
	(void)pg_do(c, "ROLLBACK", e2, sizeof(e2));
	return -1;
}

static int pg_add_drops(void *h, int64_t t, uint64_t n, char *err, size_t errlen)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT INTO dropped VALUES (%lld, %llu)", (long long)t,
	         (unsigned long long)n);
	return pg_do(h, sql, err, errlen);
}

static int pg_domains(void *h, int64_t begin, int64_t end, struct util_strlist *out, char *err,
                      size_t errlen)
{
	char b[24], e[24];
	snprintf(b, sizeof(b), "%lld", (long long)begin);
	snprintf(e, sizeof(e), "%lld", (long long)end);
	const char *v[2] = {b, e};
	PGresult *r = pg_q(h,
	                   "SELECT DISTINCT policy_domain FROM evaluation WHERE t >= $1 AND t < $2"
	                   " AND policy_domain IS NOT NULL ORDER BY 1",
	                   2, v, err, errlen);
	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		util_strlist_add(out, PQgetvalue(r, i, 0));
	PQclear(r);
	return 0;
}

static char *col(PGresult *r, int row, int i)
{
	return PQgetisnull(r, row, i) ? NULL : util_xstrdup(PQgetvalue(r, row, i));
}

/* pg_split_dkim - the "d\x1fs\x1fr\x1e..." key back into the record. */
static void pg_split_dkim(const char *s, struct reports_agg_rec *r)
{
	while (s != NULL && *s != '\0' && r->ndkim < POLICY_FACTS_MAX_DKIM) {
		const char *end = strchr(s, '\x1e');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		char *one = strndup(s, len), *f2, *f3;
		if (one != NULL && (f2 = strchr(one, '\x1f')) != NULL &&
		    (f3 = strchr(f2 + 1, '\x1f')) != NULL) {
			*f2++ = '\0';
			*f3++ = '\0';
			r->dkim[r->ndkim].domain = util_xstrdup(one);
			r->dkim[r->ndkim].selector = util_xstrdup(f2);
			r->dkim[r->ndkim].result = util_xstrdup(f3);
			r->ndkim++;
		}
		free(one);
		s = end ? end + 1 : NULL;
	}
}

static int pg_aggregate(void *h, const char *domain, int64_t begin, int64_t end,
                        struct reports_agg *out, char *err, size_t errlen)
{
	char b[24], e[24];
	PGresult *r = NULL;

	memset(out, 0, sizeof(*out));
	out->domain = util_xstrdup(domain);
	snprintf(b, sizeof(b), "%lld", (long long)begin);
	snprintf(e, sizeof(e), "%lld", (long long)end);
	const char *v[3] = {domain, b, e};
	r = pg_q(h,
	         "SELECT p, sp, np, adkim, aspf, testing, discovery_method FROM evaluation WHERE"
	         " policy_domain = $1 AND t >= $2 AND t < $3 ORDER BY t DESC, id DESC LIMIT 1",
	         3, v, err, errlen);
	if (r == NULL)
		goto fail;
	if (PQntuples(r) > 0) {
		out->p = col(r, 0, 0);
		out->sp = col(r, 0, 1);
		out->np = col(r, 0, 2);
		out->adkim = col(r, 0, 3);
		out->aspf = col(r, 0, 4);
		out->testing = col(r, 0, 5);
		out->discovery = col(r, 0, 6);
	}
	PQclear(r);
	r = pg_q(h,
	         "SELECT source_ip, disposition, (dmarc = 'pass')::int, dkim_aligned, spf_aligned,"
	         " override_type, override_comment, envelope_to, envelope_from, header_from,"
	         " spf_domain, spf_result, spf_scope, dk, count(*) FROM (SELECT e.*, (SELECT"
	         " string_agg(x, chr(30) ORDER BY x) FROM (SELECT d.domain || chr(31) ||"
	         " coalesce(d.selector, '') || chr(31) || d.result AS x FROM evaluation_dkim d"
	         " WHERE d.evaluation_id = e.id) AS xs) AS dk FROM evaluation e WHERE"
	         " policy_domain = $1 AND t >= $2 AND t < $3) AS ev"
	         " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 ORDER BY 15 DESC, 1, 2",
	         3, v, err, errlen);
	if (r == NULL)
		goto fail;
	out->n = (size_t)PQntuples(r);
	out->recs = calloc(out->n ? out->n : 1, sizeof(*out->recs));
	for (size_t i = 0; i < out->n; i++) {
		struct reports_agg_rec *a = &out->recs[i];
		int row = (int)i;
		a->ip = col(r, row, 0);
		a->disposition = col(r, row, 1);
		a->dmarc_pass = atoi(PQgetvalue(r, row, 2)) != 0;
		a->dkim_pass = atoi(PQgetvalue(r, row, 3)) != 0;
		a->spf_pass = atoi(PQgetvalue(r, row, 4)) != 0;
		a->override = col(r, row, 5);
		a->override_comment = col(r, row, 6);
		a->envelope_to = col(r, row, 7);
		a->envelope_from = col(r, row, 8);
		a->header_from = col(r, row, 9);
		a->spf_domain = col(r, row, 10);
		a->spf_result = col(r, row, 11);
		a->spf_scope = col(r, row, 12);
		pg_split_dkim(PQgetisnull(r, row, 13) ? NULL : PQgetvalue(r, row, 13), a);
		a->count = (uint64_t)strtoull(PQgetvalue(r, row, 14), NULL, 10);
	}
	PQclear(r);
	const char *v2[2] = {b, e};
	r = pg_q(h, "SELECT coalesce(sum(n), 0) FROM dropped WHERE t >= $1 AND t < $2", 2, v2, err,
	         errlen);
	if (r == NULL)
		goto fail;
	out->dropped = (uint64_t)pg_int(r);
	PQclear(r);
	return 0;
fail:
	reports_agg_clear(out);
	return -1;
}

static int pg_run_begin(void *h, int64_t *begin, char *err, size_t errlen)
{
	PGresult *r = pg_q(h,
	                   "SELECT coalesce((SELECT max(end_t) FROM report_run),"
	                   " (SELECT min(t) FROM evaluation), 0)",
	                   0, NULL, err, errlen);
	if (r == NULL)
		return -1;
	*begin = pg_int(r);
	PQclear(r);
	return 0;
}

static int pg_add_run(void *h, int64_t begin, int64_t end, char *err, size_t errlen)
{
	char sql[160];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO report_run VALUES (%lld, %lld, extract(epoch from now())::bigint)",
	         (long long)begin, (long long)end);
	return pg_do(h, sql, err, errlen);
}

static int pg_add_report(void *h, const char *report_id, const char *domain, int64_t begin,
                         int64_t end, char *err, size_t errlen)
{
	char b[24], e[24];
	snprintf(b, sizeof(b), "%lld", (long long)begin);
	snprintf(e, sizeof(e), "%lld", (long long)end);
	const char *v[4] = {report_id, domain, b, e};
	PGresult *r = pg_q(h,
	                   "INSERT INTO report VALUES ($1, $2, $3, $4, extract(epoch from now())"
	                   "::bigint) ON CONFLICT DO NOTHING",
	                   4, v, err, errlen);
	if (r == NULL)
		return -1;
	int n = atoi(PQcmdTuples(r));
	PQclear(r);
	if (n != 1) {
		snprintf(err, errlen, "report %s exists", report_id);
		return -1;
	}
	return 0;
}

/* pg_prune - retention (see reports-internal.h; the twin of sq_prune):
 * evaluations, drop counts, reports, refusals and runs before the
 * cut-off - never the newest run, where the next one begins - and the
 * outbox rows of queued reports whose report row is gone.  Row locks: the
 * writers' inserts do not wait for it. */
static int pg_prune(void *h, int64_t before, uint64_t *n, char *err, size_t errlen)
{
	static const char *const rest[] = {
	    "DELETE FROM dropped WHERE t < %lld",
	    "DELETE FROM report WHERE end_t < %lld",
	    "DELETE FROM refused WHERE t < %lld",
	    /* parenthesised: one element, not a missing comma */
	    ("DELETE FROM report_run WHERE end_t < %lld AND"
	     " end_t < (SELECT max(end_t) FROM report_run)"),
	};
	char sql[200];
	*n = 0;
	snprintf(sql, sizeof(sql), "DELETE FROM evaluation WHERE t < %lld", (long long)before);
	PGresult *r = pg_q(h, sql, 0, NULL, err, errlen);
	if (r == NULL)
		return -1;
	*n = (uint64_t)strtoull(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++) {
		snprintf(sql, sizeof(sql), rest[i], (long long)before);
		if (pg_do(h, sql, err, errlen) < 0)
			return -1;
	}
	return pg_do(h,
	             "DELETE FROM outbox WHERE queued = 1 AND report_id NOT IN"
	             " (SELECT report_id FROM report)",
	             err, errlen);
}

static int pg_prune_inbound(void *h, int64_t before, int64_t refused_before, uint64_t *n,
                            char *err, size_t errlen)
{
	static const char *const tables[] = {"inbound_dmarc", "inbound_tlsrpt"};
	char sql[128];

	*n = 0;
	for (size_t i = 0; i < 2; i++) {
		snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE received_t < %lld", tables[i],
		         (long long)before);
		PGresult *r = pg_q(h, sql, 0, NULL, err, errlen);
		if (r == NULL)
			return -1;
		*n += (uint64_t)strtoull(PQcmdTuples(r), NULL, 10);
		PQclear(r);
	}
	snprintf(sql, sizeof(sql), "DELETE FROM inbound_refused WHERE t < %lld",
	         (long long)refused_before);
	return pg_do(h, sql, err, errlen);
}

static int pg_status(void *h, struct util_buf *out, char *err, size_t errlen)
{
	int64_t begin = 0;
	char b[24];
	if (pg_run_begin(h, &begin, err, errlen) < 0)
		return -1;
	snprintf(b, sizeof(b), "%lld", (long long)begin);
	const char *v[1] = {b};
	util_buf_printf(out, "last-run-end: %lld\n", (long long)begin);
	PGresult *r = pg_q(h,
	                   "SELECT coalesce(policy_domain, '(no record)'), count(*) FROM evaluation"
	                   " WHERE t >= $1 GROUP BY 1 ORDER BY 1",
	                   1, v, err, errlen);
	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		util_buf_printf(out, "pending: %s evaluations=%s\n", PQgetvalue(r, i, 0),
		                PQgetvalue(r, i, 1));
	PQclear(r);
	r = pg_q(h, "SELECT domain, max(end_t), count(*) FROM report GROUP BY 1 ORDER BY 1", 0,
	         NULL, err, errlen);
	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		util_buf_printf(out, "sent: %s last-period-end=%s reports=%s\n",
		                PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
	PQclear(r);
	r = pg_q(h,
	         "SELECT domain, rcpt, reason, count(*), max(t) FROM refused GROUP BY 1, 2, 3"
	         " ORDER BY 1, 2",
	         0, NULL, err, errlen);
	if (r == NULL)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		util_buf_printf(out, "refused: %s rua=%s reason=%s runs=%s last=%s\n",
		                PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
		                PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
	PQclear(r);
	r = pg_q(h, "SELECT coalesce(sum(n), 0) FROM dropped WHERE t >= $1", 1, v, err, errlen);
	if (r == NULL)
		return -1;
	util_buf_printf(out, "dropped-since-last-run: %lld\n", (long long)pg_int(r));
	PQclear(r);
	return 0;
}

/* pg_tx - 0 BEGIN, 1 COMMIT, 2 ROLLBACK, 3 a read-only snapshot. */
static int pg_tx(void *h, int what, char *err, size_t errlen)
{
	return pg_do(h,
	             what == 0   ? "BEGIN"
	             : what == 1 ? "COMMIT"
	             : what == 3 ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	                         : "ROLLBACK",
	             err, errlen);
}

static int pg_add_outbox(void *h, const struct reports_out *o, char *err, size_t errlen)
{
	const char *v[4] = {o->report_id, o->rcpt, o->sender, o->msg};
	int lens[4] = {0, 0, 0, (int)o->len};
	int fmts[4] = {0, 0, 0, 1}; /* the message as binary */
	PGresult *r = PQexecParams(h,
	                           "INSERT INTO outbox (report_id, rcpt, sender, msg) VALUES"
	                           " ($1, $2, $3, $4)",
	                           4, NULL, v, lens, fmts, 0);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
	if (rc < 0)
		pg_err(h, err, errlen);
	PQclear(r);
	return rc;
}

static int pg_outbox_pending(void *h, struct reports_out **list, char *err, size_t errlen)
{
	/* a fleet shares the outbox: a node claims what it queues; a claim
	 * older than PG_CLAIM_LEASE (its node died before queuing) is taken
	 * over, so a report is delayed, never lost */
	PGresult *r =
	    PQexecParams(h,
	                 "UPDATE outbox SET claimed_at = extract(epoch from now())::bigint"
	                 " WHERE queued = 0 AND (claimed_at IS NULL OR claimed_at <"
	                 " extract(epoch from now())::bigint - " PG_CLAIM_LEASE ")"
	                 " RETURNING report_id, rcpt, sender, msg",
	                 0, NULL, NULL, NULL, NULL, 1 /* binary results */);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_err(h, err, errlen);
		PQclear(r);
		return -1;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		struct reports_out *o = calloc(1, sizeof(*o));
		int n = PQgetlength(r, i, 3);
		if (o == NULL || (o->msg = malloc((size_t)n + 1)) == NULL) {
			free(o);
			break;
		}
		memcpy(o->msg, PQgetvalue(r, i, 3), (size_t)n);
		o->msg[n] = '\0';
		o->len = (size_t)n;
		o->report_id = strndup(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
		o->rcpt = strndup(PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
		o->sender = strndup(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
		o->next = *list;
		*list = o;
	}
	PQclear(r);
	return 0;
}

static int pg_add_refused(void *h, int64_t t, const char *domain, const char *rcpt,
                          const char *reason, char *err, size_t errlen)
{
	char ts[24];
	snprintf(ts, sizeof(ts), "%lld", (long long)t);
	const char *v[4] = {ts, domain, rcpt, reason};
	PGresult *r = pg_q(h, "INSERT INTO refused VALUES ($1, $2, $3, $4)", 4, v, err, errlen);
	if (r == NULL)
		return -1;
	PQclear(r);
	return 0;
}

static int pg_mark_queued(void *h, const char *report_id, const char *rcpt, char *err,
                          size_t errlen)
{
	const char *v[2] = {report_id, rcpt};
	/* the message goes: the queue has it; id and state stay (prune) */
	PGresult *r = pg_q(h,
	                   "UPDATE outbox SET queued = 1, msg = ''::bytea WHERE report_id = $1"
	                   " AND rcpt = $2",
	                   2, v, err, errlen);
	if (r == NULL)
		return -1;
	PQclear(r);
	return 0;
}

/* pg_id - run an INSERT ... RETURNING id; *id = 0 when nothing was inserted
 * (ON CONFLICT DO NOTHING).  0/-1 + err. */
static int pg_id(PGconn *c, const char *sql, int n, const char *const *v, int64_t *id,
                 char *err, size_t errlen)
{
	PGresult *r = pg_q(c, sql, n, v, err, errlen);
	if (r == NULL)
		return -1;
	*id = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
	PQclear(r);
	return 0;
}

/* pg_add_inbound - see reports-internal.h (the SQLite twin: sq_add_inbound). */
static int pg_add_inbound(void *h, const struct reports_inbound *in, int64_t t, const char *rcpt,
                          const char *qid, const char *raw, size_t rawlen, int *dups, char *err,
                          size_t errlen)
{
	char ts[24], b[24], e[24], id_s[24], n1[24], n2[24];
	int64_t id;
	PGresult *r;

	*dups = 0;
	snprintf(ts, sizeof(ts), "%lld", (long long)t);
	if (pg_do(h, "BEGIN", err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < in->ndmarc; i++) {
		const struct reports_in_dmarc *d = &in->dmarc[i];
		snprintf(b, sizeof(b), "%lld", (long long)d->begin);
		snprintf(e, sizeof(e), "%lld", (long long)d->end);
		const char *v[10] = {d->org_name, d->email, d->report_id, d->domain, d->p,
		                     b,           e,        ts,           rcpt,      qid};
		if (pg_id(h,
		          "INSERT INTO inbound_dmarc (org_name, email, report_id, domain, p, begin_t,"
		          " end_t, received_t, rcpt, qid) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
		          " ON CONFLICT DO NOTHING RETURNING id",
		          10, v, &id, err, errlen) < 0)
			goto fail;
		if (id == 0) {
			(*dups)++;
			continue;
		}
		snprintf(id_s, sizeof(id_s), "%lld", (long long)id);
		for (size_t j = 0; j < d->n; j++) {
			const struct reports_in_rec *x = &d->recs[j];
			snprintf(n1, sizeof(n1), "%llu", (unsigned long long)x->count);
			const char *w[11] = {id_s,           x->ip,          n1,
			                     x->disposition, x->dkim,        x->spf,
			                     x->header_from, x->dkim_domain, x->dkim_result,
			                     x->spf_domain,  x->spf_result};
			if ((r = pg_q(h, "INSERT INTO inbound_dmarc_rec VALUES ($1,$2,$3,$4,$5,$6,$7,"
			                 "$8,$9,$10,$11)",
			              11, w, err, errlen)) == NULL)
				goto fail;
			PQclear(r);
		}
	}
	for (size_t i = 0; i < in->ntlsrpt; i++) {
		const struct reports_in_tlsrpt *x = &in->tlsrpt[i];
		snprintf(b, sizeof(b), "%lld", (long long)x->begin);
		snprintf(e, sizeof(e), "%lld", (long long)x->end);
		const char *v[8] = {x->org_name, x->report_id, x->contact, b, e, ts, rcpt, qid};
		if (pg_id(h,
		          "INSERT INTO inbound_tlsrpt (org_name, report_id, contact, begin_t, end_t,"
		          " received_t, rcpt, qid) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
		          " ON CONFLICT DO NOTHING RETURNING id",
		          8, v, &id, err, errlen) < 0)
			goto fail;
		if (id == 0) {
			(*dups)++;
			continue;
		}
		snprintf(id_s, sizeof(id_s), "%lld", (long long)id);
		for (size_t j = 0; j < x->n; j++) {
			const struct reports_in_tlspol *p = &x->pols[j];
			snprintf(n1, sizeof(n1), "%llu", (unsigned long long)p->success);
			snprintf(n2, sizeof(n2), "%llu", (unsigned long long)p->failure);
			const char *w[6] = {id_s, p->policy_type, p->policy_domain, n1, n2, p->failures};
			if ((r = pg_q(h, "INSERT INTO inbound_tlsrpt_policy VALUES ($1,$2,$3,$4,$5,$6)",
			              6, w, err, errlen)) == NULL)
				goto fail;
			PQclear(r);
		}
	}
	for (size_t i = 0; i < in->errors.n; i++) {
		/* the raw message as a binary parameter (bytea), once, with the
		 * first error (as SQLite) */
		const char *rw = i == 0 ? raw : NULL;
		const char *v[5] = {ts, rcpt, qid, in->errors.v[i], rw};
		int lens[5] = {0, 0, 0, 0, rw ? (int)rawlen : 0};
		int fmts[5] = {0, 0, 0, 0, 1};
		r = PQexecParams(h, "INSERT INTO inbound_refused VALUES ($1,$2,$3,$4,$5)", 5, NULL, v,
		                 lens, fmts, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			pg_err(h, err, errlen);
			PQclear(r);
			goto fail;
		}
		PQclear(r);
	}
	return pg_do(h, "COMMIT", err, errlen);
fail:
	(void)pg_do(h, "ROLLBACK", err + strlen(err), 0);
	return -1;
}

/* pg_query - see reports-internal.h (the dashboard's statements). */
static int pg_query(void *h, const char *sql, int n, const char *const *params,
                    int (*cb)(void *arg, int ncol, const char *const *vals), void *arg,
                    char *err, size_t errlen)
{
	const char *vals[32];
	PGresult *r = pg_q(h, sql, n, params, err, errlen);
	if (r == NULL)
		return -1;
	int ncol = PQnfields(r);
	if (ncol > (int)(sizeof(vals) / sizeof(vals[0])))
		ncol = (int)(sizeof(vals) / sizeof(vals[0]));
	for (int i = 0; cb != NULL && i < PQntuples(r); i++) {
		for (int c = 0; c < ncol; c++)
			vals[c] = PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c);
		if (cb(arg, ncol, vals) < 0) {
			snprintf(err, errlen, "stopped");
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	return 0;
}

/* pg_lock_run - one node per run (held until the connection closes). */
static int pg_lock_run(void *h, char *err, size_t errlen)
{
	char sql[96];
	snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%lld)", PG_LOCK_RUN);
	PGresult *r = pg_q(h, sql, 0, NULL, err, errlen);
	if (r == NULL)
		return -1;
	int got = PQntuples(r) > 0 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	return got;
}

const struct reports_backend reports_pg_backend = {
    .name = "postgresql",
    .open = pg_open,
    .insert = pg_insert,
    .add_drops = pg_add_drops,
    .domains = pg_domains,
    .aggregate = pg_aggregate,
    .run_begin = pg_run_begin,
    .add_run = pg_add_run,
    .add_report = pg_add_report,
    .prune = pg_prune,
    .status = pg_status,
    .lock_run = pg_lock_run,
    .tx = pg_tx,
    .add_outbox = pg_add_outbox,
    .outbox_pending = pg_outbox_pending,
    .mark_queued = pg_mark_queued,
    .add_refused = pg_add_refused,
    .add_inbound = pg_add_inbound,
    .prune_inbound = pg_prune_inbound,
    .query = pg_query,
    .schema_version = pg_version,
    .broken = pg_broken,
    .close = pg_close,
};
