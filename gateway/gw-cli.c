/*
 * gw-cli.c - what every subcommand shares to find its config and the
 * running daemon: without -c, /etc/mxgate/mxgate.conf when it exists, else
 * the embedded default (and stderr says which); the control socket from the
 * full config, or - when the file on disk has an error - from a partial read
 * of [server] control_socket / [queue] directory, so `status`, `queue` and
 * `reload` still reach the daemon during an incident.  A config the user may
 * not read (the package's is 0640 root:mxgate in a 0750 folder) is said to
 * be unreadable - never mistaken for a missing one - and the CLI tries the
 * packaged control socket, /run/mxgate/control.sock (systemd
 * RuntimeDirectory=mxgate).
 *
 * Ownership: paths are static strings or argv; socket paths go into the
 * caller's buffer.
 *
 * Diagnostics: one "mxgate: ..." line on stderr per fallback taken.
 */
#include "gw.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GW_SYSTEM_CONFIG "/etc/mxgate/mxgate.conf"
/* deploy/debian/mxgate.conf, deploy/docker, deploy/aws: control_socket */
#define GW_DEFAULT_CONTROL_SOCKET "/run/mxgate/control.sock"

/* gw_config_path - see gw.h. */
const char *gw_config_path(const char *given)
{
	if (given != NULL)
		return given;
	if (access(GW_SYSTEM_CONFIG, F_OK) == 0) {
		fprintf(stderr, "mxgate: no -c given: using %s\n", GW_SYSTEM_CONFIG);
		return GW_SYSTEM_CONFIG;
	}
	if (errno != ENOENT && errno != ENOTDIR) {
		/* there may well be one (EACCES: a folder on the way is not ours):
		 * use it, and let whoever reads it say why it cannot be read */
		fprintf(stderr, "mxgate: no -c given: using %s\n", GW_SYSTEM_CONFIG);
		return GW_SYSTEM_CONFIG;
	}
	fprintf(stderr, "mxgate: no -c given and no %s: using the embedded default config\n",
	        GW_SYSTEM_CONFIG);
	return NULL;
}

/* gw_control_socket_for - see gw.h: 0 from the loaded config, 1 from a
 * partial read of a file with errors or the packaged default when the file
 * may not be read, -1 when there is none. */
int gw_control_socket_for(const char *config_path, char *out, size_t outlen)
{
	struct config_diags diags = {0};
	struct config *cfg;
	size_t errors;
	int rc = 0;

	if (config_path != NULL && access(config_path, R_OK) == -1 &&
	    (errno == EACCES || errno == EPERM)) {
		fprintf(stderr, "mxgate: cannot read %s: %s; trying the default control socket %s\n",
		        config_path, strerror(errno), GW_DEFAULT_CONTROL_SOCKET);
		return snprintf(out, outlen, "%s", GW_DEFAULT_CONTROL_SOCKET) < (int)outlen ? 1 : -1;
	}
	cfg = config_load(config_path, &diags);
	errors = config_diags_errors(&diags);
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
