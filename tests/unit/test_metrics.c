/*
 * test_metrics.c - util/util-metrics.c: definitions, counters, gauges,
 * histograms, label escaping and the cardinality cap, rendered as
 * Prometheus text format 0.0.4; updates from several threads at once.
 */
/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char *render(void)
{
	struct util_buf b;
	util_buf_init(&b);
	util_metrics_render(&b);
	return b.data ? b.data : util_xstrdup("");
}

static int setup(void **state)
{
	(void)state;
	util_metrics_reset();
	return 0;
}

/* ------------------------------------------------------------ definitions */

static const struct {
	const char *name;
	enum util_metric_kind kind;
	const char *label;
	int rc;
} define_cases[] = {
    {"mx_ok_total", UTIL_METRIC_COUNTER, NULL, 0},
    {"mx_ok_total", UTIL_METRIC_COUNTER, NULL, 0}, /* again: no-op */
    {"mx:colon_ok", UTIL_METRIC_GAUGE, "reason", 0},
    {"9starts_with_digit", UTIL_METRIC_COUNTER, NULL, -1},
    {"has-dash", UTIL_METRIC_COUNTER, NULL, -1},
    {"", UTIL_METRIC_COUNTER, NULL, -1},
    {"mx_bad_label", UTIL_METRIC_COUNTER, "bad-label", -1},
    {"mx_hist_with_label", UTIL_METRIC_HISTOGRAM, "x", -1},
};

static void test_define(void **state)
{
	for (size_t i = 0; i < sizeof(define_cases) / sizeof(define_cases[0]); i++)
		assert_int_equal(util_metrics_define(define_cases[i].name, define_cases[i].kind,
		                                     "h", define_cases[i].label, NULL, 0),
		                 define_cases[i].rc);
	static const double unsorted[] = {1, 0.5};
	assert_int_equal(util_metrics_define("mx_h", UTIL_METRIC_HISTOGRAM, "h", NULL, unsorted, 2),
	                 -1);
	char *out = render();
	assert_non_null(strstr(out, "# TYPE mx_ok_total counter\nmx_ok_total 0\n"));
	assert_non_null(strstr(out, "# TYPE mx:colon_ok gauge\n"));
	assert_null(strstr(out, "has-dash"));
	/* defined once only */
	const char *first = strstr(out, "# TYPE mx_ok_total");
	assert_null(strstr(first + 1, "# TYPE mx_ok_total"));
	free(out);
}

/* ------------------------------------------------------------ counters and gauges */

static void test_counters_gauges(void **state)
{
	assert_int_equal(
	    util_metrics_define("c_total", UTIL_METRIC_COUNTER, "A counter", NULL, NULL, 0), 0);
	assert_int_equal(
	    util_metrics_define("r_total", UTIL_METRIC_COUNTER, "By reason", "reason", NULL, 0), 0);
	assert_int_equal(util_metrics_define("g", UTIL_METRIC_GAUGE, "A gauge", NULL, NULL, 0), 0);
	util_metrics_inc("c_total", NULL);
	util_metrics_inc("c_total", NULL);
	util_metrics_add("c_total", NULL, 3);
	util_metrics_add("c_total", NULL, -10); /* counters never go down */
	util_metrics_set("c_total", NULL, 0);   /* nor are they set */
	util_metrics_inc("c_total", "label");   /* no label on this family: ignored */
	util_metrics_inc("r_total", "access");
	util_metrics_inc("r_total", "access");
	util_metrics_inc("r_total", "size");
	util_metrics_inc("r_total", NULL);           /* labelled family without value: ignored */
	util_metrics_inc("nobody_defined_me", NULL); /* no-op */
	util_metrics_set("g", NULL, 7.5);
	util_metrics_add("g", NULL, -2);
	assert_true(util_metrics_value("c_total", NULL) == 5);
	assert_true(util_metrics_value("r_total", "access") == 2);
	assert_true(util_metrics_value("r_total", NULL) == 3); /* sum */
	assert_true(util_metrics_value("g", NULL) == 5.5);
	assert_true(util_metrics_value("nobody_defined_me", NULL) == 0);

	char *out = render();
	static const char *const want[] = {
	    "# HELP c_total A counter\n# TYPE c_total counter\nc_total 5\n",
	    "# TYPE r_total counter\nr_total{reason=\"access\"} 2\nr_total{reason=\"size\"} 1\n",
	    "# TYPE g gauge\ng 5.5\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_non_null(strstr(out, want[i]));
	assert_null(strstr(out, "nobody_defined_me"));
	free(out);
}

/* ------------------------------------------------------------ escaping, cap */

static void test_escaping_and_cap(void **state)
{
	assert_int_equal(util_metrics_define("e_total", UTIL_METRIC_COUNTER, "back\\slash\nnewline",
	                                     "v", NULL, 0),
	                 0);
	util_metrics_inc("e_total", "a\"b\\c\nd");
	for (int i = 0; i < UTIL_METRICS_MAX_SERIES + 10; i++) {
		char lv[16];
		snprintf(lv, sizeof(lv), "v%d", i);
		util_metrics_inc("e_total", lv);
	}
	char *out = render();
	assert_non_null(strstr(out, "# HELP e_total back\\\\slash\\nnewline\n"));
	assert_non_null(strstr(out, "e_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
	/* 1 + 31 distinct values kept, the 11 others counted as "other" */
	assert_non_null(strstr(out, "e_total{v=\"v30\"} 1\n"));
	assert_null(strstr(out, "e_total{v=\"v31\"}"));
	assert_non_null(strstr(out, "e_total{v=\"other\"} 11\n"));
	free(out);
}

/* ------------------------------------------------------------ histograms */

static void test_histogram(void **state)
{
	static const double b[] = {0.1, 1, 10};
	assert_int_equal(
	    util_metrics_define("lat_seconds", UTIL_METRIC_HISTOGRAM, "Latency", NULL, b, 3), 0);
	static const double obs[] = {0.05, 0.1, 0.5, 2, 20, 1000};
	for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
		util_metrics_observe("lat_seconds", obs[i]);
	util_metrics_inc("lat_seconds", NULL); /* wrong kind: ignored */
	char *out = render();
	assert_non_null(strstr(out, "# TYPE lat_seconds histogram\n"
	                            "lat_seconds_bucket{le=\"0.1\"} 2\n"
	                            "lat_seconds_bucket{le=\"1\"} 3\n"
	                            "lat_seconds_bucket{le=\"10\"} 4\n"
	                            "lat_seconds_bucket{le=\"+Inf\"} 6\n"
	                            "lat_seconds_sum 1022.65\n"
	                            "lat_seconds_count 6\n"));
	assert_true(util_metrics_value("lat_seconds", NULL) == 6);
	free(out);
}

/* ------------------------------------------------------------ threads */

enum { THREADS = 4, PER_THREAD = 20000 };

static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		util_metrics_inc("t_total", (i & 1) ? "odd" : "even");
		util_metrics_observe("t_seconds", 0.5);
	}
	return NULL;
}

static void test_threads(void **state)
{
	static const double b[] = {1};
	assert_int_equal(util_metrics_define("t_total", UTIL_METRIC_COUNTER, "t", "p", NULL, 0), 0);
	assert_int_equal(util_metrics_define("t_seconds", UTIL_METRIC_HISTOGRAM, "t", NULL, b, 1),
	                 0);
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_true(util_metrics_value("t_total", "odd") == THREADS * PER_THREAD / 2);
	assert_true(util_metrics_value("t_total", NULL) == THREADS * PER_THREAD);
	assert_true(util_metrics_value("t_seconds", NULL) == THREADS * PER_THREAD);
}

/* ------------------------------------------------------------ whole output format */

/* every line is a comment or "name[{labels}] value" (text format 0.0.4) */
static void test_format_lines(void **state)
{
	static const double b[] = {0.25};
	util_metrics_define("f_total", UTIL_METRIC_COUNTER, "f", "k", NULL, 0);
	util_metrics_define("f_seconds", UTIL_METRIC_HISTOGRAM, "f", NULL, b, 1);
	util_metrics_inc("f_total", "x y");
	util_metrics_observe("f_seconds", 0.125);
	char *out = render();
	assert_true(strlen(out) > 0 && out[strlen(out) - 1] == '\n');
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == '#') {
			assert_true(strncmp(line, "# HELP ", 7) == 0 ||
			            strncmp(line, "# TYPE ", 7) == 0);
			continue;
		}
		char *sp = strrchr(line, ' ');
		assert_non_null(sp);
		char *end;
		(void)strtod(sp + 1, &end);
		assert_true(*end == '\0' || strcmp(sp + 1, "+Inf") == 0);
	}
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_define, setup),
	    cmocka_unit_test_setup(test_counters_gauges, setup),
	    cmocka_unit_test_setup(test_escaping_and_cap, setup),
	    cmocka_unit_test_setup(test_histogram, setup),
	    cmocka_unit_test_setup(test_threads, setup),
	    cmocka_unit_test_setup(test_format_lines, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
