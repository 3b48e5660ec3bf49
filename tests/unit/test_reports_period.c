/*
 * test_reports_period.c - what a report run covers (reports-report.c), on
 * a real SQLite store: where a run ending at END starts (the last run's
 * end; before any run the start of the oldest evaluation's period; the
 * look-back of retention, at least a period, at most 31 days; never after
 * END) and the periods it cuts that span into (one per period with
 * evaluations, empty periods skipped, a send-now's partial period), and the
 * report id (the same for the same domain and period).  Table-driven.
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

#define D 86400LL
#define T0 (20000LL * D) /* a UTC midnight */

struct period_case {
	const char *name;
	int64_t period, retention;
	int64_t last_run_end; /* -1: no run yet */
	int64_t evals[6];     /* evaluation times, 0 ends */
	int64_t end;
	int64_t want_begin;
	int64_t want[6][2]; /* the slices [b, e), {0, 0} ends */
};

static const struct period_case cases[] = {
    {"no run yet: from the oldest evaluation's midnight", D, 7 * D, -1,
     {T0 + 3600, T0 + 7200}, T0 + D, T0, {{T0, T0 + D}}},
    {"empty store: nothing", D, 7 * D, -1, {0}, T0 + D, T0 + D, {{0, 0}}},
    {"three days down: one slice per day with evaluations", D, 7 * D, T0,
     {T0 + 10, T0 + 2 * D + 5, T0 + 2 * D + 9}, T0 + 3 * D, T0,
     {{T0, T0 + D}, {T0 + 2 * D, T0 + 3 * D}}},
    {"send-now mid-day: the rest of the day, then a whole day", D, 7 * D, T0 + 3600,
     {T0 + 4000, T0 + D + 1}, T0 + 2 * D, T0 + 3600,
     {{T0 + 3600, T0 + D}, {T0 + D, T0 + 2 * D}}},
    {"send-now: the partial period up to now", D, 7 * D, T0, {T0 + 50}, T0 + 100, T0,
     {{T0, T0 + 100}}},
    {"look-back: retention", D, 2 * D, T0 - 10 * D, {T0 - 5 * D, T0 - D + 1}, T0 + D,
     T0 - D, {{T0 - D, T0}}},
    {"look-back: at least one period", D, 0, T0 - 10 * D, {T0 - 2 * D, T0 + 1}, T0 + D, T0,
     {{T0, T0 + D}}},
    {"look-back: at most 31 days", D, 100 * D, T0 - 90 * D, {T0 - 60 * D, T0 - 30 * D},
     T0 + D, T0 + D - 31 * D, {{T0 - 30 * D, T0 - 29 * D}}},
    {"the last run ended after this end: nothing", D, 7 * D, T0 + 5000, {T0 + 10}, T0,
     T0, {{0, 0}}},
    {"hourly periods", 3600, 7 * D, -1, {T0 + 100, T0 + 2 * 3600 + 1}, T0 + 3 * 3600, T0,
     {{T0, T0 + 3600}, {T0 + 7200, T0 + 10800}}},
};

static void exec(sqlite3 *db, const char *sql)
{
	char *e = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK)
		fail_msg("%s: %s", sql, e);
}

static void test_periods(void **state)
{
	(void)state;
	const struct reports_backend *be = &reports_sqlite_backend;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct period_case *pc = &cases[c];
		char path[] = "/tmp/mxperiod-XXXXXX", err[256] = "", sql[256];
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		close(fd);
		unlink(path);
		void *h = be->open(path, err, sizeof(err));
		if (h == NULL)
			fail_msg("%s: open: %s", pc->name, err);
		sqlite3 *raw = NULL;
		assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
		if (pc->last_run_end >= 0) {
			snprintf(sql, sizeof(sql), "INSERT INTO report_run VALUES (0, %lld, 0)",
			         (long long)pc->last_run_end);
			exec(raw, sql);
		}
		for (size_t i = 0; i < 6 && pc->evals[i] != 0; i++) {
			snprintf(sql, sizeof(sql),
			         "INSERT INTO evaluation (t, source_ip, header_from, dmarc,"
			         " dkim_aligned, spf_aligned, policy_domain, disposition) VALUES"
			         " (%lld, '192.0.2.1', 'a.example', 'pass', 1, 0, 'a.example',"
			         " 'none')",
			         (long long)pc->evals[i]);
			exec(raw, sql);
		}
		sqlite3_close(raw);
		struct config cfg;
		memset(&cfg, 0, sizeof(cfg));
		cfg.reports_period = pc->period;
		cfg.reports_retention = pc->retention;
		int64_t begin = -1, sb, se;
		if (reports_run_begin(be, h, &cfg, pc->end, &begin, err, sizeof(err)) < 0)
			fail_msg("%s: %s", pc->name, err);
		if (begin != pc->want_begin)
			fail_msg("%s: begin %lld, want %lld", pc->name, (long long)begin,
			         (long long)pc->want_begin);
		size_t n = 0;
		for (int64_t from = begin; from < pc->end; from = se) {
			int k = reports_run_slice(be, h, &cfg, from, pc->end, &sb, &se, err,
			                          sizeof(err));
			assert_true(k >= 0);
			if (k == 0)
				break;
			if (n >= 6 || sb != pc->want[n][0] || se != pc->want[n][1])
				fail_msg("%s: slice %zu [%lld, %lld), want [%lld, %lld)", pc->name,
				         n, (long long)sb, (long long)se,
				         n < 6 ? (long long)pc->want[n][0] : -1LL,
				         n < 6 ? (long long)pc->want[n][1] : -1LL);
			n++;
		}
		if (n < 6 && pc->want[n][1] != 0)
			fail_msg("%s: %zu slices, want more", pc->name, n);
		be->close(h);
		unlink(path);
		snprintf(sql, sizeof(sql), "%s-wal", path);
		unlink(sql);
		snprintf(sql, sizeof(sql), "%s-shm", path);
		unlink(sql);
	}
}

/* The report id: 24 hex digits, the same for the same (host, domain,
 * period), different when any of them differs. */
static void test_report_id(void **state)
{
	(void)state;
	char a[25], b[25];

	reports_report_id("mx.example", "a.example", T0, T0 + D, a);
	reports_report_id("mx.example", "a.example", T0, T0 + D, b);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), 24);
	assert_int_equal(strspn(a, "0123456789abcdef"), 24);
	const char *other[][2] = {{"mx2.example", "a.example"}, {"mx.example", "b.example"}};
	for (size_t i = 0; i < 2; i++) {
		reports_report_id(other[i][0], other[i][1], T0, T0 + D, b);
		assert_string_not_equal(a, b);
	}
	reports_report_id("mx.example", "a.example", T0, T0 + D - 1, b);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_periods),
	    cmocka_unit_test(test_report_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
