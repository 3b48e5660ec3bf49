/*
 * test_reports.c - the report store below the writer thread: versioned
 * migrations of the SQLite backend (a new file, a second start, a file from
 * a newer mxgate), the row a set of DMARC facts becomes, and rows written
 * in one batch read back column by column (IPv6 source, several DKIM
 * signatures, no SPF, unknown tags as NULL).  Aggregation (rows grouped by
 * source IP, identifiers, results and disposition; IPv6, IDN, several DKIM
 * signatures, an empty period, drops) and the XML, validated by libxml2
 * against the RFC 9990 schema in tests/data.  The store's writer thread
 * batching rows (woken on empty -> non-empty and at the fill mark only,
 * lingering for more): rows trickling in are written without a flush, a
 * fill mark ends a long linger, a flush and a close cut it short, and every
 * row reaches the file through the statements it keeps prepared.  Rows
 * the writer cannot write end up as drops in the dropped table (retried
 * when that write fails too), dated no earlier than the run barrier.
 * Retention of what the runs leave (reports, refusals, runs, queued
 * outbox messages) without losing where the next run begins.  The report
 * message's subject (Submitter: a domain name).
 * Table-driven.
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
#include <time.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

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
	assert_int_equal(atoi(v), REPORTS_SCHEMA_VERSION);
	query_str(path, "PRAGMA journal_mode", v, sizeof(v));
	assert_string_equal(v, "wal");
	/* a store written by a newer mxgate is refused, not downgraded */
	sqlite3 *raw = NULL;
	assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(raw, "INSERT INTO schema_migrations VALUES (99, 0)", NULL, NULL, NULL),
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
    {"192.0.2.1",
     "example.org",
     "example.org",
     "u@Example.TEST",
     "pass",
     "example.org",
     "pass",
     0,
     {{0}},
     false,
     true,
     "reject",
     "",
     "",
     -1,
     "none",
     NULL,
     "example.test",
     "NULL"},
    {"2001:db8::25",
     "example.net",
     "",
     "<x@MX.Example.NET>",
     "fail",
     NULL,
     NULL,
     2,
     {{"example.net", "s1", "fail"}, {"other.example", "s2", "pass"}},
     false,
     false,
     "quarantine",
     "reject",
     "y",
     50,
     "quarantine",
     "sampled_out",
     "mx.example.net",
     "example.net/s1/fail,other.example/s2/pass"},
    {"198.51.100.7",
     "bücher.example",
     "bounce.example",
     NULL,
     "fail",
     "bounce.example",
     "softfail",
     1,
     {{"bücher.example", "k", "pass"}},
     true,
     false,
     "reject",
     "",
     "",
     -1,
     "none",
     "trusted_forwarder",
     "NULL",
     "bücher.example/k/pass"},
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
				fail_msg("case %zu column %s: got %s want %s", i, cols[k].col, v,
				         want);
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

/* ------------------------------------------------------------ aggregation + XML */

/* One evaluation to store: t, ip, from, dmarc, dkim_aligned, spf_aligned,
 * disposition, override, dkim list "d/s/r,d/s/r". */
struct ev_case {
	int64_t t;
	const char *ip, *from, *dmarc;
	bool dkim_aligned, spf_aligned;
	const char *disposition, *override, *dkim;
};

static const struct ev_case evs[] = {
    {100, "192.0.2.1", "example.org", "pass", false, true, "none", NULL, ""},
    {101, "192.0.2.1", "example.org", "pass", false, true, "none", NULL, ""},
    {102, "192.0.2.1", "example.org", "pass", false, true, "none", NULL, ""},
    {103, "2001:db8::1", "example.org", "fail", false, false, "reject", NULL, ""},
    /* the same two signatures in either order are one group */
    {104, "198.51.100.9", "example.org", "pass", true, false, "none", NULL,
     "example.org/s1/pass,list.example/s2/fail"},
    {105, "198.51.100.9", "example.org", "pass", true, false, "none", NULL,
     "list.example/s2/fail,example.org/s1/pass"},
    {106, "192.0.2.1", "example.org", "fail", false, false, "none", "sampled_out", ""},
    {107, "192.0.2.1", "example.org", "fail", false, false, "none", "trusted_forwarder", ""},
    /* IDN policy domain (U-labels as the From: carried them) */
    {108, "203.0.113.5", "xn--bcher-kva.example", "pass", false, true, "none", NULL, ""},
    /* outside the period [100, 200) */
    {200, "192.0.2.1", "example.org", "pass", false, true, "none", NULL, ""},
    {99, "192.0.2.1", "example.org", "pass", false, true, "none", NULL, ""},
};

/* Expected records of example.org in [100, 200): ip, count, disposition as
 * reported, dkim, spf, ndkim, reason type. */
struct rec_want {
	const char *ip;
	unsigned count;
	const char *disposition, *dkim, *spf;
	size_t ndkim;
	const char *reason;
};
static const struct rec_want want_org[] = {
    {"192.0.2.1", 3, "pass", "fail", "pass", 0, NULL},
    {"198.51.100.9", 2, "pass", "pass", "fail", 2, NULL},
    {"192.0.2.1", 1, "none", "fail", "fail", 0, "other"},
    {"192.0.2.1", 1, "none", "fail", "fail", 0, "trusted_forwarder"},
    {"2001:db8::1", 1, "reject", "fail", "fail", 0, NULL},
};

static struct reports_row *ev_row(const struct ev_case *c)
{
	struct policy_dmarc_facts f;
	char dk[256], *save = NULL;
	memset(&f, 0, sizeof(f));
	snprintf(f.ip, sizeof(f.ip), "%s", c->ip);
	f.header_from = c->from;
	f.envelope_from = c->from;
	f.dmarc = c->dmarc;
	f.spf_domain = c->from;
	f.spf_result = c->spf_aligned ? "pass" : "fail";
	f.spf_scope = "mfrom";
	f.dkim_aligned = c->dkim_aligned;
	f.spf_aligned = c->spf_aligned;
	f.record_domain = c->from;
	snprintf(f.p, sizeof(f.p), "reject");
	snprintf(f.adkim, sizeof(f.adkim), "r");
	f.pct = -1;
	f.discovery = "psl";
	f.disposition = c->disposition;
	f.override = c->override;
	snprintf(dk, sizeof(dk), "%s", c->dkim);
	char parts[4][3][64];
	for (char *one = strtok_r(dk, ",", &save); one && f.ndkim < 4;
	     one = strtok_r(NULL, ",", &save)) {
		assert_int_equal(sscanf(one, "%63[^/]/%63[^/]/%63s", parts[f.ndkim][0],
		                        parts[f.ndkim][1], parts[f.ndkim][2]),
		                 3);
		f.dkim[f.ndkim].domain = parts[f.ndkim][0];
		f.dkim[f.ndkim].selector = parts[f.ndkim][1];
		f.dkim[f.ndkim].result = parts[f.ndkim][2];
		f.ndkim++;
	}
	return reports_row_from_facts(&f, "u@example.test", c->t);
}

/* validate - the XML against tests/data/rfc9990-dmarc.xsd; 0 when valid. */
static int validate(const struct util_buf *xml)
{
	char xsd[512];
	const char *src = getenv("MXGATE_SOURCE_DIR");
	snprintf(xsd, sizeof(xsd), "%s/tests/data/rfc9990-dmarc.xsd", src ? src : "..");
	xmlSchemaParserCtxtPtr pc = xmlSchemaNewParserCtxt(xsd);
	assert_non_null(pc);
	xmlSchemaPtr schema = xmlSchemaParse(pc);
	assert_non_null(schema);
	xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(schema);
	xmlDocPtr doc = xmlReadMemory(xml->data, (int)xml->len, "report.xml", NULL, 0);
	assert_non_null(doc);
	int rc = xmlSchemaValidateDoc(vc, doc);
	xmlFreeDoc(doc);
	xmlSchemaFreeValidCtxt(vc);
	xmlSchemaFree(schema);
	xmlSchemaFreeParserCtxt(pc);
	return rc;
}

/* ------------------------------------------------------------ the writer
 * thread's batching (reports-store.c) */

/* How a case ends each burst of rows. */
enum store_end {
	END_WAIT,  /* no flush: wait until the writer has written them */
	END_FLUSH, /* reports_flush, then they must be written */
	END_CLOSE, /* the last burst is left queued; reports_close writes it */
};
struct store_case {
	const char *name;
	int linger_ms;
	size_t fill;
	size_t bursts[4]; /* rows pushed one by one per burst, 0 ends */
	enum store_end end;
	bool hold; /* push the second row of a burst once the writer lingers */
};
#define LONG_LINGER (10 * 60 * 1000) /* longer than the test may take */
static const struct store_case store_cases[] = {
    /* one row at a time: each one wakes an idle writer (empty -> 1) */
    {"trickle", 20, 8, {1, 1, 1, 1}, END_WAIT, false},
    {"trickle, pairs", 20, 8, {2, 1, 2, 3}, END_WAIT, false},
    /* only the fill mark can end this linger within the test's time */
    {"fill mark", LONG_LINGER, 4, {4, 4, 8}, END_WAIT, true},
    {"flush cuts the linger", LONG_LINGER, 8, {3, 2, 1}, END_FLUSH, false},
    /* the first burst flushed, the second still lingering at the close */
    {"close writes the queue", LONG_LINGER, 8, {2, 5}, END_CLOSE, false},
};

/* timeout_scale - MXGATE_TIMEOUT_SCALE (sanitizer builds are slower). */
static double timeout_scale(void)
{
	const char *s = getenv("MXGATE_TIMEOUT_SCALE");
	return s != NULL && atof(s) > 0 ? atof(s) : 1.0;
}

/* wait_written - until the store has written n rows (n == 0: until the
 * writer lingers); false after a (scaled) 30 s. */
static bool wait_written(struct reports_store *rs, uint64_t n)
{
	struct timespec t0, now, nap = {0, 2 * 1000 * 1000};
	uint64_t written, dropped;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		reports_stats(rs, &written, &dropped);
		if (n == 0 && reports_store_lingering(rs))
			return true;
		if (n > 0 && written >= n)
			return written == n;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - t0.tv_sec) > 30 * timeout_scale())
			return false;
		nanosleep(&nap, NULL);
	}
}

static void test_store_batching(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(store_cases) / sizeof(store_cases[0]); c++) {
		const struct store_case *sc = &store_cases[c];
		char *path = tmpfile_path(), err[256] = "", v[64];
		char dbname[300];
		struct config cfg;
		memset(&cfg, 0, sizeof(cfg));
		snprintf(dbname, sizeof(dbname), "sqlite:%s", path);
		cfg.reports_database = dbname;
		cfg.reports_queue_size = 16;
		struct reports_store *rs = reports_open(&cfg, err, sizeof(err));
		if (rs == NULL)
			fail_msg("%s: open: %s", sc->name, err);
		reports_store_set_linger(rs, sc->linger_ms, sc->fill);
		uint64_t total = 0;
		for (size_t b = 0; b < 4 && sc->bursts[b] > 0; b++) {
			for (size_t i = 0; i < sc->bursts[b]; i++) {
				struct ev_case e = {.t = 100 + (int64_t)total,
				                    .ip = "192.0.2.1",
				                    .from = "example.org",
				                    .dmarc = "pass",
				                    .dkim = "example.org/s/pass",
				                    .dkim_aligned = true,
				                    .disposition = "none"};
				struct reports_row *r = ev_row(&e);
				assert_non_null(r);
				assert_int_equal(reports_store_push(rs, r), 0);
				total++;
				/* the rest of the burst arrives while the writer
				 * lingers: only the fill mark may wake it */
				if (sc->hold && i == 0 && !wait_written(rs, 0))
					fail_msg("%s: the writer never lingered", sc->name);
			}
			bool last = b + 1 == 4 || sc->bursts[b + 1] == 0;
			if (sc->end == END_CLOSE && last)
				break;
			if (sc->end != END_WAIT) {
				reports_flush(rs);
				uint64_t written, dropped;
				reports_stats(rs, &written, &dropped);
				if (written != total)
					fail_msg("%s: burst %zu: %llu of %llu written after the flush",
					         sc->name, b, (unsigned long long)written,
					         (unsigned long long)total);
			} else if (!wait_written(rs, total)) {
				fail_msg("%s: burst %zu: the writer did not write %llu rows",
				         sc->name, b, (unsigned long long)total);
			}
		}
		reports_close(rs);
		/* every row and its DKIM row in the file, nothing counted dropped */
		query_str(path, "SELECT count(*) FROM evaluation", v, sizeof(v));
		if (strtoull(v, NULL, 10) != total)
			fail_msg("%s: %s rows in the file, %llu pushed", sc->name, v,
			         (unsigned long long)total);
		query_str(path, "SELECT count(*) FROM evaluation_dkim", v, sizeof(v));
		assert_int_equal(strtoull(v, NULL, 10), total);
		query_str(path, "SELECT count(DISTINCT t) FROM evaluation", v, sizeof(v));
		assert_int_equal(strtoull(v, NULL, 10), total);
		query_str(path, "SELECT count(*) FROM dropped", v, sizeof(v));
		assert_string_equal(v, "0");
		remove_db(path);
		free(path);
	}
}

/* ------------------------------------------------------------ lost writes
 * (reports-store.c): a batch the writer cannot write is a drop count in
 * the dropped table (the report's <error>), like a full queue's, with a
 * time no earlier than the run barrier; a drop count that cannot be
 * written either is retried until it is. */

/* sql_on - run sql on its own connection to path. */
static void sql_on(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *msg = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
	sqlite3_close(db);
}

/* wait_dropped - until the store counted n drops (30 s scaled). */
static bool wait_dropped(struct reports_store *rs, uint64_t n)
{
	struct timespec t0, now, nap = {0, 2 * 1000 * 1000};
	uint64_t written, dropped;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		reports_stats(rs, &written, &dropped);
		if (dropped >= n)
			return dropped == n;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - t0.tv_sec) > 30 * timeout_scale())
			return false;
		nanosleep(&nap, NULL);
	}
}

/* One case: how the writes fail, rows pushed, what the file holds. */
struct lost_case {
	const char *name;
	bool drops_fail_too; /* the dropped table refuses as well, at first */
	size_t rows;
};
static const struct lost_case lost_cases[] = {
    {"batch lost, counted in the table", false, 3},
    {"the count itself retried until written", true, 2},
};

static void test_store_lost_batch_is_dropped(void **state)
{
	(void)state;
	const int64_t barrier = 4000000000LL; /* a run ended "later": its period is reported */
	for (size_t c = 0; c < sizeof(lost_cases) / sizeof(lost_cases[0]); c++) {
		const struct lost_case *lc = &lost_cases[c];
		char *path = tmpfile_path(), err[256] = "", v[64], dbname[300];
		struct config cfg;
		memset(&cfg, 0, sizeof(cfg));
		snprintf(dbname, sizeof(dbname), "sqlite:%s", path);
		cfg.reports_database = dbname;
		cfg.reports_queue_size = 16;
		struct reports_store *rs = reports_open(&cfg, err, sizeof(err));
		if (rs == NULL)
			fail_msg("%s: open: %s", lc->name, err);
		reports_store_set_linger(rs, 1, 0);
		reports_store_barrier(rs, barrier);
		/* every evaluation insert fails, as on a full disk */
		sql_on(path, "CREATE TRIGGER t_ev BEFORE INSERT ON evaluation BEGIN"
		             " SELECT RAISE(ABORT, 'disk full (test)'); END");
		if (lc->drops_fail_too)
			sql_on(path, "CREATE TRIGGER t_dr BEFORE INSERT ON dropped BEGIN"
			             " SELECT RAISE(ABORT, 'disk full (test)'); END");
		for (size_t i = 0; i < lc->rows; i++) {
			struct ev_case e = {.t = 100 + (int64_t)i,
			                    .ip = "192.0.2.1",
			                    .from = "example.org",
			                    .dmarc = "pass",
			                    .dkim = "",
			                    .disposition = "none"};
			struct reports_row *r = ev_row(&e);
			assert_non_null(r);
			assert_int_equal(reports_store_push(rs, r), 0);
		}
		if (!wait_dropped(rs, lc->rows))
			fail_msg("%s: the lost rows were not counted as drops", lc->name);
		if (lc->drops_fail_too) {
			reports_flush(rs); /* does not wait for a count being retried */
			query_str(path, "SELECT count(*) FROM dropped", v, sizeof(v));
			assert_string_equal(v, "0");
			sql_on(path, "DROP TRIGGER t_dr");
		}
		reports_close(rs); /* the retry, or the close's last try */
		query_str(path, "SELECT count(*) FROM evaluation", v, sizeof(v));
		assert_string_equal(v, "0");
		query_str(path, "SELECT coalesce(sum(n), 0) FROM dropped", v, sizeof(v));
		if (strtoull(v, NULL, 10) != lc->rows)
			fail_msg("%s: %s drops in the table, %zu rows lost", lc->name, v,
			         lc->rows);
		/* never inside the period a run has already reported */
		query_str(path, "SELECT min(t) FROM dropped", v, sizeof(v));
		assert_true(strtoll(v, NULL, 10) >= barrier);
		remove_db(path);
		free(path);
	}
}

/* ------------------------------------------------------------ retention of
 * what the runs leave (prune): reports, refusals, runs and queued outbox
 * messages go with the evaluations; the newest run stays, so a run after
 * the prune starts where the last one ended and resends nothing. */

static void test_prune_run_tables(void **state)
{
	(void)state;
	char *path = tmpfile_path(), err[256] = "", v[128];
	const struct reports_backend *be = &reports_sqlite_backend;
	void *db = be->open(path, err, sizeof(err));
	assert_non_null(db);
	/* evaluations at 100..109 and 200..209; runs [100, 200) and [200, 300) */
	struct reports_row *rows[20];
	for (size_t i = 0; i < 20; i++) {
		struct ev_case e = {.t = (i < 10 ? 100 : 190) + (int64_t)i,
		                    .ip = "192.0.2.1",
		                    .from = "example.org",
		                    .dmarc = "pass",
		                    .dkim = "",
		                    .disposition = "none"};
		assert_non_null(rows[i] = ev_row(&e));
	}
	assert_int_equal(be->insert(db, rows, 20, err, sizeof(err)), 0);
	for (size_t i = 0; i < 20; i++)
		reports_row_free(rows[i]);
	static const struct {
		const char *id;
		int64_t begin, end;
		bool queued;
	} runs[] = {{"aaa1", 100, 200, true}, {"bbb2", 200, 300, true}, {"ccc3", 300, 400, false}};
	for (size_t i = 0; i < 3; i++) {
		char msg[64];
		snprintf(msg, sizeof(msg), "the report message %s", runs[i].id);
		struct reports_out o = {(char *)runs[i].id, "agg@rua.example", "r@mx.example", msg,
		                        strlen(msg), NULL};
		assert_int_equal(be->tx(db, 0, err, sizeof(err)), 0);
		assert_int_equal(be->add_report(db, runs[i].id, "example.org", runs[i].begin,
		                                runs[i].end, err, sizeof(err)),
		                 0);
		assert_int_equal(be->add_outbox(db, &o, err, sizeof(err)), 0);
		assert_int_equal(be->add_refused(db, runs[i].end, "example.org", "x@other.example",
		                                 "unverified", err, sizeof(err)),
		                 0);
		assert_int_equal(be->add_run(db, runs[i].begin, runs[i].end, err, sizeof(err)), 0);
		assert_int_equal(be->tx(db, 1, err, sizeof(err)), 0);
		if (runs[i].queued)
			assert_int_equal(
			    be->mark_queued(db, runs[i].id, "agg@rua.example", err, sizeof(err)), 0);
	}
	/* queued: the message is gone at once, the id and state stay */
	query_str(path, "SELECT group_concat(report_id || ':' || queued || ':' || length(msg))"
	                " FROM (SELECT * FROM outbox ORDER BY report_id)",
	          v, sizeof(v));
	assert_string_equal(v, "aaa1:1:0,bbb2:1:0,ccc3:0:23");
	/* the cut-off after the second run: what ended before 300 goes, but
	 * the evaluations of [200, 300) stay, and the runs keep the newest */
	uint64_t pruned = 0;
	assert_int_equal(be->prune(db, 205, &pruned, err, sizeof(err)), 0);
	assert_int_equal(pruned, 15); /* t = 100..109, 200..204 */
	query_str(path, "SELECT group_concat(report_id) FROM report", v, sizeof(v));
	assert_string_equal(v, "bbb2,ccc3");
	query_str(path, "SELECT group_concat(report_id) FROM outbox", v, sizeof(v));
	assert_string_equal(v, "bbb2,ccc3");
	query_str(path, "SELECT group_concat(t) FROM refused", v, sizeof(v));
	assert_string_equal(v, "300,400");
	/* everything older than any run: only the newest run is left */
	assert_int_equal(be->prune(db, 1000, &pruned, err, sizeof(err)), 0);
	query_str(path,
	          "SELECT (SELECT count(*) FROM report) || ' ' || (SELECT count(*) FROM refused)"
	          " || ' ' || (SELECT group_concat(begin_t || '-' || end_t) FROM report_run)"
	          " || ' ' || (SELECT group_concat(report_id) FROM outbox)",
	          v, sizeof(v));
	assert_string_equal(v, "0 0 300-400 ccc3"); /* the unqueued message waits */
	/* a late evaluation of the old period cannot bring it back: the next
	 * run begins where the last one ended */
	struct ev_case late = {.t = 150, .ip = "192.0.2.1", .from = "example.org",
	                       .dmarc = "pass", .dkim = "", .disposition = "none"};
	struct reports_row *lr = ev_row(&late);
	assert_int_equal(be->insert(db, &lr, 1, err, sizeof(err)), 0);
	reports_row_free(lr);
	int64_t begin = 0;
	assert_int_equal(be->run_begin(db, &begin, err, sizeof(err)), 0);
	assert_int_equal(begin, 400);
	be->close(db);
	remove_db(path);
	free(path);
}

static void test_aggregate_and_xml(void **state)
{
	(void)state;
	char *path = tmpfile_path(), err[256] = "";
	const struct reports_backend *be = &reports_sqlite_backend;
	const size_t n = sizeof(evs) / sizeof(evs[0]);
	struct reports_row *rows[sizeof(evs) / sizeof(evs[0])];
	void *db = be->open(path, err, sizeof(err));
	assert_non_null(db);
	for (size_t i = 0; i < n; i++)
		assert_non_null(rows[i] = ev_row(&evs[i]));
	assert_int_equal(be->insert(db, rows, n, err, sizeof(err)), 0);
	for (size_t i = 0; i < n; i++)
		reports_row_free(rows[i]);
	assert_int_equal(be->add_drops(db, 150, 4, err, sizeof(err)), 0);
	assert_int_equal(be->add_drops(db, 250, 9, err, sizeof(err)), 0); /* other period */

	struct util_strlist doms = {0};
	assert_int_equal(be->domains(db, 100, 200, &doms, err, sizeof(err)), 0);
	assert_int_equal(doms.n, 2);
	assert_string_equal(doms.v[0], "example.org");
	assert_string_equal(doms.v[1], "xn--bcher-kva.example");
	util_strlist_free(&doms);
	/* an empty period: no domain, so no report */
	assert_int_equal(be->domains(db, 1000, 2000, &doms, err, sizeof(err)), 0);
	assert_int_equal(doms.n, 0);

	struct reports_agg a;
	assert_int_equal(be->aggregate(db, "example.org", 100, 200, &a, err, sizeof(err)), 0);
	assert_int_equal(a.n, sizeof(want_org) / sizeof(want_org[0]));
	assert_int_equal(a.dropped, 4);
	assert_string_equal(a.p, "reject");
	uint64_t total = 0;
	bool seen[sizeof(want_org) / sizeof(want_org[0])] = {false};
	for (size_t i = 0; i < a.n; i++) {
		const struct reports_agg_rec *r = &a.recs[i];
		total += r->count;
		bool found = false;
		for (size_t k = 0; k < a.n && !found; k++) {
			const struct rec_want *w = &want_org[k];
			const char *disp = r->dmarc_pass ? "pass" : r->disposition;
			const char *reason = r->override == NULL ? NULL
			                     : strcmp(r->override, "sampled_out") == 0
			                         ? "other"
			                         : r->override;
			if (!seen[k] && strcmp(w->ip, r->ip) == 0 && w->count == r->count &&
			    strcmp(w->disposition, disp) == 0 &&
			    strcmp(w->dkim, r->dkim_pass ? "pass" : "fail") == 0 &&
			    strcmp(w->spf, r->spf_pass ? "pass" : "fail") == 0 &&
			    w->ndkim == r->ndkim &&
			    ((w->reason == NULL && reason == NULL) ||
			     (w->reason && reason && strcmp(w->reason, reason) == 0)))
				seen[k] = found = true;
		}
		if (!found)
			fail_msg("unexpected record ip=%s count=%llu", r->ip,
			         (unsigned long long)r->count);
	}
	assert_int_equal(total, 8); /* every example.org evaluation of the period, once */

	struct util_buf xml;
	util_buf_init(&xml);
	struct reports_meta m = {
	    "Example Org", "postmaster@mx.example", "id-1", "mxgate test", 100, 199};
	assert_int_equal(reports_xml(&m, &a, &xml), 0);
	assert_int_equal(validate(&xml), 0);
	assert_non_null(strstr(xml.data, "<source_ip>2001:db8::1</source_ip>"));
	assert_non_null(strstr(xml.data, "<error>4 evaluations"));
	assert_non_null(strstr(xml.data, "<comment>sampled_out</comment>"));
	/* hostile text is escaped by the writer */
	util_buf_reset(&xml);
	struct reports_meta evil = {"<Evil & Co>", "a@b.example", "x\"]]>", "g", 100, 199};
	assert_int_equal(reports_xml(&evil, &a, &xml), 0);
	assert_int_equal(validate(&xml), 0);
	assert_non_null(strstr(xml.data, "&lt;Evil &amp; Co&gt;"));
	/* the schema does refuse what RFC 9990 does not allow: a second
	 * <error>, or a disposition outside its enumeration */
	{
		char *p = strstr(xml.data, "<error>");
		assert_non_null(p);
		struct util_buf bad;
		util_buf_init(&bad);
		util_buf_add(&bad, xml.data, (size_t)(p - xml.data));
		util_buf_add(&bad, "<error>x</error>", strlen("<error>x</error>"));
		util_buf_add(&bad, p, xml.len - (size_t)(p - xml.data));
		assert_int_not_equal(validate(&bad), 0);
		util_buf_reset(&bad);
		p = strstr(xml.data, "<disposition>");
		assert_non_null(p);
		p += strlen("<disposition>");
		util_buf_add(&bad, xml.data, (size_t)(p - xml.data));
		util_buf_add(&bad, "bogus", 5);
		p = strstr(p, "</disposition>");
		util_buf_add(&bad, p, xml.len - (size_t)(p - xml.data));
		assert_int_not_equal(validate(&bad), 0);
		util_buf_free(&bad);
	}
	util_buf_free(&xml);
	reports_agg_clear(&a);

	assert_int_equal(be->aggregate(db, "xn--bcher-kva.example", 100, 200, &a, err, sizeof(err)),
	                 0);
	assert_int_equal(a.n, 1);
	util_buf_init(&xml);
	assert_int_equal(reports_xml(&m, &a, &xml), 0);
	assert_int_equal(validate(&xml), 0);
	util_buf_free(&xml);
	reports_agg_clear(&a);

	/* retention: rows before the cut-off go, with their DKIM rows */
	uint64_t pruned = 0;
	assert_int_equal(be->prune(db, 105, &pruned, err, sizeof(err)), 0);
	assert_int_equal(pruned, 6); /* t = 99 .. 104 */
	assert_int_equal(be->aggregate(db, "example.org", 0, 1000, &a, err, sizeof(err)), 0);
	total = 0;
	for (size_t i = 0; i < a.n; i++)
		total += a.recs[i].count;
	assert_int_equal(total, 4); /* 105, 106, 107, 200 */
	reports_agg_clear(&a);
	be->close(db);
	char v[64];
	query_str(path, "SELECT count(*) FROM evaluation_dkim", v, sizeof(v));
	assert_string_equal(v, "2"); /* t = 105's two signatures; t = 104's went */
	remove_db(path);
	free(path);
}

/* ------------------------------------------------------------ report pieces */

struct rua_case {
	const char *record;
	size_t n;
	const char *addrs[3];
	uint64_t limits[3];
};
static const struct rua_case rua_cases[] = {
    {"v=DMARC1; p=none; rua=mailto:a@example.org", 1, {"a@example.org"}, {0}},
    {"v=DMARC1;p=none;rua=mailto:a@x.example!10m, mailto:b@y.example!5k ,https://h/",
     2,
     {"a@x.example", "b@y.example"},
     {10485760, 5120}},
    {"v=DMARC1; RUA = mailto:c@z.example!2G; ruf=mailto:no@z.example",
     1,
     {"c@z.example"},
     {2147483648ULL}},
    {"v=DMARC1; p=reject", 0, {NULL}, {0}},
    {"v=DMARC1; rua=mailto:@bad, mailto:bad@, mailto:sp ace@x, mailto:ok@x.example",
     1,
     {"ok@x.example"},
     {0}},
    {"v=DMARC1; rua=", 0, {NULL}, {0}},
};

static void test_rua_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rua_cases) / sizeof(rua_cases[0]); i++) {
		const struct rua_case *c = &rua_cases[i];
		struct util_strlist l = {0};
		uint64_t lim[8];
		size_t n = reports_rua_parse(c->record, &l, lim, 8);
		if (n != c->n)
			fail_msg("case %zu: %zu destinations, want %zu", i, n, c->n);
		for (size_t k = 0; k < n; k++) {
			assert_string_equal(l.v[k], c->addrs[k]);
			assert_int_equal(lim[k], c->limits[k]);
		}
		util_strlist_free(&l);
	}
}

static void test_same_org(void **state)
{
	(void)state;
	static const struct {
		const char *policy, *dest;
		bool same;
	} cases[] = {
	    {"example.com", "example.com", true},      {"example.com", "reports.example.com", true},
	    {"mail.example.com", "EXAMPLE.com", true}, {"example.com", "notexample.com", false},
	    {"example.com", "example.net", false},     {"example.com", "com", false},
	    {"a.example.com", "b.example.com", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (reports_same_org(cases[i].policy, cases[i].dest) != cases[i].same)
			fail_msg("case %zu: %s / %s", i, cases[i].policy, cases[i].dest);
}

static void test_gzip_compose_sign(void **state)
{
	(void)state;
	struct util_buf gz;
	util_buf_init(&gz);
	const char *xml = "<feedback>hello hello hello hello</feedback>\n";
	assert_int_equal(reports_gzip(xml, strlen(xml), &gz), 0);
	assert_true(gz.len > 18);
	assert_int_equal((unsigned char)gz.data[0], 0x1f); /* RFC 1952 magic */
	assert_int_equal((unsigned char)gz.data[1], 0x8b);

	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.hostname = "mx.example.test";
	cfg.reports_org_name = "Example Gate";
	/* the Submitter is a domain name (RFC 7489 7.2.1.1 dmarc-subject):
	 * the report address's, never the org_name (free text) */
	static const struct {
		const char *from, *subject;
	} subj[] = {
	    {"reports@dmarc.example.net", "\r\nSubject: Report Domain: example.org Submitter: "
	                                  "dmarc.example.net Report-ID: <0123abcd>\r\n"},
	    {"postmaster", "\r\nSubject: Report Domain: example.org Submitter: mx.example.test "
	                   "Report-ID: <0123abcd>\r\n"},
	};
	size_t len = 0;
	char *msg;
	for (size_t i = 0; i < sizeof(subj) / sizeof(subj[0]); i++) {
		msg = reports_compose(&cfg, subj[i].from, "agg@rua.example", "example.org",
		                      "0123abcd", 86400, 172799, &gz, &len);
		assert_non_null(msg);
		if (strstr(msg, subj[i].subject) == NULL)
			fail_msg("case %zu: %.300s", i, msg);
		free(msg);
	}
	msg = reports_compose(&cfg, "r@mx.example.test", "agg@rua.example", "example.org",
	                      "0123abcd", 86400, 172799, &gz, &len);
	assert_non_null(msg);
	assert_int_equal(len, strlen(msg));
	assert_non_null(strstr(msg, "\r\nSubject: Report Domain: example.org Submitter: "
	                            "mx.example.test Report-ID: <0123abcd>\r\n"));
	assert_non_null(strstr(msg, "from Example Gate, covering")); /* org_name: the text part */
	assert_non_null(
	    strstr(msg, "filename=\"mx.example.test!example.org!86400!172799!0123abcd.xml.gz\""));
	for (const char *p = msg; *p; p++) /* CRLF only */
		if (*p == '\n')
			assert_true(p > msg && p[-1] == '\r');

	char *path = tmpfile_path(), err[256] = "";
	char *pem = reports_key_ensure(path, err, sizeof(err)); /* made: RSA 2048 */
	assert_non_null(pem);
	char *again = reports_key_ensure(path, err, sizeof(err)); /* read back, same key */
	assert_non_null(again);
	assert_string_equal(pem, again);
	char *sig = reports_dkim_sign(pem, "sel", "mx.example.test", msg, len, err, sizeof(err));
	if (sig == NULL)
		fail_msg("sign: %s", err);
	assert_true(strncmp(sig, "DKIM-Signature: ", 16) == 0);
	assert_non_null(strstr(sig, "d=mx.example.test"));
	assert_non_null(strstr(sig, "s=sel"));
	assert_string_equal(sig + strlen(sig) - 2, "\r\n");
	free(sig);
	free(pem);
	free(again);
	free(msg);
	util_buf_free(&gz);
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_migrations),        cmocka_unit_test(test_rows_roundtrip),
	    cmocka_unit_test(test_aggregate_and_xml), cmocka_unit_test(test_rua_parse),
	    cmocka_unit_test(test_same_org),          cmocka_unit_test(test_gzip_compose_sign),
	    cmocka_unit_test(test_store_batching),    cmocka_unit_test(test_store_lost_batch_is_dropped),
	    cmocka_unit_test(test_prune_run_tables),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
