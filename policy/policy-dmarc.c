/*
 * policy-dmarc.c - DMARC by RFC 9989 (obsoletes RFC 7489): the verdict.
 *
 * The From: domain (policy-from.c: exactly one RFC 5322 mailbox) is turned
 * into A-labels (policy-idn.c, RFC 8616 6; the SPF domain it is aligned
 * with is A-labels too, policy-spf.c), the policy record is found by
 * the DNS tree walk and the Organizational Domains for relaxed alignment
 * are the tree walk's (policy-dmarc-walk.c), the record is parsed by
 * policy-dmarc-record.c; the policy applied is p, sp or np (non-existent
 * author domain), one step weaker under t=y; pct is ignored.  Everything
 * libopendmarc 1.4.2 would decide here it gets wrong by RFC 9989 (PSL
 * wildcards, suffix-match alignment, record grammar, no np/t/psd), so it no
 * longer judges: see docs/conformance.md "DMARC".  What is left of it is the
 * Public Suffix List it loads from cfg->psl_file, used only as the
 * resolver's slow-domain grouping key (policy_org_domain), never for a
 * verdict.
 *
 * Ownership: outcome strings belong to the message.
 * Threads: policy_dmarc_lib_init() on the loop thread loads the PSL into
 * libopendmarc's globals once per process (reference-counted over
 * contexts, so a reload never unloads it under running workers);
 * evaluation on workers.
 * Diagnostics: PSL load failure into err; record problems in the A-R comment.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <opendmarc/dmarc.h>

#include "policy-dmarc-internal.h"

/* Exported by libopendmarc (opendmarc_tld.c) but missing from dmarc.h:
 * organizational domain of domain via the loaded PSL.  0 on success. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

/* libopendmarc keeps the PSL in process globals, while reload makes a new
 * context before the old one is freed: load it once, count the contexts,
 * unload with the last one.  A changed psl_file needs a restart. */
static pthread_mutex_t dmarc_lib_mu = PTHREAD_MUTEX_INITIALIZER;
static int dmarc_lib_refs;
static char dmarc_lib_psl[1024];

/* policy_dmarc_lib_init - load the PSL into libopendmarc (once per process). */
int policy_dmarc_lib_init(struct policy_ctx *pc, char *err, size_t errlen)
{
	OPENDMARC_LIB_T lib;
	const char *psl = pc->cfg->psl_file;
	int rc = -1;

	if (psl == NULL || access(psl, R_OK) != 0) {
		snprintf(err, errlen, "dmarc: public suffix list %s is not readable",
		         psl ? psl : "(unset)");
		return -1;
	}
	pthread_mutex_lock(&dmarc_lib_mu);
	if (dmarc_lib_refs > 0) {
		if (strcmp(dmarc_lib_psl, psl) != 0)
			util_log_warn("dmarc psl_file=%s msg=\"still using %s until restart\"", psl,
			              dmarc_lib_psl);
		dmarc_lib_refs++;
		rc = 0;
		goto out;
	}
	memset(&lib, 0, sizeof(lib));
	lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
	snprintf((char *)lib.tld_source_file, sizeof(lib.tld_source_file), "%s", psl);
	if (opendmarc_policy_library_init(&lib) != DMARC_PARSE_OKAY) {
		snprintf(err, errlen, "dmarc: cannot load the public suffix list %s", psl);
		goto out;
	}
	snprintf(dmarc_lib_psl, sizeof(dmarc_lib_psl), "%s", psl);
	dmarc_lib_refs = 1;
	rc = 0;
out:
	pthread_mutex_unlock(&dmarc_lib_mu);
	pc->dmarc_ready = rc == 0;
	return rc;
}

/* policy_dmarc_lib_free - drop this context's reference to the PSL. */
void policy_dmarc_lib_free(struct policy_ctx *pc)
{
	if (!pc->dmarc_ready)
		return;
	pc->dmarc_ready = false;
	pthread_mutex_lock(&dmarc_lib_mu);
	if (--dmarc_lib_refs == 0) {
		OPENDMARC_LIB_T lib;
		memset(&lib, 0, sizeof(lib));
		opendmarc_policy_library_shutdown(&lib);
	}
	pthread_mutex_unlock(&dmarc_lib_mu);
}

/* policy_dmarc_outcome_free - free the outcome strings and reset. */
void policy_dmarc_outcome_free(struct policy_dmarc_outcome *o)
{
	free(o->header_from);
	free(o->org_domain);
	free(o->comment);
	free(o->exempt);
	free(o->from_error_text);
	free(o->record);
	free(o->record_domain);
	free(o->ruf);
	memset(o, 0, sizeof(*o));
}

/* policy_org_domain - the organizational domain of name (RFC 7489 3.2),
 * lower-case, without a final dot: through the PSL when DMARC loaded it;
 * libopendmarc returns "" for names no PSL rule matches (all *.test names),
 * and without a PSL we have nothing better either: the PSL algorithm's
 * implicit rule "*" makes the TLD the public suffix, so the organizational
 * domain is the last two labels.  Any thread. */
void policy_org_domain(const char *name, char *out, size_t outlen)
{
	char low[256];
	size_t n = 0;
	bool psl;

	for (; name[n] != 0 && n + 1 < sizeof(low); n++)
		low[n] = (char)tolower((unsigned char)name[n]);
	while (n > 0 && low[n - 1] == '.')
		n--;
	low[n] = 0;
	if (outlen == 0)
		return;
	out[0] = 0;
	pthread_mutex_lock(&dmarc_lib_mu);
	psl = dmarc_lib_refs > 0;
	pthread_mutex_unlock(&dmarc_lib_mu);
	if (psl && opendmarc_get_tld((u_char *)low, (u_char *)out, outlen) == 0 && out[0] != 0)
		return;
	const char *q = low + n;
	int dots = 0;
	while (q > low && dots < 2)
		if (*--q == '.' && ++dots == 2)
			q++;
	snprintf(out, outlen, "%s", q);
}

/* ------------------------------------------------------------ RFC 9989 */

/* dmarc_txt - the walk's TXT lookup: mxgate's resolver on this worker. */
static enum policy_dns_status dmarc_txt(void *arg, const char *name, struct util_strlist *out,
                                        bool *secure)
{
	struct policy_msg *pm = arg;

	return policy_dns_txt_sync(pm->pc->dns, name, out, secure);
}

/* dmarc_is_exempt_domain - from domain listed, or a subdomain of one. */
static bool dmarc_is_exempt_domain(const struct config *cfg, const char *dom)
{
	size_t dl = strlen(dom);

	for (size_t i = 0; i < cfg->dmarc_exempt_domains.n; i++) {
		const char *e = cfg->dmarc_exempt_domains.v[i];
		size_t el = strlen(e);
		if (util_strcaseeq(dom, e) ||
		    (dl > el && dom[dl - el - 1] == '.' && util_strcaseeq(dom + dl - el, e)))
			return true;
	}
	return false;
}

/* dmarc_last_label - the TLD of name. */
static const char *dmarc_last_label(const char *name)
{
	const char *dot = strrchr(name, '.');

	return dot != NULL ? dot + 1 : name;
}

/* Alignment of one identifier (RFC 9989 4.4): 1 aligned, 0 not, -1 unknown
 * (a DNS failure in the Organizational Domain walk). */
struct dmarc_align {
	struct policy_dmarc_walk *walk;
	const char *from;
	char from_org[256];
	int from_org_state; /* 0 not yet, 1 known, -1 failed */
};

static int dmarc_aligned(struct dmarc_align *a, const char *d, bool strict)
{
	char org[256];
	enum policy_dmarc_found why;

	if (d == NULL || d[0] == 0)
		return 0;
	if (util_strcaseeq(d, a->from))
		return 1;
	/* relaxed: the same Organizational Domain by the tree walk - never by
	 * a suffix match (libopendmarc 1.4.2 aligns d=co.uk with x.co.uk) */
	if (strict || !util_strcaseeq(dmarc_last_label(d), dmarc_last_label(a->from)))
		return 0;
	if (a->from_org_state == 0)
		a->from_org_state =
		    policy_dmarc_org_domain(a->walk, a->from, a->from_org, &why) == 0 ? 1 : -1;
	if (a->from_org_state < 0)
		return -1;
	{
		char low[256];
		size_t n = 0;
		for (; d[n] != 0 && n + 1 < sizeof(low); n++)
			low[n] = (char)tolower((unsigned char)d[n]);
		low[n] = 0;
		if (n > 0 && low[n - 1] == '.')
			low[n - 1] = 0;
		/* an identifier's Organizational Domain is a suffix of it: when
		 * the From domain's is not, no walk can align them - and the
		 * walk of an attacker's own slow zone must not make the
		 * verdict temperror (red team finding) */
		n = strlen(low);
		size_t ol = strlen(a->from_org);
		if (!(n == ol && strcmp(low, a->from_org) == 0) &&
		    !(n > ol && low[n - ol - 1] == '.' && strcmp(low + n - ol, a->from_org) == 0))
			return 0;
		/* the message's own query budget spent (many deep signing
		 * domains): not aligned, not "unknown" - else any message could
		 * turn its p=reject fail into temperror (red team finding) */
		if (policy_dmarc_org_domain(a->walk, low, org, &why) < 0)
			return why == POLICY_DMARC_TOO_MANY ? 0 : -1;
	}
	return strcmp(org, a->from_org) == 0;
}

/* dmarc_nonexistent - RFC 9989 np: the author domain does not exist
 * (NXDOMAIN, RFC 8020: nothing at or below the name). */
static bool dmarc_nonexistent(struct policy_msg *pm, const char *dom)
{
	struct policy_dns_answer ans;
	bool nx;

	policy_dns_query_sync(pm->pc->dns, dom, 1 /* A */, &ans);
	nx = ans.status == POLICY_DNS_NXDOMAIN;
	policy_dns_answer_free(&ans);
	return nx;
}

/* dmarc_from_error - the From: field is not exactly one mailbox. */
static void dmarc_from_error(struct policy_msg *pm, struct policy_dmarc_outcome *o)
{
	o->result = POLICY_DMARC_PERMERROR;
	o->from_error = true;
	if (pm->from.bad)
		o->from_error_text = util_xstrdup(
		    "the From: header field is not a syntactically valid RFC 5322 mailbox");
	else if (pm->from.addrs == 0)
		o->from_error_text = util_xstrdup("the message has no From: address");
	else if (pm->from.addrs == 1)
		o->from_error_text = util_xstrdup("the From: domain is not a valid domain name");
	else
		o->from_error_text = util_xasprintf(
		    "the message has %d From: addresses; exactly one is required", pm->from.addrs);
	o->comment = util_xstrdup(o->from_error_text);
}


/* dmarc_record_text - the record as used, in canonical tag=value form (the
 * tags it set, no pct: RFC 9989 ignores it), for the report store's
 * "policy published" (reports/, via policy-facts.c).  Caller frees. */
static char *dmarc_record_text(const struct policy_dmarc_record *r)
{
	struct util_buf b;
	util_buf_init(&b);
	util_buf_printf(&b, "v=DMARC1; p=%s", policy_dmarc_policy_word(r->p ? r->p : 'n'));
	if (r->sp)
		util_buf_printf(&b, "; sp=%s", policy_dmarc_policy_word(r->sp));
	if (r->np)
		util_buf_printf(&b, "; np=%s", policy_dmarc_policy_word(r->np));
	util_buf_printf(&b, "; adkim=%c; aspf=%c; t=%c; psd=%c", r->adkim ? r->adkim : 'r',
	                r->aspf ? r->aspf : 'r', r->t ? 'y' : 'n', r->psd ? r->psd : 'u');
	return b.data; /* NUL-terminated by util_buf */
}

/* policy_dmarc_eval - worker: RFC 9989 policy discovery by the DNS tree
 * walk, identifier alignment, the policy to apply (p / sp / np, t). */
void policy_dmarc_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	struct policy_dmarc_outcome *o = &pm->dmarc;
	const struct policy_spf_outcome *s = &pm->spf;
	struct policy_dmarc_walk walk;
	struct policy_dmarc_record rec;
	struct dmarc_align al;
	char rdom[256], err[128], ip[INET6_ADDRSTRLEN];
	enum policy_dmarc_found f;
	bool pass = false, unknown = false, at_author, nx = false;
	char pol;

	policy_dmarc_outcome_free(o);
	o->evaluated = true;
	if (pm->from.bad || pm->from.addrs != 1 || pm->from.domain == NULL) {
		dmarc_from_error(pm, o);
		return;
	}
	o->header_from = policy_idn_alabels(pm->from.domain);
	if (o->header_from == NULL) {
		dmarc_from_error(pm, o);
		return;
	}
	if (dmarc_is_exempt_domain(cfg, o->header_from))
		o->exempt = util_xasprintf("exempt domain %s", o->header_from);
	else if (util_cidr_list_match(&cfg->dmarc_exempt_clients, &pm->client))
		o->exempt =
		    util_xasprintf("exempt client %s", util_addr_str(&pm->client, ip, sizeof(ip)));

	policy_dmarc_walk_init(&walk, dmarc_txt, pm);
	f = policy_dmarc_discover(&walk, o->header_from, &rec, rdom, err, sizeof(err));
	switch (f) {
	case POLICY_DMARC_FOUND:
		break;
	case POLICY_DMARC_NOTFOUND:
		o->result = POLICY_DMARC_NONE;
		o->comment = util_xstrdup("no DMARC record");
		goto out;
	case POLICY_DMARC_SEVERAL:
		o->result = POLICY_DMARC_NONE;
		o->comment = util_xasprintf(
		    "several DMARC records at _dmarc.%s: no DMARC processing", o->header_from);
		goto out;
	case POLICY_DMARC_INVALID:
		o->result = POLICY_DMARC_PERMERROR;
		o->comment = util_xasprintf("invalid DMARC record: %s", err);
		goto out;
	default:
		o->result = POLICY_DMARC_TEMPERROR;
		o->comment =
		    util_xstrdup(f == POLICY_DMARC_DNS_BOGUS  ? "DNSSEC validation failed"
		                 : f == POLICY_DMARC_TOO_MANY ? "too many DMARC DNS queries"
		                                              : "DNS lookup failed");
		goto out;
	}
	at_author = strcmp(rdom, o->header_from) == 0;
	o->record_domain = util_xstrdup(rdom);
	o->record = dmarc_record_text(&rec);
	o->record_p = rec.p;
	o->testing = rec.t;
	o->ruf = rec.ruf[0] != '\0' ? util_xstrdup(rec.ruf) : NULL;
	o->fo = rec.fo;

	/* the policy: p at the author domain; else np for a non-existent
	 * author domain, sp, p (RFC 9989 4.7, 4.10.1) */
	pol = rec.p;
	if (!at_author) {
		if (rec.np != 0 && (nx = dmarc_nonexistent(pm, o->header_from)))
			pol = rec.np;
		else if (rec.sp != 0)
			pol = rec.sp;
	}
	o->policy = pol;

	/* identifier alignment (RFC 9989 4.4) */
	al.walk = &walk;
	al.from = o->header_from;
	al.from_org_state = 0;
	for (size_t i = 0; i < pm->nsigs && !pass; i++) {
		const struct policy_dkim_sig *g = &pm->sigs[i];
		bool ok = strcmp(g->result, "pass") == 0, tmp = strcmp(g->result, "temperror") == 0;
		int a;
		if (!ok && !tmp)
			continue;
		a = dmarc_aligned(&al, g->d, rec.adkim == 's');
		if (a != 0 && tmp)
			unknown = true;
		else if (a > 0)
			pass = true;
		else if (a < 0)
			unknown = true;
	}
	if (!pass && s->evaluated &&
	    (s->result == POLICY_SPF_PASS || s->result == POLICY_SPF_TEMPERROR)) {
		int a = dmarc_aligned(&al, s->domain, rec.aspf == 's');
		if (a != 0 && s->result == POLICY_SPF_TEMPERROR)
			unknown = true;
		else if (a > 0)
			pass = true;
		else if (a < 0)
			unknown = true;
	}
	if (al.from_org_state == 1)
		o->org_domain = util_xstrdup(al.from_org);

	if (pass) {
		o->result = POLICY_DMARC_PASS;
		o->applied = 'n';
	} else if (unknown) {
		/* an aligned identity with a temporary error (or an alignment
		 * the DNS could not settle): never fail on it */
		o->result = POLICY_DMARC_TEMPERROR;
		o->applied = 'n';
	} else {
		o->result = POLICY_DMARC_FAIL;
		o->applied = pol;
		/* t=y: one step weaker (RFC 9989 4.7 "t") */
		if (rec.t && pol != 'n')
			o->applied = pol == 'r' ? 'q' : 'n';
	}
	o->comment = util_xasprintf(
	    "p=%s sp=%s np=%s%s%s%s%s%s%s", policy_dmarc_policy_word(rec.p),
	    policy_dmarc_policy_word(rec.sp), policy_dmarc_policy_word(rec.np), rec.t ? " t=y" : "",
	    at_author ? "" : " record=", at_author ? "" : rdom, nx ? " nonexistent" : "",
	    rec.p_missing ? " (no usable p=, rua: none)" : "", rec.has_pct ? " pct ignored" : "");
	if (o->result == POLICY_DMARC_TEMPERROR) {
		char *c =
		    util_xasprintf("%s; an aligned identity had a temporary error", o->comment);
		free(o->comment);
		o->comment = c;
	}
out:
	o->secure = !walk.insecure && walk.queries > 0;
	policy_dmarc_walk_free(&walk);
}
