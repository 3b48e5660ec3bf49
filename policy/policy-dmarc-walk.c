/*
 * policy-dmarc-walk.c - the DNS tree walk of RFC 9989 4.10: policy
 * discovery (4.10.1) and the Organizational Domain (4.10.2), instead of
 * RFC 7489's Public Suffix List (libopendmarc 1.4.2 ignores the PSL's
 * wildcard rules such as *.bd and *.kawasaki.jp, so two registrants under
 * such a suffix counted as one organisation).
 *
 * The walk: query _dmarc.<name>; then remove labels from the left - when
 * the name has more than 8 labels, jump straight to its last 7 - and query
 * each shorter name down to the single-label TLD: at most 8 queries.
 * Records not starting with v=DMARC1 are ignored; several DMARC records at
 * one name count as none there (at the author domain itself they stop
 * policy discovery: no DMARC processing, RFC 7489 6.6.3 step 3).
 *
 * Every lookup of one message goes through one struct policy_dmarc_walk:
 * answers are cached for the message (the From walk and the alignment
 * walks overlap) and the queries are bounded by POLICY_DMARC_MAX_QUERIES.
 * The lookups themselves are the caller's (policy_dns_txt_sync on the
 * worker, with the resolver's timeout and slow-domain isolation).
 *
 * Ownership: the walk owns its cache; policy_dmarc_walk_free() frees it.
 * Threads: one walk, one thread.
 */
#include <stdlib.h>
#include <string.h>

#include "policy-dmarc-internal.h"

enum walk_kind { W_NONE = 0, W_ONE, W_INVALID, W_SEVERAL, W_TEMP, W_BOGUS };

struct policy_dmarc_walk_entry {
	char name[256];
	enum walk_kind kind;
	struct policy_dmarc_record rec;
	char err[128];
};

void policy_dmarc_walk_init(struct policy_dmarc_walk *w, policy_dmarc_txt_fn txt, void *arg)
{
	memset(w, 0, sizeof(*w));
	w->txt = txt;
	w->arg = arg;
}

void policy_dmarc_walk_free(struct policy_dmarc_walk *w)
{
	free(w->cache);
	w->cache = NULL;
	w->ncache = 0;
}

/* walk_lookup - the classified _dmarc record set of name (cached); NULL
 * when the query budget is spent. */
static const struct policy_dmarc_walk_entry *walk_lookup(struct policy_dmarc_walk *w,
                                                         const char *name)
{
	struct policy_dmarc_walk_entry *e;
	struct util_strlist txt = {0};
	enum policy_dns_status st;
	bool secure = false;
	char *q;
	size_t found = 0;

	for (size_t i = 0; i < w->ncache; i++)
		if (strcmp(w->cache[i].name, name) == 0)
			return &w->cache[i];
	/* "_dmarc." + a name of more than 246 octets is over 253: no record
	 * can be there (W_NONE, no query) - the resolver's refusal would be
	 * a temperror any From: could cause (red team finding) */
	bool too_long = strlen(name) + 7 > 253;
	if (!too_long && w->queries >= POLICY_DMARC_MAX_QUERIES)
		return NULL;
	if (!too_long)
		w->queries++;
	w->cache = realloc(w->cache, (w->ncache + 1) * sizeof(*w->cache));
	if (w->cache == NULL)
		abort();
	e = &w->cache[w->ncache++];
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	if (too_long)
		return e;
	q = util_xasprintf("_dmarc.%s", name);
	st = w->txt(w->arg, q, &txt, &secure);
	free(q);
	if (st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS) {
		e->kind = st == POLICY_DNS_BOGUS ? W_BOGUS : W_TEMP;
		goto out;
	}
	if (!secure)
		w->insecure = true;
	for (size_t i = 0; st == POLICY_DNS_OK && i < txt.n; i++) {
		struct policy_dmarc_record r;
		char err[128];
		int rc =
		    policy_dmarc_record_parse(txt.v[i], strlen(txt.v[i]), &r, err, sizeof(err));
		if (rc == 1)
			continue; /* not a DMARC record */
		if (found++ == 0) {
			e->kind = rc == 0 ? W_ONE : W_INVALID;
			e->rec = r;
			snprintf(e->err, sizeof(e->err), "%s", err);
		}
	}
	if (found > 1)
		e->kind = W_SEVERAL;
out:
	util_strlist_free(&txt);
	return e;
}

size_t policy_dmarc_walk_targets(const char *name, const char **out, size_t max)
{
	size_t labels = 1, n = 0;
	const char *p = name;

	if (name[0] == 0)
		return 0;
	for (const char *c = name; *c; c++)
		if (*c == '.')
			labels++;
	while (labels > 1 && n < max) {
		size_t drop = labels > POLICY_DMARC_WALK_MAX_LABELS
		                  ? labels - (POLICY_DMARC_WALK_MAX_LABELS - 1)
		                  : 1;
		for (size_t i = 0; i < drop; i++)
			p = strchr(p, '.') + 1;
		labels -= drop;
		out[n++] = p;
	}
	return n;
}

/* walk_fail - the found code of a failed lookup (NULL: budget spent). */
static enum policy_dmarc_found walk_fail(const struct policy_dmarc_walk_entry *e)
{
	if (e == NULL)
		return POLICY_DMARC_TOO_MANY;
	return e->kind == W_BOGUS ? POLICY_DMARC_DNS_BOGUS : POLICY_DMARC_DNS_ERROR;
}

enum policy_dmarc_found policy_dmarc_discover(struct policy_dmarc_walk *w, const char *author,
                                              struct policy_dmarc_record *rec, char *rec_domain,
                                              char *err, size_t errlen)
{
	const struct policy_dmarc_walk_entry *e = walk_lookup(w, author);
	const char *t[POLICY_DMARC_WALK_MAX_LABELS];
	size_t nt;

	if (errlen > 0)
		err[0] = 0;
	if (e == NULL || e->kind == W_TEMP || e->kind == W_BOGUS)
		return walk_fail(e);
	if (e->kind == W_SEVERAL)
		return POLICY_DMARC_SEVERAL;
	if (e->kind == W_INVALID) {
		snprintf(err, errlen, "%s", e->err);
		return POLICY_DMARC_INVALID;
	}
	if (e->kind == W_ONE) {
		*rec = e->rec;
		snprintf(rec_domain, 256, "%s", author);
		return POLICY_DMARC_FOUND;
	}
	nt = policy_dmarc_walk_targets(author, t, POLICY_DMARC_WALK_MAX_LABELS);
	for (size_t i = 0; i < nt; i++) {
		e = walk_lookup(w, t[i]);
		if (e == NULL || e->kind == W_TEMP || e->kind == W_BOGUS)
			return walk_fail(e);
		if (e->kind == W_ONE) {
			*rec = e->rec;
			snprintf(rec_domain, 256, "%s", t[i]);
			return POLICY_DMARC_FOUND;
		}
	}
	return POLICY_DMARC_NOTFOUND;
}

int policy_dmarc_org_domain(struct policy_dmarc_walk *w, const char *name, char *out,
                            enum policy_dmarc_found *why)
{
	const char *t[POLICY_DMARC_WALK_MAX_LABELS + 1];
	const char *last = NULL;
	size_t nt;

	t[0] = name;
	nt = 1 + policy_dmarc_walk_targets(name, t + 1, POLICY_DMARC_WALK_MAX_LABELS);
	for (size_t i = 0; i < nt; i++) {
		const struct policy_dmarc_walk_entry *e = walk_lookup(w, t[i]);
		if (e == NULL || e->kind == W_TEMP || e->kind == W_BOGUS) {
			*why = walk_fail(e);
			return -1;
		}
		if (e->kind != W_ONE)
			continue;
		if (e->rec.psd == 'n') {
			snprintf(out, 256, "%s", t[i]);
			return 0;
		}
		if (e->rec.psd == 'y' && i > 0) {
			/* the name one label below the PSD, on the way to name */
			const char *below = name;
			for (const char *c = name; c < t[i] - 1; c++)
				if (*c == '.' && c + 1 < t[i])
					below = c + 1;
			snprintf(out, 256, "%s", below);
			return 0;
		}
		last = t[i];
	}
	snprintf(out, 256, "%s", last != NULL ? last : name);
	return 0;
}
