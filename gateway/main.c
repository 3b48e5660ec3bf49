/*
 * main.c - the mxgate command line: one binary, subcommands.
 *
 *   mxgate run [-c FILE]            run the gateway in the foreground
 *   mxgate check-config [-c FILE]   validate a config, print FILE:LINE: problems
 *   mxgate queue list|show|flush|hold|release|delete [ID] [-c FILE]
 *   mxgate reload | status | reopen-logs [-c FILE]  talk to the running daemon
 *   mxgate log [QUEUE-ID] [--from A] [--to A] [--since T] [--file LOG|-] [-c FILE]
 *                                   a message's story from the log file
 *   mxgate dns-records [-c FILE]    print the DNS records to publish (MX, SPF, DMARC, MTA-STS, TLS-RPT)
 *   mxgate keygen [--algorithm A] [--bits N] [--group G] FILE
 *                                   make the ARC seal key, print its DNS record
 *   mxgate reports preview DOMAIN [-c FILE]  the DMARC aggregate report DOMAIN would get now
 *   mxgate reports send-now [-c FILE]         the daemon sends the reports due so far
 *   mxgate reports status [-c FILE]           pending evaluations, last reports, drops
 *   mxgate reports inbound [--domain D] [--days N] [--no-rdns] [-c FILE]
 *                                   the reports received, as the dashboard shows them
 *   mxgate config-reference         print docs/config-reference.md
 *   mxgate config-man               print mxgate.conf(5) (roff, same tables)
 *   mxgate version
 *
 * Without -c, /etc/mxgate/mxgate.conf is used when it exists, else the
 * embedded default config (config_default_text); stderr says which.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
 */
#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "version.h"

/* usage - the synopsis on stderr; exit code 2. */
static int usage(void)
{
	fprintf(stderr,
		"usage: mxgate run [-c FILE]\n"
		"       mxgate check-config [-c FILE]\n"
		"       mxgate queue list|show ID|flush [ID]|hold ID|release ID|delete ID [-c FILE]\n"
		"       mxgate quarantine list [filters]|show ID|release ID|delete ID [-c FILE]\n"
		"       mxgate reload|status|reopen-logs [-c FILE]\n"
		"       mxgate log [QUEUE-ID] [--from ADDR] [--to ADDR] [--since TIME] "
		"[--file LOG|-] [-c FILE]\n"
		"       mxgate dns-records [-c FILE]\n"
		"       mxgate keygen [--algorithm rsa-sha256|ed25519-sha256] [--bits N] "
		"[--group GROUP] FILE\n"
		"       mxgate reports preview DOMAIN|send-now|status [-c FILE]\n"
		"       mxgate reports inbound [--domain D] [--days N] [--no-rdns] [-c FILE]\n"
		"       mxgate config-reference | config-man\n"
		"       mxgate version\n");
	return 2;
}

/* find_config_arg - the value of -c/--config in argv, or NULL. */
static const char *find_config_arg(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
			return argv[i + 1];
	return NULL;
}

/* cmd_control - reload/status: one request over the control socket, found
 * even when the config file has errors (the daemon validates a reload). */
static int cmd_control(int argc, char **argv, const char *request)
{
	char sock[256];
	int found = gw_control_socket_for(gw_config_path(find_config_arg(argc, argv)), sock,
	                                  sizeof(sock));

	if (found < 0)
		return 2;
	int rc = gw_control_request(sock, request);
	/* a reload of a file with errors: the daemon refused it; exit as
	 * check-config does on a config error */
	if (found == 1 && rc == 1 && strcmp(request, "reload") == 0)
		rc = 2;
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	const char *cmd = argv[1];
	if (strcmp(cmd, "run") == 0)
		return gw_cmd_run(argc - 1, argv + 1);
	if (strcmp(cmd, "check-config") == 0)
		return gw_cmd_check_config(argc - 1, argv + 1);
	if (strcmp(cmd, "queue") == 0)
		return gw_cmd_queue(argc - 1, argv + 1);
	if (strcmp(cmd, "quarantine") == 0)
		return gw_cmd_quarantine(argc - 1, argv + 1);
	if (strcmp(cmd, "reload") == 0)
		return cmd_control(argc - 1, argv + 1, "reload");
	if (strcmp(cmd, "status") == 0)
		return cmd_control(argc - 1, argv + 1, "status");
	if (strcmp(cmd, "reopen-logs") == 0)
		return cmd_control(argc - 1, argv + 1, "reopen-logs");
	if (strcmp(cmd, "log") == 0)
		return gw_cmd_log(argc - 1, argv + 1);
	if (strcmp(cmd, "dns-records") == 0)
		return gw_cmd_dns_records(argc - 1, argv + 1);
	if (strcmp(cmd, "keygen") == 0)
		return gw_cmd_keygen(argc - 1, argv + 1);
	if (strcmp(cmd, "reports") == 0)
		return gw_cmd_reports(argc - 1, argv + 1);
	if (strcmp(cmd, "config-reference") == 0) {
		config_reference_markdown(stdout);
		return 0;
	}
	if (strcmp(cmd, "config-man") == 0) {
		config_reference_man(stdout, MXGATE_VERSION);
		return 0;
	}
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("mxgate %s\n", MXGATE_VERSION);
		return 0;
	}
	return usage();
}
