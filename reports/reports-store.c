/*
 * reports-store.c - recording DMARC evaluations without blocking the loop:
 * reports_record() copies the facts into a row and appends it to a bounded
 * queue; one writer thread takes everything queued and writes it in one
 * transaction through the backend (reports-sqlite.c, reports-pg.c).
 *
 * Batching (what recording costs per message): the loop thread wakes the
 * writer only when the queue goes from empty to non-empty or reaches the
 * fill mark (half the queue, at most REPORTS_BATCH_MAX rows); the writer,
 * once woken, lingers up to REPORTS_LINGER_MS for more rows before it
 * writes them all in one transaction.  So a busy gateway pays one futex
 * wake, one transaction and one WAL append per batch of tens of rows, not
 * per message.  reports_flush() and reports_close() cut the linger short.
 * A crash (not a clean stop, which writes what is queued) loses at most
 * what was queued: the rows of the last linger window, or a fill mark.
 *
 * Why a thread and not the policy pool: a database write may wait on the
 * disk (fsync of the WAL at checkpoints) and must never hold up a verdict.
 * Why bounded: under a flood the rows are statistics, the mail is not; a
 * full queue drops the row and counts it (metric + the dropped table, so
 * the report can say how many evaluations it is missing).  A batch the
 * writer cannot write (disk full, the file locked beyond the busy timeout)
 * is counted the same way: every evaluation lost for any reason reaches
 * the dropped table, with a time no earlier than the last run's end (the
 * run barrier), so the next report's metadata says so.  When even that
 * write fails the count stays pending and is retried every
 * REPORTS_RETRY_MS (and once more at close).
 *
 * A store that is down (a broken file, the server unreachable, a lost
 * PostgreSQL connection) never stops the gateway: the writer's connection
 * (reports_conn) is tried again with a backoff of REPORTS_RETRY_MIN
 * doubling to REPORTS_RETRY_MAX seconds, mxgate_reports_store_up says 0
 * meanwhile, rows are taken as they come and counted as lost, and their
 * count reaches the dropped table once the store is back.  A flush does
 * not wait for a store that is down.
 *
 * Ownership: the queue owns its rows; the writer frees them after the
 * write, or puts their blocks (REPORTS_ROW_SLOT bytes, most rows) on the
 * spare list the loop thread takes its next rows from: in steady state no
 * row is malloc'd on one thread and freed on another (glibc's arenas made
 * that cost more than the rest of recording).  The store owns the backend
 * handle and the spare blocks.
 * Diagnostics: "- reports ..." log lines; write errors are logged at most
 * once a minute and counted in mxgate_reports_write_errors_total (and, as
 * every lost evaluation, in mxgate_reports_dropped_total).
 */
#include "reports-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

struct reports_store {
	const struct reports_backend *be;
	struct reports_conn conn; /* the writer's; down: rows are not recorded */
	bool up;                  /* conn has a handle (under lock, for flush) */
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t wake;    /* rows queued (empty -> not, fill mark), flush, stop */
	pthread_cond_t idle;    /* the writer finished a batch */
	struct reports_row **q; /* ring of qmax rows */
	size_t qmax, qhead, qlen;
	size_t fill;            /* qlen that ends the linger at once */
	int linger_ms;          /* how long the writer waits for a batch to fill */
	unsigned flushing;      /* threads in reports_flush: no linger */
	bool lingering;         /* the writer waits in linger() (tests) */
	void *spare;            /* REPORTS_ROW_SLOT blocks written, for new rows */
	size_t nspare, spare_max;
	struct reports_row **batch; /* the writer's: the rows it took (qmax) */
	bool busy;              /* the writer is writing a batch or drop count */
	uint64_t drops_pending; /* dropped, not yet in the dropped table */
	bool drops_retry;       /* writing them failed: retried later, flush does not wait */
	int64_t drops_min_t;    /* the run barrier (min_t), for the drops' time */
	uint64_t written, dropped;
	bool stop;
	time_t last_err_log;
	int64_t min_t; /* loop thread: rows get t >= min_t (run barrier) */
};

/* A row and its strings are one allocation: the loop thread makes it with
 * one malloc, the writer frees it with one free (per-field strdup/free was
 * ~25 allocations a message, freed on another thread's arena). */
struct row_pack {
	char *next, *end;
};

/* pack - a copy of s in the row's block; NULL/"" stay NULL. */
static char *pack(struct row_pack *pk, const char *s)
{
	if (s == NULL || s[0] == '\0')
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = pk->next;
	memcpy(d, s, n);
	pk->next += n;
	return d;
}

/* packlen - what pack(s) takes. */
static size_t packlen(const char *s)
{
	return s != NULL && s[0] != '\0' ? strlen(s) + 1 : 0;
}

/* row_size - the bytes of f's row with its strings. */
static size_t row_size(const struct policy_dmarc_facts *f, const char *rcpt)
{
	const char *at = rcpt ? strrchr(rcpt, '@') : NULL;
	const char *disp = f->disposition ? f->disposition : "none";
	const char *const strs[] = {f->ip,        f->header_from, f->envelope_from,
	                            f->dmarc,     f->spf_domain,  f->spf_result,
	                            f->spf_scope, f->record_domain, f->p,
	                            f->sp,        f->np,          f->adkim,
	                            f->aspf,      f->t,           f->psd,
	                            f->discovery, disp,           f->override,
	                            f->override_comment};
	size_t len = sizeof(struct reports_row) + (at != NULL ? strlen(at + 1) + 1 : 0);
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		len += packlen(strs[i]);
	for (size_t i = 0; i < f->ndkim; i++)
		len += packlen(f->dkim[i].domain) + packlen(f->dkim[i].selector) +
		       packlen(f->dkim[i].result);
	return len;
}

/* row_fill - f's row in the len bytes at r (len from row_size). */
static struct reports_row *row_fill(struct reports_row *r, size_t len,
                                    const struct policy_dmarc_facts *f, const char *rcpt,
                                    int64_t t)
{
	const char *at = rcpt ? strrchr(rcpt, '@') : NULL;
	const char *disp = f->disposition ? f->disposition : "none";

	memset(r, 0, sizeof(*r));
	struct row_pack pk = {(char *)(r + 1), (char *)r + len};
	r->t = t;
	r->ip = pack(&pk, f->ip);
	r->header_from = pack(&pk, f->header_from);
	r->envelope_from = pack(&pk, f->envelope_from);
	if (at != NULL) {
		/* the envelope_to domain, lower-case, without a closing '>' */
		r->envelope_to = pk.next;
		size_t k = 0;
		for (const char *p = at + 1; *p != '\0' && *p != '>'; p++)
			r->envelope_to[k++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
		r->envelope_to[k] = '\0';
		pk.next += strlen(at + 1) + 1;
	}
	r->dmarc = pack(&pk, f->dmarc);
	r->spf_domain = pack(&pk, f->spf_domain);
	r->spf_result = pack(&pk, f->spf_result);
	r->spf_scope = pack(&pk, f->spf_scope);
	r->ndkim = f->ndkim;
	for (size_t i = 0; i < f->ndkim; i++) {
		r->dkim[i].domain = pack(&pk, f->dkim[i].domain);
		r->dkim[i].selector = pack(&pk, f->dkim[i].selector);
		r->dkim[i].result = pack(&pk, f->dkim[i].result);
	}
	r->dkim_aligned = f->dkim_aligned;
	r->spf_aligned = f->spf_aligned;
	r->record_domain = pack(&pk, f->record_domain);
	r->p = pack(&pk, f->p);
	r->sp = pack(&pk, f->sp);
	r->np = pack(&pk, f->np);
	r->adkim = pack(&pk, f->adkim);
	r->aspf = pack(&pk, f->aspf);
	r->t_tag = pack(&pk, f->t);
	r->psd = pack(&pk, f->psd);
	r->pct = f->pct;
	r->discovery = pack(&pk, f->discovery);
	r->disposition = pack(&pk, disp);
	r->override = pack(&pk, f->override);
	r->override_comment = pack(&pk, f->override_comment);
	if (pk.next > pk.end) /* cannot happen: row_size makes the same calls */
		abort();
	return r;
}

/* reports_row_from_facts - see reports-internal.h. */
struct reports_row *reports_row_from_facts(const struct policy_dmarc_facts *f, const char *rcpt,
                                           int64_t t)
{
	size_t len = row_size(f, rcpt);
	struct reports_row *r = malloc(len);

	return r != NULL ? row_fill(r, len, f, rcpt, t) : NULL;
}

/* reports_row_free - NULL is a no-op; the strings are in the same block. */
void reports_row_free(struct reports_row *r)
{
	free(r);
}

/* ------------------------------------------------------------ the
 * connection that comes back */

/* reports_conn_init - see reports-internal.h. */
void reports_conn_init(struct reports_conn *c, const struct reports_backend *be, char *target,
                       const char *who)
{
	memset(c, 0, sizeof(*c));
	c->be = be;
	c->target = target;
	c->who = who;
	c->backoff = REPORTS_RETRY_MIN;
}

/* reports_conn_get - see reports-internal.h. */
void *reports_conn_get(struct reports_conn *c, char *err, size_t errlen)
{
	if (c->db != NULL)
		return c->db;
	int64_t now = util_mono_ms();
	if (c->next_try != 0 && now < c->next_try) {
		snprintf(err, errlen, "store unavailable: %s", c->last_err);
		return NULL;
	}
	char e[256] = "";
	if ((c->db = c->be->open(c->target, e, sizeof(e))) != NULL) {
		if (c->was_down)
			util_log_info("- reports %s store available again store=%s", c->who,
			              c->be->name);
		c->was_down = false;
		c->backoff = REPORTS_RETRY_MIN;
		c->next_try = 0;
		return c->db;
	}
	/* logged at the first failure, when the error changes, and then every
	 * ten minutes: a store down for a day is not 3000 log lines */
	if (!c->was_down || strcmp(e, c->last_err) != 0 || now - c->last_log >= 600 * 1000) {
		util_log_err("- reports %s store unavailable store=%s error=\"%s\" (not "
		             "recorded meanwhile; retrying, mail is not affected)",
		             c->who, c->be->name, e);
		c->last_log = now;
	}
	snprintf(c->last_err, sizeof(c->last_err), "%s", e);
	c->was_down = true;
	c->next_try = now + (int64_t)c->backoff * 1000;
	c->backoff = c->backoff * 2 > REPORTS_RETRY_MAX ? REPORTS_RETRY_MAX : c->backoff * 2;
	snprintf(err, errlen, "store unavailable: %s", e);
	return NULL;
}

/* reports_conn_failed - see reports-internal.h. */
void reports_conn_failed(struct reports_conn *c)
{
	if (c->db == NULL || c->be->broken == NULL || !c->be->broken(c->db))
		return;
	c->be->close(c->db);
	c->db = NULL;
	c->was_down = true;
	c->last_log = util_mono_ms();
	snprintf(c->last_err, sizeof(c->last_err), "connection lost");
	util_log_err("- reports %s store connection lost store=%s (reconnecting)", c->who,
	             c->be->name);
	c->backoff = REPORTS_RETRY_MIN;
	c->next_try = 0; /* at once: a server restart is the common case */
}

/* reports_conn_wait_ms - see reports-internal.h. */
int64_t reports_conn_wait_ms(const struct reports_conn *c)
{
	if (c->db != NULL || c->next_try == 0)
		return 0;
	int64_t d = c->next_try - util_mono_ms();
	return d > 0 ? d : 0;
}

/* reports_conn_close - closes the handle, frees the target. */
void reports_conn_close(struct reports_conn *c)
{
	if (c->db != NULL)
		c->be->close(c->db);
	c->db = NULL;
	free(c->target);
	c->target = NULL;
}

/* ------------------------------------------------------------ the writer */

/* store_connect - writer, lock not held: the handle, opened when due; the
 * gauge follows.  NULL while down. */
static void *store_connect(struct reports_store *rs, char *err, size_t errlen)
{
	void *db = reports_conn_get(&rs->conn, err, errlen);
	util_metrics_set("mxgate_reports_store_up", NULL, db != NULL ? 1 : 0);
	pthread_mutex_lock(&rs->lock);
	rs->up = db != NULL;
	pthread_mutex_unlock(&rs->lock);
	return db;
}

/* linger - writer, lock held, rows queued: wait until the batch fills, a
 * flush or stop asks for it, or linger_ms passed since the first row. */
static void linger(struct reports_store *rs)
{
	struct timespec until;

	if (rs->linger_ms <= 0 || rs->qlen >= rs->fill || rs->flushing > 0 || rs->stop)
		return;
	util_mono_deadline(NULL, rs->linger_ms, &until);
	rs->lingering = true;
	while (rs->qlen < rs->fill && rs->flushing == 0 && !rs->stop)
		if (pthread_cond_timedwait(&rs->wake, &rs->lock, &until) == ETIMEDOUT)
			break;
	rs->lingering = false;
}

/* REPORTS_RETRY_MS - how long a drop count that could not be written
 * (the store up) waits before the writer tries again (without rows to
 * write).  A store that is down is tried again on the connection's own
 * backoff (REPORTS_RETRY_MIN..REPORTS_RETRY_MAX s). */
#define REPORTS_RETRY_MS 1000

/* writer_wait - writer, lock held: until rows are queued, drops can be
 * written (the store up), or stop.  While the store is down it is tried
 * again when due (the lock released meanwhile); a drop count whose write
 * failed waits REPORTS_RETRY_MS. */
static void writer_wait(struct reports_store *rs, char *err, size_t errlen)
{
	struct timespec until;
	bool timed = false; /* until is set: one deadline, however many wakes */

	while (rs->qlen == 0 && !rs->stop) {
		if (!rs->up) {
			/* rows are still taken (and not recorded) as they come;
			 * drop counts wait for the store */
			int64_t ms = reports_conn_wait_ms(&rs->conn);
			if (ms > 0) {
				struct timespec t;
				util_mono_deadline(NULL, ms, &t);
				(void)pthread_cond_timedwait(&rs->wake, &rs->lock, &t);
				continue;
			}
			pthread_mutex_unlock(&rs->lock);
			(void)store_connect(rs, err, errlen);
			pthread_mutex_lock(&rs->lock);
			continue;
		}
		if (rs->drops_pending == 0) {
			pthread_cond_wait(&rs->wake, &rs->lock);
			continue;
		}
		if (!rs->drops_retry)
			break; /* a drop count to write */
		if (!timed)
			util_mono_deadline(NULL, REPORTS_RETRY_MS, &until);
		timed = true;
		if (pthread_cond_timedwait(&rs->wake, &rs->lock, &until) == ETIMEDOUT)
			rs->drops_retry = false;
	}
}

/* write_failed - writer, lock not held, a call on db failed: a lost
 * connection is dropped and opened again at once (a server restart) or
 * the store counts as down.  The handle to go on with: NULL when down or
 * reopened (what failed is then counted as pending, for the new one). */
static void *write_failed(struct reports_store *rs, void *db)
{
	if (db == NULL)
		return NULL;
	reports_conn_failed(&rs->conn);
	if (rs->conn.db != NULL)
		return db; /* not lost: disk full, locked - the store is up */
	char e2[256];
	(void)store_connect(rs, e2, sizeof(e2));
	return NULL;
}

/* writer_main - wait for rows, linger, take the whole queue, write it,
 * repeat until stopped.  A batch that cannot be written (the store down
 * or failing) becomes a drop count like a full queue's, written to the
 * dropped table once the store takes it (retried until it does). */
static void *writer_main(void *arg)
{
	struct reports_store *rs = arg;
	struct reports_row **batch = rs->batch;
	char err[256];
	bool last = false; /* stop seen: one more try for the drops, then out */

	pthread_mutex_lock(&rs->lock);
	for (;;) {
		writer_wait(rs, err, sizeof(err));
		if (rs->qlen == 0 && rs->stop && (rs->drops_pending == 0 || last))
			break;
		if (rs->stop)
			last = true;
		if (rs->qlen > 0)
			linger(rs);
		size_t n = rs->qlen;
		uint64_t drops = rs->drops_pending;
		int64_t dt = rs->drops_min_t;
		for (size_t i = 0; i < n; i++)
			batch[i] = rs->q[(rs->qhead + i) % rs->qmax];
		rs->qhead = (rs->qhead + n) % rs->qmax;
		rs->qlen -= n;
		rs->drops_pending = 0;
		rs->busy = true;
		pthread_mutex_unlock(&rs->lock);

		int rc = 0, drc = 0;
		uint64_t lost = 0;
		void *db = store_connect(rs, err, sizeof(err));
		if (n > 0 &&
		    (db == NULL || (rc = rs->be->insert(db, batch, n, err, sizeof(err))) < 0)) {
			rc = -1;
			lost = n;
			util_metrics_add("mxgate_reports_write_errors_total", NULL, (double)n);
			util_metrics_add("mxgate_reports_dropped_total", NULL, (double)n);
			time_t now = time(NULL);
			/* a store that is down is logged by its connection */
			if (db != NULL && now - rs->last_err_log >= 60) {
				rs->last_err_log = now;
				util_log_err("- reports write failed rows=%zu error=\"%s\"", n,
				             err);
			}
			db = write_failed(rs, db);
		} else if (n > 0) {
			util_metrics_add("mxgate_reports_recorded_total", NULL, (double)n);
		}
		if (db != NULL && drops + lost > 0) {
			/* never before the last run's end: that period is reported */
			int64_t now = (int64_t)time(NULL);
			drc = rs->be->add_drops(db, now > dt ? now : dt, drops + lost, err,
			                        sizeof(err));
			if (drc < 0 && now - (int64_t)rs->last_err_log >= 60) {
				rs->last_err_log = (time_t)now;
				util_log_err("- reports drop count not written n=%llu error=\"%s\"",
				             (unsigned long long)(drops + lost), err);
			}
			if (drc < 0)
				db = write_failed(rs, db);
		}
		pthread_mutex_lock(&rs->lock);
		for (size_t i = 0; i < n; i++) {
			if (batch[i]->slot && rs->nspare < rs->spare_max) {
				*(void **)(void *)batch[i] = rs->spare;
				rs->spare = batch[i];
				rs->nspare++;
			} else {
				reports_row_free(batch[i]);
			}
		}
		if (rc == 0)
			rs->written += n;
		rs->dropped += lost;
		if (drops + lost > 0 && (db == NULL || drc < 0)) {
			/* not in the table yet.  The store down: written as soon as
			 * it is back (the next report says what it misses).  The
			 * store up but refusing it (disk full), or a connection lost
			 * and opened again at once: every REPORTS_RETRY_MS, not in a
			 * loop */
			rs->drops_pending += drops + lost;
			rs->drops_retry = db != NULL || rs->up;
		} else if (drops + lost > 0) {
			rs->drops_retry = false; /* written */
		}
		rs->busy = false;
		pthread_cond_broadcast(&rs->idle);
	}
	rs->busy = false;
	pthread_cond_broadcast(&rs->idle);
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

/* reports_open - see reports.h. */
struct reports_store *reports_open(const struct config *cfg, char *err, size_t errlen)
{
	struct reports_store *rs = NULL;
	char *target = NULL;
	const char *db = cfg->reports_database;

	(void)util_metrics_define("mxgate_reports_recorded_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations written to the report store", NULL, NULL, 0);
	(void)util_metrics_define("mxgate_reports_dropped_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations not recorded: the writer queue was full or "
	                          "their write failed (counted in the store's dropped table too)",
	                          NULL, NULL, 0);
	(void)util_metrics_define("mxgate_reports_write_errors_total", UTIL_METRIC_COUNTER,
	                          "DMARC evaluations lost to a failed database write (disk full, "
	                          "locked, the store down); also in "
	                          "mxgate_reports_dropped_total",
	                          NULL, NULL, 0);
	(void)util_metrics_define("mxgate_reports_store_up", UTIL_METRIC_GAUGE,
	                          "1 when the report store is open; 0 while it is down "
	                          "(evaluations are not recorded, mail goes on)",
	                          NULL, NULL, 0);
	(void)db;
	const struct reports_backend *be = NULL;
	if ((target = reports_db_target(cfg, &be, err, errlen)) == NULL)
		goto fail;
	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rs->be = be;
	rs->qmax = cfg->reports_queue_size > 0 ? (size_t)cfg->reports_queue_size : 1;
	rs->fill = rs->qmax / 2 > REPORTS_BATCH_MAX ? REPORTS_BATCH_MAX : rs->qmax / 2;
	if (rs->fill == 0)
		rs->fill = 1;
	rs->linger_ms = REPORTS_LINGER_MS;
	rs->spare_max = 2 * rs->fill;
	if ((rs->q = calloc(rs->qmax, sizeof(*rs->q))) == NULL ||
	    (rs->batch = calloc(rs->qmax, sizeof(*rs->batch))) == NULL) {
		free(rs->q); /* the lock is not made yet: close must not touch it */
		rs->q = NULL;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the linger's deadline */
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->wake, &ca);
	pthread_cond_init(&rs->idle, NULL);
	pthread_condattr_destroy(&ca);
	/* a store that cannot be opened (a broken file, the server down) is
	 * logged and tried again by the writer: never a reason to stop */
	reports_conn_init(&rs->conn, be, target, "writer");
	target = NULL;
	char e2[256];
	void *h = store_connect(rs, e2, sizeof(e2));
	if (pthread_create(&rs->thread, NULL, writer_main, rs) != 0) {
		snprintf(err, errlen, "cannot start the writer thread");
		goto fail;
	}
	rs->started = true;
	pthread_setname_np(rs->thread, "mx-reports"); /* top -H, perf */
	const char *path = be == &reports_sqlite_backend ? rs->conn.target : "(connection string)";
	util_log_info("- reports store=%s path=%s schema=%d queue=%zu batch=%zu linger=%dms%s",
	              rs->be->name, path, h != NULL ? rs->be->schema_version(h) : -1, rs->qmax,
	              rs->fill, rs->linger_ms, h != NULL ? "" : " state=down");
	return rs;
fail:
	free(target);
	reports_close(rs);
	return NULL;
}

/* reports_close - write what is queued, stop the writer, close. */
void reports_close(struct reports_store *rs)
{
	if (rs == NULL)
		return;
	if (rs->started) {
		pthread_mutex_lock(&rs->lock);
		rs->stop = true;
		pthread_cond_signal(&rs->wake);
		pthread_mutex_unlock(&rs->lock);
		pthread_join(rs->thread, NULL);
	}
	while (rs->spare != NULL) {
		void *next = *(void **)rs->spare;
		free(rs->spare);
		rs->spare = next;
	}
	if (rs->q != NULL) {
		for (size_t i = 0; i < rs->qlen; i++)
			reports_row_free(rs->q[(rs->qhead + i) % rs->qmax]);
		pthread_mutex_destroy(&rs->lock);
		pthread_cond_destroy(&rs->wake);
		pthread_cond_destroy(&rs->idle);
	}
	reports_conn_close(&rs->conn);
	free(rs->q);
	free(rs->batch);
	free(rs);
}

/* reports_store_push - see reports-internal.h.  Wakes the writer only
 * when the queue was empty (it may be waiting without a deadline) or
 * reaches the fill mark (it may be lingering); any other append finds it
 * lingering (it will take the row) or writing (it looks again after). */
int reports_store_push(struct reports_store *rs, struct reports_row *r)
{
	pthread_mutex_lock(&rs->lock);
	if (r == NULL || rs->qlen >= rs->qmax) { /* NULL: reports_record saw it full */
		rs->dropped++;
		rs->drops_pending++;
		pthread_cond_signal(&rs->wake);
		pthread_mutex_unlock(&rs->lock);
		reports_row_free(r);
		util_metrics_inc("mxgate_reports_dropped_total", NULL);
		return -1;
	}
	rs->q[(rs->qhead + rs->qlen) % rs->qmax] = r;
	rs->qlen++;
	if (rs->qlen == 1 || rs->qlen == rs->fill)
		pthread_cond_signal(&rs->wake);
	pthread_mutex_unlock(&rs->lock);
	return 0;
}

/* reports_record - see reports.h.  Loop thread; takes the lock only to
 * look at the fill and to append a pointer. */
int reports_record(struct reports_store *rs, const struct policy_msg *pm, const char *rcpt)
{
	struct policy_dmarc_facts f;
	struct reports_row *r;

	if (rs == NULL || pm == NULL || policy_msg_dmarc_facts(pm, &f) < 0)
		return 1;
	size_t len = row_size(&f, rcpt);
	bool slot = len <= REPORTS_ROW_SLOT;
	void *mem = NULL;
	pthread_mutex_lock(&rs->lock);
	bool full = rs->qlen >= rs->qmax;
	if (!full && slot && rs->spare != NULL) {
		mem = rs->spare;
		rs->spare = *(void **)mem;
		rs->nspare--;
	}
	pthread_mutex_unlock(&rs->lock);
	if (full) /* counted by push without building a row for nothing */
		return reports_store_push(rs, NULL);
	if (mem == NULL && (mem = malloc(slot ? REPORTS_ROW_SLOT : len)) == NULL)
		return reports_store_push(rs, NULL); /* lost: a drop like any other */
	int64_t t = (int64_t)time(NULL);
	r = row_fill(mem, len, &f, rcpt, t < rs->min_t ? rs->min_t : t);
	r->slot = slot;
	return reports_store_push(rs, r);
}

/* reports_store_set_linger - see reports-internal.h. */
void reports_store_set_linger(struct reports_store *rs, int linger_ms, size_t fill)
{
	pthread_mutex_lock(&rs->lock);
	if (linger_ms > 0)
		rs->linger_ms = linger_ms;
	if (fill > 0)
		rs->fill = fill < rs->qmax ? fill : rs->qmax;
	pthread_mutex_unlock(&rs->lock);
}

/* reports_store_lingering - see reports-internal.h. */
bool reports_store_lingering(struct reports_store *rs)
{
	pthread_mutex_lock(&rs->lock);
	bool l = rs->lingering;
	pthread_mutex_unlock(&rs->lock);
	return l;
}

/* reports_store_barrier - see reports.h.  min_t is the loop thread's;
 * the writer's copy (the drops' time) is under the lock. */
void reports_store_barrier(struct reports_store *rs, int64_t t)
{
	if (rs != NULL && t > rs->min_t) {
		rs->min_t = t;
		pthread_mutex_lock(&rs->lock);
		rs->drops_min_t = t;
		pthread_mutex_unlock(&rs->lock);
	}
}

/* reports_flush - see reports.h. */
void reports_flush(struct reports_store *rs)
{
	if (rs == NULL)
		return;
	pthread_mutex_lock(&rs->lock);
	rs->flushing++; /* the writer stops lingering */
	pthread_cond_signal(&rs->wake);
	/* a drop count waiting for the store to come back or for its retry
	 * is not waited for */
	while (rs->qlen > 0 || rs->busy || (rs->drops_pending > 0 && rs->up && !rs->drops_retry))
		pthread_cond_wait(&rs->idle, &rs->lock);
	rs->flushing--;
	pthread_mutex_unlock(&rs->lock);
}

/* reports_stats - see reports.h. */
void reports_stats(const struct reports_store *rs, uint64_t *written, uint64_t *dropped)
{
	struct reports_store *m = (struct reports_store *)rs;

	*written = *dropped = 0;
	if (rs == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	*written = m->written;
	*dropped = m->dropped;
	pthread_mutex_unlock(&m->lock);
}
