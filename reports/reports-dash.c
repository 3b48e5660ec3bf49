/*
 * reports-dash.c - what the admin dashboard and `mxgate reports inbound`
 * show of the reports mailed to us (issue 15), as JSON or text: the
 * sources sending as each domain with their DMARC/SPF/DKIM pass counts,
 * whether the postmaster approved them and whether they are new since his
 * last look, the volume per day, the sender inventory (readiness line per
 * domain), the TLS-RPT summary per policy domain and reporting
 * organisation, and mxgate's own rejections/quarantines.
 *
 * The store: whichever [reports] database names (SQLite or PostgreSQL),
 * through the backend's query call; each view has its SQL in both
 * dialects here.  A connection per call (SQLite in WAL mode: safe beside
 * the writer threads); the callers run off the SMTP loop (the admin
 * listener's thread, the CLI).
 *
 * "New since the last look": a source (domain, source IP) is new when the
 * postmaster has not approved it and the first report naming it was
 * received (inbound_dmarc.received_t, whole seconds) after the domain's
 * inbound_seen.seen_t - or the domain was never marked as seen.  "Mark as
 * seen" stores the first-seen time of the newest source the page showed
 * (never later than now, never moving back).
 *
 * Strings come from reports, i.e. from anyone: they leave here
 * JSON-escaped (jansson) and the page puts them into the DOM as text only;
 * the CLI replaces control characters (the parser already did).
 * Ownership: every result is appended to the caller's buffer.
 */
#include "reports-internal.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One view: its SQL per backend (0 SQLite, 1 PostgreSQL; one parameter,
 * the start of the period; SQLite sums as CAST(total(x) AS INTEGER), which
 * saturates where sum() fails with "integer overflow" - one report with
 * huge counts took the whole view down (red team); PostgreSQL's sum of
 * bigint is numeric, strtoll saturates it) and its columns ('i' integer,
 * 's' string, 'o' a comma-separated list, sorted here (the two dialects
 * aggregate in different orders), 'f' the failure types, summed per type). */
struct dash_view {
	const char *name;
	const char *sql[2];
	const char *cols[10];
	const char *types;
};

static const struct dash_view dash_views[] = {
    {"sources",
     {"WITH fs AS (SELECT d.domain AS domain, r.source_ip AS ip, min(d.received_t) AS first_t"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report GROUP BY 1, 2),"
      " w AS (SELECT d.domain AS domain, r.source_ip AS ip, group_concat(DISTINCT d.org_name)"
      " AS orgs, CAST(total(r.count) AS INTEGER) AS n,"
      " CAST(total(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END) AS "
      "INTEGER) AS pass,"
      " CAST(total(CASE WHEN r.spf = 'pass' THEN r.count ELSE 0 END) AS INTEGER) AS spf,"
      " CAST(total(CASE WHEN r.dkim = 'pass' THEN r.count ELSE 0 END) AS INTEGER) AS dkim"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
      " WHERE d.end_t >= ?1 GROUP BY 1, 2)"
      " SELECT w.domain, w.ip, w.orgs, w.n, w.pass, w.spf, w.dkim, a.domain IS NOT NULL,"
      " fs.first_t, a.domain IS NULL AND (s.seen_t IS NULL OR fs.first_t > s.seen_t)"
      " FROM w JOIN fs ON fs.domain = w.domain AND fs.ip = w.ip"
      " LEFT JOIN inbound_approved a ON a.domain = w.domain AND a.source_ip = w.ip"
      " LEFT JOIN inbound_seen s ON s.domain = w.domain"
      " ORDER BY w.domain, w.n DESC, w.ip LIMIT 5000",
      "WITH fs AS (SELECT d.domain AS domain, r.source_ip AS ip, min(d.received_t) AS first_t"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report GROUP BY 1, 2),"
      " w AS (SELECT d.domain AS domain, r.source_ip AS ip,"
      " string_agg(DISTINCT d.org_name, ',') AS orgs, sum(r.count) AS n,"
      " sum(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END) AS pass,"
      " sum(CASE WHEN r.spf = 'pass' THEN r.count ELSE 0 END) AS spf,"
      " sum(CASE WHEN r.dkim = 'pass' THEN r.count ELSE 0 END) AS dkim"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
      " WHERE d.end_t >= $1::bigint GROUP BY 1, 2)"
      " SELECT w.domain, w.ip, w.orgs, w.n, w.pass, w.spf, w.dkim,"
      " (a.domain IS NOT NULL)::int, fs.first_t,"
      " (a.domain IS NULL AND (s.seen_t IS NULL OR fs.first_t > s.seen_t))::int"
      " FROM w JOIN fs ON fs.domain = w.domain AND fs.ip = w.ip"
      " LEFT JOIN inbound_approved a ON a.domain = w.domain AND a.source_ip = w.ip"
      " LEFT JOIN inbound_seen s ON s.domain = w.domain"
      " ORDER BY w.domain, w.n DESC, w.ip LIMIT 5000"},
     {"domain", "source_ip", "orgs", "count", "dmarc_pass", "spf_pass", "dkim_pass", "approved",
      "first_seen", "new"},
     "ssoiiiiiii"},
    {"daily",
     {"SELECT d.domain, date(d.begin_t, 'unixepoch'), CAST(total(r.count) AS INTEGER),"
      " CAST(total(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END) AS INTEGER)"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
      " WHERE d.end_t >= ?1 GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5000",
      "SELECT d.domain, to_char(to_timestamp(d.begin_t) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),"
      " sum(r.count), sum(CASE WHEN r.dkim = 'pass' OR r.spf = 'pass' THEN r.count ELSE 0 END)"
      " FROM inbound_dmarc_rec r JOIN inbound_dmarc d ON d.id = r.report"
      " WHERE d.end_t >= $1::bigint GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5000"},
     {"domain", "day", "count", "dmarc_pass"},
     "ssii"},
    {"tlsrpt",
     {"SELECT p.policy_domain, p.policy_type, t.org_name, CAST(total(p.success) AS INTEGER), "
      "CAST(total(p.failure) AS INTEGER),"
      " group_concat(p.failures, ';')"
      " FROM inbound_tlsrpt_policy p JOIN inbound_tlsrpt t ON t.id = p.report"
      " WHERE t.end_t >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 5 DESC, 3 LIMIT 5000",
      "SELECT p.policy_domain, p.policy_type, t.org_name, sum(p.success), sum(p.failure),"
      " string_agg(p.failures, ';')"
      " FROM inbound_tlsrpt_policy p JOIN inbound_tlsrpt t ON t.id = p.report"
      " WHERE t.end_t >= $1::bigint GROUP BY 1, 2, 3 ORDER BY 1, 5 DESC, 3 LIMIT 5000"},
     {"policy_domain", "policy_type", "org", "success", "failure", "failures"},
     "sssiif"},
    /* what mxgate itself judged ([reports] record): not accepted as is */
    {"verdicts",
     {"SELECT coalesce(policy_domain, header_from), disposition,"
      " CASE WHEN override_type IS NOT NULL THEN 'override ' || override_type"
      " ELSE 'dmarc=' || dmarc END, count(*)"
      " FROM evaluation WHERE t >= ?1 AND (disposition != 'none' OR override_type IS NOT NULL)"
      " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC, 2, 3 LIMIT 5000",
      "SELECT coalesce(policy_domain, header_from), disposition,"
      " CASE WHEN override_type IS NOT NULL THEN 'override ' || override_type"
      " ELSE 'dmarc=' || dmarc END, count(*)"
      " FROM evaluation WHERE t >= $1::bigint AND (disposition != 'none' OR"
      " override_type IS NOT NULL)"
      " GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC, 2, 3 LIMIT 5000"},
     {"domain", "disposition", "reason", "count"},
     "sssi"},
};
#define DASH_NVIEWS (sizeof(dash_views) / sizeof(dash_views[0]))

/* The writes: approve, unapprove, mark as seen (per backend). */
static const char *const dash_sql_approve[2] = {
    "INSERT OR REPLACE INTO inbound_approved VALUES (?1, ?2, strftime('%s','now'))",
    "INSERT INTO inbound_approved VALUES ($1, $2, extract(epoch from now())::bigint)"
    " ON CONFLICT (domain, source_ip) DO UPDATE SET approved_at = excluded.approved_at"};
static const char *const dash_sql_unapprove[2] = {
    "DELETE FROM inbound_approved WHERE domain = ?1 AND source_ip = ?2",
    "DELETE FROM inbound_approved WHERE domain = $1 AND source_ip = $2"};
static const char *const dash_sql_seen[2] = {
    "INSERT INTO inbound_seen VALUES (?1, ?2, strftime('%s','now')) ON CONFLICT (domain)"
    " DO UPDATE SET seen_t = max(seen_t, excluded.seen_t), marked_at = excluded.marked_at",
    "INSERT INTO inbound_seen VALUES ($1, $2::bigint, extract(epoch from now())::bigint)"
    " ON CONFLICT (domain) DO UPDATE SET seen_t = greatest(inbound_seen.seen_t,"
    " excluded.seen_t), marked_at = excluded.marked_at"};
static const char *const dash_sql_seen_get[2] = {
    "SELECT domain, seen_t FROM inbound_seen ORDER BY 1",
    "SELECT domain, seen_t FROM inbound_seen ORDER BY 1"};

/* A connection to the store of cfg. */
struct dash_db {
	const struct reports_backend *be;
	void *db;
	int dialect; /* index into the SQL arrays */
};

/* dash_open - the store of cfg, migrated; 0/-1 + err. */
static int dash_open(const struct config *cfg, struct dash_db *d, char *err, size_t errlen)
{
	char *target = reports_db_target(cfg, &d->be, err, errlen);

	d->db = NULL;
	if (target == NULL)
		return -1;
	d->dialect = d->be == &reports_pg_backend ? 1 : 0;
	if (d->be->query == NULL) {
		snprintf(err, errlen, "the %s store cannot serve the dashboard", d->be->name);
		free(target);
		return -1;
	}
	d->db = d->be->open(target, err, errlen);
	free(target);
	return d->db != NULL ? 0 : -1;
}

static void dash_close(struct dash_db *d)
{
	if (d->db != NULL)
		d->be->close(d->db);
	d->db = NULL;
}

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
	util_buf_add(&out, "", 1);
	out.len = 0;
	for (size_t i = 0; i < nt; i++)
		util_buf_printf(&out, "%s%s=%llu", i ? ";" : "", t[i].name, t[i].n);
	return out.data;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* sort_list - "b,a,c" -> "a,b,c" (byte order); malloc'd. */
static char *sort_list(const char *s)
{
	char *copy = util_xstrdup(s), *items[64], *save = NULL;
	size_t n = 0;
	struct util_buf out;

	for (char *t = strtok_r(copy, ",", &save); t != NULL && n < 64;
	     t = strtok_r(NULL, ",", &save))
		items[n++] = t;
	qsort(items, n, sizeof(items[0]), cmp_str);
	util_buf_init(&out);
	util_buf_add(&out, "", 1);
	out.len = 0;
	for (size_t i = 0; i < n; i++)
		util_buf_printf(&out, "%s%s", i ? "," : "", items[i]);
	free(copy);
	return out.data;
}

struct rows_ctx {
	const struct dash_view *v;
	json_t *arr;
};

/* row_json - one row of a view as a JSON object appended to the array. */
static int row_json(void *arg, int ncol, const char *const *vals)
{
	struct rows_ctx *x = arg;
	json_t *o = json_object();

	for (int c = 0; c < ncol && x->v->types[c] != '\0'; c++) {
		const char *name = x->v->cols[c], *t = vals[c] ? vals[c] : "";
		if (x->v->types[c] == 'i') {
			json_object_set_new(o, name,
			                    json_integer(vals[c] ? strtoll(vals[c], NULL, 10) : 0));
			continue;
		}
		char *sum = x->v->types[c] == 'f'   ? sum_failures(t)
		            : x->v->types[c] == 'o' ? sort_list(t)
		                                    : NULL;
		json_t *s = json_string(sum ? sum : t);
		free(sum);
		json_object_set_new(o, name, s ? s : json_string("?")); /* not UTF-8 */
	}
	json_array_append_new(x->arr, o);
	return 0;
}

/* view_rows - the rows of view v since `since`, as a new JSON array. */
static json_t *view_rows(struct dash_db *d, const struct dash_view *v, int64_t since, char *err,
                         size_t errlen)
{
	char p1[24];
	const char *params[1] = {p1};
	struct rows_ctx x = {v, json_array()};

	snprintf(p1, sizeof(p1), "%lld", (long long)since);
	if (d->be->query(d->db, v->sql[d->dialect], 1, params, row_json, &x, err, errlen) < 0) {
		json_decref(x.arr);
		return NULL;
	}
	return x.arr;
}

/* reports_dash_ready - see reports-internal.h. */
void reports_dash_ready(uint64_t approved, uint64_t approved_pass, uint64_t other,
                        uint64_t other_fail, char *out, size_t outlen)
{
	char head[256];

	if (approved == 0) {
		snprintf(head, sizeof(head),
		         "no source approved yet - approve your legitimate senders first");
	} else {
		double p = 100.0 * (double)approved_pass / (double)approved;
		/* 98%: forwarding and mailing lists break some legitimate mail */
		snprintf(head, sizeof(head),
		         "%.1f%% of mail from approved sources passes DMARC (%llu of %llu) - %s", p,
		         (unsigned long long)approved_pass, (unsigned long long)approved,
		         p >= 98.0 ? "safe to move to p=quarantine, then p=reject"
		                   : "not yet: fix SPF/DKIM of the approved sources that fail");
	}
	snprintf(out, outlen, "%s; %llu messages from sources not approved (%llu failing)", head,
	         (unsigned long long)other, (unsigned long long)other_fail);
}

#define JI(o, k) ((long long)json_integer_value(json_object_get((o), (k))))
#define JS(o, k)                                                                                   \
	(json_string_value(json_object_get((o), (k)))                                              \
	     ? json_string_value(json_object_get((o), (k)))                                        \
	     : "")

/* sat_add - a + b for counts (>= 0), at most INT64_MAX: the views
 * saturate, the sums of their rows must not overflow either. */
static long long sat_add(long long a, long long b)
{
	return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

/* inventory_rows - the sender inventory per domain, from the sources:
 * approved/other volumes, new sources, the last look and the readiness
 * line; a new JSON array. */
static json_t *inventory_rows(struct dash_db *d, json_t *sources, char *err, size_t errlen)
{
	json_t *per = json_object(), *arr = json_array(), *seen = json_array(), *o;
	struct rows_ctx x = {NULL, seen};
	static const struct dash_view seen_view = {
	    "seen", {NULL, NULL}, {"domain", "seen_t"}, "si"};
	size_t i;

	x.v = &seen_view;
	if (d->be->query(d->db, dash_sql_seen_get[d->dialect], 0, NULL, row_json, &x, err, errlen) <
	    0) {
		json_decref(per);
		json_decref(arr);
		json_decref(seen);
		return NULL;
	}
	json_array_foreach(sources, i, o)
	{
		const char *dom = JS(o, "domain");
		json_t *p = json_object_get(per, dom);
		if (p == NULL) {
			p = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "domain", dom,
			              "approved_count", (json_int_t)0, "approved_pass",
			              (json_int_t)0, "other_count", (json_int_t)0, "other_fail",
			              (json_int_t)0, "sources", (json_int_t)0, "new_sources",
			              (json_int_t)0, "seen_t", (json_int_t)-1);
			if (p == NULL)
				continue; /* not UTF-8: cannot happen, the view checked */
			json_object_set_new(per, dom, p);
			json_array_append(arr, p);
		}
		long long n = JI(o, "count"), pass = JI(o, "dmarc_pass");
#define ADD(k, v) json_object_set_new(p, k, json_integer(sat_add(JI(p, k), (v))))
		if (JI(o, "approved")) {
			ADD("approved_count", n);
			ADD("approved_pass", pass);
		} else {
			ADD("other_count", n);
			ADD("other_fail", n > pass ? n - pass : 0);
		}
		ADD("sources", 1);
		ADD("new_sources", JI(o, "new") ? 1 : 0);
#undef ADD
	}
	json_array_foreach(seen, i, o)
	{
		json_t *p = json_object_get(per, JS(o, "domain"));
		if (p != NULL)
			json_object_set_new(p, "seen_t", json_integer(JI(o, "seen_t")));
	}
	json_array_foreach(arr, i, o)
	{
		char line[400];
		reports_dash_ready((uint64_t)JI(o, "approved_count"),
		                   (uint64_t)JI(o, "approved_pass"), (uint64_t)JI(o, "other_count"),
		                   (uint64_t)JI(o, "other_fail"), line, sizeof(line));
		json_object_set_new(o, "ready", json_string(line));
	}
	json_decref(per);
	json_decref(seen);
	return arr;
}

/* cmp_count_desc - source rows by message count, biggest first. */
static int cmp_count_desc(const void *a, const void *b)
{
	long long x = JI(*(json_t *const *)a, "count"), y = JI(*(json_t *const *)b, "count");

	return x < y ? 1 : x > y ? -1 : 0;
}

/* add_rdns - set "rdns" of every source row: the name rdns gives its
 * address, or null (the REPORTS_DASH_RDNS_MAX distinct addresses of the
 * biggest rows are asked for; the rest stay null). */
static void add_rdns(json_t *arr, const struct reports_dash_rdns *rdns)
{
	const char **ips = util_xcalloc(REPORTS_DASH_RDNS_MAX, sizeof(*ips));
	char **names = util_xcalloc(REPORTS_DASH_RDNS_MAX, sizeof(*names));
	json_t **order = util_xcalloc(json_array_size(arr) + 1, sizeof(*order));
	size_t n = 0, i, k, nrows = json_array_size(arr);
	json_t *o;

	/* Biggest first (rows are per domain, by volume within it). */
	json_array_foreach(arr, i, o) order[i] = o;
	qsort(order, nrows, sizeof(*order), cmp_count_desc);
	for (i = 0; i < nrows && n < REPORTS_DASH_RDNS_MAX; i++) {
		const char *ip = JS(order[i], "source_ip");
		for (k = 0; k < n && strcmp(ips[k], ip) != 0; k++)
			;
		if (k == n)
			ips[n++] = ip;
	}
	if (rdns != NULL && rdns->fn != NULL && n > 0)
		rdns->fn(rdns->arg, ips, n, names);
	json_array_foreach(arr, i, o)
	{
		const char *ip = JS(o, "source_ip");
		json_t *v = json_null();

		for (k = 0; k < n; k++)
			if (strcmp(ips[k], ip) == 0) {
				if (names[k] != NULL)
					v = json_string(names[k]);
				break;
			}
		json_object_set_new(o, "rdns", v ? v : json_null());
	}
	for (k = 0; k < n; k++)
		free(names[k]);
	free(order);
	free(names);
	free(ips);
}

/* view_json - the view named what as a new JSON array (d open). */
static json_t *view_json(struct dash_db *d, const char *what, int days,
                         const struct reports_dash_rdns *rdns, char *err, size_t errlen)
{
	int64_t since = (int64_t)time(NULL) - (int64_t)days * 86400;

	if (strcmp(what, "inventory") == 0) {
		json_t *src = view_rows(d, &dash_views[0], since, err, errlen);
		json_t *inv = src ? inventory_rows(d, src, err, errlen) : NULL;
		json_decref(src);
		return inv;
	}
	if (strcmp(what, "sources") == 0) {
		json_t *src = view_rows(d, &dash_views[0], since, err, errlen);
		if (src != NULL)
			add_rdns(src, rdns);
		return src;
	}
	for (size_t k = 0; k < DASH_NVIEWS; k++)
		if (strcmp(what, dash_views[k].name) == 0)
			return view_rows(d, &dash_views[k], since, err, errlen);
	snprintf(err, errlen, "unknown view");
	return NULL;
}

/* reports_dash_json - see reports.h. */
int reports_dash_json(const struct config *cfg, const char *what, int days,
                      const struct reports_dash_rdns *rdns, struct util_buf *out, char *err,
                      size_t errlen)
{
	struct dash_db d;
	json_t *arr = NULL;
	char *js = NULL;
	int rc = -1;

	if (strcmp(what, "inventory") != 0) {
		size_t k;
		for (k = 0; k < DASH_NVIEWS && strcmp(what, dash_views[k].name) != 0; k++)
			;
		if (k == DASH_NVIEWS) {
			snprintf(err, errlen, "unknown view");
			return -1;
		}
	}
	if (dash_open(cfg, &d, err, errlen) < 0)
		return -1;
	if ((arr = view_json(&d, what, days, rdns, err, errlen)) == NULL)
		goto cleanup;
	if ((js = json_dumps(arr, JSON_COMPACT | JSON_ESCAPE_SLASH)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	util_buf_adds(out, js);
	rc = 0;
cleanup:
	free(js);
	json_decref(arr);
	dash_close(&d);
	return rc;
}

/* pct - 100 a / b, 0 for b = 0. */
static double pct(long long a, long long b)
{
	return b > 0 ? 100.0 * (double)a / (double)b : 0.0;
}

/* reports_inbound_summary - see reports.h: the dashboard's views, in the
 * page's order, as text. */
int reports_inbound_summary(const struct config *cfg, const char *domain, int days,
                            const struct reports_dash_rdns *rdns, struct util_buf *out,
                            char *err, size_t errlen)
{
	static const char *const views[] = {"daily", "inventory", "sources", "tlsrpt", "verdicts"};
	static const char *const modes[] = {"testing", "enforce", "none"};
	json_t *v[5] = {NULL, NULL, NULL, NULL, NULL}, *o;
	struct dash_db d;
	size_t i, shown;
	int rc = -1;

	if (dash_open(cfg, &d, err, errlen) < 0)
		return -1;
	for (size_t k = 0; k < 5; k++)
		if ((v[k] = view_json(&d, views[k], days, rdns, err, errlen)) == NULL)
			goto cleanup;
#define SKIP(o, key) (domain != NULL && strcasecmp(domain, JS(o, key)) != 0)
	util_buf_printf(out, "DMARC volume per day (last %d days):\n%-24s %-10s %9s %10s\n", days,
	                "domain", "day", "messages", "dmarc pass");
	shown = 0;
	json_array_foreach(v[0], i, o)
	{
		if (SKIP(o, "domain"))
			continue;
		shown++;
		util_buf_printf(out, "%-24s %-10s %9lld %9.1f%%\n", JS(o, "domain"), JS(o, "day"),
		                JI(o, "count"), pct(JI(o, "dmarc_pass"), JI(o, "count")));
	}
	util_buf_adds(out, shown ? "\n" : "(none)\n\n");

	util_buf_adds(out, "Sender inventory:\n");
	shown = 0;
	json_array_foreach(v[1], i, o)
	{
		if (SKIP(o, "domain"))
			continue;
		shown++;
		char when[32] = "never marked as seen";
		time_t st = (time_t)JI(o, "seen_t");
		struct tm tm;
		if (st >= 0 && gmtime_r(&st, &tm) != NULL)
			strftime(when, sizeof(when), "seen up to %Y-%m-%d %H:%M:%S UTC", &tm);
		util_buf_printf(out, "%s: %s\n%s: %lld new source%s since the last look (%s)\n",
		                JS(o, "domain"), JS(o, "ready"), JS(o, "domain"),
		                JI(o, "new_sources"), JI(o, "new_sources") == 1 ? "" : "s", when);
	}
	util_buf_adds(out, shown ? "\n" : "(none)\n\n");

	util_buf_printf(
	    out, "DMARC sources (last %d days):\n%-24s %-40s %-32s %9s %7s %7s %7s %-8s %-3s  %s\n",
	    days, "domain", "source_ip", "reverse dns (confirmed)", "messages", "dmarc", "spf",
	    "dkim", "approved", "new", "reported by");
	shown = 0;
	json_array_foreach(v[2], i, o)
	{
		if (SKIP(o, "domain"))
			continue;
		shown++;
		long long n = JI(o, "count");
		const char *rd = json_string_value(json_object_get(o, "rdns"));
		util_buf_printf(out, "%-24s %-40s %-32s %9lld %6.1f%% %6.1f%% %6.1f%% %-8s %-3s  %s\n",
		                JS(o, "domain"), JS(o, "source_ip"), rd ? rd : "-", n,
		                pct(JI(o, "dmarc_pass"), n),
		                pct(JI(o, "spf_pass"), n), pct(JI(o, "dkim_pass"), n),
		                JI(o, "approved") ? "yes" : "no", JI(o, "new") ? "NEW" : "-",
		                JS(o, "orgs"));
	}
	util_buf_adds(out, shown ? "\n" : "(none)\n\n");

	util_buf_printf(
	    out,
	    "TLS-RPT (last %d days; MTA-STS mode mxgate serves: %s - [mta_sts] mode of this "
	    "config; the dashboard shows what each domain publishes):\n"
	    "%-24s %-6s %-30s %9s %9s  %s\n",
	    days, cfg->mta_sts_mode >= 0 && cfg->mta_sts_mode <= 2 ? modes[cfg->mta_sts_mode] : "?",
	    "policy_domain", "type", "org", "success", "failure", "failure types");
	shown = 0;
	json_array_foreach(v[3], i, o)
	{
		if (SKIP(o, "policy_domain"))
			continue;
		shown++;
		util_buf_printf(out, "%-24s %-6s %-30s %9lld %9lld  %s\n", JS(o, "policy_domain"),
		                JS(o, "policy_type"), JS(o, "org"), JI(o, "success"),
		                JI(o, "failure"), JS(o, "failures"));
	}
	util_buf_adds(out, shown ? "\n" : "(none)\n\n");

	util_buf_printf(out,
	                "What mxgate itself judged (last %d days; rejections, quarantines,"
	                " overrides):\n%-24s %-11s %-30s %9s\n",
	                days, "domain", "disposition", "reason", "messages");
	shown = 0;
	json_array_foreach(v[4], i, o)
	{
		if (SKIP(o, "domain"))
			continue;
		shown++;
		util_buf_printf(out, "%-24s %-11s %-30s %9lld\n", JS(o, "domain"),
		                JS(o, "disposition"), JS(o, "reason"), JI(o, "count"));
	}
	util_buf_adds(out, shown ? "\n" : "(none)\n\n");
#undef SKIP
	rc = 0;
cleanup:
	for (size_t k = 0; k < 5; k++)
		json_decref(v[k]);
	dash_close(&d);
	return rc;
}

/* dash_write - one write statement with two parameters. */
static int dash_write(const struct config *cfg, const char *const sql[2], const char *a,
                      const char *b, char *err, size_t errlen)
{
	struct dash_db d;
	const char *params[2] = {a, b};
	int rc;

	if (strlen(a) > REPORTS_IN_MAX_STR || strlen(b) > REPORTS_IN_MAX_STR) {
		snprintf(err, errlen, "too long");
		return -1;
	}
	if (dash_open(cfg, &d, err, errlen) < 0)
		return -1;
	rc = d.be->query(d.db, sql[d.dialect], 2, params, NULL, NULL, err, errlen);
	dash_close(&d);
	return rc;
}

/* reports_dash_approve - see reports.h. */
int reports_dash_approve(const struct config *cfg, const char *domain, const char *ip,
                         bool approved, char *err, size_t errlen)
{
	return dash_write(cfg, approved ? dash_sql_approve : dash_sql_unapprove, domain, ip, err,
	                  errlen);
}

/* reports_dash_seen - see reports.h. */
int reports_dash_seen(const struct config *cfg, const char *domain, int64_t until, char *err,
                      size_t errlen)
{
	int64_t now = (int64_t)time(NULL);
	char t[24];

	if (until < 0 || until > now)
		until = now;
	snprintf(t, sizeof(t), "%lld", (long long)until);
	return dash_write(cfg, dash_sql_seen, domain, t, err, errlen);
}
