/*
 * policy-spf.c - SPF (RFC 7208) with libspf2, on mxgate's own resolver.
 *
 * libspf2 is given a custom SPF_dns_server_t whose lookup() runs a
 * synchronous policy_dns query (we are on a policy worker), so libspf2
 * never calls res_query or reads /etc/resolv.conf.  The layer records
 * whether every answer it handed out was DNSSEC-secure; the A-R comment
 * says so.
 *
 * libspf2 is wrong by RFC 7208 in many corners; mxgate corrects it from
 * this side (docs/conformance.md lists each correction): every record is
 * validated and normalized by policy-spf-check.c before libspf2 compiles
 * it, and spf_dns_lookup() keeps its own count of DNS terms and void
 * lookups (4.6.4) and answers the DNS edge cases itself.  When it stops an
 * evaluation, the result is permerror with the reason in the comment.
 *
 * Identity: MAIL FROM; for the null sender, postmaster@HELO (RFC 7208
 * 2.4), reported as smtp.helo.  A MAIL FROM without a local-part gets
 * "postmaster" (RFC 7208 4.3).
 *
 * Ownership: one SPF_server_t and one DNS layer per evaluation (libspf2
 * objects are not shared between threads); the outcome strings belong to
 * the message (policy_spf_outcome_free).
 * Threads: policy_spf_eval() on a worker; the rest is pure.
 * Diagnostics: libspf2's error/warning output goes to our log.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>

#include "policy-internal.h"

/* RFC 7208 4.6.4 processing limits */
#define SPF_MAX_DNS_TERMS  10
#define SPF_MAX_VOID       2
#define SPF_MAX_HOST_NAMES 10

struct spf_hook {
	struct policy_dns *dns;
	const char *domain; /* the identity's domain */
	bool all_secure;
	int lookups;
	bool tempfail;
	bool bogus;      /* an answer failed DNSSEC validation */
	bool saw_record; /* a v=spf1 record was published there */
	/* mxgate's own accounting (RFC 7208 4.6.4), see spf_dns_lookup */
	int txt_queries;
	int dns_terms;                  /* include a mx ptr exists redirect evaluated */
	int voids;                      /* of those, answers without data */
	struct util_strlist hosts;      /* names of the last MX/PTR answer */
	bool hosts_ptr;                 /* ... and it was a PTR answer */
	char *permerror;                /* set: stop, the result is permerror */
	struct policy_spf_macro_ctx mc; /* d is set per record */
};

/* spf_log_error - libspf2's fatal handler: it never returns. */
__attribute__((noreturn)) static void spf_log_error(const char *file, int line, const char *msg)
{
	util_log_err("libspf2 error file=%s line=%d msg=\"%s\"", file, line, msg);
	abort();
}

/* spf_log_warn - libspf2 warnings. */
static void spf_log_warn(const char *file, int line, const char *msg)
{
	util_log_warn("libspf2 msg=\"%s\"", msg);
}

/* spf_log_debug - libspf2 info/debug output. */
static void spf_log_debug(const char *file, int line, const char *msg)
{
	util_log_debug("libspf2 msg=\"%s\"", msg);
}

/* policy_spf_lib_init - route libspf2's diagnostics to our log. */
void policy_spf_lib_init(void)
{
	SPF_error_handler = spf_log_error;
	SPF_warning_handler = spf_log_warn;
	SPF_info_handler = spf_log_debug;
	SPF_debug_handler = spf_log_debug;
}

/* policy_spf_result_str - RFC 7208 result name. */
const char *policy_spf_result_str(enum policy_spf_result r)
{
	switch (r) {
	case POLICY_SPF_NONE:
		return "none";
	case POLICY_SPF_NEUTRAL:
		return "neutral";
	case POLICY_SPF_PASS:
		return "pass";
	case POLICY_SPF_FAIL:
		return "fail";
	case POLICY_SPF_SOFTFAIL:
		return "softfail";
	case POLICY_SPF_TEMPERROR:
		return "temperror";
	case POLICY_SPF_PERMERROR:
		return "permerror";
	}
	return "none";
}

/* spf_abort - stop the evaluation: libspf2 gets a failure for this and
 * every later query, policy_spf_eval() reports permerror with why. */
static SPF_dns_rr_t *spf_abort(SPF_dns_server_t *srv, struct spf_hook *h, const char *domain,
                               ns_type type, const char *why)
{
	if (h->permerror == NULL)
		h->permerror = util_xstrdup(why);
	return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
}

/* spf_host_take - an address lookup (type) of a name of the last MX/PTR
 * answer: true once per name and type, the entry is used up. */
static bool spf_host_take(struct spf_hook *h, ns_type type, const char *name)
{
	char key[300];

	snprintf(key, sizeof(key), "%d:%s", (int)type, name);
	for (size_t i = 0; i < h->hosts.n; i++) {
		if (strcasecmp(h->hosts.v[i], key) == 0) {
			free(h->hosts.v[i]);
			h->hosts.v[i] = h->hosts.v[--h->hosts.n];
			return true;
		}
	}
	return false;
}

/* spf_host_add - name of an MX/PTR answer: its A and AAAA lookups follow. */
static void spf_host_add(struct spf_hook *h, const char *name)
{
	char key[300];

	snprintf(key, sizeof(key), "%d:%s", (int)ns_t_a, name);
	util_strlist_add(&h->hosts, key);
	snprintf(key, sizeof(key), "%d:%s", (int)ns_t_aaaa, name);
	util_strlist_add(&h->hosts, key);
}

/* spf_cname_loop - name's SERVFAIL comes from a CNAME chain that loops
 * (followed with CNAME queries, at most 16 links). */
static bool spf_cname_loop(struct spf_hook *h, const char *name)
{
	struct util_strlist seen = {0};
	char cur[256];
	bool loop = false;

	snprintf(cur, sizeof(cur), "%s", name);
	for (int i = 0; i < 16 && !loop; i++) {
		struct policy_dns_answer a;
		char next[256];
		util_strlist_add(&seen, cur);
		policy_dns_query_sync(h->dns, cur, 5 /* CNAME */, &a);
		int ok = a.status == POLICY_DNS_OK && a.n > 0 &&
		         policy_dns_name_from_wire(a.data[0], a.len[0], next, sizeof(next)) == 0;
		policy_dns_answer_free(&a);
		if (!ok)
			break;
		size_t l = strlen(next);
		if (l > 0 && next[l - 1] == '.')
			next[l - 1] = 0;
		loop = util_strlist_has_case(&seen, next);
		snprintf(cur, sizeof(cur), "%s", next);
	}
	util_strlist_free(&seen);
	return loop;
}

/* spf_dns_lookup - libspf2 lookup hook: one synchronous policy_dns query.
 *
 * mxgate's corrections of libspf2 live here (docs/conformance.md):
 *   - a name over 253 octets loses left-hand labels (RFC 7208 7.3); a name
 *     that cannot exist (empty label, label over 63 octets) is NXDOMAIN,
 *     not a temporary error (4.3);
 *   - every TXT record is checked by policy_spf_check_record(); a bad one
 *     makes the evaluation a permerror (4.6), libspf2 gets the normalized
 *     copy, and TXT strings that are no SPF record are left out (4.5);
 *   - DNS terms (every TXT query after the first, MX, PTR, A/AAAA not for
 *     a name of the last MX/PTR answer) over 10 and void answers of those
 *     over 2 are a permerror (4.6.4); so is an MX answer of more than 10
 *     names; past 10 PTR names the rest is ignored (4.6.4);
 *   - a null MX (RFC 7505 ".") names no host;
 *   - a SERVFAIL caused by a CNAME loop is a name without data. */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
                                    int should_cache)
{
	struct spf_hook *h = srv->hook;
	struct policy_dns_answer ans;
	SPF_dns_stat_t herrno;
	SPF_dns_rr_t *rr;
	char name[1024];
	const char *qname;
	bool counted = false;
	int n = 0;

	if (type != ns_t_a && type != ns_t_aaaa && type != ns_t_txt && type != ns_t_mx &&
	    type != ns_t_ptr)
		return SPF_dns_rr_new_init(srv, domain, type, 0, NO_DATA);
	if (h->permerror != NULL)
		return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
	/* RFC 7208 7.3: over 253 octets, drop left-hand labels */
	snprintf(name, sizeof(name), "%s", domain);
	qname = name;
	while (strlen(qname) > 253 && strchr(qname, '.') != NULL)
		qname = strchr(qname, '.') + 1;
	if (type == ns_t_txt)
		counted = h->txt_queries++ > 0; /* include / redirect */
	else if (type == ns_t_mx || type == ns_t_ptr)
		counted = true;
	else
		counted = !spf_host_take(h, type, qname);
	/* RFC 7208 5.5: a DNS error on the PTR lookup, or on the address
	 * lookup of one of its names, is no match (that name is skipped) */
	bool ptr_side = type == ns_t_ptr || (!counted && h->hosts_ptr && type != ns_t_txt);
	if (counted && ++h->dns_terms > SPF_MAX_DNS_TERMS)
		return spf_abort(srv, h, domain, type,
		                 "more than 10 DNS lookups, RFC 7208 section 4.6.4");
	if (!policy_spf_name_ok(qname)) {
		memset(&ans, 0, sizeof(ans));
		ans.status = POLICY_DNS_NXDOMAIN;
		ans.secure = true; /* nothing was asked */
	} else {
		policy_dns_query_sync(h->dns, qname, (int)type, &ans);
		h->lookups++;
		if (ans.status == POLICY_DNS_TEMPFAIL && ans.servfail && spf_cname_loop(h, qname))
			ans.status = POLICY_DNS_NXDOMAIN;
	}
	if (!ans.secure)
		h->all_secure = false;
	switch (ans.status) {
	case POLICY_DNS_OK:
		herrno = NETDB_SUCCESS;
		break;
	case POLICY_DNS_NXDOMAIN:
		herrno = HOST_NOT_FOUND;
		break;
	case POLICY_DNS_NODATA:
		herrno = NO_DATA;
		break;
	default:
		if (ptr_side) {
			herrno = NO_DATA;
			counted = false; /* an error, not a void lookup */
			break;
		}
		herrno = TRY_AGAIN;
		h->tempfail = true;
		h->bogus |= ans.status == POLICY_DNS_BOGUS;
		break;
	}
	if (type == ns_t_mx || type == ns_t_ptr) {
		util_strlist_free(&h->hosts);
		memset(&h->hosts, 0, sizeof(h->hosts));
		h->hosts_ptr = type == ns_t_ptr;
	}
	rr = SPF_dns_rr_new_init(srv, domain, type, ans.ttl, herrno);
	if (rr == NULL)
		goto out;
	for (size_t i = 0; i < ans.n; i++) {
		const unsigned char *d = ans.data[i];
		size_t len = ans.len[i];

		switch (type) {
		case ns_t_a:
			if (len != 4 || SPF_dns_rr_buf_realloc(rr, n, sizeof(struct in_addr)) != 0)
				continue;
			memcpy(&rr->rr[n]->a, d, 4);
			n++;
			break;
		case ns_t_aaaa:
			if (len != 16 ||
			    SPF_dns_rr_buf_realloc(rr, n, sizeof(struct in6_addr)) != 0)
				continue;
			memcpy(&rr->rr[n]->aaaa, d, 16);
			n++;
			break;
		case ns_t_txt: {
			/* character-strings concatenated (RFC 7208 3.3) */
			size_t pos = 0, o = 0;
			char *txt = util_xmalloc(len + 1), *norm = NULL;
			char why[160];
			while (pos < len) {
				size_t l = d[pos++];
				if (pos + l > len)
					l = len - pos;
				memcpy(txt + o, d + pos, l);
				o += l;
				pos += l;
			}
			txt[o] = 0;
			/* RFC 7208 4.5: only "v=spf1" followed by SP or the end */
			if (strncasecmp(txt, "v=spf1", 6) != 0 || (o != 6 && txt[6] != ' ') ||
			    memchr(txt, 0, o) != NULL) {
				free(txt);
				continue;
			}
			if (strcasecmp(domain, h->domain) == 0)
				h->saw_record = true;
			struct policy_spf_macro_ctx mc = h->mc;
			char dname[sizeof(name)];
			snprintf(dname, sizeof(dname), "%s", qname);
			if (dname[0] != 0 && dname[strlen(dname) - 1] == '.')
				dname[strlen(dname) - 1] = 0;
			mc.d = dname;
			if (policy_spf_check_record(txt, o, &mc, &norm, why, sizeof(why)) < 0) {
				char *msg =
				    util_xasprintf("invalid SPF record at %s: %s", qname, why);
				free(txt);
				SPF_dns_rr_free(rr);
				rr = spf_abort(srv, h, domain, type, msg);
				free(msg);
				goto out;
			}
			free(txt);
			size_t nl = strlen(norm);
			if (SPF_dns_rr_buf_realloc(rr, n, nl + 1) != 0) {
				free(norm);
				continue;
			}
			/* libspf2 declares txt[1] and allocates nl + 1 bytes:
			 * index through a pointer, not the one-element array */
			char *dst = rr->rr[n]->txt;
			memcpy(dst, norm, nl + 1);
			free(norm);
			n++;
			break;
		}
		case ns_t_mx:
		case ns_t_ptr: {
			char host[256];
			size_t off = type == ns_t_mx ? 2 : 0;
			if (len <= off ||
			    policy_dns_name_from_wire(d + off, len - off, host, sizeof(host)) < 0)
				continue;
			size_t hl = strlen(host);
			if (hl > 0 && host[hl - 1] == '.')
				host[--hl] = 0;
			if (hl == 0) /* RFC 7505 null MX: no host */
				continue;
			if (n >= SPF_MAX_HOST_NAMES) {
				if (type == ns_t_mx) {
					SPF_dns_rr_free(rr);
					rr = spf_abort(
					    srv, h, domain, type,
					    "more than 10 MX names, RFC 7208 section 4.6.4");
					goto out;
				}
				continue; /* PTR: names past the tenth are ignored */
			}
			if (SPF_dns_rr_buf_realloc(rr, n, hl + 1) != 0)
				continue;
			strcpy(type == ns_t_mx ? rr->rr[n]->mx : rr->rr[n]->ptr, host);
			spf_host_add(h, host);
			n++;
			break;
		}
		default:
			break;
		}
	}
	rr->num_rr = n;
	if (n == 0 && rr->herrno == NETDB_SUCCESS)
		rr->herrno = NO_DATA;
	/* void lookup: a DNS term answered NXDOMAIN or with no records (RFC
	 * 7208 4.6.4; a null MX is a record, a failure is not void) */
	if (counted && type != ns_t_txt &&
	    (ans.status == POLICY_DNS_NXDOMAIN || ans.status == POLICY_DNS_NODATA ||
	     (ans.status == POLICY_DNS_OK && ans.n == 0)) &&
	    ++h->voids > SPF_MAX_VOID) {
		SPF_dns_rr_free(rr);
		rr = spf_abort(srv, h, domain, type,
		               "more than 2 void lookups, RFC 7208 section 4.6.4");
	}
out:
	policy_dns_answer_free(&ans);
	return rr;
}

/* spf_query - SPF_request_query_mailfrom() without libspf2's "localhost
 * gets a free pass" shortcut (SPF_REASON_LOCALHOST): a gateway judges a
 * loopback client (a local relay, our tests) like any other. */
static SPF_errcode_t spf_query(SPF_server_t *srv, SPF_request_t *req, SPF_response_t **respp)
{
	SPF_record_t *rec = NULL;
	SPF_response_t *resp;
	SPF_errcode_t err;

	*respp = resp = SPF_response_new(req);
	if (resp == NULL)
		return SPF_E_NO_MEMORY;
	/* what libspf2's SPF_request_prepare() does */
	req->cur_dom = req->use_helo ? req->helo_dom : req->env_from_dp;
	err = SPF_server_get_record(srv, req, resp, &rec);
	if (err != SPF_E_SUCCESS) {
		if (rec != NULL)
			SPF_record_free(rec);
		SPF_i_done(resp, resp->result, resp->reason, resp->err);
		return err;
	}
	resp->spf_record_exp = rec;
	err = SPF_record_interpret(rec, req, resp, 0);
	resp->spf_record_exp = NULL;
	SPF_record_free(rec);
	return err;
}

/* spf_map - libspf2 result to ours. */
static enum policy_spf_result spf_map(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS:
		return POLICY_SPF_PASS;
	case SPF_RESULT_FAIL:
		return POLICY_SPF_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return POLICY_SPF_SOFTFAIL;
	case SPF_RESULT_NEUTRAL:
		return POLICY_SPF_NEUTRAL;
	case SPF_RESULT_TEMPERROR:
		return POLICY_SPF_TEMPERROR;
	case SPF_RESULT_PERMERROR:
		return POLICY_SPF_PERMERROR;
	default:
		return POLICY_SPF_NONE;
	}
}

/* spf_is_domain - a plausible domain name (not an address literal). */
static bool spf_is_domain(const char *s)
{
	if (s == NULL || *s == 0 || *s == '[' || !policy_spf_name_ok(s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' && *s != '_')
			return false;
	return true;
}

/* spf_comment - the RFC 7208 9.1 style explanation for the result. */
static char *spf_comment(const char *receiver, enum policy_spf_result r, const char *ident,
                         const char *ip, const char *detail)
{
	switch (r) {
	case POLICY_SPF_PASS:
		return util_xasprintf("%s: domain of %s designates %s as permitted sender",
		                      receiver, ident, ip);
	case POLICY_SPF_FAIL:
		return util_xasprintf("%s: domain of %s does not designate %s as permitted sender",
		                      receiver, ident, ip);
	case POLICY_SPF_SOFTFAIL:
		return util_xasprintf("%s: domain of transitioning %s does not designate %s as "
		                      "permitted sender",
		                      receiver, ident, ip);
	case POLICY_SPF_NEUTRAL:
		return util_xasprintf("%s: %s is neither permitted nor denied by domain of %s",
		                      receiver, ip, ident);
	case POLICY_SPF_TEMPERROR:
		return util_xasprintf("%s: temporary error looking up the SPF policy of %s%s%s",
		                      receiver, ident, detail ? ": " : "", detail ? detail : "");
	case POLICY_SPF_PERMERROR:
		return util_xasprintf("%s: permanent error in the SPF policy of %s%s%s", receiver,
		                      ident, detail ? ": " : "", detail ? detail : "");
	case POLICY_SPF_NONE:
		break;
	}
	return util_xasprintf("%s: domain of %s does not publish an SPF policy", receiver, ident);
}

/* spf_sanitize - keep a libspf2 message printable and free of quotes/parens. */
static void spf_sanitize(char *s)
{
	for (; *s; s++)
		if (!isprint((unsigned char)*s) || *s == '(' || *s == ')' || *s == '"' ||
		    *s == '\\')
			*s = ' ';
}

/* policy_spf_eval - worker: evaluate the SPF identity of pm.
 *
 * RFC 8616 4: U-labels in the MAIL FROM domain (SMTPUTF8) and the HELO name
 * are converted to A-labels before anything is looked up, macros included;
 * o->domain is the A-label form (so DMARC aligns it with the A-label From
 * domain), o->identity the ASCII-only form headers and replies carry.  A
 * domain that does not convert is malformed: none (RFC 7208 4.3).  A UTF-8
 * local-part reaches libspf2 as it is: a %{s} / %{l} term then names no
 * DNS name (policy_spf_name_ok) and matches nothing (RFC 8616 4). */
void policy_spf_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	struct policy_spf_outcome *o = &pm->spf;
	const char *receiver = cfg->authserv_id ? cfg->authserv_id : cfg->hostname;
	struct spf_hook hook = {.dns = pm->pc->dns, .all_secure = true};
	SPF_dns_server_t layer;
	SPF_server_t *srv = NULL;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	char ip[INET6_ADDRSTRLEN];
	char *detail = NULL, *local = NULL, *sender = NULL, *helo = NULL;
	char nibbles[80] = "";
	const char *dom;
	SPF_errcode_t qerr;

	policy_spf_outcome_free(o);
	o->evaluated = true;
	util_addr_str(&pm->client, ip, sizeof(ip));
	/* a HELO name that does not convert stays as sent: as the identity it
	 * is no domain (none), in %{h} it names nothing */
	helo = policy_idn_lookup_name(pm->helo);
	if (helo == NULL)
		helo = util_xstrdup(pm->helo);
	if (pm->mail_from[0] == 0) {
		o->helo_identity = true;
		sender = util_xasprintf("postmaster@%s", helo);
	} else if (pm->mail_from[0] == '@' || strchr(pm->mail_from, '@') == NULL) {
		sender =
		    util_xasprintf("postmaster@%s", pm->mail_from + (pm->mail_from[0] == '@'));
	} else {
		sender = util_xstrdup(pm->mail_from);
	}
	o->identity = policy_idn_header_addr(sender);
	dom = util_domain_of(sender);
	o->domain = policy_idn_lookup_name(dom != NULL ? dom : "");
	if (o->domain == NULL) {
		o->domain = util_xstrdup("");
		o->result = POLICY_SPF_NONE;
		o->comment = util_xasprintf(
		    "%s: the domain of %s is not a valid internationalized domain name", receiver,
		    o->identity);
		goto out;
	}
	for (char *p = o->domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!spf_is_domain(o->domain)) {
		o->result = POLICY_SPF_NONE;
		o->secure = false;
		o->comment = util_xasprintf("%s: no domain to check in %s", receiver, o->identity);
		goto out;
	}

	/* what libspf2 evaluates: the local-part as sent, the A-label domain */
	local = util_xstrdup(sender);
	*strrchr(local, '@') = 0;
	free(sender);
	sender = util_xasprintf("%s@%s", local, o->domain);
	/* macro values (RFC 7208 7.2) for the record normalization */
	if (pm->client.ss.ss_family == AF_INET6) {
		const unsigned char *a = ((struct sockaddr_in6 *)&pm->client.ss)->sin6_addr.s6_addr;
		for (int k = 0; k < 16; k++)
			snprintf(nibbles + 4 * k, sizeof(nibbles) - 4 * (size_t)k, "%x.%x%s",
			         a[k] >> 4, a[k] & 15, k < 15 ? "." : "");
	}
	hook.mc = (struct policy_spf_macro_ctx){
	    .s = sender,
	    .l = local,
	    .o = o->domain,
	    .h = helo[0] ? helo : NULL,
	    .i = pm->client.ss.ss_family == AF_INET6 ? nibbles : ip,
	    .v = pm->client.ss.ss_family == AF_INET6 ? "ip6" : "in-addr",
	};
	memset(&layer, 0, sizeof(layer));
	layer.lookup = spf_dns_lookup;
	layer.name = "mxgate";
	layer.hook = &hook;
	hook.domain = o->domain;
	srv = SPF_server_new_dns(&layer, 0);
	if (srv == NULL)
		goto internal;
	SPF_server_set_rec_dom(srv, receiver);
	req = SPF_request_new(srv);
	if (req == NULL)
		goto internal;
	if (pm->client.ss.ss_family == AF_INET)
		SPF_request_set_ipv4(req, ((struct sockaddr_in *)&pm->client.ss)->sin_addr);
	else
		SPF_request_set_ipv6(req, ((struct sockaddr_in6 *)&pm->client.ss)->sin6_addr);
	if (helo[0] != 0)
		SPF_request_set_helo_dom(req, helo);
	if (SPF_request_set_env_from(req, sender) != 0) {
		o->result = POLICY_SPF_NONE;
		goto done;
	}
	qerr = spf_query(srv, req, &resp);
	if (resp == NULL)
		goto internal;
	o->result = spf_map(SPF_response_result(resp));
	util_log_debug("spf identity=%s libspf2_result=%d err=%d msg=\"%s\"", o->identity,
	               (int)SPF_response_result(resp), (int)qerr, SPF_strerror(qerr));
	/* mxgate's own checks (spf_dns_lookup) overrule libspf2 */
	if (hook.permerror != NULL) {
		o->result = POLICY_SPF_PERMERROR;
		detail = util_xstrdup(hook.permerror);
		spf_sanitize(detail);
		goto done;
	}
	/* No result from libspf2 when the record could not be had or not be
	 * compiled: RFC 7208 4.5/4.6 make a syntax error a permerror. */
	if (SPF_response_result(resp) == SPF_RESULT_INVALID && qerr != SPF_E_SUCCESS &&
	    !hook.tempfail && qerr != SPF_E_DNS_ERROR &&
	    (qerr != SPF_E_NOT_SPF || hook.saw_record)) {
		/* libspf2 drops a record that does not compile and says
		 * "not SPF"; a published v=spf1 record is a permerror. */
		o->result = POLICY_SPF_PERMERROR;
		detail =
		    util_xstrdup(qerr == SPF_E_NOT_SPF ? "invalid SPF record" : SPF_strerror(qerr));
		spf_sanitize(detail);
		goto done;
	}
	if (o->result == POLICY_SPF_PERMERROR || o->result == POLICY_SPF_TEMPERROR) {
		SPF_errcode_t e = SPF_response_errcode(resp);
		detail = util_xstrdup(hook.bogus           ? "DNSSEC validation failed"
		                      : e != SPF_E_SUCCESS ? SPF_strerror(e)
		                                           : "DNS failure");
		spf_sanitize(detail);
	}
	/* libspf2 turns some resolver failures into "none": a failed
	 * lookup of the policy record itself is a temporary error. */
	if (o->result == POLICY_SPF_NONE && hook.tempfail) {
		o->result = POLICY_SPF_TEMPERROR;
		detail = util_xstrdup(hook.bogus ? "DNSSEC validation failed"
		                                 : "DNS timeout or failure");
	}
	goto done;
internal:
	o->result = POLICY_SPF_TEMPERROR;
	detail = util_xstrdup("internal error");
done:
	o->secure = hook.lookups > 0 && hook.all_secure;
	o->comment = spf_comment(receiver, o->result, o->identity, ip, detail);
out:
	free(detail);
	free(hook.permerror);
	free(local);
	free(sender);
	free(helo);
	util_strlist_free(&hook.hosts);
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	if (srv != NULL)
		SPF_server_free(srv);
}

/* policy_spf_outcome_free - free the outcome strings and reset. */
void policy_spf_outcome_free(struct policy_spf_outcome *o)
{
	free(o->identity);
	free(o->domain);
	free(o->comment);
	memset(o, 0, sizeof(*o));
}

/* policy_spf_compute_reply - the 550/451 reply the config asks for, or NULL. */
char *policy_spf_compute_reply(const struct config *cfg, const struct policy_spf_outcome *o)
{
	if (!o->evaluated)
		return NULL;
	if (o->result == POLICY_SPF_FAIL && cfg->spf_reject_fail)
		return util_xasprintf("550 5.7.23 SPF fail: %s is not allowed to send mail for %s",
		                      o->identity, o->domain);
	if (o->result == POLICY_SPF_TEMPERROR && cfg->spf_temperror_defer)
		return util_xasprintf("451 4.7.24 SPF temporary error for %s, try again later",
		                      o->domain);
	return NULL;
}

/* spf_add_escaped - s with the given specials turned into quoted-pairs and
 * control characters dropped (comment text / quoted-string content). */
static void spf_add_escaped(struct util_buf *b, const char *s, const char *specials)
{
	for (; s != NULL && *s; s++) {
		if (strchr(specials, *s) != NULL)
			util_buf_adds(b, "\\");
		if ((unsigned char)*s >= 0x20 && *s != 0x7f)
			util_buf_add(b, s, 1);
	}
}

/* spf_is_dot_atom - RFC 5322 3.2.3 dot-atom-text: atext runs joined by
 * single dots. */
static bool spf_is_dot_atom(const char *s)
{
	bool atom = false;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '.') {
			if (!atom)
				return false;
			atom = false;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) {
			atom = true;
		} else {
			return false;
		}
	}
	return atom;
}

/* spf_add_value - a key-value-pair value (RFC 7208 9.1): a dot-atom as it
 * is, anything else as a quoted-string, so a value can never add a pair,
 * end the list or open a comment. */
static void spf_add_value(struct util_buf *b, const char *v)
{
	if (spf_is_dot_atom(v)) {
		util_buf_adds(b, v);
		return;
	}
	util_buf_adds(b, "\"");
	spf_add_escaped(b, v, "\"\\");
	util_buf_adds(b, "\"");
}

/* spf_add_pair - "; key=value", folded after the ';' (RFC 7208 9.1 allows
 * CFWS there) when the line would pass SPF_LINE_MAX octets: a quoted
 * envelope-from and HELO full of quoted-pairs reach ~500 octets each, and
 * a line over 998 (RFC 5322 2.1.1) gets the message refused downstream -
 * or wrapped, which would make a field of the client's text. */
#define SPF_LINE_MAX 900
static void spf_add_pair(struct util_buf *b, const char *key, const char *v)
{
	struct util_buf w;
	size_t col = 0;

	util_buf_init(&w);
	util_buf_adds(&w, key);
	spf_add_value(&w, v);
	while (col < b->len && b->data[b->len - 1 - col] != '\n')
		col++;
	util_buf_adds(b, col + 2 + w.len > SPF_LINE_MAX ? ";\r\n\t" : "; ");
	util_buf_add(b, w.data, w.len);
	util_buf_free(&w);
}

/* policy_received_spf_format - the Received-SPF field (RFC 7208 9.1), or NULL. */
char *policy_received_spf_format(const struct config *cfg, const struct policy_msg *pm)
{
	const struct policy_spf_outcome *o = &pm->spf;
	const char *receiver = cfg->authserv_id ? cfg->authserv_id : cfg->hostname;
	char ip[INET6_ADDRSTRLEN];
	char *from, *helo;
	struct util_buf b;

	if (!o->evaluated)
		return NULL;
	util_addr_str(&pm->client, ip, sizeof(ip));
	/* ASCII only (RFC 8616 4): the domains as A-labels */
	from = policy_idn_header_addr(pm->mail_from);
	helo = policy_idn_header_name(pm->helo[0] ? pm->helo : "unknown");
	/* RFC 7208 9.1: result (comment) key=value pairs */
	util_buf_init(&b);
	util_buf_printf(&b, "Received-SPF: %s (", policy_spf_result_str(o->result));
	spf_add_escaped(&b, o->comment, "()\\");
	util_buf_adds(&b, ")\r\n\treceiver=");
	spf_add_value(&b, receiver);
	spf_add_pair(&b, "client-ip=", ip);
	spf_add_pair(&b, "envelope-from=", from);
	spf_add_pair(&b, "helo=", helo);
	spf_add_pair(&b, "identity=", o->helo_identity ? "helo" : "mailfrom");
	util_buf_adds(&b, ";\r\n");
	free(from);
	free(helo);
	return b.data;
}
