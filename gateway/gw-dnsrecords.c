/*
 * gw-dnsrecords.c - `mxgate dns-records [-c FILE]`: print, for each accepted
 * domain, the DNS records a postmaster publishes for this topology, in zone
 * file syntax with the explanation as ';' comments, so the output can be
 * read by a person and pasted into a zone:
 *
 *   MX              the domain's mail goes to the gateway host(s)
 *   SPF (HELO)      "v=spf1 a -all" for the gateway's HELO name (RFC 7208
 *                   2.3): downstreams and bounce receivers check it
 *   DMARC           a p=none starting point with aggregate reports (RFC 7489)
 *   MTA-STS         _mta-sts TXT with the policy id, and the policy file
 *                   text listing the gateway MX names (RFC 8461)
 *   TLS-RPT         _smtp._tls TXT with the report address (RFC 8460)
 *   ARC key         SELECTOR._domainkey.DOMAIN TXT with the public key of
 *                   mxgate's ARC seal ([arc] seal = yes, RFC 8617)
 *
 * The MX host names come from [mta_sts] mx_hosts (default: [server]
 * hostname); the mode from [mta_sts] mode (default: testing).
 *
 * Ownership: nothing outlives the call.  Diagnostics: config problems as
 * FILE:LINE: message on stderr, exit 2.
 */
#include "gw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* mx_name - the i-th gateway MX name. */
static const char *mx_name(const struct config *cfg, size_t i)
{
	return cfg->mta_sts_mx.n ? cfg->mta_sts_mx.v[i] : cfg->hostname;
}

static size_t mx_count(const struct config *cfg)
{
	return cfg->mta_sts_mx.n ? cfg->mta_sts_mx.n : 1;
}

/* rua - the configured report address, or mailto:LOCAL@domain. */
static void rua(char *out, size_t outlen, const char *configured, const char *local,
                const char *domain)
{
	if (configured && configured[0])
		snprintf(out, outlen, "%s", configured);
	else
		snprintf(out, outlen, "mailto:%s@%s", local, domain);
}

/* print_gateway - the records that belong to the gateway hosts themselves. */
static void print_gateway(const struct config *cfg, FILE *out)
{
	fprintf(out, ";; ---------------------------------------------------------------\n"
	             ";; The gateway hosts\n"
	             ";; ---------------------------------------------------------------\n");
	fprintf(out, "; Each MX name needs A (and AAAA, if IPv6 is offered) records with the\n"
	             "; public address of the gateway (an Elastic IP, or the NLB's addresses),\n"
	             "; and a matching PTR record: many senders distrust hosts without rDNS.\n");
	for (size_t i = 0; i < mx_count(cfg); i++)
		fprintf(out, "%s.\t3600\tIN\tA\t192.0.2.%zu\t; replace with the real address\n",
		        mx_name(cfg, i), 10 + i);
	fprintf(out,
	        "\n; SPF for the HELO name (RFC 7208 2.3): mxgate says \"EHLO %s\" to the\n"
	        "; downstream and when it sends bounces (null sender), so receivers check\n"
	        "; SPF of this name.  \"a\" authorises the host's own address.\n",
	        cfg->hostname);
	fprintf(out, "%s.\t3600\tIN\tTXT\t\"v=spf1 a -all\"\n\n", cfg->hostname);
}

/* print_arc - the selector record of the ARC seal: the public half of
 * [arc] key_file, as DKIM key record (RFC 8617 4.1: ARC uses DKIM keys);
 * TXT strings are at most 255 bytes (RFC 1035 3.3.14).  -1 when the key
 * cannot be read. */
static int print_arc(const struct config *cfg, FILE *out)
{
	char err[256];
	char *rec;

	if (!cfg->arc_seal)
		return 0;
	rec = policy_arc_selector_record(cfg, err, sizeof(err));
	if (rec == NULL) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	fprintf(out,
	        "; ARC (RFC 8617): mxgate seals every relayed message with this key, so a\n"
	        "; downstream that trusts %s as an ARC sealer (Microsoft 365 \"trusted ARC\n"
	        "; sealers\", Google) keeps mxgate's verdict.  Publish it in the zone of %s.\n",
	        cfg->arc_domain, cfg->arc_domain);
	fprintf(out, "%s._domainkey.%s.\t3600\tIN\tTXT\t", cfg->arc_selector, cfg->arc_domain);
	for (size_t i = 0, n = strlen(rec); i < n; i += 255)
		fprintf(out, "%s\"%.*s\"", i ? " " : "", (int)(n - i < 255 ? n - i : 255), rec + i);
	fprintf(out, "\n\n");
	free(rec);
	return 0;
}

/* print_reports - the selector record of the key that signs mxgate's DMARC
 * aggregate reports (issue 14); made when missing.  -1 on error. */
static int print_reports(const struct config *cfg, FILE *out)
{
	char err[256], *name = NULL, *rec;

	if (!cfg->reports_record)
		return 0;
	rec = reports_dns_record(cfg, &name, err, sizeof(err));
	if (rec == NULL) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	fprintf(out, "; DMARC aggregate reports (RFC 9990): mxgate DKIM-signs the reports it\n"
	             "; sends with this key; publish it so receivers can verify them.\n");
	fprintf(out, "%s.\t3600\tIN\tTXT\t", name);
	for (size_t i = 0, n = strlen(rec); i < n; i += 255)
		fprintf(out, "%s\"%.*s\"", i ? " " : "", (int)(n - i < 255 ? n - i : 255), rec + i);
	fprintf(out, "\n\n");
	free(rec);
	free(name);
	return 0;
}

/* print_domain - the records of one accepted domain. */
static void print_domain(const struct config *cfg, const char *d, const char *policy_id,
                         const struct util_buf *policy, FILE *out)
{
	char dmarc_rua[300], tlsrpt_rua[300];
	rua(dmarc_rua, sizeof(dmarc_rua), cfg->dmarc_rua, "dmarc-reports", d);
	rua(tlsrpt_rua, sizeof(tlsrpt_rua), cfg->tlsrpt_rua, "tlsrpt", d);
	fprintf(out,
	        ";; ---------------------------------------------------------------\n"
	        ";; %s\n"
	        ";; ---------------------------------------------------------------\n",
	        d);
	fprintf(out,
	        "; MX: all internet mail for %s goes to the gateway.  Equal preferences\n"
	        "; share the load between gateway hosts.  Lower the TTL (300) a day before\n"
	        "; the switch-over, raise it again once mail flows.  Remove the old MX\n"
	        "; (e.g. inbound-smtp.REGION.amazonaws.com) only when mxgate delivers.\n",
	        d);
	for (size_t i = 0; i < mx_count(cfg); i++)
		fprintf(out, "%s.\t300\tIN\tMX\t10 %s.\n", d, mx_name(cfg, i));
	fprintf(out,
	        "\n; DMARC (RFC 7489): mxgate enforces the sender's DMARC at ingress; this is\n"
	        "; YOUR domain's policy for mail claiming to be from %s.  Start with\n"
	        "; p=none and aggregate reports, move to quarantine, then reject, once every\n"
	        "; legitimate sender passes SPF or DKIM aligned.\n",
	        d);
	fprintf(out, "_dmarc.%s.\t3600\tIN\tTXT\t\"v=DMARC1; p=none; rua=%s\"\n\n", d, dmarc_rua);
	fprintf(out, "; MTA-STS (RFC 8461): tells senders to require TLS with a valid certificate\n"
	             "; for the MX names below.  The id changes whenever the policy text does\n"
	             "; (it is a hash of it); publish the new id after changing the policy.\n");
	fprintf(out, "_mta-sts.%s.\t3600\tIN\tTXT\t\"v=STSv1; id=%s\"\n", d, policy_id);
	fprintf(out,
	        "; The policy is fetched from https://mta-sts.%s/.well-known/mta-sts.txt;\n"
	        "; point that name at a web server with a certificate for it (mxgate itself\n"
	        "; serves it when [mta_sts] listen is set).\n",
	        d);
	fprintf(out, "mta-sts.%s.\t3600\tIN\tCNAME\t%s.\n", d, mx_name(cfg, 0));
	fprintf(out, "; Policy file text (mode %s%s):\n", gw_mta_sts_mode_name(cfg),
	        cfg->mta_sts_mode == 0 ? "; switch to enforce once TLS-RPT reports are clean" : "");
	const char *p = policy->data ? policy->data : "";
	while (*p) {
		const char *e = strstr(p, "\r\n");
		size_t n = e ? (size_t)(e - p) : strlen(p);
		fprintf(out, ";   %.*s\n", (int)n, p);
		p += n + (e ? 2 : 0);
	}
	fprintf(out, "\n; TLS-RPT (RFC 8460): daily reports of TLS failures senders met.\n");
	fprintf(out, "_smtp._tls.%s.\t3600\tIN\tTXT\t\"v=TLSRPTv1; rua=%s\"\n\n", d, tlsrpt_rua);
}

/* gw_cmd_dns_records - `mxgate dns-records [-c FILE]` (argv[0] = "dns-records"). */
int gw_cmd_dns_records(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc) {
			path = argv[++i];
		} else {
			fprintf(stderr, "usage: mxgate dns-records [-c FILE]\n");
			return 2;
		}
	}
	struct config_diags diags = {0};
	path = gw_config_path(path);
	struct config *cfg = config_load(path, &diags);
	config_diags_print(&diags, stderr);
	config_diags_free(&diags);
	if (cfg == NULL)
		return 2;
	char id[21];
	struct util_buf policy;
	util_buf_init(&policy);
	gw_mta_sts_policy(cfg, &policy);
	gw_mta_sts_id(cfg, id);
	printf(";; DNS records for the mxgate topology of %s (hostname %s).\n"
	       ";; Zone-file syntax; comments explain each record.  Generated by\n"
	       ";; `mxgate dns-records`; re-run it after changing the config.\n\n",
	       cfg->path, cfg->hostname);
	print_gateway(cfg, stdout);
	if (print_arc(cfg, stdout) < 0 || print_reports(cfg, stdout) < 0) {
		util_buf_free(&policy);
		config_free(cfg);
		return 2;
	}
	for (size_t i = 0; i < cfg->accepted_domains.n; i++)
		print_domain(cfg, cfg->accepted_domains.v[i], id, &policy, stdout);
	util_buf_free(&policy);
	config_free(cfg);
	return 0;
}
