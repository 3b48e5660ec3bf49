/*
 * reports-send.c - the report run (RFC 9990 sections 2 and 4): for every
 * policy domain with evaluations since the last run, the report XML,
 * gzipped, attached to a message with the RFC 9990 subject and file name,
 * DKIM-signed with mxgate's report key (libopendkim), and queued as
 * locally originated mail for each verified `mailto:` rua destination, so
 * it leaves by the outbound route (MX delivery).
 *
 * Threads: a run is one thread of its own (database reads, synchronous DNS
 * through the policy resolver, compression and signing may all wait); what
 * it produces - finished messages - goes back to the loop through a pipe,
 * and only the loop calls queue_inject().  One run at a time.
 *
 * Destinations (RFC 9990 section 4 / RFC 9989): the `rua` of the policy
 * domain's _dmarc record, read at run time; only mailto: URIs; a `!size`
 * suffix is honoured (a bigger report is not sent there, logged); a
 * destination outside the policy domain's organizational domain must
 * publish `<policy-domain>._report._dmarc.<dest-domain>`
 * TXT "v=DMARC1" or it is skipped with a log line.
 *
 * Locks: a run reads each domain's aggregate of each period in a short
 * read transaction (a snapshot), builds its report - XML, gzip, the DNS
 * lookups, signing - with no transaction open, and only then records
 * every report of every period in one short write transaction
 * (run_record).  The store's writer thread keeps
 * recording evaluations meanwhile: SQLite has one writer at a time, and a
 * run that held the write lock across its lookups made the writer's
 * batches time out and be lost.
 *
 * Crash safety: a run's reports (report table, report_id unique), their
 * finished messages (outbox) and the run record (report_run) commit in one
 * transaction; a crash before the commit leaves nothing and the next run
 * makes the same reports again (same ids).  The transaction first checks
 * that no other run recorded a later end since this one read where to
 * begin (nothing is recorded twice).  After the commit the messages
 * are claimed from the outbox, queued (queue_inject), and marked queued by
 * a short thread once the queue holds them; a process that dies between
 * claim and mark leaves them unmarked and the next start queues them again
 * (the only window for a duplicate: between the queue's fsync and the
 * mark, with the same report_id so receivers can tell).
 *
 * Periods (reports-report.c): a run reports from the last run's end to its
 * own end, one report per domain and period; the start-up run ends at the
 * start of the current period, so the periods that ended while the
 * gateway was down are sent then, each on its own, with the ids any other
 * run would give them.
 *
 * Ownership: the sender borrows cfg, dns, qs and the store.
 * Diagnostics: "- reports ..." log lines; mxgate_reports_sent_total{result}.
 */
#include "reports-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <opendkim/dkim.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <event2/event.h>

#include "policy-arc.h"
#include "queue.h"
#include "version.h"

/* reports_out_free - the whole list; NULL is a no-op. */
void reports_out_free(struct reports_out *o)
{
	while (o != NULL) {
		struct reports_out *n = o->next;
		free(o->report_id);
		free(o->rcpt);
		free(o->sender);
		free(o->msg);
		free(o);
		o = n;
	}
}

/* One queue_inject in flight: marked in the outbox once it is durable. */
struct reports_inject {
	struct reports_sender *snd; /* NULL once the sender is gone */
	char *report_id, *rcpt;
	struct reports_inject *next;
};

struct reports_sender {
	struct event_base *base;
	const struct config *cfg;
	struct policy_dns *dns;
	struct queue_store *qs;
	struct reports_store *rs;
	char *db_target;
	const struct reports_backend *be;
	char *key_pem; /* the signing key, PEM */
	int pipefd[2];
	struct event *done_ev; /* the run thread finished */
	struct event *timer;   /* next period end */
	pthread_t thread;
	bool running;
	int64_t run_end;                 /* the end of the running run */
	bool startup;                    /* the start-up run: missed periods, the outbox */
	bool marking;                    /* the thread marks queued messages, no run */
	struct reports_out *out;         /* the run's messages (run thread, then loop) */
	struct reports_out *marks;       /* queued, to mark in the outbox (loop, then thread) */
	size_t injecting;                /* queue_inject calls without their callback yet */
	struct reports_inject *inflight; /* those calls (their snd is cleared at free) */
	struct reports_failure *failure; /* RFC 9991 failure reports, or NULL (owned) */
	bool pending;                    /* a send-now came while busy: run at pending_end */
	int64_t pending_end;
	/* what the run thread reads of the config, copied when the run starts:
	 * a reload may free snd->cfg while a run goes on */
	struct config run_cfg;
};

/* snap_free - the run's copy of the config (owned strings). */
static void snap_free(struct config *c)
{
	free(c->hostname);
	free(c->queue_dir);
	free(c->reports_org_name);
	free(c->reports_email);
	free(c->reports_dkim_selector);
	free(c->reports_dkim_domain);
	memset(c, 0, sizeof(*c));
}

static char *dup0(const char *s)
{
	return s ? util_xstrdup(s) : NULL;
}

/* snap_take - copy what a run needs of cfg (loop thread). */
static void snap_take(struct config *c, const struct config *cfg)
{
	snap_free(c);
	c->hostname = dup0(cfg->hostname);
	c->queue_dir = dup0(cfg->queue_dir);
	c->reports_org_name = dup0(cfg->reports_org_name);
	c->reports_email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                                      : util_xasprintf("postmaster@%s", cfg->hostname);
	c->reports_dkim_selector = dup0(cfg->reports_dkim_selector);
	c->reports_dkim_domain = dup0(cfg->reports_dkim_domain);
	c->reports_retention = cfg->reports_retention;
	c->reports_period = cfg->reports_period;
}

/* ------------------------------------------------------------ pieces */

/* reports_gzip - RFC 1952 gzip of data into out; 0/-1. */
int reports_gzip(const char *data, size_t len, struct util_buf *out)
{
	z_stream z;
	unsigned char chunk[16384];
	int rc;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
		return -1;
	z.next_in = (unsigned char *)data;
	z.avail_in = (uInt)len;
	do {
		z.next_out = chunk;
		z.avail_out = sizeof(chunk);
		rc = deflate(&z, Z_FINISH);
		if (rc == Z_STREAM_ERROR) {
			deflateEnd(&z);
			return -1;
		}
		util_buf_add(out, chunk, sizeof(chunk) - z.avail_out);
	} while (rc != Z_STREAM_END);
	deflateEnd(&z);
	return 0;
}

/* reports_rua_parse - the mailto: destinations of a DMARC record's rua tag:
 * addresses into addrs, their size limits (bytes, 0 = none) into limits
 * (same order).  Other schemes are ignored.  Returns the count. */
size_t reports_rua_parse(const char *record, struct util_strlist *addrs, uint64_t *limits,
                         size_t max)
{
	const char *p = record, *rua = NULL;

	while (p && *p) {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		if (strncasecmp(p, "rua", 3) == 0) {
			const char *q = p + 3;
			while (*q == ' ' || *q == '\t')
				q++;
			if (*q == '=') {
				rua = q + 1;
				break;
			}
		}
		p = strchr(p, ';');
	}
	if (rua == NULL)
		return 0;
	return reports_uri_parse(rua, strcspn(rua, ";"), addrs, limits, max);
}

/* reports_uri_parse - the mailto: destinations of a DMARC URI list (the
 * value of rua= or ruf=, RFC 9989 4.7 dmarc-urilist) of len bytes:
 * addresses into addrs, their size limits (bytes, 0 = none) into limits
 * (same order).  Other schemes are ignored.  Returns the count. */
size_t reports_uri_parse(const char *list_in, size_t len, struct util_strlist *addrs,
                         uint64_t *limits, size_t max)
{
	size_t n = 0;
	char *list = strndup(list_in, len), *save = NULL;
	if (list == NULL)
		return 0;
	for (char *u = strtok_r(list, ",", &save); u && n < max; u = strtok_r(NULL, ",", &save)) {
		while (*u == ' ' || *u == '\t')
			u++;
		char *e = u + strlen(u);
		while (e > u && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (strncasecmp(u, "mailto:", 7) != 0)
			continue;
		u += 7;
		uint64_t lim = 0;
		char *bang = strchr(u, '!');
		if (bang != NULL) {
			/* RFC 9990 / RFC 7489 6.2: size = 1*DIGIT [ "k" / "m" / "g" / "t" ] */
			char *unit = NULL;
			unsigned long long v = strtoull(bang + 1, &unit, 10);
			uint64_t mul = 1;
			switch (unit && *unit ? (*unit | 0x20) : 0) {
			case 'k':
				mul = 1024ULL;
				break;
			case 'm':
				mul = 1024ULL * 1024;
				break;
			case 'g':
				mul = 1024ULL * 1024 * 1024;
				break;
			case 't':
				mul = 1024ULL * 1024 * 1024 * 1024;
				break;
			default:
				break;
			}
			lim = (uint64_t)v * mul;
			*bang = '\0';
		}
		const char *at = strrchr(u, '@');
		if (at == NULL || at == u || at[1] == '\0' || strpbrk(u, " \t<>\"\r\n") != NULL)
			continue;
		util_strlist_add(addrs, u);
		limits[n++] = lim;
	}
	free(list);
	return n;
}

/* reports_same_org - dest has the policy domain's organizational domain
 * (RFC 9990 4 / RFC 9989: then no external-destination check is needed). */
bool reports_same_org(const char *policy_domain, const char *dest)
{
	char a[256], b[256];

	policy_org_domain(policy_domain, a, sizeof(a));
	policy_org_domain(dest, b, sizeof(b));
	return util_strcaseeq(a, b);
}

/* reports_b64_lines - see reports-internal.h. */
void reports_b64_lines(struct util_buf *out, const unsigned char *data, size_t len)
{
	for (size_t off = 0; off < len; off += 57) {
		unsigned char line[80];
		size_t n = len - off < 57 ? len - off : 57;
		int w = EVP_EncodeBlock(line, data + off, (int)n);
		util_buf_add(out, line, (size_t)w);
		util_buf_adds(out, "\r\n");
	}
}

/* reports_compose - the report message (RFC 9990 section 4: subject and
 * file name conventions), unsigned, CRLF.  The subject's Submitter is a
 * domain name, the report generator's (RFC 7489 7.2.1.1 dmarc-subject,
 * kept by RFC 9990): the domain of the report address from, not
 * org_name, which is free text for the XML metadata. */
char *reports_compose(const struct config *cfg, const char *from, const char *to,
                      const char *domain, const char *report_id, int64_t begin, int64_t end,
                      const struct util_buf *gz, size_t *len)
{
	struct util_buf m;
	char date[64], boundary[64];
	time_t now = time(NULL);
	struct tm tm;
	const char *org = cfg->reports_org_name ? cfg->reports_org_name : cfg->hostname;
	const char *at = strrchr(from, '@');
	const char *submitter = at != NULL && at[1] != '\0' ? at + 1 : cfg->hostname;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	snprintf(boundary, sizeof(boundary), "=_mxgate_%lld_%u", (long long)now,
	         (unsigned)(begin ^ end) & 0xffffff);
	util_buf_init(&m);
	util_buf_printf(&m, "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\n", from, to, date);
	/* "Report Domain: {domain} Submitter: {domain} Report-ID: <{id}>" */
	util_buf_printf(&m, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", domain,
	                submitter, report_id);
	util_buf_printf(&m, "Message-ID: <%s@%s>\r\n", report_id, cfg->hostname);
	util_buf_printf(&m,
	                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
	                "boundary=\"%s\"\r\n\r\n",
	                boundary);
	util_buf_printf(&m,
	                "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
	                "This is a DMARC aggregate report (RFC 9990) for %s\r\n"
	                "from %s, covering %lld to %lld (seconds since the epoch, UTC).\r\n\r\n",
	                boundary, domain, org, (long long)begin, (long long)end);
	/* RFC 9990 4.1: receiver "!" policy-domain "!" begin "!" end "!" id ".xml.gz" */
	util_buf_printf(&m,
	                "--%s\r\nContent-Type: application/gzip\r\n"
	                "Content-Transfer-Encoding: base64\r\n"
	                "Content-Disposition: attachment;\r\n"
	                " filename=\"%s!%s!%lld!%lld!%s.xml.gz\"\r\n\r\n",
	                boundary, cfg->hostname, domain, (long long)begin, (long long)end,
	                report_id);
	reports_b64_lines(&m, (const unsigned char *)gz->data, gz->len);
	util_buf_printf(&m, "--%s--\r\n", boundary);
	*len = m.len;
	return m.data;
}

/* reports_dkim_sign - a DKIM-Signature field (with CRLF) for msg, signed
 * with the PEM key as selector._domainkey.domain (rsa-sha256,
 * relaxed/relaxed, libopendkim); malloc'd, NULL on error. */
char *reports_dkim_sign(const char *key_pem, const char *selector, const char *domain,
                        const char *msg, size_t len, char *err, size_t errlen)
{
	DKIM_LIB *lib = dkim_init(NULL, NULL);
	DKIM *d = NULL;
	DKIM_STAT st;
	char *out = NULL;
	unsigned char hdr[8192];
	const char *body = NULL;

	if (lib == NULL) {
		snprintf(err, errlen, "dkim_init failed");
		return NULL;
	}
	d = dkim_sign(lib, (const unsigned char *)"mxgate-report", NULL, (dkim_sigkey_t)key_pem,
	              (const unsigned char *)selector, (const unsigned char *)domain,
	              DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
	if (d == NULL) {
		snprintf(err, errlen, "dkim_sign: %s", dkim_getresultstr(st));
		goto out;
	}
	/* header fields one by one (unfolded lines start with a non-blank) */
	const char *p = msg, *end = msg + len;
	while (p < end) {
		if (p + 1 < end && p[0] == '\r' && p[1] == '\n') {
			body = p + 2;
			break;
		}
		const char *f = p;
		do {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			p = nl ? nl + 1 : end;
		} while (p < end && (*p == ' ' || *p == '\t'));
		size_t fl = (size_t)(p - f);
		while (fl > 0 && (f[fl - 1] == '\n' || f[fl - 1] == '\r'))
			fl--;
		if (dkim_header(d, (unsigned char *)f, fl) != DKIM_STAT_OK) {
			snprintf(err, errlen, "dkim_header failed");
			goto out;
		}
	}
	if (body == NULL || dkim_eoh(d) != DKIM_STAT_OK ||
	    dkim_body(d, (unsigned char *)body, (size_t)(end - body)) != DKIM_STAT_OK ||
	    dkim_eom(d, NULL) != DKIM_STAT_OK ||
	    dkim_getsighdr(d, hdr, sizeof(hdr), strlen(DKIM_SIGNHEADER) + 2) != DKIM_STAT_OK) {
		snprintf(err, errlen, "DKIM signing failed");
		goto out;
	}
	out = util_xasprintf("%s: %s\r\n", DKIM_SIGNHEADER, (char *)hdr);
out:
	if (d != NULL)
		dkim_free(d);
	dkim_close(lib);
	return out;
}

/* reports_key_ensure - the report signing key: read key_file, or make a
 * new RSA 2048 key there (mode 0600) when it does not exist yet.  PEM
 * text, malloc'd; NULL + err. */
char *reports_key_ensure(const char *key_file, char *err, size_t errlen)
{
	FILE *f = fopen(key_file, "r");
	char *pem = NULL;

	if (f == NULL && errno == ENOENT) {
		int made = policy_key_create(key_file, 0, 2048, 0600, (gid_t)-1, NULL, err, errlen);
		if (made < 0)
			return NULL;
		if (made == 0)
			util_log_info("- reports dkim key created path=%s", key_file);
		f = fopen(key_file, "r");
	}
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", key_file, strerror(errno));
		return NULL;
	}
	struct util_buf b;
	char chunk[4096];
	size_t n;
	util_buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < 65536)
		util_buf_add(&b, chunk, n);
	fclose(f);
	if (strstr(b.data ? b.data : "", "PRIVATE KEY-----") == NULL) {
		snprintf(err, errlen, "%s: not a PEM private key", key_file);
		util_buf_free(&b);
		return NULL;
	}
	pem = b.data;
	return pem;
}

/* reports_key_path - [reports] dkim_key_file or QUEUE_DIR/reports-dkim.pem. */
char *reports_key_path(const struct config *cfg)
{
	return cfg->reports_dkim_key_file ? util_xstrdup(cfg->reports_dkim_key_file)
	                                  : util_xasprintf("%s/reports-dkim.pem", cfg->queue_dir);
}

/* reports_sign_domain - d= of report signatures: [reports] dkim_domain, or
 * the domain of the report address. */
const char *reports_sign_domain(const struct config *cfg, const char *email)
{
	const char *at = strrchr(email, '@');
	return cfg->reports_dkim_domain ? cfg->reports_dkim_domain : at ? at + 1 : cfg->hostname;
}

/* ------------------------------------------------------------ the run */

/* reports_find_dmarc - the v=DMARC1 record at name (worker thread, sync
 * DNS); malloc'd, NULL when there is none. */
char *reports_find_dmarc(struct policy_dns *dns, const char *name)
{
	struct util_strlist txt = {0};
	bool secure = false;
	char *rec = NULL;
	if (policy_dns_txt_sync(dns, name, &txt, &secure) == POLICY_DNS_OK)
		for (size_t i = 0; i < txt.n && rec == NULL; i++)
			if (strncmp(txt.v[i], "v=DMARC1", 8) == 0)
				rec = util_xstrdup(txt.v[i]);
	util_strlist_free(&txt);
	return rec;
}

/* One policy domain's report, built by the run outside any write
 * transaction, recorded afterwards in one short one (run_record). */
struct run_refusal {
	char *rcpt;
	const char *reason; /* static: unverified too_big */
	struct run_refusal *next;
};
struct run_report {
	char *domain;
	char id[25];
	int64_t begin, end; /* its period: [begin, end) */
	size_t records;
	struct reports_out *msgs; /* for the outbox */
	struct run_refusal *refused;
	struct run_report *next;
};

/* run_report_free - the whole list; NULL is a no-op. */
static void run_report_free(struct run_report *r)
{
	while (r != NULL) {
		struct run_report *n = r->next;
		while (r->refused != NULL) {
			struct run_refusal *f = r->refused;
			r->refused = f->next;
			free(f->rcpt);
			free(f);
		}
		reports_out_free(r->msgs);
		free(r->domain);
		free(r);
		r = n;
	}
}

/* run_refuse - remember that rcpt was not sent to (reason: static). */
static void run_refuse(struct run_report *r, const char *rcpt, const char *reason)
{
	struct run_refusal *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return;
	f->rcpt = util_xstrdup(rcpt);
	f->reason = reason;
	f->next = r->refused;
	r->refused = f;
}

/* run_domain - build one policy domain's report for each of its
 * destinations from agg (read before, in a read transaction): the XML,
 * gzip, the rua and _report._dmarc lookups, composition and signing - the
 * slow part of a run, which holds no write lock, so the writer thread
 * records evaluations meanwhile.  NULL when there is nothing to record
 * (no records, no mailto rua). */
static struct run_report *run_domain(struct reports_sender *snd, const char *domain,
                                     const struct reports_agg *agg, int64_t begin, int64_t end)
{
	const struct config *cfg = &snd->run_cfg;
	struct util_buf xml, gz;
	struct util_strlist dests = {0};
	uint64_t limits[8];
	char err[256] = "", *rec = NULL, *name = NULL, *email = NULL;
	struct run_report *r = NULL;

	util_buf_init(&xml);
	util_buf_init(&gz);
	if (agg->n == 0)
		goto out;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		goto out;
	r->domain = util_xstrdup(domain);
	r->records = agg->n;
	r->begin = begin;
	r->end = end;
	reports_report_id(cfg->hostname, domain, begin, end, r->id);
	email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                           : util_xasprintf("postmaster@%s", cfg->hostname);
	struct reports_meta m = {
	    .org_name = cfg->reports_org_name ? cfg->reports_org_name : cfg->hostname,
	    .email = email,
	    .report_id = r->id,
	    .generator = "mxgate " MXGATE_VERSION,
	    .begin = begin,
	    .end = end - 1,
	};
	if (reports_xml(&m, agg, &xml) < 0 || reports_gzip(xml.data, xml.len, &gz) < 0) {
		util_log_err("- reports domain=%s report_id=%s cannot build the report", domain,
		             r->id);
		run_report_free(r);
		r = NULL;
		goto out;
	}
	name = util_xasprintf("_dmarc.%s", domain);
	rec = reports_find_dmarc(snd->dns, name);
	size_t nd = rec ? reports_rua_parse(rec, &dests, limits, 8) : 0;
	if (nd == 0) {
		util_log_info("- reports domain=%s report_id=%s no mailto rua, not sent", domain,
		              r->id);
		util_metrics_inc("mxgate_reports_sent_total", "no_rua");
		run_report_free(r);
		r = NULL;
		goto out;
	}
	for (size_t i = 0; i < nd; i++) {
		const char *to = dests.v[i], *dd = strrchr(to, '@') + 1;
		size_t len = 0;
		if (!reports_same_org(domain, dd)) {
			/* RFC 9990 4 / RFC 9989: the destination must agree */
			char *vname = util_xasprintf("%s._report._dmarc.%s", domain, dd);
			char *v = reports_find_dmarc(snd->dns, vname);
			free(vname);
			if (v == NULL) {
				util_log_warn("- reports domain=%s rua=%s not verified: no "
				              "%s._report._dmarc.%s record, skipped",
				              domain, to, domain, dd);
				util_metrics_inc("mxgate_reports_sent_total", "unverified");
				run_refuse(r, to, "unverified");
				continue;
			}
			free(v);
		}
		char *msg =
		    reports_compose(cfg, email, to, domain, r->id, begin, end - 1, &gz, &len);
		char *sig = reports_dkim_sign(
		    snd->key_pem,
		    cfg->reports_dkim_selector ? cfg->reports_dkim_selector : "mxgate-reports",
		    reports_sign_domain(cfg, email), msg, len, err, sizeof(err));
		if (sig == NULL) {
			util_log_err("- reports domain=%s rua=%s not signed error=\"%s\"", domain,
			             to, err);
			free(msg);
			continue;
		}
		if (limits[i] > 0 && strlen(sig) + len > limits[i]) {
			util_log_warn(
			    "- reports domain=%s rua=%s size=%zu over the limit %llu, skipped",
			    domain, to, strlen(sig) + len, (unsigned long long)limits[i]);
			util_metrics_inc("mxgate_reports_sent_total", "too_big");
			run_refuse(r, to, "too_big");
			free(sig);
			free(msg);
			continue;
		}
		struct reports_out *o = calloc(1, sizeof(*o));
		if (o != NULL) {
			o->report_id = util_xstrdup(r->id);
			o->rcpt = util_xstrdup(to);
			o->sender = util_xstrdup(email);
			o->msg = util_xasprintf("%s%s", sig, msg);
			o->len = strlen(sig) + len;
			o->next = r->msgs;
			r->msgs = o;
			util_log_info(
			    "- reports domain=%s report_id=%s rua=%s records=%zu size=%zu", domain,
			    r->id, to, agg->n, o->len);
		}
		free(sig);
		free(msg);
	}
out:
	util_buf_free(&xml);
	util_buf_free(&gz);
	util_strlist_free(&dests);
	free(rec);
	free(name);
	free(email);
	return r;
}

/* last_end_cb - the one value of run_last_end's query. */
static int last_end_cb(void *arg, int ncol, const char *const *vals)
{
	snprintf(arg, 24, "%s", ncol > 0 && vals[0] != NULL ? vals[0] : "");
	return 0;
}

/* run_last_end - where the last recorded run ended, as text ("" for no
 * run yet) into out[24]; 0/-1 + err.  The same SQL in both dialects. */
static int run_last_end(const struct reports_backend *be, void *db, char out[24], char *err,
                        size_t errlen)
{
	out[0] = '\0';
	return be->query(db, "SELECT max(end_t) FROM report_run", 0, NULL, last_end_cb, out, err,
	                 errlen);
}

/* run_record - the write transaction of a run (short: no DNS, no
 * signing inside): each report (its id refuses a second copy) with its
 * own period, its messages (outbox) and refused destinations, and the
 * run [begin, end) that covers all of them.
 * Nothing when another run was recorded since this one read where the
 * last one ended (last_end): its reports would be sent twice.  0/-1,
 * rolled back on error. */
static int run_record(const struct reports_backend *be, void *db, struct run_report *reps,
                      const char *last_end, int64_t begin, int64_t end, char *err, size_t errlen)
{
	char now_end[24];
	size_t nrep = 0, nmsg = 0;

	if (be->tx(db, 0, err, errlen) < 0)
		return -1;
	if (run_last_end(be, db, now_end, err, errlen) < 0)
		goto fail;
	if (strcmp(now_end, last_end) != 0) {
		snprintf(err, errlen, "another run was recorded meanwhile (up to %s)", now_end);
		goto fail;
	}
	for (struct run_report *r = reps; r != NULL; r = r->next) {
		char e2[256];
		if (be->add_report(db, r->id, r->domain, r->begin, r->end, e2, sizeof(e2)) < 0) {
			util_log_warn(
			    "- reports domain=%s report_id=%s already sent or not recorded (%s)",
			    r->domain, r->id, e2);
			continue;
		}
		nrep++;
		for (struct run_refusal *f = r->refused; f != NULL; f = f->next)
			if (be->add_refused(db, r->end, r->domain, f->rcpt, f->reason, e2,
			                    sizeof(e2)) < 0)
				goto fail_e2;
		for (struct reports_out *o = r->msgs; o != NULL; o = o->next) {
			if (be->add_outbox(db, o, e2, sizeof(e2)) < 0)
				goto fail_e2;
			nmsg++;
		}
		continue;
	fail_e2:
		snprintf(err, errlen, "%s", e2);
		goto fail;
	}
	if (be->add_run(db, begin, end, err, errlen) < 0 || be->tx(db, 1, err, errlen) < 0)
		goto fail;
	util_log_info("- reports run recorded begin=%lld end=%lld reports=%zu messages=%zu",
	              (long long)begin, (long long)end, nrep, nmsg);
	return 0;
fail:;
	char e3[64];
	(void)be->tx(db, 2, e3, sizeof(e3));
	return -1;
}

/* run_main - the run thread: per period of the run (reports_run_slice),
 * read each domain's aggregate in a read transaction, build its report
 * with no transaction open, then record them all in one short write
 * transaction (the writer thread's batches never wait for DNS or
 * signing). */
static void *run_main(void *arg)
{
	struct reports_sender *snd = arg;
	const struct reports_backend *be = snd->be;
	struct util_strlist doms = {0};
	struct run_report *reps = NULL, **tail = &reps;
	char err[256] = "", last_end[24] = "";
	int64_t begin = 0, end = snd->run_end;
	void *db;

	if ((db = be->open(snd->db_target, err, sizeof(err))) == NULL) {
		util_log_err("- reports run failed error=\"%s\"", err);
		goto done;
	}
	if (snd->marking) {
		for (struct reports_out *o = snd->marks; o != NULL; o = o->next)
			if (be->mark_queued(db, o->report_id, o->rcpt, err, sizeof(err)) < 0)
				util_log_err(
				    "- reports outbox mark failed report_id=%s error=\"%s\"",
				    o->report_id, err);
		goto close;
	}
	reports_flush(snd->rs); /* what was judged before the run is in it */
	int lk = be->lock_run ? be->lock_run(db, err, sizeof(err)) : 1;
	if (lk <= 0) {
		if (lk == 0)
			util_log_info("- reports run skipped: another node holds the run lock");
		else
			util_log_err("- reports run lock failed error=\"%s\"", err);
		goto close;
	}
	if (run_last_end(be, db, last_end, err, sizeof(err)) < 0 ||
	    reports_run_begin(be, db, &snd->run_cfg, end, &begin, err, sizeof(err)) < 0 ||
	    be->domains(db, begin, end, &doms, err, sizeof(err)) < 0) {
		util_log_err("- reports run failed error=\"%s\"", err);
		goto close;
	}
	util_log_info("- reports run begin=%lld end=%lld domains=%zu", (long long)begin,
	              (long long)end, doms.n);
	/* one report per domain and period (catch-up after downtime); a
	 * period that fails fails the run: nothing is recorded, the next run
	 * covers it all again (same ids) */
	for (int64_t from = begin, sb, se; from < end; from = se) {
		struct util_strlist sd = {0};
		int k =
		    reports_run_slice(be, db, &snd->run_cfg, from, end, &sb, &se, err, sizeof(err));
		if (k > 0 && be->domains(db, sb, se, &sd, err, sizeof(err)) < 0)
			k = -1;
		if (k < 0)
			util_log_err("- reports run period failed error=\"%s\"", err);
		for (size_t i = 0; k > 0 && i < sd.n; i++) {
			struct reports_agg agg = {0};
			/* a snapshot, ended before the lookups: a read held open
			 * would keep SQLite from checkpointing the WAL meanwhile */
			int rc = be->tx(db, 3, err, sizeof(err));
			if (rc == 0)
				rc = be->aggregate(db, sd.v[i], sb, se, &agg, err, sizeof(err));
			char e2[64];
			(void)be->tx(db, rc == 0 ? 1 : 2, e2, sizeof(e2));
			if (rc < 0) {
				util_log_err("- reports domain=%s aggregate failed error=\"%s\"",
				             sd.v[i], err);
				k = -1;
				break;
			}
			struct run_report *r = run_domain(snd, sd.v[i], &agg, sb, se);
			reports_agg_clear(&agg);
			if (r != NULL) {
				*tail = r;
				tail = &r->next;
			}
		}
		util_strlist_free(&sd);
		if (k < 0)
			goto close; /* the run is not recorded */
		if (k == 0)
			break;
	}
	if (run_record(be, db, reps, last_end, begin, end, err, sizeof(err)) < 0) {
		util_log_err("- reports run not recorded error=\"%s\"", err);
	} else {
		/* retention: reported rows stay for the grace period, then go,
		 * with the reports, refusals and runs of that age and the
		 * outbox rows of queued reports (reports-internal.h: prune) */
		uint64_t pruned = 0;
		int64_t cut = end - snd->run_cfg.reports_retention; /* <= end: reported */
		if (cut > 0 && be->prune(db, cut, &pruned, err, sizeof(err)) < 0)
			util_log_err("- reports prune failed error=\"%s\"", err);
		else if (pruned > 0)
			util_log_info("- reports pruned evaluations=%llu before=%lld",
			              (unsigned long long)pruned, (long long)cut);
	}
	/* this run's messages and any an earlier process left unqueued */
	if (be->outbox_pending(db, &snd->out, err, sizeof(err)) < 0)
		util_log_err("- reports outbox read failed error=\"%s\"", err);
close:
	be->close(db);
done:
	run_report_free(reps);
	util_strlist_free(&doms);
	char c = 'x';
	while (write(snd->pipefd[1], &c, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

static void start_marking(struct reports_sender *snd);

/* inject_cb - a report is durable in the queue (or not): mark it in the
 * outbox (a failed one stays there for the next run). */
static void inject_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct reports_inject *ij = arg;
	struct reports_sender *snd = ij->snd;
	(void)cookie;
	if (snd == NULL) { /* the sender was freed meanwhile (exit) */
		free(ij->report_id);
		free(ij->rcpt);
		free(ij);
		return;
	}
	for (struct reports_inject **pp = &snd->inflight; *pp; pp = &(*pp)->next)
		if (*pp == ij) {
			*pp = ij->next;
			break;
		}
	if (status == 0) {
		util_log_info("%s reports queued report_id=%s to=<%s>", qid ? qid : "-",
		              ij->report_id, ij->rcpt);
		util_metrics_inc("mxgate_reports_sent_total", "queued");
		struct reports_out *m = calloc(1, sizeof(*m));
		if (m != NULL) {
			m->report_id = ij->report_id;
			m->rcpt = ij->rcpt;
			ij->report_id = ij->rcpt = NULL;
			m->next = snd->marks;
			snd->marks = m;
		}
	} else {
		util_log_err("- reports queue commit failed error=\"%s\"", strerror(err));
		util_metrics_inc("mxgate_reports_sent_total", "queue_error");
	}
	free(ij->report_id);
	free(ij->rcpt);
	free(ij);
	if (--snd->injecting == 0)
		start_marking(snd);
}

static void start_pending(struct reports_sender *snd);

static void arm_timer(struct reports_sender *snd);

/* done_cb - loop: the run ended; queue its messages. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reports_sender *snd = arg;
	char c[16];
	(void)what;
	while (read(fd, c, sizeof(c)) > 0)
		;
	if (!snd->running)
		return;
	pthread_join(snd->thread, NULL);
	snd->running = false;
	snd->startup = false;
	snap_free(&snd->run_cfg);
	if (snd->marking) {
		snd->marking = false;
		reports_out_free(snd->marks);
		snd->marks = NULL;
		start_marking(snd); /* marks that came meanwhile */
		start_pending(snd);
		return;
	}
	struct reports_out *list = snd->out;
	snd->out = NULL;
	while (list != NULL) {
		struct reports_out *o = list;
		list = o->next;
		struct reports_inject *ij = calloc(1, sizeof(*ij));
		if (ij == NULL) {
			o->next = NULL;
			reports_out_free(o);
			continue;
		}
		ij->snd = snd;
		ij->next = snd->inflight;
		snd->inflight = ij;
		ij->report_id = o->report_id;
		ij->rcpt = util_xstrdup(o->rcpt);
		o->report_id = NULL;
		struct queue_envelope *env = queue_envelope_new();
		env->sender = util_xstrdup(o->sender); /* the report's From: */
		queue_envelope_add_rcpt(env, o->rcpt);
		env->client_addr = util_xstrdup("127.0.0.1");
		env->helo = util_xstrdup(snd->cfg->hostname);
		env->prepend = util_xstrdup("");
		env->arrival = (int64_t)time(NULL);
		env->size = (int64_t)o->len;
		/* locally originated: the outbound route, never bounced */
		env->is_dsn = true;
		snd->injecting++;
		queue_inject(snd->qs, env, o->msg, o->len, inject_cb, 0, ij);
		o->next = NULL;
		reports_out_free(o);
	}
	start_pending(snd); /* when nothing was queued */
}

/* start_pending - a send-now that came while the sender was busy. */
static void start_pending(struct reports_sender *snd)
{
	if (snd->pending && !snd->running && snd->injecting == 0 && snd->marks == NULL) {
		snd->pending = false;
		(void)reports_send_now(snd, snd->pending_end);
	}
}

/* start_marking - loop: a thread marks the queued messages in the outbox
 * (database writes never on the loop).  Later when a run is going on. */
static void start_marking(struct reports_sender *snd)
{
	if (snd->running || snd->marks == NULL || snd->injecting > 0) {
		start_pending(snd);
		return;
	}
	snd->running = true;
	snd->marking = true;
	if (pthread_create(&snd->thread, NULL, run_main, snd) != 0) {
		snd->running = false;
		snd->marking = false;
	}
}

/* reports_sender_set_config - after a reload (loop thread). */
void reports_sender_set_config(struct reports_sender *snd, const struct config *cfg)
{
	if (snd != NULL) {
		snd->cfg = cfg;
		reports_failure_set_config(snd->failure, cfg);
	}
}

/* reports_sender_failure - see reports.h. */
struct reports_failure *reports_sender_failure(struct reports_sender *snd)
{
	return snd != NULL ? snd->failure : NULL;
}

/* reports_send_now - see reports.h. */
int reports_send_now(struct reports_sender *snd, int64_t end)
{
	if (snd == NULL)
		return -1;
	if (snd->running && !snd->marking && !snd->startup)
		return -1; /* a report run is going on */
	if (snd->running || snd->injecting > 0 || snd->marks != NULL) {
		/* queuing or marking the last run's messages: right after that */
		snd->pending = true;
		snd->pending_end = end;
		reports_store_barrier(snd->rs, end);
		return 0;
	}
	snd->run_end = end;
	snd->startup = false;
	snd->running = true;
	snap_take(&snd->run_cfg, snd->cfg);
	/* no evaluation recorded from now on may fall before end: it would be
	 * missed by this run and skipped by the next */
	reports_store_barrier(snd->rs, end);
	if (pthread_create(&snd->thread, NULL, run_main, snd) != 0) {
		snd->running = false;
		snap_free(&snd->run_cfg);
		return -1;
	}
	return 0;
}

/* timer_cb - a period ended: report it, arm the next. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reports_sender *snd = arg;
	int64_t begin, end;
	(void)fd;
	(void)what;
	/* the period that just began: the one before it ends at its begin */
	reports_period_of(snd->cfg, (int64_t)time(NULL), &begin, &end);
	if (reports_send_now(snd, begin) < 0)
		util_log_warn("- reports period run skipped: a run is in progress");
	arm_timer(snd);
}

/* arm_timer - fire just after the current period's end. */
static void arm_timer(struct reports_sender *snd)
{
	int64_t now = (int64_t)time(NULL), begin, end;
	reports_period_of(snd->cfg, now, &begin, &end);
	struct timeval tv = {(time_t)(end - now + 1), 0};
	evtimer_add(snd->timer, &tv);
}

/* reports_sender_new - see reports.h. */
struct reports_sender *reports_sender_new(struct event_base *base, const struct config *cfg,
                                          struct policy_dns *dns, struct queue_store *qs,
                                          struct reports_store *rs, char *err, size_t errlen)
{
	struct reports_sender *snd = calloc(1, sizeof(*snd));
	char *kp = NULL;

	if (snd == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snd->pipefd[0] = snd->pipefd[1] = -1;
	snd->base = base;
	snd->cfg = cfg;
	snd->dns = dns;
	snd->qs = qs;
	snd->rs = rs;
	(void)util_metrics_define("mxgate_reports_sent_total", UTIL_METRIC_COUNTER,
	                          "DMARC aggregate reports by outcome (queued, unverified, "
	                          "too_big, no_rua, queue_error)",
	                          "result", NULL, 0);
	kp = reports_key_path(cfg);
	if ((snd->key_pem = reports_key_ensure(kp, err, errlen)) == NULL)
		goto fail;
	if ((snd->db_target = reports_db_target(cfg, &snd->be, err, errlen)) == NULL)
		goto fail;
	/* [reports] failure_reports: latched here, a restart changes it */
	if (cfg->reports_failure &&
	    (snd->failure = reports_failure_new(base, cfg, dns, qs, snd->key_pem, err, errlen)) ==
	        NULL)
		goto fail;
	if (pipe2(snd->pipefd, O_CLOEXEC | O_NONBLOCK) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	snd->done_ev = event_new(base, snd->pipefd[0], EV_READ | EV_PERSIST, done_cb, snd);
	snd->timer = evtimer_new(base, timer_cb, snd);
	if (snd->done_ev == NULL || snd->timer == NULL || event_add(snd->done_ev, NULL) < 0) {
		snprintf(err, errlen, "cannot set up events");
		goto fail;
	}
	arm_timer(snd);
	/* the start-up run: every complete period not reported yet (the
	 * gateway was down over a period end), one report per period, and
	 * the reports an earlier process made but did not get into the queue */
	int64_t pb, pe;
	reports_period_of(cfg, (int64_t)time(NULL), &pb, &pe);
	snd->run_end = pb;
	snd->startup = true;
	snd->running = true;
	snap_take(&snd->run_cfg, cfg);
	if (pthread_create(&snd->thread, NULL, run_main, snd) != 0) {
		snd->running = false;
		snap_free(&snd->run_cfg);
	}
	free(kp);
	return snd;
fail:
	free(kp);
	reports_sender_free(snd);
	return NULL;
}

/* reports_sender_free - waits for a running thread; messages not yet
 * queued stay in the outbox for the next start. */
void reports_sender_free(struct reports_sender *snd)
{
	if (snd == NULL)
		return;
	if (snd->running)
		pthread_join(snd->thread, NULL);
	reports_failure_free(snd->failure);
	snap_free(&snd->run_cfg);
	reports_out_free(snd->out);
	reports_out_free(snd->marks);
	for (struct reports_inject *ij = snd->inflight; ij != NULL; ij = ij->next)
		ij->snd = NULL; /* their callbacks may still come (queue shutdown) */
	if (snd->done_ev)
		event_free(snd->done_ev);
	if (snd->timer)
		event_free(snd->timer);
	if (snd->pipefd[0] >= 0)
		close(snd->pipefd[0]);
	if (snd->pipefd[1] >= 0)
		close(snd->pipefd[1]);
	free(snd->key_pem);
	free(snd->db_target);
	free(snd);
}

/* key_give_to_run_user - `mxgate dns-records` as root made the key: it
 * belongs to the user the daemon runs as, or the daemon cannot read it. */
static void key_give_to_run_user(const struct config *cfg, const char *path)
{
	struct passwd *pw;
	struct group *gr;

	if (geteuid() != 0 || cfg->user == NULL || (pw = getpwnam(cfg->user)) == NULL)
		return;
	gid_t gid = pw->pw_gid;
	if (cfg->group != NULL && (gr = getgrnam(cfg->group)) != NULL)
		gid = gr->gr_gid;
	if (chown(path, pw->pw_uid, gid) < 0)
		util_log_warn("- reports key %s: chown to %s: %s", path, cfg->user,
		              strerror(errno));
}

/* reports_dns_record - see reports.h. */
char *reports_dns_record(const struct config *cfg, char **name, char *err, size_t errlen)
{
	char *kp = reports_key_path(cfg), *pem = NULL, *rec = NULL;
	bool existed = access(kp, F_OK) == 0;

	pem = reports_key_ensure(kp, err, errlen);
	if (pem != NULL && !existed)
		key_give_to_run_user(cfg, kp);
	char *email = cfg->reports_email ? util_xstrdup(cfg->reports_email)
	                                 : util_xasprintf("postmaster@%s", cfg->hostname);

	if (pem != NULL) {
		rec = policy_arc_key_record(kp, 0, err, errlen);
		if (rec != NULL)
			*name =
			    util_xasprintf("%s._domainkey.%s",
			                   cfg->reports_dkim_selector ? cfg->reports_dkim_selector
			                                              : "mxgate-reports",
			                   reports_sign_domain(cfg, email));
	}
	free(pem);
	free(kp);
	free(email);
	return rec;
}
