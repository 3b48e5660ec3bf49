/*
 * reports-xml.c - an aggregate report as RFC 9990 XML (namespace
 * urn:ietf:params:xml:ns:dmarc-2.0), written with libxml2's text writer so
 * every value is escaped by the library, never by hand.
 *
 * Mapping from the store (RFC 9990 section 3.1 and Appendix A):
 *   disposition  "pass" when DMARC passed, else what was applied
 *   reason       the override, when one was recorded; mxgate's
 *                "sampled_out" (RFC 7489 pct) has no RFC 9990 value and
 *                becomes "other" with the old name as the comment
 *   spf scope    only "mfrom" exists in RFC 9990; a HELO identity is
 *                reported without a scope
 *   error        "N evaluations not recorded (store queue full)" when the
 *                store dropped rows during the period
 *
 * Ownership: nothing kept; the output is appended to the caller's buffer.
 * Diagnostics: -1 when libxml2 fails (out of memory).
 */
#include "reports-internal.h"

#include <libxml/xmlwriter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS "urn:ietf:params:xml:ns:dmarc-2.0"

/* reports_agg_clear - free what a aggregate holds and zero it. */
void reports_agg_clear(struct reports_agg *a)
{
	for (size_t i = 0; i < a->n; i++) {
		struct reports_agg_rec *r = &a->recs[i];
		free(r->ip);
		free(r->disposition);
		free(r->override);
		free(r->override_comment);
		free(r->envelope_to);
		free(r->envelope_from);
		free(r->header_from);
		free(r->spf_domain);
		free(r->spf_result);
		free(r->spf_scope);
		for (size_t k = 0; k < r->ndkim; k++) {
			free(r->dkim[k].domain);
			free(r->dkim[k].selector);
			free(r->dkim[k].result);
		}
	}
	free(a->recs);
	free(a->domain);
	free(a->p);
	free(a->sp);
	free(a->np);
	free(a->adkim);
	free(a->aspf);
	free(a->testing);
	free(a->discovery);
	memset(a, 0, sizeof(*a));
}

/* el - <name>value</name>; nothing for NULL.  <0 on error. */
static int el(xmlTextWriterPtr w, const char *name, const char *value)
{
	if (value == NULL)
		return 0;
	return xmlTextWriterWriteElement(w, BAD_CAST name, BAD_CAST value);
}

static bool is_disposition(const char *s)
{
	return s != NULL &&
	       (strcmp(s, "none") == 0 || strcmp(s, "quarantine") == 0 || strcmp(s, "reject") == 0);
}

/* write_record - one <record>. */
static int write_record(xmlTextWriterPtr w, const struct reports_agg_rec *r)
{
	char count[32];
	int e = 0;

	snprintf(count, sizeof(count), "%llu", (unsigned long long)r->count);
	e |= xmlTextWriterStartElement(w, BAD_CAST "record");
	e |= xmlTextWriterStartElement(w, BAD_CAST "row");
	e |= el(w, "source_ip", r->ip);
	e |= el(w, "count", count);
	e |= xmlTextWriterStartElement(w, BAD_CAST "policy_evaluated");
	e |= el(w, "disposition",
	        r->dmarc_pass                    ? "pass"
	        : is_disposition(r->disposition) ? r->disposition
	                                         : "none");
	e |= el(w, "dkim", r->dkim_pass ? "pass" : "fail");
	e |= el(w, "spf", r->spf_pass ? "pass" : "fail");
	if (r->override != NULL) {
		bool known = strcmp(r->override, "local_policy") == 0 ||
		             strcmp(r->override, "trusted_forwarder") == 0 ||
		             strcmp(r->override, "mailing_list") == 0 ||
		             strcmp(r->override, "policy_test_mode") == 0;
		e |= xmlTextWriterStartElement(w, BAD_CAST "reason");
		e |= el(w, "type", known ? r->override : "other");
		e |= el(w, "comment", known ? r->override_comment : r->override);
		e |= xmlTextWriterEndElement(w);
	}
	e |= xmlTextWriterEndElement(w); /* policy_evaluated */
	e |= xmlTextWriterEndElement(w); /* row */
	e |= xmlTextWriterStartElement(w, BAD_CAST "identifiers");
	e |= el(w, "envelope_to", r->envelope_to);
	e |= el(w, "envelope_from", r->envelope_from);
	e |= el(w, "header_from", r->header_from);
	e |= xmlTextWriterEndElement(w);
	e |= xmlTextWriterStartElement(w, BAD_CAST "auth_results");
	for (size_t k = 0; k < r->ndkim; k++) {
		e |= xmlTextWriterStartElement(w, BAD_CAST "dkim");
		e |= el(w, "domain", r->dkim[k].domain);
		e |= el(w, "selector", r->dkim[k].selector ? r->dkim[k].selector : "");
		e |= el(w, "result", r->dkim[k].result);
		e |= xmlTextWriterEndElement(w);
	}
	if (r->spf_domain != NULL && r->spf_result != NULL) {
		e |= xmlTextWriterStartElement(w, BAD_CAST "spf");
		e |= el(w, "domain", r->spf_domain);
		if (r->spf_scope != NULL && strcmp(r->spf_scope, "mfrom") == 0)
			e |= el(w, "scope", "mfrom");
		e |= el(w, "result", r->spf_result);
		e |= xmlTextWriterEndElement(w);
	}
	e |= xmlTextWriterEndElement(w); /* auth_results */
	e |= xmlTextWriterEndElement(w); /* record */
	return e < 0 ? -1 : 0;
}

/* reports_xml - see reports-internal.h. */
int reports_xml(const struct reports_meta *m, const struct reports_agg *a, struct util_buf *out)
{
	xmlBufferPtr buf = xmlBufferCreate();
	xmlTextWriterPtr w = NULL;
	char b[32], en[32], errtxt[96];
	int e = 0, rc = -1;

	if (buf == NULL || (w = xmlNewTextWriterMemory(buf, 0)) == NULL)
		goto out;
	xmlTextWriterSetIndent(w, 1);
	xmlTextWriterSetIndentString(w, BAD_CAST "  ");
	snprintf(b, sizeof(b), "%lld", (long long)m->begin);
	snprintf(en, sizeof(en), "%lld", (long long)m->end);
	e |= xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL);
	e |= xmlTextWriterStartElementNS(w, NULL, BAD_CAST "feedback", BAD_CAST NS);
	e |= el(w, "version", "1.0");
	e |= xmlTextWriterStartElement(w, BAD_CAST "report_metadata");
	e |= el(w, "org_name", m->org_name);
	e |= el(w, "email", m->email);
	e |= el(w, "report_id", m->report_id);
	e |= xmlTextWriterStartElement(w, BAD_CAST "date_range");
	e |= el(w, "begin", b);
	e |= el(w, "end", en);
	e |= xmlTextWriterEndElement(w);
	if (a->dropped > 0) {
		snprintf(errtxt, sizeof(errtxt),
		         "%llu evaluations in this period were not recorded (store queue full)",
		         (unsigned long long)a->dropped);
		e |= el(w, "error", errtxt);
	}
	e |= el(w, "generator", m->generator);
	e |= xmlTextWriterEndElement(w); /* report_metadata */
	e |= xmlTextWriterStartElement(w, BAD_CAST "policy_published");
	e |= el(w, "domain", a->domain);
	e |= el(w, "discovery_method", a->discovery);
	if (a->adkim != NULL && (strcmp(a->adkim, "r") == 0 || strcmp(a->adkim, "s") == 0))
		e |= el(w, "adkim", a->adkim);
	if (a->aspf != NULL && (strcmp(a->aspf, "r") == 0 || strcmp(a->aspf, "s") == 0))
		e |= el(w, "aspf", a->aspf);
	e |= el(w, "p", is_disposition(a->p) ? a->p : "none");
	if (is_disposition(a->sp))
		e |= el(w, "sp", a->sp);
	if (is_disposition(a->np))
		e |= el(w, "np", a->np);
	if (a->testing != NULL && (strcmp(a->testing, "y") == 0 || strcmp(a->testing, "n") == 0))
		e |= el(w, "testing", a->testing);
	e |= xmlTextWriterEndElement(w); /* policy_published */
	for (size_t i = 0; i < a->n && e >= 0; i++)
		e |= write_record(w, &a->recs[i]);
	e |= xmlTextWriterEndElement(w); /* feedback */
	e |= xmlTextWriterEndDocument(w);
	if (e < 0)
		goto out;
	xmlFreeTextWriter(w); /* flushes into buf */
	w = NULL;
	util_buf_add(out, xmlBufferContent(buf), (size_t)xmlBufferLength(buf));
	rc = 0;
out:
	if (w != NULL)
		xmlFreeTextWriter(w);
	if (buf != NULL)
		xmlBufferFree(buf);
	return rc;
}
