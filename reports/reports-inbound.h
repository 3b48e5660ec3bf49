/*
 * reports-inbound.h - the DMARC aggregate (RFC 7489 appendix C, RFC 9990)
 * and TLS-RPT (RFC 8460) reports other organisations mail to our report
 * addresses (issue 15): parsing one received message into its reports.
 *
 * Everything here reads hostile input: anyone can mail a report address.
 * Limits: the message (REPORTS_IN_MAX_MSG; its MIME parts and header
 * fields as content_mime_too_complex counts them), each decompressed attachment
 * (REPORTS_IN_MAX_DECOMP and REPORTS_IN_MAX_RATIO times its compressed
 * size), a TLS-RPT document (REPORTS_IN_MAX_JSON), the XML depth, the
 * records per report and per message, the bytes of parsed reports per
 * message (REPORTS_IN_MAX_KEPT), the counts and dates, the string
 * lengths, the reports per message.  The XML is read as a stream: memory
 * does not grow with the number of elements, only with the records kept.
 * libxml2 reads with network access off, no entity substitution, no DTD (a
 * document with one is refused), no XML_PARSE_HUGE.  A part that breaks a
 * limit or does not parse is refused alone (an error string in the
 * result); the other parts of the message still count.
 *
 * Pure: no I/O, no globals but libxml2's and GMime's one-time init
 * (reports_inbound_init, called once before threads use the parser).
 * Ownership: the caller frees a result with reports_inbound_clear().
 */
#ifndef MX_REPORTS_INBOUND_H
#define MX_REPORTS_INBOUND_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define REPORTS_IN_MAX_MSG     (20u * 1024 * 1024) /* a whole message */
#define REPORTS_IN_MAX_DECOMP  (50u * 1024 * 1024) /* one decompressed attachment */
#define REPORTS_IN_MAX_RATIO   200u                /* decompressed : compressed */
#define REPORTS_IN_MAX_DEPTH   16                  /* XML element nesting */
#define REPORTS_IN_MAX_RECORDS 100000              /* records / policies per report */
#define REPORTS_IN_MAX_STR     512                 /* bytes of one stored string */
#define REPORTS_IN_MAX_REPORTS 32                  /* reports (parts) per message */
/* A record's count or a TLS-RPT session count (more is a lie, and sums of
 * such lies overflowed the dashboard's SQL), a report's dates (9999-12-31). */
#define REPORTS_IN_MAX_COUNT (1ll << 32)
#define REPORTS_IN_MAX_TIME  253402300799ll
#define REPORTS_IN_MAX_JSON  (4u * 1024 * 1024)  /* one TLS-RPT document */
#define REPORTS_IN_MAX_KEPT  (64u * 1024 * 1024) /* parsed DMARC bytes per message */

/* One <record> of a DMARC aggregate report (strings owned, never NULL). */
struct reports_in_rec {
	char *ip, *disposition, *dkim, *spf; /* policy_evaluated */
	char *header_from;
	char *dkim_domain, *dkim_result; /* the first auth_results/dkim */
	char *spf_domain, *spf_result;   /* the first auth_results/spf */
	uint64_t count;
};
struct reports_in_dmarc {
	char *org_name, *email, *report_id, *domain, *p;
	int64_t begin, end;
	struct reports_in_rec *recs;
	size_t n;
};
/* One policy of a TLS-RPT report; failures: "type=count;..." */
struct reports_in_tlspol {
	char *policy_type, *policy_domain, *failures;
	uint64_t success, failure;
};
struct reports_in_tlsrpt {
	char *org_name, *report_id, *contact;
	int64_t begin, end;
	struct reports_in_tlspol *pols;
	size_t n;
};
struct reports_inbound {
	struct reports_in_dmarc *dmarc;
	size_t ndmarc;
	struct reports_in_tlsrpt *tlsrpt;
	size_t ntlsrpt;
	struct util_strlist errors; /* one line per refused part */
};

void reports_inbound_init(void);
void reports_inbound_clear(struct reports_inbound *r);

/* reports_inbound_parse - the reports in the RFC 5322 message msg[0..len):
 * every leaf MIME part is sniffed (gzip, zip, XML, JSON: senders label
 * them wrongly), decompressed within the limits and parsed.  Adds to *out;
 * returns the number of reports found (0 with an error when none). */
int reports_inbound_parse(const char *msg, size_t len, struct reports_inbound *out);

/* reports_inbound_blob - one attachment's bytes (compressed or not). */
int reports_inbound_blob(const unsigned char *p, size_t len, struct reports_inbound *out);

/* reports_inbound_dmarc_xml / _tlsrpt_json - one uncompressed document;
 * 0 added, -1 + err. */
int reports_inbound_dmarc_xml(const char *p, size_t len, struct reports_in_dmarc *out, char *err,
                              size_t errlen);
int reports_inbound_tlsrpt_json(const char *p, size_t len, struct reports_in_tlsrpt *out, char *err,
                                size_t errlen);
void reports_in_dmarc_clear(struct reports_in_dmarc *d);
void reports_in_tlsrpt_clear(struct reports_in_tlsrpt *t);

/* reports_inbound_decompress - gzip or zip (its first entry, stored or
 * deflated) within the limits; malloc'd *out, 0 / -1 + err; 1 when p is
 * neither (not compressed). */
int reports_inbound_decompress(const unsigned char *p, size_t len, unsigned char **out,
                               size_t *outlen, char *err, size_t errlen);

#endif
