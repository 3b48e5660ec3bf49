/*
 * smtp-reasons.h - the reason label values of the SMTP side's refusal
 * counters: mxgate_connections_refused_total (connection refused before or
 * instead of the banner) and mxgate_messages_rejected_total (message refused
 * at end of DATA, 5xx or 4xx).  gw_metrics_define() creates every listed
 * series at 0 so that an alert's increase() sees it before the first event.
 *
 * Every reason a call site passes (util_metrics_inc on these families,
 * smtp_data_refuse) must be listed here: test_ops_metrics.py scans the
 * sources for them and fails on one that is missing, and checks /metrics
 * has each at start-up.
 */
#ifndef MX_SMTP_REASONS_H
#define MX_SMTP_REASONS_H

/* NULL-terminated; static storage. */
extern const char *const smtp_refused_reasons[];
extern const char *const smtp_rejected_reasons[];

#endif
