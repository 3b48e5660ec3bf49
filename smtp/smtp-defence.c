/*
 * smtp-defence.c - sessions that hold slots without sending mail (issue 17):
 * junk commands (NOOP, RSET, VRFY, HELP, a repeated HELO/EHLO, a RCPT
 * repeating one the transaction has, a RCPT refused for a DNSBL listing)
 * counted against junk_command_limit,
 * a cap on a session's lifetime (max_session_time; a message in progress
 * gets data_timeout more to finish) and on its transactions
 * (max_transactions), and stress mode: above stress_threshold percent of
 * max_connections, every session between commands (or between two reads
 * of a message) gets the short stress_command_timeout and the lower stress_junk_command_limit (Postfix's
 * stress mode), so 1,000 NOOP-every-25-seconds connections cannot fill
 * max_connections and lock everyone else out.
 *
 * Why a queued message resets the junk count: a busy MTA that sends RSET
 * between hundreds of messages on one connection is doing work; a session
 * that only sends NOOP is not.
 *
 * Ownership: the session owns life_ev (freed by smtp_defence_end).  The
 * server's stress flag lives in struct smtp_server.
 *
 * Diagnostics: "s=ID cut client=IP reason=junk_commands|session_time|
 * transactions"; "- stress on|off sessions=N limit=M"; counters
 * mxgate_sessions_cut_total{reason} and mxgate_stress_periods_total.
 */
#include <event2/event.h>

#include "smtp-server-internal.h"

/* in_stress - the session count is above the stress threshold. */
static bool in_stress(const struct smtp_server *srv)
{
	const struct config *cfg = srv->cfg;
	if (cfg->stress_threshold <= 0)
		return false;
	return (int64_t)srv->nsessions * 100 >
	       (int64_t)cfg->max_connections * cfg->stress_threshold;
}

/* cut - close the session for reason (logged and counted), with 421 text,
 * or without a reply when text is NULL (inside a TLS handshake or a PROXY
 * header no SMTP reply can be sent). */
static void cut(struct smtp_session *s, const char *reason, const char *text)
{
	char line[300];
	if (text != NULL)
		snprintf(line, sizeof(line), "421 4.7.0 %s %s", s->cfg->hostname, text);
	util_log_info("s=%016llx cut client=%s reason=%s junk=%d transactions=%d%s%s",
	              (unsigned long long)s->id, s->client_str, reason, s->junk, s->transactions,
	              s->srv->stress ? " stress=yes" : "",
	              s->state == SMTP_STATE_TLS     ? " in=tls_handshake"
	              : s->state == SMTP_STATE_PROXY ? " in=proxy_header"
	                                             : "");
	util_metrics_inc("mxgate_sessions_cut_total", reason);
	smtp_session_close(s, text != NULL ? line : NULL);
}

/* life_cb - max_session_time is up: close now between commands, or after
 * the transaction in progress (a message being received is not cut).  A
 * message still being received data_timeout later is cut all the same:
 * data_timeout only bounds the pause between two reads, so one byte every
 * few minutes kept a DATA - and its slot - open for ever (red team). */
static void life_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)fd;
	(void)what;
	if (s->state == SMTP_STATE_CLOSING)
		return;
	if (s->state == SMTP_STATE_DATA) {
		if (!s->expired) {
			struct timeval tv = {.tv_sec = s->cfg->data_timeout, .tv_usec = 0};
			s->expired = true;
			event_add(s->life_ev, &tv); /* the grace to finish the message */
			return;
		}
		cut(s, "session_time", "Error: session too long, please reconnect");
		return;
	}
	if (s->state == SMTP_STATE_TLS || s->state == SMTP_STATE_PROXY) {
		/* A handshake or PROXY header dripped a byte at a time renews
		 * command_timeout at each byte: without this it held its slot
		 * for ever.  Nothing was accepted; close without a reply. */
		cut(s, "session_time", NULL);
		return;
	}
	if (s->wait != SMTP_WAIT_NONE) {
		s->expired = true;
		return;
	}
	cut(s, "session_time", "Error: session too long, please reconnect");
}

/* smtp_defence_start - arm the lifetime timer. */
int smtp_defence_start(struct smtp_session *s)
{
	struct timeval tv = {.tv_sec = s->cfg->max_session_time, .tv_usec = 0};
	s->life_ev = event_new(s->srv->base, -1, 0, life_cb, s);
	if (!s->life_ev)
		return -1;
	return event_add(s->life_ev, &tv);
}

/* smtp_defence_end - free the lifetime timer. */
void smtp_defence_end(struct smtp_session *s)
{
	if (s->life_ev)
		event_free(s->life_ev);
	s->life_ev = NULL;
}

/* smtp_defence_command_timeout - the idle timeout between commands. */
void smtp_defence_command_timeout(struct smtp_session *s)
{
	s->stress_timeout = s->srv->stress;
	smtp_session_set_timeout(s, s->stress_timeout ? s->cfg->stress_command_timeout
	                                              : s->cfg->command_timeout);
}

/* smtp_defence_data_timeout - the timeout between two reads of a message:
 * data_timeout, at most stress_command_timeout in stress mode - as
 * Postfix's stress-dependent smtpd_timeout, which DATA obeys too; else a
 * flood of clients dribbling their DATA kept their slots through stress
 * mode (red team). */
void smtp_defence_data_timeout(struct smtp_session *s)
{
	int t = s->cfg->data_timeout;
	s->stress_timeout = s->srv->stress;
	if (s->stress_timeout && s->cfg->stress_command_timeout < t)
		t = s->cfg->stress_command_timeout;
	smtp_session_set_timeout(s, t);
}

/* smtp_defence_junk - count one junk command. */
bool smtp_defence_junk(struct smtp_session *s)
{
	int limit = s->srv->stress ? s->cfg->stress_junk_command_limit : s->cfg->junk_command_limit;
	if (++s->junk <= limit)
		return false;
	cut(s, "junk_commands", "Error: too many NOOP/RSET/VRFY/HELP commands");
	return true;
}

/* smtp_defence_new_tx - one more MAIL command. */
bool smtp_defence_new_tx(struct smtp_session *s)
{
	if (s->transactions < s->cfg->max_transactions) {
		s->transactions++;
		return false;
	}
	cut(s, "transactions", "Error: too many transactions in one session, please reconnect");
	return true;
}

/* smtp_defence_expired - the lifetime ran out during the last transaction. */
bool smtp_defence_expired(struct smtp_session *s)
{
	if (!s->expired)
		return false;
	cut(s, "session_time", "Error: session too long, please reconnect");
	return true;
}

/* smtp_defence_queued - work done: junk counting starts again. */
void smtp_defence_queued(struct smtp_session *s)
{
	s->junk = 0;
}

/* smtp_defence_stress_update - enter or leave stress mode. */
void smtp_defence_stress_update(struct smtp_server *srv)
{
	bool on = in_stress(srv);
	if (on == srv->stress)
		return;
	srv->stress = on;
	util_log_info("- stress %s sessions=%zu limit=%d threshold=%d%%", on ? "on" : "off",
	              srv->nsessions, srv->cfg->max_connections, srv->cfg->stress_threshold);
	if (!on)
		return; /* long timeouts come back with each session's next command */
	util_metrics_inc("mxgate_stress_periods_total", NULL);
	/* Sessions idle between commands still hold command_timeout, and
	 * messages being received data_timeout: shorten them now, or the
	 * slots they hold stay held for minutes. */
	for (size_t b = 0; b < SMTP_HASH_BUCKETS; b++) {
		for (struct smtp_session *s = srv->sessions[b]; s; s = s->hnext) {
			if (s->wait == SMTP_WAIT_NONE && s->bev && s->state == SMTP_STATE_DATA) {
				smtp_defence_data_timeout(s);
				continue;
			}
			if (s->wait != SMTP_WAIT_NONE || !s->bev ||
			    (s->state != SMTP_STATE_HELO && s->state != SMTP_STATE_READY &&
			     s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT))
				continue;
			smtp_defence_command_timeout(s);
		}
	}
}
