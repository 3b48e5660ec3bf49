/*
 * smtp-session-scan.c - content inspection in the session (issue 13):
 * between the policy verdict and the commit, the message in the spool is
 * judged by the attachment policy ([attachments], smtp-session-attach.c),
 * scanned for viruses by clamd ([clamav], scan/scan-clamd.c), then checked
 * for spam by rspamd ([rspamd], scan/scan-rspamd.c).  Each step is a wait
 * state of the session (SMTP_WAIT_SCAN); results find the session by id.
 *
 * Decisions: a virus -> [clamav] virus_action (550 5.7.1, quarantined, or
 * delivered with X-Virus-Scan: infected, tagged or not); rspamd's action ->
 * reject_action / tag_action; a tag from any verdict is the one [rspamd]
 * subject_tag, put on once;
 * "soft reject" -> 451 4.7.1; a scanner down or slow -> its on_failure
 * (451 4.7.1, or accepted with a header saying it was not checked - never
 * a silent pass).  With an rspamd verdict, the policy's own X-Spam-* fields
 * are left out: rspamd's score (which includes mxgate's authentication
 * score as symbol MXGATE_AUTH) is the only spam score downstream sees;
 * mxgate's own score acts ([spam] score_action) only when rspamd could not
 * be asked.  But X-Spam-Flag is YES whenever one of mxgate's own verdicts
 * (DMARC quarantine, DNSBL listing, virus, attachment) tagged or
 * quarantined the message (tx->own_flag), whatever rspamd answered: the
 * downstream's rules act on the flag.
 *
 * Ownership: header text accumulates in tx->scan_headers (owned by the
 * transaction).  Diagnostics: one line per scan
 * ("s=... virus_scan result=..." / "s=... spam_check action=..."), metrics
 * mxgate_virus_scans_total, mxgate_spam_checks_total,
 * mxgate_scanner_failures_total.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp-server-internal.h"

enum { STAGE_ATTACH = 0, STAGE_CLAMD, STAGE_RSPAMD, STAGE_COMMIT };

static void next_step(struct smtp_session *s, bool async);

/* note - append header text for the commit. */
static void note(struct smtp_session *s, const struct util_buf *add)
{
	struct util_buf b;
	util_buf_init(&b);
	if (s->tx->scan_headers)
		util_buf_adds(&b, s->tx->scan_headers);
	if (add->data)
		util_buf_adds(&b, add->data);
	free(s->tx->scan_headers);
	s->tx->scan_headers = b.data; /* ownership moves to the transaction */
}

/* refuse - the message is refused; resume when called from a callback. */
static void refuse(struct smtp_session *s, const char *reply, const char *reason, bool async)
{
	smtp_data_refuse(s, reply, reason);
	if (async)
		smtp_session_resume(s);
}

/* failure_metric - "clamav_timeout", "rspamd_unavailable", ... */
static void failure_metric(const char *scanner, const char *why)
{
	char label[160];
	snprintf(label, sizeof(label), "%s_%s", scanner, why);
	util_metrics_inc("mxgate_scanner_failures_total", label);
}

/* ------------------------------------------------------------ clamd */

/* virus_apply - clamd's outcome. */
static void virus_apply(struct smtp_session *s, const struct scan_result *r, bool async)
{
	const struct config *cfg = s->cfg;
	switch (r->status) {
	case SCAN_CLEAN:
		util_metrics_inc("mxgate_virus_scans_total", "clean");
		util_log_info("s=%016llx virus_scan result=clean", (unsigned long long)s->id);
		break;
	case SCAN_INFECTED:
		util_metrics_inc("mxgate_virus_scans_total", "infected");
		util_log_info("s=%016llx virus_scan result=infected virus=\"%s\" action=%s",
		              (unsigned long long)s->id, r->name,
		              cfg->clamav_virus_action == CONFIG_SCAN_REJECT       ? "reject"
		              : cfg->clamav_virus_action == CONFIG_SCAN_QUARANTINE ? "quarantine"
		              : cfg->clamav_virus_action == CONFIG_SCAN_TAG        ? "tag"
		                                                                   : "deliver");
		if (cfg->clamav_virus_action == CONFIG_SCAN_REJECT) {
			char reply[256];
			snprintf(reply, sizeof(reply),
			         "550 5.7.1 Message refused: virus found (%s)", r->name);
			refuse(s, reply, "virus", async);
			return;
		}
		if (cfg->clamav_virus_action == CONFIG_SCAN_QUARANTINE) {
			char *verdict = util_xasprintf("virus=%s", r->name);
			smtp_data_quarantine(s, "virus", verdict);
			free(verdict);
			s->tx->scan_stage = STAGE_COMMIT; /* no spam check: quarantined */
			s->tx->own_flag = true;
		}
		if (cfg->clamav_virus_action == CONFIG_SCAN_TAG)
			s->tx->subject_tag = s->tx->own_flag = true;
		break;
	case SCAN_FAILED:
		util_metrics_inc("mxgate_virus_scans_total", "unscanned");
		if (strcmp(r->name, "size") != 0)
			failure_metric("clamav", r->name);
		util_log_warn("s=%016llx virus_scan result=unscanned reason=%s action=%s",
		              (unsigned long long)s->id, r->name,
		              strcmp(r->name, "size") == 0 ||
		                      cfg->clamav_on_failure == CONFIG_SCAN_ACCEPT
		                  ? "accept"
		                  : "tempfail");
		if (strcmp(r->name, "size") != 0 &&
		    cfg->clamav_on_failure == CONFIG_SCAN_TEMPFAIL) {
			refuse(s, "451 4.7.1 Virus scanner unavailable, try again later",
			       "scan_tempfail", async);
			return;
		}
		break;
	}
	struct util_buf b;
	util_buf_init(&b);
	scan_header(&b, r, cfg->hostname);
	note(s, &b);
	util_buf_free(&b);
	next_step(s, async);
}

/* virus_done - clamd's callback. */
static void virus_done(uint64_t cookie, const struct scan_result *r, void *arg)
{
	struct smtp_session *s = smtp_server_find(arg, cookie);
	if (!s || s->wait != SMTP_WAIT_SCAN || s->tx->scan_stage != STAGE_CLAMD + 1) {
		util_log_info("s=%016llx virus_scan note=client_gone", (unsigned long long)cookie);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	virus_apply(s, r, true);
}

/* virus_start - stream the spool to clamd. */
static void virus_start(struct smtp_session *s, bool async)
{
	struct smtp_tx *tx = s->tx;
	int64_t size = queue_spool_size(tx->spool);
	if (size > s->cfg->clamav_max_size) {
		struct scan_result r = {.status = SCAN_FAILED, .name = "size"};
		virus_apply(s, &r, async);
		return;
	}
	int fd = queue_spool_open_read(tx->spool); /* -1: reported by the callback */
	s->wait = SMTP_WAIT_SCAN;
	if (scan_clamd_start(s->srv->clamd, s->cfg, fd, size, virus_done, s->id, s->srv) < 0) {
		struct scan_result r = {.status = SCAN_FAILED, .name = "setup"};
		s->wait = SMTP_WAIT_NONE;
		virus_apply(s, &r, async);
	}
}

/* ------------------------------------------------------------ rspamd */

/* spam_apply - rspamd's outcome. */
static void spam_apply(struct smtp_session *s, const struct scan_spam_result *r, bool async)
{
	const struct config *cfg = s->cfg;
	struct util_buf b;
	if (r->failed) {
		util_metrics_inc("mxgate_spam_checks_total", "unchecked");
		if (strcmp(r->reason, "size") != 0)
			failure_metric("rspamd", r->reason);
		bool tempfail = strcmp(r->reason, "size") != 0 &&
		                cfg->rspamd_on_failure == CONFIG_SCAN_TEMPFAIL;
		util_log_warn("s=%016llx spam_check result=unchecked reason=%s action=%s",
		              (unsigned long long)s->id, r->reason,
		              tempfail ? "tempfail" : "accept");
		if (tempfail) {
			refuse(s, "451 4.7.1 Spam filter unavailable, try again later",
			       "scan_tempfail", async);
			return;
		}
		/* mxgate's own spam headers stay: the only verdict there is */
		util_buf_init(&b);
		util_buf_printf(&b,
		                "X-Spam-Checker: unchecked; reason=%s; scanner=rspamd; by=%s\r\n",
		                r->reason, cfg->hostname);
		note(s, &b);
		util_buf_free(&b);
		/* and so is mxgate's score: it acts now, as without rspamd */
		if (s->tx->score_deferred && smtp_data_policy_act(s, POLICY_KIND_SCORE, async) < 0)
			return;
		next_step(s, async);
		return;
	}
	int decision = CONFIG_SPAM_DELIVER;
	switch (r->action) {
	case SCAN_SPAM_REJECT:
	case SCAN_SPAM_DISCARD:
		decision = cfg->rspamd_reject_action;
		break;
	case SCAN_SPAM_ADD_HEADER:
	case SCAN_SPAM_REWRITE_SUBJECT:
	case SCAN_SPAM_QUARANTINE:
		decision = cfg->rspamd_tag_action;
		break;
	case SCAN_SPAM_SOFT_REJECT:
		decision = -1;
		break;
	case SCAN_SPAM_NO_ACTION:
	case SCAN_SPAM_GREYLIST: /* greylisting is not ours to do */
		decision = CONFIG_SPAM_DELIVER;
		break;
	}
	static const char *const dname[] = {"reject", "tag", "deliver", "quarantine"};
	char label[32];
	snprintf(label, sizeof(label), "%s", scan_spam_action_name(r->action));
	for (char *p = label; *p; p++)
		if (*p == ' ')
			*p = '_';
	util_metrics_inc("mxgate_spam_checks_total", label);
	util_log_info("s=%016llx spam_check action=\"%s\" score=%.2f required=%.2f decision=%s",
	              (unsigned long long)s->id, scan_spam_action_name(r->action), r->score,
	              r->required, decision < 0 ? "tempfail" : dname[decision]);
	if (decision < 0) {
		refuse(s, "451 4.7.1 Try again later", "spam_tempfail", async);
		return;
	}
	if (decision == CONFIG_SPAM_REJECT) {
		refuse(s, "550 5.7.1 Message refused as spam", "spam", async);
		return;
	}
	if (decision == CONFIG_SPAM_QUARANTINE) {
		char *verdict = util_xasprintf("rspamd action=\"%s\" score=%.2f required=%.2f",
		                               scan_spam_action_name(r->action), r->score,
		                               r->required);
		smtp_data_quarantine(s, "spam", verdict);
		free(verdict);
	}
	bool flag = (decision == CONFIG_SPAM_TAG || decision == CONFIG_SPAM_QUARANTINE) &&
	            r->action != SCAN_SPAM_NO_ACTION && r->action != SCAN_SPAM_GREYLIST;
	if (flag && decision == CONFIG_SPAM_TAG)
		s->tx->subject_tag = true;
	if (!flag && s->tx->own_flag)
		util_log_info("s=%016llx spam_check flag=YES by=mxgate", (unsigned long long)s->id);
	util_buf_init(&b);
	/* the flag is also YES when one of mxgate's own verdicts (a DMARC
	 * quarantine, a DNSBL listing, a virus or an attachment) tagged or
	 * quarantined the message: rspamd's "no action" must not hide it from
	 * the downstream's rules (red team); the status names rspamd's own
	 * action, score and symbols */
	scan_spam_headers(&b, cfg, r, flag || s->tx->own_flag);
	note(s, &b);
	util_buf_free(&b);
	s->tx->spam_replaced = true;
	next_step(s, async);
}

/* spam_done - rspamd's callback. */
static void spam_done(uint64_t cookie, const struct scan_spam_result *r, void *arg)
{
	struct smtp_session *s = smtp_server_find(arg, cookie);
	if (!s || s->wait != SMTP_WAIT_SCAN || s->tx->scan_stage != STAGE_RSPAMD + 1) {
		util_log_info("s=%016llx spam_check note=client_gone", (unsigned long long)cookie);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	spam_apply(s, r, true);
}

/* spam_start - POST the spool to rspamd with the envelope. */
static void spam_start(struct smtp_session *s, bool async)
{
	struct smtp_tx *tx = s->tx;
	int64_t size = queue_spool_size(tx->spool);
	if (size > s->cfg->rspamd_max_size) {
		struct scan_spam_result r;
		memset(&r, 0, sizeof(r));
		r.failed = true;
		strcpy(r.reason, "size");
		spam_apply(s, &r, async);
		return;
	}
	const struct policy_verdict *v = tx->pm ? policy_msg_verdict(tx->pm) : NULL;
	char tlsv[sizeof(s->tls_desc)] = "", *tlsc = NULL;
	if (s->tls_active) {
		snprintf(tlsv, sizeof(tlsv), "%s", s->tls_desc);
		tlsc = strchr(tlsv, ' ');
		if (tlsc)
			*tlsc++ = 0;
	}
	struct scan_envelope env = {
	    .client_ip = s->client_str,
	    .helo = s->helo,
	    .hostname = s->rdns,
	    .mail_from = tx->mail.addr,
	    .rcpts = (const char *const *)tx->rcpts.v,
	    .nrcpts = tx->rcpts.n,
	    .queue_id = queue_spool_id(tx->spool),
	    .tls_version = s->tls_active ? tlsv : NULL,
	    .tls_cipher = s->tls_active ? tlsc : NULL,
	    .auth_summary = v && v->summary ? v->summary : NULL,
	    .auth_score = v ? v->score : 0,
	    .mta_name = s->cfg->hostname,
	    .body_prefix = tx->subject_held ? tx->subject : NULL,
	};
	int fd = queue_spool_open_read(tx->spool);
	s->wait = SMTP_WAIT_SCAN;
	if (scan_rspamd_start(s->srv->rspamd, s->cfg, fd, size, &env, spam_done, s->id, s->srv) <
	    0) {
		struct scan_spam_result r;
		memset(&r, 0, sizeof(r));
		r.failed = true;
		strcpy(r.reason, "setup");
		s->wait = SMTP_WAIT_NONE;
		spam_apply(s, &r, async);
	}
}

/* ------------------------------------------------------------ steps */

/* next_step - the next configured inspection, or the commit. */
static void next_step(struct smtp_session *s, bool async)
{
	struct smtp_tx *tx = s->tx;
	while (tx->scan_stage < STAGE_COMMIT) {
		int stage = tx->scan_stage++;
		if (stage == STAGE_ATTACH && smtp_attach_start(s, async) == 0)
			return;
		if (stage == STAGE_CLAMD && s->cfg->clamav_socket && s->srv->clamd) {
			virus_start(s, async);
			return;
		}
		if (stage == STAGE_RSPAMD && s->cfg->rspamd_address && s->srv->rspamd) {
			spam_start(s, async);
			return;
		}
	}
	smtp_warn_start(s, async); /* then the commit */
}

/* smtp_scan_start - see smtp-server-internal.h. */
void smtp_scan_start(struct smtp_session *s, bool async)
{
	s->tx->scan_stage = STAGE_ATTACH;
	next_step(s, async);
}

/* smtp_scan_continue - see smtp-server-internal.h. */
void smtp_scan_continue(struct smtp_session *s)
{
	next_step(s, true);
}

/* pos - w when it can raise the score, else 0. */
static double pos(double w)
{
	return w > 0 ? w : 0;
}

/* policy_may_tag - can one of mxgate's own verdicts configured to tag
 * fire under this config?  Only then is every Subject held out of the
 * spool (and moved up): a config whose checks cannot reach the threshold
 * keeps the header block byte for byte. */
static bool policy_may_tag(const struct config *cfg)
{
	bool dnsbl =
	    cfg->dnsbl_zones.n > 0 || (cfg->dnsbl_site_specs.n > 0 && cfg->dnsbl_tag_threshold > 0);
	if (cfg->spam_dmarc_action == CONFIG_PQ_TAG && cfg->dmarc_enabled &&
	    cfg->dmarc_enforcement != CONFIG_DMARC_MONITOR)
		return true;
	if (cfg->dnsbl_tag_action == CONFIG_PQ_TAG && dnsbl)
		return true;
	if (cfg->spam_score_action != CONFIG_PQ_TAG)
		return false;
	/* the most the rules of policy_score() can add up to */
	double max = pos(cfg->weight_no_rdns);
	if (cfg->spf_enabled)
		max +=
		    pos(cfg->weight_spf_fail > cfg->weight_spf_softfail ? cfg->weight_spf_fail
		                                                        : cfg->weight_spf_softfail);
	if (cfg->dkim_enabled)
		max += pos(cfg->weight_dkim_fail);
	if (cfg->dmarc_enabled)
		max += pos(cfg->weight_dmarc_fail > cfg->weight_dmarc_quarantine
		               ? cfg->weight_dmarc_fail
		               : cfg->weight_dmarc_quarantine);
	if (dnsbl)
		max +=
		    pos(cfg->weight_dnsbl) * (double)(cfg->dnsbl_zones.n + cfg->dnsbl_site_specs.n);
	return max >= cfg->spam_threshold;
}

/* may_tag - can a verdict of this config put the subject tag on?  Any
 * verdict configured to tag: rspamd's, a virus, a blocked, unparsable or
 * oversize attachment, mxgate's own (DMARC quarantine, score, DNSBL) when it can
 * fire. */
static bool may_tag(const struct config *cfg)
{
	if (!cfg->rspamd_subject_tag || strcmp(cfg->rspamd_subject_tag, "none") == 0)
		return false;
	return (cfg->rspamd_address && (cfg->rspamd_tag_action == CONFIG_SPAM_TAG ||
	                                cfg->rspamd_reject_action == CONFIG_SPAM_TAG)) ||
	       (cfg->clamav_socket && cfg->clamav_virus_action == CONFIG_SCAN_TAG) ||
	       (cfg->attach_enabled && (cfg->attach_action == CONFIG_ATTACH_TAG ||
	                                cfg->attach_unparsable_action == CONFIG_ATTACH_TAG ||
	                                (cfg->attach_oversize_action == CONFIG_ATTACH_TAG &&
	                                 cfg->attach_max_size < cfg->message_size_limit))) ||
	       policy_may_tag(cfg);
}

/* may_warn - can the external-sender warning put its subject tag on? */
static bool may_warn(const struct config *cfg)
{
	return cfg->warning_enabled && cfg->warning_subject_tag &&
	       strcmp(cfg->warning_subject_tag, "none") != 0;
}

/* smtp_scan_may_edit - see smtp-server-internal.h. */
bool smtp_scan_may_edit(const struct config *cfg)
{
	return may_tag(cfg) || cfg->warning_enabled;
}

/* smtp_scan_hold_subject - see smtp-server-internal.h.  The spool cannot
 * be edited in place, so the Subject fields are kept aside (in order) and
 * written into the prepend at commit: they move to the top of the header
 * block, which DKIM does not mind (h= order is per field name, RFC 6376
 * 5.4.2).  Every Subject, not only the first: a spammer's second Subject
 * went out untagged, and a reader that shows that one saw no tag (red team
 * finding). */
bool smtp_scan_hold_subject(struct smtp_session *s, const struct util_hdr_field *f)
{
	struct smtp_tx *tx = s->tx;
	if (!(may_tag(s->cfg) || may_warn(s->cfg)) || !util_hdr_name_is(f, "Subject"))
		return false;
	size_t old = tx->subject ? strlen(tx->subject) : 0;
	tx->subject = util_xrealloc(tx->subject, old + f->raw_len + 1);
	memcpy(tx->subject + old, f->raw, f->raw_len);
	tx->subject[old + f->raw_len] = 0;
	tx->subject_held = true;
	return true;
}

/* lead_tags - which of tags[0..1] the subject value v[0..n) already
 * starts with: its leading run of those tags and of reply/forward prefixes
 * ("Re:", "Fwd:", "AW:"; letters, then ':').  Only there: a tag written
 * anywhere else (the end of a long subject, past what a reader shows) kept
 * ours off the front (red team finding). */
static void lead_tags(const char *v, size_t n, const char *const tags[2], bool have[2])
{
	size_t i = 0;
	have[0] = have[1] = false;
	for (;;) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n'))
			i++;
		bool step = false;
		for (int t = 0; t < 2 && !step; t++) {
			size_t k = tags[t] ? strlen(tags[t]) : 0;
			if (k && n - i >= k && memcmp(v + i, tags[t], k) == 0) {
				have[t] = true;
				i += k;
				step = true;
			}
		}
		size_t j = i;
		while (!step && j < n && j - i < 4 &&
		       ((v[j] >= 'A' && v[j] <= 'Z') || (v[j] >= 'a' && v[j] <= 'z')))
			j++;
		if (!step && j > i && j < n && v[j] == ':') {
			i = j + 1;
			step = true;
		}
		if (!step)
			return;
	}
}

/* smtp_scan_subject - see smtp-server-internal.h.  The tag goes on once:
 * not again when the subject already starts with it (a message tagged by
 * another hop, or bounced back; reply prefixes in front do not count). */
void smtp_scan_subject(struct smtp_session *s, struct util_buf *b)
{
	struct smtp_tx *tx = s->tx;
	if (!tx->subject_held) {
		/* no Subject at all: one made of the tags, or leaving the field
		 * out would have shed them (red team finding) */
		const char *t0 =
		    tx->subject_tag && may_tag(s->cfg) ? s->cfg->rspamd_subject_tag : NULL;
		const char *t1 =
		    tx->warn_subject && may_warn(s->cfg) ? s->cfg->warning_subject_tag : NULL;
		if (t0 || t1)
			util_buf_printf(b, "Subject:%s%s%s%s\r\n", t0 ? " " : "", t0 ? t0 : "",
			                t1 ? " " : "", t1 ? t1 : "");
		return;
	}
	const char *tags[2] = {tx->subject_tag && may_tag(s->cfg) ? s->cfg->rspamd_subject_tag
	                                                          : NULL,
	                       tx->warn_subject ? s->cfg->warning_subject_tag : NULL};
	if (!tags[0] && !tags[1]) {
		util_buf_adds(b, tx->subject);
		return;
	}
	/* every held Subject field gets each tag once: not again when it
	 * already carries it (a message tagged by another hop, or bounced back) */
	size_t len = strlen(tx->subject), pos = 0;
	struct util_hdr_field f;
	while (util_hdr_next(tx->subject, len, &pos, &f) == 1) {
		const char *raw = f.raw, *end = f.raw + f.raw_len;
		const char *colon = memchr(raw, ':', f.raw_len);
		const char *v = colon + 1;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		util_buf_add(b, raw, (size_t)(colon + 1 - raw));
		bool have[2];
		lead_tags(v, (size_t)(end - v), tags, have);
		for (int i = 0; i < 2; i++)
			if (tags[i] && !have[i])
				util_buf_printf(b, " %s", tags[i]);
		util_buf_adds(b, " ");
		util_buf_add(b, v, (size_t)(end - v));
	}
	if (pos < len) /* cannot happen (each field was parsed once): keep it */
		util_buf_add(b, tx->subject + pos, len - pos);
}

/* smtp_scan_policy_headers - see smtp-server-internal.h.  Without
 * rspamd's verdict the policy's flag says YES (and its status "Yes,")
 * when a verdict that acted after the policy's (a virus or an attachment
 * tagged or quarantined) flagged the message. */
void smtp_scan_policy_headers(struct smtp_session *s, struct util_buf *b, const char *headers)
{
	const struct config *cfg = s->cfg;
	const char *flag = cfg->spam_flag_header ? cfg->spam_flag_header : "X-Spam-Flag";
	const char *status = cfg->spam_status_header ? cfg->spam_status_header : "X-Spam-Status";
	bool replaced = s->tx->spam_replaced;
	if (!headers) {
		/* no policy fields (checks off): the flag alone, for a rule */
		if (!replaced && s->tx->own_flag)
			util_buf_printf(b, "%s: YES\r\n", flag);
		return;
	}
	if (!replaced && !s->tx->own_flag) {
		util_buf_adds(b, headers);
		return;
	}
	size_t len = strlen(headers), pos = 0;
	struct util_hdr_field f;
	while (util_hdr_next(headers, len, &pos, &f) == 1) {
		bool is_flag = util_hdr_name_is(&f, flag);
		bool is_status = util_hdr_name_is(&f, status);
		if (replaced &&
		    (is_flag || is_status ||
		     util_hdr_name_is(&f, cfg->spam_score_header ? cfg->spam_score_header
		                                                 : "X-Spam-Score")))
			continue;
		if (is_flag) {
			util_buf_printf(b, "%s: YES\r\n", flag);
			continue;
		}
		if (is_status && f.value_len >= 4 && memcmp(f.value, " No,", 4) == 0) {
			/* "X-Spam-Status: No, score=..." -> "Yes, score=..." */
			util_buf_add(b, f.raw, (size_t)(f.value - f.raw));
			util_buf_adds(b, " Yes,");
			util_buf_add(b, f.value + 4, f.raw_len - (size_t)(f.value + 4 - f.raw));
			continue;
		}
		util_buf_add(b, f.raw, f.raw_len);
	}
}
