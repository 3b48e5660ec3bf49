/*
 * util-metrics.c - a small process-wide registry of Prometheus metrics:
 * counters and gauges with at most one label, histograms with fixed
 * buckets, rendered in the Prometheus text exposition format 0.0.4.
 *
 * Families are declared once (util_metrics_define, at start-up by the
 * gateway); modules then update them by name with one-line calls
 * (util_metrics_inc("mxgate_messages_rejected_total", reason)).  Updating a
 * family nobody declared is a no-op, so unit tests of other modules need no
 * set-up.  A family keeps at most UTIL_METRICS_MAX_SERIES label values; the
 * rest are counted under label value "other", so a network-supplied string
 * can never grow the registry without bound.
 *
 * Threads: one mutex guards the registry (policy workers and the loop both
 * update it); every call is short and never blocks on I/O.
 *
 * Ownership: the registry owns copies of every string it is handed.
 *
 * Diagnostics: none; bad arguments (unknown name, wrong kind) are ignored.
 */
#include "util.h"

#include <math.h> /* isnan, isinf: macros, no libm */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_FAMILIES 96
#define METRICS_MAX_BUCKETS  20
#define METRICS_LABEL_MAX    64

struct metric_series {
	char label[METRICS_LABEL_MAX];         /* label value ("" when the family has none) */
	double value;                          /* counter / gauge */
	uint64_t buckets[METRICS_MAX_BUCKETS]; /* histogram: per bucket, not cumulative */
	uint64_t count;                        /* histogram: observations (also the +Inf bucket) */
	double sum;
};

struct metric_family {
	char *name;
	char *help;
	char *label; /* label name or NULL */
	enum util_metric_kind kind;
	double bounds[METRICS_MAX_BUCKETS];
	size_t nbounds;
	struct metric_series series[UTIL_METRICS_MAX_SERIES + 1]; /* + "other" */
	size_t nseries;
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric_family *families[METRICS_MAX_FAMILIES];
static size_t nfamilies;

/* family_find - by exact name; lock held. */
static struct metric_family *family_find(const char *name)
{
	for (size_t i = 0; i < nfamilies; i++)
		if (strcmp(families[i]->name, name) == 0)
			return families[i];
	return NULL;
}

/* is_valid_name - Prometheus metric / label name: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static bool is_valid_name(const char *s)
{
	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
			return false;
	return true;
}

/* util_metrics_define - declare a family; defining a name again is a no-op. */
int util_metrics_define(const char *name, enum util_metric_kind kind, const char *help,
                        const char *label, const double *bounds, size_t nbounds)
{
	int rc = -1;
	if (!is_valid_name(name) || (label != NULL && !is_valid_name(label)) ||
	    nbounds > METRICS_MAX_BUCKETS || (kind == UTIL_METRIC_HISTOGRAM && label != NULL))
		return -1;
	for (size_t i = 1; i < nbounds; i++)
		if (!(bounds[i] > bounds[i - 1]))
			return -1;
	pthread_mutex_lock(&metrics_lock);
	if (family_find(name) != NULL) {
		rc = 0;
		goto out;
	}
	if (nfamilies == METRICS_MAX_FAMILIES)
		goto out;
	struct metric_family *f = util_xcalloc(1, sizeof(*f));
	f->name = util_xstrdup(name);
	f->help = util_xstrdup(help ? help : "");
	f->label = label ? util_xstrdup(label) : NULL;
	f->kind = kind;
	if (kind == UTIL_METRIC_HISTOGRAM) {
		memcpy(f->bounds, bounds, nbounds * sizeof(double));
		f->nbounds = nbounds;
	}
	if (label == NULL)
		f->nseries = 1; /* the one unlabelled series always exists */
	families[nfamilies++] = f;
	rc = 0;
out:
	pthread_mutex_unlock(&metrics_lock);
	return rc;
}

/* series_of - the series for label value lv; lock held.  NULL when the
 * family has a label and lv is NULL (or the reverse). */
static struct metric_series *series_of(struct metric_family *f, const char *lv)
{
	if (f->label == NULL || lv == NULL) /* NULL for a labelled family: not counted */
		return f->label == NULL && lv == NULL ? &f->series[0] : NULL;
	char key[METRICS_LABEL_MAX];
	snprintf(key, sizeof(key), "%s", lv);
	for (size_t i = 0; i < f->nseries; i++)
		if (strcmp(f->series[i].label, key) == 0)
			return &f->series[i];
	if (f->nseries == UTIL_METRICS_MAX_SERIES) {
		struct metric_series *o = &f->series[UTIL_METRICS_MAX_SERIES];
		if (o->label[0] == '\0') {
			snprintf(o->label, sizeof(o->label), "other");
			f->nseries++;
		}
		return o;
	}
	if (f->nseries > UTIL_METRICS_MAX_SERIES)
		return &f->series[UTIL_METRICS_MAX_SERIES];
	struct metric_series *s = &f->series[f->nseries++];
	memcpy(s->label, key, sizeof(key));
	return s;
}

/* update - counter add / gauge set or add. */
static void update(const char *name, const char *lv, double v, bool set)
{
	pthread_mutex_lock(&metrics_lock);
	struct metric_family *f = family_find(name);
	if (f && f->kind != UTIL_METRIC_HISTOGRAM &&
	    !(f->kind == UTIL_METRIC_COUNTER && (set || v < 0))) {
		struct metric_series *s = series_of(f, lv);
		if (s)
			s->value = set ? v : s->value + v;
	}
	pthread_mutex_unlock(&metrics_lock);
}

/* util_metrics_inc - counter or gauge += 1. */
void util_metrics_inc(const char *name, const char *label_value)
{
	update(name, label_value, 1, false);
}

/* util_metrics_add - counter += v (v >= 0) or gauge += v. */
void util_metrics_add(const char *name, const char *label_value, double v)
{
	update(name, label_value, v, false);
}

/* util_metrics_set - gauge = v. */
void util_metrics_set(const char *name, const char *label_value, double v)
{
	update(name, label_value, v, true);
}

/* util_metrics_observe - one histogram observation. */
void util_metrics_observe(const char *name, double v)
{
	if (isnan(v))
		return;
	pthread_mutex_lock(&metrics_lock);
	struct metric_family *f = family_find(name);
	if (f && f->kind == UTIL_METRIC_HISTOGRAM) {
		struct metric_series *s = &f->series[0];
		for (size_t i = 0; i < f->nbounds; i++) {
			if (v <= f->bounds[i]) {
				s->buckets[i]++;
				break;
			}
		}
		s->count++;
		s->sum += v;
	}
	pthread_mutex_unlock(&metrics_lock);
}

/* util_metrics_value - current value of a counter/gauge series, or the
 * observation count of a histogram; 0 when unknown. */
double util_metrics_value(const char *name, const char *label_value)
{
	double v = 0;
	pthread_mutex_lock(&metrics_lock);
	struct metric_family *f = family_find(name);
	if (f && f->kind == UTIL_METRIC_HISTOGRAM) {
		v = (double)f->series[0].count;
	} else if (f && (f->label == NULL || label_value == NULL)) {
		for (size_t i = 0; i < f->nseries; i++) /* the one series, or the sum */
			v += f->series[i].value;
	} else if (f) {
		for (size_t i = 0; i < f->nseries; i++)
			if (strcmp(f->series[i].label, label_value) == 0) {
				v = f->series[i].value;
				break;
			}
	}
	pthread_mutex_unlock(&metrics_lock);
	return v;
}

/* fmt_value - a sample value: integers without exponent, +Inf/-Inf/NaN as
 * Prometheus spells them. */
static void fmt_value(struct util_buf *out, double v)
{
	if (isnan(v))
		util_buf_adds(out, "NaN");
	else if (isinf(v))
		util_buf_adds(out, v > 0 ? "+Inf" : "-Inf");
	else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
		util_buf_printf(out, "%.0f", v);
	else
		util_buf_printf(out, "%.9g", v);
}

/* add_escaped - HELP text (escape \ and newline) or a label value (also "). */
static void add_escaped(struct util_buf *out, const char *s, bool label)
{
	for (; *s; s++) {
		if (*s == '\\')
			util_buf_adds(out, "\\\\");
		else if (*s == '\n')
			util_buf_adds(out, "\\n");
		else if (*s == '"' && label)
			util_buf_adds(out, "\\\"");
		else
			util_buf_add(out, s, 1);
	}
}

/* util_metrics_render - every family, text format 0.0.4. */
void util_metrics_render(struct util_buf *out)
{
	static const char *const kinds[] = {"counter", "gauge", "histogram"};
	pthread_mutex_lock(&metrics_lock);
	for (size_t i = 0; i < nfamilies; i++) {
		const struct metric_family *f = families[i];
		util_buf_printf(out, "# HELP %s ", f->name);
		add_escaped(out, f->help, false);
		util_buf_printf(out, "\n# TYPE %s %s\n", f->name, kinds[f->kind]);
		if (f->kind == UTIL_METRIC_HISTOGRAM) {
			const struct metric_series *s = &f->series[0];
			uint64_t cum = 0;
			for (size_t b = 0; b < f->nbounds; b++) {
				cum += s->buckets[b];
				util_buf_printf(out, "%s_bucket{le=\"", f->name);
				fmt_value(out, f->bounds[b]);
				util_buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
			}
			util_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", f->name,
			                (unsigned long long)s->count);
			util_buf_printf(out, "%s_sum ", f->name);
			fmt_value(out, s->sum);
			util_buf_printf(out, "\n%s_count %llu\n", f->name,
			                (unsigned long long)s->count);
			continue;
		}
		for (size_t k = 0; k < f->nseries; k++) {
			const struct metric_series *s = &f->series[k];
			util_buf_adds(out, f->name);
			if (f->label) {
				util_buf_printf(out, "{%s=\"", f->label);
				add_escaped(out, s->label, true);
				util_buf_adds(out, "\"}");
			}
			util_buf_adds(out, " ");
			fmt_value(out, s->value);
			util_buf_adds(out, "\n");
		}
	}
	pthread_mutex_unlock(&metrics_lock);
}

/* util_metrics_reset - forget every family (tests). */
void util_metrics_reset(void)
{
	pthread_mutex_lock(&metrics_lock);
	for (size_t i = 0; i < nfamilies; i++) {
		free(families[i]->name);
		free(families[i]->help);
		free(families[i]->label);
		free(families[i]);
		families[i] = NULL;
	}
	nfamilies = 0;
	pthread_mutex_unlock(&metrics_lock);
}
