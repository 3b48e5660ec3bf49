/*
 * smtp-session-data.c - the DATA phase of a session: stream the message
 * through the strict DATA parser (smtp-data.c) into the spool file, split the
 * header block from the body on the way (smtp-hdrsplit.c: headers are kept
 * in memory up to max_header_size so forged Authentication-Results and spam
 * headers can be dropped; the body is never buffered), feed the headers to
 * the policy engine and hand it the body's place in the spool (DKIM hashes
 * it on a worker), then at the end of data wait for the verdict, the virus
 * scan ([clamav], scan/scan-clamd.c streams the spool to clamd) and the
 * durable commit before answering.
 *
 * Ownership: the transaction (struct smtp_tx) owns the spool until
 * queue_commit() takes it; asynchronous results find the session by id.
 *
 * Diagnostics: one summary log line per message decision:
 * "s=... queued id=... from=<...> to=<...> size=... client=... tls=... <policy>"
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "content.h"
#include "smtp-server-internal.h"

/* spool_write - write to the spool, remembering the first error. */
static void spool_write(struct smtp_tx *tx, const char *p, size_t n)
{
	if (tx->write_errno || n == 0)
		return;
	if (queue_spool_write(tx->spool, p, n) < 0)
		tx->write_errno = errno ? errno : EIO;
}

/* note_message_id - the first Message-ID field's value, for the queued
 * line: blanks and folding removed, anything not printable ASCII (and
 * quotes and parentheses, which would break key=value parsing: "(x" took
 * the rest of the line) shown as '?', cut to fit. */
static void note_message_id(struct smtp_tx *tx, const struct util_hdr_field *f)
{
	size_t n = 0;
	if (tx->message_id[0] != '\0' || f->name_len != 10 ||
	    strncasecmp(f->name, "Message-ID", 10) != 0)
		return;
	for (size_t i = 0; i < f->value_len && n + 1 < sizeof(tx->message_id); i++) {
		unsigned char c = (unsigned char)f->value[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		tx->message_id[n++] =
		    (c < 0x21 || c > 0x7e || c == '"' || c == '(' || c == ')') ? '?' : (char)c;
	}
	tx->message_id[n] = '\0';
}

/* split_field - one header field: noted when it is the Message-ID, to the
 * DKIM verifier, then dropped when it is a forged Authentication-Results or
 * one of our spam headers. */
static bool split_field(void *arg, const struct util_hdr_field *f)
{
	struct smtp_session *s = arg;
	note_message_id(s->tx, f);
	/* RFC 9991: the header block as received, should DMARC fail; past
	 * 64 KiB the rest is left out of the report */
	if (s->srv->failrep && s->tx->fr_hdrs.len + f->raw_len <= 64 * 1024)
		util_buf_add(&s->tx->fr_hdrs, f->raw, f->raw_len);
	if (s->tx->pm)
		policy_msg_header_field(s->tx->pm, f);
	if (!s->tx->from_seen && util_hdr_name_is(f, "From")) {
		s->tx->from_seen = true;
		if (content_from_domain(f->value, f->value_len, s->tx->from_domain,
		                        sizeof(s->tx->from_domain)) < 0)
			s->tx->from_domain[0] = '\0';
	}
	if (util_hdr_name_is(f, CONTENT_WARNING_FIELD)) {
		/* ours to add: a sender's copy would fake "already warned" */
		util_log_info("s=%016llx dropped header=\"%.*s\" reason=ours",
		              (unsigned long long)s->id, (int)f->name_len, f->name);
		return true;
	}
	if (smtp_scan_hold_subject(s, f))
		return true;   /* not dropped: it goes into the prepend at commit */
	if (!policy_drop_header(s->cfg, f) && !scan_is_our_header(f))
		return false;
	util_log_info("s=%016llx dropped header=\"%.*s\" reason=ours", (unsigned long long)s->id,
		      (int)f->name_len, f->name);
	return true;
}

/* split_eoh - end of the header block. */
static void split_eoh(void *arg)
{
	struct smtp_session *s = arg;
	if (s->tx->pm)
		(void)policy_msg_eoh(s->tx->pm);
}

/* split_head - kept header bytes go to the spool. */
static void split_head(void *arg, const char *p, size_t n)
{
	struct smtp_session *s = arg;
	spool_write(s->tx, p, n);
}

/* split_body - body bytes go to the spool; where the body starts is noted
 * for the DKIM worker, which reads it back from there (body_to_policy). */
static void split_body(void *arg, const char *p, size_t n)
{
	struct smtp_session *s = arg;
	struct smtp_tx *tx = s->tx;
	if (!tx->body_started) {
		tx->body_started = true;
		tx->body_off = queue_spool_size(tx->spool);
	}
	spool_write(tx, p, n);
}

/* body_to_policy - end of data: when DKIM needs the body, hand the policy
 * engine a read-only descriptor of the spool and the body's byte range; a
 * worker hashes it while the verdict is built, so the event loop never
 * canonicalises or hashes message bodies.  -1 when the spool cannot be
 * opened. */
static int body_to_policy(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	if (!tx->pm || !policy_msg_wants_body(tx->pm))
		return 0;
	int fd = queue_spool_open_read(tx->spool);
	if (fd < 0) {
		tx->write_errno = errno ? errno : EIO;
		return -1;
	}
	int64_t end = queue_spool_size(tx->spool);
	policy_msg_body_fd(tx->pm, fd, tx->body_started ? tx->body_off : end, end);
	return 0;
}

static const struct smtp_hdrsplit_ops split_ops = {split_field, split_eoh, split_head,
						   split_body};

/* emit_cb - message bytes from the DATA parser. */
static int emit_cb(const char *p, size_t n, void *arg)
{
	struct smtp_session *s = arg;
	smtp_hdrsplit_feed(&s->tx->hs, p, n);
	return 0;
}

/* smtp_data_begin - open the spool and invite the data. */
void smtp_data_begin(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	tx->spool = queue_spool_new(s->srv->qs);
	if (!tx->spool) {
		int e = errno;
		util_log_err("s=%016llx cannot create spool file error=\"%s\"",
			     (unsigned long long)s->id, strerror(e));
		smtp_session_reply(s, (e == ENOSPC || e == EDQUOT)
					      ? "452 4.3.1 Insufficient system storage"
					      : "451 4.3.0 Error: queue file write error");
		return;
	}
	smtp_data_init(&tx->dp, s->cfg->message_size_limit);
	tx->dp.line_limit = (size_t)s->cfg->max_line_length;
	smtp_hdrsplit_init(&tx->hs, (size_t)s->cfg->max_header_size, &split_ops, s);
	tx->data_start_ms = util_mono_ms();
	s->state = SMTP_STATE_DATA;
	smtp_defence_data_timeout(s);
	smtp_session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* data_error_reply - the reply for a message the parser flagged, or NULL. */
static const char *data_error_reply(const struct smtp_tx *tx, const char **reason)
{
	unsigned e = tx->dp.errors;
	if (e & SMTP_DATA_TOO_BIG) {
		*reason = "size";
		return "552 5.3.4 Message size exceeds fixed limit";
	}
	if (e & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) {
		/* SMTP smuggling defence: only CRLF ends a line (RFC 5321 2.3.8). */
		*reason = "bare_cr_lf";
		return "550 5.6.0 Message refused: bare <CR> or <LF> in data; lines must end with <CR><LF>";
	}
	if (e & SMTP_DATA_NUL) {
		*reason = "nul";
		return "550 5.6.0 Message refused: NUL byte in data";
	}
	if (e & SMTP_DATA_LONG_LINE) {
		/* Over [limits] max_line_length (far above RFC 5321's 1000). */
		*reason = "long_line";
		return "550 5.6.0 Message refused: line too long";
	}
	if (tx->hs.overflow) {
		*reason = "header_size";
		return "552 5.3.4 Message header block too large";
	}
	return NULL;
}

/* end_tx - transaction over (RFC 5321 4.1.1.4): back to READY. */
static void end_tx(struct smtp_session *s)
{
	smtp_tx_free(s->tx);
	s->tx = NULL;
	s->state = SMTP_STATE_READY;
	s->wait = SMTP_WAIT_NONE;
	smtp_defence_command_timeout(s);
}

/* rcpt_list - "<a>,<b>" for the log line. */
static void rcpt_list(const struct smtp_tx *tx, struct util_buf *b)
{
	for (size_t i = 0; i < tx->rcpts.n; i++)
		util_buf_printf(b, "%s<%s>", i ? "," : "", tx->rcpts.v[i]);
}

/* log_decision - the one summary line per message. */
static void log_decision(struct smtp_session *s, const char *what, const char *qid,
			 const char *reply)
{
	struct smtp_tx *tx = s->tx;
	struct util_buf to;
	util_buf_init(&to);
	rcpt_list(tx, &to);
	const struct policy_verdict *v = tx->pm ? policy_msg_verdict(tx->pm) : NULL;
	util_log_info("s=%016llx %s id=%s client=%s rdns=%s helo=%s from=<%s> to=%s "
		      "message_id=%s size=%lld tls=%s %s%sreply=\"%s\"",
		      (unsigned long long)s->id, what, qid ? qid : "-", s->client_str,
		      s->rdns[0] ? s->rdns : "unknown", s->helo,
		      tx->mail.addr, to.data ? to.data : "",
		      tx->message_id[0] ? tx->message_id : "-", (long long)tx->dp.size,
		      s->tls_active ? "yes" : "no", v && v->summary ? v->summary : "",
		      v && v->summary ? " " : "", reply);
	util_buf_free(&to);
}

/* smtp_data_refuse - answer an error for the whole message and drop it. */
void smtp_data_refuse(struct smtp_session *s, const char *reply, const char *reason)
{
	char what[64];
	snprintf(what, sizeof(what), "reject reason=%s", reason);
	util_metrics_inc("mxgate_messages_rejected_total", reason);
	log_decision(s, what, NULL, reply);
	smtp_session_reply(s, "%s", reply);
	end_tx(s);
}

/* received_header - RFC 5321 4.4 trace field (smtp-received.c), protocol
 * names per RFC 3848 and RFC 6531 (ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS). */
static void received_header(struct smtp_session *s, const char *qid, struct util_buf *b)
{
	struct smtp_tx *tx = s->tx;
	struct smtp_received r;
	char date[64];

	if (tx->smtputf8)
		r.proto = s->tls_active ? "UTF8SMTPS" : "UTF8SMTP";
	else if (s->esmtp)
		r.proto = s->tls_active ? "ESMTPS" : "ESMTP";
	else
		r.proto = "SMTP";
	util_rfc5322_date(util_now_us() / 1000000, date);
	r.helo = s->helo;
	r.rdns = s->rdns;
	r.client = s->client_str;
	r.v6 = s->client.ss.ss_family == AF_INET6;
	r.tls_desc = s->tls_active ? s->tls_desc : NULL;
	r.by = s->cfg->hostname;
	r.qid = qid;
	r.rcpt = tx->rcpts.n == 1 ? tx->rcpts.v[0] : NULL;
	r.date = date;
	smtp_received_format(b, &r);
}

/* commit_cb - the queue made the message durable (or failed). */
static void commit_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct smtp_session *s = smtp_server_find(arg, cookie);
	if (!s || s->wait != SMTP_WAIT_COMMIT) {
		util_log_info("s=%016llx queued id=%s status=%s note=client_gone",
			      (unsigned long long)cookie, qid ? qid : "-", status ? "failed" : "ok");
		return;
	}
	if (status == 0 && s->tx->ingest_rcpt) {   /* durable: parse a copy (issue 15) */
		(void)reports_ingest_submit(s->srv->ingest, s->tx->ingest_pin, s->tx->ingest_rcpt,
					    qid);
		s->tx->ingest_pin = NULL;
		free(s->tx->ingest_rcpt);
		s->tx->ingest_rcpt = NULL;
	}
	if (status == 0) {
		char reply[80];
		snprintf(reply, sizeof(reply), "250 2.0.0 Ok: queued as %s", qid);
		if (s->tx->quarantine) {
			char what[64];
			snprintf(what, sizeof(what), "quarantined reason=%s", s->tx->quarantine);
			log_decision(s, what, qid, reply);
			util_metrics_inc("mxgate_quarantined_total", s->tx->quarantine);
		} else {
			log_decision(s, "queued", qid, reply);
		}
		util_metrics_inc("mxgate_messages_accepted_total", NULL);
		smtp_rl_accepted(s); /* messages_per_sender / _per_domain count this one */
		smtp_defence_queued(s);
		util_metrics_observe("mxgate_data_to_250_seconds",
				     (double)(util_mono_ms() - s->tx->data_start_ms) / 1000.0);
		smtp_session_reply(s, "%s", reply);
	} else {
		const char *reply = (err == ENOSPC || err == EDQUOT)
					    ? "452 4.3.1 Insufficient system storage"
					    : "451 4.3.0 Error: queue file write error";
		util_log_err("s=%016llx commit failed id=%s error=\"%s\"", (unsigned long long)s->id,
			     qid ? qid : "-", strerror(err));
		log_decision(s, "tempfail reason=queue", qid, reply);
		util_metrics_inc("mxgate_messages_rejected_total", "queue_commit");
		smtp_session_reply(s, "%s", reply);
	}
	end_tx(s);
	smtp_session_resume(s);
}

/* smtp_data_quarantine - see smtp-server-internal.h. */
void smtp_data_quarantine(struct smtp_session *s, const char *reason, const char *verdict)
{
	free(s->tx->quarantine);
	free(s->tx->quarantine_verdict);
	s->tx->quarantine = util_xstrdup(reason);
	s->tx->quarantine_verdict = verdict ? util_xstrdup(verdict) : NULL;
}

/* build_prepend - the header fields mxgate sends in front of the spool:
 * Received, the policy's fields, the scanners', the quarantine stamp, the
 * held Subject (tagged when decided).  *arc_at: where an ARC set made
 * afterwards goes (after Received, where the verdict job puts it). */
static void build_prepend(struct smtp_session *s, struct util_buf *pre, size_t *arc_at)
{
	struct smtp_tx *tx = s->tx;
	util_buf_init(pre);
	received_header(s, queue_spool_id(tx->spool), pre);
	*arc_at = pre->len;
	const struct policy_verdict *v = tx->pm ? policy_msg_verdict(tx->pm) : NULL;
	smtp_scan_policy_headers(s, pre, v ? v->headers : NULL);
	if (tx->scan_headers)
		util_buf_adds(pre, tx->scan_headers);
	if (tx->quarantine) {
		char date[64];
		util_rfc5322_date(util_now_us() / 1000000, date);
		util_buf_printf(pre, QUEUE_QUARANTINE_FIELD ": reason=%s; by=%s; at=%s\r\n",
				tx->quarantine, s->cfg->hostname, date);
	}
	smtp_scan_subject(s, pre);   /* held back at split time, last: next to the rest */
}

/* smtp_data_commit - the prepend, then the ARC seal over the message as it
 * will be delivered (on a content worker, smtp-session-seal.c) when the
 * verdict job left it to us, then the commit. */
void smtp_data_commit(struct smtp_session *s, bool async)
{
	struct smtp_tx *tx = s->tx;
	struct util_buf pre;
	size_t arc_at;
	build_prepend(s, &pre, &arc_at);
	struct policy_seal *ps = tx->pm ? policy_msg_seal_take(tx->pm) : NULL;
	if (ps) {
		smtp_seal_start(s, ps, pre.data, arc_at, async);   /* takes both */
		return;
	}
	smtp_data_commit_prepend(s, pre.data);
}

/* smtp_data_commit_prepend - see smtp-server-internal.h. */
void smtp_data_commit_prepend(struct smtp_session *s, char *prepend)
{
	struct smtp_tx *tx = s->tx;
	struct queue_envelope *env = queue_envelope_new();
	env->sender = util_xstrdup(tx->mail.addr);
	for (size_t i = 0; i < tx->rcpts.n; i++)
		queue_envelope_add_rcpt(env, tx->rcpts.v[i]);
	env->client_addr = util_xstrdup(s->client_str);
	env->helo = util_xstrdup(s->helo);
	env->tls = s->tls_active ? util_xstrdup(s->tls_desc) : NULL;
	int64_t arrival_us = util_now_us();   /* delay= counts from here, to the µs */
	env->arrival = arrival_us / 1000000;
	env->arrival_us = (int)(arrival_us % 1000000);
	env->size = queue_spool_size(tx->spool);
	env->smtputf8 = tx->smtputf8;
	env->eightbit = tx->dp.eightbit || tx->body_8bitmime;
	const struct policy_verdict *v = tx->pm ? policy_msg_verdict(tx->pm) : NULL;
	/* The ingress verdicts travel with the message: a bounce to a sender
	 * that failed SPF or DMARC would be backscatter (queue-dsn.c). */
	if (v && v->spf)
		env->spf = util_xstrdup(v->spf);
	if (v && v->dmarc)
		env->dmarc = util_xstrdup(v->dmarc);
	if (tx->quarantine) {   /* the verdict, recorded in the envelope (issue 13) */
		env->quarantine_reason = util_xstrdup(tx->quarantine);
		if (tx->quarantine_verdict)
			env->quarantine_verdict = util_xstrdup(tx->quarantine_verdict);
	}
	env->prepend = prepend;   /* ownership moves to the envelope */
	struct queue_spool *sp = tx->spool;
	if (s->srv->ingest && !tx->quarantine && !tx->ingest_rcpt) {
		/* a report address among the recipients: a pinned descriptor
		 * taken now (before anything can recycle the file), handed to
		 * the ingest worker once the commit succeeded */
		for (size_t i = 0; i < tx->rcpts.n; i++) {
			if (!reports_ingest_match(s->cfg, tx->rcpts.v[i]))
				continue;
			if ((tx->ingest_pin = queue_spool_pin(sp)) != NULL)
				tx->ingest_rcpt = util_xstrdup(tx->rcpts.v[i]);
			break;
		}
	}
	tx->spool = NULL;
	s->wait = SMTP_WAIT_COMMIT;
	if (tx->quarantine)   /* durable like any message, in quarantine/ (issue 13) */
		queue_commit_quarantined(s->srv->qs, sp, env, commit_cb, s->id, s->srv);
	else
		queue_commit(s->srv->qs, sp, env, commit_cb, s->id, s->srv);
}

/* record_dmarc - the DMARC evaluation of the message, for the aggregate
 * report (RFC 9990) and a failure report (RFC 9991): once the message is
 * refused for good (550) or past greylisting - never for a 451, after which
 * the sender comes again and is judged again (each greylisted attempt was
 * one more failure report, and one more row). */
static void record_dmarc(struct smtp_session *s, const struct policy_verdict *v)
{
	(void)reports_record(s->srv->reports, s->tx->pm,
	                     s->tx->rcpts.n > 0 ? s->tx->rcpts.v[0] : NULL);
	/* RFC 9991 failure report: copied for its thread, never waits */
	if (s->srv->failrep)
		(void)reports_failure_submit(s->srv->failrep, s->tx->pm, v->headers,
		                             s->tx->fr_hdrs.data, s->tx->fr_hdrs.len,
		                             s->tx->mail.null_path ? "" : s->tx->mail.addr,
		                             &s->tx->rcpts);
}

/* kind_action - the configured action of one policy verdict kind. */
static int kind_action(const struct config *cfg, unsigned kind)
{
	return kind == POLICY_KIND_DMARC   ? cfg->spam_dmarc_action
	       : kind == POLICY_KIND_SCORE ? cfg->spam_score_action
	                                   : cfg->dnsbl_tag_action;
}

/* smtp_data_policy_act - see smtp-server-internal.h. */
int smtp_data_policy_act(struct smtp_session *s, unsigned kinds, bool async)
{
	static const unsigned all[] = {POLICY_KIND_DMARC, POLICY_KIND_SCORE, POLICY_KIND_DNSBL};
	static const char *const kname[] = {"dmarc", "score", "dnsbl"};
	static const char *const aname[] = {"tag", "quarantine", "reject", "deliver"};
	/* severity of each enum config_policy_quarantine value */
	static const int rank[] = {1, 2, 3, 0};
	int act = CONFIG_PQ_DELIVER;
	char names[32] = "";
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (!(kinds & all[i]))
			continue;
		int a = kind_action(s->cfg, all[i]);
		if (rank[a] > rank[act])
			act = a;
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
		         names[0] ? "," : "", kname[i]);
	}
	if (!names[0])
		return 0;
	util_log_info("s=%016llx policy_verdict kinds=%s action=%s", (unsigned long long)s->id,
	              names, aname[act]);
	const struct policy_verdict *v = s->tx->pm ? policy_msg_verdict(s->tx->pm) : NULL;
	switch (act) {
	case CONFIG_PQ_REJECT:
		smtp_data_refuse(s, "550 5.7.1 Message refused by policy", "policy_quarantine");
		if (async)
			smtp_session_resume(s);
		return -1;
	case CONFIG_PQ_QUARANTINE: /* quarantined at commit (issue 13) */
		smtp_data_quarantine(s, "policy", v ? v->summary : NULL);
		s->tx->own_flag = true;
		break;
	case CONFIG_PQ_TAG:
		s->tx->subject_tag = true;
		s->tx->own_flag = true; /* X-Spam-Flag: YES, also under rspamd's verdict */
		break;
	default:
		break;
	}
	return 0;
}

/* smtp_data_greylisted - the greylist verdict (smtp-greylist.c): refuse
 * with reply, or (reply NULL) go on: the actions of the policy's own
 * verdicts, then the scans.  With [rspamd] on, mxgate's score is only an
 * input to rspamd (MXGATE_AUTH): one spam verdict, not two; it acts only
 * when rspamd cannot be asked (smtp-session-scan.c).  A DMARC quarantine
 * and a DNSBL listing stay mxgate's own.  async: called from a callback
 * (resume afterwards). */
void smtp_data_greylisted(struct smtp_session *s, const char *reply, bool async)
{
	if (reply) {
		smtp_data_refuse(s, reply, "greylisted");
		if (async)
			smtp_session_resume(s);
		return;
	}
	const struct policy_verdict *v = s->tx->pm ? policy_msg_verdict(s->tx->pm) : NULL;
	if (v && v->action != POLICY_REJECT && v->action != POLICY_TEMPFAIL)
		record_dmarc(s, v);
	if (v && v->action == POLICY_QUARANTINE) {
		unsigned kinds = v->kinds;
		if ((kinds & POLICY_KIND_SCORE) && s->cfg->rspamd_address && s->srv->rspamd) {
			kinds &= ~(unsigned)POLICY_KIND_SCORE;
			s->tx->score_deferred = true;
		}
		if (smtp_data_policy_act(s, kinds, async) < 0)
			return;
	}
	smtp_scan_start(s, async);
}

/* greylist - ask the greylist; with [state] redis the answer comes later
 * (SMTP_WAIT_GREYLIST, smtp_data_greylisted from its callback). */
static void greylist(struct smtp_session *s, bool async)
{
	char grey[300];
	int r = smtp_greylist_check(s, grey, sizeof(grey));
	if (r == SMTP_GREY_PENDING)
		return;
	smtp_data_greylisted(s, r == SMTP_GREY_LISTED ? grey : NULL, async);
}

/* verdict_cb - the policy engine has judged the message. */
static void verdict_cb(uint64_t cookie, void *arg)
{
	struct smtp_session *s = smtp_server_find(arg, cookie);
	if (!s || s->wait != SMTP_WAIT_VERDICT)
		return;
	const struct policy_verdict *v = policy_msg_verdict(s->tx->pm);
	s->wait = SMTP_WAIT_NONE;
	if (v->action == POLICY_REJECT)
		record_dmarc(s, v);
	if (v->action == POLICY_REJECT || v->action == POLICY_TEMPFAIL) {
		smtp_data_refuse(s, v->reply ? v->reply : (v->action == POLICY_REJECT ? "550 5.7.1 Message refused"
									   : "451 4.7.1 Try again later"),
		       v->action == POLICY_REJECT ? "policy" : "policy_tempfail");
		smtp_session_resume(s);
		return;
	}
	greylist(s, true);
}

/* end_of_data - CRLF.CRLF seen: judge, then commit. */
static void end_of_data(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	smtp_hdrsplit_end(&tx->hs);   /* a message that is all header block */
	const char *reason = NULL;
	const char *reply = data_error_reply(tx, &reason);
	if (reply) {
		smtp_data_refuse(s, reply, reason);
		return;
	}
	if (!tx->write_errno)
		(void)body_to_policy(s);
	if (tx->write_errno) {
		int e = tx->write_errno;
		util_log_err("s=%016llx spool write failed error=\"%s\"", (unsigned long long)s->id,
			     strerror(e));
		smtp_data_refuse(s, (e == ENOSPC || e == EDQUOT) ? "452 4.3.1 Insufficient system storage"
						       : "451 4.3.0 Error: queue file write error",
		       "queue_write");
		return;
	}
	smtp_session_set_timeout(s, s->cfg->command_timeout);
	smtp_data_judge(s);
}

/* smtp_data_judge - the client's name first (it goes into Received:), then
 * the policy verdict, then the commit; each step may wait, none blocks. */
void smtp_data_judge(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	if (s->rdns_pending) {
		s->wait = SMTP_WAIT_RDNS;
		return;
	}
	if (tx->pm) {
		s->wait = SMTP_WAIT_VERDICT;
		policy_msg_finish(tx->pm, verdict_cb, s->id, s->srv);
		return;
	}
	greylist(s, false);
}

/* smtp_data_read - feed what arrived; true when the end of data was seen. */
bool smtp_data_read(struct smtp_session *s, struct evbuffer *in)
{
	struct smtp_tx *tx = s->tx;
	bool done = false;
	size_t used = 0;
	struct evbuffer_iovec vec[8];
	int nvec = evbuffer_peek(in, -1, NULL, vec, 8);
	for (int i = 0; i < nvec && i < 8 && !done; i++)
		used += smtp_data_feed(&tx->dp, vec[i].iov_base, vec[i].iov_len, emit_cb, s, &done);
	evbuffer_drain(in, used);
	if (done) {
		end_of_data(s);
		return true;
	}
	if (util_mono_ms() - tx->data_start_ms > (int64_t)s->cfg->data_total_timeout * 1000) {
		char line[300];
		snprintf(line, sizeof(line), "421 4.4.2 %s Error: timeout exceeded for DATA",
			 s->cfg->hostname);
		smtp_session_close(s, line);
		return false;
	}
	/* More than 8 chunks buffered: go round again. */
	return evbuffer_get_length(in) > 0 && nvec > 8;
}
