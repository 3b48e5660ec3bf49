/*
 * policy-facts.c - the facts of one DMARC evaluation as an aggregate report
 * (RFC 9990 section 3) records them: identifiers, SPF and DKIM results with
 * their domains, alignment, the policy published, and the disposition that
 * was applied with the reason when it differs from the policy.
 *
 * This is the one place the report store (reports/) learns about a
 * message: it reads the outcome structs the evaluators filled and re-reads
 * the record's tags itself, so tags the evaluator does not use yet (np, t,
 * psd) are still reported.
 *
 * Ownership: the facts borrow pm's strings; nothing is allocated.
 * Diagnostics: none.
 */
#include "policy-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* policy_dmarc_tag - value of tag name in a DMARC record (RFC 7489 6.4
 * tag-list) into out, lower-cased, cut to outlen - 1; "" when absent. */
void policy_dmarc_tag(const char *rec, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = rec;

	out[0] = '\0';
	while (p != NULL && *p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (eq != NULL) {
			size_t kl = (size_t)(eq - p);
			while (kl > 0 && (p[kl - 1] == ' ' || p[kl - 1] == '\t'))
				kl--;
			if (kl == nl && strncasecmp(p, name, nl) == 0) {
				const char *v = eq + 1;
				size_t vl = len - (size_t)(v - p), o = 0;
				while (vl > 0 && (*v == ' ' || *v == '\t'))
					v++, vl--;
				while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
					vl--;
				for (size_t i = 0; i < vl && o + 1 < outlen; i++)
					out[o++] =
					    (char)(v[i] >= 'A' && v[i] <= 'Z' ? v[i] + 32 : v[i]);
				while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t'))
					o--; /* a value cut inside */
				out[o] = '\0';
				return;
			}
		}
		p = end ? end + 1 : NULL;
	}
}

/* facts_aligned - RFC 7489 3.1: strict = same name, relaxed = same
 * organizational domain. */
static bool facts_aligned(const char *d, const char *from, bool strict)
{
	char a[256], b[256];

	if (d == NULL || from == NULL)
		return false;
	if (util_strcaseeq(d, from))
		return true;
	if (strict)
		return false;
	policy_org_domain(d, a, sizeof(a));
	policy_org_domain(from, b, sizeof(b));
	return util_strcaseeq(a, b);
}

static const char *const facts_dmarc_words[] = {"none", "pass", "fail", "temperror", "permerror"};

/* policy_msg_dmarc_facts - see policy.h. */
int policy_msg_dmarc_facts(const struct policy_msg *pm, struct policy_dmarc_facts *f)
{
	const struct policy_dmarc_outcome *o = &pm->dmarc;
	const struct config *cfg = pm->pc->cfg;
	char pct[8];

	memset(f, 0, sizeof(*f));
	f->pct = -1;
	if (!o->evaluated || o->header_from == NULL || o->from_error)
		return -1;
	util_addr_str(&pm->client, f->ip, sizeof(f->ip));
	f->header_from = o->header_from;
	/* A-labels: the RFC 9990 XML stays ASCII */
	f->envelope_from = pm->mail_domain != NULL ? pm->mail_domain : "";
	f->dmarc = (size_t)o->result < sizeof(facts_dmarc_words) / sizeof(facts_dmarc_words[0])
	               ? facts_dmarc_words[o->result]
	               : "none";
	if (o->record != NULL) {
		f->record_domain = o->record_domain;
		policy_dmarc_tag(o->record, "p", f->p, sizeof(f->p));
		policy_dmarc_tag(o->record, "sp", f->sp, sizeof(f->sp));
		policy_dmarc_tag(o->record, "np", f->np, sizeof(f->np));
		policy_dmarc_tag(o->record, "adkim", f->adkim, sizeof(f->adkim));
		policy_dmarc_tag(o->record, "aspf", f->aspf, sizeof(f->aspf));
		policy_dmarc_tag(o->record, "t", f->t, sizeof(f->t));
		policy_dmarc_tag(o->record, "psd", f->psd, sizeof(f->psd));
		policy_dmarc_tag(o->record, "pct", pct, sizeof(pct));
		if (pct[0] != '\0')
			f->pct = atoi(pct);
		/* RFC 9989 4.10: the policy was found by the DNS tree walk */
		f->discovery = "treewalk";
		f->ruf = o->ruf;
		f->fo = o->fo;
	}
	if (pm->spf.evaluated) {
		f->spf_domain = pm->spf.domain;
		f->spf_result = policy_spf_result_str(pm->spf.result);
		f->spf_scope = pm->spf.helo_identity ? "helo" : "mfrom";
		f->spf_aligned = pm->spf.result == POLICY_SPF_PASS &&
		                 facts_aligned(pm->spf.domain, o->header_from, f->aspf[0] == 's');
	}
	for (size_t i = 0; i < pm->nsigs && f->ndkim < POLICY_FACTS_MAX_DKIM; i++) {
		const struct policy_dkim_sig *g = &pm->sigs[i];
		if (g->d == NULL)
			continue;
		f->dkim[f->ndkim].domain = g->d;
		f->dkim[f->ndkim].selector = g->s;
		f->dkim[f->ndkim].result = g->result;
		f->ndkim++;
		if (strcmp(g->result, "pass") == 0 &&
		    facts_aligned(g->d, o->header_from, f->adkim[0] == 's'))
			f->dkim_aligned = true;
	}
	/* The disposition applied (the same rule as the verdict) and why it is
	 * weaker than the policy (RFC 9990 PolicyOverrideType). */
	f->disposition = "none";
	if (o->result == POLICY_DMARC_FAIL && o->policy != 0 && o->policy != 'n') {
		if (o->exempt != NULL) {
			f->override = strncmp(o->exempt, "arc ", 4) == 0 ? "trusted_forwarder"
			                                                 : "local_policy";
			f->override_comment = o->exempt;
		} else if (cfg->dmarc_enforcement == CONFIG_DMARC_MONITOR) {
			f->override = "local_policy";
			f->override_comment = "monitor";
		} else {
			if (o->applied == 'r' && cfg->dmarc_enforcement == CONFIG_DMARC_REJECT)
				f->disposition = "reject";
			else if (o->applied == 'r' || o->applied == 'q')
				f->disposition = "quarantine";
			if (o->applied != o->policy)
				f->override =
				    o->applied == 'n' || o->applied == 'q' ? "sampled_out" : NULL;
			if (o->applied == 'r' && cfg->dmarc_enforcement != CONFIG_DMARC_REJECT) {
				f->override = "local_policy";
				f->override_comment = "enforcement quarantine";
			}
			/* [spam] dmarc_quarantine_action (issue 13): reject
			 * refuses it (a 550: that is what was applied), deliver
			 * lets it in unmarked - a local policy weaker than the
			 * domain's */
			if (strcmp(f->disposition, "quarantine") == 0 &&
			    cfg->spam_dmarc_action == CONFIG_PQ_REJECT) {
				f->disposition = "reject";
			} else if (strcmp(f->disposition, "quarantine") == 0 &&
			           cfg->spam_dmarc_action == CONFIG_PQ_DELIVER) {
				f->disposition = "none";
				f->override = "local_policy";
				f->override_comment = "dmarc_quarantine_action deliver";
			}
			if (strcmp(f->disposition, "reject") == 0) {
				/* the policy's reject, or stricter than p=quarantine */
				f->override = o->policy == 'r' ? NULL : "local_policy";
				f->override_comment =
				    o->policy == 'r' ? NULL : "dmarc_quarantine_action reject";
			}
		}
	}
	return 0;
}
