/*
 * policy-dmarc.c - DMARC (RFC 7489) with libopendmarc, and the RFC 5322
 * From: address parser it depends on.
 *
 * libopendmarc's own record lookup uses res_query on /etc/resolv.conf, so
 * we fetch _dmarc.<From domain> (falling back to the organizational domain,
 * RFC 7489 6.6.3) through policy_dns and hand the record over with
 * opendmarc_policy_store_dmarc().  The library parses the record, checks
 * SPF/DKIM alignment (relaxed/strict through the Public Suffix List loaded
 * from cfg->psl_file) and picks p or sp; pct sampling is ours (RFC 7489
 * 6.6.4: a message outside the sample gets the next weaker policy), since
 * libopendmarc leaves it to its caller.
 *
 * Ownership: outcome strings belong to the message.
 * Threads: policy_dmarc_lib_init() on the loop thread loads the PSL into
 * libopendmarc's globals once per process (reference-counted over
 * contexts, so a reload never unloads it under running workers);
 * evaluation on workers, read-only on those globals.
 * Diagnostics: PSL load failure into err; record problems in the A-R comment.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <opendmarc/dmarc.h>

#include "policy-internal.h"

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
	memset(o, 0, sizeof(*o));
}

/* ------------------------------------------------------------ From: */

/* from_skip_comment - p at '(': past the (nested) comment, NULL if open. */
static const char *from_skip_comment(const char *p, const char *end)
{
	int depth = 0;

	for (; p < end; p++) {
		if (*p == '\\' && p + 1 < end)
			p++;
		else if (*p == '(')
			depth++;
		else if (*p == ')' && --depth == 0)
			return p + 1;
	}
	return NULL;
}

/* from_addr_domain - domain of one address segment (comments removed):
 * the addr-spec inside <> when present, else the whole segment. */
static char *from_addr_domain(const char *seg, size_t n)
{
	const char *lt = memchr(seg, '<', n), *start = seg, *end = seg + n, *at = NULL;
	bool q = false;

	if (lt != NULL) {
		const char *gt = memchr(lt, '>', (size_t)(end - lt));
		if (gt == NULL)
			return NULL;
		start = lt + 1;
		end = gt;
		/* obsolete route: <@a,@b:user@dom> */
		for (const char *p = start; p < end; p++)
			if (*p == ':')
				start = p + 1;
	}
	for (const char *p = start; p < end; p++) {
		if (*p == '\\' && q)
			p++;
		else if (*p == '"')
			q = !q;
		else if (*p == '@' && !q)
			at = p;
	}
	if (at == NULL)
		return NULL;
	at++;
	while (at < end && isspace((unsigned char)*at))
		at++;
	while (end > at && (isspace((unsigned char)end[-1]) || end[-1] == '.'))
		end--;
	if (end <= at)
		return NULL;
	{
		char *d = util_xstrndup(at, (size_t)(end - at));
		for (char *p = d; *p; p++) {
			/* a domain name (UTF-8 labels allowed); domain literals
			 * and anything that could break a header are refused */
			if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_' &&
			    (unsigned char)*p < 0x80) {
				free(d);
				return NULL;
			}
			*p = (char)tolower((unsigned char)*p);
		}
		return d;
	}
}

/* policy_from_parse - count the addresses of a From: value, domain of the first. */
int policy_from_parse(const char *value, size_t len, char **domain)
{
	const char *p = value, *end = value + len;
	struct util_buf seg;
	int count = 0, rc = -1;
	bool in_q = false, in_angle = false, in_group = false;

	if (domain != NULL)
		*domain = NULL;
	util_buf_init(&seg);
	util_buf_adds(&seg, "");
	for (;; p++) {
		char c = p < end ? *p : 0;
		bool sep = p >= end;

		if (!sep && in_q) {
			if (c == '\\' && p + 1 < end) {
				util_buf_add(&seg, p, 2);
				p++;
				continue;
			}
			if (c == '"')
				in_q = false;
			util_buf_add(&seg, p, 1);
			continue;
		}
		if (!sep && c == '(') {
			const char *q = from_skip_comment(p, end);
			if (q == NULL)
				goto out;
			util_buf_adds(&seg, " ");
			p = q - 1;
			continue;
		}
		if (!sep && c == '"') {
			in_q = true;
			util_buf_add(&seg, p, 1);
			continue;
		}
		if (!sep && c == '<') {
			if (in_angle)
				goto out;
			in_angle = true;
		} else if (!sep && c == '>') {
			if (!in_angle)
				goto out;
			in_angle = false;
		}
		if (!sep && !in_angle && c == ':') {
			/* group display name: "Undisclosed recipients:" */
			if (in_group)
				goto out;
			in_group = true;
			util_buf_reset(&seg);
			util_buf_adds(&seg, "");
			continue;
		}
		if (sep || (!in_angle && (c == ',' || c == ';'))) {
			bool blank = true;
			for (size_t i = 0; i < seg.len; i++)
				if (!isspace((unsigned char)seg.data[i]))
					blank = false;
			if (!blank) {
				char *d = from_addr_domain(seg.data, seg.len);
				if (d == NULL)
					goto out;
				count++;
				if (domain != NULL && *domain == NULL)
					*domain = d;
				else
					free(d);
			}
			util_buf_reset(&seg);
			util_buf_adds(&seg, "");
			if (sep)
				break;
			if (c == ';') {
				if (!in_group)
					goto out;
				in_group = false;
			}
			continue;
		}
		if (c != '\r' && c != '\n')
			util_buf_add(&seg, p, 1);
	}
	if (in_q || in_angle)
		goto out;
	rc = count;
out:
	util_buf_free(&seg);
	if (rc < 0 && domain != NULL) {
		free(*domain);
		*domain = NULL;
	}
	return rc;
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

/* dmarc_aligned - d aligned with the From: domain: equal under strict
 * alignment, same organizational domain under relaxed (RFC 7489 3.1). */
static bool dmarc_aligned(const char *d, const char *from, const char *from_org, bool strict)
{
	char org[256];

	if (d == NULL || d[0] == 0)
		return false;
	if (util_strcaseeq(d, from))
		return true;
	if (strict)
		return false;
	policy_org_domain(d, org, sizeof(org));
	return util_strcaseeq(org, from_org);
}

/* dmarc_aligned_temperror - a DMARC failure that an aligned identity with a
 * temporary error might have turned into a pass: then the honest answer is
 * temperror, never fail (a DNS timeout must not become a 550 under
 * p=reject; RFC 7489 6.6.2 leaves it to the receiver). */
static bool dmarc_aligned_temperror(const struct policy_msg *pm,
                                    const struct policy_dmarc_outcome *o, bool dkim_strict,
                                    bool spf_strict)
{
	const struct policy_spf_outcome *s = &pm->spf;

	if (s->evaluated && s->result == POLICY_SPF_TEMPERROR &&
	    dmarc_aligned(s->domain, o->header_from, o->org_domain, spf_strict))
		return true;
	for (size_t i = 0; i < pm->nsigs; i++)
		if (strcmp(pm->sigs[i].result, "temperror") == 0 &&
		    dmarc_aligned(pm->sigs[i].d, o->header_from, o->org_domain, dkim_strict))
			return true;
	return false;
}

/* ------------------------------------------------------------ DMARC */

/* dmarc_fetch - worker: the one v=DMARC1 record at _dmarc.<dom>. */
static enum policy_dns_status dmarc_fetch(struct policy_msg *pm, const char *dom, char **rec,
                                          bool *secure)
{
	struct util_strlist txt = {0};
	char *name = util_xasprintf("_dmarc.%s", dom);
	enum policy_dns_status st = policy_dns_txt_sync(pm->pc->dns, name, &txt, secure);
	size_t found = 0;

	*rec = NULL;
	for (size_t i = 0; st == POLICY_DNS_OK && i < txt.n; i++) {
		const char *t = txt.v[i];
		/* RFC 7489 6.6.3: records not starting with v=DMARC1 are ignored */
		if (strncmp(t, "v=DMARC1", 8) == 0 && (t[8] == ';' || t[8] == ' ' || t[8] == 0)) {
			if (found++ == 0)
				*rec = util_xstrdup(t);
		}
	}
	if (found != 1) { /* none, or several: no policy */
		free(*rec);
		*rec = NULL;
		if (st == POLICY_DNS_OK)
			st = POLICY_DNS_NODATA;
	}
	util_strlist_free(&txt);
	free(name);
	return st;
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

/* dmarc_policy_char - libopendmarc's p/sp constant as 'n' 'q' 'r' or 0. */
static char dmarc_policy_char(int v)
{
	switch (v) {
	case DMARC_RECORD_P_NONE:
		return 'n';
	case DMARC_RECORD_P_QUARANTINE:
		return 'q';
	case DMARC_RECORD_P_REJECT:
		return 'r';
	default:
		return 0;
	}
}

/* dmarc_store_auth - hand SPF and DKIM outcomes to libopendmarc. */
static void dmarc_store_auth(struct policy_msg *pm, DMARC_POLICY_T *ctx)
{
	const struct policy_spf_outcome *s = &pm->spf;

	if (s->evaluated && s->domain != NULL && s->domain[0] != 0) {
		int r = DMARC_POLICY_SPF_OUTCOME_NONE;
		if (s->result == POLICY_SPF_PASS)
			r = DMARC_POLICY_SPF_OUTCOME_PASS;
		else if (s->result == POLICY_SPF_FAIL || s->result == POLICY_SPF_SOFTFAIL)
			r = DMARC_POLICY_SPF_OUTCOME_FAIL;
		else if (s->result == POLICY_SPF_TEMPERROR)
			r = DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
		opendmarc_policy_store_spf(ctx, (u_char *)s->domain, r,
		                           s->helo_identity ? DMARC_POLICY_SPF_ORIGIN_HELO
		                                            : DMARC_POLICY_SPF_ORIGIN_MAILFROM,
		                           (u_char *)policy_spf_result_str(s->result));
	}
	for (size_t i = 0; i < pm->nsigs; i++) {
		const struct policy_dkim_sig *g = &pm->sigs[i];
		int r = DMARC_POLICY_DKIM_OUTCOME_NONE;
		if (g->d == NULL)
			continue;
		if (strcmp(g->result, "pass") == 0)
			r = DMARC_POLICY_DKIM_OUTCOME_PASS;
		else if (strcmp(g->result, "fail") == 0 || strcmp(g->result, "policy") == 0)
			r = DMARC_POLICY_DKIM_OUTCOME_FAIL;
		else if (strcmp(g->result, "temperror") == 0)
			r = DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
		opendmarc_policy_store_dkim(ctx, (u_char *)g->d, (u_char *)g->s, r,
		                            (u_char *)g->result);
	}
}

/* policy_dmarc_eval - worker: fetch the record, let libopendmarc judge, apply pct. */
void policy_dmarc_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	struct policy_dmarc_outcome *o = &pm->dmarc;
	DMARC_POLICY_T *ctx = NULL;
	char *rec = NULL, ip[INET6_ADDRSTRLEN], org[256];
	bool sec1 = false, sec2 = true, used_org = false;
	enum policy_dns_status st;
	int pol, p = 0, sp = 0, pct = 100, adkim = 0, aspf = 0;

	policy_dmarc_outcome_free(o);
	o->evaluated = true;
	if (pm->from.bad || pm->from.addrs != 1 || pm->from.domain == NULL) {
		o->result = POLICY_DMARC_PERMERROR;
		o->from_error = true;
		if (pm->from.bad)
			o->from_error_text =
			    util_xstrdup("the From: header field cannot be parsed");
		else if (pm->from.addrs == 0)
			o->from_error_text = util_xstrdup("the message has no From: address");
		else
			o->from_error_text = util_xasprintf(
			    "the message has %d From: addresses; exactly one is required",
			    pm->from.addrs);
		o->comment = util_xstrdup(o->from_error_text);
		return;
	}
	o->header_from = util_xstrdup(pm->from.domain);
	if (dmarc_is_exempt_domain(cfg, o->header_from))
		o->exempt = util_xasprintf("exempt domain %s", o->header_from);
	else if (util_cidr_list_match(&cfg->dmarc_exempt_clients, &pm->client))
		o->exempt =
		    util_xasprintf("exempt client %s", util_addr_str(&pm->client, ip, sizeof(ip)));

	policy_org_domain(o->header_from, org, sizeof(org));
	o->org_domain = util_xstrdup(org);

	st = dmarc_fetch(pm, o->header_from, &rec, &sec1);
	if ((st == POLICY_DNS_NXDOMAIN || st == POLICY_DNS_NODATA) &&
	    !util_strcaseeq(org, o->header_from)) {
		st = dmarc_fetch(pm, org, &rec, &sec2);
		used_org = true;
	}
	o->secure = sec1 && sec2;
	if (st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS) {
		o->result = POLICY_DMARC_TEMPERROR;
		o->comment = util_xstrdup(st == POLICY_DNS_BOGUS ? "DNSSEC validation failed"
		                                                 : "DNS lookup failed");
		return;
	}
	if (rec == NULL) {
		o->result = POLICY_DMARC_NONE;
		o->comment = util_xstrdup("no DMARC record");
		return;
	}
	o->record = util_xstrdup(rec);
	o->record_domain = util_xstrdup(used_org ? org : o->header_from);
	util_addr_str(&pm->client, ip, sizeof(ip));
	ctx = opendmarc_policy_connect_init((u_char *)ip, pm->client.ss.ss_family == AF_INET6
	                                                      ? DMARC_POLICY_IP_TYPE_IPV6
	                                                      : DMARC_POLICY_IP_TYPE_IPV4);
	if (ctx == NULL) {
		o->result = POLICY_DMARC_TEMPERROR;
		o->comment = util_xstrdup("internal error");
		goto out;
	}
	opendmarc_policy_store_from_domain(ctx, (u_char *)o->header_from);
	if (opendmarc_policy_store_dmarc(ctx, (u_char *)rec, (u_char *)o->header_from,
	                                 used_org ? (u_char *)org : NULL) != DMARC_PARSE_OKAY) {
		o->result = POLICY_DMARC_PERMERROR;
		o->comment = util_xstrdup("invalid DMARC record");
		goto out;
	}
	dmarc_store_auth(pm, ctx);
	pol = opendmarc_get_policy_to_enforce(ctx);
	opendmarc_policy_fetch_p(ctx, &p);
	opendmarc_policy_fetch_sp(ctx, &sp);
	opendmarc_policy_fetch_pct(ctx, &pct);
	opendmarc_policy_fetch_adkim(ctx, &adkim);
	opendmarc_policy_fetch_aspf(ctx, &aspf);
	o->policy = dmarc_policy_char(used_org && dmarc_policy_char(sp) ? sp : p);
	switch (pol) {
	case DMARC_POLICY_PASS:
		o->result = POLICY_DMARC_PASS;
		o->applied = 'n';
		break;
	case DMARC_POLICY_REJECT:
	case DMARC_POLICY_QUARANTINE:
	case DMARC_POLICY_NONE:
		o->result = POLICY_DMARC_FAIL;
		o->applied = pol == DMARC_POLICY_REJECT       ? 'r'
		             : pol == DMARC_POLICY_QUARANTINE ? 'q'
		                                              : 'n';
		/* RFC 7489 6.6.4: outside the pct sample, one step weaker */
		if (pct >= 0 && pct < 100 && o->applied != 'n' &&
		    arc4random_uniform(100) >= (uint32_t)pct)
			o->applied = o->applied == 'r' ? 'q' : 'n';
		/* an aligned SPF or DKIM temperror: the result is unknown */
		if (dmarc_aligned_temperror(pm, o, adkim == DMARC_RECORD_A_STRICT,
		                            aspf == DMARC_RECORD_A_STRICT))
			o->result = POLICY_DMARC_TEMPERROR;
		break;
	default:
		o->result = POLICY_DMARC_NONE;
		break;
	}
	o->comment =
	    util_xasprintf("p=%s sp=%s pct=%d%s%s",
	                   p == DMARC_RECORD_P_REJECT       ? "reject"
	                   : p == DMARC_RECORD_P_QUARANTINE ? "quarantine"
	                                                    : "none",
	                   sp == DMARC_RECORD_P_REJECT       ? "reject"
	                   : sp == DMARC_RECORD_P_QUARANTINE ? "quarantine"
	                   : sp == DMARC_RECORD_P_NONE       ? "none"
	                                                     : "unset",
	                   pct < 0 ? 100 : pct, used_org ? " org=" : "", used_org ? org : "");
	if (o->result == POLICY_DMARC_TEMPERROR) {
		char *c =
		    util_xasprintf("%s; an aligned identity had a temporary error", o->comment);
		free(o->comment);
		o->comment = c;
	}
out:
	if (ctx != NULL)
		opendmarc_policy_connect_shutdown(ctx);
	free(rec);
}
