/*
 * scan.h - content inspection by external engines at the end of DATA
 * (issue 13): ClamAV's clamd over its INSTREAM protocol (scan-clamd.c), the
 * reply parser (scan-reply.c) and the verdict header (X-Virus-Scan).
 *
 * The engines run as daemons beside mxgate; mxgate talks to them on the
 * event loop without blocking, streams the spooled message from its spool
 * file (never the whole message in memory) and enforces a deadline.
 *
 * Threads: loop thread only.  Ownership: scan_clamd_free() frees what
 * scan_clamd_new() made; configs are borrowed for the call only.
 */
#ifndef MX_SCAN_H
#define MX_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "util.h"

/* The header mxgate stamps with the virus scan's outcome; incoming copies
 * are dropped (scan_is_our_header). */
#define SCAN_VIRUS_HEADER "X-Virus-Scan"
/* The header a quarantined message carries (reason, host, time), kept when
 * it is released; incoming copies are dropped too. */
#define SCAN_QUARANTINE_HEADER "X-Mxgate-Quarantine"

enum scan_status {
	SCAN_CLEAN = 0, /* scanned, nothing found */
	SCAN_INFECTED,  /* scanned, signature `name` found */
	SCAN_FAILED,    /* not scanned: `name` is the reason (timeout, unavailable, error...) */
};

struct scan_result {
	enum scan_status status;
	char name[128]; /* signature name or failure reason, printable ASCII, no ';' */
};

/* ------------------------------------------------------------ reply parser */

/* scan_clamd_parse_reply - one clamd reply (without its NUL terminator):
 * "stream: OK", "stream: NAME FOUND", "... ERROR", optionally prefixed with
 * an IDSESSION request number "N: ".  *id gets N (0 without a prefix).
 * 0 with *r filled (an ERROR reply is SCAN_FAILED with reason "clamd_error"
 * or "clamd_size_limit"), -1 when the reply is not understood. */
int scan_clamd_parse_reply(const char *line, size_t n, unsigned long *id, struct scan_result *r);

/* ------------------------------------------------------------ clamd client */

struct scan_clamd;

/* scan_done_fn - the outcome of one scan, always called exactly once per
 * successful scan_clamd_start(), from the loop, never from inside
 * scan_clamd_start() itself; never after scan_clamd_free(). */
typedef void (*scan_done_fn)(uint64_t cookie, const struct scan_result *r, void *arg);

struct scan_clamd *scan_clamd_new(struct event_base *base);
/* scan_clamd_start - scan the first len bytes of fd (takes ownership of fd,
 * closed when the scan ends; -1 = the spool could not be opened, reported
 * through the callback as "spool_read") against cfg's [clamav] socket, with
 * its timeout and connection limit.  0, or -1 when [clamav] socket is unset
 * or out of memory (fd is closed then too; no callback). */
int scan_clamd_start(struct scan_clamd *c, const struct config *cfg, int fd, int64_t len,
                     scan_done_fn cb, uint64_t cookie, void *arg);
/* scan_clamd_pending - scans in flight or waiting for a connection. */
size_t scan_clamd_pending(const struct scan_clamd *c);
/* scan_clamd_free - close every connection; pending scans are dropped
 * without their callbacks.  NULL is a no-op. */
void scan_clamd_free(struct scan_clamd *c);

/* ------------------------------------------------------------ rspamd */

/* rspamd's recommended action (https://rspamd.com/doc/configuration/metrics.html). */
enum scan_spam_action {
	SCAN_SPAM_NO_ACTION = 0,
	SCAN_SPAM_GREYLIST,
	SCAN_SPAM_ADD_HEADER,
	SCAN_SPAM_REWRITE_SUBJECT,
	SCAN_SPAM_SOFT_REJECT,
	SCAN_SPAM_REJECT,
	SCAN_SPAM_DISCARD,
	SCAN_SPAM_QUARANTINE,
};

/* The largest /checkv2 answer read (body), and its header block: a larger
 * one fails the check as "reply_too_large" as soon as it is announced or
 * passes the limit, never buffered whole.  The answer is parsed on the
 * loop: 1 MiB of JSON costs it some 25 ms (4 MiB, the old limit, about
 * 100 ms per message); rspamd's real answers are a few KiB. */
#define SCAN_RSPAMD_MAX_REPLY   (1024 * 1024)
#define SCAN_RSPAMD_MAX_HEADERS (64 * 1024)

/* The outcome of one rspamd check.  failed: not checked, `reason` says why. */
struct scan_spam_result {
	bool failed;
	char reason[64];
	enum scan_spam_action action;
	double score, required;
	char symbols[2048]; /* "SYM(1.50),SYM2(-0.10)", header-safe tokens; cut at a symbol */
	char message[256];  /* rspamd's smtp_message, printable ASCII, or "" */
	bool has_mxgate_auth; /* MXGATE_AUTH among the symbols: deploy/rspamd/mxgate.lua ran */
};

/* scan_rspamd_parse_reply - the JSON body of a /checkv2 answer into *r
 * (r->failed stays false).  0, or -1 when it is not JSON or has no action
 * or score. */
int scan_rspamd_parse_reply(const char *body, size_t n, struct scan_spam_result *r);
/* scan_spam_action_name - "no action", "reject", ... as rspamd spells them. */
const char *scan_spam_action_name(enum scan_spam_action a);
/* scan_spam_headers - append the flag, score and status fields (names from
 * [spam]) for an answered check r; spam: flag it (YES).  The status reads
 * "Yes, score=7.50 required=15.00 action="add header" scanner=rspamd
 * tests=A(1.00),B(6.50)", folded under 78 columns between symbols. */
void scan_spam_headers(struct util_buf *b, const struct config *cfg,
                       const struct scan_spam_result *r, bool spam);

/* Facts about the message rspamd gets as request headers (borrowed). */
struct scan_envelope {
	const char *client_ip, *helo, *hostname; /* hostname: FCrDNS name or NULL */
	const char *mail_from;
	const char *const *rcpts;
	size_t nrcpts;
	const char *queue_id;
	const char *tls_version, *tls_cipher; /* NULL without TLS */
	const char *auth_summary;             /* "spf=pass dkim=pass dmarc=pass" or NULL */
	double auth_score;                    /* mxgate's own authentication score */
	const char *mta_name;
	const char *body_prefix; /* header field(s) held out of the spool
	                            (the Subject, see smtp-session-scan.c),
	                            sent before it; NULL = none */
};

struct scan_rspamd;
typedef void (*scan_spam_done_fn)(uint64_t cookie, const struct scan_spam_result *r, void *arg);

struct scan_rspamd *scan_rspamd_new(struct event_base *base);
/* scan_rspamd_start - POST the first len bytes of fd (takes ownership; -1 =
 * unreadable, reported as "spool_read") to cfg's [rspamd] address at
 * /checkv2 with the envelope as headers.  The callback runs exactly once,
 * from the loop, never inside this call, never after scan_rspamd_free().
 * 0, or -1 when [rspamd] is not configured (no callback). */
int scan_rspamd_start(struct scan_rspamd *c, const struct config *cfg, int fd, int64_t len,
                      const struct scan_envelope *env, scan_spam_done_fn cb, uint64_t cookie,
                      void *arg);
void scan_rspamd_free(struct scan_rspamd *c);

/* ------------------------------------------------------------ headers */

/* scan_is_our_header - an incoming field a downstream could take for our
 * scan verdict (X-Virus-Scan) or any other X-Mxgate-* field of ours
 * (quarantine, release), dropped at ingress. */
bool scan_is_our_header(const struct util_hdr_field *f);
/* scan_header - append "X-Virus-Scan: ...\r\n" for r ("clean",
 * "infected; virus=NAME" or "unscanned; reason=WHY") stamped by host. */
void scan_header(struct util_buf *b, const struct scan_result *r, const char *host);

#endif
