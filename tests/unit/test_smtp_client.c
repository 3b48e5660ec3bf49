/*
 * test_smtp_client.c - the outgoing SMTP client against a scripted server in
 * the same event loop (127.0.0.1, ephemeral port): EHLO capabilities parsed
 * from multi-line replies, HELO fallback, PIPELINING (MAIL..DATA in one
 * write), per-recipient outcomes (2xx/4xx/5xx), reply to the final dot,
 * refusals decided before MAIL (SMTPUTF8 / 8BITMIME not offered, SIZE),
 * malformed replies, and the body as received: dot-stuffed, CRLF added
 * before the final dot when the file lacks it.  Anything but 354 to DATA is
 * no delivery (4xx defer, 5xx bounce, 2xx defer without a body); a 5xx at
 * greeting or to EHLO+HELO fails the set-up with a 4.x.x error.  tx.failover
 * (the deliverer carries the message to the next host) exactly when nothing
 * of the message was sent and no recipient got a final answer: a refused
 * MAIL (4xx/5xx, also "421" and the connection closed), a 4xx to every RCPT
 * or to DATA, a malformed reply.  Plus a dot-stuffing table.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtp-client-internal.h"

struct scen {
	const char *name;
	const char *ehlo;    /* reply to EHLO (CRLF lines) */
	const char *rcpt[3]; /* replies to each RCPT */
	const char *dot;     /* reply to the final dot */
	bool smtputf8, eightbit;
	const char *file; /* msg file content */
	enum queue_outcome want[3];
	const char *want_reply[3]; /* prefix of the recorded reply */
	const char *want_body;     /* bytes between 354 and ".\r\n" (NULL: no DATA) */
	bool want_pipelined;
	bool want_helo;
	const char *data;      /* reply to DATA (NULL: 354) */
	const char *greet;     /* greeting (NULL: 220) */
	const char *helo;      /* reply to HELO (NULL: 250) */
	const char *want_fail; /* set-up must fail with an error starting so */
	const char *mail;      /* reply to MAIL (NULL: 250); the connection must stay usable */
	bool want_failover;    /* tx.failover: the deliverer carries the message on */
	bool mail_close;       /* the server closes right after its reply to MAIL */
};

static const struct scen scens[] = {
    {"plain, mixed recipients",
     "250-fake.test hello\r\n250-SIZE 100000\r\n250 8BITMIME\r\n",
     {"250 2.1.5 ok", "550 5.1.1 unknown user", "451 4.3.0 later"},
     "250 2.0.0 queued",
     false,
     false,
     "Subject: x\r\n\r\n.dot\r\nend\r\n",
     {QUEUE_OUT_DONE, QUEUE_OUT_BOUNCE, QUEUE_OUT_DEFER},
     {"250 2.0.0 queued", "550 5.1.1 unknown user", "451 4.3.0 later"},
     "X-Pre: 1\r\nSubject: x\r\n\r\n..dot\r\nend\r\n",
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"pipelining, final dot 452",
     "250-fake.test\r\n250-PIPELINING\r\n250 SIZE\r\n",
     {"250 ok", "250 ok", "250 ok"},
     "452 4.3.1 insufficient storage",
     false,
     false,
     "Subject: y\r\n\r\nno final newline",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"452 4.3.1", "452 4.3.1", "452 4.3.1"},
     "X-Pre: 1\r\nSubject: y\r\n\r\nno final newline\r\n",
     true,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"HELO fallback",
     "502 5.5.1 EHLO unknown here\r\n",
     {"250 ok", "554 5.7.1 relay denied", "250 ok"},
     "554 5.6.0 content rejected",
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE},
     {"554 5.6.0", "554 5.7.1", "554 5.6.0"},
     "X-Pre: 1\r\na\r\n",
     false,
     true,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"SMTPUTF8 needed, not offered",
     "250-fake.test\r\n250 8BITMIME\r\n",
     {NULL},
     NULL,
     true,
     false,
     "a\r\n",
     {QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE},
     {"550 5.6.7", "550 5.6.7", "550 5.6.7"},
     NULL,
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"8BITMIME needed, not offered",
     "250-fake.test\r\n250 SMTPUTF8\r\n",
     {NULL},
     NULL,
     false,
     true,
     "a\r\n",
     {QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE},
     {"554 5.6.3", "554 5.6.3", "554 5.6.3"},
     NULL,
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"over the downstream SIZE",
     "250-fake.test\r\n250 SIZE 10\r\n",
     {NULL},
     NULL,
     false,
     false,
     "this is longer than ten bytes\r\n",
     {QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE, QUEUE_OUT_BOUNCE},
     {"552 5.3.4", "552 5.3.4", "552 5.3.4"},
     NULL,
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"2xx to DATA: no body, nothing delivered",
     "250-fake.test\r\n250 8BITMIME\r\n",
     {"250 ok", "550 5.1.1 unknown user", "250 ok"},
     "250 2.0.0 queued",
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_BOUNCE, QUEUE_OUT_DEFER},
     {"4.5.0 unexpected reply to DATA", "550 5.1.1", "4.5.0 unexpected reply to DATA"},
     NULL,
     false,
     false,
     "250 2.0.0 ok, go on",
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"5xx to DATA bounces the accepted recipients",
     "250-fake.test\r\n250 8BITMIME\r\n",
     {"250 ok", "451 4.3.0 later", "250 ok"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_BOUNCE, QUEUE_OUT_DEFER, QUEUE_OUT_BOUNCE},
     {"554 5.6.0", "451 4.3.0", "554 5.6.0"},
     NULL,
     false,
     false,
     "554 5.6.0 content refused",
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"4xx to DATA defers",
     "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
     {"250 ok", "550 5.1.1 unknown user", "250 ok"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_BOUNCE, QUEUE_OUT_DEFER},
     {"452 4.3.1", "550 5.1.1", "452 4.3.1"},
     NULL,
     true,
     false,
     "452 4.3.1 full",
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
    {"554 greeting: a set-up failure, never permanent",
     "250 fake.test\r\n",
     {NULL},
     NULL,
     false,
     false,
     "a\r\n",
     {0},
     {NULL},
     NULL,
     false,
     false,
     NULL,
     "554 5.3.2 no service here",
     NULL,
     "4.4.0 session refused",
     NULL,
     false,
     false},
    {"5xx to EHLO and HELO: a set-up failure, never permanent",
     "550 5.7.1 go away\r\n",
     {NULL},
     NULL,
     false,
     false,
     "a\r\n",
     {0},
     {NULL},
     NULL,
     false,
     true,
     NULL,
     NULL,
     "550 5.7.1 still no",
     "4.0.0 HELO refused",
     NULL,
     false,
     false},
    /* issue 11: a 5xx to MAIL is about the host, not a recipient - every
     * recipient deferred, the tx marked mail_refused (the deliverer tries
     * the next host), the connection still usable */
    {"pipelined 550 to MAIL: deferred, mail_refused, connection kept",
     "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
     {"503 5.5.1 MAIL first", "503 5.5.1 MAIL first", "503 5.5.1 MAIL first"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by "},
     NULL,
     true,
     false,
     "503 5.5.1 no valid recipients",
     NULL,
     NULL,
     NULL,
     "550 5.7.1 sender refused",
     true,
     false},
    /* red team finding 4: a malformed reply before the 354 - nothing was
     * sent, so the next host may have it */
    {"malformed reply",
     "250-fake.test\r\n250 ok\r\n",
     {"25x broken"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"4.5.0 malformed", "4.5.0 malformed", "4.5.0 malformed"},
     NULL,
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     true,
     false},
    /* red team finding 4: a 4xx to MAIL fails over like a 5xx */
    {"pipelined 451 to MAIL: deferred, failover, connection kept",
     "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
     {"503 5.5.1 MAIL first", "503 5.5.1 MAIL first", "503 5.5.1 MAIL first"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by "},
     NULL,
     true,
     false,
     "503 5.5.1 no valid recipients",
     NULL,
     NULL,
     NULL,
     "451 4.3.2 try later",
     true,
     false},
    /* RFC 5321 3.8: 421 and the channel closed, no pipelining: the
     * outcomes are reported (TX_DONE, not FAILED, whatever the order in
     * which the reply and the EOF are seen) and the message fails over */
    {"421 to MAIL, connection closed: failover",
     "250-fake.test\r\n250 8BITMIME\r\n",
     {"250 ok", "250 ok", "250 ok"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by ", "4.4.0 MAIL FROM refused by "},
     NULL,
     false,
     false,
     NULL,
     NULL,
     NULL,
     NULL,
     "421 4.3.2 closing",
     true,
     true},
    {"4xx to every RCPT: failover",
     "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
     {"450 4.2.0 greylisted", "451 4.3.0 later", "452 4.5.3 too many"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"450 4.2.0", "451 4.3.0", "452 4.5.3"},
     NULL,
     true,
     false,
     "554 5.5.1 no valid recipients",
     NULL,
     NULL,
     NULL,
     NULL,
     true,
     false},
    {"4xx to DATA, every RCPT accepted: failover",
     "250-fake.test\r\n250 8BITMIME\r\n",
     {"250 ok", "250 ok", "250 ok"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DEFER},
     {"451 4.3.0", "451 4.3.0", "451 4.3.0"},
     NULL,
     false,
     false,
     "451 4.3.0 try later",
     NULL,
     NULL,
     NULL,
     NULL,
     true,
     false},
    /* a final answer for one recipient: no failover, the 4xx ones wait */
    {"4xx and 5xx to RCPT: no failover",
     "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
     {"450 4.2.0 greylisted", "550 5.1.1 unknown user", "450 4.2.0 greylisted"},
     NULL,
     false,
     false,
     "a\r\n",
     {QUEUE_OUT_DEFER, QUEUE_OUT_BOUNCE, QUEUE_OUT_DEFER},
     {"450 4.2.0", "550 5.1.1", "450 4.2.0"},
     NULL,
     true,
     false,
     "554 5.5.1 no valid recipients",
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     false},
};

struct srv {
	const struct scen *sc;
	struct bufferevent *bev;
	int nrcpt;
	bool in_data, saw_mail, pipelined, saw_helo;
	int unknown; /* lines that were no command (a body sent without 354) */
	struct util_buf body;
};

struct run {
	struct event_base *base;
	struct srv srv;
	struct smtp_client *cl;
	struct smtp_client_tx tx;
	bool done, failed;
};

/* srv_reply - one reply line(s) to the client. */
static void srv_reply(struct srv *s, const char *text)
{
	evbuffer_add_printf(bufferevent_get_output(s->bev), "%s%s", text,
	                    strstr(text, "\r\n") ? "" : "\r\n");
}

/* srv_read - the scripted server: one reply per command line. */
static void srv_read(struct bufferevent *bev, void *arg)
{
	struct srv *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line;
	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		if (s->in_data) {
			if (strcmp(line, ".") == 0) {
				s->in_data = false;
				srv_reply(s, s->sc->dot);
			} else {
				util_buf_add(&s->body, line, len);
				util_buf_adds(&s->body, "\r\n");
			}
		} else if (strncmp(line, "EHLO", 4) == 0) {
			srv_reply(s, s->sc->ehlo);
		} else if (strncmp(line, "HELO", 4) == 0) {
			s->saw_helo = true;
			srv_reply(s, s->sc->helo ? s->sc->helo : "250 fake.test");
		} else if (strncmp(line, "MAIL", 4) == 0) {
			s->saw_mail = true;
			/* everything up to DATA already here = pipelined */
			struct evbuffer_ptr p = evbuffer_search(in, "DATA\r\n", 6, NULL);
			s->pipelined = p.pos >= 0;
			if (s->sc->mail_close) {
				/* the reply and the end of the stream together */
				evutil_socket_t fd = bufferevent_getfd(bev);
				char r[128];
				int n = snprintf(r, sizeof(r), "%s\r\n", s->sc->mail);
				assert_int_equal(write(fd, r, (size_t)n), n);
				shutdown(fd, SHUT_RDWR);
				free(line);
				return;
			}
			srv_reply(s, s->sc->mail ? s->sc->mail : "250 2.1.0 ok");
		} else if (strncmp(line, "RCPT", 4) == 0) {
			srv_reply(s, s->sc->rcpt[s->nrcpt++]);
		} else if (strcmp(line, "DATA") == 0) {
			s->in_data = s->sc->data == NULL;
			srv_reply(s, s->sc->data ? s->sc->data : "354 go ahead");
		} else if (strcmp(line, "QUIT") == 0) {
			srv_reply(s, "221 bye");
		} else if (strcmp(line, "RSET") != 0) {
			s->unknown++;
			srv_reply(s, "500 what");
		} else {
			srv_reply(s, "250 ok");
		}
		free(line);
	}
}

static void srv_event(struct bufferevent *bev, short what, void *arg)
{
}

static void srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int n,
                       void *arg)
{
	struct run *r = arg;
	r->srv.bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->srv.bev, srv_read, NULL, srv_event, &r->srv);
	bufferevent_enable(r->srv.bev, EV_READ | EV_WRITE);
	srv_reply(&r->srv, r->srv.sc->greet ? r->srv.sc->greet : "220 fake.test ESMTP");
}

static void client_cb(struct smtp_client *c, enum smtp_client_event ev, void *arg)
{
	struct run *r = arg;
	if (ev == SMTP_CLIENT_READY) {
		assert_int_equal(smtp_client_send(c, &r->tx), 0);
		return;
	}
	r->done = true;
	r->failed = ev == SMTP_CLIENT_FAILED;
	event_base_loopbreak(r->base);
}

static void test_scenarios(void **state)
{
	char path[] = "/tmp/mxclient-XXXXXX";
	signal(SIGPIPE, SIG_IGN); /* as mxgate does: a closed peer is an error, not death */
	for (size_t k = 0; k < sizeof(scens) / sizeof(scens[0]); k++) {
		const struct scen *sc = &scens[k];
		struct run r = {0};
		r.base = event_base_new();
		r.srv.sc = sc;
		util_buf_init(&r.srv.body);
		struct sockaddr_in sin = {.sin_family = AF_INET,
		                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		struct evconnlistener *l = evconnlistener_new_bind(
		    r.base, srv_accept, &r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4,
		    (struct sockaddr *)&sin, sizeof(sin));
		assert_non_null(l);
		struct util_addr a;
		a.len = sizeof(sin);
		getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&a.ss, &a.len);

		strcpy(path, "/tmp/mxclient-XXXXXX");
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, sc->file, strlen(sc->file)), (ssize_t)strlen(sc->file));
		close(fd);
		struct queue_envelope *env = queue_envelope_new();
		snprintf(env->id, sizeof(env->id), "0123456789ABCDEF");
		env->sender = strdup("s@example.org");
		queue_envelope_add_rcpt(env, "a@x.test");
		queue_envelope_add_rcpt(env, "b@x.test");
		queue_envelope_add_rcpt(env, "c@x.test");
		env->prepend = strdup("X-Pre: 1\r\n");
		env->size = (int64_t)strlen(sc->file);
		env->smtputf8 = sc->smtputf8;
		env->eightbit = sc->eightbit;
		size_t idx[3] = {0, 1, 2};
		smtp_client_tx_init(&r.tx, env, idx, 3, path);

		struct smtp_client_conf conf = {.host = "127.0.0.1",
		                                .addr = a,
		                                .tls = CONFIG_TLS_NONE,
		                                .helo = "mx.test",
		                                .connect_timeout = 5,
		                                .command_timeout = 5,
		                                .data_timeout = 5};
		r.cl = smtp_client_new(r.base, &conf, client_cb, &r);
		struct timeval limit = {5, 0};
		event_base_loopexit(r.base, &limit);
		event_base_dispatch(r.base);
		if (!r.done)
			fail_msg("%s: no result", sc->name);
		if (sc->want_fail) {
			if (!r.failed || strncmp(smtp_client_error(r.cl), sc->want_fail,
			                         strlen(sc->want_fail)) != 0)
				fail_msg("%s: failed=%d error=%s", sc->name, r.failed,
				         smtp_client_error(r.cl));
			assert_false(r.srv.saw_mail);
		}
		for (size_t i = 0; i < 3 && !sc->want_fail; i++) {
			if (!r.tx.has[i] || r.tx.out[i] != sc->want[i] ||
			    strncmp(r.tx.reply[i], sc->want_reply[i], strlen(sc->want_reply[i])) !=
			        0)
				fail_msg("%s: rcpt %zu: has=%d out=%d reply=%s", sc->name, i,
				         r.tx.has[i], r.tx.out[i],
				         r.tx.reply[i] ? r.tx.reply[i] : "-");
		}
		if (sc->want_body) {
			if (r.srv.body.data == NULL || strcmp(r.srv.body.data, sc->want_body) != 0)
				fail_msg("%s: body [%s]", sc->name,
				         r.srv.body.data ? r.srv.body.data : "");
		} else if (sc->rcpt[0] == NULL) {
			assert_false(r.srv.saw_mail); /* refused before MAIL */
		}
		if (sc->mail && !sc->mail_close)
			assert_true(smtp_client_is_usable(r.cl));
		if (!sc->want_fail && r.failed) /* the outcomes were never reported */
			fail_msg("%s: SMTP_CLIENT_FAILED instead of TX_DONE", sc->name);
		if (r.tx.failover != sc->want_failover)
			fail_msg("%s: failover=%d", sc->name, r.tx.failover);
		if (r.tx.failover && sc->mail && strstr(r.tx.reply[0], sc->mail) == NULL)
			fail_msg("%s: the host's reply is lost: %s", sc->name, r.tx.reply[0]);
		if (r.srv.unknown != 0)
			fail_msg("%s: %d stray lines (a body without 354?)", sc->name,
			         r.srv.unknown);
		assert_int_equal(r.srv.pipelined, sc->want_pipelined);
		assert_int_equal(r.srv.saw_helo, sc->want_helo);
		smtp_client_free(r.cl);
		smtp_client_tx_clear(&r.tx);
		queue_envelope_free(env);
		if (r.srv.bev)
			bufferevent_free(r.srv.bev);
		util_buf_free(&r.srv.body);
		evconnlistener_free(l);
		event_base_free(r.base);
		unlink(path);
	}
}

struct stuff_case {
	const char *in[3]; /* pieces fed one after the other */
	const char *want;
};

static const struct stuff_case stuff_cases[] = {
    {{"abc\r\n", NULL}, "abc\r\n"},
    {{".\r\n", NULL}, "..\r\n"},
    {{"a\r\n.b\r\n..c\r\n", NULL}, "a\r\n..b\r\n...c\r\n"},
    {{"a\r", "\n.", "x\r\n"}, "a\r\n..x\r\n"},    /* split across chunks */
    {{"a.b\r\n . \r\n", NULL}, "a.b\r\n . \r\n"}, /* only at line start */
    {{"", ".", "\r\n"}, "..\r\n"},
    {{"x\r\n", ".", "."}, "x\r\n..."}, /* one dot added per line */
};

static void test_dot_stuff(void **state)
{
	for (size_t k = 0; k < sizeof(stuff_cases) / sizeof(stuff_cases[0]); k++) {
		struct evbuffer *out = evbuffer_new();
		bool bol = true;
		for (size_t i = 0; i < 3 && stuff_cases[k].in[i]; i++)
			smtp_client_dot_stuff(out, stuff_cases[k].in[i],
			                      strlen(stuff_cases[k].in[i]), &bol);
		size_t n = evbuffer_get_length(out);
		char *got = calloc(1, n + 1);
		evbuffer_remove(out, got, n);
		if (strcmp(got, stuff_cases[k].want) != 0)
			fail_msg("case %zu: got [%s]", k, got);
		free(got);
		evbuffer_free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dot_stuff),
	    cmocka_unit_test(test_scenarios),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
