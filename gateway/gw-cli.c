/*
 * gw-cli.c - what every subcommand shares to find its config and the
 * running daemon: without -c, /etc/mxgate/mxgate.conf when it exists, else
 * the embedded default (and stderr says which); the control socket from the
 * full config, or - when the file on disk has an error - from a partial read
 * of [server] control_socket / [queue] directory, so `status`, `queue` and
 * `reload` still reach the daemon during an incident.
 *
 * Ownership: paths are static strings or argv; socket paths go into the
 * caller's buffer.
 *
 * Diagnostics: one "mxgate: ..." line on stderr per fallback taken.
 */
#include "gw.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GW_SYSTEM_CONFIG "/etc/mxgate/mxgate.conf"

/* gw_config_path - see gw.h. */
const char *gw_config_path(const char *given)
{
	if (given != NULL)
		return given;
	if (access(GW_SYSTEM_CONFIG, F_OK) == 0) {
		fprintf(stderr, "mxgate: no -c given: using %s\n", GW_SYSTEM_CONFIG);
		return GW_SYSTEM_CONFIG;
	}
	fprintf(stderr, "mxgate: no -c given and no %s: using the embedded default config\n",
	        GW_SYSTEM_CONFIG);
	return NULL;
}

/* gw_control_socket_for - see gw.h: 0 from the loaded config, 1 from a
 * partial read of a file with errors, -1 when there is none. */
int gw_control_socket_for(const char *config_path, char *out, size_t outlen)
{
	struct config_diags diags = {0};
	struct config *cfg = config_load(config_path, &diags);
	size_t errors = config_diags_errors(&diags);
	int rc = 0;

	config_diags_free(&diags);
	if (cfg != NULL) {
		/* fits: config-check.c refuses a control_socket longer than 107 */
		if (snprintf(out, outlen, "%s", cfg->control_socket) >= (int)outlen)
			rc = -1;
		config_free(cfg);
		return rc;
	}
	if (config_peek_control_socket(config_path, out, outlen) < 0) {
		fprintf(stderr, "mxgate: cannot read %s to find the control socket\n",
		        config_path != NULL ? config_path : "(embedded default)");
		return -1;
	}
	fprintf(stderr,
	        "mxgate: note: %s has %zu error%s (see `mxgate check-config`); reaching the "
	        "running daemon on %s anyway\n",
	        config_path != NULL ? config_path : "(embedded default)", errors,
	        errors == 1 ? "" : "s", out);
	return 1;
}
