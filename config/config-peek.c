/*
 * config-peek.c - the control socket path and the log file of a config file
 * that may not load: `mxgate status|queue|reload` must reach the running
 * daemon, and `mxgate log` read its log, during an incident even when the
 * file on disk has an error somewhere else.  Only [server] control_socket,
 * [queue] directory and [log] file are read, line by line, with the same
 * defaults as a full load (config-table.c).
 *
 * Ownership: the path is written into the caller's buffer.
 *
 * Diagnostics: none; -1 when the file cannot be read or the path does not
 * fit.
 */
#include "config-internal.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* trim - strip blanks at both ends in place. */
static char *trim(char *s)
{
	char *e;

	s += strspn(s, " \t\r");
	for (e = s + strlen(s); e > s && strchr(" \t\r", e[-1]) != NULL; e--)
		;
	*e = '\0';
	return s;
}

/* peek_value - value of name in section sec (last one wins), or NULL. */
static char *peek_value(const char *text, const char *sec, const char *name)
{
	char *copy = util_xstrdup(text), *line, *next, *found = NULL;
	char cur[64] = "";

	for (line = copy; line != NULL; line = next) {
		char *s, *eq, *c;

		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		s = trim(line);
		if (*s == ';' || *s == '#' || *s == '\0')
			continue;
		if (*s == '[') {
			size_t n = strcspn(s + 1, " \t]");

			snprintf(cur, sizeof(cur), "%.*s", (int)n, s + 1);
			continue;
		}
		eq = strchr(s, '=');
		if (eq == NULL || strcmp(cur, sec) != 0)
			continue;
		*eq = '\0';
		if (strcmp(trim(s), name) != 0)
			continue;
		s = eq + 1;
		/* inline comments start with " ;" or " #", as in the full parser */
		for (c = s; *c != '\0'; c++)
			if ((*c == ';' || *c == '#') && c > s && (c[-1] == ' ' || c[-1] == '\t'))
				break;
		*c = '\0';
		free(found);
		found = util_xstrdup(trim(s));
	}
	free(copy);
	return found;
}

/* config_peek_control_socket - see config.h. */
int config_peek_control_socket(const char *path, char *out, size_t outlen)
{
	char *text;
	size_t len;
	int rc;

	text = path != NULL ? util_read_file(path, CONFIG_FILE_MAX, &len)
	                    : util_xstrdup(config_default_text);
	if (text == NULL)
		return -1;
	rc = config_peek_control_socket_string(text, out, outlen);
	free(text);
	return rc;
}

/* config_peek_control_socket_string - see config.h. */
int config_peek_control_socket_string(const char *text, char *out, size_t outlen)
{
	const struct config_directive *d =
	    config_directive_find(config_section_find("queue"), "directory");
	char *sock, *dir;
	int n;

	sock = peek_value(text, "server", "control_socket");
	dir = peek_value(text, "queue", "directory");
	if (sock != NULL && *sock != '\0') {
		n = snprintf(out, outlen, "%s", sock);
	} else {
		const char *q = dir != NULL && *dir != '\0' ? dir : d->def;
		size_t ql = strlen(q);

		n = snprintf(out, outlen, "%s%scontrol.sock", q,
		             ql > 0 && q[ql - 1] == '/' ? "" : "/");
	}
	free(sock);
	free(dir);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* config_peek_log_file - see config.h. */
int config_peek_log_file(const char *path, char *out, size_t outlen)
{
	char *text, *file;
	size_t len;
	int n;

	text = path != NULL ? util_read_file(path, CONFIG_FILE_MAX, &len)
	                    : util_xstrdup(config_default_text);
	if (text == NULL)
		return -1;
	file = peek_value(text, "log", "file");
	n = snprintf(out, outlen, "%s", file != NULL ? file : "");
	free(file);
	free(text);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
