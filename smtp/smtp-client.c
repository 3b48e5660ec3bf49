/*
 * smtp-client.c - one outgoing SMTP connection on libevent: greeting, EHLO
 * (HELO fallback), STARTTLS (OpenSSL filter bufferevent, TLS 1.2 minimum,
 * verification per route policy; tls = may goes on in plaintext when STARTTLS
 * is not offered or refused, RFC 7435, and reports a failed handshake so the
 * deliverer can retry the host in plaintext), AUTH PLAIN/LOGIN over TLS only, then
 * transactions: [RSET] MAIL RCPT... DATA, pipelined when the server offers
 * PIPELINING (RFC 2920), the body streamed from disk with dot-stuffing and
 * write-side backpressure (never the whole message in memory).
 *
 * Every step waits on one deadline timer: connect_timeout for the connect and
 * TLS handshake, greeting_timeout for the 220, command_timeout per reply,
 * data_timeout while the body drains and for the reply to the final dot
 * (RFC 5321 4.5.3.2).
 *
 * Ownership: see smtp-client-internal.h.  The client never frees itself
 * inside a callback: smtp_client_free() during a callback only marks it,
 * and a deferred event does the work.
 *
 * Diagnostics: set-up and transaction errors are kept as text such as
 * "4.4.1 connect to 127.0.0.1:25: Connection refused" and reported to the
 * deliverer, which logs them with the queue id; debug lines show the dialogue.
 * A set-up failure always carries a 4.x.x status, whatever the server's
 * reply class (5xx greeting, EHLO/HELO, STARTTLS, AUTH): it describes one
 * host and one session, never a message, so it may not bounce anything.
 */
#include "smtp-client-conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);

/* smtp_client_conn_notify - report an event from a fresh loop iteration.
 * The end of a transaction is never replaced by the loss of the connection
 * in the same iteration (a "421 closing" and the EOF behind it): the owner
 * must get its outcomes back, and finds the client unusable then. */
void smtp_client_conn_notify(struct smtp_client *c, enum smtp_client_event ev)
{
	if (c->notify_pending && c->pending_ev == SMTP_CLIENT_TX_DONE && ev == SMTP_CLIENT_FAILED)
		return;
	c->pending_ev = ev;
	c->notify_pending = true;
	event_active(c->deferred, 0, 0);
}

/* client_really_free - release everything. */
static void client_really_free(struct smtp_client *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->body_fd >= 0)
		close(c->body_fd);
	event_free(c->deadline);
	event_free(c->deferred);
	free(c->host);
	free(c->helo);
	free(c->auth_user);
	if (c->auth_password) {
		OPENSSL_cleanse(c->auth_password, strlen(c->auth_password));
		free(c->auth_password);
	}
	free(c->error);
	free(c->accepted);
	free(c);
}

/* client_deferred_cb - deliver a pending notification, then a pending free. */
static void client_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	/* after a free only CLOSED (the end of a QUIT) is still reported */
	if (c->notify_pending && (!c->free_pending || c->pending_ev == SMTP_CLIENT_CLOSED)) {
		c->notify_pending = false;
		if (c->cb) {
			c->in_cb = true;
			c->cb(c, c->pending_ev, c->arg);
			c->in_cb = false;
		}
	}
	if (c->free_pending)
		client_really_free(c);
}

/* smtp_client_conn_arm - (re)start the deadline; 0 seconds disarms it. */
void smtp_client_conn_arm(struct smtp_client *c, int seconds)
{
	if (seconds <= 0) {
		event_del(c->deadline);
		return;
	}
	struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
	event_add(c->deadline, &tv);
}

/* client_close - drop the connection (no more I/O). */
static void client_close(struct smtp_client *c)
{
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->body_fd >= 0) {
		close(c->body_fd);
		c->body_fd = -1;
	}
	event_del(c->deadline);
}

/* client_quit_done - the QUIT exchange is over: report CLOSED, then free. */
static void client_quit_done(struct smtp_client *c)
{
	client_close(c);
	c->state = CS_DEAD;
	c->free_pending = true;
	smtp_client_conn_notify(c, SMTP_CLIENT_CLOSED);
}

/* smtp_client_conn_fail - the connection is unusable; report it.  In a transaction,
 * recipients without an outcome get the error (deferred). */
void smtp_client_conn_fail(struct smtp_client *c, const char *fmt, ...)
{
	if (c->state == CS_DEAD)
		return;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(c->error);
	c->error = util_xstrdup(buf);
	util_log_debug("smtp-client relay=%s error=(%s)", c->relay, buf);
	enum client_state was = c->state;
	c->state = CS_DEAD;
	client_close(c);
	if (was == CS_QUIT) {
		client_quit_done(c);
		return;
	}
	if ((was == CS_TX || was == CS_BODY) && c->tx) {
		if (c->tx->error == NULL)
			c->tx->error = util_xstrdup(buf);
		for (size_t i = 0; i < c->tx->nidx; i++)
			if (!c->tx->has[i])
				smtp_client_tx_set(c->tx, i, 0, buf);
		smtp_client_conn_tx_settle(c);
		c->tx = NULL;
		smtp_client_conn_notify(c, SMTP_CLIENT_TX_DONE);
		return;
	}
	smtp_client_conn_notify(c, SMTP_CLIENT_FAILED);
}

/* smtp_client_conn_send - write one command line (logged at debug level, AUTH hidden). */
void smtp_client_conn_send(struct smtp_client *c, const char *line)
{
	util_log_debug(
	    "smtp-client relay=%s send=(%.*s)", c->relay,
	    strncmp(line, "AUTH", 4) == 0 || c->state == CS_AUTH ? 10 : (int)strlen(line), line);
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\r\n", line);
}

/* smtp_client_conn_expect - one more reply due, for cmd (rcpt index for RCPT). */
void smtp_client_conn_expect(struct smtp_client *c, enum client_cmd cmd, size_t rcpt)
{
	size_t slot = (c->expect_head + c->nexpect) % CLIENT_MAX_PENDING;
	c->expect[slot] = cmd;
	c->expect_rcpt[slot] = rcpt;
	c->nexpect++;
}

/* client_reply_str - "550 5.1.1 text" on one line. */
static void client_reply_str(const struct smtp_reply *r, char *out, size_t outlen)
{
	snprintf(out, outlen, "%d %s", r->code, r->text);
	for (char *p = out; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

/* client_base64 - malloc'd base64 of p[0..n). */
static char *client_base64(const void *p, size_t n)
{
	char *out = util_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* client_ehlo_caps - read EHLO keywords (RFC 5321 4.1.1.1). */
static void client_ehlo_caps(struct smtp_client *c, const struct smtp_reply *r)
{
	c->pipelining = c->starttls = c->eightbitmime = c->smtputf8 = false;
	c->has_size = c->auth_plain = c->auth_login = false;
	c->size_max = 0;
	const char *line = r->text;
	bool first = true;
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char kw[256];
		snprintf(kw, sizeof(kw), "%.*s", (int)(len < 255 ? len : 255), line);
		if (!first) {
			char *sp = kw + strcspn(kw, " =");
			char sep = *sp;
			*sp = '\0';
			const char *params = sep ? sp + 1 : "";
			if (util_strcaseeq(kw, "PIPELINING"))
				c->pipelining = true;
			else if (util_strcaseeq(kw, "STARTTLS"))
				c->starttls = true;
			else if (util_strcaseeq(kw, "8BITMIME"))
				c->eightbitmime = true;
			else if (util_strcaseeq(kw, "SMTPUTF8"))
				c->smtputf8 = true;
			else if (util_strcaseeq(kw, "SIZE")) {
				c->has_size = true;
				c->size_max = strtoll(params, NULL, 10);
			} else if (util_strcaseeq(kw, "AUTH")) {
				for (char *tok = strtok((char *)params, " "); tok;
				     tok = strtok(NULL, " ")) {
					if (util_strcaseeq(tok, "PLAIN"))
						c->auth_plain = true;
					else if (util_strcaseeq(tok, "LOGIN"))
						c->auth_login = true;
				}
			}
		}
		first = false;
		line = nl ? nl + 1 : NULL;
	}
}

/* client_start_tls - wrap the connection with an OpenSSL filter. */
static void client_start_tls(struct smtp_client *c)
{
	/* RFC 3207 4.2 / STYLE 18: nothing read before the handshake counts. */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	SSL *ssl = SSL_new(c->conf.ssl_ctx);
	if (ssl == NULL) {
		smtp_client_conn_fail(c, "4.7.5 TLS set-up failed");
		return;
	}
	struct util_addr probe;
	bool numeric = util_addr_parse_numeric(c->host, 25, &probe) == 0;
	if (!numeric)
		SSL_set_tlsext_host_name(ssl, c->host);
	if (c->conf.tls == CONFIG_TLS_DANE) {
		/* RFC 7672 3: the DNSSEC-validated TLSA records are the only trust
		 * anchors.  DANE-EE(3) ignores names and dates (3.1.1); DANE-TA(2)
		 * checks the MX host name, the TLSA base domain (3.2.2). */
		size_t usable = 0;
		if (SSL_dane_enable(ssl, c->host) <= 0) {
			SSL_free(ssl);
			smtp_client_conn_fail(c, "4.7.5 DANE set-up failed");
			return;
		}
		SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
		for (size_t i = 0; i < c->conf.ntlsa; i++) {
			const struct policy_tlsa *t = &c->conf.tlsa[i];
			if (SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data,
			                      t->len) > 0)
				usable++;
		}
		if (usable == 0) {
			SSL_free(ssl);
			smtp_client_conn_fail(c, "4.7.5 no usable TLSA record for %s", c->host);
			return;
		}
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	} else if (c->conf.tls == CONFIG_TLS_VERIFY) {
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
		if (numeric)
			X509_VERIFY_PARAM_set1_ip_asc(param, c->host);
		else
			SSL_set1_host(ssl, c->host);
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	struct bufferevent *tls =
	    bufferevent_openssl_filter_new(c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	                                   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		smtp_client_conn_fail(c, "4.7.5 TLS set-up failed");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	c->bev = tls;
	c->ssl = ssl;
	c->state = CS_HANDSHAKE;
	bufferevent_setcb(tls, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
	smtp_client_conn_arm(c, c->conf.connect_timeout);
}

/* client_send_ehlo - EHLO (or HELO) with our name. */
static void client_send_ehlo(struct smtp_client *c, bool ehlo)
{
	char line[600];
	snprintf(line, sizeof(line), "%s %s", ehlo ? "EHLO" : "HELO", c->helo);
	c->state = ehlo ? CS_EHLO : CS_HELO;
	smtp_client_conn_send(c, line);
	smtp_client_conn_arm(c, c->conf.command_timeout);
}

/* client_after_ehlo - STARTTLS / AUTH / ready, per the route's policy. */
static void client_after_ehlo(struct smtp_client *c)
{
	/* tls = may (RFC 7435): STARTTLS when offered, plaintext otherwise. */
	bool may = c->conf.tls == CONFIG_TLS_MAY;
	if (!c->tls_active && c->conf.tls != CONFIG_TLS_NONE && !c->tls_skipped &&
	    (c->starttls || !may)) {
		if (!c->starttls) {
			smtp_client_conn_fail(
			    c, "4.7.4 STARTTLS required by route policy but not offered");
			return;
		}
		c->state = CS_STARTTLS;
		smtp_client_conn_send(c, "STARTTLS");
		smtp_client_conn_arm(c, c->conf.command_timeout);
		return;
	}
	if (c->auth_user != NULL) {
		if (!c->tls_active) {
			smtp_client_conn_fail(
			    c, "4.7.0 AUTH configured but the connection is not encrypted");
			return;
		}
		c->state = CS_AUTH;
		c->nexpect = 0;
		if (c->auth_plain) {
			struct util_buf b;
			util_buf_init(&b);
			util_buf_add(&b, "", 1);
			util_buf_adds(&b, c->auth_user);
			util_buf_add(&b, "", 1);
			util_buf_adds(&b, c->auth_password);
			char *enc = client_base64(b.data, b.len);
			char *line = util_xasprintf("AUTH PLAIN %s", enc);
			smtp_client_conn_send(c, line);
			OPENSSL_cleanse(b.data, b.len);
			util_buf_free(&b);
			free(enc);
			free(line);
			smtp_client_conn_expect(c, CMD_AUTH3, 0);
		} else if (c->auth_login) {
			smtp_client_conn_send(c, "AUTH LOGIN");
			smtp_client_conn_expect(c, CMD_AUTH1, 0);
		} else {
			smtp_client_conn_fail(
			    c, "4.7.0 AUTH configured but server offers neither PLAIN nor LOGIN");
			return;
		}
		smtp_client_conn_arm(c, c->conf.command_timeout);
		return;
	}
	c->state = CS_IDLE;
	smtp_client_conn_arm(c, 0);
	smtp_client_conn_notify(c, SMTP_CLIENT_READY);
}

/* client_auth_reply - AUTH LOGIN steps and the final 235 (RFC 4954). */
static void client_auth_reply(struct smtp_client *c, enum client_cmd cmd,
                              const struct smtp_reply *r, const char *rs)
{
	if (cmd == CMD_AUTH3 || r->code != 334) {
		if (r->code != 235) {
			smtp_client_conn_fail(c, "4.7.0 authentication failed: %s", rs);
			return;
		}
		c->state = CS_IDLE;
		smtp_client_conn_arm(c, 0);
		smtp_client_conn_notify(c, SMTP_CLIENT_READY);
		return;
	}
	const char *secret = cmd == CMD_AUTH1 ? c->auth_user : c->auth_password;
	char *enc = client_base64(secret, strlen(secret));
	smtp_client_conn_send(c, enc);
	free(enc);
	smtp_client_conn_expect(c, cmd == CMD_AUTH1 ? CMD_AUTH2 : CMD_AUTH3, 0);
	smtp_client_conn_arm(c, c->conf.command_timeout);
}

/* client_setup_reply - one reply during the set-up dialogue. */
static void client_setup_reply(struct smtp_client *c, const struct smtp_reply *r, const char *rs)
{
	switch (c->state) {
	case CS_GREETING:
		if (r->code != 220) {
			/* A refused session (even 554) is this host's state, not a
			 * verdict on the message: the deliverer tries the next host,
			 * then defers (Postfix smtp_skip_5xx_greeting).  Only a
			 * recipient's own reply may bounce it. */
			smtp_client_conn_fail(c, "4.4.0 session refused by %s at greeting: %s",
			                      c->relay, rs);
			return;
		}
		client_send_ehlo(c, true);
		return;
	case CS_EHLO:
		if (r->code / 100 == 2) {
			client_ehlo_caps(c, r);
			client_after_ehlo(c);
		} else if (!c->tls_active) {
			client_send_ehlo(c, false); /* RFC 5321 3.2: fall back to HELO */
		} else {
			smtp_client_conn_fail(c, "4.0.0 EHLO after STARTTLS refused: %s", rs);
		}
		return;
	case CS_HELO:
		if (r->code / 100 != 2) {
			smtp_client_conn_fail(c, "4.0.0 HELO refused: %s", rs);
			return;
		}
		client_ehlo_caps(c, &(struct smtp_reply){.code = 250, .text = ""});
		client_after_ehlo(c);
		return;
	case CS_STARTTLS:
		if (r->code != 220 && c->conf.tls == CONFIG_TLS_MAY) {
			/* RFC 3207 4: the session goes on as before the command. */
			util_log_info("smtp-client relay=%s tls=skipped reason=(STARTTLS refused: %s)",
			              c->relay, rs);
			c->tls_skipped = true;
			client_after_ehlo(c);
			return;
		}
		if (r->code != 220) {
			smtp_client_conn_fail(c, "4.7.4 STARTTLS refused: %s", rs);
			return;
		}
		client_start_tls(c);
		return;
	default:
		smtp_client_conn_fail(c, "4.5.0 unexpected reply: %s", rs);
		return;
	}
}

/* client_handle - one complete reply from the server. */
static void client_handle(struct smtp_client *c, const struct smtp_reply *r)
{
	char rs[sizeof(r->text) + 8];
	client_reply_str(r, rs, sizeof(rs));
	util_log_debug("smtp-client relay=%s reply=(%s)", c->relay, rs);
	switch (c->state) {
	case CS_GREETING:
	case CS_EHLO:
	case CS_HELO:
	case CS_STARTTLS:
		client_setup_reply(c, r, rs);
		return;
	case CS_QUIT:
		client_quit_done(c);
		return;
	case CS_AUTH:
	case CS_TX:
		if (c->nexpect > 0) {
			enum client_cmd cmd = c->expect[c->expect_head];
			size_t rcpt = c->expect_rcpt[c->expect_head];
			c->expect_head = (c->expect_head + 1) % CLIENT_MAX_PENDING;
			c->nexpect--;
			if (c->state == CS_AUTH)
				client_auth_reply(c, cmd, r, rs);
			else
				smtp_client_conn_tx_reply(c, cmd, rcpt, r, rs);
			return;
		}
		smtp_client_conn_fail(c, "4.5.0 unexpected reply: %s", rs);
		return;
	default:
		smtp_client_conn_fail(c, "4.4.2 connection closed by server: %s", rs);
		return;
	}
}

/* client_read_cb - parse every complete reply in the input. */
static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (c->state != CS_DEAD && c->state != CS_HANDSHAKE && c->bev == bev) {
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			return;
		size_t look = len < 65536 ? len : 65536;
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
		struct smtp_reply r;
		int n = smtp_reply_parse(p, look, &r);
		if (n == 0 && look < 65536)
			return;
		if (n <= 0) {
			smtp_client_conn_fail(c, "4.5.0 malformed reply from server");
			return;
		}
		evbuffer_drain(in, (size_t)n);
		client_handle(c, &r);
	}
}

/* client_write_cb - output drained below the low watermark. */
static void client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	if (c->state == CS_BODY)
		smtp_client_conn_body_fill(c);
}

/* client_event_cb - connected, handshake done, EOF or error. */
static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == CS_CONNECT) {
			int one = 1;
			evutil_socket_t fd = bufferevent_getfd(bev);
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			c->state = CS_GREETING;
			smtp_client_conn_arm(c, c->conf.greeting_timeout > 0 ? c->conf.greeting_timeout
			                                                     : c->conf.command_timeout);
		} else if (c->state == CS_HANDSHAKE) {
			c->tls_active = true;
			snprintf(c->tls_info, sizeof(c->tls_info), "%s %s%s", SSL_get_version(c->ssl),
			         SSL_get_cipher_name(c->ssl),
			         SSL_get0_dane_authority(c->ssl, NULL, NULL) >= 0 ? " dane" : "");
			client_send_ehlo(c, true);
		}
		return;
	}
	if (c->state == CS_HANDSHAKE) {
		c->tls_failed = true;
		long vr = SSL_get_verify_result(c->ssl);
		char ebuf[256] = "handshake failed";
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (vr != X509_V_OK)
			snprintf(ebuf, sizeof(ebuf), "certificate verification failed: %s",
			         X509_verify_cert_error_string(vr));
		else if (e != 0)
			ERR_error_string_n(e, ebuf, sizeof(ebuf));
		smtp_client_conn_fail(c, "4.7.5 TLS with %s failed: %s", c->relay, ebuf);
		return;
	}
	if (c->state == CS_CONNECT) {
		int err = EVUTIL_SOCKET_ERROR();
		smtp_client_conn_fail(c, "4.4.1 connect to %s: %s", c->relay,
		                      err ? evutil_socket_error_to_string(err) : "failed");
		return;
	}
	smtp_client_conn_fail(c, "4.4.2 connection to %s lost%s", c->relay,
	                      c->state == CS_BODY ? " while sending data" : "");
}

/* client_deadline_cb - the current step took too long. */
static void client_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	static const char *const names[] = {"connect",         "greeting",       "EHLO reply",
	                                    "HELO reply",      "STARTTLS reply", "TLS handshake",
	                                    "AUTH reply",      "idle",           "reply",
	                                    "data acceptance", "QUIT reply",     "-"};
	if (c->state == CS_HANDSHAKE)
		c->tls_failed = true;
	smtp_client_conn_fail(c, "%s timeout with %s waiting for %s",
	                      c->state == CS_CONNECT ? "4.4.1" : "4.4.2", c->relay,
	                      names[c->state]);
}

/* smtp_client_new - connect and run the set-up dialogue. */
struct smtp_client *smtp_client_new(struct event_base *base, const struct smtp_client_conf *conf,
                                    smtp_client_cb cb, void *arg)
{
	struct smtp_client *c = util_xcalloc(1, sizeof(*c));
	c->base = base;
	c->conf = *conf;
	c->host = util_xstrdup(conf->host);
	c->helo = util_xstrdup(conf->helo ? conf->helo : "localhost");
	c->auth_user = conf->auth_user ? util_xstrdup(conf->auth_user) : NULL;
	c->auth_password = conf->auth_password ? util_xstrdup(conf->auth_password) : NULL;
	c->conf.host = c->host;
	c->conf.helo = c->helo;
	c->conf.auth_user = c->conf.auth_password = NULL;
	c->cb = cb;
	c->arg = arg;
	c->body_fd = -1;
	c->state = CS_CONNECT;
	snprintf(c->tls_info, sizeof(c->tls_info), "none");
	char a[64];
	util_addr_str(&conf->addr, a, sizeof(a));
	snprintf(c->relay, sizeof(c->relay), "%s[%s]:%d", conf->host, a,
	         util_addr_port(&conf->addr));
	c->deadline = evtimer_new(base, client_deadline_cb, c);
	c->deferred = event_new(base, -1, 0, client_deferred_cb, c);
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL) {
		smtp_client_conn_fail(c, "4.3.0 cannot create a socket");
		return c;
	}
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, CLIENT_BODY_HIGH / 2, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	smtp_client_conn_arm(c, conf->connect_timeout);
	if (bufferevent_socket_connect(c->bev, (const struct sockaddr *)&conf->addr.ss,
	                               (int)conf->addr.len) != 0)
		smtp_client_conn_fail(c, "4.4.1 connect to %s: %s", c->relay, strerror(errno));
	return c;
}

/* smtp_client_is_usable - idle and connected. */
bool smtp_client_is_usable(const struct smtp_client *c)
{
	return c->state == CS_IDLE;
}

/* smtp_client_error - last error text ("" when none). */
const char *smtp_client_error(const struct smtp_client *c)
{
	return c->error ? c->error : "";
}

/* smtp_client_tls_failed - did the set-up fail in the TLS handshake? */
bool smtp_client_tls_failed(const struct smtp_client *c)
{
	return c->tls_failed;
}

/* smtp_client_relay - "host[addr]:port" for logs. */
const char *smtp_client_relay(const struct smtp_client *c)
{
	return c->relay;
}

/* smtp_client_tls_info - negotiated protocol and cipher, or "none". */
const char *smtp_client_tls_info(const struct smtp_client *c)
{
	return c->tls_info;
}

/* smtp_client_quit - polite close; see smtp-client-internal.h. */
bool smtp_client_quit(struct smtp_client *c, smtp_client_cb cb, void *arg)
{
	if (c == NULL)
		return false;
	c->cb = cb;
	c->arg = arg;
	if (c->state != CS_IDLE) {
		smtp_client_free(c);
		return false;
	}
	c->state = CS_QUIT;
	smtp_client_conn_send(c, "QUIT");
	smtp_client_conn_arm(c, CLIENT_QUIT_TIMEOUT);
	return true;
}

/* smtp_client_free - close now; the memory goes at once, or after the
 * callback we are inside of returns. */
void smtp_client_free(struct smtp_client *c)
{
	if (c == NULL)
		return;
	c->cb = NULL;
	client_close(c);
	c->state = CS_DEAD;
	if (c->in_cb) {
		c->free_pending = true;
		event_active(c->deferred, 0, 0);
		return;
	}
	client_really_free(c);
}
