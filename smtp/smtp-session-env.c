/*
 * smtp-session-env.c - the envelope commands of a server session: MAIL
 * FROM (RFC 5321 4.1.1.2, ESMTP parameters, SMTPUTF8, SIZE, rate limits)
 * and RCPT TO (4.1.1.3: accepted domains only - never an open relay -,
 * recipient verification against the downstream, the SPF verdict a
 * recipient waits for, duplicate recipients, rate limits and the envelope
 * size cap).  Split from smtp-session.c, which dispatches to them.
 *
 * Ownership and diagnostics: as smtp-session.c (the session owns its
 * transaction; one log line per event, session id first).
 */
#include <string.h>
#include <strings.h>

#include "smtp-server-internal.h"

/* is_ascii - no byte >= 0x80. */
static bool is_ascii(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p >= 0x80)
			return false;
	return true;
}

/* spf_done_cb - SPF verdict arrived while RCPT waited for it. */
static void spf_done_cb(uint64_t cookie, void *arg)
{
	struct smtp_session *s = smtp_server_find(arg, cookie);
	if (!s || s->wait != SMTP_WAIT_SPF)
		return;
	s->wait = SMTP_WAIT_NONE;
	smtp_session_resume(s);
}

/* smtp_session_verify_done - a probe answered while RCPT waited for it. */
void smtp_session_verify_done(void *arg, uint64_t sid, const char *addr,
			      enum smtp_verify_result r)
{
	struct smtp_session *s = smtp_server_find(arg, sid);
	if (!s || s->wait != SMTP_WAIT_VERIFY || !util_strcaseeq(s->verify_addr, addr))
		return;
	s->verify_result = r;
	s->wait = SMTP_WAIT_NONE;
	smtp_session_resume(s);
}

/* verify_client_key - who a probe is counted against for the per-client
 * share: the IPv4 address, or the /64 of an IPv6 one (one host holds a
 * whole /64, RFC 4291 2.5.1). */
static void verify_client_key(const struct smtp_session *s, char *out, size_t outlen)
{
	if (s->client.ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s->client.ss;
		const unsigned char *b = s6->sin6_addr.s6_addr;
		snprintf(out, outlen, "%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64", b[0], b[1], b[2],
			 b[3], b[4], b[5], b[6], b[7]);
		return;
	}
	snprintf(out, outlen, "%s", s->client_str);
}

/* rcpt_verify - recipient verification for an address of a domain without a
 * list whose route asks the downstream.  Returns true when RCPT may go on;
 * false when it was answered (refused) or suspended until the probe ends. */
static bool rcpt_verify(struct smtp_session *s, const char *addr, const char *line)
{
	const struct config *cfg = s->cfg;
	const struct config_route *route = config_route_for(cfg, util_domain_of(addr));
	enum smtp_verify_result r;
	if (!route || !route->verify_recipients || route->type != CONFIG_ROUTE_SMTP ||
	    !s->srv->verifier)
		return true;
	if (s->verify_result != SMTP_VERIFY_PENDING && util_strcaseeq(s->verify_addr, addr)) {
		r = s->verify_result;        /* the answer this RCPT waited for */
	} else {
		char key[64];
		verify_client_key(s, key, sizeof(key));
		r = smtp_verify_lookup(s->srv->verifier, route, addr, key, s->id);
		if (r == SMTP_VERIFY_PENDING) {
			snprintf(s->verify_addr, sizeof(s->verify_addr), "%s", addr);
			free(s->pending_line);
			s->pending_line = util_xstrdup(line);
			s->wait = SMTP_WAIT_VERIFY;
			return false;
		}
	}
	s->verify_result = SMTP_VERIFY_PENDING;
	s->verify_addr[0] = '\0';
	if (r == SMTP_VERIFY_OK)
		return true;
	if (r == SMTP_VERIFY_UNKNOWN) {
		util_log_info("s=%016llx reject client=%s from=<%s> rcpt=<%s> reason=unverified",
			      (unsigned long long)s->id, s->client_str, s->tx->mail.addr, addr);
		util_metrics_inc("mxgate_recipients_rejected_total", "unverified");
		smtp_session_reply_error(s, "550 5.1.1 Recipient address rejected: User unknown");
		return false;
	}
	/* The downstream could not be asked: never a silent accept. */
	if (cfg->verify_unavailable == CONFIG_VERIFY_ACCEPT) {
		util_log_info("s=%016llx rcpt=<%s> verify=unavailable action=accept_unverified",
			      (unsigned long long)s->id, addr);
		util_metrics_inc("mxgate_recipients_unverified_total", NULL);
		return true;
	}
	util_log_info("s=%016llx defer client=%s from=<%s> rcpt=<%s> reason=verify_unavailable",
		      (unsigned long long)s->id, s->client_str, s->tx->mail.addr, addr);
	util_metrics_inc("mxgate_recipients_rejected_total", "verify_unavailable");
	smtp_session_reply(s, "451 4.4.3 Recipient address verification failed: try again later");
	return false;
}

/* smtp_cmd_mail - MAIL FROM (RFC 5321 4.1.1.2) with SIZE, BODY, SMTPUTF8. */
void smtp_cmd_mail(struct smtp_session *s, const struct smtp_cmd *c, const char *line)
{
	if (s->state == SMTP_STATE_HELO) {
		smtp_session_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != SMTP_STATE_READY) {
		smtp_session_reply_error(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!s->srv->accepting) {
		/* stopping (SIGTERM): finish no new transaction - the sender retries
		 * elsewhere or later (issue 16) */
		char bye[300];
		snprintf(bye, sizeof(bye), "421 4.3.2 %s Service shutting down, closing channel",
			 s->cfg->hostname);
		smtp_session_close(s, bye);
		return;
	}
	/* counted once: not again when the line runs after the shared store answered */
	if (s->rl_ans == SMTP_RL_NONE && smtp_defence_new_tx(s))
		return;   /* max_transactions: 421, closing */
	struct smtp_tx *tx = util_xcalloc(1, sizeof(*tx));
	char reply[300];
	if (smtp_path_parse(c->arg, "FROM:", true, true, &tx->mail, reply, sizeof(reply)) < 0) {
		free(tx);
		smtp_session_reply_error(s, reply);
		return;
	}
	for (size_t i = 0; i < tx->mail.nparams; i++) {
		const struct smtp_param *p = &tx->mail.params[i];
		if (!s->esmtp) {
			free(tx);
			smtp_session_reply_error(s, "555 5.5.4 MAIL parameters need EHLO");
			return;
		}
		if (strcmp(p->key, "SIZE") == 0) {
			char *end;
			errno = 0;
			long long v = strtoll(p->value, &end, 10);
			if (!p->value[0] || *end || v < 0 || errno) {
				free(tx);
				smtp_session_reply_error(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			if (v > s->cfg->message_size_limit) {
				free(tx);
				smtp_session_reply_error(s, "552 5.3.4 Message size exceeds fixed limit");
				return;
			}
		} else if (strcmp(p->key, "BODY") == 0) {
			if (util_strcaseeq(p->value, "8BITMIME"))
				tx->body_8bitmime = true;
			else if (!util_strcaseeq(p->value, "7BIT")) {
				free(tx);
				smtp_session_reply_error(s, "501 5.5.4 Bad BODY parameter");
				return;
			}
		} else if (strcmp(p->key, "SMTPUTF8") == 0 && !p->value[0]) {
			tx->smtputf8 = true;
		} else {
			free(tx);
			smtp_session_reply_error(s, "555 5.5.4 Unsupported MAIL parameter");
			return;
		}
	}
	if (!tx->smtputf8 && !is_ascii(tx->mail.addr)) {
		free(tx);
		smtp_session_reply_error(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
		return;
	}
	if (smtp_rl_mail(s, tx->mail.addr, line)) {
		free(tx);   /* 451: over a message rate, or waiting for the shared store */
		return;
	}
	s->tx = tx;
	s->state = SMTP_STATE_MAIL;
	if (s->policy) {
		tx->pm = policy_msg_new(s->policy, &s->client, s->helo, tx->mail.addr);
		if (tx->pm) {
			/* a banner or tag comes after the verdict: seal then */
			if (smtp_scan_may_edit(s->cfg))
				policy_msg_seal_later(tx->pm);
			smtp_dnsbl_to_policy(s);
			policy_spf_start(tx->pm, spf_done_cb, s->id, s->srv);
		}
	}
	util_log_debug("s=%016llx mail from=<%s>", (unsigned long long)s->id, tx->mail.addr);
	smtp_session_reply(s, "250 2.1.0 Ok");
}

/* rcpt_hash - FNV-1a of an address, ASCII case folded. */
static uint32_t rcpt_hash(const char *a)
{
	uint32_t h = 2166136261u;

	for (; *a; a++) {
		unsigned char c = (unsigned char)*a;

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h = (h ^ c) * 16777619u;
	}
	return h;
}

/* rcpt_slot - the slot of addr in the index, or the free slot where it
 * belongs. */
static size_t rcpt_slot(const struct smtp_tx *tx, const char *addr)
{
	size_t mask = tx->rcpt_nslots - 1;
	size_t i = rcpt_hash(addr) & mask;

	while (tx->rcpt_slots[i] != 0 &&
	       !util_strcaseeq(tx->rcpts.v[tx->rcpt_slots[i] - 1], addr))
		i = (i + 1) & mask;
	return i;
}

/* tx_add_rcpt - add addr unless the transaction has it already (ASCII
 * case-insensitive, as RFC 5321 leaves local parts to the downstream);
 * true when added.  Hashed, so max_recipients in the ten thousands costs
 * no quadratic time. */
static bool tx_add_rcpt(struct smtp_tx *tx, const char *addr)
{
	size_t i;

	if (tx->rcpts.n * 2 + 2 > tx->rcpt_nslots) {
		size_t n = tx->rcpt_nslots ? tx->rcpt_nslots * 2 : 16;

		free(tx->rcpt_slots);
		tx->rcpt_slots = util_xcalloc(n, sizeof(*tx->rcpt_slots));
		tx->rcpt_nslots = n;
		for (size_t k = 0; k < tx->rcpts.n; k++)
			tx->rcpt_slots[rcpt_slot(tx, tx->rcpts.v[k])] = (uint32_t)(k + 1);
	}
	i = rcpt_slot(tx, addr);
	if (tx->rcpt_slots[i] != 0)
		return false;
	util_strlist_add(&tx->rcpts, addr);
	tx->rcpt_slots[i] = (uint32_t)tx->rcpts.n;
	return true;
}

/* smtp_cmd_rcpt - RCPT TO (RFC 5321 4.1.1.3): relay control, limits, SPF. */
void smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c, const char *line)
{
	const struct config *cfg = s->cfg;
	if (s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT) {
		smtp_session_reply_error(s, s->state == SMTP_STATE_HELO ? "503 5.5.1 Error: send HELO/EHLO first"
							   : "503 5.5.1 Error: need MAIL command");
		return;
	}
	struct smtp_tx *tx = s->tx;
	/* [dnsbl] decide_at = rcpt: every RCPT of a blocked client gets 554. */
	if (smtp_dnsbl_rcpt_wait(s)) {
		free(s->pending_line);
		s->pending_line = util_xstrdup(line);
		s->wait = SMTP_WAIT_DNSBL;
		return;
	}
	if (smtp_dnsbl_rejects(s)) {
		char reply[400];
		util_log_info("s=%016llx reject client=%s from=<%s> reason=dnsbl site=%s score=%d",
			      (unsigned long long)s->id, s->client_str, tx->mail.addr,
			      s->dnsbl_blocked_by, s->dnsbl_score);
		util_metrics_inc("mxgate_recipients_rejected_total", "dnsbl");
		/* junk: else a blocked client repeating RCPT holds its slot
		 * until max_session_time (red team finding) */
		if (smtp_defence_junk(s))
			return;
		smtp_session_reply(s, "%s", smtp_dnsbl_reply(s, reply, sizeof(reply)));
		return;
	}
	/* Refusing on SPF needs the SPF result, and so does a per-sender rate
	 * limit (shared only by a sender SPF passed for): suspend this RCPT
	 * until then. */
	if (tx->pm && (cfg->spf_reject_fail || cfg->spf_temperror_defer || smtp_rl_wants_spf(s)) &&
	    !policy_spf_done(tx->pm)) {
		free(s->pending_line);
		s->pending_line = util_xstrdup(line);
		s->wait = SMTP_WAIT_SPF;
		return;
	}
	if (tx->pm) {
		const char *spf_reply = policy_spf_reply(tx->pm);
		if (spf_reply) {
			smtp_session_reply_error(s, spf_reply);
			return;
		}
	}
	struct smtp_path path;
	char reply[300];
	if (smtp_path_parse(c->arg, "TO:", tx->smtputf8, false, &path, reply, sizeof(reply)) < 0) {
		smtp_session_reply_error(s, reply);
		return;
	}
	if (path.nparams > 0) {
		smtp_session_reply_error(s, "555 5.5.4 Unsupported RCPT parameter");
		return;
	}
	/* RFC 5321 4.5.1: postmaster (any case) MUST be accepted at every
	 * domain we serve, and <postmaster> without a domain (the parser lets
	 * only that through) too: it is the postmaster of the primary domain.
	 * Neither is subject to a recipient list. */
	bool postmaster = false;
	if (strchr(path.addr, '@') == NULL) {
		postmaster = cfg->primary_domain &&
			     strlen(cfg->primary_domain) + 11 < sizeof(path.addr);
		if (postmaster) {
			util_log_info("s=%016llx rcpt=<%s> to=<postmaster@%s> reason=postmaster",
				      (unsigned long long)s->id, path.addr, cfg->primary_domain);
			snprintf(path.addr, sizeof(path.addr), "postmaster@%s",
				 cfg->primary_domain);
		}
	} else if (strncasecmp(path.addr, "postmaster@", 11) == 0) {
		postmaster = util_strlist_has_case(&cfg->accepted_domains, path.addr + 11);
	}
	if (smtp_addr_is_relay_hack(path.addr) || !util_domain_of(path.addr)) {
		util_log_info("s=%016llx reject rcpt=<%s> reason=relay_hack", (unsigned long long)s->id,
			      path.addr);
		util_metrics_inc("mxgate_recipients_rejected_total", "relay_hack");
		smtp_session_reply_error(s, "550 5.7.1 Relay access denied");
		return;
	}
	enum config_rcpt known = postmaster ? CONFIG_RCPT_LISTED : config_rcpt_check(cfg, path.addr);
	if (known == CONFIG_RCPT_RELAY || known == CONFIG_RCPT_UNKNOWN) {
		bool domain_ok = known == CONFIG_RCPT_UNKNOWN;
		util_log_info("s=%016llx reject client=%s from=<%s> rcpt=<%s> reason=%s",
			      (unsigned long long)s->id, s->client_str, tx->mail.addr, path.addr,
			      domain_ok ? "unknown_user" : "relay_denied");
		util_metrics_inc("mxgate_recipients_rejected_total",
				 domain_ok ? "unknown_user" : "relay_denied");
		smtp_session_reply_error(s, domain_ok ? "550 5.1.1 Recipient address rejected: User unknown"
					 : "550 5.7.1 Relay access denied");
		return;
	}
	/* The envelope must stay readable: the start-up scan refuses one over
	 * QUEUE_ENVELOPE_MAX (it would land in corrupt/ after a 250), so the
	 * addresses may fill a quarter of it; the rest is per-recipient state
	 * and replies written by later delivery attempts. */
	if (tx->rcpts.n >= (size_t)cfg->max_recipients ||
	    tx->rcpt_bytes + strlen(path.addr) + 16 > QUEUE_ENVELOPE_MAX / 4) {
		smtp_session_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (smtp_rl_rcpt(s, path.addr, line))
		return;   /* 451: over a recipient rate, or waiting for the shared store */
	/* Not on a list: the downstream may know (issue 11, no backscatter). */
	if (known == CONFIG_RCPT_OPEN && !rcpt_verify(s, path.addr, line))
		return;
	if (tx_add_rcpt(tx, path.addr))
		tx->rcpt_bytes += strlen(path.addr) + 16;
	else if (smtp_defence_junk(s))
		return; /* the same RCPT again changes nothing: junk, as NOOP (red team) */
	s->state = SMTP_STATE_RCPT;
	smtp_session_reply(s, "250 2.1.5 Ok");
}

