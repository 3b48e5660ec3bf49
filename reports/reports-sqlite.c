/*
 * reports-sqlite.c - the embedded report store: SQLite in the queue
 * directory, WAL mode (readers - the report run, `reports status` - never
 * block the writer), synchronous=NORMAL (a crash may lose the last
 * evaluations, never corrupt the file; these rows are statistics, the mail
 * itself is fsynced by the queue).
 *
 * Migrations: schema_migrations holds the versions applied; each step of
 * reports_sqlite_migrations runs once, in its own transaction, at start-up.
 * A database from a newer mxgate (a version above ours) is refused.
 *
 * The writer's two INSERT statements are prepared once per connection
 * (sq_insert, kept until close): its batches are many and small.
 *
 * Ownership: the handle is a struct sq_handle (the sqlite3 * and those
 * statements) freed by close().
 * Diagnostics: errors go back in err with SQLite's message.
 */
#include "reports-internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

#include "util.h"

/* The schema, one step per version (index + 1).  The same tables and
 * columns serve the PostgreSQL backend. */
static const char *const reports_sqlite_migrations[] = {
    /* 1: evaluations, their DKIM results, dropped-row counts */
    "CREATE TABLE evaluation ("
    " id INTEGER PRIMARY KEY,"
    " t INTEGER NOT NULL,"
    " source_ip TEXT NOT NULL,"
    " header_from TEXT NOT NULL,"
    " envelope_from TEXT,"
    " envelope_to TEXT,"
    " dmarc TEXT NOT NULL,"
    " spf_domain TEXT, spf_result TEXT, spf_scope TEXT,"
    " dkim_aligned INTEGER NOT NULL, spf_aligned INTEGER NOT NULL,"
    " policy_domain TEXT, p TEXT, sp TEXT, np TEXT, adkim TEXT, aspf TEXT,"
    " testing TEXT, psd TEXT, pct INTEGER, discovery_method TEXT,"
    " disposition TEXT NOT NULL, override_type TEXT, override_comment TEXT,"
    " reported INTEGER);"
    "CREATE INDEX evaluation_domain_t ON evaluation(header_from, t);"
    "CREATE INDEX evaluation_t ON evaluation(t);"
    "CREATE TABLE evaluation_dkim ("
    " evaluation_id INTEGER NOT NULL REFERENCES evaluation(id) ON DELETE CASCADE,"
    " domain TEXT NOT NULL, selector TEXT, result TEXT NOT NULL);"
    "CREATE INDEX evaluation_dkim_id ON evaluation_dkim(evaluation_id);"
    "CREATE TABLE dropped (t INTEGER NOT NULL, n INTEGER NOT NULL);",
    /* 2: report runs and the reports they made (idempotent report ids) */
    "CREATE TABLE report_run (begin_t INTEGER NOT NULL, end_t INTEGER NOT NULL,"
    " done_at INTEGER NOT NULL);"
    "CREATE TABLE report (report_id TEXT PRIMARY KEY, domain TEXT NOT NULL,"
    " begin_t INTEGER NOT NULL, end_t INTEGER NOT NULL, created_at INTEGER NOT NULL);",
    /* 3: the outbox - report messages made in the run's transaction,
     * marked once mxgate's queue holds them (crash: re-queued, not lost) */
    "CREATE TABLE outbox (report_id TEXT NOT NULL, rcpt TEXT NOT NULL, sender TEXT NOT NULL,"
    " msg BLOB NOT NULL, queued INTEGER NOT NULL DEFAULT 0, claimed_at INTEGER,"
    " PRIMARY KEY (report_id, rcpt));"
    "CREATE TABLE refused (t INTEGER NOT NULL, domain TEXT NOT NULL, rcpt TEXT NOT NULL,"
    " reason TEXT NOT NULL);",
    /* 4: reports other organisations mail to our report addresses
     * (issue 15): DMARC aggregate and TLS-RPT, each stored once per
     * (org_name, report_id); refused inputs kept raw with the error */
    "CREATE TABLE inbound_dmarc (id INTEGER PRIMARY KEY, org_name TEXT NOT NULL,"
    " email TEXT, report_id TEXT NOT NULL, domain TEXT NOT NULL, p TEXT,"
    " begin_t INTEGER NOT NULL, end_t INTEGER NOT NULL, received_t INTEGER NOT NULL,"
    " rcpt TEXT, qid TEXT, UNIQUE (org_name, report_id));"
    "CREATE INDEX inbound_dmarc_domain ON inbound_dmarc(domain, begin_t);"
    "CREATE TABLE inbound_dmarc_rec (report INTEGER NOT NULL REFERENCES inbound_dmarc(id)"
    " ON DELETE CASCADE, source_ip TEXT NOT NULL, count INTEGER NOT NULL,"
    " disposition TEXT, dkim TEXT, spf TEXT, header_from TEXT, dkim_domain TEXT,"
    " dkim_result TEXT, spf_domain TEXT, spf_result TEXT);"
    "CREATE INDEX inbound_dmarc_rec_report ON inbound_dmarc_rec(report);"
    "CREATE TABLE inbound_tlsrpt (id INTEGER PRIMARY KEY, org_name TEXT NOT NULL,"
    " report_id TEXT NOT NULL, contact TEXT, begin_t INTEGER NOT NULL,"
    " end_t INTEGER NOT NULL, received_t INTEGER NOT NULL, rcpt TEXT, qid TEXT,"
    " UNIQUE (org_name, report_id));"
    "CREATE TABLE inbound_tlsrpt_policy (report INTEGER NOT NULL REFERENCES"
    " inbound_tlsrpt(id) ON DELETE CASCADE, policy_type TEXT, policy_domain TEXT,"
    " success INTEGER NOT NULL, failure INTEGER NOT NULL, failures TEXT);"
    "CREATE TABLE inbound_refused (t INTEGER NOT NULL, rcpt TEXT, qid TEXT,"
    " error TEXT NOT NULL, raw BLOB);",
    /* 5: the sources the postmaster approved on the dashboard (issue 15) */
    ("CREATE TABLE inbound_approved (domain TEXT NOT NULL, source_ip TEXT NOT NULL,"
     " approved_at INTEGER NOT NULL, PRIMARY KEY (domain, source_ip));"),
    /* 6: the postmaster's last look per domain ("mark as seen" on the
     * dashboard): sources first reported after seen_t are new */
    ("CREATE TABLE inbound_seen (domain TEXT PRIMARY KEY, seen_t INTEGER NOT NULL,"
     " marked_at INTEGER NOT NULL);"),
};

/* The backend handle. */
struct sq_handle {
	sqlite3 *db;
	sqlite3_stmt *ev, *dk; /* sq_insert's, prepared on first use */
};

/* sq_db - the connection of handle h. */
static sqlite3 *sq_db(void *h)
{
	return ((struct sq_handle *)h)->db;
}

/* sq_exec - run sql; 0/-1 + err. */
static int sq_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* sq_version - highest applied migration, 0 for a new file. */
static int sq_version(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;

	if (sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
	                       &st, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
out:
	sqlite3_finalize(st);
	return v;
}

/* sq_schema_version - the backend's schema_version. */
static int sq_schema_version(void *h)
{
	return sq_version(sq_db(h));
}

/* sq_migrate - apply the steps above the current version. */
static int sq_migrate(sqlite3 *db, char *err, size_t errlen)
{
	const int nsteps =
	    (int)(sizeof(reports_sqlite_migrations) / sizeof(reports_sqlite_migrations[0]));
	int v;

	if (sq_exec(db,
	            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
	            " applied_at INTEGER NOT NULL)",
	            err, errlen) < 0)
		return -1;
	if ((v = sq_version(db)) < 0) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
		return -1;
	}
	if (v > nsteps) {
		snprintf(err, errlen, "schema version %d is newer than this mxgate's %d", v,
		         nsteps);
		return -1;
	}
	for (int i = v; i < nsteps; i++) {
		char bump[128];
		snprintf(bump, sizeof(bump),
		         "INSERT INTO schema_migrations VALUES (%d, strftime('%%s','now'))", i + 1);
		if (sq_exec(db, "BEGIN IMMEDIATE", err, errlen) < 0)
			return -1;
		if (sq_exec(db, reports_sqlite_migrations[i], err, errlen) < 0 ||
		    sq_exec(db, bump, err, errlen) < 0) {
			char e2[8];
			(void)sq_exec(db, "ROLLBACK", e2, sizeof(e2));
			return -1;
		}
		if (sq_exec(db, "COMMIT", err, errlen) < 0)
			return -1;
		util_log_info("- reports migration=%d applied", i + 1);
	}
	return 0;
}

/* sq_open - open (create) the file, WAL, migrate. */
static void *sq_open(const char *target, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	struct sq_handle *h = NULL;

	if (sqlite3_open_v2(target, &db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", target, db ? sqlite3_errmsg(db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(db, 5000);
	if (sq_exec(db, "PRAGMA journal_mode=WAL", err, errlen) < 0 ||
	    sq_exec(db, "PRAGMA synchronous=NORMAL", err, errlen) < 0 ||
	    sq_exec(db, "PRAGMA foreign_keys=ON", err, errlen) < 0 ||
	    sq_migrate(db, err, errlen) < 0)
		goto fail;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	h->db = db;
	return h;
fail:
	sqlite3_close(db);
	return NULL;
}

/* sq_text - bind s, or NULL for NULL / "". */
static void sq_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL || s[0] == '\0')
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* sq_prepare - *st prepared once for the connection's life. */
static int sq_prepare(sqlite3 *db, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (*st != NULL)
		return 0;
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
		*st = NULL;
		return -1;
	}
	return 0;
}

/* sq_insert - rows and their DKIM results in one transaction. */
static int sq_insert(void *h, struct reports_row *const *rows, size_t n, char *err, size_t errlen)
{
	struct sq_handle *sh = h;
	sqlite3 *db = sh->db;
	sqlite3_stmt *ev, *dk;
	int rc = -1;
	bool in_tx = false;

	if (sq_prepare(db, &sh->ev,
	               "INSERT INTO evaluation (t, source_ip, header_from, envelope_from,"
	               " envelope_to, dmarc, spf_domain, spf_result, spf_scope, dkim_aligned,"
	               " spf_aligned, policy_domain, p, sp, np, adkim, aspf, testing, psd, pct,"
	               " discovery_method, disposition, override_type, override_comment) VALUES"
	               " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
	               err, errlen) < 0 ||
	    sq_prepare(db, &sh->dk,
	               "INSERT INTO evaluation_dkim (evaluation_id, domain, selector, result)"
	               " VALUES (?,?,?,?)",
	               err, errlen) < 0)
		return -1;
	ev = sh->ev;
	dk = sh->dk;
	if (sq_exec(db, "BEGIN", err, errlen) < 0)
		goto out;
	in_tx = true;
	for (size_t i = 0; i < n; i++) {
		const struct reports_row *r = rows[i];
		sqlite3_reset(ev);
		sqlite3_bind_int64(ev, 1, r->t);
		sq_text(ev, 2, r->ip);
		sq_text(ev, 3, r->header_from);
		sq_text(ev, 4, r->envelope_from);
		sq_text(ev, 5, r->envelope_to);
		sq_text(ev, 6, r->dmarc);
		sq_text(ev, 7, r->spf_domain);
		sq_text(ev, 8, r->spf_result);
		sq_text(ev, 9, r->spf_scope);
		sqlite3_bind_int(ev, 10, r->dkim_aligned);
		sqlite3_bind_int(ev, 11, r->spf_aligned);
		sq_text(ev, 12, r->record_domain);
		sq_text(ev, 13, r->p);
		sq_text(ev, 14, r->sp);
		sq_text(ev, 15, r->np);
		sq_text(ev, 16, r->adkim);
		sq_text(ev, 17, r->aspf);
		sq_text(ev, 18, r->t_tag);
		sq_text(ev, 19, r->psd);
		if (r->pct < 0)
			sqlite3_bind_null(ev, 20);
		else
			sqlite3_bind_int(ev, 20, r->pct);
		sq_text(ev, 21, r->discovery);
		sq_text(ev, 22, r->disposition);
		sq_text(ev, 23, r->override);
		sq_text(ev, 24, r->override_comment);
		if (sqlite3_step(ev) != SQLITE_DONE) {
			snprintf(err, errlen, "%s", sqlite3_errmsg(db));
			goto out;
		}
		sqlite3_int64 id = sqlite3_last_insert_rowid(db);
		for (size_t k = 0; k < r->ndkim; k++) {
			sqlite3_reset(dk);
			sqlite3_bind_int64(dk, 1, id);
			sq_text(dk, 2, r->dkim[k].domain);
			sq_text(dk, 3, r->dkim[k].selector);
			sq_text(dk, 4, r->dkim[k].result);
			if (sqlite3_step(dk) != SQLITE_DONE) {
				snprintf(err, errlen, "%s", sqlite3_errmsg(db));
				goto out;
			}
		}
	}
	if (sq_exec(db, "COMMIT", err, errlen) < 0)
		goto out;
	in_tx = false;
	rc = 0;
out:
	if (in_tx) {
		char e2[8];
		(void)sq_exec(db, "ROLLBACK", e2, sizeof(e2));
	}
	/* kept prepared; reset releases their read of the tables and bindings
	 * point at the rows the caller frees */
	sqlite3_reset(ev);
	sqlite3_clear_bindings(ev);
	sqlite3_reset(dk);
	sqlite3_clear_bindings(dk);
	return rc;
}

/* sq_add_drops - remember n dropped rows at t. */
static int sq_add_drops(void *h, int64_t t, uint64_t n, char *err, size_t errlen)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "INSERT INTO dropped VALUES (%lld, %llu)", (long long)t,
	         (unsigned long long)n);
	return sq_exec(sq_db(h), sql, err, errlen);
}

/* sq_col - a column as a malloc'd string, NULL for NULL. */
static char *sq_col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? util_xstrdup((const char *)t) : NULL;
}

/* sq_domains - distinct policy domains with evaluations in the period. */
static int sq_domains(void *h, int64_t begin, int64_t end, struct util_strlist *out, char *err,
                      size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1, s;

	if (sqlite3_prepare_v2(db,
	                       "SELECT DISTINCT policy_domain FROM evaluation WHERE t >= ? AND"
	                       " t < ? AND policy_domain IS NOT NULL ORDER BY 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, 1, begin);
	sqlite3_bind_int64(st, 2, end);
	while ((s = sqlite3_step(st)) == SQLITE_ROW)
		util_strlist_add(out, (const char *)sqlite3_column_text(st, 0));
	if (s == SQLITE_DONE)
		rc = 0;
out:
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/* sq_split_dkim - "d\x1fs\x1fr\x1e..." (the GROUP BY key) into the record. */
static void sq_split_dkim(const char *s, struct reports_agg_rec *r)
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

/* sq_aggregate - RFC 9990 3.1: one record per distinct (source IP,
 * identifiers, SPF and DKIM results, alignment, disposition, override). */
static int sq_aggregate(void *h, const char *domain, int64_t begin, int64_t end,
                        struct reports_agg *out, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1, s;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->domain = util_xstrdup(domain);
	/* the policy published: the newest evaluation's */
	if (sqlite3_prepare_v2(db,
	                       "SELECT p, sp, np, adkim, aspf, testing, discovery_method FROM"
	                       " evaluation WHERE policy_domain = ? AND t >= ? AND t < ?"
	                       " ORDER BY t DESC, id DESC LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, begin);
	sqlite3_bind_int64(st, 3, end);
	if ((s = sqlite3_step(st)) == SQLITE_ROW) {
		out->p = sq_col(st, 0);
		out->sp = sq_col(st, 1);
		out->np = sq_col(st, 2);
		out->adkim = sq_col(st, 3);
		out->aspf = sq_col(st, 4);
		out->testing = sq_col(st, 5);
		out->discovery = sq_col(st, 6);
	} else if (s != SQLITE_DONE) {
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(
	        db,
	        "SELECT source_ip, disposition, dmarc = 'pass', dkim_aligned, spf_aligned,"
	        " override_type, override_comment, envelope_to, envelope_from, header_from,"
	        " spf_domain, spf_result, spf_scope, dk, count(*) FROM (SELECT e.*, (SELECT"
	        " group_concat(x, char(30)) FROM (SELECT d.domain || char(31) ||"
	        " coalesce(d.selector, '') || char(31) || d.result AS x FROM evaluation_dkim d"
	        " WHERE d.evaluation_id = e.id ORDER BY d.domain, d.selector, d.result)) AS dk"
	        " FROM evaluation e WHERE policy_domain = ? AND t >= ? AND t < ?)"
	        " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14"
	        " ORDER BY 15 DESC, 1, 2",
	        -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, begin);
	sqlite3_bind_int64(st, 3, end);
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		if (out->n == cap) {
			cap = cap ? cap * 2 : 16;
			struct reports_agg_rec *n = realloc(out->recs, cap * sizeof(*n));
			if (n == NULL)
				goto out;
			out->recs = n;
		}
		struct reports_agg_rec *r = &out->recs[out->n++];
		memset(r, 0, sizeof(*r));
		r->ip = sq_col(st, 0);
		r->disposition = sq_col(st, 1);
		r->dmarc_pass = sqlite3_column_int(st, 2) != 0;
		r->dkim_pass = sqlite3_column_int(st, 3) != 0;
		r->spf_pass = sqlite3_column_int(st, 4) != 0;
		r->override = sq_col(st, 5);
		r->override_comment = sq_col(st, 6);
		r->envelope_to = sq_col(st, 7);
		r->envelope_from = sq_col(st, 8);
		r->header_from = sq_col(st, 9);
		r->spf_domain = sq_col(st, 10);
		r->spf_result = sq_col(st, 11);
		r->spf_scope = sq_col(st, 12);
		sq_split_dkim((const char *)sqlite3_column_text(st, 13), r);
		r->count = (uint64_t)sqlite3_column_int64(st, 14);
	}
	if (s != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT coalesce(sum(n), 0) FROM dropped WHERE t >= ? AND t < ?",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, 1, begin);
	sqlite3_bind_int64(st, 2, end);
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	out->dropped = (uint64_t)sqlite3_column_int64(st, 0);
	rc = 0;
out:
	if (rc < 0) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
		reports_agg_clear(out);
	}
	sqlite3_finalize(st);
	return rc;
}

/* sq_run_begin - end of the last run, else the oldest evaluation. */
static int sq_run_begin(void *h, int64_t *begin, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db,
	                       "SELECT coalesce((SELECT max(end_t) FROM report_run),"
	                       " (SELECT min(t) FROM evaluation), 0)",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		*begin = sqlite3_column_int64(st, 0);
		rc = 0;
	} else {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	return rc;
}

/* sq_add_run - remember that [begin, end) was reported. */
static int sq_add_run(void *h, int64_t begin, int64_t end, char *err, size_t errlen)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
	         "INSERT INTO report_run VALUES (%lld, %lld, strftime('%%s','now'))",
	         (long long)begin, (long long)end);
	return sq_exec(sq_db(h), sql, err, errlen);
}

/* sq_add_report - one report; the primary key refuses a second copy. */
static int sq_add_report(void *h, const char *report_id, const char *domain, int64_t begin,
                         int64_t end, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db, "INSERT INTO report VALUES (?, ?, ?, ?, strftime('%s','now'))",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, report_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, begin);
		sqlite3_bind_int64(st, 4, end);
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = 0;
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/* Evaluations deleted per statement by sq_prune: each DELETE is a write
 * transaction of its own, short enough for the writer thread's batches
 * (5 s busy timeout) to get in between. */
#define SQ_PRUNE_CHUNK 5000

/* sq_prune - retention (see reports-internal.h): evaluations before the
 * cut-off go in chunks (foreign keys cascade to evaluation_dkim), then
 * drop counts, reports, refusals and runs of that age - the newest run
 * stays, it is where the next run begins - and the outbox rows of queued
 * reports whose report row is gone. */
static int sq_prune(void *h, int64_t before, uint64_t *n, char *err, size_t errlen)
{
	static const char *const rest[] = {
	    "DELETE FROM dropped WHERE t < %lld",
	    "DELETE FROM report WHERE end_t < %lld",
	    "DELETE FROM refused WHERE t < %lld",
	    /* parenthesised: one element, not a missing comma */
	    ("DELETE FROM report_run WHERE end_t < %lld AND"
	     " end_t < (SELECT max(end_t) FROM report_run)"),
	};
	sqlite3 *db = sq_db(h);
	char sql[200];
	int changed;

	*n = 0;
	snprintf(sql, sizeof(sql),
	         "DELETE FROM evaluation WHERE id IN (SELECT id FROM evaluation WHERE t < %lld"
	         " LIMIT %d)",
	         (long long)before, SQ_PRUNE_CHUNK);
	do {
		if (sq_exec(db, sql, err, errlen) < 0)
			return -1;
		changed = sqlite3_changes(db);
		*n += (uint64_t)changed;
	} while (changed == SQ_PRUNE_CHUNK);
	for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++) {
		snprintf(sql, sizeof(sql), rest[i], (long long)before);
		if (sq_exec(db, sql, err, errlen) < 0)
			return -1;
	}
	return sq_exec(db,
	               "DELETE FROM outbox WHERE queued = 1 AND report_id NOT IN"
	               " (SELECT report_id FROM report)",
	               err, errlen);
}

/* sq_prune_inbound - retention of the reports received (foreign keys
 * cascade to their rows). */
static int sq_prune_inbound(void *h, int64_t before, int64_t refused_before, uint64_t *n,
                            char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	char sql[160];

	*n = 0;
	snprintf(sql, sizeof(sql), "DELETE FROM inbound_dmarc WHERE received_t < %lld",
	         (long long)before);
	if (sq_exec(db, sql, err, errlen) < 0)
		return -1;
	*n = (uint64_t)sqlite3_changes(db);
	snprintf(sql, sizeof(sql), "DELETE FROM inbound_tlsrpt WHERE received_t < %lld",
	         (long long)before);
	if (sq_exec(db, sql, err, errlen) < 0)
		return -1;
	*n += (uint64_t)sqlite3_changes(db);
	snprintf(sql, sizeof(sql), "DELETE FROM inbound_refused WHERE t < %lld",
	         (long long)refused_before);
	return sq_exec(db, sql, err, errlen);
}

/* sq_status - pending evaluations per domain since the last run, the last
 * report per domain, drops since the last run. */
static int sq_status(void *h, struct util_buf *out, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int64_t begin = 0;
	int rc = -1, s;

	if (sq_run_begin(h, &begin, err, errlen) < 0)
		return -1;
	util_buf_printf(out, "last-run-end: %lld\n", (long long)begin);
	if (sqlite3_prepare_v2(db,
	                       "SELECT coalesce(policy_domain, '(no record)'), count(*) FROM"
	                       " evaluation WHERE t >= ? GROUP BY 1 ORDER BY 1",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, 1, begin);
	while ((s = sqlite3_step(st)) == SQLITE_ROW)
		util_buf_printf(out, "pending: %s evaluations=%lld\n", sqlite3_column_text(st, 0),
		                (long long)sqlite3_column_int64(st, 1));
	if (s != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(
	        db, "SELECT domain, max(end_t), count(*) FROM report GROUP BY 1 ORDER BY 1", -1,
	        &st, NULL) != SQLITE_OK)
		goto out;
	while ((s = sqlite3_step(st)) == SQLITE_ROW)
		util_buf_printf(out, "sent: %s last-period-end=%lld reports=%lld\n",
		                sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1),
		                (long long)sqlite3_column_int64(st, 2));
	if (s != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db,
	                       "SELECT domain, rcpt, reason, count(*), max(t) FROM refused"
	                       " GROUP BY 1, 2, 3 ORDER BY 1, 2",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	while ((s = sqlite3_step(st)) == SQLITE_ROW)
		util_buf_printf(out, "refused: %s rua=%s reason=%s runs=%lld last=%lld\n",
		                sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
		                sqlite3_column_text(st, 2), (long long)sqlite3_column_int64(st, 3),
		                (long long)sqlite3_column_int64(st, 4));
	if (s != SQLITE_DONE)
		goto out;
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(db, "SELECT coalesce(sum(n), 0) FROM dropped WHERE t >= ?", -1, &st,
	                       NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(st, 1, begin);
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	util_buf_printf(out, "dropped-since-last-run: %lld\n",
	                (long long)sqlite3_column_int64(st, 0));
	rc = 0;
out:
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/* sq_tx - BEGIN IMMEDIATE (the write lock at once), COMMIT, ROLLBACK,
 * or 3: BEGIN (deferred: a read snapshot from the first SELECT, which
 * in WAL mode never blocks the writer). */
static int sq_tx(void *h, int what, char *err, size_t errlen)
{
	return sq_exec(sq_db(h),
	               what == 0   ? "BEGIN IMMEDIATE"
	               : what == 1 ? "COMMIT"
	               : what == 3 ? "BEGIN"
	                           : "ROLLBACK",
	               err, errlen);
}

static int sq_add_outbox(void *h, const struct reports_out *o, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO outbox (report_id, rcpt, sender, msg) VALUES"
	                       " (?, ?, ?, ?)",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, o->report_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, o->rcpt, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, o->sender, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 4, o->msg, (int)o->len, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = 0;
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

static int sq_outbox_pending(void *h, struct reports_out **list, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int s, rc = -1;

	/* one process owns this file and its runs are serialized: whatever is
	 * not queued is ours (left by this run or by a crashed process) */
	if (sqlite3_prepare_v2(db,
	                       "UPDATE outbox SET claimed_at = strftime('%s','now') WHERE"
	                       " queued = 0 RETURNING report_id, rcpt, sender, msg",
	                       -1, &st, NULL) != SQLITE_OK)
		goto out;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		struct reports_out *o = calloc(1, sizeof(*o));
		const void *b = sqlite3_column_blob(st, 3);
		int n = sqlite3_column_bytes(st, 3);
		if (o == NULL || (o->msg = malloc((size_t)n + 1)) == NULL) {
			free(o);
			goto out;
		}
		memcpy(o->msg, b, (size_t)n);
		o->msg[n] = '\0';
		o->len = (size_t)n;
		o->report_id = sq_col(st, 0);
		o->rcpt = sq_col(st, 1);
		o->sender = sq_col(st, 2);
		o->next = *list;
		*list = o;
	}
	if (s == SQLITE_DONE)
		rc = 0;
out:
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

static int sq_add_refused(void *h, int64_t t, const char *domain, const char *rcpt,
                          const char *reason, char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db, "INSERT INTO refused VALUES (?, ?, ?, ?)", -1, &st, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_int64(st, 1, t);
		sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, rcpt, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = 0;
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

static int sq_mark_queued(void *h, const char *report_id, const char *rcpt, char *err,
                          size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	int rc = -1;

	/* the message goes: the queue has it; id and state stay (prune) */
	if (sqlite3_prepare_v2(db,
	                       "UPDATE outbox SET queued = 1, msg = x'' WHERE report_id = ? AND"
	                       " rcpt = ?",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, report_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, rcpt, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = 0;
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/* sq_run1 - prepare sql, bind text/int64 per fmt ('s', 'i', 'b' blob with
 * its length next), step once; 0/-1 + err. *id = the new row id. */
static int sq_run1(sqlite3 *db, int64_t *id, char *err, size_t errlen, const char *sql,
                   const char *fmt, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int rc = -1, col = 1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto cleanup;
	va_start(ap, fmt);
	for (const char *f = fmt; *f; f++, col++) {
		if (*f == 's') {
			sqlite3_bind_text(st, col, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
		} else if (*f == 'i') {
			sqlite3_bind_int64(st, col, va_arg(ap, int64_t));
		} else {
			const void *b = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);
			sqlite3_bind_blob(st, col, b, (int)n, SQLITE_TRANSIENT);
		}
	}
	va_end(ap);
	if (sqlite3_step(st) == SQLITE_DONE)
		rc = 0;
	if (id != NULL)
		*id = sqlite3_changes(db) > 0 ? sqlite3_last_insert_rowid(db) : 0;
cleanup:
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/* sq_add_inbound - the reports of one received message, in one
 * transaction; a report already stored (org_name, report_id) is skipped. */
static int sq_add_inbound(void *h, const struct reports_inbound *in, int64_t t, const char *rcpt,
                          const char *qid, const char *raw, size_t rawlen, int *dups, char *err,
                          size_t errlen)
{
	sqlite3 *db = sq_db(h);
	int64_t id;

	*dups = 0;
	if (sq_exec(db, "BEGIN IMMEDIATE", err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < in->ndmarc; i++) {
		const struct reports_in_dmarc *d = &in->dmarc[i];
		if (sq_run1(db, &id, err, errlen,
		            "INSERT OR IGNORE INTO inbound_dmarc (org_name, email, report_id, domain,"
		            " p, begin_t, end_t, received_t, rcpt, qid) VALUES (?,?,?,?,?,?,?,?,?,?)",
		            "sssssiiiss", d->org_name, d->email, d->report_id, d->domain, d->p,
		            d->begin, d->end, t, rcpt, qid) < 0)
			goto fail;
		if (id == 0) {
			(*dups)++;
			continue;
		}
		for (size_t j = 0; j < d->n; j++) {
			const struct reports_in_rec *r = &d->recs[j];
			if (sq_run1(db, NULL, err, errlen,
			            "INSERT INTO inbound_dmarc_rec VALUES (?,?,?,?,?,?,?,?,?,?,?)",
			            "isissssssss", id, r->ip, (int64_t)r->count, r->disposition, r->dkim,
			            r->spf, r->header_from, r->dkim_domain, r->dkim_result, r->spf_domain,
			            r->spf_result) < 0)
				goto fail;
		}
	}
	for (size_t i = 0; i < in->ntlsrpt; i++) {
		const struct reports_in_tlsrpt *tr = &in->tlsrpt[i];
		if (sq_run1(db, &id, err, errlen,
		            "INSERT OR IGNORE INTO inbound_tlsrpt (org_name, report_id, contact,"
		            " begin_t, end_t, received_t, rcpt, qid) VALUES (?,?,?,?,?,?,?,?)",
		            "sssiiiss", tr->org_name, tr->report_id, tr->contact, tr->begin, tr->end, t,
		            rcpt, qid) < 0)
			goto fail;
		if (id == 0) {
			(*dups)++;
			continue;
		}
		for (size_t j = 0; j < tr->n; j++) {
			const struct reports_in_tlspol *p = &tr->pols[j];
			if (sq_run1(db, NULL, err, errlen,
			            "INSERT INTO inbound_tlsrpt_policy VALUES (?,?,?,?,?,?)", "issiis", id, p->policy_type, p->policy_domain, (int64_t)p->success,
			            (int64_t)p->failure, p->failures) < 0)
				goto fail;
		}
	}
	/* the raw message once, with its first error: a copy per refused part
	 * let one 20 MB message with 64 broken parts write 1.3 GB (red team) */
	for (size_t i = 0; i < in->errors.n; i++)
		if (sq_run1(db, NULL, err, errlen, "INSERT INTO inbound_refused VALUES (?,?,?,?,?)",
		            "isssb", t, rcpt, qid, in->errors.v[i], i == 0 ? raw : NULL,
		            i == 0 && raw ? rawlen : (size_t)0) < 0)
			goto fail;
	return sq_exec(db, "COMMIT", err, errlen);
fail:
	(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* sq_query - see reports-internal.h (the dashboard's statements). */
static int sq_query(void *h, const char *sql, int n, const char *const *params,
                    int (*cb)(void *arg, int ncol, const char *const *vals), void *arg,
                    char *err, size_t errlen)
{
	sqlite3 *db = sq_db(h);
	sqlite3_stmt *st = NULL;
	const char *vals[32];
	int rc = -1, s;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto cleanup;
	for (int i = 0; i < n; i++)
		if (params[i] == NULL)
			sqlite3_bind_null(st, i + 1);
		else
			sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_STATIC);
	int ncol = sqlite3_column_count(st);
	if (ncol > (int)(sizeof(vals) / sizeof(vals[0])))
		ncol = (int)(sizeof(vals) / sizeof(vals[0]));
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		for (int c = 0; c < ncol; c++)
			vals[c] = (const char *)sqlite3_column_text(st, c);
		if (cb != NULL && cb(arg, ncol, vals) < 0) {
			snprintf(err, errlen, "stopped");
			sqlite3_finalize(st);
			return -1;
		}
	}
	if (s == SQLITE_DONE)
		rc = 0;
cleanup:
	if (rc < 0)
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

static void sq_close(void *h)
{
	struct sq_handle *sh = h;

	if (sh == NULL)
		return;
	sqlite3_finalize(sh->ev);
	sqlite3_finalize(sh->dk);
	sqlite3_close(sh->db);
	free(sh);
}

const struct reports_backend reports_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .insert = sq_insert,
    .add_drops = sq_add_drops,
    .domains = sq_domains,
    .aggregate = sq_aggregate,
    .run_begin = sq_run_begin,
    .add_run = sq_add_run,
    .add_report = sq_add_report,
    .prune = sq_prune,
    .tx = sq_tx,
    .add_outbox = sq_add_outbox,
    .outbox_pending = sq_outbox_pending,
    .mark_queued = sq_mark_queued,
    .add_refused = sq_add_refused,
    .add_inbound = sq_add_inbound,
    .prune_inbound = sq_prune_inbound,
    .query = sq_query,
    .status = sq_status,
    .schema_version = sq_schema_version,
    .close = sq_close,
};
