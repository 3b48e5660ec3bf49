/*
 * smtp-dnsbl.c - DNSBL/DNSWL decisions of a session (issue 17): the lookups
 * (policy_dnsbl_check, all zones in parallel) start when the client is
 * accepted; with [dnsbl] decide_at = connect the banner waits for them
 * (bounded by the [dns] timeout) and a client whose weighted score reaches
 * reject_threshold gets "554 5.7.1 Service unavailable; client [IP]
 * blocked using ZONE" instead of a banner; with decide_at = rcpt the banner
 * goes out at once and each RCPT gets that 554 (RCPT waits for the lookups
 * when they are still running).  Zones that reach tag_threshold, and [spam]
 * dnsbl_zones listings, are handed to the message's spam score.
 *
 * Ownership: the session owns dnsbl_zones.  Results find their session by
 * id (STYLE rule 12); a session gone meanwhile drops them.
 *
 * Diagnostics: "s=ID dnsbl client=IP score=N listed=zone=127.0.0.2,...
 * failed=N cached=N", "s=ID reject client=IP reason=dnsbl site=ZONE";
 * counters mxgate_dnsbl_lookups_total{result} and
 * mxgate_connections_refused_total{reason="dnsbl"} /
 * mxgate_recipients_rejected_total{reason="dnsbl"}.
 */
#include <string.h>

#include "smtp-server-internal.h"

/* smtp_dnsbl_rejects - the lookups are in and the score reaches the
 * reject threshold. */
bool smtp_dnsbl_rejects(const struct smtp_session *s)
{
	return s->dnsbl_state == SMTP_DNSBL_DONE && s->cfg->dnsbl_reject_threshold > 0 &&
	       s->dnsbl_score >= s->cfg->dnsbl_reject_threshold;
}

/* smtp_dnsbl_reply - the 554 for a rejected client into buf. */
const char *smtp_dnsbl_reply(const struct smtp_session *s, char *buf, size_t len)
{
	snprintf(buf, len, "554 5.7.1 Service unavailable; client [%s] blocked using %s",
	         s->client_str, s->dnsbl_blocked_by);
	return buf;
}

/* smtp_dnsbl_to_policy - hand the listing zones to the message's score. */
void smtp_dnsbl_to_policy(struct smtp_session *s)
{
	if (s->dnsbl_state == SMTP_DNSBL_DONE && s->tx && s->tx->pm)
		policy_msg_set_dnsbl(s->tx->pm, &s->dnsbl_zones);
}

/* dnsbl_done - the lookups of session cookie are in. */
static void dnsbl_done(void *arg, uint64_t cookie, const struct policy_dnsbl_result *r)
{
	struct smtp_server *srv = arg;
	struct smtp_session *s = smtp_server_find(srv, cookie);
	if (!s || s->dnsbl_state != SMTP_DNSBL_PENDING)
		return;
	const struct config *cfg = s->cfg;
	struct util_buf listed;
	util_buf_init(&listed);
	for (size_t i = 0; i < r->listed.n; i++)
		util_buf_printf(&listed, "%s%s", i ? "," : "", r->listed.v[i]);
	s->dnsbl_state = SMTP_DNSBL_DONE;
	s->dnsbl_score = r->score;
	s->dnswl = r->allowlisted;
	snprintf(s->dnsbl_blocked_by, sizeof(s->dnsbl_blocked_by), "%s", r->blocked_by);
	for (size_t i = 0; i < r->spam_zones.n; i++)
		util_strlist_add(&s->dnsbl_zones, r->spam_zones.v[i]);
	if (cfg->dnsbl_tag_threshold > 0 && r->score >= cfg->dnsbl_tag_threshold)
		for (size_t i = 0; i < r->tag_zones.n; i++)
			if (!util_strlist_has_case(&s->dnsbl_zones, r->tag_zones.v[i]))
				util_strlist_add(&s->dnsbl_zones, r->tag_zones.v[i]);
	util_log_info("s=%016llx dnsbl client=%s score=%d listed=%s failed=%d cached=%d",
	              (unsigned long long)s->id, s->client_str, r->score,
	              listed.len ? listed.data : "-", r->failed, r->cached);
	util_buf_free(&listed);
	util_metrics_inc("mxgate_dnsbl_lookups_total", r->failed ? "failed"
	                                               : (r->listed.n || r->spam_zones.n)
	                                                   ? "listed"
	                                                   : "clean");
	smtp_dnsbl_to_policy(s);
	if (s->wait == SMTP_WAIT_GREET && (s->greet_holds & SMTP_HOLD_DNSBL)) {
		smtp_session_greet_release(s, SMTP_HOLD_DNSBL); /* decide_at = connect */
		return;
	}
	if (s->wait != SMTP_WAIT_DNSBL)
		return;
	s->wait = SMTP_WAIT_NONE; /* a RCPT waited for this */
	smtp_session_resume(s);
}

/* smtp_dnsbl_refuse - decide_at = connect: the 554 instead of the banner. */
void smtp_dnsbl_refuse(struct smtp_session *s)
{
	char line[400];
	util_log_info("s=%016llx refused client=%s reason=dnsbl site=%s score=%d",
	              (unsigned long long)s->id, s->client_str, s->dnsbl_blocked_by,
	              s->dnsbl_score);
	util_metrics_inc("mxgate_connections_refused_total", "dnsbl");
	smtp_session_close(s, smtp_dnsbl_reply(s, line, sizeof(line)));
}

/* smtp_dnsbl_start - at accept: start the lookups.  True when the banner
 * must wait for them (decide_at = connect with [dnsbl] sites). */
bool smtp_dnsbl_start(struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	if (!s->srv->dnsbl || !policy_dnsbl_wanted(cfg))
		return false;
	s->dnsbl_state = SMTP_DNSBL_PENDING;
	policy_dnsbl_check(s->srv->dnsbl, cfg, &s->client, dnsbl_done, s->srv, s->id);
	return cfg->ndnsbl_sites > 0 && cfg->dnsbl_decide == CONFIG_DNSBL_CONNECT;
}

/* smtp_dnsbl_rcpt_wait - decide_at = rcpt and the lookups still run:
 * true when RCPT must wait for them. */
bool smtp_dnsbl_rcpt_wait(const struct smtp_session *s)
{
	return s->dnsbl_state == SMTP_DNSBL_PENDING && s->cfg->ndnsbl_sites > 0;
}
