/*
 * policy-spf.c - SPF (RFC 7208) with libspf2, on mxgate's own resolver.
 *
 * libspf2 is given a custom SPF_dns_server_t whose lookup() runs a
 * synchronous policy_dns query (we are on a policy worker), so libspf2
 * never calls res_query or reads /etc/resolv.conf.  The layer records
 * whether every answer it handed out was DNSSEC-secure; the A-R comment
 * says so.
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

struct spf_hook {
	struct policy_dns *dns;
	const char *domain; /* the identity's domain */
	bool all_secure;
	int lookups;
	bool tempfail;
	bool bogus;      /* an answer failed DNSSEC validation */
	bool saw_record; /* a v=spf1 record was published there */
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

/* spf_dns_lookup - libspf2 lookup hook: one synchronous policy_dns query. */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
                                    int should_cache)
{
	struct spf_hook *h = srv->hook;
	struct policy_dns_answer ans;
	SPF_dns_stat_t herrno;
	SPF_dns_rr_t *rr;
	int n = 0;

	if (type != ns_t_a && type != ns_t_aaaa && type != ns_t_txt && type != ns_t_mx &&
	    type != ns_t_ptr)
		return SPF_dns_rr_new_init(srv, domain, type, 0, NO_DATA);
	policy_dns_query_sync(h->dns, domain, (int)type, &ans);
	h->lookups++;
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
		herrno = TRY_AGAIN;
		h->tempfail = true;
		h->bogus |= ans.status == POLICY_DNS_BOGUS;
		break;
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
			if (SPF_dns_rr_buf_realloc(rr, n, len + 1) != 0)
				continue;
			while (pos < len) {
				size_t l = d[pos++];
				if (pos + l > len)
					l = len - pos;
				memcpy(rr->rr[n]->txt + o, d + pos, l);
				o += l;
				pos += l;
			}
			/* libspf2 declares txt[1] and allocates len + 1 bytes
			 * (SPF_dns_rr_buf_realloc above): index through a
			 * pointer, not the one-element array */
			char *txt = rr->rr[n]->txt;
			txt[o] = 0;
			if (strncasecmp(txt, "v=spf1", 6) == 0 && (o == 6 || txt[6] == ' ') &&
			    strcasecmp(domain, h->domain) == 0)
				h->saw_record = true;
			n++;
			break;
		}
		case ns_t_mx:
		case ns_t_ptr: {
			char name[256];
			size_t off = type == ns_t_mx ? 2 : 0;
			if (len <= off ||
			    policy_dns_name_from_wire(d + off, len - off, name, sizeof(name)) < 0 ||
			    SPF_dns_rr_buf_realloc(rr, n, strlen(name) + 1) != 0)
				continue;
			strcpy(type == ns_t_mx ? rr->rr[n]->mx : rr->rr[n]->ptr, name);
			n++;
			break;
		}
		default:
			break;
		}
	}
	rr->num_rr = n;
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
	if (s == NULL || *s == 0 || *s == '[' || strchr(s, '.') == NULL)
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

/* policy_spf_eval - worker: evaluate the SPF identity of pm. */
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
	char *detail = NULL;
	const char *dom;
	SPF_errcode_t qerr;

	policy_spf_outcome_free(o);
	o->evaluated = true;
	util_addr_str(&pm->client, ip, sizeof(ip));
	if (pm->mail_from[0] == 0) {
		o->helo_identity = true;
		o->identity = util_xasprintf("postmaster@%s", pm->helo);
	} else if (pm->mail_from[0] == '@' || strchr(pm->mail_from, '@') == NULL) {
		o->identity =
		    util_xasprintf("postmaster@%s", pm->mail_from + (pm->mail_from[0] == '@'));
	} else {
		o->identity = util_xstrdup(pm->mail_from);
	}
	dom = util_domain_of(o->identity);
	o->domain = util_xstrdup(dom != NULL ? dom : "");
	for (char *p = o->domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!spf_is_domain(o->domain)) {
		o->result = POLICY_SPF_NONE;
		o->secure = false;
		o->comment = util_xasprintf("%s: no domain to check in %s", receiver, o->identity);
		return;
	}

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
	if (pm->helo[0] != 0)
		SPF_request_set_helo_dom(req, pm->helo);
	if (SPF_request_set_env_from(req, o->identity) != 0) {
		o->result = POLICY_SPF_NONE;
		goto done;
	}
	qerr = spf_query(srv, req, &resp);
	if (resp == NULL)
		goto internal;
	o->result = spf_map(SPF_response_result(resp));
	util_log_debug("spf identity=%s libspf2_result=%d err=%d msg=\"%s\"", o->identity,
	               (int)SPF_response_result(resp), (int)qerr, SPF_strerror(qerr));
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
	free(detail);
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
	struct util_buf b;

	if (!o->evaluated)
		return NULL;
	util_addr_str(&pm->client, ip, sizeof(ip));
	/* RFC 7208 9.1: result (comment) key=value pairs */
	util_buf_init(&b);
	util_buf_printf(&b, "Received-SPF: %s (", policy_spf_result_str(o->result));
	spf_add_escaped(&b, o->comment, "()\\");
	util_buf_adds(&b, ")\r\n\treceiver=");
	spf_add_value(&b, receiver);
	spf_add_pair(&b, "client-ip=", ip);
	spf_add_pair(&b, "envelope-from=", pm->mail_from);
	spf_add_pair(&b, "helo=", pm->helo[0] ? pm->helo : "unknown");
	spf_add_pair(&b, "identity=", o->helo_identity ? "helo" : "mailfrom");
	util_buf_adds(&b, ";\r\n");
	return b.data;
}
