/*
 * test_reports_down.c - the report store's writer when its store is down
 * (issue 14 review): reports_open on a file that is not a database still
 * returns a store; rows pushed meanwhile are taken and not recorded, a
 * flush does not wait for the store, mxgate_reports_store_up is 0 and the
 * operator's file is left as it was; once the file is moved aside the
 * writer opens a new store by itself (backoff), the gauge goes to 1, rows
 * are written again and the dropped table says how many were missed, at
 * a time no earlier than the last run's end (the run barrier: that period
 * is reported already).
 * Table-driven: what is in the file at start.
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

#include "reports-internal.h"

static double timeout_scale(void)
{
	const char *s = getenv("MXGATE_TIMEOUT_SCALE");
	return s != NULL && atof(s) > 0 ? atof(s) : 1.0;
}

/* row - an evaluation with static strings (one block: reports_row_free). */
static struct reports_row *row(int64_t t)
{
	struct reports_row *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	r->t = t;
	r->ip = (char *)"192.0.2.1";
	r->header_from = (char *)"a.example";
	r->record_domain = (char *)"a.example";
	r->dmarc = (char *)"pass";
	r->disposition = (char *)"none";
	r->pct = -1;
	return r;
}

static int64_t count(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t n = -1;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

struct down_case {
	const char *name;
	const char *content; /* the file at start */
	size_t len;
};

#define BYTES(s) s, sizeof(s) - 1
static const struct down_case cases[] = {
    {"random bytes", BYTES("\x13\x37 not an SQLite file \xff\xfe\x00 at all")},
    {"a text file", BYTES("reports: see the wiki\n")},
};

static void test_store_down_then_back(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct down_case *dc = &cases[c];
		char path[] = "/tmp/mxdown-XXXXXX", aside[64], dbname[96], err[256] = "";
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		char junk[4096];
		for (size_t i = 0; i < sizeof(junk); i++) /* a whole page of it */
			junk[i] = dc->content[i % dc->len];
		assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
		close(fd);
		snprintf(dbname, sizeof(dbname), "sqlite:%s", path);
		struct config cfg;
		memset(&cfg, 0, sizeof(cfg));
		cfg.reports_database = dbname;
		cfg.reports_queue_size = 16;
		struct reports_store *rs = reports_open(&cfg, err, sizeof(err));
		if (rs == NULL)
			fail_msg("%s: the store did not start: %s", dc->name, err);
		assert_true(util_metrics_value("mxgate_reports_store_up", NULL) == 0);
		const int64_t barrier = 4000000000LL; /* a run ended "later" */
		reports_store_barrier(rs, barrier);
		for (int i = 0; i < 3; i++)
			assert_int_equal(reports_store_push(rs, row(100 + i)), 0);
		reports_flush(rs); /* returns: nothing waits for a store that is down */
		uint64_t written, dropped;
		reports_stats(rs, &written, &dropped);
		assert_int_equal(written, 0);
		/* the operator's file, untouched */
		FILE *f = fopen(path, "rb");
		char back[sizeof(junk)];
		assert_non_null(f);
		assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(back));
		fclose(f);
		assert_memory_equal(back, junk, sizeof(junk));
		/* moved aside: the writer makes a new store by itself */
		snprintf(aside, sizeof(aside), "%s.broken", path);
		assert_int_equal(rename(path, aside), 0);
		struct timespec t0, now, nap = {0, 20 * 1000 * 1000};
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (util_metrics_value("mxgate_reports_store_up", NULL) != 1) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((double)(now.tv_sec - t0.tv_sec) > 40 * timeout_scale())
				fail_msg("%s: the store never came back", dc->name);
			nanosleep(&nap, NULL);
		}
		assert_int_equal(reports_store_push(rs, row(200)), 0);
		reports_flush(rs);
		reports_stats(rs, &written, &dropped);
		assert_int_equal(written, 1);
		reports_close(rs);
		assert_int_equal(count(path, "SELECT count(*) FROM evaluation"), 1);
		assert_int_equal(count(path, "SELECT sum(n) FROM dropped"), 3);
		assert_true(count(path, "SELECT min(t) FROM dropped") >= barrier);
		unlink(path);
		unlink(aside);
		char side[96];
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_store_down_then_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
