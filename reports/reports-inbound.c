/*
 * reports-inbound.c - parsing the DMARC aggregate and TLS-RPT reports mailed
 * to our report addresses (issue 15; reports-inbound.h has the limits).
 *
 * The walk: GMime parses the message; every leaf part's decoded content is
 * sniffed rather than trusted by its Content-Type (reporters send zip as
 * application/octet-stream, gzip as application/x-gzip, XML as text/plain):
 * gzip (1f 8b) and zip (PK\3\4) are decompressed within the limits, then a
 * '<' document is a DMARC <feedback>, a '{' document a TLS-RPT report.
 * Parts that are none of these (the human-readable text) are skipped.
 * GMime is given the message only within content/'s limits
 * (content_mime_too_complex: part and header field counts - GMime spends
 * gigabytes on a few MB of empty parts), like every other GMime parse of
 * outside mail.
 *
 * Zip: a bounded reader of the first entry (stored or deflated) found by
 * the central directory; encrypted, zip64 or multi-entry tricks are
 * refused rather than interpreted.
 */
#include "reports-inbound.h"

#include <gmime/gmime.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlreader.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "content.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_libs(void)
{
	xmlInitParser();
	content_gmime_init(); /* the process's one g_mime_init */
}

/* reports_inbound_init - see reports-inbound.h. */
void reports_inbound_init(void)
{
	pthread_once(&init_once, init_libs);
}

/* sdup - a bounded copy of s (NULL -> ""), control characters replaced. */
static char *sdup(const char *s, size_t n)
{
	if (s == NULL || n == 0) {
		char *e = calloc(1, 1);
		if (e == NULL)
			abort();
		return e;
	}
	if (n > REPORTS_IN_MAX_STR) {
		/* cut at a character boundary: half a UTF-8 sequence made the
		 * string invalid - PostgreSQL refused the whole report, the
		 * dashboard showed "?" */
		n = REPORTS_IN_MAX_STR;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	char *r = malloc(n + 1);
	if (r == NULL)
		abort();
	for (size_t i = 0; i < n; i++)
		r[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
	r[n] = '\0';
	return r;
}

static char *sdupz(const char *s)
{
	return sdup(s, s ? strnlen(s, REPORTS_IN_MAX_STR + 1) : 0);
}

void reports_in_dmarc_clear(struct reports_in_dmarc *d)
{
	free(d->org_name);
	free(d->email);
	free(d->report_id);
	free(d->domain);
	free(d->p);
	for (size_t i = 0; i < d->n; i++) {
		struct reports_in_rec *r = &d->recs[i];
		free(r->ip);
		free(r->disposition);
		free(r->dkim);
		free(r->spf);
		free(r->header_from);
		free(r->dkim_domain);
		free(r->dkim_result);
		free(r->spf_domain);
		free(r->spf_result);
	}
	free(d->recs);
	memset(d, 0, sizeof(*d));
}

void reports_in_tlsrpt_clear(struct reports_in_tlsrpt *t)
{
	free(t->org_name);
	free(t->report_id);
	free(t->contact);
	for (size_t i = 0; i < t->n; i++) {
		free(t->pols[i].policy_type);
		free(t->pols[i].policy_domain);
		free(t->pols[i].failures);
	}
	free(t->pols);
	memset(t, 0, sizeof(*t));
}

/* reports_inbound_clear - see reports-inbound.h. */
void reports_inbound_clear(struct reports_inbound *r)
{
	for (size_t i = 0; i < r->ndmarc; i++)
		reports_in_dmarc_clear(&r->dmarc[i]);
	for (size_t i = 0; i < r->ntlsrpt; i++)
		reports_in_tlsrpt_clear(&r->tlsrpt[i]);
	free(r->dmarc);
	free(r->tlsrpt);
	util_strlist_free(&r->errors);
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------ decompression */

/* inflate_bounded - zlib inflate (wbits 31 gzip, -15 raw deflate) of
 * p[0..len) into a malloc'd buffer of at most the limits. */
static int inflate_bounded(const unsigned char *p, size_t len, int wbits, unsigned char **out,
                           size_t *outlen, char *err, size_t errlen)
{
	z_stream z;
	size_t cap = 64 * 1024, n = 0;
	uint64_t limit = (uint64_t)len * REPORTS_IN_MAX_RATIO + 4096;
	unsigned char *buf = NULL;
	int rc = -1, zr;

	if (limit > REPORTS_IN_MAX_DECOMP)
		limit = REPORTS_IN_MAX_DECOMP;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, wbits) != Z_OK) {
		snprintf(err, errlen, "inflateInit failed");
		return -1;
	}
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
	for (;;) {
		if (n == cap || buf == NULL) {
			if (buf != NULL)
				cap *= 2;
			unsigned char *nb = realloc(buf, cap + 1);
			if (nb == NULL) {
				snprintf(err, errlen, "out of memory");
				goto cleanup;
			}
			buf = nb;
		}
		z.next_out = buf + n;
		z.avail_out = (uInt)(cap - n);
		zr = inflate(&z, Z_NO_FLUSH);
		n = cap - z.avail_out;
		if (n > limit) {
			snprintf(err, errlen,
			         "decompressed size over the limit (%llu bytes from %zu: a bomb?)",
			         (unsigned long long)limit, len);
			goto cleanup;
		}
		if (zr == Z_STREAM_END)
			break;
		if (zr == Z_BUF_ERROR && z.avail_in == 0) {
			snprintf(err, errlen, "truncated compressed data");
			goto cleanup;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			snprintf(err, errlen, "corrupt compressed data (%s)",
			         z.msg ? z.msg : "zlib");
			goto cleanup;
		}
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	buf = NULL;
	rc = 0;
cleanup:
	inflateEnd(&z);
	free(buf);
	return rc;
}

static uint32_t le16(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static uint32_t le32(const unsigned char *p)
{
	return le16(p) | le16(p + 2) << 16;
}

/* unzip_first - the first entry of a zip archive, found through the end of
 * central directory record. */
static int unzip_first(const unsigned char *p, size_t len, unsigned char **out, size_t *outlen,
                       char *err, size_t errlen)
{
	size_t eocd = (size_t)-1;
	if (len < 22 + 30) {
		snprintf(err, errlen, "zip too short");
		return -1;
	}
	for (size_t i = len - 22;; i--) { /* the comment is at most 65535 bytes */
		if (memcmp(p + i, "PK\5\6", 4) == 0) {
			eocd = i;
			break;
		}
		if (i == 0 || len - i > 22 + 65535)
			break;
	}
	if (eocd == (size_t)-1) {
		snprintf(err, errlen, "zip without a central directory");
		return -1;
	}
	uint32_t entries = le16(p + eocd + 10), cdoff = le32(p + eocd + 16);
	if (entries < 1 || (size_t)cdoff + 46 > eocd || memcmp(p + cdoff, "PK\1\2", 4) != 0) {
		snprintf(err, errlen, "zip central directory invalid");
		return -1;
	}
	const unsigned char *cd = p + cdoff;
	uint32_t flags = le16(cd + 8), method = le16(cd + 10), csize = le32(cd + 20),
	         usize = le32(cd + 24), lho = le32(cd + 42);
	if (flags & 1) {
		snprintf(err, errlen, "zip entry encrypted");
		return -1;
	}
	if ((size_t)lho + 30 > len || memcmp(p + lho, "PK\3\4", 4) != 0) {
		snprintf(err, errlen, "zip local header invalid");
		return -1;
	}
	size_t data = (size_t)lho + 30 + le16(p + lho + 26) + le16(p + lho + 28);
	if (csize == 0xffffffffu || data > len || csize > len - data) {
		snprintf(err, errlen, "zip entry outside the archive");
		return -1;
	}
	if (method == 0) {
		if (usize != csize || csize > REPORTS_IN_MAX_DECOMP) {
			snprintf(err, errlen, "zip stored entry size invalid");
			return -1;
		}
		unsigned char *b = malloc((size_t)csize + 1);
		if (b == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		memcpy(b, p + data, csize);
		b[csize] = '\0';
		*out = b;
		*outlen = csize;
		return 0;
	}
	if (method != 8) {
		snprintf(err, errlen, "zip method %u not supported", (unsigned)method);
		return -1;
	}
	return inflate_bounded(p + data, csize, -15, out, outlen, err, errlen);
}

/* reports_inbound_decompress - see reports-inbound.h. */
int reports_inbound_decompress(const unsigned char *p, size_t len, unsigned char **out,
                               size_t *outlen, char *err, size_t errlen)
{
	if (len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
		return inflate_bounded(p, len, 31, out, outlen, err, errlen);
	if (len >= 4 && memcmp(p, "PK\3\4", 4) == 0)
		return unzip_first(p, len, out, outlen, err, errlen);
	return 1;
}

/* ---------------------------------------------------------------- DMARC XML */

/* The DMARC XML is read as a stream (xmlTextReader), never as one tree: a
 * tree costs ~100 bytes a node, so 45 MB of "<x/>" (a 230 KB gzip, within
 * the ratio limit) took 1.5 GB in the gateway's process (red team).  The
 * reader frees each node once passed; what is kept is the fields below,
 * picked by their element path under <feedback> (the first occurrence of
 * each; an element's text includes its descendants' text). */
enum xf {
	XF_ORG,
	XF_EMAIL,
	XF_ID,
	XF_BEGIN,
	XF_END,
	XF_DOMAIN,
	XF_P, /* report */
	XF_IP,
	XF_COUNT,
	XF_DISP,
	XF_DKIM,
	XF_SPF,
	XF_HFROM, /* record */
	XF_ADKIM_D,
	XF_ADKIM_R,
	XF_ASPF_D,
	XF_ASPF_R,
	XF_N
};
#define XF_FIRST_REC XF_IP

static const char *const xf_path[XF_N] = {
    "report_metadata/org_name",
    "report_metadata/email",
    "report_metadata/report_id",
    "report_metadata/date_range/begin",
    "report_metadata/date_range/end",
    "policy_published/domain",
    "policy_published/p",
    "record/row/source_ip",
    "record/row/count",
    "record/row/policy_evaluated/disposition",
    "record/row/policy_evaluated/dkim",
    "record/row/policy_evaluated/spf",
    "record/identifiers/header_from",
    "record/auth_results/dkim/domain",
    "record/auth_results/dkim/result",
    "record/auth_results/spf/domain",
    "record/auth_results/spf/result",
};

/* trimmed - s[0..n) without surrounding blanks, bounded copy (sdup). */
static char *trimmed(const char *s, size_t n)
{
	while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
		s++, n--;
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		n--;
	return sdup(s, n);
}

/* num - a count or time: 0 when not a number or negative, -1 when over max. */
static int64_t num(const char *t, int64_t max)
{
	char *end = NULL;
	long long v = strtoll(t, &end, 10);
	if (end == t || v < 0)
		return 0;
	return v > max ? -1 : v;
}

/* xf_slot - where field f of the report (or of its current record) goes. */
static char **xf_slot(struct reports_in_dmarc *out, char **nums, enum xf f)
{
	struct reports_in_rec *r = out->n ? &out->recs[out->n - 1] : NULL;
	switch (f) {
	case XF_ORG:
		return &out->org_name;
	case XF_EMAIL:
		return &out->email;
	case XF_ID:
		return &out->report_id;
	case XF_DOMAIN:
		return &out->domain;
	case XF_P:
		return &out->p;
	case XF_BEGIN:
		return &nums[0];
	case XF_END:
		return &nums[1];
	case XF_COUNT:
		return &nums[2];
	case XF_IP:
		return &r->ip;
	case XF_DISP:
		return &r->disposition;
	case XF_DKIM:
		return &r->dkim;
	case XF_SPF:
		return &r->spf;
	case XF_HFROM:
		return &r->header_from;
	case XF_ADKIM_D:
		return &r->dkim_domain;
	case XF_ADKIM_R:
		return &r->dkim_result;
	case XF_ASPF_D:
		return &r->spf_domain;
	case XF_ASPF_R:
		return &r->spf_result;
	default:
		return NULL;
	}
}

/* rec_done - the record just read: missing strings "", its count. */
static int rec_done(struct reports_in_dmarc *out, char **nums, char *err, size_t errlen)
{
	struct reports_in_rec *r = &out->recs[out->n - 1];
	char **s[] = {&r->ip,          &r->disposition, &r->dkim,
	              &r->spf,         &r->header_from, &r->dkim_domain,
	              &r->dkim_result, &r->spf_domain,  &r->spf_result};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		if (*s[i] == NULL)
			*s[i] = sdupz("");
	int64_t c = num(nums[2] ? nums[2] : "", REPORTS_IN_MAX_COUNT);
	free(nums[2]);
	nums[2] = NULL;
	if (c < 0) {
		snprintf(err, errlen, "record count over %llu",
		         (unsigned long long)REPORTS_IN_MAX_COUNT);
		return -1;
	}
	r->count = (uint64_t)c;
	return 0;
}

/* reports_inbound_dmarc_xml - see reports-inbound.h. */
int reports_inbound_dmarc_xml(const char *p, size_t len, struct reports_in_dmarc *out, char *err,
                              size_t errlen)
{
	xmlTextReader *rd = NULL;
	char path[REPORTS_IN_MAX_DEPTH * 40 + 1] = "";
	size_t plen[REPORTS_IN_MAX_DEPTH + 1];
	char *nums[3] = {NULL, NULL, NULL}; /* begin, end, the record's count */
	struct util_buf text;               /* the current field's text */
	int cur = -1, cur_depth = 0, in_rec = 0, seen = 0, rc = -1, r;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	util_buf_init(&text);
	if (len > INT32_MAX) {
		snprintf(err, errlen, "XML too big");
		return -1;
	}
	/* no XML_PARSE_NOENT (entities stay unexpanded), no DTD loading, no
	 * network, no XML_PARSE_HUGE (libxml2's own size/depth limits stay) */
	rd = xmlReaderForMemory(p, (int)len, "report.xml", NULL,
	                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
	                            XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA);
	if (rd == NULL) {
		snprintf(err, errlen, "XML not well-formed");
		goto cleanup;
	}
	while ((r = xmlTextReaderRead(rd)) == 1) {
		int type = xmlTextReaderNodeType(rd), depth = xmlTextReaderDepth(rd);
		if (type == XML_READER_TYPE_DOCUMENT_TYPE) {
			snprintf(err, errlen, "XML with a DTD refused");
			goto cleanup;
		}
		if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA ||
		    type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) {
			const char *v = (const char *)xmlTextReaderConstValue(rd);
			if (cur >= 0 && v != NULL && text.len < 4 * REPORTS_IN_MAX_STR)
				util_buf_add(&text, v, strnlen(v, 4 * REPORTS_IN_MAX_STR));
			continue;
		}
		bool start = type == XML_READER_TYPE_ELEMENT,
		     empty = start && xmlTextReaderIsEmptyElement(rd) == 1;
		if (!start && type != XML_READER_TYPE_END_ELEMENT)
			continue;
		if (start) {
			const char *name = (const char *)xmlTextReaderConstLocalName(rd);
			if (depth + 1 > REPORTS_IN_MAX_DEPTH) {
				snprintf(err, errlen, "XML nested deeper than %d",
				         REPORTS_IN_MAX_DEPTH);
				goto cleanup;
			}
			if (depth == 0) {
				if (name == NULL || strcmp(name, "feedback") != 0) {
					snprintf(err, errlen, "XML root is not <feedback>");
					goto cleanup;
				}
				continue;
			}
			/* path: the names below <feedback>, '/'-joined (long names cut) */
			size_t at = depth > 1 ? plen[depth - 1] : 0;
			snprintf(path + at, sizeof(path) - at, "%s%.32s", depth > 1 ? "/" : "",
			         name ? name : "");
			plen[depth] = strlen(path);
			if (depth == 1 && strcmp(path, "report_metadata") == 0)
				seen |= 1;
			if (depth == 1 && strcmp(path, "policy_published") == 0)
				seen |= 2;
			if (depth == 1 && strcmp(path, "record") == 0) {
				if (out->n >= REPORTS_IN_MAX_RECORDS) {
					snprintf(err, errlen, "more than %d records",
					         REPORTS_IN_MAX_RECORDS);
					goto cleanup;
				}
				if (out->n == cap) {
					cap = cap ? cap * 2 : 16;
					void *nr = realloc(out->recs, cap * sizeof(*out->recs));
					if (nr == NULL) {
						snprintf(err, errlen, "out of memory");
						goto cleanup;
					}
					out->recs = nr;
				}
				memset(&out->recs[out->n++], 0, sizeof(*out->recs));
				in_rec = 1;
			}
			if (cur < 0) {
				for (int f = 0; f < XF_N; f++) {
					char **slot;
					if (strcmp(path, xf_path[f]) != 0 ||
					    (f >= XF_FIRST_REC && !in_rec))
						continue;
					if ((slot = xf_slot(out, nums, (enum xf)f)) != NULL &&
					    *slot == NULL) {
						cur = f;
						cur_depth = depth;
						text.len = 0;
					}
					break;
				}
			}
		}
		/* the end of an element (an empty one ends where it starts) */
		if (!start || empty) {
			if (cur >= 0 && depth == cur_depth) {
				*xf_slot(out, nums, (enum xf)cur) =
				    trimmed(text.data ? text.data : "", text.len);
				cur = -1;
			}
			if (depth == 1 && in_rec) {
				in_rec = 0;
				if (rec_done(out, nums, err, errlen) < 0)
					goto cleanup;
			}
		}
	}
	if (r < 0) {
		const xmlError *e = xmlGetLastError();
		snprintf(err, errlen, "XML not well-formed%s%.80s", e && e->message ? ": " : "",
		         e && e->message ? e->message : "");
		for (char *q = err; *q; q++)
			if (*q == '\n')
				*q = ' ';
		goto cleanup;
	}
	if (seen != 3) {
		snprintf(err, errlen, "report_metadata or policy_published missing");
		goto cleanup;
	}
	char **s[] = {&out->org_name, &out->email, &out->report_id, &out->domain, &out->p};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		if (*s[i] == NULL)
			*s[i] = sdupz("");
	for (char *q = out->domain; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q + 32);
	if (out->org_name[0] == '\0' || out->report_id[0] == '\0' || out->domain[0] == '\0') {
		snprintf(err, errlen, "org_name, report_id or domain empty");
		goto cleanup;
	}
	/* a time the stores and the dashboard can show (PostgreSQL's
	 * to_timestamp fails past year 294276, and with it the whole view) */
	out->begin = num(nums[0] ? nums[0] : "", REPORTS_IN_MAX_TIME);
	out->end = num(nums[1] ? nums[1] : "", REPORTS_IN_MAX_TIME);
	if (out->begin < 0 || out->end < 0) {
		snprintf(err, errlen, "date_range out of range");
		goto cleanup;
	}
	rc = 0;
cleanup:
	if (rc < 0)
		reports_in_dmarc_clear(out);
	for (int i = 0; i < 3; i++)
		free(nums[i]);
	util_buf_free(&text);
	xmlFreeTextReader(rd);
	return rc;
}

/* -------------------------------------------------------------- TLS-RPT JSON */

static char *jstr(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return sdupz(json_is_string(v) ? json_string_value(v) : "");
}

/* jnum - a session count (0 if none or negative); *bad set when over
 * REPORTS_IN_MAX_COUNT. */
static uint64_t jnum(json_t *o, const char *k, bool *bad)
{
	json_t *v = json_object_get(o, k);
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
	if (n > REPORTS_IN_MAX_COUNT) {
		*bad = true;
		return 0;
	}
	return n > 0 ? (uint64_t)n : 0;
}

/* rfc3339 - seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ" (0 if not). */
static int64_t rfc3339(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	           &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

/* reports_inbound_tlsrpt_json - see reports-inbound.h. */
int reports_inbound_tlsrpt_json(const char *p, size_t len, struct reports_in_tlsrpt *out, char *err,
                                size_t errlen)
{
	json_error_t je;
	json_t *root = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	/* jansson builds a tree of ~40 bytes a value: 45 MB of "0," took 1 GB
	 * (red team); TLS-RPT reports are kilobytes */
	if (len > REPORTS_IN_MAX_JSON) {
		snprintf(err, errlen, "JSON bigger than %u bytes", REPORTS_IN_MAX_JSON);
		goto cleanup;
	}
	/* jansson limits nesting to JSON_PARSER_DEFAULT_DEPTH (2048) itself */
	root = json_loadb(p, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		snprintf(err, errlen, "JSON invalid: %.80s", je.text);
		goto cleanup;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "JSON is not an object");
		goto cleanup;
	}
	out->org_name = jstr(root, "organization-name");
	out->report_id = jstr(root, "report-id");
	out->contact = jstr(root, "contact-info");
	json_t *dr = json_object_get(root, "date-range");
	char *b = jstr(dr, "start-datetime"), *e = jstr(dr, "end-datetime");
	out->begin = rfc3339(b);
	out->end = rfc3339(e);
	free(b);
	free(e);
	if (out->begin < 0 || out->begin > REPORTS_IN_MAX_TIME || out->end < 0 ||
	    out->end > REPORTS_IN_MAX_TIME) {
		snprintf(err, errlen, "date-range out of range");
		goto cleanup;
	}
	json_t *pols = json_object_get(root, "policies");
	if (out->org_name[0] == '\0' || out->report_id[0] == '\0' || !json_is_array(pols)) {
		snprintf(err, errlen, "organization-name, report-id or policies missing");
		goto cleanup;
	}
	if (json_array_size(pols) > REPORTS_IN_MAX_RECORDS) {
		snprintf(err, errlen, "more than %d policies", REPORTS_IN_MAX_RECORDS);
		goto cleanup;
	}
	out->pols = calloc(json_array_size(pols) + 1, sizeof(*out->pols));
	if (out->pols == NULL) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	size_t i;
	json_t *pv;
	bool bad = false;
	json_array_foreach(pols, i, pv)
	{
		struct reports_in_tlspol *tp = &out->pols[out->n++];
		json_t *pol = json_object_get(pv, "policy"), *sum = json_object_get(pv, "summary");
		tp->policy_type = jstr(pol, "policy-type");
		tp->policy_domain = jstr(pol, "policy-domain");
		for (char *q = tp->policy_domain; *q; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q = (char)(*q + 32);
		tp->success = jnum(sum, "total-successful-session-count", &bad);
		tp->failure = jnum(sum, "total-failure-session-count", &bad);
		struct util_buf fb;
		util_buf_init(&fb);
		size_t j;
		json_t *fd;
		json_array_foreach(json_object_get(pv, "failure-details"), j, fd)
		{
			json_t *rt = json_object_get(fd, "result-type");
			if (!json_is_string(rt) || fb.len > REPORTS_IN_MAX_STR)
				continue;
			const char *rs = json_string_value(rt);
			int rn = (int)strnlen(rs, 64);
			while (rs[rn] != '\0' && rn > 0 && ((unsigned char)rs[rn] & 0xc0) == 0x80)
				rn--; /* at most 64 bytes, whole characters */
			util_buf_printf(&fb, "%s%.*s=%llu", fb.len ? ";" : "", rn, rs,
			                (unsigned long long)jnum(fd, "failed-session-count", &bad));
		}
		tp->failures = sdup(fb.data ? fb.data : "", fb.len);
		util_buf_free(&fb);
	}
	if (bad) {
		snprintf(err, errlen, "session count over %llu",
		         (unsigned long long)REPORTS_IN_MAX_COUNT);
		goto cleanup;
	}
	rc = 0;
cleanup:
	if (rc < 0)
		reports_in_tlsrpt_clear(out);
	json_decref(root);
	return rc;
}

/* ------------------------------------------------------------------ the walk */

static void add_err(struct reports_inbound *out, const char *what, const char *err)
{
	char line[300];
	snprintf(line, sizeof(line), "%s: %s", what, err);
	util_strlist_add(&out->errors, line);
}

/* dmarc_bytes - what a parsed report holds in memory (its strings and
 * records), about. */
static size_t dmarc_bytes(const struct reports_in_dmarc *d)
{
	size_t n = strlen(d->org_name) + strlen(d->email) + strlen(d->report_id) +
	           strlen(d->domain) + strlen(d->p);
	for (size_t i = 0; i < d->n; i++) {
		const struct reports_in_rec *r = &d->recs[i];
		n += sizeof(*r) + strlen(r->ip) + strlen(r->disposition) + strlen(r->dkim) +
		     strlen(r->spf) + strlen(r->header_from) + strlen(r->dkim_domain) +
		     strlen(r->dkim_result) + strlen(r->spf_domain) + strlen(r->spf_result);
	}
	return n;
}

/* doc - one uncompressed document; 1 added, 0 not a report, -1 refused. */
static int doc(const unsigned char *p, size_t len, bool compressed, struct reports_inbound *out)
{
	char err[200];
	size_t i = 0;
	if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
		i = 3; /* UTF-8 BOM */
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	if (out->ndmarc + out->ntlsrpt >= REPORTS_IN_MAX_REPORTS) {
		add_err(out, "message", "too many reports");
		return -1;
	}
	if (i < len && p[i] == '<') {
		struct reports_in_dmarc d;
		if (reports_inbound_dmarc_xml((const char *)p, len, &d, err, sizeof(err)) < 0) {
			add_err(out, "dmarc", err);
			return -1;
		}
		/* the record limit holds per message too: 32 reports of 100000
		 * "<record/>" (2 KB gzip'd each) held 1.2 GB (red team); so does
		 * a bound on the bytes kept (100000 records of 512-byte strings
		 * are 460 MB, from a 3 MB message within the ratio limit) */
		size_t total = d.n, bytes = dmarc_bytes(&d);
		for (size_t k = 0; k < out->ndmarc; k++) {
			total += out->dmarc[k].n;
			bytes += dmarc_bytes(&out->dmarc[k]);
		}
		if (total > REPORTS_IN_MAX_RECORDS || bytes > REPORTS_IN_MAX_KEPT) {
			reports_in_dmarc_clear(&d);
			snprintf(err, sizeof(err), "more than %d records or %u MiB in the message",
			         REPORTS_IN_MAX_RECORDS, REPORTS_IN_MAX_KEPT >> 20);
			add_err(out, "dmarc", err);
			return -1;
		}
		void *n = realloc(out->dmarc, (out->ndmarc + 1) * sizeof(*out->dmarc));
		if (n == NULL)
			abort();
		out->dmarc = n;
		out->dmarc[out->ndmarc++] = d;
		return 1;
	}
	if (i < len && p[i] == '{') {
		struct reports_in_tlsrpt t;
		if (reports_inbound_tlsrpt_json((const char *)p, len, &t, err, sizeof(err)) < 0) {
			add_err(out, "tlsrpt", err);
			return -1;
		}
		void *n = realloc(out->tlsrpt, (out->ntlsrpt + 1) * sizeof(*out->tlsrpt));
		if (n == NULL)
			abort();
		out->tlsrpt = n;
		out->tlsrpt[out->ntlsrpt++] = t;
		return 1;
	}
	if (compressed) {
		add_err(out, "attachment", "compressed content is neither XML nor JSON");
		return -1;
	}
	return 0;
}

/* reports_inbound_blob - see reports-inbound.h. */
int reports_inbound_blob(const unsigned char *p, size_t len, struct reports_inbound *out)
{
	unsigned char *d = NULL;
	size_t dl = 0;
	char err[200];
	int rc = reports_inbound_decompress(p, len, &d, &dl, err, sizeof(err));
	if (rc < 0) {
		add_err(out, "attachment", err);
		return -1;
	}
	if (rc == 1)
		return doc(p, len, false, out);
	rc = doc(d, dl, true, out);
	free(d);
	return rc;
}

struct walk {
	struct reports_inbound *out;
	int found, parts;
};

static void walk_part(GMimeObject *parent, GMimeObject *part, gpointer data)
{
	struct walk *w = data;
	(void)parent;
	if (!GMIME_IS_PART(part))
		return; /* multiparts are walked by foreach; message/rfc822 skipped */
	if (++w->parts > 64)
		return;
	GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(part));
	if (dw == NULL)
		return;
	GMimeStream *ms = g_mime_stream_mem_new();
	if (g_mime_data_wrapper_write_to_stream(dw, ms) >= 0) {
		GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
		if (reports_inbound_blob(ba->data, ba->len, w->out) > 0)
			w->found++;
	}
	g_object_unref(ms);
}

/* reports_inbound_parse - see reports-inbound.h. */
int reports_inbound_parse(const char *msg, size_t len, struct reports_inbound *out)
{
	struct walk w = {out, 0, 0};
	reports_inbound_init();
	if (len > REPORTS_IN_MAX_MSG) {
		add_err(out, "message", "too big");
		return 0;
	}
	if (content_mime_too_complex(msg, len)) {
		add_err(out, "message", "too many MIME parts or header fields");
		return 0;
	}
	GMimeStream *st = g_mime_stream_mem_new_with_buffer(msg, len);
	GMimeParser *ps = g_mime_parser_new_with_stream(st);
	GMimeMessage *m = g_mime_parser_construct_message(ps, NULL);
	if (m == NULL) {
		add_err(out, "message", "not a MIME message");
	} else {
		g_mime_message_foreach(m, walk_part, &w);
		g_object_unref(m);
	}
	g_object_unref(ps);
	g_object_unref(st);
	if (w.found == 0 && out->errors.n == 0)
		add_err(out, "message", "no DMARC or TLS-RPT report found");
	return w.found;
}
