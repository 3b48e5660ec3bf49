/*
 * gw-reports.c - `mxgate reports send-now [-c FILE]`: the daemon reports
 * now (control socket `reports-send-now`); `mxgate reports status`: what
 * the store holds (pending per domain, last report per domain, drops);
 * `mxgate reports preview DOMAIN
 * [-c FILE]`: print the
 * RFC 9990 aggregate report XML that DOMAIN (a DMARC policy domain) would
 * be sent if the period ended now (the next run's period and report id).
 * Works beside a running daemon (the store is SQLite in WAL mode).
 *
 * Exit codes: 0 printed, 1 nothing recorded / store error, 2 usage/config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"

/* cli_rdns - reports_dash_rdns.fn of the command: the sources' names
 * looked up at once, 5 seconds at most. */
static void cli_rdns(void *arg, const char *const *ips, size_t n, char **names)
{
	policy_dns_confirmed_names(arg, ips, n, 5000, names);
}

/* reports_inbound_cmd - `mxgate reports inbound [--domain D] [--days N]
 * [--no-rdns]` (issue 15): the dashboard's summary of the reports received. */
static int reports_inbound_cmd(int argc, char **argv)
{
	const char *path = NULL, *domain = NULL;
	bool rdns = true;
	int days = 30;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--no-rdns") == 0) {
			rdns = false;
			continue;
		}
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--domain") == 0 && i + 1 < argc) {
			domain = argv[++i];
		} else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
			days = atoi(argv[++i]);
		} else {
			days = -1;
			break;
		}
	}
	if (days < 1 || days > 3650) {
		fprintf(stderr, "usage: mxgate reports inbound [--domain D] [--days N] [--no-rdns]"
		                " [-c FILE]\n");
		return 2;
	}
	struct config_diags diags = {0};
	struct config *cfg = config_load(path, &diags);
	config_diags_print(&diags, stderr);
	config_diags_free(&diags);
	if (cfg == NULL)
		return 2;
	struct util_buf out;
	char err[256] = "";
	struct policy_dns *dns = NULL;
	if (rdns && (dns = policy_dns_new(cfg, NULL, err, sizeof(err))) == NULL)
		fprintf(stderr, "mxgate: reports inbound: no reverse DNS (%s)\n", err);
	struct reports_dash_rdns rd = {dns != NULL ? cli_rdns : NULL, dns};
	util_buf_init(&out);
	err[0] = '\0';
	int rc = reports_inbound_summary(cfg, domain, days, &rd, &out, err, sizeof(err));
	if (rc == 0)
		fwrite(out.data, 1, out.len, stdout);
	else
		fprintf(stderr, "mxgate: reports inbound: %s\n", err);
	util_buf_free(&out);
	policy_dns_free(dns);
	config_free(cfg);
	return rc == 0 ? 0 : 1;
}

/* gw_cmd_reports - argv[0] = "reports". */
int gw_cmd_reports(int argc, char **argv)
{
	const char *path = NULL, *sub = NULL, *domain = NULL;
	if (argc > 1 && strcmp(argv[1], "inbound") == 0)
		return reports_inbound_cmd(argc, argv);
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc)
			path = argv[++i];
		else if (sub == NULL)
			sub = argv[i];
		else if (domain == NULL)
			domain = argv[i];
		else
			sub = "";
	}
	bool send = sub != NULL && strcmp(sub, "send-now") == 0 && domain == NULL;
	bool status = sub != NULL && strcmp(sub, "status") == 0 && domain == NULL;
	if (!send && !status && (sub == NULL || strcmp(sub, "preview") != 0 || domain == NULL)) {
		fprintf(stderr, "usage: mxgate reports preview DOMAIN [-c FILE]\n"
		                "       mxgate reports send-now|status [-c FILE]\n"
		                "       mxgate reports inbound [--domain D] [--days N] [--no-rdns]"
		                " [-c FILE]\n");
		return 2;
	}
	struct config_diags diags = {0};
	struct config *cfg = config_load(path, &diags);
	config_diags_print(&diags, stderr);
	config_diags_free(&diags);
	if (cfg == NULL)
		return 2;
	if (send) {
		/* the daemon runs the report now (control socket) */
		int crc = gw_control_request(cfg->control_socket, "reports-send-now");
		config_free(cfg);
		return crc;
	}
	struct util_buf out;
	char err[256] = "";
	util_buf_init(&out);
	if (status) {
		int src = reports_status(cfg, &out, err, sizeof(err));
		if (src == 0)
			fwrite(out.data, 1, out.len, stdout);
		else
			fprintf(stderr, "mxgate: reports status: %s\n", err);
		util_buf_free(&out);
		config_free(cfg);
		return src == 0 ? 0 : 1;
	}
	int rc = reports_preview(cfg, domain, (int64_t)time(NULL), &out, err, sizeof(err));
	if (rc == 0)
		fwrite(out.data, 1, out.len, stdout);
	else
		fprintf(stderr, "mxgate: reports preview %s: %s\n", domain, err);
	util_buf_free(&out);
	config_free(cfg);
	return rc == 0 ? 0 : 1;
}
