/*
 * smtp-client-tx.c - one transaction on an outgoing connection: RSET between
 * messages, MAIL/RCPT/DATA (pipelined per RFC 2920 when offered), the body
 * streamed from prepend + msg/ID with RFC 5321 4.5.2 dot-stuffing and
 * backpressure, per-recipient outcomes (2xx done, 5xx bounce, else defer).
 * A recipient is done only by a 2xx to the final dot; a 5xx to RCPT bounces
 * that recipient, a 5xx to DATA or to the dot the accepted ones.  A refusal
 * of MAIL (4xx or 5xx) is no answer about any recipient: every recipient is
 * deferred (issue 11).  When a transaction ends with nothing of the message
 * sent and no final answer about any recipient (MAIL refused, a 4xx to
 * every RCPT or to DATA, a malformed reply, a lost connection or a timeout
 * before the 354), the tx is marked failover and the deliverer carries the
 * message to the next address/host (RFC 5321 5.1; red team finding 4).  A
 * 4xx to some recipients while others are accepted defers those alone; once
 * a body byte went out nothing fails over (it could arrive twice).
 *
 * Ownership: the tx and its envelope are borrowed from the deliverer until
 * SMTP_CLIENT_TX_DONE; the client owns the open message file descriptor.
 *
 * Diagnostics: refusals we decide ourselves (SMTPUTF8 / 8BITMIME not offered,
 * size over the downstream SIZE) are recorded as replies with enhanced
 * status codes (RFC 3463 5.6.7, 5.6.3, 5.3.4) so the DSN explains them.
 */
#include "smtp-client-conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

/* smtp_client_tx_init - empty outcome arrays for a transaction. */
void smtp_client_tx_init(struct smtp_client_tx *tx, const struct queue_envelope *env,
                         const size_t *idx, size_t nidx, const char *msg_path)
{
	memset(tx, 0, sizeof(*tx));
	tx->env = env;
	tx->idx = idx;
	tx->nidx = nidx;
	tx->msg_path = msg_path;
	tx->has = util_xcalloc(nidx + 1, sizeof(bool));
	tx->out = util_xcalloc(nidx + 1, sizeof(*tx->out));
	tx->reply = util_xcalloc(nidx + 1, sizeof(char *));
}

/* smtp_client_tx_clear - free the outcome arrays. */
void smtp_client_tx_clear(struct smtp_client_tx *tx)
{
	if (tx->reply)
		for (size_t i = 0; i < tx->nidx; i++)
			free(tx->reply[i]);
	free(tx->has);
	free(tx->out);
	free(tx->reply);
	free(tx->error);
	memset(tx, 0, sizeof(*tx));
}

/* smtp_client_tx_set - 2xx done, 5xx bounce, anything else deferred. */
void smtp_client_tx_set(struct smtp_client_tx *tx, size_t i, int code, const char *reply)
{
	if (i >= tx->nidx)
		return;
	tx->has[i] = true;
	tx->out[i] = code >= 200 && code < 300   ? QUEUE_OUT_DONE
	             : code >= 500 && code < 600 ? QUEUE_OUT_BOUNCE
	                                         : QUEUE_OUT_DEFER;
	free(tx->reply[i]);
	tx->reply[i] = util_xstrdup(reply ? reply : "");
}

/* smtp_client_dot_stuff - RFC 5321 4.5.2 transparency. */
void smtp_client_dot_stuff(struct evbuffer *out, const char *p, size_t n, bool *bol)
{
	size_t i = 0;
	while (i < n) {
		if (*bol && p[i] == '.')
			evbuffer_add(out, ".", 1);
		const char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - p) + 1 : n;
		evbuffer_add(out, p + i, end - i);
		*bol = nl != NULL;
		i = end;
	}
}

/* smtp_client_conn_tx_settle - see smtp-client-conn.h: no probe, the
 * dialogue started (cursor: not a refusal decided here before MAIL, nor a
 * queue file that cannot be opened), no body byte sent, and every
 * recipient deferred. */
void smtp_client_conn_tx_settle(struct smtp_client *c)
{
	struct smtp_client_tx *tx = c->tx;
	if (tx == NULL || tx->probe || c->cursor == 0 || c->body_sent)
		return;
	for (size_t i = 0; i < tx->nidx; i++)
		if (!tx->has[i] || tx->out[i] != QUEUE_OUT_DEFER)
			return;
	tx->failover = true;
}

/* client_tx_end - the transaction is over (connection stays usable). */
static void client_tx_end(struct smtp_client *c)
{
	smtp_client_conn_tx_settle(c);
	if (c->body_fd >= 0) {
		close(c->body_fd);
		c->body_fd = -1;
	}
	c->tx = NULL;
	c->state = CS_IDLE;
	smtp_client_conn_arm(c, 0);
	smtp_client_conn_notify(c, SMTP_CLIENT_TX_DONE);
}

/* client_tx_finish_if_idle - all replies in and nothing left to send. */
static bool client_tx_complete(const struct smtp_client *c)
{
	return c->nexpect == 0 && c->cursor > 2 + c->tx->nidx;
}

/* client_tx_pump - send the next command(s) of the transaction: all at once
 * with PIPELINING (RFC 2920 3.1: DATA last), else one per reply. */
static void client_tx_pump(struct smtp_client *c)
{
	struct smtp_client_tx *tx = c->tx;
	const struct queue_envelope *env = tx->env;
	while (c->cursor <= 2 + tx->nidx && c->nexpect < CLIENT_MAX_PENDING - 1) {
		if (c->nexpect > 0 && !c->pipelining)
			break;
		size_t k = c->cursor;
		if (k == 2 + tx->nidx && tx->probe) {
			c->cursor++; /* a probe never sends DATA */
			break;
		}
		if (k == 2 + tx->nidx && !c->pipelining && (!c->mail_ok || c->naccepted == 0)) {
			c->cursor++; /* nobody to send to: no DATA */
			break;
		}
		c->cursor++;
		char line[SMTP_MAX_PATH + 128];
		if (k == 0) {
			if (c->ntx > 1) { /* RSET between messages on one connection */
				smtp_client_conn_send(c, "RSET");
				smtp_client_conn_expect(c, CMD_RSET, 0);
			}
		} else if (k == 1 && tx->probe) {
			/* RFC 5321 4.5.5: the null reverse-path, so nothing can bounce */
			smtp_client_conn_send(c, "MAIL FROM:<>");
			smtp_client_conn_expect(c, CMD_MAIL, 0);
		} else if (k == 1) {
			int64_t total =
			    (int64_t)(env->prepend ? strlen(env->prepend) : 0) + env->size;
			int n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", env->sender);
			if (c->has_size)
				n += snprintf(line + n, sizeof(line) - (size_t)n, " SIZE=%lld",
				              (long long)total);
			if (env->eightbit && c->eightbitmime)
				n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=8BITMIME");
			if (env->smtputf8 && c->smtputf8)
				snprintf(line + n, sizeof(line) - (size_t)n, " SMTPUTF8");
			smtp_client_conn_send(c, line);
			smtp_client_conn_expect(c, CMD_MAIL, 0);
		} else if (k < 2 + tx->nidx) {
			snprintf(line, sizeof(line), "RCPT TO:<%s>",
			         env->rcpts[tx->idx[k - 2]].addr);
			smtp_client_conn_send(c, line);
			smtp_client_conn_expect(c, CMD_RCPT, k - 2);
		} else {
			smtp_client_conn_send(c, "DATA");
			smtp_client_conn_expect(c, CMD_DATA, 0);
		}
	}
	if (client_tx_complete(c))
		client_tx_end(c);
	else
		smtp_client_conn_arm(c, c->conf.command_timeout);
}

/* smtp_client_conn_body_fill - stream prepend + message file into the output until
 * it holds CLIENT_BODY_HIGH bytes; the write callback calls again when it
 * drained (backpressure).  At the end: CRLF if missing, then ".". */
void smtp_client_conn_body_fill(struct smtp_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *prepend = c->tx->env->prepend ? c->tx->env->prepend : "";
	size_t plen = strlen(prepend);
	char buf[16384];
	while (evbuffer_get_length(out) < CLIENT_BODY_HIGH) {
		const char *p;
		ssize_t n;
		if (c->prepend_off < plen) {
			p = prepend + c->prepend_off;
			n = (ssize_t)(plen - c->prepend_off);
			c->prepend_off = plen;
		} else {
			n = read(c->body_fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				smtp_client_conn_fail(c, "4.3.0 cannot read queue file: %s",
				                      strerror(errno));
				return;
			}
			p = buf;
		}
		if (n == 0) {
			if (memcmp(c->last2, "\r\n", 2) != 0)
				evbuffer_add(out, "\r\n", 2);
			evbuffer_add(out, ".\r\n", 3);
			close(c->body_fd);
			c->body_fd = -1;
			c->state = CS_TX;
			smtp_client_conn_expect(c, CMD_DOT, 0);
			smtp_client_conn_arm(c, c->conf.data_timeout);
			return;
		}
		smtp_client_dot_stuff(out, p, (size_t)n, &c->bol);
		if (n >= 2) {
			memcpy(c->last2, p + n - 2, 2);
		} else {
			c->last2[0] = c->last2[1];
			c->last2[1] = p[0];
		}
	}
	smtp_client_conn_arm(c, c->conf.data_timeout); /* progress: restart the data timer */
}

/* client_set_accepted - outcome for every accepted recipient. */
static void client_set_accepted(struct smtp_client *c, int code, const char *rs)
{
	for (size_t i = 0; i < c->tx->nidx; i++)
		if (c->accepted[i] && !c->tx->has[i])
			smtp_client_tx_set(c->tx, i, code, rs);
}

/* smtp_client_conn_tx_reply - one reply inside a transaction. */
void smtp_client_conn_tx_reply(struct smtp_client *c, enum client_cmd cmd, size_t rcpt,
                               const struct smtp_reply *r, const char *rs)
{
	struct smtp_client_tx *tx = c->tx;
	bool ok = r->code / 100 == 2;
	switch (cmd) {
	case CMD_RSET:
		if (!ok) {
			smtp_client_conn_fail(c, "4.0.0 RSET refused: %s", rs);
			return;
		}
		break;
	case CMD_MAIL:
		c->mail_ok = ok;
		if (!ok && !tx->probe) {
			/* Issue 11: only a recipient's own 5xx (RCPT, or the
			 * reply to end-of-data) may bounce.  A refused MAIL FROM
			 * (5xx, or 4xx: try later) says this host will not take
			 * the message now: like a refused greeting, the deliverer
			 * tries the next address/host, then defers (failover). */
			char *why =
			    util_xasprintf("4.4.0 MAIL FROM refused by %s: %s", c->relay, rs);
			for (size_t i = 0; i < tx->nidx; i++)
				smtp_client_tx_set(tx, i, 0, why);
			free(why);
		} else if (!ok) {
			for (size_t i = 0; i < tx->nidx; i++)
				smtp_client_tx_set(tx, i, 0, rs);
		}
		if (!ok && !c->pipelining)
			c->cursor = 3 + tx->nidx; /* nothing more to send */
		break;
	case CMD_RCPT:
		if (!c->mail_ok)
			break;
		if (ok && tx->probe) {
			smtp_client_tx_set(tx, rcpt, r->code, rs);
		} else if (ok) {
			c->naccepted++;
			c->accepted[rcpt] = true; /* final outcome after DATA */
		} else {
			smtp_client_tx_set(tx, rcpt, r->code, rs);
		}
		break;
	case CMD_DATA:
		if (r->code == 354) {
			/* After 354 the server waits for the data (RFC 5321
			 * 4.1.1.4): anything it sent with the 354 would be
			 * read as the reply to a dot that is not on the wire
			 * yet - a message never received would count as sent. */
			if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
				smtp_client_conn_fail(c,
				                      "4.5.0 reply after 354 before the message "
				                      "was sent: %s",
				                      rs);
				return;
			}
			if (!c->mail_ok || c->naccepted == 0) {
				/* RFC 2920 3.1: 354 despite no valid recipient - end it */
				evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
				smtp_client_conn_expect(c, CMD_DOT, 0);
				smtp_client_conn_arm(c, c->conf.command_timeout);
				return;
			}
			c->state = CS_BODY;
			c->body_sent = true;
			c->bol = true;
			memcpy(c->last2, "\r\n", 2);
			c->prepend_off = 0;
			smtp_client_conn_body_fill(c);
			return;
		}
		/* Only 354 starts the body (RFC 5321 4.3.2).  4xx/5xx is the
		 * answer for every accepted recipient; anything else (a 2xx from
		 * a broken server) means nothing was sent, so nothing is
		 * delivered, and the dialogue is out of step: defer, drop it. */
		if (r->code / 100 == 4 || r->code / 100 == 5) {
			if (c->mail_ok && c->naccepted > 0)
				client_set_accepted(c, r->code, rs);
			break;
		}
		smtp_client_conn_fail(c, "4.5.0 unexpected reply to DATA (354 expected): %s", rs);
		return;
	case CMD_DOT:
		/* a reply while the dot is still in our output buffer cannot be
		 * the reply to it */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
			smtp_client_conn_fail(c, "4.5.0 reply before the end of data was sent: %s",
			                      rs);
			return;
		}
		client_set_accepted(c, r->code, rs);
		break;
	default:
		smtp_client_conn_fail(c, "4.5.0 unexpected reply: %s", rs);
		return;
	}
	if (c->state != CS_DEAD)
		client_tx_pump(c);
}

/* smtp_client_send - start one transaction (outcomes in tx, then TX_DONE). */
int smtp_client_send(struct smtp_client *c, struct smtp_client_tx *tx)
{
	if (c->state != CS_IDLE || c->tx != NULL)
		return -1;
	const struct queue_envelope *env = tx->env;
	c->tx = tx;
	c->state = CS_TX;
	c->cursor = 0;
	c->nexpect = 0;
	c->expect_head = 0;
	c->mail_ok = false;
	c->body_sent = false;
	c->naccepted = 0;
	free(c->accepted);
	c->accepted = util_xcalloc(tx->nidx + 1, sizeof(bool));
	int64_t total = (int64_t)(env->prepend ? strlen(env->prepend) : 0) + env->size;
	const char *refuse = NULL;
	char buf[200];
	/* Never downgrade silently (RFC 6531 3.4, RFC 6152): refuse instead. */
	if (env->smtputf8 && !c->smtputf8)
		refuse =
		    "550 5.6.7 SMTPUTF8 is required, but the downstream server does not offer it";
	else if (env->eightbit && !c->eightbitmime)
		refuse =
		    "554 5.6.3 8BITMIME is required, but the downstream server does not offer it";
	else if (c->has_size && c->size_max > 0 && total > c->size_max) {
		snprintf(buf, sizeof(buf),
		         "552 5.3.4 message size %lld exceeds the downstream limit %lld",
		         (long long)total, (long long)c->size_max);
		refuse = buf;
	}
	if (tx->probe) {
		c->ntx++;
		client_tx_pump(c);
		return 0;
	}
	if (refuse != NULL) {
		for (size_t i = 0; i < tx->nidx; i++)
			smtp_client_tx_set(tx, i, atoi(refuse), refuse);
		client_tx_end(c);
		return 0;
	}
	c->ntx++;
	c->body_fd = open(tx->msg_path, O_RDONLY | O_CLOEXEC);
	if (c->body_fd < 0) {
		snprintf(buf, sizeof(buf), "4.3.0 cannot open queue file: %s", strerror(errno));
		tx->error = util_xstrdup(buf);
		for (size_t i = 0; i < tx->nidx; i++)
			smtp_client_tx_set(tx, i, 0, buf);
		client_tx_end(c);
		return 0;
	}
	client_tx_pump(c);
	return 0;
}
