/*
 * policy-verdict.c - from check results to a verdict: the action (accept,
 * quarantine, reject), the SMTP reply, the header fields to prepend
 * (Authentication-Results RFC 8601, Received-SPF RFC 7208 9.1, the spam
 * headers) and the key=value summary for the log; plus
 * policy_drop_header(), which removes forged copies of our own headers.
 *
 * Disabled checks are not run and not stamped: no clause in A-R, no key in
 * the summary.
 *
 * Enforcement: DMARC failure with p=reject -> REJECT (550 5.7.1) when
 * dmarc_enforcement=reject, QUARANTINE when =quarantine; p=quarantine (or
 * a reject downgraded by pct) -> QUARANTINE; monitor only stamps.  Exempt
 * domains/clients are stamped, never enforced (the override is named in
 * the A-R comment), and so is a failure an ARC trusted forwarder vouches
 * for (policy-arc.c); when such a forwarder's key cannot be looked up, a
 * DMARC reject becomes TEMPFAIL (451).  Zero or several From: addresses ->
 * REJECT whenever DMARC is enabled.  A DMARC temperror -> TEMPFAIL (451
 * 4.7.1) unless dmarc_temperror=accept, enforcement is monitor, or the
 * sender is exempt.  A spam score at or above the threshold -> QUARANTINE,
 * and so is a DNSBL listing when [dnsbl] tag_action is not deliver; the
 * verdict names each kind that fired (policy_kind), and smtp/ applies each
 * kind's configured action.  X-Spam-Flag is YES when a kind that fired is
 * configured to do more than deliver.
 *
 * Ownership: the verdict strings belong to the message.
 * Threads: policy_verdict_build() runs on a worker as the last step of the
 * verdict job; the rest is pure.  Diagnostics: the summary.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy-arc.h"
#include "policy-internal.h"

/* verdict_authserv_id - [auth] authserv_id, default the hostname. */
static const char *verdict_authserv_id(const struct config *cfg)
{
	return cfg->authserv_id != NULL ? cfg->authserv_id
	       : cfg->hostname != NULL  ? cfg->hostname
	                                : "localhost";
}

/* ------------------------------------------------------------ drop_header */

/* verdict_skip_cfws - past white space, folding and (nested) comments with
 * quoted-pairs (RFC 5322 3.2.2); NULL when a comment is never closed. */
static const char *verdict_skip_cfws(const char *p, const char *end)
{
	while (p < end) {
		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
			p++;
		} else if (*p == '(') {
			int depth = 0;
			for (; p < end; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				else if (*p == '(')
					depth++;
				else if (*p == ')' && --depth == 0)
					break;
			}
			if (p >= end)
				return NULL;
			p++;
		} else {
			break;
		}
	}
	return p;
}

/* verdict_is_token - RFC 2045 5.1 token character (UTF-8 octets allowed,
 * RFC 8601 2.5 / RFC 6532). */
static bool verdict_is_token(unsigned char c)
{
	return c > 0x20 && c != 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* policy_ar_authserv_id - see policy.h.  RFC 8601 2.2:
 *   authres-payload = [CFWS] authserv-id [ CFWS authres-version ]
 *                     ( no-result / 1*resinfo ) [CFWS]
 * and RFC 8617 4.1.1 for the "i=N;" in front of an ARC copy. */
int policy_ar_authserv_id(const char *v, size_t n, bool arc, char *out, size_t outlen)
{
	const char *p = v, *end = v + n;
	bool quoted = false;
	size_t o = 0;

	if (outlen == 0)
		return -1;
	out[0] = '\0';
	if (arc) {
		/* arc-instance = "i" [FWS] "=" [FWS] 1*DIGIT, then ";" */
		if ((p = verdict_skip_cfws(p, end)) == NULL || p >= end || (*p != 'i' && *p != 'I'))
			return -1;
		if ((p = verdict_skip_cfws(p + 1, end)) == NULL || p >= end || *p != '=')
			return -1;
		if ((p = verdict_skip_cfws(p + 1, end)) == NULL || p >= end ||
		    !isdigit((unsigned char)*p))
			return -1;
		while (p < end && isdigit((unsigned char)*p))
			p++;
		if ((p = verdict_skip_cfws(p, end)) == NULL || p >= end || *p != ';')
			return -1;
		p++;
	}
	if ((p = verdict_skip_cfws(p, end)) == NULL || p >= end)
		return -1;
	if (*p == '"') {
		quoted = true;
		for (p++; p < end && *p != '"'; p++) {
			if (*p == '\\' && p + 1 < end)
				p++;
			/* white space and folding inside the quotes are dropped:
			 * no real id has any, and a lax reader trims it */
			if ((unsigned char)*p <= 0x20)
				continue;
			if (o + 1 >= outlen)
				return -1;
			out[o++] = *p;
		}
		if (p >= end)
			return -1; /* never closed */
		p++;
	} else {
		for (; p < end && verdict_is_token((unsigned char)*p); p++) {
			if (o + 1 >= outlen)
				return -1;
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	/* an encoded word (RFC 2047) is never allowed here (RFC 2047 5), but a
	 * lax reader might decode it into our id */
	if (o == 0 || strstr(out, "=?") != NULL)
		return -1;
	/* a quoted id with a ';' or another special would be cut short by a
	 * reader that ignores the quotes: no real id has one */
	for (size_t i = 0; quoted && i < o; i++)
		if (!verdict_is_token((unsigned char)out[i]))
			return -1;
	/* then [CFWS authres-version] and the ";" of the first clause */
	if ((p = verdict_skip_cfws(p, end)) == NULL || p >= end)
		return -1;
	if (isdigit((unsigned char)*p)) {
		while (p < end && isdigit((unsigned char)*p))
			p++;
		if ((p = verdict_skip_cfws(p, end)) == NULL || p >= end)
			return -1;
	}
	if (*p != ';')
		return -1;
	/* "mx.example.com." is the same name as "mx.example.com" */
	while (o > 0 && out[o - 1] == '.')
		out[--o] = '\0';
	return o > 0 ? 0 : -1;
}

/* verdict_mentions - s occurs in v[0..n), ASCII case-insensitively. */
static bool verdict_mentions(const char *v, size_t n, const char *s)
{
	size_t k = strlen(s);

	for (size_t i = 0; k > 0 && i + k <= n; i++)
		if (strncasecmp(v + i, s, k) == 0)
			return true;
	return false;
}

/* verdict_name_is - case-insensitive field-name match against s. */
static bool verdict_name_is(const struct util_hdr_field *f, const char *s)
{
	return s != NULL && s[0] != 0 && util_hdr_name_is(f, s);
}

/* verdict_name_has_prefix - the field name starts with prefix (any case). */
static bool verdict_name_has_prefix(const struct util_hdr_field *f, const char *prefix)
{
	size_t k = strlen(prefix);

	return f->name_len >= k && strncasecmp(f->name, prefix, k) == 0;
}

/* verdict_id_lookalike - got is id once its non-ASCII octets are gone: a
 * no-break space (which .NET's String.Trim removes), a zero-width space or
 * a byte-order mark around or inside our id is invisible to a lax reader.
 * A real U-label id (RFC 8601 2.5) keeps its other letters, so stays
 * different. */
static bool verdict_id_lookalike(const char *got, const char *id)
{
	char ascii[256];
	size_t o = 0;
	bool had = false;

	for (; *got != '\0' && o + 1 < sizeof(ascii); got++) {
		if ((unsigned char)*got >= 0x80)
			had = true;
		else
			ascii[o++] = *got;
	}
	while (o > 0 && ascii[o - 1] == '.')
		o--;
	ascii[o] = '\0';
	return had && util_strcaseeq(ascii, id);
}

/* policy_drop_header - every incoming field a downstream could take for
 * one of ours goes (RFC 8601 5, RFC 7208 9.1): see policy.h. */
bool policy_drop_header(const struct config *cfg, const struct util_hdr_field *f)
{
	const char *id = verdict_authserv_id(cfg);
	char got[256];
	bool arc;

	if (verdict_name_is(f, cfg->spam_flag_header ? cfg->spam_flag_header : "X-Spam-Flag") ||
	    verdict_name_is(f, cfg->spam_score_header ? cfg->spam_score_header : "X-Spam-Score") ||
	    verdict_name_is(f, cfg->spam_status_header ? cfg->spam_status_header : "X-Spam-Status"))
		return true;
	/* X-Spam-Level, X-Spam-Report, X-Spam-Checker-Version...: spam
	 * filters downstream read them as a verdict, and we are the filter */
	if (verdict_name_has_prefix(f, "X-Spam"))
		return true;
	/* we are the only SPF judge the downstream trusts */
	if (util_hdr_name_is(f, "Received-SPF"))
		return true;
	arc = util_hdr_name_is(f, "ARC-Authentication-Results");
	if (!arc && !util_hdr_name_is(f, "Authentication-Results"))
		return false;
	if (policy_ar_authserv_id(f->value, f->value_len, arc, got, sizeof(got)) == 0)
		return util_strcaseeq(got, id) || verdict_id_lookalike(got, id);
	/* Unparseable: nobody can say whose it is, and a lax reader may find
	 * our id in it.  An A-R goes; an ARC copy goes only when it mentions
	 * our id or holds an encoded word, so a foreign ARC set we cannot
	 * read stays intact for the downstream's ARC validation. */
	if (!arc)
		return true;
	return verdict_mentions(f->value, f->value_len, id) ||
	       verdict_mentions(f->value, f->value_len, "=?");
}

/* ------------------------------------------------------------ score */

/* verdict_dkim_state - any signature passed / any failed. */
static void verdict_dkim_state(const struct policy_msg *pm, bool *pass, bool *fail)
{
	*pass = *fail = false;
	for (size_t i = 0; i < pm->nsigs; i++) {
		if (strcmp(pm->sigs[i].result, "pass") == 0)
			*pass = true;
		else if (strcmp(pm->sigs[i].result, "fail") == 0 ||
		         strcmp(pm->sigs[i].result, "policy") == 0)
			*fail = true;
	}
}

/* verdict_rule - add a rule to the score. */
static double verdict_rule(struct util_strlist *rules, const char *name, double w)
{
	if (rules != NULL && w != 0) {
		util_strlist_add(rules, name);
	}
	return w;
}

/* policy_score - sum the configured weights of the rules that fired. */
double policy_score(const struct config *cfg, const struct policy_msg *pm,
                    struct util_strlist *rules)
{
	double score = 0;
	bool dpass, dfail;

	if (pm->spf.evaluated && pm->spf.result == POLICY_SPF_FAIL)
		score += verdict_rule(rules, "SPF_FAIL", cfg->weight_spf_fail);
	else if (pm->spf.evaluated && pm->spf.result == POLICY_SPF_SOFTFAIL)
		score += verdict_rule(rules, "SPF_SOFTFAIL", cfg->weight_spf_softfail);
	/* a failing signature counts only when none passed (a good signature
	 * next to a broken one is common after list processing) */
	verdict_dkim_state(pm, &dpass, &dfail);
	if (dfail && !dpass)
		score += verdict_rule(rules, "DKIM_FAIL", cfg->weight_dkim_fail);
	if (pm->dmarc.evaluated && pm->dmarc.result == POLICY_DMARC_FAIL) {
		if (pm->dmarc.applied == 'q')
			score +=
			    verdict_rule(rules, "DMARC_QUARANTINE", cfg->weight_dmarc_quarantine);
		else
			score += verdict_rule(rules, "DMARC_FAIL", cfg->weight_dmarc_fail);
	}
	for (size_t i = 0; i < pm->dnsbl_hits.n; i++) {
		char *name = util_xasprintf("DNSBL_%s", pm->dnsbl_hits.v[i]);
		score += verdict_rule(rules, name, cfg->weight_dnsbl);
		free(name);
	}
	if (pm->rdns_checked && pm->no_rdns)
		score += verdict_rule(rules, "NO_RDNS", cfg->weight_no_rdns);
	return score;
}

/* ------------------------------------------------------------ A-R */

/* verdict_is_bare_pvalue - can be written as a pvalue without quotes
 * (RFC 8601 2.2): a token (RFC 2045: no specials, no '=', '/', '@'), or
 * dot-atom "@" domain-name with an LDH domain.  Anything else - ';', '(',
 * '=', spaces, a quoted local part - is written as a quoted-string, so a
 * value from the client can never add a property or end the clause. */
static bool verdict_is_bare_pvalue(const char *s)
{
	const char *at = strrchr(s, '@'), *start = s;
	bool atom = false;

	if (*s == '\0')
		return false;
	if (at == NULL) {
		for (; *s; s++)
			if (!verdict_is_token((unsigned char)*s) || (unsigned char)*s >= 0x80)
				return false;
		return true;
	}
	for (; s < at; s++) { /* dot-atom local part, or none ("@domain") */
		unsigned char c = (unsigned char)*s;
		if (c == '.') {
			if (!atom)
				return false;
			atom = false;
		} else if ((isalnum(c) && c < 0x80) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) {
			atom = true;
		} else {
			return false;
		}
	}
	if (at != start && !atom)
		return false; /* "a.@x": not a dot-atom */
	return util_is_ldh_name(at + 1);
}

/* verdict_add_value - a pvalue: bare when safe, else a quoted-string. */
static void verdict_add_value(struct util_buf *b, const char *v)
{
	if (verdict_is_bare_pvalue(v)) {
		util_buf_adds(b, v);
		return;
	}
	util_buf_adds(b, "\"");
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			util_buf_adds(b, "\\");
		if ((unsigned char)*v >= 0x20)
			util_buf_add(b, v, 1);
	}
	util_buf_adds(b, "\"");
}

/* verdict_add_prop - " name=value" for a value from the message (DKIM
 * tags, the From: domain), left out when longer than a domain name or
 * address can be (RFC 5321 4.5.3.1) as written: the signer's text has no length
 * limit, and a line of ours over 998 octets (RFC 5322 2.1.1) gets the
 * message refused downstream - or wrapped, which would make a field of
 * the rest.  The property is optional (RFC 8601 2.3). */
#define VERDICT_PVALUE_MAX 255
static void verdict_add_prop(struct util_buf *b, const char *name, const char *v)
{
	struct util_buf w;

	if (v == NULL || strlen(v) > VERDICT_PVALUE_MAX)
		return;
	util_buf_init(&w);
	verdict_add_value(&w, v); /* as written: quotes and quoted-pairs count */
	if (w.len <= VERDICT_PVALUE_MAX) {
		util_buf_adds(b, name);
		util_buf_add(b, w.data, w.len);
	}
	util_buf_free(&w);
}

/* verdict_add_spf_prop - " smtp.mailfrom=value": always written (the SPF
 * identity), on a folded line of its own (RFC 8601 2.2 allows CFWS before
 * a propspec) when the line would pass 900 octets - the comment holds
 * the same address, and with quoted-pairs each can reach ~500 octets. */
static void verdict_add_spf_prop(struct util_buf *b, const char *name, const char *v)
{
	struct util_buf w;
	size_t col = 0;

	util_buf_init(&w);
	util_buf_adds(&w, name);
	verdict_add_value(&w, v);
	while (col < b->len && b->data[b->len - 1 - col] != '\n')
		col++;
	if (col + w.len > 900)
		util_buf_adds(b, "\r\n\t");
	util_buf_add(b, w.data, w.len);
	util_buf_free(&w);
}

/* verdict_add_ctext - comment text: parentheses and backslashes become
 * quoted-pairs (RFC 5322 3.2.2), control characters are dropped, so data
 * from the message can never close our comment and forge a clause. */
static void verdict_add_ctext(struct util_buf *b, const char *s)
{
	for (; s != NULL && *s; s++) {
		if (*s == '(' || *s == ')' || *s == '\\')
			util_buf_adds(b, "\\");
		if ((unsigned char)*s >= 0x20 && *s != 0x7f)
			util_buf_add(b, s, 1);
	}
}

/* verdict_dmarc_disposition - what we do about this DMARC result. */
static const char *verdict_dmarc_disposition(const struct config *cfg,
                                             const struct policy_dmarc_outcome *o)
{
	if (o->result != POLICY_DMARC_FAIL || o->applied == 'n' || o->applied == 0)
		return "none";
	if (o->exempt != NULL || cfg->dmarc_enforcement == CONFIG_DMARC_MONITOR)
		return "none";
	if (o->applied == 'r' && cfg->dmarc_enforcement == CONFIG_DMARC_REJECT)
		return "reject";
	return "quarantine";
}

static const char *const dmarc_words[] = {"none", "pass", "fail", "temperror", "permerror"};

/* policy_ar_format - the Authentication-Results field (RFC 8601). */
char *policy_ar_format(const struct config *cfg, const struct policy_msg *pm)
{
	struct util_buf b;
	int clauses = 0;

	util_buf_init(&b);
	util_buf_printf(&b, "Authentication-Results: %s", verdict_authserv_id(cfg));
	if (pm->spf.evaluated) {
		util_buf_printf(&b, ";\r\n\tspf=%s (", policy_spf_result_str(pm->spf.result));
		verdict_add_ctext(&b, pm->spf.comment);
		util_buf_printf(&b, "%s)", pm->spf.secure ? "; dnssec=secure" : "");
		/* ASCII only (RFC 8616 4): the domain as A-labels, a UTF-8
		 * local-part left out */
		char *v = pm->spf.helo_identity
		              ? policy_idn_header_name(pm->helo[0] ? pm->helo : "unknown")
		              : policy_idn_header_addr(pm->mail_from);
		verdict_add_spf_prop(&b, pm->spf.helo_identity ? " smtp.helo=" : " smtp.mailfrom=",
		                     v);
		free(v);
		clauses++;
	}
	if (cfg->dkim_enabled) {
		if (pm->nsigs == 0) {
			util_buf_adds(&b, ";\r\n\tdkim=none");
			clauses++;
		}
		for (size_t i = 0; i < pm->nsigs; i++) {
			const struct policy_dkim_sig *g = &pm->sigs[i];
			util_buf_printf(&b, ";\r\n\tdkim=%s (", g->result);
			verdict_add_ctext(&b, g->comment);
			util_buf_printf(&b, "%s)", g->secure ? "; dnssec=secure" : "");
			verdict_add_prop(&b, " header.d=", g->d);
			verdict_add_prop(&b, " header.s=", g->s);
			verdict_add_prop(&b, " header.i=", g->i);
			verdict_add_prop(&b, " header.b=", g->b);
			clauses++;
		}
	}
	if (pm->dmarc.evaluated) {
		const struct policy_dmarc_outcome *o = &pm->dmarc;
		util_buf_printf(&b, ";\r\n\tdmarc=%s (", dmarc_words[o->result]);
		if (o->comment != NULL) {
			verdict_add_ctext(&b, o->comment);
			util_buf_adds(&b, " ");
		}
		util_buf_printf(&b, "dis=%s", verdict_dmarc_disposition(cfg, o));
		if (o->exempt != NULL) {
			util_buf_adds(&b, "; override=");
			verdict_add_ctext(&b, o->exempt);
		}
		util_buf_printf(&b, "%s)", o->secure ? "; dnssec=secure" : "");
		verdict_add_prop(&b, " header.from=", o->header_from);
		if (o->policy != 0)
			util_buf_printf(&b, " policy.dmarc=%s",
			                o->policy == 'r'   ? "reject"
			                : o->policy == 'q' ? "quarantine"
			                                   : "none");
		/* RFC 9989 A-R registrations: polrec.domain when the record
		 * was found elsewhere than the From domain (tree walk), and
		 * polrec.p, the p= read from it */
		if (o->record_domain != NULL && o->header_from != NULL &&
		    strcmp(o->record_domain, o->header_from) != 0) {
			util_buf_adds(&b, " polrec.domain=");
			verdict_add_value(&b, o->record_domain);
		}
		if (o->record_p != 0) /* the p= of the record found */
			util_buf_printf(&b, " polrec.p=%s",
			                o->record_p == 'r'   ? "reject"
			                : o->record_p == 'q' ? "quarantine"
			                                     : "none");
		clauses++;
	}
	{
		char *arc = policy_arc_ar_clause(pm); /* RFC 8617 4.4 */
		if (arc != NULL) {
			util_buf_printf(&b, ";\r\n\t%s", arc);
			free(arc);
			clauses++;
		}
	}
	if (clauses == 0)
		util_buf_adds(&b, "; none");
	util_buf_adds(&b, "\r\n");
	return b.data;
}

/* ------------------------------------------------------------ verdict */

/* verdict_summary - "spf=pass dkim=pass dmarc=pass score=0.0 action=accept". */
static char *verdict_summary(const struct config *cfg, const struct policy_msg *pm)
{
	static const char *const actions[] = {"accept", "quarantine", "reject", "tempfail"};
	struct util_buf b;

	util_buf_init(&b);
	util_buf_adds(&b, "");
	if (pm->spf.evaluated)
		util_buf_printf(&b, "spf=%s ", policy_spf_result_str(pm->spf.result));
	if (cfg->dkim_enabled) {
		const char *best = pm->nsigs > 0 ? pm->sigs[0].result : "none";
		for (size_t i = 0; i < pm->nsigs; i++)
			if (strcmp(pm->sigs[i].result, "pass") == 0)
				best = "pass";
		util_buf_printf(&b, "dkim=%s ", best);
	}
	if (pm->dmarc.evaluated)
		util_buf_printf(&b, "dmarc=%s ", dmarc_words[pm->dmarc.result]);
	util_buf_adds(&b, policy_arc_summary(pm));
	for (size_t i = 0; i < pm->dnsbl_hits.n; i++)
		util_buf_printf(&b, "dnsbl=%s ", pm->dnsbl_hits.v[i]);
	util_buf_printf(&b, "score=%.1f action=%s", pm->verdict.score, actions[pm->verdict.action]);
	return b.data;
}

/* policy_verdict_build - worker: action, reply, headers and summary. */
void policy_verdict_build(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	const struct policy_dmarc_outcome *o = &pm->dmarc;
	struct util_strlist rules = {0};
	struct util_buf h;
	char *ar, *rspf;
	double score;
	bool spam;

	pm->verdict.action = POLICY_ACCEPT;
	free(pm->v_reply);
	pm->v_reply = NULL;
	if (o->evaluated && o->from_error) {
		pm->verdict.action = POLICY_REJECT;
		pm->v_reply =
		    util_xasprintf("550 5.7.1 Rejected: %s (RFC 5322 3.6.2)", o->from_error_text);
	} else if (o->evaluated) {
		const char *dis = verdict_dmarc_disposition(cfg, o);
		if (strcmp(dis, "reject") == 0) {
			pm->verdict.action = POLICY_REJECT;
			pm->v_reply = util_xasprintf(
			    "550 5.7.1 Rejected by the DMARC policy of %s: the sender is not "
			    "authenticated by SPF or DKIM for this domain",
			    o->header_from);
		} else if (strcmp(dis, "quarantine") == 0) {
			pm->verdict.action = POLICY_QUARANTINE;
		} else if (o->result == POLICY_DMARC_TEMPERROR && o->exempt == NULL &&
		           cfg->dmarc_enforcement != CONFIG_DMARC_MONITOR &&
		           cfg->dmarc_temperror == CONFIG_DMARC_TEMPERROR_TEMPFAIL) {
			/* unknown is not pass: a spoof must not get in while DNS
			 * is slow; the sender retries (RFC 5321 4.2.5) */
			pm->verdict.action = POLICY_TEMPFAIL;
			pm->v_reply = util_xasprintf(
			    "451 4.7.1 DMARC check of %s failed temporarily (%s), try again later",
			    o->header_from ? o->header_from : "the From: domain",
			    o->comment ? o->comment : "DNS lookup failed");
		}
		/* a trusted forwarder's chain could not be checked (DNS) */
		if (pm->verdict.action == POLICY_REJECT && policy_arc_defer_reply(pm) != NULL) {
			pm->verdict.action = POLICY_TEMPFAIL;
			free(pm->v_reply);
			pm->v_reply = util_xstrdup(policy_arc_defer_reply(pm));
		}
	}
	score = policy_score(cfg, pm, &rules);
	pm->verdict.score = score;
	pm->verdict.kinds = 0;
	if (pm->verdict.action == POLICY_QUARANTINE)
		pm->verdict.kinds |= POLICY_KIND_DMARC;
	if (pm->verdict.action <= POLICY_QUARANTINE && score >= cfg->spam_threshold)
		pm->verdict.kinds |= POLICY_KIND_SCORE;
	if (pm->verdict.action <= POLICY_QUARANTINE && pm->dnsbl_hits.n > 0 &&
	    cfg->dnsbl_tag_action != CONFIG_PQ_DELIVER)
		pm->verdict.kinds |= POLICY_KIND_DNSBL;
	if (pm->verdict.kinds != 0)
		pm->verdict.action = POLICY_QUARANTINE;
	/* flagged when a verdict that fired does more than deliver (a refused
	 * message keeps the plain score test: its headers go only into a
	 * failure report) */
	if (pm->verdict.action > POLICY_QUARANTINE)
		spam = score >= cfg->spam_threshold;
	else
		spam = ((pm->verdict.kinds & POLICY_KIND_DMARC) &&
		        cfg->spam_dmarc_action != CONFIG_PQ_DELIVER) ||
		       ((pm->verdict.kinds & POLICY_KIND_SCORE) &&
		        cfg->spam_score_action != CONFIG_PQ_DELIVER) ||
		       (pm->verdict.kinds & POLICY_KIND_DNSBL);

	util_buf_init(&h);
	ar = policy_ar_format(cfg, pm);
	util_buf_adds(&h, ar);
	free(ar);
	rspf = policy_received_spf_format(cfg, pm);
	if (rspf != NULL)
		util_buf_adds(&h, rspf);
	free(rspf);
	util_buf_printf(&h, "%s: %s\r\n%s: %.1f\r\n%s: %s, score=%.1f required=%.1f tests=",
	                cfg->spam_flag_header ? cfg->spam_flag_header : "X-Spam-Flag",
	                spam ? "YES" : "NO",
	                cfg->spam_score_header ? cfg->spam_score_header : "X-Spam-Score", score,
	                cfg->spam_status_header ? cfg->spam_status_header : "X-Spam-Status",
	                spam ? "Yes" : "No", score, cfg->spam_threshold);
	for (size_t i = 0; i < rules.n; i++)
		util_buf_printf(&h, "%s%s", i ? "," : "", rules.v[i]);
	if (rules.n == 0)
		util_buf_adds(&h, "none");
	util_buf_adds(&h, "\r\n");
	util_strlist_free(&rules);

	free(pm->v_headers);
	pm->v_headers = h.data;
	pm->verdict.headers = pm->v_headers;
	pm->verdict.reply = pm->v_reply;
	free(pm->v_summary);
	pm->v_summary = verdict_summary(cfg, pm);
	pm->verdict.summary = pm->v_summary;
	pm->verdict.spf = pm->spf.evaluated ? policy_spf_result_str(pm->spf.result) : NULL;
	pm->verdict.dmarc = o->evaluated ? dmarc_words[o->result] : NULL;
	/* metrics (issue 7): one result per message and method */
	util_metrics_inc("mxgate_spf_results_total",
	                 pm->spf.evaluated ? policy_spf_result_str(pm->spf.result) : NULL);
	util_metrics_inc("mxgate_dkim_results_total", !cfg->dkim_enabled                   ? NULL
	                                              : strstr(pm->v_summary, "dkim=pass") ? "pass"
	                                              : pm->nsigs > 0 ? pm->sigs[0].result
	                                                              : "none");
	util_metrics_inc("mxgate_dmarc_results_total",
	                 o->evaluated ? dmarc_words[o->result] : NULL);
	util_metrics_inc("mxgate_spam_verdicts_total", spam ? "spam" : "ham");
	util_metrics_inc("mxgate_policy_actions_total",
	                 (const char *const[]){"accept", "quarantine", "reject",
	                                       "tempfail"}[pm->verdict.action]);
}

/* policy_verdict_tempfail - a TEMPFAIL verdict with reply (pool full). */
void policy_verdict_tempfail(struct policy_msg *pm, const char *reply)
{
	pm->verdict.action = POLICY_TEMPFAIL;
	pm->verdict.score = 0;
	free(pm->v_reply);
	pm->v_reply = util_xstrdup(reply);
	pm->verdict.reply = pm->v_reply;
	free(pm->v_headers);
	pm->v_headers = util_xstrdup("");
	pm->verdict.headers = pm->v_headers;
	free(pm->v_summary);
	pm->v_summary = util_xasprintf("score=0.0 action=tempfail reason=busy");
	pm->verdict.summary = pm->v_summary;
	util_metrics_inc("mxgate_policy_actions_total", "tempfail");
}
