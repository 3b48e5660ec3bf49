/*
 * test_reports.c - the report store below the writer thread: versioned
 * migrations of the SQLite backend (a new file, a second start, a file from
 * a newer mxgate), the row a set of DMARC facts becomes, and rows written
 * in one batch read back column by column (IPv6 source, several DKIM
 * signatures, no SPF, unknown tags as NULL).  Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reports-internal.h"

static char *tmpfile_path(void)
{
	char tmpl[] = "/tmp/mxreports-XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	close(fd);
	unlink(tmpl);
	return strdup(tmpl);
}

static void remove_db(const char *p)
{
	char b[300];
	unlink(p);
	snprintf(b, sizeof(b), "%s-wal", p);
	unlink(b);
	snprintf(b, sizeof(b), "%s-shm", p);
	unlink(b);
}

/* query_str - the one text value sql returns ("NULL" for NULL). */
static void query_str(const char *path, const char *sql, char *out, size_t outlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const unsigned char *t = sqlite3_column_text(st, 0);
	snprintf(out, outlen, "%s", t ? (const char *)t : "NULL");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_migrations(void **state)
{
	(void)state;
	char *path = tmpfile_path(), err[256] = "", v[64];
	const struct reports_backend *be = &reports_sqlite_backend;

	void *db = be->open(path, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(be->schema_version(db), REPORTS_SCHEMA_VERSION);
	be->close(db);
	/* a second start applies nothing again */
	db = be->open(path, err, sizeof(err));
	assert_non_null(db);
	be->close(db);
	query_str(path, "SELECT count(*) FROM schema_migrations", v, sizeof(v));
	assert_string_equal(v, "1");
	query_str(path, "PRAGMA journal_mode", v, sizeof(v));
	assert_string_equal(v, "wal");
	/* a store written by a newer mxgate is refused, not downgraded */
	sqlite3 *raw = NULL;
	assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "INSERT INTO schema_migrations VALUES (99, 0)", NULL,
	                              NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(raw);
	assert_null(be->open(path, err, sizeof(err)));
	assert_non_null(strstr(err, "newer"));
	remove_db(path);
	free(path);
}

/* One case: facts in, the envelope_to and the stored columns out. */
struct row_case {
	const char *ip, *from, *env_from, *rcpt, *dmarc, *spf_domain, *spf_result;
	size_t ndkim;
	const char *dkim[3][3];
	bool dkim_aligned, spf_aligned;
	const char *p, *np, *t;
	int pct;
	const char *disposition, *override;
	/* expected */
	const char *envelope_to;
	const char *dkim_rows; /* group_concat "d/s/r" in insertion order */
};

static const struct row_case row_cases[] = {
    {"192.0.2.1", "example.org", "example.org", "u@Example.TEST", "pass", "example.org", "pass", 0,
     {{0}}, false, true, "reject", "", "", -1, "none", NULL, "example.test", "NULL"},
    {"2001:db8::25", "example.net", "", "<x@MX.Example.NET>", "fail", NULL, NULL, 2,
     {{"example.net", "s1", "fail"}, {"other.example", "s2", "pass"}}, false, false, "quarantine",
     "reject", "y", 50, "quarantine", "sampled_out", "mx.example.net",
     "example.net/s1/fail,other.example/s2/pass"},
    {"198.51.100.7", "bücher.example", "bounce.example", NULL, "fail", "bounce.example", "softfail",
     1, {{"bücher.example", "k", "pass"}}, true, false, "reject", "", "", -1, "none",
     "trusted_forwarder", "NULL", "bücher.example/k/pass"},
};

static void test_rows_roundtrip(void **state)
{
	(void)state;
	char *path = tmpfile_path(), err[256] = "";
	const struct reports_backend *be = &reports_sqlite_backend;
	const size_t n = sizeof(row_cases) / sizeof(row_cases[0]);
	struct reports_row *rows[8];

	void *db = be->open(path, err, sizeof(err));
	assert_non_null(db);
	for (size_t i = 0; i < n; i++) {
		const struct row_case *c = &row_cases[i];
		struct policy_dmarc_facts f;
		memset(&f, 0, sizeof(f));
		snprintf(f.ip, sizeof(f.ip), "%s", c->ip);
		f.header_from = c->from;
		f.envelope_from = c->env_from;
		f.dmarc = c->dmarc;
		f.spf_domain = c->spf_domain;
		f.spf_result = c->spf_result;
		f.spf_scope = c->spf_domain ? "mfrom" : NULL;
		f.ndkim = c->ndkim;
		for (size_t k = 0; k < c->ndkim; k++) {
			f.dkim[k].domain = c->dkim[k][0];
			f.dkim[k].selector = c->dkim[k][1];
			f.dkim[k].result = c->dkim[k][2];
		}
		f.dkim_aligned = c->dkim_aligned;
		f.spf_aligned = c->spf_aligned;
		f.record_domain = c->from;
		snprintf(f.p, sizeof(f.p), "%s", c->p);
		snprintf(f.np, sizeof(f.np), "%s", c->np);
		snprintf(f.t, sizeof(f.t), "%s", c->t);
		f.pct = c->pct;
		f.disposition = c->disposition;
		f.override = c->override;
		rows[i] = reports_row_from_facts(&f, c->rcpt, 1000 + (int64_t)i);
		assert_non_null(rows[i]);
	}
	assert_int_equal(be->insert(db, rows, n, err, sizeof(err)), 0);
	assert_int_equal(be->add_drops(db, 5, 7, err, sizeof(err)), 0);
	be->close(db);
	for (size_t i = 0; i < n; i++)
		reports_row_free(rows[i]);

	for (size_t i = 0; i < n; i++) {
		const struct row_case *c = &row_cases[i];
		char sql[512], v[512], want[512];
		struct {
			const char *col, *want;
		} cols[] = {
		    {"source_ip", c->ip},
		    {"header_from", c->from},
		    {"envelope_from", c->env_from[0] ? c->env_from : "NULL"},
		    {"envelope_to", c->envelope_to},
		    {"dmarc", c->dmarc},
		    {"spf_domain", c->spf_domain ? c->spf_domain : "NULL"},
		    {"p", c->p},
		    {"np", c->np[0] ? c->np : "NULL"},
		    {"testing", c->t[0] ? c->t : "NULL"},
		    {"sp", "NULL"},
		    {"disposition", c->disposition},
		    {"override_type", c->override ? c->override : "NULL"},
		    {"dkim_aligned", c->dkim_aligned ? "1" : "0"},
		    {"spf_aligned", c->spf_aligned ? "1" : "0"},
		};
		for (size_t k = 0; k < sizeof(cols) / sizeof(cols[0]); k++) {
			snprintf(sql, sizeof(sql), "SELECT %s FROM evaluation WHERE t = %zu",
			         cols[k].col, 1000 + i);
			query_str(path, sql, v, sizeof(v));
			snprintf(want, sizeof(want), "%s", cols[k].want);
			if (strcmp(v, want) != 0)
				fail_msg("case %zu column %s: got %s want %s", i, cols[k].col, v, want);
		}
		snprintf(sql, sizeof(sql), "SELECT coalesce(pct, -1) FROM evaluation WHERE t = %zu",
		         1000 + i);
		query_str(path, sql, v, sizeof(v));
		assert_int_equal(atoi(v), c->pct);
		snprintf(sql, sizeof(sql),
		         "SELECT coalesce(group_concat(d.domain || '/' || d.selector || '/' || "
		         "d.result, ','), 'NULL') FROM evaluation_dkim d JOIN evaluation e ON "
		         "e.id = d.evaluation_id WHERE e.t = %zu",
		         1000 + i);
		query_str(path, sql, v, sizeof(v));
		assert_string_equal(v, c->dkim_rows);
	}
	char v[64];
	query_str(path, "SELECT sum(n) FROM dropped", v, sizeof(v));
	assert_string_equal(v, "7");
	remove_db(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_migrations),
	    cmocka_unit_test(test_rows_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
