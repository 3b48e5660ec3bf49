/*
 * reports-dash.c - what the admin dashboard shows of the reports mailed to
 * us (issue 15), as JSON: the sources sending as each domain with their
 * DMARC/SPF/DKIM pass counts, the volume per day, and the TLS-RPT summary
 * per policy domain and reporting organisation.
 *
 * Reads the SQLite store read-only (its own connection per call, WAL: safe
 * beside the writer threads); the caller runs it off the SMTP loop (the
 * admin listener's thread).  Strings come from reports, i.e. from anyone:
 * they leave here JSON-escaped (jansson) and the page puts them into the
 * DOM as text only.
 */
#include "reports-internal.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const dash_sql[] = {
    /* sources */
    "SELECT d.domain, r.source_ip, group_concat(DISTINCT d.org_name), sum(r.count),"
    " sum(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END),"
    " sum(CASE WHEN r.spf = 'pass' THEN r.count ELSE 0 END),"
    " sum(CASE WHEN r.dkim = 'pass' THEN r.count ELSE 0 END),"
    " (SELECT count(*) FROM inbound_approved a WHERE a.domain = d.domain"
    "  AND a.source_ip = r.source_ip)"
    " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
    " WHERE d.end_t >= ?1 GROUP BY d.domain, r.source_ip ORDER BY d.domain, 4 DESC LIMIT 5000",
    /* daily */
    "SELECT d.domain, date(d.begin_t, 'unixepoch'), '', sum(r.count),"
    " sum(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END), 0, 0"
    " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
    " WHERE d.end_t >= ?1 GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5000",
    /* tlsrpt */
    "SELECT p.policy_domain, p.policy_type, t.org_name, sum(p.success), sum(p.failure), 0, 0,"
    " group_concat(p.failures, ';')"
    " FROM inbound_tlsrpt_policy p JOIN inbound_tlsrpt t ON t.id = p.report"
    " WHERE t.end_t >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 5 DESC LIMIT 5000",
    /* verdicts: what mxgate itself judged ([reports] record) */
    "SELECT coalesce(policy_domain, header_from), disposition,"
    " CASE WHEN override_type IS NOT NULL THEN 'override ' || override_type"
    " ELSE 'dmarc=' || dmarc END, count(*), 0, 0, 0, 0"
    " FROM evaluation WHERE t >= ?1 AND (disposition != 'none' OR override_type IS NOT NULL)"
    " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC LIMIT 5000",
};
static const char *const dash_names[] = {"sources", "daily", "tlsrpt", "verdicts"};
static const char *const dash_cols[][8] = {
    {"domain", "source_ip", "orgs", "count", "dmarc_pass", "spf_pass", "dkim_pass", "approved"},
    {"domain", "day", NULL, "count", "dmarc_pass", NULL, NULL, NULL},
    {"policy_domain", "policy_type", "org", "success", "failure", NULL, NULL, "failures"},
    {"domain", "disposition", "reason", "count", NULL, NULL, NULL, NULL},
};

/* sum_failures - "a=1;b=2;a=3" -> "a=4;b=2" (the failure types of several
 * reports of one organisation, summed); malloc'd. */
static char *sum_failures(const char *s)
{
	struct {
		char name[65];
		unsigned long long n;
	} t[32];
	size_t nt = 0;
	struct util_buf out;

	while (s != NULL && *s) {
		size_t len = strcspn(s, ";");
		const char *eq = memchr(s, '=', len);
		if (eq != NULL && (size_t)(eq - s) < sizeof(t[0].name)) {
			size_t nl = (size_t)(eq - s), i;
			unsigned long long v = strtoull(eq + 1, NULL, 10);
			for (i = 0; i < nt; i++)
				if (strlen(t[i].name) == nl && strncmp(t[i].name, s, nl) == 0)
					break;
			if (i == nt && nt < sizeof(t) / sizeof(t[0])) {
				memcpy(t[nt].name, s, nl);
				t[nt].name[nl] = '\0';
				t[nt++].n = 0;
			}
			if (i < nt)
				t[i].n += v;
		}
		s += len;
		if (*s == ';')
			s++;
	}
	util_buf_init(&out);
	for (size_t i = 0; i < nt; i++)
		util_buf_printf(&out, "%s%s=%llu", i ? ";" : "", t[i].name, t[i].n);
	util_buf_add(&out, "", 1);
	return out.data;
}

/* reports_dash_json - see reports.h. */
int reports_dash_json(const struct config *cfg, const char *what, int days, struct util_buf *out,
                      char *err, size_t errlen)
{
	const struct reports_backend *be = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	json_t *arr = NULL;
	char *target = NULL, *js = NULL;
	size_t k;
	int rc = -1;

	for (k = 0; k < sizeof(dash_names) / sizeof(dash_names[0]); k++)
		if (strcmp(what, dash_names[k]) == 0)
			break;
	if (k == sizeof(dash_names) / sizeof(dash_names[0])) {
		snprintf(err, errlen, "unknown view");
		return -1;
	}
	if ((target = reports_db_target(cfg, &be, err, errlen)) == NULL)
		return -1;
	if (be != &reports_sqlite_backend) {
		snprintf(err, errlen, "the dashboard reads a SQLite store only");
		goto cleanup;
	}
	if (sqlite3_open_v2(target, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, dash_sql[k], -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "cannot open the store");
		goto cleanup;
	}
	sqlite3_bind_int64(st, 1, (int64_t)time(NULL) - (int64_t)days * 86400);
	arr = json_array();
	int s;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o = json_object();
		for (int c = 0; c < 8 && c < sqlite3_column_count(st); c++) {
			const char *name = dash_cols[k][c];
			if (name == NULL)
				continue;
			if (sqlite3_column_type(st, c) == SQLITE_INTEGER)
				json_object_set_new(o, name,
				                    json_integer(sqlite3_column_int64(st, c)));
			else {
				const unsigned char *t = sqlite3_column_text(st, c);
				char *sum = strcmp(name, "failures") == 0
				                ? sum_failures(t ? (const char *)t : "")
				                : NULL;
				json_object_set_new(o, name,
				                    json_string(sum ? sum
				                                : t ? (const char *)t
				                                    : ""));
				free(sum);
				if (json_object_get(o, name) == NULL) /* not UTF-8 */
					json_object_set_new(o, name, json_string("?"));
			}
		}
		json_array_append_new(arr, o);
	}
	if (s != SQLITE_DONE) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
		goto cleanup;
	}
	js = json_dumps(arr, JSON_COMPACT | JSON_ESCAPE_SLASH);
	if (js == NULL) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	util_buf_adds(out, js);
	rc = 0;
cleanup:
	free(js);
	json_decref(arr);
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(target);
	return rc;
}

/* reports_inbound_summary - see reports.h. */
int reports_inbound_summary(const struct config *cfg, const char *domain, int days,
                            struct util_buf *out, char *err, size_t errlen)
{
	static const char *const views[] = {"sources", "tlsrpt"};
	int rc = -1;

	for (size_t v = 0; v < 2; v++) {
		struct util_buf js;
		json_error_t je;
		util_buf_init(&js);
		if (reports_dash_json(cfg, views[v], days, &js, err, errlen) < 0) {
			util_buf_free(&js);
			return -1;
		}
		json_t *arr = json_loadb(js.data ? js.data : "[]", js.data ? js.len : 2, 0, &je);
		util_buf_free(&js);
		if (!json_is_array(arr)) {
			snprintf(err, errlen, "bad view");
			json_decref(arr);
			return -1;
		}
		util_buf_printf(out,
		                v == 0 ? "DMARC sources (last %d days):\n"
		                         "%-24s %-40s %9s %7s %7s %7s  %s\n"
		                       : "TLS-RPT (last %d days):\n"
		                         "%-24s %-6s %-30s %9s %9s  %s\n",
		                days, v == 0 ? "domain" : "policy_domain",
		                v == 0 ? "source_ip" : "type", v == 0 ? "messages" : "org",
		                v == 0 ? "dmarc" : "success", v == 0 ? "spf" : "failure",
		                v == 0 ? "dkim" : "failure types", v == 0 ? "reported by" : "");
		size_t i, shown = 0;
		json_t *o;
		json_array_foreach(arr, i, o)
		{
#define S(k)                                                                                       \
	(json_string_value(json_object_get(o, k)) ? json_string_value(json_object_get(o, k)) : "")
#define N(k) ((long long)json_integer_value(json_object_get(o, k)))
			const char *d = S(v == 0 ? "domain" : "policy_domain");
			if (domain != NULL && strcasecmp(domain, d) != 0)
				continue;
			shown++;
			if (v == 0) {
				long long n = N("count");
				util_buf_printf(
				    out, "%-24s %-40s %9lld %6.1f%% %6.1f%% %6.1f%%  %s\n", d,
				    S("source_ip"), n, n ? 100.0 * N("dmarc_pass") / n : 0.0,
				    n ? 100.0 * N("spf_pass") / n : 0.0,
				    n ? 100.0 * N("dkim_pass") / n : 0.0, S("orgs"));
			} else {
				util_buf_printf(out, "%-24s %-6s %-30s %9lld %9lld  %s\n", d,
				                S("policy_type"), S("org"), N("success"),
				                N("failure"), S("failures"));
			}
#undef S
#undef N
		}
		if (shown == 0)
			util_buf_adds(out, "(none)\n");
		util_buf_adds(out, "\n");
		json_decref(arr);
	}
	rc = 0;
	return rc;
}

/* reports_dash_approve - see reports.h. */
int reports_dash_approve(const struct config *cfg, const char *domain, const char *ip,
                         bool approved, char *err, size_t errlen)
{
	const struct reports_backend *be = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *target = NULL;
	int rc = -1;

	if (strlen(domain) > REPORTS_IN_MAX_STR || strlen(ip) > REPORTS_IN_MAX_STR) {
		snprintf(err, errlen, "too long");
		return -1;
	}
	if ((target = reports_db_target(cfg, &be, err, errlen)) == NULL)
		return -1;
	if (be != &reports_sqlite_backend) {
		snprintf(err, errlen, "the dashboard reads a SQLite store only");
		goto cleanup;
	}
	if (sqlite3_open_v2(target, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
	                       approved ? "INSERT OR REPLACE INTO inbound_approved VALUES (?1, ?2,"
	                                  " strftime('%s','now'))"
	                                : "DELETE FROM inbound_approved WHERE domain = ?1 AND"
	                                  " source_ip = ?2",
	                       -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "cannot open the store");
		goto cleanup;
	}
	sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, ip, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(db));
		goto cleanup;
	}
	rc = 0;
cleanup:
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(target);
	return rc;
}
