/*
 * test_reports_dash.c - the dashboard's views over a real SQLite store
 * (reports-dash.c, issue 15): the readiness line (table-driven), the
 * sources with approved/new flags, "mark as seen" (a source first reported
 * after the look is new again; the look never moves back), the inventory
 * per domain, the other views, and the CLI summary built from the same
 * views.  PostgreSQL runs the same calls in
 * tests/integration/test_reports_dashboard.py (a real server).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reports-internal.h"

static void test_ready(void **state)
{
	(void)state;
	static const struct {
		uint64_t approved, pass, other, fail;
		const char *want;
	} cases[] = {
	    {0, 0, 58, 7,
	     "no source approved yet - approve your legitimate senders first; 58 messages from "
	     "sources not approved (7 failing)"},
	    {50, 50, 8, 7,
	     "100.0% of mail from approved sources passes DMARC (50 of 50) - safe to move to "
	     "p=quarantine, then p=reject; 8 messages from sources not approved (7 failing)"},
	    {100, 98, 0, 0,
	     "98.0% of mail from approved sources passes DMARC (98 of 100) - safe to move to "
	     "p=quarantine, then p=reject; 0 messages from sources not approved (0 failing)"},
	    {1000, 979, 1, 1,
	     "97.9% of mail from approved sources passes DMARC (979 of 1000) - not yet: fix "
	     "SPF/DKIM of the approved sources that fail; 1 messages from sources not approved "
	     "(1 failing)"},
	    {47, 40, 1, 0,
	     "85.1% of mail from approved sources passes DMARC (40 of 47) - not yet: fix SPF/DKIM "
	     "of the approved sources that fail; 1 messages from sources not approved (0 "
	     "failing)"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[400];
		reports_dash_ready(cases[i].approved, cases[i].pass, cases[i].other, cases[i].fail,
		                   out, sizeof(out));
		assert_string_equal(out, cases[i].want);
	}
}

/* A count forced into every record stored (0: as parsed) - what the parser
 * refuses today (over 2^32) but a store may hold: reports stored before,
 * or the sum of many reports. */
static uint64_t force_count;

/* store - one DMARC report (org, id) for example.org received at t: each
 * source "ip=count=pass|fail". */
static void store(void *db, const char *org, const char *id, int64_t t, const char *const *srcs,
                  size_t n)
{
	struct util_buf x;
	struct reports_inbound in;
	char err[256];
	int dups = 0;

	util_buf_init(&x);
	util_buf_printf(&x,
	                "<feedback><report_metadata><org_name>%s</org_name><report_id>%s"
	                "</report_id><date_range><begin>%lld</begin><end>%lld</end></date_range>"
	                "</report_metadata><policy_published><domain>example.org</domain><p>none"
	                "</p></policy_published>",
	                org, id, (long long)t - 86400, (long long)t - 1);
	for (size_t i = 0; i < n; i++) {
		char ip[64], res[8];
		unsigned cnt;
		assert_int_equal(sscanf(srcs[i], "%63[^=]=%u=%7s", ip, &cnt, res), 3);
		util_buf_printf(&x,
		                "<record><row><source_ip>%s</source_ip><count>%u</count>"
		                "<policy_evaluated><disposition>none</disposition><dkim>%s</dkim>"
		                "<spf>fail</spf></policy_evaluated></row><identifiers><header_from>"
		                "example.org</header_from></identifiers></record>",
		                ip, cnt, res);
	}
	util_buf_adds(&x, "</feedback>");
	memset(&in, 0, sizeof(in));
	in.dmarc = calloc(1, sizeof(*in.dmarc));
	assert_int_equal(reports_inbound_dmarc_xml(x.data, x.len, &in.dmarc[0], err, sizeof(err)),
	                 0);
	in.ndmarc = 1;
	for (size_t i = 0; force_count && i < in.dmarc[0].n; i++)
		in.dmarc[0].recs[i].count = force_count;
	assert_int_equal(reports_sqlite_backend.add_inbound(db, &in, t, "r@example.org", "Q", NULL,
	                                                    0, &dups, err, sizeof(err)),
	                 0);
	reports_inbound_clear(&in);
	util_buf_free(&x);
}

/* fake_rdns - the names of the reverse-DNS column: 192.0.2.1 has one,
 * the others none; records what was asked ("ip,ip,...", in order). */
static char asked[256];
static void fake_rdns(void *arg, const char *const *ips, size_t n, char **names)
{
	size_t len = strlen(asked);

	(void)arg;
	for (size_t i = 0; i < n; i++) {
		len += (size_t)snprintf(asked + len, sizeof(asked) - len, "%s%s", len ? "," : "",
		                        ips[i]);
		names[i] = strcmp(ips[i], "192.0.2.1") == 0 ? strdup("mail.example.org") : NULL;
	}
}
static const struct reports_dash_rdns rdns = {fake_rdns, NULL};

/* view - the view as parsed JSON. */
static json_t *view(const struct config *cfg, const char *what)
{
	struct util_buf b;
	char err[256];
	json_error_t je;

	util_buf_init(&b);
	assert_int_equal(reports_dash_json(cfg, what, 30, &rdns, &b, err, sizeof(err)), 0);
	json_t *j = json_loadb(b.data, b.len, 0, &je);
	util_buf_free(&b);
	assert_true(json_is_array(j));
	return j;
}

/* flags - "ip:approved:new,..." of the sources view. */
static void flags(const struct config *cfg, char *out, size_t outlen)
{
	json_t *j = view(cfg, "sources"), *o;
	size_t i, len = 0;

	out[0] = '\0';
	json_array_foreach(j, i, o)
	{
		len +=
		    (size_t)snprintf(out + len, outlen - len, "%s%s:%lld:%lld", i ? "," : "",
		                     json_string_value(json_object_get(o, "source_ip")),
		                     (long long)json_integer_value(json_object_get(o, "approved")),
		                     (long long)json_integer_value(json_object_get(o, "new")));
	}
	json_decref(j);
}

static long long inv(const struct config *cfg, const char *key)
{
	json_t *j = view(cfg, "inventory");
	assert_int_equal(json_array_size(j), 1);
	long long v = json_integer_value(json_object_get(json_array_get(j, 0), key));
	json_decref(j);
	return v;
}

static void test_views(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxdash-XXXXXX", err[256], f[512], path[300];
	assert_non_null(mkdtemp(dir));
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.queue_dir = dir;
	cfg.mta_sts_mode = 1;
	snprintf(path, sizeof(path), "%s/reports.db", dir);
	void *db = reports_sqlite_backend.open(path, err, sizeof(err));
	assert_non_null(db);
	int64_t t0 = (int64_t)time(NULL) - 1000;
	const char *r1[] = {"192.0.2.1=40=pass", "192.0.2.2=7=fail"};
	store(db, "Google", "g1", t0, r1, 2);

	/* never looked: every source not approved is new */
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:0:1,192.0.2.2:0:1");
	assert_int_equal(inv(&cfg, "new_sources"), 2);
	assert_int_equal(inv(&cfg, "seen_t"), -1);

	/* approved: no longer new; the readiness line follows */
	assert_int_equal(
	    reports_dash_approve(&cfg, "example.org", "192.0.2.1", true, err, sizeof(err)), 0);
	assert_int_equal(
	    reports_dash_approve(&cfg, "example.org", "192.0.2.1", true, err, sizeof(err)), 0);
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:1:0,192.0.2.2:0:1");
	json_t *j = view(&cfg, "inventory");
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "ready")),
	                    "100.0% of mail from approved sources passes DMARC (40 of 40) - safe "
	                    "to move to p=quarantine, then p=reject; 7 messages from sources not "
	                    "approved (7 failing)");
	json_decref(j);

	/* the look: up to what the page showed (t0) */
	assert_int_equal(reports_dash_seen(&cfg, "example.org", t0, err, sizeof(err)), 0);
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:1:0,192.0.2.2:0:0");
	assert_int_equal(inv(&cfg, "seen_t"), t0);

	/* a later report: its unknown source is new, a known one is not */
	const char *r2[] = {"192.0.2.2=1=fail", "198.51.100.9=3=pass"};
	store(db, "Yahoo", "y1", t0 + 10, r2, 2);
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:1:0,192.0.2.2:0:0,198.51.100.9:0:1");
	assert_int_equal(inv(&cfg, "new_sources"), 1);
	/* an older mark does not move the look back; one in the future is now */
	assert_int_equal(reports_dash_seen(&cfg, "example.org", 5, err, sizeof(err)), 0);
	assert_int_equal(inv(&cfg, "seen_t"), t0);
	assert_int_equal(reports_dash_seen(&cfg, "example.org", INT64_MAX, err, sizeof(err)), 0);
	assert_true(inv(&cfg, "seen_t") >= t0 + 1000 && inv(&cfg, "seen_t") <= time(NULL));
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:1:0,192.0.2.2:0:0,198.51.100.9:0:0");
	/* unapproved: back among the others (not new: seen) */
	assert_int_equal(
	    reports_dash_approve(&cfg, "example.org", "192.0.2.1", false, err, sizeof(err)), 0);
	flags(&cfg, f, sizeof(f));
	assert_string_equal(f, "192.0.2.1:0:0,192.0.2.2:0:0,198.51.100.9:0:0");

	/* the other views; an unknown one */
	j = view(&cfg, "daily"); /* one or two days (midnight between the reports) */
	long long total = 0, pass = 0;
	size_t k;
	json_t *o;
	json_array_foreach(j, k, o)
	{
		total += json_integer_value(json_object_get(o, "count"));
		pass += json_integer_value(json_object_get(o, "dmarc_pass"));
	}
	assert_true(total == 51 && pass == 43);
	json_decref(j);
	asked[0] = '\0';
	j = view(&cfg, "sources");
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "orgs")),
	                    "Google,Yahoo");
	/* reverse DNS: each address asked once, the biggest first; a name or null */
	assert_string_equal(asked, "192.0.2.1,192.0.2.2,198.51.100.9");
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "rdns")),
	                    "mail.example.org");
	assert_true(json_is_null(json_object_get(json_array_get(j, 1), "rdns")));
	json_decref(j);
	asked[0] = '\0';
	json_decref(view(&cfg, "daily")); /* only the sources view asks */
	json_decref(view(&cfg, "inventory"));
	assert_string_equal(asked, "");
	struct util_buf b;
	util_buf_init(&b);
	assert_int_equal(reports_dash_json(&cfg, "nope", 30, NULL, &b, err, sizeof(err)), -1);
	/* no resolver: rdns is null */
	assert_int_equal(reports_dash_json(&cfg, "sources", 30, NULL, &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "\"rdns\":null"));
	assert_null(strstr(b.data, "mail.example.org"));
	util_buf_reset(&b);

	/* the CLI: the same views as text */
	assert_int_equal(
	    reports_inbound_summary(&cfg, "EXAMPLE.org", 30, &rdns, &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "mail.example.org"));
	assert_non_null(strstr(b.data, "example.org: no source approved yet"));
	assert_non_null(strstr(b.data, "example.org: 0 new sources since the last look (seen up"));
	assert_non_null(strstr(b.data, "MTA-STS mode mxgate serves: enforce"));
	assert_non_null(strstr(b.data, "198.51.100.9"));
	util_buf_free(&b);

	reports_sqlite_backend.close(db);
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		char p[320];
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Red team: counts whose sum passes 2^63 (three records of 2^62, two
 * TLS-RPT reports of 2^62 sessions).  SQLite's sum() failed with "integer
 * overflow" and took the sources, inventory, daily and tlsrpt views down
 * for every domain; the views saturate instead. */
static void test_huge_counts(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxdash-XXXXXX", err[256], path[300];
	assert_non_null(mkdtemp(dir));
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.queue_dir = dir;
	snprintf(path, sizeof(path), "%s/reports.db", dir);
	void *db = reports_sqlite_backend.open(path, err, sizeof(err));
	assert_non_null(db);
	int64_t t0 = (int64_t)time(NULL) - 1000;
	const char *r1[] = {"192.0.2.1=1=pass", "192.0.2.1=1=pass", "192.0.2.1=1=pass"};
	force_count = 1ull << 62;
	store(db, "Evil", "e1", t0, r1, 3);
	force_count = 0;
	const char *r2[] = {"192.0.2.2=5=pass"};
	store(db, "Good", "g1", t0, r2, 1);
	for (int k = 0; k < 2; k++) {
		struct reports_inbound in;
		int dups = 0;
		char id[8];
		memset(&in, 0, sizeof(in));
		snprintf(id, sizeof(id), "t%d", k);
		in.tlsrpt = calloc(1, sizeof(*in.tlsrpt));
		in.ntlsrpt = 1;
		in.tlsrpt[0].org_name = strdup("Evil");
		in.tlsrpt[0].report_id = strdup(id);
		in.tlsrpt[0].contact = strdup("");
		in.tlsrpt[0].begin = t0 - 86400;
		in.tlsrpt[0].end = t0;
		in.tlsrpt[0].pols = calloc(1, sizeof(*in.tlsrpt[0].pols));
		in.tlsrpt[0].n = 1;
		in.tlsrpt[0].pols[0].policy_type = strdup("sts");
		in.tlsrpt[0].pols[0].policy_domain = strdup("example.org");
		in.tlsrpt[0].pols[0].failures = strdup("");
		in.tlsrpt[0].pols[0].success = 1ull << 62;
		in.tlsrpt[0].pols[0].failure = 1ull << 62;
		assert_int_equal(reports_sqlite_backend.add_inbound(db, &in, t0, "r@example.org",
		                                                    "Q", NULL, 0, &dups, err,
		                                                    sizeof(err)),
		                 0);
		reports_inbound_clear(&in);
	}

	json_t *j = view(&cfg, "sources");
	assert_int_equal(json_array_size(j), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "source_ip")),
	                    "192.0.2.1");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "count")),
	                 INT64_MAX);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 1), "count")), 5);
	json_decref(j);
	assert_int_equal(
	    reports_dash_approve(&cfg, "example.org", "192.0.2.1", true, err, sizeof(err)), 0);
	assert_int_equal(
	    reports_dash_approve(&cfg, "example.org", "192.0.2.2", true, err, sizeof(err)), 0);
	assert_int_equal(inv(&cfg, "approved_count"), INT64_MAX);
	j = view(&cfg, "daily");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "count")),
	                 INT64_MAX);
	json_decref(j);
	j = view(&cfg, "tlsrpt");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "success")),
	                 INT64_MAX);
	json_decref(j);

	reports_sqlite_backend.close(db);
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		char p[320];
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ready),
	    cmocka_unit_test(test_views),
	    cmocka_unit_test(test_huge_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
