/*
 * policy.c - the policy context and the life of one message: SPF at MAIL
 * FROM, header/body streaming into the DKIM verifier, and the verdict job
 * at end of data.  The checks themselves live in policy-spf.c,
 * policy-dkim.c, policy-dmarc.c, policy-dnsbl.c; the headers and score in
 * policy-verdict.c; threads in policy-pool.c.
 *
 * Ownership: policy_msg_new() returns a message the caller frees with
 * policy_msg_free(), which may be called while a job is in flight (the
 * pool frees it when the job ends, and the callback is not called).  Each
 * message runs at most one job at a time: a finish requested while the SPF
 * job still runs is started when SPF completes.  The context counts its
 * live messages; a retired context (policy_retire, after a reload) frees
 * itself from a deferred event when that count reaches zero.
 * Threads: every exported function here runs on the loop thread.
 * Diagnostics: start-up failures into err; per-message facts in the summary.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "policy-arc.h"
#include "policy-internal.h"

#define POLICY_BUSY_REPLY "451 4.3.2 System busy, try again later"

/* policy_new - context: DKIM library, PSL, worker pool. */
struct policy_ctx *policy_new(const struct config *cfg, struct event_base *base,
                              struct policy_dns *dns, char *err, size_t errlen)
{
	struct policy_ctx *pc = util_xcalloc(1, sizeof(*pc));
	int workers = cfg->policy_workers > 0 ? cfg->policy_workers : 4;
	/* Each admitted session has at most two jobs queued (SPF, verdict):
	 * sized for that, a burst within max_connections waits for a worker
	 * instead of getting 451; the queue stays bounded all the same. */
	size_t qmax = (size_t)workers * 32;
	if (cfg->max_connections > 0 && qmax < (size_t)cfg->max_connections * 2)
		qmax = (size_t)cfg->max_connections * 2;

	pc->cfg = cfg;
	pc->base = base;
	pc->dns = dns;
	policy_spf_lib_init();
	if (cfg->dkim_enabled && policy_dkim_lib_init(pc, err, errlen) < 0)
		goto err;
	if (cfg->dmarc_enabled && policy_dmarc_lib_init(pc, err, errlen) < 0)
		goto err;
	if (policy_arc_lib_init(pc, err, errlen) < 0)
		goto err;
	pc->pool = policy_pool_new(base, workers, qmax < 64 ? 64 : qmax, err, errlen);
	if (pc->pool == NULL)
		goto err;
	return pc;
err:
	policy_free(pc);
	return NULL;
}

/* policy_free - join the workers, close the libraries. */
void policy_free(struct policy_ctx *pc)
{
	if (pc == NULL)
		return;
	policy_pool_free(pc->pool);
	policy_dkim_lib_free(pc);
	policy_dmarc_lib_free(pc);
	policy_arc_lib_free(pc);
	if (pc->retire_ev != NULL)
		event_free(pc->retire_ev);
	free(pc);
}

/* retire_cb - deferred: the retired context's last message is gone. */
static void retire_cb(evutil_socket_t fd, short what, void *arg)
{
	struct policy_ctx *pc = arg;
	void (*done)(void *) = pc->retire_done;
	void *done_arg = pc->retire_arg;

	(void)fd;
	(void)what;
	if (pc->nmsgs > 0)
		return; /* re-armed by the last policy_msg_destroy */
	policy_free(pc);
	if (done != NULL)
		done(done_arg);
}

/* policy_retire - free pc from the loop once its messages are gone. */
void policy_retire(struct policy_ctx *pc, void (*done)(void *arg), void *arg)
{
	pc->retire_done = done;
	pc->retire_arg = arg;
	if (pc->retire_ev == NULL)
		pc->retire_ev = event_new(pc->base, -1, 0, retire_cb, pc);
	if (pc->retire_ev == NULL) {
		/* out of memory: free now (joins the workers; rare and correct) */
		util_log_warn(
		    "- policy context freed synchronously: no event for the deferred free");
		policy_free(pc);
		if (done != NULL)
			done(arg);
		return;
	}
	if (pc->nmsgs == 0)
		event_active(pc->retire_ev, EV_TIMEOUT, 0);
}

/* policy_msg_new - a message at MAIL FROM (DKIM handle ready for streaming). */
struct policy_msg *policy_msg_new(struct policy_ctx *pc, const struct util_addr *client,
                                  const char *helo, const char *mail_from)
{
	struct policy_msg *pm = util_xcalloc(1, sizeof(*pm));

	pm->pc = pc;
	pc->nmsgs++;
	pm->client = *client;
	pm->helo = util_xstrdup(helo != NULL ? helo : "");
	pm->mail_from = util_xstrdup(mail_from != NULL ? mail_from : "");
	pm->mail_domain = util_domain_of(pm->mail_from) != NULL
	                      ? policy_idn_lookup_name(util_domain_of(pm->mail_from))
	                      : NULL;
	if (pm->mail_domain == NULL)
		pm->mail_domain = util_xstrdup("");
	pm->body_fd = -1;
	if (pc->cfg->dkim_enabled)
		policy_dkim_msg_begin(pm);
	return pm;
}

/* policy_msg_destroy - really free a message. */
void policy_msg_destroy(struct policy_msg *pm)
{
	policy_dkim_msg_free(pm);
	policy_arc_msg_free(pm);
	policy_spf_outcome_free(&pm->spf);
	policy_dmarc_outcome_free(&pm->dmarc);
	util_strlist_free(&pm->dnsbl_hits);
	free(pm->from.domain);
	free(pm->spf_reply);
	free(pm->v_reply);
	free(pm->v_headers);
	free(pm->v_summary);
	free(pm->helo);
	free(pm->mail_from);
	free(pm->mail_domain);
	if (pm->body_fd >= 0)
		close(pm->body_fd);
	/* A retiring context goes with its last message (deferred: this may
	 * run inside the pool's own completion callback). */
	if (--pm->pc->nmsgs == 0 && pm->pc->retire_ev != NULL)
		event_active(pm->pc->retire_ev, EV_TIMEOUT, 0);
	free(pm);
}

/* policy_msg_free - free now, or let the pool free it after its running job. */
void policy_msg_free(struct policy_msg *pm)
{
	if (pm == NULL)
		return;
	if (pm->busy) {
		pm->freed = true;
		policy_pool_cancel(pm->pc->pool, pm);
	} else
		policy_msg_destroy(pm);
}

/* ------------------------------------------------------------ SPF */

/* spf_work - worker: evaluate SPF. */
static void spf_work(struct policy_msg *pm)
{
	policy_spf_eval(pm);
}

static void fin_start(struct policy_msg *pm);

/* spf_done_cb - loop: SPF known; start a pending finish, tell the caller. */
static void spf_done_cb(struct policy_msg *pm)
{
	pm->spf_done = true;
	if (pm->spf_reply == NULL)
		pm->spf_reply = policy_spf_compute_reply(pm->pc->cfg, &pm->spf);
	/* Start the pending verdict first: the callback may free pm (then
	 * the pool frees it when that job ends). */
	if (pm->finish_pending) {
		pm->finish_pending = false;
		fin_start(pm);
	}
	if (pm->spf_cb != NULL)
		pm->spf_cb(pm->spf_cookie, pm->spf_arg);
}

/* policy_spf_start - submit the SPF job (or complete at once, still asynchronously). */
void policy_spf_start(struct policy_msg *pm, policy_cb cb, uint64_t cookie, void *arg)
{
	pm->spf_cb = cb;
	pm->spf_cookie = cookie;
	pm->spf_arg = arg;
	if (pm->spf_started)
		return;
	pm->spf_started = true;
	if (!pm->pc->cfg->spf_enabled) {
		policy_pool_submit(pm->pc->pool, pm, NULL, spf_done_cb);
		return;
	}
	if (policy_pool_submit(pm->pc->pool, pm, spf_work, spf_done_cb) < 0) {
		util_log_warn("policy pool full: SPF check refused");
		pm->queue_full = true;
		pm->spf_reply = util_xstrdup(POLICY_BUSY_REPLY);
		policy_pool_submit(pm->pc->pool, pm, NULL, spf_done_cb);
	}
}

/* policy_spf_done - SPF result known. */
bool policy_spf_done(const struct policy_msg *pm)
{
	return pm->spf_done;
}

/* policy_spf_reply - the SPF refusal reply, or NULL. */
const char *policy_spf_reply(const struct policy_msg *pm)
{
	return pm->spf_reply;
}

/* ------------------------------------------------------------ content */

/* policy_msg_header - one raw header field: parsed, then as below. */
int policy_msg_header(struct policy_msg *pm, const char *field, size_t len)
{
	struct util_hdr_field f;
	size_t pos = 0;

	if (util_hdr_next(field, len, &pos, &f) != 1)
		return -1;
	policy_msg_header_field(pm, &f);
	return 0;
}

/* policy_msg_header_field - one parsed header field: From: facts, and the
 * field saved for the DKIM worker. */
void policy_msg_header_field(struct policy_msg *pm, const struct util_hdr_field *f)
{
	if (util_hdr_name_is(f, "From")) {
		char *dom = NULL;
		int n = policy_from_parse(f->value, f->value_len, &dom);

		pm->from.fields++;
		if (n < 0) {
			pm->from.bad = true;
		} else {
			pm->from.addrs += n;
			if (pm->from.domain == NULL)
				pm->from.domain = dom;
			else
				free(dom);
		}
	}
	if (pm->dkim != NULL)
		policy_dkim_header(pm, f);
	policy_arc_header(pm, f->raw, f->raw_len);
}

/* policy_msg_eoh - end of the header block. */
int policy_msg_eoh(struct policy_msg *pm)
{
	if (pm->dkim != NULL)
		policy_dkim_eoh(pm);
	policy_arc_eoh(pm);
	return 0;
}

/* policy_msg_body - one chunk of body bytes. */
int policy_msg_body(struct policy_msg *pm, const char *p, size_t n)
{
	if (pm->dkim != NULL)
		policy_dkim_body(pm, p, n);
	policy_arc_body(pm, p, n);
	return 0;
}

/* policy_msg_wants_body - DKIM or ARC (verifying or sealing) will hash a body. */
bool policy_msg_wants_body(const struct policy_msg *pm)
{
	return (pm->dkim != NULL && policy_dkim_wants_body(pm)) || policy_arc_wants_body(pm);
}

/* policy_msg_body_fd - the body is in fd from off: the worker reads it. */
void policy_msg_body_fd(struct policy_msg *pm, int fd, int64_t off, int64_t end)
{
	if (pm->body_fd >= 0)
		close(pm->body_fd);
	pm->body_fd = fd;
	pm->body_off = off;
	pm->body_end = end;
}

/* ------------------------------------------------------------ verdict */

/* fin_work - worker: every check that needs DNS, then the verdict. */
static void fin_work(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;

	if (cfg->spf_enabled && !pm->spf.evaluated && !pm->queue_full)
		policy_spf_eval(pm);
	if (cfg->dkim_enabled)
		policy_dkim_eval(pm);
	if (cfg->dmarc_enabled)
		policy_dmarc_eval(pm);
	policy_arc_eval(pm); /* after DMARC: the trusted-forwarder override */
	policy_dnsbl_eval(pm);
	policy_verdict_build(pm);
	/* over the final headers: after the verdict; deferred to the session
	 * when it may edit the message (policy_msg_seal_later) */
	policy_arc_seal(pm);
}

/* fin_done_cb - loop: the verdict is ready. */
static void fin_done_cb(struct policy_msg *pm)
{
	if (pm->fin_cb != NULL)
		pm->fin_cb(pm->fin_cookie, pm->fin_arg);
}

/* fin_start - submit the verdict job, or answer 451 when the pool is full. */
static void fin_start(struct policy_msg *pm)
{
	if (policy_pool_submit(pm->pc->pool, pm, fin_work, fin_done_cb) < 0) {
		util_log_warn("policy pool full: verdict refused");
		policy_verdict_tempfail(pm, POLICY_BUSY_REPLY);
		policy_pool_submit(pm->pc->pool, pm, NULL, fin_done_cb);
	}
}

/* policy_msg_finish - start the verdict job (after SPF when SPF still runs). */
void policy_msg_finish(struct policy_msg *pm, policy_cb cb, uint64_t cookie, void *arg)
{
	pm->fin_cb = cb;
	pm->fin_cookie = cookie;
	pm->fin_arg = arg;
	if (pm->finished)
		return;
	pm->finished = true;
	if (pm->spf_started && !pm->spf_done)
		pm->finish_pending = true;
	else
		fin_start(pm);
}

/* policy_msg_verdict - the verdict, valid after finish's callback. */
const struct policy_verdict *policy_msg_verdict(const struct policy_msg *pm)
{
	return &pm->verdict;
}

/* under - domain equals parent or ends with "." parent (ASCII case-insensitive). */
static bool under(const char *domain, const char *parent)
{
	size_t n = strlen(domain), m = strlen(parent);
	if (n < m || strcasecmp(domain + (n - m), parent) != 0)
		return false;
	return n == m || domain[n - m - 1] == '.';
}

/* policy_msg_spf_pass_for - SPF pass for a listed sender domain. */
bool policy_msg_spf_pass_for(const struct policy_msg *pm, const struct util_strlist *domains)
{
	if (!pm->spf.evaluated || pm->spf.result != POLICY_SPF_PASS || pm->spf.helo_identity ||
	    !pm->spf.domain)
		return false;
	for (size_t i = 0; i < domains->n; i++)
		if (under(pm->spf.domain, domains->v[i]))
			return true;
	return false;
}

/* policy_msg_spf_pass - SPF pass for the MAIL FROM identity. */
bool policy_msg_spf_pass(const struct policy_msg *pm)
{
	return pm->spf_done && pm->spf.evaluated && pm->spf.result == POLICY_SPF_PASS &&
	       !pm->spf.helo_identity && pm->spf.domain;
}

/* policy_msg_dmarc_reject_dkim_pass - DKIM-signed mail passing DMARC p=reject:
 * a passing signature of the From: domain, a parent of it, or (when the tree
 * walk had to find it) anything under its organizational domain. */
bool policy_msg_dmarc_reject_dkim_pass(const struct policy_msg *pm)
{
	const struct policy_dmarc_outcome *d = &pm->dmarc;
	if (!d->evaluated || d->result != POLICY_DMARC_PASS || d->policy != 'r' || !d->header_from)
		return false;
	for (size_t i = 0; i < pm->nsigs; i++) {
		const char *sd = pm->sigs[i].d;
		if (!pm->sigs[i].result || strcmp(pm->sigs[i].result, "pass") != 0 || !sd)
			continue;
		if (under(d->header_from, sd) || (d->org_domain && under(sd, d->org_domain)))
			return true;
	}
	return false;
}
