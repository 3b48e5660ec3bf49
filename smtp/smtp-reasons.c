/*
 * smtp-reasons.c - the reason label values of mxgate_connections_refused_total
 * and mxgate_messages_rejected_total (smtp-reasons.h); the guide's metrics
 * table lists the same words (docs/postmaster-guide.md).
 *
 * Ownership: static tables.  Diagnostics: none.
 */
#include "smtp-reasons.h"

#include <stddef.h>

/* smtp_refused_reasons - connections refused (smtp-session.c, smtp-server.c,
 * smtp-dnsbl.c). */
const char *const smtp_refused_reasons[] = {
    "access",                 /* [access] deny / allow: 554 */
    "max_connections",        /* [limits] max_connections: 421 */
    "max_connections_per_ip", /* [limits] max_connections_per_ip: 421 */
    "max_connections_per_net", /* [limits] per-network limit: 421 */
    "ratelimit",              /* [ratelimit] connection rate: 421 */
    "dnsbl",                  /* [dnsbl] listed: 554 */
    "bad_proxy_header",       /* PROXY header from a trusted proxy that does not parse */
    "untrusted_proxy_header", /* PROXY header from a client that is not a trusted proxy */
    NULL,
};

/* smtp_rejected_reasons - messages refused at end of DATA (smtp-session-data.c,
 * smtp-session-scan.c, smtp-session-attach.c, smtp-server.c). */
const char *const smtp_rejected_reasons[] = {
    "size",              /* message_size_limit: 552 */
    "header_size",       /* max_header_size: 552 */
    "bare_cr_lf",        /* bare CR or LF (SMTP smuggling): 550 */
    "nul",               /* NUL byte: 550 */
    "long_line",         /* max_line_length: 550 */
    "policy",            /* DMARC / policy reject: 550 */
    "policy_tempfail",   /* policy temperror: 451 */
    "policy_quarantine", /* QUARANTINE verdict with [spam] quarantine_action = reject */
    "greylisted",        /* [greylist]: 451 */
    "attachment",        /* [attachments] blocked, action = reject: 550 */
    "attachment_unparsable", /* MIME the check cannot read, unparsable_action = reject */
    "attachment_oversize", /* over [attachments] max_size, oversize_action = reject */
    "virus",             /* [clamav] infected, action = reject: 550 */
    "spam",              /* [rspamd] verdict reject: 550 */
    "spam_tempfail",     /* [rspamd] soft reject: 451 */
    "scan_tempfail",     /* a scanner failed, on_failure = tempfail: 451 */
    "content_busy",      /* content workers' queue full: 451 */
    "queue_write",       /* spool write failed: 451 / 452 */
    "queue_commit",      /* queue commit failed: 451 / 452 */
    NULL,
};
