/*
 * config.h - mxgate's configuration: one INI file edited by hand, parsed with
 * libinih, validated against declarative directive tables (one per section
 * kind) that also generate `check-config` messages, the config dump and
 * docs/config-reference.md.
 *
 * Ownership: config_load() returns a struct config the caller frees with
 * config_free(); everything reachable from it is owned by it.  A loaded
 * config is immutable: reload builds a new one and swaps the pointer.
 *
 * Diagnostics: every problem is reported as "FILE:LINE: message" through the
 * diagnostics list (never printed directly), so `check-config`, `run` and
 * reload all show the same text.
 */
#ifndef MX_CONFIG_H
#define MX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

/* ------------------------------------------------------------ listeners */

struct config_listen {
	char *host;         /* numeric address, no brackets ("127.0.0.1", "::1", "0.0.0.0", "::") */
	int port;
	struct util_addr addr;  /* resolved socket address */
	int line;           /* config line, for diagnostics */
};

/* ------------------------------------------------------------ downstream routes */

enum config_route_type { CONFIG_ROUTE_SMTP = 0, CONFIG_ROUTE_MX, CONFIG_ROUTE_DIRECTORY };
/* tls = verify | encrypt | none | may.  may is opportunistic TLS (RFC 7435):
 * STARTTLS when offered, certificate unchecked, plaintext otherwise - and a
 * host whose handshake fails is tried again in plaintext. */
enum config_tls_policy {
	CONFIG_TLS_VERIFY = 0,
	CONFIG_TLS_ENCRYPT,
	CONFIG_TLS_NONE,
	CONFIG_TLS_MAY,
	CONFIG_TLS_DANE, /* type mx: DANE (RFC 7672) where the MX and TLSA answers are
	                  * DNSSEC-validated, else may */
};
/* role = inbound (mail for our domains, routed by recipient domain) or
 * outbound (what mxgate itself originates - DSNs - to any domain). */
enum config_route_role { CONFIG_ROLE_INBOUND = 0, CONFIG_ROLE_OUTBOUND };

struct config_host {
	char *host;         /* name or numeric address */
	int port;           /* default 25 */
};

/* [route NAME] section.  An inbound route without `domains` is the default
 * route; exactly one default route must exist.  Exactly one route has role
 * outbound: written in the file, or an implicit [route outbound] (type mx,
 * tls dane) added by config_load when the file has none. */
struct config_route {
	char *name;                       /* section argument */
	enum config_route_role role;      /* role = inbound | outbound */
	bool implicit;                    /* added by config_load, not in the file */
	enum config_route_type type;      /* type = smtp | mx | directory */
	struct util_strlist domains;      /* domains = recipient domains routed here */
	struct config_host *hosts;        /* hosts = h1:25, h2:25 (smtp: tried in order) */
	size_t nhosts;
	enum config_tls_policy tls;       /* tls = verify | encrypt | none | may | dane */
	char *ca_file;                    /* tls_ca_file: NULL = system CA store */
	char *auth_user;                  /* auth_user / auth_password ... */
	char *auth_password;
	char *auth_file;                  /* auth_file: "user:password" on one line, mode 0600;
	                                   * read at load time into auth_user / auth_password */
	int max_connections;              /* concurrency limit for this route */
	int max_deliveries;               /* messages in delivery at once (per domain for mx);
	                                   * 0 = max_connections */
	int dead_after;                   /* consecutive failed connections: destination down */
	int dead_time;                    /* seconds a down destination is not tried */
	int mx_port;                      /* type = mx: port on the MX hosts (25) */
	int mta_sts_port;                 /* tls = dane: HTTPS port of mta-sts.DOMAIN (443) */
	char *mta_sts_ca_file;            /* tls = dane: CAs for MTA-STS; NULL = system */
	int msgs_per_connection;          /* messages carried by one connection */
	int connect_timeout;              /* seconds */
	int greeting_timeout;             /* seconds (RFC 5321 4.5.3.2: 5 min) */
	int command_timeout;              /* seconds */
	int data_timeout;                 /* seconds */
	char *directory;                  /* type = directory: folder for .eml files */
	bool verify_recipients;           /* RCPT-time callout to hosts ([verify]) */
	int line;                         /* line of the [route] header */
};

/* ------------------------------------------------------------ DNSBL / DNSWL sites */

#define CONFIG_DNSBL_ZONE_MAX 253

/* One [dnsbl] sites entry: zone[=filter][*weight] (config-dnsbl.c). */
struct config_dnsbl_site {
	char zone[CONFIG_DNSBL_ZONE_MAX + 1]; /* lower-case */
	bool filtered;                        /* a return-code filter was given */
	uint8_t octets[4][32];                /* filter: allowed values per octet (bitmaps) */
	int weight;                           /* non-zero; negative = allowlist */
};

/* config_dnsbl_parse - parse "zone[=a.b.c.d][*weight]" where each filter
 * octet is N or [N;N..M;...].  0, or -1 with a message in err. */
int config_dnsbl_parse(const char *spec, struct config_dnsbl_site *out, char *err, size_t errlen);
/* config_dnsbl_is_listing - an A answer in 127.0.0.0/8 and not in
 * 127.255.255.0/24 (a DNSBL's "query refused/blocked" codes: no data). */
bool config_dnsbl_is_listing(const uint8_t a[4]);
/* config_dnsbl_match - the answer is a listing and passes the site's filter. */
bool config_dnsbl_match(const struct config_dnsbl_site *site, const uint8_t a[4]);

enum config_dnsbl_decide { CONFIG_DNSBL_CONNECT = 0, CONFIG_DNSBL_RCPT };
enum config_pregreet_mode { CONFIG_PREGREET_CONTINUATION = 0, CONFIG_PREGREET_PAUSE };

/* ------------------------------------------------------------ the whole config */

/* What RCPT answers when the downstream cannot be asked. */
enum config_verify_unavailable { CONFIG_VERIFY_DEFER = 0, CONFIG_VERIFY_ACCEPT };

/* What a scanner that is down, slow or failing means for the message
 * (issue 13): 451 4.7.1, or accept with a header saying it was not scanned. */
enum config_scan_failure { CONFIG_SCAN_TEMPFAIL = 0, CONFIG_SCAN_ACCEPT };
/* [warning] senders: who gets the external-sender warning (issue 13). */
enum config_warning_senders {
	CONFIG_WARN_EXTERNAL = 0,    /* From: domain not ours */
	CONFIG_WARN_FAILING,         /* authentication failing (DMARC fail, or SPF fail without DMARC) */
	CONFIG_WARN_EITHER,          /* external or failing */
};
/* What a virus found means: 550 5.7.1, deliver with the verdict header,
 * quarantine, or tag (verdict header and [rspamd] subject_tag). */
enum config_scan_action {
	CONFIG_SCAN_REJECT = 0,
	CONFIG_SCAN_DELIVER,
	CONFIG_SCAN_QUARANTINE,
	CONFIG_SCAN_TAG
};
/* What a blocked attachment (or a message whose MIME cannot be parsed)
 * means (issue 13): 550 5.7.1, quarantine, tag (header and [rspamd]
 * subject_tag) or deliver (header only). */
enum config_attach_action {
	CONFIG_ATTACH_REJECT = 0,
	CONFIG_ATTACH_QUARANTINE,
	CONFIG_ATTACH_TAG,
	CONFIG_ATTACH_DELIVER
};

/* [admin] tls: HTTPS with the [tls] certificate, or plain HTTP (issue 15). */
enum config_admin_tls {
	CONFIG_ADMIN_TLS_AUTO = 0, /* HTTPS unless every listen address is loopback */
	CONFIG_ADMIN_TLS_YES,
	CONFIG_ADMIN_TLS_NO
};

/* What an rspamd verdict does to the message (issue 13). */
enum config_spam_action {
	CONFIG_SPAM_REJECT = 0,
	CONFIG_SPAM_TAG,
	CONFIG_SPAM_DELIVER,
	CONFIG_SPAM_QUARANTINE
};

/* What one of mxgate's own verdicts (DMARC quarantine, score at or above
 * [spam] threshold, a DNSBL listing at [dnsbl] tag_threshold) does: tag
 * (X-Spam-Flag: YES and [rspamd] subject_tag, delivered), quarantine (held
 * in the queue), reject (550 5.7.1) or deliver (headers, not flagged). */
enum config_policy_quarantine {
	CONFIG_PQ_TAG = 0,
	CONFIG_PQ_QUARANTINE,
	CONFIG_PQ_REJECT,
	CONFIG_PQ_DELIVER
};

enum config_dmarc_enforcement { CONFIG_DMARC_REJECT = 0, CONFIG_DMARC_QUARANTINE, CONFIG_DMARC_MONITOR };
/* What a DMARC temperror does (enforcement on): 451, or stamp and accept. */
enum config_dmarc_temperror { CONFIG_DMARC_TEMPERROR_TEMPFAIL = 0, CONFIG_DMARC_TEMPERROR_ACCEPT };

struct config {
	char *path;                       /* file it came from, or "(embedded default)" */

	/* [server] */
	char *hostname;                   /* banner, Received, HELO to downstream */
	struct config_listen *listen;     /* listen = 127.0.0.1:25, [::]:25 */
	size_t nlisten;
	char *banner_text;                /* text after "220 hostname ESMTP" */
	char *user;                       /* drop privileges to this user (issue: hardening) */
	char *group;
	bool allow_root;                  /* keep running as root when no user is set */
	char *control_socket;             /* unix socket for `mxgate queue|status|reload` */
	char *control_socket_group;       /* group of the socket (admins); NULL = the user's */
	int control_socket_mode;          /* 0 = 0600, 1 = 0660 (default), 2 = 0666 */
	int content_workers;              /* [server] worker threads for content jobs */
	int content_queue;                /* [server] content jobs waiting, at most */

	/* [limits] */
	int64_t message_size_limit;       /* bytes; SIZE= and data */
	int max_recipients;               /* per message */
	int max_connections;              /* total */
	int max_connections_per_ip;
	int max_errors;                   /* per session, then 421 */
	int max_header_size;              /* bytes of the header block kept in memory */
	int64_t max_line_length;          /* octets of one DATA line before CRLF (streamed) */
	int command_timeout;              /* seconds (RFC 5321 4.5.3.2: 5 min) */
	int data_timeout;                 /* seconds between data chunks (3 min) */
	int data_total_timeout;           /* seconds for the whole DATA phase */
	int proxy_timeout;                /* seconds to wait for a PROXY header */
	int junk_command_limit;           /* NOOP/RSET/VRFY/HELP per session, then 421 */
	int max_session_time;             /* seconds a session may last (after the current
	                                     transaction: 421) */
	int max_transactions;             /* MAIL commands per session, then 421 */
	int stress_threshold;             /* percent of max_connections; above it stress mode
	                                     (0 = never) */
	int stress_command_timeout;       /* command_timeout under stress (seconds) */
	int stress_junk_command_limit;    /* junk_command_limit under stress */

	/* [tls] */
	char *tls_cert_file;              /* NULL: no STARTTLS offered */
	char *tls_key_file;
	char *tls_ciphers;                /* TLS <= 1.2 cipher list */
	char *tls_ciphersuites;           /* TLS 1.3 suites */
	char *tls_min_version;            /* "TLSv1.2" or "TLSv1.3" */

	/* [access] */
	struct util_cidr_list allow;      /* empty = everyone not denied */
	struct util_cidr_list deny;       /* deny wins */
	struct util_cidr_list trusted_proxies; /* must send PROXY v1/v2 */

	/* [domains] */
	struct util_strlist accepted_domains;    /* lower-case */
	struct util_strlist accepted_recipients; /* optional exact list, lower-case; empty = any at accepted domains */
	char *recipients_file;                   /* one address per line, merged into accepted_recipients */
	char *primary_domain;                    /* lower-case, one of accepted_domains (default: the first);
	                                            <postmaster> goes to postmaster@primary_domain */
	struct util_strlist listed_domains;      /* computed: domains with at least one listed
	                                            recipient (only those are closed lists) */

	/* [verify] - recipient verification against the downstream (SMTP callout) */
	int64_t verify_positive_ttl;      /* seconds a "user exists" answer is cached */
	int64_t verify_negative_ttl;      /* seconds a "user unknown" (5xx) answer is cached */
	int verify_unavailable;           /* enum config_verify_unavailable */
	int verify_timeout;               /* seconds for a whole probe */
	int verify_max_probes;            /* probes in flight */
	int verify_cache_size;            /* cached addresses */
	char *verify_cache_file;          /* NULL = <queue dir>/verify.cache; "none" = memory only */

	/* [queue] */
	char *queue_dir;
	bool queue_fsync;                 /* off only for benchmarks */
	int64_t max_queue_lifetime;       /* seconds, then bounce */
	int64_t delay_warning_time;       /* seconds; 0 = no delay DSN */
	int64_t *retry_schedule;          /* seconds; last one repeats */
	size_t nretry;
	int max_deliveries;               /* concurrent deliveries in total */
	char *bounce_sender;              /* From: of DSNs, default MAILER-DAEMON@hostname */
	int64_t bounce_max_headers;       /* bytes of the original header block a DSN returns */
	int64_t quarantine_retention;     /* seconds a quarantined message is kept (issue 13) */

	/* [log] */
	enum util_log_level log_level;
	enum util_log_format log_format;
	char *log_file;                   /* NULL = stderr */

	/* [dns] */
	struct util_strlist dns_forwarders;   /* "127.0.0.1@5353"; empty = full recursion */
	char *dns_trust_anchor_file;          /* auto | none | PATH (DNSSEC validation) */
	char *dns_root_anchor_file;           /* where auto finds the root anchor */
	int dns_timeout;                      /* seconds per query */
	int dns_cache_size;                   /* entries */
	int dns_slow_domain_limit;            /* queries in flight to a slow registered domain; 0 = no limit */

	/* [auth] - SPF/DKIM/DMARC at ingress */
	char *authserv_id;                /* default: hostname */
	bool spf_enabled;
	bool spf_reject_fail;             /* 550 at MAIL/RCPT on SPF fail */
	bool spf_temperror_defer;         /* 451 on SPF temperror */
	bool dkim_enabled;
	int dkim_max_signatures;
	int dkim_min_rsa_bits;            /* RFC 8301: >= 1024 */
	bool dkim_strict;                 /* l= remainder, extra single-use fields: policy */
	bool dmarc_enabled;
	enum config_dmarc_enforcement dmarc_enforcement;
	enum config_dmarc_temperror dmarc_temperror;
	struct util_strlist dmarc_exempt_domains;   /* sender domains: stamp, never enforce */
	struct util_cidr_list dmarc_exempt_clients; /* client CIDRs: stamp, never enforce */
	char *psl_file;                   /* Public Suffix List */
	int policy_workers;               /* worker threads for policy evaluation */

	/* [arc] - ARC (RFC 8617): verify incoming chains, seal what we relay */
	bool arc_enabled;                 /* verify chains, arc= in A-R */
	bool arc_seal;                    /* add our ARC set to every relayed message */
	char *arc_selector;               /* s= of our seal */
	char *arc_domain;                 /* d= of our seal */
	char *arc_key_file;               /* PEM private key */
	int arc_algorithm;                /* 0 rsa-sha256, 1 ed25519-sha256 */
	struct util_strlist arc_trusted_sealers; /* d= whose dmarc=pass we honour */

	/* [spam] */
	double spam_threshold;
	double weight_spf_fail, weight_spf_softfail, weight_dkim_fail;
	double weight_dmarc_fail, weight_dmarc_quarantine, weight_dnsbl, weight_no_rdns;
	struct util_strlist dnsbl_zones;
	char *spam_flag_header;           /* "X-Spam-Flag" */
	char *spam_score_header;          /* "X-Spam-Score" */
	char *spam_status_header;         /* "X-Spam-Status" */
	int spam_quarantine_action;       /* enum config_policy_quarantine (issue 13): the
	                                     default of the two below */
	int spam_dmarc_action;            /* enum config_policy_quarantine: DMARC quarantine */
	int spam_score_action;            /* enum config_policy_quarantine: score >= threshold
	                                     (without [rspamd]; with it, an input only) */

	/* [clamav] - virus scanning through clamd (issue 13, scan/scan-clamd.c) */
	char *clamav_socket;              /* NULL = off; "/path", "unix:/path" or "host:port" */
	int clamav_timeout;               /* seconds for one scan, queueing included */
	int clamav_on_failure;            /* enum config_scan_failure */
	int clamav_virus_action;          /* enum config_scan_action */
	int64_t clamav_max_size;          /* bytes; larger messages are not scanned (header) */
	int clamav_max_connections;       /* pooled clamd connections */

	/* [rspamd] - spam filtering through rspamd's /checkv2 (issue 13, scan/scan-rspamd.c) */
	char *rspamd_address;             /* NULL = off; numeric "host:port" */
	int rspamd_timeout;               /* seconds for one check, queueing included */
	int rspamd_on_failure;            /* enum config_scan_failure */
	int rspamd_reject_action;         /* enum config_spam_action: what rspamd's "reject" does */
	int rspamd_tag_action;            /* enum config_spam_action: "add header"/"rewrite subject" */
	int64_t rspamd_max_size;          /* bytes; larger messages are not checked (header) */
	int rspamd_max_connections;       /* pooled HTTP connections */
	bool rspamd_skip_auth;            /* rspamd does not redo SPF/DKIM/DMARC (group policies off) */
	char *rspamd_subject_tag;         /* prefix put on the Subject of tagged messages; "none" = none */

	/* [attachments] - attachment policy (issue 13, content/content-attach.c) */
	bool attach_enabled;
	struct util_strlist attach_extensions; /* blocked extensions, no dot */
	struct util_strlist attach_types;      /* "pe", "elf", "script" */
	bool attach_zip;                       /* look inside zip archives, one level */
	int attach_max_zip_entries;
	int attach_action;                     /* enum config_attach_action */
	int attach_unparsable_action;          /* enum config_attach_action: MIME not parsable */
	int attach_oversize_action;            /* enum config_attach_action: over attach_max_size
	                                          (default: attach_unparsable_action) */
	int64_t attach_max_size;               /* bytes; larger messages are not judged
	                                          (default: message_size_limit) */

	/* [warning] - external-sender warning (issue 13, content/content-banner.c) */
	bool warning_enabled;
	int warning_senders;              /* enum config_warning_senders */
	struct util_strlist warning_internal_domains; /* ours besides accepted_domains */
	char *warning_subject_tag;        /* "none" = no subject tag */
	char *warning_banner_text;        /* UTF-8 line for text/plain; "none" = no banner */
	char *warning_banner_html;        /* HTML fragment for text/html; "none" = no banner */
	int64_t warning_max_size;         /* bytes; larger messages get the subject tag only */

	/* [dnsbl] - DNSBL/DNSWL decisions at connect or RCPT (issue 17) */
	struct util_strlist dnsbl_site_specs; /* sites = as written */
	struct config_dnsbl_site *dnsbl_sites; /* computed from the specs */
	size_t ndnsbl_sites;
	int dnsbl_reject_threshold;       /* score at or above: 554; 0 = never */
	int dnsbl_tag_threshold;          /* score at or above: listing zones enter the spam score;
	                                     0 = never */
	int dnsbl_decide;                 /* enum config_dnsbl_decide */
	int dnsbl_tag_action;             /* enum config_policy_quarantine: a listing at
	                                     tag_threshold (deliver = the score alone decides) */
	int64_t dnsbl_cache_ttl;          /* seconds an answer is reused */

	/* [pregreet] - postscreen-style tests before the banner (issue 17) */
	bool pregreet_enabled;            /* greeting delay, early talkers, bare pipelining */
	int pregreet_delay;               /* seconds the final 220 is held back */
	int pregreet_mode;                /* enum config_pregreet_mode */
	bool pregreet_bare_pipelining;    /* refuse commands pipelined before EHLO's answer */
	bool pregreet_non_smtp;           /* refuse HTTP/POP/proxy commands (always, not only
	                                     when enabled) */
	int64_t pregreet_pass_ttl;        /* seconds a passed client skips the tests */
	int pregreet_pass_max;            /* [pregreet] pass_cache_size */
	char *pregreet_pass_file;         /* pass cache kept across restarts; NULL = memory */

	/* [ratelimit] - per client, network, sender and recipient domain (issue 17);
	 * 0 = no limit.  Rates count within `rl_window` from the first event. */
	int64_t rl_window;                /* seconds */
	int rl_max_keys;                  /* [ratelimit] max_keys (in-process counters) */
	int rl_net_prefix4, rl_net_prefix6; /* what a client's "network" is: /24, /64 */
	int rl_conn_per_ip, rl_conn_per_net;   /* connections per window */
	int rl_msgs_per_ip, rl_msgs_per_net;   /* MAIL commands per window */
	int rl_msgs_per_sender;                /* messages per envelope sender (at RCPT) */
	int rl_msgs_per_domain;                /* messages per recipient domain (first RCPT of
	                                          the domain in a transaction) */
	int rl_rcpts_per_ip, rl_rcpts_per_net; /* recipients per window */
	int rl_rcpts_per_sender;               /* recipients per envelope sender */
	int rl_rcpts_per_domain;               /* recipients per recipient domain */
	int rl_max_connections_per_net;        /* concurrent connections from one network */
	struct util_cidr_list rl_exempt;       /* clients never rate limited */

	/* [greylist] - triplets (client network, sender, recipient), off by default */
	bool greylist_enabled;
	int64_t greylist_delay;           /* seconds before a retry is accepted */
	int greylist_max_entries;         /* [greylist] max_entries (in-process) */
	int64_t greylist_retry_window;    /* seconds a first attempt is remembered */
	int64_t greylist_allow_ttl;       /* seconds a network that retried correctly passes */
	struct util_strlist greylist_spf_domains; /* SPF pass for these sender domains: skip */

	/* [state] - shared state for a fleet (issue 17): rate-limit counters in
	 * Redis/Valkey; NULL redis = in-process (one node) */
	char *state_redis;                /* redis://HOST:PORT/DB or unix:/PATH?db=N */
	char *state_password;             /* AUTH; NULL = none */
	int state_timeout_ms;             /* deadline per command; then fail open */
	int state_connections;            /* connections in the pool */
	char *state_key_prefix;           /* prepended to every key */

	/* [metrics] - Prometheus endpoint (issue 7) */
	struct config_listen *metrics_listen; /* listen = 127.0.0.1:9125; none = off */
	size_t nmetrics_listen;
	struct config_listen *admin_listen; /* report dashboard (issue 15); none = off */
	size_t nadmin_listen;
	char *admin_token;                  /* bearer token; NULL = dashboard off */
	int admin_tls;                      /* enum config_admin_tls */
	bool admin_allow_plain_http;        /* tls = no allowed beyond loopback */
	int metrics_request_timeout;      /* seconds for a whole request (from its first byte) */
	int metrics_max_connections;      /* open HTTP connections; more are closed at once */

	/* [mta_sts] - `mxgate dns-records` and the MTA-STS policy (issue 7) */
	int mta_sts_mode;                 /* 0 testing, 1 enforce, 2 none (RFC 8461 5) */
	int64_t mta_sts_max_age;          /* seconds */
	struct util_strlist mta_sts_mx;   /* gateway MX names; empty = hostname */
	struct config_listen *mta_sts_listen; /* HTTPS listeners serving the policy */
	size_t nmta_sts_listen;
	char *tlsrpt_rua;                 /* TLS-RPT rua; default mailto:tlsrpt@DOMAIN */
	char *dmarc_rua;                  /* suggested DMARC rua; default mailto:dmarc-reports@DOMAIN */

	/* [reports] - the DMARC report store (issue 14, RFC 9990) */
	bool reports_record;              /* record every DMARC evaluation */
	bool reports_ingest;              /* parse and store reports mailed to us (issue 15) */
	struct util_strlist reports_ingest_addresses; /* lower-case; empty = the rua defaults */
	char *reports_database;           /* "sqlite" (QUEUE_DIR/reports.db), sqlite:PATH or a
	                                     postgresql:// URI (secret: may hold a password) */
	int reports_queue_size;           /* rows waiting for the writer thread */
	int64_t reports_period;           /* seconds; periods are aligned to the epoch (UTC midnight) */
	int64_t reports_retention;        /* seconds evaluations are kept after they were reported */
	int64_t reports_inbound_retention; /* seconds received reports are kept */
	char *reports_org_name;           /* report_metadata org_name; NULL = hostname */
	char *reports_email;              /* report_metadata email; NULL = postmaster@hostname */
	char *reports_dkim_key_file;      /* report signing key; NULL = QUEUE_DIR/reports-dkim.pem */
	char *reports_dkim_selector;      /* s= of report signatures */
	char *reports_dkim_domain;        /* d= of report signatures; NULL = domain of email */
	bool reports_failure;             /* RFC 9991 failure reports (restart applies it) */
	int reports_failure_rate;         /* reports per destination domain per hour */
	int reports_failure_max_dests;    /* ruf destinations reported to per message */
	int reports_failure_redact;       /* 0 recipients, 1 addresses (every local part) */

	/* [route NAME] sections */
	struct config_route *routes;
	size_t nroutes;
};

/* One diagnostic: "FILE:LINE: message" (line 0 = whole file). */
struct config_diag {
	char *file;
	int line;
	bool warning;                     /* warnings do not fail check-config */
	char *msg;
};
struct config_diags {
	struct config_diag *v;
	size_t n;
};
void config_diags_free(struct config_diags *d);
/* config_diags_print - one "FILE:LINE: [warning: ]message" line each. */
void config_diags_print(const struct config_diags *d, FILE *out);
size_t config_diags_errors(const struct config_diags *d);

/* The embedded default (used when no -c is given and /etc/mxgate/mxgate.conf
 * does not exist): listens on
 * 127.0.0.1:2525, accepts mail for example.test, queues under ./mxgate-data
 * and delivers into ./mxgate-data/mailbox through a directory route; its
 * bounces go to ./mxgate-data/bounces (an explicit outbound directory route). */
extern const char config_default_text[];

/* config_load - parse and validate path (or the embedded default when path
 * is NULL).  Returns a config when there are no errors (warnings allowed),
 * NULL otherwise; every problem is appended to diags.  Not thread-safe:
 * libinih's options are process globals (call from the main thread, at
 * start-up and on reload). */
struct config *config_load(const char *path, struct config_diags *diags);
/* config_load_string - same, from memory; name is used as FILE in messages. */
struct config *config_load_string(const char *text, const char *name, struct config_diags *diags);
/* CONFIG_LOAD_HOST - also check this machine, as `run` will meet it: the
 * user and group exist, the log file is writable, the certificate matches
 * its key (errors), and the names it covers and its expiry (warnings).
 * `check-config` and `run` use it; a reload does not (the daemon no longer
 * runs as root, and user / log file are not reloadable). */
#define CONFIG_LOAD_HOST 0x1u
/* config_load_flags / config_load_string_flags - config_load() and
 * config_load_string() with CONFIG_LOAD_* flags. */
struct config *config_load_flags(const char *path, unsigned flags, struct config_diags *diags);
struct config *config_load_string_flags(const char *text, const char *name, unsigned flags,
                                        struct config_diags *diags);
void config_free(struct config *cfg);
/* config_peek_control_socket - the control socket path of the file at path
 * (the embedded default when NULL), read without validating the rest of
 * the file: [server] control_socket, else <[queue] directory>/control.sock.
 * For the CLI when the file has errors.  0, or -1 when unreadable / too
 * long for out. */
int config_peek_control_socket(const char *path, char *out, size_t outlen);
/* config_peek_control_socket_string - the same over text in memory. */
int config_peek_control_socket_string(const char *text, char *out, size_t outlen);
/* config_peek_log_file - [log] file of the file at path (the embedded
 * default when NULL), read the same way: out is "" when the file sets none
 * (logs go to stderr).  For `mxgate log` when the file has errors.  0, or
 * -1 when unreadable / too long for out. */
int config_peek_log_file(const char *path, char *out, size_t outlen);

/* config_route_for - inbound route for a recipient domain (case-insensitive),
 * falling back to the default route.  Borrowed pointer into cfg. */
const struct config_route *config_route_for(const struct config *cfg, const char *domain);
/* config_rcpt_check - relay control and recipient lists for addr:
 * RELAY (domain not accepted), UNKNOWN (the domain has a recipient list and
 * addr is not on it), LISTED (on the list), or OPEN (accepted domain without
 * a list: a route with verify_recipients may still ask the downstream).
 * Lists are per domain: listing addresses at one domain never closes
 * another accepted domain. */
enum config_rcpt { CONFIG_RCPT_RELAY = 0, CONFIG_RCPT_UNKNOWN, CONFIG_RCPT_LISTED, CONFIG_RCPT_OPEN };
enum config_rcpt config_rcpt_check(const struct config *cfg, const char *addr);
/* config_route_outbound - the route of what mxgate originates (DSNs); never
 * NULL in a loaded config.  Borrowed pointer into cfg. */
const struct config_route *config_route_outbound(const struct config *cfg);
/* config_admin_https - does the dashboard ([admin] listen) speak HTTPS?
 * tls = yes, or auto with a listen address that is not loopback. */
bool config_admin_https(const struct config *cfg);
/* config_is_accepted_rcpt - config_rcpt_check() is LISTED or OPEN. */
bool config_is_accepted_rcpt(const struct config *cfg, const char *addr);

/* config_dump - the effective config (every directive, defaults included). */
void config_dump(const struct config *cfg, FILE *out);
/* config_reference_markdown - docs/config-reference.md, from the tables. */
void config_reference_markdown(FILE *out);
/* config_reference_man - mxgate.conf(5) in roff, from the same tables. */
void config_reference_man(FILE *out, const char *version);
/* config_reload_check - for a SIGHUP reload: one warning per directive that
 * a reload cannot apply (reloadable = no in the reference: listen, user,
 * queue directory, dns, ...) whose value differs between old and cur.
 * Returns the number of such warnings. */
size_t config_reload_check(const struct config *old, const struct config *cur,
			   struct config_diags *diags);

#endif
