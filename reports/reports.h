/*
 * reports.h - the DMARC report store (issue 14, RFC 9990): every DMARC
 * evaluation is recorded - reject, quarantine and accept alike - with what
 * an aggregate report needs, so reports can be built per period later.
 *
 * Layering: util <- config, policy, queue <- reports <- smtp <- gateway.
 * reports/ reads the policy facts (policy_msg_dmarc_facts); nothing below
 * it includes this header.  smtp/ calls reports_record() once per verdict.
 *
 * Threads: reports_record() runs on the loop thread and never waits: it
 * copies the facts into a row and puts it on a bounded queue that one
 * writer thread drains into the database in batches (it lingers up to
 * REPORTS_LINGER_MS for a batch to fill; reports_flush and reports_close
 * cut that short, a crash loses what is still queued).  When the queue is
 * full the row is dropped and counted (mxgate_reports_dropped_total, and a
 * row of the drops table so the report's metadata can say so).  A failed
 * write (disk full, locked) drops the batch and counts it the same way
 * (and in mxgate_reports_write_errors_total); mail is never refused
 * because of the store.
 *
 * A store that cannot be opened (a broken file, the server down) does not
 * fail reports_open: the writer tries it again with a backoff meanwhile
 * (mxgate_reports_store_up 0, the rows counted as not recorded).
 *
 * Ownership: reports_open() returns a store the caller frees with
 * reports_close() (NULL is a no-op), which writes what is queued first.
 * cfg and pm are borrowed.
 */
#ifndef MX_REPORTS_H
#define MX_REPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "queue.h"
#include "util.h"

struct reports_store;

/* reports_open - the database named by [reports] database (default: SQLite
 * at QUEUE_DIR/reports.db, WAL mode), migrated to the current schema, and
 * the writer thread.  NULL + message in err for a database this build
 * cannot open (config) or no memory; a store that is down is not one. */
struct reports_store *reports_open(const struct config *cfg, char *err, size_t errlen);
void reports_close(struct reports_store *rs);

/* reports_record - one DMARC evaluation of pm (after the verdict) with the
 * disposition actually applied; rcpt: the first recipient (its domain is
 * the envelope_to), may be NULL.  Nothing is recorded when DMARC did not
 * evaluate a single From: domain.  0 queued, 1 nothing to record, -1
 * dropped (queue full). */
int reports_record(struct reports_store *rs, const struct policy_msg *pm, const char *rcpt);

/* reports_flush - wait until every queued row is written (tests, exit,
 * before a report run).  Not on the loop thread in normal operation. */
void reports_flush(struct reports_store *rs);

/* reports_store_barrier - loop thread: rows recorded from now on get a
 * time of at least t (a report run covering [.., t) has started). */
void reports_store_barrier(struct reports_store *rs, int64_t t);

/* reports_stats - rows written, rows dropped since start. */
void reports_stats(const struct reports_store *rs, uint64_t *written, uint64_t *dropped);

/* reports_preview - the RFC 9990 XML that domain (a policy domain) would
 * be sent if the period ended now (a run ending at now + 1, as send-now:
 * from the last run's end, or the start of now's period when that is
 * later; the run's report_id), appended to out.  Opens the store
 * itself (safe beside a running daemon: WAL).  0; 1 when nothing was
 * recorded for domain in the period; -1 + err. */
int reports_preview(const struct config *cfg, const char *domain, int64_t now, struct util_buf *out,
                    char *err, size_t errlen);
/* reports_status - `mxgate reports status`: the store, where the last run
 * ended, evaluations pending per policy domain, the last report per
 * domain, drops since the last run; appended to out.  0/-1 + err. */
int reports_status(const struct config *cfg, struct util_buf *out, char *err, size_t errlen);
/* reports_period_of - the reporting period containing t: [*begin, *end). */
void reports_period_of(const struct config *cfg, int64_t t, int64_t *begin, int64_t *end);

/* The report sender (reports-send.c): a run per period end (timer), at
 * start-up (the complete periods not reported yet) or on demand; each run
 * reports every policy domain's evaluations since the previous run, one
 * report per period, to its verified mailto: rua destinations, DKIM-signed,
 * through queue_inject (local origin: the outbound route).  Makes the
 * signing key ([reports] dkim_key_file) when it does not exist.  All
 * pointers borrowed.  Loop thread. */
struct reports_sender;
struct queue_store;
struct reports_sender *reports_sender_new(struct event_base *base, const struct config *cfg,
                                          struct policy_dns *dns, struct queue_store *qs,
                                          struct reports_store *rs, char *err, size_t errlen);
void reports_sender_free(struct reports_sender *snd);
/* reports_sender_set_config - the config after a reload (borrowed). */
void reports_sender_set_config(struct reports_sender *snd, const struct config *cfg);
/* reports_send_now - start a run covering evaluations up to end (exclusive);
 * -1 when one is running. */
int reports_send_now(struct reports_sender *snd, int64_t end);
/* Failure reports (RFC 9991, reports-failure.c), with [reports]
 * failure_reports = yes: the sender's failure reporter, or NULL. */
struct reports_failure;
struct reports_failure *reports_sender_failure(struct reports_sender *snd);
/* reports_failure_submit - loop thread, never waits: after the verdict of
 * pm, when its DMARC result asks for a failure report, copy what the
 * report needs - verdict_headers (mxgate's Authentication-Results among
 * them), the original header block hdrs[0..hlen), the reverse-path
 * mail_from ("" = null) and the recipients - for the worker, one report
 * per ruf destination the per-domain rate limit allows.  All borrowed.
 * 0 queued, 1 nothing to report, -1 suppressed (rate limit) or dropped
 * (queue full); both counted. */
int reports_failure_submit(struct reports_failure *fr, const struct policy_msg *pm,
                           const char *verdict_headers, const char *hdrs, size_t hlen,
                           const char *mail_from, const struct util_strlist *rcpts);
/* reports_dns_record - "selector._domainkey.domain" and the TXT text of the
 * report signing key (made if missing); malloc'd, NULL + err. */
char *reports_dns_record(const struct config *cfg, char **name, char *err, size_t errlen);

/* Reports mailed to our report addresses (issue 15, reports-ingest.c):
 * one worker thread parses and stores them.  reports_ingest_new opens its
 * own connection to the store (cfg borrowed for the call); NULL + err. */
struct reports_ingest;
struct reports_ingest *reports_ingest_new(const struct config *cfg, char *err, size_t errlen);
void reports_ingest_free(struct reports_ingest *ri); /* parses what is queued first */
/* reports_ingest_match - rcpt (with or without <>) is a report address:
 * [reports] ingest_addresses, or by default the [mta_sts] dmarc_rua and
 * tlsrpt_rua addresses (dmarc-reports@ / tlsrpt@ each accepted domain). */
bool reports_ingest_match(const struct config *cfg, const char *rcpt);
/* reports_ingest_submit - loop thread, never waits: pin (the pinned read
 * descriptor of the spool file, queue_spool_pin; takes ownership) is
 * copied and parsed by the worker.  The pin keeps the queue from recycling
 * the file for another message before the worker has read it, however
 * long the backlog.  0 queued, -1 dropped (queue full, counted). */
int reports_ingest_submit(struct reports_ingest *ri, struct queue_pin *pin, const char *rcpt,
                          const char *qid);
/* reports_ingest_flush - wait until every queued message is stored. */
void reports_ingest_flush(struct reports_ingest *ri);
/* The dashboard's reverse-DNS column: fn fills names[i] (a new string, or
 * NULL for none) for the source addresses ips[i]; called on the thread
 * that asked for the view.  NULL or fn NULL: no names (rdns is null). */
struct reports_dash_rdns {
	void (*fn)(void *arg, const char *const *ips, size_t n, char **names);
	void *arg;
};
#define REPORTS_DASH_RDNS_MAX 500 /* distinct addresses named per view, by volume */
/* reports_dash_json - the dashboard's view what of the last days, a JSON
 * array appended to out (reports-dash.c): "sources" (per domain and source
 * IP: reporting orgs, messages, DMARC/SPF/DKIM pass, approved, first_seen,
 * new, rdns - the forward-confirmed reverse name from rdns, or null), "daily" (messages and DMARC passes per domain and day),
 * "inventory" (per domain: approved/other volumes, new sources, the last
 * look, the readiness line), "tlsrpt", "verdicts" (mxgate's own
 * rejections/quarantines/overrides).  Opens the store of [reports]
 * database (SQLite or PostgreSQL): not on the SMTP loop.  0/-1 + err. */
int reports_dash_json(const struct config *cfg, const char *what, int days,
                      const struct reports_dash_rdns *rdns, struct util_buf *out, char *err,
                      size_t errlen);
/* reports_dash_approve - the dashboard marks (or unmarks) the source ip of
 * domain approved (sender inventory).  0/-1 + err. */
int reports_dash_approve(const struct config *cfg, const char *domain, const char *ip,
                         bool approved, char *err, size_t errlen);
/* reports_dash_seen - "mark as seen": the sources of domain first reported
 * up to until (seconds; clamped to now, never moving back) are no longer
 * new.  0/-1 + err. */
int reports_dash_seen(const struct config *cfg, const char *domain, int64_t until, char *err,
                      size_t errlen);
/* reports_inbound_summary - `mxgate reports inbound`: the dashboard's
 * views as text (domain NULL = all), appended to out; 0/-1 + err. */
int reports_inbound_summary(const struct config *cfg, const char *domain, int days,
                            const struct reports_dash_rdns *rdns, struct util_buf *out,
                            char *err, size_t errlen);

#endif
