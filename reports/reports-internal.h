/*
 * reports-internal.h - what the files of reports/ share: one evaluation
 * row, and the small table of functions a database backend provides
 * (SQLite now, PostgreSQL later: the same schema and the same calls).
 *
 * Threads: a backend handle is used by one thread at a time (the writer
 * thread, or the caller of reports_open before the thread starts).
 */
#ifndef MX_REPORTS_INTERNAL_H
#define MX_REPORTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "reports-inbound.h"
#include "reports.h"
#include "util.h"

/* One DMARC evaluation, every string owned ("" = unknown, stored NULL). */
struct reports_row {
	int64_t t; /* seconds since the epoch, UTC */
	char *ip, *header_from, *envelope_from, *envelope_to;
	char *dmarc;
	char *spf_domain, *spf_result, *spf_scope;
	size_t ndkim;
	struct {
		char *domain, *selector, *result;
	} dkim[POLICY_FACTS_MAX_DKIM];
	bool dkim_aligned, spf_aligned;
	char *record_domain, *p, *sp, *np, *adkim, *aspf, *t_tag, *psd;
	int pct; /* -1 absent */
	char *discovery;
	char *disposition, *override, *override_comment;
	bool slot; /* the store's: a REPORTS_ROW_SLOT block it recycles */
};

/* reports_row_from_facts - a row owning copies of f's strings; rcpt may be
 * NULL.  Caller frees with reports_row_free(). */
struct reports_row *reports_row_from_facts(const struct policy_dmarc_facts *f, const char *rcpt,
                                           int64_t t);
void reports_row_free(struct reports_row *r);

/* The writer's batching (reports-store.c): it waits up to REPORTS_LINGER_MS
 * after the first row for more, unless half the queue (at most
 * REPORTS_BATCH_MAX rows) is waiting. */
#define REPORTS_LINGER_MS 100
#define REPORTS_BATCH_MAX 1000
/* Rows up to this size live in blocks the writer hands back to the loop
 * thread for the next rows (no malloc/free per row across threads). */
#define REPORTS_ROW_SLOT 1024

/* reports_store_push - loop thread: append r (owned from now on) to the
 * writer's queue; 0, or -1 when the queue is full (r freed, the drop
 * counted) or r is NULL (a drop counted). */
int reports_store_push(struct reports_store *rs, struct reports_row *r);
/* reports_store_set_linger - tests: the writer's linger and fill mark
 * (0: keep).  Takes effect from its next batch. */
void reports_store_set_linger(struct reports_store *rs, int linger_ms, size_t fill);
/* reports_store_lingering - tests: the writer is waiting for more rows. */
bool reports_store_lingering(struct reports_store *rs);

/* One aggregated record of a report (RFC 9990 section 3.1: rows grouped by
 * source IP, identifiers, authentication results and disposition). */
struct reports_agg_rec {
	char *ip;
	uint64_t count;
	char *disposition; /* none quarantine reject */
	bool dmarc_pass, dkim_pass, spf_pass;
	char *override, *override_comment;
	char *envelope_to, *envelope_from, *header_from;
	char *spf_domain, *spf_result, *spf_scope;
	size_t ndkim;
	struct {
		char *domain, *selector, *result;
	} dkim[POLICY_FACTS_MAX_DKIM];
};
/* One report's content: the policy published (the newest evaluation's),
 * the records, and how many evaluations the store dropped meanwhile. */
struct reports_agg {
	char *domain, *p, *sp, *np, *adkim, *aspf, *testing, *discovery;
	struct reports_agg_rec *recs;
	size_t n;
	uint64_t dropped;
};
void reports_agg_clear(struct reports_agg *a);

/* What a report says about itself. */
struct reports_meta {
	const char *org_name, *email, *report_id, *generator;
	int64_t begin, end; /* [begin, end] seconds, UTC */
};
/* reports_xml - the RFC 9990 XML document (libxml2 writer) appended to out;
 * 0/-1.  Pure. */
int reports_xml(const struct reports_meta *m, const struct reports_agg *a, struct util_buf *out);

/* One report message for one destination (the outbox). */
struct reports_out {
	char *report_id, *rcpt, *sender;
	char *msg;
	size_t len;
	struct reports_out *next;
};
void reports_out_free(struct reports_out *o); /* the whole list */

/* A database backend. */
struct reports_backend {
	const char *name;
	/* open - connect/open and run the versioned migrations; NULL + err */
	void *(*open)(const char *target, char *err, size_t errlen);
	/* insert - rows in one transaction; 0/-1 + err */
	int (*insert)(void *db, struct reports_row *const *rows, size_t n, char *err,
	              size_t errlen);
	/* add_drops - n rows dropped at time t (report metadata); 0/-1 */
	int (*add_drops)(void *db, int64_t t, uint64_t n, char *err, size_t errlen);
	/* domains - the policy domains with evaluations in [begin, end), sorted */
	int (*domains)(void *db, int64_t begin, int64_t end, struct util_strlist *out, char *err,
	               size_t errlen);
	/* aggregate - the report content of domain for [begin, end); 0/-1 */
	int (*aggregate)(void *db, const char *domain, int64_t begin, int64_t end,
	                 struct reports_agg *out, char *err, size_t errlen);
	/* run_begin - where the next run starts: the end of the last run, or
	 * the oldest evaluation's time (0 when the store is empty) */
	int (*run_begin)(void *db, int64_t *begin, char *err, size_t errlen);
	/* add_run - a run covered [begin, end) */
	int (*add_run)(void *db, int64_t begin, int64_t end, char *err, size_t errlen);
	/* add_report - remember a report; -1 when report_id exists already */
	int (*add_report)(void *db, const char *report_id, const char *domain, int64_t begin,
	                  int64_t end, char *err, size_t errlen);
	/* prune - delete evaluations (and their DKIM rows), drop counts,
	 * reports and refused destinations older than before, the runs that
	 * ended before it but the newest (where the next run begins: no
	 * period is reported twice), and the outbox rows of queued reports
	 * whose report row is gone (a queued row keeps only its id and state:
	 * mark_queued empties its message); *n = evaluations deleted */
	int (*prune)(void *db, int64_t before, uint64_t *n, char *err, size_t errlen);
	/* status - a text summary for `mxgate reports status`, appended */
	int (*status)(void *db, struct util_buf *out, char *err, size_t errlen);
	/* tx - 0 begin (a write transaction), 1 commit, 2 roll back, 3 begin
	 * a read snapshot (never blocks the writer thread) */
	int (*tx)(void *db, int what, char *err, size_t errlen);
	/* add_outbox - a finished report message, not yet queued */
	int (*add_outbox)(void *db, const struct reports_out *o, char *err, size_t errlen);
	/* outbox_pending - every message not yet marked queued, prepended to
	 * *list (caller frees with reports_out_free) */
	int (*outbox_pending)(void *db, struct reports_out **list, char *err, size_t errlen);
	/* add_refused - a destination not sent to (reason: unverified, too_big) */
	int (*add_refused)(void *db, int64_t t, const char *domain, const char *rcpt,
	                   const char *reason, char *err, size_t errlen);
	/* mark_queued - the message is durable in mxgate's queue: marked,
	 * its text deleted */
	int (*mark_queued)(void *db, const char *report_id, const char *rcpt, char *err,
	                   size_t errlen);
	/* lock_run - fleet: 1 when this node may run the reports now (the lock
	 * is held until close), 0 when another node holds it, -1 on error;
	 * NULL: a single node, always 1 */
	int (*lock_run)(void *db, char *err, size_t errlen);
	/* prune_inbound - received reports (and their rows) received before
	 * before, refused parts (with their raw message) before
	 * refused_before; *n = reports deleted; approvals and looks stay */
	int (*prune_inbound)(void *db, int64_t before, int64_t refused_before, uint64_t *n,
	                     char *err, size_t errlen);
	/* add_inbound - the reports of one received message (issue 15) and
	 * its refused parts (raw kept); reports already stored are counted in
	 * *dups and skipped; NULL: not supported by this backend */
	int (*add_inbound)(void *db, const struct reports_inbound *in, int64_t t, const char *rcpt,
	                   const char *qid, const char *raw, size_t rawlen, int *dups, char *err,
	                   size_t errlen);
	/* query - one statement of the dashboard (reports-dash.c, which holds
	 * the SQL of each backend's dialect) with n text parameters (NULL =
	 * SQL NULL); cb, when not NULL, gets each row's values as text (NULL
	 * for NULL; borrowed for the call) and stops the walk by returning
	 * -1.  0/-1 + err */
	int (*query)(void *db, const char *sql, int n, const char *const *params,
	             int (*cb)(void *arg, int ncol, const char *const *vals), void *arg,
	             char *err, size_t errlen);
	/* schema_version - the migrated version, -1 on error */
	int (*schema_version)(void *db);
	/* broken - after a failed call: the connection is lost (the server
	 * went away) and must be opened again; NULL: never (a file) */
	bool (*broken)(void *db);
	void (*close)(void *db);
};

/* A connection to the store that survives the store being down (issue 14:
 * mail is never refused, the gateway never stopped, because of the store):
 * reports_conn_get opens it when it is due, with a backoff of
 * REPORTS_RETRY_MIN doubling to REPORTS_RETRY_MAX seconds between tries;
 * reports_conn_failed after a failed call drops a lost connection (the
 * next get opens a new one).  The operator's file is never touched: a
 * broken SQLite file is only opened again.  One thread at a time. */
#define REPORTS_RETRY_MIN 1
#define REPORTS_RETRY_MAX 30
struct reports_conn {
	const struct reports_backend *be;
	char *target;
	const char *who;   /* the log lines' "reports <who>" */
	void *db;          /* NULL: down */
	int64_t next_try;  /* monotonic ms of the next open */
	int backoff;       /* seconds */
	bool was_down;     /* the last try failed (logged) */
	char last_err[256];
	int64_t last_log;  /* monotonic ms of the last "unavailable" line */
};
/* reports_conn_init - takes target (malloc'd); nothing is opened yet. */
void reports_conn_init(struct reports_conn *c, const struct reports_backend *be, char *target,
                       const char *who);
/* reports_conn_get - the open handle, or NULL while the store is down
 * (err then says why; a try is made when one is due). */
void *reports_conn_get(struct reports_conn *c, char *err, size_t errlen);
/* reports_conn_failed - a call on the handle failed: a lost connection
 * is closed and the store counts as down from now on. */
void reports_conn_failed(struct reports_conn *c);
/* reports_conn_wait_ms - ms until the next try (0 when up or due). */
int64_t reports_conn_wait_ms(const struct reports_conn *c);
void reports_conn_close(struct reports_conn *c);
extern const struct reports_backend reports_sqlite_backend;

/* reports_schema_version - the version the migrations reach. */
#define REPORTS_SCHEMA_VERSION 6

/* reports_db_target - the database of the config: *be gets the backend
 * (SQLite for "sqlite" / "sqlite:PATH", PostgreSQL for "postgresql://..."
 * / "postgres://..."), the result is the file or connection string; caller
 * frees; NULL + err for a database this build cannot open. */
char *reports_db_target(const struct config *cfg, const struct reports_backend **be, char *err,
                        size_t errlen);
extern const struct reports_backend reports_pg_backend;

/* What a run covers (reports-report.c; the run and the preview).
 * reports_run_begin - where a run ending at end starts: the end of the
 * last run; before any, the start of the oldest evaluation's period (end
 * when there is none); never before the look-back (retention, at least a
 * period, at most REPORTS_LOOKBACK_MAX), never after end.  0/-1 + err. */
#define REPORTS_LOOKBACK_MAX (31 * 86400)
int reports_run_begin(const struct reports_backend *be, void *db, const struct config *cfg,
                      int64_t end, int64_t *begin, char *err, size_t errlen);
/* reports_run_slice - the next report period of a run from from to end:
 * [*sb, *se), the period of the next evaluation at or after from (cut to
 * [from, end)); periods without evaluations are skipped.  1, 0 when none
 * is left, -1 + err. */
int reports_run_slice(const struct reports_backend *be, void *db, const struct config *cfg,
                      int64_t from, int64_t end, int64_t *sb, int64_t *se, char *err,
                      size_t errlen);
/* reports_report_id - RFC 9990 unique-id (1*(ALPHA / DIGIT)): 24 hex
 * digits of SHA-256(hostname, domain, begin, end), the same for the same
 * report, so the report table's key makes a run idempotent. */
void reports_report_id(const char *hostname, const char *domain, int64_t begin, int64_t end,
                       char out[25]);

/* reports_dash_ready - the readiness line of one domain's sender inventory
 * (reports-dash.c; pure, for the unit tests): messages from approved
 * sources and how many pass DMARC, from the others and how many fail. */
void reports_dash_ready(uint64_t approved, uint64_t approved_pass, uint64_t other,
                        uint64_t other_fail, char *out, size_t outlen);

/* reports_b64_lines - base64 of data appended to out in 76-column CRLF
 * lines (RFC 2045 6.8), for the attachments of both kinds of report. */
void reports_b64_lines(struct util_buf *out, const unsigned char *data, size_t len);
/* report pieces (reports-send.c), exposed for the unit tests */
int reports_gzip(const char *data, size_t len, struct util_buf *out);
size_t reports_rua_parse(const char *record, struct util_strlist *addrs, uint64_t *limits,
                         size_t max);
size_t reports_uri_parse(const char *list, size_t len, struct util_strlist *addrs,
                         uint64_t *limits, size_t max);
struct policy_dns;
char *reports_find_dmarc(struct policy_dns *dns, const char *name);
bool reports_same_org(const char *policy_domain, const char *dest);
char *reports_compose(const struct config *cfg, const char *from, const char *to,
                      const char *domain, const char *report_id, int64_t begin, int64_t end,
                      const struct util_buf *gz, size_t *len);
char *reports_dkim_sign(const char *key_pem, const char *selector, const char *domain,
                        const char *msg, size_t len, char *err, size_t errlen);
char *reports_key_ensure(const char *key_file, char *err, size_t errlen);
char *reports_key_path(const struct config *cfg);
const char *reports_sign_domain(const struct config *cfg, const char *email);

/* ------------------------------------------------------------ failure
 * reports (RFC 9991): the builder (reports-failure-build.c, pure) and the
 * sender (reports-failure.c) */

#define REPORTS_FAILURE_MAX_RCPTS 10 /* Original-Rcpt-To fields per report */
/* What one failure report needs of a message, copied on the loop thread
 * (every string owned). */
struct reports_failure_job {
	char *header_from, *record_domain, *mail_from; /* mail_from: "user@domain" */
	char ip[46];
	char *ar;          /* mxgate's Authentication-Results value, or NULL */
	char *hdrs;        /* the original header block (CRLF), at most 64 KiB */
	size_t hlen;
	struct util_strlist rcpts;
	struct util_strlist dests; /* verified on the worker */
	uint64_t limits[8];        /* their ! size limits, 0 = none */
	bool dkim_aligned, spf_aligned;
	char *dkim_domain, *dkim_selector; /* an aligned signature that failed, or NULL */
	char *spf_domain;          /* the SPF identity's domain when it is aligned and
	                              did not pass (RFC 9991 4: SPF-DNS), or NULL */
	struct util_strlist spf_dns; /* its SPF records (the worker looks them up) */
	const char *delivery;      /* static: delivered spam reject */
	int64_t arrival;
	bool redact_all;           /* failure_report_redact = addresses */
	struct reports_failure_job *next;
};
void reports_failure_job_free(struct reports_failure_job *j);

#define REPORTS_REDACT_LEN 12
/* reports_failure_skip - NULL when f asks for a failure report (DMARC
 * fail, a ruf, not psd=y, fo satisfied), else why not (static word). */
const char *reports_failure_skip(const struct policy_dmarc_facts *f);
/* reports_failure_is_report - a report or an auto-submitted message. */
bool reports_failure_is_report(const char *hdrs, size_t len);
/* reports_redact_local - the keyed-hash token for a local part. */
void reports_redact_local(const unsigned char key[32], const char *local, size_t n,
                          char out[REPORTS_REDACT_LEN + 1]);
/* reports_failure_redact_headers - the header block hdrs redacted: Bcc
 * dropped; recipient fields (and sender fields when all) rebuilt as
 * redacted addresses; in the other fields the local parts of recipient
 * addresses (envelope rcpts, may be NULL, and those of the recipient
 * fields; every address when all, every one in Received) replaced.
 * Caller frees; *outlen its length. */
char *reports_failure_redact_headers(const char *hdrs, size_t len, const unsigned char key[32],
                                     bool all, const struct util_strlist *rcpts, size_t *outlen);
/* reports_failure_compose - the report message for destination to,
 * unsigned, CRLF; caller frees. */
char *reports_failure_compose(const struct reports_failure_job *j, const char *from,
                              const char *to, const char *hostname,
                              const unsigned char key[32], bool all, size_t *len);
/* The per destination domain hourly rate limit (RFC 9991 2), a fixed
 * table of slots (loop thread). */
struct reports_failure_rate {
	char domain[256];
	int64_t hour; /* the window: time / 3600 */
	int64_t last; /* the latest report to it (the slot to reuse: the oldest) */
	int count;
	bool logged; /* the suppression of this window was logged */
};
/* reports_failure_rate_take - one report to dest's domain at now, if
 * limit a window allows (true); false when it does not (*first set when
 * this is the window's first refusal, to log once).  A domain without a
 * slot takes a free one, or one from a past window, or the one used
 * least recently: filling the table never refuses every other domain. */
bool reports_failure_rate_take(struct reports_failure_rate *slots, size_t nslots,
                               const char *dest, int64_t now, int limit, bool *first);

/* reports_failure_new - the failure sender (worker thread; key_pem
 * copied); NULL + err.  reports_failure_free: NULL is a no-op. */
struct reports_failure *reports_failure_new(struct event_base *base, const struct config *cfg,
                                            struct policy_dns *dns, struct queue_store *qs,
                                            const char *key_pem, char *err, size_t errlen);
void reports_failure_free(struct reports_failure *fr);
void reports_failure_set_config(struct reports_failure *fr, const struct config *cfg);

#endif
