/*
 * test_reports_inbound.c - parsing the reports mailed to our report
 * addresses (issue 15): DMARC aggregate XML (RFC 7489 appendix C and RFC
 * 9990 shapes) and TLS-RPT JSON (RFC 8460 section 4.8 shape) as plain,
 * gzip and zip attachments with the senders' quirks (wrong MIME types,
 * several reports in one message, a BOM), and the hostile cases: a gzip
 * bomb, a zip bomb, a DTD with entities (billion laughs), deep nesting,
 * truncated and corrupt archives - each refused alone; the red team's
 * limits (counts, dates, JSON size, records per message, the memory of a
 * document of millions of elements).  Then the SQLite
 * backend: stored once per (org_name, report_id), refused parts kept raw.
 * Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include "reports-internal.h"

static const char *const XML_7489 =
    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<feedback>\n"
    "<report_metadata><org_name>acme.com</org_name>"
    "<email>noreply-dmarc-support@acme.com</email>"
    "<extra_contact_info>http://acme.com/dmarc/support</extra_contact_info>"
    "<report_id>9391651994964116463</report_id>"
    "<date_range><begin>1335571200</begin><end>1335657599</end></date_range>"
    "</report_metadata>"
    "<policy_published><domain>Example.COM</domain><adkim>r</adkim><aspf>r</aspf>"
    "<p>none</p><sp>none</sp><pct>100</pct></policy_published>"
    "<record><row><source_ip>72.150.241.94</source_ip><count>2</count>"
    "<policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>pass</spf>"
    "</policy_evaluated></row><identifiers><header_from>example.com</header_from>"
    "</identifiers><auth_results><dkim><domain>example.com</domain><result>fail</result>"
    "<human_result></human_result></dkim><spf><domain>example.com</domain>"
    "<result>pass</result></spf></auth_results></record>\n</feedback>\n";

/* RFC 9990 shape: namespace, version, np, discovery, IPv6, two records */
static const char *const XML_9990 =
    "\xef\xbb\xbf<?xml version=\"1.0\"?>\n"
    "<feedback xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\"><version>1.0</version>"
    "<report_metadata><org_name>Mail &amp; Co "
    "&lt;script&gt;</org_name><email>r@mail.example</email>"
    "<report_id>r-2</report_id><date_range><begin>1700000000</begin>"
    "<end>1700086400</end></date_range></report_metadata>"
    "<policy_published><domain>example.org</domain><p>reject</p><np>reject</np>"
    "<discovery_method>treewalk</discovery_method></policy_published>"
    "<record><row><source_ip>2001:db8::1</source_ip><count>10</count><policy_evaluated>"
    "<disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated>"
    "</row><identifiers><header_from>example.org</header_from></identifiers>"
    "<auth_results><dkim><domain>example.org</domain><selector>s1</selector>"
    "<result>pass</result></dkim></auth_results></record>"
    "<record><row><source_ip>192.0.2.7</source_ip><count>3</count><policy_evaluated>"
    "<disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated>"
    "</row><identifiers><header_from>example.org</header_from></identifiers>"
    "<auth_results><spf><domain>spoof.example</domain><result>softfail</result></spf>"
    "</auth_results></record></feedback>";

static const char *const JSON_8460 =
    "{\"organization-name\":\"Company-X\",\"date-range\":{\"start-datetime\":"
    "\"2016-04-01T00:00:00Z\",\"end-datetime\":\"2016-04-01T23:59:59Z\"},"
    "\"contact-info\":\"sts-reporting@company-x.example\",\"report-id\":"
    "\"5065427c-23d3-47ca-b6e0-946ea0e8c4be\",\"policies\":[{\"policy\":{\"policy-type\":"
    "\"sts\",\"policy-string\":[\"version: STSv1\",\"mode: testing\"],\"policy-domain\":"
    "\"Company-Y.example\",\"mx-host\":[\"*.mail.company-y.example\"]},\"summary\":{"
    "\"total-successful-session-count\":5326,\"total-failure-session-count\":303},"
    "\"failure-details\":[{\"result-type\":\"certificate-expired\",\"sending-mta-ip\":"
    "\"2001:db8:abcd:0012::1\",\"receiving-mx-hostname\":\"mx1.mail.company-y.example\","
    "\"failed-session-count\":100},{\"result-type\":\"starttls-not-supported\","
    "\"failed-session-count\":200},{\"result-type\":\"validation-failure\","
    "\"failed-session-count\":3}]}]}";

static const char *const XML_LAUGHS =
    "<?xml version=\"1.0\"?><!DOCTYPE feedback [<!ENTITY a \"aaaaaaaaaa\">"
    "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
    "<feedback><report_metadata><org_name>&c;</org_name><report_id>x</report_id>"
    "</report_metadata><policy_published><domain>e.com</domain></policy_published></feedback>";

static const char *const XML_XXE =
    "<?xml version=\"1.0\"?><!DOCTYPE feedback [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
    "<feedback><report_metadata><org_name>&x;</org_name><report_id>x</report_id>"
    "</report_metadata><policy_published><domain>e.com</domain></policy_published></feedback>";

/* gz - p gzip'd (util_buf, freed by the caller) */
static void gz(const void *p, size_t n, struct util_buf *out)
{
	util_buf_init(out);
	assert_int_equal(reports_gzip(p, n, out), 0);
}

/* zip1 - a zip archive of one entry (method 0 stored or 8 deflated). */
static void zip1(const char *name, const void *p, size_t n, int method, struct util_buf *out)
{
	unsigned char *c = NULL;
	size_t cn = n;
	uint32_t crc = (uint32_t)crc32(0, p, (uInt)n);
	if (method == 8) {
		z_stream z;
		memset(&z, 0, sizeof(z));
		assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
		c = malloc(deflateBound(&z, n));
		z.next_in = (unsigned char *)p;
		z.avail_in = (uInt)n;
		z.next_out = c;
		z.avail_out = (uInt)deflateBound(&z, n);
		assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
		cn = z.total_out;
		deflateEnd(&z);
	}
	unsigned char h[46];
	size_t nl = strlen(name);
#define W16(b, o, v) ((b)[o] = (unsigned char)(v), (b)[(o) + 1] = (unsigned char)((v) >> 8))
#define W32(b, o, v) (W16(b, o, (v)&0xffff), W16(b, (o) + 2, ((uint32_t)(v)) >> 16))
	util_buf_init(out);
	memset(h, 0, sizeof(h));
	memcpy(h, "PK\3\4", 4);
	W16(h, 4, 20);
	W16(h, 8, method);
	W32(h, 14, crc);
	W32(h, 18, cn);
	W32(h, 22, n);
	W16(h, 26, nl);
	util_buf_add(out, h, 30);
	util_buf_add(out, name, nl);
	util_buf_add(out, method == 8 ? (const void *)c : p, cn);
	size_t cdoff = out->len;
	memset(h, 0, sizeof(h));
	memcpy(h, "PK\1\2", 4);
	W16(h, 4, 20);
	W16(h, 6, 20);
	W16(h, 10, method);
	W32(h, 16, crc);
	W32(h, 20, cn);
	W32(h, 24, n);
	W16(h, 28, nl);
	W32(h, 42, 0);
	util_buf_add(out, h, 46);
	util_buf_add(out, name, nl);
	size_t cdlen = out->len - cdoff;
	memset(h, 0, 22);
	memcpy(h, "PK\5\6", 4);
	W16(h, 8, 1);
	W16(h, 10, 1);
	W32(h, 12, cdlen);
	W32(h, 16, cdoff);
	util_buf_add(out, h, 22);
	free(c);
}

/* b64 - base64 of p with CRLF every 76 columns, appended to out */
static void b64(const unsigned char *p, size_t n, struct util_buf *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t col = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
		             (i + 2 < n ? p[i + 2] : 0);
		char q[4] = {a[v >> 18 & 63], a[v >> 12 & 63], i + 1 < n ? a[v >> 6 & 63] : '=',
		             i + 2 < n ? a[v & 63] : '='};
		util_buf_add(out, q, 4);
		if ((col += 4) >= 76) {
			util_buf_adds(out, "\r\n");
			col = 0;
		}
	}
	util_buf_adds(out, "\r\n");
}

/* message - a report mail: a text part, then each attachment (type, bytes). */
static void message(struct util_buf *m, size_t n, const char *const *types,
                    const struct util_buf *atts)
{
	util_buf_init(m);
	util_buf_adds(m, "From: noreply@reporter.example\r\nTo: dmarc-reports@example.com\r\n"
	                 "Subject: Report Domain: example.com\r\nMIME-Version: 1.0\r\n"
	                 "Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
	                 "--BB\r\nContent-Type: text/plain\r\n\r\nThis is a DMARC report.\r\n");
	for (size_t i = 0; i < n; i++) {
		util_buf_printf(m,
		                "--BB\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\n"
		                "Content-Disposition: attachment; filename=\"r%zu\"\r\n\r\n",
		                types[i], i);
		b64((const unsigned char *)atts[i].data, atts[i].len, m);
	}
	util_buf_adds(m, "--BB--\r\n");
}

struct pcase {
	const char *name;
	int make; /* how the attachment is built from doc */
	const char *doc;
	const char *type;
	int found, ndmarc, ntlsrpt, nerrors;
	const char *err; /* a substring of the first error, or NULL */
};
enum { PLAIN, GZIP, ZIPD, ZIPS, BOMB_GZ, BOMB_ZIP, TRUNC_GZ, DEEP, RAW_BYTES };

static const struct pcase pcases[] = {
    {"rfc7489 plain xml", PLAIN, NULL, "text/xml", 1, 1, 0, 0, NULL},
    {"rfc7489 gzip", GZIP, NULL, "application/gzip", 1, 1, 0, 0, NULL},
    {"gzip labelled octet-stream", GZIP, NULL, "application/octet-stream", 1, 1, 0, 0, NULL},
    {"zip deflated", ZIPD, NULL, "application/zip", 1, 1, 0, 0, NULL},
    {"zip stored, labelled text/plain", ZIPS, NULL, "text/plain", 1, 1, 0, 0, NULL},
    {"tlsrpt gzip", GZIP, "json", "application/tlsrpt+gzip", 1, 0, 1, 0, NULL},
    {"tlsrpt json", PLAIN, "json", "application/tlsrpt+json", 1, 0, 1, 0, NULL},
    {"gzip bomb", BOMB_GZ, NULL, "application/gzip", 0, 0, 0, 1, "over the limit"},
    {"zip bomb", BOMB_ZIP, NULL, "application/zip", 0, 0, 0, 1, "over the limit"},
    {"truncated gzip", TRUNC_GZ, NULL, "application/gzip", 0, 0, 0, 1, "truncated"},
    {"billion laughs", PLAIN, "laughs", "text/xml", 0, 0, 0, 1, "dmarc: XML"},
    {"external entity", PLAIN, "xxe", "text/xml", 0, 0, 0, 1, "DTD"},
    {"deep nesting", DEEP, NULL, "text/xml", 0, 0, 0, 1, "nested deeper"},
    {"not well-formed", PLAIN, "<feedback><report_metadata>", "text/xml", 0, 0, 0, 1,
     "well-formed"},
    {"other root", PLAIN, "<html><body>hi</body></html>", "text/html", 0, 0, 0, 1, "<feedback>"},
    {"json without policies", PLAIN, "{\"organization-name\":\"x\",\"report-id\":\"y\"}",
     "application/tlsrpt+json", 0, 0, 0, 1, "policies"},
    {"gzip of binary", RAW_BYTES, NULL, "application/gzip", 0, 0, 0, 1, "neither"},
};

static const char *doc_of(const struct pcase *c)
{
	if (c->doc == NULL)
		return XML_7489;
	if (strcmp(c->doc, "json") == 0)
		return JSON_8460;
	if (strcmp(c->doc, "laughs") == 0)
		return XML_LAUGHS;
	if (strcmp(c->doc, "xxe") == 0)
		return XML_XXE;
	return c->doc;
}

static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		const struct pcase *c = &pcases[i];
		const char *d = doc_of(c);
		struct util_buf att, m;
		struct reports_inbound in;
		memset(&in, 0, sizeof(in));
		switch (c->make) {
		case GZIP:
			gz(d, strlen(d), &att);
			break;
		case ZIPD:
			zip1("example.com!acme.com!1.xml", d, strlen(d), 8, &att);
			break;
		case ZIPS:
			zip1("r.xml", d, strlen(d), 0, &att);
			break;
		case BOMB_GZ:
		case BOMB_ZIP: {
			size_t n = 64u * 1024 * 1024;
			char *z = calloc(1, n);
			memcpy(z, "<feedback>", 10);
			if (c->make == BOMB_GZ)
				gz(z, n, &att);
			else
				zip1("bomb.xml", z, n, 8, &att);
			free(z);
			break;
		}
		case TRUNC_GZ:
			gz(d, strlen(d), &att);
			att.len /= 2;
			break;
		case DEEP:
			util_buf_init(&att);
			util_buf_adds(&att, "<feedback>");
			for (int k = 0; k < 40; k++)
				util_buf_adds(&att, "<a>");
			for (int k = 0; k < 40; k++)
				util_buf_adds(&att, "</a>");
			util_buf_adds(&att, "</feedback>");
			break;
		case RAW_BYTES: {
			unsigned char bin[256];
			for (int k = 0; k < 256; k++)
				bin[k] = (unsigned char)(k * 7 + 1);
			gz(bin, sizeof(bin), &att);
			break;
		}
		default:
			util_buf_init(&att);
			util_buf_adds(&att, d);
		}
		message(&m, 1, &c->type, &att);
		int found = reports_inbound_parse(m.data, m.len, &in);
		print_message("case %s: found=%d errors=%zu %s\n", c->name, found, in.errors.n,
		              in.errors.n ? in.errors.v[0] : "");
		assert_int_equal(found, c->found);
		assert_int_equal(in.ndmarc, c->ndmarc);
		assert_int_equal(in.ntlsrpt, c->ntlsrpt);
		assert_int_equal(in.errors.n, c->nerrors);
		if (c->err)
			assert_non_null(strstr(in.errors.v[0], c->err));
		if (c->ndmarc) {
			assert_string_equal(in.dmarc[0].org_name, "acme.com");
			assert_string_equal(in.dmarc[0].report_id, "9391651994964116463");
			assert_string_equal(in.dmarc[0].domain, "example.com");
			assert_int_equal(in.dmarc[0].begin, 1335571200);
			assert_int_equal(in.dmarc[0].n, 1);
			assert_string_equal(in.dmarc[0].recs[0].ip, "72.150.241.94");
			assert_int_equal(in.dmarc[0].recs[0].count, 2);
			assert_string_equal(in.dmarc[0].recs[0].dkim, "fail");
			assert_string_equal(in.dmarc[0].recs[0].spf, "pass");
		}
		if (c->ntlsrpt) {
			assert_string_equal(in.tlsrpt[0].org_name, "Company-X");
			assert_int_equal(in.tlsrpt[0].begin, 1459468800);
			assert_int_equal(in.tlsrpt[0].n, 1);
			assert_string_equal(in.tlsrpt[0].pols[0].policy_domain,
			                    "company-y.example");
			assert_int_equal(in.tlsrpt[0].pols[0].success, 5326);
			assert_int_equal(in.tlsrpt[0].pols[0].failure, 303);
			assert_string_equal(in.tlsrpt[0].pols[0].failures,
			                    "certificate-expired=100;starttls-not-supported=200;"
			                    "validation-failure=3");
		}
		reports_inbound_clear(&in);
		util_buf_free(&att);
		util_buf_free(&m);
	}
}

/* Several reports in one message, one of them broken: the others count. */
static void test_parse_several(void **state)
{
	(void)state;
	struct util_buf atts[4], m;
	const char *types[4] = {"application/zip", "application/gzip", "text/xml",
	                        "application/tlsrpt+json"};
	struct reports_inbound in;
	memset(&in, 0, sizeof(in));
	zip1("a.xml", XML_7489, strlen(XML_7489), 8, &atts[0]);
	gz(XML_9990, strlen(XML_9990), &atts[1]);
	util_buf_init(&atts[2]);
	util_buf_adds(&atts[2], XML_LAUGHS);
	util_buf_init(&atts[3]);
	util_buf_adds(&atts[3], JSON_8460);
	message(&m, 4, types, atts);
	assert_int_equal(reports_inbound_parse(m.data, m.len, &in), 3);
	assert_int_equal(in.ndmarc, 2);
	assert_int_equal(in.ntlsrpt, 1);
	assert_int_equal(in.errors.n, 1);
	/* RFC 9990 shape: entities of the text decoded once, kept as text */
	assert_string_equal(in.dmarc[1].org_name, "Mail & Co <script>");
	assert_string_equal(in.dmarc[1].domain, "example.org");
	assert_int_equal(in.dmarc[1].n, 2);
	assert_string_equal(in.dmarc[1].recs[0].ip, "2001:db8::1");
	assert_string_equal(in.dmarc[1].recs[0].dkim_domain, "example.org");
	assert_string_equal(in.dmarc[1].recs[1].spf_domain, "spoof.example");
	assert_string_equal(in.dmarc[1].recs[1].spf_result, "softfail");
	assert_string_equal(in.dmarc[1].recs[1].dkim_result, "");
	reports_inbound_clear(&in);
	for (int i = 0; i < 4; i++)
		util_buf_free(&atts[i]);
	util_buf_free(&m);
}

/* A single-part message whose body is the gzip (a common reporter shape). */
static void test_parse_single_part(void **state)
{
	(void)state;
	struct util_buf att, m;
	struct reports_inbound in;
	memset(&in, 0, sizeof(in));
	gz(XML_7489, strlen(XML_7489), &att);
	util_buf_init(&m);
	util_buf_adds(
	    &m, "From: a@b.example\r\nSubject: r\r\nMIME-Version: 1.0\r\n"
	        "Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n");
	b64((const unsigned char *)att.data, att.len, &m);
	assert_int_equal(reports_inbound_parse(m.data, m.len, &in), 1);
	reports_inbound_clear(&in);
	/* and a message with no report at all */
	util_buf_reset(&m);
	util_buf_adds(&m, "From: a@b.example\r\nSubject: hello\r\n\r\nJust text.\r\n");
	memset(&in, 0, sizeof(in));
	assert_int_equal(reports_inbound_parse(m.data, m.len, &in), 0);
	assert_int_equal(in.errors.n, 1);
	assert_non_null(strstr(in.errors.v[0], "no DMARC or TLS-RPT report"));
	reports_inbound_clear(&in);
	util_buf_free(&att);
	util_buf_free(&m);
}

/* GMime is given report mail only within content/'s limits: a report
 * followed by a flood of empty parts, header fields or addresses (GMime
 * made 2 GB of a 10 MB message of empty parts) is refused before GMime
 * parses it; the same report with a few of them still counts. */
enum { FILL_PARTS, FILL_FIELDS, FILL_ADDRS };
static const struct {
	const char *name;
	int fill;
	size_t n;
	int found;
} mcases[] = {
    {"1000 empty parts", FILL_PARTS, 1000, 1},
    {"21000 empty parts", FILL_PARTS, 21000, 0},
    {"1000 header fields", FILL_FIELDS, 1000, 1},
    {"201000 header fields", FILL_FIELDS, 201000, 0},
    {"1000 addresses in Cc", FILL_ADDRS, 1000, 1},
    {"101000 addresses in Cc", FILL_ADDRS, 101000, 0},
};

static void test_parse_mime_limits(void **state)
{
	(void)state;
	struct util_buf att, m, fill;
	const char *type = "application/gzip";

	gz(XML_7489, strlen(XML_7489), &att);
	for (size_t i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
		struct reports_inbound in;
		memset(&in, 0, sizeof(in));
		message(&m, 1, &type, &att);
		util_buf_init(&fill);
		for (size_t k = 0; k < mcases[i].n; k++)
			util_buf_adds(&fill, mcases[i].fill == FILL_PARTS    ? "--BB\r\n\r\n"
			                     : mcases[i].fill == FILL_FIELDS ? "X-A: b\r\n"
			                                                     : "a@b.example,");
		if (mcases[i].fill == FILL_PARTS) { /* before the closing boundary */
			m.len -= strlen("--BB--\r\n");
			util_buf_add(&m, fill.data, fill.len);
			util_buf_adds(&m, "--BB--\r\n");
		} else { /* into the top header block */
			struct util_buf t;
			util_buf_init(&t);
			if (mcases[i].fill == FILL_ADDRS)
				util_buf_adds(&t, "Cc: ");
			util_buf_add(&t, fill.data, fill.len);
			if (mcases[i].fill == FILL_ADDRS)
				util_buf_adds(&t, "x@b.example\r\n");
			util_buf_add(&t, m.data, m.len);
			util_buf_free(&m);
			m = t;
		}
		int found = reports_inbound_parse(m.data, m.len, &in);
		print_message("case %s: found=%d errors=%zu %s\n", mcases[i].name, found,
		              in.errors.n, in.errors.n ? in.errors.v[0] : "");
		assert_int_equal(found, mcases[i].found);
		if (mcases[i].found == 0) {
			assert_int_equal(in.errors.n, 1);
			assert_non_null(strstr(in.errors.v[0], "too many MIME parts"));
		}
		reports_inbound_clear(&in);
		util_buf_free(&fill);
		util_buf_free(&m);
	}
	util_buf_free(&att);
}

/* xml_report - a DMARC report with `recs` copies of record (a format with
 * %d for its index, or none); begin/end as given. */
static void xml_report(struct util_buf *x, const char *begin, const char *end, size_t recs,
                       const char *record)
{
	util_buf_init(x);
	util_buf_printf(x,
	                "<feedback><report_metadata><org_name>o</org_name><report_id>r</report_id>"
	                "<date_range><begin>%s</begin><end>%s</end></date_range>"
	                "</report_metadata><policy_published><domain>example.com</domain>"
	                "</policy_published>",
	                begin, end);
	for (size_t i = 0; i < recs; i++)
		util_buf_adds(x, record);
	util_buf_adds(x, "</feedback>");
}

/* Red team: what an accepted report may claim, and what one message may
 * hold in memory.  Counts past 2^32 (their sums overflowed the dashboard's
 * SQL), dates past 9999 (PostgreSQL's to_timestamp failed the whole daily
 * view), a TLS-RPT document over 4 MiB (jansson's tree: 45 MB -> 1 GB),
 * more than 100000 records in one message (32 reports of 100000
 * "<record/>", 2 KB gzip'd each: 1.2 GB). */
static void test_limits(void **state)
{
	(void)state;
	static const struct {
		const char *name, *begin, *end, *record;
		size_t recs;
		const char *err; /* NULL: accepted */
	} xcases[] = {
	    {"count 2^32", "0", "1", "<record><row><count>4294967296</count></row></record>", 1,
	     NULL},
	    {"count 2^32+1", "0", "1", "<record><row><count>4294967297</count></row></record>", 1,
	     "record count over"},
	    {"count 2^64", "0", "1",
	     "<record><row><count>18446744073709551616</count></row></record>", 1,
	     "record count over"},
	    {"negative count", "0", "1", "<record><row><count>-5</count></row></record>", 1, NULL},
	    {"year 9999", "253402214400", "253402300799", "<record/>", 1, NULL},
	    {"year 10000", "0", "253402300800", "<record/>", 1, "date_range out of range"},
	    {"begin 2^63", "9223372036854775807", "1", "<record/>", 1, "date_range out of range"},
	    {"empty records", "0", "1", "<record/>", 3, NULL},
	    /* 511 bytes then a 2-byte character: cut before it, not in it */
	    {"utf-8 at the cut", "0", "1",
	     "<record><row><source_ip>"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	     "\xc3\xa9</source_ip></row></record>",
	     1, NULL},
	};
	for (size_t i = 0; i < sizeof(xcases) / sizeof(xcases[0]); i++) {
		struct util_buf x;
		struct reports_in_dmarc d;
		char err[200] = "";
		xml_report(&x, xcases[i].begin, xcases[i].end, xcases[i].recs, xcases[i].record);
		int rc = reports_inbound_dmarc_xml(x.data, x.len, &d, err, sizeof(err));
		print_message("case %s: rc=%d %s\n", xcases[i].name, rc, err);
		if (xcases[i].err == NULL) {
			assert_int_equal(rc, 0);
			assert_int_equal(d.n, xcases[i].recs);
			assert_int_equal(strlen(d.recs[0].ip),
			                 strstr(xcases[i].name, "utf-8") ? 511 : 0);
			reports_in_dmarc_clear(&d);
		} else {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err, xcases[i].err));
		}
		util_buf_free(&x);
	}

	static const struct {
		const char *name, *json, *err;
	} jcases[] = {
	    {"tls count 2^32",
	     "{\"organization-name\":\"o\",\"report-id\":\"r\",\"policies\":[{\"summary\":"
	     "{\"total-successful-session-count\":4294967296}}]}",
	     NULL},
	    {"tls count 2^62",
	     "{\"organization-name\":\"o\",\"report-id\":\"r\",\"policies\":[{\"summary\":"
	     "{\"total-failure-session-count\":4611686018427387904}}]}",
	     "session count over"},
	    {"failure detail 2^62",
	     "{\"organization-name\":\"o\",\"report-id\":\"r\",\"policies\":[{\"failure-details\":"
	     "[{\"result-type\":\"x\",\"failed-session-count\":4611686018427387904}]}]}",
	     "session count over"},
	    {"year 10000",
	     "{\"organization-name\":\"o\",\"report-id\":\"r\",\"date-range\":{\"start-datetime\":"
	     "\"9999-12-31T23:59:59Z\",\"end-datetime\":\"9999-12-32T00:00:00Z\"},\"policies\":[]}",
	     "date-range out of range"},
	    /* a result-type of 63 bytes then a 2-byte character: cut before it */
	    {"utf-8 at the cut",
	     "{\"organization-name\":\"o\",\"report-id\":\"r\",\"policies\":[{\"summary\":"
	     "{\"total-successful-session-count\":4294967296},\"failure-details\":[{\"result-"
	     "type\":"
	     "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\u00e9\","
	     "\"failed-session-count\":2}]}]}",
	     NULL},
	    {"big", NULL, "JSON bigger than"},
	};
	for (size_t i = 0; i < sizeof(jcases) / sizeof(jcases[0]); i++) {
		struct util_buf x;
		struct reports_in_tlsrpt t;
		char err[200] = "";
		util_buf_init(&x);
		if (jcases[i].json != NULL) {
			util_buf_adds(&x, jcases[i].json);
		} else { /* valid, and just over 4 MiB */
			util_buf_adds(&x,
			              "{\"organization-name\":\"o\",\"report-id\":\"r\",\"x\":[0");
			while (x.len <= REPORTS_IN_MAX_JSON)
				util_buf_adds(&x, ",0");
			util_buf_adds(&x, "],\"policies\":[]}");
		}
		int rc = reports_inbound_tlsrpt_json(x.data, x.len, &t, err, sizeof(err));
		print_message("case %s: rc=%d %s\n", jcases[i].name, rc, err);
		if (jcases[i].err == NULL) {
			assert_int_equal(rc, 0);
			assert_int_equal(t.pols[0].success, 4294967296ull);
			if (strstr(jcases[i].name, "utf-8"))
				assert_string_equal(
				    t.pols[0].failures,
				    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
				    "xxxxxx=2");
			reports_in_tlsrpt_clear(&t);
		} else {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err, jcases[i].err));
		}
		util_buf_free(&x);
	}

	/* one message: 3 reports of 40000 records - the third is refused */
	struct util_buf x, att[3], m;
	const char *types[3] = {"text/xml", "text/xml", "text/xml"};
	struct reports_inbound in;
	xml_report(&x, "0", "1", 40000, "<record/>");
	for (int i = 0; i < 3; i++) { /* plain: gzip'd, this is over the ratio limit */
		util_buf_init(&att[i]);
		util_buf_add(&att[i], x.data, x.len);
	}
	message(&m, 3, types, att);
	memset(&in, 0, sizeof(in));
	assert_int_equal(reports_inbound_parse(m.data, m.len, &in), 2);
	assert_int_equal(in.ndmarc, 2);
	assert_int_equal(in.errors.n, 1);
	assert_non_null(
	    strstr(in.errors.v[0], "more than 100000 records or 64 MiB in the message"));
	reports_inbound_clear(&in);
	for (int i = 0; i < 3; i++)
		util_buf_free(&att[i]);
	util_buf_free(&m);
	util_buf_free(&x);

	/* and at most 64 MiB parsed: two reports of 8000 records of nine
	 * 512-byte strings (37 MB each) - the second is refused */
	char big[600], rec[6000];
	memset(big, 'a', 512);
	big[512] = '\0';
	snprintf(rec, sizeof(rec),
	         "<record><row><source_ip>%s</source_ip><policy_evaluated><disposition>%s"
	         "</disposition><dkim>%s</dkim><spf>%s</spf></policy_evaluated></row>"
	         "<identifiers><header_from>%s</header_from></identifiers><auth_results><dkim>"
	         "<domain>%s</domain><result>%s</result></dkim><spf><domain>%s</domain><result>"
	         "%s</result></spf></auth_results></record>",
	         big, big, big, big, big, big, big, big, big);
	xml_report(&x, "0", "1", 8000, rec);
	memset(&in, 0, sizeof(in));
	assert_int_equal(reports_inbound_blob((const unsigned char *)x.data, x.len, &in), 1);
	assert_int_equal(reports_inbound_blob((const unsigned char *)x.data, x.len, &in), -1);
	assert_int_equal(in.ndmarc, 1);
	assert_int_equal(in.errors.n, 1);
	assert_non_null(strstr(in.errors.v[0], "or 64 MiB in the message"));
	reports_inbound_clear(&in);
	util_buf_free(&x);
}

/* The tree took 1.5 GB (2 GB and more under ASan); the stream takes about
 * nothing, plus what ASan's quarantine keeps of the freed nodes (256 MB). */
#if defined(__SANITIZE_ADDRESS__)
#define XML_MEMORY_MAX_KIB (800L * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define XML_MEMORY_MAX_KIB (800L * 1024)
#endif
#endif
#ifndef XML_MEMORY_MAX_KIB
#define XML_MEMORY_MAX_KIB (200L * 1024)
#endif

/* Red team: 45 MB of "<x/>" (what a 230 KB gzip may hold within the ratio
 * limit) took 1.5 GB as a libxml2 tree; read as a stream it takes about
 * its own size.  Run first: the peak RSS of the process is what is read. */
static void test_xml_memory(void **state)
{
	(void)state;
	struct util_buf x;
	struct reports_in_dmarc d;
	struct rusage ru;
	char err[200];

	xml_report(&x, "0", "1", 0, "");
	x.len -= strlen("</feedback>");
	for (int i = 0; i < 12 * 1000 * 1000; i++)
		util_buf_add(&x, "<x/>", 4);
	util_buf_adds(&x, "<record/></feedback>");
	assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
	long before = ru.ru_maxrss; /* KiB, the input included */
	assert_int_equal(reports_inbound_dmarc_xml(x.data, x.len, &d, err, sizeof(err)), 0);
	assert_int_equal(d.n, 1);
	assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
	print_message("peak RSS %ld -> %ld KiB for %zu bytes of XML\n", before, ru.ru_maxrss,
	              x.len);
	assert_true(ru.ru_maxrss - before < XML_MEMORY_MAX_KIB);
	reports_in_dmarc_clear(&d);
	util_buf_free(&x);
}

static void query(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const unsigned char *t = sqlite3_column_text(st, 0);
	snprintf(out, outlen, "%s", t ? (const char *)t : "NULL");
	sqlite3_finalize(st);
}

/* The SQLite backend: stored once, refused parts with their raw bytes. */
static void test_store(void **state)
{
	(void)state;
	char path[] = "/tmp/mxinbound-XXXXXX", err[256], v[256];
	int fd = mkstemp(path), dups = -1;
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	void *db = reports_sqlite_backend.open(path, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(reports_sqlite_backend.schema_version(db), REPORTS_SCHEMA_VERSION);
	struct util_buf atts[3], m;
	const char *types[3] = {"text/xml", "application/tlsrpt+json", "text/xml"};
	struct reports_inbound in;
	memset(&in, 0, sizeof(in));
	util_buf_init(&atts[0]);
	util_buf_adds(&atts[0], XML_9990);
	util_buf_init(&atts[1]);
	util_buf_adds(&atts[1], JSON_8460);
	util_buf_init(&atts[2]);
	util_buf_adds(&atts[2], XML_XXE);
	message(&m, 3, types, atts);
	assert_int_equal(reports_inbound_parse(m.data, m.len, &in), 2);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(reports_sqlite_backend.add_inbound(
		                     db, &in, 1700000100, "dmarc-reports@example.org", "Q1", m.data,
		                     m.len, &dups, err, sizeof(err)),
		                 0);
		assert_int_equal(dups, round == 0 ? 0 : 2);
	}
	sqlite3 *q = NULL;
	assert_int_equal(sqlite3_open(path, &q), SQLITE_OK);
	struct {
		const char *sql, *want;
	} checks[] = {
	    {"SELECT count(*) FROM inbound_dmarc", "1"},
	    {"SELECT org_name || '|' || domain || '|' || begin_t FROM inbound_dmarc",
	     "Mail & Co <script>|example.org|1700000000"},
	    {"SELECT group_concat(source_ip || '=' || count, ',') FROM inbound_dmarc_rec",
	     "2001:db8::1=10,192.0.2.7=3"},
	    {"SELECT count(*) FROM inbound_tlsrpt", "1"},
	    {"SELECT policy_domain || '|' || success || '|' || failure FROM inbound_tlsrpt_policy",
	     "company-y.example|5326|303"},
	    {"SELECT count(*) FROM inbound_refused", "2"},
	    {"SELECT qid || '|' || length(raw) FROM inbound_refused LIMIT 1", NULL},
	    {"SELECT instr(error, 'DTD') > 0 FROM inbound_refused LIMIT 1", "1"},
	};
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		query(q, checks[i].sql, v, sizeof(v));
		char want[64];
		if (checks[i].want == NULL)
			snprintf(want, sizeof(want), "Q1|%zu", m.len);
		assert_string_equal(v, checks[i].want ? checks[i].want : want);
	}

	/* retention: by arrival (received_t, t); rows cascade; approvals stay */
	uint64_t n = 99;
	assert_int_equal(sqlite3_exec(q,
	                              "INSERT INTO inbound_approved VALUES ('example.org', "
	                              "'192.0.2.7', 1)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	if (reports_sqlite_backend.prune_inbound(db, 1700000100, 1700000100, &n, err,
	                                         sizeof(err)) != 0)
		fail_msg("prune: %s", err);
	assert_int_equal(n, 0); /* received at the cut: kept */
	query(q, "SELECT count(*) FROM inbound_dmarc_rec", v, sizeof(v));
	assert_string_equal(v, "2");
	assert_int_equal(reports_sqlite_backend.prune_inbound(db, 1700000101, 0, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 2); /* the DMARC and the TLS-RPT report */
	static const char *const after[][2] = {
	    {"SELECT count(*) FROM inbound_dmarc", "0"},
	    {"SELECT count(*) FROM inbound_dmarc_rec", "0"},
	    {"SELECT count(*) FROM inbound_tlsrpt_policy", "0"},
	    {"SELECT count(*) FROM inbound_refused", "2"},
	    {"SELECT count(*) FROM inbound_approved", "1"},
	};
	for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
		query(q, after[i][0], v, sizeof(v));
		assert_string_equal(v, after[i][1]);
	}
	assert_int_equal(reports_sqlite_backend.prune_inbound(db, 0, 1700000101, &n, err, sizeof(err)),
	                 0);
	query(q, "SELECT count(*) FROM inbound_refused", v, sizeof(v));
	assert_string_equal(v, "0");
	sqlite3_close(q);
	reports_sqlite_backend.close(db);
	reports_inbound_clear(&in);
	for (int i = 0; i < 3; i++)
		util_buf_free(&atts[i]);
	util_buf_free(&m);
	unlink(path);
	snprintf(v, sizeof(v), "%s-wal", path);
	unlink(v);
	snprintf(v, sizeof(v), "%s-shm", path);
	unlink(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_xml_memory),
	    cmocka_unit_test(test_parse_table),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_parse_several),
	    cmocka_unit_test(test_parse_single_part),
	    cmocka_unit_test(test_parse_mime_limits),
	    cmocka_unit_test(test_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
