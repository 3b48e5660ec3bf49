/*
 * smtp-internal.h - pure, incremental parsers shared by the SMTP server and
 * client, and by the unit tests and fuzz targets: command lines, MAIL/RCPT
 * paths, the DATA stream (dot-unstuffing, strict CRLF), PROXY v1/v2 headers
 * and downstream replies.  None of them allocates from a network-controlled
 * size without checking it against a limit first.
 */
#ifndef MX_SMTP_INTERNAL_H
#define MX_SMTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SMTP_MAX_CMD_LINE 512      /* RFC 5321 4.5.3.1.4, including CRLF */
#define SMTP_MAX_PATH 256          /* RFC 5321 4.5.3.1.3 */
#define SMTP_MAX_PARAMS 16

/* ------------------------------------------------------------ command lines */

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,
	SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_VRFY, SMTP_VERB_EXPN,
	SMTP_VERB_HELP, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH, SMTP_VERB_BDAT,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;     /* text after the verb and one space, trailing spaces
	                        removed; "" when none.  Points into argbuf below
	                        (the line is const, so the trimmed copy lives here):
	                        valid as long as this struct, not after a copy. */
	char argbuf[SMTP_MAX_CMD_LINE];  /* private */
};

/* smtp_cmd_parse - line is one command WITHOUT its CRLF, NUL-terminated
 * (line[len] == 0).  The verb is matched case-insensitively.  Returns 0, or -1
 * for an unknown verb / a line that contains a NUL, CR or LF byte / a verb
 * glued to its argument ("MAILFROM:"), or a line longer than
 * SMTP_MAX_CMD_LINE - 2 (RFC 5321 4.5.3.1.4).  On -1, cmd->verb is UNKNOWN. */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);
const char *smtp_verb_name(enum smtp_verb v);

/* ------------------------------------------------------------ MAIL / RCPT */

struct smtp_param {
	char key[32];        /* upper-cased esmtp-keyword */
	char value[128];     /* esmtp-value, "" when absent */
};

struct smtp_path {
	char addr[SMTP_MAX_PATH + 1];  /* "user@domain", "" for <>; source route removed */
	bool null_path;                /* <> */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t nparams;
};

/* smtp_path_parse - arg is the MAIL/RCPT argument ("FROM:<a@b> SIZE=10").
 * prefix is "FROM:" or "TO:" (case-insensitive; one optional space after the
 * colon is tolerated, as Postfix does).  utf8 allows UTF-8 in the address
 * (SMTPUTF8).  null_ok allows <> (MAIL only).  Returns 0, or -1 with an SMTP
 * reply in reply (e.g. "501 5.1.3 Bad recipient address syntax").
 * Refused: missing angle brackets, a second '@' outside a quoted local part,
 * 8-bit bytes without utf8, control characters, esmtp params that are not
 * keyword[=value], more than SMTP_MAX_PARAMS params, an address longer than
 * SMTP_MAX_PATH.  A source route "@a,@b:user@c" is accepted and dropped
 * (RFC 5321 4.1.1.3, C.). */
int smtp_path_parse(const char *arg, const char *prefix, bool utf8, bool null_ok,
		    struct smtp_path *out, char *reply, size_t replylen);
/* smtp_path_param - value of param key (case-insensitive) or NULL. */
const char *smtp_path_param(const struct smtp_path *p, const char *key);
/* smtp_addr_is_relay_hack - local part contains '%' or '!', or a quoted
 * local part contains '@' (relay tricks).  addr as returned by path_parse. */
bool smtp_addr_is_relay_hack(const char *addr);

/* ------------------------------------------------------------ DATA stream */

/* Errors found in a DATA stream (bit mask).  The parser keeps going after an
 * error until the real end of data, so nothing is ever split in two. */
enum {
	SMTP_DATA_BARE_LF = 1 << 0,       /* LF not preceded by CR */
	SMTP_DATA_BARE_CR = 1 << 1,       /* CR not followed by LF */
	SMTP_DATA_LONG_LINE = 1 << 2,     /* line over p->line_limit */
	SMTP_DATA_NUL = 1 << 3,           /* NUL byte */
	SMTP_DATA_TOO_BIG = 1 << 4,       /* over the size limit */
};

struct smtp_data_parser {
	int state;            /* private */
	size_t line_len;      /* bytes in the current line so far */
	int64_t size;         /* message bytes emitted (after unstuffing) */
	int64_t limit;        /* size limit; bytes past it are not emitted */
	size_t line_limit;    /* longest line (octets before CRLF, as sent, a stuffing
	                         dot included); 0 = none.  Lines are streamed, never
	                         held, so this is policy, not a memory bound. */
	unsigned errors;      /* SMTP_DATA_* */
	bool eightbit;        /* saw a byte >= 0x80 */
	bool write_error;     /* emit returned -1; nothing emitted since */
};

/* emit - message bytes (CRLF endings, dot-unstuffed), in order, possibly in
 * many small pieces.  Returns 0, or -1 to note a write error (the parser
 * stops emitting but keeps looking for the end). */
typedef int (*smtp_data_emit_fn)(const char *p, size_t n, void *arg);

/* smtp_data_init - start of DATA ("beginning of line"); limit <= 0 means no
 * size limit.  No line length limit: set p->line_limit after init for one
 * (a longer line is flagged SMTP_DATA_LONG_LINE and still emitted, whole).
 * Bare LF and bare CR are flagged and emitted as CRLF (so the
 * output only has CRLF line ends) but never count as the CRLF of the end of
 * data, and the line after them is not dot-unstuffed; NUL bytes are flagged
 * and not emitted.  A relay of the output must dot-stuff it (RFC 5321
 * 4.5.2), as for any message. */
void smtp_data_init(struct smtp_data_parser *p, int64_t limit);
/* smtp_data_feed - consume bytes from buf.  Returns the number of bytes
 * consumed; *done is set when "CRLF.CRLF" ended the data - bytes after it
 * are not consumed (they are the next, pipelined command).  The final CRLF
 * before the dot belongs to the message; the dot line does not. */
size_t smtp_data_feed(struct smtp_data_parser *p, const char *buf, size_t n,
		      smtp_data_emit_fn emit, void *arg, bool *done);

/* ------------------------------------------------------------ header/body split */

/* What the splitter (smtp-hdrsplit.c) hands back: field() for each
 * complete header field, in order (true = drop it); head() with the header
 * bytes to keep (kept fields and the empty line), in order, as runs of kept
 * fields end - so it may come between field() calls; eoh() once, after the
 * last field and before the first body(); body() with the body bytes. */
struct smtp_hdrsplit_ops {
	bool (*field)(void *arg, const struct util_hdr_field *f);
	void (*eoh)(void *arg);
	void (*head)(void *arg, const char *p, size_t n);
	void (*body)(void *arg, const char *p, size_t n);
};

struct smtp_hdrsplit {
	const struct smtp_hdrsplit_ops *ops;
	void *arg;
	size_t max;          /* header block limit (max_header_size) */
	struct util_buf hdr; /* the header block while it is being read */
	size_t scan;         /* start of the first unscanned line in hdr */
	bool in_body;        /* the header block is over */
	bool overflow;       /* the header block outgrew max: message refused */
};

void smtp_hdrsplit_init(struct smtp_hdrsplit *h, size_t max, const struct smtp_hdrsplit_ops *ops,
			void *arg);
void smtp_hdrsplit_feed(struct smtp_hdrsplit *h, const char *p, size_t n);
void smtp_hdrsplit_end(struct smtp_hdrsplit *h);
void smtp_hdrsplit_free(struct smtp_hdrsplit *h);

/* ------------------------------------------------------------ PROXY protocol */

struct smtp_proxy_info {
	bool local;               /* v2 LOCAL / v1 UNKNOWN: use the real peer address */
	struct util_addr src;     /* the client as the proxy saw it */
	struct util_addr dst;
};
#define SMTP_PROXY_V1_MAX 107
#define SMTP_PROXY_V2_MAX 4096    /* header + TLVs we accept */

/* smtp_proxy_parse - buf holds the first bytes of a connection.  Returns the
 * header length (> 0) when a complete valid v1 or v2 header was parsed, 0 when
 * more bytes are needed, -1 when the bytes are not a valid PROXY header
 * (including over-long ones). */
int smtp_proxy_parse(const unsigned char *buf, size_t len, struct smtp_proxy_info *out);
/* smtp_proxy_looks_like - the first bytes start like a PROXY v1 or v2 header
 * (used to refuse PROXY from untrusted peers). */
bool smtp_proxy_looks_like(const unsigned char *buf, size_t len);

/* ------------------------------------------------------------ Received: */

/* What the Received: trace field says; every pointer is borrowed. */
struct smtp_received {
	const char *helo;     /* the client's HELO/EHLO argument */
	const char *rdns;     /* forward-confirmed client name, "" or NULL if none */
	const char *client;   /* the client address, without brackets */
	bool v6;              /* write it as an IPv6 address literal */
	const char *tls_desc; /* "version cipher", NULL without TLS */
	const char *by;       /* our host name (config) */
	const char *proto;    /* ESMTP, ESMTPS, UTF8SMTP... (RFC 3848, RFC 6531) */
	const char *qid;      /* queue id */
	const char *rcpt;     /* the only recipient, NULL when several */
	const char *date;     /* RFC 5322 date-time */
};
/* smtp_received_format - append the Received: field (RFC 5321 4.4) to b;
 * client-controlled parts are reduced to text that cannot forge a comment,
 * a clause, a date or another field (smtp-received.c). */
void smtp_received_format(struct util_buf *b, const struct smtp_received *r);
/* smtp_received_for_ok - addr may be written in "for <addr>": dot-atom local
 * part, domain of letters, digits, hyphens and dots (UTF-8 allowed). */
bool smtp_received_for_ok(const char *addr);

/* ------------------------------------------------------------ replies (client side) */

struct smtp_reply {
	int code;                 /* 200..599 */
	char text[4096];          /* all lines' text joined with "\n", codes stripped, truncated */
	size_t nlines;
};
/* smtp_reply_parse - buf holds bytes from a server.  Returns bytes consumed
 * by one complete (possibly multi-line) reply, 0 when more bytes are needed,
 * -1 on a malformed reply (bad code, code changes between lines, line over
 * 4096 bytes, more than 1000 lines). */
int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *out);

#endif
