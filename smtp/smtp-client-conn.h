/*
 * smtp-client-conn.h - the state of one outgoing connection, shared by
 * smtp-client.c (connection, set-up dialogue, replies) and smtp-client-tx.c
 * (transactions, body streaming).  Private to those two files.
 */
#ifndef MX_SMTP_CLIENT_CONN_H
#define MX_SMTP_CLIENT_CONN_H

#include "smtp-client-internal.h"
#include "smtp-internal.h"

#include <event2/bufferevent.h>

#define CLIENT_BODY_CHUNK   (64 * 1024)
#define CLIENT_BODY_HIGH    (256 * 1024) /* stop filling the output above this */
#define CLIENT_QUIT_TIMEOUT 5
#define CLIENT_MAX_PENDING  1024 /* replies expected in one pipelined group */

enum client_state {
	CS_CONNECT,
	CS_GREETING,
	CS_EHLO,
	CS_HELO,
	CS_STARTTLS,
	CS_HANDSHAKE,
	CS_AUTH,
	CS_IDLE,
	CS_TX,
	CS_BODY,
	CS_QUIT,
	CS_DEAD
};

/* What a reply in the pipeline answers. */
enum client_cmd {
	CMD_RSET,
	CMD_MAIL,
	CMD_RCPT,
	CMD_DATA,
	CMD_DOT,
	CMD_AUTH1,
	CMD_AUTH2,
	CMD_AUTH3
};

struct smtp_client {
	struct event_base *base;
	struct bufferevent *bev;
	struct smtp_client_conf conf;
	char *host; /* owned copies of conf strings */
	char *helo;
	char *auth_user, *auth_password;
	smtp_client_cb cb;
	void *arg;
	enum client_state state;
	struct event *deadline;
	struct event *deferred; /* deferred callback / free */
	bool in_cb, free_pending, notify_pending;
	enum smtp_client_event pending_ev;
	char relay[300];
	char tls_info[128];
	char *error;
	SSL *ssl; /* borrowed from the filter bufferevent */
	/* capabilities from EHLO */
	bool pipelining, starttls, eightbitmime, smtputf8, has_size, auth_plain, auth_login;
	int64_t size_max;
	bool tls_active;
	bool tls_skipped; /* tls = may: STARTTLS refused, going on in plaintext */
	bool tls_failed;  /* the TLS handshake failed (or timed out) */
	/* transactions */
	unsigned ntx; /* transactions started on this connection */
	struct smtp_client_tx *tx;
	enum client_cmd expect[CLIENT_MAX_PENDING];
	size_t expect_rcpt[CLIENT_MAX_PENDING];
	size_t nexpect, expect_head;
	size_t cursor; /* next command of the tx to send */
	bool mail_ok;
	size_t naccepted;
	bool *accepted; /* per tx recipient: RCPT accepted */
	bool body_sent; /* this tx sent a byte of the message (after a 354) */
	int body_fd;
	size_t prepend_off;
	bool bol;
	char last2[2];
};

/* smtp_client_conn_fail - the connection is unusable: report it (in a
 * transaction, recipients without an outcome are deferred with the error). */
void smtp_client_conn_fail(struct smtp_client *c, const char *fmt, ...) UTIL_PRINTF(2, 3);
void smtp_client_conn_send(struct smtp_client *c, const char *line);
void smtp_client_conn_expect(struct smtp_client *c, enum client_cmd cmd, size_t rcpt);
void smtp_client_conn_arm(struct smtp_client *c, int seconds);
void smtp_client_conn_notify(struct smtp_client *c, enum smtp_client_event ev);
void smtp_client_conn_tx_reply(struct smtp_client *c, enum client_cmd cmd, size_t rcpt,
                               const struct smtp_reply *r, const char *rs);
void smtp_client_conn_body_fill(struct smtp_client *c);
/* smtp_client_conn_tx_settle - the transaction ends: set tx->failover when
 * the deliverer may carry the message to the next address/host. */
void smtp_client_conn_tx_settle(struct smtp_client *c);

#endif
