/*
 * queue-dsn.c - the pure parts of retry and bounce handling: the backoff
 * schedule and RFC 3464 delivery status notifications (multipart/report;
 * report-type=delivery-status).
 *
 * A DSN has three parts (RFC 3462/6522 multipart/report):
 *   1. text/plain - a human explanation with one line per recipient;
 *   2. message/delivery-status - the per-message fields (Reporting-MTA,
 *      Arrival-Date, RFC 3464 2.2) and one block per recipient
 *      (Final-Recipient, Action, Status, Diagnostic-Code, RFC 3464 2.3);
 *   3. text/rfc822-headers - the original header block (RFC 3462 section 3),
 *      never the body: a bounce must not relay content a second time.
 *
 * Ownership: queue_dsn_compose returns a malloc'd message the caller frees;
 * every argument is borrowed.
 *
 * Diagnostics: none; text taken from the network (downstream replies,
 * addresses) is sanitised so it can never break the MIME structure: CR, LF
 * and other control characters become spaces and diagnostic text is capped.
 */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

/* Used when the config holds no schedule (RFC 5321 4.5.4.1 suggests 30 min;
 * the issue asks for a faster start). */
static const int64_t dsn_default_schedule[] = {60, 300, 900, 1800, 3600};

#define DSN_DIAG_MAX 900 /* keeps each field line under 998 octets (RFC 5322 2.1.1) */

/* queue_backoff - delay before retry number `attempt` (1 = first retry). */
int64_t queue_backoff(const int64_t *schedule, size_t n, int attempt)
{
	if (schedule == NULL || n == 0) {
		schedule = dsn_default_schedule;
		n = sizeof(dsn_default_schedule) / sizeof(dsn_default_schedule[0]);
	}
	if (attempt < 1)
		attempt = 1;
	size_t i = (size_t)attempt - 1;
	if (i >= n)
		i = n - 1;
	return schedule[i] > 0 ? schedule[i] : 1;
}

/* dsn_add_clean - append s with control characters turned into spaces, at
 * most max bytes (leading/trailing blanks dropped). */
static void dsn_add_clean(struct util_buf *b, const char *s, size_t max)
{
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		n--;
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char out = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
		util_buf_add(b, &out, 1);
	}
}

/* dsn_contains - needle occurs in s[0..n) (s may hold NUL bytes). */
static bool dsn_contains(const char *s, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	for (size_t i = 0; k <= n && i <= n - k; i++)
		if (s[i] == needle[0] && memcmp(s + i, needle, k) == 0)
			return true;
	return false;
}

/* dsn_is_ascii - no byte >= 0x80 in s[0..n). */
static bool dsn_is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
}

/* dsn_address_type - RFC 3464 address type: rfc822, or utf-8 (RFC 6533) for
 * an internationalised address. */
static const char *dsn_address_type(const char *addr)
{
	return dsn_is_ascii(addr, strlen(addr)) ? "rfc822" : "utf-8";
}

/* dsn_human_text - the text/plain part. */
static void dsn_human_text(struct util_buf *b, const char *reporting_mta,
                           const struct queue_envelope *env, bool failed,
                           const struct queue_dsn_rcpt *rcpts, size_t nrcpts)
{
	util_buf_printf(b, "This is the mail system at host %s.\r\n\r\n", reporting_mta);
	if (failed)
		util_buf_adds(b, "I'm sorry to have to inform you that your message could not\r\n"
		                 "be delivered to one or more recipients. The delivery status\r\n"
		                 "report and the headers of your message are attached.\r\n\r\n");
	else
		util_buf_adds(b, "Your message could not be delivered yet to one or more\r\n"
		                 "recipients. Delivery will be retried; you do not need to\r\n"
		                 "send it again. This is only a warning.\r\n\r\n");
	util_buf_printf(b, "Queue id: %s\r\n\r\n", env->id);
	for (size_t i = 0; i < nrcpts; i++) {
		util_buf_adds(b, "<");
		dsn_add_clean(b, rcpts[i].addr, 256);
		util_buf_adds(b, ">: ");
		dsn_add_clean(b, rcpts[i].diagnostic ? rcpts[i].diagnostic : rcpts[i].status,
		              DSN_DIAG_MAX);
		util_buf_adds(b, "\r\n");
	}
}

/* dsn_add_folded - the sender's header block, with every line longer than
 * DSN_LINE_FOLD octets folded (CRLF SP inserted, RFC 5322 2.2.3): header
 * lines up to [limits] max_line_length are accepted, but a DSN with a line
 * over 998 octets (RFC 5322 2.1.1) is refused by many MXs, and a bounce
 * cannot bounce - the sender would never hear of the failure.  Removing
 * each inserted CRLF gives the original text back. */
#define DSN_LINE_FOLD 900
static void dsn_add_folded(struct util_buf *b, const char *h, size_t len)
{
	size_t col = 0, run = 0;

	for (size_t i = 0; i < len; i++) {
		if (h[i] == '\n') {
			col = 0;
			continue;
		}
		if (++col > DSN_LINE_FOLD && h[i] != '\r') { /* never inside a CRLF */
			util_buf_add(b, h + run, i - run);
			util_buf_adds(b, "\r\n ");
			run = i;
			col = 2; /* the SP and this octet */
		}
	}
	util_buf_add(b, h + run, len - run);
}

/* queue_dsn_headers_cut - bytes of whole header fields that fit in max. */
size_t queue_dsn_headers_cut(const char *h, size_t len, size_t max)
{
	size_t cut = 0;

	if (len <= max)
		return len;
	/* A field ends at a CRLF (or bare LF) not followed by folding
	 * whitespace; the last such end at or before max is the cut. */
	for (size_t i = 0; i < len && i < max; i++) {
		if (h[i] != '\n')
			continue;
		if (i + 1 < len && (h[i + 1] == ' ' || h[i + 1] == '\t'))
			continue;
		if (i + 1 <= max)
			cut = i + 1;
	}
	return cut;
}

/* queue_dsn_suppress_reason - a forged-looking sender gets no DSN: SPF
 * fail means the sending host is not allowed to use that envelope domain,
 * DMARC fail means the From: domain's owner disowns the message; a bounce
 * to either address would be backscatter to a third party. */
const char *queue_dsn_suppress_reason(const struct queue_envelope *env)
{
	if (env->spf != NULL && strcmp(env->spf, "fail") == 0)
		return "spf_fail";
	if (env->dmarc != NULL && strcmp(env->dmarc, "fail") == 0)
		return "dmarc_fail";
	return NULL;
}

/* queue_dsn_compose - an RFC 3464 report for rcpts of env; see queue.h. */
char *queue_dsn_compose(const char *reporting_mta, const char *from_addr,
                        const struct queue_envelope *env, const char *action,
                        const struct queue_dsn_rcpt *rcpts, size_t nrcpts, const char *orig_headers,
                        size_t orig_len, int64_t now, size_t *len_out)
{
	bool failed = strcmp(action, "failed") == 0;
	char date[64], arrival[64], boundary[80];
	util_rfc5322_date(now, date);
	util_rfc5322_date(env->arrival, arrival);
	/* The boundary carries the queue id and time.  The attached header
	 * block is the sender's text: anyone who knows the queue id (it is in
	 * our 250 reply) and guesses the time could put "--boundary" at the
	 * start of a line there and end the part early for a lax MIME reader
	 * (RFC 2046 5.1.1 wants a boundary that occurs nowhere in the body).
	 * So a counter is added until it does not occur; the other parts are
	 * ours and never start a line with "--". */
	for (int n = 0;; n++) {
		char delim[84];
		if (n == 0)
			snprintf(boundary, sizeof(boundary), "%s.%lld/mxgate-dsn", env->id,
			         (long long)now);
		else
			snprintf(boundary, sizeof(boundary), "%s.%lld.%d/mxgate-dsn", env->id,
			         (long long)now, n);
		snprintf(delim, sizeof(delim), "--%s", boundary);
		if (orig_headers == NULL || !dsn_contains(orig_headers, orig_len, delim))
			break;
	}

	struct util_buf b;
	util_buf_init(&b);
	util_buf_printf(&b, "From: Mail Delivery System <%s>\r\n", from_addr);
	util_buf_adds(&b, "To: <");
	dsn_add_clean(&b, env->sender, 256);
	util_buf_adds(&b, ">\r\n");
	util_buf_printf(&b, "Subject: %s\r\n",
	                failed ? "Undelivered Mail Returned to Sender"
	                       : "Delayed Mail (still being retried)");
	util_buf_printf(&b, "Date: %s\r\n", date);
	util_buf_printf(&b, "Message-ID: <%s.%lld.%s@%s>\r\n", env->id, (long long)now, action,
	                reporting_mta);
	/* RFC 3834 5: automatic responses must not trigger other responses. */
	util_buf_adds(&b, "Auto-Submitted: auto-replied\r\n");
	util_buf_adds(&b, "MIME-Version: 1.0\r\n");
	util_buf_printf(&b,
	                "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	                "\tboundary=\"%s\"\r\n",
	                boundary);
	util_buf_adds(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* 1. human readable */
	util_buf_printf(&b, "--%s\r\n", boundary);
	util_buf_adds(&b, "Content-Description: Notification\r\n"
	                  "Content-Type: text/plain; charset=utf-8\r\n\r\n");
	dsn_human_text(&b, reporting_mta, env, failed, rcpts, nrcpts);
	util_buf_adds(&b, "\r\n");

	/* 2. machine readable, RFC 3464 section 2 */
	util_buf_printf(&b, "--%s\r\n", boundary);
	util_buf_adds(&b, "Content-Description: Delivery report\r\n"
	                  "Content-Type: message/delivery-status\r\n\r\n");
	util_buf_printf(&b, "Reporting-MTA: dns; %s\r\n", reporting_mta);
	util_buf_printf(&b, "X-Mxgate-Queue-ID: %s\r\n", env->id);
	if (env->sender[0] != '\0') {
		util_buf_printf(&b, "X-Original-Sender: %s; ", dsn_address_type(env->sender));
		dsn_add_clean(&b, env->sender, 256);
		util_buf_adds(&b, "\r\n");
	}
	util_buf_printf(&b, "Arrival-Date: %s\r\n", arrival);
	for (size_t i = 0; i < nrcpts; i++) {
		util_buf_adds(&b, "\r\n");
		util_buf_printf(&b, "Final-Recipient: %s; ", dsn_address_type(rcpts[i].addr));
		dsn_add_clean(&b, rcpts[i].addr, 256);
		util_buf_printf(&b, "\r\nAction: %s\r\n", action);
		util_buf_adds(&b, "Status: ");
		dsn_add_clean(&b, rcpts[i].status, 16);
		util_buf_adds(&b, "\r\n");
		if (rcpts[i].diagnostic != NULL && rcpts[i].diagnostic[0] != '\0') {
			util_buf_adds(&b, "Diagnostic-Code: ");
			dsn_add_clean(&b, rcpts[i].diagnostic, DSN_DIAG_MAX);
			util_buf_adds(&b, "\r\n");
		}
		util_buf_printf(&b, "Last-Attempt-Date: %s\r\n", date);
	}
	util_buf_adds(&b, "\r\n");

	/* 3. the original header block, RFC 3462 section 3 */
	util_buf_printf(&b, "--%s\r\n", boundary);
	util_buf_adds(&b, "Content-Description: Undelivered Message Headers\r\n"
	                  "Content-Type: text/rfc822-headers\r\n\r\n");
	if (orig_headers != NULL && orig_len > 0) {
		dsn_add_folded(&b, orig_headers, orig_len);
		if (orig_len < 2 || memcmp(orig_headers + orig_len - 2, "\r\n", 2) != 0)
			util_buf_adds(&b, "\r\n");
	}
	util_buf_printf(&b, "\r\n--%s--\r\n", boundary);

	if (len_out != NULL)
		*len_out = b.len;
	return b.data;
}
