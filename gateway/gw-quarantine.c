/*
 * gw-quarantine.c - `mxgate quarantine list|show|release|delete` (issue 13):
 * the postmaster's view of the messages a content verdict quarantined.
 * They live in the queue's quarantine/ folder (queue/queue-quarantine.c);
 * these commands only ever act on quarantined ones, so a message the
 * postmaster held by hand is never released or deleted by mistake here -
 * and `mxgate queue release|delete` refuse quarantined ones in turn.
 *
 * The CLI side turns its options into one control request
 * ("quarantine-list rcpt=...,sender=...,reason=...,older=N,newer=N" or
 * "quarantine-show|release|delete ID"); the daemon side answers it on the
 * loop like the `queue` commands (gw-control.c).
 *
 * Ownership: nothing kept.  Diagnostics: the control request log line; the
 * scheduler logs releases ("status=released by=USER reason=quarantine") and
 * deletions ("status=deleted by=USER reason=quarantine").
 */
#include "gw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* gw_quarantine_execute - see gw.h. */
int gw_quarantine_execute(struct gw *gw, const char *cmd, const char *arg, const char *peer,
                          struct util_buf *out, char *err, size_t errlen)
{
	if (gw->sched == NULL) {
		snprintf(err, errlen, "the queue is not running");
		return -1;
	}
	if (strcmp(cmd, "quarantine-list") == 0)
		return queue_sched_quarantine_list(gw->sched, arg ? arg : "", out, err, errlen);
	if (arg == NULL || !util_qid_is_valid(arg)) {
		snprintf(err, errlen, "%s needs a queue id", cmd);
		return -1;
	}
	if (strcmp(cmd, "quarantine-show") == 0) {
		if (!queue_sched_is_quarantined(gw->sched, arg)) {
			snprintf(err, errlen, "message %s is not in quarantine", arg);
			return -1;
		}
		return queue_sched_show(gw->sched, arg, out, err, errlen);
	}
	if (strcmp(cmd, "quarantine-release") == 0) {
		if (queue_sched_quarantine_release(gw->sched, arg, peer, err, errlen) < 0)
			return -1;
		util_buf_printf(out, "released 1 message (%s)\n", arg);
		return 0;
	}
	if (strcmp(cmd, "quarantine-delete") == 0) {
		if (queue_sched_quarantine_delete(gw->sched, arg, peer, err, errlen) < 0)
			return -1;
		util_buf_printf(out, "deleted 1 message (%s)\n", arg);
		return 0;
	}
	snprintf(err, errlen, "unknown command");
	return -1;
}

/* quarantine_usage - synopsis. */
static int quarantine_usage(void)
{
	fprintf(stderr,
	        "usage: mxgate quarantine [-c FILE] list [--rcpt ADDR] [--sender ADDR]\n"
	        "                         [--reason virus|spam|policy|attachment] [--older-than DUR]\n"
	        "                         [--newer-than DUR]\n"
	        "       mxgate quarantine [-c FILE] show ID | release ID | delete ID\n"
	        "DUR: seconds, or a number with s, m, h or d\n");
	return 2;
}

/* parse_dur - "90", "15m", "2h", "30d" -> seconds; -1 when bad. */
static long long parse_dur(const char *s)
{
	char *e;
	long long v = strtoll(s, &e, 10);
	if (e == s || v < 0)
		return -1;
	long long mul = *e == 0 || strcmp(e, "s") == 0 ? 1
	                : strcmp(e, "m") == 0          ? 60
	                : strcmp(e, "h") == 0          ? 3600
	                : strcmp(e, "d") == 0          ? 86400
	                                               : -1;
	return mul < 0 ? -1 : v * mul;
}

/* gw_cmd_quarantine - `mxgate quarantine ...` (argv[0] = "quarantine"). */
int gw_cmd_quarantine(int argc, char **argv)
{
	const char *config_path = NULL;
	const char *pos[2] = {NULL, NULL};
	int npos = 0;
	struct util_buf filter;
	util_buf_init(&filter);
	int rc = 2;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *key = strcmp(a, "--rcpt") == 0         ? "rcpt"
		                  : strcmp(a, "--sender") == 0     ? "sender"
		                  : strcmp(a, "--reason") == 0     ? "reason"
		                  : strcmp(a, "--older-than") == 0 ? "older"
		                  : strcmp(a, "--newer-than") == 0 ? "newer"
		                                                   : NULL;
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc)
				goto usage;
			config_path = argv[++i];
		} else if (key != NULL) {
			if (i + 1 >= argc)
				goto usage;
			const char *v = argv[++i];
			if (strpbrk(v, ", \t") != NULL || v[0] == 0)
				goto usage;
			if (strcmp(key, "older") == 0 || strcmp(key, "newer") == 0) {
				long long d = parse_dur(v);
				if (d < 0)
					goto usage;
				util_buf_printf(&filter, "%s%s=%lld", filter.len ? "," : "", key,
				                d);
			} else {
				util_buf_printf(&filter, "%s%s=%s", filter.len ? "," : "", key, v);
			}
		} else if (a[0] == '-' || npos == 2) {
			goto usage;
		} else {
			pos[npos++] = a;
		}
	}
	if (npos == 0)
		goto usage;
	bool list = strcmp(pos[0], "list") == 0;
	if (list ? npos != 1
	         : (npos != 2 || filter.len > 0 ||
	            (strcmp(pos[0], "show") != 0 && strcmp(pos[0], "release") != 0 &&
	             strcmp(pos[0], "delete") != 0)))
		goto usage;
	if (!list && !util_qid_is_valid(pos[1])) {
		fprintf(stderr, "mxgate: %s is not a queue id (16 hex digits)\n", pos[1]);
		goto out;
	}
	if (filter.len > 900) {
		fprintf(stderr, "mxgate: filter too long\n");
		goto out;
	}
	struct config_diags diags = {0};
	struct config *cfg = config_load(config_path, &diags);
	config_diags_print(&diags, stderr);
	config_diags_free(&diags);
	if (cfg == NULL)
		goto out;
	char line[1024];
	snprintf(line, sizeof(line), "quarantine-%s%s%s", pos[0],
	         list ? (filter.len ? " " : "") : " ",
	         list ? (filter.len ? filter.data : "") : pos[1]);
	rc = gw_control_request(cfg->control_socket, line);
	config_free(cfg);
	goto out;
usage:
	rc = quarantine_usage();
out:
	util_buf_free(&filter);
	return rc;
}
