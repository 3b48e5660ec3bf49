/*
 * smtp-client-internal.h - one outgoing SMTP connection (smtp-client.c),
 * driven by the deliverer (smtp-deliver.c).  Not for use outside smtp/.
 *
 * Life of a client: smtp_client_new() connects, reads the greeting, EHLO
 * (HELO fallback), STARTTLS per the route's policy, EHLO again, AUTH; then
 * SMTP_CLIENT_READY.  smtp_client_send() runs one transaction (RSET first
 * when the connection already carried one) and reports SMTP_CLIENT_TX_DONE
 * with one outcome per recipient in the tx.  SMTP_CLIENT_FAILED reports a
 * set-up failure or the loss of an idle connection.
 *
 * Ownership: the deliverer owns the client and frees it with
 * smtp_client_free() (safe inside its own callback: the free is deferred) or
 * hands it to smtp_client_quit(), after which the client frees itself (the
 * owner keeps it in a list until SMTP_CLIENT_CLOSED, so it can still free
 * it at shutdown).  The
 * conf strings, SSL_CTX and everything in a tx are borrowed until the
 * matching callback.
 */
#ifndef MX_SMTP_CLIENT_INTERNAL_H
#define MX_SMTP_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "policy.h"
#include "queue.h"
#include "util.h"

struct smtp_client;

struct smtp_client_conf {
	const char *host;      /* name for SNI and certificate checks (or numeric) */
	struct util_addr addr; /* where to connect, port included */
	enum config_tls_policy tls;
	SSL_CTX *ssl_ctx;      /* borrowed; NULL when tls == CONFIG_TLS_NONE; DANE-enabled
	                        * (SSL_CTX_dane_enable) when tls == CONFIG_TLS_DANE */
	const struct policy_tlsa *tlsa; /* tls = dane: usable TLSA records (borrowed) */
	size_t ntlsa;
	const char *helo;      /* our host name */
	const char *auth_user; /* NULL: no AUTH */
	const char *auth_password;
	int connect_timeout; /* seconds */
	int greeting_timeout;
	int command_timeout;
	int data_timeout;
};

/* One transaction; outcomes are filled by the client (arrays of nidx). */
struct smtp_client_tx {
	const struct queue_envelope *env;
	const size_t *idx; /* recipients: env->rcpts[idx[i]] */
	size_t nidx;
	const char *msg_path;
	bool *has; /* outcome known for recipient i */
	enum queue_outcome *out;
	char **reply; /* malloc'd "550 5.1.1 unknown user" */
	char *error;  /* malloc'd transaction-level error or NULL */
	bool probe;   /* recipient verification (smtp-verify.c): MAIL FROM:<> without
	                 parameters, the RCPTs, no DATA; a RCPT's own reply is its
	                 outcome; a refused MAIL is a DEFER (code 0), never a 5xx
	                 for the recipients.  msg_path is unused. */
	/* set by the client at the end (not for a probe): nothing of the
	 * message was sent and the host gave no final answer about any
	 * recipient - a non-2xx to MAIL FROM, a 4xx to every RCPT or to DATA,
	 * a broken dialogue before the 354 (malformed reply, lost connection,
	 * timeout).  Every recipient is deferred; the deliverer carries the
	 * message on to the next address/host (RFC 5321 5.1): failing over
	 * cannot deliver it twice. */
	bool failover;
};
void smtp_client_tx_init(struct smtp_client_tx *tx, const struct queue_envelope *env,
                         const size_t *idx, size_t nidx, const char *msg_path);
void smtp_client_tx_clear(struct smtp_client_tx *tx);
/* smtp_client_tx_set - record outcome of recipient i from a reply code. */
void smtp_client_tx_set(struct smtp_client_tx *tx, size_t i, int code, const char *reply);

enum smtp_client_event {
	SMTP_CLIENT_READY,   /* set-up done: smtp_client_send() may be called */
	SMTP_CLIENT_TX_DONE, /* the transaction ended (outcomes in the tx) */
	SMTP_CLIENT_FAILED,  /* set-up failed, or an idle connection was lost */
	SMTP_CLIENT_CLOSED,  /* after smtp_client_quit(): the client frees itself now */
};
typedef void (*smtp_client_cb)(struct smtp_client *c, enum smtp_client_event ev, void *arg);

struct smtp_client *smtp_client_new(struct event_base *base, const struct smtp_client_conf *conf,
                                    smtp_client_cb cb, void *arg);
/* smtp_client_send - start a transaction on a READY/idle client.  0, or -1
 * when the client cannot take one (then nothing was started). */
int smtp_client_send(struct smtp_client *c, struct smtp_client_tx *tx);
bool smtp_client_is_usable(const struct smtp_client *c);
const char *smtp_client_error(const struct smtp_client *c);
/* smtp_client_tls_failed - set-up failed in the TLS handshake (tls = may
 * then tries the same address again without STARTTLS). */
bool smtp_client_tls_failed(const struct smtp_client *c);
const char *smtp_client_relay(const struct smtp_client *c);    /* "host[addr]:port" */
const char *smtp_client_tls_info(const struct smtp_client *c); /* "TLSv1.3 CIPHER" or "none" */
/* smtp_client_quit - send QUIT, wait (bounded) for the answer, then report
 * SMTP_CLIENT_CLOSED to cb and free itself.  Returns false when the client
 * was not idle and has been freed at once (no CLOSED then). */
bool smtp_client_quit(struct smtp_client *c, smtp_client_cb cb, void *arg);
void smtp_client_free(struct smtp_client *c);

/* smtp_client_dot_stuff - append p[0..n) to out with RFC 5321 4.5.2
 * transparency: a '.' at the start of a line is doubled.  *bol carries "at
 * the start of a line" across calls (true before the first byte). */
struct evbuffer;
void smtp_client_dot_stuff(struct evbuffer *out, const char *p, size_t n, bool *bol);

#endif
