/*
 * smtp-session.c - one ESMTP server session (RFC 5321): connection set-up
 * (PROXY header from trusted peers, CIDR access lists, per-IP limits), the
 * command state machine with its command table, STARTTLS (RFC 3207), strict
 * CRLF line handling, timeouts, error limits and the deferred teardown.
 * MAIL and RCPT are in smtp-session-env.c, message data in
 * smtp-session-data.c.
 *
 * Ownership: the server owns the session (registry); the session owns its
 * bufferevent (and through it the socket and the SSL object), its
 * transaction and its deferred-free event.  A session is never freed inside
 * one of its own callbacks: smtp_session_close() arms free_ev.
 *
 * Diagnostics: one log line per session event, session id first
 * ("s=0000000000000007 client=127.0.0.1 ..."), reply codes with RFC 3463
 * enhanced status codes.
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "smtp-server-internal.h"

#define OUTPUT_HIGH (256 * 1024)   /* stop reading while replies pile up */
/* Input buffered at most (libevent stops reading above it).  Reading goes on
 * while a session waits for SPF, rDNS, a verdict or a commit, so a client
 * that hangs up is noticed and its policy jobs are cancelled; what it
 * pipelined meanwhile waits in this buffer. */
#define INPUT_HIGH (64 * 1024)

static void process_input(struct smtp_session *s);
static bool line_too_slow(struct smtp_session *s, int seconds);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* ------------------------------------------------------------------ replies */

/* smtp_session_reply - one reply line (CRLF added). */
void smtp_session_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
	if (util_log_enabled(UTIL_LOG_DEBUG)) {
		char line[600];
		va_start(ap, fmt);
		vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		util_log_debug("s=%016llx out=\"%s\"", (unsigned long long)s->id, line);
	}
}

/* smtp_session_set_timeout - read and write timeout in seconds. */
void smtp_session_set_timeout(struct smtp_session *s, int seconds)
{
	struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/* ------------------------------------------------------------------ teardown */

/* smtp_tx_free - end the transaction: abort the spool, drop policy state. */
void smtp_tx_free(struct smtp_tx *tx)
{
	if (!tx)
		return;
	queue_spool_abort(tx->spool);
	queue_pin_free(tx->ingest_pin);
	free(tx->ingest_rcpt);
	policy_msg_free(tx->pm);
	free(tx->scan_headers);
	free(tx->subject);
	util_buf_free(&tx->fr_hdrs);
	free(tx->quarantine);
	free(tx->quarantine_verdict);
	util_strlist_free(&tx->rcpts);
	util_strlist_free(&tx->rl_domains);
	free(tx->rcpt_slots);
	smtp_hdrsplit_free(&tx->hs);
	free(tx);
}

/* smtp_session_destroy - free everything now. */
void smtp_session_destroy(struct smtp_session *s)
{
	util_log_info("s=%016llx disconnect client=%s helo=%s errors=%d", (unsigned long long)s->id,
		      s->client_str, s->helo[0] ? s->helo : "-", s->errors);
	smtp_content_abandon(s); /* its check is for nobody now */
	smtp_tx_free(s->tx);
	smtp_defence_end(s);
	smtp_pregreet_end(s);
	util_strlist_free(&s->dnsbl_zones);
	smtp_server_unregister(s->srv, s);
	smtp_server_ip_release(s->srv, s);
	if (s->bev)
		bufferevent_free(s->bev);
	if (s->free_ev)
		event_free(s->free_ev);
	free(s->pending_line);
	/* last: the transaction above may have used the pair's policy */
	smtp_server_gen_put(s->srv, s->gen);
	free(s);
}

/* pending_output - bytes not yet handed to the kernel (TLS: both layers). */
static size_t pending_output(struct smtp_session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

/* free_cb - deferred free; waits (bounded) for the last reply to leave. */
static void free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	static const struct timeval tick = {0, 20000};
	if (!s->dead && pending_output(s) > 0 && util_mono_ms() < s->close_deadline) {
		event_add(s->free_ev, &tick);
		return;
	}
	smtp_session_destroy(s);
}

/* schedule_free - free from the loop, never from inside a callback. */
static void schedule_free(struct smtp_session *s)
{
	if (s->state != SMTP_STATE_CLOSING)
		s->close_deadline = util_mono_ms() + 10000;
	s->state = SMTP_STATE_CLOSING;
	s->wait = SMTP_WAIT_NONE;
	bufferevent_disable(s->bev, EV_READ);
	if (!event_pending(s->free_ev, EV_TIMEOUT, NULL))
		event_active(s->free_ev, EV_TIMEOUT, 0);
}

/* smtp_session_close - final reply (or none), then free once flushed (a
 * peer that does not read gets 10 seconds). */
void smtp_session_close(struct smtp_session *s, const char *reply)
{
	if (s->state == SMTP_STATE_CLOSING)
		return;
	if (reply)
		smtp_session_reply(s, "%s", reply);
	schedule_free(s);
}

/* smtp_session_count_error - RFC 5321 4.5.3.1 does not cap errors; we do. */
void smtp_session_count_error(struct smtp_session *s)
{
	if (++s->errors >= s->cfg->max_errors) {
		char line[300];
		snprintf(line, sizeof(line), "421 4.7.0 %s Error: too many errors",
			 s->cfg->hostname);
		util_log_info("s=%016llx too many errors client=%s", (unsigned long long)s->id,
			      s->client_str);
		smtp_session_close(s, line);
	}
}

/* smtp_session_reply_error - see smtp-server-internal.h. */
void smtp_session_reply_error(struct smtp_session *s, const char *line)
{
	smtp_session_reply(s, "%s", line);
	smtp_session_count_error(s);
}

/* ------------------------------------------------------------------ set-up */

/* greet - access control, per-IP limit, then the banner. */
static void greet(struct smtp_session *s)
{
	const struct config *cfg = s->cfg;
	util_addr_str(&s->client, s->client_str, sizeof(s->client_str));
	/* Deny wins over allow; an allow list, when present, is exhaustive. */
	if (util_cidr_list_match(&cfg->deny, &s->client) ||
	    (cfg->allow.n > 0 && !util_cidr_list_match(&cfg->allow, &s->client))) {
		util_log_info("s=%016llx refused client=%s reason=access", (unsigned long long)s->id,
			      s->client_str);
		util_metrics_inc("mxgate_connections_refused_total", "access");
		smtp_session_close(s, "554 5.7.1 Access denied");
		return;
	}
	int slot = smtp_server_ip_acquire(s->srv, s);
	if (slot < 0) {
		char line[300];
		const char *why = slot == -1 ? "max_connections_per_ip" : "max_connections_per_net";
		snprintf(line, sizeof(line), "421 4.7.0 %s Too many connections from your %s, "
			 "try again later", cfg->hostname, slot == -1 ? "address" : "network");
		util_log_info("s=%016llx refused client=%s reason=%s", (unsigned long long)s->id,
			      s->client_str, why);
		util_metrics_inc("mxgate_connections_refused_total", why);
		smtp_session_close(s, line);
		return;
	}
	char rl_line[400];
	s->rl_ans = SMTP_RL_NONE;
	if (smtp_rl_connect(s, rl_line, sizeof(rl_line))) {
		util_metrics_inc("mxgate_connections_refused_total", "ratelimit");
		smtp_session_close(s, rl_line);
		return;
	}
	util_log_info("s=%016llx connect client=%s peer_port=%d", (unsigned long long)s->id,
		      s->client_str, util_addr_port(&s->client));
	smtp_server_rdns_start(s->srv, s);
	s->state = SMTP_STATE_HELO;
	smtp_defence_command_timeout(s);
	int holds = smtp_dnsbl_start(s) ? SMTP_HOLD_DNSBL : 0;   /* decide_at = connect */
	holds |= smtp_pregreet_start(s);
	if (s->rl_ans == SMTP_RL_PENDING)
		holds |= SMTP_HOLD_STATE;   /* [state] redis: the connection rates */
	if (holds) {
		s->greet_holds = holds;
		s->wait = SMTP_WAIT_GREET;
		if (!(holds & (SMTP_HOLD_DNSBL | SMTP_HOLD_STATE)))
			smtp_pregreet_continuation(s);
		return;
	}
	smtp_session_banner(s);
}

/* smtp_session_greet_release - one reason to hold the banner is gone.  The
 * "220-" line goes out only once the DNSBL verdict is in, so a blocked
 * client gets a clean 554 as its first reply, never after a 220-. */
void smtp_session_greet_release(struct smtp_session *s, int hold)
{
	if (s->state == SMTP_STATE_CLOSING || !(s->greet_holds & hold))
		return;
	s->greet_holds &= ~hold;
	if (hold == SMTP_HOLD_DNSBL && smtp_dnsbl_rejects(s)) {
		smtp_dnsbl_refuse(s);
		return;
	}
	if (hold == SMTP_HOLD_STATE && s->rl_ans == SMTP_RL_OVER) {
		util_metrics_inc("mxgate_connections_refused_total", "ratelimit");
		smtp_session_close(s, s->rl_line);
		return;
	}
	if (s->greet_holds & (SMTP_HOLD_DNSBL | SMTP_HOLD_STATE))
		return;
	if (s->greet_holds & SMTP_HOLD_DELAY) {
		smtp_pregreet_continuation(s);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	smtp_session_banner(s);
	smtp_session_resume(s);
}

/* smtp_session_banner - the 220 greeting (RFC 5321 4.2). */
void smtp_session_banner(struct smtp_session *s)
{
	if (s->greeted)
		return;
	s->greeted = true;
	smtp_session_reply(s, "220 %s ESMTP %s", s->cfg->hostname,
			   s->cfg->banner_text ? s->cfg->banner_text : "mxgate");
}

/* smtp_session_start - a new connection from the listener. */
void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			int salen)
{
	struct smtp_session *s = util_xcalloc(1, sizeof(*s));
	s->id = util_session_id_next();
	s->srv = srv;
	s->gen = smtp_server_gen_get(srv);
	s->cfg = s->gen->cfg;
	s->policy = s->gen->policy;
	s->first_line = true;
	util_addr_from_sockaddr(&s->peer, sa, (socklen_t)salen);
	s->client = s->peer;
	util_addr_str(&s->client, s->client_str, sizeof(s->client_str));
	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->free_ev = event_new(srv->base, -1, 0, free_cb, s);
	if (!s->bev || !s->free_ev) {
		util_log_err("- cannot set up a session: out of memory");
		if (!s->bev)
			evutil_closesocket(fd);
		else
			bufferevent_free(s->bev);
		if (s->free_ev)
			event_free(s->free_ev);
		smtp_server_gen_put(srv, s->gen);
		free(s);
		return;
	}
	smtp_server_register(srv, s);
	if (smtp_defence_start(s) < 0)
		util_log_err("s=%016llx cannot arm max_session_time: out of memory",
			     (unsigned long long)s->id);
	/* libevent reads at most 4 KiB per callback by default: a 1 MiB message
	 * cost 256 reads, FIONREADs, parser calls and spool writes.  Up to 64
	 * KiB per read only while that much is waiting; idle sessions keep no
	 * buffer (docs/performance.md). */
	bufferevent_set_max_single_read(s->bev, 64 * 1024);
	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (util_cidr_list_match(&s->cfg->trusted_proxies, &s->peer)) {
		/* A trusted load balancer speaks first: the PROXY header. */
		s->state = SMTP_STATE_PROXY;
		smtp_session_set_timeout(s, s->cfg->proxy_timeout);
		return;
	}
	greet(s);
}

/* handle_proxy - parse the PROXY v1/v2 header of a trusted peer. */
static bool handle_proxy(struct smtp_session *s, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	if (len == 0)
		return false;
	size_t take = len < SMTP_PROXY_V2_MAX ? len : SMTP_PROXY_V2_MAX;
	const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)take);
	struct smtp_proxy_info info;
	int n = smtp_proxy_parse(p, take, &info);
	if (n == 0 && take < SMTP_PROXY_V2_MAX) {
		if (line_too_slow(s, s->cfg->proxy_timeout))
			smtp_session_close(s, NULL);
		return false;   /* need more */
	}
	s->line_deadline = 0;
	if (n <= 0) {
		util_log_info("s=%016llx refused peer=%s reason=bad_proxy_header",
			      (unsigned long long)s->id, s->client_str);
		util_metrics_inc("mxgate_connections_refused_total", "bad_proxy_header");
		smtp_session_close(s, NULL);
		return false;
	}
	evbuffer_drain(in, (size_t)n);
	if (!info.local)
		s->client = info.src;
	util_addr_str(&s->client, s->client_str, sizeof(s->client_str));
	char peer[INET6_ADDRSTRLEN];
	util_log_info("s=%016llx proxy peer=%s client=%s", (unsigned long long)s->id,
		      util_addr_str(&s->peer, peer, sizeof(peer)), s->client_str);
	greet(s);
	return s->state != SMTP_STATE_CLOSING;
}

/* ------------------------------------------------------------------ commands */

/* reset_tx - RSET semantics (RFC 5321 4.1.1.5). */
static void reset_tx(struct smtp_session *s)
{
	smtp_tx_free(s->tx);
	s->tx = NULL;
	free(s->pending_line);
	s->pending_line = NULL;
	s->verify_result = SMTP_VERIFY_PENDING;
	s->verify_addr[0] = '\0';
	if (s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT)
		s->state = SMTP_STATE_READY;
}

/* cmd_helo - HELO and EHLO (RFC 5321 4.1.1.1); EHLO lists extensions. */
static void cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
	bool ehlo = c->verb == SMTP_VERB_EHLO;
	/* a name or an address literal never starts with '"', '(' or '<';
	 * logged as helo=..., such a start would take in the keys after it
	 * (from=, verdicts) as one value (util-logjson.c) */
	if (!c->arg[0] || strchr(c->arg, ' ') || strlen(c->arg) >= sizeof(s->helo) ||
	    strchr("\"(<", c->arg[0]) != NULL) {
		smtp_session_reply_error(s, ehlo ? "501 5.5.4 Syntax: EHLO hostname" : "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	reset_tx(s);
	snprintf(s->helo, sizeof(s->helo), "%s", c->arg);
	s->esmtp = ehlo;
	s->state = SMTP_STATE_READY;
	if (!ehlo) {
		smtp_session_reply(s, "250 %s", s->cfg->hostname);
		return;
	}
	smtp_session_reply(s, "250-%s", s->cfg->hostname);
	smtp_session_reply(s, "250-PIPELINING");
	smtp_session_reply(s, "250-SIZE %lld", (long long)s->cfg->message_size_limit);
	if (s->srv->tls && !s->tls_active)
		smtp_session_reply(s, "250-STARTTLS");
	smtp_session_reply(s, "250-ENHANCEDSTATUSCODES");
	smtp_session_reply(s, "250-8BITMIME");
	smtp_session_reply(s, "250 SMTPUTF8");
}

/* cmd_data - DATA (RFC 5321 4.1.1.4). */
static void cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (c->arg[0]) {
		smtp_session_reply_error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->state == SMTP_STATE_HELO || s->state == SMTP_STATE_READY) {
		smtp_session_reply_error(s, s->state == SMTP_STATE_HELO ? "503 5.5.1 Error: send HELO/EHLO first"
							   : "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->state != SMTP_STATE_RCPT) {
		smtp_session_reply_error(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	smtp_data_begin(s);
}

/* start_tls - RFC 3207 section 4.2: after 220, discard everything the
 * client sent after STARTTLS (CVE-2011-0411), wrap the socket, forget HELO. */
static void start_tls(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t junk = evbuffer_get_length(in);
	if (junk)
		util_log_info("s=%016llx starttls discarded=%zu reason=pipelined_after_starttls",
			      (unsigned long long)s->id, junk);
	evbuffer_drain(in, junk);
	SSL *ssl = SSL_new(s->srv->tls);
	if (!ssl) {
		smtp_session_close(s, NULL);
		return;
	}
	struct bufferevent *tls = bufferevent_openssl_filter_new(
		s->srv->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!tls) {
		SSL_free(ssl);
		smtp_session_close(s, NULL);
		return;
	}
	s->bev = tls;
	s->state = SMTP_STATE_TLS;
	s->helo[0] = 0;
	s->esmtp = false;
	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	/* The timeouts are set on the TLS filter, which only counts decrypted
	 * bytes: a handshake dribbled out byte by byte still ends after
	 * command_timeout (test_dribbled_client_hello_hits_handshake_deadline). */
	smtp_defence_command_timeout(s);
}

/* cmd_starttls - STARTTLS (RFC 3207). */
static void cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (!s->srv->tls) {
		smtp_session_reply_error(s, "502 5.5.1 Error: command not supported");
		return;
	}
	if (s->tls_active) {
		smtp_session_reply_error(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (c->arg[0]) {
		smtp_session_reply_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->state == SMTP_STATE_HELO) {
		smtp_session_reply_error(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	reset_tx(s);
	smtp_session_reply(s, "220 2.0.0 Ready to start TLS");
	start_tls(s);
}

/* dispatch - the command table (STYLE rule 16). */
static void dispatch(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	util_log_debug("s=%016llx in=\"%.*s\"", (unsigned long long)s->id, (int)len, line);
	s->rl_ans = SMTP_RL_NONE;   /* a new command line: its own rate-limit answer */
	if (smtp_defence_expired(s))
		return;   /* max_session_time ran out during the last transaction */
	if (smtp_cmd_parse(line, len, &c) < 0) {
		smtp_session_reply_error(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	switch (c.verb) {
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		/* a repeated greeting is junk too (the first, and the one
		 * after STARTTLS, are free): else EHLO every few seconds holds
		 * a slot past the (stress) junk limit (red team finding) */
		if (s->helo[0] && smtp_defence_junk(s))
			break;
		cmd_helo(s, &c);
		break;
	case SMTP_VERB_MAIL:
		smtp_cmd_mail(s, &c, line);
		break;
	case SMTP_VERB_RCPT:
		smtp_cmd_rcpt(s, &c, line);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s, &c);
		break;
	case SMTP_VERB_RSET:
		if (smtp_defence_junk(s))
			break;
		if (c.arg[0]) {
			smtp_session_reply_error(s, "501 5.5.4 Syntax: RSET");
			break;
		}
		reset_tx(s);
		smtp_session_reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_NOOP:
		if (smtp_defence_junk(s))
			break;
		smtp_session_reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_QUIT:
		smtp_session_close(s, "221 2.0.0 Bye");
		break;
	case SMTP_VERB_VRFY:
		if (smtp_defence_junk(s))
			break;
		/* RFC 5321 3.5.3: 252 when we will not verify. */
		smtp_session_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message");
		break;
	case SMTP_VERB_EXPN:
		smtp_session_reply_error(s, "502 5.5.1 Error: command not supported");
		break;
	case SMTP_VERB_HELP:
		if (smtp_defence_junk(s))
			break;
		smtp_session_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
				      "VRFY HELP STARTTLS; see RFC 5321");
		break;
	case SMTP_VERB_STARTTLS:
		cmd_starttls(s, &c);
		break;
	case SMTP_VERB_AUTH:
	case SMTP_VERB_BDAT:
	case SMTP_VERB_UNKNOWN:
		smtp_session_reply_error(s, "502 5.5.1 Error: command not supported");
		break;
	}
	/* Stress mode began or ended since the idle timeout was armed. */
	if (s->stress_timeout != s->srv->stress && s->wait == SMTP_WAIT_NONE &&
	    (s->state == SMTP_STATE_HELO || s->state == SMTP_STATE_READY ||
	     s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT))
		smtp_defence_command_timeout(s);
}

/* ------------------------------------------------------------------ input */

/* line_too_slow - slowloris defence: the bufferevent timeout only measures
 * silence, so a client sending one byte every few seconds would hold a
 * session forever.  A partial command line (or PROXY header) must be
 * complete within `seconds` of its first byte; true (421 queued, except in
 * the PROXY state, where nothing is said) when that time is up. */
static bool line_too_slow(struct smtp_session *s, int seconds)
{
	int64_t now = util_mono_ms();
	if (s->line_deadline == 0) {
		s->line_deadline = now + (int64_t)seconds * 1000;
		return false;
	}
	if (now <= s->line_deadline)
		return false;
	util_log_info("s=%016llx timeout client=%s state=%d reason=slow_line",
		      (unsigned long long)s->id, s->client_str, (int)s->state);
	if (s->state != SMTP_STATE_PROXY)
		smtp_session_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
	return true;
}

/* read_command_line - one line from in; false when more bytes are needed.
 * Only CRLF ends a line (RFC 5321 2.3.8): a bare LF or CR inside is not a
 * line end, so "MAIL ...<LF>RCPT ...<CR><LF>" is one bad line, never two
 * commands. */
static bool read_command_line(struct smtp_session *s, struct evbuffer *in)
{
	char line[SMTP_MAX_CMD_LINE + 1];
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF_STRICT);
	if (eol.pos < 0) {
		size_t len = evbuffer_get_length(in);
		if (s->discarding || len > SMTP_MAX_CMD_LINE) {
			/* Over-long line: throw it away as it arrives, but keep
			 * a trailing CR that may start the CRLF ending it. */
			s->discarding = true;
			if (len > 1)
				evbuffer_drain(in, len - 1);
		}
		if ((len > 0 || s->discarding) && line_too_slow(s, s->cfg->command_timeout))
			smtp_session_close(s, NULL);   /* line_too_slow replied */
		return false;
	}
	s->line_deadline = 0;
	size_t n = (size_t)eol.pos;   /* bytes before the CRLF */
	if (s->discarding || n + 2 > SMTP_MAX_CMD_LINE) {
		evbuffer_drain(in, n + 2);
		s->discarding = false;
		smtp_session_reply_error(s, "500 5.5.2 Error: line too long");
		return true;
	}
	evbuffer_remove(in, line, n + 2);
	line[n] = 0;
	if (memchr(line, '\n', n) || memchr(line, '\r', n)) {
		smtp_session_reply_error(s, "500 5.5.2 Error: bare <CR> or <LF> received; lines end with <CR><LF>");
		return true;
	}
	if (memchr(line, '\0', n)) {
		smtp_session_reply_error(s, "500 5.5.2 Error: invalid character in command");
		return true;
	}
	s->first_line = false;
	if (smtp_pregreet_line(s, line, n, in))
		return true;   /* refused: non-SMTP command or bare pipelining */
	dispatch(s, line, n);
	return true;
}

/* out_of_input - nothing complete left to process: a client that already
 * hung up (seen while we were busy) is gone now. */
static void out_of_input(struct smtp_session *s)
{
	if (s->peer_eof && s->state != SMTP_STATE_CLOSING) {
		s->dead = true;
		schedule_free(s);
	}
}

/* process_input - run the state machine over everything buffered. */
static void process_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	if (s->wait == SMTP_WAIT_GREET && s->state != SMTP_STATE_CLOSING &&
	    smtp_pregreet_early(s, in))
		return;   /* talked before the banner */
	for (;;) {
		if (s->wait != SMTP_WAIT_NONE || s->state == SMTP_STATE_CLOSING ||
		    s->state == SMTP_STATE_TLS)
			return;
		if (s->state == SMTP_STATE_PROXY) {
			if (!handle_proxy(s, in)) {
				out_of_input(s);
				return;
			}
			/* what came with the PROXY header came before the
			 * banner too (an early talker behind a load balancer) */
			if (s->wait == SMTP_WAIT_GREET && s->state != SMTP_STATE_CLOSING &&
			    smtp_pregreet_early(s, in))
				return;
			continue;
		}
		if (s->state == SMTP_STATE_DATA) {
			if (!smtp_data_read(s, in)) {
				out_of_input(s);
				return;
			}
			continue;
		}
		if (s->pending_line) {
			/* A suspended RCPT, now that SPF is known; or a MAIL/RCPT
			 * the shared rate counts ([state]) answered. */
			char *line = s->pending_line;
			s->pending_line = NULL;
			struct smtp_cmd c;
			if (smtp_cmd_parse(line, strlen(line), &c) == 0) {
				if (c.verb == SMTP_VERB_MAIL)
					smtp_cmd_mail(s, &c, line);
				else
					smtp_cmd_rcpt(s, &c, line);
			}
			free(line);
			continue;
		}
		if (s->first_line && evbuffer_get_length(in) > 0) {
			size_t n = evbuffer_get_length(in);
			const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(n < 16 ? n : 16));
			if (smtp_proxy_looks_like(p, n < 16 ? n : 16)) {
				util_log_info("s=%016llx refused client=%s reason=untrusted_proxy_header",
					      (unsigned long long)s->id, s->client_str);
				util_metrics_inc("mxgate_connections_refused_total",
						 "untrusted_proxy_header");
				smtp_session_close(s, NULL);
				return;
			}
		}
		if (!read_command_line(s, in)) {
			out_of_input(s);
			return;
		}
		if (pending_output(s) > OUTPUT_HIGH) {
			/* The client does not read its replies: stop reading. */
			bufferevent_disable(s->bev, EV_READ);
			return;
		}
	}
}

/* smtp_session_resume - continue after an asynchronous wait. */
void smtp_session_resume(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_CLOSING)
		return;
	bufferevent_enable(s->bev, EV_READ);
	process_input(s);
}

/* read_cb - bytes arrived. */
static void read_cb(struct bufferevent *bev, void *arg)
{
	process_input(arg);
}

/* write_cb - output flushed: finish a close, or resume reading. */
static void write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	if (s->state == SMTP_STATE_CLOSING)
		return;   /* free_cb polls until the output is gone */
	if (s->wait == SMTP_WAIT_NONE && s->state != SMTP_STATE_TLS &&
	    !(bufferevent_get_enabled(s->bev) & EV_READ)) {
		smtp_session_resume(s);
	}
}

/* tls_established - handshake done: record version and cipher. */
static void tls_established(struct smtp_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	snprintf(s->tls_desc, sizeof(s->tls_desc), "%s %s", SSL_get_version(ssl),
		 SSL_get_cipher_name(ssl));
	s->tls_active = true;
	s->state = SMTP_STATE_HELO;
	util_log_info("s=%016llx tls client=%s version=%s cipher=%s", (unsigned long long)s->id,
		      s->client_str, SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	process_input(s);
}

/* event_cb - EOF, errors, timeouts, TLS handshake completion. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == SMTP_STATE_TLS)
			tls_established(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state == SMTP_STATE_CLOSING) {
			schedule_free(s);
			return;
		}
		char line[300];
		snprintf(line, sizeof(line), "421 4.4.2 %s Error: timeout exceeded",
			 s->cfg->hostname);
		util_log_info("s=%016llx timeout client=%s state=%d", (unsigned long long)s->id,
			      s->client_str, (int)s->state);
		if (s->state == SMTP_STATE_PROXY || s->state == SMTP_STATE_TLS)
			smtp_session_close(s, NULL);
		else
			smtp_session_close(s, line);
		return;
	}
	if ((what & BEV_EVENT_EOF) && s->wait != SMTP_WAIT_NONE &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		/* Hung up after pipelining more commands (a QUIT, say) while
		 * we were busy: answer those first, then go. */
		s->peer_eof = true;
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (s->state == SMTP_STATE_TLS) {
			unsigned long e = bufferevent_get_openssl_error(bev);
			char buf[256] = "connection closed";
			if (e)
				ERR_error_string_n(e, buf, sizeof(buf));
			util_log_info("s=%016llx tls_failed client=%s error=\"%s\"",
				      (unsigned long long)s->id, s->client_str, buf);
		} else if (s->state != SMTP_STATE_CLOSING && s->tx) {
			util_log_info("s=%016llx lost connection client=%s in=%s",
				      (unsigned long long)s->id, s->client_str,
				      s->state == SMTP_STATE_DATA ? "DATA" : "transaction");
		}
		/* A commit in flight finishes on its own: its result finds no
		 * session and is dropped (the message stays queued). */
		s->dead = true;
		schedule_free(s);
	}
}
