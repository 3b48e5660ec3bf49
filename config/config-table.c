/*
 * config-table.c - the directive tables: one declarative table per section
 * kind of mxgate.conf, plus the validators they name and the embedded
 * default configuration.  These tables are the single source of truth: the
 * parser, the defaults, check-config, config_dump() and
 * docs/config-reference.md are all driven by them, and a unit test fails when
 * an entry has no doc string or the committed reference is stale.
 *
 * Ownership: everything here is static and constant.
 *
 * Diagnostics: validators return a message (static or written into the
 * caller's buffer) that the parser prefixes with "FILE:LINE: bad value for
 * 'name': "; they never print.
 */
#include "config-internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------ validators */

/* v_fqdn - a fully-qualified host name: banner, Received:, HELO. */
static const char *v_fqdn(const char *s, char *buf, size_t buflen)
{
	return config_check_fqdn(s, buf, buflen);
}

/* v_domain - a domain name (authserv-id, RFC 8601 section 2.5). */
static const char *v_domain(const char *s, char *buf, size_t buflen)
{
	return config_check_domain(s, buf, buflen);
}

/* v_address - local@domain (bounce_sender). */
static const char *v_address(const char *s, char *buf, size_t buflen)
{
	return config_check_address(s, buf, buflen);
}

/* v_selector - a DKIM selector: dot-separated labels of letters, digits,
 * '-' and '_' (RFC 6376 3.1). */
static const char *v_selector(const char *s, char *buf, size_t buflen)
{
	size_t i;

	(void)buf;
	(void)buflen;
	if (s[0] == '\0' || s[0] == '.' || strlen(s) > 63)
		return "must be 1-63 characters of letters, digits, '-', '_' and '.'";
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || (c == '.' && s[i + 1] != '.' && s[i + 1] != '\0')))
			return "must be 1-63 characters of letters, digits, '-', '_' and '.'";
	}
	return NULL;
}

/* v_printable - printable ASCII only: it goes into an SMTP reply line. */
static const char *v_printable(const char *s, char *buf, size_t buflen)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c > 0x7e) {
			snprintf(buf, buflen, "character 0x%02x is not printable ASCII", c);
			return buf;
		}
	}
	if (i > 200)
		return "longer than 200 characters";
	return NULL;
}

/* v_account - a user or group name as useradd(8) accepts it. */
static const char *v_account(const char *s, char *buf, size_t buflen)
{
	size_t i;

	if (s[0] == '-')
		return "must not start with '-'";
	if (strlen(s) > 32)
		return "longer than 32 characters";
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.' || (c == '$' && s[i + 1] == '\0'))) {
			snprintf(buf, buflen, "character '%c' not allowed in an account name", c);
			return buf;
		}
	}
	return NULL;
}

/* v_header - an RFC 5322 section 3.6.8 field name (printable, no colon). */
static const char *v_header(const char *s, char *buf, size_t buflen)
{
	size_t i;

	if (strlen(s) > 76)
		return "longer than 76 characters";
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 33 || c > 126 || c == ':') {
			snprintf(buf, buflen, "character '%c' not allowed in a header field name",
			         c >= 33 && c <= 126 ? c : '?');
			return buf;
		}
	}
	return NULL;
}

/* v_forwarder - "192.0.2.53" or "127.0.0.1@5353" (unbound's forward syntax). */
static const char *v_forwarder(const char *s, char *buf, size_t buflen)
{
	struct util_addr a;
	const char *at = strchr(s, '@');
	char host[64];
	long port = 53;

	if (at != NULL) {
		char *end;

		port = strtol(at + 1, &end, 10);
		if (at[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
			snprintf(buf, buflen, "bad port in \"%s\" (1..65535)", s);
			return buf;
		}
	}
	snprintf(host, sizeof(host), "%.*s", (int)(at != NULL ? at - s : (long)strlen(s)), s);
	if (util_addr_parse_numeric(host, (int)port, &a) == -1) {
		snprintf(buf, buflen, "\"%s\" is not a numeric IPv4/IPv6 address", host);
		return buf;
	}
	return NULL;
}

/* v_dnsbl_site - zone[=filter][*weight] (config-dnsbl.c). */
static const char *v_dnsbl_site(const char *s, char *buf, size_t buflen)
{
	struct config_dnsbl_site site;
	return config_dnsbl_parse(s, &site, buf, buflen) < 0 ? buf : NULL;
}

/* v_ciphers - an OpenSSL cipher string: printable, no spaces needed. */
static const char *v_ciphers(const char *s, char *buf, size_t buflen)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c > 0x7e) {
			snprintf(buf, buflen, "unexpected character 0x%02x (OpenSSL lists use ':')",
			         c);
			return buf;
		}
	}
	return NULL;
}

/* ------------------------------------------------------------ enum value names */

static const char *const e_tls_version[] = {"TLSv1.2", "TLSv1.3", NULL};
static const char *const e_log_level[] = {"err", "warn", "info", "debug", NULL};
static const char *const e_log_format[] = {"text", "json", NULL};
static const char *const e_dmarc[] = {"reject", "quarantine", "monitor", NULL};
static const char *const e_dmarc_temperror[] = {"tempfail", "accept", NULL};
static const char *const e_route_type[] = {"smtp", "mx", "directory", NULL};
static const char *const e_route_tls[] = {"verify", "encrypt", "none", "may", "dane", NULL};
static const char *const e_route_role[] = {"inbound", "outbound", NULL};
static const char *const e_verify_unavailable[] = {"defer", "accept", NULL};
static const char *const e_socket_mode[] = {"0600", "0660", "0666", NULL};
static const char *const e_dnsbl_decide[] = {"connect", "rcpt", NULL};
static const char *const e_pregreet_mode[] = {"continuation", "pause", NULL};

/* ------------------------------------------------------------ tables */

#define R      CONFIG_F_RELOAD
#define S      CONFIG_F_SECRET
#define KB     (INT64_C(1024))
#define MB     (INT64_C(1024) * 1024)
#define GB     (INT64_C(1024) * 1024 * 1024)
#define MINUTE 60
#define HOUR   3600
#define DAY    86400

/* G - a struct config field; GN - a pointer field with its count field. */
#define G(f) offsetof(struct config, f), 0, sizeof(((struct config *)0)->f)
#define GN(f, n)                                                                                   \
	offsetof(struct config, f), offsetof(struct config, n), sizeof(((struct config *)0)->f)
#define RT(f) offsetof(struct config_route, f), 0, sizeof(((struct config_route *)0)->f)
#define RTN(f, n)                                                                                  \
	offsetof(struct config_route, f), offsetof(struct config_route, n),                        \
	    sizeof(((struct config_route *)0)->f)

static const struct config_directive d_server[] = {
    {"hostname", CONFIG_T_STRING, G(hostname), NULL, "gethostname()", 0, 0, NULL, v_fqdn, R,
     "Fully-qualified name used in the banner, Received: and HELO towards downstream"},
    {"listen", CONFIG_T_LISTEN, GN(listen, nlisten), NULL, NULL, 0, 0, NULL, NULL, R,
     "Numeric addresses to accept SMTP on: 0.0.0.0:25, [::]:25 (required; a reload adds and "
     "removes listeners - new ports below 1024 then need CAP_NET_BIND_SERVICE)"},
    {"banner_text", CONFIG_T_STRING, G(banner_text), "mxgate", NULL, 0, 0, NULL, v_printable, R,
     "Text after \"220 <hostname> ESMTP \" in the greeting"},
    {"user", CONFIG_T_STRING, G(user), NULL, NULL, 0, 0, NULL, v_account, 0,
     "Drop root privileges to this user after binding the ports"},
    {"group", CONFIG_T_STRING, G(group), NULL, NULL, 0, 0, NULL, v_account, 0,
     "Group to switch to along with user (default: the user's primary group)"},
    {"allow_root", CONFIG_T_BOOL, G(allow_root), "no", NULL, 0, 0, NULL, NULL, 0,
     "Keep running as root when started as root without `user`; otherwise `run` refuses "
     "to start on a port below 1024 and warns on higher ones (docs/security.md)"},
    {"control_socket", CONFIG_T_STRING, G(control_socket), NULL, "<queue directory>/control.sock",
     0, 0, NULL, NULL, 0, "Unix socket for `mxgate queue|status|reload`"},
    {"control_socket_group", CONFIG_T_STRING, G(control_socket_group), NULL,
     "the primary group of `user`", 0, 0, NULL, v_account, 0,
     "Group that owns the control socket, e.g. an operators' group allowed to run "
     "`mxgate status|queue|reload` (the owner is `user`)"},
    {"control_socket_mode", CONFIG_T_ENUM, G(control_socket_mode), "0660", NULL, 0, 0,
     e_socket_mode, NULL, 0,
     "Permission bits of the control socket: owner and group may use it by default"},
    {"content_workers", CONFIG_T_INT, G(content_workers), "2", NULL, 1, 64, NULL, NULL, 0,
     "Worker threads for content jobs at end of DATA (attachment policy, external-sender "
     "banner: MIME parsing with GMime/libzip; the ARC seal when [warning] or an rspamd "
     "subject_tag may edit the message); an attachment check holds at most 4 times "
     "[attachments] max_size plus 1 MiB (docs/security.md, item 14)"},
    {"content_queue", CONFIG_T_INT, G(content_queue), "100", NULL, 1, 100000, NULL, NULL, 0,
     "Content jobs waiting for a worker; when full, end of DATA answers 451 4.3.2 (nothing "
     "queued, the client retries) and mxgate_messages_rejected_total{reason=\"content_busy\"} "
     "counts it"},
};

static const struct config_directive d_limits[] = {
    {"message_size_limit", CONFIG_T_SIZE, G(message_size_limit), "35M", NULL, 1 * KB, 2 * GB, NULL,
     NULL, R, "Largest message accepted (advertised as SIZE, enforced during DATA)"},
    {"max_recipients", CONFIG_T_INT, G(max_recipients), "100", NULL, 1, 100000, NULL, NULL, R,
     "Recipients per message; more get 452 (RFC 5321 section 4.5.3.1.8)"},
    {"max_connections", CONFIG_T_INT, G(max_connections), "1000", NULL, 1, 1000000, NULL, NULL, R,
     "Concurrent client connections in total; more get 421"},
    {"max_connections_per_ip", CONFIG_T_INT, G(max_connections_per_ip), "20", NULL, 1, 1000000,
     NULL, NULL, R, "Concurrent client connections from one address, on this node (never "
     "shared through [state] redis)"},
    {"max_errors", CONFIG_T_INT, G(max_errors), "10", NULL, 1, 1000, NULL, NULL, R,
     "Failed commands in one session before 421 and close"},
    {"max_header_size", CONFIG_T_SIZE, G(max_header_size), "1M", NULL, 4 * KB, 64 * MB, NULL, NULL,
     R, "Bytes of the header block kept in memory for DKIM/DMARC"},
    {"max_line_length", CONFIG_T_SIZE, G(max_line_length), "1M", NULL, 998, 2 * GB, NULL, NULL, R,
     "Longest message line (octets before CRLF) accepted and relayed unchanged; longer: 550. "
     "Lines over RFC 5321's 998 are streamed, never buffered or wrapped (DKIM)"},
    {"command_timeout", CONFIG_T_DURATION, G(command_timeout), "5m", NULL, 1, HOUR, NULL, NULL, R,
     "Idle time allowed between commands (RFC 5321 section 4.5.3.2: 5m)"},
    {"data_timeout", CONFIG_T_DURATION, G(data_timeout), "3m", NULL, 1, HOUR, NULL, NULL, R,
     "Idle time allowed between two chunks of DATA (RFC 5321: 3m)"},
    {"data_total_timeout", CONFIG_T_DURATION, G(data_total_timeout), "30m", NULL, 1, DAY, NULL,
     NULL, R, "Time allowed for the whole DATA phase"},
    {"proxy_timeout", CONFIG_T_DURATION, G(proxy_timeout), "10s", NULL, 1, 5 * MINUTE, NULL, NULL,
     R, "Time a trusted proxy has to send its PROXY header"},
    {"junk_command_limit", CONFIG_T_INT, G(junk_command_limit), "100", NULL, 1, 1000000, NULL,
     NULL, R,
     "NOOP, RSET, VRFY, HELP, repeated HELO/EHLO, repeated or DNSBL-refused RCPT commands a "
     "session may send before 421 "
     "and close (like Postfix's smtpd_junk_command_limit); a queued message resets the count"},
    {"max_session_time", CONFIG_T_DURATION, G(max_session_time), "1h", NULL, 1, DAY, NULL, NULL,
     R, "Longest life of one session; then 421 (a message being received gets data_timeout "
     "more to finish)"},
    {"max_transactions", CONFIG_T_INT, G(max_transactions), "1000", NULL, 1, 1000000, NULL, NULL,
     R, "MAIL FROM commands in one session; the next one gets 421 and the client reconnects"},
    {"stress_threshold", CONFIG_T_INT, G(stress_threshold), "75", NULL, 0, 100, NULL, NULL, R,
     "Percent of max_connections above which stress mode shortens timeouts and the junk "
     "limit for every session (Postfix's stress mode); 0 = never"},
    {"stress_command_timeout", CONFIG_T_DURATION, G(stress_command_timeout), "10s", NULL, 1, HOUR,
     NULL, NULL, R, "command_timeout (and data_timeout, when shorter) in stress mode"},
    {"stress_junk_command_limit", CONFIG_T_INT, G(stress_junk_command_limit), "10", NULL, 1,
     1000000, NULL, NULL, R, "junk_command_limit in stress mode"},
};

static const struct config_directive d_tls[] = {
    {"cert_file", CONFIG_T_PATH, G(tls_cert_file), NULL, NULL, 0, 0, NULL, NULL, R,
     "PEM certificate chain; without it STARTTLS is not offered"},
    {"key_file", CONFIG_T_PATH, G(tls_key_file), NULL, NULL, 0, 0, NULL, NULL, R,
     "PEM private key of cert_file"},
    {"ciphers", CONFIG_T_STRING, G(tls_ciphers), "ECDHE+AESGCM:ECDHE+CHACHA20", NULL, 0, 0, NULL,
     v_ciphers, R, "TLS 1.2 cipher list (OpenSSL syntax)"},
    {"ciphersuites", CONFIG_T_STRING, G(tls_ciphersuites),
     "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", NULL, 0, 0, NULL,
     v_ciphers, R, "TLS 1.3 cipher suites (OpenSSL syntax)"},
    {"min_version", CONFIG_T_STRING, G(tls_min_version), "TLSv1.2", NULL, 0, 0, e_tls_version, NULL,
     R, "Oldest TLS version accepted"},
};

static const struct config_directive d_access[] = {
    {"allow", CONFIG_T_CIDRS, G(allow), NULL, NULL, 0, 0, NULL, NULL, R,
     "Client networks allowed to connect; empty = everyone not denied"},
    {"deny", CONFIG_T_CIDRS, G(deny), NULL, NULL, 0, 0, NULL, NULL, R,
     "Client networks refused with 554 at connect; deny wins over allow"},
    {"trusted_proxies", CONFIG_T_CIDRS, G(trusted_proxies), NULL, NULL, 0, 0, NULL, NULL, R,
     "Load balancers that must send a PROXY v1/v2 header with the real client"},
};

static const struct config_directive d_domains[] = {
    {"accepted_domains", CONFIG_T_DOMAINS, G(accepted_domains), NULL, NULL, 0, 0, NULL, NULL, R,
     "Recipient domains mxgate accepts mail for (required; all else is relaying)"},
    {"accepted_recipients", CONFIG_T_ADDRS, G(accepted_recipients), NULL, NULL, 0, 0, NULL, NULL, R,
     "Exact recipient addresses; at a domain with listed addresses every other local part "
     "gets 550 5.1.1 (other domains are not affected; postmaster@ always passes, RFC 5321 4.5.1)"},
    {"recipients_file", CONFIG_T_PATH, G(recipients_file), NULL, NULL, 0, 0, NULL, NULL, R,
     "File of recipient addresses, one per line ('#' comments), added to accepted_recipients"},
    {"primary_domain", CONFIG_T_STRING, G(primary_domain), NULL, "first of accepted_domains", 0, 0,
     NULL, v_fqdn, R,
     "RCPT TO:<postmaster> (no domain, RFC 5321 4.5.1) goes to postmaster@ this accepted domain"},
};

static const struct config_directive d_verify[] = {
    {"positive_ttl", CONFIG_T_DURATION, G(verify_positive_ttl), "7d", NULL, 60, 365 * DAY, NULL,
     NULL, R, "How long a recipient the downstream accepted stays verified"},
    {"negative_ttl", CONFIG_T_DURATION, G(verify_negative_ttl), "3h", NULL, 60, 30 * DAY, NULL,
     NULL, R, "How long a recipient the downstream refused (5xx) is refused without asking"},
    {"unavailable", CONFIG_T_ENUM, G(verify_unavailable), "defer", NULL, 0, 0,
     e_verify_unavailable, NULL, R,
     "RCPT answer when the downstream cannot be asked (down, 4xx, timeout, too many probes): "
     "defer (451 4.4.3) or accept (logged and counted as unverified)"},
    {"timeout", CONFIG_T_DURATION, G(verify_timeout), "20s", NULL, 1, 5 * MINUTE, NULL, NULL, R,
     "Deadline of one probe (connect, EHLO, STARTTLS, MAIL, RCPT), all hosts included"},
    {"max_probes", CONFIG_T_INT, G(verify_max_probes), "20", NULL, 1, 10000, NULL, NULL, R,
     "Probes in flight at once; a RCPT needing one more gets the unavailable answer, "
     "and so does one from a client whose probes fill a quarter of them"},
    {"cache_size", CONFIG_T_INT, G(verify_cache_size), "100000", NULL, 100, 10000000, NULL, NULL,
     R, "Addresses kept in the verification cache (the oldest answers go first)"},
    {"cache_file", CONFIG_T_STRING, G(verify_cache_file), NULL, "<queue directory>/verify.cache",
     0, 0, NULL, NULL, 0, "File the cache is kept in across restarts; none = memory only"},
};

static const struct config_directive d_queue[] = {
    {"directory", CONFIG_T_DIR, G(queue_dir), "/var/spool/mxgate", NULL, 0, 0, NULL, NULL, 0,
     "Queue directory (incoming/ msg/ active/ deferred/ hold/ quarantine/ ...); created at "
     "start"},
    {"fsync", CONFIG_T_BOOL, G(queue_fsync), "yes", NULL, 0, 0, NULL, NULL, R,
     "fsync messages before 250; switch off only for benchmarks"},
    {"max_lifetime", CONFIG_T_DURATION, G(max_queue_lifetime), "5d", NULL, 1, 365 * DAY, NULL, NULL,
     R, "Time a message may stay queued before it bounces"},
    {"delay_warning_time", CONFIG_T_DURATION, G(delay_warning_time), "4h", NULL, 0, 365 * DAY, NULL,
     NULL, R, "Queue time before a \"delayed\" DSN goes to the sender; 0 = never"},
    {"retry_schedule", CONFIG_T_DURATIONS, GN(retry_schedule, nretry), "1m, 5m, 15m, 30m, 1h", NULL,
     1, 7 * DAY, NULL, NULL, R, "Waits between delivery attempts; the last one repeats"},
    {"max_deliveries", CONFIG_T_INT, G(max_deliveries), "20", NULL, 1, 100000, NULL, NULL, R,
     "Concurrent deliveries over all routes"},
    {"bounce_sender", CONFIG_T_STRING, G(bounce_sender), NULL, "MAILER-DAEMON@<hostname>", 0, 0,
     NULL, v_address, R, "From: address of delivery status notifications"},
    {"quarantine_retention", CONFIG_T_DURATION, G(quarantine_retention), "30d", NULL, 1,
     3650 * DAY, NULL, NULL, R,
     "How long a quarantined message waits in the queue's quarantine/ for `mxgate quarantine "
     "release`; then it is deleted (logged: status=expired reason=quarantine_retention)"},
    {"bounce_max_headers", CONFIG_T_SIZE, G(bounce_max_headers), "16K", NULL, 1 * KB, 1 * MB,
     NULL, NULL, R,
     "Bytes of the original header block a DSN returns (whole fields; never the body)"},
};

static const struct config_directive d_log[] = {
    {"level", CONFIG_T_ENUM, G(log_level), "info", NULL, 0, 0, e_log_level, NULL, R,
     "Least severe level logged"},
    {"format", CONFIG_T_ENUM, G(log_format), "text", NULL, 0, 0, e_log_format, NULL, R,
     "text (key=value) or json, one line per event"},
    {"file", CONFIG_T_STRING, G(log_file), NULL, "stderr", 0, 0, NULL, NULL, 0,
     "Append logs to this file instead of stderr"},
};

static const struct config_directive d_dns[] = {
    {"forwarders", CONFIG_T_LIST, G(dns_forwarders), NULL, "full recursion", 0, 0, NULL,
     v_forwarder, 0, "Resolvers to forward to, as addr or addr@port (127.0.0.1@5353)"},
    {"trust_anchor_file", CONFIG_T_PATH, G(dns_trust_anchor_file), "auto", NULL, 0, 0, NULL, NULL,
     0,
     "DNSSEC validation: auto (on where root_anchor_file exists, RFC 5011 rollover state kept in "
     "the queue directory, else off), none (off), or a static trust anchor file"},
    {"root_anchor_file", CONFIG_T_STRING, G(dns_root_anchor_file), "/usr/share/dns/root.key", NULL,
     0, 0, NULL, NULL, 0,
     "The root trust anchor trust_anchor_file = auto starts from (Debian dns-root-data)"},
    {"timeout", CONFIG_T_DURATION, G(dns_timeout), "5s", NULL, 1, 60, NULL, NULL, 0,
     "Time allowed for one DNS query"},
    {"cache_size", CONFIG_T_INT, G(dns_cache_size), "10000", NULL, 0, 10000000, NULL, NULL, 0,
     "DNS cache entries"},
    {"slow_domain_limit", CONFIG_T_INT, G(dns_slow_domain_limit), "1", NULL, 0, 1000, NULL, NULL, 0,
     "Policy lookups in flight to one registered domain once it is slow (a query pending over "
     "500 ms, or a slow temporary failure within 2 x timeout); more fail at once as temperror; "
     "0 = no limit"},
};

static const struct config_directive d_auth[] = {
    {"authserv_id", CONFIG_T_STRING, G(authserv_id), NULL, "<hostname>", 0, 0, NULL, v_domain, R,
     "authserv-id of Authentication-Results (RFC 8601); forged ones are removed"},
    {"spf", CONFIG_T_BOOL, G(spf_enabled), "yes", NULL, 0, 0, NULL, NULL, R,
     "Check SPF (RFC 7208) of MAIL FROM and HELO"},
    {"spf_reject_fail", CONFIG_T_BOOL, G(spf_reject_fail), "no", NULL, 0, 0, NULL, NULL, R,
     "Answer 550 on SPF fail instead of leaving the judgement to DMARC"},
    {"spf_temperror_defer", CONFIG_T_BOOL, G(spf_temperror_defer), "no", NULL, 0, 0, NULL, NULL, R,
     "Answer 451 on SPF temperror"},
    {"dkim", CONFIG_T_BOOL, G(dkim_enabled), "yes", NULL, 0, 0, NULL, NULL, R,
     "Verify DKIM signatures (RFC 6376)"},
    {"dkim_max_signatures", CONFIG_T_INT, G(dkim_max_signatures), "5", NULL, 1, 50, NULL, NULL, R,
     "Signatures verified per message; the rest are ignored"},
    {"dkim_min_rsa_bits", CONFIG_T_INT, G(dkim_min_rsa_bits), "1024", NULL, 1024, 16384, NULL, NULL,
     R, "Shorter RSA keys fail (RFC 8301 section 3.2)"},
    {"dkim_strict", CONFIG_T_BOOL, G(dkim_strict), "yes", NULL, 0, 0, NULL, NULL, R,
     "A DKIM pass whose l= leaves body bytes unsigned, or with an unsigned extra instance of a "
     "signed single-use field (a second From:/Subject:..., RFC 6376 8.15), is dkim=policy"},
    {"dmarc", CONFIG_T_BOOL, G(dmarc_enabled), "yes", NULL, 0, 0, NULL, NULL, R,
     "Evaluate DMARC (RFC 9989, DNS tree walk) on the From: domain"},
    {"dmarc_enforcement", CONFIG_T_ENUM, G(dmarc_enforcement), "reject", NULL, 0, 0, e_dmarc, NULL,
     R, "Strongest action taken on a DMARC failure: reject, quarantine or monitor"},
    {"dmarc_temperror", CONFIG_T_ENUM, G(dmarc_temperror), "tempfail", NULL, 0, 0,
     e_dmarc_temperror, NULL, R,
     "DMARC temperror (a DNS failure, or an aligned SPF/DKIM temperror where a pass was needed): "
     "tempfail answers 451 so the sender retries; accept stamps it and queues"},
    {"dmarc_exempt_domains", CONFIG_T_DOMAINS, G(dmarc_exempt_domains), NULL, NULL, 0, 0, NULL,
     NULL, R, "From: domains evaluated and stamped but never enforced"},
    {"dmarc_exempt_clients", CONFIG_T_CIDRS, G(dmarc_exempt_clients), NULL, NULL, 0, 0, NULL, NULL,
     R, "Client networks evaluated and stamped but never enforced"},
    {"psl_file", CONFIG_T_PATH, G(psl_file), "/usr/share/publicsuffix/public_suffix_list.dat", NULL,
     0, 0, NULL, NULL, R, "Public Suffix List: groups DNS queries by registered domain for slow-domain isolation (DMARC uses the RFC 9989 tree walk, not this list)"},
    {"policy_workers", CONFIG_T_INT, G(policy_workers), "4", NULL, 1, 256, NULL, NULL, 0,
     "Worker threads for SPF/DKIM/DMARC evaluation"},
};

/* [arc] (issue 12: ARC, RFC 8617) */
static const char *const e_arc_alg[] = {"rsa-sha256", "ed25519-sha256", NULL};

static const struct config_directive d_arc[] = {
    {"enabled", CONFIG_T_BOOL, G(arc_enabled), "no", NULL, 0, 0, NULL, NULL, R,
     "Verify incoming ARC chains (RFC 8617) and stamp arc= in Authentication-Results"},
    {"seal", CONFIG_T_BOOL, G(arc_seal), "no", NULL, 0, 0, NULL, NULL, R,
     "Add an ARC set (AAR, AMS, AS) to every relayed message; needs enabled, selector, "
     "domain, key_file"},
    {"selector", CONFIG_T_STRING, G(arc_selector), NULL, NULL, 0, 0, NULL, v_selector, R,
     "Selector (s=) of the seal; its key is published at SELECTOR._domainkey.DOMAIN"},
    {"domain", CONFIG_T_STRING, G(arc_domain), NULL, NULL, 0, 0, NULL, v_domain, R,
     "Signing domain (d=) of the seal"},
    {"key_file", CONFIG_T_PATH, G(arc_key_file), NULL, NULL, 0, 0, NULL, NULL, R,
     "PEM private key of the seal (`mxgate keygen FILE` makes one), readable by the run user"},
    {"algorithm", CONFIG_T_ENUM, G(arc_algorithm), "rsa-sha256", NULL, 0, 0, e_arc_alg, NULL, R,
     "Seal algorithm: rsa-sha256 or ed25519-sha256 (RFC 8463); must match key_file"},
    {"trusted_sealers", CONFIG_T_DOMAINS, G(arc_trusted_sealers), NULL, NULL, 0, 0, NULL, NULL, R,
     "Sealer domains (d= of the newest ARC-Seal) whose validated chain overrides a DMARC "
     "failure when the oldest set of the trusted run of sealers recorded dmarc=pass"},
};
static const char *const e_policy_quarantine[] = {"tag", "quarantine", "reject", "deliver",
                                                   NULL};

static const struct config_directive d_spam[] = {
    {"threshold", CONFIG_T_DOUBLE, G(spam_threshold), "5.0", NULL, 0, 1000, NULL, NULL, R,
     "Score at or above which a message is flagged as spam"},
    {"weight_spf_fail", CONFIG_T_DOUBLE, G(weight_spf_fail), "3.0", NULL, -100, 100, NULL, NULL, R,
     "Score added for SPF fail"},
    {"weight_spf_softfail", CONFIG_T_DOUBLE, G(weight_spf_softfail), "1.0", NULL, -100, 100, NULL,
     NULL, R, "Score added for SPF softfail"},
    {"weight_dkim_fail", CONFIG_T_DOUBLE, G(weight_dkim_fail), "1.0", NULL, -100, 100, NULL, NULL,
     R, "Score added when a DKIM signature fails"},
    {"weight_dmarc_fail", CONFIG_T_DOUBLE, G(weight_dmarc_fail), "4.0", NULL, -100, 100, NULL, NULL,
     R, "Score added for a DMARC failure (policy none or exempt)"},
    {"weight_dmarc_quarantine", CONFIG_T_DOUBLE, G(weight_dmarc_quarantine), "5.0", NULL, -100, 100,
     NULL, NULL, R, "Score added for a DMARC failure under p=quarantine"},
    {"weight_dnsbl", CONFIG_T_DOUBLE, G(weight_dnsbl), "4.0", NULL, -100, 100, NULL, NULL, R,
     "Score added per DNSBL zone listing the client"},
    {"weight_no_rdns", CONFIG_T_DOUBLE, G(weight_no_rdns), "1.0", NULL, -100, 100, NULL, NULL, R,
     "Score added when the client has no reverse DNS"},
    {"dnsbl_zones", CONFIG_T_DOMAINS, G(dnsbl_zones), NULL, NULL, 0, 0, NULL, NULL, R,
     "DNS blocklist zones queried with the client address"},
    {"flag_header", CONFIG_T_STRING, G(spam_flag_header), "X-Spam-Flag", NULL, 0, 0, NULL, v_header,
     R, "Header set to YES or NO"},
    {"score_header", CONFIG_T_STRING, G(spam_score_header), "X-Spam-Score", NULL, 0, 0, NULL,
     v_header, R, "Header carrying the score"},
    {"quarantine_action", CONFIG_T_ENUM, G(spam_quarantine_action), "tag", NULL, 0, 0,
     e_policy_quarantine, NULL, R,
     "mxgate's own quarantine verdict, the default of dmarc_quarantine_action and "
     "score_action: tag (delivered with X-Spam-Flag: YES and [rspamd] subject_tag on the "
     "Subject), quarantine (kept in the queue, `mxgate quarantine`; reason=policy), reject "
     "(550 5.7.1) or deliver (headers only, X-Spam-Flag: NO)"},
    {"dmarc_quarantine_action", CONFIG_T_ENUM, G(spam_dmarc_action), NULL, "quarantine_action",
     0, 0, e_policy_quarantine, NULL, R,
     "A DMARC failure under p=quarantine (or a reject that [auth] dmarc_enforcement or pct "
     "turns into quarantine): tag, quarantine, reject or deliver; applied by mxgate whether "
     "[rspamd] is on or not (tag and quarantine set X-Spam-Flag: YES whatever rspamd says)"},
    {"score_action", CONFIG_T_ENUM, G(spam_score_action), NULL, "quarantine_action", 0, 0,
     e_policy_quarantine, NULL, R,
     "mxgate's own score at or above threshold: tag, quarantine, reject or deliver.  With "
     "[rspamd] address set the score is only an input to rspamd (symbol MXGATE_AUTH) and "
     "this applies only when rspamd could not be asked (on_failure = accept)"},
    {"status_header", CONFIG_T_STRING, G(spam_status_header), "X-Spam-Status", NULL, 0, 0, NULL,
     v_header, R, "Header carrying the verdict and the tests that fired"},
};

static const struct config_directive d_dnsbl[] = {
    {"sites", CONFIG_T_LIST, G(dnsbl_site_specs), NULL, NULL, 0, 0, NULL, v_dnsbl_site, R,
     "DNSBL/DNSWL zones as zone[=filter][*weight], e.g. zen.spamhaus.org=127.0.0.[2..11]*3, "
     "list.dnswl.org=127.0.[0..255].[1..3]*-5 (negative = allowlist); weight 1 when omitted. "
     "Answers in 127.255.255.0/24 (query refused) never count"},
    {"reject_threshold", CONFIG_T_INT, G(dnsbl_reject_threshold), "3", NULL, 0, 100000, NULL,
     NULL, R, "Sum of the listing sites' weights at or above which the client gets 554 5.7.1; "
     "0 = never"},
    {"tag_threshold", CONFIG_T_INT, G(dnsbl_tag_threshold), "1", NULL, 0, 100000, NULL, NULL, R,
     "Score at or above which each listing zone adds [spam] weight_dnsbl to the message's "
     "spam score (rule DNSBL_<zone>); 0 = never"},
    {"tag_action", CONFIG_T_ENUM, G(dnsbl_tag_action), "deliver", NULL, 0, 0,
     e_policy_quarantine, NULL, R,
     "A client listed at or above tag_threshold (also by [spam] dnsbl_zones), on its own: "
     "deliver (nothing by itself: the listing only adds to the spam score), tag "
     "(X-Spam-Flag: YES and [rspamd] subject_tag), quarantine (reason=policy) or reject "
     "(550 5.7.1 at the end of DATA)"},
    {"decide_at", CONFIG_T_ENUM, G(dnsbl_decide), "connect", NULL, 0, 0, e_dnsbl_decide, NULL, R,
     "connect: the banner waits for the lookups (at most [dns] timeout) and a rejected client "
     "gets 554 instead; rcpt: banner at once, each RCPT gets 554"},
    {"cache_ttl", CONFIG_T_DURATION, G(dnsbl_cache_ttl), "5m", NULL, 0, DAY, NULL, NULL, R,
     "How long an answer (listed or not) is reused for the same client and zone; 0 = no cache"},
};

static const struct config_directive d_pregreet[] = {
    {"enabled", CONFIG_T_BOOL, G(pregreet_enabled), "no", NULL, 0, 0, NULL, NULL, R,
     "Test clients not in the pass cache before they may talk: greeting delay, early "
     "talkers, bare pipelining (like Postfix postscreen)"},
    {"greet_delay", CONFIG_T_DURATION, G(pregreet_delay), "3s", NULL, 0, MINUTE, NULL, NULL, R,
     "How long the final 220 line is held back; a client that sends anything before it is "
     "refused (554 5.5.1) and the connection closed"},
    {"greet_mode", CONFIG_T_ENUM, G(pregreet_mode), "continuation", NULL, 0, 0, e_pregreet_mode,
     NULL, R,
     "continuation: send \"220-<hostname>\" at once and the final 220 after greet_delay "
     "(catches bots that do not wait for the end of a multi-line reply); pause: silence"},
    {"bare_pipelining", CONFIG_T_BOOL, G(pregreet_bare_pipelining), "yes", NULL, 0, 0, NULL, NULL,
     R, "With enabled: refuse a client that sends more commands before the answer to its "
     "EHLO (or after HELO), when PIPELINING was not offered yet (RFC 2920)"},
    {"non_smtp_commands", CONFIG_T_BOOL, G(pregreet_non_smtp), "yes", NULL, 0, 0, NULL, NULL, R,
     "Refuse and disconnect on GET, POST, HEAD, PUT, CONNECT, OPTIONS, USER (web, proxy and "
     "POP3 clients) at any point, even without enabled (Postfix's smtpd_forbidden_commands)"},
    {"pass_ttl", CONFIG_T_DURATION, G(pregreet_pass_ttl), "1d", NULL, 1, 30 * DAY, NULL, NULL, R,
     "How long a client that passed (waited for the banner, no bare pipelining at EHLO) skips "
     "the delay and the tests"},
    {"pass_cache_file", CONFIG_T_STRING, G(pregreet_pass_file), NULL, "memory only", 0, 0, NULL,
     NULL, 0, "File the pass cache is read from at start and written to at stop, so a restart "
     "does not test every client again"},
    {"pass_cache_size", CONFIG_T_INT, G(pregreet_pass_max), "200000", NULL, 1000, 100000000,
     NULL, NULL, 0, "Clients kept in the pass cache, about 100 bytes each; when full the least "
     "recently seen of a sample is evicted (that client is tested again)"},
};

static const struct config_directive d_ratelimit[] = {
    {"window", CONFIG_T_DURATION, G(rl_window), "1m", NULL, 1, DAY, NULL, NULL, R,
     "Period the rates below count over, from the first event of a client, network, sender "
     "or domain (like Redis INCR + EXPIRE); the 421/451 says when it ends"},
    {"net_prefix_v4", CONFIG_T_INT, G(rl_net_prefix4), "24", NULL, 8, 32, NULL, NULL, R,
     "IPv4 prefix length of a client's network for the *_per_net limits"},
    {"net_prefix_v6", CONFIG_T_INT, G(rl_net_prefix6), "64", NULL, 16, 128, NULL, NULL, R,
     "IPv6 prefix length of a client's network for the *_per_net limits"},
    {"connections_per_ip", CONFIG_T_INT, G(rl_conn_per_ip), "0", NULL, 0, 10000000, NULL, NULL,
     R, "Connections per window from one address; more get 421 4.7.0 at connect; 0 = no limit"},
    {"connections_per_net", CONFIG_T_INT, G(rl_conn_per_net), "0", NULL, 0, 10000000, NULL, NULL,
     R, "Connections per window from one network (net_prefix_v4/v6); 0 = no limit"},
    {"max_connections_per_net", CONFIG_T_INT, G(rl_max_connections_per_net), "0", NULL, 0,
     1000000, NULL, NULL, R,
     "Concurrent connections from one network (with [limits] max_connections_per_ip for one "
     "address) open on this node (never shared through [state] redis); more get 421 4.7.0; "
     "0 = no limit"},
    {"messages_per_ip", CONFIG_T_INT, G(rl_msgs_per_ip), "0", NULL, 0, 10000000, NULL, NULL, R,
     "MAIL FROM commands per window from one address; more get 451 4.7.1; 0 = no limit"},
    {"messages_per_net", CONFIG_T_INT, G(rl_msgs_per_net), "0", NULL, 0, 10000000, NULL, NULL, R,
     "MAIL FROM commands per window from one network; 0 = no limit"},
    {"messages_per_sender", CONFIG_T_INT, G(rl_msgs_per_sender), "0", NULL, 0, 10000000, NULL,
     NULL, R, "Accepted messages (250 after DATA) per window with one envelope sender (letter "
     "case ignored); checked at the first RCPT TO of a transaction the client's limits let "
     "through, which gets 451 4.7.1 when the limit is reached; a transaction without an "
     "accepted message counts nothing; one budget from any client only when SPF passes for "
     "the sender (RCPT waits for SPF), else per sender and client network, and always so for "
     "<>; 0 = no limit"},
    {"messages_per_domain", CONFIG_T_INT, G(rl_msgs_per_domain), "0", NULL, 0, 10000000, NULL,
     NULL, R, "Accepted messages (250 after DATA) per window for one recipient domain, from "
     "any client, once per domain in a message; checked at the first RCPT TO of the domain in "
     "a transaction that the client's and sender's limits let through, which gets 451 4.7.1 "
     "when the limit is reached; 0 = no limit"},
    {"recipients_per_ip", CONFIG_T_INT, G(rl_rcpts_per_ip), "0", NULL, 0, 10000000, NULL, NULL, R,
     "RCPT TO commands per window from one address; more get 451 4.7.1 (per message: [limits] "
     "max_recipients); counted once past relay control, the recipient lists and "
     "max_recipients (a repeated RCPT counts again); 0 = no limit"},
    {"recipients_per_net", CONFIG_T_INT, G(rl_rcpts_per_net), "0", NULL, 0, 10000000, NULL, NULL,
     R, "RCPT TO commands per window from one network (net_prefix_v4/v6); 0 = no limit"},
    {"recipients_per_sender", CONFIG_T_INT, G(rl_rcpts_per_sender), "0", NULL, 0, 10000000, NULL,
     NULL, R, "RCPT TO commands per window with one envelope sender (letter case ignored) that "
     "the client's limits let through; one budget from any client only when SPF passes for the "
     "sender (RCPT waits for SPF), else per sender and client network, and always so for <>; "
     "0 = no limit"},
    {"recipients_per_domain", CONFIG_T_INT, G(rl_rcpts_per_domain), "0", NULL, 0, 10000000, NULL,
     NULL, R, "RCPT TO commands per window for one recipient domain, from any client, that the "
     "client's and sender's limits let through; 0 = no limit"},
    {"exempt_clients", CONFIG_T_CIDRS, G(rl_exempt), NULL, NULL, 0, 0, NULL, NULL, R,
     "Client networks never rate limited (their own relays, monitoring)"},
    {"max_keys", CONFIG_T_INT, G(rl_max_keys), "500000", NULL, 1000, 100000000, NULL, NULL, 0,
     "Counters kept in process (without [state] redis), about 130 bytes each (more with long "
     "sender addresses); when full the least recently used of a sample is evicted "
     "(mxgate_state_evictions_total), limits stay on"},
};

/* v_redis_url - redis://HOST[:PORT][/DB] or unix:/PATH[?db=N]. */
static const char *v_redis_url(const char *s, char *buf, size_t buflen)
{
	struct util_redis_url u;
	return util_redis_url_parse(s, &u, buf, buflen) < 0 ? buf : NULL;
}

static const struct config_directive d_state[] = {
    {"redis", CONFIG_T_STRING, G(state_redis), NULL, "in-process (one node)", 0, 0, NULL,
     v_redis_url, 0,
     "Redis or Valkey server shared by every gateway of a fleet for the [ratelimit] rate "
     "counters (not the concurrency caps, which stay per node), "
     "the [greylist] triplets and the [pregreet] pass cache: redis://HOST[:PORT][/DB] or "
     "unix:/PATH[?db=N] (a host name is resolved once, at start); when it is down or slower "
     "than timeout_ms the event is let through (fail open), logged and counted"},
    {"password", CONFIG_T_STRING, G(state_password), NULL, "none", 0, 0, NULL, NULL, S,
     "Password sent with AUTH on each new connection (requirepass)"},
    {"timeout_ms", CONFIG_T_INT, G(state_timeout_ms), "250", NULL, 10, 10000, NULL, NULL, 0,
     "Deadline of each command in milliseconds; a command not answered by then fails open and "
     "the connection is dropped and retried a second later"},
    {"connections", CONFIG_T_INT, G(state_connections), "2", NULL, 1, 16, NULL, NULL, 0,
     "Connections to the server, used in turn (commands are pipelined on each)"},
    {"key_prefix", CONFIG_T_STRING, G(state_key_prefix), "mxgate:", NULL, 0, 0, NULL,
     v_printable, 0, "Prepended to every key, so several fleets can share one server"},
};

static const struct config_directive d_greylist[] = {
    {"enabled", CONFIG_T_BOOL, G(greylist_enabled), "no", NULL, 0, 0, NULL, NULL, R,
     "Greylist at the end of DATA: a new (client network, sender, recipient) triplet gets "
     "451 4.7.1 until it is retried after delay"},
    {"delay", CONFIG_T_DURATION, G(greylist_delay), "5m", NULL, 1, DAY, NULL, NULL, R,
     "How long a sender must wait before its retry is accepted"},
    {"retry_window", CONFIG_T_DURATION, G(greylist_retry_window), "2d", NULL, 60, 30 * DAY, NULL,
     NULL, R, "How long a first attempt is remembered; a later retry starts again"},
    {"allowlist_ttl", CONFIG_T_DURATION, G(greylist_allow_ttl), "35d", NULL, 60, 365 * DAY, NULL,
     NULL, R, "How long a client network that retried correctly skips greylisting (automatic "
     "allowlist)"},
    {"skip_spf_domains", CONFIG_T_DOMAINS, G(greylist_spf_domains), NULL, NULL, 0, 0, NULL, NULL,
     R, "Sender domains (and their subdomains) never greylisted when SPF passes"},
    {"max_entries", CONFIG_T_INT, G(greylist_max_entries), "500000", NULL, 1000, 100000000, NULL,
     NULL, 0, "Triplets and allowlisted networks kept in process (without [state] redis), about "
     "100 bytes plus the network and addresses each; when full the least recently used of a "
     "sample is evicted: that sender is greylisted again"},
};

static const struct config_directive d_route[] = {
    {"role", CONFIG_T_ENUM, RT(role), "inbound", NULL, 0, 0, e_route_role, NULL, R,
     "inbound (mail for accepted domains) or outbound (what mxgate itself sends: DSNs, "
     "delivered to the recipient's MX; one route at most, default an implicit "
     "[route outbound] with type mx, tls dane)"},
    {"domains", CONFIG_T_DOMAINS, RT(domains), NULL, "none: the default route", 0, 0, NULL, NULL, R,
     "Recipient domains routed here; an inbound route without domains is the default route"},
    {"type", CONFIG_T_ENUM, RT(type), "smtp", "smtp; mx with role = outbound", 0, 0, e_route_type,
     NULL, R, "smtp (to hosts), mx (to the domain's MX) or directory (.eml files)"},
    {"hosts", CONFIG_T_HOSTS, RTN(hosts, nhosts), NULL, NULL, 0, 0, NULL, NULL, R,
     "Downstream servers as name:port (port 25 when omitted), tried in order"},
    {"tls", CONFIG_T_ENUM, RT(tls), "verify", "verify; dane with role = outbound", 0, 0,
     e_route_tls, NULL, R,
     "verify (STARTTLS, certificate checked), encrypt (STARTTLS, unchecked), none, may "
     "(RFC 7435: STARTTLS when offered, unchecked; plaintext when not offered or refused, "
     "and the same host again in plaintext when the handshake fails), or dane (type mx: "
     "RFC 7672 DANE where the MX and TLSA records are DNSSEC-validated - needs [dns] "
     "trust_anchor_file - else the domain's MTA-STS policy, RFC 8461, else may)"},
    {"tls_ca_file", CONFIG_T_PATH, RT(ca_file), NULL, "system CA store", 0, 0, NULL, NULL, R,
     "CA bundle used to verify downstream certificates"},
    {"auth_user", CONFIG_T_STRING, RT(auth_user), NULL, NULL, 0, 0, NULL, v_printable, R,
     "SMTP AUTH user towards downstream (needs tls verify or encrypt)"},
    {"auth_password", CONFIG_T_STRING, RT(auth_password), NULL, NULL, 0, 0, NULL, NULL, R | S,
     "SMTP AUTH password; prefer auth_file"},
    {"auth_file", CONFIG_T_PATH, RT(auth_file), NULL, NULL, 0, 0, NULL, NULL, R,
     "File holding \"user:password\" on one line, mode 0600"},
    {"max_connections", CONFIG_T_INT, RT(max_connections), "10", NULL, 1, 10000, NULL, NULL, R,
     "Concurrent connections to this route"},
    {"max_deliveries", CONFIG_T_INT, RT(max_deliveries), "0", NULL, 0, 100000, NULL, NULL, R,
     "Messages in delivery at once to this route (per domain with type mx); the rest wait "
     "in the queue without taking a [queue] max_deliveries slot; 0 = max_connections "
     "(type directory: no limit)"},
    {"dead_after", CONFIG_T_INT, RT(dead_after), "2", NULL, 1, 1000, NULL, NULL, R,
     "Consecutive failed connections (every host tried) after which the destination is "
     "considered down: its messages are deferred without connecting"},
    {"dead_time", CONFIG_T_DURATION, RT(dead_time), "60s", NULL, 1, HOUR, NULL, NULL, R,
     "How long a down destination is not tried; then one connection probes it"},
    {"mx_port", CONFIG_T_INT, RT(mx_port), "25", NULL, 1, 65535, NULL, NULL, R,
     "type mx: TCP port used on the MX hosts (25 on the internet)"},
    {"mta_sts_port", CONFIG_T_INT, RT(mta_sts_port), "443", NULL, 1, 65535, NULL, NULL, R,
     "tls = dane: HTTPS port the MTA-STS policy is fetched from (443; another only for tests)"},
    {"mta_sts_ca_file", CONFIG_T_PATH, RT(mta_sts_ca_file), NULL, "system CA store", 0, 0, NULL,
     NULL, R, "tls = dane: CA bundle for MTA-STS (the policy server and, in enforce mode, "
              "the MX hosts)"},
    {"msgs_per_connection", CONFIG_T_INT, RT(msgs_per_connection), "100", NULL, 1, 100000, NULL,
     NULL, R, "Messages carried by one connection before QUIT"},
    {"connect_timeout", CONFIG_T_DURATION, RT(connect_timeout), "30s", NULL, 1, 10 * MINUTE, NULL,
     NULL, R, "Time allowed for the TCP connect, and for the TLS handshake after STARTTLS"},
    {"greeting_timeout", CONFIG_T_DURATION, RT(greeting_timeout), NULL, "command_timeout", 0,
     HOUR, NULL, NULL, R,
     "Time allowed for the 220 greeting once connected (0 or unset: command_timeout; RFC "
     "5321 4.5.3.2: 5 minutes); a "
     "downstream you run yourself can be given less, so a host that accepts connections and "
     "never greets holds a delivery slot for less time"},
    {"command_timeout", CONFIG_T_DURATION, RT(command_timeout), "5m", NULL, 1, HOUR, NULL, NULL, R,
     "Time allowed for each reply (RFC 5321 section 4.5.3.2)"},
    {"data_timeout", CONFIG_T_DURATION, RT(data_timeout), "10m", NULL, 1, HOUR, NULL, NULL, R,
     "Time allowed for the reply to the final dot (RFC 5321: 10m)"},
    {"directory", CONFIG_T_DIR, RT(directory), NULL, NULL, 0, 0, NULL, NULL, R,
     "type directory: folder the .eml files are written to; created at start"},
    {"verify_recipients", CONFIG_T_BOOL, RT(verify_recipients), "no", NULL, 0, 0, NULL, NULL, R,
     "type smtp: at RCPT, ask the hosts whether a recipient exists (callout, cached; see "
     "[verify]) unless the domain has a recipient list"},
};

/* [clamav] (issue 13: content inspection) */
static const char *const e_scan_failure[] = {"tempfail", "accept", NULL};
static const char *const e_scan_action[] = {"reject", "deliver", "quarantine", "tag", NULL};

/* v_scan_socket - "/path", "unix:/path" or a numeric "host:port" (the
 * connection is made on the event loop: no blocking name lookup). */
static const char *v_scan_socket(const char *s, char *buf, size_t buflen)
{
	char host[256];
	int port = 0;
	struct util_addr a;

	if (strncmp(s, "unix:", 5) == 0)
		s += 5;
	if (s[0] == '/')
		return strlen(s) < 100 ? NULL : "unix socket path longer than 100 bytes";
	if (util_hostport_parse(s, 0, host, sizeof(host), &port, buf, buflen) < 0)
		return buf;
	if (port == 0)
		return "expected /path/to/clamd.ctl, unix:/path or host:port";
	if (util_addr_parse_numeric(host, port, &a) < 0)
		return "the host must be a numeric IPv4 or [IPv6] address";
	return NULL;
}

static const struct config_directive d_clamav[] = {
    {"socket", CONFIG_T_STRING, G(clamav_socket), NULL, "off", 0, 0, NULL, v_scan_socket, R,
     "clamd to scan every message with (INSTREAM): /run/clamav/clamd.ctl, unix:/path or "
     "numeric host:port; unset = no virus scanning"},
    {"timeout", CONFIG_T_DURATION, G(clamav_timeout), "30s", NULL, 1, 10 * MINUTE, NULL, NULL, R,
     "Deadline of one scan (waiting for a connection included); then on_failure applies"},
    {"on_failure", CONFIG_T_ENUM, G(clamav_on_failure), "tempfail", NULL, 0, 0, e_scan_failure,
     NULL, R,
     "clamd down, slow or failing: tempfail (451 4.7.1, the sender retries) or accept "
     "(delivered with X-Virus-Scan: unscanned; logged and counted)"},
    {"virus_action", CONFIG_T_ENUM, G(clamav_virus_action), "reject", NULL, 0, 0, e_scan_action,
     NULL, R,
     "A virus found: reject (550 5.7.1 before anything is queued), quarantine (250, then "
     "kept in the queue's quarantine/ until `mxgate quarantine release|delete`), tag "
     "(delivered with X-Virus-Scan: infected and the signature name, X-Spam-Flag: YES and "
     "[rspamd] subject_tag on the Subject) or deliver (the header only; check-config warns)"},
    {"max_size", CONFIG_T_SIZE, G(clamav_max_size), "25M", NULL, 1 * KB, 2 * GB, NULL, NULL, R,
     "Larger messages are not sent to clamd (keep it at or below clamd's StreamMaxLength); "
     "they are delivered with X-Virus-Scan: unscanned reason=size"},
    {"max_connections", CONFIG_T_INT, G(clamav_max_connections), "8", NULL, 1, 1000, NULL, NULL,
     R, "clamd connections kept open and reused (IDSESSION); more scans wait for one"},
};

static const char *const e_spam_action[] = {"reject", "tag", "deliver", "quarantine", NULL};

/* v_scan_hostport - a numeric "host:port" (rspamd over HTTP). */
static const char *v_scan_hostport(const char *s, char *buf, size_t buflen)
{
	if (s[0] == '/' || strncmp(s, "unix:", 5) == 0)
		return "expected a numeric host:port such as 127.0.0.1:11333";
	return v_scan_socket(s, buf, buflen);
}

static const struct config_directive d_rspamd[] = {
    {"address", CONFIG_T_STRING, G(rspamd_address), NULL, "off", 0, 0, NULL, v_scan_hostport, R,
     "rspamd normal worker to check every message with (HTTP POST /checkv2): numeric "
     "host:port such as 127.0.0.1:11333; unset = no spam filtering by rspamd"},
    {"timeout", CONFIG_T_DURATION, G(rspamd_timeout), "15s", NULL, 1, 10 * MINUTE, NULL, NULL, R,
     "Deadline of one check (waiting for a connection included); then on_failure applies"},
    {"on_failure", CONFIG_T_ENUM, G(rspamd_on_failure), "accept", NULL, 0, 0, e_scan_failure,
     NULL, R,
     "rspamd down, slow or failing: accept (delivered with X-Spam-Checker: unchecked; logged "
     "and counted) or tempfail (451 4.7.1)"},
    {"reject_action", CONFIG_T_ENUM, G(rspamd_reject_action), "reject", NULL, 0, 0,
     e_spam_action, NULL, R,
     "rspamd answers reject: reject (550 5.7.1 before anything is queued), quarantine (250, "
     "then kept in quarantine/ until `mxgate quarantine release|delete`), tag (X-Spam-Flag: "
     "YES) or deliver (headers only)"},
    {"tag_action", CONFIG_T_ENUM, G(rspamd_tag_action), "tag", NULL, 0, 0, e_spam_action, NULL,
     R,
     "rspamd answers add header, rewrite subject or quarantine: tag (X-Spam-Flag: YES), "
     "quarantine, reject or deliver"},
    {"max_size", CONFIG_T_SIZE, G(rspamd_max_size), "20M", NULL, 1 * KB, 2 * GB, NULL, NULL, R,
     "Larger messages are not sent to rspamd; they are delivered with X-Spam-Checker: "
     "unchecked; reason=size"},
    {"max_connections", CONFIG_T_INT, G(rspamd_max_connections), "8", NULL, 1, 1000, NULL, NULL,
     R, "HTTP connections to rspamd kept open (keep-alive) and reused"},
    {"subject_tag", CONFIG_T_STRING, G(rspamd_subject_tag), "[SPAM]", NULL, 0, 0, NULL,
     v_printable, R,
     "Prefix put once on the Subject of a message tagged by any verdict - rspamd, [clamav] "
     "virus_action, [attachments] action, [spam] dmarc_quarantine_action / score_action, "
     "[dnsbl] tag_action = tag - [rspamd] address set or not (a DKIM signature covering "
     "Subject no longer verifies downstream; mxgate's Authentication-Results keep the result); "
     "none = headers only"},
    {"skip_auth_checks", CONFIG_T_BOOL, G(rspamd_skip_auth), "yes", NULL, 0, 0, NULL, NULL, R,
     "Ask rspamd not to redo SPF/DKIM/DMARC (its group \"policies\" is disabled per request); "
     "mxgate's authentication score goes to rspamd as request header X-Mxgate-Auth-Score "
     "(deploy/rspamd/mxgate.lua turns it into symbol MXGATE_AUTH)"},
};

/* [attachments] (issue 13: attachment policy, content/content-attach.c) */
static const char *const e_attach_action[] = {"reject", "quarantine", "tag", "deliver", NULL};

/* v_attach_type - one detected type. */
static const char *v_attach_type(const char *s, char *buf, size_t buflen)
{
	(void)buf;
	(void)buflen;
	return strcmp(s, "pe") == 0 || strcmp(s, "elf") == 0 || strcmp(s, "script") == 0
	           ? NULL
	           : "expected pe, elf or script";
}

/* v_extension - an extension without the dot: letters, digits, - and _. */
static const char *v_extension(const char *s, char *buf, size_t buflen)
{
	(void)buf;
	(void)buflen;
	if (!*s || strlen(s) > 16)
		return "expected an extension of 1..16 characters, without the dot";
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
			return "expected letters, digits, - or _ (no dot)";
	return NULL;
}

static const struct config_directive d_attachments[] = {
    {"enabled", CONFIG_T_BOOL, G(attach_enabled), "no", NULL, 0, 0, NULL, NULL, R,
     "Judge attachments at the end of DATA, before the 250: by name and by detected type, "
     "inside zip archives one level deep"},
    {"blocked_extensions", CONFIG_T_LIST, G(attach_extensions),
     "exe, com, scr, pif, bat, cmd, vbs, vbe, js, jse, wsf, wsh, hta, msi, msp, cpl, jar, "
     "ps1, psm1, lnk, reg, dll, scf, inf, chm, iso, img, vhd, vhdx, appx, msix, xll, sh",
     NULL, 0, 0, NULL, v_extension, R,
     "A file name whose last extension (trailing dots and blanks ignored) is one of these "
     "is blocked: invoice.pdf.exe is an .exe; RFC 2231 and encoded-word names are decoded"},
    {"blocked_types", CONFIG_T_LIST, G(attach_types), "pe, elf, script", NULL, 0, 0, NULL,
     v_attach_type, R,
     "Content blocked by its first bytes whatever its name: pe (MZ), elf, script (#!)"},
    {"zip", CONFIG_T_BOOL, G(attach_zip), "yes", NULL, 0, 0, NULL, NULL, R,
     "Judge the entries of zip archives (names and first bytes), one level deep"},
    {"max_zip_entries", CONFIG_T_INT, G(attach_max_zip_entries), "1000", NULL, 1, 100000, NULL,
     NULL, R, "A zip archive with more entries is blocked"},
    {"action", CONFIG_T_ENUM, G(attach_action), "reject", NULL, 0, 0, e_attach_action, NULL, R,
     "A blocked attachment: reject (550 5.7.1 before anything is queued), quarantine "
     "(reason=attachment), tag (delivered with X-Mxgate-Attachments: blocked, X-Spam-Flag: "
     "YES and [rspamd] subject_tag on the Subject) or deliver (the header only)"},
    {"unparsable_action", CONFIG_T_ENUM, G(attach_unparsable_action), "deliver", NULL, 0, 0,
     e_attach_action, NULL, R,
     "A message the MIME parser cannot read at all (its attachments cannot be judged): "
     "deliver (with X-Mxgate-Attachments: unchecked; reason=unparsable), tag, quarantine or "
     "reject (550 5.7.1); never a tempfail, which the sender would retry for nothing"},
    {"max_size", CONFIG_T_SIZE, G(attach_max_size), NULL, "[limits] message_size_limit",
     1 * KB, 2 * GB, NULL, NULL, R,
     "Larger messages are not judged (their attachments are unchecked): oversize_action "
     "applies.  By default every message mxgate accepts is judged; each content worker holds "
     "up to this much in memory.  check-config warns when it is below message_size_limit"},
    {"oversize_action", CONFIG_T_ENUM, G(attach_oversize_action), NULL, "unparsable_action", 0,
     0, e_attach_action, NULL, R,
     "A message over max_size (its attachments cannot be judged): deliver (with "
     "X-Mxgate-Attachments: unchecked; reason=size), tag, quarantine or reject (550 5.7.1); "
     "treated like an unparsable one unless set"},
};

/* [warning] (issue 13: external-sender warning, content/content-banner.c) */
static const char *const e_warn_senders[] = {"external", "failing", "either", NULL};

/* v_banner - one line of text: no control characters (UTF-8 allowed). */
static const char *v_banner(const char *s, char *buf, size_t buflen)
{
	(void)buf;
	(void)buflen;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return "control characters are not allowed";
	return NULL;
}

static const struct config_directive d_warning[] = {
    {"enabled", CONFIG_T_BOOL, G(warning_enabled), "no", NULL, 0, 0, NULL, NULL, R,
     "Warn recipients about mail from outside the organisation: subject tag and a short "
     "banner at the top of the text and HTML body (signed or encrypted mail: subject only)"},
    {"senders", CONFIG_T_ENUM, G(warning_senders), "either", NULL, 0, 0, e_warn_senders, NULL,
     R,
     "Who is warned about: external (From: domain not in [domains] accepted_domains nor "
     "internal_domains), failing (DMARC fail, or SPF fail/softfail when DMARC was not "
     "evaluated) or either (the default: a From: in our own domains that fails "
     "authentication, the usual spoof, is warned too)"},
    {"internal_domains", CONFIG_T_DOMAINS, G(warning_internal_domains), NULL,
     "accepted_domains only", 0, 0, NULL, NULL, R,
     "More From: domains (and their subdomains) that count as the organisation's own"},
    {"subject_tag", CONFIG_T_STRING, G(warning_subject_tag), "[EXTERNAL]", NULL, 0, 0, NULL,
     v_printable, R,
     "Prefix put once on the Subject of a warned message (breaks a DKIM signature covering "
     "Subject for downstream re-verification); none = no tag"},
    {"banner_text", CONFIG_T_STRING, G(warning_banner_text),
     "CAUTION: This email came from outside the organisation. Do not click links or open "
     "attachments unless you recognise the sender.",
     NULL, 0, 0, NULL, v_banner, R,
     "Line put at the top of the first text/plain part (UTF-8, converted to the part's "
     "charset; a part that cannot carry it gets no banner); none = no text banner"},
    {"banner_html", CONFIG_T_STRING, G(warning_banner_html),
     "<p style=\"border:2px solid red;padding:6px;color:red\"><b>CAUTION:</b> This email "
     "came from outside the organisation. Do not click links or open attachments unless you "
     "recognise the sender.</p>",
     NULL, 0, 0, NULL, v_banner, R,
     "HTML fragment put after <body> of the first text/html part (non-ASCII as character "
     "references); none = no HTML banner"},
    {"max_size", CONFIG_T_SIZE, G(warning_max_size), "10M", NULL, 1 * KB, 2 * GB, NULL, NULL, R,
     "Larger messages get no body banner (subject tag only; " "X-MXGate-Warning says "
     "banner=skipped reason=size); the rewrite runs on a worker thread"},
};

/* [metrics] and [mta_sts] (issue 7: production) */
static const char *const e_mta_sts_mode[] = {"testing", "enforce", "none", NULL};

static const struct config_directive d_metrics[] = {
    {"listen", CONFIG_T_LISTEN, GN(metrics_listen, nmetrics_listen), NULL, "off", 0, 0, NULL, NULL,
     0, "Addresses serving Prometheus metrics at GET /metrics over plain HTTP: keep it private"},
    {"request_timeout", CONFIG_T_DURATION, G(metrics_request_timeout), "10s", NULL, 1, 300, NULL,
     NULL, 0,
     "Deadline for a whole HTTP request, from the connection (or the previous answer) to the "
     "end of its headers; a slower client is disconnected"},
    {"max_connections", CONFIG_T_INT, G(metrics_max_connections), "16", NULL, 1, 1000, NULL, NULL,
     0, "HTTP connections open at once; one more is closed at once"},
};

static const char *const e_failure_redact[] = {"recipients", "addresses", NULL};

static const struct config_directive d_reports[] = {
    {"record", CONFIG_T_BOOL, G(reports_record), "no", NULL, 0, 0, NULL, NULL, 0,
     "Record every DMARC evaluation (reject, quarantine and accept) in the report store"},
    {"ingest", CONFIG_T_BOOL, G(reports_ingest), "no", NULL, 0, 0, NULL, NULL, 0,
     "Parse the DMARC aggregate and TLS-RPT reports mailed to the report addresses and store "
     "them in the report store (they are still queued and delivered downstream as usual)"},
    {"inbound_retention", CONFIG_T_DURATION, G(reports_inbound_retention), "400d", NULL, 86400,
     3650 * 86400, NULL, NULL, 0,
     "How long the reports received ([reports] ingest) are kept, counted from their arrival "
     "(then deleted, checked hourly while reports arrive); refused parts and their raw "
     "message are kept 30 days at most; approvals and looks stay"},
    {"ingest_addresses", CONFIG_T_ADDRS, G(reports_ingest_addresses), NULL,
     "the [mta_sts] dmarc_rua and tlsrpt_rua addresses of every accepted domain", 0, 0, NULL,
     NULL, 0, "Recipients whose mail is parsed as reports when ingest = yes"},
    {"database", CONFIG_T_STRING, G(reports_database), "sqlite", NULL, 0, 0, NULL, NULL, S,
     "The report store: sqlite (QUEUE_DIR/reports.db, WAL mode), sqlite:PATH, or "
     "postgresql://... (a libpq URI) shared by a fleet: one node sends each run's reports"},
    {"queue_size", CONFIG_T_INT, G(reports_queue_size), "10000", NULL, 1, 1000000, NULL, NULL, 0,
     "Evaluations waiting for the store's writer thread; more are dropped and counted "
     "(mxgate_reports_dropped_total), never block SMTP"},
    {"period", CONFIG_T_DURATION, G(reports_period), "1d", NULL, 60, 7 * 86400, NULL, NULL, 0,
     "Reporting period; periods are aligned to multiples of it since the epoch (1d: UTC "
     "midnight)"},
    {"retention", CONFIG_T_DURATION, G(reports_retention), "7d", NULL, 0, 3650 * 86400, NULL,
     NULL, 0,
     "How long evaluations are kept once reported (then deleted at the next run; never "
     "before they were reported); the reports, refused destinations and runs of that age go "
     "with them, the newest run stays (where the next one begins); also how far back a run "
     "reports periods missed while the gateway was down (at least one period, at most 31 "
     "days)"},
    {"org_name", CONFIG_T_STRING, G(reports_org_name), NULL, "<hostname>", 0, 0, NULL,
     v_printable, 0, "org_name in the reports' metadata (RFC 9990 section 3.1.1)"},
    {"email", CONFIG_T_STRING, G(reports_email), NULL, "postmaster@<hostname>", 0, 0, NULL,
     v_address, 0, "Contact address in the reports' metadata; also their envelope sender"},
    {"dkim_key_file", CONFIG_T_PATH, G(reports_dkim_key_file), NULL, "QUEUE_DIR/reports-dkim.pem",
     0, 0, NULL, NULL, 0,
     "PEM private key that signs the reports (RSA 2048, made at start-up when missing; "
     "`mxgate dns-records` prints its record)"},
    {"dkim_selector", CONFIG_T_STRING, G(reports_dkim_selector), "mxgate-reports", NULL, 0, 0,
     NULL, v_selector, 0, "DKIM selector (s=) of the report signatures"},
    {"dkim_domain", CONFIG_T_STRING, G(reports_dkim_domain), NULL, "domain of email", 0, 0, NULL,
     v_domain, 0, "DKIM signing domain (d=) of the reports; align it with email's domain"},
    {"failure_reports", CONFIG_T_BOOL, G(reports_failure), "no", NULL, 0, 0, NULL, NULL, 0,
     "Send DMARC failure reports (RFC 9991: ARF auth-failure, original header fields only, "
     "redacted) to the verified mailto: ruf destinations of domains whose DMARC check "
     "failed, per their fo= tag; needs record = yes"},
    {"failure_report_rate", CONFIG_T_INT, G(reports_failure_rate), "5", NULL, 1, 10000, NULL,
     NULL, R,
     "Failure reports per destination domain per hour; more are suppressed and counted "
     "(mxgate_reports_failure_total{result=\"rate_limited\"}): forged mail cannot make "
     "mxgate a reflector"},
    {"failure_report_max_destinations", CONFIG_T_INT, G(reports_failure_max_dests), "2", NULL,
     1, 8, NULL, NULL, R, "ruf destinations one failing message is reported to (the first ones)"},
    {"failure_report_redact", CONFIG_T_ENUM, G(reports_failure_redact), "recipients", NULL, 0,
     0, e_failure_redact, NULL, R,
     "Redaction (RFC 6590 style keyed hash of local parts): recipients = every recipient "
     "address (To, Cc, Delivered-To, Received for, Original-Rcpt-To...; Bcc dropped); "
     "addresses = every address local part, senders too"},
};

static const char *const e_admin_tls[] = {"auto", "yes", "no", NULL};

static const struct config_directive d_admin[] = {
    {"listen", CONFIG_T_LISTEN, GN(admin_listen, nadmin_listen), NULL, "off", 0, 0, NULL, NULL, 0,
     "Addresses serving the report dashboard (HTTPS, or plain HTTP on loopback: see tls)"},
    {"tls", CONFIG_T_ENUM, G(admin_tls), "auto", NULL, 0, 0, e_admin_tls, NULL, 0,
     "HTTPS with the [tls] certificate (TLS 1.2+, HSTS; re-read on reload): yes, no (plain "
     "HTTP), or auto: HTTPS unless every listen address is loopback"},
    {"allow_plain_http", CONFIG_T_BOOL, G(admin_allow_plain_http), "no", NULL, 0, 0, NULL, NULL,
     0,
     "Allow tls = no on an address that is not loopback (behind a TLS proxy on a trusted "
     "network: the token and the reports cross it in clear); without it check-config refuses "
     "such a listener"},
    {"token", CONFIG_T_STRING, G(admin_token), NULL, "none (dashboard off)", 0, 0, NULL, NULL, S,
     "Bearer token of the dashboard's data API (at least 16 characters); without one the "
     "dashboard is off"},
};

static const struct config_directive d_mta_sts[] = {
    {"mode", CONFIG_T_ENUM, G(mta_sts_mode), "testing", NULL, 0, 0, e_mta_sts_mode, NULL, 0,
     "MTA-STS policy mode (RFC 8461): testing, enforce or none"},
    {"max_age", CONFIG_T_DURATION, G(mta_sts_max_age), "1d", NULL, 60, 31557600, NULL, NULL, 0,
     "max_age of the MTA-STS policy: how long senders cache it"},
    {"mx_hosts", CONFIG_T_DOMAINS, G(mta_sts_mx), NULL, "<hostname>", 0, 0, NULL, NULL, 0,
     "MX host names of the gateways, for the MX records and the MTA-STS policy"},
    {"listen", CONFIG_T_LISTEN, GN(mta_sts_listen, nmta_sts_listen), NULL, "off", 0, 0, NULL, NULL,
     0, "Addresses serving the policy over HTTPS (with the [tls] certificate) at "
        "/.well-known/mta-sts.txt"},
    {"tlsrpt_rua", CONFIG_T_STRING, G(tlsrpt_rua), NULL, "mailto:tlsrpt@<domain>", 0, 0, NULL,
     NULL, 0, "Where TLS-RPT reports go (RFC 8460), for `mxgate dns-records`"},
    {"dmarc_rua", CONFIG_T_STRING, G(dmarc_rua), NULL, "mailto:dmarc-reports@<domain>", 0, 0,
     NULL, NULL, 0, "Where DMARC aggregate reports go, for `mxgate dns-records`"},
};

#define SEC(n, named, t, doc)                                                                      \
	{                                                                                          \
		n, named, t, sizeof(t) / sizeof(t[0]), doc                                         \
	}

const struct config_section config_sections[] = {
    SEC("server", false, d_server, "Identity, listeners and privileges."),
    SEC("limits", false, d_limits, "Resource limits and timeouts of inbound SMTP sessions."),
    SEC("tls", false, d_tls, "STARTTLS towards clients (RFC 3207)."),
    SEC("access", false, d_access, "Who may connect (CIDR lists; IPv4-mapped IPv6 matches IPv4)."),
    SEC("domains", false, d_domains,
        "Relay control: which recipients are accepted.  Recipient lists are per domain: a "
        "domain with at least one listed address accepts only listed addresses; accepted "
        "domains without any listed address accept every local part (or ask the downstream, "
        "see `verify_recipients`)."),
    SEC("verify", false, d_verify,
        "Recipient verification against the downstream (SMTP callout at RCPT time) for "
        "routes with `verify_recipients = yes`."),
    SEC("queue", false, d_queue, "The durable queue and delivery retries."),
    SEC("log", false, d_log, "Logging."),
    SEC("dns", false, d_dns, "The resolver used for SPF, DKIM, DMARC and DNSBL lookups."),
    SEC("auth", false, d_auth, "Sender authentication at ingress: SPF, DKIM, DMARC."),
    SEC("arc", false, d_arc,
        "ARC (RFC 8617): verify incoming chains, honour trusted forwarders, seal relayed mail."),
    SEC("spam", false, d_spam, "Scoring and verdict headers."),
    SEC("dnsbl", false, d_dnsbl,
        "DNSBL/DNSWL decisions at connect or RCPT: weighted sites looked up in parallel when "
        "a client connects ([spam] dnsbl_zones share the same lookups)."),
    SEC("pregreet", false, d_pregreet,
        "Tests before the banner (postscreen-style): greeting delay, early talkers, bare "
        "pipelining, non-SMTP commands, and a pass cache (shared by a fleet with [state] redis)."),
    SEC("ratelimit", false, d_ratelimit,
        "Rate limits per client address, network, envelope sender and recipient domain, and "
        "the per-network concurrency cap.  The rates (connections_*, messages_*, "
        "recipients_*) are counted in-process (one node) unless [state] redis is set (shared "
        "by a fleet); the concurrency caps (max_connections_per_net here, [limits] "
        "max_connections_per_ip) count the connections open on this node only, with or "
        "without [state]."),
    SEC("state", false, d_state,
        "State shared across a fleet of gateways behind one load balancer (Redis or Valkey).  "
        "Without `redis` every counter is in-process.  Changes need a restart."),
    SEC("greylist", false, d_greylist,
        "Greylisting (off by default).  Never applied to [dnsbl] allowlisted (negative weight) "
        "clients, to SPF passes for skip_spf_domains, nor to DKIM-signed mail that passes "
        "DMARC for a domain publishing p=reject.  State is in-process (one node) unless [state] "
        "redis is set (shared by a fleet)."),
    SEC("clamav", false, d_clamav,
        "Virus scanning with ClamAV's clamd at the end of DATA, before the 250 (issue 13)."),
    SEC("rspamd", false, d_rspamd,
        "Spam filtering with rspamd at the end of DATA, before the 250 (issue 13); its "
        "verdict replaces mxgate's own spam score, which becomes one of its inputs."),
    SEC("attachments", false, d_attachments,
        "Attachment policy (issue 13): block executables and scripts by name and by content, "
        "also inside zip archives; the check runs on a worker thread."),
    SEC("warning", false, d_warning,
        "External-sender warning (issue 13): a subject tag and a body banner for mail from "
        "outside the organisation or failing authentication, applied once per message."),
    SEC("metrics", false, d_metrics, "Prometheus metrics endpoint (GET /metrics over HTTP)."),
    SEC("admin", false, d_admin,
        "Report dashboard: the DMARC and TLS-RPT reports received ([reports] ingest)."),
    SEC("mta_sts", false, d_mta_sts, "MTA-STS and the records printed by `mxgate dns-records`."),
    SEC("reports", false, d_reports,
        "DMARC report store (RFC 9990): every DMARC evaluation recorded for aggregate "
        "reports (docs/postmaster-guide.md, \"DMARC reports\")."),
    SEC("route", true, d_route,
        "Downstream routes, one `[route NAME]` section each.  Exactly one inbound route has no "
        "`domains`: the default route.  One route with `role = outbound` carries the mail "
        "mxgate itself originates (DSNs) to the recipient's MX; without one, an implicit "
        "`[route outbound]` (type mx, tls dane) does (docs/postmaster-guide.md, \"Where "
        "bounces go\")."),
};
const size_t config_nsections = sizeof(config_sections) / sizeof(config_sections[0]);

/* config_section_find - exact name of a section kind. */
const struct config_section *config_section_find(const char *name)
{
	size_t i;

	for (i = 0; i < config_nsections; i++) {
		if (strcmp(config_sections[i].name, name) == 0)
			return &config_sections[i];
	}
	return NULL;
}

/* config_directive_find - exact name within one section kind. */
const struct config_directive *config_directive_find(const struct config_section *s,
                                                     const char *name)
{
	size_t i;

	for (i = 0; i < s->ndirs; i++) {
		if (strcmp(s->dirs[i].name, name) == 0)
			return &s->dirs[i];
	}
	return NULL;
}

/* config_route_section - the named section kind. */
const struct config_section *config_route_section(void)
{
	return config_section_find("route");
}

/* ------------------------------------------------------------ embedded default */

/* Used by `mxgate run` without -c when /etc/mxgate/mxgate.conf does not
 * exist: a local test gateway that needs no root,
 * no certificate and no downstream.  Directories are created at start. */
const char config_default_text[] =
    "; mxgate embedded default configuration (used when no -c is given and\n"
    "; /etc/mxgate/mxgate.conf does not exist).\n"
    "[server]\n"
    "hostname = mxgate.localhost\n"
    "listen = 127.0.0.1:2525\n"
    "control_socket = ./mxgate-data/control.sock\n"
    "\n"
    "[domains]\n"
    "accepted_domains = example.test\n"
    "\n"
    "[queue]\n"
    "directory = ./mxgate-data/queue\n"
    "\n"
    "[auth]\n"
    "spf = yes\n"
    "dkim = yes\n"
    "dmarc = yes\n"
    "dmarc_enforcement = monitor\n"
    "\n"
    "; Content inspection is off: to scan for viruses install clamav-daemon and add\n"
    ";   [clamav]\n"
    ";   socket = /run/clamav/clamd.ctl\n"
    "; to filter spam install rspamd and add\n"
    ";   [rspamd]\n"
    ";   address = 127.0.0.1:11333\n"
    "\n"
    "[route default]\n"
    "type = directory\n"
    "directory = ./mxgate-data/mailbox\n"
    "\n"
    "; Bounces (DSNs) this offline test gateway generates stay in a local folder.\n"
    "; A real gateway sends them to the sender's MX: type = mx (check-config warns).\n"
    "[route outbound]\n"
    "role = outbound\n"
    "type = directory\n"
    "directory = ./mxgate-data/bounces\n";
